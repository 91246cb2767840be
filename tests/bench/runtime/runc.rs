//! Debian's runc running a bundle made from the busybox test image, the reference for one
//! container start. Its state (`--root`) and the bundle live in one temp dir; every container
//! has a unique id and is deleted after it ran.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Runc {
    dir: tempfile::TempDir,
    next: usize,
}

impl Runc {
    /// Unpacks the OCI layout `layout` (tag `latest`) into a bundle with umoci.
    pub fn new(layout: &Path) -> Runc {
        let dir = tempfile::Builder::new()
            .prefix(&format!("berth-bench-runc-{}-", std::process::id()))
            .tempdir()
            .expect("create runc dir");
        let out = Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:latest", layout.display()))
            .arg(dir.path().join("bundle"))
            .output()
            .expect("run umoci (scripts/install-test-deps.sh installs it)");
        assert!(
            out.status.success(),
            "umoci unpack failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Runc { dir, next: 0 }
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("bundle/rootfs")
    }

    /// `runc run` of the bundle with `args` as its process, stdout piped to us: the time from
    /// spawning runc to reading the container's first line of output.
    pub fn first_line(&mut self, args: &[&str]) -> Duration {
        let config_path = self.dir.path().join("bundle/config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&config_path).expect("read config.json"))
                .expect("umoci's config.json is JSON");
        config["process"]["terminal"] = false.into();
        config["process"]["args"] = args.into();
        std::fs::write(&config_path, config.to_string()).expect("write config.json");

        let id = format!("berth-bench-{}-{}", std::process::id(), self.next);
        self.next += 1;
        let state = self.dir.path().join("state");
        let started = Instant::now();
        let mut child = Command::new("runc")
            .arg("--root")
            .arg(&state)
            .args(["run", "--bundle"])
            .arg(self.dir.path().join("bundle"))
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run runc (scripts/install-test-deps.sh installs it)");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        let _ = BufReader::new(stdout).read_line(&mut line);
        let elapsed = started.elapsed();
        let out = child.wait_with_output().expect("wait for runc");
        // `runc run` deletes its container when the process ends; this catches one that did not.
        let _ = Command::new("runc")
            .arg("--root")
            .arg(&state)
            .args(["delete", "--force", &id])
            .stderr(Stdio::null())
            .status();
        assert!(
            out.status.success() && !line.is_empty(),
            "runc run failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        elapsed
    }
}
