//! The proxy's rules kept per Service, so a change to one Service or EndpointSlice sends only
//! that Service's chains and map elements to the kernel, in one batch, however many Services
//! the table holds. A full render happens at start, after the watches re-list, and after a
//! failed batch (when what the kernel holds is no longer known).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::model::{Key, Ruleset};
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

/// Who claims each element of the shared maps: the Services by key order, with the value each
/// wants. Two LoadBalancer Services on the same port both claim the node's address and port;
/// the first keeps it (as in [`whole`]), and when it goes the next one takes over.
type Claims = HashMap<(String, Key), BTreeMap<ServiceKey, Option<String>>>;

/// The rules the kernel holds, Service by Service. Pure: it plans batches, [`ProxyRules`] sends
/// them.
#[derive(Debug, Default)]
struct Fragments {
    by_service: BTreeMap<ServiceKey, Ruleset>,
    claims: Claims,
}

/// Services re-rendered: their new fragment, or `None` when they are gone.
type Updates = Vec<(ServiceKey, Option<Ruleset>)>;

impl Fragments {
    fn new(by_service: BTreeMap<ServiceKey, Ruleset>) -> Fragments {
        let mut fragments = Fragments {
            by_service: BTreeMap::new(),
            claims: Claims::new(),
        };
        fragments.commit(by_service.into_iter().map(|(k, f)| (k, Some(f))).collect());
        fragments
    }

    /// The part of the table the updates change, as it is and as it will be: the updated
    /// Services' own chains and sets, and the shared elements they claim or claimed with the
    /// value each has once every other Service's claim is counted.
    fn plan(&self, updates: &Updates) -> (Ruleset, Ruleset) {
        let mut before = shared_sets();
        let mut after = shared_sets();
        let mut touched = BTreeSet::new();
        for (key, new) in updates {
            if let Some(old) = self.by_service.get(key) {
                merge(&mut before, old);
                touched.extend(shared_elements(old).map(|(set, k, _)| (set.to_owned(), k)));
            }
            if let Some(new) = new {
                merge(&mut after, new);
                touched.extend(shared_elements(new).map(|(set, k, _)| (set.to_owned(), k)));
            }
        }
        for rs in [&mut before, &mut after] {
            for set in shared_sets().sets.keys() {
                if let Some(set) = rs.sets.get_mut(set) {
                    set.elements.clear();
                }
            }
        }
        for (set, element) in touched {
            let id = (set, element);
            let mut claimants = self.claims.get(&id).cloned().unwrap_or_default();
            if let Some((_, value)) = claimants.first_key_value() {
                put_element(&mut before, &id, value.clone());
            }
            for (key, new) in updates {
                claimants.remove(key);
                let value = new
                    .as_ref()
                    .and_then(|new| new.sets.get(&id.0).and_then(|s| s.elements.get(&id.1)));
                if let Some(value) = value {
                    claimants.insert(key.clone(), value.clone());
                }
            }
            if let Some((_, value)) = claimants.first_key_value() {
                put_element(&mut after, &id, value.clone());
            }
        }
        (before, after)
    }

    /// Records that the kernel now holds the updates.
    fn commit(&mut self, updates: Updates) {
        for (key, new) in updates {
            if let Some(old) = self.by_service.remove(&key) {
                for (set, element, _) in shared_elements(&old) {
                    let id = (set.to_owned(), element);
                    if let Some(claimants) = self.claims.get_mut(&id) {
                        claimants.remove(&key);
                        if claimants.is_empty() {
                            self.claims.remove(&id);
                        }
                    }
                }
            }
            if let Some(new) = new {
                for (set, element, value) in shared_elements(&new) {
                    self.claims
                        .entry((set.to_owned(), element))
                        .or_default()
                        .insert(key.clone(), value.clone());
                }
                self.by_service.insert(key, new);
            }
        }
    }
}

/// The elements a fragment puts in the shared maps and sets.
fn shared_elements(fragment: &Ruleset) -> impl Iterator<Item = (&str, Key, &Option<String>)> {
    fragment
        .sets
        .iter()
        .filter(|(name, _)| is_shared(name))
        .flat_map(|(name, set)| {
            set.elements
                .iter()
                .map(move |(key, value)| (name.as_str(), *key, value))
        })
}

fn is_shared(set: &str) -> bool {
    shared_sets().sets.contains_key(set)
}

fn put_element(rs: &mut Ruleset, (set, key): &(String, Key), value: Option<String>) {
    if let Some(set) = rs.sets.get_mut(set) {
        set.elements.insert(*key, value);
    }
}

/// The skeleton with every fragment merged in, in key order (as the full render's first claim
/// wins, so does the first key here).
fn whole(config: &ProxyConfig, fragments: &BTreeMap<ServiceKey, Ruleset>) -> Ruleset {
    let mut rs = render_skeleton(config);
    for fragment in fragments.values() {
        merge(&mut rs, fragment);
    }
    rs
}

/// The proxy's side of the kernel table: what it holds, Service by Service.
pub struct ProxyRules {
    socket: NftSocket,
    config: ProxyConfig,
    /// What the kernel holds; meaningless unless `in_sync`.
    applied: Fragments,
    in_sync: bool,
}

impl ProxyRules {
    /// Opens nf_tables in the calling thread's network namespace; nothing is sent yet.
    pub fn open(config: ProxyConfig) -> Result<ProxyRules, ProxyError> {
        Ok(ProxyRules {
            socket: NftSocket::open()?,
            config,
            applied: Fragments::default(),
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
            (
                whole(&self.config, &self.applied.by_service),
                Stale::default(),
            )
        } else {
            (
                Ruleset::default(),
                self.socket.list_owned(TABLE, is_proxy_object)?,
            )
        };
        let batch = diff(TABLE, &base, &whole(&self.config, &desired), &stale);
        let messages = batch.messages();
        match self.socket.send(batch) {
            Ok(bytes) => {
                self.applied = Fragments::new(desired);
                self.in_sync = true;
                Ok(Applied { messages, bytes })
            }
            Err(e) => {
                self.in_sync = false;
                Err(e)
            }
        }
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
        let updates: Updates = changed
            .into_iter()
            .map(|key| (key.clone(), cluster.fragment(key, &self.config)))
            .collect();
        let (before, after) = self.applied.plan(&updates);
        let batch = diff(TABLE, &before, &after, &Stale::default());
        let messages = batch.messages();
        match self.socket.send(batch) {
            Ok(bytes) => {
                self.applied.commit(updates);
                Ok(Applied { messages, bytes })
            }
            Err(e) => {
                self.in_sync = false;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::proxy::model::Proto;
    use crate::network::proxy::render::{render_fragment, SERVICES_MAP};
    use serde_json::json;
    use std::net::Ipv4Addr;

    fn config() -> ProxyConfig {
        ProxyConfig {
            node_name: "node-1".into(),
            node_ips: vec![Ipv4Addr::new(192, 168, 1, 10)],
            cluster_cidr: "10.42.0.0/16".parse().unwrap(),
        }
    }

    /// Service `n` of four: the first three are LoadBalancers on the same port, so they share
    /// the node's address and port; the last is a plain ClusterIP Service.
    fn service(n: u8) -> Service {
        let spec = if n < 3 {
            json!({"type": "LoadBalancer", "clusterIP": format!("10.43.0.{}", 20 + n),
                   "ports": [{"name": "http", "port": 443, "nodePort": 30080 + u16::from(n)}]})
        } else {
            json!({"clusterIP": "10.43.0.30", "ports": [{"name": "http", "port": 80}]})
        };
        serde_json::from_value(json!({
            "metadata": {"name": format!("svc-{n}"), "namespace": "default"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn slice(n: u8) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("svc-{n}-x"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": format!("svc-{n}")}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [format!("10.42.0.{}", 5 + n)], "nodeName": "node-1",
                           "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        }))
        .unwrap()
    }

    fn key(n: u8) -> ServiceKey {
        ("default".into(), format!("svc-{n}"))
    }

    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Absent,
        WithEndpoints,
        WithoutEndpoints,
    }
    const STATES: [State; 3] = [State::Absent, State::WithEndpoints, State::WithoutEndpoints];

    /// Each Service's fragment in one of the 81 combinations of states.
    fn fragments(states: [State; 4]) -> BTreeMap<ServiceKey, Ruleset> {
        let mut fragments = BTreeMap::new();
        for (n, state) in (0u8..).zip(states) {
            let slices = [slice(n)];
            let own: Vec<&EndpointSlice> = match state {
                State::Absent => continue,
                State::WithEndpoints => slices.iter().collect(),
                State::WithoutEndpoints => Vec::new(),
            };
            fragments.insert(key(n), render_fragment(&service(n), &own, &config()));
        }
        fragments
    }

    fn all_states() -> Vec<[State; 4]> {
        let mut all = Vec::new();
        for a in STATES {
            for b in STATES {
                for c in STATES {
                    for d in STATES {
                        all.push([a, b, c, d]);
                    }
                }
            }
        }
        all
    }

    fn updates_between(from: [State; 4], to: [State; 4]) -> Updates {
        updates_to(from, to, &fragments(to))
    }

    /// The updates that take `from` to `to`, whose fragments are `desired`.
    fn updates_to(
        from: [State; 4],
        to: [State; 4],
        desired: &BTreeMap<ServiceKey, Ruleset>,
    ) -> Updates {
        (0u8..4)
            .filter(|n| from[usize::from(*n)] != to[usize::from(*n)])
            .map(|n| (key(n), desired.get(&key(n)).cloned()))
            .collect()
    }

    #[test]
    fn every_change_between_services_sharing_an_address_sends_what_the_whole_table_diff_sends() {
        let config = config();
        let states = all_states();
        let rendered: Vec<_> = states.iter().map(|s| fragments(*s)).collect();
        let wholes: Vec<Ruleset> = rendered.iter().map(|f| whole(&config, f)).collect();
        for (i, from) in states.iter().enumerate() {
            let applied = Fragments::new(rendered[i].clone());
            for (j, to) in states.iter().enumerate() {
                let (before, after) = applied.plan(&updates_to(*from, *to, &rendered[j]));
                let partial = diff("berth", &before, &after, &Stale::default()).finish();
                let all = diff("berth", &wholes[i], &wholes[j], &Stale::default()).finish();
                assert!(partial == all, "{:?} vs {:?}", partial.1, all.1);
            }
        }
    }

    #[test]
    fn deleting_one_of_two_load_balancers_on_one_port_hands_the_address_to_the_other() {
        use State::*;
        let mut applied = Fragments::new(fragments([WithEndpoints, WithEndpoints, Absent, Absent]));
        let shared = Key::Destination(Ipv4Addr::new(192, 168, 1, 10), Proto::Tcp, 443);

        let updates = updates_between(
            [WithEndpoints, WithEndpoints, Absent, Absent],
            [Absent, WithEndpoints, Absent, Absent],
        );
        let (before, after) = applied.plan(&updates);
        assert_eq!(
            before.sets[SERVICES_MAP].elements[&shared].as_deref(),
            Some("ext_default_svc-0_tcp_443")
        );
        assert_eq!(
            after.sets[SERVICES_MAP].elements[&shared].as_deref(),
            Some("ext_default_svc-1_tcp_443")
        );
        applied.commit(updates);

        // The other one's deletion leaves nothing to claim the address: now it goes.
        let updates = updates_between(
            [Absent, WithEndpoints, Absent, Absent],
            [Absent, Absent, Absent, Absent],
        );
        let (_, after) = applied.plan(&updates);
        assert!(!after.sets[SERVICES_MAP].elements.contains_key(&shared));
        applied.commit(updates);
        assert!(applied.claims.is_empty() && applied.by_service.is_empty());
    }

    #[test]
    fn deleting_the_load_balancer_that_does_not_hold_the_address_sends_no_element() {
        use State::*;
        let applied = Fragments::new(fragments([WithEndpoints, WithEndpoints, Absent, Absent]));
        let updates = updates_between(
            [WithEndpoints, WithEndpoints, Absent, Absent],
            [WithEndpoints, Absent, Absent, Absent],
        );
        let (before, after) = applied.plan(&updates);
        let (_, subjects) = diff("berth", &before, &after, &Stale::default()).finish();
        // svc-1's node port goes; the shared address stays with svc-0.
        let elements: Vec<&String> = subjects
            .iter()
            .filter(|s| s.starts_with("elements of"))
            .collect();
        assert_eq!(
            elements,
            [
                "elements of proxy-nodeports (delete: true)",
                "elements of proxy-services (delete: true)",
            ],
            "{subjects:?}"
        );
        let shared = Key::Destination(Ipv4Addr::new(192, 168, 1, 10), Proto::Tcp, 443);
        assert_eq!(
            before.sets[SERVICES_MAP].elements.get(&shared),
            after.sets[SERVICES_MAP].elements.get(&shared)
        );
    }
}
