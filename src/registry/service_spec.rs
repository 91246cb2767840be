//! A Service's defaults and the checks of its spec that need no store, as upstream's
//! `SetDefaults_Service` and `ValidateService` do them, on create and on every update (a patch
//! or an apply can leave a spec a create would refuse). Allocations are `services`' part.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use super::endpoints::not_special;
use super::network_policy::port_name_problems;
use super::validation::{duplicate, invalid_number, not_supported};
use crate::api::{go_ip, go_syntax, meta, Cause};

const SERVICE_TYPES: [&str; 4] = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const SESSION_AFFINITIES: [&str; 2] = ["ClientIP", "None"];
const TRAFFIC_POLICIES: [&str; 2] = ["Cluster", "Local"];
const TRAFFIC_DISTRIBUTIONS: [&str; 3] = ["PreferClose", "PreferSameNode", "PreferSameZone"];
/// `core.DefaultClientIPServiceAffinitySeconds` and `MaxClientIPServiceAffinitySeconds`.
const DEFAULT_AFFINITY_SECONDS: i64 = 10800;
const MAX_AFFINITY_SECONDS: i64 = 86400;

fn text<'a>(spec: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    spec.get(field).and_then(Value::as_str)
}

/// Set and not null: a merge patch that removes a field leaves no null behind, but a PUT may.
fn has(spec: &Map<String, Value>, field: &str) -> bool {
    spec.get(field).is_some_and(|v| !v.is_null())
}

fn service_type(spec: &Map<String, Value>) -> &str {
    text(spec, "type").unwrap_or("ClusterIP")
}

/// Upstream's `ExternallyAccessible`: node ports, a load balancer or external IPs.
pub fn externally_accessible(svc: &Value) -> bool {
    svc.get("spec")
        .and_then(Value::as_object)
        .is_some_and(reachable_from_outside)
}

fn reachable_from_outside(spec: &Map<String, Value>) -> bool {
    match service_type(spec) {
        "NodePort" | "LoadBalancer" => true,
        "ClusterIP" => spec
            .get("externalIPs")
            .and_then(Value::as_array)
            .is_some_and(|ips| !ips.is_empty()),
        _ => false,
    }
}

/// Upstream's `NeedsHealthCheck`: a LoadBalancer service that keeps traffic on its own node.
fn needs_health_check(spec: &Map<String, Value>) -> bool {
    service_type(spec) == "LoadBalancer" && text(spec, "externalTrafficPolicy") == Some("Local")
}

/// A field that must be set, to one of `supported`.
fn required_one_of(field: &str, value: &str, supported: &[&str], causes: &mut Vec<Cause>) {
    if value.is_empty() {
        causes.push(Cause::required(field));
    } else if !supported.contains(&value) {
        causes.push(not_supported(field, value, supported));
    }
}

fn headless(spec: &Map<String, Value>) -> bool {
    text(spec, "clusterIP") == Some("None")
}

/// Upstream's defaults; what they fill is left alone when set. Cluster IP, families and node
/// ports come with the allocations.
pub fn default_spec(svc: &mut Value) {
    let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if !has(spec, "type") {
        spec.insert("type".into(), json!("ClusterIP"));
    }
    if !has(spec, "sessionAffinity") {
        spec.insert("sessionAffinity".into(), json!("None"));
    }
    if text(spec, "sessionAffinity") == Some("ClientIP") {
        let timeout = spec
            .get("sessionAffinityConfig")
            .and_then(|c| c.get("clientIP"))
            .and_then(|c| c.get("timeoutSeconds"));
        if timeout.is_none_or(Value::is_null) {
            spec.insert(
                "sessionAffinityConfig".into(),
                json!({"clientIP": {"timeoutSeconds": DEFAULT_AFFINITY_SECONDS}}),
            );
        }
    }
    let service_type = service_type(spec).to_string();
    if matches!(
        service_type.as_str(),
        "ClusterIP" | "NodePort" | "LoadBalancer"
    ) && !has(spec, "internalTrafficPolicy")
    {
        spec.insert("internalTrafficPolicy".into(), json!("Cluster"));
    }
    if reachable_from_outside(spec) && !has(spec, "externalTrafficPolicy") {
        spec.insert("externalTrafficPolicy".into(), json!("Cluster"));
    }
    if service_type == "LoadBalancer" && !has(spec, "allocateLoadBalancerNodePorts") {
        spec.insert("allocateLoadBalancerNodePorts".into(), json!(true));
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            if !has(port, "protocol") {
                port.insert("protocol".into(), json!("TCP"));
            }
            if !has(port, "targetPort") {
                let number = port.get("port").cloned().unwrap_or(json!(0));
                port.insert("targetPort".into(), number);
            }
        }
    }
}

/// Everything wrong with a defaulted Service's spec, in upstream's order.
pub fn validate_spec(svc: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let empty = Map::new();
    let spec = svc.get("spec").and_then(Value::as_object).unwrap_or(&empty);
    let service_type = service_type(spec);
    let ports: &[Value] = spec
        .get("ports")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    if ports.is_empty() && !headless(spec) && service_type != "ExternalName" {
        causes.push(Cause::required("spec.ports"));
    }
    match service_type {
        "LoadBalancer" | "NodePort" if headless(spec) => causes.push(Cause::invalid(
            "spec.clusterIPs[0]",
            "None",
            &format!("may not be set to 'None' for {service_type} services"),
        )),
        "ExternalName" => external_name(spec, &mut causes),
        _ => {}
    }
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        validate_port(port, ports.len() > 1, &mut names, i, &mut causes);
    }
    if let Some(selector) = spec.get("selector").and_then(Value::as_object) {
        for (key, value) in selector {
            if let Some(problem) = meta::check_qualified_name(key) {
                causes.push(Cause::invalid("spec.selector", key, &problem));
            }
            let value = value.as_str().unwrap_or("");
            if let Some(problem) = meta::check_label_value(value) {
                causes.push(Cause::invalid("spec.selector", value, &problem));
            }
        }
    }
    session_affinity(spec, &mut causes);
    if let Some(ips) = spec.get("externalIPs").and_then(Value::as_array) {
        for (i, ip) in ips.iter().enumerate() {
            external_ip(
                ip.as_str().unwrap_or(""),
                &format!("spec.externalIPs[{i}]"),
                &mut causes,
            );
        }
    }
    if !SERVICE_TYPES.contains(&service_type) {
        causes.push(not_supported("spec.type", service_type, &SERVICE_TYPES));
    }
    port_set(ports, service_type, &mut causes);
    load_balancer_fields(spec, service_type, &mut causes);
    traffic_policies(spec, &mut causes);
    causes
}

fn external_name(spec: &Map<String, Value>, causes: &mut Vec<Cause>) {
    let cluster_ips = spec
        .get("clusterIPs")
        .and_then(Value::as_array)
        .is_some_and(|ips| !ips.is_empty());
    if cluster_ips || text(spec, "clusterIP").is_some_and(|ip| !ip.is_empty()) {
        causes.push(Cause::forbidden(
            "spec.clusterIPs",
            "may not be set for ExternalName services",
        ));
    }
    if spec
        .get("ipFamilies")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
    {
        causes.push(Cause::forbidden(
            "spec.ipFamilies",
            "may not be set for ExternalName services",
        ));
    }
    if has(spec, "ipFamilyPolicy") {
        causes.push(Cause::forbidden(
            "spec.ipFamilyPolicy",
            "may not be set for ExternalName services",
        ));
    }
    // A trailing dot marks the name fully qualified.
    let cname = text(spec, "externalName").unwrap_or("");
    let cname = cname.strip_suffix('.').unwrap_or(cname);
    if cname.is_empty() {
        causes.push(Cause::required("spec.externalName"));
    } else if let Some(problem) = meta::check_dns1123_subdomain(cname) {
        causes.push(Cause::invalid("spec.externalName", cname, &problem));
    }
}

/// One port on its own: name (required when there are several, a DNS label, unique), number,
/// protocol, target port, application protocol.
fn validate_port(
    port: &Value,
    name_required: bool,
    names: &mut HashSet<String>,
    i: usize,
    causes: &mut Vec<Cause>,
) {
    let path = format!("spec.ports[{i}]");
    let name = port.get("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        if name_required {
            causes.push(Cause::required(&format!("{path}.name")));
        }
    } else {
        if let Some(problem) = meta::check_dns1123_label(name) {
            causes.push(Cause::invalid(&format!("{path}.name"), name, &problem));
        }
        if !names.insert(name.to_string()) {
            causes.push(duplicate(&format!("{path}.name"), name));
        }
    }
    let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
    if !(1..=65535).contains(&number) {
        causes.push(invalid_number(
            &format!("{path}.port"),
            number,
            "must be between 1 and 65535, inclusive",
        ));
    }
    let protocol = port.get("protocol").and_then(Value::as_str).unwrap_or("");
    if protocol.is_empty() {
        causes.push(Cause::required(&format!("{path}.protocol")));
    } else if !matches!(protocol, "TCP" | "UDP" | "SCTP") {
        causes.push(not_supported(
            &format!("{path}.protocol"),
            protocol,
            &["SCTP", "TCP", "UDP"],
        ));
    }
    let target_path = format!("{path}.targetPort");
    match port.get("targetPort") {
        Some(Value::String(target)) => {
            for problem in port_name_problems(target) {
                causes.push(Cause::invalid(&target_path, target, problem));
            }
        }
        Some(target) => {
            let target = target.as_i64().unwrap_or(0);
            if !(1..=65535).contains(&target) {
                causes.push(invalid_number(
                    &target_path,
                    target,
                    "must be between 1 and 65535, inclusive",
                ));
            }
        }
        None => {}
    }
    if let Some(app_protocol) = port.get("appProtocol").and_then(Value::as_str) {
        for problem in meta::qualified_name_problems(app_protocol) {
            causes.push(Cause::invalid(
                &format!("{path}.appProtocol"),
                app_protocol,
                &problem,
            ));
        }
    }
}

fn session_affinity(spec: &Map<String, Value>, causes: &mut Vec<Cause>) {
    let affinity = text(spec, "sessionAffinity").unwrap_or("");
    required_one_of(
        "spec.sessionAffinity",
        affinity,
        &SESSION_AFFINITIES,
        causes,
    );
    let config = spec.get("sessionAffinityConfig").filter(|c| !c.is_null());
    match affinity {
        "ClientIP" => {
            let path = "spec.sessionAffinityConfig.clientIP.timeoutSeconds";
            match config
                .and_then(|c| c.get("clientIP"))
                .and_then(|c| c.get("timeoutSeconds"))
                .and_then(Value::as_i64)
            {
                None => causes.push(Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value: when session affinity type is ClientIP".into(),
                    field: path.into(),
                }),
                Some(timeout) if !(1..=MAX_AFFINITY_SECONDS).contains(&timeout) => {
                    causes.push(invalid_number(
                        path,
                        timeout,
                        &format!("must be greater than 0 and less than {MAX_AFFINITY_SECONDS}"),
                    ))
                }
                Some(_) => {}
            }
        }
        "None" if config.is_some() => causes.push(Cause::forbidden(
            "spec.sessionAffinityConfig",
            "must not be set when session affinity is None",
        )),
        _ => {}
    }
}

/// Upstream's `IsValidIP` then `ValidateNonSpecialIP`.
fn external_ip(raw: &str, path: &str, causes: &mut Vec<Cause>) {
    match go_ip::parse_sloppy(raw) {
        Some(ip) => not_special(ip, raw, path, false, causes),
        None => causes.push(Cause::invalid(
            path,
            raw,
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        )),
    }
}

/// The ports together: node ports only where the type has them, no node port twice, no two
/// ports alike (by protocol and number).
fn port_set(ports: &[Value], service_type: &str, causes: &mut Vec<Cause>) {
    fn protocol(port: &Value) -> &str {
        port.get("protocol").and_then(Value::as_str).unwrap_or("")
    }
    let number = |port: &Value| port.get("port").and_then(Value::as_i64).unwrap_or(0);
    let node_port = |port: &Value| port.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
    if service_type == "ClusterIP" {
        for (i, port) in ports.iter().enumerate() {
            if node_port(port) != 0 {
                causes.push(Cause::forbidden(
                    &format!("spec.ports[{i}].nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }
    let mut node_ports = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        if node_port(port) != 0 && !node_ports.insert((protocol(port), node_port(port))) {
            causes.push(Cause {
                reason: "FieldValueDuplicate".into(),
                message: format!("Duplicate value: {}", node_port(port)),
                field: format!("spec.ports[{i}].nodePort"),
            });
        }
    }
    let mut pairs = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        if !pairs.insert((protocol(port), number(port))) {
            // Upstream prints the key it compares: a ServicePort with only these two set.
            causes.push(Cause {
                reason: "FieldValueDuplicate".into(),
                message: format!(
                    "Duplicate value: core.ServicePort{{Name:\"\", Protocol:{}, \
                     AppProtocol:(*string)(nil), Port:{}, \
                     TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
                    go_syntax::quoted(protocol(port)),
                    number(port)
                ),
                field: format!("spec.ports[{i}]"),
            });
        }
    }
}

/// Fields only a LoadBalancer service may have.
fn load_balancer_fields(spec: &Map<String, Value>, service_type: &str, causes: &mut Vec<Cause>) {
    const ONLY_LOAD_BALANCER: &str = "may only be used when `type` is 'LoadBalancer'";
    let load_balancer = service_type == "LoadBalancer";
    let ranges = spec
        .get("loadBalancerSourceRanges")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    if !ranges.is_empty() {
        // Upstream's path is spelled this way.
        let path = "spec.LoadBalancerSourceRanges";
        if !load_balancer {
            causes.push(Cause::forbidden(path, ONLY_LOAD_BALANCER));
        }
        for (i, range) in ranges.iter().enumerate() {
            // Space-padded values were accepted once, from the annotation this replaced.
            let range = range.as_str().unwrap_or("").trim();
            if !is_cidr(range) {
                causes.push(Cause::invalid(
                    &format!("{path}[{i}]"),
                    range,
                    "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                ));
            }
        }
    }
    if has(spec, "allocateLoadBalancerNodePorts") && !load_balancer {
        causes.push(Cause::forbidden(
            "spec.allocateLoadBalancerNodePorts",
            ONLY_LOAD_BALANCER,
        ));
    }
    if let Some(class) = text(spec, "loadBalancerClass") {
        if load_balancer {
            for problem in meta::qualified_name_problems(class) {
                causes.push(Cause::invalid("spec.loadBalancerClass", class, &problem));
            }
        } else {
            causes.push(Cause::forbidden(
                "spec.loadBalancerClass",
                ONLY_LOAD_BALANCER,
            ));
        }
    }
}

fn is_cidr(text: &str) -> bool {
    let Some((ip, len)) = text.split_once('/') else {
        return false;
    };
    let Some(ip) = go_ip::parse_sloppy(ip) else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    !len.is_empty()
        && len.bytes().all(|b| b.is_ascii_digit())
        && len.parse::<u8>().is_ok_and(|len| len <= max)
}

/// External and internal traffic policies, the health check node port, traffic distribution.
fn traffic_policies(spec: &Map<String, Value>, causes: &mut Vec<Cause>) {
    let external = text(spec, "externalTrafficPolicy").unwrap_or("");
    if !reachable_from_outside(spec) {
        if !external.is_empty() {
            causes.push(Cause::invalid(
                "spec.externalTrafficPolicy",
                external,
                "may only be set for externally-accessible services",
            ));
        }
    } else {
        required_one_of(
            "spec.externalTrafficPolicy",
            external,
            &TRAFFIC_POLICIES,
            causes,
        );
    }
    // berth allocates no health check node port (its load balancer is the node itself), so one
    // is only checked where upstream forbids it.
    let health_check = spec
        .get("healthCheckNodePort")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if health_check != 0 && !needs_health_check(spec) {
        causes.push(invalid_number(
            "spec.healthCheckNodePort",
            health_check,
            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
        ));
    } else if health_check != 0 && !(1..=65535).contains(&health_check) {
        causes.push(invalid_number(
            "spec.healthCheckNodePort",
            health_check,
            "must be between 1 and 65535, inclusive",
        ));
    }
    match text(spec, "internalTrafficPolicy") {
        None if matches!(
            service_type(spec),
            "ClusterIP" | "NodePort" | "LoadBalancer"
        ) =>
        {
            causes.push(Cause::required("spec.internalTrafficPolicy"))
        }
        Some(internal) if !TRAFFIC_POLICIES.contains(&internal) => causes.push(not_supported(
            "spec.internalTrafficPolicy",
            internal,
            &TRAFFIC_POLICIES,
        )),
        _ => {}
    }
    if let Some(distribution) = text(spec, "trafficDistribution") {
        if !TRAFFIC_DISTRIBUTIONS.contains(&distribution) {
            causes.push(not_supported(
                "spec.trafficDistribution",
                distribution,
                &TRAFFIC_DISTRIBUTIONS,
            ));
        }
    }
}

/// What an update may not change that a create may set: the health check node port while the
/// service keeps needing one.
pub fn validate_spec_update(old: &Value, new: &Value) -> Vec<Cause> {
    let needs = |svc: &Value| {
        svc.get("spec")
            .and_then(Value::as_object)
            .is_some_and(needs_health_check)
    };
    let port = |svc: &Value| svc.pointer("/spec/healthCheckNodePort").cloned();
    if needs(old) && needs(new) && port(old) != port(new) {
        return vec![Cause::forbidden(
            "spec.healthCheckNodePort",
            "field is immutable",
        )];
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summaries(spec: Value) -> Vec<String> {
        let mut svc = json!({"spec": spec});
        default_spec(&mut svc);
        validate_spec(&svc).iter().map(Cause::summary).collect()
    }

    #[test]
    fn defaults_are_upstreams_for_each_type() {
        let mut svc = json!({"spec": {"type": "LoadBalancer", "sessionAffinity": "ClientIP",
            "ports": [{"port": 80, "targetPort": "http"}]}});
        default_spec(&mut svc);
        let spec = &svc["spec"];
        assert_eq!(
            spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
            10800
        );
        assert_eq!(spec["externalTrafficPolicy"], "Cluster");
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert_eq!(spec["allocateLoadBalancerNodePorts"], true);
        assert_eq!(spec["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["ports"][0]["targetPort"], "http");
        assert!(validate_spec(&svc).is_empty(), "{:?}", validate_spec(&svc));

        let mut plain = json!({"spec": {"ports": [{"port": 80}]}});
        default_spec(&mut plain);
        assert_eq!(plain["spec"]["type"], "ClusterIP");
        assert_eq!(plain["spec"]["sessionAffinity"], "None");
        assert!(plain["spec"].get("externalTrafficPolicy").is_none());
        assert!(plain["spec"].get("sessionAffinityConfig").is_none());
        // External IPs make a ClusterIP service reachable from outside: it gets a policy too.
        let mut external_ips =
            json!({"spec": {"externalIPs": ["192.0.2.7"], "ports": [{"port": 80}]}});
        default_spec(&mut external_ips);
        assert_eq!(external_ips["spec"]["externalTrafficPolicy"], "Cluster");

        let mut external_name =
            json!({"spec": {"type": "ExternalName", "externalName": "db.example.com."}});
        default_spec(&mut external_name);
        assert!(external_name["spec"].get("internalTrafficPolicy").is_none());
        assert!(validate_spec(&external_name).is_empty());
    }

    #[test]
    fn policies_affinity_and_load_balancer_fields_are_checked_as_upstream_words_it() {
        assert_eq!(
            summaries(json!({"sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 86401}},
                "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Nearby",
                "loadBalancerSourceRanges": ["10.0.0.0/8"], "allocateLoadBalancerNodePorts": false,
                "healthCheckNodePort": 31000, "trafficDistribution": "Anywhere",
                "ports": [{"port": 80}]})),
            [
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 86401: must \
                 be greater than 0 and less than 86400",
                "spec.LoadBalancerSourceRanges: Forbidden: may only be used when `type` is \
                 'LoadBalancer'",
                "spec.allocateLoadBalancerNodePorts: Forbidden: may only be used when `type` is \
                 'LoadBalancer'",
                "spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set for \
                 externally-accessible services",
                "spec.healthCheckNodePort: Invalid value: 31000: may only be set when `type` is \
                 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
                "spec.internalTrafficPolicy: Unsupported value: \"Nearby\": supported values: \
                 \"Cluster\", \"Local\"",
                "spec.trafficDistribution: Unsupported value: \"Anywhere\": supported values: \
                 \"PreferClose\", \"PreferSameNode\", \"PreferSameZone\"",
            ]
        );
        assert_eq!(
            summaries(json!({"type": "NodePort", "externalTrafficPolicy": "Nearest",
                "sessionAffinity": "None", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 5}},
                "ports": [{"port": 80}]})),
            [
                "spec.sessionAffinityConfig: Forbidden: must not be set when session affinity is None",
                "spec.externalTrafficPolicy: Unsupported value: \"Nearest\": supported values: \
                 \"Cluster\", \"Local\"",
            ]
        );
        assert_eq!(
            summaries(json!({"type": "LoadBalancer", "loadBalancerSourceRanges": [" 10.0.0.0/8", "10.0.0.1"],
                "ports": [{"port": 80}]})),
            ["spec.LoadBalancerSourceRanges[1]: Invalid value: \"10.0.0.1\": must be a valid CIDR \
              value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"]
        );
    }

    #[test]
    fn ports_selector_addresses_and_external_names_are_checked() {
        assert_eq!(
            summaries(
                json!({"selector": {"app": "web!"}, "externalIPs": ["127.0.0.1", "nope"],
                "ports": [{"port": 80, "targetPort": "HTTP", "appProtocol": "-h2"}]})
            ),
            [
                "spec.ports[0].targetPort: Invalid value: \"HTTP\": must contain only \
                 alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                "spec.ports[0].targetPort: Invalid value: \"HTTP\": must contain at least one \
                 letter (a-z)",
                "spec.ports[0].appProtocol: Invalid value: \"-h2\": name part must consist of \
                 alphanumeric characters, '-', '_' or '.', and must start and end with an \
                 alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used \
                 for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                "spec.selector: Invalid value: \"web!\": a valid label must be an empty string or \
                 consist of alphanumeric characters, '-', '_' or '.', and must start and end with \
                 an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex \
                 used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
                "spec.externalIPs[0]: Invalid value: \"127.0.0.1\": may not be in the loopback \
                 range (127.0.0.0/8, ::1/128)",
                "spec.externalIPs[1]: Invalid value: \"nope\": must be a valid IP address, (e.g. \
                 10.9.8.7 or 2001:db8::ffff)",
            ]
        );
        assert_eq!(
            summaries(json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]})),
            ["spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services"]
        );
        assert_eq!(
            summaries(json!({"type": "ExternalName", "externalName": "not a name",
                "clusterIP": "10.43.0.9", "ipFamilyPolicy": "SingleStack"})),
            [
                "spec.clusterIPs: Forbidden: may not be set for ExternalName services",
                "spec.ipFamilyPolicy: Forbidden: may not be set for ExternalName services",
                "spec.externalName: Invalid value: \"not a name\": a lowercase RFC 1123 \
                 subdomain must consist of lower case alphanumeric characters, '-' or '.', and \
                 must start and end with an alphanumeric character (e.g. 'example.com', regex \
                 used for validation is \
                 '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
            ]
        );
    }

    #[test]
    fn the_health_check_port_may_not_change_while_it_is_needed() {
        let old = json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
            "healthCheckNodePort": 31000}});
        let mut new = old.clone();
        new["spec"]["healthCheckNodePort"] = json!(31001);
        assert_eq!(
            validate_spec_update(&old, &new)[0].summary(),
            "spec.healthCheckNodePort: Forbidden: field is immutable"
        );
        new["spec"]["externalTrafficPolicy"] = json!("Cluster");
        assert!(validate_spec_update(&old, &new).is_empty());
    }
}
