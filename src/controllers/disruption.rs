//! Disruption: keeps each PodDisruptionBudget's status (expected, healthy and desired pods,
//! disruptions allowed, the `DisruptionAllowed` condition) in step with the pods it selects and
//! the scale of their controllers, as upstream's disruption controller. The eviction
//! subresource reads the same budgets when it decides.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::{json, Value};

use super::common;

/// How long an eviction the API granted is assumed to be on its way (upstream's
/// `DeletionTimeout`): the pod does not count as healthy meanwhile.
const DELETION_TIMEOUT: SignedDuration = SignedDuration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
}

/// Runs the controller until the watch ends.
pub async fn run(client: kube::Client) {
    let budgets: Api<PodDisruptionBudget> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let controller = Controller::new(budgets, watcher::Config::default());
    let store = controller.store();
    controller
        .watches(pods, watcher::Config::default(), move |pod| {
            budgets_of(&store, &pod)
        })
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|_| async {})
        .await;
}

/// The budgets in the pod's namespace that select it.
fn budgets_of(
    store: &Store<PodDisruptionBudget>,
    pod: &Pod,
) -> Vec<ObjectRef<PodDisruptionBudget>> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    store
        .state()
        .iter()
        .filter(|b| b.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .filter(|b| selects(b, &labels))
        .filter_map(|b| Some(ObjectRef::new(b.metadata.name.as_deref()?).within(&namespace)))
        .collect()
}

/// In policy/v1 an empty selector selects every pod of the namespace; a missing one none.
fn selects(budget: &PodDisruptionBudget, labels: &BTreeMap<String, String>) -> bool {
    let selector = budget.spec.as_ref().and_then(|s| s.selector.as_ref());
    selector.is_some_and(|s| common::selector_matches(s, labels))
}

fn error_policy(_: Arc<PodDisruptionBudget>, error: &Error, _: Arc<kube::Client>) -> Action {
    tracing::warn!(%error, "disruption budget sync failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(
    budget: Arc<PodDisruptionBudget>,
    client: Arc<kube::Client>,
) -> Result<Action, Error> {
    let (Some(name), Some(namespace)) = (&budget.metadata.name, &budget.metadata.namespace) else {
        return Ok(Action::await_change());
    };
    if budget.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let client = (*client).clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selected: Vec<Pod> = pods
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|p| {
            selects(
                &budget,
                p.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()),
            )
        })
        .collect();
    let spec = budget.spec.clone().unwrap_or_default();
    let needs_scale = matches!(spec.max_unavailable, Some(_))
        || matches!(spec.min_available, Some(IntOrString::String(_)));
    let scale = match needs_scale {
        true => Some(controllers_scale(&client, namespace, &selected).await?),
        false => None,
    };
    let now = Timestamp::now();
    let disrupted = budget
        .status
        .as_ref()
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default();
    let disrupted: BTreeMap<String, Timestamp> =
        disrupted.into_iter().map(|(k, v)| (k, v.0)).collect();
    let computed = compute(&budget, &selected, scale, &disrupted, now);
    let mut patch = computed.status_patch(budget.metadata.generation, &budget);
    if common::status_differs(&*budget, &patch) {
        // Compare-and-swap on the resourceVersion: an eviction may have just recorded a
        // disruption this pass did not see, and must not be overwritten.
        patch["metadata"] = json!({"resourceVersion": budget.metadata.resource_version});
        let budgets: Api<PodDisruptionBudget> = Api::namespaced(client, namespace);
        match budgets
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {
                return Ok(Action::requeue(Duration::from_millis(200)))
            }
            Err(e) => return Err(e.into()),
        }
    }
    // A granted eviction stops counting against the budget once its timeout passes.
    Ok(match computed.disrupted.values().min() {
        Some(oldest) => {
            let expires = *oldest + DELETION_TIMEOUT;
            let wait = expires.duration_since(now).unsigned_abs();
            Action::requeue(wait + Duration::from_secs(1))
        }
        None => Action::await_change(),
    })
}

/// The summed replicas of the controllers of the selected pods (upstream's
/// `getExpectedPodCount` via each controller's scale). A pod without a known controller counts
/// as one.
async fn controllers_scale(
    client: &kube::Client,
    namespace: &str,
    pods: &[Pod],
) -> Result<i32, Error> {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut total = 0;
    for pod in pods {
        let Some(owner) = common::controller_of(&pod.metadata) else {
            total += 1;
            continue;
        };
        if !seen.insert(owner.uid.clone()) {
            continue;
        }
        total += match replicas_of(client, namespace, owner).await? {
            Some(replicas) => replicas,
            None => 1,
        };
    }
    Ok(total)
}

async fn replicas_of(
    client: &kube::Client,
    namespace: &str,
    owner: &OwnerReference,
) -> Result<Option<i32>, Error> {
    let replicas = match owner.kind.as_str() {
        "ReplicaSet" => {
            let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
            let Some(set) = sets.get_opt(&owner.name).await? else {
                return Ok(None);
            };
            // A Deployment's ReplicaSets come and go during a rollout: its scale is what counts.
            if let Some(deployment) =
                common::controller_of(&set.metadata).filter(|o| o.kind == "Deployment")
            {
                let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
                let found = deployments.get_opt(&deployment.name).await?;
                return Ok(found.map(|d| d.spec.and_then(|s| s.replicas).unwrap_or(1)));
            }
            set.spec.and_then(|s| s.replicas).unwrap_or(1)
        }
        "ReplicationController" => {
            let rcs: Api<ReplicationController> = Api::namespaced(client.clone(), namespace);
            let Some(rc) = rcs.get_opt(&owner.name).await? else {
                return Ok(None);
            };
            rc.spec.and_then(|s| s.replicas).unwrap_or(1)
        }
        "StatefulSet" => {
            let sets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
            let Some(set) = sets.get_opt(&owner.name).await? else {
                return Ok(None);
            };
            set.spec.and_then(|s| s.replicas).unwrap_or(1)
        }
        _ => return Ok(None),
    };
    Ok(Some(replicas))
}

/// A budget's numbers.
#[derive(Debug, PartialEq)]
pub struct Computed {
    pub expected: i32,
    pub current_healthy: i32,
    pub desired_healthy: i32,
    pub disruptions_allowed: i32,
    /// Evictions granted whose pods are still there and not yet past the timeout.
    pub disrupted: BTreeMap<String, Timestamp>,
}

impl Computed {
    fn status_patch(&self, generation: Option<i64>, old: &PodDisruptionBudget) -> Value {
        let allowed = self.disruptions_allowed > 0;
        let (status, reason) = match allowed {
            true => ("True", "SufficientPods"),
            false => ("False", "InsufficientPods"),
        };
        let old_condition = old
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "DisruptionAllowed"));
        let since = match old_condition {
            Some(c) if c.status == status && c.reason == reason => json!(c.last_transition_time),
            _ => json!(Timestamp::now().round(jiff::Unit::Second).ok()),
        };
        let disrupted: BTreeMap<&String, String> = self
            .disrupted
            .iter()
            .map(|(k, v)| (k, v.round(jiff::Unit::Second).unwrap_or(*v).to_string()))
            .collect();
        json!({"status": {
            "observedGeneration": generation,
            "expectedPods": self.expected,
            "currentHealthy": self.current_healthy,
            "desiredHealthy": self.desired_healthy,
            "disruptionsAllowed": self.disruptions_allowed,
            "disruptedPods": if disrupted.is_empty() { Value::Null } else { json!(disrupted) },
            "conditions": [{
                "type": "DisruptionAllowed",
                "status": status,
                "reason": reason,
                "message": "",
                "observedGeneration": generation,
                "lastTransitionTime": since,
            }],
        }})
    }
}

/// Upstream's `getExpectedPodCount` and `countHealthyPods`: with an integer `minAvailable` the
/// expected pods are the selected ones; with a percentage or `maxUnavailable` they are the
/// controllers' `scale`, and percentages round up.
pub fn compute(
    budget: &PodDisruptionBudget,
    pods: &[Pod],
    scale: Option<i32>,
    disrupted: &BTreeMap<String, Timestamp>,
    now: Timestamp,
) -> Computed {
    let spec = budget.spec.clone().unwrap_or_default();
    let present: BTreeMap<&str, &Pod> = pods
        .iter()
        .filter_map(|p| Some((p.metadata.name.as_deref()?, p)))
        .collect();
    // Keep an eviction record only while its pod is still there, not yet being deleted, and
    // the record is young: then the pod is on its way out and must not count as healthy.
    let disrupted: BTreeMap<String, Timestamp> = disrupted
        .iter()
        .filter(|(name, at)| {
            present
                .get(name.as_str())
                .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
                && **at + DELETION_TIMEOUT > now
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let current_healthy = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or("")))
        .filter(|p| common::pod_is_ready(p))
        .count() as i32;
    let selected = pods
        .iter()
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .count() as i32;
    let (expected, desired) = match (&spec.min_available, &spec.max_unavailable) {
        (Some(IntOrString::Int(min)), _) => (selected, *min),
        (Some(IntOrString::String(percent)), _) => {
            let expected = scale.unwrap_or(selected);
            (expected, scaled(percent, expected))
        }
        (None, Some(max)) => {
            let expected = scale.unwrap_or(selected);
            let max = match max {
                IntOrString::Int(n) => *n,
                IntOrString::String(percent) => scaled(percent, expected),
            };
            (expected, (expected - max).max(0))
        }
        (None, None) => (selected, 0),
    };
    Computed {
        expected,
        current_healthy,
        desired_healthy: desired,
        disruptions_allowed: (current_healthy - desired).max(0),
        disrupted,
    }
}

/// `percent` of `total`, rounded up as upstream's `GetScaledValueFromIntOrPercent(.., true)`.
fn scaled(percent: &str, total: i32) -> i32 {
    let value = percent.trim_end_matches('%').parse::<i64>().unwrap_or(0);
    ((value * i64::from(total) + 99) / 100) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::common::tests::ready_pod;

    fn budget(spec: Value) -> PodDisruptionBudget {
        serde_json::from_value(json!({"metadata": {"name": "b", "generation": 2}, "spec": spec}))
            .unwrap()
    }

    fn pending_pod(name: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name}, "status": {"phase": "Pending"}}))
            .unwrap()
    }

    #[test]
    fn an_integer_min_available_counts_the_selected_pods() {
        let pods = [
            ready_pod("a", Timestamp::now()),
            ready_pod("b", Timestamp::now()),
            pending_pod("c"),
        ];
        let b = budget(json!({"minAvailable": 1}));
        let c = compute(&b, &pods, None, &BTreeMap::new(), Timestamp::now());
        assert_eq!(
            (c.expected, c.current_healthy, c.desired_healthy),
            (3, 2, 1)
        );
        assert_eq!(c.disruptions_allowed, 1);
    }

    #[test]
    fn max_unavailable_and_percentages_count_the_controllers_scale_rounding_up() {
        let pods = [
            ready_pod("a", Timestamp::now()),
            ready_pod("b", Timestamp::now()),
        ];
        let max = budget(json!({"maxUnavailable": 1}));
        let c = compute(&max, &pods, Some(3), &BTreeMap::new(), Timestamp::now());
        assert_eq!(
            (c.expected, c.desired_healthy, c.disruptions_allowed),
            (3, 2, 0)
        );
        let percent = budget(json!({"minAvailable": "50%"}));
        let c = compute(&percent, &pods, Some(3), &BTreeMap::new(), Timestamp::now());
        assert_eq!((c.desired_healthy, c.disruptions_allowed), (2, 0));
        let max_percent = budget(json!({"maxUnavailable": "30%"}));
        let c = compute(
            &max_percent,
            &pods,
            Some(2),
            &BTreeMap::new(),
            Timestamp::now(),
        );
        assert_eq!((c.desired_healthy, c.disruptions_allowed), (1, 1));
    }

    #[test]
    fn a_pod_whose_eviction_was_granted_is_not_healthy_until_the_timeout() {
        let now = Timestamp::now();
        let pods = [ready_pod("a", now), ready_pod("b", now)];
        let b = budget(json!({"minAvailable": 1}));
        let granted = BTreeMap::from([("a".to_string(), now)]);
        let c = compute(&b, &pods, None, &granted, now);
        assert_eq!((c.current_healthy, c.disruptions_allowed), (1, 0));
        assert!(c.disrupted.contains_key("a"));
        let later = now + SignedDuration::from_secs(200);
        let c = compute(&b, &pods, None, &granted, later);
        assert_eq!((c.current_healthy, c.disruptions_allowed), (2, 1));
        assert!(c.disrupted.is_empty());
    }

    #[test]
    fn the_status_has_the_disruption_allowed_condition_and_observed_generation() {
        let b = budget(json!({"minAvailable": 0}));
        let pods = [ready_pod("a", Timestamp::now())];
        let c = compute(&b, &pods, None, &BTreeMap::new(), Timestamp::now());
        let patch = c.status_patch(Some(2), &b);
        assert_eq!(patch["status"]["observedGeneration"], 2);
        assert_eq!(patch["status"]["disruptionsAllowed"], 1);
        let condition = &patch["status"]["conditions"][0];
        assert_eq!(condition["type"], "DisruptionAllowed");
        assert_eq!(condition["status"], "True");
        assert_eq!(condition["reason"], "SufficientPods");
    }
}
