//! `berth secrets-encrypt status|rotate`: shows the Secrets encryption keys, or makes a new
//! primary key and waits for the running server to re-seal every Secret with it (see
//! [`crate::encryption::rotation`] for why the key file is the channel).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};

use super::CommonArgs;
use crate::encryption::rotation::{lock_keys, read_status, KEY_FILE_POLL};
use crate::encryption::{key_file, KeyFile};

#[derive(Debug, Clone, Args)]
pub struct SecretsEncryptArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Action {
    /// Print the keys (names only), the primary and the last finished re-sealing.
    Status,
    /// Make a new primary key and wait until the server has re-sealed every Secret with it. The
    /// server drops the old keys once no stored value (history included) needs them.
    Rotate {
        /// How long to wait for the server, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

pub fn run(args: SecretsEncryptArgs) -> anyhow::Result<ExitCode> {
    let config = args.common.load()?;
    let path = key_file(&config.data_dir);
    match args.action {
        Action::Status => {
            let keys = KeyFile::read(&path)?;
            println!("Encryption: enabled (aesgcm)");
            println!("Primary key: {}", keys.primary());
            let names: Vec<&str> = keys.keys.iter().map(|(name, _)| name.as_str()).collect();
            println!("Keys: {}", names.join(", "));
            match read_status(&config.data_dir) {
                Some(status) if status.primary == keys.primary() => println!(
                    "Re-sealed: {} secrets with {} at {}",
                    status.secrets, status.primary, status.finished_at
                ),
                Some(status) => println!(
                    "Re-sealing: pending (last finished with {} at {})",
                    status.primary, status.finished_at
                ),
                None => println!("Re-sealing: pending (the server has not run yet)"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Action::Rotate { timeout } => {
            // The server may be dropping unused keys from the same file.
            let lock = lock_keys(&config.data_dir, true)?;
            let mut keys = KeyFile::read(&path)
                .with_context(|| "has `berth server` run with this data dir?".to_string())?;
            let name = keys.add_primary()?;
            keys.write(&path)?;
            drop(lock);
            println!("New primary key: {name}");
            let deadline = Instant::now() + Duration::from_secs(timeout);
            while Instant::now() < deadline {
                if let Some(status) = read_status(&config.data_dir).filter(|s| s.primary == name) {
                    println!("Re-sealed {} secrets with {name}", status.secrets);
                    return Ok(ExitCode::SUCCESS);
                }
                std::thread::sleep(KEY_FILE_POLL / 4);
            }
            println!(
                "The server has not re-sealed the secrets yet; it will when it runs \
                 (see `berth secrets-encrypt status`)"
            );
            Ok(ExitCode::from(2))
        }
    }
}
