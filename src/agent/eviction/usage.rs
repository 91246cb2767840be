//! What the node and each pod use of the resources eviction ranks by, beyond memory: task ids
//! (upstream's `pid.available` from `pidlimit`) and local disk (upstream's ephemeral storage:
//! the containers' writable layers, their logs and the pod's disk-backed emptyDirs).
//!
//! Disk use is walked, like `du`, and only when the node is under disk pressure: it costs a
//! stat per file.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::thresholds::Observation;

/// The node's task ids: the smaller of the kernel's two limits on tasks, and how many are
/// left, read from `/proc` as upstream does.
pub fn pid_observation() -> Option<Observation> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let capacity = task_limit(
        read("/proc/sys/kernel/pid_max").as_deref(),
        read("/proc/sys/kernel/threads-max").as_deref(),
    )?;
    let running = running_tasks(&read("/proc/loadavg")?)?;
    Some(Observation {
        available: capacity.saturating_sub(running),
        capacity,
    })
}

/// The smaller of `pid_max` and `threads-max`; either alone when the other is unreadable.
pub fn task_limit(pid_max: Option<&str>, threads_max: Option<&str>) -> Option<u64> {
    [pid_max, threads_max]
        .into_iter()
        .flatten()
        .filter_map(|text| text.trim().parse::<u64>().ok())
        .min()
}

/// The number of tasks (threads) alive, the denominator of `/proc/loadavg`'s fourth field
/// (`sysinfo(2)` truncates it above 65535, upstream found).
pub fn running_tasks(loadavg: &str) -> Option<u64> {
    let field = loadavg.split_whitespace().nth(3)?;
    field.split_once('/')?.1.parse().ok()
}

/// Tasks per container of every pod (uid → container → tasks), counted in their cgroups.
pub fn pod_tasks() -> BTreeMap<String, BTreeMap<String, u64>> {
    let Some(hierarchies) = crate::runtime::stats::Hierarchies::detect() else {
        return BTreeMap::new();
    };
    let mut pods = BTreeMap::new();
    for child in hierarchies.children(crate::metrics::POD_ROOT) {
        let Some(uid) = child.strip_prefix("pod") else {
            continue;
        };
        let parent = crate::runtime::cgroups::pod_cgroup_parent(uid);
        let containers = hierarchies
            .children(&parent)
            .into_iter()
            .filter_map(|name| {
                let path = crate::runtime::cgroups::container_cgroup_path(&parent, &name);
                Some((name, hierarchies.tasks(&path)?))
            })
            .collect();
        pods.insert(uid.to_string(), containers);
    }
    pods
}

/// Where one pod keeps what counts as its ephemeral storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDisk {
    /// Per container: its writable layer and its log directory.
    pub containers: BTreeMap<String, Vec<PathBuf>>,
    /// The pod's disk-backed emptyDir volumes (memory-backed ones are memory, not disk).
    pub volumes: Vec<PathBuf>,
}

/// Bytes and inodes a tree holds on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUse {
    pub bytes: u64,
    pub inodes: u64,
}

impl std::ops::AddAssign for DiskUse {
    fn add_assign(&mut self, other: DiskUse) {
        self.bytes += other.bytes;
        self.inodes += other.inodes;
    }
}

/// Key under which a pod's volumes are counted beside its containers: no container can have
/// this name (names are DNS labels), and the rank sums all entries.
pub const POD_VOLUMES: &str = "";

impl PodDisk {
    /// What the pod uses, per container and (under [`POD_VOLUMES`]) for its volumes.
    /// Blocking.
    pub fn measure(&self) -> BTreeMap<String, DiskUse> {
        let mut usage: BTreeMap<String, DiskUse> = self
            .containers
            .iter()
            .map(|(name, dirs)| (name.clone(), dirs.iter().map(|d| du(d)).sum_use()))
            .collect();
        if !self.volumes.is_empty() {
            usage.insert(
                POD_VOLUMES.to_string(),
                self.volumes.iter().map(|d| du(d)).sum_use(),
            );
        }
        usage
    }
}

trait SumUse {
    fn sum_use(self) -> DiskUse;
}

impl<I: Iterator<Item = DiskUse>> SumUse for I {
    fn sum_use(self) -> DiskUse {
        let mut total = DiskUse::default();
        for u in self {
            total += u;
        }
        total
    }
}

/// Disk use of everything below `root` (itself included), as `du` counts it: allocated
/// blocks, each inode once however many links it has, without following symlinks or
/// crossing into other filesystems (a memory-backed emptyDir, a bind mount). A missing
/// `root` uses nothing.
pub fn du(root: &Path) -> DiskUse {
    let Ok(meta) = std::fs::symlink_metadata(root) else {
        return DiskUse::default();
    };
    let device = meta.dev();
    let mut seen = std::collections::HashSet::new();
    let mut total = DiskUse::default();
    let mut pending = vec![(root.to_path_buf(), meta)];
    while let Some((path, meta)) = pending.pop() {
        if meta.dev() != device {
            continue;
        }
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += DiskUse {
            bytes: meta.blocks() * 512,
            inodes: 1,
        };
        if !meta.is_dir() {
            continue;
        }
        // A directory that vanished or cannot be read while we walk counts as what we saw.
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            if let Ok(meta) = entry.metadata() {
                pending.push((entry.path(), meta));
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_task_limit_is_the_smaller_of_the_kernels_two() {
        assert_eq!(
            task_limit(Some("4194304\n"), Some("126000\n")),
            Some(126000)
        );
        assert_eq!(task_limit(Some("32768\n"), None), Some(32768));
        assert_eq!(task_limit(Some("garbage"), Some("99\n")), Some(99));
        assert_eq!(task_limit(None, None), None);
    }

    #[test]
    fn running_tasks_are_loadavgs_fourth_field_denominator() {
        assert_eq!(running_tasks("1.36 3.49 4.53 2/3518 3715089\n"), Some(3518));
        assert_eq!(running_tasks("1.36 3.49"), None);
        assert_eq!(running_tasks("0 0 0 12 1"), None);
    }

    #[test]
    fn the_live_node_has_fewer_tasks_than_its_limit() {
        let observed = pid_observation().expect("/proc is readable");
        assert!(observed.available > 0 && observed.available < observed.capacity);
    }

    #[test]
    fn du_counts_blocks_and_inodes_and_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        let empty = du(dir.path());
        assert_eq!(empty.inodes, 1);
        let data = vec![7u8; 256 * 1024];
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/big"), &data).unwrap();
        std::fs::hard_link(dir.path().join("sub/big"), dir.path().join("again")).unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("root-link")).unwrap();
        let used = du(dir.path());
        // The directory, sub, big (once) and the symlink itself.
        assert_eq!(used.inodes, 4);
        assert!(
            used.bytes >= data.len() as u64 && used.bytes < 2 * data.len() as u64,
            "{used:?}"
        );
        assert_eq!(du(&dir.path().join("missing")), DiskUse::default());
    }

    #[test]
    fn a_pods_volumes_are_counted_apart_from_its_containers() {
        let dir = tempfile::tempdir().unwrap();
        let (layer, logs, volume) = (
            dir.path().join("layer"),
            dir.path().join("logs"),
            dir.path().join("volume"),
        );
        for d in [&layer, &logs, &volume] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(layer.join("f"), vec![1u8; 64 * 1024]).unwrap();
        std::fs::write(volume.join("f"), vec![1u8; 128 * 1024]).unwrap();
        let pod = PodDisk {
            containers: BTreeMap::from([("main".to_string(), vec![layer, logs])]),
            volumes: vec![volume],
        };
        let usage = pod.measure();
        assert!(usage["main"].bytes >= 64 * 1024 && usage["main"].bytes < 128 * 1024);
        assert_eq!(usage["main"].inodes, 3);
        assert!(usage[POD_VOLUMES].bytes >= 128 * 1024);
    }
}
