//! PodTopologySpread, as upstream's plugin: `DoNotSchedule` constraints refuse a node whose
//! domain would then hold more than `maxSkew` matching pods above the emptiest domain;
//! `ScheduleAnyway` ones score nodes in emptier domains higher.
//!
//! Domains are the values of the topology key over the nodes the pod could go to by its node
//! affinity (`nodeAffinityPolicy: Honor`, the default) and, with `nodeTaintsPolicy: Honor`, its
//! tolerations (the default `Ignore` counts tainted nodes too). Counted pods: same namespace,
//! matching the selector (plus `matchLabelKeys`), not terminating.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Node, Pod, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as LabelSelector_;

use super::cluster::Cluster;
use super::filter::{matches_node_selector_and_affinity, untolerated_taint};
use super::score::MAX_SCORE;
use crate::api::selectors::LabelSelector;

pub const CONSTRAINTS_UNMET: &str = "node(s) didn't match pod topology spread constraints";
pub const MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

/// One constraint with its matching-pod count per domain.
struct Counted {
    key: String,
    max_skew: i64,
    /// Does the incoming pod itself match (it adds one to the domain it goes to)?
    self_match: i64,
    counts: HashMap<String, i64>,
    /// The smallest count, or 0 while fewer than minDomains domains exist.
    global_min: i64,
}

pub struct Prepared {
    hard: Vec<Counted>,
    soft: Vec<Counted>,
    /// The soft constraints are the system defaults: a node missing one's key is scored on the
    /// others rather than given nothing.
    system_defaulted: bool,
}

/// Upstream's system default constraints, for a pod that states none and is grouped by a
/// Service or a controller: spread over nodes (skew 3) and zones (skew 5), as a preference.
fn default_constraints(selector: LabelSelector_) -> Vec<TopologySpreadConstraint> {
    [
        ("kubernetes.io/hostname", 3),
        ("topology.kubernetes.io/zone", 5),
    ]
    .into_iter()
    .map(|(key, max_skew)| TopologySpreadConstraint {
        label_selector: Some(selector.clone()),
        max_skew,
        topology_key: key.to_string(),
        when_unsatisfiable: "ScheduleAnyway".to_string(),
        ..Default::default()
    })
    .collect()
}

fn selector_of(constraint: &TopologySpreadConstraint, pod: &Pod) -> Option<LabelSelector> {
    let mut selector = constraint.label_selector.clone()?;
    // matchLabelKeys: the pod's own values for these keys narrow the selector (a Deployment's
    // pod-template-hash keeps each revision's spread apart).
    let own = pod.metadata.labels.as_ref();
    for key in constraint.match_label_keys.iter().flatten() {
        if let Some(value) = own.and_then(|l| l.get(key)) {
            selector
                .match_labels
                .get_or_insert_with(BTreeMap::new)
                .insert(key.clone(), value.clone());
        }
    }
    LabelSelector::from_label_selector(&selector).ok()
}

fn counts_toward(constraint: &TopologySpreadConstraint, pod: &Pod, node: &Node) -> bool {
    let honor_affinity = constraint.node_affinity_policy.as_deref() != Some("Ignore");
    let honor_taints = constraint.node_taints_policy.as_deref() == Some("Honor");
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    (!honor_affinity || matches_node_selector_and_affinity(pod, node))
        && (!honor_taints || untolerated_taint(node, &tolerations).is_none())
}

fn count(
    constraint: &TopologySpreadConstraint,
    all_keys: &[&str],
    pod: &Pod,
    cluster: &Cluster,
) -> Counted {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
    let selector = selector_of(constraint, pod);
    let matches = |p: &Pod| {
        let empty = BTreeMap::new();
        let labels = p.metadata.labels.as_ref().unwrap_or(&empty);
        selector.as_ref().is_some_and(|s| s.matches(labels))
    };
    let mut counts: HashMap<String, i64> = HashMap::new();
    for node in &cluster.nodes {
        let Some(name) = node.metadata.name.as_deref() else {
            continue;
        };
        let labels = cluster.node_labels(name);
        if !all_keys.iter().all(|k| labels.contains_key(*k))
            || !counts_toward(constraint, pod, node)
        {
            continue;
        }
        let Some(domain) = labels.get(&constraint.topology_key) else {
            continue;
        };
        let matching = cluster
            .pods_on(name)
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.metadata.namespace.as_deref().unwrap_or("") == namespace)
            .filter(|p| matches(p))
            .count();
        *counts.entry(domain.clone()).or_default() += i64::try_from(matching).unwrap_or(i64::MAX);
    }
    let too_few_domains = constraint
        .min_domains
        .is_some_and(|min| counts.len() < usize::try_from(min).unwrap_or(0));
    let global_min = match too_few_domains {
        true => 0,
        false => counts.values().copied().min().unwrap_or(0),
    };
    Counted {
        key: constraint.topology_key.clone(),
        max_skew: i64::from(constraint.max_skew),
        self_match: i64::from(matches(pod)),
        counts,
        global_min,
    }
}

impl Prepared {
    pub fn new(pod: &Pod, cluster: &Cluster) -> Prepared {
        let constraints = pod
            .spec
            .as_ref()
            .and_then(|s| s.topology_spread_constraints.as_deref())
            .unwrap_or_default();
        if constraints.is_empty() {
            let defaults = cluster
                .owners
                .default_selector(pod)
                .map(default_constraints)
                .unwrap_or_default();
            return Prepared {
                hard: Vec::new(),
                soft: defaults
                    .iter()
                    .map(|c| count(c, &[], pod, cluster))
                    .collect(),
                system_defaulted: true,
            };
        }
        let of_kind = |kind: &str| -> Vec<&TopologySpreadConstraint> {
            constraints
                .iter()
                .filter(|c| c.when_unsatisfiable == kind)
                .collect()
        };
        let prepare = |group: Vec<&TopologySpreadConstraint>| -> Vec<Counted> {
            let keys: Vec<&str> = group.iter().map(|c| c.topology_key.as_str()).collect();
            group
                .iter()
                .map(|c| count(c, &keys, pod, cluster))
                .collect()
        };
        Prepared {
            hard: prepare(of_kind("DoNotSchedule")),
            soft: prepare(of_kind("ScheduleAnyway")),
            system_defaulted: false,
        }
    }

    pub fn unfit(&self, node_labels: &BTreeMap<String, String>) -> Option<&'static str> {
        for c in &self.hard {
            let Some(domain) = node_labels.get(&c.key) else {
                return Some(MISSING_LABEL);
            };
            let here = c.counts.get(domain).copied().unwrap_or(0);
            if here + c.self_match - c.global_min > c.max_skew {
                return Some(CONSTRAINTS_UNMET);
            }
        }
        None
    }

    pub fn scores_anything(&self) -> bool {
        !self.soft.is_empty()
    }

    /// Lower is better; None for a node missing a soft constraint's key (it scores 0). Each
    /// domain count is weighted by the log of the number of domains, as upstream, so a
    /// constraint over many domains is not drowned by one over few.
    pub fn raw_score(&self, node_labels: &BTreeMap<String, String>) -> Option<f64> {
        let mut total = 0.0;
        for c in &self.soft {
            let domain = match node_labels.get(&c.key) {
                Some(domain) => domain,
                None if self.system_defaulted => continue,
                None => return None,
            };
            let count = c.counts.get(domain).copied().unwrap_or(0);
            let weight = ((c.counts.len() + 2) as f64).ln();
            total += count as f64 * weight + (c.max_skew - 1) as f64;
        }
        Some(total)
    }
}

/// Upstream's NormalizeScore: the fewest matching pods gets the most points.
pub fn normalize(raw: &[Option<f64>]) -> Vec<i64> {
    let present = raw.iter().flatten();
    let max = present.clone().fold(f64::MIN, |a, b| a.max(*b));
    let min = present.fold(f64::MAX, |a, b| a.min(*b));
    raw.iter()
        .map(|s| match s {
            None => 0,
            Some(_) if max <= 0.0 => MAX_SCORE,
            Some(s) => (MAX_SCORE as f64 * (max + min - s) / max) as i64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::scheduler::filter::tests::{node, pod};
    use serde_json::json;

    fn zoned(name: &str, zone: Option<&str>) -> Arc<Node> {
        let mut n = node(name, "4", "4Gi", "110");
        if let Some(zone) = zone {
            n.metadata
                .labels
                .as_mut()
                .unwrap()
                .insert("zone".into(), zone.into());
        }
        Arc::new(n)
    }

    fn web(constraints: serde_json::Value) -> Pod {
        let mut p = pod(None, None);
        p.metadata.labels = Some(BTreeMap::from([("app".to_string(), "web".to_string())]));
        p.spec.as_mut().unwrap().topology_spread_constraints =
            serde_json::from_value(constraints).unwrap();
        p
    }

    fn constraint(key: &str, skew: i32, when: &str) -> serde_json::Value {
        json!({"maxSkew": skew, "topologyKey": key, "whenUnsatisfiable": when,
            "labelSelector": {"matchLabels": {"app": "web"}}})
    }

    /// Zone a: a1, a2; zone b: b1; c0 has no zone label.
    fn cluster(placed: &[&str]) -> Cluster {
        let mut c = Cluster::new(vec![
            zoned("a1", Some("a")),
            zoned("a2", Some("a")),
            zoned("b1", Some("b")),
            zoned("c0", None),
        ]);
        for node in placed {
            c.place(Arc::new(web(json!(null))), node);
        }
        c
    }

    fn verdicts(p: &Pod, c: &Cluster) -> Vec<Option<&'static str>> {
        let prepared = Prepared::new(p, c);
        ["a1", "a2", "b1", "c0"]
            .iter()
            .map(|n| prepared.unfit(c.node_labels(n)))
            .collect()
    }

    #[test]
    fn do_not_schedule_refuses_the_fuller_zone_once_the_skew_would_pass_max_skew() {
        let p = web(json!([constraint("zone", 1, "DoNotSchedule")]));
        let c = cluster(&["a1"]);
        assert_eq!(
            verdicts(&p, &c),
            vec![
                Some(CONSTRAINTS_UNMET),
                Some(CONSTRAINTS_UNMET),
                None,
                Some(MISSING_LABEL)
            ]
        );
        // Balanced again: any zone will do.
        let c = cluster(&["a1", "b1"]);
        assert_eq!(verdicts(&p, &c)[..3], [None, None, None]);
    }

    #[test]
    fn min_domains_counts_missing_domains_as_empty() {
        let mut spec = constraint("zone", 1, "DoNotSchedule");
        spec["minDomains"] = json!(3);
        let p = web(json!([spec]));
        // Two zones exist, three are wanted: the global minimum is 0, so a zone already
        // holding one pod is full.
        let c = cluster(&["a1", "b1"]);
        assert_eq!(
            verdicts(&p, &c)[..3],
            [
                Some(CONSTRAINTS_UNMET),
                Some(CONSTRAINTS_UNMET),
                Some(CONSTRAINTS_UNMET)
            ]
        );
    }

    #[test]
    fn nodes_the_pod_cannot_go_to_do_not_count_as_domains() {
        let p = {
            let mut p = web(json!([constraint("zone", 1, "DoNotSchedule")]));
            p.spec.as_mut().unwrap().node_selector =
                Some(BTreeMap::from([("zone".to_string(), "a".to_string())]));
            p
        };
        // Zone b is out of reach, so zone a's single pod is not a skew to worry about.
        let c = cluster(&["a1"]);
        let prepared = Prepared::new(&p, &c);
        assert_eq!(prepared.unfit(c.node_labels("a2")), None);
        // With nodeAffinityPolicy Ignore, the empty zone b counts and zone a is full.
        let mut ignoring = constraint("zone", 1, "DoNotSchedule");
        ignoring["nodeAffinityPolicy"] = json!("Ignore");
        let mut p = p;
        p.spec.as_mut().unwrap().topology_spread_constraints =
            serde_json::from_value(json!([ignoring])).unwrap();
        let prepared = Prepared::new(&p, &c);
        assert_eq!(prepared.unfit(c.node_labels("a2")), Some(CONSTRAINTS_UNMET));
    }

    #[test]
    fn a_pod_its_replica_set_groups_is_spread_by_default_even_without_zones() {
        let mut c = Cluster::new(vec![zoned("n1", None), zoned("n2", None)]);
        c.owners = crate::scheduler::owners::tests::owners(&[(
            "ReplicaSet",
            "web-1",
            json!({"matchLabels": {"app": "web"}}),
        )]);
        let mut replica = web(json!(null));
        replica.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: "web-1".into(),
                uid: "u".into(),
                controller: Some(true),
                block_owner_deletion: None,
            },
        ]);
        c.place(Arc::new(replica.clone()), "n1");
        c.place(Arc::new(replica.clone()), "n1");
        let prepared = Prepared::new(&replica, &c);
        assert!(prepared.scores_anything());
        let raw: Vec<Option<f64>> = ["n1", "n2"]
            .iter()
            .map(|n| prepared.raw_score(c.node_labels(n)))
            .collect();
        let scores = normalize(&raw);
        assert!(scores[1] > scores[0], "{scores:?}");
        // A pod nothing groups is not spread.
        assert!(!Prepared::new(&web(json!(null)), &c).scores_anything());
    }

    #[test]
    fn schedule_anyway_scores_the_emptier_domain_higher() {
        let p = web(json!([constraint("zone", 1, "ScheduleAnyway")]));
        let c = cluster(&["a1", "a2", "b1"]);
        let prepared = Prepared::new(&p, &c);
        assert!(verdicts(&p, &c).iter().all(Option::is_none));
        let raw: Vec<Option<f64>> = ["a1", "b1", "c0"]
            .iter()
            .map(|n| prepared.raw_score(c.node_labels(n)))
            .collect();
        let scores = normalize(&raw);
        assert!(scores[1] > scores[0], "{scores:?}");
        assert_eq!(scores[2], 0);
    }
}
