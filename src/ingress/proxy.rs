//! The reverse proxy: accepts HTTP and HTTPS on the node's ports, routes each request by host
//! and path through the current routing table and forwards it to a ready pod of the backend
//! Service. Upgrades (websockets) become a byte pipe between client and pod.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::routes::{normalize_host, Route};
use super::state::State;

pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// What every connection of one listener shares.
pub struct Proxy {
    state: State,
    /// Pools keep-alive connections to pods across requests.
    upstream: Client<HttpConnector, Incoming>,
    /// Where plain HTTP requests for hosts with a TLS certificate are sent instead.
    https_port: Option<u16>,
}

impl Proxy {
    pub fn new(state: State) -> Arc<Proxy> {
        Proxy::build(state, None)
    }

    /// A proxy whose plain HTTP requests for a host that has its own certificate get a
    /// permanent redirect (308, which keeps the method and body) to HTTPS on `https_port`, as
    /// ingress-nginx does by default for hosts named in an Ingress's `tls`.
    pub fn redirecting_to_https(state: State, https_port: u16) -> Arc<Proxy> {
        Proxy::build(state, Some(https_port))
    }

    fn build(state: State, https_port: Option<u16>) -> Arc<Proxy> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let upstream = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .build(connector);
        Arc::new(Proxy {
            state,
            upstream,
            https_port,
        })
    }
}

/// Serves plain HTTP on `listener` until the task is dropped.
pub async fn serve_http(listener: TcpListener, proxy: Arc<Proxy>) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    loop {
        let (stream, peer) = accept(&listener).await;
        let proxy = proxy.clone();
        tokio::spawn(serve_connection(
            TokioIo::new(stream),
            proxy,
            peer,
            "http",
            port,
        ));
    }
}

/// Serves HTTPS on `listener`, the certificate chosen by SNI per handshake.
pub async fn serve_https(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Arc<rustls::ServerConfig>,
) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (stream, peer) = accept(&listener).await;
        let (proxy, acceptor) = (proxy.clone(), acceptor.clone());
        tokio::spawn(async move {
            match acceptor.accept(stream).await {
                Ok(tls) => serve_connection(TokioIo::new(tls), proxy, peer, "https", port).await,
                Err(error) => tracing::debug!(%peer, %error, "ingress TLS handshake failed"),
            }
        });
    }
}

/// The next connection; accept errors (out of file descriptors, say) are waited out, not fatal.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return (stream, peer);
            }
            Err(error) => {
                tracing::warn!(%error, "ingress accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_connection<I>(
    io: TokioIo<I>,
    proxy: Arc<Proxy>,
    peer: SocketAddr,
    scheme: &'static str,
    port: u16,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(handle(&proxy, req, peer, scheme, port).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(error) = builder.serve_connection_with_upgrades(io, service).await {
        tracing::debug!(%peer, %error, "ingress connection ended");
    }
}

/// Routes and forwards one request.
pub async fn handle(
    proxy: &Proxy,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    scheme: &'static str,
    port: u16,
) -> Response<ProxyBody> {
    let host = request_host(&req);
    let routing = proxy.state.current();
    if let (Some(https_port), "http") = (proxy.https_port, scheme) {
        if routing.certificates.has_own(&host) {
            return redirect_to_https(&host, https_port, req.uri());
        }
    }
    let backend = match routing.table.route(&host, req.uri().path()) {
        Route::Backend(backend) => backend.clone(),
        Route::NotFound => return plain(StatusCode::NOT_FOUND, "404 page not found\n"),
    };
    drop(routing);
    let Some(endpoint) = backend.pick() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "503 service unavailable: no ready endpoints\n",
        );
    };
    let upgrade = upgrade_protocol(req.headers());
    let downstream_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(protocol) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol.clone());
    }
    if !parts.headers.contains_key(header::HOST) {
        if let Ok(value) = HeaderValue::from_str(&host) {
            parts.headers.insert(header::HOST, value);
        }
    }
    add_forwarded(&mut parts.headers, peer, scheme, &host, port);
    parts.version = Version::HTTP_11;
    let Ok(uri) = Uri::try_from(format!("http://{endpoint}{path}")) else {
        return plain(StatusCode::BAD_REQUEST, "400 bad request path\n");
    };
    parts.uri = uri;
    let upstream_req = Request::from_parts(parts, body);

    let result = match downstream_upgrade {
        Some(downstream) => forward_upgrade(upstream_req, endpoint, downstream).await,
        None => proxy
            .upstream
            .request(upstream_req)
            .await
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            if parts.status != StatusCode::SWITCHING_PROTOCOLS {
                strip_hop_by_hop(&mut parts.headers);
                parts.headers.remove(header::UPGRADE);
            }
            Response::from_parts(parts, body.boxed())
        }
        Err(error) => {
            tracing::debug!(%endpoint, service = %backend.service, %error, "ingress backend failed");
            plain(StatusCode::BAD_GATEWAY, "502 bad gateway\n")
        }
    }
}

/// 308 to the same host and path over HTTPS.
fn redirect_to_https(host: &str, https_port: u16, uri: &Uri) -> Response<ProxyBody> {
    let mut name = normalize_host(host);
    if name.contains(':') {
        name = format!("[{name}]");
    }
    let authority = if https_port == 443 {
        name
    } else {
        format!("{name}:{https_port}")
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut response = plain(StatusCode::PERMANENT_REDIRECT, "308 permanent redirect\n");
    match HeaderValue::from_str(&format!("https://{authority}{path}")) {
        Ok(location) => {
            response.headers_mut().insert(header::LOCATION, location);
            response
        }
        Err(_) => plain(StatusCode::BAD_REQUEST, "400 bad request host\n"),
    }
}

/// Sends an upgrade request on a connection of its own and, when the pod switches protocols,
/// joins the two upgraded connections into one byte pipe.
async fn forward_upgrade(
    req: Request<Incoming>,
    endpoint: SocketAddr,
    downstream: hyper::upgrade::OnUpgrade,
) -> Result<Response<Incoming>, String> {
    let stream = TcpStream::connect(endpoint)
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "ingress upgrade connection ended");
        }
    });
    let mut response = sender.send_request(req).await.map_err(|e| e.to_string())?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            let (Ok(client), Ok(pod)) = (downstream.await, upstream.await) else {
                return;
            };
            let (mut client, mut pod) = (TokioIo::new(client), TokioIo::new(pod));
            let _ = tokio::io::copy_bidirectional(&mut client, &mut pod).await;
        });
    }
    Ok(response)
}

/// The host a request is for: the `Host` header, or the authority of an HTTP/2 request.
fn request_host<B>(req: &Request<B>) -> String {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

/// The protocol asked for when the request is an upgrade (`Connection: upgrade` + `Upgrade`).
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Removes hop-by-hop headers, those that `Connection` names included, and `Upgrade`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// `X-Forwarded-*` as ingress controllers set them; the client's address is appended to any
/// `X-Forwarded-For` chain it brought.
fn add_forwarded(headers: &mut HeaderMap, peer: SocketAddr, scheme: &str, host: &str, port: u16) {
    let client = peer.ip().to_string();
    let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(previous) if !previous.trim().is_empty() => format!("{previous}, {client}"),
        _ => client.clone(),
    };
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set("x-forwarded-for", &chain);
    set("x-real-ip", &client);
    set("x-forwarded-proto", scheme);
    set("x-forwarded-host", host);
    set("x-forwarded-port", &port.to_string());
}

fn plain(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let body = Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::ingress::routes::{Backend, RoutingTable};
    use crate::ingress::state::{Routing, State};
    use crate::ingress::tls::{fallback_certificate, Certificates};
    use k8s_openapi::api::networking::v1::Ingress;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A pod stand-in on loopback: `/ws` switches to an echo protocol, other paths answer with
    /// the forwarding headers they got.
    async fn backend() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let service = hyper::service::service_fn(|mut req: Request<Incoming>| async move {
                    if req.uri().path() == "/ws" {
                        let upgrade = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            let Ok(upgraded) = upgrade.await else { return };
                            let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
                            let _ = tokio::io::copy(&mut reader, &mut writer).await;
                        });
                        let mut response = Response::new(Full::new(Bytes::new()));
                        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                        response
                            .headers_mut()
                            .insert(header::UPGRADE, HeaderValue::from_static("echo"));
                        response
                            .headers_mut()
                            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                        return Ok::<_, Infallible>(response);
                    }
                    let get = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_string()
                    };
                    let text = format!(
                        "xff={} proto={} fhost={} host={}",
                        get("x-forwarded-for"),
                        get("x-forwarded-proto"),
                        get("x-forwarded-host"),
                        get("host"),
                    );
                    Ok(Response::new(Full::new(Bytes::from(text))))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades(),
                );
            }
        });
        addr
    }

    /// The proxy on loopback, routing every request for `a.test` to `pod`.
    async fn proxy_to(pod: SocketAddr) -> SocketAddr {
        let ingress: Ingress = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "i", "namespace": "default"},
            "spec": {"rules": [{"host": "a.test", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]},
        }))
        .unwrap();
        let fallback = fallback_certificate().unwrap();
        let state = State::new(fallback.clone());
        state.replace(Routing {
            table: RoutingTable::build(&[&ingress], |_, _| Backend::new("web".into(), vec![pod])),
            certificates: Certificates::new(fallback),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_http(listener, Proxy::new(state)));
        addr
    }

    #[tokio::test]
    async fn a_request_reaches_the_pod_with_forwarding_headers_and_its_host() {
        let proxy = proxy_to(backend().await).await;
        let mut stream = TcpStream::connect(proxy).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-For: 192.0.2.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.ends_with("xff=192.0.2.1, 127.0.0.1 proto=http fhost=a.test host=a.test"),
            "{answer}"
        );
    }

    #[test]
    fn a_redirect_keeps_host_path_and_query_and_names_a_port_other_than_443() {
        let uri: Uri = "/a/b?x=1".parse().unwrap();
        let moved = redirect_to_https("Secure.Test:8880", 8443, &uri);
        assert_eq!(moved.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            moved.headers()[header::LOCATION],
            "https://secure.test:8443/a/b?x=1"
        );
        let moved = redirect_to_https("secure.test", 443, &"/".parse().unwrap());
        assert_eq!(moved.headers()[header::LOCATION], "https://secure.test/");
    }

    #[tokio::test]
    async fn an_unknown_host_is_404_without_reaching_a_pod() {
        let proxy = proxy_to(backend().await).await;
        let mut stream = TcpStream::connect(proxy).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    }

    #[tokio::test]
    async fn an_upgrade_becomes_a_byte_pipe_to_the_pod() {
        let proxy = proxy_to(backend().await).await;
        let mut stream = TcpStream::connect(proxy).await.unwrap();
        stream
            .write_all(
                b"GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
            )
            .await
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("upgrade: echo"), "{head}");
        stream.write_all(b"ping over the pipe").await.unwrap();
        let mut echoed = [0u8; 18];
        stream.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"ping over the pipe");
    }

    #[test]
    fn forwarded_headers_extend_the_clients_chain() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
        let peer: SocketAddr = "10.0.0.9:5555".parse().unwrap();
        add_forwarded(&mut headers, peer, "https", "a.test", 443);
        assert_eq!(headers["x-forwarded-for"], "192.0.2.1, 10.0.0.9");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-host"], "a.test");
        assert_eq!(headers["x-forwarded-port"], "443");
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        let left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-kept"]);
    }

    #[test]
    fn only_a_connection_upgrade_with_a_protocol_is_an_upgrade() {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(upgrade_protocol(&headers), None);
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(upgrade_protocol(&headers).unwrap(), "websocket");
    }
}
