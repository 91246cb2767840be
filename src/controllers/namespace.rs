//! Namespace lifecycle: a namespace being deleted has its content removed, then the
//! `kubernetes` finalizer is dropped through `/finalize` so the namespace itself goes.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use crate::api::resources;

const FINALIZER: &str = "kubernetes";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
}

pub async fn run(client: kube::Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    Controller::new(namespaces, watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|_| async {})
        .await;
}

fn error_policy(_: Arc<Namespace>, error: &Error, _: Arc<kube::Client>) -> Action {
    tracing::warn!(%error, "namespace cleanup failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(ns: Arc<Namespace>, client: Arc<kube::Client>) -> Result<Action, Error> {
    let terminating = ns.metadata.deletion_timestamp.is_some();
    let finalizers = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default();
    if !terminating || !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let name = ns.metadata.name.clone().unwrap_or_default();
    if !delete_content(&client, &name).await? {
        // Pods with a grace period, or objects with finalizers, are still going away.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let remaining: Vec<String> = finalizers.into_iter().filter(|f| f != FINALIZER).collect();
    let body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name},
        "spec": {"finalizers": remaining},
    });
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let request = http::Request::put(format!("/api/v1/namespaces/{name}/finalize"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(bytes)
        .map_err(|e| Error::Kube(kube::Error::HttpError(e)))?;
    match client.request::<Namespace>(request).await {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes everything namespaced in `namespace`; true once nothing is left.
async fn delete_content(client: &kube::Client, namespace: &str) -> Result<bool, Error> {
    let mut empty = true;
    for r in resources::all_stored().into_iter().filter(|r| r.namespaced) {
        let gvk = GroupVersionKind::gvk(r.group, r.version, r.kind);
        let resource = ApiResource::from_gvk_with_plural(&gvk, r.plural);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        let left = api.list(&ListParams::default().limit(1)).await?;
        if left.items.is_empty() {
            continue;
        }
        empty = false;
        api.delete_collection(&DeleteParams::background(), &ListParams::default())
            .await?;
    }
    Ok(empty)
}
