//! The proxy's control loop: reflect Services and EndpointSlices from the API, and after each
//! burst of changes (debounced) render the desired ruleset and apply the difference.
//! LoadBalancer Services get the node's addresses as their ingress, like k3s' ServiceLB.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Api;
use tokio::sync::Notify;

use super::render::{is_proxied, render, ProxyConfig};
use super::Applier;

/// How long to wait after a change for the ones that usually come with it (a Service and its
/// EndpointSlice, a rollout's endpoints), so they land in one batch.
pub const DEBOUNCE: Duration = Duration::from_millis(10);
/// Retry pause after a failed apply.
const RETRY: Duration = Duration::from_secs(1);

/// Runs until the API watches end. `config.node_ips` are the addresses NodePorts answer on.
pub async fn run(client: kube::Client, config: ProxyConfig) -> anyhow::Result<()> {
    let mut applier = Some(tokio::task::spawn_blocking(Applier::open).await??);
    let changed = Arc::new(Notify::new());

    let (services, services_writer) = reflector::store::<Service>();
    let (slices, slices_writer) = reflector::store::<EndpointSlice>();
    let watch_services = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(services_writer)
    .touched_objects();
    let watch_slices = watcher(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(slices_writer)
    .touched_objects();
    let notify = changed.clone();
    let mut events = std::pin::pin!(futures::stream::select(
        watch_services.map(|r| r.map(|_| ())),
        watch_slices.map(|r| r.map(|_| ())),
    ));
    let pump = async move {
        while let Some(event) = events.next().await {
            if let Err(e) = event {
                tracing::warn!(error = %e, "proxy watch error");
            }
            notify.notify_one();
        }
    };

    let apply_loop = async {
        services.wait_until_ready().await?;
        slices.wait_until_ready().await?;
        loop {
            tokio::time::sleep(DEBOUNCE).await;
            let started = Instant::now();
            let service_list: Vec<Service> =
                services.state().iter().map(|s| (**s).clone()).collect();
            let slice_list: Vec<EndpointSlice> =
                slices.state().iter().map(|s| (**s).clone()).collect();
            let desired = render(&service_list, &slice_list, &config);
            let Some(mut current) = applier.take() else {
                anyhow::bail!("the proxy's applier was lost");
            };
            let (back, outcome) = tokio::task::spawn_blocking(move || {
                let outcome = current.apply(desired);
                (current, outcome)
            })
            .await?;
            applier = Some(back);
            match outcome {
                Ok(sent) => tracing::debug!(
                    messages = sent.messages,
                    bytes = sent.bytes,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "proxy rules applied"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "applying proxy rules failed; retrying");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            }
            publish_load_balancers(&client, &service_list, &config.node_ips).await;
            changed.notified().await;
        }
        #[allow(unreachable_code)]
        Ok::<(), anyhow::Error>(())
    };

    tokio::select! {
        () = pump => anyhow::bail!("the proxy's watches ended"),
        result = apply_loop => result,
    }
}

/// Sets `status.loadBalancer.ingress` of LoadBalancer Services to the node's addresses, where
/// it is not so already.
async fn publish_load_balancers(
    client: &kube::Client,
    services: &[Service],
    node_ips: &[Ipv4Addr],
) {
    for service in services {
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
