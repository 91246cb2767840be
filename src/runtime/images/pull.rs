//! Pulling from registries: resolve the reference to one manifest for this node's platform,
//! fetch what is missing, verify every byte against its digest, record the image.

use std::time::Instant;

use futures::StreamExt;
use oci_client::{Client, Reference};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::auth::Endpoint;
use super::manifest::{
    parse_manifest, sha256_digest, AnyManifest, Descriptor, ImageManifest, ACCEPTED_MANIFESTS,
    MAX_DOCUMENT_BYTES,
};
use super::reference::{parse_reference, Platform};
use super::{Image, ImageError, ImageStore, PullPolicy, PullReport, RegistryAuth};

impl ImageStore {
    /// Makes `reference` present according to `policy`. The report is `Some` when the registry
    /// was contacted.
    pub async fn ensure(
        &self,
        reference: &str,
        policy: PullPolicy,
        auth: &RegistryAuth,
    ) -> Result<(Image, Option<PullReport>), ImageError> {
        if policy != PullPolicy::Always {
            if let Some(image) = self.get_blocking(reference).await? {
                return Ok((image, None));
            }
            if policy == PullPolicy::Never {
                return Err(ImageError::NotPresent(reference.to_string()));
            }
        }
        let (image, report) = self.pull(reference, auth).await?;
        Ok((image, Some(report)))
    }

    /// Fetches `reference` from its mirrors or registry, whatever is already present.
    pub async fn pull(
        &self,
        reference: &str,
        auth: &RegistryAuth,
    ) -> Result<(Image, PullReport), ImageError> {
        let parsed = parse_reference(reference)?;
        let started = Instant::now();
        let mut failures = Vec::new();
        for endpoint in auth.endpoints(&parsed)? {
            match self.pull_from(&endpoint, &parsed).await {
                Ok((image, bytes)) => {
                    let report = PullReport {
                        bytes,
                        duration: started.elapsed(),
                    };
                    return Ok((image, report));
                }
                Err(e) => {
                    tracing::debug!(endpoint = %endpoint.host, error = %e, "pull attempt failed");
                    failures.push(e);
                }
            }
        }
        if failures.len() == 1 {
            if let Some(only) = failures.pop() {
                return Err(only);
            }
        }
        Err(ImageError::Registry {
            reference: parsed.whole(),
            endpoint: "every endpoint".to_string(),
            message: failures
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        })
    }

    async fn get_blocking(&self, reference: &str) -> Result<Option<Image>, ImageError> {
        let store = self.clone();
        let reference = reference.to_string();
        run_blocking(move || store.get(&reference)).await
    }

    /// One attempt against one endpoint; returns the image and the bytes downloaded.
    async fn pull_from(
        &self,
        endpoint: &Endpoint,
        reference: &Reference,
    ) -> Result<(Image, u64), ImageError> {
        let name = reference.whole();
        let registry_error = |e: oci_client::errors::OciDistributionError| ImageError::Registry {
            reference: name.clone(),
            endpoint: endpoint.host.clone(),
            message: e.to_string(),
        };
        let client = endpoint.client()?;
        let auth = endpoint.oci_auth();
        let target = endpoint.reference_for(reference);

        let (top_bytes, _) = client
            .pull_manifest_raw(&target, &auth, ACCEPTED_MANIFESTS)
            .await
            .map_err(registry_error)?;
        let mut downloaded = top_bytes.len() as u64;
        // The digest is computed here, not taken from the registry's header.
        let repo_digest = sha256_digest(&top_bytes);
        if let Some(wanted) = reference.digest() {
            if wanted != repo_digest {
                return Err(ImageError::DigestMismatch {
                    expected: wanted.to_string(),
                    actual: repo_digest,
                });
            }
        }
        let (manifest_bytes, manifest_digest) = match parse_manifest(&repo_digest, &top_bytes)? {
            AnyManifest::Image(_) => (top_bytes.to_vec(), repo_digest.clone()),
            AnyManifest::Index(index) => {
                let platform = Platform::node();
                let chosen = platform.select(&index.manifests).ok_or_else(|| {
                    ImageError::NoMatchingPlatform {
                        reference: name.clone(),
                        platform: platform.to_string(),
                    }
                })?;
                let by_digest = target.clone_with_digest(chosen.digest.clone());
                let (bytes, _) = client
                    .pull_manifest_raw(&by_digest, &auth, ACCEPTED_MANIFESTS)
                    .await
                    .map_err(registry_error)?;
                downloaded += bytes.len() as u64;
                let actual = sha256_digest(&bytes);
                if actual != chosen.digest {
                    return Err(ImageError::DigestMismatch {
                        expected: chosen.digest.clone(),
                        actual,
                    });
                }
                (bytes.to_vec(), actual)
            }
        };
        let manifest = match parse_manifest(&manifest_digest, &manifest_bytes)? {
            AnyManifest::Image(m) => m,
            AnyManifest::Index(_) => {
                return Err(ImageError::InvalidManifest {
                    digest: manifest_digest,
                    reason: "an index inside an index is not supported".to_string(),
                })
            }
        };

        // From here on content lands in the store before the index knows it.
        let store = self.clone();
        let gc = run_blocking(move || store.gc_shared()).await?;
        let store = self.clone();
        let (bytes, digest) = (manifest_bytes.clone(), manifest_digest.clone());
        run_blocking(move || store.write_blob(&bytes[..], Some(&digest)).map(|_| ())).await?;

        downloaded += self
            .fetch_missing(&client, &target, &name, endpoint, &manifest)
            .await?;

        let store = self.clone();
        let references = vec![name.clone()];
        let image = run_blocking(move || {
            store.commit_image(&references, &repo_digest, &manifest_digest, &manifest)
        })
        .await?;
        drop(gc);
        Ok((image, downloaded))
    }

    /// Downloads the config and every layer blob not yet in the store.
    async fn fetch_missing(
        &self,
        client: &Client,
        target: &Reference,
        name: &str,
        endpoint: &Endpoint,
        manifest: &ImageManifest,
    ) -> Result<u64, ImageError> {
        let mut downloaded = 0;
        for descriptor in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if descriptor.size > MAX_DOCUMENT_BYTES && descriptor.digest == manifest.config.digest {
                return Err(ImageError::InvalidManifest {
                    digest: descriptor.digest.clone(),
                    reason: format!("config of {} bytes is too large", descriptor.size),
                });
            }
            if self.has_blob(&descriptor.digest)? {
                continue;
            }
            downloaded += self
                .fetch_blob(client, target, name, endpoint, descriptor)
                .await?;
        }
        Ok(downloaded)
    }

    /// Streams one blob to a temp file while hashing it; it is named only once verified.
    async fn fetch_blob(
        &self,
        client: &Client,
        target: &Reference,
        name: &str,
        endpoint: &Endpoint,
        descriptor: &Descriptor,
    ) -> Result<u64, ImageError> {
        let registry_error = |message: String| ImageError::Registry {
            reference: name.to_string(),
            endpoint: endpoint.host.clone(),
            message,
        };
        let tmp = self.tmp_path("download");
        let result = async {
            let mut stream = client
                .pull_blob_stream(target, descriptor.digest.as_str())
                .await
                .map_err(|e| registry_error(format!("blob {}: {e}", descriptor.digest)))?;
            let mut file = tokio::fs::File::create(&tmp)
                .await
                .map_err(ImageError::io(&tmp))?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = match chunk {
                    Ok(chunk) => chunk,
                    // oci-client checks the digest itself and fails the stream's end; by then
                    // every byte has passed through here, so say what they really hash to.
                    Err(_) if size == descriptor.size => {
                        return Err(ImageError::DigestMismatch {
                            expected: descriptor.digest.clone(),
                            actual: format!("sha256:{}", hex::encode(hasher.finalize())),
                        });
                    }
                    Err(e) => {
                        return Err(registry_error(format!("blob {}: {e}", descriptor.digest)))
                    }
                };
                size += chunk.len() as u64;
                if size > descriptor.size {
                    return Err(registry_error(format!(
                        "blob {} is larger than the {} bytes its manifest says",
                        descriptor.digest, descriptor.size
                    )));
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(ImageError::io(&tmp))?;
            }
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if actual != descriptor.digest {
                return Err(ImageError::DigestMismatch {
                    expected: descriptor.digest.clone(),
                    actual,
                });
            }
            file.sync_all().await.map_err(ImageError::io(&tmp))?;
            drop(file);
            let store = self.clone();
            let (tmp, digest) = (tmp.clone(), descriptor.digest.clone());
            run_blocking(move || store.commit_blob(&tmp, &digest)).await?;
            Ok(size)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }
}

/// Runs filesystem work (flock, unpacking) off the async threads.
async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, ImageError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(ImageError::Io {
            path: Default::default(),
            source: std::io::Error::other(format!("image store task failed: {e}")),
        })
    })
}
