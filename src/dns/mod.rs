//! The cluster DNS server: answers for `<domain>` (default `cluster.local`) from a reflector
//! of Services and EndpointSlices and forwards every other name upstream.
//!
//! It listens on the node's bridge gateway (port 53, UDP and TCP) and publishes that address
//! as the endpoint of the selector-less `kube-system/kube-dns` Service, so pods reach it at the
//! well-known cluster IP through the service proxy like any other Service.
//!
//! # Layout
//! - [`zone`]: the cluster's names and records, built from Services and EndpointSlices.
//! - [`source`]: the reflectors that keep the zone current.
//! - [`forward`]: upstream choice, forwarding and its bounded cache.
//! - [`server`]: answering a question, and serving UDP/TCP.
//! - [`endpoints`]: publishing this server as the kube-dns endpoint.

pub mod endpoints;
pub mod forward;
pub mod server;
pub mod source;
pub mod zone;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};

use forward::Forwarder;
use server::{Answerer, ZoneHandle};
use zone::ClusterZone;

/// The DNS port, on the node address and behind the cluster IP alike.
pub const DNS_PORT: u16 = 53;
/// How often the listen address is looked for while the bridge does not exist yet.
const ADDRESS_POLL: Duration = Duration::from_secs(1);
/// How often binding is retried while the port is taken.
const BIND_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("the cluster domain {0:?} is not a valid DNS name")]
    BadDomain(String),
    #[error("cannot listen for DNS on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the DNS server failed: {0}")]
    Serve(#[from] hickory_server::net::NetError),
    #[error("the DNS record source stopped")]
    SourceStopped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// The node-local address to serve on: the pod bridge's gateway.
    pub listen: Ipv4Addr,
    pub port: u16,
    pub cluster_domain: String,
    /// Already chosen (see [`forward::host_upstreams`]).
    pub upstreams: Vec<SocketAddr>,
    /// Whether this server is the `kube-dns` Service's endpoint (the server's). An agent's
    /// serves only its own node's pods, which are pointed at it directly.
    pub publish: bool,
}

impl DnsConfig {
    /// The DNS settings of a berth config: bridge gateway, cluster domain, upstreams.
    pub fn from_config(
        config: &crate::config::Config,
    ) -> Result<DnsConfig, crate::network::NetError> {
        let node = crate::network::NodeNetworkConfig::from_config(config)?;
        let listen = node
            .pod_cidr_slice
            .gateway()
            .unwrap_or(node.pod_cidr_slice.network());
        Ok(DnsConfig {
            listen,
            port: DNS_PORT,
            cluster_domain: config.network.cluster_domain.clone(),
            upstreams: forward::host_upstreams(&config.network.upstream_dns),
            publish: true,
        })
    }
}

/// Runs the cluster DNS: records from the API via `client`, served once the listen address
/// exists on this host (the agent creates the bridge) and the first listing is in.
pub async fn run(client: kube::Client, config: DnsConfig) -> Result<(), DnsError> {
    let empty = ClusterZone::empty(&config.cluster_domain)
        .ok_or_else(|| DnsError::BadDomain(config.cluster_domain.clone()))?;
    let zone: ZoneHandle = Arc::new(RwLock::new(Arc::new(empty)));
    if config.upstreams.is_empty() {
        tracing::warn!("no upstream DNS resolver found; names outside the cluster will fail");
    }
    let forwarder = Arc::new(Forwarder::new(
        config.upstreams.clone(),
        forward::DEFAULT_CACHE_ENTRIES,
    ));
    let answerer = Arc::new(Answerer::new(zone.clone(), forwarder));

    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut source = tokio::spawn(source::run(
        client.clone(),
        config.cluster_domain.clone(),
        zone,
        ready_tx,
    ));

    let serving = async {
        wait_for_address(config.listen).await;
        // Before the first full listing every cluster name would be NXDOMAIN, which clients
        // cache; better to not answer at all for that moment.
        let _ = ready_rx.await;
        let addr = SocketAddr::new(IpAddr::V4(config.listen), config.port);
        let (udp, tcp) = bind_when_free(addr).await;
        tracing::info!(%addr, upstreams = ?config.upstreams, "cluster DNS is serving");
        // Published only now: an endpoint nothing listens on would just bounce queries.
        let _stop_publishing = config.publish.then(|| {
            AbortOnDrop(tokio::spawn(endpoints::keep_published(
                client,
                config.listen,
                config.port,
            )))
        });
        server::serve(udp, tcp, answerer, std::future::pending()).await?;
        Ok::<(), DnsError>(())
    };
    let outcome = tokio::select! {
        served = serving => served,
        _ = &mut source => Err(DnsError::SourceStopped),
    };
    source.abort();
    outcome
}

/// Ends a helper task when whatever it serves goes away.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Binds UDP and TCP on `addr`, retrying while something else holds the port (a host DNS
/// server listening on every address): the API must not go down over cluster DNS.
async fn bind_when_free(addr: SocketAddr) -> (UdpSocket, TcpListener) {
    let mut logged = false;
    loop {
        let bound = async {
            let udp = UdpSocket::bind(addr)
                .await
                .map_err(|source| DnsError::Bind { addr, source })?;
            let tcp = TcpListener::bind(addr)
                .await
                .map_err(|source| DnsError::Bind { addr, source })?;
            Ok::<_, DnsError>((udp, tcp))
        };
        match bound.await {
            Ok(sockets) => return sockets,
            Err(error) => {
                if !logged {
                    tracing::warn!(%error, "cluster DNS cannot listen yet; retrying");
                    logged = true;
                }
                tokio::time::sleep(BIND_RETRY).await;
            }
        }
    }
}

/// Waits until `ip` is assigned to an interface of this host (network namespace).
async fn wait_for_address(ip: Ipv4Addr) {
    let mut logged = false;
    while !has_address(ip) {
        if !logged {
            tracing::info!(%ip, "cluster DNS waits for its address to appear");
            logged = true;
        }
        tokio::time::sleep(ADDRESS_POLL).await;
    }
}

fn has_address(ip: Ipv4Addr) -> bool {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return false;
    };
    addrs
        .filter_map(|a| a.address)
        .filter_map(|s| s.as_sockaddr_in().map(|v4| v4.ip()))
        .any(|found| found == ip)
}
