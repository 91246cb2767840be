//! gRPC probes: one `grpc.health.v1.Health/Check` call over plaintext HTTP/2 to the pod's IP,
//! success when the answer is SERVING (upstream's `pkg/probe/grpc`).
//!
//! The TCP connection is made from a thread inside the pod's network namespace (as the other
//! probes), then handed to tonic, so the HTTP/2 exchange itself runs on the agent's runtime.

use std::path::PathBuf;
use std::time::Duration;

use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::transport::Endpoint;
use tonic_prost::ProstCodec;

const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// `grpc.health.v1.HealthCheckRequest`, declared with prost's derive (no protoc at build time).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    #[prost(enumeration = "ServingStatus", tag = "1")]
    pub status: i32,
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ServingStatus {
    Unknown = 0,
    Serving = 1,
    NotServing = 2,
    ServiceUnknown = 3,
}

impl ServingStatus {
    /// The name the proto gives it, as upstream quotes it in probe messages.
    fn proto_name(self) -> &'static str {
        match self {
            ServingStatus::Unknown => "UNKNOWN",
            ServingStatus::Serving => "SERVING",
            ServingStatus::NotServing => "NOT_SERVING",
            ServingStatus::ServiceUnknown => "SERVICE_UNKNOWN",
        }
    }
}

/// One health check of `service` at `host:port` within `timeout`; `Err` carries upstream's
/// failure message.
pub async fn check(
    netns: Option<PathBuf>,
    host: String,
    port: u16,
    service: String,
    timeout: Duration,
) -> Result<(), String> {
    let addr = format!("{host}:{port}");
    let connected = {
        let host = host.clone();
        super::probes::in_netns(netns, move || {
            super::probes::connect(&host, port, timeout).and_then(|stream| {
                stream
                    .set_nonblocking(true)
                    .map_err(|e| format!("set nonblocking: {e}"))?;
                Ok(stream)
            })
        })
        .await
    };
    let stream =
        connected.map_err(|e| format!("error: failed to connect service at {addr:?}: {e}"))?;
    let stream = tokio::net::TcpStream::from_std(stream)
        .map_err(|e| format!("error: failed to connect service at {addr:?}: {e}"))?;
    let _ = stream.set_nodelay(true);
    match tokio::time::timeout(timeout, call(stream, &addr, service)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "timeout: health rpc did not complete within {timeout:?}"
        )),
    }
}

async fn call(stream: tokio::net::TcpStream, addr: &str, service: String) -> Result<(), String> {
    // The connection is already made: the connector hands it over once.
    let mut connection = Some(hyper_util::rt::TokioIo::new(stream));
    let connector = tower::service_fn(move |_: http::Uri| {
        let io = connection.take();
        async move { io.ok_or_else(|| std::io::Error::other("the probe connection was used")) }
    });
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("error: failed to connect service at {addr:?}: {e}"))?
        .user_agent("kube-probe/1.35")
        .map_err(|e| format!("error: failed to connect service at {addr:?}: {e}"))?;
    let channel = endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| format!("error: failed to connect service at {addr:?}: {e}"))?;
    let mut grpc = Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| format!("error: failed to connect service at {addr:?}: {e}"))?;
    let response = grpc
        .unary(
            tonic::Request::new(HealthCheckRequest { service }),
            PathAndQuery::from_static(CHECK_PATH),
            ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default(),
        )
        .await;
    let status = match response {
        Ok(response) => response.into_inner().status(),
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            return Err(format!(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                status.message()
            ))
        }
        Err(status) => return Err(format!("error: health rpc probe failed: {status}")),
    };
    judge(status)
}

fn judge(status: ServingStatus) -> Result<(), String> {
    match status {
        ServingStatus::Serving => Ok(()),
        other => Err(format!(
            "service unhealthy (responded with {:?})",
            other.proto_name()
        )),
    }
}

/// A gRPC health server for tests: plain HTTP/2 with hyper, statuses per service name that the
/// test changes while it runs.
#[cfg(test)]
pub(crate) mod test_server {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use bytes::{BufMut, Bytes, BytesMut};
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use prost::Message;

    use super::{HealthCheckRequest, HealthCheckResponse, ServingStatus};

    pub type Statuses = Arc<Mutex<HashMap<String, ServingStatus>>>;

    /// Serves on `listener` until the runtime ends.
    pub async fn serve(listener: tokio::net::TcpListener, statuses: Statuses) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let statuses = statuses.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let statuses = statuses.clone();
                    async move { answer(request, statuses).await }
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
            });
        }
    }

    type Body = StreamBody<
        futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>>,
    >;

    async fn answer(
        request: http::Request<hyper::body::Incoming>,
        statuses: Statuses,
    ) -> Result<http::Response<Body>, std::convert::Infallible> {
        let path = request.uri().path().to_string();
        let body = request
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut frames = Vec::new();
        let mut trailers = http::HeaderMap::new();
        let known = body
            .get(5..)
            .and_then(|m| HealthCheckRequest::decode(m).ok())
            .and_then(|r| statuses.lock().ok()?.get(&r.service).copied());
        match (path.as_str(), known) {
            ("/grpc.health.v1.Health/Check", Some(status)) => {
                let message = HealthCheckResponse {
                    status: status as i32,
                }
                .encode_to_vec();
                let mut framed = BytesMut::new();
                framed.put_u8(0);
                framed.put_u32(message.len() as u32);
                framed.put_slice(&message);
                frames.push(Ok(Frame::data(framed.freeze())));
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            }
            ("/grpc.health.v1.Health/Check", None) => {
                trailers.insert("grpc-status", http::HeaderValue::from_static("5"));
            }
            _ => {
                trailers.insert("grpc-status", http::HeaderValue::from_static("12"));
            }
        }
        frames.push(Ok(Frame::trailers(trailers)));
        let mut response = http::Response::new(StreamBody::new(futures::stream::iter(frames)));
        response.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/grpc"),
        );
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_serving_is_healthy() {
        assert_eq!(judge(ServingStatus::Serving), Ok(()));
        assert_eq!(
            judge(ServingStatus::NotServing),
            Err("service unhealthy (responded with \"NOT_SERVING\")".to_string())
        );
    }

    #[tokio::test]
    async fn a_health_server_is_asked_about_the_named_service() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let statuses = test_server::Statuses::default();
        statuses
            .lock()
            .unwrap()
            .insert(String::new(), ServingStatus::Serving);
        statuses
            .lock()
            .unwrap()
            .insert("db".into(), ServingStatus::NotServing);
        tokio::spawn(test_server::serve(listener, statuses.clone()));
        let t = Duration::from_secs(2);
        let host = "127.0.0.1".to_string();
        assert_eq!(
            check(None, host.clone(), port, String::new(), t).await,
            Ok(())
        );
        let db = check(None, host.clone(), port, "db".into(), t).await;
        assert!(db.unwrap_err().contains("NOT_SERVING"));
        let unknown = check(None, host.clone(), port, "nope".into(), t).await;
        assert!(unknown.unwrap_err().contains("health rpc probe failed"));
        statuses
            .lock()
            .unwrap()
            .insert("db".into(), ServingStatus::Serving);
        assert_eq!(check(None, host, port, "db".into(), t).await, Ok(()));
    }

    #[tokio::test]
    async fn a_closed_port_fails_to_connect() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let failed = check(
            None,
            "127.0.0.1".into(),
            port,
            String::new(),
            Duration::from_secs(1),
        )
        .await;
        assert!(failed.unwrap_err().contains("failed to connect service"));
    }
}
