//! A minimal etcd v3 gRPC client: the KV calls (Range, Txn, Compact) and Watch, over one tonic
//! channel that balances over the configured endpoints.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_prost::ProstCodec;

use super::proto;

/// How long one call may take before it fails; etcd answers in milliseconds when healthy, and a
/// hung call must not hold the store's single writer forever.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no etcd endpoint given")]
    NoEndpoint,
    #[error("etcd endpoint {endpoint}: {detail}")]
    BadEndpoint { endpoint: String, detail: String },
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--datastore-certfile and --datastore-keyfile go together")]
    HalfIdentity,
}

/// Where etcd is and how to prove who berth is to it.
#[derive(Clone, Debug, Default)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// How many times a call refused at connect is tried: the balancer may pick a dead member's
/// address until it notices, and a refused connection means the request was never sent.
const CONNECT_ATTEMPTS: usize = 3;

#[derive(Clone)]
pub struct Client {
    grpc: Grpc<Channel>,
}

impl Client {
    /// Builds the channel; connections are made lazily (and remade) by tonic. Must be called
    /// inside the tokio runtime that will drive the connections.
    pub fn new(config: &EtcdConfig) -> Result<Client, ClientError> {
        if config.endpoints.is_empty() {
            return Err(ClientError::NoEndpoint);
        }
        let tls = tls_config(config)?;
        let mut endpoints = Vec::new();
        for url in &config.endpoints {
            let bad = |detail: String| ClientError::BadEndpoint {
                endpoint: url.clone(),
                detail,
            };
            let mut endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| bad(e.to_string()))?
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(CALL_TIMEOUT)
                .tcp_nodelay(true)
                // Notices a dead member behind a silent network, so watches move on.
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true);
            if url.starts_with("https://") {
                endpoint = endpoint
                    .tls_config(tls.clone())
                    .map_err(|e| bad(e.to_string()))?;
            }
            endpoints.push(endpoint);
        }
        let channel = if endpoints.len() == 1 {
            endpoints.remove(0).connect_lazy()
        } else {
            Channel::balance_list(endpoints.into_iter())
        };
        Ok(Client {
            grpc: Grpc::new(channel),
        })
    }

    async fn unary<Req, Resp>(
        &self,
        path: &'static str,
        request: Req,
    ) -> Result<Resp, tonic::Status>
    where
        Req: prost::Message + Clone + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut attempt = 1;
        loop {
            match self.unary_once(path, request.clone()).await {
                Err(status) if attempt < CONNECT_ATTEMPTS && refused_at_connect(&status) => {
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn unary_once<Req, Resp>(
        &self,
        path: &'static str,
        request: Req,
    ) -> Result<Resp, tonic::Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.grpc.clone();
        grpc.ready().await.map_err(unavailable)?;
        let response = grpc
            .unary(
                tonic::Request::new(request),
                PathAndQuery::from_static(path),
                ProstCodec::default(),
            )
            .await?;
        Ok(response.into_inner())
    }

    pub async fn range(
        &self,
        request: proto::RangeRequest,
    ) -> Result<proto::RangeResponse, tonic::Status> {
        self.unary("/etcdserverpb.KV/Range", request).await
    }

    pub async fn txn(
        &self,
        request: proto::TxnRequest,
    ) -> Result<proto::TxnResponse, tonic::Status> {
        self.unary("/etcdserverpb.KV/Txn", request).await
    }

    pub async fn compact(&self, revision: i64) -> Result<proto::CompactionResponse, tonic::Status> {
        let request = proto::CompactionRequest {
            revision,
            physical: false,
        };
        self.unary("/etcdserverpb.KV/Compact", request).await
    }

    /// Opens a watch stream with one create request; the request side stays open for as long
    /// as the stream is read, since etcd ends the watch when it closes.
    pub async fn watch(
        &self,
        create: proto::WatchCreateRequest,
    ) -> Result<tonic::Streaming<proto::WatchResponse>, tonic::Status> {
        use futures::StreamExt;
        let request = proto::WatchRequest {
            request_union: Some(proto::watch_request::RequestUnion::CreateRequest(create)),
        };
        let requests =
            futures::stream::once(async move { request }).chain(futures::stream::pending());
        let mut grpc = self.grpc.clone();
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let response = grpc
            .streaming(
                tonic::Request::new(requests),
                PathAndQuery::from_static("/etcdserverpb.Watch/Watch"),
                ProstCodec::default(),
            )
            .await?;
        Ok(response.into_inner())
    }
}

/// A channel that cannot take a call, kept as the status's source so the cause stays visible.
fn unavailable(error: tonic::transport::Error) -> tonic::Status {
    let mut status = tonic::Status::unavailable(error.to_string());
    status.set_source(std::sync::Arc::new(error));
    status
}

/// True when the call failed because no connection could be made (a member that is down), so
/// the request never reached etcd and trying it again cannot apply it twice.
fn refused_at_connect(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = error.source();
    }
    false
}

fn tls_config(config: &EtcdConfig) -> Result<ClientTlsConfig, ClientError> {
    let mut tls = ClientTlsConfig::new();
    if let Some(ca) = &config.ca_file {
        tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        (None, None) => {}
        _ => return Err(ClientError::HalfIdentity),
    }
    Ok(tls)
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}

/// The end of the key range holding every key that starts with `prefix` (etcd's "prefix end":
/// the prefix with its last byte below 0xff incremented; all of the keyspace if none is).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_end_is_the_first_key_after_every_key_with_the_prefix() {
        assert_eq!(prefix_end(b"/registry/pods/"), b"/registry/pods0");
        assert_eq!(prefix_end(b"a\xff\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[tokio::test]
    async fn a_call_refused_at_connect_is_recognised_as_never_sent() {
        // A port nobody listens on: the connection is refused before any request is written.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let client = Client::new(&EtcdConfig {
            endpoints: vec![format!("http://127.0.0.1:{port}")],
            ..Default::default()
        })
        .expect("client");
        let status = client
            .unary_once::<_, proto::RangeResponse>(
                "/etcdserverpb.KV/Range",
                proto::RangeRequest::default(),
            )
            .await
            .expect_err("nothing listens");
        assert!(refused_at_connect(&status), "{status:?}");
        assert!(!refused_at_connect(&tonic::Status::unavailable(
            "etcdserver: leader changed"
        )));
    }

    #[test]
    fn a_certificate_without_its_key_is_refused() {
        let config = EtcdConfig {
            endpoints: vec!["https://127.0.0.1:2379".into()],
            cert_file: Some(PathBuf::from("/nonexistent/cert.pem")),
            ..EtcdConfig::default()
        };
        assert!(matches!(
            tls_config(&config),
            Err(ClientError::HalfIdentity)
        ));
    }
}
