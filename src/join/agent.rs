//! `berth agent`: a worker node. It joins (see [`super::bootstrap`]) and then runs only a
//! node's parts against the remote API over HTTPS with its own certificate: the Node heartbeat,
//! the pod workers, the kubelet API, the service proxy and network policy, and the renewal of
//! its certificate. No store, controllers or scheduler.
//!
//! Running pods do not depend on the agent: shims own them. When the server is away, the
//! watches retry with back-off and the heartbeat keeps trying, so the agent picks up again
//! when the server is back.

use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use tokio::task::JoinSet;

use super::bootstrap::{self, JoinRequest};
use crate::config::Config;

/// What `berth agent` was asked to do.
pub struct AgentOptions {
    pub server_url: String,
    pub token: Option<String>,
    pub ca_cert_hash: Option<String>,
    pub unsafe_skip_ca_verification: bool,
}

/// Serves the node's kubelet API (pods' logs, exec, attach, port-forward) to API servers on
/// other machines: an agent's, and a server's own node when other servers share its store.
pub fn spawn_kubelet_api(
    components: &mut JoinSet<anyhow::Result<()>>,
    client: kube::Client,
    node_name: &str,
    data_dir: &std::path::Path,
    pods_run_dir: &std::path::Path,
    ca_pem: &str,
    own_serving: Option<(String, String)>,
) {
    let (node_name, data_dir) = (node_name.to_owned(), data_dir.to_path_buf());
    let run_dir = pods_run_dir.to_path_buf();
    let ca_pem = ca_pem.to_owned();
    components.spawn(async move {
        let kubelet = |serving| crate::agent::kubelet_api::KubeletApiConfig {
            node_name: node_name.clone(),
            port: crate::agent::kubelet_api::DEFAULT_PORT,
            serving,
            data_dir: data_dir.clone(),
            run_dir: run_dir.clone(),
            ca_pem: ca_pem.clone(),
        };
        // A server holds the cluster CA and serves with the API server's certificate, which
        // already names the node's addresses.
        if let Some((cert, key)) = own_serving {
            let serving = std::sync::Arc::new(super::serving::ServingCert::new(&cert, &key)?);
            crate::agent::kubelet_api::run(client, kubelet(serving)).await?;
            anyhow::bail!("the kubelet API stopped")
        }
        // An agent asks for one through a CSR; the Node must be registered first: the approver
        // checks the request against its addresses.
        let (cert, key) = super::serving::ensure(&client, &data_dir, &node_name).await?;
        let serving = std::sync::Arc::new(super::serving::ServingCert::new(&cert, &key)?);
        let renewal = super::serving::renew_forever(
            client.clone(),
            data_dir.clone(),
            node_name.clone(),
            serving.clone(),
        );
        tokio::select! {
            served = crate::agent::kubelet_api::run(client, kubelet(serving)) => served?,
            () = renewal => anyhow::bail!("the kubelet serving certificate renewal stopped"),
        }
        anyhow::bail!("the kubelet API stopped")
    });
}

/// The slowest retry of a failed registration.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub async fn run(config: Config, options: AgentOptions) -> anyhow::Result<()> {
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let dir = &config.data_dir;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create data dir {}", dir.display()))?;
        // It holds the node's key.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private", dir.display()))?;
    }
    let node_name = config.node_name();
    let join = JoinRequest {
        server_url: &options.server_url,
        token: options.token.as_deref(),
        ca_cert_hash: options.ca_cert_hash.as_deref(),
        unsafe_skip_ca_verification: options.unsafe_skip_ca_verification,
        node_name: &node_name,
    };
    let identity = bootstrap::ensure_identity(&config.data_dir, &join).await?;
    let cert = std::sync::Arc::new(super::rotation::NodeCert::new(&identity)?);
    let client = bootstrap::node_client(&options.server_url, &identity.ca_pem, cert.clone())?;

    let mut components: JoinSet<anyhow::Result<()>> = JoinSet::new();
    {
        let rotation = super::rotation::run(
            client.clone(),
            bootstrap::Credentials::new(&config.data_dir),
            node_name.clone(),
            identity.ca_pem.clone(),
            cert,
        );
        components.spawn(async move {
            rotation.await;
            anyhow::bail!("the node certificate renewal stopped")
        });
    }
    let addresses = crate::daemon::node_addresses(&node_name);
    let mut facts = crate::agent::node::NodeFacts::gather(
        &node_name,
        &config.data_dir,
        addresses.clone(),
        None,
    );
    facts.kubelet_port = Some(crate::agent::kubelet_api::DEFAULT_PORT);
    spawn_kubelet_api(
        &mut components,
        client.clone(),
        &node_name,
        &config.data_dir,
        &config.pods_run_dir(),
        &identity.ca_pem,
        None,
    );
    {
        let client = client.clone();
        components.spawn(async move {
            heartbeat(client, facts).await;
            anyhow::bail!("the node heartbeat stopped")
        });
    }
    // The bridge and IPAM use the slice node IPAM gave this Node.
    let slice = wait_for_pod_cidr(&client, &node_name).await;
    tracing::info!(node = %node_name, cidr = %slice, "using the node's pod CIDR");
    let mut agent_config = crate::daemon::agent_config(&config, &node_name)?;
    agent_config.network.pod_cidr_slice = slice;
    // Cluster DNS of this node's own, on its bridge gateway, answering from its own view of
    // Services and EndpointSlices (as NodeLocal DNSCache does upstream): the node's pods keep
    // resolving cluster names while the server is away. They are pointed at it directly.
    let mut dns_config = crate::dns::DnsConfig::from_config(&config)
        .context("cannot work out the cluster DNS settings")?;
    dns_config.listen = slice.gateway().unwrap_or(slice.network());
    dns_config.publish = false;
    agent_config.dns.cluster_dns = dns_config.listen;
    {
        let client = client.clone();
        components.spawn(async move {
            crate::dns::run(client, dns_config).await?;
            anyhow::bail!("the cluster DNS stopped")
        });
    }
    let cluster_cidr = agent_config.network.cluster_cidr;
    let routes =
        crate::network::routes::controller::RouteConfig::for_node(&config, &node_name, slice)?;
    if let Some(dir) = config.images.import_dir.clone() {
        let root = config.data_dir.join("images");
        tokio::task::spawn_blocking(move || crate::image_import::import_into(&root, &dir)).await?;
    }
    {
        let client = client.clone();
        components.spawn(async move {
            crate::agent::run(client, agent_config).await?;
            anyhow::bail!("the pod workers stopped")
        });
    }
    let proxy_config = crate::network::proxy::ProxyConfig {
        node_name: node_name.clone(),
        node_ips: crate::network::proxy::controller::node_ips(&cluster_cidr),
        cluster_cidr,
    };
    let policy_config = crate::network::policy::controller::PolicyConfig {
        node_name: node_name.clone(),
        node_ips: proxy_config.node_ips.clone(),
    };
    {
        let client = client.clone();
        components.spawn(async move {
            crate::network::proxy::controller::run(client, proxy_config).await?;
            anyhow::bail!("the service proxy stopped")
        });
    }
    {
        let client = client.clone();
        components.spawn(async move {
            crate::network::routes::controller::run(client, routes).await?;
            anyhow::bail!("the route controller stopped")
        });
    }
    components.spawn(async move {
        crate::network::policy::controller::run(client, policy_config).await?;
        anyhow::bail!("the network policy controller stopped")
    });
    tracing::info!(node = %node_name, server = %options.server_url, "berth agent is running");
    tokio::spawn(crate::runtime::memory::return_memory_while_running());

    let outcome = tokio::select! {
        signal = crate::daemon::shutdown_signal() => {
            tracing::info!(signal, "shutting down");
            Ok(())
        }
        Some(finished) = components.join_next() => match finished {
            Ok(Ok(())) => Err(anyhow::anyhow!("a component stopped unexpectedly")),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow::anyhow!("a component panicked: {e}")),
        },
    };
    components.abort_all();
    outcome.context("berth agent")
}

/// Registers the Node and keeps it fresh; a registration the server cannot take now (it is
/// down, restarting) is retried with back-off instead of ending the agent.
async fn heartbeat(client: kube::Client, facts: crate::agent::node::NodeFacts) {
    let mut backoff = Duration::from_secs(1);
    loop {
        if let Err(error) = crate::agent::node::run(client.clone(), facts.clone()).await {
            tracing::warn!(%error, retry_in = ?backoff, "cannot register the node");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The Node's `spec.podCIDR`, once node IPAM has set it.
pub(crate) async fn wait_for_pod_cidr(
    client: &kube::Client,
    node: &str,
) -> crate::network::Ipv4Cidr {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut logged = false;
    loop {
        let cidr = nodes
            .get_opt(node)
            .await
            .ok()
            .flatten()
            .and_then(|n| n.spec?.pod_cidr)
            .and_then(|c| c.parse().ok());
        if let Some(cidr) = cidr {
            return cidr;
        }
        if !logged {
            tracing::info!(node, "waiting for the node's pod CIDR");
            logged = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
