//! Churn and leaks: cycle after cycle of a pod with emptyDir, configMap and secret volumes, a
//! NodePort Service and a NetworkPolicy, created and deleted again. Afterwards nothing of them is
//! left: no cgroups, mounts, pinned network namespaces, veths, pod IPs, ClusterIP or NodePort
//! allocations, no more nft rules or set elements than before the churn, berth holds no more
//! file descriptors than it settled at, and its RSS is within 10% of where it settled. berth
//! runs with a short store history and event TTL ([`STEADY_STORE`]), so that the store's own
//! growth, which is bounded, is over before the settle point.
//!
//! Needs root (network namespaces, cgroups, mounts, nftables), as in CI. Short mode: 50 cycles
//! over 3 workers (`BERTH_CHURN_WORKERS` for another number), RSS settled after 25. Long mode
//! (`--ignored`, or `BERTH_LONG=1`): 1,000 cycles, RSS settled after 100. `BERTH_CHURN_CYCLES`
//! sets any other number for either. The RSS curve, one sample every tenth of the run, is
//! printed at the end.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::netns::Netns;
use common::server::{names_in, BerthServer};
use common::wait_until;
use serde_json::{json, Value};

/// Cycles run in parallel (`BERTH_CHURN_WORKERS` for another number).
fn workers() -> usize {
    std::env::var("BERTH_CHURN_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(3)
}

const SHORT_CYCLES: usize = 50;
const LONG_CYCLES: usize = 1_000;

fn cycles(default: usize) -> usize {
    std::env::var("BERTH_CHURN_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn manifest(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
         "data": {"greeting": format!("hello from {name}")}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
         "stringData": {"token": format!("secret of {name}")}},
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": name, "labels": {"app": name}},
         "spec": {
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "main",
                "image": "busybox",
                // Exits on SIGTERM at once (a shell as PID 1 would otherwise ignore it).
                "command": ["sh", "-c", "trap 'exit 0' TERM; cat /config/greeting /secret/token > /scratch/x; sleep 3600 & wait"],
                "volumeMounts": [
                    {"name": "scratch", "mountPath": "/scratch"},
                    {"name": "config", "mountPath": "/config"},
                    {"name": "secret", "mountPath": "/secret"},
                ],
            }],
            "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "config", "configMap": {"name": name}},
                {"name": "secret", "secret": {"secretName": name}},
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

/// Rules, and elements of sets and maps, in the netns's nft ruleset: what a service, a pod or
/// a policy adds and must take away again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NftCounts {
    rules: usize,
    elements: usize,
}

fn nft_counts(ns: &Netns) -> NftCounts {
    let json: Value = serde_json::from_str(&ns.exec_ok("nft", &["-j", "list", "ruleset"]))
        .expect("nft -j prints JSON");
    let objects = json["nftables"].as_array().cloned().unwrap_or_default();
    let rules = objects.iter().filter(|o| o.get("rule").is_some()).count();
    let elements = objects
        .iter()
        .filter_map(|o| o.get("set").or_else(|| o.get("map")))
        .filter_map(|set| set["elem"].as_array())
        .map(Vec::len)
        .sum();
    NftCounts { rules, elements }
}

/// The ruleset's counts once the long-lived services are all programmed. Cluster DNS starts
/// serving (and publishes the `kube-dns` endpoint the proxy then programs) only once the
/// bridge address exists, which the first pod makes; a fast warm-up cycle can end before that.
fn settled_nft_counts(ns: &Netns, server: &BerthServer) -> NftCounts {
    let dns_published = wait_until(Duration::from_secs(30), || {
        !server
            .kubectl_ok(&[
                "get",
                "endpointslices",
                "-n",
                "kube-system",
                "-l",
                "kubernetes.io/service-name=kube-dns",
                "-o",
                "jsonpath={.items[*].endpoints[*].addresses[*]}",
            ])
            .trim()
            .is_empty()
    });
    assert!(dns_published, "cluster DNS never published its endpoint");
    // Then the same counts three times in a row, half a second apart.
    let mut last = nft_counts(ns);
    let mut same = 0;
    let settled = wait_until(Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(500));
        let now = nft_counts(ns);
        same = if now == last { same + 1 } else { 0 };
        last = now;
        same >= 2
    });
    assert!(settled, "the nft ruleset kept changing: {last:?}");
    last
}

/// The ClusterIP and NodePort allocation keys the existing services hold, as the store names
/// them.
fn service_allocations(server: &BerthServer) -> BTreeSet<String> {
    let list: Value =
        serde_json::from_str(&server.kubectl_ok(&["get", "services", "-A", "-o", "json"]))
            .expect("kubectl prints JSON");
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(berth::registry::services::keys_of)
        .collect()
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
    let default = if std::env::var_os("BERTH_LONG").is_some() {
        LONG_CYCLES
    } else {
        SHORT_CYCLES
    };
    churn(cycles(default));
}

/// The long mode on demand: `cargo test --test reliability_churn -- --ignored`.
#[test]
#[ignore = "long: 1,000 cycles"]
fn a_thousand_create_delete_cycles_leak_nothing_and_rss_stays_within_ten_percent() {
    churn(cycles(LONG_CYCLES));
}

/// Where RSS has settled: after 100 cycles, or halfway through a shorter run.
fn settle_point(total: usize) -> usize {
    total.min(200) / 2
}

/// Waits until the objects of every cycle so far are torn down (teardown is asynchronous after
/// the API objects are gone).
fn wait_for_teardown(
    ns: &Netns,
    pid: u32,
    data_dir: &Path,
    uids: &[String],
    mounts_before: &BTreeSet<String>,
    veths_before: usize,
) -> bool {
    wait_until(Duration::from_secs(60), || {
        pod_cgroups_left(uids).is_empty()
            && mounts_under(pid, data_dir) == *mounts_before
            && names_in(&data_dir.join("netns")).is_empty()
            && veths(ns) == veths_before
            && names_in(&data_dir.join("pods")).is_empty()
    })
}

/// The store grows by design until it holds its whole history (`history_revisions`, 10,000 by
/// default: a cycle writes about 35 revisions, so some 300 cycles) and an hour of Events
/// (`event_ttl_seconds`), and redb's page cache grows with the file: bounded, but still growing
/// after the settle point of even the long run. The history of the low-memory profile and a
/// one-minute event TTL bring the store to its steady size within the first cycles, so RSS
/// still climbing after the settle point is not the store filling up.
const STEADY_STORE: &str = "[store]\nhistory_revisions = 1000\n[api]\nevent_ttl_seconds = 60\n";

fn churn(total: usize) {
    let ns = Netns::new();
    let mut cluster = Cluster::start_with_config(&ns, STEADY_STORE);
    let pid = cluster.server.pid().expect("server pid");
    let data_dir = cluster.server.data_dir().to_path_buf();
    let settle_at = settle_point(total);
    let sample_every = total.div_ceil(10).max(1);
    let handed = Mutex::new(Handed::default());
    let done = AtomicUsize::new(0);
    let settled: Arc<Mutex<Option<(usize, u64)>>> = Arc::default();
    let rss_curve: Mutex<Vec<(usize, u64)>> = Mutex::new(vec![(0, rss_kib(pid))]);
    let mounts_before = mounts_under(pid, &data_dir);
    let veths_before = veths(&ns);

    // One warm-up cycle: the first pod pulls the image and starts the long-lived pieces
    // (informers, DNS, proxy, base chains) whose fds, memory and rules are not leaks.
    one_cycle(&cluster.server, "warmup", &handed);
    let warm_uids = handed.lock().unwrap().pod_uids.clone();
    assert!(
        wait_for_teardown(
            &ns,
            pid,
            &data_dir,
            &warm_uids,
            &mounts_before,
            veths_before
        ),
        "the warm-up pod was never torn down"
    );
    let nft_before = settled_nft_counts(&ns, &cluster.server);
    let allocations_before = service_allocations(&cluster.server);
    let workers = workers();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for worker in 0..workers {
            let server = &cluster.server;
            let handed = &handed;
            let done = &done;
            let settled = settled.clone();
            let rss_curve = &rss_curve;
            scope.spawn(move || {
                for i in (worker..total).step_by(workers) {
                    one_cycle(server, &format!("churn-{i}"), handed);
                    let finished = done.fetch_add(1, Ordering::SeqCst) + 1;
                    if finished == settle_at {
                        *settled.lock().unwrap() = Some((fd_count(pid), rss_kib(pid)));
                    }
                    if finished.is_multiple_of(sample_every) {
                        let rss = rss_kib(pid);
                        rss_curve.lock().unwrap().push((finished, rss));
                        // As it goes: a long run can be watched (and profiled) while it runs.
                        eprintln!("{finished} cycles: RSS {rss} KiB");
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let handed = handed.into_inner().unwrap();
    let (fds_settled, rss_settled) = settled.lock().unwrap().expect("a settled sample");

    let clean = wait_for_teardown(
        &ns,
        pid,
        &data_dir,
        &handed.pod_uids,
        &mounts_before,
        veths_before,
    );
    let nft_quiet = wait_until(Duration::from_secs(30), || nft_counts(&ns) == nft_before);
    let nft_end = nft_counts(&ns);
    let fds_quiet = wait_until(Duration::from_secs(30), || fd_count(pid) <= fds_settled);
    let fds_end = fd_count(pid);
    let rss_end = rss_kib(pid);
    eprintln!(
        "{total} cycles in {elapsed:?} ({:?} each over {workers} workers): fds {fds_settled} \
         after {settle_at} cycles, {fds_end} at the end; RSS {rss_settled} KiB after \
         {settle_at} cycles, {rss_end} KiB at the end ({:+.1}%); nft {nft_before:?} before, \
         {nft_end:?} after",
        elapsed / total.max(1) as u32,
        (rss_end as f64 - rss_settled as f64) * 100.0 / rss_settled.max(1) as f64,
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
    assert!(names_in(&data_dir.join("netns")).is_empty(), "netns pins");
    assert_eq!(veths(&ns), veths_before, "veths");
    let ips: BTreeSet<String> = names_in(&data_dir.join("network/ipam"))
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
        "berth holds {fds_end} fds, {fds_settled} after {settle_at} cycles"
    );
    assert!(
        nft_quiet,
        "nft rules and set elements: {nft_end:?} after the churn, {nft_before:?} before"
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

    // The service allocations live in the store: read them with berth stopped.
    let services_after = service_allocations(&cluster.server);
    cluster.server.kill9();
    let store = berth::store::Store::open(&data_dir.join("berth.redb"), Default::default())
        .expect("open the store");
    let allocations: BTreeSet<String> = store
        .list("/allocations/", None, 0)
        .expect("list allocations")
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    drop(store);
    assert_eq!(
        services_after, allocations_before,
        "the services left after the churn are not those before it"
    );
    assert_eq!(
        allocations, allocations_before,
        "ClusterIP and NodePort allocations in the store differ from those before the churn"
    );
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
    // Last, so that a growing RSS does not hide a leak checked above.
    assert!(
        rss_end <= rss_settled + rss_settled / 10,
        "RSS {rss_end} KiB grew more than 10% over {rss_settled} KiB after {settle_at} cycles"
    );
}
