//! NetworkPolicy, hostPort and `berth reset` with real containers, in network namespaces the
//! tests make. Needs root (as CI is).
//!
//! Servers are busybox `nc -ll -p 8080 -e echo hi` pods (`-ll`: keep serving). Clients are busybox pods too; the
//! test connects from inside a client pod's network namespace (entered through its container
//! process), which is exactly where the pod's own `nc` would connect from, and answers in
//! milliseconds instead of one pod start per probe.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cluster::Cluster;
use common::netns::Netns;
use common::podnet::{client_netns, reaches};
use common::wait_until;
use nix::sched::{setns, CloneFlags};
use serde_json::json;

/// How long a policy change may take to be in force (watch, debounce, apply).
const CONVERGE: Duration = Duration::from_secs(20);

fn server_spec(host_port: Option<u16>) -> serde_json::Value {
    let mut port = json!({"name": "http", "containerPort": 8080});
    if let Some(host_port) = host_port {
        port["hostPort"] = json!(host_port);
    }
    json!({"containers": [{"name": "srv", "image": "busybox",
        "command": ["nc", "-ll", "-p", "8080", "-e", "echo", "hi"], "ports": [port]}],
        "terminationGracePeriodSeconds": 1})
}

/// A client pod that only sleeps; `marker` (its sleep length) makes its process findable.
fn client_spec(marker: &str) -> serde_json::Value {
    json!({"containers": [{"name": "cli", "image": "busybox", "command": ["sleep", marker]}],
           "terminationGracePeriodSeconds": 1})
}

fn create_pod(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    labels: serde_json::Value,
    spec: serde_json::Value,
) {
    let mut spec = spec;
    spec["nodeName"] = json!(cluster.node);
    cluster.create(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels}, "spec": spec}));
}

/// Waits until the pod runs and returns its IP.
fn running_pod_ip(cluster: &Cluster, namespace: &str, name: &str) -> String {
    let mut last = String::new();
    let running = wait_until(Duration::from_secs(120), || {
        let out = cluster.server.kubectl(&[
            "get",
            "pod",
            "-n",
            namespace,
            name,
            "-o",
            "jsonpath={.status.phase} {.status.podIP}",
        ]);
        last = String::from_utf8_lossy(&out.stdout).to_string();
        last.starts_with("Running ") && last.len() > "Running ".len()
    });
    assert!(running, "pod {namespace}/{name} never ran: {last:?}");
    last["Running ".len()..].trim().to_string()
}

/// A unique sleep length per client pod of this test process.
fn marker(n: u32) -> String {
    format!("{}{n:02}", 10_000_000 + std::process::id() % 1_000_000)
}

/// Asserts that `from` reaches `addr` (`want`) within [`CONVERGE`], and still does (or does
/// not) right after, so a rule that flaps fails the test.
fn expect(from: &Path, addr: &str, want: bool, what: &str) {
    let settled = wait_until(CONVERGE, || reaches(from, addr) == want);
    assert!(
        settled && reaches(from, addr) == want,
        "{what}: expected {} to be {}",
        addr,
        if want { "reachable" } else { "blocked" }
    );
}

fn apply(cluster: &Cluster, manifest: serde_json::Value) {
    cluster
        .server
        .kubectl_stdin(&["apply", "-f", "-"], &manifest.to_string());
}

fn policy(namespace: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": name, "namespace": namespace}, "spec": spec})
}

#[test]
fn policies_isolate_pods_allow_exactly_their_peers_and_let_go_when_removed() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let server = &cluster.server;
    server.kubectl_ok(&["create", "namespace", "other"]);
    server.kubectl_ok(&["label", "namespace", "other", "team=other"]);

    create_pod(
        &cluster,
        "default",
        "srv",
        json!({"app": "server"}),
        server_spec(None),
    );
    let (m_friend, m_stranger, m_other) = (marker(1), marker(2), marker(3));
    create_pod(
        &cluster,
        "default",
        "friend",
        json!({"role": "client"}),
        client_spec(&m_friend),
    );
    create_pod(
        &cluster,
        "default",
        "stranger",
        json!({"role": "stranger"}),
        client_spec(&m_stranger),
    );
    create_pod(
        &cluster,
        "other",
        "outsider",
        json!({"role": "client"}),
        client_spec(&m_other),
    );
    cluster.create(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "srv"},
        "spec": {"selector": {"app": "server"}, "ports": [{"port": 80, "targetPort": 8080}]}}));
    let server_ip = running_pod_ip(&cluster, "default", "srv");
    for (namespace, name) in [
        ("default", "friend"),
        ("default", "stranger"),
        ("other", "outsider"),
    ] {
        running_pod_ip(&cluster, namespace, name);
    }
    let cluster_ip = server
        .kubectl_ok(&["get", "service", "srv", "-o", "jsonpath={.spec.clusterIP}"])
        .trim()
        .to_string();
    let direct = format!("{server_ip}:8080");
    let via_service = format!("{cluster_ip}:80");
    let friend = client_netns(&m_friend);
    let stranger = client_netns(&m_stranger);
    let outsider = client_netns(&m_other);
    let node = PathBuf::from(format!("/run/netns/{}", ns.name));
    // The node as its pods see it: the bridge's address, the first of the node's pod range.
    let listener = NodeListener::start(&node);
    let gateway = {
        let octets: Vec<&str> = server_ip.split('.').collect();
        format!("{}.{}.{}.1", octets[0], octets[1], octets[2])
    };
    let to_node = format!("{gateway}:{}", listener.port);

    // No policy: everyone gets through.
    expect(&friend, &direct, true, "no policy, friend");
    expect(&stranger, &direct, true, "no policy, stranger");
    expect(&outsider, &direct, true, "no policy, other namespace");
    expect(
        &friend,
        &via_service,
        true,
        "no policy, friend via the Service",
    );
    expect(&friend, &to_node, true, "no policy, friend to the node");

    // Deny all ingress in `default`: nobody, by pod IP or through the Service.
    apply(
        &cluster,
        policy("default", "deny-all", json!({"podSelector": {}})),
    );
    expect(&friend, &direct, false, "deny-all, friend");
    expect(&outsider, &direct, false, "deny-all, other namespace");
    expect(
        &friend,
        &via_service,
        false,
        "deny-all, friend via the Service",
    );
    // The node itself (kubelet probes) is never cut off.
    expect(&node, &direct, true, "deny-all, from the node");

    // Allow role=client of the same namespace to the named port: exactly that path reopens.
    apply(
        &cluster,
        policy(
            "default",
            "allow-clients",
            json!({"podSelector": {"matchLabels": {"app": "server"}},
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                                "ports": [{"port": "http", "protocol": "TCP"}]}]}),
        ),
    );
    expect(&friend, &direct, true, "allow by label, friend");
    expect(
        &friend,
        &via_service,
        true,
        "allow by label, friend via the Service",
    );
    expect(&stranger, &direct, false, "allow by label, stranger");
    expect(
        &outsider,
        &direct,
        false,
        "allow by label, same label in another namespace",
    );

    // Allow the namespace labelled team=other.
    apply(
        &cluster,
        policy(
            "default",
            "allow-other-team",
            json!({"podSelector": {"matchLabels": {"app": "server"}},
                   "ingress": [{"from": [{"namespaceSelector":
                                          {"matchLabels": {"team": "other"}}}]}]}),
        ),
    );
    expect(
        &outsider,
        &direct,
        true,
        "namespace selector, other namespace",
    );
    expect(&stranger, &direct, false, "namespace selector, stranger");

    // Removing the policies restores access.
    server.kubectl_ok(&["delete", "networkpolicy", "--all"]);
    expect(&stranger, &direct, true, "policies removed, stranger");
    expect(
        &stranger,
        &via_service,
        true,
        "policies removed, stranger via the Service",
    );

    // Egress deny-all for role=client: friend cannot get out, stranger is not selected.
    apply(
        &cluster,
        policy(
            "default",
            "clients-no-egress",
            json!({"podSelector": {"matchLabels": {"role": "client"}},
                   "policyTypes": ["Egress"]}),
        ),
    );
    expect(&friend, &direct, false, "egress deny, friend");
    expect(
        &friend,
        &via_service,
        false,
        "egress deny, friend via the Service",
    );
    expect(&stranger, &direct, true, "egress deny, stranger");
    // What pods send to the node's own addresses is egress too (as with Calico).
    expect(&friend, &to_node, false, "egress deny, friend to the node");
    expect(
        &stranger,
        &to_node,
        true,
        "egress deny, stranger to the node",
    );
    // An ipBlock naming the node's address reopens exactly that.
    apply(
        &cluster,
        policy(
            "default",
            "clients-to-node",
            json!({"podSelector": {"matchLabels": {"role": "client"}},
                   "policyTypes": ["Egress"],
                   "egress": [{"to": [{"ipBlock": {"cidr": format!("{gateway}/32")}}]}]}),
        ),
    );
    expect(
        &friend,
        &to_node,
        true,
        "ipBlock of the node, friend to the node",
    );
    expect(
        &friend,
        &direct,
        false,
        "ipBlock of the node, friend to a pod",
    );
    server.kubectl_ok(&[
        "delete",
        "networkpolicy",
        "clients-no-egress",
        "clients-to-node",
    ]);
    expect(&friend, &direct, true, "egress policy removed, friend");
}

/// A TCP listener answering "hi" on every address of a network namespace (the node's), until
/// dropped.
struct NodeListener {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NodeListener {
    fn start(netns: &Path) -> NodeListener {
        use std::io::Write;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let netns = netns.to_path_buf();
        let (send, receive) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let ns = File::open(&netns).expect("node netns");
            setns(&ns, CloneFlags::CLONE_NEWNET).expect("join the node netns");
            let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("listen");
            listener.set_nonblocking(true).expect("nonblocking");
            send.send(listener.local_addr().expect("address").port())
                .expect("report the port");
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.write_all(b"hi\n");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        let port = receive.recv().expect("listener port");
        NodeListener {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for NodeListener {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A client namespace on the node's "LAN": a veth whose node end is 192.0.2.1, made before the
/// server starts so the node counts that address as its own.
fn lan(node: &Netns) -> Netns {
    let client = Netns::new();
    let tag = std::process::id() % 100_000;
    let (near, far) = (format!("hl{tag}"), format!("hc{tag}"));
    node.exec_ok(
        "ip",
        &[
            "link",
            "add",
            &near,
            "type",
            "veth",
            "peer",
            "name",
            &far,
            "netns",
            &client.name,
        ],
    );
    node.exec_ok("ip", &["addr", "add", "192.0.2.1/24", "dev", &near]);
    node.exec_ok("ip", &["link", "set", &near, "up"]);
    client.exec_ok("ip", &["addr", "add", "192.0.2.2/24", "dev", &far]);
    client.exec_ok("ip", &["link", "set", &far, "up"]);
    client.exec_ok("ip", &["route", "add", "default", "via", "192.0.2.1"]);
    client
}

fn alive(pid: i32) -> bool {
    // A zombie has exited; it only waits for its parent to reap it.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

fn pod_cgroups(uid: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .chain(std::iter::once(PathBuf::from("/sys/fs/cgroup")))
                .map(|h| h.join("berth").join(format!("pod{uid}")))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn host_ports_answer_on_the_node_address_and_loopback_and_reset_removes_everything_after_kill_9() {
    let ns = Netns::new();
    let client = lan(&ns);
    let mut cluster = Cluster::start(&ns);
    // hostPort is beyond the baseline Pod Security level the cluster enforces by default.
    cluster.server.kubectl_ok(&[
        "label",
        "namespace",
        "default",
        "pod-security.kubernetes.io/enforce=privileged",
    ]);
    create_pod(
        &cluster,
        "default",
        "web",
        json!({"app": "web"}),
        server_spec(Some(18080)),
    );
    create_pod(
        &cluster,
        "default",
        "idle",
        json!({}),
        client_spec(&marker(9)),
    );
    running_pod_ip(&cluster, "default", "web");
    running_pod_ip(&cluster, "default", "idle");

    // From the LAN (prerouting) and from the node itself (output).
    let from_lan = PathBuf::from(format!("/run/netns/{}", client.name));
    let from_node = PathBuf::from(format!("/run/netns/{}", ns.name));
    expect(&from_lan, "192.0.2.1:18080", true, "hostPort from the LAN");
    expect(
        &from_node,
        "192.0.2.1:18080",
        true,
        "hostPort from the node",
    );
    expect(
        &from_node,
        "127.0.0.1:18080",
        true,
        "hostPort from 127.0.0.1 on the node",
    );

    // Refused while the server runs.
    let data_dir = cluster.server.data_dir().to_path_buf();
    let data_arg = data_dir.to_str().expect("utf-8 data dir").to_string();
    let refused = cluster.server.berth(&["reset", "--data-dir", &data_arg]);
    assert!(!refused.status.success(), "reset ran next to a live server");
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("is running"), "{message}");

    // What the pods hold, before the crash.
    let uids: Vec<String> = std::fs::read_dir(cluster.pods_dir())
        .expect("pods dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(uids.len(), 2, "two pods have state: {uids:?}");
    let shims: Vec<i32> = uids
        .iter()
        .filter_map(|uid| common::server::shim_pid(&cluster.pods_dir(), uid))
        .collect();
    assert_eq!(shims.len(), 2);
    assert!(uids.iter().all(|uid| !pod_cgroups(uid).is_empty()));
    let links = ns.exec_ok("ip", &["-o", "link"]);
    assert!(
        links.contains("berth0") && links.contains("veth"),
        "{links}"
    );
    let tables = ns.exec_ok("nft", &["list", "tables"]);
    for table in ["berth", "berth-policy", "berth-hostports"] {
        assert!(tables.contains(&format!("table ip {table}\n")), "{tables}");
    }

    cluster.server.kill9();
    let out = cluster.server.berth(&["reset", "--data-dir", &data_arg]);
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "reset failed: {printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for shim in &shims {
        assert!(printed.contains(&format!("(pid {shim})")), "{printed}");
        assert!(
            wait_until(Duration::from_secs(5), || !alive(*shim)),
            "shim {shim} survived"
        );
    }
    for uid in &uids {
        assert!(pod_cgroups(uid).is_empty(), "cgroup of pod {uid} left");
    }
    let links = ns.exec_ok("ip", &["-o", "link"]);
    assert!(
        !links.contains("berth0") && !links.contains("veth"),
        "links left: {links}"
    );
    let tables = ns.exec_ok("nft", &["list", "tables"]);
    assert!(!tables.contains("berth"), "tables left: {tables}");
    let pins = std::fs::read_dir(data_dir.join("netns"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(pins, 0, "network namespace pins left");
    // No process of the server's is left in the node's namespace, so no mount namespace holds
    // pod mounts any more; and none is visible here either.
    for pid in ns.pids() {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            !cmdline.contains("shim") && !cmdline.contains("sleep") && !cmdline.contains("nc "),
            "process {pid} ({cmdline}) survived the reset"
        );
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(
        !mountinfo.contains(&data_arg),
        "mounts left under the data dir"
    );
    assert!(!Path::new(&data_dir).join("pods").join(&uids[0]).exists());

    // Idempotent, and the store survives without --data.
    let again = cluster.server.berth(&["reset", "--data-dir", &data_arg]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to remove"));
    assert!(data_dir.join("berth.redb").exists());
}

/// Pods have IPv4 addresses only: a policy written for a dual-stack cluster is accepted as it
/// is, its IPv4 part enforced, and its author told by a Warning Event which IPv6 blocks match
/// nothing here.
#[test]
fn a_policy_with_ipv6_ip_blocks_is_accepted_and_its_ipv6_blocks_are_reported() {
    let ns = Netns::new();
    let server = common::server::BerthServer::start(&ns);
    let manifest = policy(
        "default",
        "dual-stack",
        json!({"podSelector": {},
               "ingress": [{"from": [{"ipBlock": {"cidr": "192.168.0.0/16"}},
                                     {"ipBlock": {"cidr": "2001:db8::/32",
                                                  "except": ["2001:db8:1::/48"]}}]}]}),
    );
    let out = server.kubectl_stdin(&["apply", "-f", "-"], &manifest.to_string());
    assert!(out.status.success(), "{out:?}");
    let mut note = String::new();
    let reported = wait_until(CONVERGE, || {
        note = server.kubectl_ok(&[
            "get",
            "events.v1.events.k8s.io",
            "--field-selector",
            "reason=IPv6IPBlockIgnored,regarding.name=dual-stack",
            "-o",
            "jsonpath={.items[*].note}",
        ]);
        !note.is_empty()
    });
    assert!(reported, "no event about the IPv6 blocks");
    assert!(
        note.contains("2001:db8::/32, 2001:db8:1::/48") && !note.contains("192.168"),
        "{note}"
    );
}

/// A server pod listening on each of `ports` (busybox `nc`, answering "hi"); the first port is
/// its container port named `http`.
fn multi_port_server_spec(ports: &[u16]) -> serde_json::Value {
    let script: Vec<String> = ports
        .iter()
        .map(|p| format!("nc -ll -p {p} -e echo hi &"))
        .collect();
    json!({"containers": [{"name": "srv", "image": "busybox",
        "command": ["sh", "-c", format!("{} wait", script.join(" "))],
        "ports": [{"name": "http", "containerPort": ports[0]}]}],
        "terminationGracePeriodSeconds": 1})
}

#[test]
fn a_port_range_admits_exactly_its_ports_in_both_directions_and_a_named_port_only_its_own() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    // The named port `http` is 8005, inside the range; the others probe the range's edges.
    create_pod(
        &cluster,
        "default",
        "ranged",
        json!({"app": "ranged"}),
        multi_port_server_spec(&[8005, 7999, 8000, 8010, 8011]),
    );
    let m_client = marker(20);
    create_pod(
        &cluster,
        "default",
        "client",
        json!({"role": "client"}),
        client_spec(&m_client),
    );
    let server_ip = running_pod_ip(&cluster, "default", "ranged");
    running_pod_ip(&cluster, "default", "client");
    let client = client_netns(&m_client);
    let at = |port: u16| format!("{server_ip}:{port}");

    // Without a policy every listener answers, so "blocked" below is the policy's doing.
    for port in [7999, 8000, 8005, 8010, 8011] {
        expect(&client, &at(port), true, &format!("no policy, port {port}"));
    }

    // Ingress 8000-8010: both ends are inside, the ports next to them are not.
    apply(
        &cluster,
        policy(
            "default",
            "range-in",
            json!({"podSelector": {"matchLabels": {"app": "ranged"}},
                   "ingress": [{"ports": [{"protocol": "TCP", "port": 8000, "endPort": 8010}]}]}),
        ),
    );
    for (port, open) in [
        (8005, true),
        (8000, true),
        (8010, true),
        (8011, false),
        (7999, false),
    ] {
        expect(
            &client,
            &at(port),
            open,
            &format!("ingress range, port {port}"),
        );
    }
    cluster
        .server
        .kubectl_ok(&["delete", "networkpolicy", "range-in"]);
    expect(&client, &at(8011), true, "ingress range removed, port 8011");

    // Egress 8000-8010 from the client: the same edges, seen from the sender.
    apply(
        &cluster,
        policy(
            "default",
            "range-out",
            json!({"podSelector": {"matchLabels": {"role": "client"}},
                   "policyTypes": ["Egress"],
                   "egress": [{"ports": [{"protocol": "TCP", "port": 8000, "endPort": 8010}]}]}),
        ),
    );
    for (port, open) in [(8005, true), (8010, true), (8011, false), (7999, false)] {
        expect(
            &client,
            &at(port),
            open,
            &format!("egress range, port {port}"),
        );
    }
    cluster
        .server
        .kubectl_ok(&["delete", "networkpolicy", "range-out"]);

    // Egress to the named port `http`: the server's 8005 and nothing else of it.
    apply(
        &cluster,
        policy(
            "default",
            "named-out",
            json!({"podSelector": {"matchLabels": {"role": "client"}},
                   "policyTypes": ["Egress"],
                   "egress": [{"ports": [{"protocol": "TCP", "port": "http"}]}]}),
        ),
    );
    expect(&client, &at(8005), true, "egress named port, its port");
    expect(&client, &at(8000), false, "egress named port, another port");
    cluster
        .server
        .kubectl_ok(&["delete", "networkpolicy", "named-out"]);
    expect(&client, &at(8000), true, "named port policy removed");
}

/// A policy the kernel rules could only narrow silently (a port range that ends before it
/// starts, a range on a named port) is refused as upstream refuses it.
#[test]
fn kubectl_is_told_why_a_policy_with_a_backwards_or_named_port_range_is_invalid() {
    let ns = Netns::new();
    let server = common::server::BerthServer::start(&ns);
    let manifest = policy(
        "default",
        "backwards",
        json!({"podSelector": {},
               "ingress": [{"ports": [{"port": 8010, "endPort": 8000},
                                      {"port": "http", "endPort": 9000}]}]}),
    );
    let out = server.kubectl_stdin(&["apply", "-f", "-"], &manifest.to_string());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {stderr}");
    assert!(
        stderr.contains("is invalid")
            && stderr.contains(
                "spec.ingress[0].ports[0].endPort: Invalid value: 8000: must be greater than or equal to `port`"
            )
            && stderr.contains(
                "spec.ingress[0].ports[1].endPort: Invalid value: 9000: may not be specified when `port` is non-numeric"
            ),
        "{stderr}"
    );
    let listed = server.kubectl_ok(&["get", "networkpolicies", "-o", "name"]);
    assert_eq!(listed.trim(), "", "nothing was stored");
}
