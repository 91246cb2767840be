//! The Kubernetes CEL library functions berth adds to the CEL standard ones (`size`,
//! `contains`, `startsWith`, `endsWith`, `matches`, `has`, `all`, `exists`, `exists_one`, `map`,
//! `filter` come with the interpreter): the cheap, common string extensions.

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

/// The character (not byte) index of the first occurrence, or -1.
fn index_of(This(this): This<Arc<String>>, needle: Arc<String>) -> i64 {
    match this.find(needle.as_str()) {
        Some(byte) => this[..byte].chars().count() as i64,
        None => -1,
    }
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
}
