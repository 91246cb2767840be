//! Building HTTP responses: JSON bodies, `metav1.Status` errors, lists from raw items.

use axum::body::Body;
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

use crate::api::ApiError;

fn build(code: u16, content_type: &str, body: Body) -> Response {
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(body)
        .unwrap_or_else(|_| Response::new(Body::from("response build failed")))
}

pub fn json_response(code: u16, value: &Value) -> Response {
    build(code, "application/json", Body::from(value.to_string()))
}

pub fn raw_json_response(code: u16, raw: Bytes) -> Response {
    build(code, "application/json", Body::from(raw))
}

pub fn text_response(code: u16, text: &str) -> Response {
    build(
        code,
        "text/plain; charset=utf-8",
        Body::from(text.to_string()),
    )
}

pub fn error_response(err: &ApiError) -> Response {
    let mut response = json_response(err.code, &err.to_status());
    if let Some(seconds) = err.retry_after_seconds {
        if let Ok(v) = http::HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert(http::header::RETRY_AFTER, v);
        }
    }
    response
}

/// A `<Kind>List` whose items are stored JSON, spliced in without re-encoding.
pub fn list_body(
    api_version: &str,
    list_kind: &str,
    revision: u64,
    continue_token: Option<&str>,
    items: &[Bytes],
) -> Bytes {
    let size: usize = items.iter().map(|i| i.len() + 1).sum();
    let mut out = BytesMut::with_capacity(size + 256);
    let mut metadata = serde_json::json!({"resourceVersion": revision.to_string()});
    if let Some(token) = continue_token {
        metadata["continue"] = Value::String(token.to_string());
    }
    out.put_slice(
        format!(
            r#"{{"kind":"{list_kind}","apiVersion":"{api_version}","metadata":{metadata},"items":["#
        )
        .as_bytes(),
    );
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(item);
    }
    out.put_slice(b"]}");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_body_is_valid_json_with_items_in_order() {
        let items = vec![
            Bytes::from_static(br#"{"a":1}"#),
            Bytes::from_static(br#"{"b":2}"#),
        ];
        let body = list_body("v1", "ConfigMapList", 7, Some("tok"), &items);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "7");
        assert_eq!(v["metadata"]["continue"], "tok");
        assert_eq!(v["items"][1]["b"], 2);
        let empty: Value =
            serde_json::from_slice(&list_body("v1", "PodList", 1, None, &[])).unwrap();
        assert_eq!(empty["items"], serde_json::json!([]));
    }
}
