//! Validation of `seccompProfile` in pod and container security contexts, with upstream's paths
//! and messages. A `Localhost` profile names a file under the node's seccomp directory, so its
//! path must stay below it: relative, and without `..`.

use serde_json::Value;

use super::validation::not_supported;
use crate::api::Cause;

const TYPES: &[&str] = &["Localhost", "RuntimeDefault", "Unconfined"];

/// Checks the `seccompProfile` inside the security context at `security_context` (if any);
/// `path` is that context's field path.
pub fn validate(security_context: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let Some(profile) = security_context
        .and_then(|s| s.get("seccompProfile"))
        .filter(|p| !p.is_null())
    else {
        return;
    };
    let path = format!("{path}.seccompProfile");
    let kind = profile.get("type").and_then(Value::as_str).unwrap_or("");
    if kind.is_empty() {
        causes.push(required(
            &format!("{path}.type"),
            "type is required when seccompProfile is set",
        ));
    } else if !TYPES.contains(&kind) {
        causes.push(not_supported(&format!("{path}.type"), kind, TYPES));
    }
    let field = format!("{path}.localhostProfile");
    let localhost = profile.get("localhostProfile").filter(|p| !p.is_null());
    match (kind, localhost) {
        ("Localhost", None) => causes.push(required(
            &field,
            "must be set when seccomp type is Localhost",
        )),
        ("Localhost", Some(file)) => {
            let file = file.as_str().unwrap_or("");
            if file.starts_with('/') {
                causes.push(Cause::invalid(&field, file, "must be a relative path"));
            }
            if file.split('/').any(|part| part == "..") {
                causes.push(Cause::invalid(&field, file, "must not contain '..'"));
            }
        }
        (_, Some(_)) => causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            // Upstream prints the whole profile here (Go's %#v); compact JSON is its stable form.
            message: format!(
                "Invalid value: {profile}: can only be set when seccomp type is Localhost"
            ),
            field,
        }),
        (_, None) => {}
    }
}

fn required(field: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired".into(),
        message: format!("Required value: {detail}"),
        field: field.into(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn causes_of(profile: Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        validate(
            Some(&json!({"seccompProfile": profile})),
            "spec.containers[0].securityContext",
            &mut causes,
        );
        causes
    }

    const FIELD: &str = "spec.containers[0].securityContext.seccompProfile.localhostProfile";

    #[test]
    fn a_localhost_profile_needs_its_file() {
        let causes = causes_of(json!({"type": "Localhost"}));
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].reason, "FieldValueRequired");
        assert_eq!(causes[0].field, FIELD);
        assert_eq!(
            causes[0].message,
            "Required value: must be set when seccomp type is Localhost"
        );
    }

    #[test]
    fn a_localhost_file_must_stay_below_the_seccomp_directory() {
        let absolute = causes_of(json!({"type": "Localhost", "localhostProfile": "/etc/p.json"}));
        assert_eq!(absolute.len(), 1, "{absolute:?}");
        assert_eq!(absolute[0].field, FIELD);
        assert_eq!(
            absolute[0].message,
            "Invalid value: \"/etc/p.json\": must be a relative path"
        );

        let up = causes_of(json!({"type": "Localhost", "localhostProfile": "a/../../p.json"}));
        assert_eq!(up.len(), 1, "{up:?}");
        assert_eq!(
            up[0].message,
            "Invalid value: \"a/../../p.json\": must not contain '..'"
        );

        let both = causes_of(json!({"type": "Localhost", "localhostProfile": "/../p.json"}));
        assert_eq!(both.len(), 2, "{both:?}");

        for fine in ["p.json", "profiles/deny-mkdir.json", "a..b/p.json"] {
            let causes = causes_of(json!({"type": "Localhost", "localhostProfile": fine}));
            assert!(causes.is_empty(), "{fine}: {causes:?}");
        }
    }

    #[test]
    fn only_localhost_profiles_name_a_file() {
        let causes = causes_of(json!({"type": "RuntimeDefault", "localhostProfile": "p.json"}));
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].reason, "FieldValueInvalid");
        assert_eq!(causes[0].field, FIELD);
        assert!(
            causes[0]
                .message
                .ends_with("can only be set when seccomp type is Localhost"),
            "{causes:?}"
        );
    }

    #[test]
    fn the_type_is_required_and_must_be_known() {
        let missing = causes_of(json!({}));
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert_eq!(
            missing[0].field,
            "spec.containers[0].securityContext.seccompProfile.type"
        );
        assert_eq!(
            missing[0].message,
            "Required value: type is required when seccompProfile is set"
        );
        let unknown = causes_of(json!({"type": "Strict"}));
        assert_eq!(unknown.len(), 1, "{unknown:?}");
        assert_eq!(unknown[0].reason, "FieldValueNotSupported");
        assert_eq!(
            unknown[0].message,
            "Unsupported value: \"Strict\": supported values: \"Localhost\", \"RuntimeDefault\", \"Unconfined\""
        );
    }

    #[test]
    fn no_profile_is_fine() {
        let mut causes = Vec::new();
        validate(
            Some(&json!({"runAsUser": 1})),
            "spec.securityContext",
            &mut causes,
        );
        validate(None, "spec.securityContext", &mut causes);
        for profile in ["RuntimeDefault", "Unconfined"] {
            causes.extend(causes_of(json!({ "type": profile })));
        }
        assert!(causes.is_empty(), "{causes:?}");
    }
}
