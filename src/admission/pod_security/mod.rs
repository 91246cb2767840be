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

use async_trait::async_trait;
use serde_json::Value;

use super::{Attributes, Operation, Plugin};
use crate::api::{ApiError, ApiResult};
use crate::store::Store;
use checks::Level;

const LABEL_PREFIX: &str = "pod-security.kubernetes.io/";
const AUDIT_ANNOTATION: &str = "pod-security.kubernetes.io/audit-violations";

/// The cluster-wide defaults, from `[pod_security]` in the config file.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub enforce: Level,
    pub audit: Level,
    pub warn: Level,
    pub exempt_namespaces: Vec<String>,
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
        })
    }
}

/// One mode's level and version (`restricted:latest`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModePolicy {
    level: Level,
    version: String,
}

impl ModePolicy {
    fn label(&self) -> String {
        format!("{}:{}", self.level.as_str(), self.version)
    }
}

#[derive(Debug, Clone)]
struct NamespacePolicy {
    enforce: ModePolicy,
    audit: ModePolicy,
    warn: ModePolicy,
}

pub struct PodSecurity {
    store: Store,
    defaults: Defaults,
}

impl PodSecurity {
    pub fn new(store: Store, defaults: Defaults) -> PodSecurity {
        PodSecurity { store, defaults }
    }

    /// The policy a namespace's labels give, the defaults filling the gaps. An unknown level
    /// in a label counts as restricted, as upstream (fail closed).
    fn policy_of_labels(&self, labels: Option<&Value>) -> NamespacePolicy {
        let mode = |name: &str, default: Level| {
            let label = |suffix: &str| {
                labels
                    .and_then(|l| l.get(format!("{LABEL_PREFIX}{suffix}")))
                    .and_then(Value::as_str)
            };
            let level = match label(name) {
                Some(text) => Level::parse(text).unwrap_or(Level::Restricted),
                None => default,
            };
            let version = label(&format!("{name}-version"))
                .unwrap_or("latest")
                .to_string();
            ModePolicy { level, version }
        };
        NamespacePolicy {
            enforce: mode("enforce", self.defaults.enforce),
            audit: mode("audit", self.defaults.audit),
            warn: mode("warn", self.defaults.warn),
        }
    }

    fn namespace_policy(&self, namespace: &str) -> NamespacePolicy {
        let namespace = crate::api::resources::find("", "v1", "namespaces")
            .and_then(|r| self.store.get(&r.key("", namespace)).ok().flatten())
            .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok());
        self.policy_of_labels(
            namespace
                .as_ref()
                .and_then(|ns| ns.pointer("/metadata/labels")),
        )
    }

    fn check_pod(&self, attributes: &Attributes<'_>, pod: &Value) -> ApiResult<()> {
        let policy = self.namespace_policy(attributes.namespace);
        let metadata = pod.get("metadata").cloned().unwrap_or(Value::Null);
        let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
        let evaluate = |mode: &ModePolicy| checks::check(mode.level, &metadata, &spec);
        let enforced = evaluate(&policy.enforce);
        if !enforced.is_empty() {
            return Err(ApiError::forbidden(format!(
                "pods \"{}\" is forbidden: violates PodSecurity \"{}\": {}",
                attributes.name,
                policy.enforce.label(),
                checks::render(&enforced)
            )));
        }
        let warned = evaluate(&policy.warn);
        if !warned.is_empty() {
            super::warnings::warn(format!(
                "would violate PodSecurity \"{}\": {}",
                policy.warn.label(),
                checks::render(&warned)
            ));
        }
        self.audit(&policy.audit, &evaluate(&policy.audit));
        Ok(())
    }

    /// Workloads only get warnings: for the enforce level (their pods would be refused) and for
    /// the warn level.
    fn check_template(&self, attributes: &Attributes<'_>, template: &Value) {
        let policy = self.namespace_policy(attributes.namespace);
        let metadata = template.get("metadata").cloned().unwrap_or(Value::Null);
        let spec = template.get("spec").cloned().unwrap_or(Value::Null);
        let mut levels = vec![&policy.enforce];
        if policy.warn != policy.enforce {
            levels.push(&policy.warn);
        }
        for mode in levels {
            let violations = checks::check(mode.level, &metadata, &spec);
            if !violations.is_empty() {
                super::warnings::warn(format!(
                    "would violate PodSecurity \"{}\": {}",
                    mode.label(),
                    checks::render(&violations)
                ));
            }
        }
        self.audit(
            &policy.audit,
            &checks::check(policy.audit.level, &metadata, &spec),
        );
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

    /// A namespace whose enforce level gets stricter: warn about the pods already in it that
    /// the new level would refuse.
    fn check_relabel(&self, old: &Value, new: &Value) {
        let name = crate::api::meta::meta_str(new, "name").to_string();
        if self.defaults.exempt_namespaces.contains(&name) {
            return;
        }
        let before = self.policy_of_labels(old.pointer("/metadata/labels"));
        let after = self.policy_of_labels(new.pointer("/metadata/labels"));
        if after.enforce == before.enforce || after.enforce.level == Level::Privileged {
            return;
        }
        let Some(pods) = crate::api::resources::find("", "v1", "pods") else {
            return;
        };
        let Ok(listed) = self
            .store
            .list(&pods.list_prefix(Some(name.as_str())), None, 0)
        else {
            return;
        };
        let mut offenders = Vec::new();
        for kv in listed.kvs {
            let Ok(pod) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            let metadata = pod.get("metadata").cloned().unwrap_or(Value::Null);
            let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
            let violations = checks::check(after.enforce.level, &metadata, &spec);
            if !violations.is_empty() {
                let reasons: Vec<&str> = violations.iter().map(|v| v.reason).collect();
                offenders.push(format!(
                    "{}: {}",
                    crate::api::meta::meta_str(&pod, "name"),
                    reasons.join(", ")
                ));
            }
        }
        if !offenders.is_empty() {
            super::warnings::warn(format!(
                "existing pods in namespace \"{name}\" violate the new PodSecurity enforce level \"{}\"",
                after.enforce.label()
            ));
            for offender in offenders {
                super::warnings::warn(offender);
            }
        }
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
        if attributes.subresource.is_some() {
            return Ok(());
        }
        let r = attributes.resource;
        if r.group.is_empty() && r.plural == "namespaces" {
            if let (Operation::Update, Some(old)) = (attributes.operation, attributes.old) {
                self.check_relabel(old, object);
            }
            return Ok(());
        }
        if self
            .defaults
            .exempt_namespaces
            .iter()
            .any(|n| n == attributes.namespace)
        {
            return Ok(());
        }
        // Pods are checked when created; updates can change almost nothing a check reads
        // (upstream skips the ignorable ones too).
        if r.group.is_empty() && r.plural == "pods" {
            if attributes.operation == Operation::Create {
                return self.check_pod(attributes, object);
            }
            return Ok(());
        }
        if attributes.operation != Operation::Delete {
            if let Some(template) = pod_template(attributes, object) {
                self.check_template(attributes, template);
            }
        }
        Ok(())
    }
}
