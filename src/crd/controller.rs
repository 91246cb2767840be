//! The CRD controller (upstream's naming, establishing and finalizer controllers in one): serves
//! an accepted CRD's resources, writes `NamesAccepted`/`Established`, `acceptedNames` and
//! `storedVersions`, and on delete removes every object of the CRD before letting it go.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::{json, Value};

use super::definition::{self, Definition};
use super::CLEANUP_FINALIZER;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
    #[error("encoding a CRD: {0}")]
    Json(#[from] serde_json::Error),
}

struct Context {
    client: kube::Client,
}

/// Runs until the watch ends.
pub async fn run(client: kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    Controller::new(crds, watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(Context { client }))
        .for_each(|_| async {})
        .await;
}

fn error_policy(_: Arc<CustomResourceDefinition>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "CRD sync failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(crd: Arc<CustomResourceDefinition>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(name) = crd.metadata.name.clone() else {
        return Ok(Action::await_change());
    };
    let api: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    let crd = serde_json::to_value(&*crd)?;
    if crd
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        return finalize(&api, &ctx.client, &name, &crd).await;
    }
    let finalizers = finalizers(&crd);
    if !finalizers.iter().any(|f| f == CLEANUP_FINALIZER) {
        let mut wanted = finalizers.clone();
        wanted.push(CLEANUP_FINALIZER.to_string());
        let patch = json!({"metadata": {"finalizers": wanted, "resourceVersion": crd.pointer("/metadata/resourceVersion")}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        // The patch wakes us again with the new object.
        return Ok(Action::await_change());
    }
    let mut status = crd.get("status").cloned().unwrap_or_else(|| json!({}));
    let conflict = Definition::from_crd(&crd).and_then(|d| names_conflict(&d));
    match (&conflict, Definition::from_crd(&crd)) {
        (None, Some(d)) => {
            definition::serve(d);
            set_condition(
                &mut status,
                "NamesAccepted",
                "True",
                "NoConflicts",
                "no conflicts found",
            );
            set_condition(
                &mut status,
                "Established",
                "True",
                "InitialNamesAccepted",
                "the initial names have been accepted",
            );
            status["acceptedNames"] = accepted_names(&crd);
        }
        (Some(problem), _) => {
            set_condition(
                &mut status,
                "NamesAccepted",
                "False",
                "NameConflict",
                problem,
            );
            if !definition::is_established(&crd) {
                set_condition(
                    &mut status,
                    "Established",
                    "False",
                    "NotAccepted",
                    "not all names are accepted",
                );
            }
        }
        (None, None) => return Ok(Action::await_change()),
    }
    let storage = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .and_then(|v| v.get("name").cloned());
    let mut stored: Vec<Value> = status
        .get("storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(storage) = storage {
        if !stored.contains(&storage) {
            stored.push(storage);
        }
    }
    status["storedVersions"] = json!(stored);
    if crd.get("status") != Some(&status) {
        let patch = json!({"status": status});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(Action::await_change())
}

/// Deletes the CRD's objects; once none is left, stops serving it and drops the finalizer.
async fn finalize(
    api: &Api<CustomResourceDefinition>,
    client: &kube::Client,
    name: &str,
    crd: &Value,
) -> Result<Action, Error> {
    if !finalizers(crd).iter().any(|f| f == CLEANUP_FINALIZER) {
        definition::stop_serving(name);
        return Ok(Action::await_change());
    }
    let mut status = crd.get("status").cloned().unwrap_or_else(|| json!({}));
    if set_condition(
        &mut status,
        "Terminating",
        "True",
        "InstanceDeletionInProgress",
        "CustomResource deletion is in progress",
    ) {
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await?;
    }
    if let Some(served) = definition::served(name) {
        let remaining = delete_objects(client, &served).await?;
        if remaining > 0 {
            return Ok(Action::requeue(Duration::from_millis(500)));
        }
    }
    definition::stop_serving(name);
    let left: Vec<String> = finalizers(crd)
        .into_iter()
        .filter(|f| f != CLEANUP_FINALIZER)
        .collect();
    let patch = json!({"metadata": {"finalizers": left}});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

/// Asks for every object of `d` to be deleted; returns how many were still there.
async fn delete_objects(client: &kube::Client, d: &Definition) -> Result<usize, Error> {
    let Some(version) = d.versions.first() else {
        return Ok(0);
    };
    let resource = ApiResource {
        group: d.group.clone(),
        version: version.name.clone(),
        api_version: format!("{}/{}", d.group, version.name),
        kind: d.kind.clone(),
        plural: d.plural.clone(),
    };
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let objects = all.list(&ListParams::default()).await?;
    let count = objects.items.len();
    for obj in objects.items {
        let Some(obj_name) = obj.metadata.name.as_deref() else {
            continue;
        };
        let api: Api<DynamicObject> = match obj.metadata.namespace.as_deref() {
            Some(ns) if d.namespaced => Api::namespaced_with(client.clone(), ns, &resource),
            _ => Api::all_with(client.clone(), &resource),
        };
        match api.delete(obj_name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(count)
}

fn finalizers(crd: &Value) -> Vec<String> {
    crd.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect()
}

fn accepted_names(crd: &Value) -> Value {
    let mut names = crd
        .pointer("/spec/names")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(kind) = names
        .get("kind")
        .and_then(Value::as_str)
        .map(str::to_string)
    {
        if names.get("singular").is_none() {
            names["singular"] = json!(kind.to_lowercase());
        }
        if names.get("listKind").is_none() {
            names["listKind"] = json!(format!("{kind}List"));
        }
    }
    names
}

/// Another served CRD of the same group already uses one of `d`'s names?
fn names_conflict(d: &Definition) -> Option<String> {
    for other in definition::all_served() {
        if other.name == d.name || other.group != d.group {
            continue;
        }
        if other.plural == d.plural || other.singular == d.plural {
            return Some(format!("\"{}\" is already in use", d.plural));
        }
        if other.kind == d.kind {
            return Some(format!("\"{}\" is already in use", d.kind));
        }
        if let Some(short) = d.short_names.iter().find(|s| other.short_names.contains(s)) {
            return Some(format!("\"{short}\" is already in use"));
        }
    }
    None
}

/// Sets a condition, keeping its transition time when its status does not change. Returns
/// whether anything changed.
fn set_condition(status: &mut Value, kind: &str, value: &str, reason: &str, message: &str) -> bool {
    if !status.get("conditions").is_some_and(Value::is_array) {
        status["conditions"] = json!([]);
    }
    let Some(conditions) = status.get_mut("conditions").and_then(Value::as_array_mut) else {
        return false;
    };
    let now = crate::api::meta::now_rfc3339();
    match conditions.iter_mut().find(|c| c["type"] == kind) {
        Some(c) if c["status"] == value && c["reason"] == reason && c["message"] == message => {
            false
        }
        Some(c) => {
            if c["status"] != value {
                c["lastTransitionTime"] = json!(now);
            }
            c["status"] = json!(value);
            c["reason"] = json!(reason);
            c["message"] = json!(message);
            true
        }
        None => {
            conditions.push(
                json!({"type": kind, "status": value, "lastTransitionTime": now,
                "reason": reason, "message": message}),
            );
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let mut status = json!({});
        assert!(set_condition(&mut status, "Established", "True", "A", "a"));
        status["conditions"][0]["lastTransitionTime"] = json!("then");
        assert!(!set_condition(&mut status, "Established", "True", "A", "a"));
        assert!(set_condition(&mut status, "Established", "True", "B", "b"));
        assert_eq!(status["conditions"][0]["lastTransitionTime"], "then");
        assert!(set_condition(&mut status, "Established", "False", "B", "b"));
        assert_ne!(status["conditions"][0]["lastTransitionTime"], "then");
    }

    #[test]
    fn accepted_names_carry_the_defaulted_singular_and_list_kind() {
        let crd = json!({"spec": {"names": {"plural": "widgets", "kind": "Widget"}}});
        let names = accepted_names(&crd);
        assert_eq!(names["singular"], "widget");
        assert_eq!(names["listKind"], "WidgetList");
    }
}
