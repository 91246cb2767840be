//! The pod network across nodes: a server in one network namespace and `berth agent` in
//! another, joined by a veth pair as two machines on one link. Pods on the two nodes reach each
//! other by pod IP and through ClusterIP Services (each node's service proxy sends to pods on
//! the other), with the host-gw backend and with VXLAN; a NetworkPolicy on one node governs
//! clients on the other; routes follow the Nodes.
//!
//! Clients are sleeping busybox pods; the test connects from inside a client pod's network
//! namespace (entered through its container process), where the pod's own `nc` would connect
//! from. Servers are busybox `nc -ll -p 8080 -e echo hi`.
//!
//! Needs root (network namespaces, cgroups, mounts), as in CI.

mod common;

use std::fs::File;
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::agent::{join_token, Agent};
use common::cluster::test_image;
use common::netns::{connect, Netns};
use common::podnet::{client_netns, processes_with_marker, reaches};
use common::registry::Registry;
use common::server::BerthServer;
use common::wait_until;
use nix::sched::{setns, CloneFlags};
use serde_json::json;

const SERVER_IP: &str = "192.168.251.1";
const AGENT_IP: &str = "192.168.251.2";
/// Where the agent sits when a router stands between the nodes: another subnet.
const ROUTED_AGENT_IP: &str = "192.168.250.2";
const ROUTER_SERVER_SIDE: &str = "192.168.251.254";
const ROUTER_AGENT_SIDE: &str = "192.168.250.254";
/// How long a route, proxy or policy change may take to be in force.
const CONVERGE: Duration = Duration::from_secs(30);

/// A server and an agent, each with a registry of its own, both Ready.
struct TwoNodes {
    // Dropped in this order: the agent (releasing its pods), the server, the registries, and
    // the namespaces last.
    agent: Agent,
    server: BerthServer,
    _registries: [Registry; 2],
    _work: tempfile::TempDir,
    agent_node: String,
    server_node: String,
    agent_ns: Netns,
    server_ns: Netns,
    /// Between the nodes when they are on different subnets.
    _router: Option<Netns>,
}

impl TwoNodes {
    fn start(backend: &str) -> TwoNodes {
        TwoNodes::start_with(backend, "")
    }

    /// Like `start`, with `server_extra` (TOML, top-level tables) in the server's config.
    fn start_with(backend: &str, server_extra: &str) -> TwoNodes {
        TwoNodes::start_on(backend, server_extra, false)
    }

    /// Like `start`, with the agent on another subnet behind a router: no shared link.
    fn start_routed(backend: &str) -> TwoNodes {
        TwoNodes::start_on(backend, "", true)
    }

    fn start_on(backend: &str, server_extra: &str, routed: bool) -> TwoNodes {
        let server_ns = Netns::new();
        let agent_ns = Netns::new();
        let router = routed.then(|| {
            let router = Netns::new();
            connect(
                &server_ns,
                &router,
                &format!("{SERVER_IP}/24"),
                &format!("{ROUTER_SERVER_SIDE}/24"),
            );
            connect(
                &router,
                &agent_ns,
                &format!("{ROUTER_AGENT_SIDE}/24"),
                &format!("{ROUTED_AGENT_IP}/24"),
            );
            router.exec_ok("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
            // The router knows only the two subnets: nothing it forwards leaves them.
            server_ns.exec_ok(
                "ip",
                &["route", "add", "default", "via", ROUTER_SERVER_SIDE],
            );
            agent_ns.exec_ok("ip", &["route", "add", "default", "via", ROUTER_AGENT_SIDE]);
            router
        });
        if !routed {
            connect(
                &server_ns,
                &agent_ns,
                &format!("{SERVER_IP}/24"),
                &format!("{AGENT_IP}/24"),
            );
        }
        let work = tempfile::tempdir().unwrap();
        let image = test_image(work.path());
        let registries = [Registry::start(&server_ns), Registry::start(&agent_ns)];
        for registry in &registries {
            registry.push_oci_layout(&image, "latest", "library/busybox");
        }
        let network = format!("[network]\nbackend = \"{backend}\"\n");
        let server_config = format!(
            "{network}{server_extra}\n[registries.mirrors.\"docker.io\"]\nendpoints = [\"http://{}\"]\n",
            registries[0].addr()
        );
        let server = BerthServer::start_listening_with_config(
            &server_ns,
            &format!("{SERVER_IP}:6443"),
            &server_config,
        );
        let (token, hash) = join_token(&server);
        let agent_node = format!("mn-agent-{}", std::process::id());
        let url = format!("https://{SERVER_IP}:6443");
        let agent = Agent::start_with_config(
            &agent_ns,
            &[
                "--server",
                &url,
                "--token",
                &token,
                "--ca-cert-hash",
                &hash,
                "--node-name",
                &agent_node,
            ],
            &network,
        );
        let mut nodes = TwoNodes {
            agent,
            server,
            _registries: registries,
            _work: work,
            agent_node,
            server_node: String::new(),
            agent_ns,
            server_ns,
            _router: router,
        };
        let ready = wait_until(Duration::from_secs(120), || {
            let out = nodes.server.kubectl_ok(&[
                "get",
                "nodes",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
            ]);
            let ready: Vec<&str> = out
                .lines()
                .filter(|l| l.ends_with(" True"))
                .filter_map(|l| l.split_whitespace().next())
                .collect();
            ready.len() == 2 && ready.contains(&nodes.agent_node.as_str())
        });
        assert!(
            ready,
            "both nodes Ready: {}",
            nodes.server.kubectl_ok(&["get", "nodes", "-o", "wide"])
        );
        nodes.server_node = nodes
            .server
            .kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"])
            .split_whitespace()
            .find(|name| *name != nodes.agent_node)
            .unwrap()
            .to_string();
        nodes
    }

    fn pod_cidr(&self, node: &str) -> String {
        self.server
            .kubectl_ok(&["get", "node", node, "-o", "jsonpath={.spec.podCIDR}"])
            .trim()
            .to_string()
    }

    fn create(&self, object: serde_json::Value) {
        let out = self
            .server
            .kubectl_stdin(&["create", "-f", "-"], &object.to_string());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn server_pod(&self, name: &str, node: &str, app: &str) {
        self.create(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "srv", "image": "busybox",
                    "command": ["nc", "-ll", "-p", "8080", "-e", "echo", "hi"],
                    "ports": [{"containerPort": 8080}]}]}}));
    }

    fn client_pod(&self, name: &str, node: &str, marker: &str) {
        self.create(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "client"}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "cli", "image": "busybox", "command": ["sleep", marker]}]}}));
    }

    fn service(&self, name: &str, app: &str) -> String {
        self.create(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": {"app": app}, "ports": [{"port": 80, "targetPort": 8080}]}}));
        self.server
            .kubectl_ok(&["get", "service", name, "-o", "jsonpath={.spec.clusterIP}"])
            .trim()
            .to_string()
    }

    /// The cluster DNS of a worker's pods: its own, on its bridge gateway (the first address
    /// of its pod CIDR).
    fn node_dns(&self, node: &str) -> String {
        let cidr = self.pod_cidr(node);
        let network = cidr.split('/').next().unwrap_or_default();
        let (prefix, _) = network.rsplit_once('.').expect("an IPv4 pod CIDR");
        format!("{prefix}.1")
    }

    /// Waits until the pod runs; its IP.
    fn running_ip(&self, name: &str) -> String {
        let mut last = String::new();
        let running = wait_until(Duration::from_secs(180), || {
            last = self.server.kubectl_ok(&[
                "get",
                "pod",
                name,
                "-o",
                "jsonpath={.status.phase} {.status.podIP}",
            ]);
            last.starts_with("Running ") && last.trim().len() > "Running".len()
        });
        assert!(running, "pod {name} never ran: {last:?}");
        last["Running ".len()..].trim().to_string()
    }

    /// The server namespace's `ip route` and `ip link` and neighbours, for failure messages.
    fn routing_state(&self) -> String {
        let mut text = String::new();
        for (what, ns) in [("server", &self.server_ns), ("agent", &self.agent_ns)] {
            for args in [&["route"][..], &["-d", "link"][..], &["neigh"][..]] {
                let out = ns.exec("ip", args);
                text.push_str(&format!(
                    "--- {what}: ip {}\n{}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stdout)
                ));
            }
        }
        text
    }

    /// Deletes the pods and waits until the agent has released its own.
    fn delete_pods(&self) {
        self.server.kubectl_ok(&[
            "delete",
            "pods",
            "--all",
            "--grace-period=1",
            "--wait=false",
        ]);
        let pods = self.agent.data_dir().join("pods");
        let released = wait_until(Duration::from_secs(90), || {
            std::fs::read_dir(&pods)
                .map(|mut d| d.next().is_none())
                .unwrap_or(true)
        });
        assert!(released, "the agent released its pods");
    }
}

/// A unique sleep length per client pod of this test process (tests in it run in parallel,
/// and all their containers are processes of this one machine).
fn marker(n: u32) -> String {
    format!("{}{n:02}", 20_000_000 + std::process::id() % 1_000_000)
}

/// Asserts that `from` reaches `addr` (or not) within [`CONVERGE`], and still does right after.
fn expect(nodes: &TwoNodes, from: &Path, addr: &str, want: bool, what: &str) {
    let settled = wait_until(CONVERGE, || reaches(from, addr) == want);
    assert!(
        settled && reaches(from, addr) == want,
        "{what}: expected {addr} to be {}\n{}",
        if want { "reachable" } else { "blocked" },
        nodes.routing_state()
    );
}

/// Pods on the two nodes reach each other directly and through Services; returns the clients'
/// namespaces (on the server, on the agent) and the server pods' IPs (same order). The client
/// pods' markers are `first_marker` and the next.
fn pods_reach_each_other_across_nodes(
    nodes: &TwoNodes,
    first_marker: u32,
) -> ([PathBuf; 2], [String; 2]) {
    let (server_node, agent_node) = (nodes.server_node.as_str(), nodes.agent_node.as_str());
    nodes.server_pod("web-on-server", server_node, "web-on-server");
    nodes.server_pod("web-on-agent", agent_node, "web-on-agent");
    let (m_server, m_agent) = (marker(first_marker), marker(first_marker + 1));
    nodes.client_pod("cli-on-server", server_node, &m_server);
    nodes.client_pod("cli-on-agent", agent_node, &m_agent);
    let to_server_pods = nodes.service("to-server", "web-on-server");
    let to_agent_pods = nodes.service("to-agent", "web-on-agent");

    let web_server_ip = nodes.running_ip("web-on-server");
    let web_agent_ip = nodes.running_ip("web-on-agent");
    nodes.running_ip("cli-on-server");
    nodes.running_ip("cli-on-agent");
    let server_cidr = nodes.pod_cidr(server_node);
    let agent_cidr = nodes.pod_cidr(agent_node);
    assert_eq!(
        server_cidr, "10.42.0.0/24",
        "the first node keeps the first slice"
    );
    assert_ne!(agent_cidr, server_cidr);
    assert!(web_agent_ip.starts_with(agent_cidr.trim_end_matches("0/24")));

    let cli_server = client_netns(&m_server);
    let cli_agent = client_netns(&m_agent);
    expect(
        nodes,
        &cli_server,
        &format!("{web_agent_ip}:8080"),
        true,
        "a pod on the server reaches a pod on the agent by IP",
    );
    expect(
        nodes,
        &cli_agent,
        &format!("{web_server_ip}:8080"),
        true,
        "a pod on the agent reaches a pod on the server by IP",
    );
    expect(
        nodes,
        &cli_server,
        &format!("{to_agent_pods}:80"),
        true,
        "the server's proxy sends a Service's traffic to the agent's pod",
    );
    expect(
        nodes,
        &cli_agent,
        &format!("{to_server_pods}:80"),
        true,
        "the agent's proxy sends a Service's traffic to the server's pod",
    );
    ([cli_server, cli_agent], [web_server_ip, web_agent_ip])
}

/// The route to the agent's pods goes when its Node does (and the agent stays away); then
/// `berth reset` on the agent removes its routes and tunnel.
fn the_route_goes_with_the_node_and_reset_removes_the_rest(mut nodes: TwoNodes) {
    let agent_cidr = nodes.pod_cidr(&nodes.agent_node);
    let routed = |nodes: &TwoNodes| {
        nodes
            .server_ns
            .exec_ok("ip", &["route", "show", &agent_cidr])
            .contains(&agent_cidr)
    };
    assert!(routed(&nodes), "{}", nodes.routing_state());
    nodes.delete_pods();
    nodes.agent.stop();
    let agent_node = nodes.agent_node.clone();
    nodes.server.kubectl_ok(&["delete", "node", &agent_node]);
    assert!(
        wait_until(CONVERGE, || !routed(&nodes)),
        "the route to a deleted Node's pods is gone: {}",
        nodes.routing_state()
    );

    let berth_routes = |ns: &Netns| ns.exec_ok("ip", &["route", "show", "proto", "98"]);
    assert!(
        !berth_routes(&nodes.agent_ns).trim().is_empty(),
        "the stopped agent's route to the server's pods is still there"
    );
    let reset = nodes
        .agent_ns
        .command(env!("CARGO_BIN_EXE_berth"))
        .arg("reset")
        .arg("--data-dir")
        .arg(nodes.agent.data_dir())
        .env("BERTH_CONFIG", nodes.agent.dir.path().join("config.toml"))
        .output()
        .unwrap();
    assert!(
        reset.status.success(),
        "{}",
        String::from_utf8_lossy(&reset.stderr)
    );
    assert_eq!(
        berth_routes(&nodes.agent_ns).trim(),
        "",
        "reset removes berth's routes"
    );
    assert!(
        !nodes.agent_ns.exec_ok("ip", &["link"]).contains("berth.1"),
        "reset removes the tunnel"
    );
}

#[test]
fn pods_on_two_nodes_on_one_link_reach_each_other_over_host_gw_and_obey_network_policy() {
    let nodes = TwoNodes::start("auto");
    let ([cli_server, _cli_agent], [_, web_agent_ip]) =
        pods_reach_each_other_across_nodes(&nodes, 1);
    let agent_cidr = nodes.pod_cidr(&nodes.agent_node);
    let route = nodes
        .server_ns
        .exec_ok("ip", &["route", "show", &agent_cidr]);
    assert!(
        route.contains(&format!("via {AGENT_IP}")),
        "auto picks host-gw on one link: {route}"
    );
    assert!(
        !nodes.server_ns.exec_ok("ip", &["link"]).contains("berth.1"),
        "no tunnel without a peer that needs one"
    );

    // A policy on the agent's pod, enforced by the agent, against a client on the server.
    let target = format!("{web_agent_ip}:8080");
    nodes.create(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny-web-on-agent"},
        "spec": {"podSelector": {"matchLabels": {"app": "web-on-agent"}},
                 "policyTypes": ["Ingress"]}}),
    );
    expect(
        &nodes,
        &cli_server,
        &target,
        false,
        "a deny-all policy on the agent blocks the server's client",
    );
    nodes.create(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "allow-clients"},
        "spec": {"podSelector": {"matchLabels": {"app": "web-on-agent"}},
                 "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}}),
    );
    expect(
        &nodes,
        &cli_server,
        &target,
        true,
        "a policy allowing clients lets the server's client in again",
    );
    the_route_goes_with_the_node_and_reset_removes_the_rest(nodes);
}

#[test]
fn pods_on_two_nodes_reach_each_other_through_vxlan() {
    let nodes = TwoNodes::start("vxlan");
    pods_reach_each_other_across_nodes(&nodes, 3);
    let agent_cidr = nodes.pod_cidr(&nodes.agent_node);
    let route = nodes
        .server_ns
        .exec_ok("ip", &["route", "show", &agent_cidr]);
    assert!(
        route.contains("dev berth.1") && route.contains("onlink"),
        "the agent's pods are routed into the tunnel: {route}"
    );
    let link = nodes
        .server_ns
        .exec_ok("ip", &["-d", "link", "show", "berth.1"]);
    assert!(
        link.contains("vxlan id 1") && link.contains("dstport 8472") && link.contains("mtu 1450"),
        "{link}"
    );
    let annotation = nodes.server.kubectl_ok(&[
        "get",
        "node",
        &nodes.agent_node,
        "-o",
        "jsonpath={.metadata.annotations.berth\\.io/backend-data}",
    ]);
    assert!(
        annotation.contains("\"VtepMAC\"") && annotation.contains("\"VNI\":1"),
        "the agent published its VTEP: {annotation}"
    );
    let mtu = nodes.agent_ns.exec_ok("ip", &["link", "show", "berth0"]);
    assert!(mtu.contains("mtu 1450"), "pods get the tunnel's MTU: {mtu}");
    the_route_goes_with_the_node_and_reset_removes_the_rest(nodes);
}

#[test]
fn pods_on_two_nodes_on_different_subnets_reach_each_other_through_vxlan_over_a_router() {
    let nodes = TwoNodes::start_routed("vxlan");
    let agent_ip = nodes.server.kubectl_ok(&[
        "get",
        "node",
        &nodes.agent_node,
        "-o",
        "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
    ]);
    assert_eq!(
        agent_ip.trim(),
        ROUTED_AGENT_IP,
        "the agent is on its own subnet"
    );
    pods_reach_each_other_across_nodes(&nodes, 60);
    let agent_cidr = nodes.pod_cidr(&nodes.agent_node);
    let route = nodes
        .server_ns
        .exec_ok("ip", &["route", "show", &agent_cidr]);
    assert!(
        route.contains("dev berth.1"),
        "the agent's pods are reached through the tunnel: {route}"
    );
    let fdb = nodes
        .server_ns
        .exec_ok("bridge", &["fdb", "show", "dev", "berth.1"]);
    assert!(
        fdb.contains(&format!("dst {ROUTED_AGENT_IP}")),
        "the tunnel's far end is the agent across the router: {fdb}"
    );
    nodes.delete_pods();
}

/// Bytes per throughput sample.
const STREAM_BYTES: usize = 256 * 1024 * 1024;

/// MiB/s of one TCP stream from the namespace `from` to a listener in the namespace `to`
/// (at `to_ip`), both pods' namespaces: the pod network's path alone, no process in the pods.
fn stream_throughput(from: &Path, to: &Path, to_ip: &str) -> f64 {
    use std::io::Write;
    use std::net::TcpListener;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let to = to.to_path_buf();
    let to_ip = to_ip.to_string();
    let sink = std::thread::spawn(move || {
        let ns = File::open(&to).unwrap();
        setns(&ns, CloneFlags::CLONE_NEWNET).unwrap();
        let listener = TcpListener::bind(format!("{to_ip}:0")).unwrap();
        ready_tx.send(listener.local_addr().unwrap()).unwrap();
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    let addr = ready_rx.recv().unwrap();
    let from = from.to_path_buf();
    let elapsed = std::thread::spawn(move || {
        let ns = File::open(&from).unwrap();
        setns(&ns, CloneFlags::CLONE_NEWNET).unwrap();
        let mut stream = TcpStream::connect(addr).unwrap();
        let chunk = vec![7u8; 1 << 16];
        let started = std::time::Instant::now();
        let mut sent = 0;
        while sent < STREAM_BYTES {
            stream.write_all(&chunk).unwrap();
            sent += chunk.len();
        }
        drop(stream);
        started
    })
    .join()
    .unwrap();
    let received = sink.join().unwrap();
    assert_eq!(received, STREAM_BYTES);
    received as f64 / (1024.0 * 1024.0) / elapsed.elapsed().as_secs_f64()
}

/// Cross-node pod-to-pod throughput against same-node, for one backend: three best-of runs.
fn throughput_for(backend: &str, first_marker: u32) {
    let nodes = TwoNodes::start(backend);
    let (server_node, agent_node) = (nodes.server_node.clone(), nodes.agent_node.clone());
    let markers = [
        marker(first_marker),
        marker(first_marker + 1),
        marker(first_marker + 2),
    ];
    nodes.client_pod("a-on-server", &server_node, &markers[0]);
    nodes.client_pod("b-on-server", &server_node, &markers[1]);
    nodes.client_pod("c-on-agent", &agent_node, &markers[2]);
    let b_ip = nodes.running_ip("b-on-server");
    nodes.running_ip("a-on-server");
    nodes.running_ip("c-on-agent");
    let [a, b, c] = markers.map(|m| client_netns(&m));
    // The route to the other node may trail the pods by a watch event.
    std::thread::sleep(Duration::from_secs(3));
    let best = |from: &Path| {
        (0..3)
            .map(|_| stream_throughput(from, &b, &b_ip))
            .fold(0.0, f64::max)
    };
    let same = best(&a);
    let cross = best(&c);
    eprintln!(
        "pod-to-pod TCP, {backend}: same node {same:.0} MiB/s, across nodes {cross:.0} MiB/s, ratio {:.2}",
        cross / same
    );
    assert!(cross > 0.0 && same > 0.0);
    nodes.delete_pods();
}

#[test]
#[ignore = "benchmark: run on its own"]
fn cross_node_throughput_against_same_node() {
    throughput_for("host-gw", 5);
    throughput_for("vxlan", 8);
}

/// The `(uid, node, phase)` of each pod labelled `app=<app>`, as the server sees them.
fn pods_of(nodes: &TwoNodes, app: &str) -> Vec<(String, String, String)> {
    let text = nodes.server.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        &format!("app={app}"),
        "-o",
        "jsonpath={range .items[*]}{.metadata.uid} {.spec.nodeName} {.status.phase}{\"\\n\"}{end}",
    ]);
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            Some((
                words.next()?.to_owned(),
                words.next().unwrap_or_default().to_owned(),
                words.next().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

#[test]
fn kubectl_drain_of_an_agent_evicts_its_pods_one_budget_at_a_time_onto_the_other_node() {
    let nodes = TwoNodes::start("auto");
    let (agent_node, server_node) = (nodes.agent_node.clone(), nodes.server_node.clone());
    // The pods start on the agent: the server's node takes none until the drain.
    nodes.server.kubectl_ok(&["cordon", &server_node]);
    let mark = marker(60);
    nodes.create(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "drained"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "drained"}},
            "template": {"metadata": {"labels": {"app": "drained"}},
                "spec": {"terminationGracePeriodSeconds": 1,
                    "volumes": [{"name": "scratch", "emptyDir": {}}],
                    "containers": [{"name": "main", "image": "busybox",
                        "command": ["sleep", mark],
                        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}]}}}}));
    nodes.create(
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "drained"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "drained"}}}}),
    );
    let mut pods = Vec::new();
    let running_on_agent = wait_until(Duration::from_secs(180), || {
        pods = pods_of(&nodes, "drained");
        pods.len() == 2
            && pods
                .iter()
                .all(|(_, node, phase)| *node == agent_node && phase == "Running")
    });
    assert!(running_on_agent, "both pods run on the agent: {pods:?}");
    let evicted: Vec<String> = pods.iter().map(|(uid, _, _)| uid.clone()).collect();
    let agent_pods = nodes.agent.data_dir().join("pods");
    for uid in &evicted {
        assert!(agent_pods.join(uid).is_dir(), "the agent runs pod {uid}");
    }
    let budget = wait_until(Duration::from_secs(60), || {
        nodes.server.kubectl_ok(&[
            "get",
            "pdb",
            "drained",
            "-o",
            "jsonpath={.status.disruptionsAllowed}",
        ]) == "1"
    });
    assert!(budget, "the budget allows one disruption");
    nodes.server.kubectl_ok(&["uncordon", &server_node]);

    let out = nodes.server.kubectl(&[
        "drain",
        &agent_node,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=180s",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "drain failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("node/{agent_node} cordoned")),
        "{stdout}"
    );
    assert_eq!(stdout.matches(" evicted").count(), 2, "{stdout}");
    assert!(
        stdout.contains(&format!("node/{agent_node} drained")),
        "{stdout}"
    );
    // Both pods were asked for at once; the budget let the second go only once the first's
    // replacement was ready on the other node.
    assert!(
        stderr.contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "no eviction was held back by the budget:\n{stdout}\n{stderr}"
    );
    let node = |path: &str| {
        nodes.server.kubectl_ok(&[
            "get",
            "node",
            &agent_node,
            "-o",
            &format!("jsonpath={path}"),
        ])
    };
    assert_eq!(node("{.spec.unschedulable}"), "true");
    let tainted = || node("{.spec.taints[*].key}").contains("node.kubernetes.io/unschedulable");
    assert!(
        wait_until(Duration::from_secs(30), tainted),
        "the cordoned node carries the unschedulable taint"
    );

    // The replacements run on the server's node; the agent stopped the evicted containers
    // and released their pods.
    let moved = wait_until(Duration::from_secs(120), || {
        pods = pods_of(&nodes, "drained");
        pods.len() == 2
            && pods.iter().all(|(uid, node, phase)| {
                *node == server_node && phase == "Running" && !evicted.contains(uid)
            })
    });
    assert!(moved, "the replacements run on {server_node}: {pods:?}");
    let released = wait_until(Duration::from_secs(60), || {
        evicted.iter().all(|uid| !agent_pods.join(uid).exists())
            && processes_with_marker(&mark).len() == 2
    });
    assert!(
        released,
        "the agent still holds evicted pods or their containers: {:?} ({} containers sleep {mark})",
        std::fs::read_dir(&agent_pods)
            .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
            .unwrap_or_default(),
        processes_with_marker(&mark).len()
    );

    // Uncordoned, the agent takes pods again: one that only it may run.
    nodes.server.kubectl_ok(&["uncordon", &agent_node]);
    assert_eq!(node("{.spec.unschedulable}"), "");
    assert!(
        wait_until(Duration::from_secs(30), || !tainted()),
        "the unschedulable taint went with the cordon"
    );
    nodes.create(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "after-uncordon", "labels": {"app": "after-uncordon"}},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": agent_node},
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]}}));
    let scheduled = wait_until(Duration::from_secs(120), || {
        pods = pods_of(&nodes, "after-uncordon");
        pods.len() == 1 && pods[0].1 == agent_node && pods[0].2 == "Running"
    });
    assert!(scheduled, "the uncordoned agent runs a new pod: {pods:?}");

    nodes
        .server
        .kubectl_ok(&["delete", "deployment", "drained"]);
    nodes.delete_pods();
}

/// What `kubectl port-forward` of `pod` to `port` answers on a connection that sends nothing:
/// kubectl forwards from the server's namespace, the API server proxies to the agent's kubelet.
fn port_forward_answer(nodes: &TwoNodes, pod: &str, port: u16, websockets: bool) -> String {
    use std::io::{BufRead, BufReader};
    let local = 19_000 + (std::process::id() % 1_000) as u16 + u16::from(websockets);
    let mut child = nodes
        .server
        .command(&common::tools::kubectl())
        .args(["port-forward", pod, &format!("{local}:{port}")])
        .env(
            "KUBECTL_PORT_FORWARD_WEBSOCKETS",
            if websockets { "true" } else { "false" },
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let ready = rx
        .recv_timeout(Duration::from_secs(30))
        .is_ok_and(|line| line.contains("Forwarding from"));
    let answer = ready.then(|| {
        common::inside::in_netns(&nodes.server_ns.name, move || {
            let mut conn = TcpStream::connect(("127.0.0.1", local)).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let mut answer = String::new();
            let _ = conn.read_to_string(&mut answer);
            answer
        })
    });
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    answer.unwrap_or_else(|| {
        panic!(
            "kubectl port-forward never got ready: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Resolves `name` inside `pod` with busybox's nslookup (through `kubectl exec`, itself a
/// proxied stream for a pod on the agent); the first address after the answer's name.
fn resolve_in(nodes: &TwoNodes, pod: &str, name: &str) -> String {
    let script = format!(
        "nslookup {name} | awk '/^Name:/ {{found=1}} found && /^Address/ {{print $2; exit}}'"
    );
    let mut last = String::new();
    wait_until(CONVERGE, || {
        let out = nodes
            .server
            .kubectl(&["exec", pod, "--", "sh", "-c", &script]);
        last = String::from_utf8_lossy(&out.stdout).trim().to_string();
        out.status.success() && !last.is_empty()
    });
    last
}

/// A client certificate for `user` in `group`, signed with the cluster CA from the server's
/// data dir, written beside it: `(cert path, key path)`.
fn user_certificate(server: &BerthServer, user: &str, group: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = server.user_certificate(user, group);
    let cert_path = server.data_dir().join(format!("{user}.crt"));
    let key_path = server.data_dir().join(format!("{user}.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    (cert_path, key_path)
}

/// `path` of the agent's kubelet API fetched from the server's machine by `user` (in `group`)
/// with curl, which trusts only the cluster CA and checks the agent's IP in its certificate:
/// `(HTTP status, body)`, status 0 when the TLS handshake failed.
fn kubelet_get(nodes: &TwoNodes, user: &str, group: &str, path: &str) -> (u16, String) {
    let (cert, key) = user_certificate(&nodes.server, user, group);
    let ca = nodes.server.data_dir().join("pki").join("ca.crt");
    let url = format!("https://{AGENT_IP}:10250{path}");
    let out = nodes.server_ns.exec(
        "curl",
        &[
            "-s",
            "-w",
            "\n%{http_code}",
            "--cacert",
            ca.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            &url,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// `kubectl logs/exec/port-forward` of a pod on the agent reach it through the agent's kubelet
/// API (the API server proxies to the Node's kubelet endpoint); the pod resolves the API's and
/// a Service's names through the cluster DNS (served on the server, reached over the pod
/// network); the server's own pods are served as before. The kubelet's certificate is the
/// cluster CA's for its address, and it serves only callers authorized for `nodes/proxy`.
#[test]
fn kubectl_logs_exec_and_port_forward_reach_a_pod_on_the_agent_which_resolves_cluster_names() {
    let nodes = TwoNodes::start("host-gw");
    let kubelet_port = nodes.server.kubectl_ok(&[
        "get",
        "node",
        &nodes.agent_node,
        "-o",
        "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}",
    ]);
    assert_eq!(kubelet_port.trim(), "10250");
    nodes.create(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "talker", "labels": {"app": "talker"}},
        "spec": {"nodeName": nodes.agent_node, "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "busybox",
                "command": ["sh", "-c", "echo hello-from-the-agent; exec nc -ll -p 8080 -e echo pong"]}]}}));
    nodes.create(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "local"},
        "spec": {"nodeName": nodes.server_node, "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "busybox",
                "command": ["sh", "-c", "echo hello-from-the-server; exec sleep 3600"]}]}}));
    nodes.running_ip("talker");
    nodes.running_ip("local");
    let service_ip = nodes.service("talker-svc", "talker");

    let mut logs = String::new();
    let logged = wait_until(Duration::from_secs(20), || {
        logs = nodes.server.kubectl_ok(&["logs", "talker"]);
        logs.contains("hello-from-the-agent")
    });
    assert!(logged, "kubectl logs of the agent's pod: {logs:?}");
    assert_eq!(
        nodes.server.kubectl_ok(&["logs", "local"]).trim(),
        "hello-from-the-server"
    );

    // The kubelet serves with a certificate of the cluster CA for its address (curl checks
    // both), and serves only callers the API server authorizes for nodes/proxy.
    let logs_path = "/containerLogs/default/talker/main";
    let (code, body) = kubelet_get(&nodes, "alice", "dev", logs_path);
    assert_eq!(code, 403, "a user without nodes/proxy: {body}");
    assert!(body.contains("user=alice"), "{body}");
    nodes.server.kubectl_ok(&[
        "create",
        "clusterrole",
        "node-proxy",
        "--verb=get,create",
        "--resource=nodes/proxy",
    ]);
    nodes.server.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "ops-node-proxy",
        "--clusterrole=node-proxy",
        "--group=ops",
    ]);
    let mut answer = (0, String::new());
    let granted = wait_until(Duration::from_secs(60), || {
        answer = kubelet_get(&nodes, "bob", "ops", logs_path);
        answer.0 == 200
    });
    assert!(granted, "a user granted nodes/proxy: {answer:?}");
    assert!(answer.1.contains("hello-from-the-agent"), "{answer:?}");

    assert_eq!(
        nodes
            .server
            .kubectl_ok(&["exec", "talker", "--", "echo", "exec-on-the-agent"]),
        "exec-on-the-agent\n"
    );
    let failed = nodes
        .server
        .kubectl(&["exec", "talker", "--", "sh", "-c", "exit 3"]);
    assert_eq!(failed.status.code(), Some(3), "the exit code comes back");
    let stdin = nodes
        .server
        .kubectl_stdin(&["exec", "-i", "talker", "--", "cat"], "through-stdin\n");
    assert_eq!(String::from_utf8_lossy(&stdin.stdout), "through-stdin\n");

    assert_eq!(
        port_forward_answer(&nodes, "pod/talker", 8080, true),
        "pong\n"
    );
    assert_eq!(
        port_forward_answer(&nodes, "pod/talker", 8080, false),
        "pong\n"
    );

    assert_eq!(
        resolve_in(&nodes, "talker", "kubernetes.default.svc.cluster.local"),
        "10.43.0.1"
    );
    assert_eq!(
        resolve_in(&nodes, "talker", "talker-svc.default.svc.cluster.local"),
        service_ip
    );
    // Short names (`kubernetes.default`, `talker-svc`) are the resolver's search list, which
    // busybox's nslookup does not apply: the pod's resolv.conf carries it.
    let resolv = nodes
        .server
        .kubectl_ok(&["exec", "talker", "--", "cat", "/etc/resolv.conf"]);
    assert!(
        resolv.contains(&format!("nameserver {}", nodes.node_dns(&nodes.agent_node)))
            && resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    nodes.delete_pods();
}

/// `nslookup name` asked of `server` from inside `netns` (a pod's), its output.
fn nslookup_from(netns: &Path, server: &str, name: &str) -> String {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["busybox", "nslookup", name, server])
        .output()
        .expect("run nsenter");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pods_on_an_agent_resolve_cluster_names_from_their_own_node_even_while_the_server_is_down() {
    let mut nodes = TwoNodes::start("host-gw");
    let mark = marker(50);
    nodes.client_pod("dns-client", &nodes.agent_node.clone(), &mark);
    nodes.server_pod("dns-target", &nodes.server_node.clone(), "dns-target");
    nodes.running_ip("dns-client");
    let service_ip = nodes.service("dns-target", "dns-target");
    let dns = nodes.node_dns(&nodes.agent_node);
    let resolv = nodes
        .server
        .kubectl_ok(&["exec", "dns-client", "--", "cat", "/etc/resolv.conf"]);
    assert!(
        resolv.contains(&format!("nameserver {dns}\n")),
        "the agent's pods ask their node's DNS: {resolv}"
    );
    let netns = client_netns(&mark);
    let name = "dns-target.default.svc.cluster.local";
    let mut answer = String::new();
    let resolved = wait_until(Duration::from_secs(30), || {
        answer = nslookup_from(&netns, &dns, name);
        answer.contains(&service_ip)
    });
    assert!(
        resolved,
        "{name} resolves to {service_ip} on the agent: {answer}"
    );

    // The server goes away: the agent's DNS answers from what it last saw.
    nodes.server.kill9();
    for name in [name, "kubernetes.default.svc.cluster.local"] {
        let answer = nslookup_from(&netns, &dns, name);
        let want = if name.starts_with("kubernetes.") {
            "10.43.0.1"
        } else {
            service_ip.as_str()
        };
        assert!(
            answer.contains(want),
            "{name} still resolves with the server down: {answer}"
        );
    }
    nodes.server.restart();
    nodes.delete_pods();
}

/// `(serial, not after)` of the agent's node client certificate on disk.
fn node_cert(agent: &Agent) -> (String, i64) {
    let pem = std::fs::read(agent.data_dir().join("agent").join("client.crt")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    (
        cert.raw_serial_as_string(),
        cert.validity().not_after.timestamp(),
    )
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// With node certificates signed for a minute, the agent renews its own through the CSR API
/// (70-90 % into the lifetime) again and again; after the first one has expired and the server
/// restarted (so every connection is made anew), the agent still works as its node, and its
/// pod ran on undisturbed all along.
#[test]
fn an_agent_renews_its_short_lived_certificate_without_restarting_its_pods() {
    let mut nodes = TwoNodes::start_with("host-gw", "[pki]\nnode_cert_validity_seconds = 60\n");
    let (first_serial, first_expiry) = node_cert(&nodes.agent);
    assert!(
        first_expiry - now() <= 60,
        "the node certificate lives a minute: {}",
        first_expiry - now()
    );
    nodes.client_pod("steady", &nodes.agent_node.clone(), &marker(40));
    nodes.running_ip("steady");
    let container = |nodes: &TwoNodes| {
        nodes.server.kubectl_ok(&[
            "get",
            "pod",
            "steady",
            "-o",
            "jsonpath={.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount}",
        ])
    };
    let before = container(&nodes);
    let agent_pid = nodes.agent.pid();

    let renewed = wait_until(Duration::from_secs(90), || {
        node_cert(&nodes.agent).0 != first_serial
    });
    assert!(
        renewed,
        "the certificate was renewed:\n{}",
        nodes.agent.log()
    );
    let (_, renewed_expiry) = node_cert(&nodes.agent);
    assert!(renewed_expiry > first_expiry);
    let approved = nodes.server.kubectl_ok(&[
        "get",
        "csr",
        "-o",
        "jsonpath={range .items[*]}{.spec.username} {.status.conditions[0].type}{\"\\n\"}{end}",
    ]);
    assert!(
        approved.contains(&format!("system:node:{} Approved", nodes.agent_node)),
        "the node asked for its renewal itself: {approved}"
    );

    // Past the first certificate's end, every connection made anew.
    let wait = first_expiry + 2 - now();
    if wait > 0 {
        std::thread::sleep(Duration::from_secs(wait as u64));
    }
    nodes.server.kill9();
    nodes.server.restart();
    nodes.client_pod("after-expiry", &nodes.agent_node.clone(), &marker(41));
    nodes.running_ip("after-expiry");
    let heartbeat = |nodes: &TwoNodes| {
        nodes.server.kubectl_ok(&[
            "get",
            "lease",
            "-n",
            "kube-node-lease",
            &nodes.agent_node,
            "-o",
            "jsonpath={.spec.renewTime}",
        ])
    };
    let last_beat = heartbeat(&nodes);
    assert!(
        wait_until(Duration::from_secs(30), || heartbeat(&nodes) != last_beat),
        "the node's lease is renewed after the restart"
    );
    assert_eq!(nodes.agent.pid(), agent_pid, "the agent never restarted");
    assert!(nodes.agent.is_running());
    assert_eq!(
        container(&nodes),
        before,
        "the pod's container ran on untouched"
    );
    nodes.delete_pods();
}
