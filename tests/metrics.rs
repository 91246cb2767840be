//! `metrics.k8s.io` and what stands on it (`kubectl top`, the HorizontalPodAutoscaler), with
//! real containers in a test-made network namespace. Needs root; CI runs as root.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::netns::Netns;
use common::wait_until;
use serde_json::json;

/// Metrics need two samples 15 s apart after a container started, plus scheduling slack.
const METRICS_TIMEOUT: Duration = Duration::from_secs(120);

const BUSY: &str = "while :; do :; done";

/// Millicores of a `kubectl top` CPU cell (`998m`, `1`).
fn millicores(cell: &str) -> u64 {
    match cell.strip_suffix('m') {
        Some(m) => m
            .parse()
            .unwrap_or_else(|_| panic!("bad cpu cell {cell:?}")),
        None => {
            cell.parse::<u64>()
                .unwrap_or_else(|_| panic!("bad cpu cell {cell:?}"))
                * 1000
        }
    }
}

/// Mebibytes of a `kubectl top` memory cell (`12Mi`).
fn mebibytes(cell: &str) -> u64 {
    cell.strip_suffix("Mi")
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("bad memory cell {cell:?}"))
}

/// `kubectl top pod` rows as (name, millicores, MiB).
fn top_pods(cluster: &Cluster) -> Vec<(String, u64, u64)> {
    let out = cluster.server.kubectl(&["top", "pod", "--no-headers"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            match cells.as_slice() {
                [name, cpu, memory] => Some((name.to_string(), millicores(cpu), mebibytes(memory))),
                _ => None,
            }
        })
        .collect()
}

/// CPU time of a pod's `app` container straight from its cgroup (v1 or v2), nanoseconds.
fn cgroup_cpu_ns(uid: &str) -> Option<u64> {
    let v1 = ["cpuacct", "cpu,cpuacct", "cpu"].iter().find_map(|h| {
        let path = format!("/sys/fs/cgroup/{h}/berth/pod{uid}/app/cpuacct.usage");
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    });
    v1.or_else(|| {
        let stat =
            std::fs::read_to_string(format!("/sys/fs/cgroup/berth/pod{uid}/app/cpu.stat")).ok()?;
        let usec: u64 = stat
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))?
            .trim()
            .parse()
            .ok()?;
        Some(usec * 1000)
    })
}

fn running(pod: &serde_json::Value) -> bool {
    pod["status"]["phase"] == "Running"
}

#[test]
fn kubectl_top_shows_a_busy_pod_using_cpu_and_an_idle_one_near_zero() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let container = |command: &str| json!({"containers": [{"name": "app", "image": "busybox", "command": ["sh", "-c", command]}]});
    cluster.create(cluster.pod("busy", container(BUSY)));
    cluster.create(cluster.pod("idle", container("sleep 3600")));
    let busy_pod = cluster.wait_for("busy", "Running", running);
    cluster.wait_for("idle", "Running", running);
    // What the kernel says the loop gets on this (possibly loaded) machine, over 15 s.
    let uid = busy_pod["metadata"]["uid"].as_str().unwrap().to_string();
    let before = cgroup_cpu_ns(&uid).expect("the busy container's cgroup");
    std::thread::sleep(Duration::from_secs(15));
    let after = cgroup_cpu_ns(&uid).expect("the busy container's cgroup");
    let kernel_millicores = (after - before) / 15_000_000;

    let mut rows = Vec::new();
    let measured = wait_until(METRICS_TIMEOUT, || {
        rows = top_pods(&cluster);
        rows.len() == 2
    });
    assert!(measured, "kubectl top pod never listed both pods: {rows:?}");
    let row = |name: &str| rows.iter().find(|r| r.0 == name).cloned().unwrap();
    let (_, busy_cpu, busy_memory) = row("busy");
    let (_, idle_cpu, _) = row("idle");
    eprintln!("measured: busy {busy_cpu}m (kernel {kernel_millicores}m), idle {idle_cpu}m");
    // A spinning loop gets a whole core on an idle machine and its share on a loaded one:
    // top must agree with the kernel's own counter (other windows, so within a factor of 2).
    assert!(busy_cpu >= 20, "a busy loop uses cpu, top said {busy_cpu}m");
    assert!(
        busy_cpu * 2 >= kernel_millicores && busy_cpu <= kernel_millicores * 2 + 20,
        "top said {busy_cpu}m, the cgroup {kernel_millicores}m"
    );
    assert!(idle_cpu <= 20, "sleep uses no cpu, top said {idle_cpu}m");
    assert!(busy_memory < 64, "a shell loop is small: {busy_memory}Mi");

    // The node row: this node, with at least the busy pod's CPU and some memory in use.
    let node = cluster.server.kubectl_ok(&["top", "node", "--no-headers"]);
    let cells: Vec<&str> = node.split_whitespace().collect();
    assert_eq!(cells.first(), Some(&cluster.node.as_str()), "{node}");
    let node_cpu = millicores(cells[1]);
    assert!(
        node_cpu * 10 >= busy_cpu * 8,
        "the node ({node_cpu}m) runs the busy pod ({busy_cpu}m)"
    );
    assert!(mebibytes(cells[3]) > 0, "{node}");

    // The API as clients see it: discovery, and one pod's metrics by name.
    let resources = cluster.server.kubectl_ok(&[
        "api-resources",
        "--api-group=metrics.k8s.io",
        "--no-headers",
    ]);
    assert!(resources.contains("PodMetrics") && resources.contains("NodeMetrics"));
    let one: serde_json::Value = serde_json::from_str(&cluster.server.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/idle",
    ]))
    .unwrap();
    assert_eq!(one["kind"], "PodMetrics");
    assert_eq!(one["containers"][0]["name"], "app");
    assert!(one["containers"][0]["usage"]["memory"]
        .as_str()
        .unwrap()
        .ends_with("Ki"));
}

#[test]
fn an_hpa_at_fifty_percent_cpu_scales_a_busy_deployment_up() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    // Each pod may use 200m against its 20m request: even a loaded machine's share of a
    // spinning loop is well over the 50 % target.
    cluster.create(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "app", "image": "busybox", "command": ["sh", "-c", BUSY],
                    "resources": {"requests": {"cpu": "20m"}, "limits": {"cpu": "200m"}}
                }]}
            }
        }
    }));
    cluster.create(json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1, "maxReplicas": 3,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]
        }
    }));

    let replicas = || {
        cluster
            .server
            .kubectl_ok(&[
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.spec.replicas}",
            ])
            .trim()
            .to_string()
    };
    let scaled = wait_until(Duration::from_secs(180), || replicas() == "3");
    let hpa = cluster.server.kubectl(&["get", "hpa", "web", "-o", "yaml"]);
    assert!(
        scaled,
        "the deployment was never scaled to 3: replicas {}, hpa:\n{}",
        replicas(),
        String::from_utf8_lossy(&hpa.stdout)
    );

    // The status as upstream reports it, and the Table's targets column.
    let mut status = serde_json::Value::Null;
    let reported = wait_until(Duration::from_secs(60), || {
        let out = cluster
            .server
            .kubectl_ok(&["get", "hpa", "web", "-o", "json"]);
        status = serde_json::from_str::<serde_json::Value>(&out).unwrap()["status"].clone();
        status["desiredReplicas"] == 3 && status["currentReplicas"] == 3
    });
    assert!(reported, "hpa status never caught up: {status:#}");
    let condition = |type_: &str| {
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == type_)
            .cloned()
            .unwrap_or_else(|| panic!("no {type_} condition: {status:#}"))
    };
    assert_eq!(condition("AbleToScale")["status"], "True");
    assert_eq!(condition("ScalingActive")["reason"], "ValidMetricFound");
    let utilization = status["currentMetrics"][0]["resource"]["current"]["averageUtilization"]
        .as_i64()
        .unwrap();
    assert!(utilization > 0, "busy pods use cpu: {utilization}%");
    assert!(status["lastScaleTime"].is_string());

    let table = cluster.server.kubectl_ok(&["get", "hpa", "web"]);
    let row = table.lines().nth(1).unwrap_or_default().to_string();
    assert!(row.contains("Deployment/web"), "{table}");
    assert!(
        row.contains(&format!("cpu: {utilization}%/50%"))
            || row.split_whitespace().any(|cell| cell.ends_with("%/50%")),
        "{table}"
    );

    // Events go through events.k8s.io/v1, as upstream's controllers record them.
    let events: serde_json::Value = serde_json::from_str(&cluster.server.kubectl_ok(&[
        "get",
        "events.v1.events.k8s.io",
        "-o",
        "json",
    ]))
    .unwrap();
    let rescaled = events["items"].as_array().unwrap().iter().any(|e| {
        e["reason"] == "SuccessfulRescale"
            && e["regarding"]["name"] == "web"
            && e["note"].as_str().unwrap_or("").starts_with("New size: ")
    });
    assert!(rescaled, "no rescale event: {events:#}");
    cluster.server.kubectl_ok(&["delete", "hpa", "web"]);
}
