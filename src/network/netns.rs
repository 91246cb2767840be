//! Pod network namespaces kept alive by bind mounts, the way `ip netns` does it, with no process.
//!
//! Namespaces belong to threads: in a multi-threaded daemon `unshare(CLONE_NEWNET)` or `setns`
//! would move whichever tokio worker happened to run the call. So every namespace switch happens
//! on a dedicated, short-lived std thread that exits afterwards; the rest of the process never
//! leaves the namespace it started in.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};

use super::NetError;

/// Makes `dir` a private bind mount of itself (created if missing), so the namespace mounts
/// made under it never propagate into other mount namespaces (containers, `unshare -m`),
/// where a copy would keep a deleted pod's namespace alive. Idempotent.
pub fn ensure_private_dir(dir: &Path) -> Result<(), NetError> {
    fs::create_dir_all(dir).map_err(|e| NetError::io(dir, e))?;
    if !is_mount_point(dir)? {
        mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| NetError::sys("bind-mount", dir, e))?;
    }
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| NetError::sys("make private", dir, e))
}

/// Undoes [`ensure_private_dir`]'s mount; leaves the directory itself.
pub fn release_private_dir(dir: &Path) -> Result<(), NetError> {
    if is_mount_point(dir)? {
        umount2(dir, MntFlags::MNT_DETACH).map_err(|e| NetError::sys("unmount", dir, e))?;
    }
    Ok(())
}

/// True if `path` is a bind-mounted network namespace.
pub fn is_netns(path: &Path) -> bool {
    statfs(path).is_ok_and(|fs| fs.filesystem_type() == NSFS_MAGIC)
}

/// Creates a new network namespace pinned at `path`, or keeps the one already there.
pub async fn create(path: &Path) -> Result<(), NetError> {
    if is_netns(path) {
        return Ok(());
    }
    // An empty file left by an interrupted create is reused as the mount point.
    File::create(path).map_err(|e| NetError::io(path, e))?;
    let target = path.to_path_buf();
    let result = on_thread(move || {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| NetError::sys("unshare", &target, e))?;
        // thread-self, not self: only this thread is in the new namespace.
        let own = Path::new("/proc/thread-self/ns/net");
        mount(
            Some(own),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| NetError::sys("bind-mount netns", &target, e))
    })
    .await;
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

/// Pins the network namespace process `pid` is in at `path`, unless a namespace is pinned
/// there already. A pin made by a berth that ran in another mount namespace (as under
/// `ip netns exec`) is invisible to the next one; the pod's shim still holds the namespace.
pub fn pin_from_process(path: &Path, pid: i32) -> Result<(), NetError> {
    if is_netns(path) {
        return Ok(());
    }
    File::create(path).map_err(|e| NetError::io(path, e))?;
    let source = PathBuf::from(format!("/proc/{pid}/ns/net"));
    mount(
        Some(&source),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| NetError::sys("bind-mount netns", path, e))
}

/// Unmounts and deletes the namespace file at `path`; the namespace dies with its last user.
/// Idempotent.
pub fn remove(path: &Path) -> Result<(), NetError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (a half-made namespace); ENOENT: already gone.
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(NetError::sys("unmount netns", path, e)),
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(NetError::io(path, e)),
        _ => Ok(()),
    }
}

/// Runs `f` on a fresh thread that has joined the network namespace at `path`. Sockets `f`
/// opens stay in that namespace after the thread is gone, which is how the caller gets a
/// netlink connection into a pod without moving any of its own threads.
pub async fn run_in<T, F>(path: &Path, f: F) -> Result<T, NetError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, NetError> + Send + 'static,
{
    let ns = File::open(path).map_err(|e| NetError::io(path, e))?;
    if !is_netns(path) {
        return Err(NetError::NotANetns(path.to_path_buf()));
    }
    let path = path.to_path_buf();
    on_thread(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| NetError::sys("setns", &path, e))?;
        f()
    })
    .await
}

/// Runs `f` on its own thread and awaits its result without blocking the caller's runtime
/// (creating a namespace can take milliseconds). The thread starts in the caller's namespace
/// and its namespace changes die with it.
async fn on_thread<T, F>(f: F) -> Result<T, NetError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, NetError> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-netns".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| NetError::Thread(e.to_string()))?;
    rx.await
        .map_err(|_| NetError::Thread("netns helper thread panicked".into()))?
}

/// True if `path` is itself a mount point, per this process's mount table.
fn is_mount_point(path: &Path) -> Result<bool, NetError> {
    let path = fs::canonicalize(path).map_err(|e| NetError::io(path, e))?;
    let table = Path::new("/proc/self/mountinfo");
    let mountinfo = fs::read_to_string(table).map_err(|e| NetError::io(table, e))?;
    let found = mount_points(&mountinfo).any(|mp| mp == path);
    Ok(found)
}

/// The mount point column (5th) of each mountinfo line, with the kernel's octal escapes undone.
fn mount_points(mountinfo: &str) -> impl Iterator<Item = PathBuf> + '_ {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_octal)
}

fn unescape_octal(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes.get(i + 1..i + 4).and_then(|d| {
            let s = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(s, 8).ok()
        });
        match (bytes[i], escaped) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_read_from_the_fifth_column_and_unescaped() {
        let table = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                     40 22 8:1 /var/lib/my\\040data /var/lib/my\\040data rw - ext4 /dev/sda1 rw\n";
        let points: Vec<_> = mount_points(table).collect();
        assert_eq!(
            points,
            [PathBuf::from("/"), PathBuf::from("/var/lib/my data")]
        );
    }

    #[test]
    fn a_backslash_without_three_octal_digits_is_kept() {
        assert_eq!(unescape_octal("a\\b"), PathBuf::from("a\\b"));
        assert_eq!(unescape_octal("end\\"), PathBuf::from("end\\"));
    }

    #[test]
    fn a_plain_file_is_not_a_network_namespace() {
        let file = tempfile::NamedTempFile::new().unwrap();
        assert!(!is_netns(file.path()));
        assert!(is_netns(Path::new("/proc/self/ns/net")));
    }
}
