//! Score plugins: among nodes that fit, which is best? LeastAllocated, as upstream's default
//! NodeResourcesFit scoring: the emptier a node would be after placing the pod, the better.

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
}
