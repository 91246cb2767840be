//! Is an aggregated API usable? Upstream's availability checks in order: the Service exists,
//! has the port, has ready endpoints, and the backend answers its discovery path
//! (`/apis/<group>/<version>`) with a 2xx within five seconds. The answer becomes the
//! APIService's `Available` condition; the discovery document feeds berth's own discovery.

use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::backend::{self, Unresolved};
use super::{Aggregator, Remote};
use crate::api::{meta, ApiResult};
use crate::registry::generic::Part;
use crate::registry::Registry;

/// Upstream's discovery-check timeout.
const TIMEOUT: Duration = Duration::from_secs(5);
/// A discovery document larger than this is not believed.
const MAX_DISCOVERY_BYTES: usize = 4 << 20;

pub struct Outcome {
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
    /// The backend's APIResourceList, when the check reached it.
    pub discovery: Option<Value>,
}

fn unavailable(reason: &'static str, message: String) -> Outcome {
    Outcome {
        status: "False",
        reason,
        message,
        discovery: None,
    }
}

pub async fn check(aggregator: &Aggregator, remote: &Remote) -> Outcome {
    let (service, namespace) = (&remote.service, &remote.namespace);
    let addr = match backend::resolve(&aggregator.registry, namespace, service, remote.port) {
        Ok(addr) => addr,
        Err(Unresolved::ServiceNotFound) => {
            return unavailable(
                "ServiceNotFound",
                format!("service/{service} in {namespace:?} is not present"),
            )
        }
        Err(Unresolved::NoSuchPort) => {
            return unavailable(
                "ServicePortError",
                format!(
                    "service/{service} in {namespace:?} is not listening on port {}",
                    remote.port
                ),
            )
        }
        Err(Unresolved::NoEndpointSlices) => {
            return unavailable(
                "EndpointsNotFound",
                format!("cannot find endpointslices for service/{service} in {namespace:?}"),
            )
        }
        Err(Unresolved::NoReadyEndpoints(port_name)) => {
            return unavailable(
                "MissingEndpoints",
                format!(
                    "endpointslices for service/{service} in {namespace:?} have no addresses with port name {port_name:?}"
                ),
            )
        }
        Err(Unresolved::Access(e)) => {
            return Outcome {
                status: "Unknown",
                reason: "ServiceAccessError",
                message: format!("service/{service} in {namespace:?} cannot be checked due to: {e}"),
                discovery: None,
            }
        }
    };
    let path = format!("/apis/{}/{}", remote.group, remote.version);
    let url = format!("https://{addr}{path}");
    match tokio::time::timeout(TIMEOUT, fetch_discovery(aggregator, addr, remote, &path)).await {
        Ok(Ok(doc)) => Outcome {
            status: "True",
            reason: "Passed",
            message: "all checks passed".into(),
            discovery: Some(doc),
        },
        Ok(Err(e)) => unavailable(
            "FailedDiscoveryCheck",
            format!("failing or missing response from {url}: {e}"),
        ),
        Err(_) => unavailable(
            "FailedDiscoveryCheck",
            format!("failing or missing response from {url}: context deadline exceeded"),
        ),
    }
}

/// GETs the discovery path as upstream does: TLS unverified (a status check, not data), the
/// front-proxy certificate presented, as `system:kube-aggregator` in `system:masters`.
async fn fetch_discovery(
    aggregator: &Aggregator,
    addr: std::net::SocketAddr,
    remote: &Remote,
    path: &str,
) -> Result<Value, String> {
    let tls = backend::tls_config(&aggregator.identity, &[], true).map_err(|e| e.to_string())?;
    let mut sender = backend::connect(addr, &remote.server_name(), tls)
        .await
        .map_err(|e| e.to_string())?;
    let request = http::Request::get(path)
        .header(http::header::HOST, remote.server_name())
        .header(http::header::ACCEPT, "application/json")
        .header("X-Remote-User", "system:kube-aggregator")
        .header("X-Remote-Group", "system:masters")
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!(
            "bad status from https://{addr}{path}: {}",
            status.as_u16()
        ));
    }
    let body = http_body_util::Limited::new(response.into_body(), MAX_DISCOVERY_BYTES)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let doc: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    match doc["kind"].as_str() {
        Some("APIResourceList") => Ok(doc),
        _ => Err("the response is not an APIResourceList".into()),
    }
}

/// Sets the `Available` condition, moving `lastTransitionTime` only when the status changes.
pub async fn write_condition(
    registry: &Registry,
    name: &str,
    (status, reason, message): &(String, String, String),
) -> ApiResult<()> {
    let Some(resource) = super::api_services() else {
        return Ok(());
    };
    registry
        .update_with(resource, "", name, Part::Status, false, |old| {
            let mut new = old.clone();
            set_condition(&mut new, status, reason, message);
            Ok(new)
        })
        .await
        .map(|_| ())
}

fn set_condition(object: &mut Value, status: &str, reason: &str, message: &str) {
    if !object["status"].is_object() {
        object["status"] = json!({});
    }
    if !object["status"]["conditions"].is_array() {
        object["status"]["conditions"] = json!([]);
    }
    let Some(conditions) = object["status"]["conditions"].as_array_mut() else {
        return;
    };
    let previous = conditions.iter().position(|c| c["type"] == "Available");
    let transition = match previous.map(|i| &conditions[i]) {
        Some(old) if old["status"] == status => old["lastTransitionTime"].clone(),
        _ => json!(meta::now_rfc3339()),
    };
    let condition = json!({
        "type": "Available",
        "status": status,
        "lastTransitionTime": transition,
        "reason": reason,
        "message": message,
    });
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transition_time_moves_only_when_the_status_changes() {
        let mut object = json!({"status": {"conditions": [{"type": "Available", "status": "False",
            "lastTransitionTime": "2020-01-01T00:00:00Z", "reason": "MissingEndpoints", "message": "m"}]}});
        set_condition(&mut object, "False", "ServiceNotFound", "gone");
        let c = &object["status"]["conditions"][0];
        assert_eq!(c["lastTransitionTime"], "2020-01-01T00:00:00Z");
        assert_eq!(c["reason"], "ServiceNotFound");
        set_condition(&mut object, "True", "Passed", "all checks passed");
        let c = &object["status"]["conditions"][0];
        assert_ne!(c["lastTransitionTime"], "2020-01-01T00:00:00Z");
        assert_eq!(c["status"], "True");
        assert_eq!(
            object["status"]["conditions"].as_array().map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn a_missing_status_gets_one_available_condition() {
        let mut object = json!({"metadata": {"name": "v1.x.io"}});
        set_condition(&mut object, "False", "ServiceNotFound", "m");
        assert_eq!(object["status"]["conditions"][0]["type"], "Available");
    }
}
