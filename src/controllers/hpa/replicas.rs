//! The replica count one resource metric asks for, as upstream's replica calculator works it
//! out: pods are grouped into ready (measured), unready, missing (no metrics) and ignored;
//! missing and unready pods are counted so as to damp the move (missing ones as if at target
//! when scaling down, as idle when scaling up; unready ones as idle when scaling up), and a
//! usage within the tolerance of the target changes nothing.

use std::collections::BTreeMap;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Upstream's default `--horizontal-pod-autoscaler-tolerance`.
pub const TOLERANCE: f64 = 0.1;
/// A pod's CPU is not trusted during its first five minutes unless it has been ready for a
/// whole metrics window (start-up CPU bursts would otherwise trigger scale-ups).
pub const CPU_INITIALIZATION_PERIOD: SignedDuration = SignedDuration::from_secs(300);
/// A pod that turned unready within this long of starting is taken as never ready yet.
pub const DELAY_OF_INITIAL_READINESS_STATUS: SignedDuration = SignedDuration::from_secs(30);

/// What the metric is held to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Percent of the pods' summed requests.
    Utilization(i32),
    /// Per-pod average, in milli-units.
    AverageValue(i64),
}

/// A pod the target selects, as the calculator needs to know it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodFacts {
    pub name: String,
    /// Being deleted or Failed: left out entirely.
    pub ignored: bool,
    /// Pending, or (for CPU) not ready or too fresh to trust: see [`cpu_sample_unready`].
    pub unready: bool,
    /// Sum of the containers' requests for the resource, milli-units; `None` if a container
    /// has none.
    pub request_milli: Option<i64>,
}

/// The metric's usage per pod name, milli-units.
pub type Usage = BTreeMap<String, i64>;

/// The calculator's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recommendation {
    pub replicas: i32,
    /// Current utilization in percent of requests (Utilization targets only).
    pub utilization: Option<i32>,
    /// Current per-pod average, milli-units.
    pub average_milli: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalcError {
    #[error("no pods returned by selector while calculating replica count")]
    NoPods,
    #[error("did not receive metrics for targeted pods (pods might be unready)")]
    NoMetrics,
    #[error("missing request for {resource} in pod {pod}")]
    MissingRequest { resource: String, pod: String },
}

/// Whether a CPU sample of a pod should be left out as unready (upstream's `groupPods`):
/// within the initialization period, unless the pod is ready and the sample's window began
/// after it turned ready; afterwards, only if it has never been ready.
pub fn cpu_sample_unready(
    started: Option<Timestamp>,
    ready: Option<(bool, Timestamp)>,
    sample_at: Timestamp,
    window: SignedDuration,
    now: Timestamp,
) -> bool {
    let (Some(started), Some((is_ready, transition))) = (started, ready) else {
        return true;
    };
    if started + CPU_INITIALIZATION_PERIOD > now {
        !is_ready || sample_at < transition + window
    } else {
        !is_ready && started + DELAY_OF_INITIAL_READINESS_STATUS > transition
    }
}

/// The replicas `target` asks for, given `current` replicas, the selected pods and their usage.
pub fn recommend(
    resource: &str,
    current: i32,
    target: Target,
    pods: &[PodFacts],
    usage: &Usage,
    tolerance: f64,
) -> Result<Recommendation, CalcError> {
    if pods.is_empty() {
        return Err(CalcError::NoPods);
    }
    let mut metrics = Usage::new();
    let mut unready = Vec::new();
    let mut missing = Vec::new();
    let mut requests = BTreeMap::new();
    for pod in pods.iter().filter(|p| !p.ignored) {
        match (usage.get(&pod.name), pod.unready) {
            (None, true) | (Some(_), true) => unready.push(pod),
            (None, false) => missing.push(pod),
            (Some(value), false) => {
                metrics.insert(pod.name.clone(), *value);
            }
        }
        if let Target::Utilization(_) = target {
            let request = pod.request_milli.ok_or_else(|| CalcError::MissingRequest {
                resource: resource.to_string(),
                pod: pod.name.clone(),
            })?;
            requests.insert(pod.name.clone(), request);
        }
    }
    if metrics.is_empty() {
        return Err(CalcError::NoMetrics);
    }
    let ready_count = metrics.len() as f64;
    let (ratio, utilization, average_milli) = usage_ratio(target, &metrics, &requests);
    let answer = |replicas| Recommendation {
        replicas,
        utilization,
        average_milli,
    };
    let scale_up_with_unready = !unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if (1.0 - ratio).abs() <= tolerance {
            return Ok(answer(current));
        }
        return Ok(answer(ceil(ratio * ready_count)));
    }
    // Missing pods damp the move: at target (their request, or the target value) when scaling
    // down, idle when scaling up. Unready ones are idle when scaling up.
    for pod in &missing {
        let assumed = match (ratio < 1.0, target) {
            (false, _) => 0,
            (true, Target::Utilization(_)) => requests.get(&pod.name).copied().unwrap_or(0),
            (true, Target::AverageValue(value)) => value,
        };
        metrics.insert(pod.name.clone(), assumed);
    }
    if scale_up_with_unready {
        for pod in &unready {
            metrics.insert(pod.name.clone(), 0);
        }
    }
    let (new_ratio, _, _) = usage_ratio(target, &metrics, &requests);
    let direction_flipped = (ratio < 1.0 && new_ratio > 1.0) || (ratio > 1.0 && new_ratio < 1.0);
    if (1.0 - new_ratio).abs() <= tolerance || direction_flipped {
        return Ok(answer(current));
    }
    let replicas = ceil(new_ratio * metrics.len() as f64);
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(answer(current));
    }
    Ok(answer(replicas))
}

fn ceil(value: f64) -> i32 {
    let rounded = value.ceil();
    if rounded >= f64::from(i32::MAX) {
        i32::MAX
    } else {
        rounded as i32
    }
}

/// (usage / target, current utilization percent, current average in milli-units) over the
/// pods in `metrics`.
fn usage_ratio(
    target: Target,
    metrics: &Usage,
    requests: &BTreeMap<String, i64>,
) -> (f64, Option<i32>, i64) {
    let total: i64 = metrics.values().sum();
    let average = total / (metrics.len().max(1) as i64);
    match target {
        Target::Utilization(percent) => {
            let requested: i64 = metrics.keys().filter_map(|name| requests.get(name)).sum();
            if requested == 0 || percent <= 0 {
                return (0.0, Some(0), average);
            }
            let utilization = (total.saturating_mul(100) / requested) as i32;
            let ratio = (total as f64 * 100.0 / requested as f64) / f64::from(percent);
            (ratio, Some(utilization), average)
        }
        Target::AverageValue(value) => {
            let ratio = if value > 0 {
                total as f64 / metrics.len().max(1) as f64 / value as f64
            } else {
                0.0
            };
            (ratio, None, average)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, request: i64) -> PodFacts {
        PodFacts {
            name: name.into(),
            ignored: false,
            unready: false,
            request_milli: Some(request),
        }
    }

    fn usage(pairs: &[(&str, i64)]) -> Usage {
        pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect()
    }

    #[test]
    fn a_pod_at_twice_its_target_asks_for_twice_the_replicas() {
        let pods = [pod("a", 100)];
        let r = recommend(
            "cpu",
            1,
            Target::Utilization(50),
            &pods,
            &usage(&[("a", 100)]),
            TOLERANCE,
        )
        .unwrap();
        assert_eq!(r.replicas, 2);
        assert_eq!(r.utilization, Some(100));
        assert_eq!(r.average_milli, 100);
    }

    #[test]
    fn usage_within_the_tolerance_keeps_the_current_count() {
        let pods = [pod("a", 1000), pod("b", 1000)];
        let near = usage(&[("a", 540), ("b", 540)]);
        let r = recommend("cpu", 2, Target::Utilization(50), &pods, &near, TOLERANCE).unwrap();
        assert_eq!(r.replicas, 2);
        let far = usage(&[("a", 600), ("b", 600)]);
        let r = recommend("cpu", 2, Target::Utilization(50), &pods, &far, TOLERANCE).unwrap();
        assert_eq!(r.replicas, 3);
    }

    #[test]
    fn idle_pods_ask_for_fewer_replicas() {
        let pods = [pod("a", 100), pod("b", 100), pod("c", 100), pod("d", 100)];
        let idle = usage(&[("a", 10), ("b", 10), ("c", 10), ("d", 10)]);
        let r = recommend("cpu", 4, Target::Utilization(50), &pods, &idle, TOLERANCE).unwrap();
        assert_eq!(r.replicas, 1);
    }

    #[test]
    fn missing_pods_count_as_at_target_when_scaling_down() {
        let pods = [pod("a", 100), pod("b", 100)];
        // a alone says 1 replica (20% of 50%), but b unmeasured counts at 100%: 60% → stay.
        let r = recommend(
            "cpu",
            2,
            Target::Utilization(50),
            &pods,
            &usage(&[("a", 20)]),
            TOLERANCE,
        )
        .unwrap();
        assert_eq!(r.replicas, 2);
    }

    #[test]
    fn unready_pods_count_as_idle_when_scaling_up() {
        let mut fresh = pod("b", 100);
        fresh.unready = true;
        let pods = [pod("a", 100), fresh];
        // a at 200% of target alone asks for 4; with b at 0 the average is 100% → 2... as current.
        let r = recommend(
            "cpu",
            2,
            Target::Utilization(50),
            &pods,
            &usage(&[("a", 100), ("b", 900)]),
            TOLERANCE,
        )
        .unwrap();
        assert_eq!(r.replicas, 2);
        let r = recommend(
            "cpu",
            2,
            Target::Utilization(50),
            &pods,
            &usage(&[("a", 200)]),
            TOLERANCE,
        )
        .unwrap();
        assert_eq!(r.replicas, 4);
    }

    #[test]
    fn deleted_and_failed_pods_are_ignored() {
        let mut gone = pod("b", 100);
        gone.ignored = true;
        let pods = [pod("a", 100), gone];
        let r = recommend(
            "cpu",
            2,
            Target::Utilization(50),
            &pods,
            &usage(&[("a", 100)]),
            TOLERANCE,
        )
        .unwrap();
        assert_eq!(r.replicas, 2);
    }

    #[test]
    fn average_value_targets_divide_the_mean_by_the_target() {
        let pods = [pod("a", 0), pod("b", 0)];
        let mib = 1024 * 1024 * 1000;
        let used = usage(&[("a", 30 * mib), ("b", 30 * mib)]);
        let r = recommend(
            "memory",
            2,
            Target::AverageValue(20 * mib),
            &pods,
            &used,
            TOLERANCE,
        )
        .unwrap();
        assert_eq!(r.replicas, 3);
        assert_eq!(r.utilization, None);
        assert_eq!(r.average_milli, 30 * mib);
    }

    #[test]
    fn utilization_needs_a_request_on_every_pod() {
        let mut bare = pod("a", 0);
        bare.request_milli = None;
        let e = recommend(
            "cpu",
            1,
            Target::Utilization(50),
            &[bare],
            &usage(&[("a", 1)]),
            TOLERANCE,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "missing request for cpu in pod a");
        assert_eq!(
            recommend(
                "cpu",
                1,
                Target::Utilization(50),
                &[],
                &Usage::new(),
                TOLERANCE
            ),
            Err(CalcError::NoPods)
        );
        assert_eq!(
            recommend(
                "cpu",
                1,
                Target::Utilization(50),
                &[pod("a", 1)],
                &Usage::new(),
                TOLERANCE
            ),
            Err(CalcError::NoMetrics)
        );
    }

    #[test]
    fn fresh_cpu_samples_count_only_after_a_window_of_readiness() {
        let now = Timestamp::from_second(10_000).unwrap();
        let window = SignedDuration::from_secs(15);
        let started = Some(now - SignedDuration::from_secs(60));
        let ready_at = now - SignedDuration::from_secs(50);
        assert!(cpu_sample_unready(
            started,
            Some((true, ready_at)),
            now - SignedDuration::from_secs(40),
            window,
            now
        ));
        assert!(!cpu_sample_unready(
            started,
            Some((true, ready_at)),
            now,
            window,
            now
        ));
        assert!(cpu_sample_unready(
            started,
            Some((false, ready_at)),
            now,
            window,
            now
        ));
        assert!(cpu_sample_unready(started, None, now, window, now));
        // Old pods: unready only if never ready.
        let old = Some(now - SignedDuration::from_secs(3600));
        let later = now - SignedDuration::from_secs(60);
        assert!(!cpu_sample_unready(
            old,
            Some((false, later)),
            now,
            window,
            now
        ));
        assert!(cpu_sample_unready(
            old,
            Some((false, now - SignedDuration::from_secs(3590))),
            now,
            window,
            now
        ));
    }
}
