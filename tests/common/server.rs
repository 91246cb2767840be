//! `berth server` running inside a test's network namespace, with its own temporary data dir,
//! driven with the real kubectl and helm.
//!
//! Needs root (network namespaces); CI runs as root.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use berth::runtime::cgroups;
use berth::runtime::layout::{self, PodPaths, DATA_DIR_LINK};

use super::netns::Netns;
use super::{tools, wait_until};

/// How long a server may take from spawn to answering `berth status`.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one `berth status` probe may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

pub struct BerthServer {
    binary: PathBuf,
    netns: String,
    data_dir: tempfile::TempDir,
    child: Option<Child>,
    api_listen: String,
    /// More `berth server` flags, given at every start.
    extra_args: Vec<String>,
}

pub fn temp_data_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("berth-test-{}-", std::process::id()))
        .tempdir()
        .expect("create a temporary data dir")
}

/// The berth binary tests run: this build's, or `BERTH_TEST_BINARY` (an optimised build, for
/// benchmarks that must not measure a debug build).
fn berth_binary() -> std::path::PathBuf {
    std::env::var_os("BERTH_TEST_BINARY")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_berth").into())
}

impl BerthServer {
    /// Starts `berth server --data-dir <temp> --api-listen 127.0.0.1:0` inside `ns` and waits
    /// until it is ready. The server must be dropped before `ns`.
    pub fn start(ns: &Netns) -> BerthServer {
        BerthServer::start_binary(ns, &berth_binary())
    }

    /// Like `start`, with another binary that keeps berth's command-line contract (the harness's
    /// own tests use a stand-in).
    pub fn start_binary(ns: &Netns, binary: &Path) -> BerthServer {
        BerthServer::start_with(ns, binary, temp_data_dir(), "")
    }

    /// `start_binary` with `config` (TOML) as the server's config file.
    pub fn start_binary_with_config(ns: &Netns, binary: &Path, config: &str) -> BerthServer {
        BerthServer::start_with(ns, binary, temp_data_dir(), config)
    }

    /// Like `start`, with `config` (TOML) as the server's config file.
    pub fn start_with_config(ns: &Netns, config: &str) -> BerthServer {
        BerthServer::start_with(ns, &berth_binary(), temp_data_dir(), config)
    }

    /// Like `start`, listening on `listen` (an address other namespaces can reach, say).
    pub fn start_listening(ns: &Netns, listen: &str) -> BerthServer {
        BerthServer::start_listening_with_config(ns, listen, "")
    }

    /// Like `start_listening`, with `config` (TOML) as the server's config file.
    pub fn start_listening_with_config(ns: &Netns, listen: &str, config: &str) -> BerthServer {
        BerthServer::start_listening_with_args(ns, listen, config, &[])
    }

    /// Like `start_listening_with_config`, with more `berth server` flags (`--server`, say).
    pub fn start_listening_with_args(
        ns: &Netns,
        listen: &str,
        config: &str,
        args: &[&str],
    ) -> BerthServer {
        let binary = Path::new(env!("CARGO_BIN_EXE_berth"));
        let mut server = BerthServer::prepare(ns, binary, temp_data_dir(), config);
        server.api_listen = listen.to_string();
        server.extra_args = args.iter().map(|a| a.to_string()).collect();
        server.spawn();
        server
    }

    /// Like `start`, on a data dir the test made (on a small file system, say).
    pub fn start_in(ns: &Netns, data_dir: tempfile::TempDir) -> BerthServer {
        BerthServer::start_with(ns, &berth_binary(), data_dir, "")
    }

    /// Like `start_in`, with `config` (TOML) as the server's config file.
    pub fn start_in_with_config(
        ns: &Netns,
        data_dir: tempfile::TempDir,
        config: &str,
    ) -> BerthServer {
        BerthServer::start_with(ns, Path::new(env!("CARGO_BIN_EXE_berth")), data_dir, config)
    }

    fn start_with(
        ns: &Netns,
        binary: &Path,
        data_dir: tempfile::TempDir,
        config: &str,
    ) -> BerthServer {
        let mut server = BerthServer::prepare(ns, binary, data_dir, config);
        server.spawn();
        server
    }

    fn prepare(
        ns: &Netns,
        binary: &Path,
        data_dir: tempfile::TempDir,
        config: &str,
    ) -> BerthServer {
        stop_orphaned_pods();
        // A config file of our own, so a config in /etc/berth on the host never leaks in.
        File::create(data_dir.path().join("test-config.toml"))
            .and_then(|mut f| f.write_all(config.as_bytes()))
            .expect("write test config");
        BerthServer {
            binary: binary.to_owned(),
            netns: ns.name.clone(),
            data_dir,
            child: None,
            api_listen: "127.0.0.1:0".to_string(),
            extra_args: Vec::new(),
        }
    }

    /// A client certificate and key (PEM) for `user` in `group`, signed with the cluster CA
    /// from the data dir.
    pub fn user_certificate(&self, user: &str, group: &str) -> (String, String) {
        let pki = self.data_dir().join("pki");
        let ca_cert = std::fs::read_to_string(pki.join("ca.crt")).expect("the cluster CA");
        let ca_key = std::fs::read_to_string(pki.join("ca.key")).expect("the cluster CA key");
        let ca_key = rcgen::KeyPair::from_pem(&ca_key).expect("a PEM key");
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert, ca_key).expect("a CA");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, user);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, group);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = params
            .signed_by(&key, &issuer)
            .expect("a signed certificate");
        (cert.pem(), key.serialize_pem())
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    pub fn kubeconfig_path(&self) -> PathBuf {
        self.data_dir().join("kubeconfig.yaml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.data_dir().join("server.log")
    }

    /// Everything the server has written to stdout and stderr so far, over all restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// PID of the running server (`ip netns exec` execs, so this is berth itself).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server process is still alive (not exited, crashed or killed).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// A `Command` running `program` inside the netns with this server's kubeconfig, and kubectl
    /// and helm caches private to this server (ports are reused across tests, caches must not be).
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns])
            .arg(program)
            .env("KUBECONFIG", self.kubeconfig_path())
            .env("KUBECACHEDIR", self.data_dir().join("test-kube-cache"))
            .env("HELM_CACHE_HOME", self.data_dir().join("test-helm/cache"))
            .env("HELM_CONFIG_HOME", self.data_dir().join("test-helm/config"))
            .env("HELM_DATA_HOME", self.data_dir().join("test-helm/data"))
            .stdin(Stdio::null());
        cmd
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        output(self.command(&tools::kubectl()).args(args))
    }

    /// Runs kubectl with `stdin` as its standard input (for `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        output_with_stdin(self.command(&tools::kubectl()).args(args), stdin)
    }

    /// Runs kubectl, asserts it succeeded, returns its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        expect_success("kubectl", args, self.kubectl(args))
    }

    /// Runs `kubectl <args> -o json` (asserting it succeeded) and returns the JSON it printed.
    pub fn kubectl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl_ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    /// The items of `kubectl get <args> -o json`.
    pub fn kubectl_items(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        let list = self.kubectl_json(&all);
        list["items"].as_array().cloned().unwrap_or_default()
    }

    pub fn helm(&self, args: &[&str]) -> Output {
        output(self.command(&tools::helm()).args(args))
    }

    /// Runs another berth command (`kubeconfig`, `status`, ...) inside the netns against this
    /// server's data dir and config.
    pub fn berth(&self, args: &[&str]) -> Output {
        output(self.berth_command().args(args))
    }

    pub fn helm_ok(&self, args: &[&str]) -> String {
        expect_success("helm", args, self.helm(args))
    }

    /// Kills the server with SIGKILL, as a crash or power cut would, and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it is running and starts it again on the same data dir.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "spawn while a server is running");
        // The new server writes a kubeconfig with its new port once it serves; removing the old one
        // keeps the wait below from trusting a stale address.
        let _ = std::fs::remove_file(self.kubeconfig_path());
        without_node_pressure(&self.data_dir().join("test-config.toml"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open server log");
        let mut log_for_stderr = log.try_clone().expect("clone server log handle");
        let _ = writeln!(log_for_stderr, "---- berth server starting ----");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .arg(&self.binary)
            .arg("server")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--api-listen", &self.api_listen])
            .args(&self.extra_args)
            .env("BERTH_CONFIG", self.data_dir().join("test-config.toml"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr)
            .spawn()
            .expect("spawn berth server");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let mut exited = None;
        let ready = wait_until(START_TIMEOUT, || {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    exited = Some(status);
                    return true;
                }
            }
            self.kubeconfig_path().is_file() && self.status_ok()
        });
        if let Some(status) = exited {
            self.child = None;
            // Drop prints the log: it runs while this panic unwinds.
            panic!("berth server exited during start ({status})");
        }
        assert!(
            ready,
            "berth server not ready after {START_TIMEOUT:?}: no kubeconfig.yaml, or `berth status` \
             failed"
        );
    }

    /// The berth binary inside the netns, with this server's data dir and config in its
    /// environment (`BERTH_DATA_DIR`, `BERTH_CONFIG`).
    fn berth_command(&self) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns])
            .arg(&self.binary)
            .env("BERTH_DATA_DIR", self.data_dir())
            .env("BERTH_CONFIG", self.data_dir().join("test-config.toml"))
            .stdin(Stdio::null());
        cmd
    }

    /// Whether `berth status --data-dir <dir>` succeeds inside the netns. Bounded: a server that
    /// accepts connections but never answers must not hang the test past its start timeout.
    fn status_ok(&self) -> bool {
        let spawned = self
            .berth_command()
            .arg("status")
            .arg("--data-dir")
            .arg(self.data_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut status) = spawned else {
            return false;
        };
        let mut success = false;
        let finished = wait_until(STATUS_TIMEOUT, || match status.try_wait() {
            Ok(Some(exit)) => {
                success = exit.success();
                true
            }
            Ok(None) => false,
            Err(_) => true,
        });
        if !finished {
            let _ = status.kill();
            let _ = status.wait();
        }
        success
    }
}

impl Drop for BerthServer {
    /// Kills and reaps the server; the data dir goes with the `TempDir`. When the test failed, the
    /// server's log is printed first (the test harness shows it with the failure).
    fn drop(&mut self) {
        self.kill9();
        stop_pods_left_behind(&self.data_dir().join("pods"));
        if std::thread::panicking() {
            eprintln!(
                "---- log of berth server in {} ----\n{}",
                self.netns,
                self.log()
            );
        }
    }
}

/// The run dir test servers use: berth's default unless `BERTH_RUN_DIR` (which they inherit)
/// names another.
pub fn run_dir() -> PathBuf {
    std::env::var_os("BERTH_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(berth::config::DEFAULT_RUN_DIR))
}

/// The share of the run dir of the server whose pods are in `pods` (`<data dir>/pods`).
pub fn pods_run_dir(pods: &Path) -> PathBuf {
    layout::pods_run_dir(&run_dir(), pods.parent().unwrap_or(pods))
}

/// Where the pod `uid` of `pods` has its places, as its pod config says.
pub fn pod_paths(pods: &Path, uid: &str) -> PodPaths {
    let dir = pods.join(uid);
    PodPaths::recorded(&dir).unwrap_or_else(|| PodPaths::new(&dir, None))
}

/// The pid of pod `uid`'s shim, from its pid file.
pub fn shim_pid(pods: &Path, uid: &str) -> Option<i32> {
    std::fs::read_to_string(pod_paths(pods, uid).pid_file())
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Pods outlive berth by design (their shims and containers keep running): a test that ends
/// with pods still there would leave them on the machine. Kills each pod's shim and every
/// process in its cgroups, then removes those cgroups and the server's share of the run dir.
/// Mounts and network namespaces go with the last process of the server's private mount
/// namespace.
///
/// Pods are found three ways: by their state dirs under `pods/`, by their run dirs, and by the
/// command lines of running shims (`berth shim --dir <pods>/<uid>`), which also finds a shim
/// whose state dir was already removed or that had not yet joined its cgroup — such a shim
/// used to outlive the test.
///
/// A shim the server started just before it was killed may still be double-forking: its
/// daemon can appear after a scan and join its cgroups after they were swept, re-making the
/// directories the sweep had passed (the named `systemd` and cgroup2 hierarchies, which come
/// first here). So the sweep repeats until a round finds no shim and no directory.
pub fn stop_pods_left_behind(pods: &Path) {
    let run = pods_run_dir(pods);
    let mut uids = names_in(pods);
    uids.extend(names_in(&run));
    uids.remove(DATA_DIR_LINK);
    for _ in 0..SWEEP_ROUNDS {
        let shims = shims_under(|dir| dir.parent() == Some(pods));
        for (pid, uid) in &shims {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            uids.insert(uid.clone());
        }
        for uid in &uids {
            let places = [
                pod_paths(pods, uid),
                PodPaths::new(pods.join(uid), Some(&run.join(uid))),
            ];
            for pid in places.iter().filter_map(PodPaths::live_shim_pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            stop_pod_cgroups(uid);
        }
        let cgroups_left = uids
            .iter()
            .any(|uid| cgroups::exists_anywhere(&cgroups::pod_cgroup_parent(uid)).unwrap_or(false));
        if shims.is_empty() && !cgroups_left {
            break;
        }
        // Time for a double fork caught half-way to finish, so the next scan sees its end.
        std::thread::sleep(Duration::from_millis(100));
    }
    remove_empty_pod_cgroup_parents();
    let _ = std::fs::remove_dir_all(&run);
    // The run dir itself once no server's share is left in it (another test's keeps it).
    let _ = std::fs::remove_dir(run_dir());
}

/// File names in `dir`; none when it does not exist.
pub fn names_in(dir: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// How many times [`stop_pods_left_behind`] sweeps at most.
const SWEEP_ROUNDS: usize = 5;

/// Kills every process in the pod's cgroups, then removes them, in every hierarchy (the named
/// `systemd` one and the cgroup2 one of a hybrid host included): berth's own removal. All
/// processes go before any directory: killed processes take a moment to leave, and a
/// hierarchy given up on while they did would keep the pod's directory for good.
fn stop_pod_cgroups(uid: &str) {
    let cgroup = cgroups::pod_cgroup_parent(uid);
    let _ = cgroups::kill_tree(&cgroup, cgroups::DRAIN);
    let _ = cgroups::remove_tree(&cgroup);
}

/// Running shims whose `--dir` matches `wanted`, as (pid, pod uid).
fn shims_under(wanted: impl Fn(&Path) -> bool) -> Vec<(i32, String)> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in procs.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let Some(at) = args
            .windows(3)
            .position(|w| w[0] == b"shim" && w[1] == b"--dir")
        else {
            continue;
        };
        let dir = Path::new(std::ffi::OsStr::from_bytes(args[at + 2]));
        if let (true, Some(uid)) = (wanted(dir), dir.file_name()) {
            found.push((pid, uid.to_string_lossy().into_owned()));
        }
    }
    found
}

/// Kills the pods of servers whose data dir is gone: their test ended (or was killed) without
/// stopping them. A live test's data dir always exists, so its pods are never touched. Their
/// shares of the run dir go too: found by their link to a data dir that is gone.
fn stop_orphaned_pods() {
    let orphans = shims_under(|dir| {
        dir.parent()
            .and_then(Path::parent)
            .is_some_and(|data_dir| !data_dir.exists())
    });
    for (pid, uid) in orphans {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        stop_pod_cgroups(&uid);
    }
    let run = run_dir();
    for share in names_in(&run).iter().map(|name| run.join(name)) {
        if !layout::owner_is_gone(&share) {
            continue;
        }
        for uid in names_in(&share).iter().filter(|n| *n != DATA_DIR_LINK) {
            if let Some(pid) = PodPaths::new(&share, Some(&share.join(uid))).live_shim_pid() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            stop_pod_cgroups(uid);
        }
        let _ = std::fs::remove_dir_all(&share);
    }
}

/// Removes berth's `berth` cgroup parent from every hierarchy once no pod is left in it.
/// Another test's pods keep it (rmdir of a non-empty cgroup fails and is ignored), and a
/// shim that creates it again concurrently creates the whole path.
fn remove_empty_pod_cgroup_parents() {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for hierarchy in hierarchies.flatten() {
        let _ = std::fs::remove_dir(hierarchy.path().join("berth"));
    }
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

fn output_with_stdin(cmd: &mut Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let mut pipe = child.stdin.take().expect("piped stdin");
    let text = stdin.to_owned();
    // Written from a thread so a child that answers before reading all its input cannot block
    // on a full stdout pipe while we block on its full stdin pipe. A child that exits without
    // reading everything closes the pipe: not a failure of ours.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(text.as_bytes());
    });
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait for {cmd:?}: {e}"));
    let _ = writer.join();
    out
}

fn expect_success(program: &str, args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Turns off node-pressure eviction and image garbage collection in a test server's config,
/// unless the test configured them itself: how full the test machine's disk or memory is must
/// not evict a test's pods or delete its images.
fn without_node_pressure(config: &Path) {
    let text = std::fs::read_to_string(config).unwrap_or_default();
    let Ok(mut table) = text.parse::<toml::Table>() else {
        return;
    };
    if !table.contains_key("eviction") {
        let mut eviction = toml::Table::new();
        eviction.insert("hard".into(), toml::Value::Table(toml::Table::new()));
        table.insert("eviction".into(), toml::Value::Table(eviction));
    }
    if let Some(images) = table
        .entry("images")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
    {
        images
            .entry("gc_high_threshold_percent")
            .or_insert(toml::Value::Integer(100));
    }
    let _ = std::fs::write(config, table.to_string());
}
