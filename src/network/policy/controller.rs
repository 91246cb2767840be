//! The policy control loop: reflect NetworkPolicies, Pods and Namespaces, and after each burst
//! of changes (debounced) render the policy and host port tables and apply what changed. One
//! loop for both tables so the node keeps a single Pod cache.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Api;
use kube::Resource;
use tokio::sync::Notify;

use super::{hostports, render};
use crate::network::proxy::{Applier, Ruleset};

/// Pods start and stop in bursts (a rollout); one batch for the lot.
const DEBOUNCE: Duration = Duration::from_millis(10);
/// Retry pause after a failed apply.
const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub node_name: String,
    /// Addresses host ports answer on.
    pub node_ips: Vec<Ipv4Addr>,
}

/// Runs until the API watches end.
pub async fn run(client: kube::Client, config: PolicyConfig) -> anyhow::Result<()> {
    let appliers = tokio::task::spawn_blocking(|| {
        if let Err(e) = super::enable_bridge_netfilter() {
            tracing::warn!(error = %e, "network policies will miss pod-to-pod traffic");
        }
        let policy = Applier::open_table(render::TABLE, render::is_policy_object)?;
        let hostports = Applier::open_table(hostports::TABLE, hostports::is_hostport_object)?;
        Ok::<_, crate::network::proxy::ProxyError>((policy, hostports))
    })
    .await??;
    let mut appliers = Some(appliers);
    let changed = Arc::new(Notify::new());

    let (policies, policies_writer) = reflector::store::<NetworkPolicy>();
    let (pods, pods_writer) = reflector::store::<Pod>();
    let (namespaces, namespaces_writer) = reflector::store::<Namespace>();
    let watch_policies = watcher(
        Api::<NetworkPolicy>::all(client.clone()),
        Default::default(),
    )
    .default_backoff()
    .reflect(policies_writer)
    .touched_objects()
    .map(|r| r.map(|_| ()));
    let watch_pods = watcher(Api::<Pod>::all(client.clone()), Default::default())
        .default_backoff()
        .reflect(pods_writer)
        .touched_objects()
        .map(|r| r.map(|_| ()));
    let watch_namespaces = watcher(Api::<Namespace>::all(client.clone()), Default::default())
        .default_backoff()
        .reflect(namespaces_writer)
        .touched_objects()
        .map(|r| r.map(|_| ()));
    let notify = changed.clone();
    let mut events = std::pin::pin!(futures::stream::select(
        futures::stream::select(watch_policies, watch_pods),
        watch_namespaces,
    ));
    let pump = async move {
        while let Some(event) = events.next().await {
            if let Err(e) = event {
                tracing::warn!(error = %e, "network policy watch error");
            }
            notify.notify_one();
        }
    };

    let recorder = Recorder::new(client.clone(), Reporter::from("network-policy"));
    let mut warned = HashSet::new();
    let apply_loop = async {
        policies.wait_until_ready().await?;
        pods.wait_until_ready().await?;
        namespaces.wait_until_ready().await?;
        loop {
            tokio::time::sleep(DEBOUNCE).await;
            let started = Instant::now();
            let policy_list: Vec<NetworkPolicy> =
                policies.state().iter().map(|p| (**p).clone()).collect();
            let pod_list: Vec<Pod> = pods.state().iter().map(|p| (**p).clone()).collect();
            let namespace_list: Vec<Namespace> =
                namespaces.state().iter().map(|n| (**n).clone()).collect();
            warn_of_ipv6_blocks(&recorder, &mut warned, &policy_list).await;
            let desired_policy = render::render(&policy_list, &pod_list, &namespace_list);
            let desired_hostports =
                hostports::render(&pod_list, &config.node_name, &config.node_ips);
            let Some(current) = appliers.take() else {
                anyhow::bail!("the network policy appliers were lost");
            };
            let (back, outcome) = tokio::task::spawn_blocking(move || {
                let (mut policy, mut hostports) = current;
                let outcome = apply_both(
                    &mut policy,
                    desired_policy,
                    &mut hostports,
                    desired_hostports,
                );
                ((policy, hostports), outcome)
            })
            .await?;
            appliers = Some(back);
            match outcome {
                Ok(messages) => tracing::debug!(
                    messages,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "network policy and host port rules applied"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "applying network policy rules failed; retrying");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            }
            changed.notified().await;
        }
        #[allow(unreachable_code)]
        Ok::<(), anyhow::Error>(())
    };

    tokio::select! {
        () = pump => anyhow::bail!("the network policy watches ended"),
        result = apply_loop => result,
    }
}

/// Says once per policy generation, as a Warning Event on the policy, that its IPv6 ipBlocks
/// match nothing: the policy is accepted and enforced for IPv4, and its author learns why the
/// IPv6 part has no effect.
async fn warn_of_ipv6_blocks(
    recorder: &Recorder,
    warned: &mut HashSet<(String, i64)>,
    policies: &[NetworkPolicy],
) {
    let mut seen = HashSet::new();
    for policy in policies {
        let (Some(uid), Some(spec)) = (policy.metadata.uid.clone(), policy.spec.as_ref()) else {
            continue;
        };
        let id = (uid, policy.metadata.generation.unwrap_or(0));
        seen.insert(id.clone());
        if warned.contains(&id) {
            continue;
        }
        let ignored = render::ignored_ipv6_blocks(spec);
        if !ignored.is_empty() {
            let event = Event {
                type_: EventType::Warning,
                reason: "IPv6IPBlockIgnored".into(),
                note: Some(format!(
                    "ipBlock {} is IPv6: pods have IPv4 addresses only, so it matches no \
                     traffic; the rest of the policy is enforced",
                    ignored.join(", ")
                )),
                action: "Render".into(),
                secondary: None,
            };
            if let Err(error) = recorder.publish(&event, &policy.object_ref(&())).await {
                tracing::debug!(%error, "cannot record an event");
            }
        }
        warned.insert(id);
    }
    // Forget deleted policies and old generations.
    warned.retain(|id| seen.contains(id));
}

fn apply_both(
    policy: &mut Applier,
    desired_policy: Ruleset,
    hostports: &mut Applier,
    desired_hostports: Ruleset,
) -> Result<usize, crate::network::proxy::ProxyError> {
    let a = policy.apply(desired_policy)?;
    let b = hostports.apply(desired_hostports)?;
    Ok(a.messages + b.messages)
}
