//! The OpenAPI documents as the real kubectl uses them: `create`/`apply` with validation,
//! server-side strict field validation, `explain`. Needs root (network namespaces); CI runs as root.

mod common;

use common::netns::Netns;
use common::server::BerthServer;
use serde_json::Value;

fn write_manifest(server: &BerthServer, name: &str, text: &str) -> String {
    let path = server.data_dir().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox
        ports:
        - containerPort: 8080
"#;

const UNKNOWN_FIELD: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: typo
spec:
  replicas: 1
  replicaz: 2
  selector:
    matchLabels: {app: typo}
  template:
    metadata:
      labels: {app: typo}
    spec:
      containers:
      - name: web
        image: busybox
"#;

fn app_manifest(replicas: u32, value: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: app}}
  template:
    metadata:
      labels: {{app: app}}
    spec:
      containers:
      - name: app
        image: busybox
---
apiVersion: v1
kind: Service
metadata:
  name: app
spec:
  selector: {{app: app}}
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: app
data:
  key: {value}
"#
    )
}

#[test]
fn kubectl_create_with_validation_downloads_openapi_and_creates_the_deployment() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let path = write_manifest(&server, "deploy.yaml", DEPLOYMENT);
    let out = server.kubectl_ok(&["create", "-f", &path, "--validate=true"]);
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let replicas = server.kubectl_ok(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(replicas, "1");
}

#[test]
fn strict_validation_rejects_an_unknown_field_on_the_server_naming_it() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let path = write_manifest(&server, "typo.yaml", UNKNOWN_FIELD);
    let out = server.kubectl(&["create", "-f", &path, "--validate=strict", "-v=6"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Server-side: kubectl found fieldValidation in the v3 document and asked the server.
    assert!(stderr.contains("fieldValidation=Strict"), "{stderr}");
    assert!(stderr.contains("Error from server"), "{stderr}");
    assert!(
        stderr.contains("unknown field \"spec.replicaz\""),
        "{stderr}"
    );
    assert!(!server
        .kubectl(&["get", "deployment", "typo"])
        .status
        .success());
}

#[test]
fn kubectl_explain_prints_field_docs_and_walks_pods_recursively() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let out = server.kubectl_ok(&["explain", "deployment.spec.strategy"]);
    assert!(out.contains("KIND:       Deployment"), "{out}");
    assert!(
        out.contains("FIELD: strategy <DeploymentStrategy>"),
        "{out}"
    );
    assert!(out.contains("rollingUpdate"), "{out}");
    assert!(out.contains("Type of deployment."), "{out}");

    let out = server.kubectl_ok(&["explain", "pods", "--recursive"]);
    assert!(
        out.contains("containers\t<[]Container> -required-"),
        "{out}"
    );
    assert!(out.contains("volumeMounts\t<[]VolumeMount>"), "{out}");
    assert!(out.lines().count() > 500, "{out}");

    // The v2 renderer reads gnostic protobuf from /openapi/v2 (kubectl asks for nothing else).
    let out = server.kubectl_ok(&[
        "explain",
        "deployment.spec.strategy",
        "--output",
        "plaintext-openapiv2",
    ]);
    assert!(out.contains("RESOURCE: strategy <Object>"), "{out}");
    assert!(out.contains("rollingUpdate\t<Object>"), "{out}");
}

#[test]
fn kubectl_apply_creates_then_patches_a_deployment_service_and_configmap() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let path = write_manifest(&server, "app.yaml", &app_manifest(1, "one"));
    let out = server.kubectl_ok(&["apply", "-f", &path]);
    for created in [
        "deployment.apps/app created",
        "service/app created",
        "configmap/app created",
    ] {
        assert!(out.contains(created), "{out}");
    }

    // The second apply sends strategic merge patches computed with the v3 document's patch
    // metadata.
    let path = write_manifest(&server, "app2.yaml", &app_manifest(2, "two"));
    let out = server.kubectl_ok(&["apply", "-f", &path]);
    assert!(out.contains("deployment.apps/app configured"), "{out}");
    assert!(out.contains("configmap/app configured"), "{out}");
    let cm: Value =
        serde_json::from_str(&server.kubectl_ok(&["get", "configmap", "app", "-o", "json"]))
            .unwrap();
    assert_eq!(cm["data"]["key"], "two");
    let replicas = server.kubectl_ok(&[
        "get",
        "deployment",
        "app",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(replicas, "2");
}

#[test]
fn openapi_documents_are_served_with_upstream_names_and_cache_headers() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let index: Value =
        serde_json::from_str(&server.kubectl_ok(&["get", "--raw", "/openapi/v3"])).unwrap();
    let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap();
    let doc: Value = serde_json::from_str(&server.kubectl_ok(&["get", "--raw", url])).unwrap();
    let deployment = &doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(
        deployment["x-kubernetes-group-version-kind"][0]["kind"],
        "Deployment"
    );

    let v2: Value =
        serde_json::from_str(&server.kubectl_ok(&["get", "--raw", "/openapi/v2"])).unwrap();
    assert_eq!(v2["swagger"], "2.0");
    assert!(v2["definitions"]["io.k8s.api.core.v1.Pod"].is_object());
}
