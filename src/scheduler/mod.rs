//! The scheduler: binds pending pods (no `spec.nodeName`, schedulerName `default-scheduler`)
//! to the node that fits best, through the `pods/binding` subresource.
//!
//! Pods and nodes come from reflector caches. Pods bound in this process are "assumed" onto
//! their node until the cache shows the binding, so a burst of pods does not overfill a node
//! the cache still shows as empty. A pod that fits nowhere gets a `FailedScheduling` event and
//! a `PodScheduled=False` condition, and is tried again when nodes or bound pods change (or
//! after a while regardless, in case a change went unseen).

pub mod filter;
pub mod quantity;
pub mod score;

use std::collections::{BTreeMap, HashMap};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;

use filter::{fit_error_message, unfit_reasons, NodeUsage};

pub const SCHEDULER_NAME: &str = "default-scheduler";
/// Upstream moves unschedulable pods back to the active queue after at most five minutes; we
/// are cheaper to run, so sooner.
const UNSCHEDULABLE_RETRY: Duration = Duration::from_secs(30);
/// Bindings and status writes in flight at once.
const WRITE_PARALLELISM: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
}

/// Does this pod wait for this scheduler?
pub fn needs_scheduling(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let unbound = spec.node_name.as_deref().unwrap_or("").is_empty();
    let ours = matches!(
        spec.scheduler_name.as_deref(),
        None | Some("") | Some(SCHEDULER_NAME)
    );
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    unbound
        && ours
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// What every node has left, counting pods bound to it that still hold resources.
pub fn usage_by_node<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> BTreeMap<String, NodeUsage> {
    let mut usage: BTreeMap<String, NodeUsage> = nodes
        .into_iter()
        .filter_map(|n| Some((n.metadata.name.clone()?, NodeUsage::from_node(n))))
        .collect();
    for pod in pods {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        if let Some(u) = node.and_then(|n| usage.get_mut(n)) {
            u.add_pod(pod);
        }
    }
    usage
}

/// The scheduling decision for one pod: the best node, or upstream's FitError message. Ties go
/// to the first node by name, so decisions are reproducible.
pub fn decide<'a>(
    pod: &Pod,
    nodes: &'a [Arc<Node>],
    usage: &BTreeMap<String, NodeUsage>,
) -> Result<&'a str, String> {
    let mut best: Option<(&str, i64)> = None;
    let mut reasons = Vec::new();
    let empty = NodeUsage::default();
    for node in nodes {
        let Some(name) = node.metadata.name.as_deref() else {
            continue;
        };
        let node_usage = usage.get(name).unwrap_or(&empty);
        let unfit = unfit_reasons(pod, node, node_usage);
        if !unfit.is_empty() {
            reasons.push(unfit);
            continue;
        }
        let score = score::least_allocated(pod, node_usage);
        let better = match best {
            None => true,
            Some((best_name, best_score)) => {
                score > best_score || (score == best_score && name < best_name)
            }
        };
        if better {
            best = Some((name, score));
        }
    }
    best.map(|(name, _)| name)
        .ok_or_else(|| fit_error_message(nodes.len(), &reasons))
}

/// Highest priority first, then oldest first (upstream's PrioritySort).
fn queue_order(a: &Pod, b: &Pod) -> std::cmp::Ordering {
    let priority = |p: &Pod| p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
    let created = |p: &Pod| p.metadata.creation_timestamp.clone();
    priority(b)
        .cmp(&priority(a))
        .then(created(a).cmp(&created(b)))
        .then(a.metadata.name.cmp(&b.metadata.name))
}

struct Scheduler {
    client: kube::Client,
    recorder: Recorder,
    pods: Store<Pod>,
    nodes: Store<Node>,
    /// Bumped whenever capacity may have changed: a node event, a bound pod changing or going.
    capacity_changes: Arc<AtomicU64>,
    /// Pods bound here but not yet seen bound in the cache: uid → node.
    assumed: HashMap<String, String>,
    /// Pods found unschedulable: uid → (capacity generation, when).
    unschedulable: HashMap<String, (u64, Instant)>,
}

/// Runs until a watch ends.
pub async fn run(client: kube::Client) {
    let (pod_reader, pod_writer) = reflector::store();
    let (node_reader, node_writer) = reflector::store();
    let wake = Arc::new(tokio::sync::Notify::new());
    let capacity_changes = Arc::new(AtomicU64::new(0));

    let pod_events = {
        let wake = wake.clone();
        let changes = capacity_changes.clone();
        let api: Api<Pod> = Api::all(client.clone());
        reflector::reflector(
            pod_writer,
            watcher::watcher(api, watcher::Config::default()),
        )
        .default_backoff()
        .for_each(move |event| {
            if let Ok(event) = event {
                let bound = |p: &Pod| !needs_scheduling(p);
                let capacity = match &event {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => bound(p),
                    watcher::Event::Delete(_) | watcher::Event::InitDone => true,
                    watcher::Event::Init => false,
                };
                if capacity {
                    changes.fetch_add(1, Ordering::Relaxed);
                }
                wake.notify_one();
            }
            async {}
        })
    };
    let node_events = {
        let wake = wake.clone();
        let changes = capacity_changes.clone();
        let api: Api<Node> = Api::all(client.clone());
        reflector::reflector(
            node_writer,
            watcher::watcher(api, watcher::Config::default()),
        )
        .default_backoff()
        .for_each(move |event| {
            if event.is_ok() {
                changes.fetch_add(1, Ordering::Relaxed);
                wake.notify_one();
            }
            async {}
        })
    };
    let recorder = Recorder::new(client.clone(), Reporter::from(SCHEDULER_NAME));
    let mut scheduler = Scheduler {
        client,
        recorder,
        pods: pod_reader,
        nodes: node_reader,
        capacity_changes,
        assumed: HashMap::new(),
        unschedulable: HashMap::new(),
    };
    let scheduling = async move {
        let _ = scheduler.pods.wait_until_ready().await;
        let _ = scheduler.nodes.wait_until_ready().await;
        loop {
            scheduler.round().await;
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(UNSCHEDULABLE_RETRY) => {}
            }
        }
    };
    let (pod_events, node_events, scheduling) =
        (pin!(pod_events), pin!(node_events), pin!(scheduling));
    tokio::select! {
        _ = pod_events => tracing::warn!("the scheduler's pod watch ended"),
        _ = node_events => tracing::warn!("the scheduler's node watch ended"),
        _ = scheduling => {}
    }
}

impl Scheduler {
    /// Places every pending pod it can, in queue order, against one snapshot of the cluster.
    async fn round(&mut self) {
        let pods = self.pods.state();
        let mut nodes = self.nodes.state();
        nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));

        // Forget assumptions the cache has caught up with (bound, or the pod is gone).
        let live: HashMap<&str, &Pod> = pods
            .iter()
            .filter_map(|p| Some((p.metadata.uid.as_deref()?, p.as_ref())))
            .collect();
        self.assumed
            .retain(|uid, _| live.get(uid.as_str()).is_some_and(|p| needs_scheduling(p)));
        self.unschedulable
            .retain(|uid, _| live.get(uid.as_str()).is_some_and(|p| needs_scheduling(p)));

        let mut usage = usage_by_node(
            nodes.iter().map(|n| n.as_ref()),
            pods.iter().map(|p| p.as_ref()),
        );
        for (uid, node) in &self.assumed {
            if let (Some(pod), Some(u)) = (live.get(uid.as_str()), usage.get_mut(node)) {
                u.add_pod(pod);
            }
        }

        let generation = self.capacity_changes.load(Ordering::Relaxed);
        let mut pending: Vec<&Pod> = pods
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| needs_scheduling(p))
            .filter(|p| {
                let uid = p.metadata.uid.as_deref().unwrap_or("");
                if self.assumed.contains_key(uid) {
                    return false;
                }
                // Unchanged cluster, recent verdict: the answer would be the same.
                !self.unschedulable.get(uid).is_some_and(|(seen, at)| {
                    *seen == generation && at.elapsed() < UNSCHEDULABLE_RETRY
                })
            })
            .collect();
        pending.sort_by(|a, b| queue_order(a, b));

        // Decide one pod after another (each decision counts the ones before it), then write
        // the bindings concurrently: the store commits concurrent writes together, so this is
        // what makes a burst of pods fast.
        let mut binds: Vec<(&Pod, String)> = Vec::new();
        let mut unplaceable: Vec<(&Pod, String)> = Vec::new();
        for pod in pending {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            match decide(pod, &nodes, &usage) {
                Ok(node) => {
                    let node = node.to_string();
                    if let Some(u) = usage.get_mut(&node) {
                        u.add_pod(pod);
                    }
                    self.unschedulable.remove(&uid);
                    self.assumed.insert(uid, node.clone());
                    binds.push((pod, node));
                }
                Err(message) => {
                    self.unschedulable.insert(uid, (generation, Instant::now()));
                    unplaceable.push((pod, message));
                }
            }
        }
        let mut failed: Vec<String> = Vec::new();
        for chunk in binds.chunks(WRITE_PARALLELISM) {
            let results =
                futures::future::join_all(chunk.iter().map(|(pod, node)| self.bind(pod, node)))
                    .await;
            for ((pod, _), result) in chunk.iter().zip(results) {
                let ok = match result {
                    Ok(bound) => bound,
                    Err(error) => {
                        tracing::warn!(%error, pod = ?pod.metadata.name, "binding failed");
                        false
                    }
                };
                if !ok {
                    failed.extend(pod.metadata.uid.clone());
                }
            }
        }
        for chunk in unplaceable.chunks(WRITE_PARALLELISM) {
            let reports = chunk
                .iter()
                .map(|(pod, message)| self.report_unschedulable(pod, message));
            for result in futures::future::join_all(reports).await {
                if let Err(error) = result {
                    tracing::debug!(%error, "cannot record an unschedulable pod");
                }
            }
        }
        // A binding that did not happen must not hold resources on its node.
        for uid in failed {
            self.assumed.remove(&uid);
        }
    }

    /// POSTs the Binding; false if the pod went away or was bound by someone else meanwhile.
    async fn bind(&self, pod: &Pod, node: &str) -> Result<bool, Error> {
        let (Some(name), Some(namespace)) = (&pod.metadata.name, &pod.metadata.namespace) else {
            return Ok(false);
        };
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.to_string()),
                ..Default::default()
            },
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        match api
            .create_subresource::<_, serde_json::Value>(
                "binding",
                name,
                &PostParams::default(),
                &binding,
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        crate::controllers::common::publish(
            &self.recorder,
            &pod_reference(pod),
            EventType::Normal,
            "Scheduled",
            format!("Successfully assigned {namespace}/{name} to {node}"),
        )
        .await;
        Ok(true)
    }

    async fn report_unschedulable(&self, pod: &Pod, message: &str) -> Result<(), Error> {
        let (Some(name), Some(namespace)) = (&pod.metadata.name, &pod.metadata.namespace) else {
            return Ok(());
        };
        crate::controllers::common::publish(
            &self.recorder,
            &pod_reference(pod),
            EventType::Warning,
            "FailedScheduling",
            message.to_string(),
        )
        .await;
        let current = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let previous = current.iter().find(|c| c.type_ == "PodScheduled");
        if previous.is_some_and(|c| {
            c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(message)
        }) {
            return Ok(());
        }
        let now = crate::api::meta::now_rfc3339();
        let transition = previous
            .filter(|c| c.status == "False")
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0.to_string())
            .unwrap_or(now);
        let mut conditions: Vec<serde_json::Value> = current
            .iter()
            .filter(|c| c.type_ != "PodScheduled")
            .filter_map(|c| serde_json::to_value(c).ok())
            .collect();
        conditions.push(json!({
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastProbeTime": null,
            "lastTransitionTime": transition,
        }));
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let body = json!({"status": {"conditions": conditions}});
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn pod_reference(pod: &Pod) -> ObjectReference {
    crate::controllers::common::object_reference("v1", "Pod", &pod.metadata)
}

#[cfg(test)]
mod tests {
    use super::filter::tests::{node, pod};
    use super::*;

    fn named(mut p: Pod, name: &str) -> Pod {
        p.metadata.name = Some(name.into());
        p
    }

    #[test]
    fn only_unbound_live_pods_for_this_scheduler_are_pending() {
        let mut p = pod(None, None);
        assert!(needs_scheduling(&p));
        p.spec.as_mut().unwrap().scheduler_name = Some("other".into());
        assert!(!needs_scheduling(&p));
        p.spec.as_mut().unwrap().scheduler_name = Some(SCHEDULER_NAME.into());
        p.spec.as_mut().unwrap().node_name = Some("n1".into());
        assert!(!needs_scheduling(&p));
    }

    #[test]
    fn the_least_allocated_fitting_node_wins() {
        let nodes = vec![
            Arc::new(node("busy", "4", "8Gi", "110")),
            Arc::new(node("idle", "4", "8Gi", "110")),
            Arc::new(node("tiny", "500m", "8Gi", "110")),
        ];
        let mut placed = named(pod(Some("2"), Some("4Gi")), "placed");
        placed.spec.as_mut().unwrap().node_name = Some("busy".into());
        let usage = usage_by_node(nodes.iter().map(|n| n.as_ref()), [&placed]);
        assert_eq!(
            decide(&pod(Some("1"), Some("1Gi")), &nodes, &usage),
            Ok("idle")
        );
    }

    #[test]
    fn a_pod_that_fits_nowhere_gets_upstreams_message() {
        let nodes = vec![Arc::new(node("n1", "1", "1Gi", "110"))];
        let usage = usage_by_node(nodes.iter().map(|n| n.as_ref()), []);
        assert_eq!(
            decide(&pod(Some("2"), None), &nodes, &usage),
            Err("0/1 nodes are available: 1 Insufficient cpu.".to_string())
        );
        assert_eq!(
            decide(&pod(None, None), &[], &usage),
            Err("no nodes available to schedule pods".to_string())
        );
    }

    #[test]
    fn finished_pods_no_longer_hold_resources() {
        let nodes = [node("n1", "1", "1Gi", "110")];
        let mut done = pod(Some("1"), None);
        done.spec.as_mut().unwrap().node_name = Some("n1".into());
        done.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        let usage = usage_by_node(nodes.iter(), [&done]);
        assert_eq!(usage["n1"].pod_count, 0);
        assert_eq!(usage["n1"].requested.milli_cpu, 0);
    }

    #[test]
    fn higher_priority_then_older_pods_are_scheduled_first() {
        let mut low = named(pod(None, None), "low");
        low.spec.as_mut().unwrap().priority = Some(0);
        let mut high = named(pod(None, None), "high");
        high.spec.as_mut().unwrap().priority = Some(1000);
        let mut pods = [low, high];
        pods.sort_by(queue_order);
        assert_eq!(pods[0].metadata.name.as_deref(), Some("high"));
    }
}
