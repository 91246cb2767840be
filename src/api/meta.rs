//! Object metadata on untyped JSON: accessors, name rules, timestamps.

use serde_json::{Map, Value};

use super::status::Cause;

/// `metadata` of an object, created if missing.
pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = Value::Object(Map::new());
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

/// A string field of `metadata`, or "" when absent.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name")
}

pub fn namespace(obj: &Value) -> &str {
    meta_str(obj, "namespace")
}

pub fn resource_version(obj: &Value) -> &str {
    meta_str(obj, "resourceVersion")
}

pub fn set_resource_version(obj: &mut Value, revision: u64) {
    metadata_mut(obj).insert(
        "resourceVersion".into(),
        Value::String(revision.to_string()),
    );
}

/// Labels as a map (missing or malformed labels read as none).
pub fn labels(obj: &Value) -> std::collections::BTreeMap<String, String> {
    obj.get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|l| {
            l.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.get("metadata")
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn is_deleting(obj: &Value) -> bool {
    !meta_str(obj, "deletionTimestamp").is_empty()
}

/// A new random (version 4) UUID, for object UIDs and request IDs. Drawn from the thread's
/// CSPRNG, which the OS seeds once per thread, instead of from one `getrandom` syscall per UUID
/// (`Uuid::new_v4`): every create takes one, and so does every audited request.
pub fn new_uid() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

/// RFC 3339 with second precision, as Kubernetes writes metav1.Time.
pub fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

/// RFC 3339 with microseconds, as Kubernetes writes metav1.MicroTime.
pub fn now_rfc3339_micros() -> String {
    let now = jiff::Timestamp::now();
    format!("{:.6}", now).replace("+00:00", "Z")
}

/// A DNS-1123 subdomain: what most object names must be.
pub fn check_dns1123_subdomain(value: &str) -> Option<String> {
    if value.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    let ok = !value.is_empty() && value.split('.').all(is_dns1123_label_text);
    (!ok).then(|| {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into()
    })
}

/// A DNS-1123 label: names of namespaces and services.
pub fn check_dns1123_label(value: &str) -> Option<String> {
    if value.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    (!is_dns1123_label_text(value)).then(|| {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".into()
    })
}

fn is_dns1123_label_text(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Names that could never be a path segment, whatever the kind (upstream's path-segment rule).
pub fn check_path_segment(value: &str) -> Option<String> {
    if value == "." || value == ".." {
        return Some(format!("may not be '{value}'"));
    }
    if value.contains('/') || value.contains('%') {
        return Some("may not contain '/' or '%'".into());
    }
    None
}

/// Validates the parts of metadata every kind shares: labels and annotations.
pub fn validate_labels_and_annotations(obj: &Value, causes: &mut Vec<Cause>) {
    let meta = obj.get("metadata");
    if let Some(labels) = meta
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
    {
        for (key, value) in labels {
            if let Some(problem) = check_qualified_name(key) {
                causes.push(Cause::invalid("metadata.labels", key, &problem));
            }
            let v = value.as_str().unwrap_or("");
            if let Some(problem) = check_label_value(v) {
                causes.push(Cause::invalid(
                    &format!("metadata.labels[{key}]"),
                    v,
                    &problem,
                ));
            }
        }
    }
    if let Some(annotations) = meta
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
    {
        let mut total = 0;
        for (key, value) in annotations {
            if let Some(problem) = check_qualified_name(key) {
                causes.push(Cause::invalid("metadata.annotations", key, &problem));
            }
            total += key.len() + value.as_str().map_or(0, str::len);
        }
        if total > 256 * 1024 {
            causes.push(Cause {
                reason: "FieldValueTooLong".into(),
                message: "Too long: may not be more than 262144 bytes".into(),
                field: "metadata.annotations".into(),
            });
        }
    }
}

/// A label or annotation key: optional DNS subdomain prefix, then a name of ≤ 63 characters.
pub fn check_qualified_name(key: &str) -> Option<String> {
    qualified_name_problems(key).into_iter().next()
}

/// Everything wrong with a qualified name, one message each, as upstream's `IsQualifiedName`
/// lists them (an empty name is both empty and not matching the pattern).
pub fn qualified_name_problems(key: &str) -> Vec<String> {
    const NAME_PATTERN: &str = "consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    let mut problems = Vec::new();
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts[..] {
        [name] => name,
        [prefix, name] => {
            if prefix.is_empty() {
                problems.push("prefix part must be non-empty".into());
            } else if let Some(problem) = check_dns1123_subdomain(prefix) {
                problems.push(format!("prefix part {problem}"));
            }
            name
        }
        _ => {
            return vec![format!(
                "a qualified name must {NAME_PATTERN} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )]
        }
    };
    if name.is_empty() {
        problems.push("name part must be non-empty".into());
    } else if name.len() > 63 {
        problems.push("name part must be no more than 63 characters".into());
    }
    let matches = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if !matches {
        problems.push(format!("name part must {NAME_PATTERN}"));
    }
    problems
}

pub fn check_label_value(value: &str) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    let valid = value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && value.as_bytes()[0].is_ascii_alphanumeric()
        && value.as_bytes()[value.len() - 1].is_ascii_alphanumeric();
    (!valid).then(|| "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn new_uids_are_random_version_4_uuids_and_differ() {
        let uids: std::collections::HashSet<uuid::Uuid> = (0..1000).map(|_| new_uid()).collect();
        assert_eq!(uids.len(), 1000);
        for uid in &uids {
            assert_eq!(uid.get_version(), Some(uuid::Version::Random));
            assert_eq!(uid.get_variant(), uuid::Variant::RFC4122);
        }
    }

    #[test]
    fn subdomain_rules_match_upstream_examples() {
        assert!(check_dns1123_subdomain("example.com").is_none());
        assert!(check_dns1123_subdomain("web-1").is_none());
        assert!(check_dns1123_subdomain("Bad_Name").is_some());
        assert!(check_dns1123_subdomain("-x").is_some());
        assert!(check_dns1123_subdomain("").is_some());
        assert!(check_dns1123_subdomain(&"a".repeat(254)).is_some());
    }

    #[test]
    fn labels_keys_and_values_are_checked() {
        let obj = json!({"metadata": {"labels": {"app": "web", "bad key": "x", "k": "-bad"}}});
        let mut causes = Vec::new();
        validate_labels_and_annotations(&obj, &mut causes);
        assert_eq!(causes.len(), 2, "{causes:?}");
        assert!(check_qualified_name("app.kubernetes.io/name").is_none());
        assert!(check_qualified_name("/name").is_some());
    }

    #[test]
    fn metadata_mut_creates_missing_metadata() {
        let mut obj = json!({"kind": "ConfigMap"});
        set_resource_version(&mut obj, 7);
        assert_eq!(resource_version(&obj), "7");
    }

    #[test]
    fn timestamps_are_utc_rfc3339() {
        let t = now_rfc3339();
        assert!(t.ends_with('Z') && t.len() == 20, "{t}");
        let m = now_rfc3339_micros();
        assert!(m.ends_with('Z') && m.len() == 27, "{m}");
    }
}
