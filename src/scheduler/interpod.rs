//! InterPodAffinity, as upstream's plugin (checked in its order): a pod's required affinity needs a matching pod in the
//! node's topology domain, its required anti-affinity forbids one, and existing pods' required
//! anti-affinity keeps matching pods out of their domain. Preferred terms (the pod's own and,
//! symmetrically, those of existing pods) score domains by how many matching pods they hold.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm};

use super::cluster::Cluster;
use crate::api::selectors::LabelSelector;

pub const EXISTING_ANTI_AFFINITY: &str = "node(s) didn't satisfy existing pods anti-affinity rules";
pub const AFFINITY_UNMET: &str = "node(s) didn't match pod affinity rules";
pub const ANTI_AFFINITY_UNMET: &str = "node(s) didn't match pod anti-affinity rules";

/// Upstream's `hardPodAffinitySymmetricWeight`: an existing pod's required affinity for the
/// incoming pod draws it near with this weight.
const HARD_AFFINITY_WEIGHT: i64 = 1;

/// A topology domain: a node label key and its value.
type Domain = (String, String);

/// What the filter and score need for one incoming pod, computed once over all pods.
pub struct Prepared {
    /// Domains where an existing pod's required anti-affinity forbids this pod.
    forbidden_by_existing: Vec<Domain>,
    /// Per required affinity term: the domains holding a matching pod.
    affinity_domains: Vec<(String, Vec<String>)>,
    /// No pod anywhere matches the affinity terms, but the pod matches them itself: the first
    /// pod of a group that wants to be together may go anywhere.
    first_of_its_group: bool,
    /// Per required anti-affinity term: the domains holding a matching pod.
    anti_affinity_domains: Vec<(String, Vec<String>)>,
    /// Preferred (anti-)affinity weights per domain.
    weights: HashMap<Domain, i64>,
}

fn required(pod: &Pod, anti: bool) -> Vec<&PodAffinityTerm> {
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let terms = match anti {
        false => affinity
            .and_then(|a| a.pod_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
        true => affinity
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
    };
    terms.into_iter().flatten().collect()
}

/// Preferred terms with their weights, anti-affinity ones negative.
fn preferred(pod: &Pod) -> Vec<(&PodAffinityTerm, i64)> {
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let near = affinity
        .and_then(|a| a.pod_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .map(|w| (&w.pod_affinity_term, i64::from(w.weight)));
    let apart = affinity
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .map(|w| (&w.pod_affinity_term, -i64::from(w.weight)));
    near.chain(apart).collect()
}

/// Does `term`, written in a pod of namespace `owner_namespace`, select `target`? Without
/// namespaces and namespaceSelector it looks in its own namespace; a nil label selector selects
/// nothing, an empty one everything.
pub fn term_matches(
    term: &PodAffinityTerm,
    owner_namespace: &str,
    target: &Pod,
    namespace_labels: &HashMap<String, BTreeMap<String, String>>,
) -> bool {
    let target_namespace = target.metadata.namespace.as_deref().unwrap_or("");
    let names = term.namespaces.as_deref().unwrap_or_default();
    let in_namespace = if names.is_empty() && term.namespace_selector.is_none() {
        target_namespace == owner_namespace
    } else {
        names.iter().any(|n| n == target_namespace)
            || term.namespace_selector.as_ref().is_some_and(|s| {
                let empty = BTreeMap::new();
                let labels = namespace_labels.get(target_namespace).unwrap_or(&empty);
                LabelSelector::from_label_selector(s).is_ok_and(|s| s.matches(labels))
            })
    };
    if !in_namespace {
        return false;
    }
    let Some(selector) = term.label_selector.as_ref() else {
        return false;
    };
    let empty = BTreeMap::new();
    let labels = target.metadata.labels.as_ref().unwrap_or(&empty);
    LabelSelector::from_label_selector(selector).is_ok_and(|s| s.matches(labels))
}

fn namespace_of(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("")
}

impl Prepared {
    pub fn new(pod: &Pod, cluster: &Cluster) -> Prepared {
        let namespaces = &cluster.namespace_labels;
        let own_namespace = namespace_of(pod);
        let mut weights: HashMap<Domain, i64> = HashMap::new();
        let mut forbidden_by_existing = Vec::new();

        // Existing pods' terms about the incoming pod.
        for (node, existing) in &cluster.with_affinity {
            let labels = cluster.node_labels(node);
            let domain = |key: &str| Some((key.to_string(), labels.get(key)?.clone()));
            let owner = namespace_of(existing);
            for term in required(existing, true) {
                if term_matches(term, owner, pod, namespaces) {
                    forbidden_by_existing.extend(domain(&term.topology_key));
                }
            }
            for term in required(existing, false) {
                if term_matches(term, owner, pod, namespaces) {
                    if let Some(d) = domain(&term.topology_key) {
                        *weights.entry(d).or_default() += HARD_AFFINITY_WEIGHT;
                    }
                }
            }
            for (term, weight) in preferred(existing) {
                if term_matches(term, owner, pod, namespaces) {
                    if let Some(d) = domain(&term.topology_key) {
                        *weights.entry(d).or_default() += weight;
                    }
                }
            }
        }

        // The incoming pod's terms about existing pods: only they need a walk over every pod.
        let wants_near = required(pod, false);
        let wants_apart = required(pod, true);
        let prefers = preferred(pod);
        let mut affinity_domains: Vec<(String, Vec<String>)> = wants_near
            .iter()
            .map(|t| (t.topology_key.clone(), Vec::new()))
            .collect();
        let mut anti_affinity_domains: Vec<(String, Vec<String>)> = wants_apart
            .iter()
            .map(|t| (t.topology_key.clone(), Vec::new()))
            .collect();
        let mut any_affinity_match = false;
        if !(wants_near.is_empty() && wants_apart.is_empty() && prefers.is_empty()) {
            for (node, existing) in cluster.placed_pods() {
                let labels = cluster.node_labels(node);
                for (term, (key, domains)) in wants_near.iter().zip(affinity_domains.iter_mut()) {
                    if term_matches(term, own_namespace, existing, namespaces) {
                        any_affinity_match = true;
                        domains.extend(labels.get(key).cloned());
                    }
                }
                for (term, (key, domains)) in
                    wants_apart.iter().zip(anti_affinity_domains.iter_mut())
                {
                    if term_matches(term, own_namespace, existing, namespaces) {
                        domains.extend(labels.get(key).cloned());
                    }
                }
                for (term, weight) in &prefers {
                    if term_matches(term, own_namespace, existing, namespaces) {
                        if let Some(value) = labels.get(&term.topology_key) {
                            *weights
                                .entry((term.topology_key.clone(), value.clone()))
                                .or_default() += weight;
                        }
                    }
                }
            }
        }
        let first_of_its_group = !wants_near.is_empty()
            && !any_affinity_match
            && wants_near
                .iter()
                .all(|t| term_matches(t, own_namespace, pod, namespaces));
        Prepared {
            forbidden_by_existing,
            affinity_domains,
            first_of_its_group,
            anti_affinity_domains,
            weights,
        }
    }

    /// Why the pod may not go to a node with these labels, in upstream's order; None if it may.
    pub fn unfit(&self, node_labels: &BTreeMap<String, String>) -> Option<&'static str> {
        let in_domain = |key: &str, values: &[String]| {
            node_labels
                .get(key)
                .is_some_and(|v| values.iter().any(|x| x == v))
        };
        let affinity_met = self.first_of_its_group
            || self
                .affinity_domains
                .iter()
                .all(|(key, values)| in_domain(key, values));
        // Even the first of a group needs the topology label on its node.
        let labelled = self
            .affinity_domains
            .iter()
            .all(|(key, _)| node_labels.contains_key(key));
        if !affinity_met || !labelled {
            return Some(AFFINITY_UNMET);
        }
        if self
            .anti_affinity_domains
            .iter()
            .any(|(key, values)| in_domain(key, values))
        {
            return Some(ANTI_AFFINITY_UNMET);
        }
        if self
            .forbidden_by_existing
            .iter()
            .any(|(k, v)| node_labels.get(k) == Some(v))
        {
            return Some(EXISTING_ANTI_AFFINITY);
        }
        None
    }

    /// The raw preferred-affinity score of a node: the weights of the domains it is in.
    pub fn score(&self, node_labels: &BTreeMap<String, String>) -> i64 {
        self.weights
            .iter()
            .filter(|((key, value), _)| node_labels.get(key) == Some(value))
            .map(|(_, w)| *w)
            .sum()
    }

    pub fn scores_anything(&self) -> bool {
        self.weights.values().any(|w| *w != 0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::scheduler::filter::tests::{node, pod};
    use serde_json::json;

    fn labelled(name: &str, app: &str, affinity: serde_json::Value) -> Pod {
        let mut p = pod(None, None);
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(name.into());
        p.metadata.labels = Some(BTreeMap::from([("app".to_string(), app.to_string())]));
        p.spec.as_mut().unwrap().affinity = serde_json::from_value(affinity).unwrap();
        p
    }

    fn zoned(name: &str, zone: &str) -> Arc<k8s_openapi::api::core::v1::Node> {
        let mut n = node(name, "4", "4Gi", "110");
        n.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("topology.kubernetes.io/zone".into(), zone.into());
        Arc::new(n)
    }

    fn cluster(placed: Vec<(&str, Pod)>) -> Cluster {
        let mut c = Cluster::new(vec![zoned("a1", "a"), zoned("a2", "a"), zoned("b1", "b")]);
        for (node, p) in placed {
            c.place(Arc::new(p), node);
        }
        c
    }

    fn term(app: &str, key: &str) -> serde_json::Value {
        json!({"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key})
    }

    fn verdicts(p: &Pod, c: &Cluster) -> Vec<Option<&'static str>> {
        let prepared = Prepared::new(p, c);
        ["a1", "a2", "b1"]
            .iter()
            .map(|n| prepared.unfit(c.node_labels(n)))
            .collect()
    }

    #[test]
    fn required_anti_affinity_on_hostname_keeps_replicas_off_occupied_nodes() {
        let anti = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            [term("web", "kubernetes.io/hostname")]}});
        let c = cluster(vec![("a1", labelled("w0", "web", anti.clone()))]);
        let incoming = labelled("w1", "web", anti);
        // a1 is refused twice over; the incoming pod's own rule is checked first.
        assert_eq!(
            verdicts(&incoming, &c),
            vec![Some(ANTI_AFFINITY_UNMET), None, None]
        );
    }

    #[test]
    fn an_existing_pods_anti_affinity_keeps_matching_pods_out_of_its_whole_zone() {
        let anti = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            [term("db", "topology.kubernetes.io/zone")]}});
        let c = cluster(vec![("a1", labelled("loner", "x", anti))]);
        let db = labelled("db", "db", json!(null));
        assert_eq!(
            verdicts(&db, &c),
            vec![
                Some(EXISTING_ANTI_AFFINITY),
                Some(EXISTING_ANTI_AFFINITY),
                None
            ]
        );
        let other = labelled("web", "web", json!(null));
        assert_eq!(verdicts(&other, &c), vec![None, None, None]);
    }

    #[test]
    fn required_affinity_needs_a_matching_pod_in_the_zone_unless_it_is_the_first() {
        let near = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            [term("cache", "topology.kubernetes.io/zone")]}});
        let c = cluster(vec![("a2", labelled("cache", "cache", json!(null)))]);
        let web = labelled("web", "web", near.clone());
        assert_eq!(verdicts(&web, &c), vec![None, None, Some(AFFINITY_UNMET)]);
        // Nobody matches and the pod does not match itself: nowhere.
        let empty = cluster(vec![]);
        assert_eq!(verdicts(&web, &empty), vec![Some(AFFINITY_UNMET); 3]);
        // The first cache pod wanting other cache pods near may go anywhere.
        let first = labelled("cache", "cache", near);
        assert_eq!(verdicts(&first, &empty), vec![None, None, None]);
    }

    #[test]
    fn terms_look_in_their_own_namespace_unless_told_otherwise() {
        let anti = |extra: serde_json::Value| {
            let mut t = term("web", "kubernetes.io/hostname");
            t.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [t]}})
        };
        let mut elsewhere = labelled("w0", "web", json!(null));
        elsewhere.metadata.namespace = Some("prod".into());
        let mut c = cluster(vec![("a1", elsewhere)]);
        c.namespace_labels.insert(
            "prod".into(),
            BTreeMap::from([("env".to_string(), "prod".to_string())]),
        );
        let same_ns = labelled("w1", "web", anti(json!({})));
        assert_eq!(verdicts(&same_ns, &c), vec![None, None, None]);
        let listed = labelled("w1", "web", anti(json!({"namespaces": ["prod"]})));
        assert_eq!(verdicts(&listed, &c)[0], Some(ANTI_AFFINITY_UNMET));
        let by_selector = labelled(
            "w1",
            "web",
            anti(json!({"namespaceSelector": {"matchLabels": {"env": "prod"}}})),
        );
        assert_eq!(verdicts(&by_selector, &c)[0], Some(ANTI_AFFINITY_UNMET));
        let all = labelled("w1", "web", anti(json!({"namespaceSelector": {}})));
        assert_eq!(verdicts(&all, &c)[0], Some(ANTI_AFFINITY_UNMET));
    }

    #[test]
    fn preferred_terms_weigh_domains_by_matching_pods_both_ways() {
        let c = cluster(vec![
            ("a1", labelled("c1", "cache", json!(null))),
            ("a2", labelled("c2", "cache", json!(null))),
            (
                "b1",
                labelled(
                    "shy",
                    "shy",
                    json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution":
                    [{"weight": 7, "podAffinityTerm": term("web", "kubernetes.io/hostname")}]}}),
                ),
            ),
        ]);
        let web = labelled(
            "web",
            "web",
            json!({"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution":
                [{"weight": 10, "podAffinityTerm": term("cache", "topology.kubernetes.io/zone")}]}}),
        );
        let prepared = Prepared::new(&web, &c);
        // Zone a holds two cache pods: 20 on both its nodes; b1's shy pod pushes web away.
        assert_eq!(prepared.score(c.node_labels("a1")), 20);
        assert_eq!(prepared.score(c.node_labels("a2")), 20);
        assert_eq!(prepared.score(c.node_labels("b1")), -7);
    }
}
