//! A value built on demand, shared while in use and dropped after a while without use.
//!
//! The served OpenAPI documents are some 19 MiB together; kubectl fetches them in a burst before
//! `apply` or `explain` and then not again for a long time. Keeping them for good would make an
//! idle node pay for the last `kubectl explain` forever; rebuilding them per request would make a
//! burst pay for each. So they live until [`Expiring::ttl`] passes without a request.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A lazily built value that is forgotten once it has not been asked for within `ttl`.
pub struct Expiring<T> {
    ttl: Duration,
    slot: Mutex<Slot<T>>,
}

struct Slot<T> {
    /// The value and when it was last asked for.
    held: Option<(Arc<T>, Instant)>,
    /// Whether a reaper thread is waiting to expire the value: at most one at a time.
    reaper: bool,
}

impl<T: Send + Sync + 'static> Expiring<T> {
    pub const fn new(ttl: Duration) -> Expiring<T> {
        Expiring {
            ttl,
            slot: Mutex::new(Slot {
                held: None,
                reaper: false,
            }),
        }
    }

    /// The value, built by `build` if it was never built or has expired. Concurrent callers wait
    /// for one build rather than each building their own copy of a large document.
    pub fn get_or_build(&'static self, build: impl FnOnce() -> T) -> Arc<T> {
        let mut slot = self.lock();
        if let Some((value, last_used)) = &mut slot.held {
            *last_used = Instant::now();
            return Arc::clone(value);
        }
        let value = Arc::new(build());
        slot.held = Some((Arc::clone(&value), Instant::now()));
        if !slot.reaper {
            slot.reaper = self.spawn_reaper();
        }
        value
    }

    /// Drops the value if it has gone unused for `ttl` as of `now`. Returns when to look again:
    /// `None` once nothing is held.
    fn expire_if_idle(&self, now: Instant) -> Option<Instant> {
        let mut slot = self.lock();
        if let Some((_, last_used)) = &slot.held {
            let deadline = *last_used + self.ttl;
            if now < deadline {
                return Some(deadline);
            }
        }
        slot.held = None;
        slot.reaper = false;
        None
    }

    /// A thread (not a task: the documents are also served outside any runtime in tests) that
    /// sleeps until the value may have expired. Returns whether it started.
    fn spawn_reaper(&'static self) -> bool {
        std::thread::Builder::new()
            .name("openapi-expiry".to_owned())
            .spawn(move || {
                while let Some(deadline) = self.expire_if_idle(Instant::now()) {
                    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                }
                // The documents were megabytes of heap: give them back now, not at the next trim.
                crate::runtime::memory::return_free_heap();
            })
            .is_ok()
    }

    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        // A build that panicked leaves the slot empty or whole: either is fine to go on with.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn is_held(&self) -> bool {
        self.lock().held.is_some()
    }

    #[cfg(test)]
    fn last_used(&self) -> Instant {
        self.lock().held.as_ref().map(|(_, at)| *at).expect("held")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn leaked(ttl: Duration) -> &'static Expiring<String> {
        Box::leak(Box::new(Expiring::new(ttl)))
    }

    #[test]
    fn a_value_is_built_once_while_it_is_in_use() {
        let cache = leaked(Duration::from_secs(3600));
        let builds = AtomicUsize::new(0);
        for _ in 0..3 {
            let value = cache.get_or_build(|| {
                builds.fetch_add(1, Ordering::SeqCst);
                "doc".to_owned()
            });
            assert_eq!(*value, "doc");
        }
        assert_eq!(builds.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_value_unused_for_the_ttl_is_dropped_and_rebuilt_on_the_next_request() {
        let cache = leaked(Duration::from_secs(60));
        cache.get_or_build(|| "first".to_owned());
        let used = cache.last_used();

        // Just before the deadline it stays, and the reaper is told when to look again.
        let before = used + Duration::from_secs(59);
        assert_eq!(
            cache.expire_if_idle(before),
            Some(used + Duration::from_secs(60))
        );
        assert!(cache.is_held());

        assert_eq!(cache.expire_if_idle(used + Duration::from_secs(60)), None);
        assert!(!cache.is_held());
        assert_eq!(*cache.get_or_build(|| "second".to_owned()), "second");
    }

    #[test]
    fn a_request_pushes_the_expiry_back() {
        let cache = leaked(Duration::from_secs(60));
        cache.get_or_build(|| "doc".to_owned());
        let first = cache.last_used();
        std::thread::sleep(Duration::from_millis(5));
        cache.get_or_build(|| unreachable!("still held"));
        let second = cache.last_used();
        assert!(second > first);
        assert!(cache
            .expire_if_idle(first + Duration::from_secs(60))
            .is_some());
        assert!(cache.is_held());
    }

    #[test]
    fn the_reaper_thread_drops_the_value_after_the_ttl() {
        let cache = leaked(Duration::from_millis(30));
        let value = cache.get_or_build(|| "doc".to_owned());
        drop(value);
        let waited = Instant::now();
        while cache.is_held() {
            assert!(
                waited.elapsed() < Duration::from_secs(10),
                "value never expired"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // The reaper has finished, so a rebuilt value gets a reaper of its own.
        assert_eq!(*cache.get_or_build(|| "again".to_owned()), "again");
        let waited = Instant::now();
        while cache.is_held() {
            assert!(waited.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
