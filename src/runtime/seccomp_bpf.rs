//! RuntimeDefault as a ready BPF program. libcontainer compiles a seccomp profile with
//! libseccomp inside every new container's init process, which for the few hundred syscalls of
//! RuntimeDefault costs more than the rest of a container start. The shim compiles the
//! profile once per node instead, keeps the program on disk under the hash of the profile, and
//! the container's init process only hands it to the kernel ([`PrecompiledSeccomp`]).
//!
//! Loading a filter without `no_new_privs` needs CAP_SYS_ADMIN, and the init process loads it
//! after libcontainer has set the container's capabilities: so the container is created with
//! CAP_SYS_ADMIN added to its effective and permitted sets (never to bounding, inheritable or
//! ambient), and the executor drops it again right after loading, before the program runs.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
use libseccomp::{ScmpSyscall, ScmpVersion};
use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, Spec};
use sha2::{Digest, Sha256};

/// One classic BPF instruction as the kernel and libseccomp's export lay it out.
const INSN_BYTES: usize = std::mem::size_of::<libc::sock_filter>();
/// The kernel's limit on a filter's length (BPF_MAXINSNS).
const MAX_INSNS: usize = 4096;
const SYS_ADMIN: &str = "CAP_SYS_ADMIN";

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("profile not handled here: {0}")]
    Unsupported(String),
    #[error("libseccomp: {0}")]
    Seccomp(#[from] libseccomp::error::SeccompError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("compiled filter {0} is not a BPF program")]
    Malformed(PathBuf),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BpfError + 'a {
    move |source| BpfError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A compiled filter, shared by the executors of the containers that use it.
#[derive(Clone)]
pub struct Program(Arc<Vec<libc::sock_filter>>);

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Program({} instructions)", self.0.len())
    }
}

/// Programs this process already holds, with the cache and profile each came from. A shim
/// creates its pod's containers, their restarts and execs from the same few profiles: parsing,
/// hashing and reading one back from the cache again costs most of a millisecond each time.
static HELD: Mutex<Vec<(PathBuf, serde_json::Value, Program)>> = Mutex::new(Vec::new());
/// Pods use one or two profiles; a bound keeps a shim that sees many from growing.
const HELD_MAX: usize = 8;

/// The compiled program for `profile`, from `cache_dir` when it was compiled before (by any
/// shim of this node), else compiled now and stored there.
pub fn cached(cache_dir: &Path, profile: &serde_json::Value) -> Result<Program, BpfError> {
    let held = |list: &[(PathBuf, serde_json::Value, Program)]| {
        list.iter()
            .find(|(dir, p, _)| dir == cache_dir && p == profile)
            .map(|(_, _, program)| program.clone())
    };
    if let Some(program) = HELD.lock().ok().and_then(|list| held(&list)) {
        return Ok(program);
    }
    let program = cached_on_disk(cache_dir, profile)?;
    if let Ok(mut list) = HELD.lock() {
        if held(&list).is_none() {
            if list.len() == HELD_MAX {
                list.remove(0);
            }
            list.push((cache_dir.to_path_buf(), profile.clone(), program.clone()));
        }
    }
    Ok(program)
}

fn cached_on_disk(cache_dir: &Path, profile: &serde_json::Value) -> Result<Program, BpfError> {
    let parsed: LinuxSeccomp = serde_json::from_value(profile.clone())
        .map_err(|e| BpfError::Unsupported(e.to_string()))?;
    check_supported(&parsed)?;
    let path = cache_dir.join(format!("{}.bpf", cache_key(profile)));
    if let Ok(bytes) = std::fs::read(&path) {
        if let Some(program) = verified(&bytes) {
            return Ok(program);
        }
    }
    let bytes = compile(&parsed, cache_dir)?;
    let program = decode(&bytes).ok_or_else(|| BpfError::Malformed(path.clone()))?;
    // Stored with its own hash in front: a torn or damaged file is compiled again, never
    // loaded as a shorter (and possibly more permissive) filter.
    let mut stored = Sha256::digest(&bytes).to_vec();
    stored.extend_from_slice(&bytes);
    let partial = cache_dir.join(format!(".{}.{}", std::process::id(), cache_key(profile)));
    std::fs::write(&partial, &stored).map_err(io_err("write", &partial))?;
    std::fs::rename(&partial, &path).map_err(io_err("rename", &path))?;
    Ok(program)
}

/// Names the program by everything that shapes it: the profile, the architecture compiled
/// for and the libseccomp that compiled it.
fn cache_key(profile: &serde_json::Value) -> String {
    let version = ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_default();
    let mut hash = Sha256::new();
    hash.update(profile.to_string().as_bytes());
    hash.update(std::env::consts::ARCH.as_bytes());
    hash.update(version.as_bytes());
    hex::encode(hash.finalize())
}

fn verified(stored: &[u8]) -> Option<Program> {
    let (digest, bytes) = stored.split_at_checked(32)?;
    if Sha256::digest(bytes).as_slice() != digest {
        return None;
    }
    decode(bytes)
}

fn decode(bytes: &[u8]) -> Option<Program> {
    if bytes.is_empty() || bytes.len() % INSN_BYTES != 0 || bytes.len() / INSN_BYTES > MAX_INSNS {
        return None;
    }
    let insns = bytes
        .chunks_exact(INSN_BYTES)
        .map(|b| libc::sock_filter {
            code: u16::from_ne_bytes([b[0], b[1]]),
            jt: b[2],
            jf: b[3],
            k: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        })
        .collect();
    Some(Program(Arc::new(insns)))
}

/// What libcontainer would do with the profile but this path does not: user notification and
/// filter flags (both need more than a plain load).
fn check_supported(profile: &LinuxSeccomp) -> Result<(), BpfError> {
    if profile.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(BpfError::Unsupported("filter flags".into()));
    }
    let notify = profile.default_action() == LinuxSeccompAction::ScmpActNotify
        || profile
            .syscalls()
            .iter()
            .flatten()
            .any(|s| s.action() == LinuxSeccompAction::ScmpActNotify);
    if notify {
        return Err(BpfError::Unsupported("notify actions".into()));
    }
    Ok(())
}

/// Compiles the profile exactly as libcontainer builds it (same actions, same skipped
/// syscalls, same rule split), exported as BPF through a file in `scratch_dir`.
fn compile(profile: &LinuxSeccomp, scratch_dir: &Path) -> Result<Vec<u8>, BpfError> {
    let default_action = action(profile.default_action(), profile.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default_action)?;
    for &arch in profile.architectures().iter().flatten() {
        ctx.add_arch(scmp_arch(arch)?)?;
    }
    ctx.set_ctl_nnp(false)?;
    for rule in profile.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default_action {
            continue;
        }
        for name in rule.names() {
            // Unknown here (another architecture's, or too new for this kernel): skipped,
            // as libcontainer does.
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                continue;
            };
            let Some(args) = rule.args() else {
                ctx.add_rule(act, syscall)?;
                continue;
            };
            let comparisons: Vec<ScmpArgCompare> = args
                .iter()
                .map(|a| {
                    ScmpArgCompare::new(a.index() as u32, op(a.op(), a.value_two()), a.value())
                })
                .collect();
            let mut indexes: Vec<usize> = args.iter().map(|a| a.index()).collect();
            indexes.sort_unstable();
            indexes.dedup();
            if indexes.len() == args.len() {
                ctx.add_rule_conditional(act, syscall, &comparisons)?;
            } else {
                // One argument compared twice: one rule per comparison, as runc does.
                for c in &comparisons {
                    ctx.add_rule_conditional(act, syscall, std::slice::from_ref(c))?;
                }
            }
        }
    }
    std::fs::create_dir_all(scratch_dir).map_err(io_err("create dir", scratch_dir))?;
    let scratch = scratch_dir.join(format!(".{}.export", std::process::id()));
    let file = std::fs::File::create(&scratch).map_err(io_err("create", &scratch))?;
    let exported = ctx.export_bpf(file.as_fd());
    drop(file);
    let bytes = std::fs::read(&scratch).map_err(io_err("read", &scratch));
    let _ = std::fs::remove_file(&scratch);
    exported?;
    bytes
}

fn action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, BpfError> {
    let errno = errno.map(|e| e as i32).unwrap_or(libc::EPERM);
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(
            u16::try_from(errno).map_err(|_| BpfError::Unsupported("trace errno".into()))?,
        ),
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(BpfError::Unsupported("notify actions".into()))
        }
    })
}

fn op(op: LinuxSeccompOperator, value_two: Option<u64>) -> ScmpCompareOp {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(value_two.unwrap_or(0)),
    }
}

fn scmp_arch(arch: Arch) -> Result<ScmpArch, BpfError> {
    Ok(match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        other => return Err(BpfError::Unsupported(format!("architecture {other:?}"))),
    })
}

/// Prepares the init spec of a container whose filter is loaded by [`PrecompiledSeccomp`]:
/// no `linux.seccomp` for libcontainer to compile, and CAP_SYS_ADMIN kept until the load.
/// Returns the executor, or `None` when the spec has no capability sets to adjust.
pub fn init_spec(spec: &mut serde_json::Value, program: Program) -> Option<PrecompiledSeccomp> {
    let lent = lend_sys_admin(spec.get_mut("process")?)?;
    spec.get_mut("linux")?.as_object_mut()?.remove("seccomp");
    Some(PrecompiledSeccomp { program, lent })
}

/// Adds CAP_SYS_ADMIN to the effective and permitted sets of an OCI `process` (never to
/// bounding, inheritable or ambient), so its filter can be loaded without `no_new_privs`.
/// Returns what to give back, or `None` when the process has no capability sets to adjust.
pub fn lend_sys_admin(process: &mut serde_json::Value) -> Option<LentSysAdmin> {
    let caps = process.get_mut("capabilities")?;
    let mut lent = LentSysAdmin::default();
    for (set, dropped) in [
        ("effective", &mut lent.effective),
        ("permitted", &mut lent.permitted),
    ] {
        let list = caps.get_mut(set)?.as_array_mut()?;
        if !list.iter().any(|c| c == SYS_ADMIN) {
            list.push(SYS_ADMIN.into());
            *dropped = true;
        }
    }
    Some(lent)
}

/// Which sets [`lend_sys_admin`] added CAP_SYS_ADMIN to.
#[derive(Clone, Copy, Debug, Default)]
pub struct LentSysAdmin {
    effective: bool,
    permitted: bool,
}

impl LentSysAdmin {
    /// Drops what was lent; the sets the process had CAP_SYS_ADMIN in anyway keep it.
    pub fn give_back(&self) -> Result<(), caps::errors::CapsError> {
        use caps::{CapSet, Capability};
        if self.effective {
            caps::drop(None, CapSet::Effective, Capability::CAP_SYS_ADMIN)?;
        }
        if self.permitted {
            caps::drop(None, CapSet::Permitted, Capability::CAP_SYS_ADMIN)?;
        }
        Ok(())
    }
}

impl Program {
    /// Hands the program to the kernel for the calling thread (and what it execs).
    pub fn load(&self) -> std::io::Result<()> {
        let insns = &self.0;
        let len = u16::try_from(insns.len())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let prog = libc::sock_fprog {
            len,
            filter: insns.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points at `insns`, which outlives the call; the kernel copies the
        // program and neither keeps nor writes through the pointer.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

/// Runs in the container's init process, after libcontainer set it up and just before the
/// program: loads the filter, gives back the CAP_SYS_ADMIN that [`init_spec`] lent it, execs.
#[derive(Clone, Debug)]
pub struct PrecompiledSeccomp {
    program: Program,
    lent: LentSysAdmin,
}

impl Executor for PrecompiledSeccomp {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        // Any failure ends the container before its program runs: never unconfined.
        self.program
            .load()
            .map_err(|e| ExecutorError::Other(format!("load seccomp filter: {e}")))?;
        self.lent
            .give_back()
            .map_err(|e| ExecutorError::Other(format!("drop CAP_SYS_ADMIN: {e}")))?;
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime_default() -> serde_json::Value {
        crate::runtime::seccomp::runtime_default(&["CAP_CHOWN".to_string()])
    }

    #[test]
    fn runtime_default_compiles_once_and_is_then_read_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let first = cached(dir.path(), &runtime_default()).unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1, "one program stored, no scratch files left");
        let again = cached(dir.path(), &runtime_default()).unwrap();
        assert_eq!(first.0.len(), again.0.len());
        assert!(first.0.len() > 100, "a real filter: {first:?}");
        assert!(first
            .0
            .iter()
            .zip(again.0.iter())
            .all(|(a, b)| (a.code, a.jt, a.jf, a.k) == (b.code, b.jt, b.jf, b.k)));
    }

    #[test]
    fn a_damaged_cache_file_is_compiled_again_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let good = cached(dir.path(), &runtime_default()).unwrap();
        let path = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let stored = std::fs::read(&path).unwrap();
        // Torn after a whole number of instructions: still decodable, but not what was stored.
        std::fs::write(&path, &stored[..stored.len() - INSN_BYTES]).unwrap();
        assert!(verified(&std::fs::read(&path).unwrap()).is_none());
        // The disk path: this process already holds the program, so `cached` would not look.
        let again = cached_on_disk(dir.path(), &runtime_default()).unwrap();
        assert_eq!(again.0.len(), good.0.len());
        assert!(
            verified(&std::fs::read(&path).unwrap()).is_some(),
            "stored again"
        );
    }

    #[test]
    fn a_program_once_held_is_not_read_from_disk_again() {
        let dir = tempfile::tempdir().unwrap();
        let profile = crate::runtime::seccomp::runtime_default(&["CAP_KILL".to_string()]);
        let first = cached(dir.path(), &profile).unwrap();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        let again = cached(dir.path(), &profile).unwrap();
        assert!(
            Arc::ptr_eq(&first.0, &again.0),
            "the same program, not compiled again"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let other = tempfile::tempdir().unwrap();
        cached(other.path(), &profile).unwrap();
        assert_eq!(
            std::fs::read_dir(other.path()).unwrap().count(),
            1,
            "another cache directory is filled, not skipped"
        );
    }

    #[test]
    fn notify_profiles_are_left_to_libcontainer() {
        let dir = tempfile::tempdir().unwrap();
        let profile = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]});
        assert!(matches!(
            cached(dir.path(), &profile),
            Err(BpfError::Unsupported(_))
        ));
    }

    #[test]
    fn the_init_spec_lends_sys_admin_and_leaves_seccomp_out() {
        let mut spec = serde_json::json!({
            "process": {"capabilities": {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"],
                "permitted": ["CAP_CHOWN"]}},
            "linux": {"seccomp": runtime_default()},
        });
        let program = Program(Arc::new(Vec::new()));
        let executor = init_spec(&mut spec, program).unwrap();
        assert!(executor.lent.effective && executor.lent.permitted);
        assert_eq!(
            spec["process"]["capabilities"]["effective"],
            serde_json::json!(["CAP_CHOWN", "CAP_SYS_ADMIN"])
        );
        assert_eq!(
            spec["process"]["capabilities"]["bounding"],
            serde_json::json!(["CAP_CHOWN"])
        );
        assert!(spec["linux"].get("seccomp").is_none());
    }
}
