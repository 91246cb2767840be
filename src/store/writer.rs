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
//!
//! # Pipelining
//! The log append and its sync run on a second thread ([`sync`]), so that while group N is
//! being synced the writer already checks and applies group N+1 on top of N (in redb, where
//! only the writer looks). Every write that arrives before N's sync returns joins N+1: a write
//! then waits for the rest of one sync and then its own, never for a third. Readers and watchers never see N before it is durable: they read
//! the snapshot the sync thread publishes once N's sync returned, and every caller of N is
//! answered only then. Group N+1 is answered only after N's outcome is known: if N's sync
//! failed, N is rolled back in redb and N+1, built on top of it, fails too.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Durability, ReadableDatabase, ReadableTable, Table};
use tokio::sync::oneshot;

use super::codec::{encoded_len, LogEntry};
use super::queue::{Queue, Wake};
use super::space;
use super::wal::{self, Wal};
use super::{read_put, Event, EventKind, KeyValue, Shared, StoreError, MAX_ENTRY_BYTES};
use super::{INDEX, LOG, META, META_COMPACTED};

/// The `tracing` target of the debug-level figures of where a write's time goes.
const TIMING: &str = "berth::store::timing";

/// While a group syncs, how often the writer looks at the sync itself besides being told.
const SYNC_RECHECK: Duration = Duration::from_millis(100);

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
        /// When the caller queued it (for the timing figures at debug level).
        queued: Instant,
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
    wal: Arc<Mutex<Wal>>,
    sync: sync::Syncer,
    /// The group whose log append is in flight on the sync thread.
    in_flight: Option<InFlight>,
    /// Newest revision committed to redb (published or in flight).
    applied_revision: u64,
    /// When the oldest write that is only in the log was committed.
    unpersisted_since: Option<Instant>,
    /// Set when redb holds writes that can neither be made durable nor undone: every later
    /// write is refused with it, and nothing more is committed (a checkpoint would persist
    /// writes whose callers were told they failed).
    broken: Option<StoreError>,
}

/// What the writer must know about a group on the sync thread to undo it if its sync fails.
struct InFlight {
    done: mpsc::Receiver<Result<(), StoreError>>,
    /// The outcome, once taken from `done` by a look that must not block.
    outcome: Option<Result<(), StoreError>>,
    /// The events of the group, in revision order: enough to restore the index and log.
    undo: Vec<Undo>,
    /// The revision the store was at before the group.
    revision_before: u64,
}

/// One write of a group, as needed to roll it back.
struct Undo {
    revision: u64,
    key: String,
    /// The revision the index pointed at before (None: the key did not exist).
    previous: Option<u64>,
}

impl Undo {
    fn of(event: &Event) -> Undo {
        let previous = match event.kind {
            EventKind::Put => event.prev.as_ref().map(|prev| prev.mod_revision),
            EventKind::Delete => Some(event.kv.mod_revision),
        };
        Undo {
            revision: event.revision,
            key: event.kv.key.clone(),
            previous,
        }
    }
}

pub(super) fn spawn(
    shared: Arc<Shared>,
    queue: Arc<Queue<Request>>,
    wal: Wal,
) -> Result<JoinHandle<()>, StoreError> {
    let wal = Arc::new(Mutex::new(wal));
    let syncer = sync::spawn(Arc::clone(&shared), Arc::clone(&wal), Arc::clone(&queue))?;
    let mut writer = Writer {
        wal,
        sync: syncer,
        in_flight: None,
        applied_revision: shared.revision.load(Ordering::Acquire),
        unpersisted_since: None,
        broken: None,
    };
    std::thread::Builder::new()
        .name("store-writer".to_owned())
        .spawn(move || {
            run(&shared, &queue, &mut writer);
            // A clean close leaves everything in redb and nothing to replay.
            settle(&shared, &mut writer);
            if writer.broken.is_none() && !lock(&writer.wal).is_empty() {
                commit_batch(&shared, &queue, &mut writer, Vec::new(), true);
            }
            writer.sync.stop();
            // Ending every watch tells watchers the store is gone instead of leaving them
            // waiting forever.
            shared.broadcaster.close();
        })
        .map_err(StoreError::Thread)
}

fn lock(wal: &Mutex<Wal>) -> std::sync::MutexGuard<'_, Wal> {
    // The log's state is plain offsets: a panic elsewhere while holding it leaves them usable.
    wal.lock().unwrap_or_else(|e| e.into_inner())
}

fn run(shared: &Shared, queue: &Queue<Request>, writer: &mut Writer) {
    loop {
        // A checkpoint waits for the group in flight anyway: no deadline while there is one.
        let deadline = match writer.in_flight {
            Some(_) => None,
            None => writer
                .unpersisted_since
                .map(|since| CHECKPOINT_AFTER.saturating_sub(since.elapsed())),
        };
        match queue.wait(MAX_BATCH, deadline) {
            Wake::Items(batch) => commit_batch(shared, queue, writer, batch, false),
            // A hint only: it may be about a group already settled.
            Wake::Synced => settle_if_done(shared, writer),
            Wake::Timeout => commit_batch(shared, queue, writer, Vec::new(), true),
            Wake::Closed => return,
        }
    }
}

/// Waits for the group in flight; if its sync failed, rolls it back. Returns the error its
/// callers got, which every group applied on top of it must fail with too.
fn settle(shared: &Shared, writer: &mut Writer) -> Option<StoreError> {
    let failed = wait(writer)?;
    Some(recover(shared, writer, failed))
}

/// Settles the group in flight if its sync already returned.
fn settle_if_done(shared: &Shared, writer: &mut Writer) {
    if !sync_finished(writer) {
        return;
    }
    if let Some(failed) = wait(writer) {
        recover(shared, writer, failed);
    }
}

/// Whether the group in flight (if any) has its outcome, without waiting for it.
fn sync_finished(writer: &mut Writer) -> bool {
    let Some(in_flight) = &mut writer.in_flight else {
        return true;
    };
    if in_flight.outcome.is_none() {
        in_flight.outcome = match in_flight.done.try_recv() {
            Ok(outcome) => Some(outcome),
            Err(mpsc::TryRecvError::Empty) => return false,
            Err(mpsc::TryRecvError::Disconnected) => Some(Err(StoreError::Closed)),
        };
    }
    true
}

/// Waits for the group in flight; returns it with its error if its sync failed.
fn wait(writer: &mut Writer) -> Option<(StoreError, InFlight)> {
    let mut in_flight = writer.in_flight.take()?;
    let outcome = match in_flight.outcome.take() {
        Some(outcome) => outcome,
        None => in_flight.done.recv().unwrap_or(Err(StoreError::Closed)),
    };
    match outcome {
        Ok(()) => None,
        Err(error) => Some((error, in_flight)),
    }
}

/// Rolls back a group whose sync failed. No write transaction may be open.
fn recover(
    shared: &Shared,
    writer: &mut Writer,
    (error, failed): (StoreError, InFlight),
) -> StoreError {
    writer.applied_revision = failed.revision_before;
    if let Err(rollback) = roll_back(shared, &failed.undo) {
        tracing::error!(%rollback, "cannot undo a write group whose log append failed; the store refuses writes until restarted");
        writer.broken = Some(duplicate(&rollback));
    }
    error
}

/// Undoes a group that redb committed (without durability) but the log never made durable.
fn roll_back(shared: &Shared, undo: &[Undo]) -> Result<(), StoreError> {
    let mut txn = shared
        .db
        .begin_write()
        .map_err(|e| shared.redb_error("begin write", e))?;
    txn.set_durability(Durability::None)
        .map_err(|e| shared.redb_error("set durability", redb::Error::from(e)))?;
    {
        let mut log = txn
            .open_table(LOG)
            .map_err(|e| shared.redb_error("open log", e))?;
        let mut index = txn
            .open_table(INDEX)
            .map_err(|e| shared.redb_error("open index", e))?;
        for write in undo.iter().rev() {
            log.remove(write.revision)
                .map_err(|e| shared.redb_error("write log", e))?;
            match write.previous {
                Some(previous) => index.insert(write.key.as_str(), previous),
                None => index.remove(write.key.as_str()),
            }
            .map_err(|e| shared.redb_error("write index", e))?;
        }
    }
    txn.commit().map_err(|e| shared.redb_error("commit", e))
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

pub(super) struct Pending {
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
    result: Result<Outcome, StoreError>,
    queued: Instant,
}

/// How a batch reached the disk.
enum Committed {
    /// Every request failed its check: nothing to write.
    Nothing,
    /// Handed to the sync thread for the log; redb has it without durability.
    Logged,
    /// A durable redb commit: the log is no longer needed.
    Checkpoint,
}

/// Runs one batch. `checkpoint` forces a durable redb commit even if nothing else asks for one.
fn commit_batch(
    shared: &Shared,
    queue: &Queue<Request>,
    writer: &mut Writer,
    batch: Vec<Request>,
    checkpoint: bool,
) {
    if let Some(broken) = &writer.broken {
        for request in batch {
            refuse(request, broken);
        }
        return;
    }
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
    // A group that already failed is rolled back first, so this batch is not built on it.
    settle_if_done(shared, writer);
    let committed_revision = writer.applied_revision;
    let committed_compacted = shared.compacted.load(Ordering::Acquire);
    let mut next_revision = committed_revision + 1;
    let mut pending = Vec::with_capacity(batch.len());
    let mut compact_replies = Vec::new();
    let mut checkpoint_replies = Vec::new();
    let mut record = Vec::new();
    let mut events = Vec::new();
    let mut compacted = committed_compacted;
    let mut taken = batch.len();
    let first_taken = taken;
    let started = Instant::now();
    let mut waited_for_sync = Duration::ZERO;
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
            loop {
                for request in requests.by_ref() {
                    match request {
                        Request::Write { op, reply, queued } => {
                            let result = apply(
                                shared,
                                &mut log,
                                &mut index,
                                &mut record,
                                op,
                                next_revision,
                            )?;
                            if let Ok((_, event)) = &result {
                                next_revision += 1;
                                events.push(event.clone());
                            }
                            pending.push(Pending {
                                reply,
                                result: result.map(|(outcome, _)| outcome),
                                queued,
                            });
                        }
                        Request::Compact { reply } => compact_replies.push(reply),
                        Request::Checkpoint { reply } => checkpoint_replies.push(reply),
                    }
                }
                // Until the group in flight is durable, whatever arrives joins this group:
                // left in the queue, it would wait for this group's sync and then its own.
                if sync_finished(writer) || taken >= MAX_BATCH {
                    break;
                }
                match queue.wait_during_sync(MAX_BATCH - taken, SYNC_RECHECK) {
                    Wake::Items(more) => {
                        taken += more.len();
                        requests = more.into_iter();
                    }
                    Wake::Closed => break,
                    Wake::Synced | Wake::Timeout => {}
                }
            }
        }
        // Everything above was checked against the group in flight; it must be durable before
        // any of these answers (a conflict included) is given.
        let waiting = Instant::now();
        let failed = wait(writer);
        waited_for_sync = waiting.elapsed();
        if let Some(failed) = failed {
            // The rollback needs the write lock this transaction holds.
            drop(txn);
            return Err(recover(shared, writer, failed));
        }
        {
            let mut log = txn
                .open_table(LOG)
                .map_err(|e| shared.redb_error("open log", e))?;
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
        let mut wal = lock(&writer.wal);
        let checkpoint = checkpoint
            || compacted != committed_compacted
            || !checkpoint_replies.is_empty()
            || !wal.fits(record.len());
        if events.is_empty() && (!checkpoint || wal.is_empty()) {
            // Answering conflicts needs no fsync; an empty commit would still rewrite pages.
            txn.abort().map_err(|e| shared.redb_error("abort", e))?;
            return Ok(Committed::Nothing);
        }
        if checkpoint {
            // Durability::Immediate is redb's default: commit returns after fsync, and it
            // persists every earlier non-durable commit with it.
            txn.commit().map_err(|e| shared.redb_error("commit", e))?;
            wal.rewind();
            return Ok(Committed::Checkpoint);
        }
        drop(wal);
        // The log append starts at once on the sync thread, while redb commits here; the
        // group is published (and answered) only when both are done.
        let publish = writer.sync.append(std::mem::take(&mut record));
        let mut txn = txn;
        let committed = txn
            .set_durability(Durability::None)
            .map_err(|e| shared.redb_error("set durability", redb::Error::from(e)))
            .and_then(|()| txn.commit().map_err(|e| shared.redb_error("commit", e)))
            .and_then(|()| {
                shared
                    .db
                    .begin_read()
                    .map_err(|e| shared.redb_error("begin read", e))
            });
        match committed {
            Ok(snapshot) => {
                // Counted before the sync thread may answer the group's callers, so a caller
                // that reads the counter after its write returns sees its own commit.
                shared.commits.fetch_add(1, Ordering::Relaxed);
                let undo = events.iter().map(Undo::of).collect();
                let done = publish.send(Some(sync::Publish {
                    snapshot: Arc::new(snapshot),
                    revision: next_revision - 1,
                    events: std::mem::take(&mut events),
                    pending: std::mem::take(&mut pending),
                }));
                writer.in_flight = Some(InFlight {
                    done,
                    outcome: None,
                    undo,
                    revision_before: committed_revision,
                });
                Ok(Committed::Logged)
            }
            Err(error) => {
                // The sync thread erases the record; nothing of the group is anywhere.
                let done = publish.send(None);
                let _ = done.recv();
                Err(error)
            }
        }
    })();

    match result {
        Ok(committed) => {
            match committed {
                Committed::Nothing => {}
                Committed::Logged => {
                    tracing::debug!(
                        target: TIMING,
                        writes = taken,
                        joined_during_sync = taken - first_taken,
                        blocked_us = waited_for_sync.as_micros(),
                        busy_us = started.elapsed().saturating_sub(waited_for_sync).as_micros(),
                        "group handed to the log"
                    );
                    writer.unpersisted_since.get_or_insert_with(Instant::now);
                    writer.applied_revision = next_revision - 1;
                    // Callers are answered by the sync thread once the group is durable.
                    return;
                }
                Committed::Checkpoint => {
                    shared.commits.fetch_add(1, Ordering::Relaxed);
                    writer.unpersisted_since = None;
                }
            }
            writer.applied_revision = next_revision - 1;
            shared
                .writes
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            if compacted != committed_compacted {
                shared.compactions.fetch_add(1, Ordering::Relaxed);
            }
            if !events.is_empty() || compacted != committed_compacted {
                match shared.db.begin_read() {
                    Ok(snapshot) => shared.publish(Arc::new(snapshot), next_revision - 1),
                    Err(error) => {
                        // Readers keep the previous snapshot; the next group publishes again.
                        tracing::error!(%error, "cannot open a read snapshot after a checkpoint");
                        shared.revision.store(next_revision - 1, Ordering::Release);
                    }
                }
            }
            shared.compacted.store(compacted, Ordering::Release);
            // Watchers first: once a write's future resolves, every watch already holds its
            // event, so a caller never sees its own write missing from a watch.
            shared.broadcaster.publish(&events);
            for Pending { reply, result, .. } in pending {
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

/// The sync thread: appends each group's record to the write-ahead log and, once it is
/// durable and redb has the group too, publishes it to readers and watchers and answers its
/// callers.
mod sync {
    use super::*;

    /// What the writer hands over once redb committed a group.
    pub(super) struct Publish {
        pub snapshot: Arc<redb::ReadTransaction>,
        pub revision: u64,
        pub events: Vec<Event>,
        pub pending: Vec<Pending>,
    }

    struct Job {
        record: Vec<u8>,
        handed_over: Instant,
        /// None: redb refused the group; the record must be erased.
        publish: mpsc::Receiver<Option<Publish>>,
        done: mpsc::Sender<Result<(), StoreError>>,
    }

    pub(super) struct Syncer {
        jobs: Option<mpsc::Sender<Job>>,
        thread: Option<JoinHandle<()>>,
    }

    /// The writer's side of one append: say how redb's commit went, then wait for the outcome.
    pub(super) struct Append {
        publish: mpsc::Sender<Option<Publish>>,
        done: mpsc::Receiver<Result<(), StoreError>>,
    }

    impl Append {
        pub fn send(self, publish: Option<Publish>) -> mpsc::Receiver<Result<(), StoreError>> {
            let _ = self.publish.send(publish);
            self.done
        }
    }

    pub(super) fn spawn(
        shared: Arc<Shared>,
        wal: Arc<Mutex<Wal>>,
        writer: Arc<Queue<Request>>,
    ) -> Result<Syncer, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("store-sync".to_owned())
            .spawn(move || {
                for job in queue {
                    let (outcome, failed) = run_job(&shared, &wal, &job);
                    let error = outcome.as_ref().err().map(duplicate);
                    let _ = job.done.send(outcome);
                    writer.synced();
                    // The writer hears of a failure before its callers do: a caller that
                    // retries at once must find the failed group already rolled back.
                    if let Some(error) = error {
                        for Pending { reply, .. } in failed {
                            let _ = reply.send(Err(duplicate(&error)));
                        }
                    }
                }
            })
            .map_err(StoreError::Thread)?;
        Ok(Syncer {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    impl Syncer {
        /// Starts appending `record`. The writer has at most one append in flight.
        pub fn append(&self, record: Vec<u8>) -> Append {
            let (publish, publish_rx) = mpsc::channel();
            let (done_tx, done) = mpsc::channel();
            let job = Job {
                record,
                handed_over: Instant::now(),
                publish: publish_rx,
                done: done_tx,
            };
            if let Some(jobs) = &self.jobs {
                if let Err(mpsc::SendError(job)) = jobs.send(job) {
                    let _ = job.done.send(Err(StoreError::Closed));
                }
            } else {
                let _ = job.done.send(Err(StoreError::Closed));
            }
            Append { publish, done }
        }

        pub fn stop(&mut self) {
            self.jobs.take();
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    /// Where the time of a group's writes went, from queueing to answer.
    fn log_group_answered(
        pending: &[Pending],
        handed_over: Instant,
        append_started: Instant,
        synced: Instant,
    ) {
        let now = Instant::now();
        let waited = |p: &Pending| now.duration_since(p.queued).as_micros();
        let us = |from: Instant, to: Instant| to.duration_since(from).as_micros();
        tracing::debug!(
            target: TIMING,
            writes = pending.len(),
            longest_us = pending.iter().map(waited).max().unwrap_or(0),
            shortest_us = pending.iter().map(waited).min().unwrap_or(0),
            before_append_us = us(handed_over, append_started),
            append_sync_us = us(append_started, synced),
            after_sync_us = us(synced, now),
            "group answered"
        );
    }

    /// Appends one job's record; returns the outcome and, when it failed, the callers still
    /// to be told.
    fn run_job(
        shared: &Shared,
        wal: &Mutex<Wal>,
        job: &Job,
    ) -> (Result<(), StoreError>, Vec<Pending>) {
        let mut wal = lock(wal);
        let append_started = Instant::now();
        let appended = wal.append(&job.record);
        let synced = Instant::now();
        let publish = job.publish.recv().ok().flatten();
        match (appended, publish) {
            (Ok(_), Some(publish)) => {
                drop(wal);
                shared.publish(publish.snapshot, publish.revision);
                shared
                    .writes
                    .fetch_add(publish.events.len() as u64, Ordering::Relaxed);
                shared.broadcaster.publish(&publish.events);
                if tracing::enabled!(target: TIMING, tracing::Level::DEBUG) {
                    log_group_answered(&publish.pending, job.handed_over, append_started, synced);
                }
                for Pending { reply, result, .. } in publish.pending {
                    let _ = reply.send(result);
                }
                (Ok(()), Vec::new())
            }
            (Ok(offset), None) => {
                // A replay must never resurrect a group its callers were told failed.
                if let Err(undo) = wal.undo(offset) {
                    tracing::error!(%undo, "cannot erase a write-ahead log record redb refused");
                }
                (Ok(()), Vec::new())
            }
            (Err(error), publish) => {
                tracing::error!(%error, "store write-ahead log append failed");
                (Err(error), publish.map(|p| p.pending).unwrap_or_default())
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
