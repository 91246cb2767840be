//! Crash consistency: 50 clients create, update and delete ConfigMaps while berth is killed with
//! SIGKILL at a random moment; after each restart every acknowledged write is there with its
//! resourceVersion, nothing unacknowledged is half-applied, revisions keep rising, and a watch
//! resumed from before the crash sees every later acknowledged write in order.
//!
//! Needs root (network namespaces). 10 kills; with `BERTH_LONG=1`, 100; `BERTH_CRASH_ROUNDS`
//! sets any other number.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::inside::{block_on_in_netns, kube_client};
use common::netns::Netns;
use common::server::BerthServer;
use serde_json::{json, Value};

const CLIENTS: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Update,
    Delete,
}

/// What one client did to one name: the acknowledged steps, and the step in flight when berth died.
#[derive(Debug, Default, Clone)]
struct History {
    acked: Vec<(Op, u64)>,
    in_flight: Option<Op>,
}

type Log = Arc<Mutex<BTreeMap<String, History>>>;

fn rounds() -> usize {
    std::env::var("BERTH_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if std::env::var_os("BERTH_LONG").is_some() {
            100
        } else {
            10
        })
}

#[test]
fn acknowledged_writes_survive_kill_9_at_random_moments() {
    let ns = Netns::new();
    let mut server = BerthServer::start(&ns);
    let mut highest_acked = 0u64;
    let started = Instant::now();
    let mut acked_writes = 0usize;
    let mut resumed_with_410 = 0usize;
    for round in 0..rounds() {
        let log: Log = Arc::default();
        let kubeconfig = server.kubeconfig_path();
        let workload_log = log.clone();
        let netns = ns.name.clone();
        // The workload runs until the kill below makes every client fail.
        let workload = std::thread::spawn(move || {
            block_on_in_netns(&netns, move || async move {
                workload(&kubeconfig, round, workload_log).await
            })
        });
        // Kill at a random moment once the workload is in full swing (start-up time varies a lot
        // on a loaded machine, so "in full swing" is measured, not guessed).
        let busy = common::wait_until(Duration::from_secs(60), || {
            log.lock()
                .unwrap()
                .values()
                .filter(|h| !h.acked.is_empty())
                .count()
                >= CLIENTS
        });
        assert!(busy, "round {round}: the workload never got going");
        std::thread::sleep(Duration::from_millis(rand::random::<u64>() % 1000));
        server.kill9();
        let watch_from = workload.join().expect("workload thread");
        server.restart();

        let kubeconfig = server.kubeconfig_path();
        let snapshot = log.lock().unwrap().clone();
        assert!(
            snapshot.values().any(|h| !h.acked.is_empty()),
            "round {round}: no write was acknowledged before the kill"
        );
        let max_rv = snapshot
            .values()
            .flat_map(|h| h.acked.iter().map(|(_, rv)| *rv))
            .max()
            .unwrap_or(0);
        assert!(
            max_rv > highest_acked,
            "round {round}: revisions must keep rising"
        );
        highest_acked = max_rv;
        acked_writes += snapshot.values().map(|h| h.acked.len()).sum::<usize>();
        let netns = ns.name.clone();
        let resume = block_on_in_netns(&netns, move || async move {
            verify(&kubeconfig, &snapshot, watch_from, max_rv).await
        });
        if resume == Resume::Expired {
            resumed_with_410 += 1;
        }
        eprintln!(
            "round {round}: {} writes acknowledged, last revision {max_rv}, resumed watch {resume:?}, {:?} so far",
            acked_writes,
            started.elapsed()
        );
    }
    eprintln!(
        "{} kill -9 rounds in {:?}: {acked_writes} acknowledged writes, none lost; \
         {resumed_with_410} resumed watches answered 410",
        rounds(),
        started.elapsed()
    );
}

/// How a watch resumed from before the crash went.
#[derive(Debug, PartialEq, Eq)]
enum Resume {
    /// It replayed every later acknowledged write, in order.
    Gapless,
    /// The resume point had been compacted away: 410 Gone, and the client re-lists.
    Expired,
    /// No write of the round had been acknowledged early enough to resume from.
    Skipped,
}

/// Runs `CLIENTS` clients until berth dies; returns a revision acknowledged early in the round,
/// for the watch-resume check.
async fn workload(kubeconfig: &std::path::Path, round: usize, log: Log) -> u64 {
    let client = kube_client(kubeconfig).await;
    let early = Arc::new(Mutex::new(0u64));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let client = client.clone();
        let log = log.clone();
        let early = early.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("r{round}-c{c}-{i}");
                for op in [Op::Create, Op::Update, Op::Delete] {
                    log.lock()
                        .unwrap()
                        .entry(name.clone())
                        .or_default()
                        .in_flight = Some(op);
                    let result =
                        tokio::time::timeout(Duration::from_secs(10), send(&client, &name, op))
                            .await;
                    let Ok(Ok(rv)) = result else { return };
                    let mut log = log.lock().unwrap();
                    let history = log.entry(name.clone()).or_default();
                    history.in_flight = None;
                    history.acked.push((op, rv));
                    let mut early = early.lock().unwrap();
                    if *early == 0 && rv > 0 {
                        *early = rv;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let early = *early.lock().unwrap();
    early
}

/// Sends one step; returns the resourceVersion berth acknowledged (0 for deletes).
async fn send(client: &kube::Client, name: &str, op: Op) -> Result<u64, kube::Error> {
    let path = "/api/v1/namespaces/default/configmaps";
    let request = match op {
        Op::Create => {
            let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"step": "created"}});
            http::Request::post(path).header("content-type", "application/json").body(serde_json::to_vec(&body).unwrap())
        }
        Op::Update => {
            let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"step": "updated"}});
            http::Request::put(format!("{path}/{name}"))
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).unwrap())
        }
        Op::Delete => http::Request::delete(format!("{path}/{name}")).body(Vec::new()),
    }
    .unwrap();
    let text = client.request_text(request).await?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(value
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

async fn verify(
    kubeconfig: &std::path::Path,
    log: &BTreeMap<String, History>,
    watch_from: u64,
    max_acked: u64,
) -> Resume {
    let client = kube_client(kubeconfig).await;
    // The first write after the restart must not reuse a revision handed out before the crash.
    let probe = format!("probe-{}", rand::random::<u32>());
    let rv = send(&client, &probe, Op::Create)
        .await
        .expect("a write after the restart");
    assert!(
        rv > max_acked,
        "the first revision after the restart ({rv}) is not above the last acknowledged one ({max_acked})"
    );
    for (name, history) in log {
        let revisions: Vec<u64> = history
            .acked
            .iter()
            .filter(|(op, _)| *op != Op::Delete)
            .map(|(_, rv)| *rv)
            .collect();
        assert!(
            revisions.windows(2).all(|w| w[0] < w[1]),
            "{name}: acknowledged revisions must rise: {revisions:?}"
        );
        let get = http::Request::get(format!("/api/v1/namespaces/default/configmaps/{name}"))
            .body(Vec::new())
            .unwrap();
        let stored: Option<Value> = match client.request_text(get).await {
            Ok(text) => Some(serde_json::from_str(&text).unwrap()),
            Err(kube::Error::Api(e)) if e.code == 404 => None,
            Err(e) => panic!("get {name}: {e}"),
        };
        let step = stored
            .as_ref()
            .and_then(|o| o.pointer("/data/step"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let rv = stored
            .as_ref()
            .and_then(|o| o.pointer("/metadata/resourceVersion"))
            .and_then(Value::as_str)
            .and_then(|v| v.parse::<u64>().ok());
        let last = history.acked.last().copied();
        // Either the state of the last acknowledged step, or of the step in flight (it may have
        // been committed without its answer reaching the client) — never anything else.
        let as_acked = match last {
            None => stored.is_none(),
            Some((Op::Create, acked_rv)) => {
                step.as_deref() == Some("created") && rv == Some(acked_rv)
            }
            Some((Op::Update, acked_rv)) => {
                step.as_deref() == Some("updated") && rv == Some(acked_rv)
            }
            Some((Op::Delete, _)) => stored.is_none(),
        };
        let as_in_flight = match history.in_flight {
            Some(Op::Create) => step.as_deref() == Some("created"),
            Some(Op::Update) => step.as_deref() == Some("updated"),
            Some(Op::Delete) => stored.is_none(),
            None => false,
        };
        assert!(as_acked || as_in_flight, "{name}: stored {stored:?} matches neither the acknowledged {last:?} nor the in-flight {:?}", history.in_flight);
    }

    // A watch resumed from an early revision of the round sees every later acknowledged put.
    if watch_from == 0 {
        return Resume::Skipped;
    }
    let watch = http::Request::get(format!(
        "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={watch_from}&timeoutSeconds=2"
    ))
    .body(Vec::new())
    .unwrap();
    let stream = client.request_text(watch).await.expect("watch");
    let mut seen = Vec::new();
    for line in stream.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        if event["type"] == "ERROR" {
            // The only acceptable error is upstream's "too old resource version", before any
            // event: a watch either replays the history whole or says it cannot.
            assert_eq!(event.pointer("/object/code"), Some(&json!(410)), "{event}");
            assert!(seen.is_empty(), "410 after events {seen:?}: {event}");
            return Resume::Expired;
        }
        let rv: u64 = event
            .pointer("/object/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap()
            .parse()
            .unwrap();
        seen.push(rv);
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "watch revisions must rise strictly: {seen:?}"
    );
    for history in log.values() {
        for (op, rv) in &history.acked {
            if *op != Op::Delete && *rv > watch_from {
                assert!(
                    seen.binary_search(rv).is_ok(),
                    "the resumed watch missed acknowledged revision {rv}"
                );
            }
        }
    }
    Resume::Gapless
}
