//! Authorization overhead: GET of one ConfigMap through the real router, as a user whose access
//! comes from a RoleBinding while 1,000 other RoleBindings exist, against the admin's
//! `system:masters` fast path, interleaved in the same run. Both tests are timing figures, run on
//! demand with `--ignored --nocapture`: the first needs no root; the second drives a real
//! `berth server` (an optimised one when `BERTH_TEST_BINARY` names it) over HTTPS with
//! client certificates, from inside a test-made network namespace, so needs root.

mod common;

use std::time::{Duration, Instant};

use berth::apiserver::authn::UserInfo;
use berth::apiserver::rbac::Rbac;
use berth::apiserver::ApiServer;
use berth::registry::services::ServiceNetwork;
use berth::registry::{bootstrap, Registry};
use berth::store::{Store, StoreOptions};
use serde_json::json;
use tower::ServiceExt as _;

const BINDINGS: usize = 1_000;
const ROUNDS: usize = 3_000;

fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo {
        name: name.into(),
        uid: String::new(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

async fn post(router: &axum::Router, path: &str, body: serde_json::Value) {
    let request = http::Request::post(path)
        .header("content-type", "application/json")
        .extension(user("admin", &["system:masters", "system:authenticated"]))
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert!(
        response.status().is_success(),
        "POST {path}: {}",
        response.status()
    );
}

async fn timed_get(router: &axum::Router, as_user: &UserInfo) -> Duration {
    let request = http::Request::get("/api/v1/namespaces/default/configmaps/settings")
        .extension(as_user.clone())
        .body(axum::body::Body::empty())
        .unwrap();
    let started = Instant::now();
    let response = router.clone().oneshot(request).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 200);
    elapsed
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// A timing figure: its p99 on a shared machine is too noisy to gate CI on, so it runs on demand
/// (`--ignored --nocapture`) beside the other figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a timing figure: run on demand with --ignored --nocapture"]
async fn rbac_gets_with_a_thousand_role_bindings_cost_little_more_than_the_admin_fast_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("berth.redb"), StoreOptions::default()).unwrap();
    let config = berth::config::Config::default();
    let services =
        ServiceNetwork::parse(&config.network.service_cidr, config.network.node_port_range)
            .unwrap();
    let registry = Registry::new(store, services);
    bootstrap::ensure_system_objects(&registry, config.network.dns_ip)
        .await
        .unwrap();
    berth::apiserver::rbac::bootstrap::reconcile(&registry)
        .await
        .unwrap();
    let rbac = Rbac::start(registry.store()).unwrap();
    let api = ApiServer::new(registry, 3 * 1024 * 1024);
    api.enable_rbac(rbac.clone());
    api.set_ready();
    let router = api.router();

    post(
        &router,
        "/api/v1/namespaces/default/configmaps",
        json!({"metadata": {"name": "settings"}, "data": {"a": "b"}}),
    )
    .await;
    // No aggregation controller runs here, so view would be empty: a role of the bench's own.
    post(
        &router,
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        json!({"metadata": {"name": "bench-reader"},
               "rules": [{"apiGroups": [""], "resources": ["configmaps", "pods", "services"], "verbs": ["get", "list", "watch"]}]}),
    )
    .await;
    for i in 0..BINDINGS {
        // Spread over namespaces and subjects, a tenth of them in the namespace the GET is in.
        let namespace = if i % 10 == 0 {
            "default".to_string()
        } else {
            format!("team-{}", i % 50)
        };
        if i < 50 && namespace != "default" {
            post(
                &router,
                "/api/v1/namespaces",
                json!({"metadata": {"name": namespace}}),
            )
            .await;
        }
        let path =
            format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings");
        let body = json!({
            "metadata": {"name": format!("binding-{i}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "bench-reader"},
            "subjects": [{"kind": "User", "name": format!("user-{i}")}, {"kind": "Group", "name": format!("group-{}", i % 7)}],
        });
        post(&router, &path, body).await;
    }
    post(
        &router,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
        json!({"metadata": {"name": "reader"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "bench-reader"},
               "subjects": [{"kind": "User", "name": "reader"}]}),
    )
    .await;
    let reader = user("reader", &["group-3", "system:authenticated"]);
    let admin = user("admin", &["system:masters", "system:authenticated"]);
    // The index follows the store's watch: wait until it has the reader's binding.
    let ready = Instant::now();
    while Instant::now() - ready < Duration::from_secs(10) {
        let request = http::Request::get("/api/v1/namespaces/default/configmaps/settings")
            .extension(reader.clone())
            .body(axum::body::Body::empty())
            .unwrap();
        if router.clone().oneshot(request).await.unwrap().status() == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut as_reader = Vec::with_capacity(ROUNDS);
    let mut as_admin = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS + 200 {
        let (r, a) = (
            timed_get(&router, &reader).await,
            timed_get(&router, &admin).await,
        );
        // The first rounds warm caches and the allocator.
        if round >= 200 {
            as_reader.push(r);
            as_admin.push(a);
        }
    }
    as_reader.sort();
    as_admin.sort();
    let (r50, r99) = (percentile(&as_reader, 0.5), percentile(&as_reader, 0.99));
    let (a50, a99) = (percentile(&as_admin, 0.5), percentile(&as_admin, 0.99));
    let ratio50 = r50.as_secs_f64() / a50.as_secs_f64();
    let ratio99 = r99.as_secs_f64() / a99.as_secs_f64();
    println!(
        "GET with {BINDINGS} RoleBindings: RBAC p50 {r50:?} p99 {r99:?}; admin fast path p50 {a50:?} p99 {a99:?}; ratio p50 {ratio50:.3} p99 {ratio99:.3}"
    );
    // The goal is 1.2x; the p99 of a shared 2-core machine is noisy, so it gets some slack.
    assert!(ratio50 <= 1.2, "p50 ratio {ratio50:.3}");
    assert!(ratio99 <= 1.5, "p99 ratio {ratio99:.3}");
}

/// The admin kubeconfig with its user's certificate and key replaced by `user`'s.
fn kubeconfig_as(server: &common::server::BerthServer, user: &str) -> std::path::PathBuf {
    use base64::Engine;
    let (cert, key) = server.user_certificate(user, "group-3");
    let text = std::fs::read_to_string(server.kubeconfig_path()).unwrap();
    let mut config: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
    let encode = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
    let credentials = &mut config["users"][0]["user"];
    if let Some(fields) = credentials.as_object_mut() {
        fields.remove("client-certificate");
        fields.remove("client-key");
    }
    credentials["client-certificate-data"] = json!(encode(&cert));
    credentials["client-key-data"] = json!(encode(&key));
    let path = server.data_dir().join(format!("{user}.kubeconfig"));
    std::fs::write(&path, serde_yaml_ng::to_string(&config).unwrap()).unwrap();
    path
}

/// The same comparison end to end: HTTPS, client-certificate authentication, the real binary.
#[test]
#[ignore]
fn rbac_gets_against_the_server_binary_cost_little_more_than_the_admin_fast_path() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::Api;

    let ns = common::netns::Netns::new();
    let server = common::server::BerthServer::start(&ns);
    server.kubectl_ok(&["create", "configmap", "settings", "--from-literal=a=b"]);
    server.kubectl_ok(&[
        "create",
        "clusterrole",
        "bench-reader",
        "--verb=get,list,watch",
        "--resource=configmaps,pods,services",
    ]);
    let namespaces: Vec<serde_json::Value> = (0..50)
        .filter(|i| i % 10 != 0)
        .map(|i| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("team-{i}")}}))
        .collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": namespaces});
    assert!(server
        .kubectl_stdin(&["create", "-f", "-"], &list.to_string())
        .status
        .success());
    for chunk in (0..BINDINGS).collect::<Vec<_>>().chunks(250) {
        let bindings: Vec<serde_json::Value> = chunk
            .iter()
            .map(|i| {
                let namespace = if i % 10 == 0 {
                    "default".to_string()
                } else {
                    format!("team-{}", i % 50)
                };
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": format!("binding-{i}"), "namespace": namespace},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "bench-reader"},
                    "subjects": [{"kind": "User", "name": format!("user-{i}")},
                                 {"kind": "Group", "name": format!("group-{}", i % 7)}]})
            })
            .collect();
        let list = json!({"apiVersion": "v1", "kind": "List", "items": bindings});
        let out = server.kubectl_stdin(&["create", "-f", "-"], &list.to_string());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    server.kubectl_ok(&[
        "create",
        "rolebinding",
        "reader",
        "--clusterrole=bench-reader",
        "--user=reader",
    ]);
    let reader_config = kubeconfig_as(&server, "reader");
    let admin_config = server.kubeconfig_path();

    let (as_reader, as_admin) = common::inside::block_on_in_netns(&ns.name, move || async move {
        let reader: Api<ConfigMap> =
            Api::namespaced(common::inside::kube_client(&reader_config).await, "default");
        let admin: Api<ConfigMap> =
            Api::namespaced(common::inside::kube_client(&admin_config).await, "default");
        // The policy follows the store's watch: wait until the reader's binding counts.
        let ready = Instant::now();
        while reader.get("settings").await.is_err() {
            assert!(
                ready.elapsed() < Duration::from_secs(20),
                "reader never allowed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let timed = |api: Api<ConfigMap>| async move {
            let started = Instant::now();
            api.get("settings").await.expect("GET settings");
            started.elapsed()
        };
        let (mut r, mut a) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS + 200 {
            let (rt, at) = (timed(reader.clone()).await, timed(admin.clone()).await);
            if round >= 200 {
                r.push(rt);
                a.push(at);
            }
        }
        (r, a)
    });
    let (mut as_reader, mut as_admin) = (as_reader, as_admin);
    as_reader.sort();
    as_admin.sort();
    let (r50, r99) = (percentile(&as_reader, 0.5), percentile(&as_reader, 0.99));
    let (a50, a99) = (percentile(&as_admin, 0.5), percentile(&as_admin, 0.99));
    let ratio50 = r50.as_secs_f64() / a50.as_secs_f64();
    let ratio99 = r99.as_secs_f64() / a99.as_secs_f64();
    println!(
        "server binary, HTTPS GET with {BINDINGS} RoleBindings: RBAC p50 {r50:?} p99 {r99:?}; admin fast path p50 {a50:?} p99 {a99:?}; ratio p50 {ratio50:.3} p99 {ratio99:.3}"
    );
    assert!(ratio50 <= 1.2, "p50 ratio {ratio50:.3}");
}
