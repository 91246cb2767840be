//! The `pods/ephemeralcontainers` subresource (what `kubectl debug` writes): only
//! `spec.ephemeralContainers` changes, containers may only be added, and an ephemeral container
//! may not ask for what only a long-lived container gets (ports, probes, resources, lifecycle),
//! as upstream's `ValidatePodEphemeralContainersUpdate` says.

use serde_json::{json, Value};

use crate::api::meta;
use crate::api::Cause;

const FIELD: &str = "spec.ephemeralContainers";

/// Fields upstream refuses on an ephemeral container.
const FORBIDDEN: [&str; 8] = [
    "ports",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "resources",
    "resizePolicy",
    "restartPolicy",
];

/// The stored pod after a write to the subresource: the old pod with the proposal's
/// ephemeral containers, nothing else.
pub fn merge(old: &Value, proposed: &Value) -> Value {
    let mut new = old.clone();
    new["spec"]["ephemeralContainers"] = proposed
        .pointer("/spec/ephemeralContainers")
        .cloned()
        .unwrap_or_else(|| json!([]));
    if new["spec"]["ephemeralContainers"]
        .as_array()
        .is_some_and(Vec::is_empty)
        && old.pointer("/spec/ephemeralContainers").is_none()
    {
        if let Some(spec) = new["spec"].as_object_mut() {
            spec.remove("ephemeralContainers");
        }
    }
    new
}

fn containers<'a>(pod: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    pod["spec"][key].as_array().into_iter().flatten()
}

/// Upstream forbids fields that are not their zero value: `resources: {}` (which kubectl
/// sends) is as good as none.
fn is_set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => true,
    }
}

/// Causes that make the update invalid.
pub fn validate_update(old: &Value, new: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let old_list: Vec<&Value> = containers(old, "ephemeralContainers").collect();
    let new_list: Vec<&Value> = containers(new, "ephemeralContainers").collect();
    for before in &old_list {
        let name = before["name"].as_str().unwrap_or_default();
        match new_list.iter().find(|c| c["name"] == before["name"]) {
            None => causes.push(Cause::forbidden(
                FIELD,
                &format!("existing ephemeral containers \"{name}\" may not be removed"),
            )),
            Some(after) if after != before => causes.push(Cause::forbidden(
                FIELD,
                &format!("existing ephemeral containers \"{name}\" may not be changed"),
            )),
            Some(_) => {}
        }
    }
    let regular: Vec<&str> = containers(new, "containers")
        .chain(containers(new, "initContainers"))
        .filter_map(|c| c["name"].as_str())
        .collect();
    let mut seen: Vec<&str> = regular.clone();
    for (i, c) in new_list.iter().enumerate() {
        let path = format!("{FIELD}[{i}]");
        let name = c["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            causes.push(Cause::required(&format!("{path}.name")));
        } else if let Some(problem) = meta::check_dns1123_label(name) {
            causes.push(Cause::invalid(&format!("{path}.name"), name, &problem));
        } else if seen.contains(&name) {
            causes.push(Cause {
                reason: "FieldValueDuplicate".into(),
                message: format!("Duplicate value: \"{name}\""),
                field: format!("{path}.name"),
            });
        } else {
            seen.push(name);
        }
        if c["image"].as_str().unwrap_or_default().is_empty() {
            causes.push(Cause::required(&format!("{path}.image")));
        }
        for field in FORBIDDEN {
            if c.get(field).is_some_and(is_set) {
                causes.push(Cause::forbidden(
                    &format!("{path}.{field}"),
                    "cannot be set for an Ephemeral Container",
                ));
            }
        }
        if let Some(target) = c["targetContainerName"].as_str() {
            if !target.is_empty() && !regular.contains(&target) {
                causes.push(Cause {
                    reason: "FieldValueNotFound".into(),
                    message: format!("Not found: \"{target}\""),
                    field: format!("{path}.targetContainerName"),
                });
            }
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ephemeral: Value) -> Value {
        json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "app", "image": "busybox"}], "ephemeralContainers": ephemeral},
        })
    }

    fn debugger() -> Value {
        json!({"name": "debugger-1", "image": "busybox", "targetContainerName": "app"})
    }

    #[test]
    fn only_the_ephemeral_containers_of_a_proposal_are_taken() {
        let old = pod(json!([]));
        let mut proposed = pod(json!([debugger()]));
        proposed["spec"]["containers"][0]["image"] = json!("other");
        proposed["metadata"]["labels"] = json!({"x": "y"});
        let new = merge(&old, &proposed);
        assert_eq!(new["spec"]["containers"][0]["image"], "busybox");
        assert!(new["metadata"]["labels"].is_null());
        assert_eq!(new["spec"]["ephemeralContainers"][0]["name"], "debugger-1");
    }

    #[test]
    fn adding_a_plain_debug_container_is_valid() {
        assert!(validate_update(&pod(json!([])), &pod(json!([debugger()]))).is_empty());
        // What kubectl debug sends: empty resources are no resources.
        let mut c = debugger();
        c["resources"] = json!({});
        assert!(validate_update(&pod(json!([])), &pod(json!([c]))).is_empty());
    }

    #[test]
    fn existing_ephemeral_containers_may_not_be_removed_or_changed() {
        let old = pod(json!([debugger()]));
        let removed = validate_update(&old, &pod(json!([])));
        assert!(
            removed[0].message.contains("may not be removed"),
            "{removed:?}"
        );
        let mut changed = debugger();
        changed["image"] = json!("alpine");
        let causes = validate_update(&old, &pod(json!([changed])));
        assert!(
            causes[0].message.contains("may not be changed"),
            "{causes:?}"
        );
    }

    #[test]
    fn ports_probes_and_resources_are_forbidden() {
        let mut c = debugger();
        c["ports"] = json!([{"containerPort": 80}]);
        c["readinessProbe"] = json!({"exec": {"command": ["true"]}});
        c["resources"] = json!({"limits": {"cpu": "1"}});
        let causes = validate_update(&pod(json!([])), &pod(json!([c])));
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.ephemeralContainers[0].ports",
                "spec.ephemeralContainers[0].readinessProbe",
                "spec.ephemeralContainers[0].resources"
            ]
        );
        assert!(causes.iter().all(|c| c.reason == "FieldValueForbidden"));
    }

    #[test]
    fn names_must_be_unique_and_targets_must_exist() {
        let mut c = debugger();
        c["name"] = json!("app");
        c["targetContainerName"] = json!("nope");
        let causes = validate_update(&pod(json!([])), &pod(json!([c])));
        let reasons: Vec<&str> = causes.iter().map(|c| c.reason.as_str()).collect();
        assert_eq!(reasons, ["FieldValueDuplicate", "FieldValueNotFound"]);
    }
}
