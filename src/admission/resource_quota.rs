//! ResourceQuota admission: a create that would take a namespace over one of its quotas is
//! refused with 403, as upstream's plugin, with upstream's messages.
//!
//! Usage is counted from the stored objects at admission time, so no admission waits for the
//! quota controller to catch up after a delete. Two creates racing each other would both pass
//! that count (neither sees the other's object yet), so, as upstream, admission also writes the
//! quota's new `status.used` with a compare-and-swap and counts at least what that status says:
//! of two racing creates one loses the swap and is charged again, the other's share included.

use async_trait::async_trait;
use serde_json::Value;

use super::quota::{self, Usage};
use super::{Attributes, Operation, Plugin};
use crate::api::resources::{self, Resource};
use crate::api::{ApiError, ApiResult};
use crate::registry::generic::{decode, ListOptions, Part, Registry};

pub struct ResourceQuota {
    registry: Registry,
}

impl ResourceQuota {
    pub fn new(registry: Registry) -> ResourceQuota {
        ResourceQuota { registry }
    }

    fn list(&self, r: &Resource, namespace: &str) -> ApiResult<Vec<Value>> {
        let page = self
            .registry
            .list(r, Some(namespace), &ListOptions::default())?;
        page.items.iter().map(|raw| decode(raw)).collect()
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
        for _ in 0..MAX_RESERVE_ATTEMPTS {
            let mut quotas = self.list(quotas_resource, a.namespace)?;
            quotas.retain(|q| {
                quota::hard_of(q)
                    .keys()
                    .any(|k| quota::concerns(group, plural, k))
                    && quota::scopes_match(&quota::scopes_of(q), group, plural, object)
            });
            if quotas.is_empty() {
                return Ok(());
            }
            quotas.sort_by_key(|q| crate::api::meta::name(q).to_string());
            let existing = self.list(a.resource, a.namespace)?;
            let reservations = charge(a, object, &quotas, &existing)?;
            if a.dry_run {
                return Ok(());
            }
            if self
                .reserve(quotas_resource, a.namespace, reservations)
                .await?
            {
                return Ok(());
            }
        }
        Err(ApiError::conflict(
            a.resource.group,
            a.resource.plural,
            a.name,
            "too many concurrent creates charged to the same quota, try again",
        ))
    }
}

/// Concurrent creates charged to one quota retry this often before giving up with 409.
const MAX_RESERVE_ATTEMPTS: usize = 16;

/// What a quota will say it has used once an admitted create is stored.
struct Reservation {
    quota: String,
    resource_version: String,
    used: Usage,
}

impl ResourceQuota {
    /// Writes each quota's new `status.used` with a compare-and-swap on the resourceVersion it
    /// was read at, as upstream does. A create racing this one charged to the same quota changes
    /// that resourceVersion, so one of the two writes fails and that create is charged again
    /// against what the other reserved. False if a quota changed meanwhile.
    async fn reserve(
        &self,
        quotas_resource: &'static Resource,
        namespace: &str,
        reservations: Vec<Reservation>,
    ) -> ApiResult<bool> {
        for reservation in reservations {
            let used: serde_json::Map<String, Value> = reservation
                .used
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(quota::format_quantity(*v))))
                .collect();
            let written = self
                .registry
                .update_with(
                    quotas_resource,
                    namespace,
                    &reservation.quota,
                    Part::Status,
                    false,
                    |old| {
                        let mut new = old.clone();
                        new["metadata"]["resourceVersion"] =
                            Value::String(reservation.resource_version.clone());
                        let status = &mut new["status"];
                        if !status.is_object() {
                            *status = Value::Object(Default::default());
                        }
                        let current = status["used"].as_object().cloned().unwrap_or_default();
                        let mut merged = current;
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

/// Charges `object` to every quota that limits it: refused with upstream's message if one would
/// go over, else the usage each quota reaches. Usage is the larger of what the stored objects
/// add up to and what the quota's status says: the status holds what creates admitted but not
/// yet stored have reserved.
fn charge(
    a: &Attributes<'_>,
    object: &Value,
    quotas: &[Value],
    existing: &[Value],
) -> ApiResult<Vec<Reservation>> {
    let (group, plural) = (a.resource.group, a.resource.plural);
    let requested = quota::usage(group, plural, object);
    let mut reservations = Vec::new();
    for q in quotas {
        let quota_name = crate::api::meta::name(q);
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
        let reported = quota::used_of(q);
        for key in &limited {
            if let Some(&status) = reported.get(*key) {
                let counted = used.entry(key.to_string()).or_default();
                *counted = (*counted).max(status);
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
        reservations.push(Reservation {
            quota: quota_name.to_string(),
            resource_version: crate::api::meta::resource_version(q).to_string(),
            used: after,
        });
    }
    Ok(reservations)
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
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::registry::services::ServiceNetwork;
    use crate::store::{Store, StoreOptions};

    async fn registry(dir: &std::path::Path) -> Registry {
        let store = Store::open(&dir.join("s.redb"), StoreOptions::default()).expect("a store");
        let network = ServiceNetwork::parse("10.43.0.0/16", (30000, 32767)).expect("a network");
        let registry = Registry::new(store, network);
        crate::registry::bootstrap::ensure_system_objects(&registry, "10.43.0.10".parse().unwrap())
            .await
            .expect("system objects");
        registry
            .admission()
            .register(Arc::new(ResourceQuota::new(registry.clone())));
        registry
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_many_creates_racing_for_the_last_place_in_a_quota_only_one_gets_it() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let registry = registry(dir.path()).await;
        let quotas = resources::find("", "v1", "resourcequotas").expect("quotas");
        let config_maps = resources::find("", "v1", "configmaps").expect("config maps");
        let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": "q", "namespace": "default"},
            "spec": {"hard": {"count/configmaps": "3"}}});
        registry
            .create(quotas, "default", quota, false)
            .await
            .expect("create the quota");
        // The namespace's kube-root-ca.crt is not made here (no controllers): the quota starts
        // empty, with room for three.
        let creates = (0..12).map(|i| {
            let registry = registry.clone();
            let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("cm-{i}"), "namespace": "default"}});
            tokio::spawn(async move { registry.create(config_maps, "default", body, false).await })
        });
        let results = futures::future::join_all(creates).await;
        let admitted = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        let refused: Vec<String> = results
            .iter()
            .filter_map(|r| match r {
                Ok(Err(e)) => Some(e.message.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(admitted, 3, "{refused:?}");
        assert!(
            refused.iter().all(|m| m.contains("exceeded quota: q")),
            "{refused:?}"
        );
        let stored = registry
            .list(config_maps, Some("default"), &ListOptions::default())
            .expect("list")
            .items
            .len();
        assert_eq!(stored, 3);
        let quota = registry
            .get_value(quotas, "default", "q")
            .expect("the quota");
        assert_eq!(quota["status"]["used"]["count/configmaps"], "3");
    }
}
