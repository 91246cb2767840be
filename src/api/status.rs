//! API errors as `metav1.Status`, with the HTTP codes and reasons upstream uses.

use serde::Serialize;
use serde_json::{json, Value};

/// One field-level cause of an Invalid (422) error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cause {
    #[serde(rename = "type")]
    pub reason: String,
    pub message: String,
    pub field: String,
}

impl Cause {
    pub fn required(field: &str) -> Cause {
        Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value".into(),
            field: field.into(),
        }
    }

    pub fn invalid(field: &str, value: &str, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueInvalid".into(),
            message: format!(
                "Invalid value: {}: {detail}",
                super::go_syntax::quoted(value)
            ),
            field: field.into(),
        }
    }

    pub fn forbidden(field: &str, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueForbidden".into(),
            message: format!("Forbidden: {detail}"),
            field: field.into(),
        }
    }

    /// The text upstream shows for the cause inside the Status message.
    pub fn summary(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

/// A failed API call: becomes a `metav1.Status` body with `code` as the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// `details`: the object the error is about, and field causes.
    pub group: String,
    pub kind: String,
    pub name: String,
    pub causes: Vec<Cause>,
    /// Seconds a client should wait before retrying (conflicts under load, timeouts).
    pub retry_after_seconds: Option<u32>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.reason, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            group: String::new(),
            kind: String::new(),
            name: String::new(),
            causes: Vec::new(),
            retry_after_seconds: None,
        }
    }

    fn about(mut self, group: &str, kind: &str, name: &str) -> ApiError {
        self.group = group.into();
        self.kind = kind.into();
        self.name = name.into();
        self
    }

    /// `<resource>.<group>` as upstream prints it in messages (`deployments.apps`, `pods`).
    fn qualified(group: &str, resource: &str) -> String {
        if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, "Forbidden", message)
    }

    pub fn not_found(group: &str, resource: &str, name: &str) -> ApiError {
        let message = format!("{} \"{name}\" not found", Self::qualified(group, resource));
        ApiError::new(404, "NotFound", message).about(group, resource, name)
    }

    /// 404 for a path that names no resource at all.
    pub fn no_route(path: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    pub fn method_not_allowed(method: &str, what: &str) -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on {what}"),
        )
    }

    pub fn already_exists(group: &str, resource: &str, name: &str) -> ApiError {
        let message = format!(
            "{} \"{name}\" already exists",
            Self::qualified(group, resource)
        );
        ApiError::new(409, "AlreadyExists", message).about(group, resource, name)
    }

    pub fn conflict(group: &str, resource: &str, name: &str, detail: &str) -> ApiError {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": {detail}",
            Self::qualified(group, resource)
        );
        ApiError::new(409, "Conflict", message).about(group, resource, name)
    }

    /// The object changed since the client read it (stale resourceVersion).
    pub fn stale(group: &str, resource: &str, name: &str) -> ApiError {
        Self::conflict(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("request body too large: the limit is {limit} bytes"),
        )
    }

    /// 415 naming the body types that would have been read, as upstream words it.
    pub fn unsupported_media_type(accepted: &[&str]) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
    }

    /// 406 naming the answer types that could have been served, as upstream words it.
    pub fn not_acceptable(served: &[&str]) -> ApiError {
        ApiError::new(
            406,
            "NotAcceptable",
            format!(
                "only the following media types are accepted: {}",
                served.join(", ")
            ),
        )
    }

    /// 422 with field causes; the message lists them as upstream does.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> ApiError {
        let what = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let list: Vec<String> = causes.iter().map(Cause::summary).collect();
        let message = match list.len() {
            1 => format!("{what} \"{name}\" is invalid: {}", list[0]),
            _ => format!("{what} \"{name}\" is invalid: [{}]", list.join(", ")),
        };
        let mut err = ApiError::new(422, "Invalid", message).about(group, kind, name);
        err.causes = causes;
        err
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "InternalError", message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(503, "ServiceUnavailable", message)
    }

    /// The `metav1.Status` JSON body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        let mut details = serde_json::Map::new();
        if !self.name.is_empty() {
            details.insert("name".into(), json!(self.name));
        }
        if !self.group.is_empty() {
            details.insert("group".into(), json!(self.group));
        }
        if !self.kind.is_empty() {
            details.insert("kind".into(), json!(self.kind));
        }
        if !self.causes.is_empty() {
            details.insert("causes".into(), json!(self.causes));
        }
        if let Some(seconds) = self.retry_after_seconds {
            details.insert("retryAfterSeconds".into(), json!(seconds));
        }
        if !details.is_empty() {
            status["details"] = Value::Object(details);
        }
        status
    }
}

/// The `Status` body of a successful delete that removed the object at once.
pub fn success_status(group: &str, kind: &str, name: &str, uid: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": { "name": name, "group": group, "kind": kind, "uid": uid },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_reads_like_upstream() {
        let err = ApiError::not_found("", "pods", "x");
        assert_eq!(err.message, "pods \"x\" not found");
        let status = err.to_status();
        assert_eq!(status["code"], 404);
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(status["details"]["kind"], "pods");
    }

    #[test]
    fn grouped_resources_are_qualified_in_messages() {
        let err = ApiError::already_exists("apps", "deployments", "web");
        assert_eq!(err.message, "deployments.apps \"web\" already exists");
        assert_eq!(err.code, 409);
    }

    #[test]
    fn invalid_values_are_quoted_as_upstream_quotes_them() {
        let cause = Cause::invalid("metadata.name", "a\"b\\c\nd\u{1}é", "bad");
        assert_eq!(cause.message, r#"Invalid value: "a\"b\\c\nd\x01é": bad"#);
    }

    #[test]
    fn invalid_lists_every_cause_in_the_message_and_details() {
        let err = ApiError::invalid(
            "",
            "ConfigMap",
            "Bad_Name",
            vec![
                Cause::invalid("metadata.name", "Bad_Name", "must be lowercase"),
                Cause::required("data"),
            ],
        );
        assert_eq!(err.code, 422);
        assert!(err
            .message
            .starts_with("ConfigMap \"Bad_Name\" is invalid: [metadata.name: Invalid value"));
        assert_eq!(err.to_status()["details"]["causes"][1]["field"], "data");
    }
}
