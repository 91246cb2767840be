//! The HTTPS API: authentication gate, health, discovery, REST verbs and watch streams.
//!
//! The router is a plain `axum::Router`, so the same code serves TLS clients (see `serve`) and the
//! in-process client (see `crate::client`).

pub(crate) mod apply;
pub mod auth_limit;
pub mod authn;
mod cbor;
mod converted;
mod converted_apply;
pub mod discovery;
mod fieldset;
pub mod kubelet_proxy;
pub(crate) mod logs;
pub(crate) mod managed;
pub mod metrics;
pub mod node_proxy;
pub mod openapi;
pub(crate) mod patch;
mod query;
pub mod rbac;
pub mod request;
mod response;
mod rest;
mod reviews;
pub mod sa_token;
pub mod serve;
mod strategic;
pub(crate) mod stream;
mod subresources;
mod table;
pub mod token_review;
mod watch;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::Method;

use crate::api::ApiError;
use crate::registry::Registry;
use authn::UserInfo;
use response::{error_response, json_response, text_response};

/// Shared state of the API server.
pub struct ApiServer {
    pub registry: Registry,
    pub max_body_bytes: usize,
    /// `host:port` clients reach us at, for `/api`'s serverAddressByClientCIDRs.
    server_address: RwLock<String>,
    ready: AtomicBool,
    /// Where this node's container logs are, for `pods/log` (set when the node runs pods).
    pod_logs_dir: std::sync::OnceLock<std::path::PathBuf>,
    /// Signs TokenRequests (set when the server has a service account key).
    token_signer: std::sync::OnceLock<Arc<sa_token::TokenSigner>>,
    /// The runtime of this node's pods, for `pods/exec` and `pods/portforward`.
    pod_runtime: std::sync::OnceLock<crate::runtime::ShimRuntime>,
    /// Authorizes every request once set; until then every authenticated user may do anything.
    rbac: std::sync::OnceLock<Arc<rbac::Rbac>>,
    /// This node's resource usage, for `metrics.k8s.io` (set when the node runs pods).
    metrics: std::sync::OnceLock<crate::metrics::Metrics>,
    /// Reaches other nodes' kubelets for their pods' logs and streams.
    kubelet_client: std::sync::OnceLock<Arc<kubelet_proxy::KubeletClient>>,
    /// Proxies the groups of service-backed APIServices (set once the front proxy is set up).
    aggregator: std::sync::OnceLock<Arc<crate::aggregator::Aggregator>>,
}

impl ApiServer {
    pub fn new(registry: Registry, max_body_bytes: usize) -> Arc<ApiServer> {
        Arc::new(ApiServer {
            registry,
            max_body_bytes,
            server_address: RwLock::new(String::new()),
            ready: AtomicBool::new(false),
            pod_logs_dir: std::sync::OnceLock::new(),
            token_signer: std::sync::OnceLock::new(),
            pod_runtime: std::sync::OnceLock::new(),
            rbac: std::sync::OnceLock::new(),
            metrics: std::sync::OnceLock::new(),
            kubelet_client: std::sync::OnceLock::new(),
            aggregator: std::sync::OnceLock::new(),
        })
    }

    pub fn set_server_address(&self, address: String) {
        if let Ok(mut a) = self.server_address.write() {
            *a = address;
        }
    }

    /// `pods/log` reads container logs from `dir` from now on.
    pub fn set_pod_logs_dir(&self, dir: std::path::PathBuf) {
        let _ = self.pod_logs_dir.set(dir);
    }

    pub(crate) fn pod_logs_dir(&self) -> Option<std::path::PathBuf> {
        self.pod_logs_dir.get().cloned()
    }

    /// `serviceaccounts/<name>/token` signs with `signer` from now on.
    pub fn set_token_signer(&self, signer: Arc<sa_token::TokenSigner>) {
        let _ = self.token_signer.set(signer);
    }

    pub(crate) fn token_signer(&self) -> Option<Arc<sa_token::TokenSigner>> {
        self.token_signer.get().cloned()
    }

    /// Streaming subresources reach this node's pods through `runtime` from now on.
    pub fn set_pod_runtime(&self, runtime: crate::runtime::ShimRuntime) {
        let _ = self.pod_runtime.set(runtime);
    }

    pub(crate) fn pod_runtime(&self) -> Option<crate::runtime::ShimRuntime> {
        self.pod_runtime.get().cloned()
    }

    /// Pods not on this server's own node are reached through their kubelets from now on.
    pub fn set_kubelet_client(&self, client: Arc<kubelet_proxy::KubeletClient>) {
        let _ = self.kubelet_client.set(client);
    }

    pub(crate) fn kubelet_client(&self) -> Option<Arc<kubelet_proxy::KubeletClient>> {
        self.kubelet_client.get().cloned()
    }

    /// Every request is authorized by `rbac` from now on.
    pub fn enable_rbac(&self, rbac: Arc<rbac::Rbac>) {
        let _ = self.rbac.set(rbac);
    }

    pub(crate) fn rbac(&self) -> Option<Arc<rbac::Rbac>> {
        self.rbac.get().cloned()
    }

    /// `metrics.k8s.io` serves `metrics` from now on.
    pub fn set_metrics(&self, metrics: crate::metrics::Metrics) {
        let _ = self.metrics.set(metrics);
    }

    pub(crate) fn metrics(&self) -> Option<crate::metrics::Metrics> {
        self.metrics.get().cloned()
    }

    /// Service-backed APIServices are proxied by `aggregator` from now on.
    pub fn set_aggregator(&self, aggregator: Arc<crate::aggregator::Aggregator>) {
        let _ = self.aggregator.set(aggregator);
    }

    /// `/readyz` answers ok from now on.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .fallback(handle)
            .with_state(self.clone())
    }
}

async fn handle(State(server): State<Arc<ApiServer>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    match path.as_str() {
        "/livez" | "/healthz" => return text_response(200, "ok"),
        "/readyz" => {
            return match server.ready.load(Ordering::SeqCst) {
                true => text_response(200, "ok"),
                false => text_response(503, "not ready"),
            }
        }
        "/version" => return json_response(200, &discovery::version()),
        _ => {}
    }
    if let Some(response) = token_review::oidc_discovery(&server, &path) {
        return response; // public keys, open to anonymous users as upstream's discovery role
    }
    let user = request.extensions().get::<UserInfo>().cloned();
    let user = match (user, server.rbac()) {
        (None, _) => return error_response(&ApiError::unauthorized()),
        (Some(u), Some(rbac)) => {
            return match rbac::gate::check(
                &rbac,
                u,
                request.method().as_str(),
                &path,
                request.uri().query().unwrap_or(""),
                request.headers(),
            ) {
                Ok(user) => {
                    let mut request = request;
                    if let Some(extra) = rbac::gate::impersonated_extra(request.headers()) {
                        request.extensions_mut().insert(extra);
                    }
                    request.extensions_mut().insert(user.clone());
                    route(&server, &path, user, request).await
                }
                Err(denied) => error_response(&denied),
            };
        }
        (Some(u), None) if u.is_anonymous() => {
            let verb = request.method().as_str().to_lowercase();
            return error_response(&ApiError::forbidden(format!(
                "forbidden: User \"system:anonymous\" cannot {verb} path \"{path}\""
            )));
        }
        (Some(u), None) => u,
    };
    route(&server, &path, user, request).await
}

/// Serves an authenticated (and authorized) request.
async fn route(
    server: &Arc<ApiServer>,
    path: &str,
    user: UserInfo,
    mut request: Request,
) -> Response {
    let server = server.clone();
    let path = path.to_string();
    if let Some(review) = reviews::route(&path) {
        let wants_cbor = cbor::negotiate(&mut request);
        let response = reviews::serve(&server, review, &user, request)
            .await
            .unwrap_or_else(|e| error_response(&e));
        return cbor::answer(wants_cbor, response).await;
    }
    if let Some(aggregator) = server.aggregator.get() {
        if let Some(remote) = aggregator.remote_for(&path) {
            return crate::aggregator::proxy::forward(aggregator, &remote, &user, request)
                .await
                .unwrap_or_else(|e| error_response(&e));
        }
    }
    if let Some((node, kubelet_path)) = node_proxy::route(&path) {
        return node_proxy::serve(&server, &node, &kubelet_path, request)
            .await
            .unwrap_or_else(|e| error_response(&e));
    }
    if let Some(metrics_route) = metrics::route(&path) {
        return metrics::serve(&server, metrics_route, &request);
    }
    if openapi::serves(&path) {
        return openapi::handle(&request);
    }
    match request::parse_path(&path) {
        Ok(request::Target::Discovery {
            group,
            version,
            legacy,
        }) => discovery_response(&server, &request, group, version, legacy),
        Ok(request::Target::Resource(target)) => {
            let wants_cbor = cbor::negotiate(&mut request);
            let handled = crate::admission::as_user(user, rest::handle(&server, target, request));
            let (response, warnings) = crate::admission::warnings::collect(handled).await;
            let response = crate::admission::warnings::add_headers(response, &warnings);
            cbor::answer(wants_cbor, response).await
        }
        Err(e) => error_response(&e),
    }
}

fn discovery_response(
    server: &ApiServer,
    request: &Request,
    group: Option<String>,
    version: Option<String>,
    legacy: bool,
) -> Response {
    if request.method() != Method::GET {
        return error_response(&ApiError::method_not_allowed(
            request.method().as_str(),
            request.uri().path(),
        ));
    }
    let accept = request
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let doc = match (group, version) {
        (None, None) if discovery::wants_aggregated(accept) => {
            let mut doc = discovery::aggregated(legacy);
            if let (false, Some(aggregator)) = (legacy, server.aggregator.get()) {
                aggregator.extend_aggregated(&mut doc);
            }
            let body = doc.to_string();
            return Response::builder()
                .status(200)
                .header(
                    http::header::CONTENT_TYPE,
                    discovery::AGGREGATED_CONTENT_TYPE,
                )
                .body(Body::from(body))
                .unwrap_or_else(|_| text_response(500, "response build failed"));
        }
        (None, None) if legacy => {
            let address = server
                .server_address
                .read()
                .map(|a| a.clone())
                .unwrap_or_default();
            Some(discovery::api_versions(&address))
        }
        (None, None) => {
            let mut list = discovery::api_group_list();
            if let Some(aggregator) = server.aggregator.get() {
                aggregator.extend_group_list(&mut list);
            }
            Some(list)
        }
        (None, Some(v)) => discovery::resource_list("", &v),
        (Some(g), None) => discovery::api_group_doc(&g)
            .or_else(|| server.aggregator.get().and_then(|a| a.group_doc(&g))),
        (Some(g), Some(v)) => discovery::resource_list(&g, &v),
    };
    match doc {
        Some(doc) => json_response(200, &doc),
        None => error_response(&ApiError::no_route(request.uri().path())),
    }
}
