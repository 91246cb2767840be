//! Pure functions from a [`ContainerSpec`] to an OCI runtime spec, with the defaults containerd
//! applies to Kubernetes containers (mounts, masked paths, capabilities, devices).

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde_json::{json, Value};

use super::types::{ContainerSpec, MountKind, Resources, SeccompProfile};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("read seccomp profile {path}: {source}")]
    ReadProfile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("seccomp profile {path} is not a valid OCI LinuxSeccomp: {source}")]
    BadProfile {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("building the OCI spec: {0}")]
    Build(#[source] serde_json::Error),
}

/// Namespaces the pod shares between its containers. `None` gives the container a new one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodNamespaces {
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
}

/// The capabilities containerd grants a container that asks for nothing else.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The capability set a container ends up with.
pub fn capabilities(spec: &ContainerSpec) -> Vec<String> {
    match &spec.capabilities {
        Some(caps) => caps.clone(),
        None => DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect(),
    }
}

/// The seccomp profile as OCI JSON, or `None` for Unconfined. A Localhost profile that cannot be
/// read or parsed is an error: a container must never run unconfined by accident.
pub fn resolve_seccomp(spec: &ContainerSpec) -> Result<Option<Value>, SpecError> {
    match &spec.seccomp {
        SeccompProfile::Unconfined => Ok(None),
        SeccompProfile::RuntimeDefault => {
            Ok(Some(super::seccomp::runtime_default(&capabilities(spec))))
        }
        SeccompProfile::Localhost(path) => {
            let bytes = std::fs::read(path).map_err(|source| SpecError::ReadProfile {
                path: path.clone(),
                source,
            })?;
            let value: Value =
                serde_json::from_slice(&bytes).map_err(|source| SpecError::BadProfile {
                    path: path.clone(),
                    source,
                })?;
            // Validate the shape now rather than inside the container's init.
            serde_json::from_value::<oci_spec::runtime::LinuxSeccomp>(value.clone()).map_err(
                |source| SpecError::BadProfile {
                    path: path.clone(),
                    source,
                },
            )?;
            Ok(Some(value))
        }
    }
}

/// The mounts containerd gives every container, before the user's.
fn default_mounts(cgroup_namespace: bool) -> Vec<Value> {
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    // A cgroup mount only shows the container its own cgroup inside a cgroup namespace; without
    // one it would expose the host's hierarchy, so containerd skips it on v1 too.
    if cgroup_namespace {
        mounts.push(
            json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                           "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
        );
    }
    mounts
}

fn user_mount(kind: MountKind, source: &Path, destination: &Path, read_only: bool) -> Value {
    let access = if read_only { "ro" } else { "rw" };
    match kind {
        MountKind::Bind => json!({"destination": destination, "type": "bind", "source": source,
                                   "options": ["rbind", "rprivate", access]}),
        MountKind::Tmpfs => json!({"destination": destination, "type": "tmpfs", "source": "tmpfs",
                                    "options": ["nosuid", "nodev", "mode=1777", access]}),
        MountKind::Proc => json!({"destination": destination, "type": "proc", "source": "proc",
                                   "options": ["nosuid", "noexec", "nodev", access]}),
    }
}

/// Deny everything first (an empty list means "allow all" on cgroup v1), then the devices every
/// container needs.
fn device_rules() -> Vec<Value> {
    let rule = |kind: &str, major: Option<i64>, minor: Option<i64>, access: &str| json!({"allow": true, "type": kind, "major": major, "minor": minor, "access": access});
    vec![
        json!({"allow": false, "access": "rwm"}),
        rule("c", None, None, "m"),
        rule("b", None, None, "m"),
        rule("c", Some(1), Some(3), "rwm"), // null
        rule("c", Some(1), Some(5), "rwm"), // zero
        rule("c", Some(1), Some(7), "rwm"), // full
        rule("c", Some(1), Some(8), "rwm"), // random
        rule("c", Some(1), Some(9), "rwm"), // urandom
        rule("c", Some(5), Some(0), "rwm"), // tty
        rule("c", Some(5), Some(2), "rwm"), // ptmx
        rule("c", Some(136), None, "rwm"),  // pts/*
    ]
}

fn resources(resources: &Resources) -> Value {
    let mut value = json!({ "devices": device_rules() });
    let mut cpu = serde_json::Map::new();
    if let Some(shares) = resources.cpu_shares {
        cpu.insert("shares".into(), json!(shares));
    }
    if let Some(quota) = resources.cpu_quota {
        cpu.insert("quota".into(), json!(quota));
    }
    if let Some(period) = resources.cpu_period {
        cpu.insert("period".into(), json!(period));
    }
    if !cpu.is_empty() {
        value["cpu"] = Value::Object(cpu);
    }
    if let Some(limit) = resources.memory_limit {
        value["memory"] = json!({ "limit": limit });
    }
    if let Some(limit) = resources.pids_limit {
        value["pids"] = json!({ "limit": limit });
    }
    value
}

/// Builds the OCI runtime spec for `spec`, whose root filesystem is ready at `rootfs`.
/// `seccomp` comes from [`resolve_seccomp`]; `cgroup_namespace` is true on cgroup v2, where
/// containers get a private cgroup namespace as with containerd.
pub fn build_spec(
    spec: &ContainerSpec,
    rootfs: &Path,
    pod: &PodNamespaces,
    seccomp: Option<Value>,
    cgroup_namespace: bool,
) -> Result<Spec, SpecError> {
    let caps = capabilities(spec);
    let pid = match &spec.pid_namespace {
        Some(path) => json!({"type": "pid", "path": path}),
        None => json!({"type": "pid"}),
    };
    let mut namespaces = vec![pid, json!({"type": "mount"})];
    for (kind, path) in [
        ("ipc", &pod.ipc),
        ("uts", &pod.uts),
        ("network", &spec.netns_path),
    ] {
        match path {
            Some(path) => namespaces.push(json!({"type": kind, "path": path})),
            // No network entry: the container stays in the shim's, which is the pod's.
            None if kind == "network" => {}
            None => namespaces.push(json!({"type": kind})),
        }
    }
    if cgroup_namespace {
        namespaces.push(json!({"type": "cgroup"}));
    }

    let mut mounts = default_mounts(cgroup_namespace);
    for m in &spec.mounts {
        mounts.push(user_mount(m.kind, &m.source, &m.destination, m.read_only));
    }

    let cgroups_path = format!("/{}", spec.cgroup_path.trim_start_matches('/'));
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": cgroups_path,
        "resources": resources(&spec.resources),
        "maskedPaths": MASKED_PATHS,
        "readonlyPaths": READONLY_PATHS,
    });
    if let Some(profile) = seccomp {
        linux["seccomp"] = profile;
    }

    let cwd = if spec.cwd.as_os_str().is_empty() {
        PathBuf::from("/")
    } else {
        spec.cwd.clone()
    };
    let mut value = json!({
        "ociVersion": "1.0.2",
        "root": { "path": rootfs, "readonly": spec.readonly_rootfs },
        "hostname": spec.hostname,
        "process": {
            "terminal": false,
            "user": { "uid": spec.uid, "gid": spec.gid, "additionalGids": spec.additional_gids },
            "args": spec.args,
            "env": spec.env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
            "noNewPrivileges": spec.no_new_privileges,
        },
        "mounts": mounts,
        "linux": linux,
    });
    if spec.tty {
        value["process"]["terminal"] = json!(true);
        // As containerd does for tty containers, so shells and editors know what they drive.
        if !spec.env.iter().any(|e| e.starts_with("TERM=")) {
            let mut env = spec.env.clone();
            env.push("TERM=xterm".to_string());
            value["process"]["env"] = json!(env);
        }
    }
    if let Some(adj) = spec.oom_score_adj {
        value["process"]["oomScoreAdj"] = json!(adj);
    }
    serde_json::from_value(value).map_err(SpecError::Build)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::types::{MountSpec, RootfsSpec};
    use oci_spec::runtime::{LinuxNamespaceType, LinuxSeccompAction};

    fn sample() -> ContainerSpec {
        ContainerSpec {
            name: "app".into(),
            rootfs: RootfsSpec::Dir("/images/busybox".into()),
            args: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["PATH=/bin".into()],
            cwd: PathBuf::new(),
            uid: 1000,
            gid: 1000,
            additional_gids: vec![5],
            hostname: "web-0".into(),
            mounts: vec![MountSpec {
                source: "/var/lib/data".into(),
                destination: "/data".into(),
                kind: MountKind::Bind,
                read_only: true,
            }],
            netns_path: None,
            cgroup_path: "berth/podabc/app".into(),
            resources: Resources {
                memory_limit: Some(16 << 20),
                pids_limit: Some(64),
                ..Default::default()
            },
            capabilities: None,
            oom_score_adj: Some(500),
            no_new_privileges: true,
            readonly_rootfs: true,
            seccomp: SeccompProfile::RuntimeDefault,
            log_path: "/var/log/app.log".into(),
            log_max_bytes: 1 << 20,
            log_max_files: 2,
            stdin: false,
            stdin_once: false,
            tty: false,
            pid_namespace: None,
        }
    }

    fn pod() -> PodNamespaces {
        PodNamespaces {
            ipc: Some("/proc/42/ns/ipc".into()),
            uts: Some("/proc/42/ns/uts".into()),
        }
    }

    #[test]
    fn containers_join_the_pods_ipc_and_uts_and_inherit_its_network() {
        let oci = build_spec(&sample(), Path::new("/r"), &pod(), None, false).unwrap();
        let namespaces = oci.linux().as_ref().unwrap().namespaces().clone().unwrap();
        let find = |t| namespaces.iter().find(|n| n.typ() == t);
        assert_eq!(
            find(LinuxNamespaceType::Ipc).unwrap().path().as_deref(),
            Some(Path::new("/proc/42/ns/ipc"))
        );
        assert_eq!(
            find(LinuxNamespaceType::Uts).unwrap().path().as_deref(),
            Some(Path::new("/proc/42/ns/uts"))
        );
        assert!(find(LinuxNamespaceType::Pid).unwrap().path().is_none());
        assert!(find(LinuxNamespaceType::Network).is_none());
        assert!(find(LinuxNamespaceType::Cgroup).is_none());
    }

    #[test]
    fn an_explicit_netns_is_joined_and_v2_gets_a_cgroup_namespace() {
        let mut spec = sample();
        spec.netns_path = Some("/run/netns/pod".into());
        let oci = build_spec(&spec, Path::new("/r"), &pod(), None, true).unwrap();
        let namespaces = oci.linux().as_ref().unwrap().namespaces().clone().unwrap();
        let net = namespaces
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::Network)
            .unwrap();
        assert_eq!(net.path().as_deref(), Some(Path::new("/run/netns/pod")));
        assert!(namespaces
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::Cgroup));
        assert!(oci
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.destination() == Path::new("/sys/fs/cgroup")));
    }

    #[test]
    fn a_tty_container_gets_a_terminal_and_term_unless_it_sets_its_own() {
        let plain = build_spec(&sample(), Path::new("/r"), &pod(), None, false).unwrap();
        assert_eq!(plain.process().as_ref().unwrap().terminal(), Some(false));
        let mut spec = sample();
        spec.tty = true;
        let oci = build_spec(&spec, Path::new("/r"), &pod(), None, false).unwrap();
        let process = oci.process().as_ref().unwrap();
        assert_eq!(process.terminal(), Some(true));
        let env = process.env().clone().unwrap();
        assert_eq!(env, vec!["PATH=/bin".to_string(), "TERM=xterm".to_string()]);
        spec.env.push("TERM=vt100".into());
        let own = build_spec(&spec, Path::new("/r"), &pod(), None, false).unwrap();
        let env = own.process().as_ref().unwrap().env().clone().unwrap();
        assert_eq!(env, vec!["PATH=/bin".to_string(), "TERM=vt100".to_string()]);
    }

    #[test]
    fn the_device_list_starts_by_denying_everything() {
        let oci = build_spec(&sample(), Path::new("/r"), &pod(), None, false).unwrap();
        let linux = oci.linux().as_ref().unwrap();
        let resources = linux.resources().as_ref().unwrap();
        let devices = resources.devices().as_ref().unwrap();
        assert!(!devices[0].allow());
        assert_eq!(devices[0].access().as_deref(), Some("rwm"));
        assert!(devices
            .iter()
            .any(|d| d.allow() && d.major() == Some(1) && d.minor() == Some(3)));
        assert_eq!(resources.memory().unwrap().limit(), Some(16 << 20));
        assert_eq!(resources.pids().unwrap().limit(), 64);
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/berth/podabc/app"))
        );
    }

    #[test]
    fn process_gets_user_caps_and_defaults_like_containerd() {
        let oci = build_spec(&sample(), Path::new("/r"), &pod(), None, false).unwrap();
        let process = oci.process().as_ref().unwrap();
        assert_eq!(process.user().uid(), 1000);
        assert_eq!(
            process.user().additional_gids().as_deref(),
            Some(&[5u32][..])
        );
        assert_eq!(process.cwd(), Path::new("/"));
        assert_eq!(process.no_new_privileges(), Some(true));
        assert_eq!(process.oom_score_adj(), Some(500));
        let bounding = process
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .clone()
            .unwrap();
        assert_eq!(bounding.len(), DEFAULT_CAPABILITIES.len());
        assert!(oci.root().as_ref().unwrap().readonly().unwrap());
        let masked = oci
            .linux()
            .as_ref()
            .unwrap()
            .masked_paths()
            .clone()
            .unwrap();
        assert!(masked.iter().any(|p| p == "/proc/kcore"));
        let mounts = oci.mounts().as_ref().unwrap();
        let data = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/data"))
            .unwrap();
        assert!(data.options().as_ref().unwrap().iter().any(|o| o == "ro"));
        assert!(mounts
            .iter()
            .any(|m| m.destination() == Path::new("/dev/shm")));
    }

    #[test]
    fn runtime_default_seccomp_lands_in_the_spec_and_unconfined_leaves_none() {
        let spec = sample();
        let profile = resolve_seccomp(&spec).unwrap();
        let oci = build_spec(&spec, Path::new("/r"), &pod(), profile, false).unwrap();
        let seccomp = oci.linux().as_ref().unwrap().seccomp().clone().unwrap();
        assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActErrno);

        let mut unconfined = sample();
        unconfined.seccomp = SeccompProfile::Unconfined;
        assert!(resolve_seccomp(&unconfined).unwrap().is_none());
    }

    #[test]
    fn a_missing_localhost_profile_fails_closed() {
        let mut spec = sample();
        spec.seccomp = SeccompProfile::Localhost("/nonexistent/profile.json".into());
        assert!(matches!(
            resolve_seccomp(&spec),
            Err(SpecError::ReadProfile { .. })
        ));
    }
}
