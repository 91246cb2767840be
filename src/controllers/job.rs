//! Job: run pods from a template until enough of them succeed, or give up.
//!
//! Finished pods are counted as upstream does, so that a pod deleted (or garbage collected)
//! right after it finished is still counted exactly once: every pod carries the
//! `batch.kubernetes.io/job-tracking` finalizer; a finished pod's uid first goes into
//! `status.uncountedTerminatedPods`, then its finalizer is removed, then the uid moves into
//! the `succeeded`/`failed` counters. A crash between any two steps repeats no count.
//!
//! A job that must end first gets a `FailureTarget` or `SuccessCriteriaMet` condition; its
//! remaining pods are stopped, and only then is the terminal `Failed` or `Complete` condition
//! set (upstream 1.35 order, which `kubectl wait` and clients of the `*Target` conditions see).
//!
//! Pods are listed live from the API on each reconcile (as the ReplicaSet controller does),
//! so no expectations are needed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, PodFailurePolicyRule};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::common;
use super::job_index;

pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
const LEGACY_CONTROLLER_UID: &str = "controller-uid";
const JOB_NAME: &str = "batch.kubernetes.io/job-name";
const LEGACY_JOB_NAME: &str = "job-name";

/// Upstream's `DefaultJobPodFailureBackOff` and `MaxJobPodFailureBackOff`.
const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
}

struct Context {
    client: kube::Client,
    recorder: Recorder,
}

/// Runs the Job controller until the watch ends.
pub async fn run(client: kube::Client) {
    let jobs: Api<Job> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let controller = Controller::new(jobs, watcher::Config::default());
    let store = controller.store();
    let (orphans_tx, orphans_rx) = mpsc::unbounded_channel();
    tokio::spawn(release_orphans(client.clone(), store.clone(), orphans_rx));
    let recorder = Recorder::new(client.clone(), Reporter::from("job-controller"));
    let context = Arc::new(Context { client, recorder });
    controller
        .watches(pods, watcher::Config::default(), move |pod| {
            job_of(&pod, &orphans_tx)
        })
        .run(reconcile, error_policy, context)
        .for_each(|_| async {})
        .await;
}

/// The job a pod wakes. A pod that still holds the tracking finalizer while no job of ours
/// controls it (the job was deleted, or orphaned it) is handed over to lose the finalizer.
fn job_of(pod: &Pod, orphans: &mpsc::UnboundedSender<Pod>) -> Option<ObjectRef<Job>> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let owner = common::controller_of(&pod.metadata).filter(|r| r.kind == "Job");
    if let Some(owner) = owner {
        return Some(ObjectRef::new(&owner.name).within(&namespace));
    }
    if has_tracking_finalizer(&pod.metadata) {
        let _ = orphans.send(pod.clone());
    }
    None
}

/// Removes the tracking finalizer from pods no job controls any more, so they can go.
async fn release_orphans(
    client: kube::Client,
    store: Store<Job>,
    mut orphans: mpsc::UnboundedReceiver<Pod>,
) {
    // Before the first list, every pod would look orphaned.
    if store.wait_until_ready().await.is_err() {
        return;
    }
    while let Some(pod) = orphans.recv().await {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let Ok(Some(fresh)) = pods
            .get_opt(pod.metadata.name.as_deref().unwrap_or(""))
            .await
        else {
            continue;
        };
        let controlled = common::controller_of(&fresh.metadata).is_some_and(|r| r.kind == "Job");
        if !controlled && has_tracking_finalizer(&fresh.metadata) {
            if let Err(error) = strip_finalizer(&pods, &fresh.metadata).await {
                tracing::debug!(%error, "cannot release an orphaned job pod");
            }
        }
    }
}

fn error_policy(_: Arc<Job>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "job sync failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// The spec of a job with upstream's defaults applied, whether or not the API server did.
#[derive(Debug, Clone, PartialEq)]
pub struct JobParams {
    /// None: a work queue; done once any pod succeeded and none is left running.
    pub completions: Option<i32>,
    pub parallelism: i32,
    pub backoff_limit: i32,
    pub indexed: bool,
    pub active_deadline: Option<i64>,
    pub suspend: bool,
    pub restart_on_failure: bool,
    pub failure_rules: Vec<PodFailurePolicyRule>,
}

impl JobParams {
    pub fn of(job: &Job) -> JobParams {
        let spec = job.spec.clone().unwrap_or_default();
        let completions = match (spec.completions, spec.parallelism) {
            (None, None) => Some(1),
            (c, _) => c,
        };
        JobParams {
            completions,
            parallelism: spec.parallelism.unwrap_or(1).max(0),
            backoff_limit: spec.backoff_limit.unwrap_or(6).max(0),
            indexed: spec.completion_mode.as_deref() == Some("Indexed"),
            active_deadline: spec.active_deadline_seconds,
            suspend: spec.suspend.unwrap_or(false),
            restart_on_failure: spec
                .template
                .spec
                .as_ref()
                .and_then(|s| s.restart_policy.as_deref())
                == Some("OnFailure"),
            failure_rules: spec.pod_failure_policy.map(|p| p.rules).unwrap_or_default(),
        }
    }
}

/// What a pod failure policy decides for one failed pod.
#[derive(Debug, Clone, PartialEq)]
pub enum FailureAction {
    /// Fail the job at once; the message names the rule.
    FailJob(String),
    /// Fail the pod's index at once (Indexed jobs with a per-index backoff limit).
    FailIndex,
    /// Not counted towards the backoff limit.
    Ignore,
    Count,
}

/// Upstream's `matchPodFailurePolicy`: the first rule that matches decides; no match counts.
pub fn failure_action(rules: &[PodFailurePolicyRule], pod: &Pod) -> FailureAction {
    let status = pod.status.clone().unwrap_or_default();
    let pod_name = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    );
    for (index, rule) in rules.iter().enumerate() {
        let matched = if let Some(codes) = &rule.on_exit_codes {
            let statuses = status
                .init_container_statuses
                .iter()
                .flatten()
                .chain(status.container_statuses.iter().flatten());
            statuses
                .filter(|c| codes.container_name.as_ref().is_none_or(|n| *n == c.name))
                .filter_map(|c| {
                    let code = c.state.as_ref()?.terminated.as_ref()?.exit_code;
                    Some((c.name.clone(), code))
                })
                // Upstream never matches a successful container, whatever the operator.
                .filter(|(_, code)| *code != 0)
                .find(|(_, code)| match codes.operator.as_str() {
                    "In" => codes.values.contains(code),
                    "NotIn" => !codes.values.contains(code),
                    _ => false,
                })
                .map(|(name, code)| {
                    format!("Container {name} for pod {pod_name} failed with exit code {code} matching {} rule at index {index}", rule.action)
                })
        } else {
            rule.on_pod_conditions.iter().flatten().find_map(|pattern| {
                let wanted = pattern.status.as_deref().unwrap_or("True");
                status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == pattern.type_ && c.status == wanted)
                    .then(|| {
                        format!(
                            "Pod {pod_name} has condition {} matching {} rule at index {index}",
                            pattern.type_, rule.action
                        )
                    })
            })
        };
        if let Some(message) = matched {
            return match rule.action.as_str() {
                "FailJob" => FailureAction::FailJob(message),
                "Ignore" => FailureAction::Ignore,
                "FailIndex" => FailureAction::FailIndex,
                _ => FailureAction::Count,
            };
        }
    }
    FailureAction::Count
}

fn has_tracking_finalizer(meta: &ObjectMeta) -> bool {
    meta.finalizers
        .iter()
        .flatten()
        .any(|f| f == TRACKING_FINALIZER)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn pod_succeeded(pod: &Pod) -> bool {
    phase(pod) == "Succeeded"
}

/// Failed, or deleted before it could succeed (upstream counts those as failures too).
fn pod_failed(pod: &Pod) -> bool {
    phase(pod) == "Failed"
        || (phase(pod) != "Succeeded" && pod.metadata.deletion_timestamp.is_some())
}

fn completion_index(pod: &Pod) -> Option<i32> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(COMPLETION_INDEX))
        .or_else(|| {
            pod.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(COMPLETION_INDEX))
        })
        .and_then(|v| v.parse().ok())
}

/// `status.completedIndexes` ("1,3-5,7") as a set; malformed parts are skipped.
pub fn parse_indexes(text: &str) -> BTreeSet<i32> {
    let mut set = BTreeSet::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    set.extend(a..=b);
                }
            }
            None => {
                if let Ok(i) = part.parse() {
                    set.insert(i);
                }
            }
        }
    }
    set
}

/// The compact form upstream writes: ascending, consecutive runs as `a-b`.
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut run: Option<(i32, i32)> = None;
    for &i in set {
        run = match run {
            Some((a, b)) if i == b + 1 => Some((a, i)),
            Some((a, b)) => {
                parts.push(range_text(a, b));
                Some((i, i))
            }
            None => Some((i, i)),
        };
    }
    if let Some((a, b)) = run {
        parts.push(range_text(a, b));
    }
    parts.join(",")
}

fn range_text(a: i32, b: i32) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

/// How long to wait before replacing a pod after `failures` failures: 10 s doubling per
/// failure, at most 10 minutes (upstream's pod failure backoff).
pub fn backoff_delay(failures: i32) -> Duration {
    if failures <= 0 {
        return Duration::ZERO;
    }
    let doublings = u32::try_from(failures - 1).unwrap_or(0).min(16);
    (BACKOFF_BASE * 2u32.pow(doublings)).min(BACKOFF_MAX)
}

/// How many pods to start now: up to parallelism, never more than the completions left.
pub fn pods_to_start(params: &JobParams, active: i32, succeeded: i32) -> i32 {
    let want = match params.completions {
        None if succeeded > 0 => active,
        None => params.parallelism,
        Some(completions) => params.parallelism.min((completions - succeeded).max(0)),
    };
    (want - active).max(0)
}

/// Indexes still to run: neither completed nor held by an active pod, lowest first.
pub fn missing_indexes(
    completions: i32,
    completed: &BTreeSet<i32>,
    active: &BTreeSet<i32>,
) -> Vec<i32> {
    (0..completions.max(0))
        .filter(|i| !completed.contains(i) && !active.contains(i))
        .collect()
}

/// The job's conditions by type.
fn conditions_by_type(job: &Job) -> BTreeMap<String, Value> {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| {
            let value = serde_json::to_value(&c).ok()?;
            Some((c.type_, value))
        })
        .collect()
}

fn is_true(conditions: &BTreeMap<String, Value>, type_: &str) -> bool {
    conditions.get(type_).is_some_and(|c| c["status"] == "True")
}

pub fn is_finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    let now = crate::api::meta::now_rfc3339();
    json!({
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastProbeTime": now,
        "lastTransitionTime": now,
    })
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action, Error> {
    let meta = &job.metadata;
    let (Some(name), Some(namespace), Some(uid)) = (&meta.name, &meta.namespace, &meta.uid) else {
        return Ok(Action::await_change());
    };
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    // Re-read: the cached object may be older than our own last status write.
    let Some(job) = jobs.get_opt(name).await? else {
        return Ok(Action::await_change());
    };
    let pods: Vec<Pod> = pods_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|p| common::is_controlled_by(&p.metadata, uid))
        .collect();
    if job.metadata.deletion_timestamp.is_some() || is_finished(&job) {
        // Nothing more to count: let every pod go.
        for pod in pods.iter().filter(|p| has_tracking_finalizer(&p.metadata)) {
            strip_finalizer(&pods_api, &pod.metadata).await?;
        }
        return Ok(Action::await_change());
    }
    let params = JobParams::of(&job);
    let index_policy = job_index::IndexPolicy::of(&job);
    let per_index_limit = index_policy
        .backoff_limit_per_index
        .filter(|_| params.indexed);
    let now = Timestamp::now();
    let reference = common::object_reference("batch/v1", "Job", &job.metadata);
    let status = job.status.clone().unwrap_or_default();
    let mut conditions = conditions_by_type(&job);
    let old_conditions = conditions.clone();

    // 1. Record newly finished pods as uncounted before their finalizers go.
    let uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut uncounted_succeeded: BTreeSet<String> = uncounted
        .succeeded
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut uncounted_failed: BTreeSet<String> =
        uncounted.failed.unwrap_or_default().into_iter().collect();
    let mut completed = parse_indexes(status.completed_indexes.as_deref().unwrap_or(""));
    let mut failed_indexes = parse_indexes(status.failed_indexes.as_deref().unwrap_or(""));
    let mut fail_job: Option<String> = None;
    let mut release = Vec::new();
    let mut recorded = false;
    for pod in pods.iter().filter(|p| has_tracking_finalizer(&p.metadata)) {
        let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
        if pod_succeeded(pod) {
            if uncounted_succeeded.insert(pod_uid) {
                recorded = true;
            }
            if let Some(index) = completion_index(pod).filter(|_| params.indexed) {
                recorded |= completed.insert(index);
            }
            release.push(pod);
        } else if pod_failed(pod) {
            match failure_action(&params.failure_rules, pod) {
                FailureAction::Ignore => {}
                FailureAction::FailJob(message) => {
                    fail_job.get_or_insert(message);
                    recorded |= uncounted_failed.insert(pod_uid);
                }
                FailureAction::FailIndex if per_index_limit.is_some() => {
                    if let Some(index) = completion_index(pod) {
                        recorded |= failed_indexes.insert(index);
                    }
                    recorded |= uncounted_failed.insert(pod_uid);
                }
                FailureAction::FailIndex | FailureAction::Count => {
                    let failures = job_index::index_failure_count(pod) + 1;
                    match (per_index_limit, completion_index(pod)) {
                        (Some(limit), Some(index))
                            if job_index::index_exhausted(failures, limit) =>
                        {
                            recorded |= failed_indexes.insert(index);
                        }
                        _ => {}
                    }
                    recorded |= uncounted_failed.insert(pod_uid);
                }
            }
            release.push(pod);
        }
    }
    if let Some(message) = &fail_job {
        if !is_true(&conditions, "FailureTarget") {
            conditions.insert(
                "FailureTarget".into(),
                condition("FailureTarget", "True", "PodFailurePolicy", message),
            );
            recorded = true;
        }
    }
    if recorded {
        let body = json!({"status": {
            "uncountedTerminatedPods": {
                "succeeded": uncounted_succeeded,
                "failed": uncounted_failed,
            },
            "completedIndexes": params.indexed.then(|| format_indexes(&completed)),
            "failedIndexes": per_index_limit.map(|_| format_indexes(&failed_indexes)),
            "conditions": conditions.values().collect::<Vec<_>>(),
        }});
        if !write_status(&jobs, name, &body).await? {
            return Ok(Action::await_change());
        }
    }

    // 2. Release them; 3. count those whose finalizer is gone.
    let mut released: BTreeSet<String> = BTreeSet::new();
    for pod in release {
        strip_finalizer(&pods_api, &pod.metadata).await?;
        released.insert(pod.metadata.uid.clone().unwrap_or_default());
    }
    let still_held: BTreeSet<String> = pods
        .iter()
        .filter(|p| has_tracking_finalizer(&p.metadata))
        .filter_map(|p| p.metadata.uid.clone())
        .filter(|u| !released.contains(u))
        .collect();
    let moved_succeeded = uncounted_succeeded
        .iter()
        .filter(|u| !still_held.contains(*u))
        .count();
    let moved_failed = uncounted_failed
        .iter()
        .filter(|u| !still_held.contains(*u))
        .count();
    uncounted_succeeded.retain(|u| still_held.contains(u));
    uncounted_failed.retain(|u| still_held.contains(u));
    let succeeded = status.succeeded.unwrap_or(0) + moved_succeeded as i32;
    let failed = status.failed.unwrap_or(0) + moved_failed as i32;

    let active: Vec<&Pod> = pods.iter().filter(|p| common::pod_is_active(p)).collect();
    let terminating = pods
        .iter()
        .filter(|p| common::pod_is_terminating(p))
        .count() as i32;
    let restarts: i32 = if params.restart_on_failure {
        active
            .iter()
            .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
            .flatten()
            .map(|c| c.restart_count)
            .sum()
    } else {
        0
    };
    let done = if params.indexed {
        completed.len() as i32
    } else {
        succeeded
    };
    let start_time = status.start_time.as_ref().map(|t| t.0);
    let mut requeue: Option<Duration> = None;

    // Decide whether the job has reached an end.
    let reached_end =
        is_true(&conditions, "FailureTarget") || is_true(&conditions, "SuccessCriteriaMet");
    if !reached_end && !params.suspend {
        let deadline_left = match (params.active_deadline, start_time) {
            (Some(deadline), Some(start)) => {
                Some((start + SignedDuration::from_secs(deadline)).duration_since(now))
            }
            _ => None,
        };
        if failed + restarts > params.backoff_limit {
            conditions.insert(
                "FailureTarget".into(),
                condition(
                    "FailureTarget",
                    "True",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                ),
            );
        } else if let Some((reason, message)) = job_index::failed_indexes_verdict(
            &index_policy,
            params.completions.unwrap_or(0),
            &completed,
            &failed_indexes,
        )
        .filter(|_| params.indexed)
        {
            conditions.insert(
                "FailureTarget".into(),
                condition("FailureTarget", "True", reason, message),
            );
        } else if deadline_left.is_some_and(|d| !d.is_positive()) {
            conditions.insert(
                "FailureTarget".into(),
                condition(
                    "FailureTarget",
                    "True",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                ),
            );
        } else {
            let complete = match params.completions {
                Some(completions) => done >= completions,
                None => succeeded > 0 && active.is_empty(),
            };
            let success_rule = job_index::success_rule_met(&index_policy.success_rules, &completed)
                .filter(|_| params.indexed);
            if let Some(rule) = success_rule {
                conditions.insert(
                    "SuccessCriteriaMet".into(),
                    condition(
                        "SuccessCriteriaMet",
                        "True",
                        "SuccessPolicy",
                        &format!("Matched rules at index {rule}"),
                    ),
                );
            } else if complete {
                conditions.insert(
                    "SuccessCriteriaMet".into(),
                    condition(
                        "SuccessCriteriaMet",
                        "True",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                    ),
                );
            }
            if let Some(left) = deadline_left {
                requeue = Some(left.unsigned_abs() + Duration::from_millis(100));
            }
        }
    }

    let mut start_time_out = status.start_time.clone().map(|t| json!(t));
    let mut completion_time = None;
    let ending = conditions
        .get("FailureTarget")
        .filter(|c| c["status"] == "True")
        .or_else(|| {
            conditions
                .get("SuccessCriteriaMet")
                .filter(|c| c["status"] == "True")
        })
        .cloned();
    if let Some(target) = ending {
        // Stop whatever still runs, then finish once nothing is left holding a finalizer. Once
        // the job has failed, upstream counts every pod it stops as failed (deadline, backoff
        // limit, failure policy): those keep their finalizer until the next sync counts them.
        let failing = is_true(&conditions, "FailureTarget");
        let stopping = if failing {
            Stopping::CountAsFailed
        } else {
            Stopping::Uncounted
        };
        stop_pods(&ctx, &pods_api, &active, &reference, stopping).await?;
        let anything_left = pods.iter().any(|p| {
            has_tracking_finalizer(&p.metadata)
                && !released.contains(p.metadata.uid.as_deref().unwrap_or(""))
        }) || !uncounted_succeeded.is_empty()
            || !uncounted_failed.is_empty();
        if !anything_left {
            let reason = target["reason"].as_str().unwrap_or("").to_string();
            let message = target["message"].as_str().unwrap_or("").to_string();
            if failing {
                conditions.insert(
                    "Failed".into(),
                    condition("Failed", "True", &reason, &message),
                );
                common::publish(
                    &ctx.recorder,
                    &reference,
                    EventType::Warning,
                    &reason,
                    message,
                )
                .await;
            } else {
                conditions.insert(
                    "Complete".into(),
                    condition("Complete", "True", &reason, &message),
                );
                completion_time = Some(crate::api::meta::now_rfc3339());
                common::publish(
                    &ctx.recorder,
                    &reference,
                    EventType::Normal,
                    "Completed",
                    "Job completed".into(),
                )
                .await;
            }
        } else {
            requeue = Some(Duration::from_secs(1));
        }
    } else if params.suspend {
        stop_pods(&ctx, &pods_api, &active, &reference, Stopping::Uncounted).await?;
        if conditions
            .get("Suspended")
            .and_then(|c| c["status"].as_str())
            != Some("True")
        {
            conditions.insert(
                "Suspended".into(),
                condition("Suspended", "True", "JobSuspended", "Job suspended"),
            );
            common::publish(
                &ctx.recorder,
                &reference,
                EventType::Normal,
                "Suspended",
                "Job suspended".into(),
            )
            .await;
        }
        // A resumed job's deadline counts from its resumption.
        start_time_out = None;
    } else {
        if conditions
            .get("Suspended")
            .and_then(|c| c["status"].as_str())
            == Some("True")
        {
            conditions.insert(
                "Suspended".into(),
                condition("Suspended", "False", "JobResumed", "Job resumed"),
            );
            common::publish(
                &ctx.recorder,
                &reference,
                EventType::Normal,
                "Resumed",
                "Job resumed".into(),
            )
            .await;
            start_time_out = None;
        }
        if start_time_out.is_none() {
            start_time_out = Some(json!(crate::api::meta::now_rfc3339()));
            if let Some(deadline) = params.active_deadline {
                requeue =
                    Some(Duration::from_secs(deadline.max(0) as u64) + Duration::from_millis(100));
            }
        }
        let wait = backoff_remaining(&pods, failed, now);
        if wait > Duration::ZERO {
            requeue = Some(requeue.map_or(wait, |r| r.min(wait)));
        } else {
            // A failed index is not run again; with podReplacementPolicy Failed a pod still
            // terminating keeps its place.
            let blocked: BTreeSet<i32> = completed.union(&failed_indexes).copied().collect();
            let mut holding = active.clone();
            if index_policy.replace_only_failed {
                holding.extend(pods.iter().filter(|p| common::pod_is_terminating(p)));
            }
            let index_failures =
                job_index::failures_per_index(pods.iter().filter(|p| pod_failed(p)));
            start_pods(
                &ctx,
                &pods_api,
                &job,
                &params,
                &holding,
                &blocked,
                &index_failures,
                succeeded,
                &reference,
            )
            .await;
        }
    }

    let active_count = if is_true(&conditions, "Complete") || is_true(&conditions, "Failed") {
        0
    } else {
        active.len() as i32
    };
    let ready = active.iter().filter(|p| common::pod_is_ready(p)).count() as i32;
    let conditions_out: Vec<&Value> = conditions.values().collect();
    let body = json!({"status": {
        "active": active_count,
        "ready": ready,
        "terminating": terminating,
        "succeeded": succeeded,
        "failed": failed,
        "startTime": start_time_out,
        "completionTime": completion_time,
        "completedIndexes": params.indexed.then(|| format_indexes(&completed)),
        "failedIndexes": per_index_limit.map(|_| format_indexes(&failed_indexes)),
        "uncountedTerminatedPods": {
            "succeeded": uncounted_succeeded,
            "failed": uncounted_failed,
        },
        "conditions": if conditions_out.is_empty() { Value::Null } else { json!(conditions_out) },
    }});
    let changed = conditions != old_conditions || common::status_differs(&job, &body);
    if changed && !write_status(&jobs, name, &body).await? {
        return Ok(Action::await_change());
    }
    Ok(match requeue {
        Some(wait) => Action::requeue(wait),
        None => Action::requeue(Duration::from_secs(300)),
    })
}

/// How long until a replacement pod may start after the latest failure.
fn backoff_remaining(pods: &[Pod], failed: i32, now: Timestamp) -> Duration {
    let last_failure = pods
        .iter()
        .filter(|p| phase(p) == "Failed")
        .filter_map(finished_at)
        .max();
    let Some(last) = last_failure else {
        return Duration::ZERO;
    };
    let ready_at = last + SignedDuration::try_from(backoff_delay(failed)).unwrap_or_default();
    if ready_at > now {
        ready_at.duration_since(now).unsigned_abs()
    } else {
        Duration::ZERO
    }
}

/// When a finished pod's last container ended.
fn finished_at(pod: &Pod) -> Option<Timestamp> {
    pod.status
        .as_ref()?
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max()
}

async fn write_status(jobs: &Api<Job>, name: &str, body: &Value) -> Result<bool, Error> {
    match jobs
        .patch_status(name, &PatchParams::default(), &Patch::Merge(body))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Removes the tracking finalizer, guarded by the pod's resourceVersion.
async fn strip_finalizer(pods: &Api<Pod>, pod: &ObjectMeta) -> Result<(), Error> {
    let name = pod.name.clone().unwrap_or_default();
    let finalizers: Vec<&String> = pod
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != TRACKING_FINALIZER)
        .collect();
    let body = json!({"metadata": {
        "finalizers": if finalizers.is_empty() { Value::Null } else { json!(finalizers) },
        "resourceVersion": pod.resource_version,
    }});
    match pods
        .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether pods the job stops count in its `status.failed`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stopping {
    /// The job failed: a pod deleted still holding its finalizer is counted as failed by the
    /// next sync (a deleted pod that never succeeded is a failure), then released.
    CountAsFailed,
    /// Suspended or complete: the pod loses its finalizer first and is never counted.
    Uncounted,
}

/// Deletes running pods the job no longer wants.
async fn stop_pods(
    ctx: &Context,
    pods: &Api<Pod>,
    active: &[&Pod],
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    stopping: Stopping,
) -> Result<(), Error> {
    for pod in active {
        if stopping == Stopping::Uncounted && has_tracking_finalizer(&pod.metadata) {
            strip_finalizer(pods, &pod.metadata).await?;
        }
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        match pods.delete(&pod_name, &DeleteParams::background()).await {
            Ok(_) => {
                common::publish(
                    &ctx.recorder,
                    reference,
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!("Deleted pod: {pod_name}"),
                )
                .await
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn start_pods(
    ctx: &Context,
    pods: &Api<Pod>,
    job: &Job,
    params: &JobParams,
    active: &[&Pod],
    completed: &BTreeSet<i32>,
    index_failures: &BTreeMap<i32, i32>,
    succeeded: i32,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
) {
    let count = pods_to_start(params, active.len() as i32, succeeded);
    if count == 0 {
        return;
    }
    let indexes: Vec<Option<i32>> = if params.indexed {
        let running: BTreeSet<i32> = active.iter().filter_map(|p| completion_index(p)).collect();
        let room = (params.parallelism - active.len() as i32).max(0) as usize;
        missing_indexes(params.completions.unwrap_or(0), completed, &running)
            .into_iter()
            .take(room)
            .map(Some)
            .collect()
    } else {
        vec![None; count as usize]
    };
    for index in indexes {
        let mut pod = pod_for(job, index);
        if let Some(failures) = index.and_then(|i| index_failures.get(&i)) {
            pod.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(job_index::INDEX_FAILURE_COUNT.into(), failures.to_string());
        }
        match pods.create(&PostParams::default(), &pod).await {
            Ok(created) => {
                let name = created.metadata.name.unwrap_or_default();
                common::publish(
                    &ctx.recorder,
                    reference,
                    EventType::Normal,
                    "SuccessfulCreate",
                    format!("Created pod: {name}"),
                )
                .await;
            }
            Err(error) => {
                common::publish(
                    &ctx.recorder,
                    reference,
                    EventType::Warning,
                    "FailedCreate",
                    format!("Error creating: {error}"),
                )
                .await;
                // One failure is enough: the next sync tries again.
                return;
            }
        }
    }
}

/// The pod a job runs: the template with the job's labels, the tracking finalizer, a
/// controller reference and, for Indexed jobs, its completion index and hostname.
pub fn pod_for(job: &Job, index: Option<i32>) -> Pod {
    let spec = job.spec.clone().unwrap_or_default();
    let template = spec.template;
    let template_meta = template.metadata.unwrap_or_default();
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let mut labels = template_meta.labels.unwrap_or_default();
    if spec.manual_selector != Some(true) {
        labels
            .entry(CONTROLLER_UID.into())
            .or_insert_with(|| uid.clone());
        labels
            .entry(LEGACY_CONTROLLER_UID.into())
            .or_insert_with(|| uid.clone());
        labels
            .entry(JOB_NAME.into())
            .or_insert_with(|| job_name.clone());
        labels
            .entry(LEGACY_JOB_NAME.into())
            .or_insert_with(|| job_name.clone());
    }
    let mut annotations = template_meta.annotations.unwrap_or_default();
    let mut finalizers = template_meta.finalizers.unwrap_or_default();
    finalizers.push(TRACKING_FINALIZER.into());
    let mut pod_spec = template.spec.unwrap_or_default();
    let mut generate_name = format!("{job_name}-");
    if let Some(index) = index {
        labels.insert(COMPLETION_INDEX.into(), index.to_string());
        annotations.insert(COMPLETION_INDEX.into(), index.to_string());
        generate_name = format!("{job_name}-{index}-");
        pod_spec.hostname = Some(format!("{job_name}-{index}"));
        let env = EnvVar {
            name: "JOB_COMPLETION_INDEX".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: None,
                    field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                }),
                ..Default::default()
            }),
        };
        let containers = pod_spec
            .containers
            .iter_mut()
            .chain(pod_spec.init_containers.iter_mut().flatten());
        for container in containers {
            let vars = container.env.get_or_insert_with(Vec::new);
            if !vars.iter().any(|v| v.name == env.name) {
                vars.push(env.clone());
            }
        }
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            finalizers: Some(finalizers),
            owner_references: Some(vec![common::controller_reference(
                "batch/v1",
                "Job",
                &job.metadata,
            )]),
            ..Default::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{
        JobSpec, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyOnPodConditionsPattern,
    };
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodCondition, PodStatus,
    };

    fn job(spec: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "pi", "namespace": "default", "uid": "u-1"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn failed_pod(exit_code: i32, conditions: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("pi-x".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Failed".into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: "main".into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(t, s)| PodCondition {
                            type_: t.to_string(),
                            status: s.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    fn exit_rule(action: &str, operator: &str, values: Vec<i32>) -> PodFailurePolicyRule {
        PodFailurePolicyRule {
            action: action.into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                container_name: None,
                operator: operator.into(),
                values,
            }),
            on_pod_conditions: None,
        }
    }

    #[test]
    fn a_job_without_completions_or_parallelism_runs_one_pod_once() {
        let params = JobParams::of(&job(json!({"template": {}})));
        assert_eq!(params.completions, Some(1));
        assert_eq!(params.parallelism, 1);
        assert_eq!(params.backoff_limit, 6);
        assert!(!params.indexed);
    }

    #[test]
    fn parallelism_alone_makes_a_work_queue() {
        let params = JobParams::of(&job(json!({"parallelism": 3, "template": {}})));
        assert_eq!(params.completions, None);
        assert_eq!(pods_to_start(&params, 0, 0), 3);
        assert_eq!(pods_to_start(&params, 2, 1), 0, "one success: no new pods");
    }

    #[test]
    fn pods_started_never_exceed_parallelism_nor_the_completions_left() {
        let params = JobParams::of(&job(
            json!({"completions": 5, "parallelism": 2, "template": {}}),
        ));
        assert_eq!(pods_to_start(&params, 0, 0), 2);
        assert_eq!(pods_to_start(&params, 1, 0), 1);
        assert_eq!(pods_to_start(&params, 1, 4), 0, "one left and one running");
        assert_eq!(pods_to_start(&params, 0, 4), 1);
        assert_eq!(pods_to_start(&params, 0, 5), 0);
    }

    #[test]
    fn completed_indexes_round_trip_in_the_compact_form() {
        let set = parse_indexes("0,2-4,7");
        assert_eq!(set, BTreeSet::from([0, 2, 3, 4, 7]));
        assert_eq!(format_indexes(&set), "0,2-4,7");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        assert_eq!(parse_indexes("x,1"), BTreeSet::from([1]));
    }

    #[test]
    fn missing_indexes_skip_completed_and_running_ones() {
        let completed = BTreeSet::from([0, 2]);
        let running = BTreeSet::from([1]);
        assert_eq!(missing_indexes(5, &completed, &running), vec![3, 4]);
    }

    #[test]
    fn backoff_doubles_from_ten_seconds_up_to_ten_minutes() {
        assert_eq!(backoff_delay(0), Duration::ZERO);
        assert_eq!(backoff_delay(1), Duration::from_secs(10));
        assert_eq!(backoff_delay(3), Duration::from_secs(40));
        assert_eq!(backoff_delay(30), Duration::from_secs(600));
    }

    #[test]
    fn the_first_matching_failure_rule_decides() {
        let rules = vec![
            exit_rule("Ignore", "In", vec![3]),
            exit_rule("FailJob", "NotIn", vec![1, 2]),
        ];
        assert_eq!(
            failure_action(&rules, &failed_pod(3, &[])),
            FailureAction::Ignore
        );
        assert_eq!(
            failure_action(&rules, &failed_pod(1, &[])),
            FailureAction::Count
        );
        match failure_action(&rules, &failed_pod(42, &[])) {
            FailureAction::FailJob(message) => {
                assert!(message.contains("exit code 42"), "{message}")
            }
            other => panic!("expected FailJob, got {other:?}"),
        }
    }

    #[test]
    fn a_disruption_condition_can_be_ignored() {
        let rules = vec![PodFailurePolicyRule {
            action: "Ignore".into(),
            on_exit_codes: None,
            on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                type_: "DisruptionTarget".into(),
                status: Some("True".into()),
            }]),
        }];
        assert_eq!(
            failure_action(&rules, &failed_pod(137, &[("DisruptionTarget", "True")])),
            FailureAction::Ignore
        );
        assert_eq!(
            failure_action(&rules, &failed_pod(137, &[])),
            FailureAction::Count
        );
    }

    #[test]
    fn indexed_pods_carry_their_index_hostname_and_env() {
        let job = job(
            json!({"completionMode": "Indexed", "completions": 3, "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}),
        );
        let pod = pod_for(&job, Some(2));
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get(COMPLETION_INDEX).map(String::as_str), Some("2"));
        assert_eq!(labels.get("job-name").map(String::as_str), Some("pi"));
        assert_eq!(labels.get(CONTROLLER_UID).map(String::as_str), Some("u-1"));
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("pi-2-"));
        let spec = pod.spec.unwrap_or_default();
        assert_eq!(spec.hostname.as_deref(), Some("pi-2"));
        assert!(spec.containers[0]
            .env
            .iter()
            .flatten()
            .any(|e| e.name == "JOB_COMPLETION_INDEX"));
        assert!(has_tracking_finalizer(&pod.metadata));
        assert!(common::is_controlled_by(&pod.metadata, "u-1"));
    }

    #[test]
    fn a_manual_selector_keeps_the_template_labels_alone() {
        let job = job(
            json!({"manualSelector": true, "template": {"metadata": {"labels": {"app": "x"}}}}),
        );
        let labels = pod_for(&job, None).metadata.labels.unwrap_or_default();
        assert_eq!(labels.len(), 1);
        let _ = JobSpec::default();
    }

    #[test]
    fn a_pod_deleted_before_success_counts_as_failed() {
        let mut pod = failed_pod(0, &[]);
        if let Some(s) = pod.status.as_mut() {
            s.phase = Some("Running".into());
        }
        assert!(!pod_failed(&pod));
        pod.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
        );
        assert!(pod_failed(&pod));
    }
}
