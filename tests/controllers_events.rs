//! One event store behind both Event APIs: what the controllers and the scheduler record through
//! events.k8s.io/v1 shows in `kubectl describe` and `kubectl get events` (core v1), and an event
//! written through either API reads through the other with the fields renamed as upstream does.
//! Needs root (network namespaces); CI runs as root.

mod common;

use std::time::Duration;

use common::netns::Netns;
use common::server::BerthServer;
use common::wait_until;
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(30);

fn create(server: &BerthServer, manifest: &str) {
    let out = server.kubectl_stdin(&["create", "-f", "-"], manifest);
    assert!(
        out.status.success(),
        "kubectl create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until `kubectl describe <what>` shows an event line with `reason` from `from`.
fn described_with(server: &BerthServer, what: &[&str], reason: &str, from: &str) -> String {
    let mut args = vec!["describe"];
    args.extend_from_slice(what);
    let mut described = String::new();
    let shown = wait_until(TIMEOUT, || {
        described = server.kubectl_ok(&args);
        described
            .lines()
            .skip_while(|l| !l.starts_with("Events:"))
            .any(|l| l.contains(reason) && l.contains(from))
    });
    assert!(shown, "no {reason} event from {from} in:\n{described}");
    described
}

#[test]
fn controller_and_scheduler_events_show_in_describe_and_in_core_event_lists() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    create(
        &server,
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, image: busybox:1}]
"#,
    );
    described_with(
        &server,
        &["deployment", "web"],
        "ScalingReplicaSet",
        "deployment-controller",
    );

    let mut pods = Vec::new();
    assert!(wait_until(TIMEOUT, || {
        pods = server.kubectl_items(&["pods", "-l", "app=web"]);
        !pods.is_empty()
    }));
    let pod = pods[0]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    described_with(&server, &["pod", &pod], "Scheduled", "default-scheduler");

    // `kubectl get events` reads core v1: the recorded events are there, selectable by the
    // core field names.
    let about_deployments = server.kubectl_items(&[
        "events",
        "--field-selector",
        "involvedObject.kind=Deployment",
    ]);
    assert!(!about_deployments.is_empty());
    assert!(
        about_deployments
            .iter()
            .all(|e| e["apiVersion"] == "v1" && e["involvedObject"]["kind"] == "Deployment"),
        "{about_deployments:#?}"
    );
    let scaled = about_deployments
        .iter()
        .find(|e| e["reason"] == "ScalingReplicaSet" && e["involvedObject"]["name"] == "web")
        .unwrap_or_else(|| panic!("no ScalingReplicaSet: {about_deployments:#?}"));
    assert_eq!(scaled["reportingComponent"], "deployment-controller");
    assert!(scaled["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("Scaled up replica set web-")));
    let pod_selector = format!("involvedObject.name={pod},reason=Scheduled");
    let scheduled = server.kubectl_items(&["events", "--field-selector", &pod_selector]);
    assert_eq!(scheduled.len(), 1, "{scheduled:#?}");
    assert_eq!(scheduled[0]["type"], "Normal");

    // The same objects through events.k8s.io/v1, selected by its names.
    let new_api = server.kubectl_items(&[
        "events.v1.events.k8s.io",
        "--field-selector",
        "regarding.name=web,reason=ScalingReplicaSet",
    ]);
    assert_eq!(new_api.len(), 1, "{new_api:#?}");
    assert_eq!(new_api[0]["metadata"]["uid"], scaled["metadata"]["uid"]);
    assert_eq!(new_api[0]["note"], scaled["message"]);
    assert_eq!(new_api[0]["reportingController"], "deployment-controller");
}

#[test]
fn an_event_written_through_either_api_reads_through_the_other_with_upstreams_names() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    create(
        &server,
        r#"
apiVersion: v1
kind: Event
metadata: {name: old-style, namespace: default}
involvedObject: {apiVersion: v1, kind: ConfigMap, name: settings, namespace: default, uid: u-1}
related: {apiVersion: v1, kind: Pod, name: reader, namespace: default}
reason: Reloaded
message: settings were reloaded
type: Warning
source: {component: settings-watcher, host: node-a}
firstTimestamp: "2026-01-01T10:00:00Z"
lastTimestamp: "2026-01-01T10:05:00Z"
count: 3
action: Reload
eventTime: "2026-01-01T10:00:00.000001Z"
reportingComponent: settings-watcher
reportingInstance: settings-watcher-node-a
"#,
    );
    let got = server.kubectl_json(&["get", "events.v1.events.k8s.io", "old-style"]);
    assert_eq!(got["apiVersion"], "events.k8s.io/v1");
    assert_eq!(
        got["regarding"],
        json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "settings",
            "namespace": "default", "uid": "u-1"})
    );
    assert_eq!(got["related"]["name"], "reader");
    assert_eq!(got["note"], "settings were reloaded");
    assert_eq!(got["reason"], "Reloaded");
    assert_eq!(got["type"], "Warning");
    assert_eq!(
        got["deprecatedSource"],
        json!({"component": "settings-watcher", "host": "node-a"})
    );
    assert_eq!(got["deprecatedFirstTimestamp"], "2026-01-01T10:00:00Z");
    assert_eq!(got["deprecatedLastTimestamp"], "2026-01-01T10:05:00Z");
    assert_eq!(got["deprecatedCount"], 3);
    assert_eq!(got["action"], "Reload");
    assert_eq!(got["eventTime"], "2026-01-01T10:00:00.000001Z");
    assert_eq!(got["reportingController"], "settings-watcher");
    assert_eq!(got["reportingInstance"], "settings-watcher-node-a");
    for core_name in [
        "involvedObject",
        "message",
        "source",
        "count",
        "reportingComponent",
    ] {
        assert!(got.get(core_name).is_none(), "{core_name} in {got:#}");
    }

    create(
        &server,
        r#"
apiVersion: events.k8s.io/v1
kind: Event
metadata: {name: new-style, namespace: default}
regarding: {apiVersion: v1, kind: Pod, name: reader, namespace: default}
reason: Probed
note: the probe answered
type: Normal
eventTime: "2026-01-01T11:00:00.000001Z"
series: {count: 2, lastObservedTime: "2026-01-01T11:01:00.000001Z"}
action: Probe
reportingController: example.com/prober
reportingInstance: prober-1
"#,
    );
    let raw = server.kubectl_ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/events/new-style",
    ]);
    let core: Value = serde_json::from_str(&raw).expect("JSON");
    assert_eq!(core["apiVersion"], "v1");
    assert_eq!(core["involvedObject"]["name"], "reader");
    assert_eq!(core["message"], "the probe answered");
    assert_eq!(core["reportingComponent"], "example.com/prober");
    assert_eq!(core["reportingInstance"], "prober-1");
    assert_eq!(core["series"]["count"], 2);
    assert_eq!(core["action"], "Probe");
    let pod_events = server.kubectl_items(&[
        "events",
        "--field-selector",
        "involvedObject.kind=Pod,type=Normal",
    ]);
    let names: Vec<&str> = pod_events
        .iter()
        .filter_map(|e| e["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["new-style"]);

    // A core name is no field of events.k8s.io/v1: refused, not stored under the other name.
    let mixed = server.kubectl_stdin(
        &["create", "-f", "-"],
        r#"
apiVersion: events.k8s.io/v1
kind: Event
metadata: {name: mixed, namespace: default}
regarding: {kind: Pod, name: reader, namespace: default}
reason: Probed
message: a core field name
eventTime: "2026-01-01T11:00:00.000001Z"
reportingController: example.com/prober
reportingInstance: prober-1
"#,
    );
    let refused = String::from_utf8_lossy(&mixed.stderr);
    assert!(!mixed.status.success());
    assert!(refused.contains(r#"unknown field "message""#), "{refused}");

    // One object: deleting it through one API removes it from the other.
    server.kubectl_ok(&["delete", "events.v1.events.k8s.io", "old-style"]);
    let gone = server.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/events/old-style",
    ]);
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
}

fn core_event(name: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Event", "metadata": {{"name": "{name}"}},
            "involvedObject": {{"kind": "ConfigMap", "name": "x", "namespace": "default"}},
            "reason": "Tested", "message": "m", "type": "Normal"}}"#
    )
}

/// Events expire as upstream's do (`[api] event_ttl_seconds`, kube-apiserver's `--event-ttl`),
/// counted from their last write: an event is kept while younger than the TTL, then deleted.
#[test]
fn events_are_deleted_once_older_than_the_ttl() {
    let ns = Netns::new();
    // With a TTL this short the expiry looks every 2 s.
    let server = BerthServer::start_with_config(&ns, "[api]\nevent_ttl_seconds = 8\n");
    let gone = |name: &str| {
        wait_until(Duration::from_secs(60), || {
            !server.kubectl(&["get", "event", name]).status.success()
        })
    };
    create(&server, &core_event("first"));
    assert!(gone("first"), "the first event outlived its TTL");
    create(&server, &core_event("second"));
    // Younger than the TTL for a few of the expiry's passes: kept.
    std::thread::sleep(Duration::from_secs(4));
    server.kubectl_ok(&["get", "event", "second"]);
    assert!(gone("second"), "the second event outlived its TTL");
}
