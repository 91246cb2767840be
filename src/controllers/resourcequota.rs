//! ResourceQuota status: `status.hard` mirrors the spec and `status.used` counts what the
//! namespace holds, so `kubectl describe quota` shows it. Refusing creates over the limit is the
//! admission plugin's job (`admission::resource_quota`); both count with `admission::quota`.
//!
//! The recount is the truth, but admission charges `status.used` for a create before the create
//! is stored: the recount adds the creates admitted in this process and not stored yet (the
//! quota ledger), and writes only over the quota version it read, so it never takes back a
//! charge made meanwhile.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::{json, Value};

use crate::admission::quota::{self, Usage};

/// Objects other than pods (`services`, `count/deployments.apps`, ...) are recounted this often.
const RECOUNT: Duration = Duration::from_secs(30);

/// A recount that lost to a newer charge runs again this soon (the charge's own watch event
/// usually triggers it first).
const RECOUNT_AFTER_CONFLICT: Duration = Duration::from_secs(1);

/// The core kinds the legacy quota names (`pods`, `services`, `requests.storage`...) refer to.
const CORE_COUNTED: [&str; 7] = [
    "pods",
    "services",
    "persistentvolumeclaims",
    "configmaps",
    "secrets",
    "replicationcontrollers",
    "resourcequotas",
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
}

/// Runs the controller until the watch ends.
pub async fn run(client: kube::Client) {
    let quotas: Api<ResourceQuota> = Api::all(client.clone());
    let controller = Controller::new(quotas, watcher::Config::default());
    let store = controller.store();
    // Only pods are watched: they come and go with every workload. Other kinds are recounted
    // every RECOUNT, which saves holding a second copy of every secret and config map in memory.
    controller
        .watches(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default(),
            move |o| quotas_in(&store, o.metadata.namespace.as_deref()),
        )
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|_| async {})
        .await;
}

fn quotas_in(
    store: &Store<ResourceQuota>,
    namespace: Option<&str>,
) -> Vec<ObjectRef<ResourceQuota>> {
    let Some(namespace) = namespace else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter(|q| q.metadata.namespace.as_deref() == Some(namespace))
        .filter_map(|q| Some(ObjectRef::new(q.metadata.name.as_deref()?).within(namespace)))
        .collect()
}

fn error_policy(_: Arc<ResourceQuota>, error: &Error, _: Arc<kube::Client>) -> Action {
    tracing::warn!(%error, "resource quota sync failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// The (group, plural) kinds a quota's hard keys refer to.
pub fn counted_kinds(hard: &Usage) -> BTreeSet<(String, String)> {
    let mut kinds = BTreeSet::new();
    for key in hard.keys() {
        if let Some(rest) = key.strip_prefix("count/") {
            let (plural, group) = rest.split_once('.').unwrap_or((rest, ""));
            kinds.insert((group.to_string(), plural.to_string()));
        }
        for plural in CORE_COUNTED {
            if quota::concerns("", plural, key) {
                kinds.insert((String::new(), plural.to_string()));
            }
        }
    }
    kinds
}

async fn reconcile(rq: Arc<ResourceQuota>, client: Arc<kube::Client>) -> Result<Action, Error> {
    let (Some(name), Some(namespace)) = (&rq.metadata.name, &rq.metadata.namespace) else {
        return Ok(Action::await_change());
    };
    let object = serde_json::to_value(&*rq).unwrap_or(Value::Null);
    let hard = quota::hard_of(&object);
    let scopes = quota::scopes_of(&object);
    let mut used: Usage = hard.keys().map(|k| (k.clone(), 0)).collect();
    let ledger = crate::admission::quota_ledger::global();
    let mut unwatched = false;
    for (group, plural) in counted_kinds(&hard) {
        let Some(resource) = crate::api::resources::all()
            .into_iter()
            .find(|r| r.group == group && r.plural == plural)
        else {
            continue;
        };
        unwatched |= !(group.is_empty() && plural == "pods");
        let api_resource = ApiResource {
            group: resource.group.into(),
            version: resource.version.into(),
            api_version: resource.api_version(),
            kind: resource.kind.into(),
            plural: resource.plural.into(),
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with((*client).clone(), namespace, &api_resource);
        // Read before the list, so a create stored meanwhile is listed rather than missed.
        let pending = ledger.pending(namespace, &group, &plural);
        let listed: Vec<Value> = api
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .map(|item| serde_json::to_value(item).unwrap_or(Value::Null))
            .collect();
        let stored: HashSet<&str> = listed
            .iter()
            .filter_map(|o| o.pointer("/metadata/uid").and_then(Value::as_str))
            .collect();
        let admitted = pending
            .iter()
            .filter(|(uid, _)| !stored.contains(uid.as_str()))
            .map(|(_, object)| object);
        for item in listed.iter().chain(admitted) {
            if !quota::counts(&group, &plural, item)
                || !quota::scopes_match(&scopes, &group, &plural, item)
            {
                continue;
            }
            for (key, amount) in quota::usage(&group, &plural, item) {
                if let Some(total) = used.get_mut(&key) {
                    *total += amount;
                }
            }
        }
    }
    let spec_hard = object.pointer("/spec/hard").cloned().unwrap_or(json!({}));
    let used: BTreeMap<String, String> = used
        .into_iter()
        .map(|(k, v)| (k, quota::format_quantity(v)))
        .collect();
    let mut patch = json!({"status": {"hard": spec_hard, "used": used}});
    if super::common::status_differs(&*rq, &patch) {
        // Only over the version counted against: a create admitted since charged the quota,
        // and this count may not hold it yet.
        patch["metadata"] = json!({"resourceVersion": rq.metadata.resource_version});
        let quotas: Api<ResourceQuota> = Api::namespaced((*client).clone(), namespace);
        match quotas
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {
                return Ok(Action::requeue(RECOUNT_AFTER_CONFLICT))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(match unwatched {
        true => Action::requeue(RECOUNT),
        false => Action::await_change(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_keys_name_the_kinds_to_count() {
        let hard = Usage::from([
            ("pods".to_string(), 2000),
            ("requests.cpu".to_string(), 1000),
            ("requests.storage".to_string(), 1000),
            ("count/deployments.apps".to_string(), 1000),
            ("count/configmaps".to_string(), 1000),
        ]);
        let kinds: Vec<(String, String)> = counted_kinds(&hard).into_iter().collect();
        let expect = |g: &str, p: &str| (g.to_string(), p.to_string());
        assert_eq!(
            kinds,
            vec![
                expect("", "configmaps"),
                expect("", "persistentvolumeclaims"),
                expect("", "pods"),
                expect("apps", "deployments"),
            ]
        );
    }
}
