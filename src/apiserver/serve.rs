//! The HTTPS listener: TLS, HTTP/1.1 and HTTP/2, and authentication in front of the router.
//!
//! The caller binds the listener and owns the shutdown signal, so a test serves on
//! `127.0.0.1:0` and speaks real TLS to it.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::authn::{bearer_token, Authenticator, UserInfo};

/// A client that connects but never finishes the handshake must not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish their requests after shutdown; long-running
/// watches would otherwise hold the process up indefinitely.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pings idle HTTP/2 connections so half-dead peers (a Pi that lost Wi-Fi) are noticed.
const H2_KEEPALIVE: Duration = Duration::from_secs(30);

/// Accepts TLS connections on `listener` until `shutdown` resolves; serves HTTP/1.1 and HTTP/2
/// (with upgrades, for later websocket/SPDY use); authenticates each request (client certificate
/// from the TLS session, else bearer token, else anonymous) and inserts the [`UserInfo`] into the
/// request extensions before calling `app`. A bearer token that matches nobody gets a 401
/// `Status`. A failed TLS handshake is logged at debug and never disturbs other connections.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    authn: Arc<Authenticator>,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let limiter = Arc::new(super::auth_limit::FailedAuthLimiter::default());
    let (stop_tx, stop_rx) = watch::channel(());
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connections so the set stays as large as the live ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    connections.spawn(serve_connection(
                        tcp,
                        peer,
                        acceptor.clone(),
                        authn.clone(),
                        limiter.clone(),
                        app.clone(),
                        stop_rx.clone(),
                    ));
                }
                // Out of file descriptors or a connection reset before accept: not fatal for
                // the server, but back off so an fd shortage does not become a busy loop.
                Err(error) => {
                    tracing::warn!(%error, "accepting an API connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    // Ask every connection to finish its in-flight requests and close.
    let _ = stop_tx.send(());
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            remaining = connections.len(),
            "closing API connections still open after the grace period"
        );
    }
    connections.shutdown().await;
    Ok(())
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    authn: Arc<Authenticator>,
    limiter: Arc<super::auth_limit::FailedAuthLimiter>,
    app: axum::Router,
    mut stop: watch::Receiver<()>,
) {
    // Small request/response exchanges (watch events) should not wait for Nagle.
    let _ = tcp.set_nodelay(true);
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    // The certificate is fixed for the connection's lifetime: authenticate it once.
    let cert_user = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| Authenticator::from_client_cert(cert.as_ref()));

    let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        let app = app.clone();
        let user = authenticate(&authn, cert_user.as_ref(), request.headers());
        let refused = match user {
            Some(_) => None,
            None => Some(match limiter.failed(peer.ip(), std::time::Instant::now()) {
                Ok(()) => unauthorized(),
                Err(wait) => super::auth_limit::too_many_requests(wait),
            }),
        };
        // TokenReview checks tokens with the same authenticator.
        request.extensions_mut().insert(authn.clone());
        request
            .extensions_mut()
            .insert(crate::audit::PeerAddress(peer));
        async move {
            match (user, refused) {
                (Some(user), _) => {
                    request.extensions_mut().insert(user);
                    app.oneshot(request).await
                }
                (None, refused) => Ok::<_, Infallible>(refused.unwrap_or_else(unauthorized)),
            }
        }
    });

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(H2_KEEPALIVE));
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stop.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "API connection ended with an error");
    }
}

/// The request's user; `None` means "reject with 401". A verified client certificate wins over
/// a bearer token, as in kube-apiserver; no credentials at all is the anonymous user.
fn authenticate(
    authn: &Authenticator,
    cert_user: Option<&UserInfo>,
    headers: &http::HeaderMap,
) -> Option<UserInfo> {
    if let Some(user) = cert_user {
        return Some(user.clone());
    }
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Some(UserInfo::anonymous());
    };
    match value.to_str().ok() {
        Some(value) if bearer_token(value).is_some() => authn.from_bearer(value),
        // Schemes we do not speak (Basic, ...) are ignored, not rejected, like kube-apiserver.
        Some(_) => Some(UserInfo::anonymous()),
        None => None,
    }
}

fn unauthorized() -> http::Response<Body> {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    });
    let mut response = http::Response::new(Body::from(body.to_string()));
    *response.status_mut() = http::StatusCode::UNAUTHORIZED;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{write_kubeconfig, Pki, ServingNames};
    use axum::routing::get;
    use axum::Extension;
    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Empty};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::AsyncWriteExt as _;
    use tokio::sync::oneshot;
    use tokio_rustls::TlsConnector;

    type TestResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

    struct TestServer {
        addr: SocketAddr,
        pki: Pki,
        dir: tempfile::TempDir,
        stop: Option<oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    impl TestServer {
        async fn stop(mut self) -> std::io::Result<()> {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            (&mut self.task).await.expect("serve task panicked")
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    fn names() -> ServingNames {
        ServingNames {
            hostname: "test-node".into(),
            ips: vec![],
            cluster_domain: "cluster.local".into(),
            service_cidr: "10.43.0.0/16".into(),
        }
    }

    /// A router that answers with the authenticated user: `name|group,group`.
    fn whoami_router() -> axum::Router {
        axum::Router::new()
            .route(
                "/whoami",
                get(|Extension(user): Extension<UserInfo>| async move {
                    format!("{}|{}", user.name, user.groups.join(","))
                }),
            )
            .route("/livez", get(|| async { "ok" }))
    }

    async fn start_server() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::ensure(&dir.path().join("pki"), &names()).unwrap();
        let tokens = dir.path().join("tokens.csv");
        std::fs::write(&tokens, "good-token,jane,1001,\"dev,ops\"\n").unwrap();
        let authn = Arc::new(Authenticator::new(Some(&tokens)).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            listener,
            pki.server_tls_config().unwrap(),
            authn,
            whoami_router(),
            async move {
                let _ = stopped.await;
            },
        ));
        TestServer {
            addr,
            pki,
            dir,
            stop: Some(stop),
            task,
        }
    }

    fn client_tls(
        ca_pem: &str,
        client_cert: Option<(&str, &str)>,
        alpn: &[&[u8]],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let mut config = match client_cert {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    fn admin_tls(pki: &Pki) -> Arc<rustls::ClientConfig> {
        client_tls(
            &pki.ca_cert_pem,
            Some((&pki.admin_cert_pem, &pki.admin_key_pem)),
            &[b"http/1.1"],
        )
    }

    fn anonymous_tls(pki: &Pki) -> Arc<rustls::ClientConfig> {
        client_tls(&pki.ca_cert_pem, None, &[b"http/1.1"])
    }

    async fn connect(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
    ) -> TestResult<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        // Checked against the serving certificate's IP SAN.
        let server_name = ServerName::IpAddress(addr.ip().into());
        Ok(TlsConnector::from(tls).connect(server_name, tcp).await?)
    }

    fn request(path: &str, bearer: Option<&str>) -> http::Request<Empty<Bytes>> {
        let mut builder = http::Request::get(path).header(http::header::HOST, "127.0.0.1");
        if let Some(token) = bearer {
            builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        builder.body(Empty::new()).unwrap()
    }

    /// One HTTP/1.1 GET on a fresh TLS connection: (status, body).
    async fn get_http1(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        path: &str,
        bearer: Option<&str>,
    ) -> TestResult<(http::StatusCode, String)> {
        let stream = connect(addr, tls).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let response = sender.send_request(request(path, bearer)).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8(body.to_vec())?))
    }

    #[tokio::test]
    async fn admin_client_cert_authenticates_as_admin_in_system_masters() {
        let server = start_server().await;
        let (status, body) = get_http1(server.addr, admin_tls(&server.pki), "/whoami", None)
            .await
            .unwrap();
        assert_eq!(status, http::StatusCode::OK);
        assert_eq!(body, "admin|system:masters,system:authenticated");
        server.stop().await.unwrap();
    }

    #[tokio::test]
    async fn an_issued_client_cert_carries_all_its_groups_through_tls() {
        let server = start_server().await;
        let groups = ["dev".to_string(), "ops".to_string()];
        let (cert, key) = server
            .pki
            .issue_client_cert("jane", &groups, Duration::from_secs(600))
            .unwrap();
        let tls = client_tls(&server.pki.ca_cert_pem, Some((&cert, &key)), &[b"http/1.1"]);
        let (_, body) = get_http1(server.addr, tls, "/whoami", None).await.unwrap();
        assert_eq!(body, "jane|dev,ops,system:authenticated");
    }

    #[tokio::test]
    async fn no_credentials_is_the_anonymous_user() {
        let server = start_server().await;
        let (status, body) = get_http1(server.addr, anonymous_tls(&server.pki), "/whoami", None)
            .await
            .unwrap();
        assert_eq!(status, http::StatusCode::OK);
        assert_eq!(body, "system:anonymous|system:unauthenticated");
    }

    #[tokio::test]
    async fn a_bearer_token_from_the_token_file_authenticates_its_user() {
        let server = start_server().await;
        let tls = anonymous_tls(&server.pki);
        let (status, body) = get_http1(server.addr, tls, "/whoami", Some("good-token"))
            .await
            .unwrap();
        assert_eq!(status, http::StatusCode::OK);
        assert_eq!(body, "jane|dev,ops,system:authenticated");
    }

    #[tokio::test]
    async fn a_bad_bearer_token_gets_401_with_a_status_body() {
        let server = start_server().await;
        let tls = anonymous_tls(&server.pki);
        let (status, body) = get_http1(server.addr, tls, "/whoami", Some("bad-token"))
            .await
            .unwrap();
        assert_eq!(status, http::StatusCode::UNAUTHORIZED);
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            status,
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized",
                "code": 401})
        );
    }

    #[tokio::test]
    async fn a_client_cert_from_another_ca_fails_the_handshake() {
        let server = start_server().await;
        let other_dir = tempfile::tempdir().unwrap();
        let other = Pki::ensure(other_dir.path(), &names()).unwrap();
        let tls = client_tls(
            &server.pki.ca_cert_pem,
            Some((&other.admin_cert_pem, &other.admin_key_pem)),
            &[b"http/1.1"],
        );
        // With TLS 1.3 the client learns of the rejection on its first read, so the failure
        // shows up either at connect or at the request.
        let outcome = get_http1(server.addr, tls, "/whoami", None).await;
        assert!(
            outcome.is_err(),
            "foreign certificate was accepted: {outcome:?}"
        );

        // The server is unharmed and still serves the right certificate.
        let (_, body) = get_http1(server.addr, admin_tls(&server.pki), "/whoami", None)
            .await
            .unwrap();
        assert!(body.starts_with("admin|"));
    }

    #[tokio::test]
    async fn garbage_instead_of_a_handshake_does_not_disturb_other_connections() {
        let server = start_server().await;
        let mut garbage = TcpStream::connect(server.addr).await.unwrap();
        garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        // A connection that never says anything stays open meanwhile.
        let _silent = TcpStream::connect(server.addr).await.unwrap();
        let (status, _) = get_http1(server.addr, admin_tls(&server.pki), "/livez", None)
            .await
            .unwrap();
        assert_eq!(status, http::StatusCode::OK);
    }

    #[tokio::test]
    async fn http2_is_negotiated_and_served() {
        let server = start_server().await;
        let tls = client_tls(
            &server.pki.ca_cert_pem,
            Some((&server.pki.admin_cert_pem, &server.pki.admin_key_pem)),
            &[b"h2", b"http/1.1"],
        );
        let stream = connect(server.addr, tls).await.unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        // Two requests multiplexed on the one connection.
        let uri = format!("https://{}/whoami", server.addr);
        let first = sender.send_request(request(&uri, None));
        let second = sender.send_request(request(&uri, None));
        let (first, second) = tokio::join!(first, second);
        for response in [first.unwrap(), second.unwrap()] {
            assert_eq!(response.version(), http::Version::HTTP_2);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"admin|system:masters,system:authenticated");
        }
    }

    #[tokio::test]
    async fn shutdown_stops_accepting_connections() {
        let server = start_server().await;
        let addr = server.addr;
        let tls = admin_tls(&server.pki);
        assert!(get_http1(addr, tls.clone(), "/livez", None).await.is_ok());
        tokio::time::timeout(Duration::from_secs(10), server.stop())
            .await
            .expect("serve did not return after shutdown")
            .unwrap();
        assert!(get_http1(addr, tls, "/livez", None).await.is_err());
    }

    #[tokio::test]
    async fn a_kube_client_from_the_written_kubeconfig_reaches_the_router() {
        let server = start_server().await;
        let path = server.dir.path().join("kubeconfig.yaml");
        write_kubeconfig(&path, &format!("https://{}", server.addr), &server.pki).unwrap();
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let livez = client
            .request_text(http::Request::get("/livez").body(vec![]).unwrap())
            .await
            .unwrap();
        assert_eq!(livez, "ok");
        let whoami = client
            .request_text(http::Request::get("/whoami").body(vec![]).unwrap())
            .await
            .unwrap();
        assert_eq!(whoami, "admin|system:masters,system:authenticated");
    }
}
