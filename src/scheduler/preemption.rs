//! DefaultPreemption, the essential part: when a pod fits nowhere, find the node where evicting
//! lower-priority pods makes room, evicting as few and as unimportant pods as possible and
//! sparing those a PodDisruptionBudget protects where it can.
//!
//! Per node: take away every lower-priority pod; if the pod then fits, give back ("reprieve")
//! the most important ones first, PDB-protected ones before the rest, as long as the pod still
//! fits. The victims are what could not be given back. Among nodes, the one with the fewest
//! PDB violations wins, then the lowest highest-victim priority, then the smallest priority
//! sum, then the fewest victims (upstream's order, less its start-time tie-breaks).
//!
//! A node is a candidate only if the pod would pass every filter there once all lower-priority
//! pods are gone: evictions free resources and host ports, and take away the pods whose
//! anti-affinity (or whose count in a topology spread) kept it out; they do nothing for a
//! node selector, a taint or a volume's node affinity (upstream's UnschedulableAndUnresolvable).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use super::cluster::Cluster;
use super::{filter, interpod, spread, volumes};
use crate::api::selectors::LabelSelector;

/// A node and the pods to evict there.
#[derive(Debug)]
pub struct Candidate {
    pub node: String,
    pub victims: Vec<Arc<Pod>>,
    pdb_violations: usize,
}

/// What a PodDisruptionBudget still allows.
pub struct Budget {
    namespace: String,
    selector: LabelSelector,
    allowed: i64,
}

pub fn budgets(pdbs: &[PodDisruptionBudget]) -> Vec<Budget> {
    pdbs.iter()
        .filter_map(|pdb| {
            let selector = pdb.spec.as_ref()?.selector.as_ref()?;
            Some(Budget {
                namespace: pdb.metadata.namespace.clone()?,
                selector: LabelSelector::from_label_selector(selector).ok()?,
                allowed: i64::from(pdb.status.as_ref()?.disruptions_allowed),
            })
        })
        .collect()
}

pub fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Why this pod may not evict others, in upstream's words, if it may not: not with
/// `preemptionPolicy: Never`, and not while the victims of its last preemption are still
/// leaving its nominated node (it would only evict more).
pub fn ineligible(pod: &Pod, cluster: &Cluster) -> Option<&'static str> {
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return Some("not eligible due to preemptionPolicy=Never.");
    }
    let nominated = pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref());
    let own_priority = priority(pod);
    let victims_leaving = nominated.is_some_and(|node| {
        cluster
            .pods_on(node)
            .iter()
            .any(|p| p.metadata.deletion_timestamp.is_some() && priority(p) < own_priority)
    });
    victims_leaving.then_some("not eligible due to a terminating pod on the nominated node.")
}

/// Upstream's per-node verdict where no eviction can help (UnschedulableAndUnresolvable).
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// Upstream's per-node verdict where nothing there has a lower priority.
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// Filter verdicts no eviction changes: they are about the node or the pod, not the pods on it.
fn unresolvable(reason: &str) -> bool {
    reason == filter::NODE_UNSCHEDULABLE
        || reason == filter::AFFINITY_MISMATCH
        || reason.starts_with("node(s) had untolerated taint")
        || reason == interpod::AFFINITY_UNMET
        || reason == spread::MISSING_LABEL
        || reason == volumes::VOLUME_NODE_AFFINITY_CONFLICT
}

/// Why the pod fails the filters on `node` in the cluster as `cluster` shows it.
fn unfit_after_evictions(pod: &Pod, node: &Node, cluster: &Cluster) -> Vec<String> {
    let affinity = interpod::Prepared::new(pod, cluster);
    let spreading = spread::Prepared::new(pod, cluster);
    super::node_unfit(pod, node, cluster, &affinity, &spreading)
}

fn fits(pod: &Pod, node: &Node, cluster: &Cluster) -> bool {
    unfit_after_evictions(pod, node, cluster).is_empty()
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// The best node to preempt on; if there is none, upstream's account of why, node by node
/// (`0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption
/// victims found for incoming pod.`).
pub fn find(pod: &Pod, cluster: &Cluster, budgets: &[Budget]) -> Result<Candidate, String> {
    let own_priority = priority(pod);
    let affinity = interpod::Prepared::new(pod, cluster);
    let spreading = spread::Prepared::new(pod, cluster);
    let mut verdicts: Vec<Vec<String>> = Vec::new();
    let mut best: Option<(Candidate, (usize, i32, i64, usize))> = None;
    for node in &cluster.nodes {
        let Some(name) = node.metadata.name.as_deref() else {
            continue;
        };
        let unfit = super::node_unfit(pod, node, cluster, &affinity, &spreading);
        if unfit.iter().any(|r| unresolvable(r)) {
            verdicts.push(vec![NOT_HELPFUL.to_string()]);
            continue;
        }
        let mut lower: Vec<&Arc<Pod>> = cluster
            .pods_on(name)
            .iter()
            .filter(|p| priority(p) < own_priority && p.metadata.deletion_timestamp.is_none())
            .collect();
        if lower.is_empty() {
            verdicts.push(vec![NO_VICTIMS.to_string()]);
            continue;
        }
        // With every lower-priority pod gone, the pod must fit: a node that still refuses it
        // does so for a reason no eviction fixes (resources the node does not have, the
        // affinity of pods that stay).
        let mut simulated = cluster.clone();
        let all_lower: Vec<String> = lower.iter().map(|p| uid(p)).collect();
        simulated.remove(name, &all_lower);
        let still_unfit = unfit_after_evictions(pod, node, &simulated);
        if !still_unfit.is_empty() {
            verdicts.push(still_unfit);
            continue;
        }
        // Most important first: they are the first given back.
        lower.sort_by(|a, b| {
            priority(b).cmp(&priority(a)).then(
                a.metadata
                    .creation_timestamp
                    .cmp(&b.metadata.creation_timestamp),
            )
        });
        let mut remaining: Vec<i64> = budgets.iter().map(|b| b.allowed).collect();
        let (protected, unprotected): (Vec<&Arc<Pod>>, Vec<&Arc<Pod>>) =
            lower.into_iter().partition(|p| {
                let mut violates = false;
                for (budget, left) in budgets.iter().zip(remaining.iter_mut()) {
                    let empty = BTreeMap::new();
                    let labels = p.metadata.labels.as_ref().unwrap_or(&empty);
                    if p.metadata.namespace.as_deref() == Some(budget.namespace.as_str())
                        && budget.selector.matches(labels)
                    {
                        *left -= 1;
                        violates |= *left < 0;
                    }
                }
                violates
            });
        let mut victims = Vec::new();
        let mut pdb_violations = 0;
        for (p, is_protected) in protected
            .iter()
            .map(|p| (p, true))
            .chain(unprotected.iter().map(|p| (p, false)))
        {
            simulated.place(Arc::clone(p), name);
            if !fits(pod, node, &simulated) {
                simulated.remove(name, &[uid(p)]);
                pdb_violations += usize::from(is_protected);
                victims.push(Arc::clone(p));
            }
        }
        let rank = (
            pdb_violations,
            victims
                .iter()
                .map(|p| priority(p))
                .max()
                .unwrap_or(i32::MIN),
            victims.iter().map(|p| i64::from(priority(p))).sum::<i64>(),
            victims.len(),
        );
        if best.as_ref().is_none_or(|(_, r)| rank < *r) {
            let candidate = Candidate {
                node: name.to_string(),
                victims,
                pdb_violations,
            };
            best = Some((candidate, rank));
        }
    }
    best.map(|(c, _)| c)
        .ok_or_else(|| filter::fit_error_message(cluster.nodes.len(), &verdicts))
}

impl Candidate {
    pub fn violates_budgets(&self) -> bool {
        self.pdb_violations > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::filter::tests::{node, pod};
    use serde_json::json;

    fn prioritized(name: &str, cpu: &str, priority: i32, node: Option<&str>) -> Pod {
        let mut p = pod(Some(cpu), None);
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(name.into());
        p.metadata.labels = Some(BTreeMap::from([("app".to_string(), name.to_string())]));
        let spec = p.spec.as_mut().unwrap();
        spec.priority = Some(priority);
        spec.node_name = node.map(String::from);
        p
    }

    fn cluster(pods: Vec<Pod>) -> Cluster {
        Cluster::new(vec![
            Arc::new(node("n1", "2", "4Gi", "110")),
            Arc::new(node("n2", "2", "4Gi", "110")),
        ])
        .with_pods(pods.into_iter().map(Arc::new))
    }

    fn victim_names(c: &Candidate) -> Vec<&str> {
        c.victims
            .iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect()
    }

    #[test]
    fn the_node_with_the_least_important_victims_is_chosen_and_no_more_are_evicted() {
        let c = cluster(vec![
            prioritized("mid", "1500m", 100, Some("n1")),
            prioritized("low-a", "1", 10, Some("n2")),
            prioritized("low-b", "1", 10, Some("n2")),
        ]);
        let high = prioritized("high", "1", 1000, None);
        let chosen = find(&high, &c, &[]).expect("a candidate");
        // n1 would need "mid" (priority 100) to go; n2 needs only one priority-10 pod.
        assert_eq!(chosen.node, "n2");
        assert_eq!(chosen.victims.len(), 1);
    }

    #[test]
    fn a_victim_whose_anti_affinity_keeps_the_pod_out_is_evicted() {
        let mut loner = prioritized("loner", "100m", 10, Some("n1"));
        loner.spec.as_mut().unwrap().affinity = serde_json::from_value(json!({
            "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": {"app": "high"}},
                "topologyKey": "kubernetes.io/hostname"}]}}))
        .unwrap();
        let c = Cluster::new(vec![Arc::new(node("n1", "4", "4Gi", "110"))]).with_pods([
            Arc::new(loner),
            Arc::new(prioritized("bystander", "100m", 10, Some("n1"))),
        ]);
        let chosen = find(&prioritized("high", "100m", 1000, None), &c, &[]).expect("a candidate");
        assert_eq!(chosen.node, "n1");
        assert_eq!(victim_names(&chosen), vec!["loner"]);
    }

    #[test]
    fn no_eviction_helps_on_a_node_the_pod_does_not_tolerate_or_select() {
        let mut tainted = node("n1", "1", "4Gi", "110");
        tainted.spec.as_mut().unwrap().taints = Some(vec![k8s_openapi::api::core::v1::Taint {
            key: "dedicated".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        }]);
        let c = Cluster::new(vec![
            Arc::new(tainted),
            Arc::new(node("n2", "1", "4Gi", "110")),
        ])
        .with_pods([
            Arc::new(prioritized("low-1", "1", 10, Some("n1"))),
            Arc::new(prioritized("low-2", "1", 10, Some("n2"))),
        ]);
        let mut high = prioritized("high", "1", 1000, None);
        high.spec.as_mut().unwrap().node_selector = Some(BTreeMap::from([(
            "kubernetes.io/hostname".to_string(),
            "n1".to_string(),
        )]));
        // n1 is tainted and n2 is not selected: evicting anything would not help.
        assert!(find(&high, &c, &[]).is_err());
        // Without the selector, n2 will do.
        high.spec.as_mut().unwrap().node_selector = None;
        let chosen = find(&high, &c, &[]).expect("a candidate");
        assert_eq!(chosen.node, "n2");
    }

    #[test]
    fn pods_of_equal_or_higher_priority_are_never_victims() {
        let c = cluster(vec![
            prioritized("peer1", "2", 1000, Some("n1")),
            prioritized("peer2", "2", 2000, Some("n2")),
        ]);
        assert!(find(&prioritized("high", "1", 1000, None), &c, &[]).is_err());
    }

    #[test]
    fn a_pod_protected_by_a_budget_is_spared_when_another_victim_will_do() {
        let c = cluster(vec![
            prioritized("guarded", "1", 10, Some("n1")),
            prioritized("free", "1", 10, Some("n1")),
            prioritized("big", "2", 500, Some("n2")),
        ]);
        let pdb: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": "g", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "guarded"}}},
            "status": {"disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1,
                "expectedPods": 1}}))
        .unwrap();
        let chosen =
            find(&prioritized("high", "1", 1000, None), &c, &budgets(&[pdb])).expect("a candidate");
        assert_eq!(chosen.node, "n1");
        assert_eq!(victim_names(&chosen), vec!["free"]);
        assert!(!chosen.violates_budgets());
    }

    #[test]
    fn never_policy_and_victims_still_leaving_hold_preemption_back() {
        let mut polite = prioritized("polite", "1", 1000, None);
        polite.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
        let c = cluster(vec![]);
        assert_eq!(
            ineligible(&polite, &c),
            Some("not eligible due to preemptionPolicy=Never.")
        );

        let mut leaving = prioritized("leaving", "2", 10, Some("n1"));
        leaving.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        let c = cluster(vec![leaving]);
        let mut waiting = prioritized("waiting", "1", 1000, None);
        assert_eq!(ineligible(&waiting, &c), None);
        waiting.status = Some(k8s_openapi::api::core::v1::PodStatus {
            nominated_node_name: Some("n1".into()),
            ..Default::default()
        });
        assert_eq!(
            ineligible(&waiting, &c),
            Some("not eligible due to a terminating pod on the nominated node.")
        );
    }
}
