//! CronJob: create a Job at each scheduled time, as upstream's cronjob controller v2 does.
//!
//! Each reconcile looks at the Jobs the CronJob controls, brings `status.active` and
//! `lastSuccessfulTime` up to date, trims finished Jobs beyond the history limits, then
//! starts the most recent missed run (if any, and if its starting deadline has not passed)
//! and asks to be woken at the next scheduled time. Job names are `<cronjob>-<scheduled
//! time in minutes since the epoch>`, so a run is never created twice.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;

use super::common;
use super::cron::{self, Schedule};
use super::job::is_finished;

/// Upstream gives up counting missed start times beyond this and says so.
const MAX_MISSED: usize = 100;
const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
}

struct Context {
    client: kube::Client,
    recorder: Recorder,
}

/// Runs the CronJob controller until the watch ends.
pub async fn run(client: kube::Client) {
    let cronjobs: Api<CronJob> = Api::all(client.clone());
    let jobs: Api<Job> = Api::all(client.clone());
    let recorder = Recorder::new(client.clone(), Reporter::from("cronjob-controller"));
    let context = Arc::new(Context { client, recorder });
    Controller::new(cronjobs, watcher::Config::default())
        .watches(jobs, watcher::Config::default(), |job| {
            let namespace = job.metadata.namespace.clone().unwrap_or_default();
            common::controller_of(&job.metadata)
                .filter(|r| r.kind == "CronJob")
                .map(|r| ObjectRef::<CronJob>::new(&r.name).within(&namespace))
        })
        .run(reconcile, error_policy, context)
        .for_each(|_| async {})
        .await;
}

fn error_policy(_: Arc<CronJob>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "cronjob sync failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// The run to start now, if any, and the scheduled times missed before it.
#[derive(Debug, PartialEq)]
pub struct Due {
    pub most_recent: Option<Timestamp>,
    /// How many scheduled times fell in the window (capped just above [`MAX_MISSED`]).
    pub missed: usize,
}

/// Upstream's `mostRecentScheduleTime`: scheduled times after the last run (or creation),
/// bounded by the starting deadline, up to `now`.
pub fn due(
    schedule: &Schedule,
    tz: &k8s_openapi::jiff::tz::TimeZone,
    last_schedule: Option<Timestamp>,
    created: Timestamp,
    starting_deadline: Option<i64>,
    now: Timestamp,
) -> Due {
    let mut earliest = last_schedule.unwrap_or(created);
    if let Some(deadline) = starting_deadline {
        let window_start = now - SignedDuration::from_secs(deadline);
        if window_start > earliest {
            earliest = window_start;
        }
    }
    let mut most_recent = None;
    let mut missed = 0;
    let mut t = earliest;
    while let Some(next) = schedule.next_after(t, tz) {
        if next > now {
            break;
        }
        most_recent = Some(next);
        missed += 1;
        t = next;
        if missed > MAX_MISSED {
            // Jump to the last scheduled time before now without counting each one.
            let mut last = next;
            while let Some(n) = schedule.next_after(last, tz).filter(|n| *n <= now) {
                last = n;
                if last.duration_since(next) > SignedDuration::from_hours(24 * 366) {
                    break;
                }
            }
            most_recent = Some(last);
            break;
        }
    }
    Due {
        most_recent,
        missed,
    }
}

/// The Job name for a run scheduled at `at` (upstream `getJobName`).
pub fn job_name(cronjob: &str, at: Timestamp) -> String {
    format!("{cronjob}-{}", at.as_second().div_euclid(60))
}

/// Finished Jobs to delete so that at most `limit` of them are kept, oldest first.
pub fn beyond_limit(mut finished: Vec<&Job>, limit: i32) -> Vec<&Job> {
    let limit = usize::try_from(limit.max(0)).unwrap_or(0);
    if finished.len() <= limit {
        return Vec::new();
    }
    finished.sort_by_key(|j| {
        (
            j.status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0),
            j.metadata.creation_timestamp.as_ref().map(|t| t.0),
        )
    });
    let excess = finished.len() - limit;
    finished.into_iter().take(excess).collect()
}

fn condition_true(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.status == "True")
}

fn job_reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        field_path: None,
    }
}

async fn reconcile(cronjob: Arc<CronJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let meta = &cronjob.metadata;
    let (Some(name), Some(namespace), Some(uid)) = (&meta.name, &meta.namespace, &meta.uid) else {
        return Ok(Action::await_change());
    };
    let cronjobs: Api<CronJob> = Api::namespaced(ctx.client.clone(), namespace);
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(cronjob) = cronjobs.get_opt(name).await? else {
        return Ok(Action::await_change());
    };
    let spec = cronjob.spec.clone().unwrap_or_default();
    let reference = common::object_reference("batch/v1", "CronJob", &cronjob.metadata);
    let now = Timestamp::now();
    let mut jobs: Vec<Job> = jobs_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|j| common::is_controlled_by(&j.metadata, uid))
        .collect();

    // History: finished Jobs beyond the limits go, oldest first.
    let succeeded: Vec<&Job> = jobs
        .iter()
        .filter(|j| condition_true(j, "Complete"))
        .collect();
    let failed: Vec<&Job> = jobs
        .iter()
        .filter(|j| condition_true(j, "Failed"))
        .collect();
    let mut removed = Vec::new();
    let excess = beyond_limit(succeeded, spec.successful_jobs_history_limit.unwrap_or(3))
        .into_iter()
        .chain(beyond_limit(
            failed,
            spec.failed_jobs_history_limit.unwrap_or(1),
        ));
    for job in excess {
        let job_name = job.metadata.name.clone().unwrap_or_default();
        match jobs_api
            .delete(&job_name, &DeleteParams::background())
            .await
        {
            Ok(_) => {
                common::publish(
                    &ctx.recorder,
                    &reference,
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!("Deleted job {job_name}"),
                )
                .await;
                removed.push(job_name);
            }
            Err(kube::Error::Api(e)) if e.code == 404 => removed.push(job_name),
            Err(e) => return Err(e.into()),
        }
    }
    jobs.retain(|j| !removed.contains(j.metadata.name.as_ref().unwrap_or(&String::new())));

    let status = cronjob.status.clone().unwrap_or_default();
    let mut last_schedule = status.last_schedule_time.as_ref().map(|t| t.0);
    let mut last_successful = status.last_successful_time.as_ref().map(|t| t.0);
    for job in jobs.iter().filter(|j| condition_true(j, "Complete")) {
        let done = job
            .status
            .as_ref()
            .and_then(|s| s.completion_time.as_ref())
            .map(|t| t.0);
        if done > last_successful {
            last_successful = done;
        }
    }
    let mut active: Vec<ObjectReference> = jobs
        .iter()
        .filter(|j| !is_finished(j) && j.metadata.deletion_timestamp.is_none())
        .map(job_reference)
        .collect();

    let mut requeue = None;
    let deleting = cronjob.metadata.deletion_timestamp.is_some();
    if !deleting && !spec.suspend.unwrap_or(false) {
        match cron::Schedule::parse(&spec.schedule)
            .and_then(|s| cron::time_zone(spec.time_zone.as_deref(), &s).map(|tz| (s, tz)))
        {
            Err(error) => {
                let reason = match error {
                    cron::Error::TimeZone(_) => "UnknownTimeZone",
                    _ => "UnparseableSchedule",
                };
                common::publish(
                    &ctx.recorder,
                    &reference,
                    EventType::Warning,
                    reason,
                    error.to_string(),
                )
                .await;
            }
            Ok((schedule, tz)) => {
                let created = cronjob
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(now, |t| t.0);
                let due = due(
                    &schedule,
                    &tz,
                    last_schedule,
                    created,
                    spec.starting_deadline_seconds,
                    now,
                );
                if due.missed > MAX_MISSED {
                    common::publish(&ctx.recorder, &reference, EventType::Warning, "TooManyMissedTimes", "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into()).await;
                }
                if let Some(at) = due.most_recent {
                    if let Some(job) = start_run(
                        &ctx,
                        &jobs_api,
                        &cronjob,
                        &spec,
                        at,
                        &mut active,
                        &reference,
                    )
                    .await?
                    {
                        active.push(job_reference(&job));
                        last_schedule = Some(at);
                    }
                }
                requeue = schedule.next_after(now, &tz).map(|next| {
                    next.duration_since(now).unsigned_abs() + Duration::from_millis(100)
                });
            }
        }
    }

    let body = json!({"status": {
        "active": if active.is_empty() { serde_json::Value::Null } else { json!(active) },
        "lastScheduleTime": last_schedule.map(|t| t.to_string()),
        "lastSuccessfulTime": last_successful.map(|t| t.to_string()),
    }});
    if common::status_differs(&cronjob, &body) {
        match cronjobs
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(match requeue {
        Some(wait) => Action::requeue(wait),
        None => Action::requeue(Duration::from_secs(300)),
    })
}

/// Starts the run scheduled at `at` unless it exists, its deadline passed or the concurrency
/// policy forbids it; returns the Job created.
async fn start_run(
    ctx: &Context,
    jobs: &Api<Job>,
    cronjob: &CronJob,
    spec: &k8s_openapi::api::batch::v1::CronJobSpec,
    at: Timestamp,
    active: &mut Vec<ObjectReference>,
    reference: &ObjectReference,
) -> Result<Option<Job>, Error> {
    let cronjob_name = cronjob.metadata.name.clone().unwrap_or_default();
    let name = job_name(&cronjob_name, at);
    if active
        .iter()
        .any(|r| r.name.as_deref() == Some(name.as_str()))
    {
        return Ok(None);
    }
    if let Some(deadline) = spec.starting_deadline_seconds {
        if at + SignedDuration::from_secs(deadline) < Timestamp::now() {
            common::publish(
                &ctx.recorder,
                reference,
                EventType::Warning,
                "MissSchedule",
                format!("Missed scheduled time to start a job: {at}"),
            )
            .await;
            return Ok(None);
        }
    }
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if !active.is_empty() => {
            common::publish(&ctx.recorder, reference, EventType::Normal, "JobAlreadyActive", "Not starting job because prior execution is running and concurrency policy is Forbid".into()).await;
            return Ok(None);
        }
        Some("Replace") => {
            for old in active.drain(..) {
                let old_name = old.name.unwrap_or_default();
                match jobs.delete(&old_name, &DeleteParams::background()).await {
                    Ok(_) => {
                        common::publish(
                            &ctx.recorder,
                            reference,
                            EventType::Normal,
                            "SuccessfulDelete",
                            format!("Deleted job {old_name}"),
                        )
                        .await;
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        _ => {}
    }
    let job = job_for(cronjob, &name, at);
    match jobs.create(&PostParams::default(), &job).await {
        Ok(created) => {
            common::publish(
                &ctx.recorder,
                reference,
                EventType::Normal,
                "SuccessfulCreate",
                format!("Created job {name}"),
            )
            .await;
            Ok(Some(created))
        }
        // Created before, by us: the run is not repeated.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(error) => {
            common::publish(
                &ctx.recorder,
                reference,
                EventType::Warning,
                "FailedCreate",
                format!("Error creating job: {error}"),
            )
            .await;
            Err(error.into())
        }
    }
}

/// The Job of the run scheduled at `at`: the CronJob's job template, owned by it.
pub fn job_for(cronjob: &CronJob, name: &str, at: Timestamp) -> Job {
    let template = cronjob.spec.clone().unwrap_or_default().job_template;
    let template_meta = template.metadata.unwrap_or_default();
    let mut annotations = template_meta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), at.to_string());
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: cronjob.metadata.namespace.clone(),
            labels: template_meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![common::controller_reference(
                "batch/v1",
                "CronJob",
                &cronjob.metadata,
            )]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::JobStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::tz::TimeZone;

    fn utc(y: i16, mo: i8, d: i8, h: i8, mi: i8) -> Timestamp {
        cron::at(&TimeZone::UTC, y, mo, d, h, mi).unwrap()
    }

    fn every_minute() -> Schedule {
        Schedule::parse("*/1 * * * *").unwrap()
    }

    #[test]
    fn the_next_run_is_computed_in_the_cronjobs_time_zone_on_a_fixed_clock() {
        let schedule = Schedule::parse("0 9 * * *").unwrap();
        // spec.timeZone is the zone the schedule runs in, whatever the host's.
        let Ok(tz) = cron::time_zone(Some("America/New_York"), &schedule) else {
            // No time zone database on this host: nothing to check.
            return;
        };
        let created = utc(2026, 1, 10, 0, 0);
        // 09:00 in New York in winter (EST, UTC-5) is 14:00 UTC: not due at 13:59 UTC...
        let before = due(
            &schedule,
            &tz,
            None,
            created,
            None,
            utc(2026, 1, 10, 13, 59),
        );
        assert_eq!(before.most_recent, None);
        // ...due at 14:00 UTC, and never at 09:00 UTC.
        let at = due(&schedule, &tz, None, created, None, utc(2026, 1, 10, 14, 0));
        assert_eq!(at.most_recent, Some(utc(2026, 1, 10, 14, 0)));
        assert_eq!(at.missed, 1);
        // In summer (EDT, UTC-4) the same schedule runs an hour earlier in UTC.
        assert_eq!(
            schedule.next_after(utc(2026, 7, 1, 0, 0), &tz),
            Some(utc(2026, 7, 1, 13, 0))
        );
        // The zone is the spec's even when the controller's own clock is elsewhere: UTC's
        // next 09:00 would be 09:00 UTC.
        assert_ne!(
            schedule.next_after(created, &tz),
            schedule.next_after(created, &TimeZone::UTC)
        );
    }

    #[test]
    fn nothing_is_due_before_the_first_scheduled_time() {
        let created = utc(2026, 5, 1, 12, 0) + SignedDuration::from_secs(10);
        let now = created + SignedDuration::from_secs(30);
        let due = due(&every_minute(), &TimeZone::UTC, None, created, None, now);
        assert_eq!(
            due,
            Due {
                most_recent: None,
                missed: 0
            }
        );
    }

    #[test]
    fn the_most_recent_missed_time_is_run_and_the_others_counted() {
        let created = utc(2026, 5, 1, 12, 0);
        let now = utc(2026, 5, 1, 12, 5) + SignedDuration::from_secs(20);
        let due = due(&every_minute(), &TimeZone::UTC, None, created, None, now);
        assert_eq!(due.most_recent, Some(utc(2026, 5, 1, 12, 5)));
        assert_eq!(due.missed, 5);
        let after_run = super::due(
            &every_minute(),
            &TimeZone::UTC,
            due.most_recent,
            created,
            None,
            now,
        );
        assert_eq!(after_run.most_recent, None, "a run is not started twice");
    }

    #[test]
    fn a_starting_deadline_bounds_how_far_back_runs_are_looked_for() {
        let created = utc(2026, 5, 1, 0, 0);
        let now = utc(2026, 5, 3, 0, 0) + SignedDuration::from_secs(30);
        let hourly = Schedule::parse("@hourly").unwrap();
        let unbounded = due(&hourly, &TimeZone::UTC, None, created, None, now);
        assert_eq!(unbounded.missed, 48);
        let bounded = due(&hourly, &TimeZone::UTC, None, created, Some(10), now);
        assert_eq!(
            bounded,
            Due {
                most_recent: None,
                missed: 0
            },
            "12:00 is 30 s ago, beyond 10 s"
        );
        let bounded = due(&hourly, &TimeZone::UTC, None, created, Some(60), now);
        assert_eq!(bounded.most_recent, Some(utc(2026, 5, 3, 0, 0)));
    }

    #[test]
    fn too_many_missed_times_are_reported_but_the_latest_still_runs() {
        let created = utc(2026, 1, 1, 0, 0);
        let now = utc(2026, 1, 2, 0, 0) + SignedDuration::from_secs(1);
        let due = due(&every_minute(), &TimeZone::UTC, None, created, None, now);
        assert!(due.missed > MAX_MISSED);
        assert_eq!(due.most_recent, Some(utc(2026, 1, 2, 0, 0)));
    }

    #[test]
    fn job_names_count_minutes_since_the_epoch() {
        assert_eq!(
            job_name("hello", Timestamp::from_second(60 * 29_000_000).unwrap()),
            "hello-29000000"
        );
    }

    fn finished(name: &str, started: Timestamp) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: None,
            status: Some(JobStatus {
                start_time: Some(Time(started)),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn history_beyond_the_limit_is_trimmed_oldest_first() {
        let t = utc(2026, 5, 1, 0, 0);
        let jobs = [
            finished("b", t + SignedDuration::from_secs(120)),
            finished("a", t),
            finished("c", t + SignedDuration::from_secs(240)),
        ];
        let names = |v: Vec<&Job>| {
            v.into_iter()
                .filter_map(|j| j.metadata.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(beyond_limit(jobs.iter().collect(), 1)),
            vec!["a", "b"]
        );
        assert_eq!(
            names(beyond_limit(jobs.iter().collect(), 3)),
            Vec::<String>::new()
        );
        assert_eq!(
            names(beyond_limit(jobs.iter().collect(), 0)),
            vec!["a", "b", "c"]
        );
    }

    #[test]
    fn a_run_is_owned_by_its_cronjob_and_carries_the_scheduled_time() {
        let cronjob: CronJob = serde_json::from_value(json!({
            "metadata": {"name": "hello", "namespace": "default", "uid": "cj-1"},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"metadata": {"labels": {"app": "x"}}, "spec": {"template": {}}}},
        }))
        .unwrap();
        let at = utc(2026, 5, 1, 0, 0);
        let job = job_for(&cronjob, "hello-1", at);
        assert!(common::is_controlled_by(&job.metadata, "cj-1"));
        assert_eq!(
            job.metadata
                .labels
                .unwrap_or_default()
                .get("app")
                .map(String::as_str),
            Some("x")
        );
        assert_eq!(
            job.metadata
                .annotations
                .unwrap_or_default()
                .get(SCHEDULED_TIMESTAMP),
            Some(&at.to_string())
        );
    }
}
