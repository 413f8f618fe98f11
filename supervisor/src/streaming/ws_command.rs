//! Exec and attach over WebSocket: channel 0 stdin, 1 stdout, 2 stderr, 3 the error
//! channel that carries how the command ended, 4 resize; with `v5.channel.k8s.io` the
//! client closes stdin by naming channel 0 on channel 255.

use std::future::Future;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;

use super::io::{gone_signal, Channel, CommandIo, Outcome, TermSize, OUTPUT_QUEUE};
use super::status;
use super::ws_channel::{ChannelProtocol, STREAM_CLOSE};
use super::ws_finish::{close_normally, finish};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;

/// Subprotocols served, most preferred first (the client's order decides).
pub const PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

/// Which streams the request asked for.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

pub async fn serve<S, F, Fut>(ws: WebSocketStream<S>, protocol: &str, wanted: Wanted, run: F)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(CommandIo) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let Some(framing) = ChannelProtocol::parse(protocol) else {
        return;
    };
    let (mut sink, mut source) = ws.split();

    // kubelet's readiness signal: an empty message on the lowest channel written to.
    let first = match (wanted.stdout, wanted.stderr) {
        (true, _) => STDOUT,
        (false, true) => STDERR,
        _ => ERROR,
    };
    if sink.send(framing.encode(first, &[])).await.is_err() {
        return;
    }

    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(16);
    let (resize_tx, resize_rx) = mpsc::channel::<TermSize>(4);
    let (gone_tx, gone) = gone_signal();
    let reader = tokio::spawn(async move {
        let mut stdin_tx = wanted.stdin.then_some(stdin_tx);
        while let Some(message) = source.next().await {
            let Ok(message) = message else { break };
            if message.is_close() {
                break;
            }
            let Ok(Some((channel, data))) = framing.decode(message) else {
                continue;
            };
            match channel {
                STDIN => {
                    if let Some(tx) = &stdin_tx {
                        if !data.is_empty() && tx.send(data).await.is_err() {
                            stdin_tx = None;
                        }
                    }
                }
                RESIZE => {
                    for size in serde_json::Deserializer::from_slice(&data).into_iter() {
                        let Ok(size) = size else { break };
                        let _ = resize_tx.try_send(size);
                    }
                }
                STREAM_CLOSE if framing.stream_close() && data.first() == Some(&STDIN) => {
                    stdin_tx = None
                }
                _ => {}
            }
        }
        gone_tx.fire();
        source
    });

    let (output_tx, mut output_rx) = mpsc::channel::<(Channel, Bytes)>(OUTPUT_QUEUE);
    let io = CommandIo {
        stdin: wanted.stdin.then_some(stdin_rx),
        output: output_tx,
        resize: wanted.tty.then_some(resize_rx),
        stdout: wanted.stdout,
        stderr: wanted.stderr,
        tty: wanted.tty,
        gone,
    };
    // Output is forwarded while the command runs, and to its end before the status.
    let forward = async {
        while let Some((channel, data)) = output_rx.recv().await {
            let ch = match channel {
                Channel::Stdout => STDOUT,
                Channel::Stderr => STDERR,
            };
            if sink.send(framing.encode(ch, &data)).await.is_err() {
                // Keep draining so the backend never blocks on a dead client.
                while output_rx.recv().await.is_some() {}
                return false;
            }
        }
        true
    };
    let (outcome, alive) = tokio::join!(run(io), forward);
    if alive {
        let body = if framing.status_json() {
            Some(status::json(&outcome))
        } else {
            status::text(&outcome)
        };
        if let Some(body) = body {
            let _ = sink.send(framing.encode(ERROR, &body)).await;
        }
        close_normally(&mut sink).await;
    }
    finish(sink, reader).await;
}
