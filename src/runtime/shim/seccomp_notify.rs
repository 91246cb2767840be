//! Execs into a container whose seccomp profile has `SCMP_ACT_NOTIFY` rules, as runc runs
//! them: the exec'd process loads the filter, and the filter's notify descriptor goes to the
//! profile's `listenerPath` (a seccomp agent's unix socket on the host) with the OCI
//! container process state, so the agent can answer the process's notified syscalls.
//!
//! The process cannot reach the listener itself: it already lives in the container's mount
//! (and pid) namespaces when it loads the filter. So it hands the descriptor over a socket
//! pair made for it, and a helper forked from the shim forwards it. A helper, not the shim:
//! libcontainer's tenant build only returns once the process has exec'd its program, and the
//! syscalls it makes until then (closing descriptors, dropping capabilities, `execve`) may be
//! notified ones, which wait for the agent. The pair carries the process's credentials too,
//! which give the helper the process's pid as the runtime sees it.
//!
//! A profile with notify rules but no `listenerPath` is refused before anything starts, with
//! runc's message.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::sys::socket::{
    sendmsg, setsockopt, socketpair, sockopt, AddressFamily, ControlMessage, MsgFlags, SockFlag,
    SockType, UnixAddr,
};
use nix::unistd::{fork, ForkResult, Pid};

/// The name of the one descriptor sent to a listener, as the OCI runtime spec names it.
const SECCOMP_FD_NAME: &str = "seccompFd";
/// The OCI version written into the container process state.
const OCI_VERSION: &str = "1.0.2";
/// How long the helper waits for the process's descriptor, and for the agent to take it.
const HAND_OVER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// runc's own words for a profile it cannot load.
    #[error("seccomp listenerPath is not set")]
    NoListenerPath,
    #[error("seccomp listenerPath {0}: not a usable unix socket path")]
    BadListenerPath(String),
    /// The process hands its descriptor over with `sendmsg`: a notify rule on it would leave
    /// the process waiting for an agent that can never get the descriptor (runc refuses
    /// `write` for the same reason).
    #[error("SCMP_ACT_NOTIFY cannot be used for the {0} syscall")]
    Unsupported(&'static str),
    #[error("{op}: {source}")]
    Sys {
        op: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("the exec'd process did not hand over its seccomp notify descriptor")]
    NoDescriptor,
    #[error("failed to connect to seccomp notify listener path {0}")]
    Connect(String),
    #[error("failed to send the seccomp notify descriptor to the listener at {0}")]
    Send(String),
}

/// Syscalls between loading the filter and handing its descriptor over.
const HAND_OVER_SYSCALLS: [&str; 2] = ["sendmsg", "write"];

/// What the helper reports through its exit code.
const HELPER_OK: i32 = 0;
const HELPER_NO_DESCRIPTOR: i32 = 1;
const HELPER_CONNECT: i32 = 2;
const HELPER_SEND: i32 = 3;

/// Whether `profile` (an OCI `LinuxSeccomp` as JSON) has any notify rule.
pub fn notifies(profile: &serde_json::Value) -> bool {
    profile["defaultAction"] == "SCMP_ACT_NOTIFY"
        || profile["syscalls"]
            .as_array()
            .is_some_and(|rules| rules.iter().any(|r| r["action"] == "SCMP_ACT_NOTIFY"))
}

/// Where an exec's notify descriptor goes, for a profile that has notify rules.
pub struct Route {
    listener: String,
    address: UnixAddr,
    metadata: Option<String>,
}

/// A forked helper waiting for the process's descriptor.
pub struct Forwarding {
    listener: String,
    helper: Pid,
    /// The process's end of the pair: it inherits it; ours closes once it exists.
    process_end: Option<OwnedFd>,
}

impl Route {
    /// The route for an exec under `profile`, or None when it has no notify rule.
    pub fn for_profile(profile: &serde_json::Value) -> Result<Option<Self>, NotifyError> {
        if !notifies(profile) {
            return Ok(None);
        }
        let listener = match profile["listenerPath"].as_str() {
            Some(path) if !path.is_empty() => path.to_string(),
            _ => return Err(NotifyError::NoListenerPath),
        };
        for rule in profile["syscalls"].as_array().into_iter().flatten() {
            if rule["action"] != "SCMP_ACT_NOTIFY" {
                continue;
            }
            for name in rule["names"].as_array().into_iter().flatten() {
                if let Some(used) = HAND_OVER_SYSCALLS.iter().find(|s| name == **s) {
                    return Err(NotifyError::Unsupported(used));
                }
            }
        }
        let address = UnixAddr::new(Path::new(&listener))
            .map_err(|_| NotifyError::BadListenerPath(listener.clone()))?;
        Ok(Some(Self {
            listener,
            address,
            metadata: profile["listenerMetadata"].as_str().map(str::to_string),
        }))
    }

    /// Forks the helper that forwards the descriptor of the process about to be exec'd in
    /// container `container_id` (init `init_pid`, bundle `bundle`).
    pub fn start(
        self,
        container_id: &str,
        init_pid: Option<i32>,
        bundle: &Path,
    ) -> Result<Forwarding, NotifyError> {
        let sys = |op| move |source| NotifyError::Sys { op, source };
        let (shim_end, process_end) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(sys("socketpair"))?;
        // Credentials are attached when the receiver asks for them at send time.
        setsockopt(&shim_end, sockopt::PassCred, &true).map_err(sys("SO_PASSCRED"))?;
        let timeout = nix::sys::time::TimeVal::new(HAND_OVER_TIMEOUT.as_secs() as i64, 0);
        setsockopt(&shim_end, sockopt::ReceiveTimeout, &timeout).map_err(sys("SO_RCVTIMEO"))?;
        let (before_pid, after_pid) =
            state_around_pid(self.metadata.as_deref(), container_id, init_pid, bundle);
        // SAFETY: the shim is single-threaded (see shim/mod.rs), so the child inherits no
        // lock; the child still allocates nothing and only makes syscalls before `_exit`.
        match unsafe { fork() }.map_err(sys("fork"))? {
            ForkResult::Child => {
                drop(process_end);
                let code = helper(
                    shim_end.as_raw_fd(),
                    &self.address,
                    before_pid.as_bytes(),
                    after_pid.as_bytes(),
                );
                // SAFETY: _exit skips destructors and atexit handlers, which belong to the
                // shim this process was forked from.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => Ok(Forwarding {
                listener: self.listener,
                helper: child,
                process_end: Some(process_end),
            }),
        }
    }
}

impl Forwarding {
    /// The descriptor number the new process finds its end of the pair under.
    pub fn process_fd(&self) -> Option<RawFd> {
        self.process_end.as_ref().map(|fd| fd.as_raw_fd())
    }

    /// Waits for the helper, once the process exists (or failed to): the descriptor is with
    /// the agent, or the reason it is not.
    pub fn finish(mut self) -> Result<(), NotifyError> {
        // Only the process holds the other end now: if it died before handing over, the
        // helper reads EOF instead of waiting out its timeout.
        drop(self.process_end.take());
        let status = loop {
            match nix::sys::wait::waitpid(self.helper, None) {
                Err(nix::Error::EINTR) => continue,
                other => break other,
            }
        };
        match status {
            Ok(nix::sys::wait::WaitStatus::Exited(_, HELPER_OK)) => Ok(()),
            Ok(nix::sys::wait::WaitStatus::Exited(_, HELPER_CONNECT)) => {
                Err(NotifyError::Connect(self.listener.clone()))
            }
            Ok(nix::sys::wait::WaitStatus::Exited(_, HELPER_SEND)) => {
                Err(NotifyError::Send(self.listener.clone()))
            }
            Ok(_) => Err(NotifyError::NoDescriptor),
            Err(source) => Err(NotifyError::Sys {
                op: "wait for seccomp notify helper",
                source,
            }),
        }
    }
}

/// In the exec'd process, right after it loaded the filter: sends `notify_fd` over the
/// inherited end `process_fd` and closes both. Raw descriptors: it runs in the cloned
/// process, which owns nothing of the shim's structures.
pub fn hand_over(process_fd: RawFd, notify_fd: RawFd) -> Result<(), String> {
    let fds = [notify_fd];
    let iov = [IoSlice::new(b"n")];
    let sent = sendmsg::<()>(
        process_fd,
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    );
    // SAFETY: both descriptors are this process's own copies (inherited, or just returned by
    // the filter load) and nothing else in it uses them: the program about to be exec'd must
    // not hold them.
    unsafe {
        drop(OwnedFd::from_raw_fd(notify_fd));
        drop(OwnedFd::from_raw_fd(process_fd));
    }
    sent.map(|_| ())
        .map_err(|e| format!("hand the seccomp notify descriptor to the shim: {e}"))
}

/// The helper's work, in the forked child: receive the descriptor and the sender's
/// credentials, connect to the agent, send the state (with the sender's pid between the two
/// halves) and the descriptor. Allocation-free: a test forks it from a threaded process.
fn helper(pair: RawFd, agent: &UnixAddr, before_pid: &[u8], after_pid: &[u8]) -> i32 {
    let Some((notify_fd, pid)) = receive_fd_and_pid(pair) else {
        return HELPER_NO_DESCRIPTOR;
    };
    // SAFETY: plain socket creation; the descriptor is closed by the OwnedFd.
    let raw = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return HELPER_CONNECT;
    }
    // SAFETY: socket() just returned this descriptor; nothing else owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    let timeout = nix::sys::time::TimeVal::new(HAND_OVER_TIMEOUT.as_secs() as i64, 0);
    let _ = setsockopt(&socket, sockopt::SendTimeout, &timeout);
    if nix::sys::socket::connect(socket.as_raw_fd(), agent).is_err() {
        return HELPER_CONNECT;
    }
    let mut digits = [0u8; 12];
    let pid_text = decimal(pid, &mut digits);
    let iov = [
        IoSlice::new(before_pid),
        IoSlice::new(pid_text),
        IoSlice::new(after_pid),
    ];
    match send_with_fd(socket.as_raw_fd(), &iov, notify_fd.as_raw_fd()) {
        true => HELPER_OK,
        false => HELPER_SEND,
    }
}

/// `n` in decimal, in `buf`.
fn decimal(n: i32, buf: &mut [u8; 12]) -> &[u8] {
    let mut at = buf.len();
    let negative = n < 0;
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        buf[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if negative {
        at -= 1;
        buf[at] = b'-';
    }
    &buf[at..]
}

/// Control message space for one descriptor and one `ucred`, aligned as cmsghdr needs.
#[repr(C, align(8))]
struct ControlSpace([u8; 128]);

/// Receives one descriptor and the sender's pid (SCM_RIGHTS, SCM_CREDENTIALS) without
/// allocating.
fn receive_fd_and_pid(pair: RawFd) -> Option<(OwnedFd, i32)> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: byte.len(),
    };
    let mut space = ControlSpace([0; 128]);
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.0.as_mut_ptr().cast();
    msg.msg_controllen = space.0.len() as _;
    // SAFETY: msg points at live buffers of the sizes it states.
    let received = unsafe { libc::recvmsg(pair, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if received <= 0 {
        return None;
    }
    let mut fd = None;
    let mut pid = None;
    // SAFETY: the CMSG_* walk stays within msg_controllen, which the kernel set; each
    // header's data is read only for the type and length it declares.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let header = &*cmsg;
            let data = libc::CMSG_DATA(cmsg);
            if header.cmsg_level == libc::SOL_SOCKET {
                if header.cmsg_type == libc::SCM_RIGHTS
                    && header.cmsg_len as usize >= libc::CMSG_LEN(4) as usize
                {
                    let raw = std::ptr::read_unaligned(data.cast::<RawFd>());
                    // A second descriptor would be unexpected; closing it is all we can do.
                    let owned = OwnedFd::from_raw_fd(raw);
                    if fd.is_none() {
                        fd = Some(owned);
                    }
                } else if header.cmsg_type == libc::SCM_CREDENTIALS
                    && header.cmsg_len as usize
                        >= libc::CMSG_LEN(std::mem::size_of::<libc::ucred>() as u32) as usize
                {
                    let cred = std::ptr::read_unaligned(data.cast::<libc::ucred>());
                    pid = Some(cred.pid);
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Some((fd?, pid?))
}

/// Sends `iov` with `fd` attached, without allocating. Whether all of it went.
fn send_with_fd(socket: RawFd, iov: &[IoSlice], fd: RawFd) -> bool {
    let mut space = ControlSpace([0; 128]);
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call. IoSlice
    // is ABI-compatible with iovec on Unix.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    msg.msg_control = space.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as _;
    // SAFETY: the control buffer holds CMSG_SPACE(4) bytes (checked by its size), so the
    // first header and its data fit.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return false;
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
    }
    let total: usize = iov.iter().map(|s| s.len()).sum();
    // SAFETY: msg describes live buffers.
    let sent = unsafe { libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) };
    // A unix stream socket takes a message this small (far below its buffer) whole.
    sent >= 0 && sent as usize == total
}

/// The OCI `containerProcessState` as the text before and after the process's pid, which
/// only the helper learns.
fn state_around_pid(
    metadata: Option<&str>,
    container_id: &str,
    init_pid: Option<i32>,
    bundle: &Path,
) -> (String, String) {
    let mut state = serde_json::json!({
        "ociVersion": OCI_VERSION,
        "fds": [SECCOMP_FD_NAME],
        "state": {
            "ociVersion": OCI_VERSION,
            "id": container_id,
            "status": "running",
            "bundle": bundle,
        },
    });
    if let Some(metadata) = metadata {
        state["metadata"] = serde_json::json!(metadata);
    }
    if let Some(init_pid) = init_pid {
        state["state"]["pid"] = serde_json::json!(init_pid);
    }
    // `{"pid":` PID `,` + the other fields: the object is never empty.
    let rest = state.to_string();
    ("{\"pid\":".to_string(), format!(",{}", &rest[1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{recvmsg, ControlMessageOwned};
    use std::io::IoSliceMut;
    use std::os::fd::IntoRawFd;
    use std::os::unix::net::UnixListener;

    fn profile(listener: Option<&Path>, names: &[&str]) -> serde_json::Value {
        let mut p = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": names, "action": "SCMP_ACT_NOTIFY"}],
        });
        if let Some(path) = listener {
            p["listenerPath"] = serde_json::json!(path);
            p["listenerMetadata"] = serde_json::json!("probe=1");
        }
        p
    }

    /// What the exec'd process does: hands `notify` over its (inherited) end of the pair.
    fn hand_over_as_the_process(forwarding: &Forwarding, notify: &OwnedFd) {
        let process_fd = forwarding.process_fd().unwrap();
        let own_end =
            nix::unistd::dup(unsafe { std::os::fd::BorrowedFd::borrow_raw(process_fd) }).unwrap();
        let notify = nix::unistd::dup(notify).unwrap();
        hand_over(own_end.into_raw_fd(), notify.into_raw_fd()).unwrap();
    }

    #[test]
    fn a_profile_without_notify_rules_needs_no_route() {
        let plain = serde_json::json!({"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ALLOW"}]});
        assert!(!notifies(&plain));
        assert!(Route::for_profile(&plain).unwrap().is_none());
    }

    #[test]
    fn notify_rules_without_a_listener_are_refused_with_runcs_message() {
        let err = Route::for_profile(&profile(None, &["mkdir"]))
            .err()
            .unwrap();
        assert_eq!(err.to_string(), "seccomp listenerPath is not set");
    }

    #[test]
    fn notifying_the_hand_over_syscall_is_refused() {
        let path = Path::new("/run/agent.sock");
        let err = Route::for_profile(&profile(Some(path), &["mkdir", "sendmsg"]))
            .err()
            .unwrap();
        assert!(err.to_string().contains("sendmsg"), "{err}");
    }

    #[test]
    fn the_descriptor_reaches_the_listener_with_the_container_process_state() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let agent = UnixListener::bind(&socket).unwrap();
        let route = Route::for_profile(&profile(Some(&socket), &["mkdir"]))
            .unwrap()
            .unwrap();
        let forwarding = route.start("c1", Some(4200), Path::new("/b/app")).unwrap();
        // A pipe's read end stands in for the filter's descriptor.
        let (pipe_read, pipe_write) = nix::unistd::pipe().unwrap();
        hand_over_as_the_process(&forwarding, &pipe_read);
        forwarding.finish().unwrap();

        let (conn, _) = agent.accept().unwrap();
        let mut buf = vec![0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .unwrap();
        let fd = msg
            .cmsgs()
            .unwrap()
            .find_map(|c| match c {
                ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                _ => None,
            })
            .expect("a descriptor came with the state");
        let len = msg.bytes;
        let state: serde_json::Value = serde_json::from_slice(&buf[..len]).unwrap();
        assert_eq!(state["fds"], serde_json::json!(["seccompFd"]));
        // The sender here is the test process itself.
        assert_eq!(state["pid"], std::process::id());
        assert_eq!(state["metadata"], "probe=1");
        assert_eq!(state["state"]["id"], "c1");
        assert_eq!(state["state"]["pid"], 4200);
        assert_eq!(state["state"]["status"], "running");
        assert_eq!(state["state"]["bundle"], "/b/app");
        // It is the very descriptor handed over: what goes into the pipe comes out of it.
        // SAFETY: SCM_RIGHTS installed it in this process for us alone.
        let received = unsafe { OwnedFd::from_raw_fd(fd) };
        nix::unistd::write(&pipe_write, b"x").unwrap();
        let mut one = [0u8; 1];
        assert_eq!(nix::unistd::read(&received, &mut one).unwrap(), 1);
    }

    #[test]
    fn a_process_that_never_hands_over_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let _agent = UnixListener::bind(&socket).unwrap();
        let route = Route::for_profile(&profile(Some(&socket), &["mkdir"]))
            .unwrap()
            .unwrap();
        let forwarding = route.start("c1", None, Path::new("/b")).unwrap();
        let err = forwarding.finish().err().unwrap();
        assert!(matches!(err, NotifyError::NoDescriptor), "{err}");
    }

    #[test]
    fn a_listener_that_is_not_there_fails_the_exec() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("absent.sock");
        let route = Route::for_profile(&profile(Some(&socket), &["mkdir"]))
            .unwrap()
            .unwrap();
        let forwarding = route.start("c1", None, Path::new("/b")).unwrap();
        let (pipe_read, _pipe_write) = nix::unistd::pipe().unwrap();
        hand_over_as_the_process(&forwarding, &pipe_read);
        let err = forwarding.finish().err().unwrap();
        assert!(
            err.to_string()
                .starts_with("failed to connect to seccomp notify listener path"),
            "{err}"
        );
    }

    #[test]
    fn pids_are_written_in_decimal() {
        let mut buf = [0u8; 12];
        assert_eq!(decimal(4242, &mut buf), b"4242");
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(i32::MAX, &mut buf), b"2147483647");
    }
}
