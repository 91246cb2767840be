//! Renewal of the node's client certificate, as the kubelet's certificate manager does it: at a
//! random point between 70 % and 90 % of the certificate's lifetime (so a fleet joined together
//! does not renew together), the agent sends a CSR for its own name, authenticated as itself;
//! the server's approver approves a node's renewal of its own certificate.
//!
//! The new certificate is saved and handed to the agent's one API client, whose TLS
//! configuration asks [`NodeCert`] for the certificate at every new connection. Nothing
//! restarts: pods, watches and the heartbeat go on, and connections made from then on present
//! the new certificate.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::Api;

use super::bootstrap::{BootstrapError, Credentials, Identity};

/// Renewal starts at this fraction of the lifetime, plus up to [`JITTER`].
const ROTATE_AT: f64 = 0.7;
const JITTER: f64 = 0.2;
/// Back-off between failed renewals.
const MIN_RETRY: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("the node certificate does not parse: {0}")]
    Parse(String),
    #[error("the node certificate and key do not belong together: {0}")]
    Key(#[from] rustls::Error),
}

/// The node's current client certificate, shared by every TLS connection to the API.
#[derive(Debug)]
pub struct NodeCert {
    current: RwLock<(Arc<rustls::sign::CertifiedKey>, String)>,
}

impl NodeCert {
    pub fn new(identity: &Identity) -> Result<NodeCert, RotationError> {
        Ok(NodeCert {
            current: RwLock::new((certified_key(identity)?, identity.cert_pem.clone())),
        })
    }

    /// Connections made from now on present `identity`'s certificate.
    pub fn replace(&self, identity: &Identity) -> Result<(), RotationError> {
        let key = certified_key(identity)?;
        if let Ok(mut current) = self.current.write() {
            *current = (key, identity.cert_pem.clone());
        }
        Ok(())
    }

    /// The current certificate, in PEM.
    pub fn pem(&self) -> String {
        self.current.read().map(|c| c.1.clone()).unwrap_or_default()
    }
}

impl rustls::client::ResolvesClientCert for NodeCert {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.current.read().ok().map(|c| c.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn certified_key(identity: &Identity) -> Result<Arc<rustls::sign::CertifiedKey>, RotationError> {
    use rustls_pki_types::pem::PemObject;
    let parse = |e: &dyn std::fmt::Display| RotationError::Parse(e.to_string());
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| parse(&e))?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
        .map_err(|e| parse(&e))?;
    let provider = rustls::crypto::ring::default_provider();
    Ok(Arc::new(rustls::sign::CertifiedKey::from_der(
        certs, key, &provider,
    )?))
}

/// A certificate's validity as `(not before, not after)` in Unix seconds.
pub fn validity(cert_pem: &str) -> Option<(i64, i64)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let validity = cert.validity();
    Some((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

/// When a certificate valid from `not_before` to `not_after` is renewed: at 70 % of its
/// lifetime plus `jitter` (0..1) times another 20 %.
pub fn rotation_deadline(not_before: i64, not_after: i64, jitter: f64) -> i64 {
    let lifetime = (not_after - not_before).max(0) as f64;
    let fraction = ROTATE_AT + JITTER * jitter.clamp(0.0, 1.0);
    not_before + (lifetime * fraction).round() as i64
}

/// Renews the node's certificate whenever it is due, until the task is dropped.
pub async fn run(
    client: kube::Client,
    credentials: Credentials,
    node: String,
    ca_pem: String,
    cert: Arc<NodeCert>,
) {
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let mut retry = MIN_RETRY;
    loop {
        let Some((not_before, not_after)) = validity(&cert.pem()) else {
            tracing::error!("the node certificate does not parse: it cannot be renewed");
            return;
        };
        let deadline = rotation_deadline(not_before, not_after, rand::random::<f64>());
        let wait = deadline - jiff::Timestamp::now().as_second();
        if wait > 0 {
            tracing::debug!(in_seconds = wait, "node certificate renewal scheduled");
            tokio::time::sleep(Duration::from_secs(wait as u64)).await;
        }
        match renew(&api, &credentials, &node, &ca_pem, &cert).await {
            Ok(()) => {
                retry = MIN_RETRY;
                tracing::info!(node = %node, "renewed the node client certificate");
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?retry, "cannot renew the node client certificate");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }
}

async fn renew(
    api: &Api<CertificateSigningRequest>,
    credentials: &Credentials,
    node: &str,
    ca_pem: &str,
    cert: &NodeCert,
) -> Result<(), String> {
    let (cert_pem, key_pem) = super::bootstrap::submit_csr(api, node)
        .await
        .map_err(|e: BootstrapError| e.to_string())?;
    let identity = Identity {
        ca_pem: ca_pem.to_string(),
        cert_pem,
        key_pem,
    };
    // Saved first: a restart from here on uses the new certificate too.
    credentials.save(&identity).map_err(|e| e.to_string())?;
    cert.replace(&identity).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_falls_between_seventy_and_ninety_percent_of_the_lifetime() {
        let (start, end) = (1_000, 1_000 + 1_000);
        assert_eq!(rotation_deadline(start, end, 0.0), 1_700);
        assert_eq!(rotation_deadline(start, end, 1.0), 1_900);
        assert_eq!(rotation_deadline(start, end, 0.5), 1_800);
        // Out-of-range jitter cannot push it past the window.
        assert_eq!(rotation_deadline(start, end, 7.0), 1_900);
        assert_eq!(rotation_deadline(start, end, -1.0), 1_700);
        // A certificate that ends before it starts is due at once.
        assert_eq!(rotation_deadline(start, start - 10, 0.5), start);
    }

    #[test]
    fn a_replaced_certificate_is_the_one_new_connections_present() {
        use rustls::client::ResolvesClientCert;
        let dir = tempfile::tempdir().unwrap();
        let names = crate::pki::ServingNames {
            hostname: "node".into(),
            ips: vec![],
            cluster_domain: "cluster.local".into(),
            service_cidr: "10.43.0.0/16".into(),
        };
        let pki = crate::pki::Pki::ensure(&dir.path().join("pki"), &names).unwrap();
        let issue = |seconds| {
            let (cert_pem, key_pem) = pki
                .issue_client_cert(
                    "system:node:pi",
                    &["system:nodes".into()],
                    Duration::from_secs(seconds),
                )
                .unwrap();
            Identity {
                ca_pem: pki.ca_cert_pem.clone(),
                cert_pem,
                key_pem,
            }
        };
        let (first, second) = (issue(600), issue(3_600));
        let cert = NodeCert::new(&first).unwrap();
        let presented = |cert: &NodeCert| cert.resolve(&[], &[]).unwrap().cert[0].clone();
        let before = presented(&cert);
        cert.replace(&second).unwrap();
        assert_ne!(presented(&cert), before);
        assert_eq!(cert.pem(), second.cert_pem);
        let (_, not_after) = validity(&second.cert_pem).unwrap();
        let left = not_after - jiff::Timestamp::now().as_second();
        assert!((3_500..=3_600).contains(&left), "{left}");
        // A key that is not the certificate's is refused and the old pair stays.
        let mixed = Identity {
            key_pem: first.key_pem.clone(),
            ..issue(600)
        };
        assert!(cert.replace(&mixed).is_err());
        assert_eq!(cert.pem(), second.cert_pem);
    }
}
