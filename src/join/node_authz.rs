//! Least privilege for joined nodes, as upstream's Node authorizer and NodeRestriction
//! admission: a node (`system:node:<name>` in `system:nodes`) reads the Secrets, ConfigMaps,
//! PersistentVolumeClaims and volumes only of pods bound to it, writes only its own Node and
//! Lease and the status of its own pods, and creates no pods. Everything else a kubelet does
//! is left to RBAC (`join::server` binds `system:nodes` to the kubelet's roles).
//!
//! The graph upstream keeps is a scan here: the pods of one namespace, read from the store,
//! filtered by `spec.nodeName`. An edge cluster's pod count keeps that cheap.

use async_trait::async_trait;
use serde_json::Value;

use crate::admission::{Attributes as Admission, Operation, Plugin};
use crate::api::{resources, ApiError, ApiResult};
use crate::apiserver::authn::UserInfo;
use crate::apiserver::rbac::{Attributes, ResourceAttributes};
use crate::store::Store;

pub const NODES_GROUP: &str = "system:nodes";
const NODE_PREFIX: &str = "system:node:";
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The node a user is, when it is one.
pub fn node_of(user: &UserInfo) -> Option<&str> {
    let name = user.name.strip_prefix(NODE_PREFIX)?;
    (!name.is_empty() && user.groups.iter().any(|g| g == NODES_GROUP)).then_some(name)
}

/// What a pod refers to, by kind: `secrets`, `configmaps`, `persistentvolumeclaims`,
/// `serviceaccounts`.
pub fn pod_references(pod: &Value, kind: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut add = |v: Option<&Value>| {
        if let Some(name) = v.and_then(Value::as_str) {
            if !name.is_empty() && !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
    };
    let spec = &pod["spec"];
    let empty = Vec::new();
    let list = |v: &Value| v.as_array().unwrap_or(&empty).clone();
    match kind {
        "serviceaccounts" => add(spec
            .get("serviceAccountName")
            .or(Some(&Value::from("default")))),
        "persistentvolumeclaims" => {
            for volume in list(&spec["volumes"]) {
                add(volume.pointer("/persistentVolumeClaim/claimName"));
            }
        }
        "secrets" | "configmaps" => {
            let (volume_key, volume_name, env_ref, env_from) = match kind {
                "secrets" => ("secret", "secretName", "secretKeyRef", "secretRef"),
                _ => ("configMap", "name", "configMapKeyRef", "configMapRef"),
            };
            if kind == "secrets" {
                for s in list(&spec["imagePullSecrets"]) {
                    add(s.get("name"));
                }
            }
            for volume in list(&spec["volumes"]) {
                add(volume.get(volume_key).and_then(|v| v.get(volume_name)));
                for source in list(
                    &volume
                        .pointer("/projected/sources")
                        .cloned()
                        .unwrap_or_default(),
                ) {
                    add(source.get(volume_key).and_then(|v| v.get("name")));
                }
                add(volume
                    .pointer("/csi/nodePublishSecretRef/name")
                    .filter(|_| kind == "secrets"));
            }
            for group in ["initContainers", "containers", "ephemeralContainers"] {
                for container in list(&spec[group]) {
                    for env in list(&container["env"]) {
                        add(env.pointer(&format!("/valueFrom/{env_ref}/name")));
                    }
                    for from in list(&container["envFrom"]) {
                        add(from.pointer(&format!("/{env_from}/name")));
                    }
                }
            }
        }
        _ => {}
    }
    names
}

/// The node authorizer over the store's pods.
#[derive(Clone)]
pub struct NodeAuthorizer {
    store: Store,
}

impl NodeAuthorizer {
    pub fn new(store: Store) -> NodeAuthorizer {
        NodeAuthorizer { store }
    }

    /// Pods in `namespace` bound to `node`.
    fn pods_on(&self, node: &str, namespace: &str) -> Vec<Value> {
        let Some(pods) = resources::find("", "v1", "pods") else {
            return Vec::new();
        };
        let Ok(listed) = self.store.list(&pods.list_prefix(Some(namespace)), None, 0) else {
            return Vec::new();
        };
        listed
            .kvs
            .iter()
            .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
            .filter(|pod| pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node))
            .collect()
    }

    fn get(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let r = resources::find(group, "v1", plural)?;
        let kv = self.store.get(&r.key(namespace, name)).ok()??;
        serde_json::from_slice(&kv.value).ok()
    }

    fn pod_is_on(&self, node: &str, namespace: &str, name: &str) -> bool {
        self.get("", "pods", namespace, name)
            .is_some_and(|pod| pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node))
    }

    fn references(&self, node: &str, namespace: &str, kind: &str, name: &str) -> bool {
        self.pods_on(node, namespace)
            .iter()
            .any(|pod| pod_references(pod, kind).iter().any(|n| n == name))
    }

    /// A persistent volume is the node's when one of its pods' claims is bound to it.
    fn uses_volume(&self, node: &str, volume: &str) -> bool {
        let Some(claims) = self.get("", "persistentvolumes", "", volume) else {
            return false;
        };
        let Some(claim) = claims.pointer("/spec/claimRef") else {
            return false;
        };
        let namespace = claim["namespace"].as_str().unwrap_or_default();
        let name = claim["name"].as_str().unwrap_or_default();
        self.references(node, namespace, "persistentvolumeclaims", name)
    }

    /// The decision for a node's request: `None` when the node authorizer has no opinion
    /// (not a node, or not a resource it guards: RBAC decides), else allowed or the 403.
    pub fn decide(&self, user: &UserInfo, attributes: &Attributes) -> Option<ApiResult<()>> {
        let node = node_of(user)?;
        let r = attributes.resource.as_ref()?;
        let allowed = self.allows(node, &attributes.verb, r)?;
        Some(match allowed {
            true => Ok(()),
            false => Err(crate::apiserver::rbac::forbidden(
                user,
                attributes,
                &format!("no relationship found between node '{node}' and this object"),
            )),
        })
    }

    fn allows(&self, node: &str, verb: &str, r: &ResourceAttributes) -> Option<bool> {
        let (ns, name) = (r.namespace.as_str(), r.name.as_str());
        let is_write = !matches!(verb, "get" | "list" | "watch");
        match (
            r.api_group.as_str(),
            r.resource.as_str(),
            r.subresource.as_str(),
        ) {
            ("", "secrets" | "configmaps" | "persistentvolumeclaims", "") => Some(
                matches!(verb, "get" | "list" | "watch")
                    && !name.is_empty()
                    && self.references(node, ns, &r.resource, name),
            ),
            ("", "persistentvolumes", "") => {
                Some(verb == "get" && !name.is_empty() && self.uses_volume(node, name))
            }
            ("", "serviceaccounts", "token") => {
                Some(verb == "create" && self.references(node, ns, "serviceaccounts", name))
            }
            // Mirror pods are not supported: a node creates no pods.
            ("", "pods", "") if verb == "create" => Some(false),
            ("", "pods", "" | "status" | "eviction") if is_write => {
                Some(!name.is_empty() && self.pod_is_on(node, ns, name))
            }
            // A create carries its name in the body: NodeRestriction checks it.
            ("", "nodes", "" | "status") if is_write && verb != "create" => Some(name == node),
            ("coordination.k8s.io", "leases", "") if is_write && verb != "create" => {
                Some(ns == LEASE_NAMESPACE && name == node)
            }
            _ => None,
        }
    }
}

/// NodeRestriction: what the authorizer cannot see before the body is read.
pub struct NodeRestriction;

#[async_trait]
impl Plugin for NodeRestriction {
    fn name(&self) -> &'static str {
        "NodeRestriction"
    }

    async fn validate(&self, attributes: &Admission<'_>, object: Option<&Value>) -> ApiResult<()> {
        let Some(node) = attributes.user.as_ref().and_then(node_of) else {
            return Ok(());
        };
        let (group, plural) = (attributes.resource.group, attributes.resource.plural);
        let name = object
            .and_then(|o| o.pointer("/metadata/name"))
            .and_then(Value::as_str)
            .unwrap_or(attributes.name);
        let forbidden = |what: &str| {
            Err(ApiError::forbidden(format!(
                "{plural} \"{name}\" is forbidden: node \"{node}\" is not allowed to {what}"
            )))
        };
        match (group, plural, attributes.operation) {
            ("", "nodes", Operation::Create | Operation::Update) if name != node => {
                forbidden(&format!("modify node \"{name}\""))
            }
            ("coordination.k8s.io", "leases", Operation::Create | Operation::Update)
                if attributes.namespace != LEASE_NAMESPACE || name != node =>
            {
                forbidden("modify this lease")
            }
            ("", "pods", Operation::Update) if attributes.subresource == Some("status") => {
                let bound = attributes
                    .old
                    .and_then(|o| o.pointer("/spec/nodeName"))
                    .and_then(Value::as_str);
                match bound == Some(node) {
                    true => Ok(()),
                    false => forbidden("update the status of a pod not bound to it"),
                }
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_refer_to_secrets_and_config_maps_through_volumes_env_and_pull_secrets() {
        let pod = json!({"spec": {
            "imagePullSecrets": [{"name": "pull"}],
            "volumes": [
                {"name": "a", "secret": {"secretName": "vol"}},
                {"name": "b", "configMap": {"name": "cm-vol"}},
                {"name": "c", "projected": {"sources": [{"secret": {"name": "proj"}}, {"configMap": {"name": "cm-proj"}}]}},
                {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
            ],
            "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-from"}}]}],
            "containers": [{"name": "c", "env": [
                {"name": "X", "valueFrom": {"secretKeyRef": {"name": "env", "key": "k"}}},
                {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "cm-env", "key": "k"}}},
            ]}],
        }});
        assert_eq!(
            pod_references(&pod, "secrets"),
            ["pull", "vol", "proj", "init-from", "env"]
        );
        assert_eq!(
            pod_references(&pod, "configmaps"),
            ["cm-vol", "cm-proj", "cm-env"]
        );
        assert_eq!(pod_references(&pod, "persistentvolumeclaims"), ["data"]);
        assert_eq!(pod_references(&pod, "serviceaccounts"), ["default"]);
    }

    #[test]
    fn only_members_of_system_nodes_named_system_node_are_nodes() {
        let node = UserInfo::with_groups("system:node:pi", &[NODES_GROUP]);
        assert_eq!(node_of(&node), Some("pi"));
        assert_eq!(
            node_of(&UserInfo::with_groups("system:node:pi", &["dev"])),
            None
        );
        assert_eq!(
            node_of(&UserInfo::with_groups("system:node", &[NODES_GROUP])),
            None
        );
        assert_eq!(
            node_of(&UserInfo::with_groups("alice", &[NODES_GROUP])),
            None
        );
    }

    async fn store_with(objects: &[(&str, &str, &str, Value)]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.redb"), Default::default()).unwrap();
        for (plural, namespace, name, object) in objects {
            let r = resources::find("", "v1", plural).unwrap();
            let bytes = serde_json::to_vec(object).unwrap();
            store
                .create(&r.key(namespace, name), move |_| bytes)
                .await
                .unwrap();
        }
        (dir, store)
    }

    fn request(
        verb: &str,
        resource: &str,
        subresource: &str,
        namespace: &str,
        name: &str,
    ) -> Attributes {
        Attributes {
            verb: verb.into(),
            path: String::new(),
            resource: Some(ResourceAttributes {
                resource: resource.into(),
                subresource: subresource.into(),
                namespace: namespace.into(),
                name: name.into(),
                ..ResourceAttributes::default()
            }),
        }
    }

    #[tokio::test]
    async fn a_node_reads_only_the_secrets_of_its_pods_and_writes_only_its_own_objects() {
        let pod = |node: &str, secret: &str| {
            json!({"metadata": {"name": "p"}, "spec": {"nodeName": node,
            "volumes": [{"name": "s", "secret": {"secretName": secret}}], "containers": []}})
        };
        let (_dir, store) = store_with(&[
            ("pods", "ns", "mine", pod("pi", "own")),
            ("pods", "ns", "theirs", pod("other", "foreign")),
        ])
        .await;
        let authz = NodeAuthorizer::new(store);
        let pi = UserInfo::with_groups("system:node:pi", &[NODES_GROUP]);
        let decide = |a: Attributes| authz.decide(&pi, &a).map(|d| d.is_ok());
        assert_eq!(
            decide(request("get", "secrets", "", "ns", "own")),
            Some(true)
        );
        let denied = authz
            .decide(&pi, &request("get", "secrets", "", "ns", "foreign"))
            .unwrap()
            .unwrap_err();
        assert_eq!(denied.code, 403);
        assert!(
            denied
                .message
                .contains("no relationship found between node 'pi'"),
            "{}",
            denied.message
        );
        assert_eq!(
            decide(request("list", "secrets", "", "ns", "")),
            Some(false)
        );
        assert_eq!(
            decide(request("update", "pods", "status", "ns", "mine")),
            Some(true)
        );
        assert_eq!(
            decide(request("update", "pods", "status", "ns", "theirs")),
            Some(false)
        );
        assert_eq!(decide(request("create", "pods", "", "ns", "")), Some(false));
        assert_eq!(
            decide(request("patch", "nodes", "status", "", "pi")),
            Some(true)
        );
        assert_eq!(
            decide(request("patch", "nodes", "", "", "other")),
            Some(false)
        );
        // Not the node authorizer's business: RBAC decides.
        assert_eq!(decide(request("list", "services", "", "", "")), None);
        let alice = UserInfo::with_groups("alice", &["dev"]);
        assert!(authz
            .decide(&alice, &request("get", "secrets", "", "ns", "foreign"))
            .is_none());
    }
}
