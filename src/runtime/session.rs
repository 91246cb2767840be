//! Agent side of an interactive exec: asks the pod's shim to start the process, receives its
//! stdio as file descriptors and waits for its exit code on the same connection.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::unix::pipe;

use super::protocol::{Request, Response};
use super::{RuntimeError, ShimRuntime};

/// What a started interactive exec gives the caller.
pub struct ExecSession {
    /// Present with `stdin` (a pipe) or `tty` (the pty master, also the output).
    pub stdin: Option<pipe::Sender>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
    /// The pty master, kept to resize the terminal.
    tty: Option<OwnedFd>,
    exit: BufReader<tokio::net::UnixStream>,
}

/// A terminal size as `kubectl` sends it on the resize channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

impl ExecSession {
    /// Waits for the process to exit and returns its exit code. Dropping the session before
    /// that kills the process.
    pub async fn wait(&mut self) -> Result<i32, RuntimeError> {
        let mut line = String::new();
        let n = self
            .exit
            .read_line(&mut line)
            .await
            .map_err(|e| RuntimeError::Protocol(format!("exec exit: {e}")))?;
        if n == 0 {
            return Err(RuntimeError::Protocol("shim closed the exec".into()));
        }
        match serde_json::from_str(&line) {
            Ok(Response::ExecExited { exit_code }) => Ok(exit_code),
            Ok(other) => Err(RuntimeError::Protocol(format!(
                "unexpected exec answer {other:?}"
            ))),
            Err(e) => Err(RuntimeError::Protocol(format!("decode exec answer: {e}"))),
        }
    }

    /// A handle to resize the terminal, for a task other than the one waiting; `None` without
    /// a tty.
    pub fn resizer(&self) -> Option<Resizer> {
        let master = self.tty.as_ref()?.try_clone().ok()?;
        Some(Resizer(master))
    }
}

/// Resizes an exec's terminal.
pub struct Resizer(OwnedFd);

impl Resizer {
    pub fn resize(&self, size: TerminalSize) {
        set_terminal_size(&self.0, size);
    }
}

/// Sets the window size of the pty whose master (or slave) is `fd`.
pub fn set_terminal_size(fd: &impl AsRawFd, size: TerminalSize) {
    let ws = libc::winsize {
        ws_row: size.height,
        ws_col: size.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which lives across the call.
    unsafe {
        libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws);
    }
}

impl ShimRuntime {
    /// Starts `args` in container `name` of pod `pod_uid`, with a tty or with pipes.
    pub async fn exec(
        &self,
        pod_uid: &str,
        name: &str,
        args: Vec<String>,
        tty: bool,
        stdin: bool,
        size: Option<TerminalSize>,
    ) -> Result<ExecSession, RuntimeError> {
        let socket = self.shim_socket(pod_uid).await?;
        let request = Request::Exec {
            name: name.to_string(),
            args,
            tty,
            stdin,
            size,
        };
        let pod = pod_uid.to_string();
        let (stream, fds) = tokio::task::spawn_blocking(move || start(&socket, &request, &pod))
            .await
            .map_err(|e| RuntimeError::Protocol(format!("exec start: {e}")))??;
        let mut fds = fds.into_iter();
        let mut next = || {
            fds.next()
                .ok_or_else(|| RuntimeError::Protocol("shim sent too few descriptors".into()))
        };
        let io = |e: std::io::Error| RuntimeError::Protocol(format!("exec stdio: {e}"));
        let session_stream = tokio::net::UnixStream::from_std(stream).map_err(io)?;
        let exit = BufReader::new(session_stream);
        if tty {
            let master = next()?;
            set_nonblocking(&master).map_err(io)?;
            let reader = master.try_clone().map_err(io)?;
            let writer = master.try_clone().map_err(io)?;
            Ok(ExecSession {
                stdin: Some(pipe::Sender::from_owned_fd_unchecked(writer).map_err(io)?),
                stdout: Some(pipe::Receiver::from_owned_fd_unchecked(reader).map_err(io)?),
                stderr: None,
                tty: Some(master),
                exit,
            })
        } else {
            let stdin = match stdin {
                true => Some(pipe::Sender::from_owned_fd(next()?).map_err(io)?),
                false => None,
            };
            let stdout = pipe::Receiver::from_owned_fd(next()?).map_err(io)?;
            let stderr = pipe::Receiver::from_owned_fd(next()?).map_err(io)?;
            Ok(ExecSession {
                stdin,
                stdout: Some(stdout),
                stderr: Some(stderr),
                tty: None,
                exit,
            })
        }
    }
}

/// What one attach may write to: the container's stdin, and with a tty its terminal's size.
pub struct AttachInput {
    pub stdin: pipe::Sender,
    pub resizer: Option<Resizer>,
    /// For the one attach of a `tty` + `stdinOnce` container: how to tell the container its
    /// input ended (closing a pipe does that; a terminal stays open for its output).
    pub end_of_input: Option<EndOfInput>,
}

impl AttachInput {
    /// A stdin pipe, or the pty master of a `tty: true` container (which the shim sends the
    /// same way; only a terminal can be resized).
    fn from_fd(fd: OwnedFd, once: bool) -> std::io::Result<AttachInput> {
        if !nix::unistd::isatty(&fd).unwrap_or(false) {
            return Ok(AttachInput {
                stdin: pipe::Sender::from_owned_fd(fd)?,
                resizer: None,
                end_of_input: None,
            });
        }
        set_nonblocking(&fd)?;
        let resizer = Resizer(fd.try_clone()?);
        let end_of_input = match once {
            true => Some(EndOfInput(fd.try_clone()?)),
            false => None,
        };
        Ok(AttachInput {
            stdin: pipe::Sender::from_owned_fd_unchecked(fd)?,
            resizer: Some(resizer),
            end_of_input,
        })
    }
}

/// Ends a terminal's input as a user at its keyboard would: by typing its end-of-file
/// character (Ctrl-D unless the program set another), so a reader in canonical mode, `cat`
/// or a shell, reads end of file. Runtimes upstream close the terminal here instead, which
/// hangs up the container's session; typing EOF keeps its output flowing until it exits.
pub struct EndOfInput(OwnedFd);

/// Ctrl-D, the end-of-file character of a terminal nobody configured.
const DEFAULT_EOF: u8 = 4;

impl EndOfInput {
    pub fn send(self) {
        // On Linux a pty master reports (and shares) its slave's settings.
        let eof = nix::sys::termios::tcgetattr(&self.0)
            .map(|t| t.control_chars[libc::VEOF])
            .unwrap_or(DEFAULT_EOF);
        let eof = if eof == 0 { DEFAULT_EOF } else { eof };
        // Best effort: a terminal whose container is gone has nobody left to tell.
        let _ = nix::unistd::write(&self.0, &[eof]);
    }
}

impl ShimRuntime {
    /// A writer of the running container's stdin (or terminal) for one attach; `None` when it
    /// has neither (not `stdin: true`, or a `stdin_once` stdin already taken).
    pub async fn attach_stdin(
        &self,
        pod_uid: &str,
        name: &str,
    ) -> Result<Option<AttachInput>, RuntimeError> {
        let socket = self.shim_socket(pod_uid).await?;
        let request = Request::Attach {
            name: name.to_string(),
        };
        let pod = pod_uid.to_string();
        let (_stream, response, fds) =
            tokio::task::spawn_blocking(move || request_with_fds(&socket, &request, &pod))
                .await
                .map_err(|e| RuntimeError::Protocol(format!("attach: {e}")))??;
        match response {
            Response::Attached { fds: n, once } if n == fds.len() => match fds.into_iter().next() {
                Some(fd) => AttachInput::from_fd(fd, once)
                    .map(Some)
                    .map_err(|e| RuntimeError::Protocol(format!("attach stdin: {e}"))),
                None => Ok(None),
            },
            other => Err(RuntimeError::Protocol(format!(
                "unexpected attach answer {other:?}"
            ))),
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFL)?;
    fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )?;
    Ok(())
}

/// Blocking: sends the request and reads the first answer line with its descriptors.
fn request_with_fds(
    socket: &Path,
    request: &Request,
    pod: &str,
) -> Result<(UnixStream, Response, Vec<OwnedFd>), RuntimeError> {
    let io = |op: &'static str| {
        let path = socket.to_path_buf();
        move |source| RuntimeError::Io { op, path, source }
    };
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            RuntimeError::NoShim(pod.to_string())
        }
        _ => io("connect")(e),
    })?;
    let mut line = serde_json::to_vec(request)
        .map_err(|e| RuntimeError::Protocol(format!("encode request: {e}")))?;
    line.push(b'\n');
    std::io::Write::write_all(&mut stream, &line).map_err(io("write"))?;

    let mut answer = Vec::new();
    let mut fds = Vec::new();
    // The descriptors ride on the first bytes of the answer; read byte-wise until the
    // newline so nothing of the later exit line is consumed here.
    while !answer.ends_with(b"\n") {
        let mut byte = [0u8; 1];
        let mut space = nix::cmsg_space!([RawFd; 3]);
        let received = {
            let mut iov = [IoSliceMut::new(&mut byte)];
            let msg = recvmsg::<()>(
                stream.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(|e| io("recvmsg")(e.into()))?;
            for cmsg in msg.cmsgs().map_err(|e| io("recvmsg")(e.into()))? {
                if let ControlMessageOwned::ScmRights(raw) = cmsg {
                    // SAFETY: SCM_RIGHTS just installed these fds in our table; we own them.
                    fds.extend(
                        raw.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
            msg.bytes
        };
        if received == 0 {
            return Err(RuntimeError::Protocol(format!(
                "shim of pod {pod} closed the socket"
            )));
        }
        answer.push(byte[0]);
    }
    match serde_json::from_slice(&answer) {
        Ok(Response::Error { message }) => Err(RuntimeError::Shim {
            pod: pod.to_string(),
            message,
        }),
        Ok(response) => Ok((stream, response, fds)),
        Err(e) => Err(RuntimeError::Protocol(format!("decode exec answer: {e}"))),
    }
}

/// Blocking: starts an exec; returns the connection its exit line will come on.
fn start(
    socket: &Path,
    request: &Request,
    pod: &str,
) -> Result<(UnixStream, Vec<OwnedFd>), RuntimeError> {
    let (stream, response, fds) = request_with_fds(socket, request, pod)?;
    match response {
        Response::ExecStarted { fds: n } if n == fds.len() => {
            stream
                .set_nonblocking(true)
                .map_err(|source| RuntimeError::Io {
                    op: "set nonblocking",
                    path: socket.to_path_buf(),
                    source,
                })?;
            Ok((stream, fds))
        }
        other => Err(RuntimeError::Protocol(format!(
            "unexpected exec answer {other:?} with {} descriptors",
            fds.len()
        ))),
    }
}
