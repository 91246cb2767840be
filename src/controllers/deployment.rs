//! Deployments: one ReplicaSet per pod template, rolled over by RollingUpdate (maxSurge /
//! maxUnavailable) or Recreate, with upstream's revision annotations and conditions so that
//! `kubectl rollout status|history|undo|restart|pause|resume` behave as on any cluster.
//!
//! The reconcile re-reads ReplicaSets (and, for Recreate, pods) from the API each time and
//! computes every step from that state, so it is safe to run again at any moment.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::{json, Value};

use super::common::{self, selector_matches};
use super::replicaset::{claim, Claim};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const TEMPLATE_HASH: &str = "pod-template-hash";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const CONTROLLER: &str = "deployment-controller";
const DEFAULT_PROGRESS_DEADLINE: i32 = 600;
const DEFAULT_HISTORY_LIMIT: i32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot encode the pod template: {0}")]
    Encode(#[from] serde_json::Error),
}

struct Context {
    client: kube::Client,
    recorder: Recorder,
}

/// Runs the Deployment controller until the watch ends.
pub async fn run(client: kube::Client) {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let replica_sets: Api<ReplicaSet> = Api::all(client.clone());
    let controller = Controller::new(deployments, watcher::Config::default());
    let store = controller.store();
    let recorder = Recorder::new(client.clone(), Reporter::from(CONTROLLER));
    let context = Arc::new(Context { client, recorder });
    controller
        .watches(replica_sets, watcher::Config::default(), move |rs| {
            deployments_to_wake(&rs, &store)
        })
        .run(reconcile, error_policy, context)
        .for_each(|_| async {})
        .await;
}

/// A ReplicaSet wakes its controlling Deployment, or, when orphaned, any that could adopt it.
fn deployments_to_wake(rs: &ReplicaSet, store: &Store<Deployment>) -> Vec<ObjectRef<Deployment>> {
    let namespace = rs.metadata.namespace.clone().unwrap_or_default();
    if let Some(owner) = common::controller_of(&rs.metadata) {
        if owner.kind == "Deployment" {
            return vec![ObjectRef::new(&owner.name).within(&namespace)];
        }
        return Vec::new();
    }
    let labels = rs.metadata.labels.clone().unwrap_or_default();
    store
        .state()
        .iter()
        .filter(|d| d.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .filter(|d| {
            d.spec
                .as_ref()
                .is_some_and(|s| selector_matches(&s.selector, &labels))
        })
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

fn error_policy(_: Arc<Deployment>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "deployment sync failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// One Deployment's sync, with everything it reads and the writes it has made so far.
struct Sync<'a> {
    ctx: &'a Context,
    d: &'a Deployment,
    name: String,
    namespace: String,
    replica_sets: Api<ReplicaSet>,
    desired: i32,
    surge: i32,
    unavailable: i32,
    /// The Deployment's conditions as this sync leaves them.
    conditions: Vec<Value>,
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (Some(name), Some(namespace), Some(uid)) = (
        d.metadata.name.clone(),
        d.metadata.namespace.clone(),
        d.metadata.uid.clone(),
    ) else {
        return Ok(Action::await_change());
    };
    let Some(spec) = d.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    if d.metadata.deletion_timestamp.is_some() || common::selector_is_empty(&spec.selector) {
        return Ok(Action::await_change());
    }
    let desired = spec.replicas.unwrap_or(1);
    let (surge, unavailable) = max_surge_and_unavailable(&d, desired);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut sync = Sync {
        ctx: &ctx,
        d: &d,
        name,
        namespace,
        replica_sets,
        desired,
        surge,
        unavailable,
        conditions: current_conditions(&d),
    };

    let mut owned = sync.claim_replica_sets(&uid).await?;
    let paused = spec.paused.unwrap_or(false);
    sync.set_paused_condition(paused);
    let hash = pod_template_hash(&spec.template, collision_count(&d))?;
    let new_index = owned
        .iter()
        .position(|rs| rs_template_matches(rs, &spec.template));

    let next_revision = owned
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != new_index)
        .map(|(_, rs)| revision(&rs.metadata))
        .max()
        .unwrap_or(0)
        + 1;

    if paused || is_scaling_event(&owned, desired) {
        // Only resize, proportionally; no rollout step while paused or resizing.
        if let Some(i) = new_index {
            sync.update_new_rs_annotations(&mut owned[i], next_revision)
                .await?;
        }
        sync.scale(&mut owned, new_index).await?;
        if !paused && new_index.is_some_and(|i| deployment_complete_by_spec(&owned[i], desired)) {
            sync.cleanup(&owned, new_index).await?;
        }
        return sync.finish(&owned, new_index, paused).await;
    }

    let recreate = spec
        .strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .is_some_and(|t| t == "Recreate");
    if recreate {
        // Old pods all go first, then the new ReplicaSet comes up at full size.
        let mut scaled_down = false;
        for i in (0..owned.len()).filter(|i| Some(*i) != new_index) {
            if spec_replicas(&owned[i]) > 0 {
                sync.scale_rs(&mut owned[i], 0).await?;
                scaled_down = true;
            }
        }
        if scaled_down || sync.old_pods_running(&owned, new_index).await? {
            sync.finish(&owned, new_index, false).await?;
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    }

    let new_index = match new_index {
        Some(i) => {
            sync.update_new_rs_annotations(&mut owned[i], next_revision)
                .await?;
            Some(i)
        }
        None => match sync
            .create_new_rs(&owned, &hash, next_revision, recreate)
            .await?
        {
            Some(rs) => {
                owned.push(rs);
                Some(owned.len() - 1)
            }
            // A hash collision: the collision count went up, the next sync retries.
            None => return Ok(Action::requeue(Duration::from_millis(200))),
        },
    };
    let Some(new_i) = new_index else {
        return Ok(Action::await_change());
    };

    if recreate {
        if spec_replicas(&owned[new_i]) != desired {
            sync.scale_rs(&mut owned[new_i], desired).await?;
        }
    } else {
        let total: i32 = owned.iter().map(spec_replicas).sum();
        let target = new_rs_replicas(desired, surge, total, spec_replicas(&owned[new_i]));
        if target != spec_replicas(&owned[new_i]) {
            sync.scale_rs(&mut owned[new_i], target).await?;
            return sync.finish(&owned, new_index, false).await;
        }
        let olds: Vec<usize> = old_indices_oldest_first(&owned, new_i);
        let old_counts: Vec<(i32, i32)> = olds
            .iter()
            .map(|&i| (spec_replicas(&owned[i]), available(&owned[i])))
            .collect();
        let plan = old_scale_down(
            desired,
            unavailable,
            (spec_replicas(&owned[new_i]), available(&owned[new_i])),
            &old_counts,
        );
        for (&i, target) in olds.iter().zip(plan) {
            if target != spec_replicas(&owned[i]) {
                sync.scale_rs(&mut owned[i], target).await?;
            }
        }
    }
    if deployment_complete_by_spec(&owned[new_i], desired)
        && old_indices_oldest_first(&owned, new_i)
            .iter()
            .all(|&i| spec_replicas(&owned[i]) == 0)
    {
        sync.cleanup(&owned, new_index).await?;
    }
    sync.finish(&owned, new_index, false).await
}

impl Sync<'_> {
    fn reference(&self) -> k8s_openapi::api::core::v1::ObjectReference {
        common::object_reference("apps/v1", "Deployment", &self.d.metadata)
    }

    /// Adopts orphaned ReplicaSets the selector matches, releases owned ones it no longer does.
    async fn claim_replica_sets(&self, uid: &str) -> Result<Vec<ReplicaSet>, Error> {
        let Some(spec) = self.d.spec.as_ref() else {
            return Ok(Vec::new());
        };
        let all = self.replica_sets.list(&ListParams::default()).await?.items;
        let mut owned = Vec::new();
        for rs in all {
            let labels = rs.metadata.labels.clone().unwrap_or_default();
            let matches = selector_matches(&spec.selector, &labels);
            let rs_name = rs.metadata.name.clone().unwrap_or_default();
            let mut refs = rs.metadata.owner_references.clone().unwrap_or_default();
            match claim(&rs.metadata, uid, matches, false) {
                Claim::Keep => owned.push(rs),
                Claim::Ignore => {}
                Claim::Adopt => {
                    refs.push(common::controller_reference(
                        "apps/v1",
                        "Deployment",
                        &self.d.metadata,
                    ));
                    let body = json!({"metadata": {"ownerReferences": refs,
                        "resourceVersion": rs.metadata.resource_version}});
                    match self
                        .replica_sets
                        .patch(&rs_name, &PatchParams::default(), &Patch::Merge(&body))
                        .await
                    {
                        Ok(adopted) => owned.push(adopted),
                        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Claim::Release => {
                    refs.retain(|r| r.uid != uid);
                    let body = json!({"metadata": {"ownerReferences": refs,
                        "resourceVersion": rs.metadata.resource_version}});
                    match self
                        .replica_sets
                        .patch(&rs_name, &PatchParams::default(), &Patch::Merge(&body))
                        .await
                    {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(owned)
    }

    fn set_paused_condition(&mut self, paused: bool) {
        let reason = progressing_reason(&self.conditions);
        if paused && reason.as_deref() != Some("DeploymentPaused") {
            set_condition(
                &mut self.conditions,
                condition(
                    "Progressing",
                    "Unknown",
                    "DeploymentPaused",
                    "Deployment is paused",
                ),
            );
        } else if !paused && reason.as_deref() == Some("DeploymentPaused") {
            set_condition(
                &mut self.conditions,
                condition(
                    "Progressing",
                    "Unknown",
                    "DeploymentResumed",
                    "Deployment is resumed",
                ),
            );
        }
    }

    /// Creates the ReplicaSet for the current template; None after a name collision.
    async fn create_new_rs(
        &mut self,
        owned: &[ReplicaSet],
        hash: &str,
        revision: i64,
        recreate: bool,
    ) -> Result<Option<ReplicaSet>, Error> {
        let Some(spec) = self.d.spec.as_ref() else {
            return Ok(None);
        };
        let total: i32 = owned.iter().map(spec_replicas).sum();
        let replicas = if recreate {
            self.desired
        } else {
            new_rs_replicas(self.desired, self.surge, total, 0)
        };
        let rs = new_replica_set(self.d, hash, revision, replicas, self.surge);
        let rs_name = rs.metadata.name.clone().unwrap_or_default();
        match self.replica_sets.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                if replicas > 0 {
                    self.scaling_event("up", &rs_name, 0, replicas).await;
                }
                set_condition(
                    &mut self.conditions,
                    condition(
                        "Progressing",
                        "True",
                        "NewReplicaSetCreated",
                        &format!("Created new replica set \"{rs_name}\""),
                    ),
                );
                self.set_revision_annotation(revision).await?;
                Ok(Some(created))
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // Ours already, created by an earlier sync whose list we did not see? Use it.
                let existing = self.replica_sets.get(&rs_name).await?;
                let uid = self.d.metadata.uid.clone().unwrap_or_default();
                if common::is_controlled_by(&existing.metadata, &uid)
                    && rs_template_matches(&existing, &spec.template)
                {
                    return Ok(Some(existing));
                }
                let count = collision_count(self.d).unwrap_or(0) + 1;
                let api: Api<Deployment> =
                    Api::namespaced(self.ctx.client.clone(), &self.namespace);
                let body = json!({"status": {"collisionCount": count}});
                api.patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&body))
                    .await?;
                Ok(None)
            }
            Err(e) => {
                let message = format!("Failed to create new replica set \"{rs_name}\": {e}");
                common::publish(
                    &self.ctx.recorder,
                    &self.reference(),
                    EventType::Warning,
                    "ReplicaSetCreateError",
                    message.clone(),
                )
                .await;
                set_condition(
                    &mut self.conditions,
                    condition("Progressing", "False", "ReplicaSetCreateError", &message),
                );
                Err(e.into())
            }
        }
    }

    /// Keeps the new ReplicaSet's revision (and copied annotations) current: after an undo the
    /// old ReplicaSet becomes the newest revision again.
    async fn update_new_rs_annotations(
        &mut self,
        rs: &mut ReplicaSet,
        next_revision: i64,
    ) -> Result<(), Error> {
        let current = revision(&rs.metadata);
        let mut annotations = rs.metadata.annotations.clone().unwrap_or_default();
        let copied = copied_annotations(self.d);
        let mut changed = false;
        for (k, v) in &copied {
            if annotations.get(k) != Some(v) {
                annotations.insert(k.clone(), v.clone());
                changed = true;
            }
        }
        let target = if current < next_revision {
            next_revision
        } else {
            current
        };
        if current < next_revision {
            // Upstream keeps the revisions a template was at before in revision-history.
            if current > 0 {
                let history = annotations
                    .get(REVISION_HISTORY)
                    .map(|h| format!("{h},{current}"))
                    .unwrap_or_else(|| current.to_string());
                annotations.insert(REVISION_HISTORY.into(), history);
            }
            annotations.insert(REVISION.into(), target.to_string());
            changed = true;
        }
        let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
        let rs_min_ready = rs.spec.as_ref().and_then(|s| s.min_ready_seconds);
        if changed || min_ready.unwrap_or(0) != rs_min_ready.unwrap_or(0) {
            let rs_name = rs.metadata.name.clone().unwrap_or_default();
            let body = json!({
                "metadata": {"annotations": annotations},
                "spec": {"minReadySeconds": min_ready.unwrap_or(0)},
            });
            *rs = self
                .replica_sets
                .patch(&rs_name, &PatchParams::default(), &Patch::Merge(&body))
                .await?;
        }
        if progressing_reason(&self.conditions).is_none() {
            let rs_name = rs.metadata.name.clone().unwrap_or_default();
            set_condition(
                &mut self.conditions,
                condition(
                    "Progressing",
                    "True",
                    "FoundNewReplicaSet",
                    &format!("Found new replica set \"{rs_name}\""),
                ),
            );
        }
        self.set_revision_annotation(target).await
    }

    async fn set_revision_annotation(&self, revision: i64) -> Result<(), Error> {
        let current = self
            .d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION));
        if current.map(String::as_str) == Some(revision.to_string().as_str()) {
            return Ok(());
        }
        let api: Api<Deployment> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let body = json!({"metadata": {"annotations": {REVISION: revision.to_string()}}});
        api.patch(&self.name, &PatchParams::default(), &Patch::Merge(&body))
            .await?;
        Ok(())
    }

    /// Sets a ReplicaSet's size with the desired/max-replicas annotations upstream keeps.
    async fn scale_rs(&self, rs: &mut ReplicaSet, replicas: i32) -> Result<(), Error> {
        let rs_name = rs.metadata.name.clone().unwrap_or_default();
        let before = spec_replicas(rs);
        let body = json!({
            "metadata": {"annotations": {
                DESIRED_REPLICAS: self.desired.to_string(),
                MAX_REPLICAS: (self.desired + self.surge).to_string(),
            }},
            "spec": {"replicas": replicas},
        });
        *rs = self
            .replica_sets
            .patch(&rs_name, &PatchParams::default(), &Patch::Merge(&body))
            .await?;
        if before != replicas {
            let direction = if replicas > before { "up" } else { "down" };
            self.scaling_event(direction, &rs_name, before, replicas)
                .await;
        }
        Ok(())
    }

    async fn scaling_event(&self, direction: &str, rs_name: &str, from: i32, to: i32) {
        common::publish(
            &self.ctx.recorder,
            &self.reference(),
            EventType::Normal,
            "ScalingReplicaSet",
            format!("Scaled {direction} replica set {rs_name} from {from} to {to}"),
        )
        .await;
    }

    /// A resize of the Deployment: spreads the change over the active ReplicaSets.
    async fn scale(&self, owned: &mut [ReplicaSet], new_index: Option<usize>) -> Result<(), Error> {
        let sizes: Vec<i32> = owned.iter().map(spec_replicas).collect();
        let targets = proportional_sizes(&sizes, new_index, self.desired, self.surge);
        for (rs, target) in owned.iter_mut().zip(targets) {
            let annotated = rs
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DESIRED_REPLICAS))
                .and_then(|v| v.parse::<i32>().ok());
            if target != spec_replicas(rs) || (target > 0 && annotated != Some(self.desired)) {
                self.scale_rs(rs, target).await?;
            }
        }
        Ok(())
    }

    /// Recreate waits until no pod of an old ReplicaSet is left running.
    async fn old_pods_running(
        &self,
        owned: &[ReplicaSet],
        new_index: Option<usize>,
    ) -> Result<bool, Error> {
        let old_uids: Vec<&str> = owned
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != new_index)
            .filter_map(|(_, rs)| rs.metadata.uid.as_deref())
            .collect();
        if old_uids.is_empty() {
            return Ok(false);
        }
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let list = pods.list(&ListParams::default()).await?.items;
        Ok(list.iter().any(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
                && common::controller_of(&p.metadata)
                    .is_some_and(|r| old_uids.contains(&r.uid.as_str()))
        }))
    }

    /// Deletes old, empty ReplicaSets beyond revisionHistoryLimit, oldest revision first.
    async fn cleanup(&self, owned: &[ReplicaSet], new_index: Option<usize>) -> Result<(), Error> {
        let limit = self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(DEFAULT_HISTORY_LIMIT)
            .max(0);
        let candidates: Vec<&ReplicaSet> = owned
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != new_index)
            .map(|(_, rs)| rs)
            .collect();
        for rs in history_to_delete(&candidates, limit) {
            let rs_name = rs.metadata.name.clone().unwrap_or_default();
            match self
                .replica_sets
                .delete(&rs_name, &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Writes the status and conditions, and decides when to look again.
    async fn finish(
        &mut self,
        owned: &[ReplicaSet],
        new_index: Option<usize>,
        paused: bool,
    ) -> Result<Action, Error> {
        let status = rollout_status(owned, new_index);
        let now = Timestamp::now();
        let min_available = self.desired - self.unavailable;
        let available_condition = if status.available >= min_available {
            condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        } else {
            condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        };
        set_condition(&mut self.conditions, available_condition);

        let generation = self.d.metadata.generation.unwrap_or(0);
        let complete = status.updated == self.desired
            && status.replicas == self.desired
            && status.available == self.desired;
        let deadline = self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.progress_deadline_seconds)
            .unwrap_or(DEFAULT_PROGRESS_DEADLINE);
        let mut requeue = None;
        if !paused {
            let rs_name = new_index
                .and_then(|i| owned[i].metadata.name.clone())
                .unwrap_or_default();
            let previous = self.d.status.clone().unwrap_or_default();
            let progressed = status.updated > previous.updated_replicas.unwrap_or(0)
                || status.ready > previous.ready_replicas.unwrap_or(0)
                || status.available > previous.available_replicas.unwrap_or(0)
                || status.replicas - status.updated
                    < previous.replicas.unwrap_or(0) - previous.updated_replicas.unwrap_or(0);
            if complete && new_index.is_some() {
                set_condition(
                    &mut self.conditions,
                    condition(
                        "Progressing",
                        "True",
                        "NewReplicaSetAvailable",
                        &format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
                    ),
                );
            } else if progressed {
                let mut fresh = condition(
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    &format!("ReplicaSet \"{rs_name}\" is progressing."),
                );
                // Progress refreshes lastUpdateTime even with the same reason (upstream does
                // the same), which is what pushes the deadline back.
                if let Some(old) = find_condition(&self.conditions, "Progressing") {
                    if old.get("status") == Some(&json!("True")) {
                        fresh["lastTransitionTime"] = old["lastTransitionTime"].clone();
                    }
                }
                self.conditions
                    .retain(|c| c.get("type") != Some(&json!("Progressing")));
                self.conditions.push(fresh);
            } else if timed_out(&self.conditions, deadline, now) {
                set_condition(
                    &mut self.conditions,
                    condition(
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        &format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                    ),
                );
            }
            if !complete {
                requeue = Some(time_to_deadline(&self.conditions, deadline, now));
            }
        }

        let body = json!({"status": {
            "observedGeneration": generation,
            "replicas": status.replicas,
            "updatedReplicas": status.updated,
            "readyReplicas": status.ready,
            "availableReplicas": status.available,
            "unavailableReplicas": (self.desired - status.available).max(0),
            "collisionCount": collision_count(self.d),
            "conditions": self.conditions,
        }});
        let api: Api<Deployment> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        if common::status_differs(self.d, &body) {
            match api
                .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&body))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Action::await_change()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(match requeue {
            Some(wait) => Action::requeue(wait),
            None => Action::requeue(Duration::from_secs(300)),
        })
    }
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn collision_count(d: &Deployment) -> Option<i32> {
    d.status.as_ref().and_then(|s| s.collision_count)
}

fn revision(meta: &ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn old_indices_oldest_first(owned: &[ReplicaSet], new_i: usize) -> Vec<usize> {
    let mut olds: Vec<usize> = (0..owned.len()).filter(|&i| i != new_i).collect();
    olds.sort_by_key(|&i| {
        (
            owned[i].metadata.creation_timestamp.clone(),
            owned[i].metadata.name.clone(),
        )
    });
    olds
}

/// A new ReplicaSet that has every desired pod and all available, going by its own status.
fn deployment_complete_by_spec(rs: &ReplicaSet, desired: i32) -> bool {
    let status = rs.status.clone().unwrap_or_default();
    spec_replicas(rs) == desired
        && status.replicas == desired
        && status.available_replicas.unwrap_or(0) == desired
}

/// A resize happened when an active ReplicaSet was sized for a different Deployment size.
fn is_scaling_event(owned: &[ReplicaSet], desired: i32) -> bool {
    owned.iter().filter(|rs| spec_replicas(rs) > 0).any(|rs| {
        rs.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DESIRED_REPLICAS))
            .and_then(|v| v.parse::<i32>().ok())
            .is_some_and(|annotated| annotated != desired)
    })
}

fn max_surge_and_unavailable(d: &Deployment, desired: i32) -> (i32, i32) {
    let strategy = d.spec.as_ref().and_then(|s| s.strategy.as_ref());
    let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
    let is_recreate = strategy
        .and_then(|s| s.type_.as_deref())
        .is_some_and(|t| t == "Recreate");
    if is_recreate {
        return (0, 0);
    }
    let default = IntOrString::String("25%".into());
    let surge = rolling
        .and_then(|r| r.max_surge.clone())
        .unwrap_or(default.clone());
    let unavailable = rolling
        .and_then(|r| r.max_unavailable.clone())
        .unwrap_or(default);
    resolve_fenceposts(&surge, &unavailable, desired)
}

/// Upstream's `ResolveFenceposts`: surge rounds up, unavailable rounds down, and both zero
/// would deadlock, so unavailable becomes one.
pub fn resolve_fenceposts(
    surge: &IntOrString,
    unavailable: &IntOrString,
    desired: i32,
) -> (i32, i32) {
    let surge = scaled_value(surge, desired, true);
    let mut unavailable = scaled_value(unavailable, desired, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

/// An int as is, or a percentage of `total` rounded up or down; garbage counts as zero
/// (validation refuses it before it gets here).
pub fn scaled_value(value: &IntOrString, total: i32, round_up: bool) -> i32 {
    match value {
        IntOrString::Int(n) => (*n).max(0),
        IntOrString::String(s) => {
            let Some(percent) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
                return 0;
            };
            let product = percent.max(0) * i64::from(total.max(0));
            let value = if round_up {
                (product + 99) / 100
            } else {
                product / 100
            };
            i32::try_from(value).unwrap_or(i32::MAX)
        }
    }
}

/// Upstream's `NewRSNewReplicas` for RollingUpdate: grow the new ReplicaSet as far as the
/// surge allows, never past the desired size.
pub fn new_rs_replicas(desired: i32, surge: i32, total_spec: i32, new_spec: i32) -> i32 {
    let max_total = desired + surge;
    if total_spec >= max_total {
        return new_spec;
    }
    let room = (max_total - total_spec).min(desired - new_spec).max(0);
    new_spec + room
}

/// Upstream's `reconcileOldReplicaSets`: the target size of each old ReplicaSet (oldest first,
/// given as (spec replicas, available)), scaling down unhealthy replicas first, then healthy
/// ones, never below `desired - max_unavailable` available pods.
pub fn old_scale_down(
    desired: i32,
    max_unavailable: i32,
    new: (i32, i32),
    olds: &[(i32, i32)],
) -> Vec<i32> {
    let mut targets: Vec<i32> = olds.iter().map(|(spec, _)| *spec).collect();
    let old_total: i32 = targets.iter().sum();
    if old_total == 0 {
        return targets;
    }
    let all_total = old_total + new.0;
    let min_available = desired - max_unavailable;
    let new_unavailable = (new.0 - new.1).max(0);
    let max_scaled_down = all_total - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return targets;
    }
    // Unhealthy replicas first: removing them costs no availability.
    let mut budget = max_scaled_down;
    for (target, (_, available)) in targets.iter_mut().zip(olds) {
        if budget == 0 {
            break;
        }
        let unhealthy = (*target - available).max(0);
        let cut = unhealthy.min(budget);
        *target -= cut;
        budget -= cut;
    }
    let cleaned = max_scaled_down - budget;
    // Then healthy ones, as far as availability allows.
    let available_total: i32 = new.1 + olds.iter().map(|(_, a)| a).sum::<i32>();
    let mut healthy_budget = (available_total - min_available)
        .max(0)
        .min(max_scaled_down - cleaned);
    for target in targets.iter_mut() {
        if healthy_budget == 0 {
            break;
        }
        let cut = (*target).min(healthy_budget);
        *target -= cut;
        healthy_budget -= cut;
    }
    targets
}

/// Sizes after a resize of the Deployment. One active ReplicaSet (or none) takes the whole
/// size; a finished rollout leaves only the new one; otherwise the change is spread in
/// proportion to current sizes, with the rounding remainder on the largest, as upstream.
pub fn proportional_sizes(
    sizes: &[i32],
    new_index: Option<usize>,
    desired: i32,
    surge: i32,
) -> Vec<i32> {
    let active: Vec<usize> = (0..sizes.len()).filter(|&i| sizes[i] > 0).collect();
    let mut out = sizes.to_vec();
    match active.as_slice() {
        [] => {
            if let Some(i) = new_index {
                out[i] = desired;
            }
            return out;
        }
        [only] => {
            out[*only] = desired;
            return out;
        }
        _ => {}
    }
    let total: i32 = sizes.iter().sum();
    let allowed = desired + surge;
    let to_add = allowed - total;
    if to_add == 0 {
        return out;
    }
    let mut order = active.clone();
    // Largest first when growing, smallest first when shrinking (upstream's sort).
    if to_add > 0 {
        order.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]));
    } else {
        order.sort_by(|&a, &b| sizes[a].cmp(&sizes[b]));
    }
    let mut added = 0;
    for &i in &order {
        let share = (i64::from(sizes[i]) * i64::from(to_add) / i64::from(total.max(1))) as i32;
        let share = if to_add > 0 {
            share.min(to_add - added)
        } else {
            share.max(to_add - added)
        };
        out[i] = (sizes[i] + share).max(0);
        added += out[i] - sizes[i];
    }
    if added != to_add {
        let first = order[0];
        out[first] = (out[first] + to_add - added).max(0);
    }
    out
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct RolloutCounts {
    pub replicas: i32,
    pub updated: i32,
    pub ready: i32,
    pub available: i32,
}

/// The Deployment's status counts: sums over its ReplicaSets, "updated" from the new one.
pub fn rollout_status(owned: &[ReplicaSet], new_index: Option<usize>) -> RolloutCounts {
    let mut counts = RolloutCounts::default();
    for (i, rs) in owned.iter().enumerate() {
        let status = rs.status.clone().unwrap_or_default();
        counts.replicas += status.replicas;
        counts.ready += status.ready_replicas.unwrap_or(0);
        counts.available += status.available_replicas.unwrap_or(0);
        if Some(i) == new_index {
            counts.updated = status.replicas;
        }
    }
    counts
}

/// The old ReplicaSets to delete: empty ones beyond `limit`, lowest revision first.
pub fn history_to_delete<'a>(olds: &[&'a ReplicaSet], limit: i32) -> Vec<&'a ReplicaSet> {
    let limit = usize::try_from(limit).unwrap_or(0);
    if olds.len() <= limit {
        return Vec::new();
    }
    let mut sorted: Vec<&ReplicaSet> = olds.to_vec();
    sorted.sort_by_key(|rs| {
        (
            revision(&rs.metadata),
            rs.metadata.creation_timestamp.clone(),
        )
    });
    let excess = olds.len() - limit;
    sorted
        .into_iter()
        .filter(|rs| {
            let status = rs.status.clone().unwrap_or_default();
            spec_replicas(rs) == 0
                && status.replicas == 0
                && status.observed_generation == rs.metadata.generation
        })
        .take(excess)
        .collect()
}

/// The Deployment annotations a ReplicaSet inherits (upstream skips its own bookkeeping ones).
fn copied_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                LAST_APPLIED | REVISION | REVISION_HISTORY | DESIRED_REPLICAS | MAX_REPLICAS
            ) && k.as_str() != "deprecated.deployment.rollback.to"
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The ReplicaSet for `d`'s current template: named `<deployment>-<hash>`, the hash in its
/// selector and pod labels so pods of different templates never mix.
pub fn new_replica_set(
    d: &Deployment,
    hash: &str,
    revision: i64,
    replicas: i32,
    surge: i32,
) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let desired = spec.replicas.unwrap_or(1);
    let mut template = spec.template.clone();
    let mut template_meta = template.metadata.clone().unwrap_or_default();
    let mut labels = template_meta.labels.clone().unwrap_or_default();
    labels.insert(TEMPLATE_HASH.into(), hash.into());
    template_meta.labels = Some(labels.clone());
    template.metadata = Some(template_meta);
    let mut selector: LabelSelector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(TEMPLATE_HASH.into(), hash.into());
    let mut annotations = copied_annotations(d);
    annotations.insert(REVISION.into(), revision.to_string());
    annotations.insert(DESIRED_REPLICAS.into(), desired.to_string());
    annotations.insert(MAX_REPLICAS.into(), (desired + surge).to_string());
    let name = d.metadata.name.clone().unwrap_or_default();
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{hash}")),
            namespace: d.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![common::controller_reference(
                "apps/v1",
                "Deployment",
                &d.metadata,
            )]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

/// Does this ReplicaSet run `template` (its pod-template-hash label aside)?
pub fn rs_template_matches(rs: &ReplicaSet, template: &PodTemplateSpec) -> bool {
    let Some(rs_template) = rs.spec.as_ref().and_then(|s| s.template.as_ref()) else {
        return false;
    };
    templates_equal_ignoring_hash(rs_template, template)
}

pub fn templates_equal_ignoring_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(meta) = t.metadata.as_mut() {
            if let Some(labels) = meta.labels.as_mut() {
                labels.remove(TEMPLATE_HASH);
                if labels.is_empty() {
                    meta.labels = None;
                }
            }
        }
        serde_json::to_value(t).ok()
    };
    strip(a) == strip(b)
}

/// The pod-template-hash: FNV-32a over the template (plus the collision count) as upstream's
/// `ComputeHash`, rendered through `SafeEncodeString`. Upstream hashes Go's in-memory dump of
/// the struct, which cannot be reproduced outside Go; this hashes canonical JSON (sorted keys)
/// instead, so names are stable across berth versions but differ from upstream's.
pub fn pod_template_hash(
    template: &PodTemplateSpec,
    collision_count: Option<i32>,
) -> Result<String, Error> {
    let value = serde_json::to_value(template)?;
    let mut bytes = Vec::new();
    common::write_canonical_json(&value, &mut bytes);
    if let Some(count) = collision_count {
        bytes.extend_from_slice(&count.to_le_bytes());
    }
    Ok(safe_encode(&fnv32a(&bytes).to_string()))
}

pub fn fnv32a(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Upstream's `rand.SafeEncodeString`: maps each byte onto an alphabet without vowels or
/// look-alikes, so hashes never spell words.
pub fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

fn current_conditions(d: &Deployment) -> Vec<Value> {
    d.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| {
            cs.iter()
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    let now = crate::api::meta::now_rfc3339();
    json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "lastUpdateTime": now, "lastTransitionTime": now,
    })
}

fn find_condition<'a>(conditions: &'a [Value], type_: &str) -> Option<&'a Value> {
    conditions
        .iter()
        .find(|c| c.get("type") == Some(&json!(type_)))
}

fn progressing_reason(conditions: &[Value]) -> Option<String> {
    find_condition(conditions, "Progressing")
        .and_then(|c| c.get("reason"))
        .and_then(|r| r.as_str())
        .map(String::from)
}

/// Upstream's `SetDeploymentCondition`: same status and reason changes nothing; same status
/// keeps the transition time.
pub fn set_condition(conditions: &mut Vec<Value>, mut fresh: Value) {
    if let Some(old) = find_condition(conditions, fresh["type"].as_str().unwrap_or_default()) {
        if old.get("status") == fresh.get("status") && old.get("reason") == fresh.get("reason") {
            return;
        }
        if old.get("status") == fresh.get("status") {
            fresh["lastTransitionTime"] = old["lastTransitionTime"].clone();
        }
    }
    let type_ = fresh["type"].clone();
    conditions.retain(|c| c.get("type") != Some(&type_));
    conditions.push(fresh);
}

fn last_progress(conditions: &[Value]) -> Option<Timestamp> {
    find_condition(conditions, "Progressing")
        .and_then(|c| c.get("lastUpdateTime"))
        .and_then(|t| t.as_str())
        .and_then(|t| t.parse().ok())
}

/// No progress within the deadline since the last progress (upstream `DeploymentTimedOut`).
pub fn timed_out(conditions: &[Value], deadline_seconds: i32, now: Timestamp) -> bool {
    if progressing_reason(conditions).as_deref() == Some("ProgressDeadlineExceeded") {
        return true;
    }
    if progressing_reason(conditions).as_deref() == Some("NewReplicaSetAvailable") {
        return false;
    }
    last_progress(conditions)
        .is_some_and(|last| last + SignedDuration::from_secs(deadline_seconds.into()) < now)
}

fn time_to_deadline(conditions: &[Value], deadline_seconds: i32, now: Timestamp) -> Duration {
    let Some(last) = last_progress(conditions) else {
        return Duration::from_secs(deadline_seconds.max(1).unsigned_abs().into());
    };
    let at = last + SignedDuration::from_secs(deadline_seconds.into());
    if at <= now {
        // Already past: look again later in case progress resumes.
        Duration::from_secs(30)
    } else {
        at.duration_since(now).unsigned_abs() + Duration::from_secs(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::common::tests::labels;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, ReplicaSetStatus};
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels(&[("app", "web")])),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn fnv32a_matches_the_reference_vectors() {
        assert_eq!(fnv32a(b""), 0x811c_9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c_292c);
        assert_eq!(fnv32a(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn safe_encoding_uses_only_the_vowel_free_alphabet() {
        let encoded = safe_encode("1234567890");
        assert_eq!(encoded.len(), 10);
        assert!(encoded
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        // '0' is byte 48, 48 % 27 = 21 → '4'.
        assert_eq!(safe_encode("0"), "4");
    }

    #[test]
    fn the_template_hash_is_stable_and_changes_with_the_template_or_collisions() {
        let a = pod_template_hash(&template("nginx:1"), None).unwrap();
        assert_eq!(a, pod_template_hash(&template("nginx:1"), None).unwrap());
        assert_ne!(a, pod_template_hash(&template("nginx:2"), None).unwrap());
        assert_ne!(a, pod_template_hash(&template("nginx:1"), Some(1)).unwrap());
        assert!(a.len() <= 10 && !a.is_empty());
    }

    #[test]
    fn templates_compare_equal_when_only_the_hash_label_differs() {
        let mut hashed = template("nginx:1");
        hashed
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(TEMPLATE_HASH.into(), "abc".into());
        assert!(templates_equal_ignoring_hash(&hashed, &template("nginx:1")));
        assert!(!templates_equal_ignoring_hash(
            &hashed,
            &template("nginx:2")
        ));
    }

    #[test]
    fn percentages_round_surge_up_and_unavailable_down() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(resolve_fenceposts(&pct("25%"), &pct("25%"), 10), (3, 2));
        assert_eq!(resolve_fenceposts(&pct("25%"), &pct("25%"), 3), (1, 0));
        assert_eq!(
            resolve_fenceposts(&IntOrString::Int(0), &IntOrString::Int(0), 3),
            (0, 1)
        );
        assert_eq!(
            resolve_fenceposts(&IntOrString::Int(2), &pct("100%"), 4),
            (2, 4)
        );
    }

    #[test]
    fn the_new_replica_set_grows_only_as_far_as_the_surge_allows() {
        // 3 desired, surge 1, old has 3: new may have 1.
        assert_eq!(new_rs_replicas(3, 1, 3, 0), 1);
        // Already at the ceiling: no growth.
        assert_eq!(new_rs_replicas(3, 1, 4, 1), 1);
        // Old scaled down to 1: new can go to 3 but not beyond desired.
        assert_eq!(new_rs_replicas(3, 1, 2, 1), 3);
        assert_eq!(new_rs_replicas(3, 5, 0, 0), 3);
    }

    #[test]
    fn old_replica_sets_shrink_unhealthy_first_then_within_max_unavailable() {
        // 3 desired, max unavailable 1, new has 1 not yet available, old 3 all available:
        // 4 pods, at least 2 must stay available, 1 new unavailable → 1 old may go.
        assert_eq!(old_scale_down(3, 1, (1, 0), &[(3, 3)]), vec![2]);
        // Nothing available: only as many unhealthy old pods go as max unavailable allows.
        assert_eq!(old_scale_down(3, 1, (1, 0), &[(3, 0)]), vec![2]);
        assert_eq!(old_scale_down(3, 3, (1, 0), &[(3, 0)]), vec![0]);
        // New fully available: old all go.
        assert_eq!(old_scale_down(3, 0, (3, 3), &[(3, 3)]), vec![0]);
        // Oldest first.
        assert_eq!(old_scale_down(4, 0, (4, 4), &[(2, 2), (2, 2)]), vec![0, 0]);
        assert_eq!(old_scale_down(4, 1, (2, 1), &[(1, 1), (2, 2)]), vec![0, 2]);
    }

    #[test]
    fn with_max_unavailable_zero_no_available_old_pod_goes_before_a_new_one_is_ready() {
        assert_eq!(old_scale_down(3, 0, (1, 0), &[(3, 3)]), vec![3]);
        assert_eq!(old_scale_down(3, 0, (1, 1), &[(3, 3)]), vec![2]);
    }

    #[test]
    fn a_resize_goes_to_the_only_active_replica_set() {
        assert_eq!(proportional_sizes(&[0, 3], Some(1), 5, 1), vec![0, 5]);
        assert_eq!(proportional_sizes(&[0, 0], Some(0), 2, 1), vec![2, 0]);
    }

    #[test]
    fn a_resize_mid_rollout_is_spread_in_proportion() {
        // 10 desired became 20 with surge 3; sizes 8 and 5 (13 = 10 + 3) grow to 23.
        let out = proportional_sizes(&[8, 5], Some(1), 20, 3);
        assert_eq!(out.iter().sum::<i32>(), 23);
        assert!(out[0] > 8 && out[1] > 5);
        let down = proportional_sizes(&[8, 5], Some(1), 5, 3);
        assert_eq!(down.iter().sum::<i32>(), 8);
    }

    #[test]
    fn only_empty_replica_sets_beyond_the_history_limit_are_deleted_oldest_first() {
        let rs = |rev: i64, replicas: i32| ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("rs{rev}")),
                annotations: Some(labels(&[(REVISION, &rev.to_string())])),
                generation: Some(1),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas,
                observed_generation: Some(1),
                ..Default::default()
            }),
        };
        let (a, b, c) = (rs(3, 0), rs(1, 0), rs(2, 1));
        let doomed = history_to_delete(&[&a, &b, &c], 1);
        let names: Vec<_> = doomed
            .iter()
            .map(|r| r.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["rs1", "rs3"]);
        assert!(history_to_delete(&[&a, &b, &c], 3).is_empty());
    }

    #[test]
    fn a_new_replica_set_carries_the_hash_in_name_selector_and_pod_labels() {
        let d = Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("d1".into()),
                annotations: Some(labels(&[
                    ("kubernetes.io/change-cause", "v2"),
                    (LAST_APPLIED, "{}"),
                ])),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(3),
                selector: LabelSelector {
                    match_labels: Some(labels(&[("app", "web")])),
                    match_expressions: None,
                },
                template: template("nginx:1"),
                ..Default::default()
            }),
            status: None,
        };
        let rs = new_replica_set(&d, "abc12", 4, 1, 1);
        assert_eq!(rs.metadata.name.as_deref(), Some("web-abc12"));
        let spec = rs.spec.clone().unwrap();
        assert_eq!(
            spec.selector.match_labels,
            Some(labels(&[("app", "web"), (TEMPLATE_HASH, "abc12")]))
        );
        let pod_labels = spec.template.unwrap().metadata.unwrap().labels.unwrap();
        assert_eq!(
            pod_labels.get(TEMPLATE_HASH).map(String::as_str),
            Some("abc12")
        );
        let annotations = rs.metadata.annotations.clone().unwrap();
        assert_eq!(annotations.get(REVISION).map(String::as_str), Some("4"));
        assert_eq!(
            annotations.get(DESIRED_REPLICAS).map(String::as_str),
            Some("3")
        );
        assert_eq!(annotations.get(MAX_REPLICAS).map(String::as_str), Some("4"));
        assert_eq!(
            annotations
                .get("kubernetes.io/change-cause")
                .map(String::as_str),
            Some("v2")
        );
        assert!(!annotations.contains_key(LAST_APPLIED));
        assert!(rs_template_matches(&rs, &template("nginx:1")));
    }

    #[test]
    fn a_condition_with_the_same_reason_keeps_its_times() {
        let mut conditions = vec![json!({"type": "Available", "status": "True",
            "reason": "MinimumReplicasAvailable", "lastTransitionTime": "t0", "lastUpdateTime": "t0"})];
        set_condition(
            &mut conditions,
            condition("Available", "True", "MinimumReplicasAvailable", "m"),
        );
        assert_eq!(conditions[0]["lastTransitionTime"], "t0");
        set_condition(
            &mut conditions,
            condition("Available", "False", "MinimumReplicasUnavailable", "m"),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0]["status"], "False");
        assert_ne!(conditions[0]["lastTransitionTime"], "t0");
    }

    #[test]
    fn a_rollout_without_progress_past_the_deadline_times_out() {
        let now = Timestamp::now();
        let long_ago = (now - SignedDuration::from_secs(700)).to_string();
        let conditions = vec![json!({"type": "Progressing", "status": "True",
            "reason": "ReplicaSetUpdated", "lastUpdateTime": long_ago})];
        assert!(timed_out(&conditions, 600, now));
        assert!(!timed_out(&conditions, 800, now));
    }
}
