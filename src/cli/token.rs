//! `berth token create|list|delete`: join tokens, kept by the running server as upstream keeps
//! them (Secrets `bootstrap-token-<id>` in kube-system), managed through its API with the admin
//! kubeconfig in the data dir, so the store is never written behind the server's back.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use super::CommonArgs;
use crate::join::token::{self, BootstrapToken};

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum TokenCommand {
    /// Create a join token; prints the join command, then the token alone on the last line.
    Create(CreateArgs),
    /// List the join tokens.
    List(CommonArgs),
    /// Delete a join token by its id (or the whole token).
    Delete(DeleteArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// How long the token is valid (`24h`, `30m`, ...); `0` never expires.
    #[arg(long, default_value = "24h")]
    pub ttl: String,
    /// A note for `berth token list`.
    #[arg(long, default_value = "")]
    pub description: String,
    /// A token for another server to join this one's datastore with (`berth server --server
    /// URL --token T`). It reads the datastore's address and credentials: keep it as safe as
    /// the servers themselves.
    #[arg(long)]
    pub server: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The token's id (`abcdef`) or the token itself.
    pub id: String,
}

/// `24h`, `90m`, `1h30m`, `45s`, `0`: a duration in whole seconds; 0 means no expiry.
pub fn parse_ttl(text: &str) -> anyhow::Result<u64> {
    if text.trim() == "0" {
        return Ok(0);
    }
    let duration: jiff::SignedDuration = text
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("bad --ttl {text:?} (try 24h or 30m): {e}"))?;
    anyhow::ensure!(!duration.is_negative(), "--ttl must not be negative");
    Ok(duration.as_secs() as u64)
}

pub fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match args.command {
            TokenCommand::Create(args) => create(args).await,
            TokenCommand::List(common) => list(common).await,
            TokenCommand::Delete(args) => delete(args).await,
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn admin_client(
    common: &CommonArgs,
) -> anyhow::Result<(kube::Client, String, crate::config::Config)> {
    let config = common.load()?;
    let path = config.kubeconfig_path();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read {}: {e} (has `berth server` run with this data dir?)",
            path.display()
        )
    })?;
    let options = kube::config::KubeConfigOptions::default();
    let client_config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?;
    let url = client_config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string();
    Ok((kube::Client::try_from(client_config)?, url, config))
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let ttl = parse_ttl(&args.ttl)?;
    let (client, url, config) = admin_client(&args.common).await?;
    let ca_path = config.pki_dir().join(crate::pki::CA_CERT);
    let ca = std::fs::read_to_string(&ca_path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", ca_path.display()))?;
    let hash = token::ca_cert_hash(&ca)?;
    let token = BootstrapToken::generate();
    let expires =
        (ttl > 0).then(|| jiff::Timestamp::now() + jiff::SignedDuration::from_secs(ttl as i64));
    let expiration = expires.map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    let (group, what, command) = match args.server {
        true => (token::SERVER_TOKEN_GROUP, "server", "server"),
        false => (token::NODE_TOKEN_GROUP, "node", "agent"),
    };
    let secret: Secret =
        serde_json::from_value(token.to_secret(&args.description, expiration.as_deref(), group))?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), token::NAMESPACE);
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .map_err(|e| anyhow::anyhow!("cannot store the token: {e}"))?;
    wait_until_signed(client, &token, expires).await?;
    println!("Join a {what} with:");
    println!("  berth {command} --server {url} --token {token} --ca-cert-hash {hash}");
    println!("(use an address of this server the node can reach)");
    println!("{token}");
    Ok(())
}

/// How long `create` waits for the server to sign `cluster-info` for a new token.
const SIGNING_PATIENCE: Duration = Duration::from_secs(30);

/// Waits until the server's bootstrap signer has signed `cluster-info` for `token`: a joining
/// node takes a missing signature for a token the server does not know, and is refused at once.
async fn wait_until_signed(
    client: kube::Client,
    token: &BootstrapToken,
    expires: Option<jiff::Timestamp>,
) -> anyhow::Result<()> {
    use crate::join::server::{CLUSTER_INFO, PUBLIC_NAMESPACE};
    let maps: Api<ConfigMap> = Api::namespaced(client, PUBLIC_NAMESPACE);
    let key = format!("{}{}", crate::join::cluster_info_jws::JWS_PREFIX, token.id);
    let deadline = tokio::time::Instant::now() + SIGNING_PATIENCE;
    loop {
        let info = maps
            .get_opt(CLUSTER_INFO)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read {PUBLIC_NAMESPACE}/{CLUSTER_INFO}: {e}"))?;
        if info
            .and_then(|info| info.data)
            .is_some_and(|data| data.contains_key(&key))
        {
            return Ok(());
        }
        // A token that expires before it is signed is never signed; it is refused anyway.
        if expires.is_some_and(|at| at <= jiff::Timestamp::now()) {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the server has not signed {PUBLIC_NAMESPACE}/{CLUSTER_INFO} for token {} within {}s; \
             nodes are refused with it until it does (is the server healthy?)",
            token.id,
            SIGNING_PATIENCE.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn list(common: CommonArgs) -> anyhow::Result<()> {
    let (client, _, _) = admin_client(&common).await?;
    let secrets: Api<Secret> = Api::namespaced(client, token::NAMESPACE);
    let listed = secrets.list(&ListParams::default()).await?;
    println!(
        "{:<24} {:<10} {:<22} DESCRIPTION",
        "TOKEN", "TTL", "EXPIRES"
    );
    let now = jiff::Timestamp::now();
    for secret in listed
        .items
        .iter()
        .filter(|s| s.type_.as_deref() == Some(token::SECRET_TYPE))
    {
        let value = serde_json::to_value(secret)?;
        let field = |key: &str| token::secret_field(&value, key).unwrap_or_default();
        let expires = field("expiration");
        let ttl = match expires.parse::<jiff::Timestamp>() {
            Ok(at) if at <= now => "expired".to_string(),
            Ok(at) => format!("{}h", (at.as_second() - now.as_second()) / 3600),
            Err(_) => "<forever>".to_string(),
        };
        let expires = if expires.is_empty() {
            "<never>".to_string()
        } else {
            expires
        };
        let token = format!("{}.{}", field("token-id"), field("token-secret"));
        println!(
            "{token:<24} {ttl:<10} {expires:<22} {}",
            field("description")
        );
    }
    Ok(())
}

async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let id = args.id.split('.').next().unwrap_or_default().to_string();
    let (client, _, _) = admin_client(&args.common).await?;
    let secrets: Api<Secret> = Api::namespaced(client, token::NAMESPACE);
    let name = format!("{}{id}", token::SECRET_PREFIX);
    match secrets.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {
            println!("token {id} deleted");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => {
            anyhow::bail!("token {id} not found")
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_as_durations_and_zero_is_forever() {
        assert_eq!(parse_ttl("24h").unwrap(), 86_400);
        assert_eq!(parse_ttl("1h30m").unwrap(), 5_400);
        assert_eq!(parse_ttl("45s").unwrap(), 45);
        assert_eq!(parse_ttl("0").unwrap(), 0);
        assert!(parse_ttl("soon").is_err());
        assert!(parse_ttl("-1h").is_err());
    }
}
