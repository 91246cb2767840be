//! The certificate controllers of kube-controller-manager, for node certificates:
//! - the approver (`csrapproving`) approves a node's first client certificate when a bootstrap
//!   token asked for it, a node's renewal of its own, and a node's serving certificate for its
//!   own addresses (see [`super::serving`]);
//! - the signer (`csrsigning`) signs approved requests for the client signers with the cluster
//!   CA and writes the certificate into the request's status.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;

use crate::pki::Pki;

pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
pub const NODE_USER_PREFIX: &str = "system:node:";
/// Issued certificates last a year, as upstream's default `--cluster-signing-duration`.
const DEFAULT_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// Shortest lifetime a request may ask for (`spec.expirationSeconds`), as upstream.
const MIN_DURATION: Duration = Duration::from_secs(600);

/// Why the approver approves, or None to leave the request to a human.
pub fn auto_approval(csr: &CertificateSigningRequest) -> Option<&'static str> {
    let spec = &csr.spec;
    if spec.signer_name != KUBELET_CLIENT_SIGNER {
        return None;
    }
    let (common_name, groups) = crate::pki::csr_subject(&String::from_utf8_lossy(&spec.request.0))?;
    let node = common_name.strip_prefix(NODE_USER_PREFIX)?;
    if node.is_empty() || groups != [super::node_authz::NODES_GROUP] {
        return None;
    }
    // A node client certificate authenticates and signs, nothing else.
    let allowed = ["client auth", "digital signature", "key encipherment"];
    let usages = spec.usages.clone().unwrap_or_default();
    if !usages.iter().any(|u| u == "client auth")
        || usages.iter().any(|u| !allowed.contains(&u.as_str()))
    {
        return None;
    }
    let requester = spec.username.as_deref().unwrap_or_default();
    let requester_groups = spec.groups.clone().unwrap_or_default();
    if requester_groups
        .iter()
        .any(|g| g == super::token::BOOTSTRAPPERS_GROUP)
    {
        return Some("Auto approving kubelet client certificate after SubjectAccessReview.");
    }
    if requester == common_name {
        return Some("Auto approving self kubelet client certificate after SubjectAccessReview.");
    }
    None
}

/// The node a serving request is for, from its subject.
fn serving_node(csr: &CertificateSigningRequest) -> Option<String> {
    let (common_name, _) = crate::pki::csr_subject(&String::from_utf8_lossy(&csr.spec.request.0))?;
    common_name.strip_prefix(NODE_USER_PREFIX).map(String::from)
}

fn condition(csr: &CertificateSigningRequest, kind: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
}

fn is_signed(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
}

/// How long the certificate for `csr` lives: what it asks for, within upstream's bounds, and
/// never longer than the cluster signing duration `max`.
fn duration_of(csr: &CertificateSigningRequest, max: Duration) -> Duration {
    match csr.spec.expiration_seconds {
        Some(seconds) if seconds > 0 => Duration::from_secs(seconds as u64)
            .clamp(MIN_DURATION, DEFAULT_DURATION)
            .min(max),
        _ => max,
    }
}

async fn approve(
    api: &Api<CertificateSigningRequest>,
    csr: &CertificateSigningRequest,
    message: &str,
) -> kube::Result<()> {
    let name = csr.metadata.name.clone().unwrap_or_default();
    let mut body = serde_json::to_value(csr).map_err(kube::Error::SerdeError)?;
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let approved = serde_json::json!({
        "type": "Approved", "status": "True", "reason": "AutoApproved",
        "message": message, "lastUpdateTime": now, "lastTransitionTime": now,
    });
    let conditions = body
        .pointer_mut("/status/conditions")
        .and_then(|c| c.as_array_mut());
    match conditions {
        Some(list) => list.push(approved),
        None => body["status"] = serde_json::json!({"conditions": [approved]}),
    }
    let approved: CertificateSigningRequest =
        serde_json::from_value(body).map_err(kube::Error::SerdeError)?;
    api.replace_subresource("approval", &name, &PostParams::default(), &approved)
        .await?;
    tracing::info!(csr = %name, "approved a node client certificate request");
    Ok(())
}

async fn sign(
    api: &Api<CertificateSigningRequest>,
    signer: &Signer,
    csr: &CertificateSigningRequest,
) -> kube::Result<()> {
    let name = csr.metadata.name.clone().unwrap_or_default();
    let request = String::from_utf8_lossy(&csr.spec.request.0).into_owned();
    let duration = duration_of(csr, signer.duration);
    let signed = if csr.spec.signer_name == super::serving::KUBELET_SERVING_SIGNER {
        signer.pki.sign_serving_csr(&request, duration)
    } else {
        signer.pki.sign_client_csr(&request, duration)
    };
    let certificate = match signed {
        Ok(pem) => pem,
        Err(error) => {
            // A request we cannot sign stays unsigned; its requester sees no certificate.
            tracing::warn!(csr = %name, %error, "cannot sign the certificate request");
            return Ok(());
        }
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(certificate);
    let patch = serde_json::json!({"status": {"certificate": encoded}});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(csr = %name, signer = %csr.spec.signer_name, "signed a certificate");
    Ok(())
}

async fn reconcile(
    api: &Api<CertificateSigningRequest>,
    signer: &Signer,
    csr: &CertificateSigningRequest,
) -> kube::Result<()> {
    if condition(csr, "Denied") || condition(csr, "Failed") || is_signed(csr) {
        return Ok(());
    }
    if !condition(csr, "Approved") {
        let message = if csr.spec.signer_name == super::serving::KUBELET_SERVING_SIGNER {
            let nodes = Api::<Node>::all(api.clone().into_client());
            // Every Node: an address another one reports is not this node's to claim.
            let all = nodes.list(&Default::default()).await?.items;
            let node = serving_node(csr).and_then(|name| {
                all.iter()
                    .find(|n| n.metadata.name.as_deref() == Some(&name))
            });
            super::serving::auto_approval(csr, node, &all)
        } else {
            auto_approval(csr)
        };
        if let Some(message) = message {
            approve(api, csr, message).await?;
        }
        // The approval comes back as a watch event; the signer acts on that.
        return Ok(());
    }
    if [
        KUBELET_CLIENT_SIGNER,
        CLIENT_SIGNER,
        super::serving::KUBELET_SERVING_SIGNER,
    ]
    .contains(&csr.spec.signer_name.as_str())
    {
        sign(api, signer, csr).await?;
    }
    Ok(())
}

/// What signs certificates, and for how long at most (kube-controller-manager's
/// `--cluster-signing-duration`).
pub struct Signer {
    pub pki: Arc<Pki>,
    pub duration: Duration,
}

impl Signer {
    /// Upstream's default signing duration, a year.
    pub fn new(pki: Arc<Pki>) -> Signer {
        Signer {
            pki,
            duration: DEFAULT_DURATION,
        }
    }
}

/// Approves and signs until the watch ends.
pub async fn run(client: kube::Client, signer: Signer) {
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let mut events = watcher::watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let csr = match event {
            Ok(Event::Apply(csr)) | Ok(Event::InitApply(csr)) => csr,
            Ok(_) => continue,
            Err(error) => {
                tracing::warn!(%error, "certificate request watch error");
                continue;
            }
        };
        if let Err(error) = reconcile(&api, &signer, &csr).await {
            tracing::warn!(%error, csr = csr.metadata.name.as_deref().unwrap_or_default(), "cannot process a certificate request");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;
    use k8s_openapi::ByteString;

    fn request(common_name: &str, orgs: &[&str]) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        for o in orgs {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, *o);
        }
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn csr(pem: &str, signer: &str, user: &str, groups: &[&str]) -> CertificateSigningRequest {
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                request: ByteString(pem.as_bytes().to_vec()),
                signer_name: signer.into(),
                usages: Some(vec!["digital signature".into(), "client auth".into()]),
                username: Some(user.into()),
                groups: Some(groups.iter().map(|g| g.to_string()).collect()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_certificate_lives_as_asked_within_bounds_and_never_past_the_signing_duration() {
        let pem = request("system:node:pi", &["system:nodes"]);
        let mut c = csr(&pem, KUBELET_CLIENT_SIGNER, "system:node:pi", &[]);
        let year = DEFAULT_DURATION;
        assert_eq!(duration_of(&c, year), year);
        // A cluster signing for two minutes signs two-minute certificates.
        assert_eq!(duration_of(&c, Duration::from_secs(120)).as_secs(), 120);
        c.spec.expiration_seconds = Some(3_600);
        assert_eq!(duration_of(&c, year).as_secs(), 3_600);
        assert_eq!(duration_of(&c, Duration::from_secs(120)).as_secs(), 120);
        c.spec.expiration_seconds = Some(5);
        assert_eq!(duration_of(&c, year), MIN_DURATION);
    }

    #[test]
    fn a_node_renewing_its_own_certificate_is_approved() {
        let pem = request("system:node:pi", &["system:nodes"]);
        let own = csr(
            &pem,
            KUBELET_CLIENT_SIGNER,
            "system:node:pi",
            &["system:nodes"],
        );
        assert!(auto_approval(&own).is_some());
        let other = csr(
            &pem,
            KUBELET_CLIENT_SIGNER,
            "system:node:pi2",
            &["system:nodes"],
        );
        assert!(auto_approval(&other).is_none());
    }

    #[test]
    fn a_bootstrap_token_asking_for_a_node_certificate_is_approved() {
        let pem = request("system:node:pi", &["system:nodes"]);
        let c = csr(
            &pem,
            KUBELET_CLIENT_SIGNER,
            "system:bootstrap:abcdef",
            &["system:bootstrappers"],
        );
        assert!(auto_approval(&c).is_some());
        let renewal = csr(
            &pem,
            KUBELET_CLIENT_SIGNER,
            "system:node:pi",
            &["system:nodes"],
        );
        assert!(auto_approval(&renewal).is_some());
    }

    #[test]
    fn other_subjects_signers_requesters_and_usages_wait_for_a_human() {
        let node = request("system:node:pi", &["system:nodes"]);
        let bootstrapper = ["system:bootstrappers"];
        let admin = request("admin", &["system:masters"]);
        assert!(auto_approval(&csr(
            &admin,
            KUBELET_CLIENT_SIGNER,
            "system:bootstrap:a",
            &bootstrapper
        ))
        .is_none());
        let extra_group = request("system:node:pi", &["system:nodes", "system:masters"]);
        assert!(auto_approval(&csr(
            &extra_group,
            KUBELET_CLIENT_SIGNER,
            "system:bootstrap:a",
            &bootstrapper
        ))
        .is_none());
        assert!(auto_approval(&csr(
            &node,
            CLIENT_SIGNER,
            "system:bootstrap:a",
            &bootstrapper
        ))
        .is_none());
        assert!(auto_approval(&csr(&node, KUBELET_CLIENT_SIGNER, "alice", &["dev"])).is_none());
        assert!(auto_approval(&csr(
            &node,
            KUBELET_CLIENT_SIGNER,
            "system:node:other",
            &["system:nodes"]
        ))
        .is_none());
        let mut serving = csr(
            &node,
            KUBELET_CLIENT_SIGNER,
            "system:bootstrap:a",
            &bootstrapper,
        );
        serving.spec.usages = Some(vec!["server auth".into(), "client auth".into()]);
        assert!(auto_approval(&serving).is_none());
    }

    #[test]
    fn the_signed_certificate_names_the_requested_user_and_groups_and_is_no_ca() {
        let dir = tempfile::tempdir().unwrap();
        let names = crate::pki::ServingNames {
            hostname: "node".into(),
            ips: vec![],
            cluster_domain: "cluster.local".into(),
            service_cidr: "10.43.0.0/16".into(),
        };
        let pki = Pki::ensure(dir.path(), &names).unwrap();
        let pem = pki
            .sign_client_csr(
                &request("system:node:pi", &["system:nodes"]),
                DEFAULT_DURATION,
            )
            .unwrap();
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let user = crate::apiserver::authn::Authenticator::from_client_cert(&der).unwrap();
        assert_eq!(user.name, "system:node:pi");
        assert_eq!(user.groups, ["system:nodes", "system:authenticated"]);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(!cert.is_ca());
        assert!(pki
            .sign_client_csr("not a request", DEFAULT_DURATION)
            .is_err());
    }
}
