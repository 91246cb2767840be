//! What a stricter enforce level on a namespace would do to the pods already in it: upstream's
//! dry run (`EvaluatePodsInNamespace`), given back as warnings, never as a refusal, because the
//! running pods are not touched.
//!
//! The warnings read as upstream's: one headline, then one line per distinct set of failed
//! checks, naming the alphabetically first pod with it and how many others share it. Pods of
//! one controller look alike, so one pod per controller is checked first; at most
//! [`MAX_PODS_TO_CHECK`] are checked, and no more once [`CHECK_TIMEOUT`] has passed.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::checks;
use super::policy::ModePolicy;
use crate::api::meta::meta_str;

/// Upstream's defaults for the dry run.
pub const MAX_PODS_TO_CHECK: usize = 3000;
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// The warnings for relabelling `namespace` to enforce `enforce`, given its `pods`.
pub fn existing_pod_warnings(
    namespace: &str,
    enforce: &ModePolicy,
    pods: Vec<Value>,
    exempt_runtime_classes: &[String],
    deadline: Instant,
) -> Vec<String> {
    let pods = prioritize(pods, exempt_runtime_classes);
    let total = pods.len();
    // Distinct reason lists, in the order first seen, with (first pod name, count).
    let mut order: Vec<String> = Vec::new();
    let mut counts: HashMap<String, (String, usize)> = HashMap::new();
    let mut checked = 0;
    for pod in pods.iter().take(MAX_PODS_TO_CHECK) {
        checked += 1;
        let metadata = pod.get("metadata").unwrap_or(&Value::Null);
        let spec = pod.get("spec").unwrap_or(&Value::Null);
        let violations = checks::check(enforce.level, metadata, spec);
        if !violations.is_empty() {
            let reasons: Vec<&str> = violations.iter().map(|v| v.reason).collect();
            let reasons = reasons.join(", ");
            let name = meta_str(pod, "name").to_string();
            match counts.get_mut(&reasons) {
                Some((first, count)) => {
                    *count += 1;
                    if name < *first {
                        *first = name;
                    }
                }
                None => {
                    order.push(reasons.clone());
                    counts.insert(reasons, (name, 1));
                }
            }
        }
        if Instant::now() >= deadline {
            break;
        }
    }

    let mut warnings = Vec::new();
    if checked < total {
        warnings.push(format!(
            "new PodSecurity enforce level only checked against the first {checked} of {total} existing pods"
        ));
    }
    if !order.is_empty() {
        warnings.push(format!(
            "existing pods in namespace \"{namespace}\" violate the new PodSecurity enforce level \"{}\"",
            enforce.label()
        ));
    }
    let mut per_reasons: Vec<String> = order
        .into_iter()
        .map(|reasons| {
            let (first, count) = counts.remove(&reasons).unwrap_or_default();
            match count {
                0 | 1 => format!("{first}: {reasons}"),
                2 => format!("{first} (and 1 other pod): {reasons}"),
                n => format!("{first} (and {} other pods): {reasons}", n - 1),
            }
        })
        .collect();
    per_reasons.sort();
    warnings.extend(per_reasons);
    warnings
}

/// Pods of exempt runtime classes dropped; the first pod of each controller (and every pod
/// without one) before the other replicas.
fn prioritize(pods: Vec<Value>, exempt_runtime_classes: &[String]) -> Vec<Value> {
    let mut first = Vec::new();
    let mut replicas = Vec::new();
    let mut seen_controllers = HashSet::new();
    for pod in pods {
        let runtime_class = pod
            .pointer("/spec/runtimeClassName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !runtime_class.is_empty() && exempt_runtime_classes.iter().any(|c| c == runtime_class) {
            continue;
        }
        let controller = pod
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .and_then(|refs| {
                refs.iter()
                    .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
            })
            .and_then(|r| r.get("uid"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let repeated = controller.is_some_and(|uid| !seen_controllers.insert(uid));
        match repeated {
            true => replicas.push(pod),
            false => first.push(pod),
        }
    }
    first.extend(replicas);
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::pod_security::checks::Level;
    use serde_json::json;

    fn pod(name: &str, privileged: bool, owner: Option<&str>) -> Value {
        let mut pod = json!({"metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                "securityContext": {"privileged": privileged}}]}});
        if let Some(uid) = owner {
            pod["metadata"]["ownerReferences"] =
                json!([{"kind": "ReplicaSet", "name": "rs", "uid": uid, "controller": true}]);
        }
        pod
    }

    fn far_future() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[test]
    fn pods_failing_alike_are_counted_under_the_alphabetically_first_name() {
        let pods = vec![
            pod("web-b", true, Some("rs1")),
            pod("web-a", true, Some("rs1")),
            pod("web-c", true, Some("rs1")),
            pod("lone", true, None),
            pod("fine", false, None),
        ];
        let enforce = ModePolicy::latest(Level::Baseline);
        let warnings = existing_pod_warnings("ns", &enforce, pods, &[], far_future());
        assert_eq!(
            warnings,
            vec![
                "existing pods in namespace \"ns\" violate the new PodSecurity enforce level \"baseline:latest\"",
                "lone (and 3 other pods): privileged",
            ]
        );
    }

    #[test]
    fn distinct_failures_get_a_line_each_sorted_and_pairs_say_one_other_pod() {
        let mut host = pod("host", false, None);
        host["spec"]["hostNetwork"] = json!(true);
        let pods = vec![
            host,
            pod("x", true, None),
            pod("y", true, None),
            pod("fine", false, None),
        ];
        let enforce = ModePolicy::latest(Level::Baseline);
        let warnings = existing_pod_warnings("ns", &enforce, pods, &[], far_future());
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert_eq!(warnings[1], "host: host namespaces");
        assert_eq!(warnings[2], "x (and 1 other pod): privileged");
    }

    #[test]
    fn a_namespace_whose_pods_all_pass_gets_no_warning() {
        let pods = vec![pod("fine", false, None)];
        let enforce = ModePolicy::latest(Level::Baseline);
        assert!(existing_pod_warnings("ns", &enforce, pods, &[], far_future()).is_empty());
    }

    #[test]
    fn pods_of_exempt_runtime_classes_are_skipped() {
        let mut sandboxed = pod("sandboxed", true, None);
        sandboxed["spec"]["runtimeClassName"] = json!("gvisor");
        let enforce = ModePolicy::latest(Level::Baseline);
        let exempt = vec!["gvisor".to_string()];
        let warnings =
            existing_pod_warnings("ns", &enforce, vec![sandboxed], &exempt, far_future());
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn past_the_deadline_the_check_stops_and_says_how_far_it_got() {
        let pods = vec![
            pod("a", true, None),
            pod("b", true, None),
            pod("c", true, None),
        ];
        let enforce = ModePolicy::latest(Level::Baseline);
        let warnings = existing_pod_warnings("ns", &enforce, pods, &[], Instant::now());
        assert_eq!(
            warnings[0],
            "new PodSecurity enforce level only checked against the first 1 of 3 existing pods"
        );
        assert_eq!(warnings[2], "a: privileged");
    }

    #[test]
    fn one_pod_per_controller_is_checked_before_the_other_replicas() {
        let pods = vec![
            pod("r1", false, Some("rs1")),
            pod("r2", false, Some("rs1")),
            pod("other", false, Some("rs2")),
        ];
        let names: Vec<String> = prioritize(pods, &[])
            .iter()
            .map(|p| meta_str(p, "name").to_string())
            .collect();
        assert_eq!(names, vec!["r1", "other", "r2"]);
    }
}
