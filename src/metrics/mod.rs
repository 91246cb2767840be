//! Resource metrics of this node and its pods, as `metrics.k8s.io` serves them: the agent's
//! sampler reads the cgroups every [`SAMPLE_INTERVAL`] and keeps the last two rounds only; CPU
//! usage is the rate between them, memory the latest working set. The API server reads the
//! same [`Metrics`] handle (agent and server share the process), so nothing is stored or sent.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::runtime::cgroups;
use crate::runtime::stats::{self, Hierarchies, Usage};

/// How often the sampler reads the cgroups (upstream's metrics-server default resolution).
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(15);

/// One sampling round: the node and every container of every pod cgroup at one moment.
#[derive(Debug, Clone, Default)]
pub struct Round {
    pub at: jiff::Timestamp,
    pub node: Option<Usage>,
    /// pod uid → container name → usage.
    pub pods: HashMap<String, BTreeMap<String, Usage>>,
}

/// Usage over the window between two rounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// When the later reading was taken.
    pub timestamp: jiff::Timestamp,
    pub window: Duration,
    pub cpu_nanocores: u64,
    pub memory_bytes: u64,
}

/// The last two rounds, shared by the sampler (writer) and the API server (reader).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// The node the samples are taken on.
    node_name: Arc<String>,
    rounds: Arc<Mutex<(Option<Round>, Option<Round>)>>,
}

impl Metrics {
    pub fn for_node(node_name: &str) -> Metrics {
        Metrics {
            node_name: Arc::new(node_name.to_string()),
            rounds: Arc::default(),
        }
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Keeps `round` as the latest, the former latest as the previous; older ones are dropped.
    pub fn record(&self, round: Round) {
        if let Ok(mut rounds) = self.rounds.lock() {
            let latest = rounds.1.take();
            *rounds = (latest, Some(round));
        }
    }

    fn with_rounds<T>(&self, f: impl FnOnce(&Round, &Round) -> Option<T>) -> Option<T> {
        let rounds = self.rounds.lock().ok()?;
        match &*rounds {
            (Some(previous), Some(latest)) => f(previous, latest),
            _ => None,
        }
    }

    /// The latest round, for cumulative counters (the kubelet's stats and metrics endpoints).
    pub fn latest(&self) -> Option<Round> {
        self.rounds.lock().ok()?.1.clone()
    }

    /// The node's usage over the last window; `None` until two rounds were taken.
    pub fn node(&self) -> Option<Point> {
        self.with_rounds(|previous, latest| rate(previous, latest, previous.node?, latest.node?))
    }

    /// Each container's usage over the last window, for the pod with `uid`. `None` until the
    /// pod was seen in two rounds; containers not seen in both (just started or restarted)
    /// are left out.
    pub fn pod(&self, uid: &str) -> Option<BTreeMap<String, Point>> {
        self.with_rounds(|previous, latest| {
            let before = previous.pods.get(uid)?;
            let now = latest.pods.get(uid)?;
            let points: BTreeMap<String, Point> = now
                .iter()
                .filter_map(|(name, usage)| {
                    let point = rate(previous, latest, *before.get(name)?, *usage)?;
                    Some((name.clone(), point))
                })
                .collect();
            Some(points)
        })
    }
}

/// The CPU rate between two readings and the later memory reading. A counter that went
/// backwards means a new cgroup under the same name (a restarted container): no rate then.
fn rate(previous: &Round, latest: &Round, before: Usage, now: Usage) -> Option<Point> {
    let window = Duration::try_from(latest.at.duration_since(previous.at)).ok()?;
    if window.is_zero() || now.cpu_ns < before.cpu_ns {
        return None;
    }
    let used = u128::from(now.cpu_ns - before.cpu_ns);
    let cpu_nanocores = used * 1_000_000_000 / window.as_nanos().max(1);
    Some(Point {
        timestamp: latest.at,
        window,
        cpu_nanocores: u64::try_from(cpu_nanocores).unwrap_or(u64::MAX),
        memory_bytes: now.memory_working_set,
    })
}

/// The berth root below which every pod has its cgroup (see [`cgroups::pod_cgroup_parent`]).
pub const POD_ROOT: &str = "berth";

/// Reads the node and every pod cgroup now. Blocking (file reads).
pub fn sample(hierarchies: Option<&Hierarchies>) -> Round {
    let mut round = Round {
        at: jiff::Timestamp::now(),
        node: stats::node_usage(),
        pods: HashMap::new(),
    };
    let Some(hierarchies) = hierarchies else {
        return round;
    };
    for child in hierarchies.children(POD_ROOT) {
        let Some(uid) = child.strip_prefix("pod") else {
            continue;
        };
        let parent = cgroups::pod_cgroup_parent(uid);
        let containers: BTreeMap<String, Usage> = hierarchies
            .children(&parent)
            .into_iter()
            .filter_map(|name| {
                let usage = hierarchies.usage(&cgroups::container_cgroup_path(&parent, &name))?;
                Some((name, usage))
            })
            .collect();
        round.pods.insert(uid.to_string(), containers);
    }
    round
}

/// Samples every `interval` into `metrics`, forever.
pub async fn run_sampler(metrics: Metrics, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // Detected each round: the agent may mount the hierarchies after we start (in a
        // fresh mount namespace), and one mountinfo read per round costs nothing.
        match tokio::task::spawn_blocking(|| sample(Hierarchies::detect().as_ref())).await {
            Ok(round) => metrics.record(round),
            Err(e) => tracing::warn!("metrics sampling failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(at_seconds: i64, node_cpu_ns: u64, app_cpu_ns: u64) -> Round {
        let usage = |cpu_ns| Usage {
            cpu_ns,
            memory_working_set: 1 << 20,
        };
        let mut containers = BTreeMap::new();
        containers.insert("app".to_string(), usage(app_cpu_ns));
        Round {
            at: jiff::Timestamp::from_second(at_seconds).unwrap(),
            node: Some(usage(node_cpu_ns)),
            pods: HashMap::from([("uid-1".to_string(), containers)]),
        }
    }

    #[test]
    fn nothing_is_reported_before_two_rounds() {
        let metrics = Metrics::for_node("n1");
        assert!(metrics.node().is_none());
        metrics.record(round(100, 0, 0));
        assert!(metrics.node().is_none());
        assert!(metrics.pod("uid-1").is_none());
    }

    #[test]
    fn cpu_is_the_rate_between_the_last_two_rounds() {
        let metrics = Metrics::for_node("n1");
        metrics.record(round(100, 0, 0));
        metrics.record(round(110, 20_000_000_000, 5_000_000_000));
        let node = metrics.node().unwrap();
        assert_eq!(node.cpu_nanocores, 2_000_000_000);
        assert_eq!(node.window, Duration::from_secs(10));
        let pod = metrics.pod("uid-1").unwrap();
        assert_eq!(pod["app"].cpu_nanocores, 500_000_000);
        assert_eq!(pod["app"].memory_bytes, 1 << 20);
        // A third round replaces the oldest.
        metrics.record(round(120, 20_000_000_000, 5_000_000_000));
        assert_eq!(metrics.pod("uid-1").unwrap()["app"].cpu_nanocores, 0);
        assert!(metrics.pod("other").is_none());
    }

    #[test]
    fn a_restarted_container_has_no_rate_until_its_next_round() {
        let metrics = Metrics::for_node("n1");
        metrics.record(round(100, 0, 9_000_000_000));
        metrics.record(round(115, 0, 1_000_000));
        assert!(metrics.pod("uid-1").unwrap().is_empty());
    }
}
