//! The installer, the systemd unit and `berth check`, run for real: install.sh into a temporary
//! root (the same script a user pipes into `sh`), twice, then its uninstaller.
//!
//! Needs root for `berth check` (it reports non-root as a failure) and the network namespace.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::netns::Netns;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn berth() -> &'static str {
    env!("CARGO_BIN_EXE_berth")
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
