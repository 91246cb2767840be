//! OpenAPI 3.0 documents, one per group-version, as upstream serves at `/openapi/v3/<gv>`.

use serde_json::{json, Map, Value};

use super::operations::{self, Body, Operation, Param, PathItem};
use crate::api::schemas::{self, PATCH, REF_PREFIX};

const COMPONENTS_PREFIX: &str = "#/components/schemas/";

const PATCH_TYPES: [&str; 4] = [
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

/// The document of `group`/`version` (group empty for the core group).
pub fn document(group: &str, version: &str) -> Value {
    let items = operations::paths(group, version);
    let mut roots: Vec<String> = operations::common_definitions()
        .iter()
        .map(|s| s.to_string())
        .collect();
    roots.extend(crate::crd::openapi::referenced().map(str::to_string));
    let mut paths = Map::new();
    for item in &items {
        for op in &item.operations {
            roots.push(op.response.clone());
            if let Some(Body::Object(def)) = &op.body {
                roots.push(def.clone());
            }
        }
        paths.insert(item.path.clone(), path_item(item));
    }
    let catalog = schemas::catalog();
    let mut components = Map::new();
    for name in schemas::reachable(&catalog, roots) {
        if let Some(schema) = catalog.definitions.get(&name) {
            components.insert(name, to_v3_schema(schema));
        }
    }
    components.extend(crate::crd::openapi::definitions(
        group,
        version,
        COMPONENTS_PREFIX,
    ));
    json!({
        "openapi": "3.0.0",
        "info": super::info(),
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"BearerToken": {"description": "Bearer Token authentication", "in": "header", "name": "authorization", "type": "apiKey"}},
        },
        "security": [{"BearerToken": []}],
    })
}

fn path_item(item: &PathItem) -> Value {
    let mut out = Map::new();
    for op in &item.operations {
        out.insert(op.method.into(), operation(item, op));
    }
    out.insert(
        "parameters".into(),
        Value::Array(item.params.iter().map(parameter).collect()),
    );
    Value::Object(out)
}

fn parameter(p: &Param) -> Value {
    let mut v = json!({
        "description": p.description,
        "in": p.location.as_str(),
        "name": p.name,
        "schema": {"type": p.ty, "uniqueItems": true},
    });
    if p.location == operations::In::Path {
        v["required"] = json!(true);
    }
    v
}

fn reference(definition: &str) -> Value {
    json!({"$ref": format!("{COMPONENTS_PREFIX}{definition}")})
}

fn operation(item: &PathItem, op: &Operation) -> Value {
    let (group, version, kind) = item.gvk;
    let mut produces = vec!["application/json", "application/yaml"];
    if op.streams {
        produces.push("application/json;stream=watch");
    }
    let content = |def: &str| -> Value {
        Value::Object(
            produces
                .iter()
                .map(|t| (t.to_string(), json!({"schema": reference(def)})))
                .collect(),
        )
    };
    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({"description": "OK", "content": content(&op.response)}),
    );
    for (code, text) in op.also {
        responses.insert(
            code.to_string(),
            json!({"description": text, "content": content(&op.response)}),
        );
    }
    responses.insert("401".into(), json!({"description": "Unauthorized"}));
    let mut out = json!({
        "description": op.description,
        "operationId": op.operation_id,
        "responses": responses,
        "tags": [item.tag],
        "x-kubernetes-action": op.action,
        "x-kubernetes-group-version-kind": {"group": group, "kind": kind, "version": version},
    });
    if !op.params.is_empty() {
        out["parameters"] = Value::Array(op.params.iter().map(parameter).collect());
    }
    match &op.body {
        Some(Body::Object(def)) => {
            out["requestBody"] = json!({
                "content": {"*/*": {"schema": reference(def)}},
                "required": op.method != "delete",
            });
        }
        Some(Body::Patch) => {
            // Custom resources have no patch strategy: kubectl must not send them a strategic merge.
            let custom = crate::crd::openapi::is_custom_kind(group, version, kind);
            let content: Map<String, Value> = PATCH_TYPES
                .iter()
                .filter(|t| !(custom && t.contains("strategic")))
                .map(|t| (t.to_string(), json!({"schema": reference(PATCH)})))
                .collect();
            out["requestBody"] = json!({"content": content, "required": true});
        }
        None => {}
    }
    Value::Object(match out {
        Value::Object(m) => m,
        _ => Map::new(),
    })
}

/// Catalog schema → OpenAPI 3: references point into `components`, and a reference with
/// siblings (a description) becomes a one-element `allOf`, as OpenAPI 3.0 ignores `$ref` siblings.
pub fn to_v3_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out = Map::new();
            let mut wrapped_ref = None;
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(r)) => {
                        let target = r.strip_prefix(REF_PREFIX).unwrap_or(r);
                        let r = format!("{COMPONENTS_PREFIX}{target}");
                        if map.len() == 1 {
                            out.insert(key.clone(), Value::String(r));
                        } else {
                            wrapped_ref = Some(r);
                        }
                    }
                    _ => {
                        out.insert(key.clone(), to_v3_schema(value));
                    }
                }
            }
            if let Some(r) = wrapped_ref {
                out.insert("allOf".into(), json!([{"$ref": r}]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(to_v3_schema).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps() -> Value {
        document("apps", "v1")
    }

    #[test]
    fn deployment_schema_carries_its_group_version_kind() {
        let doc = apps();
        let gvk = &doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"]
            ["x-kubernetes-group-version-kind"];
        assert_eq!(
            gvk,
            &json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
        );
    }

    #[test]
    fn pod_spec_containers_merge_on_name() {
        let doc = apps();
        let containers =
            &doc["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-list-type"], "map");
        assert_eq!(
            containers["items"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Container"
        );
    }

    #[test]
    fn patch_of_a_deployment_lists_field_validation_and_every_patch_type() {
        let doc = apps();
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"],
            json!({"group": "apps", "kind": "Deployment", "version": "v1"})
        );
        assert_eq!(patch["x-kubernetes-action"], "patch");
        let names: Vec<&str> = patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "query")
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(
            names,
            ["dryRun", "fieldManager", "fieldValidation", "force"]
        );
        let content = patch["requestBody"]["content"].as_object().unwrap();
        for t in PATCH_TYPES {
            assert!(content.contains_key(t), "{t}");
        }
    }

    #[test]
    fn described_references_become_all_of() {
        let doc = apps();
        let metadata = &doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"]["properties"]
            ["metadata"];
        assert_eq!(
            metadata["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        assert!(metadata.get("$ref").is_none());
        assert!(metadata["description"].is_string());
    }

    #[test]
    fn every_reference_of_a_document_is_in_its_components() {
        for (group, versions) in
            std::iter::once(("", vec!["v1"])).chain(crate::api::resources::groups())
        {
            for version in versions {
                let doc = document(group, version);
                let text = doc.to_string();
                for piece in text.split(COMPONENTS_PREFIX).skip(1) {
                    let name = piece.split('"').next().unwrap_or("");
                    assert!(
                        doc["components"]["schemas"].get(name).is_some(),
                        "{group}/{version}: {name}"
                    );
                }
            }
        }
    }
}
