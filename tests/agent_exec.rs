//! `kubectl exec` and `kubectl cp` against real containers: the real kubectl v1.35 streams over
//! the websocket channel protocol (v5) to berth, which runs the command through the pod's shim.
//!
//! Needs root (network namespaces, cgroups, mounts), as in CI.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::netns::Netns;
use common::wait_until;

fn phase(pod: &serde_json::Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("")
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn shim_pid(cluster: &Cluster, pod: &serde_json::Value) -> u32 {
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let pid = common::server::shim_pid(&cluster.pods_dir(), uid).expect("the shim's pid file");
    u32::try_from(pid).expect("a pid")
}

#[test]
fn kubectl_exec_runs_commands_with_stdin_tty_and_exit_codes_and_cp_copies_both_ways() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    cluster.create(cluster.pod(
        "box",
        serde_json::json!({"containers": [
            {"name": "main", "image": "busybox", "command": ["sleep", "3600"]},
            {"name": "side", "image": "busybox", "command": ["sh", "-c", "echo side > /tmp/who; sleep 3600"]}
        ]}),
    ));
    let pod = cluster.wait_for("box", "Running", |p| {
        phase(p) == "Running"
            && p["status"]["containerStatuses"]
                .as_array()
                .is_some_and(|s| s.iter().all(|c| c["state"]["running"].is_object()))
    });
    let server = &cluster.server;
    let berth = server.pid().unwrap();
    let shim = shim_pid(&cluster, &pod);
    // Warm up once so lazily opened descriptors (connections, caches) do not count as leaks.
    server.kubectl_ok(&["exec", "box", "--", "true"]);
    let fds_before = fd_count(berth);
    let shim_fds_before = fd_count(shim);

    // Output and the remote exit code.
    assert_eq!(
        server.kubectl_ok(&["exec", "box", "--", "echo", "hi"]),
        "hi\n"
    );
    let failed = server.kubectl(&["exec", "box", "--", "sh", "-c", "echo oops >&2; exit 3"]);
    assert_eq!(
        failed.status.code(),
        Some(3),
        "kubectl exec returns the remote exit code"
    );
    assert!(String::from_utf8_lossy(&failed.stderr).contains("oops"));

    // -c picks the container; the default is the first.
    assert_eq!(
        server.kubectl_ok(&["exec", "box", "-c", "side", "--", "cat", "/tmp/who"]),
        "side\n"
    );
    assert!(!server
        .kubectl(&["exec", "box", "--", "cat", "/tmp/who"])
        .status
        .success());

    // Stdin is streamed and its end reaches the process (v5 close signal).
    let piped = server.kubectl_stdin(&["exec", "-i", "box", "--", "cat"], "data\nmore data\n");
    assert!(
        piped.status.success(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&piped.stdout), "data\nmore data\n");

    // A tty: kubectl needs a terminal of its own for -t, so run it under script(1). The first
    // size kubectl sends is set by the shim as soon as the pty exists.
    let kubectl = common::tools::kubectl();
    let line = format!(
        "stty cols 91 rows 17; {} exec -it box -- sh -c 'tty; stty size; exit 4'",
        kubectl.display()
    );
    let tty = cluster
        .server
        .command(std::path::Path::new("script"))
        .args(["-qec", &line, "/dev/null"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&tty.stdout);
    assert!(
        text.contains("/dev/pts/"),
        "tty names the container's pty: {text}"
    );
    assert!(
        text.contains("17 91"),
        "the terminal size reaches the pty: {text}"
    );
    assert_eq!(tty.status.code(), Some(4), "{text}");

    // kubectl cp: tar through exec, into the pod and back.
    let work = tempfile::tempdir().unwrap();
    let local = work.path().join("in.txt");
    let content: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&local, &content).unwrap();
    server.kubectl_ok(&["cp", local.to_str().unwrap(), "box:/tmp/copied.txt"]);
    assert_eq!(
        server
            .kubectl_ok(&["exec", "box", "--", "wc", "-l", "/tmp/copied.txt"])
            .trim(),
        "2000 /tmp/copied.txt"
    );
    let back = work.path().join("back.txt");
    server.kubectl_ok(&["cp", "box:/tmp/copied.txt", back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), content);

    // Errors are Status answers kubectl prints.
    let unknown = server.kubectl(&["exec", "box", "-c", "nope", "--", "true"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr)
            .contains("container nope is not valid for pod box"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );

    // Nothing leaks: exec processes are reaped and every descriptor is closed again.
    assert!(
        wait_until(Duration::from_secs(10), || children(shim).len() == 2),
        "only the two containers stay children of the shim: {:?}",
        children(shim)
    );
    assert!(
        wait_until(Duration::from_secs(10), || fd_count(berth) <= fds_before
            && fd_count(shim) <= shim_fds_before),
        "descriptors: berth {} -> {}, shim {} -> {}",
        fds_before,
        fd_count(berth),
        shim_fds_before,
        fd_count(shim)
    );
}

#[test]
fn kubectl_exec_refuses_pods_that_are_not_running() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    cluster.create(cluster.pod(
        "done",
        serde_json::json!({"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox", "command": ["true"]}]}),
    ));
    cluster.wait_for("done", "Succeeded", |p| phase(p) == "Succeeded");
    let out = cluster.server.kubectl(&["exec", "done", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("completed pod"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Past kubectl's own phase check, the server refuses too: a pod never scheduled.
    cluster.create(serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "nowhere"},
        "spec": {"schedulerName": "none", "containers": [{"name": "main", "image": "busybox"}]}}));
    let out = cluster.server.kubectl(&["exec", "nowhere", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not have a host assigned"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `Seccomp:` of `/proc/self/status` and whether `unshare -U` (denied by RuntimeDefault to a
/// process without CAP_SYS_ADMIN, allowed otherwise) worked, as one line.
const SECCOMP_PROBE: &str =
    "grep Seccomp: /proc/self/status; unshare -U true && echo unshared || echo denied";

#[test]
fn kubectl_exec_runs_under_the_seccomp_filter_of_its_container() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    // Baseline (the default level) forbids Unconfined.
    cluster.server.kubectl_ok(&[
        "label",
        "namespace",
        "default",
        "pod-security.kubernetes.io/enforce=privileged",
        "--overwrite",
    ]);
    cluster.create(cluster.pod(
        "filtered",
        serde_json::json!({"containers": [
            {"name": "confined", "image": "busybox", "command": ["sleep", "3600"],
             "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}},
            {"name": "open", "image": "busybox", "command": ["sleep", "3600"],
             "securityContext": {"seccompProfile": {"type": "Unconfined"}}}
        ]}),
    ));
    cluster.wait_for("filtered", "Running", |p| {
        phase(p) == "Running"
            && p["status"]["containerStatuses"]
                .as_array()
                .is_some_and(|s| s.iter().all(|c| c["state"]["running"].is_object()))
    });
    let server = &cluster.server;
    let exec = |container: &str, extra: &[&str]| {
        let mut args = vec!["exec", "filtered", "-c", container];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "sh", "-c", SECCOMP_PROBE]);
        server.kubectl_ok(&args)
    };

    // Piped and with stdin, as `kubectl exec` and `kubectl cp` run.
    for extra in [&[][..], &["-i"][..]] {
        let confined = exec("confined", extra);
        assert!(confined.contains("Seccomp:\t2"), "{confined}");
        assert!(confined.contains("denied"), "{confined}");
        let open = exec("open", extra);
        assert!(open.contains("Seccomp:\t0"), "{open}");
        assert!(open.contains("unshared"), "{open}");
    }

    // With a tty (kubectl needs one of its own: script(1) gives it).
    let line = format!(
        "{} exec -it filtered -c confined -- sh -c '{SECCOMP_PROBE}'",
        common::tools::kubectl().display()
    );
    let tty = server
        .command(std::path::Path::new("script"))
        .args(["-qec", &line, "/dev/null"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&tty.stdout);
    assert!(text.contains("Seccomp:\t2"), "{text}");
    assert!(text.contains("denied"), "{text}");

    // The exec's capabilities are the container's: the CAP_SYS_ADMIN lent for loading the
    // filter is gone before the command runs.
    let caps = server.kubectl_ok(&[
        "exec",
        "filtered",
        "-c",
        "confined",
        "--",
        "grep",
        "CapEff:",
        "/proc/self/status",
    ]);
    let effective = caps
        .split_whitespace()
        .nth(1)
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .unwrap_or(u64::MAX);
    assert_eq!(effective & (1 << 21), 0, "no CAP_SYS_ADMIN: {caps}");
    assert_ne!(effective, 0, "the default capabilities: {caps}");
}
