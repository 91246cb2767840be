//! Where an idle node's CPU goes: 20 running pods, then a minute of nothing. Prints the CPU
//! share of the daemon (per thread name) and of the shims. A measurement, not a check: run it
//! against an optimised build with
//! `BERTH_TEST_BINARY=path/to/berth cargo test --test runtime_idle_cpu -- --ignored --nocapture`.
//!
//! Needs root (network namespaces, cgroups, mounts), as in CI.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::netns::Netns;
use common::procs;

const PODS: usize = 20;
const WINDOW: Duration = Duration::from_secs(60);

/// CPU ticks (user + system) per thread name of `pid`.
fn ticks_by_thread(pid: u32) -> BTreeMap<String, u64> {
    let mut by_name = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let (Some((head, after)), Some(open)) = (stat.rsplit_once(") "), stat.find('(')) else {
            continue;
        };
        let name = head[open + 1..].to_string();
        let fields: Vec<u64> = after
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let used = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
        *by_name.entry(name).or_insert(0) += used;
    }
    by_name
}

#[test]
#[ignore = "a measurement of a minute: run by hand"]
fn idle_cpu_with_twenty_running_pods() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    for i in 0..PODS {
        cluster.create(cluster.pod(
            &format!("idle-{i}"),
            serde_json::json!({"terminationGracePeriodSeconds": 1, "containers": [
                {"name": "app", "image": "busybox", "command": ["sleep", "3600"]}]}),
        ));
    }
    for i in 0..PODS {
        cluster.wait_for(&format!("idle-{i}"), "Running", |p| {
            p["status"]["phase"] == "Running"
        });
    }
    std::thread::sleep(Duration::from_secs(15));
    let daemon = cluster.server.pid().unwrap();
    let pods_dir = cluster.pods_dir();
    let shims = procs::shims(&pods_dir);
    assert_eq!(shims.len(), PODS, "one shim per pod");

    let shim_ticks = || -> u64 {
        shims
            .iter()
            .map(|pid| ticks_by_thread(*pid).values().sum::<u64>())
            .sum()
    };
    let (threads_before, shims_before) = (ticks_by_thread(daemon), shim_ticks());
    let started = Instant::now();
    std::thread::sleep(WINDOW);
    let (threads_after, shims_after) = (ticks_by_thread(daemon), shim_ticks());
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let share = |ticks: u64| ticks as f64 / hz / started.elapsed().as_secs_f64() * 100.0;
    let mut daemon_ticks = 0;
    for (name, after) in &threads_after {
        let used = after.saturating_sub(threads_before.get(name).copied().unwrap_or(0));
        daemon_ticks += used;
        if used > 0 {
            println!("daemon thread {name:20} {:.2} %", share(used));
        }
    }
    let shims_used = shims_after.saturating_sub(shims_before);
    println!(
        "idle CPU, {PODS} pods, {} s: {:.2} % of one core (daemon {:.2} + shims {:.2})",
        WINDOW.as_secs(),
        share(daemon_ticks + shims_used),
        share(daemon_ticks),
        share(shims_used)
    );
}
