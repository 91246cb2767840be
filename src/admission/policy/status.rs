//! A ValidatingAdmissionPolicy's status, as upstream's policy controller in kube-apiserver
//! keeps it: `status.typeChecking.expressionWarnings` for expressions that refer to fields the
//! matched kinds do not have, and `status.observedGeneration`.
//!
//! Checked: each validation's `expression` and `messageExpression` and each audit annotation's
//! `valueExpression`, with `object` and `oldObject` typed by the schema of every built-in kind
//! the policy's resource rules name exactly (wildcards and custom resources are not checked, as
//! upstream skips what it cannot resolve to one schema), and `params` typed by the schema of the
//! policy's `paramKind` when that is a built-in kind or a served custom resource.

use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy;
use serde_json::{json, Value};

use crate::api::resources::{self, Resource};
use crate::api::schemas;
use crate::cel;
use crate::registry::generic::Part;
use crate::registry::Registry;

/// Brings the status of every policy whose generation moved up to date.
pub async fn update_all(registry: &Registry, policies: &[ValidatingAdmissionPolicy]) {
    let Some(resource) = resources::find(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicies",
    ) else {
        return;
    };
    for policy in policies {
        let generation = policy.metadata.generation.unwrap_or(0);
        let observed = policy.status.as_ref().and_then(|s| s.observed_generation);
        if observed == Some(generation) {
            continue;
        }
        let Some(name) = policy.metadata.name.as_deref() else {
            continue;
        };
        let warnings = expression_warnings(policy);
        let result = registry
            .update_with(resource, "", name, Part::Status, false, |stored| {
                let mut updated = stored.clone();
                // Another writer moved the generation on: its own update comes next.
                if stored["metadata"]["generation"].as_i64().unwrap_or(0) != generation {
                    return Ok(updated);
                }
                let status = &mut updated["status"];
                if !status.is_object() {
                    *status = json!({});
                }
                status["observedGeneration"] = json!(generation);
                status["typeChecking"] = json!({"expressionWarnings": warnings.clone()});
                Ok(updated)
            })
            .await;
        if let Err(e) = result {
            tracing::debug!(policy = name, "cannot write the policy status: {e}");
        }
    }
}

/// The warnings for `policy`'s expressions, each with the path of the field holding it.
pub fn expression_warnings(policy: &ValidatingAdmissionPolicy) -> Vec<Value> {
    let Some(spec) = &policy.spec else {
        return Vec::new();
    };
    // The catalog is built on demand and dropped when unused: hold it while checking.
    let catalog = schemas::catalog();
    let kinds = matched_kinds(policy, &catalog);
    if kinds.is_empty() {
        return Vec::new();
    }
    let mut expressions: Vec<(String, &str)> = Vec::new();
    for (i, validation) in spec.validations.iter().flatten().enumerate() {
        expressions.push((
            format!("spec.validations[{i}].expression"),
            &validation.expression,
        ));
        if let Some(message) = validation.message_expression.as_deref() {
            expressions.push((format!("spec.validations[{i}].messageExpression"), message));
        }
    }
    for (i, annotation) in spec.audit_annotations.iter().flatten().enumerate() {
        expressions.push((
            format!("spec.auditAnnotations[{i}].valueExpression"),
            &annotation.value_expression,
        ));
    }
    let definitions = &catalog.definitions;
    let lookup = |name: &str| definitions.get(name);
    let params = param_schema(policy, &catalog);
    let mut warnings = Vec::new();
    for (field_ref, source) in expressions {
        // Expressions that do not compile fail at admission under the failure policy.
        let Ok(program) = cel::compile(source) else {
            continue;
        };
        let mut messages = Vec::new();
        for (resource, schema) in &kinds {
            let mut roots = vec![("object", *schema), ("oldObject", *schema)];
            if let Some(params) = &params {
                roots.push(("params", params));
            }
            let Some(errors) = cel::typecheck::check(&program, &roots, &lookup) else {
                continue;
            };
            // Upstream ends each kind's errors with a newline, and joins kinds with another.
            messages.push(format!(
                "{}/{}, Kind={}: {errors}\n",
                resource.group, resource.version, resource.kind,
            ));
        }
        if !messages.is_empty() {
            warnings.push(json!({"fieldRef": field_ref, "warning": messages.join("\n")}));
        }
    }
    warnings
}

/// The schema of the policy's `paramKind`: a built-in kind's from the catalog, a custom
/// resource's from its served CRD version; None when there is no paramKind or it is unknown.
fn param_schema(policy: &ValidatingAdmissionPolicy, catalog: &schemas::Catalog) -> Option<Value> {
    let kind = policy.spec.as_ref()?.param_kind.as_ref()?;
    let (api_version, kind_name) = (kind.api_version.as_deref()?, kind.kind.as_deref()?);
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    if let Some(schema) =
        schemas::kind_definition(api_version, kind_name).and_then(|d| catalog.definitions.get(d))
    {
        return Some(schema.clone());
    }
    crate::crd::all_served()
        .iter()
        .filter(|d| d.group == group && d.kind == kind_name)
        .find_map(|d| d.version(version).map(|v| v.schema.clone()))
        // An empty schema (no openAPIV3Schema) types nothing.
        .filter(|s| s.get("properties").is_some())
}

/// The built-in kinds (and their schemas) the policy's resource rules name without wildcards.
fn matched_kinds<'a>(
    policy: &ValidatingAdmissionPolicy,
    catalog: &'a schemas::Catalog,
) -> Vec<(&'static Resource, &'a Value)> {
    let rules = policy
        .spec
        .as_ref()
        .and_then(|s| s.match_constraints.as_ref())
        .and_then(|m| m.resource_rules.as_ref());
    let mut kinds: Vec<(&'static Resource, &'a Value)> = Vec::new();
    for rule in rules.into_iter().flatten() {
        for group in rule.api_groups.iter().flatten() {
            for version in rule.api_versions.iter().flatten() {
                for plural in rule.resources.iter().flatten() {
                    let Some(resource) = resources::find(group, version, plural) else {
                        continue;
                    };
                    let Some(schema) =
                        schemas::kind_definition(&resource.api_version(), resource.kind)
                            .and_then(|d| catalog.definitions.get(d))
                    else {
                        continue;
                    };
                    if !kinds.iter().any(|(r, _)| std::ptr::eq(*r, resource)) {
                        kinds.push((resource, schema));
                    }
                }
            }
        }
    }
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(validations: Value) -> ValidatingAdmissionPolicy {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "generation": 1},
            "spec": {
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": ["apps"], "apiVersions": ["v1"],
                    "operations": ["CREATE"], "resources": ["deployments"]}]},
                "validations": validations,
                "auditAnnotations": [{"key": "k", "valueExpression": "string(object.spec.replcas)"}],
            }
        }))
        .expect("a policy")
    }

    /// A Deployment's warning for `message` at `column` of the one-line `source`.
    fn warning(field_ref: &str, source: &str, column: usize, message: &str) -> Value {
        let caret = format!("{}^", ".".repeat(column - 1));
        json!({"fieldRef": field_ref,
               "warning": format!("apps/v1, Kind=Deployment: ERROR: <input>:1:{column}: {message}\n | {source}\n | {caret}\n")})
    }

    #[test]
    fn expressions_naming_fields_a_deployment_lacks_are_warned_about() {
        let warnings = expression_warnings(&policy(json!([
            {"expression": "object.spec.replicas <= 5"},
            {"expression": "object.spec.replica <= 5",
             "messageExpression": "'x' + object.metadata.nam"},
            {"expression": "object.spec.template.spec.containers.all(c, c.image != '' && c.imagePullPolicy != 'Always')"},
            {"expression": "object.spec.template.spec.containers.all(c, c.imag != '')"},
            {"expression": "object.spec.replicas + object.metadata.name == 'x'"},
        ])));
        assert_eq!(
            warnings,
            [
                warning(
                    "spec.validations[1].expression",
                    "object.spec.replica <= 5",
                    12,
                    "undefined field 'replica'"
                ),
                warning(
                    "spec.validations[1].messageExpression",
                    "'x' + object.metadata.nam",
                    22,
                    "undefined field 'nam'"
                ),
                warning(
                    "spec.validations[3].expression",
                    "object.spec.template.spec.containers.all(c, c.imag != '')",
                    46,
                    "undefined field 'imag'"
                ),
                warning(
                    "spec.validations[4].expression",
                    "object.spec.replicas + object.metadata.name == 'x'",
                    22,
                    "found no matching overload for '_+_' applied to '(int, string)'"
                ),
                warning(
                    "spec.auditAnnotations[0].valueExpression",
                    "string(object.spec.replcas)",
                    19,
                    "undefined field 'replcas'"
                ),
            ]
        );
    }

    #[test]
    fn params_are_checked_against_the_param_kinds_schema() {
        let mut p = policy(json!([
            {"expression": "object.spec.replicas <= int(params.data.max)"},
            {"expression": "object.spec.replicas <= int(params.dta.max)"},
        ]));
        if let Some(spec) = p.spec.as_mut() {
            spec.param_kind = Some(
                serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap"}))
                    .expect("a param kind"),
            );
            spec.audit_annotations = None;
        }
        assert_eq!(
            expression_warnings(&p),
            [warning(
                "spec.validations[1].expression",
                "object.spec.replicas <= int(params.dta.max)",
                35,
                "undefined field 'dta'"
            )]
        );
    }

    #[test]
    fn wildcard_rules_are_not_type_checked() {
        let mut p = policy(json!([{"expression": "object.spec.replica <= 5"}]));
        if let Some(rules) = p
            .spec
            .as_mut()
            .and_then(|s| s.match_constraints.as_mut())
            .and_then(|m| m.resource_rules.as_mut())
        {
            rules[0].resources = Some(vec!["*".into()]);
        }
        assert!(expression_warnings(&p).is_empty());
    }
}
