//! Upstream's format library: named string formats whose `validate(s)` gives
//! `optional.none()` for a valid string and otherwise the list of what is wrong, e.g.
//! `format.dns1123Label().validate(object.metadata.name).hasValue()`, or
//! `format.named('uuid').value().validate(s)`.

use std::sync::Arc;

use base64::Engine;
use cel_interpreter::{Context, ExecutionError, FunctionContext, Value};

use super::{opaque, optional};
use crate::api::meta;

const TYPE: &str = "kubernetes.NamedFormat";

/// The formats upstream names, each reachable as `format.<name>()`.
const NAMES: [&str; 13] = [
    "dns1123Label",
    "dns1123Subdomain",
    "dns1035Label",
    "qualifiedName",
    "dns1123LabelPrefix",
    "dns1123SubdomainPrefix",
    "dns1035LabelPrefix",
    "labelValue",
    "uri",
    "uuid",
    "byte",
    "date",
    "datetime",
];

pub fn register(ctx: &mut Context<'static>) {
    for name in NAMES {
        ctx.add_function(&format!("format.{name}"), move |_: &FunctionContext| {
            Ok(named_format(name))
        });
    }
    ctx.add_function("format.named", named);
    ctx.add_function("validate", validate);
}

fn named_format(name: &str) -> Value {
    opaque::object(TYPE, [("name", Value::String(Arc::new(name.to_string())))])
}

fn named(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let name = match ftx
        .args
        .first()
        .map(|a| ftx.resolve(a.clone()))
        .transpose()?
    {
        Some(Value::String(s)) => s,
        _ => return Err(ftx.error("no such overload: format.named needs a string")),
    };
    Ok(match NAMES.iter().find(|n| **n == name.as_str()) {
        Some(n) => optional::some(named_format(n)),
        None => optional::none(),
    })
}

fn validate(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let name = ftx
        .this
        .as_ref()
        .map(|this| opaque::string_field(this, TYPE, "name"))
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ftx.error("no such overload: validate needs a format"))?;
    let text = match ftx
        .args
        .first()
        .map(|a| ftx.resolve(a.clone()))
        .transpose()?
    {
        Some(Value::String(s)) => s,
        _ => return Err(ftx.error("no such overload: validate needs a string")),
    };
    let problems = problems(&name, &text);
    Ok(if problems.is_empty() {
        optional::none()
    } else {
        optional::some(Value::List(Arc::new(
            problems
                .into_iter()
                .map(|p| Value::String(Arc::new(p)))
                .collect(),
        )))
    })
}

/// What is wrong with `text` as format `name`, in upstream's words.
pub fn problems(name: &str, text: &str) -> Vec<String> {
    // Prefix formats accept what a generateName may end with: a trailing dash.
    let masked = |s: &str| match s.strip_suffix('-') {
        Some(rest) => format!("{rest}a"),
        None => s.to_string(),
    };
    let problem = match name {
        "dns1123Label" => meta::check_dns1123_label(text),
        "dns1123LabelPrefix" => meta::check_dns1123_label(&masked(text)),
        "dns1123Subdomain" => meta::check_dns1123_subdomain(text),
        "dns1123SubdomainPrefix" => meta::check_dns1123_subdomain(&masked(text)),
        "dns1035Label" => check_dns1035_label(text),
        "dns1035LabelPrefix" => check_dns1035_label(&masked(text)),
        "qualifiedName" => meta::check_qualified_name(text),
        "labelValue" => meta::check_label_value(text),
        "uri" => super::url::Url::parse(text).err(),
        "uuid" => (!is_uuid(text)).then(|| "does not match the UUID format".to_string()),
        "byte" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .err()
            .map(|_| "invalid base64".to_string()),
        "date" => (!is_date(text)).then(|| "invalid date".to_string()),
        "datetime" => text
            .parse::<jiff::Timestamp>()
            .err()
            .map(|_| "invalid datetime".to_string()),
        _ => Some(format!("unknown format {name:?}")),
    };
    problem.into_iter().collect()
}

fn check_dns1035_label(text: &str) -> Option<String> {
    if text.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    let b = text.as_bytes();
    let ok = b.first().is_some_and(u8::is_ascii_lowercase)
        && b.last()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    (!ok).then(|| {
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')".into()
    })
}

/// 8-4-4-4-12 hex digits, or 32 of them, in either case.
fn is_uuid(text: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let groups: Vec<&str> = text.split('-').collect();
    match groups.as_slice() {
        [a, b, c, d, e] => hex(a, 8) && hex(b, 4) && hex(c, 4) && hex(d, 4) && hex(e, 12),
        [all] => hex(all, 32),
        _ => false,
    }
}

/// An RFC 3339 full date, `2006-01-02`.
fn is_date(text: &str) -> bool {
    text.len() == 10 && text.parse::<jiff::civil::Date>().is_ok()
}

#[cfg(test)]
mod tests {
    use crate::cel::{compile, Activation};
    use cel_interpreter::Value;

    fn holds(source: &str) {
        let result = compile(source)
            .map_err(|e| e.to_string())
            .and_then(|p| p.eval(&Activation::new()).map_err(|e| e.to_string()));
        assert_eq!(result, Ok(Value::Bool(true)), "{source}");
    }

    #[test]
    fn valid_strings_validate_to_none() {
        holds("!format.dns1123Label().validate('my-label-name').hasValue()");
        holds("!format.dns1123Subdomain().validate('apiextensions.k8s.io').hasValue()");
        holds("!format.dns1035Label().validate('my-label-name').hasValue()");
        holds("!format.qualifiedName().validate('apiextensions.k8s.io/v1beta1').hasValue()");
        holds("!format.dns1123LabelPrefix().validate('my-label-prefix-').hasValue()");
        holds("!format.dns1035LabelPrefix().validate('my-label-prefix-').hasValue()");
        holds("!format.labelValue().validate('').hasValue()");
        holds("!format.uri().validate('http://example.com').hasValue()");
        holds("!format.uuid().validate('123e4567-e89b-12d3-a456-426614174000').hasValue()");
        holds("!format.byte().validate('aGVsbG8=').hasValue()");
        holds("!format.date().validate('2021-01-01').hasValue()");
        holds("!format.datetime().validate('2021-01-01T00:00:00Z').hasValue()");
    }

    #[test]
    fn invalid_strings_validate_to_upstreams_messages() {
        holds("format.dns1123Label().validate('My_Label').value()[0].startsWith('a lowercase RFC 1123 label must consist')");
        holds(
            "format.dns1035Label().validate('1abc').value()[0].startsWith('a DNS-1035 label must')",
        );
        holds("format.dns1123Label().validate('my-label-').hasValue()");
        holds("format.uuid().validate('123').value() == ['does not match the UUID format']");
        holds("format.byte().validate('%%%').value() == ['invalid base64']");
        holds("format.date().validate('2021-13-01').value() == ['invalid date']");
        holds("format.datetime().validate('yesterday').value() == ['invalid datetime']");
        holds("format.uri().validate('../x').value()[0].contains('invalid URI for request')");
    }

    #[test]
    fn formats_are_found_by_name() {
        holds("format.named('uuid').hasValue() && !format.named('nonsense').hasValue()");
        holds("format.named('labelValue').value().validate('ok').orValue([]) == []");
        holds("format.named('dns1123Label').value() == format.dns1123Label()");
    }
}
