//! Node lifecycle: a node whose heartbeat (its Lease in `kube-node-lease`, or its Ready
//! condition) is older than the grace period gets Ready=Unknown; Ready False/Unknown and
//! `spec.unschedulable` become `node.kubernetes.io/*` taints; and pods on a node with NoExecute
//! taints they do not tolerate are deleted, after their `tolerationSeconds` when they have one
//! (upstream's node lifecycle controller and taint eviction controller together).
//!
//! It polls every monitor period instead of watching: upstream does the same, because what it
//! reacts to is the *absence* of writes, which no watch event announces.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{EventType, Recorder, Reporter};
use serde_json::json;

use super::common;
use crate::scheduler::filter::tolerates;

pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// Pressure conditions and the NoSchedule taint each one puts on the node while True
/// (upstream's TaintNodesByCondition).
const PRESSURE_TAINTS: [(&str, &str); 3] = [
    ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "node.kubernetes.io/pid-pressure"),
];

/// The conditions the kubelet owns, all turned Unknown when it goes silent.
const KUBELET_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How often heartbeats and taints are checked.
    pub period: Duration,
    /// How old a heartbeat may be before the node counts as unreachable.
    pub grace: Duration,
}

/// Runs the controller until the process ends.
pub async fn run(client: kube::Client, settings: Settings) {
    let recorder = Recorder::new(client.clone(), Reporter::from("node-controller"));
    loop {
        if let Err(error) = monitor(&client, &recorder, settings, Timestamp::now()).await {
            tracing::warn!(%error, "node lifecycle pass failed; retrying");
        }
        tokio::time::sleep(settings.period).await;
    }
}

async fn monitor(
    client: &kube::Client,
    recorder: &Recorder,
    settings: Settings,
    now: Timestamp,
) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let renewed: BTreeMap<String, Timestamp> = leases
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|lease| {
            let renew = lease.spec?.renew_time?.0;
            Some((lease.metadata.name?, renew))
        })
        .collect();
    let grace = SignedDuration::try_from(settings.grace).unwrap_or(SignedDuration::MAX);
    for node in nodes.list(&ListParams::default()).await?.items {
        let Some(name) = node.metadata.name.clone() else {
            continue;
        };
        let heartbeat = last_heartbeat(&node, renewed.get(&name).copied());
        let mut conditions = conditions(&node);
        if heartbeat.is_none_or(|at| at + grace < now) {
            if let Some(unknown) = unknown_conditions(&conditions, now) {
                tracing::info!(node = %name, "node stopped posting status; marking it Unknown");
                let patch = json!({"status": {"conditions": unknown}});
                nodes
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                let reference = common::object_reference("v1", "Node", &node.metadata);
                common::publish(
                    recorder,
                    &reference,
                    EventType::Normal,
                    "NodeNotReady",
                    format!("Node {name} status is now: NodeNotReady"),
                )
                .await;
                conditions = unknown;
            }
        }
        let ready = conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status.as_str());
        let spec = node.spec.clone().unwrap_or_default();
        let current = spec.taints.clone().unwrap_or_default();
        let unschedulable = spec.unschedulable.unwrap_or(false);
        let desired = pressure_taints(
            desired_taints(&current, ready, unschedulable, now),
            &conditions,
        );
        if desired != current {
            // The resourceVersion makes this a compare-and-swap: a taint someone else added
            // meanwhile is not lost, the next pass sees it.
            let patch = json!({
                "metadata": {"resourceVersion": node.metadata.resource_version},
                "spec": {"taints": desired},
            });
            match nodes
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let no_execute: Vec<Taint> = desired
            .into_iter()
            .filter(|t| t.effect == "NoExecute")
            .collect();
        if !no_execute.is_empty() {
            evict_intolerant_pods(client, recorder, &name, &no_execute, now).await?;
        }
    }
    Ok(())
}

fn conditions(node: &Node) -> Vec<NodeCondition> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
}

/// The newest sign of life: the Lease's renew time or the Ready condition's heartbeat. A node
/// that never gave one counts from its creation, so a fresh node gets a grace period too.
pub fn last_heartbeat(node: &Node, lease_renewed: Option<Timestamp>) -> Option<Timestamp> {
    let ready_heartbeat = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0);
    let created = node.metadata.creation_timestamp.as_ref().map(|t| t.0);
    [lease_renewed, ready_heartbeat, created]
        .into_iter()
        .flatten()
        .max()
}

/// The kubelet's conditions turned Unknown, or None when Ready already is Unknown (so a silent
/// node is written once, not every pass).
pub fn unknown_conditions(current: &[NodeCondition], now: Timestamp) -> Option<Vec<NodeCondition>> {
    let ready = current.iter().find(|c| c.type_ == "Ready");
    if ready.is_some_and(|c| c.status == "Unknown") {
        return None;
    }
    let (reason, message) = match ready.is_some() {
        true => ("NodeStatusUnknown", "Kubelet stopped posting node status."),
        false => (
            "NodeStatusNeverUpdated",
            "Kubelet never posted node status.",
        ),
    };
    let mut updated: Vec<NodeCondition> = current
        .iter()
        .filter(|c| !KUBELET_CONDITIONS.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    for type_ in KUBELET_CONDITIONS {
        let old = current.iter().find(|c| c.type_ == type_);
        if old.is_none() && type_ != "Ready" {
            continue;
        }
        updated.push(NodeCondition {
            type_: type_.to_string(),
            status: "Unknown".into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_heartbeat_time: old.and_then(|c| c.last_heartbeat_time.clone()),
            last_transition_time: Some(Time(now)),
        });
    }
    Some(updated)
}

/// The node's taints with the ones this controller owns made to match the node's state: Ready
/// False is `not-ready`, Unknown is `unreachable` (NoSchedule and NoExecute each), a cordoned
/// node is `unschedulable:NoSchedule`. Taints that stay keep their `timeAdded`.
pub fn desired_taints(
    current: &[Taint],
    ready: Option<&str>,
    unschedulable: bool,
    now: Timestamp,
) -> Vec<Taint> {
    let mut wanted: Vec<(&str, &str)> = match ready {
        Some("False") => vec![
            (NOT_READY_TAINT, "NoSchedule"),
            (NOT_READY_TAINT, "NoExecute"),
        ],
        Some("Unknown") => vec![
            (UNREACHABLE_TAINT, "NoSchedule"),
            (UNREACHABLE_TAINT, "NoExecute"),
        ],
        _ => Vec::new(),
    };
    if unschedulable {
        wanted.push((UNSCHEDULABLE_TAINT, "NoSchedule"));
    }
    let owned = |t: &Taint| {
        matches!(
            t.key.as_str(),
            NOT_READY_TAINT | UNREACHABLE_TAINT | UNSCHEDULABLE_TAINT
        )
    };
    let mut taints: Vec<Taint> = current
        .iter()
        .filter(|t| !owned(t) || wanted.contains(&(t.key.as_str(), t.effect.as_str())))
        .cloned()
        .collect();
    for (key, effect) in wanted {
        if !taints.iter().any(|t| t.key == key && t.effect == effect) {
            taints.push(Taint {
                key: key.into(),
                effect: effect.into(),
                value: None,
                time_added: (effect == "NoExecute").then_some(Time(now)),
            });
        }
    }
    taints
}

/// `taints` with the pressure taints made to match the node's conditions: a
/// `node.kubernetes.io/<kind>-pressure:NoSchedule` taint while that pressure condition is True.
pub fn pressure_taints(mut taints: Vec<Taint>, conditions: &[NodeCondition]) -> Vec<Taint> {
    for (condition, key) in PRESSURE_TAINTS {
        let pressure = conditions
            .iter()
            .any(|c| c.type_ == condition && c.status == "True");
        let present = taints
            .iter()
            .any(|t| t.key == key && t.effect == "NoSchedule");
        if pressure && !present {
            taints.push(Taint {
                key: key.into(),
                effect: "NoSchedule".into(),
                value: None,
                time_added: None,
            });
        } else if !pressure && present {
            taints.retain(|t| t.key != key);
        }
    }
    taints
}

/// How long after `since` a pod with `tolerations` may stay on a node with `taints` (all
/// NoExecute): zero when one taint is not tolerated, None when all are tolerated for ever,
/// else the smallest `tolerationSeconds` among the tolerations in use (upstream's
/// `getMinTolerationTime`).
pub fn time_allowed(tolerations: &[Toleration], taints: &[Taint]) -> Option<Duration> {
    let mut allowed: Option<Duration> = None;
    for taint in taints {
        let used: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if used.is_empty() {
            return Some(Duration::ZERO);
        }
        for toleration in used {
            if let Some(seconds) = toleration.toleration_seconds {
                let d = Duration::from_secs(seconds.max(0) as u64);
                allowed = Some(allowed.map_or(d, |a| a.min(d)));
            }
        }
    }
    allowed
}

/// When a pod must go: `allowed` after the later of the taint's arrival and the pod's own
/// creation (a pod placed on an already tainted node gets its full toleration too).
pub fn eviction_time(pod: &Pod, taints: &[Taint], now: Timestamp) -> Option<Timestamp> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let allowed = time_allowed(&tolerations, taints)?;
    let tainted = taints
        .iter()
        .filter_map(|t| t.time_added.as_ref().map(|t| t.0))
        .min()
        .unwrap_or(now);
    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let start = created.map_or(tainted, |c| c.max(tainted));
    let allowed = SignedDuration::try_from(allowed).unwrap_or(SignedDuration::MAX);
    Some(start.checked_add(allowed).unwrap_or(Timestamp::MAX))
}

async fn evict_intolerant_pods(
    client: &kube::Client,
    recorder: &Recorder,
    node: &str,
    taints: &[Taint],
    now: Timestamp,
) -> Result<(), Error> {
    let pods: Api<Pod> = Api::all(client.clone());
    let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
    for pod in pods.list(&on_node).await?.items {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if eviction_time(&pod, taints, now).is_none_or(|at| at > now) {
            continue;
        }
        let (Some(name), Some(namespace)) = (&pod.metadata.name, &pod.metadata.namespace) else {
            continue;
        };
        tracing::info!(%namespace, pod = %name, %node, "evicting a pod from a NoExecute-tainted node");
        let reference = common::object_reference("v1", "Pod", &pod.metadata);
        common::publish(
            recorder,
            &reference,
            EventType::Normal,
            "TaintManagerEviction",
            format!("Marking for deletion Pod {namespace}/{name}"),
        )
        .await;
        common::mark_disruption_target(
            client,
            &pod,
            "DeletionByTaintManager",
            "Taint manager: deleting due to NoExecute taint",
            false,
        )
        .await?;
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let namespaced: Api<Pod> = Api::namespaced(client.clone(), namespace);
        match namespaced.delete(name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn taint(key: &str, effect: &str, added: Option<&str>) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            value: None,
            time_added: added.map(|a| Time(at(a))),
        }
    }

    fn toleration(key: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: seconds,
            value: None,
        }
    }

    fn node(conditions: serde_json::Value, created: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n", "creationTimestamp": created},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    #[test]
    fn the_heartbeat_is_the_newest_of_lease_ready_condition_and_creation() {
        let n = node(
            json!([{"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-01-01T00:01:00Z"}]),
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(last_heartbeat(&n, None), Some(at("2026-01-01T00:01:00Z")));
        assert_eq!(
            last_heartbeat(&n, Some(at("2026-01-01T00:02:00Z"))),
            Some(at("2026-01-01T00:02:00Z"))
        );
        let silent = node(json!([]), "2026-01-01T00:00:00Z");
        assert_eq!(
            last_heartbeat(&silent, None),
            Some(at("2026-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn a_silent_node_gets_its_kubelet_conditions_unknown_once() {
        let now = at("2026-01-01T00:05:00Z");
        let current: Vec<NodeCondition> = serde_json::from_value(json!([
            {"type": "Ready", "status": "True", "reason": "KubeletReady"},
            {"type": "MemoryPressure", "status": "False"},
            {"type": "NetworkUnavailable", "status": "False"},
        ]))
        .unwrap();
        let unknown = unknown_conditions(&current, now).unwrap();
        let ready = unknown.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        let memory = unknown
            .iter()
            .find(|c| c.type_ == "MemoryPressure")
            .unwrap();
        assert_eq!(memory.status, "Unknown");
        let network = unknown
            .iter()
            .find(|c| c.type_ == "NetworkUnavailable")
            .unwrap();
        assert_eq!(network.status, "False");
        assert!(!unknown.iter().any(|c| c.type_ == "DiskPressure"));
        assert_eq!(unknown_conditions(&unknown, now), None);
    }

    #[test]
    fn a_node_that_never_posted_status_says_so() {
        let unknown = unknown_conditions(&[], Timestamp::now()).unwrap();
        assert_eq!(unknown.len(), 1);
        assert_eq!(unknown[0].reason.as_deref(), Some("NodeStatusNeverUpdated"));
    }

    #[test]
    fn taints_follow_the_ready_condition_and_keep_foreign_ones() {
        let now = at("2026-01-01T00:00:00Z");
        let foreign = taint("dedicated", "NoSchedule", None);
        let unknown = desired_taints(&[foreign.clone()], Some("Unknown"), false, now);
        let keys: Vec<(&str, &str)> = unknown
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("dedicated", "NoSchedule"),
                (UNREACHABLE_TAINT, "NoSchedule"),
                (UNREACHABLE_TAINT, "NoExecute")
            ]
        );
        assert_eq!(unknown[2].time_added, Some(Time(now)));
        let later = at("2026-01-01T00:01:00Z");
        assert_eq!(
            desired_taints(&unknown, Some("Unknown"), false, later),
            unknown
        );
        let not_ready = desired_taints(&unknown, Some("False"), false, later);
        assert!(not_ready.iter().all(|t| t.key != UNREACHABLE_TAINT));
        assert!(not_ready
            .iter()
            .any(|t| t.key == NOT_READY_TAINT && t.effect == "NoExecute"));
        assert_eq!(
            desired_taints(&not_ready, Some("True"), false, later),
            vec![foreign]
        );
        let cordoned = desired_taints(&[], Some("True"), true, later);
        assert_eq!(
            cordoned,
            vec![taint(UNSCHEDULABLE_TAINT, "NoSchedule", None)]
        );
    }

    #[test]
    fn pressure_conditions_become_no_schedule_taints_and_go_with_them() {
        let condition = |type_: &str, status: &str| NodeCondition {
            type_: type_.into(),
            status: status.into(),
            ..Default::default()
        };
        let foreign = taint("dedicated", "NoSchedule", None);
        let pressured = pressure_taints(
            vec![foreign.clone()],
            &[
                condition("MemoryPressure", "True"),
                condition("DiskPressure", "False"),
            ],
        );
        assert_eq!(
            pressured,
            vec![
                foreign.clone(),
                taint("node.kubernetes.io/memory-pressure", "NoSchedule", None)
            ]
        );
        assert_eq!(
            pressure_taints(pressured.clone(), &[condition("DiskPressure", "True")]),
            vec![
                foreign.clone(),
                taint("node.kubernetes.io/disk-pressure", "NoSchedule", None)
            ]
        );
        assert_eq!(
            pressure_taints(pressured, &[condition("MemoryPressure", "Unknown")]),
            vec![foreign]
        );
    }

    #[test]
    fn an_untolerated_no_execute_taint_evicts_at_once_and_the_shortest_toleration_wins() {
        let taints = [
            taint(UNREACHABLE_TAINT, "NoExecute", None),
            taint(NOT_READY_TAINT, "NoExecute", None),
        ];
        assert_eq!(time_allowed(&[], &taints), Some(Duration::ZERO));
        let only_one = [toleration(UNREACHABLE_TAINT, Some(30))];
        assert_eq!(time_allowed(&only_one, &taints), Some(Duration::ZERO));
        let both = [
            toleration(UNREACHABLE_TAINT, Some(30)),
            toleration(NOT_READY_TAINT, Some(300)),
        ];
        assert_eq!(time_allowed(&both, &taints), Some(Duration::from_secs(30)));
        let forever = [
            toleration(UNREACHABLE_TAINT, None),
            toleration(NOT_READY_TAINT, None),
        ];
        assert_eq!(time_allowed(&forever, &taints), None);
    }

    #[test]
    fn the_toleration_counts_from_the_taint_or_the_pods_creation_whichever_is_later() {
        let taints = [taint(
            UNREACHABLE_TAINT,
            "NoExecute",
            Some("2026-01-01T00:00:00Z"),
        )];
        let pod = |created: &str| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "p", "creationTimestamp": created},
                "spec": {"containers": [], "tolerations": [
                    {"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10}
                ]},
            }))
            .unwrap()
        };
        let now = at("2026-01-01T00:10:00Z");
        assert_eq!(
            eviction_time(&pod("2025-12-31T00:00:00Z"), &taints, now),
            Some(at("2026-01-01T00:00:10Z"))
        );
        assert_eq!(
            eviction_time(&pod("2026-01-01T00:05:00Z"), &taints, now),
            Some(at("2026-01-01T00:05:10Z"))
        );
    }
}
