//! Node IPAM (upstream's `nodeipam` controller with the range allocator): every Node gets
//! `spec.podCIDR`, a /24 slice of the cluster pod CIDR: the lowest free one, so the first node
//! to register (a single server's own) gets the slice a single-node berth has always used, and
//! nothing moves when nodes join. It runs on the leader only: with servers sharing a store, two
//! allocators would hand one slice out twice.

use std::collections::BTreeSet;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;

use crate::network::Ipv4Cidr;

/// A node's slice length, as a single node's.
pub const SLICE_LEN: u8 = 24;

/// The slices of `cluster` handed out, lowest free index first.
pub struct Allocator {
    cluster: Ipv4Cidr,
    slice_len: u8,
}

impl Allocator {
    pub fn new(cluster: Ipv4Cidr) -> Allocator {
        Allocator {
            cluster,
            slice_len: cluster.prefix_len().max(SLICE_LEN),
        }
    }

    fn count(&self) -> u32 {
        1u32.checked_shl(u32::from(self.slice_len - self.cluster.prefix_len()))
            .unwrap_or(u32::MAX)
    }

    /// A slice no node holds (`taken`); None when all are taken.
    pub fn allocate(&self, taken: &BTreeSet<String>) -> Option<Ipv4Cidr> {
        (0..self.count())
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
        let Some(slice) = allocator.allocate(&taken) else {
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

    fn set(slices: &[&str]) -> BTreeSet<String> {
        slices.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_first_node_gets_the_first_slice_and_later_ones_the_lowest_free_one() {
        let allocator = Allocator::new("10.42.0.0/16".parse().unwrap());
        assert_eq!(
            allocator.allocate(&set(&[])).unwrap().to_string(),
            "10.42.0.0/24"
        );
        assert_eq!(
            allocator
                .allocate(&set(&["10.42.0.0/24"]))
                .unwrap()
                .to_string(),
            "10.42.1.0/24"
        );
        let taken = set(&["10.42.0.0/24", "10.42.1.0/24", "10.42.3.0/24"]);
        assert_eq!(
            allocator.allocate(&taken).unwrap().to_string(),
            "10.42.2.0/24"
        );
    }

    #[test]
    fn a_full_cluster_cidr_allocates_nothing() {
        let allocator = Allocator::new("10.42.0.0/23".parse().unwrap());
        assert_eq!(
            allocator.allocate(&set(&["10.42.0.0/24", "10.42.1.0/24"])),
            None
        );
        let tiny = Allocator::new("10.42.0.0/25".parse().unwrap());
        assert_eq!(
            tiny.allocate(&set(&[])).unwrap().to_string(),
            "10.42.0.0/25"
        );
        assert_eq!(tiny.allocate(&set(&["10.42.0.0/25"])), None);
    }
}
