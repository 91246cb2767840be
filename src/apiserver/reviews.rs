//! The review APIs: SelfSubjectAccessReview (`kubectl auth can-i`), SubjectAccessReview and
//! LocalSubjectAccessReview (asking about someone else), SelfSubjectRulesReview
//! (`kubectl auth can-i --list`) and SelfSubjectReview (`kubectl auth whoami`). Nothing is
//! stored: each POST is answered from the request's user and the RBAC policy.

use axum::extract::Request;
use axum::response::Response;
use http::Method;
use serde_json::{json, Value};

use super::authn::UserInfo;
use super::rbac::rules::PolicyRule;
use super::rbac::{Attributes, Rbac, ResourceAttributes};
use super::response::json_response;
use super::ApiServer;
use crate::api::{ApiError, ApiResult};

/// The review resources: group, version, plural, kind, namespaced. They are not in the
/// resource table because they are never stored, listed or watched (create is their only verb).
pub const REVIEWS: &[(&str, &str, &str, &str, bool)] = &[
    (
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        false,
    ),
    (
        "authorization.k8s.io",
        "v1",
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
        false,
    ),
    (
        "authorization.k8s.io",
        "v1",
        "subjectaccessreviews",
        "SubjectAccessReview",
        false,
    ),
    (
        "authorization.k8s.io",
        "v1",
        "localsubjectaccessreviews",
        "LocalSubjectAccessReview",
        true,
    ),
    (
        "authentication.k8s.io",
        "v1",
        "selfsubjectreviews",
        "SelfSubjectReview",
        false,
    ),
    (
        "authentication.k8s.io",
        "v1",
        "tokenreviews",
        "TokenReview",
        false,
    ),
];

/// The review groups, for discovery (each serves one version).
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut groups: Vec<(&'static str, &'static str)> = Vec::new();
    for (g, v, _, _, _) in REVIEWS {
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
        .filter(|(g, v, _, _, _)| *g == group && *v == version)
        .map(|(g, v, plural, kind, namespaced)| match aggregated {
            true => json!({
                "resource": plural,
                "responseKind": {"group": g, "version": v, "kind": kind},
                "scope": if *namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": plural.trim_end_matches('s'),
                "verbs": ["create"],
            }),
            false => json!({
                "name": plural,
                "singularName": plural.trim_end_matches('s'),
                "namespaced": namespaced,
                "kind": kind,
                "verbs": ["create"],
            }),
        })
        .collect()
}

/// A review a path names: its kind, and the namespace of a LocalSubjectAccessReview.
#[derive(Debug, PartialEq, Eq)]
pub struct ReviewRoute {
    pub kind: &'static str,
    pub namespace: Option<String>,
}

/// The review a path names, if any.
pub fn route(path: &str) -> Option<ReviewRoute> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, namespace, plural) = match segments.as_slice() {
        ["apis", group, version, plural] => (*group, *version, None, *plural),
        ["apis", group, version, "namespaces", ns, plural] => {
            (*group, *version, Some(*ns), *plural)
        }
        _ => return None,
    };
    REVIEWS
        .iter()
        .find(|(g, v, p, _, namespaced)| {
            *g == group && *v == version && *p == plural && *namespaced == namespace.is_some()
        })
        .map(|(_, _, _, kind, _)| ReviewRoute {
            kind,
            namespace: namespace.map(String::from),
        })
}

pub async fn serve(
    server: &ApiServer,
    review: ReviewRoute,
    user: &UserInfo,
    request: Request,
) -> ApiResult<Response> {
    let kind = review.kind;
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
    let rbac = server.rbac();
    let answer = match kind {
        "SelfSubjectAccessReview" => access_review(rbac.as_deref(), kind, user, &body, None)?,
        "SubjectAccessReview" => {
            let subject = subject_of(&body)?;
            access_review(rbac.as_deref(), kind, &subject, &body, None)?
        }
        "LocalSubjectAccessReview" => {
            let subject = subject_of(&body)?;
            let namespace = review.namespace.unwrap_or_default();
            access_review(rbac.as_deref(), kind, &subject, &body, Some(&namespace))?
        }
        "SelfSubjectRulesReview" => rules_review(rbac.as_deref(), user, &body),
        _ => self_review(user),
    };
    Ok(json_response(201, &answer))
}

/// Whether `user` may do what `attributes` (a ResourceAttributes or NonResourceAttributes, as
/// JSON) describe, and why.
pub fn authorize(rbac: Option<&Rbac>, user: &UserInfo, attributes: &Value) -> (bool, String) {
    let Some(rbac) = rbac else {
        // No authorizer (in-process test routers): every authenticated user may do everything,
        // as the request gate in front of the router decides then.
        return match user.is_anonymous() {
            true => (false, String::new()),
            false => (true, String::new()),
        };
    };
    let decision = rbac.authorize(user, &review_attributes(attributes));
    (decision.allowed, decision.reason)
}

/// Review attributes as request attributes: `path` marks a NonResourceAttributes.
fn review_attributes(attributes: &Value) -> Attributes {
    let field = |name: &str| {
        attributes
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    if attributes.get("path").is_some() {
        return Attributes {
            verb: field("verb"),
            path: field("path"),
            resource: None,
        };
    }
    Attributes {
        verb: field("verb"),
        path: String::new(),
        resource: Some(ResourceAttributes {
            api_group: field("group"),
            api_version: field("version"),
            resource: field("resource"),
            subresource: field("subresource"),
            namespace: field("namespace"),
            name: field("name"),
        }),
    }
}

/// The user a SubjectAccessReview asks about (`spec.user`, `spec.groups`, `spec.uid`).
fn subject_of(body: &Value) -> ApiResult<UserInfo> {
    let spec = body.get("spec").cloned().unwrap_or(Value::Null);
    let name = spec
        .get("user")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let groups: Vec<String> = spec
        .get("groups")
        .and_then(Value::as_array)
        .map(|groups| {
            groups
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if name.is_empty() && groups.is_empty() {
        return Err(ApiError::invalid(
            "authorization.k8s.io",
            "SubjectAccessReview",
            "",
            vec![crate::api::Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value: at least one of user or group must be specified".into(),
                field: "spec.user".into(),
            }],
        ));
    }
    let uid = spec
        .get("uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    Ok(UserInfo { name, uid, groups })
}

fn access_review(
    rbac: Option<&Rbac>,
    kind: &str,
    user: &UserInfo,
    body: &Value,
    local_namespace: Option<&str>,
) -> ApiResult<Value> {
    let mut spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let resource = spec
        .get("resourceAttributes")
        .filter(|a| !a.is_null())
        .cloned();
    let non_resource = spec
        .get("nonResourceAttributes")
        .filter(|a| !a.is_null())
        .cloned();
    let invalid = |field: &str, message: &str| {
        ApiError::invalid(
            "authorization.k8s.io",
            kind,
            "",
            vec![crate::api::Cause {
                reason: "FieldValueRequired".into(),
                message: message.into(),
                field: field.into(),
            }],
        )
    };
    let attributes = match (&resource, &non_resource) {
        (Some(a), None) => a.clone(),
        (None, Some(a)) => {
            let mut a = a.clone();
            if a.get("path").is_none() {
                a["path"] = json!("");
            }
            a
        }
        (Some(_), Some(_)) => {
            return Err(invalid(
                "spec.nonResourceAttributes",
                "Invalid value: cannot be specified in combination with resourceAttributes",
            ))
        }
        (None, None) => {
            return Err(invalid(
                "spec.resourceAttributes",
                "Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ))
        }
    };
    let mut attributes = attributes;
    if let Some(namespace) = local_namespace {
        let asked = attributes
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        match asked {
            "" => {
                attributes["namespace"] = json!(namespace);
                spec["resourceAttributes"] = attributes.clone();
            }
            ns if ns != namespace => {
                return Err(ApiError::bad_request(format!(
                    "spec.resourceAttributes.namespace must match namespace: {namespace}"
                )))
            }
            _ => {}
        }
        if resource.is_none() {
            return Err(invalid(
                "spec.resourceAttributes",
                "Required value: disallowed on this kind of request",
            ));
        }
    }
    let (allowed, reason) = authorize(rbac, user, &attributes);
    let mut status = json!({"allowed": allowed});
    if !reason.is_empty() {
        status["reason"] = json!(reason);
    }
    let mut metadata = json!({"creationTimestamp": null});
    if let Some(namespace) = local_namespace {
        metadata["namespace"] = json!(namespace);
    }
    Ok(json!({
        "kind": kind,
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": metadata,
        "spec": spec,
        "status": status,
    }))
}

/// What `user` may do in `spec.namespace`: every rule, split into resource and non-resource
/// rules as upstream's SelfSubjectRulesReview answers.
fn rules_review(rbac: Option<&Rbac>, user: &UserInfo, body: &Value) -> Value {
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let namespace = spec.get("namespace").and_then(Value::as_str).unwrap_or("");
    let rules = match rbac {
        Some(rbac) => rbac.rules_for(user, namespace),
        None => vec![
            PolicyRule::resources(&["*"], &["*"], &["*"]),
            PolicyRule::urls(&["*"], &["*"]),
        ],
    };
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for rule in rules {
        if !rule.resources.is_empty() {
            let mut entry = json!({
                "verbs": rule.verbs,
                "apiGroups": rule.api_groups,
                "resources": rule.resources,
            });
            if !rule.resource_names.is_empty() {
                entry["resourceNames"] = json!(rule.resource_names);
            }
            resource_rules.push(entry);
        }
        if !rule.non_resource_urls.is_empty() {
            non_resource_rules.push(json!({
                "verbs": rule.verbs,
                "nonResourceURLs": rule.non_resource_urls,
            }));
        }
    }
    json!({
        "kind": "SelfSubjectRulesReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": spec,
        "status": {
            "resourceRules": resource_rules,
            "nonResourceRules": non_resource_rules,
            "incomplete": false,
        },
    })
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
    use crate::apiserver::rbac::policy::Policy;

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
        let kind = |path: &str| route(path).map(|r| r.kind);
        assert_eq!(
            kind("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"),
            Some("SelfSubjectAccessReview")
        );
        assert_eq!(
            kind("/apis/authentication.k8s.io/v1/selfsubjectreviews"),
            Some("SelfSubjectReview")
        );
        assert_eq!(
            route("/apis/authorization.k8s.io/v1/namespaces/a/localsubjectaccessreviews"),
            Some(ReviewRoute {
                kind: "LocalSubjectAccessReview",
                namespace: Some("a".into())
            })
        );
        assert_eq!(
            kind("/apis/authorization.k8s.io/v1/localsubjectaccessreviews"),
            None
        );
        assert_eq!(
            kind("/apis/authorization.k8s.io/v1/namespaces/a/subjectaccessreviews"),
            None
        );
        assert_eq!(kind("/apis/apps/v1/deployments"), None);
    }

    fn alice_edits_in_a() -> Rbac {
        let mut policy = Policy::default();
        policy.apply(
            "/rbac.authorization.k8s.io/clusterroles/edit",
            Some(&json!({"rules": [{"verbs": ["get", "create"], "apiGroups": [""], "resources": ["pods"]}, {"verbs": ["get"], "nonResourceURLs": ["/healthz"]}]})),
        );
        policy.apply(
            "/rbac.authorization.k8s.io/rolebindings/a/alice",
            Some(&json!({"roleRef": {"kind": "ClusterRole", "name": "edit"}, "subjects": [{"kind": "User", "name": "alice"}]})),
        );
        Rbac::from_policy(policy)
    }

    #[test]
    fn access_reviews_answer_from_the_policy_and_echo_the_spec() {
        let rbac = alice_edits_in_a();
        let alice = UserInfo {
            name: "alice".into(),
            uid: String::new(),
            groups: vec![],
        };
        let ask = |namespace: &str| json!({"spec": {"resourceAttributes": {"verb": "create", "resource": "pods", "namespace": namespace}}});
        let answer = access_review(
            Some(&rbac),
            "SelfSubjectAccessReview",
            &alice,
            &ask("a"),
            None,
        )
        .unwrap();
        assert_eq!(answer["status"]["allowed"], true);
        assert_eq!(
            answer["status"]["reason"],
            r#"RBAC: allowed by RoleBinding "alice/a" of ClusterRole "edit" to User "alice""#
        );
        assert_eq!(answer["spec"]["resourceAttributes"]["verb"], "create");
        let answer = access_review(
            Some(&rbac),
            "SelfSubjectAccessReview",
            &alice,
            &ask("b"),
            None,
        )
        .unwrap();
        assert_eq!(answer["status"]["allowed"], false);
        assert_eq!(
            access_review(
                Some(&rbac),
                "SelfSubjectAccessReview",
                &admin(),
                &json!({"spec": {}}),
                None
            )
            .unwrap_err()
            .code,
            422
        );
        let (allowed, _) = authorize(None, &UserInfo::anonymous(), &json!({}));
        assert!(!allowed);
    }

    #[test]
    fn subject_access_reviews_ask_about_the_user_in_the_spec() {
        let rbac = alice_edits_in_a();
        let body = json!({"spec": {"user": "alice", "resourceAttributes": {"verb": "get", "resource": "pods", "namespace": "a"}}});
        let subject = subject_of(&body).unwrap();
        assert_eq!(subject.name, "alice");
        let answer =
            access_review(Some(&rbac), "SubjectAccessReview", &subject, &body, None).unwrap();
        assert_eq!(
            (
                answer["kind"].as_str(),
                answer["status"]["allowed"].as_bool()
            ),
            (Some("SubjectAccessReview"), Some(true))
        );
        assert_eq!(subject_of(&json!({"spec": {}})).unwrap_err().code, 422);
        // A local review takes its namespace from the path and refuses another.
        let local = json!({"spec": {"user": "alice", "resourceAttributes": {"verb": "get", "resource": "pods"}}});
        let answer = access_review(
            Some(&rbac),
            "LocalSubjectAccessReview",
            &subject,
            &local,
            Some("a"),
        )
        .unwrap();
        assert_eq!(answer["status"]["allowed"], true);
        assert_eq!(answer["spec"]["resourceAttributes"]["namespace"], "a");
        assert_eq!(
            access_review(
                Some(&rbac),
                "LocalSubjectAccessReview",
                &subject,
                &body,
                Some("b")
            )
            .unwrap_err()
            .code,
            400
        );
        let path = json!({"spec": {"user": "alice", "nonResourceAttributes": {"verb": "get", "path": "/healthz"}}});
        assert_eq!(
            access_review(Some(&rbac), "SubjectAccessReview", &subject, &path, None).unwrap()
                ["status"]["allowed"],
            false,
            "a RoleBinding grants no paths"
        );
    }

    #[test]
    fn rules_reviews_list_resource_and_path_rules_of_the_namespace() {
        let rbac = alice_edits_in_a();
        let alice = UserInfo {
            name: "alice".into(),
            uid: String::new(),
            groups: vec![],
        };
        let answer = rules_review(Some(&rbac), &alice, &json!({"spec": {"namespace": "a"}}));
        assert_eq!(
            answer["status"]["resourceRules"],
            json!([{"verbs": ["get", "create"], "apiGroups": [""], "resources": ["pods"]}])
        );
        assert_eq!(
            answer["status"]["nonResourceRules"][0]["nonResourceURLs"],
            json!(["/healthz"])
        );
        let elsewhere = rules_review(Some(&rbac), &alice, &json!({"spec": {"namespace": "b"}}));
        assert_eq!(elsewhere["status"]["resourceRules"], json!([]));
    }

    #[test]
    fn self_review_shows_the_user_and_groups() {
        let answer = self_review(&admin());
        assert_eq!(answer["status"]["userInfo"]["username"], "admin");
        assert_eq!(answer["status"]["userInfo"]["groups"][0], "system:masters");
    }
}
