//! The JSON documents of an image (OCI and Docker v2 flavours), parsed leniently: only the fields
//! berth uses, unknown ones ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{ImageError, ImageRuntimeConfig};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Every manifest type a pull accepts.
pub const ACCEPTED_MANIFESTS: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// Manifests and configs are small; anything larger is refused rather than read into memory.
pub const MAX_DOCUMENT_BYTES: u64 = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformSpec>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformSpec {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub manifests: Vec<Descriptor>,
}

/// A manifest fetched by reference: either one image or a list of per-platform images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyManifest {
    Image(ImageManifest),
    Index(ImageIndex),
}

/// Only what decides which kind of document this is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
}

pub fn parse_manifest(digest: &str, bytes: &[u8]) -> Result<AnyManifest, ImageError> {
    let invalid = |reason: String| ImageError::InvalidManifest {
        digest: digest.to_string(),
        reason,
    };
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    if probe.schema_version != 2 {
        return Err(invalid(format!(
            "unsupported schemaVersion {} (only 2 is supported)",
            probe.schema_version
        )));
    }
    let is_index = match probe.media_type.as_deref() {
        Some(OCI_INDEX | DOCKER_MANIFEST_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        Some(other) => return Err(invalid(format!("unsupported media type {other}"))),
        // OCI allows leaving mediaType out; the shape decides.
        None => probe.manifests.is_some(),
    };
    if is_index {
        let index = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        Ok(AnyManifest::Index(index))
    } else {
        let manifest: ImageManifest =
            serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        check_digest_syntax(&manifest.config.digest)?;
        for layer in &manifest.layers {
            check_digest_syntax(&layer.digest)?;
        }
        Ok(AnyManifest::Image(manifest))
    }
}

/// The image config file, reduced to what berth uses.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfigFile {
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

pub fn parse_config(digest: &str, bytes: &[u8]) -> Result<ConfigFile, ImageError> {
    let config: ConfigFile =
        serde_json::from_slice(bytes).map_err(|e| ImageError::InvalidManifest {
            digest: digest.to_string(),
            reason: e.to_string(),
        })?;
    for diff_id in &config.rootfs.diff_ids {
        check_digest_syntax(diff_id)?;
    }
    Ok(config)
}

impl ConfigFile {
    pub fn runtime_config(&self) -> ImageRuntimeConfig {
        let c = self.config.clone().unwrap_or_default();
        ImageRuntimeConfig {
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.unwrap_or_default(),
            user: c.user.unwrap_or_default(),
            exposed_ports: c.exposed_ports.unwrap_or_default().into_keys().collect(),
        }
    }
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex part of a well-formed sha256 digest. Digests name files on disk, so nothing else
/// (no other algorithm, no `/`, no `..`) may pass.
pub fn digest_hex(digest: &str) -> Result<&str, ImageError> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| ImageError::InvalidDigest(digest.to_string()))?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ImageError::InvalidDigest(digest.to_string()));
    }
    Ok(hex)
}

pub fn check_digest_syntax(digest: &str) -> Result<(), ImageError> {
    digest_hex(digest).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_that_could_escape_a_directory_are_refused() {
        assert!(digest_hex(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(digest_hex("sha256:../../etc/passwd").is_err());
        assert!(digest_hex(&format!("sha512:{}", "a".repeat(64))).is_err());
        assert!(digest_hex(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(digest_hex(&format!("sha256:{}/", "a".repeat(63))).is_err());
    }

    #[test]
    fn an_index_without_media_type_is_recognised_by_its_shape() {
        let d = format!("sha256:{}", "b".repeat(64));
        let json = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"digest":"{d}","size":1,
            "platform":{{"architecture":"arm","os":"linux","variant":"v7"}}}}]}}"#
        );
        match parse_manifest("x", json.as_bytes()).unwrap() {
            AnyManifest::Index(index) => {
                assert_eq!(
                    index.manifests[0]
                        .platform
                        .as_ref()
                        .unwrap()
                        .variant
                        .as_deref(),
                    Some("v7")
                )
            }
            other => panic!("expected an index, got {other:?}"),
        }
    }

    #[test]
    fn a_manifest_with_an_unknown_media_type_is_refused() {
        let json = r#"{"schemaVersion":2,"mediaType":"application/x-foo","layers":[]}"#;
        let err = parse_manifest("x", json.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("unsupported media type"), "{err}");
    }

    #[test]
    fn config_nulls_become_empty_runtime_fields() {
        let json = r#"{"architecture":"amd64","os":"linux",
            "config":{"Cmd":["sh"],"Env":null,"ExposedPorts":{"80/tcp":{}},"WorkingDir":"/www"},
            "rootfs":{"type":"layers","diff_ids":[]}}"#;
        let rc = parse_config("x", json.as_bytes()).unwrap().runtime_config();
        assert_eq!(rc.cmd, vec!["sh"]);
        assert!(rc.env.is_empty());
        assert_eq!(rc.exposed_ports, vec!["80/tcp"]);
        assert_eq!(rc.working_dir, "/www");
    }
}
