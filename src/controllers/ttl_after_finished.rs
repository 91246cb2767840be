//! TTL after finished: a Job with `spec.ttlSecondsAfterFinished` is deleted (with its pods,
//! in the foreground, as upstream) that many seconds after it completed or failed.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
}

/// Runs the controller until the watch ends.
pub async fn run(client: kube::Client) {
    let jobs: Api<Job> = Api::all(client.clone());
    Controller::new(jobs, watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|_| async {})
        .await;
}

fn error_policy(_: Arc<Job>, error: &Error, _: Arc<kube::Client>) -> Action {
    tracing::warn!(%error, "ttl-after-finished sync failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// When the job finished: its completion time, or when its terminal condition turned true.
pub fn finished_at(job: &Job) -> Option<Timestamp> {
    let status = job.status.as_ref()?;
    let terminal = status
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?;
    status
        .completion_time
        .as_ref()
        .or(terminal.last_transition_time.as_ref())
        .map(|t| t.0)
}

/// How long until the job may be deleted: None if it never expires, zero if it has.
pub fn time_left(job: &Job, now: Timestamp) -> Option<Duration> {
    if job.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let expires = finished_at(job)? + SignedDuration::from_secs(ttl.into());
    Some(if expires > now {
        expires.duration_since(now).unsigned_abs()
    } else {
        Duration::ZERO
    })
}

async fn reconcile(job: Arc<Job>, client: Arc<kube::Client>) -> Result<Action, Error> {
    let Some(left) = time_left(&job, Timestamp::now()) else {
        return Ok(Action::await_change());
    };
    if left > Duration::ZERO {
        return Ok(Action::requeue(left + Duration::from_millis(100)));
    }
    let (Some(name), Some(namespace)) = (&job.metadata.name, &job.metadata.namespace) else {
        return Ok(Action::await_change());
    };
    let jobs: Api<Job> = Api::namespaced((*client).clone(), namespace);
    // The cached copy may be stale (the TTL changed, the job was recreated): check again.
    let Some(fresh) = jobs.get_opt(name).await? else {
        return Ok(Action::await_change());
    };
    match time_left(&fresh, Timestamp::now()) {
        Some(left) if left.is_zero() => {}
        Some(left) => return Ok(Action::requeue(left + Duration::from_millis(100))),
        None => return Ok(Action::await_change()),
    }
    tracing::debug!(%namespace, %name, "deleting a finished job whose TTL expired");
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: fresh.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::foreground()
    };
    match jobs.delete(name, &params).await {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(ttl: Option<i32>, conditions: serde_json::Value, completion: Option<&str>) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "j", "namespace": "default"},
            "spec": {"ttlSecondsAfterFinished": ttl, "template": {}},
            "status": {"conditions": conditions, "completionTime": completion},
        }))
        .unwrap()
    }

    #[test]
    fn a_completed_job_expires_ttl_seconds_after_its_completion_time() {
        let done = "2026-05-01T00:00:00Z";
        let j = job(
            Some(100),
            json!([{"type": "Complete", "status": "True"}]),
            Some(done),
        );
        let at: Timestamp = done.parse().unwrap();
        assert_eq!(
            time_left(&j, at + SignedDuration::from_secs(40)),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            time_left(&j, at + SignedDuration::from_secs(400)),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn a_failed_job_counts_from_its_failed_condition() {
        let j = job(
            Some(0),
            json!([{"type": "Failed", "status": "True", "lastTransitionTime": "2026-05-01T00:00:00Z"}]),
            None,
        );
        let now: Timestamp = "2026-05-01T00:00:01Z".parse().unwrap();
        assert_eq!(time_left(&j, now), Some(Duration::ZERO));
    }

    #[test]
    fn running_jobs_and_jobs_without_a_ttl_never_expire() {
        let now = Timestamp::now();
        let running = job(Some(0), json!([]), None);
        assert_eq!(time_left(&running, now), None);
        let no_ttl = job(
            None,
            json!([{"type": "Complete", "status": "True"}]),
            Some("2026-05-01T00:00:00Z"),
        );
        assert_eq!(time_left(&no_ttl, now), None);
    }
}
