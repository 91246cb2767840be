//! Wires the subsystems: store → API server → controllers, behind one shutdown signal. Any
//! component that stops ends the process (a supervisor restarts it) rather than limping on.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinSet;

use crate::apiserver::authn::Authenticator;
use crate::apiserver::ApiServer;
use crate::config::{Config, LogConfig, LogFormat};
use crate::pki::{self, Pki, ServingNames};
use crate::registry::services::ServiceNetwork;
use crate::registry::{bootstrap, Registry};
use crate::store::Store;

/// Sets up `tracing` once for the process.
pub fn init_logging(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    // Also for a data dir made by someone else (an installer, a test): it holds every key.
    std::fs::set_permissions(
        &config.data_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .with_context(|| format!("cannot make {} private", config.data_dir.display()))?;

    // Servers sharing a datastore share its CAs and keys: fetch them before making any.
    crate::join::cluster_secrets::sync(&config.store, &config.data_dir)
        .await
        .context("cannot share the cluster's CAs and keys through the datastore")?;
    // Store first: nothing else is of use without it.
    let store_path = config.store_path();
    let encryption =
        crate::encryption::open(&config.data_dir).context("cannot set up secrets encryption")?;
    let store = Store::open_configured(&config.store, &store_path, Some(encryption.clone()))
        .with_context(|| {
            format!(
                "cannot open the store {}",
                crate::store::location(&config.store, &store_path)
            )
        })?;
    let service_network =
        ServiceNetwork::parse(&config.network.service_cidr, config.network.node_port_range)
            .map_err(anyhow::Error::msg)?;
    // Kept for shutdown: many components hold a store handle, so the store cannot count on
    // being dropped (its last-handle checkpoint) before the process exits.
    let store_at_shutdown = store.clone();
    let registry = Registry::new(store, service_network);
    crate::admission::builtin::register(&registry);
    let pod_security = crate::admission::pod_security::Defaults::from_config(&config.pod_security)
        .map_err(anyhow::Error::msg)?;
    registry
        .admission()
        .register(Arc::new(crate::admission::pod_security::PodSecurity::new(
            registry.store().clone(),
            pod_security,
        )));
    bootstrap::ensure_system_objects(&registry, config.network.dns_ip)
        .await
        .context("cannot create the system namespaces")?;
    crate::encryption::rotation::reseal_if_needed(&config.data_dir, registry.store(), &encryption)
        .await
        .context("cannot seal the secrets with the primary key")?;
    crate::crd::load(&registry).map_err(|e| anyhow::anyhow!("cannot load the CRDs: {e}"))?;
    crate::apiserver::rbac::bootstrap::reconcile(&registry)
        .await
        .context("cannot reconcile the default RBAC policy")?;
    let policies = crate::admission::policy::ValidatingAdmissionPolicies::start(&registry);
    registry.admission().register(policies.clone());
    registry
        .admission()
        .register(crate::admission::webhook::Webhooks::start(&registry));

    // Then the API, over TLS.
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.api.listen))?;
    let bound = listener.local_addr()?;
    let names = serving_names(&config, bound);
    let pki = Pki::ensure_with(&config.pki_dir(), &names, &config.pki.rotation_policy())
        .context("cannot set up the cluster PKI")?;
    let serving_cert =
        crate::certs::LiveServingCert::new(&pki).context("cannot load the serving certificate")?;
    let tls = pki
        .server_tls_config_with(serving_cert.clone())
        .context("cannot build the TLS configuration")?;
    let token_signer = Arc::new(
        crate::apiserver::sa_token::TokenSigner::load_or_create(
            &config.pki_dir(),
            registry.store().clone(),
        )
        .context("cannot set up the service account token key")?,
    );
    let authn = Arc::new(
        Authenticator::new(config.api.token_file.as_deref())
            .context("cannot load the token file")?
            .with_service_account_tokens(token_signer.clone())
            .with_bootstrap_tokens(crate::join::token::BootstrapTokens::new(
                registry.store().clone(),
            )),
    );
    let rbac = crate::apiserver::rbac::Rbac::start(registry.store())
        .context("cannot load the RBAC policy")?;
    let api_store = registry.store().clone();
    let api = ApiServer::new(registry, config.api.max_body_bytes);
    api.registry.admission().register(Arc::new(
        crate::apiserver::rbac::escalation::EscalationCheck { rbac: rbac.clone() },
    ));
    policies.use_rbac(rbac.clone());
    api.enable_rbac(rbac);
    api.registry
        .admission()
        .register(Arc::new(crate::join::node_authz::NodeRestriction));
    api.set_token_signer(token_signer);
    crate::aggregator::set_up(&api, &config.pki_dir(), &pki, &config.pki.rotation_policy())
        .await
        .context("cannot set up API aggregation")?;
    api.set_pod_logs_dir(config.data_dir.join("logs"));
    api.set_pod_runtime(
        crate::runtime::ShimRuntime::new(config.data_dir.join("pods"), config.pods_run_dir())
            .context("cannot locate the berth binary")?,
    );
    api.set_kubelet_client(Arc::new(
        crate::apiserver::kubelet_proxy::KubeletClient::new(config.node_name(), pki.clone()),
    ));
    let client_address = client_address(bound);
    api.set_server_address(client_address.to_string());
    let router = api.router();
    let auditor = Arc::new(
        crate::audit::Auditor::open(
            config.audit.policy_file.as_deref(),
            &config.audit_log_path(),
            config.audit.max_size_mb.saturating_mul(1024 * 1024),
            config.audit.max_backups,
        )
        .context("cannot set up the audit log")?,
    );

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let mut components = JoinSet::new();
    {
        let mut rx = shutdown_rx.clone();
        let audited = crate::audit::layer(router.clone(), auditor);
        components.spawn(async move {
            let shutdown = async move {
                let _ = rx.wait_for(|stop| *stop).await;
            };
            crate::apiserver::serve::serve(listener, tls, authn, audited, shutdown)
                .await
                .map_err(anyhow::Error::from)
        });
    }
    let shared_keys = crate::join::key_sharing::SharedEncryptionKeys::new(
        &config.store,
        &config.data_dir,
        encryption.clone(),
    )
    .context("cannot share the secrets encryption keys with the other servers")?;
    if let Some(keys) = shared_keys.clone() {
        components.spawn(keys.follow());
    }
    components.spawn(crate::encryption::rotation::watch_key_file(
        config.data_dir.clone(),
        api_store.clone(),
        encryption,
        shared_keys.map(|keys| keys as Arc<dyn crate::encryption::rotation::KeySharing>),
    ));
    let url = format!("https://{client_address}");
    pki::write_kubeconfig(&config.kubeconfig_path(), &url, &pki)
        .context("cannot write the kubeconfig")?;
    {
        let target = crate::certs::RotationTarget {
            pki_dir: config.pki_dir(),
            names,
            policy: config.pki.rotation_policy(),
            warn_before: config.pki.warn_before(),
            kubeconfig_path: config.kubeconfig_path(),
            server_url: url.clone(),
        };
        let rotator = crate::certs::Rotator::new(target, serving_cert, pki.clone());
        let c =
            crate::client::in_process(router.clone(), crate::client::system_user("berth-certs"));
        let (interval, node) = (config.pki.check_interval(), config.node_name());
        components.spawn(async move {
            crate::certs::run(rotator, interval, c, node).await;
            anyhow::bail!("certificate rotation stopped")
        });
    }
    api.set_ready();
    tracing::info!(%url, kubeconfig = %config.kubeconfig_path().display(), "berth API server is ready");
    notify_systemd("READY=1");
    tokio::spawn(crate::runtime::memory::return_memory_while_running());

    // Controllers act through the API like any other client; with a store other servers share
    // (etcd), only on the one that holds the controllers' lease.
    let cluster_cidr: crate::network::Ipv4Cidr = config
        .network
        .pod_cidr
        .parse()
        .with_context(|| format!("bad pod CIDR {}", config.network.pod_cidr))?;
    let start_controllers = {
        let router = router.clone();
        let config = config.clone();
        let ca_cert_pem = pki.ca_cert_pem.clone();
        let join_pki = std::sync::Arc::new(pki.clone());
        let node_cert_validity = config.pki.node_cert_validity();
        move |components: &mut JoinSet<anyhow::Result<()>>| {
            let controllers = crate::client::in_process(
                router.clone(),
                crate::client::system_user("controllers"),
            );
            components.spawn(async move {
                crate::controllers::namespace::run(controllers).await;
                anyhow::bail!("the namespace controller stopped")
            });
            let client = |name: &str| {
                crate::client::in_process(router.clone(), crate::client::system_user(name))
            };
            {
                let c = client("replicaset-controller");
                components.spawn(async move {
                    crate::controllers::replicaset::run(c).await;
                    anyhow::bail!("the replicaset controller stopped")
                });
                let c = client("replication-controller");
                components.spawn(async move {
                    crate::controllers::replicaset::run_replication_controllers(c).await;
                    anyhow::bail!("the replication controller stopped")
                });
                let c = client("deployment-controller");
                components.spawn(async move {
                    crate::controllers::deployment::run(c).await;
                    anyhow::bail!("the deployment controller stopped")
                });
                let c = client("job-controller");
                components.spawn(async move {
                    crate::controllers::job::run(c).await;
                    anyhow::bail!("the job controller stopped")
                });
                let c = client("cronjob-controller");
                components.spawn(async move {
                    crate::controllers::cronjob::run(c).await;
                    anyhow::bail!("the cronjob controller stopped")
                });
                let c = client("ttl-after-finished-controller");
                components.spawn(async move {
                    crate::controllers::ttl_after_finished::run(c).await;
                    anyhow::bail!("the ttl-after-finished controller stopped")
                });
                let c = client("generic-garbage-collector");
                components.spawn(async move {
                    crate::controllers::gc::run(c).await;
                    anyhow::bail!("the garbage collector stopped")
                });
                let c = client("endpointslice-controller");
                components.spawn(async move {
                    crate::controllers::endpointslice::run(c).await;
                    anyhow::bail!("the endpointslice controller stopped")
                });
                let c = client("endpointslicemirroring-controller");
                components.spawn(async move {
                    crate::controllers::endpointslicemirroring::run(c).await;
                    anyhow::bail!("the endpointslice mirroring controller stopped")
                });
                let c = client("apiextensions-controller");
                components.spawn(async move {
                    crate::crd::controller::run(c).await;
                    anyhow::bail!("the CRD controller stopped")
                });
                let c = client("clusterrole-aggregation-controller");
                components.spawn(async move {
                    crate::apiserver::rbac::aggregation::run(c).await;
                    anyhow::bail!("the cluster role aggregation controller stopped")
                });
                let c = client("kube-scheduler");
                components.spawn(async move {
                    crate::scheduler::run(c).await;
                    anyhow::bail!("the scheduler stopped")
                });
                let c = client("statefulset-controller");
                components.spawn(async move {
                    crate::controllers::statefulset::run(c).await;
                    anyhow::bail!("the statefulset controller stopped")
                });
                let c = client("daemonset-controller");
                components.spawn(async move {
                    crate::controllers::daemonset::run(c).await;
                    anyhow::bail!("the daemonset controller stopped")
                });
                let c = client("local-path-provisioner");
                let storage_dir = config.data_dir.join("storage");
                components.spawn(async move {
                    crate::controllers::localpath::run(c, storage_dir).await;
                    anyhow::bail!("the local-path provisioner stopped")
                });
                let c = client("node-controller");
                let settings = crate::controllers::nodelifecycle::Settings {
                    period: std::time::Duration::from_secs(
                        config.controllers.node_monitor_period_seconds.max(1),
                    ),
                    grace: std::time::Duration::from_secs(
                        config.controllers.node_monitor_grace_period_seconds,
                    ),
                };
                components.spawn(async move {
                    crate::controllers::nodelifecycle::run(c, settings).await;
                    anyhow::bail!("the node lifecycle controller stopped")
                });
                let c = client("disruption-controller");
                components.spawn(async move {
                    crate::controllers::disruption::run(c).await;
                    anyhow::bail!("the disruption controller stopped")
                });
                let c = client("resourcequota-controller");
                components.spawn(async move {
                    crate::controllers::resourcequota::run(c).await;
                    anyhow::bail!("the resource quota controller stopped")
                });
                if config.api.event_ttl_seconds > 0 {
                    let c = client("event-ttl-controller");
                    let ttl = std::time::Duration::from_secs(config.api.event_ttl_seconds);
                    components.spawn(async move {
                        crate::controllers::event_ttl::run(c, ttl).await;
                        anyhow::bail!("the event expiry stopped")
                    });
                }
                let c = client("pod-garbage-collector");
                let settings = crate::controllers::podgc::Settings {
                    period: std::time::Duration::from_secs(
                        config.controllers.pod_gc_period_seconds.max(1),
                    ),
                    terminated_threshold: config.controllers.terminated_pod_gc_threshold,
                };
                components.spawn(async move {
                    crate::controllers::podgc::run(c, settings).await;
                    anyhow::bail!("the pod garbage collector stopped")
                });
                let c = client("serviceaccount-controller");
                let ca_cert_pem = ca_cert_pem.clone();
                components.spawn(async move {
                    crate::controllers::serviceaccount::run(c, ca_cert_pem).await;
                    anyhow::bail!("the service account controller stopped")
                });
                let c = client("horizontal-pod-autoscaler");
                components.spawn(async move {
                    crate::controllers::hpa::run(c).await;
                    anyhow::bail!("the horizontal pod autoscaler stopped")
                });
                // Joining workers: CSR approval and signing, node pod CIDRs.
                crate::join::server::start_controllers(
                    &client,
                    crate::join::csr::Signer {
                        pki: join_pki.clone(),
                        duration: node_cert_validity,
                    },
                    cluster_cidr,
                    components,
                );
            }
        }
    };
    if api_store.is_shared() {
        let c =
            crate::client::in_process(router.clone(), crate::client::system_user("leader-elector"));
        let identity = crate::leader::identity(&config.node_name());
        let elector = crate::leader::Elector::new(c, identity, Default::default());
        components.spawn(elector.run_while_leading(start_controllers));
    } else {
        start_controllers(&mut components);
    }
    let client =
        |name: &str| crate::client::in_process(router.clone(), crate::client::system_user(name));

    // Joining workers: cluster-info and the bindings.
    let endpoint = match config.api.advertise_url.as_deref() {
        Some(advertised) => crate::join::server::Endpoint::Advertised(advertised),
        None => crate::join::server::Endpoint::ThisServer(&url),
    };
    crate::join::server::start(&api.registry, endpoint, &pki).await?;
    crate::join::server_join::publish(&api.registry, &config.store).await?;

    // The agent registers this machine as a Node and keeps its heartbeat.
    let agent_client =
        crate::client::in_process(router.clone(), crate::client::system_user("node"));
    let node_name = config.node_name();
    let mut facts = crate::agent::node::NodeFacts::gather(
        &node_name,
        &config.data_dir,
        node_addresses(&node_name),
        None,
    );
    // Other servers on the shared store reach this node's pods through its kubelet API.
    if api_store.is_shared() {
        facts.kubelet_port = Some(crate::agent::kubelet_api::DEFAULT_PORT);
        let (c, ca) = (agent_client.clone(), &pki.ca_cert_pem);
        let own_serving = (pki.serving_cert_pem.clone(), pki.serving_key_pem.clone());
        crate::join::agent::spawn_kubelet_api(
            &mut components,
            c,
            &node_name,
            &config.data_dir,
            &config.pods_run_dir(),
            ca,
            Some(own_serving),
        );
    }
    let pods_client = agent_client.clone();
    components.spawn(async move {
        crate::agent::node::run(agent_client, facts).await?;
        anyhow::bail!("the node heartbeat stopped")
    });
    // ... and runs the pods bound to it, after importing carried-in images they may need.
    if let Some(dir) = config.images.import_dir.clone() {
        let root = config.data_dir.join("images");
        tokio::task::spawn_blocking(move || crate::image_import::import_into(&root, &dir)).await?;
    }
    // The bridge, IPAM and DNS use the slice node IPAM gave this Node (the first, alone).
    let slice = crate::join::agent::wait_for_pod_cidr(&pods_client, &node_name).await;
    let mut agent_config = agent_config(&config, &node_name)?;
    agent_config.network.pod_cidr_slice = slice;
    let routes =
        crate::network::routes::controller::RouteConfig::for_node(&config, &node_name, slice)?;
    let routes_client = pods_client.clone();
    components.spawn(async move {
        crate::agent::run(pods_client, agent_config).await?;
        anyhow::bail!("the pod workers stopped")
    });
    components.spawn(async move {
        crate::network::routes::controller::run(routes_client, routes).await?;
        anyhow::bail!("the route controller stopped")
    });
    // Resource usage of this node and its pods for `metrics.k8s.io` (kubectl top, autoscaling).
    let metrics = crate::metrics::Metrics::for_node(&node_name);
    api.set_metrics(metrics.clone());
    tokio::spawn(crate::metrics::run_sampler(
        metrics,
        crate::metrics::SAMPLE_INTERVAL,
    ));

    // Cluster DNS on the bridge gateway, once the agent has created the bridge.
    let dns_client = crate::client::in_process(router.clone(), crate::client::system_user("dns"));
    let mut dns_config = crate::dns::DnsConfig::from_config(&config)
        .context("cannot work out the cluster DNS settings")?;
    dns_config.listen = slice.gateway().unwrap_or(slice.network());
    components.spawn(async move {
        crate::dns::run(dns_client, dns_config).await?;
        anyhow::bail!("the cluster DNS stopped")
    });

    // The service proxy programs this node's nftables from Services and EndpointSlices.
    let proxy_client =
        crate::client::in_process(router.clone(), crate::client::system_user("kube-proxy"));
    let proxy_config = crate::network::proxy::ProxyConfig {
        node_name: node_name.clone(),
        node_ips: crate::network::proxy::controller::node_ips(&cluster_cidr),
        cluster_cidr,
    };
    let policy_config = crate::network::policy::controller::PolicyConfig {
        node_name: node_name.clone(),
        node_ips: proxy_config.node_ips.clone(),
    };
    components.spawn(async move {
        crate::network::proxy::controller::run(proxy_client, proxy_config).await?;
        anyhow::bail!("the service proxy stopped")
    });
    // NetworkPolicies and pods' host ports, in tables of their own.
    let policy_client =
        crate::client::in_process(router.clone(), crate::client::system_user("network-policy"));
    components.spawn(async move {
        crate::network::policy::controller::run(policy_client, policy_config).await?;
        anyhow::bail!("the network policy controller stopped")
    });

    // The built-in Ingress controller on the node's HTTP and HTTPS ports.
    if config.ingress.enabled {
        let c = client("ingress-controller");
        let ingress_config =
            crate::ingress::IngressConfig::from_config(&config.ingress, cluster_cidr);
        components.spawn(async move {
            crate::ingress::run(c, ingress_config).await?;
            anyhow::bail!("the ingress controller stopped")
        });
    }

    let outcome = tokio::select! {
        signal = shutdown_signal() => {
            tracing::info!(signal, "shutting down");
            Ok(())
        }
        Some(finished) = components.join_next() => match finished {
            Ok(Ok(())) => Err(anyhow::anyhow!("a component stopped unexpectedly")),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow::anyhow!("a component panicked: {e}")),
        },
    };
    let _ = shutdown_tx.send(true);
    components.abort_all();
    // A clean stop leaves everything in redb and nothing in the write-ahead log to replay.
    if let Err(error) = store_at_shutdown.checkpoint().await {
        tracing::warn!(%error, "cannot checkpoint the store at shutdown; the next start replays its log");
    }
    outcome
}

pub(crate) async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// The address to write into kubeconfigs: a wildcard listen address is reached over loopback.
fn client_address(bound: SocketAddr) -> SocketAddr {
    match bound.ip() {
        ip if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), bound.port()),
        _ => bound,
    }
}

/// What the pod workers need from the config.
pub(crate) fn agent_config(
    config: &Config,
    node_name: &str,
) -> anyhow::Result<crate::agent::AgentConfig> {
    let host_ip = node_addresses(node_name)
        .into_iter()
        .find(|(kind, _)| kind == "InternalIP")
        .map(|(_, ip)| ip)
        .unwrap_or_else(|| Ipv4Addr::LOCALHOST.to_string());
    let run_dir = config.pods_run_dir();
    crate::runtime::layout::check_pods_run_dir(&run_dir).context("the run dir is too long")?;
    Ok(crate::agent::AgentConfig {
        node_name: node_name.to_string(),
        data_dir: config.data_dir.clone(),
        run_dir,
        host_ip,
        dns: crate::agent::spec::DnsSettings {
            cluster_dns: config.network.dns_ip,
            cluster_domain: config.network.cluster_domain.clone(),
            host_resolv_conf: crate::agent::spec::host_resolv_conf_for_pods(),
        },
        registries: config.registries.clone(),
        network: crate::network::NodeNetworkConfig::from_config(config)
            .context("invalid pod network settings")?,
        pressure: crate::agent::eviction::Settings::from_config(config)
            .context("invalid eviction thresholds")?,
    })
}

/// The node's addresses as a Node reports them: its first non-loopback IPv4 address (loopback
/// when it has none, as in a bare network namespace) and its hostname.
pub(crate) fn node_addresses(hostname: &str) -> Vec<(String, String)> {
    let mut internal = None;
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            if let Some(v4) = a
                .address
                .as_ref()
                .and_then(|s| s.as_sockaddr_in().map(|v| v.ip()))
            {
                if !v4.is_loopback() {
                    internal = Some(v4);
                    break;
                }
            }
        }
    }
    let internal = internal.unwrap_or(Ipv4Addr::LOCALHOST);
    vec![
        ("InternalIP".into(), internal.to_string()),
        ("Hostname".into(), hostname.to_string()),
    ]
}

/// Names the serving certificate must carry: the hostname and every address of this node.
fn serving_names(config: &Config, bound: SocketAddr) -> ServingNames {
    let mut ips: Vec<IpAddr> = Vec::new();
    if !bound.ip().is_unspecified() {
        ips.push(bound.ip());
    }
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let ip = a.address.as_ref().and_then(|s| {
                s.as_sockaddr_in()
                    .map(|v4| IpAddr::V4(v4.ip()))
                    .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
            });
            if let Some(ip) = ip {
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
    }
    ServingNames {
        hostname: config.node_name(),
        ips,
        cluster_domain: config.network.cluster_domain.clone(),
        service_cidr: config.network.service_cidr.clone(),
    }
}

/// Tells systemd (a `Type=notify` unit) about our state; a no-op when not started by systemd.
/// The protocol is one datagram to `$NOTIFY_SOCKET`, a path or, with a leading `@`, an
/// abstract socket name.
fn notify_systemd(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};

    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let target = target.to_string_lossy().into_owned();
    let address = match target.strip_prefix('@') {
        Some(name) => UnixAddr::from_abstract_name(name.as_bytes()),
        None => UnixAddr::from_pathname(&target),
    };
    let sent = address.and_then(|address| {
        let socket = UnixDatagram::unbound()?;
        socket.send_to_addr(state.as_bytes(), &address)
    });
    if let Err(error) = sent {
        tracing::warn!(%error, socket = %target, "cannot notify systemd");
    }
}

#[cfg(test)]
mod notify_tests {
    use super::notify_systemd;

    #[test]
    fn systemd_gets_the_state_as_one_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        // Tests run in threads of one process: this is the only test that sets NOTIFY_SOCKET.
        std::env::set_var("NOTIFY_SOCKET", &path);
        notify_systemd("READY=1");
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
