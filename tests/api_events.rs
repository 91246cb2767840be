//! Writes through events.k8s.io/v1 (a view of the stored core Events) and autoscaling/v1 (a view
//! of the v2 HorizontalPodAutoscalers), as the real kubectl makes them: Events validated by the
//! rules of the version they were written in, managedFields that name the version the client
//! used, and bodies of another version refused. Needs root (network namespaces); CI runs as root.

mod common;

use std::process::Output;

use common::curl::request;
use common::netns::Netns;
use common::server::BerthServer;
use serde_json::Value;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn create_ok(server: &BerthServer, manifest: &str) {
    let out = server.kubectl_stdin(&["create", "-f", "-"], manifest);
    assert!(out.status.success(), "kubectl create: {}", stderr(&out));
}

/// The events.k8s.io/v1 Events, as kubectl names them apart from the core ones.
const EVENTS: &str = "events.v1.events.k8s.io";

/// `kubectl patch <resource> probed --type=merge -p <patch>`.
fn merge_patch(server: &BerthServer, resource: &str, patch: &str) -> Output {
    server.kubectl(&["patch", resource, "probed", "--type=merge", "-p", patch])
}

fn assert_patched(out: Output) {
    assert!(out.status.success(), "kubectl patch: {}", stderr(&out));
}

/// An event as a controller records it through events.k8s.io/v1.
const RECORDED: &str = r#"
apiVersion: events.k8s.io/v1
kind: Event
metadata: {name: probed, namespace: default}
regarding: {apiVersion: v1, kind: Pod, name: reader, namespace: default}
reason: Probed
note: the probe answered
type: Normal
eventTime: "2026-01-01T11:00:00.000001Z"
action: Probe
reportingController: example.com/prober
reportingInstance: prober-1
"#;

#[test]
fn events_are_validated_by_the_rules_of_the_version_they_were_written_in() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);

    // events.k8s.io/v1 wants to know who reported the event.
    let unreported = RECORDED.replace("reportingController: example.com/prober\n", "");
    let out = server.kubectl_stdin(&["create", "-f", "-"], &unreported);
    assert!(
        !out.status.success(),
        "an event without reportingController"
    );
    let refused = stderr(&out);
    assert!(
        refused.contains(r#"The Event "probed" is invalid"#),
        "{refused}"
    );
    assert!(
        refused.contains("* reportingController: Required value"),
        "{refused}"
    );
    assert!(
        refused
            .contains(r#"* reportingController: Invalid value: "": name part must be non-empty"#),
        "{refused}"
    );
    // ... and refuses the deprecated fields and an unknown type.
    let deprecated = RECORDED
        .replace("type: Normal", "type: Unusual")
        .replace("reason: Probed", "reason: Probed\ndeprecatedCount: 3");
    let out = server.kubectl_stdin(&["create", "-f", "-"], &deprecated);
    let refused = stderr(&out);
    assert!(
        !out.status.success(),
        "deprecated fields through the new API"
    );
    assert!(
        refused.contains(r#"* type: Invalid value: "": has invalid value: Unusual"#),
        "{refused}"
    );
    assert!(
        refused.contains(r#"* count: Invalid value: "": needs to be unset"#),
        "{refused}"
    );

    // Core v1 keeps its old rules: no reporter needed for an old-style event, but its
    // namespace must be its object's.
    let old_style = r#"
apiVersion: v1
kind: Event
metadata: {name: elsewhere, namespace: default}
involvedObject: {kind: ConfigMap, name: settings, namespace: other}
reason: Reloaded
message: settings were reloaded
"#;
    let out = server.kubectl_stdin(&["create", "-f", "-"], old_style);
    let refused = stderr(&out);
    assert!(!out.status.success(), "an event about another namespace");
    assert!(
        refused.contains(
            r#"involvedObject.namespace: Invalid value: "other": does not match event.namespace"#
        ),
        "{refused}"
    );
    create_ok(
        &server,
        &old_style.replace("namespace: other", "namespace: default"),
    );

    // Once recorded, an event changes only its series through events.k8s.io/v1...
    create_ok(&server, RECORDED);
    let changed_note = merge_patch(&server, EVENTS, r#"{"note": "rewritten"}"#);
    let refused = stderr(&changed_note);
    assert!(!changed_note.status.success(), "the note changed");
    assert!(
        refused.contains(r#"message: Invalid value: "rewritten": field is immutable"#),
        "{refused}"
    );
    assert_patched(merge_patch(
        &server,
        EVENTS,
        r#"{"series": {"count": 2, "lastObservedTime": "2026-01-01T11:01:00.000001Z"}}"#,
    ));
    let bad_series = merge_patch(&server, EVENTS, r#"{"series": {"count": 1}}"#);
    let refused = stderr(&bad_series);
    assert!(!bad_series.status.success(), "a series of one");
    assert!(
        refused.contains(r#"series.count: Invalid value: "": should be at least 2"#),
        "{refused}"
    );
    // ... while core v1 lets an old client change the rest.
    assert_patched(merge_patch(&server, "event", r#"{"message": "rewritten"}"#));
    let got = server.kubectl_json(&["get", EVENTS, "probed"]);
    assert_eq!(got["note"], "rewritten");
    assert_eq!(got["series"]["count"], 2);
}

/// The managedFields entry of `manager` on `resource` `name`.
fn managed_entry(server: &BerthServer, resource: &str, name: &str, manager: &str) -> Value {
    let object = server.kubectl_json(&["get", resource, name, "--show-managed-fields"]);
    common::managed_fields_entry(&object, manager)
}

#[test]
fn plain_writes_through_a_view_record_the_version_the_client_used() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);

    create_ok(&server, RECORDED);
    let created = managed_entry(&server, EVENTS, "probed", "kubectl-create");
    assert_eq!(created["operation"], "Update", "{created:#}");
    assert_eq!(created["apiVersion"], "events.k8s.io/v1", "{created:#}");
    let fields = &created["fieldsV1"];
    for field in ["f:note", "f:regarding", "f:reportingController", "f:action"] {
        assert!(fields.get(field).is_some(), "{field} in {created:#}");
    }
    assert!(fields.get("f:message").is_none(), "{created:#}");

    // A patch through the view: its manager and version, not the storage version's.
    assert_patched(merge_patch(
        &server,
        EVENTS,
        r#"{"series": {"count": 2, "lastObservedTime": "2026-01-01T11:01:00.000001Z"}}"#,
    ));
    let patched = managed_entry(&server, EVENTS, "probed", "kubectl-patch");
    assert_eq!(patched["apiVersion"], "events.k8s.io/v1", "{patched:#}");
    assert!(patched["fieldsV1"].get("f:series").is_some(), "{patched:#}");
    // A replace (PUT) through the view, with a field manager of its own.
    let mut replaced = server.kubectl_json(&["get", EVENTS, "probed"]);
    replaced["metadata"]["labels"] = serde_json::json!({"team": "probes"});
    let out = server.kubectl_stdin(
        &["replace", "--field-manager=labeller", "-f", "-"],
        &replaced.to_string(),
    );
    assert!(out.status.success(), "kubectl replace: {}", stderr(&out));
    let labeller = managed_entry(&server, EVENTS, "probed", "labeller");
    assert_eq!(labeller["apiVersion"], "events.k8s.io/v1", "{labeller:#}");
    assert!(
        labeller["fieldsV1"]["f:metadata"]["f:labels"]
            .get("f:team")
            .is_some(),
        "{labeller:#}"
    );

    // The same object written through core v1 records v1.
    server.kubectl_ok(&[
        "label",
        "event",
        "probed",
        "--field-manager=core-labeller",
        "tier=edge",
    ]);
    let core = managed_entry(&server, "event", "probed", "core-labeller");
    assert_eq!(core["apiVersion"], "v1", "{core:#}");

    // autoscaling/v1 over the stored v2 autoscalers: the v1 field names and version.
    create_ok(
        &server,
        r#"
apiVersion: autoscaling/v1
kind: HorizontalPodAutoscaler
metadata: {name: web, namespace: default}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 3
  targetCPUUtilizationPercentage: 50
"#,
    );
    let hpa = managed_entry(
        &server,
        "horizontalpodautoscalers.v1.autoscaling",
        "web",
        "kubectl-create",
    );
    assert_eq!(hpa["apiVersion"], "autoscaling/v1", "{hpa:#}");
    assert!(
        hpa["fieldsV1"]["f:spec"]
            .get("f:targetCPUUtilizationPercentage")
            .is_some(),
        "{hpa:#}"
    );
}

#[test]
fn a_body_of_another_version_is_refused_by_a_view_and_one_without_a_version_is_converted() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let url = "/apis/events.k8s.io/v1/namespaces/default/events";

    let core_body = r#"{"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "core-shaped", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "reader", "namespace": "default"},
        "reason": "Probed", "message": "m", "type": "Normal"}"#;
    let out = server.kubectl_stdin(&["create", "--raw", url, "-f", "-"], core_body);
    assert!(
        !out.status.success(),
        "a core v1 body through events.k8s.io"
    );
    let refused = stderr(&out);
    assert!(
        refused.contains(
            "the API version in the data (v1) does not match the expected API version (events.k8s.io/v1)"
        ),
        "{refused}"
    );
    assert!(!server
        .kubectl(&["get", "event", "core-shaped"])
        .status
        .success());

    // A body naming no version is the view's: converted, its note kept as the message.
    let bare: Value = serde_yaml_ng::from_str(RECORDED).expect("YAML");
    let mut bare = bare;
    if let Some(o) = bare.as_object_mut() {
        o.remove("apiVersion");
        o.remove("kind");
    }
    let out = server.kubectl_stdin(&["create", "--raw", url, "-f", "-"], &bare.to_string());
    assert!(out.status.success(), "a bare body: {}", stderr(&out));
    let core = server.kubectl_json(&["get", "event", "probed"]);
    assert_eq!(core["message"], "the probe answered");
    assert_eq!(core["involvedObject"]["name"], "reader");
}

#[test]
fn force_is_refused_on_a_patch_that_is_not_an_apply_through_a_view_too() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    create_ok(&server, RECORDED);
    let merge = ["Content-Type: application/merge-patch+json"];
    let patch = br#"{"metadata": {"labels": {"tier": "forced"}}}"#;
    for url in [
        "/apis/events.k8s.io/v1/namespaces/default/events/probed",
        "/api/v1/namespaces/default/events/probed",
    ] {
        // Upstream refuses the option whenever it is set, `false` included.
        for force in ["true", "false"] {
            let reply = request(
                &server,
                "PATCH",
                &format!("{url}?force={force}"),
                &merge,
                Some(patch),
            );
            let status = reply.json();
            assert_eq!(reply.code, 422, "{url} force={force}: {status}");
            assert_eq!(status["reason"], "Invalid", "{status}");
            assert_eq!(
                status["message"],
                "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch",
                "{status}"
            );
        }
    }
    let event = server.kubectl_json(&["get", EVENTS, "probed"]);
    assert!(
        event["metadata"].get("labels").is_none(),
        "nothing was patched: {event}"
    );

    // Without it the same patch goes through; an apply takes it.
    let reply = request(
        &server,
        "PATCH",
        "/apis/events.k8s.io/v1/namespaces/default/events/probed",
        &merge,
        Some(patch),
    );
    assert_eq!(reply.code, 200, "{}", reply.json());
    let applied = serde_json::json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "probed", "namespace": "default", "labels": {"tier": "applied"}}});
    let apply = |force: bool| {
        request(
            &server,
            "PATCH",
            &format!("/apis/events.k8s.io/v1/namespaces/default/events/probed?fieldManager=prober&force={force}"),
            &["Content-Type: application/apply-patch+yaml"],
            Some(applied.to_string().as_bytes()),
        )
    };
    let reply = apply(false);
    assert_eq!(
        reply.code,
        409,
        "the label belongs to curl's patch: {}",
        reply.json()
    );
    let reply = apply(true);
    assert_eq!(reply.code, 200, "{}", reply.json());
    let event = server.kubectl_json(&["get", EVENTS, "probed"]);
    assert_eq!(event["metadata"]["labels"]["tier"], "applied", "{event}");
}
