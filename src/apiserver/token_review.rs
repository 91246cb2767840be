//! Token verification for others: TokenReview (`authentication.k8s.io/v1 tokenreviews`, create
//! only, nothing stored) answers who a bearer token stands for and for which audiences, and the
//! OIDC discovery documents (`/.well-known/openid-configuration`, `/openid/v1/jwks`) let
//! workloads verify service account tokens themselves. Also the check of a TokenRequest's
//! `boundObjectRef`, which ties a token's life to a pod.

use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use http::Method;
use serde_json::{json, Value};

use super::authn::{Authenticator, UserInfo};
use super::response::json_response;
use super::sa_token::{self, Reviewed};
use super::ApiServer;
use crate::api::{ApiError, ApiResult};

pub const OPENID_CONFIGURATION: &str = "/.well-known/openid-configuration";
pub const JWKS: &str = "/openid/v1/jwks";

/// The OIDC discovery documents, for `path` if it names one. Anyone may read them, as upstream's
/// `system:service-account-issuer-discovery` role is meant for: they hold only public data.
pub fn oidc_discovery(server: &ApiServer, path: &str) -> Option<Response> {
    if path != OPENID_CONFIGURATION && path != JWKS {
        return None;
    }
    let Some(signer) = server.token_signer() else {
        return Some(super::response::error_response(&ApiError::no_route(path)));
    };
    Some(match path {
        JWKS => json_response(200, &signer.jwks()),
        _ => {
            let address = server
                .server_address
                .read()
                .map(|a| a.clone())
                .unwrap_or_default();
            json_response(
                200,
                &sa_token::openid_configuration(&format!("https://{address}")),
            )
        }
    })
}

/// Answers a TokenReview. The request's [`Authenticator`] (put in its extensions by the TLS
/// front end) checks static tokens; service account tokens are checked with their audiences.
pub async fn serve(server: &ApiServer, request: Request) -> ApiResult<Response> {
    if request.method() != Method::POST {
        return Err(ApiError::method_not_allowed(
            request.method().as_str(),
            "TokenReview",
        ));
    }
    let static_tokens = request.extensions().get::<Arc<Authenticator>>().cloned();
    let body = super::rest::read_json(server, request).await?;
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let token = spec.get("token").and_then(Value::as_str).unwrap_or("");
    if token.is_empty() {
        return Err(ApiError::bad_request(
            "token is required for TokenReview in authentication",
        ));
    }
    let audiences: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let now = jiff::Timestamp::now().as_second();
    let outcome = match (sa_token::looks_like_jwt(token), server.token_signer()) {
        (true, Some(signer)) => signer
            .review(token, now, &audiences)
            .map_err(|e| e.to_string()),
        _ => static_review(static_tokens.as_deref(), token, &audiences),
    };
    let status = match outcome {
        Ok(reviewed) => authenticated(&reviewed),
        Err(error) => json!({"user": {}, "error": format!("[invalid bearer token, {error}]")}),
    };
    Ok(json_response(
        201,
        &json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": spec,
            "status": status,
        }),
    ))
}

/// Static tokens know no audiences: like upstream's audience-agnostic authenticators, they are
/// valid for the API server's own audience only.
fn static_review(
    authn: Option<&Authenticator>,
    token: &str,
    audiences: &[String],
) -> Result<Reviewed, String> {
    let user = authn
        .and_then(|a| a.from_bearer(&format!("Bearer {token}")))
        .ok_or_else(|| "token not found".to_string())?;
    let api = sa_token::ISSUER.to_string();
    if !audiences.is_empty() && !audiences.contains(&api) {
        return Err("token audiences don't match the requested audiences".to_string());
    }
    Ok(Reviewed {
        user,
        audiences: vec![api],
        pod: None,
    })
}

fn authenticated(reviewed: &Reviewed) -> Value {
    let user: &UserInfo = &reviewed.user;
    let mut info = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        info["uid"] = json!(user.uid);
    }
    if let Some((pod, uid)) = &reviewed.pod {
        info["extra"] = json!({
            "authentication.kubernetes.io/pod-name": [pod],
            "authentication.kubernetes.io/pod-uid": [uid],
        });
    }
    // The audiences echoed are those the token is good for: the API server's when none were
    // asked, as upstream.
    json!({"authenticated": true, "user": info, "audiences": reviewed.audiences})
}

/// Checks a TokenRequest's `boundObjectRef`: a Pod must exist (with the uid given, if one is);
/// its (name, uid) goes into the token, which then dies with the pod. Other kinds upstream
/// allows (Secret, Node) are accepted but not tracked.
pub fn bound_pod(
    server: &ApiServer,
    namespace: &str,
    bound: &Value,
) -> ApiResult<Option<(String, String)>> {
    let kind = bound.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = bound.get("name").and_then(Value::as_str).unwrap_or("");
    match kind {
        "Pod" => {}
        "Secret" | "Node" => return Ok(None),
        other => {
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {other}"
            )))
        }
    }
    let pods = crate::api::resources::find("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("pods are not served"))?;
    let pod = server.registry.get_value(pods, namespace, name)?;
    let uid = crate::api::meta::meta_str(&pod, "uid").to_string();
    let wanted = bound.get("uid").and_then(Value::as_str).unwrap_or("");
    if !wanted.is_empty() && wanted != uid {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "the UID in the bound object reference ({wanted}) does not match the UID in \
                 record. The object might have been deleted and then recreated"
            ),
        ));
    }
    Ok(Some((name.to_string(), uid)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_token_is_good_for_the_api_audience_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens.csv");
        std::fs::write(&file, "s3cret,bob,bob-uid,\"dev\"\n").unwrap();
        let authn = Authenticator::new(Some(&file)).unwrap();
        let reviewed = static_review(Some(&authn), "s3cret", &[]).unwrap();
        assert_eq!(reviewed.user.name, "bob");
        assert_eq!(reviewed.audiences, vec![sa_token::ISSUER.to_string()]);
        assert!(static_review(Some(&authn), "s3cret", &["vault".into()]).is_err());
        assert!(static_review(Some(&authn), "wrong", &[]).is_err());
    }

    #[test]
    fn a_bound_token_review_carries_the_pod_as_extra() {
        let reviewed = Reviewed {
            user: sa_token::service_account_user("ns", "default", "sa-uid"),
            audiences: vec!["api".into()],
            pod: Some(("p".into(), "pod-uid".into())),
        };
        let status = authenticated(&reviewed);
        assert_eq!(status["authenticated"], true);
        assert_eq!(
            status["user"]["extra"]["authentication.kubernetes.io/pod-name"][0],
            "p"
        );
        assert_eq!(status["audiences"][0], "api");
    }
}
