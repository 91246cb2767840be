//! What a stored CRD says, read once into a [`Definition`], and the set of served definitions.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::{json, Value};

use crate::api::resources::{self, intern_str, intern_strs, Resource};

/// A served CRD: everything the request path needs, without re-reading the CRD.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// `<plural>.<group>`.
    pub name: String,
    pub group: String,
    pub kind: String,
    pub list_kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// The version objects are stored in.
    pub storage_version: String,
    /// Served versions, highest priority first (the preferred one leads, as discovery lists them).
    pub versions: Vec<Version>,
}

/// One served version of a CRD.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    pub name: String,
    /// `schema.openAPIV3Schema`, or `{}` when absent.
    pub schema: Value,
    pub status: bool,
    pub scale: Option<Scale>,
    /// `additionalPrinterColumns` as written in the CRD.
    pub columns: Vec<Value>,
}

/// `subresources.scale`: where the replica counts and selector live in a custom object.
#[derive(Debug, Clone, PartialEq)]
pub struct Scale {
    pub spec_replicas_path: String,
    pub status_replicas_path: String,
    pub label_selector_path: Option<String>,
}

impl Definition {
    /// Reads a CRD object (already validated). None if it lacks what serving needs.
    pub fn from_crd(crd: &Value) -> Option<Definition> {
        let spec = crd.get("spec")?;
        let names = spec.get("names")?;
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
        let strings = |v: &Value, key: &str| -> Vec<String> {
            v.get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let group = text(spec, "group")?;
        let kind = text(names, "kind")?;
        let plural = text(names, "plural")?;
        let singular = text(names, "singular")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| kind.to_lowercase());
        let list_kind = text(names, "listKind")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("{kind}List"));
        let all_versions = spec.get("versions").and_then(Value::as_array)?;
        let storage_version = all_versions
            .iter()
            .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
            .and_then(|v| text(v, "name"))?;
        let mut versions: Vec<Version> = all_versions
            .iter()
            .filter(|v| v.get("served").and_then(Value::as_bool) == Some(true))
            .filter_map(|v| {
                let subresources = v.get("subresources");
                let scale = subresources.and_then(|s| s.get("scale")).map(|s| Scale {
                    spec_replicas_path: text(s, "specReplicasPath").unwrap_or_default(),
                    status_replicas_path: text(s, "statusReplicasPath").unwrap_or_default(),
                    label_selector_path: text(s, "labelSelectorPath"),
                });
                Some(Version {
                    name: text(v, "name")?,
                    schema: v
                        .pointer("/schema/openAPIV3Schema")
                        .cloned()
                        .unwrap_or_else(|| json!({})),
                    status: subresources.and_then(|s| s.get("status")).is_some(),
                    scale,
                    columns: v
                        .get("additionalPrinterColumns")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                })
            })
            .collect();
        versions.sort_by_key(|v| version_priority(&v.name));
        Some(Definition {
            name: format!("{plural}.{group}"),
            namespaced: text(spec, "scope").as_deref() == Some("Namespaced"),
            short_names: strings(names, "shortNames"),
            categories: strings(names, "categories"),
            group,
            kind,
            list_kind,
            plural,
            singular,
            storage_version,
            versions,
        })
    }

    pub fn version(&self, name: &str) -> Option<&Version> {
        self.versions.iter().find(|v| v.name == name)
    }

    /// One served resource per served version.
    fn resources(&self) -> Vec<Resource> {
        self.versions
            .iter()
            .map(|v| Resource {
                group: intern_str(&self.group),
                version: intern_str(&v.name),
                kind: intern_str(&self.kind),
                plural: intern_str(&self.plural),
                singular: intern_str(&self.singular),
                namespaced: self.namespaced,
                short_names: intern_strs(&self.short_names),
                categories: intern_strs(&self.categories),
                has_status: v.status,
            })
            .collect()
    }
}

/// Sort key of a version as upstream orders them: GA before beta before alpha, higher numbers
/// first; versions not in the `v<N>[alpha|beta<M>]` form come last, alphabetically.
pub fn version_priority(
    version: &str,
) -> (u8, std::cmp::Reverse<u64>, std::cmp::Reverse<u64>, String) {
    use std::cmp::Reverse;
    let parsed = version.strip_prefix('v').and_then(|rest| {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let major: u64 = rest[..digits].parse().ok()?;
        if major == 0 {
            return None;
        }
        let tail = &rest[digits..];
        let (rank, minor) = if tail.is_empty() {
            (0, "0")
        } else if let Some(m) = tail.strip_prefix("beta") {
            (1, m)
        } else if let Some(m) = tail.strip_prefix("alpha") {
            (2, m)
        } else {
            return None;
        };
        let minor: u64 = if minor.is_empty() {
            0
        } else {
            minor.parse().ok()?
        };
        Some((rank, major, minor))
    });
    match parsed {
        Some((rank, major, minor)) => (rank, Reverse(major), Reverse(minor), String::new()),
        None => (3, Reverse(0), Reverse(0), version.to_string()),
    }
}

static SERVED: RwLock<BTreeMap<String, Arc<Definition>>> = RwLock::new(BTreeMap::new());

/// Serves `definition` from now on (replacing an earlier definition of the same CRD).
pub fn serve(definition: Definition) {
    let resources = definition.resources();
    let name = definition.name.clone();
    if let Ok(mut served) = SERVED.write() {
        served.insert(name.clone(), Arc::new(definition));
    }
    resources::set_custom(&name, resources);
}

/// Stops serving the CRD `name`.
pub fn stop_serving(name: &str) {
    resources::set_custom(name, Vec::new());
    if let Ok(mut served) = SERVED.write() {
        served.remove(name);
    }
}

/// The definition a custom resource comes from.
pub fn definition_of(r: &Resource) -> Option<Arc<Definition>> {
    if !resources::is_custom(r) {
        return None;
    }
    served(&format!("{}.{}", r.plural, r.group))
}

/// The served definition of CRD `name`.
pub fn served(name: &str) -> Option<Arc<Definition>> {
    SERVED.read().ok()?.get(name).cloned()
}

/// Every served definition.
pub fn all_served() -> Vec<Arc<Definition>> {
    SERVED
        .read()
        .map(|s| s.values().cloned().collect())
        .unwrap_or_default()
}

/// Serves every stored CRD that was established before, so a restarted server answers for its
/// custom resources before the controller has run.
pub fn load(registry: &crate::registry::Registry) -> crate::api::ApiResult<usize> {
    let Some(crds) = resources::find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    else {
        return Ok(0);
    };
    let page = registry.list(crds, None, &Default::default())?;
    let mut count = 0;
    for raw in page.items {
        let crd = crate::registry::generic::decode(&raw)?;
        if is_established(&crd) {
            if let Some(definition) = Definition::from_crd(&crd) {
                serve(definition);
                count += 1;
            }
        }
    }
    Ok(count)
}

/// Does the CRD's status say `Established: True`?
pub fn is_established(crd: &Value) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(group: &str) -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("gadgets.{group}")},
            "spec": {"group": group, "scope": "Namespaced",
                "names": {"plural": "gadgets", "kind": "Gadget", "shortNames": ["gd"]},
                "versions": [
                    {"name": "v1alpha1", "served": true, "storage": false},
                    {"name": "v1", "served": true, "storage": true,
                     "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}}},
                    {"name": "v2", "served": false, "storage": false},
                ]}
        })
    }

    #[test]
    fn versions_are_served_in_upstream_priority_order_and_unserved_ones_are_left_out() {
        let d = Definition::from_crd(&crd("order.example.com")).unwrap();
        let names: Vec<&str> = d.versions.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["v1", "v1alpha1"]);
        assert_eq!(d.singular, "gadget");
        assert_eq!(d.list_kind, "GadgetList");
        assert!(d.version("v1").unwrap().scale.is_some());
        assert!(!d.version("v1alpha1").unwrap().status);
    }

    #[test]
    fn version_priority_puts_ga_before_beta_before_alpha_before_others() {
        let mut v = vec![
            "foo", "v1alpha1", "v2beta1", "v1", "v2", "v1beta2", "v1beta1", "bar",
        ];
        v.sort_by_key(|v| version_priority(v));
        assert_eq!(
            v,
            ["v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v1alpha1", "bar", "foo"]
        );
    }

    #[test]
    fn a_served_definition_joins_the_resource_table_and_leaves_it_when_stopped() {
        let group = format!("served{}.example.com", std::process::id());
        serve(Definition::from_crd(&crd(&group)).unwrap());
        let r = resources::find(&group, "v1", "gadgets").expect("served");
        assert!(r.has_status);
        assert!(resources::is_custom(r));
        assert_eq!(definition_of(r).unwrap().kind, "Gadget");
        assert!(resources::find(&group, "v1alpha1", "gadgets").is_some());
        assert!(resources::find(&group, "v2", "gadgets").is_none());
        assert_eq!(
            resources::groups()
                .iter()
                .find(|(g, _)| *g == group)
                .unwrap()
                .1,
            vec!["v1", "v1alpha1"]
        );
        stop_serving(&format!("gadgets.{group}"));
        assert!(resources::find(&group, "v1", "gadgets").is_none());
        assert!(!resources::serves_group_version(&group, "v1"));
    }
}
