//! The store: a key/value revision log on redb, in the style of kine. It knows keys and bytes,
//! never kinds; the API server uses the revision as `metadata.resourceVersion`.
//!
//! # Layout on disk
//! - `log: revision -> entry` (see [`codec`]): every write appends one entry, so a value is stored
//!   once; a delete appends a tombstone that points at the last put.
//! - `index: key -> revision of its latest put`: a get is two lookups; deleted keys are absent.
//! - `meta: "compacted" -> revision`: the compaction horizon.
//!
//! The revision is never stored on its own: it is the last key of `log` (compaction never
//! removes the newest entry), which saves rewriting one more page on every commit.
//!
//! # Writes
//! One writer thread ([`writer`]) drains every queued write into one redb transaction, checks each
//! compare-and-swap in order inside it, appends the batch to the write-ahead log ([`wal`]) with
//! one sync, commits to redb without durability and, once the sync returned, publishes the new
//! snapshot to readers and answers every caller (group commit). The sync of one group overlaps
//! the checks of the next. A checkpoint (a durable redb commit) every so often lets the log start
//! over; opening the store replays what the log holds beyond redb's last durable revision.
//! Compaction runs inside checkpoints, every so many revisions.
//!
//! # Watches
//! One broadcaster ([`watch`]) fans committed events out to bounded per-watcher channels; a
//! watcher that falls behind is dropped rather than slowing the writer.

mod backend;
pub mod bench;
pub(crate) mod codec;
pub mod etcd;
mod queue;
mod read;
mod space;
mod value_cache;
pub(crate) mod wal;
mod watch;
mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

pub use backend::{location, Store, Watch};
pub use watch::Watch as RedbWatch;

use codec::LogEntry;
use watch::Broadcaster;
use writer::{Outcome, Request, WriteOp};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const INDEX: TableDefinition<&str, u64> = TableDefinition::new("index");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_COMPACTED: &str = "compacted";

/// redb's page cache; its default (1 GiB) is sized for servers, not a Raspberry Pi.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Largest key plus value accepted; the API server's own request limit is far below this.
pub const MAX_ENTRY_BYTES: usize = 64 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Revisions of history kept for watches to resume from.
    pub history_revisions: u64,
    /// Events a watcher may fall behind before it is dropped and must re-list.
    pub watch_buffer: usize,
}

impl From<&crate::config::StoreConfig> for StoreOptions {
    fn from(config: &crate::config::StoreConfig) -> Self {
        StoreOptions {
            history_revisions: config.history_revisions,
            watch_buffer: config.watch_buffer,
        }
    }
}

/// The defaults of the config file (they live there, once).
impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions::from(&crate::config::StoreConfig::default())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    pub create_revision: u64,
    pub mod_revision: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

#[derive(Clone, Debug)]
pub struct Event {
    pub kind: EventKind,
    pub revision: u64,
    /// For a Put, the new value. For a Delete, the last value (its `mod_revision` is that last
    /// put's revision), since clients expect the deleted object in a DELETED event.
    pub kv: KeyValue,
    /// The value this event replaced: None for a create; for a Delete, the same as `kv`.
    pub prev: Option<KeyValue>,
}

pub struct ListResult {
    pub kvs: Vec<KeyValue>,
    /// The store revision the list was read at.
    pub revision: u64,
    /// More keys match after the last one returned.
    pub more: bool,
}

/// Counters since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// redb write transactions committed (one per group of writes).
    pub commits: u64,
    /// Successful creates, updates and deletes.
    pub writes: u64,
    /// Compaction passes that removed history.
    pub compactions: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key already exists")]
    AlreadyExists,
    #[error("key not found")]
    NotFound,
    #[error("key was modified: it is now at revision {}", current.mod_revision)]
    Conflict { current: KeyValue },
    #[error("revision compacted: the oldest revision a watch may resume after is {compacted}")]
    Compacted { compacted: u64 },
    #[error("entry of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open store {path}: {source}")]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("store {path}: {context}: {source}")]
    Redb {
        path: PathBuf,
        context: &'static str,
        // Shared so one failed group commit can answer every caller in it.
        source: Arc<redb::Error>,
    },
    #[error("write-ahead log {path}: {context}: {source}")]
    Wal {
        path: PathBuf,
        context: &'static str,
        source: Arc<std::io::Error>,
    },
    #[error("cannot start the store's writer thread: {0}")]
    Thread(std::io::Error),
    // Said at start, where the operator reads it: what to do next, not only what is wrong.
    #[error(
        "store {path} is damaged: {detail}; restore it from a backup, or move {path} and its \
         .wal file away to start with an empty store"
    )]
    Corrupt { path: PathBuf, detail: String },
    // A damaged record with whole, newer ones after it is not a torn tail: replaying only the
    // prefix would silently drop acknowledged writes, so the store refuses to open.
    #[error(
        "write-ahead log {path} is damaged at offset {offset}: a whole record of revision \
         {revision} follows at offset {later}, so writes after the damage would be lost; restore \
         the store from a backup, or move {path} away to start from the store's last checkpoint"
    )]
    WalDamaged {
        path: PathBuf,
        offset: u64,
        later: u64,
        revision: u64,
    },
    #[error(
        "the disk holding {path} is full: {available} bytes free, {reserve} are kept free so the \
         store can always flush what it holds; writes resume once space is freed on it"
    )]
    NoSpace {
        path: PathBuf,
        available: u64,
        reserve: u64,
    },
    #[error("cannot transform the value of {key} for storage: {detail}")]
    Transform { key: String, detail: String },
    #[error("the value function panicked; nothing was written")]
    ValueFnPanicked,
    #[error("etcd: {context}: {detail}")]
    Etcd {
        context: &'static str,
        detail: String,
    },
    #[error("store is closed")]
    Closed,
}

impl StoreError {
    /// Whether the write failed because the disk is full: it may succeed once space is freed.
    pub fn is_no_space(&self) -> bool {
        match self {
            StoreError::NoSpace { .. } => true,
            StoreError::Wal { source, .. } => space::is_no_space(source),
            StoreError::Redb { source, .. } => match source.as_ref() {
                redb::Error::Io(io) => space::is_no_space(io),
                _ => false,
            },
            // etcd's NOSPACE alarm: writes resume once an operator defragments or raises the quota.
            StoreError::Etcd { detail, .. } => detail.contains("database space exceeded"),
            _ => false,
        }
    }
}

/// What the writer thread, readers and watches share.
struct Shared {
    /// What readers see: the newest durable group. The writer commits a group to redb before
    /// its log append is synced; readers must not see it before then (see [`writer`]).
    /// Declared before `db`: a read transaction must end before its database closes.
    snapshot: RwLock<Arc<redb::ReadTransaction>>,
    db: Database,
    path: PathBuf,
    /// Latest committed revision; published by the writer after each commit.
    revision: AtomicU64,
    compacted: AtomicU64,
    commits: AtomicU64,
    writes: AtomicU64,
    compactions: AtomicU64,
    broadcaster: Broadcaster,
    history_revisions: u64,
    watch_buffer: usize,
    transformer: Option<Arc<dyn ValueTransformer>>,
    /// Values read lately, so that re-reading an unchanged object skips decoding it.
    values: value_cache::ValueCache,
}

/// Turns a value into the bytes kept on disk and back, for the keys it applies to: encryption
/// at rest. Values outside it, and values stored before it was set, pass through unchanged,
/// so it must recognise (and leave alone) bytes it did not produce.
pub trait ValueTransformer: Send + Sync {
    /// Asked on every write and read, so it must be cheap (a prefix check).
    fn applies_to(&self, key: &str) -> bool;
    fn to_storage(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, String>;
    fn from_storage(&self, key: &str, stored: &[u8]) -> Result<Vec<u8>, String>;
}

impl Shared {
    /// Makes `snapshot`, at `revision`, what readers see.
    fn publish(&self, snapshot: Arc<redb::ReadTransaction>, revision: u64) {
        // The old snapshot is dropped outside the lock: ending a read transaction takes
        // redb's own locks.
        let old = std::mem::replace(
            &mut *self.snapshot.write().unwrap_or_else(|e| e.into_inner()),
            snapshot,
        );
        self.revision.store(revision, Ordering::Release);
        drop(old);
    }

    fn redb_error(&self, context: &'static str, source: impl Into<redb::Error>) -> StoreError {
        StoreError::Redb {
            path: self.path.clone(),
            context,
            source: Arc::new(source.into()),
        }
    }

    fn corrupt(&self, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            detail,
        }
    }
}

/// Owns the writer thread: dropping the last [`RedbStore`] clone stops it and closes the file.
struct Handle {
    shared: Arc<Shared>,
    requests: Arc<queue::Queue<Request>>,
    writer: Option<JoinHandle<()>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Closing the queue ends the writer after its current batch; joining makes the file
        // free to reopen as soon as the store is dropped.
        self.requests.close();
        if let Some(writer) = self.writer.take() {
            // The last handle can die on the writer thread itself (a value closure that owned
            // a store clone); a thread cannot wait for itself, and it is about to exit anyway.
            if writer.thread().id() != std::thread::current().id() {
                let _ = writer.join();
            }
        }
    }
}

/// The embedded backend: the default, and the only one a single server needs.
#[derive(Clone)]
pub struct RedbStore {
    handle: Arc<Handle>,
}

impl RedbStore {
    /// Opens the store at `path`, creating the file (and its directory) if missing.
    pub fn open(path: &Path, options: StoreOptions) -> Result<RedbStore, StoreError> {
        RedbStore::open_with_transformer(path, options, None)
    }

    /// Opens the store with values of some keys transformed on their way to and from disk.
    pub fn open_with_transformer(
        path: &Path,
        options: StoreOptions,
        transformer: Option<Arc<dyn ValueTransformer>>,
    ) -> Result<RedbStore, StoreError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let db = open_database(path)?;
        let (revision, compacted) = prepare_tables(&db, path)?;
        let (wal, logged) = wal::Wal::open(&wal::path_for(path), wal::CAPACITY, revision)?;
        // Both files hold every object (Secrets sealed, the rest in clear): owner only, also
        // for files an older berth created with the umask's mode.
        for file in [path.to_path_buf(), wal::path_for(path)] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).map_err(
                |source| StoreError::Wal {
                    path: file.clone(),
                    context: "restrict the file mode",
                    source: Arc::new(source),
                },
            )?;
        }
        let revision = replay(&db, path, revision, logged)?;
        let snapshot = db.begin_read().map_err(|e| StoreError::Redb {
            path: path.to_path_buf(),
            context: "begin read",
            source: Arc::new(e.into()),
        })?;
        let shared = Arc::new(Shared {
            snapshot: RwLock::new(Arc::new(snapshot)),
            db,
            path: path.to_path_buf(),
            revision: AtomicU64::new(revision),
            compacted: AtomicU64::new(compacted),
            commits: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            compactions: AtomicU64::new(0),
            broadcaster: Broadcaster::default(),
            history_revisions: options.history_revisions,
            // A zero-capacity channel cannot exist; one event is the least a watcher can hold.
            watch_buffer: options.watch_buffer.max(1),
            transformer,
            values: value_cache::ValueCache::default(),
        });
        let requests = Arc::new(queue::Queue::default());
        let writer = writer::spawn(Arc::clone(&shared), Arc::clone(&requests), wal)?;
        Ok(RedbStore {
            handle: Arc::new(Handle {
                shared,
                requests,
                writer: Some(writer),
            }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// Latest committed revision (0 for an empty store).
    pub fn revision(&self) -> u64 {
        self.shared().revision.load(Ordering::Acquire)
    }

    /// Oldest revision a watch may resume after.
    pub fn compacted_revision(&self) -> u64 {
        self.shared().compacted.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> StoreStats {
        let shared = self.shared();
        StoreStats {
            commits: shared.commits.load(Ordering::Relaxed),
            writes: shared.writes.load(Ordering::Relaxed),
            compactions: shared.compactions.load(Ordering::Relaxed),
        }
    }

    pub fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        read::get(self.shared(), key)
    }

    /// Keys starting with `prefix`, strictly after `start_after` (for paging), sorted, at most
    /// `limit` (0 = no limit), all read from one snapshot.
    pub fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListResult, StoreError> {
        read::list(self.shared(), prefix, start_after, limit)
    }

    pub fn count(&self, prefix: &str) -> Result<u64, StoreError> {
        read::count(self.shared(), prefix)
    }

    /// Creates `key`; AlreadyExists if it is there. `value` is called inside the commit with the
    /// revision this write gets, so the caller can embed it (resourceVersion) in the bytes.
    ///
    /// Resolves once the write is durable. Dropping the future does not cancel the write.
    pub async fn create(
        &self,
        key: &str,
        value: impl FnOnce(u64) -> Vec<u8> + Send + 'static,
    ) -> Result<KeyValue, StoreError> {
        let op = WriteOp::Create {
            key: key.to_owned(),
            value: Box::new(value),
        };
        match self.submit(op).await? {
            Outcome::Put(kv) => Ok(kv),
            Outcome::Deleted(..) => Err(StoreError::Closed),
        }
    }

    /// Compare-and-swap on mod_revision: Conflict { current } when it moved, NotFound when gone.
    pub async fn update(
        &self,
        key: &str,
        expected_mod_revision: u64,
        value: impl FnOnce(u64) -> Vec<u8> + Send + 'static,
    ) -> Result<KeyValue, StoreError> {
        let op = WriteOp::Update {
            key: key.to_owned(),
            expected_mod_revision,
            value: Box::new(value),
        };
        match self.submit(op).await? {
            Outcome::Put(kv) => Ok(kv),
            Outcome::Deleted(..) => Err(StoreError::Closed),
        }
    }

    /// Deletes; with Some(rev) only if mod_revision still equals rev. Returns the deleted value
    /// and the delete's revision.
    pub async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<u64>,
    ) -> Result<(KeyValue, u64), StoreError> {
        let op = WriteOp::Delete {
            key: key.to_owned(),
            expected_mod_revision,
        };
        match self.submit(op).await? {
            Outcome::Deleted(kv, revision) => Ok((kv, revision)),
            Outcome::Put(_) => Err(StoreError::Closed),
        }
    }

    /// Compacts history now, up to the configured horizon, instead of waiting for the writer
    /// to do it on its own. Returns the compacted revision.
    pub async fn compact(&self) -> Result<u64, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Compact { reply })?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Makes every write durable in redb itself now (a checkpoint), so the write-ahead log is
    /// empty; the writer does this on its own when the log fills, after a while, and on close.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Checkpoint { reply })?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Events for keys under `prefix` with revision > `after_revision`, in order, gapless: first
    /// the history from the log, then live events. Err(Compacted) if `after_revision` <
    /// compacted_revision(). The stream ends (None) when the watcher fell more than
    /// `watch_buffer` events behind: it was dropped and must re-list. Dropping the Watch
    /// unsubscribes.
    pub fn watch(&self, prefix: &str, after_revision: u64) -> Result<RedbWatch, StoreError> {
        RedbWatch::start(&self.handle.shared, prefix, after_revision)
    }

    async fn submit(&self, op: WriteOp) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Write {
            op,
            reply,
            queued: std::time::Instant::now(),
        })?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    fn send(&self, request: Request) -> Result<(), StoreError> {
        self.handle
            .requests
            .push(request)
            .map_err(|_| StoreError::Closed)
    }
}

fn open_database(path: &Path) -> Result<Database, StoreError> {
    let open = || {
        redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            // Verifies every page's checksum on open, so a damaged file is refused with an
            // error instead of being trusted (redb may panic on it later otherwise).
            .set_check_integrity_on_open(true)
            .create(path)
    };
    // Belt and braces: redb documents that opening a damaged file may panic.
    match std::panic::catch_unwind(open) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(source)) if is_damage(&source) => Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: source.to_string(),
        }),
        Ok(Err(source)) => Err(StoreError::Open {
            path: path.to_path_buf(),
            source,
        }),
        Err(_) => Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: "redb panicked while opening the file".to_owned(),
        }),
    }
}

/// Whether redb refused the file for what is in it (truncated, overwritten, not a redb file),
/// as opposed to how it is reached (permissions, a lock held by another berth).
fn is_damage(error: &redb::DatabaseError) -> bool {
    match error {
        redb::DatabaseError::UpgradeRequired(_) => true,
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(_)) => true,
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => matches!(
            io.kind(),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// Creates the tables on first use and reads back (revision, compacted revision).
fn prepare_tables(db: &Database, path: &Path) -> Result<(u64, u64), StoreError> {
    let fail = |context: &'static str, source: redb::Error| StoreError::Redb {
        path: path.to_path_buf(),
        context,
        source: Arc::new(source),
    };
    let txn = db
        .begin_write()
        .map_err(|e| fail("begin write", e.into()))?;
    let (revision, compacted) = {
        let log = txn
            .open_table(LOG)
            .map_err(|e| fail("open log", e.into()))?;
        txn.open_table(INDEX)
            .map_err(|e| fail("open index", e.into()))?;
        let meta = txn
            .open_table(META)
            .map_err(|e| fail("open meta", e.into()))?;
        let last = log
            .last()
            .map_err(|e| fail("read log", e.into()))?
            .map(|(rev, _)| rev.value())
            .unwrap_or(0);
        let compacted = meta
            .get(META_COMPACTED)
            .map_err(|e| fail("read meta", e.into()))?
            .map(|v| v.value())
            .unwrap_or(0);
        (last.max(compacted), compacted)
    };
    txn.commit().map_err(|e| fail("commit", e.into()))?;
    Ok((revision, compacted))
}

/// Applies the write-ahead log's entries newer than redb's durable `revision` in one durable
/// commit and returns the store's revision. The log must continue redb's revisions exactly: a
/// gap means lost acknowledged writes, which must not go unnoticed.
fn replay(
    db: &Database,
    path: &Path,
    revision: u64,
    logged: Vec<(u64, Vec<u8>)>,
) -> Result<u64, StoreError> {
    let fail = |context: &'static str, source: redb::Error| StoreError::Redb {
        path: path.to_path_buf(),
        context,
        source: Arc::new(source),
    };
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let newer: Vec<_> = logged
        .into_iter()
        .filter(|(rev, _)| *rev > revision)
        .collect();
    let Some((first, _)) = newer.first() else {
        return Ok(revision);
    };
    if *first != revision + 1 {
        return Err(corrupt(format!(
            "the write-ahead log resumes at revision {first}, but the store ends at {revision}"
        )));
    }
    let txn = db
        .begin_write()
        .map_err(|e| fail("begin write", e.into()))?;
    let mut last = revision;
    {
        let mut log = txn
            .open_table(LOG)
            .map_err(|e| fail("open log", e.into()))?;
        let mut index = txn
            .open_table(INDEX)
            .map_err(|e| fail("open index", e.into()))?;
        for (rev, bytes) in &newer {
            let entry = LogEntry::decode(bytes)
                .map_err(|e| corrupt(format!("write-ahead log entry {rev}: {e}")))?;
            log.insert(*rev, bytes.as_slice())
                .map_err(|e| fail("write log", e.into()))?;
            if entry.tombstone {
                index
                    .remove(entry.key)
                    .map_err(|e| fail("write index", e.into()))?;
            } else {
                index
                    .insert(entry.key, *rev)
                    .map_err(|e| fail("write index", e.into()))?;
            }
            last = *rev;
        }
    }
    txn.commit().map_err(|e| fail("commit", e.into()))?;
    tracing::info!(path = %path.display(), from = revision + 1, to = last,
        "replayed the write-ahead log");
    Ok(last)
}

/// Reads the value `revision` holds, as the KeyValue of a put.
fn read_put(
    shared: &Shared,
    log: &impl ReadableTable<u64, &'static [u8]>,
    revision: u64,
) -> Result<KeyValue, StoreError> {
    let guard = log
        .get(revision)
        .map_err(|e| shared.redb_error("read log", e))?
        .ok_or_else(|| shared.corrupt(format!("revision {revision} is missing from the log")))?;
    let entry = LogEntry::decode(guard.value())
        .map_err(|e| shared.corrupt(format!("log entry {revision}: {e}")))?;
    Ok(KeyValue {
        key: entry.key.to_owned(),
        value: entry_value(shared, revision, &entry)?,
        create_revision: entry.create_revision,
        mod_revision: revision,
    })
}

/// The value of a decoded entry, decompressed and, where a transformer applies, decrypted.
fn entry_value(shared: &Shared, revision: u64, entry: &LogEntry<'_>) -> Result<Bytes, StoreError> {
    let value = entry
        .value()
        .map_err(|e| shared.corrupt(format!("log entry {revision}: {e}")))?;
    if let Some(transformer) = shared
        .transformer
        .as_ref()
        .filter(|t| t.applies_to(entry.key))
    {
        return transformer
            .from_storage(entry.key, &value)
            .map(Bytes::from)
            .map_err(|detail| StoreError::Transform {
                key: entry.key.to_owned(),
                detail,
            });
    }
    match value {
        std::borrow::Cow::Borrowed(value) => Ok(Bytes::copy_from_slice(value)),
        std::borrow::Cow::Owned(value) => Ok(Bytes::from(value)),
    }
}

/// The newest revision in a snapshot: the last log key (compaction never removes it).
fn snapshot_revision(
    shared: &Shared,
    log: &impl ReadableTable<u64, &'static [u8]>,
    meta: &impl ReadableTable<&'static str, u64>,
) -> Result<(u64, u64), StoreError> {
    let last = log
        .last()
        .map_err(|e| shared.redb_error("read log", e))?
        .map(|(rev, _)| rev.value())
        .unwrap_or(0);
    let compacted = meta
        .get(META_COMPACTED)
        .map_err(|e| shared.redb_error("read meta", e))?
        .map(|v| v.value())
        .unwrap_or(0);
    Ok((last.max(compacted), compacted))
}

/// The newest durable snapshot (see [`Shared::snapshot`]).
fn begin_read(shared: &Shared) -> Result<Arc<redb::ReadTransaction>, StoreError> {
    Ok(Arc::clone(
        &shared.snapshot.read().unwrap_or_else(|e| e.into_inner()),
    ))
}
