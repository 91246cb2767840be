//! The node agent (our kubelet): registers the node and runs its pods.
//!
//! - [`node`]: Node registration and the Lease heartbeat.
//! - [`spec`]: pure Pod → runtime `ContainerSpec` building (command, env merge, DNS, hosts).
//! - [`env`]: a container's environment from env/envFrom.
//! - [`volumes`]: pod volumes on disk (emptyDir, hostPath, configMap, secret, downwardAPI).
//! - [`status`]: pod status (phase, conditions, container statuses) from what was observed.
//! - [`backoff`]: the restart back-off curve.

pub mod backoff;
pub mod env;
pub mod node;
pub mod spec;
pub mod status;
pub mod volumes;
