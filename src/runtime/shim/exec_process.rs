//! The process an exec starts in a running container: the container's own process (user, env,
//! cwd, capabilities, no_new_privs, oomScoreAdj) with the exec's args, confined by the
//! container's seccomp filter, as CRI runtimes run `kubectl exec` and exec probes.
//!
//! libcontainer 0.7's tenant builder rebuilds `linux` from the namespaces, cgroup path,
//! personality and time offsets only, so a `linux.seccomp` in config.json never reaches an
//! exec'd process. The shim loads the filter itself, from the executor that runs in the new
//! process just before its program, the way [`seccomp_bpf`] does for init processes: with
//! CAP_SYS_ADMIN lent to the process until the load when it lacks `no_new_privs`. A profile
//! with notify rules sends the filter's descriptor to its listener ([`super::seccomp_notify`]).

use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::{LinuxSeccomp, Spec};
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

use super::interactive::RemoveOnDrop;
use super::seccomp_notify::{self, Forwarding, Route};
use super::{io_err, ShimError};
use crate::runtime::layout::PodPaths;
use crate::runtime::seccomp_bpf::{self, LentSysAdmin, Program};
use crate::runtime::session::TerminalSize;

const OOM_SCORE_ADJ: &str = "/proc/self/oom_score_adj";

/// An exec's process file (removed on drop) and the executor to start it with.
pub struct ExecProcess {
    pub path: PathBuf,
    pub executor: ExecExecutor,
    /// Where the filter's notify descriptor goes, for a profile with notify rules.
    notify: Option<Route>,
    _cleanup: RemoveOnDrop,
}

/// What the new process does before its program: size its terminal, load its filter.
#[derive(Clone)]
pub struct ExecExecutor {
    terminal_size: Option<TerminalSize>,
    seccomp: Option<(Filter, LentSysAdmin)>,
    /// The process's end of the pair its notify descriptor goes over (see seccomp_notify).
    notify_to: Option<std::os::fd::RawFd>,
}

#[derive(Clone)]
enum Filter {
    /// The node's compiled program for the profile.
    Compiled(Program),
    /// Compiled in the new process by libcontainer, when the cache cannot hold the profile.
    Profile(Box<LinuxSeccomp>),
}

/// How the exec talks to its caller.
#[derive(Clone, Copy, Debug)]
pub enum Stdio {
    Pipes,
    /// A pty, already at this size when the program starts if one is given.
    Terminal(Option<TerminalSize>),
}

/// Writes `file_name` in the pod's run dir, the process for `args` in the container whose
/// bundle is `bundle`, and returns it with its executor.
pub fn prepare(
    paths: &PodPaths,
    bundle: &Path,
    file_name: &str,
    args: Vec<String>,
    stdio: Stdio,
) -> Result<ExecProcess, ShimError> {
    let config = bundle.join("config.json");
    let bytes = std::fs::read(&config).map_err(io_err("read", &config))?;
    let spec: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|source| ShimError::State {
            path: config.clone(),
            source,
        })?;
    let mut process = exec_process(&spec, args, stdio);
    let mut notify = None;
    let seccomp = match spec.get("linux").and_then(|l| l.get("seccomp")) {
        Some(profile) => {
            notify = Route::for_profile(profile)?;
            let filter = filter_for(paths, profile).map_err(|source| ShimError::State {
                path: config.clone(),
                source,
            })?;
            let lent = seccomp_bpf::lend_sys_admin(&mut process).unwrap_or_default();
            Some((filter, lent))
        }
        None => None,
    };
    let path = paths.scratch(file_name);
    let cleanup = RemoveOnDrop(vec![path.clone()]);
    let out = serde_json::to_vec(&process).map_err(|source| ShimError::State {
        path: path.clone(),
        source,
    })?;
    std::fs::write(&path, out).map_err(io_err("write", &path))?;
    let terminal_size = match stdio {
        Stdio::Terminal(size) => size,
        Stdio::Pipes => None,
    };
    Ok(ExecProcess {
        path,
        executor: ExecExecutor {
            terminal_size,
            seccomp,
            notify_to: None,
        },
        notify,
        _cleanup: cleanup,
    })
}

impl ExecProcess {
    /// For a profile with notify rules: starts forwarding the descriptor of the process about
    /// to be built in container `container_id`, and points the executor at it. Build with
    /// the executor only after this, and pass the result to [`settle`].
    pub fn forward_notify(
        &mut self,
        paths: &PodPaths,
        container_id: &str,
        bundle: &Path,
    ) -> Result<Option<Forwarding>, ShimError> {
        let Some(route) = self.notify.take() else {
            return Ok(None);
        };
        let init_pid =
            libcontainer::container::Container::load(paths.container_state(container_id))
                .ok()
                .and_then(|c| c.pid())
                .map(|p| p.as_raw());
        let forwarding = route.start(container_id, init_pid, bundle)?;
        self.executor.notify_to = forwarding.process_fd();
        Ok(Some(forwarding))
    }
}

/// The pid of a built exec once its notify descriptor (if any) is with the listener; a process
/// whose descriptor did not get there is killed, as runc fails such an exec.
pub fn settle(built: Result<i32, ShimError>, notify: Option<Forwarding>) -> Result<i32, ShimError> {
    let forwarded = notify.map(Forwarding::finish).transpose();
    let pid = built?;
    if let Err(e) = forwarded {
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
        return Err(e.into());
    }
    Ok(pid)
}

/// The container's process with the exec's args. TERM is set for tty execs as containerd
/// does, so shells and editors work.
fn exec_process(spec: &serde_json::Value, args: Vec<String>, stdio: Stdio) -> serde_json::Value {
    let mut process = spec
        .get("process")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({"cwd": "/"}));
    process["args"] = serde_json::json!(args);
    let terminal = matches!(stdio, Stdio::Terminal(_));
    process["terminal"] = serde_json::json!(terminal);
    if terminal {
        let mut env: Vec<serde_json::Value> = process
            .get("env")
            .and_then(|e| e.as_array())
            .cloned()
            .unwrap_or_default();
        env.retain(|v| !v.as_str().is_some_and(|s| s.starts_with("TERM=")));
        env.push(serde_json::json!("TERM=xterm"));
        process["env"] = serde_json::json!(env);
    }
    process
}

/// The node's compiled program for `profile`, or the profile itself for libcontainer to
/// compile when the cache cannot take it (filter flags, notify): never no filter.
fn filter_for(paths: &PodPaths, profile: &serde_json::Value) -> Result<Filter, serde_json::Error> {
    let cache = match seccomp_notify::notifies(profile) {
        // Only libseccomp's load gives the notify descriptor.
        true => None,
        false => paths.seccomp_cache(),
    };
    if let Some(cache) = cache {
        match seccomp_bpf::cached(&cache, profile) {
            Ok(program) => return Ok(Filter::Compiled(program)),
            Err(e) => eprintln!("berth shim: exec seccomp profile not precompiled: {e}"),
        }
    }
    serde_json::from_value(profile.clone()).map(|p| Filter::Profile(Box::new(p)))
}

/// Runs `build` and puts the shim's oom_score_adj back afterwards: libcontainer applies the
/// process's oomScoreAdj by writing the caller's own value before it clones.
pub fn keeping_own_oom_score_adj<T>(build: impl FnOnce() -> T) -> T {
    let own = std::fs::read_to_string(OOM_SCORE_ADJ).ok();
    let result = build();
    if let Some(value) = own {
        let _ = std::fs::write(OOM_SCORE_ADJ, value.trim());
    }
    result
}

impl ExecExecutor {
    fn confine(&self) -> Result<(), ExecutorError> {
        let Some((filter, lent)) = &self.seccomp else {
            return Ok(());
        };
        // Any failure ends the process before its program runs: never unconfined.
        match filter {
            Filter::Compiled(program) => program
                .load()
                .map_err(|e| ExecutorError::Other(format!("load seccomp filter: {e}")))?,
            Filter::Profile(profile) => {
                let notify = libcontainer::seccomp::initialize_seccomp(profile)
                    .map_err(|e| ExecutorError::Other(format!("load seccomp filter: {e}")))?;
                match (notify, self.notify_to) {
                    (None, _) => {}
                    (Some(fd), Some(to)) => {
                        seccomp_notify::hand_over(to, fd).map_err(ExecutorError::Other)?
                    }
                    (Some(fd), None) => {
                        // SAFETY: the filter load just returned this descriptor to us alone.
                        drop(unsafe {
                            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
                        });
                        return Err(ExecutorError::Other(
                            seccomp_notify::NotifyError::NoListenerPath.to_string(),
                        ));
                    }
                }
            }
        }
        lent.give_back()
            .map_err(|e| ExecutorError::Other(format!("drop CAP_SYS_ADMIN: {e}")))
    }
}

impl Executor for ExecExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if let Some(size) = self.terminal_size {
            // Before the program's first look at it (`stty size` would see 0x0 otherwise).
            crate::runtime::session::set_terminal_size(&std::io::stdin(), size);
        }
        self.confine()?;
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container_spec() -> serde_json::Value {
        serde_json::json!({
            "process": {
                "args": ["sleep", "1000"],
                "env": ["PATH=/bin", "TERM=dumb"],
                "cwd": "/work",
                "user": {"uid": 1000, "gid": 1000},
                "capabilities": {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"],
                    "permitted": ["CAP_CHOWN"]},
            },
            "linux": {"seccomp": crate::runtime::seccomp::runtime_default(&[])},
        })
    }

    #[test]
    fn an_exec_runs_as_the_container_process_with_its_own_args() {
        let args = vec!["id".to_string()];
        let process = exec_process(&container_spec(), args, Stdio::Pipes);
        assert_eq!(process["args"], serde_json::json!(["id"]));
        assert_eq!(process["user"]["uid"], 1000);
        assert_eq!(process["cwd"], "/work");
        assert_eq!(process["terminal"], false);
        assert_eq!(
            process["env"],
            serde_json::json!(["PATH=/bin", "TERM=dumb"])
        );
    }

    #[test]
    fn a_tty_exec_gets_a_terminal_and_term_xterm() {
        let process = exec_process(&container_spec(), vec!["sh".into()], Stdio::Terminal(None));
        assert_eq!(process["terminal"], true);
        assert_eq!(
            process["env"],
            serde_json::json!(["PATH=/bin", "TERM=xterm"])
        );
    }

    #[test]
    fn a_confined_container_gives_its_execs_the_filter_and_lends_sys_admin_only_until_the_load() {
        let root = tempfile::tempdir().unwrap();
        // <data>/pods/<uid>: the cache lives in <data>/seccomp-cache.
        let dir = root.path().join("pods").join("uid1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            container_spec().to_string().as_bytes(),
        )
        .unwrap();
        let paths = PodPaths::new(&dir, Some(&root.path().join("run")));
        std::fs::create_dir_all(&paths.run).unwrap();
        let exec = prepare(&paths, &dir, "e1.json", vec!["id".into()], Stdio::Pipes).unwrap();
        assert!(exec.path.starts_with(&paths.run), "{:?}", exec.path);
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&exec.path).unwrap()).unwrap();
        let caps = &written["capabilities"];
        assert_eq!(
            caps["effective"],
            serde_json::json!(["CAP_CHOWN", "CAP_SYS_ADMIN"])
        );
        assert_eq!(caps["bounding"], serde_json::json!(["CAP_CHOWN"]));
        assert!(matches!(
            exec.executor.seccomp,
            Some((Filter::Compiled(_), _))
        ));
        assert!(root.path().join("seccomp-cache").is_dir());
        let path = exec.path.clone();
        drop(exec);
        assert!(!path.exists(), "the process file goes with the exec");
    }

    #[test]
    fn an_unconfined_container_gives_its_execs_no_filter_and_no_extra_capability() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = container_spec();
        spec["linux"] = serde_json::json!({});
        std::fs::write(dir.path().join("config.json"), spec.to_string()).unwrap();
        let exec = prepare(
            &PodPaths::new(dir.path(), None),
            dir.path(),
            "e1.json",
            vec!["id".into()],
            Stdio::Pipes,
        )
        .unwrap();
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&exec.path).unwrap()).unwrap();
        assert_eq!(
            written["capabilities"]["effective"],
            serde_json::json!(["CAP_CHOWN"])
        );
        assert!(exec.executor.seccomp.is_none());
    }
}
