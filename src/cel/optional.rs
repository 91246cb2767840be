//! CEL's optional values and syntax, as Kubernetes enables them for policies and CRD rules:
//! `obj.?field`, `map[?key]`, `[?elem]`, `{?key: opt}`, `optional.of/none/ofNonZeroValue`,
//! `.hasValue()`, `.value()`, `.orValue(x)`, `.or(opt)`.
//!
//! The parser refuses the `?` forms, so the source is rewritten first into syntax it accepts
//! (a marker prefix on the field name, a marker call around the key or element) and the parsed
//! tree is then lowered into calls of this module's functions. As upstream, selecting or
//! indexing an optional value yields an optional: `obj.?a.b[?'c']` is none as soon as one step
//! is missing.

use std::sync::Arc;

use cel_interpreter::objects::{Key, Map};
use cel_interpreter::{Context, ExecutionError, FunctionContext, Value};
use cel_parser::ast::{CallExpr, EntryExpr, Expr, IdedExpr};
use cel_parser::reference::Val;

use super::opaque;

/// Put before the field of a `.?` select by the source rewrite.
const FIELD_MARK: &str = "__berth_opt__";
/// Wraps the key of `[?key]`, an element of `[?elem]` or a key of `{?key: v}` in the rewrite.
const WRAP_MARK: &str = "__berth_opt__";

/// The functions the lowering calls; `@` keeps them out of user reach.
pub const SELECT: &str = "@berth_opt_select";
pub const INDEX: &str = "@berth_opt_index";
const LIST: &str = "@berth_opt_list";
const MAP: &str = "@berth_opt_map";
const ELEMENT: &str = "@berth_opt_element";
const OR: &str = "@berth_opt_or";
pub const OR_VALUE: &str = "@berth_opt_or_value";

const TYPE: &str = "optional_type";

pub fn register(ctx: &mut Context<'static>) {
    ctx.add_function(SELECT, select);
    ctx.add_function(INDEX, index);
    ctx.add_function(LIST, list);
    ctx.add_function(MAP, map);
    ctx.add_function("optional.of", of);
    ctx.add_function("optional.none", |_: &FunctionContext| Ok(none()));
    ctx.add_function("optional.ofNonZeroValue", of_non_zero_value);
    ctx.add_function("hasValue", has_value);
    ctx.add_function("value", value);
    ctx.add_function(OR_VALUE, or_value);
    ctx.add_function(OR, or);
    // Evaluated (and ignored) before `@berth_opt_list` runs when it is the only element.
    ctx.add_function(ELEMENT, |ftx: &FunctionContext| arg(ftx, 0));
}

/// A rewritten source, and for each of its characters the index of the source character it
/// came from (so parse errors can point into the source the user wrote).
#[derive(Debug, Default)]
pub struct Rewrite {
    pub text: String,
    pub origin: Vec<usize>,
}

impl Rewrite {
    fn push(&mut self, c: char, from: usize) {
        self.text.push(c);
        self.origin.push(from);
    }

    fn push_str(&mut self, s: &str, from: usize) {
        for c in s.chars() {
            self.push(c, from);
        }
    }
}

/// `source` with the optional forms spelled in syntax the parser accepts; unchanged when it
/// has none.
pub fn desugar(source: &str) -> Rewrite {
    if !source.contains('?') {
        return Rewrite {
            text: source.to_string(),
            origin: (0..source.chars().count()).collect(),
        };
    }
    let chars: Vec<char> = source.chars().collect();
    let mut out = Rewrite::default();
    // Open brackets, and whether the current element (or key) of each was wrapped.
    let mut open: Vec<(char, bool)> = Vec::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let next_is_question = |from: usize| -> Option<usize> {
        let mut i = from;
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        (i < chars.len() && chars[i] == '?').then_some(i)
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = quote {
            out.push(c, i);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        match c {
            '\'' | '"' => {
                quote = Some(c);
                out.push(c, i);
            }
            '.' => {
                out.push('.', i);
                if let Some(q) = next_is_question(i + 1) {
                    i = q + 1;
                    while i < chars.len() && chars[i].is_whitespace() {
                        i += 1;
                    }
                    // A backticked name (`.?`a-b``) keeps its quotes, the mark inside them.
                    if chars.get(i) == Some(&'`') {
                        out.push('`', i);
                        i += 1;
                    }
                    out.push_str(FIELD_MARK, i);
                    continue;
                }
            }
            '[' | '{' | ',' => {
                let close_wrapped = c == ',' && open.last().is_some_and(|(_, w)| *w);
                if close_wrapped {
                    out.push(')', i);
                }
                out.push(c, i);
                let bracket = match c {
                    ',' => open.last().map(|(b, _)| *b),
                    b => {
                        open.push((b, false));
                        Some(b)
                    }
                };
                let wrapped = match (bracket, next_is_question(i + 1)) {
                    (Some('[' | '{'), Some(q)) => {
                        out.push_str(WRAP_MARK, i);
                        out.push('(', i);
                        i = q;
                        true
                    }
                    _ => false,
                };
                if let Some(top) = open.last_mut() {
                    top.1 = wrapped;
                }
            }
            '(' => {
                open.push(('(', false));
                out.push(c, i);
            }
            ':' => {
                // The key of a `{?key: value}` entry ends here.
                if let Some(top) = open.last_mut().filter(|(b, w)| *b == '{' && *w) {
                    top.1 = false;
                    out.push(')', i);
                }
                out.push(c, i);
            }
            ')' | ']' | '}' => {
                if open.pop().is_some_and(|(_, w)| w) {
                    out.push(')', i);
                }
                out.push(c, i);
            }
            _ => out.push(c, i),
        }
        i += 1;
    }
    out
}

/// Turns the rewrite's markers in `expr` into calls of this module's functions; an optional
/// select or index whose operand is optional propagates it. Errors name a `?` form left where
/// CEL does not allow one.
pub fn lower(expr: &mut IdedExpr) -> Result<(), &'static str> {
    match &mut expr.expr {
        Expr::Call(call) => {
            let optional_key = call.func_name == "_[_]"
                && call.args.len() == 2
                && unwrap_marker(&mut call.args[1]);
            if let Some(target) = &mut call.target {
                lower(target)?;
            }
            for arg in &mut call.args {
                lower(arg)?;
            }
            if call.func_name == WRAP_MARK && call.target.is_none() {
                return Err("the '?' syntax here");
            }
            if call.func_name == "_[_]"
                && call.args.len() == 2
                && (optional_key || is_optional(&call.args[0]))
            {
                call.func_name = INDEX.to_string();
            }
            // The interpreter evaluates the only argument of any call before the call, so the
            // lazy alternatives become the second of two arguments.
            if matches!(call.func_name.as_str(), "or" | "orValue") && call.args.len() == 1 {
                if let Some(target) = call.target.take() {
                    call.func_name = if call.func_name == "or" { OR } else { OR_VALUE }.into();
                    call.args.insert(0, *target);
                }
            }
        }
        Expr::Select(select) => {
            lower(&mut select.operand)?;
            // The parser keeps the quotes of a backticked field name (`obj.`a-b``).
            if let Some(name) = select
                .field
                .strip_prefix('`')
                .and_then(|f| f.strip_suffix('`'))
            {
                select.field = name.to_string();
            }
            let marked = select.field.strip_prefix(FIELD_MARK).map(str::to_string);
            if select.test {
                if marked.is_some() {
                    return Err("an optional select inside has()");
                }
                return Ok(());
            }
            if marked.is_some() || is_optional(&select.operand) {
                let field = marked.unwrap_or_else(|| select.field.clone());
                let operand = std::mem::take(&mut *select.operand);
                expr.expr = call(SELECT, vec![operand, string_literal(&field)]);
            }
        }
        Expr::List(list) => {
            let mut any = false;
            for element in &mut list.elements {
                let optional = unwrap_marker(element);
                lower(element)?;
                if optional {
                    *element = wrap(ELEMENT, std::mem::take(element));
                    any = true;
                }
            }
            if any {
                let elements = std::mem::take(&mut list.elements);
                expr.expr = call(LIST, elements);
            }
        }
        Expr::Map(map) => {
            let mut any = false;
            for entry in &mut map.entries {
                if let EntryExpr::MapEntry(e) = &mut entry.expr {
                    let optional = unwrap_marker(&mut e.key);
                    lower(&mut e.key)?;
                    lower(&mut e.value)?;
                    if optional {
                        e.key = wrap(ELEMENT, std::mem::take(&mut e.key));
                        any = true;
                    }
                }
            }
            if any {
                let mut args = Vec::with_capacity(map.entries.len() * 2);
                for entry in std::mem::take(&mut map.entries) {
                    if let EntryExpr::MapEntry(e) = entry.expr {
                        args.push(e.key);
                        args.push(e.value);
                    }
                }
                expr.expr = call(MAP, args);
            }
        }
        Expr::Comprehension(c) => {
            for e in [
                &mut c.iter_range,
                &mut c.accu_init,
                &mut c.loop_cond,
                &mut c.loop_step,
                &mut c.result,
            ] {
                lower(e)?;
            }
        }
        Expr::Ident(_) | Expr::Literal(_) | Expr::Struct(_) | Expr::Unspecified => {}
    }
    Ok(())
}

/// Replaces a `__berth_opt__(x)` marker by `x`; true when there was one.
fn unwrap_marker(expr: &mut IdedExpr) -> bool {
    match &mut expr.expr {
        Expr::Call(c) if c.func_name == WRAP_MARK && c.target.is_none() && c.args.len() == 1 => {
            let inner = c.args.remove(0);
            *expr = inner;
            true
        }
        _ => false,
    }
}

/// Whether `expr` certainly evaluates to an optional value.
fn is_optional(expr: &IdedExpr) -> bool {
    match &expr.expr {
        Expr::Call(c) => match (c.target.as_deref(), c.func_name.as_str()) {
            (None, SELECT | INDEX) => true,
            (
                Some(IdedExpr {
                    expr: Expr::Ident(ns),
                    ..
                }),
                _,
            ) => ns == "optional",
            (None, OR) => true,
            _ => false,
        },
        _ => false,
    }
}

fn call(func_name: &str, args: Vec<IdedExpr>) -> Expr {
    Expr::Call(CallExpr {
        func_name: func_name.to_string(),
        target: None,
        args,
    })
}

fn wrap(func_name: &str, inner: IdedExpr) -> IdedExpr {
    IdedExpr {
        id: inner.id,
        expr: call(func_name, vec![inner]),
    }
}

fn string_literal(s: &str) -> IdedExpr {
    IdedExpr {
        id: 0,
        expr: Expr::Literal(Val::String(s.to_string())),
    }
}

pub fn some(value: Value) -> Value {
    opaque::object(TYPE, [("value", value)])
}

pub fn none() -> Value {
    opaque::object(TYPE, [])
}

/// `Some(inner)` for an optional value (`inner` None when it is empty), None for others.
fn as_optional(value: &Value) -> Option<Option<&Value>> {
    (opaque::type_of(value) == Some(TYPE)).then(|| opaque::field(value, TYPE, "value"))
}

fn arg(ftx: &FunctionContext, i: usize) -> Result<Value, ExecutionError> {
    match ftx.args.get(i) {
        Some(a) => ftx.resolve(a.clone()),
        None => Err(ftx.error("missing argument")),
    }
}

fn receiver(ftx: &FunctionContext) -> Result<Option<Value>, ExecutionError> {
    let this = ftx
        .this
        .as_ref()
        .ok_or_else(|| ftx.error("missing receiver"))?;
    match as_optional(this) {
        Some(inner) => Ok(inner.cloned()),
        None => Err(ftx.error(format!(
            "no such overload: the receiver is a {}, not an optional",
            super::convert::type_name(this)
        ))),
    }
}

/// The content of the optional first argument.
fn first_optional(ftx: &FunctionContext) -> Result<Option<Value>, ExecutionError> {
    let first = arg(ftx, 0)?;
    match as_optional(&first) {
        Some(inner) => Ok(inner.cloned()),
        None => Err(ftx.error(format!(
            "no such overload: the receiver is a {}, not an optional",
            super::convert::type_name(&first)
        ))),
    }
}

/// The operand of an optional step: `Ok(None)` when it is an empty optional.
fn operand(ftx: &FunctionContext) -> Result<Option<Value>, ExecutionError> {
    let operand = arg(ftx, 0)?;
    Ok(match as_optional(&operand) {
        Some(inner) => inner.cloned(),
        None => Some(operand),
    })
}

fn select(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let Some(operand) = operand(ftx)? else {
        return Ok(none());
    };
    let field = arg(ftx, 1)?;
    lookup(ftx, &operand, field)
}

fn index(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let Some(operand) = operand(ftx)? else {
        return Ok(none());
    };
    let key = arg(ftx, 1)?;
    lookup(ftx, &operand, key)
}

fn lookup(ftx: &FunctionContext, container: &Value, key: Value) -> Result<Value, ExecutionError> {
    let found = match (container, &key) {
        (Value::Map(map), Value::String(_) | Value::Int(_) | Value::UInt(_) | Value::Bool(_)) => {
            let key: Key = key
                .clone()
                .try_into()
                .map_err(|_| ftx.error("unsupported key"))?;
            map.map.get(&key).cloned()
        }
        (Value::List(items), Value::Int(i)) => {
            usize::try_from(*i).ok().and_then(|i| items.get(i)).cloned()
        }
        (Value::List(items), Value::UInt(i)) => {
            usize::try_from(*i).ok().and_then(|i| items.get(i)).cloned()
        }
        // An explicit JSON null has no fields.
        (Value::Null, _) => None,
        (other, key) => {
            return Err(ftx.error(format!(
                "no such overload: {}[?{}]",
                super::convert::type_name(other),
                super::convert::type_name(key)
            )))
        }
    };
    Ok(found.map(some).unwrap_or_else(none))
}

/// `[a, ?b]`: the optional elements only when they hold a value.
fn list(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let mut out = Vec::with_capacity(ftx.args.len());
    for expr in &ftx.args {
        match optional_element(ftx, expr)? {
            Element::Plain(v) | Element::Present(v) => out.push(v),
            Element::Absent => {}
        }
    }
    Ok(Value::List(Arc::new(out)))
}

/// `{k: v, ?k2: opt}`: the optional entries only when their value is present.
fn map(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let mut out = std::collections::HashMap::new();
    for pair in ftx.args.chunks(2) {
        let [key_expr, value_expr] = pair else {
            return Err(ftx.error("a map entry without a value"));
        };
        let (key, optional) = match &key_expr.expr {
            Expr::Call(c) if c.func_name == ELEMENT && c.args.len() == 1 => {
                (ftx.resolve(c.args[0].clone())?, true)
            }
            _ => (ftx.resolve(key_expr.clone())?, false),
        };
        let key: Key = key.try_into().map_err(|v: Value| {
            ftx.error(format!(
                "unsupported key type {}",
                super::convert::type_name(&v)
            ))
        })?;
        let value = ftx.resolve(value_expr.clone())?;
        if optional {
            match as_optional(&value) {
                Some(Some(v)) => {
                    out.insert(key, v.clone());
                }
                Some(None) => {}
                None => return Err(ftx.error("an optional entry's value must be an optional")),
            }
        } else {
            out.insert(key, value);
        }
    }
    Ok(Value::Map(Map { map: Arc::new(out) }))
}

enum Element {
    Plain(Value),
    Present(Value),
    Absent,
}

fn optional_element(
    ftx: &FunctionContext,
    expr: &cel_parser::Expression,
) -> Result<Element, ExecutionError> {
    match &expr.expr {
        Expr::Call(c) if c.func_name == ELEMENT && c.target.is_none() && c.args.len() == 1 => {
            let value = ftx.resolve(c.args[0].clone())?;
            match as_optional(&value) {
                Some(Some(v)) => Ok(Element::Present(v.clone())),
                Some(None) => Ok(Element::Absent),
                None => Err(ftx.error("an optional element must be an optional")),
            }
        }
        _ => Ok(Element::Plain(ftx.resolve(expr.clone())?)),
    }
}

fn of(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    Ok(some(arg(ftx, 0)?))
}

fn of_non_zero_value(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let value = arg(ftx, 0)?;
    let zero = match &value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Int(i) => *i == 0,
        Value::UInt(u) => *u == 0,
        Value::Float(f) => *f == 0.0,
        Value::String(s) => s.is_empty(),
        Value::Bytes(b) => b.is_empty(),
        Value::List(l) => l.is_empty(),
        Value::Map(m) => m.map.is_empty(),
        Value::Function(..) => false,
    };
    Ok(if zero { none() } else { some(value) })
}

fn has_value(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    Ok(Value::Bool(receiver(ftx)?.is_some()))
}

fn value(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    receiver(ftx)?.ok_or_else(|| ftx.error("optional.none() dereference"))
}

/// The alternative is evaluated only when needed, as upstream short-circuits.
/// `a.orValue(b)`, lowered to `@berth_opt_or_value(a, b)`.
fn or_value(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    match first_optional(ftx)? {
        Some(v) => Ok(v),
        None => arg(ftx, 1),
    }
}

/// `a.or(b)`, lowered to `@berth_opt_or(a, b)`.
fn or(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    if let Some(v) = first_optional(ftx)? {
        return Ok(some(v));
    }
    let alternative = arg(ftx, 1)?;
    match as_optional(&alternative) {
        Some(_) => Ok(alternative),
        None => Err(ftx.error("no such overload: or() needs an optional")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cel::{compile, to_value, Activation, CelError};
    use serde_json::json;

    fn eval(source: &str) -> Result<Value, CelError> {
        let object = json!({"metadata": {"name": "a", "labels": {"team": "blue"}},
            "spec": {"ports": [80, 443], "empty": "", "nothing": null}});
        let mut activation = Activation::new();
        activation.bind_json("object", Some(&object));
        compile(source)?.eval(&activation)
    }

    fn yes(source: &str) {
        assert_eq!(eval(source), Ok(Value::Bool(true)), "{source}");
    }

    #[test]
    fn the_rewrite_leaves_expressions_without_optional_syntax_alone() {
        for s in [
            "a ? b : c",
            "x[1] == 'a?b'",
            "{'?': [1, 2]}",
            "f(a, b) ? [1] : {}",
        ] {
            assert_eq!(desugar(s).text, s);
        }
        assert_eq!(desugar("a.?b").text, "a.__berth_opt__b");
        assert_eq!(desugar("m[?'k']").text, "m[__berth_opt__('k')]");
        assert_eq!(desugar("[1, ?x, y]").text, "[1,__berth_opt__(x), y]");
        assert_eq!(desugar("{?'k': v}").text, "{__berth_opt__('k'): v}");
    }

    #[test]
    fn an_optional_select_is_a_value_when_the_field_exists_and_none_when_not() {
        yes("object.?metadata.name == optional.of('a')");
        yes("object.?metadata.namespace == optional.none()");
        yes("!object.?spec.replicas.hasValue()");
        yes("object.?metadata.?name.value() == 'a'");
        yes("object.?status.phase.orValue('Pending') == 'Pending'");
    }

    #[test]
    fn selecting_and_indexing_an_optional_stays_optional() {
        yes("object.?metadata.labels['team'] == optional.of('blue')");
        yes("object.?metadata.labels.team.orValue('none') == 'blue'");
        yes("object.?status.conditions[0].type.orValue('x') == 'x'");
    }

    #[test]
    fn an_optional_index_works_on_maps_and_lists() {
        yes("object.metadata.labels[?'team'].orValue('none') == 'blue'");
        yes("object.metadata.labels[?'tier'].orValue('none') == 'none'");
        yes("object.spec.ports[?1] == optional.of(443)");
        yes("object.spec.ports[?2] == optional.none()");
        yes("object.spec.ports[?-1] == optional.none()");
        yes("object.?metadata.labels[?'team'].orValue('none') == 'blue'");
        yes("object.?metadata.annotations[?'team'].orValue('none') == 'none'");
    }

    #[test]
    fn optional_elements_and_entries_appear_only_when_present() {
        assert_eq!(
            eval("[1, ?optional.of(2), ?optional.none(), ?object.spec.ports[?0]]"),
            Ok(to_value(&json!([1, 2, 80])))
        );
        assert_eq!(
            eval("{'a': 1, ?'b': optional.none(), ?'c': object.?metadata.name}"),
            Ok(to_value(&json!({"a": 1, "c": "a"})))
        );
        assert!(eval("[?1]").is_err());
    }

    #[test]
    fn the_optional_functions_work_as_upstream_documents_them() {
        yes("optional.of(1).hasValue() && !optional.none().hasValue()");
        yes("optional.ofNonZeroValue('') == optional.none()");
        yes("optional.ofNonZeroValue(0) == optional.none()");
        yes("optional.ofNonZeroValue([1]).value() == [1]");
        yes("optional.none().or(optional.of(2)).value() == 2");
        yes("optional.of(1).or(optional.of(2)).value() == 1");
        yes("optional.none().orValue(3) == 3");
        // The alternative is not evaluated when a value is present.
        yes("optional.of(1).orValue(object.missing.field) == 1");
        let err = eval("optional.none().value()").unwrap_err();
        assert!(
            err.to_string().contains("optional.none() dereference"),
            "{err}"
        );
    }

    #[test]
    fn misplaced_optional_syntax_is_a_compile_error() {
        assert!(compile("f(?a)").is_err());
        assert!(compile("has(a.?b)").is_err());
        assert!(compile("__berth_opt__(1)").is_err());
    }
}
