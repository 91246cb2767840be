//! Pods run as real containers: berth in a test netns pulls the busybox test image from a
//! local registry and runs pods that kubectl creates, reports their status, serves their logs,
//! restarts them, cleans up after them and re-adopts them across a restart of berth.
//!
//! Needs root (network namespaces, cgroups, mounts), as in CI.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::netns::Netns;
use common::wait_until;

fn phase(pod: &serde_json::Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("")
}

#[test]
fn pods_run_log_restart_share_volumes_and_are_cleaned_up_and_readopted() {
    let ns = Netns::new();
    let mut cluster = Cluster::start(&ns);

    // A long-running pod: Running with an IP, and its output in `kubectl logs`.
    cluster.create(cluster.pod(
        "ticker",
        serde_json::json!({"containers": [{"name": "main", "image": "busybox",
            "command": ["sh", "-c", "echo hello from $(POD_NAME); i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done"],
            "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}),
    ));
    let running = cluster.wait_for("ticker", "Running", |p| phase(p) == "Running");
    let pod_ip = running["status"]["podIP"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        pod_ip.starts_with("10.42."),
        "pod IP from the pod CIDR: {pod_ip:?}"
    );
    assert_eq!(running["status"]["containerStatuses"][0]["ready"], true);
    let logs_ok = wait_until(Duration::from_secs(20), || {
        let out = cluster.server.kubectl(&["logs", "ticker"]);
        String::from_utf8_lossy(&out.stdout).contains("tick 2")
    });
    assert!(logs_ok, "kubectl logs shows the container's output");
    let first = cluster.server.kubectl_ok(&["logs", "ticker"]);
    assert!(first.starts_with("hello from ticker\n"), "{first}");
    // `--since-time` before every line shows them all, after every line none.
    let all = cluster
        .server
        .kubectl_ok(&["logs", "ticker", "--since-time=2000-01-01T00:00:00Z"]);
    assert!(all.starts_with("hello from ticker\n"), "{all}");
    let none = cluster
        .server
        .kubectl_ok(&["logs", "ticker", "--since-time=2999-01-01T00:00:00Z"]);
    assert_eq!(none, "");
    // Options out of range are refused as upstream refuses them, naming the field.
    let refused = cluster.server.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/ticker/log?tailLines=-1",
    ]);
    assert!(!refused.status.success());
    let refused = String::from_utf8_lossy(&refused.stderr);
    assert!(
        refused.contains(
            "PodLogOptions \"ticker\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0"
        ),
        "{refused}"
    );
    // `logs -f` keeps streaming: after 3 s it has seen lines that did not exist at its start.
    let mut follow = cluster
        .server
        .command(&common::tools::kubectl())
        .args(["logs", "-f", "ticker", "--tail=1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let _ = follow.kill();
    let followed = follow.wait_with_output().unwrap();
    let followed = String::from_utf8_lossy(&followed.stdout);
    assert!(
        followed.lines().count() >= 3,
        "follow streamed new lines: {followed:?}"
    );

    // A crashing container: CrashLoopBackOff with a growing restart count.
    cluster.create(cluster.pod(
        "crasher",
        serde_json::json!({"containers": [{"name": "main", "image": "busybox",
            "command": ["sh", "-c", "echo dying; exit 1"]}]}),
    ));
    let crashing = cluster.wait_for("crasher", "CrashLoopBackOff", |p| {
        let cs = &p["status"]["containerStatuses"][0];
        cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
            && cs["restartCount"].as_i64().unwrap_or(0) >= 1
    });
    assert_eq!(
        crashing["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
        1
    );
    let previous = cluster
        .server
        .kubectl_ok(&["logs", "crasher", "--previous"]);
    assert_eq!(previous, "dying\n");

    // ConfigMap env, a configMap volume, an emptyDir shared by two containers, init first.
    cluster.create(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings"}, "data": {"color": "blue", "greeting.txt": "hi there"}}));
    cluster.create(cluster.pod(
        "shared",
        serde_json::json!({
            "volumes": [{"name": "scratch", "emptyDir": {}},
                        {"name": "conf", "configMap": {"name": "settings"}}],
            "initContainers": [{"name": "init", "image": "busybox",
                "command": ["sh", "-c", "echo init-ran > /scratch/init"],
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}],
            "containers": [
                {"name": "writer", "image": "busybox",
                 "command": ["sh", "-c", "echo from-writer > /scratch/shared; sleep 3600"],
                 "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]},
                {"name": "reader", "image": "busybox",
                 "command": ["sh", "-c", "echo color=$COLOR; cat /conf/greeting.txt; echo; cat /scratch/init; while [ ! -f /scratch/shared ]; do sleep 0.2; done; cat /scratch/shared; sleep 3600"],
                 "env": [{"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "color"}}}],
                 "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"},
                                  {"name": "conf", "mountPath": "/conf", "readOnly": true}]}]}),
    ));
    cluster.wait_for("shared", "Running", |p| phase(p) == "Running");
    let reader_ok = wait_until(Duration::from_secs(20), || {
        let out = cluster.server.kubectl(&["logs", "shared", "-c", "reader"]);
        String::from_utf8_lossy(&out.stdout).contains("from-writer")
    });
    let reader = cluster
        .server
        .kubectl_ok(&["logs", "shared", "-c", "reader"]);
    assert!(reader_ok, "the reader saw the writer's file: {reader}");
    assert_eq!(reader, "color=blue\nhi there\ninit-ran\nfrom-writer\n");

    // The pod's runtime state is in its run dir, not in the data dir.
    let before = cluster.get("ticker");
    let uid = before["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let id_before = before["status"]["containerStatuses"][0]["containerID"].clone();
    let container_id = id_before
        .as_str()
        .unwrap_or("")
        .trim_start_matches("berth://");
    let run_dir = cluster.pods_run_dir().join(&uid);
    let container_state = run_dir.join("c").join(container_id).join("state.json");
    assert!(container_state.exists(), "{container_state:?}");
    assert!(run_dir.join("shim.sock").exists());
    assert!(!cluster.pods_dir().join(&uid).join("c").exists());
    assert!(!cluster.pods_dir().join(&uid).join("shim.sock").exists());

    // kill -9 of berth: the container keeps running and is re-adopted, same id and count.
    cluster.server.kill9();
    std::thread::sleep(Duration::from_secs(2));
    cluster.server.restart();
    std::thread::sleep(Duration::from_secs(4));
    let after = cluster.wait_for("ticker", "Running after restart", |p| phase(p) == "Running");
    assert_eq!(
        after["status"]["containerStatuses"][0]["containerID"],
        id_before
    );
    assert_eq!(after["status"]["containerStatuses"][0]["restartCount"], 0);
    let still = cluster.server.kubectl_ok(&["logs", "ticker", "--tail=1"]);
    assert!(still.starts_with("tick "), "{still}");
    // Re-adopted through the run dir, which survived the kill.
    assert!(container_state.exists(), "{container_state:?}");

    // Deleting a pod frees its shim, state dir, run dir, netns, veth and address.
    cluster
        .server
        .kubectl_ok(&["delete", "pod", "ticker", "--grace-period=2"]);
    let gone = wait_until(Duration::from_secs(30), || {
        cluster.get("ticker").is_null() && !cluster.pods_dir().join(&uid).exists()
    });
    assert!(gone, "the pod object and its state dir are gone");
    assert!(!run_dir.exists(), "the pod's run dir is gone");
    let netns_file = cluster.server.data_dir().join("netns").join(&uid);
    assert!(!netns_file.exists(), "the pod's netns is unpinned");
    let links = ns.exec_ok("ip", &["-o", "link"]);
    let veth = berth::network::veth_name(&uid);
    assert!(!links.contains(&veth), "veth {veth} removed: {links}");
    // In every hierarchy: the named systemd and cgroup2 ones of a hybrid host too.
    let cgroup = berth::runtime::cgroups::pod_cgroup_parent(&uid);
    assert!(
        !berth::runtime::cgroups::exists_anywhere(&cgroup).unwrap(),
        "the pod cgroup is removed"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&uid), "no mount of the pod is left");
}

#[test]
fn a_memory_hog_over_its_limit_is_oom_killed() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    cluster.create(cluster.pod(
        "hog",
        serde_json::json!({"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox",
            "command": ["sh", "-c", "dd if=/dev/zero of=/dev/null bs=128M count=1"],
            "resources": {"limits": {"memory": "32Mi"}}}]}),
    ));
    let pod = cluster.wait_for("hog", "a termination", |p| {
        !p["status"]["containerStatuses"][0]["state"]["terminated"].is_null()
    });
    let terminated = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["reason"], "OOMKilled", "{pod:#}");
    assert_eq!(phase(&pod), "Failed");
}

#[test]
fn a_guaranteed_pod_runs_with_the_lowest_oom_score_adj_the_host_allows() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let resources = serde_json::json!({"requests": {"cpu": "100m", "memory": "64Mi"},
        "limits": {"cpu": "100m", "memory": "64Mi"}});
    cluster.create(cluster.pod(
        "guaranteed",
        serde_json::json!({"restartPolicy": "Never", "containers": [{"name": "main",
            "image": "busybox", "command": ["cat", "/proc/self/oom_score_adj"],
            "resources": resources}]}),
    ));
    let done = cluster.wait_for("guaranteed", "Succeeded", |p| {
        matches!(phase(p), "Succeeded" | "Failed")
    });
    assert_eq!(done["status"]["qosClass"], "Guaranteed", "{done:#}");
    assert_eq!(phase(&done), "Succeeded", "{done:#}");
    // -997 where berth may lower it (CAP_SYS_RESOURCE); a confined host keeps berth's own.
    let logs = cluster.server.kubectl_ok(&["logs", "guaranteed"]);
    let own = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
    let allowed = std::fs::write("/proc/self/oom_score_adj", "-997").is_ok();
    std::fs::write("/proc/self/oom_score_adj", own.trim()).unwrap();
    let expected = if allowed { "-997" } else { own.trim() };
    assert_eq!(logs.trim(), expected);
}
