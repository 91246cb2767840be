//! Leader election among servers that share one store (etcd): the controllers and the scheduler
//! run on exactly one of them, the holder of a Lease, as upstream's controller manager does.
//!
//! The holder renews the Lease every retry period; the others take it over once its record has
//! not changed for a whole lease duration as they observed it with their own clock (upstream's
//! rule, which needs no synchronised clocks). A holder that cannot renew within the renew
//! deadline stops its components before anyone else may take over.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::task::JoinSet;
use tokio::time::Instant;

pub const LEASE_NAME: &str = "berth-controllers";
pub const LEASE_NAMESPACE: &str = "kube-system";

/// Upstream's defaults for kube-controller-manager and kube-scheduler.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// The Lease's record as last seen, and when this server saw it change.
#[derive(Clone, Debug, PartialEq)]
struct Observed {
    holder: String,
    renew_time: Option<MicroTime>,
    at: Instant,
}

/// What to do with the Lease as it is now.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Nobody holds it, its holder let it expire, or it is ours: write ourselves in.
    Take { transition: bool },
    /// Someone else holds it and renews it.
    Wait,
}

fn decide(
    spec: &LeaseSpec,
    me: &str,
    observed: &mut Option<Observed>,
    now: Instant,
    lease_duration: Duration,
) -> Decision {
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder.is_empty() {
        return Decision::Take { transition: true };
    }
    if holder == me {
        return Decision::Take { transition: false };
    }
    let changed = observed
        .as_ref()
        .is_none_or(|seen| seen.holder != holder || seen.renew_time != spec.renew_time);
    if changed {
        *observed = Some(Observed {
            holder,
            renew_time: spec.renew_time.clone(),
            at: now,
        });
        return Decision::Wait;
    }
    let duration = spec
        .lease_duration_seconds
        .map_or(lease_duration, |s| Duration::from_secs(s.max(0) as u64));
    match observed {
        Some(seen) if now.duration_since(seen.at) < duration => Decision::Wait,
        _ => Decision::Take { transition: true },
    }
}

pub struct Elector {
    leases: Api<Lease>,
    identity: String,
    timing: Timing,
    observed: Option<Observed>,
}

impl Elector {
    pub fn new(client: kube::Client, identity: String, timing: Timing) -> Elector {
        Elector {
            leases: Api::namespaced(client, LEASE_NAMESPACE),
            identity,
            timing,
            observed: None,
        }
    }

    /// One attempt to acquire or renew; true when this server holds the Lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(jiff::Timestamp::now());
        let Some(mut lease) = self.leases.get_opt(LEASE_NAME).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.to_owned()),
                    namespace: Some(LEASE_NAMESPACE.to_owned()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.timing.lease_duration.as_secs() as i32),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let mut spec = lease.spec.take().unwrap_or_default();
        let decision = decide(
            &spec,
            &self.identity,
            &mut self.observed,
            Instant::now(),
            self.timing.lease_duration,
        );
        let Decision::Take { transition } = decision else {
            return Ok(false);
        };
        if transition {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(self.timing.lease_duration.as_secs() as i32);
        spec.renew_time = Some(now);
        lease.spec = Some(spec);
        // The resourceVersion read above makes this a compare-and-swap: of two servers taking
        // an expired Lease at once, one gets 409.
        match self
            .leases
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "cannot read or write the controllers' lease"),
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }

    /// Renews until it fails for longer than the renew deadline: then leadership is lost.
    async fn hold(&mut self) {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.timing.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => return,
                Err(error) => tracing::warn!(%error, "cannot renew the controllers' lease"),
            }
            if renewed.elapsed() >= self.timing.renew_deadline {
                return;
            }
        }
    }

    /// Runs what `start` spawns while this server leads, and stops it when leadership is
    /// lost, to start it again once regained. Returns only when a started component ends,
    /// which ends the server as any component's end does.
    pub async fn run_while_leading(
        mut self,
        mut start: impl FnMut(&mut JoinSet<anyhow::Result<()>>),
    ) -> anyhow::Result<()> {
        loop {
            self.acquire().await;
            tracing::info!(identity = %self.identity, "leading: starting the controllers and the scheduler");
            let mut components = JoinSet::new();
            start(&mut components);
            tokio::select! {
                () = self.hold() => {}
                Some(finished) = components.join_next() => {
                    return match finished {
                        Ok(Ok(())) => Err(anyhow::anyhow!("a controller stopped unexpectedly")),
                        Ok(Err(e)) => Err(e),
                        Err(e) => Err(anyhow::anyhow!("a controller panicked: {e}")),
                    };
                }
            }
            tracing::warn!(identity = %self.identity, "lost the controllers' lease: stopping the controllers and the scheduler");
            components.shutdown().await;
            self.observed = None;
        }
    }
}

/// This server's name in the Lease: unique per process, as upstream's `hostname_uuid`.
pub fn identity(node_name: &str) -> String {
    format!("{node_name}_{}", crate::api::meta::new_uid())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str, renewed_at_second: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            renew_time: Some(MicroTime(
                jiff::Timestamp::from_second(renewed_at_second).unwrap(),
            )),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_free_lease_is_taken_and_our_own_is_renewed() {
        let mut observed = None;
        let now = Instant::now();
        let free = LeaseSpec::default();
        let lease = Duration::from_secs(15);
        assert_eq!(
            decide(&free, "me", &mut observed, now, lease),
            Decision::Take { transition: true }
        );
        assert_eq!(
            decide(&held_by("me", 1), "me", &mut observed, now, lease),
            Decision::Take { transition: false }
        );
    }

    #[test]
    fn another_holders_lease_is_taken_only_after_it_went_unrenewed_for_its_duration() {
        let mut observed = None;
        let start = Instant::now();
        let lease = Duration::from_secs(15);
        let other = held_by("other", 100);
        assert_eq!(
            decide(&other, "me", &mut observed, start, lease),
            Decision::Wait
        );
        let later = start + Duration::from_secs(14);
        assert_eq!(
            decide(&other, "me", &mut observed, later, lease),
            Decision::Wait
        );
        // Renewed: the clock starts over from when we saw the change.
        let renewed = held_by("other", 110);
        assert_eq!(
            decide(&renewed, "me", &mut observed, later, lease),
            Decision::Wait
        );
        let still = later + Duration::from_secs(14);
        assert_eq!(
            decide(&renewed, "me", &mut observed, still, lease),
            Decision::Wait
        );
        let expired = later + Duration::from_secs(15);
        assert_eq!(
            decide(&renewed, "me", &mut observed, expired, lease),
            Decision::Take { transition: true }
        );
    }
}
