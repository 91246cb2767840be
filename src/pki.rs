//! The cluster PKI: one CA, the API server's serving certificate, the admin client certificate,
//! and the admin kubeconfig.
//!
//! Everything lives as PEM files under `<data-dir>/pki/`. The first start generates them; later
//! starts load them and re-issue only what no longer fits (a serving certificate missing a name
//! the node now answers to, or a leaf certificate close to expiry). The CA itself is never
//! replaced while its files exist: every kubeconfig handed out trusts it. `crate::certs` runs the
//! same check on a timer while the server runs.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

const DAY: Duration = Duration::from_secs(24 * 3600);
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Leaf certificates this close to expiry are re-issued, so an unattended device never finds its
/// API unreachable because of an expired certificate.
const RENEW_BEFORE: Duration = Duration::from_secs(90 * 24 * 3600);
/// Certificates are backdated a little so a peer whose clock lags ours still accepts them.
const BACKDATE: Duration = Duration::from_secs(3600);

pub const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
pub const SERVING_CERT: &str = "apiserver.crt";
const SERVING_KEY: &str = "apiserver.key";
pub const ADMIN_CERT: &str = "admin.crt";
const ADMIN_KEY: &str = "admin.key";
pub const FRONT_PROXY_CA_CERT: &str = "front-proxy-ca.crt";
const FRONT_PROXY_CA_KEY: &str = "front-proxy-ca.key";
const FRONT_PROXY_CLIENT_CERT: &str = "front-proxy-client.crt";
const FRONT_PROXY_CLIENT_KEY: &str = "front-proxy-client.key";
/// The name aggregated API servers allow (upstream's `requestheader-allowed-names`).
pub const FRONT_PROXY_CLIENT_NAME: &str = "front-proxy-client";

const CERT_MODE: u32 = 0o644;
const KEY_MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a usable PEM certificate or key: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("generating the {what}: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("service CIDR {0:?} is not an address/prefix with room for a service IP")]
    ServiceCidr(String),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("{0}: no serving certificate to rotate (has `berth server` run with this data dir?)")]
    NothingToRotate(PathBuf),
}

/// How long leaf certificates live and how early they are replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationPolicy {
    pub validity: Duration,
    pub renew_before: Duration,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        RotationPolicy {
            validity: LEAF_VALIDITY,
            renew_before: RENEW_BEFORE,
        }
    }
}

/// One certificate of the cluster PKI as `berth certs check` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertStatus {
    /// The file name without `.crt`: `ca`, `apiserver`, `admin`.
    pub name: String,
    pub path: PathBuf,
    pub not_after_unix: i64,
    /// Lower-case hex, as `openssl x509 -serial` prints it.
    pub serial: String,
}

impl CertStatus {
    /// Whole days until expiry; negative once expired.
    pub fn days_left(&self) -> i64 {
        let now = i64::try_from(unix_now().as_secs()).unwrap_or(i64::MAX);
        (self.not_after_unix - now).div_euclid(DAY.as_secs() as i64)
    }
}

/// The expiry of every certificate in `dir` (CA first), skipping missing files.
pub fn cert_statuses(dir: &Path) -> Result<Vec<CertStatus>, PkiError> {
    let mut statuses = Vec::new();
    for file in [CA_CERT, SERVING_CERT, ADMIN_CERT] {
        let path = dir.join(file);
        let Some(pem) = read_optional(&path)? else {
            continue;
        };
        let info = cert_info(&path, &pem)?;
        statuses.push(CertStatus {
            name: file.trim_end_matches(".crt").to_string(),
            path,
            not_after_unix: info.not_after_unix,
            serial: info.serial,
        });
    }
    Ok(statuses)
}

/// The names the API server answers to; the serving certificate must carry all of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServingNames {
    pub hostname: String,
    pub ips: Vec<IpAddr>,
    pub cluster_domain: String,
    pub service_cidr: String,
}

impl ServingNames {
    /// Every DNS name and IP address the serving certificate must carry.
    fn required_sans(&self) -> Result<(BTreeSet<String>, BTreeSet<IpAddr>), PkiError> {
        let mut dns: BTreeSet<String> = [
            "localhost".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
            format!(
                "kubernetes.default.svc.{}",
                self.cluster_domain.trim_end_matches('.')
            ),
        ]
        .into();
        let hostname = self.hostname.trim().to_ascii_lowercase();
        if !hostname.is_empty() {
            dns.insert(hostname);
        }
        let mut ips: BTreeSet<IpAddr> = self.ips.iter().copied().collect();
        ips.insert(IpAddr::V4(Ipv4Addr::LOCALHOST));
        ips.insert(IpAddr::V6(Ipv6Addr::LOCALHOST));
        ips.insert(first_service_ip(&self.service_cidr)?);
        Ok((dns, ips))
    }
}

/// The first usable address of the service CIDR: the `kubernetes` Service's ClusterIP.
pub fn first_service_ip(service_cidr: &str) -> Result<IpAddr, PkiError> {
    let invalid = || PkiError::ServiceCidr(service_cidr.to_string());
    let (addr, prefix) = service_cidr.trim().split_once('/').ok_or_else(invalid)?;
    let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
    let prefix: u32 = prefix.parse().map_err(|_| invalid())?;
    match addr {
        IpAddr::V4(v4) => {
            // A /31 or /32 has no room for a network address plus a service address.
            if prefix > 30 {
                return Err(invalid());
            }
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            Ok(IpAddr::V4(Ipv4Addr::from((u32::from(v4) & mask) + 1)))
        }
        IpAddr::V6(v6) => {
            if prefix > 126 {
                return Err(invalid());
            }
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            Ok(IpAddr::V6(Ipv6Addr::from((u128::from(v6) & mask) + 1)))
        }
    }
}

/// The cluster's certificates, loaded or freshly made.
#[derive(Clone)]
pub struct Pki {
    pub ca_cert_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    /// Kept private: only this module signs with it.
    ca_key_pem: String,
}

impl fmt::Debug for Pki {
    // Never print private keys, not even by accident in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

impl Pki {
    /// Loads the PKI from `dir`, creating whatever is missing and re-issuing leaf certificates
    /// that no longer fit `names` or are about to expire.
    pub fn ensure(dir: &Path, names: &ServingNames) -> Result<Pki, PkiError> {
        Pki::ensure_with(dir, names, &RotationPolicy::default())
    }

    /// [`Pki::ensure`] with the validity and renewal window of `policy`.
    pub fn ensure_with(
        dir: &Path,
        names: &ServingNames,
        policy: &RotationPolicy,
    ) -> Result<Pki, PkiError> {
        let (dns, ips) = names.required_sans()?;
        Pki::ensure_sans(dir, &dns, &ips, policy, false)
    }

    /// Re-issues the serving and admin certificates in `dir` now, whatever their expiry, keeping
    /// the CA and the names the serving certificate carries. A running server picks the new files
    /// up at its next check.
    pub fn rotate_now(dir: &Path, policy: &RotationPolicy) -> Result<Pki, PkiError> {
        let path = dir.join(SERVING_CERT);
        let pem = read_optional(&path)?.ok_or_else(|| PkiError::NothingToRotate(path.clone()))?;
        let info = cert_info(&path, &pem)?;
        Pki::ensure_sans(dir, &info.dns_names, &info.ips, policy, true)
    }

    fn ensure_sans(
        dir: &Path,
        required_dns: &BTreeSet<String>,
        required_ips: &BTreeSet<IpAddr>,
        policy: &RotationPolicy,
        force: bool,
    ) -> Result<Pki, PkiError> {
        create_private_dir(dir)?;

        let (ca_cert_pem, ca_key_pem, ca_is_new) =
            match load_pair(&dir.join(CA_CERT), &dir.join(CA_KEY))? {
                Some((cert, key)) => (cert, key, false),
                None => {
                    let (cert, key) = new_ca()?;
                    // Key first: a crash in between leaves a key without a certificate, which
                    // the next start simply regenerates, never a certificate without its key.
                    write_atomic(&dir.join(CA_KEY), key.as_bytes(), KEY_MODE)?;
                    write_atomic(&dir.join(CA_CERT), cert.as_bytes(), CERT_MODE)?;
                    (cert, key, true)
                }
            };
        let mut pki = Pki {
            ca_cert_pem,
            ca_key_pem,
            serving_cert_pem: String::new(),
            serving_key_pem: String::new(),
            admin_cert_pem: String::new(),
            admin_key_pem: String::new(),
        };
        // Fail here, naming the file, rather than at the first signature.
        KeyPair::from_pem(&pki.ca_key_pem).map_err(|e| PkiError::Parse {
            path: dir.join(CA_KEY),
            reason: e.to_string(),
        })?;
        let ca_info = cert_info(&dir.join(CA_CERT), &pki.ca_cert_pem)?;
        // A new CA invalidates every leaf, whatever the files say.
        // A forced rotation treats every leaf as no longer good.
        let ca_subject = (!ca_is_new && !force).then_some(ca_info.subject);
        let fits_policy = |info: &CertInfo| !info.expires_within(policy.renew_before);

        (pki.serving_cert_pem, pki.serving_key_pem) = ensure_leaf(
            dir,
            SERVING_CERT,
            SERVING_KEY,
            ca_subject.as_deref(),
            |info| {
                fits_policy(info)
                    && required_dns.is_subset(&info.dns_names)
                    && required_ips.is_subset(&info.ips)
            },
            || pki.issue_serving_cert(required_dns, required_ips, policy.validity),
        )?;
        (pki.admin_cert_pem, pki.admin_key_pem) = ensure_leaf(
            dir,
            ADMIN_CERT,
            ADMIN_KEY,
            ca_subject.as_deref(),
            fits_policy,
            || pki.issue_client_cert("admin", &["system:masters".to_string()], policy.validity),
        )?;
        Ok(pki)
    }

    /// Issues a client certificate signed by the CA: CN = user name, one O per group, as
    /// kube-apiserver's x509 authenticator reads them.
    pub fn issue_client_cert(
        &self,
        common_name: &str,
        groups: &[String],
        validity: Duration,
    ) -> Result<(String, String), PkiError> {
        let what = "client certificate";
        let generate = |source| PkiError::Generate { what, source };
        let mut params = leaf_params(validity)?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let issuer = self.issuer(what)?;
        let key = KeyPair::generate().map_err(generate)?;
        let cert = params.signed_by(&key, &issuer).map_err(generate)?;
        // rcgen keeps one value per attribute type in a name, but every group needs its own O:
        // put the real subject in and sign again.
        let der = der::replace_subject(cert.der(), &der::client_subject(common_name, groups))
            .ok_or_else(|| generate(rcgen::Error::CouldNotParseCertificate))?;
        let der = der::resign(&der, issuer.key()).map_err(generate)?;
        Ok((der::certificate_pem(&der), key.serialize_pem()))
    }

    /// Signs a client certificate for the public key of a PKCS#10 request (whose signature must
    /// verify). Only the request's subject (CN and every O) is taken from it: the usages are
    /// client authentication and the extensions are ours, so a request cannot ask to be a CA.
    pub fn sign_client_csr(&self, csr_pem: &str, validity: Duration) -> Result<String, PkiError> {
        let what = "certificate from a signing request";
        let generate = |source| PkiError::Generate { what, source };
        let (mut request, mut params, common_name, groups) =
            leaf_for_request(csr_pem, validity, what)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        request.params = params;
        let issuer = self.issuer(what)?;
        let cert = request.signed_by(&issuer).map_err(generate)?;
        let der = der::replace_subject(cert.der(), &der::client_subject(&common_name, &groups))
            .ok_or_else(|| generate(rcgen::Error::CouldNotParseCertificate))?;
        let der = der::resign(&der, issuer.key()).map_err(generate)?;
        Ok(der::certificate_pem(&der))
    }

    /// Signs a serving certificate (a kubelet's) for the public key of a PKCS#10 request: its
    /// common name and its DNS and IP subject alternative names are taken from the request,
    /// the usage is server authentication. Whether those names are the requester's to have is
    /// the approver's question, not the signer's.
    pub fn sign_serving_csr(&self, csr_pem: &str, validity: Duration) -> Result<String, PkiError> {
        let what = "serving certificate from a signing request";
        let generate = |source| PkiError::Generate { what, source };
        let (mut request, mut params, _, _) = leaf_for_request(csr_pem, validity, what)?;
        params.subject_alt_names = request
            .params
            .subject_alt_names
            .iter()
            .filter(|san| matches!(san, SanType::DnsName(_) | SanType::IpAddress(_)))
            .cloned()
            .collect();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        request.params = params;
        let issuer = self.issuer(what)?;
        let cert = request.signed_by(&issuer).map_err(generate)?;
        Ok(der::certificate_pem(cert.der()))
    }

    /// The rustls server configuration for the API server: the serving certificate, TLS 1.2 and
    /// 1.3, ALPN h2 and http/1.1, and client certificates optional but, when presented, verified
    /// against the cluster CA (an unverifiable one fails the handshake).
    pub fn server_tls_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let serving = Arc::new(StaticServingCert(self.serving_certified_key()?));
        self.server_tls_config_with(serving)
    }

    /// [`Pki::server_tls_config`] with the serving certificate chosen per handshake by
    /// `serving`, so that it can be replaced while the server runs.
    pub fn server_tls_config_with(
        &self,
        serving: Arc<dyn rustls::server::ResolvesServerCert>,
    ) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in parse_certs(Path::new(CA_CERT), &self.ca_cert_pem)? {
            roots.add(cert)?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(serving);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The serving certificate and its key, ready for rustls; fails when they do not belong
    /// together.
    pub fn serving_certified_key(&self) -> Result<Arc<rustls::sign::CertifiedKey>, PkiError> {
        let certs = parse_certs(Path::new(SERVING_CERT), &self.serving_cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(self.serving_key_pem.as_bytes()).map_err(|e| {
            PkiError::Parse {
                path: PathBuf::from(SERVING_KEY),
                reason: e.to_string(),
            }
        })?;
        let provider = rustls::crypto::ring::default_provider();
        Ok(Arc::new(rustls::sign::CertifiedKey::from_der(
            certs, key, &provider,
        )?))
    }

    fn issue_serving_cert(
        &self,
        dns_names: &BTreeSet<String>,
        ips: &BTreeSet<IpAddr>,
        validity: Duration,
    ) -> Result<(String, String), PkiError> {
        let what = "serving certificate";
        let mut params = leaf_params(validity)?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        for name in dns_names {
            let name = name
                .clone()
                .try_into()
                .map_err(|source| PkiError::Generate { what, source })?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        params
            .subject_alt_names
            .extend(ips.iter().copied().map(SanType::IpAddress));
        self.sign(params, what)
    }

    fn sign(
        &self,
        params: CertificateParams,
        what: &'static str,
    ) -> Result<(String, String), PkiError> {
        let generate = |source| PkiError::Generate { what, source };
        let issuer = self.issuer(what)?;
        let key = KeyPair::generate().map_err(generate)?;
        let cert = params.signed_by(&key, &issuer).map_err(generate)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    fn issuer(&self, what: &'static str) -> Result<Issuer<'static, KeyPair>, PkiError> {
        let generate = |source| PkiError::Generate { what, source };
        let ca_key = KeyPair::from_pem(&self.ca_key_pem).map_err(generate)?;
        Issuer::from_ca_cert_pem(&self.ca_cert_pem, ca_key).map_err(generate)
    }
}

/// Makes the cluster CA and the front-proxy CA in `dir` unless they are there, and nothing they
/// would sign: servers sharing a datastore make these once and share them before any leaf exists.
pub fn ensure_cas(dir: &Path) -> Result<(), PkiError> {
    create_private_dir(dir)?;
    for (cert, key, name) in [
        (CA_CERT, CA_KEY, None),
        (
            FRONT_PROXY_CA_CERT,
            FRONT_PROXY_CA_KEY,
            Some("front-proxy-ca"),
        ),
    ] {
        if load_pair(&dir.join(cert), &dir.join(key))?.is_some() {
            continue;
        }
        let (cert_pem, key_pem) = match name {
            None => new_ca()?,
            Some(name) => new_named_ca("front-proxy CA", name)?,
        };
        write_atomic(&dir.join(key), key_pem.as_bytes(), KEY_MODE)?;
        write_atomic(&dir.join(cert), cert_pem.as_bytes(), CERT_MODE)?;
    }
    Ok(())
}

/// The files [`ensure_cas`] makes, which every server of one cluster must hold alike.
pub const SHARED_FILES: [&str; 4] = [CA_CERT, CA_KEY, FRONT_PROXY_CA_CERT, FRONT_PROXY_CA_KEY];

/// The front proxy's own CA and the client certificate the API server presents when it proxies
/// a request to an aggregated API server, which trusts the user named in the request headers
/// only from a client this CA signed (upstream's `--requestheader-client-ca-file`). A CA of its
/// own, as upstream recommends: the cluster CA signs users, who must not pass as the proxy.
#[derive(Clone)]
pub struct FrontProxy {
    pub ca_cert_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl fmt::Debug for FrontProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrontProxy").finish_non_exhaustive()
    }
}

impl FrontProxy {
    /// Loads the front-proxy CA and client certificate from `dir`, making what is missing and
    /// re-issuing a client certificate close to expiry, as [`Pki::ensure`] does.
    pub fn ensure(dir: &Path, policy: &RotationPolicy) -> Result<FrontProxy, PkiError> {
        create_private_dir(dir)?;
        let ca_cert_path = dir.join(FRONT_PROXY_CA_CERT);
        let ca_key_path = dir.join(FRONT_PROXY_CA_KEY);
        let (ca_cert_pem, ca_key_pem, ca_is_new) = match load_pair(&ca_cert_path, &ca_key_path)? {
            Some((cert, key)) => (cert, key, false),
            None => {
                let (cert, key) = new_named_ca("front-proxy CA", "front-proxy-ca")?;
                write_atomic(&ca_key_path, key.as_bytes(), KEY_MODE)?;
                write_atomic(&ca_cert_path, cert.as_bytes(), CERT_MODE)?;
                (cert, key, true)
            }
        };
        let ca_info = cert_info(&ca_cert_path, &ca_cert_pem)?;
        // Signing goes through the cluster PKI's code with this CA in the cluster CA's place.
        let signer = Pki {
            ca_cert_pem: ca_cert_pem.clone(),
            ca_key_pem,
            serving_cert_pem: String::new(),
            serving_key_pem: String::new(),
            admin_cert_pem: String::new(),
            admin_key_pem: String::new(),
        };
        let (client_cert_pem, client_key_pem) = ensure_leaf(
            dir,
            FRONT_PROXY_CLIENT_CERT,
            FRONT_PROXY_CLIENT_KEY,
            (!ca_is_new).then_some(ca_info.subject.as_str()),
            |info| !info.expires_within(policy.renew_before),
            || signer.issue_client_cert(FRONT_PROXY_CLIENT_NAME, &[], policy.validity),
        )?;
        Ok(FrontProxy {
            ca_cert_pem,
            client_cert_pem,
            client_key_pem,
        })
    }
}

/// One serving certificate for the life of the config.
#[derive(Debug)]
struct StaticServingCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for StaticServingCert {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The common name and organizations of a PEM certificate signing request.
pub fn csr_subject(csr_pem: &str) -> Option<(String, Vec<String>)> {
    use x509_parser::prelude::FromDer;
    let (_, pem) = x509_parser::pem::parse_x509_pem(csr_pem.as_bytes()).ok()?;
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
            .ok()?;
    let subject = &csr.certification_request_info.subject;
    let common_name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(String::from)
        .collect();
    Some((common_name, groups))
}

/// Writes a kubeconfig for `server_url` that trusts the cluster CA and logs in as the admin,
/// with everything embedded so the file alone is enough.
pub fn write_kubeconfig(path: &Path, server_url: &str, pki: &Pki) -> Result<(), PkiError> {
    let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem.as_bytes());
    // A JSON string is a valid YAML double-quoted scalar, so the URL needs no YAML escaping of
    // its own.
    let server = serde_json::Value::String(server_url.to_string()).to_string();
    let yaml = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: berth
  cluster:
    server: {server}
    certificate-authority-data: {ca}
contexts:
- name: berth
  context:
    cluster: berth
    user: admin
current-context: berth
users:
- name: admin
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
preferences: {{}}
",
        ca = b64(&pki.ca_cert_pem),
        cert = b64(&pki.admin_cert_pem),
        key = b64(&pki.admin_key_pem),
    );
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir(parent)?;
    }
    write_atomic(path, yaml.as_bytes(), KEY_MODE)
}

fn new_ca() -> Result<(String, String), PkiError> {
    new_named_ca("cluster CA", "berth-ca")
}

fn new_named_ca(what: &'static str, name: &str) -> Result<(String, String), PkiError> {
    let generate = |source| PkiError::Generate { what, source };
    let now = unix_now();
    let mut params = CertificateParams::default();
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + now.saturating_sub(BACKDATE);
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + now + CA_VALIDITY;
    params.serial_number = Some(random_serial());
    // A timestamp in the name keeps two clusters' CAs apart in a user's trust store.
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{name}@{}", now.as_secs()));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().map_err(generate)?;
    let cert = params.self_signed(&key).map_err(generate)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn leaf_params(validity: Duration) -> Result<CertificateParams, PkiError> {
    let now = unix_now();
    let mut params = CertificateParams::default();
    // A short-lived certificate is backdated in proportion: an hour would be most of the
    // lifetime its holder plans its renewal by.
    let backdate = BACKDATE.min(validity / 10);
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + now.saturating_sub(backdate);
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + now + validity;
    params.serial_number = Some(random_serial());
    params.is_ca = IsCa::ExplicitNoCa;
    // ECDSA keys only sign; key encipherment would be meaningless for them.
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Serial numbers are positive DER integers: clear the sign bit.
    bytes[0] &= 0x7f;
    SerialNumber::from(bytes.to_vec())
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// What `ensure` needs to know about an existing certificate.
struct CertInfo {
    subject: String,
    issuer: String,
    not_after_unix: i64,
    serial: String,
    /// DER SubjectPublicKeyInfo, to tell whether a key file belongs to the certificate.
    public_key: Vec<u8>,
    dns_names: BTreeSet<String>,
    ips: BTreeSet<IpAddr>,
}

impl CertInfo {
    fn expires_within(&self, window: Duration) -> bool {
        let deadline = unix_now() + window;
        self.not_after_unix < i64::try_from(deadline.as_secs()).unwrap_or(i64::MAX)
    }
}

fn cert_info(path: &Path, pem: &str) -> Result<CertInfo, PkiError> {
    let parse_error = |reason: String| PkiError::Parse {
        path: path.to_path_buf(),
        reason,
    };
    let der =
        CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| parse_error(e.to_string()))?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| parse_error(e.to_string()))?;
    let mut info = CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_after_unix: cert.validity().not_after.timestamp(),
        serial: cert.raw_serial_as_string().replace(':', ""),
        public_key: cert.public_key().raw.to_vec(),
        dns_names: BTreeSet::new(),
        ips: BTreeSet::new(),
    };
    let san = cert
        .subject_alternative_name()
        .map_err(|e| parse_error(e.to_string()))?;
    for name in san.iter().flat_map(|ext| ext.value.general_names.iter()) {
        match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => {
                info.dns_names.insert(dns.to_ascii_lowercase());
            }
            x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                    info.ips.insert(IpAddr::from(v4));
                } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                    info.ips.insert(IpAddr::from(v6));
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

fn parse_certs(path: &Path, pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PkiError::Parse {
            path: path.to_path_buf(),
            reason: "no certificate in it".into(),
        });
    }
    Ok(certs)
}

/// Loads the leaf pair `cert_name`/`key_name` from `dir` if it is still good: issued by the CA
/// named `ca_subject` (`None`: the CA is new, nothing is good), not about to expire, and `fits`.
/// Otherwise issues a new one and writes it.
fn ensure_leaf(
    dir: &Path,
    cert_name: &str,
    key_name: &str,
    ca_subject: Option<&str>,
    fits: impl Fn(&CertInfo) -> bool,
    issue: impl FnOnce() -> Result<(String, String), PkiError>,
) -> Result<(String, String), PkiError> {
    let cert_path = dir.join(cert_name);
    let key_path = dir.join(key_name);
    if let Some(ca_subject) = ca_subject {
        if let Some((cert, key)) = load_pair(&cert_path, &key_path)? {
            match cert_info(&cert_path, &cert) {
                Ok(info)
                    if info.issuer == ca_subject && key_matches(&info, &key) && fits(&info) =>
                {
                    return Ok((cert, key));
                }
                Ok(_) => tracing::info!(path = %cert_path.display(), "re-issuing certificate"),
                // A leaf is cheap to replace, unlike the CA: a damaged one is not fatal.
                Err(error) => tracing::warn!(%error, "re-issuing unreadable certificate"),
            }
        }
    }
    let (cert, key) = issue()?;
    write_atomic(&key_path, key.as_bytes(), KEY_MODE)?;
    write_atomic(&cert_path, cert.as_bytes(), CERT_MODE)?;
    Ok((cert, key))
}

/// Whether `key_pem` is the private key of the certificate `info` describes. A pair caught half
/// written (another process rotating it between our two reads) does not match.
fn key_matches(info: &CertInfo, key_pem: &str) -> bool {
    KeyPair::from_pem(key_pem)
        .is_ok_and(|key| rcgen::PublicKeyData::subject_public_key_info(&key) == info.public_key)
}

/// Both files of a certificate/key pair, or `None` when either is missing (then the pair is
/// made anew).
fn load_pair(cert: &Path, key: &Path) -> Result<Option<(String, String)>, PkiError> {
    match (read_optional(cert)?, read_optional(key)?) {
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        _ => Ok(None),
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, PkiError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Creates `dir` (and missing parents) readable only by its owner: it holds the CA key.
fn create_private_dir(dir: &Path) -> Result<(), PkiError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| PkiError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

fn create_dir(dir: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// A PKCS#10 request parsed (its signature verified), and the parameters of a leaf certificate
/// for it that carry only the request's common name: `(request, params, CN, every O)`. What
/// else the certificate says is the caller's choice, never the request's.
fn leaf_for_request(
    csr_pem: &str,
    validity: Duration,
    what: &'static str,
) -> Result<
    (
        rcgen::CertificateSigningRequestParams,
        CertificateParams,
        String,
        Vec<String>,
    ),
    PkiError,
> {
    let generate = |source| PkiError::Generate { what, source };
    let (common_name, groups) = csr_subject(csr_pem)
        .ok_or_else(|| generate(rcgen::Error::CouldNotParseCertificationRequest))?;
    let request = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(generate)?;
    let mut params = leaf_params(validity)?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name.as_str());
    Ok((request, params, common_name, groups))
}

/// [`crate::fsutil::write_atomic`], with the path in the error.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    crate::fsutil::write_atomic(path, bytes, mode).map_err(|source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Just enough DER to swap a certificate's subject: rcgen cannot write a name with several
/// values of one attribute type, and x509-parser only reads.
mod der {
    use base64::Engine as _;
    use rcgen::SigningKey;

    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const BIT_STRING: u8 = 0x03;
    const UTF8_STRING: u8 = 0x0c;
    const EXPLICIT_VERSION: u8 = 0xa0;
    /// DER of the OIDs 2.5.4.10 (organizationName) and 2.5.4.3 (commonName).
    const OID_ORGANIZATION: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x0a];
    const OID_COMMON_NAME: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x03];

    /// `O=<group>` for each group, then `CN=<user>`, the order kubeadm writes.
    pub(super) fn client_subject(common_name: &str, groups: &[String]) -> Vec<u8> {
        let attribute = |oid: &[u8], value: &str| {
            let pair = [oid, &tlv(UTF8_STRING, value.as_bytes())].concat();
            tlv(SET, &tlv(SEQUENCE, &pair))
        };
        let mut names: Vec<u8> = groups
            .iter()
            .flat_map(|group| attribute(OID_ORGANIZATION, group))
            .collect();
        names.extend(attribute(OID_COMMON_NAME, common_name));
        tlv(SEQUENCE, &names)
    }

    /// The certificate with its TBS subject replaced; the signature is left stale for
    /// [`resign`]. `None` if `cert` is not the DER rcgen writes.
    pub(super) fn replace_subject(cert: &[u8], subject: &[u8]) -> Option<Vec<u8>> {
        let [tbs, signature_algorithm, signature] = elements(content(cert, SEQUENCE)?)?[..] else {
            return None;
        };
        let mut fields = elements(content(tbs, SEQUENCE)?)?;
        // version?, serialNumber, signature, issuer, validity, subject, ...
        let subject_index = if fields.first()?.first() == Some(&EXPLICIT_VERSION) {
            5
        } else {
            4
        };
        *fields.get_mut(subject_index)? = subject;
        let tbs = tlv(SEQUENCE, &fields.concat());
        Some(tlv(
            SEQUENCE,
            &[&tbs[..], signature_algorithm, signature].concat(),
        ))
    }

    /// Signs the certificate's TBS part again with `key` (the algorithm does not change).
    pub(super) fn resign(cert: &[u8], key: &impl SigningKey) -> Result<Vec<u8>, rcgen::Error> {
        let unparsable = || rcgen::Error::CouldNotParseCertificate;
        let fields = content(cert, SEQUENCE)
            .and_then(elements)
            .ok_or_else(unparsable)?;
        let [tbs, signature_algorithm, _] = fields[..] else {
            return Err(unparsable());
        };
        // A BIT STRING's first content byte counts the unused bits of the last byte: none.
        let signature = [&[0u8][..], &key.sign(tbs)?].concat();
        let body = [tbs, signature_algorithm, &tlv(BIT_STRING, &signature)].concat();
        Ok(tlv(SEQUENCE, &body))
    }

    pub(super) fn certificate_pem(der: &[u8]) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        // base64 output is ASCII, so 64-byte chunks are whole characters.
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        pem
    }

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
        out.extend_from_slice(content);
        out
    }

    /// Splits the first element off `input`: (whole element, header length, rest).
    fn split_element(input: &[u8]) -> Option<(&[u8], usize, &[u8])> {
        let first_len = *input.get(1)?;
        let (header, len) = if first_len < 0x80 {
            (2, usize::from(first_len))
        } else {
            let count = usize::from(first_len & 0x7f);
            if count == 0 || count > std::mem::size_of::<usize>() {
                return None;
            }
            let len = input
                .get(2..2 + count)?
                .iter()
                .fold(0usize, |len, b| (len << 8) | usize::from(*b));
            (2 + count, len)
        };
        let end = header.checked_add(len)?;
        let element = input.get(..end)?;
        Some((element, header, &input[end..]))
    }

    /// The content of the single element `input`, which must carry `tag`.
    fn content(input: &[u8], tag: u8) -> Option<&[u8]> {
        let (element, header, rest) = split_element(input)?;
        (input.first() == Some(&tag) && rest.is_empty()).then(|| &element[header..])
    }

    /// The consecutive elements of `input`, each with its header.
    fn elements(mut input: &[u8]) -> Option<Vec<&[u8]>> {
        let mut out = Vec::new();
        while !input.is_empty() {
            let (element, _, rest) = split_element(input)?;
            out.push(element);
            input = rest;
        }
        Some(out)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn lengths_round_trip_through_short_and_long_forms() {
            for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
                let encoded = tlv(SEQUENCE, &vec![7u8; len]);
                assert_eq!(content(&encoded, SEQUENCE).map(<[u8]>::len), Some(len));
            }
            assert_eq!(content(&[SEQUENCE, 0x05, 1, 2], SEQUENCE), None);
            assert_eq!(content(&[SEQUENCE, 0x80], SEQUENCE), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    pub(crate) fn test_names() -> ServingNames {
        ServingNames {
            hostname: "Edge-Node-1".into(),
            ips: vec!["192.168.7.20".parse().unwrap()],
            cluster_domain: "cluster.local".into(),
            service_cidr: "10.43.0.0/16".into(),
        }
    }

    fn serving_info(pki: &Pki) -> CertInfo {
        cert_info(Path::new("test"), &pki.serving_cert_pem).unwrap()
    }

    #[test]
    fn first_service_ip_is_the_network_address_plus_one() {
        assert_eq!(
            first_service_ip("10.43.0.0/16").unwrap(),
            "10.43.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            first_service_ip("10.96.12.7/12").unwrap(),
            "10.96.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            first_service_ip("fd00:43::/112").unwrap(),
            "fd00:43::1".parse::<IpAddr>().unwrap()
        );
        assert!(first_service_ip("10.43.0.0").is_err());
        assert!(first_service_ip("10.43.0.0/32").is_err());
        assert!(first_service_ip("nonsense/8").is_err());
    }

    #[test]
    fn serving_cert_carries_every_name_the_api_server_answers_to() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::ensure(dir.path(), &test_names()).unwrap();
        let info = serving_info(&pki);
        for dns in [
            "edge-node-1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ] {
            assert!(info.dns_names.contains(dns), "missing DNS SAN {dns}");
        }
        for ip in ["192.168.7.20", "127.0.0.1", "::1", "10.43.0.1"] {
            assert!(
                info.ips.contains(&ip.parse::<IpAddr>().unwrap()),
                "missing IP SAN {ip}"
            );
        }
        let ca = cert_info(Path::new("ca"), &pki.ca_cert_pem).unwrap();
        assert_eq!(info.issuer, ca.subject);
    }

    #[test]
    fn reload_keeps_the_ca_and_the_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let first = Pki::ensure(dir.path(), &test_names()).unwrap();
        let second = Pki::ensure(dir.path(), &test_names()).unwrap();
        assert_eq!(first.ca_cert_pem, second.ca_cert_pem);
        assert_eq!(first.ca_key_pem, second.ca_key_pem);
        assert_eq!(first.serving_cert_pem, second.serving_cert_pem);
        assert_eq!(first.admin_cert_pem, second.admin_cert_pem);
    }

    #[test]
    fn a_new_node_ip_reissues_only_the_serving_cert() {
        let dir = tempfile::tempdir().unwrap();
        let first = Pki::ensure(dir.path(), &test_names()).unwrap();
        let mut names = test_names();
        names.ips.push("fd00::20".parse().unwrap());
        let second = Pki::ensure(dir.path(), &names).unwrap();
        assert_eq!(first.ca_cert_pem, second.ca_cert_pem);
        assert_eq!(first.admin_cert_pem, second.admin_cert_pem);
        assert_ne!(first.serving_cert_pem, second.serving_cert_pem);
        assert_ne!(first.serving_key_pem, second.serving_key_pem);
        assert!(serving_info(&second)
            .ips
            .contains(&"fd00::20".parse::<IpAddr>().unwrap()));
        // And the re-issued one was persisted, not just returned.
        let third = Pki::ensure(dir.path(), &names).unwrap();
        assert_eq!(second.serving_cert_pem, third.serving_cert_pem);
    }

    #[test]
    fn key_files_are_private_and_cert_files_world_readable() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("pki");
        Pki::ensure(&dir, &test_names()).unwrap();
        let mode = |name: &str| fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(""), 0o700, "the pki directory");
        for key in [CA_KEY, SERVING_KEY, ADMIN_KEY] {
            assert_eq!(mode(key), 0o600, "{key}");
        }
        for cert in [CA_CERT, SERVING_CERT, ADMIN_CERT] {
            assert_eq!(mode(cert), 0o644, "{cert}");
        }
        // No temp files left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 6);
    }

    #[test]
    fn a_lost_ca_reissues_every_leaf() {
        let dir = tempfile::tempdir().unwrap();
        let first = Pki::ensure(dir.path(), &test_names()).unwrap();
        fs::remove_file(dir.path().join(CA_KEY)).unwrap();
        let second = Pki::ensure(dir.path(), &test_names()).unwrap();
        assert_ne!(first.ca_cert_pem, second.ca_cert_pem);
        assert_ne!(first.serving_cert_pem, second.serving_cert_pem);
        assert_ne!(first.admin_cert_pem, second.admin_cert_pem);
    }

    #[test]
    fn a_damaged_leaf_is_reissued_but_a_damaged_ca_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let first = Pki::ensure(dir.path(), &test_names()).unwrap();
        fs::write(dir.path().join(ADMIN_CERT), "garbage").unwrap();
        let second = Pki::ensure(dir.path(), &test_names()).unwrap();
        assert_eq!(first.ca_cert_pem, second.ca_cert_pem);
        assert_ne!(first.admin_cert_pem, second.admin_cert_pem);
        assert!(cert_info(Path::new("admin"), &second.admin_cert_pem).is_ok());

        fs::write(dir.path().join(CA_CERT), "garbage").unwrap();
        let err = Pki::ensure(dir.path(), &test_names()).unwrap_err();
        let expected_path = dir.path().join(CA_CERT).display().to_string();
        assert!(err.to_string().contains(&expected_path), "{err}");
    }

    #[test]
    fn the_front_proxy_has_its_own_ca_and_a_client_cert_it_keeps_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = Pki::ensure(dir.path(), &test_names()).unwrap();
        let policy = RotationPolicy::default();
        let first = FrontProxy::ensure(dir.path(), &policy).unwrap();
        assert_ne!(first.ca_cert_pem, cluster.ca_cert_pem);
        let der = CertificateDer::from_pem_slice(first.client_cert_pem.as_bytes()).unwrap();
        let (_, client) = x509_parser::parse_x509_certificate(&der).unwrap();
        let ca_der = CertificateDer::from_pem_slice(first.ca_cert_pem.as_bytes()).unwrap();
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert_eq!(client.issuer(), ca.subject());
        let cn: Vec<_> = client
            .subject()
            .iter_common_name()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        assert_eq!(cn, [FRONT_PROXY_CLIENT_NAME]);
        let again = FrontProxy::ensure(dir.path(), &policy).unwrap();
        assert_eq!(again.client_cert_pem, first.client_cert_pem);
        assert_eq!(again.ca_cert_pem, first.ca_cert_pem);
    }

    #[test]
    fn issued_client_cert_names_the_user_and_groups() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::ensure(dir.path(), &test_names()).unwrap();
        let (cert, key) = pki
            .issue_client_cert(
                "jane",
                &["dev".to_string(), "ops".to_string()],
                Duration::from_secs(3600),
            )
            .unwrap();
        assert!(key.contains("PRIVATE KEY"));
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        let cn: Vec<_> = parsed
            .subject()
            .iter_common_name()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        let orgs: Vec<_> = parsed
            .subject()
            .iter_organization()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        assert_eq!(cn, ["jane"]);
        assert_eq!(orgs, ["dev", "ops"]);
        let lifetime = parsed.validity().not_after.timestamp() - unix_now().as_secs() as i64;
        assert!(lifetime > 3000 && lifetime <= 3600, "lifetime {lifetime}");
    }

    #[test]
    fn kubeconfig_parses_and_points_at_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::ensure(&dir.path().join("pki"), &test_names()).unwrap();
        let path = dir.path().join("kubeconfig.yaml");
        write_kubeconfig(&path, "https://127.0.0.1:6443", &pki).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let config = kube::config::Kubeconfig::read_from(&path).unwrap();
        assert_eq!(config.current_context.as_deref(), Some("berth"));
        let cluster = config.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        let ca = base64::engine::general_purpose::STANDARD
            .decode(cluster.certificate_authority_data.as_ref().unwrap())
            .unwrap();
        assert_eq!(ca, pki.ca_cert_pem.as_bytes());
        assert_eq!(config.auth_infos[0].name, "admin");
    }

    #[test]
    fn server_tls_config_offers_h2_and_http1() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::ensure(dir.path(), &test_names()).unwrap();
        let config = pki.server_tls_config().unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
}
