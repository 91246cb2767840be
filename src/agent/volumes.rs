//! Pod volumes on disk, below the pod's dir: emptyDir (a directory, or a tmpfs for medium
//! Memory), hostPath, and the "atomic writer" kinds — configMap, secret, downwardAPI and
//! projected — whose files live in a timestamped directory that a `..data` symlink points at,
//! swapped by rename so a reader never sees half an update (as kubelet does).

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, DownwardAPIVolumeFile, KeyToPath, Pod, Volume};

use super::env::{field_value, PodFacts, Sources};
use crate::runtime::{MountKind, MountSpec};

const DEFAULT_MODE: u32 = 0o644;
const DATA_LINK: &str = "..data";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("volume {volume}: configmap {name:?} not found")]
    ConfigMapNotFound { volume: String, name: String },
    #[error("volume {volume}: secret {name:?} not found")]
    SecretNotFound { volume: String, name: String },
    #[error("volume {volume}: key {key:?} not found")]
    KeyNotFound { volume: String, key: String },
    #[error("volume {volume}: path {path:?} must be relative and stay inside the volume")]
    BadPath { volume: String, path: String },
    #[error("volume {volume}: {reason}")]
    Unsupported { volume: String, reason: String },
    #[error("volume {volume}: persistentvolumeclaim {claim:?} is not bound yet")]
    ClaimNotBound { volume: String, claim: String },
    #[error("volumeMount {0:?} names no volume of the pod")]
    NoSuchVolume(String),
    #[error("mount tmpfs on {path}: {source}")]
    Mount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> VolumeError + 'a {
    move |source| VolumeError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// One file of an atomic-writer volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadFile {
    pub path: String,
    pub content: Vec<u8>,
    pub mode: u32,
}

/// Names of ConfigMaps and Secrets the pod's volumes refer to.
pub fn referenced_objects(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let (mut cms, mut secrets) = (Vec::new(), Vec::new());
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if let Some(cm) = &v.config_map {
            cms.push(cm.name.clone());
        }
        if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.push(name);
        }
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &p.config_map {
                cms.push(cm.name.clone());
            }
            if let Some(s) = &p.secret {
                secrets.push(s.name.clone());
            }
        }
    }
    (cms, secrets)
}

fn check_relative(volume: &str, path: &str) -> Result<(), VolumeError> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && !path.starts_with("..");
    if ok {
        Ok(())
    } else {
        Err(VolumeError::BadPath {
            volume: volume.into(),
            path: path.into(),
        })
    }
}

/// Files from key/value data: every key, or only `items` (each at its own path and mode).
fn keyed_files(
    volume: &str,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    mode: u32,
    optional: bool,
) -> Result<Vec<PayloadFile>, VolumeError> {
    let mut files = Vec::new();
    match items {
        None => {
            for (k, v) in data {
                files.push(PayloadFile {
                    path: k.clone(),
                    content: v.clone(),
                    mode,
                });
            }
        }
        Some(items) => {
            for item in items {
                check_relative(volume, &item.path)?;
                match data.get(&item.key) {
                    Some(v) => files.push(PayloadFile {
                        path: item.path.clone(),
                        content: v.clone(),
                        mode: item.mode.map(|m| m as u32).unwrap_or(mode),
                    }),
                    None if optional => {}
                    None => {
                        return Err(VolumeError::KeyNotFound {
                            volume: volume.into(),
                            key: item.key.clone(),
                        })
                    }
                }
            }
        }
    }
    Ok(files)
}

fn downward_files(
    volume: &str,
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    mode: u32,
    facts: &PodFacts,
) -> Result<Vec<PayloadFile>, VolumeError> {
    let mut files = Vec::new();
    for item in items {
        check_relative(volume, &item.path)?;
        let content = match &item.field_ref {
            Some(f) => {
                field_value(pod, &f.field_path, facts).map_err(|e| VolumeError::Unsupported {
                    volume: volume.into(),
                    reason: e.to_string(),
                })?
            }
            // resourceFieldRef: not supported yet.
            None => String::new(),
        };
        files.push(PayloadFile {
            path: item.path.clone(),
            content: content.into_bytes(),
            mode: item.mode.map(|m| m as u32).unwrap_or(mode),
        });
    }
    Ok(files)
}

fn config_map_data(sources: &Sources, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
    sources.config_maps.get(name).map(|d| {
        d.iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect()
    })
}

/// The files of an atomic-writer volume; `None` for other kinds.
pub fn payload(
    volume: &Volume,
    pod: &Pod,
    sources: &Sources,
    facts: &PodFacts,
) -> Result<Option<Vec<PayloadFile>>, VolumeError> {
    let name = volume.name.as_str();
    if let Some(cm) = &volume.config_map {
        let mode = cm.default_mode.map(|m| m as u32).unwrap_or(DEFAULT_MODE);
        let optional = cm.optional == Some(true);
        return match config_map_data(sources, &cm.name) {
            Some(data) => keyed_files(name, &data, cm.items.as_ref(), mode, optional).map(Some),
            None if optional => Ok(Some(vec![])),
            None => Err(VolumeError::ConfigMapNotFound {
                volume: name.into(),
                name: cm.name.clone(),
            }),
        };
    }
    if let Some(s) = &volume.secret {
        let mode = s.default_mode.map(|m| m as u32).unwrap_or(DEFAULT_MODE);
        let optional = s.optional == Some(true);
        let secret_name = s.secret_name.clone().unwrap_or_default();
        return match sources.secrets.get(&secret_name) {
            Some(data) => keyed_files(name, data, s.items.as_ref(), mode, optional).map(Some),
            None if optional => Ok(Some(vec![])),
            None => Err(VolumeError::SecretNotFound {
                volume: name.into(),
                name: secret_name,
            }),
        };
    }
    if let Some(d) = &volume.downward_api {
        let mode = d.default_mode.map(|m| m as u32).unwrap_or(DEFAULT_MODE);
        let items = d.items.clone().unwrap_or_default();
        return downward_files(name, pod, &items, mode, facts).map(Some);
    }
    if let Some(p) = &volume.projected {
        let mode = p.default_mode.map(|m| m as u32).unwrap_or(DEFAULT_MODE);
        let mut files = Vec::new();
        for source in p.sources.iter().flatten() {
            if let Some(cm) = &source.config_map {
                let optional = cm.optional == Some(true);
                match config_map_data(sources, &cm.name) {
                    Some(data) => {
                        files.extend(keyed_files(name, &data, cm.items.as_ref(), mode, optional)?)
                    }
                    None if optional => {}
                    None => {
                        return Err(VolumeError::ConfigMapNotFound {
                            volume: name.into(),
                            name: cm.name.clone(),
                        })
                    }
                }
            }
            if let Some(s) = &source.secret {
                let optional = s.optional == Some(true);
                match sources.secrets.get(&s.name) {
                    Some(data) => {
                        files.extend(keyed_files(name, data, s.items.as_ref(), mode, optional)?)
                    }
                    None if optional => {}
                    None => {
                        return Err(VolumeError::SecretNotFound {
                            volume: name.into(),
                            name: s.name.clone(),
                        })
                    }
                }
            }
            if let Some(d) = &source.downward_api {
                let items = d.items.clone().unwrap_or_default();
                files.extend(downward_files(name, pod, &items, mode, facts)?);
            }
            if let Some(t) = &source.service_account_token {
                check_relative(name, &t.path)?;
                // Not issued yet (the agent requests tokens before writing volumes): the
                // volume waits for it rather than show an empty token.
                let token = sources
                    .tokens
                    .get(&super::tokens::token_key(name, &t.path))
                    .ok_or_else(|| VolumeError::Unsupported {
                        volume: name.into(),
                        reason: format!("no service account token issued for {}", t.path),
                    })?;
                files.push(PayloadFile {
                    path: t.path.clone(),
                    content: token.clone().into_bytes(),
                    mode,
                });
            }
            // clusterTrustBundle and podCertificate projections are not served.
        }
        return Ok(Some(files));
    }
    Ok(None)
}

/// Writes `files` into `dir` the way kubelet's atomic writer does: a fresh `..<stamp>` dir,
/// `..data` swapped to it by rename, and one top-level symlink per entry through `..data`.
pub fn write_atomic(dir: &Path, files: &[PayloadFile]) -> Result<(), VolumeError> {
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let stamp = format!(
        "..{}_{}",
        jiff::Timestamp::now().strftime("%Y_%m_%d_%H_%M_%S"),
        rand::random::<u32>()
    );
    let target = dir.join(&stamp);
    std::fs::create_dir(&target).map_err(io("create", &target))?;
    for f in files {
        let path = target.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        std::fs::write(&path, &f.content).map_err(io("write", &path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))
            .map_err(io("chmod", &path))?;
    }
    let old = std::fs::read_link(dir.join(DATA_LINK)).ok();
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    symlink(&stamp, &tmp_link).map_err(io("symlink", &tmp_link))?;
    let data_link = dir.join(DATA_LINK);
    std::fs::rename(&tmp_link, &data_link).map_err(io("rename", &data_link))?;
    let mut tops: Vec<String> = files
        .iter()
        .filter_map(|f| f.path.split('/').next().map(str::to_string))
        .collect();
    tops.sort();
    tops.dedup();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA_LINK).join(top), &link).map_err(io("symlink", &link))?;
        }
    }
    // Entries that are gone from the payload: their links, then the old data dir.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !tops.contains(&name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Some(old) = old {
        if old != Path::new(&stamp) {
            let _ = std::fs::remove_dir_all(dir.join(old));
        }
    }
    Ok(())
}

/// Whether the pod has volumes whose content follows API objects (and so may change).
pub fn has_updatable(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|v| {
            v.config_map.is_some()
                || v.secret.is_some()
                || v.downward_api.is_some()
                || v.projected.is_some()
        })
}

/// Whether `dir` already holds exactly `files` (same paths, contents and modes).
fn holds(dir: &Path, files: &[PayloadFile]) -> bool {
    let data = dir.join(DATA_LINK);
    let same = files.iter().all(|f| {
        let path = data.join(&f.path);
        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o7777);
        mode.is_ok_and(|m| m == f.mode) && std::fs::read(&path).is_ok_and(|c| c == f.content)
    });
    same && count_files(&data) == files.len()
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            _ => 1,
        })
        .sum()
}

/// Writes the pod's configMap, secret, downwardAPI and projected volumes again where what
/// they show changed (kubelet's periodic remount): running containers see the new files
/// through the `..data` swap, except through subPath mounts, which pinned the old file as
/// upstream's do. A volume whose source is gone keeps its last content. Returns the names of
/// the volumes rewritten. Blocking: call from a blocking thread.
pub fn refresh(
    pod_dir: &Path,
    pod: &Pod,
    sources: &Sources,
    facts: &PodFacts,
) -> Result<Vec<String>, VolumeError> {
    let mut written = Vec::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let files = match payload(v, pod, sources, facts) {
            Ok(Some(files)) => files,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(volume = %v.name, error = %e, "volume not refreshed");
                continue;
            }
        };
        let dir = volume_dir(pod_dir, &v.name);
        if !holds(&dir, &files) {
            write_atomic(&dir, &files)?;
            written.push(v.name.clone());
        }
    }
    Ok(written)
}

/// Where volume `name` of the pod lives.
pub fn volume_dir(pod_dir: &Path, name: &str) -> PathBuf {
    pod_dir.join("volumes").join(name)
}

/// Creates every volume of the pod below `pod_dir`; returns each volume's host path.
/// Blocking: call from a blocking thread.
pub fn prepare(
    pod_dir: &Path,
    pod: &Pod,
    sources: &Sources,
    facts: &PodFacts,
) -> Result<HashMap<String, PathBuf>, VolumeError> {
    let mut paths = HashMap::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let dir = volume_dir(pod_dir, &v.name);
        if let Some(host) = &v.host_path {
            let path = PathBuf::from(&host.path);
            match host.type_.as_deref() {
                Some("DirectoryOrCreate") => {
                    std::fs::create_dir_all(&path).map_err(io("create", &path))?
                }
                Some("FileOrCreate") if !path.exists() => {
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent).map_err(io("create", parent))?;
                    }
                    std::fs::write(&path, b"").map_err(io("create", &path))?;
                }
                _ => {}
            }
            paths.insert(v.name.clone(), path);
            continue;
        }
        if let Some(pvc) = &v.persistent_volume_claim {
            let path = claim_dir(v, &pvc.claim_name, sources)?;
            paths.insert(v.name.clone(), path);
            continue;
        }
        if let Some(empty) = &v.empty_dir {
            let fresh = !dir.exists();
            std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .map_err(io("chmod", &dir))?;
            if fresh && empty.medium.as_deref() == Some("Memory") {
                mount_tmpfs(&dir, empty.size_limit.as_ref().map(|q| q.0.as_str()))?;
            }
            paths.insert(v.name.clone(), dir);
            continue;
        }
        match payload(v, pod, sources, facts)? {
            Some(files) => {
                write_atomic(&dir, &files)?;
                paths.insert(v.name.clone(), dir);
            }
            None => {
                // Kinds berth has no driver for: an empty directory keeps the pod runnable.
                tracing::warn!(volume = %v.name, "unsupported volume type, using an empty directory");
                std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
                paths.insert(v.name.clone(), dir);
            }
        }
    }
    Ok(paths)
}

/// The bound volume's directory on this node, created if missing (a local-path volume is
/// provisioned as an object first; its directory appears with its first pod). World-writable
/// as upstream's local-path provisioner makes it, so non-root pods can write.
fn claim_dir(volume: &Volume, claim: &str, sources: &Sources) -> Result<PathBuf, VolumeError> {
    let Some(path) = sources.claims.get(claim) else {
        return Err(VolumeError::ClaimNotBound {
            volume: volume.name.clone(),
            claim: claim.into(),
        });
    };
    if !path.exists() {
        std::fs::create_dir_all(path).map_err(io("create", path))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
            .map_err(io("chmod", path))?;
    }
    Ok(path.clone())
}

fn mount_tmpfs(dir: &Path, size: Option<&str>) -> Result<(), VolumeError> {
    use nix::mount::{mount, MsFlags};
    let mut data = String::from("mode=1777");
    if let Some(bytes) = size.and_then(super::spec::parse_quantity) {
        data.push_str(&format!(",size={}", bytes as u64));
    }
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(|source| VolumeError::Mount {
        path: dir.to_path_buf(),
        source,
    })
}

/// The container's volume mounts as runtime mounts (subPath resolved and created).
pub fn mounts_for(
    container: &Container,
    volumes: &HashMap<String, PathBuf>,
) -> Result<Vec<MountSpec>, VolumeError> {
    let mut mounts = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let base = volumes
            .get(&m.name)
            .ok_or_else(|| VolumeError::NoSuchVolume(m.name.clone()))?;
        let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                check_relative(&m.name, sub)?;
                let path = base.join(sub);
                if !path.exists() {
                    std::fs::create_dir_all(&path).map_err(io("create", &path))?;
                }
                path
            }
            None => base.clone(),
        };
        mounts.push(MountSpec {
            source,
            destination: PathBuf::from(&m.mount_path),
            kind: MountKind::Bind,
            read_only: m.read_only.unwrap_or(false),
        });
    }
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(volumes: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"a": "b"}},
            "spec": {"containers": [], "volumes": volumes}
        }))
        .unwrap()
    }

    fn sources() -> Sources {
        let mut s = Sources::default();
        s.config_maps.insert(
            "cm".into(),
            BTreeMap::from([("one".into(), "1".into()), ("two".into(), "2".into())]),
        );
        s.secrets
            .insert("sec".into(), BTreeMap::from([("pw".into(), b"x".to_vec())]));
        s
    }

    #[test]
    fn configmap_items_pick_keys_paths_and_modes() {
        let p = pod(
            json!([{"name": "v", "configMap": {"name": "cm", "defaultMode": 0o600,
            "items": [{"key": "two", "path": "sub/second", "mode": 0o400}]}}]),
        );
        let v = &p.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0];
        let files = payload(v, &p, &sources(), &PodFacts::default())
            .unwrap()
            .unwrap();
        assert_eq!(
            files,
            vec![PayloadFile {
                path: "sub/second".into(),
                content: b"2".to_vec(),
                mode: 0o400
            }]
        );
    }

    #[test]
    fn a_missing_secret_fails_unless_optional() {
        let p = pod(json!([{"name": "v", "secret": {"secretName": "nope"}}]));
        let v = &p.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0];
        assert!(payload(v, &p, &sources(), &PodFacts::default()).is_err());
        let p = pod(json!([{"name": "v", "secret": {"secretName": "nope", "optional": true}}]));
        let v = &p.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0];
        assert_eq!(
            payload(v, &p, &sources(), &PodFacts::default()).unwrap(),
            Some(vec![])
        );
    }

    #[test]
    fn item_paths_may_not_escape_the_volume() {
        let p = pod(json!([{"name": "v", "configMap": {"name": "cm",
            "items": [{"key": "one", "path": "../evil"}]}}]));
        let v = &p.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0];
        assert!(matches!(
            payload(v, &p, &sources(), &PodFacts::default()),
            Err(VolumeError::BadPath { .. })
        ));
    }

    #[test]
    fn atomic_writes_go_through_a_data_link_and_drop_removed_keys() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("v");
        let file = |p: &str, c: &str| PayloadFile {
            path: p.into(),
            content: c.as_bytes().to_vec(),
            mode: 0o644,
        };
        write_atomic(&vol, &[file("a", "1"), file("b", "2")]).unwrap();
        assert_eq!(std::fs::read_to_string(vol.join("a")).unwrap(), "1");
        assert_eq!(
            std::fs::read_link(vol.join("a")).unwrap(),
            Path::new("..data/a")
        );
        write_atomic(&vol, &[file("a", "updated")]).unwrap();
        assert_eq!(std::fs::read_to_string(vol.join("a")).unwrap(), "updated");
        assert!(std::fs::symlink_metadata(vol.join("b")).is_err());
        let stamped = std::fs::read_dir(&vol)
            .unwrap()
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with("..") && n != "..data"
            })
            .count();
        assert_eq!(stamped, 1, "the old data dir is removed");
    }

    #[test]
    fn refresh_rewrites_only_volumes_whose_sources_changed() {
        let dir = tempfile::tempdir().unwrap();
        let p = pod(json!([
            {"name": "c", "configMap": {"name": "cm"}},
            {"name": "t", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                {"secret": {"name": "sec"}}
            ]}}
        ]));
        let mut s = sources();
        s.tokens.insert(
            super::super::tokens::token_key("t", "token"),
            "tok-1".into(),
        );
        prepare(dir.path(), &p, &s, &PodFacts::default()).unwrap();
        let vol = |name: &str| volume_dir(dir.path(), name);
        assert_eq!(
            std::fs::read_to_string(vol("t").join("token")).unwrap(),
            "tok-1"
        );
        assert!(refresh(dir.path(), &p, &s, &PodFacts::default())
            .unwrap()
            .is_empty());
        s.tokens.insert(
            super::super::tokens::token_key("t", "token"),
            "tok-2".into(),
        );
        s.config_maps
            .get_mut("cm")
            .unwrap()
            .insert("one".into(), "uno".into());
        let mut written = refresh(dir.path(), &p, &s, &PodFacts::default()).unwrap();
        written.sort();
        assert_eq!(written, ["c", "t"]);
        assert_eq!(
            std::fs::read_to_string(vol("c").join("one")).unwrap(),
            "uno"
        );
        assert_eq!(
            std::fs::read_to_string(vol("t").join("token")).unwrap(),
            "tok-2"
        );
        // A source that is gone leaves the last content in place.
        s.config_maps.clear();
        assert!(refresh(dir.path(), &p, &s, &PodFacts::default())
            .unwrap()
            .is_empty());
        assert_eq!(
            std::fs::read_to_string(vol("c").join("one")).unwrap(),
            "uno"
        );
    }

    #[test]
    fn prepare_makes_dirs_files_and_mounts_with_subpaths() {
        let dir = tempfile::tempdir().unwrap();
        let p = pod(json!([
            {"name": "scratch", "emptyDir": {}},
            {"name": "conf", "configMap": {"name": "cm"}},
            {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}
        ]));
        let volumes = prepare(dir.path(), &p, &sources(), &PodFacts::default()).unwrap();
        assert!(volumes["scratch"].is_dir());
        assert_eq!(
            std::fs::read_to_string(volumes["conf"].join("two")).unwrap(),
            "2"
        );
        assert_eq!(
            std::fs::read_to_string(volumes["info"].join("labels")).unwrap(),
            "a=\"b\""
        );
        let c: Container = serde_json::from_value(json!({"name": "c", "volumeMounts": [
            {"name": "scratch", "mountPath": "/data", "subPath": "inner"},
            {"name": "conf", "mountPath": "/etc/conf", "readOnly": true}]}))
        .unwrap();
        let mounts = mounts_for(&c, &volumes).unwrap();
        assert_eq!(mounts[0].source, volumes["scratch"].join("inner"));
        assert!(mounts[0].source.is_dir());
        assert!(mounts[1].read_only);
        let missing: Container = serde_json::from_value(
            json!({"name": "c", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}),
        )
        .unwrap();
        assert!(mounts_for(&missing, &volumes).is_err());
    }
}
