//! Wires the subsystems: store → API server → controllers and agent, one shutdown signal.

use crate::config::{Config, LogConfig, LogFormat};

/// Sets up `tracing` once for the process.
pub fn init_logging(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    anyhow::bail!(
        "berth server is not wired yet (data dir {})",
        config.data_dir.display()
    )
}
