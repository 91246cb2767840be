//! [`ShimRuntime`]: the agent side. Starts `berth shim` per pod and talks JSON lines to it
//! over the socket in the pod's run dir (see [`super::layout`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::layout::{PodPaths, POD_CONFIG_NAME, SOCKET_NAME};
use super::protocol::{ExecResult, Request, Response};
use super::types::{ContainerSpec, PodShimConfig, PodState};
use super::{cgroups, ContainerRuntime, RuntimeError};

/// How long a freshly spawned shim may take to report that it listens.
const SHIM_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How much longer than an exec's own timeout the agent waits for the shim's answer.
const EXEC_MARGIN: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct ShimRuntime {
    /// `<data-dir>/pods`: one state dir per pod, named by its uid.
    root: PathBuf,
    /// This data dir's share of the run dir: one run dir per pod, named by its uid.
    run_root: PathBuf,
    /// The berth binary to run as `berth shim`.
    shim_binary: PathBuf,
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> RuntimeError + 'a {
    move |source| RuntimeError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Pod uids become directory names: refuse anything that could escape `root`.
fn check_uid(pod_uid: &str) -> Result<(), RuntimeError> {
    let ok = !pod_uid.is_empty()
        && pod_uid.len() <= 64
        && pod_uid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InvalidPodUid(pod_uid.to_string()))
    }
}

impl ShimRuntime {
    /// A runtime whose shims are this very executable; pod dirs below `root`, pod run dirs
    /// below `run_root`.
    pub fn new(
        root: impl Into<PathBuf>,
        run_root: impl Into<PathBuf>,
    ) -> Result<Self, RuntimeError> {
        let exe = std::env::current_exe().map_err(io_err("locate", Path::new("current_exe")))?;
        Ok(Self::with_shim_binary(root, run_root, exe))
    }

    /// A runtime using another berth binary as the shim (tests run from a test harness binary).
    pub fn with_shim_binary(
        root: impl Into<PathBuf>,
        run_root: impl Into<PathBuf>,
        shim_binary: impl Into<PathBuf>,
    ) -> Self {
        Self {
            root: root.into(),
            run_root: run_root.into(),
            shim_binary: shim_binary.into(),
        }
    }

    pub fn pod_dir(&self, pod_uid: &str) -> PathBuf {
        self.root.join(pod_uid)
    }

    /// Where a pod this runtime starts keeps its runtime state.
    pub fn pod_run_dir(&self, pod_uid: &str) -> PathBuf {
        self.run_root.join(pod_uid)
    }

    /// The places of a pod this runtime starts.
    pub fn pod_paths(&self, pod_uid: &str) -> PodPaths {
        PodPaths::new(self.pod_dir(pod_uid), Some(&self.pod_run_dir(pod_uid)))
    }

    /// The pod's shim socket: in this runtime's run dir; else in the pod's dir, where a shim
    /// from before run dirs (one that outlived an upgrade) has it; else in the run dir its pod
    /// config names (a shim started with another `--run-dir`). Stats first: this is on every
    /// call to the shim, the pod config is read only when neither is there.
    pub(super) async fn shim_socket(&self, pod_uid: &str) -> Result<PathBuf, RuntimeError> {
        check_uid(pod_uid)?;
        let socket = self.pod_run_dir(pod_uid).join(SOCKET_NAME);
        let legacy = self.pod_dir(pod_uid).join(SOCKET_NAME);
        for candidate in [&socket, &legacy] {
            if candidate.symlink_metadata().is_ok() {
                return Ok(candidate.clone());
            }
        }
        let dir = self.pod_dir(pod_uid);
        let recorded = tokio::task::spawn_blocking(move || PodPaths::recorded(&dir))
            .await
            .ok()
            .flatten();
        // None at all: the caller's connect fails and says there is no shim.
        Ok(recorded.map_or(socket, |paths| paths.socket()))
    }

    async fn connect(&self, pod_uid: &str) -> Result<(UnixStream, PathBuf), RuntimeError> {
        let socket = self.shim_socket(pod_uid).await?;
        let stream = UnixStream::connect(&socket)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    RuntimeError::NoShim(pod_uid.to_string())
                }
                _ => RuntimeError::Io {
                    op: "connect",
                    path: socket.clone(),
                    source: e,
                },
            })?;
        Ok((stream, socket))
    }

    async fn call(&self, pod_uid: &str, request: &Request) -> Result<Response, RuntimeError> {
        let (mut stream, socket) = self.connect(pod_uid).await?;
        let mut line = serde_json::to_vec(request)
            .map_err(|e| RuntimeError::Protocol(format!("encode request: {e}")))?;
        line.push(b'\n');
        stream
            .write_all(&line)
            .await
            .map_err(io_err("write", &socket))?;
        let mut reader = BufReader::new(stream);
        let mut answer = String::new();
        let n = reader
            .read_line(&mut answer)
            .await
            .map_err(io_err("read", &socket))?;
        if n == 0 {
            return Err(RuntimeError::Protocol(format!(
                "shim of pod {pod_uid} closed the socket"
            )));
        }
        match serde_json::from_str(&answer) {
            Ok(Response::Error { message }) => Err(RuntimeError::Shim {
                pod: pod_uid.to_string(),
                message,
            }),
            Ok(response) => Ok(response),
            Err(e) => Err(RuntimeError::Protocol(format!("decode response: {e}"))),
        }
    }

    /// Subscribes to the pod's state changes (container exits). The subscription holds one
    /// connection to the shim; it ends when the shim does.
    pub async fn watch_pod(&self, pod_uid: &str) -> Result<PodChanges, RuntimeError> {
        let (mut stream, socket) = self.connect(pod_uid).await?;
        let mut line = serde_json::to_vec(&Request::Watch)
            .map_err(|e| RuntimeError::Protocol(format!("encode request: {e}")))?;
        line.push(b'\n');
        stream
            .write_all(&line)
            .await
            .map_err(io_err("write", &socket))?;
        let mut changes = PodChanges {
            reader: BufReader::new(stream),
            line: String::new(),
        };
        match changes.next_response().await {
            Some(Response::Ok) => Ok(changes),
            Some(Response::Error { message }) => Err(RuntimeError::Shim {
                pod: pod_uid.to_string(),
                message,
            }),
            other => Err(RuntimeError::Protocol(format!(
                "unexpected answer to watch: {other:?}"
            ))),
        }
    }

    async fn call_ok(&self, pod_uid: &str, request: &Request) -> Result<(), RuntimeError> {
        match self.call(pod_uid, request).await? {
            Response::Ok => Ok(()),
            other => Err(RuntimeError::Protocol(format!(
                "unexpected response {other:?}"
            ))),
        }
    }

    /// The network namespace the pod's containers share, `None` for hostNetwork pods
    /// (`pods/portforward` connects inside it).
    pub async fn pod_netns(&self, pod_uid: &str) -> Result<Option<PathBuf>, RuntimeError> {
        check_uid(pod_uid)?;
        let path = self.pod_dir(pod_uid).join(POD_CONFIG_NAME);
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(io_err("read", &path))?;
        let config: PodShimConfig =
            serde_json::from_slice(&bytes).map_err(|e| RuntimeError::Io {
                op: "parse",
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?;
        Ok(config.netns_path)
    }

    /// Reads the shim's pod config back (the shim may be gone): used to find its cgroups.
    async fn pod_config(&self, pod_uid: &str) -> Option<PodShimConfig> {
        let path = self.pod_dir(pod_uid).join(POD_CONFIG_NAME);
        let bytes = tokio::fs::read(&path).await.ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Unmounts whatever is still mounted below `dirs` (deepest first), e.g. overlays of a
    /// shim that died.
    async fn unmount_below(dirs: &[&Path]) -> Result<(), RuntimeError> {
        let mountinfo = "/proc/self/mountinfo";
        let text = tokio::fs::read_to_string(mountinfo)
            .await
            .map_err(io_err("read", Path::new(mountinfo)))?;
        let mut mounts: Vec<PathBuf> = text
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .map(PathBuf::from)
            .filter(|p| dirs.iter().any(|dir| p.starts_with(dir)))
            .collect();
        mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for mount in mounts {
            match nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
                Err(e) => {
                    return Err(RuntimeError::Io {
                        op: "unmount",
                        path: mount,
                        source: e.into(),
                    })
                }
            }
        }
        Ok(())
    }
}

/// A subscription to one pod shim's state changes (see [`ShimRuntime::watch_pod`]).
#[derive(Debug)]
pub struct PodChanges {
    reader: BufReader<UnixStream>,
    line: String,
}

impl PodChanges {
    /// Waits for the next change. `false`: the subscription ended (the shim exited or broke
    /// the protocol); nothing more will come.
    pub async fn changed(&mut self) -> bool {
        matches!(self.next_response().await, Some(Response::Changed))
    }

    async fn next_response(&mut self) -> Option<Response> {
        self.line.clear();
        match self.reader.read_line(&mut self.line).await {
            Ok(0) | Err(_) => None,
            Ok(_) => serde_json::from_str(&self.line).ok(),
        }
    }
}

impl ContainerRuntime for ShimRuntime {
    async fn start_pod_shim(&self, pod: &PodShimConfig) -> Result<(), RuntimeError> {
        check_uid(&pod.pod_uid)?;
        // Already running (re-adoption, or a repeated sync): nothing to do.
        if self.call(&pod.pod_uid, &Request::State).await.is_ok() {
            return Ok(());
        }
        let mut pod = pod.clone();
        let run_dir = pod
            .run_dir
            .get_or_insert_with(|| self.pod_run_dir(&pod.pod_uid));
        let dir = self.pod_dir(&pod.pod_uid);
        PodPaths::new(&dir, Some(run_dir)).check_socket_room()?;
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io_err("create dir", &dir))?;
        // Made here, not by the shim: a shim still starting when its server is stopped and its
        // share of the run dir removed must not make the share again.
        let mut private = tokio::fs::DirBuilder::new();
        private.recursive(true).mode(0o700);
        private
            .create(&*run_dir)
            .await
            .map_err(io_err("create dir", run_dir))?;
        let config_path = dir.join(POD_CONFIG_NAME);
        let config = serde_json::to_vec(&pod)
            .map_err(|e| RuntimeError::Protocol(format!("encode pod config: {e}")))?;
        tokio::fs::write(&config_path, config)
            .await
            .map_err(io_err("write", &config_path))?;

        // The shim double-forks; the process we start exits once the daemon listens (0) or
        // failed (non-zero, reason on stderr).
        let child = tokio::process::Command::new(&self.shim_binary)
            .arg("shim")
            .arg("--dir")
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(io_err("spawn", &self.shim_binary))?;
        let output = tokio::time::timeout(SHIM_START_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| RuntimeError::ShimStart {
                pod: pod.pod_uid.clone(),
                message: "timed out".into(),
            })?
            .map_err(io_err("wait for", &self.shim_binary))?;
        if !output.status.success() {
            return Err(RuntimeError::ShimStart {
                pod: pod.pod_uid.clone(),
                message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    async fn create_container(
        &self,
        pod_uid: &str,
        spec: ContainerSpec,
    ) -> Result<String, RuntimeError> {
        let request = Request::CreateContainer {
            spec: Box::new(spec),
        };
        match self.call(pod_uid, &request).await? {
            Response::Created { id } => Ok(id),
            other => Err(RuntimeError::Protocol(format!(
                "unexpected response {other:?}"
            ))),
        }
    }

    async fn start_container(&self, pod_uid: &str, name: &str) -> Result<(), RuntimeError> {
        self.call_ok(
            pod_uid,
            &Request::StartContainer {
                name: name.to_string(),
            },
        )
        .await
    }

    async fn kill_container(
        &self,
        pod_uid: &str,
        name: &str,
        signal: i32,
    ) -> Result<(), RuntimeError> {
        self.call_ok(
            pod_uid,
            &Request::Kill {
                name: name.to_string(),
                signal,
            },
        )
        .await
    }

    async fn remove_container(&self, pod_uid: &str, name: &str) -> Result<(), RuntimeError> {
        self.call_ok(
            pod_uid,
            &Request::RemoveContainer {
                name: name.to_string(),
            },
        )
        .await
    }

    async fn exec_sync(
        &self,
        pod_uid: &str,
        name: &str,
        args: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecResult, RuntimeError> {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let request = Request::ExecSync {
            name: name.to_string(),
            args,
            timeout_ms,
        };
        // The shim kills the command at its deadline; the margin covers start and teardown.
        let answer = tokio::time::timeout(timeout + EXEC_MARGIN, self.call(pod_uid, &request))
            .await
            .map_err(|_| RuntimeError::Protocol(format!("exec in pod {pod_uid} did not answer")))?;
        match answer? {
            Response::Exec { exec } => Ok(exec),
            other => Err(RuntimeError::Protocol(format!(
                "unexpected response {other:?}"
            ))),
        }
    }

    async fn pod_state(&self, pod_uid: &str) -> Result<PodState, RuntimeError> {
        match self.call(pod_uid, &Request::State).await? {
            Response::State { state } => Ok(state),
            other => Err(RuntimeError::Protocol(format!(
                "unexpected response {other:?}"
            ))),
        }
    }

    async fn stop_pod(&self, pod_uid: &str) -> Result<(), RuntimeError> {
        check_uid(pod_uid)?;
        let dir = self.pod_dir(pod_uid);
        let config = self.pod_config(pod_uid).await;
        let paths = PodPaths::new(
            &dir,
            config
                .as_ref()
                .map_or(Some(&self.pod_run_dir(pod_uid)), |c| c.run_dir.as_ref())
                .map(PathBuf::as_path),
        );
        match self.call_ok(pod_uid, &Request::Shutdown).await {
            // No shim (it died, or this is a repeated stop): clean up what it left.
            Ok(()) | Err(RuntimeError::NoShim(_)) => {}
            Err(e) => return Err(e),
        }
        Self::unmount_below(&[&dir, &paths.run]).await?;
        let parent = config
            .map(|c| c.cgroup_parent)
            .unwrap_or_else(|| cgroups::pod_cgroup_parent(pod_uid));
        // A shim that died leaves its containers running: kill what is left, then remove the
        // cgroups. Both wait for processes to go: keep them off the async workers.
        tokio::task::spawn_blocking(move || {
            cgroups::kill_tree(&parent, cgroups::DRAIN)?;
            cgroups::remove_tree(&parent)
        })
        .await
        .map_err(|e| RuntimeError::Protocol(format!("cgroup cleanup task failed: {e}")))??;
        remove_dir_if_exists(&paths.run).await?;
        remove_dir_if_exists(&dir).await
    }

    async fn list_pods(&self) -> Result<Vec<String>, RuntimeError> {
        let mut pods = Vec::new();
        let mut entries = match tokio::fs::read_dir(&self.root).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(pods),
            Err(e) => {
                return Err(RuntimeError::Io {
                    op: "list",
                    path: self.root.clone(),
                    source: e,
                })
            }
        };
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(io_err("list", &self.root))?
        {
            let is_pod = entry.path().join(POD_CONFIG_NAME).exists();
            if let (true, Some(name)) = (is_pod, entry.file_name().to_str()) {
                pods.push(name.to_string());
            }
        }
        pods.sort();
        Ok(pods)
    }
}

async fn remove_dir_if_exists(dir: &Path) -> Result<(), RuntimeError> {
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_uids_that_could_escape_the_root_are_refused() {
        assert!(check_uid("0b7c6a4e-5e1f-4c1e-9d9f-1a2b3c4d5e6f").is_ok());
        for bad in ["", "..", "a/b", "../etc", "x y"] {
            assert!(check_uid(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[tokio::test]
    async fn list_pods_finds_state_dirs_with_a_pod_config() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("pod-a")).unwrap();
        std::fs::write(root.path().join("pod-a").join(POD_CONFIG_NAME), "{}").unwrap();
        std::fs::create_dir_all(root.path().join("stray")).unwrap();
        let runtime =
            ShimRuntime::with_shim_binary(root.path(), root.path().join("run"), "/nonexistent");
        assert_eq!(
            runtime.list_pods().await.unwrap(),
            vec!["pod-a".to_string()]
        );
    }

    #[tokio::test]
    async fn calls_to_a_pod_without_a_shim_say_so() {
        let root = tempfile::tempdir().unwrap();
        let runtime =
            ShimRuntime::with_shim_binary(root.path(), root.path().join("run"), "/nonexistent");
        assert!(matches!(
            runtime.pod_state("nopod").await,
            Err(RuntimeError::NoShim(_))
        ));
    }
}
