//! PATCH bodies: JSON Patch, JSON Merge Patch and strategic merge patch.

use serde_json::Value;

use super::strategic;
use crate::api::{cbor, patch_meta, ApiError, ApiResult};

/// The patch types of built-in kinds, in upstream's order.
pub const PATCH_TYPES: [&str; 5] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
    cbor::APPLY_PATCH_MEDIA_TYPE,
];

/// Custom resources take no strategic merge patch.
pub const CUSTOM_PATCH_TYPES: [&str; 4] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
    cbor::APPLY_PATCH_MEDIA_TYPE,
];

/// An apply patch as the YAML (or JSON, a subset of it) that server-side apply reads: CBOR
/// bodies are read into JSON first.
pub fn apply_body(content_type: &str, body: bytes::Bytes) -> ApiResult<bytes::Bytes> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media != cbor::APPLY_PATCH_MEDIA_TYPE {
        return Ok(body);
    }
    let config = cbor::decode(&body)
        .map_err(|e| ApiError::bad_request(format!("the apply patch is not valid CBOR: {e}")))?;
    Ok(bytes::Bytes::from(config.to_string()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> ApiResult<PatchType> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" | cbor::APPLY_PATCH_MEDIA_TYPE => Ok(PatchType::Apply),
            _ => Err(ApiError::unsupported_media_type(&PATCH_TYPES)),
        }
    }
}

/// Applies `patch` to `doc`.
pub fn apply(patch_type: PatchType, doc: &Value, patch: &[u8]) -> ApiResult<Value> {
    let mut doc = doc.clone();
    match patch_type {
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_slice(patch)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON Patch: {e}")))?;
            json_patch::patch(&mut doc, &ops).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the JSON patch could not be applied: {e}"),
                )
            })?;
        }
        PatchType::Merge | PatchType::Strategic => {
            let patch: Value = serde_json::from_slice(patch)
                .map_err(|e| ApiError::bad_request(format!("invalid merge patch: {e}")))?;
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            if patch_type == PatchType::Strategic {
                doc = strategic::merge(&doc, &patch, root_type(&doc))
                    .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?;
            } else {
                json_patch::merge(&mut doc, &patch);
            }
        }
        // Apply merges by ownership, not by patch: see `apply.rs`.
        PatchType::Apply => {
            return Err(ApiError::internal(
                "an apply patch must go through server-side apply",
            ))
        }
    }
    Ok(doc)
}

/// The upstream type name of `doc`, for the types whose patch metadata is known.
fn root_type(doc: &Value) -> Option<&'static str> {
    let api_version = doc.get("apiVersion")?.as_str()?;
    let kind = doc.get("kind")?.as_str()?;
    patch_meta::kind_type(api_version, kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_sets_and_removes_fields() {
        let doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let out = apply(
            PatchType::Merge,
            &doc,
            br#"{"metadata":{"labels":{"a":null,"c":"3"}}}"#,
        )
        .unwrap();
        assert_eq!(out, json!({"metadata": {"labels": {"b": "2", "c": "3"}}}));
    }

    #[test]
    fn json_patch_failures_are_422_and_garbage_is_400() {
        let doc = json!({"a": 1});
        let err = apply(
            PatchType::Json,
            &doc,
            br#"[{"op":"test","path":"/a","value":2}]"#,
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
        assert_eq!(apply(PatchType::Json, &doc, b"{").unwrap_err().code, 400);
        let out = apply(
            PatchType::Json,
            &doc,
            br#"[{"op":"replace","path":"/a","value":5}]"#,
        )
        .unwrap();
        assert_eq!(out["a"], 5);
    }

    #[test]
    fn strategic_patch_merges_containers_by_name_and_refuses_bad_directives_with_422() {
        let doc = json!({"apiVersion": "v1", "kind": "Pod",
            "spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b"}]}});
        let out = apply(
            PatchType::Strategic,
            &doc,
            br#"{"spec":{"containers":[{"name":"a","image":"a:2"}]}}"#,
        )
        .unwrap();
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "a", "image": "a:2"}, {"name": "b"}])
        );
        let err = apply(
            PatchType::Strategic,
            &doc,
            br#"{"spec":{"$patch":"bogus"}}"#,
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
    }

    #[test]
    fn unknown_patch_content_types_are_415() {
        assert_eq!(
            PatchType::from_content_type("text/plain").unwrap_err().code,
            415
        );
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8").unwrap(),
            PatchType::Merge
        );
    }
}
