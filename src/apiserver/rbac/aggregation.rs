//! The ClusterRole aggregation controller: a ClusterRole with an `aggregationRule` gets as its
//! rules the union of the rules of every ClusterRole its selectors match (how `admin`, `edit`
//! and `view` pick up the roles CRD authors label `aggregate-to-*`).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::watcher;

use crate::api::selectors::LabelSelector;

/// Runs until the watch stream ends (the API server is gone).
pub async fn run(client: kube::Client) {
    let api: Api<ClusterRole> = Api::all(client);
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    while let Some(event) = events.next().await {
        match event {
            // The initial list is reconciled once, when it is complete.
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("cluster role watch: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        if let Err(e) = reconcile_all(&api).await {
            tracing::warn!("cannot aggregate cluster roles: {e}");
        }
    }
}

async fn reconcile_all(api: &Api<ClusterRole>) -> Result<(), kube::Error> {
    let roles = api.list(&ListParams::default()).await?.items;
    for role in &roles {
        let Some(rules) = aggregated_rules(role, &roles) else {
            continue;
        };
        if role.rules.clone().unwrap_or_default() == rules {
            continue;
        }
        let name = role.metadata.name.clone().unwrap_or_default();
        let patch = serde_json::json!({"rules": rules});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        tracing::info!(role = %name, rules = rules.len(), "aggregated cluster role");
    }
    Ok(())
}

/// The rules `role` aggregates from `all` (in selector order, then by role name, without
/// duplicates); None when it has no aggregation rule.
pub fn aggregated_rules(role: &ClusterRole, all: &[ClusterRole]) -> Option<Vec<PolicyRule>> {
    let selectors = role
        .aggregation_rule
        .as_ref()?
        .cluster_role_selectors
        .clone()
        .unwrap_or_default();
    let own_name = role.metadata.name.as_deref();
    let mut sorted: Vec<&ClusterRole> = all.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut rules: Vec<PolicyRule> = Vec::new();
    for selector in &selectors {
        let Ok(selector) = LabelSelector::from_label_selector(selector) else {
            continue;
        };
        for other in &sorted {
            if other.metadata.name.as_deref() == own_name {
                continue;
            }
            let labels: BTreeMap<String, String> =
                other.metadata.labels.clone().unwrap_or_default();
            if !selector.matches(&labels) {
                continue;
            }
            for rule in other.rules.iter().flatten() {
                if !rules.contains(rule) {
                    rules.push(rule.clone());
                }
            }
        }
    }
    Some(rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn role(value: serde_json::Value) -> ClusterRole {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn matching_roles_rules_are_unioned_without_duplicates() {
        let view = role(
            json!({"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]}}),
        );
        let crd = role(
            json!({"metadata": {"name": "widgets-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
            "rules": [{"verbs": ["get"], "apiGroups": ["example.com"], "resources": ["widgets"]}]}),
        );
        let base = role(
            json!({"metadata": {"name": "a-base", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, {"verbs": ["get"], "apiGroups": ["example.com"], "resources": ["widgets"]}]}),
        );
        let other = role(
            json!({"metadata": {"name": "other"}, "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]}),
        );
        let all = vec![view.clone(), crd, base, other];
        let rules = aggregated_rules(&view, &all).unwrap();
        let resources: Vec<String> = rules
            .iter()
            .map(|r| r.resources.clone().unwrap_or_default().join(","))
            .collect();
        assert_eq!(resources, ["pods", "widgets"]);
        assert_eq!(aggregated_rules(&all[3], &all), None);
    }
}
