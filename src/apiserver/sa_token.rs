//! Service account tokens: signed JWTs issued by `serviceaccounts/<name>/token` (TokenRequest)
//! and accepted back as bearer tokens, as kube-apiserver's service account token authenticator.
//!
//! The signing key is an ECDSA P-256 key (ES256) kept in the PKI directory, so tokens survive a
//! restart. A token is only accepted while its service account exists with the uid it was issued
//! for: deleting the account revokes its tokens.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::{json, Value};
use sha2::Digest;

use super::authn::{UserInfo, AUTHENTICATED_GROUP};
use crate::store::Store;

/// File name of the signing key (PKCS#8 PEM) in the PKI directory.
pub const KEY_FILE: &str = "service-account.key";
/// Upstream's default `--service-account-issuer` for a cluster at `cluster.local`; also the
/// default audience, as `--api-audiences` defaults to the issuer.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// TokenRequest's default and minimum lifetimes (upstream: 1 h default, 10 min minimum).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// Clock skew allowed when checking `nbf` and `exp`.
const LEEWAY_SECONDS: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum TokenKeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a usable ECDSA P-256 PKCS#8 key: {reason}")]
    Key { path: PathBuf, reason: String },
}

/// Why a bearer token that looks like a JWT was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("invalid signature")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token has the wrong issuer or audience")]
    WrongIssuerOrAudience,
    #[error("service account {0} no longer exists")]
    AccountGone(String),
    #[error("pod {0} the token is bound to no longer exists")]
    BoundObjectGone(String),
}

/// What a token is issued for.
#[derive(Debug, Clone)]
pub struct TokenClaims {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub audiences: Vec<String>,
    pub issued_at: i64,
    pub expiration_seconds: i64,
    /// The pod (name, uid) the token is bound to: it dies with the pod.
    pub bound_pod: Option<(String, String)>,
}

/// Who a token stands for and what it was checked against, for TokenReview.
#[derive(Debug, Clone)]
pub struct Reviewed {
    pub user: UserInfo,
    /// The requested audiences the token is valid for.
    pub audiences: Vec<String>,
    /// The pod (name, uid) a bound token belongs to.
    pub pod: Option<(String, String)>,
}

/// Signs and verifies service account tokens.
pub struct TokenSigner {
    key: EcdsaKeyPair,
    key_id: String,
    store: Store,
}

impl std::fmt::Debug for TokenSigner {
    // Never print the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// Loads the signing key from `pki_dir`, creating it on first start.
    pub fn load_or_create(pki_dir: &Path, store: Store) -> Result<TokenSigner, TokenKeyError> {
        let path = pki_dir.join(KEY_FILE);
        let pem = ensure_key_file(pki_dir)?;
        Self::from_pem(&pem, store).map_err(|reason| TokenKeyError::Key { path, reason })
    }

    fn from_pem(pem: &str, store: Store) -> Result<TokenSigner, String> {
        let der = pem_body(pem).ok_or("no PRIVATE KEY block")?;
        let key = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &der,
            &SystemRandom::new(),
        )
        .map_err(|e| e.to_string())?;
        let key_id = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(key.public_key().as_ref()));
        Ok(TokenSigner { key, key_id, store })
    }

    /// A signed JWT for `claims`.
    pub fn sign(&self, claims: &TokenClaims) -> Result<String, String> {
        let header = json!({"alg": "ES256", "kid": self.key_id});
        let mut payload = json!({
            "aud": claims.audiences,
            "exp": claims.issued_at + claims.expiration_seconds,
            "iat": claims.issued_at,
            "nbf": claims.issued_at,
            "iss": ISSUER,
            "jti": crate::api::meta::new_uid().to_string(),
            "sub": format!("system:serviceaccount:{}:{}", claims.namespace, claims.name),
            "kubernetes.io": {
                "namespace": claims.namespace,
                "serviceaccount": {"name": claims.name, "uid": claims.uid},
            },
        });
        if let Some((pod, uid)) = &claims.bound_pod {
            payload["kubernetes.io"]["pod"] = json!({"name": pod, "uid": uid});
        }
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let signature = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|e| format!("signing failed: {e}"))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }

    /// The user a token stands for, if it is ours, signed, current, meant for the API server,
    /// and its account (and bound pod) still exist.
    pub fn authenticate(&self, token: &str, now: i64) -> Result<UserInfo, TokenError> {
        self.review(token, now, &[]).map(|reviewed| reviewed.user)
    }

    /// As [`authenticate`](Self::authenticate), for a token meant for any of `audiences`
    /// (the API server's own when empty), as TokenReview asks.
    pub fn review(
        &self,
        token: &str,
        now: i64,
        audiences: &[String],
    ) -> Result<Reviewed, TokenError> {
        let (claims, audiences) = self.verify(token, now, audiences)?;
        let k8s = &claims["kubernetes.io"];
        let namespace = k8s["namespace"].as_str().ok_or(TokenError::Malformed)?;
        let name = k8s["serviceaccount"]["name"]
            .as_str()
            .ok_or(TokenError::Malformed)?;
        let uid = k8s["serviceaccount"]["uid"].as_str().unwrap_or("");
        let who = format!("{namespace}/{name}");
        if self
            .stored_uid("serviceaccounts", namespace, name)
            .as_deref()
            != Some(uid)
        {
            return Err(TokenError::AccountGone(who));
        }
        let pod = match k8s.get("pod") {
            Some(pod) => {
                let pod_name = pod["name"].as_str().ok_or(TokenError::Malformed)?;
                let pod_uid = pod["uid"].as_str().unwrap_or("");
                if self.stored_uid("pods", namespace, pod_name).as_deref() != Some(pod_uid) {
                    return Err(TokenError::BoundObjectGone(format!(
                        "{namespace}/{pod_name}"
                    )));
                }
                Some((pod_name.to_owned(), pod_uid.to_owned()))
            }
            None => None,
        };
        Ok(Reviewed {
            user: service_account_user(namespace, name, uid),
            audiences,
            pod,
        })
    }

    /// The public half of the signing key as a JSON Web Key Set, for `/openid/v1/jwks`.
    pub fn jwks(&self) -> Value {
        // An uncompressed P-256 point: 0x04, then x and y, 32 bytes each.
        let point = self.key.public_key().as_ref();
        let (x, y) = match point.get(1..65) {
            Some(xy) => xy.split_at(32),
            None => (&[][..], &[][..]),
        };
        json!({"keys": [{
            "use": "sig",
            "kty": "EC",
            "kid": self.key_id,
            "crv": "P-256",
            "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
        }]})
    }

    /// The uid of a stored core object, if it exists: one point read in the store, as cheap
    /// as any cache would be (the store keeps hot pages in memory).
    fn stored_uid(&self, plural: &str, namespace: &str, name: &str) -> Option<String> {
        let resource = crate::api::resources::find("", "v1", plural)?;
        let kv = self.store.get(&resource.key(namespace, name)).ok()??;
        #[derive(serde::Deserialize)]
        struct Meta {
            uid: Option<String>,
        }
        #[derive(serde::Deserialize)]
        struct Object {
            metadata: Meta,
        }
        // Only the uid is parsed; the rest of the object is skipped, not built.
        let object: Object = serde_json::from_slice(&kv.value).ok()?;
        object.metadata.uid
    }

    /// The claims of a token whose signature, time window, issuer and audience are right.
    /// Also returns the wanted audiences (`wanted`, or the API server's) the token carries.
    fn verify(
        &self,
        token: &str,
        now: i64,
        wanted: &[String],
    ) -> Result<(Value, Vec<String>), TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| TokenError::Malformed)
        };
        let header: Value =
            serde_json::from_slice(&decode(header)?).map_err(|_| TokenError::Malformed)?;
        if header["alg"] != "ES256" {
            return Err(TokenError::Signature);
        }
        let public = signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        );
        let signed_len = token.len() - sig.len() - 1;
        public
            .verify(token[..signed_len].as_bytes(), &decode(sig)?)
            .map_err(|_| TokenError::Signature)?;
        let claims: Value =
            serde_json::from_slice(&decode(payload)?).map_err(|_| TokenError::Malformed)?;
        let exp = claims["exp"].as_i64().ok_or(TokenError::Malformed)?;
        if now > exp + LEEWAY_SECONDS {
            return Err(TokenError::Expired);
        }
        if claims["nbf"]
            .as_i64()
            .is_some_and(|nbf| now + LEEWAY_SECONDS < nbf)
        {
            return Err(TokenError::NotYetValid);
        }
        let carried: Vec<&str> = match &claims["aud"] {
            Value::String(a) => vec![a.as_str()],
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let api_audience = [ISSUER.to_string()];
        let wanted = if wanted.is_empty() {
            &api_audience[..]
        } else {
            wanted
        };
        let matched: Vec<String> = wanted
            .iter()
            .filter(|a| carried.contains(&a.as_str()))
            .cloned()
            .collect();
        if claims["iss"] != ISSUER || matched.is_empty() {
            return Err(TokenError::WrongIssuerOrAudience);
        }
        Ok((claims, matched))
    }
}

/// The OpenID provider configuration for `/.well-known/openid-configuration`, as upstream
/// serves it; `server` is the API server's external `https://host:port`.
pub fn openid_configuration(server: &str) -> Value {
    json!({
        "issuer": ISSUER,
        "jwks_uri": format!("{server}/openid/v1/jwks"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    })
}

/// The identity of a service account, as upstream's `serviceaccount.UserInfo`.
pub fn service_account_user(namespace: &str, name: &str, uid: &str) -> UserInfo {
    UserInfo {
        name: format!("system:serviceaccount:{namespace}:{name}"),
        uid: uid.to_string(),
        groups: vec![
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{namespace}"),
            AUTHENTICATED_GROUP.to_string(),
        ],
    }
}

/// Does this bearer token look like a JWT (three base64url parts)? Static tokens never do.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && token.starts_with("eyJ")
}

/// The PEM of the signing key in `pki_dir`, made on first start (before the store opens, when
/// servers sharing a datastore share it).
pub fn ensure_key_file(pki_dir: &Path) -> Result<String, TokenKeyError> {
    let path = pki_dir.join(KEY_FILE);
    let io = |source| TokenKeyError::Io {
        path: path.clone(),
        source,
    };
    let pem = match std::fs::read_to_string(&path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let pem = new_key_pem().map_err(|reason| TokenKeyError::Key {
                path: path.clone(),
                reason,
            })?;
            crate::fsutil::write_atomic(&path, pem.as_bytes(), 0o600).map_err(io)?;
            pem
        }
        Err(e) => return Err(io(e)),
    };
    Ok(pem)
}

fn new_key_pem() -> Result<String, String> {
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &SystemRandom::new(),
    )
    .map_err(|e| e.to_string())?;
    let body = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    Ok(format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    ))
}

fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find("-----BEGIN PRIVATE KEY-----")? + "-----BEGIN PRIVATE KEY-----".len();
    let end = pem.find("-----END PRIVATE KEY-----")?;
    let body: String = pem.get(start..end)?.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn signer_with_account(dir: &Path) -> (TokenSigner, Store) {
        let store = Store::open(&dir.join("db.redb"), Default::default()).unwrap();
        let accounts = crate::api::resources::find("", "v1", "serviceaccounts").unwrap();
        let sa = json!({"metadata": {"name": "default", "namespace": "ns1", "uid": "sa-uid"}});
        store
            .create(&accounts.key("ns1", "default"), move |_| {
                serde_json::to_vec(&sa).unwrap()
            })
            .await
            .unwrap();
        (
            TokenSigner::load_or_create(dir, store.clone()).unwrap(),
            store,
        )
    }

    fn claims(now: i64) -> TokenClaims {
        TokenClaims {
            namespace: "ns1".into(),
            name: "default".into(),
            uid: "sa-uid".into(),
            audiences: vec![ISSUER.into()],
            issued_at: now,
            expiration_seconds: 3600,
            bound_pod: None,
        }
    }

    #[tokio::test]
    async fn a_signed_token_authenticates_as_its_service_account() {
        let dir = tempfile::tempdir().unwrap();
        let (signer, _store) = signer_with_account(dir.path()).await;
        let token = signer.sign(&claims(1_000_000)).unwrap();
        assert!(looks_like_jwt(&token));
        let user = signer.authenticate(&token, 1_000_100).unwrap();
        assert_eq!(user.name, "system:serviceaccount:ns1:default");
        assert_eq!(
            user.groups,
            vec![
                "system:serviceaccounts",
                "system:serviceaccounts:ns1",
                "system:authenticated"
            ]
        );
    }

    #[tokio::test]
    async fn expired_tampered_and_foreign_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (signer, store) = signer_with_account(dir.path()).await;
        let token = signer.sign(&claims(1_000_000)).unwrap();
        assert_eq!(
            signer.authenticate(&token, 1_000_000 + 3600 + 3600),
            Err(TokenError::Expired)
        );
        let mut tampered = token.clone();
        tampered.replace_range(token.len() - 4.., "AAAA");
        assert_eq!(
            signer.authenticate(&tampered, 1_000_100),
            Err(TokenError::Signature)
        );
        let other_dir = tempfile::tempdir().unwrap();
        let other = TokenSigner::load_or_create(other_dir.path(), store).unwrap();
        assert_eq!(
            other.authenticate(&token, 1_000_100),
            Err(TokenError::Signature),
            "another key's token is not ours"
        );
    }

    #[tokio::test]
    async fn the_key_survives_a_restart_and_a_deleted_account_revokes_its_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let (signer, store) = signer_with_account(dir.path()).await;
        let token = signer.sign(&claims(1_000_000)).unwrap();
        let reloaded = TokenSigner::load_or_create(dir.path(), store.clone()).unwrap();
        assert!(reloaded.authenticate(&token, 1_000_100).is_ok());
        let accounts = crate::api::resources::find("", "v1", "serviceaccounts").unwrap();
        store
            .delete(&accounts.key("ns1", "default"), None)
            .await
            .unwrap();
        assert!(matches!(
            reloaded.authenticate(&token, 1_000_100),
            Err(TokenError::AccountGone(_))
        ));
    }

    #[tokio::test]
    async fn a_pod_bound_token_dies_with_its_pod() {
        let dir = tempfile::tempdir().unwrap();
        let (signer, store) = signer_with_account(dir.path()).await;
        let pods = crate::api::resources::find("", "v1", "pods").unwrap();
        let pod = json!({"metadata": {"name": "p", "namespace": "ns1", "uid": "pod-uid"}});
        store
            .create(&pods.key("ns1", "p"), move |_| {
                serde_json::to_vec(&pod).unwrap()
            })
            .await
            .unwrap();
        let mut bound = claims(1_000_000);
        bound.bound_pod = Some(("p".into(), "pod-uid".into()));
        let token = signer.sign(&bound).unwrap();
        let reviewed = signer.review(&token, 1_000_100, &[]).unwrap();
        assert_eq!(reviewed.pod, Some(("p".into(), "pod-uid".into())));
        store.delete(&pods.key("ns1", "p"), None).await.unwrap();
        assert_eq!(
            signer.authenticate(&token, 1_000_100),
            Err(TokenError::BoundObjectGone("ns1/p".into()))
        );
    }

    #[tokio::test]
    async fn a_review_accepts_only_the_audiences_the_token_carries() {
        let dir = tempfile::tempdir().unwrap();
        let (signer, _store) = signer_with_account(dir.path()).await;
        let mut for_vault = claims(1_000_000);
        for_vault.audiences = vec!["vault".into(), "other".into()];
        let token = signer.sign(&for_vault).unwrap();
        assert_eq!(
            signer.authenticate(&token, 1_000_100),
            Err(TokenError::WrongIssuerOrAudience),
            "not meant for the API server"
        );
        let reviewed = signer
            .review(&token, 1_000_100, &["vault".into(), "nope".into()])
            .unwrap();
        assert_eq!(reviewed.audiences, vec!["vault".to_string()]);
    }

    #[tokio::test]
    async fn the_jwks_holds_the_public_point_the_tokens_verify_with() {
        let dir = tempfile::tempdir().unwrap();
        let (signer, _store) = signer_with_account(dir.path()).await;
        let jwks = signer.jwks();
        let key = &jwks["keys"][0];
        assert_eq!(key["kty"], "EC");
        assert_eq!(key["crv"], "P-256");
        let x = URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap();
        let y = URL_SAFE_NO_PAD.decode(key["y"].as_str().unwrap()).unwrap();
        let mut point = vec![4u8];
        point.extend(x);
        point.extend(y);
        let token = signer.sign(&claims(1_000_000)).unwrap();
        let (signed, sig) = token.rsplit_once('.').unwrap();
        let public = signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point);
        public
            .verify(signed.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap())
            .expect("the published key verifies a token");
        let token_kid: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(token_kid["kid"], key["kid"]);
    }
}
