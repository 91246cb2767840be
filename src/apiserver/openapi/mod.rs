//! `/openapi/v2` and `/openapi/v3`: the schemas and operations kubectl downloads before `create`,
//! `apply` and `explain`, and checks for server-side field validation.
//!
//! Documents are built on first request, serialised and kept as bytes until a minute passes
//! without a request for them ([`expiring`]); the per-group-version v3 documents are addressed by
//! the hash of their bytes so clients may cache them forever (rebuilt bytes hash the same).

mod expiring;
mod operations;
mod v2;
mod v2_proto;
mod v3;

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::Response;
use http::{header, Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha512};

use crate::api::resources;
use crate::api::ApiError;
use crate::apiserver::response::{error_response, text_response};
use expiring::Expiring;

/// How long built documents are kept after their last request.
#[cfg(not(test))]
const DOCUMENT_TTL: Duration = Duration::from_secs(60);
#[cfg(test)]
const DOCUMENT_TTL: Duration = Duration::from_millis(50);

/// A serialised document and its ETag (upper-case hex SHA-512 of the bytes, as upstream).
struct Served {
    body: Bytes,
    etag: String,
}

impl Served {
    fn new(doc: &Value) -> Served {
        Served::from_bytes(doc.to_string().into_bytes())
    }

    fn from_bytes(bytes: Vec<u8>) -> Served {
        // Boxed so the body keeps no spare capacity from the growing serialiser: documents are big.
        let body = Bytes::from(bytes.into_boxed_slice());
        let etag = hex::encode_upper(Sha512::digest(&body));
        Served { body, etag }
    }
}

/// The content types of `/openapi/v2` besides JSON.
const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
const V2_PROTOBUF_DEPRECATED: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    /// gnostic's protobuf (only `/openapi/v2` offers it).
    Protobuf,
}

/// Every v3 group-version document, keyed as the index names them (`api/v1`, `apis/apps/v1`).
struct V3Documents {
    by_path: Vec<(String, Served)>,
    index: Served,
}

fn v3_documents() -> Arc<V3Documents> {
    static DOCS: Expiring<V3Documents> = Expiring::new(DOCUMENT_TTL);
    DOCS.get_or_build(|| {
        // Held across every document, so the schema catalog is built once for all of them.
        let _catalog = crate::api::schemas::catalog();
        let mut by_path = vec![("api/v1".to_string(), Served::new(&v3::document("", "v1")))];
        for (group, versions) in resources::builtin_groups() {
            for version in versions {
                by_path.push((
                    format!("apis/{group}/{version}"),
                    Served::new(&v3::document(group, version)),
                ));
            }
        }
        let index = v3_index(&by_path, &[]);
        V3Documents { by_path, index }
    })
}

fn v3_index(builtin: &[(String, Served)], custom: &[(String, Served)]) -> Served {
    let paths: serde_json::Map<String, Value> = builtin
        .iter()
        .chain(custom)
        .map(|(path, served)| {
            let url = format!("/openapi/v3/{path}?hash={}", served.etag);
            (path.clone(), json!({"serverRelativeURL": url}))
        })
        .collect();
    Served::new(&json!({"paths": paths}))
}

/// The documents of group-versions CRDs serve: built per request, as they change at runtime.
fn custom_v3_documents() -> Vec<(String, Served)> {
    let _catalog = crate::api::schemas::catalog();
    crate::crd::openapi::custom_group_versions()
        .into_iter()
        .map(|(group, version)| {
            (
                format!("apis/{group}/{version}"),
                Served::new(&v3::document(group, version)),
            )
        })
        .collect()
}

fn v2_document(format: Format) -> Arc<Served> {
    static JSON: Expiring<Served> = Expiring::new(DOCUMENT_TTL);
    static PROTOBUF: Expiring<Served> = Expiring::new(DOCUMENT_TTL);
    match format {
        Format::Json => JSON.get_or_build(|| Served::new(&v2::document(&[]))),
        Format::Protobuf => {
            PROTOBUF.get_or_build(|| Served::from_bytes(v2_proto::encode(&v2::document(&[]))))
        }
    }
}

/// `info` of every document.
fn info() -> Value {
    json!({"title": "Kubernetes", "version": crate::apiserver::discovery::version()["gitVersion"]})
}

/// Is `path` one of ours?
pub fn serves(path: &str) -> bool {
    path == "/openapi/v2" || path == "/openapi/v3" || path.starts_with("/openapi/v3/")
}

/// Answer a request for a path [`serves`] accepts.
pub fn handle(request: &Request) -> Response {
    let path = request.uri().path();
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return error_response(&ApiError::method_not_allowed(
            request.method().as_str(),
            path,
        ));
    }
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(format) = negotiate(accept, path == "/openapi/v2") else {
        return error_response(&ApiError::not_acceptable(&[
            "application/json",
            crate::api::protobuf::MEDIA_TYPE,
        ]));
    };
    let if_none_match = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    match path {
        "/openapi/v2" => {
            // With CRDs the document changes at runtime: built per request, as v3's are.
            let custom = crate::crd::openapi::custom_group_versions();
            if custom.is_empty() {
                return document_response(&v2_document(format), if_none_match, None, format);
            }
            let doc = v2::document(&custom);
            let served = match format {
                Format::Json => Served::new(&doc),
                Format::Protobuf => Served::from_bytes(v2_proto::encode(&doc)),
            };
            document_response(&served, if_none_match, None, format)
        }
        "/openapi/v3" => {
            let custom = custom_v3_documents();
            let builtin = v3_documents();
            if custom.is_empty() {
                return document_response(&builtin.index, if_none_match, None, format);
            }
            let index = v3_index(&builtin.by_path, &custom);
            document_response(&index, if_none_match, None, format)
        }
        _ => {
            let key = path.trim_start_matches("/openapi/v3/");
            let docs = v3_documents();
            let custom;
            let served = match docs.by_path.iter().find(|(p, _)| p == key) {
                Some((_, served)) => served,
                None => {
                    custom = custom_v3_documents();
                    match custom.iter().find(|(p, _)| p == key) {
                        Some((_, served)) => served,
                        None => return error_response(&ApiError::no_route(path)),
                    }
                }
            };
            let hash = request
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix("hash="));
            match hash {
                Some(h) if !h.is_empty() && h != served.etag => {
                    // A stale cached index: point the client at the current document.
                    redirect(&format!("/openapi/v3/{key}?hash={}", served.etag))
                }
                Some(h) if !h.is_empty() => {
                    document_response(served, if_none_match, Some(()), format)
                }
                _ => document_response(served, if_none_match, None, format),
            }
        }
    }
}

/// The first format the Accept header names that we serve. v3 is JSON only: kubectl asks v3 for
/// JSON; it asks v2 for protobuf alone, so v2 offers both.
fn negotiate(accept: &str, protobuf_offered: bool) -> Option<Format> {
    if accept.trim().is_empty() {
        return Some(Format::Json);
    }
    accept.split(',').find_map(|range| {
        let media = range.split(';').next().unwrap_or("").trim();
        match media {
            "application/json" | "application/*" | "*/*" => Some(Format::Json),
            V2_PROTOBUF | V2_PROTOBUF_DEPRECATED if protobuf_offered => Some(Format::Protobuf),
            _ => None,
        }
    })
}

/// `immutable` is Some when the client named the document by its hash.
fn document_response(
    served: &Served,
    if_none_match: Option<&str>,
    immutable: Option<()>,
    format: Format,
) -> Response {
    let etag = format!("\"{}\"", served.etag);
    let content_type = match format {
        Format::Json => "application/json",
        // The `@` form clients ask for is not a valid media type for Go's parser; upstream
        // answers with the dotted one.
        Format::Protobuf => V2_PROTOBUF_DEPRECATED,
    };
    let mut builder = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::VARY, "Accept")
        .header(header::CONTENT_TYPE, content_type);
    builder = match immutable {
        Some(()) => builder
            .header(header::CACHE_CONTROL, "public, immutable")
            .header(header::EXPIRES, expires_in_a_year()),
        None => builder.header(header::CACHE_CONTROL, "no-cache, private"),
    };
    let response = if if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag)) {
        builder.status(StatusCode::NOT_MODIFIED).body(Body::empty())
    } else {
        builder
            .status(StatusCode::OK)
            .body(Body::from(served.body.clone()))
    };
    response.unwrap_or_else(|_| text_response(500, "response build failed"))
}

fn redirect(location: &str) -> Response {
    Response::builder()
        .status(StatusCode::MOVED_PERMANENTLY)
        .header(header::LOCATION, location)
        .body(Body::empty())
        .unwrap_or_else(|_| text_response(500, "response build failed"))
}

/// RFC 1123 date a year from now, as upstream sets next to `immutable`.
fn expires_in_a_year() -> String {
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 365);
    later.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(uri: &str, accept: &str) -> Response {
        let request = http::Request::builder()
            .uri(uri)
            .header(header::ACCEPT, accept)
            .body(Body::empty())
            .unwrap();
        handle(&request)
    }

    async fn body_json(response: Response) -> Value {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn index_names_every_group_version_with_its_hash() {
        let index = body_json(get("/openapi/v3", "application/json")).await;
        let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="));
        assert!(index["paths"]["api/v1"].is_object());
        assert!(index["paths"]["apis/rbac.authorization.k8s.io/v1"].is_object());

        let response = get(url, "application/json");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CACHE_CONTROL],
            "public, immutable"
        );
        let hash = url.split("hash=").nth(1).unwrap();
        assert_eq!(response.headers()[header::ETAG], format!("\"{hash}\""));
        let doc = body_json(response).await;
        assert_eq!(doc["openapi"], "3.0.0");
    }

    #[tokio::test]
    async fn a_stale_hash_redirects_to_the_current_document() {
        let response = get("/openapi/v3/api/v1?hash=0123", "application/json");
        assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
        let location = response.headers()[header::LOCATION].to_str().unwrap();
        assert!(location.starts_with("/openapi/v3/api/v1?hash="));
    }

    #[test]
    fn protobuf_with_json_fallback_gets_json_and_protobuf_alone_is_refused() {
        let both = "application/com.github.proto-openapi.spec.v3@v1.0+protobuf, application/json";
        assert_eq!(get("/openapi/v3/api/v1", both).status(), StatusCode::OK);
        let only = "application/com.github.proto-openapi.spec.v3@v1.0+protobuf";
        assert_eq!(
            get("/openapi/v3/api/v1", only).status(),
            StatusCode::NOT_ACCEPTABLE
        );
    }

    #[test]
    fn v2_answers_protobuf_to_who_asks_only_for_it() {
        let response = get("/openapi/v2", V2_PROTOBUF);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            V2_PROTOBUF_DEPRECATED
        );
        let response = get("/openapi/v2", "application/json");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn a_matching_if_none_match_is_not_modified() {
        let first = get("/openapi/v3", "application/json");
        let etag = first.headers()[header::ETAG].clone();
        let request = http::Request::builder()
            .uri("/openapi/v3")
            .header(header::IF_NONE_MATCH, etag)
            .body(Body::empty())
            .unwrap();
        assert_eq!(handle(&request).status(), StatusCode::NOT_MODIFIED);
    }

    #[test]
    fn an_unknown_group_version_is_not_found() {
        assert_eq!(
            get("/openapi/v3/apis/nope/v1", "application/json").status(),
            StatusCode::NOT_FOUND
        );
    }
}
