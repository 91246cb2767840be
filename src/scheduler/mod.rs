//! The scheduler: binds pending pods (no `spec.nodeName`, schedulerName `default-scheduler`)
//! to the node that fits best, through the `pods/binding` subresource.
//!
//! Pods and nodes come from reflector caches. Pods bound in this process are "assumed" onto
//! their node until the cache shows the binding, so a burst of pods does not overfill a node
//! the cache still shows as empty. A pod that fits nowhere gets a `FailedScheduling` event and
//! a `PodScheduled=False` condition, and is tried again when nodes or bound pods change (or
//! after a while regardless, in case a change went unseen).

pub mod binder;
pub mod cluster;
pub mod filter;
pub mod interpod;
pub mod owners;
pub mod preemption;
pub mod quantity;
pub mod score;
pub mod spread;
pub mod volumes;

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;

use binder::Binder;
use cluster::Cluster;
use filter::{fit_error_message, unfit_reasons, NodeUsage};

pub const SCHEDULER_NAME: &str = "default-scheduler";
/// Upstream moves unschedulable pods back to the active queue after at most five minutes; we
/// are cheaper to run, so sooner.
const UNSCHEDULABLE_RETRY: Duration = Duration::from_secs(30);

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

/// Why the pod cannot go to this node, in upstream's filter order; empty if it can.
pub(crate) fn node_unfit(
    pod: &Pod,
    node: &Node,
    cluster: &Cluster,
    affinity: &interpod::Prepared,
    spreading: &spread::Prepared,
) -> Vec<String> {
    let name = node.metadata.name.as_deref().unwrap_or("");
    let empty = NodeUsage::default();
    let usage = cluster.usage.get(name).unwrap_or(&empty);
    let unfit = unfit_reasons(pod, node, usage);
    if !unfit.is_empty() {
        return unfit;
    }
    let labels = cluster.node_labels(name);
    let volume = match volumes::uses_claims(pod) {
        true => volumes::unfit(pod, node, cluster),
        false => None,
    };
    volume
        .or_else(|| spreading.unfit(labels))
        .or_else(|| affinity.unfit(labels))
        .map(String::from)
        .into_iter()
        .collect()
}

/// The weighted sum of every score plugin, per feasible node.
fn total_scores(
    pod: &Pod,
    feasible: &[&Node],
    cluster: &Cluster,
    affinity: &interpod::Prepared,
    spreading: &spread::Prepared,
) -> Vec<i64> {
    let name = |n: &Node| n.metadata.name.clone().unwrap_or_default();
    let empty = NodeUsage::default();
    let mut totals: Vec<i64> = feasible
        .iter()
        .map(|n| {
            let usage = cluster.usage.get(&name(n)).unwrap_or(&empty);
            score::least_allocated(pod, usage) * score::RESOURCES_WEIGHT
                + score::balanced_allocation(pod, usage) * score::BALANCED_ALLOCATION_WEIGHT
        })
        .collect();
    let mut add = |scores: Vec<i64>, weight: i64| {
        for (total, s) in totals.iter_mut().zip(scores) {
            *total += s * weight;
        }
    };
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let soft_taints: Vec<i64> = feasible
        .iter()
        .map(|n| filter::intolerable_soft_taints(n, &tolerations))
        .collect();
    add(
        score::normalize_by_max(&soft_taints, true),
        score::TAINT_TOLERATION_WEIGHT,
    );
    let preferred: Vec<i64> = feasible
        .iter()
        .map(|n| filter::preferred_node_affinity(pod, n))
        .collect();
    add(
        score::normalize_by_max(&preferred, false),
        score::NODE_AFFINITY_WEIGHT,
    );
    if affinity.scores_anything() {
        let raw: Vec<i64> = feasible
            .iter()
            .map(|n| affinity.score(cluster.node_labels(&name(n))))
            .collect();
        add(
            score::normalize_min_max(&raw),
            score::INTER_POD_AFFINITY_WEIGHT,
        );
    }
    if spreading.scores_anything() {
        let raw: Vec<Option<f64>> = feasible
            .iter()
            .map(|n| spreading.raw_score(cluster.node_labels(&name(n))))
            .collect();
        add(spread::normalize(&raw), score::TOPOLOGY_SPREAD_WEIGHT);
    }
    totals
}

/// The scheduling decision for one pod: the best node, or upstream's FitError message. Ties
/// are broken at random, as upstream, so equal nodes share a burst of equal pods.
pub fn decide(pod: &Pod, cluster: &Cluster, rng: &mut impl rand::Rng) -> Result<String, String> {
    let affinity = interpod::Prepared::new(pod, cluster);
    let spreading = spread::Prepared::new(pod, cluster);
    let mut feasible: Vec<&Node> = Vec::new();
    let mut reasons = Vec::new();
    for node in &cluster.nodes {
        let unfit = node_unfit(pod, node, cluster, &affinity, &spreading);
        match unfit.is_empty() {
            true => feasible.push(node),
            false => reasons.push(unfit),
        }
    }
    let best = match feasible.len() {
        0 => None,
        1 => feasible.first().copied(),
        _ => {
            let scores = total_scores(pod, &feasible, cluster, &affinity, &spreading);
            pick_best(&feasible, &scores, rng)
        }
    };
    best.and_then(|n| n.metadata.name.clone())
        .ok_or_else(|| fit_error_message(cluster.nodes.len(), &reasons))
}

/// The highest-scoring node; among several with the top score, each is equally likely (one
/// pass of reservoir sampling, as upstream's selectHost).
fn pick_best<'a>(nodes: &[&'a Node], scores: &[i64], rng: &mut impl rand::Rng) -> Option<&'a Node> {
    let mut best: Option<(&Node, i64)> = None;
    let mut tied = 0u32;
    for (node, &score) in nodes.iter().zip(scores) {
        match best {
            Some((_, top)) if score < top => {}
            Some((_, top)) if score == top => {
                tied += 1;
                if rng.random_range(0..tied) == 0 {
                    best = Some((node, score));
                }
            }
            _ => {
                best = Some((node, score));
                tied = 1;
            }
        }
    }
    best.map(|(n, _)| n)
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
    binder: Binder,
    pods: Store<Pod>,
    nodes: Store<Node>,
    namespaces: Store<Namespace>,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    /// Bumped whenever capacity may have changed: a node event, a bound pod changing or going.
    capacity_changes: Arc<AtomicU64>,
    /// Pods bound here but not yet seen bound in the cache: uid → node.
    assumed: HashMap<String, String>,
    /// Pods found unschedulable: uid → (capacity generation, when).
    unschedulable: HashMap<String, (u64, Instant)>,
    /// Breaks ties between equally good nodes.
    rng: rand::rngs::StdRng,
    owners: owners::SharedOwners,
}

/// A reflector over every object of a kind (in all namespaces, for namespaced kinds) that bumps `changes` (when `counts` says the event
/// may change where pods fit) and wakes the scheduler.
fn reflect<K>(
    client: &kube::Client,
    writer: reflector::store::Writer<K>,
    wake: &Arc<tokio::sync::Notify>,
    changes: &Arc<AtomicU64>,
    counts: fn(&watcher::Event<K>) -> bool,
) -> impl std::future::Future<Output = ()>
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (wake, changes) = (wake.clone(), changes.clone());
    let api: Api<K> = Api::all(client.clone());
    reflector::reflector(writer, watcher::watcher(api, watcher::Config::default()))
        .default_backoff()
        .for_each(move |event| {
            if let Ok(event) = event {
                if counts(&event) {
                    changes.fetch_add(1, Ordering::Relaxed);
                }
                wake.notify_one();
            }
            async {}
        })
}

fn always<K>(_: &watcher::Event<K>) -> bool {
    true
}

/// A pending pod changing frees nothing; a bound one changing or going may.
fn pod_event_counts(event: &watcher::Event<Pod>) -> bool {
    match event {
        watcher::Event::Apply(p) | watcher::Event::InitApply(p) => !needs_scheduling(p),
        watcher::Event::Delete(_) | watcher::Event::InitDone => true,
        watcher::Event::Init => false,
    }
}

/// Runs until a watch ends.
pub async fn run(client: kube::Client) {
    let (pod_reader, pod_writer) = reflector::store();
    let (node_reader, node_writer) = reflector::store();
    let (namespace_reader, namespace_writer) = reflector::store();
    let (claim_reader, claim_writer) = reflector::store();
    let (volume_reader, volume_writer) = reflector::store();
    let wake = Arc::new(tokio::sync::Notify::new());
    let changes = Arc::new(AtomicU64::new(0));

    let pod_events = reflect(&client, pod_writer, &wake, &changes, pod_event_counts);
    let node_events = reflect(&client, node_writer, &wake, &changes, always);
    let namespace_events = reflect(&client, namespace_writer, &wake, &changes, always);
    let claim_events = reflect(&client, claim_writer, &wake, &changes, always);
    let volume_events = reflect(&client, volume_writer, &wake, &changes, always);
    let shared_owners = owners::SharedOwners::default();
    let owner_events = owners::watch(client.clone(), shared_owners.clone());
    let mut scheduler = Scheduler {
        binder: Binder::new(client.clone()),
        client,
        pods: pod_reader,
        nodes: node_reader,
        namespaces: namespace_reader,
        claims: claim_reader,
        volumes: volume_reader,
        capacity_changes: changes,
        assumed: HashMap::new(),
        unschedulable: HashMap::new(),
        rng: rand::SeedableRng::from_os_rng(),
        owners: shared_owners.clone(),
    };
    let scheduling = async move {
        let _ = scheduler.pods.wait_until_ready().await;
        let _ = scheduler.nodes.wait_until_ready().await;
        let _ = scheduler.namespaces.wait_until_ready().await;
        let _ = scheduler.claims.wait_until_ready().await;
        let _ = scheduler.volumes.wait_until_ready().await;
        loop {
            scheduler.round().await;
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(UNSCHEDULABLE_RETRY) => {}
                // Its node's room is free again, and the pod goes back in the queue.
                uid = scheduler.binder.next_failure() => {
                    scheduler.assumed.remove(&uid);
                }
            }
        }
    };
    let watches = async {
        tokio::select! {
            _ = pod_events => "pod",
            _ = node_events => "node",
            _ = namespace_events => "namespace",
            _ = claim_events => "persistentvolumeclaim",
            _ = volume_events => "persistentvolume",
            _ = owner_events => "service, replicaset, statefulset or replicationcontroller",
        }
    };
    let (watches, scheduling) = (pin!(watches), pin!(scheduling));
    tokio::select! {
        kind = watches => tracing::warn!(kind, "a scheduler watch ended"),
        _ = scheduling => {}
    }
}

/// A pod the scheduler decided to preempt for.
struct Preemption<'a> {
    pod: &'a Pod,
    node: String,
    victims: Vec<Arc<Pod>>,
}

impl Scheduler {
    /// The cluster as the caches show it, with the pods assumed bound here.
    fn snapshot(&self, pods: &[Arc<Pod>], live: &HashMap<&str, &Arc<Pod>>) -> Cluster {
        let mut cluster = Cluster::new(self.nodes.state()).with_pods(pods.iter().cloned());
        for (uid, node) in &self.assumed {
            if let Some(pod) = live.get(uid.as_str()) {
                cluster.place(Arc::clone(pod), node);
            }
        }
        cluster.namespace_labels = self
            .namespaces
            .state()
            .iter()
            .filter_map(|n| {
                Some((
                    n.metadata.name.clone()?,
                    n.metadata.labels.clone().unwrap_or_default(),
                ))
            })
            .collect();
        cluster.claims = self
            .claims
            .state()
            .into_iter()
            .filter_map(|c| {
                let key = format!(
                    "{}/{}",
                    c.metadata.namespace.as_deref()?,
                    c.metadata.name.as_deref()?
                );
                Some((key, c))
            })
            .collect();
        cluster.owners = owners::read(&self.owners);
        cluster.volumes = self
            .volumes
            .state()
            .into_iter()
            .filter_map(|v| Some((v.metadata.name.clone()?, v)))
            .collect();
        cluster
    }

    /// Places every pending pod it can, in queue order, against one snapshot of the cluster.
    async fn round(&mut self) {
        let pods = self.pods.state();

        // Forget assumptions the cache has caught up with (bound, or the pod is gone).
        let live: HashMap<&str, &Arc<Pod>> = pods
            .iter()
            .filter_map(|p| Some((p.metadata.uid.as_deref()?, p)))
            .collect();
        self.assumed
            .retain(|uid, _| live.get(uid.as_str()).is_some_and(|p| needs_scheduling(p)));
        self.unschedulable
            .retain(|uid, _| live.get(uid.as_str()).is_some_and(|p| needs_scheduling(p)));

        let generation = self.capacity_changes.load(Ordering::Relaxed);
        let mut pending: Vec<&Arc<Pod>> = pods
            .iter()
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
        // Most wake-ups are a bound pod's status changing: nothing to place, so no snapshot.
        if pending.is_empty() {
            return;
        }
        pending.sort_by(|a, b| queue_order(a, b));
        let mut cluster = self.snapshot(&pods, &live);

        // Decide one pod after another (each decision counts the ones before it, bound or
        // merely assumed); the bindings are written meanwhile, concurrently, by the binder.
        let mut unplaceable: Vec<(&Arc<Pod>, String)> = Vec::new();
        for pod in pending {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            match decide(pod, &cluster, &mut self.rng) {
                Ok(node) => {
                    cluster.place(Arc::clone(pod), &node);
                    self.unschedulable.remove(&uid);
                    self.assumed.insert(uid, node.clone());
                    self.binder.bind(Arc::clone(pod), node);
                }
                Err(message) => {
                    // A pod that preempted keeps its nominated node's room while the victims
                    // leave, so pods of lower priority do not take it.
                    if let Some(node) = nominated_node(pod) {
                        cluster.place(Arc::clone(pod), node);
                    }
                    self.unschedulable.insert(uid, (generation, Instant::now()));
                    unplaceable.push((pod, message));
                }
            }
        }
        let (preemptions, why_not) = self.plan_preemptions(&unplaceable, &mut cluster).await;
        for (pod, message) in &unplaceable {
            // Upstream appends what preemption (its PostFilter) found, unless it found a node.
            let uid = pod.metadata.uid.as_deref().unwrap_or("");
            let message = failed_scheduling_message(message, why_not.get(uid).map(String::as_str));
            self.binder.report_unschedulable(Arc::clone(pod), message);
        }
        for preemption in preemptions {
            if let Err(error) = self.preempt(&preemption).await {
                tracing::warn!(%error, pod = ?preemption.pod.metadata.name, "preemption failed");
            }
        }
    }

    /// For each unplaceable pod that may preempt, in queue order: the node and victims. Each
    /// plan takes its victims out of the snapshot and reserves the node for its pod, so the
    /// next plan sees the room already claimed. Also, by pod uid, why preemption cannot help
    /// the others (their FailedScheduling message ends with it).
    async fn plan_preemptions<'a>(
        &self,
        unplaceable: &[(&'a Arc<Pod>, String)],
        cluster: &mut Cluster,
    ) -> (Vec<Preemption<'a>>, HashMap<String, String>) {
        let mut why_not = HashMap::new();
        if cluster.nodes.is_empty() {
            return (Vec::new(), why_not);
        }
        let mut eligible: Vec<&Arc<Pod>> = Vec::new();
        for (pod, _) in unplaceable {
            match preemption::ineligible(pod, cluster) {
                Some(reason) => {
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    why_not.insert(uid, reason.to_string());
                }
                None => eligible.push(pod),
            }
        }
        // Budgets only rank candidates; listing them is saved when nobody could be evicted.
        let lowest = cluster
            .placed_pods()
            .map(|(_, p)| preemption::priority(p))
            .min();
        let anyone_evictable = eligible
            .iter()
            .any(|pod| lowest.is_some_and(|low| low < preemption::priority(pod)));
        let budgets = match anyone_evictable {
            false => Vec::new(),
            true => {
                let pdbs: Api<PodDisruptionBudget> = Api::all(self.client.clone());
                match pdbs.list(&Default::default()).await {
                    Ok(list) => preemption::budgets(&list.items),
                    Err(error) => {
                        tracing::warn!(%error, "cannot list PodDisruptionBudgets; not preempting now");
                        return (Vec::new(), why_not);
                    }
                }
            }
        };
        let mut plans = Vec::new();
        for pod in eligible {
            // Its own reservation on its nominated node is room it may take, not a pod to keep.
            if let (Some(node), Some(uid)) = (nominated_node(pod), pod.metadata.uid.clone()) {
                cluster.remove(node, &[uid]);
            }
            let candidate = match preemption::find(pod, cluster, &budgets) {
                Ok(candidate) => candidate,
                Err(why) => {
                    why_not.insert(pod.metadata.uid.clone().unwrap_or_default(), why);
                    continue;
                }
            };
            let uids: Vec<String> = candidate
                .victims
                .iter()
                .filter_map(|v| v.metadata.uid.clone())
                .collect();
            cluster.remove(&candidate.node, &uids);
            cluster.place(Arc::clone(pod), &candidate.node);
            plans.push(Preemption {
                pod: pod.as_ref(),
                node: candidate.node,
                victims: candidate.victims,
            });
        }
        (plans, why_not)
    }

    /// Nominates the node for the pod, then evicts the victims there, as upstream: each victim
    /// gets a `DisruptionTarget` condition, a `Preempted` event and a graceful delete.
    async fn preempt(&self, plan: &Preemption<'_>) -> Result<(), Error> {
        let (Some(name), Some(namespace)) = (&plan.pod.metadata.name, &plan.pod.metadata.namespace)
        else {
            return Ok(());
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let body = json!({"status": {"nominatedNodeName": plan.node}});
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => {}
            // The pod is gone: nothing to make room for.
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let preemptor = plan.pod.metadata.uid.as_deref().unwrap_or(name.as_str());
        for victim in &plan.victims {
            let (Some(victim_name), Some(victim_namespace)) =
                (&victim.metadata.name, &victim.metadata.namespace)
            else {
                continue;
            };
            let victims: Api<Pod> = Api::namespaced(self.client.clone(), victim_namespace);
            let now = crate::api::meta::now_rfc3339();
            let condition = json!({"status": {"conditions": [{
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "PreemptionByScheduler",
                "message": format!("{SCHEDULER_NAME}: preempting to accommodate a higher priority pod"),
                "lastTransitionTime": now,
            }]}});
            // Strategic merge keys conditions by type, so the others stay.
            let _ = victims
                .patch_status(
                    victim_name,
                    &PatchParams::default(),
                    &Patch::Strategic(&condition),
                )
                .await;
            crate::controllers::common::publish(
                self.binder.recorder(),
                &binder::pod_reference(victim),
                EventType::Normal,
                "Preempted",
                format!("Preempted by pod {preemptor} on node {}", plan.node),
            )
            .await;
            let params = DeleteParams {
                preconditions: victim.metadata.uid.clone().map(|uid| Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match victims.delete(victim_name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// The FailedScheduling message: the filters' verdict, then, as upstream's PostFilter adds it,
/// why preemption cannot help (absent when it found a node).
fn failed_scheduling_message(filters: &str, preemption: Option<&str>) -> String {
    match preemption {
        Some(why) => format!("{filters} preemption: {why}"),
        None => filters.to_string(),
    }
}

fn nominated_node(pod: &Pod) -> Option<&str> {
    pod.status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::filter::tests::{node, pod};
    use super::*;
    use std::collections::BTreeMap;

    fn decide_seeded(pod: &Pod, cluster: &Cluster) -> Result<String, String> {
        let mut rng: rand::rngs::StdRng = rand::SeedableRng::seed_from_u64(7);
        decide(pod, cluster, &mut rng)
    }

    #[test]
    fn equally_good_nodes_share_pods_at_random_and_a_seed_repeats_the_choices() {
        let c = cluster(
            vec![
                node("a", "4", "8Gi", "110"),
                node("b", "4", "8Gi", "110"),
                node("c", "4", "8Gi", "110"),
            ],
            vec![],
        );
        let choices = |seed: u64| -> Vec<String> {
            let mut rng: rand::rngs::StdRng = rand::SeedableRng::seed_from_u64(seed);
            (0..60)
                .map(|_| decide(&pod(Some("100m"), None), &c, &mut rng).expect("a node"))
                .collect()
        };
        let first = choices(1);
        for name in ["a", "b", "c"] {
            let times = first.iter().filter(|n| *n == name).count();
            assert!(times >= 5, "{name} chosen {times} times of 60: {first:?}");
        }
        assert_eq!(first, choices(1));
    }

    #[test]
    fn a_pod_asking_for_an_extended_resource_goes_only_where_enough_is_left() {
        let mut gpu_node = node("gpu", "4", "8Gi", "110");
        gpu_node
            .status
            .as_mut()
            .unwrap()
            .allocatable
            .as_mut()
            .unwrap()
            .insert(
                "example.com/gpu".into(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("1".into()),
            );
        let mut wants_gpu = pod(Some("100m"), None);
        wants_gpu.spec.as_mut().unwrap().containers[0]
            .resources
            .as_mut()
            .unwrap()
            .requests
            .as_mut()
            .unwrap()
            .insert(
                "example.com/gpu".into(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("1".into()),
            );
        let c = cluster(
            vec![gpu_node.clone(), node("plain", "4", "8Gi", "110")],
            vec![],
        );
        assert_eq!(decide_seeded(&wants_gpu, &c), Ok("gpu".to_string()));
        let mut holder = wants_gpu.clone();
        holder.spec.as_mut().unwrap().node_name = Some("gpu".into());
        let c = cluster(
            vec![gpu_node, node("plain", "4", "8Gi", "110")],
            vec![holder],
        );
        assert_eq!(
            decide_seeded(&wants_gpu, &c),
            Err("0/2 nodes are available: 2 Insufficient example.com/gpu.".to_string())
        );
    }

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

    fn cluster(nodes: Vec<Node>, pods: Vec<Pod>) -> Cluster {
        Cluster::new(nodes.into_iter().map(Arc::new).collect())
            .with_pods(pods.into_iter().map(Arc::new))
    }

    #[test]
    fn the_least_allocated_fitting_node_wins() {
        let mut placed = named(pod(Some("2"), Some("4Gi")), "placed");
        placed.spec.as_mut().unwrap().node_name = Some("busy".into());
        let c = cluster(
            vec![
                node("busy", "4", "8Gi", "110"),
                node("idle", "4", "8Gi", "110"),
                node("tiny", "500m", "8Gi", "110"),
            ],
            vec![placed],
        );
        assert_eq!(
            decide_seeded(&pod(Some("1"), Some("1Gi")), &c),
            Ok("idle".to_string())
        );
    }

    #[test]
    fn a_pod_that_fits_nowhere_gets_upstreams_message() {
        let c = cluster(vec![node("n1", "1", "1Gi", "110")], vec![]);
        assert_eq!(
            decide_seeded(&pod(Some("2"), None), &c),
            Err("0/1 nodes are available: 1 Insufficient cpu.".to_string())
        );
        assert_eq!(
            decide_seeded(&pod(None, None), &cluster(vec![], vec![])),
            Err("no nodes available to schedule pods".to_string())
        );
    }

    #[test]
    fn finished_pods_no_longer_hold_resources() {
        let mut done = pod(Some("1"), None);
        done.spec.as_mut().unwrap().node_name = Some("n1".into());
        done.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        let c = cluster(vec![node("n1", "1", "1Gi", "110")], vec![done]);
        assert_eq!(c.usage["n1"].pod_count, 0);
        assert_eq!(c.usage["n1"].requested.milli_cpu, 0);
    }

    fn labelled(mut n: Node, key: &str, value: &str) -> Node {
        n.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(key.into(), value.into());
        n
    }

    #[test]
    fn preferred_node_affinity_outweighs_a_small_resource_difference() {
        let mut placed = named(pod(Some("500m"), None), "placed");
        placed.spec.as_mut().unwrap().node_name = Some("ssd".into());
        let c = cluster(
            vec![
                node("plain", "4", "8Gi", "110"),
                labelled(node("ssd", "4", "8Gi", "110"), "disk", "ssd"),
            ],
            vec![placed],
        );
        let mut p = pod(Some("100m"), None);
        p.spec.as_mut().unwrap().affinity = serde_json::from_value(serde_json::json!({
            "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 50,
                "preference": {"matchExpressions": [
                    {"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}))
        .unwrap();
        assert_eq!(decide_seeded(&p, &c), Ok("ssd".to_string()));
        assert_eq!(
            decide_seeded(&pod(Some("100m"), None), &c),
            Ok("plain".to_string())
        );
    }

    #[test]
    fn a_prefer_no_schedule_taint_steers_pods_elsewhere_when_there_is_a_choice() {
        let mut soft = node("a-soft", "4", "8Gi", "110");
        soft.spec.as_mut().unwrap().taints = Some(vec![k8s_openapi::api::core::v1::Taint {
            key: "edge".into(),
            effect: "PreferNoSchedule".into(),
            ..Default::default()
        }]);
        let c = cluster(vec![soft, node("b-clean", "4", "8Gi", "110")], vec![]);
        assert_eq!(
            decide_seeded(&pod(None, None), &c),
            Ok("b-clean".to_string())
        );
    }

    #[test]
    fn required_anti_affinity_places_replicas_one_per_node_then_refuses() {
        let mut c = cluster(
            vec![
                node("n1", "4", "8Gi", "110"),
                node("n2", "4", "8Gi", "110"),
                node("n3", "4", "8Gi", "110"),
            ],
            vec![],
        );
        let replica = |i: usize| {
            let mut p = named(pod(None, None), &format!("web-{i}"));
            p.metadata.uid = Some(format!("uid-{i}"));
            p.metadata.labels = Some(BTreeMap::from([("app".to_string(), "web".to_string())]));
            p.spec.as_mut().unwrap().affinity = serde_json::from_value(serde_json::json!({
                "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                    "labelSelector": {"matchLabels": {"app": "web"}},
                    "topologyKey": "kubernetes.io/hostname"}]}}))
            .unwrap();
            p
        };
        let mut placed = Vec::new();
        for i in 0..3 {
            let p = replica(i);
            let node = decide_seeded(&p, &c).expect("a node");
            c.place(Arc::new(p), &node);
            placed.push(node);
        }
        placed.sort();
        assert_eq!(placed, vec!["n1", "n2", "n3"]);
        assert_eq!(
            decide_seeded(&replica(3), &c),
            Err(
                "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."
                    .to_string()
            )
        );
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

    /// The message the scheduler's round writes for a pod that fits nowhere: the filters'
    /// verdict, then preemption's.
    fn failed_scheduling(pod: &Pod, cluster: &Cluster) -> String {
        let filters = decide_seeded(pod, cluster).expect_err("the pod fits nowhere");
        let why_not = preemption::ineligible(pod, cluster)
            .map(String::from)
            .or_else(|| preemption::find(pod, cluster, &[]).err());
        failed_scheduling_message(&filters, why_not.as_deref())
    }

    #[test]
    fn a_pod_no_node_selects_is_told_preemption_is_not_helpful_on_every_node() {
        let mut picky = pod(Some("100m"), None);
        picky.spec.as_mut().unwrap().node_selector =
            Some(BTreeMap::from([("disk".to_string(), "ssd".to_string())]));
        let c = cluster(
            vec![
                node("a", "4", "8Gi", "110"),
                node("b", "4", "8Gi", "110"),
                node("c", "4", "8Gi", "110"),
            ],
            vec![],
        );
        assert_eq!(
            failed_scheduling(&picky, &c),
            "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. \
             preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn preemption_counts_nodes_without_victims_apart_from_nodes_it_cannot_help() {
        let mut tainted = node("tainted", "1", "8Gi", "110");
        tainted.spec.as_mut().unwrap().taints = Some(vec![k8s_openapi::api::core::v1::Taint {
            key: "dedicated".into(),
            value: Some("edge".into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        }]);
        let mut peer_a = named(pod(Some("1"), None), "peer-a");
        peer_a.spec.as_mut().unwrap().node_name = Some("a".into());
        let mut peer_b = named(pod(Some("1"), None), "peer-b");
        peer_b.spec.as_mut().unwrap().node_name = Some("b".into());
        let c = cluster(
            vec![
                tainted,
                node("a", "1", "8Gi", "110"),
                node("b", "1", "8Gi", "110"),
            ],
            vec![peer_a, peer_b],
        );
        // Same priority as the pods in the way: none of them may be evicted for it.
        assert_eq!(
            failed_scheduling(&pod(Some("1"), None), &c),
            "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: edge}, \
             2 Insufficient cpu. preemption: 0/3 nodes are available: \
             1 Preemption is not helpful for scheduling, \
             2 No preemption victims found for incoming pod."
        );
    }

    #[test]
    fn a_pod_too_big_for_any_node_hears_what_evictions_would_still_leave_short() {
        let mut low = named(pod(Some("1"), None), "low");
        low.spec.as_mut().unwrap().node_name = Some("a".into());
        low.spec.as_mut().unwrap().priority = Some(-10);
        let c = cluster(vec![node("a", "2", "8Gi", "110")], vec![low]);
        assert_eq!(
            failed_scheduling(&pod(Some("3"), None), &c),
            "0/1 nodes are available: 1 Insufficient cpu. \
             preemption: 0/1 nodes are available: 1 Insufficient cpu."
        );
    }

    #[test]
    fn a_pod_that_never_preempts_says_so_after_the_filters_verdict() {
        let mut polite = pod(Some("3"), None);
        polite.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
        let c = cluster(vec![node("a", "2", "8Gi", "110")], vec![]);
        assert_eq!(
            failed_scheduling(&polite, &c),
            "0/1 nodes are available: 1 Insufficient cpu. \
             preemption: not eligible due to preemptionPolicy=Never."
        );
    }
}
