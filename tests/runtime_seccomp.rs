//! `Localhost` seccomp profiles: files below the node's seccomp directory (`<data dir>/seccomp`,
//! kubelet's `<root-dir>/seccomp`), named by a relative `localhostProfile` the API checks; a
//! profile's rules hold for the container's process and its execs, and a missing or broken
//! profile keeps the container from starting (`CreateContainerError`) instead of running it
//! under another profile.
//!
//! Profiles with `SCMP_ACT_NOTIFY` rules, as runc and youki run them: the filter's
//! notify descriptor and the OCI container process state go to the profile's `listenerPath`,
//! where a seccomp agent answers each notified syscall in the process's stead. The agent here
//! is the test's own; it answers `mkdir` with an errno it picks (or lets it through) and
//! `getppid` with a number of its own, and the test checks the container's process and a
//! `kubectl exec` see exactly those answers.
//!
//! Needs root (network namespaces, cgroups, mounts, seccomp notify), as in CI.

mod common;

use std::io::{IoSliceMut, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cluster::Cluster;
use common::netns::Netns;
use common::wait_until;
use libseccomp::{ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// What the agent makes `getppid` return: no process in a container has this parent.
const PARENT_BY_AGENT: i64 = 4242;
/// The errno the agent fails `mkdir` with: no real mkdir of `/` fails so.
const MKDIR_ERRNO: i32 = libc::EXDEV;
/// What busybox prints for it.
const MKDIR_ERROR: &str = "Invalid cross-device link";

/// A process whose filter reached the agent: the state the runtime sent with its descriptor.
#[derive(Debug, Clone)]
struct Delivery {
    state: serde_json::Value,
}

/// One notified syscall the agent answered.
#[derive(Debug, Clone, PartialEq)]
struct Notified {
    pid: u32,
    syscall: String,
}

#[derive(Default)]
struct Seen {
    deliveries: Vec<Delivery>,
    notified: Vec<Notified>,
}

/// A seccomp agent on a unix socket, answering every filter handed to it until dropped.
struct SeccompAgent {
    path: PathBuf,
    seen: Arc<Mutex<Seen>>,
    /// Whether `mkdir` goes through (SECCOMP_USER_NOTIF_FLAG_CONTINUE) instead of failing.
    let_mkdir_through: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl SeccompAgent {
    fn start(path: &Path) -> SeccompAgent {
        let listener = UnixListener::bind(path).expect("bind the seccomp agent's socket");
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let let_mkdir_through: Arc<AtomicBool> = Arc::default();
        let stop: Arc<AtomicBool> = Arc::default();
        let acceptor = {
            let (seen, through, stop) = (seen.clone(), let_mkdir_through.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    let Some((state, notify_fd)) = receive_state_and_fd(conn) else {
                        continue;
                    };
                    seen.lock().unwrap().deliveries.push(Delivery { state });
                    let (seen, through, stop) = (seen.clone(), through.clone(), stop.clone());
                    std::thread::spawn(move || answer(notify_fd, &seen, &through, &stop));
                }
            })
        };
        SeccompAgent {
            path: path.to_path_buf(),
            seen,
            let_mkdir_through,
            stop,
            acceptor: Some(acceptor),
        }
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.seen.lock().unwrap().deliveries.clone()
    }

    fn notified(&self) -> Vec<Notified> {
        self.seen.lock().unwrap().notified.clone()
    }
}

impl Drop for SeccompAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the acceptor, which then sees the stop.
        let _ = UnixStream::connect(&self.path);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// The runtime's one message: the container process state as JSON, with the filter's notify
/// descriptor attached; the runtime closes the connection after it.
fn receive_state_and_fd(mut conn: UnixStream) -> Option<(serde_json::Value, OwnedFd)> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let (len, fd) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .ok()?;
        let fd = msg.cmsgs().ok()?.find_map(|c| match c {
            ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
            _ => None,
        })?;
        (msg.bytes, fd)
    };
    // SAFETY: SCM_RIGHTS just installed this descriptor in this process, for us alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut state = buf[..len].to_vec();
    // Whatever did not come with the descriptor follows it.
    conn.read_to_end(&mut state).ok()?;
    Some((serde_json::from_slice(&state).ok()?, fd))
}

/// Answers the filter's notifications until every process using it is gone (the descriptor
/// hangs up) or the agent stops.
fn answer(fd: OwnedFd, seen: &Mutex<Seen>, let_mkdir_through: &AtomicBool, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(200u16)) {
            Ok(0) | Err(nix::Error::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return,
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if !revents.contains(PollFlags::POLLIN) {
            // POLLHUP: no process uses the filter any more.
            return;
        }
        let Ok(req) = ScmpNotifReq::receive(fd.as_raw_fd()) else {
            // The process died between poll and receive.
            continue;
        };
        let syscall = req.data.syscall.get_name().unwrap_or_default();
        let flags = ScmpNotifRespFlags::empty();
        let response = match syscall.as_str() {
            "getppid" => ScmpNotifResp::new_val(req.id, PARENT_BY_AGENT, flags),
            _ if let_mkdir_through.load(Ordering::SeqCst) => {
                ScmpNotifResp::new_continue(req.id, flags)
            }
            _ => ScmpNotifResp::new_error(req.id, -MKDIR_ERRNO, flags),
        };
        seen.lock().unwrap().notified.push(Notified {
            pid: req.pid,
            syscall,
        });
        // A process killed meanwhile leaves nothing to answer.
        let _ = response.respond(fd.as_raw_fd());
    }
}

/// Every `mkdir` and `getppid` goes to the agent at `listener`; the rest is allowed.
fn notify_profile(listener: &Path) -> serde_json::Value {
    serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": listener,
        "listenerMetadata": "berth-test-agent",
        "syscalls": [{"names": ["mkdir", "mkdirat", "getppid"], "action": "SCMP_ACT_NOTIFY"}],
    })
}

#[test]
fn notified_syscalls_of_a_container_and_of_kubectl_exec_get_the_seccomp_agents_answers() {
    let ns = Netns::new();
    let work = tempfile::Builder::new()
        .prefix("berth-seccomp-")
        .tempdir()
        .unwrap();
    let socket = work.path().join("agent.sock");
    let agent = SeccompAgent::start(&socket);

    let cluster = Cluster::start(&ns);
    let profile = install_profile(
        &cluster,
        "notify.json",
        &notify_profile(&socket).to_string(),
    );
    cluster.create(cluster.pod(
        "notified",
        serde_json::json!({"containers": [{
            "name": "main",
            "image": "busybox",
            // The container's own process meets the agent first.
            "command": ["sh", "-c", "echo \"parent $PPID\"; mkdir /by-init; sleep 3600"],
            "securityContext": {"seccompProfile": {
                "type": "Localhost",
                "localhostProfile": profile,
            }},
        }]}),
    ));
    cluster.wait_for("notified", "Running", |p| {
        p["status"]["containerStatuses"][0]["state"]["running"].is_object()
    });
    let server = &cluster.server;

    // The container's process: its state reached the agent, and its syscalls got the answers.
    let logs_say = |what: &str| {
        let mut logs = String::new();
        let found = wait_until(Duration::from_secs(30), || {
            logs =
                String::from_utf8_lossy(&server.kubectl(&["logs", "notified"]).stdout).into_owned();
            logs.contains(what)
        });
        assert!(found, "the logs never said {what:?}: {logs}");
    };
    logs_say(&format!("parent {PARENT_BY_AGENT}"));
    logs_say(&format!("can't create directory '/by-init': {MKDIR_ERROR}"));
    let deliveries = agent.deliveries();
    let init = deliveries
        .first()
        .expect("the container's filter reached the agent");
    assert_eq!(
        init.state["fds"],
        serde_json::json!(["seccompFd"]),
        "{init:?}"
    );
    assert_eq!(init.state["metadata"], "berth-test-agent", "{init:?}");
    assert_eq!(init.state["state"]["pid"], init.state["pid"], "{init:?}");
    let init_pid = init.state["pid"].as_u64().expect("a pid") as u32;
    // The shell asks for its parent itself; mkdir runs in a child it forks.
    let notified = agent.notified();
    assert!(
        notified
            .iter()
            .any(|n| n.pid == init_pid && n.syscall == "getppid"),
        "no getppid of the container's process ({init_pid}) reached the agent: {notified:?}"
    );
    assert!(
        notified.iter().any(|n| n.syscall.starts_with("mkdir")),
        "no mkdir reached the agent: {notified:?}"
    );

    // An exec: its own filter, its own delivery, the same answers.
    let out = server.kubectl(&[
        "exec",
        "notified",
        "--",
        "sh",
        "-c",
        "echo \"parent $PPID\"; mkdir /by-exec",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "mkdir failed, so does the exec");
    assert!(
        stdout.contains(&format!("parent {PARENT_BY_AGENT}")),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("can't create directory '/by-exec': {MKDIR_ERROR}")),
        "{stderr}"
    );
    let deliveries = agent.deliveries();
    assert_eq!(
        deliveries.len(),
        2,
        "one delivery per process: {deliveries:?}"
    );
    let exec = &deliveries[1];
    assert_eq!(exec.state["metadata"], "berth-test-agent", "{exec:?}");
    // The exec's state names the container (its id, its init) and the exec'd process.
    assert_eq!(exec.state["state"]["pid"], init_pid, "{exec:?}");
    assert_eq!(exec.state["state"]["status"], "running", "{exec:?}");
    let exec_pid = exec.state["pid"].as_u64().expect("a pid") as u32;
    assert_ne!(exec_pid, init_pid);
    let notified = agent.notified();
    assert!(
        notified
            .iter()
            .any(|n| n.pid == exec_pid && n.syscall == "getppid"),
        "the exec's own getppid did not reach the agent: {notified:?}"
    );

    // The agent lets mkdir through now: the exec's directory is made (and the container's
    // own process sees it: the same file system).
    agent.let_mkdir_through.store(true, Ordering::SeqCst);
    let made = server.kubectl_ok(&[
        "exec",
        "notified",
        "--",
        "sh",
        "-c",
        "mkdir /by-exec && echo made",
    ]);
    assert!(made.contains("made"), "{made}");
    let listed = server.kubectl_ok(&["exec", "notified", "--", "ls", "-d", "/by-exec"]);
    assert_eq!(listed.trim(), "/by-exec");
    assert_eq!(
        agent.deliveries().len(),
        4,
        "every exec's filter reached the agent"
    );

    // A listener that is gone fails the exec rather than running it unwatched.
    drop(agent);
    std::fs::remove_file(&socket).unwrap();
    let out = server.kubectl(&["exec", "notified", "--", "true"]);
    assert!(!out.status.success(), "an exec whose listener is gone ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("seccomp notify listener"),
        "the failure names the listener: {stderr}"
    );
}

/// Writes a profile into the node's seccomp directory; the `localhostProfile` that names it.
fn install_profile(cluster: &Cluster, name: &str, text: &str) -> String {
    let dir = cluster.server.data_dir().join("seccomp");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), text).unwrap();
    name.to_string()
}

/// A pod whose one container runs `script` under the Localhost profile `file`.
fn pod_with_profile(cluster: &Cluster, name: &str, file: &str, script: &str) -> serde_json::Value {
    cluster.pod(
        name,
        serde_json::json!({"containers": [{
            "name": "main",
            "image": "busybox",
            "command": ["sh", "-c", script],
            "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": file}},
        }]}),
    )
}

#[test]
fn a_localhost_profile_denies_what_it_denies_and_a_missing_or_broken_one_keeps_the_container_from_starting(
) {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let server = &cluster.server;

    // The API refuses a profile that is not a relative path below the seccomp directory, and a
    // Localhost profile that names no file, with the field that is wrong.
    let escaping = pod_with_profile(&cluster, "escaping", "/etc/deny.json", "true");
    let out = server.kubectl_stdin(&["create", "-f", "-"], &escaping.to_string());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "an absolute profile path was accepted"
    );
    assert!(
        stderr.contains(
            "is invalid: spec.containers[0].securityContext.seccompProfile.localhostProfile: \
             Invalid value: \"/etc/deny.json\": must be a relative path"
        ),
        "{stderr}"
    );
    let unnamed = cluster.pod(
        "unnamed",
        serde_json::json!({
            "securityContext": {"seccompProfile": {"type": "Localhost"}},
            "containers": [{"name": "main", "image": "busybox"}],
        }),
    );
    let out = server.kubectl_stdin(&["create", "-f", "-"], &unnamed.to_string());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a Localhost profile without a file was accepted"
    );
    assert!(
        stderr.contains(
            "spec.securityContext.seccompProfile.localhostProfile: Required value: \
             must be set when seccomp type is Localhost"
        ),
        "{stderr}"
    );

    // mkdir fails with EPERM under the profile, for the container's process and for an exec;
    // the default profile would have let it through.
    let deny_mkdir = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    });
    let file = install_profile(&cluster, "deny-mkdir.json", &deny_mkdir.to_string());
    let script = "mkdir /by-init; echo \"mkdir exited $?\"; sleep 3600";
    cluster.create(pod_with_profile(&cluster, "denied", &file, script));
    cluster.wait_for("denied", "Running", |p| {
        p["status"]["containerStatuses"][0]["state"]["running"].is_object()
    });
    let mut logs = String::new();
    let denied = wait_until(Duration::from_secs(30), || {
        logs = String::from_utf8_lossy(&server.kubectl(&["logs", "denied"]).stdout).into_owned();
        logs.contains("mkdir exited")
    });
    assert!(denied, "the container never tried mkdir: {logs}");
    assert!(
        logs.contains("can't create directory '/by-init': Operation not permitted"),
        "{logs}"
    );
    assert!(logs.contains("mkdir exited 1"), "{logs}");
    let out = server.kubectl(&["exec", "denied", "--", "mkdir", "/by-exec"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "mkdir in an exec went through");
    assert!(stderr.contains("Operation not permitted"), "{stderr}");

    // A profile file that is not there, or not a seccomp profile: the container does not
    // start, and its status says why.
    install_profile(&cluster, "broken.json", "{\"defaultAction\": ");
    for (pod, file) in [("missing", "absent.json"), ("broken", "broken.json")] {
        cluster.create(pod_with_profile(&cluster, pod, file, "sleep 3600"));
        let status = cluster.wait_for(pod, "CreateContainerError", |p| {
            p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                == "CreateContainerError"
        });
        let message = status["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(message.contains(file), "{pod}: {message}");
        assert_eq!(status["status"]["phase"], "Pending", "{pod}: {status:#}");
    }
}
