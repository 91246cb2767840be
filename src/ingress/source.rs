//! Keeps the routing state current: reflectors of Ingresses, Services, EndpointSlices and
//! Secrets, and a rebuild of the whole state shortly after any change (a burst of changes costs
//! one rebuild). After each rebuild the Ingresses of our class get the node's addresses in
//! `status.loadBalancer`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use rustls::sign::CertifiedKey;
use tokio::sync::Notify;

use super::endpoints::ServiceIndex;
use super::routes::RoutingTable;
use super::state::{Routing, State};
use super::tls::Certificates;

/// Changes closer together than this are folded into one rebuild.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// The deprecated annotation some Ingresses still use instead of `spec.ingressClassName`.
const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// Runs forever, replacing `state` after every change.
pub async fn run(
    client: kube::Client,
    class: String,
    state: State,
    fallback: Arc<CertifiedKey>,
    node_ips: impl Fn() -> Vec<IpAddr>,
) {
    let (ingresses, ingresses_writer) = reflector::store::<Ingress>();
    let (services, services_writer) = reflector::store::<Service>();
    let (slices, slices_writer) = reflector::store::<EndpointSlice>();
    let (secrets, secrets_writer) = reflector::store::<Secret>();
    let changed = Arc::new(Notify::new());

    let watches = futures::future::join4(
        pump(
            reflector::reflector(
                ingresses_writer,
                watcher(Api::all(client.clone()), watcher::Config::default()),
            ),
            "ingresses",
            changed.clone(),
        ),
        pump(
            reflector::reflector(
                services_writer,
                watcher(Api::all(client.clone()), watcher::Config::default()),
            ),
            "services",
            changed.clone(),
        ),
        pump(
            reflector::reflector(
                slices_writer,
                watcher(Api::all(client.clone()), watcher::Config::default()),
            ),
            "endpointslices",
            changed.clone(),
        ),
        pump(
            reflector::reflector(
                secrets_writer,
                watcher(Api::all(client.clone()), watcher::Config::default()),
            ),
            "secrets",
            changed.clone(),
        ),
    );
    let rebuild = async {
        loop {
            changed.notified().await;
            tokio::time::sleep(DEBOUNCE).await;
            let ours: Vec<Arc<Ingress>> = ingresses
                .state()
                .into_iter()
                .filter(|i| is_ours(i, &class))
                .collect();
            state.replace(build(&ours, &services, &slices, &secrets, fallback.clone()));
            publish_status(&client, &ours, &node_ips()).await;
        }
    };
    tokio::join!(watches, rebuild);
}

/// Drives one watch, waking the rebuild on every event.
async fn pump<K>(
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    what: &'static str,
    changed: Arc<Notify>,
) {
    stream
        .default_backoff()
        .for_each(|event| {
            if let Err(error) = event {
                tracing::warn!(%error, what, "ingress controller watch");
            }
            changed.notify_one();
            std::future::ready(())
        })
        .await;
}

/// Whether `ingress` is for the controller of `class`.
pub fn is_ours(ingress: &Ingress, class: &str) -> bool {
    let named = ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref());
    let annotated = ingress
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
        .map(String::as_str);
    named.or(annotated) == Some(class)
}

fn build(
    ours: &[Arc<Ingress>],
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    secrets: &Store<Secret>,
    fallback: Arc<CertifiedKey>,
) -> Routing {
    let ingress_refs: Vec<&Ingress> = ours.iter().map(|i| i.as_ref()).collect();
    let (services, slices, secrets) = (services.state(), slices.state(), secrets.state());
    let service_refs: Vec<&Service> = services.iter().map(|s| s.as_ref()).collect();
    let slice_refs: Vec<&EndpointSlice> = slices.iter().map(|s| s.as_ref()).collect();
    let index = ServiceIndex::new(&service_refs, &slice_refs);
    let table = RoutingTable::build(&ingress_refs, |ns, backend| index.resolve(ns, backend));
    let certificates = Certificates::build(&ingress_refs, fallback, |ns, name| {
        secrets
            .iter()
            .find(|s| {
                s.metadata.namespace.as_deref() == Some(ns)
                    && s.metadata.name.as_deref() == Some(name)
            })
            .map(|s| s.as_ref())
    });
    Routing {
        table,
        certificates,
    }
}

/// Sets `status.loadBalancer.ingress` of each of `ours` to `ips`, where it is not so already.
async fn publish_status(client: &kube::Client, ours: &[Arc<Ingress>], ips: &[IpAddr]) {
    let want: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
    for ingress in ours {
        let have: Vec<String> = ingress
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|list| list.iter().filter_map(|i| i.ip.clone()).collect())
            .unwrap_or_default();
        if have == want {
            continue;
        }
        let (Some(namespace), Some(name)) = (
            ingress.metadata.namespace.as_deref(),
            ingress.metadata.name.as_deref(),
        ) else {
            continue;
        };
        let list: Vec<serde_json::Value> = want
            .iter()
            .map(|ip| serde_json::json!({"ip": ip}))
            .collect();
        let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": list}}});
        let api = Api::<Ingress>::namespaced(client.clone(), namespace);
        if let Err(error) = api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(%namespace, %name, %error, "cannot set the ingress status");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_ingress_is_ours_by_class_name_or_by_the_legacy_annotation() {
        let by_name: Ingress =
            serde_json::from_value(json!({"spec": {"ingressClassName": "berth"}})).unwrap();
        let by_annotation: Ingress = serde_json::from_value(
            json!({"metadata": {"annotations": {LEGACY_CLASS_ANNOTATION: "berth"}}}),
        )
        .unwrap();
        let other: Ingress =
            serde_json::from_value(json!({"spec": {"ingressClassName": "nginx"}})).unwrap();
        let none: Ingress = serde_json::from_value(json!({"spec": {}})).unwrap();
        assert!(is_ours(&by_name, "berth"));
        assert!(is_ours(&by_annotation, "berth"));
        assert!(!is_ours(&other, "berth"));
        assert!(!is_ours(&none, "berth"));
    }
}
