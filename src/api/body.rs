//! Request bodies in the formats clients send (JSON, YAML, Kubernetes protobuf, CBOR), all read into
//! the JSON value the rest of the server works on.

use serde_json::Value;

use super::{cbor, protobuf};
use super::{ApiError, ApiResult};

/// The body types an object may come in, in upstream's order.
pub const ACCEPTED: [&str; 4] = [
    "application/json",
    "application/yaml",
    protobuf::MEDIA_TYPE,
    cbor::MEDIA_TYPE,
];

/// The encoding of a request body, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Yaml,
    Protobuf,
    Cbor,
}

impl BodyFormat {
    /// A missing type means JSON, as upstream; an unknown one is 415.
    pub fn from_content_type(content_type: &str) -> ApiResult<BodyFormat> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media.to_ascii_lowercase().as_str() {
            "" | "*/*" | "application/json" => Ok(BodyFormat::Json),
            "application/yaml" => Ok(BodyFormat::Yaml),
            protobuf::MEDIA_TYPE => Ok(BodyFormat::Protobuf),
            cbor::MEDIA_TYPE => Ok(BodyFormat::Cbor),
            _ => Err(ApiError::unsupported_media_type(&ACCEPTED)),
        }
    }
}

/// Reads a body that must hold one object (a JSON object once decoded).
pub fn decode_object(format: BodyFormat, body: &[u8]) -> ApiResult<Value> {
    let value: Value = match format {
        BodyFormat::Json => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
        })?,
        BodyFormat::Yaml => serde_yaml_ng::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid YAML: {e}"))
        })?,
        BodyFormat::Protobuf => protobuf::decode_object(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the request body is not a valid protobuf object: {e}"
            ))
        })?,
        BodyFormat::Cbor => cbor::decode(body).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid CBOR: {e}"))
        })?,
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_types_pick_the_format_and_ignore_parameters() {
        assert_eq!(BodyFormat::from_content_type("").unwrap(), BodyFormat::Json);
        assert_eq!(
            BodyFormat::from_content_type("application/json; charset=utf-8").unwrap(),
            BodyFormat::Json
        );
        assert_eq!(
            BodyFormat::from_content_type("application/yaml").unwrap(),
            BodyFormat::Yaml
        );
        assert_eq!(
            BodyFormat::from_content_type("application/vnd.kubernetes.protobuf").unwrap(),
            BodyFormat::Protobuf
        );
        assert_eq!(
            BodyFormat::from_content_type("application/cbor").unwrap(),
            BodyFormat::Cbor
        );
        assert_eq!(
            BodyFormat::from_content_type("text/plain")
                .unwrap_err()
                .code,
            415
        );
    }

    #[test]
    fn yaml_bodies_read_as_the_same_json() {
        let yaml = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  x: \"1\"\n";
        assert_eq!(
            decode_object(BodyFormat::Yaml, yaml).unwrap(),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"x": "1"}})
        );
    }

    #[test]
    fn cbor_bodies_read_as_the_same_json() {
        let object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"},
                            "data": {"x": "1"}, "immutable": true});
        assert_eq!(
            decode_object(BodyFormat::Cbor, &cbor::encode(&object)).unwrap(),
            object
        );
        let err = decode_object(BodyFormat::Cbor, &cbor::encode(&json!([1]))).unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (400, "the request body must be a JSON object")
        );
        assert_eq!(
            decode_object(BodyFormat::Cbor, b"\xa1").unwrap_err().code,
            400
        );
    }

    #[test]
    fn bodies_that_are_not_objects_are_bad_requests() {
        assert_eq!(
            decode_object(BodyFormat::Yaml, b"- a\n- b\n")
                .unwrap_err()
                .code,
            400
        );
        assert_eq!(
            decode_object(BodyFormat::Yaml, b"a: [").unwrap_err().code,
            400
        );
        assert_eq!(
            decode_object(BodyFormat::Protobuf, b"k8s\0\x0a\x05")
                .unwrap_err()
                .code,
            400
        );
    }
}
