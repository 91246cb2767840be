//! A ClusterIP Service end to end with real pods, as issue 6 asks: traffic spreads over both
//! ready replicas, a replica that turns not-ready stops getting traffic, and a Service scaled
//! to zero refuses connections at once instead of letting them hang.
//!
//! Needs root (network namespaces, nftables, containers). The client is the test itself in the
//! node's network namespace, where the proxy's output chain sends cluster IPs to the pods.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::inside::in_netns;
use common::netns::Netns;
use common::wait_until;

/// Two busybox httpd replicas whose page is their own pod name; a replica is ready while
/// `/tmp/unready` does not exist.
const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: httpd
        image: busybox
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          exec: {command: ["sh", "-c", "test ! -f /tmp/unready"]}
          periodSeconds: 1
          failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"#;

/// The page at `addr` (the answering pod's name), or the connection's error.
fn page(ns: &Netns, addr: SocketAddr) -> std::io::Result<String> {
    in_netns(&ns.name, move || {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
            .trim()
            .to_string())
    })
}

fn pages(ns: &Netns, addr: SocketAddr, n: usize) -> HashSet<String> {
    (0..n)
        .map(|_| page(ns, addr).expect("the service answers"))
        .collect()
}

#[test]
fn a_service_spreads_over_ready_pods_drops_a_not_ready_one_and_refuses_when_scaled_to_zero() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let manifest = cluster.server.data_dir().join("web.yaml");
    std::fs::write(&manifest, WEB).unwrap();
    cluster
        .server
        .kubectl_ok(&["apply", "-f", manifest.to_str().unwrap()]);
    cluster
        .server
        .kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=180s"]);
    let ip =
        cluster
            .server
            .kubectl_ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let service = SocketAddr::new(ip.trim().parse().unwrap(), 80);
    // The test's netns has no default route, as a node would, for cluster IPs to follow
    // before the proxy's output chain rewrites them.
    ns.exec_ok("ip", &["route", "add", "10.43.0.0/16", "dev", "berth0"]);
    let names = cluster.server.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let names: HashSet<String> = names.split_whitespace().map(str::to_string).collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // Both replicas answer over 50 requests (each is missed 50 times with odds 2^-50).
    let mut seen = HashSet::new();
    assert!(
        wait_until(Duration::from_secs(30), || {
            seen.extend(pages(&ns, service, 50));
            seen == names
        }),
        "pages seen {seen:?}, pods {names:?}"
    );

    // One replica turns not-ready: only the other answers once the proxy has caught up.
    let mut sorted: Vec<&String> = names.iter().collect();
    sorted.sort();
    let (sick, healthy) = (sorted[0].clone(), sorted[1].clone());
    cluster
        .server
        .kubectl_ok(&["exec", &sick, "--", "touch", "/tmp/unready"]);
    cluster.server.kubectl_ok(&[
        "wait",
        "--for=condition=Ready=false",
        &format!("pod/{sick}"),
        "--timeout=60s",
    ]);
    let only_healthy = HashSet::from([healthy.clone()]);
    assert!(
        wait_until(Duration::from_secs(20), || pages(&ns, service, 20)
            == only_healthy),
        "the not-ready pod {sick} still gets traffic"
    );
    // And it stays that way.
    assert_eq!(pages(&ns, service, 30), only_healthy);

    // No replicas: connecting is refused at once, not left to time out.
    cluster
        .server
        .kubectl_ok(&["scale", "deployment/web", "--replicas=0"]);
    // Until the replicas' endpoints are gone, a connection may still reach a pod that is
    // shutting down and be reset; wait for the proxy's refusal itself.
    assert!(
        wait_until(Duration::from_secs(60), || page(&ns, service)
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)),
        "the service still answers with no replicas"
    );
    let started = Instant::now();
    let refused = page(&ns, service);
    let error = refused.expect_err("nothing should answer");
    assert_eq!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused in {:?}",
        started.elapsed()
    );

    cluster
        .server
        .kubectl_ok(&["delete", "-f", manifest.to_str().unwrap(), "--wait=false"]);
}

/// Issue 6: a `type: LoadBalancer` Service gets the node's address as its ingress (berth's
/// built-in load balancer, like k3s' ServiceLB), `kubectl get svc` shows it as EXTERNAL-IP, and
/// a machine on the node's LAN reaches the server pod on that address and the Service's port,
/// and on its node port; once the Service goes, the port is closed again.
#[test]
fn a_load_balancer_service_answers_on_the_node_address_it_publishes_as_ingress() {
    use common::netns::connect;
    use common::podnet::reaches;
    use std::path::PathBuf;

    let ns = Netns::new();
    // The LAN before the server starts, so the node counts 192.0.2.1 as its own address.
    let lan = Netns::new();
    connect(&ns, &lan, "192.0.2.1/24", "192.0.2.2/24");
    lan.exec_ok("ip", &["route", "add", "default", "via", "192.0.2.1"]);
    let cluster = Cluster::start(&ns);
    let mut echo = cluster.pod(
        "echo",
        serde_json::json!({"containers": [{"name": "srv", "image": "busybox",
            "command": ["nc", "-ll", "-p", "8080", "-e", "echo", "hi"]}],
            "terminationGracePeriodSeconds": 1}),
    );
    echo["metadata"]["labels"] = serde_json::json!({"app": "echo"});
    cluster.create(echo);
    cluster.create(serde_json::json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "lb"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "echo"},
                 "ports": [{"port": 8765, "targetPort": 8080}]}}));
    cluster.server.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/echo",
        "--timeout=120s",
    ]);

    let mut ingress = String::new();
    let published = wait_until(Duration::from_secs(30), || {
        ingress = cluster.server.kubectl_ok(&[
            "get",
            "service",
            "lb",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[*].ip}",
        ]);
        !ingress.is_empty()
    });
    assert!(published, "no LoadBalancer ingress");
    assert_eq!(ingress, "192.0.2.1", "the node's LAN address, and only it");
    let table = cluster.server.kubectl_ok(&["get", "service", "lb"]);
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let node_port = cluster
        .server
        .kubectl_ok(&[
            "get",
            "service",
            "lb",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])
        .trim()
        .to_string();
    // NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE
    assert_eq!(row[1], "LoadBalancer", "{table}");
    assert_eq!(row[3], "192.0.2.1", "{table}");
    assert_eq!(row[4], format!("8765:{node_port}/TCP"), "{table}");

    let from_lan = PathBuf::from(format!("/run/netns/{}", lan.name));
    let from_node = PathBuf::from(format!("/run/netns/{}", ns.name));
    for (from, addr, what) in [
        (&from_lan, "192.0.2.1:8765".to_string(), "the LAN, LB port"),
        (
            &from_lan,
            format!("192.0.2.1:{node_port}"),
            "the LAN, node port",
        ),
        (
            &from_node,
            "192.0.2.1:8765".to_string(),
            "the node, LB port",
        ),
    ] {
        assert!(
            wait_until(Duration::from_secs(20), || reaches(from, &addr)),
            "{addr} from {what}"
        );
    }

    cluster.server.kubectl_ok(&["delete", "service", "lb"]);
    assert!(
        wait_until(Duration::from_secs(20), || !reaches(
            &from_lan,
            "192.0.2.1:8765"
        )),
        "the LoadBalancer port stays open after the Service is gone"
    );
}
