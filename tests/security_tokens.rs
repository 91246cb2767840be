//! Token verification and hardening, with the real kubectl: TokenReview of pod-bound service
//! account tokens (rejected once the pod is gone), OIDC discovery open to anonymous clients,
//! 429 after a burst of failed authentications, TLS 1.2+ only, and a private data dir.
//!
//! Needs root (network namespaces).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use common::netns::Netns;
use common::server::BerthServer;
use serde_json::{json, Value};

fn server_url(server: &BerthServer) -> String {
    let kubeconfig = std::fs::read_to_string(server.kubeconfig_path()).expect("kubeconfig");
    kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("a server line")
        .trim()
        .trim_matches('"')
        .to_string()
}

/// curl inside the server's netns, with no client certificate (an anonymous or token client).
fn curl(server: &BerthServer, args: &[&str]) -> Output {
    server
        .command(Path::new("curl"))
        .args(["-k", "-s", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl")
}

fn review(server: &BerthServer, token: &str, audiences: &[&str]) -> Value {
    let mut spec = json!({"token": token});
    if !audiences.is_empty() {
        spec["audiences"] = json!(audiences);
    }
    let body =
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec});
    let out = server.kubectl_stdin(&["create", "-f", "-", "-o", "json"], &body.to_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("TokenReview JSON")
}

#[test]
fn a_pod_bound_token_reviews_as_its_account_until_the_pod_is_deleted() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    server.kubectl_ok(&["create", "serviceaccount", "robot"]);
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "holder"},
        "spec": {"serviceAccountName": "robot", "nodeName": "nowhere",
                 "containers": [{"name": "c", "image": "busybox"}]},
    });
    let out = server.kubectl_stdin(&["create", "-f", "-"], &pod.to_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = server.kubectl_ok(&[
        "create",
        "token",
        "robot",
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        "holder",
    ]);
    let token = token.trim();

    let answer = review(&server, token, &[]);
    let status = &answer["status"];
    assert_eq!(status["authenticated"], true, "{answer}");
    assert_eq!(
        status["user"]["username"],
        "system:serviceaccount:default:robot"
    );
    assert_eq!(
        status["user"]["extra"]["authentication.kubernetes.io/pod-name"][0],
        "holder"
    );
    let refused = review(&server, token, &["some-other-audience"]);
    assert!(refused["status"]["authenticated"].is_null(), "{refused}");

    // The token is a working bearer token for the API until its pod goes.
    let url = server_url(&server);
    let bearer = format!("Authorization: Bearer {token}");
    let whoami = curl(&server, &["-H", &bearer, &format!("{url}/api")]);
    assert!(String::from_utf8_lossy(&whoami.stdout).contains("APIVersions"));

    server.kubectl_ok(&["delete", "pod", "holder", "--grace-period=0", "--force"]);
    server.kubectl_ok(&["wait", "--for=delete", "pod/holder", "--timeout=30s"]);
    let after = review(&server, token, &[]);
    assert!(after["status"]["authenticated"].is_null(), "{after}");
    assert!(
        after["status"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("no longer exists"),
        "{after}"
    );
    let code = curl(
        &server,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &bearer,
            &format!("{url}/api"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&code.stdout), "401");
}

#[test]
fn oidc_discovery_is_public_and_publishes_the_signing_key() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let url = server_url(&server);
    let config = curl(
        &server,
        &[&format!("{url}/.well-known/openid-configuration")],
    );
    let config: Value = serde_json::from_slice(&config.stdout).expect("openid configuration");
    assert_eq!(
        config["issuer"],
        "https://kubernetes.default.svc.cluster.local"
    );
    assert_eq!(config["jwks_uri"], format!("{url}/openid/v1/jwks"));
    let jwks = curl(&server, &[&format!("{url}/openid/v1/jwks")]);
    let jwks: Value = serde_json::from_slice(&jwks.stdout).expect("jwks");
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
    // Anonymous clients still see nothing else.
    let other = curl(
        &server,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{url}/api/v1/secrets"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&other.stdout), "403");
}

#[test]
fn failed_authentications_are_rate_limited_per_address() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let url = format!("{}/api", server_url(&server));
    // One curl, one connection, 30 quick requests with a token nobody owns.
    let mut args = vec![
        "-H",
        "Authorization: Bearer not-a-real-token",
        "-w",
        "%{http_code}\\n",
        "-o",
        "/dev/null",
    ];
    let urls = vec![url.as_str(); 30];
    for u in &urls {
        args.push(u);
    }
    let out = curl(&server, &args);
    // `-o` covers the first URL only: the other bodies come out too, each followed by its code.
    let codes: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            line.chars()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect()
        })
        .collect();
    assert_eq!(codes.len(), 30, "{codes:?}");
    assert_eq!(codes[0], "401");
    assert!(codes.iter().any(|c| c == "429"), "{codes:?}");
    let headers = curl(
        &server,
        &[
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            "Authorization: Bearer nope",
            &url,
        ],
    );
    let headers = String::from_utf8_lossy(&headers.stdout).to_lowercase();
    if headers.contains(" 429") {
        assert!(headers.contains("retry-after: 1"), "{headers}");
    }
    // The admin, with a certificate, is never limited.
    server.kubectl_ok(&["get", "namespaces"]);
}

#[test]
fn only_tls_1_2_and_later_is_spoken_and_the_data_dir_is_private() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let url = format!("{}/version", server_url(&server));
    let old = curl(
        &server,
        &[
            "--tlsv1.0",
            "--tls-max",
            "1.1",
            "--ciphers",
            "DEFAULT@SECLEVEL=0",
            &url,
        ],
    );
    assert!(!old.status.success(), "TLS 1.1 was accepted");
    let tls12 = curl(&server, &["--tlsv1.2", "--tls-max", "1.2", &url]);
    assert!(String::from_utf8_lossy(&tls12.stdout).contains("gitVersion"));
    let cbc = curl(
        &server,
        &[
            "--tlsv1.2",
            "--tls-max",
            "1.2",
            "--ciphers",
            "ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA:AES128-SHA",
            &url,
        ],
    );
    assert!(!cbc.status.success(), "a CBC suite was accepted");

    let dir = server.data_dir();
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(dir), 0o700, "the data dir");
    for private in [
        "berth.redb",
        "berth.redb.wal",
        "kubeconfig.yaml",
        "encryption/keys",
    ] {
        assert_eq!(mode(&dir.join(private)), 0o600, "{private}");
    }
    for sub in ["pki", "encryption"] {
        assert_eq!(mode(&dir.join(sub)), 0o700, "{sub}");
        for entry in std::fs::read_dir(dir.join(sub))
            .expect("read dir")
            .flatten()
        {
            let path = entry.path();
            let name = path.display().to_string();
            if name.ends_with(".crt") {
                assert_eq!(mode(&path) & 0o022, 0, "{name} is writable by others");
            } else {
                assert_eq!(mode(&path) & 0o077, 0, "{name} is readable by others");
            }
        }
    }
    // No value of the key file ever appears in the server's log.
    let keys = std::fs::read_to_string(dir.join("encryption/keys")).expect("key file");
    let log = server.log();
    for line in keys.lines().filter(|l| !l.starts_with('#')) {
        let secret = line.split_once(' ').map(|(_, k)| k).unwrap_or("");
        assert!(!secret.is_empty() && !log.contains(secret));
    }
}
