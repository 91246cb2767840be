//! How lists and structs of the built-in types merge: the `patchStrategy` / `patchMergeKey` Go
//! struct tags and `+listType` / `+listMapKey` markers upstream keeps next to each field.
//!
//! One table serves both the OpenAPI documents (as `x-kubernetes-patch-*` / `x-kubernetes-list-*`
//! extensions) and strategic merge patch. Types are named as upstream's OpenAPI definitions
//! (`io.k8s.api.core.v1.PodSpec`); [`field_type`] walks from a kind's root type to nested types.

use super::schemas;

/// How a list field is treated by server-side apply (`+listType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole.
    Atomic,
    /// Items are scalars, unique, merged as a set.
    Set,
    /// Items are objects keyed by [`FieldPatchMeta::map_keys`].
    Map,
}

impl ListType {
    pub fn as_str(self) -> &'static str {
        match self {
            ListType::Atomic => "atomic",
            ListType::Set => "set",
            ListType::Map => "map",
        }
    }
}

/// The patch metadata of one field of one type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPatchMeta {
    /// `merge`, `retainKeys` or `merge,retainKeys`; None means replace.
    pub strategy: Option<&'static str>,
    /// The key whose value identifies a list item for strategic merge patch.
    pub merge_key: Option<&'static str>,
    pub list_type: Option<ListType>,
    /// The keys identifying an item of a `map` list (server-side apply).
    pub map_keys: &'static [&'static str],
}

impl FieldPatchMeta {
    /// Does strategic merge patch merge this list (instead of replacing it)?
    pub fn merges(&self) -> bool {
        self.strategy
            .is_some_and(|s| s.split(',').any(|p| p == "merge"))
    }

    pub fn retains_keys(&self) -> bool {
        self.strategy
            .is_some_and(|s| s.split(',').any(|p| p == "retainKeys"))
    }
}

const CORE: &str = "io.k8s.api.core.v1.";

/// A list merged by strategic merge patch on `key`, and a server-side-apply map on `keys`.
const fn merge_map(key: &'static str, keys: &'static [&'static str]) -> FieldPatchMeta {
    FieldPatchMeta {
        strategy: Some("merge"),
        merge_key: Some(key),
        list_type: Some(ListType::Map),
        map_keys: keys,
    }
}

const fn atomic() -> FieldPatchMeta {
    FieldPatchMeta {
        strategy: None,
        merge_key: None,
        list_type: Some(ListType::Atomic),
        map_keys: &[],
    }
}

const MERGE_BY_NAME: FieldPatchMeta = merge_map("name", &["name"]);
const MERGE_BY_TYPE: FieldPatchMeta = merge_map("type", &["type"]);
const ATOMIC: FieldPatchMeta = atomic();

/// `(type suffix or full name, field, meta)`. A name without a dot is in `io.k8s.api.core.v1`.
static TABLE: &[(&str, &str, FieldPatchMeta)] = &[
    // metav1
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        FieldPatchMeta {
            strategy: Some("merge"),
            merge_key: None,
            list_type: Some(ListType::Set),
            map_keys: &[],
        },
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        merge_map("uid", &["uid"]),
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "managedFields",
        ATOMIC,
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
        "matchExpressions",
        ATOMIC,
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelectorRequirement",
        "values",
        ATOMIC,
    ),
    // core/v1 Pod
    (
        "PodSpec",
        "volumes",
        FieldPatchMeta {
            strategy: Some("merge,retainKeys"),
            merge_key: Some("name"),
            list_type: Some(ListType::Map),
            map_keys: &["name"],
        },
    ),
    ("PodSpec", "initContainers", MERGE_BY_NAME),
    ("PodSpec", "containers", MERGE_BY_NAME),
    ("PodSpec", "ephemeralContainers", MERGE_BY_NAME),
    ("PodSpec", "imagePullSecrets", MERGE_BY_NAME),
    ("PodSpec", "tolerations", ATOMIC),
    ("PodSpec", "hostAliases", merge_map("ip", &["ip"])),
    ("PodSpec", "readinessGates", ATOMIC),
    (
        "PodSpec",
        "topologySpreadConstraints",
        merge_map("topologyKey", &["topologyKey", "whenUnsatisfiable"]),
    ),
    ("PodSpec", "schedulingGates", MERGE_BY_NAME),
    (
        "PodSpec",
        "resourceClaims",
        FieldPatchMeta {
            strategy: Some("merge,retainKeys"),
            merge_key: Some("name"),
            list_type: Some(ListType::Map),
            map_keys: &["name"],
        },
    ),
    ("PodSecurityContext", "supplementalGroups", ATOMIC),
    ("PodSecurityContext", "sysctls", ATOMIC),
    ("PodDNSConfig", "nameservers", ATOMIC),
    ("PodDNSConfig", "searches", ATOMIC),
    ("PodDNSConfig", "options", ATOMIC),
    ("HostAlias", "hostnames", ATOMIC),
    ("Container", "command", ATOMIC),
    ("Container", "args", ATOMIC),
    (
        "Container",
        "ports",
        merge_map("containerPort", &["containerPort", "protocol"]),
    ),
    ("Container", "envFrom", ATOMIC),
    ("Container", "env", MERGE_BY_NAME),
    ("Container", "resizePolicy", ATOMIC),
    (
        "Container",
        "volumeMounts",
        merge_map("mountPath", &["mountPath"]),
    ),
    (
        "Container",
        "volumeDevices",
        merge_map("devicePath", &["devicePath"]),
    ),
    ("EphemeralContainer", "command", ATOMIC),
    ("EphemeralContainer", "args", ATOMIC),
    (
        "EphemeralContainer",
        "ports",
        merge_map("containerPort", &["containerPort", "protocol"]),
    ),
    ("EphemeralContainer", "envFrom", ATOMIC),
    ("EphemeralContainer", "env", MERGE_BY_NAME),
    ("EphemeralContainer", "resizePolicy", ATOMIC),
    (
        "EphemeralContainer",
        "volumeMounts",
        merge_map("mountPath", &["mountPath"]),
    ),
    (
        "EphemeralContainer",
        "volumeDevices",
        merge_map("devicePath", &["devicePath"]),
    ),
    ("Capabilities", "add", ATOMIC),
    ("Capabilities", "drop", ATOMIC),
    ("ExecAction", "command", ATOMIC),
    ("HTTPGetAction", "httpHeaders", ATOMIC),
    ("NodeSelector", "nodeSelectorTerms", ATOMIC),
    ("NodeSelectorTerm", "matchExpressions", ATOMIC),
    ("NodeSelectorTerm", "matchFields", ATOMIC),
    ("NodeSelectorRequirement", "values", ATOMIC),
    ("PodStatus", "conditions", MERGE_BY_TYPE),
    ("PodStatus", "podIPs", merge_map("ip", &["ip"])),
    ("PodStatus", "hostIPs", merge_map("ip", &["ip"])),
    ("PodStatus", "initContainerStatuses", ATOMIC),
    ("PodStatus", "containerStatuses", ATOMIC),
    ("PodStatus", "ephemeralContainerStatuses", ATOMIC),
    ("PodStatus", "resourceClaimStatuses", MERGE_BY_NAME),
    ("ConfigMapVolumeSource", "items", ATOMIC),
    ("SecretVolumeSource", "items", ATOMIC),
    ("ProjectedVolumeSource", "sources", ATOMIC),
    ("DownwardAPIVolumeSource", "items", ATOMIC),
    // core/v1 Service, Node, others
    (
        "ServiceSpec",
        "ports",
        merge_map("port", &["port", "protocol"]),
    ),
    ("ServiceSpec", "clusterIPs", ATOMIC),
    ("ServiceSpec", "externalIPs", ATOMIC),
    ("ServiceSpec", "loadBalancerSourceRanges", ATOMIC),
    ("ServiceSpec", "ipFamilies", ATOMIC),
    ("ServiceStatus", "conditions", MERGE_BY_TYPE),
    ("LoadBalancerStatus", "ingress", ATOMIC),
    (
        "NodeSpec",
        "podCIDRs",
        FieldPatchMeta {
            strategy: Some("merge"),
            merge_key: None,
            list_type: Some(ListType::Set),
            map_keys: &[],
        },
    ),
    ("NodeSpec", "taints", ATOMIC),
    ("NodeStatus", "conditions", MERGE_BY_TYPE),
    ("NodeStatus", "addresses", MERGE_BY_TYPE),
    ("NodeStatus", "images", ATOMIC),
    ("NodeStatus", "volumesInUse", ATOMIC),
    ("NodeStatus", "volumesAttached", ATOMIC),
    ("NamespaceStatus", "conditions", MERGE_BY_TYPE),
    ("PersistentVolumeClaimStatus", "conditions", MERGE_BY_TYPE),
    ("PersistentVolumeClaimSpec", "accessModes", ATOMIC),
    ("PersistentVolumeSpec", "accessModes", ATOMIC),
    ("PersistentVolumeSpec", "mountOptions", ATOMIC),
    ("ReplicationControllerStatus", "conditions", MERGE_BY_TYPE),
    ("ServiceAccount", "secrets", MERGE_BY_NAME),
    ("ServiceAccount", "imagePullSecrets", ATOMIC),
    ("Endpoints", "subsets", ATOMIC),
    ("EndpointSubset", "addresses", ATOMIC),
    ("EndpointSubset", "notReadyAddresses", ATOMIC),
    ("EndpointSubset", "ports", ATOMIC),
    ("LimitRangeSpec", "limits", ATOMIC),
    ("ResourceQuotaSpec", "scopes", ATOMIC),
    // apps/v1
    (
        "io.k8s.api.apps.v1.DeploymentSpec",
        "strategy",
        FieldPatchMeta {
            strategy: Some("retainKeys"),
            merge_key: None,
            list_type: None,
            map_keys: &[],
        },
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        MERGE_BY_TYPE,
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        MERGE_BY_TYPE,
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetSpec",
        "volumeClaimTemplates",
        ATOMIC,
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        MERGE_BY_TYPE,
    ),
    (
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        MERGE_BY_TYPE,
    ),
    // batch/v1
    (
        "io.k8s.api.batch.v1.JobStatus",
        "conditions",
        FieldPatchMeta {
            strategy: Some("merge"),
            merge_key: Some("type"),
            list_type: Some(ListType::Atomic),
            map_keys: &[],
        },
    ),
    ("io.k8s.api.batch.v1.CronJobStatus", "active", ATOMIC),
    // autoscaling/v2
    (
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec",
        "metrics",
        ATOMIC,
    ),
    (
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus",
        "conditions",
        MERGE_BY_TYPE,
    ),
    (
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus",
        "currentMetrics",
        ATOMIC,
    ),
    // networking, policy, rbac, discovery
    ("io.k8s.api.networking.v1.IngressSpec", "tls", ATOMIC),
    ("io.k8s.api.networking.v1.IngressSpec", "rules", ATOMIC),
    (
        "io.k8s.api.networking.v1.HTTPIngressRuleValue",
        "paths",
        ATOMIC,
    ),
    (
        "io.k8s.api.networking.v1.NetworkPolicySpec",
        "ingress",
        ATOMIC,
    ),
    (
        "io.k8s.api.networking.v1.NetworkPolicySpec",
        "egress",
        ATOMIC,
    ),
    (
        "io.k8s.api.networking.v1.NetworkPolicySpec",
        "policyTypes",
        ATOMIC,
    ),
    (
        "io.k8s.api.policy.v1.PodDisruptionBudgetStatus",
        "conditions",
        MERGE_BY_TYPE,
    ),
    ("io.k8s.api.rbac.v1.ClusterRole", "rules", ATOMIC),
    ("io.k8s.api.rbac.v1.Role", "rules", ATOMIC),
    ("io.k8s.api.rbac.v1.ClusterRoleBinding", "subjects", ATOMIC),
    ("io.k8s.api.rbac.v1.RoleBinding", "subjects", ATOMIC),
    ("io.k8s.api.rbac.v1.PolicyRule", "verbs", ATOMIC),
    ("io.k8s.api.rbac.v1.PolicyRule", "apiGroups", ATOMIC),
    ("io.k8s.api.rbac.v1.PolicyRule", "resources", ATOMIC),
    ("io.k8s.api.rbac.v1.PolicyRule", "resourceNames", ATOMIC),
    ("io.k8s.api.discovery.v1.EndpointSlice", "endpoints", ATOMIC),
    ("io.k8s.api.discovery.v1.EndpointSlice", "ports", ATOMIC),
    ("io.k8s.api.discovery.v1.Endpoint", "addresses", ATOMIC),
];

/// Structs upstream marks `+structType=atomic` / `+mapType=atomic`: replaced as a whole.
static ATOMIC_STRUCTS: &[&str] = &[
    "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
    "io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference",
    "ObjectReference",
    "LocalObjectReference",
    "ConfigMapKeySelector",
    "SecretKeySelector",
    "ObjectFieldSelector",
    "ResourceFieldSelector",
    "NodeSelector",
    "NodeSelectorTerm",
    "TypedLocalObjectReference",
];

fn full_name(entry: &'static str) -> std::borrow::Cow<'static, str> {
    if entry.contains('.') {
        entry.into()
    } else {
        format!("{CORE}{entry}").into()
    }
}

fn matches(entry: &'static str, type_name: &str) -> bool {
    match type_name.strip_prefix(CORE) {
        Some(short) if !entry.contains('.') => entry == short,
        _ => entry == type_name,
    }
}

/// The patch metadata of `field` in the type named `type_name` (an upstream definition name).
pub fn patch_meta(type_name: &str, field: &str) -> Option<&'static FieldPatchMeta> {
    TABLE
        .iter()
        .find(|(t, f, _)| *f == field && matches(t, type_name))
        .map(|(_, _, meta)| meta)
        .filter(|meta| meta.strategy.is_some() || meta.list_type.is_some())
}

/// Key fields of keyed lists that upstream's schema gives a default (`+default=`): an item that
/// omits one is keyed by the default, as structured-merge-diff keys it, so an applied
/// `{port: 80}` and the stored `{port: 80, protocol: TCP}` are one item, not two.
static KEY_DEFAULTS: &[(&str, &str, &str)] = &[
    ("ContainerPort", "protocol", "TCP"),
    ("ServicePort", "protocol", "TCP"),
];

/// The default of key field `key` of items of the type named `item_type`, if it has one.
pub fn key_default(item_type: &str, key: &str) -> Option<&'static str> {
    KEY_DEFAULTS
        .iter()
        .find(|(t, k, _)| *k == key && matches(t, item_type))
        .map(|(_, _, default)| *default)
}

/// Every `(type, field, meta)` of the table, with full type names.
pub fn all() -> impl Iterator<Item = (String, &'static str, &'static FieldPatchMeta)> {
    TABLE
        .iter()
        .filter(|(_, _, meta)| meta.strategy.is_some() || meta.list_type.is_some())
        .map(|(t, f, meta)| (full_name(t).into_owned(), *f, meta))
}

/// Is the struct named `type_name` replaced as a whole by apply (`x-kubernetes-map-type: atomic`)?
pub fn is_atomic_struct(type_name: &str) -> bool {
    ATOMIC_STRUCTS.iter().any(|t| matches(t, type_name))
}

/// The type of `field` in `type_name` (for a list or map, the type of its items), when that is a
/// named object type: `field_type("io.k8s.api.core.v1.PodSpec", "containers")` is
/// `Some("io.k8s.api.core.v1.Container")`.
pub fn field_type(type_name: &str, field: &str) -> Option<&'static str> {
    schemas::field_type(type_name, field)
}

/// The definition name of the root type of objects of `api_version`/`kind`.
pub fn kind_type(api_version: &str, kind: &str) -> Option<&'static str> {
    schemas::kind_definition(api_version, kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_containers_merge_on_name() {
        let meta = patch_meta("io.k8s.api.core.v1.PodSpec", "containers").unwrap();
        assert!(meta.merges());
        assert_eq!(meta.merge_key, Some("name"));
        assert_eq!(meta.list_type, Some(ListType::Map));
    }

    #[test]
    fn container_ports_merge_on_container_port_and_key_on_protocol_too() {
        let meta = patch_meta("io.k8s.api.core.v1.Container", "ports").unwrap();
        assert_eq!(meta.merge_key, Some("containerPort"));
        assert_eq!(meta.map_keys, &["containerPort", "protocol"]);
    }

    #[test]
    fn tolerations_are_atomic_and_do_not_merge() {
        let meta = patch_meta("io.k8s.api.core.v1.PodSpec", "tolerations").unwrap();
        assert!(!meta.merges());
        assert_eq!(meta.list_type, Some(ListType::Atomic));
    }

    #[test]
    fn volumes_merge_and_retain_keys() {
        let meta = patch_meta("io.k8s.api.core.v1.PodSpec", "volumes").unwrap();
        assert!(meta.merges() && meta.retains_keys());
    }

    #[test]
    fn a_field_without_metadata_has_none() {
        assert!(patch_meta("io.k8s.api.core.v1.PodSpec", "nodeName").is_none());
        assert!(patch_meta("io.k8s.api.core.v1.Toleration", "key").is_none());
        // A core short name does not match the same name in another group.
        assert!(patch_meta("io.k8s.api.apps.v1.PodSpec", "containers").is_none());
    }

    #[test]
    fn deployment_walks_down_to_container_env() {
        let root = kind_type("apps/v1", "Deployment").unwrap();
        assert_eq!(root, "io.k8s.api.apps.v1.Deployment");
        let spec = field_type(root, "spec").unwrap();
        let template = field_type(spec, "template").unwrap();
        let pod_spec = field_type(template, "spec").unwrap();
        let container = field_type(pod_spec, "containers").unwrap();
        assert_eq!(container, "io.k8s.api.core.v1.Container");
        assert_eq!(
            patch_meta(container, "env").unwrap().merge_key,
            Some("name")
        );
        assert_eq!(field_type(pod_spec, "nodeName"), None);
    }

    #[test]
    fn every_table_entry_names_a_real_field() {
        for (type_name, field, _) in all() {
            assert!(
                schemas::has_field(&type_name, field),
                "{type_name}.{field} is not in the schemas"
            );
        }
    }
}
