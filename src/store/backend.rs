//! The store as the registry sees it: one type over either backend. An enum rather than a
//! trait object, so the embedded default pays one branch per call and no boxed futures.

use std::path::Path;
use std::sync::Arc;

use super::etcd::{EtcdConfig, EtcdStore, EtcdWatch};
use super::{
    Event, KeyValue, ListResult, RedbStore, RedbWatch, StoreError, StoreOptions, StoreStats,
    ValueTransformer,
};

#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Redb(RedbStore),
    Etcd(EtcdStore),
}

/// Runs the same call on whichever backend the store is.
macro_rules! on_backend {
    ($self:expr, $store:ident => $call:expr) => {
        match &$self.backend {
            Backend::Redb($store) => $call,
            Backend::Etcd($store) => $call,
        }
    };
}

impl Store {
    /// Opens the embedded store at `path`, creating the file (and its directory) if missing.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        RedbStore::open(path, options).map(Store::from)
    }

    /// Opens the embedded store with values of some keys transformed on their way to disk.
    pub fn open_with_transformer(
        path: &Path,
        options: StoreOptions,
        transformer: Option<Arc<dyn ValueTransformer>>,
    ) -> Result<Store, StoreError> {
        RedbStore::open_with_transformer(path, options, transformer).map(Store::from)
    }

    /// Connects to etcd; keys live under `prefix` there.
    pub fn open_etcd(
        config: &EtcdConfig,
        prefix: &str,
        options: StoreOptions,
        transformer: Option<Arc<dyn ValueTransformer>>,
    ) -> Result<Store, StoreError> {
        EtcdStore::open(config, prefix, options, transformer).map(|etcd| Store {
            backend: Backend::Etcd(etcd),
        })
    }

    /// The store the config names: etcd when it lists endpoints, else the embedded file at
    /// `path`.
    pub fn open_configured(
        config: &crate::config::StoreConfig,
        path: &Path,
        transformer: Option<Arc<dyn ValueTransformer>>,
    ) -> Result<Store, StoreError> {
        let options = StoreOptions::from(config);
        if config.datastore_endpoint.is_empty() {
            return Store::open_with_transformer(path, options, transformer);
        }
        let etcd = EtcdConfig {
            endpoints: config.datastore_endpoint.clone(),
            ca_file: config.datastore_cafile.clone(),
            cert_file: config.datastore_certfile.clone(),
            key_file: config.datastore_keyfile.clone(),
        };
        Store::open_etcd(&etcd, &config.datastore_prefix, options, transformer)
    }

    /// Whether other servers may share this store (and so must elect who runs controllers).
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Etcd(_))
    }

    /// Latest committed revision (0 for an empty store). With etcd, the latest this server saw.
    pub fn revision(&self) -> u64 {
        on_backend!(self, s => s.revision())
    }

    /// Oldest revision a watch may resume after.
    pub fn compacted_revision(&self) -> u64 {
        on_backend!(self, s => s.compacted_revision())
    }

    pub fn stats(&self) -> StoreStats {
        on_backend!(self, s => s.stats())
    }

    pub fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        on_backend!(self, s => s.get(key))
    }

    /// Keys starting with `prefix`, strictly after `start_after` (for paging), sorted, at most
    /// `limit` (0 = no limit), all read from one snapshot.
    pub fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListResult, StoreError> {
        on_backend!(self, s => s.list(prefix, start_after, limit))
    }

    pub fn count(&self, prefix: &str) -> Result<u64, StoreError> {
        on_backend!(self, s => s.count(prefix))
    }

    /// Creates `key`; AlreadyExists if it is there. `value` is called with the revision this
    /// write gets, so the caller can embed it (resourceVersion) in the bytes.
    ///
    /// Resolves once the write is durable. Dropping the future does not cancel the write.
    pub async fn create(
        &self,
        key: &str,
        value: impl FnOnce(u64) -> Vec<u8> + Send + 'static,
    ) -> Result<KeyValue, StoreError> {
        on_backend!(self, s => s.create(key, value).await)
    }

    /// Compare-and-swap on mod_revision: Conflict { current } when it moved, NotFound when gone.
    pub async fn update(
        &self,
        key: &str,
        expected_mod_revision: u64,
        value: impl FnOnce(u64) -> Vec<u8> + Send + 'static,
    ) -> Result<KeyValue, StoreError> {
        on_backend!(self, s => s.update(key, expected_mod_revision, value).await)
    }

    /// Deletes; with Some(rev) only if mod_revision still equals rev. Returns the deleted value
    /// and the delete's revision.
    pub async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<u64>,
    ) -> Result<(KeyValue, u64), StoreError> {
        on_backend!(self, s => s.delete(key, expected_mod_revision).await)
    }

    /// Compacts history now, up to the configured horizon. Returns the compacted revision.
    pub async fn compact(&self) -> Result<u64, StoreError> {
        on_backend!(self, s => s.compact().await)
    }

    /// Makes every write durable in the store's own file now; etcd makes every write durable
    /// before it answers, so there it has nothing to do.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Redb(store) => store.checkpoint().await,
            Backend::Etcd(_) => Ok(()),
        }
    }

    /// Events for keys under `prefix` with revision > `after_revision`, in order, gapless.
    /// Err(Compacted) if that history is gone. The stream ends (None) when the watcher fell
    /// more than `watch_buffer` events behind and must re-list. Dropping the Watch unsubscribes.
    pub fn watch(&self, prefix: &str, after_revision: u64) -> Result<Watch, StoreError> {
        match &self.backend {
            Backend::Redb(store) => store.watch(prefix, after_revision).map(Watch::Redb),
            Backend::Etcd(store) => store.watch(prefix, after_revision).map(Watch::Etcd),
        }
    }

    /// The embedded store, for what only it has (tests of its file format, benchmarks).
    pub fn as_redb(&self) -> Option<&RedbStore> {
        match &self.backend {
            Backend::Redb(store) => Some(store),
            Backend::Etcd(_) => None,
        }
    }
}

#[cfg(test)]
impl Store {
    /// The embedded store's internals, for its own unit tests.
    pub(super) fn shared(&self) -> &super::Shared {
        match &self.backend {
            Backend::Redb(store) => store.shared(),
            Backend::Etcd(_) => panic!("the store's unit tests open the embedded store"),
        }
    }
}

/// Where the configured store is, for messages.
pub fn location(config: &crate::config::StoreConfig, path: &Path) -> String {
    if config.datastore_endpoint.is_empty() {
        path.display().to_string()
    } else {
        format!("on etcd {}", config.datastore_endpoint.join(","))
    }
}

impl From<RedbStore> for Store {
    fn from(store: RedbStore) -> Store {
        Store {
            backend: Backend::Redb(store),
        }
    }
}

/// A stream of events; see [`Store::watch`].
pub enum Watch {
    Redb(RedbWatch),
    Etcd(EtcdWatch),
}

impl Watch {
    /// The next event, or None when the stream ended and the watcher must re-list.
    pub async fn next(&mut self) -> Option<Event> {
        match self {
            Watch::Redb(watch) => watch.next().await,
            Watch::Etcd(watch) => watch.next().await,
        }
    }
}
