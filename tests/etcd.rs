//! berth on etcd (the HA store): a real etcd (Debian's etcd-server, one member, plain HTTP on
//! addresses inside the test's network namespaces) and real `berth server`s on it, driven with
//! the real kubectl.
//!
//! Needs root (network namespaces) and /usr/bin/etcd; CI runs as root.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::netns::Netns;
use common::server::{temp_data_dir, BerthServer};
use common::{tools, wait_until};

const ETCD_PORT: u16 = 2379;

/// One etcd member inside a netns, killed and its data removed on drop.
struct Etcd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd serving clients on 127.0.0.1 and on `extra_ip` (reachable from other
    /// namespaces), and waits until it is healthy.
    fn start(ns: &Netns, extra_ip: Option<&str>) -> Etcd {
        Etcd::start_with(ns, extra_ip, None)
    }

    /// Starts etcd serving clients over TLS on 127.0.0.1, requiring client certificates signed
    /// by the CA in `tls`.
    fn start_with(ns: &Netns, extra_ip: Option<&str>, tls: Option<&EtcdTls>) -> Etcd {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let dir = tempfile::Builder::new()
            .prefix(&format!("berth-etcd-{}-", std::process::id()))
            .tempdir()
            .expect("make etcd's data dir");
        let mut client_urls = format!("{scheme}://127.0.0.1:{ETCD_PORT}");
        if let Some(ip) = extra_ip {
            client_urls.push_str(&format!(",{scheme}://{ip}:{ETCD_PORT}"));
        }
        let mut tls_args = Vec::new();
        let mut curl_tls = Vec::new();
        if let Some(tls) = tls {
            let path = |name: &str| tls.dir.path().join(name).display().to_string();
            tls_args = vec![
                "--client-cert-auth".to_owned(),
                "--trusted-ca-file".to_owned(),
                path("ca.crt"),
                "--cert-file".to_owned(),
                path("server.crt"),
                "--key-file".to_owned(),
                path("server.key"),
            ];
            curl_tls = vec![
                "--cacert".to_owned(),
                path("ca.crt"),
                "--cert".to_owned(),
                path("client.crt"),
                "--key".to_owned(),
                path("client.key"),
            ];
        }
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd log");
        let child = ns
            .command("/usr/bin/etcd")
            .args(["--name", "m1"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_urls])
            .args(["--advertise-client-urls", &client_urls])
            .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-cluster", "m1=http://127.0.0.1:2380"])
            .args(&tls_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        let etcd = Etcd { child, dir };
        let healthy = wait_until(Duration::from_secs(30), || {
            let health = format!("{scheme}://127.0.0.1:{ETCD_PORT}/health");
            let mut args: Vec<&str> = vec!["-sf", &health];
            args.extend(curl_tls.iter().map(String::as_str));
            ns.exec("curl", &args).status.success()
        });
        assert!(healthy, "etcd did not become healthy:\n{}", etcd.log());
        etcd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- etcd log ----\n{}", self.log());
        }
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with berth's own
/// PKI code (its serving and admin certificates have the usages etcd checks).
struct EtcdTls {
    dir: tempfile::TempDir,
}

impl EtcdTls {
    fn new() -> EtcdTls {
        let dir = tempfile::Builder::new()
            .prefix(&format!("berth-etcd-tls-{}-", std::process::id()))
            .tempdir()
            .expect("make the TLS dir");
        let names = berth::pki::ServingNames {
            hostname: "localhost".to_owned(),
            ips: vec!["127.0.0.1".parse().expect("an IP")],
            cluster_domain: "cluster.local".to_owned(),
            service_cidr: "10.43.0.0/16".to_owned(),
        };
        let pki = berth::pki::Pki::ensure(&dir.path().join("pki"), &names).expect("make a PKI");
        for (name, pem) in [
            ("ca.crt", &pki.ca_cert_pem),
            ("server.crt", &pki.serving_cert_pem),
            ("server.key", &pki.serving_key_pem),
            ("client.crt", &pki.admin_cert_pem),
            ("client.key", &pki.admin_key_pem),
        ] {
            std::fs::write(dir.path().join(name), pem).expect("write a TLS file");
        }
        EtcdTls { dir }
    }

    fn config(&self, node: &str) -> String {
        let path = |name: &str| self.dir.path().join(name).display().to_string();
        format!(
            "[store]\ndatastore_endpoint = [\"https://127.0.0.1:{ETCD_PORT}\"]\n\
             datastore_cafile = \"{}\"\ndatastore_certfile = \"{}\"\n\
             datastore_keyfile = \"{}\"\n\n[node]\nname = \"{node}\"\n\n\
             [ingress]\nenabled = false\n",
            path("ca.crt"),
            path("client.crt"),
            path("client.key"),
        )
    }
}

#[test]
fn berth_reaches_etcd_over_tls_with_a_client_certificate() {
    let ns = Netns::new();
    let tls = EtcdTls::new();
    let etcd = Etcd::start_with(&ns, None, Some(&tls));
    let node = format!("etcd-tls-{}", std::process::id());
    let server = BerthServer::start_with_config(&ns, &tls.config(&node));
    server.kubectl_ok(&["create", "configmap", "over-tls", "--from-literal=k=v"]);
    assert_eq!(
        json(&server, &["get", "configmap", "over-tls"])["data"]["k"],
        "v"
    );
    drop(server);
    drop(etcd);
}

fn config_for(endpoint: &str, node: &str) -> String {
    format!(
        "[store]\ndatastore_endpoint = [\"{endpoint}\"]\n\n[node]\nname = \"{node}\"\n\n\
         [ingress]\nenabled = false\n"
    )
}

fn json(server: &BerthServer, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&server.kubectl_ok(&all)).expect("kubectl printed JSON")
}

fn resource_version(object: &serde_json::Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse().ok())
        .expect("a numeric resourceVersion")
}

/// `kubectl get <what> --watch` running in the background, its lines collected.
struct Watcher {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watcher {
    fn start(server: &BerthServer, args: &[&str]) -> Watcher {
        let mut child = server
            .command(&tools::kubectl())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kubectl --watch");
        let stdout = child.stdout.take().expect("kubectl's stdout");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Watcher { child, lines }
    }

    /// Waits for a line containing `event` and `name`.
    fn expect(&self, event: &str, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line)
                    if line.contains(&format!("\"type\":\"{event}\""))
                        && line.contains(&format!("\"name\":\"{name}\"")) =>
                {
                    return
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("the watch never printed {event} {name}");
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn kubectl_works_on_etcd_and_nothing_is_lost_when_berth_is_killed() {
    let ns = Netns::new();
    let etcd = Etcd::start(&ns, None);
    let endpoint = format!("http://127.0.0.1:{ETCD_PORT}");
    let node = format!("etcd-one-{}", std::process::id());
    let mut server = BerthServer::start_with_config(&ns, &config_for(&endpoint, &node));

    // A watch from the list's revision, as clients start one; its events are JSON lines.
    let listed = json(&server, &["get", "configmaps"]);
    let from = listed["metadata"]["resourceVersion"]
        .as_str()
        .expect("the list's resourceVersion")
        .to_owned();
    let watch = Watcher::start(
        &server,
        &[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={from}"),
        ],
    );
    server.kubectl_ok(&["create", "configmap", "first", "--from-literal=k=v1"]);
    watch.expect("ADDED", "first");
    let first = json(&server, &["get", "configmap", "first"]);
    assert_eq!(first["data"]["k"], "v1");

    // An update naming the current resourceVersion succeeds; the stale one then conflicts.
    let mut edited = first.clone();
    edited["data"]["k"] = "v2".into();
    server.kubectl_stdin(&["replace", "-f", "-"], &edited.to_string());
    let second = json(&server, &["get", "configmap", "first"]);
    assert_eq!(second["data"]["k"], "v2");
    assert!(resource_version(&second) > resource_version(&first));
    watch.expect("MODIFIED", "first");
    let stale = server.kubectl_stdin(&["replace", "-f", "-"], &edited.to_string());
    assert!(!stale.status.success(), "a stale replace must fail");
    let said = String::from_utf8_lossy(&stale.stderr);
    assert!(
        said.contains("Conflict") || said.contains("has been modified"),
        "a stale replace is a conflict: {said}"
    );

    for name in ["a", "b", "c"] {
        server.kubectl_ok(&["create", "configmap", name, "--from-literal=x=y"]);
    }
    let listed = json(&server, &["get", "configmaps"]);
    let names: Vec<&str> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|item| item["metadata"]["name"].as_str())
        .collect();
    for name in ["a", "b", "c", "first"] {
        assert!(names.contains(&name), "{name} listed in {names:?}");
    }
    // Paging through etcd: two at a time still yields every object once.
    let paged = server.kubectl_ok(&["get", "configmaps", "--chunk-size=2", "-o", "name"]);
    for name in ["a", "b", "c", "first"] {
        assert_eq!(
            paged.matches(&format!("configmap/{name}\n")).count(),
            1,
            "{name} once in {paged}"
        );
    }
    server.kubectl_ok(&["delete", "configmap", "c"]);
    watch.expect("DELETED", "c");
    drop(watch);

    let before_kill = json(&server, &["get", "configmap", "first"]);
    server.kill9();
    server.restart();
    let after = json(&server, &["get", "configmap", "first"]);
    assert_eq!(after["data"]["k"], "v2");
    assert_eq!(
        resource_version(&after),
        resource_version(&before_kill),
        "the object is unchanged across the restart"
    );
    let gone = server.kubectl(&["get", "configmap", "c"]);
    assert!(!gone.status.success(), "the deleted object stays deleted");
    server.kubectl_ok(&["create", "configmap", "after-restart", "--from-literal=k=v"]);
    let newer = json(&server, &["get", "configmap", "after-restart"]);
    assert!(resource_version(&newer) > resource_version(&after));
    drop(server);
    drop(etcd);
}

/// The holder of the controllers' Lease, as `<node>_<uuid>`.
fn lease_holder(server: &BerthServer) -> Option<String> {
    let out = server.kubectl(&[
        "-n",
        "kube-system",
        "get",
        "lease",
        "berth-controllers",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    let holder = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !holder.is_empty()).then_some(holder)
}

/// Connects two namespaces with a veth pair: `10.250.0.1` in `a`, `10.250.0.2` in `b`.
fn link(a: &Netns, b: &Netns) {
    a.exec_ok(
        "ip",
        &[
            "link", "add", "ha0", "type", "veth", "peer", "name", "ha1", "netns", &b.name,
        ],
    );
    a.exec_ok("ip", &["addr", "add", "10.250.0.1/24", "dev", "ha0"]);
    a.exec_ok("ip", &["link", "set", "ha0", "up"]);
    b.exec_ok("ip", &["addr", "add", "10.250.0.2/24", "dev", "ha1"]);
    b.exec_ok("ip", &["link", "set", "ha1", "up"]);
}

/// A data dir holding `from`'s secrets encryption key, as every server of one cluster must.
fn data_dir_sharing_keys(from: &Path) -> tempfile::TempDir {
    let dir = temp_data_dir();
    let keys = from.join("encryption");
    std::fs::create_dir_all(dir.path().join("encryption")).expect("make the key dir");
    for entry in std::fs::read_dir(&keys).expect("read the key dir") {
        let entry = entry.expect("key dir entry");
        std::fs::copy(
            entry.path(),
            dir.path().join("encryption").join(entry.file_name()),
        )
        .expect("copy a key file");
    }
    dir
}

#[test]
fn two_servers_share_etcd_and_the_controllers_fail_over_within_the_lease() {
    let ns_a = Netns::new();
    let ns_b = Netns::new();
    link(&ns_a, &ns_b);
    let etcd = Etcd::start(&ns_a, Some("10.250.0.1"));
    let pid = std::process::id();
    let (node_a, node_b) = (format!("ha-a-{pid}"), format!("ha-b-{pid}"));
    let a = BerthServer::start_with_config(
        &ns_a,
        &config_for(&format!("http://127.0.0.1:{ETCD_PORT}"), &node_a),
    );
    let b = BerthServer::start_in_with_config(
        &ns_b,
        data_dir_sharing_keys(a.data_dir()),
        &config_for(&format!("http://10.250.0.1:{ETCD_PORT}"), &node_b),
    );

    // One store: what is written through one server is read through the other.
    a.kubectl_ok(&["create", "configmap", "shared", "--from-literal=from=a"]);
    a.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "sealed",
        "--from-literal=k=v",
    ]);
    assert_eq!(
        json(&b, &["get", "configmap", "shared"])["data"]["from"],
        "a"
    );
    assert_eq!(json(&b, &["get", "secret", "sealed"])["data"]["k"], "dg==");
    let nodes = b.kubectl_ok(&["get", "nodes", "-o", "name"]);
    assert!(
        wait_until(Duration::from_secs(60), || {
            let nodes = b.kubectl_ok(&["get", "nodes", "-o", "name"]);
            nodes.contains(&node_a) && nodes.contains(&node_b)
        }),
        "both servers registered their nodes: {nodes}"
    );
    // Node IPAM runs on the leader alone, so the two Nodes get different pod CIDRs, one of them
    // the first slice.
    let mut cidrs = String::new();
    let both = wait_until(Duration::from_secs(30), || {
        cidrs = b.kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[*].spec.podCIDR}"]);
        cidrs.split_whitespace().count() == 2
    });
    assert!(both, "both nodes got a pod CIDR: {cidrs}");
    let slices: Vec<&str> = cidrs.split_whitespace().collect();
    assert_ne!(slices[0], slices[1], "no pod CIDR is given out twice");
    assert!(slices.contains(&"10.42.0.0/24"), "{cidrs}");

    // Exactly one holds the lease, and it stays with it.
    let mut holder = None;
    assert!(wait_until(Duration::from_secs(30), || {
        holder = lease_holder(&a);
        holder.is_some()
    }));
    let holder = holder.unwrap_or_default();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(lease_holder(&b).as_deref(), Some(holder.as_str()));
    let (mut leader, survivor, survivor_node) = if holder.starts_with(&format!("{node_a}_")) {
        (a, b, node_b)
    } else {
        assert!(holder.starts_with(&format!("{node_b}_")), "holder {holder}");
        (b, a, node_a)
    };

    // The leader dies; the survivor takes the lease over within its duration (15 s), give or
    // take a retry period and the time kubectl takes.
    leader.kill9();
    let killed = Instant::now();
    let took_over = wait_until(Duration::from_secs(25), || {
        lease_holder(&survivor).is_some_and(|h| h.starts_with(&format!("{survivor_node}_")))
    });
    assert!(took_over, "the survivor took the controllers' lease over");
    eprintln!("controllers failed over in {:?}", killed.elapsed());

    // And runs the controllers: a Deployment created now gets its ReplicaSet.
    survivor.kubectl_ok(&[
        "create",
        "deployment",
        "after-failover",
        "--image=busybox",
        "--replicas=1",
    ]);
    let got_replica_set = wait_until(Duration::from_secs(30), || {
        survivor
            .kubectl_ok(&[
                "get",
                "replicasets",
                "-l",
                "app=after-failover",
                "-o",
                "name",
            ])
            .contains("replicaset.apps/after-failover-")
    });
    assert!(
        got_replica_set,
        "the new leader's deployment controller made the ReplicaSet"
    );
    drop(leader);
    drop(survivor);
    drop(etcd);
}

/// Latencies in milliseconds of `samples` sequential ConfigMap creates and GETs through a kube
/// client, as (create p50, create p99, get p50, get p99).
fn api_latency(ns: &Netns, kubeconfig: std::path::PathBuf, samples: usize) -> [f64; 4] {
    common::inside::block_on_in_netns(&ns.name, move || async move {
        use k8s_openapi::api::core::v1::ConfigMap;
        use kube::api::{Api, PostParams};
        let client = common::inside::kube_client(&kubeconfig).await;
        let maps: Api<ConfigMap> = Api::namespaced(client, "default");
        let (mut creates, mut gets) = (Vec::new(), Vec::new());
        for i in 0..samples {
            let name = format!("latency-{i}");
            let map = ConfigMap {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.clone()),
                    ..Default::default()
                },
                data: Some([("k".to_owned(), "v".repeat(256))].into()),
                ..Default::default()
            };
            let started = Instant::now();
            maps.create(&PostParams::default(), &map)
                .await
                .expect("create");
            creates.push(started.elapsed().as_secs_f64() * 1000.0);
            let started = Instant::now();
            maps.get(&name).await.expect("get");
            gets.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        let quantile = |samples: &mut Vec<f64>, q: f64| {
            samples.sort_by(f64::total_cmp);
            samples[((samples.len() - 1) as f64 * q).round() as usize]
        };
        [
            quantile(&mut creates, 0.5),
            quantile(&mut creates, 0.99),
            quantile(&mut gets, 0.5),
            quantile(&mut gets, 0.99),
        ]
    })
}

/// The figure: API p99 with the etcd backend against redb, in one run. Ignored by
/// default: it measures a debug build unless run with `--release`, and takes a while.
#[test]
#[ignore]
fn api_latency_on_etcd_against_redb() {
    const SAMPLES: usize = 300;
    let ns_redb = Netns::new();
    let ns_etcd = Netns::new();
    let pid = std::process::id();
    let redb = BerthServer::start_with_config(
        &ns_redb,
        &format!("[node]\nname = \"lat-redb-{pid}\"\n\n[ingress]\nenabled = false\n"),
    );
    let etcd = Etcd::start(&ns_etcd, None);
    let on_etcd = BerthServer::start_with_config(
        &ns_etcd,
        &config_for(
            &format!("http://127.0.0.1:{ETCD_PORT}"),
            &format!("lat-etcd-{pid}"),
        ),
    );
    let r = api_latency(&ns_redb, redb.kubeconfig_path(), SAMPLES);
    let e = api_latency(&ns_etcd, on_etcd.kubeconfig_path(), SAMPLES);
    eprintln!(
        "API latency over {SAMPLES} sequential requests (ms)\n\
         backend  create p50  create p99  get p50  get p99\n\
         redb     {:10.2}  {:10.2}  {:7.2}  {:7.2}\n\
         etcd     {:10.2}  {:10.2}  {:7.2}  {:7.2}",
        r[0], r[1], r[2], r[3], e[0], e[1], e[2], e[3]
    );
    assert!(r.iter().chain(&e).all(|ms| ms.is_finite() && *ms > 0.0));
    drop(on_etcd);
    drop(etcd);
    drop(redb);
}

/// Config of a server on a shared etcd with the servers' shared token.
fn config_with_token(endpoint: &str, node: &str, token: &str) -> String {
    config_for(endpoint, node).replacen("[store]\n", &format!("[store]\ntoken = \"{token}\"\n"), 1)
}

/// A kubeconfig for `server` that logs in with `token` alone, trusting `ca`.
fn token_kubeconfig(dir: &Path, server: &str, ca: &Path, token: &str) -> std::path::PathBuf {
    let path = dir.join("token-kubeconfig.yaml");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    \
         certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n\
         - name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
        ca.display()
    );
    std::fs::write(&path, text).expect("write a kubeconfig");
    path
}

fn node_lease_renewed(server: &BerthServer, node: &str) -> Option<String> {
    let out = server.kubectl(&[
        "-n",
        "kube-node-lease",
        "get",
        "lease",
        node,
        "-o",
        "jsonpath={.spec.renewTime}",
    ]);
    let renewed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !renewed.is_empty()).then_some(renewed)
}

#[test]
fn servers_on_one_etcd_share_the_cluster_ca_and_keys_and_reach_each_others_pods() {
    use common::agent::Agent;
    use common::netns::connect;
    let ns_a = Netns::new();
    let ns_b = Netns::new();
    let ns_agent = Netns::new();
    link(&ns_a, &ns_b);
    connect(&ns_a, &ns_agent, "192.168.251.1/24", "192.168.251.2/24");
    connect(&ns_b, &ns_agent, "192.168.252.1/24", "192.168.252.2/24");
    let etcd = Etcd::start(&ns_a, Some("10.250.0.1"));
    // A's pods pull busybox from a registry on A's machine.
    let registry = common::registry::Registry::start(&ns_a);
    let work = tempfile::tempdir().expect("a work dir");
    registry.push_oci_layout(
        &common::cluster::test_image(work.path()),
        "latest",
        "library/busybox",
    );
    let pid = std::process::id();
    let token = format!("shared-secret-{pid}");
    let (node_a, node_b) = (format!("pki-a-{pid}"), format!("pki-b-{pid}"));
    let a = BerthServer::start_listening_with_config(
        &ns_a,
        "0.0.0.0:6443",
        &format!(
            "{}\n[registries.mirrors.\"docker.io\"]\nendpoints = [\"http://{}\"]\n",
            config_with_token(&format!("http://127.0.0.1:{ETCD_PORT}"), &node_a, &token),
            registry.addr()
        ),
    );
    // B starts from an empty data dir: it makes no CA or key of its own but takes A's.
    let b = BerthServer::start_listening_with_config(
        &ns_b,
        "0.0.0.0:6443",
        &config_with_token(&format!("http://10.250.0.1:{ETCD_PORT}"), &node_b, &token),
    );
    for file in [
        "pki/ca.crt",
        "pki/front-proxy-ca.crt",
        "pki/service-account.key",
        "encryption/keys",
    ] {
        let read = |dir: &Path| std::fs::read(dir.join(file)).expect("a shared file");
        assert_eq!(
            read(a.data_dir()),
            read(b.data_dir()),
            "{file} is the same on both servers"
        );
    }

    // A's admin kubeconfig works against B.
    a.kubectl_ok(&["create", "configmap", "from-a", "--from-literal=k=v"]);
    let a_kubeconfig = a.kubeconfig_path().display().to_string();
    let b_url = "https://192.168.252.1:6443";
    let out = b.kubectl_ok(&[
        "--kubeconfig",
        &a_kubeconfig,
        "--server",
        b_url,
        "get",
        "configmap",
        "from-a",
        "-o",
        "jsonpath={.data.k}",
    ]);
    assert_eq!(out, "v", "A's kubeconfig reads through B");

    // A ServiceAccount token A issued is accepted by B.
    let sa_token = a
        .kubectl_ok(&["create", "token", "default"])
        .trim()
        .to_owned();
    let kubeconfig = token_kubeconfig(
        b.data_dir(),
        "https://127.0.0.1:6443",
        &b.data_dir().join("pki/ca.crt"),
        &sa_token,
    );
    let whoami = b.kubectl_ok(&[
        "--kubeconfig",
        &kubeconfig.display().to_string(),
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(whoami, "system:serviceaccount:default:default");
    // A Secret A sealed, B opens.
    a.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "sealed",
        "--from-literal=k=v",
    ]);
    assert_eq!(json(&b, &["get", "secret", "sealed"])["data"]["k"], "dg==");

    // Logs and exec through B of a pod on A's node: B goes through A's kubelet API.
    let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "on-a"},
        "spec": {"nodeName": node_a, "containers": [{"name": "main", "image": "busybox",
            "command": ["sh", "-c", "echo hello-from-a; sleep 3600"]}]}});
    let out = a.kubectl_stdin(&["create", "-f", "-"], &pod.to_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let running = wait_until(Duration::from_secs(120), || {
        a.kubectl_ok(&["get", "pod", "on-a", "-o", "jsonpath={.status.phase}"]) == "Running"
    });
    assert!(running, "the pod runs on A:\n{}", a.log());
    let mut logs = String::new();
    let logged = wait_until(Duration::from_secs(30), || {
        logs = String::from_utf8_lossy(&b.kubectl(&["logs", "on-a"]).stdout).into_owned();
        logs.contains("hello-from-a")
    });
    assert!(logged, "kubectl logs through B: {logs}");
    let out = b.kubectl(&["exec", "on-a", "--", "echo", "exec-through-b"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("exec-through-b"),
        "kubectl exec through B: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    a.kubectl_ok(&["delete", "pod", "on-a", "--wait=false"]);

    // An agent joined through A talks to B with the certificate A's CA signed.
    let (join_token, hash) = common::agent::join_token(&a);
    // The bootstrap signer signs cluster-info for the new token, as kubeadm's does.
    let (token_id, token_secret) = join_token.split_once('.').expect("id.secret");
    let signed = wait_until(Duration::from_secs(30), || {
        let info = json(
            &b,
            &["-n", "kube-public", "get", "configmap", "cluster-info"],
        );
        let kubeconfig = info["data"]["kubeconfig"].as_str().unwrap_or_default();
        let signature = info["data"][format!("jws-kubeconfig-{token_id}")]
            .as_str()
            .unwrap_or_default();
        berth::join::cluster_info_jws::signature_is_valid(
            signature,
            kubeconfig,
            token_id,
            token_secret,
        )
    });
    assert!(signed, "cluster-info is signed for the token");
    let agent_node = format!("pki-agent-{pid}");
    let mut agent = Agent::start(
        &ns_agent,
        &[
            "--server",
            "https://192.168.251.1:6443",
            "--token",
            &join_token,
            "--ca-cert-hash",
            &hash,
            "--node-name",
            &agent_node,
        ],
    );
    assert!(
        wait_until(Duration::from_secs(90), || node_lease_renewed(
            &a,
            &agent_node
        )
        .is_some()),
        "the agent joined through A:\n{}",
        agent.log()
    );
    // A goes away; the agent, pointed at B, keeps its Node's heartbeat going through B.
    drop(a);
    agent.spawn(&ns_agent, &["--server", b_url, "--node-name", &agent_node]);
    let before = node_lease_renewed(&b, &agent_node);
    let renewed = wait_until(Duration::from_secs(60), || {
        node_lease_renewed(&b, &agent_node) != before
    });
    assert!(
        renewed,
        "the agent renews its lease through B:\n{}",
        agent.log()
    );
    drop(agent);
    drop(b);
    drop(registry);
    drop(etcd);
}

/// The name of the key etcd's copy of a Secret is sealed with, read through etcd's JSON gateway.
fn sealed_with_in_etcd(ns: &Netns, namespace: &str, name: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.encode(format!("/registry/core/secrets/{namespace}/{name}"));
    let url = format!("http://127.0.0.1:{ETCD_PORT}/v3/kv/range");
    let out = ns.exec(
        "curl",
        &[
            "-sf",
            "-X",
            "POST",
            &url,
            "-d",
            &format!("{{\"key\":\"{key}\"}}"),
        ],
    );
    let answer: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("etcd answered JSON");
    let value = answer["kvs"][0]["value"].as_str().unwrap_or_default();
    let stored = b64.decode(value).expect("a base64 value");
    let text = String::from_utf8_lossy(&stored);
    let rest = text
        .strip_prefix("k8s:enc:aesgcm:v1:")
        .unwrap_or_else(|| panic!("{name} is sealed in etcd: {text:.40}"));
    rest.split(':').next().unwrap_or_default().to_owned()
}

fn rotate_encryption_key(server: &BerthServer, expected: &str) {
    let rotated = server.berth(&["secrets-encrypt", "rotate"]);
    let said = String::from_utf8_lossy(&rotated.stdout).into_owned();
    assert!(
        rotated.status.success(),
        "rotate failed: {said}\n{}",
        server.log()
    );
    assert!(
        said.contains(&format!("New primary key: {expected}")),
        "{said}"
    );
}

fn primary_key(server: &BerthServer) -> String {
    let status = server.berth(&["secrets-encrypt", "status"]);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Primary key: "))
        .unwrap_or_default()
        .to_owned()
}

/// A Secret's `k` value as `server` reads it, retried for `patience` while reads fail.
fn secret_value(server: &BerthServer, name: &str, patience: Duration) -> String {
    let mut value = String::new();
    wait_until(patience, || {
        let out = server.kubectl(&["get", "secret", name, "-o", "jsonpath={.data.k}"]);
        value = String::from_utf8_lossy(&out.stdout).into_owned();
        out.status.success()
    });
    value
}

#[test]
fn a_key_rotated_on_one_server_seals_and_opens_secrets_on_every_server() {
    let ns_a = Netns::new();
    let ns_b = Netns::new();
    link(&ns_a, &ns_b);
    let etcd = Etcd::start(&ns_a, Some("10.250.0.1"));
    let pid = std::process::id();
    let token = format!("rotation-secret-{pid}");
    let (node_a, node_b) = (format!("rot-a-{pid}"), format!("rot-b-{pid}"));
    let mut a = BerthServer::start_with_config(
        &ns_a,
        &config_with_token(&format!("http://127.0.0.1:{ETCD_PORT}"), &node_a, &token),
    );
    let mut b = BerthServer::start_with_config(
        &ns_b,
        &config_with_token(&format!("http://10.250.0.1:{ETCD_PORT}"), &node_b, &token),
    );
    a.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "before",
        "--from-literal=k=v0",
    ]);

    // Rotated on A; B takes the new key without a restart.
    rotate_encryption_key(&a, "key2");
    let b_took_it = wait_until(Duration::from_secs(10), || primary_key(&b) == "key2");
    assert!(b_took_it, "B's primary is key2:\n{}", b.log());
    a.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "from-a",
        "--from-literal=k=v1",
    ]);
    assert_eq!(sealed_with_in_etcd(&ns_a, "default", "from-a"), "key2");
    // "v1" in base64, read at the first try: B's key file (above) shows keys B has loaded.
    assert_eq!(secret_value(&b, "from-a", Duration::ZERO), "djE=");
    // B's own writes use the new primary, and A opens them.
    b.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "from-b",
        "--from-literal=k=v2",
    ]);
    assert_eq!(sealed_with_in_etcd(&ns_a, "default", "from-b"), "key2");
    assert_eq!(secret_value(&a, "from-b", Duration::ZERO), "djI=");

    // Rotated on B this time; A follows.
    rotate_encryption_key(&b, "key3");
    assert!(wait_until(Duration::from_secs(10), || primary_key(&a) == "key3"));
    b.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "from-b-3",
        "--from-literal=k=v3",
    ]);
    assert_eq!(sealed_with_in_etcd(&ns_a, "default", "from-b-3"), "key3");
    assert_eq!(secret_value(&a, "from-b-3", Duration::ZERO), "djM=");
    // Both re-sealed every Secret with key3, the one from before the rotations included.
    let resealed = wait_until(Duration::from_secs(30), || {
        sealed_with_in_etcd(&ns_a, "default", "before") == "key3"
    });
    assert!(resealed, "the old Secret is re-sealed with key3");

    // After a restart of both, every Secret reads through either.
    a.restart();
    b.restart();
    for server in [&a, &b] {
        for (name, value) in [
            ("before", "djA="),
            ("from-a", "djE="),
            ("from-b", "djI="),
            ("from-b-3", "djM="),
        ] {
            assert_eq!(
                secret_value(server, name, Duration::from_secs(30)),
                value,
                "{name} after the restart:\n{}",
                server.log()
            );
        }
    }
    drop(a);
    drop(b);
    drop(etcd);
}

/// The API server `kube-public/cluster-info` names.
fn cluster_info_server(server: &BerthServer) -> String {
    let info = json(
        server,
        &["-n", "kube-public", "get", "configmap", "cluster-info"],
    );
    let kubeconfig = info["data"]["kubeconfig"].as_str().unwrap_or_default();
    kubeconfig
        .lines()
        .find_map(|line| line.trim().strip_prefix("server: "))
        .unwrap_or_default()
        .trim_matches('"')
        .to_owned()
}

/// The URL in a server's admin kubeconfig: its own address.
fn own_url(server: &BerthServer) -> String {
    let text = std::fs::read_to_string(server.kubeconfig_path()).expect("the admin kubeconfig");
    text.lines()
        .find_map(|line| line.trim().strip_prefix("server: "))
        .unwrap_or_default()
        .trim_matches('"')
        .to_owned()
}

#[test]
fn cluster_info_keeps_one_endpoint_however_many_servers_start() {
    // A machine each: every server on a shared store serves its node's kubelet API port.
    let ns_a = Netns::new();
    let ns_b = Netns::new();
    link(&ns_a, &ns_b);
    let etcd = Etcd::start(&ns_a, Some("10.250.0.1"));
    let pid = std::process::id();
    let token = format!("endpoint-secret-{pid}");
    let a = BerthServer::start_with_config(
        &ns_a,
        &config_with_token(
            &format!("http://127.0.0.1:{ETCD_PORT}"),
            &format!("ep-a-{pid}"),
            &token,
        ),
    );
    let mut b = BerthServer::start_with_config(
        &ns_b,
        &config_with_token(
            &format!("http://10.250.0.1:{ETCD_PORT}"),
            &format!("ep-b-{pid}"),
            &token,
        ),
    );
    let first = own_url(&a);
    assert_ne!(first, own_url(&b), "the servers listen on different ports");
    assert_eq!(
        cluster_info_server(&b),
        first,
        "B keeps the endpoint A published"
    );
    b.restart();
    assert_eq!(
        cluster_info_server(&a),
        first,
        "still A's after B restarted"
    );

    // A configured endpoint (a load balancer's) replaces it.
    let config = b.data_dir().join("test-config.toml");
    let text = std::fs::read_to_string(&config).expect("B's config");
    let mut table: toml::Table = text.parse().expect("B's config is TOML");
    let advertised = "https://berth-api.example:6443";
    let api = table
        .entry("api")
        .or_insert_with(|| toml::Value::Table(Default::default()));
    if let toml::Value::Table(api) = api {
        api.insert("advertise_url".into(), advertised.into());
    }
    std::fs::write(&config, table.to_string()).expect("write B's config");
    b.restart();
    assert_eq!(cluster_info_server(&a), advertised);
    drop(a);
    drop(b);
    drop(etcd);
}

/// `berth server` joining through `--server` that is expected to fail: its output.
fn failed_server_join(ns: &Netns, args: &[&str]) -> std::process::Output {
    let dir = temp_data_dir();
    let config = dir.path().join("test-config.toml");
    std::fs::write(&config, "[ingress]\nenabled = false\n").expect("write a config");
    let child = ns
        .command(env!("CARGO_BIN_EXE_berth"))
        .arg("server")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--api-listen", "127.0.0.1:0"])
        .args(args)
        .env("BERTH_CONFIG", &config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth server");
    common::output_within(child, Duration::from_secs(90))
}

/// Two machines on one link and etcd on the first, answering on 127.0.0.1 and on the link;
/// server A there on it, sharing the datastore through a token, reaching it at `endpoint_ip`.
/// Fields drop in order: the server, etcd, then the machines.
struct JoinableServer {
    a: BerthServer,
    _etcd: Etcd,
    ns_b: Netns,
    _ns_a: Netns,
    node_a: String,
    node_b: String,
}

impl JoinableServer {
    const URL: &str = "https://10.250.0.1:6443";

    fn start(name: &str, endpoint_ip: &str) -> JoinableServer {
        let ns_a = Netns::new();
        let ns_b = Netns::new();
        link(&ns_a, &ns_b);
        let etcd = Etcd::start(&ns_a, Some("10.250.0.1"));
        let pid = std::process::id();
        let (node_a, node_b) = (format!("{name}-a-{pid}"), format!("{name}-b-{pid}"));
        let a = BerthServer::start_listening_with_config(
            &ns_a,
            "0.0.0.0:6443",
            &config_with_token(
                &format!("http://{endpoint_ip}:{ETCD_PORT}"),
                &node_a,
                &format!("{name}-secret-{pid}"),
            ),
        );
        JoinableServer {
            a,
            _etcd: etcd,
            ns_b,
            _ns_a: ns_a,
            node_a,
            node_b,
        }
    }

    /// `berth server` on the second machine joining with `args`, expected to be refused with
    /// exit status 1 and one line naming each of `reasons` last.
    fn join_is_refused(&self, args: &[&str], reasons: &[&str]) {
        let out = failed_server_join(&self.ns_b, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        let last = stderr.trim().lines().last().unwrap_or_default();
        assert!(
            last.starts_with("berth: ") && reasons.iter().all(|r| last.contains(r)),
            "{args:?}: expected {reasons:?} last:\n{stderr}"
        );
    }
}

#[test]
fn a_server_joins_with_a_server_token_alone_and_takes_the_controllers_over() {
    // A is on etcd at an address B reaches too, which is what it hands joining servers.
    let mut setup = JoinableServer::start("join", "10.250.0.1");
    let (url, node_a, node_b) = (
        JoinableServer::URL,
        setup.node_a.clone(),
        setup.node_b.clone(),
    );
    setup
        .a
        .kubectl_ok(&["create", "configmap", "before-join", "--from-literal=k=v"]);
    let (server_token, hash) = common::agent::join_token_with(&setup.a, &["--server"]);
    let (node_token, _) = common::agent::join_token(&setup.a);

    // An unknown token, and a node's token, are refused with one clear line.
    for (token, expected) in [
        ("abcdef.0123456789abcdef", "refused the join token"),
        (node_token.as_str(), "not a server token"),
    ] {
        setup.join_is_refused(
            &["--server", url, "--token", token, "--ca-cert-hash", &hash],
            &[expected],
        );
    }

    // B is told nothing of the datastore: the server token brings it.
    let b = BerthServer::start_listening_with_args(
        &setup.ns_b,
        "0.0.0.0:6443",
        &format!("[node]\nname = \"{node_b}\"\n\n[ingress]\nenabled = false\n"),
        &[
            "--server",
            url,
            "--token",
            &server_token,
            "--ca-cert-hash",
            &hash,
        ],
    );
    assert_eq!(
        json(&b, &["get", "configmap", "before-join"])["data"]["k"],
        "v",
        "B serves what A wrote"
    );
    b.kubectl_ok(&["create", "configmap", "from-b", "--from-literal=k=b"]);
    assert_eq!(
        json(&setup.a, &["get", "configmap", "from-b"])["data"]["k"],
        "b"
    );
    let ca = |server: &BerthServer| std::fs::read(server.data_dir().join("pki/ca.crt")).ok();
    assert_eq!(ca(&setup.a), ca(&b), "B took the cluster's CA");
    let both = wait_until(Duration::from_secs(60), || {
        let nodes = b.kubectl_ok(&["get", "nodes", "-o", "name"]);
        nodes.contains(&node_a) && nodes.contains(&node_b)
    });
    assert!(both, "both servers registered their nodes");

    // A dies; B holds the controllers' lease within its duration and runs them.
    setup.a.kill9();
    let took_over = wait_until(Duration::from_secs(30), || {
        lease_holder(&b).is_some_and(|h| h.starts_with(&format!("{node_b}_")))
    });
    assert!(took_over, "B took the controllers' lease:\n{}", b.log());
    b.kubectl_ok(&[
        "create",
        "deployment",
        "after-join",
        "--image=busybox",
        "--replicas=1",
    ]);
    let got_replica_set = wait_until(Duration::from_secs(30), || {
        b.kubectl_ok(&["get", "replicasets", "-l", "app=after-join", "-o", "name"])
            .contains("replicaset.apps/after-join-")
    });
    assert!(
        got_replica_set,
        "B's deployment controller made the ReplicaSet"
    );
    drop(b);
    drop(setup);
}

#[test]
fn a_server_joining_a_server_on_loopback_etcd_is_told_to_give_the_datastore_endpoint() {
    // etcd answers on the link too, but A reaches it at 127.0.0.1: that is what it hands on.
    let setup = JoinableServer::start("loop", "127.0.0.1");
    setup
        .a
        .kubectl_ok(&["create", "configmap", "on-a", "--from-literal=k=v"]);
    let (server_token, hash) = common::agent::join_token_with(&setup.a, &["--server"]);
    let join = [
        "--server",
        JoinableServer::URL,
        "--token",
        &server_token,
        "--ca-cert-hash",
        &hash,
    ];
    setup.join_is_refused(
        &join,
        &[
            &format!("http://127.0.0.1:{ETCD_PORT}"),
            "--datastore-endpoint",
        ],
    );

    // Told where the datastore is, B joins.
    let endpoint = format!("http://10.250.0.1:{ETCD_PORT}");
    let mut args = join.to_vec();
    args.extend(["--datastore-endpoint", &endpoint]);
    let b = BerthServer::start_listening_with_args(
        &setup.ns_b,
        "0.0.0.0:6443",
        &format!(
            "[node]\nname = \"{}\"\n\n[ingress]\nenabled = false\n",
            setup.node_b
        ),
        &args,
    );
    assert_eq!(
        json(&b, &["get", "configmap", "on-a"])["data"]["k"],
        "v",
        "B serves what A wrote"
    );
    drop(b);
    drop(setup);
}
