//! Indexed Jobs with real containers: a backoff limit per index and a success policy, seen
//! through the real kubectl. Needs root (network namespaces, cgroups); CI runs as root.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::netns::Netns;
use common::wait_until;
use serde_json::{json, Value};

fn job(cluster: &Cluster, name: &str) -> Value {
    let out = cluster.server.kubectl(&["get", "job", name, "-o", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn condition(job: &Value, type_: &str) -> Option<Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
        .cloned()
}

fn wait_for_condition(cluster: &Cluster, name: &str, type_: &str) -> Value {
    let mut last = Value::Null;
    let done = wait_until(Duration::from_secs(150), || {
        last = job(cluster, name);
        condition(&last, type_).is_some()
    });
    assert!(done, "job {name} never got {type_}: {last:#}");
    last
}

fn indexed_job(name: &str, script: &str, extra: Value) -> Value {
    let mut spec = json!({
        "completionMode": "Indexed", "completions": 3, "parallelism": 3,
        "template": {"spec": {"restartPolicy": "Never", "containers": [{
            "name": "app", "image": "busybox", "command": ["sh", "-c", script]
        }]}}
    });
    for (key, value) in extra.as_object().unwrap() {
        spec[key] = value.clone();
    }
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec})
}

#[test]
fn indexed_jobs_fail_by_index_and_end_early_by_success_policy() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);

    // Index 1 always fails: with one retry per index it fails twice, then the job fails with
    // that index listed, while the other indexes complete.
    cluster.create(indexed_job(
        "per-index",
        "test \"$JOB_COMPLETION_INDEX\" != 1",
        json!({"backoffLimitPerIndex": 1, "maxFailedIndexes": 1}),
    ));
    // Index 0 succeeding is enough; the others would run for an hour.
    cluster.create(indexed_job(
        "early",
        "[ \"$JOB_COMPLETION_INDEX\" = 0 ] && exit 0; sleep 3600",
        json!({"successPolicy": {"rules": [{"succeededIndexes": "0"}]}}),
    ));

    let early = wait_for_condition(&cluster, "early", "Complete");
    assert_eq!(
        condition(&early, "Complete").unwrap()["reason"],
        "SuccessPolicy"
    );
    assert_eq!(
        condition(&early, "SuccessCriteriaMet").unwrap()["reason"],
        "SuccessPolicy"
    );
    assert_eq!(early["status"]["completedIndexes"], "0");
    assert_eq!(early["status"]["active"], 0);

    let failed = wait_for_condition(&cluster, "per-index", "Failed");
    let status = &failed["status"];
    assert_eq!(
        condition(&failed, "Failed").unwrap()["reason"],
        "FailedIndexes"
    );
    assert_eq!(
        condition(&failed, "FailureTarget").unwrap()["reason"],
        "FailedIndexes"
    );
    assert_eq!(status["failedIndexes"], "1", "{status:#}");
    assert_eq!(status["completedIndexes"], "0,2", "{status:#}");
    assert_eq!(status["failed"], 2, "{status:#}");

    // The retry of index 1 carried the count of its earlier failures.
    let pods: Value = serde_json::from_str(&cluster.server.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "batch.kubernetes.io/job-name=per-index,batch.kubernetes.io/job-completion-index=1",
        "-o",
        "json",
    ]))
    .unwrap();
    let mut counts: Vec<String> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"]
                .as_str()
                .unwrap_or("none")
                .to_string()
        })
        .collect();
    counts.sort();
    assert_eq!(counts, vec!["1".to_string(), "none".to_string()]);
}
