//! The in-process `kube::Client`: its transport is the API server's own router, so controllers
//! and the agent use the real API (validation, resourceVersions, watch) without TCP or TLS.

use tower::ServiceBuilder;

use crate::apiserver::authn::UserInfo;

/// A client that acts as `user` against `router`.
pub fn in_process(router: axum::Router, user: UserInfo) -> kube::Client {
    let service = ServiceBuilder::new()
        .layer(axum::Extension(user))
        .service(router);
    kube::Client::new(service, "default")
}

/// The identity berth's own components use until they get users of their own.
pub fn system_user(component: &str) -> UserInfo {
    UserInfo {
        name: format!("system:{component}"),
        uid: String::new(),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
    }
}
