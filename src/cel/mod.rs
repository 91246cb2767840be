//! CEL, the expression language of ValidatingAdmissionPolicies, webhook `matchConditions` and
//! CRD `x-kubernetes-validations`, on the `cel-interpreter` crate.
//!
//! An expression is compiled once and cached by its text. Before it is cached its syntax tree is
//! checked and instrumented so that evaluation can neither panic nor run away: every loop of a
//! comprehension (`all`, `exists`, `map`, `filter`, ...) charges a per-evaluation budget and
//! checks a deadline, comprehensions over anything but a list or map fail cleanly, and trees too
//! deep to evaluate on a normal thread stack are refused at compile time. Upstream bounds cost by
//! static estimates plus a runtime cost limit; a loop budget is the part of that which matters for
//! a small server.
//!
//! # Layout
//! - `convert`: JSON objects to CEL values and back.
//! - `errors`: parse errors worded and pointed at as cel-go prints them.
//! - `incomplete`: expressions that end where an operand must follow (the parser panics).
//! - `library`: the Kubernetes CEL library functions berth supports beyond the CEL standard
//!   (strings, lists, regex, sets), registering those of the modules below.
//! - `opaque`: values of the library's own types (quantity, URL, authorizer checks).
//! - `optional`: optional values and the `?` syntax (`obj.?field`, `map[?key]`, `[?elem]`).
//! - `quantity`, `url`, `ip`, `authz`, `semver`, `format`: upstream's quantity, URL, IP/CIDR,
//!   authorizer, semver and named-format libraries.
//! - `positions`: where the nodes of a parsed expression sit in its source.
//! - `typecheck`: field references and operators checked against the schemas of the objects
//!   an expression will see.

pub mod authz;
mod convert;
mod errors;
mod format;
mod incomplete;
mod ip;
mod library;
mod opaque;
mod optional;
mod positions;
mod quantity;
mod semver;
pub mod typecheck;
mod url;

/// What the library modules' tests share: evaluating an expression with no variables.
#[cfg(test)]
pub(crate) mod test_support {
    use super::{compile, Activation};
    use cel_interpreter::Value;

    pub fn eval(source: &str) -> Result<Value, String> {
        compile(source)
            .map_err(|e| e.to_string())?
            .eval(&Activation::new())
            .map_err(|e| e.to_string())
    }

    /// Asserts that `source` evaluates to true.
    pub fn holds(source: &str) {
        assert_eq!(eval(source), Ok(Value::Bool(true)), "{source}");
    }
}

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use cel_interpreter::{Context, ExecutionError, FunctionContext, Value};
use cel_parser::ast::{CallExpr, EntryExpr, Expr, IdedExpr};

pub use authz::{Authorizer, Check as AuthzCheck, Decision as AuthzDecision, Subject};
pub use convert::{to_json, to_value};

/// Longer expressions are refused before parsing (upstream's limits keep real rules far below).
pub const MAX_SOURCE_LEN: usize = 10 * 1024;
/// Deeper syntax trees are refused: evaluation recurses once per level on the caller's stack.
pub const MAX_DEPTH: usize = 24;
/// Loop iterations one evaluation may run, over all its comprehensions together.
pub const MAX_ITERATIONS: u64 = 100_000;
/// Wall time one evaluation may take.
pub const MAX_TIME: Duration = Duration::from_millis(100);
/// Compiled programs kept; the cache is emptied when it grows past this (no hostile growth).
const CACHE_LIMIT: usize = 2048;
/// Parsing recurses deeply on nested input; it runs on its own thread with this much stack.
const PARSE_STACK: usize = 64 << 20;
/// The name of that thread.
const PARSE_THREAD: &str = "cel-parse";

/// The names of the functions the instrumentation inserts; `@` keeps them out of user reach.
const TICK: &str = "@berth_tick";
const ITERABLE: &str = "@berth_iterable";
/// Library namespaces whose functions are called as `namespace.function(..)`.
const NAMESPACES: [&str; 3] = ["sets", "optional", "format"];

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CelError {
    #[error(
        "compilation failed: expression is {0} characters long, the limit is {MAX_SOURCE_LEN}"
    )]
    TooLong(usize),
    #[error("compilation failed: expression nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("compilation failed: {0}")]
    Syntax(String),
    #[error("compilation failed: {0} is not supported")]
    Unsupported(&'static str),
    #[error("{0}")]
    Evaluation(String),
    #[error(
        "operation cancelled: actual cost limit exceeded (more than {MAX_ITERATIONS} iterations)"
    )]
    CostLimit,
    #[error("operation cancelled: evaluation took longer than {}ms", MAX_TIME.as_millis())]
    Timeout,
    #[error("no such key: {0}")]
    NoSuchKey(String),
}

/// A compiled, checked and instrumented expression.
#[derive(Debug)]
pub struct Program {
    source: String,
    /// The text the parser read, to place errors found after parsing.
    rewrite: optional::Rewrite,
    expr: IdedExpr,
}

/// The variables an evaluation sees, by name, and the authorizer `authorizer` asks.
#[derive(Default, Clone)]
pub struct Activation {
    variables: HashMap<String, Value>,
    authorizer: Option<Arc<dyn Authorizer>>,
}

impl Activation {
    pub fn new() -> Activation {
        Activation::default()
    }

    pub fn bind(&mut self, name: &str, value: Value) -> &mut Activation {
        self.variables.insert(name.to_string(), value);
        self
    }

    pub fn bind_json(&mut self, name: &str, value: Option<&serde_json::Value>) -> &mut Activation {
        let value = value.map(to_value).unwrap_or(Value::Null);
        self.bind(name, value)
    }

    /// Binds `name` to a map of values already evaluated (a policy's `variables`), keeping
    /// their CEL types: an optional stays an optional, as upstream's lazily bound variables do.
    pub fn bind_values<'a>(
        &mut self,
        name: &str,
        values: impl IntoIterator<Item = (&'a String, &'a Value)>,
    ) -> &mut Activation {
        let map = values
            .into_iter()
            .map(|(k, v)| (cel_interpreter::objects::Key::from(k.as_str()), v.clone()))
            .collect::<HashMap<_, _>>();
        self.bind(
            name,
            Value::Map(cel_interpreter::objects::Map { map: Arc::new(map) }),
        )
    }

    /// Binds `authorizer` for `subject`, its `requestResource` the request's resource.
    pub fn bind_authorizer(
        &mut self,
        subject: &Subject,
        request: Option<&AuthzCheck>,
        authorizer: Arc<dyn Authorizer>,
    ) -> &mut Activation {
        self.authorizer = Some(authorizer);
        self.bind("authorizer", authz::authorizer_value(subject, request))
    }
}

/// The compiled form of `source`, from the cache when it was compiled before.
pub fn compile(source: &str) -> Result<Arc<Program>, CelError> {
    static CACHE: LazyLock<Mutex<HashMap<String, Arc<Program>>>> = LazyLock::new(Default::default);
    if let Ok(cache) = CACHE.lock() {
        if let Some(program) = cache.get(source) {
            return Ok(program.clone());
        }
    }
    let program = Arc::new(compile_uncached(source)?);
    if let Ok(mut cache) = CACHE.lock() {
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(source.to_string(), program.clone());
    }
    Ok(program)
}

fn compile_uncached(source: &str) -> Result<Program, CelError> {
    if source.len() > MAX_SOURCE_LEN {
        return Err(CelError::TooLong(source.len()));
    }
    if nesting_depth(source) > MAX_DEPTH {
        return Err(CelError::TooDeep);
    }
    let rewrite = optional::desugar(source);
    let text = rewrite.text.clone();
    quiet_parser_panics();
    let parsed = std::thread::Builder::new()
        .name(PARSE_THREAD.into())
        .stack_size(PARSE_STACK)
        .spawn(move || {
            // The parse errors hold `Rc`s: only their positions and text leave the thread.
            cel_parser::Parser::new().parse(&text).map_err(|e| {
                e.errors
                    .iter()
                    .map(|e| (e.pos.0, e.pos.1, e.msg.clone()))
                    .collect::<Vec<_>>()
            })
        })
        .map_err(|e| CelError::Syntax(format!("no thread to parse on: {e}")))?
        .join()
        .map_err(|_| {
            // cel-parser panics where the input ends too early (`x +`): cel-go reports that
            // at the end of the input.
            let error = incomplete::trailing_operator(source)
                .unwrap_or_else(|| incomplete::end_of_input(source));
            CelError::Syntax(errors::display(source, vec![error]))
        })?;
    let mut expr = parsed.map_err(|found| {
        let located = found
            .into_iter()
            .map(|(line, column, message)| in_source(source, &rewrite, line, column, message))
            .collect();
        CelError::Syntax(errors::display(source, located))
    })?;
    optional::lower(&mut expr).map_err(CelError::Unsupported)?;
    check(&expr, 0)?;
    instrument(&mut expr);
    Ok(Program {
        source: source.to_string(),
        rewrite,
        expr,
    })
}

/// Keeps the panics of the parser's thread (caught, and reported as syntax errors) from being
/// printed by the default hook on every request; other threads' panics print as before.
fn quiet_parser_panics() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() != Some(PARSE_THREAD) {
                previous(info);
            }
        }));
    });
}

/// An error at `line`:`column` (1-based, in characters) of the rewritten text, placed where the
/// character it points at came from in `source`.
fn in_source(
    source: &str,
    rewrite: &optional::Rewrite,
    line: isize,
    column: isize,
    message: String,
) -> errors::Located {
    let (Ok(line), Ok(column)) = (usize::try_from(line), usize::try_from(column)) else {
        return errors::Located {
            line: 0,
            column: 0,
            message,
        };
    };
    // The character index in the rewritten text, then in the source.
    let before: usize = rewrite
        .text
        .split('\n')
        .take(line.saturating_sub(1))
        .map(|l| l.chars().count() + 1)
        .sum();
    let at = before + column.saturating_sub(1);
    let from = rewrite
        .origin
        .get(at)
        .copied()
        .unwrap_or_else(|| source.chars().count());
    positions::at_char(source, from, message)
}

/// How deeply brackets nest outside string literals: the parser recurses through a dozen
/// grammar rules per level, so deep nesting must be refused before parsing.
fn nesting_depth(source: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in source.chars() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(_) if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quote = Some(c),
                '(' | '[' | '{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                ')' | ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
    }
    deepest
}

/// Refuses what the interpreter cannot evaluate without panicking, and trees too deep.
fn check(expr: &IdedExpr, depth: usize) -> Result<(), CelError> {
    if depth > MAX_DEPTH {
        return Err(CelError::TooDeep);
    }
    let next = depth + 1;
    match &expr.expr {
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                check(target, next)?;
            }
            call.args.iter().try_for_each(|a| check(a, next))
        }
        Expr::Comprehension(c) => [&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step]
            .into_iter()
            .chain([&c.result])
            .try_for_each(|e| check(e, next)),
        Expr::Ident(_) | Expr::Literal(_) => Ok(()),
        Expr::List(list) => list.elements.iter().try_for_each(|e| check(e, next)),
        Expr::Map(map) => map.entries.iter().try_for_each(|entry| match &entry.expr {
            EntryExpr::MapEntry(e) if !e.optional => {
                check(&e.key, next)?;
                check(&e.value, next)
            }
            EntryExpr::MapEntry(_) => Err(CelError::Unsupported("an optional map entry")),
            EntryExpr::StructField(_) => Err(CelError::Unsupported("a message field")),
        }),
        Expr::Select(select) => check(&select.operand, next),
        Expr::Struct(_) => Err(CelError::Unsupported("a message construction")),
        Expr::Unspecified => Err(CelError::Syntax("incomplete expression".into())),
    }
}

/// Makes every comprehension charge the loop budget and refuse ranges it cannot iterate.
fn instrument(expr: &mut IdedExpr) {
    match &mut expr.expr {
        Expr::Call(call) => {
            if let Some(target) = &mut call.target {
                instrument(target);
            }
            call.args.iter_mut().for_each(instrument);
            // `sets.contains(a, b)` parses as a method call on an identifier `sets`; the
            // library registers it under its qualified name (so too `optional.of(x)` and
            // `format.dns1123Label()`).
            if let Some(IdedExpr {
                expr: Expr::Ident(ns),
                ..
            }) = call.target.as_deref()
            {
                if NAMESPACES.contains(&ns.as_str()) {
                    call.func_name = format!("{ns}.{}", call.func_name);
                    call.target = None;
                }
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
                instrument(e);
            }
            // The range is the call's target: evaluated once and handed over as `this`.
            let range = std::mem::take(&mut *c.iter_range);
            *c.iter_range = call(ITERABLE, Some(range), Vec::new());
            // `tick() && cond`: the budget is charged before each step.
            let cond = std::mem::take(&mut *c.loop_cond);
            *c.loop_cond = call("_&&_", None, vec![call(TICK, None, Vec::new()), cond]);
        }
        Expr::List(list) => list.elements.iter_mut().for_each(instrument),
        Expr::Map(map) => {
            for entry in &mut map.entries {
                if let EntryExpr::MapEntry(e) = &mut entry.expr {
                    instrument(&mut e.key);
                    instrument(&mut e.value);
                }
            }
        }
        Expr::Select(select) => instrument(&mut select.operand),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Struct(_) | Expr::Unspecified => {}
    }
}

fn call(func_name: &str, target: Option<IdedExpr>, args: Vec<IdedExpr>) -> IdedExpr {
    IdedExpr {
        id: 0,
        expr: Expr::Call(CallExpr {
            func_name: func_name.to_string(),
            target: target.map(Box::new),
            args,
        }),
    }
}

/// What one evaluation on this thread has spent. Evaluation is synchronous, so a thread-local
/// is exactly one evaluation's.
struct Budget {
    iterations: u64,
    deadline: Instant,
}

thread_local! {
    static BUDGET: Cell<Option<Budget>> = const { Cell::new(None) };
    /// Set by the instrumentation when it stops an evaluation, so the error says why.
    static STOPPED: Cell<Option<CelError>> = const { Cell::new(None) };
}

fn tick(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let over = BUDGET.with(|cell| {
        let mut budget = cell.take()?;
        budget.iterations += 1;
        let over = if budget.iterations > MAX_ITERATIONS {
            Some(CelError::CostLimit)
        } else if budget.iterations % 64 == 0 && Instant::now() > budget.deadline {
            Some(CelError::Timeout)
        } else {
            None
        };
        cell.set(Some(budget));
        over
    });
    match over {
        Some(e) => {
            STOPPED.with(|s| s.set(Some(e.clone())));
            Err(ftx.error(e))
        }
        None => Ok(Value::Bool(true)),
    }
}

fn iterable(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    match &ftx.this {
        Some(v @ (Value::List(_) | Value::Map(_))) => Ok(v.clone()),
        Some(other) => Err(ftx.error(format!(
            "cannot iterate over a value of type {}",
            convert::type_name(other)
        ))),
        None => Err(ftx.error("nothing to iterate over")),
    }
}

/// The functions every evaluation has; the variables are added in a child scope per evaluation.
static BASE: LazyLock<Context<'static>> = LazyLock::new(|| {
    let mut ctx = Context::default();
    ctx.add_function(TICK, tick);
    ctx.add_function(ITERABLE, iterable);
    library::register(&mut ctx);
    optional::register(&mut ctx);
    format::register(&mut ctx);
    ctx
});

impl Program {
    pub fn source(&self) -> &str {
        &self.source
    }

    /// `(node id, message)` errors found in this program, as cel-go displays them.
    fn display_errors(&self, found: Vec<(u64, String)>) -> String {
        errors::display(
            &self.source,
            positions::locate(&self.source, &self.rewrite, found),
        )
    }

    /// Evaluates with `activation`'s variables, within the loop budget and time limit.
    pub fn eval(&self, activation: &Activation) -> Result<Value, CelError> {
        let mut ctx = BASE.new_inner_scope();
        for (name, value) in &activation.variables {
            ctx.add_variable_from_value(name.clone(), value.clone());
        }
        BUDGET.with(|b| {
            b.set(Some(Budget {
                iterations: 0,
                deadline: Instant::now() + MAX_TIME,
            }))
        });
        STOPPED.with(|s| s.set(None));
        // The interpreter has a few `todo!()`s left for inputs the check cannot foresee; a
        // panic fails this evaluation instead of the request's task.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            authz::with_authorizer(activation.authorizer.clone(), || {
                Value::resolve(&self.expr, &ctx)
            })
        }));
        BUDGET.with(|b| b.set(None));
        let stopped = STOPPED.with(|s| s.take());
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) if stopped.is_some() => Err(stopped.unwrap_or(CelError::CostLimit)),
            Ok(Err(ExecutionError::NoSuchKey(key))) => Err(CelError::NoSuchKey(key.to_string())),
            Ok(Err(e)) => Err(CelError::Evaluation(e.to_string())),
            Err(_) => Err(CelError::Evaluation("internal error evaluating".into())),
        }
    }

    /// Evaluates to a bool, as validation rules and match conditions must.
    pub fn eval_bool(&self, activation: &Activation) -> Result<bool, CelError> {
        match self.eval(activation)? {
            Value::Bool(b) => Ok(b),
            other => Err(CelError::Evaluation(format!(
                "expression must evaluate to a bool, got {}",
                convert::type_name(&other)
            ))),
        }
    }

    /// Evaluates to a string, as `messageExpression`s must.
    pub fn eval_string(&self, activation: &Activation) -> Result<String, CelError> {
        match self.eval(activation)? {
            Value::String(s) => Ok(s.to_string()),
            other => Err(CelError::Evaluation(format!(
                "expression must evaluate to a string, got {}",
                convert::type_name(&other)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(source: &str, object: serde_json::Value) -> Result<Value, CelError> {
        let mut activation = Activation::new();
        activation.bind_json("object", Some(&object));
        compile(source)?.eval(&activation)
    }

    fn syntax_error(source: &str) -> String {
        match compile(source) {
            Err(CelError::Syntax(text)) => text,
            other => panic!("{source}: {other:?}"),
        }
    }

    const ANY_EXPR: &str = "{'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}";

    #[test]
    fn parse_errors_read_as_cel_go_prints_them() {
        // Cases from cel-go's parser tests, with upstream's exact text.
        assert_eq!(
            syntax_error("a | b"),
            "ERROR: <input>:1:3: Syntax error: token recognition error at: '| '\n | a | b\n | ..^\n\
             ERROR: <input>:1:5: Syntax error: extraneous input 'b' expecting <EOF>\n | a | b\n | ....^"
        );
        assert_eq!(
            syntax_error("{\"a\": 1}.\"a\""),
            "ERROR: <input>:1:10: Syntax error: no viable alternative at input '.\"a\"'\n | {\"a\": 1}.\"a\"\n | .........^"
        );
        assert_eq!(
            CelError::Syntax(syntax_error("x == 1 )")).to_string(),
            "compilation failed: ERROR: <input>:1:8: Syntax error: extraneous input ')' expecting <EOF>\n | x == 1 )\n | .......^"
        );
    }

    #[test]
    fn a_trailing_operator_is_reported_at_the_end_of_the_input() {
        // cel-go's text for these; cel-parser itself panics on them.
        for (source, column) in [("x +", 4), ("a &&", 5), ("x ? y :", 8), ("a in ", 6)] {
            let caret = format!("{}^", ".".repeat(column - 1));
            assert_eq!(
                syntax_error(source),
                format!(
                    "ERROR: <input>:1:{column}: Syntax error: mismatched input '<EOF>' expecting {ANY_EXPR}\n | {source}\n | {caret}"
                )
            );
        }
        let on_a_new_line = syntax_error("x ==\n");
        assert!(
            on_a_new_line.starts_with("ERROR: <input>:2:1: "),
            "{on_a_new_line}"
        );
    }

    /// The line and column of each error in a displayed error list.
    fn positions(text: &str) -> Vec<Option<(usize, usize)>> {
        text.lines()
            .filter(|l| l.starts_with("ERROR"))
            .map(|line| {
                let (l, c) = line
                    .strip_prefix("ERROR: <input>:")?
                    .split(": ")
                    .next()?
                    .split_once(':')?;
                Some((l.parse().ok()?, c.parse().ok()?))
            })
            .collect()
    }

    #[test]
    fn truncated_and_garbled_expressions_fail_with_a_positioned_error() {
        let valid = [
            "object.spec.replicas <= 5 && object.metadata.name.startsWith('web-')",
            "self.items.all(i, i.port > 0 && i.port < 65536) ? 'ok' : \"bad\"",
            "has(object.spec.x) || [1, 2, 3].exists(n, n % 2 == 0 && -n < 0)",
            "{'a': 1, 'b': 2}['a'] + size(b'xyz') * 2 != 7u || 'x' in ['y']",
            "object.?spec.?replicas.orValue(1) >= 1 && !(1.5 / 2.0 > 0.1)",
            "r'raw\\' + '''tri\nple''' == \"x\" // comment",
        ];
        let mut inputs: Vec<String> = Vec::new();
        for source in valid {
            let chars: Vec<char> = source.chars().collect();
            for end in 0..chars.len() {
                inputs.push(chars[..end].iter().collect());
            }
            for at in 0..chars.len() {
                let mut dropped = chars.clone();
                dropped.remove(at);
                inputs.push(dropped.iter().collect());
                let mut doubled = chars.clone();
                doubled.insert(at, chars[at]);
                inputs.push(doubled.iter().collect());
            }
        }
        let mut failed = 0;
        for input in &inputs {
            let Err(CelError::Syntax(text)) = compile(input) else {
                continue;
            };
            failed += 1;
            let found = positions(&text);
            assert!(!found.is_empty(), "{input:?}: {text}");
            assert!(
                found
                    .iter()
                    .all(|p| matches!(p, Some((l, c)) if *l >= 1 && *c >= 1)),
                "{input:?}: {text}"
            );
        }
        assert!(failed > inputs.len() / 4, "{failed} of {}", inputs.len());
    }

    #[test]
    fn parse_errors_point_into_the_source_as_written_around_optional_syntax() {
        // The parser sees `object.__berth_opt__spec == == 1`; the user wrote `object.?spec`.
        assert_eq!(
            syntax_error("object.?spec == == 1"),
            format!(
                "ERROR: <input>:1:17: Syntax error: extraneous input '==' expecting {ANY_EXPR}\n | object.?spec == == 1\n | ................^"
            )
        );
    }

    #[test]
    fn backticked_field_names_select_fields_that_are_not_identifiers() {
        let object = json!({"metadata": {"labels": {"app.kubernetes.io/name": "web", "a-b": "1"}}});
        let yes = |s: &str| eval(s, object.clone());
        assert_eq!(
            yes("object.metadata.labels.`app.kubernetes.io/name` == 'web'"),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            yes("has(object.metadata.labels.`a-b`)"),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            yes("has(object.metadata.labels.`c-d`)"),
            Ok(Value::Bool(false))
        );
        assert_eq!(
            yes("object.metadata.labels.?`a-b`.orValue('none') == '1'"),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            yes("object.metadata.labels.? `c-d`.orValue('none') == 'none'"),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            yes("object.?metadata.?labels.?`app.kubernetes.io/name`.hasValue()"),
            Ok(Value::Bool(true))
        );
    }

    #[test]
    fn rules_over_an_object_see_its_fields_as_cel_values() {
        let deployment = json!({"spec": {"replicas": 6, "template": {"spec": {"containers": [
            {"name": "a", "image": "registry.example/a:1"},
            {"name": "b", "image": "busybox"}
        ]}}}});
        let yes = |s: &str| eval(s, deployment.clone());
        assert_eq!(yes("object.spec.replicas <= 5"), Ok(Value::Bool(false)));
        assert_eq!(yes("object.spec.replicas > 5"), Ok(Value::Bool(true)));
        assert_eq!(yes("has(object.spec.replicas)"), Ok(Value::Bool(true)));
        assert_eq!(yes("has(object.spec.paused)"), Ok(Value::Bool(false)));
        assert_eq!(
            yes("object.spec.template.spec.containers.all(c, c.name.matches('^[a-z]+$'))"),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            yes("object.spec.template.spec.containers.exists(c, c.image.startsWith('registry.example/'))"),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            yes("size(object.spec.template.spec.containers.filter(c, c.image == 'busybox'))"),
            Ok(Value::Int(1))
        );
        assert_eq!(
            yes("object.spec.template.spec.containers.map(c, c.name)"),
            Ok(to_value(&json!(["a", "b"])))
        );
    }

    #[test]
    fn a_missing_field_is_an_error_naming_the_key() {
        let err = eval("object.spec.replicas > 1", json!({"metadata": {}})).unwrap_err();
        assert_eq!(err, CelError::NoSuchKey("spec".into()));
        assert_eq!(err.to_string(), "no such key: spec");
    }

    #[test]
    fn syntax_errors_are_reported_at_compile_time() {
        let err = compile("object.spec.replicas <=").unwrap_err();
        assert!(matches!(err, CelError::Syntax(_)), "{err:?}");
        assert!(err.to_string().starts_with("compilation failed: "));
        assert!(matches!(
            compile("Foo{a: 1}"),
            Err(CelError::Unsupported(_))
        ));
    }

    #[test]
    fn compiled_programs_are_cached_by_their_text() {
        let a = compile("1 + 1 == 2").expect("compiles");
        let b = compile("1 + 1 == 2").expect("compiles");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.source(), "1 + 1 == 2");
    }

    #[test]
    fn a_hostile_nested_loop_stops_at_the_cost_limit() {
        let source = "[0,1,2,3,4,5,6,7,8,9].all(a, [0,1,2,3,4,5,6,7,8,9].all(b, \
                      [0,1,2,3,4,5,6,7,8,9].all(c, [0,1,2,3,4,5,6,7,8,9].all(d, \
                      [0,1,2,3,4,5,6,7,8,9].all(e, [0,1,2,3,4,5,6,7,8,9].all(f, true))))))";
        let started = Instant::now();
        let err = eval(source, json!({})).unwrap_err();
        assert!(
            matches!(err, CelError::CostLimit | CelError::Timeout),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // The next evaluation on this thread starts with a fresh budget.
        assert_eq!(
            eval("[1,2,3].all(x, x > 0)", json!({})),
            Ok(Value::Bool(true))
        );
    }

    #[test]
    fn a_comprehension_over_a_scalar_fails_instead_of_panicking() {
        let err = eval("object.n.all(x, x > 0)", json!({"n": 3})).unwrap_err();
        assert!(err.to_string().contains("cannot iterate"), "{err}");
    }

    #[test]
    fn overlong_and_overdeep_expressions_are_refused() {
        let long = "1 == 1 && ".repeat(2000) + "true";
        assert!(matches!(compile(&long), Err(CelError::TooLong(_))));
        let deep = format!("{}1{}", "(".repeat(500), ")".repeat(500));
        assert_eq!(compile(&deep).unwrap_err(), CelError::TooDeep);
        assert!(compile("'((((((((((((((((((((((((((((((((((((((((((((((((((((' == ''").is_ok());
        let chain = "1 + ".repeat(200) + "1";
        assert_eq!(compile(&chain).unwrap_err(), CelError::TooDeep);
        let list = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(compile(&list).unwrap_err(), CelError::TooDeep);
    }

    #[test]
    fn the_deepest_allowed_expression_evaluates_on_a_small_stack() {
        // Tokio's worker threads have 2 MiB, and evaluation runs on them.
        let chain = "1 + ".repeat(MAX_DEPTH - 2) + "1";
        let program = compile(&chain).expect("compiles");
        let result = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || program.eval(&Activation::new()))
            .expect("thread")
            .join()
            .expect("no stack overflow");
        assert_eq!(result, Ok(Value::Int(MAX_DEPTH as i64 - 1)));
    }

    #[test]
    fn bool_and_string_results_are_checked() {
        let program = compile("'a' + 'b'").expect("compiles");
        assert_eq!(program.eval_string(&Activation::new()), Ok("ab".into()));
        let err = program.eval_bool(&Activation::new()).unwrap_err();
        assert!(err.to_string().contains("must evaluate to a bool"), "{err}");
    }
}
