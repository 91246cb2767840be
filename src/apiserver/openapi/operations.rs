//! The operations berth serves for each resource, in one neutral form that `v3` and `v2` render.

use crate::api::resources::{self, Resource};
use crate::api::schemas::{self, DELETE_OPTIONS, PATCH, STATUS};
use crate::apiserver::discovery;

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    Path,
    Query,
}

impl In {
    pub fn as_str(self) -> &'static str {
        match self {
            In::Path => "path",
            In::Query => "query",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub location: In,
    /// `string`, `boolean` or `integer`.
    pub ty: &'static str,
    pub description: &'static str,
}

const fn query(name: &'static str, ty: &'static str, description: &'static str) -> Param {
    Param {
        name,
        location: In::Query,
        ty,
        description,
    }
}

const NAME: Param = Param {
    name: "name",
    location: In::Path,
    ty: "string",
    description: "name of the object",
};
const NAMESPACE: Param = Param {
    name: "namespace",
    location: In::Path,
    ty: "string",
    description: "object name and auth scope, such as for teams and projects",
};
const PRETTY: Param = query(
    "pretty",
    "string",
    "If 'true', then the output is pretty printed.",
);
const DRY_RUN: Param = query("dryRun", "string", "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed");
const FIELD_MANAGER: Param = query("fieldManager", "string", "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.");
const FIELD_VALIDATION: Param = query("fieldValidation", "string", "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.");
const FORCE: Param = query("force", "boolean", "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.");
const GRACE_PERIOD: Param = query("gracePeriodSeconds", "integer", "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately.");
const PROPAGATION_POLICY: Param = query("propagationPolicy", "string", "Whether and how garbage collection will be performed. Acceptable values are: 'Orphan', 'Background', 'Foreground'.");
const ORPHAN_DEPENDENTS: Param = query("orphanDependents", "boolean", "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent objects be orphaned.");
const LIST_PARAMS: &[Param] = &[
    query("allowWatchBookmarks", "boolean", "allowWatchBookmarks requests watch events with type \"BOOKMARK\"."),
    query("continue", "string", "The continue option should be set when retrieving more results from the server."),
    query("fieldSelector", "string", "A selector to restrict the list of returned objects by their fields. Defaults to everything."),
    query("labelSelector", "string", "A selector to restrict the list of returned objects by their labels. Defaults to everything."),
    query("limit", "integer", "limit is a maximum number of responses to return for a list call."),
    query("resourceVersion", "string", "resourceVersion sets a constraint on what resource versions a request may be served from."),
    query("resourceVersionMatch", "string", "resourceVersionMatch determines how resourceVersion is applied to list calls."),
    query("sendInitialEvents", "boolean", "`sendInitialEvents=true` may be set together with `watch=true`: the stream begins with synthetic events for the current state."),
    query("timeoutSeconds", "integer", "Timeout for the list/watch call."),
    query("watch", "boolean", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications."),
];

/// What a request carries.
#[derive(Debug, Clone)]
pub enum Body {
    /// An object of this definition.
    Object(String),
    /// A patch in any of the patch content types.
    Patch,
}

/// One operation of one path.
#[derive(Debug, Clone)]
pub struct Operation {
    /// `get`, `put`, `post`, `patch` or `delete`.
    pub method: &'static str,
    /// `x-kubernetes-action`: get, list, post, put, patch, delete, deletecollection.
    pub action: &'static str,
    pub operation_id: String,
    pub description: String,
    pub params: Vec<Param>,
    pub body: Option<Body>,
    /// Definition of the 200 (and 201/202) response.
    pub response: String,
    /// Codes besides 200 and 401.
    pub also: &'static [(u16, &'static str)],
    pub streams: bool,
}

/// One path with its operations.
#[derive(Debug, Clone)]
pub struct PathItem {
    pub path: String,
    pub params: Vec<Param>,
    pub operations: Vec<Operation>,
    pub gvk: (&'static str, &'static str, &'static str),
    pub tag: String,
}

/// `apps_v1`, `core_v1`, `rbacAuthorization_v1`: upstream's tag of a group-version.
pub fn tag(group: &str, version: &str) -> String {
    format!("{}_{version}", lower_first(&group_camel(group)))
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `Core`, `Apps`, `RbacAuthorization`, `Networking` (the `.k8s.io` suffix is dropped).
fn group_camel(group: &str) -> String {
    if group.is_empty() {
        return "Core".into();
    }
    let short = group.strip_suffix(".k8s.io").unwrap_or(group);
    short
        .split('.')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(c) => c.to_uppercase().chain(chars).collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}

/// The prefix of every path of a group-version: `/api/v1` or `/apis/apps/v1`.
pub fn prefix(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    }
}

/// Every path of one group-version, in a stable order.
pub fn paths(group: &str, version: &str) -> Vec<PathItem> {
    let mut out = Vec::new();
    for r in resources::in_group_version(group, version) {
        out.extend(resource_paths(r));
    }
    out
}

fn resource_paths(r: &Resource) -> Vec<PathItem> {
    let api_version = r.api_version();
    let kind_def = schemas::kind_definition(&api_version, r.kind)
        .map(str::to_string)
        .or_else(|| crate::crd::openapi::kind_definition(r))
        .unwrap_or_default();
    let list_def = schemas::kind_definition(&api_version, &r.list_kind())
        .map(str::to_string)
        .or_else(|| crate::crd::openapi::list_definition(r))
        .unwrap_or_default();
    let gv = format!("{}{}", group_camel(r.group), upper_first(r.version));
    let scope = if r.namespaced { "Namespaced" } else { "" };
    let id = |verb: &str, suffix: &str| format!("{verb}{gv}{scope}{}{suffix}", r.kind);
    let base = match r.namespaced {
        true => format!(
            "{}/namespaces/{{namespace}}/{}",
            prefix(r.group, r.version),
            r.plural
        ),
        false => format!("{}/{}", prefix(r.group, r.version), r.plural),
    };
    let scope_params: Vec<Param> = match r.namespaced {
        true => vec![NAMESPACE, PRETTY],
        false => vec![PRETTY],
    };
    let item = |path: String, params: Vec<Param>, operations: Vec<Operation>| PathItem {
        path,
        params,
        operations,
        gvk: (r.group, r.version, r.kind),
        tag: tag(r.group, r.version),
    };
    let with_name = |params: &[Param]| {
        let mut all = vec![NAME];
        all.extend_from_slice(params);
        all
    };

    let mut collection_ops = vec![
        Operation {
            method: "get",
            action: "list",
            operation_id: id("list", ""),
            description: format!("list or watch objects of kind {}", r.kind),
            params: LIST_PARAMS.to_vec(),
            body: None,
            response: list_def.clone(),
            also: &[],
            streams: true,
        },
        Operation {
            method: "post",
            action: "post",
            operation_id: id("create", ""),
            description: format!("create a {}", r.kind),
            params: vec![DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION],
            body: Some(Body::Object(kind_def.clone())),
            response: kind_def.clone(),
            also: &[(201, "Created"), (202, "Accepted")],
            streams: false,
        },
    ];
    let mut delete_collection_params = LIST_PARAMS.to_vec();
    delete_collection_params.retain(|p| p.name != "watch" && p.name != "allowWatchBookmarks");
    delete_collection_params.extend([DRY_RUN, GRACE_PERIOD, ORPHAN_DEPENDENTS, PROPAGATION_POLICY]);
    collection_ops.push(Operation {
        method: "delete",
        action: "deletecollection",
        operation_id: id("deleteCollection", ""),
        description: format!("delete collection of {}", r.kind),
        params: delete_collection_params,
        body: Some(Body::Object(DELETE_OPTIONS.into())),
        response: STATUS.into(),
        also: &[],
        streams: false,
    });

    let patch = |suffix: &str, what: &str| Operation {
        method: "patch",
        action: "patch",
        operation_id: id("patch", suffix),
        description: format!("partially update {what} the specified {}", r.kind),
        params: vec![DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION, FORCE],
        body: Some(Body::Patch),
        response: kind_def.clone(),
        also: &[(201, "Created")],
        streams: false,
    };
    let replace = |suffix: &str, what: &str| Operation {
        method: "put",
        action: "put",
        operation_id: id("replace", suffix),
        description: format!("replace {what} the specified {}", r.kind),
        params: vec![DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION],
        body: Some(Body::Object(kind_def.clone())),
        response: kind_def.clone(),
        also: &[(201, "Created")],
        streams: false,
    };
    let read = |suffix: &str, what: &str| Operation {
        method: "get",
        action: "get",
        operation_id: id("read", suffix),
        description: format!("read {what} the specified {}", r.kind),
        params: vec![],
        body: None,
        response: kind_def.clone(),
        also: &[],
        streams: false,
    };
    let object_ops = vec![
        read("", ""),
        replace("", ""),
        patch("", ""),
        Operation {
            method: "delete",
            action: "delete",
            operation_id: id("delete", ""),
            description: format!("delete a {}", r.kind),
            params: vec![DRY_RUN, GRACE_PERIOD, ORPHAN_DEPENDENTS, PROPAGATION_POLICY],
            body: Some(Body::Object(DELETE_OPTIONS.into())),
            response: kind_def.clone(),
            also: &[(202, "Accepted")],
            streams: false,
        },
    ];

    let mut out = vec![
        item(base.clone(), scope_params.clone(), collection_ops),
        item(
            format!("{base}/{{name}}"),
            with_name(&scope_params),
            object_ops,
        ),
    ];
    if r.namespaced {
        let all = Operation {
            operation_id: format!("list{gv}{}ForAllNamespaces", r.kind),
            ..out[0].operations[0].clone()
        };
        out.push(item(
            format!("{}/{}", prefix(r.group, r.version), r.plural),
            vec![PRETTY],
            vec![all],
        ));
    }
    for (sub, verbs) in discovery::subresources(r) {
        let suffix = upper_first(sub);
        let what = format!("{sub} of");
        let mut ops = Vec::new();
        for verb in verbs.iter() {
            match *verb {
                "get" => ops.push(read(&suffix, &what)),
                "update" => ops.push(replace(&suffix, &what)),
                "patch" => ops.push(patch(&suffix, &what)),
                "create" if sub == "binding" => ops.push(Operation {
                    method: "post",
                    action: "post",
                    operation_id: id("create", &suffix),
                    description: format!("create {sub} of a {}", r.kind),
                    params: vec![DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION],
                    body: Some(Body::Object("io.k8s.api.core.v1.Binding".into())),
                    response: "io.k8s.api.core.v1.Binding".into(),
                    also: &[(201, "Created"), (202, "Accepted")],
                    streams: false,
                }),
                _ => {}
            }
        }
        out.push(item(
            format!("{base}/{{name}}/{sub}"),
            with_name(&scope_params),
            ops,
        ));
    }
    out
}

fn upper_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Definitions every group-version document carries besides its kinds.
pub fn common_definitions() -> [&'static str; 4] {
    [DELETE_OPTIONS, STATUS, schemas::WATCH_EVENT, PATCH]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_and_tags_follow_upstream() {
        assert_eq!(
            tag("rbac.authorization.k8s.io", "v1"),
            "rbacAuthorization_v1"
        );
        assert_eq!(tag("", "v1"), "core_v1");
        let paths = paths("apps", "v1");
        let ids: Vec<&str> = paths
            .iter()
            .flat_map(|p| p.operations.iter().map(|o| o.operation_id.as_str()))
            .collect();
        assert!(ids.contains(&"patchAppsV1NamespacedDeployment"));
        assert!(ids.contains(&"readAppsV1NamespacedDeploymentStatus"));
        assert!(ids.contains(&"listAppsV1DeploymentForAllNamespaces"));
    }

    #[test]
    fn cluster_scoped_resources_have_no_namespace_segment() {
        let paths = paths("", "v1");
        assert!(paths
            .iter()
            .any(|p| p.path == "/api/v1/nodes/{name}/status"));
        assert!(paths
            .iter()
            .any(|p| p.path == "/api/v1/namespaces/{name}/finalize"));
        assert!(paths
            .iter()
            .any(|p| p.path == "/api/v1/namespaces/{namespace}/pods/{name}/binding"));
    }
}
