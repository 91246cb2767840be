//! Admission webhooks: a real HTTPS webhook server in the test process (inside the test's network
//! namespace, with its own CA) registered with berth, driven by the real kubectl. Needs root
//! (network namespaces); CI runs as root.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};

use common::netns::Netns;
use common::server::BerthServer;
use common::wait_until;

/// The DNS name the service-reference test's webhook is reached by.
const SERVICE_NAME: &str = "hook-svc.default.svc";

/// An HTTPS admission webhook answering on 127.0.0.1 inside a netns, stopped on drop.
///
/// Paths: `/validate` refuses objects labelled `deny=yes` (403), `/mutate` adds the label
/// `mutated=yes` with a JSON patch, `/slow` answers after five seconds.
struct WebhookServer {
    port: u16,
    ca_pem: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WebhookServer {
    fn start(netns: &str) -> WebhookServer {
        let (ca_pem, cert_pem, key_pem) = certificates();
        let tls = server_tls(&cert_pem, &key_pem);
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
            .expect("the webhook server listens");
        WebhookServer {
            port,
            ca_pem,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.ca_pem)
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A CA and a serving certificate for 127.0.0.1 and the service name, all PEM.
fn certificates() -> (String, String, String) {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::from_ca_cert_pem(&ca.pem(), ca_key).expect("issuer");
    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec![SERVICE_NAME.to_string()]).expect("params");
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let cert = params.signed_by(&key, &issuer).expect("server cert");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

fn server_tls(cert_pem: &str, key_pem: &str) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
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
    loop {
        let tcp = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(answer);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let path = request.uri().path().to_string();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let uid = review["request"]["uid"].clone();
    let object = &review["request"]["object"];
    let response = match path.as_str() {
        "/validate" if object["metadata"]["labels"]["deny"] == "yes" => json!({
            "uid": uid, "allowed": false,
            "status": {"code": 403, "reason": "Forbidden", "message": "objects labelled deny=yes are not welcome"}
        }),
        "/mutate" => {
            let patch = if object["metadata"]["labels"].is_object() {
                json!([{"op": "add", "path": "/metadata/labels/mutated", "value": "yes"}])
            } else {
                json!([{"op": "add", "path": "/metadata/labels", "value": {"mutated": "yes"}}])
            };
            json!({
                "uid": uid, "allowed": true, "patchType": "JSONPatch",
                "patch": base64::engine::general_purpose::STANDARD.encode(patch.to_string()),
            })
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            json!({"uid": uid, "allowed": true})
        }
        _ => json!({"uid": uid, "allowed": true}),
    };
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response});
    Ok(hyper::Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(review.to_string())))
        .expect("response"))
}

fn webhook(name: &str, client_config: Value, extra: Value) -> Value {
    let mut hook = json!({
        "name": name,
        "clientConfig": client_config,
        "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}],
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    });
    if let (Some(hook), Some(extra)) = (hook.as_object_mut(), extra.as_object()) {
        hook.extend(extra.clone());
    }
    hook
}

fn configuration(kind: &str, name: &str, webhooks: Vec<Value>) -> String {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "webhooks": webhooks,
    })
    .to_string()
}

fn configmap(namespace: &str, name: &str, labels: Value) -> String {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": {"k": "v"}})
    .to_string()
}

fn apply(server: &BerthServer, manifest: &str) {
    let out = server.kubectl_stdin(&["apply", "-f", "-"], manifest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates a ConfigMap; Ok(stdout) or Err(stderr).
fn create(server: &BerthServer, manifest: &str) -> Result<String, String> {
    let out = server.kubectl_stdin(&["create", "-f", "-", "-o", "json"], manifest);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Configurations reach admission through a watch: wait until a probe shows `took_effect`.
fn wait_for_effect(
    server: &BerthServer,
    probe: impl Fn(&str) -> String,
    took_effect: impl Fn(&Result<String, String>) -> bool,
) {
    let mut n = 0;
    let ok = wait_until(Duration::from_secs(20), || {
        n += 1;
        let result = create(server, &probe(&format!("probe-{n}")));
        took_effect(&result)
    });
    assert!(ok, "the webhook configuration never took effect");
}

#[test]
fn a_validating_webhook_denies_and_a_mutating_one_labels_within_their_namespaces() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let hooks = WebhookServer::start(&ns.name);
    apply(
        &server,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "checked", "labels": {"webhooks": "on"}}}).to_string(),
    );
    apply(
        &server,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "unchecked"}})
            .to_string(),
    );
    let scoped = json!({"namespaceSelector": {"matchLabels": {"webhooks": "on"}}});
    apply(
        &server,
        &configuration(
            "ValidatingWebhookConfiguration",
            "deny",
            vec![webhook(
                "deny.example.com",
                json!({"url": hooks.url("/validate"), "caBundle": hooks.ca_bundle()}),
                scoped.clone(),
            )],
        ),
    );
    apply(
        &server,
        &configuration(
            "MutatingWebhookConfiguration",
            "label",
            vec![webhook(
                "label.example.com",
                json!({"url": hooks.url("/mutate"), "caBundle": hooks.ca_bundle()}),
                scoped,
            )],
        ),
    );
    wait_for_effect(
        &server,
        |name| configmap("checked", name, json!({"deny": "yes"})),
        |r| r.is_err(),
    );

    let denied = create(
        &server,
        &configmap("checked", "refused", json!({"deny": "yes"})),
    )
    .expect_err("the validating webhook refuses");
    assert!(
        denied.contains(
            "admission webhook \"deny.example.com\" denied the request: objects labelled deny=yes are not welcome"
        ),
        "{denied}"
    );
    assert!(denied.contains("(Forbidden)"), "{denied}");

    let created: Value = serde_json::from_str(
        &create(
            &server,
            &configmap("checked", "welcome", json!({"team": "a"})),
        )
        .expect("allowed"),
    )
    .expect("json");
    assert_eq!(created["metadata"]["labels"]["mutated"], "yes");
    assert_eq!(created["metadata"]["labels"]["team"], "a");

    // Updates go through both too: relabelling to deny=yes is refused.
    let relabel = server.kubectl(&["label", "-n", "checked", "configmap", "welcome", "deny=yes"]);
    assert!(!relabel.status.success());

    // Outside the selected namespace neither webhook is called.
    let elsewhere: Value = serde_json::from_str(
        &create(
            &server,
            &configmap("unchecked", "free", json!({"deny": "yes"})),
        )
        .expect("not selected"),
    )
    .expect("json");
    assert!(elsewhere["metadata"]["labels"].get("mutated").is_none());
    drop(hooks);
}

#[test]
fn failure_policy_and_timeout_decide_when_the_webhook_cannot_answer() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let hooks = WebhookServer::start(&ns.name);
    // A port nothing listens on: a stopped webhook server.
    let stopped_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let stopped = json!({"url": format!("https://127.0.0.1:{stopped_port}/validate"), "caBundle": hooks.ca_bundle()});
    let only = |case: &str| json!({"objectSelector": {"matchLabels": {"case": case}}});
    let mut fail = only("fail");
    fail["failurePolicy"] = json!("Fail");
    let mut ignore = only("ignore");
    ignore["failurePolicy"] = json!("Ignore");
    let mut slow = only("slow");
    slow["failurePolicy"] = json!("Fail");
    slow["timeoutSeconds"] = json!(1);
    apply(
        &server,
        &configuration(
            "ValidatingWebhookConfiguration",
            "unreachable",
            vec![
                webhook("fail.example.com", stopped.clone(), fail),
                webhook("ignore.example.com", stopped, ignore),
                webhook(
                    "slow.example.com",
                    json!({"url": hooks.url("/slow"), "caBundle": hooks.ca_bundle()}),
                    slow,
                ),
            ],
        ),
    );
    wait_for_effect(
        &server,
        |name| configmap("default", name, json!({"case": "fail"})),
        |r| r.is_err(),
    );

    let failed = create(&server, &configmap("default", "f", json!({"case": "fail"})))
        .expect_err("Fail refuses when the webhook is down");
    assert!(
        failed.contains("failed calling webhook \"fail.example.com\"")
            && failed.contains("connection refused"),
        "{failed}"
    );
    create(
        &server,
        &configmap("default", "i", json!({"case": "ignore"})),
    )
    .expect("Ignore admits when the webhook is down");

    let started = Instant::now();
    let timed_out = create(&server, &configmap("default", "s", json!({"case": "slow"})))
        .expect_err("a webhook slower than its timeout fails the request");
    let took = started.elapsed();
    assert!(
        timed_out.contains("context deadline exceeded"),
        "{timed_out}"
    );
    assert!(
        took < Duration::from_secs(4),
        "took {took:?}, the timeout is 1s"
    );
    drop(hooks);
}

#[test]
fn a_service_reference_reaches_the_webhook_through_its_endpoint_slice() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let hooks = WebhookServer::start(&ns.name);
    // A selector-less Service whose EndpointSlice points at the test's server.
    apply(
        &server,
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hook-svc", "namespace": "default"},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": hooks.port}]}})
        .to_string(),
    );
    apply(
        &server,
        &json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "hook-svc-manual", "namespace": "default", "labels": {"kubernetes.io/service-name": "hook-svc"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": hooks.port, "protocol": "TCP"}]})
        .to_string(),
    );
    apply(
        &server,
        &configuration(
            "ValidatingWebhookConfiguration",
            "by-service",
            vec![webhook(
                "service.example.com",
                json!({"service": {"namespace": "default", "name": "hook-svc", "port": 443, "path": "/validate"},
                    "caBundle": hooks.ca_bundle()}),
                json!({}),
            )],
        ),
    );
    wait_for_effect(
        &server,
        |name| configmap("default", name, json!({"deny": "yes"})),
        |r| r.as_ref().is_err_and(|e| e.contains("denied the request")),
    );
    let denied = create(&server, &configmap("default", "x", json!({"deny": "yes"})))
        .expect_err("refused through the service");
    assert!(
        denied.contains("admission webhook \"service.example.com\" denied the request"),
        "{denied}"
    );
    create(&server, &configmap("default", "y", json!({"deny": "no"})))
        .expect("allowed through the service");
    // Webhook configurations themselves never go to webhooks: the broken one can be removed.
    server.kubectl_ok(&["delete", "validatingwebhookconfiguration", "by-service"]);
    drop(hooks);
}
