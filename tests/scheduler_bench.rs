//! Scheduler throughput: 100 pending pods against one roomy node, bound through the real API
//! server in process (no TLS, no kubectl), timed from the scheduler's start to the last binding.
//! Run with `--nocapture` to see the rate. Needs no root.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth::apiserver::ApiServer;
use berth::registry::services::ServiceNetwork;
use berth::registry::{bootstrap, Registry};
use berth::store::{Store, StoreOptions};
use k8s_openapi::api::core::v1::{Container, Node, NodeStatus, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

const PODS: usize = 100;

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_binds_a_hundred_pending_pods() {
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
    let node_name = format!("bench-{}", std::process::id());
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

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let creating = Instant::now();
    for i in 0..PODS {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(format!("p{i}")),
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
        };
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }

    let created_in = creating.elapsed();
    let start = Instant::now();
    let scheduler = tokio::spawn(berth::scheduler::run(client.clone()));
    let mut bound = 0;
    while start.elapsed() < Duration::from_secs(60) {
        let list = pods.list(&ListParams::default()).await.unwrap();
        bound = list
            .items
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&node_name))
            .count();
        if bound == PODS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    scheduler.abort();
    assert_eq!(bound, PODS, "not every pod was bound within a minute");
    println!(
        "(creating the {PODS} pods one by one took {:.1} ms)",
        created_in.as_secs_f64() * 1000.0
    );
    println!(
        "scheduler: bound {PODS} pods in {:.1} ms ({:.0} pods/s)",
        elapsed.as_secs_f64() * 1000.0,
        PODS as f64 / elapsed.as_secs_f64()
    );
}
