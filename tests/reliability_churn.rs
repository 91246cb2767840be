//! Churn and leaks: cycle after cycle of a pod with an emptyDir and a configMap volume, a
//! NodePort Service and a NetworkPolicy, created and deleted again. Afterwards nothing of them is
//! left: no cgroups, mounts, pinned network namespaces, veths, pod IPs, ClusterIP or NodePort
//! allocations, nft rules, and berth holds no more file descriptors than it settled at.
//!
//! Needs root (network namespaces, cgroups, mounts, nftables), as in CI. 30 cycles (3 workers of
//! 10); with `BERTH_LONG=1`, 1,000 cycles, and berth's RSS must stay within 10% of where it
//! settled after the first 100 (`BERTH_CHURN_CYCLES` sets any other number; the RSS check
//! applies from 300). The RSS curve, one sample every 50 cycles, is printed at the end.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::netns::Netns;
use common::server::BerthServer;
use common::wait_until;
use serde_json::{json, Value};

const WORKERS: usize = 3;

fn cycles() -> usize {
    if let Some(n) = std::env::var("BERTH_CHURN_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        n
    } else if std::env::var_os("BERTH_LONG").is_some() {
        1_000
    } else {
        30
    }
}

fn manifest(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
         "data": {"greeting": format!("hello from {name}")}},
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": name, "labels": {"app": name}},
         "spec": {
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "main",
                "image": "busybox",
                // Exits on SIGTERM at once (a shell as PID 1 would otherwise ignore it).
                "command": ["sh", "-c", "trap 'exit 0' TERM; cat /config/greeting > /scratch/x; sleep 3600 & wait"],
                "volumeMounts": [
                    {"name": "scratch", "mountPath": "/scratch"},
                    {"name": "config", "mountPath": "/config"},
                ],
            }],
            "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "config", "configMap": {"name": name}},
            ],
         }},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
         "spec": {"type": "NodePort", "selector": {"app": name},
                  "ports": [{"port": 80, "targetPort": 8080}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": name},
         "spec": {"podSelector": {"matchLabels": {"app": name}},
                  "ingress": [{"from": [{"podSelector": {}}]}]}},
    ]})
}

/// What one cycle handed out, to look for afterwards.
#[derive(Debug, Default)]
struct Handed {
    pod_uids: Vec<String>,
    cluster_ips: Vec<String>,
    node_ports: Vec<String>,
}

fn one_cycle(server: &BerthServer, name: &str, handed: &Mutex<Handed>) {
    let list = manifest(name).to_string();
    let out = server.kubectl_stdin(&["create", "-f", "-", "-o", "json"], &list);
    assert!(
        out.status.success(),
        "create {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        &format!("pod/{name}"),
        "--timeout=120s",
    ]);
    let uid = server.kubectl_ok(&["get", "pod", name, "-o", "jsonpath={.metadata.uid}"]);
    let svc = server.kubectl_ok(&[
        "get",
        "service",
        name,
        "-o",
        "jsonpath={.spec.clusterIP} {.spec.ports[0].nodePort}",
    ]);
    {
        let mut handed = handed.lock().unwrap();
        handed.pod_uids.push(uid.trim().to_string());
        let mut svc = svc.split_whitespace();
        handed
            .cluster_ips
            .push(svc.next().unwrap_or_default().to_string());
        handed
            .node_ports
            .push(svc.next().unwrap_or_default().to_string());
    }
    let out = server.kubectl_stdin(&["delete", "-f", "-", "--timeout=120s"], &list);
    assert!(
        out.status.success(),
        "delete {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Mount points under `dir` in berth's mount namespace (berth runs in a private one).
fn mounts_under(pid: u32, dir: &Path) -> BTreeSet<String> {
    let dir = dir.display().to_string();
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|mountpoint| mountpoint.starts_with(&dir))
        .map(str::to_owned)
        .collect()
}

fn veths(ns: &Netns) -> usize {
    ns.exec_ok("ip", &["-o", "link", "show", "type", "veth"])
        .lines()
        .count()
}

fn files_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The pod cgroups of `uids` still present in any hierarchy.
fn pod_cgroups_left(uids: &[String]) -> Vec<String> {
    let mut left = Vec::new();
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        for uid in uids {
            let dir = hierarchy.path().join(format!("berth/pod{uid}"));
            if dir.exists() {
                left.push(dir.display().to_string());
            }
        }
    }
    left
}

#[test]
fn create_delete_cycles_leave_no_cgroups_mounts_netns_veths_allocations_rules_or_fds() {
    let ns = Netns::new();
    let mut cluster = Cluster::start(&ns);
    let pid = cluster.server.pid().expect("server pid");
    let data_dir = cluster.server.data_dir().to_path_buf();
    let total = cycles();
    let handed = Mutex::new(Handed::default());
    let done = AtomicUsize::new(0);
    let settled: Arc<Mutex<Option<(usize, u64)>>> = Arc::default();
    let rss_curve: Mutex<Vec<(usize, u64)>> = Mutex::new(vec![(0, rss_kib(pid))]);
    let mounts_before = mounts_under(pid, &data_dir);
    let veths_before = veths(&ns);
    let started = Instant::now();

    // One warm-up cycle: the first pod pulls the image and starts the long-lived pieces
    // (informers, DNS, proxy) whose fds and memory are not leaks.
    one_cycle(&cluster.server, "warmup", &handed);
    std::thread::scope(|scope| {
        for worker in 0..WORKERS {
            let server = &cluster.server;
            let handed = &handed;
            let done = &done;
            let settled = settled.clone();
            let rss_curve = &rss_curve;
            scope.spawn(move || {
                for i in (worker..total).step_by(WORKERS) {
                    one_cycle(server, &format!("churn-{i}"), handed);
                    let finished = done.fetch_add(1, Ordering::SeqCst) + 1;
                    if finished == total.min(100) {
                        *settled.lock().unwrap() = Some((fd_count(pid), rss_kib(pid)));
                    }
                    if finished % 50 == 0 {
                        rss_curve.lock().unwrap().push((finished, rss_kib(pid)));
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let handed = handed.into_inner().unwrap();
    let (fds_settled, rss_settled) = settled.lock().unwrap().expect("a settled sample");

    // Teardown is asynchronous after the API objects are gone: give it a moment.
    let clean = wait_until(Duration::from_secs(60), || {
        pod_cgroups_left(&handed.pod_uids).is_empty()
            && mounts_under(pid, &data_dir) == mounts_before
            && files_in(&data_dir.join("netns")).is_empty()
            && veths(&ns) == veths_before
            && files_in(&data_dir.join("pods")).is_empty()
    });
    let fds_quiet = wait_until(Duration::from_secs(30), || fd_count(pid) <= fds_settled);
    let fds_end = fd_count(pid);
    let rss_end = rss_kib(pid);
    eprintln!(
        "{} cycles in {elapsed:?} ({:?} each over {WORKERS} workers): fds {fds_settled} after \
         {} cycles, {fds_end} at the end; RSS {rss_settled} KiB after {} cycles, {rss_end} KiB \
         at the end",
        total + 1,
        elapsed / (total as u32 + 1),
        total.min(100),
        total.min(100),
    );
    let curve: Vec<String> = rss_curve
        .into_inner()
        .unwrap()
        .iter()
        .map(|(cycles, kib)| format!("{cycles}:{kib}"))
        .collect();
    eprintln!("RSS curve (cycles:KiB): {}", curve.join(" "));
    assert!(clean, "teardown never finished");
    assert_eq!(pod_cgroups_left(&handed.pod_uids), Vec::<String>::new());
    assert_eq!(mounts_under(pid, &data_dir), mounts_before, "mounts");
    assert!(files_in(&data_dir.join("netns")).is_empty(), "netns pins");
    assert_eq!(veths(&ns), veths_before, "veths");
    let ips: BTreeSet<String> = files_in(&data_dir.join("network/ipam"))
        .into_iter()
        .filter(|f| f.parse::<std::net::IpAddr>().is_ok())
        .collect();
    // The cluster DNS pod, if any, is the only owner of a pod address left.
    let dns_pods = cluster
        .server
        .kubectl_ok(&["get", "pods", "-A", "-o", "name"])
        .lines()
        .count();
    assert!(
        ips.len() <= dns_pods,
        "pod IPs still allocated: {ips:?} with {dns_pods} pods left"
    );
    assert!(
        fds_quiet,
        "berth holds {fds_end} fds, {fds_settled} after the first cycles"
    );
    let ruleset = ns.exec_ok("nft", &["list", "ruleset"]);
    for ip in &handed.cluster_ips {
        assert!(
            !ruleset.contains(&format!("{ip} ")) && !ruleset.contains(&format!("{ip},")),
            "nft rules still mention deleted ClusterIP {ip}"
        );
    }
    for port in &handed.node_ports {
        assert!(
            !ruleset.contains(&format!("dport {port} ")),
            "nft rules still mention deleted NodePort {port}"
        );
    }
    if total >= 300 {
        assert!(
            rss_end <= rss_settled + rss_settled / 10,
            "RSS {rss_end} KiB grew more than 10% over {rss_settled} KiB"
        );
    }

    // The service allocations live in the store: read them with berth stopped.
    cluster.server.kill9();
    let store = berth::store::Store::open(&data_dir.join("berth.redb"), Default::default())
        .expect("open the store");
    let allocations: Vec<String> = store
        .list("/allocations/", None, 0)
        .expect("list allocations")
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    drop(store);
    for ip in &handed.cluster_ips {
        assert!(
            !allocations.iter().any(|k| k.ends_with(&format!("/{ip}"))),
            "ClusterIP {ip} still allocated: {allocations:?}"
        );
    }
    for port in &handed.node_ports {
        assert!(
            !allocations.iter().any(|k| k.ends_with(&format!("/{port}"))),
            "NodePort {port} still allocated: {allocations:?}"
        );
    }
    // Let the fixture delete what is left with a running server.
    cluster.server.restart();
}
