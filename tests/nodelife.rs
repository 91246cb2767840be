//! Node lifecycle, drain and disruption budgets, quota and limit ranges, pod GC, driven with the
//! real kubectl against a real `berth server` in a test-made network namespace. Needs root.
//!
//! Extra Nodes here are plain API objects with no kubelet behind them: the test itself plays
//! their kubelet where one is needed (posting Ready, marking pods ready, confirming deletions).

mod common;

use std::time::Duration;

use common::netns::Netns;
use common::server::BerthServer;
use common::wait_until;
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(40);

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A server whose controllers read `config` (TOML), e.g. short node grace periods.
fn server_with(ns: &Netns, config: &str) -> BerthServer {
    let mut server = BerthServer::start(ns);
    std::fs::write(server.data_dir().join("test-config.toml"), config).expect("write config");
    server.restart();
    server
}

fn create(server: &BerthServer, object: &Value) {
    let out = server.kubectl_stdin(
        &["create", "--validate=false", "-f", "-"],
        &object.to_string(),
    );
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

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap()
        .to_string()
}

/// A Node object nobody runs, Ready as of now.
fn fake_node(server: &BerthServer, name: &str) {
    create(
        server,
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name,
            "labels": {"kubernetes.io/hostname": name}}}),
    );
    post_ready(server, name);
}

/// What a kubelet's status update does: Ready=True with a fresh heartbeat, and capacity.
fn post_ready(server: &BerthServer, node: &str) {
    let now = now_rfc3339();
    let status = json!({"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
        "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
    }});
    server.kubectl_ok(&[
        "patch",
        "node",
        node,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
}

fn taints(server: &BerthServer, node: &str) -> Vec<(String, String)> {
    let node = get(server, &["node", node]);
    node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["key"].as_str().unwrap_or("").to_string(),
                t["effect"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn pod_on(name: &str, node: &str, tolerations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "tolerations": tolerations,
            "containers": [{"name": "c", "image": "busybox"}]}})
}

fn is_evicted(server: &BerthServer, pod: &str) -> bool {
    let pod = get(server, &["pod", pod]);
    pod.is_null() || !pod["metadata"]["deletionTimestamp"].is_null()
}

#[test]
fn a_silent_node_is_tainted_unreachable_and_pods_go_after_their_toleration() {
    let ns = Netns::new();
    // The real node renews its Lease every 10 s: a 15 s grace keeps it Ready.
    let server = server_with(
        &ns,
        "[controllers]\nnode_monitor_period_seconds = 1\nnode_monitor_grace_period_seconds = 15\n",
    );
    let node = format!("fake-{}", std::process::id());
    fake_node(&server, &node);
    let unreachable = "node.kubernetes.io/unreachable";
    let briefly = json!([{"key": unreachable, "operator": "Exists", "effect": "NoExecute",
        "tolerationSeconds": 2}]);
    let forever = json!([{"key": unreachable, "operator": "Exists", "effect": "NoExecute"}]);
    create(&server, &pod_on("brief", &node, briefly));
    create(&server, &pod_on("patient", &node, forever));
    create(&server, &pod_on("defaulted", &node, json!([])));

    // DefaultTolerationSeconds gave the pod without tolerations 300 s for both taints.
    let defaulted = get(&server, &["pod", "defaulted"]);
    let tolerations = defaulted["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for key in ["node.kubernetes.io/not-ready", unreachable] {
        assert!(
            tolerations
                .iter()
                .any(|t| t["key"] == key && t["tolerationSeconds"] == 300),
            "no default toleration for {key}: {tolerations:?}"
        );
    }

    // Nobody posts for the fake node: after the grace period it is Unknown and tainted.
    let tainted = wait_until(TIMEOUT, || {
        let t = taints(&server, &node);
        t.contains(&(unreachable.into(), "NoSchedule".into()))
            && t.contains(&(unreachable.into(), "NoExecute".into()))
    });
    assert!(
        tainted,
        "no unreachable taints: {:?}\n{}",
        taints(&server, &node),
        server.log()
    );
    let status = get(&server, &["node", &node]);
    let ready = status["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
        .unwrap_or_default();
    assert_eq!(ready["status"], "Unknown");
    assert_eq!(ready["reason"], "NodeStatusUnknown");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");

    // The pod that tolerates it for 2 s goes; the others stay.
    assert!(
        wait_until(Duration::from_secs(15), || is_evicted(&server, "brief")),
        "the briefly tolerating pod was not evicted"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !is_evicted(&server, "patient"),
        "a pod tolerating for ever was evicted"
    );
    assert!(
        !is_evicted(&server, "defaulted"),
        "a pod with 300 s left was evicted"
    );

    // The real node heartbeats in time: never tainted.
    let real = server.kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"]);
    for name in real.split_whitespace().filter(|n| *n != node) {
        assert!(
            taints(&server, name).is_empty(),
            "the live node {name} got tainted"
        );
    }

    // Heartbeats return: Ready again, the taints go.
    post_ready(&server, &node);
    assert!(
        wait_until(TIMEOUT, || taints(&server, &node).is_empty()),
        "taints stayed after the node came back: {:?}",
        taints(&server, &node)
    );
    assert!(!is_evicted(&server, "patient"));
}

#[test]
fn cordon_and_uncordon_set_unschedulable_and_its_taint() {
    let ns = Netns::new();
    let server = server_with(&ns, "[controllers]\nnode_monitor_period_seconds = 1\n");
    let node = format!("fake-{}", std::process::id());
    fake_node(&server, &node);
    server.kubectl_ok(&["cordon", &node]);
    assert_eq!(
        get(&server, &["node", &node])["spec"]["unschedulable"],
        true
    );
    let unschedulable = (
        "node.kubernetes.io/unschedulable".to_string(),
        "NoSchedule".to_string(),
    );
    assert!(
        wait_until(TIMEOUT, || taints(&server, &node).contains(&unschedulable)),
        "no unschedulable taint on a cordoned node"
    );
    server.kubectl_ok(&["uncordon", &node]);
    assert!(
        wait_until(TIMEOUT, || taints(&server, &node).is_empty()),
        "the unschedulable taint stayed after uncordon"
    );
}

/// Plays the kubelet of the fake `nodes` until `stop`: a pod bound there for a second turns
/// Running and Ready, and a pod being deleted is confirmed gone (what a kubelet does once its
/// containers stopped).
fn fake_kubelet(server: &BerthServer, nodes: &[String], stop: &std::sync::atomic::AtomicBool) {
    use std::sync::atomic::Ordering;
    while !stop.load(Ordering::Relaxed) {
        let pods = get(server, &["pods", "-A"]);
        for pod in pods["items"].as_array().into_iter().flatten() {
            let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
            if !nodes.iter().any(|n| n == node) {
                continue;
            }
            let name = pod["metadata"]["name"].as_str().unwrap_or("");
            let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("");
            if !pod["metadata"]["deletionTimestamp"].is_null() {
                let _ = server.kubectl(&[
                    "delete",
                    "pod",
                    name,
                    "-n",
                    namespace,
                    "--grace-period=0",
                    "--force",
                    "--wait=false",
                ]);
                continue;
            }
            let ready = pod["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            let created: jiff::Timestamp = pod["metadata"]["creationTimestamp"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(jiff::Timestamp::now);
            let age = jiff::Timestamp::now().duration_since(created);
            if ready || age < jiff::SignedDuration::from_secs(1) {
                continue;
            }
            let now = now_rfc3339();
            let status = json!({"status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            ]}});
            let _ = server.kubectl(&[
                "patch",
                "pod",
                name,
                "-n",
                namespace,
                "--subresource=status",
                "--type=merge",
                "-p",
                &status.to_string(),
            ]);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn pdb_status(server: &BerthServer, name: &str) -> Value {
    get(server, &["pdb", name])["status"].clone()
}

#[test]
fn drain_evicts_through_the_disruption_budget_and_waits_for_replacements() {
    use std::sync::atomic::AtomicBool;
    let ns = Netns::new();
    let server = server_with(&ns, "[controllers]\nnode_monitor_period_seconds = 1\n");
    // Only the fake nodes take pods: this machine's own node is cordoned.
    let real = server.kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"]);
    for name in real.split_whitespace() {
        server.kubectl_ok(&["cordon", name]);
    }
    let pid = std::process::id();
    let (a, b) = (format!("drain-a-{pid}"), format!("drain-b-{pid}"));
    fake_node(&server, &a);
    fake_node(&server, &b);
    server.kubectl_ok(&["cordon", &b]);
    create(
        &server,
        &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}),
    );
    create(
        &server,
        &json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "web"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}),
    );
    let stop = AtomicBool::new(false);
    let nodes = [a.clone(), b.clone()];
    std::thread::scope(|scope| {
        scope.spawn(|| fake_kubelet(&server, &nodes, &stop));
        // Stops the fake kubelet however this closure ends, so a failed assertion fails the
        // test instead of hanging it.
        let _stop = StopOnDrop(&stop);
        let budget_settled = wait_until(TIMEOUT, || {
            let s = pdb_status(&server, "web");
            s["currentHealthy"] == 2 && s["disruptionsAllowed"] == 1
        });
        let status = pdb_status(&server, "web");
        assert!(
            budget_settled,
            "the budget never saw 2 healthy pods: {status:#}"
        );
        assert_eq!(status["desiredHealthy"], 1);
        assert_eq!(status["expectedPods"], 2);
        assert_eq!(status["observedGeneration"], 1);
        let condition = &status["conditions"][0];
        assert_eq!(
            (
                &condition["type"],
                &condition["status"],
                &condition["reason"]
            ),
            (
                &json!("DisruptionAllowed"),
                &json!("True"),
                &json!("SufficientPods")
            )
        );

        server.kubectl_ok(&["uncordon", &b]);
        let out = server.kubectl(&["drain", &a, "--ignore-daemonsets", "--timeout=90s"]);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "drain failed:\n{stdout}\n{stderr}");
        assert_eq!(stdout.matches(" evicted").count(), 2, "{stdout}");
        // Both pods were asked for at once; the budget let only one go until its replacement
        // on the other node was ready.
        assert!(
            format!("{stdout}{stderr}")
                .contains("Cannot evict pod as it would violate the pod's disruption budget"),
            "no eviction was refused:\n{stdout}\n{stderr}"
        );
        assert_eq!(get(&server, &["node", &a])["spec"]["unschedulable"], true);
        let settled = wait_until(TIMEOUT, || {
            let pods = get(&server, &["pods", "-l", "app=web"]);
            let items = pods["items"].as_array().cloned().unwrap_or_default();
            items.len() == 2 && items.iter().all(|p| p["spec"]["nodeName"] == json!(b))
        });
        assert!(settled, "the pods did not all move to {b}");
        assert!(
            wait_until(TIMEOUT, || pdb_status(&server, "web")["currentHealthy"]
                == 2),
            "the budget did not see the replacements"
        );
    });
}

struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn create_in(server: &BerthServer, namespace: &str, object: &Value) -> std::process::Output {
    server.kubectl_stdin(
        &["create", "--validate=false", "-n", namespace, "-f", "-"],
        &object.to_string(),
    )
}

fn pod_with(name: &str, node: &str, resources: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node,
            "containers": [{"name": "c", "image": "busybox", "resources": resources}]}})
}

fn refused_with(out: &std::process::Output, message: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the create was admitted; wanted: {message}"
    );
    assert!(
        stderr.contains("(Forbidden)") && stderr.contains(message),
        "wanted 403 with {message:?}, got: {stderr}"
    );
}

#[test]
fn resource_quotas_refuse_what_exceeds_them_and_count_usage() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let node = format!("quota-{}", std::process::id());
    fake_node(&server, &node);
    for namespace in ["counts", "compute"] {
        server.kubectl_ok(&["create", "namespace", namespace]);
    }
    let quota = |name: &str, hard: Value| {
        json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name},
            "spec": {"hard": hard}})
    };

    // Object counts.
    assert!(create_in(
        &server,
        "counts",
        &quota("q", json!({"pods": "2", "count/configmaps": "10"}))
    )
    .status
    .success());
    for name in ["p1", "p2"] {
        let out = create_in(&server, "counts", &pod_with(name, &node, json!({})));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    refused_with(
        &create_in(&server, "counts", &pod_with("p3", &node, json!({}))),
        "pods \"p3\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2",
    );
    let counted = wait_until(TIMEOUT, || {
        let q = get(&server, &["resourcequota", "q", "-n", "counts"]);
        q["status"]["used"]["pods"] == "2" && q["status"]["hard"]["pods"] == "2"
    });
    assert!(
        counted,
        "status.used never counted the pods: {:#}",
        get(&server, &["quota", "q", "-n", "counts"])
    );
    // A finished pod no longer counts.
    server.kubectl_ok(&[
        "patch",
        "pod",
        "p1",
        "-n",
        "counts",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Succeeded"}}"#,
    ]);
    let out = create_in(&server, "counts", &pod_with("p3", &node, json!({})));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Compute resources: containers must state them, and the sums are bounded.
    assert!(create_in(
        &server,
        "compute",
        &quota(
            "compute",
            json!({"requests.cpu": "1", "limits.memory": "1Gi"})
        )
    )
    .status
    .success());
    refused_with(
        &create_in(&server, "compute", &pod_with("bare", &node, json!({}))),
        "pods \"bare\" is forbidden: failed quota: compute: must specify limits.memory for: c; requests.cpu for: c",
    );
    let sized = json!({"requests": {"cpu": "600m"}, "limits": {"memory": "512Mi"}});
    let out = create_in(&server, "compute", &pod_with("one", &node, sized.clone()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    refused_with(
        &create_in(&server, "compute", &pod_with("two", &node, sized)),
        "exceeded quota: compute, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1",
    );
    let counted = wait_until(TIMEOUT, || {
        let q = get(&server, &["resourcequota", "compute", "-n", "compute"]);
        q["status"]["used"]["requests.cpu"] == "600m"
            && q["status"]["used"]["limits.memory"] == "512Mi"
    });
    assert!(
        counted,
        "{:#}",
        get(&server, &["quota", "compute", "-n", "compute"])
    );
}

#[test]
fn twenty_racing_pod_creates_fill_a_quota_of_five_exactly() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, DeleteParams, PostParams};

    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let node = format!("race-{}", std::process::id());
    fake_node(&server, &node);
    server.kubectl_ok(&["create", "namespace", "race"]);
    let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "five"},
        "spec": {"hard": {"pods": "5"}}});
    assert!(create_in(&server, "race", &quota).status.success());

    let kubeconfig = server.kubeconfig_path().to_path_buf();
    let racing_node = node.clone();
    let outcomes: Vec<Result<(), (u16, String)>> =
        common::inside::block_on_in_netns(&ns.name, move || async move {
            let client = common::inside::kube_client(&kubeconfig).await;
            let pods: Api<Pod> = Api::namespaced(client, "race");
            let creates = (0..20).map(|i| {
                let pods = pods.clone();
                let pod: Pod = serde_json::from_value(pod_with(
                    &format!("racer-{i}"),
                    &racing_node,
                    json!({}),
                ))
                .expect("a pod");
                async move {
                    match pods.create(&PostParams::default(), &pod).await {
                        Ok(_) => Ok(()),
                        Err(kube::Error::Api(e)) => Err((e.code, e.message)),
                        Err(e) => Err((0, e.to_string())),
                    }
                }
            });
            futures::future::join_all(creates).await
        });
    let admitted = outcomes.iter().filter(|o| o.is_ok()).count();
    let refusals: Vec<&(u16, String)> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert_eq!(admitted, 5, "{refusals:?}");
    assert!(
        refusals
            .iter()
            .all(|(code, message)| *code == 403 && message.contains("exceeded quota: five")),
        "{refusals:?}"
    );
    let stored = get(&server, &["pods", "-n", "race"]);
    assert_eq!(stored["items"].as_array().map(Vec::len), Some(5));
    let counted = wait_until(TIMEOUT, || {
        get(&server, &["resourcequota", "five", "-n", "race"])["status"]["used"]["pods"] == "5"
    });
    assert!(
        counted,
        "{:#}",
        get(&server, &["quota", "five", "-n", "race"])
    );

    // A place freed is a place taken, at once (no waiting for the quota controller).
    let victim = stored["items"][0]["metadata"]["name"]
        .as_str()
        .expect("a pod name")
        .to_string();
    let kubeconfig = server.kubeconfig_path().to_path_buf();
    let (late, later) = common::inside::block_on_in_netns(&ns.name, move || async move {
        let client = common::inside::kube_client(&kubeconfig).await;
        let pods: Api<Pod> = Api::namespaced(client, "race");
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        pods.delete(&victim, &now).await.expect("delete a racer");
        let create = |name: &str| {
            let pod: Pod = serde_json::from_value(pod_with(name, &node, json!({}))).expect("a pod");
            let pods = pods.clone();
            async move { pods.create(&PostParams::default(), &pod).await.map(|_| ()) }
        };
        (create("late").await, create("later").await)
    });
    assert!(late.is_ok(), "{late:?}");
    assert!(
        matches!(&later, Err(kube::Error::Api(e)) if e.code == 403),
        "{later:?}"
    );
}

#[test]
fn limit_ranges_default_and_bound_container_resources() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let node = format!("limits-{}", std::process::id());
    fake_node(&server, &node);
    server.kubectl_ok(&["create", "namespace", "lr"]);
    let range = json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "lr"},
        "spec": {"limits": [{"type": "Container",
            "default": {"cpu": "500m", "memory": "128Mi"},
            "defaultRequest": {"cpu": "100m"},
            "max": {"cpu": "1"},
            "maxLimitRequestRatio": {"cpu": "10"}}]}});
    assert!(create_in(&server, "lr", &range).status.success());
    // A quota on requests: the defaults are set before the quota looks.
    let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "cpu"},
        "spec": {"hard": {"requests.cpu": "1"}}});
    assert!(create_in(&server, "lr", &quota).status.success());

    let out = create_in(&server, "lr", &pod_with("plain", &node, json!({})));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pod = get(&server, &["pod", "plain", "-n", "lr"]);
    let resources = &pod["spec"]["containers"][0]["resources"];
    assert_eq!(resources["requests"]["cpu"], "100m");
    assert_eq!(resources["requests"]["memory"], "128Mi");
    assert_eq!(resources["limits"]["cpu"], "500m");
    assert_eq!(resources["limits"]["memory"], "128Mi");
    assert_eq!(
        pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c"
    );

    refused_with(
        &create_in(
            &server,
            "lr",
            &pod_with("big", &node, json!({"limits": {"cpu": "2"}})),
        ),
        "pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2",
    );
    refused_with(
        &create_in(
            &server,
            "lr",
            &pod_with(
                "skewed",
                &node,
                json!({"requests": {"cpu": "50m"}, "limits": {"cpu": "1"}}),
            ),
        ),
        "cpu max limit to request ratio per Container is 10, but provided ratio is 20.000000",
    );
}

#[test]
fn pod_gc_deletes_the_oldest_finished_pods_and_pods_of_deleted_nodes() {
    let ns = Netns::new();
    let server = server_with(
        &ns,
        "[controllers]\nterminated_pod_gc_threshold = 2\npod_gc_period_seconds = 1\n",
    );
    let pid = std::process::id();
    let (node, doomed) = (format!("gc-{pid}"), format!("gone-{pid}"));
    fake_node(&server, &node);
    fake_node(&server, &doomed);
    // Creation timestamps have second resolution: space the pods out so their age is clear.
    for name in ["f1", "f2", "f3", "f4"] {
        create(&server, &pod_on(name, &node, json!([])));
        server.kubectl_ok(&[
            "patch",
            "pod",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Succeeded"}}"#,
        ]);
        std::thread::sleep(Duration::from_millis(1100));
    }
    create(&server, &pod_on("running", &node, json!([])));
    create(&server, &pod_on("orphan", &doomed, json!([])));
    server.kubectl_ok(&["delete", "node", &doomed]);

    let exists = |name: &str| !get(&server, &["pod", name]).is_null();
    let collected = wait_until(TIMEOUT, || {
        !exists("f1") && !exists("f2") && !exists("orphan")
    });
    assert!(
        collected,
        "left: {:?}",
        ["f1", "f2", "orphan"]
            .iter()
            .filter(|n| exists(n))
            .collect::<Vec<_>>()
    );
    std::thread::sleep(Duration::from_secs(2));
    for name in ["f3", "f4", "running"] {
        assert!(exists(name), "{name} was collected");
    }
}
