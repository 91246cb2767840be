//! API aggregation: a real HTTPS aggregated API server in the test process (inside the test's
//! network namespace, with its own serving CA, trusting only berth's front-proxy CA as published
//! in `kube-system/extension-apiserver-authentication`), registered with an APIService and
//! driven by the real kubectl. Needs root (network namespaces); CI runs as root.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};

use common::netns::Netns;
use common::server::BerthServer;
use common::wait_until;

const GROUP: &str = "aggregated.berth.test";
/// The Service the APIService names; the serving certificate is for its DNS name.
const SERVICE: &str = "agg-svc";
const SERVING_NAME: &str = "agg-svc.default.svc";

type ResponseBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// An aggregated API server answering on 127.0.0.1 inside a netns, stopped on drop.
///
/// It serves `widgets` in `GROUP/v1` (list, get, watch) and `nodes` in `metrics.k8s.io/v1beta1`,
/// and describes the identity the proxy claimed (`X-Remote-*`) in what it returns.
struct AggregatedServer {
    port: u16,
    ca_pem: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AggregatedServer {
    /// Requires client certificates signed by `front_proxy_ca_pem`.
    fn start(netns: &str, front_proxy_ca_pem: &str) -> AggregatedServer {
        AggregatedServer::start_with(netns, front_proxy_ca_pem, certificates())
    }

    /// Like `start`, serving with `(ca, cert, key)`.
    fn start_with(
        netns: &str,
        front_proxy_ca_pem: &str,
        (ca_pem, cert_pem, key_pem): (String, String, String),
    ) -> AggregatedServer {
        let tls = server_tls(&cert_pem, &key_pem, front_proxy_ca_pem);
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let path = std::path::Path::new("/run/netns").join(netns);
        let thread = std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open the netns");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("join the netns");
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(serve(tls, port_tx, stopped));
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the aggregated server listens");
        AggregatedServer {
            port,
            ca_pem,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.ca_pem)
    }
}

impl Drop for AggregatedServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A CA and a serving certificate for the Service's DNS name, all PEM.
fn certificates() -> (String, String, String) {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::from_ca_cert_pem(&ca.pem(), ca_key).expect("issuer");
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec![SERVING_NAME.to_string()]).expect("params");
    let cert = params.signed_by(&key, &issuer).expect("server cert");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

fn server_tls(cert_pem: &str, key_pem: &str, client_ca_pem: &str) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        roots
            .add(cert.expect("front-proxy CA"))
            .expect("add the CA");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("client verifier");
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert")],
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key"),
        )
        .expect("server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

async fn serve(
    tls: Arc<rustls::ServerConfig>,
    port_tx: std::sync::mpsc::Sender<u16>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    port_tx.send(port).expect("report the port");
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut connections = 0u64;
    loop {
        let tcp = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
        };
        let acceptor = acceptor.clone();
        connections += 1;
        // Which server and which of its connections answered, for the proxy's pooling and
        // spreading to be seen.
        let backend = format!("{port}/{connections}");
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            // The verifier checked the chain; upstream also requires an allowed common name.
            let client_cn = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|cert| common_name(cert.as_ref()));
            let service = hyper::service::service_fn(move |request| {
                answer(request, client_cn.clone(), backend.clone())
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

fn full(value: Value) -> ResponseBody {
    Full::new(Bytes::from(value.to_string())).boxed()
}

async fn answer(
    request: hyper::Request<Incoming>,
    client_cn: Option<String>,
    backend: String,
) -> Result<hyper::Response<ResponseBody>, std::convert::Infallible> {
    let header = |name: &str| -> Vec<String> {
        request
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    };
    let user = header("x-remote-user").join(",");
    let mut extra_names: Vec<String> = request
        .headers()
        .keys()
        .map(|name| name.as_str().to_string())
        .filter(|name| name.starts_with("x-remote-extra-"))
        .collect();
    extra_names.sort();
    extra_names.dedup();
    let extra: Vec<String> = extra_names
        .iter()
        .flat_map(|name| header(name).into_iter().map(move |v| format!("{name}={v}")))
        .collect();
    let identity = json!({
        "user": user,
        "groups": header("x-remote-group").join(","),
        "authorization": header("authorization").join(","),
        "proxy": client_cn.clone().unwrap_or_default(),
        "backend": backend,
        "extra": extra.join(","),
    });
    let reply = |status: u16, body: ResponseBody| {
        Ok(hyper::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(body)
            .expect("response"))
    };
    if client_cn.as_deref() != Some("front-proxy-client") || user.is_empty() {
        return reply(
            401,
            full(
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 401, "reason": "Unauthorized"}),
            ),
        );
    }
    let widget = |name: &str| {
        json!({"apiVersion": format!("{GROUP}/v1"), "kind": "Widget",
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z",
                         "annotations": {"identity": identity.to_string()}}})
    };
    let path = request.uri().path().to_string();
    let watch = request.uri().query().unwrap_or("").contains("watch=true");
    let widgets = format!("/apis/{GROUP}/v1/namespaces/default/widgets");
    match path.as_str() {
        p if p == format!("/apis/{GROUP}/v1") => reply(
            200,
            full(
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/v1"),
                "resources": [{"name": "widgets", "singularName": "widget", "namespaced": true, "kind": "Widget",
                               "verbs": ["get", "list", "watch"], "shortNames": ["wdg"]}]}),
            ),
        ),
        p if p == widgets && watch => {
            // Two events a moment apart, then the end of the stream: the proxy must pass each
            // on as it comes.
            let events = vec![
                json!({"type": "ADDED", "object": widget("first")}),
                json!({"type": "ADDED", "object": widget("second")}),
            ];
            let stream = futures::stream::unfold(events.into_iter(), |mut events| async move {
                let event = events.next()?;
                tokio::time::sleep(Duration::from_millis(200)).await;
                let frame = Frame::data(Bytes::from(format!("{event}\n")));
                Some((Ok::<_, std::convert::Infallible>(frame), events))
            });
            reply(200, StreamBody::new(stream).boxed())
        }
        p if p == widgets => reply(
            200,
            full(
                json!({"apiVersion": format!("{GROUP}/v1"), "kind": "WidgetList", "metadata": {},
                "items": [widget(&format!("widget-for-{user}"))]}),
            ),
        ),
        p if p.starts_with(&format!("{widgets}/")) => {
            let name = p.rsplit('/').next().unwrap_or("");
            reply(200, full(widget(name)))
        }
        "/apis/metrics.k8s.io/v1beta1" => reply(
            200,
            full(
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "metrics.k8s.io/v1beta1",
                "resources": [{"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]}]}),
            ),
        ),
        "/apis/metrics.k8s.io/v1beta1/nodes" => reply(
            200,
            full(
                json!({"kind": "NodeMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {},
                "items": [{"metadata": {"name": "from-the-aggregated-server"}, "timestamp": "2026-01-01T00:00:00Z",
                           "window": "10s", "usage": {"cpu": "1m", "memory": "1Ki"}}]}),
            ),
        ),
        _ => reply(
            404,
            full(
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound"}),
            ),
        ),
    }
}

fn apply(server: &BerthServer, manifest: &Value) {
    server.kubectl_stdin(&["apply", "-f", "-"], &manifest.to_string());
}

/// A selector-less Service on port 443 whose EndpointSlice points at `port` on 127.0.0.1.
fn service_to(server: &BerthServer, name: &str, port: u16, ready: bool) {
    apply(
        server,
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]}}),
    );
    apply(
        server,
        &json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-manual"), "namespace": "default", "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": ready}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}),
    );
}

fn api_service(group: &str, version: &str, service: &str, ca_bundle: &str) -> Value {
    json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": format!("{version}.{group}")},
        "spec": {"group": group, "version": version, "groupPriorityMinimum": 1000, "versionPriority": 15,
                 "service": {"namespace": "default", "name": service, "port": 443}, "caBundle": ca_bundle}})
}

/// The APIService's Available condition as `status/reason`, read without discovery (so that
/// kubectl's discovery cache is not filled before the group exists).
fn availability(server: &BerthServer, name: &str) -> String {
    let raw = server.kubectl(&[
        "get",
        "--raw",
        &format!("/apis/apiregistration.k8s.io/v1/apiservices/{name}"),
    ]);
    let object: Value = serde_json::from_slice(&raw.stdout).unwrap_or(Value::Null);
    let conditions = object["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    conditions
        .iter()
        .find(|c| c["type"] == "Available")
        .map(|c| {
            format!(
                "{}/{}",
                c["status"].as_str().unwrap_or(""),
                c["reason"].as_str().unwrap_or("")
            )
        })
        .unwrap_or_default()
}

fn wait_for_availability(server: &BerthServer, name: &str, expected: &str) {
    let mut last = String::new();
    let reached = wait_until(Duration::from_secs(40), || {
        last = availability(server, name);
        last == expected
    });
    assert!(reached, "{name} never became {expected}; last: {last:?}");
}

fn front_proxy_ca(server: &BerthServer) -> String {
    server.kubectl_ok(&[
        "get",
        "configmap",
        "-n",
        "kube-system",
        "extension-apiserver-authentication",
        "-o",
        "jsonpath={.data.requestheader-client-ca-file}",
    ])
}

#[test]
fn kubectl_reaches_an_aggregated_api_through_its_api_service() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let allowed = server.kubectl_ok(&[
        "get",
        "configmap",
        "-n",
        "kube-system",
        "extension-apiserver-authentication",
        "-o",
        "jsonpath={.data.requestheader-allowed-names} {.data.requestheader-username-headers}",
    ]);
    assert_eq!(allowed, r#"["front-proxy-client"] ["X-Remote-User"]"#);
    let backend = AggregatedServer::start(&ns.name, &front_proxy_ca(&server));
    service_to(&server, SERVICE, backend.port, true);
    apply(
        &server,
        &api_service(GROUP, "v1", SERVICE, &backend.ca_bundle()),
    );
    wait_for_availability(&server, &format!("v1.{GROUP}"), "True/Passed");

    let discovery = server.kubectl_ok(&["get", "--raw", &format!("/apis/{GROUP}/v1")]);
    assert!(discovery.contains("\"widgets\""), "{discovery}");
    let groups = server.kubectl_ok(&["get", "--raw", "/apis"]);
    assert!(groups.contains(&format!("\"{GROUP}/v1\"")), "{groups}");
    let group = server.kubectl_ok(&["get", "--raw", &format!("/apis/{GROUP}")]);
    assert!(group.contains("\"preferredVersion\""), "{group}");

    // kubectl's resource discovery is aggregated discovery: the resources come from the backend.
    let resources = server.kubectl_ok(&["api-resources", "--api-group", GROUP]);
    assert!(
        resources.contains("widgets") && resources.contains("wdg") && resources.contains("Widget"),
        "{resources}"
    );
    let listed = server.kubectl_ok(&["get", "widgets", "-n", "default"]);
    assert!(listed.contains("widget-for-admin"), "{listed}");

    // The backend saw berth's front-proxy certificate and the caller's identity, not its token.
    let got = server.kubectl_ok(&["get", "wdg", "probe", "-n", "default", "-o", "json"]);
    let widget: Value = serde_json::from_str(&got).expect("a widget");
    let identity: Value = serde_json::from_str(
        widget["metadata"]["annotations"]["identity"]
            .as_str()
            .expect("identity"),
    )
    .expect("identity JSON");
    assert_eq!(identity["user"], "admin");
    assert_eq!(identity["proxy"], "front-proxy-client");
    assert_eq!(identity["authorization"], "");
    let groups = identity["groups"].as_str().unwrap_or("");
    assert!(
        groups.contains("system:masters") && groups.contains("system:authenticated"),
        "{groups}"
    );

    assert_eq!(identity["extra"], "", "the admin has no extras");

    // A user's extras (impersonated here, with client-go's escaping of the key) reach the
    // backend as X-Remote-Extra-<escaped key> headers, one per value.
    let mut config: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(server.kubeconfig_path()).unwrap())
            .expect("the admin kubeconfig");
    let user = &mut config["users"][0]["user"];
    user["as"] = json!("bob");
    user["as-groups"] = json!(["system:masters"]);
    user["as-user-extra"] = json!({"scopes": ["view", "edit"], "example.org/team": ["blue"]});
    let impersonating = server.data_dir().join("extra.kubeconfig");
    std::fs::write(&impersonating, config.to_string()).unwrap();
    let got = server.kubectl_ok(&[
        "--kubeconfig",
        impersonating.to_str().unwrap(),
        "get",
        "--raw",
        &format!("/apis/{GROUP}/v1/namespaces/default/widgets/probe"),
    ]);
    let widget: Value = serde_json::from_str(&got).expect("a widget");
    let identity: Value = serde_json::from_str(
        widget["metadata"]["annotations"]["identity"]
            .as_str()
            .expect("identity"),
    )
    .expect("identity JSON");
    assert_eq!(identity["user"], "bob");
    assert_eq!(
        identity["extra"],
        "x-remote-extra-example.org%2fteam=blue,x-remote-extra-scopes=view,x-remote-extra-scopes=edit"
    );

    // A watch is streamed through.
    let watched = server.kubectl_ok(&[
        "get",
        "--raw",
        &format!("/apis/{GROUP}/v1/namespaces/default/widgets?watch=true"),
    ]);
    let events: Vec<&str> = watched.lines().collect();
    assert_eq!(events.len(), 2, "{watched}");
    assert!(events[1].contains("\"second\""), "{watched}");

    // A service-backed APIService for metrics.k8s.io takes over from berth's own metrics.
    apply(
        &server,
        &api_service("metrics.k8s.io", "v1beta1", SERVICE, &backend.ca_bundle()),
    );
    wait_for_availability(&server, "v1beta1.metrics.k8s.io", "True/Passed");
    let nodes = server.kubectl_ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"]);
    assert!(nodes.contains("from-the-aggregated-server"), "{nodes}");

    // Deleting the APIService gives the group back: it is no longer served.
    server.kubectl_ok(&["delete", "apiservice", &format!("v1.{GROUP}")]);
    let gone = wait_until(Duration::from_secs(20), || {
        !server
            .kubectl(&["get", "--raw", &format!("/apis/{GROUP}/v1")])
            .status
            .success()
    });
    assert!(
        gone,
        "the group is still served after its APIService was deleted"
    );
    drop(backend);
}

/// The `backend` (`<port>/<connection>`) that answered a get of a widget.
fn answering_backend(server: &BerthServer) -> String {
    let got = server.kubectl_ok(&[
        "get",
        "--raw",
        &format!("/apis/{GROUP}/v1/namespaces/default/widgets/probe"),
    ]);
    let widget: Value = serde_json::from_str(&got).expect("a widget");
    let identity: Value = serde_json::from_str(
        widget["metadata"]["annotations"]["identity"]
            .as_str()
            .expect("identity"),
    )
    .expect("identity JSON");
    identity["backend"].as_str().unwrap_or_default().to_string()
}

#[test]
fn requests_spread_over_the_ready_backends_on_reused_connections() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let front_proxy = front_proxy_ca(&server);
    // Two replicas of one aggregated server: one serving certificate, two ports.
    let certificates = certificates();
    let ca_pem = certificates.0.clone();
    let backends = [
        AggregatedServer::start_with(&ns.name, &front_proxy, certificates.clone()),
        AggregatedServer::start_with(&ns.name, &front_proxy, certificates),
    ];
    service_to(&server, SERVICE, backends[0].port, true);
    // The second replica's endpoint, in a slice of its own (its port differs).
    apply(
        &server,
        &json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{SERVICE}-second"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": SERVICE}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": backends[1].port, "protocol": "TCP"}]}),
    );
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&ca_pem);
    apply(&server, &api_service(GROUP, "v1", SERVICE, &ca_bundle));
    wait_for_availability(&server, &format!("v1.{GROUP}"), "True/Passed");

    let requests = 24;
    let answers: Vec<String> = (0..requests).map(|_| answering_backend(&server)).collect();
    let served_by = |backend: &AggregatedServer| {
        let prefix = format!("{}/", backend.port);
        answers.iter().filter(|a| a.starts_with(&prefix)).count()
    };
    let (first, second) = (served_by(&backends[0]), served_by(&backends[1]));
    assert_eq!(first + second, requests, "{answers:?}");
    assert!(
        first > 0 && second > 0,
        "both replicas answer: {first} and {second}"
    );
    // Sequential requests reuse the proxy's connections instead of opening one each.
    let mut connections = answers.clone();
    connections.sort();
    connections.dedup();
    assert!(
        connections.len() <= 6,
        "{} connections for {requests} requests: {answers:?}",
        connections.len()
    );
    drop(backends);
}

#[test]
fn an_unusable_backend_is_reported_in_the_condition_and_answered_with_503() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let name = format!("v1.{GROUP}");
    apply(&server, &api_service(GROUP, "v1", "missing-svc", ""));
    wait_for_availability(&server, &name, "False/ServiceNotFound");
    let refused = server.kubectl(&[
        "get",
        "--raw",
        &format!("/apis/{GROUP}/v1/namespaces/default/widgets"),
    ]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("ServiceUnavailable") || stderr.contains("service unavailable"),
        "{stderr}"
    );

    // The Service exists but no endpoint is ready.
    service_to(&server, "missing-svc", 9, false);
    wait_for_availability(&server, &name, "False/MissingEndpoints");

    // Ready, but nothing listens there: the discovery check fails.
    service_to(&server, "missing-svc", 9, true);
    wait_for_availability(&server, &name, "False/FailedDiscoveryCheck");
    let message = server.kubectl_ok(&[
        "get",
        "apiservice",
        &name,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Available\")].message}",
    ]);
    assert!(
        message.contains("failing or missing response from https://127.0.0.1:9"),
        "{message}"
    );
}
