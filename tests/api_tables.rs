//! Server-side printing seen through the real kubectl: Tables for `get` (plain and wide), watches
//! that print one header, and metadata-only lists. Runs a real `berth server` in a network
//! namespace the test creates. Needs root (network namespaces); CI runs as root.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::netns::Netns;
use serde_json::Value;

const KUBECTL: &str = "/usr/local/lib/berth-test/bin/kubectl";

/// A `berth server` in `ns`, killed (by its pid) when dropped.
struct Server<'a> {
    ns: &'a Netns,
    child: Child,
    dir: tempfile::TempDir,
}

impl<'a> Server<'a> {
    fn start(ns: &'a Netns) -> Server<'a> {
        let dir = tempfile::tempdir().expect("a temp dir");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("a log file");
        let child = ns
            .command(env!("CARGO_BIN_EXE_berth"))
            .args(["server", "--api-listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--node-name", "tables-node"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start berth server");
        let server = Server { ns, child, dir };
        server.wait_ready();
        server
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("data").join("kubeconfig.yaml")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if self.kubeconfig().exists() && self.kubectl(&["get", "--raw", "/readyz"]).0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("berth server did not become ready:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.ns.command(KUBECTL);
        cmd.arg("--kubeconfig").arg(self.kubeconfig()).args(args);
        cmd
    }

    fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.kubectl_command(args).output().expect("run kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.kubectl(args);
        assert!(ok, "kubectl {args:?} failed: {stderr}\n{stdout}");
        stdout
    }

    fn apply_json(&self, name: &str, object: Value) {
        let path = self.dir.path().join(name);
        std::fs::write(&path, object.to_string()).expect("write a manifest");
        // Manifests go in as JSON; --validate=false because kubectl's client-side schema check
        // is not what these tests are about.
        self.kubectl_ok(&[
            "create",
            "--validate=false",
            "-f",
            path.to_str().expect("a UTF-8 path"),
        ]);
    }

    /// GETs `path` with curl, as the admin, sending `accept`.
    fn curl(&self, path: &str, accept: &str) -> Value {
        let config = std::fs::read_to_string(self.kubeconfig()).expect("read the kubeconfig");
        let field = |key: &str| {
            config
                .lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .map(|v| v.trim().trim_matches('"').to_string())
                .unwrap_or_else(|| panic!("kubeconfig lacks {key}"))
        };
        let write_decoded = |key: &str, file: &str| -> PathBuf {
            let pem = base64::engine::general_purpose::STANDARD
                .decode(field(key))
                .expect("base64 in the kubeconfig");
            let path = self.dir.path().join(file);
            std::fs::write(&path, pem).expect("write a PEM file");
            path
        };
        let ca = write_decoded("certificate-authority-data:", "ca.pem");
        let cert = write_decoded("client-certificate-data:", "cert.pem");
        let key = write_decoded("client-key-data:", "key.pem");
        let url = format!("{}{path}", field("server:"));
        let out = self.ns.exec_ok(
            "curl",
            &[
                "-sS",
                "--fail-with-body",
                "--cacert",
                path_str(&ca),
                "--cert",
                path_str(&cert),
                "--key",
                path_str(&key),
                "-H",
                &format!("Accept: {accept}"),
                &url,
            ],
        );
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

impl Drop for Server<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The header line's column names and the rows, split on runs of spaces.
fn table(output: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let split = |line: &str| -> Vec<String> {
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut lines = output.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().map(split).unwrap_or_default();
    (header, lines.map(split).collect())
}

fn row_named<'r>(rows: &'r [Vec<String>], name: &str) -> &'r Vec<String> {
    rows.iter()
        .find(|r| r.first().map(String::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in {rows:?}"))
}

#[test]
fn kubectl_get_prints_upstream_columns_for_namespaces_services_configmaps_and_nodes() {
    let ns = Netns::new();
    let server = Server::start(&ns);

    let (header, rows) = table(&server.kubectl_ok(&["get", "ns"]));
    assert_eq!(header, ["NAME", "STATUS", "AGE"]);
    assert_eq!(row_named(&rows, "default")[1], "Active");

    server.apply_json(
        "svc.json",
        serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"},
                     "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}}),
    );
    let svc: Value = serde_json::from_str(&server.kubectl_ok(&["get", "svc", "web", "-o", "json"]))
        .expect("service JSON");
    let cluster_ip = svc["spec"]["clusterIP"].as_str().expect("an allocated IP");
    let (header, rows) = table(&server.kubectl_ok(&["get", "svc"]));
    assert_eq!(
        header,
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    let web = row_named(&rows, "web");
    assert_eq!(&web[1..5], &["ClusterIP", cluster_ip, "<none>", "80/TCP"]);
    let (header, rows) = table(&server.kubectl_ok(&["get", "svc", "-o", "wide"]));
    assert_eq!(header.last().map(String::as_str), Some("SELECTOR"));
    assert_eq!(row_named(&rows, "web")[6], "app=web");

    server.apply_json(
        "cm.json",
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings"}, "data": {"a": "1", "b": "2"}}),
    );
    let (header, rows) = table(&server.kubectl_ok(&["get", "cm"]));
    assert_eq!(header, ["NAME", "DATA", "AGE"]);
    assert_eq!(row_named(&rows, "settings")[1], "2");

    let deadline = Instant::now() + Duration::from_secs(30);
    let nodes = loop {
        let out = server.kubectl_ok(&["get", "nodes"]);
        if out.contains("tables-node") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let (header, rows) = table(&nodes);
    assert_eq!(header, ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
    let node = row_named(&rows, "tables-node");
    assert_eq!(node[1], "Ready");
    let (header, _) = table(&server.kubectl_ok(&["get", "nodes", "-o", "wide"]));
    assert_eq!(
        &header[5..],
        [
            "INTERNAL-IP",
            "EXTERNAL-IP",
            "OS-IMAGE",
            "KERNEL-VERSION",
            "CONTAINER-RUNTIME"
        ]
    );
}

#[test]
fn kubectl_get_deployments_wide_shows_containers_images_and_selector() {
    let ns = Netns::new();
    let server = Server::start(&ns);
    // Scaled to zero: nothing is scheduled, so nothing is pulled.
    server.apply_json(
        "deploy.json",
        serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "httpd", "image": "busybox:1.36"}]}}}}),
    );
    let (header, rows) = table(&server.kubectl_ok(&["get", "deploy", "-o", "wide"]));
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    let web = row_named(&rows, "web");
    assert_eq!(web[1], "0/0");
    assert_eq!(&web[5..], &["httpd", "busybox:1.36", "app=web"]);
    let (header, _) = table(&server.kubectl_ok(&["get", "deploy"]));
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
}

#[test]
fn kubectl_get_pods_watch_prints_one_header_and_a_row_per_change() {
    let ns = Netns::new();
    let server = Server::start(&ns);
    let mut watch = server
        .kubectl_command(&["get", "pods", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kubectl get -w");
    let stdout = watch.stdout.take().expect("kubectl's stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Bound to a node that does not exist: no agent will try to run (or pull) it.
    let pod = |labels: Value| {
        serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "watched", "labels": labels},
            "spec": {"nodeName": "elsewhere",
                     "containers": [{"name": "app", "image": "busybox:1.36"}]}})
    };
    std::thread::sleep(Duration::from_secs(1));
    server.apply_json("pod.json", pod(serde_json::json!({"v": "1"})));
    server.kubectl_ok(&["label", "pod", "watched", "v=2", "--overwrite"]);
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while lines
        .iter()
        .filter(|l: &&String| l.starts_with("watched"))
        .count()
        < 2
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let _ = reader.join();
    let headers = lines.iter().filter(|l| l.starts_with("NAME")).count();
    assert_eq!(headers, 1, "{lines:#?}");
    let (header, rows) = table(&lines.join("\n"));
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert!(rows.len() >= 2, "{lines:#?}");
    assert!(
        rows.iter()
            .all(|r| r[0] == "watched" && r[1] == "0/1" && r[2] == "Pending"),
        "{rows:?}"
    );
}

#[test]
fn metadata_clients_get_partial_object_metadata_lists() {
    let ns = Netns::new();
    let server = Server::start(&ns);
    server.apply_json(
        "cm.json",
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "meta"}, "data": {"secretish": "value"}}),
    );
    let list = server.curl(
        "/api/v1/namespaces/default/configmaps",
        "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
    );
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    assert_eq!(list["apiVersion"], "meta.k8s.io/v1");
    let item = list["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["metadata"]["name"] == "meta"))
        .unwrap_or_else(|| panic!("no meta in {list}"));
    assert_eq!(item["kind"], "PartialObjectMetadata");
    assert!(item.get("data").is_none(), "{item}");
    let table = server.curl(
        "/api/v1/namespaces/default/configmaps/meta",
        "application/json;as=Table;v=v1beta1;g=meta.k8s.io",
    );
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1beta1");
    assert_eq!(table["rows"][0]["cells"][0], "meta");
}
