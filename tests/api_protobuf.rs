//! kubectl's typed `create` commands send protobuf bodies; berth must read them. Driven with the
//! real kubectl against a real `berth server` in a test-made network namespace.
//! Needs root (network namespaces); CI runs as root.

mod common;

use common::netns::Netns;
use common::server::BerthServer;
use prost::Message as _;
use serde_json::{json, Value};

fn get_json(server: &BerthServer, args: &[&str]) -> Value {
    let mut full = vec!["get"];
    full.extend(args);
    full.extend(["-o", "json"]);
    let text = server.kubectl_ok(&full);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn kubectl_create_commands_send_protobuf_that_berth_stores_faithfully() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);

    server.kubectl_ok(&["create", "configmap", "settings", "--from-literal=x=y"]);
    let cm = get_json(&server, &["configmap", "settings"]);
    assert_eq!(cm["data"], json!({"x": "y"}));

    server.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=hunter2",
    ]);
    let secret = get_json(&server, &["secret", "creds"]);
    assert_eq!(secret["data"], json!({"password": "aHVudGVyMg=="}));

    server.kubectl_ok(&["create", "namespace", "team-a"]);
    let namespace = get_json(&server, &["namespace", "team-a"]);
    assert_eq!(namespace["metadata"]["name"], "team-a");

    server.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=2",
    ]);
    let deployment = get_json(&server, &["deployment", "web"]);
    assert_eq!(deployment["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"],
        json!({"app": "web"})
    );
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "busybox");
    assert_eq!(container["name"], "busybox");
    // Zero values Go writes on the wire but omits in JSON must not appear as set fields.
    assert!(deployment["metadata"].get("generateName").is_none());

    server.kubectl_ok(&["create", "job", "once", "--image=busybox"]);
    let job = get_json(&server, &["job", "once"]);
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["image"], "busybox");
    assert_eq!(pod["restartPolicy"], "Never");

    server.kubectl_ok(&["create", "service", "clusterip", "api", "--tcp=80:8080"]);
    let service = get_json(&server, &["service", "api"]);
    assert_eq!(service["spec"]["ports"][0]["port"], 80);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(service["spec"]["selector"], json!({"app": "api"}));
    assert_eq!(service["spec"]["type"], "ClusterIP");
}

#[test]
fn the_other_typed_create_commands_work_over_protobuf() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);

    server.kubectl_ok(&[
        "create",
        "cronjob",
        "nightly",
        "--image=busybox",
        "--schedule=0 3 * * *",
    ]);
    let cronjob = get_json(&server, &["cronjob", "nightly"]);
    assert_eq!(cronjob["spec"]["schedule"], "0 3 * * *");
    assert_eq!(
        cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox"
    );

    server.kubectl_ok(&[
        "create",
        "role",
        "reader",
        "--verb=get,list",
        "--resource=pods",
    ]);
    let role = get_json(&server, &["role", "reader"]);
    assert_eq!(role["rules"][0]["verbs"], json!(["get", "list"]));
    assert_eq!(role["rules"][0]["resources"], json!(["pods"]));

    server.kubectl_ok(&[
        "create",
        "rolebinding",
        "read",
        "--role=reader",
        "--user=alice",
    ]);
    let binding = get_json(&server, &["rolebinding", "read"]);
    assert_eq!(binding["roleRef"]["name"], "reader");
    assert_eq!(binding["subjects"][0]["name"], "alice");

    server.kubectl_ok(&["create", "quota", "small", "--hard=cpu=1,pods=2"]);
    let quota = get_json(&server, &["resourcequota", "small"]);
    assert_eq!(quota["spec"]["hard"], json!({"cpu": "1", "pods": "2"}));

    server.kubectl_ok(&["create", "priorityclass", "high", "--value=1000"]);
    let priority = get_json(&server, &["priorityclass", "high"]);
    assert_eq!(priority["value"], 1000);

    server.kubectl_ok(&[
        "create",
        "pdb",
        "keep",
        "--selector=app=web",
        "--min-available=1",
    ]);
    let pdb = get_json(&server, &["pdb", "keep"]);
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        json!({"app": "web"})
    );

    server.kubectl_ok(&["create", "ingress", "site", "--rule=example.test/=web:80"]);
    let ingress = get_json(&server, &["ingress", "site"]);
    let rule = &ingress["spec"]["rules"][0];
    assert_eq!(rule["host"], "example.test");
    assert_eq!(
        rule["http"]["paths"][0]["backend"]["service"],
        json!({"name": "web", "port": {"number": 80}})
    );

    server.kubectl_ok(&["delete", "configmap", "--all"]);
    server.kubectl_ok(&["delete", "ingress", "site", "--wait=false"]);
}

/// POSTs `body` as protobuf inside the netns; returns the HTTP status and the reply.
fn post_protobuf(server: &BerthServer, path: &str, body: &[u8]) -> (u16, Value) {
    let reply = common::curl::request(
        server,
        "POST",
        path,
        &[
            "Content-Type: application/vnd.kubernetes.protobuf",
            "Accept: application/json",
        ],
        Some(body),
    );
    (reply.code, reply.json())
}

fn configmap_body(name: &str) -> Vec<u8> {
    use k8s_pb::api::core::v1::ConfigMap;
    use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
    let cm = ConfigMap {
        metadata: Some(ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        }),
        data: [("k".to_string(), "v".to_string())].into(),
        ..Default::default()
    };
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
        }),
        raw: Some(cm.encode_to_vec()),
        ..Default::default()
    };
    [b"k8s\0".to_vec(), unknown.encode_to_vec()].concat()
}

#[test]
fn a_truncated_protobuf_body_is_a_bad_request_and_the_server_lives_on() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let path = "/api/v1/namespaces/default/configmaps";

    let (code, reply) = post_protobuf(&server, path, &configmap_body("whole"));
    assert_eq!(code, 201, "{reply}");
    assert_eq!(reply["data"], json!({"k": "v"}));

    let body = configmap_body("cut");
    let (code, reply) = post_protobuf(&server, path, &body[..body.len() - 3]);
    assert_eq!(code, 400, "{reply}");
    assert_eq!(reply["kind"], "Status");
    assert_eq!(reply["reason"], "BadRequest");
    assert!(
        reply["message"].as_str().unwrap_or("").contains("protobuf"),
        "{reply}"
    );

    // Still serving, and nothing half-made was stored.
    let names = server.kubectl_ok(&["get", "configmaps", "-o", "name"]);
    assert!(names.contains("configmap/whole"), "{names}");
    assert!(!names.contains("configmap/cut"), "{names}");
}
