//! The API core driven by the real kubectl against a real `berth server` in a test-made network
//! namespace. Needs root (network namespaces); CI runs as root.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::netns::Netns;
use common::server::BerthServer;
use common::tools;
use serde_json::Value;

/// kubectl in the server's netns as a `Command`, for runs the test watches while it works.
fn kubectl_command(server: &BerthServer, args: &[&str]) -> std::process::Command {
    let mut cmd = server.command(&tools::kubectl());
    cmd.args(args);
    cmd
}

/// POSTs the file at `body` to `path` with `kubectl create --raw`; returns kubectl's stderr.
fn create_raw(server: &BerthServer, path: &str, body: &str) -> String {
    let out = server.kubectl(&["create", "--raw", path, "-f", body]);
    assert!(!out.status.success(), "expected a failure: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

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
  labels: {app: web}
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
"#;

#[test]
fn kubectl_discovers_the_api() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let version = server.kubectl_ok(&["version", "-o", "json"]);
    assert_eq!(json(&version)["serverVersion"]["minor"], "35");
    let resources = server.kubectl_ok(&["api-resources"]);
    for line in [
        "deployments",
        "deploy",
        "apps/v1",
        "configmaps",
        "cm",
        "namespaces",
        "ns",
        "horizontalpodautoscalers",
    ] {
        assert!(
            resources.contains(line),
            "api-resources lacks {line}:\n{resources}"
        );
    }
    let versions = server.kubectl_ok(&["api-versions"]);
    for gv in [
        "v1",
        "apps/v1",
        "batch/v1",
        "rbac.authorization.k8s.io/v1",
        "discovery.k8s.io/v1",
    ] {
        assert!(
            versions.lines().any(|l| l == gv),
            "api-versions lacks {gv}:\n{versions}"
        );
    }
    let namespaces = server.kubectl_ok(&["get", "namespaces", "-o", "name"]);
    for n in [
        "namespace/default",
        "namespace/kube-system",
        "namespace/kube-public",
        "namespace/kube-node-lease",
    ] {
        assert!(namespaces.contains(n), "{namespaces}");
    }
}

#[test]
fn configmaps_and_secrets_go_through_their_whole_life() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    server.kubectl_ok(&["create", "namespace", "team"]);
    server.kubectl_ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "team",
        "--from-literal=mode=fast",
        "--from-literal=level=3",
    ]);
    let cm =
        json(&server.kubectl_ok(&["get", "configmap", "settings", "-n", "team", "-o", "json"]));
    assert_eq!(cm["data"]["mode"], "fast");
    assert!(!cm["metadata"]["uid"].as_str().unwrap().is_empty());
    assert!(!cm["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .is_empty());
    let yaml = server.kubectl_ok(&["get", "cm", "settings", "-n", "team", "-o", "yaml"]);
    assert!(yaml.contains("mode: fast"), "{yaml}");

    server.kubectl_ok(&["label", "cm", "settings", "-n", "team", "tier=backend"]);
    server.kubectl_ok(&["annotate", "cm", "settings", "-n", "team", "owner=ops"]);
    let names = server.kubectl_ok(&[
        "get",
        "cm",
        "-n",
        "team",
        "-l",
        "tier=backend",
        "-o",
        "name",
    ]);
    assert_eq!(names.trim(), "configmap/settings");
    let none = server.kubectl_ok(&[
        "get",
        "cm",
        "-n",
        "team",
        "-l",
        "tier!=backend,tier",
        "-o",
        "name",
    ]);
    assert_eq!(none.trim(), "");
    let by_field = server.kubectl_ok(&[
        "get",
        "cm",
        "-n",
        "team",
        "--field-selector",
        "metadata.name=settings",
        "-o",
        "name",
    ]);
    assert_eq!(by_field.trim(), "configmap/settings");

    server.kubectl_ok(&[
        "patch",
        "cm",
        "settings",
        "-n",
        "team",
        "--type=merge",
        "-p",
        r#"{"data":{"mode":"slow"}}"#,
    ]);
    server.kubectl_ok(&[
        "patch",
        "cm",
        "settings",
        "-n",
        "team",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/data/level"}]"#,
    ]);
    let cm = json(&server.kubectl_ok(&["get", "cm", "settings", "-n", "team", "-o", "json"]));
    assert_eq!(cm["data"], serde_json::json!({"mode": "slow"}));
    assert_eq!(cm["metadata"]["labels"]["tier"], "backend");
    assert_eq!(cm["metadata"]["annotations"]["owner"], "ops");

    // replace with a stale resourceVersion is a conflict; with the current one it works.
    let mut stale = cm.clone();
    stale["metadata"]["resourceVersion"] = Value::String("1".into());
    let stale_path = write_manifest(&server, "stale.json", &stale.to_string());
    let out = server.kubectl(&["replace", "-f", &stale_path]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the object has been modified"),
        "{out:?}"
    );
    let mut fresh = cm.clone();
    fresh["data"]["mode"] = Value::String("replaced".into());
    let fresh_path = write_manifest(&server, "fresh.json", &fresh.to_string());
    server.kubectl_ok(&["replace", "-f", &fresh_path]);
    assert_eq!(
        server.kubectl_ok(&[
            "get",
            "cm",
            "settings",
            "-n",
            "team",
            "-o",
            "jsonpath={.data.mode}"
        ]),
        "replaced"
    );

    server.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "-n",
        "team",
        "--from-literal=password=hunter2",
    ]);
    let secret = json(&server.kubectl_ok(&["get", "secret", "creds", "-n", "team", "-o", "json"]));
    assert_eq!(secret["data"]["password"], "aHVudGVyMg==");

    server.kubectl_ok(&["delete", "cm", "settings", "-n", "team"]);
    let gone = server.kubectl(&["get", "cm", "settings", "-n", "team"]);
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("configmaps \"settings\" not found"),
        "{gone:?}"
    );

    // While the namespace terminates (a finalizer holds one of its objects) nothing new may be
    // created in it, from the first request after its delete was answered.
    server.kubectl_ok(&["create", "configmap", "held", "-n", "team"]);
    let hold = r#"{"metadata":{"finalizers":["example.com/hold"]}}"#;
    let release = r#"{"metadata":{"finalizers":null}}"#;
    let patch = |body| {
        [
            "patch",
            "cm",
            "held",
            "-n",
            "team",
            "--type=merge",
            "-p",
            body,
        ]
    };
    server.kubectl_ok(&patch(hold));
    server.kubectl_ok(&["delete", "namespace", "team", "--wait=false"]);
    let out = server.kubectl(&["create", "configmap", "late", "-n", "team"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "unable to create new content in namespace team because it is being terminated"
        ),
        "{out:?}"
    );

    // Once the hold is released, the namespace's content goes, then the namespace.
    server.kubectl_ok(&patch(release));
    server.kubectl_ok(&["wait", "--for=delete", "namespace/team", "--timeout=60s"]);
    let out = server.kubectl(&["get", "namespace", "team"]);
    assert!(!out.status.success());
    let out = server.kubectl(&["create", "configmap", "late", "-n", "team"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("namespaces \"team\" not found"),
        "{out:?}"
    );
}

#[test]
fn deployments_and_services_are_created_from_manifests() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let path = write_manifest(&server, "deploy.yaml", DEPLOYMENT);
    server.kubectl_ok(&["create", "-f", &path]);
    let d = json(&server.kubectl_ok(&["get", "deploy", "web", "-o", "json"]));
    assert_eq!(d["metadata"]["generation"], 1);
    assert_eq!(d["spec"]["replicas"], 2);
    server.kubectl_ok(&[
        "patch",
        "deployment",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":3}}"#,
    ]);
    let d = json(&server.kubectl_ok(&["get", "deploy", "web", "-o", "json"]));
    assert_eq!(
        d["metadata"]["generation"], 2,
        "a spec change bumps the generation"
    );
    server.kubectl_ok(&["label", "deploy", "web", "stage=test"]);
    let d = json(&server.kubectl_ok(&["get", "deploy", "web", "-o", "json"]));
    assert_eq!(d["metadata"]["generation"], 2, "a label change does not");

    server.kubectl_ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    let svc = json(&server.kubectl_ok(&["get", "svc", "web", "-o", "json"]));
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    let all = server.kubectl_ok(&["get", "all", "-o", "name"]);
    assert!(
        all.contains("service/web") && all.contains("deployment.apps/web"),
        "{all}"
    );
    server.kubectl_ok(&["delete", "-f", &path]);
    server.kubectl_ok(&["delete", "svc", "web"]);
    let left = server.kubectl_ok(&["get", "deploy,svc", "-o", "name"]);
    assert_eq!(
        left.trim(),
        "service/kubernetes",
        "only the API's own service is left"
    );
}

#[test]
fn a_service_changing_type_gets_and_frees_its_node_ports_and_cluster_ip() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let svc = |name: &str| json(&server.kubectl_ok(&["get", "svc", name, "-o", "json"]));
    let patch = |name: &str, body: &str| {
        server.kubectl_ok(&["patch", "svc", name, "--type=merge", "-p", body]);
    };
    server.kubectl_ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    let ip = svc("web")["spec"]["clusterIP"].clone();

    // ClusterIP → NodePort: a node port from the range, the same cluster IP.
    patch("web", r#"{"spec":{"type":"NodePort"}}"#);
    let node_port = svc("web")["spec"]["ports"][0]["nodePort"].clone();
    let port = node_port.as_u64().unwrap_or_else(|| panic!("{node_port}"));
    assert!((30000..=32767).contains(&port), "{port}");
    assert_eq!(svc("web")["spec"]["clusterIP"], ip);
    // Held: another service cannot have it.
    let taken =
        format!(r#"{{"spec":{{"type":"NodePort","ports":[{{"port":81,"nodePort":{port}}}]}}}}"#);
    server.kubectl_ok(&["create", "service", "clusterip", "other", "--tcp=81:81"]);
    let out = server.kubectl(&["patch", "svc", "other", "--type=merge", "-p", &taken]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("provided port is already allocated"), "{err}");

    // A NodePort service defaults its external traffic policy; it may be Local.
    assert_eq!(svc("web")["spec"]["externalTrafficPolicy"], "Cluster");
    patch("web", r#"{"spec":{"externalTrafficPolicy":"Local"}}"#);

    // NodePort → ClusterIP: the node port goes, and is free for the other service; the
    // external traffic policy goes with it, as upstream's update strategy drops it.
    patch("web", r#"{"spec":{"type":"ClusterIP"}}"#);
    let cluster_ip = svc("web");
    assert!(cluster_ip["spec"]["ports"][0].get("nodePort").is_none());
    assert!(
        cluster_ip["spec"].get("externalTrafficPolicy").is_none(),
        "{cluster_ip}"
    );
    // An update is checked as a whole, as a create is; a refused one changes nothing.
    for (body, message) in [
        (
            r#"{"spec":{"externalTrafficPolicy":"Local"}}"#,
            r#"spec.externalTrafficPolicy: Invalid value: "Local": may only be set for externally-accessible services"#,
        ),
        (
            r#"{"spec":{"sessionAffinity":"ClientIP","sessionAffinityConfig":{"clientIP":{"timeoutSeconds":0}}}}"#,
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 0: must be greater than 0 and less than 86400",
        ),
    ] {
        let out = server.kubectl(&["patch", "svc", "web", "--type=merge", "-p", body]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(message), "{err}");
    }
    assert_eq!(
        svc("web")["metadata"]["resourceVersion"],
        cluster_ip["metadata"]["resourceVersion"]
    );
    patch("web", r#"{"spec":{"sessionAffinity":"ClientIP"}}"#);
    assert_eq!(
        svc("web")["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
        10800
    );
    patch(
        "web",
        r#"{"spec":{"sessionAffinity":"None","sessionAffinityConfig":null}}"#,
    );
    patch("other", &taken);
    assert_eq!(svc("other")["spec"]["ports"][0]["nodePort"], port);

    // ClusterIP → ExternalName: the cluster IP goes and is free again; and back.
    patch(
        "web",
        r#"{"spec":{"type":"ExternalName","externalName":"example.test"}}"#,
    );
    let external = svc("web");
    assert!(external["spec"].get("clusterIP").is_none(), "{external}");
    let requested =
        format!(r#"{{"spec":{{"type":"ClusterIP","clusterIP":{ip},"externalName":null}}}}"#);
    let body = format!(
        r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"again"}},"spec":{{"clusterIP":{ip},"ports":[{{"port":80}}]}}}}"#
    );
    let file = write_manifest(&server, "again.json", &body);
    server.kubectl_ok(&["create", "-f", &file]);
    server.kubectl_ok(&["delete", "svc", "again"]);
    patch("web", &requested);
    assert_eq!(svc("web")["spec"]["clusterIP"], ip);
    let back = svc("web");
    assert_eq!(back["spec"]["clusterIPs"], serde_json::json!([ip]));
    assert_eq!(
        back["spec"]["ipFamilies"],
        serde_json::json!(["IPv4"]),
        "{back}"
    );

    // A type no one knows is refused on update as on create.
    let out = server.kubectl(&[
        "patch",
        "svc",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"type":"Magic"}}"#,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"spec.type: Unsupported value: "Magic""#),
        "{err}"
    );
}

#[test]
fn bad_input_gets_clear_errors_and_stores_nothing() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let out = server.kubectl(&["create", "configmap", "Bad_Name"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is invalid") && err.contains("RFC 1123"),
        "{err}"
    );
    let raw = |path: &str| server.kubectl(&["get", "--raw", path]);
    let out = raw("/api/v1/namespaces/default/widgets");
    assert!(!out.status.success());
    let body = write_manifest(&server, "garbage.json", "{not json");
    let err = create_raw(&server, "/api/v1/namespaces/default/configmaps", &body);
    assert!(err.contains("not valid JSON"), "{err}");
    let wrong_ns = write_manifest(
        &server,
        "wrong.json",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","namespace":"other"}}"#,
    );
    let err = create_raw(&server, "/api/v1/namespaces/default/configmaps", &wrong_ns);
    assert!(err.contains("does not match the namespace"), "{err}");
    let wrong_kind = write_manifest(
        &server,
        "kind.json",
        r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#,
    );
    let err = create_raw(
        &server,
        "/api/v1/namespaces/default/configmaps",
        &wrong_kind,
    );
    assert!(err.contains("does not match the expected kind"), "{err}");
    let big = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"k":"{}"}}}}"#,
        "x".repeat(4 << 20)
    );
    let big = write_manifest(&server, "big.json", &big);
    let err = create_raw(&server, "/api/v1/namespaces/default/configmaps", &big);
    assert!(err.contains("too large"), "{err}");
    // Nothing of the bad requests was stored (the namespace's own root CA ConfigMap aside).
    let stored = server.kubectl_ok(&["get", "cm", "-o", "name"]);
    let stored: Vec<&str> = stored
        .lines()
        .filter(|l| *l != "configmap/kube-root-ca.crt")
        .collect();
    assert!(stored.is_empty(), "nothing was stored: {stored:?}");
    let dup = server.kubectl_ok(&["create", "cm", "dup"]);
    assert!(dup.contains("created"));
    let out = server.kubectl(&["create", "cm", "dup"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{out:?}"
    );
}

#[test]
fn a_watch_sees_changes_made_elsewhere_and_wait_returns() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    server.kubectl_ok(&["create", "cm", "watched", "--from-literal=v=1"]);
    let mut watcher = kubectl_command(
        &server,
        &[
            "get",
            "cm",
            "watched",
            "-w",
            "-o",
            "jsonpath={.data.v}{\"\\n\"}",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    server.kubectl_ok(&[
        "patch",
        "cm",
        "watched",
        "--type=merge",
        "-p",
        r#"{"data":{"v":"2"}}"#,
    ]);
    let waited = server.kubectl_ok(&[
        "wait",
        "cm/watched",
        "--for=jsonpath={.data.v}=2",
        "--timeout=30s",
    ]);
    assert!(waited.contains("condition met"), "{waited}");
    std::thread::sleep(Duration::from_secs(1));
    let _ = watcher.kill();
    let _ = watcher.wait();
    let mut seen = String::new();
    watcher
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut seen)
        .unwrap();
    assert!(
        seen.lines().any(|l| l == "2"),
        "the watch never saw v=2: {seen:?}"
    );

    let mut waiter = kubectl_command(
        &server,
        &["wait", "cm/watched", "--for=delete", "--timeout=60s"],
    )
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    server.kubectl_ok(&["delete", "cm", "watched"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = waiter.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl wait --for=delete did not return"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success());
}

#[test]
fn kill_9_loses_no_acknowledged_write_and_watches_resume() {
    let ns = Netns::new();
    let mut server = BerthServer::start(&ns);
    let mut versions = Vec::new();
    for i in 0..200 {
        let out = server.kubectl_ok(&[
            "create",
            "cm",
            &format!("cm-{i:03}"),
            "--from-literal=i=x",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ]);
        versions.push((format!("cm-{i:03}"), out));
    }
    let (_, middle) = versions[99].clone();
    server.kill9();
    server.restart();
    let list = json(&server.kubectl_ok(&["get", "cm", "-o", "json"]));
    let items: Vec<&Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| {
            i["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .starts_with("cm-")
        })
        .collect();
    assert_eq!(items.len(), 200);
    for (name, rv) in &versions {
        let item = items
            .iter()
            .find(|i| i["metadata"]["name"] == *name)
            .unwrap_or_else(|| panic!("{name} lost"));
        assert_eq!(
            item["metadata"]["resourceVersion"], *rv,
            "{name} changed its resourceVersion"
        );
    }
    // A watch resumed from the 100th create sees exactly the 100 later ones.
    let path = format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={middle}&timeoutSeconds=3");
    let stream = server.kubectl_ok(&["get", "--raw", &path]);
    let names: Vec<String> = stream
        .lines()
        .map(json)
        .filter(|e| e["type"] == "ADDED")
        .filter(|e| {
            e["object"]["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .starts_with("cm-")
        })
        .map(|e| {
            e["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let expected: Vec<String> = versions[100..].iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, expected);
    // A resourceVersion from before compaction or garbage gets a clear error, never a hang.
    let out = server.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=abc",
    ]);
    assert!(!out.status.success());
}
