//! The audit policy: upstream's `audit.k8s.io/v1 Policy` file format. Rules are tried in order;
//! the first that matches a request decides its level; no match means `None`.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Default)]
pub enum Level {
    #[default]
    None,
    Metadata,
    Request,
    RequestResponse,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "None",
            Level::Metadata => "Metadata",
            Level::Request => "Request",
            Level::RequestResponse => "RequestResponse",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Stages no event is written for, on top of each rule's own.
    #[serde(default)]
    pub omit_stages: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub level: Level,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub user_groups: Vec<String>,
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default)]
    pub resources: Vec<GroupResources>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
    #[serde(default)]
    pub omit_stages: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupResources {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub resource_names: Vec<String>,
}

/// What a policy rule is matched against.
#[derive(Debug, Clone, Default)]
pub struct RequestAttributes {
    pub user: String,
    pub groups: Vec<String>,
    pub verb: String,
    /// Empty for a non-resource request (`/version`, `/openapi/v3`, ...).
    pub resource: String,
    pub subresource: String,
    pub group: String,
    pub namespace: String,
    pub name: String,
    pub path: String,
}

impl Policy {
    /// Upstream's recommendation for a small cluster: the metadata of every write, nothing else.
    pub fn default_writes() -> Policy {
        Policy {
            rules: vec![Rule {
                level: Level::Metadata,
                verbs: ["create", "update", "patch", "delete", "deletecollection"]
                    .map(String::from)
                    .to_vec(),
                ..Rule::default()
            }],
            omit_stages: vec!["RequestReceived".into()],
        }
    }

    pub fn parse(text: &str) -> Result<Policy, String> {
        let policy: Policy = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        Ok(policy)
    }

    /// True when no read (`get`, `list`, `watch`) can be audited: every rule that records
    /// anything names only other verbs. Reads are most requests, so they skip working out their
    /// attributes when the answer is known.
    pub fn ignores_reads(&self) -> bool {
        self.rules.iter().all(|rule| {
            rule.level == Level::None
                || (!rule.verbs.is_empty()
                    && !rule
                        .verbs
                        .iter()
                        .any(|v| matches!(v.as_str(), "get" | "list" | "watch")))
        })
    }

    /// The level and omitted stages for a request.
    pub fn decide(&self, request: &RequestAttributes) -> (Level, Vec<String>) {
        for rule in &self.rules {
            if rule.matches(request) {
                let mut omit = self.omit_stages.clone();
                omit.extend(rule.omit_stages.iter().cloned());
                return (rule.level, omit);
            }
        }
        (Level::None, Vec::new())
    }
}

fn any_or_contains(list: &[String], value: &str) -> bool {
    list.is_empty() || list.iter().any(|v| v == value || v == "*")
}

impl Rule {
    fn matches(&self, request: &RequestAttributes) -> bool {
        if !any_or_contains(&self.users, &request.user) {
            return false;
        }
        if !self.user_groups.is_empty()
            && !request.groups.iter().any(|g| self.user_groups.contains(g))
        {
            return false;
        }
        if !any_or_contains(&self.verbs, &request.verb) {
            return false;
        }
        if request.resource.is_empty() {
            // Non-resource requests match only rules that name no resources or namespaces.
            if !self.resources.is_empty() || !self.namespaces.is_empty() {
                return false;
            }
            return self.non_resource_urls.is_empty()
                || self
                    .non_resource_urls
                    .iter()
                    .any(|url| match url.strip_suffix('*') {
                        Some(prefix) => request.path.starts_with(prefix),
                        None => &request.path == url,
                    });
        }
        if !self.non_resource_urls.is_empty() {
            return false;
        }
        if !self.namespaces.is_empty() && !self.namespaces.contains(&request.namespace) {
            return false;
        }
        if self.resources.is_empty() {
            return true;
        }
        let full = match request.subresource.as_str() {
            "" => request.resource.clone(),
            sub => format!("{}/{sub}", request.resource),
        };
        self.resources.iter().any(|gr| {
            gr.group == request.group
                && (gr.resources.is_empty()
                    || gr.resources.iter().any(|r| {
                        r == &full
                            || r == "*"
                            || r == &format!("{}/*", request.resource)
                            || r.strip_prefix("*/") == Some(request.subresource.as_str())
                    }))
                && (gr.resource_names.is_empty() || gr.resource_names.contains(&request.name))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(verb: &str, resource: &str) -> RequestAttributes {
        RequestAttributes {
            user: "alice".into(),
            groups: vec!["dev".into()],
            verb: verb.into(),
            resource: resource.into(),
            namespace: "default".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_default_policy_records_the_metadata_of_writes_only() {
        let policy = Policy::default_writes();
        assert_eq!(policy.decide(&request("create", "pods")).0, Level::Metadata);
        assert_eq!(policy.decide(&request("get", "pods")).0, Level::None);
        assert_eq!(policy.decide(&request("watch", "pods")).0, Level::None);
        assert!(policy.ignores_reads());
    }

    #[test]
    fn a_policy_ignores_reads_only_when_no_recording_rule_can_match_one() {
        let policy = |rules: &str| {
            Policy::parse(&format!(
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n{rules}"
            ))
            .unwrap()
        };
        assert!(
            policy("  - level: None\n  - level: Metadata\n    verbs: [delete]\n").ignores_reads()
        );
        assert!(
            !policy("  - level: Metadata\n").ignores_reads(),
            "no verbs: every verb"
        );
        assert!(!policy("  - level: Request\n    verbs: [create, list]\n").ignores_reads());
        assert!(
            !policy("  - level: None\n    verbs: [get]\n  - level: Metadata\n").ignores_reads(),
            "a list or watch still reaches the second rule"
        );
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let policy = Policy::parse(
            r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    users: ["system:kube-proxy"]
  - level: RequestResponse
    resources:
      - group: ""
        resources: ["secrets"]
    namespaces: ["kube-system"]
  - level: Request
    userGroups: ["dev"]
    verbs: ["create"]
    resources:
      - group: "apps"
        resources: ["deployments", "deployments/scale"]
  - level: Metadata
    nonResourceURLs: ["/version", "/openapi/*"]
"#,
        )
        .unwrap();
        let mut secret = request("get", "secrets");
        assert_eq!(policy.decide(&secret).0, Level::None, "other namespace");
        secret.namespace = "kube-system".into();
        assert_eq!(policy.decide(&secret).0, Level::RequestResponse);
        let mut deploy = request("create", "deployments");
        deploy.group = "apps".into();
        assert_eq!(policy.decide(&deploy).0, Level::Request);
        deploy.subresource = "status".into();
        assert_eq!(
            policy.decide(&deploy).0,
            Level::None,
            "status is not listed"
        );
        let mut version = request("get", "");
        version.path = "/openapi/v3".into();
        assert_eq!(policy.decide(&version).0, Level::Metadata);
        let mut proxy = request("create", "deployments");
        proxy.user = "system:kube-proxy".into();
        assert_eq!(policy.decide(&proxy).0, Level::None);
        deploy.subresource = "scale".into();
        assert_eq!(policy.decide(&deploy).1, vec!["RequestReceived"]);
    }
}
