//! The writer's inbox: requests from callers, and word from the sync thread that the group in
//! flight is done. One lock and one condition variable, so the writer can wait for whichever
//! comes first (a std channel can wait on one source only): a write that arrives while a group
//! is being synced is applied at once, ready to go as soon as the sync returns.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What woke the writer.
pub(super) enum Wake<T> {
    /// Requests, oldest first (at most the batch limit).
    Items(Vec<T>),
    /// The sync thread finished a group.
    Synced,
    /// The deadline passed with nothing to do.
    Timeout,
    /// The store is closing and every request was handed out.
    Closed,
}

pub(super) struct Queue<T> {
    state: Mutex<State<T>>,
    wake: Condvar,
}

struct State<T> {
    items: VecDeque<T>,
    synced: bool,
    closed: bool,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                synced: false,
                closed: false,
            }),
            wake: Condvar::new(),
        }
    }
}

impl<T> Queue<T> {
    fn state(&self) -> MutexGuard<'_, State<T>> {
        // The state is a queue and two flags: a panic while holding it leaves them usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item`; gives it back when the queue is closed.
    pub fn push(&self, item: T) -> Result<(), T> {
        let mut state = self.state();
        if state.closed {
            return Err(item);
        }
        state.items.push_back(item);
        drop(state);
        self.wake.notify_one();
        Ok(())
    }

    pub fn close(&self) {
        self.state().closed = true;
        self.wake.notify_one();
    }

    /// Tells the writer the group in flight is done.
    pub fn synced(&self) {
        self.state().synced = true;
        self.wake.notify_one();
    }

    /// While a group syncs: waits for the sync to finish (first) or for more requests to join
    /// the next group (taking up to `max`, `max` > 0), the close, or `recheck` (then the caller
    /// looks at the sync itself: a sync thread that died never signals). Unlike
    /// [`Queue::wait`], handing out requests leaves a finished sync signalled.
    pub fn wait_during_sync(&self, max: usize, recheck: Duration) -> Wake<T> {
        let deadline = Instant::now() + recheck;
        let mut state = self.state();
        loop {
            if std::mem::take(&mut state.synced) {
                return Wake::Synced;
            }
            if !state.items.is_empty() {
                let n = state.items.len().min(max.max(1));
                return Wake::Items(state.items.drain(..n).collect());
            }
            if state.closed {
                return Wake::Closed;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Wake::Timeout;
            };
            state = self
                .wake
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for requests (taking up to `max`), a finished sync, the close, or `timeout`.
    /// Requests come first: a finished sync is settled with the next batch anyway.
    pub fn wait(&self, max: usize, timeout: Option<Duration>) -> Wake<T> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut state = self.state();
        loop {
            if !state.items.is_empty() {
                let n = state.items.len().min(max.max(1));
                state.synced = false;
                return Wake::Items(state.items.drain(..n).collect());
            }
            if std::mem::take(&mut state.synced) {
                return Wake::Synced;
            }
            if state.closed {
                return Wake::Closed;
            }
            state = match deadline {
                None => self.wake.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        return Wake::Timeout;
                    };
                    self.wake
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn requests_are_handed_out_in_order_and_in_batches_of_at_most_max() {
        let queue = Queue::default();
        for i in 0..5 {
            queue.push(i).unwrap();
        }
        assert!(matches!(queue.wait(3, None), Wake::Items(v) if v == [0, 1, 2]));
        assert!(matches!(queue.wait(3, None), Wake::Items(v) if v == [3, 4]));
    }

    #[test]
    fn a_closed_queue_hands_out_what_it_holds_then_says_closed_and_refuses_more() {
        let queue = Queue::default();
        queue.push(1).unwrap();
        queue.close();
        assert_eq!(queue.push(2), Err(2));
        assert!(matches!(queue.wait(8, None), Wake::Items(v) if v == [1]));
        assert!(matches!(queue.wait(8, None), Wake::Closed));
    }

    #[test]
    fn a_finished_sync_wakes_a_waiting_writer() {
        let queue = Arc::new(Queue::<u32>::default());
        let syncer = {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                queue.synced();
            })
        };
        assert!(matches!(
            queue.wait(8, Some(Duration::from_secs(30))),
            Wake::Synced
        ));
        syncer.join().unwrap();
    }

    #[test]
    fn during_a_sync_a_finished_sync_comes_before_waiting_requests() {
        let queue = Queue::default();
        queue.push(1).unwrap();
        queue.synced();
        assert!(matches!(
            queue.wait_during_sync(8, Duration::from_secs(30)),
            Wake::Synced
        ));
        assert!(
            matches!(queue.wait_during_sync(8, Duration::from_secs(30)), Wake::Items(v) if v == [1])
        );
    }

    #[test]
    fn during_a_sync_requests_arriving_later_are_handed_out_as_they_come() {
        let queue = Arc::new(Queue::default());
        let sender = {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                queue.push(7).unwrap();
                std::thread::sleep(Duration::from_millis(20));
                queue.synced();
            })
        };
        assert!(
            matches!(queue.wait_during_sync(8, Duration::from_secs(30)), Wake::Items(v) if v == [7])
        );
        assert!(matches!(
            queue.wait_during_sync(8, Duration::from_secs(30)),
            Wake::Synced
        ));
        sender.join().unwrap();
    }

    #[test]
    fn nothing_to_do_until_the_deadline_is_a_timeout() {
        let queue = Queue::<u32>::default();
        let started = Instant::now();
        assert!(matches!(
            queue.wait(8, Some(Duration::from_millis(20))),
            Wake::Timeout
        ));
        assert!(started.elapsed() >= Duration::from_millis(20));
    }
}
