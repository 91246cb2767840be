//! Pods' `ports[].hostPort` as DNAT rules in table `ip berth-hostports`. Pure: no kernel.
//!
//! `hostport-prerouting` (traffic arriving at the node) and `hostport-output` (the node
//! itself connecting to its own address) look `ip daddr . meta l4proto . th dport` up in map
//! `hostports`, which sends it to the pod's `hp_...` chain and its `dnat`. Port conflicts are
//! the scheduler's to prevent; should two pods claim one, the first (by namespace and name)
//! keeps it.
//!
//! A host port without a `hostIP` also answers on 127.0.0.1 from the node, as upstream's
//! portmap plugin does: the DNATed packet keeps its loopback source, which the kernel routes
//! out of the bridge only with `route_localnet` set there (the node network sets it), and
//! `hostport-postrouting` masquerades it so the pod can answer. `route_localnet` would also let
//! a pod reach the node's loopback services by sending to 127.0.0.1 through its gateway
//! (CVE-2020-8558), so `hostport-localnet-guard` drops packets for 127.0.0.0/8 that did not
//! arrive on loopback, as kube-proxy does.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Pod;

use crate::network::cidr::Ipv4Cidr;
use crate::network::proxy::model::*;

/// The host port table, family `ip`.
pub const TABLE: &str = "berth-hostports";
pub const MAP: &str = "hostports";
/// Before the service proxy's dstnat chains (-100), so a host port wins over a NodePort.
const PRIORITY: i32 = -101;
/// The raw priority: before conntrack and NAT, so only packets as they arrived are judged.
const GUARD_PRIORITY: i32 = -300;
/// The source NAT priority.
const POSTROUTING_PRIORITY: i32 = 100;

/// True for the names this table's applier created.
pub fn is_hostport_object(name: &str) -> bool {
    name.starts_with("hostport") || name.starts_with("hp_")
}

/// The desired ruleset for the pods bound to `node_name`, reachable on `node_ips`.
pub fn render(pods: &[Pod], node_name: &str, node_ips: &[Ipv4Addr]) -> Ruleset {
    let mut rs = Ruleset::default();
    let dispatch = vec![Rule(vec![Stmt::DestinationVmap(MAP.into())])];
    for (name, hook) in [
        ("hostport-prerouting", HookPoint::Prerouting),
        ("hostport-output", HookPoint::Output),
    ] {
        let base = BaseChain {
            kind: ChainKind::Nat,
            hook,
            priority: PRIORITY,
        };
        rs.chains.insert(
            name.into(),
            Chain {
                base: Some(base),
                rules: dispatch.clone(),
            },
        );
    }
    let loopback = Ipv4Cidr::new(Ipv4Addr::new(127, 0, 0, 0), 8).unwrap_or_else(|_| unreachable!());
    rs.chains.insert(
        "hostport-postrouting".into(),
        Chain {
            base: Some(BaseChain {
                kind: ChainKind::Nat,
                hook: HookPoint::Postrouting,
                priority: POSTROUTING_PRIORITY,
            }),
            // Only what leaves loopback (a DNATed hostPort packet on its way to a pod):
            // masquerading loopback-to-loopback traffic would rewrite every local connection,
            // the API server's own clients among them.
            rules: vec![Rule(vec![
                Stmt::Saddr {
                    cidr: loopback,
                    negate: false,
                },
                Stmt::OifNotLoopback,
                Stmt::Masquerade,
            ])],
        },
    );
    rs.chains.insert(
        "hostport-localnet-guard".into(),
        Chain {
            base: Some(BaseChain {
                kind: ChainKind::Filter,
                hook: HookPoint::Prerouting,
                priority: GUARD_PRIORITY,
            }),
            rules: vec![Rule(vec![
                Stmt::IifNotLoopback,
                Stmt::Daddr {
                    cidr: loopback,
                    negate: false,
                },
                Stmt::Drop,
            ])],
        },
    );
    let mut map = Set::map(KeyType::Destination);

    let mut sorted: Vec<&Pod> = pods.iter().collect();
    sorted.sort_by_key(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()));
    for pod in sorted {
        let (Some(spec), Some(status)) = (&pod.spec, &pod.status) else {
            continue;
        };
        // A host-network pod listens on the node's ports itself.
        if spec.node_name.as_deref() != Some(node_name) || spec.host_network == Some(true) {
            continue;
        }
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            continue;
        }
        let Some(pod_ip) = status
            .pod_ip
            .as_deref()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or("");
        for port in spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
        {
            let Some(host_port) = port
                .host_port
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
            else {
                continue;
            };
            let (Some(proto), Ok(container_port)) = (
                Proto::from_kubernetes(port.protocol.as_deref()),
                u16::try_from(port.container_port),
            ) else {
                continue;
            };
            let addresses: Vec<Ipv4Addr> = match port.host_ip.as_deref() {
                None | Some("" | "0.0.0.0") => node_ips
                    .iter()
                    .copied()
                    .chain(std::iter::once(Ipv4Addr::LOCALHOST))
                    .collect(),
                Some(ip) => match ip.parse::<Ipv4Addr>() {
                    Ok(ip) => vec![ip],
                    Err(_) => continue,
                },
            };
            let chain_name = format!("hp_{namespace}_{name}_{}_{host_port}", proto.nft());
            let mut claimed = false;
            for address in addresses {
                let key = Key::Destination(address, proto, host_port);
                if let std::collections::btree_map::Entry::Vacant(slot) = map.elements.entry(key) {
                    slot.insert(Some(chain_name.clone()));
                    claimed = true;
                }
            }
            if claimed {
                rs.chains.insert(
                    chain_name,
                    Chain {
                        base: None,
                        rules: vec![Rule(vec![Stmt::Dnat {
                            proto,
                            addr: pod_ip,
                            port: container_port,
                        }])],
                    },
                );
            }
        }
    }
    rs.sets.insert(MAP.into(), map);
    rs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: &str, ip: &str, ports: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x", "ports": ports}]},
            "status": {"phase": "Running", "podIP": ip},
        }))
        .unwrap()
    }

    fn node_ips() -> Vec<Ipv4Addr> {
        vec![Ipv4Addr::new(192, 168, 1, 10), Ipv4Addr::new(10, 0, 0, 2)]
    }

    #[test]
    fn the_sample_renders_as_the_golden_file() {
        let pods = vec![
            pod(
                "web",
                "node-1",
                "10.42.0.5",
                json!([{"containerPort": 80, "hostPort": 8080},
                       {"containerPort": 53, "hostPort": 5353, "protocol": "UDP",
                        "hostIP": "10.0.0.2"},
                       {"containerPort": 9000}]),
            ),
            pod(
                "elsewhere",
                "node-2",
                "10.42.1.5",
                json!([{"containerPort": 80, "hostPort": 8081}]),
            ),
        ];
        let text = render(&pods, "node-1", &node_ips()).to_nft(TABLE);
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/policy/hostports.nft"
        );
        let golden = std::fs::read_to_string(path).unwrap_or_default();
        if text != golden {
            let _ = std::fs::write(format!("{path}.actual"), &text);
        }
        assert_eq!(text, golden);
    }

    #[test]
    fn a_host_port_dnats_every_node_address_and_loopback_to_the_pod() {
        let pods = vec![pod(
            "web",
            "node-1",
            "10.42.0.5",
            json!([{"containerPort": 80, "hostPort": 8080}]),
        )];
        let rs = render(&pods, "node-1", &node_ips());
        for ip in node_ips().into_iter().chain([Ipv4Addr::LOCALHOST]) {
            let key = Key::Destination(ip, Proto::Tcp, 8080);
            assert_eq!(
                rs.sets[MAP].elements[&key].as_deref(),
                Some("hp_default_web_tcp_8080")
            );
        }
        assert_eq!(
            rs.chains["hp_default_web_tcp_8080"].rules[0].to_nft(),
            "meta l4proto tcp dnat to 10.42.0.5:80"
        );
    }

    #[test]
    fn the_first_pod_keeps_a_contested_port_and_the_second_gets_no_chain() {
        let pods = vec![
            pod(
                "b",
                "node-1",
                "10.42.0.6",
                json!([{"containerPort": 80, "hostPort": 8080}]),
            ),
            pod(
                "a",
                "node-1",
                "10.42.0.5",
                json!([{"containerPort": 80, "hostPort": 8080}]),
            ),
        ];
        let rs = render(&pods, "node-1", &node_ips());
        assert!(rs.chains.contains_key("hp_default_a_tcp_8080"));
        assert!(!rs.chains.contains_key("hp_default_b_tcp_8080"));
    }

    #[test]
    fn pods_without_an_address_yet_or_finished_get_no_rules() {
        let mut waiting = pod(
            "w",
            "node-1",
            "",
            json!([{"containerPort": 80, "hostPort": 1}]),
        );
        waiting.status.as_mut().unwrap().pod_ip = None;
        let mut done = pod(
            "d",
            "node-1",
            "10.42.0.9",
            json!([{"containerPort": 80, "hostPort": 2}]),
        );
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let rs = render(&[waiting, done], "node-1", &node_ips());
        assert!(rs.sets[MAP].elements.is_empty());
        assert_eq!(rs.chains.len(), 4);
    }
}
