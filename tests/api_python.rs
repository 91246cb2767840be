//! The official Python `kubernetes` client against a real `berth server` in a test-made network
//! namespace: CRUD of ConfigMaps and Deployments, list, and a watch resumed from a
//! resourceVersion. Needs root (network namespaces) and the `kubernetes` Python package.

mod common;

use std::path::Path;

use common::netns::Netns;
use common::server::BerthServer;

#[test]
fn the_python_client_creates_reads_patches_lists_watches_and_deletes() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/python_client.py");
    let out = server
        .command(Path::new("python3"))
        .arg(&script)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "python client failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("ok: watch from resourceVersion sees"),
        "{stdout}"
    );
}
