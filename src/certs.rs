//! Certificate rotation while the server runs.
//!
//! Unattended devices run for years: a certificate that expires takes the API down with it. So
//! the server checks its certificates on a timer, not only at start. Each check runs the same
//! load-or-reissue as start-up ([`Pki::ensure_with`]), which also picks up files another process
//! wrote (`berth certs rotate`). A new serving certificate is swapped into the TLS listener for
//! the next handshake ([`LiveServingCert`]); a new admin certificate is written into the
//! kubeconfig. A certificate close to expiry that rotation cannot replace (the CA, or a failing
//! rotation) gets a log line and a Warning event.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::pki::{self, CertStatus, Pki, PkiError, RotationPolicy, ServingNames};

/// A repeated warning about the same certificate is sent at most this often.
const WARNING_REPEAT: Duration = Duration::from_secs(24 * 3600);
/// Where Warning events about certificates are recorded, like the other node-level events.
const EVENT_NAMESPACE: &str = "default";

/// The serving certificate the TLS listener presents, replaceable while connections come in.
#[derive(Debug)]
pub struct LiveServingCert {
    // A std lock, not a tokio one: it is held only to clone an Arc, never across an await.
    current: RwLock<Arc<rustls::sign::CertifiedKey>>,
}

impl LiveServingCert {
    pub fn new(pki: &Pki) -> Result<Arc<LiveServingCert>, PkiError> {
        Ok(Arc::new(LiveServingCert {
            current: RwLock::new(pki.serving_certified_key()?),
        }))
    }

    /// Presents `pki`'s serving certificate from the next handshake on. Fails, keeping the old
    /// one, when the certificate and key do not belong together.
    pub fn replace(&self, pki: &Pki) -> Result<(), PkiError> {
        let key = pki.serving_certified_key()?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = key;
        Ok(())
    }

    fn get(&self) -> Arc<rustls::sign::CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl rustls::server::ResolvesServerCert for LiveServingCert {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.get())
    }
}

/// What the rotator looks after, and how.
pub struct RotationTarget {
    pub pki_dir: PathBuf,
    pub names: ServingNames,
    pub policy: RotationPolicy,
    pub warn_before: Duration,
    pub kubeconfig_path: PathBuf,
    /// The API address written into the kubeconfig.
    pub server_url: String,
}

pub struct Rotator {
    target: RotationTarget,
    serving: Arc<LiveServingCert>,
    /// The PKI as last loaded: a check that finds other PEMs swaps them in.
    current: Pki,
    /// Certificate name → when it was last warned about.
    warned: HashMap<String, Instant>,
}

/// What one check changed or found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CheckOutcome {
    pub serving_replaced: bool,
    pub kubeconfig_rewritten: bool,
    /// Certificates within the warning window, not warned about in the last day.
    pub expiring: Vec<CertStatus>,
}

impl Rotator {
    /// `current` is the PKI `serving` presents now.
    pub fn new(target: RotationTarget, serving: Arc<LiveServingCert>, current: Pki) -> Rotator {
        Rotator {
            target,
            serving,
            current,
            warned: HashMap::new(),
        }
    }

    /// Re-issues what is due, swaps in whatever changed on disk, and lists the certificates to
    /// warn about.
    pub fn check(&mut self) -> Result<CheckOutcome, PkiError> {
        let t = &self.target;
        let fresh = Pki::ensure_with(&t.pki_dir, &t.names, &t.policy)?;
        let mut outcome = CheckOutcome::default();
        if fresh.serving_cert_pem != self.current.serving_cert_pem {
            self.serving.replace(&fresh)?;
            tracing::info!(dir = %t.pki_dir.display(), "serving certificate rotated");
            outcome.serving_replaced = true;
        }
        if fresh.admin_cert_pem != self.current.admin_cert_pem
            || fresh.ca_cert_pem != self.current.ca_cert_pem
        {
            pki::write_kubeconfig(&t.kubeconfig_path, &t.server_url, &fresh)?;
            tracing::info!(
                kubeconfig = %t.kubeconfig_path.display(),
                "admin client certificate rotated"
            );
            outcome.kubeconfig_rewritten = true;
        }
        self.current = fresh;

        let now = Instant::now();
        let warn_days = i64::try_from(t.warn_before.as_secs() / (24 * 3600)).unwrap_or(i64::MAX);
        for status in pki::cert_statuses(&t.pki_dir)? {
            let due = self
                .warned
                .get(&status.name)
                .is_none_or(|last| now.duration_since(*last) >= WARNING_REPEAT);
            if status.days_left() < warn_days && due {
                self.warned.insert(status.name.clone(), now);
                outcome.expiring.push(status);
            }
        }
        Ok(outcome)
    }
}

/// Checks every `interval` until the process ends; reports expiring certificates through the
/// log and, as Warning events about `node_name`, through `client`.
pub async fn run(rotator: Rotator, interval: Duration, client: kube::Client, node_name: String) {
    let policy = rotator.target.policy;
    if policy.validity <= policy.renew_before {
        tracing::warn!(
            ?policy,
            "certificates are issued for no longer than the rotation window: every check re-issues them"
        );
    }
    let mut ticker = tokio::time::interval(interval);
    // A suspended device wakes up once, not with a burst of missed checks.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut rotator = Some(rotator);
    loop {
        ticker.tick().await;
        let Some(mut r) = rotator.take() else { return };
        // Signing and file writes are blocking work.
        let checked = tokio::task::spawn_blocking(move || {
            let result = r.check();
            (r, result)
        })
        .await;
        let Ok((r, result)) = checked else {
            tracing::error!("the certificate rotation check panicked; rotation stops");
            return;
        };
        rotator = Some(r);
        match result {
            Ok(outcome) => {
                for status in outcome.expiring {
                    warn_expiring(&client, &node_name, &status).await;
                }
            }
            Err(error) => tracing::warn!(%error, "certificate rotation check failed"),
        }
    }
}

async fn warn_expiring(client: &kube::Client, node_name: &str, status: &CertStatus) {
    let message = format!(
        "certificate {} ({}) expires in {} days; run `berth certs rotate`",
        status.name,
        status.path.display(),
        status.days_left()
    );
    tracing::warn!(certificate = %status.name, days_left = status.days_left(), "{message}");
    let events: kube::Api<Event> = kube::Api::namespaced(client.clone(), EVENT_NAMESPACE);
    let event = expiry_event(node_name, status, message);
    if let Err(error) = events.create(&Default::default(), &event).await {
        tracing::warn!(%error, "cannot record the certificate expiry event");
    }
}

fn expiry_event(node_name: &str, status: &CertStatus, message: String) -> Event {
    let now = Time(jiff::Timestamp::now());
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{node_name}.certificate-expiring.")),
            namespace: Some(EVENT_NAMESPACE.into()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node_name.into()),
            ..Default::default()
        },
        reason: Some("CertificateExpiring".into()),
        message: Some(message),
        type_: Some("Warning".into()),
        source: Some(EventSource {
            component: Some(format!("berth-certs/{}", status.name)),
            host: Some(node_name.into()),
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> ServingNames {
        ServingNames {
            hostname: "pi".into(),
            ips: vec![],
            cluster_domain: "cluster.local".into(),
            service_cidr: "10.43.0.0/16".into(),
        }
    }

    fn rotator(dir: &std::path::Path, policy: RotationPolicy, warn_before: Duration) -> Rotator {
        let pki = Pki::ensure_with(&dir.join("pki"), &names(), &policy).unwrap();
        let serving = LiveServingCert::new(&pki).unwrap();
        let target = RotationTarget {
            pki_dir: dir.join("pki"),
            names: names(),
            policy,
            warn_before,
            kubeconfig_path: dir.join("kubeconfig.yaml"),
            server_url: "https://127.0.0.1:6443".into(),
        };
        Rotator::new(target, serving, pki)
    }

    fn served_serial(rotator: &Rotator) -> Vec<u8> {
        let key = rotator.serving.get();
        let (_, cert) = x509_parser::parse_x509_certificate(&key.cert[0]).unwrap();
        cert.raw_serial().to_vec()
    }

    #[test]
    fn certificates_far_from_expiry_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = rotator(dir.path(), RotationPolicy::default(), Duration::ZERO);
        let before = served_serial(&r);
        let outcome = r.check().unwrap();
        assert_eq!(outcome, CheckOutcome::default());
        assert_eq!(served_serial(&r), before);
    }

    #[test]
    fn certificates_inside_the_rotation_window_are_reissued_and_swapped_in() {
        let dir = tempfile::tempdir().unwrap();
        // Certificates living 1 hour, renewed when less than 2 hours are left: due at once.
        let policy = RotationPolicy {
            validity: Duration::from_secs(3600),
            renew_before: Duration::from_secs(7200),
        };
        let mut r = rotator(dir.path(), policy, Duration::ZERO);
        let before = served_serial(&r);
        let outcome = r.check().unwrap();
        assert!(outcome.serving_replaced && outcome.kubeconfig_rewritten);
        assert_ne!(served_serial(&r), before);
        let kubeconfig = std::fs::read_to_string(dir.path().join("kubeconfig.yaml")).unwrap();
        let admin_b64 = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            r.current.admin_cert_pem.as_bytes(),
        );
        assert!(kubeconfig.contains(&admin_b64));
    }

    #[test]
    fn files_rotated_by_another_process_are_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = rotator(dir.path(), RotationPolicy::default(), Duration::ZERO);
        let before = served_serial(&r);
        let rotated = Pki::rotate_now(&dir.path().join("pki"), &RotationPolicy::default()).unwrap();
        assert_ne!(rotated.serving_cert_pem, r.current.serving_cert_pem);
        let outcome = r.check().unwrap();
        assert!(outcome.serving_replaced);
        assert_ne!(served_serial(&r), before);
        assert_eq!(r.current.ca_cert_pem, rotated.ca_cert_pem);
    }

    #[test]
    fn a_certificate_inside_the_warning_window_is_reported_once_a_day() {
        let dir = tempfile::tempdir().unwrap();
        // The 10-year CA is inside a 20-year warning window.
        let mut r = rotator(
            dir.path(),
            RotationPolicy::default(),
            Duration::from_secs(20 * 365 * 24 * 3600),
        );
        let first = r.check().unwrap();
        let names: Vec<_> = first.expiring.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["ca", "apiserver", "admin"]);
        assert!(r.check().unwrap().expiring.is_empty());
    }

    #[test]
    fn the_expiry_event_is_a_warning_about_the_node() {
        let status = CertStatus {
            name: "ca".into(),
            path: "/x/ca.crt".into(),
            not_after_unix: 0,
            serial: "01".into(),
        };
        let event = expiry_event("pi", &status, "soon".into());
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert_eq!(event.involved_object.kind.as_deref(), Some("Node"));
        assert_eq!(event.involved_object.name.as_deref(), Some("pi"));
        assert_eq!(event.reason.as_deref(), Some("CertificateExpiring"));
    }
}
