//! One webhook call: where the webhook is (a URL, or a Service resolved to a ready endpoint),
//! an HTTPS POST of the AdmissionReview verified against the webhook's `caBundle`, and the
//! decoded response.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::admissionregistration::v1::WebhookClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;

use crate::api::resources;
use crate::api::selectors::LabelSelector;
use crate::registry::generic::{decode, ListOptions};
use crate::registry::Registry;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("bad webhook URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("service {namespace}/{name}: {reason}")]
    Service {
        namespace: String,
        name: String,
        reason: String,
    },
    #[error("invalid caBundle: {0}")]
    CaBundle(String),
    #[error("Post {url:?}: dial tcp {addr}: {}", dial_reason(source))]
    Connect {
        url: String,
        addr: String,
        source: std::io::Error,
    },
    #[error("Post {url:?}: tls: {source}")]
    Tls { url: String, source: std::io::Error },
    #[error("Post {url:?}: {source}")]
    Http { url: String, source: hyper::Error },
    #[error("Post {url:?}: context deadline exceeded")]
    Timeout { url: String },
    #[error("the server responded with status {status}: {body}")]
    Status { status: u16, body: String },
    #[error("received invalid webhook response: {0}")]
    BadResponse(String),
}

/// How Go words the common dial failures, which users search for.
fn dial_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".into(),
        std::io::ErrorKind::TimedOut => "i/o timeout".into(),
        std::io::ErrorKind::HostUnreachable => "connect: no route to host".into(),
        _ => e.to_string(),
    }
}

/// Where to send the review.
struct Target {
    /// For messages: the URL as upstream prints it.
    url: String,
    /// Host names are resolved at call time.
    host: String,
    port: u16,
    path: String,
    /// The name the serving certificate must carry.
    server_name: String,
}

/// POSTs `review` and returns the response's `response` object.
pub async fn call(
    registry: &Registry,
    client: &WebhookClientConfig,
    timeout: Duration,
    review: &Value,
) -> Result<Value, CallError> {
    let target = target(registry, client)?;
    let tls = tls_config(client.ca_bundle.as_ref().map(|b| b.0.as_slice()))?;
    let url = target.url.clone();
    match tokio::time::timeout(timeout, post(&target, tls, review)).await {
        Ok(result) => result,
        Err(_) => Err(CallError::Timeout { url }),
    }
}

fn target(registry: &Registry, client: &WebhookClientConfig) -> Result<Target, CallError> {
    if let Some(raw) = &client.url {
        return url_target(raw);
    }
    let Some(service) = &client.service else {
        return Err(CallError::BadUrl {
            url: String::new(),
            reason: "neither url nor service is set".into(),
        });
    };
    let port = service.port.unwrap_or(443);
    let path = service.path.clone().unwrap_or_else(|| "/".into());
    let (ip, target_port) = service_endpoint(registry, &service.namespace, &service.name, port)?;
    Ok(Target {
        url: format!(
            "https://{}.{}.svc:{port}{path}",
            service.name, service.namespace
        ),
        host: ip,
        port: target_port,
        path,
        server_name: format!("{}.{}.svc", service.name, service.namespace),
    })
}

fn url_target(raw: &str) -> Result<Target, CallError> {
    let bad = |reason: &str| CallError::BadUrl {
        url: raw.to_string(),
        reason: reason.to_string(),
    };
    let url = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
    if url.scheme() != "https" {
        return Err(bad("the scheme must be https"));
    }
    let host = url.host_str().ok_or_else(|| bad("no host"))?;
    // IPv6 literals come bracketed from the URL.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let path = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_string(),
    };
    Ok(Target {
        url: raw.to_string(),
        server_name: host.clone(),
        host,
        port: url.port().unwrap_or(443),
        path,
    })
}

/// A ready endpoint of the Service and the endpoint port behind `service_port`, read from its
/// EndpointSlices (so no dependency on the service proxy's rules from berth's own network).
fn service_endpoint(
    registry: &Registry,
    namespace: &str,
    name: &str,
    service_port: i32,
) -> Result<(String, u16), CallError> {
    let fail = |reason: String| CallError::Service {
        namespace: namespace.into(),
        name: name.into(),
        reason,
    };
    let services =
        resources::find("", "v1", "services").ok_or_else(|| fail("no services".into()))?;
    let service = registry
        .get_value(services, namespace, name)
        .map_err(|e| fail(e.message))?;
    let port_name = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| p["port"].as_i64() == Some(i64::from(service_port)))
        .map(|p| p["name"].as_str().unwrap_or("").to_string())
        .ok_or_else(|| fail(format!("has no port {service_port}")))?;
    let slices = resources::find("discovery.k8s.io", "v1", "endpointslices")
        .ok_or_else(|| fail("no endpointslices".into()))?;
    let selector = LabelSelector::parse(&format!("kubernetes.io/service-name={name}"))
        .map_err(|e| fail(e.to_string()))?;
    let options = ListOptions {
        label_selector: Some(selector),
        ..ListOptions::default()
    };
    let page = registry
        .list(slices, Some(namespace), &options)
        .map_err(|e| fail(e.message))?;
    for slice in page.items.iter().filter_map(|raw| decode(raw).ok()) {
        if let Some((ip, port)) = crate::api::endpoints::first_ready(&slice, &port_name) {
            return Ok((ip.to_string(), port));
        }
    }
    Err(fail("no ready endpoints".into()))
}

/// Trusts exactly the caBundle (PEM). Without one there is nothing to verify against: berth
/// carries no system trust store.
fn tls_config(ca_bundle: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, CallError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_bundle.unwrap_or_default()) {
        let cert = cert.map_err(|e| CallError::CaBundle(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| CallError::CaBundle(e.to_string()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| CallError::CaBundle(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

async fn post(
    target: &Target,
    tls: Arc<rustls::ClientConfig>,
    review: &Value,
) -> Result<Value, CallError> {
    let url = target.url.clone();
    let addr = format!("{}:{}", bracketed(&target.host), target.port);
    let connect_error = |source| CallError::Connect {
        url: url.clone(),
        addr: addr.clone(),
        source,
    };
    let tcp = match target.host.parse::<std::net::IpAddr>() {
        Ok(ip) => TcpStream::connect(SocketAddr::new(ip, target.port)).await,
        Err(_) => TcpStream::connect((target.host.as_str(), target.port)).await,
    }
    .map_err(connect_error)?;
    let server_name =
        ServerName::try_from(target.server_name.clone()).map_err(|e| CallError::BadUrl {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(server_name, tcp)
        .await
        .map_err(|source| CallError::Tls {
            url: url.clone(),
            source,
        })?;
    let http_error = |source| CallError::Http {
        url: url.clone(),
        source,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_error)?;
    tokio::spawn(connection);
    let body = serde_json::to_vec(review).map_err(|e| CallError::BadResponse(e.to_string()))?;
    let request = http::Request::post(&target.path)
        .header(
            http::header::HOST,
            format!("{}:{}", target.server_name, target.port),
        )
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| CallError::BadResponse(e.to_string()))?;
    let response = sender.send_request(request).await.map_err(http_error)?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(http_error)?
        .to_bytes();
    if !(200..300).contains(&status) {
        return Err(CallError::Status {
            status,
            body: String::from_utf8_lossy(&body).chars().take(256).collect(),
        });
    }
    let review: Value =
        serde_json::from_slice(&body).map_err(|e| CallError::BadResponse(e.to_string()))?;
    review
        .get("response")
        .cloned()
        .ok_or_else(|| CallError::BadResponse("no response in the AdmissionReview".into()))
}

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// The JSON patch of a mutating webhook's response, if it sent one.
pub fn patch_of(response: &Value) -> Result<Option<json_patch::Patch>, CallError> {
    let Some(encoded) = response.get("patch").and_then(Value::as_str) else {
        return Ok(None);
    };
    match response.get("patchType").and_then(Value::as_str) {
        Some("JSONPatch") => {}
        other => {
            return Err(CallError::BadResponse(format!(
                "unsupported patch type {other:?}"
            )))
        }
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| CallError::BadResponse(format!("patch is not base64: {e}")))?;
    serde_json::from_slice(&raw)
        .map(Some)
        .map_err(|e| CallError::BadResponse(format!("patch is not a JSON patch: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_json_patch_response_decodes_and_other_patch_types_are_refused() {
        let patch = json!([{"op": "add", "path": "/metadata/labels/x", "value": "y"}]);
        let encoded = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
        let response = json!({"allowed": true, "patchType": "JSONPatch", "patch": encoded});
        assert!(patch_of(&response).unwrap().is_some());
        assert!(patch_of(&json!({"allowed": true})).unwrap().is_none());
        let merge = json!({"allowed": true, "patchType": "MergePatch", "patch": encoded});
        assert!(patch_of(&merge).is_err());
    }

    #[test]
    fn url_targets_keep_path_and_query_and_refuse_plain_http() {
        let t = url_target("https://10.0.0.1:8443/validate?x=1").unwrap();
        assert_eq!(
            (
                t.host.as_str(),
                t.port,
                t.path.as_str(),
                t.server_name.as_str()
            ),
            ("10.0.0.1", 8443, "/validate?x=1", "10.0.0.1")
        );
        assert_eq!(url_target("https://hooks.example.com/").unwrap().port, 443);
        assert!(matches!(
            url_target("http://10.0.0.1/"),
            Err(CallError::BadUrl { .. })
        ));
    }

    #[test]
    fn a_ca_bundle_that_is_not_a_certificate_is_refused() {
        let garbage = b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            tls_config(Some(garbage)),
            Err(CallError::CaBundle(_))
        ));
    }
}
