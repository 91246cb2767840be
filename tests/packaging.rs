//! The installer, the systemd unit and `berth check`, run for real: install.sh into a temporary
//! root (the same script a user pipes into `sh`), twice, then its uninstaller.
//!
//! Needs root for `berth check` (it reports non-root as a failure) and the network namespace.
//! `BERTH_TEST_BINARY=target/dist/berth-x86_64 cargo test --test packaging` checks the static
//! release build instead of this build's binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::netns::Netns;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// This build's berth, or `BERTH_TEST_BINARY` (say the static release build, to check what ships).
fn berth() -> &'static str {
    static BERTH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BERTH.get_or_init(|| {
        std::env::var("BERTH_TEST_BINARY")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_berth").to_owned())
    })
}

fn install(root: &Path) -> Output {
    Command::new("sh")
        .arg(repo().join("packaging/install.sh"))
        .arg("--root")
        .arg(root)
        .env("BERTH_BINARY", berth())
        .env_remove("BERTH_URL")
        .env_remove("BERTH_TOKEN")
        .output()
        .expect("run install.sh")
}

/// Every file under `dir`, relative to it, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn install_sh_installs_is_idempotent_and_uninstalls_every_file_it_added() {
    let root = tempfile::tempdir().unwrap();
    let first = install(root.path());
    let log = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(
        first.status.success(),
        "{log}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(
        files_under(root.path()),
        [
            "etc/berth/berth.yaml",
            "etc/berth/config.toml",
            "etc/berth/installed-files",
            "etc/systemd/system/berth.service",
            "usr/local/bin/berth",
            "usr/local/bin/berth-uninstall.sh",
        ]
    );
    let installed = std::fs::read(root.path().join("usr/local/bin/berth")).unwrap();
    assert_eq!(
        installed,
        std::fs::read(berth()).unwrap(),
        "the very binary given"
    );
    assert_eq!(
        std::fs::read_link(root.path().join("etc/berth/berth.yaml")).unwrap(),
        Path::new("/var/lib/berth/kubeconfig.yaml")
    );

    // The unit install.sh writes is the one packaging ships for the deb and snap.
    let unit =
        std::fs::read_to_string(root.path().join("etc/systemd/system/berth.service")).unwrap();
    let shipped = std::fs::read_to_string(repo().join("packaging/systemd/berth.service")).unwrap();
    assert_eq!(unit, shipped);
    for line in [
        "Type=notify",
        "KillMode=process",
        "Delegate=yes",
        "Restart=always",
    ] {
        assert!(unit.lines().any(|l| l == line), "unit has {line}");
    }

    // The config it writes parses (all keys commented out: the defaults).
    let check = Command::new(berth())
        .args(["kubeconfig", "--config"])
        .arg(root.path().join("etc/berth/config.toml"))
        .args(["--data-dir", "/nonexistent-berth-data"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stderr);
    assert!(
        said.contains("cannot read /nonexistent-berth-data/kubeconfig.yaml"),
        "{said}"
    );

    let before = std::fs::metadata(root.path().join("usr/local/bin/berth"))
        .unwrap()
        .modified()
        .unwrap();
    let second = install(root.path());
    let log = String::from_utf8_lossy(&second.stdout).into_owned();
    assert!(second.status.success(), "{log}");
    assert!(log.contains("already installed and up to date"), "{log}");
    assert!(!log.contains("installed /"), "nothing rewritten: {log}");
    let after = std::fs::metadata(root.path().join("usr/local/bin/berth"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after);

    let removed = Command::new("sh")
        .arg(root.path().join("usr/local/bin/berth-uninstall.sh"))
        .env("BERTH_ROOT", root.path())
        .output()
        .unwrap();
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    assert_eq!(
        files_under(root.path()),
        Vec::<String>::new(),
        "every added file removed"
    );
}

#[test]
fn install_sh_refuses_half_an_agent_configuration() {
    let root = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .arg(repo().join("packaging/install.sh"))
        .arg(format!("--root={}", root.path().display()))
        .env("BERTH_BINARY", berth())
        .env("BERTH_URL", "https://10.0.0.1:6443")
        .env_remove("BERTH_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("needs both BERTH_URL and BERTH_TOKEN"),
        "{said}"
    );
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed: skipped");
        return;
    }
    // verify wants the ExecStart binary to exist: point the unit at the built one.
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(repo().join("packaging/systemd/berth.service"))
        .unwrap()
        .replace("/usr/local/bin/berth", berth());
    let path = dir.path().join("berth.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("berth.service"))
        .collect();
    assert!(out.status.success() && problems.is_empty(), "{said}");
}

#[test]
fn berth_check_passes_on_this_machine() {
    // In a fresh network namespace the API port is surely free.
    let ns = Netns::new();
    let data = tempfile::tempdir().unwrap();
    let out = ns
        .command(berth())
        .args(["check", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for item in [
        "user: root",
        "kernel:",
        "kernel features:",
        "cgroups:",
        "memory:",
        "disk:",
    ] {
        assert!(report.contains(item), "report names {item}: {report}");
    }
    assert!(!report.contains("FAIL"), "{report}");
}

#[test]
fn berth_check_names_the_pi_cmdline_fix_and_applies_it_to_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let cmdline = dir.path().join("cmdline.txt");
    std::fs::write(&cmdline, "console=tty1 root=PARTUUID=abc rootwait\n").unwrap();
    let out = Command::new(berth())
        .args(["check", "--fix", "--data-dir"])
        .arg(dir.path())
        .arg("--boot-cmdline")
        .arg(&cmdline)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(&format!("fixed {}", cmdline.display())),
        "{report}"
    );
    assert_eq!(
        std::fs::read_to_string(&cmdline).unwrap(),
        "console=tty1 root=PARTUUID=abc rootwait cgroup_memory=1 cgroup_enable=memory\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("cmdline.txt.berth-backup")).unwrap(),
        "console=tty1 root=PARTUUID=abc rootwait\n"
    );
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_deb_installs_into_a_scratch_root_runs_and_purges_leaving_nothing() {
    let work = tempfile::tempdir().unwrap();
    let binary = stripped_berth(work.path());
    let deb = run_ok(
        Command::new(repo().join("packaging/build-deb.sh"))
            .arg("amd64")
            .arg(&binary)
            .arg(work.path())
            .env("BERTH_DEB_COMPRESSION", "gzip"),
    );
    let deb = PathBuf::from(deb.trim());
    assert!(deb.ends_with(format!("berth_{}_amd64.deb", env!("CARGO_PKG_VERSION"))));

    let info = run_ok(Command::new("dpkg-deb").arg("--info").arg(&deb));
    for line in [
        "Package: berth",
        "Architecture: amd64",
        &format!("Version: {}", env!("CARGO_PKG_VERSION")),
    ] {
        assert!(info.contains(line), "no {line:?} in {info}");
    }
    for script in ["postinst", "prerm", "postrm", "conffiles"] {
        assert!(info.contains(script), "no {script} in {info}");
    }
    let contents = run_ok(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for path in [
        "./usr/bin/berth",
        "./lib/systemd/system/berth.service",
        "./etc/berth/config.toml",
        "./usr/share/doc/berth/examples/pi-512mb.toml",
    ] {
        assert!(contents.contains(path), "no {path} in {contents}");
    }
    assert!(
        contents
            .lines()
            .filter(|l| l.contains("./usr/bin/berth"))
            .all(|l| l.starts_with("-rwxr-xr-x root/root")),
        "{contents}"
    );

    // A scratch root with its own dpkg database: the host's packages are never touched, and
    // DPKG_ROOT keeps the maintainer scripts away from the host's systemd.
    let root = work.path().join("root");
    let admin = root.join("var/lib/dpkg");
    std::fs::create_dir_all(admin.join("info")).unwrap();
    std::fs::create_dir_all(admin.join("updates")).unwrap();
    std::fs::write(admin.join("status"), "").unwrap();
    let dpkg = || {
        let mut cmd = Command::new("dpkg");
        cmd.arg(format!("--root={}", root.display()))
            .arg(format!("--admindir={}", admin.display()))
            .args(["--force-script-chrootless", "--force-not-root"]);
        cmd
    };
    run_ok(dpkg().arg("-i").arg(&deb));
    let version = run_ok(Command::new(root.join("usr/bin/berth")).arg("version"));
    assert_eq!(
        version.trim(),
        format!("berth version {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        std::fs::read_link(root.join("etc/berth/berth.yaml")).unwrap(),
        Path::new("/var/lib/berth/kubeconfig.yaml")
    );
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/berth.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/berth server"), "{unit}");
    let status = run_ok(dpkg().args(["-s", "berth"]));
    assert!(status.contains("Status: install ok installed"), "{status}");

    run_ok(dpkg().args(["--purge", "berth"]));
    let left: Vec<String> = files_under(&root)
        .into_iter()
        .filter(|f| !f.starts_with("var/lib/dpkg/"))
        .collect();
    assert!(left.is_empty(), "left behind after purge: {left:?}");
    for dir in ["etc/berth", "usr/share/doc/berth", "lib/systemd/system"] {
        assert!(!root.join(dir).exists(), "{dir} left behind after purge");
    }
}

/// A stripped copy of the test binary: the debug build with its symbols is hundreds of MB,
/// which packaging would spend minutes compressing.
fn stripped_berth(dir: &Path) -> PathBuf {
    let out = dir.join("berth");
    run_ok(Command::new("strip").arg("-o").arg(&out).arg(berth()));
    out
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_snap_is_classic_with_a_notify_daemon_and_runs_from_its_squashfs() {
    // `snap pack` (Debian's snapd) validates meta/snap.yaml as the store would; the test
    // dependencies install it, so a missing one is a failure, not a skip.
    assert!(
        have("snap"),
        "snapd's `snap` is not installed (scripts/install-test-deps.sh)"
    );
    let work = tempfile::tempdir().unwrap();
    let script = repo().join("packaging/build-snap.sh");
    let binary = stripped_berth(work.path());
    let out = Command::new(&script)
        .arg("amd64")
        .arg(&binary)
        .arg(work.path())
        .env("BERTH_SNAP_COMPRESSION", "gzip")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build-snap.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let prime = work.path().join("snap-prime-amd64");
    let meta = std::fs::read_to_string(prime.join("meta/snap.yaml")).unwrap();
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&meta).unwrap();
    assert_eq!(yaml["name"].as_str(), Some("berth"));
    assert_eq!(yaml["version"].as_str(), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(yaml["confinement"].as_str(), Some("classic"));
    assert_eq!(yaml["architectures"][0].as_str(), Some("amd64"));
    assert!(yaml["description"]
        .as_str()
        .unwrap()
        .contains("snap refresh --hold"));
    let daemon = &yaml["apps"]["daemon"];
    assert_eq!(daemon["command"].as_str(), Some("bin/berth server"));
    assert_eq!(daemon["daemon"].as_str(), Some("notify"));
    assert_eq!(daemon["stop-mode"].as_str(), Some("sigterm"));
    assert_eq!(daemon["refresh-mode"].as_str(), Some("endure"));
    assert_eq!(yaml["apps"]["berth"]["command"].as_str(), Some("bin/berth"));
    // The metadata snapcraft.yaml declares is the metadata packed.
    let snapcraft: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(repo().join("packaging/snap/snapcraft.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(yaml["apps"], snapcraft["apps"]);
    for key in ["summary", "base", "grade"] {
        assert_eq!(yaml[key], snapcraft[key], "{key}");
    }

    let snap = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let listing = run_ok(Command::new("unsquashfs").arg("-l").arg(&snap));
    for path in [
        "squashfs-root/bin/berth",
        "squashfs-root/meta/snap.yaml",
        "squashfs-root/meta/hooks/install",
        "squashfs-root/meta/hooks/remove",
        "squashfs-root/etc/berth/config.toml",
    ] {
        assert!(listing.lines().any(|l| l == path), "no {path} in {listing}");
    }
    // Run berth from the mounted squashfs, as snapd would mount it.
    let mountpoint = work.path().join("mnt");
    std::fs::create_dir(&mountpoint).unwrap();
    run_ok(
        Command::new("mount")
            .args(["-t", "squashfs", "-o", "loop,ro"])
            .arg(&snap)
            .arg(&mountpoint),
    );
    let version = Command::new(mountpoint.join("bin/berth"))
        .arg("version")
        .output();
    let unmounted = Command::new("umount").arg(&mountpoint).status();
    let version = version.unwrap();
    assert!(unmounted.is_ok_and(|s| s.success()), "umount failed");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("berth version {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn snap_pack_refuses_a_snap_yaml_the_store_would_refuse() {
    assert!(
        have("snap"),
        "snapd's `snap` is not installed (scripts/install-test-deps.sh)"
    );
    let work = tempfile::tempdir().unwrap();
    let prime = work.path().join("prime");
    std::fs::create_dir_all(prime.join("meta")).unwrap();
    // An upper-case snap name is invalid in the store; `snap pack` must say so.
    std::fs::write(
        prime.join("meta/snap.yaml"),
        "name: Berth\nversion: '1'\nsummary: s\ndescription: d\nconfinement: classic\n",
    )
    .unwrap();
    let out = Command::new("snap")
        .arg("pack")
        .arg(&prime)
        .arg(work.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "snap pack accepted an invalid name");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid snap name"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
