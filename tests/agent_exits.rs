//! The agent learns of container exits from the pod shims instead of polling for them: a live
//! pod is only looked at again every 30 s, yet an exit reaches the pod's status at once.
//!
//! Needs root (network namespaces, cgroups, mounts), as in CI.

mod common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::netns::Netns;

fn phase(pod: &serde_json::Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("")
}

#[test]
fn a_container_exit_reaches_the_pod_status_long_before_the_next_resync() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    // Long enough that the agent's look right after the start has passed when it exits.
    cluster.create(cluster.pod(
        "brief",
        serde_json::json!({"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "busybox",
            "command": ["sh", "-c", "sleep 6; exit 3"]}]}),
    ));
    cluster.wait_for("brief", "Running", |p| phase(p) == "Running");
    let running_seen = Instant::now();
    let failed = cluster.wait_for("brief", "Failed", |p| phase(p) == "Failed");
    let took = running_seen.elapsed();
    assert_eq!(
        failed["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        3
    );
    // Exit ~6 s after Running; a poll-driven agent would only notice at its 30 s re-sync.
    assert!(
        took < Duration::from_secs(14),
        "the exit took {took:?} to reach the pod status"
    );
}
