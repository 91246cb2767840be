//! Priority admission, as upstream's plugin: a new pod's `priorityClassName` (or the global
//! default class) becomes its `spec.priority` and `spec.preemptionPolicy`, which the scheduler's
//! queue and preemption read; PriorityClasses themselves are checked (user values at most one
//! billion, `system-` names reserved, one global default). The two system classes exist from
//! the first start.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::resource_quota::forbidden;
use super::{Attributes, Operation, Plugin};
use crate::api::resources::{self, Resource};
use crate::api::ApiResult;
use crate::registry::generic::{decode, ListOptions, Registry};

/// Upstream's `HighestUserDefinablePriority`.
pub const HIGHEST_USER_PRIORITY: i64 = 1_000_000_000;
pub const SYSTEM_CLUSTER_CRITICAL: &str = "system-cluster-critical";
pub const SYSTEM_NODE_CRITICAL: &str = "system-node-critical";

/// The built-in classes: name, value, description (upstream's `SystemPriorityClasses`).
const SYSTEM_CLASSES: [(&str, i64, &str); 2] = [
    (
        SYSTEM_NODE_CRITICAL,
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        SYSTEM_CLUSTER_CRITICAL,
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

fn priority_classes() -> Option<&'static Resource> {
    resources::find("scheduling.k8s.io", "v1", "priorityclasses")
}

/// Creates the system PriorityClasses that are missing.
pub async fn ensure_system_classes(registry: &Registry) -> ApiResult<()> {
    let Some(r) = priority_classes() else {
        return Ok(());
    };
    for (name, value, description) in SYSTEM_CLASSES {
        let body = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "description": description});
        match registry.create(r, "", body, false).await {
            Ok(_) => {}
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub struct Priority {
    registry: Registry,
}

impl Priority {
    pub fn new(registry: Registry) -> Priority {
        Priority { registry }
    }

    fn classes(&self) -> ApiResult<Vec<Value>> {
        let Some(r) = priority_classes() else {
            return Ok(Vec::new());
        };
        let page = self.registry.list(r, None, &ListOptions::default())?;
        page.items.iter().map(|raw| decode(raw)).collect()
    }
}

#[async_trait]
impl Plugin for Priority {
    fn name(&self) -> &'static str {
        "Priority"
    }

    async fn mutate(&self, a: &Attributes<'_>, object: &mut Value) -> ApiResult<()> {
        let is_pod = a.resource.group.is_empty() && a.resource.plural == "pods";
        if !is_pod || a.operation != Operation::Create || a.subresource.is_some() {
            return Ok(());
        }
        resolve_pod_priority(object, &self.classes()?).map_err(|why| forbidden(a, &why))
    }

    async fn validate(&self, a: &Attributes<'_>, object: Option<&Value>) -> ApiResult<()> {
        let is_class =
            a.resource.group == "scheduling.k8s.io" && a.resource.plural == "priorityclasses";
        let Some(class) = object.filter(|_| is_class && a.operation != Operation::Delete) else {
            return Ok(());
        };
        let others: Vec<Value> = self
            .classes()?
            .into_iter()
            .filter(|c| c.pointer("/metadata/name").and_then(Value::as_str) != Some(a.name))
            .collect();
        check_class(class, &others).map_err(|why| forbidden(a, &why))
    }
}

fn class_name(class: &Value) -> &str {
    class
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn is_global_default(class: &Value) -> bool {
    class.get("globalDefault").and_then(Value::as_bool) == Some(true)
}

/// Sets `spec.priority` (and the class's preemption policy) from the pod's class, or from the
/// global default class when it names none; refuses an unknown class or a priority that
/// contradicts its class.
pub fn resolve_pod_priority(pod: &mut Value, classes: &[Value]) -> Result<(), String> {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let named = spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(String::from);
    let class = match &named {
        Some(name) => Some(
            classes
                .iter()
                .find(|c| class_name(c) == name)
                .ok_or_else(|| format!("no PriorityClass with name {name} was found"))?,
        ),
        // With several defaults (a race upstream allows), the lowest value wins, as upstream.
        None => classes
            .iter()
            .filter(|c| is_global_default(c))
            .min_by_key(|c| c.get("value").and_then(Value::as_i64).unwrap_or(0)),
    };
    let Some(class) = class else {
        spec.entry("priority").or_insert(json!(0));
        return Ok(());
    };
    let value = class.get("value").and_then(Value::as_i64).unwrap_or(0);
    let given = spec.get("priority").and_then(Value::as_i64);
    // Defaulting writes priority 0 to pods that name no class; only a class-named pod's own
    // number can contradict its class.
    if named.is_some() && given.is_some_and(|g| g != value) {
        return Err(format!(
            "the integer value of priority ({}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name",
            given.unwrap_or_default()
        ));
    }
    if named.is_none() {
        spec.insert("priorityClassName".into(), json!(class_name(class)));
    }
    spec.insert("priority".into(), json!(value));
    if let Some(policy) = class.get("preemptionPolicy").and_then(Value::as_str) {
        spec.insert("preemptionPolicy".into(), json!(policy));
    }
    Ok(())
}

/// Upstream's checks on a PriorityClass being written, against the other classes.
pub fn check_class(class: &Value, others: &[Value]) -> Result<(), String> {
    let name = class_name(class);
    let value = class.get("value").and_then(Value::as_i64).unwrap_or(0);
    let system = SYSTEM_CLASSES.iter().find(|(n, _, _)| *n == name);
    match system {
        Some((_, system_value, _)) if value != *system_value => {
            return Err(format!(
                "{name} is a system priority class; its value must be {system_value}"
            ))
        }
        Some(_) => {}
        None if name.starts_with("system-") => {
            return Err(format!(
                "priority class names with 'system-' prefix are reserved for system use only. error: {name} is not a known system priority class"
            ))
        }
        None if value > HIGHEST_USER_PRIORITY => {
            return Err(format!(
                "maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}"
            ))
        }
        None => {}
    }
    if is_global_default(class) {
        if let Some(existing) = others.iter().find(|c| is_global_default(c)) {
            return Err(format!(
                "PriorityClass {} is already marked as default. Only one default can exist",
                class_name(existing)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, value: i64, default: bool) -> Value {
        json!({"metadata": {"name": name}, "value": value, "globalDefault": default})
    }

    #[test]
    fn a_named_class_sets_the_priority_and_its_preemption_policy() {
        let mut never = class("batch", 10, false);
        never["preemptionPolicy"] = json!("Never");
        let mut pod = json!({"spec": {"priorityClassName": "batch",
            "preemptionPolicy": "PreemptLowerPriority"}});
        resolve_pod_priority(&mut pod, &[never]).unwrap();
        assert_eq!(pod["spec"]["priority"], 10);
        assert_eq!(pod["spec"]["preemptionPolicy"], "Never");
    }

    #[test]
    fn an_unknown_class_or_a_contradicting_number_is_refused() {
        let mut pod = json!({"spec": {"priorityClassName": "nope"}});
        assert_eq!(
            resolve_pod_priority(&mut pod, &[]),
            Err("no PriorityClass with name nope was found".to_string())
        );
        let mut pod = json!({"spec": {"priorityClassName": "high", "priority": 5}});
        let refused = resolve_pod_priority(&mut pod, &[class("high", 1000, false)]);
        assert!(refused.unwrap_err().contains("computed 1000"));
    }

    #[test]
    fn a_pod_without_a_class_gets_the_lowest_global_default_or_zero() {
        let mut pod = json!({"spec": {"priority": 0}});
        let classes = [
            class("a", 300, true),
            class("b", 200, true),
            class("c", 1, false),
        ];
        resolve_pod_priority(&mut pod, &classes).unwrap();
        assert_eq!(pod["spec"]["priority"], 200);
        assert_eq!(pod["spec"]["priorityClassName"], "b");
        let mut plain = json!({"spec": {}});
        resolve_pod_priority(&mut plain, &[class("c", 1, false)]).unwrap();
        assert_eq!(plain["spec"]["priority"], 0);
    }

    #[test]
    fn user_classes_stay_below_a_billion_and_off_system_names_with_one_default() {
        assert!(check_class(&class("high", HIGHEST_USER_PRIORITY, false), &[]).is_ok());
        assert!(check_class(&class("higher", HIGHEST_USER_PRIORITY + 1, false), &[]).is_err());
        assert!(check_class(&class("system-mine", 1, false), &[]).is_err());
        assert!(check_class(&class(SYSTEM_NODE_CRITICAL, 2_000_001_000, false), &[]).is_ok());
        let refused = check_class(&class("d2", 1, true), &[class("d1", 1, true)]);
        assert_eq!(
            refused,
            Err("PriorityClass d1 is already marked as default. Only one default can exist".into())
        );
    }
}
