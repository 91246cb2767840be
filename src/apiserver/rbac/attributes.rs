//! What a request asks to do, in authorization terms: upstream's `RequestInfo`. Parsed from the
//! method, path and query alone, so it works for every path, CRDs and unknown ones included,
//! before the router has looked anything up.

/// The attributes of a request an authorizer decides on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, ... for resources; the lower-case method for paths.
    pub verb: String,
    pub path: String,
    /// None for a non-resource request (`/healthz`, `/api`, `/openapi/v2`, ...).
    pub resource: Option<ResourceAttributes>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceAttributes {
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

/// Subresources of a namespace, told apart from the resources inside it.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

impl Attributes {
    /// Attributes of a request: `query` is the raw query string (for `watch` and the
    /// `metadata.name` field selector, which names the one object a list or watch is about).
    pub fn from_request(method: &str, path: &str, query: &str) -> Attributes {
        let non_resource = || Attributes {
            verb: method.to_ascii_lowercase(),
            path: path.to_string(),
            resource: None,
        };
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, mut parts) = match segments.as_slice() {
            ["api", version, rest @ ..] if !rest.is_empty() => ("", *version, rest),
            ["apis", group, version, rest @ ..] if !rest.is_empty() => (*group, *version, rest),
            _ => return non_resource(),
        };
        let mut verb = match method {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "",
        }
        .to_string();
        // The deprecated `/watch/` path prefix.
        if parts.first() == Some(&"watch") {
            verb = "watch".into();
            parts = &parts[1..];
        }
        let mut attributes = ResourceAttributes {
            api_group: group.to_string(),
            api_version: version.to_string(),
            ..ResourceAttributes::default()
        };
        if parts.first() == Some(&"namespaces") {
            if let Some(namespace) = parts.get(1) {
                attributes.namespace = namespace.to_string();
                if parts
                    .get(2)
                    .is_some_and(|next| !NAMESPACE_SUBRESOURCES.contains(next))
                {
                    parts = &parts[2..];
                }
            }
        }
        attributes.resource = parts.first().map(|s| s.to_string()).unwrap_or_default();
        attributes.name = parts.get(1).map(|s| s.to_string()).unwrap_or_default();
        attributes.subresource = parts.get(2).map(|s| s.to_string()).unwrap_or_default();

        let query: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let param = |key: &str| {
            query
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        if attributes.name.is_empty() && verb == "get" {
            verb = match param("watch") {
                Some("true" | "1") => "watch".into(),
                _ => "list".into(),
            };
        }
        // Streams into a pod are reached with a GET (a websocket upgrade) but act like a
        // create; upstream authorizes them as `create` (AuthorizePodWebsocketUpgradeCreatePermission).
        if verb == "get"
            && attributes.api_group.is_empty()
            && attributes.resource == "pods"
            && matches!(
                attributes.subresource.as_str(),
                "exec" | "attach" | "portforward"
            )
        {
            verb = "create".into();
        }
        if attributes.name.is_empty() && verb == "delete" {
            verb = "deletecollection".into();
        }
        if verb == "list" || verb == "watch" {
            if let Some(name) = param("fieldSelector").and_then(single_name_selector) {
                attributes.name = name;
            }
        }
        Attributes {
            verb,
            path: path.to_string(),
            resource: Some(attributes),
        }
    }

    pub fn namespace(&self) -> &str {
        self.resource.as_ref().map_or("", |r| r.namespace.as_str())
    }
}

/// The object name of a `metadata.name=<name>` field selector (alone or among others).
fn single_name_selector(selector: &str) -> Option<String> {
    selector.split(',').find_map(|term| {
        let (field, value) = term.split_once("==").or_else(|| term.split_once('='))?;
        (field.trim() == "metadata.name" && !field.ends_with('!')).then(|| value.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(method: &str, path: &str, query: &str) -> (String, ResourceAttributes) {
        let a = Attributes::from_request(method, path, query);
        (a.verb, a.resource.expect("a resource request"))
    }

    #[test]
    fn namespaced_object_paths_carry_every_attribute() {
        let (verb, r) = resource("GET", "/api/v1/namespaces/default/pods/web/log", "");
        assert_eq!(verb, "get");
        assert_eq!(
            r,
            ResourceAttributes {
                api_group: "".into(),
                api_version: "v1".into(),
                resource: "pods".into(),
                subresource: "log".into(),
                namespace: "default".into(),
                name: "web".into(),
            }
        );
        let (verb, r) = resource("PUT", "/apis/apps/v1/namespaces/a/deployments/d/scale", "");
        assert_eq!(
            (verb.as_str(), r.api_group.as_str(), r.subresource.as_str()),
            ("update", "apps", "scale")
        );
    }

    #[test]
    fn collections_become_list_watch_and_deletecollection() {
        assert_eq!(resource("GET", "/api/v1/pods", "").0, "list");
        assert_eq!(
            resource("GET", "/api/v1/namespaces/a/pods", "watch=true").0,
            "watch"
        );
        assert_eq!(
            resource(
                "GET",
                "/api/v1/namespaces/a/pods",
                "watch=1&resourceVersion=5"
            )
            .0,
            "watch"
        );
        assert_eq!(
            resource("GET", "/api/v1/watch/namespaces/a/pods", "").0,
            "watch"
        );
        assert_eq!(
            resource("DELETE", "/api/v1/namespaces/a/pods", "").0,
            "deletecollection"
        );
        assert_eq!(
            resource("DELETE", "/api/v1/namespaces/a/pods/p", "").0,
            "delete"
        );
        assert_eq!(
            resource("POST", "/api/v1/namespaces/a/pods", "").0,
            "create"
        );
        assert_eq!(
            resource("PATCH", "/api/v1/namespaces/a/pods/p", "").0,
            "patch"
        );
    }

    #[test]
    fn streams_into_pods_are_creates_even_over_a_get_upgrade() {
        for sub in ["exec", "attach", "portforward"] {
            let path = format!("/api/v1/namespaces/a/pods/web/{sub}");
            assert_eq!(resource("GET", &path, "command=sh").0, "create", "{sub}");
            assert_eq!(resource("POST", &path, "").0, "create", "{sub}");
        }
        assert_eq!(
            resource("GET", "/api/v1/namespaces/a/pods/web/log", "").0,
            "get"
        );
    }

    #[test]
    fn a_name_field_selector_names_the_object_of_a_list_or_watch() {
        let (verb, r) = resource(
            "GET",
            "/api/v1/namespaces/a/configmaps",
            "fieldSelector=metadata.name%3Dsettings&watch=true",
        );
        assert_eq!((verb.as_str(), r.name.as_str()), ("watch", "settings"));
        let (_, r) = resource(
            "GET",
            "/api/v1/namespaces/a/configmaps",
            "fieldSelector=metadata.name%21%3Dx",
        );
        assert_eq!(r.name, "");
    }

    #[test]
    fn namespaces_and_their_subresources_name_the_namespace_too() {
        let (_, r) = resource("GET", "/api/v1/namespaces/a", "");
        assert_eq!(
            (r.resource.as_str(), r.name.as_str(), r.namespace.as_str()),
            ("namespaces", "a", "a")
        );
        let (verb, r) = resource("PUT", "/api/v1/namespaces/a/finalize", "");
        assert_eq!(
            (verb.as_str(), r.resource.as_str(), r.subresource.as_str()),
            ("update", "namespaces", "finalize")
        );
        let (verb, r) = resource("GET", "/api/v1/namespaces", "");
        assert_eq!((verb.as_str(), r.namespace.as_str()), ("list", ""));
    }

    #[test]
    fn discovery_and_other_paths_are_non_resource_requests_with_the_method_as_verb() {
        for path in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps",
            "/apis/apps/v1",
            "/openapi/v2",
            "/healthz",
        ] {
            let a = Attributes::from_request("GET", path, "");
            assert_eq!((a.verb.as_str(), a.resource), ("get", None), "{path}");
        }
        assert_eq!(Attributes::from_request("POST", "/logs", "").verb, "post");
    }
}
