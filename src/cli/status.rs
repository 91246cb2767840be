//! `berth status`: asks the API server's /readyz with the admin kubeconfig.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

use super::CommonArgs;

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Wait until the API server is ready instead of reporting once.
    #[arg(long)]
    pub wait_ready: bool,
    /// How long --wait-ready waits, in seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let config = args.common.load()?;
    let kubeconfig_path = config.kubeconfig_path();
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    loop {
        let outcome = runtime.block_on(probe(&kubeconfig_path));
        match outcome {
            Ok(()) => {
                println!("berth is ready");
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) if !args.wait_ready || Instant::now() >= deadline => {
                println!("berth is not ready: {e:#}");
                return Ok(ExitCode::FAILURE);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

async fn probe(kubeconfig_path: &std::path::Path) -> anyhow::Result<()> {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig_path).map_err(|e| {
        anyhow::anyhow!("no usable kubeconfig at {}: {e}", kubeconfig_path.display())
    })?;
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?;
    let client = kube::Client::try_from(config)?;
    let request = http::Request::get("/readyz").body(Vec::new())?;
    let text = client.request_text(request).await?;
    anyhow::ensure!(text.trim() == "ok", "/readyz answered {text:?}");
    Ok(())
}
