//! The HTTPS connections to an aggregated API server (pooled per APIService, see [`Clients`];
//! the availability check dials its own): the Service resolved to a random ready endpoint
//! (the API server runs on the host and reaches pod IPs directly, with no dependency on the
//! service proxy's rules), TLS verified against the APIService's `caBundle` (or not at all with
//! `insecureSkipTLSVerify`), and the front-proxy client certificate presented.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::api::resources;
use crate::api::selectors::LabelSelector;
use crate::registry::generic::{decode, ListOptions};
use crate::registry::Registry;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("invalid front-proxy client certificate: {0}")]
    Identity(String),
    #[error("invalid caBundle: {0}")]
    CaBundle(String),
    #[error("dial tcp {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("tls: {0}")]
    Tls(std::io::Error),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("{0}")]
    Client(String),
}

/// Why a Service has no endpoint to send to, as upstream's availability controller names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unresolved {
    /// `ServiceNotFound`
    ServiceNotFound,
    /// `ServicePortError`
    NoSuchPort,
    /// `EndpointsNotFound`
    NoEndpointSlices,
    /// `MissingEndpoints`, with the Service port's name.
    NoReadyEndpoints(String),
    /// `ServiceAccessError`: the store failed.
    Access(String),
}

/// A ready endpoint of Service `namespace/name` behind its port `service_port`, from the
/// Service's EndpointSlices, chosen at random among the ready ones.
pub fn resolve(
    registry: &Registry,
    namespace: &str,
    name: &str,
    service_port: i32,
) -> Result<SocketAddr, Unresolved> {
    let access = |e: crate::api::ApiError| Unresolved::Access(e.message);
    let services = resources::find("", "v1", "services")
        .ok_or_else(|| Unresolved::Access("services are not served".into()))?;
    let service = match registry.get_value(services, namespace, name) {
        Ok(service) => service,
        Err(e) if e.code == 404 => return Err(Unresolved::ServiceNotFound),
        Err(e) => return Err(access(e)),
    };
    let port_name = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| p["port"].as_i64() == Some(i64::from(service_port)))
        .map(|p| p["name"].as_str().unwrap_or("").to_string())
        .ok_or(Unresolved::NoSuchPort)?;
    let slices = resources::find("discovery.k8s.io", "v1", "endpointslices")
        .ok_or_else(|| Unresolved::Access("endpointslices are not served".into()))?;
    let selector = LabelSelector::parse(&format!("kubernetes.io/service-name={name}"))
        .map_err(|e| Unresolved::Access(e.to_string()))?;
    let options = ListOptions {
        label_selector: Some(selector),
        ..ListOptions::default()
    };
    let page = registry
        .list(slices, Some(namespace), &options)
        .map_err(access)?;
    if page.items.is_empty() {
        return Err(Unresolved::NoEndpointSlices);
    }
    let slices: Vec<Value> = page
        .items
        .iter()
        .filter_map(|raw| decode(raw).ok())
        .collect();
    let ready: Vec<SocketAddr> = slices
        .iter()
        .flat_map(|slice| crate::api::endpoints::ready(slice, &port_name))
        .filter_map(|(ip, port)| Some(SocketAddr::new(ip.parse::<IpAddr>().ok()?, port)))
        .collect();
    // A random pick spreads requests over the backend's replicas, as upstream's proxy does.
    match ready.len() {
        0 => Err(Unresolved::NoReadyEndpoints(port_name)),
        n => Ok(ready[rand::random_range(0..n)]),
    }
}

/// The front-proxy client certificate and key, parsed once.
pub struct ClientIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl ClientIdentity {
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClientIdentity, BackendError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BackendError::Identity(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| BackendError::Identity(e.to_string()))?;
        Ok(ClientIdentity { chain, key })
    }
}

/// The TLS client configuration for one APIService.
pub fn tls_config(
    identity: &ClientIdentity,
    ca_bundle: &[u8],
    insecure: bool,
) -> Result<Arc<rustls::ClientConfig>, BackendError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| BackendError::CaBundle(e.to_string()))?;
    let builder = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_bundle) {
            let cert = cert.map_err(|e| BackendError::CaBundle(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| BackendError::CaBundle(e.to_string()))?;
        }
        builder.with_root_certificates(roots)
    };
    let mut config = builder
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| BackendError::Identity(e.to_string()))?;
    // HTTP/1.1 keeps upgrades (exec, port-forward) on the same path as everything else.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client that keeps connections to one APIService's endpoints open between requests.
pub type PooledClient =
    hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// What a pooled client was made for: a change to any of it makes a new one.
#[derive(Clone, PartialEq)]
struct ClientKey {
    server_name: String,
    ca_bundle: Vec<u8>,
    insecure: bool,
}

/// One pooled client per APIService, so that requests reuse open TLS connections instead of
/// paying a TCP and TLS handshake each (upstream keeps a transport per APIService too).
#[derive(Default)]
pub struct Clients {
    by_api_service: Mutex<HashMap<String, (ClientKey, PooledClient)>>,
}

/// How long an unused connection to a backend is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

impl Clients {
    /// The client for APIService `name`, made on first use or when its TLS settings changed.
    pub fn get(
        &self,
        identity: &ClientIdentity,
        name: &str,
        server_name: &str,
        ca_bundle: &[u8],
        insecure: bool,
    ) -> Result<PooledClient, BackendError> {
        let key = ClientKey {
            server_name: server_name.to_string(),
            ca_bundle: ca_bundle.to_vec(),
            insecure,
        };
        let mut clients = self
            .by_api_service
            .lock()
            .map_err(|_| BackendError::Client("the client pool lock is poisoned".into()))?;
        if let Some((made_for, client)) = clients.get(name) {
            if *made_for == key {
                return Ok(client.clone());
            }
        }
        let tls = tls_config(identity, ca_bundle, insecure)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let verified_name = ServerName::try_from(server_name.to_string())
            .map_err(|e| BackendError::Tls(std::io::Error::other(e.to_string())))?;
        // The connector sets ALPN itself (http/1.1) and refuses a configuration that has it.
        let mut config = (*tls).clone();
        config.alpn_protocols.clear();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(verified_name))
            .enable_http1()
            .wrap_connector(http);
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .build(https);
        clients.insert(name.to_string(), (key, client.clone()));
        Ok(client)
    }

    /// Drops the clients (and their connections) of APIServices not in `names`.
    pub fn retain(&self, names: &[&str]) {
        if let Ok(mut clients) = self.by_api_service.lock() {
            clients.retain(|name, _| names.contains(&name.as_str()));
        }
    }
}

/// Opens an HTTP/1.1 connection over TLS to `addr`, expecting a certificate for `server_name`.
pub async fn connect(
    addr: SocketAddr,
    server_name: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<SendRequest<Body>, BackendError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| BackendError::Connect { addr, source })?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| BackendError::Tls(std::io::Error::other(e.to_string())))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(BackendError::Tls)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "aggregated API connection ended");
        }
    });
    Ok(sender)
}

/// `insecureSkipTLSVerify`: any certificate is taken, but the handshake's signatures are still
/// checked (the peer must hold the key of the certificate it shows).
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
