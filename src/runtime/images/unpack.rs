//! Unpacks one layer tar into its own directory, ready to be an overlay lowerdir.
//!
//! The tar comes from the network, so nothing in it is trusted: paths with `..` are refused,
//! absolute paths are taken relative to the layer, nothing is ever written through a symlink,
//! extension headers (long names, PAX) are bounded, and the overlay-private `trusted.overlay.*`
//! xattrs cannot be set by the tar itself. Docker/OCI whiteouts become overlay whiteouts:
//! `.wh.<name>` a 0:0 character device, `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AT_FDCWD;
use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use sha2::{Digest as _, Sha256};
use tar::EntryType;

use super::ImageError;

/// GNU long names and link targets longer than this are refused (PATH_MAX is 4096).
const MAX_LONG_NAME: u64 = 64 << 10;
/// A PAX extension header larger than this is refused rather than read into memory.
const MAX_PAX_HEADER: u64 = 1 << 20;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What unpacking a layer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// `sha256:` of the uncompressed tar: the layer's diff_id.
    pub diff_id: String,
    /// Bytes of the uncompressed tar.
    pub tar_bytes: u64,
    pub entries: u64,
    /// Device nodes not created because this process may not (they are rare in images).
    pub skipped_devices: u64,
}

/// Unpacks a layer (plain tar, gzip or zstd, told apart by their magic bytes) into `dest`, an
/// existing empty directory. `layer` names the layer in errors.
pub fn unpack_layer(input: impl Read, dest: &Path, layer: &str) -> Result<UnpackStats, ImageError> {
    let mut input = BufReader::new(input);
    let magic = input.fill_buf().map_err(ImageError::io(dest))?;
    let tar: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(input))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(ImageError::io(dest))?)
    } else {
        Box::new(input)
    };
    let hashing = HashingReader {
        inner: tar,
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut unpacker = Unpacker {
        dest,
        layer,
        dirs: Vec::new(),
        stats: UnpackStats {
            diff_id: String::new(),
            tar_bytes: 0,
            entries: 0,
            skipped_devices: 0,
        },
    };
    let mut archive = tar::Archive::new(hashing);
    unpacker.run(&mut archive)?;
    // The diff_id covers the whole stream, including the end-of-archive blocks tar stops at.
    let mut hashing = archive.into_inner();
    io::copy(&mut hashing, &mut io::sink()).map_err(ImageError::io(dest))?;
    unpacker.stats.diff_id = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
    unpacker.stats.tar_bytes = hashing.bytes;
    Ok(unpacker.stats)
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Metadata carried by GNU long-name and PAX headers for the entry that follows them.
#[derive(Default)]
struct Pending {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    uid: Option<u64>,
    gid: Option<u64>,
    size: Option<u64>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

struct Unpacker<'a> {
    dest: &'a Path,
    layer: &'a str,
    /// Directories whose mode and mtime are set last, so creating their children does not undo it.
    dirs: Vec<(PathBuf, u32, i64)>,
    stats: UnpackStats,
}

impl Unpacker<'_> {
    fn bad_entry(&self, entry: &[u8], reason: impl Into<String>) -> ImageError {
        ImageError::UnsafeLayer {
            layer: self.layer.to_string(),
            entry: String::from_utf8_lossy(entry).into_owned(),
            reason: reason.into(),
        }
    }

    fn tar_error(&self, e: io::Error) -> ImageError {
        ImageError::UnsafeLayer {
            layer: self.layer.to_string(),
            entry: String::new(),
            reason: format!("malformed tar: {e}"),
        }
    }

    fn run<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Result<(), ImageError> {
        // Raw iteration: the tar crate would read extension headers of any size into memory.
        let mut entries = archive.entries().map_err(|e| self.tar_error(e))?.raw(true);
        let mut pending = Pending::default();
        for entry in &mut entries {
            let mut entry = entry.map_err(|e| self.tar_error(e))?;
            let kind = entry.header().entry_type();
            let size = entry.header().entry_size().map_err(|e| self.tar_error(e))?;
            match kind {
                EntryType::GNULongName => {
                    pending.path = Some(self.read_extension(&mut entry, size, MAX_LONG_NAME)?);
                    continue;
                }
                EntryType::GNULongLink => {
                    pending.link = Some(self.read_extension(&mut entry, size, MAX_LONG_NAME)?);
                    continue;
                }
                EntryType::XHeader => {
                    let data = self.read_extension(&mut entry, size, MAX_PAX_HEADER)?;
                    self.apply_pax(&data, &mut pending)?;
                    continue;
                }
                // Global PAX headers only carry defaults berth has no use for; skipped unread.
                EntryType::XGlobalHeader => continue,
                _ => {}
            }
            let p = std::mem::take(&mut pending);
            self.stats.entries += 1;
            self.entry(&mut entry, kind, size, p)?;
        }
        if pending.path.is_some() || pending.link.is_some() {
            return Err(self.bad_entry(b"", "extension header without an entry after it"));
        }
        self.finish_dirs()
    }

    fn read_extension<R: Read>(
        &self,
        entry: &mut R,
        size: u64,
        limit: u64,
    ) -> Result<Vec<u8>, ImageError> {
        if size > limit {
            return Err(self.bad_entry(
                b"",
                format!("extension header of {size} bytes exceeds the {limit} byte limit"),
            ));
        }
        let mut data = Vec::with_capacity(size as usize);
        entry
            .take(limit)
            .read_to_end(&mut data)
            .map_err(|e| self.tar_error(e))?;
        // GNU long names end in NUL.
        while data.last() == Some(&0) {
            data.pop();
        }
        Ok(data)
    }

    fn apply_pax(&self, data: &[u8], pending: &mut Pending) -> Result<(), ImageError> {
        for ext in tar::PaxExtensions::new(data) {
            let ext = ext.map_err(|e| self.tar_error(e))?;
            let key = ext
                .key()
                .map_err(|_| self.bad_entry(b"", "PAX key is not UTF-8"))?;
            let number = || -> Result<u64, ImageError> {
                ext.value()
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| self.bad_entry(b"", format!("PAX {key} is not a number")))
            };
            match key {
                "path" => pending.path = Some(ext.value_bytes().to_vec()),
                "linkpath" => pending.link = Some(ext.value_bytes().to_vec()),
                "uid" => pending.uid = Some(number()?),
                "gid" => pending.gid = Some(number()?),
                "size" => pending.size = Some(number()?),
                _ => {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        pending
                            .xattrs
                            .insert(name.to_string(), ext.value_bytes().to_vec());
                    }
                }
            }
        }
        Ok(())
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: EntryType,
        size: u64,
        pending: Pending,
    ) -> Result<(), ImageError> {
        let header = entry.header().clone();
        let raw_path = pending
            .path
            .clone()
            .unwrap_or_else(|| header.path_bytes().into_owned());
        if let Some(pax_size) = pending.size {
            if pax_size != size {
                return Err(self.bad_entry(&raw_path, "PAX size override is not supported"));
            }
        }
        let Some(components) = clean_path(&raw_path).map_err(|r| self.bad_entry(&raw_path, r))?
        else {
            // The layer root itself ("./"): its metadata belongs to the lower layers.
            return Ok(());
        };
        let (name, parents) = components
            .split_last()
            .ok_or_else(|| self.bad_entry(&raw_path, "empty path"))?;
        let parent = self.make_parents(parents, &raw_path)?;
        let name_bytes = name.as_bytes();

        if name_bytes == OPAQUE_WHITEOUT.as_bytes() {
            set_xattr(&parent, OVERLAY_OPAQUE_XATTR, b"y")
                .map_err(|e| self.io(&parent, e, "marking directory opaque"))?;
            return Ok(());
        }
        if name_bytes.starts_with(b".wh..wh.") {
            // Other AUFS metadata (`.wh..wh.plnk`, ...) means nothing to overlay.
            return Ok(());
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(self.bad_entry(&raw_path, "whiteout without a name"));
            }
            let target = parent.join(OsStr::from_bytes(hidden));
            self.clear(&target, false)?;
            mknod(&target, SFlag::S_IFCHR, Mode::empty(), 0)
                .map_err(|e| self.io(&target, e.into(), "creating overlay whiteout"))?;
            return Ok(());
        }

        let path = parent.join(name);
        let mode = header.mode().map_err(|e| self.tar_error(e))? & 0o7777;
        let uid = pending.uid.map(Ok).unwrap_or_else(|| header.uid());
        let gid = pending.gid.map(Ok).unwrap_or_else(|| header.gid());
        let (uid, gid) = (
            uid.map_err(|e| self.tar_error(e))?,
            gid.map_err(|e| self.tar_error(e))?,
        );
        let mtime = header.mtime().unwrap_or(0) as i64;

        match kind {
            EntryType::Regular | EntryType::Continuous => {
                self.clear(&path, false)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(ImageError::io(&path))?;
                let copied =
                    io::copy(&mut entry.take(size), &mut file).map_err(|e| self.tar_error(e))?;
                if copied != size {
                    return Err(self.bad_entry(&raw_path, "file data ends early"));
                }
                file.flush().map_err(ImageError::io(&path))?;
                drop(file);
                self.set_owner(&path, uid, gid)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(ImageError::io(&path))?;
                self.set_xattrs(&path, &pending.xattrs)?;
                set_mtime(&path, mtime);
            }
            EntryType::Directory => {
                if !self.clear(&path, true)? {
                    fs::create_dir(&path).map_err(ImageError::io(&path))?;
                }
                self.set_owner(&path, uid, gid)?;
                self.set_xattrs(&path, &pending.xattrs)?;
                self.dirs.push((path, mode, mtime));
            }
            EntryType::Symlink => {
                let target = pending
                    .link
                    .clone()
                    .or_else(|| header.link_name_bytes().map(|b| b.into_owned()))
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| self.bad_entry(&raw_path, "symlink without a target"))?;
                self.clear(&path, false)?;
                // The target is stored as is: it is only ever resolved inside the container's
                // root, and nothing here writes through a symlink.
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                    .map_err(ImageError::io(&path))?;
                self.set_owner(&path, uid, gid)?;
                set_mtime(&path, mtime);
            }
            EntryType::Link => {
                let target = pending
                    .link
                    .clone()
                    .or_else(|| header.link_name_bytes().map(|b| b.into_owned()))
                    .ok_or_else(|| self.bad_entry(&raw_path, "hard link without a target"))?;
                let target_components = clean_path(&target)
                    .map_err(|r| self.bad_entry(&raw_path, format!("hard link target: {r}")))?
                    .ok_or_else(|| self.bad_entry(&raw_path, "hard link to the layer root"))?;
                let source = self.existing_path(&target_components, &raw_path)?;
                self.clear(&path, false)?;
                // link(2) does not follow a symlink at `source`: the link names the symlink.
                fs::hard_link(&source, &path).map_err(ImageError::io(&path))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (sflag, dev) = match kind {
                    EntryType::Char => (SFlag::S_IFCHR, self.device(&header, &raw_path)?),
                    EntryType::Block => (SFlag::S_IFBLK, self.device(&header, &raw_path)?),
                    _ => (SFlag::S_IFIFO, 0),
                };
                self.clear(&path, false)?;
                match mknod(&path, sflag, Mode::from_bits_truncate(mode & 0o777), dev) {
                    Ok(()) => {}
                    Err(Errno::EPERM) if kind != EntryType::Fifo => {
                        self.stats.skipped_devices += 1;
                        return Ok(());
                    }
                    Err(e) => return Err(self.io(&path, e.into(), "creating special file")),
                }
                self.set_owner(&path, uid, gid)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(ImageError::io(&path))?;
                set_mtime(&path, mtime);
            }
            EntryType::GNUSparse => {
                return Err(self.bad_entry(&raw_path, "sparse files are not supported"));
            }
            // Volume labels and unknown types carry nothing a container sees.
            _ => {}
        }
        Ok(())
    }

    fn device(&self, header: &tar::Header, raw_path: &[u8]) -> Result<libc::dev_t, ImageError> {
        let major = header.device_major().ok().flatten();
        let minor = header.device_minor().ok().flatten();
        match (major, minor) {
            (Some(major), Some(minor)) => Ok(libc::makedev(major, minor)),
            _ => Err(self.bad_entry(raw_path, "device entry without device numbers")),
        }
    }

    fn io(&self, path: &Path, e: io::Error, what: &str) -> ImageError {
        ImageError::Io {
            path: path.to_path_buf(),
            source: io::Error::new(e.kind(), format!("{what}: {e}")),
        }
    }

    /// Creates the parent directories of an entry; refuses to pass through anything that is not
    /// a real directory, so a symlink planted by an earlier entry can never redirect a write.
    fn make_parents(&self, parents: &[&OsStr], raw_path: &[u8]) -> Result<PathBuf, ImageError> {
        let mut dir = self.dest.to_path_buf();
        for component in parents {
            dir.push(component);
            match fs::symlink_metadata(&dir) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(self.bad_entry(raw_path, "a parent directory is a symlink"));
                }
                Ok(_) => {
                    return Err(self.bad_entry(raw_path, "a parent is not a directory"));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&dir).map_err(ImageError::io(&dir))?;
                }
                Err(e) => return Err(ImageError::io(&dir)(e)),
            }
        }
        Ok(dir)
    }

    /// The on-disk path of an earlier entry of this layer, reached through real directories only.
    fn existing_path(&self, components: &[&OsStr], raw_path: &[u8]) -> Result<PathBuf, ImageError> {
        let mut path = self.dest.to_path_buf();
        for (i, component) in components.iter().enumerate() {
            path.push(component);
            let meta = fs::symlink_metadata(&path)
                .map_err(|_| self.bad_entry(raw_path, "hard link target is not in this layer"))?;
            let last = i + 1 == components.len();
            if !last && !meta.is_dir() {
                return Err(self.bad_entry(raw_path, "hard link target passes a non-directory"));
            }
            if last && meta.is_dir() {
                return Err(self.bad_entry(raw_path, "hard link to a directory"));
            }
        }
        Ok(path)
    }

    /// Removes whatever a later entry replaces. Returns true if `path` is a directory that was
    /// kept because the new entry is a directory too (tar semantics: metadata update only).
    fn clear(&self, path: &Path, keep_dir: bool) -> Result<bool, ImageError> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => {
                if keep_dir {
                    return Ok(true);
                }
                fs::remove_dir_all(path).map_err(ImageError::io(path))?;
            }
            Ok(_) => fs::remove_file(path).map_err(ImageError::io(path))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ImageError::io(path)(e)),
        }
        Ok(false)
    }

    fn set_owner(&self, path: &Path, uid: u64, gid: u64) -> Result<(), ImageError> {
        let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
            return Err(self.bad_entry(path.as_os_str().as_bytes(), "uid or gid out of range"));
        };
        match std::os::unix::fs::lchown(path, Some(uid), Some(gid)) {
            Ok(()) => Ok(()),
            // Without CAP_CHOWN everything stays owned by the unpacking user.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(()),
            Err(e) => Err(ImageError::io(path)(e)),
        }
    }

    fn set_xattrs(
        &self,
        path: &Path,
        xattrs: &BTreeMap<String, Vec<u8>>,
    ) -> Result<(), ImageError> {
        for (name, value) in xattrs {
            if name.starts_with("trusted.overlay.") {
                return Err(self.bad_entry(
                    path.as_os_str().as_bytes(),
                    format!("sets the overlay-private xattr {name}"),
                ));
            }
            match set_xattr(path, name, value) {
                Ok(()) => {}
                // File capabilities and the like are best effort, as with other runtimes.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOTSUP)) => {}
                Err(e) => return Err(self.io(path, e, &format!("setting xattr {name}"))),
            }
        }
        Ok(())
    }

    fn finish_dirs(&mut self) -> Result<(), ImageError> {
        // Deepest first, so setting a child's mtime does not disturb its parent afterwards.
        self.dirs.sort_by(|a, b| b.0.cmp(&a.0));
        for (path, mode, mtime) in &self.dirs {
            fs::set_permissions(path, fs::Permissions::from_mode(*mode))
                .map_err(ImageError::io(path))?;
            set_mtime(path, *mtime);
        }
        Ok(())
    }
}

/// Splits a tar path into safe components: empty and `.` parts dropped (so `/etc` and `./etc`
/// both mean `etc` in the layer), `..` refused. `None` for the layer root itself.
fn clean_path(raw: &[u8]) -> Result<Option<Vec<&OsStr>>, String> {
    if raw.contains(&0) {
        return Err("path contains a NUL byte".into());
    }
    let mut out = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("path climbs out with ..".into()),
            _ => out.push(OsStr::from_bytes(part)),
        }
    }
    Ok(if out.is_empty() { None } else { Some(out) })
}

/// Timestamps are cosmetic in a layer; failing to set one is not worth failing the pull.
fn set_mtime(path: &Path, mtime: i64) {
    let t = TimeSpec::new(mtime, 0);
    let _ = utimensat(AT_FDCWD, path, &t, &t, UtimensatFlags::NoFollowSymlink);
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let c_name = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))?;
    // SAFETY: both strings are valid NUL-terminated C strings that outlive the call, and the
    // value pointer/length pair describes a live slice; lsetxattr does not retain any of them.
    let rc = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Opens a blob and unpacks it; used by pull and import alike.
pub fn unpack_file(blob: &Path, dest: &Path, layer: &str) -> Result<UnpackStats, ImageError> {
    let file = File::open(blob).map_err(ImageError::io(blob))?;
    unpack_layer(file, dest, layer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use tar::Header;

    /// A tar built entry by entry, with raw names so hostile paths can be expressed.
    struct TarBuilder(tar::Builder<Vec<u8>>);

    impl TarBuilder {
        fn new() -> TarBuilder {
            TarBuilder(tar::Builder::new(Vec::new()))
        }

        fn header(kind: EntryType, name: &[u8], size: u64, mode: u32) -> Header {
            let mut h = Header::new_gnu();
            h.set_entry_type(kind);
            h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
            h.set_size(size);
            h.set_mode(mode);
            h.set_mtime(1_000_000);
            h.set_uid(0);
            h.set_gid(0);
            h
        }

        fn add(&mut self, mut h: Header, data: &[u8]) -> &mut Self {
            h.set_cksum();
            self.0.append(&h, data).unwrap();
            self
        }

        fn file(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
            let h = Self::header(EntryType::Regular, name.as_bytes(), data.len() as u64, mode);
            self.add(h, data)
        }

        fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
            self.add(
                Self::header(EntryType::Directory, name.as_bytes(), 0, mode),
                b"",
            )
        }

        fn link(&mut self, kind: EntryType, name: &str, target: &str) -> &mut Self {
            let mut h = Self::header(kind, name.as_bytes(), 0, 0o777);
            h.set_link_name(target).unwrap();
            self.add(h, b"")
        }

        fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
            let mut data = Vec::new();
            for (key, value) in records {
                // "<len> <key>=<value>\n" where len counts itself.
                let body_len = key.len() + value.len() + 3;
                let mut len = body_len + 1;
                while len.to_string().len() + body_len != len {
                    len += 1;
                }
                data.extend_from_slice(format!("{len} {key}=").as_bytes());
                data.extend_from_slice(value);
                data.push(b'\n');
            }
            let h = Self::header(
                EntryType::XHeader,
                b"././@PaxHeader",
                data.len() as u64,
                0o644,
            );
            self.add(h, &data)
        }

        fn finish(&mut self) -> Vec<u8> {
            let builder = std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()));
            builder.into_inner().unwrap()
        }
    }

    fn unpack(tar: &[u8]) -> (tempfile::TempDir, Result<UnpackStats, ImageError>) {
        let dir = tempfile::tempdir().unwrap();
        let result = unpack_layer(tar, dir.path(), "test-layer");
        (dir, result)
    }

    // Needs root: ownership other than our own.
    #[test]
    fn a_layer_keeps_modes_owners_links_and_reports_its_diff_id() {
        let mut t = TarBuilder::new();
        t.dir("bin/", 0o755);
        let mut h = TarBuilder::header(EntryType::Regular, b"bin/busybox", 4, 0o4755);
        h.set_uid(0);
        h.set_gid(0);
        t.add(h, b"ELF!");
        t.link(EntryType::Symlink, "bin/sh", "busybox");
        t.link(EntryType::Link, "bin/ash", "bin/busybox");
        let mut h = TarBuilder::header(EntryType::Regular, b"home/nobody/.profile", 2, 0o600);
        h.set_uid(65534);
        h.set_gid(65534);
        t.add(h, b"x\n");
        let tar = t.finish();
        let (dir, result) = unpack(&tar);
        let stats = result.unwrap();
        let root = dir.path();

        assert_eq!(stats.diff_id, manifest_digest_of(&tar));
        assert_eq!(stats.tar_bytes, tar.len() as u64);
        let busybox = fs::metadata(root.join("bin/busybox")).unwrap();
        assert_eq!(busybox.mode() & 0o7777, 0o4755);
        assert_eq!(fs::read(root.join("bin/busybox")).unwrap(), b"ELF!");
        assert_eq!(
            fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(
            fs::metadata(root.join("bin/ash")).unwrap().ino(),
            busybox.ino()
        );
        let profile = fs::metadata(root.join("home/nobody/.profile")).unwrap();
        assert_eq!((profile.uid(), profile.gid()), (65534, 65534));
        assert_eq!(profile.mtime(), 1_000_000);
    }

    fn manifest_digest_of(bytes: &[u8]) -> String {
        super::super::manifest::sha256_digest(bytes)
    }

    #[test]
    fn paths_climbing_out_with_dot_dot_are_refused() {
        let tar = TarBuilder::new()
            .file("a/../../escape", b"x", 0o644)
            .finish();
        let (dir, result) = unpack(&tar);
        let err = result.unwrap_err().to_string();
        assert!(err.contains("climbs out"), "{err}");
        assert!(!dir.path().parent().unwrap().join("escape").exists());
    }

    #[test]
    fn absolute_paths_land_inside_the_layer() {
        let tar = TarBuilder::new()
            .file("/etc/hostname", b"edge\n", 0o644)
            .finish();
        let (dir, result) = unpack(&tar);
        result.unwrap();
        assert_eq!(
            fs::read(dir.path().join("etc/hostname")).unwrap(),
            b"edge\n"
        );
    }

    #[test]
    fn writing_through_a_symlinked_parent_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        let tar = TarBuilder::new()
            .link(EntryType::Symlink, "evil", outside.path().to_str().unwrap())
            .file("evil/planted", b"x", 0o644)
            .finish();
        let (_dir, result) = unpack(&tar);
        let err = result.unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");
        assert!(!outside.path().join("planted").exists());
    }

    #[test]
    fn a_regular_file_entry_replaces_a_symlink_instead_of_following_it() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, b"safe").unwrap();
        let tar = TarBuilder::new()
            .link(EntryType::Symlink, "f", victim.to_str().unwrap())
            .file("f", b"overwritten", 0o644)
            .finish();
        let (dir, result) = unpack(&tar);
        result.unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"safe");
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"overwritten");
    }

    #[test]
    fn hard_links_to_files_outside_the_layer_are_refused() {
        let tar = TarBuilder::new()
            .link(EntryType::Link, "passwd", "../../etc/passwd")
            .finish();
        assert!(unpack(&tar).1.is_err());
        let tar = TarBuilder::new()
            .link(EntryType::Link, "passwd", "/etc/passwd")
            .finish();
        let err = unpack(&tar).1.unwrap_err().to_string();
        assert!(err.contains("not in this layer"), "{err}");
    }

    // Needs root: mknod of the 0:0 whiteout device and trusted.* xattrs.
    #[test]
    fn whiteouts_become_overlay_whiteout_devices_and_opaque_dirs() {
        let tar = TarBuilder::new()
            .file("etc/.wh.motd", b"", 0o644)
            .dir("var/cache/", 0o755)
            .file("var/cache/.wh..wh..opq", b"", 0o644)
            .file("var/cache/new", b"n", 0o644)
            .file(".wh..wh.plnk", b"", 0o644)
            .finish();
        let (dir, result) = unpack(&tar);
        result.unwrap();
        let motd = fs::symlink_metadata(dir.path().join("etc/motd")).unwrap();
        assert!(motd.file_type().is_char_device());
        assert_eq!(motd.rdev(), 0);
        assert!(!dir.path().join("etc/.wh.motd").exists());
        assert_eq!(
            get_xattr(&dir.path().join("var/cache"), OVERLAY_OPAQUE_XATTR),
            Some(b"y".to_vec())
        );
        assert!(dir.path().join("var/cache/new").exists());
        assert!(!dir.path().join(".wh..wh.plnk").exists());
    }

    #[test]
    fn a_tar_cannot_set_overlay_private_xattrs_itself() {
        let tar = TarBuilder::new()
            .pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y")])
            .dir("d/", 0o755)
            .finish();
        let err = unpack(&tar).1.unwrap_err().to_string();
        assert!(err.contains("overlay-private"), "{err}");
    }

    #[test]
    fn pax_paths_and_owners_apply_to_the_next_entry() {
        let long = format!("{}/file", "d".repeat(200));
        let tar = TarBuilder::new()
            .pax(&[("path", long.as_bytes()), ("uid", b"4242")])
            .file("short", b"1", 0o644)
            .finish();
        let (dir, result) = unpack(&tar);
        result.unwrap();
        let meta = fs::metadata(dir.path().join(&long)).unwrap();
        assert_eq!(meta.uid(), 4242);
        assert!(!dir.path().join("short").exists());
    }

    #[test]
    fn oversized_long_name_headers_are_refused_before_being_read() {
        let data = vec![b'a'; (MAX_LONG_NAME + 1) as usize];
        let mut t = TarBuilder::new();
        let h = TarBuilder::header(
            EntryType::GNULongName,
            b"././@LongLink",
            data.len() as u64,
            0o644,
        );
        t.add(h, &data).file("x", b"", 0o644);
        let err = unpack(&t.finish()).1.unwrap_err().to_string();
        assert!(err.contains("exceeds"), "{err}");
    }

    #[test]
    fn gzip_and_zstd_layers_have_the_diff_id_of_their_plain_tar() {
        let tar = TarBuilder::new().file("a", b"hello", 0o644).finish();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&tar[..], 1).unwrap();
        for compressed in [&gz, &zst] {
            let (dir, result) = unpack(compressed);
            assert_eq!(result.unwrap().diff_id, manifest_digest_of(&tar));
            assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"hello");
        }
    }

    #[test]
    fn a_later_entry_for_the_same_path_wins() {
        let tar = TarBuilder::new()
            .dir("x/", 0o755)
            .file("x/old", b"", 0o644)
            .file("x", b"now a file", 0o640)
            .finish();
        let (dir, result) = unpack(&tar);
        result.unwrap();
        assert_eq!(fs::read(dir.path().join("x")).unwrap(), b"now a file");
    }

    #[test]
    fn a_truncated_tar_is_an_error() {
        let tar = TarBuilder::new().file("big", &[7u8; 4096], 0o644).finish();
        let err = unpack(&tar[..1024]).1.unwrap_err();
        assert!(matches!(err, ImageError::UnsafeLayer { .. }), "{err}");
    }

    fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
        let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
        let c_name = CString::new(name).unwrap();
        let mut buf = [0u8; 64];
        // SAFETY: valid C strings and a live buffer of the given length.
        let n = unsafe {
            libc::lgetxattr(
                c_path.as_ptr(),
                c_name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        (n >= 0).then(|| buf[..n as usize].to_vec())
    }
}
