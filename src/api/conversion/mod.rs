//! Built-in resources served at more than one version: objects are stored in one version (the
//! storage version) and converted on the way in and out of every other served version. The
//! version may be in another group: events.k8s.io Events are core Events, stored once, as
//! upstream keeps both in one place.
//!
//! Reads convert the stored object to the requested version; writes convert the request body to
//! the storage version, so the registry, admission and the controllers only ever see one shape.

mod event;
mod hpa;

use serde_json::Value;

use super::resources::{self, Resource};

/// The resource whose stored objects `r` serves in another version, when `r` is such a view.
pub fn storage_of(r: &Resource) -> Option<&'static Resource> {
    if resources::is_custom(r) {
        return None;
    }
    match (r.group, r.version, r.plural) {
        ("autoscaling", "v1", "horizontalpodautoscalers") => {
            resources::find("autoscaling", "v2", "horizontalpodautoscalers")
        }
        ("events.k8s.io", "v1", "events") => resources::find("", "v1", "events"),
        _ => None,
    }
}

/// A stored object as `r` serves it; objects already in `r`'s version pass unchanged.
pub fn to_served(r: &Resource, obj: Value) -> Value {
    if storage_of(r).is_none() || api_version(&obj) == r.api_version() {
        return obj;
    }
    match r.kind {
        "HorizontalPodAutoscaler" => hpa::v2_to_v1(obj),
        "Event" => event::core_to_events(obj),
        _ => obj,
    }
}

/// A body written through `r` in the storage version. `stored` is the object as stored now (on
/// update): what `r`'s version cannot express is kept from it instead of being dropped.
pub fn to_stored(r: &Resource, obj: Value, stored: Option<&Value>) -> Value {
    if storage_of(r).is_none() || api_version(&obj) != r.api_version() {
        return obj;
    }
    match r.kind {
        "HorizontalPodAutoscaler" => hpa::v1_to_v2(obj, stored),
        // Nothing is lost on the way out, so nothing needs keeping from the stored object.
        "Event" => event::events_to_core(obj),
        _ => obj,
    }
}

fn api_version(obj: &Value) -> &str {
    obj.get("apiVersion").and_then(Value::as_str).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_v1_autoscaler_and_events_k8s_io_events_are_views_of_another_version() {
        let v1 = resources::find("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        let v2 = resources::find("autoscaling", "v2", "horizontalpodautoscalers").unwrap();
        assert!(std::ptr::eq(storage_of(v1).unwrap(), v2));
        assert!(storage_of(v2).is_none());
        let events = resources::find("events.k8s.io", "v1", "events").unwrap();
        let core = resources::find("", "v1", "events").unwrap();
        assert!(std::ptr::eq(storage_of(events).unwrap(), core));
        assert!(storage_of(core).is_none());
        assert!(storage_of(resources::find("apps", "v1", "deployments").unwrap()).is_none());
    }

    #[test]
    fn objects_already_in_the_wanted_version_pass_unchanged() {
        let v1 = resources::find("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        let obj = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "spec": {"maxReplicas": 3, "targetCPUUtilizationPercentage": 50}});
        assert_eq!(to_served(v1, obj.clone()), obj);
        let stored = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler"});
        assert_eq!(to_stored(v1, stored.clone(), None), stored);
    }

    #[test]
    fn an_event_crosses_groups_both_ways() {
        let events = resources::find("events.k8s.io", "v1", "events").unwrap();
        let stored = json!({"apiVersion": "v1", "kind": "Event", "message": "m"});
        let served = to_served(events, stored.clone());
        assert_eq!(
            served,
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "note": "m"})
        );
        assert_eq!(to_stored(events, served, Some(&stored)), stored);
    }
}
