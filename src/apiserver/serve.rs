//! PLACEHOLDER with the agreed interface; replaced by the real TLS server.
#![allow(unused_variables)]
use super::authn::Authenticator;
use std::future::Future;
use std::sync::Arc;
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    authn: Arc<Authenticator>,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    todo!()
}
