//! The writer thread: group commit, checkpoints and compaction.
//!
//! A dedicated OS thread (not a tokio task) because a commit blocks on fsync for milliseconds.
//! While one commit is in flight, new writes pile up in the queue; the next transaction takes
//! all of them at once, so under load the store fsyncs once per group, not once per write.
//!
//! A group is made durable by one append to the write-ahead log; redb gets it as a
//! non-durable commit. A checkpoint (durable redb commit, then the log starts over) happens
//! when the log is full, when compaction is due, [`CHECKPOINT_AFTER`] after the first write
//! it has not persisted yet, on request, and when the store closes.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Durability, ReadableTable, Table};
use tokio::sync::oneshot;

use super::codec::{encoded_len, LogEntry};
use super::space;
use super::wal::{self, Wal};
use super::{read_put, Event, EventKind, KeyValue, Shared, StoreError, MAX_ENTRY_BYTES};
use super::{INDEX, LOG, META, META_COMPACTED};

/// Upper bound on writes in one transaction, so one commit's latency stays bounded.
const MAX_BATCH: usize = 1_024;

/// Longest a write stays only in the log: bounds replay work and the memory redb holds for
/// pages it has not written yet, while letting many updates of the same objects share one
/// rewrite of their pages (the point of the log: fewer bytes on the SD card).
const CHECKPOINT_AFTER: Duration = Duration::from_secs(30);

pub(super) type ValueFn = Box<dyn FnOnce(u64) -> Vec<u8> + Send>;

pub(super) enum WriteOp {
    Create {
        key: String,
        value: ValueFn,
    },
    Update {
        key: String,
        expected_mod_revision: u64,
        value: ValueFn,
    },
    Delete {
        key: String,
        expected_mod_revision: Option<u64>,
    },
}

pub(super) enum Outcome {
    Put(KeyValue),
    Deleted(KeyValue, u64),
}

pub(super) enum Request {
    Write {
        op: WriteOp,
        reply: oneshot::Sender<Result<Outcome, StoreError>>,
    },
    Compact {
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    Checkpoint {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// The writer thread's own state.
struct Writer {
    wal: Wal,
    /// When the oldest write that is only in the log was committed.
    unpersisted_since: Option<Instant>,
}

pub(super) fn spawn(
    shared: Arc<Shared>,
    queue: mpsc::Receiver<Request>,
    wal: Wal,
) -> Result<JoinHandle<()>, StoreError> {
    let mut writer = Writer {
        wal,
        unpersisted_since: None,
    };
    std::thread::Builder::new()
        .name("store-writer".to_owned())
        .spawn(move || {
            run(&shared, &queue, &mut writer);
            // A clean close leaves everything in redb and nothing to replay.
            if !writer.wal.is_empty() {
                commit_batch(&shared, &mut writer, Vec::new(), true);
            }
            // Ending every watch tells watchers the store is gone instead of leaving them
            // waiting forever.
            shared.broadcaster.close();
        })
        .map_err(StoreError::Thread)
}

fn run(shared: &Shared, queue: &mpsc::Receiver<Request>, writer: &mut Writer) {
    loop {
        let first = match writer.unpersisted_since {
            None => match queue.recv() {
                Ok(request) => request,
                Err(_) => return,
            },
            Some(since) => {
                match queue.recv_timeout(CHECKPOINT_AFTER.saturating_sub(since.elapsed())) {
                    Ok(request) => request,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        commit_batch(shared, writer, Vec::new(), true);
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        commit_batch(shared, writer, batch, false);
    }
}

/// Most revisions one compaction pass covers, so that catching up on a long history (say,
/// after `history_revisions` was lowered) is spread over several transactions.
const MAX_COMPACTION_STEP: u64 = 16_384;

/// How many revisions past the horizon accumulate before a compaction pass: passes are batched
/// so each one frees a useful amount, but stay small enough to keep a commit quick.
fn compaction_interval(history_revisions: u64) -> u64 {
    (history_revisions / 2).clamp(16, 1_024)
}

/// The horizon compaction may advance to. Never the newest revision itself: the newest log
/// entry must survive, since the store's revision is read back from it.
fn horizon(revision: u64, history_revisions: u64) -> u64 {
    revision
        .saturating_sub(history_revisions)
        .min(revision.saturating_sub(1))
}

struct Pending {
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
    result: Result<Outcome, StoreError>,
}

/// How a batch reached the disk.
enum Committed {
    /// Every request failed its check: nothing to write.
    Nothing,
    /// Appended to the write-ahead log; redb has it without durability.
    Logged,
    /// A durable redb commit: the log is no longer needed.
    Checkpoint,
}

/// Runs one batch. `checkpoint` forces a durable redb commit even if nothing else asks for one.
fn commit_batch(shared: &Shared, writer: &mut Writer, batch: Vec<Request>, checkpoint: bool) {
    if let Err(error) = space::ensure_room(&shared.path, space::RESERVE_BYTES) {
        tracing::warn!(%error, "store write refused");
        for request in batch {
            refuse(request, &error);
        }
        // What the log holds is durable already; the checkpoint is tried again later rather
        // than at once (a due checkpoint would otherwise spin on a full disk).
        if writer.unpersisted_since.is_some() {
            writer.unpersisted_since = Some(Instant::now());
        }
        return;
    }
    let committed_revision = shared.revision.load(Ordering::Acquire);
    let committed_compacted = shared.compacted.load(Ordering::Acquire);
    let mut next_revision = committed_revision + 1;
    let mut pending = Vec::with_capacity(batch.len());
    let mut compact_replies = Vec::new();
    let mut checkpoint_replies = Vec::new();
    let mut record = Vec::new();
    let mut events = Vec::new();
    let mut compacted = committed_compacted;
    let mut requests = batch.into_iter();

    let result = (|| -> Result<Committed, StoreError> {
        let txn = shared
            .db
            .begin_write()
            .map_err(|e| shared.redb_error("begin write", e))?;
        {
            let mut log = txn
                .open_table(LOG)
                .map_err(|e| shared.redb_error("open log", e))?;
            let mut index = txn
                .open_table(INDEX)
                .map_err(|e| shared.redb_error("open index", e))?;
            for request in requests.by_ref() {
                match request {
                    Request::Write { op, reply } => {
                        let result =
                            apply(shared, &mut log, &mut index, &mut record, op, next_revision)?;
                        if let Ok((_, event)) = &result {
                            next_revision += 1;
                            events.push(event.clone());
                        }
                        pending.push(Pending {
                            reply,
                            result: result.map(|(outcome, _)| outcome),
                        });
                    }
                    Request::Compact { reply } => compact_replies.push(reply),
                    Request::Checkpoint { reply } => checkpoint_replies.push(reply),
                }
            }
            let revision = next_revision - 1;
            let target =
                horizon(revision, shared.history_revisions).min(compacted + MAX_COMPACTION_STEP);
            let due = target >= compacted + compaction_interval(shared.history_revisions);
            if target > compacted && (due || !compact_replies.is_empty()) {
                compact(shared, &mut log, compacted, target)?;
                let mut meta = txn
                    .open_table(META)
                    .map_err(|e| shared.redb_error("open meta", e))?;
                meta.insert(META_COMPACTED, target)
                    .map_err(|e| shared.redb_error("write meta", e))?;
                compacted = target;
            }
        }
        let checkpoint = checkpoint
            || compacted != committed_compacted
            || !checkpoint_replies.is_empty()
            || !writer.wal.fits(record.len());
        if events.is_empty() && (!checkpoint || writer.wal.is_empty()) {
            // Answering conflicts needs no fsync; an empty commit would still rewrite pages.
            txn.abort().map_err(|e| shared.redb_error("abort", e))?;
            return Ok(Committed::Nothing);
        }
        if checkpoint {
            // Durability::Immediate is redb's default: commit returns after fsync, and it
            // persists every earlier non-durable commit with it.
            txn.commit().map_err(|e| shared.redb_error("commit", e))?;
            writer.wal.rewind();
            return Ok(Committed::Checkpoint);
        }
        // The log first: once redb commits, readers see the writes, so they must be durable.
        // An error here drops the transaction, which aborts it.
        let offset = writer.wal.append(&record)?;
        let mut txn = txn;
        let committed = txn
            .set_durability(Durability::None)
            .map_err(|e| shared.redb_error("set durability", redb::Error::from(e)))
            .and_then(|()| txn.commit().map_err(|e| shared.redb_error("commit", e)));
        if let Err(error) = committed {
            if let Err(undo) = writer.wal.undo(offset) {
                tracing::error!(%undo, "cannot erase a write-ahead log record redb refused");
            }
            return Err(error);
        }
        Ok(Committed::Logged)
    })();

    match result {
        Ok(committed) => {
            match committed {
                Committed::Nothing => {}
                Committed::Logged => {
                    shared.commits.fetch_add(1, Ordering::Relaxed);
                    writer.unpersisted_since.get_or_insert_with(Instant::now);
                }
                Committed::Checkpoint => {
                    shared.commits.fetch_add(1, Ordering::Relaxed);
                    writer.unpersisted_since = None;
                }
            }
            shared
                .writes
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            if compacted != committed_compacted {
                shared.compactions.fetch_add(1, Ordering::Relaxed);
            }
            shared.revision.store(next_revision - 1, Ordering::Release);
            shared.compacted.store(compacted, Ordering::Release);
            // Watchers first: once a write's future resolves, every watch already holds its
            // event, so a caller never sees its own write missing from a watch.
            shared.broadcaster.publish(&events);
            for Pending { reply, result } in pending {
                let _ = reply.send(result);
            }
            for reply in compact_replies {
                let _ = reply.send(Ok(compacted));
            }
            for reply in checkpoint_replies {
                let _ = reply.send(Ok(()));
            }
        }
        Err(error) => {
            // Nothing of this batch was written: every caller in it gets the error, and the
            // revision counter stays where the last commit left it.
            tracing::error!(%error, "store write transaction failed");
            for Pending { reply, .. } in pending {
                let _ = reply.send(Err(duplicate(&error)));
            }
            for reply in compact_replies {
                let _ = reply.send(Err(duplicate(&error)));
            }
            for reply in checkpoint_replies {
                let _ = reply.send(Err(duplicate(&error)));
            }
            // Requests the failed transaction never reached.
            for request in requests {
                refuse(request, &error);
            }
        }
    }
}

/// Answers a request that was not carried out with (a copy of) `error`.
fn refuse(request: Request, error: &StoreError) {
    match request {
        Request::Write { reply, .. } => {
            let _ = reply.send(Err(duplicate(error)));
        }
        Request::Compact { reply } => {
            let _ = reply.send(Err(duplicate(error)));
        }
        Request::Checkpoint { reply } => {
            let _ = reply.send(Err(duplicate(error)));
        }
    }
}

/// A copy of a transaction-wide error for each caller of the failed batch.
fn duplicate(error: &StoreError) -> StoreError {
    match error {
        StoreError::Redb {
            path,
            context,
            source,
        } => StoreError::Redb {
            path: path.clone(),
            context,
            source: Arc::clone(source),
        },
        StoreError::Corrupt { path, detail } => StoreError::Corrupt {
            path: path.clone(),
            detail: detail.clone(),
        },
        StoreError::Wal {
            path,
            context,
            source,
        } => StoreError::Wal {
            path: path.clone(),
            context,
            source: Arc::clone(source),
        },
        StoreError::NoSpace {
            path,
            available,
            reserve,
        } => StoreError::NoSpace {
            path: path.clone(),
            available: *available,
            reserve: *reserve,
        },
        _ => StoreError::Closed,
    }
}

/// Applies one write inside the batch's transaction. The outer error aborts the whole batch
/// (redb failed); the inner one is this caller's answer (conflict, not found, ...).
#[allow(clippy::type_complexity)]
fn apply(
    shared: &Shared,
    log: &mut Table<u64, &'static [u8]>,
    index: &mut Table<&'static str, u64>,
    record: &mut Vec<u8>,
    op: WriteOp,
    revision: u64,
) -> Result<Result<(Outcome, Event), StoreError>, StoreError> {
    match op {
        WriteOp::Create { key, value } => {
            if current_revision(shared, index, &key)?.is_some() {
                return Ok(Err(StoreError::AlreadyExists));
            }
            let kv = match put(
                shared, log, index, record, key, value, revision, 0, revision,
            )? {
                Ok(kv) => kv,
                Err(error) => return Ok(Err(error)),
            };
            let event = Event {
                kind: EventKind::Put,
                revision,
                kv: kv.clone(),
                prev: None,
            };
            Ok(Ok((Outcome::Put(kv), event)))
        }
        WriteOp::Update {
            key,
            expected_mod_revision,
            value,
        } => {
            let Some(current_rev) = current_revision(shared, index, &key)? else {
                return Ok(Err(StoreError::NotFound));
            };
            let current = read_put(shared, log, current_rev)?;
            if current_rev != expected_mod_revision {
                return Ok(Err(StoreError::Conflict { current }));
            }
            let create_revision = current.create_revision;
            let kv = match put(
                shared,
                log,
                index,
                record,
                key,
                value,
                revision,
                current_rev,
                create_revision,
            )? {
                Ok(kv) => kv,
                Err(error) => return Ok(Err(error)),
            };
            let event = Event {
                kind: EventKind::Put,
                revision,
                kv: kv.clone(),
                prev: Some(current),
            };
            Ok(Ok((Outcome::Put(kv), event)))
        }
        WriteOp::Delete {
            key,
            expected_mod_revision,
        } => {
            let Some(current_rev) = current_revision(shared, index, &key)? else {
                return Ok(Err(StoreError::NotFound));
            };
            let current = read_put(shared, log, current_rev)?;
            if expected_mod_revision.is_some_and(|expected| expected != current_rev) {
                return Ok(Err(StoreError::Conflict { current }));
            }
            let tombstone =
                LogEntry::tombstone(current.create_revision, current_rev, &key).encode();
            log.insert(revision, tombstone.as_slice())
                .map_err(|e| shared.redb_error("write log", e))?;
            wal::push_entry(record, revision, &tombstone);
            index
                .remove(key.as_str())
                .map_err(|e| shared.redb_error("write index", e))?;
            let event = Event {
                kind: EventKind::Delete,
                revision,
                kv: current.clone(),
                prev: Some(current.clone()),
            };
            Ok(Ok((Outcome::Deleted(current, revision), event)))
        }
    }
}

fn current_revision(
    shared: &Shared,
    index: &Table<&'static str, u64>,
    key: &str,
) -> Result<Option<u64>, StoreError> {
    Ok(index
        .get(key)
        .map_err(|e| shared.redb_error("read index", e))?
        .map(|rev| rev.value()))
}

/// Appends a put of `key` at `revision` and points the index at it.
#[allow(clippy::too_many_arguments)]
fn put(
    shared: &Shared,
    log: &mut Table<u64, &'static [u8]>,
    index: &mut Table<&'static str, u64>,
    record: &mut Vec<u8>,
    key: String,
    value: ValueFn,
    revision: u64,
    prev_revision: u64,
    create_revision: u64,
) -> Result<Result<KeyValue, StoreError>, StoreError> {
    // The closure is the caller's code running on the writer thread: a panic in it must cost
    // that caller its write, not the store its writer.
    let Ok(bytes) = std::panic::catch_unwind(AssertUnwindSafe(|| value(revision))) else {
        return Ok(Err(StoreError::ValueFnPanicked));
    };
    let size = encoded_len(&key, bytes.len());
    if size > MAX_ENTRY_BYTES {
        return Ok(Err(StoreError::TooLarge {
            size,
            limit: MAX_ENTRY_BYTES,
        }));
    }
    // Only the log (and so the write-ahead log) holds the transformed bytes; the caller and
    // live watchers get the value as it was given.
    let stored = match shared.transformer.as_ref().filter(|t| t.applies_to(&key)) {
        Some(transformer) => match transformer.to_storage(&key, &bytes) {
            Ok(stored) => std::borrow::Cow::Owned(stored),
            Err(detail) => return Ok(Err(StoreError::Transform { key, detail })),
        },
        None => std::borrow::Cow::Borrowed(bytes.as_slice()),
    };
    let entry = LogEntry::put(create_revision, prev_revision, &key, &stored).encode();
    log.insert(revision, entry.as_slice())
        .map_err(|e| shared.redb_error("write log", e))?;
    wal::push_entry(record, revision, &entry);
    index
        .insert(key.as_str(), revision)
        .map_err(|e| shared.redb_error("write index", e))?;
    Ok(Ok(KeyValue {
        key,
        value: Bytes::from(bytes),
        create_revision,
        mod_revision: revision,
    }))
}

/// Drops history in (from, to]: every value an entry in that range superseded, and every
/// tombstone in it (kine's rule). What survives: the latest value of every key, and for every
/// revision above `to` its entry and the one it replaced, so a watch resuming after `to` can
/// still build each event with its previous value.
fn compact(
    shared: &Shared,
    log: &mut Table<u64, &'static [u8]>,
    from: u64,
    to: u64,
) -> Result<(), StoreError> {
    let mut doomed = Vec::new();
    for item in log
        .range(from + 1..=to)
        .map_err(|e| shared.redb_error("read log", e))?
    {
        let (revision, bytes) = item.map_err(|e| shared.redb_error("read log", e))?;
        let revision = revision.value();
        match LogEntry::decode(bytes.value()) {
            Ok(entry) => {
                if entry.prev_revision != 0 {
                    doomed.push(entry.prev_revision);
                }
                if entry.tombstone {
                    doomed.push(revision);
                }
            }
            // A damaged entry must not stop every future write: leave it and move on.
            Err(error) => tracing::warn!(path = %shared.path.display(), revision, %error,
                "skipping undecodable log entry during compaction"),
        }
    }
    for revision in doomed {
        log.remove(revision)
            .map_err(|e| shared.redb_error("compact log", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_horizon_keeps_history_and_never_reaches_the_newest_revision() {
        assert_eq!(horizon(100, 10), 90);
        assert_eq!(horizon(5, 10), 0);
        assert_eq!(horizon(7, 0), 6);
        assert_eq!(horizon(0, 0), 0);
    }

    #[test]
    fn compaction_runs_in_bounded_steps() {
        assert_eq!(compaction_interval(0), 16);
        assert_eq!(compaction_interval(10_000), 1_024);
        assert_eq!(compaction_interval(200), 100);
    }
}
