//! One container's lifecycle inside the shim: create (rootfs, OCI bundle, stdio pipes,
//! libcontainer), start, signal, reap, remove.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container as LibContainer;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::state::ContainerRecord;
use super::{io_err, sys_err, ShimError};
use crate::runtime::cgroups;
use crate::runtime::layout::{PodPaths, CONTAINER_ID_LEN};
use crate::runtime::logs::{LineSplitter, LogWriter, Stream};
use crate::runtime::seccomp_bpf::{self, PrecompiledSeccomp};
use crate::runtime::spec::{build_spec, resolve_seccomp, PodNamespaces};
use crate::runtime::types::{
    ContainerSpec, ContainerState, ContainerStatus, RootfsSpec, SeccompProfile,
};

/// A container created from a spec without its seccomp profile: the executor that loads the
/// precompiled filter, `config.json`, and the full spec to put back there.
type Restore = (PrecompiledSeccomp, PathBuf, Vec<u8>);

/// Puts the full spec back into `config.json` once the container exists. Execs would run
/// without the profile otherwise, so a container whose spec cannot be restored is removed.
fn restore_full_spec(
    container: &mut LibContainer,
    restore: &Option<Restore>,
) -> Result<(), ShimError> {
    let Some((_, config, full)) = restore else {
        return Ok(());
    };
    if let Err(e) = std::fs::write(config, full) {
        let pid = container.pid().map(|p| p.as_raw());
        let _ = container.delete(true);
        if let Some(pid) = pid {
            let _ = waitpid(Pid::from_raw(pid), None);
        }
        return Err(io_err("write", config)(e));
    }
    Ok(())
}

/// The read end of a container's stdout or stderr.
pub struct LogPipe {
    pub fd: OwnedFd,
    pub stream: Stream,
    splitter: LineSplitter,
}

/// A container the shim owns.
pub struct Container {
    pub record: ContainerRecord,
    /// Readable once the container's init exits; `None` when it is not running.
    pub pidfd: Option<OwnedFd>,
    pub pipes: Vec<LogPipe>,
    /// `None` for containers loaded from a previous shim's state file.
    log: Option<LogWriter>,
    /// The write end of the container's stdin pipe (`stdin: true`), handed to attaches;
    /// given away for good by the first attach of a `stdin_once` container.
    stdin: Option<OwnedFd>,
    stdin_once: bool,
    /// A `tty: true` container's pty master (a second descriptor of the one its log pipe
    /// reads), handed to attaches for input and resizes.
    tty: Option<OwnedFd>,
    /// Whether the terminal of a `stdin_once` container went to its one attach already.
    tty_input_given: bool,
}

/// What creating the container's process gives the shim to keep.
struct Created {
    id: String,
    pid: i32,
    pidfd: OwnedFd,
    pipes: Vec<LogPipe>,
    stdin: Option<OwnedFd>,
    tty: Option<OwnedFd>,
}

const OOM_SCORE_ADJ: &str = "/proc/self/oom_score_adj";

/// The oom_score_adj the shim can give a container that wants `wanted`. Going below the shim's
/// own value needs CAP_SYS_RESOURCE, which a confined host (berth itself in a container, a
/// restricted service unit) may withhold: the container then keeps the shim's own value, the
/// lowest it may have, rather than failing to start.
fn settable_oom_score_adj(wanted: i32) -> i32 {
    let Some(own) = std::fs::read_to_string(OOM_SCORE_ADJ)
        .ok()
        .and_then(|v| v.trim().parse::<i32>().ok())
    else {
        return wanted;
    };
    if wanted >= own {
        return wanted;
    }
    // Only the kernel knows (capabilities, oom_score_adj_min): try, then put ours back.
    if std::fs::write(OOM_SCORE_ADJ, wanted.to_string()).is_ok() {
        let _ = std::fs::write(OOM_SCORE_ADJ, own.to_string());
        wanted
    } else {
        own
    }
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

fn new_id() -> String {
    format!(
        "{:0width$x}",
        rand::random::<u64>(),
        width = CONTAINER_ID_LEN
    )
}

pub(super) fn pidfd_open(pid: i32) -> Result<OwnedFd, ShimError> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is shared.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(ShimError::Sys {
            op: "pidfd_open",
            source: nix::Error::last(),
        });
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Signals a process through its pidfd (no pid-reuse race). A process that is already gone
/// is not an error: the caller wanted it dead and it is.
pub(super) fn pidfd_signal(pidfd: &OwnedFd, signal: i32) -> Result<(), ShimError> {
    // SAFETY: pidfd_send_signal reads only its scalar arguments; the siginfo pointer is null.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    match rc {
        0 => Ok(()),
        _ => match nix::Error::last() {
            nix::Error::ESRCH => Ok(()),
            source => Err(ShimError::Sys {
                op: "pidfd_send_signal",
                source,
            }),
        },
    }
}

pub(super) fn set_nonblocking(fd: &OwnedFd) -> Result<(), ShimError> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(sys_err("fcntl"))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(sys_err("fcntl"))?;
    Ok(())
}

fn mount_overlay(layout: &PodPaths, name: &str, lower: &[PathBuf]) -> Result<PathBuf, ShimError> {
    let base = layout.overlay(name);
    let (upper, work, root) = (base.join("upper"), base.join("work"), base.join("root"));
    for dir in [&upper, &work, &root] {
        std::fs::create_dir_all(dir).map_err(io_err("create dir", dir))?;
    }
    // overlayfs lists the top layer first; the spec gives layers lowest first.
    let lowerdir: Vec<String> = lower
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowerdir.join(":"),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        &root,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(sys_err("mount overlay"))?;
    Ok(root)
}

fn remove_dir_if_exists(path: &Path) -> Result<(), ShimError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

impl Container {
    /// A container known only from the state file of a previous shim.
    pub fn from_record(record: ContainerRecord) -> Self {
        Self {
            record,
            pidfd: None,
            pipes: Vec::new(),
            log: None,
            stdin: None,
            stdin_once: false,
            tty: None,
            tty_input_given: false,
        }
    }

    /// Creates the container: its init process exists, waiting for [`Container::start`].
    pub fn create(
        layout: &PodPaths,
        pod: &PodNamespaces,
        cgroup_namespace: bool,
        spec: &ContainerSpec,
    ) -> Result<Self, ShimError> {
        // Resolve the profile first: failing here leaves nothing to clean up.
        let seccomp = resolve_seccomp(spec)?;
        let precompiled = match (&spec.seccomp, &seccomp, layout.seccomp_cache()) {
            (SeccompProfile::RuntimeDefault, Some(profile), Some(cache)) => {
                match seccomp_bpf::cached(&cache, profile) {
                    Ok(program) => Some(program),
                    Err(e) => {
                        // Still enforced: libcontainer compiles it in the container instead.
                        eprintln!("berth shim: seccomp profile not precompiled: {e}");
                        None
                    }
                }
            }
            _ => None,
        };
        tracing::debug!(container = %spec.name, "seccomp profile ready");
        let log = LogWriter::open(&spec.log_path, spec.log_max_bytes, spec.log_max_files)?;
        let (rootfs, overlay_root) = match &spec.rootfs {
            RootfsSpec::Dir(path) => (path.clone(), None),
            RootfsSpec::Overlay { lower } => {
                let root = mount_overlay(layout, &spec.name, lower)?;
                (root.clone(), Some(root))
            }
        };
        let result = Self::create_with_rootfs(
            layout,
            pod,
            cgroup_namespace,
            spec,
            &rootfs,
            seccomp,
            precompiled,
        );
        match result {
            Ok(Created {
                id,
                pid,
                pidfd,
                pipes,
                stdin,
                tty,
            }) => {
                let state = ContainerState {
                    name: spec.name.clone(),
                    id,
                    pid: Some(pid),
                    status: ContainerStatus::Created,
                    exit_code: None,
                    created_at: now(),
                    started_at: None,
                    finished_at: None,
                    oom_killed: false,
                };
                let record = ContainerRecord {
                    state,
                    cgroup_path: spec.cgroup_path.clone(),
                    overlay_root,
                };
                Ok(Self {
                    record,
                    pidfd: Some(pidfd),
                    pipes,
                    log: Some(log),
                    stdin,
                    stdin_once: spec.stdin_once,
                    tty,
                    tty_input_given: false,
                })
            }
            Err(e) => {
                if overlay_root.is_some() {
                    let _ = Self::unmount_overlay(layout, &spec.name);
                }
                let _ = remove_dir_if_exists(&layout.bundle(&spec.name));
                Err(e)
            }
        }
    }

    fn create_with_rootfs(
        layout: &PodPaths,
        pod: &PodNamespaces,
        cgroup_namespace: bool,
        spec: &ContainerSpec,
        rootfs: &Path,
        seccomp: Option<serde_json::Value>,
        precompiled: Option<seccomp_bpf::Program>,
    ) -> Result<Created, ShimError> {
        let settable = spec.oom_score_adj.map(settable_oom_score_adj);
        let adjusted;
        let spec = if settable != spec.oom_score_adj {
            adjusted = ContainerSpec {
                oom_score_adj: settable,
                ..spec.clone()
            };
            &adjusted
        } else {
            spec
        };
        // With a precompiled filter the init process starts from a spec without the profile
        // (see seccomp_bpf), so the spec is built without it, the few hundred syscall rules are
        // not converted and serialized for nothing, and the profile is only added to the full
        // spec config.json gets back once the container exists: execs into it read their
        // seccomp profile and capabilities from there.
        let (in_spec, added_later) = match precompiled {
            Some(_) => (None, seccomp),
            None => (seccomp, None),
        };
        let oci = build_spec(spec, rootfs, pod, in_spec, cgroup_namespace)?;
        let bundle = layout.bundle(&spec.name);
        std::fs::create_dir_all(&bundle).map_err(io_err("create dir", &bundle))?;
        let config = bundle.join("config.json");
        let state_err = |source| ShimError::State {
            path: config.clone(),
            source,
        };
        let mut init = None;
        let json = match precompiled {
            Some(program) => {
                let mut value = serde_json::to_value(&oci).map_err(state_err)?;
                let mut full = value.clone();
                if let Some(profile) = added_later {
                    // Indexing makes `linux` if it were missing: the profile is never dropped.
                    full["linux"]["seccomp"] = profile;
                }
                if let Some(executor) = seccomp_bpf::init_spec(&mut value, program) {
                    init = Some((executor, value.to_string()));
                }
                serde_json::to_vec(&full).map_err(state_err)?
            }
            None => serde_json::to_vec(&oci).map_err(state_err)?,
        };
        let to_write = match &init {
            Some((_, init_json)) => init_json.as_bytes(),
            None => json.as_slice(),
        };
        std::fs::write(&config, to_write).map_err(io_err("write", &config))?;
        tracing::debug!(container = %spec.name, "bundle written");
        let restore = match init {
            Some((executor, _)) => Some((executor, config.clone(), json)),
            None => None,
        };

        let id = new_id();
        if spec.tty {
            return Self::create_with_tty(layout, &bundle, id, restore);
        }
        // The container must always get a stdin, or it inherits the shim's.
        let (stdin, stdin_writer): (OwnedFd, Option<OwnedFd>) = if spec.stdin {
            let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys_err("pipe"))?;
            (read, Some(write))
        } else {
            let null = File::open("/dev/null").map_err(io_err("open", "/dev/null"))?;
            (null.into(), None)
        };
        let (out_read, out_write) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys_err("pipe"))?;
        let (err_read, err_write) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys_err("pipe"))?;
        set_nonblocking(&out_read)?;
        set_nonblocking(&err_read)?;

        let containers_root = layout.containers();
        std::fs::create_dir_all(&containers_root)
            .map_err(io_err("create dir", &containers_root))?;
        // libcontainer applies oomScoreAdj by writing the caller's own value before cloning:
        // put the shim's back afterwards, or the shim would be killed as eagerly as its pod.
        let own_oom_score_adj = std::fs::read_to_string(OOM_SCORE_ADJ).ok();
        // The builder owns the write ends and drops them once the init process holds its copies,
        // so the pipes reach EOF exactly when the container's processes are gone.
        let built = ContainerBuilder::new(id.clone(), SyscallType::default())
            .with_root_path(&containers_root)
            .map(|builder| {
                let builder = builder
                    .with_stdin(stdin)
                    .with_stdout(out_write)
                    .with_stderr(err_write);
                match &restore {
                    Some((executor, _, _)) => builder.with_executor(executor.clone()),
                    None => builder,
                }
            })
            .and_then(|builder| builder.validate_id())
            .and_then(|builder| {
                builder
                    .as_init(&bundle)
                    .with_systemd(false)
                    .with_detach(true)
                    .build()
            });
        if let Some(value) = own_oom_score_adj {
            let _ = std::fs::write(OOM_SCORE_ADJ, value.trim());
        }
        let mut container = built?;
        tracing::debug!(%id, "libcontainer created the container");
        restore_full_spec(&mut container, &restore)?;
        // libcontainer speaks its own nix version's Pid: carry the raw number.
        let pid = container.pid().map(|p| p.as_raw());
        let no_pid = || ShimError::Sys {
            op: "find container pid",
            source: nix::Error::ESRCH,
        };
        let (pid, pidfd) = match pid.ok_or_else(no_pid).and_then(|p| Ok((p, pidfd_open(p)?))) {
            Ok(found) => found,
            Err(e) => {
                // Without a pidfd the shim could never reap it: do not leave it behind.
                let mut container = container;
                let _ = container.delete(true);
                if let Some(pid) = pid {
                    let _ = waitpid(Pid::from_raw(pid), None);
                }
                return Err(e);
            }
        };
        let pipes = vec![
            LogPipe {
                fd: out_read,
                stream: Stream::Stdout,
                splitter: LineSplitter::default(),
            },
            LogPipe {
                fd: err_read,
                stream: Stream::Stderr,
                splitter: LineSplitter::default(),
            },
        ];
        Ok(Created {
            id,
            pid,
            pidfd,
            pipes,
            stdin: stdin_writer,
            tty: None,
        })
    }

    /// A `tty: true` container: libcontainer makes the pty inside the container (so `tty`
    /// names a /dev/pts device there and it is the controlling terminal) and sends the master
    /// over a console socket, as `runc create --console-socket` does. Its output is one
    /// stream, logged as stdout, as upstream's runtimes log a tty.
    fn create_with_tty(
        layout: &PodPaths,
        bundle: &Path,
        id: String,
        restore: Option<Restore>,
    ) -> Result<Created, ShimError> {
        // Short: the socket path must stay under the 108-byte limit.
        let socket_path = layout.scratch(&format!("t{}.sock", &id[..8]));
        let _cleanup = super::interactive::RemoveOnDrop(vec![socket_path.clone()]);
        let _ = std::fs::remove_file(&socket_path);
        let listener = std::os::unix::net::UnixListener::bind(&socket_path)
            .map_err(io_err("bind", &socket_path))?;
        let null = || File::open("/dev/null").map_err(io_err("open", "/dev/null"));
        let (stdin, stdout, stderr) = (null()?, null()?, null()?);
        let containers_root = layout.containers();
        std::fs::create_dir_all(&containers_root)
            .map_err(io_err("create dir", &containers_root))?;
        let own_oom_score_adj = std::fs::read_to_string(OOM_SCORE_ADJ).ok();
        let built = ContainerBuilder::new(id.clone(), SyscallType::default())
            .with_root_path(&containers_root)
            .map(|builder| {
                let builder = builder
                    .with_console_socket(Some(&socket_path))
                    .with_stdin(stdin)
                    .with_stdout(stdout)
                    .with_stderr(stderr);
                match &restore {
                    Some((executor, _, _)) => builder.with_executor(executor.clone()),
                    None => builder,
                }
            })
            .and_then(|builder| builder.validate_id())
            .and_then(|builder| {
                builder
                    .as_init(bundle)
                    .with_systemd(false)
                    .with_detach(true)
                    .build()
            });
        if let Some(value) = own_oom_score_adj {
            let _ = std::fs::write(OOM_SCORE_ADJ, value.trim());
        }
        let mut container = built?;
        restore_full_spec(&mut container, &restore)?;
        super::interactive::remove_console_links(&containers_root.join(&id), &socket_path);
        let pid = container.pid().map(|p| p.as_raw());
        let opened = pid
            .ok_or(ShimError::Sys {
                op: "find container pid",
                source: nix::Error::ESRCH,
            })
            .and_then(|p| {
                let pidfd = pidfd_open(p)?;
                let master = super::interactive::receive_pty_master(&listener, &socket_path)?;
                set_nonblocking(&master)?;
                let for_attach = master
                    .try_clone()
                    .map_err(io_err("dup pty master", &socket_path))?;
                Ok((p, pidfd, master, for_attach))
            });
        let (pid, pidfd, master, for_attach) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                let _ = container.delete(true);
                if let Some(pid) = pid {
                    let _ = waitpid(Pid::from_raw(pid), None);
                }
                return Err(e);
            }
        };
        Ok(Created {
            id,
            pid,
            pidfd,
            pipes: vec![LogPipe {
                fd: master,
                stream: Stream::Stdout,
                splitter: LineSplitter::default(),
            }],
            stdin: None,
            tty: Some(for_attach),
        })
    }

    /// A writer for the container's stdin, for one attach: a duplicate of the shim's, or for
    /// `stdin_once` the shim's own (so the container sees end of file when the attach ends).
    /// `None` when the container has no stdin or a once-only stdin was already taken. True
    /// with the pty master of a `stdin_once` terminal: that attach must end its input itself.
    pub fn stdin_for_attach(&mut self) -> Result<(Option<OwnedFd>, bool), ShimError> {
        if self.record.state.status == ContainerStatus::Exited {
            return Ok((None, false));
        }
        if let Some(master) = &self.tty {
            if self.stdin_once && self.tty_input_given {
                return Ok((None, false));
            }
            // Every attach of a tty writes to and resizes the same terminal; with
            // `stdin_once`, only the first writes.
            let fd = master.try_clone().map_err(io_err(
                "dup pty master",
                PathBuf::from(&self.record.state.name),
            ))?;
            self.tty_input_given = self.stdin_once;
            return Ok((Some(fd), self.stdin_once));
        }
        if self.stdin_once {
            return Ok((self.stdin.take(), false));
        }
        match &self.stdin {
            Some(fd) => fd
                .try_clone()
                .map(|fd| (Some(fd), false))
                .map_err(io_err("dup stdin", PathBuf::from(&self.record.state.name))),
            None => Ok((None, false)),
        }
    }

    fn lib_container(&self, paths: &PodPaths) -> Result<LibContainer, ShimError> {
        Ok(LibContainer::load(
            paths.container_state(&self.record.state.id),
        )?)
    }

    pub fn start(&mut self, paths: &PodPaths) -> Result<(), ShimError> {
        if self.record.state.status != ContainerStatus::Created {
            return Err(self.wrong_status());
        }
        self.lib_container(paths)?.start()?;
        self.record.state.status = ContainerStatus::Running;
        self.record.state.started_at = Some(now());
        Ok(())
    }

    fn wrong_status(&self) -> ShimError {
        let status = match self.record.state.status {
            ContainerStatus::Created => "created",
            ContainerStatus::Running => "running",
            ContainerStatus::Exited => "exited",
        };
        ShimError::WrongStatus {
            name: self.record.state.name.clone(),
            status,
        }
    }

    /// Signals the container's init through its pidfd (no pid-reuse race). Signalling an
    /// exited container is a no-op: the caller wanted it dead and it is.
    pub fn signal(&self, signal: i32) -> Result<(), ShimError> {
        match &self.pidfd {
            Some(pidfd) => pidfd_signal(pidfd, signal),
            None => Ok(()),
        }
    }

    /// Called when the pidfd is readable (or to wait for it when `block`): reaps the init
    /// process and records how it ended. Returns whether it has exited.
    pub fn reap(&mut self, block: bool) -> Result<bool, ShimError> {
        let Some(pid) = self.record.state.pid else {
            return Ok(true);
        };
        let flags = if block {
            None
        } else {
            Some(WaitPidFlag::WNOHANG)
        };
        let code = match waitpid(Pid::from_raw(pid), flags) {
            Ok(WaitStatus::Exited(_, code)) => code,
            Ok(WaitStatus::Signaled(_, signal, _)) => 128 + signal as i32,
            Ok(_) => return Ok(false),
            // Not our child any more or otherwise unwaitable: the exit status is lost, but the
            // container is gone and must not be polled again.
            Err(_) => 255,
        };
        let state = &mut self.record.state;
        state.exit_code = Some(code);
        state.status = ContainerStatus::Exited;
        state.finished_at = Some(now());
        state.pid = None;
        // The cgroup still exists (it goes with remove), so its OOM counter is still readable.
        if cgroups::oom_kill_count(&self.record.cgroup_path).unwrap_or(0) > 0 {
            state.oom_killed = true;
        }
        self.pidfd = None;
        self.stdin = None;
        self.tty = None;
        Ok(true)
    }

    /// Moves whatever the pipe at `index` holds into the log. Returns false at EOF, when the
    /// pipe has been closed and dropped.
    pub fn pump_log(&mut self, index: usize) -> Result<bool, ShimError> {
        let mut buf = [0u8; 16 * 1024];
        let Some(pipe) = self.pipes.get_mut(index) else {
            return Ok(false);
        };
        let mut entries: Vec<(Vec<u8>, bool)> = Vec::new();
        let mut eof = false;
        // A bounded number of reads per wake-up, so one chatty container cannot starve the
        // rest of the pod; poll reports the pipe again if more is waiting.
        for _ in 0..16 {
            match nix::unistd::read(&pipe.fd, &mut buf) {
                // A pty master reads EIO once the last process holding its slave is gone:
                // that is its end of file.
                Ok(0) | Err(nix::Error::EIO) => {
                    eof = true;
                    break;
                }
                Ok(n) => pipe
                    .splitter
                    .push(&buf[..n], |c, p| entries.push((c.to_vec(), p))),
                Err(nix::Error::EAGAIN) => break,
                Err(nix::Error::EINTR) => continue,
                Err(source) => {
                    self.pipes.remove(index);
                    return Err(ShimError::Sys {
                        op: "read container pipe",
                        source,
                    });
                }
            }
        }
        if eof {
            pipe.splitter.finish(|c, p| entries.push((c.to_vec(), p)));
        }
        let stream = pipe.stream;
        if eof {
            self.pipes.remove(index);
        }
        let time = jiff::Timestamp::now();
        if let Some(log) = &mut self.log {
            for (content, partial) in entries {
                // The pipe keeps being drained even when the log cannot be written (full
                // disk): a container blocked on, or killed by, its stdout is worse than a gap.
                log.write_entry(time, stream, partial, &content)?;
            }
        }
        Ok(!eof)
    }

    /// Moves what the pipes still hold into the log and closes them (before removal).
    pub fn drain_logs(&mut self) {
        // Highest index first: pump_log may remove the pipe it read.
        for index in (0..self.pipes.len()).rev() {
            // A broken log must not block removal.
            let _ = self.pump_log(index);
        }
        self.pipes.clear();
    }

    /// Kills (if needed), reaps and deletes the container with its bundle and rootfs mount.
    pub fn remove(mut self, layout: &PodPaths) -> Result<(), ShimError> {
        if self.record.state.status != ContainerStatus::Exited {
            self.signal(libc::SIGKILL)?;
            self.reap(true)?;
        }
        self.drain_logs();
        let name = self.record.state.name.clone();
        // A container of a shim from before run dirs has its state in the pod's dir: a shim
        // started since finds none in its run dir, and the pod's removal takes the old one.
        let state_dir = layout.container_state(&self.record.state.id);
        if state_dir.exists() {
            self.lib_container(layout)?.delete(true)?;
        }
        // delete() removes the container's cgroup; on v1 a hierarchy it did not know may keep
        // the directory, so sweep it too.
        let _ = cgroups::remove_tree(&self.record.cgroup_path);
        if self.record.overlay_root.is_some() {
            Self::unmount_overlay(layout, &name)?;
        }
        remove_dir_if_exists(&layout.bundle(&name))
    }

    fn unmount_overlay(layout: &PodPaths, name: &str) -> Result<(), ShimError> {
        let base = layout.overlay(name);
        let root = base.join("root");
        match umount2(&root, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(source) => {
                return Err(ShimError::Sys {
                    op: "umount overlay",
                    source,
                })
            }
        }
        remove_dir_if_exists(&base)
    }

    pub fn pipe_fds(&self) -> impl Iterator<Item = (usize, std::os::fd::BorrowedFd<'_>)> {
        self.pipes
            .iter()
            .enumerate()
            .map(|(i, p)| (i, p.fd.as_fd()))
    }
}
