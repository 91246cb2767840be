//! Another server joins with a token alone (`berth server --server URL --token T`), as
//! `k3s server --server URL --token T` does: it trusts the first server's CA through the same
//! discovery as `berth agent`, reads with the token what it needs to reach the shared datastore
//! (its endpoints, client credentials and the servers' shared secret), and then starts as any
//! server on that datastore, taking the cluster's CAs and keys from it (see
//! [`super::cluster_secrets`]).
//!
//! The first server keeps that in the Secret `kube-system/berth-server-join`, readable by
//! server tokens alone (`berth token create --server`, group [`SERVER_TOKEN_GROUP`]), as
//! kubeadm keeps the control plane's certificates in `kubeadm-certs` for joining control
//! planes. The joined server keeps its copy in its data dir, so it restarts without the token.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde_json::{json, Value};

use super::bootstrap::{self, BootstrapError, JoinRequest};
use super::token::SERVER_TOKEN_GROUP;
use crate::config::StoreConfig;
use crate::registry::Registry;

pub const JOIN_SECRET: &str = "berth-server-join";
const NAMESPACE: &str = "kube-system";
const RBAC: &str = "rbac.authorization.k8s.io";
/// The joined server's copy, under its data dir.
const DIR: &str = "server-join";
const SETTINGS_FILE: &str = "datastore.json";
/// The Secret's keys for the datastore's client TLS files, and the files' names in [`DIR`].
const TLS_FILES: [&str; 3] = ["ca.crt", "client.crt", "client.key"];

#[derive(Debug, thiserror::Error)]
pub enum ServerJoinError {
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    #[error("no datastore joined before in {0} and no join token to join with (--token)")]
    NoToken(PathBuf),
    #[error("the join token is not a server token: make one with `berth token create --server` on a server")]
    NotAServerToken,
    #[error("the server at {0} is not on a shared datastore: start it with --datastore-endpoint and --token first")]
    NotShared(String),
    #[error("the server at {server} reaches its datastore at {endpoints}, which on this machine would be this machine itself: give --datastore-endpoint with an address of the datastore this machine reaches")]
    LoopbackEndpoints { server: String, endpoints: String },
    #[error("the server's join data is incomplete: no {0}")]
    Incomplete(&'static str),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
}

/// What a joining server needs to reach the shared datastore.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Joined {
    endpoints: Vec<String>,
    prefix: String,
    /// The servers' shared secret, which opens the cluster's bundle in the datastore.
    token: String,
    /// The client TLS files by name ([`TLS_FILES`]), those the first server uses.
    #[serde(skip)]
    tls: BTreeMap<String, Vec<u8>>,
}

impl Joined {
    /// From the Secret's data.
    fn from_secret(data: BTreeMap<String, Vec<u8>>) -> Result<Joined, ServerJoinError> {
        let text = |key: &'static str| {
            data.get(key)
                .map(|b| String::from_utf8_lossy(b).trim().to_owned())
                .filter(|t| !t.is_empty())
                .ok_or(ServerJoinError::Incomplete(key))
        };
        let endpoints = text("endpoints")?
            .split(',')
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect();
        let tls = TLS_FILES
            .iter()
            .filter_map(|name| Some((name.to_string(), data.get(*name)?.clone())))
            .collect();
        Ok(Joined {
            endpoints,
            prefix: text("prefix")?,
            token: text("token")?,
            tls,
        })
    }

    fn load(dir: &Path) -> Result<Option<Joined>, ServerJoinError> {
        let path = dir.join(SETTINGS_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ServerJoinError::Io { path, source }),
        };
        let mut joined: Joined =
            serde_json::from_slice(&bytes).map_err(|e| ServerJoinError::Damaged {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        for name in TLS_FILES {
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(bytes) => {
                    joined.tls.insert(name.to_owned(), bytes);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(ServerJoinError::Io { path, source }),
            }
        }
        Ok(Some(joined))
    }

    /// Written TLS files first and the settings last: a start that finds the settings finds
    /// everything.
    fn save(&self, dir: &Path) -> Result<(), ServerJoinError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ServerJoinError::Io { path, source }
        };
        crate::fsutil::create_private_dir(dir).map_err(io(dir))?;
        for (name, bytes) in &self.tls {
            let path = dir.join(name);
            crate::fsutil::write_atomic(&path, bytes, 0o600).map_err(io(&path))?;
        }
        let path = dir.join(SETTINGS_FILE);
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| ServerJoinError::Damaged {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        crate::fsutil::write_atomic(&path, &bytes, 0o600).map_err(io(&path))
    }

    /// Points `store` at the datastore; what was configured here (`--datastore-endpoint` for
    /// an address this machine reaches it at, say) wins. The first server's loopback
    /// endpoints are its own machine's, no use here: without another, the join is refused.
    fn apply(
        &self,
        dir: &Path,
        store: &mut StoreConfig,
        server: &str,
    ) -> Result<(), ServerJoinError> {
        if store.datastore_endpoint.is_empty() {
            store.datastore_endpoint = self
                .endpoints
                .iter()
                .filter(|endpoint| !is_loopback(endpoint))
                .cloned()
                .collect();
            if store.datastore_endpoint.is_empty() {
                return Err(ServerJoinError::LoopbackEndpoints {
                    server: server.to_owned(),
                    endpoints: self.endpoints.join(","),
                });
            }
        }
        store.datastore_prefix.clone_from(&self.prefix);
        store.token = Some(self.token.clone());
        let [ca, cert, key] = TLS_FILES;
        for (name, setting) in [
            (ca, &mut store.datastore_cafile),
            (cert, &mut store.datastore_certfile),
            (key, &mut store.datastore_keyfile),
        ] {
            if setting.is_none() && self.tls.contains_key(name) {
                *setting = Some(dir.join(name));
            }
        }
        Ok(())
    }
}

/// Whether the datastore `endpoint` (`https://127.0.0.1:2379`, `localhost:2379`) names the
/// machine that uses it.
fn is_loopback(endpoint: &str) -> bool {
    let host = endpoint
        .parse::<http::Uri>()
        .ok()
        .and_then(|uri| uri.host().map(str::to_owned))
        .unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Makes `store` the shared datastore's: from what this data dir kept of an earlier join, or
/// by joining through the server `join` names.
pub async fn join(
    data_dir: &Path,
    store: &mut StoreConfig,
    join: &JoinRequest<'_>,
) -> Result<(), ServerJoinError> {
    let dir = data_dir.join(DIR);
    let joined = match Joined::load(&dir)? {
        Some(joined) => {
            tracing::info!("using the datastore this server joined before");
            joined
        }
        None => {
            let text = join
                .token
                .ok_or_else(|| ServerJoinError::NoToken(dir.clone()))?;
            let (token, ca_pem) = bootstrap::discover(join, text).await?;
            let joined = fetch(join.server_url, &ca_pem, &token.to_string()).await?;
            joined.save(&dir)?;
            tracing::info!(server = join.server_url, "joined the server's datastore");
            joined
        }
    };
    joined.apply(&dir, store, join.server_url)
}

/// Reads the join Secret as the token, trusting only `ca_pem`.
async fn fetch(url: &str, ca_pem: &str, token: &str) -> Result<Joined, ServerJoinError> {
    let client = bootstrap::token_client(url, ca_pem, token)?;
    let secrets: Api<Secret> = Api::namespaced(client, NAMESPACE);
    let secret = match secrets.get(JOIN_SECRET).await {
        Ok(secret) => secret,
        Err(kube::Error::Api(status)) => {
            return Err(match status.code {
                401 => BootstrapError::TokenRefused.into(),
                403 => ServerJoinError::NotAServerToken,
                404 => ServerJoinError::NotShared(url.to_owned()),
                _ => BootstrapError::Request(kube::Error::Api(status)).into(),
            })
        }
        Err(e) => return Err(BootstrapError::Request(e).into()),
    };
    let data = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| (key, value.0))
        .collect();
    Joined::from_secret(data)
}

/// The Secret's data for a server on `store`, when it shares a datastore through a token.
fn secret_data(store: &StoreConfig) -> anyhow::Result<Option<Value>> {
    use anyhow::Context;
    use base64::Engine;
    let Some(token) = store
        .token
        .as_deref()
        .filter(|_| !store.datastore_endpoint.is_empty())
    else {
        return Ok(None);
    };
    let b64 = |bytes: &[u8]| Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    let mut data = json!({
        "endpoints": b64(store.datastore_endpoint.join(",").as_bytes()),
        "prefix": b64(store.datastore_prefix.as_bytes()),
        "token": b64(token.as_bytes()),
    });
    let [ca, cert, key] = TLS_FILES;
    for (name, file) in [
        (ca, &store.datastore_cafile),
        (cert, &store.datastore_certfile),
        (key, &store.datastore_keyfile),
    ] {
        if let Some(path) = file {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            data[name] = b64(&bytes);
        }
    }
    Ok(Some(data))
}

/// Lets server tokens read the join Secret (on every server, so a server that is not on a
/// shared datastore answers them "not found" rather than "forbidden"), and keeps the Secret
/// current when this server shares its datastore.
pub async fn publish(registry: &Registry, store: &StoreConfig) -> anyhow::Result<()> {
    let mut objects = vec![
        (
            RBAC,
            "roles",
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "berth:server-join", "namespace": NAMESPACE},
                "rules": [{"apiGroups": [""], "resources": ["secrets"],
                           "resourceNames": [JOIN_SECRET], "verbs": ["get"]}],
            }),
        ),
        (
            RBAC,
            "rolebindings",
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "berth:server-join", "namespace": NAMESPACE},
                "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "berth:server-join"},
                "subjects": [{"apiGroup": RBAC, "kind": "Group", "name": SERVER_TOKEN_GROUP}],
            }),
        ),
    ];
    if let Some(data) = secret_data(store)? {
        objects.push((
            "",
            "secrets",
            json!({
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": JOIN_SECRET, "namespace": NAMESPACE},
                "data": data,
            }),
        ));
    }
    for (group, plural, body) in objects {
        super::server::put(registry, group, plural, NAMESPACE, body, &|_, _| {})
            .await
            .map_err(|e| anyhow::anyhow!("cannot publish the server join data: {}", e.message))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> BTreeMap<String, Vec<u8>> {
        [
            ("endpoints", "https://10.0.0.1:2379, https://10.0.0.2:2379"),
            ("prefix", "/registry"),
            ("token", "shared"),
            ("ca.crt", "CA"),
            ("client.key", "KEY"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec()))
        .collect()
    }

    #[test]
    fn a_joined_datastore_is_kept_privately_and_configures_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let joined = Joined::from_secret(secret()).unwrap();
        assert_eq!(
            joined.endpoints,
            ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]
        );
        let kept = dir.path().join(DIR);
        assert!(Joined::load(&kept).unwrap().is_none());
        joined.save(&kept).unwrap();
        assert_eq!(Joined::load(&kept).unwrap(), Some(joined.clone()));
        use std::os::unix::fs::PermissionsExt;
        for name in [SETTINGS_FILE, "client.key"] {
            let mode = std::fs::metadata(kept.join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }

        let mut store = StoreConfig::default();
        joined.apply(&kept, &mut store, "https://a:6443").unwrap();
        assert_eq!(store.datastore_endpoint, joined.endpoints);
        assert_eq!(store.token.as_deref(), Some("shared"));
        assert_eq!(store.datastore_cafile, Some(kept.join("ca.crt")));
        assert_eq!(store.datastore_certfile, None, "the first server uses none");
        assert_eq!(store.datastore_keyfile, Some(kept.join("client.key")));

        // An address given here wins over the first server's.
        let mut store = StoreConfig {
            datastore_endpoint: vec!["https://etcd.local:2379".into()],
            ..StoreConfig::default()
        };
        joined.apply(&kept, &mut store, "https://a:6443").unwrap();
        assert_eq!(store.datastore_endpoint, ["https://etcd.local:2379"]);
    }

    #[test]
    fn the_first_servers_loopback_endpoints_are_not_taken_for_the_datastore() {
        let mut data = secret();
        data.insert(
            "endpoints".into(),
            b"http://127.0.0.1:2379,https://localhost:2379,http://[::1]:2379".to_vec(),
        );
        let joined = Joined::from_secret(data.clone()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let refused = joined.apply(dir.path(), &mut StoreConfig::default(), "https://a:6443");
        let message = refused.unwrap_err().to_string();
        assert!(
            message.contains("https://a:6443") && message.contains("--datastore-endpoint"),
            "{message}"
        );
        // An endpoint given here is used instead.
        let mut store = StoreConfig {
            datastore_endpoint: vec!["http://10.0.0.1:2379".into()],
            ..StoreConfig::default()
        };
        joined
            .apply(dir.path(), &mut store, "https://a:6443")
            .unwrap();
        assert_eq!(store.datastore_endpoint, ["http://10.0.0.1:2379"]);
        // Of loopback and other endpoints, the others.
        data.insert(
            "endpoints".into(),
            b"http://127.0.0.1:2379,http://10.0.0.2:2379".to_vec(),
        );
        let joined = Joined::from_secret(data).unwrap();
        let mut store = StoreConfig::default();
        joined
            .apply(dir.path(), &mut store, "https://a:6443")
            .unwrap();
        assert_eq!(store.datastore_endpoint, ["http://10.0.0.2:2379"]);
        assert!(!is_loopback("etcd.local:2379") && is_loopback("127.0.0.2:2379"));
    }

    #[test]
    fn join_data_without_the_shared_secret_is_refused() {
        let mut data = secret();
        data.remove("token");
        assert!(matches!(
            Joined::from_secret(data),
            Err(ServerJoinError::Incomplete("token"))
        ));
    }

    #[test]
    fn only_a_server_on_a_shared_datastore_publishes_join_data() {
        let lone = StoreConfig::default();
        assert!(secret_data(&lone).unwrap().is_none());
        let shared = StoreConfig {
            datastore_endpoint: vec!["http://10.0.0.1:2379".into()],
            token: Some("shared".into()),
            ..StoreConfig::default()
        };
        let data = secret_data(&shared).unwrap().unwrap();
        assert_eq!(data["token"], "c2hhcmVk");
        assert!(data.get("ca.crt").is_none());
    }
}
