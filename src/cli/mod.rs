//! Command line: clap definitions turned into a typed [`Config`]. Starts nothing itself.

mod certs;
mod check;
mod datastore;
mod images;
mod reset;
mod secrets_encrypt;
mod status;
mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, LogFormat, DEFAULT_CONFIG_FILE};

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "A whole Kubernetes in one binary, for the edge"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything on this node: API server, store, controllers and agent.
    Server(ServerArgs),
    /// Join a cluster as a worker node and run its pods (`--server URL --token T`).
    Agent(AgentArgs),
    /// Join tokens for worker nodes: create, list, delete.
    Token(token::TokenArgs),
    /// Print the admin kubeconfig.
    Kubeconfig(CommonArgs),
    /// Report whether the API server answers; with --wait-ready, wait until it does.
    Status(status::StatusArgs),
    /// Manage the node's images: import, ls, rm.
    Images(images::ImagesArgs),
    /// Check that this machine can run berth: kernel, cgroups, memory, disk, ports, clock.
    Check(check::CheckArgs),
    /// Stop and remove what a stopped server left on this machine: pods, cgroups, mounts,
    /// network namespaces, veths, the bridge, nftables tables; with --data, the data dir too.
    Reset(reset::ResetArgs),
    /// Show certificate expiry (`check`) or re-issue the certificates now (`rotate`).
    Certs(certs::CertsArgs),
    /// Secrets encryption at rest: `status`, or `rotate` to a new key.
    SecretsEncrypt(secrets_encrypt::SecretsEncryptArgs),
    /// Print the version.
    Version,
}

/// Flags every command that reads local state shares.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Config file (TOML). A missing default file is fine; a missing named one is an error.
    #[arg(long, env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for all state.
    #[arg(long, env = "BERTH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Directory (tmpfs) for the pods' runtime state that a reboot clears.
    #[arg(long, env = "BERTH_RUN_DIR")]
    pub run_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Address for the HTTPS API (port 0 picks a free port).
    #[arg(long)]
    pub api_listen: Option<SocketAddr>,
    /// Node name (default: the hostname).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Static bearer token file (token,user,uid,"groups").
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `berth=debug`.
    #[arg(long)]
    pub log_level: Option<String>,
    #[command(flatten)]
    pub datastore: datastore::DatastoreArgs,
    /// Join the datastore of the server at this URL (`https://HOST:6443`) with a server token
    /// (`--token`, from `berth token create --server`) instead of configuring it here.
    #[arg(long)]
    pub server: Option<String>,
    #[command(flatten)]
    pub discovery: CaDiscoveryArgs,
}

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The API server to join, e.g. https://10.0.0.1:6443.
    #[arg(long, env = "BERTH_URL")]
    pub server: String,
    /// The join token from `berth token create` (not needed once the node has its certificate).
    #[arg(long, env = "BERTH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub discovery: CaDiscoveryArgs,
    /// Node name (default: the hostname).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Log filter, e.g. `info` or `berth=debug`.
    #[arg(long)]
    pub log_level: Option<String>,
}

/// How a joining node or server comes to trust the cluster's CA.
#[derive(Debug, Clone, Default, Args)]
pub struct CaDiscoveryArgs {
    /// The server CA's public key hash, `sha256:<hex>`, as `berth token create` prints it.
    #[arg(long, env = "BERTH_CA_CERT_HASH")]
    pub ca_cert_hash: Option<String>,
    /// Trust the server's CA on the join token's signature of `cluster-info` alone, without a
    /// CA hash: anyone who knows the token can then pose as the server.
    #[arg(long)]
    pub discovery_token_unsafe_skip_ca_verification: bool,
}

impl CommonArgs {
    /// Loads the config file, then lets the flags win.
    pub fn load(&self) -> anyhow::Result<Config> {
        let (path, explicit) = match &self.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        };
        let mut config = Config::load(&path, explicit)?;
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(dir) = &self.run_dir {
            config.run_dir = dir.clone();
        }
        Ok(config)
    }
}

impl ServerArgs {
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut config = self.common.load()?;
        if let Some(listen) = self.api_listen {
            config.api.listen = listen;
        }
        if let Some(name) = &self.node_name {
            config.node.name = Some(name.clone());
        }
        if let Some(file) = &self.token_file {
            config.api.token_file = Some(file.clone());
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
        if let Some(level) = &self.log_level {
            config.log.level = level.clone();
        }
        let mut datastore = self.datastore.clone();
        if self.server.is_some() {
            // The token given is the join token; the servers' shared one comes with the join.
            datastore.token = None;
        } else if self.discovery.ca_cert_hash.is_some()
            || self.discovery.discovery_token_unsafe_skip_ca_verification
        {
            anyhow::bail!(
                "--ca-cert-hash and --discovery-token-unsafe-skip-ca-verification go with --server"
            );
        }
        datastore.apply(&mut config.store);
        Ok(config)
    }

    /// Joins the datastore of the server `--server` names, when it names one.
    async fn join(&self, config: &mut Config) -> anyhow::Result<()> {
        let Some(server_url) = self.server.as_deref() else {
            return Ok(());
        };
        let node_name = config.node_name();
        let request = crate::join::bootstrap::JoinRequest {
            server_url,
            token: self.datastore.token.as_deref(),
            ca_cert_hash: self.discovery.ca_cert_hash.as_deref(),
            unsafe_skip_ca_verification: self.discovery.discovery_token_unsafe_skip_ca_verification,
            node_name: &node_name,
        };
        crate::join::server_join::join(&config.data_dir, &mut config.store, &request).await?;
        Ok(())
    }
}

fn server_runtime(
    config: &crate::config::RuntimeConfig,
) -> std::io::Result<tokio::runtime::Runtime> {
    let env_sets_arena_max = std::env::var_os("MALLOC_ARENA_MAX").is_some();
    if let Some(arenas) = config.malloc_arenas_to_set(env_sets_arena_max) {
        crate::runtime::memory::limit_malloc_arenas(arenas);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = config.worker_threads {
        builder.worker_threads(threads.max(1));
    }
    builder.build()
}

/// Parses argv and runs the command; errors become one line on stderr and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Version => {
            println!("berth version {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Server(args) => {
            let mut config = args.load()?;
            crate::daemon::init_logging(&config.log);
            let runtime = server_runtime(&config.runtime)?;
            runtime.block_on(async {
                args.join(&mut config).await?;
                crate::daemon::run(config).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent(args) => {
            let mut config = args.common.load()?;
            if let Some(name) = &args.node_name {
                config.node.name = Some(name.clone());
            }
            if let Some(level) = &args.log_level {
                config.log.level = level.clone();
            }
            crate::daemon::init_logging(&config.log);
            let runtime = server_runtime(&config.runtime)?;
            let options = crate::join::agent::AgentOptions {
                server_url: args.server.clone(),
                token: args.token.clone(),
                ca_cert_hash: args.discovery.ca_cert_hash.clone(),
                unsafe_skip_ca_verification: args
                    .discovery
                    .discovery_token_unsafe_skip_ca_verification,
            };
            runtime.block_on(crate::join::agent::run(config, options))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(args) => token::run(args),
        Command::Kubeconfig(args) => {
            let config = args.load()?;
            let path = config.kubeconfig_path();
            let text = std::fs::read_to_string(&path).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read {}: {e} (has `berth server` run with this data dir?)",
                    path.display()
                )
            })?;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(args) => status::run(args),
        Command::Images(args) => images::run(args),
        Command::Check(args) => check::run(args),
        Command::Reset(args) => reset::run(args),
        Command::Certs(args) => certs::run(args),
        Command::SecretsEncrypt(args) => secrets_encrypt::run(args),
    }
}
