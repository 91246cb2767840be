//! Shared pieces of the integration tests. Each test module uses what it needs.
//!
//! - `agent`: `berth agent` in a netns of its own, joined to a server
//! - `cluster`: a server whose pods pull the busybox test image from a registry in the netns
//! - `curl`: raw HTTP requests as the admin, for what kubectl cannot send
//! - `inside`: running code (kube clients) inside a test's network namespace
//! - `netns`: a network namespace per test, removed on drop
//! - `procs`: what benches read from /proc (shims, memory, CPU time)
//! - `server`: `berth server` running inside a netns, driven with the real kubectl/helm
//! - `registry`: a real OCI registry (Debian's docker-registry) inside a netns
//! - `tools`: where kubectl and helm are
//!
//! A test (needs root, as CI is):
//!
//! ```ignore
//! mod common;
//! use common::{netns::Netns, server::BerthServer};
//!
//! #[test]
//! fn kubectl_lists_the_default_namespace() {
//!     let ns = Netns::new(); // declared first, so dropped last
//!     let server = BerthServer::start(&ns);
//!     let out = server.kubectl_ok(&["get", "namespaces", "-o", "name"]);
//!     assert!(out.contains("namespace/default"));
//! }
//! ```
//!
//! Fixtures kill what they started and remove their temp dirs on drop, and print their logs when
//! the test failed. Dropping a `Netns` also kills any process still inside it.
#![allow(dead_code)]

pub mod agent;
pub mod cluster;
pub mod curl;
pub mod inside;
pub mod netns;
pub mod podnet;
pub mod procs;
pub mod registry;
pub mod server;
pub mod tools;

use std::time::{Duration, Instant};

/// The output of `child`, a command expected to end by itself, killed if it has not within
/// `patience`.
pub fn output_within(mut child: std::process::Child, patience: Duration) -> std::process::Output {
    let done = wait_until(patience, || matches!(child.try_wait(), Ok(Some(_))));
    if !done {
        let _ = child.kill();
    }
    child.wait_with_output().expect("the command's output")
}

/// Polls `ready` every 100 ms until it returns true or `timeout` passes; returns whether it did.
pub fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `metadata.managedFields` entry of `manager` in `object` (JSON null when it has none).
pub fn managed_fields_entry(object: &serde_json::Value, manager: &str) -> serde_json::Value {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|entry| entry["manager"] == manager)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}
