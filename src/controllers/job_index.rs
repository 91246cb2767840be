//! What Indexed Jobs add to the Job controller, as upstream 1.35: a backoff limit per index
//! (`backoffLimitPerIndex`, failed indexes in `status.failedIndexes`, `maxFailedIndexes`),
//! a `successPolicy` that can end a job before every index succeeded, and
//! `podReplacementPolicy`, which decides whether a terminating pod already has a successor.
//! Pure functions; `job.rs` applies them.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::batch::v1::{Job, SuccessPolicyRule};
use k8s_openapi::api::core::v1::Pod;

use super::job::{parse_indexes, COMPLETION_INDEX};

/// How many earlier pods of the same index failed: set on each replacement pod (upstream's
/// annotation), so the count survives the failed pods being garbage collected.
pub const INDEX_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";

/// The per-index and success settings of a job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IndexPolicy {
    pub backoff_limit_per_index: Option<i32>,
    pub max_failed_indexes: Option<i32>,
    pub success_rules: Vec<SuccessPolicyRule>,
    /// `podReplacementPolicy: Failed`: a pod is replaced only once it has fully failed, not
    /// while it is still terminating.
    pub replace_only_failed: bool,
}

impl IndexPolicy {
    pub fn of(job: &Job) -> IndexPolicy {
        let spec = job.spec.clone().unwrap_or_default();
        let has_failure_policy = spec.pod_failure_policy.is_some();
        IndexPolicy {
            backoff_limit_per_index: spec.backoff_limit_per_index,
            max_failed_indexes: spec.max_failed_indexes,
            success_rules: spec.success_policy.map(|p| p.rules).unwrap_or_default(),
            // Upstream's default: Failed when a pod failure policy is set (it must see the
            // final state of a pod), else TerminatingOrFailed.
            replace_only_failed: match spec.pod_replacement_policy.as_deref() {
                Some(policy) => policy == "Failed",
                None => has_failure_policy,
            },
        }
    }
}

fn annotation(pod: &Pod, key: &str) -> Option<i32> {
    pod.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

/// The failures of earlier pods of this pod's index, from its annotation.
pub fn index_failure_count(pod: &Pod) -> i32 {
    annotation(pod, INDEX_FAILURE_COUNT).unwrap_or(0).max(0)
}

/// Failures so far per index: each counted failed pod stands for its own failure plus those
/// before it.
pub fn failures_per_index<'a>(failed_pods: impl Iterator<Item = &'a Pod>) -> BTreeMap<i32, i32> {
    let mut failures = BTreeMap::new();
    for pod in failed_pods {
        let Some(index) = annotation(pod, COMPLETION_INDEX) else {
            continue;
        };
        let count = index_failure_count(pod) + 1;
        let entry = failures.entry(index).or_insert(0);
        *entry = (*entry).max(count);
    }
    failures
}

/// Whether a failed pod whose index had `failures` failures in all exhausts its index.
pub fn index_exhausted(failures: i32, backoff_limit_per_index: i32) -> bool {
    failures > backoff_limit_per_index
}

/// The first success policy rule the completed indexes meet, as upstream's
/// `matchSuccessPolicy`: with `succeededIndexes`, `succeededCount` of those (all of them if no
/// count) must have succeeded; with only `succeededCount`, that many of any.
pub fn success_rule_met(rules: &[SuccessPolicyRule], completed: &BTreeSet<i32>) -> Option<usize> {
    rules.iter().position(|rule| match &rule.succeeded_indexes {
        Some(text) => {
            let wanted = parse_indexes(text);
            let done = wanted.intersection(completed).count() as i32;
            match rule.succeeded_count {
                Some(count) => done >= count,
                None => !wanted.is_empty() && done == wanted.len() as i32,
            }
        }
        None => rule
            .succeeded_count
            .is_some_and(|count| completed.len() as i32 >= count),
    })
}

/// Why an Indexed job with a per-index backoff limit has failed, if it has: too many failed
/// indexes, or every index has finished and some failed.
pub fn failed_indexes_verdict(
    policy: &IndexPolicy,
    completions: i32,
    completed: &BTreeSet<i32>,
    failed: &BTreeSet<i32>,
) -> Option<(&'static str, &'static str)> {
    policy.backoff_limit_per_index?;
    if let Some(max) = policy.max_failed_indexes {
        if failed.len() as i32 > max {
            return Some((
                "MaxFailedIndexesExceeded",
                "Job has exceeded the specified maximal number of failed indexes",
            ));
        }
    }
    let all_finished =
        (0..completions.max(0)).all(|i| completed.contains(&i) || failed.contains(&i));
    (all_finished && !failed.is_empty()).then_some(("FailedIndexes", "Job has failed indexes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(index: i32, failures: Option<i32>) -> Pod {
        let mut annotations = json!({COMPLETION_INDEX: index.to_string()});
        if let Some(f) = failures {
            annotations[INDEX_FAILURE_COUNT] = json!(f.to_string());
        }
        serde_json::from_value(json!({"metadata": {"name": "p", "annotations": annotations}}))
            .unwrap()
    }

    fn rule(indexes: Option<&str>, count: Option<i32>) -> SuccessPolicyRule {
        SuccessPolicyRule {
            succeeded_indexes: indexes.map(str::to_string),
            succeeded_count: count,
        }
    }

    fn set(items: &[i32]) -> BTreeSet<i32> {
        items.iter().copied().collect()
    }

    #[test]
    fn failures_per_index_follow_the_replacement_annotations() {
        let failed = [pod(0, None), pod(1, None), pod(1, Some(1)), pod(1, Some(2))];
        let failures = failures_per_index(failed.iter());
        assert_eq!(failures[&0], 1);
        assert_eq!(failures[&1], 3);
        assert!(!index_exhausted(1, 1));
        assert!(index_exhausted(2, 1));
    }

    #[test]
    fn success_rules_match_on_listed_indexes_or_a_count() {
        let rules = [rule(Some("0,2-3"), Some(2)), rule(None, Some(4))];
        assert_eq!(success_rule_met(&rules, &set(&[0, 1])), None);
        assert_eq!(success_rule_met(&rules, &set(&[0, 3])), Some(0));
        assert_eq!(success_rule_met(&rules, &set(&[1, 4, 5, 6])), Some(1));
        let all_listed = [rule(Some("1-2"), None)];
        assert_eq!(success_rule_met(&all_listed, &set(&[1])), None);
        assert_eq!(success_rule_met(&all_listed, &set(&[1, 2])), Some(0));
    }

    #[test]
    fn a_job_fails_on_too_many_failed_indexes_or_once_all_indexes_are_done() {
        let policy = IndexPolicy {
            backoff_limit_per_index: Some(0),
            max_failed_indexes: Some(1),
            ..Default::default()
        };
        assert_eq!(
            failed_indexes_verdict(&policy, 4, &set(&[0]), &set(&[1])),
            None
        );
        assert_eq!(
            failed_indexes_verdict(&policy, 4, &set(&[]), &set(&[1, 2]))
                .unwrap()
                .0,
            "MaxFailedIndexesExceeded"
        );
        assert_eq!(
            failed_indexes_verdict(&policy, 3, &set(&[0, 2]), &set(&[1]))
                .unwrap()
                .0,
            "FailedIndexes"
        );
        let no_per_index = IndexPolicy::default();
        assert_eq!(
            failed_indexes_verdict(&no_per_index, 1, &set(&[]), &set(&[0])),
            None
        );
    }

    #[test]
    fn replacement_waits_for_failure_by_default_only_with_a_failure_policy() {
        let job = |spec: serde_json::Value| -> Job {
            serde_json::from_value(json!({"metadata": {"name": "j"}, "spec": spec})).unwrap()
        };
        let template = json!({"spec": {"containers": []}});
        assert!(!IndexPolicy::of(&job(json!({"template": template}))).replace_only_failed);
        assert!(
            IndexPolicy::of(&job(
                json!({"template": template, "podReplacementPolicy": "Failed"})
            ))
            .replace_only_failed
        );
        assert!(
            IndexPolicy::of(&job(
                json!({"template": template, "podFailurePolicy": {"rules": []}})
            ))
            .replace_only_failed
        );
    }
}
