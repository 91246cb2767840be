//! Secrets encryption keys kept alike on every server of one datastore while they run.
//!
//! `berth secrets-encrypt rotate` changes one server's key file. That server offers the new
//! file to the cluster's sealed bootstrap bundle (see [`super::cluster_secrets`]) before its
//! new key seals anything; every server follows the bundle with an etcd watch and takes the
//! keys it finds there, so a Secret one server seals the others open, and their own writes use
//! the new primary too. Dropping unused old keys travels the same way.
//!
//! Direction comes from the keys last agreed with the cluster: a bundle that holds other keys
//! was changed by another server and is taken as it is; a local file that holds other keys was
//! changed here and is offered. When both changed at once, the two are merged
//! ([`KeyFile::merged_into`]) so no key anything was sealed with is lost.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::Mutex;

use super::cluster_secrets::{self, ClusterSecretsError, BOOTSTRAP_KEY, KEY_FILE};
use crate::config::StoreConfig;
use crate::encryption::rotation::{lock_keys, KeySharing};
use crate::encryption::{key_file, KeyFile, SecretsEncryption};
use crate::store::etcd::shared_key::{SharedKey, Versioned};

/// How long to wait before following the bundle again after etcd failed us.
const RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum KeySharingError {
    #[error(transparent)]
    Bundle(#[from] ClusterSecretsError),
    #[error(transparent)]
    Keys(#[from] crate::encryption::EncryptionError),
    #[error(transparent)]
    Lock(#[from] crate::encryption::rotation::RotationError),
    #[error("the datastore: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("the cluster's bootstrap data holds no encryption keys")]
    NoKeys,
    #[error("a background task failed: {0}")]
    Task(String),
}

pub struct SharedEncryptionKeys {
    bundle: SharedKey,
    token: String,
    data_dir: PathBuf,
    encryption: Arc<SecretsEncryption>,
    /// The keys this server and the bundle last agreed on; held across every exchange with the
    /// bundle so following and offering never interleave.
    agreed: Mutex<KeyFile>,
}

impl SharedEncryptionKeys {
    /// For a server whose store others share through a token (after `cluster_secrets::sync`
    /// made the local keys the cluster's); `None` for a lone server.
    pub fn new(
        store: &StoreConfig,
        data_dir: &Path,
        encryption: Arc<SecretsEncryption>,
    ) -> Result<Option<Arc<SharedEncryptionKeys>>, KeySharingError> {
        let Some(token) = store
            .token
            .clone()
            .filter(|_| !store.datastore_endpoint.is_empty())
        else {
            return Ok(None);
        };
        let bundle = SharedKey::new(&cluster_secrets::etcd_config(store), BOOTSTRAP_KEY)?;
        let agreed = KeyFile::read(&key_file(data_dir))?;
        Ok(Some(Arc::new(SharedEncryptionKeys {
            bundle,
            token,
            data_dir: data_dir.to_path_buf(),
            encryption,
            agreed: Mutex::new(agreed),
        })))
    }

    /// Follows the bundle for the rest of the server's life, taking the keys other servers
    /// put there.
    pub async fn follow(self: Arc<Self>) -> anyhow::Result<()> {
        loop {
            let after = match self.take_the_clusters().await {
                Ok(Some(revision)) => revision,
                Ok(None) => {
                    tracing::warn!("the cluster's bootstrap data is gone from the datastore");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot follow the cluster's encryption keys");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            if let Err(error) = self.bundle.changed_after(after).await {
                tracing::debug!(%error, "the watch of the cluster's bootstrap data ended");
                tokio::time::sleep(RETRY).await;
            }
        }
    }

    /// Takes the bundle's keys when another server changed them; returns the revision it was
    /// read at, `None` when there is no bundle.
    async fn take_the_clusters(&self) -> Result<Option<u64>, KeySharingError> {
        let mut agreed = self.agreed.lock().await;
        let Some(current) = self.bundle.read().await? else {
            return Ok(None);
        };
        let cluster = self.keys_in(&current).await?;
        if cluster != *agreed {
            let local = KeyFile::read(&key_file(&self.data_dir))?;
            // A change made here and not yet offered stays in the file, to be offered next.
            let file = match local == *agreed {
                true => cluster.clone(),
                false => local.merged_into(&cluster),
            };
            // Loaded before written: whoever sees the new file may count on the key working.
            self.encryption.reload(&cluster);
            self.write_key_file(file).await?;
            tracing::info!(
                primary = cluster.primary(),
                "took the cluster's encryption keys"
            );
            *agreed = cluster;
        }
        Ok(Some(current.read_at))
    }

    async fn offer(&self, file: &KeyFile) -> Result<KeyFile, KeySharingError> {
        let mut agreed = self.agreed.lock().await;
        for _ in 0..cluster_secrets::SWAP_ATTEMPTS {
            let Some(current) = self.bundle.read().await? else {
                return Err(KeySharingError::NoKeys);
            };
            let cluster = self.keys_in(&current).await?;
            // Another server changed the keys since we agreed: keep both changes.
            let wanted = match cluster == *agreed {
                true => file.clone(),
                false => file.merged_into(&cluster),
            };
            if wanted != cluster && !self.swap(&current, &wanted).await? {
                continue;
            }
            if wanted != *file {
                self.write_key_file(wanted.clone()).await?;
            }
            *agreed = wanted.clone();
            return Ok(wanted);
        }
        Err(ClusterSecretsError::Busy.into())
    }

    /// Replaces the keys in the bundle if it is still `current`.
    async fn swap(&self, current: &Versioned, keys: &KeyFile) -> Result<bool, KeySharingError> {
        let (token, sealed, keys) = (
            self.token.clone(),
            current.value.clone(),
            keys.render().into_bytes(),
        );
        let value = blocking(move || {
            let mut files = cluster_secrets::open(&token, &sealed)?;
            files.insert(KEY_FILE.to_owned(), keys);
            cluster_secrets::seal(&token, &files)
        })
        .await??;
        Ok(self.bundle.replace(value, current.mod_revision).await?)
    }

    /// The keys in a bundle; opening it derives a key from the token, which takes a while.
    async fn keys_in(&self, bundle: &Versioned) -> Result<KeyFile, KeySharingError> {
        let (token, sealed) = (self.token.clone(), bundle.value.clone());
        let files = blocking(move || cluster_secrets::open(&token, &sealed)).await??;
        let text = files.get(KEY_FILE).ok_or(KeySharingError::NoKeys)?;
        let path = Path::new("the cluster's encryption keys");
        Ok(KeyFile::parse(&String::from_utf8_lossy(text), path)?)
    }

    /// Writes the key file under the lock `rotate` takes, so neither loses the other's write.
    async fn write_key_file(&self, file: KeyFile) -> Result<(), KeySharingError> {
        let data_dir = self.data_dir.clone();
        blocking(move || {
            let _lock = lock_keys(&data_dir, true)?;
            file.write(&key_file(&data_dir))?;
            Ok::<_, KeySharingError>(())
        })
        .await?
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, KeySharingError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| KeySharingError::Task(e.to_string()))
}

impl KeySharing for SharedEncryptionKeys {
    fn share<'a>(&'a self, file: &'a KeyFile) -> BoxFuture<'a, Result<KeyFile, String>> {
        Box::pin(async move { self.offer(file).await.map_err(|e| e.to_string()) })
    }
}
