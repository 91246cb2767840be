//! Container images: pull from registries, import archives, keep them content-addressed on disk
//! and unpacked one directory per layer, ready to stack as overlay lowerdirs.
//!
//! Layout under `<data-dir>/images/`:
//! - `blobs/sha256/<hex>`: manifests, configs and layer blobs exactly as fetched.
//! - `layers/<hex>/`: one unpacked layer, keyed by its diff_id (digest of the uncompressed tar).
//! - `index.json`: which references name which image, with everything a container needs.
//! - `tmp/`: work in progress, named after the writing process so leftovers of a crash are swept.
//!
//! Every file and directory appears by rename, so a crash never leaves something half written
//! that looks complete.

mod archive;
mod auth;
pub(crate) mod manifest;
mod pull;
mod reference;
mod store;
mod unpack;

#[cfg(test)]
mod hostile_layers;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use auth::{Credential, RegistryAuth};
pub use reference::{normalize_reference, Platform};
pub use store::ImageStore;
pub use unpack::{unpack_layer, UnpackStats};

/// One image as the runtime needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// The normalized reference it was asked for, e.g. `docker.io/library/busybox:latest`.
    pub reference: String,
    /// The config digest (`sha256:...`): the image's identity.
    pub id: String,
    /// `repository@sha256:...` with the digest the registry knows the image by (the index digest
    /// for multi-platform images), as Kubernetes reports in `imageID`.
    pub digest: String,
    /// Unpacked layer directories, lowest first: overlay lowerdirs (reverse them for `lowerdir=`).
    pub layers: Vec<PathBuf>,
    pub config: ImageRuntimeConfig,
    /// Bytes of manifest, config and (compressed) layer blobs.
    pub size: u64,
}

/// The parts of an image config that shape a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageRuntimeConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `NAME=value` entries.
    pub env: Vec<String>,
    /// Empty means `/`.
    pub working_dir: String,
    /// `user`, `uid`, `user:group` or `uid:gid`; empty means root.
    pub user: String,
    /// `80/tcp`, `53/udp`, ...
    pub exposed_ports: Vec<String>,
}

/// When to go to the registry, as in a container's `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// What a pull that reached the registry cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullReport {
    /// Bytes downloaded (blobs already present are not fetched again).
    pub bytes: u64,
    pub duration: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("image {0} is not present and the pull policy is Never")]
    NotPresent(String),
    #[error("image {0} not found")]
    NotFound(String),
    #[error("pulling {reference} from {endpoint}: {message}")]
    Registry {
        reference: String,
        endpoint: String,
        message: String,
    },
    #[error("content {expected} failed verification: its digest is {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("invalid digest {0:?}: want sha256:<64 hex digits>")]
    InvalidDigest(String),
    #[error("manifest or config {digest}: {reason}")]
    InvalidManifest { digest: String, reason: String },
    #[error("{reference}: no image for platform {platform}")]
    NoMatchingPlatform { reference: String, platform: String },
    #[error("layer {layer}: entry {entry:?}: {reason}")]
    UnsafeLayer {
        layer: String,
        entry: String,
        reason: String,
    },
    #[error("archive {path}: {reason}")]
    Archive { path: PathBuf, reason: String },
    #[error("image index {path}: {reason}")]
    Index { path: PathBuf, reason: String },
}

impl ImageError {
    fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io { path, source }
    }
}
