//! Terminals with the real kubectl: a `tty: true` container runs on a pty the shim allocates,
//! `kubectl attach -it` carries its input and resizes, its log stays CRI-formatted; an exec's
//! terminal follows a resize made while it runs; a `stdinOnce` terminal's program sees end of
//! input when its one attach's input ends. kubectl needs a terminal of its own for `-t`,
//! so it runs under script(1), whose terminal the test resizes with stty mid-run (kubectl
//! sees SIGWINCH and sends the new size).
//!
//! Needs root (network namespaces, cgroups, mounts), as in CI.

mod common;

use std::process::Stdio;

use common::cluster::Cluster;
use common::netns::Netns;
use common::tools;
use serde_json::json;

/// Runs `line` under script(1) with a terminal of 91x17 that becomes 120x40 after
/// `resize_after` seconds; returns what the terminal showed.
fn in_terminal(cluster: &Cluster, line: &str, resize_after: u32) -> String {
    // A background job's stdin is /dev/null: its stty names the terminal itself.
    let script = format!(
        "stty cols 91 rows 17; (sleep {resize_after}; stty cols 120 rows 40 </dev/tty) & {line}; wait"
    );
    let mut child = cluster
        .server
        .command(std::path::Path::new("script"))
        .args(["-qec", &script, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script");
    // Held open until script ends, so it never sees end of file on its input.
    let _stdin = child.stdin.take();
    let out = child.wait_with_output().expect("wait for script");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_tty_container_runs_on_a_pty_that_attach_drives_and_resizes() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    cluster.create(cluster.pod(
        "term",
        json!({"containers": [{
            "name": "main", "image": "busybox", "tty": true, "stdin": true,
            "command": ["sh", "-c", "while true; do tty; stty size; sleep 1; done"]
        }]}),
    ));
    cluster.wait_for("term", "Running", |p| {
        p["status"]["containerStatuses"][0]["state"]["running"].is_object()
    });

    let kubectl = tools::kubectl();
    let shown = in_terminal(
        &cluster,
        &format!(
            "timeout --foreground 10 {} attach -it term -c main",
            kubectl.display()
        ),
        4,
    );
    assert!(
        shown.contains("/dev/pts/0"),
        "the container's stdio is a pty: {shown:?}"
    );
    assert!(
        shown.contains("17 91"),
        "attach set the terminal's size: {shown:?}"
    );
    assert!(
        shown.contains("40 120"),
        "the resize reached the container's terminal: {shown:?}"
    );

    let logs = cluster.server.kubectl_ok(&["logs", "term"]);
    assert!(logs.contains("/dev/pts/0"), "{logs}");
    assert!(logs.contains("40 120"), "{logs}");
    // The log file is still CRI-formatted: a tty's output is one stream, logged as stdout.
    let pod = cluster.get("term");
    let uid = pod["metadata"]["uid"].as_str().expect("uid");
    let file = cluster
        .server
        .data_dir()
        .join("logs")
        .join(format!("default_term_{uid}"))
        .join("main")
        .join("0.log");
    let text = std::fs::read_to_string(&file).expect("the container's log file");
    let mut lines = 0;
    for line in text.lines() {
        let fields: Vec<&str> = line.splitn(4, ' ').collect();
        assert!(
            fields.len() == 4
                && fields[0].parse::<jiff::Timestamp>().is_ok()
                && fields[1] == "stdout"
                && (fields[2] == "F" || fields[2] == "P"),
            "a CRI log line: {line:?}"
        );
        lines += 1;
    }
    assert!(lines >= 4, "{text}");

    // An exec's terminal follows a resize made while it runs, here in the tty container.
    let shown = in_terminal(
        &cluster,
        &format!(
            "{} exec -it term -- sh -c 'stty size; sleep 6; stty size'",
            kubectl.display()
        ),
        3,
    );
    let first = shown.find("17 91");
    let second = shown.find("40 120");
    assert!(
        matches!((first, second), (Some(a), Some(b)) if a < b),
        "the exec saw its first size, then the new one: {shown:?}"
    );
}

#[test]
fn a_stdin_once_terminal_sees_end_of_input_when_its_attach_input_ends() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    cluster.create(cluster.pod(
        "once",
        json!({"restartPolicy": "Never", "containers": [{
            "name": "main", "image": "busybox", "tty": true, "stdin": true, "stdinOnce": true,
            "command": ["cat"]
        }]}),
    ));
    cluster.wait_for("once", "Running", |p| {
        p["status"]["containerStatuses"][0]["state"]["running"].is_object()
    });

    // Piped input, as `kubectl run -i --rm` or a script gives it: at its end, cat must end.
    let kubectl = tools::kubectl();
    let mut child = cluster
        .server
        .command(std::path::Path::new("timeout"))
        .arg("60")
        .arg(&kubectl)
        .args(["attach", "-i", "once", "-c", "main"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl attach");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("kubectl's stdin");
        // Give the attach time to connect before its input ends.
        std::thread::sleep(std::time::Duration::from_secs(2));
        stdin
            .write_all(b"through the terminal\n")
            .expect("write kubectl's stdin");
    }
    let out = child.wait_with_output().expect("wait for kubectl attach");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the attach ended with the container, not by timeout: {:?} {shown:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        shown.contains("through the terminal"),
        "the input came back through the terminal: {shown:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ended = cluster.wait_for("once", "Succeeded", |p| p["status"]["phase"] == "Succeeded");
    assert_eq!(
        ended["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 0,
        "cat read end of file and exited: {:#}",
        ended["status"]
    );
}
