//! Validation of the workload kinds, as upstream's `pkg/apis/*/validation`: what a pod spec needs,
//! that a controller's selector selects its own template, and which fields never change. Every
//! problem is a field cause with upstream's path and message; the caller turns them into a 422.
//!
//! Runs after defaulting, so "required" means "required even after defaults".

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::api::resources::Resource;
use crate::api::selectors::LabelSelector;
use crate::api::Cause;
use crate::api::{go_syntax, meta};

/// Problems with `obj` on its own (create and update).
pub fn validate(resource: &Resource, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    match (resource.group, resource.kind) {
        ("", "Pod") => pod_spec(obj.get("spec"), "spec", &mut causes),
        ("", "ReplicationController") => {
            template(obj, "spec.template", Some(&["Always"]), &mut causes);
            if let Some(selector) = obj.pointer("/spec/selector").and_then(Value::as_object) {
                let labels = template_labels(obj.pointer("/spec/template"));
                let matches = selector
                    .iter()
                    .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
                if !matches {
                    causes.push(selector_mismatch("spec.template", &labels));
                }
            }
        }
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet") => {
            controller(obj, &mut causes);
            template(obj, "spec.template", Some(&["Always"]), &mut causes);
        }
        ("batch", "Job") => {
            controller(obj, &mut causes);
            template(
                obj,
                "spec.template",
                Some(&["OnFailure", "Never"]),
                &mut causes,
            );
        }
        ("batch", "CronJob") => {
            if obj
                .pointer("/spec/schedule")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                causes.push(Cause::required("spec.schedule"));
            }
            super::cronjob_time_zone::validate(obj, &mut causes);
            template(
                obj,
                "spec.jobTemplate.spec.template",
                Some(&["OnFailure", "Never"]),
                &mut causes,
            );
        }
        ("networking.k8s.io", "NetworkPolicy") => super::network_policy::validate(obj, &mut causes),
        ("", "Endpoints") => super::endpoints::validate_endpoints(obj, &mut causes),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy") => {
            crate::admission::policy::validation::expression_causes(obj, &mut causes)
        }
        _ => {}
    }
    causes
}

/// Problems only a new object can have: rules that spare objects stored before them, and rules
/// that depend on the resource the client wrote to (`requested`: `resource` or a view of it).
pub fn validate_create(resource: &Resource, requested: &Resource, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    match (resource.group, resource.kind) {
        ("batch", "CronJob") => {
            super::cronjob_time_zone::validate_schedule_zone(obj, None, &mut causes);
        }
        ("", "Event") => causes.extend(super::events::validate_create(requested, obj)),
        ("discovery.k8s.io", "EndpointSlice") => {
            super::endpoints::validate_endpoint_slice(obj, false, &mut causes)
        }
        _ => {}
    }
    causes
}

/// Problems with changing `old` into `new` through `requested` (`resource` or a view of it):
/// immutable fields.
pub fn validate_update(
    resource: &Resource,
    requested: &Resource,
    old: &Value,
    new: &Value,
) -> Vec<Cause> {
    let mut causes = Vec::new();
    match (resource.group, resource.kind) {
        ("", "Event") => causes.extend(super::events::validate_update(requested, old, new)),
        ("batch", "CronJob") => {
            super::cronjob_time_zone::validate_schedule_zone(new, Some(old), &mut causes);
        }
        ("", "Pod") => pod_update(old, new, &mut causes),
        ("discovery.k8s.io", "EndpointSlice") => {
            super::endpoints::validate_endpoint_slice(new, true, &mut causes);
            immutable(old, new, "addressType", json_value, &mut causes);
        }
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet") => {
            immutable_selector(old, new, &mut causes);
        }
        ("batch", "Job") => {
            immutable_selector(old, new, &mut causes);
            // A suspended job's template may change (upstream allows scheduling directives; we
            // allow the whole template while suspended, which covers them).
            let suspended = old.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
            if !suspended {
                immutable(old, new, "spec.template", json_value, &mut causes);
            }
            immutable(old, new, "spec.completionMode", json_value, &mut causes);
        }
        _ => {}
    }
    causes
}

fn pointer_of(path: &str) -> String {
    format!("/{}", path.replace('.', "/"))
}

/// Refuses a change of the field at `path`, showing the new value as upstream prints it.
fn immutable(
    old: &Value,
    new: &Value,
    path: &str,
    shown: fn(Option<&Value>) -> String,
    causes: &mut Vec<Cause>,
) {
    let pointer = pointer_of(path);
    let after = new.pointer(&pointer);
    if old.pointer(&pointer) != after {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {}: field is immutable", shown(after)),
            field: path.into(),
        });
    }
}

fn immutable_selector(old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    immutable(old, new, "spec.selector", go_syntax::label_selector, causes);
}

/// A string quoted as Go quotes it, any other value as compact JSON: for the pod template, whose
/// Go-style form (hundreds of zero-valued fields) upstream prints in full, JSON is the readable
/// stand-in.
fn json_value(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "null".into(),
        Some(Value::String(s)) => go_syntax::quoted(s),
        Some(other) => other.to_string(),
    }
}

/// Deployments, ReplicaSets, DaemonSets, StatefulSets and Jobs: a non-empty selector that
/// selects the pod template's labels.
fn controller(obj: &Value, causes: &mut Vec<Cause>) {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let Some(selector) = obj.pointer("/spec/selector").filter(|s| !s.is_null()) else {
        causes.push(Cause::required("spec.selector"));
        return;
    };
    let typed = serde_json::from_value(selector.clone()).map_err(|e| e.to_string());
    let parsed =
        typed.and_then(|s| LabelSelector::from_label_selector(&s).map_err(|e| e.to_string()));
    let parsed = match parsed {
        Ok(s) => s,
        Err(e) => {
            causes.push(Cause::invalid("spec.selector", &selector.to_string(), &e));
            return;
        }
    };
    if parsed.is_empty() {
        causes.push(Cause::invalid(
            "spec.selector",
            &selector.to_string(),
            &format!("empty selector is invalid for {}", kind.to_lowercase()),
        ));
        return;
    }
    let labels = template_labels(obj.pointer("/spec/template"));
    if !parsed.matches(&labels) {
        causes.push(selector_mismatch("spec.template", &labels));
    }
}

fn template_labels(template: Option<&Value>) -> BTreeMap<String, String> {
    template
        .and_then(|t| t.pointer("/metadata/labels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Upstream's message, with the labels printed as Go prints a `map[string]string`.
fn selector_mismatch(template_path: &str, labels: &BTreeMap<String, String>) -> Cause {
    let quoted = go_syntax::quoted;
    let pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{}:{}", quoted(k), quoted(v)))
        .collect();
    let shown = if labels.is_empty() {
        "map[string]string(nil)".to_string()
    } else {
        format!("map[string]string{{{}}}", pairs.join(", "))
    };
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {shown}: `selector` does not match template `labels`"),
        field: format!("{template_path}.metadata.labels"),
    }
}

/// A pod template: its spec is a pod spec whose restart policy is one of `allowed`.
fn template(obj: &Value, path: &str, allowed_restart: Option<&[&str]>, causes: &mut Vec<Cause>) {
    let Some(template) = obj.pointer(&pointer_of(path)).filter(|t| !t.is_null()) else {
        causes.push(Cause::required(path));
        return;
    };
    let spec_path = format!("{path}.spec");
    pod_spec(template.get("spec"), &spec_path, causes);
    if let Some(allowed) = allowed_restart {
        let policy = template
            .pointer("/spec/restartPolicy")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !allowed.contains(&policy) {
            causes.push(not_supported(
                &format!("{spec_path}.restartPolicy"),
                policy,
                allowed,
            ));
        }
    }
}

pub(super) fn not_supported(field: &str, value: &str, supported: &[&str]) -> Cause {
    let list: Vec<String> = supported.iter().map(|s| go_syntax::quoted(s)).collect();
    Cause {
        reason: "FieldValueNotSupported".into(),
        message: format!(
            "Unsupported value: {}: supported values: {}",
            go_syntax::quoted(value),
            list.join(", ")
        ),
        field: field.into(),
    }
}

pub(super) fn duplicate(field: &str, value: &str) -> Cause {
    Cause {
        reason: "FieldValueDuplicate".into(),
        message: format!("Duplicate value: {}", go_syntax::quoted(value)),
        field: field.into(),
    }
}

pub(super) fn invalid_number(field: &str, value: i64, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {value}: {detail}"),
        field: field.into(),
    }
}

/// What a pod spec needs: containers with unique DNS-label names and images, valid ports and
/// resource quantities, a known restart policy.
fn pod_spec(spec: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let Some(spec) = spec.filter(|s| s.is_object()) else {
        causes.push(Cause::required(&format!("{path}.containers")));
        return;
    };
    let containers = spec
        .get("containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if containers.is_empty() {
        causes.push(Cause::required(&format!("{path}.containers")));
    }
    let mut names = BTreeSet::new();
    for (list, key) in [
        (spec.get("initContainers"), "initContainers"),
        (spec.get("containers"), "containers"),
    ] {
        for (i, c) in list
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            container(c, &format!("{path}.{key}[{i}]"), &mut names, causes);
        }
    }
    super::seccomp_profile::validate(
        spec.get("securityContext"),
        &format!("{path}.securityContext"),
        causes,
    );
    for (i, c) in spec
        .get("ephemeralContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        super::seccomp_profile::validate(
            c.get("securityContext"),
            &format!("{path}.ephemeralContainers[{i}].securityContext"),
            causes,
        );
    }
    if let Some(policy) = spec.get("restartPolicy").and_then(Value::as_str) {
        if !["Always", "OnFailure", "Never"].contains(&policy) {
            causes.push(not_supported(
                &format!("{path}.restartPolicy"),
                policy,
                &["Always", "OnFailure", "Never"],
            ));
        }
    }
    if let Some(policy) = spec.get("dnsPolicy").and_then(Value::as_str) {
        let supported = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
        if !supported.contains(&policy) {
            causes.push(not_supported(
                &format!("{path}.dnsPolicy"),
                policy,
                &supported,
            ));
        }
    }
    let mut volume_names = BTreeSet::new();
    for (i, v) in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let field = format!("{path}.volumes[{i}].name");
        let name = v.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            causes.push(Cause::required(&field));
        } else if let Some(problem) = meta::check_dns1123_label(name) {
            causes.push(Cause::invalid(&field, name, &problem));
        } else if !volume_names.insert(name.to_string()) {
            causes.push(duplicate(&field, name));
        }
    }
}

fn container(c: &Value, path: &str, names: &mut BTreeSet<String>, causes: &mut Vec<Cause>) {
    let name = c.get("name").and_then(Value::as_str).unwrap_or("");
    let name_field = format!("{path}.name");
    if name.is_empty() {
        causes.push(Cause::required(&name_field));
    } else if let Some(problem) = meta::check_dns1123_label(name) {
        causes.push(Cause::invalid(&name_field, name, &problem));
    } else if !names.insert(name.to_string()) {
        causes.push(duplicate(&name_field, name));
    }
    if c.get("image")
        .and_then(Value::as_str)
        .is_none_or(|i| i.trim().is_empty())
    {
        causes.push(Cause::required(&format!("{path}.image")));
    }
    super::seccomp_profile::validate(
        c.get("securityContext"),
        &format!("{path}.securityContext"),
        causes,
    );
    for (i, port) in c
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let port_path = format!("{path}.ports[{i}]");
        for key in ["containerPort", "hostPort"] {
            match port.get(key).and_then(Value::as_i64) {
                None if key == "containerPort" => {
                    causes.push(Cause::required(&format!("{port_path}.{key}")))
                }
                Some(0) if key == "hostPort" => {}
                Some(n) if !(1..=65535).contains(&n) => causes.push(invalid_number(
                    &format!("{port_path}.{key}"),
                    n,
                    "must be between 1 and 65535, inclusive",
                )),
                _ => {}
            }
        }
        if let Some(protocol) = port.get("protocol").and_then(Value::as_str) {
            if !["TCP", "UDP", "SCTP"].contains(&protocol) {
                causes.push(not_supported(
                    &format!("{port_path}.protocol"),
                    protocol,
                    &["SCTP", "TCP", "UDP"],
                ));
            }
        }
    }
    for part in ["limits", "requests"] {
        for (resource, quantity) in c
            .pointer(&format!("/resources/{part}"))
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let text = quantity
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| quantity.to_string());
            if !is_quantity(&text) {
                causes.push(Cause::invalid(
                    &format!("{path}.resources.{part}[{resource}]"),
                    &text,
                    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                ));
            }
        }
    }
}

/// A Kubernetes quantity: a decimal number and an optional binary/decimal suffix or exponent.
pub fn is_quantity(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let number_len = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_len);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return false;
    }
    const SUFFIXES: &[&str] = &[
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E",
    ];
    if SUFFIXES.contains(&suffix) {
        return true;
    }
    // Exponent form: 1e3, 5E-2.
    match suffix.strip_prefix(['e', 'E']) {
        Some(exp) => {
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

/// A pod's spec is fixed once created, except images, activeDeadlineSeconds, added tolerations,
/// the scheduler's binding and removed scheduling gates.
fn pod_update(old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    let (Some(old_spec), Some(new_spec)) = (old.get("spec"), new.get("spec")) else {
        return;
    };
    let mut munged = new_spec.clone();
    for key in ["containers", "initContainers"] {
        let old_list = old_spec.get(key).and_then(Value::as_array);
        if let (Some(list), Some(old_list)) =
            (munged.get_mut(key).and_then(Value::as_array_mut), old_list)
        {
            if list.len() == old_list.len() {
                for (c, old_c) in list.iter_mut().zip(old_list) {
                    if let Some(image) = old_c.get("image") {
                        c["image"] = image.clone();
                    }
                }
            }
        }
    }
    for key in ["activeDeadlineSeconds", "schedulingGates"] {
        copy_key(old_spec, &mut munged, key);
    }
    let old_node = old_spec
        .get("nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if old_node.is_empty() {
        copy_key(old_spec, &mut munged, "nodeName");
    }
    let old_tolerations = old_spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let new_tolerations = new_spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if old_tolerations.iter().all(|t| new_tolerations.contains(t)) {
        copy_key(old_spec, &mut munged, "tolerations");
    }
    if &munged != old_spec {
        causes.push(Cause::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
}

fn copy_key(from: &Value, to: &mut Value, key: &str) {
    match from.get(key) {
        Some(v) => to[key] = v.clone(),
        None => {
            if let Some(o) = to.as_object_mut() {
                o.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::find;
    use serde_json::json;

    fn deployment(selector: Value, labels: Value) -> Value {
        json!({"kind": "Deployment", "metadata": {"name": "d"}, "spec": {
            "selector": selector,
            "template": {"metadata": {"labels": labels}, "spec": {"restartPolicy": "Always",
                "containers": [{"name": "c", "image": "nginx"}]}}}})
    }

    fn deployments() -> &'static Resource {
        find("apps", "v1", "deployments").unwrap()
    }

    #[test]
    fn a_selector_that_does_not_match_the_template_is_refused_with_upstreams_message() {
        let d = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "b"}));
        let causes = validate(deployments(), &d);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.template.metadata.labels");
        assert_eq!(
            causes[0].message,
            "Invalid value: map[string]string{\"app\":\"b\"}: `selector` does not match template `labels`"
        );
    }

    #[test]
    fn a_matching_deployment_is_valid_and_a_missing_or_empty_selector_is_not() {
        let ok = deployment(
            json!({"matchLabels": {"app": "a"}}),
            json!({"app": "a", "x": "y"}),
        );
        assert!(validate(deployments(), &ok).is_empty());
        let mut missing = ok.clone();
        missing["spec"].as_object_mut().unwrap().remove("selector");
        assert_eq!(validate(deployments(), &missing)[0].field, "spec.selector");
        let empty = deployment(json!({}), json!({"app": "a"}));
        let causes = validate(deployments(), &empty);
        assert!(causes[0]
            .message
            .contains("empty selector is invalid for deployment"));
    }

    #[test]
    fn containers_need_unique_dns_label_names_images_and_valid_ports() {
        let pod = json!({"spec": {"restartPolicy": "Always", "containers": [
            {"name": "c", "image": "x", "ports": [{"containerPort": 70000}]},
            {"name": "c", "image": ""},
            {"name": "Bad_Name", "image": "x"}]}});
        let causes = validate(find("", "v1", "pods").unwrap(), &pod);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert!(
            fields.contains(&"spec.containers[0].ports[0].containerPort"),
            "{fields:?}"
        );
        assert!(fields.contains(&"spec.containers[1].name"), "{fields:?}");
        assert!(fields.contains(&"spec.containers[1].image"), "{fields:?}");
        assert!(fields.contains(&"spec.containers[2].name"), "{fields:?}");
        let dup = causes
            .iter()
            .find(|c| c.field == "spec.containers[1].name")
            .unwrap();
        assert_eq!(dup.message, "Duplicate value: \"c\"");
    }

    #[test]
    fn a_pod_without_containers_is_refused() {
        let causes = validate(find("", "v1", "pods").unwrap(), &json!({"spec": {}}));
        assert_eq!(causes[0].field, "spec.containers");
        assert_eq!(causes[0].message, "Required value");
    }

    #[test]
    fn resource_quantities_must_parse() {
        for good in ["1", "500m", "64Mi", "1.5Gi", "1e3", "0.1", "2k"] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in ["", "abc", "1.2.3", "12MB", "Mi", "1e"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn workload_templates_must_restart_always_and_job_templates_must_not() {
        let mut d = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
        d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        let causes = validate(deployments(), &d);
        assert_eq!(causes[0].field, "spec.template.spec.restartPolicy");
        assert_eq!(
            causes[0].message,
            "Unsupported value: \"Never\": supported values: \"Always\""
        );
        let job = json!({"kind": "Job", "spec": {"selector": {"matchLabels": {"j": "1"}},
            "template": {"metadata": {"labels": {"j": "1"}}, "spec": {"restartPolicy": "Always",
            "containers": [{"name": "c", "image": "x"}]}}}});
        let causes = validate(find("batch", "v1", "jobs").unwrap(), &job);
        assert_eq!(
            causes[0].message,
            "Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
        );
    }

    #[test]
    fn selectors_are_immutable_on_update() {
        let old = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
        let new = deployment(json!({"matchLabels": {"app": "b"}}), json!({"app": "b"}));
        let causes = validate_update(deployments(), deployments(), &old, &new);
        assert_eq!(causes[0].field, "spec.selector");
        assert_eq!(
            causes[0].message,
            r#"Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app":"b"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"#
        );
        assert!(validate_update(deployments(), deployments(), &old, &old).is_empty());
    }

    #[test]
    fn pod_updates_may_change_images_binding_and_add_tolerations_only() {
        let pods = find("", "v1", "pods").unwrap();
        let old = json!({"spec": {"containers": [{"name": "c", "image": "a"}], "tolerations": [{"key": "k", "operator": "Exists"}]}});
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("b");
        new["spec"]["nodeName"] = json!("node1");
        new["spec"]["tolerations"]
            .as_array_mut()
            .unwrap()
            .push(json!({"key": "other", "operator": "Exists"}));
        assert!(validate_update(pods, pods, &old, &new).is_empty());
        let mut changed = old.clone();
        changed["spec"]["containers"][0]["name"] = json!("renamed");
        let causes = validate_update(pods, pods, &old, &changed);
        assert_eq!(causes[0].field, "spec");
        assert!(causes[0]
            .message
            .starts_with("Forbidden: pod updates may not change fields"));
        let mut removed = old.clone();
        removed["spec"]["tolerations"] = json!([]);
        assert_eq!(validate_update(pods, pods, &old, &removed).len(), 1);
    }
}
