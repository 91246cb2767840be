//! ServiceAccount admission with real pods and the real kubectl: a pod that says nothing runs as
//! `default` with the `kube-api-access-` volume, reads its token, CA and namespace where client
//! libraries look, and that token (checked against that CA) calls the API with the account's
//! rights; opting out mounts nothing; a missing account is refused with upstream's message.
//!
//! Needs root (network namespaces, cgroups, mounts), as in CI.

mod common;

use common::cluster::Cluster;
use common::netns::Netns;
use serde_json::{json, Value};

const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn exec_cat(cluster: &Cluster, pod: &str, path: &str) -> String {
    let out = cluster.server.kubectl(&["exec", pod, "--", "cat", path]);
    assert!(
        out.status.success(),
        "cat {path} in {pod}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn volume_names(pod: &Value) -> Vec<String> {
    pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str().map(String::from))
        .collect()
}

#[test]
fn a_pod_gets_the_default_accounts_token_ca_and_namespace_and_can_call_the_api_with_them() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let server = &cluster.server;
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
        "default-reads",
        "--role=pod-reader",
        "--serviceaccount=default:default",
    ]);
    cluster.create(cluster.pod(
        "auto",
        json!({
            "initContainers": [{"name": "init", "image": "busybox",
                "command": ["sh", "-c", format!("test -s {MOUNT}/token")]}],
            "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]
        }),
    ));
    let pod = cluster.wait_for("auto", "Running", |p| p["status"]["phase"] == "Running");
    assert_eq!(pod["spec"]["serviceAccountName"], "default");
    let names = volume_names(&pod);
    assert_eq!(names.len(), 1, "{names:?}");
    let volume = &names[0];
    let suffix = volume
        .strip_prefix("kube-api-access-")
        .expect("the upstream volume name");
    assert_eq!(suffix.len(), 5, "{volume}");
    for list in ["initContainers", "containers"] {
        assert_eq!(
            pod["spec"][list][0]["volumeMounts"][0],
            json!({"name": volume, "mountPath": MOUNT, "readOnly": true}),
            "{list}"
        );
    }

    let token = exec_cat(&cluster, "auto", &format!("{MOUNT}/token"));
    assert_eq!(token.split('.').count(), 3, "a JWT: {token:?}");
    assert_eq!(
        exec_cat(&cluster, "auto", &format!("{MOUNT}/namespace")),
        "default"
    );
    let ca = exec_cat(&cluster, "auto", &format!("{MOUNT}/ca.crt"));
    assert!(ca.contains("BEGIN CERTIFICATE"), "{ca}");

    // What an in-cluster client does: the token as bearer, the server verified with ca.crt.
    let ca_path = server.data_dir().join("pod-ca.crt");
    std::fs::write(&ca_path, &ca).unwrap();
    let empty = server.data_dir().join("empty-kubeconfig");
    std::fs::write(&empty, "").unwrap();
    let url = server.kubectl_ok(&[
        "config",
        "view",
        "--raw",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let as_pod = |args: &[&str]| {
        let mut all = vec![
            "--kubeconfig",
            empty.to_str().unwrap(),
            "--server",
            url.trim(),
            "--certificate-authority",
            ca_path.to_str().unwrap(),
            "--token",
            token.as_str(),
        ];
        all.extend_from_slice(args);
        server.kubectl(&all)
    };
    let allowed = as_pod(&["get", "pod", "auto", "-o", "name"]);
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&allowed.stdout).trim(), "pod/auto");
    let denied = as_pod(&["get", "secrets"]);
    assert!(
        String::from_utf8_lossy(&denied.stderr)
            .contains("system:serviceaccount:default:default\" cannot list resource \"secrets\""),
        "RBAC judges the pod as its account: {}",
        String::from_utf8_lossy(&denied.stderr)
    );

    // Column widths depend on the rest of the output: compare with whitespace collapsed.
    let described = server.kubectl_ok(&["describe", "pod", "auto"]);
    let described: Vec<String> = described
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let described = described.join("\n");
    for shown in [
        format!("{volume}:"),
        "Type: Projected (a volume that contains injected data from multiple sources)".into(),
        "TokenExpirationSeconds: 3607".into(),
        "ConfigMapName: kube-root-ca.crt".into(),
        "DownwardAPI: true".into(),
        format!("{MOUNT} from {volume} (ro)"),
    ] {
        assert!(described.contains(&shown), "{shown:?} in:\n{described}");
    }
}

#[test]
fn opting_out_on_the_pod_or_its_account_mounts_nothing_and_a_missing_account_is_refused() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let server = &cluster.server;
    cluster.create(cluster.pod(
        "quiet-pod",
        json!({"automountServiceAccountToken": false,
               "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]}),
    ));
    let account = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "quiet"}, "automountServiceAccountToken": false});
    cluster.create(account);
    cluster.create(cluster.pod(
        "quiet-account",
        json!({"serviceAccountName": "quiet",
               "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]}),
    ));
    // The pod's own choice wins over its account's.
    cluster.create(cluster.pod(
        "loud",
        json!({"serviceAccountName": "quiet", "automountServiceAccountToken": true,
               "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]}),
    ));
    for name in ["quiet-pod", "quiet-account"] {
        let pod = cluster.wait_for(name, "Running", |p| p["status"]["phase"] == "Running");
        assert!(volume_names(&pod).is_empty(), "{name}: {pod:#}");
        assert!(pod["spec"]["containers"][0]["volumeMounts"].is_null());
        let ls = server.kubectl(&["exec", name, "--", "ls", MOUNT]);
        assert!(!ls.status.success(), "{name} has no token directory");
    }
    let loud = cluster.wait_for("loud", "Running", |p| p["status"]["phase"] == "Running");
    assert!(volume_names(&loud)[0].starts_with("kube-api-access-"));
    assert!(exec_cat(&cluster, "loud", &format!("{MOUNT}/token")).starts_with("ey"));

    let ghost = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "haunted"},
        "spec": {"serviceAccountName": "ghost",
                 "containers": [{"name": "main", "image": "busybox"}]}});
    let refused = server.kubectl_stdin(&["create", "-f", "-"], &ghost.to_string());
    assert!(!refused.status.success());
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr).trim(),
        "Error from server (Forbidden): error when creating \"STDIN\": pods \"haunted\" is forbidden: \
         error looking up service account default/ghost: serviceaccount \"ghost\" not found"
    );
}

/// What the token volume costs a pod's start: create → Running (seen by `kubectl wait`'s
/// watch) for pods with and without it, interleaved, in one run. Run with
/// `BERTH_TEST_BINARY=<optimised berth> cargo test --test security_service_accounts -- --ignored`.
#[test]
#[ignore = "benchmark"]
fn bench_pod_start_with_and_without_the_token_volume() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    // Warm up: image unpacked, root CA published, first token signed.
    cluster.create(cluster.pod(
        "warm",
        json!({"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]}),
    ));
    cluster.wait_for("warm", "Running", |p| p["status"]["phase"] == "Running");
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for i in 0..10 {
        for (slot, automount) in [(0, true), (1, false)] {
            let name = format!("p{i}-{automount}");
            let started = std::time::Instant::now();
            cluster.create(cluster.pod(
                &name,
                json!({"automountServiceAccountToken": automount,
                       "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]}),
            ));
            cluster.server.kubectl_ok(&[
                "wait",
                "--for=jsonpath={.status.phase}=Running",
                &format!("pod/{name}"),
                "--timeout=60s",
            ]);
            times[slot].push(started.elapsed().as_secs_f64() * 1000.0);
            cluster
                .server
                .kubectl_ok(&["delete", "pod", &name, "--wait=false"]);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let with = median(&mut times[0]);
    let without = median(&mut times[1]);
    println!(
        "pod create -> Running p50: {with:.0} ms with the token volume, {without:.0} ms without, ratio {:.2}",
        with / without
    );
    assert!(with > 0.0 && without > 0.0);
}
