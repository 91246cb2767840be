//! Services and EndpointSlices in, the proxy's desired ruleset out. Pure: no kernel, no API.
//!
//! Layout (names are stable, so a change to one Service only touches its own chains and its
//! elements in the shared maps):
//! - `proxy-prerouting` / `proxy-output` (nat, dstnat) jump to `proxy-dispatch`, which looks the
//!   destination up in `proxy-services` (cluster IP or LoadBalancer address . proto . port) and,
//!   for this node's addresses, in `proxy-nodeports` (proto . node port).
//! - `svc_<ns>_<name>_<proto>_<port>` balances over the ready endpoints with `numgen random`;
//!   `svl_...` does the same over this node's endpoints only (the `Local` traffic policies);
//!   `ext_...` is the entry for NodePort/LoadBalancer traffic; `ep_..._<ip>_<port>` DNATs.
//! - Services without endpoints are in `proxy-no-endpoints` / `proxy-no-endpoint-nodeports`;
//!   the filter chains reject new connections to them so clients fail fast.
//! - Traffic marked with [`MASQUERADE_MARK`] (from outside the pod network, hairpin, or
//!   external via NodePort with policy Cluster) is masqueraded in `proxy-postrouting`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::model::*;
use crate::network::cidr::Ipv4Cidr;

pub const DISPATCH_CHAIN: &str = "proxy-dispatch";
pub const MARK_CHAIN: &str = "proxy-mark-masquerade";
pub const CHECK_CHAIN: &str = "proxy-endpoints-check";
pub const SERVICES_MAP: &str = "proxy-services";
pub const NODEPORTS_MAP: &str = "proxy-nodeports";
pub const NO_ENDPOINTS_SET: &str = "proxy-no-endpoints";
pub const NO_ENDPOINT_NODEPORTS_SET: &str = "proxy-no-endpoint-nodeports";
pub const NODE_IPS_SET: &str = "proxy-node-ips";
/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Kubernetes' default ClientIP affinity timeout: three hours.
const DEFAULT_AFFINITY_SECS: u64 = 10800;
/// nftables' limit on chain and set names, minus room for the kernel's terminating NUL.
const MAX_NAME_LEN: usize = 255;

/// What the renderer needs to know about this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    pub node_name: String,
    /// Addresses NodePorts and LoadBalancer services answer on.
    pub node_ips: Vec<Ipv4Addr>,
    /// The cluster's pod network: service traffic from outside it is masqueraded.
    pub cluster_cidr: Ipv4Cidr,
}

/// One backend of one service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Backend {
    addr: Ipv4Addr,
    port: u16,
    local: bool,
    ready: bool,
    /// Serving while terminating: used only when nothing is ready.
    fallback: bool,
}

/// The whole desired ruleset.
pub fn render(services: &[Service], slices: &[EndpointSlice], config: &ProxyConfig) -> Ruleset {
    let mut rs = skeleton(config);
    let by_service = slices_by_service(slices);
    let none = Vec::new();
    for service in services {
        let key = (
            service.metadata.namespace.as_deref().unwrap_or("default"),
            service.metadata.name.as_deref().unwrap_or(""),
        );
        let slices = by_service.get(&key).unwrap_or(&none);
        render_service(&mut rs, service, slices, config);
    }
    rs
}

/// What one Service adds to the ruleset: its own chains and sets, and its elements in the
/// shared maps (which are present, possibly empty, so two fragments diff element by element).
/// The skeleton merged with every Service's fragment is [`render`]'s result.
pub fn render_fragment(
    service: &Service,
    slices: &[&EndpointSlice],
    config: &ProxyConfig,
) -> Ruleset {
    let mut rs = shared_sets();
    render_service(&mut rs, service, slices, config);
    rs
}

/// The fixed chains and shared maps that belong to no Service.
pub fn render_skeleton(config: &ProxyConfig) -> Ruleset {
    skeleton(config)
}

/// The shared maps and sets with no elements: the common ground two fragments are diffed on.
pub fn shared_sets() -> Ruleset {
    let mut rs = Ruleset::default();
    for (name, set) in shared_set_definitions() {
        rs.sets.insert(name.into(), set);
    }
    rs
}

fn shared_set_definitions() -> [(&'static str, Set); 5] {
    [
        (SERVICES_MAP, Set::map(KeyType::Destination)),
        (NODEPORTS_MAP, Set::map(KeyType::ProtoPort)),
        (NO_ENDPOINTS_SET, Set::plain(KeyType::Destination)),
        (NO_ENDPOINT_NODEPORTS_SET, Set::plain(KeyType::ProtoPort)),
        (NODE_IPS_SET, Set::plain(KeyType::Addr)),
    ]
}

/// Adds `fragment` to `into`; in a shared map the key claimed first keeps its value, as in
/// [`render`].
pub fn merge(into: &mut Ruleset, fragment: &Ruleset) {
    for (name, chain) in &fragment.chains {
        into.chains.insert(name.clone(), chain.clone());
    }
    for (name, set) in &fragment.sets {
        match into.sets.get_mut(name) {
            Some(existing) => {
                for (key, value) in &set.elements {
                    existing
                        .elements
                        .entry(*key)
                        .or_insert_with(|| value.clone());
                }
            }
            None => {
                into.sets.insert(name.clone(), set.clone());
            }
        }
    }
}

/// The (namespace, name) of the Service an EndpointSlice belongs to, if it is one the proxy
/// reads (IPv4, labelled with its Service).
pub fn slice_service(slice: &EndpointSlice) -> Option<(String, String)> {
    if slice.address_type != "IPv4" {
        return None;
    }
    let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    let namespace = slice.metadata.namespace.as_deref().unwrap_or("default");
    Some((namespace.to_string(), service.clone()))
}

/// IPv4 EndpointSlices by (namespace, service name), so rendering stays linear in the number
/// of slices however many services there are.
fn slices_by_service(slices: &[EndpointSlice]) -> BTreeMap<(&str, &str), Vec<&EndpointSlice>> {
    let mut by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let namespace = slice.metadata.namespace.as_deref().unwrap_or("default");
        by_service
            .entry((namespace, service.as_str()))
            .or_default()
            .push(slice);
    }
    by_service
}

/// The fixed chains and the shared maps, empty.
fn skeleton(config: &ProxyConfig) -> Ruleset {
    let mut rs = Ruleset::default();
    let nat = |hook, priority| BaseChain {
        kind: ChainKind::Nat,
        hook,
        priority,
    };
    let filter = |hook| BaseChain {
        kind: ChainKind::Filter,
        hook,
        // Just before the default filter priority, so other filter chains see DNATed traffic
        // only for services that have endpoints.
        priority: -1,
    };
    let jump_dispatch = vec![Rule(vec![Stmt::Jump(DISPATCH_CHAIN.into())])];
    rs.chains.insert(
        "proxy-prerouting".into(),
        base_chain(nat(HookPoint::Prerouting, -100), jump_dispatch.clone()),
    );
    rs.chains.insert(
        "proxy-output".into(),
        base_chain(nat(HookPoint::Output, -100), jump_dispatch),
    );
    rs.chains.insert(
        "proxy-postrouting".into(),
        base_chain(
            nat(HookPoint::Postrouting, 100),
            vec![Rule(vec![Stmt::HasMasqueradeMark, Stmt::Masquerade])],
        ),
    );
    let check = vec![Rule(vec![Stmt::CtStateNew, Stmt::Jump(CHECK_CHAIN.into())])];
    for (name, hook) in [
        ("proxy-filter-input", HookPoint::Input),
        ("proxy-filter-forward", HookPoint::Forward),
        ("proxy-filter-output", HookPoint::Output),
    ] {
        rs.chains
            .insert(name.into(), base_chain(filter(hook), check.clone()));
    }
    rs.chains.insert(
        DISPATCH_CHAIN.into(),
        chain(vec![
            Rule(vec![Stmt::DestinationVmap(SERVICES_MAP.into())]),
            Rule(vec![
                Stmt::DaddrInSet(NODE_IPS_SET.into()),
                Stmt::ProtoPortVmap(NODEPORTS_MAP.into()),
            ]),
        ]),
    );
    rs.chains.insert(
        MARK_CHAIN.into(),
        chain(vec![Rule(vec![Stmt::SetMasqueradeMark])]),
    );
    rs.chains.insert(
        CHECK_CHAIN.into(),
        chain(vec![
            Rule(vec![
                Stmt::DestinationInSet(NO_ENDPOINTS_SET.into()),
                Stmt::Reject,
            ]),
            Rule(vec![
                Stmt::DaddrInSet(NODE_IPS_SET.into()),
                Stmt::ProtoPortInSet(NO_ENDPOINT_NODEPORTS_SET.into()),
                Stmt::Reject,
            ]),
        ]),
    );
    for (name, set) in shared_set_definitions() {
        rs.sets.insert(name.into(), set);
    }
    if let Some(node_ips) = rs.sets.get_mut(NODE_IPS_SET) {
        for ip in &config.node_ips {
            node_ips.elements.insert(Key::Addr(*ip), None);
        }
    }
    rs
}

fn base_chain(base: BaseChain, rules: Vec<Rule>) -> Chain {
    Chain {
        base: Some(base),
        rules,
    }
}

fn chain(rules: Vec<Rule>) -> Chain {
    Chain { base: None, rules }
}

/// True for Services the proxy programs: not ExternalName, not headless.
pub fn is_proxied(service: &Service) -> bool {
    let Some(spec) = &service.spec else {
        return false;
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return false;
    }
    cluster_ip(service).is_some()
}

fn cluster_ip(service: &Service) -> Option<Ipv4Addr> {
    service
        .spec
        .as_ref()?
        .cluster_ip
        .as_deref()?
        .parse::<Ipv4Addr>()
        .ok()
}

fn render_service(
    rs: &mut Ruleset,
    service: &Service,
    slices: &[&EndpointSlice],
    config: &ProxyConfig,
) {
    if !is_proxied(service) {
        return;
    }
    let (Some(spec), Some(cluster_ip)) = (&service.spec, cluster_ip(service)) else {
        return;
    };
    let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
    let Some(name) = service.metadata.name.as_deref() else {
        return;
    };
    let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    let external = matches!(service_type, "NodePort" | "LoadBalancer");
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let affinity_secs = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .unwrap_or(DEFAULT_AFFINITY_SECS)
    });

    for port in spec.ports.iter().flatten() {
        let Some(proto) = Proto::from_kubernetes(port.protocol.as_deref()) else {
            continue;
        };
        let Ok(service_port) = u16::try_from(port.port) else {
            continue;
        };
        let id = format!("{namespace}_{name}_{}_{service_port}", proto.nft());
        let backends = backends(slices, port.name.as_deref(), proto, config);
        let cluster = usable(&backends, |_| true);
        let local = usable(&backends, |b| b.local);

        let svc_chain = chain_name("svc", &id);
        let svl_chain = chain_name("svl", &id);
        let ext_chain = chain_name("ext", &id);
        let mut uses_svc = false;
        let mut uses_svl = false;

        // Traffic to the cluster IP.
        let internal = if internal_local { &local } else { &cluster };
        let key = Key::Destination(cluster_ip, proto, service_port);
        if internal.is_empty() {
            insert_element(rs, NO_ENDPOINTS_SET, key, None);
        } else {
            let target = if internal_local {
                &svl_chain
            } else {
                &svc_chain
            };
            uses_svc |= !internal_local;
            uses_svl |= internal_local;
            insert_element(rs, SERVICES_MAP, key, Some(target.clone()));
        }

        // Traffic from outside: node ports, and the node's addresses as LoadBalancer ingress.
        if external {
            let reachable = if external_local { &local } else { &cluster };
            let mut keys = Vec::new();
            let node_port = port
                .node_port
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0);
            if let Some(node_port) = node_port {
                keys.push((
                    NODEPORTS_MAP,
                    NO_ENDPOINT_NODEPORTS_SET,
                    Key::ProtoPort(proto, node_port),
                ));
            }
            if service_type == "LoadBalancer" {
                for ip in &config.node_ips {
                    keys.push((
                        SERVICES_MAP,
                        NO_ENDPOINTS_SET,
                        Key::Destination(*ip, proto, service_port),
                    ));
                }
            }
            for (map, empty_set, key) in keys {
                if reachable.is_empty() {
                    insert_element(rs, empty_set, key, None);
                } else {
                    insert_element(rs, map, key, Some(ext_chain.clone()));
                }
            }
            if !reachable.is_empty() {
                let rules = if external_local {
                    uses_svl = true;
                    // Keep the client's address: no masquerade, only this node's endpoints.
                    vec![Rule(vec![Stmt::Goto(svl_chain.clone())])]
                } else {
                    uses_svc = true;
                    vec![
                        Rule(vec![Stmt::Jump(MARK_CHAIN.into())]),
                        Rule(vec![Stmt::Goto(svc_chain.clone())]),
                    ]
                };
                rs.chains.insert(ext_chain.clone(), chain(rules));
            }
        }

        let mut endpoint_chains = BTreeSet::new();
        if uses_svc {
            let mut rules = vec![Rule(vec![
                Stmt::Saddr {
                    cidr: config.cluster_cidr,
                    negate: true,
                },
                Stmt::Jump(MARK_CHAIN.into()),
            ])];
            rules.extend(balance(&id, &cluster, affinity_secs.is_some()));
            rs.chains.insert(svc_chain, chain(rules));
            endpoint_chains.extend(cluster.iter().cloned());
        }
        if uses_svl {
            rs.chains.insert(
                svl_chain,
                chain(balance(&id, &local, affinity_secs.is_some())),
            );
            endpoint_chains.extend(local.iter().cloned());
        }
        for backend in endpoint_chains {
            let ep_id = endpoint_id(&id, &backend);
            let mut rules = vec![Rule(vec![
                // Hairpin: a pod reaching itself through its service must see the reply come
                // from the service, so its own address is swapped for the node's.
                Stmt::Saddr {
                    cidr: host_cidr(backend.addr),
                    negate: false,
                },
                Stmt::Jump(MARK_CHAIN.into()),
            ])];
            if let Some(secs) = affinity_secs {
                let set_name = chain_name("aff", &ep_id);
                let mut set = Set::plain(KeyType::Addr);
                set.dynamic_timeout_secs = Some(secs);
                rs.sets.insert(set_name.clone(), set);
                rules.push(Rule(vec![Stmt::UpdateSaddr(set_name)]));
            }
            rules.push(Rule(vec![Stmt::Dnat {
                proto,
                addr: backend.addr,
                port: backend.port,
            }]));
            rs.chains.insert(chain_name("ep", &ep_id), chain(rules));
        }
    }
}

/// Affinity first (a client seen recently goes back to its endpoint), then a random pick.
fn balance(id: &str, backends: &[Backend], affinity: bool) -> Vec<Rule> {
    let mut rules = Vec::new();
    let targets: Vec<String> = backends
        .iter()
        .map(|b| chain_name("ep", &endpoint_id(id, b)))
        .collect();
    if affinity {
        for (backend, target) in backends.iter().zip(&targets) {
            rules.push(Rule(vec![
                Stmt::SaddrInSet(chain_name("aff", &endpoint_id(id, backend))),
                Stmt::Goto(target.clone()),
            ]));
        }
    }
    rules.push(Rule(vec![Stmt::RandomVmap(targets)]));
    rules
}

fn endpoint_id(service_id: &str, backend: &Backend) -> String {
    format!("{service_id}__{}_{}", backend.addr, backend.port)
}

fn chain_name(prefix: &str, id: &str) -> String {
    let name = format!("{prefix}_{id}");
    if name.len() <= MAX_NAME_LEN {
        return name;
    }
    // Kubernetes names can add up to more than nftables allows; keep a readable head and make
    // the rest unique.
    use sha2::{Digest, Sha256};
    let digest = hex::encode(&Sha256::digest(name.as_bytes())[..8]);
    let mut head: String = name.chars().take(MAX_NAME_LEN - 17).collect();
    head.push('_');
    head.push_str(&digest);
    head
}

fn host_cidr(addr: Ipv4Addr) -> Ipv4Cidr {
    // A /32 is always valid.
    Ipv4Cidr::new(addr, 32).unwrap_or_else(|_| unreachable!())
}

fn insert_element(rs: &mut Ruleset, set: &str, key: Key, target: Option<String>) {
    if let Some(set) = rs.sets.get_mut(set) {
        // The first Service (in the caller's order) to claim a key keeps it.
        set.elements.entry(key).or_insert(target);
    }
}

/// Ready backends, or when none is ready the ones still serving while terminating.
fn usable(backends: &[Backend], filter: impl Fn(&Backend) -> bool) -> Vec<Backend> {
    let ready: Vec<Backend> = backends
        .iter()
        .filter(|b| filter(b) && b.ready)
        .cloned()
        .collect();
    if !ready.is_empty() {
        return ready;
    }
    backends
        .iter()
        .filter(|b| filter(b) && b.fallback)
        .cloned()
        .collect()
}

/// The endpoints of one service port, from every slice of the service, deduplicated.
fn backends(
    slices: &[&EndpointSlice],
    port_name: Option<&str>,
    proto: Proto,
    config: &ProxyConfig,
) -> Vec<Backend> {
    let mut found = BTreeMap::new();
    let port_name = port_name.unwrap_or("");
    for slice in slices {
        let Some(port) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name
                && Proto::from_kubernetes(p.protocol.as_deref()) == Some(proto)
        }) else {
            continue;
        };
        let Some(port) = port.port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.as_ref();
            // Unset conditions mean ready/serving, per the EndpointSlice API.
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            let local = endpoint.node_name.as_deref() == Some(config.node_name.as_str());
            for addr in &endpoint.addresses {
                let Ok(addr) = addr.parse::<Ipv4Addr>() else {
                    continue;
                };
                found.entry((addr, port)).or_insert(Backend {
                    addr,
                    port,
                    local,
                    ready: ready && !terminating,
                    fallback: serving && terminating,
                });
            }
        }
    }
    found.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::proxy::netlink::{diff, Stale};
    use serde_json::json;

    fn config() -> ProxyConfig {
        ProxyConfig {
            node_name: "node-1".into(),
            node_ips: vec![Ipv4Addr::new(192, 168, 1, 10)],
            cluster_cidr: "10.42.0.0/16".parse().unwrap(),
        }
    }

    fn service(name: &str, spec: serde_json::Value) -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec}),
        )
        .unwrap()
    }

    fn endpoint(ip: &str, node: &str, ready: bool, terminating: bool) -> serde_json::Value {
        json!({"addresses": [ip], "nodeName": node,
               "conditions": {"ready": ready, "serving": true, "terminating": terminating}})
    }

    fn slice(service: &str, port: u16, endpoints: Vec<serde_json::Value>) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{service}-x"), "namespace": "default",
                         "labels": {SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        }))
        .unwrap()
    }

    fn http(port: u16) -> serde_json::Value {
        json!([{"name": "http", "port": port, "protocol": "TCP"}])
    }

    /// Every feature once: balancing, terminating fallback, no endpoints, NodePort with policy
    /// Local, LoadBalancer, ClientIP affinity, internal policy Local, headless, ExternalName.
    fn sample() -> (Vec<Service>, Vec<EndpointSlice>) {
        let services = vec![
            service("web", json!({"clusterIP": "10.43.0.20", "ports": http(80)})),
            service(
                "draining",
                json!({"clusterIP": "10.43.0.21", "ports": http(80)}),
            ),
            service(
                "empty",
                json!({"clusterIP": "10.43.0.22", "ports": http(80)}),
            ),
            service(
                "np",
                json!({"clusterIP": "10.43.0.23", "type": "NodePort",
                "externalTrafficPolicy": "Local",
                "ports": [{"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP"}]}),
            ),
            service(
                "lb",
                json!({"clusterIP": "10.43.0.24", "type": "LoadBalancer",
                "sessionAffinity": "ClientIP",
                "ports": [{"name": "http", "port": 8443, "nodePort": 30443, "protocol": "TCP"}]}),
            ),
            service(
                "local",
                json!({"clusterIP": "10.43.0.25", "internalTrafficPolicy": "Local",
                "ports": http(80)}),
            ),
            service("headless", json!({"clusterIP": "None", "ports": http(80)})),
            service(
                "external",
                json!({"type": "ExternalName", "externalName": "example.org"}),
            ),
        ];
        let slices = vec![
            slice(
                "web",
                8080,
                vec![
                    endpoint("10.42.0.5", "node-1", true, false),
                    endpoint("10.42.1.6", "node-2", true, false),
                    endpoint("10.42.0.7", "node-1", false, true),
                ],
            ),
            slice(
                "draining",
                8080,
                vec![endpoint("10.42.0.8", "node-1", false, true)],
            ),
            slice(
                "np",
                8080,
                vec![
                    endpoint("10.42.0.9", "node-1", true, false),
                    endpoint("10.42.1.9", "node-2", true, false),
                ],
            ),
            slice(
                "lb",
                443,
                vec![endpoint("10.42.0.10", "node-1", true, false)],
            ),
            slice(
                "local",
                8080,
                vec![endpoint("10.42.1.11", "node-2", true, false)],
            ),
            slice(
                "headless",
                8080,
                vec![endpoint("10.42.0.12", "node-1", true, false)],
            ),
        ];
        (services, slices)
    }

    #[test]
    fn the_sample_cluster_renders_as_the_golden_file() {
        let (services, slices) = sample();
        let text = render(&services, &slices, &config()).to_nft("berth");
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/proxy/sample.nft"
        );
        let golden = std::fs::read_to_string(path).unwrap_or_default();
        if text != golden {
            // Left for a person to review and copy over the golden file.
            let _ = std::fs::write(format!("{path}.actual"), &text);
        }
        assert_eq!(text, golden);
    }

    #[test]
    fn only_ready_endpoints_are_balanced_and_terminating_ones_only_when_none_is_ready() {
        let (services, slices) = sample();
        let rs = render(&services, &slices, &config());
        let web = rs.chains["svc_default_web_tcp_80"]
            .rules
            .last()
            .unwrap()
            .to_nft();
        assert!(web.starts_with("numgen random mod 2 vmap"), "{web}");
        assert!(!web.contains("10.42.0.7"));
        let draining = rs.chains["svc_default_draining_tcp_80"]
            .rules
            .last()
            .unwrap()
            .to_nft();
        assert!(
            draining.contains("ep_default_draining_tcp_80__10.42.0.8_8080"),
            "{draining}"
        );
    }

    #[test]
    fn a_service_without_endpoints_is_rejected_instead_of_routed() {
        let (services, slices) = sample();
        let rs = render(&services, &slices, &config());
        let key = Key::Destination(Ipv4Addr::new(10, 43, 0, 22), Proto::Tcp, 80);
        assert!(rs.sets[NO_ENDPOINTS_SET].elements.contains_key(&key));
        assert!(!rs.sets[SERVICES_MAP].elements.contains_key(&key));
        assert!(!rs.chains.contains_key("svc_default_empty_tcp_80"));
    }

    #[test]
    fn headless_and_external_name_services_get_no_rules() {
        let (services, slices) = sample();
        let rs = render(&services, &slices, &config());
        assert!(!rs
            .chains
            .keys()
            .any(|c| c.contains("headless") || c.contains("external")));
    }

    #[test]
    fn internal_traffic_policy_local_without_local_endpoints_rejects() {
        let (services, slices) = sample();
        let rs = render(&services, &slices, &config());
        let key = Key::Destination(Ipv4Addr::new(10, 43, 0, 25), Proto::Tcp, 80);
        assert!(rs.sets[NO_ENDPOINTS_SET].elements.contains_key(&key));
    }

    #[test]
    fn external_traffic_policy_local_keeps_the_source_and_uses_local_endpoints_only() {
        let (services, slices) = sample();
        let rs = render(&services, &slices, &config());
        let ext = &rs.chains["ext_default_np_tcp_80"].rules;
        assert_eq!(ext.len(), 1);
        assert_eq!(ext[0].to_nft(), "goto svl_default_np_tcp_80");
        let svl = rs.chains["svl_default_np_tcp_80"].rules[0].to_nft();
        assert!(
            svl.contains("10.42.0.9") && !svl.contains("10.42.1.9"),
            "{svl}"
        );
    }

    #[test]
    fn a_load_balancer_answers_on_the_node_address_with_client_affinity() {
        let (services, slices) = sample();
        let rs = render(&services, &slices, &config());
        let key = Key::Destination(Ipv4Addr::new(192, 168, 1, 10), Proto::Tcp, 8443);
        assert_eq!(
            rs.sets[SERVICES_MAP].elements[&key].as_deref(),
            Some("ext_default_lb_tcp_8443")
        );
        let aff = &rs.sets["aff_default_lb_tcp_8443__10.42.0.10_443"];
        assert_eq!(aff.dynamic_timeout_secs, Some(10800));
    }

    #[test]
    fn one_endpoint_change_touches_only_that_services_chains_and_elements() {
        let (services, mut slices) = sample();
        let before = render(&services, &slices, &config());
        slices[0] = slice(
            "web",
            8080,
            vec![endpoint("10.42.0.5", "node-1", true, false)],
        );
        let after = render(&services, &slices, &config());
        let batch = diff("berth", &before, &after, &Stale::default());
        // Flush and refill svc_default_web (1 + 2 rules, the numgen rule's anonymous map and its
        // elements), flush and delete the gone endpoint's chain. Nothing else.
        assert_eq!(batch.messages(), 7);
        assert_eq!(
            diff("berth", &after, &after, &Stale::default()).messages(),
            0
        );
    }

    fn fragments(services: &[Service], slices: &[EndpointSlice]) -> Vec<Ruleset> {
        services
            .iter()
            .map(|service| {
                let name = service.metadata.name.as_deref().unwrap();
                let own: Vec<&EndpointSlice> = slices
                    .iter()
                    .filter(|s| slice_service(s).is_some_and(|(_, n)| n == name))
                    .collect();
                render_fragment(service, &own, &config())
            })
            .collect()
    }

    #[test]
    fn the_skeleton_merged_with_every_services_fragment_is_the_full_render() {
        let (services, slices) = sample();
        let mut whole = render_skeleton(&config());
        for fragment in fragments(&services, &slices) {
            merge(&mut whole, &fragment);
        }
        assert_eq!(whole, render(&services, &slices, &config()));
    }

    #[test]
    fn diffing_one_services_fragments_sends_what_diffing_the_whole_table_sends() {
        let (services, mut slices) = sample();
        let before_all = render(&services, &slices, &config());
        let before = fragments(&services[..1], &slices).remove(0);
        slices[0] = slice(
            "web",
            8080,
            vec![endpoint("10.42.0.5", "node-1", true, false)],
        );
        let after_all = render(&services, &slices, &config());
        let after = fragments(&services[..1], &slices).remove(0);
        let whole = diff("berth", &before_all, &after_all, &Stale::default()).finish();
        let partial = diff("berth", &before, &after, &Stale::default()).finish();
        assert_eq!(partial, whole);
    }

    #[test]
    fn a_service_losing_its_endpoints_moves_from_the_services_map_to_the_reject_set() {
        let (services, slices) = sample();
        let before = fragments(&services[..1], &slices).remove(0);
        let after = render_fragment(&services[0], &[], &config());
        let key = Key::Destination(Ipv4Addr::new(10, 43, 0, 20), Proto::Tcp, 80);
        assert!(before.sets[SERVICES_MAP].elements.contains_key(&key));
        assert!(after.sets[NO_ENDPOINTS_SET].elements.contains_key(&key));
        assert!(after.chains.is_empty(), "{:?}", after.chains.keys());
        // Shared maps are diffed element by element, never recreated.
        let (_, subjects) = diff("berth", &before, &after, &Stale::default()).finish();
        let elements: Vec<&String> = subjects
            .iter()
            .filter(|s| s.starts_with("elements of"))
            .collect();
        assert_eq!(
            elements,
            [
                "elements of proxy-no-endpoints (delete: false)",
                "elements of proxy-services (delete: true)",
            ],
            "{subjects:?}"
        );
        // NFT_MSG_NEWSET and NFT_MSG_DELSET: no set is created or deleted.
        assert!(
            !subjects
                .iter()
                .any(|s| s.starts_with("add set") || s == "message type 11"),
            "{subjects:?}"
        );
    }
}
