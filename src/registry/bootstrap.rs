//! Objects every cluster has from the first start.

use serde_json::json;

use super::Registry;
use crate::api::resources;
use crate::api::ApiResult;

/// Namespaces upstream creates at start.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates what is missing; existing objects are left as they are.
pub async fn ensure_system_objects(registry: &Registry) -> ApiResult<()> {
    let namespaces = resources::find("", "v1", "namespaces").expect("namespaces are always served");
    for name in SYSTEM_NAMESPACES {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match registry.create(namespaces, "", body, false).await {
            Ok(_) => tracing::info!(namespace = name, "created namespace"),
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
