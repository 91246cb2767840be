//! The scheduler's placement rules and preemption, driven with the real kubectl against a real
//! `berth server` in a test-made network namespace. Needs root.
//!
//! Extra Nodes are plain API objects with no kubelet behind them: pods bound there never run,
//! which is all a scheduling test needs. A long node grace period keeps them Ready meanwhile.

mod common;

use std::time::Duration;

use common::netns::Netns;
use common::server::BerthServer;
use common::wait_until;
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(60);
const CONFIG: &str = "[controllers]\nnode_monitor_grace_period_seconds = 3600\n";

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn create(server: &BerthServer, object: &Value) {
    let out = server.kubectl_stdin(&["create", "-f", "-"], &object.to_string());
    assert!(
        out.status.success(),
        "kubectl create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn get(server: &BerthServer, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = server.kubectl(&all);
    match out.status.success() {
        true => json_of(&String::from_utf8_lossy(&out.stdout)),
        false => Value::Null,
    }
}

/// A Ready Node object nobody runs, with room for a few pods.
fn fake_node(server: &BerthServer, name: &str, cpu: &str) {
    fake_node_with(
        server,
        name,
        json!({"cpu": cpu, "memory": "8Gi", "pods": "110"}),
    );
}

/// A Ready Node object nobody runs, with `resources` as its capacity and allocatable.
fn fake_node_with(server: &BerthServer, name: &str, resources: Value) {
    create(
        server,
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name,
            "labels": {"kubernetes.io/hostname": name}}}),
    );
    let now = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .expect("round a timestamp")
        .to_string();
    let status = json!({"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "capacity": resources,
        "allocatable": resources,
    }});
    server.kubectl_ok(&[
        "patch",
        "node",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
}

fn node_of(pod: &Value) -> Option<String> {
    pod["spec"]["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .map(String::from)
}

/// The notes of the events (events.k8s.io/v1, as the scheduler records them) about a pod.
fn events_for(server: &BerthServer, pod: &str, reason: &str) -> Vec<String> {
    let events = get(server, &["events.v1.events.k8s.io"]);
    events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["name"] == pod && e["reason"] == reason)
        .map(|e| e["note"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn required_anti_affinity_spreads_a_deployment_one_pod_per_node() {
    let ns = Netns::new();
    let server = BerthServer::start_with_config(&ns, CONFIG);
    let pid = std::process::id();
    let fakes: Vec<String> = (1..=3).map(|i| format!("fake-{pid}-{i}")).collect();
    for name in &fakes {
        fake_node(&server, name, "4");
    }
    let nodes = get(&server, &["nodes"]);
    let node_count = nodes["items"].as_array().map_or(0, Vec::len);
    assert_eq!(
        node_count, 4,
        "three fake nodes and this machine's: {nodes:#}"
    );

    create(
        &server,
        &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": {"app": "web"}},
                         "topologyKey": "kubernetes.io/hostname"}]}},
                    "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}}}),
    );
    let mut placed: Vec<String> = Vec::new();
    let all_bound = wait_until(TIMEOUT, || {
        let pods = get(&server, &["pods", "-l", "app=web"]);
        placed = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(node_of)
            .collect();
        placed.len() == 4
    });
    assert!(all_bound, "not all four replicas were bound: {placed:?}");
    placed.sort();
    placed.dedup();
    assert_eq!(placed.len(), 4, "two replicas share a node: {placed:?}");

    // A fifth replica has nowhere to go, and says why.
    server.kubectl_ok(&["scale", "deployment/web", "--replicas=5"]);
    let mut message = String::new();
    let reported = wait_until(TIMEOUT, || {
        let pods = get(&server, &["pods", "-l", "app=web"]);
        let pending = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| node_of(p).is_none())
            .and_then(|p| p["metadata"]["name"].as_str().map(String::from));
        let Some(pending) = pending else {
            return false;
        };
        message = events_for(&server, &pending, "FailedScheduling").join(" | ");
        !message.is_empty()
    });
    assert!(reported, "no FailedScheduling event for the fifth replica");
    assert!(
        message
            .contains("0/4 nodes are available: 4 node(s) didn't match pod anti-affinity rules."),
        "{message}"
    );
}

#[test]
fn a_higher_priority_pod_preempts_a_lower_one_unless_its_policy_is_never() {
    let ns = Netns::new();
    let server = BerthServer::start_with_config(&ns, CONFIG);
    let node = format!("small-{}", std::process::id());
    fake_node(&server, &node, "1");

    // The system classes exist from the start.
    let critical = get(&server, &["priorityclass", "system-node-critical"]);
    assert_eq!(critical["value"], 2_000_001_000);

    for (name, value, policy) in [
        ("low", 10, "PreemptLowerPriority"),
        ("high", 1000, "PreemptLowerPriority"),
        ("polite", 2000, "Never"),
    ] {
        create(
            &server,
            &json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": name}, "value": value, "preemptionPolicy": policy}),
        );
    }
    let pod = |name: &str, class: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"priorityClassName": class, "terminationGracePeriodSeconds": 0,
                "nodeSelector": {"kubernetes.io/hostname": node},
                "containers": [{"name": "c", "image": "busybox",
                    "resources": {"requests": {"cpu": "800m"}}}]}})
    };
    create(&server, &pod("victim", "low"));
    let bound = wait_until(TIMEOUT, || {
        node_of(&get(&server, &["pod", "victim"])).as_deref() == Some(node.as_str())
    });
    assert!(bound, "the low-priority pod was not bound");

    // Priority admission resolved the class name.
    let polite = pod("polite", "polite");
    create(&server, &polite);
    let admitted = get(&server, &["pod", "polite"]);
    assert_eq!(admitted["spec"]["priority"], 2000);
    assert_eq!(admitted["spec"]["preemptionPolicy"], "Never");
    let refused = wait_until(TIMEOUT, || {
        !events_for(&server, "polite", "FailedScheduling").is_empty()
    });
    assert!(refused, "the polite pod was never found unschedulable");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !get(&server, &["pod", "victim"]).is_null(),
        "a pod with preemptionPolicy Never evicted another"
    );
    server.kubectl_ok(&["delete", "pod", "polite", "--wait=false"]);

    create(&server, &pod("preemptor", "high"));
    let preempted = wait_until(TIMEOUT, || {
        let preemptor = get(&server, &["pod", "preemptor"]);
        get(&server, &["pod", "victim"]).is_null()
            && node_of(&preemptor).as_deref() == Some(node.as_str())
    });
    assert!(
        preempted,
        "the high-priority pod did not take the low one's place: {:#}",
        get(&server, &["pods"])
    );
    let preemptor = get(&server, &["pod", "preemptor"]);
    assert_eq!(preemptor["status"]["nominatedNodeName"], node.as_str());
    let messages = events_for(&server, "victim", "Preempted");
    let uid = preemptor["metadata"]["uid"].as_str().unwrap_or("");
    assert!(
        messages
            .iter()
            .any(|m| m == &format!("Preempted by pod {uid} on node {node}")),
        "{messages:?}"
    );
}

#[test]
fn pods_wanting_more_ephemeral_storage_or_extended_resources_than_nodes_have_say_which() {
    let ns = Netns::new();
    let server = BerthServer::start_with_config(&ns, CONFIG);
    let node = format!("gpu-{}", std::process::id());
    fake_node_with(
        &server,
        &node,
        json!({"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "1Gi",
            "example.com/gpu": "1"}),
    );
    let pod = |name: &str, requests: Value| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 0,
                "nodeSelector": {"kubernetes.io/hostname": node},
                "containers": [{"name": "c", "image": "busybox",
                    "resources": {"requests": requests, "limits": requests}}]}})
    };
    create(&server, &pod("one-gpu", json!({"example.com/gpu": "1"})));
    let bound = wait_until(TIMEOUT, || {
        node_of(&get(&server, &["pod", "one-gpu"])).as_deref() == Some(node.as_str())
    });
    assert!(bound, "the pod asking for the one GPU was not bound");

    create(&server, &pod("second-gpu", json!({"example.com/gpu": "1"})));
    create(
        &server,
        &pod("scratch", json!({"ephemeral-storage": "2Gi"})),
    );
    for (name, reason) in [
        ("second-gpu", "1 Insufficient example.com/gpu"),
        ("scratch", "1 Insufficient ephemeral-storage"),
    ] {
        let mut notes = Vec::new();
        let reported = wait_until(TIMEOUT, || {
            notes = events_for(&server, name, "FailedScheduling");
            !notes.is_empty()
        });
        assert!(reported, "no FailedScheduling event for {name}");
        let expected = format!(
            "0/2 nodes are available: {reason}, 1 node(s) didn't match Pod's node affinity/selector."
        );
        assert!(notes.iter().any(|n| n.contains(&expected)), "{notes:?}");
        assert!(node_of(&get(&server, &["pod", name])).is_none());
    }
}

/// A pod of app `spread` that wants its app spread over zones with `max_skew`, `when`
/// the constraint cannot be met.
fn spread_pod(name: &str, when: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "spread"}},
        "spec": {"terminationGracePeriodSeconds": 0,
            "topologySpreadConstraints": [{"maxSkew": 1, "whenUnsatisfiable": when,
                "topologyKey": "topology.kubernetes.io/zone",
                "labelSelector": {"matchLabels": {"app": "spread"}}}],
            "containers": [{"name": "c", "image": "busybox"}]}})
}

#[test]
fn topology_spread_keeps_a_pod_pending_past_max_skew_unless_it_may_schedule_anyway() {
    let ns = Netns::new();
    let server = BerthServer::start_with_config(&ns, CONFIG);
    let pid = std::process::id();
    let (zone_a, zone_b) = (format!("zone-a-{pid}"), format!("zone-b-{pid}"));
    for (node, zone) in [(&zone_a, "a"), (&zone_b, "b")] {
        fake_node(&server, node, "4");
        server.kubectl_ok(&[
            "label",
            "node",
            node,
            &format!("topology.kubernetes.io/zone={zone}"),
        ]);
    }
    // Zone b counts as a domain (taints are ignored when counting, by default), but nothing
    // may go there for now.
    server.kubectl_ok(&["taint", "node", &zone_b, "example.com/full=yes:NoSchedule"]);
    let mut first = spread_pod("first", "DoNotSchedule");
    first["spec"]["nodeName"] = json!(zone_a);
    create(&server, &first);

    // Zone a would hold 2 against zone b's 0: past maxSkew 1. This machine's node has no zone.
    create(&server, &spread_pod("strict", "DoNotSchedule"));
    let mut notes = Vec::new();
    let reported = wait_until(TIMEOUT, || {
        notes = events_for(&server, "strict", "FailedScheduling");
        !notes.is_empty()
    });
    assert!(reported, "no FailedScheduling event for the strict pod");
    let expected = "0/3 nodes are available: 1 node(s) didn't match pod topology spread \
        constraints, 1 node(s) didn't match pod topology spread constraints (missing required \
        label), 1 node(s) had untolerated taint {example.com/full: yes}.";
    assert!(notes.iter().any(|n| n.contains(expected)), "{notes:?}");
    let strict = get(&server, &["pod", "strict"]);
    assert_eq!(node_of(&strict), None);
    let scheduled = strict["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "PodScheduled")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(scheduled["status"], "False", "{strict:#}");
    assert_eq!(scheduled["reason"], "Unschedulable", "{strict:#}");

    // The same constraint as a preference places the pod all the same.
    create(&server, &spread_pod("relaxed", "ScheduleAnyway"));
    let bound = wait_until(TIMEOUT, || {
        node_of(&get(&server, &["pod", "relaxed"])).is_some()
    });
    assert!(bound, "the ScheduleAnyway pod was not placed");
    assert_ne!(
        node_of(&get(&server, &["pod", "relaxed"])).as_deref(),
        Some(zone_b.as_str())
    );

    // Once zone b takes pods, the strict pod goes there: the only place within the skew.
    server.kubectl_ok(&["taint", "node", &zone_b, "example.com/full-"]);
    let mut placed = None;
    let bound = wait_until(TIMEOUT, || {
        placed = node_of(&get(&server, &["pod", "strict"]));
        placed.is_some()
    });
    assert!(bound, "the strict pod stayed pending after the taint went");
    assert_eq!(placed.as_deref(), Some(zone_b.as_str()));
}
