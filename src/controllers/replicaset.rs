//! ReplicaSet and ReplicationController: keep `spec.replicas` pods from the template alive.
//!
//! Pods are listed live from the API on every reconcile rather than from a cache, so a pod
//! created a moment ago is always counted: no "expectations" bookkeeping is needed to avoid
//! creating twice (upstream needs it because its informer cache lags behind its own writes).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use super::common::{self, selector_matches};

/// Upstream's cap on creations or deletions in one sync.
const BURST_REPLICAS: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
}

/// What the controller needs from a ReplicaSet or a ReplicationController.
#[derive(Debug, Clone)]
pub struct ReplicatedSpec {
    pub replicas: i32,
    pub selector: LabelSelector,
    pub template: PodTemplateSpec,
    pub min_ready_seconds: i32,
}

/// The two kinds this controller drives.
pub trait Replicated:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    /// The reporting controller name upstream uses for events.
    const CONTROLLER: &'static str;
    /// Whether the status has `terminatingReplicas` (a ReplicaSet's has, an RC's has not).
    const REPORTS_TERMINATING: bool;
    fn replicated_spec(&self) -> Option<ReplicatedSpec>;
}

impl Replicated for ReplicaSet {
    const CONTROLLER: &'static str = "replicaset-controller";
    const REPORTS_TERMINATING: bool = true;
    fn replicated_spec(&self) -> Option<ReplicatedSpec> {
        let spec = self.spec.as_ref()?;
        Some(ReplicatedSpec {
            replicas: spec.replicas.unwrap_or(1),
            selector: spec.selector.clone(),
            template: spec.template.clone()?,
            min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
        })
    }
}

impl Replicated for ReplicationController {
    const CONTROLLER: &'static str = "replication-controller";
    const REPORTS_TERMINATING: bool = false;
    fn replicated_spec(&self) -> Option<ReplicatedSpec> {
        let spec = self.spec.as_ref()?;
        let template = spec.template.clone()?;
        // An RC without a selector selects its template's labels (upstream defaulting).
        let match_labels = spec
            .selector
            .clone()
            .or_else(|| template.metadata.as_ref().and_then(|m| m.labels.clone()));
        Some(ReplicatedSpec {
            replicas: spec.replicas.unwrap_or(1),
            selector: LabelSelector {
                match_labels,
                match_expressions: None,
            },
            template,
            min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
        })
    }
}

struct Context {
    client: kube::Client,
    recorder: Recorder,
}

/// Runs the ReplicaSet controller until the watch ends.
pub async fn run(client: kube::Client) {
    run_kind::<ReplicaSet>(client).await
}

/// Runs the ReplicationController controller until the watch ends.
pub async fn run_replication_controllers(client: kube::Client) {
    run_kind::<ReplicationController>(client).await
}

async fn run_kind<K: Replicated>(client: kube::Client) {
    let owners: Api<K> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let controller = Controller::new(owners, watcher::Config::default());
    let store = controller.store();
    let recorder = Recorder::new(client.clone(), Reporter::from(K::CONTROLLER));
    let context = Arc::new(Context { client, recorder });
    controller
        .watches(pods, watcher::Config::default(), move |pod| {
            owners_to_wake::<K>(&pod, &store)
        })
        .run(reconcile::<K>, error_policy::<K>, context)
        .for_each(|_| async {})
        .await;
}

/// A pod wakes its controller, or, when orphaned, every owner that could adopt it.
fn owners_to_wake<K: Replicated>(pod: &Pod, store: &Store<K>) -> Vec<ObjectRef<K>> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    if let Some(owner) = common::controller_of(&pod.metadata) {
        if owner.kind == K::kind(&()) {
            return vec![ObjectRef::new(&owner.name).within(&namespace)];
        }
        return Vec::new();
    }
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    store
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(namespace.as_str()))
        .filter(|o| {
            o.replicated_spec()
                .is_some_and(|s| selector_matches(&s.selector, &labels))
        })
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

fn error_policy<K: Replicated>(_: Arc<K>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(%error, controller = K::CONTROLLER, "sync failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile<K: Replicated>(owner: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let meta = owner.meta();
    let (Some(name), Some(namespace), Some(uid)) = (&meta.name, &meta.namespace, &meta.uid) else {
        return Ok(Action::await_change());
    };
    let Some(spec) = owner.replicated_spec() else {
        return Ok(Action::await_change());
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let all = pods.list(&ListParams::default()).await?.items;
    let deleting = meta.deletion_timestamp.is_some();
    let api_version = K::api_version(&()).to_string();
    let kind = K::kind(&()).to_string();
    let reference = common::object_reference(&api_version, &kind, meta);

    // Claim: adopt matching orphans, release owned pods that no longer match.
    let mut owned = Vec::new();
    for pod in all {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let matches =
            !common::selector_is_empty(&spec.selector) && selector_matches(&spec.selector, &labels);
        match claim(&pod.metadata, uid, matches, deleting) {
            Claim::Keep => owned.push(pod),
            Claim::Ignore => {}
            Claim::Adopt => {
                let owner_ref = common::controller_reference(&api_version, &kind, meta);
                let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
                refs.push(owner_ref);
                if set_owner_references(&pods, &pod.metadata, refs).await? {
                    owned.push(pod);
                }
            }
            Claim::Release => {
                let refs: Vec<_> = pod
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .filter(|r| r.uid != *uid)
                    .cloned()
                    .collect();
                set_owner_references(&pods, &pod.metadata, refs).await?;
            }
        }
    }

    let active: Vec<&Pod> = owned.iter().filter(|p| common::pod_is_active(p)).collect();
    let mut failure = None;
    if !deleting {
        match replica_diff(active.len(), spec.replicas) {
            Diff::Create(n) => {
                let template = pod_from_template(&spec.template, meta, &api_version, &kind);
                let created = create_in_batches(&ctx, &pods, &template, n, &reference).await;
                if created < n {
                    failure = Some((
                        "FailedCreate",
                        "failed to create all pods; see events".to_string(),
                    ));
                }
            }
            Diff::Delete(n) => {
                let now = Timestamp::now();
                let mut victims = active.clone();
                victims.sort_by(|a, b| deletion_order(a, b, now));
                for pod in victims.into_iter().take(n) {
                    let pod_name = pod.metadata.name.clone().unwrap_or_default();
                    match pods.delete(&pod_name, &DeleteParams::default()).await {
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
                        Err(error) => {
                            common::publish(
                                &ctx.recorder,
                                &reference,
                                EventType::Warning,
                                "FailedDelete",
                                format!("Error deleting: {error}"),
                            )
                            .await;
                            failure = Some(("FailedDelete", error.to_string()));
                        }
                    }
                }
            }
            Diff::None => {}
        }
    }

    let now = Timestamp::now();
    let status = replica_status(&owned, &spec, now);
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let conditions = failure_conditions(owner.as_ref(), failure);
    let body = json!({"status": {
        "replicas": status.replicas,
        "fullyLabeledReplicas": status.fully_labeled,
        "readyReplicas": status.ready,
        "availableReplicas": status.available,
        "terminatingReplicas": K::REPORTS_TERMINATING.then_some(status.terminating),
        "observedGeneration": meta.generation,
        "conditions": conditions,
    }});
    // Writing an unchanged status would wake this controller (and the Deployment's) again.
    if common::status_differs(owner.as_ref(), &body) {
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }

    // A ready pod turns available after minReadySeconds without any event to tell us.
    let soonest = active
        .iter()
        .filter_map(|p| common::until_available(p, spec.min_ready_seconds, now))
        .min();
    Ok(match soonest {
        Some(wait) => Action::requeue(wait.unsigned_abs() + Duration::from_millis(100)),
        None => Action::requeue(Duration::from_secs(300)),
    })
}

/// The `ReplicaFailure` condition (upstream's only RS condition), kept while creation fails.
fn failure_conditions<K: Replicated>(
    owner: &K,
    failure: Option<(&str, String)>,
) -> serde_json::Value {
    let current = serde_json::to_value(owner)
        .ok()
        .and_then(|v| v.pointer("/status/conditions").cloned())
        .and_then(|c| c.as_array().cloned())
        .unwrap_or_default();
    let mut kept: Vec<serde_json::Value> = current
        .into_iter()
        .filter(|c| c.get("type").and_then(|t| t.as_str()) != Some("ReplicaFailure"))
        .collect();
    if let Some((reason, message)) = failure {
        kept.push(json!({
            "type": "ReplicaFailure",
            "status": "True",
            "reason": reason,
            "message": message,
            "lastTransitionTime": crate::api::meta::now_rfc3339(),
        }));
    }
    // Null (not []) when there are none: merge patch then removes the field, and an absent
    // field compares equal, so an unchanged status is never rewritten.
    if kept.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::Value::Array(kept)
    }
}

/// Patches a pod's owner references, guarded by its resourceVersion; false if the pod changed
/// or went away meanwhile (the next reconcile sees the new state).
async fn set_owner_references(
    pods: &Api<Pod>,
    pod: &ObjectMeta,
    refs: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
) -> Result<bool, Error> {
    let name = pod.name.clone().unwrap_or_default();
    let body = json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": pod.resource_version,
    }});
    match pods
        .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Creates `count` pods in batches of 1, 2, 4, ... (upstream's slow start), stopping at the
/// first batch with a failure so a broken template does not flood the API; returns how many
/// were created.
async fn create_in_batches(
    ctx: &Context,
    pods: &Api<Pod>,
    template: &Pod,
    count: usize,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
) -> usize {
    let mut created = 0;
    let mut batch = 1;
    while created < count {
        let size = batch.min(count - created);
        let params = PostParams::default();
        let results =
            futures::future::join_all((0..size).map(|_| pods.create(&params, template))).await;
        let mut failed = false;
        for result in results {
            match result {
                Ok(pod) => {
                    created += 1;
                    let name = pod.metadata.name.unwrap_or_default();
                    common::publish(
                        &ctx.recorder,
                        reference,
                        EventType::Normal,
                        "SuccessfulCreate",
                        format!("Created pod: {name}"),
                    )
                    .await;
                }
                Err(error) => {
                    failed = true;
                    common::publish(
                        &ctx.recorder,
                        reference,
                        EventType::Warning,
                        "FailedCreate",
                        format!("Error creating: {error}"),
                    )
                    .await;
                }
            }
        }
        if failed {
            break;
        }
        batch *= 2;
    }
    created
}

/// What claiming does with one pod of the namespace.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    Keep,
    Adopt,
    Release,
    Ignore,
}

/// Upstream's `ClaimPods`: a controller keeps what it owns and still selects, releases what it
/// owns but no longer selects, adopts matching orphans unless either side is being deleted.
pub fn claim(pod: &ObjectMeta, owner_uid: &str, matches: bool, owner_deleting: bool) -> Claim {
    match common::controller_of(pod) {
        Some(r) if r.uid == owner_uid => {
            if matches || owner_deleting {
                Claim::Keep
            } else {
                Claim::Release
            }
        }
        Some(_) => Claim::Ignore,
        None if matches && !owner_deleting && pod.deletion_timestamp.is_none() => Claim::Adopt,
        None => Claim::Ignore,
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Diff {
    Create(usize),
    Delete(usize),
    None,
}

/// How many pods to create or delete to go from `active` to `desired`, capped by the burst.
pub fn replica_diff(active: usize, desired: i32) -> Diff {
    let desired = usize::try_from(desired.max(0)).unwrap_or(0);
    match active.cmp(&desired) {
        Ordering::Less => Diff::Create((desired - active).min(BURST_REPLICAS)),
        Ordering::Greater => Diff::Delete((active - desired).min(BURST_REPLICAS)),
        Ordering::Equal => Diff::None,
    }
}

/// The pod a controller creates: template labels, annotations and finalizers, a generated
/// name `<owner>-xxxxx`, and a controller reference to the owner.
pub fn pod_from_template(
    template: &PodTemplateSpec,
    owner: &ObjectMeta,
    api_version: &str,
    kind: &str,
) -> Pod {
    let template_meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", owner.name.clone().unwrap_or_default())),
            namespace: owner.namespace.clone(),
            labels: template_meta.labels,
            annotations: template_meta.annotations,
            finalizers: template_meta.finalizers,
            owner_references: Some(vec![common::controller_reference(api_version, kind, owner)]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Upstream's `ActivePods` ordering, most deletable first: unscheduled before scheduled,
/// pending before unknown before running, not ready before ready, ready for less time first,
/// more restarts first, newer first.
pub fn deletion_order(a: &Pod, b: &Pod, now: Timestamp) -> Ordering {
    let scheduled = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
    };
    let phase_rank = |p: &Pod| match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    };
    let ready_since = |p: &Pod| common::pod_ready_since(p).map(|t| t.unwrap_or(now));
    let restarts = |p: &Pod| -> i32 {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
            .unwrap_or(0)
    };
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    scheduled(a)
        .cmp(&scheduled(b))
        .then(phase_rank(a).cmp(&phase_rank(b)))
        .then(ready_since(a).is_some().cmp(&ready_since(b).is_some()))
        // Both ready: the one ready more recently goes first.
        .then(ready_since(b).cmp(&ready_since(a)))
        .then(restarts(b).cmp(&restarts(a)))
        .then(created(b).cmp(&created(a)))
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReplicaCounts {
    pub replicas: i32,
    pub fully_labeled: i32,
    pub ready: i32,
    pub available: i32,
    pub terminating: i32,
}

/// Status counts over the pods the controller owns.
pub fn replica_status(owned: &[Pod], spec: &ReplicatedSpec, now: Timestamp) -> ReplicaCounts {
    let template_labels: BTreeMap<String, String> = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let mut counts = ReplicaCounts::default();
    for pod in owned {
        if common::pod_is_terminating(pod) {
            counts.terminating += 1;
        }
        if !common::pod_is_active(pod) {
            continue;
        }
        counts.replicas += 1;
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        if template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            counts.fully_labeled += 1;
        }
        if common::pod_is_ready(pod) {
            counts.ready += 1;
        }
        if common::pod_is_available(pod, spec.min_ready_seconds, now) {
            counts.available += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::common::tests::{labels, ready_pod};
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
    use k8s_openapi::jiff::SignedDuration;

    fn owned_by(uid: &str) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                uid: uid.into(),
                controller: Some(true),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn a_replication_controller_without_a_selector_selects_its_template_labels() {
        use k8s_openapi::api::core::v1::ReplicationControllerSpec;
        let rc = ReplicationController {
            spec: Some(ReplicationControllerSpec {
                replicas: Some(2),
                selector: None,
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels(&[("app", "legacy")])),
                        ..Default::default()
                    }),
                    spec: None,
                }),
                min_ready_seconds: None,
            }),
            ..Default::default()
        };
        let spec = rc.replicated_spec().unwrap();
        assert_eq!(spec.replicas, 2);
        assert!(selector_matches(
            &spec.selector,
            &labels(&[("app", "legacy")])
        ));
        assert!(!selector_matches(
            &spec.selector,
            &labels(&[("app", "web")])
        ));
    }

    #[test]
    fn the_replica_diff_creates_deletes_or_does_nothing() {
        assert_eq!(replica_diff(1, 3), Diff::Create(2));
        assert_eq!(replica_diff(5, 3), Diff::Delete(2));
        assert_eq!(replica_diff(3, 3), Diff::None);
        assert_eq!(replica_diff(0, 10_000), Diff::Create(BURST_REPLICAS));
        assert_eq!(replica_diff(2, -1), Diff::Delete(2));
    }

    #[test]
    fn claiming_adopts_orphans_releases_strays_and_ignores_others() {
        assert_eq!(claim(&owned_by("me"), "me", true, false), Claim::Keep);
        assert_eq!(claim(&owned_by("me"), "me", false, false), Claim::Release);
        assert_eq!(claim(&owned_by("other"), "me", true, false), Claim::Ignore);
        assert_eq!(
            claim(&ObjectMeta::default(), "me", true, false),
            Claim::Adopt
        );
        assert_eq!(
            claim(&ObjectMeta::default(), "me", false, false),
            Claim::Ignore
        );
        assert_eq!(
            claim(&ObjectMeta::default(), "me", true, true),
            Claim::Ignore
        );
    }

    #[test]
    fn created_pods_carry_template_labels_a_generated_name_and_a_controller_reference() {
        let template = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels(&[("app", "web"), ("pod-template-hash", "abc")])),
                ..Default::default()
            }),
            spec: Some(PodSpec::default()),
        };
        let owner = ObjectMeta {
            name: Some("web-abc".into()),
            namespace: Some("default".into()),
            uid: Some("u1".into()),
            ..Default::default()
        };
        let pod = pod_from_template(&template, &owner, "apps/v1", "ReplicaSet");
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("web-abc-"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(
            pod.metadata.labels,
            Some(labels(&[("app", "web"), ("pod-template-hash", "abc")]))
        );
        let owner_ref = common::controller_of(&pod.metadata).unwrap();
        assert_eq!(
            (owner_ref.kind.as_str(), owner_ref.uid.as_str()),
            ("ReplicaSet", "u1")
        );
    }

    #[test]
    fn unscheduled_then_not_ready_then_newer_pods_are_deleted_first() {
        let now = Timestamp::now();
        let mut scheduled_ready = ready_pod("scheduled-ready", now - SignedDuration::from_secs(60));
        scheduled_ready.spec = Some(PodSpec {
            node_name: Some("n1".into()),
            ..Default::default()
        });
        let mut scheduled_not_ready = scheduled_ready.clone();
        scheduled_not_ready.metadata.name = Some("scheduled-not-ready".into());
        scheduled_not_ready.status = Some(PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        });
        let unscheduled = Pod {
            metadata: ObjectMeta {
                name: Some("unscheduled".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut recently_ready = scheduled_ready.clone();
        recently_ready.metadata.name = Some("recently-ready".into());
        recently_ready = {
            let mut p = ready_pod("recently-ready", now - SignedDuration::from_secs(5));
            p.spec = recently_ready.spec;
            p
        };
        let mut pods = [
            scheduled_ready,
            recently_ready,
            unscheduled,
            scheduled_not_ready,
        ];
        pods.sort_by(|a, b| deletion_order(a, b, now));
        let names: Vec<_> = pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "unscheduled",
                "scheduled-not-ready",
                "recently-ready",
                "scheduled-ready"
            ]
        );
    }

    #[test]
    fn among_equal_pods_the_newest_is_deleted_first() {
        let now = Timestamp::now();
        let mut old = Pod::default();
        old.metadata.creation_timestamp = Some(Time(now - SignedDuration::from_secs(100)));
        let mut new = Pod::default();
        new.metadata.creation_timestamp = Some(Time(now));
        assert_eq!(deletion_order(&new, &old, now), Ordering::Less);
    }

    #[test]
    fn status_counts_fully_labeled_ready_and_available_pods() {
        let now = Timestamp::now();
        let spec = ReplicatedSpec {
            replicas: 3,
            selector: LabelSelector::default(),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&[("app", "web"), ("tier", "front")])),
                    ..Default::default()
                }),
                spec: None,
            },
            min_ready_seconds: 10,
        };
        let mut long_ready = ready_pod("a", now - SignedDuration::from_secs(60));
        long_ready.metadata.labels = Some(labels(&[("app", "web"), ("tier", "front")]));
        let mut just_ready = ready_pod("b", now);
        just_ready.metadata.labels = Some(labels(&[("app", "web")]));
        let pending = Pod::default();
        let mut leaving = ready_pod("d", now);
        leaving.metadata.deletion_timestamp = Some(Time(now));
        let counts = replica_status(&[long_ready, just_ready, pending, leaving], &spec, now);
        assert_eq!(
            counts,
            ReplicaCounts {
                replicas: 3,
                fully_labeled: 1,
                ready: 2,
                available: 1,
                terminating: 1,
            }
        );
    }
}
