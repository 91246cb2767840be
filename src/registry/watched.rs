//! A copy of what the store holds under one key prefix, for checks that every request makes
//! (is the namespace open? does it have quotas?) and that would otherwise cost a store read and
//! a decode each.
//!
//! The copy is kept current by a store watch that is drained on every read, not by a task:
//! the embedded store queues a write's event to its watchers before it acknowledges the write,
//! so a read here sees every acknowledged write, exactly as a read of the store would. A watch
//! that fell behind (its buffer filled while nothing read) ends; the next read lists the prefix
//! again. With etcd, another server's writes reach the watch only later, so nothing is kept and
//! callers read the store.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use futures::FutureExt;

use crate::store::{Event, EventKind, Store, StoreError, Watch};

/// What a read of the copy found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<T> {
    Present(T),
    Absent,
    /// Nothing is kept for this store (etcd): read the store.
    NotKept,
}

/// The keys under `prefix`, each with what `summarize` made of its value.
pub struct WatchedPrefix<T> {
    store: Store,
    prefix: String,
    summarize: fn(&[u8]) -> T,
    /// None until the first read, and again after the watch ended.
    mirror: Mutex<Option<Mirror<T>>>,
}

struct Mirror<T> {
    watch: Watch,
    items: BTreeMap<String, T>,
}

impl<T: Clone> WatchedPrefix<T> {
    pub fn new(store: Store, prefix: String, summarize: fn(&[u8]) -> T) -> WatchedPrefix<T> {
        WatchedPrefix {
            store,
            prefix,
            summarize,
            mirror: Mutex::new(None),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The summary of `key` (which must start with the prefix) as of now.
    pub fn get(&self, key: &str) -> Result<Lookup<T>, StoreError> {
        self.read(|items| match items.get(key) {
            Some(value) => Lookup::Present(value.clone()),
            None => Lookup::Absent,
        })
    }

    /// Whether some key starts with `prefix` (which must start with the watched prefix).
    pub fn any_under(&self, prefix: &str) -> Result<Lookup<()>, StoreError> {
        self.read(|items| {
            let from = (Bound::Included(prefix), Bound::Unbounded);
            let first = items.range::<str, _>(from).next();
            match first {
                Some((key, _)) if key.starts_with(prefix) => Lookup::Present(()),
                _ => Lookup::Absent,
            }
        })
    }

    fn read<R>(
        &self,
        answer: impl FnOnce(&BTreeMap<String, T>) -> Lookup<R>,
    ) -> Result<Lookup<R>, StoreError> {
        if self.store.is_shared() {
            return Ok(Lookup::NotKept);
        }
        let mut mirror = self.lock();
        // A watch found ended is replaced by a fresh list and watch; should that one end at
        // once too (writes pouring in), the caller reads the store.
        for _ in 0..2 {
            if mirror.is_none() {
                *mirror = Some(self.list_and_watch()?);
            }
            if let Some(current) = mirror.as_mut() {
                if current.catch_up(self.summarize) {
                    return Ok(answer(&current.items));
                }
            }
            *mirror = None;
        }
        Ok(Lookup::NotKept)
    }

    fn lock(&self) -> MutexGuard<'_, Option<Mirror<T>>> {
        // A holder that panicked left either a whole copy or none: both are safe to use.
        self.mirror.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn list_and_watch(&self) -> Result<Mirror<T>, StoreError> {
        let listed = self.store.list(&self.prefix, None, 0)?;
        let watch = self.store.watch(&self.prefix, listed.revision)?;
        let items = listed
            .kvs
            .into_iter()
            .map(|kv| {
                let summary = (self.summarize)(&kv.value);
                (kv.key, summary)
            })
            .collect();
        Ok(Mirror { watch, items })
    }
}

impl<T> Mirror<T> {
    /// Applies every event already queued. False when the watch ended: the copy may miss
    /// writes and must be listed again.
    fn catch_up(&mut self, summarize: fn(&[u8]) -> T) -> bool {
        loop {
            match self.watch.next().now_or_never() {
                // Nothing queued: every acknowledged write is applied.
                None => return true,
                Some(None) => return false,
                Some(Some(event)) => self.apply(event, summarize),
            }
        }
    }

    fn apply(&mut self, event: Event, summarize: fn(&[u8]) -> T) {
        match event.kind {
            EventKind::Put => {
                let summary = summarize(&event.kv.value);
                self.items.insert(event.kv.key, summary);
            }
            EventKind::Delete => {
                self.items.remove(&event.kv.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    fn store(dir: &tempfile::TempDir, watch_buffer: usize) -> Store {
        let options = StoreOptions {
            watch_buffer,
            ..StoreOptions::default()
        };
        Store::open(&dir.path().join("berth.redb"), options).unwrap()
    }

    fn length(value: &[u8]) -> usize {
        value.len()
    }

    async fn put(store: &Store, key: &str, value: &'static str) {
        match store.get(key).unwrap() {
            Some(kv) => store
                .update(key, kv.mod_revision, move |_| value.as_bytes().to_vec())
                .await
                .unwrap(),
            None => store
                .create(key, move |_| value.as_bytes().to_vec())
                .await
                .unwrap(),
        };
    }

    #[tokio::test]
    async fn every_acknowledged_write_is_seen_by_the_next_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir, 1024);
        put(&store, "/t/a", "1").await;
        put(&store, "/other/a", "1").await;
        let watched = WatchedPrefix::new(store.clone(), "/t/".into(), length);
        assert_eq!(watched.get("/t/a").unwrap(), Lookup::Present(1));
        assert_eq!(watched.get("/t/b").unwrap(), Lookup::Absent);
        put(&store, "/t/a", "22").await;
        assert_eq!(watched.get("/t/a").unwrap(), Lookup::Present(2));
        put(&store, "/t/b", "333").await;
        assert_eq!(watched.get("/t/b").unwrap(), Lookup::Present(3));
        store.delete("/t/a", None).await.unwrap();
        assert_eq!(watched.get("/t/a").unwrap(), Lookup::Absent);
        assert_eq!(watched.any_under("/t/b").unwrap(), Lookup::Present(()));
        assert_eq!(watched.any_under("/t/a").unwrap(), Lookup::Absent);
        assert_eq!(watched.any_under("/t/c").unwrap(), Lookup::Absent);
    }

    #[tokio::test]
    async fn a_copy_whose_watch_fell_behind_is_listed_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir, 2);
        let watched = WatchedPrefix::new(store.clone(), "/t/".into(), length);
        assert_eq!(watched.get("/t/x").unwrap(), Lookup::Absent);
        // More writes than the watch buffers, with no read in between: the watch is dropped.
        for (key, value) in [
            ("/t/a", "1"),
            ("/t/b", "22"),
            ("/t/c", "333"),
            ("/t/x", "4444"),
        ] {
            put(&store, key, value).await;
        }
        assert_eq!(watched.get("/t/x").unwrap(), Lookup::Present(4));
        assert_eq!(watched.get("/t/a").unwrap(), Lookup::Present(1));
        put(&store, "/t/a", "55555").await;
        assert_eq!(watched.get("/t/a").unwrap(), Lookup::Present(5));
    }
}
