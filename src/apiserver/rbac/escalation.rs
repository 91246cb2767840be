//! Escalation prevention for writes of Roles, ClusterRoles and their bindings: a user may only
//! grant permissions they already hold, unless RBAC lets them `escalate` (roles) or `bind`
//! (bindings), as upstream's `rbac/*/policybased` storage does.
//!
//! The registry calls [`check`] for every write; it knows the object, but not who writes it, so
//! the request's user and authorizer travel in a task-local set by the API router. Writes made
//! outside a request (bootstrap policy at start) carry none and are not checked.

use std::sync::Arc;

use serde_json::Value;

use super::attributes::{Attributes, ResourceAttributes};
use super::rules::{go_quoted, go_quoted_list, PolicyRule};
use super::Rbac;
use crate::api::resources::Resource;
use crate::api::ApiResult;
use crate::apiserver::authn::UserInfo;

tokio::task_local! {
    static WRITER: (Arc<Rbac>, UserInfo);
}

/// Runs `request` with `user` known as the writer to [`check`].
pub async fn as_writer<F: std::future::Future>(
    rbac: Arc<Rbac>,
    user: UserInfo,
    request: F,
) -> F::Output {
    WRITER.scope((rbac, user), request).await
}

/// Refuses a create (`old` None) or update of an RBAC object granting what the writer does not
/// hold. Other resources, and writes outside a request, pass.
pub fn check(r: &Resource, namespace: &str, new: &Value, old: Option<&Value>) -> ApiResult<()> {
    if r.group != "rbac.authorization.k8s.io" {
        return Ok(());
    }
    let Ok(Some(err)) =
        WRITER.try_with(|(rbac, user)| check_as(rbac, user, r, namespace, new, old).err())
    else {
        return Ok(());
    };
    Err(err)
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
        go_quoted(&user.name),
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
        let (ok, refused) = as_writer(rbac(), alice(), async {
            (check(role, "a", &held, None), check(role, "a", &more, None))
        })
        .await;
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
        let crb = rbac_resource("clusterrolebindings");
        let binding = json!({"metadata": {"name": "mine"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"}, "subjects": [{"kind": "User", "name": "alice"}]});
        let refused = as_writer(rbac(), alice(), async { check(crb, "", &binding, None) }).await;
        let message = refused.unwrap_err().message;
        assert!(message.starts_with("clusterrolebindings.rbac.authorization.k8s.io \"mine\" is forbidden: user \"alice\""), "{message}");
        assert!(
            check(crb, "", &binding, None).is_ok(),
            "no writer: a system write"
        );
    }
}
