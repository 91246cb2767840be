//! Upstream's semver library: `semver(s)`, `semver(s, normalize)`, `isSemver(s[, normalize])`,
//! `.major()`, `.minor()`, `.patch()`, `.compareTo(v)`, `.isLessThan(v)`, `.isGreaterThan(v)`.
//! Parsing and ordering follow semver.org 2.0 as the Go library Kubernetes uses does: no
//! leading zeros, build metadata ignored when comparing.

use std::cmp::Ordering;
use std::sync::Arc;

use cel_interpreter::{ExecutionError, FunctionContext, Value};

use super::opaque;

const TYPE: &str = "kubernetes.Semver";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    major: u64,
    minor: u64,
    patch: u64,
    pre: Vec<String>,
    build: Vec<String>,
}

impl Version {
    /// Parses strictly, with the Go library's error texts.
    pub fn parse(s: &str) -> Result<Version, String> {
        if s.is_empty() {
            return Err("Version string empty".into());
        }
        let parts: Vec<&str> = s.splitn(3, '.').collect();
        let [major, minor, rest] = parts.as_slice() else {
            return Err("No Major.Minor.Patch elements found".into());
        };
        let (rest, build) = match rest.split_once('+') {
            Some((r, b)) => (r, b.split('.').map(str::to_string).collect()),
            None => (*rest, Vec::new()),
        };
        let (patch, pre) = match rest.split_once('-') {
            Some((p, pre)) => (p, pre.split('.').map(str::to_string).collect()),
            None => (rest, Vec::new()),
        };
        let version = Version {
            major: number(major, "major")?,
            minor: number(minor, "minor")?,
            patch: number(patch, "patch")?,
            pre,
            build,
        };
        for p in &version.pre {
            if p.is_empty() {
                return Err("Prerelease is empty".into());
            }
            if !identifier_chars(p) {
                return Err(format!("Invalid character(s) found in prerelease {p:?}"));
            }
            if is_numeric(p) && p.len() > 1 && p.starts_with('0') {
                return Err(format!(
                    "Numeric PreRelease version must not contain leading zeroes {p:?}"
                ));
            }
        }
        for b in &version.build {
            if b.is_empty() {
                return Err("Build meta data is empty".into());
            }
            if !identifier_chars(b) {
                return Err(format!(
                    "Invalid character(s) found in build meta data {b:?}"
                ));
            }
        }
        Ok(version)
    }

    /// Upstream's normalisation: no `v` prefix, missing minor/patch as 0, no leading zeros.
    pub fn parse_normalized(s: &str) -> Result<Version, String> {
        let s = s.strip_prefix('v').unwrap_or(s);
        let mut parts: Vec<String> = s
            .splitn(3, '.')
            .map(|p| {
                if p.len() > 1 {
                    let trimmed = p.trim_start_matches('0');
                    if trimmed.is_empty() || !trimmed.as_bytes()[0].is_ascii_digit() {
                        return format!("0{trimmed}");
                    }
                    return trimmed.to_string();
                }
                p.to_string()
            })
            .collect();
        if parts.len() < 3 {
            if parts.last().is_some_and(|p| p.contains(['+', '-'])) {
                return Err("short version cannot contain PreRelease/Build meta data".into());
            }
            parts.resize(3, "0".to_string());
        }
        Version::parse(&parts.join("."))
    }

    fn to_value(&self) -> Value {
        let list = |items: &[String]| {
            Value::List(Arc::new(
                items
                    .iter()
                    .map(|s| Value::String(Arc::new(s.clone())))
                    .collect(),
            ))
        };
        // u64 parts above i64::MAX cannot be stored as CEL ints; they saturate.
        let int = |n: u64| Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
        opaque::object(
            TYPE,
            [
                ("major", int(self.major)),
                ("minor", int(self.minor)),
                ("patch", int(self.patch)),
                ("pre", list(&self.pre)),
                ("build", list(&self.build)),
            ],
        )
    }

    fn from_value(value: &Value) -> Option<Version> {
        let int = |name| match opaque::field(value, TYPE, name) {
            Some(Value::Int(n)) => u64::try_from(*n).ok(),
            _ => None,
        };
        let list = |name| match opaque::field(value, TYPE, name) {
            Some(Value::List(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Some(s.to_string()),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>(),
            _ => None,
        };
        Some(Version {
            major: int("major")?,
            minor: int("minor")?,
            patch: int("patch")?,
            pre: list("pre")?,
            build: list("build")?,
        })
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Version) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => compare_prerelease(&self.pre, &other.pre),
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Version) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Identifier by identifier: numbers numerically and below words, words as text; when one
/// runs out first it is the lower.
fn compare_prerelease(a: &[String], b: &[String]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let order = match (is_numeric(x), is_numeric(y)) {
            (true, true) => x.len().cmp(&y.len()).then_with(|| x.cmp(y)),
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

fn number(text: &str, what: &str) -> Result<u64, String> {
    if !is_numeric(text) {
        return Err(format!(
            "Invalid character(s) found in {what} number {text:?}"
        ));
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(format!(
            "{} number must not contain leading zeroes {text:?}",
            capitalized(what)
        ));
    }
    text.parse()
        .map_err(|e| format!("{} number {text:?}: {e}", capitalized(what)))
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

fn is_numeric(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn identifier_chars(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The string and normalise flag of `semver(s[, normalize])` / `isSemver(s[, normalize])`.
fn arguments(ftx: &FunctionContext) -> Result<(Arc<String>, bool), ExecutionError> {
    let mut values = Vec::with_capacity(2);
    for arg in &ftx.args {
        values.push(ftx.resolve(arg.clone())?);
    }
    match values.as_slice() {
        [Value::String(s)] => Ok((s.clone(), false)),
        [Value::String(s), Value::Bool(normalize)] => Ok((s.clone(), *normalize)),
        _ => Err(ftx.error("no such overload: expected (string) or (string, bool)")),
    }
}

fn parse_with(text: &str, normalize: bool) -> Result<Version, String> {
    if normalize {
        Version::parse_normalized(text)
    } else {
        Version::parse(text)
    }
}

pub fn semver(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let (text, normalize) = arguments(ftx)?;
    parse_with(&text, normalize)
        .map(|v| v.to_value())
        .map_err(|e| ftx.error(e))
}

pub fn is_semver(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let (text, normalize) = arguments(ftx)?;
    Ok(Value::Bool(parse_with(&text, normalize).is_ok()))
}

/// Whether the method's receiver is a semver (the comparison methods are shared with
/// quantities).
pub fn is_receiver(ftx: &FunctionContext) -> bool {
    ftx.this
        .as_ref()
        .is_some_and(|v| opaque::type_of(v) == Some(TYPE))
}

fn receiver(ftx: &FunctionContext) -> Result<Version, ExecutionError> {
    ftx.this
        .as_ref()
        .and_then(Version::from_value)
        .ok_or_else(|| ftx.error("no such overload: the receiver must be a semver"))
}

fn receiver_and_argument(ftx: &FunctionContext) -> Result<(Version, Version), ExecutionError> {
    let this = receiver(ftx)?;
    let other = match ftx.args.first() {
        Some(arg) => ftx.resolve(arg.clone())?,
        None => return Err(ftx.error("missing argument")),
    };
    let other = Version::from_value(&other)
        .ok_or_else(|| ftx.error("no such overload: the argument must be a semver"))?;
    Ok((this, other))
}

pub fn major(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    Ok(Value::Int(receiver(ftx)?.major as i64))
}

pub fn minor(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    Ok(Value::Int(receiver(ftx)?.minor as i64))
}

pub fn patch(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    Ok(Value::Int(receiver(ftx)?.patch as i64))
}

pub fn compare_to(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let (a, b) = receiver_and_argument(ftx)?;
    Ok(Value::Int(a.cmp(&b) as i64))
}

pub fn is_greater_than(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let (a, b) = receiver_and_argument(ftx)?;
    Ok(Value::Bool(a > b))
}

pub fn is_less_than(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let (a, b) = receiver_and_argument(ftx)?;
    Ok(Value::Bool(a < b))
}

#[cfg(test)]
mod tests {
    use crate::cel::test_support::{eval, holds};

    #[test]
    fn is_semver_accepts_exactly_semver_org_versions() {
        holds("isSemver('1.0.0') && isSemver('0.1.0-alpha.1') && isSemver('1.2.3+build.7')");
        for bad in [
            "hello",
            "v1.0",
            "1.0",
            "01.1.1",
            "1.2.3-01",
            "1.2.3-",
            "1.2.3+",
            "1.2.3-a_b",
        ] {
            holds(&format!("!isSemver('{bad}')"));
        }
        holds("isSemver('v1.0', true) && isSemver('01.01.01', true) && !isSemver('1.0-rc', true)");
    }

    #[test]
    fn semver_values_expose_their_parts() {
        holds("semver('1.2.3').major() == 1 && semver('1.2.3').minor() == 2");
        holds("semver('1.2.3').patch() == 3");
        holds("semver('v1.0', true).major() == 1 && semver('01.01.01', true).patch() == 1");
        let err = eval("semver('200K')").unwrap_err();
        assert!(err.contains("No Major.Minor.Patch elements found"), "{err}");
    }

    #[test]
    fn semvers_compare_as_semver_org_orders_them() {
        holds("semver('1.2.3').compareTo(semver('1.2.3')) == 0");
        holds("semver('1.2.3').compareTo(semver('2.0.0')) == -1");
        holds("semver('1.2.3').compareTo(semver('0.1.2')) == 1");
        holds("semver('1.0.0-alpha').isLessThan(semver('1.0.0-alpha.1'))");
        holds("semver('1.0.0-alpha.1').isLessThan(semver('1.0.0-alpha.beta'))");
        holds("semver('1.0.0-beta.2').isLessThan(semver('1.0.0-beta.11'))");
        holds("semver('1.0.0-rc.1').isLessThan(semver('1.0.0'))");
        holds("semver('1.10.0').isGreaterThan(semver('1.9.9'))");
        holds("semver('1.0.0+a').compareTo(semver('1.0.0+b')) == 0");
        // The quantity methods of the same names still work.
        holds("quantity('1Gi').isGreaterThan(quantity('1G'))");
    }
}
