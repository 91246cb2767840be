//! The calls the generic registry and the REST layer make for CRDs and custom objects. Each is a
//! no-op for built-in kinds, so the shared code calls them unconditionally.

use bytes::Bytes;
use serde_json::{json, Value};

use super::definition::{definition_of, Scale, Version};
use super::{schema, validation};
use crate::api::meta;
use crate::api::resources::Resource;
use crate::api::{ApiError, ApiResult, Cause};
use crate::registry::{Part, Registry};

const CRD_GROUP: &str = "apiextensions.k8s.io";

fn is_crd(r: &Resource) -> bool {
    r.group == CRD_GROUP && r.kind == "CustomResourceDefinition"
}

/// The served version `r` names, with its schema and subresources.
fn version_of(r: &Resource) -> Option<Version> {
    definition_of(r)?.version(r.version).cloned()
}

/// Prunes a custom object to its schema (metadata to ObjectMeta) and applies schema defaults.
pub fn normalize(r: &Resource, mut body: Value) -> ApiResult<Value> {
    let Some(version) = version_of(r) else {
        return Ok(body);
    };
    schema::prune(&mut body, &version.schema, true);
    if let Some(metadata) = body.get_mut("metadata") {
        let typed: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta =
            serde_json::from_value(metadata.take()).map_err(|e| {
                ApiError::bad_request(format!("error decoding {} metadata: {e}", r.kind))
            })?;
        *metadata = serde_json::to_value(typed)
            .map_err(|e| ApiError::internal(format!("encoding metadata: {e}")))?;
    }
    schema::apply_defaults(&mut body, &version.schema);
    Ok(body)
}

/// Kind-level changes on every write of a CRD.
pub fn prepare_write(r: &Resource, obj: &mut Value) {
    if is_crd(r) {
        validation::apply_defaults(obj);
    }
}

/// Validation beyond names and labels: CRDs against the CRD rules, custom objects against their
/// schema and its CEL rules (`old` is the stored object on update, for transition rules).
pub fn validate(r: &Resource, obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    if is_crd(r) {
        causes.extend(validation::validate(obj));
        return;
    }
    if let Some(version) = version_of(r) {
        let before = causes.len();
        schema::validate(obj, &version.schema, "", causes);
        // Rules assume the schema holds (upstream skips them on schema errors too).
        if causes.len() == before {
            super::rules::validate(obj, old, &version.schema, causes);
        }
    }
}

/// CRDs and custom objects bump `metadata.generation` on changes outside metadata and status.
pub fn tracks_generation(r: &Resource) -> bool {
    is_crd(r) || definition_of(r).is_some()
}

/// Custom objects take JSON and merge patches only, as upstream: they have no patch strategy.
pub fn refuses_strategic_merge(r: &Resource) -> bool {
    definition_of(r).is_some()
}

/// Custom objects are stored in the version they were written in; a request through another
/// served version sees them with its own `apiVersion` (conversion strategy `None`).
pub fn convert(r: &Resource, obj: &mut Value) {
    if crate::api::conversion::storage_of(r).is_some() {
        *obj = crate::api::conversion::to_served(r, obj.take());
        return;
    }
    if definition_of(r).is_none() {
        return;
    }
    let wanted = r.api_version();
    if obj.get("apiVersion").and_then(Value::as_str) != Some(wanted.as_str()) {
        if let Some(o) = obj.as_object_mut() {
            o.insert("apiVersion".into(), json!(wanted));
        }
    }
}

/// [`convert`] on raw stored bytes, re-encoding only when the version differs.
pub fn convert_raw(r: &Resource, raw: Bytes) -> Bytes {
    if definition_of(r).is_none() && crate::api::conversion::storage_of(r).is_none() {
        return raw;
    }
    let Ok(mut obj) = serde_json::from_slice::<Value>(&raw) else {
        return raw;
    };
    if obj.get("apiVersion").and_then(Value::as_str) == Some(r.api_version().as_str()) {
        return raw;
    }
    convert(r, &mut obj);
    Bytes::from(obj.to_string())
}

/// The scale subresource of `r`, when its CRD declares one.
pub fn scale_of(r: &Resource) -> Option<Scale> {
    version_of(r)?.scale
}

/// `.spec.replicas` → `/spec/replicas` (the simple JSONPath scale paths use).
fn pointer(path: &str) -> String {
    path.trim_start_matches('.')
        .split('.')
        .fold(String::new(), |mut p, s| {
            p.push('/');
            p.push_str(s);
            p
        })
}

/// The `autoscaling/v1` Scale of a custom object.
fn scale_view(obj: &Value, scale: &Scale) -> Value {
    let metadata = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let pick = |key: &str| metadata.get(key).cloned().unwrap_or(Value::Null);
    let mut meta = json!({"name": pick("name"), "uid": pick("uid"),
        "resourceVersion": pick("resourceVersion"), "creationTimestamp": pick("creationTimestamp")});
    if let Some(ns) = metadata.get("namespace") {
        meta["namespace"] = ns.clone();
    }
    let spec_replicas = obj
        .pointer(&pointer(&scale.spec_replicas_path))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let status_replicas = obj
        .pointer(&pointer(&scale.status_replicas_path))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let mut status = json!({"replicas": status_replicas});
    if let Some(path) = &scale.label_selector_path {
        if let Some(selector) = obj.pointer(&pointer(path)).and_then(Value::as_str) {
            status["selector"] = json!(selector);
        }
    }
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": meta,
        "spec": {"replicas": spec_replicas}, "status": status})
}

/// How a write to `/scale` arrives.
pub enum ScaleWrite {
    Put(Value),
    MergePatch(Bytes),
    JsonPatch(Bytes),
}

/// GET (write = None), PUT or PATCH of a custom object's `/scale`.
pub async fn scale(
    registry: &Registry,
    r: &'static Resource,
    namespace: &str,
    name: &str,
    write: Option<ScaleWrite>,
    dry_run: bool,
) -> ApiResult<Value> {
    let scale = scale_of(r)
        .ok_or_else(|| ApiError::no_route(&format!("{} subresource scale", r.plural)))?;
    let Some(write) = write else {
        let mut obj = registry.get_value(r, namespace, name)?;
        convert(r, &mut obj);
        return Ok(scale_view(&obj, &scale));
    };
    let spec_pointer = pointer(&scale.spec_replicas_path);
    let updated = registry
        .update_with(r, namespace, name, Part::Main, dry_run, |old| {
            let current = scale_view(old, &scale);
            let wanted = match &write {
                ScaleWrite::Put(body) => body.clone(),
                ScaleWrite::MergePatch(patch) => {
                    let patch: Value = serde_json::from_slice(patch)
                        .map_err(|e| ApiError::bad_request(format!("invalid merge patch: {e}")))?;
                    let mut doc = current.clone();
                    json_patch::merge(&mut doc, &patch);
                    doc
                }
                ScaleWrite::JsonPatch(patch) => {
                    let ops: json_patch::Patch = serde_json::from_slice(patch)
                        .map_err(|e| ApiError::bad_request(format!("invalid JSON Patch: {e}")))?;
                    let mut doc = current.clone();
                    json_patch::patch(&mut doc, &ops).map_err(|e| {
                        ApiError::new(
                            422,
                            "Invalid",
                            format!("the JSON patch could not be applied: {e}"),
                        )
                    })?;
                    doc
                }
            };
            let replicas = wanted
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if replicas < 0 {
                let cause = Cause::invalid(
                    "spec.replicas",
                    &replicas.to_string(),
                    "must be greater than or equal to 0",
                );
                return Err(ApiError::invalid("autoscaling", "Scale", name, vec![cause]));
            }
            let mut new = old.clone();
            set_pointer(&mut new, &spec_pointer, json!(replicas));
            let pinned = meta::resource_version(&wanted);
            if !pinned.is_empty() {
                meta::metadata_mut(&mut new).insert("resourceVersion".into(), json!(pinned));
            }
            Ok(new)
        })
        .await?;
    let mut updated = updated;
    convert(r, &mut updated);
    Ok(scale_view(&updated, &scale))
}

/// Sets the value at a JSON pointer, creating objects on the way.
fn set_pointer(doc: &mut Value, pointer: &str, value: Value) {
    let mut at = doc;
    let segments: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        if !at.is_object() {
            *at = json!({});
        }
        let Some(map) = at.as_object_mut() else {
            return;
        };
        if i + 1 == segments.len() {
            map.insert(segment.to_string(), value);
            return;
        }
        at = map.entry(segment.to_string()).or_insert_with(|| json!({}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_reads_replicas_and_selector_from_the_declared_paths() {
        let scale = Scale {
            spec_replicas_path: ".spec.replicas".into(),
            status_replicas_path: ".status.replicas".into(),
            label_selector_path: Some(".status.selector".into()),
        };
        let obj = json!({"metadata": {"name": "w", "namespace": "ns", "resourceVersion": "7"},
            "spec": {"replicas": 3}, "status": {"replicas": 2, "selector": "app=w"}});
        let view = scale_view(&obj, &scale);
        assert_eq!(view["spec"]["replicas"], 3);
        assert_eq!(view["status"], json!({"replicas": 2, "selector": "app=w"}));
        assert_eq!(view["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn objects_read_through_another_served_version_carry_that_api_version() {
        let group = format!("convert{}.example.com", std::process::id());
        let crd = json!({"spec": {"group": group, "scope": "Cluster",
            "names": {"plural": "dials", "kind": "Dial"},
            "versions": [
                {"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object"}}},
                {"name": "v1beta1", "served": true, "storage": false, "schema": {"openAPIV3Schema": {"type": "object"}}}]}});
        crate::crd::serve(crate::crd::Definition::from_crd(&crd).unwrap());
        let beta = crate::api::resources::find(&group, "v1beta1", "dials").unwrap();
        let stored =
            Bytes::from(json!({"apiVersion": format!("{group}/v1"), "kind": "Dial"}).to_string());
        let seen: Value = serde_json::from_slice(&convert_raw(beta, stored.clone())).unwrap();
        assert_eq!(seen["apiVersion"], format!("{group}/v1beta1"));
        let v1 = crate::api::resources::find(&group, "v1", "dials").unwrap();
        assert_eq!(
            convert_raw(v1, stored.clone()),
            stored,
            "same version: bytes untouched"
        );
        let pods = crate::api::resources::find("", "v1", "pods").unwrap();
        assert_eq!(
            convert_raw(pods, stored.clone()),
            stored,
            "built-ins are never converted"
        );
        assert!(
            tracks_generation(v1) && refuses_strategic_merge(v1) && !refuses_strategic_merge(pods)
        );
        crate::crd::stop_serving(&format!("dials.{group}"));
    }

    #[test]
    fn set_pointer_creates_missing_objects() {
        let mut doc = json!({"metadata": {}});
        set_pointer(&mut doc, "/spec/replicas", json!(4));
        assert_eq!(doc["spec"]["replicas"], 4);
    }
}
