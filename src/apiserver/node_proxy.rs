//! `nodes/<name>/proxy/<path>`: a node's kubelet endpoints through the API server, as
//! `kubectl get --raw /api/v1/nodes/<node>/proxy/stats/summary` uses them. The server's own
//! node is served here from the same samples `metrics.k8s.io` reads; any other node's request
//! goes to its kubelet API (see [`super::kubelet_proxy`]). Authorization is RBAC's, on
//! `nodes/proxy`, before the request gets here.

use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use serde_json::Value;

use super::ApiServer;
use crate::agent::node_stats::{Endpoint, NodeEndpoints};
use crate::api::{ApiError, ApiResult};

/// The node and the kubelet path a `nodes/<name>/proxy/...` request is for.
pub fn route(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/api/v1/nodes/")?;
    let (node, rest) = rest.split_once('/')?;
    let kubelet_path = match rest.strip_prefix("proxy") {
        Some("") => "/".to_string(),
        Some(p) if p.starts_with('/') => p.to_string(),
        _ => return None,
    };
    // `nodes/<name>:<port>/proxy`: the port is the kubelet's, which we know already.
    let node = node.split(':').next().unwrap_or(node);
    (!node.is_empty()).then(|| (node.to_string(), kubelet_path))
}

pub async fn serve(
    server: &Arc<ApiServer>,
    node: &str,
    kubelet_path: &str,
    request: Request,
) -> ApiResult<Response> {
    let nodes = crate::api::resources::find("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes are not a known resource"))?;
    let node_object = server.registry.get_value(nodes, "", node)?;
    let kubelet = server.kubelet_client();
    if let Some(kubelet) = kubelet.filter(|k| k.local_node() != node) {
        let address = super::kubelet_proxy::kubelet_address(&node_object)
            .ok_or_else(|| ApiError::unavailable(format!("node {node} has no kubelet endpoint")))?;
        let path = match request.uri().query() {
            Some(q) if !q.is_empty() => format!("{kubelet_path}?{q}"),
            _ => kubelet_path.to_string(),
        };
        return super::kubelet_proxy::proxy(&kubelet, address, &path, request).await;
    }
    if request.method() != http::Method::GET {
        return Err(ApiError::method_not_allowed(
            request.method().as_str(),
            "nodes/proxy",
        ));
    }
    let endpoint = Endpoint::of(kubelet_path)
        .ok_or_else(|| ApiError::not_found("", "nodes/proxy", kubelet_path))?;
    let (Some(metrics), Some(logs_dir)) = (server.metrics(), server.pod_logs_dir()) else {
        return Err(ApiError::unavailable(format!(
            "node {node} runs no kubelet here"
        )));
    };
    let pods = match endpoint.needs_pods() {
        true => node_pods(server, node)?,
        false => Vec::new(),
    };
    let endpoints = NodeEndpoints {
        node_name: node.to_string(),
        metrics,
        // The pod logs live in <data-dir>/logs.
        data_dir: logs_dir
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or(logs_dir),
        log_dir: crate::agent::node_logs::NODE_LOG_DIR.into(),
    };
    endpoints.serve(endpoint, pods).await
}

fn node_pods(server: &ApiServer, node: &str) -> ApiResult<Vec<Value>> {
    let pods = crate::api::resources::find("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("pods are not a known resource"))?;
    let page = server.registry.list(pods, None, &Default::default())?;
    Ok(page
        .items
        .iter()
        .filter_map(|raw| crate::registry::generic::decode(raw).ok())
        .filter(|pod: &Value| pod["spec"]["nodeName"] == node)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_proxy_paths_name_the_node_and_the_kubelet_path() {
        assert_eq!(
            route("/api/v1/nodes/n1/proxy/stats/summary"),
            Some(("n1".into(), "/stats/summary".into()))
        );
        assert_eq!(
            route("/api/v1/nodes/n1:10250/proxy/metrics"),
            Some(("n1".into(), "/metrics".into()))
        );
        assert_eq!(
            route("/api/v1/nodes/n1/proxy"),
            Some(("n1".into(), "/".into()))
        );
        assert_eq!(route("/api/v1/nodes/n1/status"), None);
        assert_eq!(route("/api/v1/nodes/n1/proxyx"), None);
        assert_eq!(route("/api/v1/nodes/n1"), None);
    }
}
