//! DefaultTolerationSeconds: every new pod that does not say otherwise tolerates the
//! `not-ready` and `unreachable` NoExecute taints for 300 s, so a node that goes silent for a
//! moment does not lose its pods at once, but one that stays away does (upstream's admission
//! plugin of the same name).

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{Attributes, Operation, Plugin};
use crate::api::ApiResult;
use crate::controllers::nodelifecycle::{NOT_READY_TAINT, UNREACHABLE_TAINT};

/// Upstream's `--default-not-ready-toleration-seconds` and `--default-unreachable-toleration-seconds`.
pub const DEFAULT_SECONDS: i64 = 300;

pub struct DefaultTolerationSeconds;

#[async_trait]
impl Plugin for DefaultTolerationSeconds {
    fn name(&self) -> &'static str {
        "DefaultTolerationSeconds"
    }

    async fn mutate(&self, attributes: &Attributes<'_>, object: &mut Value) -> ApiResult<()> {
        let is_pod = attributes.resource.group.is_empty() && attributes.resource.kind == "Pod";
        if is_pod && attributes.operation == Operation::Create && attributes.subresource.is_none() {
            add_default_tolerations(object);
        }
        Ok(())
    }
}

/// Adds the two default tolerations unless the pod already tolerates the taint (a toleration
/// with that key or no key, for NoExecute or any effect).
pub fn add_default_tolerations(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let existing = spec.get("tolerations").and_then(Value::as_array);
    let covers = |taint: &str| {
        existing.into_iter().flatten().any(|t| {
            let key = t.get("key").and_then(Value::as_str).unwrap_or("");
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            (key == taint || key.is_empty()) && (effect == "NoExecute" || effect.is_empty())
        })
    };
    let missing: Vec<Value> = [NOT_READY_TAINT, UNREACHABLE_TAINT]
        .into_iter()
        .filter(|taint| !covers(taint))
        .map(|taint| {
            json!({
                "key": taint,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": DEFAULT_SECONDS,
            })
        })
        .collect();
    if missing.is_empty() {
        return;
    }
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if !tolerations.is_array() {
        *tolerations = json!([]);
    }
    if let Some(list) = tolerations.as_array_mut() {
        list.extend(missing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_without_tolerations_gets_both_defaults() {
        let mut pod = json!({"spec": {"containers": []}});
        add_default_tolerations(&mut pod);
        let tolerations = pod["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(tolerations.len(), 2);
        assert_eq!(tolerations[0]["key"], NOT_READY_TAINT);
        assert_eq!(tolerations[1]["key"], UNREACHABLE_TAINT);
        assert_eq!(tolerations[1]["tolerationSeconds"], 300);
        assert_eq!(tolerations[1]["effect"], "NoExecute");
    }

    #[test]
    fn a_pod_that_already_tolerates_a_taint_keeps_its_own_toleration() {
        let mut pod = json!({"spec": {"tolerations": [
            {"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2}
        ]}});
        add_default_tolerations(&mut pod);
        let tolerations = pod["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(tolerations.len(), 2);
        assert_eq!(tolerations[0]["tolerationSeconds"], 2);
        assert_eq!(tolerations[1]["key"], NOT_READY_TAINT);
    }

    #[test]
    fn a_toleration_of_everything_needs_no_defaults() {
        let mut pod = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        add_default_tolerations(&mut pod);
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 1);
    }
}
