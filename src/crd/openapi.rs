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

/// [`definitions`] for swagger 2.0 (`/openapi/v2`), each schema put through [`to_v2`] and
/// `metadata` a plain reference (the `allOf` wrapper is v3 only).
pub fn v2_definitions(group: &str, version: &str) -> Map<String, Value> {
    let prefix = "#/definitions/";
    let mut out = definitions(group, version, prefix);
    for (name, schema) in out.iter_mut() {
        to_v2(schema);
        let meta = if name.ends_with("List") {
            LIST_META
        } else {
            OBJECT_META
        };
        if let Some(Value::Object(properties)) = schema.get_mut("properties") {
            let description = properties
                .get("metadata")
                .and_then(|m| m.get("description"))
                .cloned()
                .unwrap_or(Value::Null);
            let mut metadata = json!({"$ref": format!("{prefix}{meta}")});
            if !description.is_null() {
                metadata["description"] = description;
            }
            properties.insert("metadata".into(), metadata);
        }
    }
    out
}

/// Cuts a structural schema down to what swagger 2.0 and kubectl's v2 model can read, as
/// upstream publishes CRDs in v2: no junctors (`allOf`, `oneOf`, `anyOf`, `not`); a nullable
/// field loses its type and children (v2 has no null) and is no longer required; a field that
/// preserves unknown fields loses its children, and its type when that is object; an array
/// left without items loses its type.
pub fn to_v2(schema: &mut Value) {
    let Value::Object(s) = schema else {
        return;
    };
    for junctor in ["allOf", "oneOf", "anyOf", "not"] {
        s.remove(junctor);
    }
    let preserves = s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if s.remove("nullable") == Some(Value::Bool(true)) {
        for key in ["type", "items", "properties"] {
            s.remove(key);
        }
    }
    if preserves {
        s.remove("items");
        s.remove("properties");
    }
    let type_is =
        |s: &Map<String, Value>, t: &str| s.get("type").and_then(Value::as_str) == Some(t);
    if !s.contains_key("items") && type_is(s, "array") {
        s.remove("type");
    }
    if preserves && type_is(s, "object") {
        s.remove("type");
    }
    let is_nullable = |v: &Value| v.get("nullable") == Some(&Value::Bool(true));
    let nullable_properties: Vec<String> = match s.get("properties") {
        Some(Value::Object(p)) => p
            .iter()
            .filter(|(_, v)| is_nullable(v))
            .map(|(k, _)| k.clone())
            .collect(),
        _ => Vec::new(),
    };
    if s.get("additionalProperties").is_some_and(is_nullable) {
        s.remove("required");
    }
    if let Some(Value::Array(required)) = s.get_mut("required") {
        required.retain(|r| {
            !r.as_str()
                .is_some_and(|r| nullable_properties.iter().any(|n| n == r))
        });
        if required.is_empty() {
            s.remove("required");
        }
    }
    match s.get_mut("items") {
        Some(Value::Array(items)) => items.iter_mut().for_each(to_v2),
        Some(items) => to_v2(items),
        None => {}
    }
    if let Some(Value::Object(properties)) = s.get_mut("properties") {
        properties.values_mut().for_each(to_v2);
    }
    if let Some(additional @ Value::Object(_)) = s.get_mut("additionalProperties") {
        to_v2(additional);
    }
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
    fn v2_drops_what_swagger_2_cannot_express() {
        let mut schema = json!({"type": "object", "required": ["a", "b"], "properties": {
            "a": {"type": "string", "nullable": true},
            "b": {"type": "integer", "oneOf": [{"minimum": 1}], "nullable": false},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                     "properties": {"x": {"type": "string"}}},
            "list": {"type": "array", "items": {"type": "object", "anyOf": [{"required": ["y"]}],
                     "properties": {"y": {"type": "string", "nullable": true}}}},
        }});
        to_v2(&mut schema);
        assert_eq!(schema["required"], json!(["b"]));
        assert_eq!(schema["properties"]["a"], json!({}));
        assert_eq!(schema["properties"]["b"], json!({"type": "integer"}));
        assert_eq!(
            schema["properties"]["free"],
            json!({"x-kubernetes-preserve-unknown-fields": true})
        );
        let item = &schema["properties"]["list"]["items"];
        assert_eq!(item["type"], "object");
        assert!(item.get("anyOf").is_none());
        assert_eq!(item["properties"]["y"], json!({}));
    }

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
        let v2 = v2_definitions(&group, "v1");
        assert_eq!(
            v2[&name]["properties"]["metadata"]["$ref"],
            format!("#/definitions/{OBJECT_META}")
        );
        assert_eq!(
            v2[&format!("{name}List")]["properties"]["metadata"]["$ref"],
            format!("#/definitions/{LIST_META}")
        );
        crate::crd::stop_serving(&format!("gizmos.{group}"));
    }
}
