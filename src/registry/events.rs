//! Validation of Events, as upstream's `ValidateEventCreate`/`ValidateEventUpdate`: the rules
//! depend on the API version the request came in. Core v1 keeps its old, lax rules for old
//! clients; events.k8s.io/v1 (the API of `eventTime`, `reportingController` and `series`) adds
//! strict ones, and on update fixes everything but the series.
//!
//! The event is the stored core v1 object whichever version it was written in; field paths are
//! upstream's, which name the fields of its internal Event (`involvedObject`, `message`,
//! `reportingController`) whatever version the client used.

use serde_json::Value;

use crate::api::resources::Resource;
use crate::api::{go_syntax, meta, Cause};

const REPORTING_INSTANCE_LENGTH_LIMIT: usize = 128;
const ACTION_LENGTH_LIMIT: usize = 128;
const REASON_LENGTH_LIMIT: usize = 128;
const NOTE_LENGTH_LIMIT: usize = 1024;

/// Problems with a new `event` written through `requested`.
pub fn validate_create(requested: &Resource, event: &Value) -> Vec<Cause> {
    let mut causes = legacy(event);
    if !is_strict(requested) {
        return causes;
    }
    series(event, &mut causes);
    if is_unset(event.get("eventTime")) {
        causes.push(Cause::required("eventTime"));
    }
    let kind = text(event, "type");
    if kind != "Normal" && kind != "Warning" {
        causes.push(Cause::invalid(
            "type",
            "",
            &format!("has invalid value: {kind}"),
        ));
    }
    for (stored_as, path) in [
        ("firstTimestamp", "firstTimestamp"),
        ("lastTimestamp", "lastTimestamp"),
        ("count", "count"),
    ] {
        if !is_unset(event.get(stored_as)) {
            causes.push(Cause::invalid(path, "", "needs to be unset"));
        }
    }
    // Upstream looks at the component and the host only: a source with neither is unset.
    let source = event.get("source");
    let component = source.and_then(|s| s.get("component"));
    let host = source.and_then(|s| s.get("host"));
    if !is_unset(component) || !is_unset(host) {
        causes.push(Cause::invalid("source", "", "needs to be unset"));
    }
    causes
}

/// Problems with changing the stored `old` event into `new` through `requested`.
pub fn validate_update(requested: &Resource, old: &Value, new: &Value) -> Vec<Cause> {
    let mut causes = legacy(new);
    if !is_strict(requested) {
        return causes;
    }
    if without_zeros(new.get("series")) != without_zeros(old.get("series")) {
        series(new, &mut causes);
    }
    // (stored field, upstream's path); `reason` twice, as upstream checks it twice.
    const IMMUTABLE: &[(&str, &str)] = &[
        ("involvedObject", "involvedObject"),
        ("reason", "reason"),
        ("message", "message"),
        ("source", "source"),
        ("firstTimestamp", "firstTimestamp"),
        ("lastTimestamp", "lastTimestamp"),
        ("count", "count"),
        ("reason", "reason"),
        ("type", "type"),
        ("eventTime", "eventTime"),
        ("action", "action"),
        ("related", "related"),
        ("reportingComponent", "reportingController"),
        ("reportingInstance", "reportingInstance"),
    ];
    for (stored_as, path) in IMMUTABLE {
        let after = new.get(*stored_as);
        if without_zeros(after) != without_zeros(old.get(*stored_as)) {
            let shown = shown_as_upstream(stored_as, after);
            causes.push(Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: {shown}: field is immutable"),
                field: (*path).into(),
            });
        }
    }
    causes
}

/// Whether `requested` is an Event API with the strict rules: every version but core v1 (and
/// events.k8s.io/v1beta1, which berth does not serve).
fn is_strict(requested: &Resource) -> bool {
    !requested.group.is_empty()
}

/// The rules every Event passes, in any version. An event without `eventTime` is an old-style
/// one: its namespace must agree with its object's; one with it is new-style and must say who
/// reported it and what was done.
fn legacy(event: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let namespace = meta::namespace(event);
    let object_namespace = event
        .pointer("/involvedObject/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let namespace_mismatch = Cause::invalid(
        "involvedObject.namespace",
        object_namespace,
        "does not match event.namespace",
    );
    if is_unset(event.get("eventTime")) {
        let agrees = match object_namespace {
            // A cluster-scoped object: old clients record its events in "default".
            "" => namespace.is_empty() || namespace == "default",
            object => namespace == object,
        };
        if !agrees {
            causes.push(namespace_mismatch);
        }
    } else {
        if object_namespace.is_empty() && namespace != "default" && namespace != "kube-system" {
            causes.push(namespace_mismatch);
        }
        let controller = text(event, "reportingComponent");
        if controller.is_empty() {
            causes.push(Cause::required("reportingController"));
        }
        for problem in meta::qualified_name_problems(controller) {
            causes.push(Cause::invalid("reportingController", controller, &problem));
        }
        let instance = text(event, "reportingInstance");
        if instance.is_empty() {
            causes.push(Cause::required("reportingInstance"));
        }
        at_most(
            "reportingInstance",
            instance,
            REPORTING_INSTANCE_LENGTH_LIMIT,
            &mut causes,
        );
        let action = text(event, "action");
        if action.is_empty() {
            causes.push(Cause::required("action"));
        }
        at_most("action", action, ACTION_LENGTH_LIMIT, &mut causes);
        let reason = text(event, "reason");
        if reason.is_empty() {
            causes.push(Cause::required("reason"));
        }
        at_most("reason", reason, REASON_LENGTH_LIMIT, &mut causes);
        at_most(
            "message",
            text(event, "message"),
            NOTE_LENGTH_LIMIT,
            &mut causes,
        );
    }
    if let Some(problem) = meta::check_dns1123_subdomain(namespace) {
        causes.push(Cause::invalid("namespace", namespace, &problem));
    }
    causes
}

/// A series counts at least the second occurrence and says when it was last seen.
fn series(event: &Value, causes: &mut Vec<Cause>) {
    let Some(series) = event.get("series").filter(|s| !s.is_null()) else {
        return;
    };
    let count = series.get("count").and_then(Value::as_i64).unwrap_or(0);
    if count < 2 {
        causes.push(Cause::invalid("series.count", "", "should be at least 2"));
    }
    if is_unset(series.get("lastObservedTime")) {
        causes.push(Cause::required("series.lastObservedTime"));
    }
}

/// Upstream counts bytes, as Go's `len` of a string does.
fn at_most(path: &str, value: &str, limit: usize, causes: &mut Vec<Cause>) {
    if value.len() > limit {
        causes.push(Cause::invalid(
            path,
            "",
            &format!("can have at most {limit} characters"),
        ));
    }
}

fn text<'a>(event: &'a Value, field: &str) -> &'a str {
    event.get(field).and_then(Value::as_str).unwrap_or("")
}

/// Absent, or Go's zero value of the field's type: upstream compares typed fields, where an
/// omitted field and an empty one are the same.
fn is_unset(v: Option<&Value>) -> bool {
    without_zeros(v).is_none()
}

/// `v` without its zero-valued parts; None when nothing is left.
/// A changed field's new value as upstream's message prints its internal Event's field.
fn shown_as_upstream(stored_as: &str, value: Option<&Value>) -> String {
    match stored_as {
        "involvedObject" => go_syntax::object_reference(value),
        "related" => match value.filter(|v| !v.is_null()) {
            Some(reference) => go_syntax::object_reference(Some(reference)),
            None => "null".into(),
        },
        "source" => go_syntax::event_source(value),
        "firstTimestamp" | "lastTimestamp" | "eventTime" => go_syntax::time(value),
        "count" => value.and_then(Value::as_i64).unwrap_or(0).to_string(),
        _ => go_syntax::quoted(value.and_then(Value::as_str).unwrap_or("")),
    }
}

fn without_zeros(v: Option<&Value>) -> Option<Value> {
    match v? {
        Value::Null => None,
        Value::Bool(false) => None,
        Value::String(s) if s.is_empty() => None,
        Value::Number(n) if n.as_f64() == Some(0.0) => None,
        Value::Array(items) if items.is_empty() => None,
        Value::Object(fields) => {
            let kept: serde_json::Map<String, Value> = fields
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), without_zeros(Some(v))?)))
                .collect();
            (!kept.is_empty()).then_some(Value::Object(kept))
        }
        other => Some(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::resources::find;

    fn core() -> &'static Resource {
        find("", "v1", "events").unwrap()
    }

    fn events_api() -> &'static Resource {
        find("events.k8s.io", "v1", "events").unwrap()
    }

    /// A new-style event as kube-rs's recorder writes it, in its stored (core v1) shape.
    fn recorded() -> Value {
        json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "default"},
            "involvedObject": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                "namespace": "default"},
            "reason": "ScalingReplicaSet", "message": "Scaled up", "type": "Normal",
            "eventTime": "2026-01-01T00:00:00.000001Z", "action": "Scale",
            "reportingComponent": "deployment-controller", "reportingInstance": "berth"})
    }

    fn fields(causes: &[Cause]) -> Vec<&str> {
        causes.iter().map(|c| c.field.as_str()).collect()
    }

    #[test]
    fn a_recorded_event_is_valid_through_either_api() {
        assert_eq!(validate_create(events_api(), &recorded()), []);
        assert_eq!(validate_create(core(), &recorded()), []);
        let mut series = recorded();
        series["series"] = json!({"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000001Z"});
        assert_eq!(validate_update(events_api(), &recorded(), &series), []);
    }

    #[test]
    fn the_events_api_needs_a_reporter_an_action_a_time_and_a_known_type() {
        let event = json!({"metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
            "type": "Odd"});
        let causes = validate_create(events_api(), &event);
        assert_eq!(
            fields(&causes),
            ["eventTime", "type"],
            "an event without eventTime is an old-style one to the legacy rules"
        );
        assert_eq!(
            causes[1].message,
            "Invalid value: \"\": has invalid value: Odd"
        );

        let mut event = recorded();
        for field in [
            "reportingComponent",
            "reportingInstance",
            "action",
            "reason",
        ] {
            event.as_object_mut().unwrap().remove(field);
        }
        let causes = validate_create(events_api(), &event);
        assert_eq!(
            fields(&causes),
            [
                "reportingController",
                "reportingController",
                "reportingController",
                "reportingInstance",
                "action",
                "reason"
            ]
        );
        assert_eq!(causes[0].message, "Required value");
        assert_eq!(
            causes[1].message,
            "Invalid value: \"\": name part must be non-empty"
        );
        assert!(causes[2]
            .message
            .starts_with("Invalid value: \"\": name part must consist of alphanumeric"));
    }

    #[test]
    fn the_events_api_refuses_the_deprecated_fields_and_long_texts() {
        let mut event = recorded();
        event["count"] = json!(3);
        event["firstTimestamp"] = json!("2026-01-01T00:00:00Z");
        event["source"] = json!({"component": "old"});
        event["message"] = json!("n".repeat(NOTE_LENGTH_LIMIT + 1));
        event["action"] = json!("a".repeat(ACTION_LENGTH_LIMIT + 1));
        let causes = validate_create(events_api(), &event);
        assert_eq!(
            fields(&causes),
            ["action", "message", "firstTimestamp", "count", "source"]
        );
        assert_eq!(
            causes[1].message,
            "Invalid value: \"\": can have at most 1024 characters"
        );
        assert_eq!(causes[4].message, "Invalid value: \"\": needs to be unset");
        // Zero values are unset, as in upstream's typed objects.
        let mut zeros = recorded();
        zeros["count"] = json!(0);
        zeros["source"] = json!({});
        assert_eq!(validate_create(events_api(), &zeros), []);
    }

    #[test]
    fn core_v1_keeps_the_old_rules_only() {
        let mut old_style = json!({"metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Node", "name": "n"},
            "reason": "Rebooted", "count": 3, "source": {"component": "kubelet"}});
        assert_eq!(validate_create(core(), &old_style), []);
        old_style["metadata"]["namespace"] = json!("apps");
        let causes = validate_create(core(), &old_style);
        assert_eq!(fields(&causes), ["involvedObject.namespace"]);
        assert_eq!(
            causes[0].message,
            "Invalid value: \"\": does not match event.namespace"
        );
        old_style["involvedObject"]["namespace"] = json!("other");
        assert_eq!(
            validate_create(core(), &old_style)[0].message,
            "Invalid value: \"other\": does not match event.namespace"
        );
        // New-style through core v1: the reporter is still required.
        let mut event = recorded();
        event["reportingComponent"] = json!("bad name!");
        let causes = validate_create(core(), &event);
        assert_eq!(fields(&causes), ["reportingController"]);
        assert!(causes[0]
            .message
            .starts_with("Invalid value: \"bad name!\": name part"));
        // A new-style event about a cluster-scoped object lives in default or kube-system.
        let mut node_event = recorded();
        node_event["involvedObject"] = json!({"kind": "Node", "name": "n"});
        node_event["metadata"]["namespace"] = json!("kube-system");
        assert_eq!(validate_create(core(), &node_event), []);
        node_event["metadata"]["namespace"] = json!("apps");
        assert_eq!(
            fields(&validate_create(core(), &node_event)),
            ["involvedObject.namespace"]
        );
    }

    #[test]
    fn a_series_counts_from_two_and_has_a_time() {
        let mut event = recorded();
        event["series"] = json!({"count": 1});
        let causes = validate_create(events_api(), &event);
        assert_eq!(fields(&causes), ["series.count", "series.lastObservedTime"]);
        assert_eq!(
            causes[0].message,
            "Invalid value: \"\": should be at least 2"
        );
        assert_eq!(validate_create(core(), &event), [], "core v1 does not look");
    }

    #[test]
    fn through_the_events_api_only_the_series_may_change() {
        let old = recorded();
        let mut new = old.clone();
        new["message"] = json!("changed");
        new["reason"] = json!("Other");
        new["reportingComponent"] = json!("other-controller");
        new["involvedObject"]["name"] = json!("db");
        let causes = validate_update(events_api(), &old, &new);
        assert_eq!(
            fields(&causes),
            [
                "involvedObject",
                "reason",
                "message",
                "reason",
                "reportingController"
            ]
        );
        assert_eq!(
            causes[0].message,
            concat!(
                r#"Invalid value: core.ObjectReference{Kind:"Deployment", Namespace:"default", "#,
                r#"Name:"db", UID:"", APIVersion:"apps/v1", ResourceVersion:"", FieldPath:""}: "#,
                "field is immutable"
            )
        );
        assert_eq!(
            causes[1].message,
            "Invalid value: \"Other\": field is immutable"
        );
        assert_eq!(validate_update(core(), &old, &new), []);
        let mut later = old.clone();
        later["eventTime"] = json!("2026-01-01T00:00:02.250000Z");
        assert_eq!(
            validate_update(events_api(), &old, &later)[0].message,
            "Invalid value: 2026-01-01 00:00:02.25 +0000 UTC: field is immutable"
        );
        // A series written badly is refused on update too.
        let mut bad_series = old.clone();
        bad_series["series"] = json!({"count": 0, "lastObservedTime": "2026-01-01T00:01:00Z"});
        assert_eq!(
            fields(&validate_update(events_api(), &old, &bad_series)),
            ["series.count"]
        );
    }
}
