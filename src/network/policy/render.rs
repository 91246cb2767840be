//! NetworkPolicies, Pods and Namespaces in, the policy table's desired ruleset out. Pure: no
//! kernel, no API.
//!
//! Layout of table `ip berth-policy` (names are stable, so a pod coming or going only changes
//! set elements, and a policy change only touches that policy's chains and sets):
//! - `policy-egress` (filter forward, priority 0) then `policy-ingress` (priority 1): replies of
//!   allowed connections pass on conntrack state; a packet from (to) a pod some policy selects
//!   jumps to that policy's `pol_<ns>_<name>_egress` (`_ingress`) chain, whose rules `accept`
//!   what the policy allows; whatever is left is dropped if the pod is in
//!   `policy-egress-isolated` (`policy-ingress-isolated`). Two base chains rather than one
//!   because `accept` ends only the base chain it is in: a packet the egress side accepts must
//!   still pass the ingress side of its destination.
//! - `policy-egress-node` (filter input): what a pod sends to the node's own addresses passes
//!   the same egress rules, as Calico and Cilium do for pods that are not on the host network:
//!   the node is not a pod, so only `ipBlock` peers (or rules without peers) allow it. Pods
//!   reaching the API server through the `kubernetes` Service need such a rule, as upstream.
//!   One exception: port 53, the cluster DNS, which berth serves from the node rather than
//!   from a `kube-dns` pod that the usual "allow DNS" rules (a `kube-system` namespace or
//!   `k8s-app: kube-dns` pod selector) would match.
//! - `pol_<ns>_<name>_pods`: the IPs of the pods a policy selects.
//! - `pol_<ns>_<name>_in<i>_peers` / `_eg<i>_peers`: the IPs of the pods the pod and namespace
//!   selectors of rule `i` match; ipBlock peers are matched by prefix in the rule itself.
//! - `port_<proto>_<name>`: `pod IP . protocol . number` of every pod's named container port, so
//!   a named port resolves per destination pod with one lookup.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::selectors::LabelSelector;
use crate::network::cidr::Ipv4Cidr;
use crate::network::proxy::model::*;

/// The policy table, family `ip`.
pub const TABLE: &str = "berth-policy";
pub const EGRESS_CHAIN: &str = "policy-egress";
pub const INGRESS_CHAIN: &str = "policy-ingress";
pub const EGRESS_NODE_CHAIN: &str = "policy-egress-node";
pub const EGRESS_ISOLATED_SET: &str = "policy-egress-isolated";
pub const INGRESS_ISOLATED_SET: &str = "policy-ingress-isolated";
/// Every namespace carries its name as this label (upstream sets it on create).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// nftables' limit on chain and set names, minus room for the terminating NUL.
const MAX_NAME_LEN: usize = 255;

/// True for the names this table's applier created (everything but anonymous sets).
pub fn is_policy_object(name: &str) -> bool {
    ["policy-", "pol_", "port_"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// A pod as policies see it: only pods with their own IPv4 address on the pod network.
struct PodView<'a> {
    namespace: &'a str,
    labels: BTreeMap<String, String>,
    ip: Ipv4Addr,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn short(self) -> &'static str {
        match self {
            Direction::Ingress => "in",
            Direction::Egress => "eg",
        }
    }

    fn long(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// The whole desired ruleset of the policy table.
pub fn render(policies: &[NetworkPolicy], pods: &[Pod], namespaces: &[Namespace]) -> Ruleset {
    let mut rs = render_rules(policies, pods, namespaces);
    fill_named_ports(&mut rs, pods);
    rs
}

/// Chains, membership and peer sets; named-port sets are created empty.
fn render_rules(policies: &[NetworkPolicy], pods: &[Pod], namespaces: &[Namespace]) -> Ruleset {
    let pods: Vec<PodView> = pods.iter().filter_map(pod_view).collect();
    let namespace_labels = namespace_labels(namespaces);

    let mut rs = Ruleset::default();
    let mut egress_jumps = Vec::new();
    let mut ingress_jumps = Vec::new();
    let mut egress_isolated = Set::plain(KeyType::Addr);
    let mut ingress_isolated = Set::plain(KeyType::Addr);

    let mut sorted: Vec<&NetworkPolicy> = policies.iter().collect();
    sorted.sort_by_key(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()));
    for policy in sorted {
        let (Some(namespace), Some(name), Some(spec)) = (
            policy.metadata.namespace.as_deref(),
            policy.metadata.name.as_deref(),
            policy.spec.as_ref(),
        ) else {
            continue;
        };
        let id = format!("{namespace}_{name}");
        let selected = selector(spec.pod_selector.as_ref());
        let mut members = Set::plain(KeyType::Addr);
        for pod in pods.iter().filter(|p| p.namespace == namespace) {
            if selected.as_ref().is_some_and(|s| s.matches(&pod.labels)) {
                members.elements.insert(Key::Addr(pod.ip), None);
            }
        }
        let pods_set = object_name("pol", &id, "pods");
        for direction in policy_types(spec) {
            let (jumps, isolated, match_member): (_, _, fn(String) -> Stmt) = match direction {
                Direction::Egress => (&mut egress_jumps, &mut egress_isolated, Stmt::SaddrInSet),
                Direction::Ingress => (&mut ingress_jumps, &mut ingress_isolated, Stmt::DaddrInSet),
            };
            for key in members.elements.keys() {
                isolated.elements.insert(*key, None);
            }
            let chain_name = object_name("pol", &id, direction.long());
            jumps.push(Rule(vec![
                match_member(pods_set.clone()),
                Stmt::Jump(chain_name.clone()),
            ]));
            let rules = policy_rules(
                &mut rs,
                &id,
                namespace,
                spec,
                direction,
                &pods,
                &namespace_labels,
            );
            rs.chains.insert(chain_name, chain(None, rules));
        }
        rs.sets.insert(pods_set, members);
    }

    let established = Rule(vec![Stmt::CtStateEstablished, Stmt::Accept]);
    let mut egress = vec![established.clone()];
    egress.extend(egress_jumps.iter().cloned());
    egress.push(Rule(vec![
        Stmt::SaddrInSet(EGRESS_ISOLATED_SET.into()),
        Stmt::Drop,
    ]));
    let mut egress_node = vec![established.clone()];
    egress_node.extend([Proto::Udp, Proto::Tcp].map(|proto| {
        Rule(vec![
            Stmt::L4Proto(proto),
            Stmt::Dport { from: 53, to: 53 },
            Stmt::Accept,
        ])
    }));
    egress_node.extend(egress_jumps.iter().cloned());
    egress_node.push(Rule(vec![
        Stmt::SaddrInSet(EGRESS_ISOLATED_SET.into()),
        Stmt::Drop,
    ]));
    let mut ingress = vec![established];
    ingress.extend(ingress_jumps);
    ingress.push(Rule(vec![
        Stmt::DaddrInSet(INGRESS_ISOLATED_SET.into()),
        Stmt::Drop,
    ]));
    // Pod-to-pod traffic on the bridge reaches the `ip` forward hook only through
    // br_netfilter (see the module documentation); routed traffic (from outside, or to a
    // Service, DNATed in prerouting before this hook) always does, with the real pod address.
    rs.chains
        .insert(EGRESS_CHAIN.into(), chain(Some(forward(0)), egress));
    let input = BaseChain {
        kind: ChainKind::Filter,
        hook: HookPoint::Input,
        priority: 0,
    };
    rs.chains
        .insert(EGRESS_NODE_CHAIN.into(), chain(Some(input), egress_node));
    rs.chains
        .insert(INGRESS_CHAIN.into(), chain(Some(forward(1)), ingress));
    rs.sets.insert(EGRESS_ISOLATED_SET.into(), egress_isolated);
    rs.sets
        .insert(INGRESS_ISOLATED_SET.into(), ingress_isolated);
    rs
}

fn forward(priority: i32) -> BaseChain {
    BaseChain {
        kind: ChainKind::Filter,
        hook: HookPoint::Forward,
        priority,
    }
}

fn chain(base: Option<BaseChain>, rules: Vec<Rule>) -> Chain {
    Chain { base, rules }
}

/// Upstream's defaulting: without `policyTypes`, a policy is about ingress, and about egress
/// too when it has egress rules.
fn policy_types(spec: &NetworkPolicySpec) -> Vec<Direction> {
    match spec.policy_types.as_deref() {
        Some(types) if !types.is_empty() => {
            let mut out = Vec::new();
            if types.iter().any(|t| t == "Ingress") {
                out.push(Direction::Ingress);
            }
            if types.iter().any(|t| t == "Egress") {
                out.push(Direction::Egress);
            }
            out
        }
        _ => {
            let mut out = vec![Direction::Ingress];
            if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                out.push(Direction::Egress);
            }
            out
        }
    }
}

/// The accepting rules of one policy in one direction: one nft rule per (peer, port) pair of
/// each of its rules, since a policy rule allows traffic matching any peer and any port.
fn policy_rules(
    rs: &mut Ruleset,
    id: &str,
    namespace: &str,
    spec: &NetworkPolicySpec,
    direction: Direction,
    pods: &[PodView],
    namespace_labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<Rule> {
    let rules: Vec<(
        Option<&Vec<NetworkPolicyPeer>>,
        Option<&Vec<NetworkPolicyPort>>,
    )> = match direction {
        Direction::Ingress => spec
            .ingress
            .iter()
            .flatten()
            .map(|r| (r.from.as_ref(), r.ports.as_ref()))
            .collect(),
        Direction::Egress => spec
            .egress
            .iter()
            .flatten()
            .map(|r| (r.to.as_ref(), r.ports.as_ref()))
            .collect(),
    };
    let mut out = Vec::new();
    for (index, (peers, ports)) in rules.into_iter().enumerate() {
        let peer_set = object_name("pol", id, &format!("{}{index}_peers", direction.short()));
        let peer_matches = peer_matches(
            rs,
            &peer_set,
            namespace,
            peers.map(Vec::as_slice),
            direction,
            pods,
            namespace_labels,
        );
        let port_matches = port_matches(rs, ports.map(Vec::as_slice));
        for peer in &peer_matches {
            for port in &port_matches {
                let mut stmts = peer.clone();
                stmts.extend(port.iter().cloned());
                stmts.push(Stmt::Accept);
                out.push(Rule(stmts));
            }
        }
    }
    out
}

/// The alternatives a rule's peers allow, each a conjunction of statements. No peers (or an
/// empty list) means every source (destination); a selector that matches nothing still gets
/// its (empty) set, so a pod appearing later is one element away.
fn peer_matches(
    rs: &mut Ruleset,
    set_name: &str,
    namespace: &str,
    peers: Option<&[NetworkPolicyPeer]>,
    direction: Direction,
    pods: &[PodView],
    namespace_labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<Vec<Stmt>> {
    let Some(peers) = peers.filter(|p| !p.is_empty()) else {
        return vec![Vec::new()];
    };
    let mut alternatives = Vec::new();
    let mut members = Set::plain(KeyType::Addr);
    let mut any_selector = false;
    for peer in peers {
        if let Some(block) = &peer.ip_block {
            if let Some(stmts) = ip_block(block, direction) {
                alternatives.push(stmts);
            }
            continue;
        }
        if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
            continue;
        }
        any_selector = true;
        // A pod selector alone looks in the policy's namespace; a namespace selector alone
        // takes every pod of the namespaces it matches; both: the pods matching the first in
        // the namespaces matching the second.
        let pod_selector = selector(peer.pod_selector.as_ref());
        let namespace_selector = peer.namespace_selector.as_ref().map(|s| selector(Some(s)));
        for pod in pods {
            let namespace_ok = match &namespace_selector {
                None => pod.namespace == namespace,
                Some(selector) => {
                    let empty = BTreeMap::new();
                    let labels = namespace_labels.get(pod.namespace).unwrap_or(&empty);
                    selector.as_ref().is_some_and(|s| s.matches(labels))
                }
            };
            let pod_ok = match (&pod_selector, &peer.pod_selector) {
                (_, None) => true,
                (Some(s), Some(_)) => s.matches(&pod.labels),
                (None, Some(_)) => false,
            };
            if namespace_ok && pod_ok {
                members.elements.insert(Key::Addr(pod.ip), None);
            }
        }
    }
    if any_selector {
        let stmt = match direction {
            Direction::Ingress => Stmt::SaddrInSet(set_name.to_string()),
            Direction::Egress => Stmt::DaddrInSet(set_name.to_string()),
        };
        alternatives.push(vec![stmt]);
        rs.sets.insert(set_name.to_string(), members);
    }
    alternatives
}

/// `ip saddr <cidr> ip saddr != <except> ...` (daddr for egress), or nothing for an IPv6
/// block or one that does not parse (the API validates them), which then allows nothing.
///
/// Why IPv6 blocks are left out rather than rendered: pods have IPv4 addresses only, so this
/// `ip` table sees all the traffic policies govern and an IPv6 block can match none of it;
/// allowing nothing is exactly what it means here. An IPv6 `except` of an IPv4 block
/// (upstream rejects that mix) excludes no IPv4 address and is skipped for the same reason.
/// [`ignored_ipv6_blocks`] names them so the controller can say so.
fn ip_block(
    block: &k8s_openapi::api::networking::v1::IPBlock,
    direction: Direction,
) -> Option<Vec<Stmt>> {
    let addr = |cidr: Ipv4Cidr, negate: bool| match direction {
        Direction::Ingress => Stmt::Saddr { cidr, negate },
        Direction::Egress => Stmt::Daddr { cidr, negate },
    };
    let mut stmts = vec![addr(parse_cidr(&block.cidr)?, false)];
    for except in block.except.iter().flatten() {
        if is_ipv6_cidr(except) {
            continue;
        }
        stmts.push(addr(parse_cidr(except)?, true));
    }
    Some(stmts)
}

/// The IPv6 CIDRs in a policy's ipBlocks (blocks and excepts), which match no pod traffic on
/// an IPv4-only cluster; in the order they appear.
pub fn ignored_ipv6_blocks(spec: &NetworkPolicySpec) -> Vec<String> {
    let ingress = spec.ingress.iter().flatten().flat_map(|r| r.from.iter());
    let egress = spec.egress.iter().flatten().flat_map(|r| r.to.iter());
    ingress
        .chain(egress)
        .flatten()
        .filter_map(|peer| peer.ip_block.as_ref())
        .flat_map(|block| std::iter::once(&block.cidr).chain(block.except.iter().flatten()))
        .filter(|cidr| is_ipv6_cidr(cidr))
        .cloned()
        .collect()
}

fn is_ipv6_cidr(text: &str) -> bool {
    text.trim().split_once('/').is_some_and(|(addr, len)| {
        addr.parse::<std::net::Ipv6Addr>().is_ok() && len.parse::<u8>().is_ok_and(|len| len <= 128)
    })
}

/// A CIDR as the API accepts it: host bits are allowed and ignored.
fn parse_cidr(text: &str) -> Option<Ipv4Cidr> {
    let (addr, len) = text.trim().split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    };
    Ipv4Cidr::new(Ipv4Addr::from(u32::from(addr) & mask), len).ok()
}

/// The alternatives a rule's ports allow. No ports means every port; a named port becomes a
/// lookup of `destination . protocol . port` in that name's set.
fn port_matches(rs: &mut Ruleset, ports: Option<&[NetworkPolicyPort]>) -> Vec<Vec<Stmt>> {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return vec![Vec::new()];
    };
    let mut alternatives = Vec::new();
    for port in ports {
        let Some(proto) = Proto::from_kubernetes(port.protocol.as_deref()) else {
            continue;
        };
        match &port.port {
            None => alternatives.push(vec![Stmt::L4Proto(proto)]),
            Some(IntOrString::Int(number)) => {
                let Ok(from) = u16::try_from(*number) else {
                    continue;
                };
                let to = match port.end_port {
                    Some(end) => match u16::try_from(end) {
                        Ok(end) if end >= from => end,
                        _ => continue,
                    },
                    None => from,
                };
                alternatives.push(vec![Stmt::L4Proto(proto), Stmt::Dport { from, to }]);
            }
            Some(IntOrString::String(name)) => {
                let set_name = named_port_set(proto, name);
                rs.sets
                    .entry(set_name.clone())
                    .or_insert_with(|| Set::plain(KeyType::Destination));
                alternatives.push(vec![Stmt::DestinationInSet(set_name)]);
            }
        }
    }
    alternatives
}

fn named_port_set(proto: Proto, name: &str) -> String {
    object_name("port", proto.nft(), name)
}

/// Fills every named-port set the rules refer to with the pods that define that port.
fn fill_named_ports(rs: &mut Ruleset, pods: &[Pod]) {
    for pod in pods {
        let Some(view) = pod_view(pod) else {
            continue;
        };
        let containers = pod.spec.iter().flat_map(|s| s.containers.iter());
        for port in containers.flat_map(|c| c.ports.iter().flatten()) {
            let (Some(name), Some(proto)) = (
                port.name.as_deref(),
                Proto::from_kubernetes(port.protocol.as_deref()),
            ) else {
                continue;
            };
            let Ok(number) = u16::try_from(port.container_port) else {
                continue;
            };
            if let Some(set) = rs.sets.get_mut(&named_port_set(proto, name)) {
                set.elements
                    .insert(Key::Destination(view.ip, proto, number), None);
            }
        }
    }
}

/// A selector as a matcher; `None` when it does not parse (the API validates selectors, so
/// this only guards against what validation missed): it then matches nothing.
fn selector(selector: Option<&metav1::LabelSelector>) -> Option<LabelSelector> {
    match selector {
        None => Some(LabelSelector::default()),
        Some(s) => LabelSelector::from_label_selector(s).ok(),
    }
}

fn pod_view(pod: &Pod) -> Option<PodView<'_>> {
    let spec = pod.spec.as_ref()?;
    if spec.host_network == Some(true) {
        return None;
    }
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let ip = status.pod_ip.as_deref()?.parse().ok()?;
    Some(PodView {
        namespace: pod.metadata.namespace.as_deref()?,
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        ip,
    })
}

fn namespace_labels(namespaces: &[Namespace]) -> BTreeMap<String, BTreeMap<String, String>> {
    namespaces
        .iter()
        .filter_map(|ns| {
            let name = ns.metadata.name.clone()?;
            let mut labels = ns.metadata.labels.clone().unwrap_or_default();
            labels
                .entry(NAMESPACE_NAME_LABEL.into())
                .or_insert_with(|| name.clone());
            Some((name, labels))
        })
        .collect()
}

/// `<prefix>_<id>_<suffix>`, shortened with a digest when Kubernetes names add up to more
/// than nftables allows.
fn object_name(prefix: &str, id: &str, suffix: &str) -> String {
    let name = format!("{prefix}_{id}_{suffix}");
    if name.len() <= MAX_NAME_LEN {
        return name;
    }
    use sha2::{Digest, Sha256};
    let digest = hex::encode(&Sha256::digest(name.as_bytes())[..8]);
    let tail = format!("_{digest}_{suffix}");
    let head: String = name.chars().take(MAX_NAME_LEN - tail.len()).collect();
    format!("{head}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(namespace: &str, name: &str, ip: &str, labels: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "x",
                     "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip},
        }))
        .unwrap()
    }

    fn namespace(name: &str, labels: serde_json::Value) -> Namespace {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
    }

    fn policy(namespace: &str, name: &str, spec: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": namespace}, "spec": spec}),
        )
        .unwrap()
    }

    fn cluster() -> (Vec<Pod>, Vec<Namespace>) {
        let pods = vec![
            pod("default", "server", "10.42.0.5", json!({"app": "server"})),
            pod("default", "client", "10.42.0.6", json!({"role": "client"})),
            pod("default", "other", "10.42.0.7", json!({"role": "other"})),
            pod("team-a", "client", "10.42.0.8", json!({"role": "client"})),
            pod("team-b", "client", "10.42.0.9", json!({"role": "client"})),
        ];
        let namespaces = vec![
            namespace("default", json!({})),
            namespace("team-a", json!({"team": "a"})),
            namespace("team-b", json!({"team": "b"})),
        ];
        (pods, namespaces)
    }

    fn addrs(rs: &Ruleset, set: &str) -> Vec<String> {
        rs.sets[set]
            .elements
            .keys()
            .map(|k| match k {
                Key::Addr(a) => a.to_string(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn rules(rs: &Ruleset, chain: &str) -> Vec<String> {
        rs.chains[chain].rules.iter().map(Rule::to_nft).collect()
    }

    /// One of each: deny-all ingress, allow by pod label on a named port, namespace selector
    /// combined with a pod selector, ipBlock with except, an endPort range, egress deny-all.
    fn sample() -> Vec<NetworkPolicy> {
        vec![
            policy("default", "deny-all", json!({"podSelector": {}})),
            policy(
                "default",
                "allow-client",
                json!({"podSelector": {"matchLabels": {"app": "server"}},
                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                                    "ports": [{"port": "http"}]}]}),
            ),
            policy(
                "default",
                "allow-team-a",
                json!({"podSelector": {"matchLabels": {"app": "server"}},
                       "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}},
                                              "podSelector": {"matchLabels": {"role": "client"}}},
                                             {"ipBlock": {"cidr": "192.168.0.0/16",
                                                          "except": ["192.168.1.0/24"]}}],
                                    "ports": [{"port": 8000, "endPort": 8100, "protocol": "UDP"}]}]}),
            ),
            policy(
                "default",
                "no-egress",
                json!({"podSelector": {"matchLabels": {"role": "other"}},
                       "policyTypes": ["Egress"]}),
            ),
        ]
    }

    #[test]
    fn the_sample_renders_as_the_golden_file() {
        let (pods, namespaces) = cluster();
        let text = render(&sample(), &pods, &namespaces).to_nft(TABLE);
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/policy/sample.nft"
        );
        let golden = std::fs::read_to_string(path).unwrap_or_default();
        if text != golden {
            // Left for a person to review and copy over the golden file.
            let _ = std::fs::write(format!("{path}.actual"), &text);
        }
        assert_eq!(text, golden);
    }

    #[test]
    fn without_policies_nothing_is_isolated_and_everything_passes() {
        let (pods, namespaces) = cluster();
        let rs = render(&[], &pods, &namespaces);
        assert!(rs.sets[INGRESS_ISOLATED_SET].elements.is_empty());
        assert!(rs.sets[EGRESS_ISOLATED_SET].elements.is_empty());
        assert_eq!(
            rules(&rs, INGRESS_CHAIN),
            vec![
                "ct state established,related accept",
                "ip daddr @policy-ingress-isolated drop"
            ]
        );
    }

    #[test]
    fn an_empty_pod_selector_isolates_every_pod_of_its_namespace_only() {
        let (pods, namespaces) = cluster();
        let rs = render(&sample()[..1], &pods, &namespaces);
        assert_eq!(
            addrs(&rs, INGRESS_ISOLATED_SET),
            vec!["10.42.0.5", "10.42.0.6", "10.42.0.7"]
        );
        // A policy without ingress rules allows nothing.
        assert!(rules(&rs, "pol_default_deny-all_ingress").is_empty());
        assert!(!rs.chains.contains_key("pol_default_deny-all_egress"));
    }

    #[test]
    fn a_pod_selector_peer_matches_only_its_own_namespace_and_a_named_port_resolves_per_pod() {
        let (pods, namespaces) = cluster();
        let rs = render(&sample(), &pods, &namespaces);
        assert_eq!(
            addrs(&rs, "pol_default_allow-client_in0_peers"),
            vec!["10.42.0.6"]
        );
        assert_eq!(
            rules(&rs, "pol_default_allow-client_ingress"),
            vec![
                "ip saddr @pol_default_allow-client_in0_peers \
                 ip daddr . meta l4proto . th dport @port_tcp_http accept"
            ]
        );
        let named = &rs.sets["port_tcp_http"].elements;
        assert!(named.contains_key(&Key::Destination(
            "10.42.0.5".parse().unwrap(),
            Proto::Tcp,
            8080
        )));
        assert_eq!(named.len(), 5);
    }

    #[test]
    fn namespace_and_pod_selectors_together_take_matching_pods_of_matching_namespaces() {
        let (pods, namespaces) = cluster();
        let rs = render(&sample(), &pods, &namespaces);
        assert_eq!(
            addrs(&rs, "pol_default_allow-team-a_in0_peers"),
            vec!["10.42.0.8"]
        );
    }

    #[test]
    fn a_namespace_selector_alone_takes_every_pod_and_matches_the_name_label() {
        let (pods, namespaces) = cluster();
        let p = policy(
            "default",
            "from-b",
            json!({"podSelector": {},
                   "ingress": [{"from": [{"namespaceSelector": {"matchLabels":
                                 {"kubernetes.io/metadata.name": "team-b"}}}]}]}),
        );
        let rs = render(&[p], &pods, &namespaces);
        assert_eq!(
            addrs(&rs, "pol_default_from-b_in0_peers"),
            vec!["10.42.0.9"]
        );
        assert_eq!(
            rules(&rs, "pol_default_from-b_ingress"),
            vec!["ip saddr @pol_default_from-b_in0_peers accept"]
        );
    }

    #[test]
    fn ip_blocks_and_port_ranges_are_matched_in_the_rule() {
        let (pods, namespaces) = cluster();
        let rs = render(&sample(), &pods, &namespaces);
        let r = rules(&rs, "pol_default_allow-team-a_ingress");
        assert_eq!(
            r,
            vec![
                "ip saddr 192.168.0.0/16 ip saddr != 192.168.1.0/24 \
                 meta l4proto udp th dport 8000-8100 accept",
                "ip saddr @pol_default_allow-team-a_in0_peers \
                 meta l4proto udp th dport 8000-8100 accept",
            ]
        );
    }

    #[test]
    fn egress_only_policies_isolate_egress_and_leave_ingress_alone() {
        let (pods, namespaces) = cluster();
        let rs = render(&sample()[3..], &pods, &namespaces);
        assert_eq!(addrs(&rs, EGRESS_ISOLATED_SET), vec!["10.42.0.7"]);
        assert!(rs.sets[INGRESS_ISOLATED_SET].elements.is_empty());
        assert_eq!(
            rules(&rs, EGRESS_CHAIN)[1],
            "ip saddr @pol_default_no-egress_pods jump pol_default_no-egress_egress"
        );
    }

    #[test]
    fn what_pods_send_to_the_node_passes_the_same_egress_rules_except_cluster_dns() {
        let (pods, namespaces) = cluster();
        let rs = render(&sample()[3..], &pods, &namespaces);
        let node = &rs.chains[EGRESS_NODE_CHAIN];
        assert_eq!(node.base.map(|b| b.hook), Some(HookPoint::Input));
        let egress = rules(&rs, EGRESS_CHAIN);
        let to_node = rules(&rs, EGRESS_NODE_CHAIN);
        assert_eq!(
            to_node[..3],
            [
                "ct state established,related accept",
                "meta l4proto udp th dport 53 accept",
                "meta l4proto tcp th dport 53 accept",
            ]
        );
        // Then exactly the forward chain's policy jumps and its isolation drop.
        assert_eq!(to_node[3..], egress[1..]);
    }

    #[test]
    fn egress_rules_without_policy_types_make_a_policy_about_both_directions() {
        let (pods, namespaces) = cluster();
        let p = policy(
            "default",
            "both",
            json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.1/8"}}]}]}),
        );
        let rs = render(&[p], &pods, &namespaces);
        assert!(rs.chains.contains_key("pol_default_both_ingress"));
        assert_eq!(
            rules(&rs, "pol_default_both_egress"),
            vec!["ip daddr 10.0.0.0/8 accept"]
        );
    }

    #[test]
    fn a_pod_coming_or_going_changes_set_elements_only() {
        let (mut pods, namespaces) = cluster();
        let before = render(&sample(), &pods, &namespaces);
        pods.push(pod(
            "default",
            "client-2",
            "10.42.0.10",
            json!({"role": "client"}),
        ));
        let after = render(&sample(), &pods, &namespaces);
        assert_eq!(
            before.chains, after.chains,
            "no chain may change for a new pod"
        );
        let batch = crate::network::proxy::netlink::diff(
            TABLE,
            &before,
            &after,
            &crate::network::proxy::netlink::Stale::default(),
        );
        // Added to: the isolated set, deny-all's members, allow-client's peers, the named port.
        assert_eq!(batch.messages(), 4);
    }

    #[test]
    fn host_network_finished_and_unaddressed_pods_are_never_members() {
        let (mut pods, namespaces) = cluster();
        pods[0].spec.as_mut().unwrap().host_network = Some(true);
        pods[1].status.as_mut().unwrap().phase = Some("Failed".into());
        pods[2].status.as_mut().unwrap().pod_ip = None;
        let rs = render(&sample()[..1], &pods, &namespaces);
        assert!(rs.sets[INGRESS_ISOLATED_SET].elements.is_empty());
    }

    #[test]
    fn host_bits_in_an_ip_block_are_ignored_and_garbage_allows_nothing() {
        assert_eq!(parse_cidr("10.1.2.3/8"), "10.0.0.0/8".parse().ok());
        assert_eq!(parse_cidr("fd00::/8"), None);
        assert_eq!(parse_cidr("10.0.0.0/33"), None);
    }

    /// Dual-stack ipBlocks, as a policy written for a dual-stack cluster has them: IPv4 and
    /// IPv6 blocks side by side, an IPv6-only egress rule, and an IPv6 except in an IPv4 block.
    fn dual_stack() -> NetworkPolicy {
        policy(
            "default",
            "dual-stack",
            json!({"podSelector": {"matchLabels": {"app": "server"}},
                   "policyTypes": ["Ingress", "Egress"],
                   "ingress": [{"from": [{"ipBlock": {"cidr": "192.168.0.0/16",
                                                      "except": ["192.168.1.0/24", "fd00:1::/64"]}},
                                         {"ipBlock": {"cidr": "2001:db8::/32",
                                                      "except": ["2001:db8:1::/48"]}}],
                                "ports": [{"port": 80}]}],
                   "egress": [{"to": [{"ipBlock": {"cidr": "::/0"}}]},
                              {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}),
        )
    }

    #[test]
    fn ipv6_ip_blocks_render_as_the_golden_file() {
        let (pods, namespaces) = cluster();
        let text = render(&[dual_stack()], &pods, &namespaces).to_nft(TABLE);
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/policy/ipv6.nft"
        );
        let golden = std::fs::read_to_string(path).unwrap_or_default();
        if text != golden {
            // Left for a person to review and copy over the golden file.
            let _ = std::fs::write(format!("{path}.actual"), &text);
        }
        assert_eq!(text, golden);
    }

    #[test]
    fn ipv6_ip_blocks_allow_no_ipv4_traffic_and_ipv4_ones_beside_them_still_do() {
        let (pods, namespaces) = cluster();
        let rs = render(&[dual_stack()], &pods, &namespaces);
        assert_eq!(
            rules(&rs, "pol_default_dual-stack_ingress"),
            ["ip saddr 192.168.0.0/16 ip saddr != 192.168.1.0/24 meta l4proto tcp th dport 80 accept"]
        );
        // The IPv6-only egress rule allows nothing (it must not become "allow everything").
        assert_eq!(
            rules(&rs, "pol_default_dual-stack_egress"),
            ["ip daddr 10.0.0.0/8 accept"]
        );
        assert_eq!(addrs(&rs, EGRESS_ISOLATED_SET), ["10.42.0.5"]);
    }

    #[test]
    fn the_ignored_ipv6_blocks_are_named_in_order() {
        let spec = dual_stack().spec.unwrap();
        assert_eq!(
            ignored_ipv6_blocks(&spec),
            ["fd00:1::/64", "2001:db8::/32", "2001:db8:1::/48", "::/0"]
        );
        let sample_spec = sample()[2].spec.clone().unwrap();
        assert!(ignored_ipv6_blocks(&sample_spec).is_empty());
        assert!(!is_ipv6_cidr("10.0.0.0/8") && !is_ipv6_cidr("fd00::/129"));
    }

    #[test]
    fn very_long_names_are_shortened_but_stay_unique() {
        let long = "x".repeat(300);
        let a = object_name("pol", &format!("{long}a"), "pods");
        let b = object_name("pol", &format!("{long}b"), "pods");
        assert!(a.len() <= MAX_NAME_LEN && b.len() <= MAX_NAME_LEN);
        assert_ne!(a, b);
        assert!(a.ends_with("_pods"));
    }
}
