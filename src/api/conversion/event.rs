//! Event between core v1 (stored) and events.k8s.io/v1.
//!
//! Upstream stores both as one internal Event: the two versions name the same fields apart
//! (`involvedObject` is `regarding`, `message` is `note`, the old counters carry a `deprecated`
//! prefix) and share the rest, so the conversion renames and loses nothing either way.

use serde_json::{json, Map, Value};

/// Core v1 name → events.k8s.io/v1 name of the fields the two versions name apart.
const RENAMED: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

/// Fields both versions name alike.
const SHARED: &[&str] = &[
    "metadata",
    "eventTime",
    "series",
    "related",
    "action",
    "reason",
    "type",
    "reportingInstance",
];

pub fn core_to_events(obj: Value) -> Value {
    convert(obj, "events.k8s.io/v1", |(core, events)| (core, events))
}

pub fn events_to_core(obj: Value) -> Value {
    convert(obj, "v1", |(core, events)| (events, core))
}

/// `obj` in `api_version`; `direction` turns a (core, events) name pair into (from, to).
/// Fields neither version has are left out, as a typed conversion drops them.
fn convert(
    obj: Value,
    api_version: &str,
    direction: fn((&'static str, &'static str)) -> (&'static str, &'static str),
) -> Value {
    let Value::Object(mut from) = obj else {
        return obj;
    };
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!("Event"));
    for field in SHARED {
        if let Some(value) = from.remove(*field) {
            out.insert((*field).into(), value);
        }
    }
    for pair in RENAMED {
        let (source, target) = direction(*pair);
        if let Some(value) = from.remove(source) {
            out.insert(target.into(), value);
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "default", "resourceVersion": "9"},
            "involvedObject": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                "namespace": "default", "uid": "u1", "fieldPath": "spec"},
            "reason": "ScalingReplicaSet",
            "message": "Scaled up replica set web-1 from 0 to 3",
            "source": {"component": "deployment-controller", "host": "node-a"},
            "firstTimestamp": "2026-01-01T00:00:00Z",
            "lastTimestamp": "2026-01-01T00:01:00Z",
            "count": 2,
            "type": "Normal",
            "eventTime": "2026-01-01T00:00:00.000001Z",
            "series": {"count": 4, "lastObservedTime": "2026-01-01T00:02:00.000001Z"},
            "action": "Scaling",
            "related": {"kind": "ReplicaSet", "name": "web-1"},
            "reportingComponent": "deployment-controller",
            "reportingInstance": "berth-1"
        })
    }

    #[test]
    fn a_core_event_reads_through_events_k8s_io_under_the_new_names() {
        let events = core_to_events(core());
        assert_eq!(
            events,
            json!({
                "apiVersion": "events.k8s.io/v1", "kind": "Event",
                "metadata": {"name": "web.1", "namespace": "default", "resourceVersion": "9"},
                "regarding": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                    "namespace": "default", "uid": "u1", "fieldPath": "spec"},
                "reason": "ScalingReplicaSet",
                "note": "Scaled up replica set web-1 from 0 to 3",
                "deprecatedSource": {"component": "deployment-controller", "host": "node-a"},
                "deprecatedFirstTimestamp": "2026-01-01T00:00:00Z",
                "deprecatedLastTimestamp": "2026-01-01T00:01:00Z",
                "deprecatedCount": 2,
                "type": "Normal",
                "eventTime": "2026-01-01T00:00:00.000001Z",
                "series": {"count": 4, "lastObservedTime": "2026-01-01T00:02:00.000001Z"},
                "action": "Scaling",
                "related": {"kind": "ReplicaSet", "name": "web-1"},
                "reportingController": "deployment-controller",
                "reportingInstance": "berth-1"
            })
        );
    }

    #[test]
    fn both_round_trips_give_back_the_event_they_started_from() {
        assert_eq!(events_to_core(core_to_events(core())), core());
        let events = core_to_events(core());
        assert_eq!(core_to_events(events_to_core(events.clone())), events);
    }

    #[test]
    fn a_field_neither_version_has_is_dropped_and_a_core_name_is_not_read_as_the_new_one() {
        let events = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "note": "n", "message": "core name", "bogus": 1});
        assert_eq!(
            events_to_core(events),
            json!({"apiVersion": "v1", "kind": "Event", "message": "n"})
        );
    }
}
