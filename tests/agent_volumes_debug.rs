//! Live pods, changed from outside: ConfigMap and Secret volumes follow their objects,
//! projected service account tokens are issued to the pod, and `kubectl debug` adds an
//! ephemeral container to a running pod.
//!
//! Needs root (network namespaces, cgroups, mounts), as in CI.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::netns::Netns;
use serde_json::json;

fn exec_cat(cluster: &Cluster, pod: &str, path: &str) -> String {
    let out = cluster.server.kubectl(&["exec", pod, "--", "cat", path]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn configmap_and_secret_updates_reach_the_running_container_but_not_subpath_mounts() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    cluster.server.kubectl_ok(&[
        "create",
        "configmap",
        "settings",
        "--from-literal=color=red",
    ]);
    cluster.server.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=old",
    ]);
    cluster.create(cluster.pod(
        "watcher",
        json!({
            "containers": [{
                "name": "main", "image": "busybox", "command": ["sleep", "3600"],
                "volumeMounts": [
                    {"name": "settings", "mountPath": "/etc/settings"},
                    {"name": "settings", "mountPath": "/etc/pinned/color", "subPath": "color"},
                    {"name": "creds", "mountPath": "/etc/creds", "readOnly": true}
                ]
            }],
            "volumes": [
                {"name": "settings", "configMap": {"name": "settings"}},
                {"name": "creds", "secret": {"secretName": "creds"}}
            ]
        }),
    ));
    cluster.wait_for("watcher", "Running", |p| p["status"]["phase"] == "Running");
    assert_eq!(exec_cat(&cluster, "watcher", "/etc/settings/color"), "red");
    assert_eq!(exec_cat(&cluster, "watcher", "/etc/creds/password"), "old");

    cluster.server.kubectl_ok(&[
        "patch",
        "configmap",
        "settings",
        "-p",
        r#"{"data":{"color":"blue","size":"large"}}"#,
    ]);
    cluster.server.kubectl_ok(&[
        "patch",
        "secret",
        "creds",
        "-p",
        r#"{"stringData":{"password":"new"}}"#,
    ]);
    let started = std::time::Instant::now();
    let updated = common::wait_until(Duration::from_secs(60), || {
        exec_cat(&cluster, "watcher", "/etc/settings/color") == "blue"
            && exec_cat(&cluster, "watcher", "/etc/settings/size") == "large"
            && exec_cat(&cluster, "watcher", "/etc/creds/password") == "new"
    });
    assert!(
        updated,
        "the volumes follow their objects: color={:?} password={:?}",
        exec_cat(&cluster, "watcher", "/etc/settings/color"),
        exec_cat(&cluster, "watcher", "/etc/creds/password")
    );
    eprintln!("volume update seen after {:?}", started.elapsed());
    assert_eq!(
        exec_cat(&cluster, "watcher", "/etc/pinned/color"),
        "red",
        "a subPath mount keeps the file it was started with, as upstream"
    );
}

#[test]
fn a_projected_token_is_bound_to_the_pod_and_carries_its_service_accounts_rights() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let server = &cluster.server;
    server.kubectl_ok(&["create", "serviceaccount", "reader"]);
    server.kubectl_ok(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get,list",
        "--resource=pods",
    ]);
    server.kubectl_ok(&[
        "create",
        "rolebinding",
        "reader-reads",
        "--role=pod-reader",
        "--serviceaccount=default:reader",
    ]);
    let wait_for_root_ca = common::wait_until(Duration::from_secs(30), || {
        server
            .kubectl(&["get", "configmap", "kube-root-ca.crt"])
            .status
            .success()
    });
    assert!(wait_for_root_ca, "the root CA configmap is published");
    cluster.create(cluster.pod(
        "bearer",
        json!({
            "serviceAccountName": "reader",
            "containers": [{
                "name": "main", "image": "busybox", "command": ["sleep", "3600"],
                "volumeMounts": [{"name": "api", "mountPath": "/var/run/api", "readOnly": true}]
            }],
            "volumes": [{"name": "api", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 600}},
                {"serviceAccountToken": {"path": "other-token", "audience": "vault"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}
            ]}}]
        }),
    ));
    cluster.wait_for("bearer", "Running", |p| p["status"]["phase"] == "Running");
    let token = exec_cat(&cluster, "bearer", "/var/run/api/token");
    assert!(token.split('.').count() == 3, "a JWT: {token:?}");
    assert_eq!(
        exec_cat(&cluster, "bearer", "/var/run/api/namespace"),
        "default"
    );
    assert!(exec_cat(&cluster, "bearer", "/var/run/api/ca.crt").contains("BEGIN CERTIFICATE"));

    // Only the token, not the admin's client certificate, which would win.
    let url = server.kubectl_ok(&[
        "config",
        "view",
        "--raw",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let empty = server.data_dir().join("empty-kubeconfig");
    std::fs::write(&empty, "").unwrap();
    let with_token = |token: &str, args: &[&str]| {
        let mut all = vec![
            "--kubeconfig",
            empty.to_str().unwrap(),
            "--server",
            url.trim(),
            "--insecure-skip-tls-verify",
            "--token",
            token,
        ];
        all.extend_from_slice(args);
        server.kubectl(&all)
    };
    let as_pod = |args: &[&str]| with_token(&token, args);
    let allowed = as_pod(&["get", "pod", "bearer", "-o", "name"]);
    assert!(
        allowed.status.success(),
        "the token is the service account's: {}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    let denied = as_pod(&["get", "secrets"]);
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("Forbidden"),
        "RBAC still applies to it: {}",
        String::from_utf8_lossy(&denied.stderr)
    );
    let other = exec_cat(&cluster, "bearer", "/var/run/api/other-token");
    let wrong_audience = with_token(&other, &["get", "pods"]);
    assert!(
        !wrong_audience.status.success(),
        "a token for another audience does not open the API server"
    );

    // Bound to the pod: it dies with it.
    server.kubectl_ok(&["delete", "pod", "bearer", "--wait=true", "--timeout=60s"]);
    let after = as_pod(&["get", "pod", "bearer"]);
    assert!(
        String::from_utf8_lossy(&after.stderr).contains("Unauthorized"),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
}

#[test]
fn kubectl_debug_adds_a_debug_container_that_shares_the_targets_processes() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    cluster.create(cluster.pod(
        "patient",
        json!({"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]}),
    ));
    cluster.wait_for("patient", "Running", |p| p["status"]["phase"] == "Running");
    let out = cluster.server.kubectl(&[
        "debug",
        "patient",
        "--image=busybox",
        "--target=main",
        "--",
        "sh",
        "-c",
        "echo hi from debug; ps",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pod = cluster.wait_for("patient", "a running debug container", |p| {
        p["status"]["ephemeralContainerStatuses"][0]["state"]
            .as_object()
            .is_some_and(|s| s.contains_key("running") || s.contains_key("terminated"))
    });
    let name = pod["spec"]["ephemeralContainers"][0]["name"]
        .as_str()
        .expect("an ephemeral container")
        .to_string();
    assert!(name.starts_with("debugger-"), "{name}");
    let mut logs = String::new();
    let seen = common::wait_until(Duration::from_secs(30), || {
        logs = String::from_utf8_lossy(
            &cluster
                .server
                .kubectl(&["logs", "patient", "-c", &name])
                .stdout,
        )
        .into_owned();
        logs.contains("hi from debug") && logs.contains("sleep 3600")
    });
    assert!(
        seen,
        "the debugger ran and sees the target's processes: {logs:?}"
    );
    let pod = cluster.wait_for("patient", "the debugger's exit", |p| {
        p["status"]["ephemeralContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    });
    assert_eq!(pod["status"]["phase"], "Running", "the pod itself runs on");
    assert_eq!(
        pod["status"]["containerStatuses"][0]["restartCount"], 0,
        "the target was not disturbed"
    );

    // Only additions: an ephemeral container cannot be taken away again.
    let mut removed = pod.clone();
    removed["spec"]["ephemeralContainers"] = json!([]);
    let path = cluster.server.data_dir().join("removed.json");
    std::fs::write(&path, removed.to_string()).unwrap();
    let out = cluster.server.kubectl(&[
        "replace",
        "--raw",
        "/api/v1/namespaces/default/pods/patient/ephemeralcontainers",
        "-f",
        path.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("may not be removed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Interactive, as `kubectl debug -it` minus the terminal: stdin reaches the debugger.
    let out = cluster.server.kubectl_stdin(
        &[
            "debug",
            "-i",
            "patient",
            "--image=busybox",
            "--target=main",
            "--",
            "sh",
            "-c",
            "read word; echo got:$word",
        ],
        "ping\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("got:ping"),
        "{stdout:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
