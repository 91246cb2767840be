//! DaemonSet: one pod on every node the pod template fits (node selector, required node
//! affinity, taints against tolerations).
//!
//! Pods are created unscheduled with a required node affinity to their node's name (upstream
//! since 1.12), so the scheduler binds them like any pod. Each sync lists nodes and the set's
//! pods live, fixes each node (create the missing pod, delete extras, failed ones and those on
//! nodes that no longer fit), then rolls outdated pods within maxUnavailable / maxSurge.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, PodTemplateSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;

use super::revision::{self, REVISION_HASH_LABEL};
use super::{common, ownership};
use crate::scheduler::filter;

const CONTROLLER: &str = "daemonset-controller";
/// Deprecated upstream but still set on daemon pods.
const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Revision(#[from] revision::Error),
}

struct Context {
    client: kube::Client,
    recorder: Recorder,
}

/// Runs the DaemonSet controller until the watch ends.
pub async fn run(client: kube::Client) {
    let sets: Api<DaemonSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let recorder = Recorder::new(client.clone(), Reporter::from(CONTROLLER));
    let context = Arc::new(Context { client, recorder });
    Controller::new(sets, watcher::Config::default())
        .watches(pods, watcher::Config::default(), |pod| {
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            common::controller_of(&pod.metadata)
                .filter(|owner| owner.kind == "DaemonSet")
                .map(|owner| ObjectRef::new(&owner.name).within(&namespace))
        })
        .reconcile_all_on(node_changes(nodes))
        .run(reconcile, error_policy, context)
        .for_each(|_| async {})
        .await;
}

/// Fires when a node comes, goes, or changes what eligibility depends on (labels, taints,
/// name); a node's heartbeats, which only touch its status, wake no set.
fn node_changes(nodes: Api<Node>) -> impl futures::Stream<Item = ()> {
    let mut seen: HashMap<String, u64> = HashMap::new();
    watcher::watcher(nodes, watcher::Config::default()).filter_map(move |event| {
        let fire = match event {
            Ok(watcher::Event::Apply(node) | watcher::Event::InitApply(node)) => {
                let name = node.metadata.name.clone().unwrap_or_default();
                let fingerprint = eligibility_fingerprint(&node);
                seen.insert(name, fingerprint) != Some(fingerprint)
            }
            Ok(watcher::Event::Delete(node)) => {
                seen.remove(node.metadata.name.as_deref().unwrap_or_default());
                true
            }
            // After a re-list: a node deleted while the watch was down has no event of its own.
            Ok(watcher::Event::InitDone) => true,
            Ok(watcher::Event::Init) | Err(_) => false,
        };
        futures::future::ready(fire.then_some(()))
    })
}

fn eligibility_fingerprint(node: &Node) -> u64 {
    let relevant = json!([
        node.metadata.labels,
        node.spec.as_ref().map(|s| &s.taints),
        node.spec.as_ref().map(|s| s.unschedulable),
    ]);
    let mut hasher = DefaultHasher::new();
    relevant.to_string().hash(&mut hasher);
    hasher.finish()
}

fn error_policy(_: Arc<DaemonSet>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "daemonset sync failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// The tolerations every daemon pod gets (upstream `AddOrUpdateDaemonPodTolerations`): node
/// problems must not evict or keep out a per-node agent.
pub fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let toleration = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    let mut all = vec![
        toleration("node.kubernetes.io/not-ready", "NoExecute"),
        toleration("node.kubernetes.io/unreachable", "NoExecute"),
        toleration("node.kubernetes.io/disk-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/memory-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/pid-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        all.push(toleration(
            "node.kubernetes.io/network-unavailable",
            "NoSchedule",
        ));
    }
    all
}

/// Adds the daemon tolerations the spec does not already have (same key and effect).
fn add_daemon_tolerations(spec: &mut PodSpec) {
    let host_network = spec.host_network == Some(true);
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for extra in daemon_tolerations(host_network) {
        let present = tolerations
            .iter()
            .any(|t| t.key == extra.key && t.effect == extra.effect);
        if !present {
            tolerations.push(extra);
        }
    }
}

/// Pins the pod to `node` by a required `metadata.name` node affinity, replacing the
/// template's required terms (the controller has already checked them against this node).
fn pin_to_node(spec: &mut PodSpec, node: &str) {
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.into()]),
            }]),
        }],
    });
}

/// The node a daemon pod is for: where it is bound, else the node its affinity names.
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(node) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(node.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name" && f.operator == "In")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

/// Whether the set's pods belong on `node`: `should_run` for new pods, `keep_running` for
/// those already there (a NoSchedule taint keeps new pods out but evicts no one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eligibility {
    pub should_run: bool,
    pub keep_running: bool,
}

/// Upstream's `NodeShouldRunDaemonPod` on the template: node name, node selector and required
/// affinity, and NoSchedule/NoExecute taints against the pod's (daemon-extended) tolerations.
pub fn eligibility(template: &PodTemplateSpec, node: &Node) -> Eligibility {
    let mut spec = template.spec.clone().unwrap_or_default();
    add_daemon_tolerations(&mut spec);
    let node_name = node.metadata.name.as_deref().unwrap_or_default();
    let name_fits = spec
        .node_name
        .as_deref()
        .is_none_or(|n| n.is_empty() || n == node_name);
    let tolerations = spec.tolerations.clone().unwrap_or_default();
    let pod = Pod {
        metadata: template.metadata.clone().unwrap_or_default(),
        spec: Some(spec),
        status: None,
    };
    if !name_fits || !filter::matches_node_selector_and_affinity(&pod, node) {
        return Eligibility {
            should_run: false,
            keep_running: false,
        };
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let untolerated = |effect: &str| {
        taints
            .iter()
            .filter(|t| t.effect == effect)
            .any(|taint| !tolerations.iter().any(|t| filter::tolerates(t, taint)))
    };
    let evicting = untolerated("NoExecute");
    Eligibility {
        should_run: !evicting && !untolerated("NoSchedule"),
        keep_running: !evicting,
    }
}

/// One daemon pod as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonPod {
    pub name: String,
    pub updated: bool,
    pub ready: bool,
    pub available: bool,
    pub terminating: bool,
    pub failed: bool,
    pub created: Option<Timestamp>,
}

/// One node as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub node: String,
    pub eligibility: Eligibility,
    pub pods: Vec<DaemonPod>,
}

/// What one sync does: pods to create (by node), pods to delete (by name).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub create: Vec<String>,
    pub delete: Vec<String>,
}

/// Rolling-update budget; `None` for `OnDelete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rolling {
    pub max_unavailable: i32,
    pub max_surge: i32,
}

/// The sync's plan (upstream `manage` then `rollingUpdate`).
pub fn plan(nodes: &[NodeState], rolling: Option<Rolling>) -> Plan {
    let mut plan = Plan::default();
    let surge = rolling.is_some_and(|r| r.max_surge > 0);
    for n in nodes {
        let mut live: Vec<&DaemonPod> = n
            .pods
            .iter()
            .filter(|p| !p.terminating && !p.failed)
            .collect();
        for p in n.pods.iter().filter(|p| p.failed && !p.terminating) {
            plan.delete.push(p.name.clone());
        }
        if !n.eligibility.keep_running {
            plan.delete.extend(live.iter().map(|p| p.name.clone()));
            continue;
        }
        if live.is_empty() {
            // A pod still terminating here is waited for rather than doubled up.
            let terminating = n.pods.iter().any(|p| p.terminating);
            if n.eligibility.should_run && !terminating {
                plan.create.push(n.node.clone());
            }
            continue;
        }
        // Oldest first: the oldest stays; with surge an updated pod may stand beside it.
        live.sort_by_key(|p| p.created);
        let mut keep = 1;
        if surge && live.len() > 1 && !live[0].updated && live[1..].iter().any(|p| p.updated) {
            keep = 2;
        }
        let mut kept_updated = false;
        for (i, p) in live.iter().enumerate() {
            let wanted = if keep == 2 {
                i == 0 || (p.updated && !std::mem::replace(&mut kept_updated, true))
            } else {
                i == 0
            };
            if !wanted {
                plan.delete.push(p.name.clone());
            }
        }
    }
    if let Some(rolling) = rolling {
        roll(nodes, rolling, &mut plan);
    }
    plan
}

fn roll(nodes: &[NodeState], rolling: Rolling, plan: &mut Plan) {
    let live = |n: &NodeState| -> Vec<DaemonPod> {
        n.pods
            .iter()
            .filter(|p| !p.terminating && !p.failed && !plan.delete.contains(&p.name))
            .cloned()
            .collect()
    };
    let wanted: Vec<&NodeState> = nodes
        .iter()
        .filter(|n| n.eligibility.should_run && !plan.create.contains(&n.node))
        .collect();
    let mut deletions = Vec::new();
    let mut creations = Vec::new();
    if rolling.max_surge <= 0 {
        let mut unavailable = nodes
            .iter()
            .filter(|n| n.eligibility.should_run)
            .filter(|n| !live(n).iter().any(|p| p.available))
            .count() as i32;
        let mut candidates = Vec::new();
        for n in &wanted {
            for p in live(n).into_iter().filter(|p| !p.updated) {
                if p.available {
                    candidates.push(p.name);
                } else {
                    // Not serving anyway: replacing it costs no availability.
                    deletions.push(p.name);
                }
            }
        }
        for name in candidates {
            if unavailable >= rolling.max_unavailable.max(1) {
                break;
            }
            deletions.push(name);
            unavailable += 1;
        }
    } else {
        let mut surging = wanted
            .iter()
            .filter(|n| {
                let pods = live(n);
                pods.iter().any(|p| p.updated) && pods.iter().any(|p| !p.updated)
            })
            .count() as i32;
        for n in &wanted {
            let pods = live(n);
            let old: Vec<&DaemonPod> = pods.iter().filter(|p| !p.updated).collect();
            let new_available = pods.iter().any(|p| p.updated && p.available);
            let has_new = pods.iter().any(|p| p.updated);
            for p in &old {
                if new_available || !p.available {
                    deletions.push(p.name.clone());
                }
            }
            let old_serving = old.iter().any(|p| p.available);
            if old_serving && !has_new && !new_available && surging < rolling.max_surge {
                creations.push(n.node.clone());
                surging += 1;
            }
        }
    }
    plan.delete.extend(deletions);
    plan.create.extend(creations);
}

/// A percentage or a count of `total`, as upstream's `GetScaledValueFromIntOrPercent`.
fn scaled(value: Option<&IntOrString>, default: i32, total: i32, round_up: bool) -> i32 {
    match value {
        None => default,
        Some(v) => super::deployment::scaled_value(v, total, round_up),
    }
}

/// The set's rolling budget (upstream defaults: maxUnavailable 1, maxSurge 0), or `None`
/// for `OnDelete`.
fn rolling_budget(ds: &DaemonSet, desired: i32) -> Option<Rolling> {
    let strategy = ds.spec.as_ref()?.update_strategy.as_ref();
    if strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete") {
        return None;
    }
    let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
    let max_surge = scaled(rolling.and_then(|r| r.max_surge.as_ref()), 0, desired, true);
    let max_unavailable = scaled(
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        1,
        desired,
        false,
    );
    Some(Rolling {
        max_unavailable: if max_surge == 0 && max_unavailable == 0 {
            1
        } else {
            max_unavailable
        },
        max_surge,
    })
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (Some(name), Some(namespace), Some(_), Some(spec)) = (
        ds.metadata.name.clone(),
        ds.metadata.namespace.clone(),
        ds.metadata.uid.clone(),
        ds.spec.as_ref(),
    ) else {
        return Ok(Action::await_change());
    };
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let owner = revision::Owner {
        api_version: "apps/v1",
        kind: "DaemonSet",
        meta: &ds.metadata,
        selector: &spec.selector,
        template: &spec.template,
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
    };
    let (revisions, update) = match revision::sync_revisions(&ctx.client, &owner).await {
        Ok(found) => found,
        Err(revision::Error::HashCollision(_)) => {
            let count = owner.collision_count.unwrap_or(0) + 1;
            let body = json!({"status": {"collisionCount": count}});
            Api::<DaemonSet>::namespaced(ctx.client.clone(), &namespace)
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
                .await?;
            return Ok(Action::requeue(Duration::from_millis(100)));
        }
        Err(e) => return Err(e.into()),
    };
    let hash = update
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_HASH_LABEL))
        .cloned()
        .unwrap_or_default();

    let nodes: Vec<Node> = Api::<Node>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let all = pods_api.list(&ListParams::default()).await?.items;
    let claimer = ownership::Claimer {
        api_version: "apps/v1",
        kind: "DaemonSet",
        meta: &ds.metadata,
        selector: &spec.selector,
    };
    let pods = ownership::claim_pods(&pods_api, &claimer, all, |_| true).await?;

    let now = Timestamp::now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    let mut orphaned = Vec::new();
    for pod in &pods {
        match target_node(pod) {
            Some(node) => by_node.entry(node).or_default().push(pod),
            None => orphaned.push(pod),
        }
    }
    let known: BTreeSet<String> = nodes
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    let states: Vec<NodeState> = nodes
        .iter()
        .map(|node| {
            let node_name = node.metadata.name.clone().unwrap_or_default();
            let pods = by_node.get(&node_name).cloned().unwrap_or_default();
            NodeState {
                eligibility: eligibility(&spec.template, node),
                pods: pods
                    .iter()
                    .map(|p| daemon_pod(p, &hash, min_ready, now))
                    .collect(),
                node: node_name,
            }
        })
        .collect();
    let desired = states.iter().filter(|n| n.eligibility.should_run).count() as i32;
    let mut plan = plan(&states, rolling_budget(&ds, desired));
    // Pods for nodes that no longer exist (or for none) go too.
    for (node, node_pods) in &by_node {
        if !known.contains(node) {
            plan.delete.extend(
                node_pods
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter_map(|p| p.metadata.name.clone()),
            );
        }
    }
    for pod in orphaned {
        if pod.metadata.deletion_timestamp.is_none() {
            plan.delete.extend(pod.metadata.name.clone());
        }
    }

    let reference = common::object_reference("apps/v1", "DaemonSet", &ds.metadata);
    for node in &plan.create {
        let pod = new_pod(&ds, &spec.template, node, &hash);
        match pods_api.create(&PostParams::default(), &pod).await {
            Ok(created) => {
                let pod_name = created.metadata.name.unwrap_or_default();
                common::publish(
                    &ctx.recorder,
                    &reference,
                    EventType::Normal,
                    "SuccessfulCreate",
                    format!("Created pod: {pod_name}"),
                )
                .await;
            }
            Err(error) => {
                common::publish(
                    &ctx.recorder,
                    &reference,
                    EventType::Warning,
                    "FailedCreate",
                    format!("Error creating: {error}"),
                )
                .await;
                return Err(error.into());
            }
        }
    }
    for pod_name in &plan.delete {
        match pods_api.delete(pod_name, &DeleteParams::default()).await {
            Ok(_) => {
                common::publish(
                    &ctx.recorder,
                    &reference,
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!("Deleted pod: {pod_name}"),
                )
                .await
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }

    let status = daemon_status(&states);
    let body = json!({"status": {
        "observedGeneration": ds.metadata.generation,
        "desiredNumberScheduled": status.desired,
        "currentNumberScheduled": status.current,
        "numberMisscheduled": status.misscheduled,
        "numberReady": status.ready,
        "numberAvailable": status.available,
        "numberUnavailable": status.desired - status.available,
        "updatedNumberScheduled": status.updated,
        "collisionCount": owner.collision_count,
    }});
    if common::status_differs(ds.as_ref(), &body) {
        let sets: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &namespace);
        match sets
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }

    let mut live: BTreeSet<String> = BTreeSet::new();
    live.insert(update.metadata.name.clone().unwrap_or_default());
    for pod in &pods {
        if let Some(h) = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REVISION_HASH_LABEL))
        {
            live.insert(revision::revision_name(&name, h));
        }
    }
    let limit = spec
        .revision_history_limit
        .unwrap_or(revision::DEFAULT_HISTORY_LIMIT);
    revision::truncate_history(&ctx.client, &namespace, &revisions, &live, limit).await?;

    let soonest = pods
        .iter()
        .filter_map(|p| common::until_available(p, min_ready, now))
        .min();
    Ok(match soonest {
        Some(wait) => Action::requeue(wait.unsigned_abs() + Duration::from_millis(100)),
        None => Action::requeue(Duration::from_secs(300)),
    })
}

fn daemon_pod(pod: &Pod, hash: &str, min_ready: i32, now: Timestamp) -> DaemonPod {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    DaemonPod {
        name: pod.metadata.name.clone().unwrap_or_default(),
        updated: pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REVISION_HASH_LABEL))
            .is_some_and(|h| h == hash),
        ready: common::pod_is_ready(pod),
        available: common::pod_is_available(pod, min_ready, now),
        terminating: pod.metadata.deletion_timestamp.is_some(),
        failed: phase == Some("Failed"),
        created: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct DaemonCounts {
    pub desired: i32,
    pub current: i32,
    pub misscheduled: i32,
    pub ready: i32,
    pub available: i32,
    pub updated: i32,
}

/// Status over nodes: per node that should run the pod, its oldest live pod is the one that
/// counts (upstream `updateDaemonSetStatus`).
pub fn daemon_status(nodes: &[NodeState]) -> DaemonCounts {
    let mut counts = DaemonCounts::default();
    for n in nodes {
        let mut live: Vec<&DaemonPod> = n.pods.iter().filter(|p| !p.terminating).collect();
        live.sort_by_key(|p| p.created);
        if !n.eligibility.should_run {
            if !live.is_empty() {
                counts.misscheduled += 1;
            }
            continue;
        }
        counts.desired += 1;
        if live.is_empty() {
            continue;
        }
        counts.current += 1;
        if live.iter().any(|p| p.ready) {
            counts.ready += 1;
        }
        if live.iter().any(|p| p.available) {
            counts.available += 1;
        }
        if live.iter().any(|p| p.updated) {
            counts.updated += 1;
        }
    }
    counts
}

/// The daemon pod for `node`: template labels plus the revision hash, daemon tolerations, and
/// pinned to the node by affinity.
fn new_pod(ds: &DaemonSet, template: &PodTemplateSpec, node: &str, hash: &str) -> Pod {
    let template_meta = template.metadata.clone().unwrap_or_default();
    let mut labels = template_meta.labels.unwrap_or_default();
    labels.insert(REVISION_HASH_LABEL.into(), hash.into());
    if let Some(generation) = ds.metadata.generation {
        labels.insert(TEMPLATE_GENERATION_LABEL.into(), generation.to_string());
    }
    let mut spec = template.spec.clone().unwrap_or_default();
    add_daemon_tolerations(&mut spec);
    pin_to_node(&mut spec, node);
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.metadata.name.clone().unwrap_or_default())),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: template_meta.annotations,
            finalizers: template_meta.finalizers,
            owner_references: Some(vec![common::controller_reference(
                "apps/v1",
                "DaemonSet",
                &ds.metadata,
            )]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, Taint};

    fn node(name: &str, labels: &[(&str, &str)], taints: Vec<Taint>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        }
    }

    fn template(selector: &[(&str, &str)]) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                node_selector: (!selector.is_empty()).then(|| {
                    selector
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                }),
                ..Default::default()
            }),
        }
    }

    fn pod(name: &str, updated: bool, available: bool, age: i64) -> DaemonPod {
        DaemonPod {
            name: name.into(),
            updated,
            ready: available,
            available,
            terminating: false,
            failed: false,
            created: Some(Timestamp::from_second(1_000_000 - age).unwrap()),
        }
    }

    const RUN: Eligibility = Eligibility {
        should_run: true,
        keep_running: true,
    };

    fn state(node: &str, pods: Vec<DaemonPod>) -> NodeState {
        NodeState {
            node: node.into(),
            eligibility: RUN,
            pods,
        }
    }

    #[test]
    fn a_node_selector_limits_the_eligible_nodes() {
        let t = template(&[("disk", "ssd")]);
        assert!(eligibility(&t, &node("a", &[("disk", "ssd")], vec![])).should_run);
        let other = eligibility(&t, &node("b", &[("disk", "hdd")], vec![]));
        assert!(!other.should_run && !other.keep_running);
    }

    #[test]
    fn untolerated_taints_keep_new_pods_out_and_no_execute_evicts() {
        let t = template(&[]);
        let no_schedule = eligibility(&t, &node("a", &[], vec![taint("dedicated", "NoSchedule")]));
        assert_eq!(
            no_schedule,
            Eligibility {
                should_run: false,
                keep_running: true
            }
        );
        let no_execute = eligibility(&t, &node("a", &[], vec![taint("dedicated", "NoExecute")]));
        assert!(!no_execute.should_run && !no_execute.keep_running);
        let soft = eligibility(&t, &node("a", &[], vec![taint("x", "PreferNoSchedule")]));
        assert!(soft.should_run);
    }

    #[test]
    fn daemon_pods_tolerate_node_problems_and_cordons() {
        let t = template(&[]);
        for key in [
            "node.kubernetes.io/unschedulable",
            "node.kubernetes.io/disk-pressure",
            "node.kubernetes.io/memory-pressure",
        ] {
            assert!(eligibility(&t, &node("a", &[], vec![taint(key, "NoSchedule")])).should_run);
        }
        let not_ready = taint("node.kubernetes.io/not-ready", "NoExecute");
        assert!(eligibility(&t, &node("a", &[], vec![not_ready])).should_run);
        let network = taint("node.kubernetes.io/network-unavailable", "NoSchedule");
        assert!(!eligibility(&t, &node("a", &[], vec![network.clone()])).should_run);
        let mut host = template(&[]);
        if let Some(spec) = host.spec.as_mut() {
            spec.host_network = Some(true);
        }
        assert!(eligibility(&host, &node("a", &[], vec![network])).should_run);
    }

    #[test]
    fn new_pods_are_pinned_to_their_node_by_name() {
        let ds = DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                namespace: Some("default".into()),
                generation: Some(3),
                ..Default::default()
            },
            ..Default::default()
        };
        let pod = new_pod(&ds, &template(&[]), "node-1", "abc");
        assert_eq!(target_node(&pod).as_deref(), Some("node-1"));
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(labels[REVISION_HASH_LABEL], "abc");
        assert_eq!(labels[TEMPLATE_GENERATION_LABEL], "3");
        assert!(filter::matches_node_selector_and_affinity(
            &pod,
            &node("node-1", &[], vec![])
        ));
        assert!(!filter::matches_node_selector_and_affinity(
            &pod,
            &node("node-2", &[], vec![])
        ));
    }

    #[test]
    fn each_eligible_node_gets_one_pod_and_others_lose_theirs() {
        let nodes = vec![
            state("a", vec![]),
            state(
                "b",
                vec![pod("b1", true, true, 10), pod("b2", true, true, 5)],
            ),
            NodeState {
                eligibility: Eligibility {
                    should_run: false,
                    keep_running: false,
                },
                ..state("c", vec![pod("c1", true, true, 1)])
            },
        ];
        let plan = plan(&nodes, None);
        assert_eq!(plan.create, vec!["a"]);
        assert_eq!(plan.delete, vec!["b2", "c1"]);
    }

    #[test]
    fn a_rolling_update_respects_max_unavailable() {
        let nodes: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|n| state(n, vec![pod(&format!("{n}1"), false, true, 10)]))
            .collect();
        let one = Rolling {
            max_unavailable: 1,
            max_surge: 0,
        };
        assert_eq!(plan(&nodes, Some(one)).delete, vec!["a1"]);
        let two = Rolling {
            max_unavailable: 2,
            ..one
        };
        assert_eq!(plan(&nodes, Some(two)).delete, vec!["a1", "b1"]);
        // One node already down: the budget is spent.
        let mut down = nodes.clone();
        down[0].pods.clear();
        let p = plan(&down, Some(one));
        assert_eq!(p.create, vec!["a"]);
        assert!(p.delete.is_empty());
        assert!(plan(&nodes, None).delete.is_empty());
    }

    #[test]
    fn a_surge_update_starts_the_new_pod_before_removing_the_old() {
        let surge = Rolling {
            max_unavailable: 0,
            max_surge: 1,
        };
        let old = vec![state("a", vec![pod("a1", false, true, 10)])];
        let p = plan(&old, Some(surge));
        assert_eq!(p.create, vec!["a"]);
        assert!(p.delete.is_empty());
        let both = vec![state(
            "a",
            vec![pod("a1", false, true, 10), pod("a2", true, false, 1)],
        )];
        assert_eq!(plan(&both, Some(surge)), Plan::default());
        let ready = vec![state(
            "a",
            vec![pod("a1", false, true, 10), pod("a2", true, true, 1)],
        )];
        assert_eq!(plan(&ready, Some(surge)).delete, vec!["a1"]);
    }

    #[test]
    fn status_counts_nodes_not_pods() {
        let nodes = vec![
            state("a", vec![pod("a1", true, true, 1)]),
            state("b", vec![pod("b1", false, false, 1)]),
            state("c", vec![]),
            NodeState {
                eligibility: Eligibility {
                    should_run: false,
                    keep_running: true,
                },
                ..state("d", vec![pod("d1", true, true, 1)])
            },
        ];
        assert_eq!(
            daemon_status(&nodes),
            DaemonCounts {
                desired: 3,
                current: 2,
                misscheduled: 1,
                ready: 1,
                available: 1,
                updated: 1,
            }
        );
    }
}
