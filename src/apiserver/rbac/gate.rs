//! The authorization step in front of the router: impersonation first (who the request acts
//! as), then the RBAC decision on its attributes.

use http::HeaderMap;

use super::attributes::{Attributes, ResourceAttributes};
use super::Rbac;
use crate::api::{ApiError, ApiResult};
use crate::apiserver::authn::{UserExtra, UserInfo, AUTHENTICATED_GROUP};

const IMPERSONATE_USER: &str = "impersonate-user";
const IMPERSONATE_GROUP: &str = "impersonate-group";
const IMPERSONATE_UID: &str = "impersonate-uid";
const IMPERSONATE_EXTRA_PREFIX: &str = "impersonate-extra-";
/// What every impersonation header starts with.
const IMPERSONATE_PREFIX: &str = "impersonate-";

/// The user the request acts as, if it may do what it asks; the 403 to answer otherwise.
pub fn check(
    rbac: &Rbac,
    user: UserInfo,
    method: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
) -> ApiResult<UserInfo> {
    // Upstream authorizes the privileged group before any other authorizer: no need to work out
    // what the request asks for (this is every request of the admin kubeconfig).
    if super::is_master(&user) && !asks_to_impersonate(headers) {
        return Ok(user);
    }
    let user = impersonate(rbac, user, headers)?;
    let attributes = Attributes::from_request(method, path, query);
    if let Some(decision) = rbac.node_decision(&user, &attributes) {
        return decision.map(|()| user);
    }
    match rbac.allows(&user, &attributes) {
        true => Ok(user),
        false => Err(super::forbidden(&user, &attributes, "")),
    }
}

fn asks_to_impersonate(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|name| name.as_str().starts_with(IMPERSONATE_PREFIX))
}

/// Applies the `Impersonate-*` headers: `user` needs `impersonate` on each user, service
/// account, group and uid it asks to act as. No headers: `user` itself.
fn impersonate(rbac: &Rbac, user: UserInfo, headers: &HeaderMap) -> ApiResult<UserInfo> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(String::from)
            .collect()
    };
    let name = values(IMPERSONATE_USER).into_iter().next();
    let groups = values(IMPERSONATE_GROUP);
    let uid = values(IMPERSONATE_UID).into_iter().next();
    let extra = impersonated_extra(headers).unwrap_or_default();
    let Some(name) = name else {
        if groups.is_empty() && uid.is_none() && extra.0.is_empty() {
            return Ok(user);
        }
        return Err(ApiError::internal(
            "requested impersonation of groups, uid or extras without impersonating a user",
        ));
    };
    let mut checks = Vec::new();
    match service_account_of(&name) {
        Some((namespace, sa)) => checks.push(target("", "serviceaccounts", namespace, sa)),
        None => checks.push(target("", "users", "", &name)),
    }
    for group in &groups {
        checks.push(target("", "groups", "", group));
    }
    if let Some(uid) = &uid {
        checks.push(target("authentication.k8s.io", "uids", "", uid));
    }
    // Each extra value as upstream: `impersonate` on `userextras/<key>` named the value.
    for (key, extra_values) in &extra.0 {
        for value in extra_values {
            let mut check = target("authentication.k8s.io", "userextras", "", value);
            if let Some(resource) = check.resource.as_mut() {
                resource.subresource = key.clone();
            }
            checks.push(check);
        }
    }
    for attributes in &checks {
        if !rbac.allows(&user, attributes) {
            return Err(super::forbidden(&user, attributes, ""));
        }
    }
    let mut impersonated_groups = groups;
    if let Some((namespace, _)) = service_account_of(&name) {
        for group in [
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{namespace}"),
        ] {
            if !impersonated_groups.contains(&group) {
                impersonated_groups.push(group);
            }
        }
    }
    if name != crate::apiserver::authn::ANONYMOUS_USER
        && !impersonated_groups.iter().any(|g| g == AUTHENTICATED_GROUP)
    {
        impersonated_groups.push(AUTHENTICATED_GROUP.to_string());
    }
    Ok(UserInfo {
        name,
        uid: uid.unwrap_or_default(),
        groups: impersonated_groups,
    })
}

fn target(group: &str, resource: &str, namespace: &str, name: &str) -> Attributes {
    Attributes {
        verb: "impersonate".into(),
        path: String::new(),
        resource: Some(ResourceAttributes {
            api_group: group.into(),
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
            ..ResourceAttributes::default()
        }),
    }
}

/// The extras an impersonating request asks for (`Impersonate-Extra-<key>`, the key
/// percent-decoded as upstream), none when it asks for none. [`check`] has authorized them
/// when it let the request through.
pub fn impersonated_extra(headers: &HeaderMap) -> Option<UserExtra> {
    let mut extra = UserExtra::default();
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix(IMPERSONATE_EXTRA_PREFIX) else {
            continue;
        };
        let key = percent_decode(key);
        if let Ok(value) = value.to_str() {
            extra.0.entry(key).or_default().push(value.to_string());
        }
    }
    (!extra.0.is_empty()).then_some(extra)
}

/// `%XX` escapes decoded; a `%` not followed by two hex digits stays as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `(namespace, name)` of a `system:serviceaccount:<namespace>:<name>` user.
pub fn service_account_of(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then_some((namespace, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::rbac::policy::Policy;
    use serde_json::json;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo::with_groups(name, groups)
    }

    fn rbac() -> Rbac {
        let mut policy = Policy::default();
        policy.apply(
            "/rbac.authorization.k8s.io/clusterroles/impersonator",
            Some(&json!({"rules": [{"verbs": ["impersonate"], "apiGroups": [""], "resources": ["users"], "resourceNames": ["alice"]}]})),
        );
        policy.apply(
            "/rbac.authorization.k8s.io/clusterrolebindings/bob-impersonates",
            Some(&json!({"roleRef": {"kind": "ClusterRole", "name": "impersonator"}, "subjects": [{"kind": "User", "name": "bob"}]})),
        );
        Rbac::from_policy(policy)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn a_permitted_impersonation_acts_as_the_named_user() {
        let acting = impersonate(
            &rbac(),
            user("bob", &[]),
            &headers(&[("Impersonate-User", "alice")]),
        )
        .unwrap();
        assert_eq!(acting, user("alice", &[AUTHENTICATED_GROUP]));
        let admin = user("admin", &["system:masters"]);
        let sa = impersonate(
            &rbac(),
            admin,
            &headers(&[
                ("Impersonate-User", "system:serviceaccount:a:bot"),
                ("Impersonate-Group", "extra"),
            ]),
        )
        .unwrap();
        assert_eq!(
            sa.groups,
            [
                "extra",
                "system:serviceaccounts",
                "system:serviceaccounts:a",
                AUTHENTICATED_GROUP
            ]
        );
    }

    #[test]
    fn impersonated_extras_need_their_own_permission_and_are_percent_decoded() {
        let asking = headers(&[
            ("Impersonate-User", "alice"),
            ("Impersonate-Extra-Scopes", "view"),
            ("Impersonate-Extra-Scopes", "edit"),
            ("Impersonate-Extra-example.org%2Fteam", "blue"),
        ]);
        // bob may be alice, but not alice with extras.
        let error = impersonate(&rbac(), user("bob", &[]), &asking).unwrap_err();
        assert_eq!(error.code, 403);
        let admin = user("admin", &["system:masters"]);
        assert!(impersonate(&rbac(), admin, &asking).is_ok());
        let extra = impersonated_extra(&asking).unwrap();
        assert_eq!(extra.0["scopes"], ["view", "edit"]);
        assert_eq!(extra.0["example.org/team"], ["blue"]);
        assert_eq!(
            impersonated_extra(&headers(&[("Impersonate-User", "a")])),
            None
        );
        assert_eq!(percent_decode("100%25%zz%4"), "100%%zz%4");
    }

    #[test]
    fn impersonating_without_the_verb_is_forbidden_like_upstream() {
        let error = impersonate(
            &rbac(),
            user("bob", &[]),
            &headers(&[("Impersonate-User", "carol")]),
        )
        .unwrap_err();
        assert_eq!(error.code, 403);
        assert_eq!(
            error.message,
            r#"users "carol" is forbidden: User "bob" cannot impersonate resource "users" in API group "" at the cluster scope"#
        );
        let error = impersonate(
            &rbac(),
            user("bob", &[]),
            &headers(&[
                ("Impersonate-User", "alice"),
                ("Impersonate-Group", "system:masters"),
            ]),
        )
        .unwrap_err();
        assert!(
            error
                .message
                .contains(r#"cannot impersonate resource "groups""#),
            "{}",
            error.message
        );
    }

    #[test]
    fn no_headers_keep_the_user_and_unknown_users_are_denied() {
        let bob = user("bob", &[]);
        assert_eq!(
            impersonate(&rbac(), bob.clone(), &HeaderMap::new()).unwrap(),
            bob
        );
        let denied = check(
            &rbac(),
            bob,
            "GET",
            "/api/v1/namespaces/a/pods",
            "",
            &HeaderMap::new(),
        )
        .unwrap_err();
        assert_eq!(denied.code, 403);
    }
}
