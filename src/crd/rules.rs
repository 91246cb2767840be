//! CRD validation rules (`x-kubernetes-validations`): CEL rules on schema nodes, evaluated with
//! `self` bound to the node's value and, for transition rules, `oldSelf` to the value it had
//! before the update, as upstream's apiextensions-apiserver does.
//!
//! Old values are correlated as upstream: object properties and map entries by key, items of
//! `x-kubernetes-list-type: map` lists by their map keys; elsewhere (other lists) there is no old
//! value, so transition rules there are skipped. Failures become 422 causes at the node's path
//! (plus the rule's `fieldPath`), worded with the node's schema type as upstream:
//! `spec: Invalid value: "object": <message>`.

use serde_json::Value;

use crate::api::Cause;
use crate::cel::{self, Activation};

/// Checks every rule in `schema` against `value` (and `old` on update), adding causes.
pub fn validate(value: &Value, old: Option<&Value>, schema: &Value, causes: &mut Vec<Cause>) {
    walk(value, old, schema, "", causes);
}

fn walk(value: &Value, old: Option<&Value>, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    if value.is_null() {
        return;
    }
    if let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        check_rules(rules, value, old, schema, path, causes);
    }
    match value {
        Value::Object(members) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, member) in members {
                let Some(s) = properties.and_then(|p| p.get(key)).or(additional) else {
                    continue;
                };
                let old_member = old.and_then(|o| o.get(key));
                walk(member, old_member, s, &join(path, key), causes);
            }
        }
        Value::Array(items) => {
            let Some(s) = schema.get("items").filter(|s| s.is_object()) else {
                return;
            };
            for (i, item) in items.iter().enumerate() {
                let old_item = old.and_then(|o| correlated_item(item, o, schema));
                walk(item, old_item, s, &format!("{path}[{i}]"), causes);
            }
        }
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The old item with the same map keys, for lists of type map only.
fn correlated_item<'a>(item: &Value, old: &'a Value, schema: &Value) -> Option<&'a Value> {
    if schema.get("x-kubernetes-list-type").and_then(Value::as_str) != Some("map") {
        return None;
    }
    let keys: Vec<&str> = schema
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    old.as_array()?
        .iter()
        .find(|candidate| keys.iter().all(|k| candidate.get(k) == item.get(k)))
}

fn check_rules(
    rules: &[Value],
    value: &Value,
    old: Option<&Value>,
    schema: &Value,
    path: &str,
    causes: &mut Vec<Cause>,
) {
    let mut activation = Activation::new();
    activation.bind_json("self", Some(value));
    activation.bind_json("oldSelf", old);
    let type_name = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("object");
    for rule in rules {
        let Some(source) = rule.get("rule").and_then(Value::as_str) else {
            continue;
        };
        let program = match cel::compile(source) {
            Ok(program) => program,
            Err(e) => {
                causes.push(cause(path, type_name, None, &e.to_string()));
                continue;
            }
        };
        // A transition rule only applies where there is an old value to compare with.
        if old.is_none() && mentions_old_self(source) {
            continue;
        }
        let field_path = rule
            .get("fieldPath")
            .and_then(Value::as_str)
            .map(|f| f.trim_start_matches('.'))
            .filter(|f| !f.is_empty())
            .map(|f| join(path, f))
            .unwrap_or_else(|| path.to_string());
        let reason = rule.get("reason").and_then(Value::as_str);
        match program.eval_bool(&activation) {
            Ok(true) => {}
            Ok(false) => {
                let message = message_of(rule, source, &activation);
                causes.push(cause(&field_path, type_name, reason, &message));
            }
            Err(e) => causes.push(cause(
                path,
                type_name,
                None,
                &format!("rule evaluation error: {e}"),
            )),
        }
    }
}

fn mentions_old_self(source: &str) -> bool {
    source.contains("oldSelf")
}

/// `messageExpression` if it gives a non-empty string, else `message`, else upstream's default.
fn message_of(rule: &Value, source: &str, activation: &Activation) -> String {
    let from_expression = rule
        .get("messageExpression")
        .and_then(Value::as_str)
        .and_then(|e| cel::compile(e).and_then(|p| p.eval_string(activation)).ok())
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty());
    from_expression
        .or_else(|| {
            rule.get("message")
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
                .map(String::from)
        })
        .unwrap_or_else(|| format!("failed rule: {source}"))
}

fn cause(path: &str, type_name: &str, reason: Option<&str>, message: &str) -> Cause {
    let (reason, message) = match reason {
        Some("FieldValueForbidden") => ("FieldValueForbidden", format!("Forbidden: {message}")),
        Some("FieldValueRequired") => ("FieldValueRequired", format!("Required value: {message}")),
        Some("FieldValueDuplicate") => (
            "FieldValueDuplicate",
            format!("Duplicate value: \"{type_name}\": {message}"),
        ),
        _ => (
            "FieldValueInvalid",
            format!("Invalid value: \"{type_name}\": {message}"),
        ),
    };
    Cause {
        reason: reason.into(),
        message,
        field: path.to_string(),
    }
}

/// Causes for the rules in a CRD schema that do not compile, so a broken rule is refused when
/// the CRD is written rather than on every object.
pub fn check_compiles(schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    let Some(members) = schema.as_object() else {
        return;
    };
    for (i, rule) in members
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let field = format!("{path}.x-kubernetes-validations[{i}].rule");
        let source = rule.get("rule").and_then(Value::as_str).unwrap_or("");
        if source.is_empty() {
            causes.push(Cause::required(&field));
            continue;
        }
        match cel::compile(source) {
            Err(e) => causes.push(uncompiled(&field, rule, &e.to_string())),
            Ok(program) => {
                let is_root = path.ends_with("openAPIV3Schema");
                if let Some(issue) = type_errors(&program, schema, is_root) {
                    causes.push(uncompiled(&field, rule, &issue));
                }
            }
        }
    }
    for (key, nested) in members {
        match key.as_str() {
            "properties" => {
                for (name, s) in nested.as_object().into_iter().flatten() {
                    check_compiles(s, &format!("{path}.properties[{name}]"), causes);
                }
            }
            "items" | "additionalProperties" => {
                check_compiles(nested, &format!("{path}.{key}"), causes)
            }
            _ => {}
        }
    }
}

/// The cause for a `rule` that does not compile. Upstream makes the whole rule the invalid
/// value, printed as Go prints its internal `ValidationRule` (`%#v`): strings quoted, pointers
/// as `(*T)(nil)` or, when set, an address (which differs per request upstream; berth prints a
/// fixed one).
fn uncompiled(field: &str, rule: &Value, detail: &str) -> Cause {
    let text = |name: &str| {
        let value = rule.get(name).and_then(Value::as_str).unwrap_or("");
        serde_json::to_string(value).unwrap_or_default()
    };
    let pointer = |name: &str, to: &str| match rule.get(name) {
        Some(v) if !v.is_null() => format!("(*{to})(0xc000010000)"),
        _ => format!("(*{to})(nil)"),
    };
    let value = format!(
        "apiextensions.ValidationRule{{Rule:{}, Message:{}, MessageExpression:{}, Reason:{}, \
         FieldPath:{}, OptionalOldSelf:{}}}",
        text("rule"),
        text("message"),
        text("messageExpression"),
        pointer("reason", "apiextensions.FieldValueErrorReason"),
        text("fieldPath"),
        pointer("optionalOldSelf", "bool"),
    );
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {value}: {detail}"),
        field: field.to_string(),
    }
}

/// Upstream's compile error for a rule its schema's types refute (a field the schema does not
/// have, an operator on types it does not take): `self` and `oldSelf` are typed by the schema
/// the rule sits on. At the root, `apiVersion`, `kind` and `metadata` (`name`,
/// `generateName`) exist whether the schema lists them or not.
fn type_errors(program: &cel::Program, schema: &Value, is_root: bool) -> Option<String> {
    let mut typed = schema.clone();
    if is_root {
        if let Some(properties) = typed
            .as_object_mut()
            .map(|o| {
                o.entry("properties")
                    .or_insert_with(|| serde_json::json!({}))
            })
            .and_then(Value::as_object_mut)
        {
            for (name, field) in [
                ("apiVersion", serde_json::json!({"type": "string"})),
                ("kind", serde_json::json!({"type": "string"})),
                (
                    "metadata",
                    serde_json::json!({"type": "object", "properties": {
                    "name": {"type": "string"}, "generateName": {"type": "string"}}}),
                ),
            ] {
                properties.entry(name).or_insert(field);
            }
        }
    }
    let no_definitions = |_: &str| -> Option<&Value> { None };
    cel::typecheck::check(
        program,
        &[("self", &typed), ("oldSelf", &typed)],
        &no_definitions,
    )
    .map(|errors| format!("compilation failed: {errors}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.replicas <= self.maxReplicas", "message": "replicas must be <= maxReplicas"},
                {"rule": "self.mode == oldSelf.mode", "message": "mode is immutable", "fieldPath": ".mode"},
            ],
            "properties": {
                "replicas": {"type": "integer"},
                "maxReplicas": {"type": "integer"},
                "mode": {"type": "string"},
                "ports": {"type": "array", "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                    "items": {"type": "object",
                        "x-kubernetes-validations": [{"rule": "self.port > 0",
                            "messageExpression": "'port ' + string(self.port) + ' of ' + self.name + ' must be positive'"}],
                        "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}},
            }
        }}})
    }

    fn causes(value: Value, old: Option<Value>) -> Vec<Cause> {
        let mut causes = Vec::new();
        validate(&value, old.as_ref(), &schema(), &mut causes);
        causes
    }

    #[test]
    fn a_broken_rule_becomes_a_422_cause_at_its_node() {
        let found = causes(
            json!({"spec": {"replicas": 6, "maxReplicas": 5, "mode": "a"}}),
            None,
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].field, "spec");
        assert_eq!(found[0].reason, "FieldValueInvalid");
        assert_eq!(
            found[0].message,
            "Invalid value: \"object\": replicas must be <= maxReplicas"
        );
        assert!(causes(
            json!({"spec": {"replicas": 5, "maxReplicas": 5, "mode": "a"}}),
            None
        )
        .is_empty());
    }

    #[test]
    fn transition_rules_compare_with_the_old_object_only_on_update() {
        let old = json!({"spec": {"replicas": 1, "maxReplicas": 5, "mode": "a"}});
        let new = json!({"spec": {"replicas": 1, "maxReplicas": 5, "mode": "b"}});
        let found = causes(new.clone(), Some(old));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].field, "spec.mode");
        assert_eq!(
            found[0].message,
            "Invalid value: \"object\": mode is immutable"
        );
        assert!(causes(new, None).is_empty());
    }

    #[test]
    fn list_items_are_checked_with_their_message_expression() {
        let found = causes(
            json!({"spec": {"replicas": 1, "maxReplicas": 5, "mode": "a",
                "ports": [{"name": "http", "port": 80}, {"name": "bad", "port": 0}]}}),
            None,
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].field, "spec.ports[1]");
        assert_eq!(
            found[0].message,
            "Invalid value: \"object\": port 0 of bad must be positive"
        );
    }

    #[test]
    fn rules_that_do_not_compile_are_refused_with_the_crd() {
        let mut found = Vec::new();
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [{"rule": "self.a >"}, {"rule": "has(self.a)"}]}}});
        check_compiles(
            &schema,
            "spec.versions[0].schema.openAPIV3Schema",
            &mut found,
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].field,
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule"
        );
    }

    #[test]
    fn rules_naming_fields_their_schema_lacks_are_refused_with_the_crd() {
        let mut found = Vec::new();
        let schema = json!({"type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.metadata.name.size() < 10 && self.spec.replicas >= 0"},
                {"rule": "self.spec.replcas >= 0"}],
            "properties": {"spec": {"type": "object",
                "x-kubernetes-validations": [
                    {"rule": "self.replicas <= self.maxReplicas"},
                    {"rule": "self.items.all(i, i.nme != '')"}],
                "properties": {
                    "replicas": {"type": "integer"},
                    "maxReplicas": {"type": "integer"},
                    "items": {"type": "array", "items": {"type": "object",
                        "properties": {"name": {"type": "string"}}}}}}}});
        check_compiles(
            &schema,
            "spec.versions[0].schema.openAPIV3Schema",
            &mut found,
        );
        let found: Vec<(&str, &str)> = found
            .iter()
            .map(|c| (c.field.as_str(), c.message.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "spec.versions[0].schema.openAPIV3Schema.x-kubernetes-validations[1].rule",
                    "Invalid value: apiextensions.ValidationRule{Rule:\"self.spec.replcas >= 0\", Message:\"\", MessageExpression:\"\", Reason:(*apiextensions.FieldValueErrorReason)(nil), FieldPath:\"\", OptionalOldSelf:(*bool)(nil)}: compilation failed: ERROR: <input>:1:10: undefined field 'replcas'\n | self.spec.replcas >= 0\n | .........^"
                ),
                (
                    "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[1].rule",
                    "Invalid value: apiextensions.ValidationRule{Rule:\"self.items.all(i, i.nme != '')\", Message:\"\", MessageExpression:\"\", Reason:(*apiextensions.FieldValueErrorReason)(nil), FieldPath:\"\", OptionalOldSelf:(*bool)(nil)}: compilation failed: ERROR: <input>:1:20: undefined field 'nme'\n | self.items.all(i, i.nme != '')\n | ...................^"
                ),
            ]
        );
    }

    #[test]
    fn rules_applying_an_operator_to_types_it_does_not_take_are_refused_with_the_crd() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.replicas + self.mode > 0"},
                {"rule": "self.replicas + size(self.mode) > 0"}],
            "properties": {"replicas": {"type": "integer"}, "mode": {"type": "string"}}}}});
        let mut found = Vec::new();
        check_compiles(&schema, "openAPIV3Schema", &mut found);
        let found: Vec<(&str, &str)> = found
            .iter()
            .map(|c| (c.field.as_str(), c.message.as_str()))
            .collect();
        assert_eq!(
            found,
            [(
                "openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule",
                "Invalid value: apiextensions.ValidationRule{Rule:\"self.replicas + self.mode > 0\", Message:\"\", MessageExpression:\"\", Reason:(*apiextensions.FieldValueErrorReason)(nil), FieldPath:\"\", OptionalOldSelf:(*bool)(nil)}: compilation failed: ERROR: <input>:1:15: found no matching overload for '_+_' applied to '(int, string)'\n | self.replicas + self.mode > 0\n | ..............^"
            )]
        );
    }

    #[test]
    fn the_invalid_value_of_a_rule_that_does_not_compile_is_the_whole_rule_as_go_prints_it() {
        let rule =
            json!({"rule": "self.x >", "message": "say \"x\"", "reason": "FieldValueForbidden"});
        let cause = uncompiled("f", &rule, "compilation failed");
        assert_eq!(
            cause.message,
            "Invalid value: apiextensions.ValidationRule{Rule:\"self.x >\", Message:\"say \\\"x\\\"\", \
             MessageExpression:\"\", Reason:(*apiextensions.FieldValueErrorReason)(0xc000010000), \
             FieldPath:\"\", OptionalOldSelf:(*bool)(nil)}: compilation failed"
        );
    }
}
