//! Disruptions and Job pod failure policies, driven with the real kubectl against a real
//! `berth server` running real busybox containers in a test-made network namespace: the
//! eviction API and the taint manager mark a pod `DisruptionTarget` before deleting it, and a
//! Job's `podFailurePolicy` fails the Job, ignores a disruption, counts a failure or fails one
//! index, as upstream. Needs root (network namespaces, cgroups); CI runs as root.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::netns::Netns;
use common::server::BerthServer;
use common::wait_until;
use serde_json::{json, Value};

/// The object, read again for a few seconds if kubectl fails (a loaded machine may time it
/// out); a failure that lasts names kubectl's error.
fn get(server: &BerthServer, what: &str) -> Value {
    let mut error = String::new();
    for _ in 0..20 {
        let out = server.kubectl(&["get", what, "-o", "json"]);
        match serde_json::from_slice(&out.stdout) {
            Ok(object) if out.status.success() => return object,
            _ => error = String::from_utf8_lossy(&out.stderr).into_owned(),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("kubectl get {what}: {error}")
}

fn pods_of(server: &BerthServer, job: &str) -> Vec<Value> {
    let list: Value = serde_json::from_str(&server.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        &format!("batch.kubernetes.io/job-name={job}"),
        "-o",
        "json",
    ]))
    .unwrap_or(Value::Null);
    list["items"].as_array().cloned().unwrap_or_default()
}

fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// A Job whose pods run `script`; `extra` adds to (or overrides) its spec.
fn job(name: &str, script: &str, extra: Value) -> Value {
    let mut spec = json!({
        "template": {"spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script]}],
        }}
    });
    for (key, value) in extra.as_object().into_iter().flatten() {
        spec[key] = value.clone();
    }
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec})
}

fn exit_rule(action: &str, operator: &str, codes: &[i32]) -> Value {
    json!({"action": action, "onExitCodes": {"operator": operator, "values": codes}})
}

/// Waits for the Job to be finished with `type_` (Complete or Failed) and returns it.
fn wait_for_finish(server: &BerthServer, name: &str, type_: &str) -> Value {
    let mut last = Value::Null;
    let done = wait_until(Duration::from_secs(150), || {
        last = get(server, &format!("job/{name}"));
        condition(&last, type_).is_some_and(|c| c["status"] == "True")
    });
    assert!(
        done,
        "job {name} never became {type_}: {last:#}\n{}",
        server.log()
    );
    last
}

fn evict(server: &BerthServer, pod: &str) {
    let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": pod, "namespace": "default"}});
    let out = server.kubectl_stdin(
        &[
            "create",
            "--raw",
            &format!("/api/v1/namespaces/default/pods/{pod}/eviction"),
            "-f",
            "-",
        ],
        &eviction.to_string(),
    );
    assert!(
        out.status.success(),
        "eviction of {pod} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The one running pod of a Job, once there is one.
fn running_pod(server: &BerthServer, job: &str) -> Value {
    let mut pods = Vec::new();
    let running = wait_until(Duration::from_secs(90), || {
        pods = pods_of(server, job);
        pods.iter().any(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
    });
    assert!(running, "job {job} never ran a pod: {pods:#?}");
    pods.into_iter()
        .find(|p| p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null())
        .unwrap_or(Value::Null)
}

#[test]
fn a_pod_failure_policy_fails_the_job_at_once_ignores_an_eviction_counts_and_fails_one_index() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let server = &cluster.server;

    // FailJob on exit code 42: one failed pod ends the Job though six retries were allowed.
    cluster.create(job(
        "fail-fast",
        "exit 42",
        json!({"backoffLimit": 6, "podFailurePolicy": {"rules": [exit_rule("FailJob", "In", &[42])]}}),
    ));
    // Ignore DisruptionTarget: with no retries allowed, an evicted pod is replaced, not counted.
    // Its long grace period keeps it visible while it terminates: SIGTERM is ignored (set to
    // ignore before the exec, so sleep inherits it), so the grace period runs out.
    let mut evicted_job = job(
        "evicted",
        "unused",
        json!({"backoffLimit": 0, "podFailurePolicy": {"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}}),
    );
    evicted_job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = json!(20);
    evicted_job["spec"]["template"]["spec"]["containers"][0]["command"] =
        json!(["sh", "-c", "trap '' TERM; exec sleep 3600"]);
    cluster.create(evicted_job);
    // The first matching rule decides: exit code 5 is counted by the Count rule before the
    // FailJob rule that would also match it, so the Job fails only at its backoff limit.
    cluster.create(job(
        "counted",
        "exit 5",
        json!({"backoffLimit": 1, "podFailurePolicy": {"rules": [
            exit_rule("Count", "In", &[5]), exit_rule("FailJob", "NotIn", &[0])]}}),
    ));
    // FailIndex on exit code 42: index 0 fails for good at its first failure, although its
    // per-index backoff limit would allow three retries; index 1 completes.
    cluster.create(job(
        "fail-index",
        "[ \"$JOB_COMPLETION_INDEX\" = 0 ] && exit 42; exit 0",
        json!({"completionMode": "Indexed", "completions": 2, "parallelism": 2,
            "backoffLimitPerIndex": 3,
            "podFailurePolicy": {"rules": [exit_rule("FailIndex", "In", &[42])]}}),
    ));

    let fail_fast = wait_for_finish(server, "fail-fast", "Failed");
    let failed = condition(&fail_fast, "Failed").unwrap();
    assert_eq!(failed["reason"], "PodFailurePolicy", "{fail_fast:#}");
    let message = failed["message"].as_str().unwrap_or("");
    assert!(
        message.contains("Container main for pod default/fail-fast-")
            && message.contains("failed with exit code 42 matching FailJob rule at index 0"),
        "{message}"
    );
    assert_eq!(
        condition(&fail_fast, "FailureTarget").unwrap()["reason"],
        "PodFailurePolicy"
    );
    assert_eq!(fail_fast["status"]["failed"], 1, "{fail_fast:#}");
    assert_eq!(pods_of(server, "fail-fast").len(), 1, "no retry was made");

    // Evict the running pod through the API: it is marked before it goes.
    let first = running_pod(server, "evicted");
    let first_name = first["metadata"]["name"].as_str().unwrap_or("").to_string();
    evict(server, &first_name);
    let marked = get(server, &format!("pod/{first_name}"));
    let disruption = condition(&marked, "DisruptionTarget")
        .unwrap_or_else(|| panic!("the evicted pod is marked: {marked:#}"));
    assert_eq!(disruption["status"], "True");
    assert_eq!(disruption["reason"], "EvictionByEvictionAPI");
    assert_eq!(disruption["message"], "Eviction API: evicting");
    assert!(!marked["metadata"]["deletionTimestamp"].is_null());
    // A replacement runs, the evicted pod leaves, and the Job neither failed nor counted it.
    let second = running_pod(server, "evicted");
    assert_ne!(second["metadata"]["name"], first_name.as_str());
    let gone = wait_until(Duration::from_secs(60), || {
        !server
            .kubectl(&["get", "pod", &first_name])
            .status
            .success()
    });
    assert!(gone, "the evicted pod was deleted");
    let evicted = get(server, "job/evicted");
    assert!(condition(&evicted, "Failed").is_none(), "{evicted:#}");
    assert!(
        condition(&evicted, "FailureTarget").is_none(),
        "{evicted:#}"
    );
    assert_eq!(
        evicted["status"]["failed"].as_i64().unwrap_or(0),
        0,
        "{evicted:#}"
    );
    assert_eq!(evicted["status"]["active"], 1, "{evicted:#}");

    let counted = wait_for_finish(server, "counted", "Failed");
    assert_eq!(
        condition(&counted, "Failed").unwrap()["reason"],
        "BackoffLimitExceeded",
        "{counted:#}"
    );
    assert_eq!(counted["status"]["failed"], 2, "{counted:#}");

    let fail_index = wait_for_finish(server, "fail-index", "Failed");
    let status = &fail_index["status"];
    assert_eq!(
        condition(&fail_index, "Failed").unwrap()["reason"],
        "FailedIndexes",
        "{status:#}"
    );
    assert_eq!(status["failedIndexes"], "0", "{status:#}");
    assert_eq!(status["completedIndexes"], "1", "{status:#}");
    assert_eq!(status["failed"], 1, "index 0 was not retried: {status:#}");

    server.kubectl_ok(&["delete", "jobs", "--all", "--cascade=background"]);
}

#[test]
fn a_no_execute_taint_marks_the_pods_it_evicts_as_disrupted_by_the_taint_manager() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let server = &cluster.server;
    // A long grace period keeps the pod visible while it terminates.
    cluster.create(cluster.pod(
        "intolerant",
        json!({"terminationGracePeriodSeconds": 20, "containers": [
            {"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]}),
    ));
    cluster.wait_for("intolerant", "Running", |p| {
        p["status"]["phase"] == "Running"
    });
    let taint = format!("berth-test-{}=x:NoExecute", std::process::id());
    server.kubectl_ok(&["taint", "node", &cluster.node, &taint]);
    let pod = cluster.wait_for("intolerant", "a deletion", |p| {
        !p["metadata"]["deletionTimestamp"].is_null() || p.is_null()
    });
    let disruption = condition(&pod, "DisruptionTarget")
        .unwrap_or_else(|| panic!("the evicted pod is marked: {pod:#}"));
    assert_eq!(disruption["status"], "True");
    assert_eq!(disruption["reason"], "DeletionByTaintManager");
    assert_eq!(
        disruption["message"],
        "Taint manager: deleting due to NoExecute taint"
    );
    server.kubectl_ok(&["taint", "node", &cluster.node, &format!("{taint}-")]);
}

/// A pod held by a finalizer whose container ignores SIGTERM: only the grace period's end
/// stops it.
fn held_pod(cluster: &Cluster, name: &str, grace: i64) -> Value {
    let mut pod = cluster.pod(
        name,
        json!({"terminationGracePeriodSeconds": grace, "containers": [
            {"name": "main", "image": "busybox",
             "command": ["sh", "-c", "trap '' TERM; exec sleep 3600"]}]}),
    );
    pod["metadata"]["finalizers"] = json!(["berth.test/hold"]);
    pod
}

fn release(server: &BerthServer, pod: &str) {
    server.kubectl_ok(&[
        "patch",
        "pod",
        pod,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
}

fn is_gone(server: &BerthServer, pod: &str) -> bool {
    !server.kubectl(&["get", "pod", pod]).status.success()
}

/// An evicted pod whose finalizer goes during its grace period (a Job's pod loses its
/// tracking finalizer as soon as it is counted) stays until its kubelet has stopped it; one
/// whose finalizer outlasts the grace period goes when the finalizer does.
#[test]
fn an_evicted_pod_terminates_for_its_grace_period_whenever_its_finalizers_go() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let server = &cluster.server;
    cluster.create(held_pod(&cluster, "released-early", 20));
    cluster.create(held_pod(&cluster, "held-late", 2));
    for name in ["released-early", "held-late"] {
        cluster.wait_for(name, "Running", |p| p["status"]["phase"] == "Running");
    }

    evict(server, "released-early");
    let marked = get(server, "pod/released-early");
    assert_eq!(
        marked["metadata"]["deletionGracePeriodSeconds"], 20,
        "{marked:#}"
    );
    let disruption = condition(&marked, "DisruptionTarget")
        .unwrap_or_else(|| panic!("the evicted pod is marked: {marked:#}"));
    assert_eq!(disruption["reason"], "EvictionByEvictionAPI");
    release(server, "released-early");
    // Some seconds into its grace period, still there and running.
    std::thread::sleep(Duration::from_secs(4));
    let terminating = get(server, "pod/released-early");
    assert!(
        !terminating["metadata"]["deletionTimestamp"].is_null(),
        "{terminating:#}"
    );
    assert_eq!(terminating["status"]["phase"], "Running", "{terminating:#}");

    // Stopped at the end of its grace period, the other waits for its finalizer only.
    evict(server, "held-late");
    let stopped = wait_until(Duration::from_secs(60), || {
        get(server, "pod/held-late")["metadata"]["deletionGracePeriodSeconds"] == 0
    });
    assert!(
        stopped,
        "the kubelet ended the grace period: {:#}",
        get(server, "pod/held-late")
    );
    release(server, "held-late");
    let gone = wait_until(Duration::from_secs(30), || is_gone(server, "held-late"));
    assert!(gone, "the pod went with its last finalizer");
    let gone = wait_until(Duration::from_secs(60), || {
        is_gone(server, "released-early")
    });
    assert!(gone, "the evicted pod went at the end of its grace period");
}
