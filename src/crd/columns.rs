//! Table output of custom objects: the Name column, then the version's
//! `additionalPrinterColumns` (or Age when it defines none), read with the JSONPath subset
//! upstream allows there (`.a.b`, `.a[0]`, `.a[*].b`, `.a['dotted.key']`, `.a[?(@.k=="v")].b`).

use serde_json::{json, Value};

use super::definition::definition_of;
use crate::api::resources::Resource;

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

/// The printer columns of a custom resource, None for built-in kinds.
fn printer_columns(r: &Resource) -> Option<Vec<Value>> {
    let definition = definition_of(r)?;
    let version = definition.version(r.version)?;
    if version.columns.is_empty() {
        return Some(vec![json!({"name": "Age", "type": "date",
            "jsonPath": ".metadata.creationTimestamp",
            "description": "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC."})]);
    }
    Some(version.columns.clone())
}

/// `columnDefinitions` of a custom resource's Table.
pub fn definitions(r: &Resource) -> Option<Vec<Value>> {
    let mut out = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": NAME_DESCRIPTION, "priority": 0})];
    for c in printer_columns(r)? {
        out.push(json!({
            "name": c.get("name").cloned().unwrap_or(json!("")),
            "type": c.get("type").cloned().unwrap_or(json!("string")),
            "format": c.get("format").cloned().unwrap_or(json!("")),
            "description": c.get("description").cloned().unwrap_or(json!("")),
            "priority": c.get("priority").cloned().unwrap_or(json!(0)),
        }));
    }
    Some(out)
}

/// The cells of one custom object's row.
pub fn cells(r: &Resource, obj: &Value) -> Option<Vec<Value>> {
    let name = obj
        .pointer("/metadata/name")
        .cloned()
        .unwrap_or(Value::Null);
    let mut out = vec![name];
    for c in printer_columns(r)? {
        let path = c.get("jsonPath").and_then(Value::as_str).unwrap_or("");
        let ty = c.get("type").and_then(Value::as_str).unwrap_or("string");
        let found = evaluate(path, obj).into_iter().next();
        out.push(match found {
            None => Value::Null,
            Some(v) => cell(ty, v),
        });
    }
    Some(out)
}

fn cell(ty: &str, value: &Value) -> Value {
    match (ty, value) {
        ("string", Value::String(s)) => json!(s),
        ("string", other) => json!(other.to_string()),
        ("integer", Value::Number(n)) => n
            .as_i64()
            .map(Value::from)
            .or_else(|| n.as_f64().map(|f| json!(f as i64)))
            .unwrap_or(Value::Null),
        ("number", Value::Number(_)) | ("boolean", Value::Bool(_)) | ("date", Value::String(_)) => {
            value.clone()
        }
        _ => Value::Null,
    }
}

#[derive(Debug, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
    All,
    /// `[?(@.a.b == "v")]`: the elements whose member at the path equals the value.
    Filter(Vec<String>, Value),
}

/// Parses the JSONPath subset; None for anything else (the column then shows `<none>`).
fn parse(path: &str) -> Option<Vec<Step>> {
    let path = path.trim();
    let path = path
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(path);
    let mut steps = Vec::new();
    let mut rest = path.strip_prefix('$').unwrap_or(path);
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = key_end(r);
            let key = r[..end].replace("\\.", ".");
            if key.is_empty() {
                return None;
            }
            steps.push(Step::Key(key));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let close = if r.starts_with("?(") {
                r.find(")]")? + 1
            } else {
                r.find(']')?
            };
            let inner = &r[..close];
            steps.push(bracket(inner)?);
            rest = &r[close + 1..];
        } else {
            return None;
        }
    }
    Some(steps)
}

/// Where a dotted key ends: at an unescaped `.` or at `[`.
fn key_end(s: &str) -> usize {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'.' | b'[' => return i,
            _ => i += 1,
        }
    }
    s.len()
}

fn bracket(inner: &str) -> Option<Step> {
    let inner = inner.trim();
    if inner == "*" {
        return Some(Step::All);
    }
    if let Ok(i) = inner.parse::<usize>() {
        return Some(Step::Index(i));
    }
    if let Some(quoted) = unquote(inner) {
        return Some(Step::Key(quoted));
    }
    let filter = inner.strip_prefix("?(")?.strip_suffix(')')?;
    let (lhs, rhs) = filter.split_once("==")?;
    let path = lhs.trim().strip_prefix("@.")?;
    let rhs = rhs.trim();
    let value = match unquote(rhs) {
        Some(s) => json!(s),
        None => serde_json::from_str(rhs).ok()?,
    };
    Some(Step::Filter(
        path.split('.').map(str::to_string).collect(),
        value,
    ))
}

fn unquote(s: &str) -> Option<String> {
    let quoted =
        (s.starts_with('\'') && s.ends_with('\'')) || (s.starts_with('"') && s.ends_with('"'));
    (quoted && s.len() >= 2).then(|| s[1..s.len() - 1].to_string())
}

/// Every value `path` selects in `obj`.
pub fn evaluate<'a>(path: &str, obj: &'a Value) -> Vec<&'a Value> {
    let Some(steps) = parse(path) else {
        return Vec::new();
    };
    let mut current = vec![obj];
    for step in &steps {
        let mut next = Vec::new();
        for v in current {
            match step {
                Step::Key(k) => next.extend(v.get(k.as_str())),
                Step::Index(i) => next.extend(v.get(*i)),
                Step::All => match v {
                    Value::Array(items) => next.extend(items.iter()),
                    Value::Object(map) => next.extend(map.values()),
                    _ => {}
                },
                Step::Filter(path, wanted) => {
                    for item in v.as_array().into_iter().flatten() {
                        let mut at = Some(item);
                        for key in path {
                            at = at.and_then(|a| a.get(key.as_str()));
                        }
                        if at == Some(wanted) {
                            next.push(item);
                        }
                    }
                }
            }
        }
        current = next;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj() -> Value {
        json!({"metadata": {"name": "w", "annotations": {"a.b/c": "dotted"}},
            "spec": {"size": 3, "ports": [{"port": 80}, {"port": 443}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Synced", "status": "False"}]}})
    }

    #[test]
    fn the_jsonpath_subset_reads_fields_indexes_wildcards_and_filters() {
        let o = obj();
        assert_eq!(evaluate(".spec.size", &o), [&json!(3)]);
        assert_eq!(evaluate(".spec.ports[1].port", &o), [&json!(443)]);
        assert_eq!(
            evaluate(".spec.ports[*].port", &o),
            [&json!(80), &json!(443)]
        );
        assert_eq!(
            evaluate(".status.conditions[?(@.type==\"Synced\")].status", &o),
            [&json!("False")]
        );
        assert_eq!(
            evaluate(".metadata.annotations.a\\.b/c", &o),
            [&json!("dotted")]
        );
        assert_eq!(
            evaluate(".metadata.annotations['a.b/c']", &o),
            [&json!("dotted")]
        );
        assert!(evaluate(".spec.missing", &o).is_empty());
        assert!(evaluate("spec", &o).is_empty());
    }

    #[test]
    fn cells_take_the_column_type() {
        assert_eq!(cell("integer", &json!(3.0)), json!(3));
        assert_eq!(cell("string", &json!(3)), json!("3"));
        assert_eq!(cell("boolean", &json!("yes")), Value::Null);
        assert_eq!(
            cell("date", &json!("2026-01-01T00:00:00Z")),
            json!("2026-01-01T00:00:00Z")
        );
    }
}
