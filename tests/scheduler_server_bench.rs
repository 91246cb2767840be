//! Scheduler figures against a whole `berth server` (controllers, agent, everything) in a
//! test-made network namespace. Ignored by default; run with
//! `BERTH_TEST_BINARY=<optimised berth> cargo test --test scheduler_server_bench -- --ignored --nocapture`
//! so an optimised build is measured. Needs root.
//!
//! Pods go to a fake Node (an API object with no kubelet behind it), so they only need
//! scheduling: no image pull, nothing runs. Printed: a Deployment scaled 0 → 100 (time until all
//! bound), the scheduler alone binding 100 pods already pending (the node is cordoned while they
//! are created, then uncordoned), and the server's CPU time while idle with 0 and with 100 pods.
//! A second bench scales a Deployment 0 → 100 on the server's own node with real containers
//! (image pulled beforehand): time until all are bound and until all run.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::inside::{block_on_in_netns, kube_client};
use common::netns::Netns;
use common::procs::{cpu_ticks, ticks_per_second};
use common::server::BerthServer;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

const CONFIG: &str = "[controllers]\nnode_monitor_grace_period_seconds = 3600\n";
const PODS: usize = 100;
const IDLE_WINDOW: Duration = Duration::from_secs(20);
const TIMEOUT: Duration = Duration::from_secs(180);

/// CPU milliseconds the process used per second of wall time over `window`.
async fn idle_cpu(pid: u32, window: Duration) -> f64 {
    let before = cpu_ticks(pid);
    tokio::time::sleep(window).await;
    let used = cpu_ticks(pid).saturating_sub(before) as f64 / ticks_per_second();
    used * 1000.0 / window.as_secs_f64()
}

/// When each of `count` pods labelled `app=<app>` was first seen, seen bound and (with
/// `until_running`) seen Running; returns once all of them got that far.
struct PodTimes {
    seen: Vec<Instant>,
    bound: Vec<Instant>,
    running: Vec<Instant>,
}

async fn wait_pods(
    pods: Api<Pod>,
    app: &str,
    count: usize,
    until_running: bool,
    started: tokio::sync::oneshot::Sender<()>,
) -> PodTimes {
    let config = watcher::Config::default().labels(&format!("app={app}"));
    let mut events = std::pin::pin!(watcher::watcher(pods, config));
    let mut seen: HashMap<String, Instant> = HashMap::new();
    let mut bound: HashMap<String, Instant> = HashMap::new();
    let mut running: HashMap<String, Instant> = HashMap::new();
    let mut started = Some(started);
    let deadline = Instant::now() + TIMEOUT;
    let done = |bound: &HashMap<_, _>, running: &HashMap<_, _>| match until_running {
        true => running.len() >= count,
        false => bound.len() >= count,
    };
    while !done(&bound, &running) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(remaining, events.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "of {count} pods only {} bound and {} running",
                    bound.len(),
                    running.len()
                )
            })
            .expect("the watch goes on");
        let pod = match event.expect("watch event") {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => pod,
            watcher::Event::InitDone => {
                if let Some(started) = started.take() {
                    let _ = started.send(());
                }
                continue;
            }
            _ => continue,
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        let now = Instant::now();
        seen.entry(name.clone()).or_insert(now);
        if pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some()
        {
            bound.entry(name.clone()).or_insert(now);
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if phase == Some("Running") {
            running.entry(name).or_insert(now);
        }
    }
    PodTimes {
        seen: seen.into_values().collect(),
        bound: bound.into_values().collect(),
        running: running.into_values().collect(),
    }
}

/// Creates Deployment `scaled` with no replicas and the pod `template` (labelled
/// `app=scaled`), scales it to `PODS` and waits until all are bound (or, with `until_running`,
/// Running); returns when the scale was sent and the pods' times.
async fn scale_from_zero(
    deployments: &Api<Deployment>,
    pods: &Api<Pod>,
    template: serde_json::Value,
    until_running: bool,
) -> (Instant, PodTimes) {
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "scaled"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "scaled"}},
            "template": template}}))
    .expect("a deployment");
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create the deployment");
    let (started, watching) = tokio::sync::oneshot::channel();
    let watch = tokio::spawn(wait_pods(
        pods.clone(),
        "scaled",
        PODS,
        until_running,
        started,
    ));
    watching.await.expect("the watch started");
    let scaling = Instant::now();
    deployments
        .patch(
            "scaled",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": PODS}})),
        )
        .await
        .expect("scale the deployment");
    (scaling, watch.await.expect("the watch ended"))
}

fn span(first: &[Instant], last: &[Instant]) -> Duration {
    let start = first.iter().min().expect("some pods");
    let end = last.iter().max().expect("some pods");
    end.duration_since(*start)
}

async fn figures(kubeconfig: PathBuf, pid: u32) -> Vec<String> {
    let client = kube_client(&kubeconfig).await;
    let mut rows = Vec::new();
    let node_name = format!("bench-{}", std::process::id());
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": node_name,
        "labels": {"kubernetes.io/hostname": node_name}}}))
    .expect("a node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create the node");
    let now = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .expect("round a timestamp")
        .to_string();
    let room = json!({"cpu": "64", "memory": "256Gi", "pods": "250"});
    let status = json!({"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "capacity": room, "allocatable": room}});
    nodes
        .patch_status(&node_name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("node status");

    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_empty = idle_cpu(pid, IDLE_WINDOW).await;

    let template = |app: &str| {
        json!({"metadata": {"labels": {"app": app}}, "spec": {
            "terminationGracePeriodSeconds": 0,
            "nodeSelector": {"kubernetes.io/hostname": node_name},
            "containers": [{"name": "c", "image": "busybox",
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}})
    };

    // A Deployment scaled from 0 to 100: the controllers and the scheduler together.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let (scaling, PodTimes { seen, bound, .. }) =
        scale_from_zero(&deployments, &pods, template("scaled"), false).await;
    let all_bound = bound.iter().max().expect("bound").duration_since(scaling);
    rows.push(format!(
        "deployment 0 → {PODS}: all bound {:.0} ms after the scale; first pod seen → last bound {:.0} ms",
        all_bound.as_secs_f64() * 1000.0,
        span(&seen, &bound).as_secs_f64() * 1000.0
    ));

    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_full = idle_cpu(pid, IDLE_WINDOW).await;
    rows.push(format!(
        "server CPU while idle: {idle_empty:.1} ms/s with 0 pods, {idle_full:.1} ms/s with {PODS} pods"
    ));

    // The scheduler alone: 100 pods wait on a cordoned node, then it is uncordoned.
    let cordon = |unschedulable: bool| json!({"spec": {"unschedulable": unschedulable}});
    nodes
        .patch(
            &node_name,
            &PatchParams::default(),
            &Patch::Merge(&cordon(true)),
        )
        .await
        .expect("cordon");
    let (started, watching) = tokio::sync::oneshot::channel();
    let watch = tokio::spawn(wait_pods(pods.clone(), "waiting", PODS, false, started));
    watching.await.expect("the watch started");
    let creates = (0..PODS).map(|i| {
        let pods = pods.clone();
        let mut pod = template("waiting");
        pod["metadata"]["name"] = json!(format!("waiting-{i}"));
        async move {
            let pod: Pod = serde_json::from_value(pod).expect("a pod");
            pods.create(&PostParams::default(), &pod).await
        }
    });
    for created in futures::future::join_all(creates).await {
        created.expect("create a pod");
    }
    // Every pod has been found unschedulable once: all are in the scheduler's queue.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let list = pods
            .list(&kube::api::ListParams::default().labels("app=waiting"))
            .await
            .expect("list pods");
        let tried = list
            .items
            .iter()
            .filter(|p| {
                let conditions = p.status.as_ref().and_then(|s| s.conditions.as_ref());
                conditions
                    .into_iter()
                    .flatten()
                    .any(|c| c.type_ == "PodScheduled" && c.status == "False")
            })
            .count();
        if tried == PODS {
            break;
        }
        assert!(Instant::now() < deadline, "only {tried} pods were tried");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let uncordoned = Instant::now();
    nodes
        .patch(
            &node_name,
            &PatchParams::default(),
            &Patch::Merge(&cordon(false)),
        )
        .await
        .expect("uncordon");
    let PodTimes { bound, .. } = watch.await.expect("the watch ended");
    let took = bound
        .iter()
        .max()
        .expect("bound")
        .duration_since(uncordoned);
    rows.push(format!(
        "scheduler alone: {PODS} pending pods bound in {:.0} ms after uncordon ({:.0} pods/s)",
        took.as_secs_f64() * 1000.0,
        PODS as f64 / took.as_secs_f64()
    ));
    rows
}

#[test]
#[ignore]
fn scheduler_figures_against_a_whole_server() {
    let ns = Netns::new();
    let server = BerthServer::start_with_config(&ns, CONFIG);
    let pid = server.pid().expect("the server runs");
    let kubeconfig = server.kubeconfig_path();
    let rows = block_on_in_netns(&ns.name, move || figures(kubeconfig, pid));
    for row in &rows {
        println!("{row}");
    }
    assert_eq!(rows.len(), 3);
}

/// A Deployment scaled 0 → 100 on the server's own node, with the image already pulled: how
/// long until every pod is bound and until every one runs as a real container.
async fn real_node_figures(kubeconfig: PathBuf) -> Vec<String> {
    let client = kube_client(&kubeconfig).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let template = |app: &str| {
        json!({"metadata": {"labels": {"app": app}}, "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"],
                "resources": {"requests": {"cpu": "5m", "memory": "4Mi"}}}]}})
    };
    // One pod first, so the image is pulled before the figures start.
    let deployment = |name: &str, replicas: usize| -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                "template": template(name)}}))
        .expect("a deployment")
    };
    let (started, watching) = tokio::sync::oneshot::channel();
    let warm = tokio::spawn(wait_pods(pods.clone(), "warm", 1, true, started));
    watching.await.expect("the watch started");
    deployments
        .create(&PostParams::default(), &deployment("warm", 1))
        .await
        .expect("create the warm-up deployment");
    warm.await.expect("the warm-up pod runs");

    let (scaling, times) = scale_from_zero(&deployments, &pods, template("scaled"), true).await;
    let after = |at: &[Instant]| {
        at.iter()
            .max()
            .expect("some pods")
            .duration_since(scaling)
            .as_secs_f64()
            * 1000.0
    };
    vec![format!(
        "deployment 0 → {PODS} on a real node: all bound {:.0} ms, all Running {:.0} ms after the scale ({:.1} pods/s started)",
        after(&times.bound),
        after(&times.running),
        PODS as f64 / (after(&times.running) / 1000.0)
    ), format!("first pod seen → last Running {:.0} ms", span(&times.seen, &times.running).as_secs_f64() * 1000.0)]
}

#[test]
#[ignore]
fn a_deployment_scaled_to_a_hundred_runs_on_a_real_node() {
    let ns = Netns::new();
    let cluster = Cluster::start_with_config(&ns, CONFIG);
    let kubeconfig = cluster.server.kubeconfig_path();
    let rows = block_on_in_netns(&ns.name, move || real_node_figures(kubeconfig));
    for row in &rows {
        println!("{row}");
    }
    assert_eq!(rows.len(), 2);
}
