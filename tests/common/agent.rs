//! `berth agent`: a worker node in a namespace of its own, joined to a server in another.
//!
//! Its config file points the `docker.io` mirror at a registry on its own machine
//! (`127.0.0.1:5000` in its namespace, see `registry`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::netns::Netns;
use super::server::BerthServer;

/// A join token valid for an hour from `berth token create` on `server`, and the CA hash the
/// command prints with it: `(token, "sha256:...")`.
pub fn join_token(server: &BerthServer) -> (String, String) {
    join_token_with(server, &[])
}

/// Like `join_token`, with more `berth token create` flags (`--server`, say).
pub fn join_token_with(server: &BerthServer, flags: &[&str]) -> (String, String) {
    let mut args = vec!["token", "create", "--ttl", "1h"];
    args.extend_from_slice(flags);
    let out = server.berth(&args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "berth token create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = text.lines().last().unwrap_or_default().trim().to_string();
    let hash = text
        .split_whitespace()
        .skip_while(|w| *w != "--ca-cert-hash")
        .nth(1)
        .unwrap_or_else(|| panic!("no CA hash in {text:?}"))
        .to_string();
    (token, hash)
}

/// `berth agent` in its own namespace and data dir; on drop, its pods are deleted and released
/// before it is killed, so nothing stays behind.
pub struct Agent {
    netns: String,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Agent {
    pub fn command(ns: &Netns, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = ns.command(&agent_binary().to_string_lossy());
        cmd.arg("agent")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(args)
            .env("BERTH_CONFIG", dir.join("config.toml"))
            .env_remove("BERTH_TOKEN")
            .env_remove("BERTH_URL")
            .stdin(Stdio::null());
        cmd
    }

    fn new_dir(extra_config: &str) -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("berth-test-agent-{}-", std::process::id()))
            .tempdir()
            .unwrap();
        // No eviction or image GC: how full the test machine is must not touch the test's pods.
        let config = format!(
            "{extra_config}\n[registries.mirrors.\"docker.io\"]\nendpoints = [\"http://{}\"]\n\
             [eviction]\nhard = {{}}\n[images]\ngc_high_threshold_percent = 100\n",
            "127.0.0.1:5000"
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        dir
    }

    /// Runs an agent that is expected to fail fast; its output.
    pub fn run_once(ns: &Netns, args: &[&str]) -> Output {
        let dir = Agent::new_dir("");
        let child = Agent::command(ns, dir.path(), args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        super::output_within(child, Duration::from_secs(60))
    }

    pub fn start(ns: &Netns, args: &[&str]) -> Agent {
        Agent::start_with_config(ns, args, "")
    }

    /// Like `start`, with `extra_config` (TOML, top-level tables) in its config file.
    pub fn start_with_config(ns: &Netns, args: &[&str], extra_config: &str) -> Agent {
        let mut agent = Agent {
            netns: ns.name.clone(),
            dir: Agent::new_dir(extra_config),
            child: None,
        };
        agent.spawn(ns, args);
        agent
    }

    /// Starts (again) on the same data dir, the log appended to.
    pub fn spawn(&mut self, ns: &Netns, args: &[&str]) {
        self.stop();
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .unwrap();
        let child = Agent::command(ns, self.dir.path(), args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// The agent's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
        // A test that failed before the agent released its pods must not leave them running.
        super::server::stop_pods_left_behind(&self.data_dir().join("pods"));
        if std::thread::panicking() {
            eprintln!(
                "---- log of berth agent in {} ----\n{}",
                self.netns,
                self.log()
            );
        }
    }
}

/// This build's berth, or `BERTH_TEST_BINARY` (an optimised build, for figures that must not
/// measure a debug build), as the server harness does.
fn agent_binary() -> std::path::PathBuf {
    std::env::var_os("BERTH_TEST_BINARY")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_berth").into())
}
