//! Routes to the other nodes' pods: each Node's `spec.podCIDR` is reached through that node.
//!
//! Two backends, as flannel has them:
//! - **host-gw**: `<peer podCIDR> via <peer InternalIP>`, for a peer on a directly connected
//!   subnet; pod packets cross the link as they are.
//! - **vxlan**: for a peer the link does not reach directly (or when configured). A VXLAN device
//!   [`VXLAN_DEVICE`] (VNI 1, UDP 8472, flannel's) carries pod packets in UDP between nodes. Its
//!   address is this node's podCIDR network address as a /32; per peer, a route
//!   `<peer podCIDR> via <peer podCIDR network> dev berth.1 onlink`, a permanent neighbour entry
//!   (that address → the peer's VTEP MAC) and an FDB entry (the MAC → the peer's public IP), so
//!   the kernel never floods or learns. Each node publishes its VTEP MAC in a Node annotation.
//!
//! The pure part here turns the Nodes into the wanted [`Plan`]; [`kernel`] programs it over
//! rtnetlink and [`controller`] feeds it from a Node watch.

pub mod controller;
pub mod kernel;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Node;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::Ipv4Cidr;

/// The VXLAN device (flannel's is `flannel.1`, after its VNI).
pub const VXLAN_DEVICE: &str = "berth.1";
/// The VXLAN network identifier every node uses.
pub const VNI: u32 = 1;
/// The UDP port of the VXLAN encapsulation: flannel's, not IANA's 4789, as k3s uses it.
pub const VXLAN_PORT: u16 = 8472;
/// What VXLAN encapsulation costs per packet: outer Ethernet 14, IPv4 20, UDP 8, VXLAN 8.
pub const VXLAN_OVERHEAD: u32 = 50;
/// The Node annotation holding the backend's data (`{"VNI":1,"VtepMAC":"…"}`), as flannel's
/// `flannel.alpha.coreos.com/backend-data`.
pub const BACKEND_DATA_ANNOTATION: &str = "berth.io/backend-data";
/// The Node annotation naming the backend a node runs, as `flannel.alpha.coreos.com/backend-type`.
pub const BACKEND_TYPE_ANNOTATION: &str = "berth.io/backend-type";
/// The address other nodes send VXLAN packets to, as `flannel.alpha.coreos.com/public-ip`.
pub const PUBLIC_IP_ANNOTATION: &str = "berth.io/public-ip";
/// The routing protocol number berth's routes carry, so they can be found again (stale ones
/// removed, `berth reset`) without touching anyone else's. Unassigned in `rt_protocols`.
pub const ROUTE_PROTOCOL: u8 = 98;

/// How packets reach other nodes' pods (`network.backend` in the config).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// host-gw for peers on a directly connected subnet, VXLAN for the others.
    #[default]
    Auto,
    /// Plain routes only; a peer not on a connected subnet is unreachable.
    HostGw,
    /// VXLAN for every peer.
    Vxlan,
}

impl Backend {
    /// The MTU of pod interfaces: VXLAN's overhead is taken off when every peer is reached
    /// through it, so pods never send what the tunnel cannot carry. (With `auto`, a tunnelled
    /// peer is reached through path MTU discovery against the VXLAN device's smaller MTU.)
    pub fn pod_mtu(self, link_mtu: u32) -> u32 {
        match self {
            Backend::Vxlan => link_mtu - VXLAN_OVERHEAD,
            Backend::Auto | Backend::HostGw => link_mtu,
        }
    }
}

/// Another node as routing needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub pod_cidr: Ipv4Cidr,
    /// Where its packets go: the public-ip annotation, else its InternalIP.
    pub address: Ipv4Addr,
    /// Its VTEP MAC, once it has published one.
    pub vtep_mac: Option<[u8; 6]>,
}

impl Peer {
    /// The routing view of `node`; None while it has no pod CIDR or no address yet.
    pub fn from_node(node: &Node) -> Option<Peer> {
        let name = node.metadata.name.clone()?;
        let pod_cidr = node.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok()?;
        let annotations = node.metadata.annotations.as_ref();
        let published = annotations
            .and_then(|a| a.get(PUBLIC_IP_ANNOTATION))
            .and_then(|ip| ip.parse().ok());
        let internal = || {
            node.status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .find(|a| a.type_ == "InternalIP")
                .and_then(|a| a.address.parse().ok())
        };
        let address = published.or_else(internal)?;
        let vtep_mac = annotations
            .and_then(|a| a.get(BACKEND_DATA_ANNOTATION))
            .and_then(|data| serde_json::from_str::<BackendData>(data).ok())
            .and_then(|data| parse_mac(&data.vtep_mac));
        Some(Peer {
            name,
            pod_cidr,
            address,
            vtep_mac,
        })
    }
}

/// The backend-data annotation's JSON, flannel's shape.
#[derive(Debug, Deserialize, serde::Serialize)]
pub struct BackendData {
    #[serde(rename = "VNI")]
    pub vni: u32,
    #[serde(rename = "VtepMAC")]
    pub vtep_mac: String,
}

/// One route berth wants in the node's main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub destination: (Ipv4Addr, u8),
    pub gateway: Ipv4Addr,
    /// Through the VXLAN device (`onlink`), else wherever the kernel reaches the gateway.
    pub via_vxlan: bool,
}

/// A peer reached through the VXLAN device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct VxlanPeer {
    /// The peer's VTEP address inside the tunnel (its podCIDR network address).
    pub vtep_ip: Ipv4Addr,
    pub mac: [u8; 6],
    /// The peer's public address, where the encapsulated packets go.
    pub address: Ipv4Addr,
}

/// Everything the node's kernel should hold for the other nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub routes: Vec<Route>,
    /// Some when the VXLAN device is needed: the peers it reaches.
    pub vxlan: Option<Vec<VxlanPeer>>,
}

/// The plan for node `own` among `peers` (which may include `own`, skipped), given the
/// networks this node is directly connected to.
pub fn plan(backend: Backend, own: &str, peers: &[Peer], connected: &[Ipv4Cidr]) -> Plan {
    let mut plan = Plan::default();
    let mut tunnelled = Vec::new();
    let others = peers.iter().filter(|p| p.name != own);
    for peer in others {
        let on_link = connected.iter().any(|net| net.contains(peer.address));
        let use_vxlan = match backend {
            Backend::HostGw => false,
            Backend::Vxlan => true,
            Backend::Auto => !on_link,
        };
        if !use_vxlan {
            plan.routes.push(Route {
                destination: (peer.pod_cidr.network(), peer.pod_cidr.prefix_len()),
                gateway: peer.address,
                via_vxlan: false,
            });
            continue;
        }
        // Without its MAC nothing can be addressed to the peer's VTEP yet; it publishes the
        // MAC once its device exists, and the Node update brings the route.
        let Some(mac) = peer.vtep_mac else {
            continue;
        };
        let vtep_ip = peer.pod_cidr.network();
        tunnelled.push(VxlanPeer {
            vtep_ip,
            mac,
            address: peer.address,
        });
        plan.routes.push(Route {
            destination: (peer.pod_cidr.network(), peer.pod_cidr.prefix_len()),
            gateway: vtep_ip,
            via_vxlan: true,
        });
    }
    let wants_device = match backend {
        Backend::Vxlan => true,
        Backend::HostGw => false,
        // Only once a peer needs it: a single node, or one LAN, runs no tunnel at all.
        Backend::Auto => peers
            .iter()
            .any(|p| p.name != own && !connected.iter().any(|net| net.contains(p.address))),
    };
    if wants_device {
        tunnelled.sort();
        plan.vxlan = Some(tunnelled);
    }
    plan.routes.sort();
    plan
}

/// The node's VTEP MAC: derived from its name so it survives restarts and a re-created device
/// (peers keep their FDB entries valid), locally administered and unicast.
pub fn vtep_mac(node_name: &str) -> [u8; 6] {
    let digest = Sha256::digest(node_name.as_bytes());
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&digest[..6]);
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in mac.iter_mut() {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The annotations a node publishes for the VXLAN backend.
pub fn vxlan_annotations(node_name: &str, public_ip: Ipv4Addr) -> BTreeMap<String, String> {
    let data = BackendData {
        vni: VNI,
        vtep_mac: format_mac(&vtep_mac(node_name)),
    };
    BTreeMap::from([
        (
            BACKEND_DATA_ANNOTATION.to_string(),
            serde_json::to_string(&data).unwrap_or_default(),
        ),
        (BACKEND_TYPE_ANNOTATION.to_string(), "vxlan".to_string()),
        (PUBLIC_IP_ANNOTATION.to_string(), public_ip.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, cidr: &str, address: &str, mac: Option<[u8; 6]>) -> Peer {
        Peer {
            name: name.into(),
            pod_cidr: cidr.parse().unwrap(),
            address: address.parse().unwrap(),
            vtep_mac: mac,
        }
    }

    fn lan() -> Vec<Ipv4Cidr> {
        vec!["192.168.1.0/24".parse().unwrap()]
    }

    #[test]
    fn host_gw_routes_each_other_nodes_slice_via_its_address_and_skips_itself() {
        let peers = [
            peer("me", "10.42.0.0/24", "192.168.1.1", None),
            peer("b", "10.42.1.0/24", "192.168.1.2", None),
            peer("c", "10.42.2.0/24", "192.168.1.3", None),
        ];
        let plan = plan(Backend::Auto, "me", &peers, &lan());
        assert_eq!(plan.vxlan, None, "every peer is on the link: no tunnel");
        assert_eq!(
            plan.routes,
            [
                Route {
                    destination: ("10.42.1.0".parse().unwrap(), 24),
                    gateway: "192.168.1.2".parse().unwrap(),
                    via_vxlan: false
                },
                Route {
                    destination: ("10.42.2.0".parse().unwrap(), 24),
                    gateway: "192.168.1.3".parse().unwrap(),
                    via_vxlan: false
                },
            ]
        );
    }

    #[test]
    fn auto_tunnels_only_the_peers_that_are_not_on_a_connected_subnet() {
        let mac = [2, 0, 0, 0, 0, 9];
        let peers = [
            peer("b", "10.42.1.0/24", "192.168.1.2", Some([2, 0, 0, 0, 0, 1])),
            peer("far", "10.42.9.0/24", "172.16.5.5", Some(mac)),
        ];
        let plan = plan(Backend::Auto, "me", &peers, &lan());
        assert_eq!(
            plan.vxlan,
            Some(vec![VxlanPeer {
                vtep_ip: "10.42.9.0".parse().unwrap(),
                mac,
                address: "172.16.5.5".parse().unwrap()
            }])
        );
        assert!(plan.routes.contains(&Route {
            destination: ("10.42.9.0".parse().unwrap(), 24),
            gateway: "10.42.9.0".parse().unwrap(),
            via_vxlan: true
        }));
        assert!(plan.routes.contains(&Route {
            destination: ("10.42.1.0".parse().unwrap(), 24),
            gateway: "192.168.1.2".parse().unwrap(),
            via_vxlan: false
        }));
    }

    #[test]
    fn vxlan_wants_the_device_alone_and_waits_for_a_peers_mac_before_routing_to_it() {
        let plan_alone = plan(Backend::Vxlan, "me", &[], &lan());
        assert_eq!(plan_alone.vxlan, Some(vec![]));
        let peers = [peer("b", "10.42.1.0/24", "192.168.1.2", None)];
        let waiting = plan(Backend::Vxlan, "me", &peers, &lan());
        assert!(waiting.routes.is_empty());
        assert_eq!(waiting.vxlan, Some(vec![]));
    }

    #[test]
    fn host_gw_never_makes_a_tunnel_even_for_a_far_peer() {
        let peers = [peer("far", "10.42.9.0/24", "172.16.5.5", None)];
        let plan = plan(Backend::HostGw, "me", &peers, &lan());
        assert_eq!(plan.vxlan, None);
        assert_eq!(plan.routes.len(), 1);
        assert!(!plan.routes[0].via_vxlan);
    }

    #[test]
    fn vtep_macs_are_stable_unicast_and_locally_administered() {
        let mac = vtep_mac("node-a");
        assert_eq!(mac, vtep_mac("node-a"));
        assert_ne!(mac, vtep_mac("node-b"));
        assert_eq!(mac[0] & 0x01, 0, "unicast");
        assert_eq!(mac[0] & 0x02, 0x02, "locally administered");
        assert_eq!(parse_mac(&format_mac(&mac)), Some(mac));
        assert_eq!(parse_mac("02:00:00:00:00"), None);
        assert_eq!(parse_mac("02:00:00:00:00:00:01"), None);
        assert_eq!(parse_mac("zz:00:00:00:00:00"), None);
    }

    #[test]
    fn a_node_is_a_peer_with_its_published_address_and_mac() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "b", "annotations": vxlan_annotations("b", "10.0.0.7".parse().unwrap())},
            "spec": {"podCIDR": "10.42.1.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.2"}]},
        }))
        .unwrap();
        let peer = Peer::from_node(&node).unwrap();
        assert_eq!(peer.address, "10.0.0.7".parse::<Ipv4Addr>().unwrap());
        assert_eq!(peer.vtep_mac, Some(vtep_mac("b")));
        assert_eq!(peer.pod_cidr.to_string(), "10.42.1.0/24");

        let plain: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c"},
            "spec": {"podCIDR": "10.42.2.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.3"}]},
        }))
        .unwrap();
        let peer = Peer::from_node(&plain).unwrap();
        assert_eq!(peer.address, "192.168.1.3".parse::<Ipv4Addr>().unwrap());
        assert_eq!(peer.vtep_mac, None);

        let no_cidr: Node =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "d"}})).unwrap();
        assert_eq!(Peer::from_node(&no_cidr), None);
    }

    #[test]
    fn the_pod_mtu_leaves_room_for_vxlan_only_when_everything_is_tunnelled() {
        assert_eq!(Backend::Vxlan.pod_mtu(1500), 1450);
        assert_eq!(Backend::HostGw.pod_mtu(1500), 1500);
        assert_eq!(Backend::Auto.pod_mtu(1500), 1500);
    }
}
