//! Server-side apply and managedFields with the real kubectl and helm against a real
//! `berth server` in a test-made network namespace. Needs root (network namespaces); CI runs as
//! root.

mod common;

use common::netns::Netns;
use common::server::BerthServer;
use serde_json::Value;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn write_file(server: &BerthServer, name: &str, text: &str) -> String {
    let path = server.data_dir().join(name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// A Deployment with `replicas: 0` (no pods needed), a Service and a ConfigMap; `{REPLICAS_LINE}`
/// and `{GREETING}` vary between versions. The ports leave out their protocol, a key of their
/// lists that the server defaults.
const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
{REPLICAS_LINE}
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox
        command: ["sleep", "3600"]
        ports: [{containerPort: 8080}]
        env:
        - {name: GREETING, value: "{GREETING}"}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: metrics, port: 9090}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web
data:
  greeting: "{GREETING}"
{EXTRA}
"#;

fn app(replicas: Option<u32>, greeting: &str, extra: &str) -> String {
    let replicas = replicas
        .map(|n| format!("  replicas: {n}"))
        .unwrap_or_default();
    APP.replace("{REPLICAS_LINE}", &replicas)
        .replace("{GREETING}", greeting)
        .replace("{EXTRA}", extra)
}

fn managed_fields(server: &BerthServer, kind: &str, name: &str) -> Vec<Value> {
    let obj = json(&server.kubectl_ok(&["get", kind, name, "-o", "json", "--show-managed-fields"]));
    obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn entry<'a>(fields: &'a [Value], manager: &str, operation: &str) -> Option<&'a Value> {
    fields
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
}

#[test]
fn kubectl_apply_server_side_creates_changes_prunes_and_is_idempotent() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let v1 = write_file(
        &server,
        "v1.yaml",
        &app(Some(0), "hello", "  extra: \"yes\""),
    );
    server.kubectl_ok(&["apply", "--server-side", "-f", &v1]);

    let cm = json(&server.kubectl_ok(&["get", "configmap", "web", "-o", "json"]));
    assert_eq!(cm["data"]["greeting"], "hello");
    assert_eq!(cm["data"]["extra"], "yes");
    // Hidden unless asked for, as upstream's kubectl shows them.
    assert!(cm["metadata"].get("managedFields").is_none(), "{cm}");
    let fields = managed_fields(&server, "configmap", "web");
    let apply = entry(&fields, "kubectl", "Apply").unwrap_or_else(|| panic!("{fields:?}"));
    assert_eq!(apply["apiVersion"], "v1");
    assert_eq!(apply["fieldsType"], "FieldsV1");
    assert!(apply["time"].is_string(), "{apply}");
    assert_eq!(
        apply["fieldsV1"]["f:data"],
        serde_json::json!({".": {}, "f:extra": {}, "f:greeting": {}})
    );

    // Change a value, drop a key and a field: the object follows the manifest.
    let v2 = write_file(&server, "v2.yaml", &app(None, "bonjour", ""));
    server.kubectl_ok(&["apply", "--server-side", "-f", &v2]);
    let cm = json(&server.kubectl_ok(&["get", "configmap", "web", "-o", "json"]));
    assert_eq!(cm["data"]["greeting"], "bonjour");
    assert!(cm["data"].get("extra").is_none(), "{cm}");
    let deployment = json(&server.kubectl_ok(&["get", "deployment", "web", "-o", "json"]));
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(env[0]["value"], "bonjour");

    // The same manifest again writes nothing: a port without its protocol is the stored port
    // with the default protocol, not a new one.
    let version = deployment["metadata"]["resourceVersion"].clone();
    let service = json(&server.kubectl_ok(&["get", "service", "web", "-o", "json"]));
    let out = server.kubectl_ok(&["apply", "--server-side", "-f", &v2]);
    assert!(out.contains("serverside-applied"), "{out}");
    let again = json(&server.kubectl_ok(&["get", "deployment", "web", "-o", "json"]));
    assert_eq!(again["metadata"]["resourceVersion"], version);
    let container_ports = &again["spec"]["template"]["spec"]["containers"][0]["ports"];
    assert_eq!(container_ports.as_array().map(Vec::len), Some(1), "{again}");
    let service_again = json(&server.kubectl_ok(&["get", "service", "web", "-o", "json"]));
    assert_eq!(service_again["spec"]["ports"], service["spec"]["ports"]);
    assert_eq!(
        service_again["metadata"]["resourceVersion"],
        service["metadata"]["resourceVersion"]
    );
    let fields = managed_fields(&server, "service", "web");
    let apply = entry(&fields, "kubectl", "Apply").unwrap_or_else(|| panic!("{fields:?}"));
    let keys: Vec<&String> = apply["fieldsV1"]["f:spec"]["f:ports"]
        .as_object()
        .map(|ports| ports.keys().collect())
        .unwrap_or_default();
    assert_eq!(
        keys,
        [
            r#"k:{"port":80,"protocol":"TCP"}"#,
            r#"k:{"port":9090,"protocol":"TCP"}"#
        ]
    );

    // Two ports alike are refused, as upstream's validation refuses them.
    let twice = write_file(
        &server,
        "twice.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: twice}\nspec:\n  ports:\n  \
         - {name: a, port: 80}\n  - {name: b, port: 80, protocol: TCP}\n",
    );
    let out = server.kubectl(&["apply", "--server-side", "-f", &twice]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "spec.ports[1]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\""
        ),
        "{stderr}"
    );
}

#[test]
fn a_second_manager_conflicts_until_it_forces() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let v1 = write_file(&server, "v1.yaml", &app(Some(0), "hello", ""));
    server.kubectl_ok(&["apply", "--server-side", "-f", &v1]);

    let other = write_file(&server, "other.yaml", &app(Some(1), "hello", ""));
    let refused = server.kubectl(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "-f",
        &other,
    ]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{refused:?}");
    assert!(
        stderr.contains("Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas"),
        "{stderr}"
    );
    let deployment = json(&server.kubectl_ok(&["get", "deployment", "web", "-o", "json"]));
    assert_eq!(deployment["spec"]["replicas"], 0);

    server.kubectl_ok(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "--force-conflicts",
        "-f",
        &other,
    ]);
    let deployment = json(&server.kubectl_ok(&["get", "deployment", "web", "-o", "json"]));
    assert_eq!(deployment["spec"]["replicas"], 1);
    let fields = managed_fields(&server, "deployment", "web");
    let theirs = entry(&fields, "other", "Apply").unwrap_or_else(|| panic!("{fields:?}"));
    assert!(theirs["fieldsV1"]["f:spec"]["f:replicas"].is_object());
    let ours = entry(&fields, "kubectl", "Apply").unwrap_or_else(|| panic!("{fields:?}"));
    assert!(
        ours["fieldsV1"]["f:spec"].get("f:replicas").is_none(),
        "{ours}"
    );

    // A plain update records an Update entry for its manager and takes the field over.
    server.kubectl_ok(&[
        "patch",
        "deployment",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":2}}"#,
    ]);
    let fields = managed_fields(&server, "deployment", "web");
    let patcher = entry(&fields, "kubectl-patch", "Update").unwrap_or_else(|| panic!("{fields:?}"));
    assert_eq!(patcher["apiVersion"], "apps/v1");
    assert_eq!(
        patcher["fieldsV1"],
        serde_json::json!({"f:spec": {"f:replicas": {}}})
    );
    let theirs = entry(&fields, "other", "Apply").unwrap_or_else(|| panic!("{fields:?}"));
    assert!(
        theirs["fieldsV1"]["f:spec"].get("f:replicas").is_none(),
        "{theirs}"
    );
}

#[test]
fn server_side_apply_after_client_side_apply_takes_over_without_conflicts() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let v1 = write_file(&server, "v1.yaml", &app(Some(0), "hello", ""));
    server.kubectl_ok(&["apply", "-f", &v1]);
    let fields = managed_fields(&server, "deployment", "web");
    assert!(
        entry(&fields, "kubectl-client-side-apply", "Update").is_some(),
        "{fields:?}"
    );

    let v2 = write_file(&server, "v2.yaml", &app(Some(1), "bonjour", ""));
    server.kubectl_ok(&["apply", "--server-side", "-f", &v2]);
    let deployment = json(&server.kubectl_ok(&["get", "deployment", "web", "-o", "json"]));
    assert_eq!(deployment["spec"]["replicas"], 1);
    let fields = managed_fields(&server, "deployment", "web");
    let apply = entry(&fields, "kubectl", "Apply").unwrap_or_else(|| panic!("{fields:?}"));
    assert!(
        apply["fieldsV1"]["f:spec"]["f:replicas"].is_object(),
        "{apply}"
    );
}

const CHART: &str = r#"apiVersion: v2
name: tiny
version: 0.1.0
"#;

const TEMPLATES: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-settings
data:
  color: {{ .Values.color | quote }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}
spec:
  selector: {app: {{ .Release.Name }}}
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: 0
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
    spec:
      containers:
      - name: web
        image: busybox
        command: ["sleep", "3600"]
"#;

#[test]
fn helm_installs_upgrades_and_uninstalls_a_chart_with_server_side_apply() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    write_file(&server, "chart/Chart.yaml", CHART);
    write_file(&server, "chart/values.yaml", "color: blue\n");
    write_file(&server, "chart/templates/app.yaml", TEMPLATES);
    let chart = server.data_dir().join("chart");
    let chart = chart.to_string_lossy();

    server.helm_ok(&["install", "tiny", &chart, "--wait", "--timeout", "60s"]);
    let cm = json(&server.kubectl_ok(&["get", "configmap", "tiny-settings", "-o", "json"]));
    assert_eq!(cm["data"]["color"], "blue");
    let fields = managed_fields(&server, "configmap", "tiny-settings");
    assert!(
        fields.iter().any(|e| e["operation"] == "Apply"),
        "helm v4 applies server-side: {fields:?}"
    );
    server.kubectl_ok(&["get", "service", "tiny"]);
    server.kubectl_ok(&["get", "deployment", "tiny"]);

    server.helm_ok(&["upgrade", "tiny", &chart, "--set", "color=green", "--wait"]);
    let cm = json(&server.kubectl_ok(&["get", "configmap", "tiny-settings", "-o", "json"]));
    assert_eq!(cm["data"]["color"], "green");
    let history = server.helm_ok(&["history", "tiny"]);
    assert!(history.contains("deployed"), "{history}");

    server.helm_ok(&["uninstall", "tiny", "--wait"]);
    let gone = server.kubectl(&["get", "configmap", "tiny-settings"]);
    assert!(!gone.status.success(), "{gone:?}");
    let list = server.helm_ok(&["list", "-q"]);
    assert!(!list.contains("tiny"), "{list}");
}

#[test]
fn update_managers_beyond_ten_merge_into_ancient_changes() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    server.kubectl_ok(&[
        "create",
        "configmap",
        "many-writers",
        "--from-literal=seed=0",
    ]);
    for i in 0..12 {
        let patch = format!(r#"{{"data": {{"key{i}": "value{i}"}}}}"#);
        server.kubectl_ok(&[
            "patch",
            "configmap",
            "many-writers",
            "--type=merge",
            &format!("--field-manager=writer-{i}"),
            "-p",
            &patch,
        ]);
    }
    let fields = managed_fields(&server, "configmap", "many-writers");
    let updates: Vec<&Value> = fields
        .iter()
        .filter(|e| e["operation"] == "Update")
        .collect();
    assert_eq!(updates.len(), 10, "{fields:#?}");
    let bucket = entry(&fields, "ancient-changes", "Update").expect("an ancient-changes entry");
    // Thirteen entries became ten: the four oldest (kubectl create's first) merged, their keys
    // now the bucket's, and every key is still owned by exactly one entry.
    let owned = bucket["fieldsV1"]["f:data"]
        .as_object()
        .expect("data fields");
    let merged = owned.keys().filter(|k| k.as_str() != ".").count();
    assert!(owned.contains_key("f:seed") && merged == 4, "{bucket}");
    let mut keys: Vec<String> = updates
        .iter()
        .flat_map(|e| {
            e["fieldsV1"]["f:data"]
                .as_object()
                .cloned()
                .unwrap_or_default()
        })
        .map(|(key, _)| key)
        .filter(|key| key != ".")
        .collect();
    assert_eq!(keys.len(), 13, "{keys:?}");
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 13, "a key owned twice: {keys:?}");
}
