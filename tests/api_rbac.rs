//! RBAC authorization driven by the real kubectl against a real `berth server` in a test-made
//! network namespace: users from client certificates the test signs with the cluster CA,
//! service account tokens, impersonation, reviews, escalation prevention and aggregation.
//! Needs root (network namespaces); CI runs as root.

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use common::netns::Netns;
use common::server::BerthServer;
use common::wait_until;

/// The policy follows the store's watch, so a grant takes effect a moment after it is written.
const PROPAGATION: Duration = Duration::from_secs(10);

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A kubeconfig with the admin's cluster entry and `credentials` (kubectl `set-credentials`
/// flags) as its only user.
fn kubeconfig_for(server: &BerthServer, user: &str, credentials: &[String]) -> PathBuf {
    let path = server.data_dir().join(format!("{user}.kubeconfig"));
    std::fs::copy(server.kubeconfig_path(), &path).unwrap();
    let config = path.to_string_lossy().into_owned();
    let mut set = vec!["config", "set-credentials", user, "--kubeconfig", &config];
    let credentials: Vec<&str> = credentials.iter().map(String::as_str).collect();
    set.extend(credentials);
    server.kubectl_ok(&set);
    server.kubectl_ok(&[
        "config",
        "set-context",
        "--current",
        "--user",
        user,
        "--kubeconfig",
        &config,
    ]);
    server.kubectl_ok(&["config", "delete-user", "admin", "--kubeconfig", &config]);
    path
}

fn alice_kubeconfig(server: &BerthServer) -> PathBuf {
    let (cert, key) = server.user_certificate("alice", "dev");
    let cert_path = server.data_dir().join("alice.crt");
    let key_path = server.data_dir().join("alice.key");
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    kubeconfig_for(
        server,
        "alice",
        &[
            "--embed-certs".to_string(),
            format!("--client-certificate={}", cert_path.display()),
            format!("--client-key={}", key_path.display()),
        ],
    )
}

/// kubectl with the kubeconfig at `config`.
fn kubectl_as(server: &BerthServer, config: &PathBuf, args: &[&str]) -> Output {
    let config = config.to_string_lossy().into_owned();
    let mut all = vec!["--kubeconfig", config.as_str()];
    all.extend_from_slice(args);
    server.kubectl(&all)
}

#[test]
fn alice_is_denied_until_bound_to_edit_in_one_namespace_and_cannot_escalate() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    server.kubectl_ok(&["create", "namespace", "a"]);
    server.kubectl_ok(&["create", "namespace", "b"]);
    let alice = alice_kubeconfig(&server);

    let out = kubectl_as(&server, &alice, &["get", "pods", "-n", "a"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(r#"Error from server (Forbidden): pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "a""#),
        "{}",
        stderr(&out)
    );
    let out = kubectl_as(
        &server,
        &alice,
        &["get", "configmap", "kube-root-ca.crt", "-n", "a"],
    );
    assert!(
        stderr(&out).contains(r#"configmaps "kube-root-ca.crt" is forbidden: User "alice" cannot get resource "configmaps" in API group "" in the namespace "a""#),
        "{}",
        stderr(&out)
    );
    // whoami and can-i work for everyone authenticated (system:basic-user).
    let whoami = kubectl_as(
        &server,
        &alice,
        &["auth", "whoami", "-o", "jsonpath={.status.userInfo.groups}"],
    );
    assert!(stdout(&whoami).contains("dev"), "{whoami:?}");

    server.kubectl_ok(&[
        "create",
        "rolebinding",
        "alice-edit",
        "--clusterrole=edit",
        "--user=alice",
        "-n",
        "a",
    ]);
    assert!(
        wait_until(PROPAGATION, || kubectl_as(
            &server,
            &alice,
            &["get", "pods", "-n", "a"]
        )
        .status
        .success()),
        "the RoleBinding never took effect"
    );
    let out = kubectl_as(
        &server,
        &alice,
        &[
            "create",
            "configmap",
            "mine",
            "-n",
            "a",
            "--from-literal=k=v",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let out = kubectl_as(
        &server,
        &alice,
        &[
            "create",
            "configmap",
            "mine",
            "-n",
            "b",
            "--from-literal=k=v",
        ],
    );
    assert!(
        stderr(&out).contains(r#"configmaps is forbidden: User "alice" cannot create resource "configmaps" in API group "" in the namespace "b""#),
        "{}",
        stderr(&out)
    );
    let out = kubectl_as(&server, &alice, &["get", "namespaces"]);
    assert!(
        stderr(&out).contains("at the cluster scope"),
        "{}",
        stderr(&out)
    );

    // The admin asks on alice's behalf by impersonation.
    let no = server.kubectl(&[
        "auth", "can-i", "create", "pods", "--as", "alice", "-n", "b",
    ]);
    assert_eq!(
        (stdout(&no).trim(), no.status.code()),
        ("no", Some(1)),
        "{no:?}"
    );
    let yes = server.kubectl(&[
        "auth", "can-i", "create", "pods", "--as", "alice", "-n", "a",
    ]);
    assert_eq!(
        (stdout(&yes).trim(), yes.status.code()),
        ("yes", Some(0)),
        "{yes:?}"
    );
    let list = server.kubectl_ok(&["auth", "can-i", "--list", "--as", "alice", "-n", "a"]);
    for row in [
        "pods ",
        "deployments.apps ",
        "secrets ",
        "selfsubjectaccessreviews.authorization.k8s.io",
    ] {
        assert!(list.contains(row), "{row} missing from:\n{list}");
    }
    assert!(
        list.contains("[create delete deletecollection patch update]"),
        "{list}"
    );
    let elsewhere = server.kubectl_ok(&["auth", "can-i", "--list", "--as", "alice", "-n", "b"]);
    assert!(!elsewhere.contains("deployments.apps"), "{elsewhere}");
    // A SubjectAccessReview asks about anyone (the admin may create them, alice may not).
    let review = r#"{"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": "alice", "groups": ["dev"], "resourceAttributes": {"namespace": "a", "verb": "delete", "group": "apps", "resource": "deployments"}}}"#;
    let allowed = server.kubectl_stdin(
        &["create", "-f", "-", "-o", "jsonpath={.status.allowed}"],
        review,
    );
    assert_eq!(stdout(&allowed), "true", "{allowed:?}");
    let alice_config = alice.to_string_lossy().into_owned();
    let out = server.kubectl_stdin(
        &["--kubeconfig", &alice_config, "create", "-f", "-"],
        review,
    );
    assert!(stderr(&out).contains(r#"cannot create resource "subjectaccessreviews" in API group "authorization.k8s.io" at the cluster scope"#), "{}", stderr(&out));
    // alice may not impersonate.
    let out = kubectl_as(&server, &alice, &["get", "pods", "-n", "a", "--as", "bob"]);
    assert!(stderr(&out).contains(r#"users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#), "{}", stderr(&out));

    // Escalation: alice cannot make herself cluster-admin ...
    let out = kubectl_as(
        &server,
        &alice,
        &[
            "create",
            "clusterrolebinding",
            "alice-root",
            "--clusterrole=cluster-admin",
            "--user=alice",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(r#"clusterrolebindings.rbac.authorization.k8s.io is forbidden: User "alice" cannot create resource "clusterrolebindings""#),
        "{}",
        stderr(&out)
    );
    // ... not even as a namespace admin, who may write RoleBindings but only grant what she holds.
    server.kubectl_ok(&[
        "create",
        "rolebinding",
        "alice-admin",
        "--clusterrole=admin",
        "--user=alice",
        "-n",
        "a",
    ]);
    assert!(
        wait_until(PROPAGATION, || kubectl_as(
            &server,
            &alice,
            &["get", "rolebindings", "-n", "a"]
        )
        .status
        .success()),
        "the admin RoleBinding never took effect"
    );
    let out = kubectl_as(
        &server,
        &alice,
        &[
            "create",
            "rolebinding",
            "alice-root",
            "--clusterrole=cluster-admin",
            "--user=alice",
            "-n",
            "a",
        ],
    );
    assert!(
        stderr(&out).contains(r#"rolebindings.rbac.authorization.k8s.io "alice-root" is forbidden: user "alice" (groups=["dev" "system:authenticated"]) is attempting to grant RBAC permissions not currently held:"#),
        "{}",
        stderr(&out)
    );
    let out = kubectl_as(
        &server,
        &alice,
        &[
            "create",
            "role",
            "node-reader",
            "--verb=get",
            "--resource=nodes",
            "-n",
            "a",
        ],
    );
    assert!(
        stderr(&out).contains("is attempting to grant RBAC permissions not currently held"),
        "{}",
        stderr(&out)
    );
    // Granting what she holds is fine: view is inside admin.
    let out = kubectl_as(
        &server,
        &alice,
        &[
            "create",
            "rolebinding",
            "bob-view",
            "--clusterrole=view",
            "--user=bob",
            "-n",
            "a",
        ],
    );
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_crd_role_labelled_aggregate_to_view_shows_up_in_view_edit_and_admin() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let role = r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "widgets-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get", "list", "watch"]}]}"#;
    let out = server.kubectl_stdin(&["create", "-f", "-"], role);
    assert!(out.status.success(), "{out:?}");
    for aggregated in ["view", "edit", "admin"] {
        assert!(
            wait_until(PROPAGATION, || {
                let rules = server.kubectl_ok(&[
                    "get",
                    "clusterrole",
                    aggregated,
                    "-o",
                    "jsonpath={.rules[*].resources}",
                ]);
                rules.contains("widgets")
            }),
            "{aggregated} never aggregated the widgets rule"
        );
    }
    let view = server.kubectl_ok(&[
        "get",
        "clusterrole",
        "view",
        "-o",
        "jsonpath={.rules[*].resources}",
    ]);
    assert!(
        view.contains("pods") && view.contains("deployments"),
        "{view}"
    );
    assert!(
        !view.contains("secrets"),
        "view must not read secrets: {view}"
    );
    // Removing the label takes the rule out again.
    server.kubectl_ok(&[
        "label",
        "clusterrole",
        "widgets-view",
        "rbac.authorization.k8s.io/aggregate-to-view-",
    ]);
    assert!(wait_until(PROPAGATION, || {
        !server
            .kubectl_ok(&[
                "get",
                "clusterrole",
                "view",
                "-o",
                "jsonpath={.rules[*].resources}",
            ])
            .contains("widgets")
    }));
}

#[test]
fn a_service_account_token_is_denied_then_allowed_after_a_role_binding() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    server.kubectl_ok(&["create", "serviceaccount", "bot"]);
    let token = server.kubectl_ok(&["create", "token", "bot"]);
    let bot = kubeconfig_for(&server, "bot", &[format!("--token={}", token.trim())]);
    let out = kubectl_as(&server, &bot, &["get", "pods"]);
    assert!(
        stderr(&out).contains(r#"pods is forbidden: User "system:serviceaccount:default:bot" cannot list resource "pods" in API group "" in the namespace "default""#),
        "{}",
        stderr(&out)
    );
    server.kubectl_ok(&[
        "create",
        "rolebinding",
        "bot-view",
        "--clusterrole=view",
        "--serviceaccount=default:bot",
    ]);
    assert!(
        wait_until(PROPAGATION, || kubectl_as(&server, &bot, &["get", "pods"])
            .status
            .success()),
        "the service account's RoleBinding never took effect"
    );
    let out = kubectl_as(&server, &bot, &["delete", "serviceaccount", "bot"]);
    assert!(
        stderr(&out).contains("cannot delete resource"),
        "{}",
        stderr(&out)
    );
}

/// The API server's URL, from the admin kubeconfig.
fn server_url(server: &BerthServer) -> String {
    let config = std::fs::read_to_string(server.kubeconfig_path()).unwrap();
    let line = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("server:"))
        .expect("a server line");
    line.trim().trim_matches('"').to_string()
}

/// curl without credentials (kubectl would prompt for a password): (HTTP code, body).
fn anonymous_get(server: &BerthServer, path: &str) -> (String, String) {
    let ca = server.data_dir().join("pki/ca.crt");
    let out = server
        .command(std::path::Path::new("curl"))
        .args(["-s", "-w", "\n%{http_code}", "--cacert"])
        .arg(&ca)
        .arg(format!("{}{path}", server_url(server)))
        .output()
        .unwrap();
    let text = stdout(&out);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    (code.to_string(), body.to_string())
}

#[test]
fn anonymous_requests_see_only_health_and_version() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    for path in ["/livez", "/readyz", "/healthz", "/version"] {
        let (code, body) = anonymous_get(&server, path);
        assert_eq!(code, "200", "{path}: {body}");
    }
    let (code, body) = anonymous_get(&server, "/api/v1/namespaces");
    assert_eq!(code, "403", "{body}");
    assert!(
        body.contains(r#"namespaces is forbidden: User \"system:anonymous\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"#),
        "{body}"
    );
    let (code, body) = anonymous_get(&server, "/apis");
    assert_eq!(code, "403", "{body}");
    assert!(
        body.contains(r#"forbidden: User \"system:anonymous\" cannot get path \"/apis\""#),
        "{body}"
    );
}

#[test]
fn kubectl_auth_reconcile_creates_then_extends_roles_and_bindings() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    server.kubectl_ok(&["create", "namespace", "apps"]);
    let manifest = |verbs: &str| {
        format!(
            r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: reader, namespace: apps}}
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: {verbs}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: reader, namespace: apps}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}}
subjects:
- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: carol}}
"#
        )
    };
    let out = server.kubectl_stdin(&["auth", "reconcile", "-f", "-"], &manifest("[get]"));
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).contains("role.rbac.authorization.k8s.io/reader reconciled"),
        "{}",
        stdout(&out)
    );
    let out = server.kubectl_stdin(&["auth", "reconcile", "-f", "-"], &manifest("[get, list]"));
    assert!(out.status.success(), "{out:?}");
    let verbs = server.kubectl_ok(&[
        "get",
        "role",
        "reader",
        "-n",
        "apps",
        "-o",
        "jsonpath={.rules[*].verbs}",
    ]);
    // Reconcile adds what is missing and keeps what is there.
    assert!(verbs.contains("get") && verbs.contains("list"), "{verbs}");
    assert!(wait_until(PROPAGATION, || {
        stdout(&server.kubectl(&[
            "auth",
            "can-i",
            "list",
            "configmaps",
            "--as",
            "carol",
            "-n",
            "apps",
        ]))
        .trim()
            == "yes"
    }));
}
