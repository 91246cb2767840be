//! Pod admission on the node (upstream's kubelet admit handlers): before a new pod's first
//! container starts, the node may refuse it, and the pod then fails at once with upstream's
//! reason and message instead of running where it cannot.
//!
//! - Under node pressure (upstream's eviction manager `Admit`): MemoryPressure alone refuses
//!   BestEffort pods that do not tolerate the memory-pressure taint; DiskPressure or
//!   PIDPressure refuse every pod; critical pods are always let in.
//! - Resources (upstream's predicate admit handler): a pod bound straight to the node with
//!   `nodeName`, past the scheduler, is refused when its requests do not fit what the node's
//!   admitted pods leave of its allocatable (`OutOfcpu`, `OutOfmemory`, ...).
//!
//! Admissions are made one at a time, so two new pods never both count on the same room.

use std::collections::HashSet;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use super::eviction::rank::is_critical;
use super::eviction::thresholds::Condition;
use super::sync::Ctx;
use crate::scheduler::filter::{pod_requests, tolerates, NodeUsage};

/// Upstream's prefix of a refused pod's status message.
const REJECTED: &str = "Pod was rejected: ";

/// Why the node refuses a pod: the pod's `status.reason` and the rest of its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    pub message: String,
}

/// What admission shares between the pod workers and the eviction manager.
#[derive(Debug, Default)]
pub struct Admission {
    /// The node's pressure conditions, as the eviction manager last judged them.
    pressure: Mutex<Vec<Condition>>,
    /// Pods let in (or found running) on this node; held across one admission at a time.
    admitted: tokio::sync::Mutex<HashSet<String>>,
}

impl Admission {
    /// Told by the eviction manager every round.
    pub fn set_pressure(&self, pressure: Vec<Condition>) {
        *self.pressure.lock().unwrap_or_else(|e| e.into_inner()) = pressure;
    }

    fn pressure(&self) -> Vec<Condition> {
        self.pressure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether `pod` may start here. A pod that already started (before a restart of berth,
    /// say) is not judged again, only counted.
    pub async fn admit(&self, ctx: &Ctx, pod: &Pod) -> Result<(), Refusal> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut admitted = self.admitted.lock().await;
        if admitted.contains(&uid) || already_started(ctx, pod) {
            admitted.insert(uid);
            return Ok(());
        }
        if let Some(refusal) = pressure_refusal(pod, &self.pressure()) {
            return Err(refusal);
        }
        match node_and_pods(ctx).await {
            Ok((node, pods)) => {
                let others: Vec<&Pod> = pods
                    .iter()
                    .filter(|p| p.metadata.uid.as_deref() != Some(uid.as_str()))
                    .filter(|p| counts_as_admitted(p, &admitted))
                    .collect();
                if let Some(refusal) = resource_refusal(pod, &node, &others) {
                    return Err(refusal);
                }
            }
            // Upstream refuses with InvalidNodeInfo here; a passing API error should not fail
            // a pod for good, so it is let in and the scheduler's own check stands.
            Err(error) => tracing::warn!(%error, "cannot read the node to admit a pod"),
        }
        admitted.insert(uid);
        Ok(())
    }

    /// Forgets a pod once it is gone from the node.
    pub async fn forget(&self, uid: &str) {
        self.admitted.lock().await.remove(uid);
    }
}

/// A pod with containers or a sandbox here, or a status saying it ran, is past admission.
fn already_started(ctx: &Ctx, pod: &Pod) -> bool {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref());
    !matches!(phase, None | Some("Pending"))
        || status.is_some_and(|s| s.start_time.is_some())
        || ctx.runtime.pod_dir(uid).exists()
}

/// Whether another pod of this node holds room already: let in by us, or running.
fn counts_as_admitted(pod: &Pod, admitted: &HashSet<String>) -> bool {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref());
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    !matches!(phase, Some("Succeeded" | "Failed"))
        && pod.metadata.deletion_timestamp.is_none()
        && (admitted.contains(uid)
            || phase == Some("Running")
            || status.is_some_and(|s| s.start_time.is_some()))
}

async fn node_and_pods(ctx: &Ctx) -> Result<(Node, Vec<Pod>), kube::Error> {
    let node = Api::<Node>::all(ctx.client.clone())
        .get(&ctx.config.node_name)
        .await?;
    let selector = format!("spec.nodeName={}", ctx.config.node_name);
    let pods = Api::<Pod>::all(ctx.client.clone())
        .list(&ListParams::default().fields(&selector))
        .await?
        .items;
    Ok((node, pods))
}

/// Upstream's eviction manager `Admit`: the refusal of `pod` on a node with `pressure`.
pub fn pressure_refusal(pod: &Pod, pressure: &[Condition]) -> Option<Refusal> {
    if pressure.is_empty() || is_critical(pod) {
        return None;
    }
    if pressure == [Condition::MemoryPressure] {
        let spec = pod.spec.as_ref()?;
        let memory_taint = Taint {
            key: "node.kubernetes.io/memory-pressure".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let tolerated = spec
            .tolerations
            .iter()
            .flatten()
            .any(|t| tolerates(t, &memory_taint));
        if super::spec::qos_class(spec) != "BestEffort" || tolerated {
            return None;
        }
    }
    let names: Vec<&str> = pressure.iter().map(|c| c.type_name()).collect();
    Some(Refusal {
        reason: super::eviction::REASON.into(),
        // Go's %v of a slice: `[MemoryPressure DiskPressure]`.
        message: format!("The node had condition: [{}]. ", names.join(" ")),
    })
}

/// Upstream's predicate admit handler, resource part: the first of pods, cpu, memory and
/// ephemeral storage the node cannot give `pod` besides what `others` requested.
pub fn resource_refusal(pod: &Pod, node: &Node, others: &[&Pod]) -> Option<Refusal> {
    let mut usage = NodeUsage::from_node(node);
    for other in others {
        usage.add_pod(other);
    }
    let refuse = |resource: &str, requested: i128, used: i128, capacity: i128| {
        Refusal {
        reason: format!("OutOf{resource}"),
        message: format!(
            "Node didn't have enough resource: {resource}, requested: {requested}, used: {used}, capacity: {capacity}"
        ),
    }
    };
    if usage.pod_count + 1 > usage.allowed_pods {
        return Some(refuse(
            "pods",
            1,
            usage.pod_count.into(),
            usage.allowed_pods.into(),
        ));
    }
    let want = pod_requests(pod, false);
    let (used, has) = (&usage.requested, &usage.allocatable);
    // Quantities are in milli-units: cpu is told in millicores, bytes in bytes.
    let checks = [
        ("cpu", want.milli_cpu, used.milli_cpu, has.milli_cpu, 1),
        ("memory", want.memory, used.memory, has.memory, 1000),
        (
            "ephemeral-storage",
            want.ephemeral_storage,
            used.ephemeral_storage,
            has.ephemeral_storage,
            1000,
        ),
    ];
    checks
        .into_iter()
        .find(|(_, asked, used, has, _)| *asked > 0 && used + asked > *has)
        .map(|(resource, asked, used, has, unit)| {
            refuse(resource, asked / unit, used / unit, has / unit)
        })
}

/// Whether the API records `pod` as refused by a node.
pub fn is_rejected(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Failed")
            && s.message
                .as_deref()
                .is_some_and(|m| m.starts_with(REJECTED))
    })
}

/// Records the refusal as upstream's `rejectPod` does: a warning event, and the pod Failed with
/// the reason and `Pod was rejected: <message>`. Its containers never start.
pub async fn reject(ctx: &Ctx, pod: &Pod, refusal: &Refusal) {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    tracing::info!(pod = %name, reason = %refusal.reason, message = %refusal.message, "pod not admitted");
    ctx.event(pod, true, &refusal.reason, refusal.message.clone())
        .await;
    let patch = json!({"status": {
        "phase": "Failed",
        "reason": refusal.reason,
        "message": format!("{REJECTED}{}", refusal.message),
    }});
    let api: Api<Pod> = Api::namespaced(
        ctx.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    if let Err(error) = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::warn!(pod = %name, %error, "cannot record the pod's rejection");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "uid": "u"}, "spec": spec}))
            .unwrap()
    }

    fn best_effort() -> Pod {
        pod(json!({"containers": [{"name": "main", "image": "busybox"}]}))
    }

    fn burstable(cpu: &str, memory: &str) -> Pod {
        pod(json!({"containers": [{"name": "main", "image": "busybox",
            "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}))
    }

    fn node(cpu: &str, memory: &str, pods: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n"}, "status": {
            "allocatable": {"cpu": cpu, "memory": memory, "pods": pods,
                "ephemeral-storage": "10Gi"}}}))
        .unwrap()
    }

    #[test]
    fn memory_pressure_refuses_only_best_effort_pods_that_do_not_tolerate_it() {
        let memory = [Condition::MemoryPressure];
        let refused = pressure_refusal(&best_effort(), &memory).unwrap();
        assert_eq!(refused.reason, "Evicted");
        assert_eq!(
            refused.message,
            "The node had condition: [MemoryPressure]. "
        );
        assert_eq!(pressure_refusal(&burstable("100m", "64Mi"), &memory), None);
        let tolerant = pod(json!({"containers": [{"name": "main", "image": "busybox"}],
            "tolerations": [{"key": "node.kubernetes.io/memory-pressure",
                "operator": "Exists", "effect": "NoSchedule"}]}));
        assert_eq!(pressure_refusal(&tolerant, &memory), None);
        assert_eq!(pressure_refusal(&best_effort(), &[]), None);
    }

    #[test]
    fn disk_or_pid_pressure_refuses_every_pod_but_critical_ones() {
        let both = [Condition::MemoryPressure, Condition::DiskPressure];
        let refused = pressure_refusal(&burstable("100m", "64Mi"), &both).unwrap();
        assert_eq!(
            refused.message,
            "The node had condition: [MemoryPressure DiskPressure]. "
        );
        assert!(pressure_refusal(&burstable("1", "1Gi"), &[Condition::PidPressure]).is_some());
        let critical = pod(json!({"priority": 2_000_001_000,
            "containers": [{"name": "main", "image": "busybox"}]}));
        assert_eq!(
            pressure_refusal(&critical, &[Condition::DiskPressure]),
            None
        );
    }

    #[test]
    fn requests_beyond_what_admitted_pods_leave_are_refused_with_upstreams_words() {
        let node = node("2", "1Gi", "110");
        let big = burstable("3", "64Mi");
        assert_eq!(
            resource_refusal(&big, &node, &[]),
            Some(Refusal {
                reason: "OutOfcpu".into(),
                message: "Node didn't have enough resource: cpu, requested: 3000, used: 0, capacity: 2000".into(),
            })
        );
        let half = burstable("1", "600Mi");
        let refused = resource_refusal(&half, &node, &[&half]).unwrap();
        assert_eq!(refused.reason, "OutOfmemory");
        assert_eq!(
            refused.message,
            format!(
                "Node didn't have enough resource: memory, requested: {m}, used: {m}, capacity: {}",
                1u64 << 30,
                m = 600u64 << 20
            )
        );
        assert_eq!(
            resource_refusal(&burstable("1", "100Mi"), &node, &[&half]),
            None
        );
        // A pod asking nothing fits however full the node is, but not past its pod count.
        assert_eq!(resource_refusal(&best_effort(), &node, &[&big, &big]), None);
        let full = node_with_pods(1);
        let refused = resource_refusal(&best_effort(), &full, &[&half]).unwrap();
        assert_eq!(refused.reason, "OutOfpods");
        assert_eq!(
            refused.message,
            "Node didn't have enough resource: pods, requested: 1, used: 1, capacity: 1"
        );
    }

    fn node_with_pods(pods: u32) -> Node {
        node("2", "1Gi", &pods.to_string())
    }

    #[test]
    fn only_failed_pods_with_the_rejection_prefix_count_as_rejected() {
        let with = |phase: &str, message: &str| -> Pod {
            serde_json::from_value(json!({"status": {"phase": phase, "message": message}})).unwrap()
        };
        assert!(is_rejected(&with(
            "Failed",
            "Pod was rejected: Node didn't have enough resource: cpu"
        )));
        assert!(!is_rejected(&with(
            "Failed",
            "The node was low on resource"
        )));
        assert!(!is_rejected(&with("Pending", "Pod was rejected: x")));
    }
}
