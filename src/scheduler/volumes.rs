//! VolumeBinding, the simple form: a pod using a claim bound to a PersistentVolume with
//! `nodeAffinity` may only go to nodes that affinity selects (a local volume lives on one
//! machine). Unbound claims are left to the provisioner, which binds them for the node the pod
//! lands on.

use k8s_openapi::api::core::v1::{Node, Pod};

use super::cluster::Cluster;
use super::filter::node_selector_matches;

pub const VOLUME_NODE_AFFINITY_CONFLICT: &str = "node(s) had volume node affinity conflict";

/// Does the pod use any claim at all? Most pods do not, and skip the lookups.
pub fn uses_claims(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|v| v.iter().any(|v| v.persistent_volume_claim.is_some()))
}

/// Why the pod's bound volumes keep it off `node`, if they do.
pub fn unfit(pod: &Pod, node: &Node, cluster: &Cluster) -> Option<&'static str> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    for source in volumes
        .into_iter()
        .flatten()
        .filter_map(|v| v.persistent_volume_claim.as_ref())
    {
        let key = format!("{namespace}/{}", source.claim_name);
        let Some(claim) = cluster.claims.get(&key) else {
            continue;
        };
        let bound_to = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref());
        let Some(volume) = bound_to.and_then(|name| cluster.volumes.get(name)) else {
            continue;
        };
        let required = volume
            .spec
            .as_ref()
            .and_then(|s| s.node_affinity.as_ref())
            .and_then(|a| a.required.as_ref());
        if let Some(selector) = required {
            if !node_selector_matches(selector, node) {
                return Some(VOLUME_NODE_AFFINITY_CONFLICT);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::scheduler::filter::tests::{node, pod};
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    use serde_json::json;

    #[test]
    fn a_pod_follows_its_bound_volume_to_the_node_the_volume_selects() {
        let mut c = Cluster::new(vec![
            Arc::new(node("pi1", "4", "4Gi", "110")),
            Arc::new(node("pi2", "4", "4Gi", "110")),
        ]);
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "default"},
            "spec": {"volumeName": "pv-data"}}))
        .unwrap();
        let volume: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": "pv-data"},
            "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["pi2"]}]}]}}}}))
        .unwrap();
        c.claims.insert("default/data".into(), Arc::new(claim));
        c.volumes.insert("pv-data".into(), Arc::new(volume));
        let mut p = pod(None, None);
        p.spec.as_mut().unwrap().volumes = serde_json::from_value(
            json!([{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]),
        )
        .unwrap();
        assert!(uses_claims(&p));
        let on = |c: &Cluster, name: &str| unfit(&p, c.node(name).unwrap(), c);
        assert_eq!(on(&c, "pi1"), Some(VOLUME_NODE_AFFINITY_CONFLICT));
        assert_eq!(on(&c, "pi2"), None);
        // A claim not bound yet places no constraint.
        c.claims.insert(
            "default/data".into(),
            Arc::new(
                serde_json::from_value(json!({"metadata": {"name": "data"}, "spec": {}})).unwrap(),
            ),
        );
        assert_eq!(on(&c, "pi1"), None);
    }
}
