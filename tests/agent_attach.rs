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
