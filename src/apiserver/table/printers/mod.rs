//! One printer per built-in kind: the columns upstream's printers define, and the cells of one
//! row. Wide columns (priority 1) are always filled; kubectl hides them unless `-o wide`.

mod cluster;
mod core;
mod extensions;
mod pods;
mod workloads;

pub use pods::row_conditions as pod_row_conditions;

use jiff::Timestamp;
use serde_json::{json, Value};

use super::duration;
use crate::api::resources::Resource;

/// One column of a Table (`metav1.TableColumnDefinition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    /// `string`, `integer`, `boolean`, `date`, ...
    pub kind: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    /// 0 for default columns, 1 for those kubectl shows only with `-o wide`.
    pub priority: u8,
}

impl Column {
    pub fn definition(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.kind,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

pub const fn col(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority: 0,
    }
}

pub const fn wide(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column {
        priority: 1,
        ..col(name, kind, description)
    }
}

pub const NAME: Column = Column {
    format: "name",
    ..col(
        "Name",
        "string",
        "Name must be unique within a namespace. Cannot be updated.",
    )
};

pub const AGE: Column = col(
    "Age",
    "string",
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

pub const CREATED_AT: Column = col(
    "Created At",
    "date",
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

pub const CONTAINERS: Column = wide(
    "Containers",
    "string",
    "Names of each container in the template.",
);

pub const IMAGES: Column = wide(
    "Images",
    "string",
    "Images referenced by each container in the template.",
);

/// Builds the cells of one row from the object, at `now` (for ages).
pub type RowFn = fn(&Value, Timestamp) -> Vec<Value>;

/// The columns and row builder of one kind.
pub struct Printer {
    pub columns: &'static [Column],
    pub row: RowFn,
}

/// Kinds without a printer of their own get upstream's default: name and creation time.
static DEFAULT: Printer = Printer {
    columns: &[NAME, CREATED_AT],
    row: default_row,
};

fn default_row(obj: &Value, _now: Timestamp) -> Vec<Value> {
    vec![name(obj), created_at(obj)]
}

/// The printer for objects of `resource`.
pub fn for_resource(resource: &Resource) -> &'static Printer {
    let found = match resource.group {
        "" => core::printer(resource.kind).or_else(|| pods::printer(resource.kind)),
        "apps" | "batch" | "autoscaling" | "policy" => workloads::printer(resource.kind),
        _ => cluster::printer(resource.group, resource.kind)
            .or_else(|| extensions::printer(resource.group, resource.kind)),
    };
    found.unwrap_or(&DEFAULT)
}

// Reading fields. Absent or mistyped fields read as empty/zero: a printer never fails.

pub fn text<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

pub fn int(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

pub fn list<'a>(obj: &'a Value, pointer: &str) -> &'a [Value] {
    obj.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub fn has(obj: &Value, pointer: &str) -> bool {
    obj.pointer(pointer).is_some_and(|v| !v.is_null())
}

pub fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.to_string()
    }
}

pub fn name(obj: &Value) -> Value {
    Value::from(text(obj, "/metadata/name"))
}

pub fn age(obj: &Value, now: Timestamp) -> Value {
    Value::from(duration::since(
        text(obj, "/metadata/creationTimestamp"),
        now,
    ))
}

/// The age of an optional timestamp field; `<none>`-like callers check presence themselves.
pub fn since(obj: &Value, pointer: &str, now: Timestamp) -> String {
    duration::since(text(obj, pointer), now)
}

pub fn created_at(obj: &Value) -> Value {
    Value::from(text(obj, "/metadata/creationTimestamp"))
}

pub fn is_deleting(obj: &Value) -> bool {
    has(obj, "/metadata/deletionTimestamp")
}

/// `a=1,b=2`, sorted by key; `<none>` when empty (upstream's `labels.FormatLabels`).
pub fn format_labels(map: Option<&Value>) -> String {
    let Some(map) = map.and_then(Value::as_object) else {
        return "<none>".into();
    };
    let mut pairs: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    pairs.sort();
    if pairs.is_empty() {
        "<none>".into()
    } else {
        pairs.join(",")
    }
}

/// A `metav1.LabelSelector` written as a selector string (`app=web,tier in (a,b)`), requirements
/// sorted by key as upstream's selector does. An empty selector selects everything and prints as
/// `""`; `empty_as` lets callers say what they print instead.
pub fn format_selector(selector: Option<&Value>, empty_as: &str) -> String {
    let Some(selector) = selector.filter(|s| !s.is_null()) else {
        return "<none>".into();
    };
    let mut requirements: Vec<(String, String)> = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            requirements.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    for expr in list(selector, "/matchExpressions") {
        let key = text(expr, "/key");
        let mut values: Vec<&str> = list(expr, "/values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        values.sort();
        let rendered = match text(expr, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other} ({})", values.join(",")),
        };
        requirements.push((key.to_string(), rendered));
    }
    if requirements.is_empty() {
        return empty_as.to_string();
    }
    requirements.sort();
    requirements
        .into_iter()
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join(",")
}

/// The Containers and Images cells of a pod template's containers.
pub fn containers_and_images(pod_spec: Option<&Value>) -> (Value, Value) {
    let containers = pod_spec.map(|s| list(s, "/containers")).unwrap_or(&[]);
    let names: Vec<&str> = containers.iter().map(|c| text(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| text(c, "/image")).collect();
    (Value::from(names.join(",")), Value::from(images.join(",")))
}

/// Up to three entries then ` + N more...`; `<unset>` when there are none.
pub fn list_with_more(items: &[String], unset: &str) -> String {
    const MAX: usize = 3;
    if items.is_empty() {
        return unset.to_string();
    }
    let shown = items[..items.len().min(MAX)].join(",");
    if items.len() > MAX {
        format!("{shown} + {} more...", items.len() - MAX)
    } else {
        shown
    }
}

/// `True`/`False`, as upstream prints booleans in string cells.
pub fn yes_no(value: bool) -> &'static str {
    if value {
        "True"
    } else {
        "False"
    }
}

/// Ingress points of a load balancer status: IPs or hostnames, comma separated.
pub fn load_balancer_ingress(status: Option<&Value>) -> String {
    let ingress = status.map(|s| list(s, "/ingress")).unwrap_or(&[]);
    ingress
        .iter()
        .filter_map(|i| {
            let ip = text(i, "/ip");
            let host = text(i, "/hostname");
            match (ip.is_empty(), host.is_empty()) {
                (false, _) => Some(ip.to_string()),
                (true, false) => Some(host.to_string()),
                (true, true) => None,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
pub fn test_now() -> Timestamp {
    "2026-01-01T12:00:00Z".parse().expect("a valid timestamp")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::find;

    #[test]
    fn every_served_resource_has_a_printer_with_name_first_and_matching_cells() {
        let obj = json!({"metadata": {"name": "x", "creationTimestamp": "2026-01-01T11:00:00Z"}});
        for r in crate::api::resources::BUILTIN {
            let printer = for_resource(r);
            let cells = (printer.row)(&obj, test_now());
            assert_eq!(cells.len(), printer.columns.len(), "{}", r.kind);
            let name_at = printer.columns.iter().position(|c| c.format == "name");
            assert!(name_at.is_some(), "{} has no name column", r.kind);
            assert_eq!(cells[name_at.unwrap_or(0)], "x", "{}", r.kind);
        }
        let deployments = find("apps", "v1", "deployments").unwrap();
        assert!(!std::ptr::eq(for_resource(deployments), &DEFAULT));
    }

    #[test]
    fn selectors_and_labels_are_sorted_by_key() {
        let sel = json!({"matchLabels": {"b": "2", "a": "1"},
            "matchExpressions": [{"key": "c", "operator": "In", "values": ["y", "x"]},
                                 {"key": "d", "operator": "DoesNotExist"}]});
        assert_eq!(format_selector(Some(&sel), ""), "a=1,b=2,c in (x,y),!d");
        assert_eq!(format_selector(Some(&json!({})), "<none>"), "<none>");
        assert_eq!(format_labels(Some(&json!({"z": "1", "a": "2"}))), "a=2,z=1");
        assert_eq!(format_labels(None), "<none>");
    }

    #[test]
    fn long_lists_are_cut_after_three() {
        let items: Vec<String> = (1..=5).map(|i| format!("10.0.0.{i}")).collect();
        assert_eq!(
            list_with_more(&items, "<unset>"),
            "10.0.0.1,10.0.0.2,10.0.0.3 + 2 more..."
        );
        assert_eq!(list_with_more(&[], "<unset>"), "<unset>");
    }
}
