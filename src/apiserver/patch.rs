//! PATCH bodies: JSON Patch, JSON Merge Patch and (for now) strategic merge patch.

use serde_json::Value;

use crate::api::{ApiError, ApiResult};

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
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(PatchType::Apply),
            other => Err(ApiError::unsupported_media_type(other)),
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
            let patch = if patch_type == PatchType::Strategic {
                strip_directives(patch)?
            } else {
                patch
            };
            json_patch::merge(&mut doc, &patch);
        }
        PatchType::Apply => {
            return Err(ApiError::unsupported_media_type(
                "application/apply-patch+yaml (server-side apply is not served yet)",
            ))
        }
    }
    Ok(doc)
}

/// Strategic merge patch, approximated as a merge patch: `$setElementOrder` and `$retainKeys`
/// only shape list order and retention, so they are dropped; directives that change meaning
/// (`$patch`, `$deleteFromPrimitiveList`) are refused rather than misapplied.
fn strip_directives(patch: Value) -> ApiResult<Value> {
    match patch {
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (key, value) in map {
                if key.starts_with("$setElementOrder/") || key == "$retainKeys" {
                    continue;
                }
                if key.starts_with('$') {
                    return Err(ApiError::new(422, "Invalid", format!("strategic merge patch directive {key} is not supported yet")));
                }
                out.insert(key, strip_directives(value)?);
            }
            Ok(Value::Object(out))
        }
        // Lists of objects merge by key in a strategic patch; a merge patch would replace them
        // wholesale and silently drop fields, so they are refused until full support lands.
        Value::Array(items) if items.iter().any(Value::is_object) => Err(ApiError::new(
            422,
            "Invalid",
            "strategic merge patch of lists of objects is not supported yet; use --type=merge or --type=json",
        )),
        other => Ok(other),
    }
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
    fn strategic_patch_drops_ordering_directives_and_refuses_others() {
        let doc = json!({"spec": {"replicas": 1}});
        let out = apply(
            PatchType::Strategic,
            &doc,
            br#"{"spec":{"replicas":3,"$setElementOrder/containers":[{"name":"a"}]}}"#,
        )
        .unwrap();
        assert_eq!(out, json!({"spec": {"replicas": 3}}));
        let err = apply(
            PatchType::Strategic,
            &doc,
            br#"{"spec":{"$patch":"replace"}}"#,
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
        let err = apply(
            PatchType::Strategic,
            &doc,
            br#"{"spec":{"containers":[{"name":"a"}]}}"#,
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
        let out = apply(PatchType::Strategic, &doc, br#"{"spec":{"args":["x"]}}"#).unwrap();
        assert_eq!(out["spec"]["args"], json!(["x"]));
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
