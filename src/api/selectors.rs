//! Label and field selectors, with the syntax and semantics of Kubernetes'
//! `labelSelector` and `fieldSelector` list options.
//!
//! Pure logic: parsing, validation and matching. The apiserver decides what an error becomes on the
//! wire (a 400 with the error's message).

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use serde_json::Value;

/// Why a selector could not be parsed, built or evaluated. Messages follow upstream's wording so
/// users (and scripts) see what they would see against a real cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A token out of place at the top level of a label selector.
    #[error("found '{found}', expected: {expected}")]
    Unexpected {
        found: String,
        expected: &'static str,
    },
    /// A token out of place inside one requirement (`key op values`).
    #[error("unable to parse requirement: found '{found}', expected: {expected}")]
    BadRequirement {
        found: String,
        expected: &'static str,
    },
    #[error("unable to parse requirement: invalid label key \"{key}\": {reason}")]
    InvalidKey { key: String, reason: String },
    #[error(
        "unable to parse requirement: invalid label value \"{value}\" for key \"{key}\": {reason}"
    )]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
    /// The number or form of values does not fit the operator.
    #[error("unable to parse requirement: invalid values for key \"{key}\": {reason}")]
    InvalidValues { key: String, reason: &'static str },
    /// A `matchExpressions` operator other than In, NotIn, Exists, DoesNotExist.
    #[error("\"{operator}\" is not a valid label selector operator")]
    InvalidOperator { operator: String },
    /// A field selector term without `=`, `==` or `!=`.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    InvalidFieldTerm { selector: String, term: String },
    #[error("invalid field selector: invalid escape sequence: {sequence}")]
    InvalidEscape { sequence: String },
    #[error(
        "invalid field selector: unescaped character in value: '{character}' \
         (escape it as \\{character})"
    )]
    UnescapedCharacter { character: char },
    /// The kind has no such selectable field.
    #[error("field label not supported: {field}")]
    UnsupportedField { field: String },
}

// ---------------------------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Operator {
    /// `=` and `==` mean the same thing, so they share one variant and compare equal.
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

// Field order matters: the derived Ord sorts by key first, as upstream orders requirements.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Requirement {
    key: String,
    operator: Operator,
    /// Sorted and deduplicated, so equal selectors compare equal whatever their written order.
    values: Vec<String>,
}

impl Requirement {
    /// Validates like upstream's `NewRequirement`: the key, the values, and the value count
    /// the operator needs.
    fn new(key: &str, operator: Operator, mut values: Vec<String>) -> Result<Self, SelectorError> {
        validate_label_key(key)?;
        let reason = match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                Some("for 'in', 'notin' operators, values set can't be empty")
            }
            Operator::Equals | Operator::NotEquals if values.len() != 1 => {
                Some("exact-match compatibility requires one single value")
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                Some("values set must be empty for exists and does not exist")
            }
            Operator::GreaterThan | Operator::LessThan if values.len() != 1 => {
                Some("for 'Gt', 'Lt' operators, exactly one value is required")
            }
            Operator::GreaterThan | Operator::LessThan
                if values.first().and_then(|v| v.parse::<i64>().ok()).is_none() =>
            {
                Some("for 'Gt', 'Lt' operators, the value must be an integer")
            }
            _ => None,
        };
        if let Some(reason) = reason {
            return Err(SelectorError::InvalidValues {
                key: key.to_string(),
                reason,
            });
        }
        for value in &values {
            validate_label_value(key, value)?;
        }
        values.sort();
        values.dedup();
        Ok(Requirement {
            key: key.to_string(),
            operator,
            values,
        })
    }

    fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        let has_value = |v: &str| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::Equals | Operator::In => labels.label(&self.key).is_some_and(has_value),
            // As upstream: a missing label is "not equal" to anything.
            Operator::NotEquals | Operator::NotIn => {
                !labels.label(&self.key).is_some_and(has_value)
            }
            Operator::Exists => labels.label(&self.key).is_some(),
            Operator::DoesNotExist => labels.label(&self.key).is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(actual) = labels.label(&self.key).and_then(|v| v.parse::<i64>().ok())
                else {
                    return false;
                };
                let Some(bound) = self.values.first().and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    actual > bound
                } else {
                    actual < bound
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values = self.values.join(",");
        match self.operator {
            Operator::Equals => write!(f, "{}={values}", self.key),
            Operator::NotEquals => write!(f, "{}!={values}", self.key),
            Operator::In => write!(f, "{} in ({values})", self.key),
            Operator::NotIn => write!(f, "{} notin ({values})", self.key),
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::GreaterThan => write!(f, "{}>{values}", self.key),
            Operator::LessThan => write!(f, "{}<{values}", self.key),
        }
    }
}

/// An object's labels as a selector reads them: owned (a decoded object) or borrowed from the
/// stored bytes (a list that only needs the labels to decide).
pub trait Labels {
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Labels for BTreeMap<std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(|v| v.as_ref())
    }
}

/// A parsed label selector: an AND of requirements. The empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelSelector {
    /// Sorted (by key first, as upstream), so equal selectors compare equal.
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the `labelSelector` query string syntax: `a=b`, `a==b`, `a!=b`, `a in (x,y)`,
    /// `a notin (x)`, `a`, `!a`, `a>1`, `a<1`; comma is AND; whitespace around tokens is ignored.
    /// Keys must be qualified names and values valid label values, as upstream.
    pub fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
        let tokens = lex(s);
        let requirements = Parser {
            tokens,
            position: 0,
        }
        .parse()?;
        Ok(LabelSelector::from_requirements(requirements))
    }

    /// Converts a `metav1.LabelSelector` (matchLabels + matchExpressions), as upstream's
    /// `LabelSelectorAsSelector`. An empty one matches everything.
    pub fn from_label_selector(
        selector: &metav1::LabelSelector,
    ) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            requirements.push(Requirement::new(
                key,
                Operator::Equals,
                vec![value.clone()],
            )?);
        }
        for expression in selector.match_expressions.iter().flatten() {
            let operator = match expression.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError::InvalidOperator {
                        operator: other.to_string(),
                    })
                }
            };
            let values = expression.values.clone().unwrap_or_default();
            requirements.push(Requirement::new(&expression.key, operator, values)?);
        }
        Ok(LabelSelector::from_requirements(requirements))
    }

    /// A selector requiring exactly these labels (a Service's or ReplicationController's
    /// `spec.selector`). Not validated: such maps were validated when their object was stored.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> LabelSelector {
        let requirements = labels
            .iter()
            .map(|(key, value)| Requirement {
                key: key.clone(),
                operator: Operator::Equals,
                values: vec![value.clone()],
            })
            .collect();
        LabelSelector::from_requirements(requirements)
    }

    fn from_requirements(mut requirements: Vec<Requirement>) -> LabelSelector {
        requirements.sort();
        LabelSelector { requirements }
    }

    /// True when every requirement holds. The empty selector matches everything.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// The canonical string form, as upstream prints it (e.g. for a scale subresource's
/// `status.selector`): requirements sorted by key, joined by `,`.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    End,
    OpenPar,
    ClosedPar,
    Comma,
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
    In,
    NotIn,
    Identifier,
}

/// One lexed token and the text it came from (used for values and in error messages).
#[derive(Debug, Clone, Copy)]
struct Scanned<'a> {
    token: Token,
    text: &'a str,
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Splits the selector into tokens. Every special symbol is ASCII, so slicing at their byte
/// offsets always lands on a char boundary. The result always ends with `Token::End`.
fn lex(s: &str) -> Vec<Scanned<'_>> {
    let bytes = s.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    loop {
        while i < bytes.len() && is_whitespace(bytes[i]) {
            i += 1;
        }
        if i >= bytes.len() {
            tokens.push(Scanned {
                token: Token::End,
                text: "",
            });
            return tokens;
        }
        let start = i;
        let token = if is_special(bytes[i]) {
            let two = bytes.get(i + 1) == Some(&b'=');
            let (token, len) = match bytes[i] {
                b'=' if two => (Token::DoubleEquals, 2),
                b'!' if two => (Token::NotEquals, 2),
                b'=' => (Token::Equals, 1),
                b'!' => (Token::Not, 1),
                b'(' => (Token::OpenPar, 1),
                b')' => (Token::ClosedPar, 1),
                b',' => (Token::Comma, 1),
                b'>' => (Token::GreaterThan, 1),
                _ => (Token::LessThan, 1),
            };
            i += len;
            token
        } else {
            while i < bytes.len() && !is_special(bytes[i]) && !is_whitespace(bytes[i]) {
                i += 1;
            }
            match &s[start..i] {
                "in" => Token::In,
                "notin" => Token::NotIn,
                _ => Token::Identifier,
            }
        };
        tokens.push(Scanned {
            token,
            text: &s[start..i],
        });
    }
}

/// Where the parser is: `in` and `notin` are operators after a key, but plain values inside
/// a value list (`x in (in, notin)`) and keys at the start of a requirement.
#[derive(Clone, Copy, PartialEq)]
enum Context {
    KeyAndOperator,
    Values,
}

/// Recursive descent over the token list, following upstream's grammar:
/// `selector := requirement ("," requirement)*`,
/// `requirement := ["!"] KEY [ ("in"|"notin") "(" values ")" | ("="|"=="|"!="|">"|"<") VALUE ]`.
struct Parser<'a> {
    tokens: Vec<Scanned<'a>>,
    position: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self, context: Context) -> Scanned<'a> {
        let scanned = self.tokens.get(self.position).copied().unwrap_or(Scanned {
            token: Token::End,
            text: "",
        });
        match scanned.token {
            Token::In | Token::NotIn if context == Context::Values => Scanned {
                token: Token::Identifier,
                ..scanned
            },
            _ => scanned,
        }
    }

    fn next(&mut self, context: Context) -> Scanned<'a> {
        let scanned = self.peek(context);
        // Never move past End, so a malformed input cannot make us read out of bounds.
        if self.position < self.tokens.len() {
            self.position += 1;
        }
        scanned
    }

    fn parse(mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let scanned = self.peek(Context::Values);
            match scanned.token {
                Token::Identifier | Token::Not => {
                    requirements.push(self.parse_requirement()?);
                    let after = self.next(Context::Values);
                    match after.token {
                        Token::End => return Ok(requirements),
                        Token::Comma => {
                            let following = self.peek(Context::Values);
                            if !matches!(following.token, Token::Identifier | Token::Not) {
                                return Err(SelectorError::Unexpected {
                                    found: following.text.to_string(),
                                    expected: "identifier after ','",
                                });
                            }
                        }
                        _ => {
                            return Err(SelectorError::Unexpected {
                                found: after.text.to_string(),
                                expected: "',' or 'end of string'",
                            })
                        }
                    }
                }
                Token::End => return Ok(requirements),
                _ => {
                    return Err(SelectorError::Unexpected {
                        found: scanned.text.to_string(),
                        expected: "!, identifier, or 'end of string'",
                    })
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, SelectorError> {
        let mut negated = false;
        let mut key = self.next(Context::Values);
        if key.token == Token::Not {
            negated = true;
            key = self.next(Context::Values);
        }
        if key.token != Token::Identifier {
            return Err(bad_requirement(key, "identifier"));
        }
        validate_label_key(key.text)?;
        // `!key` takes no operator; whatever follows is the caller's problem (`!a=b` fails there
        // with "expected: ',' or 'end of string'", as upstream).
        if negated {
            return Requirement::new(key.text, Operator::DoesNotExist, Vec::new());
        }
        if matches!(self.peek(Context::Values).token, Token::End | Token::Comma) {
            return Requirement::new(key.text, Operator::Exists, Vec::new());
        }
        let operator_token = self.next(Context::KeyAndOperator);
        let operator = match operator_token.token {
            Token::In => Some(Operator::In),
            Token::NotIn => Some(Operator::NotIn),
            Token::Equals | Token::DoubleEquals => Some(Operator::Equals),
            Token::NotEquals => Some(Operator::NotEquals),
            Token::GreaterThan => Some(Operator::GreaterThan),
            Token::LessThan => Some(Operator::LessThan),
            _ => None,
        };
        let Some(operator) = operator else {
            return Err(bad_requirement(
                operator_token,
                "in, notin, =, ==, !=, >, <",
            ));
        };
        let values = match operator {
            Operator::In | Operator::NotIn => self.parse_value_set()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(key.text, operator, values)
    }

    /// `( v1, v2, ... )`. Empty entries are the empty value: `()` and `(a,)` contain "".
    fn parse_value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        let open = self.next(Context::Values);
        if open.token != Token::OpenPar {
            return Err(bad_requirement(open, "'('"));
        }
        let mut values = Vec::new();
        // Whether the next token may be a value: true after '(' and after each ','.
        let mut want_value = true;
        loop {
            let scanned = self.next(Context::Values);
            match scanned.token {
                Token::Identifier if want_value => {
                    values.push(scanned.text.to_string());
                    want_value = false;
                }
                Token::Comma => {
                    if want_value {
                        values.push(String::new());
                    }
                    want_value = true;
                }
                Token::ClosedPar => {
                    if want_value {
                        values.push(String::new());
                    }
                    return Ok(values);
                }
                _ if want_value => {
                    return Err(bad_requirement(scanned, "',', ')' or identifier"));
                }
                _ => return Err(bad_requirement(scanned, "',' or ')'")),
            }
        }
    }

    /// The single value after `=`, `==`, `!=`, `>`, `<`; nothing before `,` or the end means "".
    fn parse_exact_value(&mut self) -> Result<Vec<String>, SelectorError> {
        if matches!(self.peek(Context::Values).token, Token::End | Token::Comma) {
            return Ok(vec![String::new()]);
        }
        let value = self.next(Context::Values);
        if value.token != Token::Identifier {
            return Err(bad_requirement(value, "identifier"));
        }
        Ok(vec![value.text.to_string()])
    }
}

fn bad_requirement(found: Scanned<'_>, expected: &'static str) -> SelectorError {
    SelectorError::BadRequirement {
        found: found.text.to_string(),
        expected,
    }
}

const NAME_MAX_LENGTH: usize = 63;
const SUBDOMAIN_MAX_LENGTH: usize = 253;
const QUALIFIED_NAME_HELP: &str = "must consist of alphanumeric characters, '-', '_' or '.', and \
     must start and end with an alphanumeric character (e.g. 'MyName', or 'my.name', or '123-abc')";

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, the shape of label names and non-empty values.
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    let (Some(first), Some(last)) = (b.first(), b.last()) else {
        return false;
    };
    first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A lowercase RFC 1123 subdomain: dot-separated labels of `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= SUBDOMAIN_MAX_LENGTH
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            b.first().is_some_and(alnum)
                && b.last().is_some_and(alnum)
                && b.iter().all(|c| alnum(c) || *c == b'-')
        })
}

/// A label key is a qualified name: `[prefix/]name`, prefix a DNS subdomain, name ≤ 63 bytes.
fn validate_label_key(key: &str) -> Result<(), SelectorError> {
    let mut reasons: Vec<String> = Vec::new();
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                reasons.push("prefix part must be non-empty".to_string());
            } else if prefix.len() > SUBDOMAIN_MAX_LENGTH {
                reasons.push(format!(
                    "prefix part must be no more than {SUBDOMAIN_MAX_LENGTH} bytes"
                ));
            } else if !is_dns1123_subdomain(prefix) {
                reasons.push(
                    "prefix part a lowercase RFC 1123 subdomain must consist of lower case \
                     alphanumeric characters, '-' or '.', and must start and end with an \
                     alphanumeric character (e.g. 'example.com')"
                        .to_string(),
                );
            }
            name
        }
        _ => {
            return Err(SelectorError::InvalidKey {
                key: key.to_string(),
                reason: format!(
                    "a qualified name {QUALIFIED_NAME_HELP} with an optional DNS subdomain \
                     prefix and '/' (e.g. 'example.com/MyName')"
                ),
            });
        }
    };
    if name.is_empty() {
        reasons.push("name part must be non-empty".to_string());
    } else if name.len() > NAME_MAX_LENGTH {
        reasons.push(format!(
            "name part must be no more than {NAME_MAX_LENGTH} bytes"
        ));
    } else if !is_qualified_name_part(name) {
        reasons.push(format!("name part {QUALIFIED_NAME_HELP}"));
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(SelectorError::InvalidKey {
            key: key.to_string(),
            reason: reasons.join("; "),
        })
    }
}

/// A label value is empty or a name part of at most 63 bytes.
fn validate_label_value(key: &str, value: &str) -> Result<(), SelectorError> {
    let reason = if value.len() > NAME_MAX_LENGTH {
        format!("must be no more than {NAME_MAX_LENGTH} bytes")
    } else if !value.is_empty() && !is_qualified_name_part(value) {
        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' \
         or '.', and must start and end with an alphanumeric character (e.g. 'MyValue', or \
         'my_value', or '12345')"
            .to_string()
    } else {
        return Ok(());
    };
    Err(SelectorError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        reason,
    })
}

// ---------------------------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct FieldTerm {
    field: String,
    value: String,
    /// `=`/`==` when true, `!=` when false.
    equal: bool,
}

/// A parsed field selector: an AND of `field=value` / `field!=value` terms. The empty selector
/// matches everything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldSelector {
    /// Sorted, so equal selectors compare equal whatever order they were written in.
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parses the `fieldSelector` syntax: `a=b`, `a==b`, `a!=b`, comma is AND. In values, `\,`,
    /// `\=` and `\\` stand for `,`, `=` and `\`; any other backslash sequence, or a bare `,`/`=`
    /// in a value, is an error. Whitespace is significant, as upstream.
    pub fn parse(s: &str) -> Result<FieldSelector, SelectorError> {
        let mut terms = Vec::new();
        for term in split_unescaped_commas(s) {
            if term.is_empty() {
                continue;
            }
            let Some((field, operator, raw_value)) = split_field_term(term) else {
                return Err(SelectorError::InvalidFieldTerm {
                    selector: s.to_string(),
                    term: term.to_string(),
                });
            };
            terms.push(FieldTerm {
                field: field.to_string(),
                value: unescape_field_value(raw_value)?,
                equal: operator != "!=",
            });
        }
        terms.sort();
        Ok(FieldSelector { terms })
    }

    /// Evaluates the selector. `field` returns the value of a field path for the object, or None
    /// if the kind does not support that field, which is an error even when another term
    /// already failed to match (so a bad request is reported whatever the data).
    pub fn matches(&self, field: impl Fn(&str) -> Option<String>) -> Result<bool, SelectorError> {
        let mut all = true;
        for term in &self.terms {
            let Some(actual) = field(&term.field) else {
                return Err(SelectorError::UnsupportedField {
                    field: term.field.clone(),
                });
            };
            all &= (actual == term.value) == term.equal;
        }
        Ok(all)
    }

    /// Matches against an object of `kind` through [`field_value`].
    pub fn matches_object(&self, kind: &str, object: &Value) -> Result<bool, SelectorError> {
        self.matches(|field| field_value(kind, object, field))
    }

    /// Errors if `kind` cannot be selected on one of the fields used, before touching any object.
    pub fn validate_for(&self, kind: &str) -> Result<(), SelectorError> {
        match self.fields().find(|field| !supports_field(kind, field)) {
            Some(field) => Err(SelectorError::UnsupportedField {
                field: field.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// The value this selector requires `field` to equal, if it has such a term (e.g. a watch
    /// on `metadata.name=foo`, which can be served as a single-object watch).
    pub fn exact_match(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.equal && t.field == field)
            .map(|t| t.value.as_str())
    }

    /// The field names used, for validation against the kind.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(|t| t.field.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, term) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let operator = if term.equal { "=" } else { "!=" };
            let escaped = term
                .value
                .replace('\\', "\\\\")
                .replace(',', "\\,")
                .replace('=', "\\=");
            write!(f, "{}{operator}{escaped}", term.field)?;
        }
        Ok(())
    }
}

/// Splits on commas not preceded by a backslash escape.
fn split_unescaped_commas(s: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Finds the first operator in the term. At each position `!=` is tried before `==` before `=`,
/// so `a==b` is `a` `==` `b`, not `a` `=` `=b`.
fn split_field_term(term: &str) -> Option<(&str, &'static str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for operator in ["!=", "==", "="] {
            if let Some(value) = rest.strip_prefix(operator) {
                return Some((&term[..i], operator, value));
            }
        }
    }
    None
}

fn unescape_field_value(s: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('\\' | ',' | '=')) => out.push(escaped),
                Some(other) => {
                    return Err(SelectorError::InvalidEscape {
                        sequence: format!("\\{other}"),
                    })
                }
                None => {
                    return Err(SelectorError::InvalidEscape {
                        sequence: "\\".to_string(),
                    })
                }
            },
            ',' | '=' => return Err(SelectorError::UnescapedCharacter { character: c }),
            _ => out.push(c),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Selectable fields per kind
// ---------------------------------------------------------------------------------------------

/// Kinds upstream does not allow to be selected on `metadata.namespace` (their field label
/// conversion lists only `metadata.name` and their own fields).
const WITHOUT_NAMESPACE_FIELD: &[&str] = &["Node", "Namespace", "CertificateSigningRequest"];

/// Whether a field selector on `kind` may use `field` (upstream's per-kind field label
/// conversion functions; kinds without one support `metadata.name` and `metadata.namespace`).
pub fn supports_field(kind: &str, field: &str) -> bool {
    field_value(kind, &Value::Null, field).is_some()
}

/// The value of a selectable field of an object given as JSON, or None if `kind` does not
/// support selecting on `field`. Absent fields read as their Go zero value (`""`, `0`,
/// `false`), as upstream, so `spec.nodeName=` selects unscheduled pods.
///
/// Events are accepted in either shape (core `v1` with `involvedObject`, or `events.k8s.io/v1`
/// with `regarding`), and under either set of field names.
pub fn field_value(kind: &str, object: &Value, field: &str) -> Option<String> {
    let string = |path: &[&str]| string_at(object, path);
    match (kind, field) {
        (_, "metadata.name") => Some(string(&["metadata", "name"])),
        (kind, "metadata.namespace") if !WITHOUT_NAMESPACE_FIELD.contains(&kind) => {
            Some(string(&["metadata", "namespace"]))
        }

        // `spec.host` is what very old clients send for spec.nodeName; upstream still maps it.
        ("Pod", "spec.nodeName" | "spec.host") => Some(string(&["spec", "nodeName"])),
        ("Pod", "spec.restartPolicy") => Some(string(&["spec", "restartPolicy"])),
        ("Pod", "spec.schedulerName") => Some(string(&["spec", "schedulerName"])),
        ("Pod", "spec.serviceAccountName") => Some(string(&["spec", "serviceAccountName"])),
        ("Pod", "spec.hostNetwork") => Some(bool_at(object, &["spec", "hostNetwork"])),
        ("Pod", "status.phase") => Some(string(&["status", "phase"])),
        ("Pod", "status.podIP") => Some(pod_ip(object)),
        ("Pod", "status.nominatedNodeName") => Some(string(&["status", "nominatedNodeName"])),

        ("Event", _) => event_field(object, field),

        ("Secret", "type") => Some(string(&["type"])),
        ("Namespace", "status.phase") => Some(string(&["status", "phase"])),
        ("Node", "spec.unschedulable") => Some(bool_at(object, &["spec", "unschedulable"])),
        ("Service", "spec.clusterIP") => Some(string(&["spec", "clusterIP"])),
        ("Service", "spec.type") => Some(string(&["spec", "type"])),
        ("ReplicaSet" | "ReplicationController", "status.replicas") => {
            Some(int_at(object, &["status", "replicas"]))
        }
        // Upstream names this field `status.successful` although the JSON field is `succeeded`.
        ("Job", "status.successful") => Some(int_at(object, &["status", "succeeded"])),
        ("CertificateSigningRequest", "spec.signerName") => Some(string(&["spec", "signerName"])),
        _ => None,
    }
}

/// Event fields, under the core names and the events.k8s.io names, read from either shape.
fn event_field(event: &Value, field: &str) -> Option<String> {
    let first_present = |paths: &[&[&str]]| {
        paths
            .iter()
            .find_map(|path| value_at(event, path).map(|_| string_at(event, path)))
    };
    let reporting_controller =
        || first_present(&[&["reportingComponent"], &["reportingController"]]).unwrap_or_default();
    if let Some(reference_field) = field
        .strip_prefix("involvedObject.")
        .or_else(|| field.strip_prefix("regarding."))
    {
        const REFERENCE_FIELDS: &[&str] = &[
            "kind",
            "namespace",
            "name",
            "uid",
            "apiVersion",
            "resourceVersion",
            "fieldPath",
        ];
        if !REFERENCE_FIELDS.contains(&reference_field) {
            return None;
        }
        let value = first_present(&[
            &["involvedObject", reference_field],
            &["regarding", reference_field],
        ]);
        return Some(value.unwrap_or_default());
    }
    match field {
        "reason" => Some(string_at(event, &["reason"])),
        "type" => Some(string_at(event, &["type"])),
        "reportingComponent" | "reportingController" => Some(reporting_controller()),
        // Upstream falls back to the reporting controller when the old source is unset.
        "source" => {
            let source =
                first_present(&[&["source", "component"], &["deprecatedSource", "component"]])
                    .unwrap_or_default();
            Some(if source.is_empty() {
                reporting_controller()
            } else {
                source
            })
        }
        _ => None,
    }
}

/// The pod's primary IP: `status.podIPs[0].ip`, else the legacy `status.podIP`.
fn pod_ip(pod: &Value) -> String {
    match value_at(pod, &["status", "podIPs"])
        .and_then(|ips| ips.get(0))
        .and_then(|ip| ip.get("ip"))
    {
        Some(Value::String(ip)) => ip.clone(),
        _ => string_at(pod, &["status", "podIP"]),
    }
}

fn value_at<'v>(object: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter()
        .try_fold(object, |v, key| v.get(key))
        .filter(|v| !v.is_null())
}

fn string_at(object: &Value, path: &[&str]) -> String {
    match value_at(object, path) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn bool_at(object: &Value, path: &[&str]) -> String {
    value_at(object, path)
        .and_then(Value::as_bool)
        .unwrap_or(false)
        .to_string()
}

fn int_at(object: &Value, path: &[&str]) -> String {
    value_at(object, path)
        .and_then(Value::as_i64)
        .unwrap_or(0)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(s: &str) -> LabelSelector {
        match LabelSelector::parse(s) {
            Ok(selector) => selector,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    fn parse_error(s: &str) -> String {
        match LabelSelector::parse(s) {
            Ok(selector) => panic!("{s:?} should not parse, got {selector:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_empty_selector_matches_everything() {
        for s in ["", "   ", "\t\n"] {
            let selector = parse(s);
            assert!(selector.is_empty());
            assert!(selector.matches(&labels(&[])));
            assert!(selector.matches(&labels(&[("a", "b")])));
        }
        assert!(!parse("a").is_empty());
    }

    #[test]
    fn equality_operators_need_the_label_with_that_value() {
        for s in ["app=web", "app==web", " app = web ", "app ==web"] {
            let selector = parse(s);
            assert!(selector.matches(&labels(&[("app", "web")])), "{s}");
            assert!(!selector.matches(&labels(&[("app", "db")])), "{s}");
            assert!(!selector.matches(&labels(&[])), "{s}");
        }
        assert_eq!(parse("app=web"), parse("app==web"));
    }

    #[test]
    fn not_equals_matches_a_missing_label() {
        let selector = parse("app!=web");
        assert!(selector.matches(&labels(&[])));
        assert!(selector.matches(&labels(&[("app", "db")])));
        assert!(!selector.matches(&labels(&[("app", "web")])));
    }

    #[test]
    fn in_needs_the_label_with_one_of_the_values() {
        let selector = parse("env in (prod, staging)");
        assert!(selector.matches(&labels(&[("env", "prod")])));
        assert!(selector.matches(&labels(&[("env", "staging")])));
        assert!(!selector.matches(&labels(&[("env", "dev")])));
        assert!(!selector.matches(&labels(&[])));
    }

    #[test]
    fn notin_matches_a_missing_label() {
        let selector = parse("env notin (prod)");
        assert!(selector.matches(&labels(&[])));
        assert!(selector.matches(&labels(&[("env", "dev")])));
        assert!(!selector.matches(&labels(&[("env", "prod")])));
    }

    #[test]
    fn a_bare_key_means_exists_and_a_bang_means_does_not_exist() {
        let exists = parse("app");
        assert!(exists.matches(&labels(&[("app", "")])));
        assert!(!exists.matches(&labels(&[("other", "x")])));
        let absent = parse("!app");
        assert!(absent.matches(&labels(&[("other", "x")])));
        assert!(!absent.matches(&labels(&[("app", "")])));
        assert!(parse(" ! app ").matches(&labels(&[])));
    }

    #[test]
    fn greater_and_less_than_compare_integers() {
        let gt = parse("replicas>3");
        assert!(gt.matches(&labels(&[("replicas", "4")])));
        assert!(!gt.matches(&labels(&[("replicas", "3")])));
        assert!(!gt.matches(&labels(&[("replicas", "many")])));
        assert!(!gt.matches(&labels(&[])));
        let lt = parse("replicas < 3");
        assert!(lt.matches(&labels(&[("replicas", "2")])));
        assert!(!lt.matches(&labels(&[("replicas", "3")])));
        assert!(parse_error("replicas>three").contains("must be an integer"));
    }

    #[test]
    fn commas_are_and() {
        let selector = parse("app=web, tier in (front,back),!legacy ,env!=prod");
        assert!(selector.matches(&labels(&[("app", "web"), ("tier", "front")])));
        assert!(!selector.matches(&labels(&[("app", "web"), ("tier", "db")])));
        assert!(!selector.matches(&labels(&[
            ("app", "web"),
            ("tier", "front"),
            ("legacy", "")
        ])));
        assert!(!selector.matches(&labels(&[
            ("app", "web"),
            ("tier", "back"),
            ("env", "prod")
        ])));
    }

    #[test]
    fn in_and_notin_are_plain_values_inside_a_set_and_as_keys() {
        let selector = parse("op in (in,notin)");
        assert!(selector.matches(&labels(&[("op", "in")])));
        assert!(selector.matches(&labels(&[("op", "notin")])));
        assert!(parse("in=x").matches(&labels(&[("in", "x")])));
        assert!(parse("notin").matches(&labels(&[("notin", "")])));
    }

    #[test]
    fn empty_values_are_allowed_as_upstream() {
        assert!(parse("a=").matches(&labels(&[("a", "")])));
        assert!(!parse("a=").matches(&labels(&[("a", "x")])));
        assert!(parse("a=,b").matches(&labels(&[("a", ""), ("b", "1")])));
        assert!(parse("a in ()").matches(&labels(&[("a", "")])));
        let with_empty = parse("x in (foo,,baz),y,z notin ()");
        assert!(with_empty.matches(&labels(&[("x", ""), ("y", "1")])));
        assert!(parse("a in (b,)").matches(&labels(&[("a", "")])));
        assert!(parse("a in (,b)").matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn prefixed_keys_are_accepted() {
        let selector = parse("app.kubernetes.io/name=web,example.com/Tier_1.x in (a)");
        assert!(selector.matches(&labels(&[
            ("app.kubernetes.io/name", "web"),
            ("example.com/Tier_1.x", "a")
        ])));
    }

    #[test]
    fn order_and_duplicates_do_not_change_equality() {
        assert_eq!(parse("b=1,a in (y,x,x)"), parse("a in (x,y), b==1"));
        assert_ne!(parse("a=1"), parse("a!=1"));
    }

    #[test]
    fn display_prints_the_canonical_form() {
        assert_eq!(
            parse("z, !y, b in (2,1), a notin (x), c==d, e!=f, g>1, h<2").to_string(),
            "a notin (x),b in (1,2),c=d,e!=f,g>1,h<2,!y,z"
        );
        for s in ["a=b", "a in (x,y),b", "!c", ""] {
            assert_eq!(parse(&parse(s).to_string()), parse(s));
        }
    }

    #[test]
    fn syntax_errors_name_what_was_found_and_expected() {
        assert_eq!(
            parse_error("a in (b"),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
        assert_eq!(
            parse_error("a in b"),
            "unable to parse requirement: found 'b', expected: '('"
        );
        assert_eq!(
            parse_error("a=b c"),
            "found 'c', expected: ',' or 'end of string'"
        );
        assert_eq!(
            parse_error("a=b,"),
            "found '', expected: identifier after ','"
        );
        assert_eq!(
            parse_error(",a"),
            "found ',', expected: !, identifier, or 'end of string'"
        );
        assert!(parse_error("a b").contains("found 'b', expected: in, notin"));
        assert!(parse_error("a=(b)").contains("found '(', expected: identifier"));
        assert!(parse_error("!").contains("found '', expected: identifier"));
        assert!(parse_error("!a=b").contains("found '=', expected: ',' or 'end of string'"));
        assert!(parse_error("a in (b c)").contains("found 'c', expected: ',' or ')'"));
        assert!(parse_error("a in (=)").contains("found '='"));
        assert!(parse_error("a in ((b))").contains("found '('"));
        assert!(parse_error("a=b)").contains("found ')'"));
        assert!(parse_error("a===b").contains("found '='"));
    }

    #[test]
    fn invalid_keys_are_rejected_with_the_reason() {
        assert!(parse_error("a b=c").contains("found 'b'"));
        assert!(parse_error("-a=b").contains("name part must consist of alphanumeric"));
        assert!(parse_error("a_=b").contains("invalid label key \"a_\""));
        assert!(parse_error("/a=b").contains("prefix part must be non-empty"));
        assert!(parse_error("a/=b").contains("name part must be non-empty"));
        assert!(parse_error("a/b/c=d").contains("a qualified name must consist"));
        assert!(parse_error("Example.com/a=b").contains("prefix part a lowercase RFC 1123"));
        assert!(parse_error("ex..com/a=b").contains("prefix part"));
        assert!(parse_error("ünï=b").contains("invalid label key"));
        let long = "k".repeat(64);
        assert!(parse_error(&format!("{long}=v")).contains("no more than 63 bytes"));
        assert!(LabelSelector::parse(&format!("{}=v", "k".repeat(63))).is_ok());
        let long_prefix = format!("{}/k=v", "p".repeat(254));
        assert!(parse_error(&long_prefix).contains("no more than 253 bytes"));
    }

    #[test]
    fn invalid_values_are_rejected_with_the_reason() {
        let long = "v".repeat(64);
        let message = parse_error(&format!("k={long}"));
        assert!(
            message.contains("must be no more than 63 bytes"),
            "{message}"
        );
        assert!(LabelSelector::parse(&format!("k={}", "v".repeat(63))).is_ok());
        assert!(parse_error("k=-v").contains("a valid label must be an empty string"));
        assert!(parse_error("k in (ok, bad_)").contains("invalid label value \"bad_\""));
        assert!(parse_error("k=a/b").contains("invalid label value"));
    }

    #[test]
    fn from_label_selector_converts_match_labels_and_expressions() {
        let selector: metav1::LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front", "back"]},
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
                {"key": "owner", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist"}
            ]
        }))
        .expect("valid metav1.LabelSelector JSON");
        let converted = LabelSelector::from_label_selector(&selector).expect("valid selector");
        assert_eq!(
            converted,
            parse("app=web,tier in (front,back),env notin (prod),owner,!legacy")
        );
        assert!(converted.matches(&labels(&[
            ("app", "web"),
            ("tier", "back"),
            ("owner", "me")
        ])));
        assert!(!converted.matches(&labels(&[("app", "web"), ("tier", "back")])));
    }

    #[test]
    fn an_empty_metav1_selector_matches_everything() {
        let selector = metav1::LabelSelector::default();
        let converted = LabelSelector::from_label_selector(&selector).expect("valid selector");
        assert!(converted.is_empty());
        assert!(converted.matches(&labels(&[("any", "thing")])));
    }

    #[test]
    fn from_label_selector_rejects_bad_operators_and_value_counts() {
        let with = |operator: &str, values: Option<Vec<&str>>| metav1::LabelSelector {
            match_expressions: Some(vec![metav1::LabelSelectorRequirement {
                key: "k".to_string(),
                operator: operator.to_string(),
                values: values.map(|v| v.into_iter().map(String::from).collect()),
            }]),
            ..Default::default()
        };
        let error = |s: metav1::LabelSelector| match LabelSelector::from_label_selector(&s) {
            Ok(selector) => panic!("{s:?} should be refused, got {selector:?}"),
            Err(e) => e.to_string(),
        };
        assert_eq!(
            error(with("Gt", Some(vec!["1"]))),
            "\"Gt\" is not a valid label selector operator"
        );
        assert!(error(with("In", None)).contains("values set can't be empty"));
        assert!(error(with("NotIn", Some(vec![]))).contains("values set can't be empty"));
        assert!(error(with("Exists", Some(vec!["x"]))).contains("must be empty"));
        assert!(error(with("In", Some(vec!["bad value"]))).contains("invalid label value"));
        let bad_key = metav1::LabelSelector {
            match_labels: Some([("bad key".to_string(), "v".to_string())].into()),
            ..Default::default()
        };
        assert!(error(bad_key).contains("invalid label key"));
    }

    #[test]
    fn from_labels_requires_every_pair() {
        let selector = LabelSelector::from_labels(&labels(&[("app", "web"), ("tier", "front")]));
        assert_eq!(selector, parse("app=web,tier=front"));
        assert!(selector.matches(&labels(&[("app", "web"), ("tier", "front"), ("x", "y")])));
        assert!(!selector.matches(&labels(&[("app", "web")])));
        assert!(LabelSelector::from_labels(&BTreeMap::new()).matches(&labels(&[])));
    }

    /// Random strings over an alphabet rich in the grammar's symbols: parsing must return
    /// Ok or Err, never panic, and whatever parses must print to something that parses the same.
    #[test]
    fn parsing_random_strings_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xbe27);
        let pieces = [
            "a",
            "b",
            "x.y/z",
            "in",
            "notin",
            "(",
            ")",
            ",",
            "=",
            "==",
            "!=",
            "!",
            ">",
            "<",
            " ",
            "\t",
            "1",
            "-",
            "_",
            ".",
            "/",
            "\\",
            "é",
            "\u{0}",
            "\u{1F600}",
            "",
            "ab=cd",
        ];
        let mut parsed = 0;
        for _ in 0..20_000 {
            let count = rng.random_range(0..12);
            let s: String = (0..count)
                .map(|_| pieces[rng.random_range(0..pieces.len())])
                .collect();
            if let Ok(selector) = LabelSelector::parse(&s) {
                parsed += 1;
                assert_eq!(
                    LabelSelector::parse(&selector.to_string()).as_ref(),
                    Ok(&selector)
                );
            }
            let _ = FieldSelector::parse(&s);
        }
        // The generator must reach the success path too, or the round trip proves nothing.
        assert!(parsed > 100, "only {parsed} random selectors parsed");
    }

    // ----- field selectors -----

    fn fields(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map = labels(pairs);
        move |f: &str| map.get(f).cloned()
    }

    fn field_selector(s: &str) -> FieldSelector {
        match FieldSelector::parse(s) {
            Ok(selector) => selector,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    #[test]
    fn field_selector_operators_compare_values() {
        let get = fields(&[("metadata.name", "web"), ("status.phase", "Running")]);
        assert_eq!(field_selector("metadata.name=web").matches(&get), Ok(true));
        assert_eq!(field_selector("metadata.name==web").matches(&get), Ok(true));
        assert_eq!(
            field_selector("metadata.name!=web").matches(&get),
            Ok(false)
        );
        assert_eq!(field_selector("metadata.name=db").matches(&get), Ok(false));
        assert_eq!(
            field_selector("metadata.name=web,status.phase!=Pending").matches(&get),
            Ok(true)
        );
        assert_eq!(
            field_selector("metadata.name=web,status.phase=Pending").matches(&get),
            Ok(false)
        );
        assert_eq!(
            field_selector("metadata.name==web"),
            field_selector("metadata.name=web")
        );
    }

    #[test]
    fn an_empty_field_selector_matches_everything() {
        for s in ["", ",", ",,"] {
            let selector = field_selector(s);
            assert!(selector.is_empty());
            assert_eq!(selector.matches(|_| None), Ok(true));
        }
    }

    #[test]
    fn an_empty_field_value_selects_unset_fields() {
        let selector = field_selector("spec.nodeName=");
        assert_eq!(selector.matches(fields(&[("spec.nodeName", "")])), Ok(true));
        assert_eq!(
            selector.matches(fields(&[("spec.nodeName", "node-1")])),
            Ok(false)
        );
    }

    #[test]
    fn field_selector_values_unescape_commas_equals_and_backslashes() {
        let selector = field_selector(r"a=x\,y\=z\\w,b!=1");
        assert_eq!(selector.exact_match("a"), Some(r"x,y=z\w"));
        assert_eq!(selector.fields().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(
            selector.matches(fields(&[("a", r"x,y=z\w"), ("b", "2")])),
            Ok(true)
        );
        assert_eq!(selector.to_string(), r"a=x\,y\=z\\w,b!=1");
        assert_eq!(field_selector(&selector.to_string()), selector);
    }

    #[test]
    fn field_selector_escape_errors_are_reported() {
        let error = |s: &str| match FieldSelector::parse(s) {
            Ok(selector) => panic!("{s:?} should not parse, got {selector:?}"),
            Err(e) => e,
        };
        assert_eq!(
            error(r"a=b\n"),
            SelectorError::InvalidEscape {
                sequence: r"\n".to_string()
            }
        );
        assert_eq!(
            error(r"a=b\"),
            SelectorError::InvalidEscape {
                sequence: r"\".to_string()
            }
        );
        assert_eq!(
            error("a=b=c"),
            SelectorError::UnescapedCharacter { character: '=' }
        );
        assert_eq!(
            error("a===b"),
            SelectorError::UnescapedCharacter { character: '=' }
        );
        assert_eq!(
            error("a=b,nonsense").to_string(),
            "invalid selector: 'a=b,nonsense'; can't understand 'nonsense'"
        );
    }

    #[test]
    fn an_unsupported_field_is_an_error_even_after_a_mismatch() {
        let selector = field_selector("metadata.name=other,spec.bogus=x");
        assert_eq!(
            selector.matches(fields(&[("metadata.name", "web")])),
            Err(SelectorError::UnsupportedField {
                field: "spec.bogus".to_string()
            })
        );
        assert_eq!(
            selector.validate_for("Pod").map_err(|e| e.to_string()),
            Err("field label not supported: spec.bogus".to_string())
        );
        assert_eq!(
            field_selector("spec.nodeName=n,metadata.name=x").validate_for("Pod"),
            Ok(())
        );
    }

    #[test]
    fn exact_match_ignores_not_equal_terms() {
        assert_eq!(
            field_selector("metadata.name!=a").exact_match("metadata.name"),
            None
        );
        assert_eq!(
            field_selector("metadata.name==a").exact_match("metadata.name"),
            Some("a")
        );
    }

    // ----- selectable fields -----

    #[test]
    fn every_kind_selects_on_name_and_namespace() {
        let object = json!({"metadata": {"name": "web", "namespace": "prod"}});
        assert_eq!(
            field_value("ConfigMap", &object, "metadata.name").as_deref(),
            Some("web")
        );
        assert_eq!(
            field_value("ConfigMap", &object, "metadata.namespace").as_deref(),
            Some("prod")
        );
        assert_eq!(
            field_value("Widget", &json!({}), "metadata.namespace").as_deref(),
            Some("")
        );
        assert_eq!(field_value("ConfigMap", &object, "data.key"), None);
        // Upstream's cluster-scoped kinds with their own conversion drop metadata.namespace.
        assert_eq!(field_value("Node", &object, "metadata.namespace"), None);
        assert_eq!(
            field_value("Node", &object, "metadata.name").as_deref(),
            Some("web")
        );
    }

    #[test]
    fn pod_fields_read_nested_values_with_upstream_defaults() {
        let pod = json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"nodeName": "n1", "restartPolicy": "Always",
                     "schedulerName": "default-scheduler", "serviceAccountName": "sa",
                     "hostNetwork": true},
            "status": {"phase": "Running", "podIP": "10.0.0.9",
                       "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}], "nominatedNodeName": "n2"}
        });
        let get = |f: &str| field_value("Pod", &pod, f);
        assert_eq!(get("spec.nodeName").as_deref(), Some("n1"));
        assert_eq!(get("spec.host").as_deref(), Some("n1"));
        assert_eq!(get("spec.restartPolicy").as_deref(), Some("Always"));
        assert_eq!(
            get("spec.schedulerName").as_deref(),
            Some("default-scheduler")
        );
        assert_eq!(get("spec.serviceAccountName").as_deref(), Some("sa"));
        assert_eq!(get("spec.hostNetwork").as_deref(), Some("true"));
        assert_eq!(get("status.phase").as_deref(), Some("Running"));
        assert_eq!(get("status.podIP").as_deref(), Some("10.0.0.5"));
        assert_eq!(get("status.nominatedNodeName").as_deref(), Some("n2"));
        assert_eq!(get("spec.containers"), None);

        let bare = json!({"metadata": {"name": "p"}, "status": {"podIP": "10.0.0.9"}});
        assert_eq!(
            field_value("Pod", &bare, "spec.nodeName").as_deref(),
            Some("")
        );
        assert_eq!(
            field_value("Pod", &bare, "spec.hostNetwork").as_deref(),
            Some("false")
        );
        assert_eq!(
            field_value("Pod", &bare, "status.podIP").as_deref(),
            Some("10.0.0.9")
        );
        let selector = field_selector("spec.nodeName=,status.phase!=Succeeded");
        assert_eq!(selector.matches_object("Pod", &bare), Ok(true));
        assert_eq!(selector.matches_object("Pod", &pod), Ok(false));
    }

    #[test]
    fn core_event_fields_include_the_involved_object() {
        let event = json!({
            "metadata": {"name": "e", "namespace": "ns"},
            "involvedObject": {"kind": "Pod", "namespace": "ns", "name": "p", "uid": "u-1",
                               "apiVersion": "v1", "resourceVersion": "12",
                               "fieldPath": "spec.containers{c}"},
            "reason": "Pulled", "type": "Normal", "reportingComponent": "kubelet",
            "source": {"component": "kubelet-src"}
        });
        let get = |f: &str| field_value("Event", &event, f);
        assert_eq!(get("involvedObject.kind").as_deref(), Some("Pod"));
        assert_eq!(get("involvedObject.namespace").as_deref(), Some("ns"));
        assert_eq!(get("involvedObject.name").as_deref(), Some("p"));
        assert_eq!(get("involvedObject.uid").as_deref(), Some("u-1"));
        assert_eq!(get("involvedObject.apiVersion").as_deref(), Some("v1"));
        assert_eq!(get("involvedObject.resourceVersion").as_deref(), Some("12"));
        assert_eq!(
            get("involvedObject.fieldPath").as_deref(),
            Some("spec.containers{c}")
        );
        assert_eq!(get("regarding.name").as_deref(), Some("p"));
        assert_eq!(get("reason").as_deref(), Some("Pulled"));
        assert_eq!(get("type").as_deref(), Some("Normal"));
        assert_eq!(get("reportingComponent").as_deref(), Some("kubelet"));
        assert_eq!(get("source").as_deref(), Some("kubelet-src"));
        assert_eq!(get("involvedObject.color"), None);
        assert_eq!(get("message"), None);
        let selector =
            field_selector("involvedObject.kind=Pod,involvedObject.name=p,type!=Warning");
        assert_eq!(selector.matches_object("Event", &event), Ok(true));
    }

    #[test]
    fn events_k8s_io_fields_use_regarding_and_reporting_controller() {
        let event = json!({
            "metadata": {"name": "e", "namespace": "ns"},
            "regarding": {"kind": "Node", "name": "n1"},
            "reason": "Rebooted", "type": "Warning", "reportingController": "berth/agent"
        });
        let get = |f: &str| field_value("Event", &event, f);
        assert_eq!(get("regarding.kind").as_deref(), Some("Node"));
        assert_eq!(get("involvedObject.kind").as_deref(), Some("Node"));
        assert_eq!(get("regarding.namespace").as_deref(), Some(""));
        assert_eq!(get("reportingController").as_deref(), Some("berth/agent"));
        assert_eq!(get("reportingComponent").as_deref(), Some("berth/agent"));
        // No deprecated source: upstream falls back to the reporting controller.
        assert_eq!(get("source").as_deref(), Some("berth/agent"));
    }

    #[test]
    fn other_kinds_expose_their_upstream_fields() {
        let secret = json!({"type": "kubernetes.io/tls"});
        assert_eq!(
            field_value("Secret", &secret, "type").as_deref(),
            Some("kubernetes.io/tls")
        );
        let namespace = json!({"status": {"phase": "Terminating"}});
        assert_eq!(
            field_value("Namespace", &namespace, "status.phase").as_deref(),
            Some("Terminating")
        );
        assert_eq!(
            field_value("Namespace", &namespace, "metadata.namespace"),
            None
        );
        let node = json!({"spec": {"unschedulable": true}});
        assert_eq!(
            field_value("Node", &node, "spec.unschedulable").as_deref(),
            Some("true")
        );
        assert_eq!(
            field_value("Node", &json!({}), "spec.unschedulable").as_deref(),
            Some("false")
        );
        let rs = json!({"status": {"replicas": 3}});
        assert_eq!(
            field_value("ReplicaSet", &rs, "status.replicas").as_deref(),
            Some("3")
        );
        assert_eq!(
            field_value("ReplicationController", &json!({}), "status.replicas").as_deref(),
            Some("0")
        );
        let job = json!({"status": {"succeeded": 2}});
        assert_eq!(
            field_value("Job", &job, "status.successful").as_deref(),
            Some("2")
        );
        assert_eq!(field_value("Job", &job, "status.succeeded"), None);
        let csr = json!({"spec": {"signerName": "kubernetes.io/kubelet-serving"}});
        assert_eq!(
            field_value("CertificateSigningRequest", &csr, "spec.signerName").as_deref(),
            Some("kubernetes.io/kubelet-serving")
        );
        let service = json!({"spec": {"type": "ClusterIP", "clusterIP": "10.43.0.1"}});
        assert_eq!(
            field_value("Service", &service, "spec.type").as_deref(),
            Some("ClusterIP")
        );
        assert_eq!(
            field_value("Service", &service, "spec.clusterIP").as_deref(),
            Some("10.43.0.1")
        );
        assert_eq!(field_value("Deployment", &rs, "status.replicas"), None);
        assert!(supports_field("Pod", "status.phase"));
        assert!(!supports_field("ConfigMap", "status.phase"));
    }

    #[test]
    fn wrongly_typed_json_reads_as_the_zero_value_not_a_panic() {
        let odd = json!({"metadata": "not an object", "spec": {"hostNetwork": "yes", "nodeName": 5},
                         "status": {"podIPs": "none", "replicas": "three"}});
        assert_eq!(
            field_value("Pod", &odd, "metadata.name").as_deref(),
            Some("")
        );
        assert_eq!(
            field_value("Pod", &odd, "spec.hostNetwork").as_deref(),
            Some("false")
        );
        assert_eq!(
            field_value("Pod", &odd, "spec.nodeName").as_deref(),
            Some("5")
        );
        assert_eq!(
            field_value("Pod", &odd, "status.podIP").as_deref(),
            Some("")
        );
        assert_eq!(
            field_value("ReplicaSet", &odd, "status.replicas").as_deref(),
            Some("0")
        );
        assert_eq!(
            field_value("Pod", &Value::Null, "status.phase").as_deref(),
            Some("")
        );
    }
}
