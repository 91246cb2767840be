//! Reaching into a client pod's network namespace: finding its container by a unique `sleep`
//! argument and probing TCP servers from inside it.

use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sched::{setns, CloneFlags};

use super::wait_until;

/// The process running `sleep <marker>`: a client pod's container.
pub fn process_with_marker(marker: &str) -> Option<u32> {
    processes_with_marker(marker).into_iter().next()
}

/// Every process of this machine running `sleep <marker>`: the containers of pods that share
/// the marker, on whichever node (test nodes are namespaces of this one machine).
pub fn processes_with_marker(marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            (args.len() >= 2 && args[0].ends_with(b"sleep") && args[1] == marker.as_bytes())
                .then_some(pid)
        })
        .collect()
}

/// The network namespace of a running client pod, as a path to open.
pub fn client_netns(marker: &str) -> PathBuf {
    let mut pid = None;
    wait_until(Duration::from_secs(60), || {
        pid = process_with_marker(marker);
        pid.is_some()
    });
    let pid = pid.unwrap_or_else(|| panic!("no container process sleeps {marker}"));
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}

/// Whether a TCP connection from inside `netns` to `addr` gets the server's "hi".
pub fn reaches(netns: &Path, addr: &str) -> bool {
    let netns = netns.to_path_buf();
    let addr: SocketAddr = addr.parse().expect("socket address");
    std::thread::spawn(move || {
        let Ok(ns) = File::open(&netns) else {
            return false;
        };
        if setns(&ns, CloneFlags::CLONE_NEWNET).is_err() {
            return false;
        }
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(1500)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.contains("hi")
    })
    .join()
    .unwrap_or(false)
}
