//! A cluster for tests whose pods run real containers: a berth server whose docker.io mirror is
//! a registry in the test's netns holding the busybox test image.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::netns::Netns;
use super::registry::Registry;
use super::server::BerthServer;
use super::wait_until;

/// Builds the busybox test image (once per test binary run) and returns its OCI layout.
pub fn test_image(dir: &Path) -> PathBuf {
    let layout = dir.join("busybox-layout");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-test-image.sh");
    let out = Command::new(script)
        .arg(&layout)
        .output()
        .expect("run build-test-image.sh");
    assert!(
        out.status.success(),
        "build-test-image.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    layout
}

/// A berth server whose docker.io mirror is the test registry, with busybox pushed to it.
pub struct Cluster {
    pub server: BerthServer,
    _registry: Registry,
    pub node: String,
    _work: tempfile::TempDir,
}

impl Cluster {
    pub fn start(ns: &Netns) -> Cluster {
        Cluster::start_with_config(ns, "")
    }

    /// Like `start`, with `config` (TOML) added to the server's config file.
    pub fn start_with_config(ns: &Netns, config: &str) -> Cluster {
        let work = tempfile::Builder::new()
            .prefix(&format!("berth-agent-test-{}-", std::process::id()))
            .tempdir()
            .unwrap();
        let registry = Registry::start(ns);
        registry.push_oci_layout(&test_image(work.path()), "latest", "library/busybox");
        let mut server = BerthServer::start(ns);
        std::fs::write(
            server.data_dir().join("test-config.toml"),
            format!(
                "{config}\n[registries.mirrors.\"docker.io\"]\nendpoints = [\"http://{}\"]\n",
                registry.addr()
            ),
        )
        .unwrap();
        server.restart();
        let node = server
            .kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"])
            .trim()
            .to_string();
        assert!(!node.is_empty(), "the node registered itself");
        Cluster {
            server,
            _registry: registry,
            node,
            _work: work,
        }
    }

    pub fn create(&self, json: serde_json::Value) {
        let path = self
            .server
            .data_dir()
            .join(format!("obj-{}.json", rand_suffix()));
        std::fs::write(&path, json.to_string()).unwrap();
        self.server
            .kubectl_ok(&["create", "--validate=false", "-f", path.to_str().unwrap()]);
    }

    pub fn pod(&self, name: &str, spec: serde_json::Value) -> serde_json::Value {
        let mut spec = spec;
        spec["nodeName"] = serde_json::json!(self.node);
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
    }

    pub fn get(&self, name: &str) -> serde_json::Value {
        let out = self.server.kubectl(&["get", "pod", name, "-o", "json"]);
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    pub fn wait_for(
        &self,
        name: &str,
        what: &str,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        let done = wait_until(Duration::from_secs(90), || {
            last = self.get(name);
            ok(&last)
        });
        assert!(done, "pod {name} never got {what}: {last:#}");
        last
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.server.data_dir().join("pods")
    }

    /// The server's share of the run dir: its pods' runtime state.
    pub fn pods_run_dir(&self) -> PathBuf {
        super::server::pods_run_dir(&self.pods_dir())
    }
}

impl Drop for Cluster {
    /// Containers outlive berth by design: delete every pod and wait until the agent has
    /// released them, so no shim, cgroup or mount stays behind.
    fn drop(&mut self) {
        // Controllers first, so no pod is created again while the pods go.
        let _ = self.server.kubectl(&[
            "delete",
            "cronjobs,jobs,deployments,replicasets,replicationcontrollers,statefulsets,daemonsets",
            "--all",
            "--cascade=orphan",
            "--wait=false",
        ]);
        let _ = self.server.kubectl(&[
            "delete",
            "pods",
            "--all",
            "--grace-period=1",
            "--wait=false",
        ]);
        let pods = self.pods_dir();
        wait_until(Duration::from_secs(60), || {
            std::fs::read_dir(&pods)
                .map(|mut d| d.next().is_none())
                .unwrap_or(true)
        });
    }
}

pub fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst).to_string()
}
