//! `berth check`: a preflight of this machine with one line per item and, for each problem, the
//! fix. Exits non-zero when berth cannot run here.
//!
//! The checks read what the kernel publishes (`/proc`, `/sys`, the kernel config) and never
//! change the system, except `--fix`, which only edits the boot command line (with a backup) so
//! the memory cgroup is enabled at the next boot: the one fix Raspberry Pi OS users need most.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use super::CommonArgs;
use crate::config::Config;

/// Oldest kernel berth is tested against (cgroup and nftables features it relies on).
const MIN_KERNEL: (u32, u32) = (5, 4);
/// Below these, berth starts but pods will be squeezed or evicted quickly.
const LOW_MEMORY_BYTES: u64 = 256 << 20;
const LOW_DISK_BYTES: u64 = 1 << 30;
/// Below this there is no room for the store and one image.
const MIN_DISK_BYTES: u64 = 200 << 20;
/// The kernel parameters Raspberry Pi OS needs before the memory cgroup works.
const PI_MEMORY_CGROUP_PARAMS: &[&str] = &["cgroup_memory=1", "cgroup_enable=memory"];
/// Where Raspberry Pi OS keeps the kernel command line (Bookworm, then older releases).
const PI_CMDLINE_FILES: &[&str] = &["/boot/firmware/cmdline.txt", "/boot/cmdline.txt"];

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Fix what can be fixed here: add the memory cgroup parameters to the boot command line
    /// (a backup is kept next to it); takes effect after a reboot.
    #[arg(long)]
    pub fix: bool,
    /// The boot command line file to check and fix (default: Raspberry Pi OS's, when present).
    #[arg(long, hide = true)]
    pub boot_cmdline: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Ok,
    /// Works as it is; a change to the system would make berth faster.
    Hint,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub verdict: Verdict,
    pub item: &'static str,
    pub detail: String,
    /// What to do about it, for warnings and failures.
    pub fix: Option<String>,
}

impl Finding {
    fn ok(item: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            verdict: Verdict::Ok,
            item,
            detail: detail.into(),
            fix: None,
        }
    }
    fn hint(item: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding::with_fix(Verdict::Hint, item, detail.into(), fix.into())
    }
    fn warn(item: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding::with_fix(Verdict::Warn, item, detail.into(), fix.into())
    }
    fn fail(item: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding::with_fix(Verdict::Fail, item, detail.into(), fix.into())
    }
    fn with_fix(verdict: Verdict, item: &'static str, detail: String, fix: String) -> Finding {
        Finding {
            verdict,
            item,
            detail,
            fix: Some(fix),
        }
    }

    fn line(&self) -> String {
        let tag = match self.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Hint => "hint",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        match &self.fix {
            Some(fix) => format!("{tag}  {}: {} (fix: {fix})", self.item, self.detail),
            None => format!("{tag}  {}: {}", self.item, self.detail),
        }
    }
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let config = args.common.load()?;
    let cmdline_file = args.boot_cmdline.clone().or_else(|| {
        PI_CMDLINE_FILES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    });
    if args.fix {
        if let Some(file) = &cmdline_file {
            if let Some(message) = fix_boot_cmdline(file)? {
                println!("fixed {}: {message}", file.display());
            }
        }
    }
    let findings = check_all(&config, cmdline_file.as_deref());
    for finding in &findings {
        println!("{}", finding.line());
    }
    let worst = findings
        .iter()
        .map(|f| f.verdict)
        .max()
        .unwrap_or(Verdict::Ok);
    Ok(if worst == Verdict::Fail {
        eprintln!("berth: this machine cannot run berth yet: see the FAIL lines above");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn check_all(config: &Config, cmdline_file: Option<&Path>) -> Vec<Finding> {
    let mut findings = vec![check_root()];
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    findings.push(check_kernel_version(&release));
    findings.extend(check_kernel_features(&KernelFacts::read(&release)));
    let proc_cgroups = std::fs::read_to_string("/proc/cgroups").unwrap_or_default();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounts = crate::runtime::cgroups::parse_cgroup_mounts(&mountinfo);
    let mode = (!mounts.is_empty()).then(|| crate::runtime::cgroups::mode_of(&mounts));
    let v2_controllers = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").ok();
    let cmdline = cmdline_file.and_then(|f| std::fs::read_to_string(f).ok());
    findings.push(check_memory_cgroup(
        mode,
        &proc_cgroups,
        v2_controllers.as_deref(),
        cmdline_file.zip(cmdline.as_deref()),
    ));
    findings.extend(check_cgroup_moves(&release, &mounts));
    findings.push(check_swap(
        &std::fs::read_to_string("/proc/swaps").unwrap_or_default(),
    ));
    findings.push(check_memory(
        &std::fs::read_to_string("/proc/meminfo").unwrap_or_default(),
    ));
    findings.push(check_disk(&config.data_dir));
    findings.push(check_run_dir(config));
    findings.push(check_api_port(config));
    findings.push(check_time_sync());
    findings
}

fn check_root() -> Finding {
    if nix::unistd::geteuid().is_root() {
        Finding::ok("user", "root")
    } else {
        Finding::fail(
            "user",
            "not root: berth needs root for namespaces, cgroups, mounts and nftables",
            "run it as root (sudo berth ...)",
        )
    }
}

/// `major.minor` of a kernel release string like `6.1.0-18-arm64`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn check_kernel_version(release: &str) -> Finding {
    match kernel_version(release) {
        Some(version) if version >= MIN_KERNEL => Finding::ok(
            "kernel",
            format!("{release} (>= {}.{})", MIN_KERNEL.0, MIN_KERNEL.1),
        ),
        Some(_) => Finding::warn(
            "kernel",
            format!("{release} is older than {}.{}", MIN_KERNEL.0, MIN_KERNEL.1),
            "upgrade the kernel; older ones lack cgroup and nftables features berth uses",
        ),
        None => Finding::warn(
            "kernel",
            format!("unrecognised release {release:?}"),
            "none known",
        ),
    }
}

/// What the running kernel can do, from the best source available.
#[derive(Debug, Default)]
struct KernelFacts {
    /// `CONFIG_X` → `y`/`m`, from /proc/config.gz or /boot/config-<release>.
    config: Option<BTreeMap<String, String>>,
    /// Filesystems the kernel has now (/proc/filesystems).
    filesystems: String,
    /// Module names loaded or built in with parameters (/sys/module), plus modules.builtin and
    /// modules.dep entries (loadable on demand).
    modules: Vec<String>,
}

impl KernelFacts {
    fn read(release: &str) -> KernelFacts {
        let config = read_proc_config()
            .or_else(|| std::fs::read_to_string(format!("/boot/config-{release}")).ok())
            .map(|text| parse_kernel_config(&text));
        let mut modules: Vec<String> = std::fs::read_dir("/sys/module")
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        for list in ["modules.builtin", "modules.dep"] {
            let text = std::fs::read_to_string(format!("/lib/modules/{release}/{list}"))
                .unwrap_or_default();
            modules.extend(text.lines().filter_map(module_name_of_path));
        }
        KernelFacts {
            config,
            filesystems: std::fs::read_to_string("/proc/filesystems").unwrap_or_default(),
            modules,
        }
    }
}

fn read_proc_config() -> Option<String> {
    let file = std::fs::File::open("/proc/config.gz").ok()?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// `CONFIG_X=y|m` lines; `# CONFIG_X is not set` and other values are left out.
fn parse_kernel_config(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(key, value)| key.starts_with("CONFIG_") && (*value == "y" || *value == "m"))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// `kernel/net/bridge/bridge.ko.xz: ...` → `bridge`.
fn module_name_of_path(line: &str) -> Option<String> {
    let path = line.split(':').next()?;
    let file = path.rsplit('/').next()?;
    let name = file.split(".ko").next()?;
    (!name.is_empty()).then(|| name.replace('-', "_"))
}

/// A kernel feature berth needs: its config option, and the module or filesystem that shows it
/// when the config cannot be read.
struct Feature {
    what: &'static str,
    config: &'static str,
    module: Option<&'static str>,
    filesystem: Option<&'static str>,
}

const FEATURES: &[Feature] = &[
    Feature {
        what: "namespaces",
        config: "CONFIG_NAMESPACES",
        module: None,
        filesystem: None,
    },
    Feature {
        what: "network namespaces",
        config: "CONFIG_NET_NS",
        module: None,
        filesystem: None,
    },
    Feature {
        what: "pid namespaces",
        config: "CONFIG_PID_NS",
        module: None,
        filesystem: None,
    },
    Feature {
        what: "seccomp filters",
        config: "CONFIG_SECCOMP_FILTER",
        module: None,
        filesystem: None,
    },
    Feature {
        what: "overlayfs",
        config: "CONFIG_OVERLAY_FS",
        module: Some("overlay"),
        filesystem: Some("overlay"),
    },
    Feature {
        what: "veth",
        config: "CONFIG_VETH",
        module: Some("veth"),
        filesystem: None,
    },
    Feature {
        what: "bridge",
        config: "CONFIG_BRIDGE",
        module: Some("bridge"),
        filesystem: None,
    },
    Feature {
        what: "nf_tables",
        config: "CONFIG_NF_TABLES",
        module: Some("nf_tables"),
        filesystem: None,
    },
    Feature {
        what: "nftables NAT",
        config: "CONFIG_NFT_NAT",
        module: Some("nft_nat"),
        filesystem: None,
    },
    Feature {
        what: "nftables masquerade",
        config: "CONFIG_NFT_MASQ",
        module: Some("nft_masq"),
        filesystem: None,
    },
    Feature {
        what: "nftables conntrack match",
        config: "CONFIG_NFT_CT",
        module: Some("nft_ct"),
        filesystem: None,
    },
    Feature {
        what: "nftables random balancing",
        config: "CONFIG_NFT_NUMGEN",
        module: Some("nft_numgen"),
        filesystem: None,
    },
    Feature {
        what: "conntrack",
        config: "CONFIG_NF_CONNTRACK",
        module: Some("nf_conntrack"),
        filesystem: None,
    },
];

fn check_kernel_features(facts: &KernelFacts) -> Vec<Finding> {
    let mut missing = Vec::new();
    let mut unknown = Vec::new();
    for feature in FEATURES {
        let present = match &facts.config {
            Some(config) => Some(config.contains_key(feature.config)),
            None => {
                let by_fs = feature.filesystem.is_some_and(|fs| {
                    facts
                        .filesystems
                        .lines()
                        .any(|l| l.split_whitespace().last() == Some(fs))
                });
                let by_module = feature
                    .module
                    .is_some_and(|m| facts.modules.iter().any(|have| have == m));
                (by_fs || by_module).then_some(true)
            }
        };
        match present {
            Some(true) => {}
            Some(false) => missing.push(format!("{} ({})", feature.what, feature.config)),
            None => unknown.push(feature.what),
        }
    }
    let source = if facts.config.is_some() {
        "kernel config"
    } else {
        "loaded modules"
    };
    let mut findings = Vec::new();
    if missing.is_empty() && unknown.is_empty() {
        findings.push(Finding::ok(
            "kernel features",
            format!(
                "namespaces, seccomp, overlayfs, veth, bridge, nftables NAT, conntrack ({source})"
            ),
        ));
    }
    if !missing.is_empty() {
        findings.push(Finding::fail(
            "kernel features",
            format!("missing: {}", missing.join(", ")),
            "use a kernel built with these options (most distribution kernels have them)",
        ));
    }
    if !unknown.is_empty() {
        findings.push(Finding::warn(
            "kernel features",
            format!(
                "could not confirm: {} (no kernel config found)",
                unknown.join(", ")
            ),
            "load the modules (modprobe) or check the kernel config by hand",
        ));
    }
    findings
}

/// Is `controller` enabled in a /proc/cgroups table (the last column)?
fn v1_controller_enabled(proc_cgroups: &str, controller: &str) -> bool {
    proc_cgroups.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.first() == Some(&controller) && fields.last() == Some(&"1")
    })
}

fn check_memory_cgroup(
    mode: Option<crate::runtime::cgroups::CgroupMode>,
    proc_cgroups: &str,
    v2_root_controllers: Option<&str>,
    boot_cmdline: Option<(&Path, &str)>,
) -> Finding {
    use crate::runtime::cgroups::CgroupMode;
    let Some(mode) = mode else {
        // Nothing mounted in this mount namespace (e.g. under `ip netns exec`): berth mounts
        // the hierarchies itself, so only the kernel's own table matters.
        return if v1_controller_enabled(proc_cgroups, "memory") {
            Finding::ok(
                "cgroups",
                "memory controller enabled; no cgroup filesystem mounted here (berth mounts one)",
            )
        } else {
            Finding::fail(
                "cgroups",
                "no cgroup filesystem is mounted and the memory controller is not enabled",
                memory_fix(boot_cmdline),
            )
        };
    };
    let enabled = match mode {
        CgroupMode::V2 => {
            v2_root_controllers.is_some_and(|c| c.split_whitespace().any(|name| name == "memory"))
        }
        CgroupMode::V1 | CgroupMode::Hybrid => v1_controller_enabled(proc_cgroups, "memory"),
    };
    let mode_name = match mode {
        CgroupMode::V1 => "v1",
        CgroupMode::Hybrid => "hybrid (v1 controllers)",
        CgroupMode::V2 => "v2",
    };
    if enabled {
        return Finding::ok("cgroups", format!("{mode_name}, memory controller enabled"));
    }
    Finding::fail(
        "cgroups",
        format!("{mode_name}, but the memory controller is disabled: memory limits cannot work"),
        memory_fix(boot_cmdline),
    )
}

/// How to enable the memory cgroup: the Pi's cmdline.txt and the words it lacks, when known.
fn memory_fix(boot_cmdline: Option<(&Path, &str)>) -> String {
    match boot_cmdline {
        Some((file, text)) => format!(
            "add `{}` to the single line in {} (or run `berth check --fix`) and reboot",
            missing_memory_params(text).join(" "),
            file.display()
        ),
        None => "boot with `cgroup_memory=1 cgroup_enable=memory` on the kernel command line"
            .to_string(),
    }
}

/// The memory cgroup parameters a boot command line still lacks.
fn missing_memory_params(cmdline: &str) -> Vec<&'static str> {
    PI_MEMORY_CGROUP_PARAMS
        .iter()
        .copied()
        .filter(|param| !cmdline.split_whitespace().any(|word| word == *param))
        .collect()
}

/// The command line with the missing memory parameters appended; `None` when nothing is missing.
/// cmdline.txt must stay one line: the parameters go at its end, before the newline.
fn fixed_cmdline(cmdline: &str) -> Option<String> {
    let missing = missing_memory_params(cmdline);
    if missing.is_empty() {
        return None;
    }
    let line = cmdline.lines().next().unwrap_or("").trim_end();
    let joined = if line.is_empty() {
        missing.join(" ")
    } else {
        format!("{line} {}", missing.join(" "))
    };
    Some(format!("{joined}\n"))
}

/// Adds the memory cgroup parameters to `file`, keeping the original as `<file>.berth-backup`.
fn fix_boot_cmdline(file: &Path) -> anyhow::Result<Option<String>> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let Some(fixed) = fixed_cmdline(&text) else {
        return Ok(None);
    };
    let backup = PathBuf::from(format!("{}.berth-backup", file.display()));
    std::fs::write(&backup, &text)
        .map_err(|e| anyhow::anyhow!("cannot write backup {}: {e}", backup.display()))?;
    // Write the new line next to the file and rename over it, so a power cut leaves either
    // the old or the new command line, never half of one (the Pi would not boot).
    let temporary = PathBuf::from(format!("{}.berth-new", file.display()));
    std::fs::write(&temporary, &fixed)
        .and_then(|()| std::fs::File::open(&temporary)?.sync_all())
        .and_then(|()| std::fs::rename(&temporary, file))
        .map_err(|e| anyhow::anyhow!("cannot update {}: {e}", file.display()))?;
    Ok(Some(format!(
        "added {}; reboot to apply (backup: {})",
        missing_memory_params(&text).join(" "),
        backup.display()
    )))
}

/// The first kernel with the `favordynmods` cgroup mount option.
const FAVORDYNMODS_KERNEL: (u32, u32) = (6, 0);

/// Whether moving a process into a cgroup is cheap. libcontainer moves a process once per
/// container create and exec; each move takes a lock whose writer waits for an RCU grace
/// period (~8 ms measured on a two-core machine) unless a cgroup hierarchy is mounted with
/// `favordynmods`, which makes forks and exits a little dearer instead. The lock is shared by
/// all hierarchies, so the option on any one of them serves all. A v1 hierarchy takes it only
/// when first mounted; the v2 one on a remount too, which then sets all its options anew.
/// `None` on kernels without the option.
fn check_cgroup_moves(
    release: &str,
    mounts: &[crate::runtime::cgroups::CgroupMount],
) -> Option<Finding> {
    if kernel_version(release).is_none_or(|version| version < FAVORDYNMODS_KERNEL) {
        return None;
    }
    const ITEM: &str = "cgroup moves";
    let favoring = mounts.iter().find(|m| {
        m.super_options
            .split(',')
            .any(|option| option == "favordynmods")
    });
    if let Some(mount) = favoring {
        return Some(Finding::ok(
            ITEM,
            format!(
                "favordynmods on ({}): container starts do not wait for them",
                mount.mount_point.display()
            ),
        ));
    }
    let detail = "each container start and exec waits for an RCU grace period (cgroup \
                  favordynmods is off)";
    let fix = match mounts.iter().find(|m| m.v2) {
        Some(v2) => format!(
            "`mount -o remount,{},favordynmods {}` (until the next boot; forks and exits get \
             a little slower)",
            v2.super_options,
            v2.mount_point.display()
        ),
        None => "boot a kernel built with CONFIG_CGROUP_FAVOR_DYNMODS=y, or mount the cgroup \
                 hierarchies with -o favordynmods at boot (forks and exits get a little slower)"
            .to_string(),
    };
    Some(Finding::hint(ITEM, detail, fix))
}

fn check_swap(proc_swaps: &str) -> Finding {
    let active = proc_swaps
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count();
    if active == 0 {
        Finding::ok("swap", "off")
    } else {
        Finding::warn(
            "swap",
            format!("{active} swap device(s) on: memory limits and eviction are less predictable"),
            "swapoff -a (and remove swap from /etc/fstab or disable dphys-swapfile on a Pi)",
        )
    }
}

/// A `/proc/meminfo` field in bytes.
fn meminfo_bytes(meminfo: &str, field: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn check_memory(meminfo: &str) -> Finding {
    let (Some(total), Some(available)) = (
        meminfo_bytes(meminfo, "MemTotal"),
        meminfo_bytes(meminfo, "MemAvailable"),
    ) else {
        return Finding::warn("memory", "cannot read /proc/meminfo", "none known");
    };
    let detail = format!("{} MiB available of {} MiB", available >> 20, total >> 20);
    if available < LOW_MEMORY_BYTES {
        Finding::warn(
            "memory",
            detail,
            "stop other services, or use the low-memory profile",
        )
    } else {
        Finding::ok("memory", detail)
    }
}

/// Free space for the data dir, measured on the nearest directory that exists.
fn check_disk(data_dir: &Path) -> Finding {
    let existing = data_dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let Ok(stat) = nix::sys::statvfs::statvfs(existing) else {
        return Finding::warn(
            "disk",
            format!("cannot stat {}", existing.display()),
            "none known",
        );
    };
    let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    let detail = format!("{} MiB free for {}", free >> 20, data_dir.display());
    if free < MIN_DISK_BYTES {
        Finding::fail(
            "disk",
            detail,
            "free space or point --data-dir at a larger disk",
        )
    } else if free < LOW_DISK_BYTES {
        Finding::warn("disk", detail, "images and logs need room: free some space")
    } else {
        Finding::ok("disk", detail)
    }
}

/// The run dir: too long, no pod's sockets fit below it; off tmpfs, every container create,
/// start and delete writes its runtime state to disk (an SD card on a Pi).
fn check_run_dir(config: &Config) -> Finding {
    const ITEM: &str = "run dir";
    if let Err(e) = crate::runtime::layout::check_pods_run_dir(&config.pods_run_dir()) {
        return Finding::fail(ITEM, e.to_string(), "a shorter run_dir in the config");
    }
    let existing = config
        .run_dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let on_tmpfs = nix::sys::statfs::statfs(existing)
        .ok()
        .map(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    run_dir_finding(&config.run_dir, on_tmpfs)
}

fn run_dir_finding(run_dir: &Path, on_tmpfs: Option<bool>) -> Finding {
    const ITEM: &str = "run dir";
    match on_tmpfs {
        Some(true) => Finding::ok(ITEM, format!("{} on tmpfs", run_dir.display())),
        Some(false) => Finding::hint(
            ITEM,
            format!(
                "{} is not on tmpfs: each container create, start and delete writes runtime \
                 state to disk",
                run_dir.display()
            ),
            "mount a tmpfs there, or set run_dir to a directory on one",
        ),
        None => Finding::warn(
            ITEM,
            format!("cannot stat {}", run_dir.display()),
            "none known",
        ),
    }
}

fn check_api_port(config: &Config) -> Finding {
    let listen = config.api.listen;
    if listen.port() == 0 {
        return Finding::ok("api port", "picked at start (port 0)");
    }
    match std::net::TcpListener::bind(listen) {
        Ok(_) => Finding::ok("api port", format!("{listen} is free")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Finding::fail(
            "api port",
            format!("{listen} is in use"),
            "stop what listens there (is berth already running?) or set api.listen",
        ),
        Err(e) => Finding::warn(
            "api port",
            format!("cannot test {listen}: {e}"),
            "none known",
        ),
    }
}

fn check_time_sync() -> Finding {
    // systemd-timesyncd marks a synchronised clock with this file; timedatectl also knows about
    // chrony and ntpd. Without either there is no cheap way to tell, so only warn.
    if Path::new("/run/systemd/timesync/synchronized").exists() {
        return Finding::ok("clock", "synchronised (systemd-timesyncd)");
    }
    let answer = std::process::Command::new("timedatectl")
        .args(["show", "-p", "NTPSynchronized", "--value"])
        .output();
    match answer {
        Ok(out) if String::from_utf8_lossy(&out.stdout).trim() == "yes" => {
            Finding::ok("clock", "synchronised")
        }
        Ok(out) if out.status.success() => Finding::warn(
            "clock",
            "not synchronised: certificates and tokens depend on the time",
            "enable NTP (timedatectl set-ntp true, or install chrony)",
        ),
        _ => Finding::warn(
            "clock",
            "cannot tell whether the clock is synchronised (no timedatectl)",
            "make sure NTP or chrony runs: certificates and tokens depend on the time",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::cgroups::{parse_cgroup_mounts, CgroupMode};

    #[test]
    fn kernel_versions_are_read_from_release_strings() {
        assert_eq!(kernel_version("6.1.0-18-arm64"), Some((6, 1)));
        assert_eq!(kernel_version("5.15.84-v8+"), Some((5, 15)));
        assert_eq!(kernel_version("garbage"), None);
        assert_eq!(check_kernel_version("4.19.0").verdict, Verdict::Warn);
        assert_eq!(check_kernel_version("6.18.44-x").verdict, Verdict::Ok);
    }

    #[test]
    fn a_kernel_config_without_nat_fails_and_names_the_option() {
        let facts = KernelFacts {
            config: Some(parse_kernel_config(
                "CONFIG_NAMESPACES=y\nCONFIG_NET_NS=y\nCONFIG_PID_NS=y\nCONFIG_SECCOMP_FILTER=y\n\
                 CONFIG_OVERLAY_FS=m\nCONFIG_VETH=m\nCONFIG_BRIDGE=m\nCONFIG_NF_TABLES=m\n\
                 # CONFIG_NFT_NAT is not set\nCONFIG_NFT_MASQ=m\nCONFIG_NFT_CT=m\n\
                 CONFIG_NFT_NUMGEN=m\nCONFIG_NF_CONNTRACK=m\n",
            )),
            ..KernelFacts::default()
        };
        let findings = check_kernel_features(&facts);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].verdict, Verdict::Fail);
        assert!(
            findings[0].detail.contains("CONFIG_NFT_NAT"),
            "{:?}",
            findings[0]
        );
    }

    #[test]
    fn without_a_kernel_config_modules_and_filesystems_are_evidence() {
        let facts = KernelFacts {
            config: None,
            filesystems: "nodev\tsysfs\nnodev\toverlay\n".into(),
            modules: [
                "veth",
                "bridge",
                "nf_tables",
                "nft_nat",
                "nft_masq",
                "nft_ct",
                "nft_numgen",
                "nf_conntrack",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        };
        let findings = check_kernel_features(&facts);
        // Namespaces and seccomp have no module to show them: unconfirmed, not failed.
        assert!(
            findings.iter().all(|f| f.verdict != Verdict::Fail),
            "{findings:?}"
        );
        assert!(findings.iter().any(|f| f.verdict == Verdict::Warn
            && f.detail.contains("network namespaces")
            && !f.detail.contains("overlayfs")));
    }

    #[test]
    fn module_names_come_from_module_paths() {
        assert_eq!(
            module_name_of_path(
                "kernel/net/netfilter/nft-ct.ko.xz: kernel/net/netfilter/nf_tables.ko.xz"
            ),
            Some("nft_ct".to_string())
        );
        assert_eq!(
            module_name_of_path("kernel/fs/overlayfs/overlay.ko"),
            Some("overlay".into())
        );
    }

    #[test]
    fn a_disabled_memory_cgroup_on_a_pi_names_the_file_and_the_words() {
        let proc_cgroups =
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t1\t1\t1\nmemory\t0\t1\t0\n";
        let file = Path::new("/boot/firmware/cmdline.txt");
        let finding = check_memory_cgroup(
            Some(CgroupMode::V1),
            proc_cgroups,
            None,
            Some((
                file,
                "console=serial0,115200 root=PARTUUID=1 rootwait cgroup_memory=1\n",
            )),
        );
        assert_eq!(finding.verdict, Verdict::Fail);
        let fix = finding.fix.unwrap();
        assert!(fix.contains("/boot/firmware/cmdline.txt"), "{fix}");
        assert!(
            fix.contains("`cgroup_enable=memory`"),
            "only the missing word: {fix}"
        );
    }

    #[test]
    fn the_memory_cgroup_is_found_on_v1_and_v2() {
        let enabled = "memory\t4\t23\t1\n";
        assert_eq!(
            check_memory_cgroup(Some(CgroupMode::Hybrid), enabled, None, None).verdict,
            Verdict::Ok
        );
        let v2 = check_memory_cgroup(
            Some(CgroupMode::V2),
            "",
            Some("cpuset cpu io memory pids\n"),
            None,
        );
        assert_eq!(v2.verdict, Verdict::Ok);
        let v2_without = check_memory_cgroup(Some(CgroupMode::V2), "", Some("cpu io pids\n"), None);
        assert_eq!(v2_without.verdict, Verdict::Fail);
        // Nothing mounted in this mount namespace: the kernel's table decides.
        assert_eq!(
            check_memory_cgroup(None, enabled, None, None).verdict,
            Verdict::Ok
        );
        assert_eq!(
            check_memory_cgroup(None, "memory\t0\t1\t0\n", None, None).verdict,
            Verdict::Fail
        );
    }

    #[test]
    fn fixing_the_cmdline_keeps_one_line_and_is_idempotent() {
        let fixed = fixed_cmdline("console=tty1 root=/dev/mmcblk0p2 rootwait\n").unwrap();
        assert_eq!(
            fixed,
            "console=tty1 root=/dev/mmcblk0p2 rootwait cgroup_memory=1 cgroup_enable=memory\n"
        );
        assert_eq!(fixed_cmdline(&fixed), None);
    }

    #[test]
    fn fix_boot_cmdline_writes_a_backup_and_the_new_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cmdline.txt");
        std::fs::write(&file, "root=/dev/sda2 rootwait\n").unwrap();
        let message = fix_boot_cmdline(&file).unwrap().unwrap();
        assert!(message.contains("cgroup_enable=memory"), "{message}");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "root=/dev/sda2 rootwait cgroup_memory=1 cgroup_enable=memory\n"
        );
        let backup = dir.path().join("cmdline.txt.berth-backup");
        assert_eq!(
            std::fs::read_to_string(backup).unwrap(),
            "root=/dev/sda2 rootwait\n"
        );
        assert_eq!(
            fix_boot_cmdline(&file).unwrap(),
            None,
            "a second run changes nothing"
        );
    }

    #[test]
    fn a_run_dir_off_tmpfs_gets_a_hint_and_one_too_long_for_sockets_fails() {
        let run = Path::new("/run/berth");
        assert_eq!(run_dir_finding(run, Some(true)).verdict, Verdict::Ok);
        let off = run_dir_finding(run, Some(false));
        assert_eq!(off.verdict, Verdict::Hint);
        assert!(off.detail.contains("not on tmpfs"), "{}", off.detail);
        let long = Config {
            run_dir: Path::new("/run").join("x".repeat(80)),
            ..Config::default()
        };
        let finding = check_run_dir(&long);
        assert_eq!(finding.verdict, Verdict::Fail);
        assert!(finding.detail.contains("unix socket"), "{}", finding.detail);
    }

    #[test]
    fn swap_and_memory_are_read_from_proc() {
        let header = "Filename\tType\tSize\tUsed\tPriority\n";
        assert_eq!(check_swap(header).verdict, Verdict::Ok);
        assert_eq!(
            check_swap(&format!("{header}/var/swap file 102396 0 -2\n")).verdict,
            Verdict::Warn
        );
        let meminfo = "MemTotal:        1000000 kB\nMemFree:  1 kB\nMemAvailable:     100000 kB\n";
        let finding = check_memory(meminfo);
        assert_eq!(finding.verdict, Verdict::Warn);
        assert!(
            finding.detail.contains("97 MiB available of 976 MiB"),
            "{}",
            finding.detail
        );
    }

    #[test]
    fn cgroup_moves_get_a_hint_with_the_remount_that_keeps_the_v2_options() {
        let hybrid = "\
32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid,relatime - cgroup2 cgroup2 rw,nsdelegate
36 31 0:31 / /sys/fs/cgroup/memory rw,nosuid,relatime - cgroup cgroup rw,memory
";
        let finding = check_cgroup_moves("6.18.44", &parse_cgroup_mounts(hybrid)).unwrap();
        assert_eq!(finding.verdict, Verdict::Hint);
        assert!(
            finding.line().starts_with("hint  cgroup moves: ")
                && finding.fix.as_deref().is_some_and(|fix| fix.contains(
                    "mount -o remount,rw,nsdelegate,favordynmods /sys/fs/cgroup/unified"
                )),
            "{finding:?}"
        );
        let v1_only = "36 31 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let finding = check_cgroup_moves("6.1.0-18-arm64", &parse_cgroup_mounts(v1_only)).unwrap();
        assert_eq!(finding.verdict, Verdict::Hint);
        assert!(finding
            .fix
            .is_some_and(|fix| fix.contains("CONFIG_CGROUP_FAVOR_DYNMODS")));
    }

    #[test]
    fn cgroup_moves_are_fine_with_favordynmods_on_any_hierarchy_or_before_it_existed() {
        let on = "\
32 31 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate
36 31 0:31 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids,favordynmods
";
        let finding = check_cgroup_moves("6.18.44", &parse_cgroup_mounts(on)).unwrap();
        assert_eq!(finding.verdict, Verdict::Ok);
        assert!(
            finding.detail.contains("/sys/fs/cgroup/pids"),
            "{finding:?}"
        );
        assert_eq!(
            check_cgroup_moves("5.15.84-v8+", &parse_cgroup_mounts(on)),
            None
        );
    }

    #[test]
    fn lines_show_the_verdict_and_the_fix() {
        let line = Finding::fail("disk", "10 MiB free", "free space").line();
        assert_eq!(line, "FAIL  disk: 10 MiB free (fix: free space)");
        assert_eq!(Finding::ok("swap", "off").line(), "ok    swap: off");
    }
}
