//! What an aggregated API server reads to trust berth, as upstream publishes it: the
//! `kube-system/extension-apiserver-authentication` ConfigMap (the client CA, the front-proxy
//! CA, the allowed proxy name and the header names), the Role that lets servers read it and
//! the `system:auth-delegator` ClusterRole for their TokenReviews and SubjectAccessReviews.

use serde_json::{json, Value};

use crate::api::{resources, ApiResult};
use crate::pki::{FrontProxy, FRONT_PROXY_CLIENT_NAME};
use crate::registry::generic::Part;
use crate::registry::Registry;

pub const CONFIG_MAP: &str = "extension-apiserver-authentication";
const NAMESPACE: &str = "kube-system";
const READER_ROLE: &str = "extension-apiserver-authentication-reader";
const AUTH_DELEGATOR: &str = "system:auth-delegator";

/// The ConfigMap's data: lists are JSON arrays inside the strings, as upstream writes them.
fn config_map_data(cluster_ca_pem: &str, front_proxy: &FrontProxy) -> Value {
    let list = |items: &[&str]| json!(items).to_string();
    json!({
        "client-ca-file": cluster_ca_pem,
        "requestheader-client-ca-file": front_proxy.ca_cert_pem,
        "requestheader-allowed-names": list(&[FRONT_PROXY_CLIENT_NAME]),
        "requestheader-username-headers": list(&["X-Remote-User"]),
        "requestheader-uid-headers": list(&["X-Remote-Uid"]),
        "requestheader-group-headers": list(&["X-Remote-Group"]),
        "requestheader-extra-headers-prefix": list(&["X-Remote-Extra-"]),
    })
}

/// Writes the ConfigMap (replacing stale data, after a CA rotation say) and makes the roles
/// when they are missing.
pub async fn publish(
    registry: &Registry,
    cluster_ca_pem: &str,
    front_proxy: &FrontProxy,
) -> ApiResult<()> {
    let data = config_map_data(cluster_ca_pem, front_proxy);
    let config_maps = resource("", "v1", "configmaps")?;
    let body = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIG_MAP, "namespace": NAMESPACE},
        "data": data,
    });
    match registry.get_value(config_maps, NAMESPACE, CONFIG_MAP) {
        Ok(current) if current["data"] == data => {}
        Ok(_) => {
            registry
                .update_with(
                    config_maps,
                    NAMESPACE,
                    CONFIG_MAP,
                    Part::Main,
                    false,
                    |old| {
                        let mut new = old.clone();
                        new["data"] = data.clone();
                        Ok(new)
                    },
                )
                .await?;
        }
        Err(e) if e.code == 404 => {
            registry.create(config_maps, NAMESPACE, body, false).await?;
        }
        Err(e) => return Err(e),
    }
    let labels = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    let reader = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": READER_ROLE, "namespace": NAMESPACE, "labels": labels},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [CONFIG_MAP],
                   "verbs": ["get", "list", "watch"]}],
    });
    create_missing(
        registry,
        resource("rbac.authorization.k8s.io", "v1", "roles")?,
        NAMESPACE,
        reader,
    )
    .await?;
    let delegator = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": AUTH_DELEGATOR, "labels": labels},
        "rules": [
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
            {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
        ],
    });
    let cluster_roles = resource("rbac.authorization.k8s.io", "v1", "clusterroles")?;
    create_missing(registry, cluster_roles, "", delegator).await
}

fn resource(group: &str, version: &str, plural: &str) -> ApiResult<&'static resources::Resource> {
    resources::find(group, version, plural)
        .ok_or_else(|| crate::api::ApiError::internal(format!("{plural}.{group} is not served")))
}

async fn create_missing(
    registry: &Registry,
    r: &'static resources::Resource,
    namespace: &str,
    body: Value,
) -> ApiResult<()> {
    match registry.create(r, namespace, body, false).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_map_names_the_proxy_and_its_headers_as_json_lists() {
        let front_proxy = FrontProxy {
            ca_cert_pem: "FRONT".into(),
            client_cert_pem: String::new(),
            client_key_pem: String::new(),
        };
        let data = config_map_data("CLUSTER", &front_proxy);
        assert_eq!(data["client-ca-file"], "CLUSTER");
        assert_eq!(data["requestheader-client-ca-file"], "FRONT");
        let allowed: Vec<String> = serde_json::from_str(
            data["requestheader-allowed-names"]
                .as_str()
                .expect("a string"),
        )
        .expect("a JSON list");
        assert_eq!(allowed, vec!["front-proxy-client"]);
        assert_eq!(data["requestheader-group-headers"], r#"["X-Remote-Group"]"#);
        assert_eq!(
            data["requestheader-extra-headers-prefix"],
            r#"["X-Remote-Extra-"]"#
        );
    }
}
