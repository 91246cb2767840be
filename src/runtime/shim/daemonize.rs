//! Double fork + setsid, with a pipe so the process the agent started exits only once the
//! daemon is listening (exit 0) or has failed (exit 1, the reason on stderr).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::ExitCode;

use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout, fork, setsid, ForkResult};

use super::{io_err, sys_err, ShimError};

pub const LOG_NAME: &str = "shim.log";

pub enum Role {
    /// The process the agent started: exit with this code.
    Original(ExitCode),
    /// The daemon; report readiness through this pipe.
    Daemon(ReadyPipe),
}

pub struct ReadyPipe(OwnedFd);

impl ReadyPipe {
    pub fn report(self, result: Result<(), String>) {
        let message = match result {
            Ok(()) => "ok".to_string(),
            Err(e) => e,
        };
        let mut file = File::from(self.0);
        // The original may already be gone (killed): nothing else to tell then.
        let _ = file.write_all(message.as_bytes());
    }
}

pub fn daemonize(dir: &Path) -> Result<Role, ShimError> {
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys_err("pipe"))?;
    // SAFETY: the shim runs before any other thread exists, so the child inherits no lock held
    // by a thread that does not exist in it.
    match unsafe { fork() }.map_err(sys_err("fork"))? {
        ForkResult::Parent { child } => {
            drop(write_end);
            let mut message = String::new();
            let _ = File::from(read_end).read_to_string(&mut message);
            // The intermediate child exits right away; reap it.
            let _ = nix::sys::wait::waitpid(child, None);
            if message == "ok" {
                Ok(Role::Original(ExitCode::SUCCESS))
            } else {
                if message.is_empty() {
                    message = "shim exited before it was ready".into();
                }
                eprintln!("berth shim: {message}");
                Ok(Role::Original(ExitCode::FAILURE))
            }
        }
        ForkResult::Child => {
            drop(read_end);
            setsid().map_err(sys_err("setsid"))?;
            // SAFETY: still single-threaded, see above.
            match unsafe { fork() }.map_err(sys_err("fork"))? {
                // The session leader exits so the daemon can never reacquire a terminal.
                // SAFETY: _exit skips destructors and atexit handlers on purpose: they belong
                // to the daemon, which carries on in the child.
                ForkResult::Parent { .. } => unsafe { libc::_exit(0) },
                ForkResult::Child => {
                    redirect_stdio(dir)?;
                    Ok(Role::Daemon(ReadyPipe(write_end)))
                }
            }
        }
    }
}

fn redirect_stdio(dir: &Path) -> Result<(), ShimError> {
    let null = File::open("/dev/null").map_err(io_err("open", "/dev/null"))?;
    let log_path = dir.join(LOG_NAME);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io_err("open", &log_path))?;
    dup2_stdin(&null).map_err(sys_err("dup2 stdin"))?;
    dup2_stdout(&log).map_err(sys_err("dup2 stdout"))?;
    dup2_stderr(&log).map_err(sys_err("dup2 stderr"))?;
    Ok(())
}
