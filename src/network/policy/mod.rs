//! NetworkPolicy enforcement (networking.k8s.io/v1) in berth's table `ip berth-policy`, and
//! pods' `hostPort`s in table `ip berth-hostports`.
//!
//! [`render`] and [`hostports`] are pure and produce rulesets in the service proxy's model;
//! the proxy's netlink encoder diffs and applies them; [`controller`] watches NetworkPolicies,
//! Pods and Namespaces and drives both tables from one Pod reflector.
//!
//! Where the rules hook in: pods share the bridge, so a packet from one pod to another on the
//! same node is bridged at L2 and reaches the `ip` family's forward hook only when
//! br_netfilter hands bridged IPv4 to it (`net.bridge.bridge-nf-call-iptables`). berth turns
//! that on for its namespace ([`enable_bridge_netfilter`]) rather than use a `bridge` family
//! table, because
//! - the service proxy needs it already: a reply from a Service's pod to a client pod on the
//!   same bridge must pass conntrack to be un-DNATed;
//! - `ct state` in the `bridge` family needs nf_conntrack_bridge, which kernels often lack
//!   (the kernel refuses such a rule), and without conntrack replies of allowed connections
//!   cannot be told from new connections;
//! - a `netdev` hook on the veths has no conntrack either, and its egress hook is recent.
//!
//! In the `ip` forward hook, Service traffic has been DNATed in prerouting already, so rules
//! see the real destination pod; masquerade happens later in postrouting, so they see the real
//! source. Traffic from the node itself (kubelet probes) passes output, not forward, and stays
//! allowed, as with upstream CNIs.

pub mod controller;
pub mod hostports;
pub mod render;

pub use render::render;

use std::path::Path;

/// Where br_netfilter's switch for IPv4 lives; per network namespace.
const BRIDGE_NF_CALL_IPTABLES: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "br_netfilter is not loaded ({0} is missing): network policies cannot see traffic \
         between pods on the bridge; load it with `modprobe br_netfilter`"
    )]
    NoBridgeNetfilter(String),
}

/// Makes bridged IPv4 traffic pass the `ip` family's hooks in the calling thread's network
/// namespace.
pub fn enable_bridge_netfilter() -> Result<(), PolicyError> {
    let path = Path::new(BRIDGE_NF_CALL_IPTABLES);
    if !path.exists() {
        return Err(PolicyError::NoBridgeNetfilter(
            BRIDGE_NF_CALL_IPTABLES.into(),
        ));
    }
    std::fs::write(path, b"1").map_err(|source| PolicyError::Io {
        path: BRIDGE_NF_CALL_IPTABLES.into(),
        source,
    })
}
