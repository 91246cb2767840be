//! ExecSync: run a command in a running container (libcontainer "tenant" process), capture its
//! output and exit code, kill it at its deadline. The answer is deferred: the poll loop keeps
//! serving while the command runs and replies when it has exited.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::container::{pidfd_open, pidfd_signal, set_nonblocking};
use super::exec_process;
use super::{io_err, sys_err, ShimError};
use crate::runtime::layout::PodPaths;
use crate::runtime::protocol::ExecResult;

/// Output beyond this, per stream, is dropped: probes need a verdict, not a transcript.
pub const MAX_OUTPUT_BYTES: usize = 1 << 20;

pub struct ExecRun {
    /// The client waiting for the answer.
    pub client: u64,
    pub pid: i32,
    pub pidfd: OwnedFd,
    /// stdout then stderr; `None` once at EOF.
    pipes: [Option<OwnedFd>; 2],
    output: [Vec<u8>; 2],
    pub deadline: Instant,
    timed_out: bool,
}

impl ExecRun {
    /// Starts `args` in container `container_id` whose bundle is `bundle`.
    pub fn start(
        paths: &PodPaths,
        bundle: &Path,
        container_id: &str,
        args: Vec<String>,
        timeout: Duration,
        client: u64,
    ) -> Result<Self, ShimError> {
        let mut process = exec_process::prepare(
            paths,
            bundle,
            &format!("e{client}.json"),
            args,
            exec_process::Stdio::Pipes,
        )?;
        let stdin = File::open("/dev/null").map_err(io_err("open", "/dev/null"))?;
        let (out_read, out_write) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys_err("pipe"))?;
        let (err_read, err_write) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys_err("pipe"))?;
        set_nonblocking(&out_read)?;
        set_nonblocking(&err_read)?;
        let notify = process.forward_notify(paths, container_id, bundle)?;
        let builder = ContainerBuilder::new(container_id.to_string(), SyscallType::default())
            .with_root_path(paths.containers())?
            .with_executor(process.executor.clone())
            .with_stdin(stdin)
            .with_stdout(out_write)
            .with_stderr(err_write)
            .as_tenant()
            .with_process(Some(&process.path))
            .with_detach(true);
        let built = exec_process::keeping_own_oom_score_adj(|| builder.build());
        let pid = exec_process::settle(built.map(|p| p.as_raw()).map_err(Into::into), notify)?;
        let pidfd = pidfd_open(pid)?;
        Ok(Self {
            client,
            pid,
            pidfd,
            pipes: [Some(out_read), Some(err_read)],
            output: [Vec::new(), Vec::new()],
            deadline: Instant::now() + timeout,
            timed_out: false,
        })
    }

    pub fn pipe_fds(&self) -> impl Iterator<Item = (usize, BorrowedFd<'_>)> {
        self.pipes
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|fd| (i, fd.as_fd())))
    }

    /// Reads what pipe `index` holds, up to the output cap.
    pub fn read_pipe(&mut self, index: usize) {
        let Some(Some(fd)) = self.pipes.get(index) else {
            return;
        };
        let mut buf = [0u8; 16 * 1024];
        loop {
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) => {
                    self.pipes[index] = None;
                    return;
                }
                Ok(n) => {
                    let out = &mut self.output[index];
                    let room = MAX_OUTPUT_BYTES.saturating_sub(out.len());
                    out.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(nix::Error::EINTR) => continue,
                Err(nix::Error::EAGAIN) => return,
                Err(_) => {
                    self.pipes[index] = None;
                    return;
                }
            }
        }
    }

    /// Past the deadline: kill it; its exit then completes the run.
    pub fn enforce_deadline(&mut self, now: Instant) {
        if !self.timed_out && now >= self.deadline {
            self.timed_out = true;
            let _ = pidfd_signal(&self.pidfd, libc::SIGKILL);
        }
    }

    /// Called when the pidfd is readable: reaps the process and, if it has exited, returns
    /// the result with whatever output the pipes still held.
    pub fn finish(&mut self) -> Option<ExecResult> {
        let exit_code = match waitpid(Pid::from_raw(self.pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => code,
            Ok(WaitStatus::Signaled(_, signal, _)) => 128 + signal as i32,
            Ok(_) => return None,
            Err(_) => 255,
        };
        self.read_pipe(0);
        self.read_pipe(1);
        Some(ExecResult {
            exit_code,
            stdout: String::from_utf8_lossy(&self.output[0]).into_owned(),
            stderr: String::from_utf8_lossy(&self.output[1]).into_owned(),
            timed_out: self.timed_out,
        })
    }
}
