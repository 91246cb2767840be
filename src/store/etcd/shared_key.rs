//! One key outside the object prefix that every server on the etcd reads and the first one
//! writes: the cluster's sealed bootstrap data (its CAs and keys). Read before the store opens,
//! so it has a client of its own.

use std::time::Duration;

use super::client::Client;
use super::proto::response_op::Response as OpResponse;
use super::{etcd_error, mod_revision_is, proto, put_op, range_op, status_error};
use super::{EtcdConfig, StoreError, OPEN_PATIENCE, REVISION_KEY};

/// The value of `key`, waiting a while for etcd to answer (servers may start with it).
pub async fn read(config: &EtcdConfig, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    let client = Client::new(config).map_err(|e| etcd_error("connect", e.to_string()))?;
    let deadline = tokio::time::Instant::now() + OPEN_PATIENCE;
    loop {
        let request = proto::RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        match client.range(request).await {
            Ok(response) => return Ok(response.kvs.into_iter().next().map(|kv| kv.value.to_vec())),
            Err(status) if tokio::time::Instant::now() >= deadline => {
                return Err(status_error("read the cluster's bootstrap data")(status))
            }
            Err(status) => {
                tracing::info!(error = %status.message(), "waiting for etcd");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Writes `value` under `key` unless the key exists: `None` when this call wrote it, else the
/// value another server wrote first. The write touches the revision key too, as every write to
/// a berth etcd must (see the backend's module doc).
pub async fn create(
    config: &EtcdConfig,
    key: &[u8],
    value: Vec<u8>,
) -> Result<Option<Vec<u8>>, StoreError> {
    let client = Client::new(config).map_err(|e| etcd_error("connect", e.to_string()))?;
    let response = client
        .txn(proto::TxnRequest {
            compare: vec![mod_revision_is(key, 0)],
            success: vec![put_op(key, value), put_op(REVISION_KEY, Vec::new())],
            failure: vec![range_op(key, false)],
        })
        .await
        .map_err(status_error("write the cluster's bootstrap data"))?;
    if response.succeeded {
        return Ok(None);
    }
    let existing = response
        .responses
        .into_iter()
        .find_map(|op| match op.response {
            Some(OpResponse::Range(range)) => {
                range.kvs.into_iter().next().map(|kv| kv.value.to_vec())
            }
            _ => None,
        });
    // Absent after a failed "absent" comparison only if it was deleted in between.
    existing
        .map(Some)
        .ok_or_else(|| etcd_error("write the cluster's bootstrap data", "key vanished".into()))
}

/// A value and the revision it was last written at, for a later compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub mod_revision: u64,
    /// The store's revision when it was read: changes after it are news (watching from the
    /// key's own older revision could start below the compaction horizon).
    pub read_at: u64,
}

/// One shared key followed for the life of a server: read, replaced by compare-and-swap, and
/// waited on for changes, over one connection.
#[derive(Clone)]
pub struct SharedKey {
    client: Client,
    key: Vec<u8>,
}

impl SharedKey {
    /// Must be called inside the tokio runtime that will drive the connection.
    pub fn new(config: &EtcdConfig, key: &[u8]) -> Result<SharedKey, StoreError> {
        let client = Client::new(config).map_err(|e| etcd_error("connect", e.to_string()))?;
        Ok(SharedKey {
            client,
            key: key.to_vec(),
        })
    }

    pub async fn read(&self) -> Result<Option<Versioned>, StoreError> {
        let request = proto::RangeRequest {
            key: self.key.clone(),
            ..Default::default()
        };
        let response = self
            .client
            .range(request)
            .await
            .map_err(status_error("read the cluster's bootstrap data"))?;
        let read_at = super::header_revision(&response.header);
        Ok(response.kvs.into_iter().next().map(|kv| Versioned {
            value: kv.value.to_vec(),
            mod_revision: kv.mod_revision.max(0) as u64,
            read_at,
        }))
    }

    /// Writes `value` if the key is still at `expected` (its mod_revision when read); false
    /// when another server changed it first. Touches the revision key like every berth write.
    pub async fn replace(&self, value: Vec<u8>, expected: u64) -> Result<bool, StoreError> {
        let response = self
            .client
            .txn(proto::TxnRequest {
                compare: vec![mod_revision_is(&self.key, expected)],
                success: vec![put_op(&self.key, value), put_op(REVISION_KEY, Vec::new())],
                failure: vec![],
            })
            .await
            .map_err(status_error("write the cluster's bootstrap data"))?;
        Ok(response.succeeded)
    }

    /// Returns once the key is written after revision `after` (at once if it already was), or
    /// when the watch ends for any other reason: callers read again either way.
    pub async fn changed_after(&self, after: u64) -> Result<(), StoreError> {
        let create = proto::WatchCreateRequest {
            key: self.key.clone(),
            range_end: Vec::new(),
            start_revision: after.saturating_add(1) as i64,
            progress_notify: false,
            prev_kv: false,
        };
        let mut stream = self
            .client
            .watch(create)
            .await
            .map_err(status_error("watch the cluster's bootstrap data"))?;
        loop {
            match stream.message().await {
                Ok(Some(response)) if response.events.is_empty() && !response.canceled => {}
                Ok(_) => return Ok(()),
                Err(status) => {
                    return Err(status_error("watch the cluster's bootstrap data")(status))
                }
            }
        }
    }
}
