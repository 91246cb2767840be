//! Strategic merge patch: a JSON merge patch that knows, from the patch-metadata table, which
//! lists merge item by item (on a merge key) instead of being replaced, and that obeys the
//! directives kubectl writes into its patches:
//!
//! - `$patch: replace | delete | merge` in a map, or as a list item (`replace` replaces the list);
//! - `$setElementOrder/<list>`: the order of the merged list;
//! - `$deleteFromPrimitiveList/<list>`: values to remove from a merged list of scalars;
//! - `$retainKeys`: the only keys of the map to keep (union types such as volume sources).
//!
//! Types without metadata (custom resources) get a plain JSON merge patch, as upstream does.

use serde_json::{Map, Value};
use thiserror::Error;

use crate::api::patch_meta::{self, FieldPatchMeta};

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum StrategicError {
    #[error(
        "unknown patch directive {value} in {path}: $patch must be one of replace, delete, merge"
    )]
    BadPatchDirective { path: String, value: String },
    #[error("unknown directive {key} in {path}")]
    UnknownDirective { path: String, key: String },
    #[error("{path}: list item {item} does not contain declared merge key: {key}")]
    MissingMergeKey {
        path: String,
        key: String,
        item: String,
    },
    #[error("{path}: {directive} must be a list, got {got}")]
    DirectiveNotList {
        path: String,
        directive: String,
        got: String,
    },
    #[error("{path}: $retainKeys does not list the patched key {key}")]
    PatchNotInRetainKeys { path: String, key: String },
    #[error("{path}: $patch: delete is not allowed at the top level of a patch")]
    DeleteRoot { path: String },
}

/// Applies the strategic merge patch `patch` to `original`, an object of the type named
/// `type_name` (an upstream definition name; None for types without patch metadata).
pub fn merge(
    original: &Value,
    patch: &Value,
    type_name: Option<&str>,
) -> Result<Value, StrategicError> {
    let Some(type_name) = type_name else {
        let mut doc = original.clone();
        json_patch::merge(&mut doc, patch);
        return Ok(doc);
    };
    match merge_value(Some(original), patch, Some(type_name), None, "")? {
        Some(value) => Ok(value),
        None => Err(StrategicError::DeleteRoot {
            path: ".".to_string(),
        }),
    }
}

/// Merges `patch` into `original` (absent when the field is new). None means "delete the field".
fn merge_value(
    original: Option<&Value>,
    patch: &Value,
    type_name: Option<&str>,
    meta: Option<&FieldPatchMeta>,
    path: &str,
) -> Result<Option<Value>, StrategicError> {
    match patch {
        Value::Null => Ok(None),
        Value::Object(patch_map) => {
            let empty = Map::new();
            let original_map = match original {
                Some(Value::Object(map)) => map,
                _ => &empty,
            };
            merge_map(original_map, patch_map, type_name, path).map(|m| m.map(Value::Object))
        }
        Value::Array(patch_items) => {
            let original_items = match original {
                Some(Value::Array(items)) => items.as_slice(),
                _ => &[],
            };
            match meta.filter(|m| m.merges()) {
                Some(meta) => merge_list(original_items, patch_items, type_name, meta, path, None)
                    .map(|items| Some(Value::Array(items))),
                None => replace_list(patch_items, type_name, path).map(|v| Some(Value::Array(v))),
            }
        }
        scalar => Ok(Some(scalar.clone())),
    }
}

/// A replacing list still has its objects' directives removed, so none reach the store.
fn replace_list(
    items: &[Value],
    type_name: Option<&str>,
    path: &str,
) -> Result<Vec<Value>, StrategicError> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if let Some(value) = merge_value(None, item, type_name, None, path)? {
            out.push(value);
        }
    }
    Ok(out)
}

fn merge_map(
    original: &Map<String, Value>,
    patch: &Map<String, Value>,
    type_name: Option<&str>,
    path: &str,
) -> Result<Option<Map<String, Value>>, StrategicError> {
    match patch.get(PATCH) {
        None => {}
        Some(Value::String(s)) if s == "merge" => {}
        Some(Value::String(s)) if s == "delete" => return Ok(None),
        Some(Value::String(s)) if s == "replace" => {
            // The patch (less its directive) is the whole new map.
            let mut rest = patch.clone();
            rest.remove(PATCH);
            return merge_map(&Map::new(), &rest, type_name, path);
        }
        Some(other) => {
            return Err(StrategicError::BadPatchDirective {
                path: display_path(path),
                value: other.to_string(),
            })
        }
    }

    let mut result = original.clone();
    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let retain = string_list(retain, RETAIN_KEYS, path)?;
        for key in patch.keys().filter(|k| !k.starts_with('$')) {
            if !retain.iter().any(|r| r == key) {
                return Err(StrategicError::PatchNotInRetainKeys {
                    path: display_path(path),
                    key: key.clone(),
                });
            }
        }
        result.retain(|key, _| retain.iter().any(|r| r == key));
    }

    // Removals from primitive lists happen before the lists themselves are merged, so a value
    // both removed and re-added (a rename back) ends up present.
    for (key, values) in patch {
        if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            let Value::Array(values) = values else {
                return Err(not_list(path, key, values));
            };
            if let Some(Value::Array(items)) = result.get_mut(field) {
                items.retain(|item| !values.contains(item));
            }
        }
    }

    for (key, patch_value) in patch {
        if key.starts_with('$') {
            if key == PATCH
                || key == RETAIN_KEYS
                || key.starts_with(SET_ELEMENT_ORDER)
                || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            {
                continue;
            }
            return Err(StrategicError::UnknownDirective {
                path: display_path(path),
                key: key.clone(),
            });
        }
        let child_path = format!("{path}.{key}");
        let child_type = type_name.and_then(|t| patch_meta::field_type(t, key));
        let meta = type_name.and_then(|t| patch_meta::patch_meta(t, key));
        let order_key = format!("{SET_ELEMENT_ORDER}{key}");
        let order = match patch.get(&order_key) {
            Some(Value::Array(order)) => Some(order.as_slice()),
            Some(other) => return Err(not_list(path, &order_key, other)),
            None => None,
        };
        let merging = meta.filter(|m| m.merges());
        let merged = match (patch_value, merging) {
            (Value::Array(items), Some(meta)) => {
                let orig = result
                    .get(key)
                    .and_then(Value::as_array)
                    .map_or(&[][..], Vec::as_slice);
                Some(Value::Array(merge_list(
                    orig,
                    items,
                    child_type,
                    meta,
                    &child_path,
                    order,
                )?))
            }
            _ => merge_value(result.get(key), patch_value, child_type, meta, &child_path)?,
        };
        match merged {
            Some(value) => {
                result.insert(key.clone(), value);
            }
            None => {
                result.remove(key);
            }
        }
    }

    // A list only ordered (its items unchanged) still takes the new order.
    for (key, order) in patch {
        let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) else {
            continue;
        };
        if patch.contains_key(field) {
            continue;
        }
        let Value::Array(order) = order else {
            return Err(not_list(path, key, order));
        };
        let meta = type_name.and_then(|t| patch_meta::patch_meta(t, field));
        if let (Some(Value::Array(items)), Some(meta)) = (result.get_mut(field), meta) {
            let sorted = apply_order(std::mem::take(items), order, meta.merge_key);
            *items = sorted;
        }
    }
    Ok(Some(result))
}

/// Merges a `patchStrategy: merge` list: objects on their merge key, scalars as a set.
fn merge_list(
    original: &[Value],
    patch: &[Value],
    item_type: Option<&str>,
    meta: &FieldPatchMeta,
    path: &str,
    order: Option<&[Value]>,
) -> Result<Vec<Value>, StrategicError> {
    // `{"$patch": "replace"}` as an item replaces the whole list with the other items.
    let replace = patch
        .iter()
        .any(|item| item.get(PATCH).and_then(Value::as_str) == Some("replace"));
    if replace {
        let rest: Vec<Value> = patch
            .iter()
            .filter(|item| item.get(PATCH).and_then(Value::as_str) != Some("replace"))
            .cloned()
            .collect();
        return replace_list(&rest, item_type, path);
    }

    let mut result: Vec<Value> = original.to_vec();
    match meta.merge_key {
        Some(merge_key) => {
            for item in patch {
                let Value::Object(item_map) = item else {
                    // A scalar in a keyed list: keep it as a set member.
                    if !result.contains(item) {
                        result.push(item.clone());
                    }
                    continue;
                };
                let directive = item_map.get(PATCH);
                let Some(key_value) = item_map.get(merge_key) else {
                    if directive.is_some() && item_map.len() == 1 {
                        // `{"$patch": "merge"}` alone changes nothing.
                        if let Some(Value::String(s)) = directive {
                            if s == "merge" {
                                continue;
                            }
                        }
                    }
                    return Err(StrategicError::MissingMergeKey {
                        path: display_path(path),
                        key: merge_key.to_string(),
                        item: item.to_string(),
                    });
                };
                let position = result
                    .iter()
                    .position(|orig| orig.get(merge_key) == Some(key_value));
                match directive {
                    Some(Value::String(s)) if s == "delete" => {
                        result.retain(|orig| orig.get(merge_key) != Some(key_value));
                        continue;
                    }
                    Some(Value::String(s)) if s == "merge" || s == "replace" => {}
                    None => {}
                    Some(other) => {
                        return Err(StrategicError::BadPatchDirective {
                            path: display_path(path),
                            value: other.to_string(),
                        })
                    }
                }
                let original_item = position.map(|i| &result[i]);
                let merged = merge_value(original_item, item, item_type, None, path)?;
                match (position, merged) {
                    (Some(i), Some(value)) => result[i] = value,
                    (Some(i), None) => {
                        result.remove(i);
                    }
                    (None, Some(value)) => result.push(value),
                    (None, None) => {}
                }
            }
        }
        None => {
            for item in patch {
                if let Some(map) = item.as_object() {
                    if let Some(directive) = map.get(PATCH) {
                        return Err(StrategicError::BadPatchDirective {
                            path: display_path(path),
                            value: directive.to_string(),
                        });
                    }
                }
                if !result.contains(item) {
                    result.push(item.clone());
                }
            }
        }
    }
    Ok(match order {
        Some(order) => apply_order(result, order, meta.merge_key),
        None => result,
    })
}

/// Sorts `items` as `$setElementOrder` says: listed items first in the listed order, the
/// others (known only to the server) after them in their current order.
fn apply_order(items: Vec<Value>, order: &[Value], merge_key: Option<&str>) -> Vec<Value> {
    let identity = |item: &Value| -> Option<Value> {
        match merge_key {
            Some(key) => item.get(key).cloned(),
            None => Some(item.clone()),
        }
    };
    let wanted: Vec<Option<Value>> = order.iter().map(identity).collect();
    let rank = |item: &Value| {
        let id = identity(item);
        wanted
            .iter()
            .position(|w| id.is_some() && *w == id)
            .unwrap_or(usize::MAX)
    };
    let mut ranked: Vec<(usize, Value)> = items.into_iter().map(|i| (rank(&i), i)).collect();
    // A stable sort keeps server-only items in their relative order.
    ranked.sort_by_key(|(r, _)| *r);
    ranked.into_iter().map(|(_, item)| item).collect()
}

fn string_list(value: &Value, directive: &str, path: &str) -> Result<Vec<String>, StrategicError> {
    match value {
        Value::Array(items) => Ok(items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect()),
        other => Err(not_list(path, directive, other)),
    }
}

fn not_list(path: &str, directive: &str, got: &Value) -> StrategicError {
    StrategicError::DirectiveNotList {
        path: display_path(path),
        directive: directive.to_string(),
        got: got.to_string(),
    }
}

fn display_path(path: &str) -> String {
    if path.is_empty() {
        ".".to_string()
    } else {
        path.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DEPLOYMENT: Option<&str> = Some("io.k8s.api.apps.v1.Deployment");
    const POD_SPEC: Option<&str> = Some("io.k8s.api.core.v1.PodSpec");

    fn deployment(containers: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"replicas": 1, "template": {"spec": {"containers": containers}}}})
    }

    fn containers_of(doc: &Value) -> &Value {
        &doc["spec"]["template"]["spec"]["containers"]
    }

    #[test]
    fn containers_merge_on_name_keeping_unpatched_fields() {
        let doc = deployment(json!([
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}
        ]));
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "env": [{"name": "X", "value": "2"}, {"name": "Y", "value": "3"}]}
        ]}}}});
        let out = merge(&doc, &patch, DEPLOYMENT).unwrap();
        assert_eq!(
            containers_of(&out),
            &json!([
                {"name": "a", "image": "a:1",
                 "env": [{"name": "X", "value": "2"}, {"name": "Y", "value": "3"}]},
                {"name": "b", "image": "b:1"}
            ])
        );
    }

    #[test]
    fn a_new_list_item_is_appended_without_its_directives() {
        let doc = deployment(json!([{"name": "a", "image": "a:1"}]));
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "b", "image": "b:1", "ports": [{"containerPort": 80, "$patch": "merge"}]}
        ]}}}});
        let out = merge(&doc, &patch, DEPLOYMENT).unwrap();
        assert_eq!(
            containers_of(&out),
            &json!([{"name": "a", "image": "a:1"},
                    {"name": "b", "image": "b:1", "ports": [{"containerPort": 80}]}])
        );
    }

    #[test]
    fn patch_delete_in_a_list_item_removes_that_item() {
        let doc = deployment(json!([{"name": "a"}, {"name": "b"}]));
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "$patch": "delete"}
        ]}}}});
        let out = merge(&doc, &patch, DEPLOYMENT).unwrap();
        assert_eq!(containers_of(&out), &json!([{"name": "b"}]));
    }

    #[test]
    fn patch_replace_item_replaces_the_whole_list() {
        let doc = deployment(json!([{"name": "a", "image": "x"}, {"name": "b"}]));
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "c"}, {"$patch": "replace"}
        ]}}}});
        let out = merge(&doc, &patch, DEPLOYMENT).unwrap();
        assert_eq!(containers_of(&out), &json!([{"name": "c"}]));
    }

    #[test]
    fn patch_replace_in_a_map_replaces_the_map() {
        let doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let patch = json!({"metadata": {"labels": {"c": "3", "$patch": "replace"}}});
        let out = merge(&doc, &patch, DEPLOYMENT).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"c": "3"}));
    }

    #[test]
    fn patch_delete_in_a_map_removes_the_map() {
        let doc = json!({"spec": {"strategy": {"type": "Recreate"}, "replicas": 2}});
        let patch = json!({"spec": {"strategy": {"$patch": "delete"}}});
        let out = merge(&doc, &patch, DEPLOYMENT).unwrap();
        assert_eq!(out, json!({"spec": {"replicas": 2}}));
    }

    #[test]
    fn null_deletes_fields_at_any_depth() {
        let doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 2}});
        let patch = json!({"metadata": {"labels": {"a": null}}, "spec": {"replicas": null}});
        let out = merge(&doc, &patch, DEPLOYMENT).unwrap();
        assert_eq!(out, json!({"metadata": {"labels": {"b": "2"}}, "spec": {}}));
    }

    #[test]
    fn set_element_order_reorders_the_merged_list() {
        let doc = deployment(json!([{"name": "a"}, {"name": "b"}, {"name": "side"}]));
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "c"}, {"name": "a"}],
            "containers": [{"name": "c", "image": "c:1"}]
        }}}});
        let out = merge(&doc, &patch, DEPLOYMENT).unwrap();
        assert_eq!(
            containers_of(&out),
            &json!([{"name": "b"}, {"name": "c", "image": "c:1"}, {"name": "a"}, {"name": "side"}])
        );
    }

    #[test]
    fn set_element_order_alone_reorders_an_unchanged_list() {
        let doc = deployment(json!([{"name": "a"}, {"name": "b"}]));
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]
        }}}});
        let out = merge(&doc, &patch, DEPLOYMENT).unwrap();
        assert_eq!(containers_of(&out), &json!([{"name": "b"}, {"name": "a"}]));
    }

    #[test]
    fn primitive_merge_lists_are_unions_and_delete_from_primitive_list_removes() {
        let doc = json!({"metadata": {"finalizers": ["a", "b"]}});
        let patch = json!({"metadata": {
            "finalizers": ["c", "a"],
            "$deleteFromPrimitiveList/finalizers": ["b"]
        }});
        let out = merge(&doc, &patch, DEPLOYMENT).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "c"]));
    }

    #[test]
    fn lists_without_merge_strategy_are_replaced() {
        let doc = deployment(json!([{"name": "a", "args": ["x", "y"]}]));
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "args": ["z"]}
        ]}}}});
        let out = merge(&doc, &patch, DEPLOYMENT).unwrap();
        assert_eq!(containers_of(&out)[0]["args"], json!(["z"]));
    }

    #[test]
    fn container_ports_merge_on_container_port() {
        let doc = deployment(json!([{"name": "a", "ports": [
            {"containerPort": 80, "name": "http"}, {"containerPort": 443}
        ]}]));
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "a",
            "$setElementOrder/ports": [{"containerPort": 8080}, {"containerPort": 443}],
            "ports": [{"containerPort": 8080}, {"containerPort": 80, "$patch": "delete"}]
        }]}}}});
        let out = merge(&doc, &patch, DEPLOYMENT).unwrap();
        assert_eq!(
            containers_of(&out)[0]["ports"],
            json!([{"containerPort": 8080}, {"containerPort": 443}])
        );
    }

    #[test]
    fn retain_keys_drops_the_fields_not_listed() {
        let spec = json!({"volumes": [{"name": "v", "emptyDir": {}}]});
        let patch = json!({"volumes": [{"name": "v", "hostPath": {"path": "/x"},
            "$retainKeys": ["name", "hostPath"]}]});
        let out = merge(&spec, &patch, POD_SPEC).unwrap();
        assert_eq!(
            out["volumes"],
            json!([{"name": "v", "hostPath": {"path": "/x"}}])
        );
    }

    #[test]
    fn retain_keys_must_name_every_patched_key() {
        let spec = json!({"volumes": [{"name": "v", "emptyDir": {}}]});
        let patch = json!({"volumes": [{"name": "v", "hostPath": {"path": "/x"},
            "$retainKeys": ["name"]}]});
        let err = merge(&spec, &patch, POD_SPEC).unwrap_err();
        assert!(matches!(err, StrategicError::PatchNotInRetainKeys { .. }));
    }

    #[test]
    fn an_unknown_patch_directive_is_an_error_naming_it() {
        let doc = json!({"spec": {"replicas": 1}});
        let err = merge(&doc, &json!({"spec": {"$patch": "bogus"}}), DEPLOYMENT).unwrap_err();
        assert!(err.to_string().contains("\"bogus\""), "{err}");
        assert!(err.to_string().contains(".spec"), "{err}");
        let err = merge(&doc, &json!({"spec": {"$frobnicate": 1}}), DEPLOYMENT).unwrap_err();
        assert!(matches!(err, StrategicError::UnknownDirective { .. }));
    }

    #[test]
    fn a_list_item_without_its_merge_key_is_an_error() {
        let doc = deployment(json!([{"name": "a"}]));
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        let err = merge(&doc, &patch, DEPLOYMENT).unwrap_err();
        assert!(
            matches!(err, StrategicError::MissingMergeKey { .. }),
            "{err}"
        );
    }

    #[test]
    fn types_without_metadata_get_a_json_merge_patch() {
        let doc = json!({"spec": {"items": [{"name": "a"}], "keep": 1}});
        let patch = json!({"spec": {"items": [{"name": "b"}]}});
        let out = merge(&doc, &patch, None).unwrap();
        assert_eq!(out, json!({"spec": {"items": [{"name": "b"}], "keep": 1}}));
    }

    #[test]
    fn service_ports_merge_on_port() {
        let svc = json!({"apiVersion": "v1", "kind": "Service",
            "spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}});
        let patch = json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}});
        let out = merge(&svc, &patch, Some("io.k8s.api.core.v1.Service")).unwrap();
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "targetPort": 9090}, {"port": 443}])
        );
    }
}
