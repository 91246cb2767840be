//! `berth reset`: removes what a stopped berth server left running or configured on this
//! machine for one data dir, like k3s' killall script: pod shims and their containers, pod
//! cgroups, mounts under the data dir, the data dir's share of the run dir, pod network
//! namespace pins, veths, the bridge and berth's nftables tables. The store, PKI and images
//! stay unless `--data` is given, so a plain reset followed by `berth server` brings the
//! cluster's pods back from scratch; `--data` removes the whole data dir (the cluster's state
//! is gone for good).
//!
//! It only touches what belongs to the data dir it is given (pods listed in its `pods/`
//! directory or its share of the run dir), so servers with other data dirs on the same
//! machine are left alone; the bridge and the nftables tables are those of the network
//! namespace it runs in. Idempotent: a second run finds nothing and says so.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::CommonArgs;
use crate::network::links::Netlink;
use crate::network::{netns, veth_name, NodeNetwork, NodeNetworkConfig};
use crate::runtime::cgroups;
use crate::runtime::layout::{PodPaths, DATA_DIR_LINK};

/// berth's nftables tables, family `ip`: the masquerade and service proxy table, network
/// policies, host ports.
const NFT_TABLES: [&str; 3] = [
    crate::network::nft::TABLE,
    crate::network::policy::render::TABLE,
    crate::network::policy::hostports::TABLE,
];

#[derive(Debug, Clone, Args)]
pub struct ResetArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Also delete the data dir: the store (every object of the cluster), PKI, images, logs.
    #[arg(long)]
    pub data: bool,
}

pub fn run(args: ResetArgs) -> anyhow::Result<ExitCode> {
    let config = args.common.load()?;
    let data_dir = config.data_dir.clone();
    refuse_if_server_running(&config.store_path())?;
    let mut report = Report::default();

    // Run through `ip netns exec`, this process may see no cgroup hierarchies at all.
    crate::agent::pods::ensure_cgroupfs_visible();
    let pods_dir = data_dir.join("pods");
    let pods_run_dir = config.pods_run_dir();
    let mut pod_uids = list_names(&pods_dir);
    // A pod whose dir is gone may still have a run dir (and a shim) left.
    pod_uids.extend(
        list_names(&pods_run_dir)
            .into_iter()
            .filter(|name| name != DATA_DIR_LINK),
    );
    pod_uids.sort();
    pod_uids.dedup();
    for uid in &pod_uids {
        stop_pod(
            &pods_dir.join(uid),
            &pods_run_dir.join(uid),
            uid,
            &mut report,
        );
    }

    for mount in mounts_under(&data_dir).into_iter().rev() {
        match nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => report.did(format!("unmounted {}", mount.display())),
            Err(e) => report.failed(format!("unmount {}: {e}", mount.display())),
        }
    }

    let network = NodeNetworkConfig::from_config(&config)
        .context("cannot work out the node network settings")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(reset_network(&network, &mut report))?;

    for uid in &pod_uids {
        let dir = pods_dir.join(uid);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => report.did(format!("removed pod state {}", dir.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => report.failed(format!("remove {}: {e}", dir.display())),
        }
    }
    match std::fs::remove_dir_all(&pods_run_dir) {
        Ok(()) => report.did(format!("removed run dir {}", pods_run_dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => report.failed(format!("remove {}: {e}", pods_run_dir.display())),
    }
    if args.data && data_dir.exists() {
        match std::fs::remove_dir_all(&data_dir) {
            Ok(()) => report.did(format!("removed data dir {}", data_dir.display())),
            Err(e) => report.failed(format!("remove {}: {e}", data_dir.display())),
        }
    }

    if report.done == 0 && report.failures == 0 {
        println!("nothing to remove for {}", data_dir.display());
    }
    if report.failures > 0 {
        anyhow::bail!("{} item(s) could not be removed", report.failures);
    }
    Ok(ExitCode::SUCCESS)
}

/// What was done, printed as it happens.
#[derive(Default)]
struct Report {
    done: usize,
    failures: usize,
}

impl Report {
    fn did(&mut self, what: String) {
        self.done += 1;
        println!("{what}");
    }

    fn failed(&mut self, what: String) {
        self.failures += 1;
        eprintln!("berth reset: cannot {what}");
    }
}

/// The server holds its store open (and locked) for as long as it runs: a store that opens is
/// a server that is not running.
fn refuse_if_server_running(store: &Path) -> anyhow::Result<()> {
    if !store.exists() {
        return Ok(());
    }
    match redb::Database::open(store) {
        Ok(db) => {
            drop(db);
            Ok(())
        }
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => anyhow::bail!(
            "a berth server is running with this data dir (its store {} is locked); stop it first",
            store.display()
        ),
        // A damaged store is no reason not to clean up the machine.
        Err(_) => Ok(()),
    }
}

/// Kills the pod's shim, then every process left in its cgroups, then removes the cgroups.
fn stop_pod(state_dir: &Path, run_dir: &Path, uid: &str, report: &mut Report) {
    // The pid file is where the pod config says (a shim from before run dirs keeps it in the
    // pod's dir), or in this data dir's share of the run dir.
    let paths =
        PodPaths::recorded(state_dir).unwrap_or_else(|| PodPaths::new(state_dir, Some(run_dir)));
    if let Some(pid) = paths.live_shim_pid() {
        if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
            report.did(format!("killed the shim of pod {uid} (pid {pid})"));
        }
    }
    let cgroup = cgroups::pod_cgroup_parent(uid);
    let killed = cgroups::kill_tree(&cgroup, cgroups::DRAIN).unwrap_or_default();
    if killed > 0 {
        report.did(format!(
            "killed {killed} container process(es) of pod {uid}"
        ));
    }
    if cgroups::exists_anywhere(&cgroup).unwrap_or(false) {
        match cgroups::remove_tree(&cgroup) {
            Ok(()) => report.did(format!("removed cgroup {cgroup}")),
            Err(e) => report.failed(format!("remove cgroup {cgroup}: {e}")),
        }
    }
}

/// Pod netns pins and their veths, the bridge with whatever is still attached, berth's nft
/// tables; then the network's own bookkeeping (address leases).
async fn reset_network(config: &NodeNetworkConfig, report: &mut Report) -> anyhow::Result<()> {
    let host = Netlink::here()?;
    let network = NodeNetwork::new(config.clone());
    let netns_dir = network.netns_dir();
    for uid in list_names(&netns_dir) {
        let veth = veth_name(&uid);
        match host.delete_link(&veth).await {
            Ok(true) => report.did(format!("deleted veth {veth}")),
            Ok(false) => {}
            Err(e) => report.failed(format!("delete veth {veth}: {e}")),
        }
        let pin = network.netns_path(&uid);
        match netns::remove(&pin) {
            Ok(()) => report.did(format!("removed network namespace pin {}", pin.display())),
            Err(e) => report.failed(format!("remove {}: {e}", pin.display())),
        }
    }
    if let Some(bridge) = host.link_index(&config.bridge).await? {
        for port in host.bridge_ports(bridge).await? {
            match host.delete_link(&port).await {
                Ok(_) => report.did(format!("deleted veth {port}")),
                Err(e) => report.failed(format!("delete veth {port}: {e}")),
            }
        }
        match host.delete_link(&config.bridge).await {
            Ok(_) => report.did(format!("deleted bridge {}", config.bridge)),
            Err(e) => report.failed(format!("delete bridge {}: {e}", config.bridge)),
        }
    }
    for table in NFT_TABLES {
        match delete_nft_table(table) {
            Ok(true) => report.did(format!("deleted nftables table ip {table}")),
            Ok(false) => {}
            Err(e) => report.failed(format!("delete nftables table ip {table}: {e}")),
        }
    }
    // Whatever the steps above did not name (leases, the netns directory's own mount).
    network
        .cleanup_all()
        .await
        .context("cannot finish cleaning up the pod network")?;
    Ok(())
}

/// Deletes table `ip <name>`; false when there was none.
fn delete_nft_table(name: &str) -> Result<bool, rustables::error::QueryError> {
    let exists = rustables::list_tables()?
        .iter()
        // By name: berth makes only `ip` tables, and a same-named table of another family
        // makes the delete below fail loudly rather than pass silently.
        .any(|t| t.get_name().map(String::as_str) == Some(name));
    if !exists {
        return Ok(false);
    }
    let mut batch = rustables::Batch::new();
    let table = rustables::Table::new(rustables::ProtocolFamily::Ipv4).with_name(name);
    batch.add(&table, rustables::MsgType::Del);
    batch.send()?;
    Ok(true)
}

/// File names in `dir`; none when it does not exist.
fn list_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// Mount points at or below `dir` in this process's mount table, outermost first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mount_points_under(&text, dir)
}

fn mount_points_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount_path)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| p.components().count());
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let digits: String = chars.clone().take(3).collect();
            if let Ok(code) = u8::from_str_radix(&digits, 8) {
                out.push(char::from(code));
                for _ in 0..3 {
                    chars.next();
                }
                continue;
            }
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_below_the_data_dir_are_found_outermost_first_and_others_ignored() {
        let mountinfo = "\
22 1 0:21 / / rw - ext4 /dev/root rw
40 22 0:35 / /var/lib/berth/pods/a/rootfs rw - overlay overlay rw
41 22 0:4 net:[4026532] /var/lib/berth/netns/a rw - nsfs nsfs rw
42 22 0:36 / /var/lib/berth/netns rw - tmpfs tmpfs rw
43 22 0:37 / /var/lib/berthold/x rw - tmpfs tmpfs rw
44 22 0:38 / /var/lib/berth/with\\040space rw - tmpfs tmpfs rw
";
        let found = mount_points_under(mountinfo, Path::new("/var/lib/berth"));
        let found: Vec<&str> = found.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            found,
            vec![
                "/var/lib/berth/netns",
                "/var/lib/berth/with space",
                "/var/lib/berth/netns/a",
                "/var/lib/berth/pods/a/rootfs",
            ]
        );
    }

    #[test]
    fn a_missing_store_means_no_server_is_running() {
        let dir = tempfile::tempdir().unwrap();
        assert!(refuse_if_server_running(&dir.path().join("berth.redb")).is_ok());
    }

    #[test]
    fn an_open_store_means_a_server_is_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.redb");
        let _held = redb::Database::create(&path).unwrap();
        let error = refuse_if_server_running(&path).unwrap_err().to_string();
        assert!(error.contains("is running"), "{error}");
    }
}
