//! RBAC authorization, as kube-apiserver's `--authorization-mode=RBAC`: every request's
//! [`Attributes`] are checked against the Roles and ClusterRoles bound to its user by
//! RoleBindings and ClusterRoleBindings.
//!
//! # Layout
//! - `attributes`: what a request asks to do (upstream's RequestInfo).
//! - `rules`: PolicyRule matching and the "covers" check escalation prevention needs.
//! - `policy`: the in-memory index of roles and bindings; `sync` keeps it current from the store.
//! - `gate`: the check in front of the router, with impersonation and 403 answers.
//! - `escalation`: nobody grants what they do not hold (unless they may `escalate`/`bind`).
//! - `bootstrap`: the default roles and bindings, reconciled at start.
//! - `aggregation`: the controller filling aggregated ClusterRoles (admin, edit, view).

pub mod aggregation;
pub mod attributes;
pub mod bootstrap;
pub mod escalation;
pub mod gate;
pub mod policy;
pub mod rules;
mod sync;

use std::sync::{Arc, RwLock};

pub use attributes::{Attributes, ResourceAttributes};
use policy::Policy;
use rules::PolicyRule;

use crate::api::ApiError;
use crate::apiserver::authn::UserInfo;
use crate::store::{Store, StoreError};

/// Members are allowed everything without a look at the policy, as upstream's
/// `system:masters` (the admin kubeconfig's group).
pub const MASTERS_GROUP: &str = "system:masters";

/// An authorizer's answer, with upstream's reason text when one applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

/// The RBAC authorizer: the policy index and the decisions made from it.
pub struct Rbac {
    policy: RwLock<Policy>,
    /// Joined nodes' requests are decided by the node authorizer first, as upstream's
    /// `--authorization-mode=Node,RBAC`.
    nodes: Option<crate::join::node_authz::NodeAuthorizer>,
}

impl Rbac {
    /// An authorizer over `store`'s RBAC objects: loads them now (so no request is decided on
    /// an empty policy) and follows the store's watch from then on. Needs a tokio runtime.
    pub fn start(store: &Store) -> Result<Arc<Rbac>, StoreError> {
        let (policy, revision) = sync::load(store)?;
        let rbac = Arc::new(Rbac {
            policy: RwLock::new(policy),
            nodes: Some(crate::join::node_authz::NodeAuthorizer::new(store.clone())),
        });
        tokio::spawn(sync::follow(Arc::downgrade(&rbac), store.clone(), revision));
        Ok(rbac)
    }

    /// An authorizer over a fixed policy, for tests.
    #[cfg(test)]
    pub fn from_policy(policy: Policy) -> Rbac {
        Rbac {
            policy: RwLock::new(policy),
            nodes: None,
        }
    }

    /// The node authorizer's decision, when it has one for this request.
    pub fn node_decision(
        &self,
        user: &UserInfo,
        attributes: &Attributes,
    ) -> Option<crate::api::ApiResult<()>> {
        self.nodes.as_ref()?.decide(user, attributes)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Policy> {
        // A panic while holding the lock cannot leave the index half-updated in a way that
        // matters more than refusing every request would: keep serving.
        self.policy.read().unwrap_or_else(|e| e.into_inner())
    }

    fn replace(&self, policy: Policy) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
    }

    fn apply(&self, key: &str, object: Option<&serde_json::Value>) {
        self.policy
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .apply(key, object);
    }

    /// Whether `user` may do what `attributes` describe; the request path's question.
    pub fn allows(&self, user: &UserInfo, attributes: &Attributes) -> bool {
        is_master(user)
            || self
                .read()
                .allows(user, attributes.namespace(), |rule| rule.allows(attributes))
    }

    /// [`Rbac::allows`] with upstream's reason, for reviews.
    pub fn authorize(&self, user: &UserInfo, attributes: &Attributes) -> Decision {
        if is_master(user) {
            return Decision {
                allowed: true,
                reason: String::new(),
            };
        }
        let found = self
            .read()
            .find_allowing(user, attributes.namespace(), |rule| rule.allows(attributes));
        Decision {
            allowed: found.is_some(),
            reason: found.unwrap_or_default(),
        }
    }

    /// Every rule `user` holds in `namespace` (cluster-wide ones included).
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<PolicyRule> {
        if is_master(user) {
            return vec![
                PolicyRule::resources(&["*"], &["*"], &["*"]),
                PolicyRule::urls(&["*"], &["*"]),
            ];
        }
        self.read().rules_for(user, namespace)
    }

    /// The rules of the role a binding refers to; None when it does not exist.
    pub fn role_rules(&self, kind: &str, namespace: &str, name: &str) -> Option<Vec<PolicyRule>> {
        self.read()
            .role_rules(kind, namespace, name)
            .map(|rules| rules.as_ref().clone())
    }
}

pub fn is_master(user: &UserInfo) -> bool {
    user.groups.iter().any(|g| g == MASTERS_GROUP)
}

/// The 403 upstream answers a denied request with (`responsewriters.Forbidden`).
pub fn forbidden(user: &UserInfo, attributes: &Attributes, reason: &str) -> ApiError {
    let mut detail = match &attributes.resource {
        None => format!(
            "User {:?} cannot {} path {:?}",
            user.name, attributes.verb, attributes.path
        ),
        Some(r) => {
            let resource = match r.subresource.as_str() {
                "" => r.resource.clone(),
                sub => format!("{}/{sub}", r.resource),
            };
            match r.namespace.as_str() {
                "" => format!(
                    "User {:?} cannot {} resource {resource:?} in API group {:?} at the cluster scope",
                    user.name, attributes.verb, r.api_group
                ),
                ns => format!(
                    "User {:?} cannot {} resource {resource:?} in API group {:?} in the namespace {ns:?}",
                    user.name, attributes.verb, r.api_group
                ),
            }
        }
    };
    if !reason.is_empty() {
        detail = format!("{detail}: {reason}");
    }
    let (group, resource, name) = match &attributes.resource {
        Some(r) => (r.api_group.as_str(), r.resource.as_str(), r.name.as_str()),
        None => ("", "", ""),
    };
    forbidden_about(group, resource, name, &detail)
}

/// upstream's `errors.NewForbidden(groupResource, name, err)`.
pub fn forbidden_about(group: &str, resource: &str, name: &str, detail: &str) -> ApiError {
    let qualified = match group {
        "" => resource.to_string(),
        g => format!("{resource}.{g}"),
    };
    let message = match (qualified.as_str(), name) {
        ("", _) => format!("forbidden: {detail}"),
        (q, "") => format!("{q} is forbidden: {detail}"),
        (q, n) => format!("{q} {n:?} is forbidden: {detail}"),
    };
    let mut error = ApiError::forbidden(message);
    error.group = group.to_string();
    error.kind = resource.to_string();
    error.name = name.to_string();
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> UserInfo {
        UserInfo {
            name: "alice".into(),
            uid: String::new(),
            groups: vec!["dev".into(), "system:authenticated".into()],
        }
    }

    #[test]
    fn denials_read_exactly_like_upstream() {
        let get = Attributes::from_request("GET", "/api/v1/namespaces/default/pods/web", "");
        let error = forbidden(&alice(), &get, "");
        assert_eq!(error.code, 403);
        assert_eq!(
            error.message,
            r#"pods "web" is forbidden: User "alice" cannot get resource "pods" in API group "" in the namespace "default""#
        );
        let list = Attributes::from_request("GET", "/apis/apps/v1/deployments", "");
        assert_eq!(
            forbidden(&alice(), &list, "").message,
            r#"deployments.apps is forbidden: User "alice" cannot list resource "deployments" in API group "apps" at the cluster scope"#
        );
        let scale =
            Attributes::from_request("PUT", "/apis/apps/v1/namespaces/a/deployments/d/scale", "");
        assert_eq!(
            forbidden(&alice(), &scale, "").message,
            r#"deployments.apps "d" is forbidden: User "alice" cannot update resource "deployments/scale" in API group "apps" in the namespace "a""#
        );
        let path = Attributes::from_request("GET", "/metrics", "");
        assert_eq!(
            forbidden(&alice(), &path, "").message,
            r#"forbidden: User "alice" cannot get path "/metrics""#
        );
    }

    #[test]
    fn masters_are_allowed_without_any_policy() {
        let rbac = Rbac::from_policy(Policy::default());
        let admin = UserInfo {
            name: "admin".into(),
            uid: String::new(),
            groups: vec![MASTERS_GROUP.into()],
        };
        let delete = Attributes::from_request("DELETE", "/api/v1/nodes/n", "");
        assert!(rbac.authorize(&admin, &delete).allowed);
        assert!(!rbac.authorize(&alice(), &delete).allowed);
    }
}
