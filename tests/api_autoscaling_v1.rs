//! The autoscaling/v1 HorizontalPodAutoscaler, served by conversion from the stored
//! autoscaling/v2 object, through the real kubectl against a real `berth server` in a test-made
//! network namespace. Needs root (network namespaces); CI runs as root.

mod common;

use common::netns::Netns;
use common::server::BerthServer;
use serde_json::{json, Value};

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn get(server: &BerthServer, resource: &str) -> Value {
    parse(&server.kubectl_ok(&["get", resource, "web", "-o", "json"]))
}

const HPA_V1: &str = r#"{
  "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
  "metadata": {"name": "web"},
  "spec": {
    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
    "minReplicas": 1, "maxReplicas": 4, "targetCPUUtilizationPercentage": 50
  }
}"#;

#[test]
fn an_autoscaler_written_as_v1_reads_as_v2_and_back_and_v1_writes_keep_v2_only_metrics() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);

    let versions = server.kubectl_ok(&["api-versions"]);
    for gv in ["autoscaling/v1", "autoscaling/v2"] {
        assert!(
            versions.lines().any(|l| l == gv),
            "api-versions lacks {gv}:\n{versions}"
        );
    }
    // The preferred version stays v2, as upstream.
    let resources = server.kubectl_ok(&["api-resources", "--api-group=autoscaling"]);
    assert!(resources.contains("autoscaling/v2"), "{resources}");

    let created = server.kubectl_stdin(&["create", "-f", "-"], HPA_V1);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let v2 = get(&server, "horizontalpodautoscalers.v2.autoscaling");
    assert_eq!(v2["apiVersion"], "autoscaling/v2");
    assert_eq!(
        v2["spec"]["metrics"],
        json!([{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 50}}}])
    );
    assert_eq!(v2["spec"]["maxReplicas"], 4);

    let v1 = get(&server, "horizontalpodautoscalers.v1.autoscaling");
    assert_eq!(v1["apiVersion"], "autoscaling/v1");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
    assert_eq!(v1["spec"]["scaleTargetRef"]["name"], "web");
    assert!(v1["spec"].get("metrics").is_none(), "{v1:#}");
    assert!(v1["metadata"].get("annotations").is_none(), "{v1:#}");
    assert_eq!(v1["metadata"]["uid"], v2["metadata"]["uid"]);

    // A metric only v2 can express, then a v1 merge patch of the CPU target: both survive.
    server.kubectl_ok(&[
        "patch", "horizontalpodautoscalers.v2.autoscaling", "web", "--type=json", "-p",
        r#"[{"op":"add","path":"/spec/metrics/-","value":{"type":"Resource","resource":{"name":"memory","target":{"type":"AverageValue","averageValue":"100Mi"}}}}]"#,
    ]);
    let patched = server.kubectl_ok(&[
        "patch",
        "horizontalpodautoscalers.v1.autoscaling",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"targetCPUUtilizationPercentage":70}}"#,
        "-o",
        "json",
    ]);
    let patched = parse(&patched);
    assert_eq!(patched["apiVersion"], "autoscaling/v1");
    assert_eq!(patched["spec"]["targetCPUUtilizationPercentage"], 70);
    let v2 = get(&server, "horizontalpodautoscalers.v2.autoscaling");
    let metrics = v2["spec"]["metrics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(metrics.len(), 2, "{v2:#}");
    assert_eq!(metrics[0]["resource"]["target"]["averageUtilization"], 70);
    assert_eq!(metrics[1]["resource"]["name"], "memory");

    // A whole-object replace through v1 (PUT) changes the bounds and keeps the memory metric.
    let mut v1 = get(&server, "horizontalpodautoscalers.v1.autoscaling");
    v1["spec"]["maxReplicas"] = json!(6);
    let replaced = server.kubectl_stdin(&["replace", "-f", "-"], &v1.to_string());
    assert!(
        replaced.status.success(),
        "{}",
        String::from_utf8_lossy(&replaced.stderr)
    );
    let v2 = get(&server, "horizontalpodautoscalers.v2.autoscaling");
    assert_eq!(v2["spec"]["maxReplicas"], 6);
    assert_eq!(
        v2["spec"]["metrics"][1]["resource"]["name"], "memory",
        "{v2:#}"
    );

    // The table is the same through both versions' eyes for the CPU target.
    let table = server.kubectl_ok(&["get", "horizontalpodautoscalers.v1.autoscaling", "web"]);
    assert!(
        table.contains("cpu: <unknown>/70%") || table.contains("cpu: 0%/70%"),
        "{table}"
    );
    let listed = parse(&server.kubectl_ok(&[
        "get",
        "horizontalpodautoscalers.v1.autoscaling",
        "-o",
        "json",
    ]));
    assert_eq!(
        listed["items"][0]["apiVersion"], "autoscaling/v1",
        "{listed:#}"
    );
    assert_eq!(
        listed["items"][0]["spec"]["targetCPUUtilizationPercentage"],
        70
    );

    let deleted = server.kubectl_ok(&["delete", "horizontalpodautoscalers.v1.autoscaling", "web"]);
    assert!(deleted.contains("deleted"), "{deleted}");
    let gone = server.kubectl(&["get", "horizontalpodautoscalers.v2.autoscaling", "web"]);
    assert!(!gone.status.success());
}

/// The managedFields entry of `manager`, as a v1 read shows it.
fn managed_entry(server: &BerthServer, manager: &str) -> Value {
    let hpa = parse(&server.kubectl_ok(&[
        "get",
        "horizontalpodautoscalers.v1.autoscaling",
        "web",
        "--show-managed-fields",
        "-o",
        "json",
    ]));
    common::managed_fields_entry(&hpa, manager)
}

#[test]
fn server_side_apply_through_v1_owns_v1_fields_and_a_second_manager_conflicts_on_the_cpu_target() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let apply = |manager: &str, cpu: i64, force: bool| {
        let mut config: Value = parse(HPA_V1);
        config["spec"]["targetCPUUtilizationPercentage"] = json!(cpu);
        let manager_flag = format!("--field-manager={manager}");
        let mut args = vec!["apply", "--server-side", manager_flag.as_str(), "-f", "-"];
        if force {
            args.push("--force-conflicts");
        }
        server.kubectl_stdin(&args, &config.to_string())
    };

    let first = apply("alice", 50, false);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let alice = managed_entry(&server, "alice");
    assert_eq!(alice["operation"], "Apply", "{alice:#}");
    assert_eq!(alice["apiVersion"], "autoscaling/v1", "{alice:#}");
    let spec = &alice["fieldsV1"]["f:spec"];
    for field in [
        "f:targetCPUUtilizationPercentage",
        "f:maxReplicas",
        "f:minReplicas",
        "f:scaleTargetRef",
    ] {
        assert!(spec.get(field).is_some(), "alice owns {field}: {alice:#}");
    }
    assert!(spec.get("f:metrics").is_none(), "{alice:#}");

    // Another manager changing the CPU target conflicts with alice, on the v1 field name.
    let second = apply("bob", 70, false);
    assert!(!second.status.success(), "bob's apply was accepted");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains(r#"conflict with "alice": .spec.targetCPUUtilizationPercentage"#),
        "{stderr}"
    );
    let v2 = get(&server, "horizontalpodautoscalers.v2.autoscaling");
    assert_eq!(
        v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        50
    );

    // Forced, bob takes the field from alice.
    let forced = apply("bob", 70, true);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    let v2 = get(&server, "horizontalpodautoscalers.v2.autoscaling");
    assert_eq!(
        v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        70
    );
    let bob = managed_entry(&server, "bob");
    assert!(
        bob["fieldsV1"]["f:spec"]
            .get("f:targetCPUUtilizationPercentage")
            .is_some(),
        "{bob:#}"
    );
    let alice = managed_entry(&server, "alice");
    assert!(
        alice["fieldsV1"]["f:spec"]
            .get("f:targetCPUUtilizationPercentage")
            .is_none(),
        "{alice:#}"
    );
    assert!(alice["fieldsV1"]["f:spec"].get("f:maxReplicas").is_some());
}
