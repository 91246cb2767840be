//! gRPC probes: the agent asks `grpc.health.v1.Health/Check` at the pod's IP. The test serves
//! the health service itself, from a thread that joined the pod's network namespace, and
//! switches the answers while berth probes: readiness follows SERVING, a liveness failure
//! restarts the container.
//!
//! Needs root (network namespaces, cgroups, mounts), as in CI.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cluster::Cluster;
use common::netns::Netns;
use common::wait_until;

const PORT: u16 = 9555;

/// `grpc.health.v1.HealthCheckResponse.ServingStatus` values.
const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;

type Statuses = Arc<Mutex<HashMap<String, i32>>>;

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

fn ready(pod: &serde_json::Value) -> bool {
    pod["status"]["containerStatuses"][0]["ready"] == true
}

fn restarts(pod: &serde_json::Value) -> i64 {
    pod["status"]["containerStatuses"][0]["restartCount"]
        .as_i64()
        .unwrap_or(0)
}

#[test]
fn grpc_probes_gate_readiness_and_restart_an_unhealthy_container() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let grpc = |service: &str, extra: serde_json::Value| {
        let mut probe = serde_json::json!({"grpc": {"port": PORT, "service": service},
            "periodSeconds": 1, "failureThreshold": 2});
        for (k, v) in extra.as_object().into_iter().flatten() {
            probe[k] = v.clone();
        }
        probe
    };
    cluster.create(cluster.pod(
        "health",
        serde_json::json!({"containers": [{"name": "main", "image": "busybox",
            "command": ["sleep", "3600"],
            "readinessProbe": grpc("", serde_json::json!({"failureThreshold": 1})),
            "livenessProbe": grpc("live", serde_json::json!({"initialDelaySeconds": 10}))}]}),
    ));
    // Running: the shim has joined the pod's network namespace and started the container.
    let uid = cluster.wait_for("health", "Running", |p| p["status"]["phase"] == "Running")
        ["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // The pod's shim lives in the pod's network namespace (the pin under the data dir is a
    // mount in berth's own mount namespace, which the test does not see).
    let pods = cluster.pods_dir();
    let mut pid = String::new();
    assert!(
        wait_until(Duration::from_secs(60), || {
            pid = common::server::shim_pid(&pods, &uid)
                .map(|p| p.to_string())
                .unwrap_or_default();
            !pid.is_empty()
        }),
        "the pod's shim started"
    );
    let netns = PathBuf::from(format!("/proc/{}/ns/net", pid.trim()));
    let statuses: Statuses = Arc::new(Mutex::new(HashMap::from([
        (String::new(), NOT_SERVING),
        ("live".to_string(), SERVING),
    ])));
    let server = HealthServer::start(netns, statuses.clone());

    // Running, but not Ready while the server says NOT_SERVING.
    std::thread::sleep(Duration::from_secs(3));
    let pod = cluster.get("health");
    assert!(!ready(&pod), "not ready while NOT_SERVING: {pod:#}");

    // SERVING turns it Ready, NOT_SERVING takes that back.
    statuses.lock().unwrap().insert(String::new(), SERVING);
    let switched = std::time::Instant::now();
    cluster.wait_for("health", "Ready", ready);
    eprintln!("SERVING → Ready in {:?}", switched.elapsed());
    statuses.lock().unwrap().insert(String::new(), NOT_SERVING);
    let pod = cluster.wait_for("health", "not Ready again", |p| !ready(p));
    assert_eq!(restarts(&pod), 0, "readiness never restarts: {pod:#}");

    // The liveness service failing twice restarts the container.
    statuses
        .lock()
        .unwrap()
        .insert("live".to_string(), NOT_SERVING);
    let pod = cluster.wait_for("health", "a restart", |p| restarts(p) >= 1);
    statuses.lock().unwrap().insert("live".to_string(), SERVING);
    assert!(
        pod["status"]["containerStatuses"][0]["lastState"]["terminated"].is_object(),
        "the killed instance is the last state: {pod:#}"
    );

    // Healthy again, the restarted container turns Ready.
    statuses.lock().unwrap().insert(String::new(), SERVING);
    let pod = cluster.wait_for("health", "Ready after the restart", ready);
    assert!(restarts(&pod) >= 1);
    drop(server);
}

/// The gRPC health service on `PORT` inside a pod's network namespace, stopped when dropped.
struct HealthServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HealthServer {
    fn start(netns: PathBuf, statuses: Statuses) -> HealthServer {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let file = std::fs::File::open(&netns).expect("open the pod's netns");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("join it");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(("0.0.0.0", PORT))
                    .await
                    .expect("bind the health port in the pod");
                let _ = bound_tx.send(());
                tokio::select! {
                    _ = serve(listener, statuses) => {}
                    _ = stopped => {}
                }
            });
        });
        bound_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the health server listens");
        HealthServer {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(listener: tokio::net::TcpListener, statuses: Statuses) {
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
            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

type Frame = Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>;
type Body = http_body_util::StreamBody<futures::stream::Iter<std::vec::IntoIter<Frame>>>;

/// A unary gRPC answer: a length-prefixed message, then `grpc-status` in the trailers.
async fn answer(
    request: http::Request<hyper::body::Incoming>,
    statuses: Statuses,
) -> Result<http::Response<Body>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    use prost::Message;
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let service = body
        .get(5..)
        .and_then(|m| HealthCheckRequest::decode(m).ok())
        .map(|r| r.service)
        .unwrap_or_default();
    let status = statuses.lock().unwrap().get(&service).copied();
    let mut frames: Vec<Frame> = Vec::new();
    let mut trailers = http::HeaderMap::new();
    match status {
        Some(status) => {
            let message = HealthCheckResponse { status }.encode_to_vec();
            let mut framed = vec![0u8];
            framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
            framed.extend_from_slice(&message);
            frames.push(Ok(hyper::body::Frame::data(framed.into())));
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        }
        None => {
            trailers.insert("grpc-status", http::HeaderValue::from_static("5"));
        }
    }
    frames.push(Ok(hyper::body::Frame::trailers(trailers)));
    Ok(http::Response::builder()
        .header("content-type", "application/grpc")
        .body(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )))
        .unwrap())
}
