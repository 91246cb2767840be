//! The swagger 2.0 document of every served group-version, as upstream serves at `/openapi/v2`.

use serde_json::{json, Map, Value};

use super::operations::{self, Body, Operation, Param, PathItem};
use crate::api::resources;
use crate::api::schemas::{self, PATCH, REF_PREFIX};

const PATCH_TYPES: [&str; 4] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

/// The document of the built-in group-versions and of `custom` ones (served by CRDs), whose
/// schemas are cut down to what swagger 2.0 and kubectl's v2 model can read.
pub fn document(custom: &[(&'static str, &'static str)]) -> Value {
    let mut roots: Vec<String> = operations::common_definitions()
        .iter()
        .map(|s| s.to_string())
        .collect();
    if !custom.is_empty() {
        roots.extend(crate::crd::openapi::referenced().map(str::to_string));
    }
    let mut paths = Map::new();
    let group_versions = std::iter::once(("", "v1"))
        .chain(
            resources::builtin_groups()
                .into_iter()
                .flat_map(|(g, versions)| versions.into_iter().map(move |v| (g, v))),
        )
        .chain(custom.iter().copied());
    for (group, version) in group_versions {
        for item in operations::paths(group, version) {
            for op in &item.operations {
                roots.push(op.response.clone());
                if let Some(Body::Object(def)) = &op.body {
                    roots.push(def.clone());
                }
            }
            paths.insert(item.path.clone(), path_item(&item));
        }
    }
    let catalog = schemas::catalog();
    let mut definitions: Map<String, Value> = schemas::reachable(&catalog, roots)
        .into_iter()
        .filter_map(|name| {
            let schema = catalog.definitions.get(&name)?.clone();
            Some((name, schema))
        })
        .collect();
    for (group, version) in custom {
        definitions.extend(crate::crd::openapi::v2_definitions(group, version));
    }
    json!({
        "swagger": "2.0",
        "info": super::info(),
        "paths": paths,
        "definitions": definitions,
        "securityDefinitions": {"BearerToken": {"description": "Bearer Token authentication", "in": "header", "name": "authorization", "type": "apiKey"}},
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
        "type": p.ty,
        "uniqueItems": true,
    });
    if p.location == operations::In::Path {
        v["required"] = json!(true);
    }
    v
}

fn reference(definition: &str) -> Value {
    json!({"$ref": format!("{REF_PREFIX}{definition}")})
}

fn operation(item: &PathItem, op: &Operation) -> Value {
    let (group, version, kind) = item.gvk;
    let mut produces = vec!["application/json", "application/yaml"];
    if op.streams {
        produces.push("application/json;stream=watch");
    }
    let consumes: Vec<&str> = match op.body {
        Some(Body::Patch) => PATCH_TYPES.to_vec(),
        _ => vec!["*/*"],
    };
    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({"description": "OK", "schema": reference(&op.response)}),
    );
    for (code, text) in op.also {
        responses.insert(
            code.to_string(),
            json!({"description": text, "schema": reference(&op.response)}),
        );
    }
    responses.insert("401".into(), json!({"description": "Unauthorized"}));
    let mut params: Vec<Value> = Vec::new();
    match &op.body {
        Some(Body::Object(def)) => params.push(json!({
            "in": "body", "name": "body", "required": op.method != "delete", "schema": reference(def),
        })),
        Some(Body::Patch) => params.push(json!({
            "in": "body", "name": "body", "required": true, "schema": reference(PATCH),
        })),
        None => {}
    }
    params.extend(op.params.iter().map(parameter));
    json!({
        "consumes": consumes,
        "description": op.description,
        "operationId": op.operation_id,
        "parameters": params,
        "produces": produces,
        "responses": responses,
        "schemes": ["https"],
        "tags": [item.tag],
        "x-kubernetes-action": op.action,
        "x-kubernetes-group-version-kind": {"group": group, "kind": kind, "version": version},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_use_upstream_names_and_keep_patch_metadata() {
        let doc = document(&[]);
        let containers =
            &doc["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(
            containers["items"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.Container"
        );
        assert!(doc["definitions"]["io.k8s.api.apps.v1.Deployment"].is_object());
        assert_eq!(doc["swagger"], "2.0");
    }

    #[test]
    fn patch_operations_take_a_body_and_field_validation() {
        let doc = document(&[]);
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
        let names: Vec<&str> = patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(names.contains(&"body") && names.contains(&"fieldValidation"));
    }
}
