//! The selectors of what groups pods: Services and the ReplicaSets, StatefulSets and
//! ReplicationControllers that own them. PodTopologySpread's system default constraints spread
//! a pod among the pods those selectors pick (upstream's `DefaultSelector`).
//!
//! Only the selectors are kept, not the objects (a ReplicaSet carries a whole pod template), so
//! the watches cost little memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};

use crate::api::selectors;

/// Selectors by `kind/namespace/name`.
#[derive(Default, Clone)]
pub struct Owners {
    selectors: HashMap<String, LabelSelector>,
}

fn key(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind}/{namespace}/{name}")
}

impl Owners {
    /// The selector default spreading counts pods with: every Service in the pod's namespace
    /// that selects it, and the selector of its controller if that is a ReplicaSet,
    /// StatefulSet or ReplicationController. None when nothing groups the pod.
    pub fn default_selector(&self, pod: &Pod) -> Option<LabelSelector> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
        let empty = BTreeMap::new();
        let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
        let mut merged = LabelSelector::default();
        let mut add = |selector: &LabelSelector| {
            let match_labels = merged.match_labels.get_or_insert_with(BTreeMap::new);
            match_labels.extend(selector.match_labels.clone().unwrap_or_default());
            if let Some(expressions) = &selector.match_expressions {
                merged
                    .match_expressions
                    .get_or_insert_with(Vec::new)
                    .extend(expressions.iter().cloned());
            }
        };
        let service_prefix = key("Service", namespace, "");
        for (k, selector) in &self.selectors {
            let selects = selectors::LabelSelector::from_label_selector(selector)
                .is_ok_and(|s| s.matches(labels));
            if k.starts_with(&service_prefix) && selects {
                add(selector);
            }
        }
        let controller = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true));
        if let Some(owner) = controller {
            let group = owner.api_version.split_once('/').map_or("", |(g, _)| g);
            let known = matches!(
                (group, owner.kind.as_str()),
                ("apps", "ReplicaSet" | "StatefulSet") | ("", "ReplicationController")
            );
            if known {
                if let Some(selector) =
                    self.selectors
                        .get(&key(&owner.kind, namespace, &owner.name))
                {
                    add(selector);
                }
            }
        }
        let is_empty = merged.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
            && merged.match_expressions.as_ref().is_none_or(Vec::is_empty);
        (!is_empty).then_some(merged)
    }
}

/// Shared between the watches that fill it and the scheduler that reads it.
pub type SharedOwners = Arc<Mutex<Owners>>;

pub fn read(shared: &SharedOwners) -> Owners {
    shared
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Keeps the selectors of one kind current in `shared` until the watch ends.
async fn watch_kind<K>(
    client: kube::Client,
    shared: SharedOwners,
    kind: &'static str,
    selector_of: fn(&K) -> Option<LabelSelector>,
) where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::all(client);
    let mut relisted: Option<HashMap<String, LabelSelector>> = None;
    let mut events =
        std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
    while let Some(event) = events.next().await {
        let Ok(event) = event else { continue };
        let entry = |object: &K| {
            let meta: &ObjectMeta = object.meta();
            let k = key(
                kind,
                meta.namespace.as_deref().unwrap_or(""),
                meta.name.as_deref().unwrap_or(""),
            );
            (k, selector_of(object))
        };
        let mut owners = shared.lock().unwrap_or_else(PoisonError::into_inner);
        let of_kind = format!("{kind}/");
        match event {
            watcher::Event::Init => relisted = Some(HashMap::new()),
            watcher::Event::InitApply(object) => {
                if let (k, Some(selector)) = entry(&object) {
                    relisted
                        .get_or_insert_with(HashMap::new)
                        .insert(k, selector);
                }
            }
            watcher::Event::InitDone => {
                owners.selectors.retain(|k, _| !k.starts_with(&of_kind));
                owners.selectors.extend(relisted.take().unwrap_or_default());
            }
            watcher::Event::Apply(object) => match entry(&object) {
                (k, Some(selector)) => {
                    owners.selectors.insert(k, selector);
                }
                (k, None) => {
                    owners.selectors.remove(&k);
                }
            },
            watcher::Event::Delete(object) => {
                owners.selectors.remove(&entry(&object).0);
            }
        }
    }
}

/// Watches Services, ReplicaSets, StatefulSets and ReplicationControllers; ends when a watch
/// does.
pub async fn watch(client: kube::Client, shared: SharedOwners) {
    let services = watch_kind::<Service>(client.clone(), shared.clone(), "Service", |s| {
        let selector = s.spec.as_ref()?.selector.clone()?;
        // A Service without a selector selects no pods (it is fed by hand).
        (!selector.is_empty()).then_some(LabelSelector {
            match_labels: Some(selector),
            match_expressions: None,
        })
    });
    let replica_sets =
        watch_kind::<ReplicaSet>(client.clone(), shared.clone(), "ReplicaSet", |rs| {
            Some(rs.spec.as_ref()?.selector.clone())
        });
    let stateful_sets =
        watch_kind::<StatefulSet>(client.clone(), shared.clone(), "StatefulSet", |ss| {
            Some(ss.spec.as_ref()?.selector.clone())
        });
    let controllers =
        watch_kind::<ReplicationController>(client, shared, "ReplicationController", |rc| {
            let selector = rc.spec.as_ref()?.selector.clone()?;
            Some(LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            })
        });
    let (services, replica_sets, stateful_sets, controllers) = (
        std::pin::pin!(services),
        std::pin::pin!(replica_sets),
        std::pin::pin!(stateful_sets),
        std::pin::pin!(controllers),
    );
    tokio::select! {
        _ = services => {}
        _ = replica_sets => {}
        _ = stateful_sets => {}
        _ = controllers => {}
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use serde_json::json;

    pub fn owners(entries: &[(&str, &str, serde_json::Value)]) -> Owners {
        Owners {
            selectors: entries
                .iter()
                .map(|(kind, name, selector)| {
                    (
                        key(kind, "default", name),
                        serde_json::from_value(selector.clone()).unwrap(),
                    )
                })
                .collect(),
        }
    }

    fn pod_of(labels: serde_json::Value, owner: Option<(&str, &str, &str)>) -> Pod {
        let mut pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p",
            "namespace": "default", "labels": labels}}))
        .unwrap();
        pod.metadata.owner_references = owner.map(|(api_version, kind, name)| {
            vec![OwnerReference {
                api_version: api_version.into(),
                kind: kind.into(),
                name: name.into(),
                uid: "u".into(),
                controller: Some(true),
                block_owner_deletion: None,
            }]
        });
        pod
    }

    #[test]
    fn the_default_selector_joins_selecting_services_and_the_owning_controller() {
        let o = owners(&[
            ("Service", "web", json!({"matchLabels": {"app": "web"}})),
            ("Service", "db", json!({"matchLabels": {"app": "db"}})),
            (
                "ReplicaSet",
                "web-1",
                json!({"matchLabels": {"app": "web", "pod-template-hash": "1"}}),
            ),
        ]);
        let pod = pod_of(
            json!({"app": "web", "pod-template-hash": "1"}),
            Some(("apps/v1", "ReplicaSet", "web-1")),
        );
        let selector = o.default_selector(&pod).expect("a selector");
        assert_eq!(
            selector.match_labels,
            Some(BTreeMap::from([
                ("app".to_string(), "web".to_string()),
                ("pod-template-hash".to_string(), "1".to_string()),
            ]))
        );
    }

    #[test]
    fn a_pod_nothing_groups_has_no_default_selector() {
        let o = owners(&[("Service", "db", json!({"matchLabels": {"app": "db"}}))]);
        assert!(o
            .default_selector(&pod_of(json!({"app": "web"}), None))
            .is_none());
        // A Job owns the pod: not a kind default spreading looks at.
        assert!(o
            .default_selector(&pod_of(
                json!({"app": "web"}),
                Some(("batch/v1", "Job", "j"))
            ))
            .is_none());
    }
}
