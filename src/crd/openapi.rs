//! OpenAPI definitions of custom resources, from the schemas of their served versions, named as
//! upstream names them (`com.example.v1.Widget` for group `example.com`).

use serde_json::{json, Map, Value};

use super::definition::definition_of;
use crate::api::resources::{self, Resource};

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

/// `example.com` → `com.example`.
fn reversed(group: &str) -> String {
    group.split('.').rev().collect::<Vec<_>>().join(".")
}

/// The definition name of a custom resource's kind, None for built-in kinds.
pub fn kind_definition(r: &Resource) -> Option<String> {
    definition_of(r)?;
    Some(format!("{}.{}.{}", reversed(r.group), r.version, r.kind))
}

/// The definition name of a custom resource's list kind.
pub fn list_definition(r: &Resource) -> Option<String> {
    Some(format!("{}List", kind_definition(r)?))
}

/// Is `group/version/kind` a custom kind (patched without a strategy)?
pub fn is_custom_kind(group: &str, version: &str, kind: &str) -> bool {
    let api_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    resources::find_kind(&api_version, kind).is_some_and(|r| definition_of(r).is_some())
}

/// Definitions of the built-in catalog that custom definitions refer to.
pub fn referenced() -> [&'static str; 2] {
    [OBJECT_META, LIST_META]
}

/// The kind and list definitions of every custom resource in `group/version`, with references
/// written as `ref_prefix<name>` (`#/definitions/` in v2, `#/components/schemas/` in v3).
pub fn definitions(group: &str, version: &str, ref_prefix: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for r in resources::in_group_version(group, version) {
        let Some(definition) = definition_of(r) else {
            continue;
        };
        let Some(served) = definition.version(r.version) else {
            continue;
        };
        let (Some(kind_name), Some(list_name)) = (kind_definition(r), list_definition(r)) else {
            continue;
        };
        let gvk = |kind: &str| json!([{"group": r.group, "kind": kind, "version": r.version}]);
        let mut schema = served.schema.clone();
        if !schema.is_object() {
            schema = json!({"type": "object"});
        }
        let properties = schema
            .as_object_mut()
            .map(|s| s.entry("properties").or_insert_with(|| json!({})));
        if let Some(Value::Object(p)) = properties {
            p.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"}));
            p.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"}));
            p.insert("metadata".into(), json!({"allOf": [{"$ref": format!("{ref_prefix}{OBJECT_META}")}], "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}));
        }
        schema["x-kubernetes-group-version-kind"] = gvk(r.kind);
        out.insert(kind_name.clone(), schema);
        out.insert(
            list_name,
            json!({
                "description": format!("{} is a list of {}", definition.list_kind, r.kind),
                "type": "object",
                "required": ["items"],
                "properties": {
                    "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
                    "items": {"type": "array", "description": format!("List of {}. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md", definition.plural),
                              "items": {"$ref": format!("{ref_prefix}{kind_name}")}},
                    "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
                    "metadata": {"allOf": [{"$ref": format!("{ref_prefix}{LIST_META}")}], "description": "Standard list metadata."},
                },
                "x-kubernetes-group-version-kind": gvk(&definition.list_kind),
            }),
        );
    }
    out
}

/// The group-versions only custom resources serve, as `(group, version)`.
pub fn custom_group_versions() -> Vec<(&'static str, &'static str)> {
    let builtin = resources::builtin_groups();
    let mut out = Vec::new();
    for (group, versions) in resources::groups() {
        for version in versions {
            let is_builtin = builtin
                .iter()
                .any(|(g, vs)| *g == group && vs.contains(&version));
            if !is_builtin {
                out.push((group, version));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definition_names_reverse_the_group() {
        assert_eq!(reversed("stable.example.com"), "com.example.stable");
    }

    #[test]
    fn custom_definitions_carry_their_gvk_and_refer_to_object_meta() {
        let group = format!("oapi{}.example.com", std::process::id());
        let crd = json!({"spec": {"group": group, "scope": "Namespaced",
            "names": {"plural": "gizmos", "kind": "Gizmo"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object"}}}}}]}});
        crate::crd::serve(crate::crd::Definition::from_crd(&crd).unwrap());
        let defs = definitions(&group, "v1", "#/components/schemas/");
        let name = format!("{}.v1.Gizmo", reversed(&group));
        assert_eq!(
            defs[&name]["x-kubernetes-group-version-kind"][0]["kind"],
            "Gizmo"
        );
        assert_eq!(
            defs[&name]["properties"]["metadata"]["allOf"][0]["$ref"],
            format!("#/components/schemas/{OBJECT_META}")
        );
        assert!(defs[&name]["properties"]["spec"].is_object());
        assert!(defs.contains_key(&format!("{name}List")));
        assert!(is_custom_kind(&group, "v1", "Gizmo"));
        assert!(custom_group_versions().contains(&(resources::intern_str(&group), "v1")));
        crate::crd::stop_serving(&format!("gizmos.{group}"));
    }
}
