//! Secrets encryption at rest: Secret values are sealed with AES-256-GCM on their way into the
//! store and opened on their way out, as kube-apiserver's `aesgcm` provider does.
//!
//! A stored value is `k8s:enc:aesgcm:v1:<key name>:` + 12-byte nonce + ciphertext and tag, with
//! the storage key as additional data (a value copied under another key does not open). Bytes
//! without the prefix are read as they are, so Secrets written before encryption (or by an
//! older berth) still read, and are sealed the next time they are written.
//!
//! The keys live in one file under the data dir (0600), one `name base64(32 bytes)` line per key,
//! the primary (used for new writes) first; the others only open older values. [`rotation`]
//! makes a new primary and re-seals every Secret with it.

pub mod rotation;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use crate::store::ValueTransformer;

/// Upstream's envelope prefix for the aesgcm provider; the key name and a colon follow.
const PREFIX: &str = "k8s:enc:aesgcm:v1:";
const KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    #[error("cannot read the encryption key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the encryption key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("encryption key file {path}, line {line}: {detail}")]
    BadKey {
        path: PathBuf,
        line: usize,
        detail: String,
    },
    #[error("encryption key file {path} holds no key")]
    NoKey { path: PathBuf },
    #[error("the system random source failed")]
    Random,
}

/// The Secrets transformer of a data dir, its key file created at first start.
pub fn open(data_dir: &Path) -> Result<std::sync::Arc<SecretsEncryption>, EncryptionError> {
    let file = KeyFile::load_or_create(&key_file(data_dir))?;
    Ok(std::sync::Arc::new(SecretsEncryption::new(&file)))
}

/// Where the key file of a data dir is.
pub fn key_file(data_dir: &Path) -> PathBuf {
    data_dir.join("encryption").join("keys")
}

/// The keys of the key file, as text: names and raw key bytes, the primary first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFile {
    pub keys: Vec<(String, Vec<u8>)>,
}

impl KeyFile {
    pub fn primary(&self) -> &str {
        self.keys
            .first()
            .map(|(name, _)| name.as_str())
            .unwrap_or("")
    }

    pub fn read(path: &Path) -> Result<KeyFile, EncryptionError> {
        let text = std::fs::read_to_string(path).map_err(|source| EncryptionError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        KeyFile::parse(&text, path)
    }

    /// Reads the file's text; `path` only names it in errors (the text may come from another
    /// server's copy).
    pub fn parse(text: &str, path: &Path) -> Result<KeyFile, EncryptionError> {
        let bad = |line: usize, detail: &str| EncryptionError::BadKey {
            path: path.to_path_buf(),
            line,
            detail: detail.to_owned(),
        };
        let mut keys = Vec::new();
        for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, secret)) = line.split_once(' ') else {
                return Err(bad(number, "expected `name base64-key`"));
            };
            if name.is_empty() || name.contains(':') {
                return Err(bad(number, "a key name must be non-empty and without `:`"));
            }
            let secret = base64::engine::general_purpose::STANDARD
                .decode(secret.trim())
                .map_err(|_| bad(number, "the key is not base64"))?;
            if secret.len() != KEY_BYTES {
                return Err(bad(number, "the key must be 32 bytes (AES-256)"));
            }
            keys.push((name.to_owned(), secret));
        }
        if keys.is_empty() {
            return Err(EncryptionError::NoKey {
                path: path.to_path_buf(),
            });
        }
        Ok(KeyFile { keys })
    }

    /// The file's text, as [`KeyFile::write`] writes it.
    pub fn render(&self) -> String {
        let mut text = String::from("# berth secrets encryption keys: the first is the primary\n");
        for (name, secret) in &self.keys {
            let secret = base64::engine::general_purpose::STANDARD.encode(secret);
            text.push_str(&format!("{name} {secret}\n"));
        }
        text
    }

    /// Writes the file whole through a temporary file and a rename, so a reader (the server
    /// watching it) never sees half of it; 0600 from the start, in a 0700 directory.
    pub fn write(&self, path: &Path) -> Result<(), EncryptionError> {
        let error = |source| EncryptionError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            crate::fsutil::create_private_dir(dir).map_err(error)?;
        }
        crate::fsutil::write_atomic(path, self.render().as_bytes(), 0o600).map_err(error)?;
        Ok(())
    }

    /// Keeps the primary and the keys named in `in_use`; returns the names of the others,
    /// which it drops.
    pub fn retain_used(&mut self, in_use: &HashSet<String>) -> Vec<String> {
        let primary = self.primary().to_owned();
        let mut dropped = Vec::new();
        self.keys.retain(|(name, _)| {
            let keep = *name == primary || in_use.contains(name);
            if !keep {
                dropped.push(name.clone());
            }
            keep
        });
        dropped
    }

    /// A file with one fresh key.
    pub fn generate() -> Result<KeyFile, EncryptionError> {
        let mut keys = KeyFile { keys: Vec::new() };
        keys.add_primary()?;
        Ok(keys)
    }

    /// Puts a fresh key first, named `key<n>` after the highest number in use; the old keys
    /// stay so values sealed with them still open. Returns the new key's name.
    pub fn add_primary(&mut self) -> Result<String, EncryptionError> {
        let mut secret = vec![0; KEY_BYTES];
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| EncryptionError::Random)?;
        let highest = self
            .keys
            .iter()
            .filter_map(|(name, _)| name.strip_prefix("key")?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        let name = format!("key{}", highest + 1);
        self.keys.insert(0, (name.clone(), secret));
        Ok(name)
    }

    /// The keys of a server that was away while the cluster's keys changed (`self`) joined
    /// with the cluster's: the cluster's first, then the local keys it lacks, since values
    /// sealed with them may still need opening. A local primary the cluster does not know by
    /// name (a rotation made here while the server was down) leads, so it reaches the cluster.
    /// A local key sharing a name with a different cluster key is dropped: the cluster's was
    /// shared first, and the local one has sealed nothing any other server could open.
    pub fn merged_into(&self, cluster: &KeyFile) -> KeyFile {
        let known = |name: &str| cluster.keys.iter().any(|(n, _)| n == name);
        let mut keys = cluster.keys.clone();
        for (index, (name, secret)) in self.keys.iter().enumerate() {
            if known(name) {
                continue;
            }
            match index {
                0 => keys.insert(0, (name.clone(), secret.clone())),
                _ => keys.push((name.clone(), secret.clone())),
            }
        }
        KeyFile { keys }
    }

    /// Reads the key file, creating it with one fresh key at first start.
    pub fn load_or_create(path: &Path) -> Result<KeyFile, EncryptionError> {
        if path.exists() {
            return KeyFile::read(path);
        }
        let keys = KeyFile::generate()?;
        keys.write(path)?;
        Ok(keys)
    }
}

struct Keys {
    primary: String,
    by_name: HashMap<String, LessSafeKey>,
}

impl Keys {
    fn from_file(file: &KeyFile) -> Keys {
        let by_name = file
            .keys
            .iter()
            .filter_map(|(name, secret)| {
                let key = UnboundKey::new(&AES_256_GCM, secret).ok()?;
                Some((name.clone(), LessSafeKey::new(key)))
            })
            .collect();
        Keys {
            primary: file.primary().to_owned(),
            by_name,
        }
    }
}

/// The store's transformer for Secrets: seals with the primary key, opens with any key.
pub struct SecretsEncryption {
    /// Storage key prefix of Secrets; only these values pay for encryption.
    prefix: String,
    keys: RwLock<Keys>,
    random: SystemRandom,
    /// While a census runs ([`SecretsEncryption::census`]), the names of the keys values were
    /// opened with: the store hands the transformer the stored bytes and nobody else.
    census: Mutex<Option<HashSet<String>>>,
}

impl SecretsEncryption {
    pub fn new(file: &KeyFile) -> SecretsEncryption {
        let prefix = crate::api::resources::find("", "v1", "secrets")
            .map(|r| r.key_prefix())
            .unwrap_or_else(|| "/core/secrets/".to_owned());
        SecretsEncryption {
            prefix,
            keys: RwLock::new(Keys::from_file(file)),
            random: SystemRandom::new(),
            census: Mutex::new(None),
        }
    }

    /// Takes the keys of a changed key file; writes from now on use its primary.
    pub fn reload(&self, file: &KeyFile) {
        if let Ok(mut keys) = self.keys.write() {
            *keys = Keys::from_file(file);
        }
    }

    pub fn primary(&self) -> String {
        self.keys
            .read()
            .map(|k| k.primary.clone())
            .unwrap_or_default()
    }

    pub fn storage_prefix(&self) -> &str {
        &self.prefix
    }

    /// Runs `read` (which reads stored Secrets) and returns the names of the keys the values
    /// it read were sealed with. Reads by others meanwhile count too, which can only keep a
    /// key longer, never drop one still needed.
    pub async fn census<F, T>(&self, read: F) -> (T, HashSet<String>)
    where
        F: std::future::Future<Output = T>,
    {
        if let Ok(mut census) = self.census.lock() {
            *census = Some(HashSet::new());
        }
        let output = read.await;
        let seen = self
            .census
            .lock()
            .ok()
            .and_then(|mut census| census.take())
            .unwrap_or_default();
        (output, seen)
    }

    fn count_in_census(&self, name: &str) {
        if let Ok(mut census) = self.census.lock() {
            if let Some(seen) = census.as_mut() {
                if !seen.contains(name) {
                    seen.insert(name.to_owned());
                }
            }
        }
    }

    fn seal(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, String> {
        let keys = self
            .keys
            .read()
            .map_err(|_| "key lock poisoned".to_owned())?;
        let cipher = keys
            .by_name
            .get(&keys.primary)
            .ok_or_else(|| format!("primary key {:?} is not loaded", keys.primary))?;
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| "the system random source failed".to_owned())?;
        let mut sealed = value.to_vec();
        cipher
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| "AES-GCM sealing failed".to_owned())?;
        let mut out = Vec::with_capacity(PREFIX.len() + keys.primary.len() + 1 + NONCE_LEN);
        out.extend_from_slice(PREFIX.as_bytes());
        out.extend_from_slice(keys.primary.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn open(&self, key: &str, stored: &[u8]) -> Result<Vec<u8>, String> {
        let Some(rest) = stored.strip_prefix(PREFIX.as_bytes()) else {
            // Written before encryption was on: plain JSON.
            return Ok(stored.to_vec());
        };
        let colon = rest
            .iter()
            .position(|&b| b == b':')
            .ok_or("sealed value without a key name")?;
        let name = String::from_utf8_lossy(&rest[..colon]);
        self.count_in_census(&name);
        let body = &rest[colon + 1..];
        if body.len() < NONCE_LEN {
            return Err("sealed value too short".to_owned());
        }
        let (nonce, sealed) = body.split_at(NONCE_LEN);
        let keys = self
            .keys
            .read()
            .map_err(|_| "key lock poisoned".to_owned())?;
        let cipher = keys
            .by_name
            .get(name.as_ref())
            .ok_or_else(|| format!("sealed with key {name:?}, which is not in the key file"))?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce".to_owned())?;
        let mut buffer = sealed.to_vec();
        let plain = cipher
            .open_in_place(nonce, Aad::from(key.as_bytes()), &mut buffer)
            .map_err(|_| format!("cannot open the value with key {name:?}"))?;
        Ok(plain.to_vec())
    }
}

impl ValueTransformer for SecretsEncryption {
    fn applies_to(&self, key: &str) -> bool {
        key.starts_with(&self.prefix)
    }

    fn to_storage(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, String> {
        self.seal(key, value)
    }

    fn from_storage(&self, key: &str, stored: &[u8]) -> Result<Vec<u8>, String> {
        self.open(key, stored)
    }
}

/// The name of the key a stored value was sealed with, if it was.
pub fn sealed_with(stored: &[u8]) -> Option<String> {
    let rest = stored.strip_prefix(PREFIX.as_bytes())?;
    let colon = rest.iter().position(|&b| b == b':')?;
    Some(String::from_utf8_lossy(&rest[..colon]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET_KEY: &str = "/core/secrets/default/s";

    #[test]
    fn a_sealed_value_hides_the_plaintext_and_opens_again() {
        let encryption = SecretsEncryption::new(&KeyFile::generate().unwrap());
        let plain = br#"{"data":{"password":"aHVudGVyMg=="}}"#;
        let sealed = encryption.to_storage(SECRET_KEY, plain).unwrap();
        assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
        assert!(!sealed.windows(12).any(|w| w == b"aHVudGVyMg=="));
        assert_eq!(encryption.from_storage(SECRET_KEY, &sealed).unwrap(), plain);
        assert_eq!(sealed_with(&sealed).as_deref(), Some("key1"));
    }

    #[test]
    fn a_value_moved_under_another_key_does_not_open() {
        let encryption = SecretsEncryption::new(&KeyFile::generate().unwrap());
        let sealed = encryption.to_storage(SECRET_KEY, b"{}").unwrap();
        assert!(encryption
            .from_storage("/core/secrets/default/other", &sealed)
            .is_err());
    }

    #[test]
    fn plaintext_written_before_encryption_still_reads() {
        let encryption = SecretsEncryption::new(&KeyFile::generate().unwrap());
        assert_eq!(
            encryption.from_storage(SECRET_KEY, b"{\"a\":1}").unwrap(),
            b"{\"a\":1}"
        );
    }

    #[test]
    fn after_rotation_new_values_use_the_new_key_and_old_ones_still_open() {
        let mut file = KeyFile::generate().unwrap();
        let encryption = SecretsEncryption::new(&file);
        let old = encryption.to_storage(SECRET_KEY, b"old").unwrap();
        assert_eq!(file.add_primary().unwrap(), "key2");
        encryption.reload(&file);
        let new = encryption.to_storage(SECRET_KEY, b"new").unwrap();
        assert_eq!(sealed_with(&new).as_deref(), Some("key2"));
        assert_eq!(encryption.from_storage(SECRET_KEY, &old).unwrap(), b"old");
        assert_eq!(encryption.from_storage(SECRET_KEY, &new).unwrap(), b"new");
    }

    #[test]
    fn only_secrets_are_transformed() {
        let encryption = SecretsEncryption::new(&KeyFile::generate().unwrap());
        assert!(encryption.applies_to(SECRET_KEY));
        assert!(!encryption.applies_to("/core/configmaps/default/c"));
    }

    #[test]
    fn the_key_file_is_private_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_file(dir.path());
        let created = KeyFile::load_or_create(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        assert_eq!(KeyFile::load_or_create(&path).unwrap(), created);
    }

    #[test]
    fn the_key_file_text_parses_back_to_the_same_keys() {
        let mut file = KeyFile::generate().unwrap();
        file.add_primary().unwrap();
        let text = file.render();
        assert_eq!(KeyFile::parse(&text, Path::new("shared")).unwrap(), file);
    }

    #[test]
    fn a_server_back_from_away_takes_the_clusters_keys_and_keeps_its_own_old_ones() {
        let mut local = KeyFile::generate().unwrap(); // key1
        let mut cluster = local.clone();
        cluster.add_primary().unwrap(); // key2 made on another server
        let old_local = KeyFile {
            keys: vec![("key0".to_owned(), vec![7; KEY_BYTES])],
        };
        local.keys.push(old_local.keys[0].clone());
        let merged = local.merged_into(&cluster);
        let names: Vec<&str> = merged.keys.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["key2", "key1", "key0"]);
        assert_eq!(merged.primary(), "key2");
    }

    #[test]
    fn a_rotation_made_while_the_server_was_down_leads_the_merged_keys() {
        let cluster = KeyFile::generate().unwrap(); // key1
        let mut local = cluster.clone();
        local.add_primary().unwrap(); // key2, not yet shared
        let merged = local.merged_into(&cluster);
        assert_eq!(merged, local);
    }

    #[test]
    fn a_local_key_named_like_another_cluster_key_gives_way_to_the_clusters() {
        let mut cluster = KeyFile::generate().unwrap();
        cluster.add_primary().unwrap(); // key2
        let mut local = KeyFile {
            keys: cluster.keys[1..].to_vec(),
        };
        local.add_primary().unwrap(); // another key2
        assert_ne!(local.keys[0], cluster.keys[0]);
        assert_eq!(local.merged_into(&cluster), cluster);
    }

    #[test]
    fn a_key_of_the_wrong_length_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "key1 c2hvcnQ=\n").unwrap();
        assert!(matches!(
            KeyFile::read(&path),
            Err(EncryptionError::BadKey { line: 1, .. })
        ));
    }
}
