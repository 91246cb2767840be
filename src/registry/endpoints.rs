//! Validation of Endpoints and EndpointSlices, as upstream's: addresses must be IPs a Service
//! can send to (or, in an FQDN slice, domain names), ports in range with known protocols.
//! The service proxy programs these addresses into the node's rules, so what cannot be an
//! endpoint is refused here, with upstream's field paths and words, instead of being skipped
//! later without a word.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde_json::Value;

use super::validation::{duplicate, invalid_number, not_supported};
use crate::api::{go_ip, meta, Cause};

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
/// Still accepted on update, for slices stored before it was retired.
const DEPRECATED_ADDRESS_TYPE: &str = "IP";
const MAX_SLICE_ENDPOINTS: usize = 1000;
const MAX_ENDPOINT_ADDRESSES: usize = 100;
const MAX_SLICE_PORTS: usize = 100;
const MAX_TOPOLOGY_LABELS: usize = 16;

/// Problems with an Endpoints object.
pub fn validate_endpoints(obj: &Value, causes: &mut Vec<Cause>) {
    for (i, subset) in items(obj.get("subsets")).enumerate() {
        let path = format!("subsets[{i}]");
        let ready = items(subset.get("addresses"));
        let not_ready = items(subset.get("notReadyAddresses"));
        if ready.len() == 0 && not_ready.len() == 0 {
            causes.push(Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value: must specify `addresses` or `notReadyAddresses`".into(),
                field: path.clone(),
            });
        }
        for (key, addresses) in [("addresses", ready), ("notReadyAddresses", not_ready)] {
            for (j, address) in addresses.enumerate() {
                endpoints_address(address, &format!("{path}.{key}[{j}]"), causes);
            }
        }
        let ports: Vec<&Value> = items(subset.get("ports")).collect();
        for (j, port) in ports.iter().enumerate() {
            let path = format!("{path}.ports[{j}]");
            let name = text(port.get("name"));
            if name.is_empty() && ports.len() > 1 {
                causes.push(Cause::required(&format!("{path}.name")));
            }
            port_fields(port, &path, causes);
        }
    }
}

fn endpoints_address(address: &Value, path: &str, causes: &mut Vec<Cause>) {
    let before = causes.len();
    let ip_text = text(address.get("ip"));
    let ip = go_ip::parse_sloppy(ip_text);
    if ip.is_none() {
        causes.push(Cause::invalid(
            &format!("{path}.ip"),
            ip_text,
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    }
    let hostname = text(address.get("hostname"));
    if !hostname.is_empty() {
        if let Some(problem) = meta::check_dns1123_label(hostname) {
            causes.push(Cause::invalid(
                &format!("{path}.hostname"),
                hostname,
                &problem,
            ));
        }
    }
    if let Some(node) = address.get("nodeName").and_then(Value::as_str) {
        if let Some(problem) = meta::check_dns1123_subdomain(node) {
            causes.push(Cause::invalid(&format!("{path}.nodeName"), node, &problem));
        }
    }
    // Upstream looks at the address's range only once the rest of it is valid.
    if let (Some(ip), true) = (ip, causes.len() == before) {
        not_special(ip, ip_text, &format!("{path}.ip"), true, causes);
    }
}

/// Addresses no Service can send to (upstream's `ValidateNonSpecialIP`): unspecified,
/// link-local and, unless `loopback_allowed`, loopback. Endpoints allow loopback, unlike
/// upstream: berth's API server runs on the host, so an admission webhook or an aggregated API
/// served on the host's loopback is reachable through a selector-less Service whose endpoint is
/// 127.0.0.1.
pub(super) fn not_special(
    ip: IpAddr,
    raw: &str,
    path: &str,
    loopback_allowed: bool,
    causes: &mut Vec<Cause>,
) {
    let link_local_unicast = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    };
    let link_local_multicast = match ip {
        IpAddr::V4(v4) => v4.octets()[..3] == [224, 0, 0],
        IpAddr::V6(v6) => v6.segments()[0] & 0xff0f == 0xff02,
    };
    let unspecified = format!("may not be unspecified ({raw})");
    let checks = [
        (ip.is_unspecified(), unspecified.as_str()),
        (
            ip.is_loopback() && !loopback_allowed,
            "may not be in the loopback range (127.0.0.0/8, ::1/128)",
        ),
        (
            link_local_unicast,
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)",
        ),
        (
            link_local_multicast,
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
        ),
    ];
    for (applies, detail) in checks {
        if applies {
            causes.push(Cause::invalid(path, raw, detail));
        }
    }
}

/// Problems with an EndpointSlice; `updating` accepts the retired `IP` address type.
pub fn validate_endpoint_slice(obj: &Value, updating: bool, causes: &mut Vec<Cause>) {
    let address_type = text(obj.get("addressType"));
    if address_type.is_empty() {
        causes.push(Cause::required("addressType"));
    } else if !(ADDRESS_TYPES.contains(&address_type)
        || updating && address_type == DEPRECATED_ADDRESS_TYPE)
    {
        let mut supported = ADDRESS_TYPES.to_vec();
        if updating {
            supported.insert(2, DEPRECATED_ADDRESS_TYPE);
        }
        causes.push(not_supported("addressType", address_type, &supported));
    }
    let endpoints: Vec<&Value> = items(obj.get("endpoints")).collect();
    if endpoints.len() > MAX_SLICE_ENDPOINTS {
        causes.push(too_many("endpoints", endpoints.len(), MAX_SLICE_ENDPOINTS));
    } else {
        for (i, endpoint) in endpoints.iter().enumerate() {
            slice_endpoint(endpoint, address_type, &format!("endpoints[{i}]"), causes);
        }
    }
    let ports: Vec<&Value> = items(obj.get("ports")).collect();
    if ports.len() > MAX_SLICE_PORTS {
        causes.push(too_many("ports", ports.len(), MAX_SLICE_PORTS));
        return;
    }
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let path = format!("ports[{i}]");
        let name = text(port.get("name"));
        if !names.insert(name) {
            causes.push(duplicate(&format!("{path}.name"), name));
        }
        port_fields(port, &path, causes);
    }
}

fn slice_endpoint(endpoint: &Value, address_type: &str, path: &str, causes: &mut Vec<Cause>) {
    let addresses: Vec<&Value> = items(endpoint.get("addresses")).collect();
    let addresses_path = format!("{path}.addresses");
    if addresses.is_empty() {
        causes.push(Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value: must contain at least 1 address".into(),
            field: addresses_path.clone(),
        });
    } else if addresses.len() > MAX_ENDPOINT_ADDRESSES {
        causes.push(too_many(
            &addresses_path,
            addresses.len(),
            MAX_ENDPOINT_ADDRESSES,
        ));
    }
    for (j, address) in addresses.iter().enumerate() {
        let raw = text(Some(address));
        let path = format!("{addresses_path}[{j}]");
        let ip = go_ip::parse_sloppy(raw);
        let family_ok = match address_type {
            "IPv4" => ip.is_some_and(|ip| ip.is_ipv4()),
            "IPv6" => ip.is_some_and(|ip| ip.is_ipv6()),
            "FQDN" => {
                if let Some(problem) = fqdn_problem(raw) {
                    causes.push(Cause::invalid(&path, raw, &problem));
                }
                continue;
            }
            // The retired `IP` type: any IP; unknown types are not looked into (as upstream).
            DEPRECATED_ADDRESS_TYPE => ip.is_some(),
            _ => continue,
        };
        if !family_ok && address_type != DEPRECATED_ADDRESS_TYPE {
            causes.push(Cause::invalid(
                &path,
                raw,
                &format!("must be a valid {address_type} address"),
            ));
        }
        match ip {
            Some(ip) => not_special(ip, raw, &path, true, causes),
            None => causes.push(Cause::invalid(&path, raw, "must be a valid IP address")),
        }
    }
    let topology = endpoint
        .get("deprecatedTopology")
        .and_then(Value::as_object);
    if let Some(topology) = topology.filter(|t| t.len() > MAX_TOPOLOGY_LABELS) {
        causes.push(too_many(
            &format!("{path}.deprecatedTopology"),
            topology.len(),
            MAX_TOPOLOGY_LABELS,
        ));
    }
    if let Some(hostname) = endpoint.get("hostname").and_then(Value::as_str) {
        if let Some(problem) = meta::check_dns1123_label(hostname) {
            causes.push(Cause::invalid(
                &format!("{path}.hostname"),
                hostname,
                &problem,
            ));
        }
    }
}

/// Upstream's `IsFullyQualifiedDomainName`: at least two labels, a DNS subdomain otherwise.
fn fqdn_problem(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Some("Required value".into());
    }
    if !name.contains('.') {
        return Some("should be a domain with at least two segments separated by dots".into());
    }
    meta::check_dns1123_subdomain(name)
}

/// The fields Endpoints and EndpointSlice ports share: name, number, protocol, appProtocol.
fn port_fields(port: &Value, path: &str, causes: &mut Vec<Cause>) {
    let name = text(port.get("name"));
    if !name.is_empty() {
        if let Some(problem) = meta::check_dns1123_label(name) {
            causes.push(Cause::invalid(&format!("{path}.name"), name, &problem));
        }
    }
    if let Some(number) = port.get("port").and_then(Value::as_i64) {
        if !(1..=65535).contains(&number) {
            causes.push(invalid_number(
                &format!("{path}.port"),
                number,
                "must be between 1 and 65535, inclusive",
            ));
        }
    }
    match port.get("protocol").and_then(Value::as_str) {
        None | Some("") => causes.push(Cause::required(&format!("{path}.protocol"))),
        Some(protocol) if !PROTOCOLS.contains(&protocol) => causes.push(not_supported(
            &format!("{path}.protocol"),
            protocol,
            PROTOCOLS,
        )),
        Some(_) => {}
    }
    if let Some(app_protocol) = port.get("appProtocol").and_then(Value::as_str) {
        if let Some(problem) = meta::check_qualified_name(app_protocol) {
            causes.push(Cause::invalid(
                &format!("{path}.appProtocol"),
                app_protocol,
                &problem,
            ));
        }
    }
}

fn too_many(field: &str, actual: usize, limit: usize) -> Cause {
    Cause {
        reason: "FieldValueTooMany".into(),
        message: format!("Too many: {actual}: must have at most {limit} items"),
        field: field.into(),
    }
}

fn items(v: Option<&Value>) -> std::slice::Iter<'_, Value> {
    v.and_then(Value::as_array)
        .map(|a| a.iter())
        .unwrap_or_default()
}

fn text(v: Option<&Value>) -> &str {
    v.and_then(Value::as_str).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn endpoints_causes(subsets: Value) -> Vec<(String, String)> {
        let mut causes = Vec::new();
        validate_endpoints(&json!({"subsets": subsets}), &mut causes);
        causes.into_iter().map(|c| (c.field, c.message)).collect()
    }

    fn slice_causes(slice: Value, updating: bool) -> Vec<(String, String)> {
        let mut causes = Vec::new();
        validate_endpoint_slice(&slice, updating, &mut causes);
        causes.into_iter().map(|c| (c.field, c.message)).collect()
    }

    fn pair(field: &str, message: &str) -> (String, String) {
        (field.to_string(), message.to_string())
    }

    #[test]
    fn endpoints_addresses_must_be_ips_a_service_can_send_to() {
        let ok = json!([{"addresses": [{"ip": "10.9.1.1"}, {"ip": "010.9.1.2"}],
            "notReadyAddresses": [{"ip": "fd00::1", "hostname": "db-0"}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                      {"name": "dns", "port": 53, "protocol": "UDP"}]}]);
        assert_eq!(endpoints_causes(ok), []);
        let bad = json!([
            {"addresses": [{"ip": "not-an-ip"}, {"ip": "127.0.0.1"}, {"ip": "169.254.1.1"},
                           {"ip": "0.0.0.0"}, {"ip": "fe80::1", "hostname": "Bad_Host"}],
             "ports": [{"port": 0, "protocol": "TCP"}, {"name": "b", "port": 81, "protocol": "ICMP"}]},
            {"ports": [{"port": 80, "protocol": "TCP"}]}
        ]);
        assert_eq!(
            endpoints_causes(bad),
            [
                pair(
                    "subsets[0].addresses[0].ip",
                    "Invalid value: \"not-an-ip\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
                ),
                pair(
                    "subsets[0].addresses[2].ip",
                    "Invalid value: \"169.254.1.1\": may not be in the link-local range (169.254.0.0/16, fe80::/10)"
                ),
                pair(
                    "subsets[0].addresses[3].ip",
                    "Invalid value: \"0.0.0.0\": may not be unspecified (0.0.0.0)"
                ),
                pair(
                    "subsets[0].addresses[4].hostname",
                    &format!(
                        "Invalid value: \"Bad_Host\": {}",
                        meta::check_dns1123_label("Bad_Host").unwrap()
                    )
                ),
                pair("subsets[0].ports[0].name", "Required value"),
                pair(
                    "subsets[0].ports[0].port",
                    "Invalid value: 0: must be between 1 and 65535, inclusive"
                ),
                pair(
                    "subsets[0].ports[1].protocol",
                    "Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\""
                ),
                pair(
                    "subsets[1]",
                    "Required value: must specify `addresses` or `notReadyAddresses`"
                ),
            ]
        );
    }

    #[test]
    fn slice_addresses_must_match_the_address_type() {
        let ok = json!({"addressType": "IPv4",
            "endpoints": [{"addresses": ["10.42.0.5"], "hostname": "web-0"}],
            "ports": [{"name": "", "port": 80, "protocol": "TCP", "appProtocol": "http"}]});
        assert_eq!(slice_causes(ok, false), []);
        let fqdn = json!({"addressType": "FQDN", "endpoints": [{"addresses": ["db.example.com"]}]});
        assert_eq!(slice_causes(fqdn, false), []);
        let bad = json!({"addressType": "IPv4",
            "endpoints": [{"addresses": ["fd00::1", "nope", "224.0.0.9", "127.0.0.1"]}, {"addresses": []}],
            "ports": [{"name": "a", "port": 80, "protocol": "TCP"},
                      {"name": "a", "port": 81, "protocol": "TCP"}, {"port": 82}]});
        assert_eq!(
            slice_causes(bad, false),
            [
                pair(
                    "endpoints[0].addresses[0]",
                    "Invalid value: \"fd00::1\": must be a valid IPv4 address"
                ),
                pair(
                    "endpoints[0].addresses[1]",
                    "Invalid value: \"nope\": must be a valid IPv4 address"
                ),
                pair(
                    "endpoints[0].addresses[1]",
                    "Invalid value: \"nope\": must be a valid IP address"
                ),
                pair(
                    "endpoints[0].addresses[2]",
                    "Invalid value: \"224.0.0.9\": may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"
                ),
                pair(
                    "endpoints[1].addresses",
                    "Required value: must contain at least 1 address"
                ),
                pair("ports[1].name", "Duplicate value: \"a\""),
                pair("ports[2].protocol", "Required value"),
            ]
        );
    }

    #[test]
    fn the_address_type_is_required_and_the_retired_one_kept_only_on_update() {
        assert_eq!(
            slice_causes(json!({}), false),
            [pair("addressType", "Required value")]
        );
        assert_eq!(
            slice_causes(json!({"addressType": "IP"}), false),
            [pair(
                "addressType",
                "Unsupported value: \"IP\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""
            )]
        );
        assert_eq!(slice_causes(json!({"addressType": "IP"}), true), []);
    }

    #[test]
    fn a_slice_holds_at_most_a_thousand_endpoints() {
        let endpoints: Vec<Value> = (0..1001)
            .map(|i| json!({"addresses": [format!("10.8.{}.{}", i / 250, i % 250 + 1)]}))
            .collect();
        let slice = json!({"addressType": "IPv4", "endpoints": endpoints});
        assert_eq!(
            slice_causes(slice, false),
            [pair(
                "endpoints",
                "Too many: 1001: must have at most 1000 items"
            )]
        );
    }
}
