//! The pod network of one node: a network namespace per pod, a veth from it into bridge
//! `berth0`, addresses from this node's slice of the cluster's pod CIDR, and egress masquerade.
//!
//! Layout on disk (`<data-dir>` is [`NodeNetworkConfig::state_dir`]):
//! - `<data-dir>/netns/<pod-uid>`: the pod's namespace, pinned by a bind mount (no pause process).
//!   The directory is a private bind mount of itself so these mounts never propagate.
//! - `<data-dir>/network/ipam/<ip>`: one file per allocated address holding the owner's uid.
//!
//! Kernel work is split by what it touches: [`netns`] (mounts, setns), [`links`] (rtnetlink),
//! [`nft`] (nftables over netlink). The logic worth testing without root, [`cidr`] math,
//! [`ipam`] and the [`nft`] rule rendering, needs none of them.
//!
//! Everything acts on the network namespace of the calling thread; the daemon never moves its
//! own threads, which is also what lets tests run all of this inside a namespace of their own.

pub mod cidr;
pub mod ipam;
pub mod links;
pub mod netns;
pub mod nft;
pub mod policy;
pub mod proxy;
pub mod routes;

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

pub use cidr::{CidrError, Ipv4Cidr};
use ipam::Ipam;
use links::Netlink;
use nft::Masquerade;

/// The interface name every pod sees.
pub const POD_INTERFACE: &str = "eth0";
/// Ethernet's MTU: right for a bridge whose traffic leaves through a plain LAN interface.
pub const DEFAULT_MTU: u32 = 1500;
/// The size of one node's share of the cluster pod CIDR: 253 pods.
const SINGLE_NODE_SLICE_LEN: u8 = 24;
/// Where IPv4 forwarding is switched on for the node's namespace.
const IP_FORWARD_SYSCTL: &str = "/proc/sys/net/ipv4/ip_forward";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{op} {path}: {source}")]
    Sys {
        op: &'static str,
        path: PathBuf,
        source: nix::errno::Errno,
    },
    #[error("{0} is not a network namespace")]
    NotANetns(PathBuf),
    #[error("opening a netlink socket: {0}")]
    NetlinkSocket(#[source] std::io::Error),
    #[error("netlink: {op}: {source}")]
    Netlink {
        op: String,
        source: rtnetlink::Error,
    },
    #[error("nftables: {0}")]
    NftBuild(#[from] rustables::error::BuilderError),
    #[error("nftables: {0}")]
    NftQuery(#[from] rustables::error::QueryError),
    #[error(transparent)]
    Cidr(#[from] CidrError),
    #[error("pod CIDR slice {slice} is {problem}")]
    BadSlice {
        slice: Ipv4Cidr,
        problem: &'static str,
    },
    #[error("no free pod address left in {0}")]
    Exhausted(Ipv4Cidr),
    #[error("{0:?} is not a valid pod uid")]
    InvalidPodUid(String),
    #[error("bridge {0} does not exist; was the node network initialized?")]
    NoBridge(String),
    #[error("link {0} disappeared right after being created")]
    LinkVanished(String),
    #[error("namespace helper: {0}")]
    Thread(String),
}

impl NetError {
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> NetError {
        NetError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub(crate) fn sys(op: &'static str, path: &Path, source: nix::errno::Errno) -> NetError {
        NetError::Sys {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn netlink(op: String, source: rtnetlink::Error) -> NetError {
        NetError::Netlink { op, source }
    }
}

/// How this node's pod network is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNetworkConfig {
    /// The bridge every pod's veth is attached to.
    pub bridge: String,
    /// This node's share of the cluster pod CIDR; its first address is the bridge's.
    pub pod_cidr_slice: Ipv4Cidr,
    /// The whole cluster's pod CIDR: traffic to it is not masqueraded.
    pub cluster_cidr: Ipv4Cidr,
    pub mtu: u32,
    /// The data dir: `netns/` and `network/` live under it.
    pub state_dir: PathBuf,
}

impl NodeNetworkConfig {
    /// berth's defaults for a single node: bridge `berth0`, the first /24 of `10.42.0.0/16`.
    pub fn single_node(state_dir: impl Into<PathBuf>) -> NodeNetworkConfig {
        let cluster_cidr = Ipv4Cidr::new(Ipv4Addr::new(10, 42, 0, 0), 16)
            .unwrap_or_else(|_| unreachable!("a constant network address"));
        NodeNetworkConfig {
            bridge: "berth0".into(),
            pod_cidr_slice: Ipv4Cidr::new(Ipv4Addr::new(10, 42, 0, 0), 24)
                .unwrap_or_else(|_| unreachable!("a constant network address")),
            cluster_cidr,
            mtu: DEFAULT_MTU,
            state_dir: state_dir.into(),
        }
    }
}

impl NodeNetworkConfig {
    /// This node's layout from berth's config. A single node takes the first /24 of the
    /// cluster's pod CIDR as its slice (the whole CIDR if that is smaller already).
    pub fn from_config(config: &crate::config::Config) -> Result<NodeNetworkConfig, NetError> {
        let cluster_cidr: Ipv4Cidr = config.network.pod_cidr.parse()?;
        let slice_len = cluster_cidr.prefix_len().max(SINGLE_NODE_SLICE_LEN);
        let pod_cidr_slice = cluster_cidr
            .subnet(slice_len, 0)
            .ok_or(NetError::BadSlice {
                slice: cluster_cidr,
                problem: "impossible to slice",
            })?;
        Ok(NodeNetworkConfig {
            bridge: config.network.bridge.clone(),
            pod_cidr_slice,
            cluster_cidr,
            mtu: config.network.backend.pod_mtu(DEFAULT_MTU),
            state_dir: config.data_dir.clone(),
        })
    }
}

/// What a pod's network came out as, for the runtime (netns) and pod status (IP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetwork {
    pub netns_path: PathBuf,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub prefix_len: u8,
    pub host_veth: String,
}

/// The node's pod network. Cheap to create; all state is in the kernel and on disk, so dropping
/// it and creating a new one (a daemon restart) picks up where the old one left off.
pub struct NodeNetwork {
    config: NodeNetworkConfig,
    ipam: Ipam,
    /// One change at a time: setups, teardowns and reconciles each read-then-write kernel and
    /// disk state, and a pod setup takes milliseconds, so serializing them is the simple way to
    /// never race (two setups of one pod, a reconcile during a setup).
    changes: Mutex<()>,
}

impl NodeNetwork {
    pub fn new(config: NodeNetworkConfig) -> NodeNetwork {
        let ipam = Ipam::new(
            config.state_dir.join("network").join("ipam"),
            config.pod_cidr_slice,
        );
        NodeNetwork {
            config,
            ipam,
            changes: Mutex::new(()),
        }
    }

    pub fn config(&self) -> &NodeNetworkConfig {
        &self.config
    }

    /// Where pod namespaces are pinned.
    pub fn netns_dir(&self) -> PathBuf {
        self.config.state_dir.join("netns")
    }

    pub fn netns_path(&self, pod_uid: &str) -> PathBuf {
        self.netns_dir().join(pod_uid)
    }

    /// Pins the pod's namespace again from a process still inside it (its shim), for a berth
    /// that cannot see the pin an earlier berth made. Does nothing when the pin is visible.
    pub fn repin_pod_netns(&self, pod_uid: &str, holder_pid: i32) -> Result<(), NetError> {
        validate_pod_uid(pod_uid)?;
        netns::ensure_private_dir(&self.netns_dir())?;
        netns::pin_from_process(&self.netns_path(pod_uid), holder_pid)
    }

    /// Bridge with the gateway address, forwarding, masquerade, the netns directory. Idempotent.
    pub async fn init(&self) -> Result<(), NetError> {
        let gateway = self.gateway()?;
        let slice = self.config.pod_cidr_slice;
        if !self.config.cluster_cidr.contains(slice.network())
            || slice.prefix_len() < self.config.cluster_cidr.prefix_len()
        {
            return Err(NetError::BadSlice {
                slice,
                problem: "not inside the cluster pod CIDR",
            });
        }
        let host = Netlink::here()?;
        let bridge = host
            .ensure_bridge(&self.config.bridge, self.config.mtu)
            .await?;
        host.replace_address(bridge, gateway, slice.prefix_len())
            .await?;
        host.set_up(bridge).await?;
        // Written from this thread on purpose: /proc/sys/net is the namespace of the writer.
        fs::write(IP_FORWARD_SYSCTL, "1").map_err(|e| NetError::io(IP_FORWARD_SYSCTL, e))?;
        // Host ports answer on 127.0.0.1 (see policy::hostports, which also guards it).
        let route_localnet = format!(
            "/proc/sys/net/ipv4/conf/{}/route_localnet",
            self.config.bridge
        );
        fs::write(&route_localnet, "1").map_err(|e| NetError::io(&route_localnet, e))?;
        self.masquerade().apply()?;
        netns::ensure_private_dir(&self.netns_dir())
    }

    /// Gives pod `pod_uid` a namespace, an address and a veth on the bridge. Idempotent: a pod
    /// that already has them (a daemon restart) keeps its namespace and address.
    pub async fn setup_pod(&self, pod_uid: &str) -> Result<PodNetwork, NetError> {
        validate_pod_uid(pod_uid)?;
        let gateway = self.gateway()?;
        let _one_change = self.changes.lock().await;
        // Checked first so a setup before `init` leaves nothing behind.
        let host = Netlink::here()?;
        let bridge = (host.link_index(&self.config.bridge).await?)
            .ok_or_else(|| NetError::NoBridge(self.config.bridge.clone()))?;
        let ip = self.ipam.allocate(pod_uid)?;
        netns::ensure_private_dir(&self.netns_dir())?;
        let netns_path = self.netns_path(pod_uid);
        netns::create(&netns_path).await?;

        let pod = Netlink::in_netns(&netns_path).await?;
        let host_veth = veth_name(pod_uid);
        let host_end = host.link_index(&host_veth).await?;
        let pod_end = pod.link_index(POD_INTERFACE).await?;
        let host_index = match (host_end, pod_end) {
            (Some(index), Some(_)) => {
                host.attach_up(index, bridge).await?;
                index
            }
            _ => {
                // Half a pair is useless (an interrupted setup): start the pair over.
                host.delete_link(&host_veth).await?;
                pod.delete_link(POD_INTERFACE).await?;
                let ns = fs::File::open(&netns_path).map_err(|e| NetError::io(&netns_path, e))?;
                host.create_veth(
                    &host_veth,
                    POD_INTERFACE,
                    self.config.mtu,
                    bridge,
                    ns.as_raw_fd(),
                )
                .await?;
                (host.link_index(&host_veth).await?)
                    .ok_or_else(|| NetError::LinkVanished(host_veth.clone()))?
            }
        };
        // A pod reaching itself through a Service address leaves and re-enters the bridge by
        // the same port; the bridge drops such frames unless the port is in hairpin mode.
        host.set_hairpin(host_index).await?;

        let prefix_len = self.config.pod_cidr_slice.prefix_len();
        let lo = pod
            .link_index("lo")
            .await?
            .ok_or_else(|| NetError::LinkVanished("lo".into()))?;
        pod.set_up(lo).await?;
        let eth0 = (pod.link_index(POD_INTERFACE).await?)
            .ok_or_else(|| NetError::LinkVanished(POD_INTERFACE.into()))?;
        pod.replace_address(eth0, ip, prefix_len).await?;
        pod.set_up(eth0).await?;
        pod.replace_default_route(eth0, gateway).await?;
        Ok(PodNetwork {
            netns_path,
            ip,
            gateway,
            prefix_len,
            host_veth,
        })
    }

    /// Removes the pod's veth, namespace and address. Idempotent.
    pub async fn teardown_pod(&self, pod_uid: &str) -> Result<(), NetError> {
        validate_pod_uid(pod_uid)?;
        let _one_change = self.changes.lock().await;
        self.teardown_unlocked(pod_uid).await
    }

    async fn teardown_unlocked(&self, pod_uid: &str) -> Result<(), NetError> {
        Netlink::here()?.delete_link(&veth_name(pod_uid)).await?;
        netns::remove(&self.netns_path(pod_uid))?;
        self.ipam.release(pod_uid)?;
        Ok(())
    }

    /// Tears down every pod network not in `live_pod_uids`: leaked addresses, namespaces and
    /// veths left by pods that went away while the daemon was not looking.
    pub async fn reconcile(&self, live_pod_uids: &HashSet<String>) -> Result<(), NetError> {
        let _one_change = self.changes.lock().await;
        let owners: Vec<String> = self
            .ipam
            .allocations()?
            .into_iter()
            .map(|(_, uid)| uid)
            .collect();
        let pinned = self.pinned_netns()?;
        for uid in leaked_pods(&owners, &pinned, live_pod_uids) {
            if validate_pod_uid(&uid).is_ok() {
                self.teardown_unlocked(&uid).await?;
                continue;
            }
            // An owner no pod can have, e.g. the empty uid of an allocation file a crash cut
            // short. A netns file of that name can only come from the directory listing.
            self.ipam.release(&uid)?;
            if pinned.contains(&uid) {
                netns::remove(&self.netns_dir().join(&uid))?;
            }
        }
        let host = Netlink::here()?;
        if let Some(bridge) = host.link_index(&self.config.bridge).await? {
            for port in stale_ports(host.bridge_ports(bridge).await?, live_pod_uids) {
                host.delete_link(&port).await?;
            }
        }
        Ok(())
    }

    /// Removes everything [`init`](Self::init) and the pods made: namespaces, the bridge and its
    /// ports, the whole `ip berth` table, all allocations (`berth reset`).
    pub async fn cleanup_all(&self) -> Result<(), NetError> {
        let _one_change = self.changes.lock().await;
        let host = Netlink::here()?;
        for uid in self.pinned_netns()? {
            host.delete_link(&veth_name(&uid)).await?;
            netns::remove(&self.netns_path(&uid))?;
        }
        let dir = self.netns_dir();
        if dir.exists() {
            netns::release_private_dir(&dir)?;
            match fs::remove_dir(&dir) {
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(NetError::io(&dir, e)),
                _ => {}
            }
        }
        if let Some(bridge) = host.link_index(&self.config.bridge).await? {
            for port in host.bridge_ports(bridge).await? {
                host.delete_link(&port).await?;
            }
            host.delete_link(&self.config.bridge).await?;
        }
        routes::kernel::remove_all(&host).await?;
        nft::delete_table()?;
        self.ipam.remove_all()?;
        let network_dir = self.config.state_dir.join("network");
        match fs::remove_dir(&network_dir) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(NetError::io(&network_dir, e)),
            _ => Ok(()),
        }
    }

    /// The masquerade rule this node programs.
    pub fn masquerade(&self) -> Masquerade {
        Masquerade {
            pod_cidr_slice: self.config.pod_cidr_slice,
            cluster_cidr: self.config.cluster_cidr,
        }
    }

    fn gateway(&self) -> Result<Ipv4Addr, NetError> {
        let slice = self.config.pod_cidr_slice;
        slice.gateway().ok_or(NetError::BadSlice {
            slice,
            problem: "too small for a gateway",
        })
    }

    /// Pod uids that have a file under the netns directory.
    fn pinned_netns(&self) -> Result<Vec<String>, NetError> {
        let dir = self.netns_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(NetError::io(&dir, e)),
        };
        let mut uids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| NetError::io(&dir, e))?;
            if let Some(name) = entry.file_name().to_str() {
                uids.push(name.to_string());
            }
        }
        Ok(uids)
    }
}

/// Owners of addresses or namespaces that are not live pods, each once, in order.
fn leaked_pods(
    address_owners: &[String],
    pinned_netns: &[String],
    live: &HashSet<String>,
) -> BTreeSet<String> {
    address_owners
        .iter()
        .chain(pinned_netns)
        .filter(|uid| !live.contains(*uid))
        .cloned()
        .collect()
}

/// Pod veths on the bridge that belong to no live pod. Other ports (an uplink someone added)
/// are left alone.
fn stale_ports(ports: Vec<String>, live: &HashSet<String>) -> Vec<String> {
    let live_veths: HashSet<String> = live.iter().map(|uid| veth_name(uid)).collect();
    ports
        .into_iter()
        .filter(|port| port.starts_with("veth") && !live_veths.contains(port))
        .collect()
}

/// The node-side veth of a pod: `veth` + 8 hex digits of the uid's SHA-256, 12 characters,
/// inside IFNAMSIZ (15) and stable across restarts.
pub fn veth_name(pod_uid: &str) -> String {
    let digest = Sha256::digest(pod_uid.as_bytes());
    format!("veth{}", &hex::encode(digest)[..8])
}

/// Pod uids name files, so they must be one harmless path component.
fn validate_pod_uid(pod_uid: &str) -> Result<(), NetError> {
    let harmless = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    if pod_uid.is_empty()
        || pod_uid.len() > 128
        || pod_uid.starts_with('.')
        || !pod_uid.chars().all(harmless)
    {
        return Err(NetError::InvalidPodUid(pod_uid.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_ifnamsiz_and_are_stable_per_pod() {
        let name = veth_name("9f8e7d6c-1234-5678-9abc-def012345678");
        assert_eq!(name.len(), 12);
        assert!(name.len() < libc::IFNAMSIZ);
        assert!(name.starts_with("veth"));
        assert!(name[4..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(name, veth_name("9f8e7d6c-1234-5678-9abc-def012345678"));
        assert_ne!(name, veth_name("9f8e7d6c-1234-5678-9abc-def012345679"));
    }

    #[test]
    fn veth_name_is_the_sha256_prefix_of_the_uid() {
        // sha256("abc") = ba7816bf...
        assert_eq!(veth_name("abc"), "vethba7816bf");
    }

    #[test]
    fn pod_uids_that_could_escape_the_state_directory_are_rejected() {
        for bad in ["", "..", ".hidden", "a/b", "a b", "x\0y", &"u".repeat(129)] {
            assert!(validate_pod_uid(bad).is_err(), "{bad:?} accepted");
        }
        validate_pod_uid("3c2b1a09-aaaa-bbbb-cccc-0123456789ab").unwrap();
    }

    #[test]
    fn single_node_defaults_slice_the_cluster_cidr() {
        let config = NodeNetworkConfig::single_node("/var/lib/berth");
        assert_eq!(config.bridge, "berth0");
        assert_eq!(config.pod_cidr_slice.to_string(), "10.42.0.0/24");
        assert_eq!(config.cluster_cidr.to_string(), "10.42.0.0/16");
        let net = NodeNetwork::new(config);
        assert_eq!(
            net.netns_path("p1"),
            PathBuf::from("/var/lib/berth/netns/p1")
        );
        assert_eq!(net.gateway().unwrap(), Ipv4Addr::new(10, 42, 0, 1));
    }

    #[test]
    fn leaked_pods_are_owners_and_namespaces_that_are_not_live() {
        let owners = ["a".to_string(), "b".to_string(), String::new()];
        let pinned = ["b".to_string(), "c".to_string(), "d".to_string()];
        let live = HashSet::from(["a".to_string(), "d".to_string()]);
        let leaked: Vec<String> = leaked_pods(&owners, &pinned, &live).into_iter().collect();
        assert_eq!(leaked, ["", "b", "c"]);
    }

    #[test]
    fn stale_ports_are_pod_veths_of_dead_pods_only() {
        let live = HashSet::from(["alive".to_string()]);
        let ports = vec![veth_name("alive"), veth_name("dead"), "eth1".to_string()];
        assert_eq!(stale_ports(ports, &live), [veth_name("dead")]);
    }

    #[test]
    fn the_node_layout_follows_the_config_file() {
        let mut config = crate::config::Config {
            data_dir: PathBuf::from("/srv/berth"),
            ..Default::default()
        };
        assert_eq!(
            NodeNetworkConfig::from_config(&config).unwrap(),
            NodeNetworkConfig::single_node("/srv/berth")
        );
        config.network.pod_cidr = "192.168.100.0/26".into();
        config.network.bridge = "br-pods".into();
        let node = NodeNetworkConfig::from_config(&config).unwrap();
        assert_eq!(node.pod_cidr_slice.to_string(), "192.168.100.0/26");
        assert_eq!(node.bridge, "br-pods");
        config.network.pod_cidr = "10.42.0.0".into();
        assert!(matches!(
            NodeNetworkConfig::from_config(&config),
            Err(NetError::Cidr(_))
        ));
    }

    #[test]
    fn a_slice_without_room_for_a_gateway_is_refused() {
        let mut config = NodeNetworkConfig::single_node("/nonexistent");
        config.pod_cidr_slice = "10.42.0.0/31".parse().unwrap();
        let net = NodeNetwork::new(config);
        assert!(matches!(net.gateway(), Err(NetError::BadSlice { .. })));
    }
}
