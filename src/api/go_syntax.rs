//! Values printed the way Go's `fmt` prints upstream's internal types in error messages.
//!
//! Upstream's `field.Invalid` shows a string quoted (`%q`), a number or bool plainly, a type with
//! a `String()` method (times) through it, and any other struct Go-style (`%#v`): a Deployment
//! whose selector changed is refused with `Invalid value: v1.LabelSelector{MatchLabels:
//! map[string]string{"app":"web"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field
//! is immutable`. People search for these messages and tools match them, so the structs users
//! meet in such messages are printed here field by field, in the order of upstream's types.

use serde_json::{Map, Value};

/// Go's `strconv.Quote`: double quotes, Go's escapes for quotes, backslashes and control
/// characters, `\u` for the invisible characters Go does not count as printable; other text kept.
pub fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if !is_printable(c) => match c as u32 {
                n @ 0..=0xffff => out.push_str(&format!("\\u{n:04x}")),
                n => out.push_str(&format!("\\U{n:08x}")),
            },
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `unicode.IsPrint` for what can reach a message: controls, spaces other than ' ' and the
/// invisible format characters (zero-width space, direction marks, byte-order mark) are not.
fn is_printable(c: char) -> bool {
    let n = c as u32;
    let format_char = matches!(n, 0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e
        | 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x2064 | 0x2066..=0x206f | 0xfeff
        | 0xfff9..=0xfffb | 0xe0001 | 0xe0020..=0xe007f);
    c == ' ' || !(c.is_control() || c.is_whitespace() || format_char)
}

/// A `[]string` under `%#v`: `[]string{"a", "b"}`, `[]string(nil)` when absent.
fn string_slice(v: Option<&Value>) -> String {
    match v.and_then(Value::as_array) {
        None => "[]string(nil)".into(),
        Some(items) => {
            let items: Vec<String> = items.iter().map(|i| quoted(text(Some(i)))).collect();
            format!("[]string{{{}}}", items.join(", "))
        }
    }
}

/// A `map[string]string` under `%#v`: keys sorted, as Go's `fmt` sorts them.
fn string_map(v: Option<&Value>) -> String {
    match v.and_then(Value::as_object) {
        None => "map[string]string(nil)".into(),
        Some(fields) => {
            let mut pairs: Vec<(&String, &Value)> = fields.iter().collect();
            pairs.sort_by(|a, b| a.0.cmp(b.0));
            let pairs: Vec<String> = pairs
                .into_iter()
                .map(|(k, v)| format!("{}:{}", quoted(k), quoted(text(Some(v)))))
                .collect();
            format!("map[string]string{{{}}}", pairs.join(", "))
        }
    }
}

fn text(v: Option<&Value>) -> &str {
    v.and_then(Value::as_str).unwrap_or("")
}

/// A struct under `%#v` whose fields are all strings (named string types print the same way).
fn string_struct(type_name: &str, v: Option<&Value>, fields: &[(&str, &str)]) -> String {
    let object = v.and_then(Value::as_object);
    let field = |json: &str| object.and_then(|o: &Map<String, Value>| o.get(json));
    let fields: Vec<String> = fields
        .iter()
        .map(|(go, json)| format!("{go}:{}", quoted(text(field(json)))))
        .collect();
    format!("{type_name}{{{}}}", fields.join(", "))
}

/// A `metav1.LabelSelector` (`*metav1.LabelSelector` in upstream's specs: `null` when unset).
pub fn label_selector(v: Option<&Value>) -> String {
    let Some(selector) = v.filter(|v| !v.is_null()) else {
        return "null".into();
    };
    let expressions = match selector.get("matchExpressions").and_then(Value::as_array) {
        None => "[]v1.LabelSelectorRequirement(nil)".into(),
        Some(items) => {
            let items: Vec<String> = items
                .iter()
                .map(|r| {
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{}}}",
                        quoted(text(r.get("key"))),
                        quoted(text(r.get("operator"))),
                        string_slice(r.get("values"))
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
    };
    format!(
        "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{expressions}}}",
        string_map(selector.get("matchLabels"))
    )
}

/// A `core.ObjectReference` (an Event's `involvedObject`).
pub fn object_reference(v: Option<&Value>) -> String {
    const FIELDS: &[(&str, &str)] = &[
        ("Kind", "kind"),
        ("Namespace", "namespace"),
        ("Name", "name"),
        ("UID", "uid"),
        ("APIVersion", "apiVersion"),
        ("ResourceVersion", "resourceVersion"),
        ("FieldPath", "fieldPath"),
    ];
    string_struct("core.ObjectReference", v, FIELDS)
}

/// A `core.EventSource` (an Event's `source`).
pub fn event_source(v: Option<&Value>) -> String {
    string_struct(
        "core.EventSource",
        v,
        &[("Component", "component"), ("Host", "host")],
    )
}

/// A `metav1.Time` or `metav1.MicroTime` through Go's `time.Time.String()`, in UTC (the zone
/// upstream's servers run in): `2026-03-01 10:00:00.5 +0000 UTC`; unset is Go's zero time.
/// Text that is no time at all is shown quoted.
pub fn time(v: Option<&Value>) -> String {
    let Some(raw) = v.and_then(Value::as_str).filter(|s| !s.is_empty()) else {
        return "0001-01-01 00:00:00 +0000 UTC".into();
    };
    let Ok(at) = raw.parse::<jiff::Timestamp>() else {
        return quoted(raw);
    };
    let seconds = at.strftime("%Y-%m-%d %H:%M:%S");
    let nanos = at.subsec_nanosecond();
    let fraction = match nanos {
        0 => String::new(),
        n => format!(".{:09}", n).trim_end_matches('0').to_string(),
    };
    format!("{seconds}{fraction} +0000 UTC")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_are_quoted_with_gos_escapes() {
        assert_eq!(
            quoted("a\"b\\c\nd\u{1}\u{7}é\u{200b}\u{a0} x"),
            r#""a\"b\\c\nd\x01\aé\u200b\u00a0 x""#
        );
        assert_eq!(quoted("\u{e0001}"), r#""\U000e0001""#);
    }

    #[test]
    fn a_label_selector_prints_as_upstreams_immutable_selector_message_shows_it() {
        let selector = json!({"matchLabels": {"b": "2", "app": "web"}});
        assert_eq!(
            label_selector(Some(&selector)),
            r#"v1.LabelSelector{MatchLabels:map[string]string{"app":"web", "b":"2"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}"#
        );
        let selector = json!({"matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]},
            {"key": "gone", "operator": "DoesNotExist"}
        ]});
        assert_eq!(
            label_selector(Some(&selector)),
            concat!(
                r#"v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement{"#,
                r#"v1.LabelSelectorRequirement{Key:"tier", Operator:"In", Values:[]string{"a", "b"}}, "#,
                r#"v1.LabelSelectorRequirement{Key:"gone", Operator:"DoesNotExist", Values:[]string(nil)}}}"#
            )
        );
        assert_eq!(label_selector(None), "null");
        assert_eq!(label_selector(Some(&Value::Null)), "null");
    }

    #[test]
    fn event_parts_print_field_by_field_in_upstreams_order() {
        let reference =
            json!({"kind": "Pod", "name": "web", "namespace": "default", "apiVersion": "v1"});
        assert_eq!(
            object_reference(Some(&reference)),
            r#"core.ObjectReference{Kind:"Pod", Namespace:"default", Name:"web", UID:"", APIVersion:"v1", ResourceVersion:"", FieldPath:""}"#
        );
        assert_eq!(
            event_source(None),
            r#"core.EventSource{Component:"", Host:""}"#
        );
    }

    #[test]
    fn times_print_as_gos_time_string() {
        assert_eq!(
            time(Some(&json!("2026-03-01T10:00:00Z"))),
            "2026-03-01 10:00:00 +0000 UTC"
        );
        assert_eq!(
            time(Some(&json!("2026-03-01T12:00:00.500000+02:00"))),
            "2026-03-01 10:00:00.5 +0000 UTC"
        );
        assert_eq!(time(None), "0001-01-01 00:00:00 +0000 UTC");
        assert_eq!(time(Some(&json!("soon"))), r#""soon""#);
    }
}
