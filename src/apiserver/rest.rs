//! REST verbs on resources: get, list, create, update, patch, delete, deletecollection, and the
//! `status`/`finalize` subresources. Watch lives in `watch.rs`.

use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use serde_json::Value;

use super::patch::{self, PatchType};
use super::query::Query;
use super::request::ResourceRequest;
use super::response::{error_response, json_response, list_body, raw_json_response};
use super::{watch, ApiServer};
use crate::api::status::success_status;
use crate::api::{ApiError, ApiResult};
use crate::registry::generic::check_field_selector;
use crate::registry::{DeleteOptions, Deleted, ListOptions, Part};

pub async fn handle(
    server: &Arc<ApiServer>,
    target: ResourceRequest,
    request: Request,
) -> Response {
    match dispatch(server, target, request).await {
        Ok(response) => response,
        Err(e) => error_response(&e),
    }
}

async fn dispatch(
    server: &Arc<ApiServer>,
    target: ResourceRequest,
    request: Request,
) -> ApiResult<Response> {
    let query = Query::parse(request.uri().query())?;
    if let Some(sel) = &query.field_selector {
        check_field_selector(target.resource, sel)?;
    }
    let r = target.resource;
    let namespace = target.namespace.clone().unwrap_or_default();
    let method = request.method().clone();
    let part = match target.subresource.as_deref() {
        None => Part::Main,
        Some("status") if r.has_status => Part::Status,
        Some("finalize") if r.plural == "namespaces" && r.group.is_empty() => Part::Finalize,
        Some(other) => {
            return Err(ApiError::no_route(&format!(
                "{} subresource {other}",
                r.plural
            )));
        }
    };
    if part == Part::Finalize && method != Method::PUT {
        return Err(ApiError::method_not_allowed(
            method.as_str(),
            "namespaces/finalize",
        ));
    }
    let registry = &server.registry;
    match (&method, target.name.as_deref()) {
        (&Method::GET, Some(name)) if !query.watch => {
            let raw = registry.get(r, &namespace, name)?;
            Ok(raw_json_response(200, raw))
        }
        (&Method::GET, _) if query.watch => watch::serve(server, &target, &query),
        (&Method::GET, None) => {
            let opts = list_options(&query);
            let page = registry.list(r, target.namespace.as_deref(), &opts)?;
            let body = list_body(
                &r.api_version(),
                &r.list_kind(),
                page.revision,
                page.continue_token.as_deref(),
                &page.items,
            );
            Ok(raw_json_response(200, body))
        }
        (&Method::POST, None) => {
            if r.namespaced && target.namespace.is_none() {
                return Err(ApiError::method_not_allowed(
                    "POST",
                    &format!("{} across all namespaces", r.plural),
                ));
            }
            let body = read_json(server, request).await?;
            let created = registry.create(r, &namespace, body, query.dry_run).await?;
            Ok(json_response(201, &created))
        }
        (&Method::PUT, Some(name)) => {
            let body = read_json(server, request).await?;
            let updated = registry
                .update(r, &namespace, name, body, part, query.dry_run)
                .await?;
            Ok(json_response(200, &updated))
        }
        (&Method::PATCH, Some(name)) => {
            let content_type = header(&request, http::header::CONTENT_TYPE);
            let patch_type = PatchType::from_content_type(&content_type)?;
            let patch_body = read_body(server, request).await?;
            let updated = registry
                .update_with(r, &namespace, name, part, query.dry_run, |old| {
                    patch::apply(patch_type, old, &patch_body)
                })
                .await?;
            Ok(json_response(200, &updated))
        }
        (&Method::DELETE, Some(name)) => {
            let opts = delete_options(server, &query, request).await?;
            match registry.delete(r, &namespace, name, &opts).await? {
                Deleted::Now(obj) if r.group.is_empty() && r.kind == "Pod" => {
                    Ok(json_response(200, &obj))
                }
                Deleted::Now(obj) => {
                    let uid = crate::api::meta::meta_str(&obj, "uid");
                    Ok(json_response(
                        200,
                        &success_status(r.group, r.plural, name, uid),
                    ))
                }
                Deleted::Marked(obj) => Ok(json_response(202, &obj)),
            }
        }
        (&Method::DELETE, None) => {
            if r.namespaced && target.namespace.is_none() {
                return Err(ApiError::method_not_allowed(
                    "DELETE",
                    &format!("{} across all namespaces", r.plural),
                ));
            }
            let opts = delete_options(server, &query, request).await?;
            let page = registry.list(r, target.namespace.as_deref(), &list_options(&query))?;
            let mut deleted = Vec::new();
            for raw in page.items {
                let obj = crate::registry::generic::decode(&raw)?;
                let name = crate::api::meta::name(&obj).to_string();
                match registry.delete(r, &namespace, &name, &opts).await {
                    Ok(Deleted::Now(obj)) | Ok(Deleted::Marked(obj)) => {
                        deleted.push(Bytes::from(obj.to_string()))
                    }
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            let revision = registry.store().revision();
            Ok(raw_json_response(
                200,
                list_body(&r.api_version(), &r.list_kind(), revision, None, &deleted),
            ))
        }
        (m, _) => Err(ApiError::method_not_allowed(
            m.as_str(),
            &format!("{}", r.plural),
        )),
    }
}

fn list_options(query: &Query) -> ListOptions {
    ListOptions {
        label_selector: query.label_selector.clone(),
        field_selector: query.field_selector.clone(),
        limit: query.limit,
        continue_token: query.continue_token.clone(),
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

/// Reads the body, refusing bodies over the configured limit with 413.
async fn read_body(server: &ApiServer, request: Request) -> ApiResult<Bytes> {
    let limit = server.max_body_bytes;
    if let Some(len) = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
    {
        if len.parse::<usize>().is_ok_and(|n| n > limit) {
            return Err(ApiError::too_large(limit));
        }
    }
    let limited = http_body_util::Limited::new(request.into_body(), limit);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::too_large(limit))
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "reading the request body: {e}"
        ))),
    }
}

/// Reads a JSON object body; other content types are 415.
async fn read_json(server: &ApiServer, request: Request) -> ApiResult<Value> {
    let content_type = header(&request, http::header::CONTENT_TYPE);
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if !(media.is_empty() || media == "application/json" || media == "*/*") {
        return Err(ApiError::unsupported_media_type(&media));
    }
    let body = read_body(server, request).await?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(value)
}

/// DeleteOptions from the query and an optional JSON body (the body wins, as upstream).
async fn delete_options(
    server: &ApiServer,
    query: &Query,
    request: Request,
) -> ApiResult<DeleteOptions> {
    let mut opts = DeleteOptions {
        grace_period_seconds: query.grace_period_seconds,
        propagation_policy: query.propagation_policy.clone(),
        dry_run: query.dry_run,
        ..Default::default()
    };
    let body = read_body(server, request).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(opts);
    }
    let v: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!("the DeleteOptions body is not valid JSON: {e}"))
    })?;
    if let Some(grace) = v.get("gracePeriodSeconds").filter(|g| !g.is_null()) {
        opts.grace_period_seconds = Some(
            grace
                .as_i64()
                .ok_or_else(|| ApiError::bad_request("gracePeriodSeconds must be an integer"))?,
        );
    }
    if let Some(policy) = v.get("propagationPolicy").and_then(Value::as_str) {
        opts.propagation_policy = Some(policy.to_string());
    }
    if v.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
        opts.propagation_policy = Some("Orphan".into());
    }
    if let Some(pre) = v.get("preconditions") {
        opts.precondition_uid = pre.get("uid").and_then(Value::as_str).map(str::to_string);
        opts.precondition_resource_version = pre
            .get("resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    if let Some(dry) = v.get("dryRun").and_then(Value::as_array) {
        for d in dry {
            match d.as_str() {
                Some("All") => opts.dry_run = true,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unsupported dryRun value {other:?}"
                    )))
                }
            }
        }
    }
    Ok(opts)
}
