//! Reads: each one runs in a single redb read transaction, so it sees one consistent snapshot.

use std::ops::Bound;

use super::{begin_read, read_put, snapshot_revision, KeyValue, ListResult, Shared, StoreError};
use super::{INDEX, LOG, META};

pub(super) fn get(shared: &Shared, key: &str) -> Result<Option<KeyValue>, StoreError> {
    let txn = begin_read(shared)?;
    let index = txn
        .open_table(INDEX)
        .map_err(|e| shared.redb_error("open index", e))?;
    let Some(revision) = index
        .get(key)
        .map_err(|e| shared.redb_error("read index", e))?
        .map(|rev| rev.value())
    else {
        return Ok(None);
    };
    let log = txn
        .open_table(LOG)
        .map_err(|e| shared.redb_error("open log", e))?;
    // Gets of one object repeat (namespaces, leases, what controllers reconcile), so they go
    // through the values read lately. Only here: a read sees durable snapshots alone, whose
    // revisions are never handed out again (the writer, inside its uncommitted transaction,
    // could not say the same), and lists would only push the often-read values out.
    if let Some(kv) = shared.values.get(revision) {
        return Ok(Some(kv));
    }
    let kv = read_put(shared, &log, revision)?;
    shared.values.insert(&kv);
    Ok(Some(kv))
}

pub(super) fn list(
    shared: &Shared,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
) -> Result<ListResult, StoreError> {
    let txn = begin_read(shared)?;
    let index = txn
        .open_table(INDEX)
        .map_err(|e| shared.redb_error("open index", e))?;
    let log = txn
        .open_table(LOG)
        .map_err(|e| shared.redb_error("open log", e))?;
    let meta = txn
        .open_table(META)
        .map_err(|e| shared.redb_error("open meta", e))?;
    let (revision, _) = snapshot_revision(shared, &log, &meta)?;

    let start = match start_after {
        Some(after) if after >= prefix => Bound::Excluded(after),
        _ => Bound::Included(prefix),
    };
    let range = index
        .range::<&str>((start, Bound::Unbounded))
        .map_err(|e| shared.redb_error("read index", e))?;
    let mut kvs = Vec::new();
    let mut more = false;
    for item in range {
        let (key, rev) = item.map_err(|e| shared.redb_error("read index", e))?;
        if !key.value().starts_with(prefix) {
            break;
        }
        if limit != 0 && kvs.len() == limit {
            more = true;
            break;
        }
        kvs.push(read_put(shared, &log, rev.value())?);
    }
    Ok(ListResult {
        kvs,
        revision,
        more,
    })
}

pub(super) fn count(shared: &Shared, prefix: &str) -> Result<u64, StoreError> {
    let txn = begin_read(shared)?;
    let index = txn
        .open_table(INDEX)
        .map_err(|e| shared.redb_error("open index", e))?;
    let range = index
        .range::<&str>(prefix..)
        .map_err(|e| shared.redb_error("read index", e))?;
    let mut count = 0;
    for item in range {
        let (key, _) = item.map_err(|e| shared.redb_error("read index", e))?;
        if !key.value().starts_with(prefix) {
            break;
        }
        count += 1;
    }
    Ok(count)
}
