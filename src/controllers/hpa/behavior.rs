//! From the metrics' recommendation to the replica count to set, as upstream normalizes it:
//! recommendations are stabilized over a window (by default only scale-downs, over 300 s, so
//! a short dip does not shed pods), then held to min/max and to the scaling rate — the fixed
//! `max(2 × current, 4)` without `spec.behavior`, the behavior's policies with it.

use k8s_openapi::api::autoscaling::v2::{
    HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscalerBehavior,
};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Upstream's default `--horizontal-pod-autoscaler-downscale-stabilization`.
pub const DEFAULT_DOWNSCALE_STABILIZATION: SignedDuration = SignedDuration::from_secs(300);

/// A past recommendation of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recommendation {
    pub at: Timestamp,
    pub replicas: i32,
}

/// A past change of the target's scale made by the autoscaler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleEvent {
    pub at: Timestamp,
    /// Replicas added (positive) or removed (negative).
    pub change: i32,
}

/// A condition to set: (status, reason, message).
pub type Verdict = (bool, &'static str, &'static str);

/// The outcome of normalization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Normalized {
    pub replicas: i32,
    /// `AbleToScale`: whether stabilization held the recommendation back.
    pub able_to_scale: Verdict,
    /// `ScalingLimited`: whether min/max or a rate limit changed the stabilized count.
    pub scaling_limited: Verdict,
}

const READY: Verdict = (
    true,
    "ReadyForNewScale",
    "recommended size matches current size",
);
const WITHIN_RANGE: &str = "DesiredWithinRange";
const WITHIN_RANGE_MESSAGE: &str = "the desired count is within the acceptable range";

/// Scaling rules with upstream's defaults filled in (`SetDefaults_HorizontalPodAutoscalerBehavior`).
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub stabilization: SignedDuration,
    pub select: String,
    /// (type, value, period)
    pub policies: Vec<(String, i32, SignedDuration)>,
}

impl Rules {
    fn from(rules: Option<&HPAScalingRules>, up: bool) -> Rules {
        let default_policies = match up {
            true => vec![
                ("Pods".to_string(), 4, SignedDuration::from_secs(15)),
                ("Percent".to_string(), 100, SignedDuration::from_secs(15)),
            ],
            false => vec![("Percent".to_string(), 100, SignedDuration::from_secs(15))],
        };
        let policy = |p: &HPAScalingPolicy| {
            (
                p.type_.clone(),
                p.value,
                SignedDuration::from_secs(p.period_seconds.into()),
            )
        };
        Rules {
            stabilization: rules
                .and_then(|r| r.stabilization_window_seconds)
                .map(|s| SignedDuration::from_secs(s.into()))
                .unwrap_or(match up {
                    true => SignedDuration::ZERO,
                    false => DEFAULT_DOWNSCALE_STABILIZATION,
                }),
            select: rules
                .and_then(|r| r.select_policy.clone())
                .unwrap_or_else(|| "Max".into()),
            policies: rules
                .and_then(|r| r.policies.as_ref())
                .filter(|p| !p.is_empty())
                .map(|p| p.iter().map(policy).collect())
                .unwrap_or(default_policies),
        }
    }

    /// The scale-up and scale-down rules of `behavior`.
    pub fn of(behavior: &HorizontalPodAutoscalerBehavior) -> (Rules, Rules) {
        (
            Rules::from(behavior.scale_up.as_ref(), true),
            Rules::from(behavior.scale_down.as_ref(), false),
        )
    }

    fn longest_period(&self) -> SignedDuration {
        self.policies
            .iter()
            .map(|(_, _, period)| *period)
            .max()
            .unwrap_or(SignedDuration::ZERO)
    }
}

/// How long recommendations and scale events must be kept to normalize with `behavior`.
pub fn history_needed(behavior: Option<&HorizontalPodAutoscalerBehavior>) -> SignedDuration {
    match behavior {
        None => DEFAULT_DOWNSCALE_STABILIZATION,
        Some(b) => {
            let (up, down) = Rules::of(b);
            [
                up.stabilization,
                down.stabilization,
                up.longest_period(),
                down.longest_period(),
            ]
            .into_iter()
            .max()
            .unwrap_or(SignedDuration::ZERO)
        }
    }
}

/// Normalization without `spec.behavior`: scale-downs stabilized over the default window,
/// scale-ups limited to `max(2 × current, 4)` per round.
pub fn without_behavior(
    now: Timestamp,
    history: &[Recommendation],
    current: i32,
    recommended: i32,
    min: i32,
    max: i32,
) -> Normalized {
    let stabilized = history
        .iter()
        .filter(|r| r.at > now - DEFAULT_DOWNSCALE_STABILIZATION)
        .map(|r| r.replicas)
        .fold(recommended, i32::max);
    let able_to_scale = match stabilized == recommended {
        true => READY,
        false => (
            true,
            "ScaleDownStabilized",
            "recent recommendations were higher than current one, applying the highest recent recommendation",
        ),
    };
    let scale_up_limit = (current.saturating_mul(2)).max(4);
    let (maximum, over_reason, over_message) = match max > scale_up_limit {
        true => (
            scale_up_limit,
            "ScaleUpLimit",
            "the desired replica count is increasing faster than the maximum scale rate",
        ),
        false => (
            max,
            "TooManyReplicas",
            "the desired replica count is more than the maximum replica count",
        ),
    };
    let (replicas, reason, message) = if stabilized < min {
        (
            min,
            "TooFewReplicas",
            "the desired replica count is less than the minimum replica count",
        )
    } else if stabilized > maximum {
        (maximum, over_reason, over_message)
    } else {
        (stabilized, WITHIN_RANGE, WITHIN_RANGE_MESSAGE)
    };
    Normalized {
        replicas,
        able_to_scale,
        scaling_limited: (replicas != stabilized, reason, message),
    }
}

/// Normalization with `spec.behavior`: both directions stabilized over their windows, then
/// held to the policies' rates given the scale events of their periods.
#[allow(clippy::too_many_arguments)]
pub fn with_behavior(
    now: Timestamp,
    behavior: &HorizontalPodAutoscalerBehavior,
    history: &[Recommendation],
    events: &[ScaleEvent],
    current: i32,
    recommended: i32,
    min: i32,
    max: i32,
) -> Normalized {
    let (up, down) = Rules::of(behavior);
    // The lowest recommendation of the up window bounds a scale-up, the highest of the down
    // window a scale-down: a move must have been wanted for the whole window.
    let mut up_bound = recommended;
    let mut down_bound = recommended;
    for r in history {
        if r.at > now - up.stabilization {
            up_bound = up_bound.min(r.replicas);
        }
        if r.at > now - down.stabilization {
            down_bound = down_bound.max(r.replicas);
        }
    }
    let mut stabilized = current;
    let mut able_to_scale = READY;
    if stabilized < up_bound {
        stabilized = up_bound;
    }
    if stabilized > down_bound {
        stabilized = down_bound;
    }
    if stabilized != recommended {
        able_to_scale = match stabilized < recommended {
            true => (
                true,
                "ScaleUpStabilized",
                "recent recommendations were lower than current one, applying the lowest recent recommendation",
            ),
            false => (
                true,
                "ScaleDownStabilized",
                "recent recommendations were higher than current one, applying the highest recent recommendation",
            ),
        };
    }
    let (replicas, reason, message) = if stabilized > current {
        let limit = scale_up_limit(now, current, events, &up).max(current);
        let (maximum, reason, message) = match max > limit {
            true => (
                limit,
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate",
            ),
            false => (
                max,
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
            ),
        };
        match stabilized > maximum {
            true => (maximum, reason, message),
            false => (stabilized, WITHIN_RANGE, WITHIN_RANGE_MESSAGE),
        }
    } else if stabilized < current {
        let limit = scale_down_limit(now, current, events, &down).min(current);
        let (minimum, reason, message) = match min < limit {
            true => (
                limit,
                "ScaleDownLimit",
                "the desired replica count is decreasing faster than the maximum scale rate",
            ),
            false => (
                min,
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count",
            ),
        };
        match stabilized < minimum {
            true => (minimum, reason, message),
            false => (stabilized, WITHIN_RANGE, WITHIN_RANGE_MESSAGE),
        }
    } else {
        (stabilized, WITHIN_RANGE, WITHIN_RANGE_MESSAGE)
    };
    Normalized {
        replicas,
        able_to_scale,
        scaling_limited: (replicas != stabilized, reason, message),
    }
}

/// The replicas at the start of a policy period: the current count without the period's
/// changes.
fn period_start(
    now: Timestamp,
    current: i32,
    events: &[ScaleEvent],
    period: SignedDuration,
) -> i32 {
    let changed: i32 = events
        .iter()
        .filter(|e| e.at > now - period)
        .map(|e| e.change)
        .sum();
    current - changed
}

fn scale_up_limit(now: Timestamp, current: i32, events: &[ScaleEvent], rules: &Rules) -> i32 {
    if rules.select == "Disabled" {
        return current;
    }
    let proposals = rules.policies.iter().map(|(kind, value, period)| {
        let start = period_start(now, current, events, *period);
        match kind.as_str() {
            "Pods" => start.saturating_add(*value),
            _ => (f64::from(start) * (1.0 + f64::from(*value) / 100.0)).ceil() as i32,
        }
    });
    match rules.select.as_str() {
        "Min" => proposals.min(),
        _ => proposals.max(),
    }
    .unwrap_or(current)
}

fn scale_down_limit(now: Timestamp, current: i32, events: &[ScaleEvent], rules: &Rules) -> i32 {
    if rules.select == "Disabled" {
        return current;
    }
    let proposals = rules.policies.iter().map(|(kind, value, period)| {
        let start = period_start(now, current, events, *period);
        match kind.as_str() {
            "Pods" => start.saturating_sub(*value),
            _ => (f64::from(start) * (1.0 - f64::from(*value) / 100.0)) as i32,
        }
    });
    // "Max" selects the policy allowing the biggest change: the lowest count.
    match rules.select.as_str() {
        "Min" => proposals.max(),
        _ => proposals.min(),
    }
    .unwrap_or(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_000_000 + seconds).unwrap()
    }

    fn rec(seconds: i64, replicas: i32) -> Recommendation {
        Recommendation {
            at: at(seconds),
            replicas,
        }
    }

    #[test]
    fn scale_down_waits_for_the_stabilization_window() {
        let history = [rec(-200, 5), rec(-100, 3)];
        let n = without_behavior(at(0), &history, 5, 1, 1, 10);
        assert_eq!(n.replicas, 5);
        assert_eq!(n.able_to_scale.1, "ScaleDownStabilized");
        // Once the high recommendation is older than 300 s, the next highest applies.
        let n = without_behavior(at(150), &history, 5, 1, 1, 10);
        assert_eq!(n.replicas, 3);
    }

    #[test]
    fn scale_up_is_immediate_but_rate_limited_without_behavior() {
        let n = without_behavior(at(0), &[], 1, 10, 1, 20);
        assert_eq!(n.replicas, 4);
        assert_eq!(
            n.scaling_limited,
            (
                true,
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate"
            )
        );
        let n = without_behavior(at(0), &[], 3, 10, 1, 5);
        assert_eq!(n.replicas, 5);
        assert_eq!(n.scaling_limited.1, "TooManyReplicas");
        let n = without_behavior(at(0), &[], 3, 0, 2, 5);
        assert_eq!(n.replicas, 2);
        assert_eq!(n.scaling_limited.1, "TooFewReplicas");
        let n = without_behavior(at(0), &[], 3, 4, 2, 5);
        assert_eq!(n.replicas, 4);
        assert_eq!(
            n.scaling_limited,
            (false, WITHIN_RANGE, WITHIN_RANGE_MESSAGE)
        );
        assert_eq!(n.able_to_scale, READY);
    }

    fn behavior(json: serde_json::Value) -> HorizontalPodAutoscalerBehavior {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_zero_scale_down_window_scales_down_at_once() {
        let b = behavior(serde_json::json!({"scaleDown": {"stabilizationWindowSeconds": 0}}));
        let n = with_behavior(at(0), &b, &[rec(-10, 8)], &[], 8, 2, 1, 10);
        assert_eq!(n.replicas, 2);
        assert_eq!(n.able_to_scale, READY);
    }

    #[test]
    fn default_behavior_stabilizes_scale_down_for_five_minutes() {
        let b = behavior(serde_json::json!({}));
        let n = with_behavior(at(0), &b, &[rec(-10, 8)], &[], 8, 2, 1, 10);
        assert_eq!(n.replicas, 8);
        assert_eq!(n.able_to_scale.1, "ScaleDownStabilized");
    }

    #[test]
    fn pod_policies_limit_scale_up_per_period() {
        let b = behavior(
            serde_json::json!({"scaleUp": {"policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]}}),
        );
        let n = with_behavior(at(0), &b, &[], &[], 2, 10, 1, 20);
        assert_eq!(n.replicas, 4);
        assert_eq!(n.scaling_limited.1, "ScaleUpLimit");
        // Two pods were already added 30 s ago: nothing more this period.
        let events = [ScaleEvent {
            at: at(-30),
            change: 2,
        }];
        let n = with_behavior(at(0), &b, &[], &events, 4, 10, 1, 20);
        assert_eq!(n.replicas, 4);
    }

    #[test]
    fn percent_policies_limit_scale_down_and_disabled_forbids_it() {
        let b = behavior(
            serde_json::json!({"scaleDown": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}]}}),
        );
        let n = with_behavior(at(0), &b, &[], &[], 10, 1, 1, 20);
        assert_eq!(n.replicas, 5);
        assert_eq!(n.scaling_limited.1, "ScaleDownLimit");
        let off = behavior(
            serde_json::json!({"scaleDown": {"stabilizationWindowSeconds": 0, "selectPolicy": "Disabled"}}),
        );
        let n = with_behavior(at(0), &off, &[], &[], 10, 1, 1, 20);
        assert_eq!(n.replicas, 10);
    }

    #[test]
    fn history_is_kept_as_long_as_the_longest_window_or_period() {
        assert_eq!(history_needed(None), DEFAULT_DOWNSCALE_STABILIZATION);
        let b = behavior(
            serde_json::json!({"scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 1800}]}}),
        );
        assert_eq!(history_needed(Some(&b)), SignedDuration::from_secs(1800));
    }
}
