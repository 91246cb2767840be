//! The pod network for real: bridge, veths, namespaces, addresses, masquerade.
//!
//! Needs root (network namespaces, mounts, nftables). Every test runs the library on a thread
//! that has joined a network namespace the test made, so the bridge, the veths and the
//! `ip berth` table never appear in the host's namespace. Traffic is TCP between namespaces
//! of the test, nothing leaves the machine.

mod common;

use std::collections::HashSet;
use std::fs::File;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth::network::{veth_name, NodeNetwork, NodeNetworkConfig, PodNetwork};
use common::netns::Netns;
use nix::mount::{umount2, MntFlags};
use nix::sched::{setns, CloneFlags};

static NEXT_POD: AtomicUsize = AtomicUsize::new(0);

/// A test's node: its own network namespace and data dir, cleaned up on drop even after a
/// failed assertion.
struct Node {
    ns: Netns,
    data_dir: tempfile::TempDir,
    mtu: u32,
}

impl Node {
    fn new() -> Node {
        Node {
            ns: Netns::new(),
            data_dir: tempfile::tempdir().expect("temp data dir"),
            mtu: 1500,
        }
    }

    fn config(&self) -> NodeNetworkConfig {
        NodeNetworkConfig {
            mtu: self.mtu,
            ..NodeNetworkConfig::single_node(self.data_dir.path())
        }
    }

    fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.ns.name)
    }

    /// Runs `f` with a fresh `NodeNetwork` (as a newly started daemon would have) on a thread
    /// inside the test namespace, with its own single-threaded runtime.
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

    fn init(&self) {
        self.run(|net| async move { net.init().await.expect("init") });
    }

    fn setup(&self, uid: &str) -> PodNetwork {
        let uid = uid.to_string();
        self.run(move |net| async move { net.setup_pod(&uid).await.expect("setup_pod") })
    }

    fn teardown(&self, uid: &str) {
        let uid = uid.to_string();
        self.run(move |net| async move { net.teardown_pod(&uid).await.expect("teardown_pod") });
    }

    fn ipam_files(&self) -> Vec<String> {
        let dir = self.data_dir.path().join("network/ipam");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<Ipv4Addr>().is_ok())
            .collect();
        names.sort();
        names
    }

    fn has_link(&self, name: &str) -> bool {
        self.ns.exec("ip", &["link", "show", name]).status.success()
    }

    fn mounts_under_data_dir(&self) -> Vec<PathBuf> {
        mounts_under(self.data_dir.path())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let (path, config) = (self.netns_path(), self.config());
        // Best effort and panic-free: this also runs while a failed test unwinds.
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
        // Whatever a failed test left mounted must go before the temp dir can be removed.
        for mount in mounts_under(self.data_dir.path()).into_iter().rev() {
            let _ = umount2(&mount, MntFlags::MNT_DETACH);
        }
    }
}

/// Runs `f` on a new thread that joined the namespace at `netns`.
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

/// Opens a TCP connection from namespace `from` to `to_ip` in namespace `to`; returns the
/// source address the listener saw, or the connect error.
fn connect(from: &Path, to: &Path, to_ip: Ipv4Addr) -> std::io::Result<SocketAddr> {
    let listener = in_netns(to, move || TcpListener::bind(SocketAddrV4::new(to_ip, 0)))?;
    let target = listener.local_addr()?;
    in_netns(from, move || {
        TcpStream::connect_timeout(&target, Duration::from_secs(2))
    })?;
    // The connection is complete, so it is already waiting in the backlog.
    let (_stream, peer) = listener.accept()?;
    Ok(peer)
}

fn uid(tag: &str) -> String {
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        NEXT_POD.fetch_add(1, Ordering::SeqCst)
    )
}

#[test]
fn two_pods_get_distinct_addresses_and_reach_each_other_and_the_gateway() {
    let node = Node::new();
    node.init();
    let (a, b) = (uid("a"), uid("b"));
    let pod_a = node.setup(&a);
    let pod_b = node.setup(&b);

    let slice = node.config().pod_cidr_slice;
    assert_ne!(pod_a.ip, pod_b.ip);
    assert!(slice.contains(pod_a.ip) && slice.contains(pod_b.ip));
    assert_eq!(pod_a.gateway, Ipv4Addr::new(10, 42, 0, 1));
    assert_eq!(pod_a.prefix_len, 24);
    assert_eq!(pod_a.host_veth, veth_name(&a));
    assert_eq!(
        pod_a.netns_path,
        node.data_dir.path().join("netns").join(&a)
    );

    let seen = connect(&pod_a.netns_path, &pod_b.netns_path, pod_b.ip).expect("a -> b");
    assert_eq!(
        seen.ip(),
        pod_a.ip,
        "pod-to-pod traffic keeps its source address"
    );
    let seen = connect(&pod_b.netns_path, &pod_a.netns_path, pod_a.ip).expect("b -> a");
    assert_eq!(seen.ip(), pod_b.ip);
    connect(&pod_a.netns_path, &node.netns_path(), pod_a.gateway).expect("a -> gateway");

    let eth0 = in_pod(&pod_a, &["ip", "-o", "addr", "show", "dev", "eth0"]);
    assert!(eth0.contains(&format!("{}/24", pod_a.ip)), "{eth0}");
    let routes = in_pod(&pod_a, &["ip", "route", "show", "default"]);
    assert!(
        routes.contains("default via 10.42.0.1 dev eth0"),
        "{routes}"
    );
    let lo = in_pod(&pod_a, &["ip", "-o", "link", "show", "lo"]);
    assert!(lo.contains("UP"), "{lo}");
    let master = node
        .ns
        .exec_ok("ip", &["-o", "link", "show", &pod_a.host_veth]);
    assert!(master.contains("master berth0"), "{master}");
}

fn in_pod(pod: &PodNetwork, cmd: &[&str]) -> String {
    let net = format!("--net={}", pod.netns_path.display());
    let mut args = vec![net.as_str()];
    args.extend_from_slice(cmd);
    common::netns::run_ok("nsenter", &args)
}

#[test]
fn pod_traffic_leaving_the_node_is_masqueraded_by_the_berth_table() {
    let node = Node::new();
    // A second namespace plays "the outside world": reachable from the node, but with no
    // route back to pod addresses, so only masqueraded traffic can get an answer.
    let outside = Netns::new();
    node.ns.exec_ok(
        "ip",
        &[
            "link",
            "add",
            "up0",
            "type",
            "veth",
            "peer",
            "name",
            "down0",
            "netns",
            &outside.name,
        ],
    );
    node.ns
        .exec_ok("ip", &["addr", "add", "192.0.2.1/24", "dev", "up0"]);
    node.ns.exec_ok("ip", &["link", "set", "up0", "up"]);
    outside.exec_ok("ip", &["addr", "add", "192.0.2.2/24", "dev", "down0"]);
    outside.exec_ok("ip", &["link", "set", "down0", "up"]);
    let outside_path = PathBuf::from("/run/netns").join(&outside.name);

    node.init();
    let pod = node.setup(&uid("egress"));
    let seen = connect(&pod.netns_path, &outside_path, Ipv4Addr::new(192, 0, 2, 2))
        .expect("pod -> outside");
    assert_eq!(
        seen.ip(),
        Ipv4Addr::new(192, 0, 2, 1),
        "source rewritten to the node's address"
    );

    // The kernel holds exactly what the pure rendering says (and what its golden file shows).
    let table = node.ns.exec_ok("nft", &["list", "table", "ip", "berth"]);
    assert_eq!(table, NodeNetwork::new(node.config()).masquerade().to_nft());

    // Without the rule there is no way back; init puts it back exactly once.
    node.ns
        .exec_ok("nft", &["flush", "chain", "ip", "berth", "postrouting"]);
    let blocked = connect(&pod.netns_path, &outside_path, Ipv4Addr::new(192, 0, 2, 2));
    assert!(
        blocked.is_err(),
        "unmasqueraded traffic got through: {blocked:?}"
    );
    node.init();
    node.init();
    let table = node.ns.exec_ok("nft", &["list", "table", "ip", "berth"]);
    assert_eq!(table.matches("masquerade").count(), 1, "{table}");
    connect(&pod.netns_path, &outside_path, Ipv4Addr::new(192, 0, 2, 2)).expect("after re-init");
}

#[test]
fn setting_up_a_pod_twice_returns_the_same_network() {
    let node = Node::new();
    node.init();
    let a = uid("twice");
    let first = node.setup(&a);
    let second = node.setup(&a);
    assert_eq!(first, second);
    assert_eq!(node.ipam_files(), [first.ip.to_string()]);
    connect(&first.netns_path, &node.netns_path(), first.gateway).expect("pod -> gateway");
}

#[test]
fn a_restarted_node_network_keeps_namespaces_and_addresses() {
    let node = Node::new();
    node.init();
    let a = uid("survivor");
    let before = node.setup(&a);
    // Each `run` builds a new NodeNetwork: this is the daemon coming back.
    node.init();
    let after = node.setup(&a);
    assert_eq!(before, after);
    let other = node.setup(&uid("newcomer"));
    assert_ne!(other.ip, before.ip);
    let seen = connect(&other.netns_path, &after.netns_path, after.ip).expect("new -> old pod");
    assert_eq!(seen.ip(), other.ip);
}

#[test]
fn a_pod_whose_veth_vanished_gets_a_new_one_on_setup() {
    let node = Node::new();
    node.init();
    let a = uid("repair");
    let pod = node.setup(&a);
    node.ns.exec_ok("ip", &["link", "del", &pod.host_veth]);
    assert_eq!(node.setup(&a), pod);
    connect(&pod.netns_path, &node.netns_path(), pod.gateway).expect("pod -> gateway");
}

#[test]
fn teardown_frees_the_address_and_removes_veth_and_namespace() {
    let node = Node::new();
    node.init();
    let a = uid("gone");
    let pod = node.setup(&a);
    assert!(node.has_link(&pod.host_veth));
    node.teardown(&a);
    assert!(node.ipam_files().is_empty());
    assert!(!node.has_link(&pod.host_veth));
    assert!(!pod.netns_path.exists());
    assert!(!node.mounts_under_data_dir().contains(&pod.netns_path));
    node.teardown(&a);
}

#[test]
fn reconcile_tears_down_pods_that_are_not_live() {
    let node = Node::new();
    node.init();
    let (keep, leak) = (uid("keep"), uid("leak"));
    let kept = node.setup(&keep);
    let leaked = node.setup(&leak);
    let live = HashSet::from([keep.clone()]);
    node.run(move |net| async move { net.reconcile(&live).await.expect("reconcile") });
    assert_eq!(node.ipam_files(), [kept.ip.to_string()]);
    assert!(!node.has_link(&leaked.host_veth));
    assert!(!leaked.netns_path.exists());
    assert!(node.has_link(&kept.host_veth));
    connect(&kept.netns_path, &node.netns_path(), kept.gateway).expect("kept pod still works");
}

#[test]
fn cleanup_all_leaves_no_bridge_table_mounts_or_allocations() {
    let node = Node::new();
    node.init();
    let pod = node.setup(&uid("reset"));
    node.setup(&uid("reset"));
    assert!(!node.mounts_under_data_dir().is_empty());
    node.run(|net| async move { net.cleanup_all().await.expect("cleanup_all") });
    assert!(!node.has_link("berth0"));
    assert!(!node.has_link(&pod.host_veth));
    assert!(!node
        .ns
        .exec("nft", &["list", "table", "ip", "berth"])
        .status
        .success());
    assert_eq!(node.mounts_under_data_dir(), Vec::<PathBuf>::new());
    assert!(!node.data_dir.path().join("netns").exists());
    assert!(!node.data_dir.path().join("network").exists());
    node.run(|net| async move { net.cleanup_all().await.expect("cleanup_all twice") });
}

#[test]
fn pod_links_use_the_configured_mtu_and_hairpin_ports() {
    let mut node = Node::new();
    node.mtu = 1400;
    node.init();
    let pod = node.setup(&uid("mtu"));
    let eth0 = in_pod(&pod, &["ip", "-o", "link", "show", "eth0"]);
    assert!(eth0.contains("mtu 1400"), "{eth0}");
    let veth = node
        .ns
        .exec_ok("ip", &["-d", "-o", "link", "show", &pod.host_veth]);
    assert!(veth.contains("mtu 1400"), "{veth}");
    assert!(veth.contains("hairpin on"), "{veth}");
    let bridge = node.ns.exec_ok("ip", &["-o", "link", "show", "berth0"]);
    assert!(bridge.contains("mtu 1400"), "{bridge}");
}

#[test]
fn pods_set_up_concurrently_on_a_multi_threaded_runtime_get_distinct_addresses() {
    let node = Node::new();
    let config = node.config();
    let uids: Vec<String> = (0..6).map(|_| uid("many")).collect();
    let pods = in_netns(&node.netns_path(), move || {
        // Worker threads are spawned from this thread, so they start in the test namespace,
        // as the daemon's start in the node's.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(async move {
            let net = std::sync::Arc::new(NodeNetwork::new(config));
            net.init().await.expect("init");
            let tasks: Vec<_> = uids
                .into_iter()
                .map(|uid| {
                    let net = net.clone();
                    tokio::spawn(async move { net.setup_pod(&uid).await.expect("setup_pod") })
                })
                .collect();
            let mut pods = Vec::new();
            for task in tasks {
                pods.push(task.await.expect("setup task"));
            }
            pods
        })
    });
    let ips: HashSet<Ipv4Addr> = pods.iter().map(|p| p.ip).collect();
    assert_eq!(ips.len(), pods.len());
    assert_eq!(node.ipam_files().len(), pods.len());
    let seen = connect(&pods[0].netns_path, &pods[5].netns_path, pods[5].ip).expect("0 -> 5");
    assert_eq!(seen.ip(), pods[0].ip);
}

#[test]
fn setting_up_a_pod_before_init_fails_and_leaves_nothing_behind() {
    let node = Node::new();
    let a = uid("early");
    let err = node.run(move |net| async move { net.setup_pod(&a).await.err() });
    assert!(
        matches!(err, Some(berth::network::NetError::NoBridge(ref b)) if b == "berth0"),
        "{err:?}"
    );
    assert!(node.ipam_files().is_empty());
    assert!(!node.data_dir.path().join("netns").exists());
}
