//! `kubectl rollout pause` / `resume` through the real kubectl against a real `berth server` in
//! a test-made network namespace. Pods need not run: the assertions count ReplicaSets and read
//! conditions. Needs root (network namespaces); CI runs as root.

mod common;

use std::time::Duration;

use common::netns::Netns;
use common::server::BerthServer;
use common::wait_until;
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(30);

const DEPLOYMENT: &str = r#"{
  "apiVersion": "apps/v1", "kind": "Deployment",
  "metadata": {"name": "app"},
  "spec": {
    "replicas": 2,
    "selector": {"matchLabels": {"app": "app"}},
    "template": {
      "metadata": {"labels": {"app": "app"}},
      "spec": {"containers": [{"name": "web", "image": "busybox:1", "command": ["sleep", "3600"]}]}
    }
  }
}"#;

fn replica_set_images(server: &BerthServer) -> Vec<String> {
    let list: Value =
        serde_json::from_str(&server.kubectl_ok(&["get", "rs", "-l", "app=app", "-o", "json"]))
            .unwrap_or(Value::Null);
    let mut images: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|rs| {
            rs["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    images.sort();
    images
}

fn progressing_reason(server: &BerthServer) -> String {
    server.kubectl_ok(&[
        "get",
        "deployment",
        "app",
        "-o",
        r#"jsonpath={.status.conditions[?(@.type=="Progressing")].reason}"#,
    ])
}

#[test]
fn a_paused_deployment_makes_no_new_replica_set_until_it_is_resumed() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let created = server.kubectl_stdin(&["create", "-f", "-"], DEPLOYMENT);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert!(
        wait_until(TIMEOUT, || replica_set_images(&server) == ["busybox:1"]),
        "no first ReplicaSet: {:?}",
        replica_set_images(&server)
    );

    let paused = server.kubectl_ok(&["rollout", "pause", "deployment/app"]);
    assert!(paused.contains("paused"), "{paused}");
    assert!(
        wait_until(TIMEOUT, || progressing_reason(&server)
            == "DeploymentPaused"),
        "Progressing never said DeploymentPaused: {}",
        progressing_reason(&server)
    );
    server.kubectl_ok(&[
        "patch",
        "deployment",
        "app",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"busybox:2"}]"#,
    ]);
    // Long enough for several reconciles: a paused rollout must not start.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(replica_set_images(&server), ["busybox:1"]);
    let observed = server.kubectl_ok(&[
        "get",
        "deployment",
        "app",
        "-o",
        "jsonpath={.metadata.generation} {.status.observedGeneration}",
    ]);
    let (generation, seen) = observed.trim().split_once(' ').unwrap_or(("", "-"));
    assert_eq!(
        generation, seen,
        "a paused deployment still observes its generation"
    );

    let resumed = server.kubectl_ok(&["rollout", "resume", "deployment/app"]);
    assert!(resumed.contains("resumed"), "{resumed}");
    assert!(
        wait_until(TIMEOUT, || replica_set_images(&server)
            == ["busybox:1", "busybox:2"]),
        "resuming started no rollout: {:?}",
        replica_set_images(&server)
    );
    let history = server.kubectl_ok(&["rollout", "history", "deployment/app"]);
    assert!(history.contains('2'), "{history}");
    assert_ne!(progressing_reason(&server), "DeploymentPaused");
}
