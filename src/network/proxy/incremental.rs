//! The proxy's rules kept per Service, so a change to one Service or EndpointSlice sends only
//! that Service's chains and map elements to the kernel, in one batch, however many Services
//! the table holds. A full render happens at start, after the watches re-list, and after a
//! failed batch (when what the kernel holds is no longer known).

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::model::Ruleset;
use super::netlink::{diff, is_proxy_object, NftSocket, Stale};
use super::render::{merge, render_fragment, render_skeleton, shared_sets, ProxyConfig};
use super::{Applied, ProxyError};
use crate::network::nft::TABLE;

/// A Service by namespace and name; EndpointSlices name their Service the same way.
pub type ServiceKey = (String, String);

/// The Services and EndpointSlices the proxy renders from, indexed by Service.
#[derive(Debug, Default)]
pub struct Cluster {
    pub services: HashMap<ServiceKey, Service>,
    /// Slices by Service, then by slice name.
    pub slices: HashMap<ServiceKey, BTreeMap<String, EndpointSlice>>,
}

impl Cluster {
    /// The slices of one Service.
    pub fn slices_of(&self, key: &ServiceKey) -> Vec<&EndpointSlice> {
        self.slices
            .get(key)
            .map(|s| s.values().collect())
            .unwrap_or_default()
    }

    fn fragment(&self, key: &ServiceKey, config: &ProxyConfig) -> Option<Ruleset> {
        let service = self.services.get(key)?;
        Some(render_fragment(service, &self.slices_of(key), config))
    }
}

/// The proxy's side of the kernel table: what it holds, Service by Service.
pub struct ProxyRules {
    socket: NftSocket,
    config: ProxyConfig,
    /// What the kernel holds for each Service; meaningless unless `in_sync`.
    applied: BTreeMap<ServiceKey, Ruleset>,
    in_sync: bool,
}

impl ProxyRules {
    /// Opens nf_tables in the calling thread's network namespace; nothing is sent yet.
    pub fn open(config: ProxyConfig) -> Result<ProxyRules, ProxyError> {
        Ok(ProxyRules {
            socket: NftSocket::open()?,
            config,
            applied: BTreeMap::new(),
            in_sync: false,
        })
    }

    /// False until the first full sync and after a failed batch: the next change must then
    /// be a [`ProxyRules::sync_all`].
    pub fn in_sync(&self) -> bool {
        self.in_sync
    }

    /// Renders every Service and sends the difference to what the kernel holds; when that is
    /// unknown (start, failure) whatever the proxy finds in the table is replaced.
    pub fn sync_all(&mut self, cluster: &Cluster) -> Result<Applied, ProxyError> {
        let mut desired = BTreeMap::new();
        for key in cluster.services.keys() {
            if let Some(fragment) = cluster.fragment(key, &self.config) {
                desired.insert(key.clone(), fragment);
            }
        }
        let (base, stale) = if self.in_sync {
            (self.whole(&self.applied), Stale::default())
        } else {
            (
                Ruleset::default(),
                self.socket.list_owned(TABLE, is_proxy_object)?,
            )
        };
        let batch = diff(TABLE, &base, &self.whole(&desired), &stale);
        self.send(batch, desired)
    }

    /// Re-renders only the Services in `changed` (present or gone) and sends their difference.
    /// Falls back to [`ProxyRules::sync_all`] when out of sync.
    pub fn sync_changed<'a>(
        &mut self,
        cluster: &Cluster,
        changed: impl IntoIterator<Item = &'a ServiceKey>,
    ) -> Result<Applied, ProxyError> {
        if !self.in_sync {
            return self.sync_all(cluster);
        }
        let mut before = shared_sets();
        let mut after = shared_sets();
        let mut updated = Vec::new();
        for key in changed {
            if let Some(old) = self.applied.get(key) {
                merge(&mut before, old);
            }
            let new = cluster.fragment(key, &self.config);
            if let Some(new) = &new {
                merge(&mut after, new);
            }
            updated.push((key.clone(), new));
        }
        let batch = diff(TABLE, &before, &after, &Stale::default());
        let messages = batch.messages();
        match self.socket.send(batch) {
            Ok(bytes) => {
                for (key, fragment) in updated {
                    match fragment {
                        Some(fragment) => self.applied.insert(key, fragment),
                        None => self.applied.remove(&key),
                    };
                }
                Ok(Applied { messages, bytes })
            }
            Err(e) => {
                self.in_sync = false;
                Err(e)
            }
        }
    }

    fn send(
        &mut self,
        batch: super::netlink::Batch,
        desired: BTreeMap<ServiceKey, Ruleset>,
    ) -> Result<Applied, ProxyError> {
        let messages = batch.messages();
        match self.socket.send(batch) {
            Ok(bytes) => {
                self.applied = desired;
                self.in_sync = true;
                Ok(Applied { messages, bytes })
            }
            Err(e) => {
                self.in_sync = false;
                Err(e)
            }
        }
    }

    /// The skeleton with every fragment in `fragments` merged in, in key order (as the
    /// full render's first claim wins, so does the first key here).
    fn whole(&self, fragments: &BTreeMap<ServiceKey, Ruleset>) -> Ruleset {
        let mut rs = render_skeleton(&self.config);
        for fragment in fragments.values() {
            merge(&mut rs, fragment);
        }
        rs
    }
}
