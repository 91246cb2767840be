//! The bootstrap signer, as kubeadm's: `cluster-info` in `kube-public` carries one
//! `jws-kubeconfig-<token id>` entry per bootstrap token meant for signing, a detached JWS
//! (HS256, keyed with the token's secret) over its `kubeconfig`. A joining node that holds a
//! token can so check that the kubeconfig — and the CA in it — came from a server that knows
//! the token, without having to trust the server first.
//!
//! Detached JWS: `<base64url protected header>..<base64url signature>`, the payload left out
//! (RFC 7515 appendix F); the header is `{"alg":"HS256","kid":"<token id>"}`, the MAC is over
//! `<header>.<base64url kubeconfig>`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::server::{CLUSTER_INFO, PUBLIC_NAMESPACE};
use super::token;

/// Prefix of the signature entries in `cluster-info` (upstream's `jws-kubeconfig-`).
pub const JWS_PREFIX: &str = "jws-kubeconfig-";
const KUBECONFIG_KEY: &str = "kubeconfig";

/// The detached JWS of `content` for the token `token_id`.`token_secret`.
pub fn detached_signature(content: &str, token_id: &str, token_secret: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"HS256","kid":"{token_id}"}}"#));
    let payload = URL_SAFE_NO_PAD.encode(content);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token_secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("{header}.{payload}").as_bytes());
    format!("{header}..{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// Whether `signature` is the detached JWS of `content` for the token, checked in constant time
/// (ring's verify), with the header naming HS256 and the token's id.
pub fn signature_is_valid(
    signature: &str,
    content: &str,
    token_id: &str,
    token_secret: &str,
) -> bool {
    let Some((header, mac)) = signature.split_once("..") else {
        return false;
    };
    let Ok(header_json) = URL_SAFE_NO_PAD.decode(header) else {
        return false;
    };
    let Ok(header_value) = serde_json::from_slice::<serde_json::Value>(&header_json) else {
        return false;
    };
    if header_value["alg"] != "HS256" || header_value["kid"] != token_id {
        return false;
    }
    let Ok(mac) = URL_SAFE_NO_PAD.decode(mac) else {
        return false;
    };
    let payload = URL_SAFE_NO_PAD.encode(content);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token_secret.as_bytes());
    ring::hmac::verify(&key, format!("{header}.{payload}").as_bytes(), &mac).is_ok()
}

/// A token the signer signs for: its id and secret, and when it expires (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningToken {
    pub id: String,
    pub secret: String,
    pub expires: Option<i64>,
}

/// The token in a bootstrap token Secret, if it is meant for signing and not expired at `now`
/// (upstream's `usage-bootstrap-signing: "true"`).
pub fn signing_token(secret: &serde_json::Value, now: i64) -> Option<SigningToken> {
    if secret["type"] != token::SECRET_TYPE
        || !secret
            .pointer("/metadata/deletionTimestamp")
            .is_none_or(serde_json::Value::is_null)
    {
        return None;
    }
    let field = |key: &str| token::secret_field(secret, key);
    if field("usage-bootstrap-signing").as_deref() != Some("true") {
        return None;
    }
    let expires = match field("expiration") {
        Some(text) => Some(text.parse::<jiff::Timestamp>().ok()?.as_second()),
        None => None,
    };
    if expires.is_some_and(|at| at <= now) {
        return None;
    }
    Some(SigningToken {
        id: field("token-id")?,
        secret: field("token-secret")?,
        expires,
    })
}

/// `data` of cluster-info with exactly one current signature per token, and nothing else
/// under the signature prefix.
pub fn signed_data(
    data: &BTreeMap<String, String>,
    tokens: &[SigningToken],
) -> BTreeMap<String, String> {
    let mut signed: BTreeMap<String, String> = data
        .iter()
        .filter(|(key, _)| !key.starts_with(JWS_PREFIX))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    if let Some(kubeconfig) = data.get(KUBECONFIG_KEY) {
        for token in tokens {
            signed.insert(
                format!("{JWS_PREFIX}{}", token.id),
                detached_signature(kubeconfig, &token.id, &token.secret),
            );
        }
    }
    signed
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
}

/// Keeps cluster-info's signatures in step with the bootstrap token Secrets.
pub async fn run(client: kube::Client) {
    let cluster_info: Api<ConfigMap> = Api::namespaced(client.clone(), PUBLIC_NAMESPACE);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), token::NAMESPACE);
    let only_cluster_info =
        watcher::Config::default().fields(&format!("metadata.name={CLUSTER_INFO}"));
    let only_tokens = watcher::Config::default().fields(&format!("type={}", token::SECRET_TYPE));
    Controller::new(cluster_info, only_cluster_info)
        .watches(secrets, only_tokens, |_| {
            Some(ObjectRef::new(CLUSTER_INFO).within(PUBLIC_NAMESPACE))
        })
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|_| async {})
        .await;
}

fn error_policy(_: Arc<ConfigMap>, error: &Error, _: Arc<kube::Client>) -> Action {
    tracing::warn!(%error, "signing cluster-info failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(_: Arc<ConfigMap>, client: Arc<kube::Client>) -> Result<Action, Error> {
    let now = jiff::Timestamp::now().as_second();
    let secrets: Api<Secret> = Api::namespaced((*client).clone(), token::NAMESPACE);
    let listed = secrets
        .list(&kube::api::ListParams::default().fields(&format!("type={}", token::SECRET_TYPE)))
        .await?;
    let tokens: Vec<SigningToken> = listed
        .items
        .iter()
        .filter_map(|secret| serde_json::to_value(secret).ok())
        .filter_map(|secret| signing_token(&secret, now))
        .collect();
    // Re-read: level-triggered, the cached copy may be stale.
    let maps: Api<ConfigMap> = Api::namespaced((*client).clone(), PUBLIC_NAMESPACE);
    let Some(mut fresh) = maps.get_opt(CLUSTER_INFO).await? else {
        return Ok(Action::await_change());
    };
    let data = fresh.data.clone().unwrap_or_default();
    let signed = signed_data(&data, &tokens);
    if signed != data {
        fresh.data = Some(signed);
        maps.replace(CLUSTER_INFO, &PostParams::default(), &fresh)
            .await?;
    }
    // An expiring token's signature goes when the token does.
    let next_expiry = tokens.iter().filter_map(|t| t.expires).min();
    Ok(match next_expiry {
        Some(at) => Action::requeue(Duration::from_secs((at - now).max(0) as u64 + 1)),
        None => Action::await_change(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Upstream's vectors (k8s.io/cluster-bootstrap token/jws tests).
    const CONTENT: &str = "Hello from the other side. I must have called a thousand times.";

    #[test]
    fn the_signature_matches_upstreams_detached_jws_vectors() {
        assert_eq!(
            detached_signature(CONTENT, "joshua", "my voice is my passcode"),
            "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..VShe2taLd-YTrmWuRkcL_8QTNDHYxQIEBsAYYiIj1_8"
        );
        assert_eq!(
            detached_signature("", "joshua", "my voice is my passcode"),
            "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..7Ui1ALizW4jXphVUB7xUqC9vLYLL9RZeOFfVLoB7Tgk"
        );
        assert_eq!(
            detached_signature(
                CONTENT,
                "joshua",
                "my voice is my passcode. my voice is my passcode"
            ),
            "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..SFoKn0-YxqnvpSExt4LuCZ_7pvIBdX3SoUO_NsTpkdg"
        );
    }

    #[test]
    fn a_signature_checks_only_against_its_content_token_and_id() {
        let sig = detached_signature(CONTENT, "abcdef", "0123456789abcdef");
        assert!(signature_is_valid(
            &sig,
            CONTENT,
            "abcdef",
            "0123456789abcdef"
        ));
        assert!(!signature_is_valid(
            &sig,
            "other content",
            "abcdef",
            "0123456789abcdef"
        ));
        assert!(!signature_is_valid(
            &sig,
            CONTENT,
            "abcdef",
            "0123456789abcdeX"
        ));
        assert!(!signature_is_valid(
            &sig,
            CONTENT,
            "zzzzzz",
            "0123456789abcdef"
        ));
        assert!(!signature_is_valid(
            "garbage",
            CONTENT,
            "abcdef",
            "0123456789abcdef"
        ));
        assert!(!signature_is_valid(
            "..",
            CONTENT,
            "abcdef",
            "0123456789abcdef"
        ));
    }

    fn token_secret(id: &str, signing: &str, expiration: Option<&str>) -> serde_json::Value {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut data = json!({
            "token-id": b64(id), "token-secret": b64("0123456789abcdef"),
            "usage-bootstrap-signing": b64(signing),
        });
        if let Some(at) = expiration {
            data["expiration"] = b64(at).into();
        }
        json!({"type": token::SECRET_TYPE, "metadata": {"name": format!("bootstrap-token-{id}")},
               "data": data})
    }

    #[test]
    fn only_unexpired_tokens_meant_for_signing_sign() {
        let now = "2030-01-01T00:00:00Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_second();
        assert!(signing_token(&token_secret("aaaaaa", "true", None), now).is_some());
        assert!(signing_token(&token_secret("bbbbbb", "false", None), now).is_none());
        assert!(signing_token(
            &token_secret("cccccc", "true", Some("2029-12-31T00:00:00Z")),
            now
        )
        .is_none());
        let later = signing_token(
            &token_secret("dddddd", "true", Some("2030-01-02T00:00:00Z")),
            now,
        )
        .unwrap();
        assert_eq!(later.expires, Some(now + 86_400));
    }

    #[test]
    fn cluster_info_gets_one_signature_per_token_and_loses_stale_ones() {
        let data: BTreeMap<String, String> = [
            ("kubeconfig".to_owned(), "apiVersion: v1\n".to_owned()),
            ("jws-kubeconfig-gone00".to_owned(), "old..sig".to_owned()),
        ]
        .into();
        let tokens = [SigningToken {
            id: "abcdef".into(),
            secret: "0123456789abcdef".into(),
            expires: None,
        }];
        let signed = signed_data(&data, &tokens);
        assert_eq!(signed.len(), 2);
        assert!(!signed.contains_key("jws-kubeconfig-gone00"));
        let sig = &signed["jws-kubeconfig-abcdef"];
        assert!(signature_is_valid(
            sig,
            "apiVersion: v1\n",
            "abcdef",
            "0123456789abcdef"
        ));
        // Signing again changes nothing: the controller then writes nothing.
        assert_eq!(signed_data(&signed, &tokens), signed);
    }
}
