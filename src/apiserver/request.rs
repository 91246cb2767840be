//! What a request path names: the resource, namespace, name and subresource.

use crate::api::resources::{self, Resource};
use crate::api::ApiError;

/// A request for a resource, parsed from paths like
/// `/api/v1/namespaces/default/pods/web/status` or `/apis/apps/v1/deployments`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRequest {
    pub resource: &'static Resource,
    /// The namespace from the path; None for cluster-scoped resources and all-namespace lists.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// What a path is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Resource(ResourceRequest),
    /// `/api`, `/apis`, `/api/v1`, `/apis/<group>`, `/apis/<group>/<version>`.
    Discovery {
        group: Option<String>,
        version: Option<String>,
        legacy: bool,
    },
}

pub fn parse_path(path: &str) -> Result<Target, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest, legacy) = match segments.as_slice() {
        ["api"] => {
            return Ok(Target::Discovery {
                group: None,
                version: None,
                legacy: true,
            })
        }
        ["api", version] => {
            return Ok(Target::Discovery {
                group: None,
                version: Some(version.to_string()),
                legacy: true,
            })
        }
        ["apis"] => {
            return Ok(Target::Discovery {
                group: None,
                version: None,
                legacy: false,
            })
        }
        ["apis", group] => {
            return Ok(Target::Discovery {
                group: Some(group.to_string()),
                version: None,
                legacy: false,
            })
        }
        ["apis", group, version] => {
            return Ok(Target::Discovery {
                group: Some(group.to_string()),
                version: Some(version.to_string()),
                legacy: false,
            })
        }
        ["api", version, rest @ ..] => ("", *version, rest, true),
        ["apis", group, version, rest @ ..] => (*group, *version, rest, false),
        _ => return Err(ApiError::no_route(path)),
    };
    let _ = legacy;
    let not_found = || ApiError::no_route(path);
    let find = |plural: &str| resources::find(group, version, plural).ok_or_else(not_found);
    let owned = |s: &&str| Some(s.to_string());
    let request = match rest {
        // /namespaces/<ns>/<plural>[/<name>[/<sub>]] — unless the segment after the namespace name is a
        // namespace subresource (`status`, `finalize`).
        ["namespaces", ns, sub @ ("status" | "finalize")] => ResourceRequest {
            resource: find("namespaces")?,
            namespace: None,
            name: owned(ns),
            subresource: owned(sub),
        },
        ["namespaces", ns, plural, tail @ ..] => {
            let resource = find(plural)?;
            if !resource.namespaced {
                return Err(not_found());
            }
            let (name, subresource) = match tail {
                [] => (None, None),
                [name] => (owned(name), None),
                [name, sub] => (owned(name), owned(sub)),
                _ => return Err(not_found()),
            };
            ResourceRequest {
                resource,
                namespace: owned(ns),
                name,
                subresource,
            }
        }
        [plural, tail @ ..] => {
            let resource = find(plural)?;
            let (name, subresource) = match tail {
                [] => (None, None),
                // A namespaced resource is only listed across namespaces here, never named.
                [_, ..] if resource.namespaced => return Err(not_found()),
                [name] => (owned(name), None),
                [name, sub] => (owned(name), owned(sub)),
                _ => return Err(not_found()),
            };
            ResourceRequest {
                resource,
                namespace: None,
                name,
                subresource,
            }
        }
        [] => return Err(not_found()),
    };
    if request.name.as_deref() == Some("") || request.namespace.as_deref() == Some("") {
        return Err(not_found());
    }
    Ok(Target::Resource(request))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(path: &str) -> ResourceRequest {
        match parse_path(path).unwrap() {
            Target::Resource(r) => r,
            other => panic!("{path} parsed as {other:?}"),
        }
    }

    #[test]
    fn namespaced_paths_carry_namespace_name_and_subresource() {
        let r = resource("/api/v1/namespaces/default/pods/web/status");
        assert_eq!(r.resource.plural, "pods");
        assert_eq!(r.namespace.as_deref(), Some("default"));
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(r.subresource.as_deref(), Some("status"));
        let r = resource("/apis/apps/v1/namespaces/ns1/deployments");
        assert_eq!(r.resource.kind, "Deployment");
        assert_eq!(r.name, None);
    }

    #[test]
    fn namespace_objects_and_their_subresources_are_told_apart_from_content() {
        let r = resource("/api/v1/namespaces/default");
        assert_eq!(r.resource.plural, "namespaces");
        assert_eq!(r.name.as_deref(), Some("default"));
        let r = resource("/api/v1/namespaces/x/finalize");
        assert_eq!(
            (
                r.resource.plural,
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            ("namespaces", Some("x"), Some("finalize"))
        );
        let r = resource("/api/v1/namespaces/x/configmaps");
        assert_eq!(r.resource.plural, "configmaps");
    }

    #[test]
    fn all_namespace_lists_and_cluster_scoped_names() {
        let r = resource("/api/v1/pods");
        assert_eq!((r.namespace, r.name), (None, None));
        let r = resource("/api/v1/nodes/n1");
        assert_eq!(r.name.as_deref(), Some("n1"));
        assert!(
            parse_path("/api/v1/pods/web").is_err(),
            "a namespaced object needs its namespace"
        );
    }

    #[test]
    fn unknown_paths_are_404() {
        for path in [
            "/api/v1/widgets",
            "/apis/apps/v9/deployments",
            "/nope",
            "/api/v1/namespaces/a/pods/b/c/d",
        ] {
            let err = parse_path(path).unwrap_err();
            assert_eq!(err.code, 404, "{path}");
        }
    }

    #[test]
    fn discovery_paths() {
        assert_eq!(
            parse_path("/api").unwrap(),
            Target::Discovery {
                group: None,
                version: None,
                legacy: true
            }
        );
        assert_eq!(
            parse_path("/apis/apps/v1").unwrap(),
            Target::Discovery {
                group: Some("apps".into()),
                version: Some("v1".into()),
                legacy: false
            }
        );
    }
}
