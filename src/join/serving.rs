//! The kubelet's serving certificate, as a kubelet with `serverTLSBootstrap` gets it: the
//! agent sends a CSR to the `kubernetes.io/kubelet-serving` signer for `system:node:<name>`
//! naming its node name and the IPs its Node reports; the approver approves it when the node
//! asks for itself, its one DNS name is its node name and every IP is one its Node reports; the
//! signer signs it with the cluster
//! CA. The API server then verifies the kubelet's certificate against the cluster CA and the
//! address it dials (see `apiserver::kubelet_proxy`), so a machine that took over a node's
//! address cannot pose as its kubelet.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;

use super::bootstrap::BootstrapError;
use super::csr::NODE_USER_PREFIX;
use super::node_authz::NODES_GROUP;

pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
const CERT_FILE: &str = "kubelet-serving.crt";
const KEY_FILE: &str = "kubelet-serving.key";
/// Address types whose values a serving certificate may name, as upstream's kubelet uses.
const IP_TYPES: [&str; 2] = ["InternalIP", "ExternalIP"];

#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make the serving key or request: {0}")]
    Key(#[from] rcgen::Error),
    #[error("the serving certificate request: {0}")]
    Request(#[from] BootstrapError),
    #[error("the serving certificate does not parse: {0}")]
    Parse(String),
    #[error("the serving certificate and key do not belong together: {0}")]
    Tls(#[from] rustls::Error),
}

/// Back-off between failed renewals.
const MIN_RETRY: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_secs(60);

/// The kubelet's current serving certificate, asked for at every TLS handshake, so a renewed
/// one is served without a restart.
#[derive(Debug)]
pub struct ServingCert {
    current: RwLock<(Arc<rustls::sign::CertifiedKey>, String)>,
}

impl ServingCert {
    pub fn new(cert_pem: &str, key_pem: &str) -> Result<ServingCert, ServingError> {
        Ok(ServingCert {
            current: RwLock::new((certified_key(cert_pem, key_pem)?, cert_pem.to_string())),
        })
    }

    /// Handshakes from now on present `cert_pem`.
    pub fn replace(&self, cert_pem: &str, key_pem: &str) -> Result<(), ServingError> {
        let key = certified_key(cert_pem, key_pem)?;
        if let Ok(mut current) = self.current.write() {
            *current = (key, cert_pem.to_string());
        }
        Ok(())
    }

    /// The current certificate, in PEM.
    pub fn pem(&self) -> String {
        self.current.read().map(|c| c.1.clone()).unwrap_or_default()
    }
}

impl rustls::server::ResolvesServerCert for ServingCert {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.current.read().ok().map(|c| c.0.clone())
    }
}

fn certified_key(
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::sign::CertifiedKey>, ServingError> {
    use rustls_pki_types::pem::PemObject;
    let parse = |e: &dyn std::fmt::Display| ServingError::Parse(e.to_string());
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| parse(&e))?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| parse(&e))?;
    let provider = rustls::crypto::ring::default_provider();
    Ok(Arc::new(rustls::sign::CertifiedKey::from_der(
        certs, key, &provider,
    )?))
}

/// Renews the serving certificate when it is due (between 70 % and 90 % of its lifetime, as
/// the node's client certificate), until the task is dropped.
pub async fn renew_forever(
    client: kube::Client,
    data_dir: PathBuf,
    node_name: String,
    cert: Arc<ServingCert>,
) {
    let mut retry = MIN_RETRY;
    loop {
        let Some((not_before, not_after)) = super::rotation::validity(&cert.pem()) else {
            tracing::error!("the kubelet serving certificate does not parse: it cannot be renewed");
            return;
        };
        let deadline =
            super::rotation::rotation_deadline(not_before, not_after, rand::random::<f64>());
        let wait = deadline - jiff::Timestamp::now().as_second();
        if wait > 0 {
            tokio::time::sleep(Duration::from_secs(wait as u64)).await;
        }
        let renewed = ensure(&client, &data_dir, &node_name)
            .await
            .and_then(|(c, k)| cert.replace(&c, &k));
        match renewed {
            Ok(()) => retry = MIN_RETRY,
            Err(error) => {
                tracing::warn!(%error, retry_in = ?retry, "cannot renew the kubelet serving certificate");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }
}

/// The IPs a Node reports in `status.addresses`.
fn node_ips(node: &Node) -> Vec<IpAddr> {
    let mut ips = Vec::new();
    let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
    for address in addresses.into_iter().flatten() {
        if IP_TYPES.contains(&address.type_.as_str()) {
            if let Ok(ip) = address.address.parse::<IpAddr>() {
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
    }
    ips
}

/// The DNS name a node's serving certificate may carry: its own name, from the identity it
/// authenticated with (`system:node:<name>`), which it cannot change. Its `Hostname` address it
/// writes itself at any time, so that is only its word, as `InternalDNS` and `ExternalDNS` are;
/// and no node may be named after the API server (`kubernetes.default.svc`, ...) or `localhost`.
fn dns_name_is_acceptable(node_name: &str, name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let reserved = lower == "localhost"
        || lower.ends_with(".localhost")
        || lower == "kubernetes"
        || lower.starts_with("kubernetes.")
        || lower.ends_with(".svc")
        || lower.contains(".svc.");
    name == node_name && !reserved
}

/// The IPs Nodes other than `node_name` report.
fn ips_of_other_nodes(node_name: &str, nodes: &[Node]) -> Vec<IpAddr> {
    nodes
        .iter()
        .filter(|n| n.metadata.name.as_deref() != Some(node_name))
        .flat_map(node_ips)
        .collect()
}

/// Why the approver approves a kubelet-serving request, or None to leave it to a human.
/// Upstream's shape of a kubelet serving request (subject `system:node:<name>` in
/// `system:nodes`, DNS and IP names only, server-auth usages), asked for by that node itself,
/// naming only its own node name as the one DNS name and IPs its Node reports and no other
/// Node (`all_nodes`) reports, so a node cannot claim another's address by reporting it too.
pub fn auto_approval(
    csr: &CertificateSigningRequest,
    node: Option<&Node>,
    all_nodes: &[Node],
) -> Option<&'static str> {
    let spec = &csr.spec;
    if spec.signer_name != KUBELET_SERVING_SIGNER {
        return None;
    }
    let pem = String::from_utf8_lossy(&spec.request.0);
    let (common_name, groups) = crate::pki::csr_subject(&pem)?;
    let node_name = common_name.strip_prefix(NODE_USER_PREFIX)?;
    if node_name.is_empty() || groups != [NODES_GROUP] {
        return None;
    }
    if spec.username.as_deref() != Some(common_name.as_str()) {
        return None;
    }
    let allowed = ["digital signature", "key encipherment", "server auth"];
    let usages = spec.usages.clone().unwrap_or_default();
    if !usages.iter().any(|u| u == "server auth")
        || usages.iter().any(|u| !allowed.contains(&u.as_str()))
    {
        return None;
    }
    let node = node.filter(|n| n.metadata.name.as_deref() == Some(node_name))?;
    let ips = node_ips(node);
    let taken = ips_of_other_nodes(node_name, all_nodes);
    let request = rcgen::CertificateSigningRequestParams::from_pem(&pem).ok()?;
    let sans = &request.params.subject_alt_names;
    let all_reported = sans.iter().all(|san| match san {
        rcgen::SanType::DnsName(name) => dns_name_is_acceptable(node_name, name.as_str()),
        rcgen::SanType::IpAddress(ip) => ips.contains(ip) && !taken.contains(ip),
        _ => false,
    });
    (!sans.is_empty() && all_reported).then_some(
        "Auto approving kubelet serving certificate: the node asks for its own addresses.",
    )
}

/// The kubelet's serving certificate and key (PEM): the stored one while it is fresh and names
/// the Node's addresses, else a new one through a CSR, once the Node reports its addresses.
pub async fn ensure(
    client: &kube::Client,
    data_dir: &Path,
    node_name: &str,
) -> Result<(String, String), ServingError> {
    let node = registered(client, node_name).await;
    let ips = node_ips(&node);
    let dir = data_dir.join("agent");
    if let Some(stored) = load(&dir, &ips) {
        tracing::info!(
            node = node_name,
            "using the stored kubelet serving certificate"
        );
        return Ok(stored);
    }
    let key = rcgen::KeyPair::generate()?;
    // The one DNS name the approver allows: the node's own name.
    let mut params = rcgen::CertificateParams::new(vec![node_name.to_owned()])?;
    params
        .subject_alt_names
        .extend(ips.into_iter().map(rcgen::SanType::IpAddress));
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("{NODE_USER_PREFIX}{node_name}"),
    );
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, NODES_GROUP);
    let request = params.serialize_request(&key)?.pem()?;
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let cert = super::bootstrap::submit_request(
        &api,
        request,
        KUBELET_SERVING_SIGNER,
        &["digital signature", "server auth"],
    )
    .await?;
    let key = key.serialize_pem();
    save(&dir, &cert, &key)?;
    tracing::info!(node = node_name, "kubelet serving certificate issued");
    Ok((cert, key))
}

/// The Node once the heartbeat has registered it with its addresses (the approver compares
/// the request with them).
async fn registered(client: &kube::Client, node_name: &str) -> Node {
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        if let Ok(Some(node)) = nodes.get_opt(node_name).await {
            if !node_ips(&node).is_empty() {
                return node;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The stored pair, when it is not yet due for renewal and names every IP in `ips`.
fn load(dir: &Path, ips: &[IpAddr]) -> Option<(String, String)> {
    let cert = std::fs::read_to_string(dir.join(CERT_FILE)).ok()?;
    let key = std::fs::read_to_string(dir.join(KEY_FILE)).ok()?;
    let (not_before, not_after) = super::rotation::validity(&cert)?;
    let due = super::rotation::rotation_deadline(not_before, not_after, 0.0);
    if jiff::Timestamp::now().as_second() >= due {
        return None;
    }
    let named = cert_ips(&cert)?;
    ips.iter()
        .all(|ip| named.contains(ip))
        .then_some((cert, key))
}

/// The IP addresses a PEM certificate names.
fn cert_ips(cert_pem: &str) -> Option<Vec<IpAddr>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::IPAddress(bytes) = name {
                match bytes.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*bytes).ok()?)),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?)),
                    _ => {}
                }
            }
        }
    }
    Some(ips)
}

fn save(dir: &Path, cert: &str, key: &str) -> Result<(), ServingError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // Certificate first, key last: a pair cut short is one `load` refuses.
    for (name, text, mode) in [(CERT_FILE, cert, 0o644), (KEY_FILE, key, 0o600)] {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let io = |source| ServingError::Io {
            path: tmp.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(|source| ServingError::Io { path, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};
    use k8s_openapi::ByteString;

    fn node(name: &str, addresses: &[(&str, &str)]) -> Node {
        Node {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            status: Some(NodeStatus {
                addresses: Some(
                    addresses
                        .iter()
                        .map(|(t, a)| NodeAddress {
                            type_: t.to_string(),
                            address: a.to_string(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn request(common_name: &str, orgs: &[&str], dns: &[&str], ips: &[&str]) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())
                .unwrap();
        for ip in ips {
            params
                .subject_alt_names
                .push(rcgen::SanType::IpAddress(ip.parse().unwrap()));
        }
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

    fn csr(pem: &str, requester: &str, usages: &[&str]) -> CertificateSigningRequest {
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                request: ByteString(pem.as_bytes().to_vec()),
                signer_name: KUBELET_SERVING_SIGNER.into(),
                usages: Some(usages.iter().map(|u| u.to_string()).collect()),
                username: Some(requester.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    const SERVING: [&str; 2] = ["digital signature", "server auth"];

    #[test]
    fn a_node_asking_for_its_own_addresses_is_approved() {
        let pi = node("pi", &[("InternalIP", "192.168.1.7"), ("Hostname", "pi")]);
        let pem = request(
            "system:node:pi",
            &["system:nodes"],
            &["pi"],
            &["192.168.1.7"],
        );
        assert!(auto_approval(&csr(&pem, "system:node:pi", &SERVING), Some(&pi), &[]).is_some());
    }

    #[test]
    fn names_the_node_does_not_report_other_requesters_and_usages_wait_for_a_human() {
        let pi = node("pi", &[("InternalIP", "192.168.1.7"), ("Hostname", "pi")]);
        let good = request(
            "system:node:pi",
            &["system:nodes"],
            &["pi"],
            &["192.168.1.7"],
        );
        // Someone else's address, or a name the node does not have.
        let foreign_ip = request("system:node:pi", &["system:nodes"], &[], &["192.168.1.8"]);
        let foreign_dns = request("system:node:pi", &["system:nodes"], &["api.example"], &[]);
        for pem in [&foreign_ip, &foreign_dns] {
            assert!(auto_approval(&csr(pem, "system:node:pi", &SERVING), Some(&pi), &[]).is_none());
        }
        // Another node asking for pi's certificate, or an admin.
        assert!(auto_approval(&csr(&good, "system:node:pi2", &SERVING), Some(&pi), &[]).is_none());
        assert!(auto_approval(&csr(&good, "admin", &SERVING), Some(&pi), &[]).is_none());
        // Client usage, no names, a wrong group, an unknown node.
        let client = ["digital signature", "server auth", "client auth"];
        assert!(auto_approval(&csr(&good, "system:node:pi", &client), Some(&pi), &[]).is_none());
        let nameless = request("system:node:pi", &["system:nodes"], &[], &[]);
        assert!(
            auto_approval(&csr(&nameless, "system:node:pi", &SERVING), Some(&pi), &[]).is_none()
        );
        let masters = request("system:node:pi", &["system:masters"], &["pi"], &[]);
        assert!(
            auto_approval(&csr(&masters, "system:node:pi", &SERVING), Some(&pi), &[]).is_none()
        );
        assert!(auto_approval(&csr(&good, "system:node:pi", &SERVING), None, &[]).is_none());
        let other = node("pi2", &[("InternalIP", "192.168.1.7"), ("Hostname", "pi")]);
        assert!(
            auto_approval(&csr(&good, "system:node:pi", &SERVING), Some(&other), &[]).is_none()
        );
    }

    #[test]
    fn only_the_nodes_own_name_passes_as_a_dns_name() {
        let pi = node(
            "pi",
            &[
                ("InternalIP", "192.168.1.7"),
                ("Hostname", "pi"),
                ("InternalDNS", "pi.lan"),
                ("ExternalDNS", "kubernetes.default.svc"),
            ],
        );
        let approve = |dns: &[&str]| {
            let pem = request("system:node:pi", &["system:nodes"], dns, &["192.168.1.7"]);
            auto_approval(&csr(&pem, "system:node:pi", &SERVING), Some(&pi), &[]).is_some()
        };
        assert!(approve(&["pi"]));
        // Reported by the node itself, but not its name.
        assert!(!approve(&["pi.lan"]));
        assert!(!approve(&["kubernetes.default.svc"]));
        // A node named after the API server or localhost does not get its own name either.
        for name in ["kubernetes.default.svc.cluster.local", "localhost"] {
            let sly = node(name, &[("InternalIP", "192.168.1.9"), ("Hostname", name)]);
            let user = format!("system:node:{name}");
            let pem = request(&user, &["system:nodes"], &[name], &[]);
            assert!(
                auto_approval(&csr(&pem, &user, &SERVING), Some(&sly), &[]).is_none(),
                "{name}"
            );
        }
    }

    #[test]
    fn a_node_that_changes_its_hostname_address_gets_no_certificate_for_that_name() {
        // The node writes its own status: it reports another node's name, and a name of its
        // choosing, as its Hostname address.
        for claimed in ["pi2", "api.example"] {
            let pi = node(
                "pi",
                &[("InternalIP", "192.168.1.7"), ("Hostname", claimed)],
            );
            let pem = request(
                "system:node:pi",
                &["system:nodes"],
                &[claimed],
                &["192.168.1.7"],
            );
            assert!(
                auto_approval(&csr(&pem, "system:node:pi", &SERVING), Some(&pi), &[]).is_none(),
                "{claimed}"
            );
            // Its own name it still gets, whatever its Hostname address says.
            let own = request(
                "system:node:pi",
                &["system:nodes"],
                &["pi"],
                &["192.168.1.7"],
            );
            assert!(
                auto_approval(&csr(&own, "system:node:pi", &SERVING), Some(&pi), &[]).is_some()
            );
        }
    }

    #[test]
    fn an_address_another_node_reports_is_not_approved() {
        let pi = node(
            "pi",
            &[
                ("InternalIP", "192.168.1.7"),
                ("InternalIP", "192.168.1.8"),
                ("Hostname", "pi"),
            ],
        );
        let other = node("pi2", &[("InternalIP", "192.168.1.8"), ("Hostname", "pi2")]);
        let nodes = [pi.clone(), other];
        let own = request(
            "system:node:pi",
            &["system:nodes"],
            &["pi"],
            &["192.168.1.7"],
        );
        let claim = request(
            "system:node:pi",
            &["system:nodes"],
            &["pi"],
            &["192.168.1.8"],
        );
        assert!(auto_approval(&csr(&own, "system:node:pi", &SERVING), Some(&pi), &nodes).is_some());
        assert!(
            auto_approval(&csr(&claim, "system:node:pi", &SERVING), Some(&pi), &nodes).is_none()
        );
    }

    #[test]
    fn the_signed_serving_certificate_names_the_requested_addresses_and_serves_only() {
        let dir = tempfile::tempdir().unwrap();
        let names = crate::pki::ServingNames {
            hostname: "server".into(),
            ips: vec![],
            cluster_domain: "cluster.local".into(),
            service_cidr: "10.43.0.0/16".into(),
        };
        let pki = crate::pki::Pki::ensure(dir.path(), &names).unwrap();
        let pem = request(
            "system:node:pi",
            &["system:nodes"],
            &["pi"],
            &["192.168.1.7"],
        );
        let cert = pki
            .sign_serving_csr(&pem, Duration::from_secs(3_600))
            .unwrap();
        assert_eq!(
            cert_ips(&cert).unwrap(),
            ["192.168.1.7".parse::<IpAddr>().unwrap()]
        );
        let (_, parsed) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).unwrap();
        let parsed = parsed.parse_x509().unwrap();
        let eku = parsed.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        assert!(!parsed.is_ca());

        // Stored, it is reused only while it names the node's IPs.
        let agent = dir.path().join("agent");
        std::fs::create_dir_all(&agent).unwrap();
        save(&agent, &cert, "key").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(load(&agent, &[ip("192.168.1.7")]).is_some());
        assert!(load(&agent, &[ip("192.168.1.9")]).is_none());
    }
}
