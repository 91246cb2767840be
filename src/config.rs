//! berth's configuration: plain data read from a TOML file, overridden by flags.
//!
//! Every default lives here, once. `configs/` holds commented examples of the file.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where the config file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/berth/config.toml";
/// Where state lives when `--data-dir` is not given.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/berth";
/// Where runtime state that a reboot clears lives when `--run-dir` is not given (tmpfs).
pub const DEFAULT_RUN_DIR: &str = "/run/berth";

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Root of all state: `berth.redb`, `pki/`, `images/`, `pods/`, `logs/`.
    pub data_dir: PathBuf,
    /// Root of the pods' runtime state that a reboot makes meaningless (libcontainer's state,
    /// shim sockets): each data dir gets its own share, see [`Config::pods_run_dir`].
    pub run_dir: PathBuf,
    pub api: ApiConfig,
    pub node: NodeConfig,
    pub network: NetworkConfig,
    pub store: StoreConfig,
    pub log: LogConfig,
    pub registries: RegistriesConfig,
    pub ingress: IngressConfig,
    pub controllers: ControllersConfig,
    pub pki: PkiConfig,
    pub runtime: RuntimeConfig,
    pub images: ImagesConfig,
    pub eviction: EvictionConfig,
    pub audit: AuditConfig,
    pub pod_security: PodSecurityConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            run_dir: PathBuf::from(DEFAULT_RUN_DIR),
            api: ApiConfig::default(),
            node: NodeConfig::default(),
            network: NetworkConfig::default(),
            store: StoreConfig::default(),
            log: LogConfig::default(),
            registries: RegistriesConfig::default(),
            ingress: IngressConfig::default(),
            controllers: ControllersConfig::default(),
            pki: PkiConfig::default(),
            runtime: RuntimeConfig::default(),
            images: ImagesConfig::default(),
            eviction: EvictionConfig::default(),
            audit: AuditConfig::default(),
            pod_security: PodSecurityConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Address the HTTPS API listens on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Largest request body accepted; bigger ones get 413.
    pub max_body_bytes: usize,
    /// Static bearer tokens, one `token,user,uid,"group1,group2"` line each (kube-apiserver's format).
    pub token_file: Option<PathBuf>,
    /// The cluster's API endpoint as nodes should reach it (`https://name:6443`: a load
    /// balancer, a virtual IP or a DNS name of every server), published in `cluster-info`.
    /// Unset, the first server on a datastore publishes its own address and the others keep it.
    pub advertise_url: Option<String>,
    /// Events are deleted this long after they were last seen (kube-apiserver's `--event-ttl`,
    /// an hour by default); 0 keeps them forever.
    pub event_ttl_seconds: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 6443),
            max_body_bytes: 3 * 1024 * 1024,
            token_file: None,
            advertise_url: None,
            event_ttl_seconds: 3600,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Node name; the hostname when unset.
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    pub pod_cidr: String,
    pub service_cidr: String,
    pub dns_ip: Ipv4Addr,
    pub bridge: String,
    pub cluster_domain: String,
    pub node_port_range: (u16, u16),
    /// Upstream resolvers for names outside the cluster; empty means the host's resolv.conf.
    pub upstream_dns: Vec<SocketAddr>,
    /// How pods reach other nodes' pods: `auto`, `host-gw` or `vxlan`.
    pub backend: crate::network::routes::Backend,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            pod_cidr: "10.42.0.0/16".into(),
            service_cidr: "10.43.0.0/16".into(),
            dns_ip: Ipv4Addr::new(10, 43, 0, 10),
            bridge: "berth0".into(),
            cluster_domain: "cluster.local".into(),
            node_port_range: (30000, 32767),
            upstream_dns: Vec::new(),
            backend: Default::default(),
        }
    }
}

/// The built-in Ingress controller: an HTTP(S) reverse proxy on the node's own ports.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngressConfig {
    pub enabled: bool,
    pub http_port: u16,
    pub https_port: u16,
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            enabled: true,
            http_port: 80,
            https_port: 443,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// How many revisions of history are kept for watches to resume from.
    pub history_revisions: u64,
    /// Per-watcher event buffer; a watcher that falls this far behind is dropped and must re-list.
    pub watch_buffer: usize,
    /// etcd v3 endpoints (`https://host:2379`, comma-separated on the command line); empty keeps
    /// the embedded redb store. Several servers on one etcd share the cluster (HA).
    pub datastore_endpoint: Vec<String>,
    /// CA that signed the etcd servers' certificates.
    pub datastore_cafile: Option<PathBuf>,
    /// Client certificate and key berth presents to etcd.
    pub datastore_certfile: Option<PathBuf>,
    pub datastore_keyfile: Option<PathBuf>,
    /// Key prefix of every object in etcd (upstream's and kine's).
    pub datastore_prefix: String,
    /// Secret shared by the servers on one etcd: the first seals the cluster's CAs and keys
    /// with it into the datastore, the others open them from there (k3s's server token).
    pub token: Option<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            history_revisions: 10_000,
            watch_buffer: 1024,
            datastore_endpoint: Vec::new(),
            datastore_cafile: None,
            datastore_certfile: None,
            datastore_keyfile: None,
            datastore_prefix: "/registry".to_owned(),
            token: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControllersConfig {
    /// How often the node lifecycle controller looks at node heartbeats.
    pub node_monitor_period_seconds: u64,
    /// A node whose heartbeat is older than this is marked Ready=Unknown and tainted unreachable.
    pub node_monitor_grace_period_seconds: u64,
    /// Finished pods beyond this many are deleted, oldest first. Upstream's 12500 is far more than
    /// a small device should keep.
    pub terminated_pod_gc_threshold: usize,
    /// How often finished and orphaned pods are looked for.
    pub pod_gc_period_seconds: u64,
}

impl Default for ControllersConfig {
    fn default() -> Self {
        ControllersConfig {
            node_monitor_period_seconds: 5,
            node_monitor_grace_period_seconds: 40,
            terminated_pod_gc_threshold: 1000,
            pod_gc_period_seconds: 20,
        }
    }
}

/// Pod Security Admission's cluster defaults, for namespaces without the
/// `pod-security.kubernetes.io/*` labels: privileged, baseline or restricted.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PodSecurityConfig {
    pub enforce: String,
    pub audit: String,
    pub warn: String,
    /// Namespaces no pod security level applies to (berth's own pods live in kube-system).
    pub exempt_namespaces: Vec<String>,
    /// Users whose pod writes are never checked (say, a trusted operator's account).
    pub exempt_usernames: Vec<String>,
    /// Pods with one of these `runtimeClassName`s are never checked.
    pub exempt_runtime_classes: Vec<String>,
}

impl Default for PodSecurityConfig {
    fn default() -> Self {
        PodSecurityConfig {
            enforce: "baseline".into(),
            audit: "restricted".into(),
            warn: "restricted".into(),
            exempt_namespaces: vec!["kube-system".into()],
            exempt_usernames: Vec::new(),
            exempt_runtime_classes: Vec::new(),
        }
    }
}

/// The audit log: an `audit.k8s.io/v1` Policy file (default: the metadata of every write) and
/// a size-rotated JSON-lines file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    pub policy_file: Option<PathBuf>,
    /// Default: `<data-dir>/audit/audit.log`.
    pub log_path: Option<PathBuf>,
    pub max_size_mb: u64,
    pub max_backups: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            policy_file: None,
            log_path: None,
            max_size_mb: 20,
            max_backups: 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `berth=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Registry mirrors and credentials, shaped like k3s's registries.yaml.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistriesConfig {
    pub mirrors: BTreeMap<String, RegistryMirror>,
    pub configs: BTreeMap<String, RegistryHostConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryMirror {
    /// Tried in order, e.g. `http://127.0.0.1:5000`.
    pub endpoints: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryHostConfig {
    pub insecure_skip_verify: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
}

/// Certificate lifetimes and rotation (the CA is not rotated: it lives 10 years).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PkiConfig {
    /// Lifetime of the serving and client certificates berth issues.
    pub cert_validity_days: u64,
    /// Certificates with less than this left are re-issued.
    pub rotate_before_days: u64,
    /// A certificate this close to expiry (one rotation could not replace) is reported by a log
    /// line and a Warning event.
    pub warn_before_days: u64,
    /// How often expiry and the files on disk (`berth certs rotate`) are checked.
    pub check_interval_seconds: u64,
    /// For tests: overrides `cert_validity_days` with seconds.
    pub cert_validity_seconds: Option<u64>,
    /// For tests: overrides `rotate_before_days` with seconds.
    pub rotate_before_seconds: Option<u64>,
    /// Lifetime of the node client certificates signed for joined agents (upstream's
    /// `--cluster-signing-duration`); default a year. Agents renew theirs at 70-90 % of it.
    pub node_cert_validity_seconds: Option<u64>,
}

impl Default for PkiConfig {
    fn default() -> Self {
        PkiConfig {
            cert_validity_days: 365,
            rotate_before_days: 90,
            warn_before_days: 30,
            check_interval_seconds: 60,
            cert_validity_seconds: None,
            rotate_before_seconds: None,
            node_cert_validity_seconds: None,
        }
    }
}

impl PkiConfig {
    pub fn rotation_policy(&self) -> crate::pki::RotationPolicy {
        let days = |d: u64| Duration::from_secs(d.saturating_mul(24 * 3600));
        crate::pki::RotationPolicy {
            validity: self
                .cert_validity_seconds
                .map_or_else(|| days(self.cert_validity_days), Duration::from_secs),
            renew_before: self
                .rotate_before_seconds
                .map_or_else(|| days(self.rotate_before_days), Duration::from_secs),
        }
    }

    pub fn node_cert_validity(&self) -> Duration {
        Duration::from_secs(self.node_cert_validity_seconds.unwrap_or(365 * 24 * 3600))
    }

    pub fn warn_before(&self) -> Duration {
        Duration::from_secs(self.warn_before_days.saturating_mul(24 * 3600))
    }

    pub fn check_interval(&self) -> Duration {
        // Zero would spin.
        Duration::from_secs(self.check_interval_seconds.max(1))
    }
}

/// The async runtime the server runs on.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Tokio worker threads; unset means one per CPU. Each idle worker still holds its stack
    /// and allocator arenas, so a 512 MB device does well with 1 or 2.
    pub worker_threads: Option<usize>,
    /// glibc malloc arenas; unset means [`DEFAULT_MALLOC_ARENAS`], or glibc's own
    /// `MALLOC_ARENA_MAX` when the environment sets it; 0 keeps glibc's default (up to 8 per
    /// core). Memory freed in one arena is not reused by threads of another, so few arenas
    /// keep the heap compact under churn.
    pub malloc_arenas: Option<usize>,
}

/// Two arenas: after 90 create/delete cycles of pods berth's RSS was 5 MiB lower with them than
/// with glibc's default, at the same time per cycle.
pub const DEFAULT_MALLOC_ARENAS: usize = 2;

impl RuntimeConfig {
    /// The arena cap to set, if any, given whether the environment sets `MALLOC_ARENA_MAX`
    /// (which glibc applies by itself).
    pub fn malloc_arenas_to_set(&self, env_sets_arena_max: bool) -> Option<usize> {
        match self.malloc_arenas {
            Some(0) => None,
            Some(arenas) => Some(arenas),
            None if env_sets_arena_max => None,
            None => Some(DEFAULT_MALLOC_ARENAS),
        }
    }
}

/// The node's image store.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesConfig {
    /// Image archives (`docker save`, OCI layout `.tar`) in this directory are imported at
    /// every start: for sites without a registry.
    pub import_dir: Option<PathBuf>,
    /// Image garbage collection starts when the image filesystem is this full (percent; 100
    /// turns it off), as kubelet's `imageGCHighThresholdPercent`...
    pub gc_high_threshold_percent: u8,
    /// ... and deletes unused images, least recently used first, until it is below this one
    /// (`imageGCLowThresholdPercent`).
    pub gc_low_threshold_percent: u8,
    /// An image unused for less than this is never collected (`imageMinimumGCAge`).
    pub gc_minimum_age_seconds: u64,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            import_dir: None,
            gc_high_threshold_percent: 85,
            gc_low_threshold_percent: 80,
            gc_minimum_age_seconds: 120,
        }
    }
}

/// Node-pressure eviction, as kubelet's `evictionHard`, `evictionSoft`,
/// `evictionSoftGracePeriod` and `evictionPressureTransitionPeriod`. Signals:
/// `memory.available`, `nodefs.available`, `nodefs.inodesFree`, `imagefs.available`,
/// `imagefs.inodesFree`; values are quantities (`100Mi`) or percentages of capacity (`10%`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvictionConfig {
    /// Crossing one of these evicts at once.
    pub hard: BTreeMap<String, String>,
    /// Crossing one of these evicts only after it stayed crossed for its grace period.
    pub soft: BTreeMap<String, String>,
    pub soft_grace_period_seconds: BTreeMap<String, u64>,
    /// A pressure condition stays True this long after the signal recovered, so the node
    /// does not flap in and out of pressure.
    pub pressure_transition_period_seconds: u64,
    /// How often the signals are read.
    pub monitoring_interval_seconds: u64,
}

impl Default for EvictionConfig {
    fn default() -> Self {
        let hard = [
            ("memory.available", "100Mi"),
            ("nodefs.available", "10%"),
            ("nodefs.inodesFree", "5%"),
            ("imagefs.available", "15%"),
        ];
        EvictionConfig {
            hard: hard
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            soft: BTreeMap::new(),
            soft_grace_period_seconds: BTreeMap::new(),
            pressure_transition_period_seconds: 300,
            monitoring_interval_seconds: 10,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
}

impl Config {
    /// Reads `path`. A missing file is only an error when the user named it explicitly.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text).map_err(|source| ConfigError::Parse {
                path: path.to_owned(),
                source: Box::new(source),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("berth.redb")
    }

    pub fn audit_log_path(&self) -> PathBuf {
        self.audit
            .log_path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("audit").join("audit.log"))
    }

    pub fn pki_dir(&self) -> PathBuf {
        self.data_dir.join("pki")
    }

    pub fn kubeconfig_path(&self) -> PathBuf {
        self.data_dir.join("kubeconfig.yaml")
    }

    /// This data dir's share of the run dir, where its pods' run dirs are: servers with other
    /// data dirs on the machine have their own.
    pub fn pods_run_dir(&self) -> PathBuf {
        crate::runtime::layout::pods_run_dir(&self.run_dir, &self.data_dir)
    }

    /// The node's name: configured, or the hostname.
    pub fn node_name(&self) -> String {
        if let Some(name) = &self.node.name {
            return name.clone();
        }
        hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .map(|h| h.to_lowercase())
            .unwrap_or_else(|| "berth".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/berth"));
        assert_eq!(c.run_dir, PathBuf::from("/run/berth"));
        assert_eq!(c.api.listen.port(), 6443);
        assert_eq!(c.network.dns_ip, Ipv4Addr::new(10, 43, 0, 10));
        assert_eq!(c.api.max_body_bytes, 3 * 1024 * 1024);
    }

    #[test]
    fn registry_mirrors_parse_in_the_k3s_shape() {
        let c = Config::parse(
            r#"
[registries.mirrors."docker.io"]
endpoints = ["http://127.0.0.1:5000"]
[registries.configs."127.0.0.1:5000"]
insecure_skip_verify = true
"#,
        )
        .unwrap();
        assert_eq!(
            c.registries.mirrors["docker.io"].endpoints,
            vec!["http://127.0.0.1:5000"]
        );
        assert!(c.registries.configs["127.0.0.1:5000"].insecure_skip_verify);
    }

    #[test]
    fn the_commented_example_config_parses_to_the_defaults() {
        let text = include_str!("../configs/berth.toml");
        let c = Config::parse(text).unwrap();
        let d = Config::default();
        assert_eq!(c.data_dir, d.data_dir);
        assert_eq!(c.run_dir, d.run_dir);
        assert_eq!(c.api.listen, d.api.listen);
        assert_eq!(c.api.max_body_bytes, d.api.max_body_bytes);
        assert_eq!(c.network.pod_cidr, d.network.pod_cidr);
        assert_eq!(c.network.node_port_range, d.network.node_port_range);
        assert_eq!(c.store.history_revisions, d.store.history_revisions);
        assert_eq!(c.log.format, d.log.format);
        assert_eq!(c.pki.rotation_policy(), d.pki.rotation_policy());
        assert_eq!(c.pki.check_interval(), d.pki.check_interval());
        assert_eq!(c.runtime.worker_threads, d.runtime.worker_threads);
        assert_eq!(c.images.import_dir, d.images.import_dir);
    }

    #[test]
    fn malloc_arenas_default_to_two_unless_set_here_or_in_the_environment() {
        let with = |arenas| RuntimeConfig {
            malloc_arenas: arenas,
            ..RuntimeConfig::default()
        };
        assert_eq!(with(None).malloc_arenas_to_set(false), Some(2));
        assert_eq!(with(None).malloc_arenas_to_set(true), None);
        assert_eq!(with(Some(4)).malloc_arenas_to_set(true), Some(4));
        assert_eq!(with(Some(0)).malloc_arenas_to_set(false), None);
    }

    #[test]
    fn the_example_profiles_parse_with_no_unknown_keys() {
        let parse = |name: &str, text: &str| {
            Config::parse(text).unwrap_or_else(|e| panic!("configs/{name}.toml: {e}"))
        };
        let pi = parse("pi-512mb", include_str!("../configs/pi-512mb.toml"));
        assert_eq!(pi.runtime.worker_threads, Some(1));
        // The default arena cap is already the one a 512 MB board wants.
        assert_eq!(
            pi.runtime.malloc_arenas_to_set(false),
            Some(DEFAULT_MALLOC_ARENAS)
        );
        assert!(pi.store.history_revisions < StoreConfig::default().history_revisions);
        assert!(pi.store.watch_buffer < StoreConfig::default().watch_buffer);

        let workstation = parse("workstation", include_str!("../configs/workstation.toml"));
        assert!(workstation.api.listen.ip().is_loopback());

        let airgap = parse("airgap", include_str!("../configs/airgap.toml"));
        assert!(airgap.registries.mirrors.contains_key("docker.io"));
        assert!(airgap.images.import_dir.is_some());
        let policy = airgap.pki.rotation_policy();
        assert!(policy.validity > policy.renew_before);
    }

    #[test]
    fn pki_defaults_are_one_year_renewed_90_days_ahead() {
        let policy = Config::default().pki.rotation_policy();
        assert_eq!(policy, crate::pki::RotationPolicy::default());
        assert_eq!(policy.validity, Duration::from_secs(365 * 86400));
        assert_eq!(policy.renew_before, Duration::from_secs(90 * 86400));
        let test =
            Config::parse("[pki]\ncert_validity_seconds = 3600\nrotate_before_seconds = 7200")
                .unwrap()
                .pki
                .rotation_policy();
        assert_eq!(test.validity, Duration::from_secs(3600));
        assert_eq!(test.renew_before, Duration::from_secs(7200));
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = Config::parse("nope = 1").unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }
}
