//! Defaulting, validation and subresources through the real kubectl against a real `berth server`
//! in a test-made network namespace: `kubectl scale`, `auth can-i`, `auth whoami`, `create token`
//! (and using that token), pod defaults, selector validation, evictions guarded by a
//! PodDisruptionBudget. Needs root (network namespaces); CI runs as root.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::netns::Netns;
use common::server::BerthServer;
use serde_json::Value;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn write_file(server: &BerthServer, name: &str, text: &str) -> String {
    let path = server.data_dir().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox
        command: ["sleep", "3600"]
"#;

#[test]
fn kubectl_scale_changes_replicas_through_the_scale_subresource() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let file = write_file(&server, "deploy.yaml", DEPLOYMENT);
    server.kubectl_ok(&["create", "-f", &file]);

    let out = server.kubectl_ok(&["scale", "deployment/web", "--replicas=3"]);
    assert!(out.contains("deployment.apps/web scaled"), "{out}");
    let replicas = server.kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(replicas.trim(), "3");

    let scale = json(&server.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
    ]));
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["selector"], "app=web");

    // kubectl checks --resource-version against the Scale it reads first...
    let stale = server.kubectl(&[
        "scale",
        "deployment/web",
        "--replicas=5",
        "--resource-version=1",
    ]);
    assert!(!stale.status.success(), "{stale:?}");
    assert!(
        stderr(&stale).contains("Expected resource version to be 1"),
        "{}",
        stderr(&stale)
    );
    // ...and the server refuses a Scale written with a stale resourceVersion.
    let stale_scale = write_file(
        &server,
        "scale.json",
        r#"{"apiVersion":"autoscaling/v1","kind":"Scale","metadata":{"name":"web","namespace":"default","resourceVersion":"1"},"spec":{"replicas":5}}"#,
    );
    let out = server.kubectl(&[
        "replace",
        "--raw",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
        "-f",
        &stale_scale,
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the object has been modified"),
        "{}",
        stderr(&out)
    );
    let replicas = server.kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(replicas.trim(), "3");
}

#[test]
fn auth_can_i_whoami_and_service_account_tokens_work() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let can = server.kubectl_ok(&["auth", "can-i", "create", "pods"]);
    assert_eq!(can.trim(), "yes");
    let resources = server.kubectl_ok(&["api-resources"]);
    for line in ["selfsubjectaccessreviews", "selfsubjectreviews"] {
        assert!(
            resources.contains(line),
            "api-resources lacks {line}:\n{resources}"
        );
    }
    let me = json(&server.kubectl_ok(&["auth", "whoami", "-o", "json"]));
    assert_eq!(me["kind"], "SelfSubjectReview");
    assert_eq!(me["status"]["userInfo"]["username"], "admin");

    // The default service account comes from its controller: wait for it.
    assert!(common::wait_until(Duration::from_secs(30), || {
        server.kubectl(&["get", "sa", "default"]).status.success()
    }));
    let token = server.kubectl_ok(&["create", "token", "default"]);
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    let with_token = token_kubeconfig(&server, token);
    let whoami = |kubeconfig: &str| {
        server.kubectl(&["--kubeconfig", kubeconfig, "auth", "whoami", "-o", "json"])
    };
    let out = whoami(&with_token);
    assert!(out.status.success(), "{}", stderr(&out));
    let me = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        me["status"]["userInfo"]["username"],
        "system:serviceaccount:default:default"
    );
    let groups = me["status"]["userInfo"]["groups"].to_string();
    assert!(
        groups.contains("system:serviceaccounts:default"),
        "{groups}"
    );
    // Authenticated, but RBAC grants a service account nothing by default: 403, not 401.
    let pods = server.kubectl(&["--kubeconfig", &with_token, "get", "pods"]);
    assert!(!pods.status.success());
    assert!(
        stderr(&pods).contains(
            "pods is forbidden: User \"system:serviceaccount:default:default\" cannot list resource \"pods\""
        ),
        "{}",
        stderr(&pods)
    );

    // A tampered token is refused.
    let mut tampered = token.to_string();
    tampered.truncate(token.len() - 3);
    tampered.push_str("AAA");
    let out = whoami(&token_kubeconfig(&server, &tampered));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("Unauthorized"), "{}", stderr(&out));

    // Deleting the account revokes its tokens, even when a new account of that name appears.
    server.kubectl_ok(&["delete", "sa", "default"]);
    assert!(common::wait_until(Duration::from_secs(10), || {
        !whoami(&with_token).status.success()
    }));
    assert!(stderr(&whoami(&with_token)).contains("Unauthorized"));
}

/// A kubeconfig that trusts the cluster CA and authenticates with `token` only (no client cert).
fn token_kubeconfig(server: &BerthServer, token: &str) -> String {
    let admin = std::fs::read_to_string(server.kubeconfig_path()).unwrap();
    let url = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("server:"))
        .expect("the kubeconfig names the server")
        .trim()
        .to_string();
    let ca: PathBuf = server.data_dir().join("pki/ca.crt");
    let name = format!(
        "token-{}.yaml",
        token.len() + token.bytes().map(usize::from).sum::<usize>()
    );
    write_file(
        server,
        &name,
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {url}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
            ca.display()
        ),
    )
}

#[test]
fn a_minimal_pod_reads_back_with_upstreams_defaults() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let file = write_file(
        &server,
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: c, image: busybox, ports: [{containerPort: 80}]}\n",
    );
    server.kubectl_ok(&["create", "-f", &file]);
    let yaml = server.kubectl_ok(&["get", "pod", "p", "-o", "yaml"]);
    for expected in [
        "restartPolicy: Always",
        "dnsPolicy: ClusterFirst",
        "schedulerName: default-scheduler",
        "terminationGracePeriodSeconds: 30",
        "securityContext: {}",
        "enableServiceLinks: true",
        "imagePullPolicy: Always",
        "terminationMessagePath: /dev/termination-log",
        "terminationMessagePolicy: File",
        "protocol: TCP",
        "preemptionPolicy: PreemptLowerPriority",
        "priority: 0",
        "key: node.kubernetes.io/not-ready",
        "tolerationSeconds: 300",
    ] {
        assert!(yaml.contains(expected), "missing {expected:?} in:\n{yaml}");
    }
    let deploy = write_file(&server, "deploy.yaml", DEPLOYMENT);
    server.kubectl_ok(&["create", "-f", &deploy]);
    let d = json(&server.kubectl_ok(&["get", "deploy", "web", "-o", "json"]));
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
}

#[test]
fn invalid_workloads_are_refused_with_upstreams_messages() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let bad = DEPLOYMENT
        .replace("name: web\nspec", "name: bad\nspec")
        .replace("labels: {app: web}", "labels: {app: other}");
    let file = write_file(&server, "bad.yaml", &bad);
    let out = server.kubectl(&["create", "-f", &file]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("The Deployment \"bad\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`"),
        "{err}"
    );

    let two = write_file(
        &server,
        "two.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: two}\nspec:\n  containers:\n  - {name: c, image: busybox}\n  - {name: c, image: busybox}\n",
    );
    let err = stderr(&server.kubectl(&["create", "-f", &two]));
    assert!(
        err.contains("spec.containers[1].name: Duplicate value: \"c\""),
        "{err}"
    );

    // The selector of a deployment never changes.
    let file = write_file(&server, "deploy.yaml", DEPLOYMENT);
    server.kubectl_ok(&["create", "-f", &file]);
    let out = server.kubectl(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"selector":{"matchLabels":{"app":"web","x":"y"}},"template":{"metadata":{"labels":{"x":"y"}}}}}"#,
    ]);
    assert!(!out.status.success());
    // Upstream's words, with the selector printed as Go prints its type.
    let expected = concat!(
        r#"spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app":"web", "x":"y"}, "#,
        r#"MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"#
    );
    assert!(stderr(&out).contains(expected), "{}", stderr(&out));
}

#[test]
fn an_eviction_that_would_break_a_disruption_budget_is_refused_with_429() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let pod = write_file(
        &server,
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: guarded, labels: {app: db}}\nspec:\n  containers:\n  - {name: c, image: busybox}\n",
    );
    server.kubectl_ok(&["create", "-f", &pod]);
    server.kubectl_ok(&[
        "create",
        "poddisruptionbudget",
        "db",
        "--selector=app=db",
        "--min-available=1",
    ]);
    let eviction = write_file(
        &server,
        "eviction.json",
        r#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"guarded","namespace":"default"}}"#,
    );
    let path = "/api/v1/namespaces/default/pods/guarded/eviction";
    let out = server.kubectl(&["create", "--raw", path, "-f", &eviction]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("TooManyRequests"), "{err}");
    assert!(
        err.contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "{err}"
    );
    assert!(server.kubectl(&["get", "pod", "guarded"]).status.success());

    // kubectl drain finds the eviction subresource in discovery and is held up by the budget too.
    let node = server.kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    let scheduled = common::wait_until(Duration::from_secs(20), || {
        let on = server.kubectl_ok(&["get", "pod", "guarded", "-o", "jsonpath={.spec.nodeName}"]);
        on.trim() == node.trim()
    });
    assert!(scheduled, "the pod is scheduled onto the node");
    let drain = server.kubectl(&["drain", node.trim(), "--force", "--timeout=3s"]);
    assert!(!drain.status.success(), "{drain:?}");
    assert!(
        stderr(&drain).contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "{}",
        stderr(&drain)
    );
    assert!(server.kubectl(&["get", "pod", "guarded"]).status.success());

    // With a budget that allows it, the eviction deletes the pod and the budget records it.
    server.kubectl_ok(&["delete", "pdb", "db"]);
    server.kubectl_ok(&[
        "create",
        "poddisruptionbudget",
        "db",
        "--selector=app=db",
        "--min-available=0",
    ]);
    server.kubectl_ok(&["create", "--raw", path, "-f", &eviction]);
    let gone_or_going = common::wait_until(Duration::from_secs(10), || {
        let out = server.kubectl(&["get", "pod", "guarded", "-o", "json"]);
        !out.status.success()
            || json(&String::from_utf8_lossy(&out.stdout))["metadata"]["deletionTimestamp"]
                .is_string()
    });
    assert!(gone_or_going, "the evicted pod is deleted");
    let pdb = json(&server.kubectl_ok(&["get", "pdb", "db", "-o", "json"]));
    assert_eq!(pdb["status"]["desiredHealthy"], 0);
}
