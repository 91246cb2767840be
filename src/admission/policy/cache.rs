//! The ValidatingAdmissionPolicies and their bindings, kept current by watching the store so
//! admission never lists them on the write path.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use serde::de::DeserializeOwned;

use crate::api::resources;
use crate::registry::generic::{decode, ListOptions};
use crate::registry::Registry;

/// The store prefix both kinds live under (with the webhook configurations).
const PREFIX: &str = "/admissionregistration.k8s.io/";

#[derive(Default)]
pub struct Policies {
    pub policies: Vec<ValidatingAdmissionPolicy>,
    /// In name order, the order upstream evaluates them in.
    pub bindings: Vec<ValidatingAdmissionPolicyBinding>,
}

impl Policies {
    pub fn policy(&self, name: &str) -> Option<&ValidatingAdmissionPolicy> {
        self.policies
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
    }
}

#[derive(Clone, Default)]
pub struct Cache {
    current: Arc<RwLock<Arc<Policies>>>,
}

impl Cache {
    /// Loads both kinds now and reloads them on every change, in a task.
    pub fn start(registry: &Registry) -> Cache {
        let cache = Cache::default();
        let revision = cache.reload(registry);
        tokio::spawn(cache.clone().follow(registry.clone(), revision));
        cache
    }

    pub fn get(&self) -> Arc<Policies> {
        self.current.read().map(|c| c.clone()).unwrap_or_default()
    }

    fn reload(&self, registry: &Registry) -> u64 {
        let revision = registry.store().revision();
        let policies = Policies {
            policies: load(registry, "validatingadmissionpolicies"),
            bindings: load(registry, "validatingadmissionpolicybindings"),
        };
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(policies);
        }
        revision
    }

    /// Reloads after each change; re-lists whenever the watch ends, as a reflector does. The
    /// policies' status follows their spec (type checking) after each reload.
    async fn follow(self, registry: Registry, mut revision: u64) {
        super::status::update_all(&registry, &self.get().policies).await;
        loop {
            match registry.store().watch(PREFIX, revision) {
                Ok(mut watch) => {
                    while watch.next().await.is_some() {
                        self.reload(&registry);
                        super::status::update_all(&registry, &self.get().policies).await;
                    }
                }
                Err(e) => tracing::warn!("watching admission policies: {e}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            revision = self.reload(&registry);
        }
    }
}

fn load<T: DeserializeOwned>(registry: &Registry, plural: &str) -> Vec<T> {
    let Some(resource) = resources::find("admissionregistration.k8s.io", "v1", plural) else {
        return Vec::new();
    };
    match registry.list(resource, None, &ListOptions::default()) {
        // The store lists in key order: name order for these cluster-scoped kinds.
        Ok(page) => page
            .items
            .iter()
            .filter_map(|raw| decode(raw).ok())
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect(),
        Err(e) => {
            tracing::warn!("listing {plural}: {e}");
            Vec::new()
        }
    }
}
