//! Pod Security Admission with the real kubectl: namespace labels pick the level, enforce
//! refuses with upstream's message, warn shows kubectl warnings, workloads only warn, and
//! relabelling a namespace warns about the pods already in it.
//!
//! Needs root (network namespaces). Pods are pinned to a node that does not exist, so nothing
//! privileged ever runs.

mod common;

use common::netns::Netns;
use common::server::BerthServer;
use serde_json::json;

fn privileged_pod(namespace: &str, name: &str) -> String {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"nodeName": "nowhere", "containers": [{"name": "c", "image": "busybox",
            "securityContext": {"privileged": true}}]}})
    .to_string()
}

#[test]
fn a_privileged_pod_is_refused_where_restricted_is_enforced_and_allowed_where_privileged() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    server.kubectl_ok(&["create", "namespace", "strict"]);
    server.kubectl_ok(&[
        "label",
        "namespace",
        "strict",
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    let refused = server.kubectl_stdin(&["create", "-f", "-"], &privileged_pod("strict", "x"));
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(
            "pods \"x\" is forbidden: violates PodSecurity \"restricted:latest\": privileged (container \"c\" must not set securityContext.privileged=true), allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        ),
        "{stderr}"
    );

    // The default namespace enforces the config's baseline: privileged is refused there too.
    let baseline = server.kubectl_stdin(&["create", "-f", "-"], &privileged_pod("default", "x"));
    let stderr = String::from_utf8_lossy(&baseline.stderr);
    assert!(
        stderr.contains("violates PodSecurity \"baseline:latest\": privileged"),
        "{stderr}"
    );

    server.kubectl_ok(&["create", "namespace", "open"]);
    server.kubectl_ok(&[
        "label",
        "namespace",
        "open",
        "pod-security.kubernetes.io/enforce=privileged",
        "pod-security.kubernetes.io/warn=privileged",
    ]);
    let allowed = server.kubectl_stdin(&["create", "-f", "-"], &privileged_pod("open", "x"));
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    assert!(
        String::from_utf8_lossy(&allowed.stderr).is_empty(),
        "no warning at privileged"
    );

    // Relabelling to restricted warns about the pod already there, and changes nothing else.
    let relabel = server.kubectl(&[
        "label",
        "--overwrite",
        "namespace",
        "open",
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    assert!(relabel.status.success());
    let stderr = String::from_utf8_lossy(&relabel.stderr);
    assert!(
        stderr.contains("existing pods in namespace \"open\" violate the new PodSecurity enforce level \"restricted:latest\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("x: privileged, allowPrivilegeEscalation != false"),
        "{stderr}"
    );
    server.kubectl_ok(&["get", "pod", "x", "-n", "open"]);
}

#[test]
fn plain_pods_and_workloads_get_warnings_not_refusals() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let plain = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain"},
        "spec": {"nodeName": "nowhere", "containers": [{"name": "c", "image": "busybox"}]}});
    let out = server.kubectl_stdin(&["create", "-f", "-"], &plain.to_string());
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Warning: would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false"),
        "{stderr}"
    );

    server.kubectl_ok(&["create", "namespace", "strict"]);
    server.kubectl_ok(&[
        "label",
        "namespace",
        "strict",
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "strict"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "d"}},
            "template": {"metadata": {"labels": {"app": "d"}},
                "spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "busybox"}]}}}});
    let out = server.kubectl_stdin(&["create", "-f", "-"], &deployment.to_string());
    assert!(out.status.success(), "workloads are never refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "would violate PodSecurity \"restricted:latest\": host namespaces (hostNetwork=true)"
        ),
        "{stderr}"
    );
}

#[test]
fn pod_updates_are_checked_unless_they_cannot_change_the_verdict() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    server.kubectl_ok(&["create", "namespace", "open"]);
    server.kubectl_ok(&[
        "label",
        "namespace",
        "open",
        "pod-security.kubernetes.io/enforce=privileged",
    ]);
    let created = server.kubectl_stdin(&["create", "-f", "-"], &privileged_pod("open", "x"));
    assert!(created.status.success());
    server.kubectl_ok(&[
        "label",
        "--overwrite",
        "namespace",
        "open",
        "pod-security.kubernetes.io/enforce=baseline",
    ]);

    // Labels and annotations cannot make a pod less safe: allowed though the pod now violates.
    server.kubectl_ok(&["label", "pod", "x", "-n", "open", "team=a"]);
    server.kubectl_ok(&["annotate", "pod", "x", "-n", "open", "note=b"]);

    // A new image is evaluated against the enforce level.
    let image = server.kubectl(&["set", "image", "pod/x", "-n", "open", "c=busybox:2"]);
    assert!(!image.status.success());
    let stderr = String::from_utf8_lossy(&image.stderr);
    assert!(
        stderr.contains("pods \"x\" is forbidden: violates PodSecurity \"baseline:latest\": privileged (container \"c\" must not set securityContext.privileged=true)"),
        "{stderr}"
    );
    let stored = server.kubectl_ok(&[
        "get",
        "pod",
        "x",
        "-n",
        "open",
        "-o",
        "jsonpath={.spec.containers[0].image}",
    ]);
    assert_eq!(stored.trim(), "busybox");
}

#[test]
fn namespace_labels_that_do_not_parse_are_refused_with_upstreams_message() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "odd", "labels": {"pod-security.kubernetes.io/enforce": "strict"}}});
    let refused = server.kubectl_stdin(&["create", "-f", "-"], &namespace.to_string());
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("namespace \"odd\" is invalid: metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\": must be one of privileged, baseline, restricted"),
        "{stderr}"
    );

    server.kubectl_ok(&["create", "namespace", "fine"]);
    let relabel = server.kubectl(&[
        "label",
        "namespace",
        "fine",
        "pod-security.kubernetes.io/warn-version=1.30",
    ]);
    assert!(!relabel.status.success());
    let stderr = String::from_utf8_lossy(&relabel.stderr);
    assert!(
        stderr.contains("Invalid value: \"1.30\": must be \"latest\" or \"v1.x\""),
        "{stderr}"
    );
    server.kubectl_ok(&[
        "label",
        "namespace",
        "fine",
        "pod-security.kubernetes.io/warn-version=v1.30",
    ]);
}

#[test]
fn pods_of_an_exempt_runtime_class_and_by_an_exempt_user_are_not_checked() {
    let ns = Netns::new();
    let server = BerthServer::start_with_config(
        &ns,
        "[pod_security]\nexempt_runtime_classes = [\"trusted\"]\nexempt_usernames = [\"operator\"]\n",
    );
    let mut pod: serde_json::Value =
        serde_json::from_str(&privileged_pod("default", "plain")).unwrap();
    let refused = server.kubectl_stdin(&["create", "-f", "-"], &pod.to_string());
    assert!(!refused.status.success(), "baseline is enforced in default");

    pod["metadata"]["name"] = json!("sandboxed");
    pod["spec"]["runtimeClassName"] = json!("trusted");
    let out = server.kubectl_stdin(&["create", "-f", "-"], &pod.to_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    pod["metadata"]["name"] = json!("by-operator");
    pod["spec"]["runtimeClassName"] = serde_json::Value::Null;
    let out = server.kubectl_stdin(
        &[
            "create",
            "--as",
            "operator",
            "--as-group",
            "system:masters",
            "-f",
            "-",
        ],
        &pod.to_string(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_debug_container_is_checked_like_the_rest_of_the_pod() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let plain = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
        "spec": {"nodeName": "nowhere", "containers": [{"name": "c", "image": "busybox"}]}});
    assert!(server
        .kubectl_stdin(&["create", "-f", "-"], &plain.to_string())
        .status
        .success());

    // The sysadmin profile makes the debug container privileged: baseline refuses it.
    let privileged = server.kubectl(&[
        "debug",
        "x",
        "--image=busybox",
        "--profile=sysadmin",
        "--container=root",
    ]);
    assert!(!privileged.status.success());
    let stderr = String::from_utf8_lossy(&privileged.stderr);
    assert!(
        stderr.contains("violates PodSecurity \"baseline:latest\": privileged (container \"root\" must not set securityContext.privileged=true)"),
        "{stderr}"
    );

    let compliant = server.kubectl(&[
        "debug",
        "x",
        "--image=busybox",
        "--profile=baseline",
        "--container=look",
    ]);
    assert!(
        compliant.status.success(),
        "{}",
        String::from_utf8_lossy(&compliant.stderr)
    );
    let names = server.kubectl_ok(&[
        "get",
        "pod",
        "x",
        "-o",
        "jsonpath={.spec.ephemeralContainers[*].name}",
    ]);
    assert_eq!(names.trim(), "look");
}
