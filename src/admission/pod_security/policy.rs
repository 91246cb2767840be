//! A namespace's Pod Security policy from its `pod-security.kubernetes.io/*` labels, as
//! upstream's `PolicyToEvaluate`: each mode's level and version, the cluster defaults filling
//! the gaps. A label that does not parse still gives a policy (enforce falls back to
//! `restricted`, failing closed; audit and warn to `privileged`, failing open) and an error,
//! which refuses a Namespace write that introduces it.
//!
//! Also here: which pod updates are worth evaluating at all (upstream's
//! `isSignificantPodUpdate`).

use serde_json::Value;

use super::checks::Level;
use crate::api::status::Cause;

pub const LABEL_PREFIX: &str = "pod-security.kubernetes.io/";
const LEVEL_ERROR: &str = "must be one of privileged, baseline, restricted";
const VERSION_ERROR: &str = "must be \"latest\" or \"v1.x\"";

/// One mode's level and version (`restricted:latest`, `baseline:v1.30`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModePolicy {
    pub level: Level,
    pub version: String,
}

impl ModePolicy {
    pub fn latest(level: Level) -> ModePolicy {
        ModePolicy {
            level,
            version: "latest".into(),
        }
    }

    pub fn label(&self) -> String {
        format!("{}:{}", self.level.as_str(), self.version)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePolicy {
    pub enforce: ModePolicy,
    pub audit: ModePolicy,
    pub warn: ModePolicy,
}

impl NamespacePolicy {
    pub fn fully_privileged(&self) -> bool {
        [&self.enforce, &self.audit, &self.warn]
            .iter()
            .all(|mode| mode.level == Level::Privileged)
    }
}

/// `latest` or `v1.<minor>` (no leading zero), as upstream's version pattern.
fn valid_version(text: &str) -> bool {
    if text == "latest" {
        return true;
    }
    let Some(minor) = text.strip_prefix("v1.") else {
        return false;
    };
    !minor.is_empty()
        && minor.bytes().all(|b| b.is_ascii_digit())
        && (minor == "0" || !minor.starts_with('0'))
        && minor.parse::<u32>().is_ok()
}

/// The policy `labels` (a namespace's `metadata.labels`) give over `defaults`, and the label
/// errors found on the way, as field causes.
pub fn policy_to_evaluate(
    labels: Option<&Value>,
    defaults: &NamespacePolicy,
) -> (NamespacePolicy, Vec<Cause>) {
    let mut policy = defaults.clone();
    let mut errors = Vec::new();
    let label = |suffix: &str| {
        let key = format!("{LABEL_PREFIX}{suffix}");
        labels
            .and_then(|l| l.get(&key))
            .and_then(Value::as_str)
            .map(|value| (key, value.to_string()))
    };
    let modes: [(&str, &mut ModePolicy, Level); 3] = [
        ("enforce", &mut policy.enforce, Level::Restricted),
        ("audit", &mut policy.audit, Level::Privileged),
        ("warn", &mut policy.warn, Level::Privileged),
    ];
    for (mode, current, fallback) in modes {
        if let Some((key, value)) = label(mode) {
            current.level = Level::parse(&value).unwrap_or_else(|| {
                errors.push(Cause::invalid(&labels_field(&key), &value, LEVEL_ERROR));
                fallback
            });
        }
        if let Some((key, value)) = label(&format!("{mode}-version")) {
            if valid_version(&value) {
                current.version = value;
            } else {
                errors.push(Cause::invalid(&labels_field(&key), &value, VERSION_ERROR));
                current.version = "latest".into();
            }
        }
    }
    (policy, errors)
}

fn labels_field(key: &str) -> String {
    format!("metadata.labels[{key}]")
}

/// Whether a pod update can change what the checks see. Almost all of a pod's spec is
/// immutable; what may change and matters is a container's image (with the old per-container
/// seccomp annotation) and the set of ephemeral containers.
pub fn is_significant_pod_update(new: &Value, old: &Value) -> bool {
    let list = |pod: &Value, field: &str| -> Vec<Value> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let annotations = |pod: &Value| pod.pointer("/metadata/annotations").cloned();
    let (new_annotations, old_annotations) = (annotations(new), annotations(old));
    let container_changed = |c: &Value, o: &Value| {
        if c.get("image") != o.get("image") {
            return true;
        }
        let name = c.get("name").and_then(Value::as_str).unwrap_or("");
        let key = format!("container.seccomp.security.alpha.kubernetes.io/{name}");
        let seccomp = |a: &Option<Value>| a.as_ref().and_then(|a| a.get(&key)).cloned();
        seccomp(&new_annotations) != seccomp(&old_annotations)
    };
    for field in ["containers", "initContainers"] {
        let (now, before) = (list(new, field), list(old, field));
        if now.len() != before.len()
            || now
                .iter()
                .zip(&before)
                .any(|(c, o)| container_changed(c, o))
        {
            return true;
        }
    }
    let before = list(old, "ephemeralContainers");
    list(new, "ephemeralContainers").iter().any(|c| {
        match before.iter().find(|o| o.get("name") == c.get("name")) {
            None => true,
            Some(o) => container_changed(c, o),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defaults() -> NamespacePolicy {
        NamespacePolicy {
            enforce: ModePolicy::latest(Level::Baseline),
            audit: ModePolicy::latest(Level::Restricted),
            warn: ModePolicy::latest(Level::Restricted),
        }
    }

    #[test]
    fn labels_override_the_defaults_mode_by_mode() {
        let labels = json!({"pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "v1.30",
            "pod-security.kubernetes.io/warn": "privileged"});
        let (policy, errors) = policy_to_evaluate(Some(&labels), &defaults());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(policy.enforce.label(), "restricted:v1.30");
        assert_eq!(policy.warn.label(), "privileged:latest");
        assert_eq!(policy.audit.label(), "restricted:latest");
    }

    #[test]
    fn a_bad_enforce_level_fails_closed_and_a_bad_warn_level_fails_open() {
        let labels = json!({"pod-security.kubernetes.io/enforce": "strict",
            "pod-security.kubernetes.io/warn": "loud",
            "pod-security.kubernetes.io/audit-version": "v1.07"});
        let (policy, errors) = policy_to_evaluate(Some(&labels), &defaults());
        assert_eq!(policy.enforce.level, Level::Restricted);
        assert_eq!(policy.warn.level, Level::Privileged);
        assert_eq!(policy.audit.version, "latest");
        let summaries: Vec<String> = errors.iter().map(Cause::summary).collect();
        assert_eq!(
            summaries,
            vec![
                "metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\": must be one of privileged, baseline, restricted",
                "metadata.labels[pod-security.kubernetes.io/audit-version]: Invalid value: \"v1.07\": must be \"latest\" or \"v1.x\"",
                "metadata.labels[pod-security.kubernetes.io/warn]: Invalid value: \"loud\": must be one of privileged, baseline, restricted",
            ]
        );
    }

    #[test]
    fn versions_are_latest_or_a_v1_minor_without_leading_zeros() {
        for good in ["latest", "v1.0", "v1.35", "v1.100"] {
            assert!(valid_version(good), "{good}");
        }
        for bad in ["", "v1.", "v1.05", "v2.1", "1.30", "v1.3a", "Latest"] {
            assert!(!valid_version(bad), "{bad}");
        }
    }

    fn pod(image: &str, annotations: Value, ephemeral: Value) -> Value {
        json!({"metadata": {"name": "p", "annotations": annotations},
            "spec": {"containers": [{"name": "c", "image": image}],
                "ephemeralContainers": ephemeral}})
    }

    #[test]
    fn metadata_only_updates_are_not_significant_but_images_and_new_debug_containers_are() {
        let old = pod("busybox", json!({}), json!([]));
        let relabelled = {
            let mut p = old.clone();
            p["metadata"]["labels"] = json!({"a": "b"});
            p["spec"]["activeDeadlineSeconds"] = json!(5);
            p
        };
        assert!(!is_significant_pod_update(&relabelled, &old));
        assert!(is_significant_pod_update(
            &pod("nginx", json!({}), json!([])),
            &old
        ));
        let seccomp = json!({"container.seccomp.security.alpha.kubernetes.io/c": "unconfined"});
        assert!(is_significant_pod_update(
            &pod("busybox", seccomp, json!([])),
            &old
        ));
        let debug = json!([{"name": "debugger", "image": "busybox"}]);
        let debugged = pod("busybox", json!({}), debug.clone());
        assert!(is_significant_pod_update(&debugged, &old));
        assert!(!is_significant_pod_update(&debugged, &debugged.clone()));
    }
}
