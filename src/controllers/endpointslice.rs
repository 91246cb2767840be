//! EndpointSlices and the legacy Endpoints for every Service with a selector: the addresses of
//! the selected pods that have an IP, with ready/serving/terminating conditions and the
//! Service's ports resolved against each pod (named target ports come from container ports).
//!
//! Pods whose named ports resolve to different numbers land in different slices, as upstream
//! does. Slice names are `<service>-<hash of the port mapping>` rather than upstream's random
//! suffix, so a reconcile finds its own slices by name without bookkeeping. Endpoints carry an
//! owner reference to their Service (upstream's have none and are removed by the endpoints
//! controller) so the garbage collector removes them with the Service. As upstream's endpoints
//! controller does, a Service's deletion also deletes the Endpoints of its name that someone
//! else made (those of a Service without a selector).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CoreEndpointPort, EndpointSubset, Endpoints, ObjectReference,
    Pod, Service, ServicePort,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};

use super::common;

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
}

/// Runs until the watch ends.
pub async fn run(client: kube::Client) {
    let services: Api<Service> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let slices: Api<EndpointSlice> = Api::all(client.clone());
    let controller = Controller::new(services, watcher::Config::default());
    let store = controller.store();
    let controller = controller
        // A pod's labels may just have stopped matching a Service, and the event does not say
        // which labels it had: wake every Service of the namespace.
        .watches(pods, watcher::Config::default(), move |pod| {
            services_in_namespace(&store, pod.metadata.namespace.as_deref())
        })
        .owns(slices, watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(client.clone()))
        .for_each(|_| async {});
    tokio::join!(controller, delete_endpoints_of_deleted_services(client));
}

/// Deletes the Endpoints named like each Service that goes. A deletion missed while the watch
/// was down leaves them, as upstream's would.
async fn delete_endpoints_of_deleted_services(client: kube::Client) {
    let services: Api<Service> = Api::all(client.clone());
    watcher::watcher(services, watcher::Config::default())
        .default_backoff()
        .for_each(|event| {
            let client = client.clone();
            async move {
                let Ok(watcher::Event::Delete(svc)) = event else {
                    return;
                };
                let (Some(name), Some(namespace)) = (svc.metadata.name, svc.metadata.namespace)
                else {
                    return;
                };
                let endpoints: Api<Endpoints> = Api::namespaced(client, &namespace);
                match endpoints.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(error) => {
                        tracing::warn!(%error, %namespace, %name, "deleting a deleted Service's Endpoints failed")
                    }
                }
            }
        })
        .await;
}

fn services_in_namespace(
    store: &Store<Service>,
    namespace: Option<&str>,
) -> Vec<ObjectRef<Service>> {
    store
        .state()
        .iter()
        .filter(|s| s.metadata.namespace.as_deref() == namespace)
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

fn error_policy(_: Arc<Service>, error: &Error, _: Arc<kube::Client>) -> Action {
    tracing::warn!(%error, "endpoints sync failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(svc: Arc<Service>, client: Arc<kube::Client>) -> Result<Action, Error> {
    let (Some(name), Some(namespace)) = (&svc.metadata.name, &svc.metadata.namespace) else {
        return Ok(Action::await_change());
    };
    if !manages(&svc) || svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let pods: Api<Pod> = Api::namespaced(client.as_ref().clone(), namespace);
    let all = pods.list(&ListParams::default()).await?.items;
    let selected: Vec<&Pod> = all.iter().filter(|p| selects(&svc, p)).collect();

    let slices: Api<EndpointSlice> = Api::namespaced(client.as_ref().clone(), namespace);
    let desired = build_endpoint_slices(&svc, &selected);
    let existing: Vec<EndpointSlice> = slices
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|s| owned_slice(s, name))
        .collect();
    apply_slices(&slices, &existing, &desired).await?;

    let endpoints_api: Api<Endpoints> = Api::namespaced(client.as_ref().clone(), namespace);
    let wanted = build_endpoints(&svc, &selected);
    match endpoints_api.get_opt(name).await? {
        None => ignore_conflict(endpoints_api.create(&PostParams::default(), &wanted).await)?,
        Some(current)
            if current.subsets.clone().unwrap_or_default()
                != wanted.subsets.clone().unwrap_or_default()
                || current.metadata.labels != wanted.metadata.labels =>
        {
            let mut updated = wanted.clone();
            updated.metadata.resource_version = current.metadata.resource_version.clone();
            updated.metadata.annotations = current.metadata.annotations.clone();
            ignore_conflict(
                endpoints_api
                    .replace(name, &PostParams::default(), &updated)
                    .await,
            )?
        }
        Some(_) => {}
    }
    Ok(Action::await_change())
}

/// Makes a Service's slices `existing` (those its controller owns) into `desired`, matched by
/// name: creates the missing, replaces the changed, deletes the rest.
pub(super) async fn apply_slices(
    slices: &Api<EndpointSlice>,
    existing: &[EndpointSlice],
    desired: &[EndpointSlice],
) -> Result<(), kube::Error> {
    for slice in desired {
        let slice_name = slice.metadata.name.clone().unwrap_or_default();
        let current = existing
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(slice_name.as_str()));
        let written = match current {
            None => slices.create(&PostParams::default(), slice).await,
            Some(current) if !same_slice(current, slice) => {
                let mut updated = slice.clone();
                updated.metadata.resource_version = current.metadata.resource_version.clone();
                slices
                    .replace(&slice_name, &PostParams::default(), &updated)
                    .await
            }
            Some(_) => continue,
        };
        // A write that lost a race is redone by the reconcile the winner's event triggers.
        match written {
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            other => {
                other?;
            }
        }
    }
    for stale in existing
        .iter()
        .filter(|s| !desired.iter().any(|d| d.metadata.name == s.metadata.name))
    {
        let stale_name = stale.metadata.name.clone().unwrap_or_default();
        match slices.delete(&stale_name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A write that lost a race is redone by the reconcile the winner's event triggers.
fn ignore_conflict<T>(result: Result<T, kube::Error>) -> Result<(), Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Services without a selector (and ExternalName ones) have endpoints managed by their users.
pub fn manages(svc: &Service) -> bool {
    let Some(spec) = svc.spec.as_ref() else {
        return false;
    };
    spec.type_.as_deref() != Some("ExternalName")
        && spec.selector.as_ref().is_some_and(|s| !s.is_empty())
}

fn selects(svc: &Service, pod: &Pod) -> bool {
    let selector = svc.spec.as_ref().and_then(|s| s.selector.as_ref());
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    selector.is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

fn owned_slice(slice: &EndpointSlice, service: &str) -> bool {
    let labels = slice.metadata.labels.clone().unwrap_or_default();
    labels.get(SERVICE_NAME_LABEL).map(String::as_str) == Some(service)
        && labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
}

fn same_slice(a: &EndpointSlice, b: &EndpointSlice) -> bool {
    a.address_type == b.address_type
        && a.endpoints == b.endpoints
        && a.ports == b.ports
        && a.metadata.labels == b.metadata.labels
        && a.metadata.annotations.clone().unwrap_or_default()
            == b.metadata.annotations.clone().unwrap_or_default()
}

/// The port number a Service port reaches on `pod`: a number as is, a name looked up in the
/// pod's container ports (with the same protocol); None if the pod has no such port.
pub fn resolve_target_port(port: &ServicePort, pod: &Pod) -> Option<i32> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match port.target_port.as_ref() {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(s)) => match s.parse::<i32>() {
            Ok(n) => Some(n),
            Err(_) => pod.spec.as_ref()?.containers.iter().find_map(|c| {
                c.ports.iter().flatten().find_map(|p| {
                    let same_protocol = p.protocol.as_deref().unwrap_or("TCP") == protocol;
                    (p.name.as_deref() == Some(s.as_str()) && same_protocol)
                        .then_some(p.container_port)
                })
            }),
        },
    }
}

fn address_family(svc: &Service) -> &'static str {
    let first = svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .and_then(|f| f.first().cloned());
    match first.as_deref() {
        Some("IPv6") => "IPv6",
        _ => "IPv4",
    }
}

/// The pod's address in the Service's family, if it has one yet.
fn pod_address(pod: &Pod, family: &str) -> Option<String> {
    let status = pod.status.as_ref()?;
    let mut ips: Vec<String> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|ip| ip.ip.clone())
        .collect();
    if let Some(ip) = &status.pod_ip {
        ips.insert(0, ip.clone());
    }
    ips.into_iter()
        .filter(|ip| !ip.is_empty())
        .find(|ip| (family == "IPv6") == ip.contains(':'))
}

/// Would upstream list this pod at all: it has an address and is not finished.
fn endpoint_candidate(pod: &Pod, family: &str) -> Option<String> {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    pod_address(pod, family)
}

fn pod_target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// The hostname a pod gets in DNS through this Service: its own, when its subdomain is the
/// Service.
fn pod_hostname(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    (spec.subdomain.is_some() && spec.subdomain == svc.metadata.name)
        .then(|| spec.hostname.clone())
        .flatten()
}

fn service_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    let headless = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_some_and(|ip| ip == "None");
    if headless {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

fn owner_reference(
    svc: &Service,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
    common::controller_reference("v1", "Service", &svc.metadata)
}

/// Resolved ports for one pod, in Service port order, as slice ports.
fn resolved_ports(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    ports
        .iter()
        .filter_map(|p| {
            Some(EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(resolve_target_port(p, pod)?),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect()
}

/// The EndpointSlices the Service should have: one per distinct port mapping, or one empty
/// slice when no pod is selected.
pub fn build_endpoint_slices(svc: &Service, pods: &[&Pod]) -> Vec<EndpointSlice> {
    let family = address_family(svc);
    let publish_not_ready = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let mut groups: BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
    let mut sorted: Vec<&&Pod> = pods.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for pod in sorted {
        let Some(address) = endpoint_candidate(pod, family) else {
            continue;
        };
        let ports = resolved_ports(svc, pod);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let ready = common::pod_is_ready(pod);
        let endpoint = Endpoint {
            addresses: vec![address],
            conditions: Some(EndpointConditions {
                ready: Some(publish_not_ready || (ready && !terminating)),
                serving: Some(ready),
                terminating: Some(terminating),
            }),
            hostname: pod_hostname(pod, svc),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(pod_target_ref(pod)),
            zone: None,
            hints: None,
            deprecated_topology: None,
        };
        let key = port_key(&ports);
        groups
            .entry(key)
            .or_insert_with(|| (ports, Vec::new()))
            .1
            .push(endpoint);
    }
    if groups.is_empty() {
        groups.insert(port_key(&[]), (Vec::new(), Vec::new()));
    }
    let name = svc.metadata.name.clone().unwrap_or_default();
    let mut labels = service_labels(svc);
    labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    groups
        .into_iter()
        .map(|(key, (ports, endpoints))| EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{name}-{}",
                    super::deployment::safe_encode(
                        &super::deployment::fnv32a(format!("{family}/{key}").as_bytes())
                            .to_string()
                    )
                )),
                namespace: svc.metadata.namespace.clone(),
                labels: Some(labels.clone()),
                owner_references: Some(vec![owner_reference(svc)]),
                ..Default::default()
            },
            address_type: family.to_string(),
            endpoints,
            ports: Some(ports),
        })
        .collect()
}

pub(super) fn port_key(ports: &[EndpointPort]) -> String {
    ports
        .iter()
        .map(|p| {
            format!(
                "{}:{}:{}",
                p.name.as_deref().unwrap_or(""),
                p.port.unwrap_or(0),
                p.protocol.as_deref().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The legacy Endpoints: ready addresses and not-ready ones per port mapping; terminating pods
/// are left out (unless the Service publishes not-ready addresses), as upstream.
pub fn build_endpoints(svc: &Service, pods: &[&Pod]) -> Endpoints {
    let family = address_family(svc);
    let publish_not_ready = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let mut subsets: BTreeMap<String, EndpointSubset> = BTreeMap::new();
    let mut sorted: Vec<&&Pod> = pods.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for pod in sorted {
        let Some(ip) = endpoint_candidate(pod, family) else {
            continue;
        };
        let terminating = pod.metadata.deletion_timestamp.is_some();
        if terminating && !publish_not_ready {
            continue;
        }
        let ports = resolved_ports(svc, pod);
        if ports.is_empty()
            && svc
                .spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .is_some_and(|p| !p.is_empty())
        {
            continue;
        }
        let address = EndpointAddress {
            ip,
            hostname: pod_hostname(pod, svc),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(pod_target_ref(pod)),
        };
        let subset = subsets
            .entry(port_key(&ports))
            .or_insert_with(|| EndpointSubset {
                addresses: None,
                not_ready_addresses: None,
                ports: (!ports.is_empty()).then(|| {
                    ports
                        .iter()
                        .map(|p| CoreEndpointPort {
                            name: p.name.clone().filter(|n| !n.is_empty()),
                            port: p.port.unwrap_or(0),
                            protocol: p.protocol.clone(),
                            app_protocol: p.app_protocol.clone(),
                        })
                        .collect()
                }),
            });
        let list = if publish_not_ready || common::pod_is_ready(pod) {
            subset.addresses.get_or_insert_with(Vec::new)
        } else {
            subset.not_ready_addresses.get_or_insert_with(Vec::new)
        };
        list.push(address);
    }
    let mut labels = service_labels(svc);
    labels.insert(SKIP_MIRROR_LABEL.into(), "true".into());
    Endpoints {
        metadata: ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![owner_reference(svc)]),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then(|| subsets.into_values().collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::common::tests::{labels, ready_pod};
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodIP, PodSpec, PodStatus, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn service(target: IntOrString) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("svc-uid".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(labels(&[("app", "web")])),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(target),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn web_pod(name: &str, ip: &str, ready: bool, container_port: i32) -> Pod {
        let mut pod = if ready {
            ready_pod(name, Timestamp::now())
        } else {
            Pod {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                status: Some(PodStatus {
                    phase: Some("Running".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }
        };
        pod.metadata.namespace = Some("default".into());
        pod.metadata.labels = Some(labels(&[("app", "web")]));
        pod.spec = Some(PodSpec {
            node_name: Some("n1".into()),
            containers: vec![Container {
                name: "web".into(),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port,
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            ..Default::default()
        });
        let status = pod.status.get_or_insert_with(Default::default);
        if !ip.is_empty() {
            status.pod_ip = Some(ip.into());
            status.pod_ips = Some(vec![PodIP { ip: ip.into() }]);
        }
        pod
    }

    #[test]
    fn named_target_ports_resolve_through_the_pods_container_ports() {
        let svc = service(IntOrString::String("http".into()));
        let port = &svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!(
            resolve_target_port(port, &web_pod("a", "10.42.0.5", true, 8080)),
            Some(8080)
        );
        let numeric = service(IntOrString::Int(9000));
        let port = &numeric.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!(
            resolve_target_port(port, &web_pod("a", "10.42.0.5", true, 8080)),
            Some(9000)
        );
        let missing = service(IntOrString::String("grpc".into()));
        let port = &missing.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!(
            resolve_target_port(port, &web_pod("a", "10.42.0.5", true, 8080)),
            None
        );
    }

    #[test]
    fn a_slice_lists_pods_with_an_ip_and_their_conditions() {
        let svc = service(IntOrString::String("http".into()));
        let ready = web_pod("a", "10.42.0.5", true, 8080);
        let not_ready = web_pod("b", "10.42.0.6", false, 8080);
        let no_ip = web_pod("c", "", true, 8080);
        let mut leaving = web_pod("d", "10.42.0.7", true, 8080);
        leaving.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        let slices = build_endpoint_slices(&svc, &[&ready, &not_ready, &no_ip, &leaving]);
        assert_eq!(slices.len(), 1);
        let slice = &slices[0];
        assert_eq!(slice.address_type, "IPv4");
        let slice_labels = slice.metadata.labels.clone().unwrap();
        assert_eq!(slice_labels[SERVICE_NAME_LABEL], "web");
        assert_eq!(slice_labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(slice.ports.as_ref().unwrap()[0].port, Some(8080));
        let conditions: Vec<(String, bool, bool, bool)> = slice
            .endpoints
            .iter()
            .map(|e| {
                let c = e.conditions.clone().unwrap();
                (
                    e.addresses[0].clone(),
                    c.ready.unwrap(),
                    c.serving.unwrap(),
                    c.terminating.unwrap(),
                )
            })
            .collect();
        assert_eq!(
            conditions,
            vec![
                ("10.42.0.5".into(), true, true, false),
                ("10.42.0.6".into(), false, false, false),
                ("10.42.0.7".into(), false, true, true),
            ]
        );
        let owner = common::controller_of(&slice.metadata).unwrap();
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Service", "svc-uid")
        );
    }

    #[test]
    fn pods_with_different_port_numbers_go_to_different_slices() {
        let svc = service(IntOrString::String("http".into()));
        let a = web_pod("a", "10.42.0.5", true, 8080);
        let b = web_pod("b", "10.42.0.6", true, 9090);
        let slices = build_endpoint_slices(&svc, &[&a, &b]);
        assert_eq!(slices.len(), 2);
        assert_ne!(slices[0].metadata.name, slices[1].metadata.name);
        // Names are stable from one build to the next.
        let again = build_endpoint_slices(&svc, &[&b, &a]);
        assert_eq!(slices, again);
    }

    #[test]
    fn without_pods_there_is_one_empty_slice() {
        let slices = build_endpoint_slices(&service(IntOrString::Int(80)), &[]);
        assert_eq!(slices.len(), 1);
        assert!(slices[0].endpoints.is_empty());
    }

    #[test]
    fn legacy_endpoints_split_ready_and_not_ready_and_drop_terminating_pods() {
        let svc = service(IntOrString::Int(8080));
        let ready = web_pod("a", "10.42.0.5", true, 8080);
        let not_ready = web_pod("b", "10.42.0.6", false, 8080);
        let mut leaving = web_pod("d", "10.42.0.7", true, 8080);
        leaving.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        let endpoints = build_endpoints(&svc, &[&ready, &not_ready, &leaving]);
        let subsets = endpoints.subsets.unwrap();
        assert_eq!(subsets.len(), 1);
        let ips = |list: &Option<Vec<EndpointAddress>>| -> Vec<String> {
            list.iter().flatten().map(|a| a.ip.clone()).collect()
        };
        assert_eq!(ips(&subsets[0].addresses), ["10.42.0.5"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), ["10.42.0.6"]);
        assert_eq!(subsets[0].ports.as_ref().unwrap()[0].port, 8080);
        assert_eq!(
            endpoints.metadata.labels.unwrap()[SKIP_MIRROR_LABEL],
            "true"
        );
    }

    #[test]
    fn services_without_a_selector_are_left_alone() {
        let mut svc = service(IntOrString::Int(80));
        assert!(manages(&svc));
        svc.spec.as_mut().unwrap().selector = None;
        assert!(!manages(&svc));
    }
}
