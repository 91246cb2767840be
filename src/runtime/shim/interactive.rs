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

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

use super::container::{pidfd_open, pidfd_signal, Layout};
use super::{io_err, sys_err, ShimError};
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
        dir: &Path,
        bundle: &Path,
        container_id: &str,
        args: Vec<String>,
        tty: bool,
        stdin: bool,
        size: Option<TerminalSize>,
        client: u64,
        seq: u64,
    ) -> Result<Started, ShimError> {
        let builder = ContainerBuilder::new(container_id.to_string(), SyscallType::default())
            .with_root_path(Layout(dir).containers())?;
        let (pid, fds) = if tty {
            let builder = match size {
                Some(size) => builder.with_executor(SizedTerminal(size)),
                None => builder,
            };
            start_with_tty(dir, bundle, container_id, builder, args, seq)?
        } else {
            start_with_pipes(builder, args, stdin)?
        };
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
    args: Vec<String>,
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
    let pid = builder
        .with_stdout(out_write)
        .with_stderr(err_write)
        .as_tenant()
        .with_container_args(args)
        .with_detach(true)
        .build()?
        .as_raw();
    // The child's ends were moved into the builder and are closed now, so EOF on our ends
    // means the process (and anything it forked) is done writing.
    Ok((pid, fds))
}

/// With a tty the pty must come from the container's own devpts (so `tty` names it and it
/// can be the controlling terminal): libcontainer creates it in the new process and sends the
/// master over a console socket, as `runc exec -t` does.
fn start_with_tty(
    dir: &Path,
    bundle: &Path,
    container_id: &str,
    builder: ContainerBuilder,
    args: Vec<String>,
    seq: u64,
) -> Result<(i32, Vec<OwnedFd>), ShimError> {
    let process_path = dir.join(format!("x{seq}.json"));
    let socket_path = dir.join(format!("x{seq}.sock"));
    let _cleanup = RemoveOnDrop(vec![process_path.clone(), socket_path.clone()]);
    write_tty_process(bundle, &process_path, args)?;
    let listener = UnixListener::bind(&socket_path).map_err(io_err("bind", &socket_path))?;
    let null = || File::open("/dev/null").map_err(io_err("open", "/dev/null"));
    let pid = builder
        .with_console_socket(Some(&socket_path))
        .with_stdin(null()?)
        .with_stdout(null()?)
        .with_stderr(null()?)
        .as_tenant()
        .with_process(Some(&process_path))
        .with_detach(true)
        .build()?
        .as_raw();
    remove_console_links(&Layout(dir).containers().join(container_id), &socket_path);
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

/// Runs a tty exec's program with its terminal already at the client's size. libcontainer
/// makes the pty in the new process and execs the program at once, so a size the shim set
/// afterwards would race the program's first look at it (`stty size` would see 0x0). This
/// runs in the new process, after its stdio became the pty slave.
#[derive(Clone)]
struct SizedTerminal(TerminalSize);

impl Executor for SizedTerminal {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        crate::runtime::session::set_terminal_size(&std::io::stdin(), self.0);
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// The exec's process: the container's own (user, env, cwd, capabilities) with new args and a
/// terminal. TERM is set as containerd does for tty execs, so shells and editors work.
fn write_tty_process(bundle: &Path, path: &Path, args: Vec<String>) -> Result<(), ShimError> {
    let config = bundle.join("config.json");
    let bytes = std::fs::read(&config).map_err(io_err("read", &config))?;
    let spec: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|source| ShimError::State {
            path: config.clone(),
            source,
        })?;
    let mut process = spec
        .get("process")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({"cwd": "/"}));
    process["args"] = serde_json::json!(args);
    process["terminal"] = serde_json::json!(true);
    let mut env: Vec<serde_json::Value> = process
        .get("env")
        .and_then(|e| e.as_array())
        .cloned()
        .unwrap_or_default();
    env.retain(|v| !v.as_str().is_some_and(|s| s.starts_with("TERM=")));
    env.push(serde_json::json!("TERM=xterm"));
    process["env"] = serde_json::json!(env);
    let out = serde_json::to_vec(&process).map_err(|source| ShimError::State {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::write(path, out).map_err(io_err("write", path))
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
