//! Certificate rotation on a running server: the real kubectl keeps working while the serving
//! and admin certificates are replaced under it, with no restart.
//!
//! Needs root (network namespaces), as CI is.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::netns::Netns;
use common::server::BerthServer;
use common::wait_until;

/// The serving certificate a TLS client sees right now, as `openssl x509` prints it.
#[derive(Debug, PartialEq, Eq)]
struct Served {
    serial: String,
    not_after: String,
}

fn api_port(server: &BerthServer) -> String {
    let kubeconfig = std::fs::read_to_string(server.kubeconfig_path()).unwrap();
    let url = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server:"))
        .expect("server in kubeconfig")
        .trim()
        .trim_matches('"')
        .to_string();
    url.rsplit(':').next().unwrap().to_string()
}

fn served_cert(ns: &Netns, port: &str) -> Served {
    // Bounded and retried: one s_client that never finishes must not hang the whole test.
    let hello = (0..5)
        .map(|_| {
            ns.command("timeout")
                .args(["10", "openssl", "s_client", "-connect"])
                .arg(format!("127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .expect("run openssl s_client")
        })
        .find(|out| out.stdout.windows(5).any(|w| w == b"BEGIN"))
        .expect("openssl s_client got the served certificate");
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-enddate"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run openssl x509");
    x509.stdin.take().unwrap().write_all(&hello.stdout).unwrap();
    let out = x509.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {text:?}"))
            .to_string()
    };
    Served {
        serial: field("serial="),
        not_after: field("notAfter="),
    }
}

fn admin_cert_in_kubeconfig(server: &BerthServer) -> String {
    let kubeconfig = std::fs::read_to_string(server.kubeconfig_path()).unwrap();
    kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("client-certificate-data:"))
        .expect("client certificate in kubeconfig")
        .trim()
        .to_string()
}

fn openssl_time(text: &str) -> i64 {
    // `notAfter=Nov 27 03:01:02 2026 GMT`: let date(1) parse it rather than hand-rolling months.
    let out = Command::new("date")
        .args(["-u", "-d", text, "+%s"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn certificates_due_for_rotation_are_replaced_while_kubectl_keeps_working() {
    let ns = Netns::new();
    // Certificates living 1 hour, renewed when less than 2 hours are left, checked every second:
    // every check finds them due.
    let server = BerthServer::start_with_config(
        &ns,
        "[pki]\ncert_validity_seconds = 3600\nrotate_before_seconds = 7200\n\
         check_interval_seconds = 1\n",
    );
    let pid = server.pid();
    let port = api_port(&server);
    let before = served_cert(&ns, &port);
    let admin_before = admin_cert_in_kubeconfig(&server);
    let expires_in = openssl_time(&before.not_after) - jiff::Timestamp::now().as_second();
    assert!(
        (3500..=3600).contains(&expires_in),
        "the first serving cert lives 1 hour, not {expires_in}s"
    );
    server.kubectl_ok(&["get", "namespaces"]);

    let mut after = None;
    let rotated = wait_until(Duration::from_secs(20), || {
        let now = served_cert(&ns, &port);
        let changed = now.serial != before.serial;
        after = Some(now);
        changed
    });
    assert!(rotated, "the serving certificate was never rotated");
    let after = after.unwrap();
    assert!(openssl_time(&after.not_after) >= openssl_time(&before.not_after));
    assert!(
        wait_until(Duration::from_secs(10), || admin_cert_in_kubeconfig(
            &server
        ) != admin_before),
        "the kubeconfig never got a new client certificate"
    );

    // The same process, reached with the rewritten kubeconfig, trusting the same CA.
    assert_eq!(server.pid(), pid);
    let out = server.kubectl_ok(&["get", "namespaces", "-o", "name"]);
    assert!(out.contains("namespace/default"), "{out}");
    let check = server.berth(&["certs", "check"]);
    let table = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{table}");
    let apiserver_row = table
        .lines()
        .find(|l| l.starts_with("apiserver"))
        .unwrap_or_else(|| panic!("no apiserver row in {table}"));
    assert!(
        apiserver_row.split_whitespace().any(|cell| cell == "0"),
        "less than a day left: {apiserver_row}"
    );

    // Less than the 30-day warning window is left: a Warning event names the node.
    let mut events = String::new();
    let warned = wait_until(Duration::from_secs(10), || {
        events = server.kubectl_ok(&[
            "get",
            "events",
            "-n",
            "default",
            "-o",
            "jsonpath={range .items[*]}{.reason} {.type} {.involvedObject.kind} {.message}{\"\\n\"}{end}",
        ]);
        events.contains("CertificateExpiring")
    });
    assert!(warned, "no CertificateExpiring event: {events:?}");
    let expiring: Vec<&str> = events
        .lines()
        .filter(|l| l.starts_with("CertificateExpiring "))
        .collect();
    assert!(
        expiring
            .iter()
            .all(|l| l.starts_with("CertificateExpiring Warning Node ")),
        "{events}"
    );
    assert!(expiring.iter().any(|l| l.contains("apiserver")), "{events}");
}

#[test]
fn certs_rotate_against_a_running_server_is_picked_up_without_a_restart() {
    let ns = Netns::new();
    let server = BerthServer::start_with_config(&ns, "[pki]\ncheck_interval_seconds = 1\n");
    let pid = server.pid();
    let port = api_port(&server);
    let before = served_cert(&ns, &port);
    let admin_before = admin_cert_in_kubeconfig(&server);

    // Nothing is due with the default policy: the served certificate stays put.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(served_cert(&ns, &port), before);

    let rotate = server.berth(&["certs", "rotate"]);
    assert!(
        rotate.status.success(),
        "{}{}",
        String::from_utf8_lossy(&rotate.stdout),
        String::from_utf8_lossy(&rotate.stderr)
    );
    assert!(
        wait_until(Duration::from_secs(20), || served_cert(&ns, &port).serial
            != before.serial),
        "the running server never presented the rotated certificate"
    );
    assert!(
        wait_until(Duration::from_secs(10), || admin_cert_in_kubeconfig(
            &server
        ) != admin_before),
        "the kubeconfig never got the rotated client certificate"
    );
    assert_eq!(server.pid(), pid);
    server.kubectl_ok(&["get", "namespaces"]);
    let days: i64 = {
        let check = server.berth(&["certs", "check"]);
        let table = String::from_utf8_lossy(&check.stdout).into_owned();
        let row = table
            .lines()
            .find(|l| l.starts_with("apiserver"))
            .unwrap()
            .to_string();
        row.split_whitespace().nth(4).unwrap().parse().unwrap()
    };
    assert!(
        (363..=365).contains(&days),
        "a fresh 1-year certificate: {days} days left"
    );
}
