//! The cluster DNS server over real sockets, inside a network namespace each test makes: cluster
//! records from a zone built here, and forwarding to a stub upstream the test itself runs (never
//! a real resolver). Needs root (network namespaces); CI runs as root.

mod common;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use berth::dns::forward::Forwarder;
use berth::dns::server::{serve, Answerer, ZoneHandle};
use berth::dns::zone::ClusterZone;
use common::netns::Netns;
use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Runs `body` on a thread of its own that has entered namespace `netns`, so every socket it
/// opens lives there.
fn in_netns<F, Fut>(netns: &str, body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let path = format!("/run/netns/{netns}");
    let thread = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open the test netns");
        // Only this thread moves; the test harness and other tests stay where they are.
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter the netns");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(body());
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

fn name(text: &str) -> Name {
    Name::from_ascii(text).unwrap()
}

fn test_zone() -> ClusterZone {
    let services: Vec<Service> = [
        json!({"metadata": {"name": "web", "namespace": "default"},
               "spec": {"clusterIP": "10.43.0.20", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}),
        json!({"metadata": {"name": "web", "namespace": "shop"},
               "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 8080}]}}),
        json!({"metadata": {"name": "ext", "namespace": "default"},
               "spec": {"type": "ExternalName", "externalName": "outside.example"}}),
        json!({"metadata": {"name": "big", "namespace": "default"}, "spec": {"clusterIP": "None"}}),
    ]
    .into_iter()
    .map(|v| serde_json::from_value(v).unwrap())
    .collect();
    let big_endpoints: Vec<_> = (1..=100)
        .map(|i| json!({"addresses": [format!("10.42.1.{i}")]}))
        .collect();
    let slices: Vec<EndpointSlice> = [
        json!({"metadata": {"name": "web-x", "namespace": "shop",
                            "labels": {"kubernetes.io/service-name": "web"}},
               "addressType": "IPv4",
               "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
               "endpoints": [
                   {"addresses": ["10.42.0.11"], "hostname": "web-0", "conditions": {"ready": true}},
                   {"addresses": ["10.42.0.12"], "hostname": "web-1", "conditions": {"ready": true}}]}),
        json!({"metadata": {"name": "big-x", "namespace": "default",
                            "labels": {"kubernetes.io/service-name": "big"}},
               "addressType": "IPv4", "endpoints": big_endpoints}),
    ]
    .into_iter()
    .map(|v| serde_json::from_value(v).unwrap())
    .collect();
    let services: Vec<&Service> = services.iter().collect();
    let slices: Vec<&EndpointSlice> = slices.iter().collect();
    ClusterZone::build("cluster.local", &services, &slices).unwrap()
}

/// A stand-in upstream: `outside.example.` has an address, `big.example.` fifty of them (too
/// many for its UDP answers, which come truncated), nothing else exists. Counts questions.
async fn stub_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    stub_upstream_on("127.0.0.1:0".parse().unwrap()).await
}

async fn stub_upstream_on(addr: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = UdpSocket::bind(addr).await.unwrap();
    let addr = socket.local_addr().unwrap();
    let tcp = TcpListener::bind(addr).await.unwrap();
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let reply = stub_answer(&query, true);
            let _ = socket.send_to(&reply.to_vec().unwrap(), from).await;
        }
    });
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            let Ok(len) = stream.read_u16().await else {
                continue;
            };
            let mut buf = vec![0u8; usize::from(len)];
            if stream.read_exact(&mut buf).await.is_err() {
                continue;
            }
            let Ok(query) = Message::from_vec(&buf) else {
                continue;
            };
            let reply = stub_answer(&query, false).to_vec().unwrap();
            let _ = stream.write_u16(reply.len() as u16).await;
            let _ = stream.write_all(&reply).await;
        }
    });
    (addr, asked)
}

fn stub_answer(query: &Message, over_udp: bool) -> Message {
    let mut reply = Message::response(query.metadata.id, OpCode::Query);
    reply.metadata.recursion_available = true;
    reply.add_queries(query.queries.clone());
    let q = &query.queries[0];
    let a = |ip: Ipv4Addr| Record::from_rdata(q.name().clone(), 120, RData::A(A(ip)));
    if q.name() == &name("outside.example.") && q.query_type() == RecordType::A {
        reply.add_answer(a(Ipv4Addr::new(192, 0, 2, 10)));
    } else if q.name() == &name("big.example.") && q.query_type() == RecordType::A {
        if over_udp {
            reply.metadata.truncation = true;
        } else {
            reply.add_answers((1..=50).map(|i| a(Ipv4Addr::new(198, 51, 100, i))));
        }
    } else {
        reply.metadata.response_code = ResponseCode::NXDomain;
        let soa = SOA::new(name("ns.example."), name("h.example."), 1, 1, 1, 1, 30);
        reply.add_authority(Record::from_rdata(name("example."), 30, RData::SOA(soa)));
    }
    reply
}

/// Starts the server on loopback with the test zone and `upstream`; returns where it listens.
async fn start_server(upstream: SocketAddr) -> SocketAddr {
    let zone: ZoneHandle = Arc::new(RwLock::new(Arc::new(test_zone())));
    let forwarder = Arc::new(Forwarder::new(vec![upstream], 1024));
    let answerer = Arc::new(Answerer::new(zone, forwarder));
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(serve(udp, tcp, answerer, std::future::pending()));
    addr
}

fn query_bytes(qname: &str, qtype: RecordType, edns: bool) -> (u16, Vec<u8>) {
    let mut query = Message::query();
    query.add_query(Query::query(name(qname), qtype));
    query.metadata.recursion_desired = true;
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        query.set_edns(e);
    }
    (query.metadata.id, query.to_vec().unwrap())
}

async fn ask_udp_on(socket: &UdpSocket, qname: &str, qtype: RecordType, edns: bool) -> Message {
    let (id, bytes) = query_bytes(qname, qtype, edns);
    socket.send(&bytes).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
        .await
        .expect("an answer within 5s")
        .unwrap();
    let answer = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(answer.metadata.id, id);
    answer
}

async fn ask_udp(server: SocketAddr, qname: &str, qtype: RecordType) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server).await.unwrap();
    ask_udp_on(&socket, qname, qtype, true).await
}

async fn ask_tcp(server: SocketAddr, qname: &str, qtype: RecordType) -> Message {
    let (id, bytes) = query_bytes(qname, qtype, false);
    let mut stream = TcpStream::connect(server).await.unwrap();
    stream.write_u16(bytes.len() as u16).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let len = stream.read_u16().await.unwrap();
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await.unwrap();
    let answer = Message::from_vec(&buf).unwrap();
    assert_eq!(answer.metadata.id, id);
    answer
}

fn addresses(message: &Message) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    ips.sort();
    ips
}

fn has_soa_authority(message: &Message) -> bool {
    message
        .authorities
        .iter()
        .any(|r| matches!(r.data, RData::SOA(_)))
}

#[test]
fn cluster_names_are_answered_and_other_names_forwarded_over_real_sockets() {
    let ns = Netns::new();
    in_netns(&ns.name, || async {
        let (upstream, asked) = stub_upstream().await;
        let server = start_server(upstream).await;

        // A for a ClusterIP Service, authoritative, TTL 5.
        let a = ask_udp(server, "web.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert!(a.metadata.authoritative);
        assert_eq!(addresses(&a), vec![Ipv4Addr::new(10, 43, 0, 20)]);
        assert_eq!(a.answers[0].ttl, 5);

        // SRV for a named port.
        let srv = ask_udp(
            server,
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
        )
        .await;
        match &srv.answers[..] {
            [record] => match &record.data {
                RData::SRV(s) => {
                    assert_eq!(s.port, 80);
                    assert_eq!(s.target, name("web.default.svc.cluster.local."));
                }
                other => panic!("not an SRV: {other:?}"),
            },
            other => panic!("expected one SRV, got {other:?}"),
        }

        // A headless Service: one A per ready endpoint.
        let headless = ask_udp(server, "web.shop.svc.cluster.local.", RecordType::A).await;
        let want: Vec<Ipv4Addr> = vec![Ipv4Addr::new(10, 42, 0, 11), Ipv4Addr::new(10, 42, 0, 12)];
        assert_eq!(addresses(&headless), want);

        // A StatefulSet pod by its endpoint hostname.
        let pod = ask_udp(server, "web-1.web.shop.svc.cluster.local.", RecordType::A).await;
        assert_eq!(addresses(&pod), vec![Ipv4Addr::new(10, 42, 0, 12)]);

        // ExternalName: the CNAME, then the target's address from upstream.
        let ext = ask_udp(server, "ext.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(ext.metadata.response_code, ResponseCode::NoError);
        assert!(matches!(&ext.answers[0].data, RData::CNAME(c) if c.0 == name("outside.example.")));
        assert_eq!(addresses(&ext), vec![Ipv4Addr::new(192, 0, 2, 10)]);

        // NXDOMAIN and NODATA, both with the zone's SOA.
        let nx = ask_udp(server, "nope.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
        assert!(has_soa_authority(&nx));
        let nodata = ask_udp(server, "web.default.svc.cluster.local.", RecordType::AAAA).await;
        assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
        assert!(nodata.answers.is_empty());
        assert!(has_soa_authority(&nodata));

        // A search-path expansion is NXDOMAIN without asking upstream.
        let before = asked.load(Ordering::SeqCst);
        let expanded = "web.default.svc.cluster.local.default.svc.cluster.local.";
        let nx = ask_udp(server, expanded, RecordType::A).await;
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(asked.load(Ordering::SeqCst), before);

        // PTR for a service address and for a headless endpoint.
        let ptr = ask_udp(server, "20.0.43.10.in-addr.arpa.", RecordType::PTR).await;
        assert!(matches!(&ptr.answers[0].data,
            RData::PTR(p) if p.0 == name("web.default.svc.cluster.local.")));
        let ptr = ask_udp(server, "11.0.42.10.in-addr.arpa.", RecordType::PTR).await;
        assert!(matches!(&ptr.answers[0].data,
            RData::PTR(p) if p.0 == name("web-0.web.shop.svc.cluster.local.")));

        // Outside names go upstream; a repeat comes from the cache.
        let out = ask_udp(server, "outside.example.", RecordType::A).await;
        assert!(!out.metadata.authoritative);
        assert_eq!(addresses(&out), vec![Ipv4Addr::new(192, 0, 2, 10)]);
        let out_nx = ask_udp(server, "missing.example.", RecordType::A).await;
        assert_eq!(out_nx.metadata.response_code, ResponseCode::NXDomain);
        let asked_so_far = asked.load(Ordering::SeqCst);
        let again = ask_udp(server, "outside.example.", RecordType::A).await;
        assert_eq!(addresses(&again), vec![Ipv4Addr::new(192, 0, 2, 10)]);
        let again_nx = ask_udp(server, "missing.example.", RecordType::A).await;
        assert_eq!(again_nx.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(
            asked.load(Ordering::SeqCst),
            asked_so_far,
            "served from the cache"
        );
    });
}

#[test]
fn answers_too_large_for_udp_are_truncated_and_complete_over_tcp() {
    let ns = Netns::new();
    in_netns(&ns.name, || async {
        let (upstream, _) = stub_upstream().await;
        let server = start_server(upstream).await;

        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.connect(server).await.unwrap();
        let udp = ask_udp_on(
            &socket,
            "big.default.svc.cluster.local.",
            RecordType::A,
            false,
        )
        .await;
        assert!(
            udp.metadata.truncation,
            "100 addresses do not fit 512 bytes"
        );
        assert!(udp.answers.len() < 100);

        let tcp = ask_tcp(server, "big.default.svc.cluster.local.", RecordType::A).await;
        assert!(!tcp.metadata.truncation);
        assert_eq!(addresses(&tcp).len(), 100);

        // An upstream answer truncated over UDP is fetched again over TCP.
        let big = ask_tcp(server, "big.example.", RecordType::A).await;
        assert_eq!(big.metadata.response_code, ResponseCode::NoError);
        assert_eq!(addresses(&big).len(), 50);
    });
}

/// Throughput, one question at a time over UDP: run with `--nocapture` to see the numbers.
#[test]
fn dns_throughput_for_cluster_and_forwarded_names() {
    let ns = Netns::new();
    in_netns(&ns.name, || async {
        let (upstream, _) = stub_upstream().await;
        let server = start_server(upstream).await;
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.connect(server).await.unwrap();
        const N: u32 = 2000;

        let mut rates = Vec::new();
        for (label, qname) in [
            ("cluster name", "web.default.svc.cluster.local."),
            ("forwarded name (cached)", "outside.example."),
        ] {
            let started = Instant::now();
            for _ in 0..N {
                let answer = ask_udp_on(&socket, qname, RecordType::A, true).await;
                assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
            }
            let rate = f64::from(N) / started.elapsed().as_secs_f64();
            println!("dns bench: {label}: {rate:.0} queries/s");
            rates.push(rate);
        }
        // Every question a different name: each one a round trip to the upstream.
        let started = Instant::now();
        for i in 0..N {
            let qname = format!("n{i}.example.");
            let answer = ask_udp_on(&socket, &qname, RecordType::A, true).await;
            assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
        }
        let rate = f64::from(N) / started.elapsed().as_secs_f64();
        println!("dns bench: forwarded name (uncached): {rate:.0} queries/s");
        rates.push(rate);
        assert!(rates.iter().all(|r| *r > 50.0), "far too slow: {rates:?}");
    });
}

/// The kubectl the test tooling installs (`BERTH_TEST_TOOLS` overrides its directory).
fn kubectl_path() -> std::path::PathBuf {
    std::env::var_os("BERTH_TEST_TOOLS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/usr/local/lib/berth-test/bin".into())
        .join("kubectl")
}

/// A `berth server` child, killed by PID when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kubectl_ok(ns: &Netns, kubeconfig: &std::path::Path, args: &[&str]) -> String {
    let kubectl = kubectl_path();
    let kubectl = kubectl.to_string_lossy();
    let mut full = vec!["--kubeconfig", kubeconfig.to_str().unwrap()];
    full.extend_from_slice(args);
    ns.exec_ok(&kubectl, &full)
}

/// The daemon end to end: the bridge address appears, the server publishes itself as kube-dns'
/// endpoint, and Services created and deleted through kubectl come and go in DNS.
#[test]
fn a_real_berth_server_serves_its_services_on_the_bridge_gateway() {
    let ns = Netns::new();
    // What the agent would create: the bridge with the gateway address DNS listens on.
    ns.exec_ok("ip", &["link", "add", "berth0", "type", "bridge"]);
    ns.exec_ok("ip", &["addr", "add", "10.42.0.1/24", "dev", "berth0"]);
    ns.exec_ok("ip", &["link", "set", "berth0", "up"]);
    let dir = tempfile::Builder::new()
        .prefix(&format!("berth-dns-{}-", std::process::id()))
        .tempdir()
        .unwrap();
    // The stub upstream the test runs in the namespace, never the host's resolvers.
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[network]\nupstream_dns = [\"127.0.0.1:5399\"]\n").unwrap();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let child = ns
        .command(env!("CARGO_BIN_EXE_berth"))
        .args(["server", "--api-listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let _server = Server(child);
    let kubeconfig = dir.path().join("kubeconfig.yaml");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !kubeconfig.exists() {
        assert!(Instant::now() < deadline, "berth did not start");
        std::thread::sleep(Duration::from_millis(100));
    }

    let services = dir.path().join("services.json");
    std::fs::write(
        &services,
        r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
             "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext", "namespace": "default"},
             "spec": {"type": "ExternalName", "externalName": "outside.example"}}]}"#,
    )
    .unwrap();
    let created = kubectl_ok(
        &ns,
        &kubeconfig,
        &[
            "create",
            "-f",
            services.to_str().unwrap(),
            "--validate=false",
        ],
    );
    assert!(created.contains("service/web created"), "{created}");
    let cluster_ip: Ipv4Addr = kubectl_ok(
        &ns,
        &kubeconfig,
        &["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"],
    )
    .trim()
    .parse()
    .unwrap();

    // DNS is published once the node has its pod CIDR, which the node IPAM assigns after start.
    let deadline = Instant::now() + Duration::from_secs(60);
    let slice = loop {
        let out = ns
            .command(&kubectl_path().to_string_lossy())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args([
                "get",
                "endpointslice",
                "kube-dns",
                "-n",
                "kube-system",
                "-o",
                "json",
            ])
            .output()
            .unwrap();
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no kube-dns EndpointSlice: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let slice: serde_json::Value = serde_json::from_str(&slice).unwrap();
    assert_eq!(slice["endpoints"][0]["addresses"][0], "10.42.0.1");
    assert_eq!(
        slice["metadata"]["labels"]["kubernetes.io/service-name"],
        "kube-dns"
    );

    let dns: SocketAddr = "10.42.0.1:53".parse().unwrap();
    in_netns(&ns.name, move || async move {
        let _ = stub_upstream_on("127.0.0.1:5399".parse().unwrap()).await;
        let web = wait_for(dns, "web.default.svc.cluster.local.", |m| {
            m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty()
        })
        .await;
        assert_eq!(addresses(&web), vec![cluster_ip]);
        let ext = ask_udp(dns, "ext.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(addresses(&ext), vec![Ipv4Addr::new(192, 0, 2, 10)]);
        let tcp = ask_tcp(
            dns,
            "kube-dns.kube-system.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(addresses(&tcp), vec![Ipv4Addr::new(10, 43, 0, 10)]);
    });

    kubectl_ok(&ns, &kubeconfig, &["delete", "svc", "web"]);
    in_netns(&ns.name, move || async move {
        wait_for(dns, "web.default.svc.cluster.local.", |m| {
            m.metadata.response_code == ResponseCode::NXDomain
        })
        .await;
    });
}

/// Asks for `qname` A until `done` holds for the answer (the zone follows the API shortly).
async fn wait_for(server: SocketAddr, qname: &str, done: impl Fn(&Message) -> bool) -> Message {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let socket = UdpSocket::bind("0.0.0.0:0").await.unwrap();
        socket.connect(server).await.unwrap();
        let (_, bytes) = query_bytes(qname, RecordType::A, true);
        let _ = socket.send(&bytes).await;
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buf)).await
        {
            if let Ok(answer) = Message::from_vec(&buf[..n]) {
                if done(&answer) {
                    return answer;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no satisfying answer for {qname}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The process running `sleep <marker>`: the test's client pod's container.
fn process_with_marker(marker: &str) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.len() >= 2 && args[0].ends_with(b"sleep") && args[1] == marker.as_bytes() {
            return Some(pid);
        }
    }
    None
}

/// The benchmark of issue 6: queries per second from inside a pod, one at a time over UDP, for
/// a cluster name and for an outside name at the cluster DNS Service (forwarded, then cached),
/// against the same outside name asked of the upstream itself (a stub the test runs on the
/// node), same run. Needs the busybox test image (as every pod test).
/// `cargo test --test cluster_dns -- --ignored --nocapture`
#[test]
#[ignore]
fn dns_queries_per_second_from_a_pod_against_the_upstream_directly() {
    use common::cluster::Cluster;
    use nix::sched::{setns, CloneFlags};

    const UPSTREAM_PORT: u16 = 5399;
    let ns = Netns::new();
    let mut cluster = Cluster::start(&ns);
    let config = cluster.server.data_dir().join("test-config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[network]\nupstream_dns = [\"127.0.0.1:{UPSTREAM_PORT}\"]\n"
    ));
    std::fs::write(&config, text).unwrap();
    cluster.server.restart();
    let marker = format!("{}", 20_000_000 + std::process::id() % 1_000_000);
    cluster.create(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "dns-client"},
        "spec": {"nodeName": cluster.node, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "busybox", "command": ["sleep", marker]}]}}));
    let mut pod_ip = String::new();
    let running = common::wait_until(Duration::from_secs(120), || {
        pod_ip = cluster.server.kubectl_ok(&[
            "get",
            "pod",
            "dns-client",
            "-o",
            "jsonpath={.status.podIP}",
        ]);
        !pod_ip.trim().is_empty() && process_with_marker(&marker).is_some()
    });
    assert!(running, "the client pod never ran");
    let pid = process_with_marker(&marker).unwrap();
    let octets: Vec<&str> = pod_ip.trim().split('.').collect();
    let gateway: Ipv4Addr = format!("{}.{}.{}.1", octets[0], octets[1], octets[2])
        .parse()
        .unwrap();
    let node_netns = format!("/run/netns/{}", ns.name);
    let pod_netns = format!("/proc/{pid}/ns/net");

    let rates = std::thread::spawn(move || {
        let enter = |path: &str| {
            let file = std::fs::File::open(path).unwrap();
            setns(&file, CloneFlags::CLONE_NEWNET).unwrap();
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            // Sockets live in the namespace of the thread that makes them: the upstream on the
            // node (where berth forwards to it), the client's in the pod.
            enter(&node_netns);
            let (_, asked) =
                stub_upstream_on(SocketAddr::from((Ipv4Addr::UNSPECIFIED, UPSTREAM_PORT))).await;
            enter(&pod_netns);
            let cluster_dns = SocketAddr::from((Ipv4Addr::new(10, 43, 0, 10), 53));
            wait_for(cluster_dns, "kubernetes.default.svc.cluster.local.", |m| {
                m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty()
            })
            .await;
            const N: u32 = 2000;
            let mut rates = Vec::new();
            for (label, server, qname) in [
                (
                    "cluster name via the cluster DNS",
                    cluster_dns,
                    "kubernetes.default.svc.cluster.local.",
                ),
                (
                    "outside name via the cluster DNS (forwarded, cached)",
                    cluster_dns,
                    "outside.example.",
                ),
                (
                    "outside name asked of the upstream directly",
                    SocketAddr::from((gateway, UPSTREAM_PORT)),
                    "outside.example.",
                ),
            ] {
                let socket = UdpSocket::bind("0.0.0.0:0").await.unwrap();
                socket.connect(server).await.unwrap();
                // Warm up (and fill the forwarder's cache).
                for _ in 0..50 {
                    ask_udp_on(&socket, qname, RecordType::A, true).await;
                }
                let started = Instant::now();
                for _ in 0..N {
                    let answer = ask_udp_on(&socket, qname, RecordType::A, true).await;
                    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
                    assert!(!answer.answers.is_empty());
                }
                rates.push((label, f64::from(N) / started.elapsed().as_secs_f64()));
            }
            assert!(asked.load(Ordering::SeqCst) > 0, "berth never forwarded");
            rates
        })
    })
    .join()
    .unwrap();
    let upstream = rates[2].1;
    for (label, rate) in &rates {
        println!(
            "dns bench from a pod: {label}: {rate:.0} queries/s ({:.2}x the upstream directly)",
            rate / upstream
        );
    }
    cluster
        .server
        .kubectl_ok(&["delete", "pod", "dns-client", "--wait=false"]);
}

/// A pod of `namespace` on the cluster's node: `spec` plus the node and a short grace period.
fn namespaced_pod(
    cluster: &common::cluster::Cluster,
    namespace: &str,
    name: &str,
    labels: serde_json::Value,
    spec: serde_json::Value,
) {
    let mut spec = spec;
    spec["nodeName"] = json!(cluster.node);
    spec["terminationGracePeriodSeconds"] = json!(1);
    cluster.create(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels}, "spec": spec}));
}

/// A busybox container that sleeps until the pod is deleted.
fn sleeper() -> serde_json::Value {
    json!([{"name": "c", "image": "busybox", "command": ["sleep", "100000"]}])
}

/// What `script` prints in `pod` of `namespace` once it exits 0 (DNS and the proxy follow the
/// API within seconds), else the last failure's output.
fn run_in_pod(
    cluster: &common::cluster::Cluster,
    namespace: &str,
    pod: &str,
    script: &str,
) -> Result<String, String> {
    let mut last = String::new();
    let done = common::wait_until(Duration::from_secs(30), || {
        let out = cluster
            .server
            .kubectl(&["exec", "-n", namespace, pod, "--", "sh", "-c", script]);
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out.status.success()
    });
    if done {
        Ok(last)
    } else {
        Err(last)
    }
}

/// The first address busybox's nslookup prints for the name it was asked.
const NSLOOKUP: &str = "awk '/^Name:/ {found=1} found && /^Address/ {print $2; exit}'";

/// Issue 6: a pod's resolver completes names through its resolv.conf (`<ns>.svc.cluster.local
/// svc.cluster.local cluster.local`, `ndots:5`), so `web` is the Service of the pod's own
/// namespace and `web.b`, `web.b.svc` the one in `b`; `dnsPolicy` None with a dnsConfig,
/// ClusterFirstWithHostNet, ClusterFirst on the host network and Default each give the resolver
/// upstream gives them. Names are resolved by busybox inside real pods (libc's resolver for
/// `nc` and `ping`, busybox's own for `nslookup`) and connections made to the answers.
#[test]
fn pods_resolve_short_service_names_through_their_search_list_and_dns_policies() {
    use common::cluster::Cluster;
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let server = &cluster.server;
    for namespace in ["a", "b"] {
        server.kubectl_ok(&["create", "namespace", namespace]);
    }
    // hostNetwork pods are beyond the baseline level enforced by default.
    server.kubectl_ok(&[
        "label",
        "namespace",
        "a",
        "pod-security.kubernetes.io/enforce=privileged",
    ]);
    // A server behind a Service `web` in each namespace, answering its namespace's name.
    let mut service_ips = std::collections::HashMap::new();
    for namespace in ["a", "b"] {
        namespaced_pod(
            &cluster,
            namespace,
            "srv",
            json!({"app": "web"}),
            json!({"containers": [{"name": "srv", "image": "busybox",
                "command": ["nc", "-ll", "-p", "8080", "-e", "echo", format!("from-{namespace}")]}]}),
        );
        cluster.create(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}));
        let ip = server.kubectl_ok(&[
            "get",
            "service",
            "-n",
            namespace,
            "web",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ]);
        service_ips.insert(namespace, ip.trim().to_string());
    }
    cluster.create(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "only-in-b", "namespace": "b"},
        "spec": {"ports": [{"port": 80}]}}));
    namespaced_pod(
        &cluster,
        "a",
        "client",
        json!({}),
        json!({"containers": sleeper()}),
    );
    namespaced_pod(
        &cluster,
        "a",
        "custom",
        json!({}),
        json!({"containers": sleeper(), "dnsPolicy": "None",
               "dnsConfig": {"nameservers": ["10.43.0.10"], "searches": ["b.svc.cluster.local"],
                             "options": [{"name": "ndots", "value": "2"}]}}),
    );
    namespaced_pod(
        &cluster,
        "a",
        "inherits",
        json!({}),
        json!({"containers": sleeper(), "dnsPolicy": "Default"}),
    );
    namespaced_pod(
        &cluster,
        "a",
        "host-cluster",
        json!({}),
        json!({"containers": sleeper(), "hostNetwork": true,
               "dnsPolicy": "ClusterFirstWithHostNet"}),
    );
    namespaced_pod(
        &cluster,
        "a",
        "host-first",
        json!({}),
        json!({"containers": sleeper(), "hostNetwork": true, "dnsPolicy": "ClusterFirst"}),
    );
    for (namespace, pod) in [
        ("a", "srv"),
        ("b", "srv"),
        ("a", "client"),
        ("a", "custom"),
        ("a", "inherits"),
        ("a", "host-cluster"),
        ("a", "host-first"),
    ] {
        server.kubectl_ok(&[
            "wait",
            "-n",
            namespace,
            "--for=condition=Ready",
            &format!("pod/{pod}"),
            "--timeout=120s",
        ]);
    }

    // Through libc's resolver (busybox nc): the search list and ndots:5 complete each name.
    for (name, want) in [
        ("web", "from-a"),
        ("web.b", "from-b"),
        ("web.b.svc", "from-b"),
        ("web.a.svc.cluster.local", "from-a"),
    ] {
        let answer = run_in_pod(
            &cluster,
            "a",
            "client",
            &format!("nc -w 3 {name} 80 </dev/null | grep {want}"),
        );
        assert!(
            answer.as_ref().is_ok_and(|a| a.contains(want)),
            "{name} from a pod in a: {answer:?}"
        );
    }
    let ping = run_in_pod(&cluster, "a", "client", "ping -c 1 -W 1 web.b; true");
    assert!(
        ping.as_ref()
            .is_ok_and(|p| p.contains(&format!("({})", service_ips["b"]))),
        "ping resolves web.b to {}: {ping:?}",
        service_ips["b"]
    );
    // Through busybox's own resolver, which applies the search list to names without a dot.
    let looked_up = run_in_pod(
        &cluster,
        "a",
        "client",
        &format!("nslookup web | {NSLOOKUP}"),
    );
    assert_eq!(
        looked_up.as_ref().map(|a| a.trim()),
        Ok(service_ips["a"].as_str()),
        "nslookup web from a pod in a"
    );
    // A name that is only in another namespace is not found short.
    let missing = run_in_pod(&cluster, "a", "client", "nc -w 3 only-in-b 80 </dev/null");
    let missing = missing.expect_err("only-in-b resolved from namespace a");
    assert!(missing.contains("bad address"), "{missing}");

    // dnsPolicy None: exactly the dnsConfig, whose search list makes `web` the one in b.
    let resolv = run_in_pod(&cluster, "a", "custom", "cat /etc/resolv.conf").unwrap();
    assert_eq!(
        resolv,
        "nameserver 10.43.0.10\nsearch b.svc.cluster.local\noptions ndots:2\n"
    );
    let answer = run_in_pod(
        &cluster,
        "a",
        "custom",
        "nc -w 3 web 80 </dev/null | grep from",
    );
    assert_eq!(answer.as_deref().map(str::trim), Ok("from-b"), "{answer:?}");

    // The host's resolver for Default and for ClusterFirst on the host network (no cluster
    // names there); the cluster's for ClusterFirstWithHostNet.
    let host: Vec<String> = std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("nameserver "))
        .map(str::to_string)
        .collect();
    for pod in ["inherits", "host-first"] {
        let resolv = run_in_pod(&cluster, "a", pod, "cat /etc/resolv.conf").unwrap();
        let servers: Vec<&str> = resolv
            .lines()
            .filter(|l| l.starts_with("nameserver "))
            .collect();
        assert!(!servers.is_empty(), "{pod}: {resolv}");
        assert!(
            servers.iter().all(|s| host.iter().any(|h| h == s)),
            "{pod} has the host's nameservers {host:?}: {resolv}"
        );
        assert!(!resolv.contains("svc.cluster.local"), "{pod}: {resolv}");
    }
    let resolv = run_in_pod(&cluster, "a", "host-cluster", "cat /etc/resolv.conf").unwrap();
    assert_eq!(
        resolv,
        "nameserver 10.43.0.10\nsearch a.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
    );

    // Pods outside `default` are not the cluster fixture's to clean up.
    server.kubectl_ok(&["delete", "pods", "--all", "-n", "a", "--grace-period=1"]);
    server.kubectl_ok(&["delete", "pods", "--all", "-n", "b", "--grace-period=1"]);
}
