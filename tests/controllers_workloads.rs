//! Deployments rolled with `strategy: Recreate` and ReplicationControllers, driven with the
//! real kubectl against a real `berth server` running real busybox containers in a test-made
//! network namespace. Needs root (network namespaces, cgroups); CI runs as root.

mod common;

use std::io::BufReader;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::cluster::Cluster;
use common::netns::Netns;
use common::server::BerthServer;
use common::{tools, wait_until};
use serde_json::{json, Value};

fn items(server: &BerthServer, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let list: Value = serde_json::from_str(&server.kubectl_ok(&all)).unwrap_or(Value::Null);
    list["items"].as_array().cloned().unwrap_or_default()
}

fn name_of(object: &Value) -> String {
    object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Pods labelled `app` that are not being deleted.
fn live_pods(server: &BerthServer, app: &str) -> Vec<Value> {
    items(server, &["pods", "-l", &format!("app={app}")])
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

/// Waits until `app` has `count` live pods, all Running, and returns them.
fn wait_for_running(server: &BerthServer, app: &str, count: usize) -> Vec<Value> {
    let mut last = Vec::new();
    let ok = wait_until(Duration::from_secs(90), || {
        last = live_pods(server, app);
        last.len() == count && last.iter().all(|p| p["status"]["phase"] == "Running")
    });
    assert!(
        ok,
        "{app} never had {count} running pods: {last:#?}\n{}",
        server.log()
    );
    last
}

/// A pod template whose container ignores SIGTERM, so that a deleted pod stays Terminating
/// for its whole grace period: long enough to see what a controller does meanwhile.
fn stubborn_template(app: &str, grace: i64) -> Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {
            "terminationGracePeriodSeconds": grace,
            "containers": [{"name": "main", "image": "busybox",
                "command": ["sh", "-c", "trap '' TERM; exec sleep 3600"]}],
        },
    })
}

/// `kubectl get --watch` in the background, collecting its events in order.
struct Watch {
    child: Child,
    reader: Option<JoinHandle<()>>,
    events: Arc<Mutex<Vec<Value>>>,
}

impl Watch {
    fn start(server: &BerthServer, args: &[&str]) -> Watch {
        let mut child = server
            .command(&tools::kubectl())
            .args(["get", "--watch", "--output-watch-events", "-o", "json"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kubectl get --watch");
        let stdout = child.stdout.take().expect("kubectl's stdout");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let reader = std::thread::spawn(move || {
            let stream = serde_json::Deserializer::from_reader(BufReader::new(stdout));
            for event in stream.into_iter::<Value>().map_while(Result::ok) {
                if let Ok(mut events) = sink.lock() {
                    events.push(event);
                }
            }
        });
        Watch {
            child,
            reader: Some(reader),
            events,
        }
    }

    fn events(&self) -> Vec<Value> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Stops kubectl and returns every event it printed.
    fn stop(mut self) -> Vec<Value> {
        self.end();
        self.events()
    }

    fn end(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.end();
    }
}

fn template_hash(pod: &Value) -> &str {
    pod["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap_or_default()
}

/// Replays pod watch events in order and returns, for the first event showing a pod of the
/// template hash `new`, the pods of `old` still in the API at that moment.
fn old_pods_when_the_first_new_one_appeared(
    events: &[Value],
    old: &str,
    new: &str,
) -> Option<Vec<String>> {
    let mut present: Vec<String> = Vec::new();
    for event in events {
        let pod = &event["object"];
        let name = name_of(pod);
        let hash = template_hash(pod);
        if hash == new {
            return Some(present);
        }
        if hash != old {
            continue;
        }
        if event["type"] == "DELETED" {
            present.retain(|p| *p != name);
        } else if !present.contains(&name) {
            present.push(name);
        }
    }
    None
}

#[test]
fn a_recreate_deployment_removes_every_old_pod_before_it_creates_a_new_one() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let server = &cluster.server;
    cluster.create(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "recreate"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "recreate"}},
            "strategy": {"type": "Recreate"},
            "template": stubborn_template("recreate", 3),
        },
    }));
    server.kubectl_ok(&["rollout", "status", "deployment/recreate", "--timeout=120s"]);
    let old_pods = wait_for_running(server, "recreate", 2);
    let old_hash = template_hash(&old_pods[0]).to_string();

    // Watch the pods from before the template changes to after the rollout: the watch keeps
    // the API's order of events, which polling could not show.
    let watch = Watch::start(server, &["pods", "-l", "app=recreate"]);
    let listed = wait_until(Duration::from_secs(30), || watch.events().len() >= 2);
    assert!(
        listed,
        "the watch lists the two pods: {:#?}",
        watch.events()
    );
    server.kubectl_ok(&[
        "patch",
        "deployment",
        "recreate",
        "--type=merge",
        "-p",
        r#"{"spec":{"template":{"metadata":{"annotations":{"round":"2"}}}}}"#,
    ]);
    server.kubectl_ok(&["rollout", "status", "deployment/recreate", "--timeout=120s"]);
    let new_pods = wait_for_running(server, "recreate", 2);
    let new_hash = template_hash(&new_pods[0]).to_string();
    assert_ne!(
        new_hash, old_hash,
        "the new pods come from a new ReplicaSet"
    );
    let events = watch.stop();

    let left = old_pods_when_the_first_new_one_appeared(&events, &old_hash, &new_hash)
        .unwrap_or_else(|| panic!("the watch saw no new pod: {events:#?}"));
    assert!(
        left.is_empty(),
        "old pods {left:?} were still there when the first new pod was created"
    );
    let deleted = events
        .iter()
        .filter(|e| e["type"] == "DELETED" && template_hash(&e["object"]) == old_hash)
        .count();
    assert_eq!(deleted, 2, "both old pods went: {events:#?}");

    let sets = items(server, &["replicasets", "-l", "app=recreate"]);
    let replicas_of = |hash: &str| {
        sets.iter()
            .find(|rs| rs["metadata"]["labels"]["pod-template-hash"] == hash)
            .map(|rs| rs["spec"]["replicas"].clone())
    };
    assert_eq!(replicas_of(&old_hash), Some(json!(0)), "{sets:#?}");
    assert_eq!(replicas_of(&new_hash), Some(json!(2)), "{sets:#?}");
    let deployment: Value =
        serde_json::from_str(&server.kubectl_ok(&["get", "deployment", "recreate", "-o", "json"]))
            .unwrap_or(Value::Null);
    assert_eq!(
        deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "2",
        "{deployment:#}"
    );
    assert_eq!(deployment["status"]["updatedReplicas"], 2, "{deployment:#}");
    server.kubectl_ok(&["delete", "deployment", "recreate", "--cascade=background"]);
}

fn owner_of(pod: &Value) -> Option<(String, bool)> {
    let owner = pod["metadata"]["ownerReferences"].as_array()?.first()?;
    Some((
        format!(
            "{}/{}",
            owner["kind"].as_str().unwrap_or_default(),
            owner["name"].as_str().unwrap_or_default()
        ),
        owner["controller"] == true,
    ))
}

fn get(server: &BerthServer, what: &str) -> Value {
    serde_json::from_str(&server.kubectl_ok(&["get", what, "-o", "json"])).unwrap_or(Value::Null)
}

#[test]
fn a_replication_controller_keeps_its_replicas_adopts_and_releases_by_selector_and_scales() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let server = &cluster.server;
    // A pod the selector matches, there before its controller: adopted, not duplicated.
    let mut stray = stubborn_template("rc", 1);
    stray["apiVersion"] = json!("v1");
    stray["kind"] = json!("Pod");
    stray["metadata"]["name"] = json!("stray");
    cluster.create(stray);
    wait_for_running(server, "rc", 1);
    cluster.create(json!({
        "apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "keeper"},
        "spec": {"replicas": 2, "selector": {"app": "rc"},
            "template": stubborn_template("rc", 1)},
    }));
    let pods = wait_for_running(server, "rc", 2);
    let adopted = wait_until(Duration::from_secs(30), || {
        owner_of(&get(server, "pod/stray")) == Some(("ReplicationController/keeper".into(), true))
    });
    assert!(
        adopted,
        "the stray pod was adopted: {:#}",
        get(server, "pod/stray")
    );
    for pod in &pods {
        assert_eq!(
            owner_of(pod),
            Some(("ReplicationController/keeper".into(), true)),
            "{pod:#}"
        );
    }

    // A deleted pod is replaced.
    let victim = pods
        .iter()
        .map(name_of)
        .find(|n| n != "stray")
        .unwrap_or_default();
    server.kubectl_ok(&["delete", "pod", &victim, "--wait=false"]);
    let replaced = wait_for_running(server, "rc", 2);
    assert!(
        replaced.iter().all(|p| name_of(p) != victim),
        "{replaced:#?}"
    );

    // A pod relabelled out of the selector is released, and another takes its place.
    server.kubectl_ok(&["label", "pod", "stray", "app=elsewhere", "--overwrite"]);
    let released = wait_until(Duration::from_secs(30), || {
        get(server, "pod/stray")["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|r| r.is_empty())
    });
    assert!(
        released,
        "the relabelled pod was released: {:#}",
        get(server, "pod/stray")
    );
    let kept = wait_for_running(server, "rc", 2);
    assert!(kept.iter().all(|p| name_of(p) != "stray"), "{kept:#?}");

    // `kubectl scale rc` goes through the scale subresource; the status follows.
    server.kubectl_ok(&["scale", "rc", "keeper", "--replicas=3"]);
    wait_for_running(server, "rc", 3);
    let counted = wait_until(Duration::from_secs(30), || {
        let rc = get(server, "rc/keeper");
        rc["status"]["replicas"] == 3 && rc["status"]["readyReplicas"] == 3
    });
    assert!(
        counted,
        "status after scaling up: {:#}",
        get(server, "rc/keeper")
    );
    server.kubectl_ok(&["scale", "rc", "keeper", "--replicas=1"]);
    wait_for_running(server, "rc", 1);
    let settled = wait_until(Duration::from_secs(30), || {
        let rc = get(server, "rc/keeper");
        rc["status"]["replicas"] == 1
            && rc["status"]["observedGeneration"] == rc["metadata"]["generation"]
            && items(server, &["pods", "-l", "app=rc"]).len() == 1
    });
    assert!(
        settled,
        "status after scaling down: {:#}",
        get(server, "rc/keeper")
    );
    // Once settled, its controller leaves it alone: no status written again and again.
    let version = || get(server, "rc/keeper")["metadata"]["resourceVersion"].clone();
    let before = version();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        before,
        version(),
        "a settled ReplicationController keeps changing"
    );

    server.kubectl_ok(&["delete", "rc", "keeper", "--cascade=background"]);
    server.kubectl_ok(&["delete", "pod", "stray", "--wait=false"]);
}
