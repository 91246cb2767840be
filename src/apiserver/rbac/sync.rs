//! Keeps the policy index current: one list at start, then the store's watch; a watcher that
//! fell behind (or a compacted revision) re-lists, as an informer does.

use std::sync::Weak;
use std::time::Duration;

use super::policy::{Policy, KEY_PREFIX};
use super::Rbac;
use crate::store::{EventKind, Store, StoreError};

/// Every RBAC object in the store, and the revision the list was read at.
pub(super) fn load(store: &Store) -> Result<(Policy, u64), StoreError> {
    let list = store.list(KEY_PREFIX, None, 0)?;
    let mut policy = Policy::default();
    for kv in &list.kvs {
        match serde_json::from_slice(&kv.value) {
            Ok(object) => policy.apply(&kv.key, Some(&object)),
            Err(e) => tracing::warn!(key = %kv.key, "ignoring an unreadable RBAC object: {e}"),
        }
    }
    Ok((policy, list.revision))
}

/// Applies the store's events to `rbac` until it is dropped.
pub(super) async fn follow(rbac: Weak<Rbac>, store: Store, mut revision: u64) {
    loop {
        if let Ok(mut watch) = store.watch(KEY_PREFIX, revision) {
            while let Some(event) = watch.next().await {
                let Some(rbac) = rbac.upgrade() else {
                    return;
                };
                revision = event.revision;
                let object = match event.kind {
                    EventKind::Put => serde_json::from_slice(&event.kv.value).ok(),
                    EventKind::Delete => None,
                };
                rbac.apply(&event.kv.key, object.as_ref());
            }
        }
        // Dropped as a slow watcher, or the revision was compacted away: start over.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(rbac) = rbac.upgrade() else {
            return;
        };
        match load(&store) {
            Ok((policy, at)) => {
                rbac.replace(policy);
                revision = at;
            }
            Err(StoreError::Closed) => return,
            Err(e) => tracing::warn!("cannot re-list the RBAC policy: {e}"),
        }
    }
}
