//! Secrets encryption at rest: no Secret value can be read from the files under the data dir
//! (store, write-ahead log, logs), and after a key rotation and a restart every Secret still
//! reads back.
//!
//! Needs root (network namespaces).

mod common;

use std::path::Path;

use base64::Engine;
use common::netns::Netns;
use common::server::BerthServer;

const SECRETS: usize = 3;

/// Every file under `dir` (the kubectl cache aside: it is the test's, not berth's) whose bytes
/// contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() && !path.ends_with("test-kube-cache") {
                pending.push(path);
            } else if kind.is_file() {
                let bytes = std::fs::read(&path).unwrap_or_default();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

fn read_back(server: &BerthServer, name: &str) -> String {
    let encoded = server.kubectl_ok(&["get", "secret", name, "-o", "jsonpath={.data.password}"]);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .expect("secret data is base64");
    String::from_utf8(bytes).expect("utf-8 secret")
}

#[test]
fn secret_values_never_reach_the_disk_in_clear_and_survive_rotation_and_restart() {
    let ns = Netns::new();
    let mut server = BerthServer::start(&ns);
    let values: Vec<String> = (0..SECRETS)
        .map(|i| format!("hunter-{}-{i}-plaintext", std::process::id()))
        .collect();
    for (i, value) in values.iter().enumerate() {
        server.kubectl_ok(&[
            "create",
            "secret",
            "generic",
            &format!("s{i}"),
            &format!("--from-literal=password={value}"),
        ]);
    }
    let assert_nowhere_on_disk = |server: &BerthServer| {
        for value in &values {
            let base64 = base64::engine::general_purpose::STANDARD.encode(value);
            for needle in [value.as_str(), base64.as_str()] {
                let found = files_containing(server.data_dir(), needle.as_bytes());
                assert!(found.is_empty(), "{needle:?} found in {found:?}");
            }
        }
    };
    assert_nowhere_on_disk(&server);

    let rotated = server.berth(&["secrets-encrypt", "rotate"]);
    let said = String::from_utf8_lossy(&rotated.stdout).to_string();
    assert!(rotated.status.success(), "rotate failed: {said}");
    assert!(said.contains("New primary key: key2"), "{said}");
    // Every Secret the cluster has (the ones made here and any of berth's own).
    let all = server.kubectl_ok(&["get", "secrets", "-A", "-o", "name"]);
    assert!(
        said.contains(&format!("Re-sealed {} secrets", all.lines().count())),
        "{said} vs {all}"
    );
    let status = server.berth(&["secrets-encrypt", "status"]);
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(status.contains("Primary key: key2"), "{status}");
    assert!(status.contains("Keys: key2, key1"), "{status}");
    for (i, value) in values.iter().enumerate() {
        assert_eq!(&read_back(&server, &format!("s{i}")), value);
    }
    assert_nowhere_on_disk(&server);

    server.restart();
    for (i, value) in values.iter().enumerate() {
        assert_eq!(&read_back(&server, &format!("s{i}")), value);
    }
    assert_nowhere_on_disk(&server);
}

/// The key names in the data dir's key file, primary first.
fn key_names(server: &BerthServer) -> Vec<String> {
    let text = std::fs::read_to_string(server.data_dir().join("encryption").join("keys"))
        .expect("the key file");
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(' ').next().map(str::to_string))
        .collect()
}

#[test]
fn after_rotation_the_old_key_is_dropped_once_no_stored_value_needs_it() {
    let ns = Netns::new();
    // Little history, so compaction soon passes the re-sealing.
    let mut server = BerthServer::start_with_config(&ns, "[store]\nhistory_revisions = 16\n");
    let value = format!("pruned-{}-plaintext", std::process::id());
    server.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "s0",
        &format!("--from-literal=password={value}"),
    ]);
    let rotated = server.berth(&["secrets-encrypt", "rotate"]);
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stdout)
    );
    assert_eq!(key_names(&server), vec!["key2", "key1"]);

    // Writes move the history on; the server drops key1 once compaction has passed the
    // re-sealing (history older than it may hold key1 values until then).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut round = 0;
    while key_names(&server) != vec!["key2"] {
        assert!(
            std::time::Instant::now() < deadline,
            "key1 is still there: {:?}",
            key_names(&server)
        );
        let items: Vec<serde_json::Value> = (0..20)
            .map(|i| {
                serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("filler-{round}-{i}")}, "data": {"i": "x"}})
            })
            .collect();
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
        let out = server.kubectl_stdin(&["create", "-f", "-"], &list.to_string());
        assert!(out.status.success());
        round += 1;
        std::thread::sleep(std::time::Duration::from_secs(3));
    }
    let status = server.berth(&["secrets-encrypt", "status"]);
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(status.contains("Keys: key2\n"), "{status}");
    assert_eq!(read_back(&server, "s0"), value);

    server.restart();
    assert_eq!(key_names(&server), vec!["key2"]);
    assert_eq!(read_back(&server, "s0"), value);
}
