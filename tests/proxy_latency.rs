//! The service proxy's latency benchmark of issue 6: from an EndpointSlice written through the
//! API of a real `berth server` to its rule in force in the kernel, p50/p99 over 100 changes,
//! with 1,000 other Services of 5 endpoints each in the table. The moment of "in force" is the
//! kernel's own notification of the committed rule (`nft monitor`), so polling adds nothing.
//!
//! `cargo test --test proxy_latency -- --ignored --nocapture` (root); with an optimised binary:
//! `BERTH_TEST_BINARY=<path> cargo test --test proxy_latency -- --ignored --nocapture`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::inside::{block_on_in_netns, kube_client};
use common::netns::Netns;
use common::server::BerthServer;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};

const BACKGROUND_SERVICES: u32 = 1000;
const CHANGES: u32 = 100;

fn service(name: &str) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }))
    .unwrap()
}

fn slice(service: &str, addresses: &[String]) -> EndpointSlice {
    let endpoints: Vec<serde_json::Value> = addresses
        .iter()
        .map(|a| serde_json::json!({"addresses": [a], "conditions": {"ready": true}}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("{service}-1"),
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .unwrap()
}

/// `nft monitor` in the namespace; every line it prints arrives with the time it was read.
struct Monitor {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
}

impl Monitor {
    fn start(ns: &Netns) -> Monitor {
        let mut child = ns
            .command("nft")
            .args(["monitor", "rules"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("nft monitor");
        let stdout = child.stdout.take().expect("monitor output");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Monitor { child, lines }
    }

    /// When a rule containing `needle` was committed.
    fn wait_for(&self, needle: &str) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (at, line) = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no rule with {needle}"));
            if line.contains(needle) {
                return at;
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One change's latency, and how much of it the API write took.
#[derive(Clone, Copy)]
struct Stages {
    total: Duration,
    write: Duration,
    wall_clock: std::time::SystemTime,
}

fn endpoint(service: u32, endpoint: u32) -> String {
    let n = service * 5 + endpoint;
    format!("10.42.{}.{}", 100 + n / 250, n % 250 + 1)
}

#[test]
#[ignore]
fn endpoint_slice_change_to_rule_in_force_over_100_changes() {
    let ns = Netns::new();
    // The proxy logs each apply's stages; the slowest changes are printed with their time so
    // the two can be read side by side.
    let server = BerthServer::start_with_config(
        &ns,
        "[log]\nlevel = \"info,berth::network::proxy=debug\"\n",
    );
    let kubeconfig = server.kubeconfig_path();
    let monitor = Monitor::start(&ns);
    let latencies = block_on_in_netns(&ns.name, move || async move {
        let client = kube_client(&kubeconfig).await;
        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
        let background = futures::stream::iter(0..BACKGROUND_SERVICES)
            .map(|i| {
                let (services, slices) = (services.clone(), slices.clone());
                async move {
                    let name = format!("bg{i}");
                    services
                        .create(&PostParams::default(), &service(&name))
                        .await
                        .expect("create service");
                    let eps: Vec<String> = (0..5).map(|e| endpoint(i, e)).collect();
                    slices
                        .create(&PostParams::default(), &slice(&name, &eps))
                        .await
                        .expect("create slice");
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<()>>();
        background.await;
        services
            .create(&PostParams::default(), &service("lat"))
            .await
            .expect("create service");
        let first = "10.42.200.1".to_string();
        slices
            .create(&PostParams::default(), &slice("lat", &[first.clone()]))
            .await
            .expect("create slice");
        monitor.wait_for(&format!("{first}:8080"));
        // Let the table settle, then drain what the setup left in the pipe.
        std::thread::sleep(Duration::from_millis(500));
        while monitor.lines.try_recv().is_ok() {}

        let mut latencies = Vec::new();
        for change in 0..CHANGES {
            let address = format!("10.42.201.{}", change + 1);
            let mut current = slices.get("lat-1").await.expect("get slice");
            current.endpoints = slice("lat", &[address.clone()]).endpoints;
            let written = Instant::now();
            let wall_clock = std::time::SystemTime::now();
            slices
                .replace("lat-1", &PostParams::default(), &current)
                .await
                .expect("replace slice");
            let acknowledged = Instant::now();
            let in_force = monitor.wait_for(&format!("{address}:8080"));
            latencies.push(Stages {
                total: in_force.saturating_duration_since(written),
                write: acknowledged.saturating_duration_since(written),
                wall_clock,
            });
        }
        drop(monitor);
        latencies
    });
    // Where the slowest changes spent their time: the API write (store commit included)
    // until its answer, then the rest (watch delivery, debounce, render, netlink).
    let mut slowest = latencies.clone();
    slowest.sort_by_key(|s| std::cmp::Reverse(s.total));
    for stages in &slowest[..5] {
        println!(
            "slow change at {:?}: {:?} = write acknowledged after {:?} + {:?} to the rule",
            stages
                .wall_clock
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
            stages.total,
            stages.write,
            stages.total.saturating_sub(stages.write)
        );
    }
    // The 99th of 100 (nearest rank), not the maximum, which is printed apart.
    let percentiles = |pick: fn(&Stages) -> Duration| {
        let mut sorted: Vec<Duration> = latencies.iter().map(pick).collect();
        sorted.sort();
        let p99 = sorted[(sorted.len() * 99).div_ceil(100) - 1];
        (sorted[sorted.len() / 2], p99, sorted[sorted.len() - 1])
    };
    let (p50, p99, max) = percentiles(|s| s.total);
    println!(
        "proxy latency bench: EndpointSlice write -> rule in force, {CHANGES} changes among \
         {BACKGROUND_SERVICES} services x 5 endpoints: p50 {p50:?} p99 {p99:?} max {max:?}"
    );
    // From the moment the change exists (its write acknowledged) to its rule: the proxy's own
    // part, without the store's commit, whose fsync this machine's shared disk makes slow now
    // and then.
    let (ack50, ack99, ack_max) = percentiles(|s| s.total.saturating_sub(s.write));
    println!(
        "proxy latency bench: write acknowledged -> rule in force: p50 {ack50:?} p99 {ack99:?} \
         max {ack_max:?}"
    );
    if std::env::var_os("PROXY_LATENCY_LOG").is_some() {
        println!("{}", server.log());
    }
    assert!(p99 < Duration::from_secs(5), "p99 {p99:?}");
}
