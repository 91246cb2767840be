//! The HorizontalPodAutoscaler controller (autoscaling/v2): every [`SYNC_PERIOD`] each
//! autoscaler reads its target's `/scale`, the selected pods and their `metrics.k8s.io` usage,
//! asks [`replicas`] what each resource metric wants, [`behavior`] what may be done about it,
//! writes the new count through `/scale`, and reports status, conditions and events as
//! upstream does.

pub mod behavior;
pub mod replicas;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::autoscaling::v2::{HorizontalPodAutoscaler, MetricSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::watcher;
use serde_json::{json, Value};

use super::common;
use behavior::{Normalized, Recommendation, ScaleEvent};
use replicas::{PodFacts, Target};

/// Upstream's default `--horizontal-pod-autoscaler-sync-period`.
pub const SYNC_PERIOD: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
}

/// What the controller remembers between syncs of one autoscaler (by uid): recent
/// recommendations for stabilization and its own scale changes for the rate policies.
#[derive(Debug, Default)]
struct History {
    recommendations: Vec<Recommendation>,
    events: Vec<ScaleEvent>,
}

struct Context {
    client: kube::Client,
    recorder: Recorder,
    history: Mutex<HashMap<String, History>>,
}

/// Runs the controller until the watch ends.
pub async fn run(client: kube::Client) {
    let hpas: Api<HorizontalPodAutoscaler> = Api::all(client.clone());
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), Reporter::from("horizontal-pod-autoscaler")),
        client,
        history: Mutex::new(HashMap::new()),
    });
    Controller::new(hpas, watcher::Config::default())
        .run(reconcile, error_policy, context)
        .for_each(|_| async {})
        .await;
}

fn error_policy(_: Arc<HorizontalPodAutoscaler>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "horizontal pod autoscaler sync failed; retrying");
    Action::requeue(SYNC_PERIOD)
}

async fn reconcile(
    hpa: Arc<HorizontalPodAutoscaler>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let (Some(name), Some(namespace)) = (&hpa.metadata.name, &hpa.metadata.namespace) else {
        return Ok(Action::await_change());
    };
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(context.client.clone(), namespace);
    // Level-triggered: the cached copy may be behind; act on the stored one.
    let Some(fresh) = api.get_opt(name).await? else {
        if let (Some(uid), Ok(mut history)) = (&hpa.metadata.uid, context.history.lock()) {
            history.remove(uid);
        }
        return Ok(Action::await_change());
    };
    if fresh.metadata.deletion_timestamp.is_none() {
        sync(&context, &api, &fresh).await?;
    }
    Ok(Action::requeue(SYNC_PERIOD))
}

/// One condition as it goes into the status.
struct Condition {
    type_: &'static str,
    status: bool,
    reason: String,
    message: String,
}

fn condition(
    type_: &'static str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
) -> Condition {
    Condition {
        type_,
        status,
        reason: reason.to_string(),
        message: message.into(),
    }
}

/// What one sync found out, for the status.
#[derive(Default)]
struct Outcome {
    current: i32,
    desired: i32,
    metrics: Vec<Value>,
    conditions: Vec<Condition>,
    scaled_at: Option<Timestamp>,
}

async fn sync(
    context: &Context,
    api: &Api<HorizontalPodAutoscaler>,
    hpa: &HorizontalPodAutoscaler,
) -> Result<(), Error> {
    let now = Timestamp::now();
    let namespace = hpa.metadata.namespace.clone().unwrap_or_default();
    let spec = hpa.spec.clone().unwrap_or_default();
    let reference =
        common::object_reference("autoscaling/v2", "HorizontalPodAutoscaler", &hpa.metadata);
    let warn = |reason: &'static str, note: String| {
        common::publish(
            &context.recorder,
            &reference,
            EventType::Warning,
            reason,
            note,
        )
    };
    let mut outcome = Outcome::default();
    let target = &spec.scale_target_ref;
    let api_version = target.api_version.clone().unwrap_or_else(|| "v1".into());

    // The target's scale.
    let scales = crate::api::resources::find_kind(&api_version, &target.kind).map(|r| {
        let resource = ApiResource {
            group: r.group.to_string(),
            version: r.version.to_string(),
            api_version: r.api_version(),
            kind: r.kind.to_string(),
            plural: r.plural.to_string(),
        };
        Api::<DynamicObject>::namespaced_with(context.client.clone(), &namespace, &resource)
    });
    let scale = match &scales {
        Some(scales) => scales
            .get_scale(&target.name)
            .await
            .map_err(|e| e.to_string()),
        None => Err(format!(
            "no matches for kind \"{}\" in group \"{}\"",
            target.kind,
            api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
        )),
    };
    let scale = match scale {
        Ok(scale) => scale,
        Err(e) => {
            let message =
                format!("the HPA controller was unable to get the target's current scale: {e}");
            warn("FailedGetScale", e).await;
            outcome.current = hpa
                .status
                .as_ref()
                .and_then(|s| s.current_replicas)
                .unwrap_or(0);
            outcome.desired = hpa.status.as_ref().map(|s| s.desired_replicas).unwrap_or(0);
            outcome
                .conditions
                .push(condition("AbleToScale", false, "FailedGetScale", message));
            return write_status(api, hpa, outcome, now).await;
        }
    };
    outcome.conditions.push(condition(
        "AbleToScale",
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale",
    ));
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let selector = scale
        .status
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    outcome.current = current;
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;

    let mut rescale_reason = String::new();
    let desired = if current == 0 && min != 0 {
        outcome.conditions.push(condition(
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
        ));
        0
    } else if current > max {
        rescale_reason = "Current number of replicas above Spec.MaxReplicas".into();
        max
    } else if current < min {
        rescale_reason = "Current number of replicas below Spec.MinReplicas".into();
        min
    } else {
        let metrics = metric_specs(&spec.metrics);
        let computed = compute(context, &namespace, &selector, current, &metrics, now).await;
        outcome.metrics = computed.statuses;
        let Some((recommended, metric_name)) = computed.recommendation else {
            let first = computed.errors.first().cloned().unwrap_or_default();
            let reason = computed.error_reason.unwrap_or("FailedGetResourceMetric");
            warn(reason, first.clone()).await;
            warn(
                "FailedComputeMetricsReplicas",
                format!(
                    "invalid metrics ({} invalid out of {}), first error is: {first}",
                    computed.errors.len(),
                    metrics.len()
                ),
            )
            .await;
            outcome.desired = current;
            outcome.conditions.push(condition(
                "ScalingActive",
                false,
                reason,
                format!("the HPA was unable to compute the replica count: {first}"),
            ));
            return write_status(api, hpa, outcome, now).await;
        };
        outcome.conditions.push(condition(
            "ScalingActive",
            true,
            "ValidMetricFound",
            format!(
                "the HPA was able to successfully calculate a replica count from {metric_name}"
            ),
        ));
        let normalized = normalize(context, hpa, now, current, recommended, min, max);
        // AbleToScale now says whether stabilization held the move back.
        let (ok, reason, message) = normalized.able_to_scale;
        outcome.conditions[0] = condition("AbleToScale", ok, reason, message);
        let (limited, reason, message) = normalized.scaling_limited;
        outcome
            .conditions
            .push(condition("ScalingLimited", limited, reason, message));
        rescale_reason = match normalized.replicas > current {
            true => format!("{metric_name} above target"),
            false => "All metrics below target".into(),
        };
        normalized.replicas
    };
    outcome.desired = desired;

    if desired != current && !(current == 0 && min != 0) {
        let patch = Patch::Merge(json!({"spec": {"replicas": desired}}));
        let updated = match &scales {
            Some(scales) => scales
                .patch_scale(&target.name, &PatchParams::default(), &patch)
                .await
                .map(|_| ()),
            None => Ok(()),
        };
        if let Err(e) = updated {
            warn(
                "FailedRescale",
                format!("New size: {desired}; reason: {rescale_reason}; error: {e}"),
            )
            .await;
            outcome.conditions[0] = condition(
                "AbleToScale",
                false,
                "FailedUpdateScale",
                format!("the HPA controller was unable to update the target scale: {e}"),
            );
            return write_status(api, hpa, outcome, now).await;
        }
        outcome.conditions[0] = condition(
            "AbleToScale",
            true,
            "SucceededRescale",
            format!("the HPA controller was able to update the target scale to {desired}"),
        );
        common::publish(
            &context.recorder,
            &reference,
            EventType::Normal,
            "SuccessfulRescale",
            format!("New size: {desired}; reason: {rescale_reason}"),
        )
        .await;
        outcome.scaled_at = Some(now);
        if spec.behavior.is_some() {
            remember(context, hpa, |h| {
                h.events.push(ScaleEvent {
                    at: now,
                    change: desired - current,
                })
            });
        }
    }
    write_status(api, hpa, outcome, now).await
}

/// The autoscaler's metrics; none means upstream's default, 80 % CPU utilization.
/// Pods and Object metrics come from custom.metrics.k8s.io and External ones from
/// external.metrics.k8s.io, which berth does not serve (no metrics adapter runs): the reason
/// and error upstream's controller reports when those APIs are missing.
fn unserved_metric(metric: &MetricSpec, type_: &str) -> (&'static str, String) {
    let missing = "the server could not find the requested resource";
    match type_ {
        "Pods" => {
            let name = metric.pods.as_ref().map_or("", |p| p.metric.name.as_str());
            (
                "FailedGetPodsMetric",
                format!("unable to get metric {name}: unable to fetch metrics from custom metrics API: {missing}"),
            )
        }
        "Object" => {
            let (name, kind, object) = metric.object.as_ref().map_or(("", "", ""), |o| {
                (
                    o.metric.name.as_str(),
                    o.described_object.kind.as_str(),
                    o.described_object.name.as_str(),
                )
            });
            (
                "FailedGetObjectMetric",
                format!("unable to get metric {name}: {kind} on {object}/unable to fetch metrics from custom metrics API: {missing}"),
            )
        }
        "External" => {
            let name = metric
                .external
                .as_ref()
                .map_or("", |e| e.metric.name.as_str());
            (
                "FailedGetExternalMetric",
                format!("unable to get external metric {name}: unable to fetch metrics from external metrics API: {missing}"),
            )
        }
        other => (
            "InvalidMetricSourceType",
            format!("invalid metric source type \"{other}\""),
        ),
    }
}

fn metric_specs(metrics: &Option<Vec<MetricSpec>>) -> Vec<MetricSpec> {
    match metrics {
        Some(m) if !m.is_empty() => m.clone(),
        _ => vec![serde_json::from_value(json!({
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}
        }))
        .unwrap_or_default()],
    }
}

fn remember(context: &Context, hpa: &HorizontalPodAutoscaler, f: impl FnOnce(&mut History)) {
    let Some(uid) = &hpa.metadata.uid else {
        return;
    };
    if let Ok(mut all) = context.history.lock() {
        f(all.entry(uid.clone()).or_default());
    }
}

/// Stabilizes and limits `recommended`, remembering it for the next syncs.
fn normalize(
    context: &Context,
    hpa: &HorizontalPodAutoscaler,
    now: Timestamp,
    current: i32,
    recommended: i32,
    min: i32,
    max: i32,
) -> Normalized {
    let behavior = hpa.spec.as_ref().and_then(|s| s.behavior.as_ref());
    let keep = behavior::history_needed(behavior);
    let mut normalized = None;
    remember(context, hpa, |history| {
        history.recommendations.retain(|r| r.at > now - keep);
        history.events.retain(|e| e.at > now - keep);
        normalized = Some(match behavior {
            None => behavior::without_behavior(
                now,
                &history.recommendations,
                current,
                recommended,
                min,
                max,
            ),
            Some(b) => behavior::with_behavior(
                now,
                b,
                &history.recommendations,
                &history.events,
                current,
                recommended,
                min,
                max,
            ),
        });
        history.recommendations.push(Recommendation {
            at: now,
            replicas: recommended,
        });
    });
    normalized
        .unwrap_or_else(|| behavior::without_behavior(now, &[], current, recommended, min, max))
}

/// What the metrics say together.
#[derive(Default)]
struct Computed {
    /// The largest count any metric asks for, and that metric's name.
    recommendation: Option<(i32, String)>,
    statuses: Vec<Value>,
    errors: Vec<String>,
    error_reason: Option<&'static str>,
}

/// One pod's metrics: per-container usage (milli-units) by resource name, and the sample's time.
struct PodSample {
    containers: BTreeMap<String, BTreeMap<String, i64>>,
    at: Timestamp,
    window: SignedDuration,
}

async fn compute(
    context: &Context,
    namespace: &str,
    selector: &str,
    current: i32,
    metrics: &[MetricSpec],
    now: Timestamp,
) -> Computed {
    let mut computed = Computed::default();
    let fail = |computed: &mut Computed, reason: &'static str, error: String| {
        computed.errors.push(error);
        computed.error_reason.get_or_insert(reason);
    };
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), namespace);
    let params = ListParams::default().labels(selector);
    let pods = match pods.list(&params).await {
        Ok(list) => list.items,
        Err(e) => {
            fail(
                &mut computed,
                "FailedGetResourceMetric",
                format!("unable to get pods: {e}"),
            );
            return computed;
        }
    };
    let samples = match pod_metrics(context, namespace, &params).await {
        Ok(samples) => samples,
        Err(e) => {
            fail(
                &mut computed,
                "FailedGetResourceMetric",
                format!("unable to get metrics for resource: unable to fetch metrics from resource metrics API: {e}"),
            );
            return computed;
        }
    };
    for metric in metrics {
        let (resource, container, target) = match (
            metric.type_.as_str(),
            &metric.resource,
            &metric.container_resource,
        ) {
            ("Resource", Some(r), _) => (r.name.clone(), None, r.target.clone()),
            ("ContainerResource", _, Some(c)) => {
                (c.name.clone(), Some(c.container.clone()), c.target.clone())
            }
            (other, _, _) => {
                let (reason, error) = unserved_metric(metric, other);
                fail(&mut computed, reason, error);
                continue;
            }
        };
        let goal = match (
            target.type_.as_str(),
            target.average_utilization,
            &target.average_value,
        ) {
            ("Utilization", Some(percent), _) => Target::Utilization(percent),
            ("AverageValue", _, Some(value)) => {
                match crate::agent::spec::parse_quantity(&value.0) {
                    Some(v) => Target::AverageValue((v * 1000.0).round() as i64),
                    None => {
                        fail(
                            &mut computed,
                            "FailedGetResourceMetric",
                            format!("invalid target value {:?}", value.0),
                        );
                        continue;
                    }
                }
            }
            (kind, _, _) => {
                fail(
                    &mut computed,
                    "FailedGetResourceMetric",
                    format!("invalid resource metric source: {kind} target without its value"),
                );
                continue;
            }
        };
        let in_container = |name: &str| container.as_deref().is_none_or(|c| c == name);
        let usage: replicas::Usage = samples
            .iter()
            .filter_map(|(pod, sample)| {
                let values: Vec<i64> = sample
                    .containers
                    .iter()
                    .filter(|(name, _)| in_container(name))
                    .filter_map(|(_, usage)| usage.get(&resource).copied())
                    .collect();
                (!values.is_empty()).then(|| (pod.clone(), values.iter().sum()))
            })
            .collect();
        let facts: Vec<PodFacts> = pods
            .iter()
            .map(|pod| {
                pod_facts(
                    pod,
                    &resource,
                    container.as_deref(),
                    samples.get(&pod_name(pod)),
                    now,
                )
            })
            .collect();
        let recommendation = match replicas::recommend(
            &resource,
            current,
            goal,
            &facts,
            &usage,
            replicas::TOLERANCE,
        ) {
            Ok(r) => r,
            Err(e) => {
                let prefix = match container {
                    Some(_) => "failed to get container resource metric value",
                    None => "failed to get",
                };
                fail(
                    &mut computed,
                    "FailedGetResourceMetric",
                    format!("{prefix} {resource} utilization: {e}"),
                );
                continue;
            }
        };
        let mut current_value =
            json!({"averageValue": milli_quantity(recommendation.average_milli)});
        if let Some(utilization) = recommendation.utilization {
            current_value["averageUtilization"] = json!(utilization);
        }
        let name = match goal {
            Target::Utilization(_) => {
                format!("{resource} resource utilization (percentage of request)")
            }
            Target::AverageValue(_) => format!("{resource} resource"),
        };
        let status = match &container {
            None => {
                json!({"type": "Resource", "resource": {"name": resource, "current": current_value}})
            }
            Some(c) => {
                json!({"type": "ContainerResource", "containerResource": {"name": resource, "container": c, "current": current_value}})
            }
        };
        computed.statuses.push(status);
        if computed
            .recommendation
            .as_ref()
            .is_none_or(|(r, _)| recommendation.replicas > *r)
        {
            computed.recommendation = Some((recommendation.replicas, name));
        }
    }
    computed
}

fn pod_name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// The calculator's view of a pod for `resource` (in `container` only, if given).
fn pod_facts(
    pod: &Pod,
    resource: &str,
    container: Option<&str>,
    sample: Option<&PodSample>,
    now: Timestamp,
) -> PodFacts {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("");
    let ignored = pod.metadata.deletion_timestamp.is_some() || phase == "Failed";
    let mut unready = phase == "Pending";
    if let (Some(sample), "cpu", false) = (sample, resource, unready) {
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| Some((c.status == "True", c.last_transition_time.as_ref()?.0)));
        let started = status.and_then(|s| s.start_time.as_ref()).map(|t| t.0);
        unready = replicas::cpu_sample_unready(started, ready, sample.at, sample.window, now);
    }
    let request_milli = pod
        .spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .filter(|c| container.is_none_or(|name| name == c.name))
                .map(|c| {
                    let request = c.resources.as_ref()?.requests.as_ref()?.get(resource)?;
                    crate::agent::spec::parse_quantity(&request.0)
                        .map(|v| (v * 1000.0).round() as i64)
                })
                .sum::<Option<i64>>()
        })
        .unwrap_or(None);
    PodFacts {
        name: pod_name(pod),
        ignored,
        unready,
        request_milli,
    }
}

/// PodMetrics of the selected pods, by pod name.
async fn pod_metrics(
    context: &Context,
    namespace: &str,
    params: &ListParams,
) -> Result<HashMap<String, PodSample>, kube::Error> {
    let resource = ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    };
    let api = Api::<DynamicObject>::namespaced_with(context.client.clone(), namespace, &resource);
    let list = api.list(params).await?;
    Ok(list
        .items
        .iter()
        .filter_map(|item| Some((item.metadata.name.clone()?, pod_sample(&item.data)?)))
        .collect())
}

fn pod_sample(data: &Value) -> Option<PodSample> {
    let at: Timestamp = data["timestamp"].as_str()?.parse().ok()?;
    let window = data["window"]
        .as_str()
        .and_then(|w| w.strip_suffix('s')?.parse::<f64>().ok())
        .and_then(|s| SignedDuration::try_from_secs_f64(s).ok())
        .unwrap_or(SignedDuration::ZERO);
    let containers = data["containers"]
        .as_array()?
        .iter()
        .filter_map(|c| {
            let usage = c["usage"]
                .as_object()?
                .iter()
                .filter_map(|(resource, q)| {
                    let value = crate::agent::spec::parse_quantity(q.as_str()?)?;
                    Some((resource.clone(), (value * 1000.0).round() as i64))
                })
                .collect();
            Some((c["name"].as_str()?.to_string(), usage))
        })
        .collect();
    Some(PodSample {
        containers,
        at,
        window,
    })
}

/// A milli-unit value as a canonical quantity: whole units when exact (`104857600`), else
/// milli-units (`250m`).
pub fn milli_quantity(milli: i64) -> String {
    match milli % 1000 {
        0 => (milli / 1000).to_string(),
        _ => format!("{milli}m"),
    }
}

/// Writes the status when it changed, keeping each condition's transition time while its
/// status stays the same.
async fn write_status(
    api: &Api<HorizontalPodAutoscaler>,
    hpa: &HorizontalPodAutoscaler,
    outcome: Outcome,
    now: Timestamp,
) -> Result<(), Error> {
    let old = hpa.status.clone().unwrap_or_default();
    let old_conditions = old.conditions.unwrap_or_default();
    let mut conditions: Vec<Value> = Vec::new();
    for c in &outcome.conditions {
        let status = if c.status { "True" } else { "False" };
        let since = old_conditions
            .iter()
            .find(|o| o.type_ == c.type_ && o.status == status)
            .and_then(|o| o.last_transition_time.as_ref().map(|t| t.0))
            .unwrap_or(now);
        conditions.push(json!({
            "type": c.type_,
            "status": status,
            "lastTransitionTime": since.to_string(),
            "reason": c.reason,
            "message": c.message,
        }));
    }
    // Conditions this sync did not reach keep their last word (as upstream's setCondition).
    for o in &old_conditions {
        if !outcome.conditions.iter().any(|c| c.type_ == o.type_) {
            conditions.push(serde_json::to_value(o).unwrap_or(Value::Null));
        }
    }
    let last_scale = outcome
        .scaled_at
        .map(|t| json!(t.to_string()))
        .or_else(|| old.last_scale_time.map(|t| json!(t.0.to_string())))
        .unwrap_or(Value::Null);
    let status = json!({"status": {
        "observedGeneration": hpa.metadata.generation,
        "currentReplicas": outcome.current,
        "desiredReplicas": outcome.desired,
        "currentMetrics": if outcome.metrics.is_empty() { Value::Null } else { json!(outcome.metrics) },
        "conditions": conditions,
        "lastScaleTime": last_scale,
    }});
    if !status_changed(hpa, &status) {
        return Ok(());
    }
    let name = hpa.metadata.name.clone().unwrap_or_default();
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

/// Whether writing `patch` would change more than the conditions' times.
fn status_changed(hpa: &HorizontalPodAutoscaler, patch: &Value) -> bool {
    common::status_differs(hpa, patch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milli_values_print_as_canonical_quantities() {
        assert_eq!(milli_quantity(250), "250m");
        assert_eq!(milli_quantity(104_857_600_000), "104857600");
        assert_eq!(milli_quantity(0), "0");
    }

    #[test]
    fn pod_metrics_items_become_samples_in_milli_units() {
        let item = json!({
            "timestamp": "2026-01-01T00:00:15Z",
            "window": "15.02s",
            "containers": [{"name": "app", "usage": {"cpu": "500000000n", "memory": "2048Ki"}}]
        });
        let sample = pod_sample(&item).unwrap();
        assert_eq!(sample.containers["app"]["cpu"], 500);
        assert_eq!(sample.containers["app"]["memory"], 2048 * 1024 * 1000);
        assert_eq!(sample.window, SignedDuration::from_millis(15_020));
    }

    #[test]
    fn requests_sum_over_containers_and_a_missing_one_voids_them() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m"}}},
                {"name": "b", "resources": {"requests": {"cpu": "0.2"}}}
            ]},
            "status": {"phase": "Running"}
        }))
        .unwrap();
        let now = Timestamp::now();
        assert_eq!(
            pod_facts(&pod, "cpu", None, None, now).request_milli,
            Some(300)
        );
        assert_eq!(
            pod_facts(&pod, "cpu", Some("b"), None, now).request_milli,
            Some(200)
        );
        assert_eq!(
            pod_facts(&pod, "memory", None, None, now).request_milli,
            None
        );
        assert!(!pod_facts(&pod, "cpu", None, None, now).ignored);
    }

    #[test]
    fn no_metrics_means_eighty_percent_cpu() {
        let metrics = metric_specs(&None);
        let resource = metrics[0].resource.as_ref().unwrap();
        assert_eq!(resource.name, "cpu");
        assert_eq!(resource.target.average_utilization, Some(80));
    }

    #[test]
    fn metrics_berth_does_not_serve_fail_with_upstreams_reasons() {
        let spec =
            |value: serde_json::Value| -> MetricSpec { serde_json::from_value(value).unwrap() };
        let pods = spec(
            json!({"type": "Pods", "pods": {"metric": {"name": "requests"},
            "target": {"type": "AverageValue", "averageValue": "10"}}}),
        );
        let (reason, error) = unserved_metric(&pods, "Pods");
        assert_eq!(reason, "FailedGetPodsMetric");
        assert!(
            error.starts_with("unable to get metric requests: "),
            "{error}"
        );
        let object = spec(
            json!({"type": "Object", "object": {"metric": {"name": "hits"},
            "describedObject": {"kind": "Ingress", "name": "web", "apiVersion": "networking.k8s.io/v1"},
            "target": {"type": "Value", "value": "10"}}}),
        );
        assert_eq!(
            unserved_metric(&object, "Object").0,
            "FailedGetObjectMetric"
        );
        let external = spec(
            json!({"type": "External", "external": {"metric": {"name": "queue"},
            "target": {"type": "Value", "value": "10"}}}),
        );
        assert_eq!(
            unserved_metric(&external, "External").0,
            "FailedGetExternalMetric"
        );
    }
}
