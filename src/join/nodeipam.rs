//! Node IPAM (upstream's `nodeipam` controller with the range allocator): every Node gets
//! `spec.podCIDR`, a /24 slice of the cluster pod CIDR. The server's own node keeps the first
//! slice, the one a single-node berth has always used, so nothing moves when nodes join.

use std::collections::BTreeSet;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;

use crate::network::Ipv4Cidr;

/// A node's slice length, as a single node's.
pub const SLICE_LEN: u8 = 24;

/// The slices of `cluster` handed out: by index, `reserved_for` always owning index 0.
pub struct Allocator {
    cluster: Ipv4Cidr,
    slice_len: u8,
    reserved_for: String,
}

impl Allocator {
    pub fn new(cluster: Ipv4Cidr, reserved_for: &str) -> Allocator {
        Allocator {
            cluster,
            slice_len: cluster.prefix_len().max(SLICE_LEN),
            reserved_for: reserved_for.to_string(),
        }
    }

    fn count(&self) -> u32 {
        1u32.checked_shl(u32::from(self.slice_len - self.cluster.prefix_len()))
            .unwrap_or(u32::MAX)
    }

    /// The slice for `node`, given the slices other nodes hold; None when all are taken.
    pub fn allocate(&self, node: &str, taken: &BTreeSet<String>) -> Option<Ipv4Cidr> {
        if node == self.reserved_for {
            return self.cluster.subnet(self.slice_len, 0);
        }
        (1..self.count())
            .filter_map(|index| self.cluster.subnet(self.slice_len, index))
            .find(|slice| !taken.contains(&slice.to_string()))
    }
}

fn pod_cidr(node: &Node) -> Option<String> {
    node.spec
        .as_ref()?
        .pod_cidr
        .clone()
        .filter(|c| !c.is_empty())
}

/// Gives every Node without one a pod CIDR, until the watch ends.
pub async fn run(client: kube::Client, allocator: Allocator) {
    let nodes: Api<Node> = Api::all(client);
    let mut events = watcher::watcher(nodes.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let node = match event {
            Ok(Event::Apply(node)) | Ok(Event::InitApply(node)) => node,
            Ok(_) => continue,
            Err(error) => {
                tracing::warn!(%error, "node watch error");
                continue;
            }
        };
        if pod_cidr(&node).is_some() {
            continue;
        }
        let name = node.metadata.name.clone().unwrap_or_default();
        // The event may be older than our own patch (a create and a status update arrive
        // before it): judge the stored Node, and write only over that version of it.
        let node = match nodes.get_opt(&name).await {
            Ok(Some(node)) if pod_cidr(&node).is_none() => node,
            Ok(_) => continue,
            Err(error) => {
                tracing::warn!(node = %name, %error, "cannot read the node");
                continue;
            }
        };
        let version = node.metadata.resource_version.clone().unwrap_or_default();
        // Re-listed each time: one allocation at a time, so what is taken is what is stored.
        let taken: BTreeSet<String> = match nodes.list(&Default::default()).await {
            Ok(list) => list.items.iter().filter_map(pod_cidr).collect(),
            Err(error) => {
                tracing::warn!(%error, "cannot list nodes");
                continue;
            }
        };
        let Some(slice) = allocator.allocate(&name, &taken) else {
            tracing::warn!(node = %name, "no pod CIDR left for the node");
            continue;
        };
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": version},
            "spec": {"podCIDR": slice.to_string(), "podCIDRs": [slice.to_string()]},
        });
        match nodes
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => tracing::info!(node = %name, cidr = %slice, "allocated the node's pod CIDR"),
            Err(error) => tracing::warn!(node = %name, %error, "cannot set the node's pod CIDR"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_keeps_the_first_slice_and_others_get_the_next_free_one() {
        let allocator = Allocator::new("10.42.0.0/16".parse().unwrap(), "server");
        let none = BTreeSet::new();
        assert_eq!(
            allocator.allocate("server", &none).unwrap().to_string(),
            "10.42.0.0/24"
        );
        assert_eq!(
            allocator.allocate("a", &none).unwrap().to_string(),
            "10.42.1.0/24"
        );
        let taken: BTreeSet<String> = ["10.42.0.0/24", "10.42.1.0/24", "10.42.3.0/24"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            allocator.allocate("b", &taken).unwrap().to_string(),
            "10.42.2.0/24"
        );
    }

    #[test]
    fn a_full_cluster_cidr_allocates_nothing() {
        let allocator = Allocator::new("10.42.0.0/23".parse().unwrap(), "server");
        let taken: BTreeSet<String> = ["10.42.1.0/24".to_string()].into();
        assert_eq!(allocator.allocate("b", &taken), None);
        let tiny = Allocator::new("10.42.0.0/25".parse().unwrap(), "server");
        assert_eq!(tiny.allocate("a", &BTreeSet::new()), None);
        assert_eq!(
            tiny.allocate("server", &BTreeSet::new())
                .unwrap()
                .to_string(),
            "10.42.0.0/25"
        );
    }
}
