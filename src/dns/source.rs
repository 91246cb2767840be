//! Keeps the zone current: reflectors of Services and EndpointSlices, and a rebuild of the
//! whole zone shortly after any change (a burst of changes costs one rebuild).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use tokio::sync::{oneshot, Notify};

use super::server::ZoneHandle;
use super::zone::ClusterZone;

/// Changes closer together than this are folded into one rebuild.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Runs forever, replacing the zone in `zone` after every change; `ready` fires once the zone
/// holds the complete first listing of both kinds.
pub async fn run(
    client: kube::Client,
    domain: String,
    zone: ZoneHandle,
    ready: oneshot::Sender<()>,
) {
    let (services, services_writer) = reflector::store::<Service>();
    let (slices, slices_writer) = reflector::store::<EndpointSlice>();
    let changed = Arc::new(Notify::new());

    let watch_services = {
        let changed = changed.clone();
        let api: Api<Service> = Api::all(client.clone());
        reflector::reflector(services_writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .for_each(move |event| {
                if let Err(error) = event {
                    tracing::warn!(%error, "watching services for DNS");
                }
                changed.notify_one();
                std::future::ready(())
            })
    };
    let watch_slices = {
        let changed = changed.clone();
        let api: Api<EndpointSlice> = Api::all(client);
        reflector::reflector(slices_writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .for_each(move |event| {
                if let Err(error) = event {
                    tracing::warn!(%error, "watching endpointslices for DNS");
                }
                changed.notify_one();
                std::future::ready(())
            })
    };
    let rebuild = async {
        let mut ready = Some(ready);
        loop {
            changed.notified().await;
            tokio::time::sleep(DEBOUNCE).await;
            let synced = services.wait_until_ready().await.is_ok()
                && slices.wait_until_ready().await.is_ok();
            let Some(built) = build(&domain, &services, &slices) else {
                tracing::error!(%domain, "the cluster domain is not a valid DNS name");
                return;
            };
            *zone.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(built);
            if synced {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
        }
    };
    tokio::join!(watch_services, watch_slices, rebuild);
}

fn build(
    domain: &str,
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
) -> Option<ClusterZone> {
    let services = services.state();
    let slices = slices.state();
    let services: Vec<&Service> = services.iter().map(|s| s.as_ref()).collect();
    let slices: Vec<&EndpointSlice> = slices.iter().map(|s| s.as_ref()).collect();
    ClusterZone::build(domain, &services, &slices)
}
