//! Objects every cluster has from the first start.

use serde_json::json;

use super::Registry;
use crate::api::resources;
use crate::api::ApiResult;

/// Namespaces upstream creates at start.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates what is missing; existing objects are left as they are.
pub async fn ensure_system_objects(
    registry: &Registry,
    dns_ip: std::net::Ipv4Addr,
) -> ApiResult<()> {
    let namespaces = resources::find("", "v1", "namespaces").expect("namespaces are always served");
    for name in SYSTEM_NAMESPACES {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match registry.create(namespaces, "", body, false).await {
            Ok(_) => tracing::info!(namespace = name, "created namespace"),
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    let services = resources::find("", "v1", "services").expect("services are always served");
    let ip = registry.service_network().nth(1).to_string();
    let body = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": ip, "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]},
    });
    match registry.create(services, "default", body, false).await {
        Ok(_) => {}
        Err(e) if e.code == 409 => {}
        Err(e) => return Err(e),
    }
    // The cluster DNS answers in-process; its Service reserves the well-known IP and lets
    // clients (and `kubectl get svc -A`) see it as they would upstream.
    let dns = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kube-dns", "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
        "spec": {"clusterIP": dns_ip.to_string(), "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
        ]},
    });
    match registry.create(services, "kube-system", dns, false).await {
        Ok(_) => {}
        Err(e) if e.code == 409 => {}
        Err(e) => return Err(e),
    }
    crate::admission::priority::ensure_system_classes(registry).await?;
    let moved = super::legacy_events::migrate(registry).await?;
    if moved > 0 {
        tracing::info!(moved, "moved events.k8s.io Events into the one event store");
    }
    let freed = super::services::repair(registry.store()).await?;
    if freed > 0 {
        tracing::info!(freed, "released service allocations left by a crash");
    }
    Ok(())
}
