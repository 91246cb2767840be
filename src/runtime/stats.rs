//! Resource usage read straight from the kernel: cumulative CPU time and memory working set of
//! a cgroup (v1 and v2), and of the whole node from `/proc`.
//!
//! The working set is what upstream's kubelet (through cAdvisor) reports and what the kernel
//! would not reclaim easily: usage minus inactive file cache.

use std::path::{Path, PathBuf};

use super::cgroups::{self, CgroupMount};

/// One reading of a cgroup or of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// CPU time consumed since the cgroup (or boot) began, in nanoseconds.
    pub cpu_ns: u64,
    /// Memory working set in bytes.
    pub memory_working_set: u64,
}

/// Where a cgroup's CPU and memory accounting files live, found once per sampling round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchies {
    /// The hierarchy with CPU accounting (v1 `cpuacct`, or the v2 root).
    cpu: PathBuf,
    /// The hierarchy with memory accounting (v1 `memory`, or the v2 root).
    memory: PathBuf,
    v1: bool,
}

impl Hierarchies {
    /// The v1 accounting hierarchies when the host mounts them (v1 and hybrid hosts, where
    /// containers live in v1), else the v2 hierarchy.
    pub fn of(mounts: &[CgroupMount]) -> Option<Hierarchies> {
        let v1_with = |controller: &str| {
            mounts
                .iter()
                .find(|m| !m.v2 && m.controllers.iter().any(|c| c == controller))
                .map(|m| m.mount_point.clone())
        };
        if let (Some(cpu), Some(memory)) = (v1_with("cpuacct"), v1_with("memory")) {
            return Some(Hierarchies {
                cpu,
                memory,
                v1: true,
            });
        }
        let v2 = mounts.iter().find(|m| m.v2)?.mount_point.clone();
        Some(Hierarchies {
            cpu: v2.clone(),
            memory: v2,
            v1: false,
        })
    }

    /// The host's hierarchies, from this process's mount table.
    pub fn detect() -> Option<Hierarchies> {
        let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        Hierarchies::of(&cgroups::parse_cgroup_mounts(&text))
    }

    /// The names of the cgroups directly below `cgroup_path` (a pod's containers, the berth
    /// root's pods). Empty when the cgroup does not exist.
    pub fn children(&self, cgroup_path: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.cpu.join(cgroup_path)) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    }

    /// The tasks (threads) in `cgroup_path` itself; `None` when it has gone.
    pub fn tasks(&self, cgroup_path: &str) -> Option<u64> {
        let relative = cgroup_path.trim_start_matches('/');
        if relative.split('/').any(|part| part == "..") {
            return None;
        }
        // v1 lists a cgroup's threads in `tasks`, v2 in `cgroup.threads`.
        let file = if self.v1 { "tasks" } else { "cgroup.threads" };
        let text = std::fs::read_to_string(self.cpu.join(relative).join(file)).ok()?;
        Some(text.lines().filter(|l| !l.trim().is_empty()).count() as u64)
    }

    /// The usage of `cgroup_path` and everything below it; `None` when it has gone.
    pub fn usage(&self, cgroup_path: &str) -> Option<Usage> {
        let relative = cgroup_path.trim_start_matches('/');
        if relative.split('/').any(|part| part == "..") {
            return None;
        }
        let cpu_dir = self.cpu.join(relative);
        let memory_dir = self.memory.join(relative);
        if self.v1 {
            let cpu_ns = read_trimmed(&cpu_dir.join("cpuacct.usage"))?.parse().ok()?;
            let usage: u64 = read_trimmed(&memory_dir.join("memory.usage_in_bytes"))?
                .parse()
                .ok()?;
            let stat = std::fs::read_to_string(memory_dir.join("memory.stat")).ok()?;
            // v1's hierarchical counter: the cgroup's own file counts its children too.
            let inactive = stat_value(&stat, "total_inactive_file").unwrap_or(0);
            Some(Usage {
                cpu_ns,
                memory_working_set: usage.saturating_sub(inactive),
            })
        } else {
            let cpu_stat = std::fs::read_to_string(cpu_dir.join("cpu.stat")).ok()?;
            let cpu_ns = stat_value(&cpu_stat, "usage_usec")?.saturating_mul(1000);
            let usage: u64 = read_trimmed(&memory_dir.join("memory.current"))?
                .parse()
                .ok()?;
            let stat = std::fs::read_to_string(memory_dir.join("memory.stat")).ok()?;
            let inactive = stat_value(&stat, "inactive_file").unwrap_or(0);
            Some(Usage {
                cpu_ns,
                memory_working_set: usage.saturating_sub(inactive),
            })
        }
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    Some(std::fs::read_to_string(path).ok()?.trim().to_string())
}

/// The value of `key` in a `key value` per line file (`memory.stat`, `cpu.stat`).
pub fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// The node's usage: busy CPU time of all CPUs from `/proc/stat`, and the working set from
/// `/proc/meminfo`.
pub fn node_usage() -> Option<Usage> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    Some(Usage {
        cpu_ns: busy_cpu_ns(&stat, clock_ticks_per_second())?,
        memory_working_set: node_working_set(&meminfo)?,
    })
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant of the running system; it takes no pointers.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// Busy CPU time of the aggregate `cpu` line of `/proc/stat`: everything but idle and iowait.
/// guest time is already counted in user time, so it is left out.
pub fn busy_cpu_ns(proc_stat: &str, ticks_per_second: u64) -> Option<u64> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice
    let busy: u64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| *v)
        .sum();
    if fields.len() < 4 || ticks_per_second == 0 {
        return None;
    }
    Some(busy.saturating_mul(1_000_000_000) / ticks_per_second)
}

/// The node's working set: memory in use (total − free) minus the inactive file cache, as the
/// root cgroup's usage − inactive_file would give.
pub fn node_working_set(meminfo: &str) -> Option<u64> {
    let kib = |key: &str| {
        meminfo.lines().find_map(|line| {
            let rest = line.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let total = kib("MemTotal")?;
    let free = kib("MemFree")?;
    let inactive_file = kib("Inactive(file)").unwrap_or(0);
    Some(
        total
            .saturating_sub(free)
            .saturating_sub(inactive_file)
            .saturating_mul(1024),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(dir: &Path, v2: bool, controllers: &[&str]) -> CgroupMount {
        CgroupMount {
            mount_point: dir.to_path_buf(),
            v2,
            controllers: controllers.iter().map(|c| c.to_string()).collect(),
            super_options: "rw".into(),
        }
    }

    #[test]
    fn v1_usage_is_cpuacct_time_and_usage_minus_total_inactive_file() {
        let root = tempfile::tempdir().unwrap();
        let cpu = root.path().join("cpuacct");
        let memory = root.path().join("memory");
        std::fs::create_dir_all(cpu.join("berth/podx/app")).unwrap();
        std::fs::create_dir_all(memory.join("berth/podx/app")).unwrap();
        std::fs::write(cpu.join("berth/podx/app/cpuacct.usage"), "123456789\n").unwrap();
        std::fs::write(
            memory.join("berth/podx/app/memory.usage_in_bytes"),
            "10485760\n",
        )
        .unwrap();
        std::fs::write(
            memory.join("berth/podx/app/memory.stat"),
            "cache 100\ninactive_file 1\ntotal_inactive_file 2097152\n",
        )
        .unwrap();
        let mounts = vec![
            mount(&cpu, false, &["cpuacct"]),
            mount(&memory, false, &["memory"]),
            mount(&root.path().join("unified"), true, &[]),
        ];
        let hierarchies = Hierarchies::of(&mounts).unwrap();
        assert_eq!(
            hierarchies.usage("berth/podx/app"),
            Some(Usage {
                cpu_ns: 123456789,
                memory_working_set: 8 * 1024 * 1024
            })
        );
        assert_eq!(hierarchies.children("berth/podx"), vec!["app".to_string()]);
        assert_eq!(hierarchies.usage("berth/gone"), None);
    }

    #[test]
    fn v2_usage_is_usage_usec_and_memory_current_minus_inactive_file() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("berth/podx")).unwrap();
        let dir = root.path().join("berth/podx");
        std::fs::write(dir.join("cpu.stat"), "usage_usec 2500\nuser_usec 2000\n").unwrap();
        std::fs::write(dir.join("memory.current"), "4096\n").unwrap();
        std::fs::write(dir.join("memory.stat"), "anon 3000\ninactive_file 1024\n").unwrap();
        let hierarchies = Hierarchies::of(&[mount(root.path(), true, &[])]).unwrap();
        assert_eq!(
            hierarchies.usage("/berth/podx"),
            Some(Usage {
                cpu_ns: 2_500_000,
                memory_working_set: 3072
            })
        );
    }

    #[test]
    fn paths_leaving_the_hierarchy_are_not_read() {
        let root = tempfile::tempdir().unwrap();
        let hierarchies = Hierarchies::of(&[mount(root.path(), true, &[])]).unwrap();
        assert_eq!(hierarchies.usage("berth/../../etc"), None);
    }

    #[test]
    fn node_cpu_counts_busy_ticks_but_not_idle_or_iowait() {
        let stat = "cpu  100 10 50 1000 30 5 5 0 7 0\ncpu0 50 5 25 500 15 2 2 0 0 0\n";
        // user + nice + system + irq + softirq + steal = 170 ticks at 100 Hz = 1.7 s
        assert_eq!(busy_cpu_ns(stat, 100), Some(1_700_000_000));
        assert_eq!(busy_cpu_ns("intr 1 2\n", 100), None);
    }

    #[test]
    fn node_working_set_leaves_out_free_memory_and_inactive_file_cache() {
        let meminfo = "MemTotal:       1000 kB\nMemFree:         200 kB\nMemAvailable:    600 kB\nInactive(file):  300 kB\n";
        assert_eq!(node_working_set(meminfo), Some(500 * 1024));
        assert_eq!(node_working_set("MemFree: 1 kB\n"), None);
    }
}
