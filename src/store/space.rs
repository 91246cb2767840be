//! Free space on the store's file system, checked before every write batch.
//!
//! redb latches a failed file write (a full disk during a commit) into an error for every later
//! read and write until the database is reopened, so a full disk would take the whole API down.
//! The writer therefore refuses writes while the file system is nearly full, keeping enough
//! room for the next checkpoint to flush what the write-ahead log holds, as etcd refuses writes
//! past its space quota.

use std::path::Path;

use super::{wal, StoreError};

/// Free bytes kept for the store: a checkpoint writes about what the log holds (at most its
/// capacity) as new pages, and a batch may add up to another log's worth before it.
pub(super) const RESERVE_BYTES: u64 = 2 * wal::CAPACITY + 4 * 1024 * 1024;

/// Bytes an unprivileged writer may still use on the file system holding `path`.
fn available_bytes(path: &Path) -> std::io::Result<u64> {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let stat = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    Ok((stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64))
}

/// Refuses a write while fewer than `reserve` bytes are free beside the store at `path`. A file
/// system that cannot say how full it is lets the write go ahead: refusing every write on a
/// statvfs error would be worse than the rare full disk it guards against.
pub(super) fn ensure_room(path: &Path, reserve: u64) -> Result<(), StoreError> {
    match available_bytes(path) {
        Ok(available) if available < reserve => Err(StoreError::NoSpace {
            path: path.to_path_buf(),
            available,
            reserve,
        }),
        _ => Ok(()),
    }
}

/// Whether an I/O error means the disk (or the user's quota on it) is full.
pub(super) fn is_no_space(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOSPC) | Some(libc::EDQUOT)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_is_refused_when_less_than_the_reserve_is_free_and_allowed_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let free = available_bytes(&path).unwrap();
        assert!(free > 0, "a temp dir has some room");
        assert!(ensure_room(&path, 0).is_ok());
        let refused = ensure_room(&path, u64::MAX).unwrap_err();
        assert!(refused.is_no_space(), "{refused}");
        let message = refused.to_string();
        assert!(
            message.contains(&path.display().to_string()) && message.contains("full"),
            "{message}"
        );
    }

    #[test]
    fn enospc_and_quota_errors_are_a_full_disk_and_others_are_not() {
        assert!(is_no_space(&std::io::Error::from_raw_os_error(
            libc::ENOSPC
        )));
        assert!(is_no_space(&std::io::Error::from_raw_os_error(
            libc::EDQUOT
        )));
        assert!(!is_no_space(&std::io::Error::from_raw_os_error(libc::EIO)));
        assert!(!is_no_space(&std::io::Error::other("no errno")));
    }
}
