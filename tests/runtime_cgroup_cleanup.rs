//! A pod's cgroup directories go from every hierarchy they were made in, however the pod goes.
//! On a hybrid host the shim also makes them in the named v1 hierarchy (`systemd`) and in the
//! cgroup2 one (`unified`), where no container runtime looks: a cleanup that swept only the
//! controller hierarchies, or gave up on a hierarchy while killed processes were still leaving
//! it, left them there for good.
//!
//! The ways checked: a deleted pod; a pod deleted after its shim died (its container left
//! running); `berth reset` after berth was killed with a pod running; and the cleanup tests
//! do after a server killed with its pods running, or killed while it started a pod's shim.
//!
//! Needs root (network namespaces, cgroups, mounts), as in CI.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cluster::Cluster;
use common::netns::Netns;
use common::server::stop_pods_left_behind;
use common::wait_until;

/// The directories of pod `uid` in every cgroup hierarchy of this host, named ones included.
fn pod_cgroup_dirs(uid: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .expect("list the cgroup hierarchies")
        .flatten()
        .map(|h| h.path().join("berth").join(format!("pod{uid}")))
        .filter(|dir| dir.exists())
        .collect();
    dirs.sort();
    dirs
}

/// Starts a pod that sleeps; its uid once it runs, after checking its cgroup directories are
/// there, in the named hierarchy too when the host has one.
fn running_pod(cluster: &Cluster, name: &str) -> String {
    cluster.create(cluster.pod(
        name,
        serde_json::json!({"containers": [
            {"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]}),
    ));
    let pod = cluster.wait_for(name, "Running", |p| {
        p["status"]["containerStatuses"][0]["state"]["running"].is_object()
    });
    let uid = pod["metadata"]["uid"].as_str().expect("a uid").to_string();
    let dirs = pod_cgroup_dirs(&uid);
    assert!(!dirs.is_empty(), "pod {name} has no cgroup directory");
    if Path::new("/sys/fs/cgroup/systemd").exists() {
        assert!(
            dirs.iter().any(|d| d.starts_with("/sys/fs/cgroup/systemd")),
            "pod {name} has no directory in the named systemd hierarchy: {dirs:?}"
        );
    }
    uid
}

fn assert_no_cgroup_dirs_left(uid: &str, how: &str) {
    let mut left = Vec::new();
    let gone = wait_until(Duration::from_secs(30), || {
        left = pod_cgroup_dirs(uid);
        left.is_empty()
    });
    assert!(gone, "{how}: cgroup directories left: {left:?}");
}

#[test]
fn every_way_a_pod_goes_removes_its_cgroup_directories_from_every_hierarchy() {
    let ns = Netns::new();
    let mut cluster = Cluster::start(&ns);

    let uid = running_pod(&cluster, "deleted");
    cluster
        .server
        .kubectl_ok(&["delete", "pod", "deleted", "--grace-period=1"]);
    assert_no_cgroup_dirs_left(&uid, "a deleted pod");

    // The shim dies; its container lives on, re-parented, until the pod's removal kills it.
    let uid = running_pod(&cluster, "shim-died");
    let shim = common::server::shim_pid(&cluster.pods_dir(), &uid).expect("the shim's pid file");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the shim");
    cluster
        .server
        .kubectl_ok(&["delete", "pod", "shim-died", "--grace-period=1"]);
    assert_no_cgroup_dirs_left(&uid, "a pod deleted after its shim died");

    let uid = running_pod(&cluster, "reset");
    let run_dir = cluster.pods_run_dir();
    assert!(run_dir.join(&uid).join("shim.sock").exists());
    cluster.server.kill9();
    let data_dir = cluster
        .server
        .data_dir()
        .to_str()
        .expect("utf-8")
        .to_string();
    let out = cluster.server.berth(&["reset", "--data-dir", &data_dir]);
    assert!(
        out.status.success(),
        "berth reset: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        pod_cgroup_dirs(&uid).is_empty(),
        "berth reset left cgroup directories: {:?}",
        pod_cgroup_dirs(&uid)
    );
    assert!(
        !run_dir.exists(),
        "berth reset left the run dir {run_dir:?}"
    );

    // The server comes back and runs the pod again (reset removed it from the node, not from
    // the API); killed once more, it leaves the pod to the tests' own cleanup.
    cluster.server.restart();
    let pod = cluster.wait_for("reset", "Running again", |p| {
        p["status"]["containerStatuses"][0]["state"]["running"].is_object()
            && pod_cgroup_dirs(p["metadata"]["uid"].as_str().unwrap_or_default()).len() > 1
    });
    let uid = pod["metadata"]["uid"].as_str().expect("a uid").to_string();
    cluster.server.kill9();
    stop_pods_left_behind(&cluster.pods_dir());
    assert!(
        pod_cgroup_dirs(&uid).is_empty(),
        "the tests' cleanup left cgroup directories: {:?}",
        pod_cgroup_dirs(&uid)
    );

    // Killed while it starts a pod's shim: the shim may still be double-forking and joining
    // its cgroups while the cleanup runs.
    cluster.server.restart();
    let pods = cluster.pods_dir();
    let known: Vec<String> = pod_uids(&pods);
    cluster.create(cluster.pod(
        "starting",
        serde_json::json!({"containers": [
            {"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]}),
    ));
    let mut new_uids = Vec::new();
    let appeared = wait_until(Duration::from_secs(60), || {
        new_uids = pod_uids(&pods)
            .into_iter()
            .filter(|u| !known.contains(u))
            .collect();
        !new_uids.is_empty()
    });
    assert!(appeared, "the agent never started the pod");
    cluster.server.kill9();
    stop_pods_left_behind(&pods);
    for uid in &new_uids {
        assert!(
            pod_cgroup_dirs(uid).is_empty(),
            "the cleanup after a kill during a shim's start left cgroup directories: {:?}",
            pod_cgroup_dirs(uid)
        );
    }
    cluster.server.restart();
}

/// The pods the node holds state for.
fn pod_uids(pods: &Path) -> Vec<String> {
    common::server::names_in(pods).into_iter().collect()
}
