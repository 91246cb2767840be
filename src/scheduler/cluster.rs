//! One snapshot of the cluster as the scheduler's decisions see it: nodes, what each holds,
//! the pods on each (bound or assumed), namespace labels and volume claims. A round builds it
//! once and places pods into it one after another, so each decision counts the ones before it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};

use super::filter::NodeUsage;
use super::owners::Owners;

#[derive(Default, Clone)]
pub struct Cluster {
    /// Sorted by name, so ties resolve the same way every time.
    pub nodes: Vec<Arc<Node>>,
    pub usage: BTreeMap<String, NodeUsage>,
    /// Pods holding a place on each node: bound or assumed, not finished.
    pub pods_on: BTreeMap<String, Vec<Arc<Pod>>>,
    /// Pods (with their node) that carry pod affinity or anti-affinity terms: the only ones whose
    /// terms can keep another pod away or draw it near, kept apart so a pod without affinity
    /// among pods without affinity costs nothing.
    pub with_affinity: Vec<(String, Arc<Pod>)>,
    pub namespace_labels: HashMap<String, BTreeMap<String, String>>,
    /// PersistentVolumeClaims by `namespace/name`.
    pub claims: HashMap<String, Arc<PersistentVolumeClaim>>,
    /// PersistentVolumes by name.
    pub volumes: HashMap<String, Arc<PersistentVolume>>,
    /// What groups pods, for default topology spreading.
    pub owners: Owners,
    node_index: HashMap<String, usize>,
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

impl Cluster {
    pub fn new(mut nodes: Vec<Arc<Node>>) -> Cluster {
        nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let usage = nodes
            .iter()
            .filter_map(|n| Some((n.metadata.name.clone()?, NodeUsage::from_node(n))))
            .collect();
        let node_index = nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some((n.metadata.name.clone()?, i)))
            .collect();
        Cluster {
            nodes,
            usage,
            node_index,
            ..Default::default()
        }
    }

    /// Counts every pod that holds a place on a known node (finished pods hold none).
    pub fn with_pods(mut self, pods: impl IntoIterator<Item = Arc<Pod>>) -> Cluster {
        for pod in pods {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if matches!(phase, Some("Succeeded" | "Failed")) {
                continue;
            }
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            if let Some(node) = node.filter(|n| !n.is_empty()) {
                self.place(pod, &node);
            }
        }
        self
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.node_index.get(name).map(|&i| self.nodes[i].as_ref())
    }

    pub fn node_labels(&self, name: &str) -> &BTreeMap<String, String> {
        self.node(name)
            .and_then(|n| n.metadata.labels.as_ref())
            .unwrap_or(&NO_LABELS)
    }

    pub fn pods_on(&self, node: &str) -> &[Arc<Pod>] {
        self.pods_on.get(node).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every pod holding a place, with its node.
    pub fn placed_pods(&self) -> impl Iterator<Item = (&str, &Arc<Pod>)> {
        self.pods_on
            .iter()
            .flat_map(|(node, pods)| pods.iter().map(move |p| (node.as_str(), p)))
    }

    /// Counts `pod` on `node` (bound, assumed, or reserved for a preemptor); unknown nodes are
    /// ignored, as a pod there takes nothing from the nodes we can place on.
    pub fn place(&mut self, pod: Arc<Pod>, node: &str) {
        let Some(usage) = self.usage.get_mut(node) else {
            return;
        };
        usage.add_pod(&pod);
        if has_pod_affinity(&pod) {
            self.with_affinity.push((node.to_string(), pod.clone()));
        }
        self.pods_on.entry(node.to_string()).or_default().push(pod);
    }

    /// Takes pods off a node, as preemption does when it evicts them.
    pub fn remove(&mut self, node: &str, uids: &[String]) {
        let is_gone = |p: &Arc<Pod>| {
            p.metadata
                .uid
                .as_ref()
                .is_some_and(|uid| uids.contains(uid))
        };
        self.with_affinity.retain(|(n, p)| n != node || !is_gone(p));
        let Some(pods) = self.pods_on.get_mut(node) else {
            return;
        };
        pods.retain(|p| !is_gone(p));
        if let Some(n) = self.node(node) {
            let mut usage = NodeUsage::from_node(n);
            for pod in self.pods_on(node) {
                usage.add_pod(pod);
            }
            self.usage.insert(node.to_string(), usage);
        }
    }
}

pub fn has_pod_affinity(pod: &Pod) -> bool {
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    affinity.is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some())
}
