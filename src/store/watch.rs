//! Watch fan-out and resume.
//!
//! A watch subscribes to live events first and only then reads history, in a later snapshot:
//! every revision is then either in that history or arrives live (both for some, which are
//! skipped), so the stream is gapless. History is read in chunks as the watcher consumes it,
//! so a watch resuming far back does not hold the whole backlog in memory.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use redb::{ReadTransaction, ReadableTable};
use tokio::sync::mpsc;

use super::codec::LogEntry;
use super::{
    begin_read, entry_value, read_put, snapshot_revision, Event, EventKind, KeyValue, Shared,
};
use super::{StoreError, LOG, META};

/// Log entries scanned per history read, bounding the time and memory of one refill.
const HISTORY_CHUNK: usize = 256;

/// Fans committed events out to watchers. The writer never waits on a watcher: one whose
/// buffer is full is dropped, its stream ends, and it must re-list.
#[derive(Default)]
pub(super) struct Broadcaster {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    subscribers: Vec<Subscriber>,
    closed: bool,
}

struct Subscriber {
    id: u64,
    prefix: String,
    events: mpsc::Sender<Event>,
}

impl Broadcaster {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every change is one push,
        // retain or clear.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn subscribe(&self, prefix: &str, buffer: usize) -> (u64, mpsc::Receiver<Event>) {
        let (events, receiver) = mpsc::channel(buffer);
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        // On a closed store the sender is dropped here, so the watch ends after its history.
        if !state.closed {
            state.subscribers.push(Subscriber {
                id,
                prefix: prefix.to_owned(),
                events,
            });
        }
        (id, receiver)
    }

    fn unsubscribe(&self, id: u64) {
        self.lock().subscribers.retain(|s| s.id != id);
    }

    /// Hands events to every matching watcher without blocking.
    pub(super) fn publish(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        self.lock().subscribers.retain(|subscriber| {
            events
                .iter()
                .filter(|event| event.kv.key.starts_with(&subscriber.prefix))
                // Full: too far behind, drop it. Closed: the Watch is gone.
                .all(|event| subscriber.events.try_send(event.clone()).is_ok())
        });
    }

    /// Ends every watch; later subscriptions get history only.
    pub(super) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.subscribers.clear();
    }

    #[cfg(test)]
    pub(super) fn subscribers(&self) -> usize {
        self.lock().subscribers.len()
    }
}

/// A stream of events; see [`super::Store::watch`].
pub struct Watch {
    /// Weak so a forgotten watch does not keep the database file open after the store closes.
    shared: Weak<Shared>,
    id: u64,
    prefix: String,
    live: mpsc::Receiver<Event>,
    ready: VecDeque<Event>,
    /// Next log revision to read history from.
    history_next: u64,
    /// Last revision history covers; live events at or below it were already delivered.
    history_end: u64,
    ended: bool,
}

impl Watch {
    pub(super) fn start(
        shared: &Arc<Shared>,
        prefix: &str,
        after_revision: u64,
    ) -> Result<Watch, StoreError> {
        // Keeps `history_end + 1` from overflowing; no store gets near this revision.
        let after_revision = after_revision.min(u64::MAX - 1);
        let (id, live) = shared.broadcaster.subscribe(prefix, shared.watch_buffer);
        // Built before reading history so that an error below unsubscribes (Drop).
        let mut watch = Watch {
            shared: Arc::downgrade(shared),
            id,
            prefix: prefix.to_owned(),
            live,
            ready: VecDeque::new(),
            history_next: after_revision.saturating_add(1),
            history_end: after_revision,
            ended: false,
        };
        let txn = begin_read(shared)?;
        let log = txn
            .open_table(LOG)
            .map_err(|e| shared.redb_error("open log", e))?;
        let meta = txn
            .open_table(META)
            .map_err(|e| shared.redb_error("open meta", e))?;
        let (revision, _) = snapshot_revision(shared, &log, &meta)?;
        watch.history_end = revision.max(after_revision);
        watch.fill(shared, &txn)?;
        Ok(watch)
    }

    /// The next event, or None when the stream ended: the watcher fell behind (or history it
    /// still needed was compacted away) and must re-list, or the store closed.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            if self.history_next <= self.history_end {
                let refilled = self
                    .shared
                    .upgrade()
                    .map(|shared| begin_read(&shared).and_then(|txn| self.fill(&shared, &txn)));
                if !matches!(refilled, Some(Ok(()))) {
                    self.ended = true;
                }
                continue;
            }
            match self.live.recv().await {
                Some(event) if event.revision <= self.history_end => continue,
                Some(event) => return Some(event),
                None => self.ended = true,
            }
        }
    }

    /// Reads the next chunk of history into `ready`.
    fn fill(&mut self, shared: &Shared, txn: &ReadTransaction) -> Result<(), StoreError> {
        let log = txn
            .open_table(LOG)
            .map_err(|e| shared.redb_error("open log", e))?;
        let meta = txn
            .open_table(META)
            .map_err(|e| shared.redb_error("open meta", e))?;
        let (_, compacted) = snapshot_revision(shared, &log, &meta)?;
        if self.history_next - 1 < compacted {
            return Err(StoreError::Compacted { compacted });
        }
        let mut scanned = 0;
        for item in log
            .range(self.history_next..=self.history_end)
            .map_err(|e| shared.redb_error("read log", e))?
        {
            let (revision, bytes) = item.map_err(|e| shared.redb_error("read log", e))?;
            let revision = revision.value();
            self.history_next = revision + 1;
            let entry = LogEntry::decode(bytes.value())
                .map_err(|e| shared.corrupt(format!("log entry {revision}: {e}")))?;
            if entry.key.starts_with(&self.prefix) {
                self.ready
                    .push_back(history_event(shared, &log, revision, &entry)?);
            }
            scanned += 1;
            if scanned == HISTORY_CHUNK {
                return Ok(());
            }
        }
        self.history_next = self.history_end + 1;
        Ok(())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.broadcaster.unsubscribe(self.id);
        }
    }
}

/// Rebuilds the event a log entry recorded. Compaction keeps the entry each surviving entry
/// replaced, so `prev` is found; if it is not, the event is still delivered without it.
fn history_event(
    shared: &Shared,
    log: &impl ReadableTable<u64, &'static [u8]>,
    revision: u64,
    entry: &LogEntry<'_>,
) -> Result<Event, StoreError> {
    let prev = (entry.prev_revision != 0)
        .then(|| read_put(shared, log, entry.prev_revision))
        .and_then(|read| {
            read.inspect_err(|error| tracing::warn!(%error, revision, "watch history without prev"))
                .ok()
        });
    if entry.tombstone {
        let last = prev.clone().unwrap_or_else(|| KeyValue {
            key: entry.key.to_owned(),
            value: Bytes::new(),
            create_revision: entry.create_revision,
            mod_revision: entry.prev_revision,
        });
        Ok(Event {
            kind: EventKind::Delete,
            revision,
            kv: last,
            prev,
        })
    } else {
        Ok(Event {
            kind: EventKind::Put,
            revision,
            kv: KeyValue {
                key: entry.key.to_owned(),
                value: entry_value(shared, revision, entry)?,
                create_revision: entry.create_revision,
                mod_revision: revision,
            },
            prev,
        })
    }
}
