//! The pod shim for real: busybox containers through `berth shim` and libcontainer.
//! Needs root (namespaces, cgroups, mounts), as in CI.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth::runtime::{
    cgroups, ContainerRuntime, ContainerSpec, ContainerStatus, PodShimConfig, PodState, Resources,
    RootfsSpec, SeccompProfile, ShimRuntime,
};
use common::netns::Netns;

static NEXT: AtomicUsize = AtomicUsize::new(0);

const APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "dd", "mkdir", "unshare", "grep", "cat", "true",
];

/// A busybox root filesystem in `dir`.
fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for sub in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    root
}

/// One pod with its own state root, netns and cgroup parent; stopped on drop so a failing test
/// still cleans up.
struct Pod {
    runtime: ShimRuntime,
    uid: String,
    cgroup_parent: String,
    root: tempfile::TempDir,
    rootfs: PathBuf,
    _netns: Netns,
}

impl Pod {
    async fn start() -> Pod {
        let uid = format!(
            "t{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        // Short paths: the shim's socket lives below this dir.
        let root = tempfile::Builder::new()
            .prefix("bt")
            .tempdir_in("/tmp")
            .unwrap();
        let rootfs = busybox_rootfs(root.path());
        let runtime = runtime_in(root.path());
        let netns = Netns::new();
        let cgroup_parent = format!("berthtest-{uid}");
        let config = PodShimConfig {
            pod_uid: uid.clone(),
            netns_path: Some(PathBuf::from(format!("/run/netns/{}", netns.name))),
            hostname: "testpod".into(),
            cgroup_parent: cgroup_parent.clone(),
            run_dir: None,
        };
        runtime.start_pod_shim(&config).await.unwrap();
        Pod {
            runtime,
            uid,
            cgroup_parent,
            root,
            rootfs,
            _netns: netns,
        }
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.root.path().join("logs").join(name).join("0.log")
    }

    fn spec(&self, name: &str, script: &str) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            rootfs: RootfsSpec::Dir(self.rootfs.clone()),
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            hostname: "testpod".into(),
            mounts: vec![],
            netns_path: None,
            cgroup_path: cgroups::container_cgroup_path(&self.cgroup_parent, name),
            resources: Resources::default(),
            capabilities: None,
            oom_score_adj: None,
            no_new_privileges: true,
            readonly_rootfs: false,
            seccomp: SeccompProfile::RuntimeDefault,
            log_path: self.log_path(name),
            log_max_bytes: 1 << 20,
            log_max_files: 2,
            stdin: false,
            stdin_once: false,
            tty: false,
            pid_namespace: None,
        }
    }

    async fn run(&self, spec: ContainerSpec) {
        let name = spec.name.clone();
        self.runtime
            .create_container(&self.uid, spec)
            .await
            .unwrap();
        self.runtime
            .start_container(&self.uid, &name)
            .await
            .unwrap();
    }

    async fn state(&self) -> PodState {
        self.runtime.pod_state(&self.uid).await.unwrap()
    }

    /// Waits until `name` has exited; returns (exit code, oom killed).
    async fn wait_exit(&self, name: &str) -> (i32, bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let state = self.state().await;
            let c = state
                .containers
                .iter()
                .find(|c| c.name == name)
                .expect("container listed");
            if c.status == ContainerStatus::Exited {
                assert!(c.finished_at.is_some());
                return (c.exit_code.expect("exit code"), c.oom_killed);
            }
            assert!(Instant::now() < deadline, "{name} did not exit: {c:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let runtime = self.runtime.clone();
        let uid = self.uid.clone();
        // Drop cannot await; stop the pod from a helper thread with its own small runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _ = rt.block_on(runtime.stop_pod(&uid));
        })
        .join();
    }
}

/// A runtime with its pods' dirs and run dirs below `root`.
fn runtime_in(root: &Path) -> ShimRuntime {
    ShimRuntime::with_shim_binary(
        root.join("pods"),
        root.join("run"),
        env!("CARGO_BIN_EXE_berth"),
    )
}

fn pid_alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

#[tokio::test]
async fn a_container_logs_hello_in_cri_format_and_exits_with_three() {
    let pod = Pod::start().await;
    let started = Instant::now();
    pod.run(pod.spec("hello", "echo hello; sleep 1; exit 3"))
        .await;
    // Create → first line of output, through the shim.
    while !pod.log("hello").contains("stdout F hello") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no output: {:?}",
            pod.log("hello")
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    eprintln!(
        "container start, create to first log line: {:?}",
        started.elapsed()
    );

    let (code, oom) = pod.wait_exit("hello").await;
    assert_eq!(code, 3);
    assert!(!oom);
    let log = pod.log("hello");
    let line = log.lines().next().unwrap();
    let (time, rest) = line.split_once(' ').unwrap();
    assert!(
        time.parse::<jiff::Timestamp>().is_ok(),
        "bad timestamp in {line:?}"
    );
    assert_eq!(rest, "stdout F hello");
    let state = pod.state().await;
    let c = &state.containers[0];
    assert!(c.started_at.is_some() && c.pid.is_none() && c.id.len() == 16);
}

#[tokio::test]
async fn signals_end_containers_with_128_plus_the_signal() {
    let pod = Pod::start().await;
    // PID 1 of a pid namespace ignores signals it has no handler for, hence the trap.
    pod.run(pod.spec("term", "trap 'exit 143' TERM; sleep 1000 & wait"))
        .await;
    pod.run(pod.spec("kill", "exec sleep 1000")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let state = pod.state().await;
    assert!(state
        .containers
        .iter()
        .all(|c| c.status == ContainerStatus::Running));

    pod.runtime
        .kill_container(&pod.uid, "term", libc::SIGTERM)
        .await
        .unwrap();
    pod.runtime
        .kill_container(&pod.uid, "kill", libc::SIGKILL)
        .await
        .unwrap();
    assert_eq!(pod.wait_exit("term").await, (143, false));
    assert_eq!(pod.wait_exit("kill").await, (137, false));
    // Killing an exited container is not an error: it is as dead as asked.
    pod.runtime
        .kill_container(&pod.uid, "kill", libc::SIGKILL)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_memory_hog_over_its_limit_is_reported_oom_killed() {
    let pod = Pod::start().await;
    let mut spec = pod.spec("hog", "exec dd if=/dev/zero of=/dev/null bs=64M count=1");
    spec.resources.memory_limit = Some(16 << 20);
    pod.run(spec).await;
    assert_eq!(pod.wait_exit("hog").await, (137, true));
}

#[tokio::test]
async fn the_shim_outlives_its_starter_and_a_new_client_sees_running_containers() {
    let pod = Pod::start().await;
    pod.run(pod.spec("app", "exec sleep 1000")).await;
    let first = pod.state().await;

    // The process the runtime spawned has exited; the shim was re-parented away from us.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", first.shim_pid)).unwrap();
    let after_comm = stat.rsplit_once(") ").unwrap().1;
    let ppid: u32 = after_comm.split(' ').nth(1).unwrap().parse().unwrap();
    assert_ne!(ppid, std::process::id());

    // A brand-new client, as after a daemon restart: finds the pod and its running container.
    let fresh = runtime_in(pod.root.path());
    assert_eq!(fresh.list_pods().await.unwrap(), vec![pod.uid.clone()]);
    let state = fresh.pod_state(&pod.uid).await.unwrap();
    assert_eq!(state.shim_pid, first.shim_pid);
    assert_eq!(state.containers[0].status, ContainerStatus::Running);
    // Starting the shim again re-adopts the running one instead of starting a second.
    let config: PodShimConfig =
        serde_json::from_slice(&std::fs::read(fresh.pod_dir(&pod.uid).join("pod.json")).unwrap())
            .unwrap();
    fresh.start_pod_shim(&config).await.unwrap();
    assert_eq!(
        fresh.pod_state(&pod.uid).await.unwrap().shim_pid,
        first.shim_pid
    );
}

#[tokio::test]
async fn a_watcher_hears_of_a_container_exit_without_asking_and_of_the_shim_ending() {
    let pod = Pod::start().await;
    let mut changes = pod.runtime.watch_pod(&pod.uid).await.unwrap();
    pod.run(pod.spec("brief", "sleep 1; exit 7")).await;
    let heard = tokio::time::timeout(Duration::from_secs(20), changes.changed()).await;
    assert_eq!(heard, Ok(true), "the shim reports the exit on its own");
    // The state read right after the notification already holds the exit.
    let state = pod.state().await;
    let brief = state.containers.iter().find(|c| c.name == "brief").unwrap();
    assert_eq!(brief.status, ContainerStatus::Exited);
    assert_eq!(brief.exit_code, Some(7));
    pod.runtime.stop_pod(&pod.uid).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), changes.changed()).await;
    assert_eq!(ended, Ok(false), "the subscription ends with its shim");
}

#[tokio::test]
async fn seccomp_profiles_deny_what_they_forbid_and_fail_closed() {
    let pod = Pod::start().await;
    // Creating a user namespace needs no capability, but RuntimeDefault denies unshare(2) to
    // containers without CAP_SYS_ADMIN.
    let script = "grep Seccomp: /proc/self/status; unshare -U true && echo unshared";
    pod.run(pod.spec("confined", script)).await;
    let mut unconfined = pod.spec("unconfined", script);
    unconfined.seccomp = SeccompProfile::Unconfined;
    pod.run(unconfined).await;
    assert_ne!(pod.wait_exit("confined").await.0, 0);
    let confined_log = pod.log("confined");
    assert!(confined_log.contains("Seccomp:\t2"), "{confined_log}");
    assert!(
        confined_log.contains("Operation not permitted"),
        "{confined_log}"
    );
    assert_eq!(pod.wait_exit("unconfined").await.0, 0);
    let unconfined_log = pod.log("unconfined");
    assert!(unconfined_log.contains("Seccomp:\t0"), "{unconfined_log}");
    assert!(
        unconfined_log.contains("stdout F unshared"),
        "{unconfined_log}"
    );

    // A Localhost profile that denies mkdir.
    let profile = pod.root.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let mut no_mkdir = pod.spec("nomkdir", "mkdir /tmp/x && echo made");
    no_mkdir.seccomp = SeccompProfile::Localhost(profile);
    pod.run(no_mkdir).await;
    assert_ne!(pod.wait_exit("nomkdir").await.0, 0);
    assert!(!pod.log("nomkdir").contains("made"));

    // A profile that cannot be read must not silently run the container unconfined.
    let mut missing = pod.spec("missing", "true");
    missing.seccomp = SeccompProfile::Localhost(pod.root.path().join("absent.json"));
    assert!(pod
        .runtime
        .create_container(&pod.uid, missing)
        .await
        .is_err());
    let state = pod.state().await;
    assert!(!state.containers.iter().any(|c| c.name == "missing"));
}

/// CAP_SYS_ADMIN's bit in the capability masks of `/proc/<pid>/status`.
const CAP_SYS_ADMIN_BIT: u64 = 1 << 21;

/// CapEff of a `/proc/<pid>/status` text.
fn effective_caps(status: &str) -> u64 {
    status
        .split("CapEff:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .expect("a CapEff line")
}

#[tokio::test]
async fn the_precompiled_filter_confines_a_container_without_no_new_privs_and_execs_get_no_sys_admin(
) {
    let pod = Pod::start().await;
    // Without no_new_privs the filter can only be loaded with CAP_SYS_ADMIN, which the
    // container must not keep.
    let mut lent = pod.spec(
        "lent",
        "cat /proc/self/status; unshare -U true && echo unshared; echo done; exec sleep 1000",
    );
    lent.no_new_privileges = false;
    pod.run(lent).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pod.log("lent").contains("stdout F done") {
        assert!(Instant::now() < deadline, "no output: {}", pod.log("lent"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = pod.log("lent");
    assert!(log.contains("Seccomp:\t2"), "{log}");
    assert!(log.contains("Operation not permitted"), "{log}");
    assert!(!log.contains("stdout F unshared"), "{log}");
    let caps = effective_caps(&log);
    assert_ne!(caps, 0, "the default capabilities stay: {log}");
    assert_eq!(caps & CAP_SYS_ADMIN_BIT, 0, "CAP_SYS_ADMIN given back");

    // An exec into it gets the capabilities of the full spec back in config.json, not the
    // CAP_SYS_ADMIN lent to the init process, and runs under the container's filter (which
    // libcontainer 0.7's tenant builder leaves out: the shim loads it).
    let sh = |script: &str| vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    let filtered = pod
        .runtime
        .exec_sync(
            &pod.uid,
            "lent",
            sh("grep Seccomp: /proc/self/status; unshare -U true && echo unshared"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(filtered.stdout.contains("Seccomp:\t2"), "{filtered:?}");
    assert!(!filtered.stdout.contains("unshared"), "{filtered:?}");
    assert!(
        filtered.stderr.contains("Operation not permitted"),
        "{filtered:?}"
    );
    let exec = pod
        .runtime
        .exec_sync(
            &pod.uid,
            "lent",
            sh("grep CapEff: /proc/self/status"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(exec.exit_code, 0, "{exec:?}");
    assert_eq!(effective_caps(&exec.stdout), caps, "{exec:?}");

    // Compiled once for the node, next to the pods' state dirs.
    let cache = pod.root.path().join("seccomp-cache");
    let programs = std::fs::read_dir(&cache).unwrap().count();
    assert_eq!(programs, 1, "one program for RuntimeDefault in {cache:?}");
}

#[tokio::test]
async fn stop_pod_leaves_no_process_mount_cgroup_or_state_dir() {
    let pod = Pod::start().await;
    let mut spec = pod.spec("app", "echo up; exec sleep 1000");
    spec.rootfs = RootfsSpec::Overlay {
        lower: vec![pod.rootfs.clone()],
    };
    pod.run(spec).await;
    let state = pod.state().await;
    let container_pid = state.containers[0].pid.unwrap();
    let pod_dir = pod.runtime.pod_dir(&pod.uid);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        mountinfo.contains(pod_dir.to_str().unwrap()),
        "overlay not mounted"
    );
    assert!(cgroups::exists_anywhere(&pod.cgroup_parent).unwrap());

    pod.runtime.stop_pod(&pod.uid).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_alive(state.shim_pid) || pid_alive(container_pid) {
        assert!(Instant::now() < deadline, "shim or container still alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!pod_dir.exists());
    assert!(!pod.runtime.pod_run_dir(&pod.uid).exists());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(pod_dir.to_str().unwrap()));
    assert!(!cgroups::exists_anywhere(&pod.cgroup_parent).unwrap());
    assert!(pod.runtime.list_pods().await.unwrap().is_empty());
}

fn inode(path: &str) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap())
}

#[tokio::test]
async fn containers_share_the_pods_network_ipc_and_uts_namespaces() {
    let pod = Pod::start().await;
    let script = "for ns in net ipc uts; do readlink /proc/self/ns/$ns; done; hostname";
    pod.run(pod.spec("a", script)).await;
    pod.run(pod.spec("b", script)).await;
    assert_eq!(pod.wait_exit("a").await.0, 0);
    assert_eq!(pod.wait_exit("b").await.0, 0);
    let lines = |name: &str| -> Vec<String> {
        pod.log(name)
            .lines()
            .map(|l| l.splitn(4, ' ').nth(3).unwrap().to_string())
            .collect()
    };
    let (a, b) = (lines("a"), lines("b"));
    assert_eq!(a, b, "containers of one pod see different namespaces");
    assert_eq!(
        a[0],
        format!(
            "net:[{}]",
            inode(&format!("/run/netns/{}", pod._netns.name))
        )
    );
    let shim = pod.state().await.shim_pid;
    assert_eq!(
        a[2],
        format!("uts:[{}]", inode(&format!("/proc/{shim}/ns/uts")))
    );
    assert_ne!(a[2], format!("uts:[{}]", inode("/proc/self/ns/uts")));
    assert_eq!(a[3], "testpod");
}

#[tokio::test]
async fn stop_pod_also_cleans_up_after_a_shim_that_died() {
    let pod = Pod::start().await;
    pod.run(pod.spec("app", "exec sleep 1000")).await;
    let state = pod.state().await;
    let container_pid = state.containers[0].pid.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(state.shim_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while pod.runtime.pod_state(&pod.uid).await.is_ok() {
        assert!(Instant::now() < deadline, "shim still answers");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(pid_alive(container_pid), "containers outlive their shim");

    pod.runtime.stop_pod(&pod.uid).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_alive(container_pid) {
        assert!(Instant::now() < deadline, "container still alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!pod.runtime.pod_dir(&pod.uid).exists());
    assert!(!pod.runtime.pod_run_dir(&pod.uid).exists());
    assert!(!cgroups::exists_anywhere(&pod.cgroup_parent).unwrap());
}

#[tokio::test]
async fn a_pods_runtime_state_is_in_its_run_dir_and_what_outlives_a_reboot_in_its_dir() {
    let pod = Pod::start().await;
    pod.run(pod.spec("app", "exec sleep 1000")).await;
    let state = pod.state().await;
    let id = &state.containers[0].id;
    let (dir, run) = (
        pod.runtime.pod_dir(&pod.uid),
        pod.runtime.pod_run_dir(&pod.uid),
    );
    let config: PodShimConfig =
        serde_json::from_slice(&std::fs::read(dir.join("pod.json")).unwrap()).unwrap();
    assert_eq!(config.run_dir.as_deref(), Some(run.as_path()));
    for runtime_state in [
        "shim.sock".to_string(),
        "shim.pid".to_string(),
        format!("c/{id}/state.json"),
        "b/app/config.json".to_string(),
    ] {
        assert!(
            run.join(&runtime_state).exists(),
            "{runtime_state} not in {run:?}"
        );
        assert!(
            !dir.join(&runtime_state).exists(),
            "{runtime_state} in {dir:?}"
        );
    }
    assert!(!dir.join("c").exists() && !dir.join("b").exists());
    // Exit codes must survive a reboot (a completed pod stays completed): on disk.
    assert!(dir.join("state.json").exists());
    let pid: i32 = std::fs::read_to_string(run.join("shim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, state.shim_pid);
    // Execs read the bundle and write their process files in the run dir too.
    let exec = pod
        .runtime
        .exec_sync(
            &pod.uid,
            "app",
            vec!["true".into()],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(exec.exit_code, 0);

    pod.runtime.stop_pod(&pod.uid).await.unwrap();
    assert!(!run.exists());
    assert!(!dir.exists());
}

#[tokio::test]
async fn a_run_dir_too_long_for_unix_sockets_is_refused_before_any_shim_starts() {
    let root = tempfile::Builder::new()
        .prefix("bt")
        .tempdir_in("/tmp")
        .unwrap();
    let runtime = ShimRuntime::with_shim_binary(
        root.path().join("pods"),
        root.path().join("r".repeat(100)),
        env!("CARGO_BIN_EXE_berth"),
    );
    let config = PodShimConfig {
        pod_uid: "long".into(),
        netns_path: None,
        hostname: "long".into(),
        cgroup_parent: "berthtest-long".into(),
        run_dir: None,
    };
    let err = runtime
        .start_pod_shim(&config)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unix socket") && err.contains("--run-dir"),
        "{err}"
    );
    assert!(!runtime.pod_dir("long").exists(), "nothing written");
}

#[tokio::test]
async fn oom_score_adj_applies_to_the_container_but_not_to_its_shim() {
    let pod = Pod::start().await;
    let shim_pid = pod.state().await.shim_pid;
    let shim_adj = || std::fs::read_to_string(format!("/proc/{shim_pid}/oom_score_adj")).unwrap();
    let before = shim_adj();
    let mut spec = pod.spec("adj", "cat /proc/self/oom_score_adj");
    spec.oom_score_adj = Some(789);
    pod.run(spec).await;
    assert_eq!(pod.wait_exit("adj").await.0, 0);
    assert!(
        pod.log("adj").contains("stdout F 789"),
        "{}",
        pod.log("adj")
    );
    assert_eq!(shim_adj(), before);
}

/// Whether this process may lower its own oom_score_adj to `value` (CAP_SYS_RESOURCE).
fn may_lower_oom_score_adj_to(value: i32) -> bool {
    let own = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
    let allowed = std::fs::write("/proc/self/oom_score_adj", value.to_string()).is_ok();
    std::fs::write("/proc/self/oom_score_adj", own.trim()).unwrap();
    allowed
}

#[tokio::test]
async fn a_lower_oom_score_adj_than_the_host_allows_still_starts_the_container() {
    let pod = Pod::start().await;
    let shim_pid = pod.state().await.shim_pid;
    let shim_adj = std::fs::read_to_string(format!("/proc/{shim_pid}/oom_score_adj")).unwrap();
    let mut spec = pod.spec("low", "cat /proc/self/oom_score_adj");
    spec.oom_score_adj = Some(-997);
    pod.run(spec).await;
    assert_eq!(pod.wait_exit("low").await.0, 0);
    // With CAP_SYS_RESOURCE the container gets what it asked for; without, the shim's own.
    let expected = if may_lower_oom_score_adj_to(-997) {
        "-997".to_string()
    } else {
        shim_adj.trim().to_string()
    };
    assert!(
        pod.log("low").contains(&format!("stdout F {expected}\n")),
        "{}",
        pod.log("low")
    );
}

#[tokio::test]
async fn exec_sync_runs_in_the_container_and_is_killed_at_its_timeout() {
    let pod = Pod::start().await;
    pod.run(pod.spec("app", "echo hi > /tmp/marker; exec sleep 1000"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let sh = |script: &str| vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    loop {
        let result = pod
            .runtime
            .exec_sync(
                &pod.uid,
                "app",
                sh("cat /tmp/marker; echo oops >&2; exit 4"),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        if result.stdout == "hi\n" {
            assert_eq!(result.exit_code, 4);
            assert_eq!(result.stderr, "oops\n");
            assert!(!result.timed_out);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "marker never appeared: {result:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let started = Instant::now();
    let slow = pod
        .runtime
        .exec_sync(&pod.uid, "app", sh("sleep 100"), Duration::from_millis(300))
        .await
        .unwrap();
    assert!(slow.timed_out);
    assert_eq!(slow.exit_code, 137);
    assert!(started.elapsed() < Duration::from_secs(5));
    // The container itself is untouched, and the shim kept answering.
    let state = pod.state().await;
    assert_eq!(state.containers[0].status, ContainerStatus::Running);
}

/// The children of `pid`: (pid, state letter from /proc/<pid>/stat).
fn children(pid: i32) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let mut fields = rest.split(' ');
        let (state, ppid) = (fields.next(), fields.next());
        if let (Some(state), true) = (state, ppid == Some(&pid.to_string())) {
            found.push((
                entry.file_name().to_string_lossy().into_owned(),
                state.to_string(),
            ));
        }
    }
    found
}

/// Children of `pid` that have exited but were never reaped.
fn zombie_children(pid: i32) -> Vec<String> {
    children(pid)
        .into_iter()
        .filter(|(_, state)| state == "Z")
        .map(|(pid, _)| pid)
        .collect()
}

#[tokio::test]
async fn creates_and_execs_leave_the_shim_no_child_but_the_containers() {
    let pod = Pod::start().await;
    pod.run(pod.spec("app", "exec sleep 1000")).await;
    pod.run(pod.spec("second", "exec sleep 1000")).await;
    let exec = pod
        .runtime
        .exec_sync(&pod.uid, "app", vec!["true".into()], Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(exec.exit_code, 0);
    let state = pod.state().await;
    let mut containers: Vec<String> = state
        .containers
        .iter()
        .map(|c| c.pid.expect("running container has a pid").to_string())
        .collect();
    containers.sort();
    let mut found: Vec<String> = children(state.shim_pid)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect();
    found.sort();
    assert_eq!(found, containers, "the shim's children");
}

#[tokio::test]
async fn a_container_that_cannot_start_is_reported_and_leaves_no_zombie() {
    let pod = Pod::start().await;
    let mut spec = pod.spec("broken", "true");
    spec.args = vec!["/no/such/binary".into()];
    let result = pod.runtime.create_container(&pod.uid, spec).await;
    let shim = pod.state().await.shim_pid;
    assert!(result.is_err(), "created a container without a binary");
    assert!(pod.state().await.containers.is_empty());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(zombie_children(shim), Vec::<String>::new());
    let cgroup = cgroups::container_cgroup_path(&pod.cgroup_parent, "broken");
    assert!(
        !cgroups::exists_anywhere(&cgroup).unwrap(),
        "cgroup of the failed container left"
    );
    assert!(!pod.runtime.pod_dir(&pod.uid).join("b/broken").exists());
    // The name is free again: a fixed spec can be created under it.
    pod.run(pod.spec("broken", "echo fixed")).await;
    assert_eq!(pod.wait_exit("broken").await.0, 0);
}

#[tokio::test]
async fn logs_rotate_by_size_keeping_max_files() {
    let pod = Pod::start().await;
    let mut spec = pod.spec(
        "chatty",
        "i=0; while [ $i -lt 100 ]; do echo line-$i; i=$((i+1)); done",
    );
    spec.log_max_bytes = 1000;
    spec.log_max_files = 2;
    pod.run(spec).await;
    assert_eq!(pod.wait_exit("chatty").await.0, 0);
    let path = pod.log_path("chatty");
    let rotated = PathBuf::from(format!("{}.1", path.display()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pod.log("chatty").contains("stdout F line-99") {
        assert!(Instant::now() < deadline, "last line never logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(std::fs::metadata(&path).unwrap().len() <= 1000);
    assert!(std::fs::metadata(&rotated).unwrap().len() <= 1000);
    assert!(!PathBuf::from(format!("{}.2", path.display())).exists());
    assert!(!std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("line-0\n"));
}

#[tokio::test]
async fn the_shim_survives_the_death_of_the_process_group_that_started_it() {
    use std::os::unix::process::CommandExt;
    let root = tempfile::Builder::new()
        .prefix("bt")
        .tempdir_in("/tmp")
        .unwrap();
    let uid = format!(
        "t{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    let runtime = runtime_in(root.path());
    let dir = runtime.pod_dir(&uid);
    std::fs::create_dir_all(&dir).unwrap();
    let config = PodShimConfig {
        pod_uid: uid.clone(),
        netns_path: None,
        hostname: "orphan".into(),
        cgroup_parent: format!("berthtest-{uid}"),
        // As a berth from before run dirs wrote it: the shim keeps its socket in the pod's
        // dir, and the runtime finds it there.
        run_dir: None,
    };
    std::fs::write(dir.join("pod.json"), serde_json::to_vec(&config).unwrap()).unwrap();
    // A stand-in for the daemon: starts the shim, then lingers in its own process group.
    let script = format!(
        "{} shim --dir {} && exec sleep 1000",
        env!("CARGO_BIN_EXE_berth"),
        dir.display()
    );
    let mut starter = std::process::Command::new("sh")
        .args(["-c", &script])
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while runtime.pod_state(&uid).await.is_err() {
        assert!(Instant::now() < deadline, "shim never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Kill the starter's whole process group, as a dying daemon's service manager would.
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(starter.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    starter.wait().unwrap();
    let state = runtime.pod_state(&uid).await.unwrap();
    assert!(pid_alive(state.shim_pid));
    assert!(dir.join("shim.sock").exists());
    assert!(!runtime.pod_run_dir(&uid).exists());
    runtime.stop_pod(&uid).await.unwrap();
    assert!(!dir.exists());
}
