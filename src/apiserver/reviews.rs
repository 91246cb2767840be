//! The review APIs that ask the server about the caller: SelfSubjectAccessReview
//! (`kubectl auth can-i`) and SelfSubjectReview (`kubectl auth whoami`). Nothing is stored: each
//! POST is answered from the request's user.

use axum::extract::Request;
use axum::response::Response;
use http::Method;
use serde_json::{json, Value};

use super::authn::UserInfo;
use super::response::json_response;
use super::ApiServer;
use crate::api::{ApiError, ApiResult};

/// The review resources, by path; they are not in the resource table because they are never
/// stored, listed or watched (create is their only verb).
pub const REVIEWS: &[(&str, &str, &str, &str)] = &[
    (
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
    ),
    (
        "authentication.k8s.io",
        "v1",
        "selfsubjectreviews",
        "SelfSubjectReview",
    ),
    ("authentication.k8s.io", "v1", "tokenreviews", "TokenReview"),
];

/// The review groups, for discovery (each serves one version).
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut groups: Vec<(&'static str, &'static str)> = Vec::new();
    for (g, v, _, _) in REVIEWS {
        if !groups.contains(&(*g, *v)) {
            groups.push((*g, *v));
        }
    }
    groups
}

/// Discovery entries of `group/version`'s reviews: legacy APIResource entries and aggregated
/// ones. Empty when the group/version serves no review.
pub fn discovery_entries(group: &str, version: &str, aggregated: bool) -> Vec<Value> {
    REVIEWS
        .iter()
        .filter(|(g, v, _, _)| *g == group && *v == version)
        .map(|(g, v, plural, kind)| match aggregated {
            true => json!({
                "resource": plural,
                "responseKind": {"group": g, "version": v, "kind": kind},
                "scope": "Cluster",
                "singularResource": plural.trim_end_matches('s'),
                "verbs": ["create"],
            }),
            false => json!({
                "name": plural,
                "singularName": plural.trim_end_matches('s'),
                "namespaced": false,
                "kind": kind,
                "verbs": ["create"],
            }),
        })
        .collect()
}

/// The review kind a path names, if any.
pub fn route(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["apis", group, version, plural] => REVIEWS
            .iter()
            .find(|(g, v, p, _)| g == group && v == version && p == plural)
            .map(|(_, _, _, kind)| *kind),
        _ => None,
    }
}

pub async fn serve(
    server: &ApiServer,
    kind: &'static str,
    user: &UserInfo,
    request: Request,
) -> ApiResult<Response> {
    if request.method() != Method::POST {
        return Err(ApiError::method_not_allowed(
            request.method().as_str(),
            kind,
        ));
    }
    if kind == "TokenReview" {
        return super::token_review::serve(server, request).await;
    }
    let body = super::rest::read_json(server, request).await?;
    let answer = match kind {
        "SelfSubjectAccessReview" => access_review(user, &body)?,
        _ => self_review(user),
    };
    Ok(json_response(201, &answer))
}

/// Whether `user` may do what `attributes` (a ResourceAttributes or NonResourceAttributes)
/// describe, and why. There is no RBAC yet: every authenticated user may do everything, as the
/// request gate in front of the router decides. An RBAC authorizer replaces this one function.
pub fn authorize(user: &UserInfo, _attributes: &Value) -> (bool, String) {
    if user.is_anonymous() {
        (false, String::new())
    } else {
        (
            true,
            "berth: authenticated users may do everything".to_string(),
        )
    }
}

fn access_review(user: &UserInfo, body: &Value) -> ApiResult<Value> {
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let attributes = spec
        .get("resourceAttributes")
        .or_else(|| spec.get("nonResourceAttributes"))
        .filter(|a| !a.is_null());
    let Some(attributes) = attributes else {
        let cause = crate::api::Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified".into(),
            field: "spec.resourceAttributes".into(),
        };
        return Err(ApiError::invalid(
            "authorization.k8s.io",
            "SelfSubjectAccessReview",
            "",
            vec![cause],
        ));
    };
    let (allowed, reason) = authorize(user, attributes);
    let mut status = json!({"allowed": allowed});
    if !reason.is_empty() {
        status["reason"] = json!(reason);
    }
    Ok(json!({
        "kind": "SelfSubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": spec,
        "status": status,
    }))
}

fn self_review(user: &UserInfo) -> Value {
    let mut info = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        info["uid"] = json!(user.uid);
    }
    json!({
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "status": {"userInfo": info},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> UserInfo {
        UserInfo {
            name: "admin".into(),
            uid: String::new(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        }
    }

    #[test]
    fn reviews_appear_in_discovery_as_create_only_cluster_resources() {
        let legacy = discovery_entries("authorization.k8s.io", "v1", false);
        assert_eq!(legacy[0]["name"], "selfsubjectaccessreviews");
        assert_eq!(legacy[0]["verbs"], json!(["create"]));
        let aggregated = discovery_entries("authentication.k8s.io", "v1", true);
        assert_eq!(aggregated[0]["responseKind"]["kind"], "SelfSubjectReview");
        assert!(discovery_entries("apps", "v1", false).is_empty());
    }

    #[test]
    fn review_paths_name_their_kind_and_nothing_else() {
        assert_eq!(
            route("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"),
            Some("SelfSubjectAccessReview")
        );
        assert_eq!(
            route("/apis/authentication.k8s.io/v1/selfsubjectreviews"),
            Some("SelfSubjectReview")
        );
        assert_eq!(route("/apis/apps/v1/deployments"), None);
    }

    #[test]
    fn authenticated_users_are_allowed_and_the_spec_is_echoed() {
        let body = json!({"spec": {"resourceAttributes": {"verb": "create", "resource": "pods", "namespace": "default"}}});
        let answer = access_review(&admin(), &body).unwrap();
        assert_eq!(answer["status"]["allowed"], true);
        assert_eq!(answer["spec"]["resourceAttributes"]["verb"], "create");
        assert_eq!(
            access_review(&admin(), &json!({"spec": {}}))
                .unwrap_err()
                .code,
            422
        );
        let (allowed, _) = authorize(&UserInfo::anonymous(), &json!({}));
        assert!(!allowed);
    }

    #[test]
    fn self_review_shows_the_user_and_groups() {
        let answer = self_review(&admin());
        assert_eq!(answer["status"]["userInfo"]["username"], "admin");
        assert_eq!(answer["status"]["userInfo"]["groups"][0], "system:masters");
    }
}
