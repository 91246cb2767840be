//! Every namespace gets a `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap with the
//! cluster CA (upstream's serviceaccount-controller and root-ca-cert-publisher). Deleting either
//! brings it back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

pub const DEFAULT_ACCOUNT: &str = "default";
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
const ROOT_CA_KEY: &str = "ca.crt";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver \
when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other \
usage is guaranteed across distributions of Kubernetes clusters.";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
}

struct Context {
    client: kube::Client,
    ca_cert_pem: String,
}

/// Runs until the watch ends. `ca_cert_pem` is the cluster CA certificate to publish.
pub async fn run(client: kube::Client, ca_cert_pem: String) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let accounts: Api<ServiceAccount> = Api::all(client.clone());
    let config_maps: Api<ConfigMap> = Api::all(client.clone());
    let context = Arc::new(Context {
        client,
        ca_cert_pem,
    });
    Controller::new(namespaces, watcher::Config::default())
        .watches(accounts, watcher::Config::default(), |sa| {
            wake_namespace(&sa.metadata, DEFAULT_ACCOUNT)
        })
        // Only the one ConfigMap this controller writes: watching them all would decode and
        // cache every ConfigMap of the cluster here, and cost every ConfigMap write that work.
        .watches(config_maps, root_ca_only(), |cm| {
            wake_namespace(&cm.metadata, ROOT_CA_CONFIGMAP)
        })
        .run(reconcile, error_policy, context)
        .for_each(|_| async {})
        .await;
}

fn root_ca_only() -> watcher::Config {
    watcher::Config::default().fields(&format!("metadata.name={ROOT_CA_CONFIGMAP}"))
}

fn wake_namespace(meta: &ObjectMeta, name: &str) -> Option<ObjectRef<Namespace>> {
    if meta.name.as_deref() != Some(name) {
        return None;
    }
    meta.namespace.as_deref().map(ObjectRef::new)
}

fn error_policy(_: Arc<Namespace>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "service account sync failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(name) = ns.metadata.name.as_deref() else {
        return Ok(Action::await_change());
    };
    // A terminating namespace refuses new objects; creating them would only fail.
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Ok(Action::await_change());
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), name);
    if accounts.get_opt(DEFAULT_ACCOUNT).await?.is_none() {
        create_ignoring_conflict(&accounts, &default_account(name)).await?;
    }
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), name);
    let wanted = root_ca_config_map(name, &ctx.ca_cert_pem);
    match config_maps.get_opt(ROOT_CA_CONFIGMAP).await? {
        None => create_ignoring_conflict(&config_maps, &wanted).await?,
        Some(current) if current.data != wanted.data => {
            let body = serde_json::json!({"data": wanted.data});
            config_maps
                .patch(
                    ROOT_CA_CONFIGMAP,
                    &PatchParams::default(),
                    &Patch::Merge(&body),
                )
                .await?;
        }
        Some(_) => {}
    }
    Ok(Action::await_change())
}

async fn create_ignoring_conflict<K>(api: &Api<K>, object: &K) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        // Someone else (or an earlier sync) made it meanwhile: fine.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub fn default_account(namespace: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: ObjectMeta {
            name: Some(DEFAULT_ACCOUNT.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

pub fn root_ca_config_map(namespace: &str, ca_cert_pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(ROOT_CA_CONFIGMAP.into()),
            namespace: Some(namespace.into()),
            annotations: Some(BTreeMap::from([(
                "kubernetes.io/description".to_string(),
                DESCRIPTION.to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            ROOT_CA_KEY.to_string(),
            ca_cert_pem.to_string(),
        )])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_ca_config_map_holds_the_pem_under_ca_crt() {
        let cm = root_ca_config_map("team-a", "-----BEGIN CERTIFICATE-----\n");
        assert_eq!(cm.metadata.name.as_deref(), Some("kube-root-ca.crt"));
        assert_eq!(cm.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(
            cm.data.unwrap().get("ca.crt").map(String::as_str),
            Some("-----BEGIN CERTIFICATE-----\n")
        );
    }

    #[test]
    fn only_the_watched_names_wake_their_namespace() {
        let meta = |name: &str| ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team-a".into()),
            ..Default::default()
        };
        assert_eq!(
            wake_namespace(&meta("default"), DEFAULT_ACCOUNT),
            Some(ObjectRef::new("team-a"))
        );
        assert_eq!(wake_namespace(&meta("builder"), DEFAULT_ACCOUNT), None);
        assert_eq!(
            default_account("x").metadata.name.as_deref(),
            Some("default")
        );
    }
}
