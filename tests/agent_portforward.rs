//! `kubectl port-forward` and the Python client's port-forward against a real pod: kubectl
//! v1.35 tunnels SPDY/3.1 inside a websocket (or, told not to, upgrades to plain SPDY), the
//! Python client speaks the v4 websocket channel protocol; berth connects inside the pod's
//! network namespace.
//!
//! Needs root (network namespaces, cgroups, mounts), as in CI.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::cluster::Cluster;
use common::inside::in_netns;
use common::netns::Netns;
use common::tools;
use common::wait_until;

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A running `kubectl port-forward`, its output lines arriving on channels; killed on drop.
struct PortForward {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl PortForward {
    fn start(cluster: &Cluster, args: &[&str], websockets: bool) -> PortForward {
        let mut cmd = cluster.server.command(&tools::kubectl());
        cmd.arg("port-forward")
            .args(args)
            .env(
                "KUBECTL_PORT_FORWARD_WEBSOCKETS",
                if websockets { "true" } else { "false" },
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run kubectl port-forward");
        let lines = |stream: Box<dyn Read + Send>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let stdout = lines(Box::new(child.stdout.take().unwrap()));
        let stderr = lines(Box::new(child.stderr.take().unwrap()));
        PortForward {
            child,
            stdout,
            stderr,
        }
    }

    /// Waits for a line of stdout containing `text`.
    fn wait_stdout(&self, text: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.stdout.recv_timeout(left) {
                Ok(line) if line.contains(text) => return,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        let errors: Vec<String> = self.stderr.try_iter().collect();
        panic!("kubectl port-forward never printed {text:?}: {seen:?} {errors:?}");
    }

    /// Collects stderr until a line contains `text` (or 30 s pass).
    fn wait_stderr(&self, text: &str) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(text);
                    seen.push(line);
                    if found {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        seen
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `message` on a new connection to 127.0.0.1:`port` in the test's namespace, closes
/// the sending side and returns everything the other end answers.
fn round_trip(netns: &str, port: u16, messages: &[&str]) -> Vec<String> {
    let messages: Vec<String> = messages.iter().map(|m| m.to_string()).collect();
    in_netns(netns, move || {
        // Every connection is open before any is finished: they are forwarded side by side.
        let mut conns: Vec<TcpStream> = messages
            .iter()
            .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect to the forward"))
            .collect();
        for (conn, message) in conns.iter_mut().zip(&messages) {
            conn.set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            conn.write_all(message.as_bytes()).unwrap();
        }
        conns
            .iter_mut()
            .map(|conn| {
                conn.shutdown(Shutdown::Write).unwrap();
                let mut answer = String::new();
                let _ = conn.read_to_string(&mut answer);
                answer
            })
            .collect()
    })
}

fn start_echo_pod(cluster: &Cluster) {
    // 8080 echoes what it is sent, 8081 greets; nothing listens on 9.
    cluster.create(cluster.pod(
        "web",
        serde_json::json!({"containers": [{
            "name": "main", "image": "busybox",
            "command": ["sh", "-c", "nc -ll -p 8080 -e cat & nc -ll -p 8081 -e echo hi & wait"]
        }]}),
    ));
    cluster.wait_for("web", "Running", |p| {
        p["status"]["containerStatuses"][0]["state"]["running"].is_object()
    });
    // The listeners start right after the container does.
    std::thread::sleep(Duration::from_millis(500));
}

#[test]
fn kubectl_port_forward_reaches_pod_ports_over_websocket_spdy_and_plain_spdy() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    start_echo_pod(&cluster);
    let berth = cluster.server.pid().unwrap();

    for websockets in [true, false] {
        let forward = PortForward::start(
            &cluster,
            &["pod/web", "18080:8080", "18081:8081", "18009:9"],
            websockets,
        );
        forward.wait_stdout("Forwarding from 127.0.0.1:18081 -> 8081");
        // Warm up once so lazily made descriptors and threads do not count as leaks.
        assert_eq!(round_trip(&ns.name, 18081, &[""]), ["hi\n"]);
        let fds_before = fd_count(berth);
        let threads_before = thread_count(berth);

        assert_eq!(
            round_trip(&ns.name, 18080, &["one\n", "two\n"]),
            ["one\n", "two\n"],
            "two connections at once, each answered on its own (websockets: {websockets})"
        );
        let big = "x".repeat(300_000) + "\n";
        assert_eq!(
            round_trip(&ns.name, 18080, &[&big])[0].len(),
            big.len(),
            "more than a flow-control window passes"
        );
        assert_eq!(round_trip(&ns.name, 18081, &[""]), ["hi\n"]);

        // Nothing listens on port 9: the connection closes and kubectl reports the kubelet's
        // error. (kubectl v1.35 then ends the whole session, as it does against a kubelet.)
        assert_eq!(round_trip(&ns.name, 18009, &["x"]), [""]);
        let errors = forward.wait_stderr("error forwarding port 9");
        assert!(
            errors
                .iter()
                .any(|l| l.contains("error forwarding port 9 to pod default/web")
                    && l.to_lowercase().contains("connection refused")),
            "{errors:?}"
        );
        drop(forward);

        // No descriptor or thread outlives the forwards.
        let settled = wait_until(Duration::from_secs(10), || {
            fd_count(berth) <= fds_before && thread_count(berth) <= threads_before + 2
        });
        assert!(
            settled,
            "berth holds {} fds (was {fds_before}) and {} threads (was {threads_before})",
            fd_count(berth),
            thread_count(berth)
        );
    }
}

#[test]
fn the_python_client_forwards_with_the_websocket_channel_protocol() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    start_echo_pod(&cluster);
    let script = r#"
import socket
from kubernetes import client, config
from kubernetes.stream import portforward
config.load_kube_config()
api = client.CoreV1Api()

def talk(port, send):
    pf = portforward(api.connect_get_namespaced_pod_portforward, "web", "default", ports=str(port))
    s = pf.socket(port)
    s.settimeout(20)
    if send:
        s.sendall(send)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
        if send and data.endswith(b"\n"):
            break
    s.close()
    return data, pf.error(port)

data, err = talk(8081, b"")
print("greeting:", data, err)
data, err = talk(8080, b"ping\n")
print("echo:", data, err)
data, err = talk(9, b"")
print("closed:", data, err)
"#;
    let out = cluster
        .server
        .command(std::path::Path::new("python3"))
        .args(["-c", script])
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("greeting: b'hi\\n' None"), "{stdout}");
    assert!(stdout.contains("echo: b'ping\\n' None"), "{stdout}");
    assert!(
        stdout.contains("closed: b'' error forwarding port 9 to pod default/web"),
        "{stdout}"
    );
}

/// Reads from `stream` until a newline, end of file or 20 s.
async fn read_line<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> String {
    use tokio::io::AsyncReadExt;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !data.ends_with(b"\n") {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => data.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&data).into_owned()
}

#[test]
fn kube_rs_forwards_with_the_websocket_channel_protocol() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::Api;
    use tokio::io::AsyncWriteExt;

    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    start_echo_pod(&cluster);
    let kubeconfig = cluster.server.kubeconfig_path().to_path_buf();
    let (greeting, echo, big, error) =
        common::inside::block_on_in_netns(&ns.name, move || async move {
            let client = common::inside::kube_client(&kubeconfig).await;
            let pods: Api<Pod> = Api::namespaced(client, "default");
            // Two ports on one connection, each its own pair of channels.
            let mut forward = pods
                .portforward("web", &[8081, 8080])
                .await
                .expect("port-forward upgrades");
            let mut greeter = forward.take_stream(8081).expect("a stream for 8081");
            let mut echoer = forward.take_stream(8080).expect("a stream for 8080");
            let greeting = read_line(&mut greeter).await;
            echoer.write_all(b"ping\n").await.expect("send");
            let echo = read_line(&mut echoer).await;
            let payload = "y".repeat(200_000) + "\n";
            echoer.write_all(payload.as_bytes()).await.expect("send");
            let mut big = 0;
            while big < payload.len() {
                let line = read_line(&mut echoer).await;
                if line.is_empty() {
                    break;
                }
                big += line.len();
            }
            drop((greeter, echoer));
            forward.abort();

            // Nothing listens on port 9: the error channel says so.
            let mut refused = pods
                .portforward("web", &[9])
                .await
                .expect("port-forward upgrades");
            let error = refused.take_error(9).expect("an error channel for 9");
            let mut stream = refused.take_stream(9).expect("a stream for 9");
            let _ = stream.write_all(b"x").await;
            let error = tokio::time::timeout(Duration::from_secs(20), error)
                .await
                .ok()
                .flatten();
            refused.abort();
            (greeting, echo, big, error)
        });
    assert_eq!(greeting, "hi\n");
    assert_eq!(echo, "ping\n");
    assert_eq!(big, 200_001, "more than a flow-control window passes");
    let error = error.expect("an error for port 9");
    assert!(
        error.contains("error forwarding port 9 to pod default/web")
            && error.to_lowercase().contains("connection refused"),
        "{error}"
    );
}
