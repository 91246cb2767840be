//! The Kubernetes CEL library functions berth adds to the CEL standard ones (`size`,
//! `contains`, `startsWith`, `endsWith`, `matches`, `has`, `all`, `exists`, `exists_one`, `map`,
//! `filter` come with the interpreter): the string extensions, upstream's `lists`, `regex` and
//! `sets` libraries, and (in their own modules) `quantity`, `url`, `ip`/`cidr`, `authorizer`
//! and `semver`.

use std::sync::Arc;

use cel_interpreter::extractors::This;
use cel_interpreter::{Context, ExecutionError, FunctionContext, Value};

pub fn register(ctx: &mut Context<'static>) {
    ctx.add_function("lowerAscii", lower_ascii);
    ctx.add_function("upperAscii", upper_ascii);
    ctx.add_function("trim", trim);
    ctx.add_function("split", split);
    ctx.add_function("join", join);
    ctx.add_function("replace", replace);
    ctx.add_function("indexOf", index_of);
    ctx.add_function("lastIndexOf", last_index_of);
    ctx.add_function("charAt", char_at);
    ctx.add_function("substring", substring);
    // lists
    ctx.add_function("isSorted", is_sorted);
    ctx.add_function("sum", sum);
    ctx.add_function("min", min);
    ctx.add_function("max", max);
    // regex
    ctx.add_function("find", find);
    ctx.add_function("findAll", find_all);
    // sets (`sets.contains(a, b)` is rewritten to a call of `sets.contains` at compile time)
    ctx.add_function("sets.contains", sets_contains);
    ctx.add_function("sets.equivalent", sets_equivalent);
    ctx.add_function("sets.intersects", sets_intersects);

    ctx.add_function("quantity", super::quantity::quantity);
    ctx.add_function("isQuantity", super::quantity::is_quantity);
    ctx.add_function("sign", super::quantity::sign);
    ctx.add_function("isInteger", super::quantity::is_integer);
    ctx.add_function("asInteger", super::quantity::as_integer);
    ctx.add_function("asApproximateFloat", super::quantity::as_approximate_float);
    ctx.add_function("add", super::quantity::add);
    ctx.add_function("sub", super::quantity::sub);
    // The comparisons are shared by quantities and semvers.
    ctx.add_function("compareTo", |ftx: &FunctionContext| {
        if super::semver::is_receiver(ftx) {
            super::semver::compare_to(ftx)
        } else {
            super::quantity::compare_to(ftx)
        }
    });
    ctx.add_function("isGreaterThan", |ftx: &FunctionContext| {
        if super::semver::is_receiver(ftx) {
            super::semver::is_greater_than(ftx)
        } else {
            super::quantity::is_greater_than(ftx)
        }
    });
    ctx.add_function("isLessThan", |ftx: &FunctionContext| {
        if super::semver::is_receiver(ftx) {
            super::semver::is_less_than(ftx)
        } else {
            super::quantity::is_less_than(ftx)
        }
    });

    ctx.add_function("semver", super::semver::semver);
    ctx.add_function("isSemver", super::semver::is_semver);
    ctx.add_function("major", super::semver::major);
    ctx.add_function("minor", super::semver::minor);
    ctx.add_function("patch", super::semver::patch);

    ctx.add_function("url", super::url::url);
    ctx.add_function("isURL", super::url::is_url);
    ctx.add_function("getScheme", super::url::get_scheme);
    ctx.add_function("getHost", super::url::get_host);
    ctx.add_function("getHostname", super::url::get_hostname);
    ctx.add_function("getPort", super::url::get_port);
    ctx.add_function("getEscapedPath", super::url::get_escaped_path);
    ctx.add_function("getQuery", super::url::get_query);

    ctx.add_function("ip", super::ip::ip);
    ctx.add_function("isIP", super::ip::is_ip);
    ctx.add_function("cidr", super::ip::cidr);
    ctx.add_function("isCIDR", super::ip::is_cidr);
    ctx.add_function("family", super::ip::family);
    ctx.add_function("isUnspecified", super::ip::is_unspecified);
    ctx.add_function("isLoopback", super::ip::is_loopback);
    ctx.add_function("isLinkLocalMulticast", super::ip::is_link_local_multicast);
    ctx.add_function("isLinkLocalUnicast", super::ip::is_link_local_unicast);
    ctx.add_function("isGlobalUnicast", super::ip::is_global_unicast);
    ctx.add_function("containsIP", super::ip::contains_ip);
    ctx.add_function("containsCIDR", super::ip::contains_cidr);
    ctx.add_function("masked", super::ip::masked_cidr);
    ctx.add_function("prefixLength", super::ip::prefix_length);

    ctx.add_function("path", super::authz::path);
    ctx.add_function("group", super::authz::group);
    ctx.add_function("serviceAccount", super::authz::service_account);
    ctx.add_function("resource", super::authz::resource);
    ctx.add_function("subresource", super::authz::subresource);
    ctx.add_function("namespace", super::authz::namespace);
    ctx.add_function("name", super::authz::name);
    ctx.add_function("check", super::authz::check);
    ctx.add_function("allowed", super::authz::allowed);
    ctx.add_function("reason", super::authz::reason);
    ctx.add_function("errored", super::authz::errored);
    ctx.add_function("error", super::authz::error);
}

/// The receiver (or, called as a function, the first argument) and the other arguments.
fn receiver_and_args(ftx: &FunctionContext) -> Result<(Value, Vec<Value>), ExecutionError> {
    let mut args = Vec::with_capacity(ftx.args.len());
    for arg in &ftx.args {
        args.push(ftx.resolve(arg.clone())?);
    }
    match &ftx.this {
        Some(this) => Ok((this.clone(), args)),
        None if !args.is_empty() => {
            let first = args.remove(0);
            Ok((first, args))
        }
        None => Err(ftx.error("missing argument")),
    }
}

fn string(s: &str) -> Value {
    Value::String(Arc::new(s.to_string()))
}

fn lower_ascii(This(this): This<Arc<String>>) -> String {
    this.to_ascii_lowercase()
}

fn upper_ascii(This(this): This<Arc<String>>) -> String {
    this.to_ascii_uppercase()
}

fn trim(This(this): This<Arc<String>>) -> String {
    this.trim().to_string()
}

fn split(This(this): This<Arc<String>>, separator: Arc<String>) -> Result<Value, ExecutionError> {
    let parts: Vec<Value> = if separator.is_empty() {
        this.chars()
            .map(|c| Value::String(Arc::new(c.to_string())))
            .collect()
    } else {
        this.split(separator.as_str())
            .map(|p| Value::String(Arc::new(p.to_string())))
            .collect()
    };
    Ok(Value::List(Arc::new(parts)))
}

/// `list.join()` or `list.join(separator)`: a list of strings into one.
fn join(ftx: &FunctionContext, This(this): This<Value>) -> Result<Value, ExecutionError> {
    let Value::List(this) = this else {
        return Err(ftx.error("join needs a list of strings"));
    };
    let separator = match ftx.args.first() {
        Some(arg) => match ftx.resolve(arg.clone())? {
            Value::String(s) => s.to_string(),
            _ => return Err(ftx.error("the separator must be a string")),
        },
        None => String::new(),
    };
    let mut parts = Vec::with_capacity(this.len());
    for item in this.iter() {
        match item {
            Value::String(s) => parts.push(s.as_str()),
            _ => return Err(ftx.error("join needs a list of strings")),
        }
    }
    Ok(Value::String(Arc::new(parts.join(&separator))))
}

fn replace(This(this): This<Arc<String>>, from: Arc<String>, to: Arc<String>) -> String {
    this.replace(from.as_str(), to.as_str())
}

/// `string.indexOf(s[, from])` in characters, or `list.indexOf(v)`; -1 when absent.
fn index_of(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    position(ftx, false)
}

/// `string.lastIndexOf(s[, upTo])` in characters, or `list.lastIndexOf(v)`; -1 when absent.
fn last_index_of(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    position(ftx, true)
}

fn position(ftx: &FunctionContext, last: bool) -> Result<Value, ExecutionError> {
    let (this, args) = receiver_and_args(ftx)?;
    match (&this, args.as_slice()) {
        (Value::List(items), [needle]) => {
            let found = if last {
                items.iter().rposition(|v| v == needle)
            } else {
                items.iter().position(|v| v == needle)
            };
            Ok(Value::Int(found.map_or(-1, |i| i as i64)))
        }
        (Value::String(text), [Value::String(needle), rest @ ..]) => {
            let chars: Vec<char> = text.chars().collect();
            let needle: Vec<char> = needle.chars().collect();
            let limit = match rest {
                [] if last => chars.len() as i64,
                [] => 0,
                [Value::Int(i)] if *i >= 0 && *i <= chars.len() as i64 => *i,
                [Value::Int(i)] => return Err(ftx.error(format!("index out of range: {i}"))),
                _ => return Err(ftx.error("no such overload")),
            } as usize;
            let matches_at = |i: usize| chars[i..].starts_with(&needle);
            let found = if last {
                let start = limit.min(chars.len().saturating_sub(needle.len()));
                (0..=start).rev().find(|&i| matches_at(i))
            } else {
                (limit..=chars.len().saturating_sub(needle.len()))
                    .find(|&i| i + needle.len() <= chars.len() && matches_at(i))
            };
            Ok(Value::Int(found.map_or(-1, |i| i as i64)))
        }
        _ => Err(ftx.error("no such overload")),
    }
}

/// `string.charAt(i)`: the character at `i`, "" at the end.
fn char_at(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let (this, args) = receiver_and_args(ftx)?;
    match (&this, args.as_slice()) {
        (Value::String(text), [Value::Int(i)]) => {
            let count = text.chars().count() as i64;
            if *i < 0 || *i > count {
                return Err(ftx.error(format!("index out of range: {i}")));
            }
            Ok(string(
                &text
                    .chars()
                    .nth(*i as usize)
                    .map(String::from)
                    .unwrap_or_default(),
            ))
        }
        _ => Err(ftx.error("no such overload")),
    }
}

/// `string.substring(start[, end])` in characters.
fn substring(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let (this, args) = receiver_and_args(ftx)?;
    let Value::String(text) = &this else {
        return Err(ftx.error("no such overload"));
    };
    let count = text.chars().count() as i64;
    let (start, end) = match args.as_slice() {
        [Value::Int(s)] => (*s, count),
        [Value::Int(s), Value::Int(e)] => (*s, *e),
        _ => return Err(ftx.error("no such overload")),
    };
    if start < 0 || start > count || end < start || end > count {
        return Err(ftx.error(format!("index out of range: {start}, {end}")));
    }
    let part: String = text
        .chars()
        .skip(start as usize)
        .take((end - start) as usize)
        .collect();
    Ok(string(&part))
}

fn list_receiver(ftx: &FunctionContext) -> Result<Arc<Vec<Value>>, ExecutionError> {
    match receiver_and_args(ftx)? {
        (Value::List(items), _) => Ok(items),
        _ => Err(ftx.error("no such overload: needs a list")),
    }
}

fn compare(
    ftx: &FunctionContext,
    a: &Value,
    b: &Value,
) -> Result<std::cmp::Ordering, ExecutionError> {
    a.partial_cmp(b)
        .ok_or_else(|| ftx.error("no such overload: the list's elements are not comparable"))
}

/// `list.isSorted()`
fn is_sorted(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let items = list_receiver(ftx)?;
    for pair in items.windows(2) {
        if compare(ftx, &pair[0], &pair[1])? == std::cmp::Ordering::Greater {
            return Ok(Value::Bool(false));
        }
    }
    Ok(Value::Bool(true))
}

/// `list.sum()`: 0 for an empty list.
fn sum(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let items = list_receiver(ftx)?;
    let mut total = match items.first() {
        Some(Value::Float(_)) => Value::Float(0.0),
        Some(Value::UInt(_)) => Value::UInt(0),
        _ => Value::Int(0),
    };
    for item in items.iter() {
        total = (total + item.clone())?;
    }
    Ok(total)
}

/// `list.min()`, or the interpreter's `min(a, b, ...)`.
fn min(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    extreme(ftx, std::cmp::Ordering::Less)
}

/// `list.max()`, or the interpreter's `max(a, b, ...)`.
fn max(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    extreme(ftx, std::cmp::Ordering::Greater)
}

fn extreme(ftx: &FunctionContext, wanted: std::cmp::Ordering) -> Result<Value, ExecutionError> {
    let items: Vec<Value> = match receiver_and_args(ftx)? {
        (Value::List(items), args) if args.is_empty() => items.as_ref().clone(),
        (first, rest) => std::iter::once(first).chain(rest).collect(),
    };
    let Some(mut best) = items.first().cloned() else {
        let what = if wanted == std::cmp::Ordering::Less {
            "min"
        } else {
            "max"
        };
        return Err(ftx.error(format!("{what} of empty list")));
    };
    for item in items.iter().skip(1) {
        if compare(ftx, item, &best)? == wanted {
            best = item.clone();
        }
    }
    Ok(best)
}

fn regex_of(ftx: &FunctionContext, pattern: &str) -> Result<regex::Regex, ExecutionError> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| ftx.error(format!("invalid regex: {e}")))
}

/// `string.find(regex)`: the first match, or "".
fn find(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    match receiver_and_args(ftx)? {
        (Value::String(text), args) => match args.as_slice() {
            [Value::String(pattern)] => Ok(string(
                regex_of(ftx, pattern)?
                    .find(&text)
                    .map_or("", |m| m.as_str()),
            )),
            _ => Err(ftx.error("no such overload")),
        },
        _ => Err(ftx.error("no such overload")),
    }
}

/// `string.findAll(regex[, limit])`: the matches, at most `limit` when it is not negative.
fn find_all(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let (Value::String(text), args) = receiver_and_args(ftx)? else {
        return Err(ftx.error("no such overload"));
    };
    let (pattern, limit) = match args.as_slice() {
        [Value::String(p)] => (p.clone(), usize::MAX),
        [Value::String(p), Value::Int(n)] => (p.clone(), usize::try_from(*n).unwrap_or(usize::MAX)),
        _ => return Err(ftx.error("no such overload")),
    };
    let found = regex_of(ftx, &pattern)?
        .find_iter(&text)
        .take(limit)
        .map(|m| string(m.as_str()))
        .collect();
    Ok(Value::List(Arc::new(found)))
}

fn two_lists(ftx: &FunctionContext) -> Result<(Arc<Vec<Value>>, Arc<Vec<Value>>), ExecutionError> {
    match receiver_and_args(ftx)? {
        (Value::List(a), args) => match args.as_slice() {
            [Value::List(b)] => Ok((a, b.clone())),
            _ => Err(ftx.error("no such overload: needs two lists")),
        },
        _ => Err(ftx.error("no such overload: needs two lists")),
    }
}

/// `sets.contains(a, b)`: every element of b is in a.
fn sets_contains(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let (a, b) = two_lists(ftx)?;
    Ok(Value::Bool(b.iter().all(|x| a.contains(x))))
}

/// `sets.equivalent(a, b)`: the same elements, duplicates and order aside.
fn sets_equivalent(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let (a, b) = two_lists(ftx)?;
    Ok(Value::Bool(
        b.iter().all(|x| a.contains(x)) && a.iter().all(|x| b.contains(x)),
    ))
}

/// `sets.intersects(a, b)`: at least one element in common.
fn sets_intersects(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let (a, b) = two_lists(ftx)?;
    Ok(Value::Bool(b.iter().any(|x| a.contains(x))))
}

#[cfg(test)]
mod tests {
    use crate::cel::{compile, Activation};
    use cel_interpreter::Value;

    fn eval(source: &str) -> Value {
        compile(source)
            .expect("compiles")
            .eval(&Activation::new())
            .expect("evaluates")
    }

    #[test]
    fn the_string_extensions_work_as_in_kubernetes() {
        assert_eq!(eval("'AbC'.lowerAscii() == 'abc'"), Value::Bool(true));
        assert_eq!(eval("'AbC'.upperAscii() == 'ABC'"), Value::Bool(true));
        assert_eq!(eval("'  x '.trim() == 'x'"), Value::Bool(true));
        assert_eq!(
            eval("'a,b,c'.split(',') == ['a', 'b', 'c']"),
            Value::Bool(true)
        );
        assert_eq!(eval("['a', 'b'].join('-') == 'a-b'"), Value::Bool(true));
        assert_eq!(eval("['a', 'b'].join() == 'ab'"), Value::Bool(true));
        assert_eq!(
            eval("'aXbX'.replace('X', '.') == 'a.b.'"),
            Value::Bool(true)
        );
        assert_eq!(eval("'héllo'.indexOf('l')"), Value::Int(2));
        assert_eq!(eval("'hello'.indexOf('z')"), Value::Int(-1));
    }

    #[test]
    fn the_more_string_extensions_work_as_upstream_documents_them() {
        // Examples from cel-go's strings extension, which Kubernetes enables.
        assert_eq!(eval("'hello'.charAt(4) == 'o'"), Value::Bool(true));
        assert_eq!(eval("'hello'.charAt(5) == ''"), Value::Bool(true));
        assert_eq!(
            eval("'hello mellow'.indexOf('ello', 2) == 7"),
            Value::Bool(true)
        );
        assert_eq!(eval("'hello mellow'.indexOf('') == 0"), Value::Bool(true));
        assert_eq!(
            eval("'hello mellow'.lastIndexOf('ello') == 7"),
            Value::Bool(true)
        );
        assert_eq!(
            eval("'hello mellow'.lastIndexOf('ello', 6) == 1"),
            Value::Bool(true)
        );
        assert_eq!(
            eval("'hello mellow'.lastIndexOf('') == 12"),
            Value::Bool(true)
        );
        assert_eq!(eval("'tacocat'.substring(4) == 'cat'"), Value::Bool(true));
        assert_eq!(
            eval("'tacocat'.substring(0, 4) == 'taco'"),
            Value::Bool(true)
        );
    }

    #[test]
    fn the_lists_library_works_as_upstream_documents_it() {
        // Upstream's examples from library/lists.go.
        assert_eq!(eval("[1, 2, 3].isSorted()"), Value::Bool(true));
        assert_eq!(eval("['a', 'b', 'b', 'c'].isSorted()"), Value::Bool(true));
        assert_eq!(eval("[2.0, 1.0].isSorted()"), Value::Bool(false));
        assert_eq!(eval("[1, 2, 3].sum() == 6"), Value::Bool(true));
        assert_eq!(eval("[1.0, 2.0, 3.0].sum() == 6.0"), Value::Bool(true));
        assert_eq!(eval("[].sum() == 0"), Value::Bool(true));
        assert_eq!(eval("[1, 2, 3].min() == 1"), Value::Bool(true));
        assert_eq!(eval("[1, 2, 3].max() == 3"), Value::Bool(true));
        assert_eq!(eval("max(1, 7, 3) == 7"), Value::Bool(true));
        assert_eq!(eval("[1, 2, 2, 3].indexOf(2) == 1"), Value::Bool(true));
        assert_eq!(
            eval("['a', 'b', 'b', 'c'].lastIndexOf('b') == 2"),
            Value::Bool(true)
        );
        assert_eq!(eval("[1.0].indexOf(1.1) == -1"), Value::Bool(true));
        let err = crate::cel::compile("[].min()")
            .expect("compiles")
            .eval(&Activation::new())
            .unwrap_err();
        assert!(err.to_string().contains("min of empty list"), "{err}");
    }

    #[test]
    fn the_regex_and_sets_libraries_work_as_upstream_documents_them() {
        assert_eq!(eval("'abc 123'.find('[0-9]+') == '123'"), Value::Bool(true));
        assert_eq!(eval("'abc 123'.find('xyz') == ''"), Value::Bool(true));
        assert_eq!(
            eval("'123 abc 456'.findAll('[0-9]+') == ['123', '456']"),
            Value::Bool(true)
        );
        assert_eq!(
            eval("'123 abc 456'.findAll('[0-9]+', 1) == ['123']"),
            Value::Bool(true)
        );
        assert_eq!(
            eval("'123 abc 456'.findAll('xyz') == []"),
            Value::Bool(true)
        );
        assert_eq!(eval("sets.contains([], [])"), Value::Bool(true));
        assert_eq!(
            eval("sets.contains([1, 2, 3, 4], [2, 3])"),
            Value::Bool(true)
        );
        assert_eq!(eval("sets.contains([1, 2, 3], [3, 4])"), Value::Bool(false));
        assert_eq!(
            eval("sets.equivalent([1, 2, 3], [3, 2, 1])"),
            Value::Bool(true)
        );
        assert_eq!(
            eval("sets.equivalent([2, 2, 1], [1, 2])"),
            Value::Bool(true)
        );
        assert_eq!(eval("sets.equivalent([1, 2], [2, 3])"), Value::Bool(false));
        assert_eq!(eval("sets.intersects([1], [1, 2])"), Value::Bool(true));
        assert_eq!(eval("sets.intersects([1, 2], [3])"), Value::Bool(false));
    }
}
