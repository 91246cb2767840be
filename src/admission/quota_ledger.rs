//! Quota charges of creates admitted but not stored yet.
//!
//! Between the ResourceQuota admission and the write to the store a create is invisible to
//! anyone counting stored objects, so without this record a second create racing the first
//! would be counted against a namespace that does not yet hold the first, and the quota
//! controller's recount would take back a charge admission just made. Both add what is pending
//! here to what they count; an entry lives until the registry is done with its create (stored
//! or refused, see `admission::Settling`) or, should that signal be lost, for [`TTL`].

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a charge outlives its create at most: a create is stored within milliseconds of
/// its admission, so this only bounds a charge whose create was abandoned halfway.
pub const TTL: Duration = Duration::from_secs(10);

struct Charge {
    namespace: String,
    group: &'static str,
    plural: &'static str,
    object: Value,
    admitted: Instant,
}

/// Admitted creates by object uid.
#[derive(Default)]
pub struct Ledger {
    charges: Mutex<HashMap<String, Charge>>,
}

/// The ledger of this process: admission writes it, the quota controller reads it.
pub fn global() -> Arc<Ledger> {
    static LEDGER: LazyLock<Arc<Ledger>> = LazyLock::new(Arc::default);
    Arc::clone(&LEDGER)
}

impl Ledger {
    /// Records that the create of `object` (uid `uid`) was admitted.
    pub fn charge(
        &self,
        uid: &str,
        namespace: &str,
        group: &'static str,
        plural: &'static str,
        object: &Value,
    ) {
        if let Ok(mut charges) = self.charges.lock() {
            charges.insert(
                uid.to_string(),
                Charge {
                    namespace: namespace.to_string(),
                    group,
                    plural,
                    object: object.clone(),
                    admitted: Instant::now(),
                },
            );
        }
    }

    /// The create of `uid` is stored or failed: its charge is no longer pending.
    pub fn settle(&self, uid: &str) {
        if let Ok(mut charges) = self.charges.lock() {
            charges.remove(uid);
        }
    }

    /// The pending creates of `plural`.`group` in `namespace`, as (uid, object).
    pub fn pending(&self, namespace: &str, group: &str, plural: &str) -> Vec<(String, Value)> {
        let Ok(mut charges) = self.charges.lock() else {
            return Vec::new();
        };
        charges.retain(|_, c| c.admitted.elapsed() < TTL);
        charges
            .iter()
            .filter(|(_, c)| c.namespace == namespace && c.group == group && c.plural == plural)
            .map(|(uid, c)| (uid.clone(), c.object.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_charge_is_pending_in_its_namespace_and_kind_until_settled() {
        let ledger = Ledger::default();
        ledger.charge(
            "u1",
            "team-a",
            "",
            "pods",
            &json!({"metadata": {"name": "p"}}),
        );
        assert_eq!(ledger.pending("team-a", "", "pods").len(), 1);
        assert!(ledger.pending("team-b", "", "pods").is_empty());
        assert!(ledger.pending("team-a", "", "services").is_empty());
        ledger.settle("u1");
        assert!(ledger.pending("team-a", "", "pods").is_empty());
    }

    #[test]
    fn a_charge_nobody_settles_expires() {
        let ledger = Ledger::default();
        ledger.charge("u1", "team-a", "", "pods", &json!({}));
        if let Ok(mut charges) = ledger.charges.lock() {
            if let (Some(c), Some(then)) = (charges.get_mut("u1"), Instant::now().checked_sub(TTL))
            {
                c.admitted = then;
            }
        }
        assert!(ledger.pending("team-a", "", "pods").is_empty());
    }
}
