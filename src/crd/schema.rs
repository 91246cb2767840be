//! Custom objects against the structural schema of their version: pruning of unknown fields,
//! defaults, and validation into 422 causes, as upstream's apiextensions-apiserver does.
//!
//! The schema is the CRD's `openAPIV3Schema` as JSON; only the structural subset is read
//! (`properties`, `items`, `additionalProperties`, the `x-kubernetes-*` extensions and the value
//! checks), since a v1 CRD must be structural to be accepted.

use serde_json::{Map, Value};

use crate::api::Cause;

/// Keys every Kubernetes object has besides what its schema says.
const TYPE_AND_OBJECT_META: [&str; 3] = ["apiVersion", "kind", "metadata"];

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool) == Some(true)
}

fn preserves_unknown(schema: &Value) -> bool {
    flag(schema, "x-kubernetes-preserve-unknown-fields")
}

fn is_embedded(schema: &Value) -> bool {
    flag(schema, "x-kubernetes-embedded-resource")
}

/// The schema of member `key` of an object described by `schema`, if the schema knows it.
fn member_schema<'a>(schema: &'a Value, key: &str) -> Option<&'a Value> {
    if let Some(s) = schema.get("properties").and_then(|p| p.get(key)) {
        return Some(s);
    }
    schema.get("additionalProperties").filter(|a| a.is_object())
}

/// Does the schema let unknown members of an object through untouched?
fn keeps_unknown_members(schema: &Value) -> bool {
    preserves_unknown(schema) || schema.get("additionalProperties") == Some(&Value::Bool(true))
}

/// Removes what the schema does not describe. `root` objects (and embedded resources) keep
/// `apiVersion`, `kind` and `metadata`; nulls where the schema does not allow them go too, so
/// defaults can fill them in.
pub fn prune(value: &mut Value, schema: &Value, root: bool) {
    match value {
        Value::Object(members) => {
            let keep_meta = root || is_embedded(schema);
            members.retain(|key, member| {
                if keep_meta && TYPE_AND_OBJECT_META.contains(&key.as_str()) {
                    return true;
                }
                match member_schema(schema, key) {
                    Some(s) => !member.is_null() || flag(s, "nullable"),
                    None => keeps_unknown_members(schema),
                }
            });
            for (key, member) in members.iter_mut() {
                if keep_meta && TYPE_AND_OBJECT_META.contains(&key.as_str()) {
                    continue;
                }
                if let Some(s) = member_schema(schema, key) {
                    prune(member, s, false);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items").filter(|s| s.is_object()) {
                for item in items {
                    prune(item, s, false);
                }
            }
        }
        _ => {}
    }
}

/// Fills in `default:` values for absent members, from the outside in (a defaulted object gets
/// its own members' defaults too).
pub fn apply_defaults(value: &mut Value, schema: &Value) {
    match value {
        Value::Object(members) => {
            if let Some(Value::Object(properties)) = schema.get("properties") {
                for (key, s) in properties {
                    if let Some(default) = s.get("default") {
                        if !members.contains_key(key) {
                            members.insert(key.clone(), default.clone());
                        }
                    }
                }
            }
            for (key, member) in members.iter_mut() {
                if let Some(s) = member_schema(schema, key) {
                    apply_defaults(member, s);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items").filter(|s| s.is_object()) {
                for item in items {
                    apply_defaults(item, s);
                }
            }
        }
        _ => {}
    }
}

/// Checks `value` against `schema`; every violation becomes a cause naming its field path.
pub fn validate(value: &Value, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    if value.is_null() {
        if !flag(schema, "nullable") && schema.get("type").is_some() {
            causes.push(type_cause(path, value, schema_type(schema)));
        }
        return;
    }
    if !type_matches(value, schema) {
        causes.push(type_cause(path, value, schema_type(schema)));
        return;
    }
    check_enum(value, schema, path, causes);
    check_bounds(value, schema, path, causes);
    match value {
        Value::Object(members) => validate_object(members, schema, path, causes),
        Value::Array(items) => {
            if let Some(s) = schema.get("items").filter(|s| s.is_object()) {
                for (i, item) in items.iter().enumerate() {
                    validate(item, s, &format!("{path}[{i}]"), causes);
                }
            }
        }
        _ => {}
    }
}

fn validate_object(
    members: &Map<String, Value>,
    schema: &Value,
    path: &str,
    causes: &mut Vec<Cause>,
) {
    let embedded = is_embedded(schema);
    for key in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !members.contains_key(key) {
            causes.push(Cause::required(&child(path, key)));
        }
    }
    if embedded {
        for key in ["apiVersion", "kind"] {
            if members
                .get(key)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                causes.push(Cause::required(&child(path, key)));
            }
        }
    }
    for (key, member) in members {
        if (embedded || path.is_empty()) && TYPE_AND_OBJECT_META.contains(&key.as_str()) {
            continue;
        }
        if let Some(s) = member_schema(schema, key) {
            validate(member, s, &child(path, key), causes);
        }
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn schema_type(schema: &Value) -> &str {
    schema.get("type").and_then(Value::as_str).unwrap_or("")
}

fn type_matches(value: &Value, schema: &Value) -> bool {
    if flag(schema, "x-kubernetes-int-or-string") {
        return value.is_string() || value.is_i64() || value.is_u64();
    }
    match schema_type(schema) {
        "" => true,
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "number" => value.is_number(),
        // JSON has one number type: an integer is a number without a fraction.
        "integer" => {
            value.is_i64()
                || value.is_u64()
                || value
                    .as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.is_finite())
        }
        _ => true,
    }
}

/// The Go type name upstream's messages use for a JSON value.
fn value_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_cause(path: &str, value: &Value, expected: &str) -> Cause {
    let actual = value_type_name(value);
    Cause {
        reason: "FieldValueTypeInvalid".into(),
        message: format!(
            "Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""
        ),
        field: path.into(),
    }
}

/// How upstream prints a value inside a message: strings quoted, the rest as JSON.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

fn invalid(path: &str, value: &Value, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {}: {path} in body {detail}", shown(value)),
        field: path.into(),
    }
}

fn check_enum(value: &Value, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    let Some(allowed) = schema.get("enum").and_then(Value::as_array) else {
        return;
    };
    if allowed.contains(value) {
        return;
    }
    let list: Vec<String> = allowed.iter().map(shown).collect();
    causes.push(Cause {
        reason: "FieldValueNotSupported".into(),
        message: format!(
            "Unsupported value: {}: supported values: {}",
            shown(value),
            list.join(", ")
        ),
        field: path.into(),
    });
}

fn check_bounds(value: &Value, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    let number = |key: &str| schema.get(key).and_then(Value::as_f64);
    let count = |key: &str| schema.get(key).and_then(Value::as_u64);
    if let Some(n) = value.as_f64() {
        if let Some(min) = number("minimum") {
            let exclusive = flag(schema, "exclusiveMinimum");
            if n < min || (exclusive && n == min) {
                let op = if exclusive {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                causes.push(invalid(
                    path,
                    value,
                    &format!("should be {op} {}", trim_float(min)),
                ));
            }
        }
        if let Some(max) = number("maximum") {
            let exclusive = flag(schema, "exclusiveMaximum");
            if n > max || (exclusive && n == max) {
                let op = if exclusive {
                    "less than"
                } else {
                    "less than or equal to"
                };
                causes.push(invalid(
                    path,
                    value,
                    &format!("should be {op} {}", trim_float(max)),
                ));
            }
        }
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as u64;
        if let Some(min) = count("minLength").filter(|m| len < *m) {
            causes.push(invalid(
                path,
                value,
                &format!("should be at least {min} chars long"),
            ));
        }
        if let Some(max) = count("maxLength").filter(|m| len > *m) {
            causes.push(invalid(
                path,
                value,
                &format!("may not be longer than {max}"),
            ));
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            if regex::Regex::new(pattern).is_ok_and(|re| !re.is_match(s)) {
                causes.push(invalid(path, value, &format!("should match '{pattern}'")));
            }
        }
    }
    if let Some(items) = value.as_array() {
        let len = items.len() as u64;
        if let Some(min) = count("minItems").filter(|m| len < *m) {
            causes.push(invalid(
                path,
                value,
                &format!("should have at least {min} items"),
            ));
        }
        if let Some(max) = count("maxItems").filter(|m| len > *m) {
            causes.push(Cause {
                reason: "FieldValueTooMany".into(),
                message: format!("Too many: {len}: must have at most {max} items"),
                field: path.into(),
            });
        }
    }
    if let Some(members) = value.as_object() {
        let len = members.len() as u64;
        if let Some(min) = count("minProperties").filter(|m| len < *m) {
            causes.push(invalid(
                path,
                value,
                &format!("should have at least {min} properties"),
            ));
        }
        if let Some(max) = count("maxProperties").filter(|m| len > *m) {
            causes.push(invalid(
                path,
                value,
                &format!("should have at most {max} properties"),
            ));
        }
    }
}

/// `1` rather than `1.0`, as Go prints whole floats in these messages.
fn trim_float(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        f.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn widget_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {
                        "size": {"type": "integer", "minimum": 1, "maximum": 10},
                        "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                        "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
                        "port": {"x-kubernetes-int-or-string": true},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "items": {"type": "array", "items": {"type": "object",
                            "properties": {"a": {"type": "string", "default": "x"}}}},
                        "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                            "properties": {"spec": {"type": "object"}}},
                    }
                },
                "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}
            }
        })
    }

    fn fields(causes: &[Cause]) -> Vec<String> {
        causes
            .iter()
            .map(|c| format!("{} {}", c.field, c.reason))
            .collect()
    }

    #[test]
    fn unknown_fields_are_pruned_except_where_the_schema_preserves_them() {
        let mut obj = json!({
            "apiVersion": "x/v1", "kind": "Widget", "metadata": {"name": "w"},
            "bogus": 1,
            "spec": {"size": 2, "nope": true, "extra": {"anything": {"goes": 1}},
                     "labels": {"a": "b"}, "items": [{"a": "y", "b": "z"}],
                     "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}, "junk": 1}},
        });
        prune(&mut obj, &widget_schema(), true);
        assert_eq!(obj.get("bogus"), None);
        assert_eq!(obj["metadata"]["name"], "w");
        assert_eq!(obj["spec"].get("nope"), None);
        assert_eq!(obj["spec"]["extra"]["anything"]["goes"], 1);
        assert_eq!(obj["spec"]["labels"]["a"], "b");
        assert_eq!(obj["spec"]["items"][0], json!({"a": "y"}));
        assert_eq!(obj["spec"]["template"]["kind"], "Pod");
        assert_eq!(obj["spec"]["template"].get("junk"), None);
    }

    #[test]
    fn defaults_fill_absent_fields_and_nulls_without_nullable_are_pruned_first() {
        let mut obj = json!({"spec": {"size": 1, "color": null, "items": [{}]}});
        prune(&mut obj, &widget_schema(), true);
        apply_defaults(&mut obj, &widget_schema());
        assert_eq!(obj["spec"]["color"], "red");
        assert_eq!(obj["spec"]["items"][0]["a"], "x");
        let mut set = json!({"spec": {"size": 1, "color": "blue"}});
        apply_defaults(&mut set, &widget_schema());
        assert_eq!(set["spec"]["color"], "blue");
    }

    #[test]
    fn violations_name_their_field_paths_and_upstream_reasons() {
        let obj = json!({"apiVersion": "x/v1", "kind": "Widget", "metadata": {},
            "spec": {"size": "big", "color": "green", "name": "ABCDEFG", "port": true,
                     "labels": {"a": 1}, "items": [{"a": 5}],
                     "template": {"metadata": {}}}});
        let mut causes = Vec::new();
        validate(&obj, &widget_schema(), "", &mut causes);
        let got = fields(&causes);
        for want in [
            "spec.size FieldValueTypeInvalid",
            "spec.color FieldValueNotSupported",
            "spec.name FieldValueInvalid",
            "spec.port FieldValueTypeInvalid",
            "spec.labels.a FieldValueTypeInvalid",
            "spec.items[0].a FieldValueTypeInvalid",
            "spec.template.apiVersion FieldValueRequired",
        ] {
            assert!(
                got.contains(&want.to_string()),
                "{want} missing from {got:?}"
            );
        }
        let size = causes.iter().find(|c| c.field == "spec.size").unwrap();
        assert_eq!(
            size.message,
            "Invalid value: \"string\": spec.size in body must be of type integer: \"string\""
        );
    }

    #[test]
    fn bounds_and_required_fields_are_checked() {
        let mut causes = Vec::new();
        validate(
            &json!({"spec": {"size": 11}}),
            &widget_schema(),
            "",
            &mut causes,
        );
        assert_eq!(causes.len(), 1);
        assert_eq!(
            causes[0].message,
            "Invalid value: 11: spec.size in body should be less than or equal to 10"
        );
        let mut causes = Vec::new();
        validate(&json!({"spec": {}}), &widget_schema(), "", &mut causes);
        assert_eq!(fields(&causes), ["spec.size FieldValueRequired"]);
        let mut causes = Vec::new();
        validate(
            &json!({"spec": {"size": 3, "port": "http", "name": "abc"}}),
            &widget_schema(),
            "",
            &mut causes,
        );
        assert!(causes.is_empty(), "{causes:?}");
    }
}
