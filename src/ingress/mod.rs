//! The built-in Ingress controller: IngressClass `berth` (the default class) and a reverse
//! proxy on the node's HTTP and HTTPS ports that routes by host and path to the ready pods of
//! the backend Services, with TLS from `kubernetes.io/tls` Secrets chosen by SNI.
//!
//! # Layout
//! - [`class`]: the IngressClass, created at start.
//! - [`routes`]: the routing table (host and path matching precedence), pure.
//! - [`endpoints`]: Service port → ready pod addresses from EndpointSlices, pure.
//! - [`tls`]: certificates from Secrets and the SNI resolver.
//! - [`state`]: the table and certificates the proxy reads, swapped whole on change.
//! - [`source`]: the reflectors that rebuild the state, and the Ingresses' status.
//! - [`proxy`]: the HTTP/HTTPS servers and request forwarding (upgrades included).

pub mod class;
pub mod endpoints;
pub mod proxy;
pub mod routes;
pub mod source;
pub mod state;
pub mod tls;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::network::Ipv4Cidr;

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("cannot listen for ingress traffic on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot set up TLS for the ingress: {0}")]
    TlsConfig(#[from] rustls::Error),
    #[error("the ingress {0} server stopped: {1}")]
    Serve(&'static str, std::io::Error),
    #[error("the ingress controller's watches ended")]
    SourceStopped,
    #[error("cannot start the ingress proxy's thread: {0}")]
    Thread(std::io::Error),
    #[error("the ingress proxy's thread ended")]
    ThreadEnded,
}

/// How often binding is retried while a port is taken.
const BIND_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct IngressConfig {
    pub http: SocketAddr,
    pub https: SocketAddr,
    /// Pod addresses, never published as the node's ingress address when another exists.
    pub pod_cidr: Ipv4Cidr,
}

impl IngressConfig {
    pub fn from_config(config: &crate::config::IngressConfig, pod_cidr: Ipv4Cidr) -> Self {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        IngressConfig {
            http: SocketAddr::new(any, config.http_port),
            https: SocketAddr::new(any, config.https_port),
            pod_cidr,
        }
    }
}

/// Runs the controller: the class, the routing state from the API via `client`, and the two
/// listeners. Returns only when something fails for good.
pub async fn run(client: kube::Client, config: IngressConfig) -> Result<(), IngressError> {
    let fallback = tls::fallback_certificate()?;
    let state = state::State::new(fallback.clone());
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(tls::SniResolver {
        state: state.clone(),
    }));
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    class::ensure(&client).await;
    let pod_cidr = config.pod_cidr;
    let source = source::run(
        client,
        class::CLASS_NAME.to_string(),
        state.clone(),
        fallback,
        move || node_ips(&pod_cidr),
    );
    let proxy = proxy::Proxy::redirecting_to_https(state, config.https.port());
    tokio::select! {
        () = source => Err(IngressError::SourceStopped),
        r = serve_on_own_thread(proxy, Arc::new(tls), config) => r,
    }
}

/// Serves both listeners on a thread of their own, with a single-threaded runtime. Forwarding
/// one request is a handful of socket wake-ups; on the daemon's multi-threaded runtime they
/// spread over its workers (a futex wake and a context switch each, dear on a small board),
/// and API work queues ahead of traffic. Dropping the returned future ends the thread.
async fn serve_on_own_thread(
    proxy: Arc<proxy::Proxy>,
    tls: Arc<rustls::ServerConfig>,
    config: IngressConfig,
) -> Result<(), IngressError> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (report, outcome) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-ingress".into())
        .spawn(move || {
            let result = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(async {
                    tokio::select! {
                        r = serve(proxy, tls, config) => r,
                        _ = stopped => Ok(()),
                    }
                }),
                Err(e) => Err(IngressError::Thread(e)),
            };
            let _ = report.send(result);
        })
        .map_err(IngressError::Thread)?;
    let result = outcome.await.unwrap_or(Err(IngressError::ThreadEnded));
    drop(stop);
    result
}

async fn serve(
    proxy: Arc<proxy::Proxy>,
    tls: Arc<rustls::ServerConfig>,
    config: IngressConfig,
) -> Result<(), IngressError> {
    let http = async {
        let listener = bind_when_free(config.http).await;
        tracing::info!(addr = %config.http, "ingress HTTP is serving");
        proxy::serve_http(listener, proxy.clone()).await
    };
    let https = async {
        let listener = bind_when_free(config.https).await;
        tracing::info!(addr = %config.https, "ingress HTTPS is serving");
        proxy::serve_https(listener, proxy.clone(), tls).await
    };
    tokio::select! {
        r = http => r.map_err(|e| IngressError::Serve("HTTP", e)),
        r = https => r.map_err(|e| IngressError::Serve("HTTPS", e)),
    }
}

/// A listener on `addr` once it can be had: a port another server holds (a web server already
/// on port 80, say) is retried rather than taking the whole node down.
async fn bind_when_free(addr: SocketAddr) -> TcpListener {
    let mut logged = false;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(source) => {
                if !logged {
                    let error = IngressError::Bind { addr, source };
                    tracing::warn!(%error, "ingress cannot listen yet; retrying");
                    logged = true;
                }
                tokio::time::sleep(BIND_RETRY).await;
            }
        }
    }
}

/// The addresses Ingresses are reachable at, for their status: the node's own IPv4 addresses
/// outside the pod network, else the pod bridge's (a node with no other network), else loopback.
pub fn node_ips(pod_cidr: &Ipv4Cidr) -> Vec<IpAddr> {
    let mut outside = Vec::new();
    let mut bridge = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(ip) = a
                .address
                .as_ref()
                .and_then(|s| s.as_sockaddr_in().map(|v| v.ip()))
            else {
                continue;
            };
            let list = match pod_cidr.contains(ip) {
                true => &mut bridge,
                false => &mut outside,
            };
            if !ip.is_loopback() && !list.contains(&IpAddr::V4(ip)) {
                list.push(IpAddr::V4(ip));
            }
        }
    }
    [outside, bridge]
        .into_iter()
        .find(|l| !l.is_empty())
        .unwrap_or_else(|| vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])
}
