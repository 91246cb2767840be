//! `pods/attach` over the websocket channel protocol: the running container's output, live.
//!
//! The output is followed from the container's CRI log file, which its shim writes anyway,
//! rather than teed from the shim: the shim stays a single loop that never waits on a slow
//! client, the daemon needs no new channel to it, and an attach survives a daemon restart
//! because the file does. The cost is up to one poll interval of latency.
//!
//! Stdin goes the other way through a pipe: a `stdin: true` container's stdin is a pipe whose
//! writer the shim holds and hands to each attach as a file descriptor (for `stdinOnce`, the
//! only writer, to the first attach), so the bytes never pass through the shim's loop. A
//! `tty: true` container's shim hands out its pty master instead: input goes to the terminal
//! and the client's resize messages set the terminal's size.

use std::path::PathBuf;
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::channel;
use super::node::PodNode;
use super::StreamOptions;
use crate::api::{ApiError, ApiResult};
use crate::runtime::session::{AttachInput, EndOfInput, Resizer};

/// How often the log file is checked for new output.
const POLL: Duration = Duration::from_millis(100);

/// Handles `GET|POST pods/<name>/attach`.
pub async fn serve(
    node: &PodNode,
    namespace: &str,
    name: &str,
    mut request: Request,
) -> ApiResult<Response> {
    super::check_method(&request, "pods/attach")?;
    let options = StreamOptions::parse(request.uri().query());
    if !(options.stdin || options.stdout || options.stderr) {
        return Err(ApiError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    let pod = node.pod(namespace, name).await?;
    let container = super::choose_container(&pod, options.container.as_deref())?;
    super::check_running(&pod, &container)?;
    let logs_dir = node.logs_dir.clone();
    let log_options = super::super::logs::LogOptions {
        container: Some(container.clone()),
        ..Default::default()
    };
    let (path, _) = super::super::logs::locate(&logs_dir, &pod, &log_options)?;
    let protocol = super::websocket_protocol(&request)?;
    let input = match options.stdin || options.tty {
        true => {
            let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
            node.runtime
                .attach_stdin(uid, &container)
                .await
                .map_err(|e| ApiError::internal(format!("attach to {container}: {e}")))?
        }
        false => None,
    };
    let key = request
        .headers()
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let running = Liveness {
        node: node.clone(),
        namespace: namespace.to_string(),
        name: name.to_string(),
        container,
    };
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let io = hyper_util::rt::TokioIo::new(upgraded);
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                run(ws, protocol, path, running, input, options).await;
            }
            Err(e) => tracing::debug!("attach upgrade failed: {e}"),
        }
    });
    super::switching_protocols(&key, protocol)
}

/// Whether the attached container still runs.
struct Liveness {
    node: PodNode,
    namespace: String,
    name: String,
    container: String,
}

impl Liveness {
    async fn alive(&self) -> bool {
        self.node
            .container_running(&self.namespace, &self.name, &self.container)
            .await
    }
}

async fn run<S>(
    ws: WebSocketStream<S>,
    protocol: channel::Protocol,
    path: PathBuf,
    running: Liveness,
    input: Option<AttachInput>,
    options: StreamOptions,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, incoming) = ws.split();
    // Only output from now on, as attaching to a live process shows. Taken before any stdin
    // is passed on, or the answer to it could land before this point and be skipped.
    let mut offset = tokio::fs::metadata(&path)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    // The client's messages are read by their own task, so a container slow to read its
    // stdin never holds its output back; the task ends when the client leaves.
    let (stdin, resizer, end_of_input) = match input {
        Some(input) => (Some(input.stdin), input.resizer, input.end_of_input),
        None => (None, None, None),
    };
    let stdin = stdin.filter(|_| options.stdin);
    let end_of_input = end_of_input.filter(|_| options.stdin);
    let mut client = tokio::spawn(read_client(
        incoming,
        protocol,
        stdin,
        resizer,
        end_of_input,
    ));
    let mut carry = Vec::new();
    let mut ticker = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            _ = &mut client => return,
            _ = ticker.tick() => {}
        }
        // Read "running" before the file: output written before the exit is then never missed.
        let alive = running.alive().await;
        let new = read_from(&path, &mut offset).await;
        carry.extend_from_slice(&new);
        let cut = carry.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let complete: Vec<u8> = carry.drain(..cut).collect();
        for (stream, bytes) in output(&complete, &options) {
            if sink
                .send(Message::binary(channel::frame(stream, &bytes)))
                .await
                .is_err()
            {
                return;
            }
        }
        if !alive {
            let status = serde_json::to_vec(&channel::exit_status(0, &[])).unwrap_or_default();
            let _ = sink
                .send(Message::binary(channel::frame(channel::ERROR, &status)))
                .await;
            let _ = sink
                .send(Message::Close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                })))
                .await;
            let _ = sink.close().await;
            return;
        }
    }
}

/// Reads the client's messages until it leaves, writing stdin to the container's pipe; the
/// pipe is closed when the client closes its stdin (v5) or leaves, so the container sees end
/// of file (a `stdinOnce` terminal is sent its end-of-file character instead).
async fn read_client<S>(
    mut incoming: futures::stream::SplitStream<WebSocketStream<S>>,
    protocol: channel::Protocol,
    mut stdin: Option<tokio::net::unix::pipe::Sender>,
    resizer: Option<Resizer>,
    mut end_of_input: Option<EndOfInput>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    while let Some(Ok(message)) = incoming.next().await {
        let data = match message {
            Message::Binary(data) => data,
            Message::Close(_) => break,
            _ => continue,
        };
        match channel::parse(protocol, &data) {
            channel::Incoming::Stdin(bytes) => {
                if let Some(pipe) = stdin.as_mut() {
                    if pipe.write_all(&bytes).await.is_err() {
                        stdin = None;
                    }
                }
            }
            channel::Incoming::Close(channel::STDIN) => {
                stdin = None;
                if let Some(end) = end_of_input.take() {
                    end.send();
                }
            }
            channel::Incoming::Resize(size) => {
                if let Some(resizer) = &resizer {
                    resizer.resize(size);
                }
            }
            _ => {}
        }
    }
    // A client that leaves without closing its stdin (v4 has no way to) ended its input too.
    if let Some(end) = end_of_input {
        end.send();
    }
}

/// What was appended to the log since `offset`; a shorter file was rotated and is read from
/// its start.
async fn read_from(path: &PathBuf, offset: &mut u64) -> Vec<u8> {
    let Ok(mut file) = tokio::fs::File::open(path).await else {
        return Vec::new();
    };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    if len < *offset {
        *offset = 0;
    }
    if len == *offset || file.seek(std::io::SeekFrom::Start(*offset)).await.is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes).await;
    *offset += bytes.len() as u64;
    bytes
}

/// Turns whole CRI log lines into channel messages: stdout on 1, stderr on 2 (on 1 with a
/// tty), each only if asked for; partial (`P`) entries get no newline.
fn output(lines: &[u8], options: &StreamOptions) -> Vec<(u8, Vec<u8>)> {
    let mut out: Vec<(u8, Vec<u8>)> = Vec::new();
    for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let mut parts = line.splitn(4, |&b| b == b' ');
        let (Some(_time), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let content = parts.next().unwrap_or_default();
        let stream = match stream {
            b"stdout" if options.stdout || options.tty => channel::STDOUT,
            b"stderr" if options.tty => channel::STDOUT,
            b"stderr" if options.stderr => channel::STDERR,
            _ => continue,
        };
        let mut bytes = content.to_vec();
        if tag != b"P" {
            bytes.push(b'\n');
        }
        // Consecutive lines of one stream go out as one message.
        match out.last_mut() {
            Some((last, data)) if *last == stream => data.extend(bytes),
            _ => out.push((stream, bytes)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_become_stdout_and_stderr_messages_with_partials_joined() {
        let log = b"2026-01-01T00:00:00Z stdout F one\n\
                    2026-01-01T00:00:00Z stdout P tw\n\
                    2026-01-01T00:00:00Z stdout F o\n\
                    2026-01-01T00:00:01Z stderr F oops\n\
                    garbage\n";
        let both = StreamOptions {
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        assert_eq!(
            output(log, &both),
            [
                (channel::STDOUT, b"one\ntwo\n".to_vec()),
                (channel::STDERR, b"oops\n".to_vec())
            ]
        );
        let only_out = StreamOptions {
            stdout: true,
            ..Default::default()
        };
        assert_eq!(
            output(log, &only_out),
            [(channel::STDOUT, b"one\ntwo\n".to_vec())]
        );
        let tty = StreamOptions {
            stdout: true,
            tty: true,
            ..Default::default()
        };
        assert_eq!(
            output(log, &tty),
            [(channel::STDOUT, b"one\ntwo\noops\n".to_vec())]
        );
    }

    #[tokio::test]
    async fn only_output_appended_since_the_last_read_is_returned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, "a\n").unwrap();
        let mut offset = 2;
        assert!(read_from(&path, &mut offset).await.is_empty());
        std::fs::write(&path, "a\nb\n").unwrap();
        assert_eq!(read_from(&path, &mut offset).await, b"b\n");
        // Rotated: the new file is shorter and is read from its start.
        std::fs::write(&path, "c\n").unwrap();
        assert_eq!(read_from(&path, &mut offset).await, b"c\n");
        assert_eq!(offset, 2);
    }
}
