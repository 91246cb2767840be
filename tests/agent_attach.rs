//! `kubectl attach` and `kubectl run -i --rm` against real containers: berth streams the
//! container's output live (followed from its CRI log) over the websocket channel protocol.
//!
//! Needs root (network namespaces, cgroups, mounts), as in CI.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::cluster::Cluster;
use common::netns::Netns;
use common::tools;

#[test]
fn kubectl_attach_streams_output_live_until_the_container_exits() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    cluster.create(cluster.pod(
        "talker",
        serde_json::json!({
            "restartPolicy": "Never",
            "containers": [{
                "name": "main", "image": "busybox",
                "command": ["sh", "-c", "echo before; sleep 4; for i in 1 2 3; do echo line $i; done; echo oops >&2; sleep 1"]
            }]
        }),
    ));
    cluster.wait_for("talker", "Running", |p| {
        p["status"]["containerStatuses"][0]["state"]["running"].is_object()
    });
    let started = std::time::Instant::now();
    let out = cluster.server.kubectl(&["attach", "talker", "-c", "main"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("line 1\nline 2\nline 3\n"),
        "attach shows what the container prints: {stdout:?} {stderr:?}"
    );
    assert!(
        !stdout.contains("before"),
        "output from before the attach is not replayed: {stdout:?}"
    );
    assert!(stderr.contains("oops"), "stderr arrives too: {stderr:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "attach waited for the container to end"
    );
}

#[test]
fn kubectl_run_interactive_with_rm_shows_the_output_and_deletes_the_pod() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let out = cluster
        .server
        .command(&tools::kubectl())
        .args([
            "run",
            "once",
            "--image=busybox",
            "--restart=Never",
            "-i",
            "--rm",
            "--",
            "sh",
            "-c",
            "sleep 3; echo hello from run",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run kubectl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("hello from run"), "{stdout:?} {stderr:?}");
    assert!(stdout.contains("\"once\" deleted"), "{stdout:?}");
    let gone = common::wait_until(Duration::from_secs(30), || {
        !cluster
            .server
            .kubectl(&["get", "pod", "once"])
            .status
            .success()
    });
    assert!(gone, "--rm deleted the pod");
}

#[test]
fn kubectl_run_interactive_feeds_stdin_and_the_container_sees_its_end() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let mut child = cluster
        .server
        .command(&tools::kubectl())
        .args([
            "run",
            "reader",
            "--image=busybox",
            "--restart=Never",
            "-i",
            "--rm",
            "--",
            "sh",
            "-c",
            "while read line; do echo got:$line; done; echo stdin ended",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"alpha\nbeta\n").expect("write stdin");
        // Dropped: kubectl sees end of file and closes the stream's stdin.
    }
    let out = child.wait_with_output().expect("wait for kubectl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("got:alpha\ngot:beta\nstdin ended"),
        "the container read what kubectl sent, then end of file: {stdout:?} {stderr:?}"
    );
}

#[test]
fn a_stdin_container_keeps_its_stdin_open_across_attaches() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    cluster.create(cluster.pod(
        "listener",
        serde_json::json!({
            "containers": [{
                "name": "main", "image": "busybox", "stdin": true,
                "command": ["sh", "-c", "while read line; do echo got:$line; done; echo stdin ended"]
            }]
        }),
    ));
    cluster.wait_for("listener", "Running", |p| {
        p["status"]["containerStatuses"][0]["state"]["running"].is_object()
    });
    let logs = || {
        String::from_utf8_lossy(&cluster.server.kubectl(&["logs", "listener"]).stdout).into_owned()
    };
    for word in ["first", "second"] {
        let mut child = cluster
            .server
            .command(&tools::kubectl())
            .args(["attach", "-i", "listener", "-c", "main"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("attach");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin
                .write_all(format!("{word}\n").as_bytes())
                .expect("write stdin");
        }
        let seen = common::wait_until(Duration::from_secs(30), || {
            logs().contains(&format!("got:{word}"))
        });
        // The attach does not end by itself (the container still runs): end our kubectl.
        let _ = child.kill();
        let _ = child.wait();
        assert!(seen, "attach delivered {word:?}: {}", logs());
    }
    assert!(
        !logs().contains("stdin ended"),
        "without stdinOnce the stdin stays open after an attach ends: {}",
        logs()
    );
    assert!(cluster
        .server
        .kubectl(&["delete", "pod", "listener", "--wait=false"])
        .status
        .success());
}
