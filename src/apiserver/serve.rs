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
        async move {
            match user {
                Some(user) => {
                    request.extensions_mut().insert(user);
                    app.oneshot(request).await
                }
                None => Ok::<_, Infallible>(unauthorized()),
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
