//! Field sets: which fields of an object a field manager owns, as server-side apply tracks them
//! in `metadata.managedFields[].fieldsV1`.
//!
//! A set is a tree of path elements, spelled as in FieldsV1: `f:<field>` for a struct or map
//! field, `k:<json of the key fields>` for an item of a keyed list, `v:<json value>` for an item
//! of a set list. A node that is itself a member (not only a parent of members) is written with
//! a `"."` child when it also has children.

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
        for (path, _) in members(object, type_name) {
            set.insert(&path);
        }
        set
    }

    /// Makes the node at `path` a member.
    pub fn insert(&mut self, path: &[String]) {
        let mut node = self;
        for element in path {
            node = node.child(element.clone());
        }
        node.member = true;
    }

    /// The set below one path element, if it has any members.
    pub fn get(&self, element: &str) -> Option<&FieldSet> {
        self.children.get(element)
    }

    /// The path elements directly below this node and their sets.
    pub fn children(&self) -> impl Iterator<Item = (&String, &FieldSet)> {
        self.children.iter()
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

/// One member of an object's field set, as the walk meets it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Member<'a> {
    /// Compared by value: a scalar, an atomic list or struct, an empty map, a set item.
    Leaf(&'a Value),
    /// A free-form map or a keyed list item: present or not, its children say the rest.
    Node,
}

type FieldPath = Vec<String>;

/// Every member of `map` (a struct of the type named `type_name`) with its path.
fn walk_struct<'a>(
    map: &'a Map<String, Value>,
    type_name: Option<&str>,
    path: &mut FieldPath,
    out: &mut Vec<(FieldPath, Member<'a>)>,
) {
    for (field, value) in map {
        let child_type = type_name.and_then(|t| patch_meta::field_type(t, field));
        let list_type = type_name
            .and_then(|t| patch_meta::patch_meta(t, field))
            .map(|m| (m.list_type, m.map_keys));
        path.push(format!("f:{field}"));
        walk_value(value, child_type, list_type, path, out);
        path.pop();
    }
}

fn walk_value<'a>(
    value: &'a Value,
    type_name: Option<&str>,
    list: Option<(Option<ListType>, &[&str])>,
    path: &mut FieldPath,
    out: &mut Vec<(FieldPath, Member<'a>)>,
) {
    match value {
        Value::Object(map) if !map.is_empty() => match type_name {
            Some(t) if patch_meta::is_atomic_struct(t) => {
                out.push((path.clone(), Member::Leaf(value)))
            }
            Some(t) => walk_struct(map, Some(t), path, out),
            // A map with free-form keys (labels, data) is a member itself, as are its keys.
            None => {
                out.push((path.clone(), Member::Node));
                for (key, item) in map {
                    path.push(format!("f:{key}"));
                    walk_value(item, None, None, path, out);
                    path.pop();
                }
            }
        },
        Value::Array(items) if !items.is_empty() => match list {
            Some((Some(ListType::Map), keys)) if !keys.is_empty() => {
                for item in items {
                    let Value::Object(fields) = item else {
                        out.push((path.clone(), Member::Leaf(value)));
                        continue;
                    };
                    path.push(item_key(fields, keys, type_name));
                    out.push((path.clone(), Member::Node));
                    walk_struct(fields, type_name, path, out);
                    path.pop();
                }
            }
            Some((Some(ListType::Set), _)) => {
                for item in items {
                    path.push(format!("v:{item}"));
                    out.push((path.clone(), Member::Leaf(item)));
                    path.pop();
                }
            }
            _ => out.push((path.clone(), Member::Leaf(value))),
        },
        _ => out.push((path.clone(), Member::Leaf(value))),
    }
}

/// The `k:` path element of a keyed list item (of the type named `item_type`): its key fields
/// as JSON, a key field it omits at its schema default.
pub fn item_key(fields: &Map<String, Value>, keys: &[&str], item_type: Option<&str>) -> String {
    let key: Map<String, Value> = keys
        .iter()
        .filter_map(|k| {
            let value = fields.get(*k).cloned().or_else(|| {
                item_type
                    .and_then(|t| patch_meta::key_default(t, k))
                    .map(|default| Value::String(default.into()))
            });
            value.map(|v| (k.to_string(), v))
        })
        .collect();
    format!("k:{}", Value::Object(key))
}

fn members<'a>(object: &'a Value, type_name: Option<&str>) -> Vec<(FieldPath, Member<'a>)> {
    let mut out = Vec::new();
    if let Value::Object(map) = object {
        walk_struct(map, type_name, &mut Vec::new(), &mut out);
    }
    out
}

/// How two versions of an object differ, field by field (structured-merge-diff's Comparison).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

impl Comparison {
    pub fn is_same(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }

    /// What the new version set: the fields a writer takes ownership of.
    pub fn changed(&self) -> FieldSet {
        self.added.union(&self.modified)
    }
}

/// Compares `old` with `new`, both objects of the type named `type_name`.
pub fn compare(old: &Value, new: &Value, type_name: Option<&str>) -> Comparison {
    let before: BTreeMap<FieldPath, Member> = members(old, type_name).into_iter().collect();
    let after: BTreeMap<FieldPath, Member> = members(new, type_name).into_iter().collect();
    let mut out = Comparison::default();
    for (path, member) in &after {
        match before.get(path) {
            None => out.added.insert(path),
            Some(old_member) if old_member != member => out.modified.insert(path),
            Some(_) => {}
        }
    }
    for path in before.keys() {
        if !after.contains_key(path) {
            out.removed.insert(path);
        }
    }
    out
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
