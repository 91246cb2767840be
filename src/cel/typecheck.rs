//! Static checks of an expression against the types of the variables it sees: the part of
//! upstream's CEL type checker that catches real mistakes before any object is evaluated.
//! `object.spec.replica` where the kind has `replicas` is an "undefined field", and
//! `self.replicas + 'x'` "found no matching overload for '_+_' applied to '(int, string)'",
//! each pointed at as cel-go does (the `.` of the select, the operator of the call).
//!
//! Variables are typed by OpenAPI/JSON schemas (`properties`, `items`, `additionalProperties`,
//! `$ref` into the caller's definitions) as Kubernetes types them (`integer` is `int`,
//! `number` is `double`, a `date-time` string is a `timestamp`, ...). Anything the schema
//! leaves open (no `properties`, `x-kubernetes-preserve-unknown-fields`, int-or-string, an
//! unknown variable) is `dyn`, and a call with a `dyn` (or object, null or optional) argument
//! is never reported: the check only reports what cannot work whatever the object holds.

use std::collections::HashMap;

use cel_parser::ast::{CallExpr, EntryExpr, Expr, IdedExpr};
use cel_parser::reference::Val;
use serde_json::Value;

use super::{optional, Program, ITERABLE};

/// Resolves a `$ref` (the text after its last `/`) to its definition.
pub type Definitions<'a> = &'a dyn Fn(&str) -> Option<&'a Value>;

/// Nested lists and maps deeper than this are typed `dyn` (schemas may refer to themselves).
const MAX_TYPE_DEPTH: usize = 16;

/// The errors found in `program` when each of `roots` (variable name, schema) has its schema,
/// as cel-go displays them (`ERROR: <input>:1:13: ...`, the source line and a caret); None
/// when there are none.
pub fn check<'a>(
    program: &Program,
    roots: &[(&str, &'a Value)],
    definitions: Definitions<'a>,
) -> Option<String> {
    let mut checker = Checker {
        definitions,
        issues: Vec::new(),
    };
    let scope: HashMap<String, Type<'a>> = roots
        .iter()
        .map(|(name, schema)| (name.to_string(), checker.type_of(schema, 0)))
        .collect();
    checker.walk(&program.expr, &scope);
    (!checker.issues.is_empty()).then(|| program.display_errors(checker.issues))
}

/// A CEL type, as far as the check follows it.
#[derive(Debug, Clone, PartialEq)]
enum Type<'a> {
    Int,
    Uint,
    Double,
    String,
    Bool,
    Bytes,
    Null,
    Duration,
    Timestamp,
    List(Box<Type<'a>>),
    Map(Box<Type<'a>>, Box<Type<'a>>),
    /// An object of a schema with properties: its fields are known, its type name is not.
    Object(&'a Value),
    /// What an optional select or index yields.
    Optional(Box<Type<'a>>),
    Dyn,
    /// The type of what was already reported: it makes no further reports around it.
    Error,
}

impl Type<'_> {
    /// The name cel-go prints; None for the types whose name berth does not know (objects)
    /// or that never decide an overload here.
    fn name(&self) -> Option<String> {
        Some(match self {
            Type::Int => "int".into(),
            Type::Uint => "uint".into(),
            Type::Double => "double".into(),
            Type::String => "string".into(),
            Type::Bool => "bool".into(),
            Type::Bytes => "bytes".into(),
            Type::Null => "null".into(),
            Type::Duration => "duration".into(),
            Type::Timestamp => "timestamp".into(),
            Type::Dyn => "dyn".into(),
            Type::List(element) => format!("list({})", element.name()?),
            Type::Map(key, value) => format!("map({}, {})", key.name()?, value.name()?),
            Type::Object(_) | Type::Optional(_) | Type::Error => return None,
        })
    }

    /// Whether an overload can be ruled out for an argument of this type.
    fn is_decided(&self) -> bool {
        !matches!(
            self,
            Type::Dyn | Type::Null | Type::Object(_) | Type::Optional(_) | Type::Error
        ) && self.name().is_some()
    }

    fn is_numeric(&self) -> bool {
        matches!(self, Type::Int | Type::Uint | Type::Double)
    }

    /// Whether a value of one type may be a value of the other (`dyn` may be anything).
    fn may_equal(&self, other: &Type) -> bool {
        match (self, other) {
            (Type::Dyn | Type::Null | Type::Object(_) | Type::Optional(_) | Type::Error, _)
            | (_, Type::Dyn | Type::Null | Type::Object(_) | Type::Optional(_) | Type::Error) => {
                true
            }
            (Type::List(a), Type::List(b)) => a.may_equal(b),
            (Type::Map(ak, av), Type::Map(bk, bv)) => ak.may_equal(bk) && av.may_equal(bv),
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }

    /// The more precise of two types that may be equal.
    fn join<'b>(a: Type<'b>, b: Type<'b>) -> Type<'b> {
        if a == b {
            a
        } else if matches!(a, Type::Dyn) {
            b
        } else if matches!(b, Type::Dyn) {
            a
        } else {
            Type::Dyn
        }
    }
}

struct Checker<'a> {
    definitions: Definitions<'a>,
    /// (node id, message), in the order met, without duplicates.
    issues: Vec<(u64, String)>,
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

    /// The CEL type Kubernetes gives a value of `schema`.
    fn type_of(&self, schema: &'a Value, depth: usize) -> Type<'a> {
        let schema = self.resolve(schema);
        let flag = |name: &str| schema.get(name) == Some(&Value::Bool(true));
        if depth > MAX_TYPE_DEPTH || flag("x-kubernetes-int-or-string") {
            return Type::Dyn;
        }
        let has_properties = schema.get("properties").is_some_and(Value::is_object);
        match schema.get("type").and_then(Value::as_str) {
            Some("integer") => Type::Int,
            Some("number") => Type::Double,
            Some("boolean") => Type::Bool,
            Some("string") => match schema.get("format").and_then(Value::as_str) {
                Some("byte") => Type::Bytes,
                Some("duration") => Type::Duration,
                Some("date" | "date-time") => Type::Timestamp,
                Some("int-or-string") => Type::Dyn,
                _ => Type::String,
            },
            Some("array") => match schema.get("items") {
                Some(items) => Type::List(Box::new(self.type_of(items, depth + 1))),
                None => Type::List(Box::new(Type::Dyn)),
            },
            Some("object") | None if has_properties => Type::Object(schema),
            Some("object") | None => match schema.get("additionalProperties") {
                Some(values) if values.is_object() => Type::Map(
                    Box::new(Type::String),
                    Box::new(self.type_of(values, depth + 1)),
                ),
                _ => Type::Dyn,
            },
            Some(_) => Type::Dyn,
        }
    }

    fn report(&mut self, id: u64, issue: String) {
        if !self.issues.iter().any(|(_, known)| *known == issue) {
            self.issues.push((id, issue));
        }
    }

    /// The type of `field` of a value of type `operand`; reported when the object's schema
    /// is closed and lacks it.
    fn select(&mut self, id: u64, operand: &Type<'a>, field: &str) -> Type<'a> {
        match operand {
            Type::Object(schema) => {
                let schema: &'a Value = schema;
                if let Some(property) = schema.get("properties").and_then(|p| p.get(field)) {
                    return self.type_of(property, 0);
                }
                let flag = |name: &str| schema.get(name) == Some(&Value::Bool(true));
                // An embedded resource has these whether its schema lists them or not.
                let embedded = flag("x-kubernetes-embedded-resource")
                    && matches!(field, "apiVersion" | "kind" | "metadata");
                let open = flag("x-kubernetes-preserve-unknown-fields")
                    || flag("additionalProperties")
                    || embedded;
                if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
                    return self.type_of(values, 0);
                }
                if open {
                    return Type::Dyn;
                }
                self.report(id, format!("undefined field '{field}'"));
                Type::Error
            }
            Type::Map(_, value) => (**value).clone(),
            Type::Error => Type::Error,
            Type::Optional(inner) => Type::Optional(Box::new(self.select(id, inner, field))),
            _ => Type::Dyn,
        }
    }

    /// Walks `expr`, reporting what cannot work; returns the type of its value.
    fn walk(&mut self, expr: &IdedExpr, scope: &HashMap<String, Type<'a>>) -> Type<'a> {
        match &expr.expr {
            Expr::Ident(name) => scope.get(name).cloned().unwrap_or(Type::Dyn),
            Expr::Literal(literal) => match literal {
                Val::String(_) => Type::String,
                Val::Boolean(_) => Type::Bool,
                Val::Int(_) => Type::Int,
                Val::UInt(_) => Type::Uint,
                Val::Double(_) => Type::Double,
                Val::Bytes(_) => Type::Bytes,
                Val::Null => Type::Null,
            },
            Expr::Select(select) => {
                let operand = self.walk(&select.operand, scope);
                let field = self.select(expr.id, &operand, &select.field);
                if select.test {
                    Type::Bool
                } else {
                    field
                }
            }
            Expr::Call(call) => self.call(expr.id, call, scope),
            Expr::Comprehension(c) => {
                let range = self.walk(&c.iter_range, scope);
                let accumulator = self.walk(&c.accu_init, scope);
                let mut inner = scope.clone();
                // Over a list the variable is an element; over a map, a key.
                let first = match range {
                    Type::List(element) => *element,
                    Type::Map(key, _) => *key,
                    _ => Type::Dyn,
                };
                match &c.iter_var2 {
                    // Two variables (index and element, key and value) are not followed.
                    Some(name) => {
                        inner.insert(c.iter_var.clone(), Type::Dyn);
                        inner.insert(name.clone(), Type::Dyn);
                    }
                    None => {
                        inner.insert(c.iter_var.clone(), first);
                    }
                }
                inner.insert(c.accu_var.clone(), accumulator);
                self.walk(&c.loop_cond, &inner);
                self.walk(&c.loop_step, &inner);
                self.walk(&c.result, &inner)
            }
            Expr::List(list) => {
                let elements: Vec<Type<'a>> =
                    list.elements.iter().map(|e| self.walk(e, scope)).collect();
                Type::List(Box::new(same_or_dyn(elements)))
            }
            Expr::Map(map) => {
                let (mut keys, mut values) = (Vec::new(), Vec::new());
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(e) = &entry.expr {
                        keys.push(self.walk(&e.key, scope));
                        values.push(self.walk(&e.value, scope));
                    }
                }
                Type::Map(Box::new(same_or_dyn(keys)), Box::new(same_or_dyn(values)))
            }
            Expr::Struct(_) | Expr::Unspecified => Type::Dyn,
        }
    }

    fn call(&mut self, id: u64, call: &CallExpr, scope: &HashMap<String, Type<'a>>) -> Type<'a> {
        let target = call.target.as_ref().map(|t| self.walk(t, scope));
        let args: Vec<Type<'a>> = call.args.iter().map(|a| self.walk(a, scope)).collect();
        if target == Some(Type::Error) || args.contains(&Type::Error) {
            return Type::Error;
        }
        let name = call.func_name.as_str();
        match (name, target, args.as_slice()) {
            (ITERABLE, Some(range), _) => range,
            (optional::SELECT, None, [operand, _]) => match call.args.get(1) {
                Some(IdedExpr {
                    expr: Expr::Literal(Val::String(field)),
                    ..
                }) => {
                    let inner = match operand {
                        Type::Optional(inner) => (**inner).clone(),
                        other => other.clone(),
                    };
                    match self.select(id, &inner, field) {
                        optional @ Type::Optional(_) => optional,
                        field => Type::Optional(Box::new(field)),
                    }
                }
                _ => Type::Dyn,
            },
            (optional::INDEX, None, [container, _]) => {
                let container = match container {
                    Type::Optional(inner) => (**inner).clone(),
                    other => other.clone(),
                };
                Type::Optional(Box::new(element_of(&container)))
            }
            // What an optional holds is typed as the value it came from.
            (optional::OR_VALUE, None, [Type::Optional(inner), _]) => (**inner).clone(),
            (_, None, _) if is_operator(name) => {
                if args.iter().all(Type::is_decided) {
                    match operator(name, &args) {
                        Some(result) => result,
                        None => {
                            self.no_overload(id, name, None, &args);
                            Type::Error
                        }
                    }
                } else {
                    operator(name, &args).unwrap_or(Type::Dyn)
                }
            }
            ("size", target, args) => {
                let (subject, instance) = match (&target, args) {
                    (Some(t), []) => (t, true),
                    (None, [a]) => (a, false),
                    _ => return Type::Dyn,
                };
                match subject {
                    Type::String | Type::Bytes | Type::List(_) | Type::Map(..) | Type::Dyn => {}
                    other if other.is_decided() => {
                        let receiver = instance.then_some(other);
                        let args: &[Type] = if instance { &[] } else { args };
                        self.no_overload(id, name, receiver, args);
                        return Type::Error;
                    }
                    _ => {}
                }
                Type::Int
            }
            ("int", _, _) => Type::Int,
            ("uint", _, _) => Type::Uint,
            ("double", _, _) => Type::Double,
            ("string", _, _) => Type::String,
            ("bytes", _, _) => Type::Bytes,
            ("bool" | "matches" | "startsWith" | "endsWith", _, _) => Type::Bool,
            ("duration", _, _) => Type::Duration,
            ("timestamp", _, _) => Type::Timestamp,
            _ => Type::Dyn,
        }
    }

    /// cel-go's error for a call no overload of `name` accepts: `(int, string)`, or
    /// `int.()` for a method on an int.
    fn no_overload(&mut self, id: u64, name: &str, receiver: Option<&Type>, args: &[Type]) {
        let names: Option<Vec<String>> = args.iter().map(Type::name).collect();
        let receiver = match receiver {
            Some(r) => r.name().map(|n| format!("{n}.")),
            None => Some(String::new()),
        };
        if let (Some(names), Some(receiver)) = (names, receiver) {
            let signature = format!("{receiver}({})", names.join(", "));
            self.report(
                id,
                format!("found no matching overload for '{name}' applied to '{signature}'"),
            );
        }
    }
}

/// The type of the elements of a list or the values of a map.
fn element_of<'a>(container: &Type<'a>) -> Type<'a> {
    match container {
        Type::List(element) => (**element).clone(),
        Type::Map(_, value) => (**value).clone(),
        _ => Type::Dyn,
    }
}

/// One type when all of `types` have it, else `dyn` (an empty literal too).
fn same_or_dyn(types: Vec<Type>) -> Type {
    let mut types = types.into_iter();
    let Some(first) = types.next() else {
        return Type::Dyn;
    };
    if types.all(|t| t == first) {
        first
    } else {
        Type::Dyn
    }
}

fn is_operator(name: &str) -> bool {
    matches!(
        name,
        "_+_"
            | "_-_"
            | "_*_"
            | "_/_"
            | "_%_"
            | "_<_"
            | "_<=_"
            | "_>_"
            | "_>=_"
            | "_==_"
            | "_!=_"
            | "_&&_"
            | "_||_"
            | "!_"
            | "-_"
            | "_?_:_"
            | "@in"
            | "_[_]"
    )
}

/// The result of operator `name` on `args` as CEL's standard overloads define it (with
/// Kubernetes' cross-type numeric comparisons); None when no overload takes them. Arguments
/// of undecided types match as far as they may.
fn operator<'a>(name: &str, args: &[Type<'a>]) -> Option<Type<'a>> {
    use Type::*;
    let same = |a: &Type, b: &Type| !a.is_decided() || !b.is_decided() || a == b;
    match (name, args) {
        ("_+_", [a, b]) => match (a, b) {
            (Timestamp, Duration) | (Duration, Timestamp) => Some(Timestamp),
            (List(x), List(y)) if x.may_equal(y) => {
                Some(List(Box::new(Type::join((**x).clone(), (**y).clone()))))
            }
            (Int | Uint | Double | String | Bytes | Duration, _) if same(a, b) => Some(a.clone()),
            (_, Int | Uint | Double | String | Bytes | Duration) if same(a, b) => Some(b.clone()),
            _ if !a.is_decided() || !b.is_decided() => Some(Dyn),
            _ => None,
        },
        ("_-_", [a, b]) => match (a, b) {
            (Timestamp, Timestamp) => Some(Duration),
            (Timestamp, Duration) => Some(Timestamp),
            (Int | Uint | Double | Duration, _) if same(a, b) => Some(a.clone()),
            _ if !a.is_decided() || !b.is_decided() => Some(Dyn),
            _ => None,
        },
        ("_*_" | "_/_", [a, b]) => match (a, b) {
            (Int | Uint | Double, _) if same(a, b) => Some(a.clone()),
            _ if !a.is_decided() || !b.is_decided() => Some(Dyn),
            _ => None,
        },
        ("_%_", [a, b]) => match (a, b) {
            (Int | Uint, _) if same(a, b) => Some(a.clone()),
            _ if !a.is_decided() || !b.is_decided() => Some(Dyn),
            _ => None,
        },
        ("_<_" | "_<=_" | "_>_" | "_>=_", [a, b]) => {
            let ordered = matches!(
                a,
                Int | Uint | Double | String | Bytes | Bool | Timestamp | Duration
            );
            let fits = (a.is_numeric() && b.is_numeric()) || (ordered && a == b) || !a.is_decided();
            (fits || !b.is_decided()).then_some(Bool)
        }
        // Numbers of different types may be equal at run time; berth does not refuse that.
        ("_==_" | "_!=_", [a, b]) => {
            (a.may_equal(b) || (a.is_numeric() && b.is_numeric())).then_some(Bool)
        }
        ("_&&_" | "_||_", [a, b]) => (same(a, &Bool) && same(b, &Bool)).then_some(Bool),
        ("!_", [a]) => same(a, &Bool).then_some(Bool),
        ("-_", [a]) => match a {
            Int | Double => Some(a.clone()),
            _ if !a.is_decided() => Some(Dyn),
            _ => None,
        },
        ("_?_:_", [condition, a, b]) => {
            (same(condition, &Bool) && a.may_equal(b)).then(|| Type::join(a.clone(), b.clone()))
        }
        ("@in", [element, container]) => match container {
            List(x) | Map(x, _) => element.may_equal(x).then_some(Bool),
            _ if !container.is_decided() => Some(Bool),
            _ => None,
        },
        ("_[_]", [container, index]) => match container {
            List(element) => same(index, &Int).then(|| (**element).clone()),
            Map(key, value) => index.may_equal(key).then(|| (**value).clone()),
            _ if !container.is_decided() => Some(Dyn),
            _ => None,
        },
        _ => Some(Dyn),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cel::compile;
    use serde_json::json;

    fn issues(source: &str) -> Option<String> {
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
                "ratio": {"type": "number"},
                "paused": {"type": "boolean"},
                "port": {"x-kubernetes-int-or-string": true},
                "started": {"type": "string", "format": "date-time"},
                "containers": {"type": "array", "items": {"allOf": [{"$ref": "#/definitions/Container"}]}},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                    "properties": {"known": {"type": "string"}}},
                "raw": {"type": "object"}}}}});
        let lookup = |name: &str| definitions.get(name);
        let program = compile(source).expect("compiles");
        check(
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
            assert_eq!(issues(ok), None, "{ok}");
        }
    }

    #[test]
    fn well_typed_expressions_pass() {
        for ok in [
            "object.spec.replicas + 1 > 2 && object.spec.ratio * 2.0 < 1.5",
            "object.spec.replicas < object.spec.ratio && 1u <= 2 && 1 == 1.0",
            "object.spec.port == 80 || object.spec.port == 'http'",
            "object.spec.started < timestamp('2020-01-01T00:00:00Z')",
            "object.spec.started + duration('1h') > object.spec.started",
            "size(object.spec.containers) + object.metadata.name.size() > 0",
            "object.spec.containers.map(c, c.name) + ['x'] == ['a', 'x']",
            "object.metadata.name in ['a', 'b'] && 'team' in object.metadata.labels",
            "(object.spec.paused ? 1 : 2) + object.spec.replicas > 0",
            "!object.spec.paused && -object.spec.replicas < 0",
            "object.spec.containers.exists_one(c, c.name == 'a') == true",
            "object.spec.raw.x + 1 == object.spec.extra.y && null == object.spec.raw",
            "{'a': 1}.a + 1 == 2 && [1, 2].map(x, x * 2)[0] > 1",
        ] {
            assert_eq!(issues(ok), None, "{ok}");
        }
    }

    #[test]
    fn references_to_fields_the_schema_lacks_are_reported_at_their_dot() {
        assert_eq!(
            issues("object.spec.replica > 1").as_deref(),
            Some(
                "ERROR: <input>:1:12: undefined field 'replica'\n | object.spec.replica > 1\n | ...........^"
            )
        );
        let found =
            issues("has(oldObject.metadata.nme) || object.spec.containers.exists(c, c.img == 'x')")
                .expect("two issues");
        // A has() test is pointed at as its macro: at the call's parenthesis.
        assert!(
            found.starts_with("ERROR: <input>:1:4: undefined field 'nme'\n"),
            "{found}"
        );
        assert!(
            found.contains("\nERROR: <input>:1:66: undefined field 'img'\n"),
            "{found}"
        );
        let found = issues("object.?spec.replica.orValue(1) > 0").expect("an issue");
        assert!(
            found.starts_with("ERROR: <input>:1:13: undefined field 'replica'"),
            "{found}"
        );
        // One report per field, however often it is met.
        let found = issues("object.sepc.replicas == object.sepc.replicas").expect("an issue");
        assert_eq!(found.matches("ERROR").count(), 1, "{found}");
    }

    #[test]
    fn operators_on_types_they_do_not_take_are_reported_at_the_operator() {
        assert_eq!(
            issues("object.spec.replicas + 'x' == 1").as_deref(),
            Some(
                "ERROR: <input>:1:22: found no matching overload for '_+_' applied to '(int, string)'\n | object.spec.replicas + 'x' == 1\n | .....................^"
            )
        );
        for (source, message, column) in [
            ("1 + 1.0 > 0", "'_+_' applied to '(int, double)'", 3),
            (
                "object.metadata.name - 1 == 0",
                "'_-_' applied to '(string, int)'",
                22,
            ),
            (
                "object.spec.paused && 1",
                "'_&&_' applied to '(bool, int)'",
                20,
            ),
            ("!object.spec.replicas", "'!_' applied to '(int)'", 1),
            (
                "object.spec.replicas == 'one'",
                "'_==_' applied to '(int, string)'",
                22,
            ),
            // The example of Kubernetes' documentation.
            (
                "object.spec.replicas == true",
                "'_==_' applied to '(int, bool)'",
                22,
            ),
            (
                "object.spec.ratio % 2.0 == 0.0",
                "'_%_' applied to '(double, double)'",
                19,
            ),
            ("'a' < 1", "'_<_' applied to '(string, int)'", 5),
            ("1 in ['a']", "'@in' applied to '(int, list(string))'", 3),
            (
                "['a'][1u] == ''",
                "'_[_]' applied to '(list(string), uint)'",
                6,
            ),
            (
                "object.metadata.labels[1] == ''",
                "'_[_]' applied to '(map(string, string), int)'",
                23,
            ),
            ("size(1) == 1", "'size' applied to '(int)'", 5),
            (
                "object.spec.replicas.size() == 1",
                "'size' applied to 'int.()'",
                26,
            ),
            (
                "object.spec.replicas ? 1 : 2",
                "'_?_:_' applied to '(int, int, int)'",
                22,
            ),
            (
                "[1] + ['a'] == []",
                "'_+_' applied to '(list(int), list(string))'",
                5,
            ),
        ] {
            let found = issues(source).unwrap_or_else(|| panic!("{source}: no issue"));
            let expected =
                format!("ERROR: <input>:1:{column}: found no matching overload for {message}\n");
            assert!(found.starts_with(&expected), "{source}: {found}");
        }
    }

    #[test]
    fn an_error_inside_does_not_make_errors_around_it() {
        let found = issues("object.spec.replica + 'x' == 1").expect("an issue");
        assert_eq!(found.matches("ERROR").count(), 1, "{found}");
        let found = issues("(1 + 'a') + 2 == 3").expect("an issue");
        assert_eq!(found.matches("ERROR").count(), 1, "{found}");
        // A dyn operand takes the type the other one asks for, as in cel-go.
        let found = issues("object.spec.raw.x + 'a' == 1").expect("an issue");
        assert!(
            found.starts_with("ERROR: <input>:1:25: found no matching overload for '_==_' applied to '(string, int)'"),
            "{found}"
        );
    }

    #[test]
    fn positions_count_characters_and_lines_of_the_source_as_written() {
        let found = issues("object.metadata.name == '😁' &&\n  object.spec.replicas + 'x' == 1")
            .expect("an issue");
        assert!(found.starts_with("ERROR: <input>:2:24: "), "{found}");
        let found = issues("'😁' + 1 == 'x' // a comment").expect("an issue");
        assert!(found.starts_with("ERROR: <input>:1:5: "), "{found}");
    }
}
