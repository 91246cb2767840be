//! The aggregated groups in berth's discovery. The legacy `/apis` list and `/apis/<group>` come
//! from the APIServices alone (as upstream: no backend call); aggregated discovery carries the
//! resources, from the backend's `/apis/<group>/<version>` fetched by the availability check.
//! Groups sort by `groupPriorityMinimum` (highest first) then name; versions by
//! `versionPriority`, the first being the preferred one.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{Aggregator, Remote};

impl Aggregator {
    /// Aggregated groups and their versions in preference order, with the remotes behind them.
    fn groups(&self) -> Vec<(String, Vec<Remote>)> {
        let mut by_group: BTreeMap<String, Vec<Remote>> = BTreeMap::new();
        for remote in self.remotes().iter() {
            by_group
                .entry(remote.group.clone())
                .or_default()
                .push(remote.clone());
        }
        let mut groups: Vec<(String, Vec<Remote>)> = by_group.into_iter().collect();
        for (_, versions) in &mut groups {
            versions.sort_by(|a, b| b.version_priority.cmp(&a.version_priority));
        }
        let priority =
            |versions: &[Remote]| versions.iter().map(|r| r.group_priority).max().unwrap_or(0);
        groups.sort_by(|a, b| priority(&b.1).cmp(&priority(&a.1)).then(a.0.cmp(&b.0)));
        groups
    }

    /// Adds the aggregated groups berth does not serve itself to an `/apis` APIGroupList.
    pub fn extend_group_list(&self, list: &mut Value) {
        let Some(items) = list["groups"].as_array_mut() else {
            return;
        };
        for (group, remotes) in self.groups() {
            if !items.iter().any(|g| g["name"] == group.as_str()) {
                items.push(api_group(&group, &remotes));
            }
        }
    }

    /// `/apis/<group>` for an aggregated group berth does not serve itself.
    pub fn group_doc(&self, group: &str) -> Option<Value> {
        let (group, remotes) = self.groups().into_iter().find(|(g, _)| g == group)?;
        let mut doc = api_group(&group, &remotes);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        Some(doc)
    }

    /// Adds (or, for a group berth serves itself, replaces) the aggregated versions in an
    /// `APIGroupDiscoveryList`. A version whose backend never answered is left out; one whose
    /// backend stopped answering keeps its last document, marked `Stale`, as upstream.
    pub fn extend_aggregated(&self, list: &mut Value) {
        let Some(items) = list["items"].as_array_mut() else {
            return;
        };
        for (group, remotes) in self.groups() {
            let versions: Vec<Value> = remotes
                .iter()
                .filter_map(|r| {
                    let doc = self.discovery_of(&r.name)?;
                    Some(aggregated_version(r, &doc))
                })
                .collect();
            let position = items
                .iter()
                .position(|i| i["metadata"]["name"] == group.as_str());
            let item = match position {
                Some(i) => &mut items[i],
                None if versions.is_empty() => continue,
                None => {
                    items.push(json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": []}));
                    let last = items.len() - 1;
                    &mut items[last]
                }
            };
            let Some(existing) = item["versions"].as_array_mut() else {
                continue;
            };
            for version in versions.into_iter().rev() {
                existing.retain(|v| v["version"] != version["version"]);
                existing.insert(0, version);
            }
        }
    }
}

fn api_group(group: &str, remotes: &[Remote]) -> Value {
    let versions: Vec<Value> = remotes
        .iter()
        .map(|r| json!({"groupVersion": format!("{group}/{}", r.version), "version": r.version}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

/// One version of aggregated discovery from the backend's APIResourceList.
fn aggregated_version(remote: &Remote, list: &Value) -> Value {
    let entries: Vec<&Value> = list["resources"]
        .as_array()
        .map(|r| r.iter().collect())
        .unwrap_or_default();
    let kind_of = |entry: &Value| {
        json!({
            "group": entry["group"].as_str().unwrap_or(&remote.group),
            "version": entry["version"].as_str().unwrap_or(&remote.version),
            "kind": entry["kind"],
        })
    };
    let mut resources: Vec<Value> = Vec::new();
    for entry in entries.iter().filter(|e| !name_of(e).contains('/')) {
        let mut resource = json!({
            "resource": name_of(entry),
            "responseKind": kind_of(entry),
            "scope": if entry["namespaced"].as_bool().unwrap_or(false) { "Namespaced" } else { "Cluster" },
            "singularResource": entry["singularName"].as_str().unwrap_or(""),
            "verbs": entry.get("verbs").cloned().unwrap_or(json!([])),
        });
        for field in ["shortNames", "categories"] {
            if let Some(value) = entry.get(field).filter(|v| v.is_array()) {
                resource[field] = value.clone();
            }
        }
        let prefix = format!("{}/", name_of(entry));
        let subresources: Vec<Value> = entries
            .iter()
            .filter_map(|sub| {
                let name = name_of(sub).strip_prefix(&prefix)?;
                Some(json!({
                    "subresource": name,
                    "responseKind": kind_of(sub),
                    "verbs": sub.get("verbs").cloned().unwrap_or(json!([])),
                }))
            })
            .collect();
        if !subresources.is_empty() {
            resource["subresources"] = json!(subresources);
        }
        resources.push(resource);
    }
    let freshness = if remote.available { "Current" } else { "Stale" };
    json!({"version": remote.version, "resources": resources, "freshness": freshness})
}

fn name_of(entry: &Value) -> &str {
    entry["name"].as_str().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(version: &str, available: bool) -> Remote {
        Remote {
            name: format!("{version}.example.io"),
            group: "example.io".into(),
            version: version.into(),
            namespace: "ns".into(),
            service: "svc".into(),
            port: 443,
            ca_bundle: Vec::new(),
            insecure: false,
            group_priority: 1000,
            version_priority: 15,
            available,
            condition: None,
        }
    }

    #[test]
    fn a_resource_list_becomes_aggregated_resources_with_their_subresources() {
        let list = json!({"kind": "APIResourceList", "groupVersion": "example.io/v1", "resources": [
            {"name": "widgets", "singularName": "widget", "namespaced": true, "kind": "Widget",
             "verbs": ["get", "list"], "shortNames": ["wd"]},
            {"name": "widgets/status", "singularName": "", "namespaced": true, "kind": "Widget",
             "verbs": ["get"]},
            {"name": "gadgets", "singularName": "", "namespaced": false, "kind": "Gadget", "verbs": ["get"]},
        ]});
        let version = aggregated_version(&remote("v1", true), &list);
        assert_eq!(version["freshness"], "Current");
        let resources = version["resources"].as_array().expect("resources");
        assert_eq!(resources.len(), 2);
        assert_eq!(resources[0]["resource"], "widgets");
        assert_eq!(resources[0]["scope"], "Namespaced");
        assert_eq!(resources[0]["shortNames"], json!(["wd"]));
        assert_eq!(
            resources[0]["responseKind"],
            json!({"group": "example.io", "version": "v1", "kind": "Widget"})
        );
        assert_eq!(resources[0]["subresources"][0]["subresource"], "status");
        assert_eq!(resources[1]["scope"], "Cluster");
        assert!(resources[1].get("subresources").is_none());
    }

    #[test]
    fn an_unavailable_backend_leaves_its_last_document_stale() {
        let list = json!({"kind": "APIResourceList", "resources": []});
        assert_eq!(
            aggregated_version(&remote("v1", false), &list)["freshness"],
            "Stale"
        );
    }

    #[test]
    fn the_highest_version_priority_is_preferred() {
        let mut low = remote("v1alpha1", true);
        low.version_priority = 5;
        let high = remote("v1", true);
        let mut remotes = vec![low, high];
        remotes.sort_by(|a, b| b.version_priority.cmp(&a.version_priority));
        let group = api_group("example.io", &remotes);
        assert_eq!(group["preferredVersion"]["version"], "v1");
        assert_eq!(group["versions"][1]["groupVersion"], "example.io/v1alpha1");
    }
}
