//! Field sets: which fields of an object a field manager owns, as server-side apply tracks them
//! in `metadata.managedFields[].fieldsV1`.
//!
//! A set is a tree of path elements, spelled as in FieldsV1: `f:<field>` for a struct or map
//! field, `k:<json of the key fields>` for an item of a keyed list, `v:<json value>` for an item
//! of a set list. A node that is itself a member (not only a parent of members) is written with
//! a `"."` child when it also has children.

// Server-side apply, its user, is not wired in yet.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use thiserror::Error;

use crate::api::patch_meta::{self, ListType};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FieldSetError {
    #[error("invalid fieldsV1: {0} is not an object")]
    NotAnObject(String),
    #[error("invalid fieldsV1: unknown path element {0}")]
    BadElement(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    /// Is this node a member of the set itself?
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    /// The fields set in `object`, an object of the type named `type_name` (None: no schema,
    /// every list atomic).
    pub fn from_object(object: &Value, type_name: Option<&str>) -> FieldSet {
        let mut set = FieldSet::default();
        if let Value::Object(map) = object {
            add_struct(&mut set, map, type_name);
        }
        set
    }

    /// Decodes `metadata.managedFields[].fieldsV1`.
    pub fn from_fields_v1(value: &Value) -> Result<FieldSet, FieldSetError> {
        let Value::Object(map) = value else {
            return Err(FieldSetError::NotAnObject(value.to_string()));
        };
        let mut set = FieldSet::default();
        if map.is_empty() {
            set.member = true;
        }
        for (key, child) in map {
            if key == "." {
                set.member = true;
                continue;
            }
            if !(key.starts_with("f:")
                || key.starts_with("k:")
                || key.starts_with("v:")
                || key.starts_with("i:"))
            {
                return Err(FieldSetError::BadElement(key.clone()));
            }
            set.children
                .insert(key.clone(), FieldSet::from_fields_v1(child)?);
        }
        Ok(set)
    }

    /// Encodes the set as `fieldsV1`.
    pub fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        if self.member && !self.children.is_empty() {
            map.insert(".".to_string(), Value::Object(Map::new()));
        }
        for (key, child) in &self.children {
            map.insert(key.clone(), child.to_fields_v1());
        }
        Value::Object(map)
    }

    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    /// The members of both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (key, child) in &self.children {
            if let Some(theirs) = other.children.get(key) {
                let both = child.intersection(theirs);
                if !both.is_empty() {
                    out.children.insert(key.clone(), both);
                }
            }
        }
        out
    }

    /// The members of `self` that are not in `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (key, child) in &self.children {
            let rest = match other.children.get(key) {
                Some(theirs) => child.difference(theirs),
                None => child.clone(),
            };
            if !rest.is_empty() {
                out.children.insert(key.clone(), rest);
            }
        }
        out
    }

    /// The members of either set.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.member |= other.member;
        for (key, theirs) in &other.children {
            let merged = match out.children.get(key) {
                Some(mine) => mine.union(theirs),
                None => theirs.clone(),
            };
            out.children.insert(key.clone(), merged);
        }
        out
    }

    /// Every member as upstream prints it in conflict messages: `.spec.replicas`,
    /// `.spec.template.spec.containers[name="web"].image`.
    pub fn paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_paths(String::new(), &mut out);
        out
    }

    fn collect_paths(&self, prefix: String, out: &mut Vec<String>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (key, child) in &self.children {
            child.collect_paths(format!("{prefix}{}", display_element(key)), out);
        }
    }

    fn child(&mut self, key: String) -> &mut FieldSet {
        self.children.entry(key).or_default()
    }
}

fn display_element(key: &str) -> String {
    if let Some(field) = key.strip_prefix("f:") {
        return format!(".{field}");
    }
    if let Some(keys) = key.strip_prefix("k:") {
        if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(keys) {
            let parts: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
            return format!("[{}]", parts.join(","));
        }
    }
    if let Some(value) = key.strip_prefix("v:") {
        return format!("[={value}]");
    }
    if let Some(index) = key.strip_prefix("i:") {
        return format!("[{index}]");
    }
    key.to_string()
}

fn add_struct(set: &mut FieldSet, map: &Map<String, Value>, type_name: Option<&str>) {
    for (field, value) in map {
        let child_type = type_name.and_then(|t| patch_meta::field_type(t, field));
        let list_type = type_name
            .and_then(|t| patch_meta::patch_meta(t, field))
            .map(|m| (m.list_type, m.map_keys));
        let node = set.child(format!("f:{field}"));
        add_value(node, value, child_type, list_type);
    }
}

fn add_value(
    node: &mut FieldSet,
    value: &Value,
    type_name: Option<&str>,
    list: Option<(Option<ListType>, &[&str])>,
) {
    match value {
        Value::Object(map) if !map.is_empty() => match type_name {
            Some(t) if patch_meta::is_atomic_struct(t) => node.member = true,
            Some(t) => add_struct(node, map, Some(t)),
            // A map with free-form keys (labels, data) is a member itself, as are its keys.
            None => {
                node.member = true;
                for (key, item) in map {
                    add_value(node.child(format!("f:{key}")), item, None, None);
                }
            }
        },
        Value::Array(items) if !items.is_empty() => match list {
            Some((Some(ListType::Map), keys)) if !keys.is_empty() => {
                for item in items {
                    let Value::Object(fields) = item else {
                        node.member = true;
                        continue;
                    };
                    let key: Map<String, Value> = keys
                        .iter()
                        .filter_map(|k| fields.get(*k).map(|v| (k.to_string(), v.clone())))
                        .collect();
                    let child = node.child(format!("k:{}", Value::Object(key)));
                    child.member = true;
                    add_struct(child, fields, type_name);
                }
            }
            Some((Some(ListType::Set), _)) => {
                for item in items {
                    node.child(format!("v:{item}")).member = true;
                }
            }
            _ => node.member = true,
        },
        _ => node.member = true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DEPLOYMENT: Option<&str> = Some("io.k8s.api.apps.v1.Deployment");

    fn deployment() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["x"]},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [
                {"name": "web", "image": "busybox", "args": ["a", "b"]}
            ]}}}})
    }

    #[test]
    fn an_object_encodes_as_upstream_fields_v1() {
        let set = FieldSet::from_object(&deployment(), DEPLOYMENT);
        let encoded = set.to_fields_v1();
        assert_eq!(encoded["f:spec"]["f:replicas"], json!({}));
        assert_eq!(
            encoded["f:metadata"]["f:labels"],
            json!({".": {}, "f:app": {}})
        );
        assert_eq!(
            encoded["f:metadata"]["f:finalizers"],
            json!({"v:\"x\"": {}})
        );
        assert_eq!(
            encoded["f:spec"]["f:template"]["f:spec"]["f:containers"],
            json!({"k:{\"name\":\"web\"}": {".": {}, "f:name": {}, "f:image": {}, "f:args": {}}})
        );
        assert!(encoded["f:spec"].get(".").is_none());
    }

    #[test]
    fn fields_v1_round_trips() {
        let set = FieldSet::from_object(&deployment(), DEPLOYMENT);
        let decoded = FieldSet::from_fields_v1(&set.to_fields_v1()).unwrap();
        assert_eq!(decoded, set);
        assert!(FieldSet::from_fields_v1(&json!({"x:bad": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!([1])).is_err());
    }

    #[test]
    fn conflicting_fields_print_as_upstream_paths() {
        let mine = FieldSet::from_object(&json!({"spec": {"replicas": 3}}), DEPLOYMENT);
        let theirs = FieldSet::from_object(&deployment(), DEPLOYMENT);
        assert_eq!(mine.intersection(&theirs).paths(), [".spec.replicas"]);
        let image = FieldSet::from_object(
            &json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "nginx"}]}}}}),
            DEPLOYMENT,
        );
        let both = image.intersection(&theirs).paths();
        assert!(
            both.contains(&".spec.template.spec.containers[name=\"web\"].image".to_string()),
            "{both:?}"
        );
    }

    #[test]
    fn difference_and_union_are_set_operations() {
        let all = FieldSet::from_object(&deployment(), DEPLOYMENT);
        let replicas = FieldSet::from_object(&json!({"spec": {"replicas": 1}}), DEPLOYMENT);
        let rest = all.difference(&replicas);
        assert!(!rest.paths().contains(&".spec.replicas".to_string()));
        assert_eq!(rest.union(&replicas), all);
        assert!(replicas.difference(&all).is_empty());
    }
}
