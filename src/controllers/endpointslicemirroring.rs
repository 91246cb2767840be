//! EndpointSlices mirrored from hand-made Endpoints: a Service without a selector gets no
//! slices from the EndpointSlice controller, so the Endpoints its user writes are copied into
//! slices (as upstream's mirroring controller does) for the proxy, DNS and anyone reading the
//! discovery API.
//!
//! One slice per address type and port set; ready addresses become ready endpoints, not-ready
//! ones not ready. Slices carry the Endpoints' labels and annotations, are owned by the
//! Endpoints, and go when the Endpoints, the Service, or the Service's selector-lessness goes.
//! Endpoints labelled `endpointslice.kubernetes.io/skip-mirror: "true"` (the ones berth's
//! EndpointSlice controller writes) and leader-election records are never mirrored.
//!
//! What cannot be mirrored is skipped and the rest mirrored, with upstream's Warning events on
//! the Endpoints: `InvalidIPAddress` for addresses that are no IP, `TooManyAddressesToMirror`
//! for those past the first 1,000 of a subset.
//!
//! Slice names are `<service>-<hash of address type and ports>` rather than upstream's random
//! suffix, as the EndpointSlice controller's are, so a sync finds its slices without
//! bookkeeping; the hash differs from that controller's, so the two never fight over a name
//! while a Service gains or loses its selector.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::common;
use super::deployment::{fnv32a, safe_encode};
use super::endpointslice::{
    apply_slices, port_key, MANAGED_BY_LABEL, SERVICE_NAME_LABEL, SKIP_MIRROR_LABEL,
};

pub const MANAGED_BY: &str = "endpointslicemirroring-controller.k8s.io";
const LEADER_ELECTION_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";
/// Annotations of the Endpoints a slice does not copy (upstream's list).
const UNCOPIED_ANNOTATIONS: &[&str] = &[
    "endpoints.kubernetes.io/last-change-trigger-time",
    "kubectl.kubernetes.io/last-applied-configuration",
];
/// Addresses mirrored per Endpoints subset at most (upstream's default).
const MAX_ENDPOINTS_PER_SUBSET: usize = 1000;
/// The event source upstream's mirroring controller records as.
const EVENT_SOURCE: &str = "endpoint-slice-mirroring-controller";
pub const INVALID_IP_ADDRESS: &str = "InvalidIPAddress";
pub const TOO_MANY_ADDRESSES_TO_MIRROR: &str = "TooManyAddressesToMirror";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
}

struct Context {
    client: kube::Client,
    recorder: Recorder,
    /// The resourceVersion of each Endpoints last warned about. Upstream warns on every sync,
    /// but a sync here also follows each of this controller's own slice writes (upstream's
    /// tracker ignores those): one warning per version of an Endpoints keeps the events to
    /// one per change a user made rather than one per echo.
    warned: Mutex<HashMap<(String, String), String>>,
}

/// Runs until the watch ends.
pub async fn run(client: kube::Client) {
    let endpoints: Api<Endpoints> = Api::all(client.clone());
    let services: Api<Service> = Api::all(client.clone());
    let slices: Api<EndpointSlice> = Api::all(client.clone());
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), Reporter::from(EVENT_SOURCE)),
        client,
        warned: Mutex::default(),
    });
    Controller::new(endpoints.clone(), watcher::Config::default())
        // The Service appearing, going, or gaining a selector decides whether to mirror.
        .watches(services, watcher::Config::default(), |svc| {
            let name = svc.metadata.name.clone()?;
            let namespace = svc.metadata.namespace.clone()?;
            Some(ObjectRef::new(&name).within(&namespace))
        })
        // A deleted Endpoints: the request finds nothing in the cache, handled below.
        .watches(endpoints, watcher::Config::default(), |ep| {
            Some(ObjectRef::from_obj(&ep))
        })
        .owns(slices, watcher::Config::default())
        .run(reconcile, error_policy, context.clone())
        .for_each(|result| {
            let context = context.clone();
            async move {
                if let Err(controller::Error::ObjectNotFound(gone)) = result {
                    if let Some(namespace) = gone.namespace.as_deref() {
                        if let Err(error) = sync(&context, namespace, &gone.name).await {
                            tracing::warn!(%error, "removing mirrored endpoint slices failed");
                        }
                    }
                }
            }
        })
        .await;
}

fn error_policy(_: Arc<Endpoints>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "endpoint slice mirroring failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(ep: Arc<Endpoints>, context: Arc<Context>) -> Result<Action, Error> {
    let (Some(name), Some(namespace)) = (&ep.metadata.name, &ep.metadata.namespace) else {
        return Ok(Action::await_change());
    };
    sync(&context, namespace, name).await?;
    Ok(Action::await_change())
}

/// Reads the Endpoints and Service named `name` afresh (the event may be stale) and makes the
/// mirrored slices match.
async fn sync(context: &Context, namespace: &str, name: &str) -> Result<(), Error> {
    let client = &context.client;
    let endpoints = Api::<Endpoints>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?;
    let service = Api::<Service>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?;
    let desired = match (&endpoints, &service) {
        (Some(ep), Some(svc)) if mirrors(ep, svc) => {
            let mirrored = mirrored_slices(ep);
            warn_of_skipped(context, ep, &mirrored.skipped).await;
            mirrored.slices
        }
        _ => {
            forget_warned(context, namespace, name);
            Vec::new()
        }
    };
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{SERVICE_NAME_LABEL}={name},{MANAGED_BY_LABEL}={MANAGED_BY}");
    let existing = slices
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    apply_slices(&slices, &existing, &desired).await?;
    Ok(())
}

/// Whether `ep` is mirrored: its Service selects no pods (so no controller writes its
/// endpoints), and it is not marked to be skipped, a leader-election record, or going.
pub fn mirrors(ep: &Endpoints, svc: &Service) -> bool {
    let selector_less = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_none_or(|s| s.is_empty());
    let skipped = ep
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SKIP_MIRROR_LABEL))
        .is_some_and(|v| v == "true");
    let leader_record = ep
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(LEADER_ELECTION_ANNOTATION));
    selector_less && !skipped && !leader_record && ep.metadata.deletion_timestamp.is_none()
}

/// Records upstream's warnings on `ep` for what its mirroring skipped, once per version of it.
async fn warn_of_skipped(context: &Context, ep: &Endpoints, skipped: &Skipped) {
    let key = (
        ep.metadata.namespace.clone().unwrap_or_default(),
        ep.metadata.name.clone().unwrap_or_default(),
    );
    let version = ep.metadata.resource_version.clone().unwrap_or_default();
    {
        let mut warned = context.warned.lock().unwrap_or_else(|e| e.into_inner());
        if skipped.warnings().is_empty() {
            warned.remove(&key);
            return;
        }
        if warned.get(&key) == Some(&version) {
            return;
        }
        warned.insert(key, version);
    }
    let regarding = common::object_reference("v1", "Endpoints", &ep.metadata);
    for (reason, note) in skipped.warnings() {
        tracing::warn!(
            namespace = ?ep.metadata.namespace,
            endpoints = ?ep.metadata.name,
            reason,
            "{note}"
        );
        common::publish(
            &context.recorder,
            &regarding,
            EventType::Warning,
            reason,
            note,
        )
        .await;
    }
}

fn forget_warned(context: &Context, namespace: &str, name: &str) {
    let mut warned = context.warned.lock().unwrap_or_else(|e| e.into_inner());
    warned.remove(&(namespace.to_string(), name.to_string()));
}

/// What mirroring an Endpoints left out, counted as upstream counts it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Addresses that are no IP, among those looked at before a subset's limit was reached.
    pub invalid: usize,
    /// All addresses not mirrored: the invalid ones and those past a subset's limit.
    pub total: usize,
}

impl Skipped {
    /// Upstream's warning events, `(reason, message)`: one for invalid addresses, one when the
    /// limit left addresses out (its count, as upstream's, includes the invalid ones).
    pub fn warnings(&self) -> Vec<(&'static str, String)> {
        let mut warnings = Vec::new();
        if self.invalid > 0 {
            warnings.push((
                INVALID_IP_ADDRESS,
                format!(
                    "Skipped {} invalid IP addresses when mirroring to EndpointSlices",
                    self.invalid
                ),
            ));
        }
        if self.total > self.invalid {
            warnings.push((
                TOO_MANY_ADDRESSES_TO_MIRROR,
                format!(
                    "A max of {MAX_ENDPOINTS_PER_SUBSET} addresses can be mirrored to EndpointSlices per Endpoints subset. {} addresses were skipped",
                    self.total
                ),
            ));
        }
        warnings
    }
}

/// The slices mirroring an Endpoints, and what they leave out.
pub struct Mirrored {
    pub slices: Vec<EndpointSlice>,
    pub skipped: Skipped,
}

/// The slices mirroring `ep`: one per address type and set of ports, addresses that are not
/// IPs and those past the first [`MAX_ENDPOINTS_PER_SUBSET`] of a subset left out.
pub fn mirrored_slices(ep: &Endpoints) -> Mirrored {
    let mut skipped = Skipped::default();
    let mut groups: BTreeMap<String, (&'static str, Vec<EndpointPort>, Vec<Endpoint>)> =
        BTreeMap::new();
    for subset in ep.subsets.iter().flatten() {
        let ports: Vec<EndpointPort> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(p.port),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        let ready = subset.addresses.iter().flatten().map(|a| (a, true));
        let not_ready = subset
            .not_ready_addresses
            .iter()
            .flatten()
            .map(|a| (a, false));
        let total = subset.addresses.iter().flatten().count()
            + subset.not_ready_addresses.iter().flatten().count();
        let mut mirrored = 0;
        for (address, ready) in ready.chain(not_ready) {
            if mirrored == MAX_ENDPOINTS_PER_SUBSET {
                break;
            }
            let Some((family, endpoint)) = mirrored_endpoint(address, ready) else {
                skipped.invalid += 1;
                continue;
            };
            mirrored += 1;
            let key = format!("{family}/{}", port_set_key(&ports));
            let (_, _, endpoints) = groups
                .entry(key)
                .or_insert_with(|| (family, ports.clone(), Vec::new()));
            if !endpoints.contains(&endpoint) {
                endpoints.push(endpoint);
            }
        }
        skipped.total += total - mirrored;
    }
    let name = ep.metadata.name.clone().unwrap_or_default();
    let mut labels = ep.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let mut annotations = ep.metadata.annotations.clone().unwrap_or_default();
    annotations.retain(|k, _| !UNCOPIED_ANNOTATIONS.contains(&k.as_str()));
    let slices = groups
        .into_iter()
        .map(|(key, (family, ports, endpoints))| EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{name}-{}",
                    safe_encode(&fnv32a(format!("mirror/{key}").as_bytes()).to_string())
                )),
                namespace: ep.metadata.namespace.clone(),
                labels: Some(labels.clone()),
                annotations: (!annotations.is_empty()).then(|| annotations.clone()),
                owner_references: Some(vec![common::controller_reference(
                    "v1",
                    "Endpoints",
                    &ep.metadata,
                )]),
                ..Default::default()
            },
            address_type: family.to_string(),
            endpoints,
            ports: Some(ports),
        })
        .collect();
    Mirrored { slices, skipped }
}

/// An Endpoints address as a slice endpoint with its address family; None if it is no IP.
fn mirrored_endpoint(address: &EndpointAddress, ready: bool) -> Option<(&'static str, Endpoint)> {
    // Parsed and printed again, as upstream does, so an odd spelling comes out canonical.
    let ip = crate::api::go_ip::parse_sloppy(&address.ip)?;
    let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
    Some((
        family,
        Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: None,
                terminating: None,
            }),
            hostname: address.hostname.clone().filter(|h| !h.is_empty()),
            node_name: address.node_name.clone(),
            target_ref: address.target_ref.clone(),
            zone: None,
            hints: None,
            deprecated_topology: None,
        },
    ))
}

/// The port set in a stable spelling, whatever order the Endpoints list it in.
fn port_set_key(ports: &[EndpointPort]) -> String {
    let mut sorted = ports.to_vec();
    sorted.sort_by(|a, b| (&a.name, a.port, &a.protocol).cmp(&(&b.name, b.port, &b.protocol)));
    port_key(&sorted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EndpointPort as CorePort, EndpointSubset, ServiceSpec};
    use serde_json::json;

    fn endpoints(subsets: serde_json::Value) -> Endpoints {
        serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "default", "uid": "u-1",
                "labels": {"team": "data"},
                "annotations": {"note": "kept",
                    "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "subsets": subsets,
        }))
        .expect("an Endpoints")
    }

    fn service(selector: Option<serde_json::Value>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("db".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: selector.map(|s| serde_json::from_value(s).expect("a selector")),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn ready_and_not_ready_addresses_become_one_slice_per_port_set_and_family() {
        let ep = endpoints(json!([
            {"addresses": [{"ip": "10.0.0.1", "hostname": "a"}],
             "notReadyAddresses": [{"ip": "10.0.0.2"}],
             "ports": [{"name": "sql", "port": 5432, "protocol": "TCP"}]},
            {"addresses": [{"ip": "fd00::1"}, {"ip": "not-an-ip"}],
             "ports": [{"name": "sql", "port": 5432}]},
        ]));
        let Mirrored { slices, skipped } = mirrored_slices(&ep);
        assert_eq!(slices.len(), 2, "{slices:#?}");
        let v4 = slices
            .iter()
            .find(|s| s.address_type == "IPv4")
            .expect("an IPv4 slice");
        let addresses: Vec<(&str, Option<bool>)> = v4
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.addresses[0].as_str(),
                    e.conditions.as_ref().and_then(|c| c.ready),
                )
            })
            .collect();
        assert_eq!(
            addresses,
            [("10.0.0.1", Some(true)), ("10.0.0.2", Some(false))]
        );
        assert_eq!(v4.endpoints[0].hostname.as_deref(), Some("a"));
        let port = &v4.ports.as_ref().expect("ports")[0];
        assert_eq!(
            (port.name.as_deref(), port.port, port.protocol.as_deref()),
            (Some("sql"), Some(5432), Some("TCP"))
        );
        let v6 = slices
            .iter()
            .find(|s| s.address_type == "IPv6")
            .expect("an IPv6 slice");
        assert_eq!(
            v6.endpoints.len(),
            1,
            "the address that is no IP is left out"
        );
        assert_eq!(
            skipped,
            Skipped {
                invalid: 1,
                total: 1
            }
        );
        assert_eq!(
            skipped.warnings(),
            [(
                INVALID_IP_ADDRESS,
                "Skipped 1 invalid IP addresses when mirroring to EndpointSlices".to_string()
            )]
        );

        let meta = &v4.metadata;
        let labels = meta.labels.clone().unwrap_or_default();
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(labels[SERVICE_NAME_LABEL], "db");
        assert_eq!(labels["team"], "data");
        let annotations = meta.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["note"]);
        let owner = &meta.owner_references.as_ref().expect("an owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Endpoints", "u-1")
        );
        assert_eq!(owner.controller, Some(true));
    }

    #[test]
    fn subsets_with_the_same_ports_in_another_order_share_a_slice_with_a_stable_name() {
        let ports = |order: [(&str, i32); 2]| -> Vec<CorePort> {
            order
                .iter()
                .map(|(name, port)| CorePort {
                    name: Some(name.to_string()),
                    port: *port,
                    protocol: Some("TCP".into()),
                    app_protocol: None,
                })
                .collect()
        };
        let subset = |ip: &str, order| EndpointSubset {
            addresses: Some(vec![EndpointAddress {
                ip: ip.into(),
                ..Default::default()
            }]),
            not_ready_addresses: None,
            ports: Some(ports(order)),
        };
        let mut ep = endpoints(json!([]));
        ep.subsets = Some(vec![
            subset("10.0.0.1", [("a", 1), ("b", 2)]),
            subset("10.0.0.2", [("b", 2), ("a", 1)]),
        ]);
        let slices = mirrored_slices(&ep).slices;
        assert_eq!(slices.len(), 1, "{slices:#?}");
        assert_eq!(slices[0].endpoints.len(), 2);
        assert_eq!(
            mirrored_slices(&ep).slices[0].metadata.name,
            slices[0].metadata.name
        );
        assert!(mirrored_slices(&endpoints(json!([]))).slices.is_empty());
    }

    #[test]
    fn only_endpoints_of_selector_less_services_not_marked_to_skip_are_mirrored() {
        let ep = endpoints(json!([]));
        assert!(mirrors(&ep, &service(None)));
        assert!(mirrors(&ep, &service(Some(json!({})))));
        assert!(!mirrors(&ep, &service(Some(json!({"app": "db"})))));
        let mut skipped = ep.clone();
        skipped
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(SKIP_MIRROR_LABEL.into(), "true".into());
        assert!(!mirrors(&skipped, &service(None)));
        let mut leader = ep.clone();
        leader
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(LEADER_ELECTION_ANNOTATION.into(), "{}".into());
        assert!(!mirrors(&leader, &service(None)));
    }

    fn addresses(ips: impl Iterator<Item = String>) -> serde_json::Value {
        ips.map(|ip| json!({"ip": ip})).collect()
    }

    #[test]
    fn a_subset_mirrors_its_first_thousand_valid_addresses_ready_ones_first() {
        let ready = (0..1000).map(|i| format!("10.1.{}.{}", i / 250, i % 250 + 1));
        let ep = endpoints(json!([{
            "addresses": addresses(ready.chain(["bogus".to_string()])),
            "notReadyAddresses": [{"ip": "10.2.0.1"}, {"ip": "also-bogus"}],
            "ports": [{"port": 80}],
        }]));
        let Mirrored { slices, skipped } = mirrored_slices(&ep);
        assert_eq!(slices.len(), 1);
        assert_eq!(slices[0].endpoints.len(), 1000);
        assert!(slices[0]
            .endpoints
            .iter()
            .all(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true)));
        // Upstream stops looking once the limit is reached: the bogus addresses past it are
        // only "too many", not invalid.
        assert_eq!(
            skipped,
            Skipped {
                invalid: 0,
                total: 3
            }
        );
        assert_eq!(
            skipped.warnings(),
            [(
                TOO_MANY_ADDRESSES_TO_MIRROR,
                "A max of 1000 addresses can be mirrored to EndpointSlices per Endpoints subset. 3 addresses were skipped".to_string()
            )]
        );
    }

    #[test]
    fn invalid_addresses_before_the_limit_count_as_invalid_and_as_skipped() {
        let ready = (0..1001).map(|i| format!("10.1.{}.{}", i / 250, i % 250 + 1));
        let ep = endpoints(json!([
            {"addresses": addresses(["nope".to_string()].into_iter().chain(ready)),
             "ports": [{"port": 80}]},
            {"addresses": [{"ip": "10.3.0.1"}], "ports": [{"port": 81}]},
        ]));
        let Mirrored { slices, skipped } = mirrored_slices(&ep);
        let mut sizes: Vec<usize> = slices.iter().map(|s| s.endpoints.len()).collect();
        sizes.sort();
        assert_eq!(sizes, [1, 1000]);
        assert_eq!(
            skipped,
            Skipped {
                invalid: 1,
                total: 2
            }
        );
        let reasons: Vec<&str> = skipped.warnings().iter().map(|w| w.0).collect();
        assert_eq!(reasons, [INVALID_IP_ADDRESS, TOO_MANY_ADDRESSES_TO_MIRROR]);
        assert!(Skipped::default().warnings().is_empty());
    }

    #[test]
    fn addresses_are_read_as_upstream_reads_them() {
        let ip = |text: &str| crate::api::go_ip::parse_sloppy(text).map(|ip| ip.to_string());
        assert_eq!(ip("10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(ip("010.000.0.01").as_deref(), Some("10.0.0.1"));
        assert_eq!(ip("::ffff:10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(ip("FD00:0::1").as_deref(), Some("fd00::1"));
        for bad in [
            "",
            " 10.0.0.1",
            "10.0.0.256",
            "10.0.0",
            "10.0.0.1.2",
            "10..0.1",
            "a.b.c.d",
        ] {
            assert_eq!(ip(bad), None, "{bad:?}");
        }
    }
}
