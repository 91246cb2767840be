//! Cgroup hierarchy detection (v1, hybrid, v2), the pod's cgroup paths, OOM-kill counters and
//! the cleanup libcontainer leaves to us: `delete()` removes a container's own cgroup but not the
//! pod's parent directories.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("remove cgroup {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup path {0:?} must be relative and must not contain '..'")]
    BadPath(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// Only v1 controller hierarchies.
    V1,
    /// v1 controllers plus an (often empty) cgroup2 hierarchy, usually at
    /// `/sys/fs/cgroup/unified`.
    Hybrid,
    /// One cgroup2 hierarchy.
    V2,
}

/// One cgroup filesystem mount from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub mount_point: PathBuf,
    pub v2: bool,
    /// v1 controllers bound to this hierarchy (`memory`, `cpu`, ...); empty for v2.
    pub controllers: Vec<String>,
    /// The filesystem's own options as mounted (`rw,nsdelegate`, `rw,memory`).
    pub super_options: String,
}

/// cgroup v1 super options that are not controller names.
const MOUNT_OPTIONS: &[&str] = &[
    "rw",
    "ro",
    "xattr",
    "noprefix",
    "clone_children",
    "cpuset_v2_mode",
    "favordynmods",
];

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// The cgroup mounts listed in a mountinfo text.
pub fn parse_cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    let mut mounts = Vec::new();
    for line in mountinfo.lines() {
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = before.split(' ').nth(4) else {
            continue;
        };
        let mut after = after.split(' ');
        let fstype = after.next().unwrap_or_default();
        let super_options = after.nth(1).unwrap_or_default();
        let v2 = match fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        let controllers = if v2 {
            Vec::new()
        } else {
            super_options
                .split(',')
                .filter(|o| !MOUNT_OPTIONS.contains(o) && !o.contains('='))
                .map(str::to_string)
                .collect()
        };
        mounts.push(CgroupMount {
            mount_point: PathBuf::from(mount_point),
            v2,
            controllers,
            super_options: super_options.to_string(),
        });
    }
    mounts
}

pub fn mode_of(mounts: &[CgroupMount]) -> CgroupMode {
    let any_v1 = mounts.iter().any(|m| !m.v2);
    let any_v2 = mounts.iter().any(|m| m.v2);
    match (any_v1, any_v2) {
        (true, true) => CgroupMode::Hybrid,
        (true, false) => CgroupMode::V1,
        // No cgroup mounts at all is unusable either way; v2 is the modern default.
        (false, _) => CgroupMode::V2,
    }
}

fn read_mounts() -> Result<Vec<CgroupMount>, CgroupError> {
    let text = std::fs::read_to_string(MOUNTINFO).map_err(|source| CgroupError::Read {
        path: MOUNTINFO.into(),
        source,
    })?;
    Ok(parse_cgroup_mounts(&text))
}

/// Detects the host's cgroup mode from this process's mount table.
pub fn detect() -> Result<CgroupMode, CgroupError> {
    Ok(mode_of(&read_mounts()?))
}

/// The pod's cgroup parent, relative to the cgroup root.
pub fn pod_cgroup_parent(pod_uid: &str) -> String {
    format!("berth/pod{pod_uid}")
}

/// A container's cgroup under its pod's parent.
pub fn container_cgroup_path(pod_parent: &str, container: &str) -> String {
    format!("{}/{}", pod_parent.trim_end_matches('/'), container)
}

fn check_relative(path: &str) -> Result<&str, CgroupError> {
    let trimmed = path.trim_start_matches('/');
    if trimmed.is_empty() || trimmed.split('/').any(|part| part == ".." || part == ".") {
        return Err(CgroupError::BadPath(path.to_string()));
    }
    Ok(trimmed)
}

/// The directory holding the memory controller's files for `cgroup_path`.
pub fn memory_dir(mounts: &[CgroupMount], cgroup_path: &str) -> Option<PathBuf> {
    let relative = check_relative(cgroup_path).ok()?;
    let v1 = mounts
        .iter()
        .find(|m| !m.v2 && m.controllers.iter().any(|c| c == "memory"));
    let mount = v1.or_else(|| mounts.iter().find(|m| m.v2))?;
    Some(mount.mount_point.join(relative))
}

/// Parses the `oom_kill` counter from v1 `memory.oom_control` or v2 `memory.events`.
pub fn parse_oom_kill_count(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill ")?.trim().parse().ok())
}

/// How many processes of the cgroup the kernel OOM-killed; `None` if unknown.
pub fn oom_kill_count(cgroup_path: &str) -> Option<u64> {
    let mounts = read_mounts().ok()?;
    let v1 = mounts
        .iter()
        .any(|m| !m.v2 && m.controllers.iter().any(|c| c == "memory"));
    let dir = memory_dir(&mounts, cgroup_path)?;
    let file = if v1 {
        "memory.oom_control"
    } else {
        "memory.events"
    };
    parse_oom_kill_count(&std::fs::read_to_string(dir.join(file)).ok()?)
}

/// Every directory to remove for `cgroup_path`, deepest first, in every hierarchy.
pub fn removal_order(
    mounts: &[CgroupMount],
    cgroup_path: &str,
) -> Result<Vec<PathBuf>, CgroupError> {
    let relative = check_relative(cgroup_path)?;
    let mut dirs = Vec::new();
    for mount in mounts {
        let root = mount.mount_point.join(relative);
        collect_depth_first(&root, &mut dirs);
    }
    Ok(dirs)
}

fn collect_depth_first(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            collect_depth_first(&entry.path(), out);
        }
    }
    out.push(dir.to_path_buf());
}

/// Removes `cgroup_path` and every cgroup below it from all hierarchies, named ones (`systemd`)
/// and the cgroup2 one of a hybrid host included. The cgroups must hold no processes any more.
/// Missing directories are fine: cleanup is idempotent.
///
/// A directory that stays busy does not stop the sweep: every hierarchy is tried, busy
/// directories are retried for up to [`BUSY_RETRY`], and the first failure is returned. This
/// blocks.
pub fn remove_tree(cgroup_path: &str) -> Result<(), CgroupError> {
    let mounts = read_mounts()?;
    let deadline = std::time::Instant::now() + BUSY_RETRY;
    let mut first_error = None;
    for dir in removal_order(&mounts, cgroup_path)? {
        if let Err(e) = remove_dir_until(&dir, deadline) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn remove_dir_until(dir: &Path, deadline: std::time::Instant) -> Result<(), CgroupError> {
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e)
                if e.raw_os_error() == Some(libc::EBUSY)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// How long [`remove_tree`] waits for busy directories to empty.
const BUSY_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// How long killed processes get to leave their cgroups before their removal is tried anyway.
pub const DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// SIGKILLs every process in `cgroup_path` or below, in any hierarchy, until none is left or
/// `patience` has passed; how many signals were sent. A shim that died leaves its containers
/// running (they are re-parented, not killed), and their cgroups cannot go while they live.
/// This blocks.
pub fn kill_tree(cgroup_path: &str, patience: std::time::Duration) -> Result<usize, CgroupError> {
    let deadline = std::time::Instant::now() + patience;
    let mut signalled = 0;
    loop {
        let pids = pids_in_tree(cgroup_path)?;
        if pids.is_empty() || std::time::Instant::now() > deadline {
            return Ok(signalled);
        }
        for pid in pids {
            let killed = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            if killed.is_ok() {
                signalled += 1;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Every process still in `cgroup_path` or below, in any hierarchy (duplicates removed).
pub fn pids_in_tree(cgroup_path: &str) -> Result<Vec<i32>, CgroupError> {
    let mounts = read_mounts()?;
    let mut pids: Vec<i32> = removal_order(&mounts, cgroup_path)?
        .iter()
        .filter_map(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<_>>()
        })
        // A process of another pid namespace reads as 0, and kill(0) would hit our own group.
        .filter(|pid| *pid > 0)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// Moves the calling process into `cgroup_path` in every hierarchy that accepts it, creating
/// the directories. v1 cpuset hierarchies are skipped: a new cpuset cgroup has no CPUs until
/// configured, and cpusets play no part in who gets killed with whom.
/// Returns the hierarchies that refused, for the caller to report.
pub fn join(cgroup_path: &str) -> Result<Vec<(PathBuf, std::io::Error)>, CgroupError> {
    let relative = check_relative(cgroup_path)?;
    let pid = std::process::id().to_string();
    let mut refused = Vec::new();
    for mount in read_mounts()? {
        if mount.controllers.iter().any(|c| c == "cpuset") {
            continue;
        }
        let dir = mount.mount_point.join(relative);
        let joined = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join("cgroup.procs"), &pid));
        if let Err(e) = joined {
            refused.push((dir, e));
        }
    }
    Ok(refused)
}

/// `cgroup.procs` of `cgroup_path` in the first hierarchy [`join`] puts a process in (cpuset
/// aside) where the cgroup exists.
pub fn procs_file(cgroup_path: &str) -> Option<PathBuf> {
    let relative = check_relative(cgroup_path).ok()?;
    read_mounts()
        .ok()?
        .into_iter()
        .filter(|m| !m.controllers.iter().any(|c| c == "cpuset"))
        .map(|m| m.mount_point.join(relative).join("cgroup.procs"))
        .find(|procs| procs.exists())
}

/// Whether any hierarchy still has a directory for `cgroup_path`.
pub fn exists_anywhere(cgroup_path: &str) -> Result<bool, CgroupError> {
    let relative = check_relative(cgroup_path)?;
    Ok(read_mounts()?
        .iter()
        .any(|m| m.mount_point.join(relative).exists()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
36 31 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
37 31 0:32 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpu,cpuacct
";
    const V2: &str = "\
29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn hybrid_hosts_are_told_apart_from_pure_v1_and_v2() {
        let hybrid = parse_cgroup_mounts(HYBRID);
        assert_eq!(mode_of(&hybrid), CgroupMode::Hybrid);
        assert_eq!(mode_of(&parse_cgroup_mounts(V2)), CgroupMode::V2);
        let v1_only: Vec<_> = hybrid.into_iter().filter(|m| !m.v2).collect();
        assert_eq!(mode_of(&v1_only), CgroupMode::V1);
    }

    #[test]
    fn v1_controllers_are_read_from_super_options() {
        let mounts = parse_cgroup_mounts(HYBRID);
        let cpu = mounts
            .iter()
            .find(|m| m.mount_point.ends_with("cpu,cpuacct"))
            .unwrap();
        assert_eq!(cpu.controllers, vec!["cpu", "cpuacct"]);
        let named = mounts
            .iter()
            .find(|m| m.mount_point.ends_with("systemd"))
            .unwrap();
        assert!(named.controllers.is_empty());
    }

    #[test]
    fn mount_options_are_not_taken_for_controllers() {
        let mounts = parse_cgroup_mounts(
            "40 31 0:32 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids,favordynmods\n",
        );
        assert_eq!(mounts[0].controllers, vec!["pids"]);
    }

    #[test]
    fn memory_files_live_in_the_v1_memory_hierarchy_when_there_is_one() {
        let hybrid = parse_cgroup_mounts(HYBRID);
        assert_eq!(
            memory_dir(&hybrid, "berth/podx/app"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/berth/podx/app"))
        );
        let v2 = parse_cgroup_mounts(V2);
        assert_eq!(
            memory_dir(&v2, "/berth/podx/app"),
            Some(PathBuf::from("/sys/fs/cgroup/berth/podx/app"))
        );
    }

    #[test]
    fn pod_and_container_paths_nest() {
        let parent = pod_cgroup_parent("1234");
        assert_eq!(parent, "berth/pod1234");
        assert_eq!(container_cgroup_path(&parent, "app"), "berth/pod1234/app");
    }

    #[test]
    fn paths_that_escape_the_hierarchy_are_refused() {
        let mounts = parse_cgroup_mounts(V2);
        assert!(removal_order(&mounts, "berth/../../etc").is_err());
        assert!(removal_order(&mounts, "/").is_err());
        assert!(memory_dir(&mounts, "..").is_none());
    }

    #[test]
    fn removal_goes_deepest_first() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("berth/podx/app")).unwrap();
        std::fs::create_dir_all(root.path().join("berth/podx/side")).unwrap();
        let mounts = vec![CgroupMount {
            mount_point: root.path().into(),
            v2: true,
            controllers: vec![],
            super_options: "rw".into(),
        }];
        let order = removal_order(&mounts, "berth/podx").unwrap();
        assert_eq!(order.len(), 3);
        assert_eq!(order.last().unwrap(), &root.path().join("berth/podx"));
    }

    #[test]
    fn oom_kill_counters_parse_from_v1_and_v2_files() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        let v2 = "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_oom_kill_count(v1), Some(2));
        assert_eq!(parse_oom_kill_count(v2), Some(1));
        assert_eq!(parse_oom_kill_count("oom 3\n"), None);
    }
}
