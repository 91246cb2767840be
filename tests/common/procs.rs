//! What benches read from /proc: berth's shims, memory (PSS, RSS), CPU time.

use std::path::Path;
use std::time::{Duration, Instant};

/// PIDs of processes whose command line (arguments joined by NULs) contains `needle`.
pub fn processes_whose_cmdline_contains(needle: &str) -> Vec<u32> {
    processes_whose_cmdline(|cmdline| {
        let needle = needle.as_bytes();
        cmdline.windows(needle.len()).any(|w| w == needle)
    })
}

fn processes_whose_cmdline(wanted: impl Fn(&[u8]) -> bool) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| wanted(&c)))
        .collect()
}

/// The shims of the pods under `pods_dir`: processes run as `berth shim --dir <pods_dir>/<uid>`.
pub fn shims(pods_dir: &Path) -> Vec<u32> {
    let wanted = format!("\0shim\0--dir\0{}/", pods_dir.display());
    processes_whose_cmdline_contains(&wanted)
}

/// Proportional set size in KiB (shared pages divided among their users), 0 for a process gone.
pub fn pss_kib(pid: u32) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    rollup
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub struct Memory {
    pub daemon_kib: u64,
    pub shims_kib: u64,
    pub shims: usize,
}

impl Memory {
    pub fn read(daemon: u32, pods_dir: &Path) -> Memory {
        let shims = shims(pods_dir);
        Memory {
            daemon_kib: pss_kib(daemon),
            shims_kib: shims.iter().map(|pid| pss_kib(*pid)).sum(),
            shims: shims.len(),
        }
    }

    pub fn total_kib(&self) -> u64 {
        self.daemon_kib + self.shims_kib
    }
}

/// A size in KiB from `/proc/<pid>/status` (`"VmRSS"`, `"RssAnon"`, `"RssFile"`), 0 for a
/// process gone.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| {
            l.strip_prefix(field)
                .is_some_and(|rest| rest.starts_with(':'))
        })
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Clock ticks per second, the unit of `cpu_ticks`.
pub fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

/// User + system CPU time of a process (all its threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which may itself hold spaces and parentheses.
    let Some((_, after)) = stat.rsplit_once(") ") else {
        return 0;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command name.
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// The shares of one core the daemon and the shims under `pods_dir` used over `window`.
pub async fn cpu_share(daemon: u32, pods_dir: &Path, window: Duration) -> (f64, f64) {
    let ticks = || {
        let shims = shims(pods_dir);
        (
            cpu_ticks(daemon),
            shims.iter().map(|pid| cpu_ticks(*pid)).sum::<u64>(),
        )
    };
    let before = ticks();
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let after = ticks();
    let share = |used: u64| used as f64 / ticks_per_second() / started.elapsed().as_secs_f64();
    (
        share(after.0.saturating_sub(before.0)),
        share(after.1.saturating_sub(before.1)),
    )
}
