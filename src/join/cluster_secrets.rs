//! The secrets every server of one cluster must hold alike — the cluster CA, the front-proxy CA,
//! the service-account signing key and the secrets-encryption keys — shared through the
//! datastore, as k3s shares its bootstrap data.
//!
//! The first server on an etcd makes them as a lone server would, seals them with a key derived
//! from the servers' shared token and stores them under one key; every later server fetches
//! and opens them before it makes anything, so what one server signs or seals the others
//! accept. A server whose own copy differs stops rather than split the cluster in two.
//!
//! Sealed form: `berth-bootstrap:v1:` + 16-byte salt + 12-byte nonce + AES-256-GCM ciphertext
//! and tag of a JSON object `{"<path under the data dir>": "<base64 contents>"}`; the key is
//! PBKDF2-HMAC-SHA256 of the token over the salt.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use crate::config::StoreConfig;
use crate::encryption::KeyFile;
use crate::store::etcd::shared_key::{self, SharedKey};
use crate::store::etcd::EtcdConfig;

/// Where the sealed bundle lives: outside the object prefix, so no list or watch sees it.
pub(crate) const BOOTSTRAP_KEY: &[u8] = b"/berth/bootstrap";
/// The secrets encryption keys, the one shared file that changes while servers run.
pub(crate) const KEY_FILE: &str = "encryption/keys";
const MAGIC: &[u8] = b"berth-bootstrap:v1:";
const SALT_LEN: usize = 16;
/// Enough that guessing a short token offline is slow, little enough for a Pi's start.
const PBKDF2_ROUNDS: u32 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum ClusterSecretsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make the cluster's CAs: {0}")]
    Pki(#[from] crate::pki::PkiError),
    #[error("cannot make the service account key: {0}")]
    TokenKey(#[from] crate::apiserver::sa_token::TokenKeyError),
    #[error("cannot make the secrets encryption key: {0}")]
    Encryption(#[from] crate::encryption::EncryptionError),
    #[error("the datastore: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("the cluster's bootstrap data in the datastore does not open with this token: every server needs the same token")]
    WrongToken,
    #[error("the cluster's bootstrap data in the datastore is damaged: {0}")]
    Damaged(String),
    #[error("the system has no usable random source")]
    Random,
    #[error("other servers kept changing the cluster's bootstrap data; try again")]
    Busy,
    #[error("{path} differs from the cluster's copy in the datastore: remove it to take the cluster's, or point this server at its own datastore")]
    Differs { path: PathBuf },
}

/// The shared files, as paths under the data dir.
fn shared_files() -> Vec<String> {
    let mut files: Vec<String> = crate::pki::SHARED_FILES
        .iter()
        .map(|name| format!("pki/{name}"))
        .collect();
    files.push(format!("pki/{}", crate::apiserver::sa_token::KEY_FILE));
    files.push(KEY_FILE.to_owned());
    files
}

/// Makes the data dir hold the cluster's shared secrets when servers share an etcd and a token;
/// otherwise leaves it alone (a lone server makes its own as it starts).
pub async fn sync(store: &StoreConfig, data_dir: &Path) -> Result<(), ClusterSecretsError> {
    let Some(token) = store
        .token
        .as_deref()
        .filter(|_| !store.datastore_endpoint.is_empty())
    else {
        return Ok(());
    };
    let etcd = etcd_config(store);
    if shared_key::read(&etcd, BOOTSTRAP_KEY).await?.is_some() {
        return take_the_clusters(&etcd, token, data_dir, &[]).await;
    }
    // First server: make what is missing, offer it, and take the winner's if another server
    // offered first.
    let made = make_missing(data_dir)?;
    let ours = read_files(data_dir)?;
    let sealed = seal(token, &ours)?;
    match shared_key::create(&etcd, BOOTSTRAP_KEY, sealed).await? {
        None => {
            tracing::info!("stored the cluster's CAs and keys in the datastore for other servers");
            Ok(())
        }
        Some(_) => take_the_clusters(&etcd, token, data_dir, &made).await,
    }
}

/// The etcd settings of a store on a shared datastore.
pub(crate) fn etcd_config(store: &StoreConfig) -> EtcdConfig {
    EtcdConfig {
        endpoints: store.datastore_endpoint.clone(),
        ca_file: store.datastore_cafile.clone(),
        cert_file: store.datastore_certfile.clone(),
        key_file: store.datastore_keyfile.clone(),
    }
}

/// How often a compare-and-swap of the bundle is tried against other servers' writes.
pub(crate) const SWAP_ATTEMPTS: usize = 10;

/// Installs the cluster's files; when this data dir's encryption keys hold one the cluster
/// lacks (rotated while this server was down), offers the merged keys back.
async fn take_the_clusters(
    etcd: &EtcdConfig,
    token: &str,
    data_dir: &Path,
    replaceable: &[String],
) -> Result<(), ClusterSecretsError> {
    let bundle = SharedKey::new(etcd, BOOTSTRAP_KEY)?;
    for _ in 0..SWAP_ATTEMPTS {
        let Some(current) = bundle.read().await? else {
            return Err(ClusterSecretsError::Damaged(
                "the bundle vanished".to_owned(),
            ));
        };
        let mut files = open(token, &current.value)?;
        let Some(keys) = install(data_dir, &files, replaceable)? else {
            return Ok(());
        };
        files.insert(KEY_FILE.to_owned(), keys);
        if bundle
            .replace(seal(token, &files)?, current.mod_revision)
            .await?
        {
            tracing::info!("offered this server's encryption keys to the other servers");
            return Ok(());
        }
    }
    Err(ClusterSecretsError::Busy)
}

/// Makes the shared files a lone server would make at start; returns those it made now.
fn make_missing(data_dir: &Path) -> Result<Vec<String>, ClusterSecretsError> {
    let missing: Vec<String> = shared_files()
        .into_iter()
        .filter(|file| !data_dir.join(file).exists())
        .collect();
    let pki_dir = data_dir.join("pki");
    crate::pki::ensure_cas(&pki_dir)?;
    crate::apiserver::sa_token::ensure_key_file(&pki_dir)?;
    crate::encryption::KeyFile::load_or_create(&crate::encryption::key_file(data_dir))?;
    Ok(missing)
}

fn read_files(data_dir: &Path) -> Result<BTreeMap<String, Vec<u8>>, ClusterSecretsError> {
    shared_files()
        .into_iter()
        .map(|file| {
            let path = data_dir.join(&file);
            let bytes = std::fs::read(&path)
                .map_err(|source| ClusterSecretsError::Read { path, source })?;
            Ok((file, bytes))
        })
        .collect()
}

/// Writes the cluster's files into the data dir. A file already there must match, unless this
/// start made it (`replaceable`) and lost the race to another server. Encryption keys that
/// differ are merged instead (the cluster's rotated while this server was away, or this one's
/// while the cluster's did not): returns the merged key file when the cluster lacks some of it.
fn install(
    data_dir: &Path,
    files: &BTreeMap<String, Vec<u8>>,
    replaceable: &[String],
) -> Result<Option<Vec<u8>>, ClusterSecretsError> {
    let mut offer = None;
    for (file, bytes) in files {
        if !shared_files().contains(file) {
            return Err(ClusterSecretsError::Damaged(format!(
                "unexpected file {file}"
            )));
        }
        let path = data_dir.join(file);
        let mut bytes = bytes.clone();
        match std::fs::read(&path) {
            Ok(local) if local == bytes => continue,
            Ok(local) if file == KEY_FILE && !replaceable.contains(file) => {
                let merged = merge_keys(&path, &local, &bytes)?;
                if merged != bytes {
                    offer = Some(merged.clone());
                }
                bytes = merged;
            }
            Ok(_) if !replaceable.contains(file) => {
                return Err(ClusterSecretsError::Differs { path })
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ClusterSecretsError::Read { path, source }),
        }
        write_private(&path, &bytes)?;
    }
    Ok(offer)
}

/// The local key file merged with the cluster's (see [`KeyFile::merged_into`]), as file text;
/// the cluster's text itself when merging adds nothing.
fn merge_keys(path: &Path, local: &[u8], cluster: &[u8]) -> Result<Vec<u8>, ClusterSecretsError> {
    let parse = |bytes: &[u8]| KeyFile::parse(&String::from_utf8_lossy(bytes), path);
    let cluster_keys = parse(cluster)?;
    let merged = parse(local)?.merged_into(&cluster_keys);
    if merged == cluster_keys {
        return Ok(cluster.to_vec());
    }
    Ok(merged.render().into_bytes())
}

/// Certificates are public but their keys are not; every shared file is written 0600, in a
/// 0700 directory, which is what the keys need and no reader of the certificates minds.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ClusterSecretsError> {
    let error = |source| ClusterSecretsError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        crate::fsutil::create_private_dir(dir).map_err(error)?;
    }
    crate::fsutil::write_atomic(path, bytes, 0o600).map_err(error)
}

fn derive_key(token: &str, salt: &[u8]) -> Result<LessSafeKey, ClusterSecretsError> {
    let mut secret = [0u8; 32];
    let rounds = NonZeroU32::new(PBKDF2_ROUNDS).ok_or(ClusterSecretsError::Random)?;
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        salt,
        token.as_bytes(),
        &mut secret,
    );
    let key = UnboundKey::new(&AES_256_GCM, &secret).map_err(|_| ClusterSecretsError::Random)?;
    Ok(LessSafeKey::new(key))
}

pub(crate) fn seal(
    token: &str,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<Vec<u8>, ClusterSecretsError> {
    let encoded: BTreeMap<&str, String> = files
        .iter()
        .map(|(file, bytes)| {
            let text = base64::engine::general_purpose::STANDARD.encode(bytes);
            (file.as_str(), text)
        })
        .collect();
    let mut plain =
        serde_json::to_vec(&encoded).map_err(|e| ClusterSecretsError::Damaged(e.to_string()))?;
    let random = SystemRandom::new();
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    random
        .fill(&mut salt)
        .and_then(|()| random.fill(&mut nonce))
        .map_err(|_| ClusterSecretsError::Random)?;
    derive_key(token, &salt)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(MAGIC),
            &mut plain,
        )
        .map_err(|_| ClusterSecretsError::Random)?;
    let mut sealed = MAGIC.to_vec();
    sealed.extend_from_slice(&salt);
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&plain);
    Ok(sealed)
}

pub(crate) fn open(
    token: &str,
    sealed: &[u8],
) -> Result<BTreeMap<String, Vec<u8>>, ClusterSecretsError> {
    let damaged = |what: &str| ClusterSecretsError::Damaged(what.to_owned());
    let rest = sealed
        .strip_prefix(MAGIC)
        .ok_or_else(|| damaged("unknown format"))?;
    if rest.len() < SALT_LEN + NONCE_LEN {
        return Err(damaged("too short"));
    }
    let (salt, rest) = rest.split_at(SALT_LEN);
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| damaged("bad nonce"))?;
    let mut buffer = ciphertext.to_vec();
    let plain = derive_key(token, salt)?
        .open_in_place(nonce, Aad::from(MAGIC), &mut buffer)
        .map_err(|_| ClusterSecretsError::WrongToken)?;
    let encoded: BTreeMap<String, String> =
        serde_json::from_slice(plain).map_err(|e| damaged(&e.to_string()))?;
    encoded
        .into_iter()
        .map(|(file, text)| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| damaged(&e.to_string()))?;
            Ok((file, bytes))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BTreeMap<String, Vec<u8>> {
        [
            ("pki/ca.crt".to_owned(), b"certificate".to_vec()),
            ("encryption/keys".to_owned(), b"key1 c2VjcmV0\n".to_vec()),
        ]
        .into()
    }

    #[test]
    fn sealed_files_open_with_the_same_token() {
        let sealed = seal("s3cret-token", &sample()).unwrap();
        assert!(sealed.starts_with(MAGIC));
        assert!(
            !sealed.windows(11).any(|w| w == b"certificate"),
            "the files are not stored in the clear"
        );
        assert_eq!(open("s3cret-token", &sealed).unwrap(), sample());
    }

    #[test]
    fn another_token_cannot_open_the_sealed_files() {
        let sealed = seal("s3cret-token", &sample()).unwrap();
        assert!(matches!(
            open("other-token", &sealed),
            Err(ClusterSecretsError::WrongToken)
        ));
    }

    #[test]
    fn a_tampered_bundle_is_refused() {
        let mut sealed = seal("s3cret-token", &sample()).unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(open("s3cret-token", &sealed).is_err());
        assert!(open("s3cret-token", b"garbage").is_err());
    }

    #[test]
    fn a_fresh_data_dir_takes_the_clusters_files_and_a_differing_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files: BTreeMap<String, Vec<u8>> =
            [("pki/ca.crt".to_owned(), b"cluster ca".to_vec())].into();
        install(dir.path(), &files, &[]).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("pki/ca.crt")).unwrap(),
            b"cluster ca"
        );
        // The same again is fine (a restart).
        install(dir.path(), &files, &[]).unwrap();

        let other: BTreeMap<String, Vec<u8>> =
            [("pki/ca.crt".to_owned(), b"another ca".to_vec())].into();
        assert!(matches!(
            install(dir.path(), &other, &[]),
            Err(ClusterSecretsError::Differs { .. })
        ));
        // Unless this start made it and lost the race to the other server.
        install(dir.path(), &other, &["pki/ca.crt".to_owned()]).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("pki/ca.crt")).unwrap(),
            b"another ca"
        );
    }

    #[test]
    fn keys_rotated_while_a_server_was_away_are_merged_not_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let local = KeyFile::generate().unwrap(); // key1
        local.write(&path).unwrap();
        let mut cluster = local.clone();
        cluster.add_primary().unwrap(); // key2, made by another server meanwhile
        let files: BTreeMap<String, Vec<u8>> =
            [(KEY_FILE.to_owned(), cluster.render().into_bytes())].into();
        let offer = install(dir.path(), &files, &[]).unwrap();
        assert_eq!(offer, None, "the cluster already has every local key");
        assert_eq!(KeyFile::read(&path).unwrap(), cluster);

        // A rotation made here while away leads and is offered to the cluster.
        let mut rotated = cluster.clone();
        let name = rotated.add_primary().unwrap();
        rotated.write(&path).unwrap();
        let offer = install(dir.path(), &files, &[]).unwrap().expect("an offer");
        let offered = KeyFile::parse(&String::from_utf8(offer).unwrap(), &path).unwrap();
        assert_eq!(offered.primary(), name);
        assert_eq!(offered, rotated);
        assert_eq!(KeyFile::read(&path).unwrap(), rotated);
    }

    #[test]
    fn a_bundle_naming_a_file_outside_the_shared_set_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files: BTreeMap<String, Vec<u8>> = [("../escape".to_owned(), b"x".to_vec())].into();
        assert!(install(dir.path(), &files, &[]).is_err());
        assert!(!dir.path().join("../escape").exists());
    }

    #[test]
    fn the_first_server_makes_every_shared_file() {
        let dir = tempfile::tempdir().unwrap();
        let made = make_missing(dir.path()).unwrap();
        assert_eq!(made, shared_files());
        let files = read_files(dir.path()).unwrap();
        assert_eq!(files.len(), shared_files().len());
        assert!(make_missing(dir.path()).unwrap().is_empty(), "made once");
    }
}
