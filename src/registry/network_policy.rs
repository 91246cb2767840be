//! Validation of NetworkPolicy as upstream's `ValidateNetworkPolicySpec`: rule ports (protocol,
//! number or name, a range's `endPort`), peers, policy types. A policy the proxy cannot enforce
//! as written (a range that ends before it starts) is refused with a 422 instead of being
//! silently narrowed by the renderer.

use serde_json::Value;

use super::validation::{invalid_number, not_supported};
use crate::api::Cause;

const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];
const POLICY_TYPES: [&str; 2] = ["Ingress", "Egress"];
const PORT_NUMBER: &str = "must be between 1 and 65535, inclusive";

/// Problems with the policy's spec, each with upstream's field path and message.
pub fn validate(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(spec) = obj.get("spec") else {
        return;
    };
    for (direction, peers) in [("ingress", "from"), ("egress", "to")] {
        let rules = spec.get(direction).and_then(Value::as_array);
        for (i, rule) in rules.into_iter().flatten().enumerate() {
            let path = format!("spec.{direction}[{i}]");
            let ports = rule.get("ports").and_then(Value::as_array);
            for (j, port) in ports.into_iter().flatten().enumerate() {
                validate_port(port, &format!("{path}.ports[{j}]"), causes);
            }
            let peers_list = rule.get(peers).and_then(Value::as_array);
            for (j, peer) in peers_list.into_iter().flatten().enumerate() {
                validate_peer(peer, &format!("{path}.{peers}[{j}]"), causes);
            }
        }
    }
    if let Some(types) = spec.get("policyTypes").and_then(Value::as_array) {
        if types.len() > POLICY_TYPES.len() {
            causes.push(Cause {
                reason: "FieldValueInvalid".into(),
                message: "Invalid value: \"...\": may not specify more than two policyTypes".into(),
                field: "spec.policyTypes".into(),
            });
            return;
        }
        for (i, kind) in types.iter().enumerate() {
            let kind = kind.as_str().unwrap_or_default();
            if !POLICY_TYPES.contains(&kind) {
                causes.push(not_supported(
                    &format!("spec.policyTypes[{i}]"),
                    kind,
                    &POLICY_TYPES,
                ));
            }
        }
    }
}

fn validate_port(port: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let Some(protocol) = port.get("protocol").and_then(Value::as_str) {
        if !PROTOCOLS.contains(&protocol) {
            causes.push(not_supported(
                &format!("{path}.protocol"),
                protocol,
                &PROTOCOLS,
            ));
        }
    }
    let end_port = port.get("endPort").and_then(Value::as_i64);
    let end_path = format!("{path}.endPort");
    match port.get("port") {
        Some(Value::Number(number)) => {
            let number = number.as_i64().unwrap_or(0);
            if !(1..=65535).contains(&number) {
                causes.push(invalid_number(&format!("{path}.port"), number, PORT_NUMBER));
            }
            if let Some(end) = end_port {
                if end < number {
                    causes.push(invalid_number(
                        &end_path,
                        end,
                        "must be greater than or equal to `port`",
                    ));
                }
                if !(1..=65535).contains(&end) {
                    causes.push(invalid_number(&end_path, end, PORT_NUMBER));
                }
            }
        }
        Some(Value::String(name)) => {
            if let Some(end) = end_port {
                causes.push(invalid_number(
                    &end_path,
                    end,
                    "may not be specified when `port` is non-numeric",
                ));
            }
            for problem in port_name_problems(name) {
                causes.push(Cause::invalid(&format!("{path}.port"), name, problem));
            }
        }
        _ => {
            if let Some(end) = end_port {
                causes.push(invalid_number(
                    &end_path,
                    end,
                    "may not be specified when `port` is not specified",
                ));
            }
        }
    }
}

/// A peer is one of podSelector and namespaceSelector (together or alone) or an ipBlock.
fn validate_peer(peer: &Value, path: &str, causes: &mut Vec<Cause>) {
    let has = |key: &str| peer.get(key).is_some_and(|v| !v.is_null());
    let kinds = ["podSelector", "namespaceSelector", "ipBlock"]
        .iter()
        .filter(|key| has(key))
        .count();
    if kinds == 0 {
        causes.push(Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value: must specify a peer".into(),
            field: path.into(),
        });
    } else if kinds > 1 && has("ipBlock") {
        causes.push(Cause::forbidden(
            path,
            "may not specify both ipBlock and another peer",
        ));
    }
    if let Some(block) = peer.get("ipBlock").filter(|v| !v.is_null()) {
        if block
            .get("cidr")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            causes.push(Cause::required(&format!("{path}.ipBlock.cidr")));
        }
    }
}

/// Upstream's `IsValidPortName`: an IANA service name.
pub(super) fn port_name_problems(name: &str) -> Vec<&'static str> {
    let mut problems = Vec::new();
    if name.is_empty() || name.len() > 15 {
        problems.push("must be no more than 15 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        problems.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if name.contains("--") {
        problems.push("must not contain consecutive hyphens");
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        problems.push("must contain at least one letter (a-z)");
    }
    if name.starts_with('-') || name.ends_with('-') {
        problems.push("must not begin or end with a hyphen");
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn causes(spec: Value) -> Vec<Cause> {
        let mut out = Vec::new();
        validate(&json!({"spec": spec}), &mut out);
        out
    }

    fn fields(causes: &[Cause]) -> Vec<(&str, &str)> {
        causes
            .iter()
            .map(|c| (c.field.as_str(), c.message.as_str()))
            .collect()
    }

    #[test]
    fn a_port_range_and_a_named_port_are_accepted() {
        let spec = json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": 8000, "endPort": 8010},
                                   {"port": "http"}],
                         "from": [{"podSelector": {}, "namespaceSelector": {}},
                                  {"ipBlock": {"cidr": "10.0.0.0/8"}}]}],
            "egress": [{"ports": [{"protocol": "UDP", "port": 53}]}]});
        assert_eq!(causes(spec), vec![]);
    }

    #[test]
    fn a_range_ending_before_it_starts_or_past_the_last_port_is_invalid() {
        let spec = json!({"ingress": [{"ports": [{"port": 8010, "endPort": 8000}]}],
                          "egress": [{"ports": [{"port": 80, "endPort": 70000}]}]});
        assert_eq!(
            fields(&causes(spec)),
            vec![
                (
                    "spec.ingress[0].ports[0].endPort",
                    "Invalid value: 8000: must be greater than or equal to `port`"
                ),
                (
                    "spec.egress[0].ports[0].endPort",
                    "Invalid value: 70000: must be between 1 and 65535, inclusive"
                ),
            ]
        );
    }

    #[test]
    fn an_end_port_needs_a_numeric_port() {
        let spec = json!({"ingress": [{"ports": [{"port": "http", "endPort": 90},
                                                 {"endPort": 90}]}]});
        assert_eq!(
            fields(&causes(spec)),
            vec![
                (
                    "spec.ingress[0].ports[0].endPort",
                    "Invalid value: 90: may not be specified when `port` is non-numeric"
                ),
                (
                    "spec.ingress[0].ports[1].endPort",
                    "Invalid value: 90: may not be specified when `port` is not specified"
                ),
            ]
        );
    }

    #[test]
    fn bad_protocols_port_numbers_and_port_names_are_reported_where_they_are() {
        let spec = json!({"ingress": [{"ports": [{"protocol": "ICMP", "port": 0},
                                                 {"port": "Web_Port"}]}]});
        let found = causes(spec);
        let found = fields(&found);
        assert_eq!(
            found[0],
            (
                "spec.ingress[0].ports[0].protocol",
                "Unsupported value: \"ICMP\": supported values: \"TCP\", \"UDP\", \"SCTP\""
            )
        );
        assert_eq!(
            found[1],
            (
                "spec.ingress[0].ports[0].port",
                "Invalid value: 0: must be between 1 and 65535, inclusive"
            )
        );
        assert!(found[2..]
            .iter()
            .all(|(f, _)| *f == "spec.ingress[0].ports[1].port"));
        assert!(found
            .iter()
            .any(|(_, m)| m.contains("must contain only alpha-numeric")));
    }

    #[test]
    fn a_peer_is_required_and_an_ip_block_stands_alone() {
        let spec = json!({"ingress": [{"from": [{}, {"ipBlock": {"cidr": "10.0.0.0/8"},
                                                     "podSelector": {}}]}],
                          "policyTypes": ["Ingress", "Sideways"]});
        assert_eq!(
            fields(&causes(spec)),
            vec![
                (
                    "spec.ingress[0].from[0]",
                    "Required value: must specify a peer"
                ),
                (
                    "spec.ingress[0].from[1]",
                    "Forbidden: may not specify both ipBlock and another peer"
                ),
                (
                    "spec.policyTypes[1]",
                    "Unsupported value: \"Sideways\": supported values: \"Ingress\", \"Egress\""
                ),
            ]
        );
    }
}
