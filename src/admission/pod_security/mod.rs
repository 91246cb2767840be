//! Pod Security Admission, as upstream's built-in plugin: a namespace's labels
//! `pod-security.kubernetes.io/{enforce,audit,warn}` (with `-version`) pick a level of the Pod
//! Security Standards (privileged, baseline, restricted; [`checks`]); the cluster's defaults
//! from the config file apply where a label is missing.
//!
//! - enforce: a pod that fails is refused (403) with upstream's message listing the violations;
//! - warn: the client gets a `Warning` header;
//! - audit: the request's audit event gets a `pod-security.kubernetes.io/audit-violations`
//!   annotation.
//!
//! Workload kinds (Deployment, Job, ...) are never refused: their pod template gets warnings
//! for the enforce and warn levels, as upstream. Relabelling a namespace to a stricter enforce
//! level warns about the pods already there that would now be refused (upstream's dry run).

pub mod checks;
pub mod namespace;
pub mod policy;

use std::time::Instant;

use async_trait::async_trait;
use serde_json::Value;

use super::{Attributes, Operation, Plugin};
use crate::api::{ApiError, ApiResult};
use crate::store::Store;
use checks::Level;
use policy::{ModePolicy, NamespacePolicy};

const AUDIT_ANNOTATION: &str = "pod-security.kubernetes.io/audit-violations";
const ENFORCED_ANNOTATION: &str = "pod-security.kubernetes.io/enforce-policy";
const EXEMPT_ANNOTATION: &str = "pod-security.kubernetes.io/exempt";

/// Pod subresources that cannot change what the checks read; every other one (say
/// `ephemeralcontainers`) is evaluated as a pod update, as upstream.
const IGNORED_POD_SUBRESOURCES: &[&str] = &[
    "exec",
    "attach",
    "binding",
    "eviction",
    "log",
    "portforward",
    "proxy",
    "status",
];

/// The cluster-wide defaults and exemptions, from `[pod_security]` in the config file.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub enforce: Level,
    pub audit: Level,
    pub warn: Level,
    pub exempt_namespaces: Vec<String>,
    /// Users whose pod writes are never checked (upstream's `exemptions.usernames`).
    pub exempt_usernames: Vec<String>,
    /// Pods with one of these `runtimeClassName`s are never checked.
    pub exempt_runtime_classes: Vec<String>,
}

impl Defaults {
    pub fn from_config(config: &crate::config::PodSecurityConfig) -> Result<Defaults, String> {
        let level = |mode: &str, text: &str| {
            Level::parse(text).ok_or_else(|| {
                format!("pod_security.{mode}: {text:?} is not privileged, baseline or restricted")
            })
        };
        Ok(Defaults {
            enforce: level("enforce", &config.enforce)?,
            audit: level("audit", &config.audit)?,
            warn: level("warn", &config.warn)?,
            exempt_namespaces: config.exempt_namespaces.clone(),
            exempt_usernames: config.exempt_usernames.clone(),
            exempt_runtime_classes: config.exempt_runtime_classes.clone(),
        })
    }

    fn policy(&self) -> NamespacePolicy {
        NamespacePolicy {
            enforce: ModePolicy::latest(self.enforce),
            audit: ModePolicy::latest(self.audit),
            warn: ModePolicy::latest(self.warn),
        }
    }
}

/// Why a write is exempt, as upstream's `exempt` audit annotation says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exemption {
    Namespace,
    User,
    RuntimeClass,
}

impl Exemption {
    fn as_str(self) -> &'static str {
        match self {
            Exemption::Namespace => "namespace",
            Exemption::User => "user",
            Exemption::RuntimeClass => "runtimeClass",
        }
    }
}

/// Whether a pod is evaluated against the enforce level (pods) or only warned and audited
/// (the pod templates of workloads: their pods are checked when created).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enforce {
    Yes,
    No,
}

pub struct PodSecurity {
    store: Store,
    defaults: Defaults,
    default_policy: NamespacePolicy,
}

impl PodSecurity {
    pub fn new(store: Store, defaults: Defaults) -> PodSecurity {
        let default_policy = defaults.policy();
        PodSecurity {
            store,
            defaults,
            default_policy,
        }
    }

    fn namespace_policy(
        &self,
        namespace: &str,
    ) -> (NamespacePolicy, Vec<crate::api::status::Cause>) {
        let namespace = crate::api::resources::find("", "v1", "namespaces")
            .and_then(|r| self.store.get(&r.key("", namespace)).ok().flatten())
            .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok());
        policy::policy_to_evaluate(
            namespace
                .as_ref()
                .and_then(|ns| ns.pointer("/metadata/labels")),
            &self.default_policy,
        )
    }

    /// The exemption a write by `attributes`' user in its namespace has, if any.
    fn request_exemption(&self, attributes: &Attributes<'_>) -> Option<Exemption> {
        let namespace = attributes.namespace;
        if !namespace.is_empty()
            && self
                .defaults
                .exempt_namespaces
                .iter()
                .any(|n| n == namespace)
        {
            return Some(Exemption::Namespace);
        }
        let user = attributes
            .user
            .as_ref()
            .map(|u| u.name.as_str())
            .unwrap_or("");
        if !user.is_empty() && self.defaults.exempt_usernames.iter().any(|u| u == user) {
            return Some(Exemption::User);
        }
        None
    }

    fn exempt_runtime_class(&self, spec: &Value) -> bool {
        let class = spec
            .get("runtimeClassName")
            .and_then(Value::as_str)
            .unwrap_or("");
        !class.is_empty()
            && self
                .defaults
                .exempt_runtime_classes
                .iter()
                .any(|c| c == class)
    }

    /// Upstream's `EvaluatePod`: enforce (pods only) refuses, audit annotates the audit event,
    /// warn warns the client unless the write is refused anyway.
    fn evaluate(
        &self,
        attributes: &Attributes<'_>,
        policy: &NamespacePolicy,
        policy_errors: &[crate::api::status::Cause],
        metadata: &Value,
        spec: &Value,
        enforce: Enforce,
    ) -> ApiResult<()> {
        if self.exempt_runtime_class(spec) {
            crate::audit::annotate(EXEMPT_ANNOTATION, Exemption::RuntimeClass.as_str().into());
            return Ok(());
        }
        if !policy_errors.is_empty() {
            let errors: Vec<String> = policy_errors.iter().map(|c| c.summary()).collect();
            crate::audit::annotate(
                "pod-security.kubernetes.io/error",
                format!("Failed to parse policy: {}", errors.join(", ")),
            );
        }
        let evaluate = |mode: &ModePolicy| checks::check(mode.level, metadata, spec);
        if enforce == Enforce::Yes {
            crate::audit::annotate(ENFORCED_ANNOTATION, policy.enforce.label());
            let enforced = evaluate(&policy.enforce);
            if !enforced.is_empty() {
                self.audit(&policy.audit, &evaluate(&policy.audit));
                return Err(ApiError::forbidden(format!(
                    "{} \"{}\" is forbidden: violates PodSecurity \"{}\": {}",
                    attributes.resource.plural,
                    attributes.name,
                    policy.enforce.label(),
                    checks::render(&enforced)
                )));
            }
        }
        self.audit(&policy.audit, &evaluate(&policy.audit));
        let warned = evaluate(&policy.warn);
        if !warned.is_empty() {
            super::warnings::warn(format!(
                "would violate PodSecurity \"{}\": {}",
                policy.warn.label(),
                checks::render(&warned)
            ));
        }
        Ok(())
    }

    fn audit(&self, mode: &ModePolicy, violations: &[checks::Violation]) {
        if !violations.is_empty() {
            crate::audit::annotate(
                AUDIT_ANNOTATION,
                format!(
                    "would violate PodSecurity \"{}\": {}",
                    mode.label(),
                    checks::render(violations)
                ),
            );
        }
    }

    fn validate_pod(&self, attributes: &Attributes<'_>, pod: &Value) -> ApiResult<()> {
        if attributes.operation == Operation::Delete
            || attributes
                .subresource
                .is_some_and(|s| IGNORED_POD_SUBRESOURCES.contains(&s))
        {
            return Ok(());
        }
        if let Some(exemption) = self.request_exemption(attributes) {
            crate::audit::annotate(EXEMPT_ANNOTATION, exemption.as_str().into());
            return Ok(());
        }
        let (policy, errors) = self.namespace_policy(attributes.namespace);
        if errors.is_empty() && policy.fully_privileged() {
            return Ok(());
        }
        if let (Operation::Update, Some(old)) = (attributes.operation, attributes.old) {
            if !policy::is_significant_pod_update(pod, old) {
                return Ok(());
            }
        }
        let metadata = pod.get("metadata").unwrap_or(&Value::Null);
        let spec = pod.get("spec").unwrap_or(&Value::Null);
        self.evaluate(attributes, &policy, &errors, metadata, spec, Enforce::Yes)
    }

    /// Workloads are never refused: their pod template is warned about and audited at those
    /// modes' levels; the pods they make meet the enforce level when created.
    fn validate_template(&self, attributes: &Attributes<'_>, template: &Value) -> ApiResult<()> {
        if let Some(exemption) = self.request_exemption(attributes) {
            crate::audit::annotate(EXEMPT_ANNOTATION, exemption.as_str().into());
            return Ok(());
        }
        let (policy, errors) = self.namespace_policy(attributes.namespace);
        if errors.is_empty()
            && policy.warn.level == Level::Privileged
            && policy.audit.level == Level::Privileged
        {
            return Ok(());
        }
        let metadata = template.get("metadata").unwrap_or(&Value::Null);
        let spec = template.get("spec").unwrap_or(&Value::Null);
        self.evaluate(attributes, &policy, &errors, metadata, spec, Enforce::No)
    }

    /// Namespace writes: labels that do not parse are refused when they are new; an enforce
    /// level made stricter warns about the pods already there that it would refuse.
    fn validate_namespace(&self, attributes: &Attributes<'_>, namespace: &Value) -> ApiResult<()> {
        let (after, errors) =
            policy::policy_to_evaluate(namespace.pointer("/metadata/labels"), &self.default_policy);
        let name = crate::api::meta::meta_str(namespace, "name").to_string();
        // Upstream's PodSecurity names the kind in lower case here.
        let invalid = |errors: Vec<crate::api::status::Cause>| {
            ApiError::invalid("", "namespace", &name, errors)
        };
        match (attributes.operation, attributes.old) {
            (Operation::Create, _) => match errors.is_empty() {
                true => Ok(()),
                false => Err(invalid(errors)),
            },
            (Operation::Update, Some(old)) => {
                let (before, old_errors) = policy::policy_to_evaluate(
                    old.pointer("/metadata/labels"),
                    &self.default_policy,
                );
                if !errors.is_empty() && (old_errors.is_empty() || old_errors != errors) {
                    return Err(invalid(errors));
                }
                let relaxed_or_same = after.enforce.version == before.enforce.version
                    && after.enforce.level <= before.enforce.level;
                if after.enforce == before.enforce
                    || after.enforce.level == Level::Privileged
                    || relaxed_or_same
                    || self.defaults.exempt_namespaces.contains(&name)
                {
                    return Ok(());
                }
                for warning in self.existing_pod_warnings(&name, &after.enforce) {
                    super::warnings::warn(warning);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn existing_pod_warnings(&self, namespace: &str, enforce: &ModePolicy) -> Vec<String> {
        let deadline = Instant::now() + namespace::CHECK_TIMEOUT;
        let listed = crate::api::resources::find("", "v1", "pods")
            .ok_or(())
            .and_then(|pods| {
                self.store
                    .list(&pods.list_prefix(Some(namespace)), None, 0)
                    .map_err(|_| ())
            });
        let Ok(listed) = listed else {
            return vec!["failed to list pods while checking new PodSecurity enforce level".into()];
        };
        let pods = listed
            .kvs
            .iter()
            .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
            .collect();
        namespace::existing_pod_warnings(
            namespace,
            enforce,
            pods,
            &self.defaults.exempt_runtime_classes,
            deadline,
        )
    }
}

/// The pod template of a workload kind, if `attributes` names one.
fn pod_template<'a>(attributes: &Attributes<'_>, object: &'a Value) -> Option<&'a Value> {
    let r = attributes.resource;
    match (r.group, r.plural) {
        ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets")
        | ("batch", "jobs")
        | ("", "replicationcontrollers") => object.pointer("/spec/template"),
        ("batch", "cronjobs") => object.pointer("/spec/jobTemplate/spec/template"),
        ("", "podtemplates") => object.get("template"),
        _ => None,
    }
}

#[async_trait]
impl Plugin for PodSecurity {
    fn name(&self) -> &'static str {
        "PodSecurity"
    }

    async fn validate(&self, attributes: &Attributes<'_>, object: Option<&Value>) -> ApiResult<()> {
        let Some(object) = object else {
            return Ok(());
        };
        let r = attributes.resource;
        if r.group.is_empty() && r.plural == "pods" {
            return self.validate_pod(attributes, object);
        }
        if attributes.subresource.is_some() || attributes.operation == Operation::Delete {
            return Ok(());
        }
        if r.group.is_empty() && r.plural == "namespaces" {
            return self.validate_namespace(attributes, object);
        }
        match pod_template(attributes, object) {
            Some(template) => self.validate_template(attributes, template),
            None => Ok(()),
        }
    }
}
