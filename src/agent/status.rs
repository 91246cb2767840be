//! Pod status from what the agent observed: phase, conditions, container statuses. Pure: the
//! worker gathers a [`PodView`], [`compute`] turns it into the `status` JSON, and the worker
//! writes it only when it differs from what the API holds.

use serde_json::{json, Map, Value};

/// One container's state, in Kubernetes terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: String,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        message: Option<String>,
        started_at: Option<String>,
        finished_at: Option<String>,
        container_id: Option<String>,
    },
}

impl State {
    pub fn waiting(reason: &str) -> State {
        State::Waiting {
            reason: reason.into(),
            message: None,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            State::Waiting { reason, message } => {
                let mut w = json!({"reason": reason});
                if let Some(m) = message {
                    w["message"] = json!(m);
                }
                json!({"waiting": w})
            }
            State::Running { started_at } => json!({"running": {"startedAt": started_at}}),
            State::Terminated {
                exit_code,
                reason,
                message,
                started_at,
                finished_at,
                container_id,
            } => {
                let mut t = json!({"exitCode": exit_code, "reason": reason});
                if let Some(m) = message {
                    t["message"] = json!(m);
                }
                if let Some(s) = started_at {
                    t["startedAt"] = json!(s);
                }
                if let Some(f) = finished_at {
                    t["finishedAt"] = json!(f);
                }
                if let Some(id) = container_id {
                    t["containerID"] = json!(id);
                }
                json!({"terminated": t})
            }
        }
    }
}

/// What the agent knows about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    pub name: String,
    pub state: State,
    /// The previous run's termination, if any.
    pub last_state: Option<State>,
    pub restart_count: i32,
    pub ready: bool,
    pub started: bool,
    pub image: String,
    pub image_id: String,
    pub container_id: Option<String>,
}

impl ContainerView {
    fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "state": self.state.to_json(),
            "lastState": self.last_state.as_ref().map(State::to_json).unwrap_or_else(|| json!({})),
            "ready": self.ready,
            "restartCount": self.restart_count,
            "image": self.image,
            "imageID": self.image_id,
            "started": self.started,
        });
        if let Some(id) = &self.container_id {
            v["containerID"] = json!(id);
        }
        v
    }

    fn succeeded(&self) -> bool {
        matches!(self.state, State::Terminated { exit_code: 0, .. })
    }
}

/// The whole pod as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodView {
    pub init: Vec<ContainerView>,
    pub containers: Vec<ContainerView>,
    /// Debug containers added through `pods/ephemeralcontainers`: reported, never counted
    /// for phase or readiness.
    pub ephemeral: Vec<ContainerView>,
    pub pod_ip: Option<String>,
    pub host_ip: Option<String>,
    /// Network and shim are up.
    pub sandbox_ready: bool,
}

/// The pod phase from its containers, after kubelet's `getPhase`.
pub fn phase(restart_policy: &str, view: &PodView) -> &'static str {
    let init_failed = view
        .init
        .iter()
        .any(|c| matches!(c.state, State::Terminated { exit_code, .. } if exit_code != 0));
    if init_failed && restart_policy == "Never" {
        return "Failed";
    }
    if !view.init.iter().all(ContainerView::succeeded) {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in &view.containers {
        match &c.state {
            State::Running { .. } => running += 1,
            State::Terminated { exit_code, .. } => {
                stopped += 1;
                if *exit_code == 0 {
                    succeeded += 1;
                }
            }
            // A container waiting to be restarted has run before: it counts as stopped.
            State::Waiting { .. } if c.last_state.is_some() => stopped += 1,
            State::Waiting { .. } => waiting += 1,
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        if restart_policy == "Always" {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if restart_policy == "Never" {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    }
}

fn condition(old: &[Value], kind: &str, ok: bool, reason: Option<&str>, now: &str) -> Value {
    let status = if ok { "True" } else { "False" };
    let previous = old
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind));
    let since = match previous {
        Some(p) if p.get("status").and_then(Value::as_str) == Some(status) => p
            .get("lastTransitionTime")
            .cloned()
            .unwrap_or_else(|| json!(now)),
        _ => json!(now),
    };
    let mut c =
        json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    c
}

/// The pod conditions the agent computes; every other condition belongs to someone else.
const AGENT_CONDITIONS: [&str; 4] = [
    "PodReadyToStartContainers",
    "Initialized",
    "Ready",
    "ContainersReady",
];

/// The pod's new `status`, keeping what is not the agent's (PodScheduled, qosClass, startTime
/// once set).
pub fn compute(old_status: &Value, restart_policy: &str, view: &PodView, now: &str) -> Value {
    let old_conditions: Vec<Value> = old_status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let phase = phase(restart_policy, view);
    let initialized = view.init.iter().all(ContainerView::succeeded);
    let completed = phase == "Succeeded" || phase == "Failed";
    let unready: Vec<&str> = view
        .containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let containers_ready = unready.is_empty() && !view.containers.is_empty();
    let not_ready_reason = if completed {
        Some("PodCompleted")
    } else if containers_ready {
        None
    } else {
        Some("ContainersNotReady")
    };
    let mut conditions = vec![
        condition(
            &old_conditions,
            "PodReadyToStartContainers",
            view.sandbox_ready,
            None,
            now,
        ),
        condition(
            &old_conditions,
            "Initialized",
            initialized,
            (!initialized).then_some("ContainersNotInitialized"),
            now,
        ),
        condition(
            &old_conditions,
            "Ready",
            containers_ready,
            not_ready_reason,
            now,
        ),
        condition(
            &old_conditions,
            "ContainersReady",
            containers_ready,
            not_ready_reason,
            now,
        ),
    ];
    if !containers_ready && !completed {
        let message = format!("containers with unready status: [{}]", unready.join(" "));
        for c in conditions.iter_mut().skip(2) {
            c["message"] = json!(message);
        }
    }
    // Conditions others own (PodScheduled, DisruptionTarget, readiness gates) stay as they are.
    conditions.extend(
        old_conditions
            .iter()
            .filter(|c| {
                !c.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| AGENT_CONDITIONS.contains(&t))
            })
            .cloned(),
    );
    let mut status = Map::new();
    status.insert("phase".into(), json!(phase));
    status.insert("conditions".into(), Value::Array(conditions));
    if let Some(ip) = &view.host_ip {
        status.insert("hostIP".into(), json!(ip));
        status.insert("hostIPs".into(), json!([{"ip": ip}]));
    }
    if let Some(ip) = &view.pod_ip {
        status.insert("podIP".into(), json!(ip));
        status.insert("podIPs".into(), json!([{"ip": ip}]));
    }
    let start = old_status
        .get("startTime")
        .cloned()
        .unwrap_or_else(|| json!(now));
    status.insert("startTime".into(), start);
    if !view.init.is_empty() {
        status.insert(
            "initContainerStatuses".into(),
            Value::Array(view.init.iter().map(ContainerView::to_json).collect()),
        );
    }
    status.insert(
        "containerStatuses".into(),
        Value::Array(view.containers.iter().map(ContainerView::to_json).collect()),
    );
    if !view.ephemeral.is_empty() {
        status.insert(
            "ephemeralContainerStatuses".into(),
            Value::Array(view.ephemeral.iter().map(ContainerView::to_json).collect()),
        );
    }
    if let Some(q) = old_status.get("qosClass") {
        status.insert("qosClass".into(), q.clone());
    }
    Value::Object(status)
}

/// Whether writing `new` would change anything in `old` (fields the agent does not set are
/// left as they are by the merge patch, so only ours are compared).
pub fn differs(old: &Value, new: &Value) -> bool {
    match new.as_object() {
        Some(fields) => fields.iter().any(|(k, v)| old.get(k) != Some(v)),
        None => false,
    }
}

/// An RFC 3339 time as Kubernetes writes it (whole seconds, UTC).
pub fn k8s_time(rfc3339: &str) -> String {
    match rfc3339.parse::<jiff::Timestamp>() {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => rfc3339.to_string(),
    }
}

pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, state: State) -> ContainerView {
        ContainerView {
            name: name.into(),
            ready: matches!(state, State::Running { .. }),
            started: matches!(state, State::Running { .. }),
            state,
            last_state: None,
            restart_count: 0,
            image: "busybox".into(),
            image_id: "docker.io/library/busybox@sha256:1".into(),
            container_id: Some("berth://abc".into()),
        }
    }

    fn running() -> State {
        State::Running {
            started_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn exited(code: i32) -> State {
        State::Terminated {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: None,
            finished_at: None,
            container_id: None,
        }
    }

    fn pod(init: Vec<ContainerView>, containers: Vec<ContainerView>) -> PodView {
        PodView {
            ephemeral: Vec::new(),
            init,
            containers,
            pod_ip: Some("10.42.0.9".into()),
            host_ip: Some("127.0.0.1".into()),
            sandbox_ready: true,
        }
    }

    #[test]
    fn phases_follow_kubelet_rules() {
        let p = |policy, v: &PodView| phase(policy, v);
        assert_eq!(
            p("Always", &pod(vec![], vec![view("a", running())])),
            "Running"
        );
        assert_eq!(
            p(
                "Always",
                &pod(vec![], vec![view("a", State::waiting("ContainerCreating"))])
            ),
            "Pending"
        );
        assert_eq!(
            p("Never", &pod(vec![], vec![view("a", exited(0))])),
            "Succeeded"
        );
        assert_eq!(
            p("Never", &pod(vec![], vec![view("a", exited(1))])),
            "Failed"
        );
        assert_eq!(
            p("OnFailure", &pod(vec![], vec![view("a", exited(1))])),
            "Running"
        );
        assert_eq!(
            p("Always", &pod(vec![], vec![view("a", exited(0))])),
            "Running"
        );
        assert_eq!(
            p(
                "Always",
                &pod(
                    vec![view("i", running())],
                    vec![view("a", State::waiting("PodInitializing"))]
                )
            ),
            "Pending"
        );
        assert_eq!(
            p(
                "Never",
                &pod(
                    vec![view("i", exited(2))],
                    vec![view("a", State::waiting("PodInitializing"))]
                )
            ),
            "Failed"
        );
        let mut crashing = view("a", State::waiting("CrashLoopBackOff"));
        crashing.last_state = Some(exited(1));
        assert_eq!(p("Always", &pod(vec![], vec![crashing])), "Running");
    }

    #[test]
    fn a_running_pod_gets_ready_conditions_ips_and_keeps_others_conditions_and_qos() {
        let old = json!({"qosClass": "BestEffort", "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}]});
        let status = compute(
            &old,
            "Always",
            &pod(vec![], vec![view("a", running())]),
            "2026-01-02T00:00:00Z",
        );
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["podIP"], "10.42.0.9");
        assert_eq!(status["podIPs"], json!([{"ip": "10.42.0.9"}]));
        assert_eq!(status["hostIP"], "127.0.0.1");
        assert_eq!(status["qosClass"], "BestEffort");
        assert_eq!(status["startTime"], "2026-01-02T00:00:00Z");
        let types: Vec<(&str, &str)> = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["type"].as_str().unwrap(), c["status"].as_str().unwrap()))
            .collect();
        assert_eq!(
            types,
            vec![
                ("PodReadyToStartContainers", "True"),
                ("Initialized", "True"),
                ("Ready", "True"),
                ("ContainersReady", "True"),
                ("PodScheduled", "True"),
                ("DisruptionTarget", "True")
            ]
        );
        let cs = &status["containerStatuses"][0];
        assert_eq!(cs["state"]["running"]["startedAt"], "2026-01-01T00:00:00Z");
        assert_eq!(cs["containerID"], "berth://abc");
        assert_eq!(cs["ready"], true);
    }

    #[test]
    fn an_unchanged_pod_computes_an_unchanged_status() {
        let v = pod(vec![], vec![view("a", State::waiting("ContainerCreating"))]);
        let first = compute(&json!({}), "Always", &v, "2026-01-01T00:00:00Z");
        let second = compute(&first, "Always", &v, "2026-01-01T00:05:00Z");
        assert!(!differs(&first, &second), "transition times are kept");
        let changed = compute(
            &first,
            "Always",
            &pod(vec![], vec![view("a", running())]),
            "2026-01-01T00:06:00Z",
        );
        assert!(differs(&first, &changed));
        assert_eq!(
            first["conditions"][2]["message"],
            "containers with unready status: [a]"
        );
    }

    #[test]
    fn kubernetes_times_have_whole_seconds() {
        assert_eq!(
            k8s_time("2026-01-01T10:11:12.123456789Z"),
            "2026-01-01T10:11:12Z"
        );
    }
}
