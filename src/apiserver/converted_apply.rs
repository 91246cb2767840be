//! Server-side apply through a version served by conversion (the autoscaling/v1
//! HorizontalPodAutoscaler over the stored autoscaling/v2 one). Upstream keeps every
//! managedFields entry in the API version its manager wrote with and compares each manager in
//! its own version; berth does the same for the served version:
//!
//! - the apply runs on the served view of the object against the entries of that version only,
//!   so its manager owns the fields as that version names them
//!   (`spec.targetCPUUtilizationPercentage`, not the v2 metric it becomes) and conflicts with
//!   other managers of that version on those names;
//! - the result goes back to the stored version, and what that changed there is checked against
//!   the entries of the other versions: their managers conflict, or lose the fields when forced.

use serde_json::{json, Value};

use super::apply;
use super::fieldset;
use super::managed::{self, ManagedFields, Manager, Operation};
use crate::api::conversion::{to_served, to_stored};
use crate::api::resources::Resource;
use crate::api::ApiResult;
use crate::registry::Part;

/// Applies `config` (in `served`'s version) as `manager` to `live` (stored as `stored`; None:
/// not created yet) and returns the object to store, managedFields included.
pub fn apply(
    served: &Resource,
    stored: &Resource,
    part: Part,
    live: Option<&Value>,
    config: &Value,
    manager: &Manager,
    force: bool,
) -> ApiResult<Value> {
    let served_version = served.api_version();
    let (mine, mut others): (Vec<_>, Vec<_>) = live
        .map(ManagedFields::of)
        .unwrap_or_default()
        .entries
        .into_iter()
        .partition(|e| e.api_version == served_version);
    // An applier keeps one entry whatever version it uses: the one it had in another version
    // gives way to this apply.
    others.retain(|e| {
        !(e.manager == manager.name
            && e.operation == Operation::Apply
            && e.subresource == manager.subresource)
    });
    let live_view = live.map(|l| {
        let mut view = to_served(served, l.clone());
        ManagedFields { entries: mine }.encode_into(&mut view);
        view
    });
    let applied = apply::apply(served, part, live_view.as_ref(), config, manager, force)?;
    let served_entries = ManagedFields::of(&applied);
    let mut result = to_stored(served, applied, live);

    let empty = json!({});
    let type_name = managed::type_of(stored);
    let comparison = managed::owned_changes(fieldset::compare(
        &managed::view(stored, part, live.unwrap_or(&empty)),
        &managed::view(stored, part, &result),
        type_name,
    ));
    let changed = comparison.changed();
    let conflicts: Vec<(String, Vec<String>)> = others
        .iter()
        .map(|e| (e.describe(), e.fields.intersection(&changed)))
        .filter(|(_, fields)| !fields.is_empty())
        .map(|(who, fields)| (who, fields.paths()))
        .collect();
    if !conflicts.is_empty() && !force {
        return Err(apply::conflict_error(conflicts));
    }
    let mut others = ManagedFields { entries: others };
    others.forget(&comparison);
    others.entries.extend(served_entries.entries);
    others.encode_into(&mut result);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources;
    use serde_json::json;

    fn hpa_v1() -> &'static Resource {
        resources::find("autoscaling", "v1", "horizontalpodautoscalers").unwrap()
    }

    fn hpa_v2() -> &'static Resource {
        resources::find("autoscaling", "v2", "horizontalpodautoscalers").unwrap()
    }

    fn manager(name: &str) -> Manager {
        Manager {
            name: name.into(),
            subresource: String::new(),
        }
    }

    fn config(cpu: i64) -> Value {
        json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "maxReplicas": 4, "targetCPUUtilizationPercentage": cpu}})
    }

    fn entries(obj: &Value) -> Vec<(String, String, Vec<String>)> {
        ManagedFields::of(obj)
            .entries
            .into_iter()
            .map(|e| (e.manager, e.api_version, e.fields.paths()))
            .collect()
    }

    #[test]
    fn a_v1_applier_owns_the_v1_field_names_and_a_second_applier_conflicts_on_them() {
        let (v1, v2) = (hpa_v1(), hpa_v2());
        let created = apply(
            v1,
            v2,
            Part::Main,
            None,
            &config(50),
            &manager("alice"),
            false,
        )
        .expect("first apply");
        assert_eq!(created["apiVersion"], "autoscaling/v2");
        assert_eq!(
            created["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            50
        );
        let owned = entries(&created);
        assert_eq!(owned.len(), 1, "{owned:?}");
        let (who, version, paths) = &owned[0];
        assert_eq!(
            (who.as_str(), version.as_str()),
            ("alice", "autoscaling/v1")
        );
        assert!(
            paths.contains(&".spec.targetCPUUtilizationPercentage".to_string()),
            "{paths:?}"
        );
        assert!(!paths.iter().any(|p| p.contains("metrics")), "{paths:?}");

        let err = apply(
            v1,
            v2,
            Part::Main,
            Some(&created),
            &config(70),
            &manager("bob"),
            false,
        )
        .expect_err("bob conflicts with alice");
        assert_eq!(err.code, 409);
        assert!(
            err.message
                .contains("conflict with \"alice\": .spec.targetCPUUtilizationPercentage"),
            "{}",
            err.message
        );

        let forced = apply(
            v1,
            v2,
            Part::Main,
            Some(&created),
            &config(70),
            &manager("bob"),
            true,
        )
        .expect("forced apply");
        assert_eq!(
            forced["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            70
        );
        let owned = entries(&forced);
        let alice = owned.iter().find(|(who, _, _)| who == "alice").unwrap();
        assert!(!alice
            .2
            .contains(&".spec.targetCPUUtilizationPercentage".to_string()));
        let bob = owned.iter().find(|(who, _, _)| who == "bob").unwrap();
        assert!(bob
            .2
            .contains(&".spec.targetCPUUtilizationPercentage".to_string()));
    }

    #[test]
    fn a_v1_apply_that_changes_metrics_a_v2_manager_owns_conflicts_with_it() {
        let (v1, v2) = (hpa_v1(), hpa_v2());
        let live = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "ns", "managedFields": [{
                "manager": "carol", "operation": "Apply", "apiVersion": "autoscaling/v2",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:metrics": {}}}}]},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "maxReplicas": 4, "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 50}}}]}});
        let err = apply(
            v1,
            v2,
            Part::Main,
            Some(&live),
            &config(70),
            &manager("dave"),
            false,
        )
        .expect_err("dave conflicts with carol");
        assert!(
            err.message
                .contains("conflict with \"carol\": .spec.metrics"),
            "{}",
            err.message
        );
        // The same value changes nothing in v2: no conflict.
        let same = apply(
            v1,
            v2,
            Part::Main,
            Some(&live),
            &config(50),
            &manager("dave"),
            false,
        )
        .expect("an apply that changes nothing in v2");
        let owned = entries(&same);
        assert!(owned
            .iter()
            .any(|(who, v, _)| who == "carol" && v == "autoscaling/v2"));
        assert!(owned
            .iter()
            .any(|(who, v, _)| who == "dave" && v == "autoscaling/v1"));
    }
}
