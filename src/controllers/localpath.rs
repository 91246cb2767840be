//! The built-in local-path provisioner: a default StorageClass `local-path` whose volumes are
//! directories under `<data-dir>/storage/<pv-name>` on the node that first runs a pod using
//! the claim (WaitForFirstConsumer), bound to their claim, and removed with it under the
//! Delete reclaim policy.
//!
//! Upstream splits this between the scheduler (which picks the node and annotates the claim
//! with `volume.kubernetes.io/selected-node`), an external provisioner and the PV controller
//! (binding, reclaim). Here one controller does all three for its own class: a claim is
//! provisioned once a pod using it is bound to a node (or the claim carries the selected-node
//! annotation), and the agent holds the pod back until the claim is bound.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::{json, Value};

use super::common;

pub const PROVISIONER: &str = "berth.io/local-path";
pub const CLASS_NAME: &str = "local-path";
const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
const SELECTED_NODE_ANNOTATION: &str = "volume.kubernetes.io/selected-node";
const PROVISIONED_BY_ANNOTATION: &str = "pv.kubernetes.io/provisioned-by";
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
    #[error("remove {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

struct Context {
    client: kube::Client,
    recorder: Recorder,
    /// Where volumes live: `<data-dir>/storage`.
    storage_dir: PathBuf,
}

/// The default StorageClass every berth cluster has.
pub fn default_storage_class() -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": CLASS_NAME,
            "annotations": {DEFAULT_CLASS_ANNOTATION: "true"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    })
}

/// Creates the default StorageClass unless it exists (a user may have changed it: kept).
async fn ensure_storage_class(client: &kube::Client) -> Result<(), kube::Error> {
    let classes: Api<StorageClass> = Api::all(client.clone());
    let class: StorageClass =
        serde_json::from_value(default_storage_class()).map_err(kube::Error::SerdeError)?;
    match classes.create(&PostParams::default(), &class).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs the provisioner until its watches end.
pub async fn run(client: kube::Client, storage_dir: PathBuf) {
    while let Err(error) = ensure_storage_class(&client).await {
        tracing::warn!(%error, "cannot create the default storage class; retrying");
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let context = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), Reporter::from(PROVISIONER)),
        storage_dir,
    });
    let claims = Controller::new(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    )
    // A pod bound to a node is what a WaitForFirstConsumer claim waits for.
    .watches(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        |pod| {
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            let bound = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some();
            claim_names(&pod)
                .into_iter()
                .filter(move |_| bound)
                .map(move |name| ObjectRef::new(&name).within(&namespace))
        },
    )
    .run(reconcile_claim, claim_error, context.clone())
    .for_each(|_| async {});
    let volumes = Controller::new(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
    )
    // A claim's deletion releases its volume.
    .watches(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
        |claim| {
            claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.clone())
                .map(|name| ObjectRef::new(&name))
        },
    )
    .run(reconcile_volume, volume_error, context)
    .for_each(|_| async {});
    futures::join!(claims, volumes);
}

fn claim_error(_: Arc<PersistentVolumeClaim>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "claim provisioning failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

fn volume_error(_: Arc<PersistentVolume>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "volume reclaim failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// The claims a pod's volumes name.
pub fn claim_names(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.clone())
        .collect()
}

/// The PV name for a claim, as upstream's external provisioners name them.
pub fn volume_name(claim_uid: &str) -> String {
    format!("pvc-{claim_uid}")
}

/// The directory of a volume, and the only place this provisioner ever deletes.
pub fn volume_dir(storage_dir: &Path, volume: &str) -> PathBuf {
    storage_dir.join(volume)
}

/// The provisioned volume for `claim` on `node`, already bound to the claim.
pub fn new_volume(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    node: &str,
    storage_dir: &Path,
) -> Value {
    let uid = claim.metadata.uid.clone().unwrap_or_default();
    let name = volume_name(&uid);
    let spec = claim.spec.clone().unwrap_or_default();
    let capacity = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_else(|| "1Gi".into());
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": name,
            "annotations": {PROVISIONED_BY_ANNOTATION: PROVISIONER},
        },
        "spec": {
            "capacity": {"storage": capacity},
            "accessModes": spec.access_modes.unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            "persistentVolumeReclaimPolicy": class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
            "storageClassName": class.metadata.name,
            "volumeMode": spec.volume_mode.unwrap_or_else(|| "Filesystem".into()),
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": claim.metadata.namespace,
                "name": claim.metadata.name,
                "uid": uid,
                "resourceVersion": claim.metadata.resource_version,
            },
            "hostPath": {
                "path": volume_dir(storage_dir, &name).to_string_lossy(),
                "type": "DirectoryOrCreate",
            },
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": HOSTNAME_LABEL, "operator": "In", "values": [node]},
            ]}]}},
        },
    })
}

async fn reconcile_claim(
    claim: Arc<PersistentVolumeClaim>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let (Some(name), Some(namespace), Some(spec)) = (
        claim.metadata.name.clone(),
        claim.metadata.namespace.clone(),
        claim.spec.as_ref(),
    ) else {
        return Ok(Action::await_change());
    };
    if claim.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    if let Some(volume) = spec.volume_name.as_ref().filter(|v| !v.is_empty()) {
        let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
        if phase != Some("Bound") {
            if let Some(pv) = volumes.get_opt(volume).await? {
                let ours = pv
                    .spec
                    .as_ref()
                    .and_then(|s| s.claim_ref.as_ref())
                    .is_some_and(|r| r.uid.as_deref() == claim.metadata.uid.as_deref());
                if ours {
                    mark_claim_bound(&claims, &name, &pv).await?;
                }
            }
        }
        return Ok(Action::await_change());
    }

    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    let class = match spec.storage_class_name.as_deref() {
        // Explicitly no class: only a pre-made volume may bind it, which is not ours to do.
        Some("") => return Ok(Action::await_change()),
        Some(class_name) => classes.get_opt(class_name).await?,
        None => {
            // Upstream assigns the default class to class-less claims retroactively.
            let default = classes
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .find(|c| {
                    c.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                        .is_some_and(|v| v == "true")
                });
            if let Some(default) = default {
                let body = json!({"spec": {"storageClassName": default.metadata.name}});
                claims
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
                    .await?;
            }
            return Ok(Action::await_change());
        }
    };
    let Some(class) = class.filter(|c| c.provisioner == PROVISIONER) else {
        return Ok(Action::await_change());
    };

    let waits_for_consumer = class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer");
    let selected = claim
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SELECTED_NODE_ANNOTATION))
        .cloned();
    let node = match selected {
        Some(node) => Some(node),
        None if waits_for_consumer => consumer_node(&ctx.client, &namespace, &name).await?,
        None => any_node(&ctx.client).await?,
    };
    let reference = common::object_reference("v1", "PersistentVolumeClaim", &claim.metadata);
    let Some(node) = node else {
        common::publish(
            &ctx.recorder,
            &reference,
            EventType::Normal,
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding".into(),
        )
        .await;
        return Ok(Action::await_change());
    };

    let body = new_volume(&claim, &class, &node, &ctx.storage_dir);
    let pv: PersistentVolume = serde_json::from_value(body).map_err(kube::Error::SerdeError)?;
    let pv_name = pv.metadata.name.clone().unwrap_or_default();
    let pv = match volumes.create(&PostParams::default(), &pv).await {
        Ok(created) => {
            common::publish(
                &ctx.recorder,
                &reference,
                EventType::Normal,
                "ProvisioningSucceeded",
                format!("Successfully provisioned volume {pv_name}"),
            )
            .await;
            created
        }
        Err(kube::Error::Api(e)) if e.code == 409 => volumes.get(&pv_name).await?,
        Err(e) => return Err(e.into()),
    };
    let status = json!({"status": {"phase": "Bound"}});
    volumes
        .patch_status(&pv_name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    let bind = json!({
        "metadata": {"annotations": {
            "pv.kubernetes.io/bind-completed": "yes",
            "pv.kubernetes.io/bound-by-controller": "yes",
            "volume.kubernetes.io/storage-provisioner": PROVISIONER,
            SELECTED_NODE_ANNOTATION: node,
        }},
        "spec": {"volumeName": pv_name},
    });
    claims
        .patch(&name, &PatchParams::default(), &Patch::Merge(&bind))
        .await?;
    mark_claim_bound(&claims, &name, &pv).await?;
    Ok(Action::await_change())
}

async fn mark_claim_bound(
    claims: &Api<PersistentVolumeClaim>,
    name: &str,
    pv: &PersistentVolume,
) -> Result<(), Error> {
    let spec = pv.spec.clone().unwrap_or_default();
    let body = json!({"status": {
        "phase": "Bound",
        "accessModes": spec.access_modes,
        "capacity": spec.capacity,
    }});
    claims
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
        .await?;
    Ok(())
}

/// The node of a pod that uses the claim and is already bound to one.
async fn consumer_node(
    client: &kube::Client,
    namespace: &str,
    claim: &str,
) -> Result<Option<String>, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    Ok(pods
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| claim_names(p).iter().any(|c| c == claim))
        .find_map(|p| p.spec?.node_name.filter(|n| !n.is_empty())))
}

/// For Immediate binding: the first node by name.
async fn any_node(client: &kube::Client) -> Result<Option<String>, kube::Error> {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let mut names: Vec<String> = nodes
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    names.sort();
    Ok(names.into_iter().next())
}

/// What happens to a volume whose claim is gone.
#[derive(Debug, PartialEq, Eq)]
pub enum Reclaim {
    /// Still claimed, or not ours.
    Keep,
    /// Remove the directory and the PV.
    Delete(PathBuf),
    /// Keep the data; mark the PV Released.
    Release,
}

/// Upstream's reclaim decision for a volume this provisioner made; only a directory inside
/// the storage dir is ever deleted, whatever the PV says.
pub fn reclaim(pv: &PersistentVolume, claim_exists: bool, storage_dir: &Path) -> Reclaim {
    let ours = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROVISIONED_BY_ANNOTATION))
        .is_some_and(|p| p == PROVISIONER);
    let spec = pv.spec.clone().unwrap_or_default();
    if !ours || spec.claim_ref.is_none() || claim_exists {
        return Reclaim::Keep;
    }
    if spec.persistent_volume_reclaim_policy.as_deref() == Some("Retain") {
        return Reclaim::Release;
    }
    let name = pv.metadata.name.clone().unwrap_or_default();
    let expected = volume_dir(storage_dir, &name);
    let path = spec.host_path.map(|h| PathBuf::from(h.path));
    match path {
        Some(path) if path == expected && !name.is_empty() && !name.contains('/') => {
            Reclaim::Delete(path)
        }
        // Not where we put it: drop the object, leave the disk alone.
        _ => Reclaim::Delete(PathBuf::new()),
    }
}

async fn reconcile_volume(pv: Arc<PersistentVolume>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(name) = pv.metadata.name.clone() else {
        return Ok(Action::await_change());
    };
    if pv.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(claim_ref) = pv.spec.as_ref().and_then(|s| s.claim_ref.clone()) else {
        return Ok(Action::await_change());
    };
    let namespace = claim_ref.namespace.clone().unwrap_or_default();
    let claim_name = claim_ref.name.clone().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    let claim = claims.get_opt(&claim_name).await?;
    let claim_exists = claim.is_some_and(|c| c.metadata.uid == claim_ref.uid);
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    match reclaim(&pv, claim_exists, &ctx.storage_dir) {
        Reclaim::Keep => {}
        Reclaim::Release => {
            let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
            if phase != Some("Released") {
                let body = json!({"status": {"phase": "Released"}});
                volumes
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
                    .await?;
            }
        }
        Reclaim::Delete(path) => {
            if !path.as_os_str().is_empty() {
                let removed = tokio::task::spawn_blocking({
                    let path = path.clone();
                    move || match std::fs::remove_dir_all(&path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                        _ => Ok(()),
                    }
                })
                .await;
                match removed {
                    Ok(Ok(())) => {}
                    Ok(Err(source)) => return Err(Error::Remove { path, source }),
                    Err(join) => {
                        return Err(Error::Remove {
                            path,
                            source: std::io::Error::other(join.to_string()),
                        })
                    }
                }
            }
            match volumes.delete(&name, &DeleteParams::default()).await {
                Ok(_) => tracing::info!(volume = %name, "deleted a released local-path volume"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn claim() -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "data-web-0", "namespace": "default", "uid": "u-1", "resourceVersion": "7"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}},
        }))
        .unwrap()
    }

    fn class(reclaim: &str) -> StorageClass {
        let mut class: StorageClass = serde_json::from_value(default_storage_class()).unwrap();
        class.reclaim_policy = Some(reclaim.into());
        class
    }

    fn volume(reclaim: &str) -> PersistentVolume {
        serde_json::from_value(new_volume(
            &claim(),
            &class(reclaim),
            "node-1",
            Path::new("/data/storage"),
        ))
        .unwrap()
    }

    #[test]
    fn the_default_class_is_local_path_and_waits_for_its_first_consumer() {
        let class: StorageClass = serde_json::from_value(default_storage_class()).unwrap();
        assert_eq!(class.metadata.name.as_deref(), Some("local-path"));
        assert_eq!(class.provisioner, PROVISIONER);
        assert_eq!(class.reclaim_policy.as_deref(), Some("Delete"));
        assert_eq!(
            class.volume_binding_mode.as_deref(),
            Some("WaitForFirstConsumer")
        );
        assert_eq!(
            class.metadata.annotations.unwrap()[DEFAULT_CLASS_ANNOTATION],
            "true"
        );
    }

    #[test]
    fn a_provisioned_volume_lives_under_the_storage_dir_on_its_node_bound_to_the_claim() {
        let pv = volume("Delete");
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-u-1"));
        let spec = pv.spec.unwrap();
        assert_eq!(spec.host_path.unwrap().path, "/data/storage/pvc-u-1");
        assert_eq!(spec.capacity.unwrap()["storage"].0, "64Mi");
        let claim_ref = spec.claim_ref.unwrap();
        assert_eq!(claim_ref.uid.as_deref(), Some("u-1"));
        assert_eq!(claim_ref.name.as_deref(), Some("data-web-0"));
        let term = &spec
            .node_affinity
            .unwrap()
            .required
            .unwrap()
            .node_selector_terms[0];
        let expr = &term.match_expressions.as_ref().unwrap()[0];
        assert_eq!(expr.key, HOSTNAME_LABEL);
        assert_eq!(expr.values.as_deref(), Some(&["node-1".to_string()][..]));
    }

    #[test]
    fn a_released_volume_is_deleted_or_kept_by_its_reclaim_policy() {
        let storage = Path::new("/data/storage");
        assert_eq!(reclaim(&volume("Delete"), true, storage), Reclaim::Keep);
        assert_eq!(
            reclaim(&volume("Delete"), false, storage),
            Reclaim::Delete(PathBuf::from("/data/storage/pvc-u-1"))
        );
        assert_eq!(reclaim(&volume("Retain"), false, storage), Reclaim::Release);
    }

    #[test]
    fn only_directories_of_the_storage_dir_are_ever_removed() {
        let mut pv = volume("Delete");
        if let Some(h) = pv.spec.as_mut().and_then(|s| s.host_path.as_mut()) {
            h.path = "/etc".into();
        }
        assert_eq!(
            reclaim(&pv, false, Path::new("/data/storage")),
            Reclaim::Delete(PathBuf::new())
        );
        let foreign = PersistentVolume {
            metadata: ObjectMeta {
                name: Some("manual".into()),
                ..Default::default()
            },
            ..volume("Delete")
        };
        assert_eq!(
            reclaim(&foreign, false, Path::new("/data/storage")),
            Reclaim::Keep
        );
    }
}
