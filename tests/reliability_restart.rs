//! Runtime restarts: `kill -9` of berth with running pods. A restarted berth re-adopts every
//! container (same containerID, same restartCount, same pod IP), their logs go on growing,
//! `kubectl exec` works, and a container that exited while berth was down is reported and
//! restarted as its restartPolicy says.
//!
//! Needs root (network namespaces, cgroups, mounts, nftables), as in CI. Runs 10 pods; with
//! `BERTH_LONG=1`, 20.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::netns::Netns;
use common::wait_until;
use serde_json::{json, Value};

const CONTAINER: &str = "counter";

fn pod_count() -> usize {
    if std::env::var_os("BERTH_LONG").is_some() {
        20
    } else {
        10
    }
}

/// What must not change across the restart, by pod name: (containerID, restartCount, podIP).
type Adopted = BTreeMap<String, (String, i64, String)>;

fn running_pods(cluster: &Cluster) -> (Adopted, Value) {
    let out = cluster
        .server
        .kubectl_ok(&["get", "pods", "-l", "test=restart", "-o", "json"]);
    let pods: Value = serde_json::from_str(&out).expect("pod list is JSON");
    let mut adopted = Adopted::new();
    for pod in pods["items"].as_array().into_iter().flatten() {
        let status = &pod["status"]["containerStatuses"][0];
        if status["state"]["running"].is_null() || pod["status"]["podIP"].is_null() {
            continue;
        }
        adopted.insert(
            pod["metadata"]["name"].as_str().unwrap_or("").to_string(),
            (
                status["containerID"].as_str().unwrap_or("").to_string(),
                status["restartCount"].as_i64().unwrap_or(-1),
                pod["status"]["podIP"].as_str().unwrap_or("").to_string(),
            ),
        );
    }
    (adopted, pods)
}

/// Every process of the pod's container, from its cgroup in any hierarchy.
fn container_pids(uid: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten() {
        let procs: PathBuf = hierarchy
            .map(|h| h.path())
            .unwrap_or_default()
            .join(format!("berth/pod{uid}/{CONTAINER}/cgroup.procs"));
        if let Ok(text) = std::fs::read_to_string(procs) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn log_lines(cluster: &Cluster, pod: &str) -> Vec<String> {
    let out = cluster.server.kubectl(&["logs", pod]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn kill_9_with_running_pods_readopts_them_and_restarts_what_died_meanwhile() {
    let ns = Netns::new();
    let mut cluster = Cluster::start(&ns);
    let count = pod_count();
    let started = Instant::now();
    for i in 0..count {
        let mut pod = cluster.pod(
            &format!("counter-{i}"),
            json!({
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": CONTAINER,
                    "image": "busybox",
                    "command": ["sh", "-c", "i=0; while true; do echo $i; i=$((i+1)); sleep 1; done"],
                }],
            }),
        );
        pod["metadata"]["labels"] = json!({"test": "restart"});
        cluster.create(pod);
    }
    let mut before = Adopted::new();
    let mut pods = Value::Null;
    let all_running = wait_until(Duration::from_secs(240), || {
        (before, pods) = running_pods(&cluster);
        before.len() == count
    });
    assert!(all_running, "{count} pods never all ran: {pods:#}");
    eprintln!("{count} pods running after {:?}", started.elapsed());
    assert!(
        before
            .values()
            .all(|(id, restarts, _)| !id.is_empty() && *restarts == 0),
        "{before:?}"
    );
    let uids: BTreeMap<String, String> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                p["metadata"]["uid"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let logged_before = log_lines(&cluster, "counter-0");
    assert!(!logged_before.is_empty(), "counter-0 logs its counter");

    cluster.server.kill9();
    // While berth is down, the last pod's container dies.
    let victim = format!("counter-{}", count - 1);
    let victim_pids = container_pids(&uids[&victim]);
    assert!(
        !victim_pids.is_empty(),
        "{victim}'s container has processes"
    );
    for pid in &victim_pids {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill the container's process");
    }
    assert!(
        wait_until(Duration::from_secs(10), || container_pids(&uids[&victim])
            .iter()
            .all(|p| !victim_pids.contains(p))),
        "the victim's processes are gone"
    );
    let restarted_at = Instant::now();
    cluster.server.restart();
    eprintln!("berth back up in {:?}", restarted_at.elapsed());

    // The victim is reported and restarted once; every other pod is the same container.
    let victim_status = cluster.wait_for(&victim, "restartCount 1 and running", |pod| {
        let status = &pod["status"]["containerStatuses"][0];
        status["restartCount"] == 1 && !status["state"]["running"].is_null()
    });
    let last = &victim_status["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert!(
        !last.is_null(),
        "the exit is reported as lastState: {victim_status:#}"
    );
    let mut after = Adopted::new();
    let readopted = wait_until(Duration::from_secs(60), || {
        (after, _) = running_pods(&cluster);
        after.len() == count
    });
    assert!(readopted, "pods running after the restart: {after:?}");
    eprintln!(
        "all pods reported running {:?} after the restart",
        restarted_at.elapsed()
    );
    for (name, was) in &before {
        let now = &after[name];
        if *name == victim {
            assert_eq!(now.2, was.2, "{name} keeps its pod IP");
        } else {
            assert_eq!(now, was, "{name}: same container, restart count and IP");
        }
    }

    // The log goes on where it was: every earlier line is still there and new ones follow.
    let grew = wait_until(Duration::from_secs(20), || {
        log_lines(&cluster, "counter-0").len() > logged_before.len() + 2
    });
    let logged_after = log_lines(&cluster, "counter-0");
    assert!(grew, "the log grows after the restart: {logged_after:?}");
    assert_eq!(
        logged_after[..logged_before.len()],
        logged_before[..],
        "earlier lines are kept"
    );

    let echoed =
        cluster
            .server
            .kubectl_ok(&["exec", "counter-1", "--", "echo", "exec after restart"]);
    assert_eq!(echoed.trim(), "exec after restart");
}
