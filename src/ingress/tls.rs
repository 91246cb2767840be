//! TLS for Ingress hosts: certificates from `kubernetes.io/tls` Secrets named in Ingresses'
//! `spec.tls`, chosen by the client's SNI. The resolver reads the current routing state on
//! every handshake, so a changed Secret takes effect for new connections while open ones keep
//! the certificate they started with.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::routes::normalize_host;
use super::state::State;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("secret {0} has no {1}")]
    MissingKey(String, &'static str),
    #[error("secret {secret}: {message}")]
    Bad { secret: String, message: String },
    #[error("cannot make the fallback certificate: {0}")]
    Fallback(String),
}

/// Host names to certificates.
#[derive(Debug, Clone)]
pub struct Certificates {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// For clients without SNI or hosts without a certificate of their own.
    fallback: Arc<CertifiedKey>,
}

impl Certificates {
    /// Only the fallback certificate.
    pub fn new(fallback: Arc<CertifiedKey>) -> Certificates {
        Certificates {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            fallback,
        }
    }

    /// The certificates `ingresses` name, read with `secret(namespace, name)`. A Secret that is
    /// missing or unusable is logged and skipped: its hosts get the fallback certificate.
    pub fn build<'a>(
        ingresses: &[&Ingress],
        fallback: Arc<CertifiedKey>,
        secret: impl Fn(&str, &str) -> Option<&'a Secret>,
    ) -> Certificates {
        let mut certs = Certificates::new(fallback);
        let mut parsed: HashMap<(String, String), Option<Arc<CertifiedKey>>> = HashMap::new();
        for ingress in ingresses {
            let namespace = ingress.metadata.namespace.as_deref().unwrap_or("default");
            for tls in ingress
                .spec
                .as_ref()
                .and_then(|s| s.tls.as_ref())
                .into_iter()
                .flatten()
            {
                let Some(name) = tls.secret_name.as_deref() else {
                    continue;
                };
                let key = parsed
                    .entry((namespace.to_string(), name.to_string()))
                    .or_insert_with(|| {
                        let found = secret(namespace, name)?;
                        match certified_key(found, &format!("{namespace}/{name}")) {
                            Ok(key) => Some(Arc::new(key)),
                            Err(error) => {
                                tracing::warn!(%error, "skipping an ingress TLS secret");
                                None
                            }
                        }
                    })
                    .clone();
                let Some(key) = key else {
                    continue;
                };
                for host in tls.hosts.iter().flatten() {
                    let host = normalize_host(host);
                    let map = match host.strip_prefix("*.") {
                        Some(suffix) => certs.wildcard.entry(suffix.to_string()),
                        None => certs.exact.entry(host),
                    };
                    map.or_insert_with(|| key.clone());
                }
            }
        }
        certs
    }

    /// True when `host` (a Host header, port allowed) has a certificate of its own, not just
    /// the fallback: its Ingress asked for TLS.
    pub fn has_own(&self, host: &str) -> bool {
        let name = normalize_host(host);
        self.exact.contains_key(&name)
            || name
                .split_once('.')
                .is_some_and(|(_, parent)| self.wildcard.contains_key(parent))
    }

    /// The certificate for SNI name `server_name`.
    pub fn for_name(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name.map(normalize_host) else {
            return self.fallback.clone();
        };
        if let Some(key) = self.exact.get(&name) {
            return key.clone();
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.fallback)
            .clone()
    }
}

/// The certificate chain and key of a `kubernetes.io/tls` Secret.
pub fn certified_key(secret: &Secret, label: &str) -> Result<CertifiedKey, TlsError> {
    let data = secret.data.as_ref();
    let field = |key: &'static str| {
        data.and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .ok_or_else(|| TlsError::MissingKey(label.to_string(), key))
    };
    let (cert_pem, key_pem) = (field("tls.crt")?, field("tls.key")?);
    from_pem(&cert_pem, &key_pem).map_err(|message| TlsError::Bad {
        secret: label.to_string(),
        message,
    })
}

fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    use rustls_pki_types::pem::PemObject;
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad tls.crt: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("bad tls.key: {e}"))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("unsupported tls.key: {e}"))?;
    Ok(CertifiedKey::new(chain, signer))
}

/// A self-signed certificate for hosts without one of their own, made at start (as other
/// ingress controllers do) so HTTPS still answers and clients see a clear name mismatch.
pub fn fallback_certificate() -> Result<Arc<CertifiedKey>, TlsError> {
    let made = rcgen::generate_simple_self_signed(vec!["berth-ingress.invalid".to_string()])
        .map_err(|e| TlsError::Fallback(e.to_string()))?;
    let key = from_pem(
        made.cert.pem().as_bytes(),
        made.signing_key.serialize_pem().as_bytes(),
    )
    .map_err(TlsError::Fallback)?;
    Ok(Arc::new(key))
}

/// Picks the certificate by SNI from the routing state current at handshake time.
#[derive(Debug)]
pub struct SniResolver {
    pub state: State,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.state
                .current()
                .certificates
                .for_name(client_hello.server_name()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;

    fn tls_secret(host: &str) -> Secret {
        let made = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
        let mut secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": host, "namespace": "default"},
            "type": "kubernetes.io/tls",
        }))
        .unwrap();
        secret.data = Some(
            [
                (
                    "tls.crt".to_string(),
                    ByteString(made.cert.pem().into_bytes()),
                ),
                (
                    "tls.key".to_string(),
                    ByteString(made.signing_key.serialize_pem().into_bytes()),
                ),
            ]
            .into(),
        );
        secret
    }

    fn ingress(tls: serde_json::Value) -> Ingress {
        serde_json::from_value(json!({"metadata": {"name": "i", "namespace": "default"},
                                      "spec": {"tls": tls}}))
        .unwrap()
    }

    #[test]
    fn sni_picks_the_exact_host_then_the_wildcard_then_the_fallback() {
        let (a, wild) = (tls_secret("a.test"), tls_secret("any.test"));
        let secrets = [a, wild];
        let ing = ingress(json!([
            {"hosts": ["a.test"], "secretName": "a.test"},
            {"hosts": ["*.wild.test"], "secretName": "any.test"},
            {"hosts": ["missing.test"], "secretName": "does-not-exist"},
        ]));
        let fallback = fallback_certificate().unwrap();
        let certs = Certificates::build(&[&ing], fallback.clone(), |ns, name| {
            secrets.iter().find(|s| {
                s.metadata.namespace.as_deref() == Some(ns)
                    && s.metadata.name.as_deref() == Some(name)
            })
        });
        let a_cert = &certs.for_name(Some("a.test")).cert[0];
        let wild_cert = &certs.for_name(Some("x.wild.test")).cert[0];
        assert_ne!(a_cert, &fallback.cert[0]);
        assert_ne!(wild_cert, &fallback.cert[0]);
        assert_ne!(a_cert, wild_cert);
        assert_eq!(certs.for_name(Some("A.TEST")).cert[0], *a_cert);
        assert_eq!(
            certs.for_name(Some("missing.test")).cert[0],
            fallback.cert[0]
        );
        assert_eq!(
            certs.for_name(Some("y.x.wild.test")).cert[0],
            fallback.cert[0]
        );
        assert_eq!(certs.for_name(None).cert[0], fallback.cert[0]);
    }

    #[test]
    fn a_secret_without_a_key_is_refused_with_its_name() {
        let mut secret = tls_secret("a.test");
        if let Some(data) = secret.data.as_mut() {
            data.remove("tls.key");
        }
        let err = certified_key(&secret, "default/a").unwrap_err();
        assert_eq!(err.to_string(), "secret default/a has no tls.key");
    }
}
