//! Which writes a policy's `matchConstraints` or a binding's `matchResources` select: namespace
//! and object selectors, resource rules with resource names, exclusions. The rule matching is the
//! webhooks' own.

use k8s_openapi::api::admissionregistration::v1::{
    MatchResources, NamedRuleWithOperations, RuleWithOperations,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as MetaLabelSelector;
use serde_json::Value;

use crate::admission::webhook::rules;
use crate::admission::Attributes;
use crate::api::selectors::LabelSelector;

/// `namespace` is the write's Namespace object (None for cluster-scoped writes). No constraints
/// select nothing, as a policy without `matchConstraints` is refused upstream. A binding's
/// `matchResources` without resource rules (`rules_optional`) narrows by its selectors only.
pub fn matches(
    constraints: Option<&MatchResources>,
    rules_optional: bool,
    a: &Attributes<'_>,
    object: Option<&Value>,
    namespace: Option<&Value>,
) -> bool {
    let Some(m) = constraints else {
        return false;
    };
    let no_rules = m.resource_rules.as_ref().is_none_or(Vec::is_empty);
    let included = (rules_optional && no_rules)
        || m.resource_rules
            .iter()
            .flatten()
            .any(|rule| named_rule_matches(rule, a));
    let excluded = m
        .exclude_resource_rules
        .iter()
        .flatten()
        .any(|rule| named_rule_matches(rule, a));
    included
        && !excluded
        && selector_matches(m.object_selector.as_ref(), |s| {
            rules::object_selector_matches(s, object, a.old)
        })
        && selector_matches(m.namespace_selector.as_ref(), |s| {
            namespace_selector_matches(s, a, object, namespace)
        })
}

/// An absent or empty selector matches everything; one that does not parse matches nothing.
fn selector_matches(
    selector: Option<&MetaLabelSelector>,
    check: impl FnOnce(&LabelSelector) -> bool,
) -> bool {
    match selector.map(LabelSelector::from_label_selector) {
        None => true,
        Some(Ok(s)) => s.is_empty() || check(&s),
        Some(Err(_)) => false,
    }
}

/// A Namespace is matched by its own labels; other cluster-scoped objects always match.
fn namespace_selector_matches(
    selector: &LabelSelector,
    a: &Attributes<'_>,
    object: Option<&Value>,
    namespace: Option<&Value>,
) -> bool {
    if rules::is_namespace(a) {
        return selector.matches(&rules::labels_of(object.or(a.old)));
    }
    if a.namespace.is_empty() {
        return true;
    }
    selector.matches(&rules::labels_of(namespace))
}

fn named_rule_matches(rule: &NamedRuleWithOperations, a: &Attributes<'_>) -> bool {
    let plain = RuleWithOperations {
        api_groups: rule.api_groups.clone(),
        api_versions: rule.api_versions.clone(),
        operations: rule.operations.clone(),
        resources: rule.resources.clone(),
        scope: rule.scope.clone(),
    };
    let names = rule.resource_names.as_deref().unwrap_or_default();
    rules::any_rule_matches(std::slice::from_ref(&plain), a)
        && (names.is_empty() || names.iter().any(|n| n == a.name))
}
