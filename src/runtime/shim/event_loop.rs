//! The shim's setup (pod namespaces, socket) and its single poll loop.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, unshare, CloneFlags};

use super::container::Container;
use super::daemonize::ReadyPipe;
use super::exec::ExecRun;
use super::interactive::{send_with_fds, Session};
use super::move_warmer::MoveWarmer;
use super::state::StateFile;
use super::{io_err, sys_err, ShimError};
use crate::runtime::cgroups::{self, CgroupMode};
use crate::runtime::layout::{PodPaths, POD_CONFIG_NAME};
use crate::runtime::protocol::{Request, Response};
use crate::runtime::spec::PodNamespaces;
use crate::runtime::types::{ContainerStatus, PodShimConfig, PodState};

/// The shim's own leaf below the pod's cgroup parent.
pub const SHIM_CGROUP: &str = "shim";
/// A client that does not read its response within this time is dropped, so one stuck agent
/// connection cannot stall the pod.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Larger unterminated input is not a request; the client is dropped.
const MAX_REQUEST_BYTES: usize = 4 << 20;

/// How long the shim stays quiet after a set-up before it hands that set-up's memory back. A
/// pod's containers are created and started in a burst: releasing after each request would
/// make the next one fault the same code back in, and would put the release (a walk of the
/// shim's page tables) between a container's start and the shim reading its first output.
const RELEASE_AFTER_QUIET: Duration = Duration::from_millis(500);

struct Client {
    /// Stable across removals of other clients, unlike the index: deferred answers use it.
    id: u64,
    stream: UnixStream,
    buf: Vec<u8>,
    /// Subscribed with `Watch`: told about every container exit.
    watching: bool,
}

struct Shim {
    paths: PodPaths,
    config: PodShimConfig,
    pod_namespaces: PodNamespaces,
    cgroup_namespace: bool,
    /// Gets the cgroup move of each container create and exec under way early.
    move_warmer: Option<MoveWarmer>,
    listener: UnixListener,
    clients: Vec<Client>,
    containers: Vec<Container>,
    execs: Vec<ExecRun>,
    sessions: Vec<Session>,
    next_client_id: u64,
    shutting_down: bool,
    /// A request ran a container's or an exec's set-up: its memory goes back to the kernel
    /// once the loop is back at the top, see [`Shim::release_set_up_memory`].
    set_up_ran: bool,
    /// A container was set up: the code that did it is not needed again for long. Execs
    /// (probes, every few seconds) leave the code mapped: they would only fault it back in.
    container_set_up: bool,
    /// When the set-up memory goes back: [`RELEASE_AFTER_QUIET`] after the last set-up.
    release_due: Option<Instant>,
}

/// What woke the loop up.
enum Event {
    Accept,
    Client(usize),
    Pipe(usize, usize),
    Exit(usize),
    ExecPipe(usize, usize),
    ExecExit(usize),
    SessionExit(usize),
}

/// Requests whose handling goes deep (libcontainer) or allocates much that is short-lived.
fn runs_set_up(request: &Request) -> bool {
    matches!(
        request,
        Request::CreateContainer { .. }
            | Request::StartContainer { .. }
            | Request::RemoveContainer { .. }
            | Request::ExecSync { .. }
            | Request::Exec { .. }
    )
}

pub fn run(dir: &Path, ready: Option<ReadyPipe>) -> Result<(), ShimError> {
    let shim = match Shim::setup(dir) {
        Ok(shim) => shim,
        Err(e) => {
            if let Some(ready) = ready {
                ready.report(Err(e.to_string()));
            }
            return Err(e);
        }
    };
    if let Some(ready) = ready {
        ready.report(Ok(()));
    }
    shim.serve()
}

impl Shim {
    fn setup(dir: &Path) -> Result<Self, ShimError> {
        let dir = std::fs::canonicalize(dir).map_err(io_err("resolve", dir))?;
        let config_path = dir.join(POD_CONFIG_NAME);
        let bytes = std::fs::read(&config_path).map_err(io_err("read", &config_path))?;
        let config: PodShimConfig =
            serde_json::from_slice(&bytes).map_err(|source| ShimError::PodConfig {
                path: config_path.clone(),
                source,
            })?;

        // Hold the pod's namespaces: containers inherit the network namespace and join IPC and
        // UTS through /proc/<shim>/ns, so they share them for as long as the shim lives.
        if let Some(netns) = &config.netns_path {
            let file = std::fs::File::open(netns).map_err(io_err("open", netns))?;
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(sys_err("setns net"))?;
        }
        unshare(CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS)
            .map_err(sys_err("unshare ipc+uts"))?;
        if !config.hostname.is_empty() {
            nix::unistd::sethostname(&config.hostname).map_err(sys_err("sethostname"))?;
        }
        // Leave the daemon's cgroup: a service manager stopping the daemon kills its whole
        // cgroup, and the shim must outlive the daemon. Its own leaf also charges its memory to
        // the pod (v2 allows processes only in leaves, hence `shim` below the pod's cgroup).
        let shim_cgroup = cgroups::container_cgroup_path(&config.cgroup_parent, SHIM_CGROUP);
        for (dir, e) in cgroups::join(&shim_cgroup).unwrap_or_default() {
            eprintln!("berth shim: could not join cgroup {}: {e}", dir.display());
        }
        let move_warmer = MoveWarmer::open(&shim_cgroup);
        let pid = std::process::id();
        let pod_namespaces = PodNamespaces {
            ipc: Some(PathBuf::from(format!("/proc/{pid}/ns/ipc"))),
            uts: Some(PathBuf::from(format!("/proc/{pid}/ns/uts"))),
        };
        let cgroup_namespace = cgroups::detect()
            .map(|m| m == CgroupMode::V2)
            .unwrap_or(false);

        let paths = PodPaths::new(&dir, config.run_dir.as_deref());
        paths.check_socket_room()?;
        // The runtime made it; without it (its server stopped and its share removed while this
        // shim was starting) the shim ends rather than leave a share that no server cleans.
        if !paths.run.is_dir() {
            return Err(io_err("find run dir", &paths.run)(std::io::Error::from(
                std::io::ErrorKind::NotFound,
            )));
        }
        let socket = paths.socket();
        match std::fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove stale", &socket)(e)),
        }
        let listener = UnixListener::bind(&socket).map_err(io_err("bind", &socket))?;
        listener
            .set_nonblocking(true)
            .map_err(io_err("set nonblocking", &socket))?;

        let pid_file = paths.pid_file();
        std::fs::write(&pid_file, pid.to_string()).map_err(io_err("write", &pid_file))?;

        let containers = StateFile::load(&dir)?
            .containers
            .into_iter()
            .map(Container::from_record)
            .collect();
        // Do not pin whatever directory the agent started us in.
        std::env::set_current_dir("/").map_err(io_err("chdir", "/"))?;
        Ok(Self {
            paths,
            config,
            pod_namespaces,
            cgroup_namespace,
            move_warmer,
            listener,
            clients: Vec::new(),
            containers,
            execs: Vec::new(),
            sessions: Vec::new(),
            next_client_id: 0,
            shutting_down: false,
            set_up_ran: true,
            container_set_up: true,
            release_due: Some(Instant::now() + RELEASE_AFTER_QUIET),
        })
    }

    fn serve(mut self) -> Result<(), ShimError> {
        while !self.shutting_down {
            let events = self.wait()?;
            let now = Instant::now();
            for exec in &mut self.execs {
                exec.enforce_deadline(now);
            }
            for event in events {
                // One failed event (a full disk, a vanished pipe) must not take the pod down:
                // the shim is the only one who can still reap and report its containers.
                if let Err(e) = self.handle(event) {
                    eprintln!("berth shim: {e}");
                }
            }
            self.kill_orphaned_sessions();
            self.reap_strays();
            if self.release_due.is_some_and(|due| due <= Instant::now()) {
                self.release_due = None;
                self.release_set_up_memory();
            }
        }
        let _ = std::fs::remove_file(self.paths.socket());
        let _ = std::fs::remove_file(self.paths.pid_file());
        // The pod is gone: so is what described it at run time (a pod config from before run
        // dirs has none of its own, and the agent removes the pod's dir).
        if self.paths.run != self.paths.dir {
            let _ = std::fs::remove_dir_all(&self.paths.run);
        }
        Ok(())
    }

    /// Creating, starting and exec'ing parse specs and run libcontainer's set-up: short-lived
    /// heap, a stack many frames deeper than the loop ever goes again, and code the loop never
    /// runs. The shim lives as long as its pod, so all three go back to the kernel, from the
    /// top of the loop where nothing below is in use.
    fn release_set_up_memory(&mut self) {
        if std::mem::take(&mut self.set_up_ran) {
            crate::runtime::memory::return_free_heap();
            crate::runtime::memory::return_unused_stack();
        }
        if std::mem::take(&mut self.container_set_up) {
            crate::runtime::memory::return_unused_code();
        }
    }

    /// Reaps children that are neither a container nor an exec: libcontainer's helpers, or the
    /// init of a container whose creation failed. Looks without reaping first, so exit codes
    /// of our own containers stay for their pidfd events; a stray behind one of ours is reaped
    /// on a later turn, once ours has been.
    fn reap_strays(&self) {
        use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag};
        let peek = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        while let Ok(status) = waitid(Id::All, peek) {
            let Some(pid) = status.pid().map(|p| p.as_raw()) else {
                break;
            };
            let ours = self
                .containers
                .iter()
                .any(|c| c.pidfd.is_some() && c.record.state.pid == Some(pid))
                || self.execs.iter().any(|e| e.pid == pid)
                || self.sessions.iter().any(|s| s.pid == pid);
            if ours || waitpid(nix::unistd::Pid::from_raw(pid), None).is_err() {
                break;
            }
        }
    }

    /// Blocks until something is ready. Events come back in an order that is safe to handle
    /// one after another: logs before exits, and higher indexes first, because handling a
    /// client or pipe may remove it from its list.
    fn wait<'a>(&'a self) -> Result<Vec<Event>, ShimError> {
        let mut tags: Vec<Event> = Vec::new();
        let mut fds: Vec<PollFd<'a>> = Vec::new();
        let mut add = |fd: BorrowedFd<'a>, tag: Event| {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
            tags.push(tag);
        };
        add(self.listener.as_fd(), Event::Accept);
        for (i, client) in self.clients.iter().enumerate() {
            add(client.stream.as_fd(), Event::Client(i));
        }
        for (c, container) in self.containers.iter().enumerate() {
            for (p, fd) in container.pipe_fds() {
                add(fd, Event::Pipe(c, p));
            }
            if let Some(pidfd) = &container.pidfd {
                add(pidfd.as_fd(), Event::Exit(c));
            }
        }
        for (e, exec) in self.execs.iter().enumerate() {
            for (p, fd) in exec.pipe_fds() {
                add(fd, Event::ExecPipe(e, p));
            }
            add(exec.pidfd.as_fd(), Event::ExecExit(e));
        }
        for (s, session) in self.sessions.iter().enumerate() {
            add(session.pidfd.as_fd(), Event::SessionExit(s));
        }
        // Wake up for the nearest exec deadline, or to hand set-up memory back.
        let now = Instant::now();
        let wake_up = self
            .execs
            .iter()
            .map(|e| e.deadline)
            .chain(self.release_due);
        let timeout = match wake_up.min() {
            None => PollTimeout::NONE,
            Some(deadline) => {
                let ms = deadline.saturating_duration_since(now).as_millis() + 1;
                PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        loop {
            match poll(&mut fds, timeout) {
                Ok(_) => break,
                Err(nix::Error::EINTR) => continue,
                Err(source) => return Err(ShimError::Sys { op: "poll", source }),
            }
        }
        let mut ready: Vec<Event> = fds
            .iter()
            .zip(tags)
            .filter(|(fd, _)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, tag)| tag)
            .collect();
        let rank = |e: &Event| match *e {
            Event::Pipe(c, p) => (0, usize::MAX - c, usize::MAX - p),
            Event::ExecPipe(e, p) => (1, usize::MAX - e, usize::MAX - p),
            Event::Exit(c) => (2, usize::MAX - c, 0),
            Event::ExecExit(e) => (3, usize::MAX - e, 0),
            Event::SessionExit(s) => (3, usize::MAX - s, 1),
            Event::Client(i) => (4, usize::MAX - i, 0),
            Event::Accept => (5, 0, 0),
        };
        ready.sort_by_key(rank);
        Ok(ready)
    }

    fn handle(&mut self, event: Event) -> Result<(), ShimError> {
        match event {
            Event::Accept => loop {
                match self.listener.accept() {
                    Ok((stream, _)) => {
                        // Requests are read only when poll says so; replies are small and
                        // written blocking, bounded by the timeout.
                        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
                        let id = self.next_client_id;
                        self.next_client_id += 1;
                        self.clients.push(Client {
                            id,
                            stream,
                            buf: Vec::new(),
                            watching: false,
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => break Err(io_err("accept", self.paths.socket())(e)),
                }
            },
            Event::Client(i) => {
                self.serve_client(i);
                Ok(())
            }
            Event::Pipe(c, p) => {
                if let Some(container) = self.containers.get_mut(c) {
                    if let Err(e) = container.pump_log(p) {
                        eprintln!("berth shim: logs of {}: {e}", container.record.state.name);
                    }
                }
                Ok(())
            }
            Event::ExecPipe(e, p) => {
                if let Some(exec) = self.execs.get_mut(e) {
                    exec.read_pipe(p);
                }
                Ok(())
            }
            Event::ExecExit(e) => {
                let Some(result) = self.execs.get_mut(e).and_then(|exec| exec.finish()) else {
                    return Ok(());
                };
                let exec = self.execs.remove(e);
                if let Some(i) = self.clients.iter().position(|c| c.id == exec.client) {
                    self.reply(i, &Response::Exec { exec: result });
                }
                Ok(())
            }
            Event::SessionExit(s) => {
                let Some(exit_code) = self.sessions.get(s).and_then(|session| session.finish())
                else {
                    return Ok(());
                };
                let session = self.sessions.remove(s);
                if let Some(i) = self.clients.iter().position(|c| c.id == session.client) {
                    self.reply(i, &Response::ExecExited { exit_code });
                }
                Ok(())
            }
            Event::Exit(c) => {
                if let Some(container) = self.containers.get_mut(c) {
                    if container.reap(false)? {
                        // Saved first: a watcher that reads the state at once sees the exit.
                        let saved = self.save();
                        self.notify_watchers();
                        saved?;
                    }
                }
                Ok(())
            }
        }
    }

    fn serve_client(&mut self, i: usize) {
        // Requests are a few KiB at most: a larger one takes a few turns of the loop, and the
        // stack this touches on every request stays small.
        let mut chunk = [0u8; 4 * 1024];
        let client = &mut self.clients[i];
        let n = match client.stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return,
            Err(_) => 0,
        };
        if n == 0 {
            self.clients.remove(i);
            return;
        }
        client.buf.extend_from_slice(&chunk[..n]);
        if client.buf.len() > MAX_REQUEST_BYTES {
            // Not a berth agent: a request never gets this large.
            self.clients.remove(i);
            return;
        }
        while let Some(end) = self.clients[i].buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.clients[i].buf.drain(..=end).collect();
            let client_id = self.clients[i].id;
            let received = Instant::now();
            let response = match serde_json::from_slice::<Request>(&line) {
                Ok(request) => self.respond(request, client_id),
                Err(e) => Some(Response::Error {
                    message: format!("bad request: {e}"),
                }),
            };
            // None: an exec is running and answers when it exits.
            if let Some(response) = response {
                let answered = self.reply(i, &response);
                tracing::debug!(
                    micros = received.elapsed().as_micros() as u64,
                    "request answered"
                );
                if !answered {
                    return;
                }
            }
        }
    }

    /// Tells every `Watch` subscriber that the pod's state changed. Highest index first: a
    /// failed write removes its client.
    fn notify_watchers(&mut self) {
        for i in (0..self.clients.len()).rev() {
            if self.clients[i].watching {
                self.reply(i, &Response::Changed);
            }
        }
    }

    /// Writes one response line; drops the client (and returns false) if that fails.
    fn reply(&mut self, i: usize, response: &Response) -> bool {
        let mut out = match serde_json::to_vec(response) {
            Ok(out) => out,
            Err(e) => format!(r#"{{"result":"error","message":"{e}"}}"#).into_bytes(),
        };
        out.push(b'\n');
        if self.clients[i].stream.write_all(&out).is_err() {
            self.clients.remove(i);
            return false;
        }
        true
    }

    fn respond(&mut self, request: Request, client: u64) -> Option<Response> {
        if runs_set_up(&request) {
            self.set_up_ran = true;
            self.release_due = Some(Instant::now() + RELEASE_AFTER_QUIET);
        }
        if matches!(request, Request::StartContainer { .. }) {
            self.container_set_up = true;
        }
        let result = match request {
            Request::ExecSync {
                name,
                args,
                timeout_ms,
            } => match self.exec(&name, args, Duration::from_millis(timeout_ms), client) {
                Ok(()) => return None,
                Err(e) => Err(e),
            },
            Request::Exec {
                name,
                args,
                tty,
                stdin,
                size,
            } => match self.start_session(&name, args, tty, stdin, size, client) {
                Ok(()) => return None,
                Err(e) => Err(e),
            },
            Request::Attach { name } => match self.attach(&name, client) {
                Ok(()) => return None,
                Err(e) => Err(e),
            },
            Request::CreateContainer { spec } => {
                self.create(&spec).map(|id| Response::Created { id })
            }
            Request::StartContainer { name } => {
                let paths = self.paths.clone();
                self.find(&name)
                    .and_then(|c| c.start(&paths))
                    .and_then(|()| self.saved())
            }
            Request::Kill { name, signal } => self
                .find(&name)
                .and_then(|c| c.signal(signal))
                .map(|()| Response::Ok),
            Request::RemoveContainer { name } => self.remove(&name).and_then(|()| self.saved()),
            Request::State => Ok(Response::State {
                state: self.state(),
            }),
            Request::Watch => {
                if let Some(c) = self.clients.iter_mut().find(|c| c.id == client) {
                    c.watching = true;
                }
                Ok(Response::Ok)
            }
            Request::Shutdown => self.shutdown().map(|()| Response::Ok),
        };
        Some(result.unwrap_or_else(|e| Response::Error {
            message: e.to_string(),
        }))
    }

    fn exec(
        &mut self,
        name: &str,
        args: Vec<String>,
        timeout: Duration,
        client: u64,
    ) -> Result<(), ShimError> {
        let paths = self.paths.clone();
        let container = self.find(name)?;
        if container.record.state.status != ContainerStatus::Running {
            return Err(ShimError::WrongStatus {
                name: name.to_string(),
                status: "not running",
            });
        }
        let id = container.record.state.id.clone();
        let bundle = paths.bundle(name);
        let _warming = self.move_warmer.as_ref().and_then(MoveWarmer::start);
        self.execs
            .push(ExecRun::start(&paths, &bundle, &id, args, timeout, client)?);
        Ok(())
    }

    /// Starts an interactive exec and sends its descriptors to `client`.
    fn start_session(
        &mut self,
        name: &str,
        args: Vec<String>,
        tty: bool,
        stdin: bool,
        size: Option<crate::runtime::session::TerminalSize>,
        client: u64,
    ) -> Result<(), ShimError> {
        let paths = self.paths.clone();
        let container = self.find(name)?;
        if container.record.state.status != ContainerStatus::Running {
            return Err(ShimError::WrongStatus {
                name: name.to_string(),
                status: "not running",
            });
        }
        let id = container.record.state.id.clone();
        let bundle = paths.bundle(name);
        let seq = self.next_client_id;
        let _warming = self.move_warmer.as_ref().and_then(MoveWarmer::start);
        let started = Session::start(&paths, &bundle, &id, args, tty, stdin, size, client, seq)?;
        if let (true, Some(size), Some(master)) = (tty, size, started.fds.first()) {
            // The process set this size itself before its program ran (`SizedTerminal`);
            // setting it again here costs nothing and covers a process that could not.
            crate::runtime::session::set_terminal_size(master, size);
        }
        let mut line = serde_json::to_vec(&Response::ExecStarted {
            fds: started.fds.len(),
        })
        .map_err(|source| ShimError::State {
            path: paths.socket(),
            source,
        })?;
        line.push(b'\n');
        let mut session = started.session;
        let sent = match self.clients.iter().find(|c| c.id == client) {
            Some(c) => send_with_fds(&c.stream, &line, &started.fds),
            None => Ok(()),
        };
        // Our copies of the descriptors close here; the agent holds its own.
        drop(started.fds);
        if sent.is_err() {
            session.kill();
        }
        self.sessions.push(session);
        sent
    }

    /// Sends `client` a writer of container `name`'s stdin, if it has one to give.
    fn attach(&mut self, name: &str, client: u64) -> Result<(), ShimError> {
        let container = self.find(name)?;
        let (fd, once) = container.stdin_for_attach()?;
        let fds: Vec<std::os::fd::OwnedFd> = fd.into_iter().collect();
        let answer = Response::Attached {
            fds: fds.len(),
            once,
        };
        let mut line = serde_json::to_vec(&answer).map_err(|source| ShimError::State {
            path: self.paths.socket(),
            source,
        })?;
        line.push(b'\n');
        let Some(c) = self.clients.iter().find(|c| c.id == client) else {
            return Ok(());
        };
        if fds.is_empty() {
            let mut stream = &c.stream;
            stream
                .write_all(&line)
                .map_err(io_err("write", self.paths.socket()))
        } else {
            send_with_fds(&c.stream, &line, &fds)
        }
    }

    /// A session whose client is gone would run with nobody reading it: kill it (the pidfd
    /// event then reaps it).
    fn kill_orphaned_sessions(&mut self) {
        for session in &mut self.sessions {
            if !self.clients.iter().any(|c| c.id == session.client) {
                session.kill();
            }
        }
    }

    fn find(&mut self, name: &str) -> Result<&mut Container, ShimError> {
        self.containers
            .iter_mut()
            .find(|c| c.record.state.name == name)
            .ok_or_else(|| ShimError::NotFound(name.to_string()))
    }

    fn create(&mut self, spec: &crate::runtime::types::ContainerSpec) -> Result<String, ShimError> {
        if self
            .containers
            .iter()
            .any(|c| c.record.state.name == spec.name)
        {
            return Err(ShimError::Exists(spec.name.clone()));
        }
        let _warming = self.move_warmer.as_ref().and_then(MoveWarmer::start);
        let container = Container::create(
            &self.paths,
            &self.pod_namespaces,
            self.cgroup_namespace,
            spec,
        )?;
        let id = container.record.state.id.clone();
        self.containers.push(container);
        self.save()?;
        Ok(id)
    }

    fn remove(&mut self, name: &str) -> Result<(), ShimError> {
        let index = self
            .containers
            .iter()
            .position(|c| c.record.state.name == name)
            .ok_or_else(|| ShimError::NotFound(name.to_string()))?;
        let container = self.containers.remove(index);
        container.remove(&self.paths)
    }

    fn shutdown(&mut self) -> Result<(), ShimError> {
        let mut first_error = None;
        for container in std::mem::take(&mut self.containers) {
            if let Err(e) = container.remove(&self.paths) {
                first_error.get_or_insert(e);
            }
        }
        self.save()?;
        self.shutting_down = true;
        first_error.map_or(Ok(()), Err)
    }

    fn state(&self) -> PodState {
        PodState {
            pod_uid: self.config.pod_uid.clone(),
            shim_pid: std::process::id() as i32,
            containers: self
                .containers
                .iter()
                .map(|c| c.record.state.clone())
                .collect(),
        }
    }

    fn save(&self) -> Result<(), ShimError> {
        let containers = self.containers.iter().map(|c| c.record.clone()).collect();
        StateFile { containers }.save(&self.paths.dir)
    }

    fn saved(&self) -> Result<Response, ShimError> {
        self.save().map(|()| Response::Ok)
    }
}
