//! Per-kind policy: typed decoding (which also prunes unknown fields, as upstream does), name rules,
//! what create resets, and small kind-specific fix-ups.

use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::api::meta;
use crate::api::resources::Resource;
use crate::api::{ApiError, ApiResult, Cause};

/// Decodes `body` as the typed object of `resource` and encodes it again. This rejects wrong shapes
/// with a 400 and drops fields the kind does not have, like the upstream decoder.
pub fn normalize(resource: &Resource, body: Value) -> ApiResult<Value> {
    use k8s_openapi::api::*;
    // Served by conversion, not stored: it has a shape of its own (server-side apply through
    // it compares objects in that shape).
    if (resource.group, resource.version, resource.kind)
        == ("autoscaling", "v1", "HorizontalPodAutoscaler")
    {
        return roundtrip::<autoscaling::v1::HorizontalPodAutoscaler>(resource, body);
    }
    macro_rules! typed {
        ($($group:literal $kind:literal => $ty:ty),* $(,)?) => {
            match (resource.group, resource.kind) {
                $(($group, $kind) => roundtrip::<$ty>(resource, body),)*
                _ => crate::crd::hooks::normalize(resource, body),
            }
        };
    }
    typed! {
        "" "Namespace" => core::v1::Namespace,
        "" "Pod" => core::v1::Pod,
        "" "Node" => core::v1::Node,
        "" "Service" => core::v1::Service,
        "" "Endpoints" => core::v1::Endpoints,
        "" "ConfigMap" => core::v1::ConfigMap,
        "" "Secret" => core::v1::Secret,
        "" "ServiceAccount" => core::v1::ServiceAccount,
        "" "Event" => core::v1::Event,
        "" "LimitRange" => core::v1::LimitRange,
        "" "ResourceQuota" => core::v1::ResourceQuota,
        "" "PersistentVolume" => core::v1::PersistentVolume,
        "" "PersistentVolumeClaim" => core::v1::PersistentVolumeClaim,
        "" "ReplicationController" => core::v1::ReplicationController,
        "apps" "Deployment" => apps::v1::Deployment,
        "apps" "ReplicaSet" => apps::v1::ReplicaSet,
        "apps" "StatefulSet" => apps::v1::StatefulSet,
        "apps" "DaemonSet" => apps::v1::DaemonSet,
        "apps" "ControllerRevision" => apps::v1::ControllerRevision,
        "batch" "Job" => batch::v1::Job,
        "batch" "CronJob" => batch::v1::CronJob,
        "autoscaling" "HorizontalPodAutoscaler" => autoscaling::v2::HorizontalPodAutoscaler,
        "coordination.k8s.io" "Lease" => coordination::v1::Lease,
        "discovery.k8s.io" "EndpointSlice" => discovery::v1::EndpointSlice,
        "events.k8s.io" "Event" => events::v1::Event,
        "networking.k8s.io" "Ingress" => networking::v1::Ingress,
        "networking.k8s.io" "IngressClass" => networking::v1::IngressClass,
        "networking.k8s.io" "NetworkPolicy" => networking::v1::NetworkPolicy,
        "policy" "PodDisruptionBudget" => policy::v1::PodDisruptionBudget,
        "rbac.authorization.k8s.io" "ClusterRole" => rbac::v1::ClusterRole,
        "rbac.authorization.k8s.io" "ClusterRoleBinding" => rbac::v1::ClusterRoleBinding,
        "rbac.authorization.k8s.io" "Role" => rbac::v1::Role,
        "rbac.authorization.k8s.io" "RoleBinding" => rbac::v1::RoleBinding,
        "scheduling.k8s.io" "PriorityClass" => scheduling::v1::PriorityClass,
        "storage.k8s.io" "StorageClass" => storage::v1::StorageClass,
        "storage.k8s.io" "CSIDriver" => storage::v1::CSIDriver,
        "storage.k8s.io" "CSINode" => storage::v1::CSINode,
        "storage.k8s.io" "VolumeAttachment" => storage::v1::VolumeAttachment,
        "admissionregistration.k8s.io" "MutatingWebhookConfiguration" => admissionregistration::v1::MutatingWebhookConfiguration,
        "admissionregistration.k8s.io" "ValidatingWebhookConfiguration" => admissionregistration::v1::ValidatingWebhookConfiguration,
        "admissionregistration.k8s.io" "ValidatingAdmissionPolicy" => admissionregistration::v1::ValidatingAdmissionPolicy,
        "admissionregistration.k8s.io" "ValidatingAdmissionPolicyBinding" => admissionregistration::v1::ValidatingAdmissionPolicyBinding,
        "apiregistration.k8s.io" "APIService" =>
            k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService,
        "node.k8s.io" "RuntimeClass" => node::v1::RuntimeClass,
        "certificates.k8s.io" "CertificateSigningRequest" => certificates::v1::CertificateSigningRequest,
        "apiextensions.k8s.io" "CustomResourceDefinition" =>
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    }
}

fn roundtrip<T: DeserializeOwned + Serialize>(
    resource: &Resource,
    body: Value,
) -> ApiResult<Value> {
    let typed: T = serde_json::from_value(body).map_err(|e| {
        ApiError::bad_request(format!("error decoding {} body: {e}", resource.kind))
    })?;
    serde_json::to_value(&typed)
        .map_err(|e| ApiError::internal(format!("encoding {}: {e}", resource.kind)))
}

/// Paths of fields in `body` the kind does not have (what the typed decoder would drop), in the
/// form upstream reports them (`spec.foo`, `spec.containers[0].bar`).
pub fn unknown_fields(resource: &Resource, body: &Value) -> ApiResult<Vec<String>> {
    let known = normalize(resource, body.clone())?;
    Ok(unknown_paths(body, &known))
}

/// Paths of fields in `body` that `known` (its decoded form) does not have.
pub fn unknown_paths(body: &Value, known: &Value) -> Vec<String> {
    let mut found = Vec::new();
    collect_unknown(body, known, "", &mut found);
    found
}

fn collect_unknown(input: &Value, known: &Value, path: &str, found: &mut Vec<String>) {
    match (input, known) {
        (Value::Object(input), Value::Object(known)) => {
            // Built only for a field reported or descended into: most are scalars that are known.
            let child = |key: &str| match path.is_empty() {
                true => key.to_string(),
                false => format!("{path}.{key}"),
            };
            for (key, value) in input {
                match known.get(key) {
                    Some(k) if value.is_object() || value.is_array() => {
                        collect_unknown(value, k, &child(key), found)
                    }
                    Some(_) => {}
                    // A null is "unset": never an unknown field.
                    None if value.is_null() => {}
                    None => found.push(child(key)),
                }
            }
        }
        (Value::Array(input), Value::Array(known)) => {
            for (i, (value, k)) in input.iter().zip(known).enumerate() {
                if value.is_object() || value.is_array() {
                    collect_unknown(value, k, &format!("{path}[{i}]"), found);
                }
            }
        }
        _ => {}
    }
}

/// Checks `apiVersion` and `kind` of a request body against the URL's resource, filling them in
/// when missing (the URL says what they must be).
pub fn check_type_meta(resource: &Resource, body: &mut Value) -> ApiResult<()> {
    let Some(obj) = body.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let expected_version = resource.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("apiVersion".into(), json!(expected_version));
        }
        Some(v) if v == expected_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({expected_version})"
            )))
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("kind".into(), json!(resource.kind));
        }
        Some(k) if k == resource.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                resource.kind
            )))
        }
    }
    Ok(())
}

/// The name rule of a kind: most kinds take a DNS subdomain, a few a DNS label.
pub fn validate_name(resource: &Resource, name: &str, causes: &mut Vec<Cause>) {
    let problem = match resource.kind {
        "Namespace" | "Service" => meta::check_dns1123_label(name),
        // Roles and bindings allow any path segment upstream.
        "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" => {
            meta::check_path_segment(name)
        }
        _ => meta::check_dns1123_subdomain(name),
    };
    if let Some(problem) = problem {
        causes.push(Cause::invalid("metadata.name", name, &problem));
    }
}

/// Whether the kind keeps `metadata.generation` (bumped on spec changes), as its upstream strategy does.
pub fn tracks_generation(resource: &Resource) -> bool {
    crate::crd::hooks::tracks_generation(resource)
        || matches!(
            resource.kind,
            "Deployment"
                | "ReplicaSet"
                | "StatefulSet"
                | "DaemonSet"
                | "ReplicationController"
                | "Job"
                | "CronJob"
                | "Pod"
                | "PodDisruptionBudget"
                | "Ingress"
                | "NetworkPolicy"
                | "EndpointSlice"
                | "ValidatingAdmissionPolicy"
        )
}

/// Kind-specific changes on every write: Secret `stringData` folds into `data`.
pub fn prepare_write(resource: &Resource, obj: &mut Value) {
    crate::crd::hooks::prepare_write(resource, obj);
    if resource.group.is_empty() && resource.kind == "Secret" {
        if obj
            .get("type")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            obj["type"] = json!("Opaque");
        }
        if let Some(Value::Object(string_data)) =
            obj.as_object_mut().and_then(|o| o.remove("stringData"))
        {
            if !obj.get("data").is_some_and(Value::is_object) {
                obj["data"] = json!({});
            }
            for (key, value) in string_data {
                let text = value.as_str().unwrap_or_default();
                obj["data"][key] = json!(base64::engine::general_purpose::STANDARD.encode(text));
            }
        }
    }
}

/// What a create resets: the status of kinds whose status is written by controllers, and the
/// fields upstream initialises.
pub fn prepare_create(resource: &Resource, obj: &mut Value) {
    match (resource.group, resource.kind) {
        ("", "Namespace") => {
            obj["status"] = json!({"phase": "Active"});
            let finalizers = obj.pointer("/spec/finalizers").cloned();
            if finalizers.is_none() {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
            }
        }
        ("", "Pod") => {
            obj["status"] = json!({"phase": "Pending", "qosClass": pod_qos_class(obj)});
        }
        ("", "Node") | ("", "Event") | ("events.k8s.io", "Event") => {}
        ("", "Service") => {
            obj["status"] = json!({"loadBalancer": {}});
        }
        ("", "PersistentVolumeClaim") | ("", "PersistentVolume") => {
            obj["status"] = json!({"phase": "Pending"});
        }
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            super::certificates::prepare_create(obj, crate::admission::current_user().as_ref());
        }
        _ if resource.has_status => {
            if let Some(o) = obj.as_object_mut() {
                o.remove("status");
            }
        }
        _ => {}
    }
}

/// Pod QoS class from requests and limits, as upstream computes it.
fn pod_qos_class(pod: &Value) -> &'static str {
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(
            pod.pointer("/spec/initContainers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        );
    let mut any_set = false;
    let mut all_guaranteed = true;
    for c in containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        if requests.is_some_and(|r| !r.is_empty()) || limits.is_some_and(|l| !l.is_empty()) {
            any_set = true;
        }
        for res in ["cpu", "memory"] {
            let limit = limits.and_then(|l| l.get(res));
            let request = requests.and_then(|r| r.get(res)).or(limit);
            if limit.is_none() || request != limit {
                all_guaranteed = false;
            }
        }
    }
    match (any_set, all_guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::find;

    #[test]
    fn normalize_drops_unknown_fields_and_keeps_known_ones() {
        let cm = find("", "v1", "configmaps").unwrap();
        let out = normalize(
            cm,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}, "bogus": 1}),
        )
        .unwrap();
        assert_eq!(out["data"]["k"], "v");
        assert!(out.get("bogus").is_none());
    }

    #[test]
    fn normalize_rejects_wrong_shapes_with_400() {
        let cm = find("", "v1", "configmaps").unwrap();
        let err = normalize(
            cm,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "data": "not-a-map"}),
        )
        .unwrap_err();
        assert_eq!(err.code, 400);
    }

    #[test]
    fn unknown_fields_are_reported_with_their_paths() {
        let deploy = find("apps", "v1", "deployments").unwrap();
        let body = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "labels": {"any": "key"}},
            "spec": {"replicas": 1, "bogus": true, "paused": null,
                     "selector": {"matchLabels": {"a": "b"}},
                     "template": {"spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicyy": "Always"}]}}}
        });
        let unknown = unknown_fields(deploy, &body).unwrap();
        assert_eq!(
            unknown,
            vec![
                "spec.bogus",
                "spec.template.spec.containers[0].imagePullPolicyy"
            ]
        );
    }

    #[test]
    fn type_meta_mismatch_is_a_clear_400() {
        let cm = find("", "v1", "configmaps").unwrap();
        let mut body = json!({"apiVersion": "v1", "kind": "Secret"});
        let err = check_type_meta(cm, &mut body).unwrap_err();
        assert!(err.message.contains("Secret"), "{}", err.message);
        let mut body = json!({});
        check_type_meta(cm, &mut body).unwrap();
        assert_eq!(body["kind"], "ConfigMap");
    }

    #[test]
    fn secret_string_data_folds_into_base64_data() {
        let secret = find("", "v1", "secrets").unwrap();
        let mut obj = json!({"stringData": {"password": "hunter2"}, "data": {"a": "Yg=="}});
        prepare_write(secret, &mut obj);
        assert_eq!(obj["data"]["password"], "aHVudGVyMg==");
        assert_eq!(obj["data"]["a"], "Yg==");
        assert_eq!(obj["type"], "Opaque", "a Secret without a type is Opaque");
        assert!(obj.get("stringData").is_none());
    }

    #[test]
    fn qos_class_follows_requests_and_limits() {
        let best = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(pod_qos_class(&best), "BestEffort");
        let guaranteed = json!({"spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(pod_qos_class(&guaranteed), "Guaranteed");
        let burstable = json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]}});
        assert_eq!(pod_qos_class(&burstable), "Burstable");
    }
}
