//! Pulling from registries: resolve the reference to one manifest for this node's platform,
//! fetch what is missing, verify every byte against its digest, record the image.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use oci_client::errors::{DigestError, OciDistributionError};
use oci_client::{Client, Reference};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::auth::Endpoint;
use super::manifest::{
    parse_manifest, sha256_digest, AnyManifest, Descriptor, ImageManifest, ACCEPTED_MANIFESTS,
    MAX_DOCUMENT_BYTES,
};
use super::reference::{normalize_reference, parse_reference, Platform};
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
        let normalized = normalize_reference(reference)?;
        if policy == PullPolicy::Never {
            return match self.get_blocking(&normalized).await? {
                Some(image) => Ok((image, None)),
                None => Err(ImageError::NotPresent(normalized)),
            };
        }
        let inflight = self.inflight_lock(&normalized);
        let _pulling = inflight.lock().await;
        // Checked under the lock: a concurrent pull of the same reference may just have finished.
        if policy == PullPolicy::IfNotPresent {
            if let Some(image) = self.get_blocking(&normalized).await? {
                return Ok((image, None));
            }
        }
        let (image, report) = self.pull(&normalized, auth).await?;
        Ok((image, Some(report)))
    }

    fn inflight_lock(&self, reference: &str) -> Arc<tokio::sync::Mutex<()>> {
        // A poisoned map only means another pull panicked; the map itself is still sound.
        let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(reference.to_string()).or_default().clone()
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
        let registry_error = |e: OciDistributionError| match e {
            OciDistributionError::DigestError(DigestError::VerificationError {
                expected,
                actual,
            }) => ImageError::DigestMismatch { expected, actual },
            other => ImageError::Registry {
                reference: name.clone(),
                endpoint: endpoint.host.clone(),
                message: other.to_string(),
            },
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use axum::extract::{Path as UrlPath, State};
    use axum::http::{header, HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;

    use super::super::archive::fixtures::{image, layer, TestImage};
    use super::super::manifest::{OCI_INDEX, OCI_MANIFEST};
    use super::*;

    /// A minimal registry on 127.0.0.1:0 serving fixed content and counting blob downloads.
    #[derive(Default)]
    struct FakeRegistry {
        /// "<repo>/manifests/<ref>" or "<repo>/blobs/<digest>" → (content type, body).
        content: Mutex<HashMap<String, (String, Vec<u8>)>>,
        blob_gets: AtomicUsize,
        /// When set, every request needs this `Authorization` header value.
        basic_auth: Option<String>,
    }

    impl FakeRegistry {
        fn put(&self, path: String, media_type: &str, body: &[u8]) {
            let mut content = self.content.lock().unwrap();
            content.insert(path, (media_type.to_string(), body.to_vec()));
        }

        fn put_image(&self, repo: &str, tag: &str, img: &TestImage) {
            self.put(
                format!("{repo}/manifests/{tag}"),
                OCI_MANIFEST,
                &img.manifest.bytes,
            );
            self.put(
                format!("{repo}/manifests/{}", img.manifest.digest),
                OCI_MANIFEST,
                &img.manifest.bytes,
            );
            for blob in std::iter::once(&img.config).chain(&img.layers) {
                self.put(
                    format!("{repo}/blobs/{}", blob.digest),
                    "application/octet-stream",
                    &blob.bytes,
                );
            }
        }
    }

    fn unauthorized(registry: &FakeRegistry, headers: &HeaderMap) -> Option<Response> {
        let wanted = registry.basic_auth.as_deref()?;
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        (given != Some(wanted)).then(|| {
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"fake\"")],
            )
                .into_response()
        })
    }

    async fn ping(State(registry): State<Arc<FakeRegistry>>, headers: HeaderMap) -> Response {
        unauthorized(&registry, &headers).unwrap_or_else(|| "{}".into_response())
    }

    async fn serve(
        State(registry): State<Arc<FakeRegistry>>,
        UrlPath(path): UrlPath<String>,
        headers: HeaderMap,
    ) -> Response {
        if let Some(denied) = unauthorized(&registry, &headers) {
            return denied;
        }
        if path.contains("/blobs/") {
            registry.blob_gets.fetch_add(1, Ordering::SeqCst);
        }
        let found = registry.content.lock().unwrap().get(&path).cloned();
        match found {
            Some((media_type, body)) => {
                ([(header::CONTENT_TYPE, media_type)], body).into_response()
            }
            None => StatusCode::NOT_FOUND.into_response(),
        }
    }

    async fn start(registry: Arc<FakeRegistry>) -> (String, tokio::task::JoinHandle<()>) {
        let app = axum::Router::new()
            .route("/v2/", get(ping))
            .route("/v2/{*path}", get(serve))
            .with_state(registry);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (addr.to_string(), task)
    }

    fn store() -> (tempfile::TempDir, ImageStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&dir.path().join("images")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn an_index_resolves_to_the_node_platform_and_the_image_is_named_by_the_index_digest() {
        let registry = Arc::new(FakeRegistry::default());
        let img = image(vec![layer(&[("bin/app", b"native")])], "app");
        registry.put_image("app", "unused", &img);
        let node = Platform::node();
        let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "size": 1,
             "digest": format!("sha256:{}", "e".repeat(64)),
             "platform": {"architecture": "s390x", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "size": img.manifest.bytes.len(),
             "digest": img.manifest.digest,
             "platform": {"architecture": node.architecture, "os": "linux",
                          "variant": node.variant}},
        ]}))
        .unwrap();
        registry.put("app/manifests/1".into(), OCI_INDEX, &index);
        let (host, server) = start(registry.clone()).await;
        let (_dir, store) = store();

        let reference = format!("{host}/app:1");
        let (pulled, report) = store
            .ensure(
                &reference,
                PullPolicy::IfNotPresent,
                &RegistryAuth::default(),
            )
            .await
            .unwrap();
        let report = report.expect("went to the registry");
        assert!(report.bytes >= img.layers[0].bytes.len() as u64);
        assert_eq!(
            pulled.digest,
            format!("{host}/app@{}", sha256_digest(&index))
        );
        assert_eq!(pulled.id, img.config.digest);
        assert_eq!(
            std::fs::read(pulled.layers[0].join("bin/app")).unwrap(),
            b"native"
        );
        server.abort();
    }

    #[tokio::test]
    async fn mirrors_are_tried_in_order_and_a_dead_one_is_skipped() {
        let registry = Arc::new(FakeRegistry::default());
        let img = image(vec![layer(&[("m", b"from the mirror")])], "x");
        registry.put_image("team/app", "1", &img);
        let (mirror, server) = start(registry.clone()).await;
        // The mirrored registry and the first mirror are loopback ports nothing listens on, so
        // a failing test cannot send traffic anywhere.
        let mut registries = crate::config::RegistriesConfig::default();
        registries.mirrors.insert(
            "127.0.0.1:1".into(),
            crate::config::RegistryMirror {
                endpoints: vec!["http://127.0.0.1:2".into(), format!("http://{mirror}")],
            },
        );
        let (_dir, store) = store();
        let (pulled, _) = store
            .pull(
                "127.0.0.1:1/team/app:1",
                &RegistryAuth::from_config(&registries),
            )
            .await
            .unwrap();
        assert_eq!(pulled.reference, "127.0.0.1:1/team/app:1");
        assert_eq!(
            pulled.digest,
            format!("127.0.0.1:1/team/app@{}", img.manifest.digest)
        );
        assert!(pulled.layers[0].join("m").is_file());
        server.abort();
    }

    #[tokio::test]
    async fn pull_secrets_authenticate_to_a_registry_that_demands_them() {
        let registry = Arc::new(FakeRegistry {
            // base64("pod:secret")
            basic_auth: Some("Basic cG9kOnNlY3JldA==".into()),
            ..Default::default()
        });
        let img = image(vec![layer(&[("a", b"1")])], "x");
        registry.put_image("app", "1", &img);
        let (host, server) = start(registry.clone()).await;
        let (_dir, store) = store();
        let reference = format!("{host}/app:1");

        let err = store
            .pull(&reference, &RegistryAuth::default())
            .await
            .unwrap_err();
        assert!(matches!(err, ImageError::Registry { .. }), "{err}");

        let mut auth = RegistryAuth::default();
        let secret =
            format!(r#"{{"auths":{{"{host}":{{"username":"pod","password":"secret"}}}}}}"#);
        auth.add_docker_config_json(secret.as_bytes()).unwrap();
        let (pulled, _) = store.pull(&reference, &auth).await.unwrap();
        assert_eq!(pulled.id, img.config.digest);
        server.abort();
    }

    #[tokio::test]
    async fn pods_pulling_one_image_at_once_download_it_once() {
        let registry = Arc::new(FakeRegistry::default());
        let img = image(vec![layer(&[("a", b"1")]), layer(&[("b", b"2")])], "x");
        registry.put_image("app", "1", &img);
        let (host, server) = start(registry.clone()).await;
        let (_dir, store) = store();
        let reference = format!("{host}/app:1");
        let auth = RegistryAuth::default();

        let other = store.clone();
        let (a, b) = tokio::join!(
            store.ensure(&reference, PullPolicy::IfNotPresent, &auth),
            other.ensure(&reference, PullPolicy::IfNotPresent, &auth)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.0, b.0);
        assert_eq!(usize::from(a.1.is_some()) + usize::from(b.1.is_some()), 1);
        assert_eq!(
            registry.blob_gets.load(Ordering::SeqCst),
            3,
            "config and two layers, once"
        );

        // Always goes back to the registry, but only for the manifest.
        let (_, report) = store
            .ensure(&reference, PullPolicy::Always, &auth)
            .await
            .unwrap();
        assert_eq!(report.unwrap().bytes, img.manifest.bytes.len() as u64);
        assert_eq!(registry.blob_gets.load(Ordering::SeqCst), 3);
        server.abort();
    }

    #[tokio::test]
    async fn a_manifest_that_is_not_the_requested_digest_is_rejected() {
        let registry = Arc::new(FakeRegistry::default());
        let img = image(vec![layer(&[("a", b"1")])], "x");
        let wanted = format!("sha256:{}", "d".repeat(64));
        registry.put(
            format!("app/manifests/{wanted}"),
            OCI_MANIFEST,
            &img.manifest.bytes,
        );
        let (host, server) = start(registry.clone()).await;
        let (_dir, store) = store();

        let err = store
            .ensure(
                &format!("{host}/app@{wanted}"),
                PullPolicy::Always,
                &RegistryAuth::default(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert!(store.list().unwrap().is_empty());
        server.abort();
    }

    #[tokio::test]
    async fn never_fails_for_a_missing_image_and_if_not_present_reuses_a_local_one() {
        let (dir, store) = store();
        // Port 1 on the loopback: nothing listens, so any attempt to pull would fail.
        let reference = "127.0.0.1:1/app:1";
        let err = store
            .ensure(reference, PullPolicy::Never, &RegistryAuth::default())
            .await
            .unwrap_err();
        assert!(matches!(err, ImageError::NotPresent(_)), "{err}");

        let img = image(vec![layer(&[("a", b"1")])], "x");
        let archive = dir.path().join("a.tar");
        std::fs::write(
            &archive,
            super::super::archive::fixtures::oci_archive(&[(reference, &img)]),
        )
        .unwrap();
        store.import_archive(&archive).unwrap();
        for policy in [PullPolicy::Never, PullPolicy::IfNotPresent] {
            let (image, report) = store
                .ensure(reference, policy, &RegistryAuth::default())
                .await
                .unwrap();
            assert_eq!(image.id, img.config.digest);
            assert_eq!(report, None);
        }
        let err = store
            .ensure(reference, PullPolicy::Always, &RegistryAuth::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    }
}
