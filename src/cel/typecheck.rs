//! Static checks of field references against the schemas of the objects an expression sees,
//! the part of upstream's CEL type checker that catches real mistakes: `object.spec.replica`
//! where the kind has `replicas` is an "undefined field" before any object is evaluated.
//!
//! Schemas are OpenAPI/JSON schemas (`properties`, `items`, `additionalProperties`, `$ref`
//! into the caller's definitions). Anything the schema leaves open (no `properties`,
//! `x-kubernetes-preserve-unknown-fields`, an unknown variable) is not checked, so the check
//! only ever reports a field that cannot exist.

use std::collections::HashMap;

use cel_parser::ast::{EntryExpr, Expr, IdedExpr};
use serde_json::Value;

use cel_parser::reference::Val;

use super::{optional, Program, ITERABLE};

/// Resolves a `$ref` (the text after its last `/`) to its definition.
pub type Definitions<'a> = &'a dyn Fn(&str) -> Option<&'a Value>;

/// The problems found in `program` when each of `roots` (variable name, schema) has its schema;
/// upstream's wording (`undefined field 'x'`), in the order met, without duplicates.
pub fn check_fields<'a>(
    program: &Program,
    roots: &[(&str, &'a Value)],
    definitions: Definitions<'a>,
) -> Vec<String> {
    let mut checker = Checker {
        definitions,
        issues: Vec::new(),
    };
    let scope: HashMap<String, Option<&'a Value>> = roots
        .iter()
        .map(|(name, schema)| (name.to_string(), Some(*schema)))
        .collect();
    checker.walk(&program.expr, &scope);
    checker.issues
}

struct Checker<'a> {
    definitions: Definitions<'a>,
    issues: Vec<String>,
}

impl<'a> Checker<'a> {
    /// The schema behind references and single-element `allOf`s.
    fn resolve(&self, mut schema: &'a Value) -> &'a Value {
        for _ in 0..16 {
            if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
                let name = reference.rsplit('/').next().unwrap_or(reference);
                match (self.definitions)(name) {
                    Some(target) => schema = target,
                    None => return schema,
                }
            } else if let Some([only]) = schema
                .get("allOf")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
            {
                schema = only;
            } else {
                break;
            }
        }
        schema
    }

    fn report(&mut self, issue: String) {
        if !self.issues.contains(&issue) {
            self.issues.push(issue);
        }
    }

    /// The schema of `field` of an object of `schema`; None when unknown or open.
    fn select(&mut self, schema: &'a Value, field: &str) -> Option<&'a Value> {
        let schema = self.resolve(schema);
        if let Some(property) = schema.get("properties").and_then(|p| p.get(field)) {
            return Some(property);
        }
        if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
            return Some(values);
        }
        let closed = schema.get("properties").is_some_and(Value::is_object)
            && schema.get("x-kubernetes-preserve-unknown-fields") != Some(&Value::Bool(true))
            && schema.get("additionalProperties") != Some(&Value::Bool(true));
        if closed {
            self.report(format!("undefined field '{field}'"));
        }
        None
    }

    /// The schema of the elements of a list (or the values of a map) of `schema`.
    fn element(&self, schema: &'a Value) -> Option<&'a Value> {
        let schema = self.resolve(schema);
        schema
            .get("items")
            .or_else(|| schema.get("additionalProperties").filter(|v| v.is_object()))
    }

    /// Walks `expr`, reporting unknown fields; returns the schema of its value when known.
    fn walk(
        &mut self,
        expr: &IdedExpr,
        scope: &HashMap<String, Option<&'a Value>>,
    ) -> Option<&'a Value> {
        match &expr.expr {
            Expr::Ident(name) => scope.get(name).copied().flatten(),
            Expr::Select(select) => {
                let operand = self.walk(&select.operand, scope)?;
                self.select(operand, &select.field)
            }
            Expr::Call(call) => {
                let target = call.target.as_ref().and_then(|t| self.walk(t, scope));
                let args: Vec<Option<&'a Value>> =
                    call.args.iter().map(|a| self.walk(a, scope)).collect();
                match (call.func_name.as_str(), args.as_slice()) {
                    (ITERABLE, _) => target,
                    // `list[i]` or `map['key']`, `list[?i]` or `map[?'key']`
                    ("_[_]" | optional::INDEX, [Some(operand), _]) => self.element(*operand),
                    // `obj.?field` (or a select on an optional, which stays optional)
                    (optional::SELECT, [Some(operand), _]) => match call.args.get(1) {
                        Some(IdedExpr {
                            expr: Expr::Literal(Val::String(field)),
                            ..
                        }) => self.select(operand, field),
                        _ => None,
                    },
                    // What an optional holds is typed as the value it came from.
                    (optional::OR_VALUE, [first, _]) => *first,
                    _ => None,
                }
            }
            Expr::Comprehension(c) => {
                let range = self.walk(&c.iter_range, scope);
                self.walk(&c.accu_init, scope);
                let mut inner = scope.clone();
                let is_list = range
                    .map(|r| self.resolve(r))
                    .is_some_and(|r| r.get("items").is_some());
                // Over a list the variable is an element; over a map, a key (a string).
                let element = if is_list {
                    range.and_then(|r| self.element(r))
                } else {
                    None
                };
                inner.insert(c.iter_var.clone(), element);
                if let Some(second) = &c.iter_var2 {
                    inner.insert(second.clone(), None);
                }
                inner.insert(c.accu_var.clone(), None);
                self.walk(&c.loop_cond, &inner);
                self.walk(&c.loop_step, &inner);
                self.walk(&c.result, &inner);
                None
            }
            Expr::List(list) => {
                for e in &list.elements {
                    self.walk(e, scope);
                }
                None
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(e) = &entry.expr {
                        self.walk(&e.key, scope);
                        self.walk(&e.value, scope);
                    }
                }
                None
            }
            Expr::Literal(_) | Expr::Struct(_) | Expr::Unspecified => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cel::compile;
    use serde_json::json;

    fn issues(source: &str) -> Vec<String> {
        let definitions = json!({
            "Meta": {"type": "object", "properties": {
                "name": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
            "Container": {"type": "object", "properties": {
                "name": {"type": "string"}, "image": {"type": "string"}}},
        });
        let schema = json!({"type": "object", "properties": {
            "metadata": {"$ref": "#/definitions/Meta"},
            "spec": {"type": "object", "properties": {
                "replicas": {"type": "integer"},
                "containers": {"type": "array", "items": {"allOf": [{"$ref": "#/definitions/Container"}]}},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                    "properties": {"known": {"type": "string"}}},
                "raw": {"type": "object"}}}}});
        let lookup = |name: &str| definitions.get(name);
        let program = compile(source).expect("compiles");
        check_fields(
            &program,
            &[("object", &schema), ("oldObject", &schema)],
            &lookup,
        )
    }

    #[test]
    fn references_to_fields_the_schema_has_pass() {
        for ok in [
            "object.spec.replicas <= 5",
            "has(object.spec.replicas) && oldObject.metadata.name == 'x'",
            "object.metadata.labels.team == 'a' && object.metadata.labels['x'] == 'b'",
            "object.spec.containers.all(c, c.image.startsWith('r/') && c.name != '')",
            "object.spec.containers[0].image == 'busybox'",
            "object.spec.extra.anything == 1 && object.spec.raw.whatever == 2",
            "params.whatever == 1 && request.name == 'x' && variables.v.w",
            "object.metadata.labels.exists(k, k.startsWith('x'))",
            "sets.contains([1], [1]) && quantity('1').isInteger()",
            "object.?spec.replicas.orValue(1) > 0 && object.spec.?extra.x.hasValue()",
            "object.?metadata.labels[?'team'].orValue('none') != ''",
        ] {
            assert_eq!(issues(ok), Vec::<String>::new(), "{ok}");
        }
    }

    #[test]
    fn references_to_fields_the_schema_lacks_are_reported() {
        assert_eq!(
            issues("object.spec.replica > 1"),
            ["undefined field 'replica'"]
        );
        assert_eq!(
            issues("has(oldObject.metadata.nme) || object.spec.containers.exists(c, c.img == 'x')"),
            ["undefined field 'nme'", "undefined field 'img'"]
        );
        assert_eq!(
            issues("object.spec.containers.map(c, c.imge).size() + object.spec.containers[0].nam.size() > 0"),
            ["undefined field 'imge'", "undefined field 'nam'"]
        );
        assert_eq!(
            issues("object.?spec.replica.orValue(1) > 0 || object.?metadata.nme.hasValue()"),
            ["undefined field 'replica'", "undefined field 'nme'"]
        );
        assert_eq!(
            issues("object.sepc.replicas == object.sepc.replicas"),
            ["undefined field 'sepc'"]
        );
    }
}
