//! Events a berth before one shared event store wrote through events.k8s.io/v1 were kept under
//! a key prefix of their own. Both Event APIs now read the core Events, so at start these are
//! moved there (converted to core v1) and their old keys removed: nothing else reads them.

use serde_json::Value;

use super::generic::store_error;
use super::Registry;
use crate::api::resources;
use crate::api::{meta, ApiResult};

/// Where events.k8s.io/v1 Events were stored apart.
const LEGACY_PREFIX: &str = "/events.k8s.io/events/";

/// Moves the Events left under [`LEGACY_PREFIX`] into the core Events and returns how many it
/// moved. An Event that cannot be created again (its namespace is gone, or it does not decode)
/// is dropped: Events are short-lived records, and a stale one must not stop the start.
pub async fn migrate(registry: &Registry) -> ApiResult<usize> {
    let store = registry.store();
    let legacy = store.list(LEGACY_PREFIX, None, 0).map_err(store_error)?;
    let (Some(events), Some(core)) = (
        resources::find("events.k8s.io", "v1", "events"),
        resources::find("", "v1", "events"),
    ) else {
        return Ok(0);
    };
    let mut moved = 0;
    for kv in legacy.kvs {
        match serde_json::from_slice::<Value>(&kv.value) {
            Ok(mut event) => {
                if let Some(m) = event.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                }
                let namespace = meta::namespace(&event).to_string();
                let event = crate::api::conversion::to_stored(events, event, None);
                match registry.create(core, &namespace, event, false).await {
                    Ok(_) => moved += 1,
                    // Already moved by a start that stopped before removing the old key.
                    Err(e) if e.code == 409 => {}
                    Err(e) => tracing::warn!(key = kv.key, error = %e.message,
                        "dropping an old events.k8s.io Event that cannot be stored again"),
                }
            }
            Err(e) => tracing::warn!(key = kv.key, error = %e,
                "dropping an old events.k8s.io Event that does not decode"),
        }
        store
            .delete(&kv.key, Some(kv.mod_revision))
            .await
            .map_err(store_error)?;
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry::services::ServiceNetwork;
    use crate::store::{Store, StoreOptions};

    async fn put(store: &Store, key: &str, bytes: Vec<u8>) {
        store
            .create(key, move |_| bytes)
            .await
            .expect("a legacy key");
    }

    #[tokio::test]
    async fn old_events_move_into_the_core_events_and_undecodable_or_homeless_ones_are_dropped() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store =
            Store::open(&dir.path().join("s.redb"), StoreOptions::default()).expect("a store");
        let network = ServiceNetwork::parse("10.43.0.0/16", (30000, 32767)).expect("a network");
        let registry = Registry::new(store.clone(), network);
        let event = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "default", "resourceVersion": "3"},
            "regarding": {"kind": "Deployment", "name": "web", "namespace": "default"},
            "note": "Scaled up", "reason": "ScalingReplicaSet", "type": "Normal",
            "reportingController": "deployment-controller", "reportingInstance": "berth",
            "eventTime": "2026-01-01T00:00:00.000001Z", "action": "Scale"});
        let mut homeless = event.clone();
        homeless["metadata"]["namespace"] = json!("gone");
        put(
            &store,
            "/events.k8s.io/events/default/web.1",
            event.to_string().into(),
        )
        .await;
        put(
            &store,
            "/events.k8s.io/events/gone/web.1",
            homeless.to_string().into(),
        )
        .await;
        put(
            &store,
            "/events.k8s.io/events/default/junk",
            b"[not json".to_vec(),
        )
        .await;

        // Start-up runs the move with the system namespaces.
        crate::registry::bootstrap::ensure_system_objects(&registry, "10.43.0.10".parse().unwrap())
            .await
            .expect("a start");
        assert!(store.list(LEGACY_PREFIX, None, 0).unwrap().kvs.is_empty());
        let core = resources::find("", "v1", "events").unwrap();
        let moved = registry.get_value(core, "default", "web.1").unwrap();
        assert_eq!(moved["apiVersion"], "v1");
        assert_eq!(moved["message"], "Scaled up");
        assert_eq!(moved["involvedObject"]["name"], "web");
        assert_eq!(moved["reportingComponent"], "deployment-controller");
        assert_eq!(moved["action"], "Scale");
        let listed = registry
            .list(core, None, &crate::registry::ListOptions::default())
            .unwrap();
        assert_eq!(listed.items.len(), 1);
        assert_eq!(
            migrate(&registry).await.unwrap(),
            0,
            "nothing is left to move"
        );
    }
}
