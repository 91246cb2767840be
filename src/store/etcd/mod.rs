//! The etcd v3 backend: several `berth server`s share one etcd cluster (HA).
//!
//! Keys live under a prefix (`/registry`, as upstream and kine), values are the bytes the redb
//! backend stores (sealed where encryption at rest applies), and a key's mod_revision is its
//! resourceVersion.
//!
//! # The revision a write gets
//! Callers render the value with the revision it will get (its resourceVersion), but etcd only
//! tells the revision after the commit. So every write from every server also touches one
//! revision key outside the prefix, and its transaction compares that key's mod_revision with
//! the revision this server believes is current: the write then gets exactly that plus one, or
//! fails and is retried with the fresh revision. Writes of one server go through one task in
//! order, so they seldom collide; writes of several servers are serialised by etcd. The etcd
//! keyspace must therefore be written by berth alone.
//!
//! The value closure is called once, with a sentinel revision; each attempt splices the real
//! revision's digits in place of the sentinel's (as `registry::stored` does with its template).
//!
//! # Reads
//! The store's reads are synchronous; here they wait for etcd on a runtime of the backend's own,
//! so a blocked caller never starves the tasks that would answer it.

mod client;
mod proto;
pub mod shared_key;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

pub use client::EtcdConfig;
use client::{prefix_end, Client};
use proto::request_op::Request as Op;
use proto::response_op::Response as OpResponse;

use super::{Event, EventKind, KeyValue, ListResult, StoreError, StoreOptions, StoreStats};
use super::{ValueTransformer, MAX_ENTRY_BYTES};

/// Touched by every write; see the module doc. Outside any prefix so no list or watch sees it.
const REVISION_KEY: &[u8] = b"/berth/revision";

/// How often history older than the kept window is compacted (upstream's default interval).
const COMPACTION_INTERVAL: Duration = Duration::from_secs(300);

/// How long opening waits for etcd to answer, so servers may start together with etcd.
const OPEN_PATIENCE: Duration = Duration::from_secs(60);

type ValueFn = Box<dyn FnOnce(u64) -> Vec<u8> + Send>;

enum Write {
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

enum Written {
    Put(KeyValue),
    Deleted(KeyValue, u64),
}

type Reply = oneshot::Sender<Result<Written, StoreError>>;

struct Shared {
    client: Client,
    prefix: String,
    transformer: Option<Arc<dyn ValueTransformer>>,
    watch_buffer: usize,
    history_revisions: u64,
    /// Highest revision seen in any answer: a lower bound of etcd's current revision.
    revision: AtomicU64,
    compacted: AtomicU64,
    writes: AtomicU64,
    compactions: AtomicU64,
}

/// Owns the backend's runtime; dropping the last clone stops its tasks.
struct Handle {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
    spawner: tokio::runtime::Handle,
    writes: mpsc::UnboundedSender<(Write, Reply)>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is forbidden inside another runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[derive(Clone)]
pub struct EtcdStore {
    handle: Arc<Handle>,
}

impl EtcdStore {
    /// Connects, waiting a while for etcd to answer, and starts the writer and compactor.
    pub fn open(
        config: &EtcdConfig,
        prefix: &str,
        options: StoreOptions,
        transformer: Option<Arc<dyn ValueTransformer>>,
    ) -> Result<EtcdStore, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("berth-etcd")
            .enable_all()
            .build()
            .map_err(StoreError::Thread)?;
        let client = {
            let _inside = runtime.enter();
            Client::new(config).map_err(|e| etcd_error("connect", e.to_string()))?
        };
        let shared = Arc::new(Shared {
            client,
            prefix: prefix.trim_end_matches('/').to_owned(),
            transformer,
            watch_buffer: options.watch_buffer.max(1),
            history_revisions: options.history_revisions,
            revision: AtomicU64::new(0),
            compacted: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            compactions: AtomicU64::new(0),
        });
        let spawner = runtime.handle().clone();
        let (writes, queue) = mpsc::unbounded_channel();
        let handle = Arc::new(Handle {
            shared: Arc::clone(&shared),
            runtime: Some(runtime),
            spawner,
            writes,
        });
        let store = EtcdStore { handle };
        store.block_on({
            let shared = Arc::clone(&shared);
            async move { shared.wait_until_reachable().await }
        })??;
        store
            .handle
            .spawner
            .spawn(writer(Arc::clone(&shared), queue));
        store
            .handle
            .spawner
            .spawn(compactor(Arc::downgrade(&shared)));
        Ok(store)
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// Runs `future` on the backend's runtime and waits for it from synchronous code.
    fn block_on<F>(&self, future: F) -> Result<F::Output, StoreError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (done, result) = std::sync::mpsc::sync_channel(1);
        self.handle.spawner.spawn(async move {
            let _ = done.send(future.await);
        });
        let wait = || result.recv().map_err(|_| StoreError::Closed);
        match tokio::runtime::Handle::try_current() {
            // Tells the caller's runtime this worker blocks, so it moves other tasks off it.
            Ok(current)
                if current.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread =>
            {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }

    /// Runs `future` on the backend's runtime and awaits it from any runtime.
    async fn run<F, T>(&self, future: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        self.handle
            .spawner
            .spawn(future)
            .await
            .map_err(|_| StoreError::Closed)?
    }

    pub fn revision(&self) -> u64 {
        self.shared().revision.load(Ordering::Acquire)
    }

    pub fn compacted_revision(&self) -> u64 {
        self.shared().compacted.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> StoreStats {
        let shared = self.shared();
        let writes = shared.writes.load(Ordering::Relaxed);
        StoreStats {
            commits: writes,
            writes,
            compactions: shared.compactions.load(Ordering::Relaxed),
        }
    }

    pub fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let shared = Arc::clone(self.shared());
        let key = key.to_owned();
        self.block_on(async move { shared.get(&key).await })?
    }

    pub fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListResult, StoreError> {
        let shared = Arc::clone(self.shared());
        let prefix = prefix.to_owned();
        let start_after = start_after.map(str::to_owned);
        self.block_on(async move { shared.list(&prefix, start_after.as_deref(), limit).await })?
    }

    pub fn count(&self, prefix: &str) -> Result<u64, StoreError> {
        let shared = Arc::clone(self.shared());
        let prefix = prefix.to_owned();
        self.block_on(async move { shared.count(&prefix).await })?
    }

    pub async fn create(
        &self,
        key: &str,
        value: impl FnOnce(u64) -> Vec<u8> + Send + 'static,
    ) -> Result<KeyValue, StoreError> {
        let write = Write::Create {
            key: key.to_owned(),
            value: Box::new(value),
        };
        match self.submit(write).await? {
            Written::Put(kv) => Ok(kv),
            Written::Deleted(..) => Err(StoreError::Closed),
        }
    }

    pub async fn update(
        &self,
        key: &str,
        expected_mod_revision: u64,
        value: impl FnOnce(u64) -> Vec<u8> + Send + 'static,
    ) -> Result<KeyValue, StoreError> {
        let write = Write::Update {
            key: key.to_owned(),
            expected_mod_revision,
            value: Box::new(value),
        };
        match self.submit(write).await? {
            Written::Put(kv) => Ok(kv),
            Written::Deleted(..) => Err(StoreError::Closed),
        }
    }

    pub async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<u64>,
    ) -> Result<(KeyValue, u64), StoreError> {
        let write = Write::Delete {
            key: key.to_owned(),
            expected_mod_revision,
        };
        match self.submit(write).await? {
            Written::Deleted(kv, revision) => Ok((kv, revision)),
            Written::Put(_) => Err(StoreError::Closed),
        }
    }

    async fn submit(&self, write: Write) -> Result<Written, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.handle
            .writes
            .send((write, reply))
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Compacts history older than the kept window now; returns the compacted revision.
    pub async fn compact(&self) -> Result<u64, StoreError> {
        let shared = Arc::clone(self.shared());
        self.run(async move { shared.compact().await }).await
    }

    /// Events under `prefix` after `after_revision`, from etcd's own history, then live.
    pub fn watch(&self, prefix: &str, after_revision: u64) -> Result<EtcdWatch, StoreError> {
        let shared = Arc::clone(self.shared());
        let start = after_revision.saturating_add(1);
        let probe_prefix = prefix.to_owned();
        // etcd reports a compacted start only on the stream, after the watch was created; a
        // read at that revision says it up front, so the caller can answer 410 at once.
        self.block_on({
            let shared = Arc::clone(&shared);
            async move { shared.check_not_compacted(&probe_prefix, start).await }
        })??;
        let (events, receiver) = mpsc::channel(shared.watch_buffer);
        let prefix = prefix.to_owned();
        let task = self
            .handle
            .spawner
            .spawn(async move { shared.follow(prefix, start, events).await });
        Ok(EtcdWatch {
            events: receiver,
            task: task.abort_handle(),
        })
    }
}

/// A stream of events from an etcd watch; ends when the watcher must re-list.
pub struct EtcdWatch {
    events: mpsc::Receiver<Event>,
    task: tokio::task::AbortHandle,
}

impl EtcdWatch {
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }
}

impl Drop for EtcdWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn etcd_error(context: &'static str, detail: String) -> StoreError {
    StoreError::Etcd { context, detail }
}

fn status_error(context: &'static str) -> impl Fn(tonic::Status) -> StoreError {
    move |status| {
        if is_compacted(&status) {
            StoreError::Compacted { compacted: 0 }
        } else {
            etcd_error(context, status.message().to_owned())
        }
    }
}

fn is_compacted(status: &tonic::Status) -> bool {
    status
        .message()
        .contains("required revision has been compacted")
}

fn is_future_revision(status: &tonic::Status) -> bool {
    status
        .message()
        .contains("required revision is a future revision")
}

fn header_revision(header: &Option<proto::ResponseHeader>) -> u64 {
    header.as_ref().map_or(0, |h| h.revision.max(0) as u64)
}

fn mod_revision_is(key: &[u8], revision: u64) -> proto::Compare {
    proto::Compare {
        result: proto::compare::EQUAL,
        target: proto::compare::TARGET_MOD,
        key: key.to_vec(),
        target_union: Some(proto::compare::TargetUnion::ModRevision(revision as i64)),
    }
}

/// A key exists: its mod_revision is above 0 (etcd's comparison for "present").
fn exists(key: &[u8]) -> proto::Compare {
    proto::Compare {
        result: 1, // GREATER
        target: proto::compare::TARGET_MOD,
        key: key.to_vec(),
        target_union: Some(proto::compare::TargetUnion::ModRevision(0)),
    }
}

fn range_op(key: &[u8], keys_only: bool) -> proto::RequestOp {
    proto::RequestOp {
        request: Some(Op::Range(proto::RangeRequest {
            key: key.to_vec(),
            keys_only,
            ..Default::default()
        })),
    }
}

fn put_op(key: &[u8], value: Vec<u8>) -> proto::RequestOp {
    proto::RequestOp {
        request: Some(Op::Put(proto::PutRequest {
            key: key.to_vec(),
            value,
        })),
    }
}

fn delete_op(key: &[u8]) -> proto::RequestOp {
    proto::RequestOp {
        request: Some(Op::DeleteRange(proto::DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })),
    }
}

/// The first key of the `index`th range answer of a transaction.
fn range_answer(responses: &[proto::ResponseOp], index: usize) -> Option<&proto::KeyValue> {
    match responses.get(index)?.response.as_ref()? {
        OpResponse::Range(range) => range.kvs.first(),
        _ => None,
    }
}

/// The value the caller rendered with a sentinel revision, ready to be rendered again with
/// the revision each attempt would get.
struct Rendered {
    bytes: Vec<u8>,
    /// Where the sentinel's digits were cut out, if the value holds them.
    hole: Option<usize>,
}

/// A revision etcd will not reach: nineteen digits that no object holds by chance.
const SENTINEL: u64 = 7_395_184_620_573_918_264;

impl Rendered {
    fn new(value: ValueFn) -> Result<Rendered, StoreError> {
        let mut bytes = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| value(SENTINEL)))
            .map_err(|_| StoreError::ValueFnPanicked)?;
        let digits = SENTINEL.to_string();
        let hole = bytes
            .windows(digits.len())
            .position(|window| window == digits.as_bytes());
        if let Some(hole) = hole {
            bytes.drain(hole..hole + digits.len());
        }
        Ok(Rendered { bytes, hole })
    }

    fn at(&self, revision: u64) -> Vec<u8> {
        let Some(hole) = self.hole else {
            return self.bytes.clone();
        };
        let digits = revision.to_string();
        let mut out = Vec::with_capacity(self.bytes.len() + digits.len());
        out.extend_from_slice(&self.bytes[..hole]);
        out.extend_from_slice(digits.as_bytes());
        out.extend_from_slice(&self.bytes[hole..]);
        out
    }
}

impl Shared {
    fn etcd_key(&self, key: &str) -> Vec<u8> {
        format!("{}{key}", self.prefix).into_bytes()
    }

    /// The etcd prefix of the store prefix `prefix`; every store key starts with `/`, so the
    /// empty prefix means everything under `<prefix>/`.
    fn etcd_prefix(&self, prefix: &str) -> Vec<u8> {
        if prefix.is_empty() {
            format!("{}/", self.prefix).into_bytes()
        } else {
            self.etcd_key(prefix)
        }
    }

    fn saw(&self, revision: u64) {
        self.revision.fetch_max(revision, Ordering::AcqRel);
    }

    fn to_storage(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        match self.transformer.as_ref().filter(|t| t.applies_to(key)) {
            Some(transformer) => {
                transformer
                    .to_storage(key, &value)
                    .map_err(|detail| StoreError::Transform {
                        key: key.to_owned(),
                        detail,
                    })
            }
            None => Ok(value),
        }
    }

    /// A store KeyValue from etcd's, without the prefix and with the value as callers see it.
    fn key_value(&self, kv: &proto::KeyValue) -> Result<KeyValue, StoreError> {
        let key = kv
            .key
            .strip_prefix(self.prefix.as_bytes())
            .and_then(|key| std::str::from_utf8(key).ok())
            .ok_or_else(|| {
                etcd_error(
                    "read",
                    format!(
                        "key {:?} is outside the prefix",
                        String::from_utf8_lossy(&kv.key)
                    ),
                )
            })?
            .to_owned();
        let value = match self.transformer.as_ref().filter(|t| t.applies_to(&key)) {
            Some(transformer) => transformer
                .from_storage(&key, &kv.value)
                .map(Bytes::from)
                .map_err(|detail| StoreError::Transform {
                    key: key.clone(),
                    detail,
                })?,
            None => kv.value.clone(),
        };
        Ok(KeyValue {
            key,
            value,
            create_revision: kv.create_revision.max(0) as u64,
            mod_revision: kv.mod_revision.max(0) as u64,
        })
    }

    async fn wait_until_reachable(&self) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + OPEN_PATIENCE;
        loop {
            match self.current_revision().await {
                Ok(_) => return Ok(()),
                Err(error) if tokio::time::Instant::now() >= deadline => return Err(error),
                Err(error) => {
                    tracing::info!(%error, "waiting for etcd");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// etcd's revision now, as the revision key and the answer's header tell it.
    async fn current_revision(&self) -> Result<(u64, u64), StoreError> {
        let response = self
            .client
            .range(proto::RangeRequest {
                key: REVISION_KEY.to_vec(),
                keys_only: true,
                ..Default::default()
            })
            .await
            .map_err(status_error("read the revision"))?;
        let header = header_revision(&response.header);
        self.saw(header);
        let marked = response
            .kvs
            .first()
            .map_or(0, |kv| kv.mod_revision.max(0) as u64);
        Ok((marked, header))
    }

    /// The revision the next write's transaction compares with: etcd's current revision, once
    /// the revision key carries it (it does not after writes made without it, e.g. on a new
    /// etcd).
    async fn synced_revision(&self) -> Result<u64, StoreError> {
        loop {
            let (marked, header) = self.current_revision().await?;
            if marked == header {
                return Ok(header);
            }
            let response = self
                .client
                .txn(proto::TxnRequest {
                    compare: vec![mod_revision_is(REVISION_KEY, marked)],
                    success: vec![put_op(REVISION_KEY, Vec::new())],
                    failure: Vec::new(),
                })
                .await
                .map_err(status_error("mark the revision"))?;
            let header = header_revision(&response.header);
            self.saw(header);
            if response.succeeded {
                return Ok(header);
            }
        }
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let response = self
            .client
            .range(proto::RangeRequest {
                key: self.etcd_key(key),
                ..Default::default()
            })
            .await
            .map_err(status_error("get"))?;
        self.saw(header_revision(&response.header));
        response
            .kvs
            .first()
            .map(|kv| self.key_value(kv))
            .transpose()
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListResult, StoreError> {
        let etcd_prefix = self.etcd_prefix(prefix);
        let start = match start_after {
            Some(after) if after >= prefix => {
                let mut key = self.etcd_key(after);
                // The smallest key after `after`.
                key.push(0);
                key
            }
            _ => etcd_prefix.clone(),
        };
        let response = self
            .client
            .range(proto::RangeRequest {
                key: start,
                range_end: prefix_end(&etcd_prefix),
                limit: limit as i64,
                ..Default::default()
            })
            .await
            .map_err(status_error("list"))?;
        let revision = header_revision(&response.header);
        self.saw(revision);
        let kvs = response
            .kvs
            .iter()
            .map(|kv| self.key_value(kv))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ListResult {
            kvs,
            revision,
            more: response.more,
        })
    }

    async fn count(&self, prefix: &str) -> Result<u64, StoreError> {
        let etcd_prefix = self.etcd_prefix(prefix);
        let response = self
            .client
            .range(proto::RangeRequest {
                range_end: prefix_end(&etcd_prefix),
                key: etcd_prefix,
                count_only: true,
                ..Default::default()
            })
            .await
            .map_err(status_error("count"))?;
        self.saw(header_revision(&response.header));
        Ok(response.count.max(0) as u64)
    }

    async fn compact(&self) -> Result<u64, StoreError> {
        let (_, current) = self.current_revision().await?;
        let target = current.saturating_sub(self.history_revisions);
        if target <= self.compacted.load(Ordering::Acquire) {
            return Ok(self.compacted.load(Ordering::Acquire));
        }
        match self.client.compact(target as i64).await {
            Ok(_) => {
                self.compactions.fetch_add(1, Ordering::Relaxed);
            }
            // Another server compacted as far already.
            Err(status) if is_compacted(&status) => {}
            Err(status) => return Err(etcd_error("compact", status.message().to_owned())),
        }
        self.compacted.fetch_max(target, Ordering::AcqRel);
        Ok(target)
    }

    async fn check_not_compacted(&self, prefix: &str, start: u64) -> Result<(), StoreError> {
        let etcd_prefix = self.etcd_prefix(prefix);
        let probe = self
            .client
            .range(proto::RangeRequest {
                range_end: prefix_end(&etcd_prefix),
                key: etcd_prefix,
                revision: start as i64,
                count_only: true,
                ..Default::default()
            })
            .await;
        match probe {
            Ok(response) => {
                self.saw(header_revision(&response.header));
                Ok(())
            }
            Err(status) if is_future_revision(&status) => Ok(()),
            Err(status) if is_compacted(&status) => {
                let compacted = self.compacted.load(Ordering::Acquire).max(start);
                self.compacted.fetch_max(compacted, Ordering::AcqRel);
                Err(StoreError::Compacted { compacted })
            }
            Err(status) => Err(etcd_error("watch", status.message().to_owned())),
        }
    }

    /// Feeds one watcher until it falls behind, the history it needs is compacted away, or
    /// etcd ends the watch: then the stream ends and the watcher re-lists.
    async fn follow(&self, prefix: String, start: u64, events: mpsc::Sender<Event>) {
        let etcd_prefix = self.etcd_prefix(&prefix);
        let create = proto::WatchCreateRequest {
            range_end: prefix_end(&etcd_prefix),
            key: etcd_prefix,
            start_revision: start as i64,
            progress_notify: false,
            prev_kv: true,
        };
        let mut stream = match self.client.watch(create).await {
            Ok(stream) => stream,
            Err(status) => {
                tracing::warn!(%prefix, "cannot start an etcd watch: {}", status.message());
                return;
            }
        };
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => return,
                Err(status) => {
                    tracing::debug!(%prefix, "etcd watch ended: {}", status.message());
                    return;
                }
            };
            self.saw(header_revision(&response.header));
            if response.compact_revision != 0 || response.canceled {
                return;
            }
            for event in &response.events {
                let event = match self.event(event) {
                    Ok(event) => event,
                    Err(error) => {
                        tracing::warn!(%error, "ending a watch on an unreadable event");
                        return;
                    }
                };
                if events.try_send(event).is_err() {
                    return;
                }
            }
        }
    }

    fn event(&self, event: &proto::Event) -> Result<Event, StoreError> {
        let missing = || etcd_error("watch", "an event without its key".to_owned());
        let kv = event.kv.as_ref().ok_or_else(missing)?;
        let revision = kv.mod_revision.max(0) as u64;
        let prev = event
            .prev_kv
            .as_ref()
            .map(|kv| self.key_value(kv))
            .transpose()?;
        if event.kind == proto::EVENT_DELETE {
            // Clients expect the deleted object itself in a DELETED event.
            let last = match &prev {
                Some(prev) => prev.clone(),
                None => KeyValue {
                    value: Bytes::new(),
                    ..self.key_value(kv)?
                },
            };
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
                kv: self.key_value(kv)?,
                prev,
            })
        }
    }

    /// One write, retried while only the revision moved under it.
    async fn write(&self, next: &mut Option<u64>, write: Write) -> Result<Written, StoreError> {
        let (key, rendered, expected) = match write {
            Write::Create { key, value } => (key, Some(Rendered::new(value)?), None),
            Write::Update {
                key,
                expected_mod_revision,
                value,
            } => (
                key,
                Some(Rendered::new(value)?),
                Some(expected_mod_revision),
            ),
            Write::Delete {
                key,
                expected_mod_revision,
            } => (key, None, expected_mod_revision),
        };
        let etcd_key = self.etcd_key(&key);
        let is_create = rendered.is_some() && expected.is_none();
        loop {
            let base = match *next {
                Some(revision) => revision,
                None => self.synced_revision().await?,
            };
            // Until this attempt succeeds, the revision is unknown again.
            *next = None;
            let revision = base + 1;
            let key_condition = match (is_create, expected) {
                (true, _) => mod_revision_is(&etcd_key, 0),
                (false, Some(expected)) => mod_revision_is(&etcd_key, expected),
                (false, None) => exists(&etcd_key),
            };
            let mut success = vec![range_op(&etcd_key, rendered.is_some())];
            let mut value = Bytes::new();
            match &rendered {
                Some(rendered) => {
                    let bytes = rendered.at(revision);
                    if key.len() + bytes.len() > MAX_ENTRY_BYTES {
                        return Err(StoreError::TooLarge {
                            size: key.len() + bytes.len(),
                            limit: MAX_ENTRY_BYTES,
                        });
                    }
                    value = Bytes::from(bytes.clone());
                    success.push(put_op(&etcd_key, self.to_storage(&key, bytes)?));
                }
                None => success.push(delete_op(&etcd_key)),
            }
            success.push(put_op(REVISION_KEY, Vec::new()));
            let response = self
                .client
                .txn(proto::TxnRequest {
                    compare: vec![mod_revision_is(REVISION_KEY, base), key_condition],
                    success,
                    failure: vec![range_op(REVISION_KEY, true), range_op(&etcd_key, false)],
                })
                .await
                .map_err(status_error("write"))?;
            let committed = header_revision(&response.header);
            self.saw(committed);
            if response.succeeded {
                *next = Some(committed);
                if committed != revision {
                    tracing::error!(key, expected = revision, committed,
                        "something else writes to this etcd: the object's resourceVersion differs from its revision");
                }
                self.writes.fetch_add(1, Ordering::Relaxed);
                let before = range_answer(&response.responses, 0);
                let create_revision = before.map_or(committed, |kv| kv.create_revision as u64);
                return Ok(match rendered {
                    Some(_) => Written::Put(KeyValue {
                        key,
                        value,
                        create_revision,
                        mod_revision: committed,
                    }),
                    None => {
                        let last = before.ok_or(StoreError::NotFound)?;
                        Written::Deleted(self.key_value(last)?, committed)
                    }
                });
            }
            let marked =
                range_answer(&response.responses, 0).map_or(0, |kv| kv.mod_revision.max(0) as u64);
            if marked != base {
                // Another server wrote in between: try again at the new revision.
                *next = (marked == committed).then_some(marked);
                continue;
            }
            *next = Some(base);
            let current = range_answer(&response.responses, 1)
                .map(|kv| self.key_value(kv))
                .transpose()?;
            return Err(match (is_create, current) {
                (true, _) => StoreError::AlreadyExists,
                (false, None) => StoreError::NotFound,
                (false, Some(current)) => StoreError::Conflict { current },
            });
        }
    }
}

/// Applies writes one at a time, in the order they were submitted.
async fn writer(shared: Arc<Shared>, mut queue: mpsc::UnboundedReceiver<(Write, Reply)>) {
    let mut next = None;
    while let Some((write, reply)) = queue.recv().await {
        let result = shared.write(&mut next, write).await;
        let _ = reply.send(result);
    }
}

/// Compacts every interval, keeping the configured window of history for watches to resume.
async fn compactor(shared: std::sync::Weak<Shared>) {
    let mut interval = tokio::time::interval(COMPACTION_INTERVAL);
    interval.tick().await;
    loop {
        interval.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Err(error) = shared.compact().await {
            tracing::warn!(%error, "etcd compaction failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_value_takes_each_attempts_revision_where_the_sentinel_was() {
        let rendered = Rendered::new(Box::new(|revision| {
            format!(r#"{{"metadata":{{"resourceVersion":"{revision}"}}}}"#).into_bytes()
        }))
        .unwrap();
        assert_eq!(rendered.at(42), br#"{"metadata":{"resourceVersion":"42"}}"#);
        assert_eq!(
            rendered.at(1000),
            br#"{"metadata":{"resourceVersion":"1000"}}"#
        );
    }

    #[test]
    fn a_value_that_ignores_its_revision_is_stored_as_is() {
        let rendered = Rendered::new(Box::new(|_| b"plain".to_vec())).unwrap();
        assert_eq!(rendered.at(7), b"plain");
    }

    #[test]
    fn a_panicking_value_function_is_an_error_not_a_crash() {
        let rendered = Rendered::new(Box::new(|_| panic!("boom")));
        assert!(matches!(rendered, Err(StoreError::ValueFnPanicked)));
    }
}
