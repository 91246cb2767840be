//! Node-pressure eviction (upstream's `pkg/kubelet/eviction`): every monitoring interval the
//! node's memory, disk and task ids are measured against the configured thresholds; the node
//! reports MemoryPressure, DiskPressure and PIDPressure (and new pods are refused under them,
//! see [`super::admit`]); when a threshold is met, disk is first relieved by deleting unused
//! images, then one pod is evicted per interval, in upstream's order. The manager also
//! runs periodic image garbage collection and reports the node's images, since it holds the
//! image records both need.
//!
//! Eviction itself is done by the pod's worker (so no other step of that pod runs at the same
//! time): the manager only asks for it through [`Evictions`].
//!
//! - [`thresholds`]: signals, limits, grace and transition periods.
//! - [`rank`]: which pod goes first, and its message.
//! - [`usage`]: task ids and per-pod disk use.
//! - [`requests`]: the hand-over of a chosen pod to its worker.

pub mod rank;
mod requests;
pub mod thresholds;
pub mod usage;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use serde_json::{json, Value};

use super::image_gc::{self, ImageGc, StoredImage};
use super::sync::Ctx;
use crate::runtime::ContainerRuntime;
use rank::Candidate;
pub use requests::Evictions;
use thresholds::{
    Condition, Observation, Observations, Resource, Signal, Threshold, Tracker, Verdict,
};

/// Upstream's `status.reason` of an evicted pod, and of one refused under pressure.
pub const REASON: &str = "Evicted";

/// Upstream's `nodeStatusMaxImages`.
const MAX_IMAGES_IN_STATUS: usize = 50;
/// Conditions are re-posted this often even when nothing changed (their heartbeat).
const REPORT_EVERY: Duration = Duration::from_secs(60);
/// The longest the manager waits for an evicted pod to be stopped (upstream's
/// `podCleanupTimeout`).
const POD_CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

/// What the manager is told by the config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub thresholds: Vec<Threshold>,
    pub transition: Duration,
    pub interval: Duration,
    pub image_gc: image_gc::Policy,
}

impl Settings {
    pub fn from_config(
        config: &crate::config::Config,
    ) -> Result<Settings, thresholds::ThresholdError> {
        Ok(Settings {
            thresholds: thresholds::from_config(&config.eviction)?,
            transition: Duration::from_secs(config.eviction.pressure_transition_period_seconds),
            // Zero would spin.
            interval: Duration::from_secs(config.eviction.monitoring_interval_seconds.max(1)),
            image_gc: image_gc::Policy::from_config(&config.images),
        })
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings::from_config(&crate::config::Config::default())
            .unwrap_or_else(|_| unreachable!("the default thresholds parse"))
    }
}

/// Whether the API already records `pod` as evicted (by us, before a restart, say).
pub fn is_evicted(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Failed") && s.reason.as_deref() == Some(REASON)
    })
}

/// Runs until the agent ends.
pub async fn run(ctx: Arc<Ctx>) {
    let settings = ctx.config.pressure.clone();
    let mut manager = Manager {
        tracker: Tracker::default(),
        gc: ImageGc::new(settings.image_gc),
        last_gc: None,
        last_report: None,
        settings,
    };
    loop {
        match manager.round(&ctx).await {
            // One pod per round: the next round judges the node once this one is stopped, so
            // it sees what the eviction freed instead of evicting more for the same shortage.
            Ok(Some(uid)) => {
                let carried_out = ctx.evictions.wait_carried_out(&uid);
                if tokio::time::timeout(POD_CLEANUP_TIMEOUT, carried_out)
                    .await
                    .is_err()
                {
                    tracing::warn!(pod = %uid, "evicted pod not stopped in time; going on");
                }
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "eviction round failed; retrying"),
        }
        tokio::time::sleep(manager.settings.interval).await;
    }
}

#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
    #[error("images: {0}")]
    Images(#[from] crate::runtime::images::ImageError),
    #[error("background task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

struct Manager {
    settings: Settings,
    tracker: Tracker,
    gc: ImageGc,
    last_gc: Option<Instant>,
    last_report: Option<Instant>,
}

/// The node's images and the ids of those its pods use.
struct ImageView {
    images: Vec<StoredImage>,
    in_use: HashSet<String>,
}

impl Manager {
    /// One look at the node; returns the uid of the pod it asked to evict, if any.
    async fn round(&mut self, ctx: &Arc<Ctx>) -> Result<Option<String>, RoundError> {
        let pods: Api<Pod> = Api::all(ctx.client.clone());
        let selector = format!("spec.nodeName={}", ctx.config.node_name);
        let pods = pods
            .list(&ListParams::default().fields(&selector))
            .await?
            .items;
        let mut view = image_view(ctx, &pods).await?;
        let now = Instant::now();
        self.gc.detect(&view.images, &view.in_use, now);
        if self
            .last_gc
            .is_none_or(|at| at.elapsed() >= image_gc::GC_PERIOD)
        {
            self.last_gc = Some(now);
            if self.collect_images(ctx, &view).await? {
                view = image_view(ctx, &pods).await?;
            }
        }

        let observations = observe(&ctx.config.data_dir).await?;
        let verdict = self.tracker.judge(
            &self.settings.thresholds,
            &observations,
            now,
            self.settings.transition,
        );
        ctx.admission.set_pressure(verdict.pressure.clone());
        self.report(ctx, &verdict, &view.images).await;
        if verdict.met.is_empty() {
            return Ok(None);
        }
        let mut met = verdict.met;
        let mut observations = observations;
        // Disk first tries to help itself: unused images go before any pod does.
        if met.iter().any(|t| t.signal.image_gc_helps()) {
            let (store, images, in_use) =
                (ctx.images.clone(), view.images.clone(), view.in_use.clone());
            let mut gc = std::mem::replace(&mut self.gc, ImageGc::new(self.settings.image_gc));
            let (gc, freed) = tokio::task::spawn_blocking(move || {
                let freed = gc.free(&store, &images, &in_use, u64::MAX, Instant::now());
                (gc, freed)
            })
            .await?;
            self.gc = gc;
            if !freed?.deleted.is_empty() {
                observations = observe(&ctx.config.data_dir).await?;
                met.retain(|t| observations.get(&t.signal).is_some_and(|o| t.crossed_by(o)));
                if met.is_empty() {
                    tracing::info!("image garbage collection relieved the disk pressure");
                    return Ok(None);
                }
            }
        }
        Ok(self.evict_one(ctx, &pods, &met, &observations).await)
    }

    /// Periodic image garbage collection; true when images were deleted.
    async fn collect_images(
        &mut self,
        ctx: &Arc<Ctx>,
        view: &ImageView,
    ) -> Result<bool, RoundError> {
        let root = ctx.images.root().to_path_buf();
        let Some((capacity, available, _, _)) =
            tokio::task::spawn_blocking(move || image_gc::filesystem_stats(&root)).await?
        else {
            return Ok(false);
        };
        let Some(wanted) = self.gc.amount_to_free(capacity, available) else {
            return Ok(false);
        };
        let (store, images, in_use) =
            (ctx.images.clone(), view.images.clone(), view.in_use.clone());
        let mut gc = std::mem::replace(&mut self.gc, ImageGc::new(self.settings.image_gc));
        let (gc, outcome) = tokio::task::spawn_blocking(move || {
            let outcome = gc.free(&store, &images, &in_use, wanted, Instant::now());
            (gc, outcome)
        })
        .await?;
        self.gc = gc;
        let outcome = outcome?;
        if outcome.freed < wanted {
            let note = format!(
                "Failed to garbage collect required amount of images. Attempted to free {wanted} bytes, but only found {} bytes eligible to free.",
                outcome.freed
            );
            node_event(ctx, "FreeDiskSpaceFailed", note).await;
        }
        Ok(!outcome.deleted.is_empty())
    }

    /// Evicts the first pod in upstream's order for the resource the first met threshold is
    /// about (memory before disk, as upstream ranks signals); returns its uid.
    async fn evict_one(
        &self,
        ctx: &Arc<Ctx>,
        pods: &[Pod],
        met: &[Threshold],
        observations: &Observations,
    ) -> Option<String> {
        let resource = met.iter().map(|t| t.signal).min().map(Signal::resource)?;
        let pods: Vec<&Pod> = pods.iter().filter(|p| evictable(ctx, p)).collect();
        let usage = match resource {
            Resource::Memory => memory_usage().await,
            Resource::Pids => tokio::task::spawn_blocking(usage::pod_tasks)
                .await
                .unwrap_or_default()
                .into_iter()
                .collect(),
            Resource::EphemeralStorage | Resource::Inodes => disk_usage(ctx, &pods, resource).await,
        };
        let mut candidates: Vec<Candidate> = pods
            .into_iter()
            .map(|p| Candidate {
                usage: p
                    .metadata
                    .uid
                    .as_ref()
                    .and_then(|uid| usage.get(uid))
                    .cloned()
                    .unwrap_or_default(),
                pod: p.clone(),
            })
            .collect();
        rank::rank(&mut candidates, resource);
        let Some(victim) = candidates.first() else {
            tracing::debug!(
                resource = resource.name(),
                "under pressure, but no pod may be evicted"
            );
            return None;
        };
        let message = rank::message(resource, met, observations, victim);
        let uid = victim.pod.metadata.uid.clone().unwrap_or_default();
        tracing::info!(
            namespace = victim.pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod = victim.pod.metadata.name.as_deref().unwrap_or_default(),
            %message,
            "evicting a pod under node pressure"
        );
        ctx.evictions.request(&uid, message);
        Some(uid)
    }

    /// Posts the pressure conditions and the image list when they changed, and at least every
    /// [`REPORT_EVERY`].
    async fn report(&mut self, ctx: &Arc<Ctx>, verdict: &Verdict, images: &[StoredImage]) {
        let nodes: Api<Node> = Api::all(ctx.client.clone());
        let node = match nodes.get(&ctx.config.node_name).await {
            Ok(node) => node,
            Err(error) => {
                tracing::debug!(%error, "cannot read the node for its pressure conditions");
                return;
            }
        };
        let status = node.status.unwrap_or_default();
        let current = status.conditions.unwrap_or_default();
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
        let mut changed = false;
        let conditions: Vec<Value> = Condition::ALL
            .into_iter()
            .map(|condition| {
                let pressure = verdict.has(condition);
                let type_ = condition.type_name();
                let (reason, message) = condition_text(condition, pressure);
                let status = if pressure { "True" } else { "False" };
                let old = current.iter().find(|c| c.type_ == type_);
                let same =
                    old.is_some_and(|c| c.status == status && c.reason.as_deref() == Some(reason));
                changed |= !same;
                let since = match old {
                    Some(c) if c.status == status => c.last_transition_time.clone(),
                    _ => None,
                };
                json!({
                    "type": type_,
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": since.unwrap_or_else(|| now.clone()),
                })
            })
            .collect();
        let images = node_images(images);
        let old_images =
            serde_json::to_value(status.images.unwrap_or_default()).unwrap_or(Value::Null);
        changed |= old_images != images;
        if !changed
            && self
                .last_report
                .is_some_and(|at| at.elapsed() < REPORT_EVERY)
        {
            return;
        }
        // Strategic: conditions merge by type, so the heartbeat's own conditions stay.
        let patch = json!({"status": {"conditions": conditions, "images": images}});
        match nodes
            .patch_status(
                &ctx.config.node_name,
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
        {
            Ok(_) => self.last_report = Some(Instant::now()),
            Err(error) => tracing::warn!(%error, "cannot post the node's pressure conditions"),
        }
    }
}

fn condition_text(condition: Condition, pressure: bool) -> (&'static str, &'static str) {
    match (condition, pressure) {
        (Condition::MemoryPressure, true) => (
            "KubeletHasInsufficientMemory",
            "kubelet has insufficient memory available",
        ),
        (Condition::MemoryPressure, false) => (
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        (Condition::DiskPressure, true) => ("KubeletHasDiskPressure", "kubelet has disk pressure"),
        (Condition::DiskPressure, false) => {
            ("KubeletHasNoDiskPressure", "kubelet has no disk pressure")
        }
        (Condition::PidPressure, true) => (
            "KubeletHasInsufficientPID",
            "kubelet has insufficient PID available",
        ),
        (Condition::PidPressure, false) => (
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
    }
}

/// `status.images`: biggest first, at most 50, each with its digests then its tags.
fn node_images(images: &[StoredImage]) -> Value {
    let mut sorted: Vec<&StoredImage> = images.iter().collect();
    sorted.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.id.cmp(&b.id)));
    Value::Array(
        sorted
            .into_iter()
            .take(MAX_IMAGES_IN_STATUS)
            .map(|i| {
                let names: Vec<&String> = i.digests.iter().chain(&i.references).collect();
                json!({"names": names, "sizeBytes": i.size})
            })
            .collect(),
    )
}

/// A pod the manager may pick: running here, not critical, not already on its way out.
fn evictable(ctx: &Ctx, pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    !matches!(phase, Some("Succeeded" | "Failed"))
        && pod.metadata.deletion_timestamp.is_none()
        && !rank::is_critical(pod)
        && ctx.evictions.requested(uid).is_none()
}

async fn image_view(ctx: &Ctx, pods: &[Pod]) -> Result<ImageView, RoundError> {
    let store = ctx.images.clone();
    let references: HashSet<String> = pods
        .iter()
        .filter(|p| !is_evicted(p))
        .flat_map(|p| p.spec.iter())
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .filter_map(|c| c.image.clone())
                .chain(
                    s.ephemeral_containers
                        .iter()
                        .flatten()
                        .filter_map(|c| c.image.clone()),
                )
        })
        .collect();
    let view = tokio::task::spawn_blocking(move || {
        let images = image_gc::by_id(store.list()?);
        let mut in_use = HashSet::new();
        for reference in &references {
            // A name that does not parse or is not here uses nothing.
            if let Ok(Some(image)) = store.get(reference) {
                in_use.insert(image.id);
            }
        }
        Ok::<_, RoundError>(ImageView { images, in_use })
    })
    .await??;
    Ok(view)
}

/// The signals now: memory from `/proc/meminfo` (capacity minus working set, as upstream
/// computes it from the root cgroup), disk from the filesystems of the data and image dirs.
async fn observe(data_dir: &Path) -> Result<Observations, RoundError> {
    let data_dir = data_dir.to_path_buf();
    Ok(tokio::task::spawn_blocking(move || {
        let mut observations = BTreeMap::new();
        if let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") {
            let total = meminfo_kib(&meminfo, "MemTotal").map(|k| k * 1024);
            let working = crate::runtime::stats::node_working_set(&meminfo);
            if let (Some(capacity), Some(working)) = (total, working) {
                observations.insert(
                    Signal::MemoryAvailable,
                    Observation {
                        available: capacity.saturating_sub(working),
                        capacity,
                    },
                );
            }
        }
        let images = data_dir.join("images");
        for (dir, bytes, inodes) in [
            (&data_dir, Signal::NodeFsAvailable, Signal::NodeFsInodesFree),
            (&images, Signal::ImageFsAvailable, Signal::ImageFsInodesFree),
        ] {
            if let Some((capacity, available, files, files_free)) = image_gc::filesystem_stats(dir)
            {
                observations.insert(
                    bytes,
                    Observation {
                        available,
                        capacity,
                    },
                );
                observations.insert(
                    inodes,
                    Observation {
                        available: files_free,
                        capacity: files,
                    },
                );
            }
        }
        if let Some(pids) = usage::pid_observation() {
            observations.insert(Signal::PidAvailable, pids);
        }
        observations
    })
    .await?)
}

/// Disk bytes (or inodes) per pod uid and container of `pods`, walked now. A pod's
/// disk-backed emptyDirs count under [`usage::POD_VOLUMES`].
async fn disk_usage(
    ctx: &Ctx,
    pods: &[&Pod],
    resource: Resource,
) -> HashMap<String, BTreeMap<String, u64>> {
    let layouts: Vec<(String, usage::PodDisk)> = pods
        .iter()
        .filter_map(|p| Some((p.metadata.uid.clone()?, pod_disk(ctx, p))))
        .collect();
    let measured = tokio::task::spawn_blocking(move || {
        layouts
            .into_iter()
            .map(|(uid, disk)| (uid, disk.measure()))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    measured
        .into_iter()
        .map(|(uid, per_container)| {
            let counted = per_container
                .into_iter()
                .map(|(name, used)| match resource {
                    Resource::Inodes => (name, used.inodes),
                    _ => (name, used.bytes),
                })
                .collect();
            (uid, counted)
        })
        .collect()
}

/// Where `pod` keeps its ephemeral storage on this node: each container's writable layer
/// and logs, and its disk emptyDirs.
fn pod_disk(ctx: &Ctx, pod: &Pod) -> usage::PodDisk {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let paths = ctx.runtime.pod_paths(uid);
    let logs = ctx.config.data_dir.join("logs").join(format!(
        "{}_{}_{uid}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default(),
    ));
    let spec = pod.spec.as_ref();
    let containers = spec
        .into_iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .map(|c| {
            let dirs = vec![paths.writable_layer(&c.name), logs.join(&c.name)];
            (c.name.clone(), dirs)
        })
        .collect();
    let volumes = spec
        .into_iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter(|v| {
            v.empty_dir
                .as_ref()
                .is_some_and(|e| e.medium.as_deref() != Some("Memory"))
        })
        .map(|v| super::volumes::volume_dir(&paths.dir, &v.name))
        .collect();
    usage::PodDisk {
        containers,
        volumes,
    }
}

fn meminfo_kib(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Memory working set per pod uid and container, read from the cgroups now.
async fn memory_usage() -> HashMap<String, BTreeMap<String, u64>> {
    let round = tokio::task::spawn_blocking(|| {
        crate::metrics::sample(crate::runtime::stats::Hierarchies::detect().as_ref())
    })
    .await
    .unwrap_or_default();
    round
        .pods
        .into_iter()
        .map(|(uid, containers)| {
            let usage = containers
                .into_iter()
                .map(|(name, u)| (name, u.memory_working_set))
                .collect();
            (uid, usage)
        })
        .collect()
}

async fn node_event(ctx: &Ctx, reason: &str, note: String) {
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(ctx.config.node_name.clone()),
        uid: Some(ctx.config.node_name.clone()),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note),
        action: reason.into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &reference).await {
        tracing::debug!(%error, reason, "cannot record event");
    }
}

/// Stops an evicted pod's containers at once and records it as Failed/Evicted: the worker
/// calls this, so nothing else happens to the pod meanwhile. Its object stays, as upstream's,
/// until someone (its controller, pod GC) deletes it.
pub async fn evict(ctx: &Ctx, pod: &Pod, message: &str) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut stopped: HashMap<String, Value> = HashMap::new();
    if let Ok(state) = ctx.runtime.pod_state(&uid).await {
        for c in &state.containers {
            if c.status == crate::runtime::ContainerStatus::Running {
                let _ = ctx
                    .runtime
                    .kill_container(&uid, &c.name, libc::SIGKILL)
                    .await;
            }
            stopped.insert(
                c.name.clone(),
                json!({"terminated": {
                    "exitCode": 137,
                    "reason": "Error",
                    "containerID": format!("berth://{}", c.id),
                    "startedAt": c.started_at,
                    "finishedAt": jiff::Timestamp::now().to_string(),
                }}),
            );
        }
    }
    super::sync::release_pod(ctx, &uid).await;
    ctx.event(pod, true, "Evicted", message.to_string()).await;

    let now = jiff::Timestamp::now().to_string();
    let status = pod.status.clone().unwrap_or_default();
    let mut conditions: Vec<Value> = status
        .conditions
        .iter()
        .flatten()
        .filter(|c| {
            !matches!(
                c.type_.as_str(),
                "Ready" | "ContainersReady" | "DisruptionTarget"
            )
        })
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    conditions.push(json!({"type": "DisruptionTarget", "status": "True",
        "reason": "TerminationByKubelet", "message": message, "lastTransitionTime": now}));
    for type_ in ["Ready", "ContainersReady"] {
        conditions.push(
            json!({"type": type_, "status": "False", "reason": "PodFailed",
            "lastTransitionTime": now}),
        );
    }
    let container_statuses: Vec<Value> = status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|s| {
            let mut v = serde_json::to_value(s).ok()?;
            v["ready"] = json!(false);
            v["started"] = json!(false);
            if let Some(state) = stopped.get(&s.name) {
                v["state"] = state.clone();
            }
            Some(v)
        })
        .collect();
    let patch = json!({"status": {
        "phase": "Failed",
        "reason": "Evicted",
        "message": message,
        "conditions": conditions,
        "containerStatuses": container_statuses,
    }});
    let api: Api<Pod> = Api::namespaced(
        ctx.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    if let Err(error) = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::warn!(pod = %name, %error, "cannot record the pod's eviction");
    }
    ctx.evictions.carried_out(&uid);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_use_upstreams_reasons() {
        assert_eq!(
            condition_text(Condition::MemoryPressure, true).0,
            "KubeletHasInsufficientMemory"
        );
        assert_eq!(
            condition_text(Condition::DiskPressure, true).0,
            "KubeletHasDiskPressure"
        );
        assert_eq!(
            condition_text(Condition::DiskPressure, false).0,
            "KubeletHasNoDiskPressure"
        );
        assert_eq!(
            condition_text(Condition::PidPressure, true),
            (
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available"
            )
        );
    }

    #[test]
    fn node_images_list_the_biggest_first_with_digests_before_tags() {
        let image = |id: &str, size| StoredImage {
            id: id.into(),
            references: vec![format!("docker.io/library/{id}:latest")],
            digests: vec![format!("docker.io/library/{id}@sha256:{id}")],
            size,
        };
        let images = node_images(&[image("small", 1), image("big", 9)]);
        assert_eq!(images[0]["sizeBytes"], 9);
        assert_eq!(
            images[0]["names"],
            json!([
                "docker.io/library/big@sha256:big",
                "docker.io/library/big:latest"
            ])
        );
        assert_eq!(images.as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn only_failed_pods_with_reason_evicted_count_as_evicted() {
        let pod = |phase: &str, reason: Option<&str>| -> Pod {
            serde_json::from_value(json!({"status": {"phase": phase, "reason": reason}})).unwrap()
        };
        assert!(is_evicted(&pod("Failed", Some("Evicted"))));
        assert!(!is_evicted(&pod("Failed", None)));
        assert!(!is_evicted(&pod("Running", None)));
    }
}
