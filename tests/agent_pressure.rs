//! Node pressure: a berth told its memory threshold is far above anything the machine has
//! reports MemoryPressure, is tainted, and evicts a BestEffort pod while a system-critical
//! one keeps running; likewise PIDPressure refuses new pods but critical ones, and
//! DiskPressure evicts the pod using the most disk first; a pod bound past the scheduler
//! that asks more than the node has fails OutOfcpu; a berth told its image filesystem is
//! over the image GC threshold deletes the image no pod uses and keeps the one in use. Only this test's own
//! berth and pods are affected: the thresholds live in its config.
//!
//! Needs root (network namespaces, cgroups, mounts), as in CI.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cluster::Cluster;
use common::netns::Netns;
use common::wait_until;
use sha2::{Digest, Sha256};

/// Sets `section.key = value` (TOML) in the test server's config and restarts it.
fn configure(cluster: &mut Cluster, settings: &[(&str, &str, &str)]) {
    let path = cluster.server.data_dir().join("test-config.toml");
    let mut config: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    for (section, key, value) in settings {
        let value: toml::Table = format!("v = {value}").parse().unwrap();
        config
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap()
            .insert(key.to_string(), value["v"].clone());
    }
    std::fs::write(&path, config.to_string()).unwrap();
    cluster.server.restart();
}

fn node(cluster: &Cluster) -> serde_json::Value {
    let out = cluster
        .server
        .kubectl(&["get", "node", &cluster.node, "-o", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn critical_pod(cluster: &Cluster) -> serde_json::Value {
    let out =
        cluster
            .server
            .kubectl(&["get", "pod", "critical", "-n", "kube-system", "-o", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn condition<'a>(node: &'a serde_json::Value, type_: &str) -> &'a serde_json::Value {
    node["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&serde_json::Value::Null)
}

fn wait_for_node(
    cluster: &Cluster,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let done = wait_until(Duration::from_secs(60), || {
        last = node(cluster);
        ok(&last)
    });
    assert!(done, "the node never got {what}: {:#}", last["status"]);
    last
}

#[test]
fn memory_pressure_taints_the_node_and_evicts_best_effort_pods_but_not_critical_ones() {
    let ns = Netns::new();
    let mut cluster = Cluster::start(&ns);
    let fresh = wait_for_node(&cluster, "pressure conditions", |n| {
        condition(n, "MemoryPressure")["status"] == "False"
            && condition(n, "DiskPressure")["status"] == "False"
    });
    assert_eq!(
        condition(&fresh, "MemoryPressure")["reason"],
        "KubeletHasSufficientMemory"
    );
    assert_eq!(condition(&fresh, "Ready")["status"], "True");

    cluster.create(cluster.pod(
        "best-effort",
        serde_json::json!({"containers": [{"name": "main", "image": "busybox",
            "command": ["sleep", "3600"]}]}),
    ));
    let mut critical = cluster.pod(
        "critical",
        serde_json::json!({"priorityClassName": "system-node-critical",
            "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}),
    );
    critical["metadata"]["namespace"] = serde_json::json!("kube-system");
    cluster.create(critical);
    let running = |p: &serde_json::Value| p["status"]["phase"] == "Running";
    cluster.wait_for("best-effort", "Running", running);
    let mut last = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(60), || {
            last = critical_pod(&cluster);
            running(&last)
        }),
        "the critical pod runs: {last:#}"
    );
    let before = critical_pod(&cluster);
    // Burstable: on the test machine a Guaranteed pod fails to start (CreateContainerError,
    // "libcontainer: failed to create container: io error"), a runtime issue of its own.
    assert_eq!(before["status"]["qosClass"], "Burstable");

    // More memory than any machine has must stay available: pressure at once.
    let restarted = std::time::Instant::now();
    configure(
        &mut cluster,
        &[
            ("eviction", "hard", r#"{ "memory.available" = "1000Ti" }"#),
            ("eviction", "pressure_transition_period_seconds", "0"),
            ("eviction", "monitoring_interval_seconds", "1"),
        ],
    );
    let pressured = wait_for_node(&cluster, "MemoryPressure and its taint", |n| {
        condition(n, "MemoryPressure")["status"] == "True"
            && n["spec"]["taints"].as_array().is_some_and(|t| {
                t.iter().any(|t| {
                    t["key"] == "node.kubernetes.io/memory-pressure" && t["effect"] == "NoSchedule"
                })
            })
    });
    assert_eq!(
        condition(&pressured, "MemoryPressure")["reason"],
        "KubeletHasInsufficientMemory"
    );
    assert_eq!(condition(&pressured, "DiskPressure")["status"], "False");

    let evicted = cluster.wait_for("best-effort", "evicted", |p| {
        p["status"]["phase"] == "Failed" && p["status"]["reason"] == "Evicted"
    });
    eprintln!(
        "server restart under pressure → pod evicted in {:?}",
        restarted.elapsed()
    );
    let message = evicted["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "The node was low on resource: memory. Threshold quantity: 1000Ti, available: "
        ),
        "upstream's message: {message}"
    );
    assert!(message.contains("Container main was using "), "{message}");
    let disruption = evicted["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "DisruptionTarget").cloned())
        .unwrap_or_default();
    assert_eq!(disruption["reason"], "TerminationByKubelet");
    let mut seen = String::new();
    let recorded = wait_until(Duration::from_secs(20), || {
        seen = events(&cluster.server);
        seen.lines()
            .any(|l| l.starts_with("Evicted best-effort The node was low on resource: memory."))
    });
    assert!(recorded, "an Evicted event: {seen}");

    // The evicted pod's containers are gone; the critical one runs on, never restarted.
    let uid = evicted["metadata"]["uid"].as_str().unwrap_or_default();
    let shim_dir = cluster.pods_dir().join(uid);
    assert!(
        wait_until(Duration::from_secs(30), || !shim_dir.exists()),
        "the evicted pod's runtime state is released"
    );
    std::thread::sleep(Duration::from_secs(5));
    let after = critical_pod(&cluster);
    assert!(running(&after), "critical pod stays: {:#}", after["status"]);
    assert_eq!(
        after["status"]["containerStatuses"][0]["containerID"],
        before["status"]["containerStatuses"][0]["containerID"]
    );
    assert_eq!(after["status"]["containerStatuses"][0]["restartCount"], 0);
    let _ = cluster.server.kubectl(&[
        "delete",
        "pod",
        "critical",
        "-n",
        "kube-system",
        "--grace-period=1",
        "--wait=false",
    ]);
}

#[test]
fn image_gc_deletes_unused_images_and_keeps_the_ones_pods_use() {
    let ns = Netns::new();
    let mut cluster = Cluster::start(&ns);
    cluster.create(cluster.pod(
        "user",
        serde_json::json!({"containers": [{"name": "main", "image": "busybox",
            "command": ["sleep", "3600"]}]}),
    ));
    cluster.wait_for("user", "Running", |p| p["status"]["phase"] == "Running");

    let work = tempfile::tempdir().unwrap();
    let victim = format!("docker.io/library/gc-victim-{}:1", std::process::id());
    let archive = tiny_image_archive(work.path(), &victim);
    let out = cluster
        .server
        .berth(&["images", "import", archive.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = |n: &serde_json::Value| -> Vec<String> {
        n["status"]["images"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|i| i["names"].as_array().cloned().unwrap_or_default())
            .filter_map(|n| n.as_str().map(String::from))
            .collect()
    };
    let busybox = "docker.io/library/busybox:latest";
    let listed = wait_for_node(&cluster, "both images listed", |n| {
        let names = names(n);
        names.contains(&victim) && names.contains(&busybox.to_string())
    });
    assert!(
        names(&listed)
            .iter()
            .any(|n| n.starts_with("docker.io/library/busybox@sha256:")),
        "digests are listed too: {:?}",
        names(&listed)
    );

    // Any use of the disk is above a 1% high threshold: collection runs at start.
    configure(
        &mut cluster,
        &[
            ("images", "gc_high_threshold_percent", "1"),
            ("images", "gc_low_threshold_percent", "0"),
            ("images", "gc_minimum_age_seconds", "0"),
        ],
    );
    let collected = wait_for_node(&cluster, "the unused image collected", |n| {
        !names(n).contains(&victim)
    });
    assert!(
        names(&collected).contains(&busybox.to_string()),
        "the image in use stays: {:?}",
        names(&collected)
    );
    let images = cluster.server.berth(&["images", "ls"]);
    let images = String::from_utf8_lossy(&images.stdout);
    assert!(
        images.contains("busybox") && !images.contains("gc-victim"),
        "{images}"
    );
    let user = cluster.get("user");
    assert_eq!(user["status"]["phase"], "Running", "{:#}", user["status"]);
    // Down to 0% used cannot be reached: the node says how much it could not free.
    let mut seen = String::new();
    let recorded = wait_until(Duration::from_secs(20), || {
        seen = events(&cluster.server);
        seen.lines().any(|l| {
            l.starts_with("FreeDiskSpaceFailed ")
                && l.contains("Failed to garbage collect required amount of images")
        })
    });
    assert!(recorded, "a FreeDiskSpaceFailed event: {seen}");
}

#[test]
fn pid_pressure_taints_the_node_and_refuses_new_pods_but_lets_critical_ones_in() {
    let ns = Netns::new();
    let mut cluster = Cluster::start(&ns);
    let fresh = wait_for_node(&cluster, "PIDPressure from the eviction manager", |n| {
        condition(n, "PIDPressure")["status"] == "False"
    });
    assert_eq!(
        condition(&fresh, "PIDPressure")["reason"],
        "KubeletHasSufficientPID"
    );

    // More task ids than any kernel gives must stay free: pressure at once.
    configure(
        &mut cluster,
        &[
            ("eviction", "hard", r#"{ "pid.available" = "4000000000" }"#),
            ("eviction", "pressure_transition_period_seconds", "0"),
            ("eviction", "monitoring_interval_seconds", "1"),
        ],
    );
    let pressured = wait_for_node(&cluster, "PIDPressure and its taint", |n| {
        condition(n, "PIDPressure")["status"] == "True"
            && n["spec"]["taints"].as_array().is_some_and(|t| {
                t.iter().any(|t| {
                    t["key"] == "node.kubernetes.io/pid-pressure" && t["effect"] == "NoSchedule"
                })
            })
    });
    assert_eq!(
        condition(&pressured, "PIDPressure")["reason"],
        "KubeletHasInsufficientPID"
    );
    assert_eq!(condition(&pressured, "MemoryPressure")["status"], "False");

    // Bound straight to the node, past the scheduler's taint check: the node itself refuses.
    cluster.create(cluster.pod(
        "latecomer",
        serde_json::json!({"nodeName": cluster.node, "containers": [{"name": "main",
            "image": "busybox", "command": ["sleep", "3600"],
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}),
    ));
    let refused = cluster.wait_for("latecomer", "refused", |p| p["status"]["phase"] == "Failed");
    assert_eq!(
        refused["status"]["reason"], "Evicted",
        "{:#}",
        refused["status"]
    );
    assert_eq!(
        refused["status"]["message"],
        "Pod was rejected: The node had condition: [PIDPressure]. "
    );
    assert!(
        refused["status"]["containerStatuses"]
            .as_array()
            .is_none_or(|c| c.iter().all(|c| c["state"]["running"].is_null())),
        "nothing of it ran: {:#}",
        refused["status"]
    );
    let uid = refused["metadata"]["uid"].as_str().unwrap_or_default();
    assert!(
        !cluster.pods_dir().join(uid).exists(),
        "no shim was started for the refused pod"
    );
    let mut seen = String::new();
    let recorded = wait_until(Duration::from_secs(20), || {
        seen = events(&cluster.server);
        seen.lines()
            .any(|l| l == "Evicted latecomer The node had condition: [PIDPressure]. ")
    });
    assert!(recorded, "a warning event as upstream's: {seen}");

    let mut critical = cluster.pod(
        "critical",
        serde_json::json!({"nodeName": cluster.node, "priorityClassName": "system-node-critical",
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"],
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}),
    );
    critical["metadata"]["namespace"] = serde_json::json!("kube-system");
    cluster.create(critical);
    let mut last = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(60), || {
            last = critical_pod(&cluster);
            last["status"]["phase"] == "Running"
        }),
        "a critical pod is let in under pressure: {last:#}"
    );
    let _ = cluster.server.kubectl(&[
        "delete",
        "pod",
        "critical",
        "-n",
        "kube-system",
        "--grace-period=1",
        "--wait=false",
    ]);
}

#[test]
fn a_pod_bound_past_the_scheduler_asking_more_cpu_than_the_node_has_fails_out_of_cpu() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    cluster.create(cluster.pod(
        "greedy",
        serde_json::json!({"nodeName": cluster.node, "containers": [{"name": "main",
            "image": "busybox", "command": ["sleep", "3600"],
            "resources": {"requests": {"cpu": "1000"}}}]}),
    ));
    let refused = cluster.wait_for("greedy", "refused", |p| p["status"]["phase"] == "Failed");
    assert_eq!(
        refused["status"]["reason"], "OutOfcpu",
        "{:#}",
        refused["status"]
    );
    let message = refused["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 1000000, used: "
        ),
        "upstream's message: {message}"
    );
    // A modest pod bound the same way still runs: the refusal was about the greedy one.
    cluster.create(cluster.pod(
        "modest",
        serde_json::json!({"nodeName": cluster.node, "containers": [{"name": "main",
            "image": "busybox", "command": ["sleep", "3600"],
            "resources": {"requests": {"cpu": "10m"}}}]}),
    ));
    cluster.wait_for("modest", "Running", |p| p["status"]["phase"] == "Running");
    let mut seen = String::new();
    let recorded = wait_until(Duration::from_secs(20), || {
        seen = events(&cluster.server);
        seen.lines().any(|l| {
            l.starts_with("OutOfcpu greedy Node didn't have enough resource: cpu, requested: ")
        })
    });
    assert!(recorded, "an OutOfcpu event: {seen}");
}

#[test]
fn disk_pressure_evicts_the_pod_writing_the_most_to_its_own_disk_first() {
    let ns = Netns::new();
    let mut cluster = Cluster::start(&ns);
    cluster.create(cluster.pod(
        "writer",
        serde_json::json!({"containers": [{"name": "main", "image": "busybox",
            "command": ["sh", "-c", "dd if=/dev/zero of=/fill bs=1M count=24 && sleep 3600"]}]}),
    ));
    cluster.create(cluster.pod(
        "quiet",
        serde_json::json!({"containers": [{"name": "main", "image": "busybox",
            "command": ["sleep", "3600"]}]}),
    ));
    for name in ["writer", "quiet"] {
        cluster.wait_for(name, "Running", |p| p["status"]["phase"] == "Running");
    }
    // The writer's layer holds its file before pressure comes.
    std::thread::sleep(Duration::from_secs(2));

    // More free disk than any disk has: pressure at once. A slow round leaves time to see
    // which pod went first.
    configure(
        &mut cluster,
        &[
            ("eviction", "hard", r#"{ "nodefs.available" = "1000Ti" }"#),
            ("eviction", "pressure_transition_period_seconds", "0"),
            ("eviction", "monitoring_interval_seconds", "10"),
        ],
    );
    let evicted = cluster.wait_for("writer", "evicted", |p| {
        p["status"]["phase"] == "Failed" && p["status"]["reason"] == "Evicted"
    });
    // One pod goes per round. On a loaded machine the next round may have taken the quiet pod
    // too before this test looked, so the order is read from when each was marked.
    let quiet = cluster.get("quiet");
    let marked = |pod: &serde_json::Value| {
        pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "DisruptionTarget")
            .and_then(|c| c["lastTransitionTime"].as_str())
            .map(str::to_string)
    };
    if quiet["status"]["phase"] != "Running" {
        let (writer_at, quiet_at) = (marked(&evicted), marked(&quiet));
        assert!(
            writer_at.is_some() && quiet_at.is_some() && writer_at < quiet_at,
            "the quiet pod goes after the writer: writer at {writer_at:?}, quiet at {quiet_at:?}: {:#}",
            quiet["status"]
        );
    }
    let message = evicted["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "The node was low on resource: ephemeral-storage. Threshold quantity: 1000Ti, available: "
        ),
        "upstream's message: {message}"
    );
    let used = message
        .split("Container main was using ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_default();
    let mebibytes = used
        .strip_suffix("Ki")
        .and_then(|k| k.parse::<u64>().ok())
        .map(|k| k / 1024)
        .or_else(|| used.strip_suffix("Mi").and_then(|m| m.parse().ok()))
        .unwrap_or(0);
    assert!(
        (24..64).contains(&mebibytes),
        "the writer's layer measured about its 24 MiB: {message}"
    );
}

/// `reason name note` of every event (events.k8s.io/v1, as the agent records them), one a line.
fn events(server: &common::server::BerthServer) -> String {
    server.kubectl_ok(&[
        "get",
        "events.v1.events.k8s.io",
        "-A",
        "-o",
        "jsonpath={range .items[*]}{.reason} {.regarding.name} {.note}{\"\\n\"}{end}",
    ])
}

/// An OCI archive of a one-layer image named `name` (content unique to this test run), the
/// form `berth images import` takes.
fn tiny_image_archive(dir: &Path, name: &str) -> PathBuf {
    let layout = dir.join("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let write_blob = |bytes: &[u8]| -> (String, usize) {
        let hex = hex::encode(Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let mut layer = tar::Builder::new(Vec::new());
    let content = format!("victim of {name}\n");
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_cksum();
    layer
        .append_data(&mut header, "victim.txt", content.as_bytes())
        .unwrap();
    let layer = layer.into_inner().unwrap();
    let (layer_digest, layer_size) = write_blob(&layer);
    let arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    let config = serde_json::json!({"architecture": arch, "os": "linux",
        "config": {"Cmd": ["/victim.txt"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]}});
    let (config_digest, config_size) = write_blob(config.to_string().as_bytes());
    let manifest = serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest, "size": layer_size}]});
    let (manifest_digest, manifest_size) = write_blob(manifest.to_string().as_bytes());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest, "size": manifest_size,
        "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "1"}}]});
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let archive = dir.join("victim.tar");
    let mut tar = tar::Builder::new(std::fs::File::create(&archive).unwrap());
    tar.append_dir_all(".", &layout).unwrap();
    tar.finish().unwrap();
    archive
}
