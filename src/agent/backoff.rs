//! Exponential restart back-off per container, as kubelet does: 10 s doubling to 5 min, reset
//! after a container ran fine for twice the maximum.

use std::time::{Duration, Instant};

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Default)]
pub struct Backoff {
    /// The delay the next restart waits; `None` before the first failure.
    delay: Option<Duration>,
    /// When the current wait ends.
    until: Option<Instant>,
}

impl Backoff {
    /// Records a container exit at `now` that calls for a restart, after it had run for `ran`.
    /// Returns how long to wait before restarting it.
    pub fn record_exit(&mut self, now: Instant, ran: Duration) -> Duration {
        let delay = match self.delay {
            // A container that ran long enough is healthy again: start the curve over.
            Some(_) if ran >= MAX * 2 => INITIAL,
            Some(previous) => (previous * 2).min(MAX),
            None => INITIAL,
        };
        self.delay = Some(delay);
        self.until = Some(now + delay);
        delay
    }

    /// Time left before a restart may happen; zero when it may happen now.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.until
            .map(|until| until.saturating_duration_since(now))
            .unwrap_or(Duration::ZERO)
    }

    /// Whether a wait is pending (the container is in back-off).
    pub fn waiting(&self, now: Instant) -> bool {
        !self.remaining(now).is_zero()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_ten_seconds_and_stop_at_five_minutes() {
        let mut b = Backoff::default();
        let now = Instant::now();
        let delays: Vec<u64> = (0..7)
            .map(|_| b.record_exit(now, Duration::from_secs(1)).as_secs())
            .collect();
        assert_eq!(delays, vec![10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn a_container_that_ran_long_starts_the_curve_over() {
        let mut b = Backoff::default();
        let now = Instant::now();
        b.record_exit(now, Duration::ZERO);
        b.record_exit(now, Duration::ZERO);
        assert_eq!(b.record_exit(now, Duration::from_secs(600)), INITIAL);
    }

    #[test]
    fn remaining_counts_down_to_zero() {
        let mut b = Backoff::default();
        let now = Instant::now();
        assert!(!b.waiting(now));
        b.record_exit(now, Duration::ZERO);
        assert!(b.waiting(now));
        assert_eq!(
            b.remaining(now + Duration::from_secs(4)),
            Duration::from_secs(6)
        );
        assert!(!b.waiting(now + Duration::from_secs(11)));
    }
}
