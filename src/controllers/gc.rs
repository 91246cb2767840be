//! Garbage collector: an object whose owner references all name owners that no longer exist
//! (by uid) is deleted, with background propagation so its own dependents follow; references
//! to vanished owners are dropped from objects that still have a live owner.
//!
//! Level-triggered by sweeps: one after any owner-kind deletion is seen (debounced) and one
//! every minute regardless, so a missed event only delays collection. The owner kinds are the
//! usual owners plus every kind a sweep has seen named as an owner (a ConfigMap owning a
//! Secret, a custom resource owning a Deployment): from then on their deletions are watched
//! too, so only the first such owner of a kind waits for the periodic sweep.
//!
//! Foreground and orphan deletion: an owner being deleted with the `foregroundDeletion`
//! finalizer has its dependents deleted, and loses the finalizer once no dependent with
//! `blockOwnerDeletion` is left; one with `orphan` has its references removed from its
//! dependents, then loses the finalizer. Owners of the owner kinds are seen as soon as they
//! are marked (watch); others at the next sweep. While any owner waits, the collector looks
//! at it every second.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use futures::stream::{BoxStream, SelectAll};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{watcher, WatchStreamExt};

use crate::api::resources::{self, Resource, BUILTIN};
/// The finalizers the API server adds on a delete with `Foreground` / `Orphan` propagation.
const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";

const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
const DEBOUNCE: Duration = Duration::from_secs(1);

/// Kinds that own others in practice; their deletions trigger a sweep from the start. Pods,
/// ConfigMaps and the like rarely own anything and churn a lot: they are watched only once a
/// sweep has seen one of them named as an owner.
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

/// What the watches tell the collector.
enum Signal {
    /// An owner went away: its dependents may now be garbage.
    OwnerGone,
    /// An owner waits for the collector (`foregroundDeletion` or `orphan` finalizer).
    Deleting(DeletingOwner),
}

/// An object being deleted whose dependents must be deleted or orphaned first.
#[derive(Debug, Clone)]
struct DeletingOwner {
    resource: &'static Resource,
    namespace: Option<String>,
    name: String,
    uid: String,
}

/// While owners wait on the collector, it looks at them this often (their dependents' own
/// deletions are not all watched).
const PENDING_INTERVAL: Duration = Duration::from_secs(1);

/// Runs sweeps and cascades forever.
pub async fn run(client: kube::Client) {
    let mut watched = WatchedOwnerKinds::new(&client);
    let mut pending: HashMap<String, DeletingOwner> = HashMap::new();
    let mut next_sweep = Instant::now();
    loop {
        if Instant::now() >= next_sweep {
            match sweep(&client).await {
                Ok(swept) => {
                    pending.extend(swept.deleting.into_iter().map(|o| (o.uid.clone(), o)));
                    for r in swept.owner_kinds {
                        watched.watch(&client, r);
                    }
                }
                Err(error) => tracing::warn!(%error, "garbage collection sweep failed"),
            }
            next_sweep = Instant::now() + SWEEP_INTERVAL;
        }
        if !pending.is_empty() {
            match cascade(&client, &pending).await {
                Ok(done) => pending.retain(|uid, _| !done.contains(uid)),
                Err(error) => tracing::warn!(%error, "cascading deletion failed"),
            }
        }
        let wait = if pending.is_empty() {
            next_sweep.saturating_duration_since(Instant::now())
        } else {
            PENDING_INTERVAL
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            Some(signal) = watched.signals.next() => {
                let mut signal = Some(signal);
                let mut gone = false;
                // Let a burst (a whole namespace, a cascade) settle first; this also bounds how
                // often a sweep (which lists everything) can run.
                tokio::time::sleep(DEBOUNCE).await;
                loop {
                    match signal.take() {
                        Some(Signal::OwnerGone) => gone = true,
                        Some(Signal::Deleting(owner)) => {
                            pending.insert(owner.uid.clone(), owner);
                        }
                        None => {}
                    }
                    match futures::poll!(watched.signals.next()) {
                        std::task::Poll::Ready(Some(next)) => signal = Some(next),
                        _ => break,
                    }
                }
                if gone {
                    next_sweep = Instant::now();
                }
            }
        }
    }
}

fn api_resource(r: &Resource) -> ApiResource {
    let gvk = GroupVersionKind::gvk(r.group, r.version, r.kind);
    ApiResource::from_gvk_with_plural(&gvk, r.plural)
}

fn api_for(client: &kube::Client, r: &Resource, namespace: Option<&str>) -> Api<DynamicObject> {
    match (namespace, r.namespaced) {
        (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &api_resource(r)),
        _ => Api::all_with(client.clone(), &api_resource(r)),
    }
}

/// The kinds whose deletions the collector watches, and their merged signals: deletions, and
/// owners marked for foreground or orphan deletion.
struct WatchedOwnerKinds {
    kinds: HashSet<String>,
    signals: SelectAll<BoxStream<'static, Signal>>,
}

impl WatchedOwnerKinds {
    fn new(client: &kube::Client) -> Self {
        let mut watched = WatchedOwnerKinds {
            kinds: HashSet::new(),
            signals: SelectAll::new(),
        };
        for r in BUILTIN.iter().filter(|r| OWNER_KINDS.contains(&r.kind)) {
            watched.watch(client, r);
        }
        watched
    }

    /// Starts watching `r` unless it is watched already (by its storage: one kind served
    /// under two versions is one watch).
    fn watch(&mut self, client: &kube::Client, r: &'static Resource) {
        if !self.kinds.insert(r.key_prefix()) {
            return;
        }
        tracing::debug!(
            kind = r.kind,
            group = r.group,
            "watching deletions of an owner kind"
        );
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &api_resource(r));
        // Backoff: the kind may stop being served (its CRD deleted); its watch then fails
        // until it is served again, and must not spin meanwhile.
        let stream = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .filter_map(move |event| async move {
                match event {
                    Ok(watcher::Event::Delete(_)) => Some(Signal::OwnerGone),
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                        deleting_owner(r, &o).map(Signal::Deleting)
                    }
                    _ => None,
                }
            })
            .boxed();
        self.signals.push(stream);
    }
}

/// The object as a deleting owner, if it waits on the collector.
fn deleting_owner(r: &'static Resource, o: &DynamicObject) -> Option<DeletingOwner> {
    o.metadata.deletion_timestamp.as_ref()?;
    let waits = o
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == FOREGROUND || f == ORPHAN);
    waits.then(|| DeletingOwner {
        resource: r,
        namespace: o.metadata.namespace.clone(),
        name: o.metadata.name.clone().unwrap_or_default(),
        uid: o.metadata.uid.clone().unwrap_or_default(),
    })
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

type Listing = Vec<(&'static Resource, Vec<DynamicObject>)>;

/// Every object of every kind (events aside).
async fn list_everything(client: &kube::Client) -> Result<Listing, Error> {
    let mut listed = Vec::new();
    for r in resources::all_stored()
        .into_iter()
        .filter(|r| r.kind != "Event")
    {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &api_resource(r));
        match api.list(&ListParams::default()).await {
            Ok(list) => listed.push((r, list.items)),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 405 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(listed)
}

/// What a sweep found beside the garbage it collected.
struct Swept {
    /// Owners waiting on the collector, of any kind.
    deleting: Vec<DeletingOwner>,
    /// Every served kind some object names as an owner.
    owner_kinds: Vec<&'static Resource>,
}

/// Lists every kind, then checks the owners nobody listed against the API one by one: an
/// owner created after its kind was listed must not be taken for gone.
async fn sweep(client: &kube::Client) -> Result<Swept, Error> {
    let listed = list_everything(client).await?;
    let owner_kinds = owner_kinds(&listed);
    let mut alive: HashSet<String> = listed
        .iter()
        .flat_map(|(_, items)| items.iter().filter_map(|o| o.metadata.uid.clone()))
        .collect();
    let mut gone: HashSet<String> = HashSet::new();
    let mut deleting = Vec::new();
    for (r, items) in &listed {
        for object in items {
            deleting.extend(deleting_owner(r, object));
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
    Ok(Swept {
        deleting,
        owner_kinds,
    })
}

/// The served kinds named in the listed objects' owner references, each once.
fn owner_kinds(listed: &Listing) -> Vec<&'static Resource> {
    let mut kinds: Vec<&'static Resource> = Vec::new();
    let references = listed
        .iter()
        .flat_map(|(_, items)| items.iter())
        .flat_map(|o| o.metadata.owner_references.iter().flatten());
    for owner in references {
        if let Some(r) = resources::find_kind(&owner.api_version, &owner.kind) {
            if !kinds.iter().any(|k| k.key_prefix() == r.key_prefix()) {
                kinds.push(r);
            }
        }
    }
    kinds
}

/// One round over the owners waiting on the collector; returns the uids of those finished
/// with (their finalizer removed, or they are gone).
async fn cascade(
    client: &kube::Client,
    pending: &HashMap<String, DeletingOwner>,
) -> Result<HashSet<String>, Error> {
    let listed = list_everything(client).await?;
    let mut done = HashSet::new();
    for owner in pending.values() {
        let dependents: Vec<(&'static Resource, &DynamicObject)> = listed
            .iter()
            .flat_map(|(r, items)| items.iter().map(move |o| (*r, o)))
            .filter(|(_, o)| {
                o.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.uid == owner.uid)
            })
            .collect();
        if cascade_one(client, owner, &dependents).await? {
            done.insert(owner.uid.clone());
        }
    }
    Ok(done)
}

/// Orphans or deletes one owner's dependents, then lifts its finalizer; true when finished.
async fn cascade_one(
    client: &kube::Client,
    owner: &DeletingOwner,
    dependents: &[(&'static Resource, &DynamicObject)],
) -> Result<bool, Error> {
    let api = api_for(client, owner.resource, owner.namespace.as_deref());
    let Some(current) = api.get_opt(&owner.name).await? else {
        return Ok(true);
    };
    if current.metadata.uid.as_deref() != Some(owner.uid.as_str()) {
        return Ok(true);
    }
    let Some(step) = next_step(&current, dependents, &owner.uid) else {
        return Ok(true);
    };
    match step {
        Step::Orphan => {
            for (r, dependent) in dependents {
                let refs: Vec<&OwnerReference> = dependent
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .filter(|x| x.uid != owner.uid)
                    .collect();
                let body = serde_json::json!({"metadata": {
                    "ownerReferences": if refs.is_empty() { serde_json::Value::Null } else { serde_json::json!(refs) },
                    "resourceVersion": dependent.metadata.resource_version,
                }});
                let name = dependent.metadata.name.clone().unwrap_or_default();
                let dependent_api = api_for(client, r, dependent.metadata.namespace.as_deref());
                match dependent_api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    // Changed meanwhile: the next round sees it again.
                    Err(kube::Error::Api(e)) if e.code == 409 => return Ok(false),
                    Err(e) => return Err(e.into()),
                }
            }
            remove_finalizer(&api, &current, ORPHAN).await
        }
        Step::DeleteDependents(blocking) => {
            for (r, dependent) in dependents {
                if dependent.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                // Owners among the dependents cascade in the foreground too, so the whole
                // tree is gone before the top owner.
                let params = if OWNER_KINDS.contains(&r.kind) {
                    DeleteParams::foreground()
                } else {
                    DeleteParams::background()
                };
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: dependent.metadata.uid.clone(),
                        resource_version: None,
                    }),
                    ..params
                };
                let name = dependent.metadata.name.clone().unwrap_or_default();
                let dependent_api = api_for(client, r, dependent.metadata.namespace.as_deref());
                match dependent_api.delete(&name, &params).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if blocking > 0 {
                return Ok(false);
            }
            remove_finalizer(&api, &current, FOREGROUND).await
        }
    }
}

/// What a deleting owner needs next.
#[derive(Debug, PartialEq)]
enum Step {
    /// Drop the references to it from its dependents, then lift `orphan`.
    Orphan,
    /// Delete its dependents; lift `foregroundDeletion` once none of the given number of
    /// dependents with `blockOwnerDeletion` is left.
    DeleteDependents(usize),
}

/// Orphaning comes first when both finalizers are present (upstream does the same).
fn next_step(
    owner: &DynamicObject,
    dependents: &[(&'static Resource, &DynamicObject)],
    owner_uid: &str,
) -> Option<Step> {
    owner.metadata.deletion_timestamp.as_ref()?;
    let finalizers = owner.metadata.finalizers.clone().unwrap_or_default();
    if finalizers.iter().any(|f| f == ORPHAN) {
        return Some(Step::Orphan);
    }
    if finalizers.iter().any(|f| f == FOREGROUND) {
        let blocking = dependents
            .iter()
            .filter(|(_, d)| {
                d.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.uid == owner_uid && r.block_owner_deletion == Some(true))
            })
            .count();
        return Some(Step::DeleteDependents(blocking));
    }
    None
}

/// Lifts one finalizer, guarded by the resourceVersion; true when done.
async fn remove_finalizer(
    api: &Api<DynamicObject>,
    owner: &DynamicObject,
    finalizer: &str,
) -> Result<bool, Error> {
    let rest: Vec<&String> = owner
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != finalizer)
        .collect();
    let body = serde_json::json!({"metadata": {
        "finalizers": if rest.is_empty() { serde_json::Value::Null } else { serde_json::json!(rest) },
        "resourceVersion": owner.metadata.resource_version,
    }});
    let name = owner.metadata.name.clone().unwrap_or_default();
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        // Another finalizer may still hold it; ours is done either way.
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
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

    fn owner_ref(uid: &str) -> OwnerReference {
        owner(uid)
    }

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
    fn the_owner_kinds_are_the_served_kinds_named_as_owners_each_once() {
        let pods = BUILTIN.iter().find(|r| r.kind == "Pod").unwrap();
        let mut config_map_owner = owner("c");
        config_map_owner.api_version = "v1".into();
        config_map_owner.kind = "ConfigMap".into();
        let mut unknown = owner("u");
        unknown.api_version = "example.com/v1".into();
        unknown.kind = "Widget".into();
        let listed: Listing = vec![(
            pods,
            vec![
                object(&[], vec![owner("a"), config_map_owner]),
                object(&[], vec![owner("b"), unknown]),
                object(&[], vec![]),
            ],
        )];
        let kinds: Vec<&str> = owner_kinds(&listed).iter().map(|r| r.kind).collect();
        assert_eq!(kinds, ["ReplicaSet", "ConfigMap"]);
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

    fn object(finalizers: &[&str], owners: Vec<OwnerReference>) -> DynamicObject {
        let mut o = DynamicObject::new(
            "x",
            &api_resource(BUILTIN.iter().find(|r| r.kind == "Pod").unwrap()),
        );
        o.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        o.metadata.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
        o.metadata.owner_references = Some(owners);
        o
    }

    #[test]
    fn a_foreground_owner_waits_only_for_dependents_that_block_it() {
        let pods = BUILTIN.iter().find(|r| r.kind == "Pod").unwrap();
        let owner = object(&[FOREGROUND], vec![]);
        let blocking = object(&[], vec![owner_ref("a")]);
        let mut loose_ref = owner_ref("a");
        loose_ref.block_owner_deletion = None;
        let loose = object(&[], vec![loose_ref]);
        let dependents = [(pods, &blocking), (pods, &loose)];
        assert_eq!(
            next_step(&owner, &dependents, "a"),
            Some(Step::DeleteDependents(1))
        );
        assert_eq!(
            next_step(&owner, &dependents[1..], "a"),
            Some(Step::DeleteDependents(0))
        );
    }

    #[test]
    fn orphaning_comes_before_foreground_and_live_owners_need_nothing() {
        let both = object(&[FOREGROUND, ORPHAN], vec![]);
        assert_eq!(next_step(&both, &[], "a"), Some(Step::Orphan));
        let mut live = object(&[ORPHAN], vec![]);
        live.metadata.deletion_timestamp = None;
        assert_eq!(next_step(&live, &[], "a"), None);
    }
}
