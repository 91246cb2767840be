//! Plain data shared by the agent, the client and the shim. Serialisable because it crosses the
//! shim socket and is persisted in the pod's state dir.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything the shim needs to know about its pod before any container exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodShimConfig {
    /// The pod's uid: also the name of its state dir (`<root>/<uid>`).
    pub pod_uid: String,
    /// The network namespace the shim joins (and so every container that does not name one).
    /// `None` shares the host's network namespace (hostNetwork pods).
    pub netns_path: Option<PathBuf>,
    /// The pod's hostname, set in the pod's UTS namespace which the shim holds.
    pub hostname: String,
    /// Cgroup parent of the pod's containers, relative to the cgroup root, e.g.
    /// `berth/pod<uid>`. Removed with everything below it when the pod stops.
    pub cgroup_parent: String,
    /// The pod's run dir (see [`super::layout`]). Left `None`, the runtime picks it; a config
    /// without one on disk was written by a berth from before run dirs, whose shim keeps its
    /// runtime state in the pod's dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_dir: Option<PathBuf>,
}

/// A container's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RootfsSpec {
    /// A ready directory, used as is.
    Dir(PathBuf),
    /// An overlay of read-only image layers (lowest first); the shim creates the upper and work
    /// dirs in the pod's state dir and mounts the overlay there.
    Overlay { lower: Vec<PathBuf> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountKind {
    Bind,
    Tmpfs,
    Proc,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Host path for binds; ignored for tmpfs and proc.
    pub source: PathBuf,
    /// Path inside the container.
    pub destination: PathBuf,
    pub kind: MountKind,
    pub read_only: bool,
}

/// Cgroup limits; `None` leaves a resource unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub memory_limit: Option<i64>,
    pub pids_limit: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompProfile {
    /// The containerd/Docker default allow-list.
    RuntimeDefault,
    Unconfined,
    /// An OCI `LinuxSeccomp` JSON file on the node (Kubernetes' `Localhost` profiles).
    Localhost(PathBuf),
}

/// One container of a pod, in runtime terms (no Kubernetes types).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Unique within the pod.
    pub name: String,
    pub rootfs: RootfsSpec,
    pub args: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// Set only when the container gets a UTS namespace of its own; a shim-held pod shares
    /// its UTS namespace, whose hostname is [`PodShimConfig::hostname`].
    pub hostname: String,
    pub mounts: Vec<MountSpec>,
    /// Join this network namespace; `None` inherits the shim's, i.e. the pod's.
    pub netns_path: Option<PathBuf>,
    /// Relative to the cgroup root, e.g. `berth/pod<uid>/<container>`.
    pub cgroup_path: String,
    pub resources: Resources,
    /// Capability names (`CAP_CHOWN`, ...); `None` is the containerd default set.
    pub capabilities: Option<Vec<String>>,
    /// The kernel's OOM-kill preference for the container (Kubernetes sets it by QoS class).
    pub oom_score_adj: Option<i32>,
    pub no_new_privileges: bool,
    pub readonly_rootfs: bool,
    pub seccomp: SeccompProfile,
    pub log_path: PathBuf,
    pub log_max_bytes: u64,
    pub log_max_files: u32,
    /// Kubernetes' `stdin`: the container's stdin is a pipe the shim holds, written by
    /// attach; otherwise it is `/dev/null`.
    #[serde(default)]
    pub stdin: bool,
    /// Kubernetes' `stdinOnce`: the first attach gets the only writer, so the container sees
    /// end of file when that attach ends.
    #[serde(default)]
    pub stdin_once: bool,
    /// Kubernetes' `tty`: the container's stdio is a pty the shim allocates; the shim keeps
    /// the master, logs what it reads from it and hands it to attaches (input and resizes).
    #[serde(default)]
    pub tty: bool,
    /// Join this pid namespace (an ephemeral container targeting another container's
    /// processes); `None` gives the container its own.
    #[serde(default)]
    pub pid_namespace: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerStatus {
    Created,
    Running,
    Exited,
}

/// What the shim knows about one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    pub name: String,
    pub id: String,
    pub pid: Option<i32>,
    pub status: ContainerStatus,
    pub exit_code: Option<i32>,
    /// RFC 3339.
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub oom_killed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodState {
    pub pod_uid: String,
    pub shim_pid: i32,
    pub containers: Vec<ContainerState>,
}
