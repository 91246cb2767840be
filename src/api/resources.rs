//! The table of resources berth serves: group, version, kind, plural, scope, short names.
//!
//! Discovery, routing and storage keys are all derived from this one table, plus the resources
//! CustomResourceDefinitions add at runtime.

use std::collections::BTreeSet;
use std::sync::{Mutex, RwLock};

/// One served resource (a group/version/plural).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Serves a `/status` subresource whose writes change only `.status`.
    pub has_status: bool,
}

impl Resource {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// The store key prefix of every object of this resource (all versions share one).
    pub fn key_prefix(&self) -> String {
        // A view served by conversion reads and writes the objects it converts, even those
        // of another group (events.k8s.io Events are core Events).
        if let Some(stored) = super::conversion::storage_of(self) {
            return stored.key_prefix();
        }
        format!("/{}/{}/", storage_group(self), self.plural)
    }

    /// Prefix of the objects in one namespace, or of all of them when `namespace` is None.
    pub fn list_prefix(&self, namespace: Option<&str>) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{ns}/", self.key_prefix()),
            _ => self.key_prefix(),
        }
    }

    pub fn key(&self, namespace: &str, name: &str) -> String {
        if self.namespaced {
            format!("{}{namespace}/{name}", self.key_prefix())
        } else {
            format!("{}{name}", self.key_prefix())
        }
    }
}

/// The core group is stored under `core` so keys never have an empty segment.
fn storage_group(r: &Resource) -> &str {
    if r.group.is_empty() {
        "core"
    } else {
        r.group
    }
}

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];
const API_EXTENSIONS: &[&str] = &["api-extensions"];

macro_rules! resource {
    ($group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr, namespaced: $ns:expr,
     short: $short:expr, categories: $cat:expr, status: $status:expr) => {
        Resource {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $ns,
            short_names: $short,
            categories: $cat,
            has_status: $status,
        }
    };
}

/// Every built-in resource, in the order discovery lists groups (core first, as upstream).
pub static BUILTIN: &[Resource] = &[
    resource!("", "v1", "Namespace", "namespaces", "namespace", namespaced: false, short: &["ns"], categories: NONE, status: true),
    resource!("", "v1", "Pod", "pods", "pod", namespaced: true, short: &["po"], categories: ALL, status: true),
    resource!("", "v1", "Node", "nodes", "node", namespaced: false, short: &["no"], categories: NONE, status: true),
    resource!("", "v1", "Service", "services", "service", namespaced: true, short: &["svc"], categories: ALL, status: true),
    resource!("", "v1", "Endpoints", "endpoints", "endpoints", namespaced: true, short: &["ep"], categories: NONE, status: false),
    resource!("", "v1", "ConfigMap", "configmaps", "configmap", namespaced: true, short: &["cm"], categories: NONE, status: false),
    resource!("", "v1", "Secret", "secrets", "secret", namespaced: true, short: NONE, categories: NONE, status: false),
    resource!("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", namespaced: true, short: &["sa"], categories: NONE, status: false),
    resource!("", "v1", "Event", "events", "event", namespaced: true, short: &["ev"], categories: NONE, status: false),
    resource!("", "v1", "LimitRange", "limitranges", "limitrange", namespaced: true, short: &["limits"], categories: NONE, status: false),
    resource!("", "v1", "ResourceQuota", "resourcequotas", "resourcequota", namespaced: true, short: &["quota"], categories: NONE, status: true),
    resource!("", "v1", "PersistentVolume", "persistentvolumes", "persistentvolume", namespaced: false, short: &["pv"], categories: NONE, status: true),
    resource!("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", namespaced: true, short: &["pvc"], categories: NONE, status: true),
    resource!("", "v1", "ReplicationController", "replicationcontrollers", "replicationcontroller", namespaced: true, short: &["rc"], categories: ALL, status: true),
    resource!("apps", "v1", "Deployment", "deployments", "deployment", namespaced: true, short: &["deploy"], categories: ALL, status: true),
    resource!("apps", "v1", "ReplicaSet", "replicasets", "replicaset", namespaced: true, short: &["rs"], categories: ALL, status: true),
    resource!("apps", "v1", "StatefulSet", "statefulsets", "statefulset", namespaced: true, short: &["sts"], categories: ALL, status: true),
    resource!("apps", "v1", "DaemonSet", "daemonsets", "daemonset", namespaced: true, short: &["ds"], categories: ALL, status: true),
    resource!("apps", "v1", "ControllerRevision", "controllerrevisions", "controllerrevision", namespaced: true, short: NONE, categories: NONE, status: false),
    resource!("batch", "v1", "Job", "jobs", "job", namespaced: true, short: NONE, categories: ALL, status: true),
    resource!("batch", "v1", "CronJob", "cronjobs", "cronjob", namespaced: true, short: &["cj"], categories: ALL, status: true),
    resource!("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", namespaced: true, short: &["hpa"], categories: ALL, status: true),
    // Served by conversion from the stored autoscaling/v2 objects (`api::conversion`).
    resource!("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", namespaced: true, short: &["hpa"], categories: ALL, status: true),
    resource!("coordination.k8s.io", "v1", "Lease", "leases", "lease", namespaced: true, short: NONE, categories: NONE, status: false),
    resource!("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", namespaced: true, short: NONE, categories: NONE, status: false),
    // Served by conversion from the stored core Events (`api::conversion`).
    resource!("events.k8s.io", "v1", "Event", "events", "event", namespaced: true, short: &["ev"], categories: NONE, status: false),
    resource!("networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", namespaced: true, short: &["ing"], categories: NONE, status: true),
    resource!("networking.k8s.io", "v1", "IngressClass", "ingressclasses", "ingressclass", namespaced: false, short: NONE, categories: NONE, status: false),
    resource!("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", "networkpolicy", namespaced: true, short: &["netpol"], categories: NONE, status: false),
    resource!("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", namespaced: true, short: &["pdb"], categories: NONE, status: true),
    resource!("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", namespaced: false, short: NONE, categories: NONE, status: false),
    resource!("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", namespaced: false, short: NONE, categories: NONE, status: false),
    resource!("rbac.authorization.k8s.io", "v1", "Role", "roles", "role", namespaced: true, short: NONE, categories: NONE, status: false),
    resource!("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", "rolebinding", namespaced: true, short: NONE, categories: NONE, status: false),
    resource!("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", "priorityclass", namespaced: false, short: &["pc"], categories: NONE, status: false),
    resource!("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", "customresourcedefinition", namespaced: false, short: &["crd", "crds"], categories: API_EXTENSIONS, status: true),
    resource!("storage.k8s.io", "v1", "StorageClass", "storageclasses", "storageclass", namespaced: false, short: &["sc"], categories: NONE, status: false),
    resource!("storage.k8s.io", "v1", "CSIDriver", "csidrivers", "csidriver", namespaced: false, short: NONE, categories: NONE, status: false),
    resource!("storage.k8s.io", "v1", "CSINode", "csinodes", "csinode", namespaced: false, short: NONE, categories: NONE, status: false),
    resource!("storage.k8s.io", "v1", "VolumeAttachment", "volumeattachments", "volumeattachment", namespaced: false, short: NONE, categories: NONE, status: true),
    resource!("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations", "mutatingwebhookconfiguration", namespaced: false, short: NONE, categories: API_EXTENSIONS, status: false),
    resource!("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations", "validatingwebhookconfiguration", namespaced: false, short: NONE, categories: API_EXTENSIONS, status: false),
    resource!("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies", "validatingadmissionpolicy", namespaced: false, short: NONE, categories: API_EXTENSIONS, status: true),
    resource!("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings", "validatingadmissionpolicybinding", namespaced: false, short: NONE, categories: API_EXTENSIONS, status: false),
    resource!("apiregistration.k8s.io", "v1", "APIService", "apiservices", "apiservice", namespaced: false, short: NONE, categories: API_EXTENSIONS, status: true),
    resource!("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", "runtimeclass", namespaced: false, short: NONE, categories: NONE, status: false),
    resource!("certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests", "certificatesigningrequest", namespaced: false, short: &["csr"], categories: NONE, status: true),
];

/// Resources defined at runtime (by CustomResourceDefinitions), served after the built-ins.
///
/// Entries are interned (see [`intern`]) so the whole crate keeps passing `&'static Resource`
/// around: a definition costs its few strings once, however often it is re-registered.
static CUSTOM: RwLock<Vec<&'static Resource>> = RwLock::new(Vec::new());

/// Every served resource: the built-ins, then the custom ones in registration order.
pub fn all() -> Vec<&'static Resource> {
    let custom = CUSTOM.read().map(|c| c.clone()).unwrap_or_default();
    BUILTIN.iter().chain(custom).collect()
}

/// One entry per stored resource: a custom resource served at several versions appears once
/// (its objects share one key prefix).
pub fn all_stored() -> Vec<&'static Resource> {
    let mut out: Vec<&'static Resource> = Vec::new();
    for r in all() {
        if !out.iter().any(|o| o.key_prefix() == r.key_prefix()) {
            out.push(r);
        }
    }
    out
}

/// Makes `resources` the served custom resources of `owner` (a CRD name), replacing what `owner`
/// served before; an empty list stops serving them.
pub fn set_custom(owner: &str, resources: Vec<Resource>) {
    let interned: Vec<&'static Resource> = resources.into_iter().map(intern).collect();
    if let Ok(mut custom) = CUSTOM.write() {
        custom.retain(|r| custom_owner(r) != owner);
        custom.extend(interned);
    }
}

/// Is `r` defined at runtime rather than built in?
pub fn is_custom(r: &Resource) -> bool {
    !BUILTIN.iter().any(|b| std::ptr::eq(b, r))
}

/// The CRD name (`<plural>.<group>`) a custom resource comes from.
fn custom_owner(r: &Resource) -> String {
    format!("{}.{}", r.plural, r.group)
}

/// One leaked copy of each distinct resource and string: CRDs are few and change rarely, and
/// leaking lets runtime resources share the `&'static` signature of the built-in table.
fn intern(r: Resource) -> &'static Resource {
    static SEEN: Mutex<Vec<&'static Resource>> = Mutex::new(Vec::new());
    let Ok(mut seen) = SEEN.lock() else {
        return Box::leak(Box::new(r));
    };
    if let Some(found) = seen.iter().find(|s| ***s == r) {
        return found;
    }
    let leaked: &'static Resource = Box::leak(Box::new(r));
    seen.push(leaked);
    leaked
}

/// A `&'static str` equal to `s`, leaked once per distinct value.
pub fn intern_str(s: &str) -> &'static str {
    static SEEN: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let Ok(mut seen) = SEEN.lock() else {
        return Box::leak(s.to_string().into_boxed_str());
    };
    if let Some(found) = seen.get(s) {
        return found;
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    seen.insert(leaked);
    leaked
}

/// A `&'static` slice of interned strings.
pub fn intern_strs(items: &[String]) -> &'static [&'static str] {
    static SEEN: Mutex<Vec<&'static [&'static str]>> = Mutex::new(Vec::new());
    let wanted: Vec<&'static str> = items.iter().map(|s| intern_str(s)).collect();
    let Ok(mut seen) = SEEN.lock() else {
        return Box::leak(wanted.into_boxed_slice());
    };
    if let Some(found) = seen.iter().find(|s| **s == wanted.as_slice()) {
        return found;
    }
    let leaked: &'static [&'static str] = Box::leak(wanted.into_boxed_slice());
    seen.push(leaked);
    leaked
}

/// The resource served at `group/version/plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    // The plural first: it tells resources apart, where most share a group and a version.
    first(|r| r.plural == plural && r.group == group && r.version == version)
}

/// The resource whose objects have `apiVersion` and `kind`.
pub fn find_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    first(|r| r.kind == kind && has_api_version(r, api_version))
}

/// Is `group/version` served at all (for 404 vs 405 decisions and discovery)?
pub fn serves_group_version(group: &str, version: &str) -> bool {
    first(|r| r.group == group && r.version == version).is_some()
}

/// The first resource of `all` that `wanted` accepts, found without collecting `all`: these
/// lookups run several times per request, and most find a built-in.
fn first(wanted: impl Fn(&Resource) -> bool) -> Option<&'static Resource> {
    BUILTIN
        .iter()
        .find(|r| wanted(r))
        .or_else(|| CUSTOM.read().ok()?.iter().copied().find(|r| wanted(r)))
}

/// `r.api_version() == api_version`, without building the string.
fn has_api_version(r: &Resource, api_version: &str) -> bool {
    match api_version.split_once('/') {
        Some((group, version)) => !group.is_empty() && r.group == group && r.version == version,
        None => r.group.is_empty() && r.version == api_version,
    }
}

/// Groups in discovery order, each with its versions (preferred first).
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    groups_of(&all())
}

/// The groups of the built-in resources alone (what never changes at runtime).
pub fn builtin_groups() -> Vec<(&'static str, Vec<&'static str>)> {
    groups_of(&BUILTIN.iter().collect::<Vec<_>>())
}

fn groups_of(resources: &[&'static Resource]) -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in resources.iter().filter(|r| !r.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) if !versions.contains(&r.version) => versions.push(r.version),
            Some(_) => {}
            None => out.push((r.group, vec![r.version])),
        }
    }
    out
}

/// Resources of one group/version.
pub fn in_group_version<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static Resource> + 'a {
    all()
        .into_iter()
        .filter(move |r| r.group == group && r.version == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_are_matched_as_the_built_strings_would_be() {
        let candidates = [
            "v1", "apps/v1", "/v1", "apps/", "apps", "batch/v1", "a/b/c", "",
        ];
        for r in all() {
            for candidate in candidates.iter().copied().chain([r.api_version().as_str()]) {
                assert_eq!(
                    has_api_version(r, candidate),
                    r.api_version() == candidate,
                    "{} against {candidate:?}",
                    r.api_version()
                );
            }
        }
        assert_eq!(
            find_kind("apps/v1", "Deployment").unwrap().plural,
            "deployments"
        );
        assert!(find_kind("v1", "Deployment").is_none());
    }

    #[test]
    fn keys_separate_namespaces_and_groups() {
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(pods.key("default", "web"), "/core/pods/default/web");
        assert_eq!(pods.list_prefix(Some("default")), "/core/pods/default/");
        assert_eq!(pods.list_prefix(None), "/core/pods/");
        let nodes = find("", "v1", "nodes").unwrap();
        assert_eq!(nodes.key("ignored", "n1"), "/core/nodes/n1");
        let deploy = find("apps", "v1", "deployments").unwrap();
        assert_eq!(deploy.api_version(), "apps/v1");
        assert_eq!(deploy.key("ns", "d"), "/apps/deployments/ns/d");
        let new_events = find("events.k8s.io", "v1", "events").unwrap();
        assert_eq!(new_events.key("ns", "e"), "/core/events/ns/e");
    }

    #[test]
    fn no_two_resources_share_a_group_version_plural() {
        for (i, a) in BUILTIN.iter().enumerate() {
            for b in &BUILTIN[i + 1..] {
                assert!(
                    !(a.group == b.group && a.version == b.version && a.plural == b.plural),
                    "{}",
                    a.plural
                );
            }
        }
    }

    #[test]
    fn find_kind_uses_the_api_version() {
        assert_eq!(
            find_kind("apps/v1", "Deployment").unwrap().plural,
            "deployments"
        );
        assert!(find_kind("v1", "Deployment").is_none());
        assert_eq!(
            find_kind("events.k8s.io/v1", "Event").unwrap().group,
            "events.k8s.io"
        );
    }

    #[test]
    fn custom_resources_join_and_leave_and_are_stored_once_across_versions() {
        let group = format!("res{}.example.com", std::process::id());
        let make = |version: &str| Resource {
            group: intern_str(&group),
            version: intern_str(version),
            kind: "Thing",
            plural: "things",
            singular: "thing",
            namespaced: true,
            short_names: intern_strs(&["th".to_string()]),
            categories: NONE,
            has_status: false,
        };
        set_custom(&format!("things.{group}"), vec![make("v1"), make("v2")]);
        let v1 = find(&group, "v1", "things").unwrap();
        assert!(is_custom(v1));
        assert!(!is_custom(find("", "v1", "pods").unwrap()));
        assert!(std::ptr::eq(v1, intern(make("v1"))), "interned once");
        let stored: Vec<_> = all_stored()
            .into_iter()
            .filter(|r| r.group == group)
            .collect();
        assert_eq!(stored.len(), 1);
        assert_eq!(
            builtin_groups().iter().filter(|(g, _)| *g == group).count(),
            0
        );
        set_custom(&format!("things.{group}"), Vec::new());
        assert!(find(&group, "v1", "things").is_none());
    }

    #[test]
    fn groups_list_each_group_once() {
        let groups = groups();
        assert_eq!(groups.iter().filter(|(g, _)| *g == "apps").count(), 1);
        assert!(groups.iter().all(|(g, _)| !g.is_empty()));
    }
}
