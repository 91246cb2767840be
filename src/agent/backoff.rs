//! Restart back-off per container, as kubelet's: the first restart is immediate, later ones
//! wait 10 s doubling to 5 min after the previous start; a container that stayed up for twice
//! the maximum starts the curve over.

use std::time::{Duration, Instant};

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Default)]
pub struct Backoff {
    /// How long after `last_start` the next restart may happen; `None` before any restart.
    delay: Option<Duration>,
    last_start: Option<Instant>,
}

impl Backoff {
    /// Time left before the next (re)start may happen; zero when it may happen now.
    pub fn remaining(&self, now: Instant) -> Duration {
        match (self.delay, self.last_start) {
            (Some(delay), Some(start)) if now.duration_since(start) < MAX * 2 => {
                (start + delay).saturating_duration_since(now)
            }
            _ => Duration::ZERO,
        }
    }

    /// Records a (re)start at `now`; returns the delay the following one will wait.
    pub fn started(&mut self, now: Instant) -> Duration {
        let stale = self
            .last_start
            .is_some_and(|start| now.duration_since(start) >= MAX * 2);
        let next = match self.delay {
            Some(previous) if !stale => (previous * 2).min(MAX),
            _ => INITIAL,
        };
        self.delay = Some(next);
        self.last_start = Some(now);
        next
    }

    /// The delay the current wait is about (for "back-off 20s restarting ..." messages).
    pub fn current_delay(&self) -> Duration {
        self.delay.unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_restart_is_immediate_then_delays_double_up_to_five_minutes() {
        let mut b = Backoff::default();
        let now = Instant::now();
        assert_eq!(b.remaining(now), Duration::ZERO);
        let delays: Vec<u64> = (0..7).map(|_| b.started(now).as_secs()).collect();
        assert_eq!(delays, vec![10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn remaining_counts_down_from_the_last_start() {
        let mut b = Backoff::default();
        let now = Instant::now();
        b.started(now);
        assert_eq!(
            b.remaining(now + Duration::from_secs(4)),
            Duration::from_secs(6)
        );
        assert_eq!(b.remaining(now + Duration::from_secs(11)), Duration::ZERO);
    }

    #[test]
    fn a_container_that_ran_long_starts_the_curve_over() {
        let mut b = Backoff::default();
        let now = Instant::now();
        b.started(now);
        b.started(now);
        let later = now + MAX * 2;
        assert_eq!(b.remaining(later), Duration::ZERO);
        assert_eq!(b.started(later), INITIAL);
    }
}
