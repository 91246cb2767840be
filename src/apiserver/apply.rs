//! Server-side apply (`application/apply-patch+yaml`): merges a manager's configuration into
//! the live object by the schema, removes what the manager applied before and no longer does,
//! and refuses to change fields other managers own unless forced.

use serde_json::{json, Map, Value};

use super::fieldset::{self, item_key, FieldSet};
use super::managed::{self, Entry, ManagedFields, Manager, Operation};
use crate::api::patch_meta::{self, ListType};
use crate::api::resources::Resource;
use crate::api::{meta, ApiError, ApiResult, Cause};
use crate::registry::Part;

/// Decodes an apply body (YAML or JSON) and checks it names the object of the URL.
pub fn decode_config(r: &Resource, name: &str, body: &[u8]) -> ApiResult<Value> {
    let config: Value = serde_yaml_ng::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !config.is_object() {
        return Err(ApiError::bad_request(
            "the apply configuration must be an object",
        ));
    }
    let expected = r.api_version();
    match config.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v == expected => {}
        other => {
            return Err(ApiError::bad_request(format!(
                "Incorrect version specified in apply patch. Specified patch version: {}, expected: {expected}",
                other.unwrap_or("")
            )))
        }
    }
    match config.get("kind").and_then(Value::as_str) {
        Some(k) if k == r.kind => {}
        other => {
            return Err(ApiError::bad_request(format!(
                "the kind in the apply patch ({}) does not match the expected kind ({})",
                other.unwrap_or(""),
                r.kind
            )))
        }
    }
    let config_name = meta::name(&config);
    if config_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({config_name}) does not match the name on the URL ({name})"
        )));
    }
    if config
        .pointer("/metadata/managedFields")
        .is_some_and(|m| !m.is_null())
    {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    Ok(without_nulls(config))
}

/// A null in a configuration means "not set".
fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

/// Applies `config` as `manager` to `live` (None: the object does not exist yet) and returns
/// the object to store, managedFields included. Conflicts are a 409 unless `force`.
pub fn apply(
    r: &Resource,
    part: Part,
    live: Option<&Value>,
    config: &Value,
    manager: &Manager,
    force: bool,
) -> ApiResult<Value> {
    let type_name = managed::type_of(r);
    let empty = json!({});
    let live = live.unwrap_or(&empty);
    let mut managed = ManagedFields::of(live);
    let config = managed::view(r, part, config);
    let merged = managed::normalized(r, merge(live, &config, type_name, None))?;
    // Fields the kind does not have were dropped from the merged object: no one owns them.
    let applied = managed::ownable(
        &FieldSet::from_object(&config, type_name)
            .intersection(&FieldSet::from_object(&merged, type_name)),
    );
    let api_version = r.api_version();
    let last = managed.take(manager, Operation::Apply, &api_version);
    let mut result = merged;
    if let Some(last) = &last {
        let owned = managed.owned().union(&applied);
        prune(&mut result, &last.fields, Some(&owned), type_name, None);
    }
    let comparison = managed::owned_changes(fieldset::compare(
        &managed::view(r, part, live),
        &managed::view(r, part, &result),
        type_name,
    ));
    let changed = comparison.changed();
    let mut conflicts: Vec<(String, FieldSet)> = managed
        .entries
        .iter()
        .map(|e| (e.describe(), e.fields.intersection(&changed)))
        .filter(|(_, fields)| !fields.is_empty())
        .collect();
    // kubectl moving an object from client-side to server-side apply may take the fields its
    // last-applied annotation still describes (upstream's lastAppliedManager).
    if !conflicts.is_empty() && manager.name == KUBECTL {
        if let Some(allowed) = allowed_by_last_applied(live, type_name) {
            for (_, fields) in &mut conflicts {
                *fields = fields.difference(&allowed);
            }
            conflicts.retain(|(_, fields)| !fields.is_empty());
        }
    }
    if !conflicts.is_empty() && !force {
        let conflicts = conflicts
            .into_iter()
            .map(|(who, fields)| (who, fields.paths()))
            .collect();
        return Err(conflict_error(conflicts));
    }
    managed.forget(&comparison);
    let time = match &last {
        Some(last) if comparison.is_same() => last.time.clone(),
        _ => Some(meta::now_rfc3339()),
    };
    managed.entries.push(Entry {
        manager: manager.name.clone(),
        operation: Operation::Apply,
        api_version,
        time,
        subresource: manager.subresource.clone(),
        fields: applied,
    });
    managed.encode_into(&mut result);
    if manager.name == KUBECTL {
        sync_last_applied(&mut result, &config);
    }
    Ok(result)
}

/// The manager name kubectl applies with by default: its applies keep the client-side apply
/// annotation in step, so a later client-side apply still sees what was applied.
const KUBECTL: &str = "kubectl";

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The fields of the last-applied annotation whose values the live object still has.
fn allowed_by_last_applied(live: &Value, type_name: Option<&str>) -> Option<FieldSet> {
    let text = live
        .pointer("/metadata/annotations")?
        .get(LAST_APPLIED)?
        .as_str()?;
    let last: Value = serde_json::from_str(text).ok()?;
    let differs = fieldset::compare(&last, live, type_name);
    Some(
        FieldSet::from_object(&last, type_name)
            .difference(&differs.modified)
            .difference(&differs.added)
            .difference(&differs.removed),
    )
}

/// Rewrites an existing last-applied annotation to the configuration just applied.
fn sync_last_applied(result: &mut Value, config: &Value) {
    let has_annotation = result
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .is_some();
    if !has_annotation {
        return;
    }
    let mut applied = config.clone();
    if let Some(annotations) = applied
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            if let Some(m) = applied["metadata"].as_object_mut() {
                m.remove("annotations");
            }
        }
    }
    result["metadata"]["annotations"][LAST_APPLIED] = Value::String(applied.to_string());
}

/// The 409 upstream answers: one cause per conflicting field.
pub fn conflict_error(mut conflicts: Vec<(String, Vec<String>)>) -> ApiError {
    conflicts.sort();
    let count: usize = conflicts.iter().map(|(_, paths)| paths.len()).sum();
    let message = if count == 1 {
        let (manager, paths) = &conflicts[0];
        format!(
            "Apply failed with 1 conflict: conflict with {manager}: {}",
            paths[0]
        )
    } else {
        let mut lines = Vec::new();
        for (manager, paths) in &conflicts {
            lines.push(format!("conflicts with {manager}:"));
            lines.extend(paths.iter().map(|p| format!("- {p}")));
        }
        format!("Apply failed with {count} conflicts: {}", lines.join("\n"))
    };
    let mut error = ApiError::new(409, "Conflict", message);
    error.causes = conflicts
        .iter()
        .flat_map(|(manager, paths)| {
            paths.iter().map(move |p| Cause {
                reason: "FieldManagerConflict".into(),
                message: format!("conflict with {manager}"),
                field: p.clone(),
            })
        })
        .collect();
    error
}

/// What a list field is for apply: its list type and key fields.
type ListMeta<'a> = Option<(Option<ListType>, &'a [&'a str])>;

fn field_meta(type_name: Option<&str>, field: &str) -> (Option<&'static str>, ListMeta<'static>) {
    let child = type_name.and_then(|t| patch_meta::field_type(t, field));
    let list = type_name
        .and_then(|t| patch_meta::patch_meta(t, field))
        .map(|m| (m.list_type, m.map_keys));
    (child, list)
}

/// Merges `config` into `live`: structs and maps field by field, keyed lists item by item,
/// sets by value; everything else (scalars, atomic lists and structs) is replaced.
pub fn merge(live: &Value, config: &Value, type_name: Option<&str>, list: ListMeta) -> Value {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) => {
            if type_name.is_some_and(patch_meta::is_atomic_struct) {
                return config.clone();
            }
            let mut out = l.clone();
            for (field, value) in c {
                let (child, child_list) = field_meta(type_name, field);
                let merged = match l.get(field) {
                    Some(old) => merge(old, value, child, child_list),
                    None => value.clone(),
                };
                out.insert(field.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) => match list {
            Some((Some(ListType::Map), keys)) if !keys.is_empty() => {
                let key_of = |item: &Value| item.as_object().map(|f| item_key(f, keys, type_name));
                if l.iter().chain(c).any(|item| key_of(item).is_none()) {
                    return config.clone();
                }
                merge_list(l, c, key_of, |old, new| merge(old, new, type_name, None))
            }
            Some((Some(ListType::Set), _)) => {
                merge_list(l, c, |item| Some(item.to_string()), |_, new| new.clone())
            }
            _ => config.clone(),
        },
        _ => config.clone(),
    }
}

/// Merges two lists of identified items: the configuration's items in its order, each merged
/// with the live item of the same key; live items it does not mention keep their place.
fn merge_list(
    live: &[Value],
    config: &[Value],
    key_of: impl Fn(&Value) -> Option<String>,
    merge_item: impl Fn(&Value, &Value) -> Value,
) -> Value {
    let config_keys: Vec<Option<String>> = config.iter().map(&key_of).collect();
    let mut emitted: Vec<&Option<String>> = Vec::new();
    let mut out = Vec::with_capacity(live.len() + config.len());
    let (mut i, mut j) = (0, 0);
    while i < live.len() || j < config.len() {
        if i < live.len() {
            let key = key_of(&live[i]);
            if !config_keys.contains(&key) {
                out.push(live[i].clone());
                i += 1;
                continue;
            }
            if emitted.contains(&&key) || j >= config.len() {
                i += 1;
                continue;
            }
        }
        let key = &config_keys[j];
        let merged = match live.iter().find(|old| &key_of(old) == key) {
            Some(old) => merge_item(old, &config[j]),
            None => config[j].clone(),
        };
        out.push(merged);
        emitted.push(key);
        if i < live.len() && &key_of(&live[i]) == key {
            i += 1;
        }
        j += 1;
    }
    Value::Array(out)
}

/// Removes from `value` what the manager applied last time (`last`) that no manager owns now
/// (`owned`, the new configuration included). A field none of whose descendants is owned goes
/// as a whole.
fn prune(
    value: &mut Value,
    last: &FieldSet,
    owned: Option<&FieldSet>,
    type_name: Option<&str>,
    list: ListMeta,
) {
    match value {
        Value::Object(map) => prune_map(map, last, owned, type_name),
        Value::Array(items) => {
            let keys = match list {
                Some((Some(ListType::Map), keys)) => keys,
                _ => &[][..],
            };
            let element_of = |item: &Value| match (list, item) {
                (Some((Some(ListType::Map), _)), Value::Object(fields)) => {
                    Some(item_key(fields, keys, type_name))
                }
                (Some((Some(ListType::Set), _)), _) => Some(format!("v:{item}")),
                _ => None,
            };
            items.retain_mut(|item| {
                let Some(element) = element_of(item) else {
                    return true;
                };
                let Some(last_item) = last.get(&element) else {
                    return true;
                };
                match owned.and_then(|o| o.get(&element)) {
                    None => false,
                    Some(owned_item) => {
                        if let Value::Object(fields) = item {
                            prune_map(fields, last_item, Some(owned_item), type_name);
                        }
                        true
                    }
                }
            });
        }
        _ => {}
    }
}

fn prune_map(
    map: &mut Map<String, Value>,
    last: &FieldSet,
    owned: Option<&FieldSet>,
    type_name: Option<&str>,
) {
    for (element, last_child) in last.children() {
        let Some(field) = element.strip_prefix("f:") else {
            continue;
        };
        let owned_child = owned.and_then(|o| o.get(element));
        match owned_child {
            None => {
                map.remove(field);
            }
            Some(owned_child) => {
                let (child, child_list) = field_meta(type_name, field);
                if let Some(v) = map.get_mut(field) {
                    prune(v, last_child, Some(owned_child), child, child_list);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::find;

    fn deployments() -> &'static Resource {
        find("apps", "v1", "deployments").unwrap()
    }

    fn manager(name: &str) -> Manager {
        Manager {
            name: name.into(),
            subresource: String::new(),
        }
    }

    fn config(replicas: Option<i64>, env: &[(&str, &str)]) -> Value {
        let env: Vec<Value> = env
            .iter()
            .map(|(n, v)| json!({"name": n, "value": v}))
            .collect();
        let mut c = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "busybox", "env": env}]}}}});
        if let Some(n) = replicas {
            c["spec"]["replicas"] = json!(n);
        }
        c
    }

    fn apply_as(live: Option<&Value>, config: &Value, who: &str, force: bool) -> ApiResult<Value> {
        apply(
            deployments(),
            Part::Main,
            live,
            config,
            &manager(who),
            force,
        )
    }

    #[test]
    fn an_apply_to_nothing_builds_the_object_and_records_an_apply_entry() {
        let out = apply_as(None, &config(Some(2), &[("A", "1")]), "kubectl", false).unwrap();
        assert_eq!(out["spec"]["replicas"], 2);
        let entries = ManagedFields::of(&out).entries;
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].operation, Operation::Apply);
        assert!(entries[0].fields.paths().contains(
            &".spec.template.spec.containers[name=\"web\"].env[name=\"A\"].value".to_string()
        ));
    }

    #[test]
    fn a_port_applied_without_its_protocol_is_the_stored_port_with_the_default_protocol() {
        let services = find("", "v1", "services").unwrap();
        let config = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80},
                               {"name": "dns", "port": 53, "protocol": "UDP"}]}});
        let kubectl = manager("kubectl");
        let mut live = apply(services, Part::Main, None, &config, &kubectl, false).unwrap();
        // As the Service's defaults store it.
        live["spec"]["ports"][0]["protocol"] = json!("TCP");
        let again = apply(services, Part::Main, Some(&live), &config, &kubectl, false).unwrap();
        assert_eq!(again["spec"]["ports"], live["spec"]["ports"]);
        let fields = ManagedFields::of(&again).entries[0].fields.to_fields_v1();
        let ports = fields["f:spec"]["f:ports"].as_object().unwrap();
        let keys: Vec<&String> = ports.keys().collect();
        assert_eq!(
            keys,
            [
                r#"k:{"port":53,"protocol":"UDP"}"#,
                r#"k:{"port":80,"protocol":"TCP"}"#
            ]
        );
    }

    #[test]
    fn applying_the_same_configuration_twice_changes_nothing() {
        let c = config(Some(2), &[("A", "1")]);
        let first = apply_as(None, &c, "kubectl", false).unwrap();
        let second = apply_as(Some(&first), &c, "kubectl", false).unwrap();
        assert_eq!(first, second);
    }

    #[test]
    fn fields_dropped_from_the_configuration_are_removed_from_the_object() {
        let first = apply_as(
            None,
            &config(Some(2), &[("A", "1"), ("B", "2")]),
            "kubectl",
            false,
        )
        .unwrap();
        let second =
            apply_as(Some(&first), &config(None, &[("A", "1")]), "kubectl", false).unwrap();
        assert!(second["spec"].get("replicas").is_none(), "{second}");
        let env = &second["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(env, &json!([{"name": "A", "value": "1"}]));
    }

    #[test]
    fn fields_another_manager_also_owns_stay_when_dropped() {
        let first = apply_as(None, &config(Some(2), &[]), "kubectl", false).unwrap();
        let both = apply_as(Some(&first), &config(Some(2), &[]), "other", false).unwrap();
        let dropped = apply_as(Some(&both), &config(None, &[]), "kubectl", false).unwrap();
        assert_eq!(dropped["spec"]["replicas"], 2);
    }

    #[test]
    fn changing_a_field_another_manager_owns_is_a_conflict_unless_forced() {
        let first = apply_as(
            None,
            &config(Some(2), &[]),
            "kubectl-client-side-apply",
            false,
        )
        .unwrap();
        let err = apply_as(Some(&first), &config(Some(3), &[]), "kubectl", false).unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(err.reason, "Conflict");
        assert_eq!(
            err.message,
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\": .spec.replicas"
        );
        assert_eq!(err.causes[0].reason, "FieldManagerConflict");
        assert_eq!(err.causes[0].field, ".spec.replicas");
        let forced = apply_as(Some(&first), &config(Some(3), &[]), "kubectl", true).unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        let entries = ManagedFields::of(&forced).entries;
        let old = entries
            .iter()
            .find(|e| e.manager == "kubectl-client-side-apply")
            .unwrap();
        assert!(!old.fields.paths().contains(&".spec.replicas".to_string()));
    }

    #[test]
    fn an_update_manager_is_named_with_its_api_version_in_conflicts() {
        let mut live = config(Some(2), &[]);
        managed::record_update(
            deployments(),
            Part::Main,
            None,
            &mut live,
            &manager("kubectl-client-side-apply"),
        )
        .unwrap();
        let err = apply_as(Some(&live), &config(Some(3), &[]), "kubectl", false).unwrap_err();
        assert_eq!(
            err.message,
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        );
    }

    #[test]
    fn kubectl_may_take_over_fields_its_last_applied_annotation_describes() {
        let mut live = config(Some(2), &[]);
        live["metadata"]["annotations"] = json!({LAST_APPLIED: config(Some(2), &[]).to_string()});
        managed::record_update(
            deployments(),
            Part::Main,
            None,
            &mut live,
            &manager("kubectl-client-side-apply"),
        )
        .unwrap();
        let err = apply_as(Some(&live), &config(Some(3), &[]), "other", false).unwrap_err();
        assert_eq!(err.code, 409);
        let out = apply_as(Some(&live), &config(Some(3), &[]), "kubectl", false).unwrap();
        assert_eq!(out["spec"]["replicas"], 3);
        let synced: Value = serde_json::from_str(
            out["metadata"]["annotations"][LAST_APPLIED]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(synced["spec"]["replicas"], 3);
        // A field changed since the last client-side apply is still a conflict.
        let mut drifted = live.clone();
        drifted["metadata"]["annotations"][LAST_APPLIED] = json!(config(Some(5), &[]).to_string());
        let err = apply_as(Some(&drifted), &config(Some(3), &[]), "kubectl", false).unwrap_err();
        assert_eq!(err.code, 409);
    }

    #[test]
    fn applying_a_value_another_manager_already_set_shares_the_field() {
        let first = apply_as(None, &config(Some(2), &[]), "a", false).unwrap();
        let shared = apply_as(Some(&first), &config(Some(2), &[]), "b", false).unwrap();
        let entries = ManagedFields::of(&shared).entries;
        assert_eq!(entries.len(), 2);
        for e in entries {
            assert!(e.fields.paths().contains(&".spec.replicas".to_string()));
        }
    }

    #[test]
    fn keyed_lists_merge_by_key_and_keep_live_items_in_place() {
        let live = json!([{"name": "a", "v": 1}, {"name": "b", "v": 2}, {"name": "c"}]);
        let cfg = json!([{"name": "b", "v": 3}, {"name": "d"}]);
        let out = merge(&live, &cfg, None, Some((Some(ListType::Map), &["name"])));
        assert_eq!(
            out,
            json!([{"name": "a", "v": 1}, {"name": "b", "v": 3}, {"name": "c"}, {"name": "d"}])
        );
        let set = merge(
            &json!(["x", "y"]),
            &json!(["z", "x"]),
            None,
            Some((Some(ListType::Set), &[])),
        );
        assert_eq!(set, json!(["z", "x", "y"]));
        let atomic = merge(&json!([1, 2]), &json!([3]), None, None);
        assert_eq!(atomic, json!([3]));
    }

    #[test]
    fn bad_configurations_are_400() {
        let r = deployments();
        assert_eq!(decode_config(r, "web", b"- a").unwrap_err().code, 400);
        assert_eq!(
            decode_config(
                r,
                "web",
                b"apiVersion: apps/v2\nkind: Deployment\nmetadata: {name: web}"
            )
            .unwrap_err()
            .code,
            400
        );
        assert_eq!(
            decode_config(
                r,
                "other",
                b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}"
            )
            .unwrap_err()
            .code,
            400
        );
        let ok = decode_config(
            r,
            "web",
            b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, creationTimestamp: null}",
        )
        .unwrap();
        assert!(ok["metadata"].get("creationTimestamp").is_none());
    }
}
