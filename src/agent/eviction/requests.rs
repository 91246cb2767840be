//! The hand-over between the eviction manager and the pod workers. The manager picks a pod and
//! asks for it here; the pod's worker is woken at once (not at its next resync) and evicts it;
//! the manager waits for that before it judges the node again, so one round evicts one pod and
//! the next round sees what the eviction freed (upstream's `waitForPodsCleanup`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

/// Pods the manager wants evicted, by uid.
#[derive(Debug, Clone)]
pub struct Evictions(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    pods: Mutex<HashMap<String, Request>>,
    /// Bumped on every change, so waiters look again.
    changed: watch::Sender<u64>,
}

#[derive(Debug, Clone)]
struct Request {
    message: String,
    carried_out: bool,
}

impl Default for Evictions {
    fn default() -> Self {
        Evictions(Arc::new(Shared {
            pods: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
        }))
    }
}

impl Evictions {
    /// Asks for `uid` to be evicted with `message`, and wakes its worker.
    pub fn request(&self, uid: &str, message: String) {
        self.lock().insert(
            uid.to_string(),
            Request {
                message,
                carried_out: false,
            },
        );
        self.notify();
    }

    /// The message of an eviction asked for `uid`, if one was.
    pub fn requested(&self, uid: &str) -> Option<String> {
        self.lock().get(uid).map(|r| r.message.clone())
    }

    /// Resolves once an eviction of `uid` is asked for: a worker waits on this between syncs.
    pub async fn wait_requested(&self, uid: &str) {
        self.wait_until(|pods| pods.contains_key(uid)).await
    }

    /// The worker has stopped `uid` and recorded it as evicted.
    pub fn carried_out(&self, uid: &str) {
        if let Some(request) = self.lock().get_mut(uid) {
            request.carried_out = true;
        }
        self.notify();
    }

    /// Resolves once the eviction of `uid` is carried out, or the pod's worker is gone.
    pub async fn wait_carried_out(&self, uid: &str) {
        self.wait_until(|pods| pods.get(uid).is_none_or(|r| r.carried_out))
            .await
    }

    /// Forgets a pod once it is gone from the node.
    pub fn forget(&self, uid: &str) {
        self.lock().remove(uid);
        self.notify();
    }

    async fn wait_until(&self, done: impl Fn(&HashMap<String, Request>) -> bool) {
        // Subscribed before looking, so a change between the look and the wait is not missed.
        let mut changes = self.0.changed.subscribe();
        loop {
            if done(&self.lock()) {
                return;
            }
            if changes.changed().await.is_err() {
                // Cannot happen while `self` holds the sender; never spin if it did.
                return std::future::pending().await;
            }
        }
    }

    fn notify(&self) {
        self.0.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Request>> {
        // A poisoned map only means a panic elsewhere; the map itself is still sound.
        self.0.pods.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_request_wakes_the_worker_of_that_pod_only() {
        let evictions = Evictions::default();
        let chosen = tokio::spawn({
            let evictions = evictions.clone();
            async move { evictions.wait_requested("a").await }
        });
        let other = tokio::spawn({
            let evictions = evictions.clone();
            async move { evictions.wait_requested("b").await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        evictions.request("a", "low on memory".into());
        tokio::time::timeout(Duration::from_secs(1), chosen)
            .await
            .expect("the chosen pod's worker wakes")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!other.is_finished(), "another pod's worker sleeps on");
        assert_eq!(evictions.requested("a").as_deref(), Some("low on memory"));
        other.abort();
    }

    #[tokio::test]
    async fn the_manager_waits_until_the_worker_has_carried_the_eviction_out() {
        let evictions = Evictions::default();
        evictions.request("a", "low on disk".into());
        let waiting = tokio::spawn({
            let evictions = evictions.clone();
            async move { evictions.wait_carried_out("a").await }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiting.is_finished(), "not carried out yet");
        evictions.carried_out("a");
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("carried out")
            .unwrap();
        // Still asked for: the manager must not pick it again.
        assert!(evictions.requested("a").is_some());
    }

    #[tokio::test]
    async fn a_pod_whose_worker_ended_is_not_waited_for() {
        let evictions = Evictions::default();
        evictions.request("a", "low on disk".into());
        let waiting = tokio::spawn({
            let evictions = evictions.clone();
            async move { evictions.wait_carried_out("a").await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        evictions.forget("a");
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("forgotten")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(1), evictions.wait_carried_out("b"))
            .await
            .expect("never asked for: nothing to wait for");
    }
}
