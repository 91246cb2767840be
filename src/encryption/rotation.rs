//! Key rotation: `berth secrets-encrypt rotate` writes a new primary key into the key file; the
//! running server notices the changed file (it looks every few seconds: one small read), takes
//! the new keys and re-seals every Secret with the new primary, then records the finished
//! rotation in a status file the command waits for. The old keys stay in the file, so values
//! sealed with them (history kept for watches) still open.
//!
//! The file is the only channel, so rotation needs no API route and works the same when the
//! server is down: at its next start the server sees the status file name another primary than
//! the key file and re-seals then. The first start after an upgrade re-seals plaintext Secrets
//! the same way.

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
    };
    if let Err(error) = write_status(data_dir, &status) {
        tracing::warn!(%error, "cannot record the encryption status");
    }
    Ok(())
}

/// Watches the key file for the rest of the server's life and re-seals after each change.
pub async fn watch_key_file(
    data_dir: PathBuf,
    store: Store,
    encryption: Arc<SecretsEncryption>,
) -> anyhow::Result<()> {
    let path = key_file(&data_dir);
    let mut seen = KeyFile::read(&path).ok();
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
            continue;
        }
        encryption.reload(&file);
        seen = Some(file);
        if let Err(error) = reseal_if_needed(&data_dir, &store, &encryption).await {
            tracing::error!(%error, "re-sealing secrets with the new key failed; retrying");
            seen = None;
        }
    }
}
