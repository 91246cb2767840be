//! Interactive exec (`kubectl exec`, `cp`): the shim starts the process in the container and
//! hands its stdio to the agent as file descriptors, so the bytes never pass through this
//! single-threaded loop. The shim only reaps the process and reports its exit code.

use std::fs::File;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::container::{pidfd_open, pidfd_signal};
use super::exec_process;
use super::{io_err, sys_err, ShimError};
use crate::runtime::layout::PodPaths;
use crate::runtime::session::TerminalSize;

/// How long the container's new process may take to send its pty master.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running interactive exec.
pub struct Session {
    /// The client connection that started it: the exit code goes there, and its closing
    /// kills the process.
    pub client: u64,
    pub pid: i32,
    pub pidfd: OwnedFd,
    killed: bool,
}

/// A started session and the descriptors for the agent.
pub struct Started {
    pub session: Session,
    pub fds: Vec<OwnedFd>,
}

impl Session {
    /// Starts `args` in container `container_id` whose bundle is `bundle`. `seq` makes the
    /// temporary file names unique within this shim.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        paths: &PodPaths,
        bundle: &Path,
        container_id: &str,
        args: Vec<String>,
        tty: bool,
        stdin: bool,
        size: Option<TerminalSize>,
        client: u64,
        seq: u64,
    ) -> Result<Started, ShimError> {
        let stdio = match tty {
            true => exec_process::Stdio::Terminal(size),
            false => exec_process::Stdio::Pipes,
        };
        let mut process =
            exec_process::prepare(paths, bundle, &format!("x{seq}.json"), args, stdio)?;
        let notify = process.forward_notify(paths, container_id, bundle)?;
        let builder = ContainerBuilder::new(container_id.to_string(), SyscallType::default())
            .with_root_path(paths.containers())?
            .with_executor(process.executor.clone());
        let started = if tty {
            start_with_tty(paths, container_id, builder, &process.path, seq)
        } else {
            start_with_pipes(builder, &process.path, stdin)
        };
        let (built, fds) = match started {
            Ok((pid, fds)) => (Ok(pid), fds),
            Err(e) => (Err(e), Vec::new()),
        };
        let pid = exec_process::settle(built, notify)?;
        let pidfd = pidfd_open(pid)?;
        Ok(Started {
            session: Session {
                client,
                pid,
                pidfd,
                killed: false,
            },
            fds,
        })
    }

    /// Its client went away: nobody can read its output any more.
    pub fn kill(&mut self) {
        if !self.killed {
            self.killed = true;
            let _ = pidfd_signal(&self.pidfd, libc::SIGKILL);
        }
    }

    /// Called when the pidfd is readable: reaps the process and returns its exit code.
    pub fn finish(&self) -> Option<i32> {
        match waitpid(Pid::from_raw(self.pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => Some(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => Some(128 + signal as i32),
            Ok(_) => None,
            Err(_) => Some(255),
        }
    }
}

fn start_with_pipes(
    builder: ContainerBuilder,
    process_path: &Path,
    stdin: bool,
) -> Result<(i32, Vec<OwnedFd>), ShimError> {
    let mut fds = Vec::new();
    let builder = if stdin {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys_err("pipe"))?;
        fds.push(write);
        builder.with_stdin(read)
    } else {
        builder.with_stdin(File::open("/dev/null").map_err(io_err("open", "/dev/null"))?)
    };
    let (out_read, out_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys_err("pipe"))?;
    let (err_read, err_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys_err("pipe"))?;
    fds.push(out_read);
    fds.push(err_read);
    let builder = builder
        .with_stdout(out_write)
        .with_stderr(err_write)
        .as_tenant()
        .with_process(Some(process_path))
        .with_detach(true);
    let pid = exec_process::keeping_own_oom_score_adj(|| builder.build())?.as_raw();
    // The child's ends were moved into the builder and are closed now, so EOF on our ends
    // means the process (and anything it forked) is done writing.
    Ok((pid, fds))
}

/// With a tty the pty must come from the container's own devpts (so `tty` names it and it
/// can be the controlling terminal): libcontainer creates it in the new process and sends the
/// master over a console socket, as `runc exec -t` does.
fn start_with_tty(
    paths: &PodPaths,
    container_id: &str,
    builder: ContainerBuilder,
    process_path: &Path,
    seq: u64,
) -> Result<(i32, Vec<OwnedFd>), ShimError> {
    let socket_path = paths.scratch(&format!("x{seq}.sock"));
    let _cleanup = RemoveOnDrop(vec![socket_path.clone()]);
    let listener = UnixListener::bind(&socket_path).map_err(io_err("bind", &socket_path))?;
    let null = || File::open("/dev/null").map_err(io_err("open", "/dev/null"));
    let builder = builder
        .with_console_socket(Some(&socket_path))
        .with_stdin(null()?)
        .with_stdout(null()?)
        .with_stderr(null()?)
        .as_tenant()
        .with_process(Some(process_path))
        .with_detach(true);
    let pid = exec_process::keeping_own_oom_score_adj(|| builder.build())?.as_raw();
    remove_console_links(&paths.container_state(container_id), &socket_path);
    let master = match receive_pty_master(&listener, &socket_path) {
        Ok(master) => master,
        Err(e) => {
            if let Ok(pidfd) = pidfd_open(pid) {
                let _ = pidfd_signal(&pidfd, libc::SIGKILL);
            }
            return Err(e);
        }
    };
    Ok((pid, vec![master]))
}

pub(super) fn receive_pty_master(
    listener: &UnixListener,
    path: &Path,
) -> Result<OwnedFd, ShimError> {
    // libcontainer's process has connected and sent the master by the time build() returns;
    // the timeout only guards against a process that died first.
    listener
        .set_nonblocking(true)
        .map_err(io_err("set nonblocking", path))?;
    let deadline = std::time::Instant::now() + CONSOLE_TIMEOUT;
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() >= deadline {
                    return Err(io_err("accept", path)(e));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(io_err("accept", path)(e)),
        }
    };
    stream
        .set_nonblocking(false)
        .map_err(io_err("set blocking", path))?;
    stream
        .set_read_timeout(Some(CONSOLE_TIMEOUT))
        .map_err(io_err("set timeout", path))?;
    let mut name = [0u8; 256];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(sys_err("recvmsg pty master"))?;
    for cmsg in msg.cmsgs().map_err(sys_err("recvmsg pty master"))? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: SCM_RIGHTS just installed this fd in our table; nothing else owns it.
                return Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) });
            }
        }
    }
    Err(ShimError::Sys {
        op: "recvmsg pty master: no descriptor",
        source: nix::Error::EPROTO,
    })
}

/// Sends `line` with `fds` attached (SCM_RIGHTS) on a blocking unix stream.
pub fn send_with_fds(
    stream: &std::os::unix::net::UnixStream,
    line: &[u8],
    fds: &[OwnedFd],
) -> Result<(), ShimError> {
    use nix::sys::socket::{sendmsg, ControlMessage};
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let iov = [std::io::IoSlice::new(line)];
    let cmsgs = [ControlMessage::ScmRights(&raw)];
    let sent = sendmsg::<()>(stream.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), None)
        .map_err(sys_err("sendmsg exec fds"))?;
    if sent < line.len() {
        // The descriptors went with the first byte; the rest of the line is plain data.
        use std::io::Write;
        let mut s = stream;
        s.write_all(&line[sent..])
            .map_err(io_err("write", PathBuf::from("exec client")))?;
    }
    Ok(())
}

/// libcontainer links the console socket into the container's state dir and leaves the link.
pub(super) fn remove_console_links(container_dir: &Path, socket: &Path) {
    let Ok(entries) = std::fs::read_dir(container_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if std::fs::read_link(&path).is_ok_and(|target| target == socket) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

pub(super) struct RemoveOnDrop(pub Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}
