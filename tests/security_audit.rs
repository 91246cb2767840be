//! The audit log records who wrote what: a Deployment created with kubectl appears with the
//! admin user, verb `create` and its objectRef; reads are not logged by the default policy, and
//! a policy file from the config file changes what is kept.
//!
//! Needs root (network namespaces).

mod common;

use common::netns::Netns;
use common::server::BerthServer;
use serde_json::Value;

fn events(server: &BerthServer) -> Vec<Value> {
    let text =
        std::fs::read_to_string(server.data_dir().join("audit/audit.log")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON event"))
        .collect()
}

#[test]
fn a_deployment_created_with_kubectl_is_in_the_audit_log_with_its_author() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    server.kubectl_ok(&["create", "deployment", "audited", "--image=busybox"]);
    server.kubectl_ok(&["get", "deployments"]);
    let all = events(&server);
    let created: Vec<&Value> = all
        .iter()
        .filter(|e| e["objectRef"]["resource"] == "deployments" && e["objectRef"]["name"].is_null())
        .collect();
    assert_eq!(created.len(), 1, "{all:?}");
    let event = created[0];
    assert_eq!(event["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(event["kind"], "Event");
    assert_eq!(event["verb"], "create");
    assert_eq!(event["stage"], "ResponseComplete");
    assert_eq!(event["level"], "Metadata");
    assert_eq!(event["user"]["username"], "admin");
    assert_eq!(event["objectRef"]["namespace"], "default");
    assert_eq!(event["objectRef"]["apiGroup"], "apps");
    assert_eq!(event["objectRef"]["apiVersion"], "v1");
    assert_eq!(event["responseStatus"]["code"], 201);
    assert_eq!(event["sourceIPs"][0], "127.0.0.1");
    assert!(event["auditID"].as_str().is_some_and(|id| id.len() == 36));
    assert!(
        event["requestObject"].is_null(),
        "Metadata level keeps no body"
    );
    assert!(
        all.iter()
            .all(|e| e["verb"] != "get" && e["verb"] != "list"),
        "reads are not logged by default"
    );
}

#[test]
fn a_policy_file_selects_levels_per_resource() {
    let ns = Netns::new();
    let mut server = BerthServer::start(&ns);
    let policy = server.data_dir().join("audit-policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: None\n    resources:\n      - group: \"\"\n        resources: [\"secrets\"]\n  - level: Request\n    resources:\n      - group: \"\"\n        resources: [\"configmaps\"]\n",
    )
    .unwrap();
    std::fs::write(
        server.data_dir().join("test-config.toml"),
        format!("[audit]\npolicy_file = \"{}\"\n", policy.display()),
    )
    .unwrap();
    server.restart();
    server.kubectl_ok(&["create", "configmap", "kept", "--from-literal=k=v"]);
    server.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "hidden",
        "--from-literal=k=v",
    ]);
    let all = events(&server);
    let configmap = all
        .iter()
        .find(|e| e["objectRef"]["resource"] == "configmaps" && e["verb"] == "create")
        .expect("the configmap create is logged");
    assert_eq!(configmap["level"], "Request");
    assert_eq!(configmap["requestObject"]["metadata"]["name"], "kept");
    assert!(all.iter().all(|e| e["objectRef"]["resource"] != "secrets"));
}
