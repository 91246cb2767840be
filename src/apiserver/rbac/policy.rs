//! The in-memory RBAC policy: every Role, ClusterRole and binding, indexed by namespace and
//! subject so one request looks at the few bindings naming its user and groups, never at all
//! of them. Kept current from the store's watch by [`super::sync`].

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::rules::PolicyRule;
use crate::apiserver::authn::UserInfo;

/// Store key prefix of every RBAC object.
pub const KEY_PREFIX: &str = "/rbac.authorization.k8s.io/";

const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// A RoleBinding (namespace set) or ClusterRoleBinding (namespace empty).
#[derive(Debug)]
pub struct Binding {
    pub namespace: String,
    pub name: String,
    pub role_kind: String,
    pub role_name: String,
    /// Who the binding names, as index keys (`u:<user>` or `g:<group>`) with the upstream
    /// description used in "allowed by" reasons.
    subjects: Vec<(String, String)>,
}

impl Binding {
    /// `RoleBinding "name/namespace"` or `ClusterRoleBinding "name"`, as upstream's reasons.
    fn describe(&self) -> String {
        match self.namespace.as_str() {
            "" => format!("ClusterRoleBinding {:?}", self.name),
            ns => format!("RoleBinding {:?}", format!("{}/{ns}", self.name)),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RoleRef {
    kind: String,
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Subject {
    kind: String,
    name: String,
    namespace: String,
}

type BindingId = (String, String);

#[derive(Default)]
pub struct Policy {
    roles: HashMap<(String, String), Arc<Vec<PolicyRule>>>,
    cluster_roles: HashMap<String, Arc<Vec<PolicyRule>>>,
    bindings: HashMap<BindingId, Arc<Binding>>,
    /// namespace ("" for ClusterRoleBindings) → subject key → bindings naming it.
    by_subject: HashMap<String, HashMap<String, Vec<Arc<Binding>>>>,
}

/// What one stored key holds.
enum Object<'a> {
    Role { namespace: &'a str, name: &'a str },
    ClusterRole { name: &'a str },
    RoleBinding { namespace: &'a str, name: &'a str },
    ClusterRoleBinding { name: &'a str },
}

fn parse_key(key: &str) -> Option<Object<'_>> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let segments: Vec<&str> = rest.split('/').collect();
    match segments.as_slice() {
        ["roles", namespace, name] => Some(Object::Role { namespace, name }),
        ["clusterroles", name] => Some(Object::ClusterRole { name }),
        ["rolebindings", namespace, name] => Some(Object::RoleBinding { namespace, name }),
        ["clusterrolebindings", name] => Some(Object::ClusterRoleBinding { name }),
        _ => None,
    }
}

fn rules_of(object: &Value) -> Vec<PolicyRule> {
    object
        .get("rules")
        .cloned()
        .and_then(|rules| serde_json::from_value(rules).ok())
        .unwrap_or_default()
}

impl Policy {
    /// Records the object stored at `key` (None: it was deleted).
    pub fn apply(&mut self, key: &str, object: Option<&Value>) {
        let Some(parsed) = parse_key(key) else {
            return;
        };
        match parsed {
            Object::Role { namespace, name } => {
                let id = (namespace.to_string(), name.to_string());
                match object {
                    Some(o) => self.roles.insert(id, Arc::new(rules_of(o))),
                    None => self.roles.remove(&id),
                };
            }
            Object::ClusterRole { name } => {
                match object {
                    Some(o) => self
                        .cluster_roles
                        .insert(name.into(), Arc::new(rules_of(o))),
                    None => self.cluster_roles.remove(name),
                };
            }
            Object::RoleBinding { namespace, name } => self.apply_binding(namespace, name, object),
            Object::ClusterRoleBinding { name } => self.apply_binding("", name, object),
        }
    }

    fn apply_binding(&mut self, namespace: &str, name: &str, object: Option<&Value>) {
        let id = (namespace.to_string(), name.to_string());
        if let Some(old) = self.bindings.remove(&id) {
            if let Some(by_key) = self.by_subject.get_mut(namespace) {
                for (key, _) in &old.subjects {
                    if let Some(list) = by_key.get_mut(key) {
                        list.retain(|b| !Arc::ptr_eq(b, &old));
                        if list.is_empty() {
                            by_key.remove(key);
                        }
                    }
                }
            }
        }
        let Some(object) = object else {
            return;
        };
        let role_ref: RoleRef = object
            .get("roleRef")
            .cloned()
            .and_then(|r| serde_json::from_value(r).ok())
            .unwrap_or_default();
        let subjects: Vec<Subject> = object
            .get("subjects")
            .cloned()
            .and_then(|s| serde_json::from_value(s).ok())
            .unwrap_or_default();
        let subjects = subjects
            .iter()
            .filter_map(|s| subject_key(s, namespace))
            .collect();
        let binding = Arc::new(Binding {
            namespace: namespace.to_string(),
            name: name.to_string(),
            role_kind: role_ref.kind,
            role_name: role_ref.name,
            subjects,
        });
        let by_key = self.by_subject.entry(namespace.to_string()).or_default();
        for (key, _) in &binding.subjects {
            by_key.entry(key.clone()).or_default().push(binding.clone());
        }
        self.bindings.insert(id, binding);
    }

    /// The rules a binding grants; none while its role does not exist.
    pub fn role_rules(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<Vec<PolicyRule>>> {
        match kind {
            "ClusterRole" => self.cluster_roles.get(name).cloned(),
            "Role" if !namespace.is_empty() => self
                .roles
                .get(&(namespace.to_string(), name.to_string()))
                .cloned(),
            _ => None,
        }
    }

    /// Calls `visit` with every rule that applies to `user` in `namespace` (cluster-wide rules
    /// first, then the namespace's), and the binding and subject that granted it, until
    /// `visit` returns true.
    pub fn visit_rules(
        &self,
        user: &UserInfo,
        namespace: &str,
        mut visit: impl FnMut(&Binding, &str, &PolicyRule) -> bool,
    ) {
        let keys: Vec<String> = std::iter::once(format!("u:{}", user.name))
            .chain(user.groups.iter().map(|g| format!("g:{g}")))
            .collect();
        let scopes: &[&str] = match namespace {
            "" => &[""],
            ns => &["", ns],
        };
        for scope in scopes {
            let Some(by_key) = self.by_subject.get(*scope) else {
                continue;
            };
            for key in &keys {
                for binding in by_key.get(key).into_iter().flatten() {
                    let Some(rules) =
                        self.role_rules(&binding.role_kind, &binding.namespace, &binding.role_name)
                    else {
                        continue;
                    };
                    let subject = binding
                        .subjects
                        .iter()
                        .find(|(k, _)| k == key)
                        .map_or("", |(_, d)| d.as_str());
                    for rule in rules.iter() {
                        if visit(binding, subject, rule) {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Whether some rule of `user`'s accepts `allowed_by`.
    pub fn allows(
        &self,
        user: &UserInfo,
        namespace: &str,
        allowed_by: impl Fn(&PolicyRule) -> bool,
    ) -> bool {
        let mut allowed = false;
        self.visit_rules(user, namespace, |_, _, rule| {
            allowed = allowed_by(rule);
            allowed
        });
        allowed
    }

    /// Why `user` may do what `allowed_by` accepts: upstream's "allowed by" reason, or None.
    /// Reviews show it; the request path asks [`Policy::allows`], which formats nothing.
    pub fn find_allowing(
        &self,
        user: &UserInfo,
        namespace: &str,
        allowed_by: impl Fn(&PolicyRule) -> bool,
    ) -> Option<String> {
        let mut reason = None;
        self.visit_rules(user, namespace, |binding, subject, rule| {
            if !allowed_by(rule) {
                return false;
            }
            reason = Some(format!(
                "RBAC: allowed by {} of {} {:?} to {subject}",
                binding.describe(),
                binding.role_kind,
                binding.role_name
            ));
            true
        });
        reason
    }

    /// Every rule that applies to `user` in `namespace`.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<PolicyRule> {
        let mut rules = Vec::new();
        self.visit_rules(user, namespace, |_, _, rule| {
            rules.push(rule.clone());
            false
        });
        rules
    }

    pub fn binding_count(&self) -> usize {
        self.bindings.len()
    }
}

/// The index key of a subject: ServiceAccounts are the users named after them; a
/// ServiceAccount without a namespace is in the binding's.
fn subject_key(subject: &Subject, binding_namespace: &str) -> Option<(String, String)> {
    match subject.kind.as_str() {
        "User" => Some((
            format!("u:{}", subject.name),
            format!("User {:?}", subject.name),
        )),
        "Group" => Some((
            format!("g:{}", subject.name),
            format!("Group {:?}", subject.name),
        )),
        "ServiceAccount" => {
            let namespace = match subject.namespace.as_str() {
                "" => binding_namespace,
                ns => ns,
            };
            Some((
                format!("u:{SERVICE_ACCOUNT_PREFIX}{namespace}:{}", subject.name),
                format!(
                    "ServiceAccount {:?}",
                    format!("{}/{namespace}", subject.name)
                ),
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo::with_groups(name, groups)
    }

    fn policy() -> Policy {
        let mut p = Policy::default();
        p.apply(
            "/rbac.authorization.k8s.io/clusterroles/edit",
            Some(&json!({"rules": [{"verbs": ["get", "create"], "apiGroups": [""], "resources": ["pods"]}]})),
        );
        p.apply(
            "/rbac.authorization.k8s.io/roles/a/reader",
            Some(&json!({"rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"]}]})),
        );
        p.apply(
            "/rbac.authorization.k8s.io/rolebindings/a/alice-edit",
            Some(&json!({"roleRef": {"kind": "ClusterRole", "name": "edit"}, "subjects": [{"kind": "User", "name": "alice"}]})),
        );
        p.apply(
            "/rbac.authorization.k8s.io/rolebindings/a/sa-read",
            Some(&json!({"roleRef": {"kind": "Role", "name": "reader"}, "subjects": [{"kind": "ServiceAccount", "name": "bot"}]})),
        );
        p.apply(
            "/rbac.authorization.k8s.io/clusterrolebindings/dev-edit",
            Some(&json!({"roleRef": {"kind": "ClusterRole", "name": "edit"}, "subjects": [{"kind": "Group", "name": "devs"}]})),
        );
        p
    }

    fn can(p: &Policy, u: &UserInfo, verb: &str, resource: &str, namespace: &str) -> bool {
        p.find_allowing(u, namespace, |rule| {
            rule.verb_matches(verb) && rule.resources.iter().any(|r| r == resource)
        })
        .is_some()
    }

    #[test]
    fn a_role_binding_grants_only_in_its_namespace() {
        let p = policy();
        let alice = user("alice", &["system:authenticated"]);
        assert!(can(&p, &alice, "create", "pods", "a"));
        assert!(!can(&p, &alice, "create", "pods", "b"));
        assert!(!can(&p, &alice, "create", "pods", ""));
    }

    #[test]
    fn cluster_role_bindings_to_a_group_grant_everywhere() {
        let p = policy();
        let bob = user("bob", &["devs"]);
        assert!(can(&p, &bob, "get", "pods", "b"));
        assert!(can(&p, &bob, "get", "pods", ""));
        let reason = p.find_allowing(&bob, "b", |_| true).unwrap();
        assert_eq!(
            reason,
            r#"RBAC: allowed by ClusterRoleBinding "dev-edit" of ClusterRole "edit" to Group "devs""#
        );
    }

    #[test]
    fn service_account_subjects_default_to_the_binding_namespace() {
        let p = policy();
        let sa = user("system:serviceaccount:a:bot", &["system:serviceaccounts"]);
        assert!(can(&p, &sa, "get", "configmaps", "a"));
        assert!(!can(
            &p,
            &user("system:serviceaccount:b:bot", &[]),
            "get",
            "configmaps",
            "a"
        ));
    }

    #[test]
    fn deleted_bindings_and_roles_grant_nothing() {
        let mut p = policy();
        let alice = user("alice", &[]);
        p.apply("/rbac.authorization.k8s.io/clusterroles/edit", None);
        assert!(
            !can(&p, &alice, "get", "pods", "a"),
            "a binding to a missing role grants nothing"
        );
        let mut p = policy();
        p.apply("/rbac.authorization.k8s.io/rolebindings/a/alice-edit", None);
        assert!(!can(&p, &alice, "get", "pods", "a"));
        assert_eq!(p.binding_count(), 2);
    }

    #[test]
    fn rewriting_a_binding_replaces_its_subjects() {
        let mut p = policy();
        p.apply(
            "/rbac.authorization.k8s.io/rolebindings/a/alice-edit",
            Some(&json!({"roleRef": {"kind": "ClusterRole", "name": "edit"}, "subjects": [{"kind": "User", "name": "carol"}]})),
        );
        assert!(!can(&p, &user("alice", &[]), "get", "pods", "a"));
        assert!(can(&p, &user("carol", &[]), "get", "pods", "a"));
        assert_eq!(p.rules_for(&user("carol", &[]), "a").len(), 1);
    }
}
