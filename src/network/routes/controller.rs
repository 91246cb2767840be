//! Keeps the node's routes to other nodes' pods in step with the Nodes: a Node watch feeds a
//! map of peers; after each change (and on a slow timer, to repair what someone else removed)
//! the whole plan is applied again, level-triggered.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;

use super::kernel::{self, LocalVtep};
use super::{plan, vtep_mac, vxlan_annotations, Backend, Peer};
use crate::network::links::Netlink;
use crate::network::{Ipv4Cidr, NetError};

/// How often the routes are re-applied without any Node change.
const RESYNC: Duration = Duration::from_secs(30);

/// What the route controller of one node needs.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub node_name: String,
    pub backend: Backend,
    /// This node's slice of the pod network.
    pub pod_cidr: Ipv4Cidr,
    /// The whole pod network: addresses in it are never taken for the node's own links.
    pub cluster_cidr: Ipv4Cidr,
    /// The node's InternalIP: where its VXLAN packets leave from and peers send theirs.
    pub node_ip: Ipv4Addr,
    /// The MTU of the link between nodes; the tunnel's is this less VXLAN's overhead.
    pub link_mtu: u32,
}

impl RouteConfig {
    /// The settings for node `node_name` holding pod CIDR `slice`, from berth's config.
    pub fn for_node(
        config: &crate::config::Config,
        node_name: &str,
        slice: Ipv4Cidr,
    ) -> Result<RouteConfig, NetError> {
        let node_ip = crate::daemon::node_addresses(node_name)
            .into_iter()
            .find(|(kind, _)| kind == "InternalIP")
            .and_then(|(_, ip)| ip.parse().ok())
            .unwrap_or(Ipv4Addr::LOCALHOST);
        Ok(RouteConfig {
            node_name: node_name.to_string(),
            backend: config.network.backend,
            pod_cidr: slice,
            cluster_cidr: config.network.pod_cidr.parse()?,
            node_ip,
            link_mtu: crate::network::DEFAULT_MTU,
        })
    }
}

/// Runs until the Node watch ends (it does not: it retries with back-off).
pub async fn run(client: kube::Client, config: RouteConfig) -> Result<(), NetError> {
    let nodes: Api<Node> = Api::all(client);
    let netlink = Netlink::here()?;
    let local = LocalVtep {
        mac: vtep_mac(&config.node_name),
        address: config.node_ip,
        pod_cidr: config.pod_cidr,
        mtu: config.link_mtu - super::VXLAN_OVERHEAD,
    };
    let mut events = watcher::watcher(nodes.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut peers: BTreeMap<String, Peer> = BTreeMap::new();
    let mut relisted: Option<BTreeMap<String, Peer>> = None;
    let mut published = false;
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { return Ok(()) };
                match event {
                    Ok(Event::Init) => relisted = Some(BTreeMap::new()),
                    Ok(Event::InitApply(node)) => {
                        if let (Some(fresh), Some(peer)) = (relisted.as_mut(), Peer::from_node(&node)) {
                            fresh.insert(peer.name.clone(), peer);
                        }
                        continue;
                    }
                    Ok(Event::InitDone) => {
                        if let Some(fresh) = relisted.take() {
                            peers = fresh;
                        }
                    }
                    Ok(Event::Apply(node)) => {
                        let name = node.metadata.name.clone().unwrap_or_default();
                        match Peer::from_node(&node) {
                            Some(peer) if peers.get(&name) == Some(&peer) => continue,
                            Some(peer) => {
                                peers.insert(name, peer);
                            }
                            None => {
                                peers.remove(&name);
                            }
                        }
                    }
                    Ok(Event::Delete(node)) => {
                        peers.remove(&node.metadata.name.clone().unwrap_or_default());
                    }
                    Err(error) => {
                        tracing::warn!(%error, "node watch error");
                        continue;
                    }
                }
            }
            _ = resync.tick() => {}
        }
        if relisted.is_some() {
            continue;
        }
        let peer_list: Vec<Peer> = peers.values().cloned().collect();
        let applied = async {
            let connected = kernel::connected_networks(&netlink, config.cluster_cidr).await?;
            let wanted = plan(config.backend, &config.node_name, &peer_list, &connected);
            kernel::apply(&netlink, &wanted, &local).await
        };
        match applied.await {
            Ok(has_device) => {
                if has_device && !published {
                    published = publish(&nodes, &config).await;
                }
            }
            Err(error) => tracing::warn!(%error, "cannot program the routes to other nodes"),
        }
    }
}

/// Publishes this node's VTEP in its Node's annotations; true once done.
async fn publish(nodes: &Api<Node>, config: &RouteConfig) -> bool {
    let annotations = vxlan_annotations(&config.node_name, config.node_ip);
    let patch = serde_json::json!({"metadata": {"annotations": annotations}});
    match nodes
        .patch(
            &config.node_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => {
            tracing::info!(node = %config.node_name, "published the node's VXLAN endpoint");
            true
        }
        Err(error) => {
            tracing::warn!(%error, "cannot publish the node's VXLAN endpoint");
            false
        }
    }
}
