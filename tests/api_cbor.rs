//! CBOR over HTTP, as client-go speaks it when it prefers CBOR: bodies in `application/cbor`,
//! answers in CBOR when `Accept` puts it first, watches as `application/cbor-seq`. Driven with
//! curl against a real `berth server` in a test-made network namespace; bodies are written and
//! read with berth's own codec, checked byte-for-byte against upstream in its unit tests.
//! Needs root (network namespaces); CI runs as root.

mod common;

use berth::api::cbor;
use common::curl::{request, Reply};
use common::netns::Netns;
use common::server::BerthServer;
use serde_json::{json, Value};

fn cbor_value(reply: &Reply) -> Value {
    assert_eq!(
        &reply.body[..3],
        &cbor::SELF_DESCRIBED,
        "{:02x?}",
        reply.body
    );
    cbor::decode(&reply.body).unwrap_or_else(|e| panic!("not CBOR ({e}): {:02x?}", reply.body))
}

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

fn configmap(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
           "data": {"greeting": "hello"}, "immutable": false})
}

#[test]
fn cbor_bodies_create_objects_and_cbor_answers_read_them_back() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let cbor_io = ["Content-Type: application/cbor", "Accept: application/cbor"];

    let created = request(
        &server,
        "POST",
        CONFIGMAPS,
        &cbor_io,
        Some(&cbor::encode(&configmap("first"))),
    );
    assert_eq!(
        (created.code, created.content_type.as_str()),
        (201, "application/cbor")
    );
    let first = cbor_value(&created);
    assert_eq!(first["data"], json!({"greeting": "hello"}));
    assert_eq!(first["immutable"], json!(false));
    let first_rv = first["metadata"]["resourceVersion"]
        .as_str()
        .expect("a resourceVersion")
        .to_string();

    // The same object through kubectl (JSON) is what the CBOR body said.
    let through_json: Value =
        serde_json::from_str(&server.kubectl_ok(&["get", "configmap", "first", "-o", "json"]))
            .expect("JSON");
    assert_eq!(through_json["data"], json!({"greeting": "hello"}));

    let got = request(
        &server,
        "GET",
        &format!("{CONFIGMAPS}/first"),
        &["Accept: application/cbor"],
        None,
    );
    assert_eq!(got.code, 200);
    assert_eq!(
        cbor_value(&got)["metadata"]["uid"],
        first["metadata"]["uid"]
    );

    // JSON first in Accept keeps JSON.
    let json_first = request(
        &server,
        "GET",
        &format!("{CONFIGMAPS}/first"),
        &["Accept: application/json, application/cbor"],
        None,
    );
    assert_eq!(json_first.content_type, "application/json");
    assert!(serde_json::from_slice::<Value>(&json_first.body).is_ok());

    // Errors are Status objects in CBOR.
    let missing = request(
        &server,
        "GET",
        &format!("{CONFIGMAPS}/missing"),
        &["Accept: application/cbor"],
        None,
    );
    assert_eq!(missing.code, 404);
    let status = cbor_value(&missing);
    assert_eq!(
        (status["kind"].as_str(), status["reason"].as_str()),
        (Some("Status"), Some("NotFound"))
    );

    // A watch from the first object's version streams the second as one CBOR item per event.
    request(
        &server,
        "POST",
        CONFIGMAPS,
        &cbor_io,
        Some(&cbor::encode(&configmap("second"))),
    );
    let watch = request(
        &server,
        "GET",
        &format!("{CONFIGMAPS}?watch=true&resourceVersion={first_rv}&timeoutSeconds=2"),
        &["Accept: application/cbor"],
        None,
    );
    assert_eq!(
        (watch.code, watch.content_type.as_str()),
        (200, "application/cbor-seq")
    );
    let (event, used) = cbor::decode_next(&watch.body)
        .expect("a CBOR sequence")
        .expect("one whole event");
    assert_eq!(&watch.body[..3], &cbor::SELF_DESCRIBED);
    assert_eq!(event["type"], "ADDED");
    assert_eq!(event["object"]["metadata"]["name"], "second");
    assert_eq!(used, watch.body.len(), "exactly one event");

    // Server-side apply with a CBOR body.
    let mut applied = configmap("first");
    applied["data"] = json!({"greeting": "hi"});
    let apply = request(
        &server,
        "PATCH",
        &format!("{CONFIGMAPS}/first?fieldManager=cbor-test&force=true"),
        &[
            "Content-Type: application/apply-patch+cbor",
            "Accept: application/cbor",
        ],
        Some(&cbor::encode(&applied)),
    );
    assert_eq!(apply.code, 200);
    assert_eq!(cbor_value(&apply)["data"], json!({"greeting": "hi"}));
}

#[test]
fn unknown_media_types_are_refused_with_upstreams_statuses() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);

    let unreadable = request(
        &server,
        "POST",
        CONFIGMAPS,
        &["Content-Type: text/plain"],
        Some(b"hello"),
    );
    assert_eq!(unreadable.code, 415);
    let status: Value = serde_json::from_slice(&unreadable.body).expect("a JSON Status");
    assert_eq!(status["reason"], "UnsupportedMediaType");
    assert_eq!(
        status["message"],
        "the body of the request was in an unknown format - accepted media types include: \
         application/json, application/yaml, application/vnd.kubernetes.protobuf, application/cbor"
    );

    let unservable = request(&server, "GET", CONFIGMAPS, &["Accept: text/html"], None);
    assert_eq!(unservable.code, 406);
    let status: Value = serde_json::from_slice(&unservable.body).expect("a JSON Status");
    assert_eq!(status["reason"], "NotAcceptable");
    assert_eq!(
        status["message"],
        "only the following media types are accepted: application/json, application/cbor"
    );

    let malformed = request(
        &server,
        "POST",
        CONFIGMAPS,
        &["Content-Type: application/cbor", "Accept: application/cbor"],
        Some(&[0xd9, 0xd9, 0xf7, 0xa1, 0x41]),
    );
    assert_eq!(malformed.code, 400);
    assert_eq!(cbor_value(&malformed)["reason"], "BadRequest");
}

const AUTOSCALERS_V1: &str = "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers";

fn autoscaler_v1(cpu: i64) -> Value {
    json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": "web"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                    "minReplicas": 1, "maxReplicas": 4, "targetCPUUtilizationPercentage": cpu}})
}

#[test]
fn a_cbor_apply_through_autoscaling_v1_works_like_a_json_one() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let apply = |manager: &str, body: Vec<u8>, content_type: &str| {
        let content_type = format!("Content-Type: {content_type}");
        request(
            &server,
            "PATCH",
            &format!("{AUTOSCALERS_V1}/web?fieldManager={manager}"),
            &[content_type.as_str(), "Accept: application/cbor"],
            Some(&body),
        )
    };
    let cbor_apply = "application/apply-patch+cbor";

    // Apply creates the object, answered in the version it was made to.
    let created = apply("alice", cbor::encode(&autoscaler_v1(50)), cbor_apply);
    assert_eq!(created.code, 201, "{:?}", cbor::decode(&created.body));
    let answer = cbor_value(&created);
    assert_eq!(answer["apiVersion"], "autoscaling/v1");
    assert_eq!(answer["spec"]["targetCPUUtilizationPercentage"], 50);

    // Stored as v2; alice owns the v1 field name, as a YAML or JSON apply makes her.
    let v2: Value = serde_json::from_str(&server.kubectl_ok(&[
        "get",
        "horizontalpodautoscalers.v2.autoscaling",
        "web",
        "--show-managed-fields",
        "-o",
        "json",
    ]))
    .expect("JSON");
    assert_eq!(
        v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        50
    );
    let alice = common::managed_fields_entry(&v2, "alice");
    assert_eq!(
        (alice["operation"].as_str(), alice["apiVersion"].as_str()),
        (Some("Apply"), Some("autoscaling/v1")),
        "{alice:#}"
    );
    assert!(
        alice["fieldsV1"]["f:spec"]
            .get("f:targetCPUUtilizationPercentage")
            .is_some(),
        "{alice:#}"
    );

    // The same configuration again changes nothing of alice's: not the spec, not her managed
    // fields. (The resourceVersion may move: the autoscaler controller writes the
    // status, its target Deployment being absent.)
    let again = apply("alice", cbor::encode(&autoscaler_v1(50)), cbor_apply);
    assert_eq!(again.code, 200);
    let again = cbor_value(&again);
    assert_eq!(again["spec"], answer["spec"]);
    assert_eq!(
        common::managed_fields_entry(&again, "alice"),
        common::managed_fields_entry(&answer, "alice")
    );

    // Another manager changing the target conflicts, with a CBOR or a JSON body alike.
    for (body, content_type) in [
        (cbor::encode(&autoscaler_v1(70)), cbor_apply),
        (
            autoscaler_v1(70).to_string().into_bytes(),
            "application/apply-patch+yaml",
        ),
    ] {
        let conflict = apply("bob", body, content_type);
        assert_eq!(conflict.code, 409, "{content_type}");
        let status = cbor_value(&conflict);
        assert_eq!(status["reason"], "Conflict");
        assert!(
            status["message"]
                .as_str()
                .unwrap_or_default()
                .contains(r#"conflict with "alice": .spec.targetCPUUtilizationPercentage"#),
            "{content_type}: {status:#}"
        );
    }

    // A new target from alice herself goes through to the stored metric.
    let changed = apply("alice", cbor::encode(&autoscaler_v1(80)), cbor_apply);
    assert_eq!(changed.code, 200);
    assert_eq!(
        cbor_value(&changed)["spec"]["targetCPUUtilizationPercentage"],
        80
    );
}
