//! Writes through a resource served by conversion (`api::conversion`), such as the autoscaling/v1
//! HorizontalPodAutoscaler: the request becomes one on the storage version, and the answer is
//! turned back into the requested version. Reads need none of this: the registry converts what
//! it reads for the resource it is asked about.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method};
use http_body_util::BodyExt;
use serde_json::Value;

use super::patch::{self, PatchType};
use super::query::Query;
use super::request::ResourceRequest;
use super::response::error_response;
use super::{rest, ApiServer};
use crate::api::conversion::{to_served, to_stored};
use crate::api::resources::Resource;
use crate::api::{meta, ApiError, ApiResult};
use crate::registry::kinds;

/// A patch computed against one read is retried this often when someone else wrote in between.
const PATCH_ATTEMPTS: usize = 5;

pub async fn write(
    server: &Arc<ApiServer>,
    target: ResourceRequest,
    stored: &'static Resource,
    request: Request,
) -> Response {
    match forward(server, target, stored, request).await {
        Ok(response) => response,
        Err(e) => error_response(&e),
    }
}

async fn forward(
    server: &Arc<ApiServer>,
    target: ResourceRequest,
    stored: &'static Resource,
    request: Request,
) -> ApiResult<Response> {
    let served = target.resource;
    let on_stored = ResourceRequest {
        resource: stored,
        ..target.clone()
    };
    let current = || -> Option<Value> {
        let name = target.name.as_deref()?;
        let namespace = target.namespace.as_deref().unwrap_or_default();
        server.registry.get_value(stored, namespace, name).ok()
    };
    let method = request.method().clone();
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    // The storage resource validates the write and records its manager as `served`'s.
    let mut request = request;
    request.extensions_mut().insert(ServedAs(served));
    let response = match method {
        Method::POST | Method::PUT => {
            let (parts, body) = request.into_parts();
            let mut body = read_object(server, &parts, body).await?;
            // A body of the storage version (or any other) is no object of this one.
            kinds::check_type_meta(served, &mut body)?;
            // Checked in the version the client wrote: the conversion keeps only known fields.
            let validation = Query::parse(parts.uri.query())?.field_validation;
            let (_, warnings) = rest::check_fields(served, body.clone(), validation)?;
            let converted = to_stored(served, body, current().as_ref());
            let request = with_json_body(parts, &converted, "application/json");
            rest::with_warnings(rest::handle(server, on_stored, request).await, &warnings)
        }
        // Applied in the served version (`converted_apply`), so that managedFields name the
        // fields as its manager wrote them.
        Method::PATCH if PatchType::from_content_type(&content_type)? == PatchType::Apply => {
            rest::handle(server, on_stored, request).await
        }
        Method::PATCH => {
            let patch_type = PatchType::from_content_type(&content_type)?;
            rest::refuse_force_on_non_apply(&Query::parse(request.uri().query())?)?;
            let (parts, body) = request.into_parts();
            let patch_body =
                rest::read_body(server, Request::from_parts(parts.clone(), body)).await?;
            return patch_as_update(server, &target, on_stored, parts, patch_type, &patch_body)
                .await;
        }
        _ => rest::handle(server, on_stored, request).await,
    };
    Ok(served_response(served, stored, response).await)
}

/// Marks a write forwarded to the stored resource with the resource it was made to.
#[derive(Clone, Copy)]
pub struct ServedAs(pub &'static Resource);

/// A patch in the served version: applied to the served view of the stored object, then written
/// as an update pinned to the resourceVersion it was computed from (retried on a race). The
/// update keeps the patch request's query and headers (field manager, dry run, user agent).
async fn patch_as_update(
    server: &Arc<ApiServer>,
    target: &ResourceRequest,
    on_stored: ResourceRequest,
    parts: http::request::Parts,
    patch_type: PatchType,
    patch_body: &[u8],
) -> ApiResult<Response> {
    let served = target.resource;
    let name = target.name.as_deref().unwrap_or_default();
    let namespace = target.namespace.as_deref().unwrap_or_default();
    let mut response = None;
    for _ in 0..PATCH_ATTEMPTS {
        let current = server
            .registry
            .get_value(on_stored.resource, namespace, name)?;
        let view = to_served(served, current.clone());
        let mut patched = patch::apply(patch_type, &view, patch_body)?;
        kinds::check_type_meta(served, &mut patched)?;
        // A patch that names no resourceVersion of its own may be re-applied after a race.
        let retry_on_conflict = meta::resource_version(&patched) == meta::resource_version(&view);
        let converted = to_stored(served, patched, Some(&current));
        let mut update = parts.clone();
        update.method = Method::PUT;
        let request = with_json_body(update, &converted, "application/json");
        let answer = rest::handle(server, on_stored.clone(), request).await;
        let conflict = answer.status() == http::StatusCode::CONFLICT;
        response = Some(answer);
        if !(conflict && retry_on_conflict) {
            break;
        }
    }
    match response {
        Some(r) => Ok(served_response(served, on_stored.resource, r).await),
        None => Err(ApiError::internal("no patch attempt was made")),
    }
}

async fn read_object(
    server: &ApiServer,
    parts: &http::request::Parts,
    body: Body,
) -> ApiResult<Value> {
    let mut probe = Request::new(body);
    *probe.headers_mut() = parts.headers.clone();
    rest::read_json(server, probe).await
}

fn with_json_body(
    mut parts: http::request::Parts,
    body: &Value,
    content_type: &'static str,
) -> Request {
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Request::from_parts(parts, Body::from(body.to_string()))
}

/// The storage version's answer in the served version; a Status names the served resource.
async fn served_response(served: &Resource, stored: &Resource, response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(collected) = body.collect().await else {
        return error_response(&ApiError::internal("reading the response"));
    };
    let bytes = collected.to_bytes();
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind == served.kind {
        value = to_served(served, value);
    } else if kind == "Status" {
        name_served_resource(&mut value, served, stored);
    } else if kind == served.list_kind() {
        value["apiVersion"] = Value::from(served.api_version());
        if let Some(items) = value.get_mut("items").and_then(Value::as_array_mut) {
            for item in items.iter_mut() {
                *item = to_served(served, item.take());
            }
        }
    } else {
        return Response::from_parts(parts, Body::from(bytes));
    }
    parts.headers.remove(CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(value.to_string()))
}

/// A Status from the storage resource as the served one would give it: a view in another group
/// (events.k8s.io Events over the core ones) answers `events.events.k8s.io "x" not found`, as
/// upstream's shared store names the resource of the request. An Invalid keeps the stored kind
/// (`Event "x" is invalid`): upstream names the kind of its internal object there, which is the
/// core Event.
fn name_served_resource(status: &mut Value, served: &Resource, stored: &Resource) {
    if served.group == stored.group {
        return;
    }
    let Some(details) = status.get_mut("details").and_then(Value::as_object_mut) else {
        return;
    };
    if details.get("kind").and_then(Value::as_str) != Some(stored.plural) {
        return;
    }
    // The core group is left out of error details.
    if details.get("group").and_then(Value::as_str).unwrap_or("") == stored.group {
        details.insert("group".into(), Value::from(served.group));
    }
    let qualified = |r: &Resource| match r.group {
        "" => format!("{} \"", r.plural),
        group => format!("{}.{group} \"", r.plural),
    };
    if let Some(message) = status.get("message").and_then(Value::as_str) {
        let message = message.replacen(&qualified(stored), &qualified(served), 1);
        status["message"] = Value::from(message);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::resources::find;

    #[test]
    fn a_status_about_core_events_names_the_events_k8s_io_resource_but_not_its_kind() {
        let served = find("events.k8s.io", "v1", "events").unwrap();
        let stored = find("", "v1", "events").unwrap();
        let mut status = json!({"kind": "Status", "reason": "AlreadyExists",
            "message": "events \"e\" already exists",
            "details": {"name": "e", "kind": "events"}});
        name_served_resource(&mut status, served, stored);
        assert_eq!(
            status["message"],
            "events.events.k8s.io \"e\" already exists"
        );
        assert_eq!(status["details"]["group"], "events.k8s.io");
        let mut invalid = json!({"kind": "Status", "reason": "Invalid",
            "message": "Event \"e\" is invalid: x", "details": {"name": "e", "kind": "Event"}});
        let unchanged = invalid.clone();
        name_served_resource(&mut invalid, served, stored);
        assert_eq!(invalid, unchanged);
    }
}
