//! The webhooks of all Validating/MutatingWebhookConfigurations, kept current by watching the
//! store, so admission never lists configurations on the write path.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhookConfiguration, RuleWithOperations,
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as MetaLabelSelector;
use serde::de::DeserializeOwned;

use crate::api::resources::{self, Resource};
use crate::api::selectors::LabelSelector;
use crate::registry::generic::{decode, ListOptions};
use crate::registry::Registry;

/// Upstream's default and ceiling for `timeoutSeconds`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_TIMEOUT: Duration = Duration::from_secs(30);
/// The store prefix both configuration kinds live under.
const PREFIX: &str = "/admissionregistration.k8s.io/";

/// One webhook of a configuration, ready to match and call.
#[derive(Debug, Clone)]
pub struct Hook {
    pub name: String,
    pub client: WebhookClientConfig,
    pub rules: Vec<RuleWithOperations>,
    /// failurePolicy Fail (the default) rather than Ignore.
    pub fail_closed: bool,
    pub namespace_selector: LabelSelector,
    pub object_selector: LabelSelector,
    /// sideEffects None or NoneOnDryRun: safe to call on a dry run.
    pub dry_run_safe: bool,
    pub timeout: Duration,
    /// CEL conditions that must all hold for the webhook to be called.
    pub match_conditions: Vec<MatchCondition>,
}

#[derive(Debug, Default)]
pub struct Hooks {
    pub mutating: Vec<Hook>,
    pub validating: Vec<Hook>,
}

#[derive(Clone, Default)]
pub struct Cache {
    hooks: Arc<RwLock<Arc<Hooks>>>,
}

impl Cache {
    /// Loads the configurations now and keeps reloading them on every change in a task.
    pub fn start(registry: &Registry) -> Cache {
        let cache = Cache::default();
        let revision = cache.reload(registry);
        tokio::spawn(cache.clone().follow(registry.clone(), revision));
        cache
    }

    pub fn hooks(&self) -> Arc<Hooks> {
        self.hooks.read().map(|h| h.clone()).unwrap_or_default()
    }

    /// Lists both kinds and swaps the hooks in; returns the revision the list was at.
    fn reload(&self, registry: &Registry) -> u64 {
        let revision = registry.store().revision();
        let hooks = Hooks {
            mutating: load::<MutatingWebhookConfiguration>(
                registry,
                "mutatingwebhookconfigurations",
            )
            .into_iter()
            .flat_map(|c| c.webhooks.unwrap_or_default())
            .filter_map(|w| {
                hook(
                    w.name,
                    w.client_config,
                    w.rules,
                    w.failure_policy,
                    w.namespace_selector,
                    w.object_selector,
                    w.side_effects,
                    w.timeout_seconds,
                    w.match_conditions,
                )
            })
            .collect(),
            validating: load::<ValidatingWebhookConfiguration>(
                registry,
                "validatingwebhookconfigurations",
            )
            .into_iter()
            .flat_map(|c| c.webhooks.unwrap_or_default())
            .filter_map(|w| {
                hook(
                    w.name,
                    w.client_config,
                    w.rules,
                    w.failure_policy,
                    w.namespace_selector,
                    w.object_selector,
                    w.side_effects,
                    w.timeout_seconds,
                    w.match_conditions,
                )
            })
            .collect(),
        };
        if let Ok(mut current) = self.hooks.write() {
            *current = Arc::new(hooks);
        }
        revision
    }

    /// Reloads after each change; re-lists from scratch whenever the watch ends (fell behind or
    /// compacted), as a reflector does.
    async fn follow(self, registry: Registry, mut revision: u64) {
        loop {
            match registry.store().watch(PREFIX, revision) {
                Ok(mut watch) => {
                    while watch.next().await.is_some() {
                        self.reload(&registry);
                    }
                }
                Err(e) => tracing::warn!("watching webhook configurations: {e}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            revision = self.reload(&registry);
        }
    }
}

/// The configurations of one kind, sorted by name as upstream calls them.
fn load<T: DeserializeOwned>(registry: &Registry, plural: &str) -> Vec<T> {
    let Some(resource) = configuration_resource(plural) else {
        return Vec::new();
    };
    let page = match registry.list(resource, None, &ListOptions::default()) {
        Ok(page) => page,
        Err(e) => {
            tracing::warn!("listing {plural}: {e}");
            return Vec::new();
        }
    };
    // The store lists in key order, which is name order for cluster-scoped kinds.
    page.items
        .iter()
        .filter_map(|raw| decode(raw).ok())
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect()
}

fn configuration_resource(plural: &str) -> Option<&'static Resource> {
    resources::find("admissionregistration.k8s.io", "v1", plural)
}

#[allow(clippy::too_many_arguments)]
fn hook(
    name: String,
    client: WebhookClientConfig,
    rules: Option<Vec<RuleWithOperations>>,
    failure_policy: Option<String>,
    namespace_selector: Option<MetaLabelSelector>,
    object_selector: Option<MetaLabelSelector>,
    side_effects: String,
    timeout_seconds: Option<i32>,
    match_conditions: Option<Vec<MatchCondition>>,
) -> Option<Hook> {
    let selector = |s: Option<MetaLabelSelector>| match s {
        Some(s) => LabelSelector::from_label_selector(&s).ok(),
        None => Some(LabelSelector::default()),
    };
    let timeout = timeout_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT)
        .min(MAX_TIMEOUT);
    Some(Hook {
        name,
        client,
        rules: rules.unwrap_or_default(),
        fail_closed: failure_policy.as_deref() != Some("Ignore"),
        // A selector that does not parse was refused at validation upstream; skip the hook.
        namespace_selector: selector(namespace_selector)?,
        object_selector: selector(object_selector)?,
        dry_run_safe: matches!(side_effects.as_str(), "None" | "NoneOnDryRun"),
        timeout,
        match_conditions: match_conditions.unwrap_or_default(),
    })
}
