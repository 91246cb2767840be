//! Pumps one exec session between a websocket and the process's stdio.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::channel::{self, Incoming, Protocol};
use super::StreamOptions;
use crate::runtime::session::{ExecSession, Resizer, TerminalSize};

/// After the process exits, output still in flight is waited for this long: a background
/// child holding the pipes open must not keep the session alive forever.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a tty exec waits for the client's first terminal size before it starts anyway.
const FIRST_SIZE_TIMEOUT: Duration = Duration::from_secs(1);

pub async fn run<S, F, Fut>(
    ws: WebSocketStream<S>,
    protocol: Protocol,
    start: F,
    options: StreamOptions,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(Option<TerminalSize>) -> Fut,
    Fut: std::future::Future<Output = Result<ExecSession, String>>,
{
    let (mut sink, mut incoming) = ws.split();
    // kubectl sends the terminal size first thing: start the process with it.
    let mut early = Vec::new();
    let mut first_size = None;
    if options.tty {
        let deadline = tokio::time::Instant::now() + FIRST_SIZE_TIMEOUT;
        while first_size.is_none() {
            let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, incoming.next()).await
            else {
                break;
            };
            if let Message::Binary(data) = message {
                match channel::parse(protocol, &data) {
                    Incoming::Resize(size) => first_size = Some(size),
                    _ => early.push(data),
                }
            }
        }
    }
    let mut session = match start(first_size).await {
        Ok(session) => session,
        Err(e) => {
            let status = serde_json::to_vec(&channel::error_status(&e)).unwrap_or_default();
            let _ = sink
                .send(Message::binary(channel::frame(channel::ERROR, &status)))
                .await;
            let _ = sink.send(normal_close()).await;
            return;
        }
    };
    if let (Some(size), Some(resizer)) = (first_size, session.resizer()) {
        resizer.resize(size);
    }
    if let Some(pipe) = session.stdin.as_mut() {
        for data in early {
            if let Incoming::Stdin(bytes) = channel::parse(protocol, &data) {
                let _ = pipe.write_all(&bytes).await;
            }
        }
    }
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(16);

    // Output pumps: each stream to its channel.
    let mut pumps = Vec::new();
    if let Some(stdout) = session.stdout.take() {
        let keep = options.stdout || options.tty;
        pumps.push(tokio::spawn(pump(
            stdout,
            channel::STDOUT,
            keep,
            out_tx.clone(),
        )));
    }
    if let Some(stderr) = session.stderr.take() {
        pumps.push(tokio::spawn(pump(
            stderr,
            channel::STDERR,
            options.stderr,
            out_tx.clone(),
        )));
    }
    drop(out_tx);

    // Writer: the only one touching the sink, so messages never interleave.
    let writer = tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            if sink.send(Message::binary(message)).await.is_err() {
                break;
            }
        }
        sink
    });

    // Reader: stdin and resizes from the client, until it leaves or the process exits.
    let reader = tokio::spawn(read_client(
        incoming,
        protocol,
        session.stdin.take(),
        session.resizer(),
        options.tty,
    ));
    let exit = session.wait().await;
    reader.abort();
    for pump in pumps {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, pump).await;
    }
    let status = match exit {
        Ok(code) => channel::exit_status(code, &options.command),
        Err(e) => channel::error_status(&e.to_string()),
    };
    // The writer ends once every pump has dropped its sender.
    let Ok(Ok(mut sink)) = tokio::time::timeout(DRAIN_TIMEOUT, writer).await else {
        return;
    };
    let status = serde_json::to_vec(&status).unwrap_or_default();
    let _ = sink
        .send(Message::binary(channel::frame(channel::ERROR, &status)))
        .await;
    let _ = sink.send(normal_close()).await;
    let _ = sink.close().await;
}

/// A normal closure: clients treat a close without a code (1005) as an error.
fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

async fn read_client<S>(
    mut incoming: futures::stream::SplitStream<WebSocketStream<S>>,
    protocol: Protocol,
    mut stdin: Option<tokio::net::unix::pipe::Sender>,
    resizer: Option<Resizer>,
    tty: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(Ok(message)) = incoming.next().await {
        let data = match message {
            Message::Binary(data) => data,
            Message::Close(_) => break,
            _ => continue,
        };
        match channel::parse(protocol, &data) {
            Incoming::Stdin(bytes) => {
                if let Some(pipe) = stdin.as_mut() {
                    if pipe.write_all(&bytes).await.is_err() {
                        stdin = None;
                    }
                }
            }
            Incoming::Resize(size) => {
                if let Some(r) = &resizer {
                    r.resize(size);
                }
            }
            Incoming::Close(channel::STDIN) => match (tty, stdin.as_mut()) {
                // Closing a pty master would hang up the terminal: send EOF (^D) instead.
                (true, Some(pipe)) => {
                    let _ = pipe.write_all(&[4]).await;
                }
                _ => stdin = None,
            },
            _ => {}
        }
    }
}

/// Copies `reader` to `channel` until EOF; with `keep` false the bytes are read and dropped,
/// so the process never blocks on a stream nobody asked for.
async fn pump<R: AsyncRead + Unpin>(
    mut reader: R,
    channel: u8,
    keep: bool,
    out: mpsc::Sender<Vec<u8>>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match reader.read(&mut buf).await {
            // EIO: the pty's other side closed, its end of file.
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if keep && out.send(channel::frame(channel, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}
