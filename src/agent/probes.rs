//! Container probes: exec through the shim, tcpSocket, httpGet and grpc from inside the pod's
//! network namespace (a fresh thread joins it, so no shared thread ever changes namespace,
//! and no tool needs to exist in the image).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::runtime::{ContainerRuntime, ShimRuntime};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

/// Where a probe goes.
pub struct Target<'a> {
    pub runtime: &'a ShimRuntime,
    pub pod_uid: &'a str,
    pub container: &'a str,
    pub netns: Option<&'a Path>,
    pub pod_ip: &'a str,
    pub container_spec: &'a Container,
}

/// A probe's memory for one container instance.
#[derive(Debug, Clone, Default)]
pub struct ProbeState {
    first_seen: Option<Instant>,
    last_run: Option<Instant>,
    successes: i32,
    failures: i32,
    /// The result that counts (thresholds applied); `None` before one is known.
    result: Option<bool>,
}

/// What a probe run came to.
#[derive(Debug, Default)]
pub struct Outcome {
    /// When the probe is due again.
    pub next: Duration,
    /// The failure threshold was just reached (liveness and startup act on this).
    pub failed_for_good: Option<String>,
    /// A failure worth an event (readiness).
    pub failure_to_report: Option<String>,
}

impl ProbeState {
    /// A re-adopted container keeps the readiness it had.
    pub fn seed_ready(&mut self, ready: bool) {
        if ready {
            self.result = Some(true);
        }
    }

    pub fn is_ready(&self) -> bool {
        self.result == Some(true)
    }

    pub fn succeeded(&self) -> bool {
        self.result == Some(true)
    }

    /// Runs `probe` if its period has passed (after the initial delay).
    pub async fn run_if_due(
        &mut self,
        kind: ProbeKind,
        probe: &Probe,
        target: &Target<'_>,
        _started_at: &str,
    ) -> Outcome {
        let now = Instant::now();
        let first_seen = *self.first_seen.get_or_insert(now);
        let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
        let initial = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        let due = match self.last_run {
            None => first_seen + initial,
            Some(last) => last + period,
        };
        if now < due {
            return Outcome {
                next: due - now,
                ..Outcome::default()
            };
        }
        self.last_run = Some(now);
        let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
        let result = run(probe, target, timeout).await;
        let success_threshold = match kind {
            ProbeKind::Readiness => probe.success_threshold.unwrap_or(1).max(1),
            _ => 1,
        };
        let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1);
        let mut outcome = Outcome {
            next: period,
            ..Outcome::default()
        };
        match result {
            Ok(()) => {
                self.failures = 0;
                self.successes += 1;
                if self.successes >= success_threshold {
                    self.result = Some(true);
                }
            }
            Err(why) => {
                self.successes = 0;
                self.failures += 1;
                if kind == ProbeKind::Readiness {
                    outcome.failure_to_report = Some(why.clone());
                }
                if self.failures >= failure_threshold {
                    self.result = Some(false);
                    if kind != ProbeKind::Readiness {
                        outcome.failed_for_good = Some(why);
                    }
                }
            }
        }
        outcome
    }
}

/// One probe attempt: `Err` carries why it failed.
pub async fn run(probe: &Probe, target: &Target<'_>, timeout: Duration) -> Result<(), String> {
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        return match target
            .runtime
            .exec_sync(target.pod_uid, target.container, command, timeout)
            .await
        {
            Ok(r) if r.timed_out => Err(format!("command timed out after {timeout:?}")),
            Ok(r) if r.exit_code == 0 => Ok(()),
            Ok(r) => Err(format!(
                "command exited with {}: {}{}",
                r.exit_code, r.stdout, r.stderr
            )),
            Err(e) => Err(e.to_string()),
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = resolve_port(&tcp.port, target.container_spec)?;
        let host = tcp
            .host
            .clone()
            .unwrap_or_else(|| target.pod_ip.to_string());
        let netns = target.netns.map(Path::to_path_buf);
        return in_netns(netns, move || connect(&host, port, timeout).map(drop)).await;
    }
    if let Some(http) = &probe.http_get {
        let port = resolve_port(&http.port, target.container_spec)?;
        let host = http
            .host
            .clone()
            .unwrap_or_else(|| target.pod_ip.to_string());
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let headers: Vec<(String, String)> = http
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        let netns = target.netns.map(Path::to_path_buf);
        return in_netns(netns, move || {
            http_get(&host, port, &path, &headers, timeout)
        })
        .await;
    }
    if let Some(grpc) = &probe.grpc {
        let port = u16::try_from(grpc.port).map_err(|_| format!("invalid port {}", grpc.port))?;
        let service = grpc.service.clone().unwrap_or_default();
        let netns = target.netns.map(Path::to_path_buf);
        return super::grpc_probe::check(netns, target.pod_ip.to_string(), port, service, timeout)
            .await;
    }
    // Validation requires one handler; a probe without one has nothing to fail.
    Ok(())
}

fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("invalid port {p}")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("no port named {name:?}")),
    }
}

/// Runs `f` on a new thread that has joined `netns` (the thread ends with `f`, so the
/// namespace change never leaks to a thread that runs anything else).
pub(super) async fn in_netns<T: Send + 'static>(
    netns: Option<PathBuf>,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("berth-probe".into())
        .spawn(move || {
            let result = (|| {
                if let Some(path) = netns {
                    let file = std::fs::File::open(&path)
                        .map_err(|e| format!("open {}: {e}", path.display()))?;
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(|e| format!("join {}: {e}", path.display()))?;
                }
                f()
            })();
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        return Err(format!("cannot start a probe thread: {e}"));
    }
    rx.await
        .unwrap_or_else(|_| Err("probe thread ended without an answer".into()))
}

pub(super) fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let addr: SocketAddr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("no address for {host}"))?;
    TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("dial tcp {addr}: {e}"))
}

/// A minimal HTTP/1.1 GET; success is a status in 200..400, as kubelet's.
fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<(), String> {
    let mut stream = connect(host, port, timeout)?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.35\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("write request: {e}"))?;
    let mut head = [0u8; 64];
    let n = stream
        .read(&mut head)
        .map_err(|e| format!("read response: {e}"))?;
    let code = parse_status_code(&head[..n]).ok_or("malformed HTTP response")?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

fn parse_status_code(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head).ok()?;
    let mut words = text.split_whitespace();
    if !words.next()?.starts_with("HTTP/") {
        return None;
    }
    words.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_give_their_code() {
        assert_eq!(parse_status_code(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status_code(b"HTTP/1.0 500 Oops"), Some(500));
        assert_eq!(parse_status_code(b"garbage"), None);
    }

    #[test]
    fn named_ports_resolve_through_the_container() {
        let c: Container = serde_json::from_value(serde_json::json!(
            {"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}))
        .unwrap();
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c),
            Ok(8080)
        );
        assert_eq!(resolve_port(&IntOrString::Int(80), &c), Ok(80));
        assert!(resolve_port(&IntOrString::String("nope".into()), &c).is_err());
    }

    #[tokio::test]
    async fn http_and_tcp_probes_reach_a_local_server() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for answer in ["HTTP/1.1 200 OK\r\n\r\n", "HTTP/1.1 503 No\r\n\r\n"] {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
                s.write_all(answer.as_bytes()).unwrap();
            }
        });
        let t = Duration::from_secs(2);
        let ok = in_netns(None, move || http_get("127.0.0.1", port, "/", &[], t)).await;
        assert_eq!(ok, Ok(()));
        let failed = in_netns(None, move || http_get("127.0.0.1", port, "/", &[], t)).await;
        assert!(failed.unwrap_err().contains("503"));
        server.join().unwrap();
        let closed = in_netns(None, move || connect("127.0.0.1", port, t).map(drop)).await;
        assert!(closed.is_err(), "the listener is gone");
    }
}
