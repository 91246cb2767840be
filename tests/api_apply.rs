//! `kubectl apply` (client-side: strategic merge patches with directives) and `kubectl diff`
//! against a real `berth server` in a test-made network namespace. Needs root (network
//! namespaces); CI runs as root.

mod common;

use common::netns::Netns;
use common::server::BerthServer;
use serde_json::Value;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn write_manifest(server: &BerthServer, name: &str, text: &str) -> String {
    let path = server.data_dir().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// A Deployment, a Service and a ConfigMap; `{ENV}`, `{PORT}` and `{TIER}` vary between versions.
const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web, tier: "{TIER}"}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox
        command: ["httpd", "-f", "-p", "8080"]
        env:
        - {name: GREETING, value: "{ENV}"}
        - {name: KEEP, value: "same"}
        ports:
        - {containerPort: {PORT}, name: http}
      - name: sidecar
        image: busybox
        command: ["sleep", "3600"]
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {port: 80, targetPort: {PORT}}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web
data:
  greeting: "{ENV}"
"#;

fn app(env: &str, port: &str, tier: &str) -> String {
    APP.replace("{ENV}", env)
        .replace("{PORT}", port)
        .replace("{TIER}", tier)
}

#[test]
fn kubectl_apply_of_a_changed_manifest_updates_the_live_objects() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let first = write_manifest(&server, "app-v1.yaml", &app("hello", "8080", "front"));
    server.kubectl_ok(&["apply", "-f", &first]);

    let second = write_manifest(&server, "app-v2.yaml", &app("bonjour", "9090", "edge"));
    // `kubectl diff` exits 1 when there are differences and shows them.
    let diff = server.kubectl(&["diff", "-f", &second]);
    let diff_text = String::from_utf8_lossy(&diff.stdout);
    assert_eq!(diff.status.code(), Some(1), "{diff:?}");
    assert!(diff_text.contains("bonjour"), "{diff_text}");
    assert!(diff_text.contains("9090"), "{diff_text}");

    server.kubectl_ok(&["apply", "-f", &second]);
    let deployment = json(&server.kubectl_ok(&["get", "deployment", "web", "-o", "json"]));
    assert_eq!(deployment["metadata"]["labels"]["tier"], "edge");
    let containers = &deployment["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().map(Vec::len), Some(2), "{containers}");
    assert_eq!(containers[0]["name"], "web");
    assert_eq!(
        containers[0]["env"],
        serde_json::json!([{"name": "GREETING", "value": "bonjour"},
                           {"name": "KEEP", "value": "same"}])
    );
    let ports = containers[0]["ports"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0]["containerPort"], 9090);
    assert_eq!(ports[0]["name"], "http");
    assert_eq!(containers[1]["name"], "sidecar");

    let service = json(&server.kubectl_ok(&["get", "service", "web", "-o", "json"]));
    assert_eq!(service["spec"]["ports"][0]["targetPort"], 9090);
    let config = json(&server.kubectl_ok(&["get", "configmap", "web", "-o", "json"]));
    assert_eq!(config["data"]["greeting"], "bonjour");

    // Applying the same manifest again changes nothing.
    let version = deployment["metadata"]["resourceVersion"].clone();
    server.kubectl_ok(&["apply", "-f", &second]);
    let again = json(&server.kubectl_ok(&["get", "deployment", "web", "-o", "json"]));
    assert_eq!(again["metadata"]["resourceVersion"], version);
    let diff = server.kubectl(&["diff", "-f", &second]);
    assert_eq!(diff.status.code(), Some(0), "{diff:?}");
}

#[test]
fn strategic_patches_delete_items_and_refuse_bad_directives() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let manifest = write_manifest(&server, "app.yaml", &app("hi", "8080", "front"));
    server.kubectl_ok(&["apply", "-f", &manifest]);

    server.kubectl_ok(&[
        "patch",
        "deployment",
        "web",
        "--type=strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","$patch":"delete"}]}}}}"#,
    ]);
    let deployment = json(&server.kubectl_ok(&["get", "deployment", "web", "-o", "json"]));
    let names: Vec<&str> = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["web"]);

    let out = server.kubectl(&[
        "patch",
        "deployment",
        "web",
        "--type=strategic",
        "-p",
        r#"{"spec":{"$patch":"bogus"}}"#,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("bogus"), "{stderr}");
    assert!(stderr.contains("$patch"), "{stderr}");
}
