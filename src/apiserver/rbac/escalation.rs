//! Escalation prevention for writes of Roles, ClusterRoles and their bindings: a user may only
//! grant permissions they already hold, unless RBAC lets them `escalate` (roles) or `bind`
//! (bindings), as upstream's `rbac/*/policybased` storage does.
//!
//! It runs as an admission plugin: the registry hands it every write with the request's user.
//! Writes made outside a request (bootstrap policy at start) carry no user and are not checked.

use std::sync::Arc;

use serde_json::Value;

use super::attributes::{Attributes, ResourceAttributes};
use super::rules::{go_quoted_list, PolicyRule};
use super::Rbac;
use crate::admission::{self, Operation};
use crate::api::resources::Resource;
use crate::api::ApiResult;
use crate::apiserver::authn::UserInfo;

/// The admission plugin refusing RBAC writes that grant more than the writer holds.
pub struct EscalationCheck {
    pub rbac: Arc<Rbac>,
}

#[async_trait::async_trait]
impl admission::Plugin for EscalationCheck {
    fn name(&self) -> &'static str {
        "RBACEscalation"
    }

    async fn validate(
        &self,
        a: &admission::Attributes<'_>,
        object: Option<&Value>,
    ) -> ApiResult<()> {
        let (Some(user), Some(new)) = (&a.user, object) else {
            return Ok(());
        };
        if a.operation == Operation::Delete || a.subresource.is_some() {
            return Ok(());
        }
        check(&self.rbac, user, a.resource, a.namespace, new, a.old)
    }
}

/// Refuses a create (`old` None) or update of an RBAC object granting what `user` does not
/// hold. Other resources pass.
pub fn check(
    rbac: &Rbac,
    user: &UserInfo,
    r: &Resource,
    namespace: &str,
    new: &Value,
    old: Option<&Value>,
) -> ApiResult<()> {
    if r.group != "rbac.authorization.k8s.io" {
        return Ok(());
    }
    check_as(rbac, user, r, namespace, new, old)
}

fn check_as(
    rbac: &Rbac,
    user: &UserInfo,
    r: &Resource,
    namespace: &str,
    new: &Value,
    old: Option<&Value>,
) -> ApiResult<()> {
    if super::is_master(user) {
        return Ok(());
    }
    let name = crate::api::meta::name(new);
    let verb_on = |verb: &str, resource: &str, object: &str| Attributes {
        verb: verb.into(),
        path: String::new(),
        resource: Some(ResourceAttributes {
            api_group: "rbac.authorization.k8s.io".into(),
            resource: resource.into(),
            namespace: namespace.into(),
            name: object.into(),
            ..ResourceAttributes::default()
        }),
    };
    let granted: Vec<PolicyRule> = match r.kind {
        "Role" | "ClusterRole" => {
            let rules = rules_of(new);
            let aggregation = new.get("aggregationRule").filter(|a| !a.is_null());
            if old.is_some_and(|old| {
                rules_of(old) == rules
                    && old.get("aggregationRule").filter(|a| !a.is_null()) == aggregation
            }) {
                return Ok(());
            }
            if rbac.allows(user, &verb_on("escalate", r.plural, name)) {
                return Ok(());
            }
            match aggregation {
                // An aggregation rule can pull in any role's rules, cluster-admin's included.
                Some(_) => vec![
                    PolicyRule::resources(&["*"], &["*"], &["*"]),
                    PolicyRule::urls(&["*"], &["*"]),
                ],
                None => rules,
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let role_ref = new.get("roleRef").cloned().unwrap_or(Value::Null);
            if old.is_some_and(|old| {
                old.get("roleRef") == Some(&role_ref) && old.get("subjects") == new.get("subjects")
            }) {
                return Ok(());
            }
            let kind = role_ref.get("kind").and_then(Value::as_str).unwrap_or("");
            let role = role_ref.get("name").and_then(Value::as_str).unwrap_or("");
            let role_resource = match kind {
                "Role" => "roles",
                _ => "clusterroles",
            };
            if rbac.allows(user, &verb_on("bind", role_resource, role)) {
                return Ok(());
            }
            // A binding to a role that does not exist yet grants nothing now, but would later:
            // upstream refuses it too unless the user may bind.
            rbac.role_rules(kind, namespace, role)
                .unwrap_or_else(|| vec![PolicyRule::resources(&["*"], &["*"], &["*"])])
        }
        _ => return Ok(()),
    };
    let held = rbac.rules_for(user, namespace);
    let Err(missing) = super::rules::covers(&held, &granted) else {
        return Ok(());
    };
    let mut lines: Vec<String> = missing.iter().map(PolicyRule::compact_string).collect();
    lines.sort();
    lines.dedup();
    let detail = format!(
        "user {} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        crate::api::go_syntax::quoted(&user.name),
        go_quoted_list(&user.groups),
        lines.join("\n")
    );
    Err(super::forbidden_about(r.group, r.plural, name, &detail))
}

fn rules_of(object: &Value) -> Vec<PolicyRule> {
    object
        .get("rules")
        .cloned()
        .and_then(|rules| serde_json::from_value(rules).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources;
    use crate::apiserver::rbac::policy::Policy;
    use serde_json::json;

    fn alice() -> UserInfo {
        UserInfo {
            name: "alice".into(),
            uid: String::new(),
            groups: vec!["dev".into(), "system:authenticated".into()],
        }
    }

    fn rbac() -> Arc<Rbac> {
        let mut policy = Policy::default();
        policy.apply(
            "/rbac.authorization.k8s.io/clusterroles/edit",
            Some(&json!({"rules": [{"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]}, {"verbs": ["get", "create", "update"], "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings", "clusterrolebindings"]}]})),
        );
        policy.apply(
            "/rbac.authorization.k8s.io/clusterroles/cluster-admin",
            Some(&json!({"rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]})),
        );
        policy.apply(
            "/rbac.authorization.k8s.io/rolebindings/a/alice",
            Some(&json!({"roleRef": {"kind": "ClusterRole", "name": "edit"}, "subjects": [{"kind": "User", "name": "alice"}]})),
        );
        Arc::new(Rbac::from_policy(policy))
    }

    fn rbac_resource(plural: &str) -> &'static Resource {
        resources::find("rbac.authorization.k8s.io", "v1", plural).unwrap()
    }

    #[tokio::test]
    async fn granting_held_rules_is_allowed_and_more_is_refused_with_upstreams_message() {
        let role = rbac_resource("roles");
        let held = json!({"metadata": {"name": "r"}, "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]});
        let more = json!({"metadata": {"name": "r"}, "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}]});
        let rbac = rbac();
        let (ok, refused) = (
            check(&rbac, &alice(), role, "a", &held, None),
            check(&rbac, &alice(), role, "a", &more, None),
        );
        assert!(ok.is_ok());
        let refused = refused.unwrap_err();
        assert_eq!(refused.code, 403);
        assert_eq!(
            refused.message,
            "roles.rbac.authorization.k8s.io \"r\" is forbidden: user \"alice\" (groups=[\"dev\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\"]}"
        );
    }

    #[tokio::test]
    async fn binding_to_cluster_admin_is_refused_but_not_outside_a_request() {
        use crate::admission::Plugin;
        let crb = rbac_resource("clusterrolebindings");
        let binding = json!({"metadata": {"name": "mine"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"}, "subjects": [{"kind": "User", "name": "alice"}]});
        let plugin = EscalationCheck { rbac: rbac() };
        let mut attributes = admission::Attributes {
            operation: Operation::Create,
            resource: crb,
            subresource: None,
            namespace: "",
            name: "mine",
            old: None,
            dry_run: false,
            user: Some(alice()),
        };
        let refused = plugin.validate(&attributes, Some(&binding)).await;
        let message = refused.unwrap_err().message;
        assert!(message.starts_with("clusterrolebindings.rbac.authorization.k8s.io \"mine\" is forbidden: user \"alice\""), "{message}");
        attributes.user = None;
        assert!(
            plugin.validate(&attributes, Some(&binding)).await.is_ok(),
            "no writer: a system write"
        );
    }
}
