//! Bootstrap tokens, as upstream keeps them: `<id>.<secret>` (`[a-z0-9]{6}.[a-z0-9]{16}`), stored
//! as a Secret `bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token` in `kube-system`.
//! A valid, unexpired token authenticates as `system:bootstrap:<id>` in `system:bootstrappers`
//! plus its extra groups: just enough to ask for a node certificate.

use base64::Engine;
use serde_json::{json, Value};
use sha2::Digest;

use crate::apiserver::authn::UserInfo;
use crate::store::Store;

pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
pub const SECRET_PREFIX: &str = "bootstrap-token-";
pub const NAMESPACE: &str = "kube-system";
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";
/// The extra group berth's tokens carry; the node-bootstrapper binding names it.
pub const NODE_TOKEN_GROUP: &str = "system:bootstrappers:berth:default-node-token";
/// The extra group of tokens that let another server join (`berth token create --server`):
/// they read the datastore's address and credentials, and ask for no node certificate.
pub const SERVER_TOKEN_GROUP: &str = "system:bootstrappers:berth:servers";
const USER_PREFIX: &str = "system:bootstrap:";
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("a join token looks like abcdef.0123456789abcdef ([a-z0-9]{{6}}.[a-z0-9]{{16}})")]
    Format,
    #[error("a CA hash looks like sha256:<64 hex digits>, got {0:?}")]
    Hash(String),
    #[error("cannot read the CA certificate: {0}")]
    Certificate(String),
}

/// A join token: the public id and the secret half.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    pub id: String,
    pub secret: String,
}

impl std::fmt::Debug for BootstrapToken {
    // The secret half never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BootstrapToken({}.****)", self.id)
    }
}

fn is_token_part(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| ALPHABET.contains(&b))
}

impl BootstrapToken {
    pub fn parse(text: &str) -> Result<BootstrapToken, TokenError> {
        let (id, secret) = text.trim().split_once('.').ok_or(TokenError::Format)?;
        if !is_token_part(id, 6) || !is_token_part(secret, 16) {
            return Err(TokenError::Format);
        }
        Ok(BootstrapToken {
            id: id.into(),
            secret: secret.into(),
        })
    }

    pub fn generate() -> BootstrapToken {
        use rand::Rng;
        let mut rng = rand::rng();
        let mut part = |len: usize| -> String {
            (0..len)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
                .collect()
        };
        BootstrapToken {
            id: part(6),
            secret: part(16),
        }
    }

    pub fn secret_name(&self) -> String {
        format!("{SECRET_PREFIX}{}", self.id)
    }

    /// The Secret upstream's bootstrap authenticator reads. `expiration` is RFC 3339; `group`
    /// is what the token may do ([`NODE_TOKEN_GROUP`] or [`SERVER_TOKEN_GROUP`]).
    pub fn to_secret(&self, description: &str, expiration: Option<&str>, group: &str) -> Value {
        let mut data = json!({
            "token-id": self.id,
            "token-secret": self.secret,
            "usage-bootstrap-authentication": "true",
            "usage-bootstrap-signing": "true",
            "auth-extra-groups": group,
        });
        if !description.is_empty() {
            data["description"] = json!(description);
        }
        if let Some(expiration) = expiration {
            data["expiration"] = json!(expiration);
        }
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": self.secret_name(), "namespace": NAMESPACE},
            "type": SECRET_TYPE,
            "stringData": data,
        })
    }
}

impl std::fmt::Display for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

/// One `data` field of a Secret, decoded.
pub fn secret_field(secret: &Value, key: &str) -> Option<String> {
    let encoded = secret.pointer(&format!("/data/{key}"))?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// The user `token` authenticates as, judged from its stored Secret, at `now` (Unix seconds).
/// Refuses (None) a wrong secret, an expired token, one not meant for authentication, and one
/// being deleted, as upstream's bootstrap token authenticator.
pub fn authenticate_with_secret(
    token: &BootstrapToken,
    secret: &Value,
    now: i64,
) -> Option<UserInfo> {
    if secret["type"] != SECRET_TYPE
        || !secret
            .pointer("/metadata/deletionTimestamp")
            .is_none_or(Value::is_null)
    {
        return None;
    }
    let field = |key: &str| secret_field(secret, key);
    if field("token-id")? != token.id {
        return None;
    }
    let stored = field("token-secret")?;
    // Constant time: the secret half is what an attacker would guess byte by byte.
    if !same_in_constant_time(stored.as_bytes(), token.secret.as_bytes()) {
        return None;
    }
    if field("usage-bootstrap-authentication").as_deref() != Some("true") {
        return None;
    }
    if let Some(expiration) = field("expiration") {
        let expires: jiff::Timestamp = expiration.parse().ok()?;
        if expires.as_second() <= now {
            return None;
        }
    }
    let mut groups = vec![BOOTSTRAPPERS_GROUP.to_string()];
    for group in field("auth-extra-groups").unwrap_or_default().split(',') {
        let group = group.trim();
        // Only groups of the bootstrappers' own family: a token cannot claim system:masters.
        if group.starts_with("system:bootstrappers:") && !groups.iter().any(|g| g == group) {
            groups.push(group.to_string());
        }
    }
    groups.push(crate::apiserver::authn::AUTHENTICATED_GROUP.to_string());
    Some(UserInfo {
        name: format!("{USER_PREFIX}{}", token.id),
        uid: String::new(),
        groups,
    })
}

/// Equality that takes as long for a near miss as for a wild guess.
fn same_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Bootstrap token authentication against the Secrets in the store.
#[derive(Clone)]
pub struct BootstrapTokens {
    store: Store,
}

impl std::fmt::Debug for BootstrapTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BootstrapTokens")
    }
}

impl BootstrapTokens {
    pub fn new(store: Store) -> BootstrapTokens {
        BootstrapTokens { store }
    }

    /// The user of a bearer token, or None when it is no (valid) bootstrap token.
    pub fn authenticate(&self, bearer: &str, now: i64) -> Option<UserInfo> {
        let token = BootstrapToken::parse(bearer).ok()?;
        let secrets = crate::api::resources::find("", "v1", "secrets")?;
        let stored = self
            .store
            .get(&secrets.key(NAMESPACE, &token.secret_name()))
            .ok()??;
        let secret: Value = serde_json::from_slice(&stored.value).ok()?;
        let user = authenticate_with_secret(&token, &secret, now);
        if user.is_none() {
            tracing::debug!(token = %token.id, "bootstrap token refused");
        }
        user
    }
}

/// kubeadm's CA pin: `sha256:` and the hex SHA-256 of the CA certificate's DER-encoded
/// SubjectPublicKeyInfo, so it survives re-issuing the CA with the same key.
pub fn ca_cert_hash(ca_pem: &str) -> Result<String, TokenError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes())
        .map_err(|e| TokenError::Certificate(e.to_string()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| TokenError::Certificate(e.to_string()))?;
    let spki = cert.tbs_certificate.subject_pki.raw;
    Ok(format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(spki))
    ))
}

/// Checks the form of a `sha256:<hex>` pin; returns it lower-cased.
pub fn parse_ca_cert_hash(text: &str) -> Result<String, TokenError> {
    let bad = || TokenError::Hash(text.to_string());
    let hex_part = text.trim().strip_prefix("sha256:").ok_or_else(bad)?;
    if hex_part.len() != 64 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok(format!("sha256:{}", hex_part.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(secret: Value) -> Value {
        // What the API server stores: stringData folded into base64 data.
        let mut out = secret.clone();
        let mut data = serde_json::Map::new();
        for (k, v) in secret["stringData"].as_object().unwrap() {
            let text = v.as_str().unwrap();
            data.insert(
                k.clone(),
                json!(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
        out["data"] = Value::Object(data);
        out.as_object_mut().unwrap().remove("stringData");
        out
    }

    #[test]
    fn generated_tokens_parse_back_and_print_in_the_upstream_form() {
        let token = BootstrapToken::generate();
        let text = token.to_string();
        assert_eq!(text.len(), 23);
        assert_eq!(BootstrapToken::parse(&text).unwrap(), token);
        assert_ne!(BootstrapToken::generate(), token);
        assert!(!format!("{token:?}").contains(&token.secret));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "",
            "abcdef",
            "abcdef.short",
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdefg",
            "abcdef.0123456789abcdeF",
        ] {
            assert_eq!(BootstrapToken::parse(bad), Err(TokenError::Format), "{bad}");
        }
        assert!(BootstrapToken::parse("abcdef.0123456789abcdef").is_ok());
    }

    #[test]
    fn a_valid_token_is_a_bootstrapper_with_its_extra_group() {
        let token = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        let secret =
            stored(token.to_secret("test", Some("2030-01-01T00:00:00Z"), NODE_TOKEN_GROUP));
        let user = authenticate_with_secret(&token, &secret, 0).unwrap();
        assert_eq!(user.name, "system:bootstrap:abcdef");
        assert_eq!(
            user.groups,
            [
                BOOTSTRAPPERS_GROUP,
                NODE_TOKEN_GROUP,
                "system:authenticated"
            ]
        );
    }

    #[test]
    fn wrong_secrets_expired_tokens_and_foreign_groups_do_not_pass() {
        let token = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        let secret = stored(token.to_secret("", Some("2030-01-01T00:00:00Z"), NODE_TOKEN_GROUP));
        let wrong = BootstrapToken::parse("abcdef.0000000000000000").unwrap();
        assert_eq!(authenticate_with_secret(&wrong, &secret, 0), None);
        let expiry = jiff::Timestamp::from_second(1_893_456_000)
            .unwrap()
            .as_second();
        assert_eq!(authenticate_with_secret(&token, &secret, expiry), None);

        let mut other_type = secret.clone();
        other_type["type"] = json!("Opaque");
        assert_eq!(authenticate_with_secret(&token, &other_type, 0), None);

        let mut masters = token.to_secret("", None, NODE_TOKEN_GROUP);
        masters["stringData"]["auth-extra-groups"] = json!("system:masters");
        let user = authenticate_with_secret(&token, &stored(masters), 0).unwrap();
        assert!(!user.groups.iter().any(|g| g == "system:masters"));
    }

    #[test]
    fn ca_hashes_are_checked_for_form() {
        let hex = "a".repeat(64);
        assert_eq!(
            parse_ca_cert_hash(&format!("sha256:{}", hex.to_uppercase())).unwrap(),
            format!("sha256:{hex}")
        );
        assert!(parse_ca_cert_hash(&hex).is_err());
        assert!(parse_ca_cert_hash("sha256:abc").is_err());
    }

    #[test]
    fn the_ca_hash_is_sha256_of_the_public_key_info() {
        let dir = tempfile::tempdir().unwrap();
        let names = crate::pki::ServingNames {
            hostname: "node".into(),
            ips: vec![],
            cluster_domain: "cluster.local".into(),
            service_cidr: "10.43.0.0/16".into(),
        };
        let pki = crate::pki::Pki::ensure(dir.path(), &names).unwrap();
        let hash = ca_cert_hash(&pki.ca_cert_pem).unwrap();
        assert_eq!(parse_ca_cert_hash(&hash).unwrap(), hash);
        // The serving certificate has another key, so another pin.
        assert_ne!(ca_cert_hash(&pki.serving_cert_pem).unwrap(), hash);
    }
}
