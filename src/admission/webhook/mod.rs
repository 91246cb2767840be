//! Admission webhooks (admissionregistration.k8s.io/v1): every create, update and delete a
//! Mutating- or ValidatingWebhookConfiguration selects is POSTed as an `admission.k8s.io/v1`
//! AdmissionReview to the webhook, which may refuse it or, for mutating ones, patch it.
//!
//! As upstream: mutating webhooks run in the mutating phase (configurations in name order, each
//! webhook in order) and their JSON patches apply to the object the next one sees; validating
//! ones run in the validating phase; a webhook that cannot be reached fails the write unless its
//! failurePolicy is Ignore; writes of the admission configuration kinds themselves never go to
//! webhooks, so a broken webhook can always be removed.
//!
//! `matchConditions` (CEL) are evaluated after the selectors; a condition that fails to evaluate
//! follows the failurePolicy. `warnings` in a response become `Warning:` headers.
//!
//! Not done: `reinvocationPolicy: IfNeeded` (mutating webhooks run
//! once), `matchPolicy: Equivalent` beyond the exact resource (berth serves each built-in
//! resource at one version), the `authorizer` CEL variable, and validating webhooks run one after
//! another rather than in parallel.

mod call;
mod config;
pub(crate) mod rules;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::admission::{Attributes, Operation, Plugin};
use crate::api::resources::{self, intern_str};
use crate::api::{ApiError, ApiResult};
use crate::registry::Registry;

use config::{Cache, Hook};

pub struct Webhooks {
    registry: Registry,
    configs: Cache,
}

impl Webhooks {
    /// Loads the configurations and keeps following them; needs a tokio runtime.
    pub fn start(registry: &Registry) -> Arc<Webhooks> {
        Arc::new(Webhooks {
            registry: registry.clone(),
            configs: Cache::start(registry),
        })
    }

    /// Does `hook` want this write? Errors when the namespace it needs is missing.
    fn selects(&self, hook: &Hook, a: &Attributes<'_>, object: Option<&Value>) -> ApiResult<bool> {
        if !rules::any_rule_matches(&hook.rules, a) {
            return Ok(false);
        }
        if !rules::object_selector_matches(&hook.object_selector, object, a.old) {
            return Ok(false);
        }
        if !self.namespace_selector_matches(hook, a, object)? {
            return Ok(false);
        }
        if hook.match_conditions.is_empty() {
            return Ok(true);
        }
        let activation = crate::admission::cel_request::activation(a, object);
        match crate::admission::cel_request::conditions_hold(&hook.match_conditions, &activation) {
            Ok(holds) => Ok(holds),
            Err(e) => self
                .failed(hook, format!("failed evaluating match conditions: {e}"))
                .map(|_| false),
        }
    }

    /// Cluster-scoped objects other than namespaces are never exempted; a namespace is matched
    /// by its own labels.
    fn namespace_selector_matches(
        &self,
        hook: &Hook,
        a: &Attributes<'_>,
        object: Option<&Value>,
    ) -> ApiResult<bool> {
        if hook.namespace_selector.is_empty() {
            return Ok(true);
        }
        let labels = if rules::is_namespace(a) {
            rules::labels_of(object.or(a.old))
        } else if a.namespace.is_empty() {
            return Ok(true);
        } else {
            let namespaces = resources::find("", "v1", "namespaces")
                .ok_or_else(|| ApiError::internal("namespaces are not served"))?;
            let namespace = self.registry.get_value(namespaces, "", a.namespace)?;
            rules::labels_of(Some(&namespace))
        };
        Ok(hook.namespace_selector.matches(&labels))
    }

    /// Calls `hook` and returns its response, or `None` when it failed and may be ignored.
    async fn call(
        &self,
        hook: &Hook,
        a: &Attributes<'_>,
        object: Option<&Value>,
    ) -> ApiResult<Option<Value>> {
        if a.dry_run && !hook.dry_run_safe {
            return Err(ApiError::bad_request(format!(
                "admission webhook \"{}\" does not support dry run",
                hook.name
            )));
        }
        let uid = crate::api::meta::new_uid().to_string();
        let review = review(&uid, a, object);
        match call::call(&self.registry, &hook.client, hook.timeout, &review).await {
            Ok(response) if response["uid"] != uid.as_str() => self.failed(
                hook,
                format!(
                    "received invalid webhook response: expected response.uid=\"{uid}\", got {}",
                    response["uid"]
                ),
            ),
            Ok(response) => Ok(Some(response)),
            Err(e) => self.failed(hook, format!("failed to call webhook: {e}")),
        }
    }

    fn failed(&self, hook: &Hook, why: String) -> ApiResult<Option<Value>> {
        if hook.fail_closed {
            Err(ApiError::internal(format!(
                "Internal error occurred: failed calling webhook \"{}\": {why}",
                hook.name
            )))
        } else {
            tracing::warn!(webhook = %hook.name, "ignoring a failed webhook: {why}");
            Ok(None)
        }
    }
}

#[async_trait]
impl Plugin for Webhooks {
    fn name(&self) -> &'static str {
        "AdmissionWebhooks"
    }

    async fn mutate(&self, a: &Attributes<'_>, object: &mut Value) -> ApiResult<()> {
        if exempt(a) {
            return Ok(());
        }
        let hooks = self.configs.hooks();
        for hook in &hooks.mutating {
            if !self.selects(hook, a, Some(object))? {
                continue;
            }
            let Some(response) = self.call(hook, a, Some(object)).await? else {
                continue;
            };
            refuse_unless_allowed(hook, &response)?;
            let patch = match call::patch_of(&response) {
                Ok(patch) => patch,
                Err(e) => {
                    self.failed(hook, e.to_string())?;
                    continue;
                }
            };
            if let Some(patch) = patch {
                let mut patched = object.clone();
                if let Err(e) = json_patch::patch(&mut patched, &patch) {
                    self.failed(hook, format!("JSON patch could not be applied: {e}"))?;
                    continue;
                }
                *object = patched;
            }
        }
        Ok(())
    }

    async fn validate(&self, a: &Attributes<'_>, object: Option<&Value>) -> ApiResult<()> {
        if exempt(a) {
            return Ok(());
        }
        let hooks = self.configs.hooks();
        for hook in &hooks.validating {
            if !self.selects(hook, a, object)? {
                continue;
            }
            if let Some(response) = self.call(hook, a, object).await? {
                refuse_unless_allowed(hook, &response)?;
            }
        }
        Ok(())
    }
}

/// The admission configuration kinds never go to webhooks, so a broken webhook cannot lock
/// itself in (upstream exempts them too).
fn exempt(a: &Attributes<'_>) -> bool {
    a.resource.group == "admissionregistration.k8s.io"
}

/// A refusal becomes the Status the webhook gave, its message prefixed as upstream does. The
/// response's warnings go to the client either way.
fn refuse_unless_allowed(hook: &Hook, response: &Value) -> ApiResult<()> {
    for warning in response["warnings"].as_array().into_iter().flatten() {
        if let Some(text) = warning.as_str().filter(|t| !t.is_empty()) {
            crate::admission::warnings::warn(text.to_string());
        }
    }
    if response["allowed"].as_bool() == Some(true) {
        return Ok(());
    }
    let status = &response["status"];
    let denied = format!("admission webhook \"{}\" denied the request", hook.name);
    let message = match (status["message"].as_str(), status["reason"].as_str()) {
        (Some(m), _) if !m.is_empty() => format!("{denied}: {m}"),
        (_, Some(r)) if !r.is_empty() => format!("{denied}: {r}"),
        _ => format!("{denied} without explanation"),
    };
    let code = status["code"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..600).contains(c))
        .unwrap_or(400);
    let reason = match status["reason"].as_str() {
        Some(r) if !r.is_empty() => intern_str(r),
        _ => "",
    };
    Err(ApiError::new(code, reason, message))
}

/// The `admission.k8s.io/v1` AdmissionReview of a write.
fn review(uid: &str, a: &Attributes<'_>, object: Option<&Value>) -> Value {
    let r = a.resource;
    let kind = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let resource = json!({"group": r.group, "version": r.version, "resource": r.plural});
    let options_kind = match a.operation {
        Operation::Create => "CreateOptions",
        Operation::Update => "UpdateOptions",
        Operation::Delete => "DeleteOptions",
    };
    let mut request = json!({
        "uid": uid,
        "kind": kind,
        "resource": resource,
        "requestKind": kind,
        "requestResource": resource,
        "name": a.name,
        "namespace": a.namespace,
        "operation": a.operation.as_str(),
        "userInfo": match &a.user {
            Some(u) => json!({"username": u.name, "uid": u.uid, "groups": u.groups}),
            None => json!({}),
        },
        "object": object.cloned().unwrap_or(Value::Null),
        "oldObject": a.old.cloned().unwrap_or(Value::Null),
        "dryRun": a.dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": options_kind},
    });
    if let Some(sub) = a.subresource {
        request["subResource"] = json!(sub);
        request["requestSubResource"] = json!(sub);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::selectors::LabelSelector;
    use k8s_openapi::api::admissionregistration::v1::WebhookClientConfig;
    use std::time::Duration;

    fn hook() -> Hook {
        Hook {
            name: "deny.example.com".into(),
            client: WebhookClientConfig::default(),
            rules: Vec::new(),
            fail_closed: true,
            namespace_selector: LabelSelector::default(),
            object_selector: LabelSelector::default(),
            dry_run_safe: true,
            timeout: Duration::from_secs(10),
            match_conditions: Vec::new(),
        }
    }

    #[test]
    fn the_warnings_of_a_response_reach_the_client() {
        let response = json!({"uid": "u", "allowed": true, "warnings": ["deprecated field", ""]});
        let (result, warnings) =
            futures::executor::block_on(crate::admission::warnings::collect(async {
                refuse_unless_allowed(&hook(), &response)
            }));
        assert!(result.is_ok());
        assert_eq!(warnings, vec!["deprecated field"]);
    }

    #[test]
    fn a_denial_carries_the_webhook_name_message_and_code() {
        let response = json!({"uid": "u", "allowed": false, "status": {"code": 403, "message": "no thanks", "reason": "Forbidden"}});
        let err = refuse_unless_allowed(&hook(), &response).unwrap_err();
        assert_eq!(err.code, 403);
        assert_eq!(err.reason, "Forbidden");
        assert_eq!(
            err.message,
            "admission webhook \"deny.example.com\" denied the request: no thanks"
        );
        let bare = refuse_unless_allowed(&hook(), &json!({"allowed": false})).unwrap_err();
        assert_eq!(bare.code, 400);
        assert!(bare
            .message
            .ends_with("denied the request without explanation"));
        assert!(refuse_unless_allowed(&hook(), &json!({"allowed": true})).is_ok());
    }

    #[test]
    fn the_review_names_the_request_and_its_objects() {
        let old = json!({"metadata": {"name": "cm"}, "data": {"a": "1"}});
        let new = json!({"metadata": {"name": "cm"}, "data": {"a": "2"}});
        let a = Attributes {
            operation: Operation::Update,
            resource: resources::find("", "v1", "configmaps").expect("configmaps"),
            subresource: None,
            namespace: "default",
            name: "cm",
            old: Some(&old),
            dry_run: true,
            user: Some(crate::apiserver::authn::UserInfo::anonymous()),
        };
        let r = review("id-1", &a, Some(&new));
        assert_eq!(r["apiVersion"], "admission.k8s.io/v1");
        let request = &r["request"];
        assert_eq!(request["uid"], "id-1");
        assert_eq!(request["kind"]["kind"], "ConfigMap");
        assert_eq!(request["resource"]["resource"], "configmaps");
        assert_eq!(request["operation"], "UPDATE");
        assert_eq!(request["object"]["data"]["a"], "2");
        assert_eq!(request["oldObject"]["data"]["a"], "1");
        assert_eq!(request["dryRun"], true);
        assert_eq!(request["options"]["kind"], "UpdateOptions");
        assert_eq!(request["userInfo"]["username"], "system:anonymous");
        assert!(request.get("subResource").is_none());
    }
}
