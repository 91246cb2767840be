//! One container start through berth's own runtime, without the API: the agent's
//! `ShimRuntime` driving `berth shim` (the binary under test), on the same rootfs runc runs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth::runtime::{
    cgroups, ContainerRuntime, ContainerSpec, PodShimConfig, Resources, RootfsSpec, SeccompProfile,
    ShimRuntime,
};

/// Times from a container's create request, through berth's shim.
#[derive(Clone, Copy, Default)]
pub struct Phases {
    /// The shim answered the create (libcontainer made the container, its init waits).
    pub created: Duration,
    /// The shim answered the start.
    pub started: Duration,
    /// The container's first line of output is in its log.
    pub first_line: Duration,
}

pub struct ShimBench {
    runtime: ShimRuntime,
    root: tempfile::TempDir,
    /// The pods' run dirs are below it: in `BERTH_RUN_DIR` (a tmpfs, say) when set.
    run_root: PathBuf,
    rootfs: PathBuf,
    netns_path: PathBuf,
    next: usize,
    started_pods: Vec<String>,
}

impl ShimBench {
    pub fn new(berth: &Path, rootfs: PathBuf, netns: &str) -> ShimBench {
        let root = tempfile::Builder::new()
            .prefix(&format!("bb{}-", std::process::id()))
            .tempdir_in("/tmp")
            .expect("create shim bench dir");
        let run_root =
            berth::runtime::layout::pods_run_dir(&crate::common::server::run_dir(), root.path());
        ShimBench {
            runtime: ShimRuntime::with_shim_binary(root.path().join("pods"), &run_root, berth),
            root,
            run_root,
            rootfs,
            netns_path: PathBuf::from(format!("/run/netns/{netns}")),
            next: 0,
            started_pods: Vec::new(),
        }
    }

    fn unique(&mut self, what: &str) -> String {
        self.next += 1;
        format!("{what}{}-{}", std::process::id(), self.next)
    }

    /// Starts a pod's shim; returns its uid.
    pub async fn start_pod(&mut self) -> String {
        let uid = self.unique("bench");
        let config = PodShimConfig {
            pod_uid: uid.clone(),
            netns_path: Some(self.netns_path.clone()),
            hostname: "bench".into(),
            cgroup_parent: format!("berthbench-{uid}"),
            run_dir: None,
        };
        self.started_pods.push(uid.clone());
        self.runtime
            .start_pod_shim(&config)
            .await
            .expect("start a pod shim");
        uid
    }

    /// Creates and starts a container running `args` in pod `uid` under `seccomp`; the times
    /// from the create request to its answer, to the start's answer and to the container's
    /// first line of output in its log.
    pub async fn first_line(
        &mut self,
        uid: &str,
        args: &[&str],
        seccomp: SeccompProfile,
    ) -> Phases {
        let name = self.unique("c");
        let log_path = self.root.path().join("logs").join(&name).join("0.log");
        let spec = ContainerSpec {
            name: name.clone(),
            rootfs: RootfsSpec::Dir(self.rootfs.clone()),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            hostname: "bench".into(),
            mounts: vec![],
            netns_path: None,
            cgroup_path: cgroups::container_cgroup_path(&format!("berthbench-{uid}"), &name),
            resources: Resources::default(),
            capabilities: None,
            oom_score_adj: None,
            no_new_privileges: true,
            readonly_rootfs: false,
            seccomp,
            log_path: log_path.clone(),
            log_max_bytes: 1 << 20,
            log_max_files: 2,
            stdin: false,
            stdin_once: false,
            tty: false,
            pid_namespace: None,
        };
        let started = Instant::now();
        self.runtime
            .create_container(uid, spec)
            .await
            .expect("create container");
        let created = started.elapsed();
        self.runtime
            .start_container(uid, &name)
            .await
            .expect("start container");
        let running = started.elapsed();
        loop {
            let log = std::fs::read(&log_path).unwrap_or_default();
            if log.contains(&b'\n') {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "container {name} printed nothing within 10 s"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let first_line = started.elapsed();
        let _ = self.runtime.remove_container(uid, &name).await;
        Phases {
            created,
            started: running,
            first_line,
        }
    }

    pub async fn stop_pod(&mut self, uid: &str) {
        self.runtime.stop_pod(uid).await.expect("stop pod");
        self.started_pods.retain(|p| p != uid);
    }

    /// Stops every pod still running (a failed run's too).
    pub async fn stop_all(&mut self) {
        for uid in std::mem::take(&mut self.started_pods) {
            let _ = self.runtime.stop_pod(&uid).await;
        }
        let _ = std::fs::remove_dir(&self.run_root);
        let _ = std::fs::remove_dir(crate::common::server::run_dir());
    }
}
