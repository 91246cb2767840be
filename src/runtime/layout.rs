//! Where a pod's runtime state lives, in two places.
//!
//! The pod's dir in the data dir (`<data-dir>/pods/<uid>`) holds what must outlive a reboot:
//! `pod.json` (written by the agent), the shim's record of its containers and their exit codes
//! (`state.json`: a pod that completed stays completed), the containers' writable layers
//! (`o/<name>`), volumes and `shim.log`.
//!
//! The pod's run dir (`<run-dir>/<data dir's key>/<uid>`, tmpfs under `/run` by default) holds
//! what a reboot makes meaningless and what is rewritten on every container create, start and
//! delete: libcontainer's state (`c/<id>`), the OCI bundles (`b/<name>`), the shim's socket and
//! pid file, the process files and console sockets of execs. On an SD card each of those
//! rewrites costs milliseconds; on tmpfs it costs nothing, and a reboot clears them as it
//! clears the processes they describe (containerd keeps runc's state under `/run` likewise).
//!
//! A pod config written by a berth from before run dirs names none: its shim (still running
//! across the upgrade) keeps everything in the pod's dir, and [`PodPaths`] then points there.

use std::path::{Path, PathBuf};

use sha2::Digest;

use super::types::PodShimConfig;

/// The pod config the agent writes before starting the shim, in the pod's dir.
pub const POD_CONFIG_NAME: &str = "pod.json";
/// The shim's socket, in the pod's run dir.
pub const SOCKET_NAME: &str = "shim.sock";
/// The shim's pid file, in the pod's run dir.
pub const PID_FILE_NAME: &str = "shim.pid";
/// In each data dir's share of the run dir: a link to the data dir it belongs to, so a share
/// whose data dir is gone can be told from a live one.
pub const DATA_DIR_LINK: &str = "data-dir";

/// `sun_path` is 108 bytes including the terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;
/// Container ids are 16 hex digits (see the shim's container module).
pub const CONTAINER_ID_LEN: usize = 16;
/// libcontainer's socket below a container's state dir: the longest socket path of a pod.
const NOTIFY_SOCKET: &str = "notify.sock";
/// Hex digits of the data dir's hash that name its share of the run dir: short, because every
/// socket path of every pod starts with it.
const KEY_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
#[error(
    "socket path {path} would be {len} bytes, more than the {MAX_SOCKET_PATH} a unix socket \
     allows: choose a shorter run dir (--run-dir)"
)]
pub struct SocketPathTooLong {
    pub path: PathBuf,
    pub len: usize,
}

/// One pod's two places (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPaths {
    /// `<data-dir>/pods/<uid>`.
    pub dir: PathBuf,
    /// The pod's run dir; `dir` itself for a pod config that names none.
    pub run: PathBuf,
}

impl PodPaths {
    /// The places of the pod in `dir` whose config names `run_dir`.
    pub fn new(dir: impl Into<PathBuf>, run_dir: Option<&Path>) -> PodPaths {
        let dir = dir.into();
        let run = run_dir.map_or_else(|| dir.clone(), Path::to_path_buf);
        PodPaths { dir, run }
    }

    /// The places the pod config in `dir` names; `None` when there is no readable config.
    pub fn recorded(dir: &Path) -> Option<PodPaths> {
        let bytes = std::fs::read(dir.join(POD_CONFIG_NAME)).ok()?;
        let config: PodShimConfig = serde_json::from_slice(&bytes).ok()?;
        Some(PodPaths::new(dir, config.run_dir.as_deref()))
    }

    pub fn pod_config(&self) -> PathBuf {
        self.dir.join(POD_CONFIG_NAME)
    }

    pub fn socket(&self) -> PathBuf {
        self.run.join(SOCKET_NAME)
    }

    pub fn pid_file(&self) -> PathBuf {
        self.run.join(PID_FILE_NAME)
    }

    /// The shim's pid from its pid file while that process is a berth shim: a file left
    /// behind (a crash, a killed test) may name a pid some other process has now.
    pub fn live_shim_pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let is_shim = cmdline.split(|b| *b == 0).any(|arg| arg == b"shim");
        is_shim.then_some(pid)
    }

    /// libcontainer's state root: `c/<id>` holds a container's state.
    pub fn containers(&self) -> PathBuf {
        self.run.join("c")
    }

    pub fn container_state(&self, id: &str) -> PathBuf {
        self.containers().join(id)
    }

    /// Container `name`'s OCI bundle (its `config.json`; execs read their process from it).
    pub fn bundle(&self, name: &str) -> PathBuf {
        self.run.join("b").join(name)
    }

    /// A short-lived file or socket of the shim's (an exec's process, a console socket).
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.run.join(name)
    }

    /// Container `name`'s overlay: `upper` (what it wrote over its image), `work`, `root`.
    pub fn overlay(&self, name: &str) -> PathBuf {
        self.dir.join("o").join(name)
    }

    /// What container `name` wrote over its image, for whoever measures the pod's disk use.
    pub fn writable_layer(&self, name: &str) -> PathBuf {
        self.overlay(name).join("upper")
    }

    /// Compiled seccomp programs, shared by every pod of the node: `seccomp-cache` beside the
    /// pods root (inside it, it would look like a pod left behind to anyone checking for leaks).
    pub fn seccomp_cache(&self) -> Option<PathBuf> {
        let pods_root = self.dir.parent()?;
        pods_root.parent().map(|data| data.join("seccomp-cache"))
    }

    /// Refuses a run dir whose sockets (libcontainer's, the longest) would not fit a unix
    /// socket address: binding them would fail half-way through a container's creation.
    pub fn check_socket_room(&self) -> Result<(), SocketPathTooLong> {
        let longest = self
            .container_state(&"0".repeat(CONTAINER_ID_LEN))
            .join(NOTIFY_SOCKET);
        let len = longest.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(SocketPathTooLong { path: longest, len });
        }
        Ok(())
    }
}

/// Pod uids from the API server are UUIDs.
const UUID_LEN: usize = 36;

/// Refuses a share of the run dir below which no pod's sockets would fit: at start-up, rather
/// than when the first pod's container is created.
pub fn check_pods_run_dir(pods_run: &Path) -> Result<(), SocketPathTooLong> {
    PodPaths::new(pods_run, Some(&pods_run.join("0".repeat(UUID_LEN)))).check_socket_room()
}

/// The share of the machine's run dir that belongs to `data_dir`'s pods:
/// `<run_dir>/<first hex digits of the data dir's SHA-256>`. Servers with other data dirs on
/// the same machine get other shares; a hash, not the path, keeps socket paths short.
pub fn pods_run_dir(run_dir: &Path, data_dir: &Path) -> PathBuf {
    let resolved = std::fs::canonicalize(data_dir)
        .or_else(|_| std::path::absolute(data_dir))
        .unwrap_or_else(|_| data_dir.to_path_buf());
    let digest = sha2::Sha256::digest(resolved.as_os_str().as_encoded_bytes());
    let key = hex::encode(&digest[..KEY_LEN / 2]);
    run_dir.join(key)
}

/// Makes `pods_run` (private: its sockets drive the containers) with its link to `data_dir`.
pub fn prepare_pods_run_dir(pods_run: &Path, data_dir: &Path) -> std::io::Result<()> {
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(pods_run)?;
    let target = std::fs::canonicalize(data_dir)?;
    let link = pods_run.join(DATA_DIR_LINK);
    if std::fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
        return Ok(());
    }
    match std::fs::remove_file(&link) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::os::unix::fs::symlink(&target, &link)
}

/// Whether `pods_run` names a data dir that no longer exists (its server's files were
/// removed without `berth reset`): what is left there belongs to nobody.
pub fn owner_is_gone(pods_run: &Path) -> bool {
    let link = pods_run.join(DATA_DIR_LINK);
    link.symlink_metadata().is_ok() && !link.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_config_without_a_run_dir_keeps_everything_in_the_pod_dir() {
        let old = PodPaths::new("/d/pods/u", None);
        assert_eq!(old.socket(), Path::new("/d/pods/u/shim.sock"));
        assert_eq!(old.containers(), Path::new("/d/pods/u/c"));
        assert_eq!(old.bundle("app"), Path::new("/d/pods/u/b/app"));

        let new = PodPaths::new("/d/pods/u", Some(Path::new("/run/berth/k/u")));
        assert_eq!(new.socket(), Path::new("/run/berth/k/u/shim.sock"));
        assert_eq!(new.pid_file(), Path::new("/run/berth/k/u/shim.pid"));
        assert_eq!(new.container_state("ab"), Path::new("/run/berth/k/u/c/ab"));
        assert_eq!(new.bundle("app"), Path::new("/run/berth/k/u/b/app"));
        assert_eq!(new.scratch("e1.json"), Path::new("/run/berth/k/u/e1.json"));
        // What must outlive a reboot stays in the data dir.
        assert_eq!(new.pod_config(), Path::new("/d/pods/u/pod.json"));
        assert_eq!(
            new.writable_layer("app"),
            Path::new("/d/pods/u/o/app/upper")
        );
        assert_eq!(new.seccomp_cache(), Some(PathBuf::from("/d/seccomp-cache")));
    }

    #[test]
    fn a_pid_that_is_not_a_shim_is_never_taken_for_one() {
        let dir = tempfile::tempdir().unwrap();
        let paths = PodPaths::new(dir.path(), None);
        std::fs::write(paths.pid_file(), std::process::id().to_string()).unwrap();
        assert_eq!(paths.live_shim_pid(), None);
        std::fs::write(paths.pid_file(), "not a pid").unwrap();
        assert_eq!(paths.live_shim_pid(), None);
    }

    #[test]
    fn the_recorded_run_dir_is_read_back_from_the_pod_config() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(PodPaths::recorded(dir.path()), None);
        let mut config = PodShimConfig {
            pod_uid: "u".into(),
            netns_path: None,
            hostname: "h".into(),
            cgroup_parent: "berth/podu".into(),
            run_dir: None,
        };
        let write = |c: &PodShimConfig| {
            std::fs::write(
                dir.path().join(POD_CONFIG_NAME),
                serde_json::to_vec(c).unwrap(),
            )
            .unwrap()
        };
        write(&config);
        assert_eq!(
            PodPaths::recorded(dir.path()).unwrap().run,
            dir.path(),
            "an older berth's config"
        );
        config.run_dir = Some("/run/berth/k/u".into());
        write(&config);
        assert_eq!(
            PodPaths::recorded(dir.path()).unwrap().run,
            Path::new("/run/berth/k/u")
        );
    }

    #[test]
    fn each_data_dir_gets_its_own_short_share_of_the_run_dir() {
        let run = Path::new("/run/berth");
        let a = pods_run_dir(run, Path::new("/nonexistent/berth-a"));
        let b = pods_run_dir(run, Path::new("/nonexistent/berth-b"));
        assert_ne!(a, b);
        assert_eq!(a, pods_run_dir(run, Path::new("/nonexistent/berth-a")));
        assert_eq!(a.parent(), Some(run));
        let key = a.file_name().unwrap().to_str().unwrap();
        assert_eq!(key.len(), KEY_LEN);
        assert!(key.chars().all(|c| c.is_ascii_hexdigit()), "{key}");
    }

    #[test]
    fn a_run_dir_too_long_for_the_pods_sockets_is_refused_with_the_path() {
        let uid = "0b7c6a4e-5e1f-4c1e-9d9f-1a2b3c4d5e6f";
        let share = pods_run_dir(Path::new("/run/berth"), Path::new("/var/lib/berth"));
        assert!(PodPaths::new("/d", Some(&share.join(uid)))
            .check_socket_room()
            .is_ok());
        let long = Path::new("/run").join("x".repeat(60)).join(uid);
        let err = PodPaths::new("/d", Some(&long))
            .check_socket_room()
            .unwrap_err();
        assert!(err.len > MAX_SOCKET_PATH);
        assert!(err.to_string().contains("notify.sock"), "{err}");
        assert!(err.to_string().contains("--run-dir"), "{err}");
    }

    #[test]
    fn a_share_whose_data_dir_is_gone_is_told_from_a_live_one() {
        let run = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let share = pods_run_dir(run.path(), data.path());
        prepare_pods_run_dir(&share, data.path()).unwrap();
        // Again, as at every start: the link stays.
        prepare_pods_run_dir(&share, data.path()).unwrap();
        assert!(!owner_is_gone(&share));
        assert!(!owner_is_gone(run.path()), "no link: not known to be gone");
        drop(data);
        assert!(owner_is_gone(&share));
    }
}
