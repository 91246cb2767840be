//! The HA acceptance: a three-member etcd cluster (Debian's etcd-server) and two berth
//! servers on it; one etcd member and one berth server are killed -9 under a write load, and
//! the writes through the surviving server go on with nothing acknowledged lost.
//!
//! Every member and every server is a machine of its own (a network namespace), all on one
//! switch.
//!
//! Needs root (network namespaces) and /usr/bin/etcd; CI runs as root. Takes about 45 s.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::netns::{Netns, Switch};
use common::server::BerthServer;
use common::{tools, wait_until};

const A_IP: &str = "10.251.0.1";
const B_IP: &str = "10.251.0.2";
/// The members' names and addresses; each listens on 2379 (clients) and 2380 (peers).
const MEMBERS: [(&str, &str); 3] = [
    ("m1", "10.251.0.11"),
    ("m2", "10.251.0.12"),
    ("m3", "10.251.0.13"),
];

/// One member of the cluster, killed and its data removed on drop.
struct Member {
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Member {
    fn start(ns: &Netns, name: &str, ip: &str) -> Member {
        let dir = tempfile::Builder::new()
            .prefix(&format!("berth-etcd-{name}-{}-", std::process::id()))
            .tempdir()
            .expect("make a member's data dir");
        let cluster: Vec<String> = MEMBERS
            .iter()
            .map(|(n, ip)| format!("{n}=http://{ip}:2380"))
            .collect();
        let clients = format!("http://127.0.0.1:2379,http://{ip}:2379");
        let peer = format!("http://{ip}:2380");
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd log");
        let child = ns
            .command("/usr/bin/etcd")
            .args(["--name", name])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &clients])
            .args(["--advertise-client-urls", &clients])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args([
                "--initial-cluster-token",
                &format!("berth-{}", std::process::id()),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        Member {
            child: Some(child),
            dir,
        }
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("---- etcd member log ----\n{}", self.log());
        }
    }
}

fn config(node: &str) -> String {
    let endpoints: Vec<String> = MEMBERS
        .iter()
        .map(|(_, ip)| format!("\"http://{ip}:2379\""))
        .collect();
    format!(
        "[store]\ndatastore_endpoint = [{}]\ntoken = \"load-{}\"\n\n[node]\nname = \"{node}\"\n\n\
         [ingress]\nenabled = false\n",
        endpoints.join(", "),
        std::process::id()
    )
}

/// `kubectl` in `netns` with `kubeconfig`, as a plain command a writer thread can own.
fn kubectl(netns: &str, kubeconfig: &std::path::Path, args: &[&str]) -> bool {
    Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(tools::kubectl())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--request-timeout=5s")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Names this writer's creates were acknowledged for, with when.
type Acknowledged = Arc<Mutex<Vec<(String, Instant)>>>;

fn writer(
    netns: String,
    kubeconfig: std::path::PathBuf,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
) -> (Acknowledged, std::thread::JoinHandle<()>) {
    let acknowledged: Acknowledged = Arc::default();
    let log = acknowledged.clone();
    let handle = std::thread::spawn(move || {
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let name = format!("{prefix}-{i}");
            i += 1;
            let args = ["create", "configmap", name.as_str(), "--from-literal=k=v"];
            if kubectl(&netns, &kubeconfig, &args) {
                log.lock().expect("the log").push((name, Instant::now()));
            }
        }
    });
    (acknowledged, handle)
}

#[test]
fn writes_go_on_and_none_is_lost_when_an_etcd_member_and_a_server_are_killed() {
    let switch = Switch::new();
    let ns_a = Netns::new();
    let ns_b = Netns::new();
    switch.plug(&ns_a, &format!("{A_IP}/24"));
    switch.plug(&ns_b, &format!("{B_IP}/24"));
    let member_ns: Vec<Netns> = MEMBERS
        .iter()
        .map(|(_, ip)| {
            let ns = Netns::new();
            switch.plug(&ns, &format!("{ip}/24"));
            ns
        })
        .collect();
    let mut members: Vec<Member> = MEMBERS
        .iter()
        .zip(&member_ns)
        .map(|((name, ip), ns)| Member::start(ns, name, ip))
        .collect();
    let healthy = wait_until(Duration::from_secs(60), || {
        member_ns.iter().all(|ns| {
            ns.exec("curl", &["-sf", "http://127.0.0.1:2379/health"])
                .status
                .success()
        })
    });
    assert!(healthy, "the etcd cluster came up:\n{}", members[0].log());
    let pid = std::process::id();
    let mut a = BerthServer::start_with_config(&ns_a, &config(&format!("load-a-{pid}")));
    let b = BerthServer::start_with_config(&ns_b, &config(&format!("load-b-{pid}")));

    let stop = Arc::new(AtomicBool::new(false));
    let (through_a, writer_a) = writer(
        ns_a.name.clone(),
        a.kubeconfig_path(),
        "via-a",
        stop.clone(),
    );
    let (through_b, writer_b) = writer(
        ns_b.name.clone(),
        b.kubeconfig_path(),
        "via-b",
        stop.clone(),
    );
    std::thread::sleep(Duration::from_secs(10));
    // One etcd member and one berth server die at once, mid-write.
    members[0].kill9();
    a.kill9();
    let killed = Instant::now();
    std::thread::sleep(Duration::from_secs(20));
    stop.store(true, Ordering::Relaxed);
    writer_a.join().expect("writer A");
    writer_b.join().expect("writer B");

    let via_b = through_b.lock().expect("the log").clone();
    let via_a = through_a.lock().expect("the log").clone();
    let after_kill = via_b.iter().filter(|(_, at)| *at > killed).count();
    eprintln!(
        "acknowledged: {} through A, {} through B ({after_kill} after the kill)",
        via_a.len(),
        via_b.len()
    );
    assert!(
        !via_a.is_empty(),
        "writes through A went through before the kill"
    );
    assert!(after_kill >= 5, "writes through B went on after the kill");
    // Every acknowledged write is there, read through the survivor on the remaining members.
    // A read may still land on the dead member's endpoint until the client's balancer drops
    // it, so the list is retried a few times.
    let mut listed = String::new();
    let read = wait_until(Duration::from_secs(30), || {
        let out = b.kubectl(&["get", "configmaps", "-o", "name"]);
        listed = String::from_utf8_lossy(&out.stdout).into_owned();
        out.status.success()
    });
    assert!(read, "the survivor lists the configmaps");
    let missing: Vec<&String> = via_a
        .iter()
        .chain(&via_b)
        .map(|(name, _)| name)
        .filter(|name| !listed.contains(&format!("configmap/{name}\n")))
        .collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    drop(b);
    drop(a);
    drop(members);
}
