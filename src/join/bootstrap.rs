//! The joining node's side of trust (kubeadm's discovery token + the kubelet's TLS bootstrap):
//! 1. fetch `cluster-info` from `kube-public` without trusting the server yet, and accept its
//!    CA only if the bootstrap signer signed it for the token (kubeadm's `id.secret` tokens;
//!    k3s's `K10` tokens carry the pin, which suffices) and its public key matches the pin (or,
//!    asked to skip the pin as kubeadm's unsafe flag does, on the signature alone);
//! 2. with that CA and the join token, send a CSR for `system:node:<name>` in `system:nodes`
//!    and wait until the server's approver and signer have answered it;
//! 3. keep the key and certificate in the data dir and reuse them on later starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};

use super::token::{self, BootstrapToken};

const CA_FILE: &str = "ca.crt";
const CERT_FILE: &str = "client.crt";
const KEY_FILE: &str = "client.key";
/// Seconds a stored certificate must still be valid for to be used rather than replaced
/// through the join token.
const MIN_LEFT_TO_REUSE: i64 = 60;
/// How long a node waits for its certificate before giving up with a clear error.
const CSR_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no valid node certificate in {0} and no join token to get one (--token or BERTH_TOKEN)"
    )]
    NoToken(PathBuf),
    #[error("the join token is malformed: {0}")]
    Token(#[from] token::TokenError),
    #[error("using token-based discovery without a CA hash can be unsafe: give --ca-cert-hash sha256:... (printed by `berth token create`), or pass --discovery-token-unsafe-skip-ca-verification to trust the server's CA on the token's signature alone")]
    NoHash,
    #[error("bad server URL {0:?}")]
    Url(String),
    #[error("cannot get kube-public/cluster-info from the server at {url}: {source}")]
    Discovery {
        url: String,
        #[source]
        source: kube::Error,
    },
    #[error("the server's cluster-info has no usable CA: {0}")]
    ClusterInfo(String),
    #[error("the server's CA ({actual}) does not match the pinned hash {expected}: refusing to trust it")]
    HashMismatch { expected: String, actual: String },
    #[error("the server refused the join token: it is wrong, expired or deleted")]
    TokenRefused,
    #[error("the server refused the join token: its cluster-info is not signed for token {0}, so the token is wrong, expired or deleted (or not for signing)")]
    Unsigned(String),
    #[error("the server refused the join token: its signature of cluster-info for token {0} does not verify with the token's secret, so the secret is wrong (or the server is not the one that made the token)")]
    BadSignature(String),
    #[error("the certificate request failed: {0}")]
    Request(kube::Error),
    #[error("the certificate request {0} was denied")]
    Denied(String),
    #[error("no certificate for request {0} within {1:?}; is it approved? (kubectl get csr)")]
    Timeout(String, Duration),
    #[error("cannot make a key or request: {0}")]
    Key(#[from] rcgen::Error),
    #[error("cannot build a client: {0}")]
    Client(kube::Error),
}

/// Where a node keeps what it needs to reach the cluster.
pub struct Credentials {
    dir: PathBuf,
}

/// The node's certificate identity and the cluster CA it trusts, in PEM.
pub struct Identity {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Credentials {
    pub fn new(data_dir: &Path) -> Credentials {
        Credentials {
            dir: data_dir.join("agent"),
        }
    }

    fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(name)).ok()
    }

    /// The stored identity, when it is for `node` and not about to expire.
    pub fn load(&self, node: &str) -> Option<Identity> {
        let identity = Identity {
            ca_pem: self.read(CA_FILE)?,
            cert_pem: self.read(CERT_FILE)?,
            key_pem: self.read(KEY_FILE)?,
        };
        let (_, pem) = x509_parser::pem::parse_x509_pem(identity.cert_pem.as_bytes()).ok()?;
        let cert = pem.parse_x509().ok()?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()?
            .as_str()
            .ok()?
            .to_string();
        // Short of expiry is good enough: the renewal starts at once (see `rotation`).
        let left = cert.validity().time_to_expiration()?;
        let fresh = left.whole_seconds() > MIN_LEFT_TO_REUSE;
        (common_name == format!("{}{node}", super::csr::NODE_USER_PREFIX) && fresh)
            .then_some(identity)
    }

    pub(crate) fn save(&self, identity: &Identity) -> Result<(), BootstrapError> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BootstrapError::Io { path, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io(&self.dir))?;
        // Key last: a half-written set is one `load` refuses, never a certificate without its key.
        for (name, text) in [
            (CA_FILE, &identity.ca_pem),
            (CERT_FILE, &identity.cert_pem),
            (KEY_FILE, &identity.key_pem),
        ] {
            let path = self.dir.join(name);
            let tmp = self.dir.join(format!(".{name}.tmp"));
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io(&tmp))?;
            file.write_all(text.as_bytes()).map_err(io(&tmp))?;
            file.sync_all().map_err(io(&tmp))?;
            std::fs::rename(&tmp, &path).map_err(io(&path))?;
        }
        Ok(())
    }
}

/// A join token as given: `<id>.<secret>`, or k3s's form carrying the CA pin,
/// `K10<sha256 hex>::<id>.<secret>`.
pub fn parse_join_token(text: &str) -> Result<(BootstrapToken, Option<String>), token::TokenError> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix("K10") {
        let (hash, token) = rest.split_once("::").ok_or(token::TokenError::Format)?;
        let hash = token::parse_ca_cert_hash(&format!("sha256:{hash}"))?;
        return Ok((BootstrapToken::parse(token)?, Some(hash)));
    }
    Ok((BootstrapToken::parse(text)?, None))
}

fn base_config(url: &str) -> Result<kube::Config, BootstrapError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| BootstrapError::Url(url.to_string()))?;
    let mut config = kube::Config::new(uri);
    config.connect_timeout = Some(Duration::from_secs(10));
    Ok(config)
}

fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    Some(parsed.contents)
}

/// A client that trusts only `ca_pem` and authenticates with the node's certificate: the one
/// `cert` holds when a connection is made, so a renewed certificate (see
/// [`super::rotation`]) is used without a new client.
pub fn node_client(
    url: &str,
    ca_pem: &str,
    cert: std::sync::Arc<super::rotation::NodeCert>,
) -> Result<kube::Client, BootstrapError> {
    use kube::client::ConfigExt;
    let mut config = base_config(url)?;
    let ca = pem_to_der(ca_pem)
        .ok_or_else(|| BootstrapError::ClusterInfo("the stored CA does not parse".into()))?;
    config.root_cert = Some(vec![ca]);
    let mut tls = config
        .rustls_client_config()
        .map_err(BootstrapError::Client)?;
    tls.client_auth_cert_resolver = cert;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    // A server that vanished without closing (a Pi that lost power) is noticed by keepalive.
    http.set_keepalive(Some(Duration::from_secs(30)));
    http.set_keepalive_interval(Some(Duration::from_secs(10)));
    http.set_keepalive_retries(Some(3));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    let client: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .service(client);
    Ok(kube::client::ClientBuilder::new(service, "default").build())
}

/// How the server's `cluster-info` must prove itself before its CA is believed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discovery {
    /// kubeadm's token discovery (`--token id.secret`): the bootstrap signer's signature for
    /// the token id must be there and match, and the CA must match the pin.
    SignedAndPinned,
    /// k3s's token carrying the CA pin (`K10<hash>::id.secret`): the pin alone authenticates
    /// the CA; a signature, when there is one, must still match.
    Pinned,
    /// kubeadm's `--discovery-token-unsafe-skip-ca-verification`: the signature alone. Whoever
    /// knows the token can sign, so a server in the middle that learnt it is believed.
    SignedUnpinned,
}

impl Discovery {
    fn needs_signature(self) -> bool {
        self != Discovery::Pinned
    }
}

/// How long discovery keeps trying a server it cannot reach (kubeadm's discovery timeout).
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest pause between two tries to reach the server.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);
/// How long a reachable server's `cluster-info` may go without a signature for the token
/// before the token is taken for one the server does not know. kubeadm's discovery polls for
/// the signature (every 5 s) for its whole discovery timeout, since "the JWS signature is
/// patched-in a bit later" than the token is made. `berth token create` returns only once its
/// token is signed, but a token Secret written directly (with kubectl, or by kubeadm-style
/// tooling) is signed by the server's signer from its watch, within a second or two. A few
/// seconds cover that with room on a busy small board, while a wrong token is still refused in
/// seconds rather than after kubeadm's five minutes.
const SIGNATURE_GRACE: Duration = Duration::from_secs(5);
/// How often `cluster-info` is read again while its signature is awaited.
const SIGNATURE_POLL: Duration = Duration::from_millis(250);

/// Whether `error` means the server could not be reached or could not answer for now, which a
/// later try may change. Any answer about the request itself is final.
fn is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code >= 500 || status.code == 429,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// The `cluster-info` ConfigMap, retrying while the server cannot be reached: a node often
/// starts before its server does.
async fn fetch_cluster_info(api: &Api<ConfigMap>, url: &str) -> Result<ConfigMap, BootstrapError> {
    let deadline = tokio::time::Instant::now() + DISCOVERY_TIMEOUT;
    let mut delay = Duration::from_secs(1);
    loop {
        match api.get(super::server::CLUSTER_INFO).await {
            Ok(info) => return Ok(info),
            Err(error) if is_transient(&error) && tokio::time::Instant::now() < deadline => {
                tracing::warn!(%error, server = url, retry_in = ?delay, "cannot reach the server yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
            Err(source) => {
                return Err(BootstrapError::Discovery {
                    url: url.to_string(),
                    source,
                })
            }
        }
    }
}

/// Checks `cluster-info`'s signature for the token: `Ok(false)` when there is none.
fn signed_for(
    data: &std::collections::BTreeMap<String, String>,
    kubeconfig: &str,
    join_token: &BootstrapToken,
) -> Result<bool, BootstrapError> {
    let signature_key = format!("{}{}", super::cluster_info_jws::JWS_PREFIX, join_token.id);
    let Some(signature) = data.get(&signature_key) else {
        return Ok(false);
    };
    if !super::cluster_info_jws::signature_is_valid(
        signature,
        kubeconfig,
        &join_token.id,
        &join_token.secret,
    ) {
        return Err(BootstrapError::BadSignature(join_token.id.clone()));
    }
    Ok(true)
}

/// The kubeconfig in `cluster-info`, once it is signed for the token when `discovery` needs
/// that. A server in the middle that does not know the token is caught here, before the pin is
/// even looked at. A missing signature is waited for only [`SIGNATURE_GRACE`] from the first
/// answer: the signer signs a new token within that, so one still unsigned then is unknown to
/// the server and refused. A signature that does not verify is refused at once.
async fn signed_kubeconfig(
    api: &Api<ConfigMap>,
    url: &str,
    join_token: &BootstrapToken,
    discovery: Discovery,
) -> Result<String, BootstrapError> {
    let mut deadline = None;
    loop {
        let data = fetch_cluster_info(api, url).await?.data.unwrap_or_default();
        let deadline =
            *deadline.get_or_insert_with(|| tokio::time::Instant::now() + SIGNATURE_GRACE);
        let text = data
            .get("kubeconfig")
            .cloned()
            .ok_or_else(|| BootstrapError::ClusterInfo("no kubeconfig".into()))?;
        if signed_for(&data, &text, join_token)? || !discovery.needs_signature() {
            return Ok(text);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BootstrapError::Unsigned(join_token.id.clone()));
        }
        tracing::debug!(token = %join_token.id, "cluster-info is not signed for the token yet");
        tokio::time::sleep(SIGNATURE_POLL).await;
    }
}

/// The server's CA, checked against `pin` (`sha256:<hex>`, none for
/// [`Discovery::SignedUnpinned`]) and, as `discovery` says, the bootstrap signer's signature.
async fn discover_ca(
    url: &str,
    pin: Option<&str>,
    join_token: &BootstrapToken,
    discovery: Discovery,
) -> Result<String, BootstrapError> {
    let mut config = base_config(url)?;
    // Nothing is trusted yet: the answer is believed only if it is signed with the token and
    // its CA matches the pin.
    config.accept_invalid_certs = true;
    let client = kube::Client::try_from(config).map_err(BootstrapError::Client)?;
    let api: Api<ConfigMap> = Api::namespaced(client, super::server::PUBLIC_NAMESPACE);
    let text = signed_kubeconfig(&api, url, join_token, discovery).await?;
    let kubeconfig: kube::config::Kubeconfig =
        serde_yaml_ng::from_str(&text).map_err(|e| BootstrapError::ClusterInfo(e.to_string()))?;
    let encoded = kubeconfig
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority_data.clone())
        .ok_or_else(|| BootstrapError::ClusterInfo("no certificate-authority-data".into()))?;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            BootstrapError::ClusterInfo("certificate-authority-data is not base64 PEM".into())
        })?;
    let actual = token::ca_cert_hash(&ca)?;
    match pin {
        Some(pin) if actual != pin => Err(BootstrapError::HashMismatch {
            expected: pin.to_string(),
            actual,
        }),
        Some(_) => Ok(ca),
        None if discovery == Discovery::SignedUnpinned => {
            tracing::warn!(ca = %actual, "trusting the server's CA on the join token's signature alone");
            Ok(ca)
        }
        None => Err(BootstrapError::NoHash),
    }
}

/// What `berth agent` (or `berth server --server`) was given to join with.
pub struct JoinRequest<'a> {
    pub server_url: &'a str,
    pub token: Option<&'a str>,
    pub ca_cert_hash: Option<&'a str>,
    /// kubeadm's `--discovery-token-unsafe-skip-ca-verification`: no pin needed.
    pub unsafe_skip_ca_verification: bool,
    pub node_name: &'a str,
}

/// The join token and the server's CA it proved, as `join` asks: pinned (given or carried by
/// the token), or on the token's signature alone when the unsafe skip was asked for.
pub async fn discover(
    join: &JoinRequest<'_>,
    text: &str,
) -> Result<(BootstrapToken, String), BootstrapError> {
    let (token, carried) = parse_join_token(text)?;
    let (pin, discovery) = match (join.ca_cert_hash, carried) {
        (Some(given), None) => (
            Some(token::parse_ca_cert_hash(given)?),
            Discovery::SignedAndPinned,
        ),
        (Some(given), Some(_)) => (Some(token::parse_ca_cert_hash(given)?), Discovery::Pinned),
        (None, Some(carried)) => (Some(carried), Discovery::Pinned),
        (None, None) if join.unsafe_skip_ca_verification => (None, Discovery::SignedUnpinned),
        (None, None) => return Err(BootstrapError::NoHash),
    };
    let ca_pem = discover_ca(join.server_url, pin.as_deref(), &token, discovery).await?;
    Ok((token, ca_pem))
}

/// The node's identity: the stored one, or a new one obtained with the join token.
pub async fn ensure_identity(
    data_dir: &Path,
    join: &JoinRequest<'_>,
) -> Result<Identity, BootstrapError> {
    let credentials = Credentials::new(data_dir);
    if let Some(identity) = credentials.load(join.node_name) {
        tracing::info!(node = %join.node_name, "using the stored node certificate");
        return Ok(identity);
    }
    let text = join
        .token
        .ok_or_else(|| BootstrapError::NoToken(credentials.dir.clone()))?;
    let (token, ca_pem) = discover(join, text).await?;
    let (cert_pem, key_pem) =
        request_certificate(join.server_url, &ca_pem, &token, join.node_name).await?;
    let identity = Identity {
        ca_pem,
        cert_pem,
        key_pem,
    };
    credentials.save(&identity)?;
    tracing::info!(node = %join.node_name, "joined: node certificate issued");
    Ok(identity)
}

async fn request_certificate(
    url: &str,
    ca_pem: &str,
    token: &BootstrapToken,
    node: &str,
) -> Result<(String, String), BootstrapError> {
    let client = token_client(url, ca_pem, &token.to_string())?;
    submit_csr(&Api::all(client), node).await
}

/// A client that trusts only `ca_pem` and authenticates with the join `token`.
pub(crate) fn token_client(
    url: &str,
    ca_pem: &str,
    token: &str,
) -> Result<kube::Client, BootstrapError> {
    let mut config = base_config(url)?;
    let ca = pem_to_der(ca_pem)
        .ok_or_else(|| BootstrapError::ClusterInfo("the CA does not parse".into()))?;
    config.root_cert = Some(vec![ca]);
    config.auth_info.token = Some(token.to_owned().into());
    kube::Client::try_from(config).map_err(BootstrapError::Client)
}

/// Asks for a client certificate for `system:node:<node>` through `api` and waits for it:
/// `(certificate, key)` in PEM. The first time as the bootstrap token, later as the node.
pub(crate) async fn submit_csr(
    api: &Api<CertificateSigningRequest>,
    node: &str,
) -> Result<(String, String), BootstrapError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("{}{node}", super::csr::NODE_USER_PREFIX),
    );
    params.distinguished_name.push(
        rcgen::DnType::OrganizationName,
        super::node_authz::NODES_GROUP,
    );
    let request = params.serialize_request(&key)?.pem()?;
    let cert = submit_request(
        api,
        request,
        super::csr::KUBELET_CLIENT_SIGNER,
        &["digital signature", "client auth"],
    )
    .await?;
    Ok((cert, key.serialize_pem()))
}

/// Sends the PEM `request` to `signer` for `usages` and waits for the certificate (PEM).
pub(crate) async fn submit_request(
    api: &Api<CertificateSigningRequest>,
    request: String,
    signer: &str,
    usages: &[&str],
) -> Result<String, BootstrapError> {
    let csr = CertificateSigningRequest {
        metadata: kube::api::ObjectMeta {
            generate_name: Some("node-csr-".into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: k8s_openapi::ByteString(request.into_bytes()),
            signer_name: signer.into(),
            usages: Some(usages.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        ..Default::default()
    };
    let created = match api.create(&PostParams::default(), &csr).await {
        Ok(created) => created,
        Err(kube::Error::Api(status)) if status.code == 401 => {
            return Err(BootstrapError::TokenRefused)
        }
        Err(e) => return Err(BootstrapError::Request(e)),
    };
    let name = created.metadata.name.unwrap_or_default();
    let deadline = tokio::time::Instant::now() + CSR_TIMEOUT;
    loop {
        let current = api.get(&name).await.map_err(BootstrapError::Request)?;
        let status = current.status.unwrap_or_default();
        let conditions = status.conditions.unwrap_or_default();
        if conditions
            .iter()
            .any(|c| (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True")
        {
            return Err(BootstrapError::Denied(name));
        }
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            return Ok(String::from_utf8_lossy(&cert.0).into_owned());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BootstrapError::Timeout(name, CSR_TIMEOUT));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_token_may_carry_its_ca_pin() {
        let hex = "ab".repeat(32);
        let (token, pin) = parse_join_token(&format!("K10{hex}::abcdef.0123456789abcdef")).unwrap();
        assert_eq!(token.id, "abcdef");
        assert_eq!(pin, Some(format!("sha256:{hex}")));
        let (_, pin) = parse_join_token("abcdef.0123456789abcdef").unwrap();
        assert_eq!(pin, None);
        assert!(parse_join_token("K10zz::abcdef.0123456789abcdef").is_err());
        assert!(parse_join_token("nonsense").is_err());
    }

    #[test]
    fn cluster_info_is_signed_only_by_a_signature_made_with_the_token() {
        let token = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        let kubeconfig = "apiVersion: v1\nkind: Config\n";
        let key = format!("{}abcdef", super::super::cluster_info_jws::JWS_PREFIX);
        let mut data = std::collections::BTreeMap::new();
        data.insert("kubeconfig".to_owned(), kubeconfig.to_owned());
        assert!(!signed_for(&data, kubeconfig, &token).unwrap(), "unsigned");
        let signature = super::super::cluster_info_jws::detached_signature(
            kubeconfig,
            "abcdef",
            "0123456789abcdef",
        );
        data.insert(key.clone(), signature);
        assert!(signed_for(&data, kubeconfig, &token).unwrap());
        let forged = super::super::cluster_info_jws::detached_signature(
            kubeconfig,
            "abcdef",
            "ffffffffffffffff",
        );
        data.insert(key, forged);
        assert!(signed_for(&data, kubeconfig, &token).is_err());
    }

    #[test]
    fn stored_credentials_are_reused_only_for_the_same_node_and_with_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let names = crate::pki::ServingNames {
            hostname: "node".into(),
            ips: vec![],
            cluster_domain: "cluster.local".into(),
            service_cidr: "10.43.0.0/16".into(),
        };
        let pki = crate::pki::Pki::ensure(&dir.path().join("pki"), &names).unwrap();
        let (cert_pem, key_pem) = pki
            .issue_client_cert(
                "system:node:pi",
                &["system:nodes".into()],
                Duration::from_secs(86_400),
            )
            .unwrap();
        let credentials = Credentials::new(dir.path());
        assert!(credentials.load("pi").is_none());
        credentials
            .save(&Identity {
                ca_pem: pki.ca_cert_pem.clone(),
                cert_pem,
                key_pem,
            })
            .unwrap();
        assert!(credentials.load("pi").is_some());
        assert!(credentials.load("other").is_none());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("agent").join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
