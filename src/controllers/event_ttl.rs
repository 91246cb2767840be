//! Events expire. Upstream's API server stores every Event with a time to live renewed by each
//! write (`--event-ttl`, an hour by default), so a cluster's events never pile up. berth's store
//! has no per-key TTL: this loop deletes the Events last seen longer ago than the TTL instead,
//! which matters on an SD card where a crash-looping pod writes events all day. As upstream,
//! an event's age counts from its last write: its creation, or a repeat moving `lastTimestamp`
//! or its series' `lastObservedTime`.

use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};

/// How often expired events are looked for, at most: an event outlives its TTL by no more than
/// this, or a quarter of a short TTL.
const MAX_PERIOD: Duration = Duration::from_secs(60);
/// Events listed per request, so a large backlog is not one huge response.
const PAGE: u32 = 500;

/// Deletes expired events every so often until the process ends.
pub async fn run(client: kube::Client, ttl: Duration) {
    let period = (ttl / 4).clamp(Duration::from_secs(1), MAX_PERIOD);
    loop {
        tokio::time::sleep(period).await;
        match expire(&client, ttl).await {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, "deleted expired events"),
            Err(error) => tracing::warn!(%error, "deleting expired events failed; retrying"),
        }
    }
}

/// Deletes the events last seen more than `ttl` ago; returns how many.
async fn expire(client: &kube::Client, ttl: Duration) -> Result<usize, kube::Error> {
    let events: Api<Event> = Api::all(client.clone());
    let now = Timestamp::now();
    let mut deleted = 0;
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = events.list(&params).await?;
        for event in page.items.iter().filter(|e| expired(e, ttl, now)) {
            let (Some(name), Some(namespace)) = (&event.metadata.name, &event.metadata.namespace)
            else {
                continue;
            };
            // The uid guards against deleting a newer event of the same name.
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: event.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            let api: Api<Event> = Api::namespaced(client.clone(), namespace);
            match api.delete(name, &params).await {
                Ok(_) => deleted += 1,
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(deleted),
        }
    }
}

/// The last time anything recorded this event: the latest of its timestamps, its creation at
/// the least.
pub fn last_seen(event: &Event) -> Option<Timestamp> {
    [
        event.last_timestamp.as_ref().map(|t| t.0),
        event.first_timestamp.as_ref().map(|t| t.0),
        event.event_time.as_ref().map(|t| t.0),
        event
            .series
            .as_ref()
            .and_then(|s| s.last_observed_time.as_ref())
            .map(|t| t.0),
        event.metadata.creation_timestamp.as_ref().map(|t| t.0),
    ]
    .into_iter()
    .flatten()
    .max()
}

/// An event with no timestamp at all is kept: nothing says how old it is.
pub fn expired(event: &Event, ttl: Duration, now: Timestamp) -> bool {
    let Some(seen) = last_seen(event) else {
        return false;
    };
    let Ok(ttl) = k8s_openapi::jiff::SignedDuration::try_from(ttl) else {
        return false;
    };
    now.duration_since(seen) > ttl
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::EventSeries;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn an_event_expires_a_ttl_after_its_latest_sighting() {
        let hour = Duration::from_secs(3600);
        let mut event = Event::default();
        event.metadata.creation_timestamp = Some(Time(at(0)));
        event.last_timestamp = Some(Time(at(600)));
        assert_eq!(last_seen(&event), Some(at(600)));
        assert!(!expired(&event, hour, at(600 + 3600)));
        assert!(expired(&event, hour, at(600 + 3601)));
        // A series seen again later keeps the event.
        event.series = Some(EventSeries {
            count: Some(3),
            last_observed_time: Some(MicroTime(at(5000))),
        });
        assert!(!expired(&event, hour, at(600 + 3601)));
        assert!(expired(&event, hour, at(5000 + 3601)));
    }

    #[test]
    fn an_event_without_any_time_is_kept() {
        assert!(!expired(&Event::default(), Duration::from_secs(1), at(0)));
    }
}
