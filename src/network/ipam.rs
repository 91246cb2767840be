//! Pod IP allocation persisted as one file per address, like CNI's host-local plugin.
//!
//! `<dir>/<ip>` holds the uid of the pod that owns the address. Files are created with `O_EXCL`,
//! so the file system decides every race and a restarted daemon sees exactly what was handed out.
//! Addresses are handed out round-robin from after the last one reserved (remembered in
//! `<dir>/last_reserved_ip`) so a just-freed address is not reused at once while stale ARP or
//! conntrack entries for it may linger.

use std::fs;
use std::io::{ErrorKind, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::cidr::Ipv4Cidr;
use super::NetError;

const LAST_RESERVED: &str = "last_reserved_ip";

/// The allocator for one node's pod CIDR slice.
#[derive(Debug, Clone)]
pub struct Ipam {
    dir: PathBuf,
    range: Ipv4Cidr,
}

impl Ipam {
    pub fn new(dir: impl Into<PathBuf>, range: Ipv4Cidr) -> Ipam {
        Ipam {
            dir: dir.into(),
            range,
        }
    }

    /// The address owned by `pod_uid`, reusing an existing allocation (the restart path).
    pub fn allocate(&self, pod_uid: &str) -> Result<Ipv4Addr, NetError> {
        if let Some(ip) = self.lookup(pod_uid)? {
            return Ok(ip);
        }
        fs::create_dir_all(&self.dir).map_err(|e| NetError::io(&self.dir, e))?;
        let candidates: Vec<Ipv4Addr> = self.range.pod_addresses().collect();
        let start = self
            .last_reserved()
            .and_then(|last| candidates.iter().position(|ip| *ip == last))
            .map_or(0, |i| i + 1);
        for i in 0..candidates.len() {
            let ip = candidates[(start + i) % candidates.len()];
            if self.try_reserve(ip, pod_uid)? {
                self.remember_last_reserved(ip);
                return Ok(ip);
            }
        }
        Err(NetError::Exhausted(self.range))
    }

    /// The address `pod_uid` holds, if any.
    pub fn lookup(&self, pod_uid: &str) -> Result<Option<Ipv4Addr>, NetError> {
        Ok(self
            .allocations()?
            .into_iter()
            .find(|(_, uid)| uid == pod_uid)
            .map(|(ip, _)| ip))
    }

    /// Frees every address `pod_uid` holds; returns the one it held.
    pub fn release(&self, pod_uid: &str) -> Result<Option<Ipv4Addr>, NetError> {
        let mut released = None;
        for (ip, uid) in self.allocations()? {
            if uid == pod_uid {
                let path = self.dir.join(ip.to_string());
                remove_file_if_exists(&path)?;
                released = Some(ip);
            }
        }
        Ok(released)
    }

    /// Every address handed out, with its owner's uid (empty if a crash interrupted the write).
    pub fn allocations(&self) -> Result<Vec<(Ipv4Addr, String)>, NetError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(NetError::io(&self.dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| NetError::io(&self.dir, e))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let path = entry.path();
            match fs::read_to_string(&path) {
                Ok(uid) => out.push((ip, uid.trim().to_string())),
                // Released concurrently between listing and reading.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(NetError::io(&path, e)),
            }
        }
        out.sort();
        Ok(out)
    }

    /// Forgets every allocation (for `berth reset`).
    pub fn remove_all(&self) -> Result<(), NetError> {
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(NetError::io(&self.dir, e)),
            _ => Ok(()),
        }
    }

    fn try_reserve(&self, ip: Ipv4Addr, pod_uid: &str) -> Result<bool, NetError> {
        let path = self.dir.join(ip.to_string());
        let mut file = match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(NetError::io(&path, e)),
        };
        file.write_all(pod_uid.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| NetError::io(&path, e))?;
        Ok(true)
    }

    fn last_reserved(&self) -> Option<Ipv4Addr> {
        fs::read_to_string(self.dir.join(LAST_RESERVED))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Only a hint for where to start next time, so a failed write is harmless.
    fn remember_last_reserved(&self, ip: Ipv4Addr) {
        let _ = fs::write(self.dir.join(LAST_RESERVED), ip.to_string());
    }
}

pub(crate) fn remove_file_if_exists(path: &Path) -> Result<(), NetError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(NetError::io(path, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(range: &str) -> (tempfile::TempDir, Ipam) {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::new(dir.path().join("ipam"), range.parse().unwrap());
        (dir, ipam)
    }

    #[test]
    fn two_pods_get_distinct_addresses_after_the_gateway() {
        let (_dir, ipam) = ipam("10.42.0.0/24");
        let a = ipam.allocate("pod-a").unwrap();
        let b = ipam.allocate("pod-b").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 42, 0, 2));
        assert_eq!(b, Ipv4Addr::new(10, 42, 0, 3));
    }

    #[test]
    fn allocating_again_for_the_same_pod_returns_its_address() {
        let (_dir, ipam) = ipam("10.42.0.0/24");
        let first = ipam.allocate("pod-a").unwrap();
        assert_eq!(ipam.allocate("pod-a").unwrap(), first);
        assert_eq!(ipam.allocations().unwrap().len(), 1);
    }

    #[test]
    fn a_new_allocator_on_the_same_directory_sees_existing_allocations() {
        let (_dir, ipam) = ipam("10.42.0.0/24");
        let a = ipam.allocate("pod-a").unwrap();
        let restarted = Ipam::new(ipam.dir.clone(), ipam.range);
        assert_eq!(restarted.lookup("pod-a").unwrap(), Some(a));
        assert_ne!(restarted.allocate("pod-b").unwrap(), a);
    }

    #[test]
    fn allocation_files_hold_the_pod_uid() {
        let (_dir, ipam) = ipam("10.42.0.0/24");
        let ip = ipam.allocate("3f1c-uid").unwrap();
        let content = fs::read_to_string(ipam.dir.join(ip.to_string())).unwrap();
        assert_eq!(content, "3f1c-uid");
    }

    #[test]
    fn release_frees_the_address_and_reports_it() {
        let (_dir, ipam) = ipam("10.42.0.0/24");
        let ip = ipam.allocate("pod-a").unwrap();
        assert_eq!(ipam.release("pod-a").unwrap(), Some(ip));
        assert_eq!(ipam.lookup("pod-a").unwrap(), None);
        assert!(!ipam.dir.join(ip.to_string()).exists());
        assert_eq!(
            ipam.release("pod-a").unwrap(),
            None,
            "release is idempotent"
        );
    }

    #[test]
    fn a_freed_address_is_not_reused_until_the_range_wraps() {
        let (_dir, ipam) = ipam("10.42.0.0/29"); // pods: .2 ..= .6
        let a = ipam.allocate("pod-a").unwrap();
        ipam.release("pod-a").unwrap();
        let b = ipam.allocate("pod-b").unwrap();
        assert_ne!(a, b);
        assert_eq!(b, Ipv4Addr::new(10, 42, 0, 3));
    }

    #[test]
    fn an_exhausted_range_is_an_error_until_an_address_is_released() {
        let (_dir, ipam) = ipam("10.42.0.0/29");
        for i in 0..5 {
            ipam.allocate(&format!("pod-{i}")).unwrap();
        }
        assert!(matches!(
            ipam.allocate("one-too-many"),
            Err(NetError::Exhausted(_))
        ));
        let freed = ipam.release("pod-2").unwrap().unwrap();
        assert_eq!(ipam.allocate("one-too-many").unwrap(), freed);
    }

    #[test]
    fn an_address_taken_by_someone_else_is_skipped() {
        let (_dir, ipam) = ipam("10.42.0.0/24");
        fs::create_dir_all(&ipam.dir).unwrap();
        fs::write(ipam.dir.join("10.42.0.2"), "other").unwrap();
        assert_eq!(ipam.allocate("pod-a").unwrap(), Ipv4Addr::new(10, 42, 0, 3));
    }

    #[test]
    fn stray_files_in_the_directory_are_not_allocations() {
        let (_dir, ipam) = ipam("10.42.0.0/24");
        ipam.allocate("pod-a").unwrap();
        fs::write(ipam.dir.join("README"), "x").unwrap();
        let all = ipam.allocations().unwrap();
        assert_eq!(
            all,
            vec![(Ipv4Addr::new(10, 42, 0, 2), "pod-a".to_string())]
        );
    }

    #[test]
    fn remove_all_forgets_everything() {
        let (_dir, ipam) = ipam("10.42.0.0/24");
        ipam.allocate("pod-a").unwrap();
        ipam.remove_all().unwrap();
        assert!(ipam.allocations().unwrap().is_empty());
        ipam.remove_all().unwrap();
    }
}
