//! Image archives carried to the node (an air-gapped site, a USB stick) and dropped into the
//! configured import directory are imported when the server starts, so pods with
//! `imagePullPolicy: IfNotPresent` or `Never` run without any registry.
//!
//! Every start imports the directory again: the store is content-addressed, so an archive
//! already imported only costs reading it, and a deleted image comes back.

use std::path::{Path, PathBuf};

use crate::runtime::images::ImageStore;

/// File names accepted as archives: `docker save` and OCI layout tarballs.
const ARCHIVE_SUFFIXES: &[&str] = &[".tar", ".oci.tar", ".docker.tar"];

/// The archives in `dir`, sorted by name so imports happen in a predictable order.
pub fn archives_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut archives: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_file())
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            ARCHIVE_SUFFIXES.iter().any(|suffix| name.ends_with(suffix))
        })
        .collect();
    archives.sort();
    Ok(archives)
}

/// Opens the image store at `images_root` and imports `dir` into it (see [`import_dir`]).
pub fn import_into(images_root: &Path, dir: &Path) -> usize {
    match ImageStore::open(images_root) {
        Ok(store) => import_dir(&store, dir),
        Err(error) => {
            tracing::warn!(%error, "cannot open the image store to import archives");
            0
        }
    }
}

/// Imports every archive in `dir` into `store`; returns how many images were imported. A bad
/// archive is logged and skipped: one damaged file must not keep the node from starting.
pub fn import_dir(store: &ImageStore, dir: &Path) -> usize {
    let archives = match archives_in(dir) {
        Ok(archives) => archives,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return 0,
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "cannot read the image import directory");
            return 0;
        }
    };
    let mut imported = 0;
    for archive in archives {
        match store.import_archive(&archive) {
            Ok(images) => {
                for image in &images {
                    tracing::info!(archive = %archive.display(), image = %image.reference, "imported image");
                }
                imported += images.len();
            }
            Err(error) => {
                tracing::warn!(archive = %archive.display(), %error, "cannot import image archive")
            }
        }
    }
    imported
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tar_files_are_archives_and_they_come_sorted() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.tar", "a.oci.tar", "notes.txt", "c.tar.partial"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        std::fs::create_dir(dir.path().join("d.tar")).unwrap();
        let names: Vec<String> = archives_in(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.oci.tar", "b.tar"]);
    }

    #[test]
    fn a_missing_directory_imports_nothing_and_a_bad_archive_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&dir.path().join("images")).unwrap();
        assert_eq!(import_dir(&store, &dir.path().join("absent")), 0);
        let drop = dir.path().join("import");
        std::fs::create_dir(&drop).unwrap();
        std::fs::write(drop.join("broken.tar"), b"not a tar archive").unwrap();
        assert_eq!(import_dir(&store, &drop), 0);
        assert!(store.list().unwrap().is_empty());
    }
}
