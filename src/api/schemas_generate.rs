//! The raw JSON schemas of the served kinds, as k8s-openapi's `schemars` implementations give
//! them. Not part of the binary: that code (one `json!` builder per type, every description
//! twice) weighed megabytes, so the binary embeds this output, compressed, instead
//! (`schema_definitions.json.zst`). Compiled by `examples/gen_schema_definitions.rs`, which
//! writes that file, and by the test that checks the file is current; both have k8s-openapi's
//! `schemars` feature through the dev-dependencies.

use k8s_openapi::api::{
    admissionregistration, apps, autoscaling, batch, certificates, coordination, core, discovery,
    events, networking, node, policy, rbac, scheduling, storage,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::schemars::generate::{SchemaGenerator, SchemaSettings};
use k8s_openapi::schemars::JsonSchema;
use serde_json::{json, Map, Value};

/// `{"kinds": [{"apiVersion", "kind", "definition"}...], "definitions": {name: schema...}}`:
/// every served kind's root definition name and every definition they reach, with references
/// reading `#/definitions/<name>`.
pub fn raw_definitions() -> Value {
    let settings = SchemaSettings::draft07().with(|s| {
        s.definitions_path = "/definitions".into();
        s.meta_schema = None;
        s.transforms.clear();
    });
    let mut generator = SchemaGenerator::new(settings);
    let mut kinds = Vec::new();
    macro_rules! roots {
        ($($t:ty),* $(,)?) => {
            $( kinds.push(root::<$t>(&mut generator)); )*
        };
    }
    roots!(
        core::v1::Namespace,
        core::v1::Pod,
        core::v1::Node,
        core::v1::Service,
        core::v1::Endpoints,
        core::v1::ConfigMap,
        core::v1::Secret,
        core::v1::ServiceAccount,
        core::v1::Event,
        core::v1::LimitRange,
        core::v1::ResourceQuota,
        core::v1::PersistentVolume,
        core::v1::PersistentVolumeClaim,
        core::v1::ReplicationController,
        core::v1::Binding,
        apps::v1::Deployment,
        apps::v1::ReplicaSet,
        apps::v1::StatefulSet,
        apps::v1::DaemonSet,
        apps::v1::ControllerRevision,
        batch::v1::Job,
        batch::v1::CronJob,
        autoscaling::v2::HorizontalPodAutoscaler,
        autoscaling::v1::HorizontalPodAutoscaler,
        coordination::v1::Lease,
        discovery::v1::EndpointSlice,
        events::v1::Event,
        networking::v1::Ingress,
        networking::v1::IngressClass,
        networking::v1::NetworkPolicy,
        policy::v1::PodDisruptionBudget,
        rbac::v1::ClusterRole,
        rbac::v1::ClusterRoleBinding,
        rbac::v1::Role,
        rbac::v1::RoleBinding,
        scheduling::v1::PriorityClass,
        storage::v1::StorageClass,
        storage::v1::CSIDriver,
        storage::v1::CSINode,
        storage::v1::VolumeAttachment,
        admissionregistration::v1::MutatingWebhookConfiguration,
        admissionregistration::v1::ValidatingWebhookConfiguration,
        admissionregistration::v1::ValidatingAdmissionPolicy,
        admissionregistration::v1::ValidatingAdmissionPolicyBinding,
        k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService,
        node::v1::RuntimeClass,
        certificates::v1::CertificateSigningRequest,
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    );
    generator.subschema_for::<meta::DeleteOptions>();
    generator.subschema_for::<meta::Status>();
    generator.subschema_for::<meta::WatchEvent<core::v1::Pod>>();
    generator.subschema_for::<meta::Patch>();
    generator.subschema_for::<meta::ListMeta>();
    let definitions: Map<String, Value> = generator.take_definitions(false);
    json!({"kinds": kinds, "definitions": definitions})
}

fn root<T: JsonSchema + k8s_openapi::Resource>(generator: &mut SchemaGenerator) -> Value {
    generator.subschema_for::<T>();
    json!({
        "apiVersion": T::API_VERSION,
        "kind": T::KIND,
        "definition": T::schema_name(),
    })
}
