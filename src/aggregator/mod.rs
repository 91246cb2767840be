//! API aggregation (`apiregistration.k8s.io/v1` APIServices), as upstream's kube-aggregator:
//! an APIService with a `spec.service` makes `/apis/<group>/<version>/...` a reverse proxy to
//! that Service, authenticated with the front-proxy client certificate and naming the user in
//! `X-Remote-*` headers. Local APIServices (no service) change nothing: berth serves those
//! groups itself; a service-backed one for a group berth serves (`metrics.k8s.io`) takes over.
//!
//! - `backend`: endpoint resolution and the TLS connection to an aggregated server.
//! - `availability`: the `Available` condition and the backend's discovery document.
//! - `proxy`: forwarding one request (watch and upgrades included).
//! - `discovery`: the aggregated groups in `/apis` (legacy and aggregated discovery).
//! - `authentication`: the `extension-apiserver-authentication` ConfigMap and the roles that
//!   let aggregated servers read it and delegate authentication and authorization.

pub mod authentication;
mod availability;
pub mod backend;
mod discovery;
pub mod proxy;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;

use crate::api::resources;
use crate::registry::generic::{decode, ListOptions};
use crate::registry::Registry;
use backend::ClientIdentity;

/// How often every service-backed APIService is checked again, besides on each change.
const RECHECK: Duration = Duration::from_secs(10);

/// One service-backed APIService, as the proxy needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Remote {
    pub name: String,
    pub group: String,
    pub version: String,
    pub namespace: String,
    pub service: String,
    pub port: i32,
    pub ca_bundle: Vec<u8>,
    pub insecure: bool,
    pub group_priority: i64,
    pub version_priority: i64,
    /// The stored `Available` condition is True: only then are requests proxied, as upstream.
    pub available: bool,
    /// The stored `Available` condition as (status, reason, message).
    pub condition: Option<(String, String, String)>,
}

impl Remote {
    fn from_api_service(object: &Value) -> Option<Remote> {
        let spec = object.get("spec")?;
        let service = spec.get("service")?;
        let condition = object
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Available")
            .map(|c| {
                let text = |k: &str| c[k].as_str().unwrap_or("").to_string();
                (text("status"), text("reason"), text("message"))
            });
        Some(Remote {
            name: crate::api::meta::name(object).to_string(),
            group: spec["group"].as_str().unwrap_or("").to_string(),
            version: spec["version"].as_str().unwrap_or("").to_string(),
            namespace: service["namespace"].as_str().unwrap_or("").to_string(),
            service: service["name"].as_str().unwrap_or("").to_string(),
            port: service["port"]
                .as_i64()
                .and_then(|p| i32::try_from(p).ok())
                .unwrap_or(443),
            ca_bundle: spec["caBundle"]
                .as_str()
                .and_then(|b| {
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b).ok()
                })
                .unwrap_or_default(),
            insecure: spec["insecureSkipTLSVerify"].as_bool().unwrap_or(false),
            group_priority: spec["groupPriorityMinimum"].as_i64().unwrap_or(0),
            version_priority: spec["versionPriority"].as_i64().unwrap_or(0),
            available: condition.as_ref().is_some_and(|c| c.0 == "True"),
            condition,
        })
    }

    /// The name the backend's serving certificate must carry, as upstream dials it.
    pub fn server_name(&self) -> String {
        format!("{}.{}.svc", self.service, self.namespace)
    }
}

/// The APIServices this server proxies for, kept current by watching the store.
pub struct Aggregator {
    registry: Registry,
    identity: ClientIdentity,
    /// Pooled connections to the backends, one client per APIService.
    clients: backend::Clients,
    remotes: RwLock<Arc<Vec<Remote>>>,
    /// The backend's APIResourceList by APIService name, from its last successful check.
    discovery: RwLock<BTreeMap<String, Value>>,
    changed: tokio::sync::Notify,
}

impl Aggregator {
    /// Loads the APIServices now, follows their changes and checks their backends in tasks.
    pub fn start(registry: &Registry, identity: ClientIdentity) -> Arc<Aggregator> {
        let aggregator = Arc::new(Aggregator {
            registry: registry.clone(),
            identity,
            clients: backend::Clients::default(),
            remotes: RwLock::new(Arc::new(Vec::new())),
            discovery: RwLock::new(BTreeMap::new()),
            changed: tokio::sync::Notify::new(),
        });
        let revision = aggregator.reload();
        tokio::spawn(aggregator.clone().follow(revision));
        tokio::spawn(aggregator.clone().check_forever());
        aggregator
    }

    /// The remote serving `path`, when it is under a service-backed group/version.
    pub fn remote_for(&self, path: &str) -> Option<Remote> {
        let mut segments = path.trim_start_matches('/').split('/');
        if segments.next() != Some("apis") {
            return None;
        }
        let (group, version) = (segments.next()?, segments.next()?);
        self.remotes()
            .iter()
            .find(|r| r.group == group && r.version == version)
            .cloned()
    }

    fn remotes(&self) -> Arc<Vec<Remote>> {
        self.remotes.read().map(|r| r.clone()).unwrap_or_default()
    }

    fn discovery_of(&self, name: &str) -> Option<Value> {
        self.discovery.read().ok()?.get(name).cloned()
    }

    /// Lists the APIServices and swaps the remotes in; returns the revision the list was at.
    fn reload(&self) -> u64 {
        let revision = self.registry.store().revision();
        let Some(resource) = api_services() else {
            return revision;
        };
        let remotes: Vec<Remote> = match self.registry.list(resource, None, &ListOptions::default())
        {
            Ok(page) => page
                .items
                .iter()
                .filter_map(|raw| decode(raw).ok())
                .filter_map(|o| Remote::from_api_service(&o))
                .collect(),
            Err(e) => {
                tracing::warn!("listing apiservices: {e}");
                return revision;
            }
        };
        let changed = self.remotes().as_slice() != remotes.as_slice();
        let names: Vec<&str> = remotes.iter().map(|r| r.name.as_str()).collect();
        self.clients.retain(&names);
        if let Ok(mut current) = self.remotes.write() {
            *current = Arc::new(remotes);
        }
        if changed {
            self.changed.notify_one();
        }
        revision
    }

    /// Reloads after each change; re-lists whenever the watch ends, as a reflector does.
    async fn follow(self: Arc<Self>, mut revision: u64) {
        let prefix = match api_services() {
            Some(r) => r.key_prefix(),
            None => return,
        };
        loop {
            match self.registry.store().watch(&prefix, revision) {
                Ok(mut watch) => {
                    while watch.next().await.is_some() {
                        self.reload();
                    }
                }
                Err(e) => tracing::warn!("watching apiservices: {e}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            revision = self.reload();
        }
    }

    /// Checks every service-backed APIService on each change and every [`RECHECK`].
    async fn check_forever(self: Arc<Self>) {
        loop {
            let remotes = self.remotes();
            for remote in remotes.iter() {
                let outcome = availability::check(&self, remote).await;
                self.record(remote, outcome).await;
            }
            let known: Vec<String> = remotes.iter().map(|r| r.name.clone()).collect();
            if let Ok(mut discovery) = self.discovery.write() {
                discovery.retain(|name, _| known.contains(name));
            }
            tokio::select! {
                _ = tokio::time::sleep(RECHECK) => {}
                _ = self.changed.notified() => {}
            }
        }
    }

    /// Keeps the discovery document and writes the condition when it changed.
    async fn record(&self, remote: &Remote, outcome: availability::Outcome) {
        if let Some(doc) = outcome.discovery {
            if let Ok(mut discovery) = self.discovery.write() {
                discovery.insert(remote.name.clone(), doc);
            }
        }
        let condition = (
            outcome.status.to_string(),
            outcome.reason.to_string(),
            outcome.message.clone(),
        );
        if remote.condition.as_ref() == Some(&condition) {
            return;
        }
        if let Err(e) =
            availability::write_condition(&self.registry, &remote.name, &condition).await
        {
            tracing::warn!(apiservice = %remote.name, "updating the Available condition: {e}");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetUpError {
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    #[error(transparent)]
    Backend(#[from] backend::BackendError),
    #[error("publishing the extension-apiserver-authentication ConfigMap: {0}")]
    Publish(crate::api::ApiError),
}

/// Makes (or loads) the front-proxy certificates under `pki_dir`, publishes what aggregated
/// servers need to trust them, and starts proxying for `server`.
pub async fn set_up(
    server: &crate::apiserver::ApiServer,
    pki_dir: &std::path::Path,
    pki: &crate::pki::Pki,
    policy: &crate::pki::RotationPolicy,
) -> Result<(), SetUpError> {
    let front_proxy = crate::pki::FrontProxy::ensure(pki_dir, policy)?;
    authentication::publish(&server.registry, &pki.ca_cert_pem, &front_proxy)
        .await
        .map_err(SetUpError::Publish)?;
    let identity =
        ClientIdentity::from_pem(&front_proxy.client_cert_pem, &front_proxy.client_key_pem)?;
    server.set_aggregator(Aggregator::start(&server.registry, identity));
    Ok(())
}

fn api_services() -> Option<&'static resources::Resource> {
    resources::find("apiregistration.k8s.io", "v1", "apiservices")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_api_service_without_a_service_is_local_and_not_proxied() {
        let local =
            json!({"metadata": {"name": "v1.apps"}, "spec": {"group": "apps", "version": "v1"}});
        assert_eq!(Remote::from_api_service(&local), None);
    }

    #[test]
    fn a_service_backed_api_service_is_available_only_with_a_true_condition() {
        let mut object = json!({
            "metadata": {"name": "v1.example.io"},
            "spec": {"group": "example.io", "version": "v1", "groupPriorityMinimum": 1000,
                     "versionPriority": 15, "insecureSkipTLSVerify": true,
                     "service": {"namespace": "ns", "name": "svc"}},
        });
        let remote = Remote::from_api_service(&object).expect("a remote");
        assert_eq!(remote.port, 443, "the port defaults to 443");
        assert_eq!(remote.server_name(), "svc.ns.svc");
        assert!(remote.insecure);
        assert!(!remote.available);
        object["status"] = json!({"conditions": [
            {"type": "Available", "status": "True", "reason": "Passed", "message": "all checks passed"}
        ]});
        assert!(
            Remote::from_api_service(&object)
                .expect("a remote")
                .available
        );
    }
}
