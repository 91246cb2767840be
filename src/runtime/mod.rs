//! The container runtime: one single-threaded shim per pod drives libcontainer; the async
//! daemon only talks to shims over their unix sockets.
//!
//! - [`types`]: the plain data the agent hands to the runtime (pod, container, state).
//! - [`spec`]: pure functions from a [`ContainerSpec`] to an OCI runtime spec.
//! - [`seccomp`]: the RuntimeDefault seccomp profile.
//! - [`cgroups`]: cgroup v1/hybrid/v2 detection, pod cgroup paths and their cleanup.
//! - [`logs`]: the CRI log format writer with size-based rotation.
//! - [`layout`]: where a pod's state lives: the data dir for what outlives a reboot, the run
//!   dir (tmpfs) for what does not.
//! - [`protocol`]: the JSON-lines request/response protocol between agent and shim.
//! - [`shim`]: `berth shim`, the per-pod process that owns the containers.
//! - [`client`]: [`ShimRuntime`], the agent-side [`ContainerRuntime`] implementation.
//! - [`images`]: image pull, the content-addressed store, layer unpacking, archive import.
//! - [`stats`]: CPU time and memory working set of cgroups and of the node.
//! - [`memory`]: handing start-up-only memory back to the kernel once the node has settled.

pub mod cgroups;
pub mod client;
pub mod images;
pub mod layout;
pub mod logs;
pub mod memory;
pub mod protocol;
pub mod seccomp;
pub mod seccomp_bpf;
pub mod session;
pub mod shim;
pub mod spec;
pub mod stats;
pub mod types;

use std::future::Future;
use std::path::PathBuf;

pub use client::{PodChanges, ShimRuntime};
pub use protocol::ExecResult;
pub use types::{
    ContainerSpec, ContainerState, ContainerStatus, MountKind, MountSpec, PodShimConfig, PodState,
    Resources, RootfsSpec, SeccompProfile,
};

/// Errors the agent sees from the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pod {0} has no running shim")]
    NoShim(String),
    #[error("shim for pod {pod}: {message}")]
    Shim { pod: String, message: String },
    #[error("shim protocol: {0}")]
    Protocol(String),
    #[error("shim for pod {pod} did not start: {message}")]
    ShimStart { pod: String, message: String },
    #[error("invalid pod uid {0:?}")]
    InvalidPodUid(String),
    #[error(transparent)]
    SocketPathTooLong(#[from] layout::SocketPathTooLong),
    #[error("cgroup cleanup: {0}")]
    Cgroup(#[from] cgroups::CgroupError),
}

/// What the agent needs from a container runtime. Implemented by [`ShimRuntime`]; a fake can
/// implement it for agent tests. Calls for one pod are expected one at a time (the agent's
/// per-pod worker); calls for different pods may run concurrently.
pub trait ContainerRuntime: Send + Sync {
    /// Starts the pod's shim (if not already running) and returns once it answers.
    fn start_pod_shim(
        &self,
        pod: &PodShimConfig,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Creates a container (not started); returns its id.
    fn create_container(
        &self,
        pod_uid: &str,
        spec: ContainerSpec,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;
    fn start_container(
        &self,
        pod_uid: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn kill_container(
        &self,
        pod_uid: &str,
        name: &str,
        signal: i32,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn remove_container(
        &self,
        pod_uid: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Runs `args` in a running container and returns its exit code and output (exec probes).
    /// The command is killed after `timeout`.
    fn exec_sync(
        &self,
        pod_uid: &str,
        name: &str,
        args: Vec<String>,
        timeout: std::time::Duration,
    ) -> impl Future<Output = Result<ExecResult, RuntimeError>> + Send;
    fn pod_state(
        &self,
        pod_uid: &str,
    ) -> impl Future<Output = Result<PodState, RuntimeError>> + Send;
    /// Shuts the shim down (killing every container) and removes the pod's cgroups, mounts,
    /// state dir and run dir.
    fn stop_pod(&self, pod_uid: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Pod uids that have a state dir in the data dir: after a daemon restart these are
    /// re-adopted.
    fn list_pods(&self) -> impl Future<Output = Result<Vec<String>, RuntimeError>> + Send;
}
