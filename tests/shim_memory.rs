//! What a pod's shim holds in memory, mapping by mapping: the berth binary's pages (text,
//! read-only data, the relocated `.data.rel.ro` of a position-independent build, data), its
//! heap, its stack and other anonymous memory. A figure, not a pass/fail bench: run it against
//! the builds to compare, e.g.
//!
//! ```sh
//! BERTH_TEST_BINARY=path/to/berth cargo test --test shim_memory -- --ignored --nocapture
//! ```
//!
//! Needs root (network namespaces, cgroups, mounts), as in CI.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::cluster::Cluster;
use common::netns::Netns;

const PODS: usize = 10;

/// The shims of the pods under `pods_dir`: processes run as `berth shim --dir <pods_dir>/<uid>`.
fn shims(pods_dir: &Path) -> Vec<u32> {
    let wanted = format!("\0shim\0--dir\0{}/", pods_dir.display());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(wanted.len()).any(|w| w == wanted.as_bytes()))
        })
        .collect()
}

/// KiB of `field` (`Pss`, `Private_Dirty`, ...) per kind of mapping of `pid`, from its smaps.
fn by_mapping(pid: u32, field: &str) -> BTreeMap<String, u64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut totals = BTreeMap::new();
    let mut kind = String::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: range perms offset dev inode [path].
            let perms = words.next().unwrap_or_default();
            let path = line.split_whitespace().nth(5).unwrap_or("");
            kind = match path {
                "" => "anonymous".to_string(),
                p if p.starts_with('[') => p.to_string(),
                p if p.ends_with("berth") || p.contains("/berth-") || p.contains("/berth ") => {
                    format!("binary {perms}")
                }
                _ => "other files".to_string(),
            };
        } else if first == format!("{field}:") {
            let kib: u64 = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            *totals.entry(kind.clone()).or_default() += kib;
        }
    }
    totals
}

#[test]
#[ignore = "a memory figure: run on demand with --ignored --nocapture"]
fn shim_memory_breakdown() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    for i in 0..PODS {
        cluster.create(cluster.pod(
            &format!("idle-{i}"),
            serde_json::json!({"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "app", "image": "busybox", "command": ["sleep", "3600"]}]}),
        ));
    }
    for i in 0..PODS {
        cluster.wait_for(&format!("idle-{i}"), "Running", |p| {
            p["status"]["phase"] == "Running"
        });
    }
    std::thread::sleep(Duration::from_secs(12));

    let pids = shims(&cluster.pods_dir());
    assert_eq!(pids.len(), PODS, "one shim per pod");
    let fields = ["Rss", "Pss", "Private_Clean", "Private_Dirty"];
    let mut sums: BTreeMap<(String, &str), u64> = BTreeMap::new();
    for pid in &pids {
        for field in fields {
            for (kind, kib) in by_mapping(*pid, field) {
                *sums.entry((kind, field)).or_default() += kib;
            }
        }
    }
    let kinds: std::collections::BTreeSet<&String> = sums.keys().map(|(k, _)| k).collect();
    println!(
        "per shim, mean of {PODS} (KiB): kind | {}",
        fields.join(" | ")
    );
    let mut pss_total = 0;
    for kind in kinds {
        let row: Vec<String> = fields
            .iter()
            .map(|f| {
                let kib = sums.get(&(kind.clone(), *f)).copied().unwrap_or(0) / PODS as u64;
                if *f == "Pss" {
                    pss_total += kib;
                }
                kib.to_string()
            })
            .collect();
        println!("{kind} | {}", row.join(" | "));
    }
    println!("PSS per shim: {pss_total} KiB");
    assert!(pss_total > 0, "a running shim holds some memory");
}
