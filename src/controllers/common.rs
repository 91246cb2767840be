//! Small pure helpers the controllers share: selector matching, owner references, pod state,
//! and event publishing that never fails a reconcile.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::events::{Event, EventType, Recorder};

/// Does `selector` select `labels`? An empty selector selects everything, as upstream's
/// `metav1.LabelSelectorAsSelector`; an operator it does not know selects nothing.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let match_labels = selector.match_labels.iter().flatten();
    for (key, value) in match_labels {
        if labels.get(key) != Some(value) {
            return false;
        }
    }
    for expr in selector.match_expressions.iter().flatten() {
        let values = expr.values.as_deref().unwrap_or_default();
        let actual = labels.get(&expr.key);
        let ok = match expr.operator.as_str() {
            "In" => actual.is_some_and(|v| values.contains(v)),
            "NotIn" => actual.is_none_or(|v| !values.contains(v)),
            "Exists" => actual.is_some(),
            "DoesNotExist" => actual.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// A selector that selects nothing at all is refused by upstream controllers (they would
/// otherwise adopt every pod in the namespace).
pub fn selector_is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|m| m.is_empty())
}

/// The owner reference that marks its holder as controlled by `owner`.
pub fn controller_reference(api_version: &str, kind: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// Is this object controlled by the object with `uid`?
pub fn is_controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_of(meta).is_some_and(|r| r.uid == uid)
}

/// A reference to `meta`'s object, for events.
pub fn object_reference(api_version: &str, kind: &str, meta: &ObjectMeta) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.to_string()),
        kind: Some(kind.to_string()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}

/// Running or pending, and not on its way out: counts towards a replica count.
pub fn pod_is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// Is being deleted but not yet finished.
pub fn pod_is_terminating(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_some() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// When the pod's Ready condition turned True, if it is True.
pub fn pod_ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let ready = conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(ready.last_transition_time.as_ref().map(|t| t.0))
}

pub fn pod_is_ready(pod: &Pod) -> bool {
    pod_ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` at `now` (upstream `IsPodAvailable`).
pub fn pod_is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match pod_ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(since)) => since + SignedDuration::from_secs(min_ready_seconds.into()) <= now,
    }
}

/// How long until a ready pod becomes available, for requeueing.
pub fn until_available(
    pod: &Pod,
    min_ready_seconds: i32,
    now: Timestamp,
) -> Option<SignedDuration> {
    let since = pod_ready_since(pod)??;
    let at = since + SignedDuration::from_secs(min_ready_seconds.into());
    (at > now).then(|| at.duration_since(now))
}

/// Would merging `patch` (`{"status": {...}}`) into `object` change its status? A field set
/// to null counts as equal to an absent one.
pub fn status_differs(object: &impl serde::Serialize, patch: &serde_json::Value) -> bool {
    let current = serde_json::to_value(object)
        .ok()
        .and_then(|v| v.get("status").cloned())
        .unwrap_or(serde_json::Value::Null);
    let Some(fields) = patch.get("status").and_then(|s| s.as_object()) else {
        return true;
    };
    fields
        .iter()
        .any(|(key, value)| current.get(key).unwrap_or(&serde_json::Value::Null) != value)
}

/// Publishes an event; a failure is only logged, since an event is never worth failing a
/// reconcile over.
pub async fn publish(
    recorder: &Recorder,
    regarding: &ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: reason.to_string(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, regarding).await {
        tracing::debug!(%error, reason, "cannot record an event");
    }
}

/// Marks `pod` with a `DisruptionTarget` condition before a controller deletes it, as upstream
/// does, so that a Job's pod failure policy can tell the disruption from a failure. `fail` also
/// moves a pod that is not finished to phase Failed (pod GC does: no kubelet will). A pod that
/// is already gone is no error.
pub async fn mark_disruption_target(
    client: &kube::Client,
    pod: &Pod,
    reason: &str,
    message: &str,
    fail: bool,
) -> Result<(), kube::Error> {
    let (Some(name), Some(namespace)) = (&pod.metadata.name, &pod.metadata.namespace) else {
        return Ok(());
    };
    let mut status = serde_json::json!({"conditions": [{
        "type": "DisruptionTarget",
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": crate::api::meta::now_rfc3339(),
    }]});
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if fail && !matches!(phase, Some("Succeeded" | "Failed")) {
        status["phase"] = "Failed".into();
    }
    let api: kube::Api<Pod> = kube::Api::namespaced(client.clone(), namespace);
    // Strategic merge keys conditions by type: the pod's other conditions stay.
    let patch = kube::api::Patch::Strategic(serde_json::json!({"status": status}));
    match api
        .patch_status(name, &kube::api::PatchParams::default(), &patch)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// JSON with object keys sorted, whatever map type serde_json was built with: the stable bytes
/// that template and revision hashes are computed over.
pub fn write_canonical_json(value: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String(key.clone()).to_string().as_bytes());
                out.push(b':');
                write_canonical_json(&map[key], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical_json(item, out);
            }
            out.push(b']');
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, Time};

    pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub fn ready_pod(name: &str, since: Timestamp) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(since)),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn an_unchanged_status_is_not_written_again() {
        let pod = ready_pod("p", Timestamp::now());
        let same = serde_json::json!({"status": {"phase": "Running", "podIP": null}});
        let changed = serde_json::json!({"status": {"phase": "Failed"}});
        assert!(!status_differs(&pod, &same));
        assert!(status_differs(&pod, &changed));
    }

    #[test]
    fn match_labels_and_expressions_must_all_hold() {
        let selector = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["front".into(), "edge".into()]),
            }]),
        };
        assert!(selector_matches(
            &selector,
            &labels(&[("app", "web"), ("tier", "edge")])
        ));
        assert!(!selector_matches(&selector, &labels(&[("app", "web")])));
        assert!(!selector_matches(
            &selector,
            &labels(&[("app", "db"), ("tier", "edge")])
        ));
    }

    #[test]
    fn not_in_and_does_not_exist_accept_a_missing_label() {
        let selector = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "NotIn".into(),
                    values: Some(vec!["prod".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert!(selector_matches(&selector, &labels(&[])));
        assert!(!selector_matches(&selector, &labels(&[("env", "prod")])));
        assert!(!selector_matches(&selector, &labels(&[("canary", "1")])));
    }

    #[test]
    fn a_pod_is_available_only_after_min_ready_seconds() {
        let now = Timestamp::now();
        let pod = ready_pod("p", now - SignedDuration::from_secs(5));
        assert!(pod_is_available(&pod, 0, now));
        assert!(pod_is_available(&pod, 5, now));
        assert!(!pod_is_available(&pod, 10, now));
        assert_eq!(
            until_available(&pod, 10, now),
            Some(SignedDuration::from_secs(5))
        );
    }

    #[test]
    fn deleted_and_finished_pods_are_not_active() {
        let mut pod = ready_pod("p", Timestamp::now());
        assert!(pod_is_active(&pod));
        pod.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        assert!(!pod_is_active(&pod));
        assert!(pod_is_terminating(&pod));
        let mut done = ready_pod("q", Timestamp::now());
        if let Some(status) = done.status.as_mut() {
            status.phase = Some("Succeeded".into());
        }
        assert!(!pod_is_active(&done));
    }
}
