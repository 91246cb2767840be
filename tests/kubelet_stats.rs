//! The kubelet's node endpoints through the API server's node proxy, as
//! `kubectl get --raw /api/v1/nodes/<node>/proxy/...` reads them: the stats summary, the
//! Prometheus metrics and the node's logs, for the server's own node with a real container.
//! Needs root (network namespaces, cgroups, mounts); CI runs as root.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::netns::Netns;
use common::wait_until;
use serde_json::json;

/// The sampler needs two rounds 15 s apart after the container started.
const STATS_TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn a_running_pod_shows_in_the_nodes_stats_summary_metrics_and_the_logs_are_listed() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    cluster.create(cluster.pod(
        "idle",
        json!({"containers": [{"name": "app", "image": "busybox", "command": ["sleep", "3600"]}]}),
    ));
    cluster.wait_for("idle", "Running", |p| p["status"]["phase"] == "Running");
    let proxy = |path: &str| format!("/api/v1/nodes/{}/proxy/{path}", cluster.node);

    let mut summary = serde_json::Value::Null;
    let measured = wait_until(STATS_TIMEOUT, || {
        let out = cluster
            .server
            .kubectl(&["get", "--raw", &proxy("stats/summary")]);
        summary = serde_json::from_slice(&out.stdout).unwrap_or_default();
        summary["pods"].as_array().is_some_and(|pods| {
            pods.iter().any(|p| {
                p["podRef"]["name"] == "idle"
                    && p["containers"][0]["cpu"]["usageNanoCores"].is_u64()
            })
        })
    });
    assert!(
        measured,
        "the pod's container never got a CPU rate: {summary:#}"
    );
    assert_eq!(summary["node"]["nodeName"], cluster.node.as_str());
    assert!(summary["node"]["memory"]["workingSetBytes"].as_u64() > Some(0));
    assert!(summary["node"]["fs"]["capacityBytes"].as_u64() > Some(0));
    let pod = summary["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["podRef"]["name"] == "idle")
        .unwrap();
    assert_eq!(pod["podRef"]["namespace"], "default");
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "the shim is not a container: {pod:#}");
    assert_eq!(containers[0]["name"], "app");
    assert!(containers[0]["memory"]["workingSetBytes"].as_u64() > Some(0));

    let resource = cluster
        .server
        .kubectl_ok(&["get", "--raw", &proxy("metrics/resource")]);
    let series =
        "container_memory_working_set_bytes{container=\"app\",namespace=\"default\",pod=\"idle\"}";
    assert!(resource.contains(series), "{resource}");
    assert!(resource.contains("resource_scrape_error 0"), "{resource}");
    let kubelet = cluster
        .server
        .kubectl_ok(&["get", "--raw", &proxy("metrics")]);
    assert!(kubelet.contains("kubelet_running_pods 1"), "{kubelet}");
    let cadvisor = cluster
        .server
        .kubectl_ok(&["get", "--raw", &proxy("metrics/cadvisor")]);
    assert!(
        cadvisor.contains("container_cpu_usage_seconds_total{container=\"app\",cpu=\"total\""),
        "{cadvisor}"
    );

    // The node's /var/log: listed, and nothing outside it is reachable.
    let listing = cluster
        .server
        .kubectl_ok(&["get", "--raw", &proxy("logs/")]);
    assert!(listing.contains("<pre>"), "{listing}");
    let escape = cluster
        .server
        .kubectl(&["get", "--raw", &proxy("logs/..%2F..%2Fetc%2Fpasswd")]);
    assert!(
        !escape.status.success(),
        "a path out of /var/log was served"
    );
    assert!(!String::from_utf8_lossy(&escape.stdout).contains("root:"));
}
