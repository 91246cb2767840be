//! StatefulSet: pods with stable names `<set>-<ordinal>`, stable hostnames under the set's
//! service, and their own PersistentVolumeClaims from `volumeClaimTemplates`.
//!
//! Each sync lists the set's pods live, works out one plan (`plan`, pure) of creations and
//! deletions in upstream's order — create missing ordinals ascending, remove condemned ones
//! descending, then roll pods onto the update revision from the highest ordinal down to the
//! partition — and with `OrderedReady` stops at the first step that must wait for a pod to
//! become Running and Ready. Pod events wake the set again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod,
    PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;

use super::revision::{self, REVISION_HASH_LABEL};
use super::{common, ownership};

const CONTROLLER: &str = "statefulset-controller";
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

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

/// Runs the StatefulSet controller until the watch ends.
pub async fn run(client: kube::Client) {
    let sets: Api<StatefulSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let recorder = Recorder::new(client.clone(), Reporter::from(CONTROLLER));
    let context = Arc::new(Context { client, recorder });
    Controller::new(sets, watcher::Config::default())
        .watches(pods, watcher::Config::default(), |pod| {
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            common::controller_of(&pod.metadata)
                .filter(|owner| owner.kind == "StatefulSet")
                .map(|owner| ObjectRef::new(&owner.name).within(&namespace))
        })
        .run(reconcile, error_policy, context)
        .for_each(|_| async {})
        .await;
}

fn error_policy(_: Arc<StatefulSet>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "statefulset sync failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// The ordinal of a pod named `<set>-<ordinal>`, if it is one of the set's names.
pub fn parse_ordinal(set_name: &str, pod_name: &str) -> Option<i32> {
    let digits = pod_name.strip_prefix(set_name)?.strip_prefix('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // "web-01" is not ordinal 1's name: only the canonical spelling counts.
    let ordinal: i32 = digits.parse().ok()?;
    (ordinal.to_string() == digits).then_some(ordinal)
}

pub fn pod_name(set_name: &str, ordinal: i32) -> String {
    format!("{set_name}-{ordinal}")
}

/// Upstream's `getPersistentVolumeClaimName`: `<claim template>-<pod name>`.
pub fn claim_name(template_name: &str, set_name: &str, ordinal: i32) -> String {
    format!("{template_name}-{}", pod_name(set_name, ordinal))
}

/// What the plan needs to know about one existing pod of the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub ordinal: i32,
    pub revision: String,
    /// Running and Ready (upstream's `isRunningAndReady`).
    pub healthy: bool,
    pub terminating: bool,
    pub failed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Create(i32),
    Delete(i32),
}

/// How the set wants its pods managed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub start: i32,
    pub replicas: i32,
    /// `Parallel` pod management: no waiting for one pod before the next.
    pub parallel: bool,
    /// `RollingUpdate` with this partition; `None` for `OnDelete`.
    pub rolling_partition: Option<i32>,
    /// Pods a rolling update may have down at once (upstream default 1).
    pub max_unavailable: i32,
}

/// The creations and deletions of one sync, in upstream's order. `members` may be in any
/// order; ordinals outside `[start, start + replicas)` are condemned.
pub fn plan(members: &[Member], policy: Policy, update_revision: &str) -> Vec<Step> {
    let end = policy.start + policy.replicas.max(0);
    let in_range = |o: i32| o >= policy.start && o < end;
    let by_ordinal: BTreeMap<i32, &Member> = members.iter().map(|m| (m.ordinal, m)).collect();
    let ordered = !policy.parallel;
    let mut steps = Vec::new();

    for ordinal in policy.start..end {
        match by_ordinal.get(&ordinal) {
            None => {
                steps.push(Step::Create(ordinal));
                if ordered {
                    return steps;
                }
            }
            // A failed pod is deleted; a later sync creates it afresh.
            Some(m) if m.failed && !m.terminating => {
                steps.push(Step::Delete(ordinal));
                if ordered {
                    return steps;
                }
            }
            Some(m) if ordered && (m.terminating || !m.healthy) => return steps,
            Some(_) => {}
        }
    }

    // Scale down from the highest ordinal; ordered sets get here only with every wanted pod
    // healthy, remove one pod at a time, and let an unhealthy condemned pod go only when it
    // is the lowest unhealthy one (upstream's `firstUnhealthyPod`).
    let first_unhealthy = by_ordinal
        .values()
        .find(|m| !m.healthy || m.terminating)
        .map(|m| m.ordinal);
    let condemned = by_ordinal.values().rev().filter(|m| !in_range(m.ordinal));
    for m in condemned {
        if m.terminating {
            if ordered {
                return steps;
            }
            continue;
        }
        if ordered && !m.healthy && first_unhealthy != Some(m.ordinal) {
            return steps;
        }
        steps.push(Step::Delete(m.ordinal));
        if ordered {
            return steps;
        }
    }

    let Some(partition) = policy.rolling_partition else {
        return steps;
    };
    if !steps.is_empty() && ordered {
        return steps;
    }
    // Upstream's maxUnavailable rolling update: pods not healthy anywhere in the set use up
    // the budget; the rest replaces outdated pods from the highest ordinal down.
    let unavailable = by_ordinal
        .values()
        .filter(|m| in_range(m.ordinal) && (!m.healthy || m.terminating))
        .count() as i32
        + (policy.start..end)
            .filter(|o| !by_ordinal.contains_key(o))
            .count() as i32;
    let mut budget = policy.max_unavailable.max(1) - unavailable;
    let update_min = policy.start + partition.max(0);
    for ordinal in (update_min..end).rev() {
        if budget <= 0 {
            break;
        }
        let Some(m) = by_ordinal.get(&ordinal) else {
            continue;
        };
        if m.revision != update_revision && !m.terminating {
            steps.push(Step::Delete(ordinal));
            budget -= 1;
        }
    }
    steps
}

/// The set's spec as the controller reads it, with upstream's defaults for missing fields.
struct SetSpec<'a> {
    name: String,
    namespace: String,
    policy: Policy,
    service_name: String,
    template: &'a PodTemplateSpec,
    claims: Vec<PersistentVolumeClaim>,
    min_ready_seconds: i32,
    history_limit: i32,
    delete_claims_when_scaled: bool,
    delete_claims_when_deleted: bool,
}

fn set_spec(set: &StatefulSet) -> Option<SetSpec<'_>> {
    let spec = set.spec.as_ref()?;
    let strategy = spec.update_strategy.as_ref();
    let rolling = strategy.and_then(|s| s.type_.as_deref()) != Some("OnDelete");
    let partition = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let retention = spec.persistent_volume_claim_retention_policy.as_ref();
    Some(SetSpec {
        name: set.metadata.name.clone()?,
        namespace: set.metadata.namespace.clone()?,
        policy: Policy {
            start: spec
                .ordinals
                .as_ref()
                .and_then(|o| o.start)
                .unwrap_or(0)
                .max(0),
            replicas: spec.replicas.unwrap_or(1),
            parallel: spec.pod_management_policy.as_deref() == Some("Parallel"),
            rolling_partition: rolling.then_some(partition),
            max_unavailable: max_unavailable(spec),
        },
        service_name: spec.service_name.clone().unwrap_or_default(),
        template: &spec.template,
        claims: spec.volume_claim_templates.clone().unwrap_or_default(),
        min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
        history_limit: spec
            .revision_history_limit
            .unwrap_or(revision::DEFAULT_HISTORY_LIMIT),
        delete_claims_when_scaled: retention.and_then(|r| r.when_scaled.as_deref())
            == Some("Delete"),
        delete_claims_when_deleted: retention.and_then(|r| r.when_deleted.as_deref())
            == Some("Delete"),
    })
}

/// `maxUnavailable` as a count of the replicas (a percentage rounds up, as upstream), at
/// least 1.
fn max_unavailable(spec: &k8s_openapi::api::apps::v1::StatefulSetSpec) -> i32 {
    let replicas = spec.replicas.unwrap_or(1);
    spec.update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.as_ref())
        .map(|v| super::deployment::scaled_value(v, replicas, true))
        .unwrap_or(1)
        .max(1)
}

fn pod_revision(pod: &Pod) -> String {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_HASH_LABEL))
        .cloned()
        .unwrap_or_default()
}

fn member(spec: &SetSpec, pod: &Pod) -> Option<Member> {
    let ordinal = parse_ordinal(&spec.name, pod.metadata.name.as_deref()?)?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    Some(Member {
        ordinal,
        revision: pod_revision(pod),
        healthy: phase == Some("Running") && common::pod_is_ready(pod),
        terminating: pod.metadata.deletion_timestamp.is_some(),
        failed: matches!(phase, Some("Failed" | "Succeeded")),
    })
}

async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(spec) = set_spec(&set) else {
        return Ok(Action::await_change());
    };
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &spec.namespace);
    let all = pods_api.list(&ListParams::default()).await?.items;
    let selector = set
        .spec
        .as_ref()
        .map(|s| s.selector.clone())
        .unwrap_or_default();
    let claimer = ownership::Claimer {
        api_version: "apps/v1",
        kind: "StatefulSet",
        meta: &set.metadata,
        selector: &selector,
    };
    let pods = ownership::claim_pods(&pods_api, &claimer, all, |p| {
        p.metadata
            .name
            .as_deref()
            .is_some_and(|n| parse_ordinal(&spec.name, n).is_some())
    })
    .await?;

    let collision_count = set.status.as_ref().and_then(|s| s.collision_count);
    let owner = revision::Owner {
        api_version: "apps/v1",
        kind: "StatefulSet",
        meta: &set.metadata,
        selector: &set
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default(),
        template: spec.template,
        collision_count,
    };
    let (revisions, update) = match revision::sync_revisions(&ctx.client, &owner).await {
        Ok(found) => found,
        Err(revision::Error::HashCollision(_)) => {
            let body = json!({"status": {"collisionCount": collision_count.unwrap_or(0) + 1}});
            Api::<StatefulSet>::namespaced(ctx.client.clone(), &spec.namespace)
                .patch_status(&spec.name, &PatchParams::default(), &Patch::Merge(&body))
                .await?;
            return Ok(Action::requeue(Duration::from_millis(100)));
        }
        Err(e) => return Err(e.into()),
    };
    let update_name = update.metadata.name.clone().unwrap_or_default();
    let status_current = set
        .status
        .as_ref()
        .and_then(|s| s.current_revision.clone())
        .unwrap_or_default();
    let current = revisions
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(status_current.as_str()))
        .unwrap_or(&update)
        .clone();
    let current_name = current.metadata.name.clone().unwrap_or_default();

    let members: Vec<Member> = pods.iter().filter_map(|p| member(&spec, p)).collect();
    let steps = plan(&members, spec.policy, &update_name);
    let sync = SetSync {
        ctx: &ctx,
        set: &set,
        spec: &spec,
        pods_api: &pods_api,
        reference: common::object_reference("apps/v1", "StatefulSet", &set.metadata),
    };
    for step in steps {
        match step {
            Step::Create(ordinal) => {
                let on_current = spec.policy.rolling_partition.is_some_and(|partition| {
                    current_name != update_name && ordinal < spec.policy.start + partition
                });
                let (template, revision_name) = if on_current {
                    let template = revision::template_of(&current);
                    (
                        template.unwrap_or_else(|| spec.template.clone()),
                        &current_name,
                    )
                } else {
                    (spec.template.clone(), &update_name)
                };
                sync.create_pod(ordinal, &template, revision_name).await?;
            }
            Step::Delete(ordinal) => {
                let condemned = ordinal >= spec.policy.start + spec.policy.replicas.max(0)
                    || ordinal < spec.policy.start;
                let pod = pods.iter().find(|p| {
                    p.metadata.name.as_deref() == Some(pod_name(&spec.name, ordinal).as_str())
                });
                if let Some(pod) = pod {
                    if condemned && spec.delete_claims_when_scaled {
                        sync.hand_claims_to_pod(ordinal, pod).await?;
                    }
                    sync.delete_pod(pod).await?;
                }
            }
        }
    }

    // Status from the pods as this sync found them; its own changes wake it again.
    let now = Timestamp::now();
    let mut counts = StatusCounts::default();
    for pod in &pods {
        counts.replicas += 1;
        if common::pod_is_ready(pod) {
            counts.ready += 1;
        }
        if common::pod_is_available(pod, spec.min_ready_seconds, now) {
            counts.available += 1;
        }
        if pod.metadata.deletion_timestamp.is_none() {
            let revision = pod_revision(pod);
            if revision == current_name {
                counts.current += 1;
            }
            if revision == update_name {
                counts.updated += 1;
            }
        }
    }
    let mut current_revision = current_name.clone();
    let rollout_done = spec.policy.rolling_partition.is_some()
        && counts.updated == counts.replicas
        && counts.ready == counts.replicas
        && counts.replicas == spec.policy.replicas;
    if rollout_done {
        current_revision = update_name.clone();
        counts.current = counts.updated;
    }
    let body = json!({"status": {
        "observedGeneration": set.metadata.generation,
        "replicas": counts.replicas,
        "readyReplicas": counts.ready,
        "availableReplicas": counts.available,
        "currentReplicas": counts.current,
        "updatedReplicas": counts.updated,
        "currentRevision": current_revision,
        "updateRevision": update_name,
        "collisionCount": collision_count.unwrap_or(0),
    }});
    if common::status_differs(set.as_ref(), &body) {
        let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &spec.namespace);
        match sets
            .patch_status(&spec.name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }

    let mut live: BTreeSet<String> = pods.iter().map(pod_revision).collect();
    live.insert(current_revision);
    live.insert(update_name);
    revision::truncate_history(
        &ctx.client,
        &spec.namespace,
        &revisions,
        &live,
        spec.history_limit,
    )
    .await?;

    // Available pods turn available after minReadySeconds without an event to say so.
    let soonest = pods
        .iter()
        .filter_map(|p| common::until_available(p, spec.min_ready_seconds, now))
        .min();
    Ok(match soonest {
        Some(wait) => Action::requeue(wait.unsigned_abs() + Duration::from_millis(100)),
        None => Action::requeue(Duration::from_secs(300)),
    })
}

#[derive(Debug, Default)]
struct StatusCounts {
    replicas: i32,
    ready: i32,
    available: i32,
    current: i32,
    updated: i32,
}

/// One set's writes.
struct SetSync<'a> {
    ctx: &'a Context,
    set: &'a StatefulSet,
    spec: &'a SetSpec<'a>,
    pods_api: &'a Api<Pod>,
    reference: ObjectReference,
}

impl SetSync<'_> {
    async fn event(&self, type_: EventType, reason: &str, note: String) {
        common::publish(&self.ctx.recorder, &self.reference, type_, reason, note).await;
    }

    /// Creates the pod's claims that are missing, then the pod.
    async fn create_pod(
        &self,
        ordinal: i32,
        template: &PodTemplateSpec,
        revision_name: &str,
    ) -> Result<(), Error> {
        let name = pod_name(&self.spec.name, ordinal);
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.ctx.client.clone(), &self.spec.namespace);
        for claim in new_claims(self.set, self.spec, ordinal) {
            let claim_name = claim.metadata.name.clone().unwrap_or_default();
            if claims.get_opt(&claim_name).await?.is_some() {
                continue;
            }
            match claims.create(&PostParams::default(), &claim).await {
                Ok(_) => {
                    self.event(
                        EventType::Normal,
                        "SuccessfulCreate",
                        format!(
                            "create Claim {claim_name} Pod {name} in StatefulSet {} success",
                            self.spec.name
                        ),
                    )
                    .await
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(error) => {
                    self.event(
                        EventType::Warning,
                        "FailedCreate",
                        format!(
                            "create Claim {claim_name} for Pod {name} in StatefulSet {} failed error: {error}",
                            self.spec.name
                        ),
                    )
                    .await;
                    return Err(error.into());
                }
            }
        }
        let pod = new_pod(self.set, self.spec, template, ordinal, revision_name);
        match self.pods_api.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                self.event(
                    EventType::Normal,
                    "SuccessfulCreate",
                    format!(
                        "create Pod {name} in StatefulSet {} successful",
                        self.spec.name
                    ),
                )
                .await;
                Ok(())
            }
            // Still terminating from an earlier deletion: its event wakes us again.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(error) => {
                self.event(
                    EventType::Warning,
                    "FailedCreate",
                    format!(
                        "create Pod {name} in StatefulSet {} failed error: {error}",
                        self.spec.name
                    ),
                )
                .await;
                Err(error.into())
            }
        }
    }

    async fn delete_pod(&self, pod: &Pod) -> Result<(), Error> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        match self.pods_api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                self.event(
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!(
                        "delete Pod {name} in StatefulSet {} successful",
                        self.spec.name
                    ),
                )
                .await;
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// `whenScaled: Delete`: the condemned pod becomes an owner of its claims, so the garbage
    /// collector removes them once the pod is gone.
    async fn hand_claims_to_pod(&self, ordinal: i32, pod: &Pod) -> Result<(), Error> {
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.ctx.client.clone(), &self.spec.namespace);
        let owner = OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            controller: None,
            block_owner_deletion: None,
        };
        for template in &self.spec.claims {
            let template_name = template.metadata.name.clone().unwrap_or_default();
            let name = claim_name(&template_name, &self.spec.name, ordinal);
            let Some(claim) = claims.get_opt(&name).await? else {
                continue;
            };
            let mut refs = claim.metadata.owner_references.clone().unwrap_or_default();
            if refs.iter().any(|r| r.uid == owner.uid) {
                continue;
            }
            refs.push(owner.clone());
            let body = json!({"metadata": {
                "ownerReferences": refs,
                "resourceVersion": claim.metadata.resource_version,
            }});
            match claims
                .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// The claims of pod `ordinal`: each template named for the pod, labelled with the set's
/// selector, and owned by the set when `whenDeleted: Delete`.
fn new_claims(set: &StatefulSet, spec: &SetSpec, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let selector_labels = set
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    spec.claims
        .iter()
        .map(|template| {
            let template_name = template.metadata.name.clone().unwrap_or_default();
            let mut labels = template.metadata.labels.clone().unwrap_or_default();
            labels.extend(selector_labels.clone());
            let owners = spec.delete_claims_when_deleted.then(|| {
                let mut owner =
                    common::controller_reference("apps/v1", "StatefulSet", &set.metadata);
                owner.controller = None;
                owner.block_owner_deletion = None;
                vec![owner]
            });
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(&template_name, &spec.name, ordinal)),
                    namespace: Some(spec.namespace.clone()),
                    labels: Some(labels),
                    annotations: template.metadata.annotations.clone(),
                    owner_references: owners,
                    ..Default::default()
                },
                spec: template.spec.clone(),
                status: None,
            }
        })
        .collect()
}

/// Pod `ordinal` of the set from `template`: its stable name and hostname, the set's service
/// as subdomain, the identity labels, and its claims as volumes.
fn new_pod(
    set: &StatefulSet,
    spec: &SetSpec,
    template: &PodTemplateSpec,
    ordinal: i32,
    revision_name: &str,
) -> Pod {
    let name = pod_name(&spec.name, ordinal);
    let template_meta = template.metadata.clone().unwrap_or_default();
    let mut labels = template_meta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_HASH_LABEL.into(), revision_name.into());
    let mut pod_spec = template.spec.clone().unwrap_or_default();
    pod_spec.hostname = Some(name.clone());
    if !spec.service_name.is_empty() {
        pod_spec.subdomain = Some(spec.service_name.clone());
    }
    let mut volumes: Vec<Volume> = pod_spec.volumes.take().unwrap_or_default();
    for claim in &spec.claims {
        let template_name = claim.metadata.name.clone().unwrap_or_default();
        volumes.retain(|v| v.name != template_name);
        volumes.push(Volume {
            name: template_name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(&template_name, &spec.name, ordinal),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    if !volumes.is_empty() {
        pod_spec.volumes = Some(volumes);
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(spec.namespace.clone()),
            labels: Some(labels),
            annotations: template_meta.annotations,
            finalizers: template_meta.finalizers,
            owner_references: Some(vec![common::controller_reference(
                "apps/v1",
                "StatefulSet",
                &set.metadata,
            )]),
            ..Default::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy(ordinal: i32, revision: &str) -> Member {
        Member {
            ordinal,
            revision: revision.into(),
            healthy: true,
            terminating: false,
            failed: false,
        }
    }

    fn starting(ordinal: i32) -> Member {
        Member {
            healthy: false,
            ..healthy(ordinal, "r1")
        }
    }

    fn ordered(replicas: i32) -> Policy {
        Policy {
            start: 0,
            replicas,
            parallel: false,
            rolling_partition: Some(0),
            max_unavailable: 1,
        }
    }

    #[test]
    fn ordinals_parse_only_from_the_sets_own_canonical_names() {
        assert_eq!(parse_ordinal("web", "web-0"), Some(0));
        assert_eq!(parse_ordinal("web", "web-12"), Some(12));
        assert_eq!(parse_ordinal("web", "web-01"), None);
        assert_eq!(parse_ordinal("web", "web-x"), None);
        assert_eq!(parse_ordinal("web", "web-"), None);
        assert_eq!(parse_ordinal("web", "webby-1"), None);
        assert_eq!(parse_ordinal("web-1", "web-1-2"), Some(2));
        assert_eq!(claim_name("data", "web", 2), "data-web-2");
    }

    #[test]
    fn ordered_sets_create_one_pod_at_a_time_in_order() {
        assert_eq!(plan(&[], ordered(3), "r1"), vec![Step::Create(0)]);
        assert_eq!(plan(&[starting(0)], ordered(3), "r1"), vec![]);
        assert_eq!(
            plan(&[healthy(0, "r1")], ordered(3), "r1"),
            vec![Step::Create(1)]
        );
        let all = [healthy(0, "r1"), healthy(1, "r1"), healthy(2, "r1")];
        assert_eq!(plan(&all, ordered(3), "r1"), vec![]);
    }

    #[test]
    fn parallel_sets_create_every_missing_pod_at_once() {
        let policy = Policy {
            parallel: true,
            ..ordered(3)
        };
        assert_eq!(
            plan(&[starting(1)], policy, "r1"),
            vec![Step::Create(0), Step::Create(2)]
        );
    }

    #[test]
    fn ordered_scale_down_removes_the_highest_ordinal_first_one_at_a_time() {
        let all = [healthy(0, "r1"), healthy(1, "r1"), healthy(2, "r1")];
        assert_eq!(plan(&all, ordered(1), "r1"), vec![Step::Delete(2)]);
        let mut going = all.clone();
        going[2].terminating = true;
        assert_eq!(plan(&going, ordered(1), "r1"), vec![]);
        let parallel = Policy {
            parallel: true,
            ..ordered(1)
        };
        assert_eq!(
            plan(&all, parallel, "r1"),
            vec![Step::Delete(2), Step::Delete(1)]
        );
    }

    #[test]
    fn ordered_scale_down_waits_for_unhealthy_pods() {
        let pods = [starting(0), healthy(1, "r1"), healthy(2, "r1")];
        assert_eq!(plan(&pods, ordered(1), "r1"), vec![]);
    }

    #[test]
    fn a_rolling_update_replaces_the_highest_outdated_pod_down_to_the_partition() {
        let all = [healthy(0, "r1"), healthy(1, "r1"), healthy(2, "r1")];
        assert_eq!(plan(&all, ordered(3), "r2"), vec![Step::Delete(2)]);
        let rolled = [healthy(0, "r1"), healthy(1, "r1"), healthy(2, "r2")];
        assert_eq!(plan(&rolled, ordered(3), "r2"), vec![Step::Delete(1)]);
        let partitioned = Policy {
            rolling_partition: Some(2),
            ..ordered(3)
        };
        assert_eq!(plan(&rolled, partitioned, "r2"), vec![]);
        let on_delete = Policy {
            rolling_partition: None,
            ..ordered(3)
        };
        assert_eq!(plan(&all, on_delete, "r2"), vec![]);
    }

    #[test]
    fn a_rolling_update_waits_for_the_replaced_pod_to_be_healthy() {
        let rolling = [healthy(0, "r1"), healthy(1, "r1"), starting(2)];
        let mut rolling = rolling.to_vec();
        rolling[2].revision = "r2".into();
        assert_eq!(plan(&rolling, ordered(3), "r2"), vec![]);
    }

    #[test]
    fn max_unavailable_replaces_several_pods_at_once_within_its_budget() {
        let policy = Policy {
            max_unavailable: 2,
            ..ordered(3)
        };
        let all = [healthy(0, "r1"), healthy(1, "r1"), healthy(2, "r1")];
        assert_eq!(
            plan(&all, policy, "r2"),
            vec![Step::Delete(2), Step::Delete(1)]
        );
        let parallel = Policy {
            parallel: true,
            ..policy
        };
        let mut one_down = all.to_vec();
        one_down[2] = Member {
            revision: "r2".into(),
            ..starting(2)
        };
        assert_eq!(plan(&one_down, parallel, "r2"), vec![Step::Delete(1)]);
    }

    #[test]
    fn failed_pods_are_deleted_to_be_recreated() {
        let mut failed = healthy(0, "r1");
        failed.failed = true;
        failed.healthy = false;
        assert_eq!(plan(&[failed], ordered(1), "r1"), vec![Step::Delete(0)]);
    }

    #[test]
    fn ordinals_start_where_the_set_says() {
        let policy = Policy {
            start: 5,
            ..ordered(2)
        };
        assert_eq!(plan(&[], policy, "r1"), vec![Step::Create(5)]);
        assert_eq!(
            plan(&[healthy(0, "r1"), healthy(5, "r1")], policy, "r1"),
            vec![Step::Create(6)]
        );
    }
}
