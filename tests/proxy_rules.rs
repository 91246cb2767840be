//! The service proxy's rules for real, in network namespaces the tests make.
//!
//! Needs root (network namespaces, mounts, nftables). The proxy's rules are programmed on a
//! thread inside the test's "node" namespace; pods are namespaces on that node's bridge made by
//! `NodeNetwork`, and the only traffic is TCP between these namespaces.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth::network::proxy::{render, Applier, ProxyConfig, Ruleset};
use berth::network::{NodeNetwork, NodeNetworkConfig, PodNetwork};
use common::netns::Netns;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use nix::mount::{umount2, MntFlags};
use nix::sched::{setns, CloneFlags};

static NEXT_POD: AtomicUsize = AtomicUsize::new(0);

/// The node's address on its "LAN", a veth to the client namespace.
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// A node namespace with a pod network, and a client namespace on the node's LAN whose address
/// is also the node's default gateway (so routing to cluster IPs behaves as on a real node).
struct Node {
    ns: Netns,
    client: Netns,
    data_dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let node = Node {
            ns: Netns::new(),
            client: Netns::new(),
            data_dir: tempfile::tempdir().expect("temp data dir"),
        };
        node.run(|net| async move { net.init().await.expect("init") });
        let n = NEXT_POD.fetch_add(1, Ordering::SeqCst);
        let (lan, peer) = (
            format!("pl{}x{n}", std::process::id() % 100_000),
            format!("pc{}x{n}", std::process::id() % 100_000),
        );
        let ns = &node.ns;
        ns.exec_ok(
            "ip",
            &[
                "link",
                "add",
                &lan,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
                "netns",
                &node.client.name,
            ],
        );
        ns.exec_ok("ip", &["addr", "add", "192.0.2.1/24", "dev", &lan]);
        ns.exec_ok("ip", &["link", "set", &lan, "up"]);
        ns.exec_ok("ip", &["route", "add", "default", "via", "192.0.2.2"]);
        let client = &node.client;
        client.exec_ok("ip", &["addr", "add", "192.0.2.2/24", "dev", &peer]);
        client.exec_ok("ip", &["link", "set", &peer, "up"]);
        client.exec_ok("ip", &["route", "add", "default", "via", "192.0.2.1"]);
        node
    }

    fn client_netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.client.name)
    }

    fn config(&self) -> NodeNetworkConfig {
        NodeNetworkConfig::single_node(self.data_dir.path())
    }

    fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.ns.name)
    }

    fn run<T, F, Fut>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(NodeNetwork) -> Fut + Send + 'static,
        Fut: Future<Output = T>,
    {
        let config = self.config();
        in_netns(&self.netns_path(), move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(f(NodeNetwork::new(config)))
        })
    }

    fn pod(&self, tag: &str) -> PodNetwork {
        let uid = format!(
            "{tag}-{}-{}",
            std::process::id(),
            NEXT_POD.fetch_add(1, Ordering::SeqCst)
        );
        self.run(move |net| async move { net.setup_pod(&uid).await.expect("setup_pod") })
    }

    /// An applier whose socket lives in the node's namespace.
    fn applier(&self) -> Applier {
        in_netns(&self.netns_path(), || {
            Applier::open().expect("open applier")
        })
    }

    fn nft_list(&self) -> String {
        self.ns.exec_ok("nft", &["list", "table", "ip", "berth"])
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let (path, config) = (self.netns_path(), self.config());
        let _ = std::thread::spawn(move || {
            let Ok(ns) = File::open(&path) else { return };
            if setns(&ns, CloneFlags::CLONE_NEWNET).is_err() {
                return;
            }
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                let _ = runtime.block_on(NodeNetwork::new(config).cleanup_all());
            }
        })
        .join();
        for mount in mounts_under(self.data_dir.path()).into_iter().rev() {
            let _ = umount2(&mount, MntFlags::MNT_DETACH);
        }
    }
}

fn in_netns<T: Send + 'static>(netns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = File::open(netns).unwrap_or_else(|e| panic!("open {}: {e}", netns.display()));
    std::thread::spawn(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|mp| mp.starts_with(&dir))
        .collect()
}

fn proxy_config() -> ProxyConfig {
    ProxyConfig {
        node_name: "node-1".into(),
        node_ips: vec![NODE_IP],
        cluster_cidr: "10.42.0.0/16".parse().unwrap(),
    }
}

fn service(name: &str, cluster_ip: &str, port: u16, extra: serde_json::Value) -> Service {
    let mut spec = serde_json::json!({
        "clusterIP": cluster_ip,
        "ports": [{"name": "http", "port": port, "protocol": "TCP", "targetPort": 8080}],
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }))
    .unwrap()
}

fn slice(service: &str, port: u16, ready: &[Ipv4Addr], not_ready: &[Ipv4Addr]) -> EndpointSlice {
    let mut endpoints: Vec<serde_json::Value> = ready
        .iter()
        .map(|ip| serde_json::json!({"addresses": [ip.to_string()], "conditions": {"ready": true}, "nodeName": "node-1"}))
        .collect();
    endpoints.extend(not_ready.iter().map(|ip| {
        serde_json::json!({"addresses": [ip.to_string()], "conditions": {"ready": false}, "nodeName": "node-1"})
    }));
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("{service}-abc"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
    }))
    .unwrap()
}

/// A listener in `pod` that answers every connection with the pod's address and closes.
fn serve_identity(pod: &PodNetwork, port: u16) {
    let ip = pod.ip;
    let listener = in_netns(&pod.netns_path, move || {
        TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).expect("bind")
    });
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.write_all(ip.to_string().as_bytes());
        }
    });
}

/// Connects from `from` to `target`, returns what the server wrote.
fn fetch(from: &Path, target: SocketAddr) -> std::io::Result<String> {
    in_netns(from, move || {
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(3))?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    })
}

fn apply(node: &Node, applier: Applier, desired: Ruleset) -> Applier {
    in_netns(&node.netns_path(), move || {
        let mut applier = applier;
        applier.apply(desired).expect("apply");
        applier
    })
}

#[test]
fn a_cluster_ip_balances_over_both_ready_backends_and_refuses_without_any() {
    let node = Node::new();
    let (a, b, client) = (node.pod("a"), node.pod("b"), node.pod("client"));
    serve_identity(&a, 8080);
    serve_identity(&b, 8080);
    let services = vec![
        service("web", "10.43.0.20", 80, serde_json::json!({})),
        service("empty", "10.43.0.21", 80, serde_json::json!({})),
    ];
    let slices = vec![
        slice("web", 8080, &[a.ip, b.ip], &[]),
        slice("empty", 8080, &[], &[a.ip]),
    ];
    let desired = render(&services, &slices, &proxy_config());
    let _applier = apply(&node, node.applier(), desired);

    let mut seen = BTreeMap::new();
    for _ in 0..50 {
        let answer = fetch(&client.netns_path, "10.43.0.20:80".parse().unwrap()).expect("connect");
        *seen.entry(answer).or_insert(0) += 1;
    }
    let backends: HashSet<String> = seen.keys().cloned().collect();
    assert_eq!(
        backends,
        HashSet::from([a.ip.to_string(), b.ip.to_string()]),
        "50 connections reach both backends: {seen:?}\n{}",
        node.nft_list()
    );

    let started = Instant::now();
    let refused = fetch(&client.netns_path, "10.43.0.21:80".parse().unwrap());
    let error = refused.expect_err("a service without ready endpoints refuses");
    assert_eq!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused fast, not after a timeout"
    );
}

#[test]
fn a_node_port_answers_a_client_outside_and_removing_the_service_removes_its_rules() {
    let node = Node::new();
    let (a, b) = (node.pod("a"), node.pod("b"));
    serve_identity(&a, 8080);
    serve_identity(&b, 8080);
    let nodeport = serde_json::json!({"type": "NodePort",
        "ports": [{"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP", "targetPort": 8080}]});
    let services = vec![service("np", "10.43.0.30", 80, nodeport)];
    let slices = vec![slice("np", 8080, &[a.ip, b.ip], &[])];
    let applier = apply(
        &node,
        node.applier(),
        render(&services, &slices, &proxy_config()),
    );

    let target = SocketAddr::from((NODE_IP, 30080));
    let mut seen = HashSet::new();
    for _ in 0..20 {
        seen.insert(fetch(&node.client_netns_path(), target).expect("node port from outside"));
    }
    assert_eq!(seen, HashSet::from([a.ip.to_string(), b.ip.to_string()]));
    assert!(node.nft_list().contains("svc_default_np_tcp_80"));

    let _applier = apply(&node, applier, render(&[], &[], &proxy_config()));
    let listing = node.nft_list();
    assert!(!listing.contains("_default_np_"), "{listing}");
    assert!(!listing.contains("30080"), "{listing}");
    assert!(
        listing.contains("chain postrouting"),
        "the pod masquerade is left alone"
    );
    assert!(fetch(&node.client_netns_path(), target).is_err());
}

#[test]
fn a_restarted_proxy_replaces_what_it_finds_in_one_batch() {
    let node = Node::new();
    let a = node.pod("a");
    serve_identity(&a, 8080);
    let services = vec![service("web", "10.43.0.40", 80, serde_json::json!({}))];
    let slices = vec![slice("web", 8080, &[a.ip], &[])];
    let desired = render(&services, &slices, &proxy_config());
    drop(apply(&node, node.applier(), desired.clone()));
    // A fresh applier knows nothing of the rules in place: it removes and recreates them.
    let _applier = apply(&node, node.applier(), desired);
    let listing = node.nft_list();
    assert_eq!(listing.matches("chain svc_default_web_tcp_80").count(), 1);
    let client = node.pod("client");
    assert_eq!(
        fetch(&client.netns_path, "10.43.0.40:80".parse().unwrap()).expect("connect"),
        a.ip.to_string()
    );
}

/// 1,000 services with 5 endpoints each, then 100 single-endpoint changes, applied the way the
/// proxy does (only the changed Service re-rendered and diffed) and, for comparison in the same
/// run, by rendering and diffing the whole table. Checks that one change is a small batch; prints
/// the bytes sent over netlink for it and p50/p99 of each way.
#[test]
fn one_change_among_a_thousand_services_is_a_small_fast_batch() {
    use berth::network::proxy::incremental::{Cluster, ProxyRules};

    let node = Node::new();
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for i in 0..1000u32 {
        let name = format!("s{i}");
        let ip = format!("10.43.{}.{}", 10 + i / 250, i % 250 + 1);
        services.push(service(&name, &ip, 80, serde_json::json!({})));
        let eps: Vec<Ipv4Addr> = (0..5u32)
            .map(|e| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 42, 2, 0)) + i * 5 + e))
            .collect();
        slices.push(slice(&name, 8080, &eps, &[]));
    }
    let config = proxy_config();
    let key = |i: usize| ("default".to_string(), format!("s{i}"));
    let mut cluster = Cluster::default();
    for (i, (service, slice)) in services.iter().zip(&slices).enumerate() {
        cluster.services.insert(key(i), service.clone());
        cluster
            .slices
            .entry(key(i))
            .or_default()
            .insert("s-abc".into(), slice.clone());
    }
    let changed_slice = |change: usize| {
        let i = (change * 37) % 1000;
        let base = u32::from(Ipv4Addr::new(10, 42, 2, 0)) + i as u32 * 5;
        // Alternately drop and restore the service's last endpoint.
        let count = if change % 2 == 0 { 4 } else { 5 };
        let eps: Vec<Ipv4Addr> = (0..count).map(|e| Ipv4Addr::from(base + e)).collect();
        (i, slice(&format!("s{i}"), 8080, &eps, &[]))
    };
    let (report, incremental, whole) = in_netns(&node.netns_path(), move || {
        let mut rules = ProxyRules::open(config.clone()).expect("open");
        let first = rules.sync_all(&cluster).expect("full sync");
        let mut incremental = Vec::new();
        let mut one_change = None;
        for change in 0..100usize {
            let (i, slice) = changed_slice(change);
            cluster
                .slices
                .entry(key(i))
                .or_default()
                .insert("s-abc".into(), slice);
            let started = Instant::now();
            let sent = rules
                .sync_changed(&cluster, [&key(i)])
                .expect("apply change");
            incremental.push(started.elapsed());
            one_change.get_or_insert(sent);
        }
        drop(rules);
        // The same changes the old way: render everything, diff everything.
        let mut applier = Applier::open().expect("open");
        applier
            .apply(render(&services, &slices, &config))
            .expect("full apply");
        let mut whole = Vec::new();
        for change in 0..100usize {
            let (i, slice) = changed_slice(change);
            slices[i] = slice;
            let started = Instant::now();
            let desired = render(&services, &slices, &config);
            applier.apply(desired).expect("apply change");
            whole.push(started.elapsed());
        }
        (
            format!("full sync: {first:?}, one change: {one_change:?}"),
            incremental,
            whole,
        )
    });
    let percentiles = |mut times: Vec<Duration>| {
        times.sort();
        (times[49], times[98])
    };
    let (p50, p99) = percentiles(incremental);
    let (whole_p50, whole_p99) = percentiles(whole);
    eprintln!(
        "1000 services x 5 endpoints: {report}; one Service re-rendered and applied: p50 {p50:?} \
         p99 {p99:?}; whole table re-rendered and diffed: p50 {whole_p50:?} p99 {whole_p99:?}"
    );
    let one_change_bytes: usize = report
        .split("one change: Some(Applied { messages: ")
        .nth(1)
        .and_then(|r| r.split("bytes: ").nth(1))
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("bytes of one change");
    assert!(
        one_change_bytes < 4096,
        "one change is {one_change_bytes} bytes"
    );
    // The latencies are printed, not asserted: timing on a shared machine is no test.
}

/// The controller against a real (in-process) API server: a Service and its EndpointSlice
/// created through the API become rules, a LoadBalancer gets the node's address as ingress,
/// and deleting the Service removes its rules. Prints API-change-to-rules latencies.
#[test]
fn the_controller_follows_services_and_endpoint_slices_from_the_api() {
    use berth::apiserver::ApiServer;
    use berth::registry::services::ServiceNetwork;
    use berth::registry::Registry;
    use berth::store::{Store, StoreOptions};
    use kube::api::{Api, DeleteParams, PostParams};

    let node = Node::new();
    let a = node.pod("a");
    serve_identity(&a, 8080);
    let store_dir = tempfile::tempdir().expect("store dir");
    let store_path = store_dir.path().join("store.redb");
    let ns_name = node.ns.name.clone();
    let (a_ip, client) = (a.ip, node.pod("client"));
    let client_path = client.netns_path.clone();
    let listing = move || {
        let out = std::process::Command::new("ip")
            .args([
                "netns", "exec", &ns_name, "nft", "list", "table", "ip", "berth",
            ])
            .output()
            .expect("nft");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    in_netns(&node.netns_path(), move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let store = Store::open(&store_path, StoreOptions::default()).expect("store");
            let network = ServiceNetwork::parse("10.43.0.0/16", (30000, 32767)).unwrap();
            let registry = Registry::new(store, network);
            berth::registry::bootstrap::ensure_system_objects(
                &registry,
                "10.43.0.10".parse().unwrap(),
            )
            .await
            .expect("system objects");
            let router = ApiServer::new(registry, 1 << 20).router();
            let client =
                berth::client::in_process(router, berth::client::system_user("kube-proxy"));
            let proxy = tokio::spawn(berth::network::proxy::controller::run(
                client.clone(),
                proxy_config(),
            ));

            let services: Api<Service> = Api::namespaced(client.clone(), "default");
            let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
            let mut lb = service("web", "", 80, serde_json::json!({"type": "LoadBalancer"}));
            if let Some(spec) = lb.spec.as_mut() {
                spec.cluster_ip = None;
            }
            let created = services
                .create(&PostParams::default(), &lb)
                .await
                .expect("create service");
            let cluster_ip = created.spec.unwrap().cluster_ip.unwrap();
            slices
                .create(&PostParams::default(), &slice("web", 8080, &[a_ip], &[]))
                .await
                .expect("create slice");

            let wait_for = |want: bool, needle: String| {
                let listing = listing.clone();
                async move {
                    let started = Instant::now();
                    while listing().contains(&needle) != want {
                        assert!(
                            started.elapsed() < Duration::from_secs(10),
                            "waited for {needle}"
                        );
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    started.elapsed()
                }
            };
            let took = wait_for(true, "ep_default_web_tcp_80__".to_string()).await;
            eprintln!("service + slice created -> rules in force: {took:?}");
            let target: SocketAddr = format!("{cluster_ip}:80").parse().unwrap();
            let answer = tokio::task::spawn_blocking(move || fetch(&client_path, target))
                .await
                .unwrap()
                .expect("connect to the cluster IP");
            assert_eq!(answer, a_ip.to_string());

            let started = Instant::now();
            loop {
                let svc = services.get("web").await.unwrap();
                let ingress = svc
                    .status
                    .and_then(|s| s.load_balancer)
                    .and_then(|l| l.ingress);
                if ingress
                    .and_then(|i| i.first().and_then(|i| i.ip.clone()))
                    .as_deref()
                    == Some("192.0.2.1")
                {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "LoadBalancer ingress never set"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }

            services
                .delete("web", &DeleteParams::default())
                .await
                .expect("delete");
            let took = wait_for(false, "svc_default_web_tcp_80".to_string()).await;
            eprintln!("service deleted -> rules gone: {took:?}");
            proxy.abort();
        });
    });
}

#[test]
fn client_ip_affinity_sends_one_client_to_one_backend() {
    let node = Node::new();
    let (a, b, client) = (node.pod("a"), node.pod("b"), node.pod("client"));
    serve_identity(&a, 8080);
    serve_identity(&b, 8080);
    let sticky = serde_json::json!({"sessionAffinity": "ClientIP"});
    let services = vec![service("sticky", "10.43.0.50", 80, sticky)];
    let slices = vec![slice("sticky", 8080, &[a.ip, b.ip], &[])];
    let _applier = apply(
        &node,
        node.applier(),
        render(&services, &slices, &proxy_config()),
    );
    let mut seen = HashSet::new();
    for _ in 0..20 {
        seen.insert(fetch(&client.netns_path, "10.43.0.50:80".parse().unwrap()).expect("connect"));
    }
    assert_eq!(seen.len(), 1, "one backend for one client: {seen:?}");
}

#[test]
fn a_pod_reaches_itself_through_its_own_service() {
    let node = Node::new();
    let a = node.pod("a");
    serve_identity(&a, 8080);
    let services = vec![service("self", "10.43.0.60", 80, serde_json::json!({}))];
    let slices = vec![slice("self", 8080, &[a.ip], &[])];
    let _applier = apply(
        &node,
        node.applier(),
        render(&services, &slices, &proxy_config()),
    );
    let answer = fetch(&a.netns_path, "10.43.0.60:80".parse().unwrap()).expect("hairpin");
    assert_eq!(answer, a.ip.to_string());
}

/// A listener in `pod` that answers every connection with the address it came from.
fn serve_peer_address(pod: &PodNetwork, port: u16) {
    let listener = in_netns(&pod.netns_path, move || {
        TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).expect("bind")
    });
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let peer = stream.peer_addr().map(|p| p.ip().to_string());
            let _ = stream.write_all(peer.unwrap_or_default().as_bytes());
        }
    });
}

/// A slice whose ready endpoints each run on the named node.
fn slice_on_nodes(service: &str, port: u16, endpoints: &[(Ipv4Addr, &str)]) -> EndpointSlice {
    let endpoints: Vec<serde_json::Value> = endpoints
        .iter()
        .map(|(ip, node)| {
            serde_json::json!({"addresses": [ip.to_string()],
            "conditions": {"ready": true}, "nodeName": node})
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("{service}-abc"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
    }))
    .unwrap()
}

#[test]
fn client_ip_affinity_ends_after_its_timeout_and_the_client_may_move() {
    let node = Node::new();
    let (a, b, client) = (node.pod("a"), node.pod("b"), node.pod("client"));
    serve_identity(&a, 8080);
    serve_identity(&b, 8080);
    let sticky = serde_json::json!({"sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 1}}});
    let services = vec![service("brief", "10.43.0.70", 80, sticky)];
    let slices = vec![slice("brief", 8080, &[a.ip, b.ip], &[])];
    let _applier = apply(
        &node,
        node.applier(),
        render(&services, &slices, &proxy_config()),
    );
    let target: SocketAddr = "10.43.0.70:80".parse().unwrap();
    let first = fetch(&client.netns_path, target).expect("connect");
    for _ in 0..10 {
        assert_eq!(fetch(&client.netns_path, target).expect("connect"), first);
    }
    // Each expiry lets the next connection pick afresh (one in two for the other backend):
    // twenty expiries without a move would mean the timeout is not applied.
    let moved = (0..20).any(|_| {
        std::thread::sleep(Duration::from_millis(2100));
        fetch(&client.netns_path, target).expect("connect") != first
    });
    assert!(moved, "the client stayed on {first} past twenty timeouts");
}

#[test]
fn external_traffic_policy_local_keeps_the_clients_address_and_cluster_hides_it() {
    let node = Node::new();
    let a = node.pod("a");
    serve_peer_address(&a, 8080);
    let node_port = |policy: &str, node_port: u16| {
        serde_json::json!({"type": "NodePort", "externalTrafficPolicy": policy,
            "ports": [{"name": "http", "port": 80, "nodePort": node_port, "protocol": "TCP",
                       "targetPort": 8080}]})
    };
    let services = vec![
        service("local", "10.43.0.80", 80, node_port("Local", 30081)),
        service("cluster", "10.43.0.81", 80, node_port("Cluster", 30082)),
    ];
    let slices = vec![
        slice("local", 8080, &[a.ip], &[]),
        slice("cluster", 8080, &[a.ip], &[]),
    ];
    let _applier = apply(
        &node,
        node.applier(),
        render(&services, &slices, &proxy_config()),
    );
    let client_ip = "192.0.2.2";
    let local = fetch(
        &node.client_netns_path(),
        SocketAddr::from((NODE_IP, 30081)),
    );
    assert_eq!(local.expect("Local node port"), client_ip);
    let cluster = fetch(
        &node.client_netns_path(),
        SocketAddr::from((NODE_IP, 30082)),
    );
    let seen = cluster.expect("Cluster node port");
    assert_ne!(seen, client_ip, "Cluster masquerades the client");
    assert!(!seen.is_empty());
}

#[test]
fn internal_traffic_policy_local_reaches_only_this_nodes_endpoints_and_refuses_without_one() {
    let node = Node::new();
    let (here, elsewhere, client) = (node.pod("here"), node.pod("else"), node.pod("client"));
    serve_identity(&here, 8080);
    serve_identity(&elsewhere, 8080);
    let local = serde_json::json!({"internalTrafficPolicy": "Local"});
    let services = vec![
        service("mixed", "10.43.0.90", 80, local.clone()),
        service("remote", "10.43.0.91", 80, local),
    ];
    // `elsewhere` is on this machine but the slice places it on another node.
    let slices = vec![
        slice_on_nodes(
            "mixed",
            8080,
            &[(here.ip, "node-1"), (elsewhere.ip, "node-2")],
        ),
        slice_on_nodes("remote", 8080, &[(elsewhere.ip, "node-2")]),
    ];
    let _applier = apply(
        &node,
        node.applier(),
        render(&services, &slices, &proxy_config()),
    );
    for _ in 0..20 {
        let answer = fetch(&client.netns_path, "10.43.0.90:80".parse().unwrap());
        assert_eq!(answer.expect("local endpoint"), here.ip.to_string());
    }
    let started = Instant::now();
    let refused = fetch(&client.netns_path, "10.43.0.91:80".parse().unwrap());
    assert!(refused.is_err(), "{refused:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused, not dropped"
    );
}

/// A Service may have a thousand endpoints in one slice (the most a slice holds, and what
/// mirroring makes of a big Endpoints): its balancing map no longer fits one netlink message.
#[test]
fn a_service_with_a_thousand_endpoints_is_programmed_and_can_shrink_again() {
    let node = Node::new();
    let (a, b, client) = (node.pod("a"), node.pod("b"), node.pod("client"));
    serve_identity(&a, 8080);
    serve_identity(&b, 8080);
    let services = vec![service("big", "10.43.0.40", 80, serde_json::json!({}))];
    let mut endpoints = vec![a.ip, b.ip];
    // Addresses no pod has: only the rules are checked for these.
    endpoints
        .extend((0..998u32).map(|i| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 42, 200, 0)) + i)));
    let applier = apply(
        &node,
        node.applier(),
        render(
            &services,
            &[slice("big", 8080, &endpoints, &[])],
            &proxy_config(),
        ),
    );
    let rules = node.nft_list();
    assert!(
        rules.contains("numgen random mod 1000 vmap"),
        "one balancing rule over all thousand endpoints"
    );
    assert_eq!(
        rules.matches("chain ep_").count(),
        1000,
        "a chain per endpoint"
    );

    let _applier = apply(
        &node,
        applier,
        render(
            &services,
            &[slice("big", 8080, &[a.ip, b.ip], &[])],
            &proxy_config(),
        ),
    );
    let mut seen = HashSet::new();
    for _ in 0..40 {
        let answer = fetch(&client.netns_path, "10.43.0.40:80".parse().unwrap()).expect("connect");
        seen.insert(answer);
    }
    assert_eq!(
        seen,
        HashSet::from([a.ip.to_string(), b.ip.to_string()]),
        "{}",
        node.nft_list()
    );
}
