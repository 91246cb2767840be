//! REST verbs on resources: get, list, create, update, patch, delete, deletecollection, and the
//! `status`/`finalize` subresources. Watch lives in `watch.rs`.

use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use serde_json::Value;

use super::managed::{self, Manager};
use super::patch::{self, PatchType};
use super::query::{FieldValidation, Query};
use super::request::ResourceRequest;
use super::response::{error_response, json_response, list_body, raw_json_response};
use super::table::{Render, Verb};
use super::{apply, watch, ApiServer};
use crate::api::body::{self, BodyFormat};
use crate::api::status::success_status;
use crate::api::{ApiError, ApiResult};
use crate::registry::generic::check_field_selector;
use crate::registry::{DeleteOptions, Deleted, ListOptions, Normalized, Part};

pub(super) async fn handle(
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
    if let Some(stored) = crate::api::conversion::storage_of(r) {
        if method != Method::GET {
            // Boxed: the conversion calls back into `handle` for the storage version.
            return Ok(Box::pin(super::converted::write(server, target, stored, request)).await);
        }
    }
    if r.group.is_empty() && r.plural == "pods" && target.subresource.as_deref() == Some("binding")
    {
        let name = target.name.clone().unwrap_or_default();
        if method != Method::POST {
            return Err(ApiError::method_not_allowed(
                method.as_str(),
                "pods/binding",
            ));
        }
        let body = read_json(server, request).await?;
        return bind_pod(server, &namespace, &name, &body, query.dry_run).await;
    }
    if target.subresource.as_deref() == Some("scale") && crate::crd::hooks::scale_of(r).is_some() {
        return custom_scale(server, &target, &query, request).await;
    }
    if let Some(stream) = pod_stream(r, target.subresource.as_deref()) {
        let name = target.name.clone().unwrap_or_default();
        return super::kubelet_proxy::serve(server, stream, &namespace, &name, request).await;
    }
    if let Some(sub) = target.subresource.as_deref() {
        if super::subresources::serves(r, sub) {
            return super::subresources::handle(server, &target, query.dry_run, request).await;
        }
    }
    let part = match target.subresource.as_deref() {
        None => Part::Main,
        Some("status") if r.has_status => Part::Status,
        Some("finalize") if r.plural == "namespaces" && r.group.is_empty() => Part::Finalize,
        Some("approval") if r.plural == "certificatesigningrequests" => Part::Approval,
        Some("ephemeralcontainers") if r.plural == "pods" && r.group.is_empty() => {
            Part::EphemeralContainers
        }
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
    // A write forwarded from a view of `r` (`converted`) is validated and recorded as the view's.
    let served_as = request
        .extensions()
        .get::<super::converted::ServedAs>()
        .map(|a| a.0);
    let user_agent = header(&request, http::header::USER_AGENT);
    let manager = || Manager::of_request(query.field_manager.as_deref(), &user_agent, part);
    match (&method, target.name.as_deref()) {
        (&Method::GET, Some(name)) if !query.watch => {
            let raw = registry.get(r, &namespace, name)?;
            render(&request, Verb::Get)?.object(r, raw)
        }
        (&Method::GET, _) if query.watch => {
            watch::serve(server, &target, &query, render(&request, Verb::Watch)?)
        }
        (&Method::GET, None) => {
            let opts = list_options(&query);
            let page = registry.list(r, target.namespace.as_deref(), &opts)?;
            let render = render(&request, Verb::List)?;
            render.list(
                r,
                page.revision,
                page.continue_token.as_deref(),
                &page.items,
            )
        }
        (&Method::POST, None) => {
            if r.namespaced && target.namespace.is_none() {
                return Err(ApiError::method_not_allowed(
                    "POST",
                    &format!("{} across all namespaces", r.plural),
                ));
            }
            let started = std::time::Instant::now();
            let body = read_json(server, request).await?;
            let read = started.elapsed();
            let (body, warnings) = check_fields(r, body, query.field_validation)?;
            let mut body = body.written_as(served_as);
            managed::record_normalized_update(r, part, None, &mut body, &manager()?);
            let prepared = started.elapsed();
            let created = registry
                .create_normalized(r, &namespace, body, query.dry_run)
                .await?;
            let stored = started.elapsed();
            let response = with_warnings(raw_json_response(201, created.into_json()), &warnings);
            tracing::debug!(target: "berth::apiserver::timing", read_us = read.as_micros(),
                prepared_us = prepared.as_micros(), created_us = stored.as_micros(),
                encoded_us = started.elapsed().as_micros(), "create answered");
            Ok(response)
        }
        (&Method::PUT, Some(name)) => {
            let body = read_json(server, request).await?;
            let (body, warnings) = check_fields(r, body, query.field_validation)?;
            let body = body.written_as(served_as);
            let manager = manager()?;
            let updated = registry
                .update_recorded(
                    r,
                    &namespace,
                    name,
                    body,
                    part,
                    query.dry_run,
                    |old, new| {
                        managed::record_normalized_update(r, part, Some(old), new, &manager);
                        Ok(())
                    },
                )
                .await?;
            Ok(with_warnings(json_response(200, &updated), &warnings))
        }
        (&Method::PATCH, Some(name)) => {
            let content_type = header(&request, http::header::CONTENT_TYPE);
            let patch_type = PatchType::from_content_type(&content_type)?;
            if patch_type == PatchType::Strategic && crate::crd::hooks::refuses_strategic_merge(r) {
                return Err(ApiError::unsupported_media_type(&patch::CUSTOM_PATCH_TYPES));
            }
            let patch_body = read_body(server, request).await?;
            if patch_type == PatchType::Apply {
                let patch_body = patch::apply_body(&content_type, patch_body)?;
                let manager = manager()?;
                return server_side_apply(
                    server,
                    &target,
                    part,
                    &query,
                    manager,
                    &patch_body,
                    served_as,
                )
                .await;
            }
            refuse_force_on_non_apply(&query)?;
            let manager = manager()?;
            let mut warnings = Vec::new();
            let updated = registry
                .update_with_normalized(r, &namespace, name, part, query.dry_run, |old| {
                    let patched = patch::apply(patch_type, old, &patch_body)?;
                    let (patched, unknown) = check_fields(r, patched, query.field_validation)?;
                    let mut patched = patched.written_as(served_as);
                    warnings = unknown;
                    managed::record_normalized_update(r, part, Some(old), &mut patched, &manager);
                    Ok(patched)
                })
                .await?;
            Ok(with_warnings(json_response(200, &updated), &warnings))
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

/// PATCH with an apply configuration: merges it into the object, or creates the object from it
/// when there is none yet (as upstream does). `applied_as`: the configuration is in the version
/// of that resource, served by conversion of `target`'s.
async fn server_side_apply(
    server: &ApiServer,
    target: &ResourceRequest,
    part: Part,
    query: &Query,
    manager: Manager,
    body: &[u8],
    applied_as: Option<&'static crate::api::resources::Resource>,
) -> ApiResult<Response> {
    let r = target.resource;
    let namespace = target.namespace.clone().unwrap_or_default();
    let name = target.name.clone().unwrap_or_default();
    if query.field_manager.is_none() {
        return Err(managed::invalid_options(crate::api::Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value: is required for apply patch".into(),
            field: "fieldManager".into(),
        }));
    }
    let config_resource = applied_as.unwrap_or(r);
    let config = apply::decode_config(config_resource, &name, body)?;
    let (_, warnings) = check_fields(config_resource, config.clone(), query.field_validation)?;
    let apply_to = |live: Option<&Value>| match applied_as {
        Some(served) => super::converted_apply::apply(
            served,
            r,
            part,
            live,
            &config,
            &manager,
            query.force.unwrap_or(false),
        ),
        None => apply::apply(
            r,
            part,
            live,
            &config,
            &manager,
            query.force.unwrap_or(false),
        ),
    };
    let normalized = |obj: Value| Ok(Normalized::new(r, obj)?.written_as(applied_as));
    let updated = server
        .registry
        .update_with_normalized(r, &namespace, &name, part, query.dry_run, |old| {
            normalized(apply_to(Some(old))?)
        })
        .await;
    match updated {
        Ok(updated) => Ok(with_warnings(json_response(200, &updated), &warnings)),
        Err(e) if e.code == 404 && part == Part::Main => {
            let new = normalized(apply_to(None)?)?;
            let created = server
                .registry
                .create_normalized(r, &namespace, new, query.dry_run)
                .await?;
            Ok(with_warnings(
                raw_json_response(201, created.into_json()),
                &warnings,
            ))
        }
        Err(e) => Err(e),
    }
}

/// `pods/<name>/binding`: the scheduler's decision, written once into `spec.nodeName`.
async fn bind_pod(
    server: &ApiServer,
    namespace: &str,
    name: &str,
    body: &Value,
    dry_run: bool,
) -> ApiResult<Response> {
    let node = body
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if node.is_empty() {
        let causes = vec![crate::api::Cause::required("target.name")];
        return Err(ApiError::invalid("", "Binding", name, causes));
    }
    let pods = target_pods();
    server
        .registry
        .update_with(pods, namespace, name, Part::Main, dry_run, |old| {
            let current = old
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !current.is_empty() {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    name,
                    &format!("pod {name} is already assigned to node \"{current}\""),
                ));
            }
            if crate::api::meta::is_deleting(old) {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    name,
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            let mut new = old.clone();
            new["spec"]["nodeName"] = Value::String(node.clone());
            Ok(new)
        })
        .await?;
    // PodScheduled is part of status: set it through the status path.
    let now = crate::api::meta::now_rfc3339();
    server
        .registry
        .update_with(pods, namespace, name, Part::Status, dry_run, |old| {
            let mut new = old.clone();
            let mut conditions: Vec<Value> = old
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .map(|c| c.iter().filter(|c| c["type"] != "PodScheduled").cloned().collect())
                .unwrap_or_default();
            conditions.push(serde_json::json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}));
            new["status"]["conditions"] = Value::Array(conditions);
            Ok(new)
        })
        .await?;
    Ok(json_response(
        201,
        &serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// `/scale` of a custom resource whose CRD declares it.
async fn custom_scale(
    server: &Arc<ApiServer>,
    target: &ResourceRequest,
    query: &Query,
    request: Request,
) -> ApiResult<Response> {
    use crate::crd::hooks::ScaleWrite;
    let method = request.method().clone();
    let name = target.name.clone().unwrap_or_default();
    let namespace = target.namespace.clone().unwrap_or_default();
    let write = match method {
        Method::GET => None,
        Method::PUT => Some(ScaleWrite::Put(read_json(server, request).await?)),
        Method::PATCH => {
            let content_type = header(&request, http::header::CONTENT_TYPE);
            let body = read_body(server, request).await?;
            match PatchType::from_content_type(&content_type)? {
                PatchType::Json => Some(ScaleWrite::JsonPatch(body)),
                // A Scale has no list fields, so a strategic merge is a plain merge.
                PatchType::Merge | PatchType::Strategic => Some(ScaleWrite::MergePatch(body)),
                PatchType::Apply => {
                    return Err(ApiError::unsupported_media_type(&patch::PATCH_TYPES[..3]))
                }
            }
        }
        other => return Err(ApiError::method_not_allowed(other.as_str(), "scale")),
    };
    let scale = crate::crd::hooks::scale(
        &server.registry,
        target.resource,
        &namespace,
        &name,
        write,
        query.dry_run,
    )
    .await?;
    Ok(json_response(200, &scale))
}

fn target_pods() -> &'static crate::api::resources::Resource {
    crate::api::resources::find("", "v1", "pods").expect("pods are always served")
}

/// `force` belongs to server-side apply: upstream refuses it on any other patch, even
/// `force=false`, with 422 on PatchOptions.
pub(super) fn refuse_force_on_non_apply(query: &Query) -> ApiResult<()> {
    match query.force {
        Some(_) => Err(managed::invalid_options(crate::api::Cause::forbidden(
            "force",
            "may not be specified for non-apply patch",
        ))),
        None => Ok(()),
    }
}

/// Decodes `body` once for the whole write and applies the request's fieldValidation: Strict
/// fails on unknown fields, Warn returns them as warnings, Ignore drops them silently (the
/// decoder drops them in every case).
pub(super) fn check_fields(
    r: &'static crate::api::resources::Resource,
    body: Value,
    mode: FieldValidation,
) -> ApiResult<(Normalized, Vec<String>)> {
    if mode == FieldValidation::Ignore {
        return Ok((Normalized::new(r, body)?, Vec::new()));
    }
    let (normalized, unknown) = Normalized::with_unknown_fields(r, body)?;
    let unknown: Vec<String> = unknown
        .into_iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if mode == FieldValidation::Strict && !unknown.is_empty() {
        return Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            unknown.join(", ")
        )));
    }
    Ok((normalized, unknown))
}

/// Adds one `Warning: 299 - "..."` header per warning, as upstream does.
pub(super) fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(value) = http::HeaderValue::from_str(&text) {
            response.headers_mut().append(http::header::WARNING, value);
        }
    }
    response
}

/// How to answer a GET: plain JSON, a Table or metadata only, as the client's Accept asks.
fn render(request: &Request, verb: Verb) -> ApiResult<Render> {
    Render::negotiate(request.headers(), request.uri().query(), verb)
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
pub(super) async fn read_body(server: &ApiServer, request: Request) -> ApiResult<Bytes> {
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

/// Reads an object body (JSON, YAML or protobuf); other content types are 415.
pub(super) async fn read_json(server: &ApiServer, request: Request) -> ApiResult<Value> {
    let format = BodyFormat::from_content_type(&header(&request, http::header::CONTENT_TYPE))?;
    let body = read_body(server, request).await?;
    body::decode_object(format, &body)
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
    let format = BodyFormat::from_content_type(&header(&request, http::header::CONTENT_TYPE))?;
    let body = read_body(server, request).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(opts);
    }
    let v = body::decode_object(format, &body)?;
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

/// The streaming pod subresource a request is for, if any.
fn pod_stream(
    r: &crate::api::resources::Resource,
    subresource: Option<&str>,
) -> Option<super::kubelet_proxy::Subresource> {
    use super::kubelet_proxy::Subresource;
    if !(r.group.is_empty() && r.plural == "pods") {
        return None;
    }
    match subresource? {
        "log" => Some(Subresource::Log),
        "exec" => Some(Subresource::Exec),
        "attach" => Some(Subresource::Attach),
        "portforward" => Some(Subresource::PortForward),
        _ => None,
    }
}
