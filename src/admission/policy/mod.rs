//! ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1): CEL validations a
//! ValidatingAdmissionPolicyBinding applies to the writes it and its policy match, as upstream's
//! `validatingadmissionpolicy` plugin.
//!
//! Per binding (name order): the policy's `matchConstraints` and the binding's `matchResources`
//! select the write, the policy's `matchConditions` must hold, then each param object the binding's
//! `paramRef` names (or none) is evaluated against every validation, with the policy's
//! `variables` bound. A failed validation is enforced by the binding's `validationActions`: Deny
//! refuses the write (422 unless the validation gives a `reason`), Warn adds a `Warning:` header,
//! Audit is logged. An expression that does not compile or fails to evaluate follows the policy's
//! `failurePolicy` (Fail by default).
//!
//! Audit records the failures in the request's audit event (the
//! `validation.policy.admission.k8s.io/validation_failure` annotation), and each policy's
//! `auditAnnotations` add `<policy>/<key>` annotations. Expressions see `authorizer`, which asks
//! berth's RBAC authorizer about the requesting user.
//!
//! Not done: `matchPolicy: Equivalent` beyond the exact resource. Writes to the
//! admissionregistration.k8s.io kinds themselves are exempt, as for webhooks, so a broken policy
//! can always be removed.
//!
//! # Layout
//! - `cache`: the policies and bindings, followed through a watch.
//! - `matching`: which writes a policy and a binding select.
//! - `authorizer`: the RBAC authorizer behind `authorizer`.
//! - `status`: type checking into the policies' status.
//! - `validation`: policies whose expressions do not compile are refused.

mod authorizer;
mod cache;
mod matching;
mod status;
pub mod validation;

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding, Validation,
};
use serde_json::Value;

use super::{cel_request, warnings, Attributes, Plugin};
use crate::api::resources::{self, intern_str};
use crate::api::selectors::LabelSelector;
use crate::api::{ApiError, ApiResult, Cause};
use crate::cel::{self, Activation};
use crate::registry::generic::{decode, ListOptions};
use crate::registry::Registry;

/// The audit annotation upstream records validation failures of `Audit` bindings under.
pub const VALIDATION_FAILURE_ANNOTATION: &str =
    "validation.policy.admission.k8s.io/validation_failure";

pub struct ValidatingAdmissionPolicies {
    registry: Registry,
    cache: cache::Cache,
    /// Set once RBAC is up (it starts after admission is wired); until then `authorizer`
    /// checks are errored decisions.
    authorizer: OnceLock<Arc<dyn cel::Authorizer>>,
}

impl ValidatingAdmissionPolicies {
    /// Loads the policies and keeps following them; needs a tokio runtime.
    pub fn start(registry: &Registry) -> Arc<ValidatingAdmissionPolicies> {
        Arc::new(ValidatingAdmissionPolicies {
            registry: registry.clone(),
            cache: cache::Cache::start(registry),
            authorizer: OnceLock::new(),
        })
    }

    /// Answers the expressions' `authorizer` checks with `rbac`.
    pub fn use_rbac(&self, rbac: Arc<crate::apiserver::rbac::Rbac>) {
        let _ = self
            .authorizer
            .set(Arc::new(authorizer::RbacAuthorizer(rbac)));
    }

    /// Binds `authorizer` for the writing user, `requestResource` the write's resource.
    fn bind_authorizer(&self, activation: &mut Activation, a: &Attributes<'_>) {
        let Some(authorizer) = self.authorizer.get() else {
            activation.bind(
                "authorizer",
                cel::authz::authorizer_value(&cel::Subject::default(), None),
            );
            return;
        };
        let subject = match &a.user {
            Some(u) => cel::Subject {
                user: u.name.clone(),
                uid: u.uid.clone(),
                groups: u.groups.clone(),
            },
            None => cel::Subject::default(),
        };
        let request = cel::AuthzCheck {
            group: a.resource.group.to_string(),
            version: a.resource.version.to_string(),
            resource: a.resource.plural.to_string(),
            subresource: a.subresource.unwrap_or("").to_string(),
            namespace: a.namespace.to_string(),
            name: a.name.to_string(),
            ..cel::AuthzCheck::default()
        };
        activation.bind_authorizer(&subject, Some(&request), authorizer.clone());
    }

    /// The labelled namespace of a namespaced write (null for cluster-scoped ones).
    fn namespace_object(&self, a: &Attributes<'_>) -> Option<Value> {
        if a.namespace.is_empty() {
            return None;
        }
        let namespaces = resources::find("", "v1", "namespaces")?;
        self.registry.get_value(namespaces, "", a.namespace).ok()
    }

    /// The param objects a binding names: `Ok(vec![])` when none were found.
    fn params(
        &self,
        policy: &ValidatingAdmissionPolicy,
        binding: &ValidatingAdmissionPolicyBinding,
        a: &Attributes<'_>,
    ) -> Result<Vec<Value>, String> {
        let Some(kind) = policy.spec.as_ref().and_then(|s| s.param_kind.as_ref()) else {
            return Ok(vec![Value::Null]);
        };
        let Some(param_ref) = binding.spec.as_ref().and_then(|s| s.param_ref.as_ref()) else {
            return Err("paramKind is set on the policy but the binding has no paramRef".into());
        };
        let api_version = kind.api_version.as_deref().unwrap_or("");
        let kind_name = kind.kind.as_deref().unwrap_or("");
        let Some(resource) = resources::find_kind(api_version, kind_name) else {
            return Err(format!(
                "failed to find resource referenced by paramKind: '{api_version}, Kind={kind_name}'"
            ));
        };
        let namespace = match (&param_ref.namespace, resource.namespaced) {
            (_, false) => "",
            (Some(ns), true) if !ns.is_empty() => ns.as_str(),
            (_, true) if a.namespace.is_empty() => {
                return Err("cannot use a namespaced paramRef for a cluster-scoped request without paramRef.namespace".into())
            }
            (_, true) => a.namespace,
        };
        if let Some(name) = param_ref.name.as_deref().filter(|n| !n.is_empty()) {
            return match self.registry.get_value(resource, namespace, name) {
                Ok(param) => Ok(vec![param]),
                Err(e) if e.code == 404 => Ok(Vec::new()),
                Err(e) => Err(e.message),
            };
        }
        let selector = match &param_ref.selector {
            Some(s) => LabelSelector::from_label_selector(s).map_err(|e| e.to_string())?,
            None => LabelSelector::default(),
        };
        let options = ListOptions {
            label_selector: Some(selector),
            ..ListOptions::default()
        };
        let scope = resource.namespaced.then_some(namespace);
        let page = self
            .registry
            .list(resource, scope, &options)
            .map_err(|e| e.message)?;
        Ok(page
            .items
            .iter()
            .filter_map(|raw| decode(raw).ok())
            .collect())
    }
}

#[async_trait]
impl Plugin for ValidatingAdmissionPolicies {
    fn name(&self) -> &'static str {
        "ValidatingAdmissionPolicy"
    }

    async fn validate(&self, a: &Attributes<'_>, object: Option<&Value>) -> ApiResult<()> {
        if a.resource.group == "admissionregistration.k8s.io" {
            return Ok(());
        }
        let all = self.cache.get();
        if all.bindings.is_empty() {
            return Ok(());
        }
        let namespace = self.namespace_object(a);
        let mut base: Option<Activation> = None;
        let mut audit = Audit::default();
        let result =
            self.validate_bindings(a, object, &all, namespace.as_ref(), &mut base, &mut audit);
        audit.record();
        result
    }
}

impl ValidatingAdmissionPolicies {
    /// Runs every binding that selects the write; the first Deny ends the run.
    fn validate_bindings(
        &self,
        a: &Attributes<'_>,
        object: Option<&Value>,
        all: &cache::Policies,
        namespace: Option<&Value>,
        base: &mut Option<Activation>,
        audit: &mut Audit,
    ) -> ApiResult<()> {
        for binding in &all.bindings {
            let Some(spec) = &binding.spec else { continue };
            let Some(policy) = spec.policy_name.as_deref().and_then(|n| all.policy(n)) else {
                continue;
            };
            let Some(policy_spec) = &policy.spec else {
                continue;
            };
            let labels_of_namespace = namespace;
            if !matching::matches(
                policy_spec.match_constraints.as_ref(),
                false,
                a,
                object,
                labels_of_namespace,
            ) || !spec
                .match_resources
                .as_ref()
                .is_none_or(|m| matching::matches(Some(m), true, a, object, labels_of_namespace))
            {
                continue;
            }
            let base = base.get_or_insert_with(|| {
                let mut activation = cel_request::activation(a, object);
                activation.bind_json("namespaceObject", namespace);
                self.bind_authorizer(&mut activation, a);
                activation
            });
            let outcome = evaluate(self, policy, binding, a, base);
            audit.annotate(policy, &outcome.annotations);
            enforce(policy, binding, a, outcome.failures, audit)?;
        }
        Ok(())
    }
}

/// What a write's policies leave in its audit event, recorded once all bindings have run.
#[derive(Default)]
struct Audit {
    /// `<policy>/<key>` → the distinct values the bindings gave it.
    annotations: Vec<(String, Vec<String>)>,
    failures: Vec<Value>,
}

impl Audit {
    fn annotate(&mut self, policy: &ValidatingAdmissionPolicy, values: &[(String, String)]) {
        let policy = policy.metadata.name.as_deref().unwrap_or("");
        for (key, value) in values {
            let key = format!("{policy}/{key}");
            match self.annotations.iter_mut().find(|(k, _)| *k == key) {
                Some((_, existing)) if existing.contains(value) => {}
                Some((_, existing)) => existing.push(value.clone()),
                None => self.annotations.push((key, vec![value.clone()])),
            }
        }
    }

    fn record(self) {
        for (key, values) in self.annotations {
            crate::audit::annotate(&key, values.join(", "));
        }
        if !self.failures.is_empty() {
            crate::audit::annotate(
                VALIDATION_FAILURE_ANNOTATION,
                Value::Array(self.failures).to_string(),
            );
        }
    }
}

/// A binding's findings: its failures and the audit annotations its policy gave.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    failures: Vec<Failure>,
    annotations: Vec<(String, String)>,
}

/// What one validation (or the policy as a whole) decided against the write.
#[derive(Debug, PartialEq)]
struct Failure {
    message: String,
    reason: Option<String>,
    /// The index of the validation in the policy (0 for failures of the policy as a whole).
    expression_index: usize,
}

/// The failures and audit annotations of one binding's policy on this write.
fn evaluate(
    plugin: &ValidatingAdmissionPolicies,
    policy: &ValidatingAdmissionPolicy,
    binding: &ValidatingAdmissionPolicyBinding,
    a: &Attributes<'_>,
    base: &Activation,
) -> Outcome {
    let Some(spec) = &policy.spec else {
        return Outcome::default();
    };
    let failures = |failures: Vec<Failure>| Outcome {
        failures,
        annotations: Vec::new(),
    };
    let fail_closed = spec.failure_policy.as_deref() != Some("Ignore");
    let on_error = |message: String| -> Vec<Failure> {
        if fail_closed {
            vec![Failure {
                message,
                reason: None,
                expression_index: 0,
            }]
        } else {
            tracing::warn!(policy = ?policy.metadata.name, "ignoring a failed policy: {message}");
            Vec::new()
        }
    };
    let conditions = spec.match_conditions.as_deref().unwrap_or_default();
    match cel_request::conditions_hold(conditions, base) {
        Ok(true) => {}
        Ok(false) => return Outcome::default(),
        Err(e) => return failures(on_error(e)),
    }
    let params = match plugin.params(policy, binding, a) {
        Ok(params) => params,
        Err(e) => return failures(on_error(e)),
    };
    if params.is_empty() {
        let action = binding
            .spec
            .as_ref()
            .and_then(|s| s.param_ref.as_ref())
            .and_then(|r| r.parameter_not_found_action.as_deref());
        return match action {
            Some("Allow") => Outcome::default(),
            _ => failures(on_error(
                "no params found for policy binding with `Deny` parameterNotFoundAction".into(),
            )),
        };
    }
    let mut outcome = Outcome::default();
    for param in &params {
        let mut activation = base.clone();
        activation.bind_json("params", Some(param));
        bind_variables(
            spec.variables.as_deref().unwrap_or_default(),
            &mut activation,
        );
        for (i, validation) in spec.validations.iter().flatten().enumerate() {
            match check(validation, &activation) {
                Ok(None) => {}
                Ok(Some(failure)) => outcome.failures.push(Failure {
                    expression_index: i,
                    ..failure
                }),
                Err(e) => outcome
                    .failures
                    .extend(on_error(e).into_iter().map(|f| Failure {
                        expression_index: i,
                        ..f
                    })),
            }
        }
        for annotation in spec.audit_annotations.iter().flatten() {
            match audit_annotation(&annotation.value_expression, &activation) {
                Ok(Some(value)) => outcome.annotations.push((annotation.key.clone(), value)),
                Ok(None) => {}
                Err(e) => outcome.failures.extend(on_error(format!(
                    "valueExpression '{}' resulted in error: {e}",
                    annotation.value_expression
                ))),
            }
        }
    }
    outcome
}

/// An audit annotation's value: a string, or nothing for null and "" (the annotation is left
/// out then, as upstream).
fn audit_annotation(source: &str, activation: &Activation) -> Result<Option<String>, String> {
    match cel::compile(source)
        .and_then(|p| p.eval(activation))
        .map_err(|e| e.to_string())?
    {
        cel_interpreter::Value::String(s) if s.is_empty() => Ok(None),
        cel_interpreter::Value::String(s) => Ok(Some(s.to_string())),
        cel_interpreter::Value::Null => Ok(None),
        other => Err(format!(
            "valueExpression must evaluate to a string or null, got {}",
            cel::to_json(&other)
        )),
    }
}

/// Binds `variables.<name>` in order, each seeing the ones before it. A variable that fails is
/// left out, so only the expressions that use it fail.
fn bind_variables(
    variables: &[k8s_openapi::api::admissionregistration::v1::Variable],
    activation: &mut Activation,
) {
    if variables.is_empty() {
        return;
    }
    let mut bound = Vec::new();
    for variable in variables {
        activation.bind_values("variables", bound.iter().map(|(k, v)| (k, v)));
        match cel::compile(&variable.expression).and_then(|p| p.eval(activation)) {
            Ok(value) => bound.push((variable.name.clone(), value)),
            Err(e) => tracing::debug!(variable = %variable.name, "variable failed: {e}"),
        }
    }
    activation.bind_values("variables", bound.iter().map(|(k, v)| (k, v)));
}

/// `Ok(None)` when the validation holds, its failure when not, `Err` when it cannot be evaluated.
fn check(validation: &Validation, activation: &Activation) -> Result<Option<Failure>, String> {
    let expression = &validation.expression;
    let holds = cel::compile(expression)
        .and_then(|program| program.eval_bool(activation))
        .map_err(|e| format!("expression '{expression}' resulted in error: {e}"))?;
    if holds {
        return Ok(None);
    }
    // A messageExpression that fails or gives nothing falls back to the static message.
    let from_expression = validation
        .message_expression
        .as_deref()
        .and_then(|source| {
            cel::compile(source)
                .and_then(|p| p.eval_string(activation))
                .ok()
        })
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty() && !m.contains('\n'));
    let message = from_expression
        .or_else(|| validation.message.clone().filter(|m| !m.is_empty()))
        .unwrap_or_else(|| format!("failed expression: {expression}"));
    Ok(Some(Failure {
        message,
        reason: validation.reason.clone().filter(|r| !r.is_empty()),
        expression_index: 0,
    }))
}

/// Applies the binding's validationActions to the failures: the first Deny refuses the write,
/// Audit ones go to `audit`.
fn enforce(
    policy: &ValidatingAdmissionPolicy,
    binding: &ValidatingAdmissionPolicyBinding,
    a: &Attributes<'_>,
    failures: Vec<Failure>,
    audit: &mut Audit,
) -> ApiResult<()> {
    let policy_name = policy.metadata.name.as_deref().unwrap_or("");
    let binding_name = binding.metadata.name.as_deref().unwrap_or("");
    let actions = binding
        .spec
        .as_ref()
        .and_then(|s| s.validation_actions.clone())
        .unwrap_or_default();
    for failure in &failures {
        if actions.iter().any(|x| x == "Warn") {
            warnings::warn(format!(
                "Validation failed for ValidatingAdmissionPolicy '{policy_name}' with binding '{binding_name}': {}",
                failure.message
            ));
        }
        if actions.iter().any(|x| x == "Audit") {
            audit.failures.push(serde_json::json!({
                "message": failure.message,
                "policy": policy_name,
                "binding": binding_name,
                "expressionIndex": failure.expression_index,
                "validationActions": actions.clone(),
            }));
        }
    }
    if !actions.iter().any(|x| x == "Deny") {
        return Ok(());
    }
    match failures.into_iter().next() {
        Some(failure) => Err(denial(policy_name, binding_name, a, failure)),
        None => Ok(()),
    }
}

/// Upstream's refusal: a Forbidden-worded message with the validation's reason (Invalid by
/// default) and its HTTP code, the policy message repeated as the one cause.
fn denial(policy: &str, binding: &str, a: &Attributes<'_>, failure: Failure) -> ApiError {
    let inner = format!(
        "ValidatingAdmissionPolicy '{policy}' with binding '{binding}' denied request: {}",
        failure.message
    );
    let r = a.resource;
    let resource = if r.group.is_empty() {
        r.plural.to_string()
    } else {
        format!("{}.{}", r.plural, r.group)
    };
    let message = if a.name.is_empty() {
        format!("{resource} is forbidden: {inner}")
    } else {
        format!("{resource} \"{}\" is forbidden: {inner}", a.name)
    };
    let reason = failure.reason.as_deref().unwrap_or("Invalid");
    let code = match reason {
        "Unauthorized" => 401,
        "Forbidden" => 403,
        "RequestEntityTooLarge" => 413,
        _ => 422,
    };
    let mut err = ApiError::new(code, intern_str(reason), message);
    err.group = r.group.to_string();
    err.kind = r.plural.to_string();
    err.name = a.name.to_string();
    err.causes = vec![Cause {
        reason: String::new(),
        message: inner,
        field: String::new(),
    }];
    err
}

#[cfg(test)]
mod tests;
