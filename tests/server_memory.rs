//! What an idle `berth server` holds in memory: with the low-memory profile a 512 MB board uses
//! (`configs/pi-512mb.toml`) against the defaults, side by side in one run; and after kubectl
//! downloaded the OpenAPI documents (some 19 MiB built), once they have gone unused for a minute.
//! Figures, run on demand against an optimised build:
//!
//! ```sh
//! BERTH_TEST_BINARY=path/to/berth cargo test --test server_memory -- --ignored --nocapture
//! ```
//!
//! Needs root (network namespaces), as in CI.

mod common;

use std::time::Duration;

use common::netns::Netns;
use common::server::BerthServer;

const LOW_MEMORY_PROFILE: &str = include_str!("../configs/pi-512mb.toml");

/// berth hands start-up-only pages back 10 s after it is ready: measure after that.
const SETTLE: Duration = Duration::from_secs(20);

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct Rss {
    total_kib: u64,
    anon_kib: u64,
    file_kib: u64,
    threads: u64,
}

impl Rss {
    fn of(pid: u32) -> Rss {
        Rss {
            total_kib: status_kib(pid, "VmRSS:"),
            anon_kib: status_kib(pid, "RssAnon:"),
            file_kib: status_kib(pid, "RssFile:"),
            threads: status_kib(pid, "Threads:"),
        }
    }
}

impl std::fmt::Display for Rss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |kib: u64| kib as f64 / 1024.0;
        write!(
            f,
            "{:.1} MiB ({:.1} anon + {:.1} file), {} threads",
            mib(self.total_kib),
            mib(self.anon_kib),
            mib(self.file_kib),
            self.threads
        )
    }
}

#[test]
#[ignore = "a memory figure: run on demand with --ignored --nocapture"]
fn the_low_memory_profile_idles_in_no_more_memory_than_the_defaults() {
    let default_ns = Netns::new();
    let low_ns = Netns::new();
    // Both at once, so both see the same machine.
    let default_server = BerthServer::start(&default_ns);
    let low_server = BerthServer::start_with_config(&low_ns, LOW_MEMORY_PROFILE);
    std::thread::sleep(SETTLE);
    let default_rss = Rss::of(default_server.pid().expect("default server runs"));
    let low_rss = Rss::of(low_server.pid().expect("low-memory server runs"));
    println!("idle RSS of berth server, defaults:           {default_rss}");
    println!("idle RSS of berth server, low-memory profile: {low_rss}");
    assert!(low_rss.total_kib > 0 && default_rss.total_kib > 0);
    assert!(
        low_rss.total_kib <= default_rss.total_kib,
        "the low-memory profile holds more: {low_rss} against {default_rss}"
    );
    drop(low_server);
    drop(default_server);
}

#[test]
#[ignore = "a memory figure: run on demand with --ignored --nocapture"]
fn openapi_documents_are_let_go_a_minute_after_their_last_request() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let pid = server.pid().expect("server runs");
    std::thread::sleep(SETTLE);
    let idle = Rss::of(pid);

    // What kubectl apply / explain fetch: v2, v3's index and a group-version.
    let v2 = server.kubectl_ok(&["get", "--raw", "/openapi/v2"]);
    assert!(v2.contains("\"swagger\""));
    let index = server.kubectl_ok(&["get", "--raw", "/openapi/v3"]);
    assert!(index.contains("apis/apps/v1"));
    let apps = server.kubectl_ok(&["get", "--raw", "/openapi/v3/apis/apps/v1"]);
    assert!(apps.contains("io.k8s.api.apps.v1.Deployment"));
    let served = Rss::of(pid);

    // A minute for the documents, and a little for the reaper to run.
    std::thread::sleep(Duration::from_secs(75));
    let after = Rss::of(pid);
    println!("idle:                            {idle}");
    println!("after serving the documents:     {served}");
    println!("75 s after the last request:     {after}");
    assert!(
        served.anon_kib > idle.anon_kib + 4 * 1024,
        "serving the documents should cost megabytes: {idle} -> {served}"
    );
    assert!(
        after.anon_kib <= idle.anon_kib + 3 * 1024,
        "the documents were not let go: idle {idle}, after {after}"
    );

    // And they are built again on the next request, byte for byte the same.
    let again = server.kubectl_ok(&["get", "--raw", "/openapi/v3"]);
    assert_eq!(again, index);
    drop(server);
}
