//! The Kubernetes URL library (upstream `library/urls.go`): `url(s)`, `isURL(s)` and on a URL
//! `getScheme`, `getHost`, `getHostname`, `getPort`, `getEscapedPath`, `getQuery`.
//!
//! Upstream parses with Go's `url.ParseRequestURI` (an absolute URI or an absolute path) and
//! then `url.Parse` (which splits the fragment off); the rules below are those two functions'
//! for the parts the library exposes.

use std::collections::HashMap;
use std::sync::Arc;

use cel_interpreter::objects::{Key, Map};
use cel_interpreter::{ExecutionError, FunctionContext, Value};

use super::opaque;

const TYPE: &str = "kubernetes.URL";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Url {
    pub scheme: String,
    /// `host[:port]` as written, brackets of an IPv6 literal kept.
    pub host: String,
    /// The path as written (still escaped).
    pub raw_path: String,
    /// The query as written, without the `?`.
    pub raw_query: String,
}

impl Url {
    /// Parses as upstream's `url()`; the error reads as Go's (`parse "x": ...`).
    pub fn parse(text: &str) -> Result<Url, String> {
        let fail = |why: &str| format!("parse {text:?}: {why}");
        if text.is_empty() {
            return Err(fail("empty url"));
        }
        if text.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(fail("net/url: invalid control character in URL"));
        }
        // The fragment is never part of what the library shows.
        let text_without_fragment = text.split_once('#').map_or(text, |(t, _)| t);
        let mut url = Url::default();
        let mut rest = text_without_fragment;
        if let Some((scheme, after)) = split_scheme(rest).map_err(|e| fail(e))? {
            url.scheme = scheme.to_ascii_lowercase();
            rest = after;
        }
        if let Some((before, query)) = rest.split_once('?') {
            url.raw_query = query.to_string();
            rest = before;
        }
        if !rest.starts_with('/') {
            if url.scheme.is_empty() {
                return Err(fail("invalid URI for request"));
            }
            // An opaque URI (`mailto:x`): nothing the library reads but its scheme.
            return Ok(url);
        }
        if !url.scheme.is_empty() {
            if let Some(after) = rest.strip_prefix("//") {
                let end = after.find('/').unwrap_or(after.len());
                let authority = &after[..end];
                let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                check_host(host).map_err(|e| fail(&e))?;
                url.host = host.to_string();
                rest = &after[end..];
            }
        }
        unescape(rest, false).map_err(|e| fail(&e))?;
        url.raw_path = rest.to_string();
        Ok(url)
    }

    /// The host without its port, and an IPv6 literal without its brackets.
    pub fn hostname(&self) -> &str {
        let (host, _) = split_host_port(&self.host);
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
    }

    pub fn port(&self) -> &str {
        split_host_port(&self.host).1
    }

    /// The path escaped as Go's `EscapedPath`: as written when that is a valid escaping,
    /// re-escaped otherwise.
    pub fn escaped_path(&self) -> String {
        if self.raw_path.bytes().all(valid_encoded) {
            return self.raw_path.clone();
        }
        match unescape(&self.raw_path, false) {
            Ok(path) => escape_path(&path),
            Err(_) => self.raw_path.clone(),
        }
    }

    /// Go's `url.ParseQuery`, pairs that do not parse left out.
    pub fn query(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for pair in self.raw_query.split('&').filter(|p| !p.is_empty()) {
            if pair.contains(';') {
                continue;
            }
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (Ok(key), Ok(value)) = (unescape(key, true), unescape(value, true)) else {
                continue;
            };
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some((_, values)) => values.push(value),
                None => out.push((key, vec![value])),
            }
        }
        out
    }

    fn to_value(&self) -> Value {
        let string = |s: &str| Value::String(Arc::new(s.to_string()));
        opaque::object(
            TYPE,
            [
                ("scheme", string(&self.scheme)),
                ("host", string(&self.host)),
                ("path", string(&self.raw_path)),
                ("query", string(&self.raw_query)),
            ],
        )
    }

    fn from_value(value: &Value) -> Option<Url> {
        opaque::type_of(value).filter(|t| *t == TYPE)?;
        Some(Url {
            scheme: opaque::string_field(value, TYPE, "scheme"),
            host: opaque::string_field(value, TYPE, "host"),
            raw_path: opaque::string_field(value, TYPE, "path"),
            raw_query: opaque::string_field(value, TYPE, "query"),
        })
    }
}

/// `Some((scheme, rest))` when `text` starts with a scheme, as Go's `getScheme`.
fn split_scheme(text: &str) -> Result<Option<(&str, &str)>, &'static str> {
    for (i, c) in text.char_indices() {
        match c {
            'a'..='z' | 'A'..='Z' => {}
            '0'..='9' | '+' | '-' | '.' if i > 0 => {}
            ':' if i == 0 => return Err("missing protocol scheme"),
            ':' => return Ok(Some((&text[..i], &text[i + 1..]))),
            _ => return Ok(None),
        }
    }
    Ok(None)
}

fn split_host_port(host_port: &str) -> (&str, &str) {
    match host_port.rfind(':') {
        Some(colon) if host_port[colon + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            let host = &host_port[..colon];
            // `[::1]` alone: the last colon is inside the brackets, not a port.
            if host.starts_with('[') && !host.ends_with(']') {
                (host_port, "")
            } else {
                (host, &host_port[colon + 1..])
            }
        }
        _ => (host_port, ""),
    }
}

fn check_host(host: &str) -> Result<(), String> {
    if let Some(inner) = host.strip_prefix('[') {
        let Some((_, after)) = inner.split_once(']') else {
            return Err("missing ']' in host".into());
        };
        if !after.is_empty()
            && !(after.starts_with(':') && after[1..].bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!("invalid port {after:?} after host"));
        }
        return Ok(());
    }
    if let Some(colon) = host.rfind(':') {
        let port = &host[colon + 1..];
        if !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("invalid port \":{port}\" after host"));
        }
    }
    match host
        .chars()
        .find(|c| c.is_ascii() && !(c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:%".contains(*c)))
    {
        Some(c) => Err(format!(
            "invalid character {:?} in host name",
            c.to_string()
        )),
        None => Ok(()),
    }
}

/// Percent-decoding; `plus` turns `+` into a space, as in query strings.
fn unescape(text: &str, plus: bool) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text
                    .get(i + 1..i + 3)
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .ok_or_else(|| {
                        format!(
                            "invalid URL escape {:?}",
                            text.get(i..i + 3).unwrap_or(&text[i..])
                        )
                    })?;
                out.push(u8::from_str_radix(hex, 16).map_err(|e| e.to_string())?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Bytes Go accepts in an already-escaped path.
fn valid_encoded(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@[]/%".contains(&b)
}

/// Go's path escaping: unreserved characters and `$&+,/:;=@` stay, the rest become `%XX`.
fn escape_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~$&+,/:;=@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn string_argument(ftx: &FunctionContext) -> Result<Arc<String>, ExecutionError> {
    let value = match (&ftx.this, ftx.args.first()) {
        (Some(this), _) => this.clone(),
        (None, Some(arg)) => ftx.resolve(arg.clone())?,
        (None, None) => return Err(ftx.error("missing argument")),
    };
    match value {
        Value::String(s) => Ok(s),
        _ => Err(ftx.error("no such overload: the argument must be a string")),
    }
}

fn receiver(ftx: &FunctionContext) -> Result<Url, ExecutionError> {
    ftx.this
        .as_ref()
        .and_then(Url::from_value)
        .ok_or_else(|| ftx.error("no such overload: the receiver must be a URL"))
}

fn string(s: &str) -> Value {
    Value::String(Arc::new(s.to_string()))
}

pub fn url(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let text = string_argument(ftx)?;
    Url::parse(&text).map(|u| u.to_value()).map_err(|e| {
        ftx.error(format!(
            "URL parse error during conversion from string: {e}"
        ))
    })
}

pub fn is_url(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    Ok(Value::Bool(Url::parse(&string_argument(ftx)?).is_ok()))
}

pub fn get_scheme(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    Ok(string(&receiver(ftx)?.scheme))
}

pub fn get_host(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    Ok(string(&receiver(ftx)?.host))
}

pub fn get_hostname(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    Ok(string(receiver(ftx)?.hostname()))
}

pub fn get_port(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    Ok(string(receiver(ftx)?.port()))
}

pub fn get_escaped_path(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    Ok(string(&receiver(ftx)?.escaped_path()))
}

pub fn get_query(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let map: HashMap<Key, Value> = receiver(ftx)?
        .query()
        .into_iter()
        .map(|(k, values)| {
            let values = values.iter().map(|v| string(v)).collect();
            (Key::String(Arc::new(k)), Value::List(Arc::new(values)))
        })
        .collect();
    Ok(Value::Map(Map { map: Arc::new(map) }))
}

#[cfg(test)]
mod tests {
    use crate::cel::test_support::{eval, holds};

    #[test]
    fn the_url_library_works_as_upstream_documents_it() {
        // Upstream's examples from library/urls.go.
        holds("url('https://example.com/path').getScheme() == 'https'");
        holds("url('/path').getScheme() == ''");
        holds("url('https://example.com:80/').getHost() == 'example.com:80'");
        holds("url('https://[::1]:80/').getHost() == '[::1]:80'");
        holds("url('https://[::1]/').getHost() == '[::1]'");
        holds("url('/path').getHost() == ''");
        holds("url('https://example.com:80/').getHostname() == 'example.com'");
        holds("url('https://127.0.0.1:80/').getHostname() == '127.0.0.1'");
        holds("url('https://[::1]:80/').getHostname() == '::1'");
        holds("url('/path').getHostname() == ''");
        holds("url('https://example.com:80/').getPort() == '80'");
        holds("url('https://example.com/').getPort() == ''");
        holds("url('https://[::1]/').getPort() == ''");
        holds("url('/path').getPort() == ''");
        holds("url('https://example.com/path').getEscapedPath() == '/path'");
        holds("url('https://example.com/path with spaces/').getEscapedPath() == '/path%20with%20spaces/'");
        holds("url('https://example.com').getEscapedPath() == ''");
        holds("url('https://example.com/path?k1=a&k2=b&k2=c').getQuery() == {'k1': ['a'], 'k2': ['b', 'c']}");
        holds("url('https://example.com/path?key with spaces=value with spaces').getQuery() == {'key with spaces': ['value with spaces']}");
        holds("url('https://example.com/path?').getQuery() == {}");
        holds("url('https://example.com/path').getQuery() == {}");
        holds("url('https://example.com/path#frag').getEscapedPath() == '/path'");
        holds("isURL('https://user:pass@example.com:80/path?query=val#fragment')");
        holds("isURL('/absolute-path')");
        holds("!isURL('../relative-path')");
        holds("!isURL('')");
        holds("url('https://example.com/') == url('https://example.com/')");
    }

    #[test]
    fn a_relative_url_is_an_error_naming_the_input() {
        let err = eval("url('../relative-path')").unwrap_err();
        assert!(
            err.contains("URL parse error during conversion from string: parse \"../relative-path\": invalid URI for request"),
            "{err}"
        );
        let err = eval("'https://x'.getHost()").unwrap_err();
        assert!(err.contains("no such overload"), "{err}");
    }
}
