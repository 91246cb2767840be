//! Which webhooks a write goes to (upstream `pkg/admission/plugin/webhook/predicates`): the
//! rules (operations, groups, versions, resources with subresources, scope), the namespace
//! selector and the object selector.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::RuleWithOperations;
use serde_json::Value;

use crate::admission::Attributes;
use crate::api::selectors::LabelSelector;

/// Does any rule of a webhook cover this write?
pub fn any_rule_matches(rules: &[RuleWithOperations], a: &Attributes<'_>) -> bool {
    rules.iter().any(|rule| rule_matches(rule, a))
}

fn rule_matches(rule: &RuleWithOperations, a: &Attributes<'_>) -> bool {
    let listed = |values: &Option<Vec<String>>, wanted: &str| {
        values.iter().flatten().any(|v| v == "*" || v == wanted)
    };
    listed(&rule.operations, a.operation.as_str())
        && listed(&rule.api_groups, a.resource.group)
        && listed(&rule.api_versions, a.resource.version)
        && resource_matches(rule.resources.as_deref().unwrap_or_default(), a)
        && scope_matches(rule.scope.as_deref(), a)
}

/// `pods` is the object only, `pods/status` one subresource, `pods/*` the object and all its
/// subresources, `*` every object, `*/*` everything.
fn resource_matches(resources: &[String], a: &Attributes<'_>) -> bool {
    let wanted_sub = a.subresource.unwrap_or("");
    resources.iter().any(|entry| {
        let (res, sub) = entry.split_once('/').unwrap_or((entry, ""));
        (res == "*" || res == a.resource.plural) && (sub == "*" || sub == wanted_sub)
    })
}

/// A Namespace object counts as cluster-scoped, as upstream.
fn scope_matches(scope: Option<&str>, a: &Attributes<'_>) -> bool {
    let cluster_scoped = !a.resource.namespaced;
    match scope {
        Some("Namespaced") => !cluster_scoped,
        Some("Cluster") => cluster_scoped,
        _ => true,
    }
}

pub fn is_namespace(a: &Attributes<'_>) -> bool {
    a.resource.group.is_empty() && a.resource.plural == "namespaces"
}

/// The labels of an object (`None` when it has none or is absent).
pub fn labels_of(obj: Option<&Value>) -> BTreeMap<String, String> {
    obj.and_then(|o| o.pointer("/metadata/labels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The object selector holds when the new or the old object's labels match it.
pub fn object_selector_matches(
    selector: &LabelSelector,
    object: Option<&Value>,
    old: Option<&Value>,
) -> bool {
    selector.is_empty()
        || [object, old]
            .into_iter()
            .flatten()
            .any(|o| selector.matches(&labels_of(Some(o))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Operation;
    use crate::api::resources::find;
    use serde_json::json;

    fn attributes(
        plural: &str,
        group: &str,
        subresource: Option<&'static str>,
    ) -> Attributes<'static> {
        Attributes {
            operation: Operation::Create,
            resource: find(group, "v1", plural).expect("served"),
            subresource,
            namespace: if plural == "namespaces" {
                ""
            } else {
                "default"
            },
            name: "x",
            old: None,
            dry_run: false,
            user: None,
        }
    }

    fn rule(value: serde_json::Value) -> RuleWithOperations {
        serde_json::from_value(value).expect("rule")
    }

    #[test]
    fn operations_groups_versions_and_resources_must_all_match() {
        let r = rule(
            json!({"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}),
        );
        assert!(rule_matches(&r, &attributes("configmaps", "", None)));
        assert!(!rule_matches(&r, &attributes("secrets", "", None)));
        let mut update = attributes("configmaps", "", None);
        update.operation = Operation::Update;
        assert!(!rule_matches(&r, &update));
        assert!(!rule_matches(&r, &attributes("deployments", "apps", None)));
    }

    #[test]
    fn subresources_match_only_when_named_or_wildcarded() {
        let only_status = rule(
            json!({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["pods/status"]}),
        );
        assert!(rule_matches(
            &only_status,
            &attributes("pods", "", Some("status"))
        ));
        assert!(!rule_matches(&only_status, &attributes("pods", "", None)));
        let star = rule(
            json!({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}),
        );
        assert!(rule_matches(&star, &attributes("pods", "", None)));
        assert!(!rule_matches(
            &star,
            &attributes("pods", "", Some("status"))
        ));
        let all_of_pods = rule(
            json!({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["pods/*"]}),
        );
        assert!(rule_matches(
            &all_of_pods,
            &attributes("pods", "", Some("status"))
        ));
        assert!(rule_matches(&all_of_pods, &attributes("pods", "", None)));
    }

    #[test]
    fn scope_separates_namespaced_objects_from_cluster_ones_and_namespaces() {
        let namespaced = rule(
            json!({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"], "scope": "Namespaced"}),
        );
        assert!(rule_matches(
            &namespaced,
            &attributes("configmaps", "", None)
        ));
        assert!(!rule_matches(
            &namespaced,
            &attributes("namespaces", "", None)
        ));
        let cluster = rule(
            json!({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"], "scope": "Cluster"}),
        );
        assert!(rule_matches(&cluster, &attributes("namespaces", "", None)));
        assert!(!rule_matches(&cluster, &attributes("configmaps", "", None)));
    }

    #[test]
    fn the_object_selector_looks_at_the_new_and_the_old_object() {
        let selector = LabelSelector::parse("team=a").expect("selector");
        let a = json!({"metadata": {"labels": {"team": "a"}}});
        let b = json!({"metadata": {"labels": {"team": "b"}}});
        assert!(object_selector_matches(&selector, Some(&a), None));
        assert!(object_selector_matches(&selector, Some(&b), Some(&a)));
        assert!(!object_selector_matches(&selector, Some(&b), None));
        assert!(object_selector_matches(
            &LabelSelector::default(),
            Some(&b),
            None
        ));
    }
}
