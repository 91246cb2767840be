//! The kubelet API of a worker node: HTTPS on the kubelet port (10250), serving the node's
//! pods' `containerLogs`, `exec`, `attach` and `portForward` to the API server, which proxies
//! `kubectl logs/exec/attach/port-forward` of the node's pods here (see
//! `apiserver::kubelet_proxy`), and the node's `/stats/summary`, `/metrics*` and `/logs/`
//! (see [`super::node_stats`]). The protocols are the API server's own node-local code
//! (`apiserver::stream::node::PodNode`), over this node's shims and log files.
//!
//! A client certificate of the cluster CA is required, and each request is authorized by the
//! API server (see [`super::kubelet_authz`]): callers need `nodes/proxy` on this node, which
//! the API server's kubelet client has. The serving certificate is the cluster CA's, for the
//! node's addresses (see `join::serving`), so the API server can verify it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use tokio::net::TcpListener;

use super::kubelet_authz::Authorizer;
use crate::api::{ApiError, ApiResult};
use crate::apiserver::authn::UserInfo;
use crate::apiserver::stream::node::{CachedPods, ClientPods, PodNode};

/// Where kubelets listen unless told otherwise.
pub const DEFAULT_PORT: u16 = 10250;

/// How stale the pod a stream asks about again (is its container still running?) may be.
const POD_CACHE_TTL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum KubeletApiError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the kubelet TLS configuration: {0}")]
    Tls(String),
    #[error("cannot locate the berth binary: {0}")]
    Runtime(#[from] crate::runtime::RuntimeError),
}

/// What the kubelet API needs to run.
pub struct KubeletApiConfig {
    pub node_name: String,
    pub port: u16,
    /// The serving certificate, signed by the cluster CA for the node's addresses and renewed
    /// in place (see `join::serving`).
    pub serving: Arc<dyn rustls::server::ResolvesServerCert>,
    pub data_dir: std::path::PathBuf,
    /// This data dir's share of the run dir (see [`crate::runtime::layout`]).
    pub run_dir: std::path::PathBuf,
    /// The cluster CA, which client certificates must chain to.
    pub ca_pem: String,
}

/// Serves the kubelet API until the task is dropped.
pub async fn run(client: kube::Client, config: KubeletApiConfig) -> Result<(), KubeletApiError> {
    let address = format!("0.0.0.0:{}", config.port);
    let listener = TcpListener::bind(&address)
        .await
        .map_err(|source| KubeletApiError::Listen {
            address: address.clone(),
            source,
        })?;
    let tls = tls_config(&config)?;
    let node = PodNode {
        runtime: crate::runtime::ShimRuntime::new(config.data_dir.join("pods"), &config.run_dir)?,
        logs_dir: config.data_dir.join("logs"),
        pods: Arc::new(CachedPods::new(ClientPods(client.clone()), POD_CACHE_TTL)),
    };
    tracing::info!(%address, "kubelet API listening");
    let authn = Arc::new(crate::apiserver::authn::Authenticator::default());
    let authz = super::kubelet_authz::Authorizer::new(
        config.node_name.clone(),
        Box::new(super::kubelet_authz::ApiReviewer(client.clone())),
    );
    // The kubelet's own samples of its cgroups, for the stats and metrics endpoints.
    let metrics = crate::metrics::Metrics::for_node(&config.node_name);
    tokio::spawn(crate::metrics::run_sampler(
        metrics.clone(),
        crate::metrics::SAMPLE_INTERVAL,
    ));
    let endpoints = NodeEndpointsOf {
        endpoints: crate::agent::node_stats::NodeEndpoints {
            node_name: config.node_name.clone(),
            metrics,
            data_dir: config.data_dir.clone(),
            log_dir: crate::agent::node_logs::NODE_LOG_DIR.into(),
        },
        client: client.clone(),
    };
    let router = router(node, Arc::new(authz), Arc::new(endpoints));
    crate::apiserver::serve::serve(listener, tls, authn, router, std::future::pending())
        .await
        .map_err(|source| KubeletApiError::Listen { address, source })
}

fn tls_config(config: &KubeletApiConfig) -> Result<Arc<rustls::ServerConfig>, KubeletApiError> {
    use rustls_pki_types::pem::PemObject;
    let tls = |e: &dyn std::fmt::Display| KubeletApiError::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pki_types::CertificateDer::pem_slice_iter(config.ca_pem.as_bytes()) {
        roots.add(ca.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| tls(&e))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(config.serving.clone());
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

/// The node endpoints of this kubelet and how it lists its pods for them.
pub struct NodeEndpointsOf {
    pub endpoints: crate::agent::node_stats::NodeEndpoints,
    pub client: kube::Client,
}

impl NodeEndpointsOf {
    async fn serve(&self, path: &str) -> Response {
        let Some(endpoint) = crate::agent::node_stats::Endpoint::of(path) else {
            return respond(Err(ApiError::not_found("", "kubelet", "path")));
        };
        let pods = match endpoint.needs_pods() {
            true => match self.pods().await {
                Ok(pods) => pods,
                Err(e) => return respond(Err(e)),
            },
            false => Vec::new(),
        };
        respond(self.endpoints.serve(endpoint, pods).await)
    }

    /// The pods bound to this node, as the API server has them.
    async fn pods(&self) -> ApiResult<Vec<serde_json::Value>> {
        let api: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::all(self.client.clone());
        let params = kube::api::ListParams::default()
            .fields(&format!("spec.nodeName={}", self.endpoints.node_name));
        let list = api
            .list(&params)
            .await
            .map_err(|e| ApiError::unavailable(format!("cannot list this node's pods: {e}")))?;
        Ok(list
            .items
            .iter()
            .filter_map(|pod| serde_json::to_value(pod).ok())
            .collect())
    }
}

/// The kubelet API's routes, behind the check of who asks.
pub fn router(
    node: PodNode,
    authz: Arc<Authorizer>,
    endpoints: Arc<NodeEndpointsOf>,
) -> axum::Router {
    let node = Arc::new(node);
    let logs = {
        let node = node.clone();
        move |Path((ns, pod, container)): Path<(String, String, String)>, request: Request| {
            let node = node.clone();
            async move {
                let query = with_container(request.uri().query(), &container);
                respond(crate::apiserver::logs::serve(&node, &ns, &pod, Some(&query)).await)
            }
        }
    };
    let exec = stream(node.clone(), Kind::Exec);
    let attach = stream(node.clone(), Kind::Attach);
    let exec_with_uid = stream_with_uid(node.clone(), Kind::Exec);
    let attach_with_uid = stream_with_uid(node.clone(), Kind::Attach);
    let port_forward = {
        let node = node.clone();
        move |Path((ns, pod)): Path<(String, String)>, request: Request| {
            let node = node.clone();
            async move { serve(&node, Kind::PortForward, &ns, &pod, None, None, request).await }
        }
    };
    let port_forward_with_uid = {
        let node = node.clone();
        move |Path((ns, pod, uid)): Path<(String, String, String)>, request: Request| {
            let node = node.clone();
            async move {
                serve(
                    &node,
                    Kind::PortForward,
                    &ns,
                    &pod,
                    Some(uid),
                    None,
                    request,
                )
                .await
            }
        }
    };
    let node_endpoint = move |request: Request| {
        let endpoints = endpoints.clone();
        async move { endpoints.serve(request.uri().path()).await }
    };
    axum::Router::new()
        .route("/stats/summary", get(node_endpoint.clone()))
        .route("/metrics", get(node_endpoint.clone()))
        .route("/metrics/cadvisor", get(node_endpoint.clone()))
        .route("/metrics/resource", get(node_endpoint.clone()))
        .route("/logs", get(node_endpoint.clone()))
        .route("/logs/", get(node_endpoint.clone()))
        .route("/logs/{*path}", get(node_endpoint))
        .route("/containerLogs/{ns}/{pod}/{container}", get(logs))
        .route("/exec/{ns}/{pod}/{container}", any(exec))
        .route("/exec/{ns}/{pod}/{uid}/{container}", any(exec_with_uid))
        .route("/attach/{ns}/{pod}/{container}", any(attach))
        .route("/attach/{ns}/{pod}/{uid}/{container}", any(attach_with_uid))
        .route("/portForward/{ns}/{pod}", any(port_forward))
        .route("/portForward/{ns}/{pod}/{uid}", any(port_forward_with_uid))
        .fallback(|| async { respond(Err(ApiError::not_found("", "kubelet", "path"))) })
        .layer(axum::middleware::from_fn_with_state(authz, check_user))
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Exec,
    Attach,
    PortForward,
}

fn stream(
    node: Arc<PodNode>,
    kind: Kind,
) -> impl Fn(Path<(String, String, String)>, Request) -> futures::future::BoxFuture<'static, Response>
       + Clone
       + Send
       + Sync
       + 'static {
    move |Path((ns, pod, container)), request| {
        let node = node.clone();
        Box::pin(async move { serve(&node, kind, &ns, &pod, None, Some(container), request).await })
    }
}

fn stream_with_uid(
    node: Arc<PodNode>,
    kind: Kind,
) -> impl Fn(
    Path<(String, String, String, String)>,
    Request,
) -> futures::future::BoxFuture<'static, Response>
       + Clone
       + Send
       + Sync
       + 'static {
    move |Path((ns, pod, uid, container)), request| {
        let node = node.clone();
        Box::pin(
            async move { serve(&node, kind, &ns, &pod, Some(uid), Some(container), request).await },
        )
    }
}

async fn serve(
    node: &PodNode,
    kind: Kind,
    namespace: &str,
    name: &str,
    uid: Option<String>,
    container: Option<String>,
    mut request: Request,
) -> Response {
    let result = async {
        if let Some(uid) = uid {
            // The pod the API server meant, not a namesake created since.
            let pod = node.pod(namespace, name).await?;
            if pod["metadata"]["uid"].as_str() != Some(uid.as_str()) {
                return Err(ApiError::not_found("", "pods", name));
            }
        }
        if let Some(container) = container {
            let query = with_container(request.uri().query(), &container);
            let uri = format!("{}?{query}", request.uri().path())
                .parse()
                .map_err(|e| ApiError::bad_request(format!("bad request path: {e}")))?;
            *request.uri_mut() = uri;
        }
        match kind {
            Kind::Exec => {
                crate::apiserver::stream::serve_exec(node, namespace, name, request).await
            }
            Kind::Attach => {
                crate::apiserver::stream::serve_attach(node, namespace, name, request).await
            }
            Kind::PortForward => {
                crate::apiserver::stream::portforward::serve(node, namespace, name, request).await
            }
        }
    }
    .await;
    respond(result)
}

fn respond(result: ApiResult<Response>) -> Response {
    result.unwrap_or_else(|e| crate::apiserver::kubelet_proxy::status_response(&e))
}

/// The query with its `container` parameter set to `container` (the path names it).
fn with_container(query: Option<&str>, container: &str) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k != "container" {
            out.append_pair(&k, &v);
        }
    }
    out.append_pair("container", container);
    out.finish()
}

async fn check_user(
    axum::extract::State(authz): axum::extract::State<Arc<Authorizer>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(user) = request.extensions().get::<UserInfo>().cloned() else {
        return respond(Err(ApiError::new(401, "Unauthorized", "Unauthorized")));
    };
    match authz
        .authorize(&user, request.method(), request.uri().path())
        .await
    {
        Ok(()) => next.run(request).await,
        Err(error) => respond(Err(error)),
    }
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_in_the_path_replaces_any_in_the_query() {
        assert_eq!(
            with_container(Some("command=ls&container=x&command=-l"), "app"),
            "command=ls&command=-l&container=app"
        );
        assert_eq!(with_container(None, "a b"), "container=a+b");
    }
}
