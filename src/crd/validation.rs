//! The rules a CustomResourceDefinition must pass before it is stored, and the defaults upstream
//! fills in (singular, listKind, conversion strategy).

use serde_json::{json, Value};

use crate::api::meta;
use crate::api::Cause;

/// Fills the fields upstream defaults on a CRD.
pub fn apply_defaults(crd: &mut Value) {
    let Some(spec) = crd.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(names) = spec.get_mut("names").and_then(Value::as_object_mut) {
        let kind = names
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let empty = |v: Option<&Value>| v.and_then(Value::as_str).is_none_or(str::is_empty);
        if empty(names.get("singular")) && !kind.is_empty() {
            names.insert("singular".into(), json!(kind.to_lowercase()));
        }
        if empty(names.get("listKind")) && !kind.is_empty() {
            names.insert("listKind".into(), json!(format!("{kind}List")));
        }
    }
    if !spec.get("conversion").is_some_and(Value::is_object) {
        spec.insert("conversion".into(), json!({"strategy": "None"}));
    }
}

/// Every problem of the CRD, as 422 causes.
pub fn validate(crd: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let text = |pointer: &str| crd.pointer(pointer).and_then(Value::as_str).unwrap_or("");
    let group = text("/spec/group");
    let plural = text("/spec/names/plural");
    let name = meta::name(crd);
    if group.is_empty() {
        causes.push(Cause::required("spec.group"));
    } else if !group.contains('.') {
        causes.push(Cause::invalid(
            "spec.group",
            group,
            "should be a domain with at least one dot",
        ));
    } else if let Some(problem) = meta::check_dns1123_subdomain(group) {
        causes.push(Cause::invalid("spec.group", group, &problem));
    }
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        causes.push(Cause::invalid(
            "metadata.name",
            name,
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    for (field, required) in [
        ("plural", true),
        ("singular", false),
        ("kind", true),
        ("listKind", true),
    ] {
        let path = format!("spec.names.{field}");
        let value = text(&format!("/spec/names/{field}"));
        if value.is_empty() {
            if required {
                causes.push(Cause::required(&path));
            }
            continue;
        }
        let problem = match field {
            "plural" | "singular" => meta::check_dns1123_label(value),
            _ => check_kind(value),
        };
        if let Some(problem) = problem {
            causes.push(Cause::invalid(&path, value, &problem));
        }
    }
    for (i, short) in crd
        .pointer("/spec/names/shortNames")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let short = short.as_str().unwrap_or("");
        if let Some(problem) = meta::check_dns1123_label(short) {
            causes.push(Cause::invalid(
                &format!("spec.names.shortNames[{i}]"),
                short,
                &problem,
            ));
        }
    }
    match text("/spec/scope") {
        "Cluster" | "Namespaced" => {}
        "" => causes.push(Cause::required("spec.scope")),
        other => causes.push(Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: \"{other}\": supported values: \"Cluster\", \"Namespaced\""
            ),
            field: "spec.scope".into(),
        }),
    }
    validate_versions(crd, &mut causes);
    match text("/spec/conversion/strategy") {
        "" | "None" | "Webhook" => {}
        other => causes.push(Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: \"{other}\": supported values: \"None\", \"Webhook\""
            ),
            field: "spec.conversion.strategy".into(),
        }),
    }
    causes
}

/// A kind is a Go-identifier-like name starting with a letter.
fn check_kind(kind: &str) -> Option<String> {
    let ok = kind.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && kind.chars().all(|c| c.is_ascii_alphanumeric());
    (!ok).then(|| {
        "must be a valid DNS-1035 label-like kind: letters and digits, starting with a letter"
            .to_string()
    })
}

fn validate_versions(crd: &Value, causes: &mut Vec<Cause>) {
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if versions.is_empty() {
        causes.push(Cause::required("spec.versions"));
        return;
    }
    let storage = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if storage != 1 {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: "Invalid value: \"versions\": must have exactly one version marked as storage version".into(),
            field: "spec.versions".into(),
        });
    }
    if !versions
        .iter()
        .any(|v| v.get("served").and_then(Value::as_bool) == Some(true))
    {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: "Invalid value: \"versions\": must have at least one version marked as served"
                .into(),
            field: "spec.versions".into(),
        });
    }
    let mut seen = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let path = format!("spec.versions[{i}]");
        let name = v.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            causes.push(Cause::required(&format!("{path}.name")));
        } else if let Some(problem) = meta::check_dns1123_label(name) {
            causes.push(Cause::invalid(&format!("{path}.name"), name, &problem));
        } else if seen.contains(&name) {
            causes.push(Cause {
                reason: "FieldValueDuplicate".into(),
                message: format!("Duplicate value: \"{name}\""),
                field: format!("{path}.name"),
            });
        }
        seen.push(name);
        match v.pointer("/schema/openAPIV3Schema") {
            None | Some(Value::Null) => causes.push(Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value: schemas are required".into(),
                field: format!("{path}.schema.openAPIV3Schema"),
            }),
            Some(schema) => {
                let schema_path = format!("{path}.schema.openAPIV3Schema");
                check_structural(schema, &schema_path, true, causes);
                super::rules::check_compiles(schema, &schema_path, causes);
            }
        }
        for (j, column) in v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let cpath = format!("{path}.additionalPrinterColumns[{j}]");
            for key in ["name", "type", "jsonPath"] {
                if column
                    .get(key)
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    causes.push(Cause::required(&format!("{cpath}.{key}")));
                }
            }
        }
    }
}

/// A structural schema names a type on every node (unless it preserves unknown fields or is
/// int-or-string), and the root is an object.
fn check_structural(schema: &Value, path: &str, root: bool, causes: &mut Vec<Cause>) {
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let flag = |key: &str| schema.get(key).and_then(Value::as_bool) == Some(true);
    let free = flag("x-kubernetes-preserve-unknown-fields") || flag("x-kubernetes-int-or-string");
    if root && ty != "object" {
        causes.push(Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value: must not be empty at the root".into(),
            field: format!("{path}.type"),
        });
        if !ty.is_empty() {
            causes.push(Cause::invalid(
                &format!("{path}.type"),
                ty,
                "must be object at the root",
            ));
        }
    } else if ty.is_empty() && !free {
        causes.push(Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value: must not be empty for specified object fields".into(),
            field: format!("{path}.type"),
        });
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        if let Err(e) = regex::Regex::new(pattern) {
            causes.push(Cause::invalid(
                &format!("{path}.pattern"),
                pattern,
                &format!("must be a valid regular expression: {e}"),
            ));
        }
    }
    if let Some(Value::Object(properties)) = schema.get("properties") {
        for (key, sub) in properties {
            check_structural(sub, &format!("{path}.properties[{key}]"), false, causes);
        }
    }
    if let Some(items) = schema.get("items") {
        if items.is_object() {
            check_structural(items, &format!("{path}.items"), false, causes);
        } else {
            causes.push(Cause::forbidden(
                &format!("{path}.items"),
                "items must be a schema object and not an array",
            ));
        }
    } else if ty == "array" && !free {
        causes.push(Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value: must be specified".into(),
            field: format!("{path}.items"),
        });
    }
    if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        check_structural(
            additional,
            &format!("{path}.additionalProperties"),
            false,
            causes,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Value {
        json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}}]}
        })
    }

    fn fields(crd: &Value) -> Vec<String> {
        validate(crd).into_iter().map(|c| c.field).collect()
    }

    #[test]
    fn a_complete_crd_passes_once_defaulted() {
        let mut crd = good();
        apply_defaults(&mut crd);
        assert_eq!(crd["spec"]["names"]["singular"], "widget");
        assert_eq!(crd["spec"]["names"]["listKind"], "WidgetList");
        assert_eq!(crd["spec"]["conversion"]["strategy"], "None");
        assert!(fields(&crd).is_empty(), "{:?}", fields(&crd));
    }

    #[test]
    fn the_name_must_be_plural_dot_group_and_the_group_a_dotted_domain() {
        let mut crd = good();
        apply_defaults(&mut crd);
        crd["metadata"]["name"] = json!("widget.example.com");
        assert_eq!(fields(&crd), ["metadata.name"]);
        crd["metadata"]["name"] = json!("widgets.example");
        crd["spec"]["group"] = json!("example");
        assert_eq!(fields(&crd), ["spec.group"]);
    }

    #[test]
    fn exactly_one_storage_version_and_a_structural_schema_are_required() {
        let mut crd = good();
        apply_defaults(&mut crd);
        crd["spec"]["versions"][0]["storage"] = json!(false);
        assert_eq!(fields(&crd), ["spec.versions"]);
        let mut crd = good();
        apply_defaults(&mut crd);
        crd["spec"]["versions"][0]["schema"] = json!({});
        assert_eq!(fields(&crd), ["spec.versions[0].schema.openAPIV3Schema"]);
        let mut crd = good();
        apply_defaults(&mut crd);
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["size"] = json!({"description": "no type"});
        assert_eq!(
            fields(&crd),
            ["spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[size].type"]
        );
    }

    #[test]
    fn names_and_scope_must_be_present_and_well_formed() {
        let mut crd = good();
        crd["spec"]["scope"] = json!("Galaxy");
        crd["spec"]["names"] = json!({"plural": "Widgets", "kind": "Wid-get"});
        crd["metadata"]["name"] = json!("Widgets.example.com");
        let got = fields(&crd);
        for want in [
            "spec.scope",
            "spec.names.plural",
            "spec.names.kind",
            "spec.names.listKind",
        ] {
            assert!(got.contains(&want.to_string()), "{want} not in {got:?}");
        }
    }
}
