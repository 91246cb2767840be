//! The node agent (our kubelet): registers the node and runs its pods.
//!
//! - [`node`]: Node registration and the Lease heartbeat.
//! - [`pods`]: the pod worker manager: a pod watch, one worker task per pod uid.
//! - [`sync`]: `sync_pod` (sandbox, containers, restarts, status) and pod termination.
//! - [`spec`]: pure Pod → runtime `ContainerSpec` building (command, env merge, DNS, hosts).
//! - [`env`]: a container's environment from env/envFrom.
//! - [`volumes`]: pod volumes on disk (emptyDir, hostPath, configMap, secret, downwardAPI,
//!   projected), kept up to date with their sources while the pod runs.
//! - [`tokens`]: projected service account tokens, requested and rotated.
//! - [`status`]: pod status (phase, conditions, container statuses) from what was observed.
//! - [`probes`]: startup, liveness and readiness probes; [`grpc_probe`] their gRPC kind.
//! - [`backoff`]: the restart back-off curve.
//! - [`eviction`]: node-pressure eviction, pressure conditions and the node's image list.
//! - [`image_gc`]: image garbage collection.
//! - [`kubelet_api`]: a worker node's HTTPS kubelet API (logs, exec, attach, port-forward).
//! - [`node_stats`], [`node_logs`]: the kubelet's `/stats/summary`, `/metrics*` and `/logs/`.
//! - [`kubelet_authz`]: who may use it, asked of the API server (SubjectAccessReview).

pub mod admit;
pub mod backoff;
pub mod claims;
pub mod env;
pub mod eviction;
pub mod grpc_probe;
pub mod image_gc;
pub mod kubelet_api;
pub mod kubelet_authz;
pub mod node;
pub mod node_logs;
pub mod node_stats;
pub mod pods;
pub mod probes;
pub mod spec;
pub mod status;
pub mod sync;
pub mod tokens;
pub mod volumes;

pub use pods::run;

use std::path::PathBuf;

/// What the agent needs to know about its node.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    pub data_dir: PathBuf,
    /// This data dir's share of the run dir: the pods' runtime state that a reboot clears.
    pub run_dir: PathBuf,
    /// The node's address, reported as the pods' hostIP.
    pub host_ip: String,
    pub dns: spec::DnsSettings,
    pub registries: crate::config::RegistriesConfig,
    pub network: crate::network::NodeNetworkConfig,
    /// Eviction thresholds and image garbage collection.
    pub pressure: eviction::Settings,
}
