//! The first user journey, end to end: start berth; `kubectl apply` a Deployment and a Service;
//! the pods run as real containers pulled from a real registry; another pod reaches them by DNS
//! name; `kill -9` of berth loses nothing and the pods keep running.
//!
//! Needs root (network namespaces, cgroups, mounts, nftables), as in CI.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::netns::Netns;
use common::wait_until;
use serde_json::Value;

const MANIFEST: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: httpd
        image: busybox
        command: ["sh", "-c", "mkdir -p /srv && echo hello from `hostname` > /srv/index.html && exec httpd -f -p 8080 -h /srv"]
        ports:
        - {name: http, containerPort: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
"#;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Container IDs of the web pods, by pod name.
fn web_containers(cluster: &Cluster) -> Vec<(String, String, i64)> {
    let pods = json(
        &cluster
            .server
            .kubectl_ok(&["get", "pods", "-l", "app=web", "-o", "json"]),
    );
    let mut out: Vec<(String, String, i64)> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let status = &p["status"]["containerStatuses"][0];
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                status["containerID"].as_str().unwrap_or("").to_string(),
                status["restartCount"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    out.sort();
    out
}

/// Runs a client pod that resolves `host` through the cluster DNS and fetches `http://<ip>/`
/// from it; returns what it printed. (busybox's own `nslookup` and `nc` do the work: Debian's
/// busybox-static `wget` crashes with a segmentation fault even on the host.)
fn fetch_from_a_pod(cluster: &Cluster, name: &str, host: &str) -> String {
    let script = format!(
        "for i in 1 2 3 4 5 6 7 8 9 10; do \
           ip=$(nslookup {host} | awk '/^Name:/ {{found=1}} found && /^Address/ {{print $2; exit}}'); \
           echo resolved {host} to $ip; \
           [ -n \"$ip\" ] && printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 $ip 80 | grep hello && exit 0; \
           sleep 1; \
         done; exit 1"
    );
    cluster.server.kubectl_ok(&[
        "run",
        name,
        "--image=busybox",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let done = wait_until(Duration::from_secs(120), || {
        let phase = cluster
            .server
            .kubectl(&["get", "pod", name, "-o", "jsonpath={.status.phase}"]);
        let phase = String::from_utf8_lossy(&phase.stdout).to_string();
        phase == "Succeeded" || phase == "Failed"
    });
    let logs = cluster.server.kubectl(&["logs", name]);
    let logs = String::from_utf8_lossy(&logs.stdout).to_string();
    let phase = cluster
        .server
        .kubectl_ok(&["get", "pod", name, "-o", "jsonpath={.status.phase}"]);
    assert!(
        done && phase == "Succeeded",
        "client pod {name} did not reach {host}: phase {phase:?}, logs {logs:?}"
    );
    cluster
        .server
        .kubectl_ok(&["delete", "pod", name, "--wait=false"]);
    logs
}

#[test]
fn apply_run_reach_by_dns_name_and_survive_kill_9() {
    let ns = Netns::new();
    let mut cluster = Cluster::start(&ns);
    let manifest = cluster.server.data_dir().join("web.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let applied = cluster
        .server
        .kubectl_ok(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(
        applied.contains("deployment.apps/web created") && applied.contains("service/web created"),
        "{applied}"
    );
    cluster
        .server
        .kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=180s"]);
    let before = web_containers(&cluster);
    assert_eq!(before.len(), 2, "two replicas: {before:?}");
    assert!(
        before.iter().all(|(_, id, _)| id.starts_with("berth://")),
        "{before:?}"
    );

    // Reached by the service's DNS name (and its short name through the pod's search path),
    // over the proxy's ClusterIP rules.
    let page = fetch_from_a_pod(&cluster, "client-fqdn", "web.default.svc.cluster.local");
    assert!(page.contains("hello from web-"), "{page:?}");
    let page = fetch_from_a_pod(&cluster, "client-short", "web");
    assert!(page.contains("hello from web-"), "{page:?}");

    // kill -9 of berth: the containers keep running, and a restarted berth re-adopts them.
    cluster.server.kill9();
    cluster.server.restart();
    cluster
        .server
        .kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let after = web_containers(&cluster);
    assert_eq!(before, after, "the same containers, not restarted");
    let page = fetch_from_a_pod(&cluster, "client-after", "web.default.svc.cluster.local");
    assert!(page.contains("hello from web-"), "{page:?}");

    cluster
        .server
        .kubectl_ok(&["delete", "-f", manifest.to_str().unwrap()]);
}
