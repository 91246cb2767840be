//! `berth shim --dir <pod-state-dir>`: the per-pod shim.
//!
//! It runs before any thread exists (the binary dispatches here first thing in `main`) and stays
//! single-threaded: libcontainer clones the calling thread and runs Rust code in the child, which
//! deadlocks if another thread held a lock at that moment, and it `chdir`s the whole process.
//!
//! The shim daemonizes (double fork + setsid) so it is neither the daemon's child nor killed with
//! it, holds the pod's network, IPC and UTS namespaces (containers join them through
//! `/proc/<shim>/ns/*`, so no extra "pause" process is needed), and runs one poll loop over its
//! socket, its clients, the containers' (and execs') stdout/stderr pipes and their pidfds.
//!
//! Its state is in two dirs (see [`crate::runtime::layout`]): the pod's dir in the data dir
//! (`--dir`) has `pod.json` (written by the agent), `shim.log`, `state.json` (containers, exit
//! codes, timestamps) and `o/<name>/{upper,work,root}` (overlay rootfs); the pod's run dir,
//! which `pod.json` names, has `shim.sock`, `shim.pid`, `c/<id>` (libcontainer state),
//! `b/<name>/config.json` (OCI bundle) and the execs' process files and console sockets.
//!
//! `BERTH_SHIM_LOG` (an env-filter directive such as `debug`) in the agent's environment makes
//! the shim log its own and libcontainer's events to `shim.log`, each stamped with the time
//! and the pid (libcontainer's intermediate and init processes log too, the init's last events
//! into the container's own stderr): where a container's set-up spends its time.

mod container;
mod daemonize;
mod event_loop;
mod exec;
mod exec_process;
mod interactive;
mod move_warmer;
mod seccomp_notify;
mod state;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op}: {source}")]
    Sys {
        op: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("pod config {path}: {source}")]
    PodConfig {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    SocketPathTooLong(#[from] crate::runtime::layout::SocketPathTooLong),
    #[error("usage: berth shim --dir <pod-state-dir>")]
    Usage,
    #[error("container {0} already exists")]
    Exists(String),
    #[error("no container named {0}")]
    NotFound(String),
    #[error("container {name} is {status}")]
    WrongStatus { name: String, status: &'static str },
    #[error(transparent)]
    Spec(#[from] crate::runtime::spec::SpecError),
    #[error(transparent)]
    Log(#[from] crate::runtime::logs::LogError),
    #[error(transparent)]
    SeccompNotify(#[from] seccomp_notify::NotifyError),
    #[error("libcontainer: {0}")]
    Libcontainer(#[from] libcontainer::error::LibcontainerError),
    #[error("state file {path}: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> ShimError {
    let path = path.into();
    move |source| ShimError::Io { op, path, source }
}

pub(crate) fn sys_err(op: &'static str) -> impl FnOnce(nix::Error) -> ShimError {
    move |source| ShimError::Sys { op, source }
}

fn parse_args(args: &[OsString]) -> Result<(PathBuf, bool), ShimError> {
    let mut dir = None;
    let mut foreground = false;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.to_str() {
            Some("--dir") => dir = iter.next().map(PathBuf::from),
            Some("--foreground") => foreground = true,
            _ => return Err(ShimError::Usage),
        }
    }
    Ok((dir.ok_or(ShimError::Usage)?, foreground))
}

/// Time and pid in front of each event: the container's set-up runs in three processes.
struct TimeAndPid;

impl tracing_subscriber::fmt::time::FormatTime for TimeAndPid {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{} pid {}", jiff::Timestamp::now(), std::process::id())
    }
}

/// Logs events to stderr (`shim.log` once daemonized) when `BERTH_SHIM_LOG` asks for them.
/// Off by default: the shim lives as long as its pod and must stay small and quiet.
fn init_trace_log() {
    let Some(directive) = std::env::var_os("BERTH_SHIM_LOG") else {
        return;
    };
    let Ok(filter) = tracing_subscriber::EnvFilter::try_new(directive.to_string_lossy()) else {
        eprintln!("berth shim: BERTH_SHIM_LOG is not a log filter; logging nothing");
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(TimeAndPid)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Entry point of `berth shim`. Must be called before any thread is started.
pub fn main() -> ExitCode {
    // argv: berth shim --dir <dir> [--foreground]
    let args: Vec<OsString> = std::env::args_os().skip(2).collect();
    let (dir, foreground) = match parse_args(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("berth shim: {e}");
            return ExitCode::from(2);
        }
    };
    init_trace_log();
    let ready = if foreground {
        None
    } else {
        match daemonize::daemonize(&dir) {
            Ok(daemonize::Role::Original(code)) => return code,
            Ok(daemonize::Role::Daemon(ready)) => Some(ready),
            Err(e) => {
                eprintln!("berth shim: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    match event_loop::run(&dir, ready) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth shim: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_dir_is_required_and_unknown_flags_are_refused() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            parse_args(&args(&["--dir", "/p"])).unwrap(),
            (PathBuf::from("/p"), false)
        );
        assert!(
            parse_args(&args(&["--dir", "/p", "--foreground"]))
                .unwrap()
                .1
        );
        assert!(matches!(parse_args(&args(&[])), Err(ShimError::Usage)));
        assert!(matches!(
            parse_args(&args(&["--bogus"])),
            Err(ShimError::Usage)
        ));
    }
}
