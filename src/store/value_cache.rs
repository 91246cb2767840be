//! The values read most recently, by revision, so that a GET of an object that has not changed
//! does not decode (and decompress, and decrypt) its log entry again.
//!
//! A revision names one log entry, written once and never changed, so a cached value can never
//! be stale: when its key moves on, the index points at a newer revision and the old slot is
//! simply not asked for again until something else takes it. The cache is direct-mapped (one
//! slot per `revision % SLOTS`) with a cap on each value, so its memory is bounded without any
//! bookkeeping: at most `SLOTS × MAX_VALUE_BYTES`, and in practice the size of the few objects a
//! cluster reads over and over (its namespaces, leases, the objects being reconciled).

use std::sync::Mutex;

use super::KeyValue;

const SLOTS: usize = 128;
/// Larger values are read from the log every time: they are rare, and one of them would weigh
/// as much as the rest of the cache.
const MAX_VALUE_BYTES: usize = 16 * 1024;

pub(super) struct ValueCache {
    slots: Box<[Mutex<Option<KeyValue>>]>,
}

impl Default for ValueCache {
    fn default() -> Self {
        ValueCache {
            slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
        }
    }
}

impl ValueCache {
    pub(super) fn get(&self, revision: u64) -> Option<KeyValue> {
        let slot = self.slot(revision).lock().ok()?;
        slot.as_ref()
            .filter(|kv| kv.mod_revision == revision)
            .cloned()
    }

    pub(super) fn insert(&self, kv: &KeyValue) {
        if kv.value.len() > MAX_VALUE_BYTES {
            return;
        }
        if let Ok(mut slot) = self.slot(kv.mod_revision).lock() {
            *slot = Some(kv.clone());
        }
    }

    fn slot(&self, revision: u64) -> &Mutex<Option<KeyValue>> {
        // SLOTS fits in u64, and the remainder is below SLOTS, so both casts are lossless.
        &self.slots[(revision % SLOTS as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn kv(revision: u64, value: &[u8]) -> KeyValue {
        KeyValue {
            key: format!("/k/{revision}"),
            value: Bytes::copy_from_slice(value),
            create_revision: 1,
            mod_revision: revision,
        }
    }

    #[test]
    fn a_value_is_found_by_its_revision_only() {
        let cache = ValueCache::default();
        cache.insert(&kv(7, b"seven"));
        assert_eq!(cache.get(7), Some(kv(7, b"seven")));
        assert_eq!(cache.get(8), None);
        // The same slot, another revision: not a hit, however the slots are shared.
        assert_eq!(cache.get(7 + SLOTS as u64), None);
    }

    #[test]
    fn a_later_revision_in_the_same_slot_takes_it_over() {
        let cache = ValueCache::default();
        cache.insert(&kv(3, b"old"));
        cache.insert(&kv(3 + SLOTS as u64, b"new"));
        assert_eq!(cache.get(3), None);
        assert_eq!(
            cache.get(3 + SLOTS as u64),
            Some(kv(3 + SLOTS as u64, b"new"))
        );
    }

    #[test]
    fn large_values_are_not_kept() {
        let cache = ValueCache::default();
        cache.insert(&kv(5, &vec![b'x'; MAX_VALUE_BYTES + 1]));
        assert_eq!(cache.get(5), None);
        cache.insert(&kv(6, &vec![b'x'; MAX_VALUE_BYTES]));
        assert!(cache.get(6).is_some());
    }
}
