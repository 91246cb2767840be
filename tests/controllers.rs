//! The scheduler and core controllers, driven with the real kubectl against a real
//! `berth server` in a test-made network namespace. Needs root (network namespaces); CI runs as
//! root.
//!
//! Pods do not run yet in these tests (no images), so nothing becomes ready: the assertions
//! count objects, labels, owners and sizes, never readiness. Pods bound to a node are deleted
//! with a grace period and stay "Terminating" until their kubelet confirms, so pod counts
//! below are of pods not being deleted.

mod common;

use std::time::Duration;

use common::netns::Netns;
use common::server::BerthServer;
use common::wait_until;
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(30);

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn apply(server: &BerthServer, manifest: &str) {
    let out = server.kubectl_stdin(&["apply", "--validate=false", "-f", "-"], manifest);
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
    let list = json(&server.kubectl_ok(&all));
    list["items"].as_array().cloned().unwrap_or_default()
}

/// Pods of `app` that are not being deleted.
fn live_pods(server: &BerthServer, app: &str) -> Vec<Value> {
    items(server, &["pods", "-l", &format!("app={app}")])
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn wait_for_live_pods(server: &BerthServer, app: &str, count: usize) -> Vec<Value> {
    let mut last = Vec::new();
    let ok = wait_until(TIMEOUT, || {
        last = live_pods(server, app);
        last.len() == count
    });
    assert!(
        ok,
        "expected {count} live pods of {app}, have {}: {}\n{}",
        last.len(),
        serde_json::to_string_pretty(&last).unwrap_or_default(),
        server.log()
    );
    last
}

/// `kubectl scale` needs the scale subresource, which the API server does not serve yet.
fn scale(server: &BerthServer, name: &str, replicas: u32) {
    let patch = format!(r#"{{"spec":{{"replicas":{replicas}}}}}"#);
    server.kubectl_ok(&["patch", "deployment", name, "--type=merge", "-p", &patch]);
}

/// `kubectl set image` sends a strategic merge patch of a list, not taken yet: same via JSON patch.
fn set_image(server: &BerthServer, name: &str, image: &str) {
    let patch = format!(
        r#"[{{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"{image}"}}]"#
    );
    server.kubectl_ok(&["patch", "deployment", name, "--type=json", "-p", &patch]);
}

fn replica_sets(server: &BerthServer, app: &str) -> Vec<Value> {
    items(server, &["replicasets", "-l", &format!("app={app}")])
}

fn spec_replicas(rs: &Value) -> i64 {
    rs["spec"]["replicas"].as_i64().unwrap_or(0)
}

fn revision(rs: &Value) -> String {
    rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn deployment(name: &str, replicas: u32, image: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 1, maxUnavailable: "100%"}}
  template:
    metadata:
      labels: {{app: {name}, tier: front}}
    spec:
      containers:
      - name: web
        image: {image}
        command: ["httpd", "-f", "-p", "8080"]
        ports:
        - {{name: http, containerPort: 8080}}
"#
    )
}

#[test]
fn a_deployment_keeps_its_pods_through_scaling_and_pod_deletion() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    apply(&server, &deployment("web", 3, "busybox:1"));

    let pods = wait_for_live_pods(&server, "web", 3);
    let sets = replica_sets(&server, "web");
    assert_eq!(sets.len(), 1, "one ReplicaSet per template");
    let rs = &sets[0];
    let rs_name = rs["metadata"]["name"].as_str().unwrap();
    let hash = rs["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap();
    assert_eq!(rs_name, format!("web-{hash}"));
    assert_eq!(revision(rs), "1");
    for pod in &pods {
        assert_eq!(pod["metadata"]["labels"]["tier"], "front");
        assert_eq!(pod["metadata"]["labels"]["pod-template-hash"], hash);
        let name = pod["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with(&format!("{rs_name}-")) && name.len() == rs_name.len() + 6);
        let owner = &pod["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "ReplicaSet");
        assert_eq!(owner["name"], rs_name);
        assert_eq!(owner["controller"], true);
    }

    // The scheduler binds every pod to the one node.
    let node = json(&server.kubectl_ok(&["get", "nodes", "-o", "json"]))["items"][0]["metadata"]
        ["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(wait_until(TIMEOUT, || live_pods(&server, "web")
        .iter()
        .all(|p| p["spec"]["nodeName"] == node.as_str())));

    scale(&server, "web", 5);
    wait_for_live_pods(&server, "web", 5);
    scale(&server, "web", 1);
    let survivors = wait_for_live_pods(&server, "web", 1);

    let victim = survivors[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    server.kubectl_ok(&["delete", "pod", &victim, "--wait=false"]);
    let replaced = wait_for_live_pods(&server, "web", 1);
    assert_ne!(replaced[0]["metadata"]["name"], victim.as_str());

    // Once settled, nothing is rewritten: no controller wakes itself with its own writes.
    std::thread::sleep(Duration::from_secs(2));
    let versions = || {
        let d = json(&server.kubectl_ok(&["get", "deployment", "web", "-o", "json"]));
        let sets = replica_sets(&server, "web");
        (
            d["metadata"]["resourceVersion"].clone(),
            sets[0]["metadata"]["resourceVersion"].clone(),
        )
    };
    let before = versions();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        before,
        versions(),
        "a settled Deployment or ReplicaSet keeps changing"
    );

    let d = json(&server.kubectl_ok(&["get", "deployment", "web", "-o", "json"]));
    assert_eq!(
        d["status"]["observedGeneration"],
        d["metadata"]["generation"]
    );
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );

    // The Deployment goes, and with it (garbage collection) its ReplicaSet and pods.
    server.kubectl_ok(&["delete", "deployment", "web", "--wait=false"]);
    assert!(wait_until(TIMEOUT, || replica_sets(&server, "web").is_empty()));
    wait_for_live_pods(&server, "web", 0);
}

#[test]
fn a_template_change_rolls_over_to_a_new_replica_set_and_undo_rolls_back() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    apply(&server, &deployment("app", 3, "busybox:1"));
    wait_for_live_pods(&server, "app", 3);

    set_image(&server, "app", "busybox:2");
    let mut sets = Vec::new();
    let rolled = wait_until(TIMEOUT, || {
        sets = replica_sets(&server, "app");
        sets.len() == 2
            && sets
                .iter()
                .any(|rs| revision(rs) == "2" && spec_replicas(rs) == 3)
            && sets
                .iter()
                .any(|rs| revision(rs) == "1" && spec_replicas(rs) == 0)
    });
    assert!(rolled, "rollover did not finish: {sets:#?}");
    let pods = wait_for_live_pods(&server, "app", 3);
    assert!(pods
        .iter()
        .all(|p| p["spec"]["containers"][0]["image"] == "busybox:2"));

    // Undo copies the old template back: the old ReplicaSet becomes revision 3. (`kubectl
    // rollout undo` sends a strategic merge patch the API server does not take yet; this is the
    // same change to the template.)
    set_image(&server, "app", "busybox:1");
    let undone = wait_until(TIMEOUT, || {
        sets = replica_sets(&server, "app");
        sets.len() == 2
            && sets.iter().any(|rs| {
                revision(rs) == "3"
                    && spec_replicas(rs) == 3
                    && rs["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox:1"
            })
    });
    assert!(undone, "undo did not converge: {sets:#?}");

    // Restart changes an annotation of the template: a third ReplicaSet.
    server.kubectl_ok(&["rollout", "restart", "deployment/app"]);
    assert!(wait_until(TIMEOUT, || {
        sets = replica_sets(&server, "app");
        sets.len() == 3
            && sets
                .iter()
                .any(|rs| revision(rs) == "4" && spec_replicas(rs) == 3)
    }));
    let history = server.kubectl_ok(&["rollout", "history", "deployment/app"]);
    assert!(history.contains('4'), "{history}");

    let d = json(&server.kubectl_ok(&["get", "deployment", "app", "-o", "json"]));
    let reasons: Vec<&str> = d["status"]["conditions"]
        .as_array()
        .map(|cs| cs.iter().filter_map(|c| c["type"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        reasons.contains(&"Progressing") && reasons.contains(&"Available"),
        "{d:#}"
    );
}

#[test]
fn services_get_endpoint_slices_and_namespaces_get_their_defaults() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    apply(
        &server,
        "{\"apiVersion\": \"v1\", \"kind\": \"Namespace\", \"metadata\": {\"name\": \"team\"}}",
    );
    assert!(wait_until(TIMEOUT, || {
        server
            .kubectl(&["get", "serviceaccount", "default", "-n", "team"])
            .status
            .success()
    }));
    let ca = json(&server.kubectl_ok(&[
        "get",
        "configmap",
        "kube-root-ca.crt",
        "-n",
        "team",
        "-o",
        "json",
    ]));
    assert!(ca["data"]["ca.crt"]
        .as_str()
        .unwrap_or("")
        .contains("BEGIN CERTIFICATE"));
    // The controller follows that one ConfigMap: deleted, it is published again.
    server.kubectl_ok(&["delete", "configmap", "kube-root-ca.crt", "-n", "team"]);
    assert!(
        wait_until(TIMEOUT, || server
            .kubectl(&["get", "configmap", "kube-root-ca.crt", "-n", "team"])
            .status
            .success()),
        "kube-root-ca.crt is published again after a delete"
    );

    apply(
        &server,
        r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: team}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"#,
    );
    let mut slices = Vec::new();
    assert!(wait_until(TIMEOUT, || {
        slices = items(
            &server,
            &[
                "endpointslices",
                "-n",
                "team",
                "-l",
                "kubernetes.io/service-name=web",
            ],
        );
        slices.len() == 1
    }));
    assert_eq!(
        slices[0]["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert!(wait_until(TIMEOUT, || server
        .kubectl(&["get", "endpoints", "web", "-n", "team"])
        .status
        .success()));
}

#[test]
fn a_pod_too_big_for_the_node_is_reported_unschedulable() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    apply(
        &server,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: huge}
spec:
  containers:
  - name: c
    image: busybox
    resources: {requests: {cpu: "1000"}}
"#,
    );
    let mut pod = Value::Null;
    let reported = wait_until(TIMEOUT, || {
        pod = json(&server.kubectl_ok(&["get", "pod", "huge", "-o", "json"]));
        pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| {
                c["type"] == "PodScheduled"
                    && c["status"] == "False"
                    && c["reason"] == "Unschedulable"
            })
    });
    assert!(reported, "{pod:#}");
    assert!(pod["spec"]["nodeName"].is_null());
    // Events are recorded through events.k8s.io/v1 (as upstream's scheduler does).
    let events = items(&server, &["events.v1.events.k8s.io"]);
    let failed = events
        .iter()
        .find(|e| e["regarding"]["name"] == "huge" && e["reason"] == "FailedScheduling");
    let failed = failed.unwrap_or_else(|| panic!("no FailedScheduling event: {events:#?}"));
    assert_eq!(failed["type"], "Warning");
    assert_eq!(
        failed["note"],
        "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: \
         1 No preemption victims found for incoming pod."
    );
    assert_eq!(failed["reportingController"], "default-scheduler");
}

/// One Deployment of a canary pair: both select `app: <app>`, each adds its own `track`.
fn track(app: &str, track: &str, replicas: u32) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {app}-{track}
spec:
  replicas: {replicas}
  progressDeadlineSeconds: 5
  selector:
    matchLabels: {{app: {app}, track: {track}}}
  template:
    metadata:
      labels: {{app: {app}, track: {track}}}
    spec:
      containers:
      - name: web
        image: busybox:1
        command: ["httpd", "-f", "-p", "8080"]
"#
    )
}

#[test]
fn canary_deployments_behind_one_label_keep_their_own_sizes_and_a_stuck_rollout_says_so() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    apply(&server, &track("shop", "stable", 3));
    apply(&server, &track("shop", "canary", 1));

    // Four pods answer to app=shop: three stable, one canary; neither Deployment adopts the
    // other's.
    let pods = wait_for_live_pods(&server, "shop", 4);
    let on_track = |t: &str| {
        pods.iter()
            .filter(|p| p["metadata"]["labels"]["track"] == t)
            .count()
    };
    assert_eq!((on_track("stable"), on_track("canary")), (3, 1));
    for (name, size) in [("shop-stable", 3), ("shop-canary", 1)] {
        let sets = items(&server, &["rs", "-l", "app=shop"]);
        let owned: Vec<&Value> = sets
            .iter()
            .filter(|rs| rs["metadata"]["ownerReferences"][0]["name"] == name)
            .collect();
        assert_eq!(owned.len(), 1, "{name}: {sets:#?}");
        assert_eq!(spec_replicas(owned[0]), size);
    }

    // Nothing here ever becomes available (no image to run): past progressDeadlineSeconds the
    // rollout is reported stuck, as upstream words it.
    let mut condition = Value::Null;
    let stuck = wait_until(TIMEOUT, || {
        let d = json(&server.kubectl_ok(&["get", "deployment", "shop-canary", "-o", "json"]));
        condition = d["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Progressing").cloned())
            .unwrap_or(Value::Null);
        condition["reason"] == "ProgressDeadlineExceeded"
    });
    assert!(stuck, "{condition:#}");
    assert_eq!(condition["status"], "False");
    assert_eq!(
        condition["message"],
        format!(
            "ReplicaSet \"{}\" has timed out progressing.",
            items(&server, &["rs", "-l", "track=canary"])[0]["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
        )
    );
    let status = server.kubectl(&[
        "rollout",
        "status",
        "deployment/shop-canary",
        "--timeout=20s",
    ]);
    assert!(!status.status.success());
    assert!(
        String::from_utf8_lossy(&status.stderr).contains("exceeded its progress deadline"),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}

/// Any kind can own objects. The first ConfigMap owner's dependents are collected by the
/// collector's periodic sweep (once a minute); that sweep also teaches it that ConfigMaps own
/// things, so the second one's are collected as soon as it goes, without waiting for a sweep.
#[test]
fn objects_owned_by_a_config_map_are_collected_when_it_goes() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    // The first round may wait for the periodic sweep; the second must not need one.
    for (round, patience) in [("first", Duration::from_secs(120)), ("second", TIMEOUT)] {
        let owner = format!("owner-{round}");
        let dependent = format!("dependent-{round}");
        apply(
            &server,
            &format!(
                r#"{{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {{"name": "{owner}"}}}}"#
            ),
        );
        let uid =
            server.kubectl_ok(&["get", "configmap", &owner, "-o", "jsonpath={.metadata.uid}"]);
        apply(
            &server,
            &format!(
                r#"{{"apiVersion": "v1", "kind": "Secret", "metadata": {{"name": "{dependent}",
                    "ownerReferences": [{{"apiVersion": "v1", "kind": "ConfigMap",
                    "name": "{owner}", "uid": "{}"}}]}}, "stringData": {{"k": "v"}}}}"#,
                uid.trim()
            ),
        );
        server.kubectl_ok(&["delete", "configmap", &owner]);
        assert!(
            wait_until(patience, || {
                !server
                    .kubectl(&["get", "secret", &dependent])
                    .status
                    .success()
            }),
            "the {round} dependent Secret outlived its ConfigMap owner by {patience:?}"
        );
    }
    // An object with a live owner stays.
    apply(
        &server,
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner-kept"}}"#,
    );
    let uid = server.kubectl_ok(&[
        "get",
        "configmap",
        "owner-kept",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    apply(
        &server,
        &format!(
            r#"{{"apiVersion": "v1", "kind": "Secret", "metadata": {{"name": "dependent-kept",
                "ownerReferences": [{{"apiVersion": "v1", "kind": "ConfigMap",
                "name": "owner-kept", "uid": "{}"}}]}}}}"#,
            uid.trim()
        ),
    );
    // Another ConfigMap's deletion makes the collector sweep (debounced by a second).
    apply(
        &server,
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "unrelated"}}"#,
    );
    server.kubectl_ok(&["delete", "configmap", "unrelated"]);
    std::thread::sleep(Duration::from_secs(5));
    server.kubectl_ok(&["get", "secret", "dependent-kept"]);
}
