//! Admission: an Ingress created without a class gets the cluster's default IngressClass, as
//! upstream's `DefaultIngressClass` admission plugin does, so controllers that only serve their
//! own class (berth's included) pick it up.

use serde_json::{json, Value};

use super::generic::{decode, ListOptions, Registry};
use crate::api::resources::{self, Resource};
use crate::api::ApiResult;

/// The annotation that marks an IngressClass as the default one.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The deprecated annotation that still names a class; when present the class is left alone.
const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// Sets `spec.ingressClassName` of a new Ingress to the default class when it names none.
pub fn admit(registry: &Registry, r: &Resource, obj: &mut Value) -> ApiResult<()> {
    if r.group != "networking.k8s.io" || r.kind != "Ingress" || names_a_class(obj) {
        return Ok(());
    }
    let Some(classes) = resources::find("networking.k8s.io", "v1", "ingressclasses") else {
        return Ok(());
    };
    let page = registry.list(classes, None, &ListOptions::default())?;
    let mut listed = Vec::with_capacity(page.items.len());
    for raw in &page.items {
        listed.push(decode(raw)?);
    }
    if let Some(name) = default_class(&listed) {
        if let Some(object) = obj.as_object_mut() {
            let spec = object.entry("spec").or_insert_with(|| json!({}));
            if let Some(spec) = spec.as_object_mut() {
                spec.insert("ingressClassName".into(), json!(name));
            }
        }
    }
    Ok(())
}

fn names_a_class(ingress: &Value) -> bool {
    ingress
        .pointer("/spec/ingressClassName")
        .and_then(Value::as_str)
        .is_some()
        || ingress
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .is_some_and(|a| a.contains_key(LEGACY_CLASS_ANNOTATION))
}

/// The default class among `classes`: when several claim it, the newest wins (then the
/// smallest name), as upstream decides.
fn default_class(classes: &[Value]) -> Option<String> {
    classes
        .iter()
        .filter(|c| {
            c.pointer("/metadata/annotations")
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .and_then(Value::as_str)
                == Some("true")
        })
        .filter_map(|c| {
            let name = c.pointer("/metadata/name")?.as_str()?;
            let created = c
                .pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
                .unwrap_or("");
            Some((created, name))
        })
        // RFC 3339 timestamps in UTC with the same precision sort as text.
        .max_by(|a, b| a.0.cmp(b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, name)| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, created: &str, default: bool) -> Value {
        let mut c = json!({"metadata": {"name": name, "creationTimestamp": created}});
        if default {
            c["metadata"]["annotations"] = json!({DEFAULT_CLASS_ANNOTATION: "true"});
        }
        c
    }

    #[test]
    fn no_default_class_is_chosen_when_none_is_marked() {
        let classes = [class("a", "2026-01-01T00:00:00Z", false)];
        assert_eq!(default_class(&classes), None);
    }

    #[test]
    fn the_newest_of_several_default_classes_wins() {
        let classes = [
            class("old", "2026-01-01T00:00:00Z", true),
            class("new", "2026-02-01T00:00:00Z", true),
            class("plain", "2026-03-01T00:00:00Z", false),
        ];
        assert_eq!(default_class(&classes).as_deref(), Some("new"));
    }

    #[test]
    fn an_ingress_with_a_class_or_the_legacy_annotation_is_left_alone() {
        assert!(names_a_class(&json!({"spec": {"ingressClassName": "x"}})));
        assert!(names_a_class(
            &json!({"metadata": {"annotations": {LEGACY_CLASS_ANNOTATION: "nginx"}}})
        ));
        assert!(!names_a_class(&json!({"spec": {}})));
    }
}
