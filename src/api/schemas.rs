//! The JSON schemas of every built-in kind, taken from k8s-openapi and keyed by upstream's
//! OpenAPI definition names (`io.k8s.api.apps.v1.Deployment`).
//!
//! The catalog is built once, on first use, and already carries the Kubernetes extensions
//! (`x-kubernetes-group-version-kind`, patch and list metadata from [`super::patch_meta`]), so the
//! OpenAPI v2 and v3 documents only differ in shape. References read `#/definitions/<name>`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::patch_meta;

/// What k8s-openapi's `schemars` implementations give for the served kinds (see
/// `schemas_generate.rs`), as JSON compressed with zstd: about a tenth of the size of the code
/// and strings that generated it at run time.
static EMBEDDED_DEFINITIONS: &[u8] = include_bytes!("schema_definitions.json.zst");

/// Where a `$ref` of the catalog points.
pub const REF_PREFIX: &str = "#/definitions/";

/// The root definition of one kind (or of its list).
#[derive(Debug, Clone)]
pub struct KindDefinition {
    pub api_version: String,
    pub kind: String,
    pub definition: String,
}

/// Every definition the served kinds need, plus the kinds' roots.
#[derive(Debug)]
pub struct Catalog {
    pub definitions: BTreeMap<String, Value>,
    pub kinds: Vec<KindDefinition>,
}

/// Definition names of the meta types every group-version's operations refer to.
pub const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
pub const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

/// The catalog, built on first use and shared while anyone holds it (and for a minute after it
/// was built). Only the OpenAPI documents need the whole of it (descriptions make it several
/// MiB): an idle node does not keep it. Writes need only the [`TypeGraph`], which stays.
pub fn catalog() -> Arc<Catalog> {
    static CATALOG: Mutex<Weak<Catalog>> = Mutex::new(Weak::new());
    let mut cached = CATALOG.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(catalog) = cached.upgrade() {
        return catalog;
    }
    let catalog = Arc::new(build());
    *cached = Arc::downgrade(&catalog);
    // OpenAPI requests come in bursts (kubectl fetches the index, then a document or two):
    // keep the catalog a little while rather than rebuild it for each of them.
    let lingering = Arc::clone(&catalog);
    let _ = std::thread::Builder::new()
        .name("schema-catalog".to_owned())
        .spawn(move || {
            std::thread::sleep(CATALOG_LINGER);
            drop(lingering);
            // Megabytes of small allocations just went back to glibc: hand them to the kernel.
            crate::runtime::memory::return_free_heap();
        });
    catalog
}

#[cfg(not(test))]
const CATALOG_LINGER: std::time::Duration = std::time::Duration::from_secs(60);
#[cfg(test)]
const CATALOG_LINGER: std::time::Duration = std::time::Duration::from_millis(50);

/// What writes ask of the schemas (managedFields, strategic merge, apply): which named type
/// each field of each type holds, and each kind's root type. A few hundred KiB, kept for good.
#[derive(Debug, Default)]
struct TypeGraph {
    /// Definition name -> its fields -> the named type of the field (or of its items), if any.
    fields: HashMap<String, HashMap<String, Option<String>>>,
    kinds: Vec<KindDefinition>,
}

fn type_graph() -> &'static TypeGraph {
    static GRAPH: OnceLock<TypeGraph> = OnceLock::new();
    // Built from a catalog of its own, dropped at once (not the lingering shared one): start-up
    // needs the graph, and an idle node should not hold the catalog.
    GRAPH.get_or_init(|| TypeGraph::of(&build()))
}

impl TypeGraph {
    fn of(catalog: &Catalog) -> TypeGraph {
        let fields = catalog
            .definitions
            .iter()
            .map(|(name, definition)| {
                let properties = definition
                    .get("properties")
                    .and_then(Value::as_object)
                    .map(|properties| {
                        properties
                            .iter()
                            .map(|(field, property)| {
                                let target = property_target(property)
                                    .filter(|t| catalog.definitions.contains_key(*t));
                                (field.clone(), target.map(str::to_owned))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                (name.clone(), properties)
            })
            .collect();
        TypeGraph {
            fields,
            kinds: catalog.kinds.clone(),
        }
    }
}

/// The named type a property holds: itself, or its items, or its map values.
fn property_target(property: &Value) -> Option<&str> {
    ref_target(property)
        .or_else(|| property.get("items").and_then(ref_target))
        .or_else(|| property.get("additionalProperties").and_then(ref_target))
}

/// The root definition name of objects of `api_version`/`kind` (`DeploymentList` included).
pub fn kind_definition(api_version: &str, kind: &str) -> Option<&'static str> {
    type_graph()
        .kinds
        .iter()
        .find(|k| k.api_version == api_version && k.kind == kind)
        .map(|k| k.definition.as_str())
}

/// The definition a schema refers to, directly or through a one-element `allOf`.
pub fn ref_target(schema: &Value) -> Option<&str> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return r.strip_prefix(REF_PREFIX);
    }
    match schema
        .get("allOf")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        Some([only]) => ref_target(only),
        _ => None,
    }
}

/// The named object type of `field` in `type_name`, looking through lists and maps.
pub fn field_type(type_name: &str, field: &str) -> Option<&'static str> {
    type_graph().fields.get(type_name)?.get(field)?.as_deref()
}

/// Does the type named `type_name` have a property `field`?
pub fn has_field(type_name: &str, field: &str) -> bool {
    type_graph()
        .fields
        .get(type_name)
        .is_some_and(|fields| fields.contains_key(field))
}

/// The embedded schemas: the kinds' root definition names and every definition they reach.
#[derive(Deserialize)]
struct Embedded {
    kinds: Vec<EmbeddedKind>,
    definitions: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EmbeddedKind {
    api_version: String,
    kind: String,
    definition: String,
}

/// The embedded schemas, decoded. They are part of the binary, so failing to decode them is a
/// build defect that the unit tests catch, not something input can cause.
fn embedded() -> Embedded {
    zstd::decode_all(EMBEDDED_DEFINITIONS)
        .map_err(|e| e.to_string())
        .and_then(|json| serde_json::from_slice(&json).map_err(|e| e.to_string()))
        .unwrap_or_else(|e| panic!("the embedded schema definitions do not decode: {e}"))
}

fn build() -> Catalog {
    let Embedded {
        kinds,
        mut definitions,
    } = embedded();
    let mut kinds: Vec<KindDefinition> = kinds
        .into_iter()
        .map(|k| KindDefinition {
            api_version: k.api_version,
            kind: k.kind,
            definition: k.definition,
        })
        .collect();

    let mut lists = Vec::new();
    for k in &kinds {
        if k.kind == "Binding" {
            continue;
        }
        let list = KindDefinition {
            api_version: k.api_version.clone(),
            kind: format!("{}List", k.kind),
            definition: format!("{}List", k.definition),
        };
        definitions.insert(list.definition.clone(), list_schema(k));
        lists.push(list);
    }
    kinds.extend(lists);

    for k in &kinds {
        if let Some(Value::Object(d)) = definitions.get_mut(&k.definition) {
            let (group, version) = split_api_version(&k.api_version);
            d.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": group, "kind": k.kind, "version": version}]),
            );
        }
    }
    for (type_name, field, meta) in patch_meta::all() {
        let property = definitions
            .get_mut(&type_name)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(field))
            .and_then(Value::as_object_mut);
        if let Some(property) = property {
            add_patch_extensions(property, meta);
        }
    }
    for (name, definition) in definitions.iter_mut() {
        if patch_meta::is_atomic_struct(name) {
            if let Value::Object(d) = definition {
                d.insert("x-kubernetes-map-type".into(), json!("atomic"));
            }
        }
    }
    // Upstream publishes these two as strings with a format, not as the CRD-only extension.
    for (name, format) in [(INT_OR_STRING, Some("int-or-string")), (QUANTITY, None)] {
        if let Some(Value::Object(d)) = definitions.get_mut(name) {
            d.remove("x-kubernetes-int-or-string");
            d.insert("type".into(), json!("string"));
            if let Some(format) = format {
                d.insert("format".into(), json!(format));
            }
        }
    }
    Catalog { definitions, kinds }
}

/// `("apps", "v1")` from `apps/v1`, `("", "v1")` from `v1`.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

/// k8s-openapi has no schema for `List<T>`; upstream's lists all have this shape.
fn list_schema(item: &KindDefinition) -> Value {
    json!({
        "description": format!("{}List is a list of {} objects.", item.kind, item.kind),
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
                "type": "string",
            },
            "items": {
                "description": format!("List of {}.", item.kind),
                "type": "array",
                "items": {"$ref": format!("{REF_PREFIX}{}", item.definition)},
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "type": "string",
            },
            "metadata": {
                "$ref": format!("{REF_PREFIX}{LIST_META}"),
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
            },
        },
        "required": ["items"],
    })
}

fn add_patch_extensions(property: &mut Map<String, Value>, meta: &patch_meta::FieldPatchMeta) {
    if let Some(strategy) = meta.strategy {
        property.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
    }
    if let Some(key) = meta.merge_key {
        property.insert("x-kubernetes-patch-merge-key".into(), json!(key));
    }
    if let Some(list_type) = meta.list_type {
        property.insert("x-kubernetes-list-type".into(), json!(list_type.as_str()));
    }
    if !meta.map_keys.is_empty() {
        property.insert("x-kubernetes-list-map-keys".into(), json!(meta.map_keys));
    }
}

/// Names of the definitions `roots` refer to, directly or not, roots included.
pub fn reachable(
    catalog: &Catalog,
    roots: impl IntoIterator<Item = String>,
) -> std::collections::BTreeSet<String> {
    let definitions = &catalog.definitions;
    let mut seen = std::collections::BTreeSet::new();
    let mut pending: Vec<String> = roots.into_iter().collect();
    while let Some(name) = pending.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(d) = definitions.get(&name) {
            collect_refs(d, &mut pending);
        }
    }
    seen
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        if let Some(name) = r.strip_prefix(REF_PREFIX) {
                            out.push(name.to_string());
                        }
                    }
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[cfg(test)]
#[path = "schemas_generate.rs"]
mod schemas_generate;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_definitions_are_what_k8s_openapi_generates() {
        let json = zstd::decode_all(EMBEDDED_DEFINITIONS).unwrap();
        let embedded: Value = serde_json::from_slice(&json).unwrap();
        // Compared whole, then by kind and definition only to name what differs.
        let generated = schemas_generate::raw_definitions();
        if embedded != generated {
            assert_eq!(embedded["kinds"], generated["kinds"]);
            let (embedded, generated) = (&embedded["definitions"], &generated["definitions"]);
            for (name, definition) in generated.as_object().unwrap() {
                assert_eq!(
                    embedded.get(name),
                    Some(definition),
                    "{name} is stale: cargo run --example gen_schema_definitions -- \
                     src/api/schema_definitions.json.zst"
                );
            }
            panic!("the embedded definitions hold more than k8s-openapi generates: regenerate");
        }
    }

    #[test]
    fn every_served_kind_has_a_root_definition_with_its_gvk() {
        let catalog = catalog();
        for r in crate::api::resources::BUILTIN {
            let name = kind_definition(&r.api_version(), r.kind)
                .unwrap_or_else(|| panic!("no schema for {}", r.kind));
            let gvk = &catalog.definitions[name]["x-kubernetes-group-version-kind"][0];
            assert_eq!(gvk["kind"], r.kind);
            assert_eq!(gvk["group"], r.group);
            assert!(kind_definition(&r.api_version(), &r.list_kind()).is_some());
        }
    }

    #[test]
    fn every_reference_resolves() {
        let catalog = catalog();
        let all = reachable(&catalog, catalog.definitions.keys().cloned());
        for name in all {
            assert!(catalog.definitions.contains_key(&name), "{name}");
        }
    }

    #[test]
    fn int_or_string_is_a_string_with_a_format() {
        let catalog = catalog();
        let d = &catalog.definitions[INT_OR_STRING];
        assert_eq!(d["format"], "int-or-string");
        assert!(d.get("x-kubernetes-int-or-string").is_none());
    }

    #[test]
    fn the_type_graph_answers_like_the_full_schemas() {
        let catalog = catalog();
        let pod_spec = "io.k8s.api.core.v1.PodSpec";
        assert_eq!(
            field_type(pod_spec, "containers"),
            Some("io.k8s.api.core.v1.Container")
        );
        assert_eq!(
            field_type("io.k8s.api.core.v1.Pod", "metadata"),
            Some("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
        );
        assert_eq!(field_type(pod_spec, "nodeName"), None);
        assert!(has_field(pod_spec, "nodeName"));
        assert!(!has_field(pod_spec, "noSuchField"));
        // Every property of every definition: same answer as a walk of the full catalog.
        for (name, definition) in &catalog.definitions {
            let Some(properties) = definition.get("properties").and_then(Value::as_object) else {
                continue;
            };
            for (field, property) in properties {
                let expected =
                    property_target(property).filter(|t| catalog.definitions.contains_key(*t));
                assert_eq!(field_type(name, field), expected, "{name}.{field}");
            }
        }
    }

    #[test]
    fn the_catalog_is_not_kept_once_nobody_holds_it() {
        let held = catalog();
        assert!(Arc::ptr_eq(&held, &catalog()), "shared while held");
        let weak = Arc::downgrade(&held);
        drop(held);
        // Another test may hold it right now; wait for it to let go.
        let started = std::time::Instant::now();
        while weak.upgrade().is_some() && started.elapsed() < std::time::Duration::from_secs(60) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(weak.upgrade().is_none());
    }
}
