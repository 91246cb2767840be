//! Streaming pod subresources: `pods/exec` over the websocket channel protocol,
//! `pods/attach` (output followed from the CRI log), `pods/portforward` over SPDY/3.1 or websockets.
//!
//! Each is served by the node that runs the pod ([`node::PodNode`]): the API server's own node
//! through the runtime the daemon registered (see `ApiServer::set_pod_runtime`), an agent's
//! through its kubelet API, to which the API server proxies.

mod attach;
pub mod channel;
mod exec;
pub mod node;
pub mod portforward;
pub(crate) mod spdy;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::{header, Method};
use serde_json::Value;

use crate::api::{ApiError, ApiResult};
use channel::Protocol;
use node::PodNode;

/// The query of an exec or attach request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StreamOptions {
    pub command: Vec<String>,
    pub container: Option<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl StreamOptions {
    pub fn parse(raw: Option<&str>) -> StreamOptions {
        let mut o = StreamOptions::default();
        let on = |v: &str| matches!(v, "true" | "1" | "True");
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "command" => o.command.push(v.into_owned()),
                "container" if !v.is_empty() => o.container = Some(v.into_owned()),
                "stdin" => o.stdin = on(&v),
                "stdout" => o.stdout = on(&v),
                "stderr" => o.stderr = on(&v),
                "tty" => o.tty = on(&v),
                _ => {}
            }
        }
        // A terminal has one output stream.
        if o.tty {
            o.stderr = false;
        }
        o
    }
}

/// The container a request means: the named one, else the one the
/// `kubectl.kubernetes.io/default-container` annotation names, else the first.
pub fn choose_container(pod: &Value, wanted: Option<&str>) -> ApiResult<String> {
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let names: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    let annotated = pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"]
        .as_str()
        .filter(|n| names.contains(n));
    let name = match wanted.or(annotated).or(names.first().copied()) {
        Some(name) => name,
        None => {
            return Err(ApiError::bad_request(format!(
                "pod {pod_name} has no containers"
            )))
        }
    };
    // Init and ephemeral containers may be named, never defaulted to (`kubectl debug -it`
    // attaches to its ephemeral container by name).
    let others = ["initContainers", "ephemeralContainers"].map(|key| {
        pod["spec"][key]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["name"] == name))
    });
    if !names.contains(&name) && !others.contains(&true) {
        return Err(ApiError::bad_request(format!(
            "container {name} is not valid for pod {pod_name}"
        )));
    }
    Ok(name.to_string())
}

/// Refuses pods whose container is not running, with the reason kubectl users expect.
pub fn check_running(pod: &Value, container: &str) -> ApiResult<()> {
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    if matches!(phase, "Succeeded" | "Failed") {
        return Err(ApiError::bad_request(format!(
            "cannot exec into a container in a completed pod; current phase is {phase}"
        )));
    }
    if pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        return Err(ApiError::bad_request(format!(
            "pod {pod_name} does not have a host assigned"
        )));
    }
    let running = [
        "containerStatuses",
        "initContainerStatuses",
        "ephemeralContainerStatuses",
    ]
    .iter()
    .flat_map(|key| pod["status"][key].as_array().into_iter().flatten())
    .any(|s| s["name"] == container && s["state"]["running"].is_object());
    if !running {
        return Err(ApiError::bad_request(format!(
            "container {container} is not running in pod {pod_name} (phase {phase})"
        )));
    }
    Ok(())
}

/// Handles `GET|POST pods/<name>/attach`.
pub use attach::serve as serve_attach;

/// Streaming subresources are reached with GET or POST (clients upgrade with either).
fn check_method(request: &Request, subresource: &str) -> ApiResult<()> {
    match *request.method() {
        Method::GET | Method::POST => Ok(()),
        ref other => Err(ApiError::method_not_allowed(other.as_str(), subresource)),
    }
}

/// Handles `GET|POST pods/<name>/exec`.
pub async fn serve_exec(
    node: &PodNode,
    namespace: &str,
    name: &str,
    mut request: Request,
) -> ApiResult<Response> {
    check_method(&request, "pods/exec")?;
    let options = StreamOptions::parse(request.uri().query());
    if options.command.is_empty() {
        return Err(ApiError::bad_request(
            "you must specify at least one command for the container",
        ));
    }
    if !(options.stdin || options.stdout || options.stderr) {
        return Err(ApiError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    let pod = node.pod(namespace, name).await?;
    let container = choose_container(&pod, options.container.as_deref())?;
    check_running(&pod, &container)?;
    let runtime = node.runtime.clone();
    let protocol = websocket_protocol(&request)?;
    let uid = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // The process starts once the websocket is up: a terminal's first size arrives only then,
    // and a shell must not start at 0x0.
    let command = options.command.clone();
    let (tty, stdin) = (options.tty, options.stdin);
    let start = move |size| async move {
        runtime
            .exec(&uid, &container, command, tty, stdin, size)
            .await
            .map_err(|e| format!("exec in {container}: {e}"))
    };
    let key = request
        .headers()
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let io = hyper_util::rt::TokioIo::new(upgraded);
                let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    io,
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    None,
                )
                .await;
                exec::run(ws, protocol, start, options).await;
            }
            Err(e) => tracing::debug!("exec upgrade failed: {e}"),
        }
    });
    switching_protocols(&key, protocol)
}

/// The channel protocol of a websocket upgrade request; anything else is refused as upstream
/// does for clients that cannot stream.
fn websocket_protocol(request: &Request) -> ApiResult<Protocol> {
    let is_websocket = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !is_websocket || !request.headers().contains_key("sec-websocket-key") {
        return Err(ApiError::bad_request(
            "Upgrade request required: this server streams over websocket only",
        ));
    }
    let offered = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok());
    Protocol::negotiate(offered).ok_or_else(|| {
        ApiError::bad_request(
            "none of the offered websocket subprotocols is supported (v5.channel.k8s.io, v4.channel.k8s.io)",
        )
    })
}

fn switching_protocols(key: &str, protocol: Protocol) -> ApiResult<Response> {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    Response::builder()
        .status(http::StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .header(header::SEC_WEBSOCKET_PROTOCOL, protocol.name())
        .body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "p", "annotations": {"kubectl.kubernetes.io/default-container": "b"}},
            "spec": {"nodeName": "n", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "a", "state": {"running": {}}},
                {"name": "b", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ]}
        })
    }

    #[test]
    fn repeated_command_params_keep_their_order() {
        let o = StreamOptions::parse(Some(
            "command=sh&command=-c&command=exit+3&stdout=true&tty=1&stderr=true",
        ));
        assert_eq!(o.command, ["sh", "-c", "exit 3"]);
        assert!(o.stdout && o.tty && !o.stdin);
        assert!(!o.stderr, "a tty has no separate stderr");
    }

    #[test]
    fn the_default_container_annotation_wins_over_the_first_container() {
        assert_eq!(choose_container(&pod(), None).unwrap(), "b");
        assert_eq!(choose_container(&pod(), Some("a")).unwrap(), "a");
        let mut plain = pod();
        plain["metadata"]["annotations"] = json!({});
        assert_eq!(choose_container(&plain, None).unwrap(), "a");
    }

    #[test]
    fn an_unknown_container_is_a_bad_request() {
        let e = choose_container(&pod(), Some("nope")).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.message.contains("container nope is not valid for pod p"));
    }

    #[test]
    fn an_ephemeral_container_is_reachable_by_name_but_never_the_default() {
        let mut debug = pod();
        debug["spec"]["ephemeralContainers"] = json!([{"name": "debugger-x"}]);
        debug["status"]["ephemeralContainerStatuses"] =
            json!([{"name": "debugger-x", "state": {"running": {}}}]);
        assert_eq!(
            choose_container(&debug, Some("debugger-x")).unwrap(),
            "debugger-x"
        );
        assert_eq!(choose_container(&debug, None).unwrap(), "b");
        assert!(check_running(&debug, "debugger-x").is_ok());
    }

    #[test]
    fn only_running_containers_accept_streams() {
        assert!(check_running(&pod(), "a").is_ok());
        assert_eq!(check_running(&pod(), "b").unwrap_err().code, 400);
        let mut done = pod();
        done["status"]["phase"] = json!("Succeeded");
        assert!(check_running(&done, "a")
            .unwrap_err()
            .message
            .contains("completed pod"));
    }
}
