//! `pods/portforward`: TCP connections to a pod's ports, in the three ways clients ask for them.
//!
//! - kubectl v1.35 tunnels SPDY/3.1 inside a websocket (subprotocol
//!   `SPDY/3.1+portforward.k8s.io`; each binary message carries raw SPDY bytes), and falls back
//!   to a plain `Upgrade: SPDY/3.1` connection. Over SPDY each forwarded connection is a pair of
//!   streams the client opens, sharing a `requestid` header: an error stream and a data stream.
//! - The Python client and kube-rs speak the websocket channel protocol (`v4.channel.k8s.io`):
//!   the `ports` query lists the ports, port i has data channel 2i and error channel 2i+1, and
//!   each channel's first server message is the port number (2 bytes, little endian).
//!
//! The connection is made to 127.0.0.1:<port> inside the pod's network namespace, from a
//! short-lived thread that joined it (a tokio worker must never switch namespaces); the socket
//! stays in the pod's namespace after the thread is gone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use http::header;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::node::PodNode;
use super::spdy::{self, Codec, Frame, FLAG_FIN};
use crate::api::{ApiError, ApiResult};

const PORTFORWARD_PROTOCOL: &str = "portforward.k8s.io";
const SPDY_TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
const CHANNEL_PROTOCOL: &str = "v4.channel.k8s.io";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CHUNK: usize = 32 * 1024;

/// How the client wants its connections carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    SpdyOverWebsocket,
    Spdy,
    Channels,
}

/// The pod whose ports are reached.
#[derive(Debug, Clone)]
struct Target {
    /// `None`: a hostNetwork pod, reached in the node's own namespace.
    netns: Option<PathBuf>,
    pod: String,
    uid: String,
}

impl Target {
    async fn connect(&self, port: u16) -> Result<TcpStream, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let Some(netns) = &self.netns else {
            return tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
                .await
                .map_err(|_| "connection timed out".to_string())?
                .map_err(|e| e.to_string());
        };
        let socket = crate::network::netns::run_in(netns, move || {
            std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
                .map_err(|e| crate::network::NetError::io(format!("{addr}"), e))
        })
        .await
        .map_err(|e| match e {
            crate::network::NetError::Io { source, .. } => {
                format!("failed to connect to {addr} inside the pod's network namespace: {source}")
            }
            other => other.to_string(),
        })?;
        socket.set_nonblocking(true).map_err(|e| e.to_string())?;
        TcpStream::from_std(socket).map_err(|e| e.to_string())
    }

    /// The message kubectl prints after "an error occurred forwarding ...", worded as the
    /// kubelet does.
    fn error_message(&self, port: u16, cause: &str) -> String {
        format!(
            "error forwarding port {port} to pod {}, uid {}: {cause}",
            self.pod, self.uid
        )
    }
}

/// Handles `GET|POST pods/<name>/portforward`.
pub async fn serve(
    node: &PodNode,
    namespace: &str,
    name: &str,
    mut request: Request,
) -> ApiResult<Response> {
    super::check_method(&request, "pods/portforward")?;
    let mode = mode(&request)?;
    let ports = parse_ports(request.uri().query())?;
    if mode == Mode::Channels && ports.is_empty() {
        return Err(ApiError::bad_request(
            "query parameter \"port\" is required",
        ));
    }
    let pod = node.pod(namespace, name).await?;
    check_running(&pod)?;
    let runtime = node.runtime.clone();
    let uid = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let netns = runtime
        .pod_netns(&uid)
        .await
        .map_err(|e| ApiError::internal(format!("pod {namespace}/{name}: {e}")))?;
    let target = Target {
        netns,
        pod: format!("{namespace}/{name}"),
        uid,
    };
    let key = request
        .headers()
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => hyper_util::rt::TokioIo::new(upgraded),
            Err(e) => return tracing::debug!("port-forward upgrade failed: {e}"),
        };
        match mode {
            Mode::Spdy => spdy_session(upgraded, target).await,
            Mode::SpdyOverWebsocket => {
                let ws = WebSocketStream::from_raw_socket(upgraded, Role::Server, None).await;
                spdy_tunnel(ws, target).await
            }
            Mode::Channels => {
                let ws = WebSocketStream::from_raw_socket(upgraded, Role::Server, None).await;
                channel_session(ws, ports, target).await
            }
        }
    });
    let builder = Response::builder()
        .status(http::StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade");
    let builder = match mode {
        Mode::Spdy => builder
            .header(header::UPGRADE, "SPDY/3.1")
            .header("X-Stream-Protocol-Version", PORTFORWARD_PROTOCOL),
        Mode::SpdyOverWebsocket | Mode::Channels => {
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let protocol = match mode {
                Mode::SpdyOverWebsocket => SPDY_TUNNEL_PROTOCOL,
                _ => CHANNEL_PROTOCOL,
            };
            builder
                .header(header::UPGRADE, "websocket")
                .header(header::SEC_WEBSOCKET_ACCEPT, accept)
                .header(header::SEC_WEBSOCKET_PROTOCOL, protocol)
        }
    };
    builder
        .body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn header_values<'a>(request: &'a Request, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    request
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

fn mode(request: &Request) -> ApiResult<Mode> {
    let upgrade: Vec<&str> = header_values(request, header::UPGRADE.as_str()).collect();
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket"))
        && request.headers().contains_key("sec-websocket-key")
    {
        let offered: Vec<&str> =
            header_values(request, header::SEC_WEBSOCKET_PROTOCOL.as_str()).collect();
        if offered.contains(&SPDY_TUNNEL_PROTOCOL) {
            return Ok(Mode::SpdyOverWebsocket);
        }
        // Port-forward has no v5 of its own: v5 clients (kube-rs) also offer v4.
        if offered.contains(&CHANNEL_PROTOCOL) {
            return Ok(Mode::Channels);
        }
        return Err(ApiError::bad_request(format!(
            "none of the offered websocket subprotocols is supported ({SPDY_TUNNEL_PROTOCOL}, {CHANNEL_PROTOCOL})"
        )));
    }
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
        let versions: Vec<&str> = header_values(request, "x-stream-protocol-version").collect();
        if !versions.is_empty() && !versions.contains(&PORTFORWARD_PROTOCOL) {
            return Err(ApiError::forbidden(format!(
                "unable to upgrade: unable to negotiate protocol: client supports {versions:?}, server supports [{PORTFORWARD_PROTOCOL}]"
            )));
        }
        return Ok(Mode::Spdy);
    }
    Err(ApiError::bad_request(
        "Upgrade request required: port-forward streams over SPDY/3.1 or websocket",
    ))
}

/// The `ports` query: repeated or comma separated, each 1–65535.
fn parse_ports(raw: Option<&str>) -> ApiResult<Vec<u16>> {
    let mut ports = Vec::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if k != "ports" {
            continue;
        }
        for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match p.parse::<u16>() {
                Ok(port) if port > 0 => ports.push(port),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "unable to parse \"{p}\" as a port: port out of range or not a number"
                    )))
                }
            }
        }
    }
    Ok(ports)
}

fn check_running(pod: &serde_json::Value) -> ApiResult<()> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    if pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    if phase != "Running" {
        return Err(ApiError::bad_request(format!(
            "unable to forward port because pod is not running. Current status={phase}"
        )));
    }
    Ok(())
}

/// What the client sent on a data stream, for the task forwarding it.
enum ToPod {
    Data(Vec<u8>),
    /// The client will send nothing more: half-close the pod connection.
    Fin,
}

/// The two streams of one forwarded connection, gathered as their SYN_STREAMs arrive.
#[derive(Default)]
struct Pair {
    port: u16,
    error: Option<u32>,
    data: Option<(u32, mpsc::Receiver<ToPod>)>,
}

/// Serves one SPDY connection: answers every stream the client opens and forwards each
/// error+data pair to the pod. Returns when the client goes away; every forward ends with it.
async fn spdy_session<S>(io: S, target: Target)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(io);
    let (out, out_rx) = mpsc::channel::<Frame>(64);
    let writer = tokio::spawn(write_frames(writer, out_rx));
    let mut codec = Codec::new();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; CHUNK];
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut data_streams: HashMap<u32, mpsc::Sender<ToPod>> = HashMap::new();
    let mut forwards = JoinSet::new();
    'session: loop {
        loop {
            let frame = match codec.decode(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("port-forward: bad SPDY input: {e}");
                    let _ = out
                        .send(Frame::GoAway {
                            last_good_stream_id: 0,
                            status: spdy::RST_PROTOCOL_ERROR,
                        })
                        .await;
                    break 'session;
                }
            };
            match frame {
                Frame::SynStream {
                    stream_id, headers, ..
                } => {
                    let Some((port, kind, request_id)) = stream_role(&headers, stream_id) else {
                        let _ = out
                            .send(Frame::RstStream {
                                stream_id,
                                status: spdy::RST_PROTOCOL_ERROR,
                            })
                            .await;
                        continue;
                    };
                    let _ = out
                        .send(Frame::SynReply {
                            stream_id,
                            flags: 0,
                            headers: Vec::new(),
                        })
                        .await;
                    let pair = pairs.entry(request_id.clone()).or_default();
                    pair.port = port;
                    if kind == StreamKind::Error {
                        pair.error = Some(stream_id);
                    } else {
                        let (tx, rx) = mpsc::channel(16);
                        data_streams.insert(stream_id, tx);
                        pair.data = Some((stream_id, rx));
                    }
                    let complete = pairs
                        .get(&request_id)
                        .is_some_and(|p| p.error.is_some() && p.data.is_some());
                    // Only a complete pair leaves the map: a half one waits for its partner.
                    if let Some(pair) = complete.then(|| pairs.remove(&request_id)).flatten() {
                        if let (Some(error), Some((data, rx))) = (pair.error, pair.data) {
                            let forward =
                                forward(target.clone(), pair.port, error, data, rx, out.clone());
                            forwards.spawn(forward);
                        }
                    }
                }
                Frame::Data {
                    stream_id,
                    flags,
                    data,
                } => {
                    let Some(tx) = data_streams.get(&stream_id) else {
                        continue;
                    };
                    let mut gone = !data.is_empty() && tx.send(ToPod::Data(data)).await.is_err();
                    if flags & FLAG_FIN != 0 {
                        let _ = tx.send(ToPod::Fin).await;
                        gone = true;
                    }
                    if gone {
                        data_streams.remove(&stream_id);
                    }
                }
                // Dropping the sender without a Fin tells the forward the stream was reset.
                Frame::RstStream { stream_id, .. } => {
                    data_streams.remove(&stream_id);
                }
                Frame::Ping { id } => {
                    let _ = out.send(Frame::Ping { id }).await;
                }
                Frame::GoAway { .. } => break 'session,
                _ => {}
            }
            // Finished forwards are reaped as we go, so a long session does not pile them up.
            while forwards.try_join_next().is_some() {}
        }
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    forwards.shutdown().await;
    drop(out);
    let _ = writer.await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamKind {
    Error,
    Data,
}

/// The port, kind and request id a SYN_STREAM's headers name. Clients before the `requestid`
/// header paired an error stream with the data stream opened right after it (ids rise by 2).
fn stream_role(headers: &spdy::Headers, stream_id: u32) -> Option<(u16, StreamKind, String)> {
    let port = spdy::header(headers, "port")?.parse::<u16>().ok()?;
    let kind = match spdy::header(headers, "streamtype")? {
        "error" => StreamKind::Error,
        "data" => StreamKind::Data,
        _ => return None,
    };
    let request_id = match spdy::header(headers, "requestid") {
        Some(id) => id.to_string(),
        None if kind == StreamKind::Error => stream_id.to_string(),
        None => stream_id.saturating_sub(2).to_string(),
    };
    Some((port, kind, request_id))
}

async fn write_frames<W: AsyncWrite + Unpin>(mut writer: W, mut frames: mpsc::Receiver<Frame>) {
    let mut codec = Codec::new();
    while let Some(frame) = frames.recv().await {
        let bytes = match codec.encode(&frame) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::debug!("port-forward: cannot encode a frame: {e}");
                break;
            }
        };
        if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() {
            break;
        }
    }
    let _ = writer.shutdown().await;
}

/// One forwarded connection: pod bytes out on the data stream, client bytes in from it; a
/// failure to connect is reported on the error stream, which is closed when all is done.
async fn forward(
    target: Target,
    port: u16,
    error_stream: u32,
    data_stream: u32,
    mut from_client: mpsc::Receiver<ToPod>,
    out: mpsc::Sender<Frame>,
) {
    let fin = |stream_id| Frame::Data {
        stream_id,
        flags: FLAG_FIN,
        data: Vec::new(),
    };
    let socket = match target.connect(port).await {
        Ok(socket) => socket,
        Err(cause) => {
            let message = target.error_message(port, &cause);
            let _ = out
                .send(Frame::Data {
                    stream_id: error_stream,
                    flags: 0,
                    data: message.into_bytes(),
                })
                .await;
            let _ = out.send(fin(error_stream)).await;
            let _ = out.send(fin(data_stream)).await;
            return;
        }
    };
    let (mut pod_reader, mut pod_writer) = socket.into_split();
    let to_client = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match pod_reader.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = out.send(fin(data_stream)).await;
                    return;
                }
                Ok(n) => {
                    let frame = Frame::Data {
                        stream_id: data_stream,
                        flags: 0,
                        data: buf[..n].to_vec(),
                    };
                    if out.send(frame).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    // Ends only on a reset (the sender dropped without a Fin); after a Fin it waits for the
    // pod's side to finish.
    let to_pod = async {
        while let Some(message) = from_client.recv().await {
            match message {
                ToPod::Data(bytes) => {
                    // A pod that stopped reading: keep draining so the session never blocks.
                    let _ = pod_writer.write_all(&bytes).await;
                }
                ToPod::Fin => {
                    let _ = pod_writer.shutdown().await;
                    std::future::pending::<()>().await;
                }
            }
        }
    };
    tokio::select! {
        _ = to_client => {}
        _ = to_pod => {}
    }
    let _ = out.send(fin(error_stream)).await;
}

/// SPDY carried in websocket binary messages, as kubectl's tunneling dialer sends it.
async fn spdy_tunnel<S>(ws: WebSocketStream<S>, target: Target)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let session = tokio::spawn(spdy_session(theirs, target));
    let (mut sink, mut incoming) = ws.split();
    let (mut from_session, mut to_session) = tokio::io::split(ours);
    let inbound = async move {
        while let Some(Ok(message)) = incoming.next().await {
            match message {
                Message::Binary(bytes) => {
                    if to_session.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        // Dropping `to_session` here is the session's end of input.
    };
    let outbound = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from_session.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = inbound => {}
        _ = outbound => {}
    }
    drop(from_session);
    let _ = session.await;
    let _ = sink.send(normal_close()).await;
    let _ = sink.close().await;
}

fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// The websocket channel protocol: one connection per requested port, opened at once.
async fn channel_session<S>(ws: WebSocketStream<S>, ports: Vec<u16>, target: Target)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use super::channel::frame;
    let (mut sink, mut incoming) = ws.split();
    let (out, mut out_rx) = mpsc::channel::<Vec<u8>>(32);
    let writer = tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            if sink.send(Message::binary(message)).await.is_err() {
                break;
            }
        }
        sink
    });
    let mut pod_writers = Vec::with_capacity(ports.len());
    let mut readers = JoinSet::new();
    for (i, &port) in ports.iter().enumerate() {
        let (data, error) = (2 * i as u8, 2 * i as u8 + 1);
        // Each channel's first message names its port.
        let _ = out.send(frame(data, &port.to_le_bytes())).await;
        let _ = out.send(frame(error, &port.to_le_bytes())).await;
        match target.connect(port).await {
            Ok(socket) => {
                let (mut pod_reader, pod_writer) = socket.into_split();
                pod_writers.push(Some(pod_writer));
                let out = out.clone();
                readers.spawn(async move {
                    let mut buf = vec![0u8; CHUNK];
                    while let Ok(n @ 1..) = pod_reader.read(&mut buf).await {
                        if out.send(frame(data, &buf[..n])).await.is_err() {
                            break;
                        }
                    }
                });
            }
            Err(cause) => {
                pod_writers.push(None);
                let message = target.error_message(port, &cause);
                let _ = out.send(frame(error, message.as_bytes())).await;
            }
        }
    }
    drop(out);
    // Until every pod connection has ended or the client leaves.
    while !readers.is_empty() {
        tokio::select! {
            _ = readers.join_next() => {}
            message = incoming.next() => {
                let bytes = match message {
                    Some(Ok(Message::Binary(bytes))) => bytes,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => continue,
                };
                let Some((&channel, data)) = bytes.split_first() else { continue };
                let index = usize::from(channel / 2);
                if channel % 2 == 0 && !data.is_empty() {
                    if let Some(Some(w)) = pod_writers.get_mut(index) {
                        let _ = w.write_all(data).await;
                    }
                }
            }
        }
    }
    readers.shutdown().await;
    drop(pod_writers);
    if let Ok(mut sink) = writer.await {
        let _ = sink.send(normal_close()).await;
        let _ = sink.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> spdy::Headers {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn syn(stream_id: u32, kind: &str, port: u16) -> Frame {
        Frame::SynStream {
            stream_id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: pairs(&[
                ("streamtype", kind),
                ("port", &port.to_string()),
                ("requestid", "0"),
            ]),
        }
    }

    fn fin(stream_id: u32) -> Frame {
        Frame::Data {
            stream_id,
            flags: FLAG_FIN,
            data: Vec::new(),
        }
    }

    /// Drives a SPDY session the way kubectl does for one connection and returns the frames
    /// the server sent on the data (3) and error (1) streams, until both are finished.
    async fn one_connection(port: u16, send: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let target = Target {
            netns: None,
            pod: "default/web".into(),
            uid: "u1".into(),
        };
        let session = tokio::spawn(spdy_session(server, target));
        let (mut rd, mut wr) = tokio::io::split(client);
        let mut codec = Codec::new();
        let mut wire = Vec::new();
        wire.extend(codec.encode(&syn(1, "error", port)).unwrap());
        wire.extend(codec.encode(&fin(1)).unwrap());
        wire.extend(codec.encode(&syn(3, "data", port)).unwrap());
        wire.extend(
            codec
                .encode(&Frame::Data {
                    stream_id: 3,
                    flags: FLAG_FIN,
                    data: send.to_vec(),
                })
                .unwrap(),
        );
        wr.write_all(&wire).await.unwrap();
        let (mut data, mut error) = (Vec::new(), Vec::new());
        let (mut data_done, mut error_done, mut replies) = (false, false, 0);
        let mut reader = Codec::new();
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 4096];
        while !(data_done && error_done) {
            while let Some(frame) = reader.decode(&mut buf).unwrap() {
                match frame {
                    Frame::SynReply { .. } => replies += 1,
                    Frame::Data {
                        stream_id: 3,
                        flags,
                        data: d,
                    } => {
                        data.extend(d);
                        data_done |= flags & FLAG_FIN != 0;
                    }
                    Frame::Data {
                        stream_id: 1,
                        flags,
                        data: d,
                    } => {
                        error.extend(d);
                        error_done |= flags & FLAG_FIN != 0;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            if data_done && error_done {
                break;
            }
            let n = tokio::time::timeout(Duration::from_secs(10), rd.read(&mut chunk))
                .await
                .expect("the server answers")
                .unwrap();
            assert!(n > 0, "the session stays up");
            buf.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(replies, 2, "both streams are answered");
        drop((rd, wr));
        tokio::time::timeout(Duration::from_secs(10), session)
            .await
            .expect("the session ends with its connection")
            .unwrap();
        (data, error)
    }

    #[tokio::test]
    async fn a_stream_pair_is_forwarded_to_the_port_both_ways() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let echo = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut conn, &mut got).unwrap();
            std::io::Write::write_all(&mut conn, &got).unwrap();
        });
        let (data, error) = one_connection(port, b"ping").await;
        echo.join().unwrap();
        assert_eq!(data, b"ping", "the client's half-close reached the pod");
        assert!(error.is_empty());
    }

    #[tokio::test]
    async fn a_port_nobody_listens_on_is_reported_on_the_error_stream() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let (data, error) = one_connection(port, b"").await;
        assert!(data.is_empty());
        let error = String::from_utf8(error).unwrap();
        assert!(
            error.starts_with(&format!(
                "error forwarding port {port} to pod default/web, uid u1: "
            )),
            "{error}"
        );
    }

    #[test]
    fn ports_may_be_repeated_or_comma_separated() {
        assert_eq!(
            parse_ports(Some("ports=8080,9090&ports=53")).unwrap(),
            [8080, 9090, 53]
        );
        assert!(parse_ports(Some("ports=0")).is_err());
        assert!(parse_ports(Some("ports=70000")).is_err());
        assert!(parse_ports(None).unwrap().is_empty());
    }

    #[test]
    fn streams_are_paired_by_request_id_or_by_neighbouring_ids() {
        let error = pairs(&[("streamtype", "error"), ("port", "80"), ("requestid", "4")]);
        assert_eq!(
            stream_role(&error, 1),
            Some((80, StreamKind::Error, "4".into()))
        );
        let old_error = pairs(&[("streamtype", "error"), ("port", "80")]);
        let old_data = pairs(&[("streamtype", "data"), ("port", "80")]);
        assert_eq!(stream_role(&old_error, 5).unwrap().2, "5");
        assert_eq!(stream_role(&old_data, 7).unwrap().2, "5");
        assert_eq!(stream_role(&pairs(&[("streamtype", "data")]), 1), None);
        assert_eq!(
            stream_role(&pairs(&[("streamtype", "x"), ("port", "1")]), 1),
            None
        );
    }

    #[test]
    fn only_running_pods_on_a_node_forward_ports() {
        let mut pod = serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"nodeName": "n"},
            "status": {"phase": "Running"}
        });
        assert!(check_running(&pod).is_ok());
        pod["status"]["phase"] = "Pending".into();
        assert!(check_running(&pod)
            .unwrap_err()
            .message
            .contains("Current status=Pending"));
    }
}
