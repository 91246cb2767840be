//! `pods/log`, `exec`, `attach` and `portforward` of any node's pods: the API server serves its
//! own node's pods itself and proxies the others' to the node's kubelet API (see
//! `agent::kubelet_api`), at the Node's InternalIP and `status.daemonEndpoints.kubeletEndpoint`
//! port, as kube-apiserver does.
//!
//! The proxy is a plain HTTP/1.1 one that passes upgrades through: the kubelet speaks the
//! websocket or SPDY protocol with the client itself, the bytes only pass here.
//!
//! The API server authenticates with a client certificate of the cluster CA for the identity
//! the kubelet trusts ([`KUBELET_CLIENT_USER`]), and, like kube-apiserver with
//! `--kubelet-certificate-authority`, verifies the kubelet's serving certificate: it must chain
//! to the cluster CA and name the IP dialled (agents get theirs through a `kubelet-serving`
//! CSR, see `join::serving`), so whoever holds a node's address cannot pose as its kubelet.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::stream::node::{PodNode, PodSource};
use super::ApiServer;
use crate::api::{ApiError, ApiResult};

/// The user the API server is to a kubelet (kubeadm's name for it).
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The client certificate is issued for a year and re-issued after a month, so a server that
/// runs for years never presents an expired one.
const CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
const CERT_REISSUE_AFTER: Duration = Duration::from_secs(30 * 24 * 3600);

/// `error` as the `Status` response the API server would send.
pub fn status_response(error: &ApiError) -> Response {
    super::response::error_response(error)
}

/// Which streaming subresource a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    Log,
    Exec,
    Attach,
    PortForward,
}

/// How the API server reaches kubelets.
pub struct KubeletClient {
    /// The node whose pods this server runs itself.
    local_node: String,
    pki: crate::pki::Pki,
    tls: Mutex<Option<(Instant, Arc<rustls::ClientConfig>)>>,
}

impl KubeletClient {
    /// The node whose pods this server runs itself.
    pub fn local_node(&self) -> &str {
        &self.local_node
    }

    pub fn new(local_node: String, pki: crate::pki::Pki) -> KubeletClient {
        KubeletClient {
            local_node,
            pki,
            tls: Mutex::new(None),
        }
    }

    fn tls_config(&self) -> ApiResult<Arc<rustls::ClientConfig>> {
        let mut tls = self
            .tls
            .lock()
            .map_err(|_| ApiError::internal("kubelet client TLS lock poisoned"))?;
        if let Some((issued, config)) = tls.as_ref() {
            if issued.elapsed() < CERT_REISSUE_AFTER {
                return Ok(config.clone());
            }
        }
        let config = Arc::new(client_tls_config(&self.pki)?);
        *tls = Some((Instant::now(), config.clone()));
        Ok(config)
    }
}

fn client_tls_config(pki: &crate::pki::Pki) -> ApiResult<rustls::ClientConfig> {
    let internal = |e: &dyn std::fmt::Display| ApiError::internal(format!("kubelet client: {e}"));
    let (cert_pem, key_pem) = pki
        .issue_client_cert(
            KUBELET_CLIENT_USER,
            &["system:masters".to_string()],
            CERT_VALIDITY,
        )
        .map_err(|e| internal(&e))?;
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| internal(&e))?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| internal(&e))?;
    let mut config = kubelet_tls_config(&pki.ca_cert_pem)?
        .with_client_auth_cert(certs, key)
        .map_err(|e| internal(&e))?;
    // Upgrades are HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A TLS client that trusts only kubelets whose certificate the cluster CA (`ca_pem`) signed
/// for the address dialled.
fn kubelet_tls_config(
    ca_pem: &str,
) -> ApiResult<rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>> {
    let internal = |e: &dyn std::fmt::Display| ApiError::internal(format!("kubelet client: {e}"));
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(ca.map_err(|e| internal(&e))?)
            .map_err(|e| internal(&e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| internal(&e))?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| internal(&e))?
        .with_webpki_verifier(verifier))
}

/// Pods read from the API server's own store.
struct StorePods(Arc<ApiServer>);

impl PodSource for StorePods {
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> futures::future::BoxFuture<'a, ApiResult<Value>> {
        Box::pin(async move { get_object(&self.0, "pods", namespace, name) })
    }
}

fn get_object(server: &ApiServer, plural: &str, namespace: &str, name: &str) -> ApiResult<Value> {
    let resource = crate::api::resources::find("", "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not a known resource")))?;
    let raw = server.registry.get(resource, namespace, name)?;
    serde_json::from_slice(&raw).map_err(|e| ApiError::internal(format!("stored {plural}: {e}")))
}

/// Serves a streaming subresource of a pod, on this node or through its node's kubelet.
pub async fn serve(
    server: &Arc<ApiServer>,
    subresource: Subresource,
    namespace: &str,
    name: &str,
    request: Request,
) -> ApiResult<Response> {
    if subresource == Subresource::Log && request.method() != http::Method::GET {
        return Err(ApiError::method_not_allowed(
            request.method().as_str(),
            "pods/log",
        ));
    }
    let pod = get_object(server, "pods", namespace, name)?;
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    let kubelet = server.kubelet_client();
    let remote = kubelet
        .as_ref()
        .filter(|k| !node_name.is_empty() && node_name != k.local_node);
    if let Some(kubelet) = remote {
        let node = get_object(server, "nodes", "", node_name)?;
        let address = kubelet_address(&node).ok_or_else(|| {
            ApiError::unavailable(format!(
                "node {node_name} has no kubelet endpoint to reach pod {namespace}/{name} at"
            ))
        })?;
        let path = kubelet_path(subresource, &pod, request.uri().query())?;
        return proxy(kubelet, address, &path, request).await;
    }
    let node = local_node(server)?;
    let query = request.uri().query().map(str::to_string);
    match subresource {
        Subresource::Log => super::logs::serve(&node, namespace, name, query.as_deref()).await,
        Subresource::Exec => super::stream::serve_exec(&node, namespace, name, request).await,
        Subresource::Attach => super::stream::serve_attach(&node, namespace, name, request).await,
        Subresource::PortForward => {
            super::stream::portforward::serve(&node, namespace, name, request).await
        }
    }
}

fn local_node(server: &Arc<ApiServer>) -> ApiResult<PodNode> {
    let (Some(runtime), Some(logs_dir)) = (server.pod_runtime(), server.pod_logs_dir()) else {
        return Err(ApiError::unavailable("no node runs containers"));
    };
    Ok(PodNode {
        runtime,
        logs_dir,
        pods: Arc::new(StorePods(server.clone())),
    })
}

/// Where a Node's kubelet listens: its InternalIP and its kubelet endpoint port.
pub fn kubelet_address(node: &Value) -> Option<SocketAddr> {
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64()?;
    let port = u16::try_from(port).ok().filter(|p| *p != 0)?;
    let addresses = node["status"]["addresses"].as_array()?;
    let ip: IpAddr = addresses
        .iter()
        .find(|a| a["type"] == "InternalIP")?
        .get("address")?
        .as_str()?
        .parse()
        .ok()?;
    Some(SocketAddr::new(ip, port))
}

/// The kubelet's path for a subresource of `pod`, with the client's query passed on. The
/// container, when the client named none, is the one this server chose, so that both agree.
pub fn kubelet_path(
    subresource: Subresource,
    pod: &Value,
    query: Option<&str>,
) -> ApiResult<String> {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let namespace = enc(pod["metadata"]["namespace"].as_str().unwrap_or_default());
    let name = enc(pod["metadata"]["name"].as_str().unwrap_or_default());
    let uid = enc(pod["metadata"]["uid"].as_str().unwrap_or_default());
    let container = |wanted: Option<String>| -> ApiResult<String> {
        if subresource == Subresource::Log {
            // `pods/log` defaults only when the pod has exactly one container.
            let options = super::logs::LogOptions::parse(
                query,
                pod["metadata"]["name"].as_str().unwrap_or_default(),
            )?;
            let names: Vec<&str> = pod["spec"]["containers"]
                .as_array()
                .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
                .unwrap_or_default();
            return match (options.container, names.as_slice()) {
                (Some(c), _) => Ok(enc(&c)),
                (None, [only]) => Ok(enc(only)),
                (None, _) => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {}, choose one of: [{}]",
                    pod["metadata"]["name"].as_str().unwrap_or_default(),
                    names.join(" ")
                ))),
            };
        }
        super::stream::choose_container(pod, wanted.as_deref()).map(|c| enc(&c))
    };
    let wanted = super::stream::StreamOptions::parse(query).container;
    let path = match subresource {
        Subresource::Log => format!("/containerLogs/{namespace}/{name}/{}", container(None)?),
        Subresource::Exec => format!("/exec/{namespace}/{name}/{uid}/{}", container(wanted)?),
        Subresource::Attach => format!("/attach/{namespace}/{name}/{uid}/{}", container(wanted)?),
        Subresource::PortForward => format!("/portForward/{namespace}/{name}/{uid}"),
    };
    Ok(match query {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path,
    })
}

/// Headers that stay between the client and this server.
fn passes_on(name: &http::HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "authorization" | "host" | "proxy-authorization" | "keep-alive" | "te" | "trailer"
    ) && !name.as_str().starts_with("impersonate-")
}

fn is_hop_by_hop(name: &http::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "transfer-encoding" | "te" | "trailer" | "upgrade"
    )
}

/// Forwards `request` to the kubelet at `address` as `path`; an upgrade the kubelet accepts
/// joins the two connections until either side closes.
pub(crate) async fn proxy(
    kubelet: &KubeletClient,
    address: SocketAddr,
    path: &str,
    mut request: Request,
) -> ApiResult<Response> {
    let unreachable = |e: &dyn std::fmt::Display| {
        ApiError::unavailable(format!("cannot reach the kubelet at {address}: {e}"))
    };
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| unreachable(&"connection timed out"))?
        .map_err(|e| unreachable(&e))?;
    let _ = tcp.set_nodelay(true);
    let connector = tokio_rustls::TlsConnector::from(kubelet.tls_config()?);
    let server_name = rustls_pki_types::ServerName::IpAddress(address.ip().into());
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(server_name, tcp))
        .await
        .map_err(|_| unreachable(&"TLS handshake timed out"))?
        .map_err(|e| unreachable(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "kubelet connection ended with an error");
        }
    });

    let mut outgoing = http::Request::builder()
        .method(request.method().clone())
        .uri(path)
        .header(http::header::HOST, address.to_string());
    for (name, value) in request.headers() {
        if passes_on(name) {
            outgoing = outgoing.header(name, value);
        }
    }
    let upgrading = request.headers().contains_key(http::header::UPGRADE);
    let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut request));
    let outgoing = outgoing
        .body(request.into_body())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut response = sender
        .send_request(outgoing)
        .await
        .map_err(|e| unreachable(&e))?;

    let status = response.status();
    let switching = status == http::StatusCode::SWITCHING_PROTOCOLS;
    let mut reply = Response::builder().status(status);
    for (name, value) in response.headers() {
        // The framing of a plain response is this connection's own (and HTTP/2 has none).
        if switching || !is_hop_by_hop(name) {
            reply = reply.header(name, value);
        }
    }
    if !switching {
        return reply
            .body(Body::new(response.into_body()))
            .map_err(|e| ApiError::internal(e.to_string()));
    }
    let Some(client_upgrade) = client_upgrade else {
        return Err(ApiError::internal(format!(
            "the kubelet at {address} switched protocols unasked"
        )));
    };
    let kubelet_upgrade = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let (client, node) = match tokio::try_join!(client_upgrade, kubelet_upgrade) {
            Ok(both) => both,
            Err(error) => return tracing::debug!(%error, "proxied upgrade failed"),
        };
        let (mut client, mut node) = (TokioIo::new(client), TokioIo::new(node));
        if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut node).await {
            tracing::debug!(%error, "proxied stream ended with an error");
        }
    });
    reply
        .body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "metadata": {"namespace": "ns", "name": "web", "uid": "u-1"},
            "spec": {"nodeName": "pi2", "containers": [{"name": "app"}, {"name": "side"}]}
        })
    }

    #[test]
    fn a_nodes_kubelet_is_at_its_internal_ip_and_kubelet_endpoint_port() {
        let node = json!({"status": {
            "addresses": [{"type": "Hostname", "address": "pi2"},
                          {"type": "InternalIP", "address": "192.168.1.7"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}
        }});
        assert_eq!(
            kubelet_address(&node),
            Some("192.168.1.7:10250".parse().unwrap())
        );
        let no_port =
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
        assert_eq!(kubelet_address(&no_port), None);
    }

    #[test]
    fn kubelet_paths_carry_the_pod_uid_the_chosen_container_and_the_query() {
        let q = Some("command=echo&command=hi&stdout=true");
        assert_eq!(
            kubelet_path(Subresource::Exec, &pod(), q).unwrap(),
            "/exec/ns/web/u-1/app?command=echo&command=hi&stdout=true"
        );
        assert_eq!(
            kubelet_path(Subresource::Attach, &pod(), Some("container=side&stdout=1")).unwrap(),
            "/attach/ns/web/u-1/side?container=side&stdout=1"
        );
        assert_eq!(
            kubelet_path(Subresource::PortForward, &pod(), None).unwrap(),
            "/portForward/ns/web/u-1"
        );
        assert_eq!(
            kubelet_path(Subresource::Log, &pod(), Some("container=side&follow=true")).unwrap(),
            "/containerLogs/ns/web/side?container=side&follow=true"
        );
    }

    #[test]
    fn logs_of_a_pod_with_several_containers_need_a_container_name() {
        let e = kubelet_path(Subresource::Log, &pod(), None).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.message.contains("choose one of: [app side]"));
    }

    fn pki(dir: &std::path::Path) -> crate::pki::Pki {
        let names = crate::pki::ServingNames {
            hostname: "server".into(),
            ips: vec![],
            cluster_domain: "cluster.local".into(),
            service_cidr: "10.43.0.0/16".into(),
        };
        crate::pki::Pki::ensure(dir, &names).unwrap()
    }

    /// A kubelet serving certificate from `ca` naming `ip`, and its key.
    fn kubelet_cert(ca: &crate::pki::Pki, ip: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["pi".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(ip.parse().unwrap()));
        let request = params.serialize_request(&key).unwrap().pem().unwrap();
        let cert = ca
            .sign_serving_csr(&request, Duration::from_secs(3_600))
            .unwrap();
        (cert, key.serialize_pem())
    }

    /// Whether the API server's kubelet client completes a handshake with a kubelet on
    /// loopback presenting `cert`.
    async fn handshake(client: &crate::pki::Pki, (cert, key): (String, String)) -> bool {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let kubelet = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            // The kubelet's view does not matter: the client decides.
            let _ = acceptor.accept(tcp).await;
        });
        let connector =
            tokio_rustls::TlsConnector::from(Arc::new(client_tls_config(client).unwrap()));
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let name = rustls_pki_types::ServerName::IpAddress(address.ip().into());
        let connected = connector.connect(name, tcp).await.is_ok();
        let _ = kubelet.await;
        connected
    }

    #[tokio::test]
    async fn only_a_kubelet_certificate_of_the_cluster_ca_for_the_dialled_ip_is_trusted() {
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (cluster, other) = (pki(one.path()), pki(two.path()));
        assert!(handshake(&cluster, kubelet_cert(&cluster, "127.0.0.1")).await);
        assert!(
            !handshake(&cluster, kubelet_cert(&other, "127.0.0.1")).await,
            "a certificate from another CA is refused"
        );
        assert!(
            !handshake(&cluster, kubelet_cert(&cluster, "127.0.0.2")).await,
            "a certificate for another address is refused"
        );
    }

    #[test]
    fn credentials_meant_for_the_api_server_are_not_passed_to_the_kubelet() {
        assert!(!passes_on(&http::header::AUTHORIZATION));
        assert!(!passes_on(&http::HeaderName::from_static(
            "impersonate-user"
        )));
        assert!(passes_on(&http::header::UPGRADE));
        assert!(passes_on(&http::header::SEC_WEBSOCKET_PROTOCOL));
        assert!(passes_on(&http::HeaderName::from_static(
            "x-stream-protocol-version"
        )));
        assert!(is_hop_by_hop(&http::header::TRANSFER_ENCODING));
        assert!(!is_hop_by_hop(&http::header::CONTENT_TYPE));
    }
}
