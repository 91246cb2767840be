//! Label and field selectors applied to objects, decoded or still in their stored bytes.
//!
//! A list or watch with a selector over many objects spends most of its time deciding which
//! objects pass. Most selectors only look at labels, names and namespaces, so the stored bytes
//! are first read for `metadata` alone, borrowing its strings; the whole object is decoded only
//! when a field selector names a field outside metadata, or when the cheap read fails.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

use super::generic::decode;
use crate::api::meta;
use crate::api::resources::Resource;
use crate::api::selectors::{field_value, FieldSelector, LabelSelector};
use crate::api::{ApiError, ApiResult};

/// Whether an object passes label and field selectors.
fn matches_selectors(
    r: &Resource,
    obj: &Value,
    labels: Option<&LabelSelector>,
    fields: Option<&FieldSelector>,
) -> ApiResult<bool> {
    if let Some(sel) = labels {
        if !sel.matches(&meta::labels(obj)) {
            return Ok(false);
        }
    }
    if let Some(sel) = fields {
        return sel
            .matches(|f| field_value(r.kind, obj, f))
            .map_err(|e| ApiError::bad_request(e.to_string()));
    }
    Ok(true)
}

/// [`matches_selectors`] on an object's stored JSON, decoding only what the selectors need.
pub fn stored_matches_selectors(
    r: &Resource,
    raw: &[u8],
    labels: Option<&LabelSelector>,
    fields: Option<&FieldSelector>,
) -> ApiResult<bool> {
    let labels = labels.filter(|s| !s.is_empty());
    let fields = fields.filter(|s| !s.is_empty());
    if labels.is_none() && fields.is_none() {
        return Ok(true);
    }
    let fields_in_metadata = fields.is_none_or(|s| s.fields().all(is_metadata_field));
    // Anything unusual in metadata (a label whose value is not a string, say) takes the full
    // decode, so both paths always agree.
    let Ok(head) = serde_json::from_slice::<StoredHead>(raw) else {
        return matches_selectors(r, &decode(raw)?, labels, fields);
    };
    if let Some(sel) = labels {
        if !sel.matches(&head.metadata.labels) {
            return Ok(false);
        }
    }
    let Some(sel) = fields else { return Ok(true) };
    if fields_in_metadata {
        let metadata = json!({"metadata": {
            "name": head.metadata.name,
            "namespace": head.metadata.namespace,
        }});
        return matches_selectors(r, &metadata, None, Some(sel));
    }
    matches_selectors(r, &decode(raw)?, None, Some(sel))
}

fn is_metadata_field(field: &str) -> bool {
    matches!(field, "metadata.name" | "metadata.namespace")
}

/// The start of a stored object: only the metadata selectors read, borrowed from the bytes where
/// no escape forces a copy. Every other field is skipped unparsed into values.
#[derive(Deserialize)]
struct StoredHead<'a> {
    #[serde(borrow, default)]
    metadata: StoredMetadata<'a>,
}

#[derive(Deserialize, Default)]
struct StoredMetadata<'a> {
    #[serde(borrow, default)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    namespace: Cow<'a, str>,
    #[serde(borrow, default, deserialize_with = "labels_or_null")]
    labels: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
}

/// `labels: null` reads as no labels, as the decoded path does.
fn labels_or_null<'de, D>(d: D) -> Result<BTreeMap<Cow<'de, str>, Cow<'de, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::<BTreeMap<Cow<'de, str>, Cow<'de, str>>>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources;

    fn pods() -> &'static Resource {
        resources::find("", "v1", "pods").expect("pods are served")
    }

    fn both(raw: &str, labels: &str, fields: &str) -> (bool, bool) {
        let labels = LabelSelector::parse(labels).expect("label selector");
        let fields = FieldSelector::parse(fields).expect("field selector");
        let r = pods();
        let obj: Value = serde_json::from_str(raw).expect("test object");
        let decoded = matches_selectors(r, &obj, Some(&labels), Some(&fields)).expect("decoded");
        let stored = stored_matches_selectors(r, raw.as_bytes(), Some(&labels), Some(&fields))
            .expect("stored");
        (decoded, stored)
    }

    #[test]
    fn stored_and_decoded_matching_agree() {
        let objects = [
            r#"{"metadata":{"name":"a","namespace":"ns","labels":{"app":"web","tier":"3"}},"spec":{"nodeName":"n1"},"status":{"phase":"Running"}}"#,
            r#"{"metadata":{"name":"b","namespace":"ns","labels":null},"spec":{}}"#,
            r#"{"metadata":{"name":"c","namespace":"other","labels":{"app":"w\u0065b"}}}"#,
            r#"{"metadata":{"name":"d","labels":{"app":5,"tier":"1"}}}"#,
            r#"{"kind":"Pod"}"#,
        ];
        let selectors = [
            ("", ""),
            ("app=web", ""),
            ("app!=web", ""),
            ("app in (web,api)", "metadata.namespace=ns"),
            ("!app", ""),
            ("tier>2", ""),
            ("tier", "metadata.name=a"),
            ("", "metadata.name!=b"),
            ("app=web", "spec.nodeName=n1"),
            ("", "status.phase=Running,metadata.namespace=ns"),
        ];
        for raw in objects {
            for (labels, fields) in selectors {
                let (decoded, stored) = both(raw, labels, fields);
                assert_eq!(decoded, stored, "{raw} with {labels:?} / {fields:?}");
            }
        }
        assert_eq!(
            both(objects[0], "app=web", "spec.nodeName=n1"),
            (true, true)
        );
        assert_eq!(
            both(objects[2], "app=web", "metadata.namespace=other"),
            (true, true)
        );
        assert_eq!(both(objects[3], "app", ""), (false, false));
    }

    #[test]
    fn an_unsupported_field_is_an_error_on_both_paths() {
        let fields = FieldSelector::parse("spec.unknown=x").expect("parses");
        let raw = br#"{"metadata":{"name":"a"}}"#;
        assert!(stored_matches_selectors(pods(), raw, None, Some(&fields)).is_err());
    }

    #[test]
    fn bytes_that_are_not_json_are_an_internal_error() {
        let labels = LabelSelector::parse("app=web").expect("parses");
        let err = stored_matches_selectors(pods(), b"{not json", Some(&labels), None)
            .expect_err("not JSON");
        assert_eq!(err.to_status()["code"], 500);
    }
}
