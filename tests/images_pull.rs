//! Pulling, importing, listing and removing images with the real `berth` binary against a real
//! registry (Debian's docker-registry) running inside a network namespace made for the test.
//!
//! Needs root: network namespaces, and the layer unpacking creates overlay whiteouts and chowns.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth::runtime::images::ImageStore;
use common::netns::Netns;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");
const REGISTRY: &str = "127.0.0.1:5000";

/// The busybox test image as an OCI layout, built by the project's script.
struct TestImage {
    dir: tempfile::TempDir,
    manifest_digest: String,
}

impl TestImage {
    fn build() -> TestImage {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-test-image.sh");
        let out = Command::new(script)
            .arg(dir.path().join("layout"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "build-test-image.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let manifest_digest = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(manifest_digest.starts_with("sha256:"), "{manifest_digest}");
        TestImage {
            dir,
            manifest_digest,
        }
    }

    fn layout(&self) -> PathBuf {
        self.dir.path().join("layout")
    }

    /// The layout as an OCI archive (a tar of the layout directory).
    fn archive(&self) -> PathBuf {
        let path = self.dir.path().join("busybox.tar");
        common::netns::run_ok(
            "tar",
            &[
                "-C",
                self.layout().to_str().unwrap(),
                "-cf",
                path.to_str().unwrap(),
                ".",
            ],
        );
        path
    }
}

/// docker-registry serving 127.0.0.1:5000 inside `ns`; killed by pid when dropped.
struct Registry {
    child: Child,
    storage: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start(ns: &Netns) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {REGISTRY}\n",
                storage.display()
            ),
        )
        .unwrap();
        // `ip netns exec` execs the registry, so this pid is the registry's.
        let child = ns
            .command("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        Registry {
            child,
            storage,
            _dir: dir,
        }
    }

    /// Pushes the layout as `busybox:latest`, retrying while the registry starts.
    fn push(&self, ns: &Netns, image: &TestImage) {
        let source = format!("oci:{}:latest", image.layout().display());
        let dest = format!("docker://{REGISTRY}/busybox:latest");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = ns.exec(
                "skopeo",
                &[
                    "copy",
                    "--insecure-policy",
                    "--dest-tls-verify=false",
                    &source,
                    &dest,
                ],
            );
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "skopeo copy failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The registry's stored copy of a blob.
    fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs berth inside the namespace, with an empty config so the host's config cannot interfere.
fn berth_in(ns: &Netns, data_dir: &Path, args: &[&str]) -> Output {
    let config = data_dir.join("config.toml");
    if !config.exists() {
        std::fs::write(&config, "").unwrap();
    }
    ns.command(BERTH)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap()
}

fn berth(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(BERTH)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "berth failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn a_pulled_image_is_unpacked_recorded_listed_and_removed() {
    let image = TestImage::build();
    let ns = Netns::new();
    let data = tempfile::tempdir().unwrap();
    let registry = Registry::start(&ns);
    registry.push(&ns, &image);

    let reference = format!("{REGISTRY}/busybox:latest");
    let out = ok(berth_in(&ns, data.path(), &["images", "pull", &reference]));
    assert!(out.starts_with("pulled"), "{out}");

    let store = ImageStore::open(&data.path().join("images")).unwrap();
    let pulled = store.get(&reference).unwrap().expect("image recorded");
    assert_eq!(
        pulled.digest,
        format!("{REGISTRY}/busybox@{}", image.manifest_digest)
    );
    assert_eq!(pulled.config.cmd, vec!["sh"]);
    assert_eq!(pulled.layers.len(), 1);
    let busybox = pulled.layers[0].join("bin/busybox");
    let mode = std::fs::metadata(&busybox).unwrap().permissions().mode();
    assert!(mode & 0o111 != 0, "bin/busybox is not executable: {mode:o}");
    assert_eq!(
        std::fs::read_link(pulled.layers[0].join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert!(std::fs::read_to_string(pulled.layers[0].join("etc/passwd"))
        .unwrap()
        .contains("nobody:x:65534"));

    // With the registry gone, IfNotPresent must not need the network.
    drop(registry);
    let out = ok(berth_in(&ns, data.path(), &["images", "pull", &reference]));
    assert!(out.starts_with("present"), "{out}");

    let listing = ok(berth(data.path(), &["images", "ls"]));
    let short = &image.manifest_digest["sha256:".len().."sha256:".len() + 12];
    assert!(
        listing.lines().next().unwrap().starts_with("REFERENCE"),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with(&reference) && l.contains(short)),
        "{listing}"
    );

    ok(berth(data.path(), &["images", "rm", &reference]));
    assert!(!ok(berth(data.path(), &["images", "ls"])).contains(&reference));
    assert!(!pulled.layers[0].exists(), "unreferenced layer removed");
    assert_eq!(entries(&data.path().join("images/blobs/sha256")), 0);
    assert_eq!(entries(&data.path().join("images/layers")), 0);

    let again = berth(data.path(), &["images", "rm", &reference]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn a_tampered_blob_in_the_registry_is_rejected() {
    let image = TestImage::build();
    let ns = Netns::new();
    let data = tempfile::tempdir().unwrap();
    let registry = Registry::start(&ns);
    registry.push(&ns, &image);

    let layout_blobs = image.layout().join("blobs/sha256");
    let layer_digest = std::fs::read_dir(&layout_blobs)
        .unwrap()
        .map(|e| e.unwrap())
        .max_by_key(|e| e.metadata().unwrap().len())
        .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
        .unwrap();
    let stored = registry.blob_path(&layer_digest);
    let mut bytes = std::fs::read(&stored).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&stored, &bytes).unwrap();

    let out = berth_in(
        &ns,
        data.path(),
        &["images", "pull", &format!("{REGISTRY}/busybox")],
    );
    assert!(!out.status.success(), "a tampered layer was accepted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&layer_digest) && stderr.contains("verification"),
        "{stderr}"
    );
    assert!(ok(berth(data.path(), &["images", "ls"])).lines().count() == 1);
    assert_eq!(entries(&data.path().join("images/layers")), 0);
    assert_eq!(entries(&data.path().join("images/tmp")), 0);
}

#[test]
fn an_oci_archive_imports_without_a_registry_even_from_two_importers_at_once() {
    let image = TestImage::build();
    let archive = image.archive();
    let data = tempfile::tempdir().unwrap();
    let spawn = || {
        Command::new(BERTH)
            .args(["images", "import"])
            .arg(&archive)
            .arg("--data-dir")
            .arg(data.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn(), spawn());
    for importer in [first, second] {
        let out = ok(importer.wait_with_output().unwrap());
        assert!(
            out.contains("imported docker.io/library/busybox:latest"),
            "{out}"
        );
    }
    let listing = ok(berth(data.path(), &["images", "ls"]));
    assert_eq!(listing.lines().count(), 2, "{listing}");
    let store = ImageStore::open(&data.path().join("images")).unwrap();
    let imported = store.get("busybox").unwrap().expect("imported");
    assert_eq!(
        imported.digest,
        format!("docker.io/library/busybox@{}", image.manifest_digest)
    );
    assert!(imported.layers[0].join("bin/busybox").is_file());
    assert!(imported.layers[0].join("www/index.html").is_file());
}
