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
