//! Eviction signals and thresholds: what is measured, what limit it is held to, and whether
//! the limit is crossed (upstream's `pkg/kubelet/eviction/api` and `helpers.go`). Pure.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::config::EvictionConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    MemoryAvailable,
    NodeFsAvailable,
    NodeFsInodesFree,
    ImageFsAvailable,
    ImageFsInodesFree,
    /// Task ids left: the smaller of `pid_max` and `threads-max`, less the tasks alive.
    PidAvailable,
}

impl Signal {
    pub const ALL: [Signal; 6] = [
        Signal::MemoryAvailable,
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
        Signal::PidAvailable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::NodeFsInodesFree => "nodefs.inodesFree",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::ImageFsInodesFree => "imagefs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }

    fn parse(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The resource a signal is about, as eviction messages name it.
    pub fn resource(self) -> Resource {
        match self {
            Signal::MemoryAvailable => Resource::Memory,
            Signal::NodeFsInodesFree | Signal::ImageFsInodesFree => Resource::Inodes,
            Signal::PidAvailable => Resource::Pids,
            _ => Resource::EphemeralStorage,
        }
    }

    /// The node condition a crossed signal raises.
    pub fn condition(self) -> Condition {
        match self {
            Signal::MemoryAvailable => Condition::MemoryPressure,
            Signal::PidAvailable => Condition::PidPressure,
            _ => Condition::DiskPressure,
        }
    }

    /// Signals that freeing images relieves.
    pub fn image_gc_helps(self) -> bool {
        matches!(
            self,
            Signal::ImageFsAvailable
                | Signal::ImageFsInodesFree
                | Signal::NodeFsAvailable
                | Signal::NodeFsInodesFree
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Memory,
    EphemeralStorage,
    Inodes,
    Pids,
}

impl Resource {
    pub fn name(self) -> &'static str {
        match self {
            Resource::Memory => "memory",
            Resource::EphemeralStorage => "ephemeral-storage",
            Resource::Inodes => "inodes",
            Resource::Pids => "pids",
        }
    }
}

/// The pressure conditions a node reports, in upstream's order (as its admission message
/// lists them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Condition {
    MemoryPressure,
    DiskPressure,
    PidPressure,
}

impl Condition {
    pub const ALL: [Condition; 3] = [
        Condition::MemoryPressure,
        Condition::DiskPressure,
        Condition::PidPressure,
    ];

    /// The condition's type in the Node's status.
    pub fn type_name(self) -> &'static str {
        match self {
            Condition::MemoryPressure => "MemoryPressure",
            Condition::DiskPressure => "DiskPressure",
            Condition::PidPressure => "PIDPressure",
        }
    }
}

/// A limit: an absolute amount, or a share of capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    Quantity(u64),
    Percent(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub limit: Limit,
    /// As written in the config (`100Mi`, `10%`), for messages.
    pub written: String,
    /// Zero for hard thresholds.
    pub grace: Duration,
    pub soft: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ThresholdError {
    #[error("unknown eviction signal {0:?}")]
    UnknownSignal(String),
    #[error("eviction threshold {signal}: invalid value {value:?}")]
    BadValue { signal: String, value: String },
    #[error("soft eviction threshold {0} has no grace period")]
    NoGracePeriod(String),
}

/// The thresholds of a config, hard then soft.
pub fn from_config(config: &EvictionConfig) -> Result<Vec<Threshold>, ThresholdError> {
    let mut thresholds = Vec::new();
    for (soft, map) in [(false, &config.hard), (true, &config.soft)] {
        for (name, value) in map {
            let signal =
                Signal::parse(name).ok_or_else(|| ThresholdError::UnknownSignal(name.clone()))?;
            let limit = parse_limit(value).ok_or_else(|| ThresholdError::BadValue {
                signal: name.clone(),
                value: value.clone(),
            })?;
            let grace = match soft {
                false => Duration::ZERO,
                true => Duration::from_secs(
                    *config
                        .soft_grace_period_seconds
                        .get(name)
                        .ok_or_else(|| ThresholdError::NoGracePeriod(name.clone()))?,
                ),
            };
            thresholds.push(Threshold {
                signal,
                limit,
                written: value.clone(),
                grace,
                soft,
            });
        }
    }
    Ok(thresholds)
}

fn parse_limit(value: &str) -> Option<Limit> {
    if let Some(percent) = value.trim().strip_suffix('%') {
        let p: f64 = percent.trim().parse().ok()?;
        return (0.0..=100.0).contains(&p).then_some(Limit::Percent(p));
    }
    let q = crate::agent::spec::parse_quantity(value)?;
    // Far beyond any machine, but a valid threshold (tests use it to force pressure).
    (q >= 0.0).then_some(Limit::Quantity(q.min(u64::MAX as f64) as u64))
}

/// One reading of a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub available: u64,
    pub capacity: u64,
}

impl Threshold {
    /// The limit in units of the signal for a given capacity.
    pub fn quantity(&self, capacity: u64) -> u64 {
        match self.limit {
            Limit::Quantity(q) => q,
            Limit::Percent(p) => (capacity as f64 * p / 100.0) as u64,
        }
    }

    /// Whether the observation is below the limit.
    pub fn crossed_by(&self, observation: &Observation) -> bool {
        observation.available < self.quantity(observation.capacity)
    }
}

pub type Observations = BTreeMap<Signal, Observation>;

/// Remembers since when each threshold has been crossed and when each pressure was last
/// seen, to apply grace and transition periods.
#[derive(Debug, Default)]
pub struct Tracker {
    first_crossed: BTreeMap<usize, Instant>,
    last_pressure: BTreeMap<Condition, Instant>,
}

/// What one round of observation came to.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Thresholds crossed now and for longer than their grace period: act on these.
    pub met: Vec<Threshold>,
    /// The pressure conditions the node has now, in [`Condition::ALL`]'s order.
    pub pressure: Vec<Condition>,
}

impl Verdict {
    pub fn has(&self, condition: Condition) -> bool {
        self.pressure.contains(&condition)
    }
}

impl Tracker {
    pub fn judge(
        &mut self,
        thresholds: &[Threshold],
        observations: &Observations,
        now: Instant,
        transition: Duration,
    ) -> Verdict {
        let mut met = Vec::new();
        let mut crossed_any = Vec::new();
        for (i, threshold) in thresholds.iter().enumerate() {
            let crossed = observations
                .get(&threshold.signal)
                .is_some_and(|o| threshold.crossed_by(o));
            if !crossed {
                self.first_crossed.remove(&i);
                continue;
            }
            crossed_any.push(threshold.signal);
            let since = *self.first_crossed.entry(i).or_insert(now);
            if now.saturating_duration_since(since) >= threshold.grace {
                met.push(threshold.clone());
            }
        }
        // Upstream's conditions follow thresholds crossed, grace period or not.
        for signal in crossed_any {
            self.last_pressure.insert(signal.condition(), now);
        }
        let recent = |t: Instant| now.saturating_duration_since(t) < transition || t == now;
        Verdict {
            met,
            pressure: Condition::ALL
                .into_iter()
                .filter(|c| self.last_pressure.get(c).is_some_and(|t| recent(*t)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(hard: &[(&str, &str)]) -> EvictionConfig {
        EvictionConfig {
            hard: hard
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..EvictionConfig::default()
        }
    }

    fn observed(signal: Signal, available: u64, capacity: u64) -> Observations {
        BTreeMap::from([(
            signal,
            Observation {
                available,
                capacity,
            },
        )])
    }

    #[test]
    fn the_default_thresholds_are_upstreams() {
        let thresholds = from_config(&EvictionConfig::default()).unwrap();
        let memory = thresholds
            .iter()
            .find(|t| t.signal == Signal::MemoryAvailable)
            .unwrap();
        assert_eq!(memory.limit, Limit::Quantity(100 << 20));
        let nodefs = thresholds
            .iter()
            .find(|t| t.signal == Signal::NodeFsAvailable)
            .unwrap();
        assert_eq!(nodefs.limit, Limit::Percent(10.0));
        assert_eq!(thresholds.len(), 4);
    }

    #[test]
    fn unknown_signals_bad_values_and_soft_thresholds_without_grace_are_refused() {
        assert_eq!(
            from_config(&config(&[("cpu.available", "1")])),
            Err(ThresholdError::UnknownSignal("cpu.available".into()))
        );
        assert!(from_config(&config(&[("memory.available", "lots")])).is_err());
        assert!(from_config(&config(&[("nodefs.available", "120%")])).is_err());
        let soft = EvictionConfig {
            soft: BTreeMap::from([("memory.available".into(), "1Gi".into())]),
            ..EvictionConfig::default()
        };
        assert!(matches!(
            from_config(&soft),
            Err(ThresholdError::NoGracePeriod(_))
        ));
    }

    #[test]
    fn percentages_are_of_capacity_and_a_huge_quantity_is_always_crossed() {
        let t = &from_config(&config(&[("nodefs.available", "10%")])).unwrap()[0];
        assert!(t.crossed_by(&Observation {
            available: 9,
            capacity: 100
        }));
        assert!(!t.crossed_by(&Observation {
            available: 10,
            capacity: 100
        }));
        let huge = &from_config(&config(&[("memory.available", "1000Ti")])).unwrap()[0];
        assert!(huge.crossed_by(&Observation {
            available: 64 << 30,
            capacity: 128 << 30
        }));
    }

    #[test]
    fn soft_thresholds_act_only_after_their_grace_period() {
        let soft = EvictionConfig {
            hard: BTreeMap::new(),
            soft: BTreeMap::from([("memory.available".into(), "1Gi".into())]),
            soft_grace_period_seconds: BTreeMap::from([("memory.available".into(), 30)]),
            ..EvictionConfig::default()
        };
        let thresholds = from_config(&soft).unwrap();
        let low = observed(Signal::MemoryAvailable, 512 << 20, 4 << 30);
        let mut tracker = Tracker::default();
        let start = Instant::now();
        let transition = Duration::from_secs(300);
        let first = tracker.judge(&thresholds, &low, start, transition);
        assert!(first.met.is_empty() && first.has(Condition::MemoryPressure));
        let later = tracker.judge(
            &thresholds,
            &low,
            start + Duration::from_secs(31),
            transition,
        );
        assert_eq!(later.met.len(), 1);
        assert!(!later.has(Condition::DiskPressure));
    }

    #[test]
    fn pressure_stays_for_the_transition_period_after_recovery() {
        let thresholds = from_config(&config(&[("imagefs.available", "15%")])).unwrap();
        let mut tracker = Tracker::default();
        let start = Instant::now();
        let transition = Duration::from_secs(60);
        let full = observed(Signal::ImageFsAvailable, 5, 100);
        let fine = observed(Signal::ImageFsAvailable, 50, 100);
        assert!(tracker
            .judge(&thresholds, &full, start, transition)
            .has(Condition::DiskPressure));
        let soon = tracker.judge(
            &thresholds,
            &fine,
            start + Duration::from_secs(10),
            transition,
        );
        assert!(soon.has(Condition::DiskPressure) && soon.met.is_empty());
        let late = tracker.judge(
            &thresholds,
            &fine,
            start + Duration::from_secs(61),
            transition,
        );
        assert!(!late.has(Condition::DiskPressure));
    }

    #[test]
    fn a_crossed_pid_threshold_raises_pid_pressure_alone() {
        let thresholds = from_config(&config(&[("pid.available", "1000")])).unwrap();
        assert_eq!(thresholds[0].signal, Signal::PidAvailable);
        assert_eq!(thresholds[0].signal.resource(), Resource::Pids);
        let mut tracker = Tracker::default();
        let few = observed(Signal::PidAvailable, 999, 4_194_304);
        let verdict = tracker.judge(&thresholds, &few, Instant::now(), Duration::ZERO);
        assert_eq!(verdict.pressure, [Condition::PidPressure]);
        assert_eq!(verdict.met.len(), 1);
    }
}
