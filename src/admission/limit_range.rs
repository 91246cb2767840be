//! LimitRanger: the namespace's LimitRanges give containers default requests and limits
//! (mutating) and bound them with min, max and maxLimitRequestRatio, per Container and per Pod
//! (validating), with upstream's messages.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::quota::{container_resources, containers, format_quantity, pod_requests_and_limits};
use super::resource_quota::forbidden;
use super::{Attributes, Operation, Plugin};
use crate::api::resources;
use crate::api::ApiResult;
use crate::registry::generic::{decode, ListOptions, Registry};
use crate::scheduler::quantity::parse_milli;

const ANNOTATION: &str = "kubernetes.io/limit-ranger";

pub struct LimitRanger {
    registry: Registry,
}

impl LimitRanger {
    pub fn new(registry: Registry) -> LimitRanger {
        LimitRanger { registry }
    }

    /// The `spec.limits` items of every LimitRange in the namespace.
    fn items(&self, namespace: &str) -> ApiResult<Vec<Value>> {
        let Some(r) = resources::find("", "v1", "limitranges") else {
            return Ok(Vec::new());
        };
        let page = self
            .registry
            .list(r, Some(namespace), &ListOptions::default())?;
        let mut items = Vec::new();
        for raw in &page.items {
            let range = decode(raw)?;
            if let Some(limits) = range.pointer("/spec/limits").and_then(Value::as_array) {
                items.extend(limits.iter().cloned());
            }
        }
        Ok(items)
    }
}

fn applies(a: &Attributes<'_>) -> bool {
    a.resource.group.is_empty()
        && a.resource.plural == "pods"
        && a.subresource.is_none()
        && a.operation == Operation::Create
        && !a.namespace.is_empty()
}

#[async_trait]
impl Plugin for LimitRanger {
    fn name(&self) -> &'static str {
        "LimitRanger"
    }

    async fn mutate(&self, a: &Attributes<'_>, pod: &mut Value) -> ApiResult<()> {
        if !applies(a) {
            return Ok(());
        }
        for item in self.items(a.namespace)? {
            if item.get("type").and_then(Value::as_str) == Some("Container") {
                apply_defaults(&item, pod);
            }
        }
        Ok(())
    }

    async fn validate(&self, a: &Attributes<'_>, pod: Option<&Value>) -> ApiResult<()> {
        let Some(pod) = pod.filter(|_| applies(a)) else {
            return Ok(());
        };
        let mut errors = Vec::new();
        for item in self.items(a.namespace)? {
            errors.extend(violations(&item, pod));
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(forbidden(a, &errors[0])),
            _ => Err(forbidden(a, &format!("[{}]", errors.join(", ")))),
        }
    }
}

fn resource_list(item: &Value, field: &str) -> BTreeMap<String, Value> {
    item.get(field)
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// A Container item's default limits and requests after upstream's LimitRange defaulting: the
/// limit defaults to `max`, the request to the default limit, then to `min`.
fn container_defaults(item: &Value) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    let mut limits = resource_list(item, "default");
    for (k, v) in resource_list(item, "max") {
        limits.entry(k).or_insert(v);
    }
    let mut requests = resource_list(item, "defaultRequest");
    for (k, v) in limits.iter().chain(resource_list(item, "min").iter()) {
        requests.entry(k.clone()).or_insert_with(|| v.clone());
    }
    (limits, requests)
}

/// Fills in what each container leaves unset and records it in the `kubernetes.io/limit-ranger`
/// annotation, as upstream.
pub fn apply_defaults(item: &Value, pod: &mut Value) {
    let (default_limits, default_requests) = container_defaults(item);
    if default_limits.is_empty() && default_requests.is_empty() {
        return;
    }
    let mut notes = Vec::new();
    for (field, kind) in [
        ("containers", "container"),
        ("initContainers", "init container"),
    ] {
        let Some(list) = pod
            .pointer_mut(&format!("/spec/{field}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for container in list.iter_mut() {
            let name = container
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let set_requests = fill(container, "requests", &default_requests);
            let set_limits = fill(container, "limits", &default_limits);
            if !set_requests.is_empty() {
                notes.push(format!(
                    "{} request for {kind} {name}",
                    set_requests.join(", ")
                ));
            }
            if !set_limits.is_empty() {
                notes.push(format!("{} limit for {kind} {name}", set_limits.join(", ")));
            }
        }
    }
    if notes.is_empty() {
        return;
    }
    if let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
        if !annotations.is_object() {
            *annotations = json!({});
        }
        annotations[ANNOTATION] = json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
    }
}

/// Sets each of `defaults` the container's `resources.<field>` lacks; returns the names set.
fn fill(container: &mut Value, field: &str, defaults: &BTreeMap<String, Value>) -> Vec<String> {
    let mut set = Vec::new();
    if defaults.is_empty() || !container.is_object() {
        return set;
    }
    let resources = &mut container["resources"];
    if !resources.is_object() {
        *resources = json!({});
    }
    let list = &mut resources[field];
    if !list.is_object() {
        *list = json!({});
    }
    for (name, value) in defaults {
        if list.get(name).is_none() {
            list[name] = value.clone();
            set.push(name.clone());
        }
    }
    set
}

/// Upstream's min/max/ratio constraints for one LimitRange item against a pod.
pub fn violations(item: &Value, pod: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    match item.get("type").and_then(Value::as_str) {
        Some("Container") => {
            for container in containers(pod, "initContainers").chain(containers(pod, "containers"))
            {
                let requests = container_resources(container, "requests");
                let limits = container_resources(container, "limits");
                check(item, "Container", &requests, &limits, &mut errors);
            }
        }
        Some("Pod") => {
            let (requests, limits) = pod_requests_and_limits(pod);
            check(item, "Pod", &requests, &limits, &mut errors);
        }
        _ => {}
    }
    errors
}

fn check(
    item: &Value,
    kind: &str,
    requests: &BTreeMap<String, i128>,
    limits: &BTreeMap<String, i128>,
    errors: &mut Vec<String>,
) {
    let parsed = |field: &str| -> Vec<(String, i128)> {
        resource_list(item, field)
            .into_iter()
            .filter_map(|(k, v)| Some((k, parse_milli(v.as_str()?)?)))
            .collect()
    };
    let show = |m: i128| format_quantity(m);
    for (name, min) in parsed("min") {
        let (req, lim) = (requests.get(&name), limits.get(&name));
        match req {
            None => errors.push(format!(
                "minimum {name} usage per {kind} is {}.  No request is specified",
                show(min)
            )),
            Some(r) if *r < min => errors.push(format!(
                "minimum {name} usage per {kind} is {}, but request is {}",
                show(min),
                show(*r)
            )),
            _ => {
                if let Some(l) = lim.filter(|l| **l < min) {
                    errors.push(format!(
                        "minimum {name} usage per {kind} is {}, but limit is {}",
                        show(min),
                        show(*l)
                    ));
                }
            }
        }
    }
    for (name, max) in parsed("max") {
        let (req, lim) = (requests.get(&name), limits.get(&name));
        match lim {
            None => errors.push(format!(
                "maximum {name} usage per {kind} is {}.  No limit is specified",
                show(max)
            )),
            Some(l) if *l > max => errors.push(format!(
                "maximum {name} usage per {kind} is {}, but limit is {}",
                show(max),
                show(*l)
            )),
            _ => {
                if let Some(r) = req.filter(|r| **r > max) {
                    errors.push(format!(
                        "maximum {name} usage per {kind} is {}, but request is {}",
                        show(max),
                        show(*r)
                    ));
                }
            }
        }
    }
    for (name, ratio) in parsed("maxLimitRequestRatio") {
        let req = requests.get(&name).copied().unwrap_or(0);
        let lim = limits.get(&name).copied().unwrap_or(0);
        if req == 0 {
            errors.push(format!(
                "{name} max limit to request ratio per {kind} is {}, but no request is specified or request is 0",
                show(ratio)
            ));
        } else if lim == 0 {
            errors.push(format!(
                "{name} max limit to request ratio per {kind} is {}, but no limit is specified or limit is 0",
                show(ratio)
            ));
        } else {
            let observed = lim as f64 / req as f64;
            if observed * 1000.0 > ratio as f64 {
                errors.push(format!(
                    "{name} max limit to request ratio per {kind} is {}, but provided ratio is {observed:.6}",
                    show(ratio)
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container_item() -> Value {
        json!({"type": "Container",
            "default": {"cpu": "500m", "memory": "128Mi"},
            "defaultRequest": {"cpu": "100m"},
            "min": {"cpu": "50m"},
            "max": {"cpu": "1", "memory": "1Gi"},
            "maxLimitRequestRatio": {"cpu": "4"}})
    }

    #[test]
    fn defaults_fill_only_what_containers_leave_unset_and_are_annotated() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a"},
            {"name": "b", "resources": {"limits": {"cpu": "200m"}}},
        ]}});
        apply_defaults(&container_item(), &mut pod);
        let a = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(a["requests"]["cpu"], "100m");
        // No default request for memory: it falls back to the default limit.
        assert_eq!(a["requests"]["memory"], "128Mi");
        assert_eq!(a["limits"]["cpu"], "500m");
        let b = &pod["spec"]["containers"][1]["resources"];
        assert_eq!(b["limits"]["cpu"], "200m");
        assert_eq!(
            pod["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: cpu, memory request for container a; cpu, memory limit for container a; \
             cpu, memory request for container b; memory limit for container b"
        );
    }

    #[test]
    fn min_max_and_ratio_are_refused_with_upstreams_messages() {
        let pod = json!({"spec": {"containers": [{"name": "a", "resources": {
            "requests": {"cpu": "20m", "memory": "64Mi"},
            "limits": {"cpu": "2", "memory": "64Mi"}}}]}});
        assert_eq!(
            violations(&container_item(), &pod),
            vec![
                "minimum cpu usage per Container is 50m, but request is 20m".to_string(),
                "maximum cpu usage per Container is 1, but limit is 2".to_string(),
                "cpu max limit to request ratio per Container is 4, but provided ratio is 100.000000"
                    .to_string(),
            ]
        );
    }

    #[test]
    fn a_pod_item_bounds_the_sum_of_the_containers() {
        let item = json!({"type": "Pod", "max": {"memory": "100Mi"}});
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"limits": {"memory": "64Mi"}}},
            {"name": "b", "resources": {"limits": {"memory": "64Mi"}}},
        ]}});
        assert_eq!(
            violations(&item, &pod),
            vec!["maximum memory usage per Pod is 100Mi, but limit is 128Mi".to_string()]
        );
    }
}
