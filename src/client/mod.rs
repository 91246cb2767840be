//! The in-process `kube::Client`: its transport is the API server's own router, so controllers
//! and the agent use the real API (validation, resourceVersions, watch) without TCP or TLS.

use tower::ServiceBuilder;

use crate::apiserver::authn::UserInfo;

/// A client that acts as `user` against `router`.
pub fn in_process(router: axum::Router, user: UserInfo) -> kube::Client {
    let agent = user_agent_of(&user.name);
    let service = ServiceBuilder::new()
        .layer(axum::Extension(user))
        .map_request(move |mut request: http::Request<_>| {
            request
                .headers_mut()
                .insert(http::header::USER_AGENT, agent.clone());
            request
        })
        .service(router);
    kube::Client::new(service, "default")
}

/// The User-Agent upstream's components send, so managedFields name the same managers
/// (`kube-controller-manager`, `kubelet`, ...).
fn user_agent_of(user: &str) -> http::HeaderValue {
    let component = match user.strip_prefix("system:").unwrap_or(user) {
        "controllers" | "generic-garbage-collector" => "kube-controller-manager",
        c if c.ends_with("-controller") => "kube-controller-manager",
        "node" => "kubelet",
        other => other,
    };
    let text = format!("{component}/v1.35.0 (linux) berth");
    http::HeaderValue::from_str(&text).unwrap_or(http::HeaderValue::from_static("berth"))
}

/// The user a berth component acts as: `system:<component>`, allowed what its bootstrap
/// ClusterRole grants (see `apiserver::rbac::bootstrap::COMPONENTS`), not everything.
pub fn system_user(component: &str) -> UserInfo {
    UserInfo {
        name: format!("system:{component}"),
        uid: String::new(),
        groups: vec!["system:authenticated".into()],
    }
}
