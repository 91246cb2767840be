//! `berth images import|ls|rm|pull`: the node's image store, usable while the server runs
//! (the store's file locks keep concurrent writers apart).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::CommonArgs;
use crate::runtime::images::{Image, ImageStore, PullPolicy, RegistryAuth};

#[derive(Debug, Clone, Args)]
pub struct ImagesArgs {
    #[command(subcommand)]
    pub command: ImagesCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ImagesCommand {
    /// Import an OCI archive or docker-archive (.tar, .tar.gz, .tar.zst).
    Import {
        #[command(flatten)]
        common: CommonArgs,
        file: PathBuf,
    },
    /// List images.
    Ls {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Remove an image reference (or an image by id) and content nothing else uses.
    Rm {
        #[command(flatten)]
        common: CommonArgs,
        reference: String,
    },
    /// Pull an image from its registry or mirrors, as the node would.
    #[command(hide = true)]
    Pull {
        #[command(flatten)]
        common: CommonArgs,
        reference: String,
        /// Pull even if present.
        #[arg(long)]
        always: bool,
    },
}

pub fn run(args: ImagesArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ImagesCommand::Import { common, file } => {
            let (store, _) = open(&common)?;
            for image in store.import_archive(&file)? {
                println!("imported {} ({})", image.reference, short(&image.id));
            }
        }
        ImagesCommand::Ls { common } => {
            let (store, _) = open(&common)?;
            print!("{}", table(&store.list()?));
        }
        ImagesCommand::Rm { common, reference } => {
            let (store, _) = open(&common)?;
            store.remove(&reference)?;
            println!("removed {reference}");
        }
        ImagesCommand::Pull {
            common,
            reference,
            always,
        } => {
            let (store, auth) = open(&common)?;
            let policy = if always {
                PullPolicy::Always
            } else {
                PullPolicy::IfNotPresent
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (image, report) = runtime.block_on(store.ensure(&reference, policy, &auth))?;
            match report {
                Some(r) => println!(
                    "pulled {} ({}, {} downloaded in {:.1}s)",
                    image.reference,
                    image.digest,
                    human_size(r.bytes),
                    r.duration.as_secs_f64()
                ),
                None => println!("present {} ({})", image.reference, image.digest),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn open(common: &CommonArgs) -> anyhow::Result<(ImageStore, RegistryAuth)> {
    let config = common.load()?;
    let store = ImageStore::open(&config.data_dir.join("images"))?;
    Ok((store, RegistryAuth::from_config(&config.registries)))
}

/// 12 hex digits, as `docker images` shows ids.
fn short(digest: &str) -> &str {
    let hex = digest.rsplit(':').next().unwrap_or(digest);
    hex.get(..12).unwrap_or(hex)
}

fn table(images: &[Image]) -> String {
    let rows: Vec<[String; 3]> = images
        .iter()
        .map(|i| {
            let digest = i.digest.rsplit('@').next().unwrap_or(&i.digest);
            [
                i.reference.clone(),
                short(digest).to_string(),
                human_size(i.size),
            ]
        })
        .collect();
    let header = [
        "REFERENCE".to_string(),
        "DIGEST".to_string(),
        "SIZE".to_string(),
    ];
    let width = |col: usize| {
        std::iter::once(&header)
            .chain(&rows)
            .map(|r| r[col].len())
            .max()
            .unwrap_or(0)
    };
    let (w0, w1) = (width(0), width(1));
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        out.push_str(&format!("{:<w0$}   {:<w1$}   {}\n", row[0], row[1], row[2]));
    }
    out
}

/// Decimal units, as `crictl images` prints them.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_in_decimal_units() {
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_234_567), "1.2MB");
    }

    #[test]
    fn the_table_aligns_columns_and_shortens_digests() {
        let image = Image {
            reference: "docker.io/library/busybox:latest".into(),
            id: format!("sha256:{}", "c".repeat(64)),
            digest: format!("docker.io/library/busybox@sha256:{}", "ab".repeat(32)),
            layers: vec![],
            config: Default::default(),
            size: 1_100_000,
        };
        let text = table(&[image]);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!("{:<32}   DIGEST         SIZE", "REFERENCE")
        );
        assert_eq!(
            lines[1],
            "docker.io/library/busybox:latest   abababababab   1.1MB"
        );
    }
}
