//! The multi-node acceptance of the worker-node issue: one server and two agents, each in its
//! own network namespace, joined by a bridge as three machines on one switch. All three Nodes
//! become Ready; a Deployment of six spreads over them with pod anti-affinity; pods on
//! different nodes reach each other and a Service by name; `kubectl logs` and `exec` reach pods
//! on agents. Then one agent stops: its Node goes NotReady within the grace period and its pods
//! come back on the other nodes once their tolerations run out.
//!
//! Needs root (network namespaces, cgroups, mounts), as in CI.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::agent::{join_token, Agent};
use common::cluster::test_image;
use common::netns::{Netns, Switch};
use common::registry::Registry;
use common::server::BerthServer;
use common::wait_until;
use serde_json::json;

const SUBNET: &str = "192.168.252";
/// Short enough to keep the test quick, long enough for heartbeats on a loaded machine.
const GRACE_SECONDS: u64 = 20;
/// How long the pods of a lost node stay bound to it.
const TOLERATION_SECONDS: u64 = 5;

struct ThreeNodes {
    // Dropped in this order: the agents (releasing their pods), the server, the registries,
    // then the namespaces, the switch last.
    agents: Vec<Agent>,
    server: BerthServer,
    _registries: Vec<Registry>,
    _work: tempfile::TempDir,
    agent_nodes: Vec<String>,
    server_node: String,
    _node_ns: Vec<Netns>,
    _switch: Switch,
}

impl ThreeNodes {
    fn start() -> ThreeNodes {
        let switch = Switch::new();
        let node_ns: Vec<Netns> = (0..3).map(|_| Netns::new()).collect();
        for (i, ns) in node_ns.iter().enumerate() {
            switch.plug(ns, &format!("{SUBNET}.{}/24", i + 1));
        }
        let work = tempfile::tempdir().expect("a work dir");
        let image = test_image(work.path());
        let registries: Vec<Registry> = node_ns.iter().map(Registry::start).collect();
        for registry in &registries {
            registry.push_oci_layout(&image, "latest", "library/busybox");
        }
        let network = "[network]\nbackend = \"host-gw\"\n";
        let server_config = format!(
            "{network}\n[controllers]\nnode_monitor_grace_period_seconds = {GRACE_SECONDS}\n\
             \n[registries.mirrors.\"docker.io\"]\nendpoints = [\"http://{}\"]\n",
            registries[0].addr()
        );
        let server = BerthServer::start_listening_with_config(
            &node_ns[0],
            &format!("{SUBNET}.1:6443"),
            &server_config,
        );
        let (token, hash) = join_token(&server);
        let url = format!("https://{SUBNET}.1:6443");
        let agent_nodes: Vec<String> = (1..3)
            .map(|i| format!("three-{i}-{}", std::process::id()))
            .collect();
        let agents = agent_nodes
            .iter()
            .zip(&node_ns[1..])
            .map(|(name, ns)| {
                Agent::start_with_config(
                    ns,
                    &[
                        "--server",
                        &url,
                        "--token",
                        &token,
                        "--ca-cert-hash",
                        &hash,
                        "--node-name",
                        name,
                    ],
                    network,
                )
            })
            .collect();
        let mut nodes = ThreeNodes {
            agents,
            server,
            _registries: registries,
            _work: work,
            agent_nodes,
            server_node: String::new(),
            _node_ns: node_ns,
            _switch: switch,
        };
        let ready = wait_until(Duration::from_secs(180), || {
            let ready = nodes.ready_nodes();
            ready.len() == 3 && nodes.agent_nodes.iter().all(|a| ready.contains(a))
        });
        assert!(
            ready,
            "all three nodes Ready: {}",
            nodes.server.kubectl_ok(&["get", "nodes", "-o", "wide"])
        );
        nodes.server_node = nodes
            .ready_nodes()
            .into_iter()
            .find(|name| !nodes.agent_nodes.contains(name))
            .expect("the server's node");
        nodes
    }

    /// The nodes whose Ready condition is True.
    fn ready_nodes(&self) -> Vec<String> {
        self.server
            .kubectl_ok(&[
                "get",
                "nodes",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
            ])
            .lines()
            .filter(|l| l.ends_with(" True"))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect()
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

    /// Running pods of the Deployment: name → (node, IP).
    fn web_pods(&self) -> BTreeMap<String, (String, String)> {
        self.server
            .kubectl_ok(&[
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.spec.nodeName} {.status.podIP} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
            ])
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                match fields[..] {
                    [name, "Running", node, ip] => {
                        Some((name.to_string(), (node.to_string(), ip.to_string())))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// How many of `pods` run on each node.
    fn spread(pods: &BTreeMap<String, (String, String)>) -> BTreeMap<String, usize> {
        let mut per_node = BTreeMap::new();
        for (node, _) in pods.values() {
            *per_node.entry(node.clone()).or_insert(0) += 1;
        }
        per_node
    }

    /// `nc` from pod `from` to `target` (host and port), its answer.
    fn ask(&self, from: &str, host: &str, port: u16) -> String {
        let out = self.server.kubectl(&[
            "exec",
            from,
            "--",
            "sh",
            "-c",
            &format!("nc -w 5 {host} {port} </dev/null"),
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn three_nodes_spread_a_deployment_reach_each_other_by_name_and_a_lost_agents_pods_move() {
    let mut nodes = ThreeNodes::start();
    let toleration = |key: &str| {
        json!({"key": key, "operator": "Exists", "effect": "NoExecute",
            "tolerationSeconds": TOLERATION_SECONDS})
    };
    nodes.create(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 6, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": 1,
                    "tolerations": [toleration("node.kubernetes.io/unreachable"),
                        toleration("node.kubernetes.io/not-ready")],
                    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 100, "podAffinityTerm": {
                            "labelSelector": {"matchLabels": {"app": "web"}},
                            "topologyKey": "kubernetes.io/hostname"}}]}},
                    "containers": [{"name": "srv", "image": "busybox",
                        "command": ["sh", "-c", "echo serving; exec nc -ll -p 8080 -e hostname"],
                        "ports": [{"containerPort": 8080}]}]}}}}));
    nodes.create(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}));

    let mut pods = BTreeMap::new();
    let all_running = wait_until(Duration::from_secs(240), || {
        pods = nodes.web_pods();
        pods.len() == 6
    });
    assert!(
        all_running,
        "six replicas run: {}",
        nodes.server.kubectl_ok(&["get", "pods", "-o", "wide"])
    );
    let per_node = ThreeNodes::spread(&pods);
    assert_eq!(
        per_node.len(),
        3,
        "anti-affinity spreads the replicas over all three nodes: {per_node:?}"
    );
    assert!(
        per_node.values().all(|&n| n == 2),
        "anti-affinity places two on each node: {per_node:?}"
    );

    // Logs and exec of pods on the agents, through the server.
    for agent in &nodes.agent_nodes {
        let (pod, _) = pods
            .iter()
            .find(|(_, (node, _))| node == agent)
            .expect("a replica on each agent");
        let mut logs = String::new();
        let logged = wait_until(Duration::from_secs(30), || {
            logs = nodes.server.kubectl_ok(&["logs", pod]);
            logs.contains("serving")
        });
        assert!(logged, "kubectl logs of {pod} on {agent}: {logs:?}");
        assert_eq!(
            nodes
                .server
                .kubectl_ok(&["exec", pod, "--", "hostname"])
                .trim(),
            pod.as_str(),
            "kubectl exec in {pod} on {agent}"
        );
    }

    // From a replica on the first agent: a replica on each other node by pod IP, and the
    // Service by its name, which the cluster DNS resolves.
    let (client, _) = pods
        .iter()
        .find(|(_, (node, _))| *node == nodes.agent_nodes[0])
        .expect("a replica on the first agent");
    for other in [&nodes.server_node, &nodes.agent_nodes[1]] {
        let (target, (_, ip)) = pods
            .iter()
            .find(|(_, (node, _))| node == other)
            .expect("a replica on the other node");
        let mut answer = String::new();
        let reached = wait_until(Duration::from_secs(60), || {
            answer = nodes.ask(client, ip, 8080);
            answer.trim() == target
        });
        assert!(
            reached,
            "{client} reaches {target} on {other} at {ip}: {answer:?}"
        );
    }
    let mut answers = std::collections::BTreeSet::new();
    let by_name = wait_until(Duration::from_secs(60), || {
        let answer = nodes.ask(client, "web.default.svc.cluster.local", 80);
        if pods.contains_key(answer.trim()) {
            answers.insert(answer.trim().to_string());
        }
        answers.len() >= 2
    });
    assert!(
        by_name,
        "the Service by name answers from several replicas: {answers:?}"
    );

    // The second agent stops: its Node goes NotReady within the grace period, and its pods
    // come back on the two remaining nodes.
    let lost = nodes.agent_nodes[1].clone();
    let stopped = Instant::now();
    nodes.agents[1].stop();
    let not_ready = wait_until(Duration::from_secs(GRACE_SECONDS * 3), || {
        !nodes.ready_nodes().contains(&lost)
    });
    assert!(
        not_ready,
        "{lost} goes NotReady: {}",
        nodes.server.kubectl_ok(&["get", "nodes"])
    );
    eprintln!(
        "{lost} NotReady {:.0} s after its agent stopped (grace {GRACE_SECONDS} s)",
        stopped.elapsed().as_secs_f64()
    );
    let moved = wait_until(Duration::from_secs(240), || {
        pods = nodes.web_pods();
        pods.len() == 6 && pods.values().all(|(node, _)| *node != lost)
    });
    assert!(
        moved,
        "the lost node's replicas run elsewhere: {}",
        nodes.server.kubectl_ok(&["get", "pods", "-o", "wide"])
    );
    eprintln!(
        "all six replicas ran off {lost} {:.0} s after its agent stopped",
        stopped.elapsed().as_secs_f64()
    );

    // Clean up: the Deployment's pods on the live nodes are released before the fixture goes.
    nodes
        .server
        .kubectl_ok(&["delete", "deployment", "web", "--wait=false"]);
    nodes.server.kubectl_ok(&[
        "delete",
        "pods",
        "--all",
        "--grace-period=1",
        "--wait=false",
    ]);
    let pods_dir = nodes.agents[0].data_dir().join("pods");
    let released = wait_until(Duration::from_secs(90), || {
        std::fs::read_dir(&pods_dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(true)
    });
    assert!(released, "the first agent released its pods");
}
