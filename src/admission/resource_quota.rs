//! ResourceQuota admission: a create that would take a namespace over one of its quotas is
//! refused with 403, as upstream's plugin, with upstream's messages.
//!
//! Usage is counted from the stored objects plus the creates admitted but not stored yet (the
//! [`quota_ledger`]), not from the quota's `status.used`: that status lags a delete or a pod
//! finishing until the quota controller recounts, and a create right after should fit. As
//! upstream, an admitted create is then charged to the quota's `status.used` with a
//! compare-and-swap on its resourceVersion. Creates admitted here are taken one at a time, so
//! the swap fails only when someone else wrote the quota meanwhile (the controller, or another
//! server sharing the store, whose pending creates this one cannot see): the create is then
//! charged again, counting at least what the quota's status now says.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::quota::{self, Usage};
use super::quota_ledger::{self, Ledger};
use super::{Attributes, Operation, Plugin};
use crate::api::resources::{self, Resource};
use crate::api::{meta, ApiError, ApiResult};
use crate::registry::generic::{decode, ListOptions, Part, Registry};

/// A create whose quota keeps changing under it gives up with 409 after this many tries.
const MAX_CHARGE_ATTEMPTS: usize = 16;

pub struct ResourceQuota {
    registry: Registry,
    ledger: Arc<Ledger>,
    /// One charge at a time, so creates admitted here never race each other's swap.
    charging: tokio::sync::Mutex<()>,
}

impl ResourceQuota {
    pub fn new(registry: Registry) -> ResourceQuota {
        ResourceQuota::with_ledger(registry, quota_ledger::global())
    }

    pub fn with_ledger(registry: Registry, ledger: Arc<Ledger>) -> ResourceQuota {
        ResourceQuota {
            registry,
            ledger,
            charging: tokio::sync::Mutex::new(()),
        }
    }

    fn list(&self, r: &Resource, namespace: &str) -> ApiResult<Vec<Value>> {
        let page = self
            .registry
            .list(r, Some(namespace), &ListOptions::default())?;
        page.items.iter().map(|raw| decode(raw)).collect()
    }

    /// The namespace's quotas that limit `object`, by name.
    fn quotas_limiting(
        &self,
        quotas_resource: &Resource,
        a: &Attributes<'_>,
        object: &Value,
    ) -> ApiResult<Vec<Value>> {
        let (group, plural) = (a.resource.group, a.resource.plural);
        let mut quotas = self.list(quotas_resource, a.namespace)?;
        quotas.retain(|q| {
            quota::hard_of(q)
                .keys()
                .any(|k| quota::concerns(group, plural, k))
                && quota::scopes_match(&quota::scopes_of(q), group, plural, object)
        });
        quotas.sort_by_key(|q| meta::name(q).to_string());
        Ok(quotas)
    }

    /// The objects of the created kind that count now: stored ones and admitted ones on their
    /// way to the store (the ledger is read first, so an object stored meanwhile is listed).
    fn counted_objects(&self, a: &Attributes<'_>, own_uid: &str) -> ApiResult<Vec<Value>> {
        let (group, plural) = (a.resource.group, a.resource.plural);
        let pending = self.ledger.pending(a.namespace, group, plural);
        let mut objects = self.list(a.resource, a.namespace)?;
        let stored: HashSet<String> = objects
            .iter()
            .map(|o| meta::meta_str(o, "uid").to_string())
            .collect();
        objects.extend(
            pending
                .into_iter()
                .filter(|(uid, _)| uid != own_uid && !stored.contains(uid))
                .map(|(_, object)| object),
        );
        Ok(objects)
    }

    /// Writes each quota's `status.used` as `charges` say, on the resourceVersion it was read
    /// at. False if a quota changed meanwhile.
    async fn write_charges(
        &self,
        quotas_resource: &'static Resource,
        namespace: &str,
        charges: &[Charge],
    ) -> ApiResult<bool> {
        for charge in charges {
            let used: serde_json::Map<String, Value> = charge
                .used
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(quota::format_quantity(*v))))
                .collect();
            let written = self
                .registry
                .update_with(
                    quotas_resource,
                    namespace,
                    &charge.quota,
                    Part::Status,
                    false,
                    |old| {
                        let mut new = old.clone();
                        new["metadata"]["resourceVersion"] =
                            Value::String(charge.resource_version.clone());
                        let status = &mut new["status"];
                        if !status.is_object() {
                            *status = Value::Object(Default::default());
                        }
                        let mut merged = status["used"].as_object().cloned().unwrap_or_default();
                        merged.extend(used.clone());
                        status["used"] = Value::Object(merged);
                        Ok(new)
                    },
                )
                .await;
            match written {
                Ok(_) => {}
                Err(e) if e.code == 409 => return Ok(false),
                // Deleted meanwhile: it limits nothing any more.
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

#[async_trait]
impl Plugin for ResourceQuota {
    fn name(&self) -> &'static str {
        "ResourceQuota"
    }

    async fn validate(&self, a: &Attributes<'_>, object: Option<&Value>) -> ApiResult<()> {
        let (Operation::Create, None, Some(object)) = (a.operation, a.subresource, object) else {
            return Ok(());
        };
        if !a.resource.namespaced || a.namespace.is_empty() {
            return Ok(());
        }
        let (group, plural) = (a.resource.group, a.resource.plural);
        if !quota::counts(group, plural, object) {
            return Ok(());
        }
        let Some(quotas_resource) = resources::find("", "v1", "resourcequotas") else {
            return Ok(());
        };
        // Most namespaces have no quota: they list nothing and take no lock.
        if !self.registry.has_resource_quotas(a.namespace)?
            || self.quotas_limiting(quotas_resource, a, object)?.is_empty()
        {
            return Ok(());
        }
        let _one_at_a_time = self.charging.lock().await;
        let uid = meta::meta_str(object, "uid");
        let mut raced = false;
        for _ in 0..MAX_CHARGE_ATTEMPTS {
            let quotas = self.quotas_limiting(quotas_resource, a, object)?;
            if quotas.is_empty() {
                return Ok(());
            }
            let existing = self.counted_objects(a, uid)?;
            let charges = charge(a, object, &quotas, &existing, raced)?;
            if a.dry_run {
                return Ok(());
            }
            // Pending before the swap: whoever reads the quota after it counts this create.
            self.ledger.charge(uid, a.namespace, group, plural, object);
            if self
                .write_charges(quotas_resource, a.namespace, &charges)
                .await?
            {
                return Ok(());
            }
            self.ledger.settle(uid);
            raced = true;
        }
        Err(ApiError::conflict(
            group,
            plural,
            a.name,
            "too many concurrent writes to the quotas charged, try again",
        ))
    }

    fn settled(&self, uid: &str) {
        self.ledger.settle(uid);
    }
}

/// What a quota will say it has used once an admitted create is stored.
struct Charge {
    quota: String,
    resource_version: String,
    used: Usage,
}

/// Charges `object` to every quota that limits it: refused with upstream's message if one would
/// go over, else the usage each quota reaches. After a lost swap (`raced`) usage is at least
/// what the quota's status says, which holds the charges of creates this server cannot see.
fn charge(
    a: &Attributes<'_>,
    object: &Value,
    quotas: &[Value],
    existing: &[Value],
    raced: bool,
) -> ApiResult<Vec<Charge>> {
    let (group, plural) = (a.resource.group, a.resource.plural);
    let requested = quota::usage(group, plural, object);
    let mut charges = Vec::new();
    for q in quotas {
        let quota_name = meta::name(q);
        let hard = quota::hard_of(q);
        let limited: Vec<&str> = hard
            .keys()
            .filter(|k| quota::concerns(group, plural, k))
            .map(String::as_str)
            .collect();
        if group.is_empty() && plural == "pods" {
            if let Some(missing) = quota::missing_pod_constraints(object, &limited) {
                return Err(forbidden(
                    a,
                    &format!("failed quota: {quota_name}: {missing}"),
                ));
            }
        }
        let scopes = quota::scopes_of(q);
        let mut used = Usage::new();
        for other in existing.iter().filter(|o| {
            quota::counts(group, plural, o) && quota::scopes_match(&scopes, group, plural, o)
        }) {
            for (key, amount) in quota::usage(group, plural, other) {
                if limited.contains(&key.as_str()) {
                    *used.entry(key).or_default() += amount;
                }
            }
        }
        if raced {
            for (key, reported) in quota::used_of(q) {
                if limited.contains(&key.as_str()) {
                    let counted = used.entry(key).or_default();
                    *counted = (*counted).max(reported);
                }
            }
        }
        let exceeded: Vec<&str> = limited
            .iter()
            .copied()
            .filter(|key| {
                let asked = requested.get(*key).copied().unwrap_or(0);
                asked > 0 && used.get(*key).copied().unwrap_or(0) + asked > hard[*key]
            })
            .collect();
        if !exceeded.is_empty() {
            let mask = |u: &Usage| -> Usage {
                exceeded
                    .iter()
                    .map(|k| (k.to_string(), u.get(*k).copied().unwrap_or(0)))
                    .collect()
            };
            return Err(forbidden(
                a,
                &format!(
                    "exceeded quota: {quota_name}, requested: {}, used: {}, limited: {}",
                    quota::pretty(&mask(&requested)),
                    quota::pretty(&mask(&used)),
                    quota::pretty(&mask(&hard)),
                ),
            ));
        }
        let after: Usage = limited
            .iter()
            .map(|key| {
                let total = used.get(*key).copied().unwrap_or(0)
                    + requested.get(*key).copied().unwrap_or(0);
                (key.to_string(), total)
            })
            .collect();
        charges.push(Charge {
            quota: quota_name.to_string(),
            resource_version: meta::resource_version(q).to_string(),
            used: after,
        });
    }
    Ok(charges)
}

/// `pods "web-1" is forbidden: <why>`, as upstream's `admission.NewForbidden`.
pub fn forbidden(a: &Attributes<'_>, why: &str) -> ApiError {
    let mut error = ApiError::forbidden(format!(
        "{} \"{}\" is forbidden: {why}",
        qualified(a.resource),
        a.name
    ));
    error.group = a.resource.group.to_string();
    error.kind = a.resource.plural.to_string();
    error.name = a.name.to_string();
    error
}

fn qualified(r: &Resource) -> String {
    match r.group.is_empty() {
        true => r.plural.to_string(),
        false => format!("{}.{}", r.plural, r.group),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry::services::ServiceNetwork;
    use crate::store::{Store, StoreOptions};

    async fn registry(dir: &std::path::Path, ledger: Arc<Ledger>) -> Registry {
        let store = Store::open(&dir.join("s.redb"), StoreOptions::default()).expect("a store");
        let network = ServiceNetwork::parse("10.43.0.0/16", (30000, 32767)).expect("a network");
        let registry = Registry::new(store, network);
        crate::registry::bootstrap::ensure_system_objects(&registry, "10.43.0.10".parse().unwrap())
            .await
            .expect("system objects");
        registry
            .admission()
            .register(Arc::new(ResourceQuota::with_ledger(
                registry.clone(),
                ledger,
            )));
        registry
    }

    fn config_map(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default"}})
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_many_creates_racing_for_the_last_places_in_a_quota_only_as_many_get_them() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let ledger = Arc::new(Ledger::default());
        let registry = registry(dir.path(), Arc::clone(&ledger)).await;
        let quotas = resources::find("", "v1", "resourcequotas").expect("quotas");
        let config_maps = resources::find("", "v1", "configmaps").expect("config maps");
        let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": "q", "namespace": "default"},
            "spec": {"hard": {"count/configmaps": "3"}}});
        registry
            .create(quotas, "default", quota, false)
            .await
            .expect("create the quota");
        // No controllers here, so no kube-root-ca.crt: the quota starts with room for three.
        let creates = (0..12).map(|i| {
            let registry = registry.clone();
            let body = config_map(&format!("cm-{i}"));
            tokio::spawn(async move { registry.create(config_maps, "default", body, false).await })
        });
        let results = futures::future::join_all(creates).await;
        let admitted = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        let refused: Vec<String> = results
            .iter()
            .filter_map(|r| match r {
                Ok(Err(e)) => Some(format!("{} {}", e.code, e.message)),
                _ => None,
            })
            .collect();
        assert_eq!(admitted, 3, "{refused:?}");
        assert!(
            refused
                .iter()
                .all(|m| m.starts_with("403 ") && m.contains("exceeded quota: q")),
            "{refused:?}"
        );
        let quota = registry
            .get_value(quotas, "default", "q")
            .expect("the quota");
        assert_eq!(quota["status"]["used"]["count/configmaps"], "3");
        // Every create is settled: nothing is left pending.
        assert!(ledger.pending("default", "", "configmaps").is_empty());

        // Deleting one frees its place at once, although status.used still says 3.
        let stored = registry
            .list(config_maps, Some("default"), &ListOptions::default())
            .expect("list");
        let first = decode(&stored.items[0]).expect("a config map");
        registry
            .delete(
                config_maps,
                "default",
                meta::name(&first),
                &Default::default(),
            )
            .await
            .expect("delete one");
        let again = registry
            .create(config_maps, "default", config_map("again"), false)
            .await;
        assert!(again.is_ok(), "{again:?}");
        let too_many = registry
            .create(config_maps, "default", config_map("too-many"), false)
            .await;
        assert_eq!(too_many.map_err(|e| e.code).err(), Some(403));
    }

    #[tokio::test]
    async fn a_dry_run_create_is_checked_but_neither_charged_nor_held() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let ledger = Arc::new(Ledger::default());
        let registry = registry(dir.path(), Arc::clone(&ledger)).await;
        let quotas = resources::find("", "v1", "resourcequotas").expect("quotas");
        let config_maps = resources::find("", "v1", "configmaps").expect("config maps");
        let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": "q", "namespace": "default"},
            "spec": {"hard": {"count/configmaps": "1"}}});
        registry
            .create(quotas, "default", quota, false)
            .await
            .expect("create the quota");
        for _ in 0..2 {
            registry
                .create(config_maps, "default", config_map("dry"), true)
                .await
                .expect("a dry run fits");
        }
        assert!(ledger.pending("default", "", "configmaps").is_empty());
        let quota = registry
            .get_value(quotas, "default", "q")
            .expect("the quota");
        assert!(quota["status"]["used"].is_null(), "{quota:#}");
    }
}
