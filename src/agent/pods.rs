//! The pod worker manager: watches this node's pods and keeps one worker task per pod uid, so
//! the work for one pod is serialised and pods never wait for each other. Level-triggered: a
//! worker always acts on the newest object it was given, so merged or lost events do no harm.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use tokio::sync::{mpsc, watch};

use super::sync::{release_pod, terminate_pod, Ctx, PodWorker};
use super::AgentConfig;
use crate::network::NodeNetwork;
use crate::runtime::images::ImageStore;
use crate::runtime::{ContainerRuntime, ShimRuntime};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("image store: {0}")]
    Images(#[from] crate::runtime::images::ImageError),
    #[error("runtime: {0}")]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error("pod network: {0}")]
    Network(#[from] crate::network::NetError),
    #[error("pod watch ended")]
    WatchEnded,
    #[error("run dir {path}: {source}")]
    RunDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A worker's inbox: the newest object of its pod, `None` once it is gone from the API.
type Inbox = watch::Sender<Option<Pod>>;

/// Runs this node's pods until the pod watch ends.
pub async fn run(client: kube::Client, config: AgentConfig) -> Result<(), AgentError> {
    let runtime = ShimRuntime::new(config.data_dir.join("pods"), &config.run_dir)?;
    run_with(client, config, runtime).await
}

/// Like [`run`], with a given runtime (tests use another shim binary).
pub async fn run_with(
    client: kube::Client,
    config: AgentConfig,
    runtime: ShimRuntime,
) -> Result<(), AgentError> {
    crate::runtime::layout::prepare_pods_run_dir(&config.run_dir, &config.data_dir).map_err(
        |source| AgentError::RunDir {
            path: config.run_dir.clone(),
            source,
        },
    )?;
    let images = {
        let root = config.data_dir.join("images");
        tokio::task::spawn_blocking(move || ImageStore::open(&root))
            .await
            .map_err(|e| {
                AgentError::Runtime(crate::runtime::RuntimeError::Protocol(e.to_string()))
            })??
    };
    ensure_cgroupfs_visible();
    let network = NodeNetwork::new(config.network.clone());
    network.init().await?;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "kubelet".into(),
            instance: Some(config.node_name.clone()),
        },
    );
    let node_name = config.node_name.clone();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        runtime,
        images,
        network,
        config,
        recorder,
        evictions: super::eviction::Evictions::default(),
        admission: super::admit::Admission::default(),
    });
    tokio::spawn(super::eviction::run(ctx.clone()));

    let pods: Api<Pod> = Api::all(client);
    let selector = format!("spec.nodeName={node_name}");
    let mut events = watcher::watcher(pods, watcher::Config::default().fields(&selector))
        .default_backoff()
        .boxed();
    let mut workers: HashMap<String, Inbox> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    // Uids listed since the last (re-)list started: after it, workers not listed are stale.
    let mut listed: HashSet<String> = HashSet::new();
    let mut first_list = true;
    loop {
        tokio::select! {
            Some(uid) = done_rx.recv() => {
                // A worker only ends after its pod is gone; drop its inbox unless a new one
                // replaced it meanwhile.
                if workers.get(&uid).is_some_and(|tx| tx.is_closed()) {
                    workers.remove(&uid);
                }
            }
            event = events.next() => {
                let Some(event) = event else {
                    return Err(AgentError::WatchEnded);
                };
                match event {
                    Ok(Event::Init) => listed.clear(),
                    Ok(Event::InitApply(pod)) => {
                        if let Some(uid) = pod.metadata.uid.clone() {
                            listed.insert(uid);
                        }
                        dispatch(&ctx, &mut workers, &done_tx, pod);
                    }
                    Ok(Event::Apply(pod)) => dispatch(&ctx, &mut workers, &done_tx, pod),
                    Ok(Event::Delete(pod)) => {
                        if let Some(tx) = pod.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                            let _ = tx.send(None);
                        }
                    }
                    Ok(Event::InitDone) => {
                        for (uid, tx) in &workers {
                            if !listed.contains(uid) {
                                let _ = tx.send(None);
                            }
                        }
                        if first_list {
                            first_list = false;
                            let ctx = ctx.clone();
                            let live = listed.clone();
                            tokio::spawn(async move { clean_orphans(&ctx, &live).await });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "pod watch error"),
                }
            }
        }
    }
}

fn dispatch(
    ctx: &Arc<Ctx>,
    workers: &mut HashMap<String, Inbox>,
    done: &mpsc::UnboundedSender<String>,
    pod: Pod,
) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    if let Some(tx) = workers.get(&uid) {
        if tx.send(Some(pod.clone())).is_ok() {
            return;
        }
    }
    let (tx, rx) = watch::channel(Some(pod));
    workers.insert(uid.clone(), tx);
    let ctx = ctx.clone();
    let done = done.clone();
    tokio::spawn(async move {
        work(&ctx, rx).await;
        ctx.evictions.forget(&uid);
        ctx.admission.forget(&uid).await;
        let _ = done.send(uid);
    });
}

/// One pod's life on this node: sync until the pod is deleted, then stop and release it.
async fn work(ctx: &Ctx, mut inbox: watch::Receiver<Option<Pod>>) {
    let mut worker = PodWorker::default();
    let mut last: Option<Pod> = None;
    let mut evicted = false;
    let mut admitted = false;
    loop {
        let current = inbox.borrow_and_update().clone();
        match current {
            None => {
                // Gone from the API without us deleting it (force delete, or while down).
                if let Some(pod) = &last {
                    terminate_pod(ctx, pod, false).await;
                }
                return;
            }
            Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
                terminate_pod(ctx, &pod, true).await;
                return;
            }
            // Evicted or refused: its containers stay stopped until the object is deleted.
            Some(pod)
                if super::eviction::is_evicted(&pod)
                    || super::admit::is_rejected(&pod)
                    || evicted =>
            {
                if !evicted {
                    // Recorded before a restart of berth: make sure nothing of it runs.
                    super::sync::release_pod(ctx, pod.metadata.uid.as_deref().unwrap_or_default())
                        .await;
                    evicted = true;
                }
                last = Some(pod);
                if inbox.changed().await.is_err() {
                    return;
                }
            }
            Some(pod) => {
                let uid = pod.metadata.uid.as_deref().unwrap_or_default();
                if let Some(message) = ctx.evictions.requested(uid) {
                    // The eviction manager chose this pod: stop it here, between two syncs.
                    super::eviction::evict(ctx, &pod, &message).await;
                    evicted = true;
                    last = Some(pod);
                    continue;
                }
                if !admitted {
                    if let Err(refusal) = ctx.admission.admit(ctx, &pod).await {
                        super::admit::reject(ctx, &pod, &refusal).await;
                        evicted = true;
                        last = Some(pod);
                        continue;
                    }
                    admitted = true;
                }
                let uid = uid.to_string();
                let wake = worker.sync(ctx, &pod).await;
                last = Some(pod);
                tokio::select! {
                    changed = inbox.changed() => if changed.is_err() {
                        // The manager is gone: the process is ending.
                        return;
                    },
                    _ = tokio::time::sleep(wake) => {}
                    // Chosen for eviction: now, not at the next resync.
                    _ = ctx.evictions.wait_requested(&uid) => {}
                    // A container exited: sync now rather than at the next poll.
                    _ = worker.shim_changed() => {}
                }
            }
        }
    }
}

/// Pods that have a shim or a network on this node but no object in the API (deleted while
/// berth was down): stop them and free what they hold.
async fn clean_orphans(ctx: &Ctx, live: &HashSet<String>) {
    match ctx.runtime.list_pods().await {
        Ok(uids) => {
            for uid in uids.iter().filter(|u| !live.contains(*u)) {
                tracing::info!(pod = %uid, "removing a pod that is no longer in the API");
                release_pod(ctx, uid).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot list pods of the runtime"),
    }
    if let Err(e) = ctx.network.reconcile(live).await {
        tracing::warn!(error = %e, "cannot reconcile pod networks");
    }
}

/// `ip netns exec` (how berth is run in a network namespace) gives its child a fresh sysfs
/// without the cgroup mounts, so no container could get a cgroup. When this mount namespace
/// (private to us, `ip netns exec` made it) sees no cgroups, the hierarchies this process
/// belongs to (`/proc/self/cgroup`) are mounted again where the host has them.
pub(crate) fn ensure_cgroupfs_visible() {
    let root = std::path::Path::new("/sys/fs/cgroup");
    let has_entries = std::fs::read_dir(root)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if has_entries {
        return;
    }
    let Ok(own) = std::fs::read_to_string("/proc/self/cgroup") else {
        return;
    };
    if let Err(e) = remount_cgroups(root, &own) {
        tracing::warn!(error = %e, "no cgroups visible and cannot mount them");
    } else {
        tracing::info!("mounted the cgroup hierarchies into this mount namespace");
    }
}

/// Mount points below the cgroup root for `/proc/self/cgroup` lines: `(dir, fstype, options)`.
fn cgroup_mounts(own: &str) -> Vec<(String, &'static str, String)> {
    let mut v1 = Vec::new();
    let mut v2 = false;
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers) = (parts.next(), parts.next().unwrap_or(""));
        if controllers.is_empty() {
            v2 = true;
        } else {
            let dir = controllers.trim_start_matches("name=").to_string();
            v1.push((dir, "cgroup", controllers.to_string()));
        }
    }
    if v2 {
        let dir = if v1.is_empty() { "" } else { "unified" };
        v1.push((dir.to_string(), "cgroup2", String::new()));
    }
    v1
}

fn remount_cgroups(root: &std::path::Path, own: &str) -> Result<(), nix::Error> {
    use nix::mount::{mount, MsFlags};
    let mounts = cgroup_mounts(own);
    let pure_v2 = mounts.len() == 1 && mounts[0].0.is_empty();
    if !pure_v2 {
        mount(
            Some("tmpfs"),
            root,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("mode=755"),
        )?;
    }
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    for (dir, fstype, options) in mounts {
        let target = root.join(&dir);
        let _ = std::fs::create_dir_all(&target);
        let data = (!options.is_empty()).then_some(options.as_str());
        mount(Some("cgroup"), &target, Some(fstype), flags, data)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_mounts_follow_the_hierarchies_of_proc_self_cgroup() {
        let hybrid = "12:cpu:/\n3:name=systemd:/x\n0::/\n";
        assert_eq!(
            cgroup_mounts(hybrid),
            vec![
                ("cpu".to_string(), "cgroup", "cpu".to_string()),
                ("systemd".to_string(), "cgroup", "name=systemd".to_string()),
                ("unified".to_string(), "cgroup2", String::new()),
            ]
        );
        assert_eq!(
            cgroup_mounts("0::/user.slice\n"),
            vec![(String::new(), "cgroup2", String::new())]
        );
    }
}
