//! `kubectl rollout pause` / `resume` / `status` through the real kubectl against a real
//! `berth server` in a test-made network namespace. For pause and resume pods need not run: the
//! assertions count ReplicaSets and read conditions; minReadySeconds runs real busybox pods.
//! Needs root (network namespaces, cgroups); CI runs as root.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::netns::Netns;
use common::server::BerthServer;
use common::wait_until;
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(30);

const DEPLOYMENT: &str = r#"{
  "apiVersion": "apps/v1", "kind": "Deployment",
  "metadata": {"name": "app"},
  "spec": {
    "replicas": 2,
    "selector": {"matchLabels": {"app": "app"}},
    "template": {
      "metadata": {"labels": {"app": "app"}},
      "spec": {"containers": [{"name": "web", "image": "busybox:1", "command": ["sleep", "3600"]}]}
    }
  }
}"#;

fn replica_set_images(server: &BerthServer) -> Vec<String> {
    let list: Value =
        serde_json::from_str(&server.kubectl_ok(&["get", "rs", "-l", "app=app", "-o", "json"]))
            .unwrap_or(Value::Null);
    let mut images: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|rs| {
            rs["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    images.sort();
    images
}

fn progressing_reason(server: &BerthServer) -> String {
    server.kubectl_ok(&[
        "get",
        "deployment",
        "app",
        "-o",
        r#"jsonpath={.status.conditions[?(@.type=="Progressing")].reason}"#,
    ])
}

#[test]
fn a_paused_deployment_makes_no_new_replica_set_until_it_is_resumed() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let created = server.kubectl_stdin(&["create", "-f", "-"], DEPLOYMENT);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert!(
        wait_until(TIMEOUT, || replica_set_images(&server) == ["busybox:1"]),
        "no first ReplicaSet: {:?}",
        replica_set_images(&server)
    );

    let paused = server.kubectl_ok(&["rollout", "pause", "deployment/app"]);
    assert!(paused.contains("paused"), "{paused}");
    assert!(
        wait_until(TIMEOUT, || progressing_reason(&server)
            == "DeploymentPaused"),
        "Progressing never said DeploymentPaused: {}",
        progressing_reason(&server)
    );
    server.kubectl_ok(&[
        "patch",
        "deployment",
        "app",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"busybox:2"}]"#,
    ]);
    // Long enough for several reconciles: a paused rollout must not start.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(replica_set_images(&server), ["busybox:1"]);
    let observed = server.kubectl_ok(&[
        "get",
        "deployment",
        "app",
        "-o",
        "jsonpath={.metadata.generation} {.status.observedGeneration}",
    ]);
    let (generation, seen) = observed.trim().split_once(' ').unwrap_or(("", "-"));
    assert_eq!(
        generation, seen,
        "a paused deployment still observes its generation"
    );

    let resumed = server.kubectl_ok(&["rollout", "resume", "deployment/app"]);
    assert!(resumed.contains("resumed"), "{resumed}");
    assert!(
        wait_until(TIMEOUT, || replica_set_images(&server)
            == ["busybox:1", "busybox:2"]),
        "resuming started no rollout: {:?}",
        replica_set_images(&server)
    );
    let history = server.kubectl_ok(&["rollout", "history", "deployment/app"]);
    assert!(history.contains('2'), "{history}");
    assert_ne!(progressing_reason(&server), "DeploymentPaused");
}

/// (ready, available) replicas of a Deployment as its status says.
fn ready_and_available(server: &BerthServer, name: &str) -> (i64, i64) {
    let out = server.kubectl(&["get", "deployment", name, "-o", "json"]);
    let d: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let count = |field: &str| d["status"][field].as_i64().unwrap_or(0);
    (count("readyReplicas"), count("availableReplicas"))
}

#[test]
fn available_replicas_lag_ready_ones_by_min_ready_seconds_and_rollout_status_waits_for_them() {
    const MIN_READY: u64 = 8;
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let server = &cluster.server;
    cluster.create(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "slow"},
        "spec": {
            "replicas": 2,
            "minReadySeconds": MIN_READY,
            "selector": {"matchLabels": {"app": "slow"}},
            "template": {"metadata": {"labels": {"app": "slow"}}, "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]}}
        }
    }));
    let mut rollout = server
        .command(&common::tools::kubectl())
        .args(["rollout", "status", "deployment/slow", "--timeout=150s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl rollout status starts");

    // Poll until both pods are ready, then until they are available: the rollout must not
    // be reported done in between.
    let mut ready_at = None;
    let mut seen_ready_not_available = false;
    let mut rollout_done_early = false;
    let available = common::wait_until(Duration::from_secs(150), || {
        let (ready, available) = ready_and_available(server, "slow");
        if ready == 2 && ready_at.is_none() {
            ready_at = Some(Instant::now());
        }
        if ready == 2 && available < 2 {
            seen_ready_not_available = true;
            rollout_done_early |= rollout.try_wait().ok().flatten().is_some();
        }
        available == 2
    });
    assert!(
        available,
        "the pods never became available\n{}",
        server.log()
    );
    let available_at = Instant::now();
    let ready_at = ready_at.expect("ready was seen before available");
    assert!(
        seen_ready_not_available,
        "ready and available replicas never differed"
    );
    let lag = available_at - ready_at;
    // Ready times have whole-second precision, and the first ready poll may come late.
    assert!(
        lag >= Duration::from_secs(MIN_READY - 3),
        "available after only {lag:?} of {MIN_READY} s"
    );
    assert!(
        !rollout_done_early,
        "rollout status finished before availability"
    );

    let out = rollout
        .wait_with_output()
        .expect("kubectl rollout status ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Waiting for deployment \"slow\" rollout to finish"),
        "{stdout}"
    );
    assert!(stdout.contains("successfully rolled out"), "{stdout}");
    let reason = server.kubectl_ok(&[
        "get",
        "deployment",
        "slow",
        "-o",
        r#"jsonpath={.status.conditions[?(@.type=="Available")].status} {.status.conditions[?(@.type=="Progressing")].reason}"#,
    ]);
    assert_eq!(reason.trim(), "True NewReplicaSetAvailable");
    server.kubectl_ok(&["delete", "deployment", "slow"]);
}
