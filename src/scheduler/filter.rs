//! Filter plugins: can this pod run on this node at all? Each returns the reasons it cannot,
//! worded as upstream's plugins word them, since users grep events for those strings.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint,
    Toleration,
};

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::quantity::parse_milli;

pub const NODE_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const AFFINITY_MISMATCH: &str = "node(s) didn't match Pod's node affinity/selector";
pub const TOO_MANY_PODS: &str = "Too many pods";
pub const INSUFFICIENT_CPU: &str = "Insufficient cpu";
pub const INSUFFICIENT_MEMORY: &str = "Insufficient memory";
pub const INSUFFICIENT_EPHEMERAL_STORAGE: &str = "Insufficient ephemeral-storage";
pub const HOST_PORTS_TAKEN: &str = "node(s) didn't have free ports for the requested pod ports";
const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// What pods ask of a node, in milli-units as the quantity parser gives them: cpu in
/// millicores, memory and ephemeral storage in milli-bytes, and extended resources
/// (`example.com/gpu`, `hugepages-2Mi`, ...) by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i128,
    pub memory: i128,
    pub ephemeral_storage: i128,
    pub extended: BTreeMap<String, i128>,
}

impl Resources {
    /// Saturating: requests are clients' quantities, and a few huge ones must not overflow.
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(other.milli_cpu);
        self.memory = self.memory.saturating_add(other.memory);
        self.ephemeral_storage = self
            .ephemeral_storage
            .saturating_add(other.ephemeral_storage);
        for (name, amount) in &other.extended {
            let sum = self.extended.entry(name.clone()).or_default();
            *sum = sum.saturating_add(*amount);
        }
    }

    /// Each resource at the larger of the two (an init container runs alone).
    fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (name, amount) in &other.extended {
            let mine = self.extended.entry(name.clone()).or_default();
            *mine = (*mine).max(*amount);
        }
    }

    /// Reads a resource list (`requests`, `allocatable`, `overhead`).
    fn from_list(list: &BTreeMap<String, Quantity>) -> Resources {
        let mut resources = Resources::default();
        for (name, quantity) in list {
            let amount = parse_milli(&quantity.0).unwrap_or(0);
            match name.as_str() {
                "cpu" => resources.milli_cpu = amount,
                "memory" => resources.memory = amount,
                "ephemeral-storage" => resources.ephemeral_storage = amount,
                name if is_extended(name) => {
                    resources.extended.insert(name.to_string(), amount);
                }
                _ => {}
            }
        }
        resources
    }
}

/// Resources the fit filter counts by name beyond cpu, memory and ephemeral storage: extended
/// resources a device plugin advertises, huge pages, attachable volumes (upstream's scalar
/// resources). `pods` and `storage` are not asked for by containers.
fn is_extended(name: &str) -> bool {
    !matches!(
        name,
        "cpu" | "memory" | "ephemeral-storage" | "pods" | "storage"
    )
}

/// What is left to give on one node: allocatable, and what bound pods already asked for.
#[derive(Debug, Clone, Default)]
pub struct NodeUsage {
    pub allocatable: Resources,
    pub allowed_pods: i64,
    pub requested: Resources,
    /// Requested with upstream's non-zero defaults, for scoring.
    pub requested_non_zero: Resources,
    pub pod_count: i64,
    /// Host ports bound pods hold.
    pub host_ports: Vec<HostPort>,
}

/// One `hostPort` claim: address (empty for all), protocol, port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    /// Upstream's rule: same protocol and port, and either side listens on every address or
    /// both on the same one.
    fn conflicts_with(&self, other: &HostPort) -> bool {
        let wildcard = |ip: &str| ip.is_empty() || ip == "0.0.0.0" || ip == "::";
        self.protocol == other.protocol
            && self.port == other.port
            && (wildcard(&self.ip) || wildcard(&other.ip) || self.ip == other.ip)
    }
}

/// The host ports a pod's containers ask for.
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    containers
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|port| *port > 0)?;
            Some(HostPort {
                ip: p.host_ip.clone().unwrap_or_default(),
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port,
            })
        })
        .collect()
}

/// Whether a host port the pod wants is taken on the node already (upstream's NodePorts).
pub fn host_ports_taken(pod: &Pod, usage: &NodeUsage) -> bool {
    host_ports(pod).iter().any(|want| {
        usage
            .host_ports
            .iter()
            .any(|held| want.conflicts_with(held))
    })
}

impl NodeUsage {
    pub fn from_node(node: &Node) -> NodeUsage {
        let allocatable = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
        let pods = allocatable
            .and_then(|a| a.get("pods"))
            .and_then(|q| parse_milli(&q.0))
            .unwrap_or(0);
        NodeUsage {
            allocatable: allocatable.map(Resources::from_list).unwrap_or_default(),
            allowed_pods: i64::try_from(pods / 1000).unwrap_or(0),
            ..Default::default()
        }
    }

    /// Counts a pod bound (or about to be) to this node.
    pub fn add_pod(&mut self, pod: &Pod) {
        self.requested.add(&pod_requests(pod, false));
        self.requested_non_zero.add(&pod_requests(pod, true));
        self.pod_count += 1;
        self.host_ports.extend(host_ports(pod));
    }
}

/// Upstream's default request for a container that names none, used only for scoring.
const DEFAULT_MILLI_CPU: i128 = 100;
const DEFAULT_MEMORY: i128 = 200 * 1024 * 1024 * 1000;

fn container_requests(c: &Container, non_zero: bool) -> Resources {
    let resources = c.resources.as_ref();
    // Defaulting copies limits into missing requests; do the same for objects that skipped it.
    let mut list = resources.and_then(|r| r.limits.clone()).unwrap_or_default();
    list.extend(
        resources
            .and_then(|r| r.requests.clone())
            .unwrap_or_default(),
    );
    let mut requests = Resources::from_list(&list);
    if non_zero && !list.contains_key("cpu") {
        requests.milli_cpu = DEFAULT_MILLI_CPU;
    }
    if non_zero && !list.contains_key("memory") {
        requests.memory = DEFAULT_MEMORY;
    }
    requests
}

/// A pod's effective request: the larger of its containers' sum (plus restartable init
/// containers, which run alongside) and its largest init container, plus overhead.
pub fn pod_requests(pod: &Pod, non_zero: bool) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum.add(&container_requests(c, non_zero));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c, false);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r);
            sum.add(&r);
        } else {
            let mut alongside = r;
            alongside.add(&sidecars);
            init_max.max_with(&alongside);
        }
    }
    let mut total = sum;
    total.max_with(&init_max);
    if let Some(overhead) = spec.overhead.as_ref() {
        total.add(&Resources::from_list(overhead));
    }
    total
}

/// Runs every filter in upstream's order, stopping at the first that fails (as upstream does);
/// empty means the pod fits.
pub fn unfit_reasons(pod: &Pod, node: &Node, usage: &NodeUsage) -> Vec<String> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    if node_unschedulable(node, &tolerations) {
        return vec![NODE_UNSCHEDULABLE.into()];
    }
    if let Some(taint) = untolerated_taint(node, &tolerations) {
        return vec![format!(
            "node(s) had untolerated taint {{{}: {}}}",
            taint.key,
            taint.value.clone().unwrap_or_default()
        )];
    }
    if !matches_node_selector_and_affinity(pod, node) {
        return vec![AFFINITY_MISMATCH.into()];
    }
    if host_ports_taken(pod, usage) {
        return vec![HOST_PORTS_TAKEN.into()];
    }
    resource_misfit(pod, usage)
}

fn node_unschedulable(node: &Node, tolerations: &[Toleration]) -> bool {
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let tolerated = tolerations.iter().any(|t| {
        tolerates(
            t,
            &Taint {
                key: UNSCHEDULABLE_TAINT.into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            },
        )
    });
    cordoned && !tolerated
}

/// The first NoSchedule/NoExecute taint no toleration covers.
pub fn untolerated_taint(node: &Node, tolerations: &[Toleration]) -> Option<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
        .cloned()
}

/// Upstream's `Toleration.ToleratesTaint`.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" => {
            // An empty key with Equal is invalid upstream; it tolerates nothing.
            !key.is_empty()
                && toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// nodeSelector and required node affinity must both hold.
pub fn matches_node_selector_and_affinity(pod: &Pod, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    for (k, v) in spec.node_selector.iter().flatten() {
        if labels.get(k) != Some(v) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    required.is_none_or(|selector| node_selector_matches(selector, node))
}

/// A NodeSelector holds when any of its terms does.
pub fn node_selector_matches(selector: &NodeSelector, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let name = node.metadata.name.as_deref().unwrap_or("");
    selector
        .node_selector_terms
        .iter()
        .any(|term| term_matches(term, labels, name))
}

/// NodeAffinity's score: the summed weights of the preferred terms the node matches.
pub fn preferred_node_affinity(pod: &Pod, node: &Node) -> i64 {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let name = node.metadata.name.as_deref().unwrap_or("");
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .filter(|p| term_matches(&p.preference, labels, name))
        .map(|p| i64::from(p.weight))
        .sum()
}

/// TaintToleration's score input: how many PreferNoSchedule taints the pod does not tolerate.
pub fn intolerable_soft_taints(node: &Node, tolerations: &[Toleration]) -> i64 {
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_ref());
    let count = taints
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "PreferNoSchedule")
        .filter(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
        .count();
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// A term holds when all its expressions and fields do; an empty term holds for no node.
fn term_matches(
    term: &NodeSelectorTerm,
    labels: &BTreeMap<String, String>,
    node_name: &str,
) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    expressions
        .iter()
        .all(|e| requirement_matches(e, labels.get(&e.key).map(String::as_str)))
        && fields
            .iter()
            .all(|f| f.key == "metadata.name" && requirement_matches(f, Some(node_name)))
}

fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    let single_int = || values.first().and_then(|v| v.parse::<i64>().ok());
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.and_then(|v| v.parse::<i64>().ok()), single_int()), (Some(v), Some(x)) if v > x)
        }
        "Lt" => {
            matches!((value.and_then(|v| v.parse::<i64>().ok()), single_int()), (Some(v), Some(x)) if v < x)
        }
        _ => false,
    }
}

/// NodeResourcesFit: pod count always; each resource only for pods that request some, in
/// upstream's order (pods, cpu, memory, ephemeral storage, then extended resources by name). A
/// node that does not advertise an extended resource has none of it.
pub fn resource_misfit(pod: &Pod, usage: &NodeUsage) -> Vec<String> {
    let mut reasons = Vec::new();
    if usage.pod_count + 1 > usage.allowed_pods {
        reasons.push(TOO_MANY_PODS.to_string());
    }
    let want = pod_requests(pod, false);
    let (used, allocatable) = (&usage.requested, &usage.allocatable);
    let short = |asked: i128, used: i128, has: i128| asked > 0 && used.saturating_add(asked) > has;
    if short(want.milli_cpu, used.milli_cpu, allocatable.milli_cpu) {
        reasons.push(INSUFFICIENT_CPU.to_string());
    }
    if short(want.memory, used.memory, allocatable.memory) {
        reasons.push(INSUFFICIENT_MEMORY.to_string());
    }
    if short(
        want.ephemeral_storage,
        used.ephemeral_storage,
        allocatable.ephemeral_storage,
    ) {
        reasons.push(INSUFFICIENT_EPHEMERAL_STORAGE.to_string());
    }
    for (name, &asked) in &want.extended {
        let used = used.extended.get(name).copied().unwrap_or(0);
        let has = allocatable.extended.get(name).copied().unwrap_or(0);
        if short(asked, used, has) {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    reasons
}

/// Upstream's FitError message: `0/3 nodes are available: 1 Insufficient cpu, 2 node(s) were
/// unschedulable.` — counts per reason, sorted.
pub fn fit_error_message(total_nodes: usize, reasons_per_node: &[Vec<String>]) -> String {
    if total_nodes == 0 {
        return "no nodes available to schedule pods".to_string();
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for reasons in reasons_per_node {
        for r in reasons {
            *counts.entry(r.as_str()).or_default() += 1;
        }
    }
    let mut parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    format!("0/{total_nodes} nodes are available: {}.", parts.join(", "))
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Affinity, NodeAffinity, NodeSpec, NodeStatus, PodSpec, ResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    pub fn node(name: &str, cpu: &str, memory: &str, pods: &str) -> Node {
        let resources = BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
            ("pods".to_string(), Quantity(pods.into())),
        ]);
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([(
                    "kubernetes.io/hostname".to_string(),
                    name.to_string(),
                )])),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                allocatable: Some(resources),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn huge_requests_add_up_to_the_largest_amount_instead_of_overflowing() {
        // 1e35 bytes is 1e38 milli-units: one fits an i128, two do not.
        let mut huge = pod(Some("1e35"), Some("1e35"));
        if let Some(spec) = huge.spec.as_mut() {
            let twin = spec.containers[0].clone();
            spec.containers.push(Container {
                name: "twin".into(),
                ..twin
            });
        }
        let requests = pod_requests(&huge, false);
        assert_eq!(requests.memory, i128::MAX);
        assert_eq!(requests.milli_cpu, i128::MAX);
        let small = node("n", "4", "8Gi", "110");
        let reasons = unfit_reasons(&huge, &small, &usage(&small));
        assert!(
            reasons.contains(&INSUFFICIENT_MEMORY.to_string()),
            "{reasons:?}"
        );
    }

    pub fn pod(cpu: Option<&str>, memory: Option<&str>) -> Pod {
        let mut requests = BTreeMap::new();
        if let Some(c) = cpu {
            requests.insert("cpu".to_string(), Quantity(c.into()));
        }
        if let Some(m) = memory {
            requests.insert("memory".to_string(), Quantity(m.into()));
        }
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some(requests),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        }
    }

    fn usage(n: &Node) -> NodeUsage {
        NodeUsage::from_node(n)
    }

    #[test]
    fn a_pod_fits_until_cpu_memory_or_pod_count_run_out() {
        let n = node("n1", "2", "1Gi", "2");
        let mut u = usage(&n);
        assert!(unfit_reasons(&pod(Some("1500m"), Some("512Mi")), &n, &u).is_empty());
        u.add_pod(&pod(Some("1500m"), Some("512Mi")));
        assert_eq!(
            unfit_reasons(&pod(Some("1"), Some("100Mi")), &n, &u),
            vec![INSUFFICIENT_CPU]
        );
        assert_eq!(
            unfit_reasons(&pod(Some("100m"), Some("600Mi")), &n, &u),
            vec![INSUFFICIENT_MEMORY]
        );
        u.add_pod(&pod(None, None));
        assert_eq!(unfit_reasons(&pod(None, None), &n, &u), vec![TOO_MANY_PODS]);
    }

    fn with_requests(extra: &[(&str, &str)]) -> Pod {
        let mut p = pod(Some("100m"), None);
        let requests = p.spec.as_mut().unwrap().containers[0]
            .resources
            .as_mut()
            .unwrap()
            .requests
            .as_mut()
            .unwrap();
        for (name, amount) in extra {
            requests.insert(name.to_string(), Quantity(amount.to_string()));
        }
        p
    }

    #[test]
    fn ephemeral_storage_and_extended_resources_are_requests_against_allocatable() {
        let mut n = node("n1", "4", "4Gi", "110");
        let allocatable = n.status.as_mut().unwrap().allocatable.as_mut().unwrap();
        allocatable.insert("ephemeral-storage".into(), Quantity("10Gi".into()));
        allocatable.insert("example.com/fpga".into(), Quantity("2".into()));
        let mut u = usage(&n);
        let scratch = with_requests(&[("ephemeral-storage", "6Gi")]);
        assert!(unfit_reasons(&scratch, &n, &u).is_empty());
        u.add_pod(&scratch);
        assert_eq!(
            unfit_reasons(&scratch, &n, &u),
            vec![INSUFFICIENT_EPHEMERAL_STORAGE]
        );
        let fpga = with_requests(&[("example.com/fpga", "2")]);
        assert!(unfit_reasons(&fpga, &n, &u).is_empty());
        u.add_pod(&with_requests(&[("example.com/fpga", "1")]));
        assert_eq!(
            unfit_reasons(&fpga, &n, &u),
            vec!["Insufficient example.com/fpga"]
        );
        // A resource the node does not advertise at all: it has none.
        let gpu = with_requests(&[("nvidia.com/gpu", "1"), ("hugepages-2Mi", "4Mi")]);
        assert_eq!(
            unfit_reasons(&gpu, &n, &u),
            vec!["Insufficient hugepages-2Mi", "Insufficient nvidia.com/gpu"]
        );
    }

    #[test]
    fn the_node_selector_must_match_the_node_labels() {
        let n = node("n1", "2", "1Gi", "10");
        let mut p = pod(None, None);
        p.spec.as_mut().unwrap().node_selector = Some(BTreeMap::from([(
            "kubernetes.io/hostname".to_string(),
            "n2".to_string(),
        )]));
        assert_eq!(unfit_reasons(&p, &n, &usage(&n)), vec![AFFINITY_MISMATCH]);
        p.spec.as_mut().unwrap().node_selector = Some(BTreeMap::from([(
            "kubernetes.io/hostname".to_string(),
            "n1".to_string(),
        )]));
        assert!(unfit_reasons(&p, &n, &usage(&n)).is_empty());
    }

    #[test]
    fn required_node_affinity_terms_are_ored_and_their_expressions_anded() {
        let mut n = node("n1", "2", "1Gi", "10");
        n.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("arch".into(), "arm64".into());
        let req = |key: &str, op: &str, values: &[&str]| NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        };
        let with_terms = |terms: Vec<NodeSelectorTerm>| {
            let mut p = pod(None, None);
            p.spec.as_mut().unwrap().affinity = Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: terms,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
            p
        };
        let term = |reqs: Vec<NodeSelectorRequirement>| NodeSelectorTerm {
            match_expressions: Some(reqs),
            match_fields: None,
        };
        let arm = with_terms(vec![term(vec![req("arch", "In", &["arm64", "arm"])])]);
        assert!(matches_node_selector_and_affinity(&arm, &n));
        let both = with_terms(vec![term(vec![
            req("arch", "In", &["arm64"]),
            req("gpu", "Exists", &[]),
        ])]);
        assert!(!matches_node_selector_and_affinity(&both, &n));
        let either = with_terms(vec![
            term(vec![req("gpu", "Exists", &[])]),
            term(vec![req("arch", "NotIn", &["amd64"])]),
        ]);
        assert!(matches_node_selector_and_affinity(&either, &n));
        assert!(!matches_node_selector_and_affinity(&with_terms(vec![]), &n));
    }

    #[test]
    fn taints_need_a_matching_toleration_and_prefer_no_schedule_is_ignored() {
        let mut n = node("n1", "2", "1Gi", "10");
        n.spec.as_mut().unwrap().taints = Some(vec![
            Taint {
                key: "dedicated".into(),
                value: Some("edge".into()),
                effect: "NoSchedule".into(),
                time_added: None,
            },
            Taint {
                key: "soft".into(),
                value: None,
                effect: "PreferNoSchedule".into(),
                time_added: None,
            },
        ]);
        let p = pod(None, None);
        assert_eq!(
            unfit_reasons(&p, &n, &usage(&n)),
            vec!["node(s) had untolerated taint {dedicated: edge}"]
        );
        let mut tolerant = p.clone();
        tolerant.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("edge".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }]);
        assert!(unfit_reasons(&tolerant, &n, &usage(&n)).is_empty());
        let mut wrong_value = p.clone();
        wrong_value.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
            key: Some("dedicated".into()),
            value: Some("core".into()),
            ..Default::default()
        }]);
        assert!(!unfit_reasons(&wrong_value, &n, &usage(&n)).is_empty());
        let mut everything = p;
        everything.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        }]);
        assert!(unfit_reasons(&everything, &n, &usage(&n)).is_empty());
    }

    #[test]
    fn a_cordoned_node_takes_only_pods_tolerating_unschedulable() {
        let mut n = node("n1", "2", "1Gi", "10");
        n.spec.as_mut().unwrap().unschedulable = Some(true);
        let p = pod(None, None);
        assert_eq!(unfit_reasons(&p, &n, &usage(&n)), vec![NODE_UNSCHEDULABLE]);
        let mut tolerant = p;
        tolerant.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
            key: Some(UNSCHEDULABLE_TAINT.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }]);
        assert!(unfit_reasons(&tolerant, &n, &usage(&n)).is_empty());
    }

    #[test]
    fn init_containers_count_by_their_maximum_and_sidecars_by_their_sum() {
        let mut p = pod(Some("100m"), None);
        let init = |cpu: &str, restart: Option<&str>| Container {
            name: "i".into(),
            restart_policy: restart.map(String::from),
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([("cpu".to_string(), Quantity(cpu.into()))])),
                ..Default::default()
            }),
            ..Default::default()
        };
        p.spec.as_mut().unwrap().init_containers = Some(vec![init("500m", None)]);
        assert_eq!(pod_requests(&p, false).milli_cpu, 500);
        p.spec.as_mut().unwrap().init_containers =
            Some(vec![init("50m", Some("Always")), init("200m", None)]);
        assert_eq!(pod_requests(&p, false).milli_cpu, 250);
    }

    #[test]
    fn the_fit_error_counts_and_sorts_reasons_like_upstream() {
        let reasons = vec![
            vec![INSUFFICIENT_CPU.to_string()],
            vec![NODE_UNSCHEDULABLE.to_string()],
            vec![NODE_UNSCHEDULABLE.to_string()],
        ];
        assert_eq!(
            fit_error_message(3, &reasons),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) were unschedulable."
        );
        assert_eq!(
            fit_error_message(1, &[vec![INSUFFICIENT_CPU.to_string()]]),
            "0/1 nodes are available: 1 Insufficient cpu."
        );
    }

    #[test]
    fn a_host_port_is_taken_for_the_same_protocol_and_an_overlapping_address() {
        let with_port = |port: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({"spec": {"containers": [
                {"name": "c", "image": "x", "ports": [port]}]}}))
            .unwrap()
        };
        let n = node("n", "4", "4Gi", "110");
        let mut u = usage(&n);
        u.add_pod(&with_port(
            serde_json::json!({"containerPort": 80, "hostPort": 8080, "hostIP": "10.0.0.1"}),
        ));
        let wildcard = with_port(serde_json::json!({"containerPort": 80, "hostPort": 8080}));
        let other_ip = with_port(
            serde_json::json!({"containerPort": 80, "hostPort": 8080, "hostIP": "10.0.0.2"}),
        );
        let udp = with_port(
            serde_json::json!({"containerPort": 80, "hostPort": 8080, "protocol": "UDP"}),
        );
        let other_port = with_port(serde_json::json!({"containerPort": 80, "hostPort": 8081}));
        assert_eq!(unfit_reasons(&wildcard, &n, &u), vec![HOST_PORTS_TAKEN]);
        assert!(unfit_reasons(&other_ip, &n, &u).is_empty());
        assert!(unfit_reasons(&udp, &n, &u).is_empty());
        assert!(unfit_reasons(&other_port, &n, &u).is_empty());
    }
}
