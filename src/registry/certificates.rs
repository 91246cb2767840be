//! CertificateSigningRequest policy (upstream `pkg/registry/certificates`): who asked is recorded
//! by the server, the spec never changes after create, and the Approved/Denied conditions are
//! written only through the `/approval` subresource.
//!
//! Signing approved requests is a controller's job and not done here.

use serde_json::{json, Value};

use crate::api::{ApiError, ApiResult, Cause};
use crate::apiserver::authn::UserInfo;

pub fn is_csr(group: &str, kind: &str) -> bool {
    group == "certificates.k8s.io" && kind == "CertificateSigningRequest"
}

/// Create: the requester is whoever sent the request, never what the body claims, and a request
/// starts with no conditions (no one creates a pre-approved request).
pub fn prepare_create(obj: &mut Value, user: Option<&UserInfo>) {
    let spec = &mut obj["spec"];
    if !spec.is_object() {
        *spec = json!({});
    }
    if let Some(user) = user {
        spec["username"] = json!(user.name);
        spec["uid"] = json!(user.uid);
        spec["groups"] = json!(user.groups);
    }
    if let Some(o) = obj.as_object_mut() {
        o.remove("status");
    }
}

/// An update of the object itself or of `/status` keeps the spec; `/status` also keeps the
/// approval conditions, which only `/approval` changes.
pub fn merge_status(old: &Value, proposed: &Value) -> Value {
    let mut new = old.clone();
    new["status"] = proposed.get("status").cloned().unwrap_or_else(|| json!({}));
    let kept: Vec<Value> = approval_conditions(old).cloned().collect();
    let mut conditions: Vec<Value> = conditions(&new)
        .filter(|c| !is_approval(c))
        .cloned()
        .collect();
    conditions.extend(kept);
    set_conditions(&mut new, conditions);
    new
}

/// `/approval`: only the conditions change, everything else is the stored object's.
pub fn merge_approval(old: &Value, proposed: &Value) -> ApiResult<Value> {
    let mut new = old.clone();
    let proposed_conditions: Vec<Value> = conditions(proposed).cloned().collect();
    let name = old.pointer("/metadata/name").and_then(Value::as_str);
    validate_approval(name.unwrap_or_default(), &proposed_conditions)?;
    set_conditions(&mut new, proposed_conditions);
    Ok(new)
}

fn validate_approval(name: &str, conditions: &[Value]) -> ApiResult<()> {
    let mut causes = Vec::new();
    let has = |t: &str| conditions.iter().any(|c| c["type"] == t);
    if has("Approved") && has("Denied") {
        causes.push(Cause::invalid(
            "status.conditions",
            "Approved",
            "Approved and Denied conditions are mutually exclusive",
        ));
    }
    for (i, c) in conditions.iter().enumerate() {
        if is_approval(c) && c["status"] != "True" {
            causes.push(Cause::invalid(
                &format!("status.conditions[{i}].status"),
                c["status"].as_str().unwrap_or_default(),
                "must be \"True\"",
            ));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "certificates.k8s.io",
            "CertificateSigningRequest",
            name,
            causes,
        ))
    }
}

fn conditions(obj: &Value) -> impl Iterator<Item = &Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn approval_conditions(obj: &Value) -> impl Iterator<Item = &Value> {
    conditions(obj).filter(|c| is_approval(c))
}

fn is_approval(condition: &Value) -> bool {
    condition["type"] == "Approved" || condition["type"] == "Denied"
}

fn set_conditions(obj: &mut Value, conditions: Vec<Value>) {
    if !obj["status"].is_object() {
        obj["status"] = json!({});
    }
    if conditions.is_empty() {
        if let Some(status) = obj["status"].as_object_mut() {
            status.remove("conditions");
        }
    } else {
        obj["status"]["conditions"] = Value::Array(conditions);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr() -> Value {
        json!({"metadata": {"name": "c"}, "spec": {"request": "cmVx", "signerName": "example.com/s", "username": "alice"}})
    }

    #[test]
    fn the_requester_comes_from_the_request_and_a_new_csr_has_no_conditions() {
        let mut obj = csr();
        obj["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}]});
        let user = UserInfo {
            name: "bob".into(),
            uid: "u1".into(),
            groups: vec!["system:authenticated".into()],
        };
        prepare_create(&mut obj, Some(&user));
        assert_eq!(obj["spec"]["username"], "bob");
        assert_eq!(obj["spec"]["groups"][0], "system:authenticated");
        assert!(obj.get("status").is_none());
    }

    #[test]
    fn approval_changes_only_the_conditions() {
        let old = csr();
        let mut proposed = csr();
        proposed["spec"]["username"] = json!("mallory");
        proposed["status"] = json!({"conditions": [{"type": "Approved", "status": "True", "reason": "KubectlApprove"}], "certificate": "Zm9v"});
        let new = merge_approval(&old, &proposed).unwrap();
        assert_eq!(new["spec"]["username"], "alice");
        assert_eq!(new["status"]["conditions"][0]["type"], "Approved");
        assert!(new["status"].get("certificate").is_none());
    }

    #[test]
    fn approved_and_denied_together_are_invalid() {
        let mut proposed = csr();
        proposed["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]});
        let err = merge_approval(&csr(), &proposed).unwrap_err();
        assert_eq!(err.code, 422);
    }

    #[test]
    fn status_writes_cannot_approve() {
        let mut proposed = csr();
        proposed["status"] =
            json!({"conditions": [{"type": "Approved", "status": "True"}], "certificate": "Zm9v"});
        let new = merge_status(&csr(), &proposed);
        assert_eq!(new["status"]["certificate"], "Zm9v");
        assert!(new["status"].get("conditions").is_none());
    }
}
