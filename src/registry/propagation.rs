//! Cascading deletion, the registry's half: a delete asking for `Foreground` or `Orphan`
//! propagation (or a kind whose default is to orphan) leaves the object with the finalizer
//! the garbage collector acts on, `foregroundDeletion` or `orphan`.

use serde_json::{json, Value};

use crate::api::meta;
use crate::api::resources::Resource;

pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

/// Upstream's `DefaultGarbageCollectionPolicy`: batch/v1 Jobs and v1 ReplicationControllers
/// orphan their dependents when the client names no policy (kept for backwards
/// compatibility); every other kind deletes them in the background.
fn default_orphans(r: &Resource) -> bool {
    matches!(
        (r.group, r.version, r.kind),
        ("batch", "v1", "Job") | ("", "v1", "ReplicationController")
    )
}

/// The garbage collector finalizer a delete asks for, if any.
pub fn finalizer_for(r: &Resource, policy: Option<&str>) -> Option<&'static str> {
    match policy {
        Some("Foreground") => Some(FOREGROUND),
        Some("Orphan") => Some(ORPHAN),
        Some(_) => None,
        None => default_orphans(r).then_some(ORPHAN),
    }
}

/// `obj` with its garbage collector finalizers as the delete asks: the wanted one added,
/// the other removed (a second delete may change its mind, as upstream allows). An explicit
/// `Background` removes both; no policy leaves an object already being deleted as it is.
pub fn with_gc_finalizer(r: &Resource, obj: &Value, policy: Option<&str>) -> Value {
    if policy.is_none() && meta::is_deleting(obj) {
        return obj.clone();
    }
    let wanted = finalizer_for(r, policy);
    let current = meta::finalizers(obj);
    let mut finalizers: Vec<String> = current
        .iter()
        .filter(|f| (*f != FOREGROUND && *f != ORPHAN) || Some(f.as_str()) == wanted)
        .cloned()
        .collect();
    if let Some(f) = wanted {
        if !finalizers.iter().any(|x| x == f) {
            finalizers.push(f.to_string());
        }
    }
    if finalizers == current {
        return obj.clone();
    }
    let mut out = obj.clone();
    let m = meta::metadata_mut(&mut out);
    if finalizers.is_empty() {
        m.remove("finalizers");
    } else {
        m.insert("finalizers".into(), json!(finalizers));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources;

    fn deployments() -> &'static Resource {
        resources::find("apps", "v1", "deployments").unwrap()
    }

    #[test]
    fn foreground_and_orphan_add_their_finalizer_and_background_adds_none() {
        let obj = json!({"metadata": {"name": "d", "finalizers": ["example.com/x"]}});
        let fg = with_gc_finalizer(deployments(), &obj, Some("Foreground"));
        assert_eq!(meta::finalizers(&fg), vec!["example.com/x", FOREGROUND]);
        let orphan = with_gc_finalizer(deployments(), &obj, Some("Orphan"));
        assert_eq!(meta::finalizers(&orphan), vec!["example.com/x", ORPHAN]);
        assert_eq!(
            with_gc_finalizer(deployments(), &obj, Some("Background")),
            obj
        );
        assert_eq!(with_gc_finalizer(deployments(), &obj, None), obj);
    }

    #[test]
    fn jobs_and_replication_controllers_orphan_by_default() {
        let jobs = resources::find("batch", "v1", "jobs").unwrap();
        let rcs = resources::find("", "v1", "replicationcontrollers").unwrap();
        assert_eq!(finalizer_for(jobs, None), Some(ORPHAN));
        assert_eq!(finalizer_for(rcs, None), Some(ORPHAN));
        assert_eq!(finalizer_for(jobs, Some("Background")), None);
        assert_eq!(finalizer_for(deployments(), None), None);
    }

    #[test]
    fn a_second_delete_can_switch_from_orphan_to_foreground() {
        let obj =
            json!({"metadata": {"name": "d", "deletionTimestamp": "t", "finalizers": [ORPHAN]}});
        let fg = with_gc_finalizer(deployments(), &obj, Some("Foreground"));
        assert_eq!(meta::finalizers(&fg), vec![FOREGROUND]);
        let bg = with_gc_finalizer(deployments(), &obj, Some("Background"));
        assert!(meta::finalizers(&bg).is_empty());
    }
}
