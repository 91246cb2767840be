//! Which pod goes first, and what it is told (upstream's `rankMemoryPressure`,
//! `rankDiskPressureFunc` and `evictionMessage`). Pure.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use super::thresholds::{Observations, Resource, Threshold};

/// Upstream's `SystemCriticalPriority`: pods at or above it are never evicted.
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// A pod that may be evicted, with what its containers use of the resource in question.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub pod: Pod,
    /// Bytes (or inodes) per container name.
    pub usage: BTreeMap<String, u64>,
}

impl Candidate {
    fn total_usage(&self) -> u64 {
        self.usage.values().sum()
    }

    fn priority(&self) -> i32 {
        self.pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
    }
}

/// Critical pods are not evicted: system-critical priority, or static and mirror pods.
pub fn is_critical(pod: &Pod) -> bool {
    let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
    let annotations = pod.metadata.annotations.as_ref();
    let mirror = annotations.is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    priority >= SYSTEM_CRITICAL_PRIORITY || mirror
}

/// The sum of the containers' requests of `resource`, in its units.
fn requests(pod: &Pod, resource: Resource) -> u64 {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter_map(|c| container_request(c, resource))
        .sum()
}

fn container_request(
    container: &k8s_openapi::api::core::v1::Container,
    resource: Resource,
) -> Option<u64> {
    let q = container
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get(resource.name())?;
    crate::agent::spec::parse_quantity(&q.0).map(|v| v.max(0.0) as u64)
}

/// Orders candidates most-evictable first: usage above requests before usage within them,
/// then lower priority first, then larger usage above requests first. Tasks cannot be
/// requested: for them, lower priority first, then more tasks first (upstream's
/// `rankPIDPressure`).
pub fn rank(candidates: &mut [Candidate], resource: Resource) {
    match resource {
        Resource::Pids => candidates.sort_by(|a, b| {
            a.priority()
                .cmp(&b.priority())
                .then_with(|| b.total_usage().cmp(&a.total_usage()))
        }),
        _ => candidates.sort_by(|a, b| compare(a, b, resource)),
    }
}

fn compare(a: &Candidate, b: &Candidate, resource: Resource) -> Ordering {
    let above = |c: &Candidate| c.total_usage() as i128 - requests(&c.pod, resource) as i128;
    let exceeds = |c: &Candidate| above(c) > 0;
    exceeds(b)
        .cmp(&exceeds(a))
        .then_with(|| a.priority().cmp(&b.priority()))
        .then_with(|| above(b).cmp(&above(a)))
}

/// The pod's eviction message, in upstream's words.
pub fn message(
    resource: Resource,
    met: &[Threshold],
    observations: &Observations,
    candidate: &Candidate,
) -> String {
    let mut message = format!("The node was low on resource: {}. ", resource.name());
    for threshold in met.iter().filter(|t| t.signal.resource() == resource) {
        let Some(observed) = observations.get(&threshold.signal) else {
            continue;
        };
        let quantity = match threshold.limit {
            super::thresholds::Limit::Quantity(_) => threshold.written.clone(),
            super::thresholds::Limit::Percent(_) => {
                format_quantity(threshold.quantity(observed.capacity), resource)
            }
        };
        message.push_str(&format!(
            "Threshold quantity: {quantity}, available: {}. ",
            format_quantity(observed.available, resource)
        ));
    }
    // Upstream names greedy containers for memory and storage only.
    let blames_containers = matches!(resource, Resource::Memory | Resource::EphemeralStorage);
    for container in candidate
        .pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter(|_| blames_containers)
    {
        let used = candidate.usage.get(&container.name).copied().unwrap_or(0);
        let request = container_request(container, resource).unwrap_or(0);
        if used > request {
            let written = container
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get(resource.name()))
                .map(|q| q.0.clone())
                .unwrap_or_else(|| "0".into());
            message.push_str(&format!(
                "Container {} was using {}, request is {written}, has larger consumption of {}. ",
                container.name,
                format_quantity(used, resource),
                resource.name()
            ));
        }
    }
    message
}

/// Bytes as a Kubernetes quantity in its canonical binary form (`225800Ki`); counts plain.
pub fn format_quantity(value: u64, resource: Resource) -> String {
    if matches!(resource, Resource::Inodes | Resource::Pids) || value == 0 {
        return value.to_string();
    }
    let suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let mut n = value;
    let mut i = 0;
    while n.is_multiple_of(1024) && i + 1 < suffixes.len() {
        n /= 1024;
        i += 1;
    }
    format!("{n}{}", suffixes[i])
}

#[cfg(test)]
mod tests {
    use super::super::thresholds::{from_config, Observation, Signal};
    use super::*;

    fn pod(name: &str, priority: i32, request: Option<&str>) -> Pod {
        let resources = match request {
            Some(r) => serde_json::json!({"requests": {"memory": r}, "limits": {"memory": r}}),
            None => serde_json::json!({}),
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"priority": priority, "containers": [
                {"name": "main", "image": "busybox", "resources": resources}]}
        }))
        .unwrap()
    }

    fn candidate(name: &str, priority: i32, request: Option<&str>, used: u64) -> Candidate {
        Candidate {
            pod: pod(name, priority, request),
            usage: BTreeMap::from([("main".to_string(), used)]),
        }
    }

    fn names(candidates: &[Candidate]) -> Vec<&str> {
        candidates
            .iter()
            .map(|c| c.pod.metadata.name.as_deref().unwrap())
            .collect()
    }

    #[test]
    fn pods_above_their_requests_go_before_pods_within_them_whatever_their_priority() {
        let mut candidates = vec![
            candidate("guaranteed-within", 0, Some("100Mi"), 50 << 20),
            candidate("important-best-effort", 1000, None, 10 << 20),
            candidate("burstable-above", 0, Some("10Mi"), 20 << 20),
        ];
        rank(&mut candidates, Resource::Memory);
        assert_eq!(
            names(&candidates),
            [
                "burstable-above",
                "important-best-effort",
                "guaranteed-within"
            ]
        );
    }

    #[test]
    fn among_equals_lower_priority_then_larger_excess_goes_first() {
        let mut candidates = vec![
            candidate("small", 0, None, 1 << 20),
            candidate("high", 10, None, 900 << 20),
            candidate("big", 0, None, 300 << 20),
        ];
        rank(&mut candidates, Resource::Memory);
        assert_eq!(names(&candidates), ["big", "small", "high"]);
    }

    #[test]
    fn system_critical_and_mirror_pods_are_critical() {
        assert!(is_critical(&pod(
            "c",
            SYSTEM_CRITICAL_PRIORITY + 1000,
            None
        )));
        assert!(!is_critical(&pod("n", 0, None)));
        let mut mirror = pod("m", 0, None);
        mirror.metadata.annotations = Some(BTreeMap::from([(
            "kubernetes.io/config.mirror".to_string(),
            "x".to_string(),
        )]));
        assert!(is_critical(&mirror));
    }

    #[test]
    fn the_message_names_the_resource_threshold_and_greedy_containers_as_upstream() {
        let config = crate::config::EvictionConfig {
            hard: BTreeMap::from([("memory.available".into(), "100Mi".into())]),
            ..Default::default()
        };
        let met = from_config(&config).unwrap();
        let observations = BTreeMap::from([(
            Signal::MemoryAvailable,
            Observation {
                available: 51200 * 1024,
                capacity: 1 << 30,
            },
        )]);
        let hog = candidate("hog", 0, None, 4 << 20);
        assert_eq!(
            message(Resource::Memory, &met, &observations, &hog),
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. \
             Container main was using 4Mi, request is 0, has larger consumption of memory. "
        );
        assert_eq!(format_quantity(225800 * 1024, Resource::Memory), "225800Ki");
    }

    #[test]
    fn under_pid_pressure_lower_priority_then_more_tasks_goes_first() {
        let mut candidates = vec![
            candidate("few", 0, Some("1Gi"), 3),
            candidate("important-many", 10, None, 900),
            candidate("many", 0, Some("1Gi"), 200),
        ];
        rank(&mut candidates, Resource::Pids);
        assert_eq!(names(&candidates), ["many", "few", "important-many"]);
    }

    #[test]
    fn under_disk_pressure_pods_above_their_storage_request_go_first_then_the_biggest() {
        let disk = |name: &str, request: Option<&str>, used: u64, volumes: u64| {
            let resources = match request {
                Some(r) => serde_json::json!({"requests": {"ephemeral-storage": r}}),
                None => serde_json::json!({}),
            };
            let pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "spec": {"containers": [{"name": "main", "image": "busybox",
                    "resources": resources}]}
            }))
            .unwrap();
            Candidate {
                pod,
                usage: BTreeMap::from([
                    ("main".to_string(), used),
                    (super::super::usage::POD_VOLUMES.to_string(), volumes),
                ]),
            }
        };
        let mut candidates = vec![
            disk("small", None, 1 << 20, 0),
            disk("within-request", Some("1Gi"), 500 << 20, 0),
            disk("big-emptydir", None, 1 << 20, 300 << 20),
        ];
        rank(&mut candidates, Resource::EphemeralStorage);
        assert_eq!(
            names(&candidates),
            ["big-emptydir", "small", "within-request"]
        );
    }
}
