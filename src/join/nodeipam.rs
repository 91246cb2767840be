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

/// How often one node's allocation is tried again after losing a race.
const MAX_ATTEMPTS: usize = 5;

/// Why writing a slice failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WriteError {
    /// The Node changed since it was read (another allocator, or the node itself).
    Conflict,
    Other(String),
}

/// The Nodes as the allocator sees them: read one, list the slices held, and write a slice
/// only over the version read (compare-and-swap on resourceVersion).
pub(crate) trait NodeStore {
    /// The Node's resourceVersion and slice, None when it is gone.
    async fn get(&self, name: &str) -> Result<Option<(String, Option<String>)>, String>;
    async fn taken(&self) -> Result<BTreeSet<String>, String>;
    async fn set(&self, name: &str, version: &str, slice: &Ipv4Cidr) -> Result<(), WriteError>;
}

/// Gives `name` a slice unless it has one: the lowest free one, written over the version of the
/// Node read; when another writer got in between, the Node and the free slices are read again
/// and the next free slice is tried. The slice given, if any.
pub(crate) async fn allocate_for(
    store: &impl NodeStore,
    allocator: &Allocator,
    name: &str,
) -> Result<Option<Ipv4Cidr>, String> {
    for _ in 0..MAX_ATTEMPTS {
        // The event may be older than our own patch (a create and a status update arrive
        // before it): judge the stored Node, and write only over that version of it.
        let version = match store.get(name).await? {
            Some((version, None)) => version,
            _ => return Ok(None),
        };
        // Re-listed each time: what is taken is what is stored, a race lost included.
        let taken = store.taken().await?;
        let Some(slice) = allocator.allocate(&taken) else {
            return Err(format!("no pod CIDR left for node {name}"));
        };
        match store.set(name, &version, &slice).await {
            Ok(()) => return Ok(Some(slice)),
            Err(WriteError::Conflict) => {
                tracing::debug!(node = %name, %slice, "lost a race for a pod CIDR; trying again");
            }
            Err(WriteError::Other(error)) => return Err(error),
        }
    }
    Err(format!(
        "node {name} changed under every one of {MAX_ATTEMPTS} pod CIDR allocations"
    ))
}

struct ApiNodes(Api<Node>);

impl NodeStore for ApiNodes {
    async fn get(&self, name: &str) -> Result<Option<(String, Option<String>)>, String> {
        let node = self.0.get_opt(name).await.map_err(|e| e.to_string())?;
        Ok(node.map(|n| {
            (
                n.metadata.resource_version.clone().unwrap_or_default(),
                pod_cidr(&n),
            )
        }))
    }

    async fn taken(&self) -> Result<BTreeSet<String>, String> {
        let list = self
            .0
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok(list.items.iter().filter_map(pod_cidr).collect())
    }

    async fn set(&self, name: &str, version: &str, slice: &Ipv4Cidr) -> Result<(), WriteError> {
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": version},
            "spec": {"podCIDR": slice.to_string(), "podCIDRs": [slice.to_string()]},
        });
        match self
            .0
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Err(WriteError::Conflict),
            Err(error) => Err(WriteError::Other(error.to_string())),
        }
    }
}

/// Gives every Node without one a pod CIDR, until the watch ends.
pub async fn run(client: kube::Client, allocator: Allocator) {
    let nodes: Api<Node> = Api::all(client);
    let mut events = watcher::watcher(nodes.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    let store = ApiNodes(nodes);
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
        match allocate_for(&store, &allocator, &name).await {
            Ok(Some(slice)) => {
                tracing::info!(node = %name, cidr = %slice, "allocated the node's pod CIDR")
            }
            Ok(None) => {}
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

    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// Nodes in memory; `rival` names a node that is given the slice the allocator tries first,
    /// at the moment it tries it, as a second allocator racing it would.
    struct Racing {
        nodes: Mutex<BTreeMap<String, (u64, Option<String>)>>,
        rival: Mutex<Option<String>>,
    }

    impl NodeStore for Racing {
        async fn get(&self, name: &str) -> Result<Option<(String, Option<String>)>, String> {
            let nodes = self.nodes.lock().unwrap();
            Ok(nodes.get(name).map(|(v, c)| (v.to_string(), c.clone())))
        }

        async fn taken(&self) -> Result<BTreeSet<String>, String> {
            let nodes = self.nodes.lock().unwrap();
            Ok(nodes.values().filter_map(|(_, c)| c.clone()).collect())
        }

        async fn set(&self, name: &str, version: &str, slice: &Ipv4Cidr) -> Result<(), WriteError> {
            let mut nodes = self.nodes.lock().unwrap();
            if let Some(rival) = self.rival.lock().unwrap().take() {
                // The rival's allocator wins this slice, and its write bumps the version of
                // ours too (the Node list is one store).
                nodes.insert(rival, (100, Some(slice.to_string())));
                if let Some(node) = nodes.get_mut(name) {
                    node.0 += 1;
                }
            }
            let node = nodes
                .get_mut(name)
                .ok_or(WriteError::Other("gone".into()))?;
            if node.0.to_string() != version {
                return Err(WriteError::Conflict);
            }
            if node.1.is_some() {
                return Err(WriteError::Other("already has a slice".into()));
            }
            *node = (node.0 + 1, Some(slice.to_string()));
            Ok(())
        }
    }

    fn store(nodes: &[(&str, Option<&str>)], rival: Option<&str>) -> Racing {
        Racing {
            nodes: Mutex::new(
                nodes
                    .iter()
                    .map(|(n, c)| (n.to_string(), (1, c.map(str::to_string))))
                    .collect(),
            ),
            rival: Mutex::new(rival.map(str::to_string)),
        }
    }

    #[tokio::test]
    async fn a_node_that_loses_the_race_for_a_slice_gets_the_next_free_one() {
        let allocator = Allocator::new("10.42.0.0/16".parse().unwrap());
        let nodes = store(
            &[("server", Some("10.42.0.0/24")), ("pi2", None)],
            Some("pi3"),
        );
        let slice = allocate_for(&nodes, &allocator, "pi2").await.unwrap();
        assert_eq!(slice.unwrap().to_string(), "10.42.2.0/24");
        let held = nodes.taken().await.unwrap();
        assert_eq!(held, set(&["10.42.0.0/24", "10.42.1.0/24", "10.42.2.0/24"]));
    }

    #[tokio::test]
    async fn a_node_with_a_slice_or_gone_is_left_alone() {
        let allocator = Allocator::new("10.42.0.0/16".parse().unwrap());
        let nodes = store(&[("pi2", Some("10.42.5.0/24"))], None);
        assert_eq!(allocate_for(&nodes, &allocator, "pi2").await.unwrap(), None);
        assert_eq!(
            allocate_for(&nodes, &allocator, "gone").await.unwrap(),
            None
        );
        assert_eq!(nodes.taken().await.unwrap(), set(&["10.42.5.0/24"]));
    }

    #[tokio::test]
    async fn a_full_cluster_cidr_is_an_error_not_a_retry_loop() {
        let allocator = Allocator::new("10.42.0.0/24".parse().unwrap());
        let nodes = store(&[("server", Some("10.42.0.0/24")), ("pi2", None)], None);
        let error = allocate_for(&nodes, &allocator, "pi2").await.unwrap_err();
        assert!(error.contains("no pod CIDR left"), "{error}");
    }
}
