//! Getting the kernel's wait for a cgroup move under way before libcontainer needs the move.
//!
//! Moving a process into a cgroup takes a lock (`cgroup_threadgroup_rwsem`) whose writer waits
//! for an RCU grace period, ~8 ms on a 2-core machine, unless another move ended within the
//! last grace period (or a hierarchy is mounted with `favordynmods`). libcontainer's
//! intermediate process moves itself into the container's cgroups early in every container
//! create and exec, so each would wait that long. A throwaway child that moves itself into the
//! cgroup it already is in starts the grace period at once: the shim goes on writing the
//! bundle and libcontainer on preparing meanwhile, and the intermediate process waits only for
//! what is left of it.

use std::fs::{File, OpenOptions};

use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};

use crate::runtime::cgroups;

/// The shim's own `cgroup.procs` in one hierarchy, open for the throwaway children.
pub struct MoveWarmer(File);

/// A throwaway child under way; reaped when dropped (by then it has long exited: its move
/// ends with the grace period, which libcontainer's own move waited for as well).
pub struct Warming(Pid);

impl MoveWarmer {
    /// `None` when the shim is in no cgroup of its own (a host that refused it one).
    pub fn open(shim_cgroup: &str) -> Option<Self> {
        let procs = cgroups::procs_file(shim_cgroup)?;
        OpenOptions::new().write(true).open(procs).ok().map(Self)
    }

    /// Forks the child that moves itself (`0`) into the shim's cgroup, and returns at once.
    pub fn start(&self) -> Option<Warming> {
        // SAFETY: the shim is single-threaded, so the child inherits no lock another thread
        // held; the child only writes to a descriptor it inherited and leaves with _exit.
        match unsafe { fork() } {
            Ok(ForkResult::Parent { child }) => Some(Warming(child)),
            Ok(ForkResult::Child) => {
                let _ = nix::unistd::write(&self.0, b"0");
                // SAFETY: ends the child at once, without running the shim's exit handlers
                // or destructors, which belong to the parent.
                unsafe { libc::_exit(0) }
            }
            // Nothing is lost but the head start.
            Err(_) => None,
        }
    }
}

impl Drop for Warming {
    fn drop(&mut self) {
        let _ = waitpid(self.0, None);
    }
}
