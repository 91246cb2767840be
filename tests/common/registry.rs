//! A real OCI registry (Debian's `docker-registry`) serving plain HTTP on 127.0.0.1:5000 inside a
//! test's network namespace, with temporary storage. Each netns has its own loopback, so tests
//! running in parallel each get their own registry on the same address.
//!
//! Needs root (network namespaces); CI runs as root.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::netns::Netns;
use super::wait_until;

const ADDR: &str = "127.0.0.1:5000";
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Registry {
    netns: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Registry {
    /// Starts the registry inside `ns` and waits until `/v2/` answers. Must be dropped before `ns`.
    pub fn start(ns: &Netns) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix(&format!("berth-test-registry-{}-", std::process::id()))
            .tempdir()
            .expect("create registry dir");
        let storage = dir.path().join("storage");
        let config = dir.path().join("config.yml");
        // No auth, no health checks, no notifications: nothing that reaches past loopback.
        let config_text = format!(
            "version: 0.1\n\
             log:\n  level: warn\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {ADDR}\n",
            storage.display()
        );
        std::fs::write(&config, config_text).expect("write registry config");
        let log = File::create(dir.path().join("registry.log")).expect("create registry log");
        let log_for_stderr = log.try_clone().expect("clone registry log handle");
        let child = ns
            .command("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr)
            .spawn()
            .expect("spawn docker-registry (run scripts/install-test-deps.sh)");
        let mut registry = Registry {
            netns: ns.name.clone(),
            dir,
            child: Some(child),
        };
        registry.wait_ready(ns);
        registry
    }

    /// `host:port` to put in image references, e.g. `127.0.0.1:5000/busybox:1`.
    pub fn addr(&self) -> &'static str {
        ADDR
    }

    /// The registry's own directory: its config, log and `storage/`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Pushes the image tagged `tag` in the OCI layout `layout` to `<addr>/<repository>:<tag>` with
    /// skopeo, from inside the netns; returns that reference.
    pub fn push_oci_layout(&self, layout: &Path, tag: &str, repository: &str) -> String {
        let reference = format!("{ADDR}/{repository}:{tag}");
        // --insecure-policy: the host's signature policy has no say over a test's own images.
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "skopeo",
                "--insecure-policy",
                "copy",
                "--quiet",
            ])
            .arg("--dest-tls-verify=false")
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{reference}"))
            .stdin(Stdio::null())
            .output()
            .expect("run skopeo (run scripts/install-test-deps.sh)");
        assert!(
            out.status.success(),
            "skopeo push of {} to {reference} failed: {}",
            layout.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        reference
    }

    fn wait_ready(&mut self, ns: &Netns) {
        let url = format!("http://{ADDR}/v2/");
        let mut exited = None;
        let ready = wait_until(START_TIMEOUT, || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                exited = Some(status);
                return true;
            }
            ns.command("curl")
                .args([
                    "--silent",
                    "--fail",
                    "--max-time",
                    "2",
                    "--output",
                    "/dev/null",
                    &url,
                ])
                .status()
                .is_ok_and(|status| status.success())
        });
        if let Some(status) = exited {
            self.child = None;
            panic!("docker-registry exited during start ({status})");
        }
        assert!(
            ready,
            "docker-registry did not answer {url} within {START_TIMEOUT:?}"
        );
    }
}

impl Drop for Registry {
    /// Stops the registry (SIGKILL: it keeps nothing worth flushing) and reaps it; the storage goes
    /// with the `TempDir`.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- log of docker-registry in {} ----\n{}",
                self.netns,
                self.log()
            );
        }
    }
}
