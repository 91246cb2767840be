//! Pods: READY, STATUS (with upstream's reason logic), RESTARTS with the last restart's age.

use jiff::Timestamp;
use serde_json::{json, Value};

use super::{age, col, duration, has, int, list, name, text, wide, Column, Printer, AGE, NAME};

static COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    col("Status", "string", "The aggregate status of the containers in this pod."),
    col("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
    AGE,
    wide("IP", "string", "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
    wide("Node", "string", "NodeName indicates in which node this pod is scheduled."),
    wide("Nominated Node", "string", "nominatedNodeName is set only when this pod preempts other pods on the node."),
    wide("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness."),
];

static POD: Printer = Printer {
    columns: COLUMNS,
    row,
};

pub fn printer(kind: &str) -> Option<&'static Printer> {
    (kind == "Pod").then_some(&POD)
}

/// Upstream's row conditions: kubectl can tell finished pods apart without reading the status.
pub fn row_conditions(pod: &Value) -> Option<Value> {
    match text(pod, "/status/phase") {
        "Succeeded" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}]),
        ),
        "Failed" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]),
        ),
        _ => None,
    }
}

/// A sidecar: an init container that keeps running (`restartPolicy: Always`).
fn is_restartable(init_container: Option<&Value>) -> bool {
    init_container.is_some_and(|c| text(c, "/restartPolicy") == "Always")
}

fn condition_true(pod: &Value, kind: &str) -> bool {
    list(pod, "/status/conditions")
        .iter()
        .any(|c| text(c, "/type") == kind && text(c, "/status") == "True")
}

/// The latest `finishedAt` of a container's previous run, kept in `latest` when later.
fn note_last_termination(status: &Value, latest: &mut Option<Timestamp>) {
    let finished = text(status, "/lastState/terminated/finishedAt");
    if let Ok(t) = finished.parse::<Timestamp>() {
        if latest.is_none_or(|l| t > l) {
            *latest = Some(t);
        }
    }
}

/// `Init:` + what an init container that did not finish cleanly says about itself.
fn terminated_reason(status: &Value, prefix: &str) -> String {
    let reason = text(status, "/state/terminated/reason");
    if !reason.is_empty() {
        return format!("{prefix}{reason}");
    }
    let signal = int(status, "/state/terminated/signal");
    if signal != 0 {
        format!("{prefix}Signal:{signal}")
    } else {
        format!(
            "{prefix}ExitCode:{}",
            int(status, "/state/terminated/exitCode")
        )
    }
}

struct Summary {
    ready: usize,
    total: usize,
    reason: String,
    restarts: i64,
    last_restart: Option<Timestamp>,
}

fn summarize(pod: &Value) -> Summary {
    let phase = text(pod, "/status/phase");
    let mut reason = match text(pod, "/status/reason") {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    if list(pod, "/status/conditions")
        .iter()
        .any(|c| text(c, "/type") == "PodScheduled" && text(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }
    let init_specs = list(pod, "/spec/initContainers");
    let init_spec = |name: &str| init_specs.iter().find(|c| text(c, "/name") == name);
    let total = list(pod, "/spec/containers").len()
        + init_specs
            .iter()
            .filter(|c| is_restartable(Some(c)))
            .count();
    let mut ready = 0;
    let mut restarts = 0;
    let mut last_restart = None;
    let mut sidecar_restarts = 0;
    let mut last_sidecar_restart = None;

    let mut initializing = false;
    for (i, status) in list(pod, "/status/initContainerStatuses")
        .iter()
        .enumerate()
    {
        let sidecar = is_restartable(init_spec(text(status, "/name")));
        restarts += int(status, "/restartCount");
        note_last_termination(status, &mut last_restart);
        if sidecar {
            sidecar_restarts += int(status, "/restartCount");
            note_last_termination(status, &mut last_sidecar_restart);
        }
        let terminated = has(status, "/state/terminated");
        let waiting_reason = text(status, "/state/waiting/reason");
        if terminated && int(status, "/state/terminated/exitCode") == 0 {
            continue;
        }
        if sidecar && status.get("started").and_then(Value::as_bool) == Some(true) {
            if status.get("ready").and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        reason = if terminated {
            terminated_reason(status, "Init:")
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    if !initializing || condition_true(pod, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for status in list(pod, "/status/containerStatuses").iter().rev() {
            restarts += int(status, "/restartCount");
            note_last_termination(status, &mut last_restart);
            let waiting_reason = text(status, "/state/waiting/reason");
            let terminated_with = text(status, "/state/terminated/reason");
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if !terminated_with.is_empty() {
                reason = terminated_with.to_string();
            } else if has(status, "/state/terminated") {
                reason = terminated_reason(status, "");
            } else if status.get("ready").and_then(Value::as_bool) == Some(true)
                && has(status, "/state/running")
            {
                has_running = true;
                ready += 1;
            }
        }
        // A container still running after another completed: the pod is not done yet.
        if reason == "Completed" && has_running {
            reason = if condition_true(pod, "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }

    if super::is_deleting(pod) {
        if text(pod, "/status/reason") == "NodeLost" {
            reason = "Unknown".into();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".into();
        }
    }
    Summary {
        ready,
        total,
        reason,
        restarts,
        last_restart,
    }
}

fn row(pod: &Value, now: Timestamp) -> Vec<Value> {
    let s = summarize(pod);
    let restarts = match s.last_restart {
        Some(t) if s.restarts != 0 => format!(
            "{} ({} ago)",
            s.restarts,
            duration::human(now.as_second() - t.as_second())
        ),
        _ => s.restarts.to_string(),
    };
    let or_none = |s: &str| super::or_none(s);
    let ip = list(pod, "/status/podIPs")
        .first()
        .map(|p| text(p, "/ip"))
        .unwrap_or_else(|| text(pod, "/status/podIP"));
    let gates = list(pod, "/spec/readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = list(pod, "/status/conditions");
        let passing = gates
            .iter()
            .filter(|g| {
                let kind = text(g, "/conditionType");
                conditions
                    .iter()
                    .find(|c| text(c, "/type") == kind)
                    .is_some_and(|c| text(c, "/status") == "True")
            })
            .count();
        format!("{passing}/{}", gates.len())
    };
    vec![
        name(pod),
        Value::from(format!("{}/{}", s.ready, s.total)),
        Value::from(s.reason),
        Value::from(restarts),
        age(pod, now),
        Value::from(or_none(ip)),
        Value::from(or_none(text(pod, "/spec/nodeName"))),
        Value::from(or_none(text(pod, "/status/nominatedNodeName"))),
        Value::from(readiness_gates),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::table::printers::test_now;

    fn pod(spec: Value, status: Value) -> Value {
        json!({"metadata": {"name": "web", "creationTimestamp": "2026-01-01T11:55:00Z"},
               "spec": spec, "status": status})
    }

    fn one_container() -> Value {
        json!({"containers": [{"name": "app", "image": "busybox"}]})
    }

    fn cells(p: &Value) -> (String, String, String) {
        let r = row(p, test_now());
        (
            r[1].as_str().unwrap().to_string(),
            r[2].as_str().unwrap().to_string(),
            r[3].as_str().unwrap().to_string(),
        )
    }

    #[test]
    fn a_pending_pod_shows_pending_then_container_creating() {
        let p = pod(one_container(), json!({"phase": "Pending"}));
        assert_eq!(cells(&p), ("0/1".into(), "Pending".into(), "0".into()));
        let p = pod(
            one_container(),
            json!({"phase": "Pending", "containerStatuses": [
                {"name": "app", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        assert_eq!(cells(&p).1, "ContainerCreating");
        let r = row(&p, test_now());
        assert_eq!(r[4], "5m");
        assert_eq!(r[5], "<none>");
        assert_eq!(r[8], "<none>");
    }

    #[test]
    fn a_running_ready_pod_is_one_of_one_with_its_ip_and_node() {
        let mut p = pod(
            one_container(),
            json!({"phase": "Running", "podIP": "10.42.0.5", "podIPs": [{"ip": "10.42.0.5"}],
                   "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
                     "state": {"running": {"startedAt": "2026-01-01T11:56:00Z"}}}]}),
        );
        p["spec"]["nodeName"] = json!("pi1");
        assert_eq!(cells(&p), ("1/1".into(), "Running".into(), "0".into()));
        let r = row(&p, test_now());
        assert_eq!(
            (r[5].as_str(), r[6].as_str()),
            (Some("10.42.0.5"), Some("pi1"))
        );
    }

    #[test]
    fn a_crash_looping_pod_shows_its_restarts_and_when_it_last_died() {
        let p = pod(
            one_container(),
            json!({"phase": "Running", "containerStatuses": [{"name": "app", "ready": false,
                "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                             "finishedAt": "2026-01-01T11:58:00Z"}}}]}),
        );
        assert_eq!(
            cells(&p),
            ("0/1".into(), "CrashLoopBackOff".into(), "3 (2m ago)".into())
        );
    }

    #[test]
    fn a_finished_pod_is_completed_and_carries_a_completed_condition() {
        let p = pod(
            one_container(),
            json!({"phase": "Succeeded", "containerStatuses": [{"name": "app", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
        );
        assert_eq!(cells(&p), ("0/1".into(), "Completed".into(), "0".into()));
        assert_eq!(row_conditions(&p).unwrap()[0]["type"], "Completed");
        let failed = pod(
            one_container(),
            json!({"phase": "Failed", "containerStatuses": [{"name": "app",
                "state": {"terminated": {"exitCode": 2}}}]}),
        );
        assert_eq!(cells(&failed).1, "ExitCode:2");
    }

    #[test]
    fn a_pod_being_deleted_is_terminating() {
        let mut p = pod(
            one_container(),
            json!({"phase": "Running", "containerStatuses": [{"name": "app", "ready": true,
                "state": {"running": {}}}]}),
        );
        p["metadata"]["deletionTimestamp"] = json!("2026-01-01T11:59:00Z");
        assert_eq!(cells(&p).1, "Terminating");
    }

    #[test]
    fn init_containers_show_progress_then_their_failure() {
        let spec = json!({"initContainers": [{"name": "a"}, {"name": "b"}],
                          "containers": [{"name": "app"}]});
        let p = pod(
            spec.clone(),
            json!({"phase": "Pending", "initContainerStatuses": [
                {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "b", "state": {"running": {}}}],
              "containerStatuses": [{"name": "app",
                "state": {"waiting": {"reason": "PodInitializing"}}}]}),
        );
        assert_eq!(cells(&p), ("0/1".into(), "Init:1/2".into(), "0".into()));
        let p = pod(
            spec,
            json!({"phase": "Pending", "initContainerStatuses": [
                {"name": "a", "restartCount": 2,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}),
        );
        assert_eq!(cells(&p).1, "Init:CrashLoopBackOff");
        assert_eq!(cells(&p).2, "2");
    }

    #[test]
    fn started_sidecars_count_as_ready_containers() {
        let spec = json!({"initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
                          "containers": [{"name": "app"}]});
        let p = pod(
            spec,
            json!({"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}],
              "initContainerStatuses": [{"name": "proxy", "started": true, "ready": true,
                                         "state": {"running": {}}}],
              "containerStatuses": [{"name": "app", "ready": true, "state": {"running": {}}}]}),
        );
        assert_eq!(cells(&p), ("2/2".into(), "Running".into(), "0".into()));
    }

    #[test]
    fn readiness_gates_count_the_true_conditions() {
        let mut p = pod(
            one_container(),
            json!({"conditions": [
            {"type": "example.com/ready", "status": "True"}]}),
        );
        p["spec"]["readinessGates"] = json!([{"conditionType": "example.com/ready"},
                                             {"conditionType": "example.com/other"}]);
        assert_eq!(row(&p, test_now())[8], "1/2");
    }
}
