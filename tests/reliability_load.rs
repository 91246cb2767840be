//! Load: 100 clients mixing GET, LIST, WATCH and create against a server that holds many objects
//! and keeps many watches open; every request must succeed and the server's memory stay bounded.
//! Prints p50/p99 per verb and the server's memory as a table.
//!
//! Needs root (network namespaces), as in CI. Short mode: 2,000 objects, 100 open watches, 20 s
//! of load. `BERTH_LONG=1`: 10,000 objects, 1,000 open watches, 5 minutes, then a minute at rest
//! with the watches closed (the memory noted again: is what the load took handed back?). For
//! figures worth quoting, an optimised berth: `BERTH_TEST_BINARY=target/release/berth
//! BERTH_LONG=1 scripts/test.sh --test reliability_load -- --nocapture`.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::inside::{block_on_in_netns, kube_client};
use common::netns::Netns;
use common::procs::{cpu_ticks, status_kib, ticks_per_second};
use common::server::BerthServer;
use http_body_util::BodyExt as _;
use kube::client::Body;

const CLIENTS: usize = 100;
/// The objects read, listed and watched.
const NAMESPACE: &str = "load";
/// Where the load's creates go: the open watches stay idle, as most of a cluster's are, until
/// the end, when one object written where they watch must reach all of them.
const NEW_NAMESPACE: &str = "load-new";

struct Mode {
    objects: usize,
    watches: usize,
    load_for: Duration,
    /// How long the server rests after the load (its watches closed) before its memory is
    /// noted once more: whether what the load took is handed back.
    rest: Duration,
}

fn mode() -> Mode {
    if std::env::var_os("BERTH_LONG").is_some() {
        Mode {
            objects: 10_000,
            watches: 1_000,
            load_for: Duration::from_secs(300),
            rest: Duration::from_secs(60),
        }
    } else {
        Mode {
            objects: 2_000,
            watches: 100,
            load_for: Duration::from_secs(20),
            rest: Duration::ZERO,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Verb {
    Get,
    List,
    Watch,
    Create,
}

/// Half reads of one object, a fifth first pages of a list, a fifth creates, a tenth new
/// watches: what a cluster's controllers and kubectl users do.
fn verb_for(turn: usize) -> Verb {
    match turn % 10 {
        0..=4 => Verb::Get,
        5 | 6 => Verb::List,
        7 | 8 => Verb::Create,
        _ => Verb::Watch,
    }
}

fn config_map(name: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "load"}},
        "data": {"value": "x".repeat(1024)},
    }))
    .expect("ConfigMap JSON")
}

fn get(path: &str) -> http::Request<Body> {
    http::Request::get(path)
        .body(Body::empty())
        .expect("request")
}

fn post(path: &str, body: Vec<u8>) -> http::Request<Body> {
    http::Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("request")
}

/// Sends `request` and reads the whole answer; the status and the time to the last byte.
async fn call(client: &kube::Client, request: http::Request<Body>) -> (u16, Duration, Vec<u8>) {
    let started = Instant::now();
    match client.send(request).await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            (status, started.elapsed(), body)
        }
        Err(e) => (0, started.elapsed(), e.to_string().into_bytes()),
    }
}

fn list_revision(body: &[u8]) -> String {
    let list: serde_json::Value = serde_json::from_slice(body).expect("a list");
    list["metadata"]["resourceVersion"]
        .as_str()
        .expect("a list revision")
        .to_string()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[test]
fn a_hundred_clients_mixing_verbs_over_many_objects_and_watches() {
    let mode = mode();
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let pid = server.pid().expect("server pid");
    server.kubectl_ok(&["create", "namespace", NAMESPACE]);
    server.kubectl_ok(&["create", "namespace", NEW_NAMESPACE]);
    let kubeconfig = server.kubeconfig_path();
    // The server's resident and anonymous memory at each step.
    let memory = Arc::new(Mutex::new(Vec::<(&'static str, u64, u64)>::new()));
    let note = {
        let memory = memory.clone();
        move |when: &'static str| {
            let anon = status_kib(pid, "RssAnon");
            let step = (when, status_kib(pid, "VmRSS"), anon);
            memory.lock().expect("memory").push(step);
            anon
        }
    };
    let (latencies, failures, watch_events, creates, peak_anon, settled_anon, cpu) =
        block_on_in_netns(&ns.name, move || async move {
            let client = kube_client(&kubeconfig).await;
            let objects = format!("/api/v1/namespaces/{NAMESPACE}/configmaps");
            let new_objects = format!("/api/v1/namespaces/{NEW_NAMESPACE}/configmaps");

            // The objects, by 32 writers at once.
            let mut writers = Vec::new();
            for writer in 0..32 {
                let (client, objects) = (client.clone(), objects.clone());
                let count = mode.objects;
                writers.push(tokio::spawn(async move {
                    for i in (writer..count).step_by(32) {
                        let (status, _, body) =
                            call(&client, post(&objects, config_map(&format!("cm-{i}")))).await;
                        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
                    }
                }));
            }
            for writer in writers {
                writer.await.expect("seed writer");
            }
            note("objects stored");

            // The open watches, from the current revision on (no replay of what is there), each
            // drained as it goes and counting what is added.
            let (status, _, body) = call(&client, get(&format!("{objects}?limit=1"))).await;
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            let from = list_revision(&body);
            let events = Arc::new(AtomicU64::new(0));
            let mut drains = Vec::new();
            for _ in 0..mode.watches {
                let request = get(&format!("{objects}?watch=1&resourceVersion={from}"));
                let response = client.send(request).await.expect("open a watch");
                assert_eq!(response.status().as_u16(), 200);
                let events = events.clone();
                drains.push(tokio::spawn(async move {
                    // One event per line; a frame may end inside one.
                    let (mut body, mut pending) = (response.into_body(), Vec::new());
                    while let Some(Ok(frame)) = body.frame().await {
                        let Some(data) = frame.data_ref() else {
                            continue;
                        };
                        pending.extend_from_slice(data);
                        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = pending.drain(..=end).collect();
                            if line.windows(7).any(|w| w == b"\"ADDED\"") {
                                events.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let settled_anon = note("watches open");

            // The load; the CPU both sides spend on it says which side sets the pace.
            let cpu_before = (cpu_ticks(pid), cpu_ticks(std::process::id()));
            let deadline = Instant::now() + mode.load_for;
            let created = Arc::new(AtomicU64::new(0));
            let latencies = Arc::new(Mutex::new(BTreeMap::<Verb, Vec<Duration>>::new()));
            let failures = Arc::new(Mutex::new(Vec::<String>::new()));
            let mut clients = Vec::new();
            for c in 0..CLIENTS {
                let (client, objects, new_objects) =
                    (client.clone(), objects.clone(), new_objects.clone());
                let (created, latencies, failures) =
                    (created.clone(), latencies.clone(), failures.clone());
                let count = mode.objects;
                clients.push(tokio::spawn(async move {
                    let mut turn = c;
                    while Instant::now() < deadline {
                        let verb = verb_for(turn);
                        let (status, took) = match verb {
                            Verb::Get => {
                                let name = format!("cm-{}", (turn * 7919) % count);
                                let (status, took, _) =
                                    call(&client, get(&format!("{objects}/{name}"))).await;
                                (status, took)
                            }
                            Verb::List => {
                                let (status, took, _) =
                                    call(&client, get(&format!("{objects}?limit=500"))).await;
                                (status, took)
                            }
                            Verb::Create => {
                                let name = format!("new-{c}-{turn}");
                                let (status, took, _) =
                                    call(&client, post(&new_objects, config_map(&name))).await;
                                if status == 201 {
                                    created.fetch_add(1, Ordering::Relaxed);
                                }
                                (status, took)
                            }
                            // Time to the watch's answer (its headers); then it is closed.
                            Verb::Watch => {
                                let started = Instant::now();
                                let request = get(&format!(
                                    "{objects}?watch=1&labelSelector=app%3Dnone&timeoutSeconds=2"
                                ));
                                match client.send(request).await {
                                    Ok(response) => (response.status().as_u16(), started.elapsed()),
                                    Err(_) => (0, started.elapsed()),
                                }
                            }
                        };
                        let expected = if verb == Verb::Create { 201 } else { 200 };
                        if status == expected {
                            latencies
                                .lock()
                                .expect("latencies")
                                .entry(verb)
                                .or_default()
                                .push(took);
                        } else {
                            failures
                                .lock()
                                .expect("failures")
                                .push(format!("{verb:?} answered {status}"));
                        }
                        turn += CLIENTS;
                    }
                }));
            }
            // The server's memory, once a second while the load lasts.
            let mut peak_anon = 0;
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_secs(1)).await;
                peak_anon = peak_anon.max(status_kib(pid, "RssAnon"));
            }
            for task in clients {
                task.await.expect("load client");
            }
            let cpu = (
                cpu_ticks(pid).saturating_sub(cpu_before.0),
                cpu_ticks(std::process::id()).saturating_sub(cpu_before.1),
            );
            note("after the load");
            // Every open watch is still there and still delivers: one object where they watch.
            let creates = created.load(Ordering::Relaxed);
            let (status, _, body) = call(&client, post(&objects, config_map("ping"))).await;
            assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
            let wait_until = Instant::now() + Duration::from_secs(30);
            while events.load(Ordering::Relaxed) < mode.watches as u64
                && Instant::now() < wait_until
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            for drain in drains {
                drain.abort();
            }
            if !mode.rest.is_zero() {
                tokio::time::sleep(mode.rest).await;
                note("after a minute at rest, the watches closed");
            }
            let latencies = std::mem::take(&mut *latencies.lock().expect("latencies"));
            let failures = std::mem::take(&mut *failures.lock().expect("failures"));
            (
                latencies,
                failures,
                events.load(Ordering::Relaxed),
                creates,
                peak_anon,
                settled_anon,
                cpu,
            )
        });

    println!(
        "\nload: {CLIENTS} clients for {} s over {} objects with {} open watches",
        mode.load_for.as_secs(),
        mode.objects,
        mode.watches
    );
    let seconds = |ticks: u64| ticks as f64 / ticks_per_second();
    println!(
        "CPU during the load: server {:.0} s, the test's clients {:.0} s",
        seconds(cpu.0),
        seconds(cpu.1)
    );
    println!(
        "{:8} | {:>8} | {:>10} | {:>10}",
        "verb", "requests", "p50", "p99"
    );
    for (verb, mut taken) in latencies.clone() {
        taken.sort();
        println!(
            "{:8} | {:>8} | {:>10} | {:>10}",
            format!("{verb:?}"),
            taken.len(),
            ms(percentile(&taken, 0.5)),
            ms(percentile(&taken, 0.99))
        );
    }
    for (when, rss, anon) in memory.lock().expect("memory").iter() {
        println!(
            "server memory, {when}: RSS {:.1} MiB, anonymous {:.1} MiB",
            *rss as f64 / 1024.0,
            *anon as f64 / 1024.0
        );
    }
    println!(
        "server anonymous memory at its peak during the load: {:.1} MiB",
        peak_anon as f64 / 1024.0
    );
    println!(
        "creates during the load: {creates}; the last object reached {watch_events} of {} \
         open watches",
        mode.watches
    );

    assert!(failures.is_empty(), "failed requests: {failures:?}");
    for verb in [Verb::Get, Verb::List, Verb::Watch, Verb::Create] {
        assert!(latencies.contains_key(&verb), "no {verb:?} answered");
    }
    assert_eq!(
        watch_events, mode.watches as u64,
        "an object written after the load reaches every open watch"
    );
    // Bounded: the load may fill caches and buffers, not grow without end. A debug build's
    // buffers are larger than an optimised one's, hence the absolute margin.
    let bound = (settled_anon * 2).max(settled_anon + 256 * 1024);
    assert!(
        peak_anon <= bound,
        "anonymous memory {peak_anon} KiB during the load against {settled_anon} KiB before it"
    );
}
