//! What an object costs against a ResourceQuota (upstream's quota evaluators), in exact
//! milli-units, and how quantities are printed back. Shared by the ResourceQuota admission
//! plugin (which refuses a create over the limit) and the controller that keeps `status.used`.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::scheduler::quantity::parse_milli;

/// Resource name → amount in milli-units (a count of 1 is 1000).
pub type Usage = BTreeMap<String, i128>;

const ONE: i128 = 1000;

/// The quota names an object of `plural`.`group` is charged under, for a `hard` key: whether
/// `key` concerns this kind of object at all.
pub fn concerns(group: &str, plural: &str, key: &str) -> bool {
    if key == count_key(group, plural) {
        return true;
    }
    if !group.is_empty() {
        return false;
    }
    match plural {
        "pods" => {
            key == "pods"
                || key == "cpu"
                || key == "memory"
                || key == "ephemeral-storage"
                || key.starts_with("requests.") && key != "requests.storage"
                || key.starts_with("limits.")
        }
        "services" => matches!(
            key,
            "services" | "services.nodeports" | "services.loadbalancers"
        ),
        "persistentvolumeclaims" => {
            key == "persistentvolumeclaims"
                || key == "requests.storage"
                || key.ends_with(".storageclass.storage.k8s.io/requests.storage")
                || key.ends_with(".storageclass.storage.k8s.io/persistentvolumeclaims")
        }
        "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => key == plural,
        _ => false,
    }
}

/// `count/<plural>` for the core group, `count/<plural>.<group>` otherwise.
pub fn count_key(group: &str, plural: &str) -> String {
    match group.is_empty() {
        true => format!("count/{plural}"),
        false => format!("count/{plural}.{group}"),
    }
}

/// Does the object still count? Finished pods do not (upstream `QuotaV1Pod`).
pub fn counts(group: &str, plural: &str, object: &Value) -> bool {
    if group.is_empty() && plural == "pods" {
        let phase = object.pointer("/status/phase").and_then(Value::as_str);
        return !matches!(phase, Some("Succeeded" | "Failed"));
    }
    true
}

/// What one object uses.
pub fn usage(group: &str, plural: &str, object: &Value) -> Usage {
    let mut usage = Usage::new();
    usage.insert(count_key(group, plural), ONE);
    if !group.is_empty() {
        return usage;
    }
    match plural {
        "pods" => {
            usage.insert("pods".into(), ONE);
            let (requests, limits) = pod_requests_and_limits(object);
            for (name, amount) in requests {
                usage.insert(format!("requests.{name}"), amount);
                if matches!(name.as_str(), "cpu" | "memory" | "ephemeral-storage") {
                    usage.insert(name, amount);
                }
            }
            for (name, amount) in limits {
                usage.insert(format!("limits.{name}"), amount);
            }
        }
        "services" => {
            usage.insert("services".into(), ONE);
            let type_ = object.pointer("/spec/type").and_then(Value::as_str);
            let ports = object
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map_or(0, Vec::len) as i128;
            match type_ {
                Some("NodePort") => {
                    usage.insert("services.nodeports".into(), ports * ONE);
                }
                Some("LoadBalancer") => {
                    usage.insert("services.loadbalancers".into(), ONE);
                    usage.insert("services.nodeports".into(), ports * ONE);
                }
                _ => {}
            }
        }
        "persistentvolumeclaims" => {
            usage.insert("persistentvolumeclaims".into(), ONE);
            let storage = object
                .pointer("/spec/resources/requests/storage")
                .and_then(Value::as_str)
                .and_then(parse_milli)
                .unwrap_or(0);
            usage.insert("requests.storage".into(), storage);
            if let Some(class) = object
                .pointer("/spec/storageClassName")
                .and_then(Value::as_str)
            {
                let prefix = format!("{class}.storageclass.storage.k8s.io");
                usage.insert(format!("{prefix}/requests.storage"), storage);
                usage.insert(format!("{prefix}/persistentvolumeclaims"), ONE);
            }
        }
        "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => {
            usage.insert(plural.to_string(), ONE);
        }
        _ => {}
    }
    usage
}

/// A pod's effective requests and limits: per resource the larger of the containers' sum and
/// the largest init container, as upstream's `PodRequests`.
pub fn pod_requests_and_limits(pod: &Value) -> (Usage, Usage) {
    let sum_and_max = |field: &str| -> Usage {
        let mut sum = Usage::new();
        for container in containers(pod, "containers") {
            for (name, amount) in container_resources(container, field) {
                // Saturating: the amounts are a client's, and a few huge ones must not overflow.
                let total = sum.entry(name).or_default();
                *total = total.saturating_add(amount);
            }
        }
        for container in containers(pod, "initContainers") {
            for (name, amount) in container_resources(container, field) {
                let entry = sum.entry(name).or_default();
                *entry = (*entry).max(amount);
            }
        }
        sum
    };
    (sum_and_max("requests"), sum_and_max("limits"))
}

pub fn containers<'a>(pod: &'a Value, field: &str) -> impl Iterator<Item = &'a Value> {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// A container's `resources.<field>` (requests or limits), parsed.
pub fn container_resources(container: &Value, field: &str) -> Usage {
    container
        .pointer(&format!("/resources/{field}"))
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(name, q)| Some((name.clone(), parse_milli(&quantity_text(q)?)?)))
        .collect()
}

fn quantity_text(q: &Value) -> Option<String> {
    match q {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Quota keys that, when limited, every container must state (upstream's pod evaluator
/// `Constraints`, kept for backward compatibility).
const MUST_SPECIFY: [&str; 6] = [
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

/// `must specify limits.cpu for: a,b; requests.memory for: a` when a container of the pod
/// does not state what a quota limits.
pub fn missing_pod_constraints(pod: &Value, limited: &[&str]) -> Option<String> {
    let required: Vec<&str> = MUST_SPECIFY
        .into_iter()
        .filter(|k| limited.contains(k))
        .collect();
    let mut missing: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for container in containers(pod, "containers").chain(containers(pod, "initContainers")) {
        let requests = container_resources(container, "requests");
        let limits = container_resources(container, "limits");
        let name = container.get("name").and_then(Value::as_str).unwrap_or("");
        for key in &required {
            let stated = match *key {
                "cpu" | "requests.cpu" => requests.contains_key("cpu"),
                "memory" | "requests.memory" => requests.contains_key("memory"),
                "limits.cpu" => limits.contains_key("cpu"),
                _ => limits.contains_key("memory"),
            };
            if !stated {
                missing.entry(key).or_default().push(name.to_string());
            }
        }
    }
    if missing.is_empty() {
        return None;
    }
    let parts: Vec<String> = missing
        .into_iter()
        .map(|(key, mut names)| {
            names.sort();
            names.dedup();
            format!("{key} for: {}", names.join(","))
        })
        .collect();
    Some(format!("must specify {}", parts.join("; ")))
}

/// Does a quota with these `scopes` apply to the object? Pod scopes: Terminating (has
/// activeDeadlineSeconds), NotTerminating, BestEffort (no requests or limits), NotBestEffort.
pub fn scopes_match(scopes: &[String], group: &str, plural: &str, object: &Value) -> bool {
    scopes.iter().all(|scope| {
        let is_pod = group.is_empty() && plural == "pods";
        let terminating = object
            .pointer("/spec/activeDeadlineSeconds")
            .is_some_and(|v| !v.is_null());
        let best_effort = || {
            let (requests, limits) = pod_requests_and_limits(object);
            requests.is_empty() && limits.is_empty()
        };
        match scope.as_str() {
            "Terminating" => is_pod && terminating,
            "NotTerminating" => is_pod && !terminating,
            "BestEffort" => is_pod && best_effort(),
            "NotBestEffort" => is_pod && !best_effort(),
            _ => false,
        }
    })
}

/// Prints milli-units back as a quantity the way a person would write it: whole numbers
/// plain, fractions in `m`, and whole multiples of 1024 with binary suffixes.
pub fn format_quantity(milli: i128) -> String {
    if milli % ONE != 0 {
        return format!("{milli}m");
    }
    let whole = milli / ONE;
    for (suffix, factor) in [("Gi", 1i128 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if whole != 0 && whole % factor == 0 {
            return format!("{}{suffix}", whole / factor);
        }
    }
    whole.to_string()
}

/// `a=1,b=2Mi` as upstream's `prettyPrint` of a resource list.
pub fn pretty(usage: &Usage) -> String {
    usage
        .iter()
        .map(|(k, v)| format!("{k}={}", format_quantity(*v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// A quota's `spec.hard`, parsed.
pub fn hard_of(quota: &Value) -> Usage {
    quota
        .pointer("/spec/hard")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, q)| Some((k.clone(), parse_milli(&quantity_text(q)?)?)))
        .collect()
}

/// A quota's `status.used`, parsed.
pub fn used_of(quota: &Value) -> Usage {
    quota
        .pointer("/status/used")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, q)| Some((k.clone(), parse_milli(&quantity_text(q)?)?)))
        .collect()
}

pub fn scopes_of(quota: &Value) -> Vec<String> {
    quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: Value, init: Value) -> Value {
        json!({"spec": {"containers": containers, "initContainers": init}})
    }

    #[test]
    fn a_pod_uses_the_sum_of_its_containers_or_its_largest_init_container() {
        let p = pod(
            json!([
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1"}}},
                {"name": "b", "resources": {"requests": {"cpu": "0.2", "memory": "64Mi"}}},
            ]),
            json!([{"name": "i", "resources": {"requests": {"cpu": "500m"}}}]),
        );
        let u = usage("", "pods", &p);
        assert_eq!(u["pods"], 1000);
        assert_eq!(u["count/pods"], 1000);
        assert_eq!(u["requests.cpu"], 500);
        assert_eq!(u["cpu"], 500);
        assert_eq!(u["requests.memory"], 128 * 1024 * 1024 * 1000);
        assert_eq!(u["limits.cpu"], 1000);
        assert_eq!(format_quantity(u["requests.memory"]), "128Mi");
        assert_eq!(format_quantity(u["requests.cpu"]), "500m");
    }

    #[test]
    fn object_counts_use_the_count_syntax_and_the_legacy_names() {
        assert!(concerns("", "configmaps", "configmaps"));
        assert!(concerns("", "configmaps", "count/configmaps"));
        assert!(concerns("apps", "deployments", "count/deployments.apps"));
        assert!(!concerns("apps", "deployments", "pods"));
        assert!(concerns("", "pods", "limits.memory"));
        assert!(!concerns("", "pods", "requests.storage"));
        let svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 443}]}});
        let u = usage("", "services", &svc);
        assert_eq!(u["services.nodeports"], 2000);
    }

    #[test]
    fn containers_must_state_what_a_quota_limits() {
        let p = pod(
            json!([
                {"name": "b", "resources": {"requests": {"cpu": "1"}}},
                {"name": "a"},
            ]),
            json!([]),
        );
        assert_eq!(
            missing_pod_constraints(&p, &["requests.cpu", "limits.memory", "pods"]).as_deref(),
            Some("must specify limits.memory for: a,b; requests.cpu for: a")
        );
        assert_eq!(missing_pod_constraints(&p, &["pods"]), None);
    }

    #[test]
    fn pod_scopes_follow_deadlines_and_qos() {
        let best_effort = pod(json!([{"name": "a"}]), json!([]));
        let scopes = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(scopes_match(
            &scopes(&["BestEffort", "NotTerminating"]),
            "",
            "pods",
            &best_effort
        ));
        assert!(!scopes_match(
            &scopes(&["NotBestEffort"]),
            "",
            "pods",
            &best_effort
        ));
        assert!(!scopes_match(
            &scopes(&["BestEffort"]),
            "",
            "services",
            &json!({})
        ));
    }

    #[test]
    fn resource_lists_print_sorted_as_upstream() {
        let u = Usage::from([("pods".to_string(), 2000), ("limits.cpu".to_string(), 1500)]);
        assert_eq!(pretty(&u), "limits.cpu=1500m,pods=2");
    }
}
