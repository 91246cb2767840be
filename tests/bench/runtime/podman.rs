//! Debian's podman, run the way the runtime benchmark compares berth with it: `podman kube play`
//! of the same pod spec, `--runtime runc` (crun fails on hybrid cgroups), pulling from the test
//! registry in the bench's network namespace.
//!
//! Everything podman keeps lives in one temp dir: storage (`--root`, `--runroot`), its
//! containers.conf, registries.conf and storage.conf (named through `CONTAINERS_*` so the
//! host's files never apply), its tmp dir, network configs, event log and file locks. podman
//! is entered into the bench's netns with `nsenter --net` rather than `ip netns exec`, which
//! would mount a fresh sysfs without the cgroup hierarchies runc needs.
//!
//! Two things podman 4.3 puts outside that dir whatever it is told: netavark's state in
//! `/run/containers/networks` and the pod cgroups' parent `libpod_parent`. Both are removed on
//! drop when this run created them and they are empty.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::netns::Netns;

const NETAVARK_STATE: &str = "/run/containers/networks";
const NETAVARK_PARENT: &str = "/run/containers";
const CGROUP_PARENT: &str = "libpod_parent";

pub struct Podman {
    dir: tempfile::TempDir,
    netns: String,
    /// The shared places podman writes to, as they were before this run.
    before: SharedState,
}

impl Podman {
    /// Configures a private podman in `ns` whose `docker.io` is the registry at `registry`.
    pub fn new(ns: &Netns, registry: &str) -> Podman {
        let dir = tempfile::Builder::new()
            .prefix(&format!("berth-bench-podman-{}-", std::process::id()))
            .tempdir()
            .expect("create podman dir");
        let path = dir.path();
        std::fs::write(
            path.join("registries.conf"),
            format!(
                "unqualified-search-registries = [\"docker.io\"]\n\
                 short-name-mode = \"permissive\"\n\
                 [[registry]]\nprefix = \"docker.io\"\nlocation = \"{registry}\"\ninsecure = true\n"
            ),
        )
        .expect("write registries.conf");
        // Root here lacks CAP_SYS_RESOURCE, so runc cannot raise rlimits: podman's defaults
        // (the hard limit for nofile and nproc) fail; limits at or below ours work.
        std::fs::write(
            path.join("containers.conf"),
            format!(
                "[containers]\n\
                 default_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n\
                 [engine]\n\
                 cgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\n\
                 events_logfile_path = \"{events}\"\n\
                 runtime = \"runc\"\n\
                 tmp_dir = \"{tmp}\"\n\
                 volume_path = \"{volumes}\"\n\
                 lock_type = \"file\"\n\
                 [network]\n\
                 network_config_dir = \"{networks}\"\n",
                events = path.join("events.log").display(),
                tmp = path.join("tmp").display(),
                volumes = path.join("volumes").display(),
                networks = path.join("networks").display(),
            ),
        )
        .expect("write containers.conf");
        std::fs::write(
            path.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                path.join("root").display(),
                path.join("runroot").display()
            ),
        )
        .expect("write storage.conf");
        Podman {
            netns: ns.name.clone(),
            before: SharedState::now(),
            dir,
        }
    }

    fn command(&self) -> Command {
        let path = self.dir.path();
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.netns))
            .arg("podman")
            .arg("--root")
            .arg(path.join("root"))
            .arg("--runroot")
            .arg(path.join("runroot"))
            .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
            .env("CONTAINERS_CONF", path.join("containers.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", path.join("registries.conf"))
            .env("CONTAINERS_STORAGE_CONF", path.join("storage.conf"))
            .env("TMPDIR", path.join("tmp"))
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let _ = std::fs::create_dir_all(self.dir.path().join("tmp"));
        self.command()
            .args(args)
            .output()
            .expect("run podman (scripts/install-test-deps.sh installs it)")
    }

    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `podman kube play` of `pod` (JSON is YAML); returns how long it took. podman returns once
    /// the pod's containers run, so this is its create → Running.
    pub fn kube_play(&self, pod: &serde_json::Value) -> Duration {
        let name = pod["metadata"]["name"].as_str().unwrap_or("pod");
        let file = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, pod.to_string()).expect("write pod yaml");
        let started = Instant::now();
        self.run_ok(&["kube", "play", file.to_str().expect("utf-8 temp path")]);
        started.elapsed()
    }

    /// Removes every pod podman runs here at once, without waiting for `sleep` to ignore a
    /// SIGTERM (what `kube down` would wait for).
    pub fn remove_pods(&self) {
        self.run_ok(&["pod", "rm", "--all", "--force", "--time", "0"]);
    }

    /// PIDs of the conmon processes of this podman's containers (one per container).
    pub fn conmon_pids(&self) -> Vec<u32> {
        let runroot = self.dir.path().join("runroot");
        crate::common::procs::processes_whose_cmdline_contains(runroot.to_str().unwrap_or("-"))
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim() == "conmon")
            })
            .collect()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["pod", "rm", "--all", "--force", "--time", "0"]);
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.run(&["rmi", "--all", "--force"]);
        // containers/storage may leave its overlay dir mounted on itself: unmount whatever is
        // still mounted below our dir before removing it.
        for mount in mounts_below(self.dir.path()).into_iter().rev() {
            let _ = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH);
        }
        if !self.before.netavark_state {
            let _ = std::fs::remove_dir_all(NETAVARK_STATE);
        }
        if !self.before.netavark_parent {
            let _ = std::fs::remove_dir(NETAVARK_PARENT);
        }
        // Empty by now (rmdir fails on a cgroup with processes or children).
        for pod in SharedState::now()
            .pod_cgroups
            .difference(&self.before.pod_cgroups)
        {
            let _ = std::fs::remove_dir(pod);
        }
        if !self.before.cgroup_parent {
            for hierarchy in cgroup_hierarchies() {
                let _ = std::fs::remove_dir(hierarchy.join(CGROUP_PARENT));
            }
        }
    }
}

fn cgroup_hierarchies() -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn cgroup_parent_exists() -> bool {
    cgroup_hierarchies()
        .iter()
        .any(|h| h.join(CGROUP_PARENT).exists())
}

/// Mount points at or below `dir`, in mount order.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|mount| mount.starts_with(dir))
        .collect()
}
/// The shared places podman writes to whatever it is told: compared before and after a run to
/// show that the run left nothing there.
#[derive(PartialEq, Eq)]
pub struct SharedState {
    named_netns: std::collections::BTreeSet<String>,
    netavark_state: bool,
    netavark_parent: bool,
    cgroup_parent: bool,
    /// The pods' cgroups below `libpod_parent` in every hierarchy. podman 4.3 removes a pod's
    /// cgroups from the controllers' hierarchies but not from `unified` and `name=systemd`.
    pod_cgroups: std::collections::BTreeSet<PathBuf>,
}

impl SharedState {
    pub fn now() -> SharedState {
        SharedState {
            named_netns: std::fs::read_dir("/run/netns")
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|name| name.starts_with("netns-"))
                        .collect()
                })
                .unwrap_or_default(),
            netavark_state: Path::new(NETAVARK_STATE).exists(),
            netavark_parent: Path::new(NETAVARK_PARENT).exists(),
            cgroup_parent: cgroup_parent_exists(),
            pod_cgroups: cgroup_hierarchies()
                .iter()
                .flat_map(|h| {
                    std::fs::read_dir(h.join(CGROUP_PARENT))
                        .into_iter()
                        .flatten()
                })
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect(),
        }
    }

    /// What is in `self` and was not in `before`.
    pub fn added_since(&self, before: &SharedState) -> Vec<String> {
        let mut added: Vec<String> = self
            .named_netns
            .difference(&before.named_netns)
            .map(|name| format!("/run/netns/{name}"))
            .collect();
        if self.netavark_state && !before.netavark_state {
            added.push(NETAVARK_STATE.into());
        }
        if self.netavark_parent && !before.netavark_parent {
            added.push(NETAVARK_PARENT.into());
        }
        added.extend(
            self.pod_cgroups
                .difference(&before.pod_cgroups)
                .map(|p| p.display().to_string()),
        );
        if self.cgroup_parent && !before.cgroup_parent {
            added.push(format!("cgroup {CGROUP_PARENT}"));
        }
        added
    }
}
