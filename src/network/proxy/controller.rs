//! The proxy's control loop: watch Services and EndpointSlices, and after each burst of changes
//! (everything queued when the first arrives) re-render only the Services involved and apply their difference.
//! LoadBalancer Services get the node's addresses as their ingress, like k3s' ServiceLB.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;

use super::incremental::{Cluster, ProxyRules, ServiceKey};
use super::render::{is_proxied, slice_service, ProxyConfig};

/// Up to this many changed Services are applied on the runtime's thread: rendering them and
/// one netlink round trip take well under a millisecond, less than handing them to a blocking
/// thread costs in wake-ups (each a scheduling delay on a busy node). Bigger batches and full
/// syncs go to a blocking thread.
const INLINE_SERVICES: usize = 8;
/// Retry pause after a failed apply.
const RETRY: Duration = Duration::from_secs(1);

enum Change {
    Service(Event<Service>),
    Slice(Event<EndpointSlice>),
}

/// The cluster as the watches report it, and which Services changed since the last apply.
#[derive(Default)]
struct Tracker {
    cluster: Cluster,
    /// Which Service each slice (namespace, slice name) belonged to when last seen, so a slice
    /// that moves or goes away re-renders the Service it left.
    slice_owner: HashMap<(String, String), ServiceKey>,
    changed: HashSet<ServiceKey>,
    /// A watch re-listed: render everything once both lists are in.
    resync: bool,
    listing_services: Option<HashMap<ServiceKey, Service>>,
    listing_slices: Option<Vec<EndpointSlice>>,
    services_listed: bool,
    slices_listed: bool,
}

impl Tracker {
    fn ready(&self) -> bool {
        self.services_listed && self.slices_listed
    }

    fn absorb(&mut self, change: Change) {
        match change {
            Change::Service(event) => self.service_event(event),
            Change::Slice(event) => self.slice_event(event),
        }
    }

    fn service_event(&mut self, event: Event<Service>) {
        match event {
            Event::Apply(service) => {
                if let Some(key) = service_key(&service) {
                    self.changed.insert(key.clone());
                    self.cluster.services.insert(key, service);
                }
            }
            Event::Delete(service) => {
                if let Some(key) = service_key(&service) {
                    self.cluster.services.remove(&key);
                    self.changed.insert(key);
                }
            }
            Event::Init => self.listing_services = Some(HashMap::new()),
            Event::InitApply(service) => {
                if let (Some(key), Some(listing)) =
                    (service_key(&service), self.listing_services.as_mut())
                {
                    listing.insert(key, service);
                }
            }
            Event::InitDone => {
                if let Some(listing) = self.listing_services.take() {
                    self.cluster.services = listing;
                }
                self.services_listed = true;
                self.resync = true;
            }
        }
    }

    fn slice_event(&mut self, event: Event<EndpointSlice>) {
        match event {
            Event::Apply(slice) => self.put_slice(slice),
            Event::Delete(slice) => {
                if let Some(id) = slice_id(&slice) {
                    self.drop_slice(&id);
                }
            }
            Event::Init => self.listing_slices = Some(Vec::new()),
            Event::InitApply(slice) => {
                if let Some(listing) = self.listing_slices.as_mut() {
                    listing.push(slice);
                }
            }
            Event::InitDone => {
                if let Some(listing) = self.listing_slices.take() {
                    self.cluster.slices.clear();
                    self.slice_owner.clear();
                    for slice in listing {
                        self.put_slice(slice);
                    }
                }
                self.slices_listed = true;
                self.resync = true;
            }
        }
    }

    fn put_slice(&mut self, slice: EndpointSlice) {
        let Some(id) = slice_id(&slice) else {
            return;
        };
        self.drop_slice(&id);
        if let Some(owner) = slice_service(&slice) {
            self.changed.insert(owner.clone());
            self.slice_owner.insert(id.clone(), owner.clone());
            self.cluster
                .slices
                .entry(owner)
                .or_default()
                .insert(id.1, slice);
        }
    }

    fn drop_slice(&mut self, id: &(String, String)) {
        if let Some(owner) = self.slice_owner.remove(id) {
            if let Some(slices) = self.cluster.slices.get_mut(&owner) {
                slices.remove(&id.1);
                if slices.is_empty() {
                    self.cluster.slices.remove(&owner);
                }
            }
            self.changed.insert(owner);
        }
    }
}

fn service_key(service: &Service) -> Option<ServiceKey> {
    Some((
        service.metadata.namespace.clone()?,
        service.metadata.name.clone()?,
    ))
}

fn slice_id(slice: &EndpointSlice) -> Option<(String, String)> {
    Some((
        slice.metadata.namespace.clone()?,
        slice.metadata.name.clone()?,
    ))
}

/// Runs until the API watches end. `config.node_ips` are the addresses NodePorts answer on.
pub async fn run(client: kube::Client, config: ProxyConfig) -> anyhow::Result<()> {
    let node_ips = config.node_ips.clone();
    let mut rules = Some(tokio::task::spawn_blocking(move || ProxyRules::open(config)).await??);
    let services = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|e| e.map(Change::Service));
    let slices = watcher(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|e| e.map(Change::Slice));
    let mut events = std::pin::pin!(futures::stream::select(services, slices));
    let mut tracker = Tracker::default();

    loop {
        // Sleep until something changes, then take whatever else is queued already (a Service
        // with its slice, a rollout's endpoints) into the same batch. No timer waits for more:
        // what arrives while a batch is being applied forms the next one, so bursts still
        // batch, and a lone change is not held back.
        let Some(first) = events.next().await else {
            anyhow::bail!("the proxy's watches ended");
        };
        let burst_started = Instant::now();
        let mut next = Some(first);
        while let Some(event) = next.take() {
            match event {
                Ok(change) => tracker.absorb(change),
                Err(e) => tracing::warn!(error = %e, "proxy watch error"),
            }
            next = match events.next().now_or_never() {
                Some(Some(event)) => Some(event),
                Some(None) => anyhow::bail!("the proxy's watches ended"),
                None => None,
            };
        }
        if !tracker.ready() {
            continue;
        }
        loop {
            match apply(&client, &node_ips, &mut rules, &mut tracker, burst_started).await? {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "applying proxy rules failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}

/// Sends the changes the tracker gathered (or everything, after a re-list or a failure) and
/// publishes LoadBalancer addresses for the Services involved.
async fn apply(
    client: &kube::Client,
    node_ips: &[Ipv4Addr],
    rules: &mut Option<ProxyRules>,
    tracker: &mut Tracker,
    burst_started: Instant,
) -> anyhow::Result<Result<(), super::ProxyError>> {
    let started = Instant::now();
    let Some(mut current) = rules.take() else {
        anyhow::bail!("the proxy's rules were lost");
    };
    let everything = tracker.resync || !current.in_sync();
    let changed = std::mem::take(&mut tracker.changed);
    let (current, outcome) = if !everything && changed.len() <= INLINE_SERVICES {
        let outcome =
            tokio::task::block_in_place(|| current.sync_changed(&tracker.cluster, &changed));
        (current, outcome.map(|sent| (sent, changed)))
    } else {
        let cluster = std::mem::take(&mut tracker.cluster);
        // Rendering and the netlink round trip block; the cluster travels with them and back.
        let (current, cluster, outcome) = tokio::task::spawn_blocking(move || {
            let outcome = if everything {
                current.sync_all(&cluster)
            } else {
                current.sync_changed(&cluster, &changed)
            };
            (current, cluster, outcome.map(|sent| (sent, changed)))
        })
        .await?;
        tracker.cluster = cluster;
        (current, outcome)
    };
    *rules = Some(current);
    let (sent, changed) = match outcome {
        Ok(done) => done,
        Err(e) => return Ok(Err(e)),
    };
    tracker.resync = false;
    // The stages of a change's way into the kernel, for the latency benchmark: from its
    // event to the start of the apply (debounce, an apply still running), then the apply.
    tracing::debug!(
        services = changed.len(),
        messages = sent.messages,
        bytes = sent.bytes,
        waited_us = started.duration_since(burst_started).as_micros() as u64,
        elapsed_us = started.elapsed().as_micros() as u64,
        "proxy rules applied"
    );
    let services: Vec<&Service> = if everything {
        tracker.cluster.services.values().collect()
    } else {
        changed
            .iter()
            .filter_map(|key| tracker.cluster.services.get(key))
            .collect()
    };
    publish_load_balancers(client, &services, node_ips).await;
    Ok(Ok(()))
}

/// Sets `status.loadBalancer.ingress` of LoadBalancer Services to the node's addresses, where
/// it is not so already.
async fn publish_load_balancers(
    client: &kube::Client,
    services: &[&Service],
    node_ips: &[Ipv4Addr],
) {
    for service in services.iter().copied() {
        let spec = service.spec.as_ref();
        if spec.and_then(|s| s.type_.as_deref()) != Some("LoadBalancer") || !is_proxied(service) {
            continue;
        }
        let want: Vec<String> = node_ips.iter().map(|ip| ip.to_string()).collect();
        let have: Vec<String> = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|ingress| ingress.iter().filter_map(|i| i.ip.clone()).collect())
            .unwrap_or_default();
        if have == want {
            continue;
        }
        let (Some(namespace), Some(name)) = (
            service.metadata.namespace.as_deref(),
            service.metadata.name.as_deref(),
        ) else {
            continue;
        };
        let ingress: Vec<serde_json::Value> = want
            .iter()
            .map(|ip| serde_json::json!({"ip": ip, "ipMode": "VIP"}))
            .collect();
        let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": ingress}}});
        let api = Api::<Service>::namespaced(client.clone(), namespace);
        if let Err(e) = api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(%namespace, %name, error = %e, "cannot publish the LoadBalancer address");
        }
    }
}

/// This node's IPv4 addresses that NodePorts answer on: all but loopback and the pod network.
pub fn node_ips(cluster_cidr: &crate::network::Ipv4Cidr) -> Vec<Ipv4Addr> {
    let mut ips = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let ip = a
                .address
                .as_ref()
                .and_then(|s| s.as_sockaddr_in().map(|v| v.ip()));
            if let Some(ip) = ip {
                if !ip.is_loopback() && !cluster_cidr.contains(ip) && !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
    }
    ips
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(name: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.20", "ports": [{"port": 80}]},
        }))
        .unwrap()
    }

    fn slice(name: &str, service: &str) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.42.0.5"]}],
        }))
        .unwrap()
    }

    fn key(name: &str) -> ServiceKey {
        ("default".into(), name.into())
    }

    fn listed() -> Tracker {
        let mut tracker = Tracker::default();
        tracker.absorb(Change::Service(Event::InitDone));
        tracker.absorb(Change::Slice(Event::InitDone));
        tracker.changed.clear();
        tracker.resync = false;
        tracker
    }

    #[test]
    fn nothing_is_applied_before_both_lists_are_in() {
        let mut tracker = Tracker::default();
        tracker.absorb(Change::Service(Event::Init));
        tracker.absorb(Change::Service(Event::InitApply(service("web"))));
        tracker.absorb(Change::Service(Event::InitDone));
        assert!(!tracker.ready());
        tracker.absorb(Change::Slice(Event::Init));
        tracker.absorb(Change::Slice(Event::InitDone));
        assert!(tracker.ready() && tracker.resync);
        assert!(tracker.cluster.services.contains_key(&key("web")));
    }

    #[test]
    fn a_slice_change_marks_only_its_own_service() {
        let mut tracker = listed();
        tracker.absorb(Change::Service(Event::Apply(service("web"))));
        tracker.absorb(Change::Service(Event::Apply(service("db"))));
        tracker.changed.clear();
        tracker.absorb(Change::Slice(Event::Apply(slice("web-1", "web"))));
        assert_eq!(tracker.changed, HashSet::from([key("web")]));
        assert_eq!(tracker.cluster.slices_of(&key("web")).len(), 1);
        assert!(!tracker.resync);
    }

    #[test]
    fn a_slice_that_moves_or_goes_re_renders_the_service_it_left() {
        let mut tracker = listed();
        tracker.absorb(Change::Slice(Event::Apply(slice("s-1", "web"))));
        tracker.changed.clear();
        tracker.absorb(Change::Slice(Event::Apply(slice("s-1", "db"))));
        assert_eq!(tracker.changed, HashSet::from([key("web"), key("db")]));
        assert!(tracker.cluster.slices_of(&key("web")).is_empty());
        tracker.changed.clear();
        tracker.absorb(Change::Slice(Event::Delete(slice("s-1", "db"))));
        assert_eq!(tracker.changed, HashSet::from([key("db")]));
        assert!(tracker.cluster.slices.is_empty());
    }

    #[test]
    fn a_re_list_replaces_what_was_known_and_asks_for_a_full_sync() {
        let mut tracker = listed();
        tracker.absorb(Change::Service(Event::Apply(service("gone"))));
        tracker.absorb(Change::Service(Event::Init));
        tracker.absorb(Change::Service(Event::InitApply(service("web"))));
        assert!(tracker.cluster.services.contains_key(&key("gone")));
        tracker.absorb(Change::Service(Event::InitDone));
        assert!(tracker.resync);
        assert_eq!(
            tracker.cluster.services.keys().collect::<Vec<_>>(),
            [&key("web")]
        );
    }
}
