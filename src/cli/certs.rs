//! `berth certs check|rotate`: certificate expiry at a glance, and rotation on demand.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::CommonArgs;
use crate::pki::{self, CertStatus, Pki};

#[derive(Debug, Clone, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub action: CertsAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum CertsAction {
    /// List the certificates with their expiry and days left; exits 1 if one has expired.
    Check(CommonArgs),
    /// Re-issue the serving and admin certificates now (the CA is kept). A running server picks
    /// them up at its next check and rewrites the kubeconfig.
    Rotate(CommonArgs),
}

pub fn run(args: CertsArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        CertsAction::Check(common) => {
            let config = common.load()?;
            let statuses = pki::cert_statuses(&config.pki_dir())?;
            anyhow::ensure!(
                !statuses.is_empty(),
                "no certificates in {} (has `berth server` run with this data dir?)",
                config.pki_dir().display()
            );
            print!("{}", table(&statuses));
            let expired = statuses.iter().any(|s| s.days_left() < 0);
            Ok(if expired {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        CertsAction::Rotate(common) => {
            let config = common.load()?;
            let policy = config.pki.rotation_policy();
            Pki::rotate_now(&config.pki_dir(), &policy)?;
            print!("{}", table(&pki::cert_statuses(&config.pki_dir())?));
            println!(
                "rotated; a running server presents the new certificates within {}s",
                config.pki.check_interval().as_secs()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn table(statuses: &[CertStatus]) -> String {
    let rows: Vec<[String; 4]> = statuses
        .iter()
        .map(|s| {
            let expires = jiff::Timestamp::from_second(s.not_after_unix)
                .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_else(|_| s.not_after_unix.to_string());
            let days = s.days_left();
            let left = if days < 0 {
                "expired".to_string()
            } else {
                days.to_string()
            };
            [s.name.clone(), expires, left, s.serial.clone()]
        })
        .collect();
    let header = ["NAME", "EXPIRES", "DAYS LEFT", "SERIAL"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_each_certificate_with_its_days_left() {
        let now = jiff::Timestamp::now().as_second();
        let statuses = [
            CertStatus {
                name: "ca".into(),
                path: "ca.crt".into(),
                not_after_unix: now + 10 * 86400 + 60,
                serial: "0a".into(),
            },
            CertStatus {
                name: "apiserver".into(),
                path: "apiserver.crt".into(),
                not_after_unix: now - 60,
                serial: "0b".into(),
            },
        ];
        let text = table(&statuses);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NAME"));
        // NAME, then the date, time and zone of EXPIRES, then DAYS LEFT.
        let ca: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(ca[0], "ca");
        assert_eq!(ca[4], "10");
        assert!(lines[2].contains("expired"));
    }
}
