//! The on-disk image store: content-addressed blobs, unpacked layers and the index of images.
//!
//! Several processes share it (the server pulling, `berth images import|rm` at the same time):
//! - `index.lock` (exclusive) serialises read-modify-write of `index.json`;
//! - `gc.lock`: pulls and imports hold it shared while they add unindexed blobs and layers,
//!   removal holds it exclusive, so garbage collection never takes content a pull is about to
//!   record.
//!
//! Blobs and layers are content-addressed and appear by rename, so two writers of the same
//! content simply agree.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::manifest::{self, digest_hex, ImageManifest, MAX_DOCUMENT_BYTES};
use super::reference::{normalize_reference, parse_reference, repository_of};
use super::unpack::unpack_file;
use super::{Image, ImageError, ImageRuntimeConfig};

static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

/// Handle on `<data-dir>/images`. Cheap to clone (clones share in-flight pulls); holds no
/// open files. All methods but `ensure`/`pull` block on file I/O and `flock`: from async code,
/// call them through `spawn_blocking`.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    /// One lock per reference being pulled, so pods starting together download an image once.
    pub(super) inflight: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// `index.json`: what is recorded about each image.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct IndexFile {
    pub images: Vec<IndexEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct IndexEntry {
    /// Normalized references naming this image.
    pub references: Vec<String>,
    /// The digest the image was fetched by: an index digest for multi-platform images.
    pub repo_digest: String,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layers: Vec<LayerEntry>,
    pub size: u64,
    pub config: ImageRuntimeConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct LayerEntry {
    /// The (possibly compressed) blob.
    pub digest: String,
    /// The uncompressed tar, naming the unpacked directory.
    pub diff_id: String,
}

/// A held `flock`; released when dropped.
pub(super) struct Lock(#[allow(dead_code)] Flock<File>);

impl ImageStore {
    /// Opens (creating if needed) the store at `root` and sweeps work left by dead processes.
    pub fn open(root: &Path) -> Result<ImageStore, ImageError> {
        let store = ImageStore {
            root: root.to_path_buf(),
            inflight: Arc::default(),
        };
        for dir in [store.blobs_dir(), store.layers_dir(), store.tmp_dir()] {
            fs::create_dir_all(&dir).map_err(ImageError::io(&dir))?;
        }
        store.sweep_tmp()?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The image a reference (short or full) or an image id (`sha256:...`) names, if present.
    pub fn get(&self, reference: &str) -> Result<Option<Image>, ImageError> {
        let index = self.read_index()?;
        if let Some(entry) = find_by_id(&index, reference) {
            let name = entry.references.first().cloned().unwrap_or_default();
            return Ok(Some(self.image(entry, &name)));
        }
        let parsed = parse_reference(reference)?;
        let normalized = parsed.whole();
        if let Some(entry) = index
            .images
            .iter()
            .find(|e| e.references.contains(&normalized))
        {
            return Ok(Some(self.image(entry, &normalized)));
        }
        // `repo@sha256:...` also finds an image pulled by tag, if it is that content.
        let Some(digest) = parsed.digest() else {
            return Ok(None);
        };
        let repository = repository_of(&parsed);
        Ok(index
            .images
            .iter()
            .find(|e| {
                (e.repo_digest == digest || e.manifest_digest == digest)
                    && e.references
                        .iter()
                        .any(|r| parse_reference(r).is_ok_and(|r| repository_of(&r) == repository))
            })
            .map(|e| self.image(e, &normalized)))
    }

    /// One entry per reference, sorted by reference.
    pub fn list(&self) -> Result<Vec<Image>, ImageError> {
        let index = self.read_index()?;
        let mut images: Vec<Image> = index
            .images
            .iter()
            .flat_map(|e| e.references.iter().map(move |r| self.image(e, r)))
            .collect();
        images.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(images)
    }

    /// Forgets a reference (or, given an image id, every reference of that image) and deletes
    /// blobs and layers no remaining image uses. Layers still mounted by containers must not be
    /// removed: the caller (image garbage collection) only removes unused images.
    pub fn remove(&self, reference: &str) -> Result<(), ImageError> {
        let _gc = self.lock("gc.lock", FlockArg::LockExclusive)?;
        let by_id = self
            .read_index()
            .map(|index| find_by_id(&index, reference).map(|e| e.config_digest.clone()))?;
        let normalized = match &by_id {
            Some(_) => String::new(),
            None => normalize_reference(reference)?,
        };
        let mut found = false;
        let index = self.update_index(|index| {
            for entry in &mut index.images {
                if by_id.as_deref() == Some(entry.config_digest.as_str()) {
                    entry.references.clear();
                    found = true;
                } else if let Some(pos) = entry.references.iter().position(|r| *r == normalized) {
                    entry.references.remove(pos);
                    found = true;
                }
            }
            index.images.retain(|e| !e.references.is_empty());
        })?;
        if !found {
            return Err(ImageError::NotFound(reference.to_string()));
        }
        self.collect_garbage(&index)
    }

    // ---- paths ----

    pub(super) fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    pub(super) fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.blobs_dir().join(digest_hex(digest)?))
    }

    pub(super) fn layer_path(&self, diff_id: &str) -> Result<PathBuf, ImageError> {
        Ok(self.layers_dir().join(digest_hex(diff_id)?))
    }

    /// A fresh name in `tmp/`, prefixed with our pid so a later sweep knows whose it is.
    pub(super) fn tmp_path(&self, what: &str) -> PathBuf {
        let n = NEXT_TMP.fetch_add(1, Ordering::Relaxed);
        self.tmp_dir()
            .join(format!("{}-{n}-{what}", std::process::id()))
    }

    // ---- locks ----

    pub(super) fn lock(&self, name: &str, arg: FlockArg) -> Result<Lock, ImageError> {
        let path = self.root.join(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(ImageError::io(&path))?;
        Flock::lock(file, arg)
            .map(Lock)
            .map_err(|(_, errno)| ImageError::io(&path)(errno.into()))
    }

    /// Held while adding content that is not yet in the index.
    pub(super) fn gc_shared(&self) -> Result<Lock, ImageError> {
        self.lock("gc.lock", FlockArg::LockShared)
    }

    // ---- blobs ----

    pub(super) fn has_blob(&self, digest: &str) -> Result<bool, ImageError> {
        Ok(self.blob_path(digest)?.is_file())
    }

    /// Reads a small blob (manifest, config) whole.
    pub(super) fn read_document(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(digest)?;
        read_bounded(&path, MAX_DOCUMENT_BYTES)
    }

    /// Copies `reader` into the blob store, hashing on the way; with `expected`, refuses content
    /// whose digest differs. Returns the digest and size.
    pub(super) fn write_blob(
        &self,
        mut reader: impl Read,
        expected: Option<&str>,
    ) -> Result<(String, u64), ImageError> {
        if let Some(expected) = expected {
            digest_hex(expected)?;
        }
        let tmp = self.tmp_path("blob");
        let result = (|| {
            let mut file = File::create(&tmp).map_err(ImageError::io(&tmp))?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(ImageError::io(&tmp)(e)),
                };
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n]).map_err(ImageError::io(&tmp))?;
                size += n as u64;
            }
            let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
            if let Some(expected) = expected {
                if digest != expected {
                    return Err(ImageError::DigestMismatch {
                        expected: expected.to_string(),
                        actual: digest,
                    });
                }
            }
            file.sync_all().map_err(ImageError::io(&tmp))?;
            self.commit_blob(&tmp, &digest)?;
            Ok((digest, size))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Moves a verified, synced temp file into place as blob `digest`.
    pub(super) fn commit_blob(&self, tmp: &Path, digest: &str) -> Result<(), ImageError> {
        let path = self.blob_path(digest)?;
        fs::rename(tmp, &path).map_err(ImageError::io(&path))?;
        sync_dir(&self.blobs_dir())
    }

    // ---- layers and images ----

    /// Unpacks layer blob `digest` as `diff_id` unless already there; the diff_id recorded in
    /// the config must match what the tar really is.
    fn ensure_layer(&self, digest: &str, diff_id: &str) -> Result<PathBuf, ImageError> {
        let dest = self.layer_path(diff_id)?;
        if dest.is_dir() {
            return Ok(dest);
        }
        let blob = self.blob_path(digest)?;
        let tmp = self.tmp_path("layer");
        fs::create_dir(&tmp).map_err(ImageError::io(&tmp))?;
        let result = (|| {
            let stats = unpack_file(&blob, &tmp, digest)?;
            if stats.diff_id != diff_id {
                return Err(ImageError::DigestMismatch {
                    expected: diff_id.to_string(),
                    actual: stats.diff_id,
                });
            }
            // One syncfs instead of an fsync per file: the layer is durable before it is named.
            let dir = File::open(&tmp).map_err(ImageError::io(&tmp))?;
            nix::unistd::syncfs(&dir).map_err(|e| ImageError::io(&tmp)(e.into()))?;
            match fs::rename(&tmp, &dest) {
                Ok(()) => sync_dir(&self.layers_dir()),
                // Another process unpacked the same layer first; theirs is as good as ours.
                Err(_) if dest.is_dir() => {
                    let _ = fs::remove_dir_all(&tmp);
                    Ok(())
                }
                Err(e) => Err(ImageError::io(&dest)(e)),
            }
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result.map(|()| dest)
    }

    /// Records an image whose manifest, config and layer blobs are all in the store: unpacks its
    /// layers and points `references` at it. Returns it as named by the first reference.
    pub(super) fn commit_image(
        &self,
        references: &[String],
        repo_digest: &str,
        manifest_digest: &str,
        manifest: &ImageManifest,
    ) -> Result<Image, ImageError> {
        let config_digest = manifest.config.digest.as_str();
        let config_bytes = self.read_document(config_digest)?;
        let config = manifest::parse_config(config_digest, &config_bytes)?;
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::InvalidManifest {
                digest: manifest_digest.to_string(),
                reason: format!(
                    "{} layers but the config lists {} diff_ids",
                    manifest.layers.len(),
                    diff_ids.len()
                ),
            });
        }
        let manifest_size = self.blob_size(manifest_digest)?;
        let mut size = manifest_size + config_bytes.len() as u64;
        for descriptor in std::iter::once(&manifest.config).chain(&manifest.layers) {
            let actual = self.blob_size(&descriptor.digest)?;
            if actual != descriptor.size {
                return Err(ImageError::InvalidManifest {
                    digest: manifest_digest.to_string(),
                    reason: format!(
                        "blob {} has {actual} bytes, the manifest says {}",
                        descriptor.digest, descriptor.size
                    ),
                });
            }
        }
        let mut layers = Vec::new();
        for (descriptor, diff_id) in manifest.layers.iter().zip(diff_ids) {
            self.ensure_layer(&descriptor.digest, diff_id)?;
            size += descriptor.size;
            layers.push(LayerEntry {
                digest: descriptor.digest.clone(),
                diff_id: diff_id.clone(),
            });
        }
        let entry = IndexEntry {
            references: references.to_vec(),
            repo_digest: repo_digest.to_string(),
            manifest_digest: manifest_digest.to_string(),
            config_digest: config_digest.to_string(),
            layers,
            size,
            config: config.runtime_config(),
        };
        self.update_index(|index| {
            for other in &mut index.images {
                other.references.retain(|r| !references.contains(r));
            }
            match index.images.iter_mut().find(|e| {
                e.manifest_digest == entry.manifest_digest && e.config_digest == entry.config_digest
            }) {
                Some(existing) => {
                    existing.references.extend(references.iter().cloned());
                    existing.references.sort();
                    existing.references.dedup();
                    existing.repo_digest = entry.repo_digest.clone();
                }
                None => index.images.push(entry.clone()),
            }
            // An image whose last reference moved elsewhere is dangling; its content goes at
            // the next garbage collection.
            index.images.retain(|e| !e.references.is_empty());
        })?;
        let name = references.first().cloned().unwrap_or_default();
        Ok(self.image(&entry, &name))
    }

    fn blob_size(&self, digest: &str) -> Result<u64, ImageError> {
        let path = self.blob_path(digest)?;
        Ok(fs::metadata(&path).map_err(ImageError::io(&path))?.len())
    }

    fn image(&self, entry: &IndexEntry, reference: &str) -> Image {
        let repository = parse_reference(reference)
            .map(|r| repository_of(&r))
            .unwrap_or_else(|_| reference.to_string());
        Image {
            reference: reference.to_string(),
            id: entry.config_digest.clone(),
            digest: format!("{repository}@{}", entry.repo_digest),
            layers: entry
                .layers
                .iter()
                .filter_map(|l| self.layer_path(&l.diff_id).ok())
                .collect(),
            config: entry.config.clone(),
            size: entry.size,
        }
    }

    // ---- index ----

    pub(super) fn read_index(&self) -> Result<IndexFile, ImageError> {
        let path = self.index_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ImageError::Index {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(IndexFile::default()),
            Err(e) => Err(ImageError::io(&path)(e)),
        }
    }

    /// Read-modify-write of the index under `index.lock`; returns what was written.
    fn update_index(&self, change: impl FnOnce(&mut IndexFile)) -> Result<IndexFile, ImageError> {
        let _lock = self.lock("index.lock", FlockArg::LockExclusive)?;
        let mut index = self.read_index()?;
        change(&mut index);
        let path = self.index_path();
        let bytes = serde_json::to_vec_pretty(&index).map_err(|e| ImageError::Index {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &bytes, &self.tmp_path("index"))?;
        Ok(index)
    }

    // ---- garbage ----

    fn collect_garbage(&self, index: &IndexFile) -> Result<(), ImageError> {
        let mut blobs = BTreeSet::new();
        let mut layers = BTreeSet::new();
        for entry in &index.images {
            for digest in [
                &entry.manifest_digest,
                &entry.config_digest,
                &entry.repo_digest,
            ] {
                blobs.insert(digest_hex(digest)?.to_string());
            }
            for layer in &entry.layers {
                blobs.insert(digest_hex(&layer.digest)?.to_string());
                layers.insert(digest_hex(&layer.diff_id)?.to_string());
            }
        }
        for (dir, keep) in [(self.blobs_dir(), &blobs), (self.layers_dir(), &layers)] {
            for item in fs::read_dir(&dir).map_err(ImageError::io(&dir))? {
                let item = item.map_err(ImageError::io(&dir))?;
                let name = item.file_name().to_string_lossy().into_owned();
                if keep.contains(&name) {
                    continue;
                }
                let path = item.path();
                let removed = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                removed.map_err(ImageError::io(&path))?;
            }
        }
        Ok(())
    }

    /// Removes temp files and directories whose writing process is gone.
    fn sweep_tmp(&self) -> Result<(), ImageError> {
        let dir = self.tmp_dir();
        for item in fs::read_dir(&dir).map_err(ImageError::io(&dir))? {
            let item = item.map_err(ImageError::io(&dir))?;
            let name = item.file_name().to_string_lossy().into_owned();
            let owner = name.split('-').next().and_then(|p| p.parse::<i32>().ok());
            let alive = match owner {
                Some(pid) if pid == std::process::id() as i32 => true,
                Some(pid) => {
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                        != Err(nix::errno::Errno::ESRCH)
                }
                None => false,
            };
            if !alive {
                let path = item.path();
                let _ = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
            }
        }
        Ok(())
    }
}

fn find_by_id<'a>(index: &'a IndexFile, id: &str) -> Option<&'a IndexEntry> {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    // Short ids as `ls` prints them; at least 12 digits so a name is never taken for an id.
    if hex.len() < 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut matches = index
        .images
        .iter()
        .filter(|e| e.config_digest["sha256:".len()..].starts_with(hex));
    let first = matches.next()?;
    matches.next().is_none().then_some(first)
}

pub(super) fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ImageError> {
    let file = File::open(path).map_err(ImageError::io(path))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(ImageError::io(path))?;
    if bytes.len() as u64 > limit {
        return Err(ImageError::io(path)(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than the {limit} byte limit for a manifest or config"),
        )));
    }
    Ok(bytes)
}

/// Writes `bytes` to `path` so that readers see the old or the new content, never a mix.
fn write_atomic(path: &Path, bytes: &[u8], tmp: &Path) -> Result<(), ImageError> {
    let result = (|| {
        let mut file = File::create(tmp).map_err(ImageError::io(tmp))?;
        file.write_all(bytes).map_err(ImageError::io(tmp))?;
        file.sync_all().map_err(ImageError::io(tmp))?;
        fs::rename(tmp, path).map_err(ImageError::io(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Makes a rename in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), ImageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ImageError::io(dir))
}
