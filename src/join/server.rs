//! What the server publishes so that nodes can join: the `cluster-info` ConfigMap in
//! `kube-public` (the CA, readable by anyone, as kubeadm publishes it), and the bindings that let
//! bootstrap tokens ask for node certificates and let nodes (`system:nodes`) do a kubelet's work.
//! The node authorizer (`join::node_authz`) narrows what each node may touch.

use serde_json::{json, Value};

use crate::api::resources;
use crate::api::ApiResult;
use crate::registry::{generic::Part, Registry};

use super::token::NODE_TOKEN_GROUP;

pub const CLUSTER_INFO: &str = "cluster-info";
pub const PUBLIC_NAMESPACE: &str = "kube-public";
const RBAC: &str = "rbac.authorization.k8s.io";
/// The ClusterRoles a joined node's identity is bound to: a kubelet's, a kube-proxy's and the
/// network policy controller's, since the agent runs all three under one certificate.
const NODE_ROLES: &[&str] = &[
    "system:node",
    "system:node-proxier",
    "system:berth:network-policy",
];

/// The kubeconfig kubeadm puts into `cluster-info`: the server and its CA, no credentials.
pub fn cluster_info_kubeconfig(server_url: &str, ca_pem: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let server = Value::String(server_url.to_string());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: \"\"\n  cluster:\n    certificate-authority-data: {ca}\n    server: {server}\ncontexts: []\ncurrent-context: \"\"\npreferences: {{}}\nusers: []\n"
    )
}

fn objects(
    server_url: &str,
    ca_pem: &str,
) -> Vec<(&'static str, &'static str, &'static str, Value)> {
    let group = |name: &str| json!({"apiGroup": RBAC, "kind": "Group", "name": name});
    let mut objects = vec![
        (
            "",
            "configmaps",
            PUBLIC_NAMESPACE,
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": CLUSTER_INFO, "namespace": PUBLIC_NAMESPACE},
                "data": {"kubeconfig": cluster_info_kubeconfig(server_url, ca_pem)},
            }),
        ),
        (
            RBAC,
            "roles",
            PUBLIC_NAMESPACE,
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "berth:bootstrap-signer-clusterinfo", "namespace": PUBLIC_NAMESPACE},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                           "resourceNames": [CLUSTER_INFO], "verbs": ["get"]}],
            }),
        ),
        (
            RBAC,
            "rolebindings",
            PUBLIC_NAMESPACE,
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "berth:bootstrap-signer-clusterinfo", "namespace": PUBLIC_NAMESPACE},
                "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "berth:bootstrap-signer-clusterinfo"},
                "subjects": [{"apiGroup": RBAC, "kind": "User", "name": "system:anonymous"}],
            }),
        ),
        (
            RBAC,
            "clusterroles",
            "",
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "system:node-bootstrapper"},
                "rules": [{"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"],
                           "verbs": ["create", "get", "list", "watch"]}],
            }),
        ),
        (
            RBAC,
            "clusterrolebindings",
            "",
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "berth:kubelet-bootstrap"},
                "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "system:node-bootstrapper"},
                "subjects": [group(NODE_TOKEN_GROUP)],
            }),
        ),
    ];
    for role in NODE_ROLES {
        let name: &'static str = match *role {
            "system:node" => "berth:nodes:system:node",
            "system:node-proxier" => "berth:nodes:system:node-proxier",
            _ => "berth:nodes:system:berth:network-policy",
        };
        objects.push((
            RBAC,
            "clusterrolebindings",
            "",
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": name},
                "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
                "subjects": [group(super::node_authz::NODES_GROUP)],
            }),
        ));
    }
    objects
}

/// The API endpoint `cluster-info` names, as kubeadm's control-plane endpoint.
#[derive(Clone, Copy, Debug)]
pub enum Endpoint<'a> {
    /// Configured (`api.advertise_url`: a name or address that reaches any server): written
    /// over whatever is there.
    Advertised(&'a str),
    /// This server's own URL: written only when `cluster-info` names none yet, so servers on
    /// one datastore do not overwrite each other's at every start.
    ThisServer(&'a str),
}

/// The server `cluster-info`'s kubeconfig names, if it names one.
fn named_server(cluster_info: &Value) -> Option<String> {
    let text = cluster_info["data"]["kubeconfig"].as_str()?;
    let config: kube::config::Kubeconfig = serde_yaml_ng::from_str(text).ok()?;
    config.clusters.first()?.cluster.as_ref()?.server.clone()
}

/// Creates the objects, or brings them back to what berth needs (the CA may be new).
pub async fn publish(registry: &Registry, endpoint: Endpoint<'_>, ca_pem: &str) -> ApiResult<()> {
    let server_url = match endpoint {
        Endpoint::Advertised(url) | Endpoint::ThisServer(url) => url,
    };
    for (group, plural, namespace, body) in objects(server_url, ca_pem) {
        let is_cluster_info = body["metadata"]["name"] == CLUSTER_INFO;
        put(registry, group, plural, namespace, body, &|old, new| {
            if let (Endpoint::ThisServer(_), Some(named)) =
                (endpoint, named_server(old).filter(|_| is_cluster_info))
            {
                new["data"]["kubeconfig"] = Value::String(cluster_info_kubeconfig(&named, ca_pem));
            }
        })
        .await?;
    }
    Ok(())
}

/// Creates `body`, or replaces the object of its name with it, keeping the old metadata;
/// `adjust(old, new)` may carry more of the old object over.
pub(super) async fn put(
    registry: &Registry,
    group: &str,
    plural: &str,
    namespace: &str,
    body: Value,
    adjust: &(dyn Fn(&Value, &mut Value) + Sync),
) -> ApiResult<()> {
    let Some(r) = resources::find(group, "v1", plural) else {
        return Ok(());
    };
    let name = body["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    match registry.create(r, namespace, body.clone(), false).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => registry
            .update_with(r, namespace, &name, Part::Main, false, |old| {
                let mut new = body.clone();
                adjust(old, &mut new);
                new["metadata"] = old["metadata"].clone();
                Ok(new)
            })
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_info_carries_the_ca_and_the_server_but_no_credentials() {
        let text = cluster_info_kubeconfig("https://10.0.0.1:6443", "PEM");
        let config: kube::config::Kubeconfig = serde_yaml_ng::from_str(&text).unwrap();
        let cluster = config.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://10.0.0.1:6443"));
        assert_eq!(cluster.certificate_authority_data.as_deref(), Some("UEVN"));
        assert!(config.auth_infos.is_empty());
    }

    #[test]
    fn the_server_cluster_info_names_is_read_back() {
        let text = cluster_info_kubeconfig("https://lb.example:6443", "PEM");
        let cluster_info = json!({"data": {"kubeconfig": text}});
        assert_eq!(
            named_server(&cluster_info).as_deref(),
            Some("https://lb.example:6443")
        );
        assert_eq!(named_server(&json!({"data": {}})), None);
    }
}

/// The server's part in joining that every server does: bootstrap tokens are accepted by the
/// authenticator (see `daemon`); this publishes `cluster-info` and the bindings.
pub async fn start(
    registry: &Registry,
    endpoint: Endpoint<'_>,
    pki: &crate::pki::Pki,
) -> anyhow::Result<()> {
    publish(registry, endpoint, &pki.ca_cert_pem)
        .await
        .map_err(|e| anyhow::anyhow!("cannot publish cluster-info: {}", e.message))
}

/// The controllers of joining, run by the leader alone: the certificate approver and signer
/// (two would race on one CSR) and node IPAM (two would hand one pod CIDR out twice).
pub fn start_controllers(
    client: &dyn Fn(&str) -> kube::Client,
    signer: super::csr::Signer,
    cluster_cidr: crate::network::Ipv4Cidr,
    components: &mut tokio::task::JoinSet<anyhow::Result<()>>,
) {
    let c = client("certificate-controller");
    components.spawn(async move {
        super::csr::run(c, signer).await;
        anyhow::bail!("the certificate controller stopped")
    });
    let c = client("node-ipam-controller");
    let allocator = super::nodeipam::Allocator::new(cluster_cidr);
    components.spawn(async move {
        super::nodeipam::run(c, allocator).await;
        anyhow::bail!("the node IPAM controller stopped")
    });
    let c = client("bootstrap-signer");
    components.spawn(async move {
        super::cluster_info_jws::run(c).await;
        anyhow::bail!("the bootstrap signer stopped")
    });
}
