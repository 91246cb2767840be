//! Score plugins: among nodes that fit, which is best? LeastAllocated, as upstream's default
//! NodeResourcesFit scoring: the emptier a node would be after placing the pod, the better;
//! and the normalisations the other plugins' raw scores go through before they are weighed.

use k8s_openapi::api::core::v1::Pod;

use super::filter::{pod_requests, NodeUsage};

pub const MAX_SCORE: i64 = 100;

/// 0..=100: the mean over cpu and memory of the share left free once the pod is placed.
/// Requests count with upstream's non-zero defaults, so pods without requests still spread.
pub fn least_allocated(pod: &Pod, usage: &NodeUsage) -> i64 {
    let want = pod_requests(pod, true);
    let free_share = |allocatable: i128, requested: i128| -> i64 {
        if allocatable <= 0 || requested > allocatable {
            return 0;
        }
        i64::try_from((allocatable - requested) * i128::from(MAX_SCORE) / allocatable).unwrap_or(0)
    };
    let cpu = free_share(
        usage.allocatable.milli_cpu,
        usage.requested_non_zero.milli_cpu + want.milli_cpu,
    );
    let memory = free_share(
        usage.allocatable.memory,
        usage.requested_non_zero.memory + want.memory,
    );
    (cpu + memory) / 2
}

/// NodeResourcesBalancedAllocation: 0..=100, higher when the node's cpu and memory would be
/// used in equal shares once the pod is placed, so neither runs out while the other idles.
/// Counts requests as they are (no defaults); a pod asking for neither scores 0 everywhere,
/// as upstream skips the plugin for best-effort pods (it would pile them onto one node).
pub fn balanced_allocation(pod: &Pod, usage: &NodeUsage) -> i64 {
    let want = pod_requests(pod, false);
    if want.milli_cpu == 0 && want.memory == 0 {
        return 0;
    }
    let share = |allocatable: i128, requested: i128| -> Option<f64> {
        (allocatable > 0).then(|| (requested as f64 / allocatable as f64).min(1.0))
    };
    let shares: Vec<f64> = [
        share(
            usage.allocatable.milli_cpu,
            usage.requested.milli_cpu + want.milli_cpu,
        ),
        share(
            usage.allocatable.memory,
            usage.requested.memory + want.memory,
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    // With two resources the standard deviation is half their difference.
    let deviation = match shares.as_slice() {
        [cpu, memory] => (cpu - memory).abs() / 2.0,
        _ => 0.0,
    };
    ((1.0 - deviation) * MAX_SCORE as f64) as i64
}

/// Upstream's default plugin weights in the sum of scores.
pub const RESOURCES_WEIGHT: i64 = 1;
pub const BALANCED_ALLOCATION_WEIGHT: i64 = 1;
pub const NODE_AFFINITY_WEIGHT: i64 = 2;
pub const INTER_POD_AFFINITY_WEIGHT: i64 = 2;
pub const TOPOLOGY_SPREAD_WEIGHT: i64 = 2;
pub const TAINT_TOLERATION_WEIGHT: i64 = 3;

/// Scales to 0..=100 by the highest score; `reverse` gives the most to the lowest (upstream's
/// DefaultNormalizeScore).
pub fn normalize_by_max(raw: &[i64], reverse: bool) -> Vec<i64> {
    let max = raw.iter().copied().max().unwrap_or(0);
    raw.iter()
        .map(|&s| match (max, reverse) {
            (0, true) => MAX_SCORE,
            (0, false) => s,
            (max, false) => s * MAX_SCORE / max,
            (max, true) => MAX_SCORE - s * MAX_SCORE / max,
        })
        .collect()
}

/// Scales to 0..=100 between the lowest and the highest score (InterPodAffinity's
/// normalisation, since its raw scores may be negative).
pub fn normalize_min_max(raw: &[i64]) -> Vec<i64> {
    let max = raw.iter().copied().max().unwrap_or(0);
    let min = raw.iter().copied().min().unwrap_or(0);
    raw.iter()
        .map(|&s| match max - min {
            0 => 0,
            range => MAX_SCORE * (s - min) / range,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::filter::tests::{node, pod};

    #[test]
    fn an_emptier_node_scores_higher() {
        let n = node("n", "4", "4Gi", "110");
        let empty = NodeUsage::from_node(&n);
        let mut busy = NodeUsage::from_node(&n);
        busy.add_pod(&pod(Some("2"), Some("2Gi")));
        let p = pod(Some("1"), Some("1Gi"));
        assert_eq!(least_allocated(&p, &empty), 75);
        assert_eq!(least_allocated(&p, &busy), 25);
    }

    #[test]
    fn a_pod_without_requests_still_counts_the_default_request() {
        let n = node("n", "1", "1Gi", "110");
        let usage = NodeUsage::from_node(&n);
        // 100m of 1000m and 200Mi of 1Gi: 90 and 80 → 85.
        assert_eq!(least_allocated(&pod(None, None), &usage), 85);
    }

    #[test]
    fn a_node_whose_cpu_and_memory_stay_in_step_scores_higher() {
        let n = node("n", "4", "4Gi", "110");
        let empty = NodeUsage::from_node(&n);
        let mut memory_heavy = NodeUsage::from_node(&n);
        memory_heavy.add_pod(&pod(None, Some("3Gi")));
        let p = pod(Some("2"), Some("2Gi"));
        // Empty node: 50% and 50% → no deviation.
        assert_eq!(balanced_allocation(&p, &empty), 100);
        // 50% cpu and 100% (capped) memory: deviation 0.25.
        assert_eq!(balanced_allocation(&p, &memory_heavy), 75);
        // A cpu-only pod evens out the memory-heavy node.
        let cpu_only = pod(Some("3"), None);
        assert_eq!(balanced_allocation(&cpu_only, &memory_heavy), 100);
        assert_eq!(balanced_allocation(&cpu_only, &empty), 62);
    }

    #[test]
    fn best_effort_pods_are_not_scored_for_balance() {
        let n = node("n", "4", "4Gi", "110");
        let mut lopsided = NodeUsage::from_node(&n);
        lopsided.add_pod(&pod(Some("4"), None));
        assert_eq!(balanced_allocation(&pod(None, None), &lopsided), 0);
        assert_eq!(
            balanced_allocation(&pod(None, None), &NodeUsage::from_node(&n)),
            0
        );
    }

    #[test]
    fn normalisations_map_raw_scores_onto_zero_to_a_hundred() {
        assert_eq!(normalize_by_max(&[0, 5, 10], false), vec![0, 50, 100]);
        assert_eq!(normalize_by_max(&[0, 1, 2], true), vec![100, 50, 0]);
        assert_eq!(normalize_by_max(&[0, 0], true), vec![100, 100]);
        assert_eq!(normalize_min_max(&[-10, 0, 10]), vec![0, 50, 100]);
        assert_eq!(normalize_min_max(&[3, 3]), vec![0, 0]);
    }
}
