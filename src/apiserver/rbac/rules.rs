//! Policy rules and how a request's attributes are matched against them, as upstream's
//! `rbac/v1` helpers do (`VerbMatches`, `APIGroupMatches`, `ResourceMatches`, ...).

use serde::{Deserialize, Serialize};

use super::attributes::Attributes;
use crate::api::go_syntax::quoted;

/// One `rules[]` entry of a Role or ClusterRole.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyRule {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub verbs: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    #[serde(rename = "nonResourceURLs", skip_serializing_if = "Vec::is_empty")]
    pub non_resource_urls: Vec<String>,
}

const ALL: &str = "*";

impl PolicyRule {
    /// A resource rule; the building block of the bootstrap policy.
    pub fn resources(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
        PolicyRule {
            verbs: strings(verbs),
            api_groups: strings(groups),
            resources: strings(resources),
            ..PolicyRule::default()
        }
    }

    /// A non-resource rule (paths like `/healthz`, `/api/*`).
    pub fn urls(verbs: &[&str], urls: &[&str]) -> PolicyRule {
        PolicyRule {
            verbs: strings(verbs),
            non_resource_urls: strings(urls),
            ..PolicyRule::default()
        }
    }

    pub fn with_names(mut self, names: &[&str]) -> PolicyRule {
        self.resource_names = strings(names);
        self
    }

    /// Whether this rule allows the request.
    pub fn allows(&self, a: &Attributes) -> bool {
        if !self.verb_matches(&a.verb) {
            return false;
        }
        match &a.resource {
            Some(r) => {
                self.api_group_matches(&r.api_group)
                    && self.resource_matches(&r.resource, &r.subresource)
                    && self.resource_name_matches(&r.name)
            }
            None => self.non_resource_url_matches(&a.path),
        }
    }

    pub fn verb_matches(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == ALL || v == verb)
    }

    fn api_group_matches(&self, group: &str) -> bool {
        self.api_groups.iter().any(|g| g == ALL || g == group)
    }

    /// `pods` matches the resource, `pods/log` one subresource, `*/scale` a subresource of
    /// every resource.
    fn resource_matches(&self, resource: &str, subresource: &str) -> bool {
        // Compared piecewise: this runs on every request, and `resource/sub` would allocate.
        self.resources.iter().any(|r| {
            if r == ALL {
                return true;
            }
            match (r.split_once('/'), subresource) {
                (None, "") => r == resource,
                (None, _) => false,
                (Some(_), "") => false,
                (Some((rule_resource, rule_sub)), sub) => {
                    rule_sub == sub && (rule_resource == resource || rule_resource == ALL)
                }
            }
        })
    }

    /// No names means every name; a request without a name (list, create) matches only a rule
    /// without names.
    fn resource_name_matches(&self, name: &str) -> bool {
        self.resource_names.is_empty() || self.resource_names.iter().any(|n| n == name)
    }

    /// Exact paths, `*`, and prefixes written with a trailing `*`.
    fn non_resource_url_matches(&self, path: &str) -> bool {
        self.non_resource_urls.iter().any(|u| {
            u == ALL
                || u == path
                || u.strip_suffix('*')
                    .is_some_and(|prefix| path.starts_with(prefix))
        })
    }

    /// Upstream's compact form for escalation messages:
    /// `{APIGroups:["apps"], Resources:["deployments"], Verbs:["get"]}`.
    pub fn compact_string(&self) -> String {
        let fields = [
            ("APIGroups", &self.api_groups),
            ("Resources", &self.resources),
            ("NonResourceURLs", &self.non_resource_urls),
            ("ResourceNames", &self.resource_names),
            ("Verbs", &self.verbs),
        ];
        let parts: Vec<String> = fields
            .iter()
            .filter(|(_, values)| !values.is_empty())
            .map(|(label, values)| format!("{label}:{}", go_quoted_list(values)))
            .collect();
        format!("{{{}}}", parts.join(", "))
    }
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub fn go_quoted_list(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| quoted(v)).collect();
    format!("[{}]", quoted.join(" "))
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| s.to_string()).collect()
}

/// Whether `owner` rules cover every permission in `requested`; the uncovered pieces otherwise,
/// each a rule with one verb, group, resource (and name). Upstream's `validation.Covers`.
pub fn covers(owner: &[PolicyRule], requested: &[PolicyRule]) -> Result<(), Vec<PolicyRule>> {
    let missing: Vec<PolicyRule> = requested
        .iter()
        .flat_map(breakdown)
        .filter(|piece| !owner.iter().any(|o| rule_covers(o, piece)))
        .collect();
    match missing.is_empty() {
        true => Ok(()),
        false => Err(missing),
    }
}

/// Splits a rule into rules of one verb and one group/resource/name or one URL each.
fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let mut pieces = Vec::new();
    let one = |s: &String| vec![s.clone()];
    for group in &rule.api_groups {
        for resource in &rule.resources {
            for verb in &rule.verbs {
                if rule.resource_names.is_empty() {
                    pieces.push(PolicyRule {
                        verbs: one(verb),
                        api_groups: one(group),
                        resources: one(resource),
                        ..PolicyRule::default()
                    });
                }
                for name in &rule.resource_names {
                    pieces.push(PolicyRule {
                        verbs: one(verb),
                        api_groups: one(group),
                        resources: one(resource),
                        resource_names: one(name),
                        ..PolicyRule::default()
                    });
                }
            }
        }
    }
    for url in &rule.non_resource_urls {
        for verb in &rule.verbs {
            pieces.push(PolicyRule {
                verbs: one(verb),
                non_resource_urls: one(url),
                ..PolicyRule::default()
            });
        }
    }
    pieces
}

fn rule_covers(owner: &PolicyRule, piece: &PolicyRule) -> bool {
    let has = |set: &[String], value: &String| set.iter().any(|s| s == ALL || s == value);
    let verbs = piece.verbs.iter().all(|v| has(&owner.verbs, v));
    let groups = piece.api_groups.iter().all(|g| has(&owner.api_groups, g));
    let resources = piece.resources.iter().all(|r| {
        has(&owner.resources, r)
            || r.split_once('/').is_some_and(|(_, sub)| {
                owner
                    .resources
                    .iter()
                    .any(|o| o.strip_prefix("*/") == Some(sub))
            })
    });
    let urls = piece.non_resource_urls.iter().all(|u| {
        owner
            .non_resource_urls
            .iter()
            .any(|o| o == ALL || o == u || o.strip_suffix('*').is_some_and(|p| u.starts_with(p)))
    });
    let names = owner.resource_names.is_empty()
        || (!piece.resource_names.is_empty()
            && piece
                .resource_names
                .iter()
                .all(|n| owner.resource_names.contains(n)));
    verbs && groups && resources && urls && names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::rbac::attributes::ResourceAttributes;

    fn resource_request(
        verb: &str,
        group: &str,
        resource: &str,
        sub: &str,
        name: &str,
    ) -> Attributes {
        Attributes {
            verb: verb.into(),
            path: String::new(),
            resource: Some(ResourceAttributes {
                api_group: group.into(),
                api_version: "v1".into(),
                resource: resource.into(),
                subresource: sub.into(),
                namespace: "default".into(),
                name: name.into(),
            }),
        }
    }

    fn path_request(verb: &str, path: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            path: path.into(),
            resource: None,
        }
    }

    #[test]
    fn verbs_groups_and_resources_must_all_match() {
        let rule = PolicyRule::resources(&["get", "list"], &[""], &["pods"]);
        assert!(rule.allows(&resource_request("get", "", "pods", "", "web")));
        assert!(rule.allows(&resource_request("list", "", "pods", "", "")));
        assert!(!rule.allows(&resource_request("delete", "", "pods", "", "web")));
        assert!(!rule.allows(&resource_request("get", "apps", "pods", "", "web")));
        assert!(!rule.allows(&resource_request("get", "", "services", "", "web")));
    }

    #[test]
    fn wildcards_match_every_verb_group_and_resource() {
        let rule = PolicyRule::resources(&["*"], &["*"], &["*"]);
        assert!(rule.allows(&resource_request(
            "deletecollection",
            "apps",
            "deployments",
            "scale",
            ""
        )));
        assert!(
            !rule.allows(&path_request("get", "/healthz")),
            "resource rules never match paths"
        );
    }

    #[test]
    fn subresources_are_matched_by_name_or_by_star_slash() {
        let logs = PolicyRule::resources(&["get"], &[""], &["pods/log"]);
        assert!(logs.allows(&resource_request("get", "", "pods", "log", "web")));
        assert!(!logs.allows(&resource_request("get", "", "pods", "", "web")));
        assert!(!logs.allows(&resource_request("get", "", "pods", "exec", "web")));
        let scale = PolicyRule::resources(&["update"], &["*"], &["*/scale"]);
        assert!(scale.allows(&resource_request(
            "update",
            "apps",
            "deployments",
            "scale",
            "d"
        )));
        assert!(!scale.allows(&resource_request("update", "apps", "deployments", "", "d")));
        let pods = PolicyRule::resources(&["get"], &[""], &["pods"]);
        assert!(
            !pods.allows(&resource_request("get", "", "pods", "log", "web")),
            "a resource does not grant its subresources"
        );
    }

    #[test]
    fn resource_names_restrict_to_those_objects() {
        let rule = PolicyRule::resources(&["get", "list"], &[""], &["configmaps"])
            .with_names(&["settings"]);
        assert!(rule.allows(&resource_request("get", "", "configmaps", "", "settings")));
        assert!(!rule.allows(&resource_request("get", "", "configmaps", "", "other")));
        assert!(!rule.allows(&resource_request("list", "", "configmaps", "", "")));
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_trailing_star_prefix() {
        let rule = PolicyRule::urls(&["get"], &["/healthz", "/api/*"]);
        assert!(rule.allows(&path_request("get", "/healthz")));
        assert!(rule.allows(&path_request("get", "/api/v1")));
        assert!(!rule.allows(&path_request("get", "/api")));
        assert!(!rule.allows(&path_request("post", "/healthz")));
        assert!(!rule.allows(&path_request("get", "/healthz/etcd")));
        assert!(!rule.allows(&resource_request("get", "", "pods", "", "")));
    }

    #[test]
    fn compact_strings_read_like_upstream() {
        let rule =
            PolicyRule::resources(&["get", "list"], &["", "apps"], &["pods"]).with_names(&["a"]);
        assert_eq!(
            rule.compact_string(),
            r#"{APIGroups:["" "apps"], Resources:["pods"], ResourceNames:["a"], Verbs:["get" "list"]}"#
        );
        assert_eq!(
            PolicyRule::urls(&["get"], &["/x"]).compact_string(),
            r#"{NonResourceURLs:["/x"], Verbs:["get"]}"#
        );
    }

    #[test]
    fn covers_needs_every_piece_of_every_requested_rule() {
        let owner = vec![
            PolicyRule::resources(&["get", "list"], &[""], &["pods", "services"]),
            PolicyRule::resources(&["*"], &["apps"], &["*/scale"]),
            PolicyRule::resources(&["get"], &[""], &["configmaps"]).with_names(&["one"]),
            PolicyRule::urls(&["get"], &["/api/*"]),
        ];
        assert!(covers(&owner, &[PolicyRule::resources(&["get"], &[""], &["pods"])]).is_ok());
        assert!(covers(
            &owner,
            &[PolicyRule::resources(
                &["patch"],
                &["apps"],
                &["deployments/scale"]
            )]
        )
        .is_ok());
        assert!(covers(
            &owner,
            &[PolicyRule::resources(&["get"], &[""], &["configmaps"]).with_names(&["one"])]
        )
        .is_ok());
        assert!(covers(&owner, &[PolicyRule::urls(&["get"], &["/api/v1"])]).is_ok());
        let missing = covers(
            &owner,
            &[PolicyRule::resources(&["get", "delete"], &[""], &["pods"])],
        )
        .unwrap_err();
        assert_eq!(
            missing,
            vec![PolicyRule::resources(&["delete"], &[""], &["pods"])]
        );
        assert!(
            covers(
                &owner,
                &[PolicyRule::resources(&["get"], &[""], &["configmaps"])]
            )
            .is_err(),
            "a named grant does not cover all names"
        );
        assert!(covers(&owner, &[PolicyRule::resources(&["*"], &["*"], &["*"])]).is_err());
    }
}
