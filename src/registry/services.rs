//! Service defaults and the allocation of cluster IPs and node ports.
//!
//! Each allocation is its own store key, created with a compare-and-swap, so two services can
//! never get the same IP or port even when created at the same moment; the key is removed with
//! the service. `repair` frees allocations a crash left without a service.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::generic::{decode, store_error};
use super::service_spec;
use crate::api::{meta, ApiError, ApiResult, Cause};
use crate::store::{Store, StoreError};

const IP_PREFIX: &str = "/allocations/clusterips/";
const PORT_PREFIX: &str = "/allocations/nodeports/";

/// The service CIDR and NodePort range services are allocated from.
#[derive(Debug, Clone)]
pub struct ServiceNetwork {
    pub base: Ipv4Addr,
    pub prefix_len: u8,
    pub node_ports: (u16, u16),
}

impl ServiceNetwork {
    pub fn parse(cidr: &str, node_ports: (u16, u16)) -> Result<ServiceNetwork, String> {
        let (ip, len) = cidr
            .split_once('/')
            .ok_or_else(|| format!("service CIDR {cidr:?} lacks a /prefix"))?;
        let base: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("service CIDR {cidr:?} is not IPv4"))?;
        let prefix_len: u8 = len
            .parse()
            .map_err(|_| format!("service CIDR {cidr:?} has a bad prefix"))?;
        if !(8..=30).contains(&prefix_len) {
            return Err(format!(
                "service CIDR {cidr:?}: prefix must be between /8 and /30"
            ));
        }
        let mask = u32::MAX << (32 - prefix_len);
        Ok(ServiceNetwork {
            base: Ipv4Addr::from(u32::from(base) & mask),
            prefix_len,
            node_ports,
        })
    }

    /// The n-th address of the range (1 = the `kubernetes` service).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + n)
    }

    fn size(&self) -> u32 {
        1u32 << (32 - self.prefix_len)
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix_len);
        u32::from(ip) & mask == u32::from(self.base)
    }
}

/// A new Service's defaults and the checks that need no store.
pub fn default_and_validate(svc: &mut Value, name: &str) -> ApiResult<()> {
    if !svc.get("spec").is_some_and(Value::is_object) {
        svc["spec"] = json!({});
    }
    if let Some(families) = svc.pointer("/spec/ipFamilies").and_then(Value::as_array) {
        for (i, f) in families.iter().enumerate() {
            if f.as_str() != Some("IPv4") {
                let value = f.as_str().unwrap_or("").to_string();
                let cause = Cause::invalid(
                    &format!("spec.ipFamilies[{i}]"),
                    &value,
                    "only IPv4 is supported by this cluster",
                );
                return Err(ApiError::invalid("", "Service", name, vec![cause]));
            }
        }
    }
    service_spec::default_spec(svc);
    if svc.pointer("/spec/type").and_then(Value::as_str) != Some("ExternalName") {
        svc["spec"]["ipFamilies"] = json!(["IPv4"]);
        svc["spec"]["ipFamilyPolicy"] = json!("SingleStack");
    }
    let causes = service_spec::validate_spec(svc);
    if !causes.is_empty() {
        return Err(ApiError::invalid("", "Service", name, causes));
    }
    Ok(())
}

/// An updated Service's spec as upstream's update strategy leaves it (what the new type does
/// not use dropped, defaults filled, families again when it leaves ExternalName), then the
/// whole spec checked: a merge patch or an apply can leave one a create would refuse. Node
/// ports and the cluster IP are the allocations', which an update keeps.
pub fn prepare_update(old: &Value, new: &mut Value) -> ApiResult<()> {
    if !new.get("spec").is_some_and(Value::is_object) {
        new["spec"] = json!({});
    }
    drop_type_dependent_fields(old, new);
    service_spec::default_spec(new);
    let spec = &mut new["spec"];
    if spec["type"] != "ExternalName" {
        for (field, default) in [
            ("ipFamilies", json!(["IPv4"])),
            ("ipFamilyPolicy", json!("SingleStack")),
        ] {
            if spec.get(field).is_none_or(Value::is_null) {
                spec[field] = default;
            }
        }
    }
    let mut causes = service_spec::validate_spec(new);
    causes.extend(service_spec::validate_spec_update(old, new));
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid("", "Service", meta::name(new), causes))
}

/// Allocates the cluster IP and node ports a new service needs, writing them into it.
/// Returns the allocation keys, to free if the service is not stored after all.
/// Returns the keys it claimed.
pub async fn allocate(
    store: &Store,
    net: &ServiceNetwork,
    svc: &mut Value,
    owner: &str,
) -> ApiResult<Vec<String>> {
    allocate_holding(store, net, svc, owner, &[]).await
}

/// The allocations of an update of a Service from `old` (after `prepare_update`): what it now
/// needs is claimed (an IP when it stops being ExternalName, node ports for new ports or a new
/// NodePort type). Returns the keys claimed; the caller releases `keys_of(old)` that `new` no
/// longer holds once the update is stored.
pub async fn reallocate(
    store: &Store,
    net: &ServiceNetwork,
    old: &Value,
    new: &mut Value,
    owner: &str,
) -> ApiResult<Vec<String>> {
    allocate_holding(store, net, new, owner, &keys_of(old)).await
}

/// What the new type does not use is dropped from `new` where the update left it as it was
/// (upstream's strategy does the same): node ports when it stops being a NodePort or
/// LoadBalancer service, the cluster IP and its families when it becomes an ExternalName one,
/// the external traffic policy when it stops being reachable from outside, the load
/// balancer's own fields when it stops being one.
fn drop_type_dependent_fields(old: &Value, new: &mut Value) {
    let new_type = new
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    let node_ports = matches!(new_type, "NodePort" | "LoadBalancer");
    let external_name = new_type == "ExternalName";
    let load_balancer = new_type == "LoadBalancer";
    let old_ports = old.pointer("/spec/ports").and_then(Value::as_array);
    if !node_ports {
        if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                let unchanged = old_ports.into_iter().flatten().any(|p| {
                    p.get("port") == port.get("port") && p.get("nodePort") == port.get("nodePort")
                });
                if unchanged {
                    port.remove("nodePort");
                }
            }
        }
    }
    if external_name && new.pointer("/spec/clusterIP") == old.pointer("/spec/clusterIP") {
        if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
            for field in [
                "clusterIP",
                "clusterIPs",
                "ipFamilies",
                "ipFamilyPolicy",
                "internalTrafficPolicy",
            ] {
                spec.remove(field);
            }
        }
    }
    let same = |new: &Value, field: &str| {
        new.pointer(&format!("/spec/{field}")) == old.pointer(&format!("/spec/{field}"))
    };
    let mut unused = Vec::new();
    if !service_spec::externally_accessible(new) && same(new, "externalTrafficPolicy") {
        unused.push("externalTrafficPolicy");
    }
    if !load_balancer {
        for field in [
            "allocateLoadBalancerNodePorts",
            "loadBalancerClass",
            "healthCheckNodePort",
        ] {
            if same(new, field) {
                unused.push(field);
            }
        }
    }
    if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
        for field in unused {
            spec.remove(field);
        }
    }
}

/// Allocates what `svc` needs; keys in `held` (the stored version's) are its own already.
async fn allocate_holding(
    store: &Store,
    net: &ServiceNetwork,
    svc: &mut Value,
    owner: &str,
    held: &[String],
) -> ApiResult<Vec<String>> {
    let mut keys = Vec::new();
    let result = allocate_into(store, net, svc, owner, held, &mut keys).await;
    if result.is_err() {
        release_keys(store, &keys).await;
    }
    result.map(|_| keys)
}

async fn allocate_into(
    store: &Store,
    net: &ServiceNetwork,
    svc: &mut Value,
    owner: &str,
    held: &[String],
    keys: &mut Vec<String>,
) -> ApiResult<()> {
    let name = owner.rsplit('/').next().unwrap_or(owner).to_string();
    let service_type = svc
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if service_type == "ExternalName" {
        return Ok(());
    }
    let requested = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if requested != "None" {
        let ip = if requested.is_empty() {
            let ip = allocate_free_ip(store, net, owner).await?;
            keys.push(format!("{IP_PREFIX}{ip}"));
            ip
        } else {
            let ip: Ipv4Addr = requested.parse().map_err(|_| {
                ApiError::invalid(
                    "",
                    "Service",
                    &name,
                    vec![Cause::invalid(
                        "spec.clusterIP",
                        &requested,
                        "must be a valid IP address",
                    )],
                )
            })?;
            if !net.contains(ip) {
                let detail = format!(
                    "provided IP is not in the valid range. The range of valid IPs is {}/{}",
                    net.base, net.prefix_len
                );
                return Err(ApiError::invalid(
                    "",
                    "Service",
                    &name,
                    vec![Cause::invalid("spec.clusterIP", &requested, &detail)],
                ));
            }
            if !claim_unless_held(store, &format!("{IP_PREFIX}{ip}"), owner, held, keys).await? {
                let detail = "provided IP is already allocated";
                return Err(ApiError::invalid(
                    "",
                    "Service",
                    &name,
                    vec![Cause::invalid("spec.clusterIP", &requested, detail)],
                ));
            }
            ip
        };
        svc["spec"]["clusterIP"] = json!(ip.to_string());
        svc["spec"]["clusterIPs"] = json!([ip.to_string()]);
    } else {
        svc["spec"]["clusterIPs"] = json!(["None"]);
    }
    if matches!(service_type.as_str(), "NodePort" | "LoadBalancer") {
        // A LoadBalancer service may ask for no node ports; those it names are still its own.
        let allocate_free = svc
            .pointer("/spec/allocateLoadBalancerNodePorts")
            .and_then(Value::as_bool)
            != Some(false);
        let count = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for i in 0..count {
            let requested = svc["spec"]["ports"][i]
                .get("nodePort")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            if requested == 0 && !allocate_free {
                continue;
            }
            let port = if requested == 0 {
                let port = allocate_free_port(store, net, owner).await?;
                keys.push(format!("{PORT_PREFIX}{port}"));
                port
            } else {
                let (lo, hi) = net.node_ports;
                let port = u16::try_from(requested).ok().filter(|p| (lo..=hi).contains(p)).ok_or_else(|| {
                    let detail = format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}");
                    ApiError::invalid("", "Service", &name, vec![Cause::invalid(&format!("spec.ports[{i}].nodePort"), &requested.to_string(), &detail)])
                })?;
                let key = format!("{PORT_PREFIX}{port}");
                if !claim_unless_held(store, &key, owner, held, keys).await? {
                    let field = format!("spec.ports[{i}].nodePort");
                    return Err(ApiError::invalid(
                        "",
                        "Service",
                        &name,
                        vec![Cause::invalid(
                            &field,
                            &requested.to_string(),
                            "provided port is already allocated",
                        )],
                    ));
                }
                port
            };
            svc["spec"]["ports"][i]["nodePort"] = json!(port);
        }
    }
    Ok(())
}

/// Claims `key` for `owner` (noting it in `claimed`) unless the stored version holds it
/// already (`held`); false when someone else holds it.
async fn claim_unless_held(
    store: &Store,
    key: &str,
    owner: &str,
    held: &[String],
    claimed: &mut Vec<String>,
) -> ApiResult<bool> {
    if held.iter().any(|k| k == key) {
        return Ok(true);
    }
    let fresh = claim(store, key, owner).await?;
    if fresh {
        claimed.push(key.to_string());
    }
    Ok(fresh)
}

/// Claims `key` for `owner`; false when someone holds it.
async fn claim(store: &Store, key: &str, owner: &str) -> ApiResult<bool> {
    let value = owner.as_bytes().to_vec();
    match store.create(key, move |_| value).await {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists) => Ok(false),
        Err(e) => Err(store_error(e)),
    }
}

async fn allocate_free_ip(store: &Store, net: &ServiceNetwork, owner: &str) -> ApiResult<Ipv4Addr> {
    let used = allocated(store, IP_PREFIX)?;
    // Skip the network address, .1 (the `kubernetes` service) and the broadcast address; start
    // at a random offset like upstream so deleted IPs are not handed out again at once.
    let size = net.size();
    let start = 2 + rand::random::<u32>() % (size - 3);
    for i in 0..size - 3 {
        let offset = 2 + (start - 2 + i) % (size - 3);
        let ip = net.nth(offset);
        if used.contains(&ip.to_string()) {
            continue;
        }
        if claim(store, &format!("{IP_PREFIX}{ip}"), owner).await? {
            return Ok(ip);
        }
    }
    Err(ApiError::internal(
        "failed to allocate a serviceIP: range is full",
    ))
}

async fn allocate_free_port(store: &Store, net: &ServiceNetwork, owner: &str) -> ApiResult<u16> {
    let used = allocated(store, PORT_PREFIX)?;
    let (lo, hi) = net.node_ports;
    let span = u32::from(hi - lo) + 1;
    let start = rand::random::<u32>() % span;
    for i in 0..span {
        let port = lo + ((start + i) % span) as u16;
        if used.contains(&port.to_string()) {
            continue;
        }
        if claim(store, &format!("{PORT_PREFIX}{port}"), owner).await? {
            return Ok(port);
        }
    }
    Err(ApiError::internal(
        "failed to allocate a nodePort: range is full",
    ))
}

fn allocated(store: &Store, prefix: &str) -> ApiResult<HashSet<String>> {
    let list = store.list(prefix, None, 0).map_err(store_error)?;
    Ok(list
        .kvs
        .into_iter()
        .map(|kv| kv.key[prefix.len()..].to_string())
        .collect())
}

/// The allocation keys a stored service holds.
pub fn keys_of(svc: &Value) -> Vec<String> {
    let mut keys = Vec::new();
    if let Some(ip) = svc.pointer("/spec/clusterIP").and_then(Value::as_str) {
        if ip.parse::<Ipv4Addr>().is_ok() {
            keys.push(format!("{IP_PREFIX}{ip}"));
        }
    }
    for port in svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(p) = port.get("nodePort").and_then(Value::as_u64) {
            keys.push(format!("{PORT_PREFIX}{p}"));
        }
    }
    keys
}

pub async fn release_keys(store: &Store, keys: &[String]) {
    for key in keys {
        if let Err(e) = store.delete(key, None).await {
            if !matches!(e, StoreError::NotFound) {
                tracing::warn!(key, error = %e, "could not release a service allocation");
            }
        }
    }
}

/// Frees allocations whose service is gone (a crash between allocating and storing, or between
/// deleting and releasing).
pub async fn repair(store: &Store) -> ApiResult<usize> {
    let services = store
        .list("/core/services/", None, 0)
        .map_err(store_error)?;
    let mut held = HashSet::new();
    for kv in &services.kvs {
        held.extend(keys_of(&decode(&kv.value)?));
    }
    let mut freed = 0;
    for prefix in [IP_PREFIX, PORT_PREFIX] {
        let list = store.list(prefix, None, 0).map_err(store_error)?;
        for kv in list.kvs {
            if !held.contains(&kv.key) {
                release_keys(store, std::slice::from_ref(&kv.key)).await;
                freed += 1;
            }
        }
    }
    Ok(freed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_cidr_parses_and_names_its_addresses() {
        let net = ServiceNetwork::parse("10.43.0.0/16", (30000, 32767)).unwrap();
        assert_eq!(net.nth(1), Ipv4Addr::new(10, 43, 0, 1));
        assert_eq!(net.nth(10), Ipv4Addr::new(10, 43, 0, 10));
        assert!(net.contains(Ipv4Addr::new(10, 43, 255, 1)));
        assert!(!net.contains(Ipv4Addr::new(10, 44, 0, 1)));
        assert!(ServiceNetwork::parse("10.43.0.0", (1, 2)).is_err());
        assert!(ServiceNetwork::parse("nope/16", (1, 2)).is_err());
    }

    #[test]
    fn defaults_fill_protocol_target_port_and_families() {
        let mut svc = json!({"spec": {"ports": [{"port": 80}]}});
        default_and_validate(&mut svc, "web").unwrap();
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(svc["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(svc["spec"]["sessionAffinity"], "None");
    }

    #[test]
    fn invalid_services_are_rejected_with_field_causes() {
        let mut v6 = json!({"spec": {"ipFamilies": ["IPv6"], "ports": [{"port": 80}]}});
        let err = default_and_validate(&mut v6, "x").unwrap_err();
        assert_eq!(err.causes[0].field, "spec.ipFamilies[0]");
        let mut unnamed = json!({"spec": {"ports": [{"port": 80}, {"port": 81}]}});
        assert_eq!(
            default_and_validate(&mut unnamed, "x").unwrap_err().code,
            422
        );
        let mut bad_type = json!({"spec": {"type": "Magic", "ports": [{"port": 80}]}});
        assert_eq!(
            default_and_validate(&mut bad_type, "x").unwrap_err().causes[0].field,
            "spec.type"
        );
        let mut no_ports = json!({"spec": {}});
        assert_eq!(
            default_and_validate(&mut no_ports, "x").unwrap_err().causes[0].field,
            "spec.ports"
        );
    }

    #[test]
    fn ports_alike_are_refused_as_upstream_words_it() {
        let mut svc = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "ports": [
            {"name": "http", "port": 80, "nodePort": 30001},
            {"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30001},
            {"name": "Bad_Name", "port": 0, "protocol": "ICMP"},
        ]}});
        let err = default_and_validate(&mut svc, "web").unwrap_err();
        let summaries: Vec<String> = err.causes.iter().map(Cause::summary).collect();
        assert_eq!(
            summaries,
            [
                "spec.ports[1].name: Duplicate value: \"http\"",
                "spec.ports[2].name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 label \
                 must consist of lower case alphanumeric characters or '-', and must start and \
                 end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used \
                 for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                "spec.ports[2].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[2].protocol: Unsupported value: \"ICMP\": supported values: \
                 \"SCTP\", \"TCP\", \"UDP\"",
                "spec.ports[2].targetPort: Invalid value: 0: must be between 1 and 65535, \
                 inclusive",
                "spec.ports[1].nodePort: Duplicate value: 30001",
                "spec.ports[1]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\", \
                 AppProtocol:(*string)(nil), Port:80, TargetPort:intstr.IntOrString{Type:0, \
                 IntVal:0, StrVal:\"\"}, NodePort:0}",
            ]
        );
        let mut cluster_ip = json!({"spec": {"ports": [{"port": 80, "nodePort": 30001}]}});
        let err = default_and_validate(&mut cluster_ip, "web").unwrap_err();
        assert_eq!(
            err.causes[0].summary(),
            "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"
        );
    }

    #[test]
    fn an_update_gets_the_port_defaults_and_may_not_leave_two_ports_alike() {
        let old = json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}});
        let mut svc = json!({"metadata": {"name": "web"}, "spec": {"ports": [
            {"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}});
        prepare_update(&old, &mut svc).unwrap();
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        svc["spec"]["ports"][1] = json!({"name": "again", "port": 80});
        let err = prepare_update(&old, &mut svc).unwrap_err();
        assert_eq!(err.code, 422);
        assert_eq!(err.causes[0].field, "spec.ports[1]");
    }

    #[test]
    fn an_update_is_checked_like_a_create_after_the_new_type_dropped_what_it_does_not_use() {
        let old = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort",
            "clusterIP": "10.43.0.5", "externalTrafficPolicy": "Local", "sessionAffinity": "None",
            "ports": [{"port": 80, "nodePort": 30001, "protocol": "TCP", "targetPort": 80}]}});
        // Back to ClusterIP: the policy it had as a NodePort service goes with the node port.
        let mut cluster_ip = old.clone();
        cluster_ip["spec"]["type"] = json!("ClusterIP");
        prepare_update(&old, &mut cluster_ip).unwrap();
        assert!(cluster_ip["spec"].get("externalTrafficPolicy").is_none());
        assert!(cluster_ip["spec"]["ports"][0].get("nodePort").is_none());
        // Setting it on a ClusterIP service is refused as upstream refuses it.
        let mut local = cluster_ip.clone();
        local["spec"]["externalTrafficPolicy"] = json!("Local");
        let err = prepare_update(&cluster_ip, &mut local).unwrap_err();
        assert_eq!(
            err.causes[0].summary(),
            "spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set for \
             externally-accessible services"
        );
        let mut affinity = old.clone();
        affinity["spec"]["sessionAffinity"] = json!("Sticky");
        let err = prepare_update(&old, &mut affinity).unwrap_err();
        assert_eq!(
            err.causes[0].summary(),
            "spec.sessionAffinity: Unsupported value: \"Sticky\": supported values: \
             \"ClientIP\", \"None\""
        );
    }

    #[test]
    fn a_type_change_drops_what_the_new_type_does_not_use_unless_the_update_changed_it() {
        let old = json!({"spec": {"type": "NodePort", "clusterIP": "10.43.0.5",
            "ports": [{"port": 80, "nodePort": 30001}, {"port": 81, "nodePort": 30002}]}});
        let mut cluster_ip = old.clone();
        cluster_ip["spec"]["type"] = json!("ClusterIP");
        cluster_ip["spec"]["ports"][1]["nodePort"] = json!(30003);
        drop_type_dependent_fields(&old, &mut cluster_ip);
        assert_eq!(
            cluster_ip["spec"]["ports"],
            json!([{"port": 80}, {"port": 81, "nodePort": 30003}])
        );
        let mut external = old.clone();
        external["spec"]["type"] = json!("ExternalName");
        drop_type_dependent_fields(&old, &mut external);
        assert!(external["spec"].get("clusterIP").is_none(), "{external}");
        let mut still = old.clone();
        drop_type_dependent_fields(&old, &mut still);
        assert_eq!(still, old);
    }

    #[test]
    fn keys_of_lists_ip_and_node_ports() {
        let svc = json!({"spec": {"clusterIP": "10.43.0.5", "ports": [{"nodePort": 30001}]}});
        assert_eq!(
            keys_of(&svc),
            vec![
                "/allocations/clusterips/10.43.0.5",
                "/allocations/nodeports/30001"
            ]
        );
        assert!(keys_of(&json!({"spec": {"clusterIP": "None"}})).is_empty());
    }
}
