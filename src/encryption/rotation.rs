//! Key rotation: `berth secrets-encrypt rotate` writes a new primary key into the key file; the
//! running server notices the changed file (it looks every few seconds: one small read), takes
//! the new keys and re-seals every Secret with the new primary, then records the finished
//! rotation in a status file the command waits for. The old keys stay in the file while values
//! sealed with them may still be read: the history kept for watches holds the values from before
//! the re-sealing until compaction passes it. Once it has, and a census of the stored Secrets
//! finds no value sealed with an old key, the server drops those keys from the file
//! ([`prune_unused_keys`]), so a leaked old key file no longer opens anything berth keeps.
//!
//! The file is the only channel, so rotation needs no API route and works the same when the
//! server is down: at its next start the server sees the status file name another primary than
//! the key file and re-seals then. The first start after an upgrade re-seals plaintext Secrets
//! the same way.
//!
//! Servers sharing one datastore share the key file too: a changed file is offered to the
//! others before its new key seals anything ([`KeySharing`], `join::key_sharing`), and each of
//! them re-seals as it takes the new keys (harmless repeats: compare-and-swap rewrites).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{key_file, KeyFile, SecretsEncryption};
use crate::store::{Store, StoreError};

/// How often the server looks at the key file.
pub const KEY_FILE_POLL: Duration = Duration::from_secs(2);
const PAGE: usize = 100;

/// The last finished re-sealing, as the server recorded it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The key every Secret was sealed with when the rewrite finished.
    pub primary: String,
    pub secrets: u64,
    pub finished_at: String,
    /// The store revision when the re-sealing finished: history up to it may hold values
    /// sealed with older keys. Absent (0) in files from before pruning existed, which keeps
    /// the old keys until the next rotation.
    #[serde(default)]
    pub revision: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(transparent)]
    Keys(#[from] super::EncryptionError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The lock file that serialises changes to the key file: `rotate` adding a key and the server
/// dropping unused ones each read, change and write the whole file.
fn lock_file(data_dir: &Path) -> PathBuf {
    data_dir.join("encryption").join("keys.lock")
}

/// Holds the key file lock until dropped. `None` when `wait` is false and someone else has it.
pub fn lock_keys(
    data_dir: &Path,
    wait: bool,
) -> Result<Option<nix::fcntl::Flock<std::fs::File>>, RotationError> {
    use nix::fcntl::{Flock, FlockArg};
    let path = lock_file(data_dir);
    let error = |source| RotationError::Lock {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(error)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(error)?;
    let how = match wait {
        true => FlockArg::LockExclusive,
        false => FlockArg::LockExclusiveNonblock,
    };
    match Flock::lock(file, how) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) if !wait => Ok(None),
        Err((_, errno)) => Err(error(errno.into())),
    }
}

pub fn status_file(data_dir: &Path) -> PathBuf {
    data_dir.join("encryption").join("status.json")
}

pub fn read_status(data_dir: &Path) -> Option<Status> {
    let text = std::fs::read(status_file(data_dir)).ok()?;
    serde_json::from_slice(&text).ok()
}

fn write_status(data_dir: &Path, status: &Status) -> std::io::Result<()> {
    let path = status_file(data_dir);
    let temporary = path.with_extension("new");
    let text = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(&text)?;
    std::fs::rename(&temporary, &path)
}

/// Rewrites every Secret so it is sealed with the current primary key. Each is a
/// compare-and-swap of the same object at a new resourceVersion (as `kubectl replace` of every
/// Secret would do upstream); a Secret changed meanwhile is retried, one deleted is skipped.
pub async fn reseal_all(store: &Store, prefix: &str) -> Result<u64, StoreError> {
    let mut count = 0;
    let mut after: Option<String> = None;
    loop {
        let page = store.list(prefix, after.as_deref(), PAGE)?;
        for kv in &page.kvs {
            let mut current = kv.clone();
            loop {
                let Ok(object) = serde_json::from_slice::<Value>(&current.value) else {
                    tracing::warn!(key = %current.key, "secret is not JSON; left as it is");
                    break;
                };
                let written = store
                    .update(&current.key, current.mod_revision, move |revision| {
                        let object = crate::registry::generic::encode_value_at(object, revision);
                        serde_json::to_vec(&object).unwrap_or_default()
                    })
                    .await;
                match written {
                    Ok(_) => {
                        count += 1;
                        break;
                    }
                    Err(StoreError::Conflict { current: newer }) => current = newer,
                    Err(StoreError::NotFound) => break,
                    Err(other) => return Err(other),
                }
            }
        }
        match (page.more, page.kvs.last()) {
            (true, Some(last)) => after = Some(last.key.clone()),
            _ => return Ok(count),
        }
    }
}

/// Re-seals when the recorded status names another primary (rotated while the server was down,
/// or the first start with encryption), then records the new status.
pub async fn reseal_if_needed(
    data_dir: &Path,
    store: &Store,
    encryption: &SecretsEncryption,
) -> Result<(), StoreError> {
    let primary = encryption.primary();
    if read_status(data_dir).is_some_and(|s| s.primary == primary) {
        return Ok(());
    }
    let secrets = reseal_all(store, encryption.storage_prefix()).await?;
    tracing::info!(key = %primary, secrets, "secrets sealed with the primary encryption key");
    let status = Status {
        primary,
        secrets,
        finished_at: jiff::Timestamp::now().to_string(),
        revision: store.revision(),
    };
    if let Err(error) = write_status(data_dir, &status) {
        tracing::warn!(%error, "cannot record the encryption status");
    }
    Ok(())
}

/// Drops from the key file every key but the primary that no stored Secret needs any more, and
/// returns their names. Does nothing until the re-sealing with the current primary has finished
/// and compaction has passed it (older history may hold values sealed with any key), nor when
/// `rotate` holds the key file. A key a census of the current values still finds is kept.
pub async fn prune_unused_keys(
    data_dir: &Path,
    store: &Store,
    encryption: &SecretsEncryption,
) -> Result<Vec<String>, RotationError> {
    let path = key_file(data_dir);
    let loaded = KeyFile::read(&path)?;
    let primary = loaded.primary().to_owned();
    if loaded.keys.len() < 2 || encryption.primary() != primary {
        return Ok(Vec::new());
    }
    let resealed = match read_status(data_dir) {
        Some(status) if status.primary == primary && status.revision > 0 => status.revision,
        _ => return Ok(Vec::new()),
    };
    if store.compacted_revision() < resealed {
        return Ok(Vec::new());
    }
    let (listed, in_use) = encryption
        .census(read_every_value(store, encryption.storage_prefix()))
        .await;
    listed?;
    let Some(_lock) = lock_keys(data_dir, false)? else {
        return Ok(Vec::new());
    };
    // Read again under the lock: `rotate` may have added a key since.
    let mut keys = KeyFile::read(&path)?;
    if keys.primary() != primary {
        return Ok(Vec::new());
    }
    let dropped = keys.retain_used(&in_use);
    if !dropped.is_empty() {
        keys.write(&path)?;
        encryption.reload(&keys);
        tracing::info!(keys = ?dropped, "dropped encryption keys no stored secret uses");
    }
    Ok(dropped)
}

/// Reads every stored value under `prefix` (through the transformer, which is the point).
async fn read_every_value(store: &Store, prefix: &str) -> Result<(), StoreError> {
    let mut after: Option<String> = None;
    loop {
        let page = store.list(prefix, after.as_deref(), PAGE)?;
        match (page.more, page.kvs.last()) {
            (true, Some(last)) => after = Some(last.key.clone()),
            _ => return Ok(()),
        }
        tokio::task::yield_now().await;
    }
}

/// Where a server whose store other servers share sends a changed key file before it uses a
/// new key, so that every server can open what any of them seals.
pub trait KeySharing: Send + Sync {
    /// Offers `file` to the other servers; returns the keys to use: `file`, or the cluster's
    /// (with `file`'s merged in) when another server changed them first. An error means
    /// nothing was shared: the caller keeps its old keys and offers again later.
    fn share<'a>(
        &'a self,
        file: &'a KeyFile,
    ) -> futures::future::BoxFuture<'a, Result<KeyFile, String>>;
}

/// The keys to use after the key file changed: `file` itself without sharing.
async fn shared(sharing: Option<&dyn KeySharing>, file: KeyFile) -> Result<KeyFile, String> {
    match sharing {
        Some(sharing) => sharing.share(&file).await,
        None => Ok(file),
    }
}

/// Watches the key file for the rest of the server's life and re-seals after each change.
/// With `sharing`, a changed file reaches the other servers before its new key seals anything.
pub async fn watch_key_file(
    data_dir: PathBuf,
    store: Store,
    encryption: Arc<SecretsEncryption>,
    sharing: Option<Arc<dyn KeySharing>>,
) -> anyhow::Result<()> {
    let path = key_file(&data_dir);
    let mut seen = KeyFile::read(&path).ok();
    // The compacted revision at the last pruning attempt: a census lists every Secret, so it
    // is repeated only when compaction has moved on.
    let mut pruned_at = None;
    let mut interval = tokio::time::interval(KEY_FILE_POLL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let file = match KeyFile::read(&path) {
            Ok(file) => file,
            Err(error) => {
                if seen.is_some() {
                    tracing::warn!(%error, "keeping the loaded encryption keys");
                    seen = None;
                }
                continue;
            }
        };
        if seen.as_ref() == Some(&file) {
            let compacted = store.compacted_revision();
            if file.keys.len() > 1 && pruned_at != Some(compacted) {
                pruned_at = Some(compacted);
                match prune_unused_keys(&data_dir, &store, &encryption).await {
                    Ok(dropped) if !dropped.is_empty() => {
                        // A change like any other: the next look offers it to the other servers.
                        seen = None;
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "cannot drop unused encryption keys"),
                }
            }
            continue;
        }
        let file = match shared(sharing.as_deref(), file).await {
            Ok(file) => file,
            Err(error) => {
                tracing::warn!(%error, "cannot share the changed encryption keys; keeping the loaded ones");
                continue;
            }
        };
        encryption.reload(&file);
        // What sharing returns is what it left in the file; a newer change is seen next time.
        seen = Some(file);
        if let Err(error) = reseal_if_needed(&data_dir, &store, &encryption).await {
            tracing::error!(%error, "re-sealing secrets with the new key failed; retrying");
            seen = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;
    use serde_json::json;

    struct Fixture {
        _dir: tempfile::TempDir,
        data_dir: PathBuf,
        store: Store,
        encryption: Arc<SecretsEncryption>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        let encryption = crate::encryption::open(&data_dir).unwrap();
        let options = StoreOptions {
            history_revisions: 4,
            watch_buffer: 100,
        };
        let store = Store::open_with_transformer(
            &data_dir.join("berth.redb"),
            options,
            Some(encryption.clone()),
        )
        .unwrap();
        Fixture {
            _dir: dir,
            data_dir,
            store,
            encryption,
        }
    }

    impl Fixture {
        async fn put(&self, key: String, value: Vec<u8>) {
            self.store.create(&key, move |_| value).await.unwrap();
        }

        async fn secret(&self, name: &str) {
            let value = json!({"metadata": {"name": name}, "data": {"password": "aHVudGVy"}});
            let key = format!("{}default/{name}", self.encryption.storage_prefix());
            self.put(key, serde_json::to_vec(&value).unwrap()).await;
        }

        async fn rotate(&self) {
            let path = key_file(&self.data_dir);
            let mut keys = KeyFile::read(&path).unwrap();
            keys.add_primary().unwrap();
            keys.write(&path).unwrap();
            self.encryption.reload(&keys);
            reseal_if_needed(&self.data_dir, &self.store, &self.encryption)
                .await
                .unwrap();
        }

        /// Enough other writes that compaction passes everything written so far.
        async fn move_history_on(&self) {
            let start = self.store.revision();
            for i in 0..20 {
                let key = format!("/core/configmaps/default/c{start}-{i}");
                self.put(key, b"{}".to_vec()).await;
            }
            self.store.compact().await.unwrap();
        }

        fn key_names(&self) -> Vec<String> {
            let keys = KeyFile::read(&key_file(&self.data_dir)).unwrap();
            keys.keys.into_iter().map(|(name, _)| name).collect()
        }

        async fn prune(&self) -> Vec<String> {
            prune_unused_keys(&self.data_dir, &self.store, &self.encryption)
                .await
                .unwrap()
        }
    }

    #[tokio::test]
    async fn an_old_key_is_dropped_once_compaction_has_passed_the_resealing() {
        let f = fixture();
        for name in ["a", "b", "c"] {
            f.secret(name).await;
        }
        reseal_if_needed(&f.data_dir, &f.store, &f.encryption)
            .await
            .unwrap();
        f.rotate().await;
        assert!(
            f.prune().await.is_empty(),
            "history still holds key1 values"
        );
        assert_eq!(f.key_names(), vec!["key2", "key1"]);

        f.move_history_on().await;
        assert_eq!(f.prune().await, vec!["key1"]);
        assert_eq!(f.key_names(), vec!["key2"]);
        let prefix = f.encryption.storage_prefix().to_string();
        let listed = f.store.list(&prefix, None, 0).unwrap();
        assert_eq!(listed.kvs.len(), 3, "every secret still opens");
        assert!(f.prune().await.is_empty(), "the primary is never dropped");

        // Reopened with only the pruned key file, every Secret still reads.
        let (data_dir, dir) = (f.data_dir.clone(), f._dir);
        drop(f.store);
        let encryption = crate::encryption::open(&data_dir).unwrap();
        let store = Store::open_with_transformer(
            &data_dir.join("berth.redb"),
            StoreOptions::default(),
            Some(encryption),
        )
        .unwrap();
        let listed = store.list(&prefix, None, 0).unwrap();
        assert_eq!(listed.kvs.len(), 3);
        drop(dir);
    }

    #[tokio::test]
    async fn a_key_a_stored_value_still_uses_is_kept() {
        let f = fixture();
        f.secret("fine").await;
        // Not JSON: re-sealing leaves it as it is, so it stays sealed with key1.
        let odd = format!("{}default/odd", f.encryption.storage_prefix());
        f.put(odd, b"not json".to_vec()).await;
        f.rotate().await;
        f.move_history_on().await;
        assert!(f.prune().await.is_empty());
        assert_eq!(f.key_names(), vec!["key2", "key1"]);
    }

    #[tokio::test]
    async fn nothing_is_dropped_while_rotate_holds_the_key_file() {
        let f = fixture();
        f.secret("a").await;
        f.rotate().await;
        f.move_history_on().await;
        let held = lock_keys(&f.data_dir, true).unwrap();
        assert!(f.prune().await.is_empty());
        drop(held);
        assert_eq!(f.prune().await, vec!["key1"]);
    }
}
