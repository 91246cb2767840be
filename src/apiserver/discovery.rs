//! Discovery documents: legacy (`/api`, `/apis`, `/api/v1`, ...) and aggregated
//! (`apidiscovery.k8s.io/v2`), all derived from the resource table.

use serde_json::{json, Value};

use crate::api::resources::{self, Resource};

pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Does the Accept header ask for aggregated discovery?
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let part = part.replace(' ', "");
        part.contains("as=APIGroupDiscoveryList")
            && part.contains("v=v2")
            && !part.contains("v=v2beta1")
    })
}

/// The subresources of a resource with the verbs each serves.
pub(crate) fn subresources(r: &Resource) -> Vec<(&'static str, &'static [&'static str])> {
    let mut subs: Vec<(&'static str, &'static [&'static str])> = Vec::new();
    if r.has_status {
        subs.push(("status", &["get", "patch", "update"]));
    }
    if crate::crd::hooks::scale_of(r).is_some() {
        subs.push(("scale", &["get", "patch", "update"]));
    }
    if r.group.is_empty() && r.kind == "Namespace" {
        subs.push(("finalize", &["update"]));
    }
    if r.group.is_empty() && r.kind == "Pod" {
        subs.push(("binding", &["create"]));
        subs.push(("eviction", &["create"]));
        subs.push(("ephemeralcontainers", &["get", "patch", "update"]));
    }
    if super::subresources::has_scale(r) {
        subs.push(("scale", &["get", "patch", "update"]));
    }
    if r.group == "certificates.k8s.io" && r.kind == "CertificateSigningRequest" {
        subs.push(("approval", &["get", "patch", "update"]));
    }
    if r.group.is_empty() && r.kind == "ServiceAccount" {
        subs.push(("token", &["create"]));
    }
    subs
}

/// `/api/v1` or `/apis/<group>/<version>`: an APIResourceList.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    if let Some(metrics) = super::metrics::discovery_entries(group, version, false) {
        return Some(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{group}/{version}"), "resources": metrics}),
        );
    }
    let reviews = super::reviews::discovery_entries(group, version, false);
    if !reviews.is_empty() {
        return Some(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{group}/{version}"), "resources": reviews}),
        );
    }
    if !resources::serves_group_version(group, version) {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let mut list = Vec::new();
    for r in resources::in_group_version(group, version) {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        list.push(entry);
        for (sub, verbs) in subresources(r) {
            let mut entry = json!({
                "name": format!("{}/{sub}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": verbs,
            });
            if let Some((g, v, k)) = super::subresources::response_kind(sub) {
                entry["group"] = json!(g);
                entry["version"] = json!(v);
                entry["kind"] = json!(k);
            }
            list.push(entry);
        }
    }
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": list}),
    )
}

/// `/api`: APIVersions.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn api_group(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": versions, "preferredVersion": versions[0]})
}

/// `/apis`: APIGroupList.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = all_groups()
        .iter()
        .map(|(g, versions)| api_group(g, versions))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`: APIGroup.
pub fn api_group_doc(group: &str) -> Option<Value> {
    let groups = all_groups();
    let (g, versions) = groups.iter().find(|(g, _)| *g == group)?;
    let mut doc = api_group(g, versions);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// The groups of the resource table and those of the review APIs, which are never stored.
fn all_groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut groups = resources::groups();
    for (group, version) in super::reviews::groups() {
        groups.push((group, vec![version]));
    }
    groups.push((super::metrics::GROUP, vec![super::metrics::VERSION]));
    groups
}

fn aggregated_version(group: &str, version: &str) -> Value {
    if let Some(metrics) = super::metrics::discovery_entries(group, version, true) {
        return json!({"version": version, "resources": metrics, "freshness": "Current"});
    }
    let reviews = super::reviews::discovery_entries(group, version, true);
    if !reviews.is_empty() {
        return json!({"version": version, "resources": reviews, "freshness": "Current"});
    }
    let list: Vec<Value> = resources::in_group_version(group, version)
        .map(|r| {
            let response_kind = json!({"group": r.group, "version": r.version, "kind": r.kind});
            let mut entry = json!({
                "resource": r.plural,
                "responseKind": response_kind,
                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": r.singular,
                "verbs": VERBS,
            });
            if !r.short_names.is_empty() {
                entry["shortNames"] = json!(r.short_names);
            }
            if !r.categories.is_empty() {
                entry["categories"] = json!(r.categories);
            }
            let subs: Vec<Value> = subresources(r)
                .into_iter()
                .map(|(sub, verbs)| {
                    let kind = match super::subresources::response_kind(sub) {
                        Some((g, v, k)) => json!({"group": g, "version": v, "kind": k}),
                        None => response_kind.clone(),
                    };
                    json!({"subresource": sub, "responseKind": kind, "verbs": verbs})
                })
                .collect();
            if !subs.is_empty() {
                entry["subresources"] = json!(subs);
            }
            entry
        })
        .collect();
    json!({"version": version, "resources": list, "freshness": "Current"})
}

/// Aggregated discovery for `/api` (legacy = true) or `/apis`.
pub fn aggregated(legacy: bool) -> Value {
    let items: Vec<Value> = if legacy {
        vec![
            json!({"metadata": {"creationTimestamp": null}, "versions": [aggregated_version("", "v1")]}),
        ]
    } else {
        all_groups()
            .iter()
            .map(|(g, versions)| {
                let versions: Vec<Value> =
                    versions.iter().map(|v| aggregated_version(g, v)).collect();
                json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions})
            })
            .collect()
    };
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "35",
        "gitVersion": format!("v1.35.0+berth-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("linux/{}", go_arch()),
    })
}

/// The architecture as Go (and so Kubernetes) names it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_accept_header_selects_aggregated_v2() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert!(wants_aggregated(kubectl));
        assert!(!wants_aggregated("application/json"));
    }

    #[test]
    fn core_resource_list_has_pods_with_status_and_short_names() {
        let list = resource_list("", "v1").unwrap();
        let resources = list["resources"].as_array().unwrap();
        let pods = resources.iter().find(|r| r["name"] == "pods").unwrap();
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert!(resources.iter().any(|r| r["name"] == "pods/status"));
        assert!(resource_list("apps", "v9").is_none());
    }

    #[test]
    fn aggregated_lists_every_group_with_scopes() {
        let doc = aggregated(false);
        let apps = doc["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == "apps")
            .unwrap();
        let deploy = apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        assert_eq!(deploy["scope"], "Namespaced");
        assert_eq!(deploy["categories"], json!(["all"]));
        let core = aggregated(true);
        assert_eq!(core["items"][0]["versions"][0]["version"], "v1");
    }
}
