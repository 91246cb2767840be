//! The audit log: one `audit.k8s.io/v1 Event` per request the policy selects, as JSON lines in
//! a file rotated by size, like kube-apiserver's log backend.
//!
//! It is one layer around the router that serves remote clients, so requests berth's own
//! components make in-process are not audited (they would fill a Pi's SD card with controller
//! traffic). Events are written when the response starts (`ResponseComplete`, or
//! `ResponseStarted` for a watch, whose end nobody waits for).

pub mod policy;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;
use serde_json::Value;

use crate::apiserver::authn::UserInfo;
use policy::{Level, Policy, RequestAttributes};

/// Request bodies above this are not copied into `requestObject` (the event says so).
const MAX_AUDITED_BODY: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot read the audit policy {path}: {source}")]
    ReadPolicy {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit policy {path}: {detail}")]
    BadPolicy { path: PathBuf, detail: String },
    #[error("cannot open the audit log {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
}

tokio::task_local! {
    static ANNOTATIONS: Arc<Mutex<Vec<(String, String)>>>;
}

/// Adds an annotation to the audit event of the request being handled (if it is audited).
pub fn annotate(key: &str, value: String) {
    let _ = ANNOTATIONS.try_with(|annotations| {
        if let Ok(mut annotations) = annotations.lock() {
            annotations.retain(|(k, _)| k != key);
            annotations.push((key.to_string(), value));
        }
    });
}

/// The peer address of a request, put into its extensions by the TLS front end.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddress(pub SocketAddr);

pub struct Auditor {
    policy: Policy,
    log: Mutex<RotatingFile>,
}

impl Auditor {
    pub fn open(
        policy_file: Option<&Path>,
        log_path: &Path,
        max_size_bytes: u64,
        max_backups: usize,
    ) -> Result<Auditor, AuditError> {
        let policy = match policy_file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| AuditError::ReadPolicy {
                        path: path.to_path_buf(),
                        source,
                    })?;
                Policy::parse(&text).map_err(|detail| AuditError::BadPolicy {
                    path: path.to_path_buf(),
                    detail,
                })?
            }
            None => Policy::default_writes(),
        };
        let log = RotatingFile::open(log_path, max_size_bytes, max_backups)?;
        Ok(Auditor {
            policy,
            log: Mutex::new(log),
        })
    }

    fn write(&self, event: &impl Serialize) {
        let mut line = match serde_json::to_vec(event) {
            Ok(line) => line,
            Err(error) => {
                tracing::warn!(%error, "cannot encode an audit event");
                return;
            }
        };
        line.push(b'\n');
        if let Ok(mut log) = self.log.lock() {
            if let Err(error) = log.append(&line) {
                tracing::warn!(%error, "cannot write the audit log");
            }
        }
    }
}

/// Wraps `router` so every request it serves is audited by `auditor`.
pub fn layer(router: axum::Router, auditor: Arc<Auditor>) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(auditor, audit_request))
}

async fn audit_request(
    State(auditor): State<Arc<Auditor>>,
    request: Request,
    next: Next,
) -> Response {
    if is_read(request.method()) && auditor.policy.ignores_reads() {
        return next.run(request).await;
    }
    let user = request.extensions().get::<UserInfo>().cloned();
    let peer = request.extensions().get::<PeerAddress>().copied();
    let attributes = attributes(&request, user.as_ref());
    let (level, omit) = auditor.policy.decide(&attributes);
    if level == Level::None {
        return next.run(request).await;
    }
    let watching = attributes.verb == "watch";
    // Streams (watch, logs, exec, ...) end when the client goes: their bodies are never kept.
    let streaming = watching
        || matches!(
            attributes.subresource.as_str(),
            "log" | "exec" | "attach" | "portforward" | "proxy"
        );
    let stage = if watching {
        "ResponseStarted"
    } else {
        "ResponseComplete"
    };
    if omit.iter().any(|s| s == stage) {
        return next.run(request).await;
    }
    let received = jiff::Timestamp::now();
    let uri = request.uri().to_string();
    let user_agent = request
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let (request, request_object) = match level >= Level::Request && !streaming {
        true => capture_body(request).await,
        false => (request, None),
    };
    let annotations = Arc::new(Mutex::new(Vec::new()));
    let response = ANNOTATIONS
        .scope(annotations.clone(), next.run(request))
        .await;
    let (response, response_object) = match level == Level::RequestResponse && !streaming {
        true => capture_response(response).await,
        false => (response, None),
    };
    let code = response.status().as_u16();
    let annotations = annotations.lock().map(|a| a.clone()).unwrap_or_default();
    let source_ip = peer.map(|p| p.0.ip().to_string());
    let event = Event {
        annotations: (!annotations.is_empty()).then(|| {
            annotations
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect()
        }),
        api_version: "audit.k8s.io/v1",
        audit_id: crate::api::meta::new_uid().to_string(),
        kind: "Event",
        level: level.as_str(),
        object_ref: (!attributes.resource.is_empty()).then(|| ObjectReference {
            api_group: &attributes.group,
            api_version: api_version(&attributes),
            name: &attributes.name,
            namespace: &attributes.namespace,
            resource: &attributes.resource,
            subresource: &attributes.subresource,
        }),
        request_object,
        request_received_timestamp: received.to_string(),
        request_uri: &uri,
        response_object,
        response_status: ResponseStatus {
            code,
            metadata: Empty {},
        },
        source_ips: source_ip.as_slice(),
        stage,
        stage_timestamp: jiff::Timestamp::now().to_string(),
        user: AuditUser {
            groups: user.as_ref().map(|u| u.groups.as_slice()),
            uid: user
                .as_ref()
                .map(|u| u.uid.as_str())
                .filter(|u| !u.is_empty()),
            username: user.as_ref().map(|u| u.name.as_str()),
        },
        user_agent: &user_agent,
        verb: &attributes.verb,
    };
    auditor.write(&event);
    response
}

/// One `audit.k8s.io/v1 Event`, serialised straight to its line. The fields are declared in
/// the order of their names, the order JSON objects of berth have everywhere else.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<&'a str, &'a str>>,
    api_version: &'static str,
    #[serde(rename = "auditID")]
    audit_id: String,
    kind: &'static str,
    level: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    object_ref: Option<ObjectReference<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_object: Option<Value>,
    request_received_timestamp: String,
    #[serde(rename = "requestURI")]
    request_uri: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_object: Option<Value>,
    response_status: ResponseStatus,
    #[serde(rename = "sourceIPs")]
    source_ips: &'a [String],
    stage: &'static str,
    stage_timestamp: String,
    user: AuditUser<'a>,
    user_agent: &'a str,
    verb: &'a str,
}

/// The objectRef: the version is the path's; the group is in apiGroup, as upstream's.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ObjectReference<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    api_group: &'a str,
    api_version: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    namespace: &'a str,
    resource: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    subresource: &'a str,
}

#[derive(Serialize)]
struct ResponseStatus {
    code: u16,
    metadata: Empty,
}

#[derive(Serialize)]
struct Empty {}

/// The user as authenticated: `{}` for an anonymous request.
#[derive(Serialize)]
struct AuditUser<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    groups: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
}

fn api_version(attributes: &RequestAttributes) -> String {
    let segments: Vec<&str> = attributes.path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["api", version, ..] => version.to_string(),
        ["apis", _, version, ..] => version.to_string(),
        _ => String::new(),
    }
}

async fn capture_body(request: Request) -> (Request, Option<Value>) {
    let (parts, body) = request.into_parts();
    // kubectl writes built-in kinds as protobuf: decode whatever format the handler accepts.
    let format = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(crate::api::body::BodyFormat::from_content_type)
        .unwrap_or(Ok(crate::api::body::BodyFormat::Json));
    match axum::body::to_bytes(body, crate::store::MAX_ENTRY_BYTES).await {
        Ok(bytes) => {
            let object = match (&format, bytes.len() <= MAX_AUDITED_BODY) {
                (Ok(format), true) => crate::api::body::decode_object(*format, &bytes).ok(),
                _ => None,
            };
            (Request::from_parts(parts, Body::from(bytes)), object)
        }
        // The body could not be read whole: hand the handler an empty one, which it refuses.
        Err(_) => (Request::from_parts(parts, Body::empty()), None),
    }
}

async fn capture_response(response: Response) -> (Response, Option<Value>) {
    let (parts, body) = response.into_parts();
    match axum::body::to_bytes(body, crate::store::MAX_ENTRY_BYTES).await {
        Ok(bytes) => {
            let object = (bytes.len() <= MAX_AUDITED_BODY)
                .then(|| serde_json::from_slice::<Value>(&bytes).ok())
                .flatten();
            (Response::from_parts(parts, Body::from(bytes)), object)
        }
        Err(_) => (Response::from_parts(parts, Body::empty()), None),
    }
}

/// A method whose verb is `get`, `list` or `watch` (see [`attributes`]).
fn is_read(method: &http::Method) -> bool {
    !matches!(
        *method,
        http::Method::POST | http::Method::PUT | http::Method::PATCH | http::Method::DELETE
    )
}

/// The policy's view of a request: user, verb and resource from the method and path.
fn attributes(request: &Request, user: Option<&UserInfo>) -> RequestAttributes {
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("");
    let mut attributes = RequestAttributes {
        user: user.map(|u| u.name.clone()).unwrap_or_default(),
        groups: user.map(|u| u.groups.clone()).unwrap_or_default(),
        path: path.clone(),
        ..Default::default()
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, mut rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => ("", &[][..]),
    };
    let mut watch_path = false;
    if rest.first() == Some(&"watch") {
        watch_path = true;
        rest = &rest[1..];
    }
    if let ["namespaces", namespace, tail @ ..] = rest {
        if !tail.is_empty() {
            attributes.namespace = namespace.to_string();
            rest = tail;
        }
    }
    match rest {
        [resource] => attributes.resource = resource.to_string(),
        [resource, name] => {
            attributes.resource = resource.to_string();
            attributes.name = name.to_string();
        }
        [resource, name, subresource, ..] => {
            attributes.resource = resource.to_string();
            attributes.name = name.to_string();
            attributes.subresource = subresource.to_string();
        }
        _ => {}
    }
    // `/api/v1/namespaces/x` is the namespace itself.
    if attributes.resource.is_empty() {
        if let ["namespaces", name] = rest {
            attributes.resource = "namespaces".into();
            attributes.name = name.to_string();
        }
    }
    if !attributes.resource.is_empty() {
        attributes.group = group.to_string();
    }
    let watching = watch_path
        || query
            .split('&')
            .any(|pair| pair == "watch=true" || pair == "watch=1");
    let named = !attributes.name.is_empty();
    attributes.verb = match *request.method() {
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE if named || attributes.resource.is_empty() => "delete",
        http::Method::DELETE => "deletecollection",
        _ if attributes.resource.is_empty() => "get",
        _ if watching => "watch",
        _ if named => "get",
        _ => "list",
    }
    .to_string();
    attributes
}

/// An append-only file that, once it would grow past its size limit, is renamed to `.1` (older
/// backups shift up, the oldest beyond the limit is removed) and started afresh.
struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_backups: usize,
}

impl RotatingFile {
    fn open(path: &Path, max_size: u64, max_backups: usize) -> Result<RotatingFile, AuditError> {
        let error = |source| AuditError::Open {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            crate::fsutil::create_private_dir(dir).map_err(error)?;
        }
        let file = open_append(path).map_err(error)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(RotatingFile {
            path: path.to_path_buf(),
            file,
            size,
            max_size: max_size.max(1),
            max_backups,
        })
    }

    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let backup = |n: usize| {
            let mut name = self.path.as_os_str().to_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        if self.max_backups == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let _ = std::fs::remove_file(backup(self.max_backups));
            for n in (1..self.max_backups).rev() {
                let _ = std::fs::rename(backup(n), backup(n + 1));
            }
            std::fs::rename(&self.path, backup(1))?;
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, uri: &str) -> Request {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap()
    }

    #[test]
    fn verbs_and_resources_come_from_the_method_and_path() {
        let a = attributes(
            &request("POST", "/apis/apps/v1/namespaces/default/deployments"),
            None,
        );
        assert_eq!((a.verb.as_str(), a.group.as_str()), ("create", "apps"));
        assert_eq!(
            (a.resource.as_str(), a.namespace.as_str()),
            ("deployments", "default")
        );
        let a = attributes(&request("GET", "/api/v1/namespaces/ns/pods/p/log"), None);
        assert_eq!(
            (a.verb.as_str(), a.name.as_str(), a.subresource.as_str()),
            ("get", "p", "log")
        );
        let a = attributes(&request("GET", "/api/v1/pods?watch=true"), None);
        assert_eq!(a.verb, "watch");
        let a = attributes(&request("DELETE", "/api/v1/namespaces/ns/configmaps"), None);
        assert_eq!(a.verb, "deletecollection");
        let a = attributes(&request("DELETE", "/api/v1/namespaces/ns"), None);
        assert_eq!(
            (a.verb.as_str(), a.resource.as_str(), a.name.as_str()),
            ("delete", "namespaces", "ns")
        );
        let a = attributes(&request("GET", "/version"), None);
        assert_eq!((a.verb.as_str(), a.resource.as_str()), ("get", ""));
    }

    fn event<'a>(
        annotations: Option<BTreeMap<&'a str, &'a str>>,
        object_ref: Option<ObjectReference<'a>>,
        user: Option<&'a UserInfo>,
        source_ips: &'a [String],
    ) -> Event<'a> {
        Event {
            annotations,
            api_version: "audit.k8s.io/v1",
            audit_id: "id".into(),
            kind: "Event",
            level: "Metadata",
            object_ref,
            request_object: None,
            request_received_timestamp: "t0".into(),
            request_uri: "/apis/apps/v1/namespaces/default/deployments",
            response_object: None,
            response_status: ResponseStatus {
                code: 201,
                metadata: Empty {},
            },
            source_ips,
            stage: "ResponseComplete",
            stage_timestamp: "t1".into(),
            user: AuditUser {
                groups: user.map(|u| u.groups.as_slice()),
                uid: user.map(|u| u.uid.as_str()).filter(|u| !u.is_empty()),
                username: user.map(|u| u.name.as_str()),
            },
            user_agent: "kubectl/v1.35.0",
            verb: "create",
        }
    }

    /// The line is what serialising the event as a JSON value gives (keys in name order), so
    /// readers of the log see the same bytes as when it was built as one.
    #[test]
    fn an_event_is_written_as_its_json_value_would_be() {
        let user = UserInfo {
            name: "admin".into(),
            uid: String::new(),
            groups: vec!["system:masters".into()],
        };
        let reference = ObjectReference {
            api_group: "apps",
            api_version: "v1".into(),
            name: "",
            namespace: "default",
            resource: "deployments",
            subresource: "scale",
        };
        let ips = ["10.0.0.1".to_string()];
        let annotations = BTreeMap::from([("b", "2"), ("a", "1")]);
        let mut full = event(Some(annotations), Some(reference), Some(&user), &ips);
        full.response_object = Some(serde_json::json!({"kind": "Deployment"}));
        let line = serde_json::to_string(&full).unwrap();
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(line, value.to_string());
        assert_eq!(
            value,
            serde_json::json!({
                "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
                "auditID": "id", "stage": "ResponseComplete",
                "requestURI": "/apis/apps/v1/namespaces/default/deployments", "verb": "create",
                "user": {"username": "admin", "groups": ["system:masters"]},
                "sourceIPs": ["10.0.0.1"], "userAgent": "kubectl/v1.35.0",
                "responseStatus": {"metadata": {}, "code": 201},
                "requestReceivedTimestamp": "t0", "stageTimestamp": "t1",
                "objectRef": {"resource": "deployments", "apiVersion": "v1",
                    "namespace": "default", "apiGroup": "apps", "subresource": "scale"},
                "annotations": {"a": "1", "b": "2"},
                "responseObject": {"kind": "Deployment"},
            })
        );
        let bare = serde_json::to_string(&event(None, None, None, &[])).unwrap();
        let value: Value = serde_json::from_str(&bare).unwrap();
        assert_eq!(bare, value.to_string());
        assert_eq!(value["user"], serde_json::json!({}));
        assert_eq!(value["sourceIPs"], serde_json::json!([]));
        for absent in [
            "annotations",
            "objectRef",
            "requestObject",
            "responseObject",
        ] {
            assert!(value.get(absent).is_none(), "{absent}");
        }
    }

    #[test]
    fn the_log_rotates_by_size_and_keeps_so_many_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit").join("audit.log");
        let mut log = RotatingFile::open(&path, 100, 2).unwrap();
        for i in 0..10 {
            log.append(format!("{{\"line\":{i:040}}}\n").as_bytes())
                .unwrap();
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let backup = |n: usize| PathBuf::from(format!("{}.{n}", path.display()));
        assert!(read(&path).contains(&format!("{:040}", 9)));
        assert!(read(&backup(1)).contains(&format!("{:040}", 7)));
        assert!(std::fs::metadata(backup(2)).is_ok());
        assert!(std::fs::metadata(backup(3)).is_err(), "only two backups");
        for file in [path.clone(), backup(1), backup(2)] {
            assert!(std::fs::metadata(&file).unwrap().len() <= 100);
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
