//! Garbage collector: an object whose owner references all name owners that no longer exist
//! (by uid) is deleted, with background propagation so its own dependents follow; references
//! to vanished owners are dropped from objects that still have a live owner.
//!
//! Level-triggered by sweeps: one after any owner-kind deletion is seen (debounced) and one
//! every minute regardless, so a missed event only delays collection. Foreground deletion and
//! orphaning (the `foregroundDeletion` / `orphan` finalizers) are not handled yet.

use std::collections::HashSet;
use std::pin::pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher;

use crate::api::resources::{self, Resource, BUILTIN};

const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
const DEBOUNCE: Duration = Duration::from_secs(1);

/// Kinds that own others in practice; their deletions trigger a sweep. Pods, ConfigMaps and
/// the like rarely own anything and churn a lot: the periodic sweep covers them.
const OWNER_KINDS: &[&str] = &[
    "Deployment",
    "ReplicaSet",
    "ReplicationController",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
    "Service",
    "Node",
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
}

/// Runs sweeps forever.
pub async fn run(client: kube::Client) {
    let mut deletions = pin!(owner_deletions(&client));
    loop {
        if let Err(error) = sweep(&client).await {
            tracing::warn!(%error, "garbage collection sweep failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
            Some(()) = deletions.next() => {
                // Let a burst of deletions (a whole namespace, a cascade) settle first; this also
                // bounds how often a sweep (which lists everything) can run.
                tokio::time::sleep(DEBOUNCE).await;
                while let std::task::Poll::Ready(Some(())) = futures::poll!(deletions.next()) {}
            }
        }
    }
}

fn api_resource(r: &Resource) -> ApiResource {
    let gvk = GroupVersionKind::gvk(r.group, r.version, r.kind);
    ApiResource::from_gvk_with_plural(&gvk, r.plural)
}

/// One item per deletion of an object of an owner kind.
fn owner_deletions(client: &kube::Client) -> impl Stream<Item = ()> + Send + use<> {
    let streams = BUILTIN
        .iter()
        .filter(|r| OWNER_KINDS.contains(&r.kind))
        .map(|r| {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &api_resource(r));
            watcher::watcher(api, watcher::Config::default())
                .filter_map(|event| async move {
                    matches!(event, Ok(watcher::Event::Delete(_))).then_some(())
                })
                .boxed()
        });
    futures::stream::select_all(streams)
}

/// What to do with one object, given which of its owners are gone.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Keep,
    Delete,
    /// Keep, dropping the references to the owners that are gone.
    DropReferences(Vec<OwnerReference>),
}

/// The decision for an object with `refs`, `gone` telling which owner uids are verified absent.
pub fn verdict(refs: &[OwnerReference], gone: &HashSet<String>) -> Verdict {
    if refs.is_empty() {
        return Verdict::Keep;
    }
    let alive: Vec<OwnerReference> = refs
        .iter()
        .filter(|r| !gone.contains(&r.uid))
        .cloned()
        .collect();
    if alive.is_empty() {
        Verdict::Delete
    } else if alive.len() < refs.len() {
        Verdict::DropReferences(alive)
    } else {
        Verdict::Keep
    }
}

/// Lists every kind, then checks the owners nobody listed against the API one by one: an
/// owner created after its kind was listed must not be taken for gone.
async fn sweep(client: &kube::Client) -> Result<(), Error> {
    let mut listed: Vec<(&'static Resource, Vec<DynamicObject>)> = Vec::new();
    let mut uids: HashSet<String> = HashSet::new();
    for r in resources::all_stored()
        .into_iter()
        .filter(|r| r.kind != "Event")
    {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &api_resource(r));
        let items = match api.list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 405 => continue,
            Err(e) => return Err(e.into()),
        };
        uids.extend(items.iter().filter_map(|o| o.metadata.uid.clone()));
        listed.push((r, items));
    }
    let mut gone: HashSet<String> = HashSet::new();
    let mut alive: HashSet<String> = uids;
    for (r, items) in &listed {
        for object in items {
            let refs = object.metadata.owner_references.clone().unwrap_or_default();
            if refs.is_empty() || object.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let namespace = object.metadata.namespace.clone().unwrap_or_default();
            for owner in &refs {
                if alive.contains(&owner.uid) || gone.contains(&owner.uid) {
                    continue;
                }
                match owner_exists(client, owner, &namespace).await? {
                    Some(true) => {
                        alive.insert(owner.uid.clone());
                    }
                    Some(false) => {
                        gone.insert(owner.uid.clone());
                    }
                    // A kind berth does not serve: never collect on a guess.
                    None => {
                        alive.insert(owner.uid.clone());
                    }
                }
            }
            collect(client, r, object, verdict(&refs, &gone)).await?;
        }
    }
    Ok(())
}

/// Some(exists) for a served kind; None if the kind is unknown.
async fn owner_exists(
    client: &kube::Client,
    owner: &OwnerReference,
    namespace: &str,
) -> Result<Option<bool>, Error> {
    let Some(r) = resources::find_kind(&owner.api_version, &owner.kind) else {
        return Ok(None);
    };
    let api: Api<DynamicObject> = if r.namespaced {
        Api::namespaced_with(client.clone(), namespace, &api_resource(r))
    } else {
        Api::all_with(client.clone(), &api_resource(r))
    };
    let found = api.get_opt(&owner.name).await?;
    Ok(Some(found.is_some_and(|o| {
        o.metadata.uid.as_deref() == Some(owner.uid.as_str())
    })))
}

async fn collect(
    client: &kube::Client,
    r: &Resource,
    object: &DynamicObject,
    verdict: Verdict,
) -> Result<(), Error> {
    let name = object.metadata.name.clone().unwrap_or_default();
    let api: Api<DynamicObject> = match (&object.metadata.namespace, r.namespaced) {
        (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &api_resource(r)),
        _ => Api::all_with(client.clone(), &api_resource(r)),
    };
    let result = match verdict {
        Verdict::Keep => return Ok(()),
        Verdict::Delete => {
            tracing::debug!(kind = r.kind, %name, "collecting an object whose owners are gone");
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: object.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            api.delete(&name, &params).await.map(|_| ())
        }
        Verdict::DropReferences(alive) => {
            let body = serde_json::json!({"metadata": {
                "ownerReferences": alive,
                "resourceVersion": object.metadata.resource_version,
            }});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&body))
                .await
                .map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(()),
        // Gone already, or changed under us: the next sweep looks again.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: format!("rs-{uid}"),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    #[test]
    fn an_object_whose_owners_are_all_gone_is_deleted() {
        let gone = HashSet::from(["a".to_string(), "b".to_string()]);
        assert_eq!(verdict(&[owner("a"), owner("b")], &gone), Verdict::Delete);
    }

    #[test]
    fn an_object_with_one_live_owner_only_loses_the_dead_reference() {
        let gone = HashSet::from(["a".to_string()]);
        assert_eq!(
            verdict(&[owner("a"), owner("b")], &gone),
            Verdict::DropReferences(vec![owner("b")])
        );
    }

    #[test]
    fn objects_without_owners_or_with_live_owners_are_kept() {
        let gone = HashSet::from(["a".to_string()]);
        assert_eq!(verdict(&[], &gone), Verdict::Keep);
        assert_eq!(verdict(&[owner("b")], &gone), Verdict::Keep);
    }
}
