//! `sync_pod`: makes one pod's containers what its spec asks for, one step at a time, and
//! reports its status; `terminate_pod`: the graceful stop of a deleted pod. Both run only in
//! the pod's own worker, so calls for one pod never overlap.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::Resource;
use serde_json::{json, Value};

use super::backoff::Backoff;
use super::env::{self, PodFacts, Sources};
use super::probes::{self, ProbeKind, ProbeState};
use super::spec::{self, SpecInputs};
use super::status::{self, ContainerView, PodView, State};
use super::volumes;
use super::AgentConfig;
use crate::network::{NodeNetwork, PodNetwork};
use crate::runtime::images::{ImageStore, RegistryAuth};
use crate::runtime::{
    cgroups, ContainerRuntime, ContainerState, ContainerStatus, MountKind, MountSpec, PodChanges,
    PodShimConfig, RuntimeError, ShimRuntime,
};

/// How often a pod with live containers is looked at when its shim cannot report exits
/// itself (no subscription), and how soon a just-started container is looked at again.
const POLL: Duration = Duration::from_secs(1);
/// How often a pod whose shim reports its exits is looked at anyway: the safety net should a
/// notification be lost.
const RESYNC: Duration = Duration::from_secs(30);
/// How soon a pod whose setup failed is tried again.
const RETRY: Duration = Duration::from_secs(5);
/// How long an idle pod (nothing running, nothing to restart) sleeps unless its object changes.
const IDLE: Duration = Duration::from_secs(60);
const DEFAULT_GRACE_SECONDS: i64 = 30;
/// How often a running pod's configMap, secret, downwardAPI and projected volumes are compared
/// with their sources (kubelet: its sync period plus a cache TTL, about a minute at most).
/// Every pod has one (its service account token), so this sets the idle pod's pace.
const VOLUME_REFRESH: Duration = Duration::from_secs(30);

/// What every pod worker shares.
pub struct Ctx {
    pub client: kube::Client,
    pub runtime: ShimRuntime,
    pub images: ImageStore,
    pub network: NodeNetwork,
    pub config: AgentConfig,
    pub recorder: Recorder,
    /// Pods the eviction manager wants gone.
    pub evictions: super::eviction::Evictions,
    /// Whether new pods may start (node pressure, resources).
    pub admission: super::admit::Admission,
}

impl Ctx {
    /// Records an event about `pod`; losing one is not worth failing a sync for.
    pub(super) async fn event(&self, pod: &Pod, warning: bool, reason: &str, note: String) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &pod.object_ref(&())).await {
            tracing::debug!(error = %e, reason, "cannot record event");
        }
    }

    fn log_dir(&self, pod: &Pod) -> PathBuf {
        self.config.data_dir.join("logs").join(format!(
            "{}_{}_{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default(),
            pod.metadata.uid.as_deref().unwrap_or_default()
        ))
    }
}

/// What the worker remembers about one container between syncs.
#[derive(Debug, Default)]
struct Tracked {
    restart_count: i32,
    backoff: Backoff,
    pull_backoff: Backoff,
    last_state: Option<State>,
    /// Why the container is not running although it should (pull or config errors, back-off).
    waiting: Option<State>,
    image: String,
    image_id: String,
    /// Id of the exited instance whose exit was already handled (event, back-off).
    exit_seen: Option<String>,
    readiness: ProbeState,
    liveness: ProbeState,
    startup: ProbeState,
}

/// One pod's worker state.
#[derive(Debug, Default)]
pub struct PodWorker {
    network: Option<PodNetwork>,
    shim_ready: bool,
    volumes: Option<HashMap<String, PathBuf>>,
    /// When the volumes were last compared with their sources.
    volumes_checked: Option<Instant>,
    tokens: super::tokens::TokenCache,
    containers: HashMap<String, Tracked>,
    seeded: bool,
    /// The shim's exit notifications; without them live containers are polled.
    changes: Option<PodChanges>,
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn restart_policy(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into())
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// A `lastState`/`state.terminated` JSON from the API back into a [`State`].
fn terminated_from_json(v: &Value) -> Option<State> {
    let t = v.get("terminated")?;
    let s = |k: &str| t.get(k).and_then(Value::as_str).map(str::to_string);
    Some(State::Terminated {
        exit_code: t.get("exitCode").and_then(Value::as_i64).unwrap_or(0) as i32,
        reason: s("reason").unwrap_or_default(),
        message: s("message"),
        started_at: s("startedAt"),
        finished_at: s("finishedAt"),
        container_id: s("containerID"),
    })
}

fn terminated_from_runtime(c: &ContainerState) -> State {
    let exit_code = c.exit_code.unwrap_or(-1);
    let reason = if c.oom_killed {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    State::Terminated {
        exit_code,
        reason: reason.into(),
        message: None,
        started_at: c.started_at.as_deref().map(status::k8s_time),
        finished_at: c.finished_at.as_deref().map(status::k8s_time),
        container_id: Some(format!("berth://{}", c.id)),
    }
}

/// Whether a container that exited with `code` runs again under `policy`.
fn should_restart(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

impl PodWorker {
    /// Takes restart counts, last states and images over from the status the API holds, so a
    /// restarted agent continues where the last one stopped.
    fn seed_from_status(&mut self, pod: &Pod) {
        self.seeded = true;
        let status = serde_json::to_value(&pod.status).unwrap_or(Value::Null);
        for key in ["initContainerStatuses", "containerStatuses"] {
            for cs in status
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(name) = cs.get("name").and_then(Value::as_str) else {
                    continue;
                };
                let t = self.containers.entry(name.to_string()).or_default();
                t.restart_count =
                    cs.get("restartCount").and_then(Value::as_i64).unwrap_or(0) as i32;
                t.last_state = cs.get("lastState").and_then(terminated_from_json);
                t.image = cs.get("image").and_then(Value::as_str).unwrap_or("").into();
                t.image_id = cs
                    .get("imageID")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .into();
                t.readiness
                    .seed_ready(cs.get("ready").and_then(Value::as_bool).unwrap_or(false));
            }
        }
    }

    /// One step towards the pod's spec; returns when to look again (unless the pod changes).
    pub async fn sync(&mut self, ctx: &Ctx, pod: &Pod) -> Duration {
        let uid = uid_of(pod);
        if !self.seeded {
            self.seed_from_status(pod);
        }
        let mut wake = IDLE;
        let mut setup_error = None;
        if let Err(e) = self.ensure_sandbox(ctx, pod).await {
            tracing::warn!(pod = %uid, error = %e, "pod sandbox setup failed");
            setup_error = Some(e);
            wake = RETRY;
        }
        if self.shim_ready && self.changes.is_none() {
            // Subscribed before the state is read, so no exit falls between the two. A shim
            // that cannot (started by an older berth) is polled instead.
            match ctx.runtime.watch_pod(&uid).await {
                Ok(changes) => self.changes = Some(changes),
                Err(e) => tracing::debug!(pod = %uid, error = %e, "shim reports no changes"),
            }
        }
        let observed: HashMap<String, ContainerState> = if self.shim_ready {
            match ctx.runtime.pod_state(&uid).await {
                Ok(state) => state
                    .containers
                    .into_iter()
                    .map(|c| (c.name.clone(), c))
                    .collect(),
                Err(e) => {
                    tracing::warn!(pod = %uid, error = %e, "cannot read pod state");
                    if matches!(e, RuntimeError::NoShim(_)) {
                        self.shim_ready = false;
                        self.changes = None;
                    }
                    return RETRY;
                }
            }
        } else {
            HashMap::new()
        };
        if setup_error.is_none() {
            wake = wake.min(self.refresh_volumes(ctx, pod).await);
            wake = wake.min(self.step(ctx, pod, &observed).await);
        }
        // Read again: containers may have been started by the step just taken.
        let observed = match (self.shim_ready, ctx.runtime.pod_state(&uid).await) {
            (true, Ok(state)) => state
                .containers
                .into_iter()
                .map(|c| (c.name.clone(), c))
                .collect(),
            _ => observed,
        };
        if observed
            .values()
            .any(|c| c.status != ContainerStatus::Exited)
        {
            wake = wake.min(self.live_poll());
        }
        self.write_status(ctx, pod, &observed).await;
        wake
    }

    /// Resolves when the shim reports a change (a container exited), or when its subscription
    /// ends (the shim is gone: the next sync finds out). Never resolves without a subscription.
    pub async fn shim_changed(&mut self) {
        match &mut self.changes {
            Some(changes) => {
                if !changes.changed().await {
                    self.changes = None;
                }
            }
            None => std::future::pending().await,
        }
    }

    /// When to look again at a pod with live containers and nothing else due.
    fn live_poll(&self) -> Duration {
        if self.changes.is_some() {
            RESYNC
        } else {
            POLL
        }
    }

    async fn ensure_sandbox(&mut self, ctx: &Ctx, pod: &Pod) -> anyhow::Result<()> {
        let uid = uid_of(pod);
        if self.network.is_none() && !host_network(pod) {
            // A shim that outlived an earlier berth still holds the pod's namespace: pin it
            // again from the shim rather than give the pod a fresh, empty one.
            if let Ok(state) = ctx.runtime.pod_state(&uid).await {
                ctx.network.repin_pod_netns(&uid, state.shim_pid)?;
            }
            self.network = Some(ctx.network.setup_pod(&uid).await?);
        }
        if !self.shim_ready {
            let config = PodShimConfig {
                pod_uid: uid.clone(),
                netns_path: self.network.as_ref().map(|n| n.netns_path.clone()),
                hostname: spec::hostname(pod),
                cgroup_parent: cgroups::pod_cgroup_parent(&uid),
                run_dir: None,
            };
            ctx.runtime.start_pod_shim(&config).await?;
            self.shim_ready = true;
        }
        if self.volumes.is_none() {
            self.tokens.refresh(&ctx.client, pod).await?;
            let mut sources = fetch_sources(ctx, pod, true).await?;
            sources.tokens = self.tokens.tokens();
            let pod_dir = ctx.runtime.pod_dir(&uid);
            let facts = self.facts(ctx);
            let owned_pod = pod.clone();
            let hosts =
                spec::hosts_file(pod, facts.pod_ip.as_deref(), &ctx.config.dns.cluster_domain);
            let resolv = spec::resolv_conf(pod, &ctx.config.dns);
            let hostname = format!("{}\n", spec::hostname(pod));
            let volumes = tokio::task::spawn_blocking(move || {
                let etc = pod_dir.join("etc");
                std::fs::create_dir_all(&etc)?;
                std::fs::write(etc.join("hosts"), hosts)?;
                std::fs::write(etc.join("resolv.conf"), resolv)?;
                std::fs::write(etc.join("hostname"), hostname)?;
                let v = volumes::prepare(&pod_dir, &owned_pod, &sources, &facts)?;
                anyhow::Ok(v)
            })
            .await??;
            self.volumes = Some(volumes);
            self.volumes_checked = Some(Instant::now());
        }
        Ok(())
    }

    /// Brings the atomic-writer volumes up to date with their sources when due, and rotates
    /// projected tokens; returns when to look again.
    async fn refresh_volumes(&mut self, ctx: &Ctx, pod: &Pod) -> Duration {
        let now = Instant::now();
        let next_token = self.tokens.next_refresh();
        let due = match self.volumes_checked {
            None => return IDLE,
            Some(_) if !volumes::has_updatable(pod) => return IDLE,
            Some(at) => now >= at + VOLUME_REFRESH || next_token.is_some_and(|t| now >= t),
        };
        if !due || pod.metadata.deletion_timestamp.is_some() {
            return self.volume_wake(self.volumes_checked.unwrap_or(now));
        }
        self.volumes_checked = Some(now);
        let uid = uid_of(pod);
        if let Err(e) = self.tokens.refresh(&ctx.client, pod).await {
            tracing::warn!(pod = %uid, error = %e, "cannot request service account token");
        }
        let mut sources = match fetch_sources(ctx, pod, true).await {
            Ok(sources) => sources,
            Err(e) => {
                tracing::debug!(pod = %uid, error = %e, "cannot read volume sources");
                return self.volume_wake(now);
            }
        };
        sources.tokens = self.tokens.tokens();
        let pod_dir = ctx.runtime.pod_dir(&uid);
        let facts = self.facts(ctx);
        let owned_pod = pod.clone();
        let written = tokio::task::spawn_blocking(move || {
            volumes::refresh(&pod_dir, &owned_pod, &sources, &facts)
        })
        .await;
        match written {
            Ok(Ok(names)) if !names.is_empty() => {
                tracing::debug!(pod = %uid, volumes = ?names, "volumes updated");
            }
            Ok(Err(e)) => tracing::warn!(pod = %uid, error = %e, "cannot update volumes"),
            _ => {}
        }
        self.volume_wake(now)
    }

    /// When the volumes checked at `checked` are due again (or a token is).
    fn volume_wake(&self, checked: Instant) -> Duration {
        let mut at = checked + VOLUME_REFRESH;
        if let Some(t) = self.tokens.next_refresh() {
            at = at.min(t);
        }
        at.saturating_duration_since(Instant::now()).max(POLL)
    }

    fn facts(&self, ctx: &Ctx) -> PodFacts {
        PodFacts {
            pod_ip: Some(match &self.network {
                Some(n) => n.ip.to_string(),
                None => ctx.config.host_ip.clone(),
            }),
            host_ip: Some(ctx.config.host_ip.clone()),
        }
    }

    /// Starts, restarts and probes containers; returns when to look again.
    async fn step(
        &mut self,
        ctx: &Ctx,
        pod: &Pod,
        observed: &HashMap<String, ContainerState>,
    ) -> Duration {
        let Some(spec) = pod.spec.as_ref() else {
            return IDLE;
        };
        let policy = restart_policy(pod);
        let now = Instant::now();
        let mut wake = IDLE;
        // Init containers, one at a time, in order.
        for c in spec.init_containers.iter().flatten() {
            match observed.get(&c.name) {
                None => {
                    wake = wake.min(self.start_or_wait(ctx, pod, c, now).await);
                    return wake;
                }
                Some(s) if s.status != ContainerStatus::Exited => {
                    return wake.min(self.live_poll())
                }
                Some(s) if s.exit_code == Some(0) => continue,
                Some(s) => {
                    if should_restart(&policy, s.exit_code.unwrap_or(-1)) {
                        wake = wake.min(self.restart_or_wait(ctx, pod, c, s, now).await);
                    } else {
                        self.note_exit(ctx, pod, c, s).await;
                    }
                    return wake;
                }
            }
        }
        for c in &spec.containers {
            match observed.get(&c.name) {
                None => wake = wake.min(self.start_or_wait(ctx, pod, c, now).await),
                Some(s) if s.status == ContainerStatus::Running => {
                    wake = wake.min(self.probe(ctx, pod, c, s).await);
                }
                Some(s) if s.status == ContainerStatus::Created => wake = wake.min(POLL),
                Some(s) => {
                    if should_restart(&policy, s.exit_code.unwrap_or(-1)) {
                        wake = wake.min(self.restart_or_wait(ctx, pod, c, s, now).await);
                    } else {
                        self.note_exit(ctx, pod, c, s).await;
                    }
                }
            }
        }
        // Debug containers start once the pod runs and are never restarted.
        for c in ephemeral_containers(pod) {
            match observed.get(&c.name) {
                None => wake = wake.min(self.start_or_wait(ctx, pod, &c, now).await),
                Some(s) if s.status == ContainerStatus::Exited => {
                    self.note_exit(ctx, pod, &c, s).await
                }
                Some(_) => {}
            }
        }
        wake
    }

    /// A container that has never run: start it unless its image pull is in back-off.
    async fn start_or_wait(
        &mut self,
        ctx: &Ctx,
        pod: &Pod,
        c: &Container,
        now: Instant,
    ) -> Duration {
        let remaining = self
            .containers
            .get(&c.name)
            .map(|t| t.pull_backoff.remaining(now))
            .unwrap_or_default();
        if !remaining.is_zero() {
            return remaining;
        }
        self.start(ctx, pod, c).await
    }

    /// An exited container that is to run again: now, or once its back-off has passed.
    async fn restart_or_wait(
        &mut self,
        ctx: &Ctx,
        pod: &Pod,
        c: &Container,
        s: &ContainerState,
        now: Instant,
    ) -> Duration {
        self.note_exit(ctx, pod, c, s).await;
        let t = self.containers.entry(c.name.clone()).or_default();
        let remaining = t.backoff.remaining(now);
        if !remaining.is_zero() {
            let message = format!(
                "back-off {}s restarting failed container={} pod={}_{}({})",
                t.backoff.current_delay().as_secs(),
                c.name,
                pod.metadata.name.as_deref().unwrap_or_default(),
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                uid_of(pod)
            );
            let newly = !matches!(&t.waiting, Some(State::Waiting { reason, .. }) if reason == "CrashLoopBackOff");
            t.waiting = Some(State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(message.clone()),
            });
            if newly {
                ctx.event(
                    pod,
                    true,
                    "BackOff",
                    format!(
                        "Back-off restarting failed container {} in pod {}",
                        c.name,
                        pod.metadata.name.as_deref().unwrap_or_default()
                    ),
                )
                .await;
            }
            return remaining;
        }
        t.backoff.started(now);
        t.last_state = Some(terminated_from_runtime(s));
        t.restart_count += 1;
        t.waiting = None;
        t.readiness = ProbeState::default();
        t.liveness = ProbeState::default();
        t.startup = ProbeState::default();
        self.start(ctx, pod, c).await
    }

    /// Records an exit once: its event.
    async fn note_exit(&mut self, ctx: &Ctx, pod: &Pod, c: &Container, s: &ContainerState) {
        let t = self.containers.entry(c.name.clone()).or_default();
        if t.exit_seen.as_deref() == Some(s.id.as_str()) {
            return;
        }
        t.exit_seen = Some(s.id.clone());
        if s.oom_killed {
            ctx.event(
                pod,
                true,
                "OOMKilling",
                format!("Container {} was OOM-killed", c.name),
            )
            .await;
        }
    }

    /// Pulls, creates and starts `c`. Failures become the container's waiting state.
    async fn start(&mut self, ctx: &Ctx, pod: &Pod, c: &Container) -> Duration {
        let uid = uid_of(pod);
        let image_name = c.image.clone().unwrap_or_default();
        let policy = spec::pull_policy(c);
        let auth = match pull_auth(ctx, pod).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(pod = %uid, error = %e, "cannot read image pull secrets");
                RegistryAuth::from_config(&ctx.config.registries)
            }
        };
        if policy != crate::runtime::images::PullPolicy::Never {
            ctx.event(
                pod,
                false,
                "Pulling",
                format!("Pulling image \"{image_name}\""),
            )
            .await;
        }
        let began = Instant::now();
        let image = match ctx.images.ensure(&image_name, policy, &auth).await {
            Ok((image, report)) => {
                let t = self.containers.entry(c.name.clone()).or_default();
                t.pull_backoff = Backoff::default();
                t.image = image.reference.clone();
                t.image_id = image.digest.clone();
                let took = began.elapsed().as_secs_f64();
                let note = match report {
                    Some(r) => format!(
                        "Successfully pulled image \"{image_name}\" in {took:.3}s. Image size: {} bytes.",
                        r.bytes
                    ),
                    None => format!("Container image \"{image_name}\" already present on machine"),
                };
                ctx.event(pod, false, "Pulled", note).await;
                image
            }
            Err(e) => {
                let t = self.containers.entry(c.name.clone()).or_default();
                let first = t.pull_backoff.remaining(Instant::now()).is_zero()
                    && !matches!(&t.waiting, Some(State::Waiting { reason, .. }) if reason == "ErrImagePull" || reason == "ImagePullBackOff");
                let delay = t.pull_backoff.started(Instant::now());
                t.waiting = Some(State::Waiting {
                    reason: if first {
                        "ErrImagePull"
                    } else {
                        "ImagePullBackOff"
                    }
                    .into(),
                    message: Some(e.to_string()),
                });
                ctx.event(
                    pod,
                    true,
                    "Failed",
                    format!("Failed to pull image \"{image_name}\": {e}"),
                )
                .await;
                return delay;
            }
        };
        match self.create_and_start(ctx, pod, c, &image).await {
            Ok(()) => {
                if let Some(t) = self.containers.get_mut(&c.name) {
                    t.waiting = None;
                }
                ctx.event(
                    pod,
                    false,
                    "Created",
                    format!("Created container: {}", c.name),
                )
                .await;
                ctx.event(
                    pod,
                    false,
                    "Started",
                    format!("Started container {}", c.name),
                )
                .await;
                POLL
            }
            Err((reason, message)) => {
                tracing::warn!(pod = %uid, container = %c.name, %message, "cannot start container");
                ctx.event(pod, true, "Failed", format!("Error: {message}"))
                    .await;
                let t = self.containers.entry(c.name.clone()).or_default();
                t.waiting = Some(State::Waiting {
                    reason: reason.into(),
                    message: Some(message),
                });
                RETRY
            }
        }
    }

    async fn create_and_start(
        &mut self,
        ctx: &Ctx,
        pod: &Pod,
        c: &Container,
        image: &crate::runtime::images::Image,
    ) -> Result<(), (&'static str, String)> {
        let uid = uid_of(pod);
        let config_err = |e: &dyn std::fmt::Display| ("CreateContainerConfigError", e.to_string());
        let sources = fetch_sources(ctx, pod, false)
            .await
            .map_err(|e| config_err(&e))?;
        let facts = self.facts(ctx);
        let env = env::resolve(pod, c, &sources, &facts).map_err(|e| config_err(&e))?;
        let volumes = self.volumes.clone().unwrap_or_default();
        let mut mounts = volumes::mounts_for(c, &volumes).map_err(|e| config_err(&e))?;
        let pod_dir = ctx.runtime.pod_dir(&uid);
        let etc = pod_dir.join("etc");
        let user_mounts: Vec<PathBuf> = mounts.iter().map(|m| m.destination.clone()).collect();
        let mut extra = vec![
            (etc.join("hostname"), "/etc/hostname"),
            (etc.join("hosts"), "/etc/hosts"),
            (etc.join("resolv.conf"), "/etc/resolv.conf"),
        ];
        if host_network(pod) {
            extra.retain(|(_, d)| *d != "/etc/hosts");
        }
        let termination = pod_dir.join("termination").join(&c.name);
        let termination_path = c
            .termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into());
        let term_for_blocking = termination.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(parent) = term_for_blocking.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&term_for_blocking, b"")
        })
        .await
        .map_err(|e| config_err(&e))?
        .map_err(|e| config_err(&e))?;
        for (source, dest) in extra {
            if !user_mounts.iter().any(|d| d == std::path::Path::new(dest)) {
                mounts.push(MountSpec {
                    source,
                    destination: PathBuf::from(dest),
                    kind: MountKind::Bind,
                    read_only: false,
                });
            }
        }
        mounts.push(MountSpec {
            source: termination,
            destination: PathBuf::from(termination_path),
            kind: MountKind::Bind,
            read_only: false,
        });
        let restart_count = self
            .containers
            .get(&c.name)
            .map(|t| t.restart_count)
            .unwrap_or(0);
        let log_path = ctx
            .log_dir(pod)
            .join(&c.name)
            .join(format!("{restart_count}.log"));
        let cgroup_parent = cgroups::pod_cgroup_parent(&uid);
        let seccomp = spec::seccomp(
            pod.spec.as_ref().unwrap_or(&Default::default()),
            c,
            &spec::seccomp_dir(&ctx.config.data_dir),
        )
        .map_err(|e| config_err(&e))?;
        let mut container_spec = spec::container_spec(
            pod,
            c,
            SpecInputs {
                image,
                env: &env,
                mounts,
                cgroup_parent: &cgroup_parent,
                log_path,
                seccomp,
            },
        );
        container_spec.pid_namespace = target_pid_namespace(ctx, pod, &c.name).await;
        // A previous instance of this container (a restart) goes first: names are unique.
        let _ = ctx.runtime.remove_container(&uid, &c.name).await;
        let runtime_err = |e: RuntimeError| ("CreateContainerError", e.to_string());
        ctx.runtime
            .create_container(&uid, container_spec)
            .await
            .map_err(runtime_err)?;
        ctx.runtime
            .start_container(&uid, &c.name)
            .await
            .map_err(|e| ("RunContainerError", e.to_string()))?;
        Ok(())
    }

    /// Runs the container's due probes; a failed liveness probe kills it (to be restarted).
    async fn probe(&mut self, ctx: &Ctx, pod: &Pod, c: &Container, s: &ContainerState) -> Duration {
        let uid = uid_of(pod);
        let netns = self.network.as_ref().map(|n| n.netns_path.clone());
        let pod_ip = self.facts(ctx).pod_ip.unwrap_or_default();
        let mut wake = self.live_poll();
        let t = self.containers.entry(c.name.clone()).or_default();
        let started_at = s.started_at.clone().unwrap_or_default();
        let target = probes::Target {
            runtime: &ctx.runtime,
            pod_uid: &uid,
            container: &c.name,
            netns: netns.as_deref(),
            pod_ip: &pod_ip,
            container_spec: c,
        };
        // Startup first: the others wait until it has succeeded.
        if let Some(p) = &c.startup_probe {
            if !t.startup.succeeded() {
                let outcome = t
                    .startup
                    .run_if_due(ProbeKind::Startup, p, &target, &started_at)
                    .await;
                if let Some(failure) = outcome.failed_for_good {
                    ctx.event(
                        pod,
                        true,
                        "Unhealthy",
                        format!("Startup probe failed: {failure}"),
                    )
                    .await;
                    let _ = ctx
                        .runtime
                        .kill_container(&uid, &c.name, libc::SIGKILL)
                        .await;
                }
                return wake.min(outcome.next);
            }
        }
        if let Some(p) = &c.liveness_probe {
            let outcome = t
                .liveness
                .run_if_due(ProbeKind::Liveness, p, &target, &started_at)
                .await;
            if let Some(failure) = outcome.failed_for_good {
                ctx.event(
                    pod,
                    true,
                    "Unhealthy",
                    format!("Liveness probe failed: {failure}"),
                )
                .await;
                ctx.event(
                    pod,
                    false,
                    "Killing",
                    format!(
                        "Container {} failed liveness probe, will be restarted",
                        c.name
                    ),
                )
                .await;
                let _ = ctx
                    .runtime
                    .kill_container(&uid, &c.name, libc::SIGKILL)
                    .await;
                t.liveness = ProbeState::default();
                return wake;
            }
            wake = wake.min(outcome.next);
        }
        if let Some(p) = &c.readiness_probe {
            let outcome = t
                .readiness
                .run_if_due(ProbeKind::Readiness, p, &target, &started_at)
                .await;
            if let Some(failure) = outcome.failure_to_report {
                ctx.event(
                    pod,
                    true,
                    "Unhealthy",
                    format!("Readiness probe failed: {failure}"),
                )
                .await;
            }
            wake = wake.min(outcome.next);
        }
        wake
    }

    fn view(&self, ctx: &Ctx, pod: &Pod, observed: &HashMap<String, ContainerState>) -> PodView {
        let empty = k8s_openapi::api::core::v1::PodSpec::default();
        let spec = pod.spec.as_ref().unwrap_or(&empty);
        let init_done = spec
            .init_containers
            .iter()
            .flatten()
            .all(|c| matches!(observed.get(&c.name), Some(s) if s.status == ContainerStatus::Exited && s.exit_code == Some(0)));
        let one = |c: &Container, is_init: bool| -> ContainerView {
            let t = self.containers.get(&c.name);
            let fallback = if !is_init && !init_done {
                "PodInitializing"
            } else {
                "ContainerCreating"
            };
            let mut last_state = t.and_then(|t| t.last_state.clone());
            let (state, container_id, started) = match observed.get(&c.name) {
                None => (
                    t.and_then(|t| t.waiting.clone())
                        .unwrap_or_else(|| State::waiting(fallback)),
                    None,
                    false,
                ),
                Some(s) => {
                    let id = Some(format!("berth://{}", s.id));
                    match s.status {
                        ContainerStatus::Created => {
                            (State::waiting("ContainerCreating"), id, false)
                        }
                        ContainerStatus::Running => (
                            State::Running {
                                started_at: status::k8s_time(s.started_at.as_deref().unwrap_or("")),
                            },
                            id,
                            t.map(|t| c.startup_probe.is_none() || t.startup.succeeded())
                                .unwrap_or(true),
                        ),
                        ContainerStatus::Exited => match t.and_then(|t| t.waiting.clone()) {
                            Some(w @ State::Waiting { .. }) => {
                                last_state = Some(terminated_from_runtime(s));
                                (w, id, false)
                            }
                            _ => (terminated_from_runtime(s), id, false),
                        },
                    }
                }
            };
            let running = matches!(state, State::Running { .. });
            let ready = running
                && !is_init
                && match (&c.readiness_probe, t) {
                    (None, _) => started,
                    (Some(_), Some(t)) => t.readiness.is_ready(),
                    (Some(_), None) => false,
                };
            ContainerView {
                name: c.name.clone(),
                state,
                last_state,
                restart_count: t.map(|t| t.restart_count).unwrap_or(0),
                ready,
                started,
                image: t
                    .map(|t| t.image.clone())
                    .filter(|i| !i.is_empty())
                    .unwrap_or_else(|| c.image.clone().unwrap_or_default()),
                image_id: t.map(|t| t.image_id.clone()).unwrap_or_default(),
                container_id,
            }
        };
        PodView {
            init: spec
                .init_containers
                .iter()
                .flatten()
                .map(|c| one(c, true))
                .collect(),
            containers: spec.containers.iter().map(|c| one(c, false)).collect(),
            ephemeral: ephemeral_containers(pod)
                .iter()
                .map(|c| one(c, true))
                .collect(),
            pod_ip: self
                .facts(ctx)
                .pod_ip
                .filter(|_| self.network.is_some() || host_network(pod)),
            host_ip: Some(ctx.config.host_ip.clone()),
            sandbox_ready: self.shim_ready && (self.network.is_some() || host_network(pod)),
        }
    }

    async fn write_status(&self, ctx: &Ctx, pod: &Pod, observed: &HashMap<String, ContainerState>) {
        let old = serde_json::to_value(&pod.status).unwrap_or(Value::Null);
        let old = if old.is_null() { json!({}) } else { old };
        let view = self.view(ctx, pod, observed);
        let new = status::compute(&old, &restart_policy(pod), &view, &status::now());
        if !status::differs(&old, &new) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(
            ctx.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let patch = json!({"status": new});
        // Strategic merge keys conditions by type, so a condition someone else adds meanwhile
        // (an eviction's DisruptionTarget) is not overwritten by this older view.
        if let Err(e) = api
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            tracing::warn!(pod = %name, error = %e, "cannot write pod status");
        }
    }
}

/// The pod's ephemeral containers as plain containers: the fields they share are the same,
/// and the runtime does not care which kind started them.
fn ephemeral_containers(pod: &Pod) -> Vec<Container> {
    pod.spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
        .filter_map(|e| serde_json::to_value(e).ok())
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect()
}

/// For an ephemeral container with a `targetContainerName`: the running target's pid
/// namespace, so the debugger sees (and can trace) its processes, as `kubectl debug
/// --target` means.
async fn target_pid_namespace(ctx: &Ctx, pod: &Pod, name: &str) -> Option<PathBuf> {
    let target = pod
        .spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
        .find(|e| e.name == name)?
        .target_container_name
        .clone()
        .filter(|t| !t.is_empty())?;
    let state = ctx.runtime.pod_state(&uid_of(pod)).await.ok()?;
    let pid = state
        .containers
        .iter()
        .find(|c| c.name == target && c.status == ContainerStatus::Running)?
        .pid?;
    Some(PathBuf::from(format!("/proc/{pid}/ns/pid")))
}

/// The ConfigMaps and Secrets the pod refers to (env, and volumes when `with_volumes`);
/// missing ones are left out (whether that is an error depends on `optional`).
async fn fetch_sources(ctx: &Ctx, pod: &Pod, with_volumes: bool) -> Result<Sources, kube::Error> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let spec = pod.spec.as_ref();
    let containers = spec.into_iter().flat_map(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
    });
    let (mut cms, mut secrets) = env::referenced_objects(containers);
    if with_volumes {
        let (vc, vs) = volumes::referenced_objects(pod);
        cms.extend(vc);
        secrets.extend(vs);
    }
    let mut sources = Sources::default();
    let cm_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    for name in cms {
        if let Some(cm) = cm_api.get_opt(&name).await? {
            let mut data: BTreeMap<String, String> = cm.data.unwrap_or_default();
            for (k, v) in cm.binary_data.unwrap_or_default() {
                data.insert(k, String::from_utf8_lossy(&v.0).into_owned());
            }
            sources.config_maps.insert(name, data);
        }
    }
    if with_volumes {
        sources.claims = super::claims::bound_claim_dirs(&ctx.client, pod).await?;
    }
    let secret_api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    for name in secrets {
        if let Some(s) = secret_api.get_opt(&name).await? {
            let mut data: BTreeMap<String, Vec<u8>> = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            for (k, v) in s.string_data.unwrap_or_default() {
                data.insert(k, v.into_bytes());
            }
            sources.secrets.insert(name, data);
        }
    }
    Ok(sources)
}

/// Registry credentials: the node's config plus the pod's imagePullSecrets.
async fn pull_auth(ctx: &Ctx, pod: &Pod) -> Result<RegistryAuth, kube::Error> {
    let mut auth = RegistryAuth::from_config(&ctx.config.registries);
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let names = pod
        .spec
        .iter()
        .flat_map(|s| s.image_pull_secrets.iter().flatten())
        .map(|r| r.name.clone());
    for name in names {
        if let Some(secret) = api.get_opt(&name).await? {
            for key in [".dockerconfigjson", ".dockercfg"] {
                if let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) {
                    if let Err(e) = auth.add_docker_config_json(&bytes.0) {
                        tracing::warn!(secret = %name, error = %e, "unusable image pull secret");
                    }
                }
            }
        }
    }
    Ok(auth)
}

/// Stops a pod whose object is being deleted (preStop, SIGTERM, grace period, SIGKILL), frees
/// everything it held, and, when `pod` is still in the API, removes the object for good.
pub async fn terminate_pod(ctx: &Ctx, pod: &Pod, still_in_api: bool) {
    let uid = uid_of(pod);
    let grace = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(DEFAULT_GRACE_SECONDS)
        .max(0) as u64;
    let deadline = Instant::now() + Duration::from_secs(grace);
    if let Ok(state) = ctx.runtime.pod_state(&uid).await {
        let running: Vec<&ContainerState> = state
            .containers
            .iter()
            .filter(|c| c.status == ContainerStatus::Running)
            .collect();
        let spec_of = |name: &str| {
            pod.spec
                .iter()
                .flat_map(|s| {
                    s.containers
                        .iter()
                        .chain(s.init_containers.iter().flatten())
                })
                .find(|c| c.name == name)
                .cloned()
        };
        for c in &running {
            ctx.event(
                pod,
                false,
                "Killing",
                format!("Stopping container {}", c.name),
            )
            .await;
            let pre_stop = spec_of(&c.name)
                .and_then(|s| s.lifecycle)
                .and_then(|l| l.pre_stop)
                .and_then(|h| h.exec)
                .and_then(|e| e.command);
            if let Some(command) = pre_stop {
                let budget = deadline.saturating_duration_since(Instant::now());
                if let Err(e) = ctx.runtime.exec_sync(&uid, &c.name, command, budget).await {
                    tracing::warn!(pod = %uid, container = %c.name, error = %e, "preStop hook failed");
                }
            }
            let _ = ctx
                .runtime
                .kill_container(&uid, &c.name, libc::SIGTERM)
                .await;
        }
        loop {
            let all_exited = match ctx.runtime.pod_state(&uid).await {
                Ok(s) => s
                    .containers
                    .iter()
                    .all(|c| c.status != ContainerStatus::Running),
                Err(_) => true,
            };
            if all_exited || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for c in &running {
            let _ = ctx
                .runtime
                .kill_container(&uid, &c.name, libc::SIGKILL)
                .await;
        }
    }
    release_pod(ctx, &uid).await;
    let log_dir = ctx.log_dir(pod);
    let _ = tokio::fs::remove_dir_all(&log_dir).await;
    if still_in_api {
        let api: Api<Pod> = Api::namespaced(
            ctx.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        match api.delete(name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => tracing::warn!(pod = %name, error = %e, "cannot remove the pod object"),
        }
    }
}

/// Frees what a pod holds on the node: shim, containers, cgroups, mounts, state dir, network.
pub async fn release_pod(ctx: &Ctx, uid: &str) {
    if let Err(e) = ctx.runtime.stop_pod(uid).await {
        tracing::warn!(pod = %uid, error = %e, "cannot stop pod");
    }
    if let Err(e) = ctx.network.teardown_pod(uid).await {
        tracing::warn!(pod = %uid, error = %e, "cannot tear down pod network");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_decide_on_exit_codes() {
        assert!(should_restart("Always", 0));
        assert!(should_restart("Always", 1));
        assert!(!should_restart("OnFailure", 0));
        assert!(should_restart("OnFailure", 137));
        assert!(!should_restart("Never", 1));
    }

    #[test]
    fn runtime_exits_become_kubernetes_terminations() {
        let mut c = ContainerState {
            name: "a".into(),
            id: "abc".into(),
            pid: None,
            status: ContainerStatus::Exited,
            exit_code: Some(137),
            created_at: "2026-01-01T00:00:00Z".into(),
            started_at: Some("2026-01-01T00:00:01.5Z".into()),
            finished_at: Some("2026-01-01T00:00:02Z".into()),
            oom_killed: true,
        };
        let State::Terminated {
            reason,
            exit_code,
            started_at,
            container_id,
            ..
        } = terminated_from_runtime(&c)
        else {
            panic!("terminated expected")
        };
        assert_eq!((reason.as_str(), exit_code), ("OOMKilled", 137));
        assert_eq!(started_at.as_deref(), Some("2026-01-01T00:00:01Z"));
        assert_eq!(container_id.as_deref(), Some("berth://abc"));
        c.oom_killed = false;
        c.exit_code = Some(0);
        assert!(
            matches!(terminated_from_runtime(&c), State::Terminated { reason, .. } if reason == "Completed")
        );
    }

    #[test]
    fn last_states_from_the_api_are_read_back() {
        let v =
            json!({"terminated": {"exitCode": 1, "reason": "Error", "containerID": "berth://x"}});
        assert!(matches!(
            terminated_from_json(&v),
            Some(State::Terminated { exit_code: 1, .. })
        ));
        assert_eq!(terminated_from_json(&json!({})), None);
    }
}
