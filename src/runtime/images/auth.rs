//! Where to pull from and with which credentials: the node's registries config (mirrors, TLS,
//! static credentials) plus the pod's imagePullSecrets.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::{Client, Reference};
use serde::Deserialize;

use crate::config::{RegistriesConfig, RegistryHostConfig};

use super::ImageError;

#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({}, <redacted>)", self.username)
    }
}

/// Everything a pull may need to reach a registry. Built from the node config once, then
/// extended per pod with its pull secrets.
#[derive(Debug, Clone, Default)]
pub struct RegistryAuth {
    pub registries: RegistriesConfig,
    /// From imagePullSecrets, keyed by registry host (`docker.io`, `host:port`). They win over
    /// the static credentials of the config, as the kubelet's do over the node's.
    pub pull_secrets: BTreeMap<String, Credential>,
}

#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuthEntry>,
}

#[derive(Deserialize, Default)]
struct DockerAuthEntry {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    /// base64 of `username:password`.
    #[serde(default)]
    auth: Option<String>,
}

impl RegistryAuth {
    pub fn from_config(registries: &RegistriesConfig) -> RegistryAuth {
        RegistryAuth {
            registries: registries.clone(),
            pull_secrets: BTreeMap::new(),
        }
    }

    /// Adds the credentials of a `kubernetes.io/dockerconfigjson` secret (`{"auths": {...}}`)
    /// or a legacy `kubernetes.io/dockercfg` one (the same map without the `auths` wrapper).
    pub fn add_docker_config_json(&mut self, json: &[u8]) -> Result<(), ImageError> {
        let invalid = |reason: String| ImageError::InvalidManifest {
            digest: "imagePullSecret".to_string(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| invalid(e.to_string()))?;
        let auths: BTreeMap<String, DockerAuthEntry> = if value.get("auths").is_some() {
            serde_json::from_value::<DockerConfigJson>(value)
                .map_err(|e| invalid(e.to_string()))?
                .auths
        } else {
            serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?
        };
        for (key, entry) in auths {
            let (username, password) = match (entry.username, entry.password, entry.auth) {
                (Some(u), Some(p), _) => (u, p),
                (_, _, Some(auth)) => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .map_err(|e| invalid(format!("auth for {key}: {e}")))?;
                    let text = String::from_utf8(decoded)
                        .map_err(|_| invalid(format!("auth for {key} is not UTF-8")))?;
                    let (u, p) = text
                        .split_once(':')
                        .ok_or_else(|| invalid(format!("auth for {key} lacks a ':'")))?;
                    (u.to_string(), p.to_string())
                }
                _ => continue,
            };
            self.pull_secrets
                .insert(registry_host_of(&key), Credential { username, password });
        }
        Ok(())
    }

    /// The endpoints to try for `reference`, in order: its mirrors, then the registry itself.
    pub(super) fn endpoints(&self, reference: &Reference) -> Result<Vec<Endpoint>, ImageError> {
        let registry = reference.registry();
        let mut endpoints = Vec::new();
        let mirrors = self
            .registries
            .mirrors
            .get(registry)
            .or_else(|| self.registries.mirrors.get("*"));
        for url in mirrors.map(|m| m.endpoints.as_slice()).unwrap_or_default() {
            let parsed = url::Url::parse(url).map_err(|e| ImageError::InvalidReference {
                reference: url.clone(),
                reason: format!("mirror endpoint for {registry}: {e}"),
            })?;
            let host = match (parsed.host_str(), parsed.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_string(),
                (None, _) => {
                    return Err(ImageError::InvalidReference {
                        reference: url.clone(),
                        reason: format!("mirror endpoint for {registry} has no host"),
                    })
                }
            };
            // A mirror that is the registry itself is the upstream endpoint, tried last anyway.
            if host == registry {
                continue;
            }
            endpoints.push(self.endpoint(host, Some(parsed.scheme() == "http"), true));
        }
        endpoints.push(self.endpoint(registry.to_string(), None, false));
        Ok(endpoints)
    }

    fn endpoint(&self, host: String, plain_http: Option<bool>, mirror: bool) -> Endpoint {
        let config = self.registries.configs.get(&host).cloned();
        // Registries on the loopback speak plain HTTP unless configured, like Docker's default
        // insecure-registries for 127.0.0.0/8.
        let plain_http = plain_http.unwrap_or_else(|| config.is_none() && is_loopback_host(&host));
        let credential = self.pull_secrets.get(&host).cloned().or_else(|| {
            let c = config.as_ref()?;
            Some(Credential {
                username: c.username.clone()?,
                password: c.password.clone().unwrap_or_default(),
            })
        });
        Endpoint {
            host,
            plain_http,
            mirror,
            config: config.unwrap_or_default(),
            credential,
        }
    }
}

/// One place to try a pull from.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    /// `host[:port]`.
    pub host: String,
    pub plain_http: bool,
    pub mirror: bool,
    pub config: RegistryHostConfig,
    pub credential: Option<Credential>,
}

impl Endpoint {
    /// The reference as this endpoint serves it: mirrors keep the repository path and learn the
    /// upstream registry through the `ns` query parameter, as containerd's mirrors do.
    pub fn reference_for(&self, reference: &Reference) -> Reference {
        let mut r = reference.clone();
        if self.mirror {
            r.set_mirror_registry(self.host.clone());
        }
        r
    }

    pub fn oci_auth(&self) -> oci_client::secrets::RegistryAuth {
        match &self.credential {
            Some(c) => {
                oci_client::secrets::RegistryAuth::Basic(c.username.clone(), c.password.clone())
            }
            None => oci_client::secrets::RegistryAuth::Anonymous,
        }
    }

    pub fn client(&self) -> Result<Client, ImageError> {
        install_crypto_provider();
        let mut extra_root_certificates = Vec::new();
        if let Some(ca) = &self.config.ca_file {
            let data = std::fs::read(ca).map_err(ImageError::io(PathBuf::from(ca)))?;
            extra_root_certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        let protocol = if self.plain_http {
            // oci-client resolves `docker.io` itself; the exception list names the host it dials.
            ClientProtocol::HttpsExcept(vec![self.host.clone()])
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            accept_invalid_certificates: self.config.insecure_skip_verify,
            extra_root_certificates,
            // berth picks the platform itself (with arm variants), so indexes come back raw.
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(15)),
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        Client::try_from(config).map_err(|e| ImageError::Registry {
            reference: String::new(),
            endpoint: self.host.clone(),
            message: format!("cannot build HTTP client: {e}"),
        })
    }
}

/// oci-client's HTTP stack is built without a crypto provider; berth uses ring everywhere.
fn install_crypto_provider() {
    // Fails only when a provider is already installed, which is just as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn is_loopback_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        // `[::1]:5000` or `127.0.0.1:5000`; a bare IPv6 address has more than one colon.
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    if name == "localhost" {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

/// `https://index.docker.io/v1/` → `docker.io`, `http://host:5000/x` → `host:5000`.
fn registry_host_of(key: &str) -> String {
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = without_scheme.split('/').next().unwrap_or(without_scheme);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RegistryMirror;

    fn reference(s: &str) -> Reference {
        s.parse().unwrap()
    }

    #[test]
    fn mirrors_come_first_then_the_registry_itself() {
        let mut registries = RegistriesConfig::default();
        registries.mirrors.insert(
            "docker.io".into(),
            RegistryMirror {
                endpoints: vec![
                    "http://127.0.0.1:5000".into(),
                    "https://mirror.example:443".into(),
                ],
            },
        );
        let auth = RegistryAuth::from_config(&registries);
        let endpoints = auth.endpoints(&reference("busybox")).unwrap();
        let hosts: Vec<_> = endpoints
            .iter()
            .map(|e| (e.host.as_str(), e.plain_http, e.mirror))
            .collect();
        assert_eq!(
            hosts,
            vec![
                ("127.0.0.1:5000", true, true),
                ("mirror.example", false, true),
                ("docker.io", false, false)
            ]
        );
        let mirrored = endpoints[0].reference_for(&reference("busybox"));
        assert_eq!(mirrored.resolve_registry(), "127.0.0.1:5000");
        assert_eq!(mirrored.repository(), "library/busybox");
    }

    #[test]
    fn loopback_registries_without_config_use_plain_http() {
        let auth = RegistryAuth::default();
        assert!(auth.endpoints(&reference("127.0.0.1:5000/a")).unwrap()[0].plain_http);
        assert!(auth.endpoints(&reference("localhost:5000/a")).unwrap()[0].plain_http);
        assert!(!auth.endpoints(&reference("quay.io/a")).unwrap()[0].plain_http);
        let mut registries = RegistriesConfig::default();
        registries
            .configs
            .insert("127.0.0.1:5000".into(), Default::default());
        let configured = RegistryAuth::from_config(&registries);
        assert!(
            !configured
                .endpoints(&reference("127.0.0.1:5000/a"))
                .unwrap()[0]
                .plain_http
        );
    }

    #[test]
    fn pull_secrets_win_over_config_credentials() {
        let mut registries = RegistriesConfig::default();
        registries.configs.insert(
            "reg.example:5000".into(),
            RegistryHostConfig {
                username: Some("node".into()),
                password: Some("n".into()),
                ..Default::default()
            },
        );
        let mut auth = RegistryAuth::from_config(&registries);
        let r = reference("reg.example:5000/app:1");
        assert_eq!(
            auth.endpoints(&r).unwrap()[0]
                .credential
                .as_ref()
                .unwrap()
                .username,
            "node"
        );
        let secret = br#"{"auths":{"https://reg.example:5000/v2/":{"auth":"cG9kOnNlY3JldA=="}}}"#;
        auth.add_docker_config_json(secret).unwrap();
        let c = auth.endpoints(&r).unwrap()[0].credential.clone().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("pod", "secret")
        );
    }

    #[test]
    fn legacy_dockercfg_and_docker_hub_keys_are_understood() {
        let mut auth = RegistryAuth::default();
        auth.add_docker_config_json(
            br#"{"https://index.docker.io/v1/":{"username":"u","password":"p"}}"#,
        )
        .unwrap();
        assert_eq!(auth.pull_secrets["docker.io"].username, "u");
        assert!(auth.add_docker_config_json(b"not json").is_err());
    }
}
