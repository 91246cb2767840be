//! Hostile HTTP: slowloris connections, thousands of idle watches, oversized headers and bodies,
//! garbage and broken TLS handshakes. berth keeps answering everyone else, closes what never
//! finishes, and answers what is too large with 431/413 instead of falling over.
//!
//! Needs root (network namespaces), as in CI. Opens 2,000 idle watches; with `BERTH_LONG=1`,
//! 10,000.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::inside::block_on_in_netns;
use common::netns::Netns;
use common::server::BerthServer;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The API server's address and a TLS client that trusts its CA and presents the kubeconfig's
/// client certificate, from a kubeconfig.
#[derive(Clone)]
struct Endpoint {
    addr: SocketAddr,
    tls: TlsConnector,
}

impl Endpoint {
    fn from_kubeconfig(path: &Path) -> Endpoint {
        let config = kube::config::Kubeconfig::read_from(path).expect("read kubeconfig");
        let cluster = config.clusters[0].cluster.clone().expect("a cluster");
        let server = cluster.server.expect("a server URL");
        let addr = server
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .parse()
            .expect("server is https://ip:port");
        let ca_pem = base64::engine::general_purpose::STANDARD
            .decode(
                cluster
                    .certificate_authority_data
                    .expect("certificate-authority-data"),
            )
            .expect("CA is base64");
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&ca_pem) {
            roots.add(cert.expect("CA PEM")).expect("add the CA");
        }
        // The kubeconfig's user: read as plain YAML, its key is the admin's own.
        let yaml: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(path).expect("read kubeconfig"))
                .expect("kubeconfig is YAML");
        let user = &yaml["users"][0]["user"];
        let decode = |field: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(
                    user[field]
                        .as_str()
                        .unwrap_or_else(|| panic!("{field} in kubeconfig")),
                )
                .expect("base64")
        };
        let cert_pem = decode("client-certificate-data");
        let key_pem = decode("client-key-data");
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .expect("client certificate PEM");
        let key = PrivateKeyDer::from_pem_slice(&key_pem).expect("client key PEM");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .expect("client certificate");
        Endpoint {
            addr,
            tls: TlsConnector::from(Arc::new(tls)),
        }
    }

    async fn connect(&self) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        let name = ServerName::IpAddress(self.addr.ip().into());
        self.tls.connect(name, tcp).await
    }

    /// Sends one request on a new connection and returns the status code and the whole answer
    /// (the request must carry `Connection: close`).
    async fn exchange(&self, request: &[u8]) -> std::io::Result<(u16, String)> {
        let mut stream = self.connect().await?;
        // A server refusing an oversized request answers and hangs up before reading it all:
        // the answer is what counts, not whether every byte went out.
        let _ = stream.write_all(request).await;
        let mut answer = Vec::new();
        // A server that answers early and closes may reset the rest: what was read counts.
        let _ = stream.read_to_end(&mut answer).await;
        let text = String::from_utf8_lossy(&answer).into_owned();
        Ok((status_code(&text), text))
    }

    async fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        self.exchange(
            format!("GET {path} HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
    }
}

fn status_code(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// Times `count` GETs of a namespace, each on a new connection, and returns the sorted latencies.
async fn normal_client(endpoint: &Endpoint, count: usize) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let (code, answer) = endpoint
            .get("/api/v1/namespaces/default")
            .await
            .expect("a normal request gets through");
        assert_eq!(code, 200, "{answer}");
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    latencies.sort();
    latencies
}

const SLOWLORIS_CONNECTIONS: usize = 200;
/// hyper's header read timeout is 30 s; the margin covers a loaded machine.
const HEADER_DEADLINE: Duration = Duration::from_secs(45);

#[test]
fn slowloris_connections_do_not_hold_up_other_clients_and_are_cut_off() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let endpoint = Endpoint::from_kubeconfig(&server.kubeconfig_path());
    let (latencies, cut_off) = block_on_in_netns(&ns.name, move || async move {
        let started = Instant::now();
        let mut slow = Vec::new();
        for i in 0..SLOWLORIS_CONNECTIONS {
            let endpoint = endpoint.clone();
            slow.push(tokio::spawn(async move {
                let mut stream = endpoint.connect().await.expect("slowloris connects");
                let head = format!("GET /api HTTP/1.1\r\nHost: berth\r\nX-Slow-{i}: ");
                stream.write_all(head.as_bytes()).await.expect("send head");
                // One header byte a second until the server hangs up; how long that took.
                let mut byte = [0u8; 1];
                loop {
                    tokio::select! {
                        read = stream.read(&mut byte) => {
                            if matches!(read, Ok(0) | Err(_)) {
                                return started.elapsed();
                            }
                        }
                        () = tokio::time::sleep(Duration::from_secs(1)) => {
                            if stream.write_all(b"a").await.is_err() {
                                return started.elapsed();
                            }
                            if started.elapsed() > HEADER_DEADLINE * 2 {
                                return started.elapsed();
                            }
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let latencies = normal_client(&endpoint, 100).await;
        let mut cut_off = Vec::new();
        for task in slow {
            cut_off.push(task.await.expect("slowloris task"));
        }
        cut_off.sort();
        (latencies, cut_off)
    });
    let p50 = percentile(&latencies, 0.5);
    let p99 = percentile(&latencies, 0.99);
    let last_cut = *cut_off.last().expect("connections");
    eprintln!(
        "with {SLOWLORIS_CONNECTIONS} slowloris connections: GET p50 {p50:?} p99 {p99:?}; \
         slow connections closed after {:?}..{last_cut:?}",
        cut_off[0]
    );
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?} under slowloris");
    assert!(
        last_cut < HEADER_DEADLINE,
        "a header trickled a byte a second is cut off by the header read timeout: {last_cut:?}"
    );
}

fn watch_count() -> usize {
    if std::env::var_os("BERTH_LONG").is_some() {
        10_000
    } else {
        2_000
    }
}

#[test]
fn thousands_of_idle_watches_cost_little_and_still_deliver_events() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let pid = server.pid().expect("server pid");
    let endpoint = Endpoint::from_kubeconfig(&server.kubeconfig_path());
    let count = watch_count();
    // Settle: the first requests warm caches and start the controllers' own watches.
    server.kubectl_ok(&["get", "configmaps"]);
    std::thread::sleep(Duration::from_secs(2));
    let rss_before = rss_kib(pid);
    let fds_before = fd_count(pid);
    let kubeconfig = server.kubeconfig_path();
    let (opened_in, rss_open, fds_open, latencies, delivered) =
        block_on_in_netns(&ns.name, move || async move {
            let started = Instant::now();
            let mut watches = Vec::with_capacity(count);
            // In waves, as a fleet of clients reconnecting would.
            for wave in (0..count).collect::<Vec<_>>().chunks(200) {
                let mut opening = Vec::new();
                for _ in wave {
                    let endpoint = endpoint.clone();
                    opening.push(tokio::spawn(async move {
                        let mut stream = endpoint.connect().await.expect("watch connects");
                        stream
                            .write_all(
                                b"GET /api/v1/namespaces/default/configmaps?watch=1 HTTP/1.1\r\n\
                                  Host: berth\r\n\r\n",
                            )
                            .await
                            .expect("send the watch");
                        let mut head = vec![0u8; 4096];
                        let n = stream.read(&mut head).await.expect("watch answers");
                        let text = String::from_utf8_lossy(&head[..n]).into_owned();
                        assert_eq!(status_code(&text), 200, "{text}");
                        stream
                    }));
                }
                for task in opening {
                    watches.push(task.await.expect("open a watch"));
                }
            }
            let opened_in = started.elapsed();
            tokio::time::sleep(Duration::from_secs(2)).await;
            let rss_open = rss_kib(pid);
            let fds_open = fd_count(pid);
            let latencies = normal_client(&endpoint, 50).await;
            // An event still reaches them: a sample of the watches sees a new ConfigMap.
            let client = common::inside::kube_client(&kubeconfig).await;
            let configmaps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
                kube::Api::namespaced(client, "default");
            let cm = serde_json::from_value(serde_json::json!({"metadata": {"name": "ping"}}))
                .expect("ConfigMap");
            configmaps
                .create(&Default::default(), &cm)
                .await
                .expect("create while watched");
            let mut delivered = 0;
            for stream in watches.iter_mut().step_by((count / 20).max(1)) {
                // Events for objects that were there first (the root CA ConfigMap) come before.
                let deadline = Instant::now() + Duration::from_secs(10);
                let mut seen = Vec::new();
                let mut buf = vec![0u8; 16 * 1024];
                while !String::from_utf8_lossy(&seen).contains("\"ping\"") {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, stream.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                }
                if String::from_utf8_lossy(&seen).contains("\"ping\"") {
                    delivered += 1;
                }
            }
            (opened_in, rss_open, fds_open, latencies, delivered)
        });
    let per_watch = (rss_open.saturating_sub(rss_before)) * 1024 / count as u64;
    let p99 = percentile(&latencies, 0.99);
    eprintln!(
        "{count} idle watches opened in {opened_in:?}: RSS {rss_before} KiB -> {rss_open} KiB \
         (~{per_watch} bytes each), fds {fds_before} -> {fds_open}, GET p99 {p99:?}, \
         event delivered to {delivered}/20 sampled watches"
    );
    assert!(fds_open >= count, "every watch is open: {fds_open} fds");
    assert!(
        p99 < Duration::from_secs(1),
        "p99 {p99:?} with idle watches"
    );
    assert_eq!(delivered, 20, "every sampled watch gets the event");
    assert!(
        per_watch < 64 * 1024,
        "an idle watch costs {per_watch} bytes of RSS"
    );
}

#[test]
fn oversized_headers_and_bodies_get_431_and_413_and_the_server_stays_up() {
    let ns = Netns::new();
    let mut server = BerthServer::start(&ns);
    let endpoint = Endpoint::from_kubeconfig(&server.kubeconfig_path());
    let answers = block_on_in_netns(&ns.name, move || async move {
        let mut answers = Vec::new();
        // A 512 KiB header: over hyper's ~400 KiB read buffer.
        let header = format!(
            "GET /api HTTP/1.1\r\nHost: berth\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "h".repeat(512 * 1024)
        );
        answers.push(("huge header", endpoint.exchange(header.as_bytes()).await));
        // A declared 4 MiB body: refused on its Content-Length, before it is read.
        let declared = "POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: berth\r\n\
                        Content-Type: application/json\r\nContent-Length: 4194304\r\n\
                        Connection: close\r\n\r\n";
        answers.push((
            "declared 4 MiB body",
            endpoint.exchange(declared.as_bytes()).await,
        ));
        // A chunked body that grows past 3 MiB: refused once the limit is crossed.
        let mut chunked = b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: berth\r\n\
                            Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
                            Connection: close\r\n\r\n"
            .to_vec();
        let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "{".repeat(64 * 1024));
        for _ in 0..64 {
            chunked.extend_from_slice(chunk.as_bytes());
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        answers.push(("chunked 4 MiB body", endpoint.exchange(&chunked).await));
        let after = endpoint.get("/api/v1/namespaces/default").await;
        (answers, after)
    });
    let (answers, after) = answers;
    for (what, answer) in &answers {
        let (code, text) = answer.as_ref().expect("the server answers");
        eprintln!("{what}: {code}");
        let expected = if *what == "huge header" { 431 } else { 413 };
        assert_eq!(*code, expected, "{what}: {text:.400}");
        if expected == 413 {
            assert!(
                text.contains("\"kind\":\"Status\"") && text.contains("\"code\":413"),
                "{what}: a Status body: {text:.400}"
            );
        }
    }
    let (code, text) = after.expect("answers afterwards");
    assert_eq!(code, 200, "{text}");
    assert!(server.is_running(), "berth is still up");
}

#[test]
fn garbage_and_broken_tls_handshakes_are_dropped_without_harm() {
    let ns = Netns::new();
    let mut server = BerthServer::start(&ns);
    let endpoint = Endpoint::from_kubeconfig(&server.kubeconfig_path());
    let (silent_closed_after, after) = block_on_in_netns(&ns.name, move || async move {
        let addr = endpoint.addr;
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut random_bytes = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect()
        };
        let mut garbage: Vec<Vec<u8>> = (0..50).map(|i| random_bytes(1 + i * 97)).collect();
        // Plain HTTP on the TLS port.
        garbage.push(b"GET /api HTTP/1.1\r\nHost: berth\r\n\r\n".to_vec());
        // A TLS record header announcing a ClientHello, then nonsense.
        for len in [0u16, 5, 300, 16_384, 65_535] {
            let mut hello = vec![0x16, 0x03, 0x01];
            hello.extend_from_slice(&len.to_be_bytes());
            hello.push(0x01);
            hello.extend(random_bytes(usize::from(len).min(2000)));
            garbage.push(hello);
        }
        // An SSLv2-style hello and a TLS 1.0-only hello header with a bad version.
        garbage.push(vec![0x80, 0x2e, 0x01, 0x00, 0x02]);
        garbage.push(vec![0x16, 0x03, 0x09, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00]);
        let mut tasks = Vec::new();
        for bytes in garbage {
            tasks.push(tokio::spawn(async move {
                let mut tcp = TcpStream::connect(addr).await.expect("connect");
                let _ = tcp.write_all(&bytes).await;
                let mut sink = Vec::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut sink)).await;
            }));
        }
        // Connections that never say anything: closed by the handshake timeout.
        let started = Instant::now();
        let mut silent = Vec::new();
        for _ in 0..20 {
            silent.push(tokio::spawn(async move {
                let mut tcp = TcpStream::connect(addr).await.expect("connect");
                let mut buf = [0u8; 16];
                let _ = tokio::time::timeout(Duration::from_secs(60), tcp.read(&mut buf)).await;
                started.elapsed()
            }));
        }
        for task in tasks {
            task.await.expect("garbage task");
        }
        let mut closed_after = Duration::ZERO;
        for task in silent {
            closed_after = closed_after.max(task.await.expect("silent task"));
        }
        (
            closed_after,
            endpoint.get("/api/v1/namespaces/default").await,
        )
    });
    eprintln!("silent connections closed after {silent_closed_after:?}");
    assert!(
        silent_closed_after < Duration::from_secs(20),
        "a connection that never completes its handshake is closed: {silent_closed_after:?}"
    );
    let (code, text) = after.expect("the server answers afterwards");
    assert_eq!(code, 200, "{text}");
    assert!(server.is_running(), "berth is still up");
    assert!(
        !server.log().contains("panicked"),
        "no panic in the log:\n{}",
        server.log()
    );
}
