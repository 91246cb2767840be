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
