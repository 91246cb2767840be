//! `berth images import`: OCI archives (a tar of an OCI image layout) and docker-archives
//! (`docker save`, with `manifest.json`), plain or gzip/zstd compressed.
//!
//! One pass over the tar: small metadata files are kept in memory, every other file goes
//! straight into the blob store, hashed on the way (files under `blobs/sha256/` must match their
//! name). Then the manifests are resolved against the store and each image is committed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use nix::fcntl::FlockArg;
use serde::Deserialize;

use super::manifest::{
    parse_manifest, sha256_digest, AnyManifest, Descriptor, ImageManifest, DOCKER_MANIFEST,
    MAX_DOCUMENT_BYTES, OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD,
};
use super::reference::{normalize_reference, Platform};
use super::{Image, ImageError, ImageStore};

/// Files read into memory rather than stored as blobs.
const METADATA_FILES: &[&str] = &["index.json", "manifest.json", "oci-layout", "repositories"];
const CONTAINERD_NAME: &str = "io.containerd.image.name";
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What the pass over the archive found.
#[derive(Default)]
struct Contents {
    metadata: BTreeMap<String, Vec<u8>>,
    /// Archive path → (digest, size) of every file stored as a blob.
    files: BTreeMap<String, (String, u64)>,
    /// Archive path → path it is a symlink or hard link to (docker-archives dedupe layers so).
    links: BTreeMap<String, String>,
}

/// One entry of a docker-archive's `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// An image found in an archive, all of whose blobs are now in the store.
struct ArchivedImage {
    references: Vec<String>,
    repo_digest: String,
    manifest_digest: String,
    manifest: ImageManifest,
}

#[derive(Deserialize)]
struct LayoutIndex {
    manifests: Vec<Descriptor>,
}

impl ImageStore {
    /// Imports every image of an archive and returns them (one per reference).
    pub fn import_archive(&self, path: &Path) -> Result<Vec<Image>, ImageError> {
        // Two importers of the same archive would only duplicate work; one at a time.
        let _import = self.lock("import.lock", FlockArg::LockExclusive)?;
        let _gc = self.gc_shared()?;
        let contents = self.read_archive(path)?;
        let archive_error = |reason: String| ImageError::Archive {
            path: path.to_path_buf(),
            reason,
        };
        let images = if let Some(index) = contents.metadata.get("index.json") {
            self.import_oci_layout(path, index)?
        } else if let Some(manifest) = contents.metadata.get("manifest.json") {
            self.import_docker_archive(&contents, manifest)
                .map_err(|e| match e {
                    ImageError::Archive { reason, .. } => archive_error(reason),
                    other => other,
                })?
        } else {
            return Err(archive_error(
                "neither an OCI layout (index.json) nor a docker-archive (manifest.json)".into(),
            ));
        };
        let mut result = Vec::new();
        for found in images {
            let image = self.commit_image(
                &found.references,
                &found.repo_digest,
                &found.manifest_digest,
                &found.manifest,
            )?;
            for reference in &found.references {
                result.push(Image {
                    reference: reference.clone(),
                    ..image.clone()
                });
            }
        }
        Ok(result)
    }

    fn read_archive(&self, path: &Path) -> Result<Contents, ImageError> {
        let archive_error = |reason: String| ImageError::Archive {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(ImageError::io(path))?;
        let mut input = BufReader::new(file);
        let magic = input.fill_buf().map_err(ImageError::io(path))?;
        let reader: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::MultiGzDecoder::new(input))
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(ImageError::io(path))?)
        } else {
            Box::new(input)
        };
        let mut archive = tar::Archive::new(reader);
        let mut contents = Contents::default();
        let entries = archive
            .entries()
            .map_err(|e| archive_error(format!("not a tar: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| archive_error(format!("malformed tar: {e}")))?;
            let name = clean_name(&String::from_utf8_lossy(&entry.path_bytes()));
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                let resolved = if kind.is_symlink() {
                    resolve_relative(&name, &target)
                } else {
                    clean_name(&target)
                };
                contents.links.insert(name, resolved);
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            if METADATA_FILES.contains(&name.as_str()) {
                let mut data = Vec::new();
                (&mut entry)
                    .take(MAX_DOCUMENT_BYTES + 1)
                    .read_to_end(&mut data)
                    .map_err(|e| archive_error(format!("{name}: {e}")))?;
                if data.len() as u64 > MAX_DOCUMENT_BYTES {
                    return Err(archive_error(format!("{name} is too large")));
                }
                contents.metadata.insert(name, data);
                continue;
            }
            let expected = name
                .strip_prefix("blobs/sha256/")
                .map(|hex| format!("sha256:{hex}"));
            if let Some(digest) = &expected {
                // Already stored (and verified when it was): re-importing costs no writes.
                if self.has_blob(digest)? {
                    let size = entry.header().size().unwrap_or(0);
                    contents.files.insert(name, (digest.clone(), size));
                    continue;
                }
            }
            let (digest, size) = self.write_blob(&mut entry, expected.as_deref())?;
            contents.files.insert(name, (digest, size));
        }
        Ok(contents)
    }

    /// Resolves each entry of an OCI layout's `index.json` to an image manifest for this node.
    fn import_oci_layout(
        &self,
        path: &Path,
        index_bytes: &[u8],
    ) -> Result<Vec<ArchivedImage>, ImageError> {
        let archive_error = |reason: String| ImageError::Archive {
            path: path.to_path_buf(),
            reason,
        };
        let index: LayoutIndex = serde_json::from_slice(index_bytes)
            .map_err(|e| archive_error(format!("index.json: {e}")))?;
        let mut images = Vec::new();
        for descriptor in &index.manifests {
            let reference = layout_reference(path, &descriptor.annotations)?;
            let repo_digest = descriptor.digest.clone();
            let mut digest = repo_digest.clone();
            // Nested indexes are followed to the node's platform, a bounded number of times.
            let manifest = 'resolve: {
                for _ in 0..4 {
                    let bytes = self.stored_document(path, &digest)?;
                    match parse_manifest(&digest, &bytes)? {
                        AnyManifest::Image(m) => break 'resolve m,
                        AnyManifest::Index(inner) => {
                            let platform = Platform::node();
                            let chosen = platform.select(&inner.manifests).ok_or_else(|| {
                                ImageError::NoMatchingPlatform {
                                    reference: reference.clone(),
                                    platform: platform.to_string(),
                                }
                            })?;
                            digest = chosen.digest.clone();
                        }
                    }
                }
                return Err(archive_error("indexes nested too deeply".into()));
            };
            for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
                if !self.has_blob(&blob.digest)? {
                    return Err(archive_error(format!("lacks blob {}", blob.digest)));
                }
            }
            images.push(ArchivedImage {
                references: vec![reference],
                repo_digest,
                manifest_digest: digest,
                manifest,
            });
        }
        Ok(images)
    }

    fn stored_document(&self, path: &Path, digest: &str) -> Result<Vec<u8>, ImageError> {
        if !self.has_blob(digest)? {
            return Err(ImageError::Archive {
                path: path.to_path_buf(),
                reason: format!("lacks blob {digest}"),
            });
        }
        self.read_document(digest)
    }

    /// A docker-archive has configs and layers under arbitrary names and no manifest; one is
    /// written for each image so it is stored like any other.
    fn import_docker_archive(
        &self,
        contents: &Contents,
        manifest_bytes: &[u8],
    ) -> Result<Vec<ArchivedImage>, ImageError> {
        let archive_error = |reason: String| ImageError::Archive {
            path: PathBuf::new(),
            reason,
        };
        let entries: Vec<DockerArchiveImage> = serde_json::from_slice(manifest_bytes)
            .map_err(|e| archive_error(format!("manifest.json: {e}")))?;
        let mut images = Vec::new();
        for entry in entries {
            let references = entry
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|tag| normalize_reference(tag))
                .collect::<Result<Vec<_>, _>>()?;
            if references.is_empty() {
                return Err(archive_error(format!(
                    "image {} has no RepoTags to name it by",
                    entry.config
                )));
            }
            let config = self.descriptor_for(contents, &entry.config, OCI_CONFIG)?;
            let layers = entry
                .layers
                .iter()
                .map(|layer| {
                    let mut d = self.descriptor_for(contents, layer, OCI_LAYER_TAR)?;
                    d.media_type = self.layer_media_type(&d.digest)?.to_string();
                    Ok(d)
                })
                .collect::<Result<Vec<_>, ImageError>>()?;
            let manifest = ImageManifest {
                schema_version: 2,
                media_type: Some(DOCKER_MANIFEST.to_string()),
                config,
                layers,
            };
            let bytes = serde_json::to_vec(&manifest)
                .map_err(|e| archive_error(format!("cannot encode manifest: {e}")))?;
            let digest = sha256_digest(&bytes);
            self.write_blob(&bytes[..], Some(&digest))?;
            images.push(ArchivedImage {
                references,
                repo_digest: digest.clone(),
                manifest_digest: digest,
                manifest,
            });
        }
        Ok(images)
    }

    fn descriptor_for(
        &self,
        contents: &Contents,
        name: &str,
        media_type: &str,
    ) -> Result<Descriptor, ImageError> {
        let mut name = clean_name(name);
        // Follow links a few hops; a loop or a dangling link is an error.
        for _ in 0..8 {
            if let Some((digest, size)) = contents.files.get(&name) {
                return Ok(Descriptor {
                    media_type: media_type.to_string(),
                    digest: digest.clone(),
                    size: *size,
                    platform: None,
                    annotations: Default::default(),
                });
            }
            match contents.links.get(&name) {
                Some(target) => name = target.clone(),
                None => break,
            }
        }
        Err(ImageError::Archive {
            path: PathBuf::new(),
            reason: format!("manifest.json names {name}, which the archive lacks"),
        })
    }

    fn layer_media_type(&self, digest: &str) -> Result<&'static str, ImageError> {
        let path = self.blob_path(digest)?;
        let mut magic = [0u8; 4];
        let mut file = File::open(&path).map_err(ImageError::io(&path))?;
        let n = file.read(&mut magic).map_err(ImageError::io(&path))?;
        Ok(match &magic[..n] {
            [0x1f, 0x8b, ..] => OCI_LAYER_GZIP,
            [0x28, 0xb5, 0x2f, 0xfd] => OCI_LAYER_ZSTD,
            _ => OCI_LAYER_TAR,
        })
    }
}

/// The name of an image in an OCI layout: containerd's full-name annotation, else the
/// `ref.name` annotation if it is a full reference, else the archive's file name with the
/// `ref.name` tag (`busybox.tar` + `latest` → `docker.io/library/busybox:latest`).
fn layout_reference(
    archive: &Path,
    annotations: &BTreeMap<String, String>,
) -> Result<String, ImageError> {
    if let Some(name) = annotations.get(CONTAINERD_NAME) {
        return normalize_reference(name);
    }
    let ref_name = annotations.get(OCI_REF_NAME).map(String::as_str);
    if let Some(name) = ref_name.filter(|n| n.contains('/') || n.contains(':')) {
        return normalize_reference(name);
    }
    let stem = archive
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('.').next())
        .unwrap_or_default();
    let tag = ref_name.unwrap_or("latest");
    normalize_reference(&format!("{stem}:{tag}")).map_err(|_| ImageError::Archive {
        path: archive.to_path_buf(),
        reason: format!(
            "cannot name the image: no {CONTAINERD_NAME} annotation and the file name {stem:?} \
             is not a repository name"
        ),
    })
}

/// `./a//b` → `a/b`.
fn clean_name(name: &str) -> String {
    name.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// The archive path a symlink at `from` pointing to `target` names.
fn resolve_relative(from: &str, target: &str) -> String {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        let mut p: Vec<&str> = from.split('/').collect();
        p.pop();
        p
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_names_prefer_containerd_then_full_ref_name_then_file_name() {
        let archive = Path::new("/tmp/busybox.oci.tar");
        let mut a = BTreeMap::new();
        a.insert(OCI_REF_NAME.to_string(), "1.36".to_string());
        assert_eq!(
            layout_reference(archive, &a).unwrap(),
            "docker.io/library/busybox:1.36"
        );
        a.insert(OCI_REF_NAME.to_string(), "ghcr.io/x/y:2".to_string());
        assert_eq!(layout_reference(archive, &a).unwrap(), "ghcr.io/x/y:2");
        a.insert(CONTAINERD_NAME.to_string(), "busybox:edge".to_string());
        assert_eq!(
            layout_reference(archive, &a).unwrap(),
            "docker.io/library/busybox:edge"
        );
    }

    #[test]
    fn symlinks_in_docker_archives_resolve_relative_to_their_directory() {
        assert_eq!(
            resolve_relative("abc/layer.tar", "../def/layer.tar"),
            "def/layer.tar"
        );
        assert_eq!(resolve_relative("x.tar", "/y.tar"), "y.tar");
        assert_eq!(clean_name("./blobs//sha256/ab"), "blobs/sha256/ab");
    }
}

#[cfg(test)]
pub(super) mod fixtures {
    //! Small images built in memory, as OCI archives and docker-archives.

    use std::io::Write;

    use super::super::manifest::sha256_digest;

    pub struct Blob {
        pub digest: String,
        pub bytes: Vec<u8>,
    }

    impl Blob {
        fn new(bytes: Vec<u8>) -> Blob {
            Blob {
                digest: sha256_digest(&bytes),
                bytes,
            }
        }
    }

    /// A layer holding `files` (path, content), gzip-compressed; returns (blob, diff_id).
    pub fn layer(files: &[(&str, &[u8])]) -> (Blob, String) {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o755);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            builder.append_data(&mut h, path, *data).unwrap();
        }
        let tar = builder.into_inner().unwrap();
        let diff_id = sha256_digest(&tar);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        (Blob::new(gz.finish().unwrap()), diff_id)
    }

    pub struct TestImage {
        pub config: Blob,
        pub manifest: Blob,
        pub layers: Vec<Blob>,
    }

    pub fn image(layers: Vec<(Blob, String)>, cmd: &str) -> TestImage {
        let diff_ids: Vec<_> = layers.iter().map(|(_, d)| d.clone()).collect();
        let config = Blob::new(
            serde_json::to_vec(&serde_json::json!({
                "architecture": "amd64", "os": "linux",
                "config": {"Cmd": [cmd], "Env": ["PATH=/bin"]},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
            }))
            .unwrap(),
        );
        let layer_descriptors: Vec<_> = layers
            .iter()
            .map(|(b, _)| {
                serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": b.digest, "size": b.bytes.len()})
            })
            .collect();
        let manifest = Blob::new(
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config.digest, "size": config.bytes.len()},
                "layers": layer_descriptors,
            }))
            .unwrap(),
        );
        TestImage {
            config,
            manifest,
            layers: layers.into_iter().map(|(b, _)| b).collect(),
        }
    }

    fn add(builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        builder.append_data(&mut h, path, data).unwrap();
    }

    /// An OCI layout tar; each image is named by a containerd name annotation.
    pub fn oci_archive(images: &[(&str, &TestImage)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        add(
            &mut builder,
            "oci-layout",
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        );
        let mut manifests = Vec::new();
        for (name, image) in images {
            for blob in std::iter::once(&image.config)
                .chain(std::iter::once(&image.manifest))
                .chain(&image.layers)
            {
                let hex = &blob.digest["sha256:".len()..];
                add(&mut builder, &format!("blobs/sha256/{hex}"), &blob.bytes);
            }
            manifests.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": image.manifest.digest, "size": image.manifest.bytes.len(),
                "annotations": {"io.containerd.image.name": name},
            }));
        }
        let index = serde_json::json!({"schemaVersion": 2, "manifests": manifests});
        add(
            &mut builder,
            "index.json",
            &serde_json::to_vec(&index).unwrap(),
        );
        builder.into_inner().unwrap()
    }

    /// An OCI layout whose one entry is a nested index: a foreign platform and this node's.
    pub fn multi_platform_oci_archive(name: &str, image: &TestImage) -> Vec<u8> {
        let node = super::super::reference::Platform::node();
        let inner = Blob::new(
            serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"digest": format!("sha256:{}", "f".repeat(64)), "size": 1,
                 "platform": {"architecture": "s390x", "os": "linux"}},
                {"digest": image.manifest.digest, "size": image.manifest.bytes.len(),
                 "platform": {"architecture": node.architecture, "os": "linux",
                              "variant": node.variant}},
            ]}))
            .unwrap(),
        );
        let mut builder = tar::Builder::new(Vec::new());
        for blob in [&image.config, &image.manifest, &inner]
            .into_iter()
            .chain(&image.layers)
        {
            let hex = &blob.digest["sha256:".len()..];
            add(&mut builder, &format!("blobs/sha256/{hex}"), &blob.bytes);
        }
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": inner.digest, "size": inner.bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": name}}]});
        add(
            &mut builder,
            "index.json",
            &serde_json::to_vec(&index).unwrap(),
        );
        builder.into_inner().unwrap()
    }

    /// A `docker save` style archive (config and layers under arbitrary names).
    pub fn docker_archive(tags: &[&str], image: &TestImage) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        add(&mut builder, "cfg.json", &image.config.bytes);
        let mut layers = Vec::new();
        for (i, layer) in image.layers.iter().enumerate() {
            let name = format!("l{i}/layer.tar");
            add(&mut builder, &name, &layer.bytes);
            layers.push(name);
        }
        let manifest =
            serde_json::json!([{"Config": "cfg.json", "RepoTags": tags, "Layers": layers}]);
        add(
            &mut builder,
            "manifest.json",
            &serde_json::to_vec(&manifest).unwrap(),
        );
        builder.into_inner().unwrap()
    }
}

#[cfg(test)]
mod store_tests {
    use super::fixtures::*;
    use super::*;
    use std::fs;

    fn store() -> (tempfile::TempDir, ImageStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&dir.path().join("images")).unwrap();
        (dir, store)
    }

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn an_oci_archive_imports_with_unpacked_layers_and_runtime_config() {
        let (dir, store) = store();
        let img = image(vec![layer(&[("bin/busybox", b"ELF")])], "sh");
        let archive = write(&dir, "img.tar", &oci_archive(&[("busybox:latest", &img)]));
        let imported = store.import_archive(&archive).unwrap();
        assert_eq!(imported.len(), 1);
        let got = store.get("busybox").unwrap().expect("image recorded");
        assert_eq!(got, imported[0]);
        assert_eq!(got.reference, "docker.io/library/busybox:latest");
        assert_eq!(got.id, img.config.digest);
        assert_eq!(
            got.digest,
            format!("docker.io/library/busybox@{}", img.manifest.digest)
        );
        assert_eq!(got.config.cmd, vec!["sh"]);
        assert_eq!(got.layers.len(), 1);
        assert_eq!(fs::read(got.layers[0].join("bin/busybox")).unwrap(), b"ELF");
        assert!(store.has_blob(&img.layers[0].digest).unwrap());
        // Lookup by (short) id works too, and by digest.
        let short = &img.config.digest["sha256:".len().."sha256:".len() + 12];
        assert_eq!(store.get(short).unwrap().unwrap().id, img.config.digest);
        let by_digest = format!("busybox@{}", img.manifest.digest);
        let found = store.get(&by_digest).unwrap().expect("found by digest");
        assert_eq!(found.reference, format!("docker.io/library/{by_digest}"));
        assert_eq!(found.id, img.config.digest);
        assert!(store
            .get(&format!("other@{}", img.manifest.digest))
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_multi_platform_archive_imports_the_node_platform_named_by_the_index_digest() {
        let (dir, store) = store();
        let img = image(vec![layer(&[("native", b"yes")])], "sh");
        let tar = multi_platform_oci_archive("quay.io/x/tool:2", &img);
        let archive = write(&dir, "multi.tar.gz", &gzip(&tar));
        let imported = store.import_archive(&archive).unwrap();
        assert_eq!(imported[0].reference, "quay.io/x/tool:2");
        assert_eq!(imported[0].id, img.config.digest);
        assert!(imported[0].digest.starts_with("quay.io/x/tool@sha256:"));
        assert!(!imported[0]
            .digest
            .ends_with(&img.manifest.digest["sha256:".len()..]));
        assert!(imported[0].layers[0].join("native").is_file());
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn a_compressed_docker_archive_imports_under_its_repo_tags() {
        let (dir, store) = store();
        let img = image(vec![layer(&[("a", b"1")]), layer(&[("b", b"2")])], "true");
        let tar = docker_archive(&["app:1", "registry.local:5000/app:1"], &img);
        let archive = write(&dir, "app.tar.zst", &zstd::encode_all(&tar[..], 3).unwrap());
        let imported = store.import_archive(&archive).unwrap();
        let names: Vec<_> = imported.iter().map(|i| i.reference.as_str()).collect();
        assert_eq!(
            names,
            ["docker.io/library/app:1", "registry.local:5000/app:1"]
        );
        let listed: Vec<_> = store
            .list()
            .unwrap()
            .into_iter()
            .map(|i| i.reference)
            .collect();
        assert_eq!(
            listed,
            ["docker.io/library/app:1", "registry.local:5000/app:1"]
        );
        let got = store.get("app:1").unwrap().unwrap();
        assert_eq!(got.layers.len(), 2);
        assert!(got.layers[1].join("b").is_file());
    }

    #[test]
    fn removing_an_image_keeps_layers_other_images_share() {
        let (dir, store) = store();
        let base = || layer(&[("bin/sh", b"base")]);
        let one = image(vec![base(), layer(&[("one", b"1")])], "one");
        let two = image(vec![base(), layer(&[("two", b"2")])], "two");
        let archive = write(
            &dir,
            "x.tar",
            &oci_archive(&[("one:1", &one), ("two:1", &two)]),
        );
        store.import_archive(&archive).unwrap();
        let one_layers = store.get("one:1").unwrap().unwrap().layers;

        store.remove("one:1").unwrap();
        assert!(store.get("one:1").unwrap().is_none());
        assert!(one_layers[0].is_dir(), "shared base layer kept");
        assert!(!one_layers[1].exists(), "layer only `one` used is gone");
        assert!(!store.has_blob(&one.manifest.digest).unwrap());
        assert!(store.has_blob(&two.manifest.digest).unwrap());

        store.remove("two:1").unwrap();
        assert!(!one_layers[0].exists());
        assert_eq!(fs::read_dir(store.blobs_dir()).unwrap().count(), 0);
        assert!(matches!(
            store.remove("two:1"),
            Err(ImageError::NotFound(_))
        ));
    }

    #[test]
    fn a_blob_whose_content_does_not_match_its_name_is_rejected() {
        let (dir, store) = store();
        let mut img = image(vec![layer(&[("f", b"ok")])], "sh");
        img.layers[0].bytes = layer(&[("f", b"tampered")]).0.bytes;
        let archive = write(&dir, "bad.tar", &oci_archive(&[("bad:1", &img)]));
        let err = store.import_archive(&archive).unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert!(store.get("bad:1").unwrap().is_none());
        assert_eq!(fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_layer_whose_diff_id_differs_from_the_config_is_rejected() {
        let (dir, store) = store();
        let (blob, _) = layer(&[("f", b"x")]);
        let wrong = super::super::manifest::sha256_digest(b"something else");
        let img = image(vec![(blob, wrong)], "sh");
        let archive = write(&dir, "bad.tar", &oci_archive(&[("bad:1", &img)]));
        let err = store.import_archive(&archive).unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert_eq!(
            fs::read_dir(store.root().join("layers")).unwrap().count(),
            0
        );
    }

    #[test]
    fn reimporting_moves_a_reference_to_the_new_image() {
        let (dir, store) = store();
        let old = image(vec![layer(&[("v", b"1")])], "old");
        let new = image(vec![layer(&[("v", b"2")])], "new");
        store
            .import_archive(&write(&dir, "a.tar", &oci_archive(&[("app:1", &old)])))
            .unwrap();
        store
            .import_archive(&write(&dir, "b.tar", &oci_archive(&[("app:1", &new)])))
            .unwrap();
        assert_eq!(store.get("app:1").unwrap().unwrap().config.cmd, vec!["new"]);
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[test]
    fn work_left_by_a_dead_process_is_swept_on_open() {
        let (_dir, store) = store();
        // Above any pid_max, so certainly not a live process.
        let stale = store.root().join("tmp").join("2147483600-0-layer");
        fs::create_dir_all(stale.join("usr")).unwrap();
        let mine = store.tmp_path("blob");
        fs::write(&mine, b"in progress").unwrap();
        ImageStore::open(store.root()).unwrap();
        assert!(!stale.exists());
        assert!(mine.exists());
    }

    #[test]
    fn a_file_that_is_no_image_archive_gives_a_clear_error() {
        let (dir, store) = store();
        let mut builder = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        builder
            .append_data(&mut h, "hello.txt", &b"hi"[..])
            .unwrap();
        let archive = write(&dir, "x.tar", &builder.into_inner().unwrap());
        let err = store.import_archive(&archive).unwrap_err().to_string();
        assert!(err.contains("neither an OCI layout"), "{err}");
    }
}
