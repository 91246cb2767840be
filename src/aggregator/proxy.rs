//! Forwards one authenticated, authorized request to an aggregated API server: same method,
//! path, query and body; the caller's credentials replaced by the front-proxy certificate and
//! the user's name, uid, groups and extras in `X-Remote-*` headers; sent to a random ready
//! endpoint over the APIService's pooled connections; the response (a watch stream included)
//! streamed back; a protocol upgrade (exec, attach, port-forward) joined end to end.

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};

use super::{backend, Aggregator, Remote};
use crate::api::{ApiError, ApiResult};
use crate::apiserver::authn::{UserExtra, UserInfo};

/// Headers that describe one hop and never pass a proxy.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Prefixes of headers the caller could use to claim an identity the backend would trust.
const IDENTITY_PREFIXES: &[&str] = &["x-remote-", "impersonate-"];

pub async fn forward(
    aggregator: &Aggregator,
    remote: &Remote,
    user: &UserInfo,
    mut request: Request,
) -> ApiResult<Response> {
    // Upstream answers exactly this while the APIService is not Available.
    let unavailable = || ApiError::unavailable("service unavailable");
    if !remote.available {
        return Err(unavailable());
    }
    let addr = backend::resolve(
        &aggregator.registry,
        &remote.namespace,
        &remote.service,
        remote.port,
    )
    .map_err(|_| unavailable())?;
    let client = aggregator
        .clients
        .get(
            &aggregator.identity,
            &remote.name,
            &remote.server_name(),
            &remote.ca_bundle,
            remote.insecure,
        )
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let upgrade = upgrade_protocol(request.headers());
    let downstream = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    strip_identity(&mut parts.headers);
    if let Some(protocol) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        parts.headers.insert(header::UPGRADE, protocol.clone());
    }
    add_identity(&mut parts.headers, user);
    if let Some(extra) = parts.extensions.get::<UserExtra>().cloned() {
        add_extra(&mut parts.headers, &extra);
    }
    let host = format!("{}:{}", remote.server_name(), remote.port);
    if let Ok(host) = HeaderValue::from_str(&host) {
        parts.headers.insert(header::HOST, host);
    }
    parts.version = Version::HTTP_11;
    parts.uri = format!("https://{addr}{path}")
        .parse()
        .map_err(|_| ApiError::bad_request("the request path cannot be forwarded"))?;
    parts.extensions = http::Extensions::new();
    let unreachable = |e: backend::BackendError| {
        ApiError::unavailable(format!("error trying to reach service: {e}"))
    };
    let mut response = client
        .request(Request::from_parts(parts, body))
        .await
        .map_err(|e| unreachable(backend::BackendError::Client(error_chain(&e))))?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(downstream) = downstream {
            let upstream = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                let (Ok(client), Ok(server)) = (downstream.await, upstream.await) else {
                    return;
                };
                let mut client = hyper_util::rt::TokioIo::new(client);
                let mut server = hyper_util::rt::TokioIo::new(server);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    }
    let (mut parts, body) = response.into_parts();
    if parts.status != StatusCode::SWITCHING_PROTOCOLS {
        strip_hop_by_hop(&mut parts.headers);
    }
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// An error with its causes, as the connection failure is usually the innermost one.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Upstream's request-header authentication: the user, each group, the uid when known.
fn add_identity(headers: &mut HeaderMap, user: &UserInfo) {
    if let Ok(name) = HeaderValue::from_str(&user.name) {
        headers.insert("x-remote-user", name);
    }
    for group in &user.groups {
        if let Ok(group) = HeaderValue::from_str(group) {
            headers.append("x-remote-group", group);
        }
    }
    if !user.uid.is_empty() {
        if let Ok(uid) = HeaderValue::from_str(&user.uid) {
            headers.insert("x-remote-uid", uid);
        }
    }
}

/// The user's extra attributes, one `X-Remote-Extra-<key>` header per value, the key escaped
/// as upstream does so that any key survives as a header name.
fn add_extra(headers: &mut HeaderMap, extra: &UserExtra) {
    for (key, values) in &extra.0 {
        let name = format!("x-remote-extra-{}", escape_extra_key(key));
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        for value in values {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.append(name.clone(), value);
            }
        }
    }
}

/// Upstream's `headerKeyEscape`: bytes that are not RFC 7230 token characters, and `%` itself,
/// become `%XX` (the backend path-unescapes the key).
fn escape_extra_key(key: &str) -> String {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$&'*+-.^_`|~".contains(&b);
    let mut escaped = String::with_capacity(key.len());
    for b in key.bytes() {
        if token(b) {
            escaped.push(char::from(b));
        } else {
            escaped.push_str(&format!("%{b:02X}"));
        }
    }
    escaped
}

/// The caller authenticated to berth; its token or claimed identity means nothing downstream.
fn strip_identity(headers: &mut HeaderMap) {
    headers.remove(header::AUTHORIZATION);
    let claimed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            IDENTITY_PREFIXES
                .iter()
                .any(|prefix| name.as_str().starts_with(prefix))
        })
        .cloned()
        .collect();
    for name in claimed {
        headers.remove(name);
    }
}

/// The protocol asked for when the request is an upgrade (`Connection: upgrade` + `Upgrade`).
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_string())
}

/// Removes hop-by-hop headers and those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = connection_tokens(headers).collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_cannot_smuggle_an_identity_to_the_backend() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer secret"));
        headers.insert("x-remote-user", HeaderValue::from_static("system:admin"));
        headers.insert("X-Remote-Extra-Scopes", HeaderValue::from_static("all"));
        headers.insert("impersonate-user", HeaderValue::from_static("root"));
        headers.insert("accept", HeaderValue::from_static("application/json"));
        strip_identity(&mut headers);
        let user = UserInfo {
            name: "alice".into(),
            uid: String::new(),
            groups: vec!["dev".into(), "system:authenticated".into()],
        };
        add_identity(&mut headers, &user);
        assert_eq!(
            headers.get("x-remote-user").map(|v| v.as_bytes()),
            Some(&b"alice"[..])
        );
        let groups: Vec<&[u8]> = headers
            .get_all("x-remote-group")
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        assert_eq!(groups, vec![&b"dev"[..], &b"system:authenticated"[..]]);
        assert!(headers.get("authorization").is_none());
        assert!(headers.get("x-remote-extra-scopes").is_none());
        assert!(headers.get("impersonate-user").is_none());
        assert!(headers.get("x-remote-uid").is_none());
        assert!(headers.get("accept").is_some());
    }

    #[test]
    fn user_extras_become_escaped_x_remote_extra_headers_one_per_value() {
        assert_eq!(
            escape_extra_key("authentication.kubernetes.io/pod-name"),
            "authentication.kubernetes.io%2Fpod-name"
        );
        assert_eq!(escape_extra_key("100%"), "100%25");
        assert_eq!(escape_extra_key("a b\u{e9}"), "a%20b%C3%A9");
        let mut extra = UserExtra::default();
        extra
            .0
            .insert("scopes".into(), vec!["view".into(), "edit".into()]);
        extra.0.insert(
            "authentication.kubernetes.io/pod-name".into(),
            vec!["web-0".into()],
        );
        let mut headers = HeaderMap::new();
        add_extra(&mut headers, &extra);
        let scopes: Vec<&[u8]> = headers
            .get_all("x-remote-extra-scopes")
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        assert_eq!(scopes, vec![&b"view"[..], &b"edit"[..]]);
        assert_eq!(
            headers
                .get("x-remote-extra-authentication.kubernetes.io%2fpod-name")
                .map(|v| v.as_bytes()),
            Some(&b"web-0"[..])
        );
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", HeaderValue::from_static("keep-alive, x-hop"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.get("content-type").is_some());
    }

    #[test]
    fn an_upgrade_needs_both_connection_and_upgrade_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("upgrade", HeaderValue::from_static("websocket"));
        assert_eq!(upgrade_protocol(&headers), None);
        headers.insert("connection", HeaderValue::from_static("Upgrade"));
        assert_eq!(
            upgrade_protocol(&headers),
            Some(HeaderValue::from_static("websocket"))
        );
    }
}
