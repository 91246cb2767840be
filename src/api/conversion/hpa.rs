//! HorizontalPodAutoscaler between autoscaling/v2 (stored) and autoscaling/v1.
//!
//! v1 knows one metric, the average CPU utilisation: `spec.targetCPUUtilizationPercentage` is the
//! first `Resource` metric on `cpu` with a `Utilization` target, and
//! `status.currentCPUUtilizationPercentage` its current value. Upstream once round-tripped every
//! other metric and the conditions through `autoscaling.alpha.kubernetes.io/*` annotations; berth
//! writes no such annotations and instead keeps, on a write through v1, what v1 cannot express
//! (other metrics, `behavior`, conditions) from the stored object.

use serde_json::{json, Map, Value};

/// The target upstream's conversion fills in when a v1 object names no CPU target.
const DEFAULT_CPU_UTILIZATION: i64 = 80;

pub fn v2_to_v1(obj: Value) -> Value {
    let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = obj.get("status").cloned().unwrap_or_else(|| json!({}));
    let mut out = Map::new();
    out.insert("kind".into(), json!("HorizontalPodAutoscaler"));
    out.insert("apiVersion".into(), json!("autoscaling/v1"));
    if let Some(metadata) = obj.get("metadata") {
        out.insert("metadata".into(), metadata.clone());
    }

    let mut v1_spec = Map::new();
    copy(
        &spec,
        &mut v1_spec,
        &["scaleTargetRef", "minReplicas", "maxReplicas"],
    );
    // Upstream looks at the first CPU metric only, whatever its target type.
    let cpu = metrics(&spec, "metrics").find(|m| is_cpu(m));
    if let Some(target) = cpu.and_then(|m| m.pointer("/resource/target/averageUtilization")) {
        v1_spec.insert("targetCPUUtilizationPercentage".into(), target.clone());
    }
    out.insert("spec".into(), Value::Object(v1_spec));

    let mut v1_status = Map::new();
    copy(
        &status,
        &mut v1_status,
        &["observedGeneration", "lastScaleTime"],
    );
    // Plain int32 fields in v1: always present.
    for field in ["currentReplicas", "desiredReplicas"] {
        let value = status.get(field).cloned().unwrap_or_else(|| json!(0));
        v1_status.insert(field.into(), value);
    }
    let current = metrics(&status, "currentMetrics")
        .filter(|m| is_cpu(m))
        .filter_map(|m| m.pointer("/resource/current/averageUtilization"))
        .last();
    if let Some(current) = current {
        v1_status.insert("currentCPUUtilizationPercentage".into(), current.clone());
    }
    out.insert("status".into(), Value::Object(v1_status));
    Value::Object(out)
}

pub fn v1_to_v2(obj: Value, stored: Option<&Value>) -> Value {
    let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = obj.get("status").cloned().unwrap_or_else(|| json!({}));
    let stored_spec = stored.and_then(|s| s.get("spec"));
    let stored_status = stored.and_then(|s| s.get("status"));
    let mut out = Map::new();
    out.insert("kind".into(), json!("HorizontalPodAutoscaler"));
    out.insert("apiVersion".into(), json!("autoscaling/v2"));
    if let Some(metadata) = obj.get("metadata") {
        out.insert("metadata".into(), metadata.clone());
    }

    let mut v2_spec = Map::new();
    copy(
        &spec,
        &mut v2_spec,
        &["scaleTargetRef", "minReplicas", "maxReplicas"],
    );
    let target = spec
        .get("targetCPUUtilizationPercentage")
        .and_then(Value::as_i64);
    let mut spec_metrics = merge_cpu(
        stored_spec
            .map(|s| metrics(s, "metrics").cloned().collect())
            .unwrap_or_default(),
        target.map(cpu_target),
        has_cpu_utilization_target,
    );
    if spec_metrics.is_empty() {
        spec_metrics.push(cpu_target(DEFAULT_CPU_UTILIZATION));
    }
    v2_spec.insert("metrics".into(), Value::Array(spec_metrics));
    if let Some(behavior) = stored_spec.and_then(|s| s.get("behavior")) {
        v2_spec.insert("behavior".into(), behavior.clone());
    }
    out.insert("spec".into(), Value::Object(v2_spec));

    let mut v2_status = Map::new();
    copy(
        &status,
        &mut v2_status,
        &[
            "observedGeneration",
            "lastScaleTime",
            "currentReplicas",
            "desiredReplicas",
        ],
    );
    let stored_current: Vec<Value> = stored_status
        .map(|s| metrics(s, "currentMetrics").cloned().collect())
        .unwrap_or_default();
    let current = status
        .get("currentCPUUtilizationPercentage")
        .and_then(Value::as_i64)
        .map(|percent| {
            // Keep the stored raw value beside the percentage: v1 cannot carry it.
            let mut m = stored_current
                .iter()
                .find(|m| is_cpu(m))
                .cloned()
                .unwrap_or_else(
                    || json!({"type": "Resource", "resource": {"name": "cpu", "current": {}}}),
                );
            if let Some(current) = m
                .pointer_mut("/resource/current")
                .and_then(Value::as_object_mut)
            {
                current.insert("averageUtilization".into(), json!(percent));
            }
            m
        });
    let current_metrics = merge_cpu(stored_current, current, is_cpu);
    if !current_metrics.is_empty() {
        v2_status.insert("currentMetrics".into(), Value::Array(current_metrics));
    }
    if let Some(conditions) = stored_status.and_then(|s| s.get("conditions")) {
        v2_status.insert("conditions".into(), conditions.clone());
    }
    out.insert("status".into(), Value::Object(v2_status));
    Value::Object(out)
}

/// `kept` with the first entry `is_replaced` accepts swapped for `cpu` (dropped when None);
/// appended when no entry matches.
fn merge_cpu(
    mut kept: Vec<Value>,
    cpu: Option<Value>,
    is_replaced: fn(&Value) -> bool,
) -> Vec<Value> {
    match (kept.iter().position(is_replaced), cpu) {
        (Some(at), Some(cpu)) => kept[at] = cpu,
        (Some(at), None) => {
            kept.remove(at);
        }
        (None, Some(cpu)) => kept.push(cpu),
        (None, None) => {}
    }
    kept
}

fn cpu_target(percent: i64) -> Value {
    json!({"type": "Resource", "resource": {"name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": percent}}})
}

fn is_cpu(metric: &Value) -> bool {
    metric.get("type").and_then(Value::as_str) == Some("Resource")
        && metric.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
}

/// The metric v1's `targetCPUUtilizationPercentage` stands for.
fn has_cpu_utilization_target(metric: &Value) -> bool {
    is_cpu(metric)
        && metric
            .pointer("/resource/target/averageUtilization")
            .is_some()
}

fn metrics<'a>(part: &'a Value, field: &str) -> impl Iterator<Item = &'a Value> {
    part.get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn copy(from: &Value, to: &mut Map<String, Value>, fields: &[&str]) {
    for field in fields {
        if let Some(value) = from.get(*field) {
            to.insert((*field).into(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> Value {
        json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "7"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 5,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "memory",
                        "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
                    {"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 60}}}
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 30}}
            },
            "status": {
                "observedGeneration": 2, "currentReplicas": 2, "desiredReplicas": 3,
                "currentMetrics": [
                    {"type": "Resource", "resource": {"name": "memory",
                        "current": {"averageValue": "50Mi"}}},
                    {"type": "Resource", "resource": {"name": "cpu",
                        "current": {"averageUtilization": 90, "averageValue": "90m"}}}
                ],
                "conditions": [{"type": "AbleToScale", "status": "True"}]
            }
        })
    }

    #[test]
    fn the_v1_view_carries_the_cpu_target_and_current_utilisation_and_no_annotations() {
        let v1 = v2_to_v1(stored());
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["metadata"]["name"], "web");
        assert!(v1["metadata"].get("annotations").is_none());
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60);
        assert_eq!(v1["spec"]["maxReplicas"], 5);
        assert_eq!(v1["spec"]["scaleTargetRef"]["name"], "web");
        assert!(v1["spec"].get("metrics").is_none());
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 90);
        assert_eq!(v1["status"]["desiredReplicas"], 3);
        assert_eq!(v1["status"]["observedGeneration"], 2);
        assert!(v1["status"].get("conditions").is_none());
    }

    #[test]
    fn a_v1_object_without_status_reads_zero_replicas_as_upstream_prints_them() {
        let mut obj = stored();
        obj.as_object_mut().unwrap().remove("status");
        let v1 = v2_to_v1(obj);
        assert_eq!(
            v1["status"],
            json!({"currentReplicas": 0, "desiredReplicas": 0})
        );
    }

    #[test]
    fn a_new_v1_object_becomes_one_cpu_utilisation_metric() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
                     "maxReplicas": 4, "targetCPUUtilizationPercentage": 70}});
        let v2 = v1_to_v2(v1, None);
        assert_eq!(v2["apiVersion"], "autoscaling/v2");
        assert_eq!(v2["spec"]["metrics"], json!([cpu_target(70)]));
        assert_eq!(v2["spec"]["maxReplicas"], 4);
        assert!(v2["status"].get("currentMetrics").is_none());
    }

    #[test]
    fn a_v1_object_without_a_cpu_target_gets_upstreams_default_of_80_percent() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 4}});
        assert_eq!(
            v1_to_v2(v1, None)["spec"]["metrics"],
            json!([cpu_target(80)])
        );
    }

    #[test]
    fn a_v1_round_trip_changes_only_the_cpu_target_and_keeps_what_v1_cannot_say() {
        let mut v1 = v2_to_v1(stored());
        v1["spec"]["targetCPUUtilizationPercentage"] = json!(75);
        let v2 = v1_to_v2(v1, Some(&stored()));
        let mut expected = stored();
        expected["spec"]["metrics"][1] = cpu_target(75);
        assert_eq!(v2["spec"], expected["spec"]);
        assert_eq!(v2["status"], expected["status"]);
        assert_eq!(v2["metadata"], expected["metadata"]);
    }

    #[test]
    fn removing_the_cpu_target_through_v1_keeps_the_other_metrics() {
        let mut v1 = v2_to_v1(stored());
        v1["spec"]
            .as_object_mut()
            .unwrap()
            .remove("targetCPUUtilizationPercentage");
        let v2 = v1_to_v2(v1, Some(&stored()));
        assert_eq!(
            v2["spec"]["metrics"],
            json!([stored()["spec"]["metrics"][0]])
        );
    }

    #[test]
    fn a_status_write_through_v1_updates_the_cpu_reading_and_keeps_its_raw_value() {
        let mut v1 = v2_to_v1(stored());
        v1["status"]["currentCPUUtilizationPercentage"] = json!(40);
        let v2 = v1_to_v2(v1, Some(&stored()));
        assert_eq!(
            v2["status"]["currentMetrics"][1]["resource"]["current"],
            json!({"averageUtilization": 40, "averageValue": "90m"})
        );
        assert_eq!(
            v2["status"]["currentMetrics"][0],
            stored()["status"]["currentMetrics"][0]
        );
    }
}
