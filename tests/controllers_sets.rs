//! StatefulSets, DaemonSets and local-path volumes with the real kubectl and real containers:
//! ordered start, stable names and hostnames, one claim and one directory per pod, scale-down
//! that keeps the claims, `rollout status|history|undo`, `OnDelete` and partitioned updates,
//! `Parallel` pod management, and daemon pods rolled on a change.
//!
//! Needs root (network namespaces, cgroups, mounts, nftables), as in CI.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::netns::Netns;
use common::server::BerthServer;
use common::wait_until;
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(120);

// `updateStrategy` is spelled out because `kubectl rollout status` refuses objects without
// it, and API defaulting (which fills it in upstream) is not part of this change.

/// Writes who it is into its volume, then idles; exits promptly on SIGTERM.
const STATEFUL_SET: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  replicas: 3
  serviceName: web
  updateStrategy: {type: RollingUpdate}
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: busybox
        command: ["sh", "-c", "hostname > /data/whoami; trap 'exit 0' TERM; while true; do sleep 1; done"]
        volumeMounts:
        - {name: data, mountPath: /data}
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests: {storage: 16Mi}
"#;

const DAEMON_SET: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  updateStrategy: {type: RollingUpdate}
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: busybox
        command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn apply(server: &BerthServer, manifest: &str) {
    let out = server.kubectl_stdin(&["apply", "-f", "-"], manifest);
    assert!(
        out.status.success(),
        "kubectl apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn items(server: &BerthServer, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    json(&server.kubectl_ok(&all))["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn live_pods(server: &BerthServer, app: &str) -> Vec<Value> {
    items(server, &["pods", "-l", &format!("app={app}")])
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn rollout_status(server: &BerthServer, what: &str) {
    let out = server.kubectl(&["rollout", "status", what, "--timeout=120s"]);
    assert!(
        out.status.success(),
        "rollout status {what} failed: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
}

fn ready_since(pod: &Value) -> String {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_stateful_set_starts_in_order_with_a_volume_per_pod_and_keeps_claims_on_scale_down() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let server = &cluster.server;
    apply(server, STATEFUL_SET);
    rollout_status(server, "statefulset/web");

    let mut pods = live_pods(server, "web");
    pods.sort_by_key(|p| {
        p["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    });
    let names: Vec<&str> = pods
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["web-0", "web-1", "web-2"]);
    for (ordinal, pod) in pods.iter().enumerate() {
        let name = format!("web-{ordinal}");
        assert_eq!(pod["spec"]["hostname"], name.as_str());
        assert_eq!(pod["spec"]["subdomain"], "web");
        let labels = &pod["metadata"]["labels"];
        assert_eq!(labels["statefulset.kubernetes.io/pod-name"], name.as_str());
        assert_eq!(labels["apps.kubernetes.io/pod-index"], ordinal.to_string());
        assert_eq!(
            pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
            format!("data-{name}")
        );
    }
    // OrderedReady: each pod was created only once its predecessor was Ready (RFC 3339
    // timestamps in UTC compare as strings).
    for pair in pods.windows(2) {
        let created = pair[1]["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or_default();
        assert!(
            ready_since(&pair[0]).as_str() <= created,
            "{} was created at {created}, before {} was ready at {}",
            pair[1]["metadata"]["name"],
            pair[0]["metadata"]["name"],
            ready_since(&pair[0])
        );
    }

    eprintln!(
        "stateful set of 3 with volumes: web-0 created {}, web-2 ready {}",
        pods[0]["metadata"]["creationTimestamp"],
        ready_since(&pods[2])
    );

    // Each claim is bound to its own volume, whose directory under the data dir holds what
    // its pod wrote.
    let claims = items(server, &["pvc"]);
    assert_eq!(claims.len(), 3, "{claims:#?}");
    for ordinal in 0..3 {
        let claim = claims
            .iter()
            .find(|c| c["metadata"]["name"] == format!("data-web-{ordinal}").as_str())
            .unwrap_or_else(|| panic!("no claim data-web-{ordinal}"));
        assert_eq!(claim["status"]["phase"], "Bound");
        assert_eq!(claim["spec"]["storageClassName"], "local-path");
        let volume = claim["spec"]["volumeName"].as_str().unwrap_or_default();
        let pv = json(&server.kubectl_ok(&["get", "pv", volume, "-o", "json"]));
        assert_eq!(pv["status"]["phase"], "Bound");
        assert_eq!(pv["spec"]["claimRef"]["uid"], claim["metadata"]["uid"]);
        let file = server
            .data_dir()
            .join("storage")
            .join(volume)
            .join("whoami");
        let mut written = String::new();
        let ok = wait_until(Duration::from_secs(10), || {
            written = std::fs::read_to_string(&file).unwrap_or_default();
            !written.is_empty()
        });
        assert!(ok, "{} never appeared", file.display());
        assert_eq!(written.trim(), format!("web-{ordinal}"));
    }

    // Scale down: the highest ordinals go, their claims stay.
    server.kubectl_ok(&[
        "patch",
        "statefulset",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":1}}"#,
    ]);
    let mut last = Vec::new();
    let ok = wait_until(TIMEOUT, || {
        last = items(server, &["pods", "-l", "app=web"]);
        last.len() == 1
    });
    assert!(ok, "scale-down left {last:#?}");
    assert_eq!(last[0]["metadata"]["name"], "web-0");
    rollout_status(server, "statefulset/web");
    assert_eq!(items(server, &["pvc"]).len(), 3, "claims are kept");

    // Deleting a claim whose class reclaims with Delete removes its volume and directory.
    let claim = json(&server.kubectl_ok(&["get", "pvc", "data-web-2", "-o", "json"]));
    let volume = claim["spec"]["volumeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let dir = server.data_dir().join("storage").join(&volume);
    assert!(dir.is_dir(), "{} exists while claimed", dir.display());
    server.kubectl_ok(&["delete", "pvc", "data-web-2"]);
    let ok = wait_until(TIMEOUT, || {
        !dir.exists() && !server.kubectl(&["get", "pv", &volume]).status.success()
    });
    assert!(ok, "volume {volume} outlived its claim\n{}", server.log());

    // A template change rolls web-0 onto a new revision; history lists both and undo goes back.
    server.kubectl_ok(&["set", "env", "statefulset/web", "COLOUR=blue"]);
    rollout_status(server, "statefulset/web");
    let set = json(&server.kubectl_ok(&["get", "statefulset", "web", "-o", "json"]));
    assert_eq!(
        set["status"]["currentRevision"],
        set["status"]["updateRevision"]
    );
    let pod = json(&server.kubectl_ok(&["get", "pod", "web-0", "-o", "json"]));
    assert_eq!(
        pod["metadata"]["labels"]["controller-revision-hash"],
        set["status"]["updateRevision"]
    );
    let history = server.kubectl_ok(&["rollout", "history", "statefulset/web"]);
    let revisions: Vec<&str> = history
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["1", "2"], "history: {history}");
    server.kubectl_ok(&["rollout", "undo", "statefulset/web"]);
    rollout_status(server, "statefulset/web");
    let set = json(&server.kubectl_ok(&["get", "statefulset", "web", "-o", "json"]));
    let env = &set["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.is_null() || env.as_array().is_some_and(|e| e.is_empty()),
        "{env}"
    );

    server.kubectl_ok(&["delete", "statefulset", "web", "--wait=false"]);
}

#[test]
fn a_daemon_set_runs_one_pod_on_the_node_and_rolls_it_on_an_image_change() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let server = &cluster.server;
    apply(server, DAEMON_SET);
    rollout_status(server, "daemonset/agent");
    let pods = live_pods(server, "agent");
    assert_eq!(pods.len(), 1, "{pods:#?}");
    assert_eq!(pods[0]["spec"]["nodeName"], cluster.node.as_str());
    let first = pods[0]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ds = json(&server.kubectl_ok(&["get", "daemonset", "agent", "-o", "json"]));
    assert_eq!(ds["status"]["desiredNumberScheduled"], 1);
    assert_eq!(ds["status"]["numberReady"], 1);
    let tolerations = pods[0]["spec"]["tolerations"].to_string();
    assert!(tolerations.contains("node.kubernetes.io/unschedulable"));

    server.kubectl_ok(&[
        "set",
        "image",
        "daemonset/agent",
        "main=docker.io/library/busybox:latest",
    ]);
    rollout_status(server, "daemonset/agent");
    let mut pods = Vec::new();
    let ok = wait_until(TIMEOUT, || {
        pods = items(server, &["pods", "-l", "app=agent"]);
        pods.len() == 1
    });
    assert!(ok, "the old pod never went: {pods:#?}");
    assert_ne!(pods[0]["metadata"]["name"], first.as_str());
    assert_eq!(
        pods[0]["spec"]["containers"][0]["image"],
        "docker.io/library/busybox:latest"
    );
    let revisions = items(server, &["controllerrevisions", "-l", "app=agent"]);
    assert_eq!(revisions.len(), 2, "{revisions:#?}");

    server.kubectl_ok(&["delete", "daemonset", "agent", "--wait=false"]);
}

/// A set of `replicas` idle busybox pods labelled `app: <name>`, with `strategy` as its
/// `updateStrategy`.
fn idle_set(name: &str, replicas: u32, strategy: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {name}
spec:
  replicas: {replicas}
  serviceName: {name}
  updateStrategy: {strategy}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: busybox
        command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#
    )
}

fn get_json(server: &BerthServer, what: &str) -> Value {
    json(&server.kubectl_ok(&["get", what, "-o", "json"]))
}

fn uid(object: &Value) -> String {
    object["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn revision_of(pod: &Value) -> String {
    pod["metadata"]["labels"]["controller-revision-hash"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The value of the env var `name` in the pod's first container, if it has it.
fn env_of(pod: &Value, name: &str) -> Option<String> {
    pod["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str().map(String::from))
}

/// Waits until the set's status reports `ready` ready replicas for its latest generation.
fn wait_for_ready_set(server: &BerthServer, name: &str, ready: i64) -> Value {
    let mut set = Value::Null;
    let ok = wait_until(TIMEOUT, || {
        set = get_json(server, &format!("statefulset/{name}"));
        set["status"]["observedGeneration"] == set["metadata"]["generation"]
            && set["status"]["readyReplicas"].as_i64().unwrap_or(0) == ready
    });
    assert!(
        ok,
        "statefulset {name} never had {ready} ready pods: {set:#}"
    );
    set
}

/// Waits until pod `name` exists as another pod than `old_uid`, and returns it.
fn wait_for_replacement(server: &BerthServer, name: &str, old_uid: &str) -> Value {
    let mut pod = Value::Null;
    let ok = wait_until(TIMEOUT, || {
        let out = server.kubectl(&["get", "pod", name, "-o", "json"]);
        pod = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        !pod.is_null() && uid(&pod) != old_uid && pod["metadata"]["deletionTimestamp"].is_null()
    });
    assert!(ok, "pod {name} was never replaced: {pod:#}");
    pod
}

#[test]
fn on_delete_replaces_a_pod_only_once_deleted_and_a_partition_keeps_lower_ordinals_old() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let server = &cluster.server;
    apply(server, &idle_set("keep", 2, "{type: OnDelete}"));
    apply(
        server,
        &idle_set(
            "part",
            3,
            "{type: RollingUpdate, rollingUpdate: {partition: 2}}",
        ),
    );
    rollout_status(server, "statefulset/part");
    let keep = wait_for_ready_set(server, "keep", 2);
    let old_revision = keep["status"]["currentRevision"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let pod_uid = |name: &str| uid(&get_json(server, &format!("pod/{name}")));
    let keep_uids = [pod_uid("keep-0"), pod_uid("keep-1")];
    let part_uids = [pod_uid("part-0"), pod_uid("part-1"), pod_uid("part-2")];

    server.kubectl_ok(&[
        "set",
        "env",
        "statefulset/keep",
        "statefulset/part",
        "COLOUR=blue",
    ]);

    // RollingUpdate with partition 2: only part-2 moves to the new revision.
    let out = server.kubectl_ok(&["rollout", "status", "statefulset/part", "--timeout=120s"]);
    assert!(
        out.contains("partitioned roll out complete: 1 new pods have been updated"),
        "{out}"
    );
    let part = get_json(server, "statefulset/part");
    let part_update = part["status"]["updateRevision"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_ne!(part["status"]["currentRevision"], part_update.as_str());
    let part_2 = get_json(server, "pod/part-2");
    assert_ne!(uid(&part_2), part_uids[2]);
    assert_eq!(revision_of(&part_2), part_update);
    assert_eq!(env_of(&part_2, "COLOUR").as_deref(), Some("blue"));
    for (ordinal, old_uid) in part_uids.iter().enumerate().take(2) {
        let pod = get_json(server, &format!("pod/part-{ordinal}"));
        assert_eq!(
            &uid(&pod),
            old_uid,
            "part-{ordinal} below the partition was replaced"
        );
        assert_eq!(env_of(&pod, "COLOUR"), None);
    }

    // OnDelete: the new revision is known, and no pod was replaced while part rolled.
    let keep = get_json(server, "statefulset/keep");
    let keep_update = keep["status"]["updateRevision"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_ne!(keep_update, old_revision, "{keep:#}");
    assert_eq!(keep["status"]["currentRevision"], old_revision.as_str());
    assert_eq!(keep["status"]["updatedReplicas"], 0, "{keep:#}");
    for (ordinal, old_uid) in keep_uids.iter().enumerate() {
        let pod = get_json(server, &format!("pod/keep-{ordinal}"));
        assert_eq!(&uid(&pod), old_uid, "keep-{ordinal} was replaced undeleted");
        assert_eq!(revision_of(&pod), old_revision);
    }
    // A deleted pod comes back on the new revision; its sibling stays as it was.
    server.kubectl_ok(&["delete", "pod", "keep-1", "--wait=false"]);
    let keep_1 = wait_for_replacement(server, "keep-1", &keep_uids[1]);
    assert_eq!(revision_of(&keep_1), keep_update);
    assert_eq!(env_of(&keep_1, "COLOUR").as_deref(), Some("blue"));
    assert_eq!(pod_uid("keep-0"), keep_uids[0]);
    let keep = wait_for_ready_set(server, "keep", 2);
    assert_eq!(keep["status"]["updatedReplicas"], 1, "{keep:#}");

    // Below the partition, a deleted pod comes back on the current (old) revision.
    server.kubectl_ok(&["delete", "pod", "part-0", "--wait=false"]);
    let part_0 = wait_for_replacement(server, "part-0", &part_uids[0]);
    assert_eq!(
        revision_of(&part_0),
        revision_of(&get_json(server, "pod/part-1"))
    );
    assert_eq!(env_of(&part_0, "COLOUR"), None);

    // Partition 0 rolls the rest, and the update revision becomes the current one.
    server.kubectl_ok(&[
        "patch",
        "statefulset",
        "part",
        "--type=merge",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ]);
    let out = server.kubectl_ok(&["rollout", "status", "statefulset/part", "--timeout=120s"]);
    assert!(
        out.contains("partitioned roll out complete: 3 new pods have been updated"),
        "{out}"
    );
    let mut part = Value::Null;
    let ok = wait_until(TIMEOUT, || {
        part = get_json(server, "statefulset/part");
        part["status"]["currentRevision"] == part_update.as_str()
    });
    assert!(ok, "the current revision never caught up: {part:#}");
    for pod in live_pods(server, "part") {
        assert_eq!(revision_of(&pod), part_update, "{pod:#}");
    }
}

#[test]
fn a_parallel_set_creates_and_removes_its_pods_without_waiting_for_each_other() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let server = &cluster.server;
    // Never ready, and slow to stop: an ordered set would create only par-0, and remove one
    // pod at a time.
    let manifest = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: par
spec:
  replicas: 3
  serviceName: par
  podManagementPolicy: Parallel
  selector:
    matchLabels: {app: par}
  template:
    metadata:
      labels: {app: par}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: main
        image: busybox
        command: ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]
        readinessProbe:
          exec: {command: ["cat", "/never"]}
          periodSeconds: 1
"#;
    apply(server, manifest);
    let mut pods = Vec::new();
    let ok = wait_until(TIMEOUT, || {
        pods = live_pods(server, "par");
        pods.len() == 3 && pods.iter().all(|p| p["status"]["phase"] == "Running")
    });
    assert!(ok, "not all three pods were created and running: {pods:#?}");
    assert!(
        pods.iter().all(|p| ready_since(p).is_empty()),
        "a pod became ready: {pods:#?}"
    );
    let set = get_json(server, "statefulset/par");
    assert_eq!(set["status"]["replicas"], 3, "{set:#}");
    assert_eq!(set["status"]["readyReplicas"].as_i64().unwrap_or(0), 0);

    server.kubectl_ok(&["scale", "statefulset/par", "--replicas=0"]);
    let mut terminating = Vec::new();
    let ok = wait_until(TIMEOUT, || {
        terminating = items(server, &["pods", "-l", "app=par"])
            .into_iter()
            .filter(|p| !p["metadata"]["deletionTimestamp"].is_null())
            .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
            .collect();
        terminating.len() == 3
    });
    assert!(
        ok,
        "the pods were not all terminating at once: {terminating:?}"
    );
    let ok = wait_until(TIMEOUT, || {
        items(server, &["pods", "-l", "app=par"]).is_empty()
    });
    assert!(ok, "the terminating pods never went");
}
