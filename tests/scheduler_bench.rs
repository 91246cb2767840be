//! Scheduler throughput: pending pods against roomy nodes (100 pods on one node; ignored by
//! default, 1,000 pods on 50 nodes), bound through the real API server in process (no TLS, no
//! kubectl), timed from the scheduler's start to the last binding. Run with `--nocapture` to
//! see the rate. Needs no root.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth::apiserver::ApiServer;
use berth::registry::services::ServiceNetwork;
use berth::registry::{bootstrap, Registry};
use berth::store::{Store, StoreOptions};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Node, NodeStatus, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;

const PODS: usize = 100;

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

fn pending_pod(name: String) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some("busybox".into()),
                resources: Some(ResourceRequirements {
                    requests: Some(quantities(&[("cpu", "100m"), ("memory", "64Mi")])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

/// Creates `node_count` roomy nodes and `pod_count` pending pods, starts the scheduler and
/// waits until every pod is bound; prints the rate and returns how many pods each node got.
async fn bench(node_count: usize, pod_count: usize) -> BTreeMap<String, usize> {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("berth.redb"), StoreOptions::default()).unwrap();
    let config = berth::config::Config::default();
    let services =
        ServiceNetwork::parse(&config.network.service_cidr, config.network.node_port_range)
            .unwrap();
    let registry = Registry::new(store, services);
    bootstrap::ensure_system_objects(&registry, config.network.dns_ip)
        .await
        .unwrap();
    let api = ApiServer::new(registry, 3 * 1024 * 1024);
    api.set_ready();
    let client = berth::client::in_process(api.router(), berth::client::system_user("bench"));

    let nodes: Api<Node> = Api::all(client.clone());
    let mut node_names = Vec::new();
    for i in 0..node_count {
        let node_name = format!("bench-{}-{i}", std::process::id());
        let node = Node {
            metadata: ObjectMeta {
                name: Some(node_name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        nodes.create(&PostParams::default(), &node).await.unwrap();
        let capacity = quantities(&[("cpu", "64"), ("memory", "256Gi"), ("pods", "250")]);
        let status = NodeStatus {
            capacity: Some(capacity.clone()),
            allocatable: Some(capacity),
            ..Default::default()
        };
        let body = serde_json::json!({ "status": status });
        nodes
            .patch_status(&node_name, &PatchParams::default(), &Patch::Merge(&body))
            .await
            .unwrap();
        node_names.push(node_name);
    }

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let creating = Instant::now();
    let names: Vec<String> = (0..pod_count).map(|i| format!("p{i}")).collect();
    for chunk in names.chunks(32) {
        let creates = chunk.iter().map(|name| {
            let pods = pods.clone();
            let pod = pending_pod(name.clone());
            async move { pods.create(&PostParams::default(), &pod).await }
        });
        for created in futures::future::join_all(creates).await {
            created.unwrap();
        }
    }

    let created_in = creating.elapsed();
    // Bindings are seen through a watch: polling with LISTs would take CPU from the scheduler.
    let mut events = std::pin::pin!(watcher::watcher(pods.clone(), watcher::Config::default()));
    let mut bound: BTreeMap<String, String> = BTreeMap::new();
    let start = Instant::now();
    let scheduler = tokio::spawn(berth::scheduler::run(client.clone()));
    while bound.len() < pod_count && start.elapsed() < Duration::from_secs(120) {
        let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(1), events.next()).await
        else {
            continue;
        };
        if let Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) = event {
            if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
                bound.insert(pod.metadata.name.clone().unwrap_or_default(), node);
            }
        }
    }
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for node in bound.into_values() {
        *per_node.entry(node).or_default() += 1;
    }
    let elapsed = start.elapsed();
    scheduler.abort();
    let bound: usize = per_node.values().sum();
    assert_eq!(
        bound, pod_count,
        "not every pod was bound within two minutes"
    );
    assert!(per_node.keys().all(|n| node_names.contains(n)));
    println!(
        "(creating the {pod_count} pods, 32 at a time, took {:.1} ms)",
        created_in.as_secs_f64() * 1000.0
    );
    println!(
        "scheduler: bound {pod_count} pods to {node_count} node(s) in {:.1} ms ({:.0} pods/s)",
        elapsed.as_secs_f64() * 1000.0,
        pod_count as f64 / elapsed.as_secs_f64()
    );
    per_node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_binds_a_hundred_pending_pods() {
    let per_node = bench(1, PODS).await;
    assert_eq!(per_node.values().sum::<usize>(), PODS);
}

/// Heavier: run with `--ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn the_scheduler_spreads_a_thousand_pods_evenly_over_fifty_nodes() {
    let per_node = bench(50, 1000).await;
    assert_eq!(per_node.len(), 50, "some node got nothing: {per_node:?}");
    // Equal nodes and equal pods: least-allocated scoring spreads them. Not exactly 20 each:
    // on nodes this big one pod moves the integer score by less than a point, and ties go to
    // a node picked at random.
    assert!(per_node.values().all(|&n| n >= 10), "{per_node:?}");
}
