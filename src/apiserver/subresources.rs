//! Subresources with their own kinds: `/scale` (autoscaling/v1 Scale) on the replicated
//! workloads, `pods/<name>/eviction` (policy/v1 Eviction, guarded by PodDisruptionBudgets) and
//! `serviceaccounts/<name>/token` (authentication.k8s.io/v1 TokenRequest).

use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use http::Method;
use serde_json::{json, Value};

use super::patch::{self, PatchType};
use super::request::ResourceRequest;
use super::response::json_response;
use super::sa_token::{self, TokenClaims};
use super::ApiServer;
use crate::api::meta;
use crate::api::resources::{self, Resource};
use crate::api::selectors::LabelSelector;
use crate::api::{ApiError, ApiResult, Cause};
use crate::registry::{DeleteOptions, ListOptions, Part};

/// Does this module serve `subresource` of `r`?
pub fn serves(r: &Resource, subresource: &str) -> bool {
    match subresource {
        "scale" => has_scale(r),
        "eviction" => r.group.is_empty() && r.kind == "Pod",
        "token" => r.group.is_empty() && r.kind == "ServiceAccount",
        _ => false,
    }
}

/// The kinds with a `/scale` subresource, as upstream.
pub fn has_scale(r: &Resource) -> bool {
    matches!(
        (r.group, r.kind),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet") | ("", "ReplicationController")
    )
}

/// The group, version and kind a subresource answers with (for discovery), when not its parent's.
pub fn response_kind(subresource: &str) -> Option<(&'static str, &'static str, &'static str)> {
    match subresource {
        "scale" => Some(("autoscaling", "v1", "Scale")),
        "eviction" => Some(("policy", "v1", "Eviction")),
        "token" => Some(("authentication.k8s.io", "v1", "TokenRequest")),
        _ => None,
    }
}

pub async fn handle(
    server: &Arc<ApiServer>,
    target: &ResourceRequest,
    dry_run: bool,
    request: Request,
) -> ApiResult<Response> {
    let r = target.resource;
    let namespace = target.namespace.clone().unwrap_or_default();
    let Some(name) = target.name.clone() else {
        return Err(ApiError::no_route(request.uri().path()));
    };
    let sub = target.subresource.as_deref().unwrap_or("");
    let method = request.method().clone();
    match (sub, &method) {
        ("scale", &Method::GET) => {
            let obj = server.registry.get_value(r, &namespace, &name)?;
            Ok(json_response(200, &scale_of(r, &obj)))
        }
        ("scale", &Method::PUT) => {
            let body = super::rest::read_json(server, request).await?;
            let scaled =
                write_scale(server, r, &namespace, &name, dry_run, |_| Ok(body.clone())).await?;
            Ok(json_response(200, &scaled))
        }
        ("scale", &Method::PATCH) => {
            let content_type = header(&request, http::header::CONTENT_TYPE);
            let patch_type = match PatchType::from_content_type(&content_type)? {
                // Scale has no patch strategies of its own: a strategic patch is a merge patch.
                PatchType::Strategic => PatchType::Merge,
                other => other,
            };
            let body = super::rest::read_body(server, request).await?;
            let scaled = write_scale(server, r, &namespace, &name, dry_run, |current| {
                patch::apply(patch_type, current, &body)
            })
            .await?;
            Ok(json_response(200, &scaled))
        }
        ("eviction", &Method::POST) => {
            let body = super::rest::read_json(server, request).await?;
            evict(server, &namespace, &name, &body, dry_run).await
        }
        ("token", &Method::POST) => {
            let body = super::rest::read_json(server, request).await?;
            token_request(server, &namespace, &name, &body).await
        }
        (_, m) => Err(ApiError::method_not_allowed(
            m.as_str(),
            &format!("{}/{sub}", r.plural),
        )),
    }
}

fn header(request: &Request, name: http::header::HeaderName) -> String {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

// ---- scale ----

/// The autoscaling/v1 Scale view of a workload.
pub fn scale_of(r: &Resource, obj: &Value) -> Value {
    let m = &obj["metadata"];
    let mut metadata = json!({
        "name": m["name"],
        "namespace": m["namespace"],
        "uid": m["uid"],
        "resourceVersion": m["resourceVersion"],
        "creationTimestamp": m["creationTimestamp"],
    });
    if let Some(map) = metadata.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    let replicas = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let status_replicas = obj
        .pointer("/status/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let selector = selector_string(r, obj);
    let mut status = json!({"replicas": status_replicas});
    if !selector.is_empty() {
        status["selector"] = json!(selector);
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": replicas},
        "status": status,
    })
}

/// The workload's selector in label-selector string form (`app=web,tier in (a,b)`).
fn selector_string(r: &Resource, obj: &Value) -> String {
    let Some(selector) = obj.pointer("/spec/selector") else {
        return String::new();
    };
    if r.group.is_empty() {
        // A ReplicationController's selector is a plain map.
        return selector
            .as_object()
            .map(|m| {
                let mut pairs: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect();
                pairs.sort();
                pairs.join(",")
            })
            .unwrap_or_default();
    }
    let mut parts = Vec::new();
    for (k, v) in selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
    }
    for e in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or("");
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        match e["operator"].as_str().unwrap_or("") {
            "In" => parts.push(format!("{key} in ({})", values.join(","))),
            "NotIn" => parts.push(format!("{key} notin ({})", values.join(","))),
            "Exists" => parts.push(key.to_string()),
            "DoesNotExist" => parts.push(format!("!{key}")),
            _ => {}
        }
    }
    parts.sort();
    parts.join(",")
}

/// Writes the replicas of the Scale `new_scale` computes from the current one; a resourceVersion
/// in the new Scale is a precondition on the workload, as upstream's scale REST.
async fn write_scale(
    server: &ApiServer,
    r: &'static Resource,
    namespace: &str,
    name: &str,
    dry_run: bool,
    mut new_scale: impl FnMut(&Value) -> ApiResult<Value>,
) -> ApiResult<Value> {
    let updated = server
        .registry
        .update_with(r, namespace, name, Part::Main, dry_run, |old| {
            let scale = new_scale(&scale_of(r, old))?;
            let scale_name = scale.pointer("/metadata/name").and_then(Value::as_str);
            if scale_name.is_some_and(|n| n != name) {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    scale_name.unwrap_or("")
                )));
            }
            let replicas = match scale.pointer("/spec/replicas") {
                None | Some(Value::Null) => 0,
                Some(v) => v
                    .as_i64()
                    .ok_or_else(|| ApiError::bad_request("spec.replicas must be an integer"))?,
            };
            if !(0..=i64::from(i32::MAX)).contains(&replicas) {
                let cause = Cause {
                    reason: "FieldValueInvalid".into(),
                    message: format!(
                        "Invalid value: {replicas}: must be greater than or equal to 0"
                    ),
                    field: "spec.replicas".into(),
                };
                return Err(ApiError::invalid("autoscaling", "Scale", name, vec![cause]));
            }
            let mut new = old.clone();
            new["spec"]["replicas"] = json!(replicas);
            let precondition = scale
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            match new.get_mut("metadata").and_then(Value::as_object_mut) {
                Some(m) if !precondition.is_empty() => {
                    m.insert("resourceVersion".into(), json!(precondition));
                }
                Some(m) => {
                    m.remove("resourceVersion");
                }
                None => {}
            }
            Ok(new)
        })
        .await?;
    Ok(scale_of(r, &updated))
}

// ---- eviction ----

async fn evict(
    server: &ApiServer,
    namespace: &str,
    name: &str,
    body: &Value,
    dry_run: bool,
) -> ApiResult<Response> {
    let pods = resource("", "pods")?;
    let pdbs = resource("policy", "poddisruptionbudgets")?;
    let body_name = body
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "name in URL does not match name in Eviction object: {name} vs {body_name}"
        )));
    }
    let pod = server.registry.get_value(pods, namespace, name)?;
    let mut opts = delete_options(body)?;
    opts.dry_run |= dry_run;
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    // Finished and already-terminating pods disrupt nothing: delete without asking any budget.
    if !matches!(phase, "Succeeded" | "Failed") && !meta::is_deleting(&pod) {
        let page = server
            .registry
            .list(pdbs, Some(namespace), &ListOptions::default())?;
        let mut matching = Vec::new();
        for raw in &page.items {
            let pdb = crate::registry::generic::decode(raw)?;
            if budget_selects(&pdb, &pod) {
                matching.push(pdb);
            }
        }
        if matching.len() > 1 {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
        if let Some(pdb) = matching.pop() {
            check_budget(server, pods, pdbs, namespace, &pdb, &pod, dry_run).await?;
        }
    }
    if !opts.dry_run {
        mark_disruption_target(server, pods, namespace, name, &mut opts).await?;
    }
    server.registry.delete(pods, namespace, name, &opts).await?;
    Ok(json_response(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// Marks the pod `DisruptionTarget` before it is deleted, as upstream's eviction does, so that
/// whoever counts the pod's end (a Job's pod failure policy) can tell an eviction from a
/// failure. The delete's preconditions are checked here against the pod being marked, and a
/// resourceVersion precondition moves on to the marked pod: the mark is our own write.
async fn mark_disruption_target(
    server: &ApiServer,
    pods: &'static Resource,
    namespace: &str,
    name: &str,
    opts: &mut DeleteOptions,
) -> ApiResult<()> {
    let marked = server
        .registry
        .update_with(pods, namespace, name, Part::Status, false, |old| {
            if let Some(uid) = &opts.precondition_uid {
                let actual = meta::meta_str(old, "uid");
                if !uid.is_empty() && uid != actual {
                    return Err(ApiError::conflict("", "Pod", name, &format!(
                        "the UID in the precondition ({uid}) does not match the UID in record ({actual}). The object might have been deleted and then recreated"
                    )));
                }
            }
            if let Some(rv) = &opts.precondition_resource_version {
                let actual = meta::resource_version(old);
                if !rv.is_empty() && rv != actual {
                    return Err(ApiError::conflict("", "Pod", name, &format!(
                        "the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({actual}). The object might have been modified"
                    )));
                }
            }
            Ok(with_condition(
                old,
                "DisruptionTarget",
                "EvictionByEvictionAPI",
                "Eviction API: evicting",
                &meta::now_rfc3339(),
            ))
        })
        .await?;
    if opts.precondition_resource_version.is_some() {
        opts.precondition_resource_version = Some(meta::resource_version(&marked).to_string());
    }
    Ok(())
}

/// `pod` with the condition `type_` True for `reason`, as upstream's `UpdatePodCondition`: the
/// transition time moves only when the status changes.
fn with_condition(pod: &Value, type_: &str, reason: &str, message: &str, now: &str) -> Value {
    let mut new = pod.clone();
    let mut conditions: Vec<Value> = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let fresh = json!({"type": type_, "status": "True", "reason": reason, "message": message,
        "lastProbeTime": null, "lastTransitionTime": now});
    match conditions.iter_mut().find(|c| c["type"] == type_) {
        Some(existing) => {
            let since = if existing["status"] == "True" {
                existing["lastTransitionTime"].clone()
            } else {
                json!(now)
            };
            *existing = fresh;
            existing["lastTransitionTime"] = since;
        }
        None => conditions.push(fresh),
    }
    if !new["status"].is_object() {
        new["status"] = json!({});
    }
    new["status"]["conditions"] = Value::Array(conditions);
    new
}

fn resource(group: &str, plural: &str) -> ApiResult<&'static Resource> {
    let version = "v1";
    resources::find(group, version, plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))
}

fn delete_options(body: &Value) -> ApiResult<DeleteOptions> {
    let d = body.get("deleteOptions").cloned().unwrap_or(Value::Null);
    let mut opts = DeleteOptions {
        grace_period_seconds: d.get("gracePeriodSeconds").and_then(Value::as_i64),
        propagation_policy: d
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_string),
        ..Default::default()
    };
    if let Some(pre) = d.get("preconditions") {
        opts.precondition_uid = pre.get("uid").and_then(Value::as_str).map(str::to_string);
        opts.precondition_resource_version = pre
            .get("resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    opts.dry_run = d
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|v| v == "All"));
    Ok(opts)
}

/// Does the budget's selector select the pod? In policy/v1 an empty selector selects every pod
/// of the namespace; a missing one selects none.
fn budget_selects(pdb: &Value, pod: &Value) -> bool {
    let Some(selector) = pdb.pointer("/spec/selector").filter(|s| !s.is_null()) else {
        return false;
    };
    let parsed = serde_json::from_value(selector.clone())
        .ok()
        .and_then(|s| LabelSelector::from_label_selector(&s).ok());
    parsed.is_some_and(|s| s.matches(&meta::labels(pod)))
}

/// Healthy: running, ready and not being deleted (upstream counts the Ready condition).
fn is_healthy(pod: &Value) -> bool {
    !meta::is_deleting(pod)
        && pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// What a budget allows: (currently healthy, desired healthy, expected pods).
fn budget_numbers(pdb: &Value, selected: &[Value]) -> (i64, i64, i64) {
    let expected = selected.len() as i64;
    let healthy = selected.iter().filter(|p| is_healthy(p)).count() as i64;
    let scaled = |v: &Value, round_up: bool| -> i64 {
        match v {
            Value::Number(n) => n.as_i64().unwrap_or(0),
            Value::String(s) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
                Some(percent) if round_up => (percent * expected + 99) / 100,
                Some(percent) => percent * expected / 100,
                None => s.parse().unwrap_or(0),
            },
            _ => 0,
        }
    };
    let desired = if let Some(min) = pdb.pointer("/spec/minAvailable") {
        scaled(min, true)
    } else if let Some(max) = pdb.pointer("/spec/maxUnavailable") {
        (expected - scaled(max, true)).max(0)
    } else {
        0
    };
    (healthy, desired, expected)
}

/// Refuses with 429 when evicting `pod` would take the budget below what it must keep, else
/// records the disruption in the budget's status (upstream's eviction REST does both). The
/// numbers are computed here from the selected pods, so they are never staler than the
/// disruption controller's last pass.
async fn check_budget(
    server: &ApiServer,
    pods: &'static Resource,
    pdbs: &'static Resource,
    namespace: &str,
    pdb: &Value,
    pod: &Value,
    dry_run: bool,
) -> ApiResult<()> {
    let page = server
        .registry
        .list(pods, Some(namespace), &ListOptions::default())?;
    let mut selected = Vec::new();
    for raw in &page.items {
        let p = crate::registry::generic::decode(raw)?;
        let phase = p
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        if budget_selects(pdb, &p) && !matches!(phase, "Succeeded" | "Failed") {
            selected.push(p);
        }
    }
    let (_, desired, expected) = budget_numbers(pdb, &selected);
    let pdb_name = meta::name(pdb).to_string();
    let pod_name = meta::name(pod).to_string();
    // An unhealthy pod may go while the budget is met (unhealthyPodEvictionPolicy IfHealthyBudget).
    let pod_healthy = is_healthy(pod);
    let now = meta::now_rfc3339();
    // Decided inside the budget's guaranteed update: two evictions racing each other are
    // serialised by it, and the second sees the first in `disruptedPods` and counts that pod
    // as gone, as upstream's eviction does with its resourceVersion-checked status update.
    server
        .registry
        .update_with(pdbs, namespace, &pdb_name, Part::Status, dry_run, |old| {
            let mut disrupted = old
                .pointer("/status/disruptedPods")
                .cloned()
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({}));
            let healthy = selected
                .iter()
                .filter(|p| is_healthy(p) && disrupted.get(meta::name(p)).is_none())
                .count() as i64;
            let allowed = (healthy - desired).max(0);
            let permitted = if pod_healthy {
                allowed > 0
            } else {
                healthy >= desired
            };
            if !permitted {
                let mut err = ApiError::new(
                    429,
                    "TooManyRequests",
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                );
                err.causes = vec![Cause {
                    reason: "DisruptionBudget".into(),
                    message: format!(
                        "The disruption budget {pdb_name} needs {desired} healthy pods and has {healthy} currently"
                    ),
                    field: String::new(),
                }];
                return Err(err);
            }
            let left = if pod_healthy { allowed - 1 } else { allowed };
            let mut new = old.clone();
            let generation = old
                .pointer("/metadata/generation")
                .cloned()
                .unwrap_or(json!(1));
            if pod_healthy {
                disrupted[&pod_name] = json!(now);
            }
            new["status"] = json!({
                "observedGeneration": generation,
                "currentHealthy": healthy,
                "desiredHealthy": desired,
                "expectedPods": expected,
                "disruptionsAllowed": left,
                "disruptedPods": disrupted,
                "conditions": old.pointer("/status/conditions").cloned().unwrap_or(json!([])),
            });
            Ok(new)
        })
        .await?;
    Ok(())
}

// ---- token ----

async fn token_request(
    server: &ApiServer,
    namespace: &str,
    name: &str,
    body: &Value,
) -> ApiResult<Response> {
    let Some(signer) = server.token_signer() else {
        return Err(ApiError::unavailable(
            "service account tokens are not configured on this server",
        ));
    };
    let accounts = resource("", "serviceaccounts")?;
    let account = server.registry.get_value(accounts, namespace, name)?;
    let uid = meta::meta_str(&account, "uid").to_string();
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let expiration = spec
        .get("expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(sa_token::DEFAULT_EXPIRATION_SECONDS);
    if expiration < sa_token::MIN_EXPIRATION_SECONDS {
        let cause = Cause {
            reason: "FieldValueInvalid".into(),
            message: format!(
                "Invalid value: {expiration}: may not specify a duration less than 10 minutes"
            ),
            field: "spec.expirationSeconds".into(),
        };
        return Err(ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            name,
            vec![cause],
        ));
    }
    let audiences: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| vec![sa_token::ISSUER.to_string()]);
    let bound_pod = match spec.get("boundObjectRef").filter(|b| !b.is_null()) {
        Some(bound) => crate::apiserver::token_review::bound_pod(server, namespace, bound)?,
        None => None,
    };
    let now = jiff::Timestamp::now().as_second();
    let claims = TokenClaims {
        bound_pod: bound_pod.clone(),
        namespace: namespace.to_string(),
        name: name.to_string(),
        uid,
        audiences: audiences.clone(),
        issued_at: now,
        expiration_seconds: expiration,
    };
    let token = signer.sign(&claims).map_err(ApiError::internal)?;
    let expires = jiff::Timestamp::from_second(now + expiration)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let mut answer_spec = json!({"audiences": audiences, "expirationSeconds": expiration});
    if let Some(bound) = spec.get("boundObjectRef").filter(|b| !b.is_null()) {
        answer_spec["boundObjectRef"] = bound.clone();
        if let Some((_, uid)) = &bound_pod {
            answer_spec["boundObjectRef"]["uid"] = json!(uid);
        }
    }
    Ok(json_response(
        201,
        &json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": meta::now_rfc3339()},
            "spec": answer_spec,
            "status": {"token": token, "expirationTimestamp": expires},
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_shows_spec_and_status_replicas_and_the_selector_string() {
        let deploy = resources::find("apps", "v1", "deployments").unwrap();
        let obj = json!({"metadata": {"name": "d", "namespace": "ns", "uid": "u", "resourceVersion": "7"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}},
            "status": {"replicas": 2}});
        let scale = scale_of(deploy, &obj);
        assert_eq!(scale["apiVersion"], "autoscaling/v1");
        assert_eq!(scale["spec"]["replicas"], 3);
        assert_eq!(scale["status"]["replicas"], 2);
        assert_eq!(scale["status"]["selector"], "app=web,tier in (a,b)");
        assert_eq!(scale["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn budgets_count_ready_pods_against_min_available_and_max_unavailable() {
        let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        let pods = vec![ready.clone(), ready, not_ready];
        let min = json!({"spec": {"minAvailable": 2}});
        assert_eq!(budget_numbers(&min, &pods), (2, 2, 3));
        let max = json!({"spec": {"maxUnavailable": "34%"}});
        assert_eq!(
            budget_numbers(&max, &pods),
            (2, 1, 3),
            "34% of 3 rounds up to 2"
        );
        let percent_min = json!({"spec": {"minAvailable": "50%"}});
        assert_eq!(budget_numbers(&percent_min, &pods).1, 2);
    }

    #[test]
    fn an_eviction_mark_adds_disruption_target_and_keeps_the_other_conditions() {
        let pod = json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "t0"}]}});
        let marked = with_condition(&pod, "DisruptionTarget", "EvictionByEvictionAPI", "m", "t1");
        let conditions = marked["status"]["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[0]["type"], "Ready");
        assert_eq!(conditions[1]["type"], "DisruptionTarget");
        assert_eq!(conditions[1]["status"], "True");
        assert_eq!(conditions[1]["reason"], "EvictionByEvictionAPI");
        assert_eq!(conditions[1]["lastTransitionTime"], "t1");
        let again = with_condition(
            &marked,
            "DisruptionTarget",
            "EvictionByEvictionAPI",
            "m",
            "t2",
        );
        assert_eq!(
            again["status"]["conditions"][1]["lastTransitionTime"], "t1",
            "a condition that stays True keeps its transition time"
        );
        let bare = with_condition(&json!({"metadata": {}}), "DisruptionTarget", "r", "m", "t");
        assert_eq!(bare["status"]["conditions"][0]["reason"], "r");
    }

    #[test]
    fn an_empty_budget_selector_selects_every_pod_and_a_missing_one_none() {
        let pod = json!({"metadata": {"labels": {"app": "a"}}});
        assert!(budget_selects(&json!({"spec": {"selector": {}}}), &pod));
        assert!(!budget_selects(&json!({"spec": {}}), &pod));
        assert!(budget_selects(
            &json!({"spec": {"selector": {"matchLabels": {"app": "a"}}}}),
            &pod
        ));
    }
}
