//! ResourceQuota admission: a create that would take a namespace over one of its quotas is
//! refused with 403, as upstream's plugin, with upstream's messages.
//!
//! Usage is counted from the stored objects at admission time rather than from the quota's
//! `status.used` (which the quota controller keeps for people to read): on one node the list is
//! cheap and always current, so no admission waits for a controller to catch up. Two creates
//! racing each other can both pass; upstream closes that gap by writing `status.used` as part
//! of admission, which berth does not do yet.

use async_trait::async_trait;
use serde_json::Value;

use super::quota::{self, Usage};
use super::{Attributes, Operation, Plugin};
use crate::api::resources::{self, Resource};
use crate::api::{ApiError, ApiResult};
use crate::registry::generic::{decode, ListOptions, Registry};

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
        let requested = quota::usage(group, plural, object);
        let existing = self.list(a.resource, a.namespace)?;
        for q in &quotas {
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
            let exceeded: Vec<&str> = limited
                .iter()
                .copied()
                .filter(|key| {
                    let asked = requested.get(*key).copied().unwrap_or(0);
                    asked > 0 && used.get(*key).copied().unwrap_or(0) + asked > hard[*key]
                })
                .collect();
            if exceeded.is_empty() {
                continue;
            }
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
        Ok(())
    }
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
