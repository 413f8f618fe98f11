//! Port forwarding: byte streams to ports inside a pod, over one SPDY session (a data and an
//! error stream per connection) or over a WebSocket per set of ports (channels 2i and 2i+1).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::target::with_ports;
use super::{spdy_upgrade, websocket, ClientError, ClientTls, Transport};
use crate::streaming::spdy::{Headers, Session, Stream, StreamReader, StreamWriter};
use crate::streaming::ws_channel::ChannelProtocol;

const SPDY_PROTOCOL: &str = "portforward.k8s.io";
/// v5 lets us half-close a data channel; servers without it pick v4.
const WS_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// Bytes buffered between a connection's user and its transport, each way.
const PIPE_BUFFER: usize = 64 * 1024;
const CHUNK: usize = 32 * 1024;
/// At the end of a connection, how long its data EOF waits for the error stream to end so
/// that `error()` is complete when a reader sees EOF.
const ERROR_WAIT: Duration = Duration::from_secs(1);
/// What is kept of an error stream.
const MAX_ERROR: usize = 64 * 1024;

/// Port forwarding over SPDY: one session, any number of connections.
#[derive(Debug)]
pub struct SpdyPortForward {
    session: Session,
    next_request: AtomicU64,
    drain: JoinHandle<()>,
}

impl SpdyPortForward {
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        Self::connect_with(url, &ClientTls::default()).await
    }

    /// [`SpdyPortForward::connect`] with TLS settings for https URLs.
    pub async fn connect_with(url: &str, tls: &ClientTls) -> Result<Self, ClientError> {
        let conn = spdy_upgrade::upgrade(url, &[SPDY_PROTOCOL], tls).await?;
        if conn.protocol != SPDY_PROTOCOL {
            conn.session.close().await;
            return Err(ClientError::Negotiation {
                transport: Transport::Spdy,
                reason: format!("the server chose {:?}, not {SPDY_PROTOCOL}", conn.protocol),
            });
        }
        let mut incoming = conn.incoming;
        // The server opens no streams of its own; take any it does so that none backs up.
        let drain = tokio::spawn(async move { while incoming.accept().await.is_some() {} });
        Ok(SpdyPortForward {
            session: conn.session,
            next_request: AtomicU64::new(0),
            drain,
        })
    }

    /// A new connection to `port` in the pod (error + data stream pair with a fresh requestID).
    pub async fn open(&self, port: u16) -> Result<ForwardedConn, ClientError> {
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let headers = |stream_type: &str| -> Headers {
            vec![
                ("streamType".to_string(), stream_type.to_string()),
                ("port".to_string(), port.to_string()),
                ("requestID".to_string(), request.to_string()),
            ]
        };
        let error = self.session.open(headers("error")).await?;
        let (error_reader, error_writer) = error.split();
        // Nothing is ever written on it: half-close at once, as client-go does.
        error_writer.close().await?;
        let data = match self.session.open(headers("data")).await {
            Ok(d) => d,
            Err(e) => {
                let _ = error_writer.reset().await;
                return Err(e.into());
            }
        };

        let slot = ErrorSlot::default();
        let (error_done_tx, error_done) = oneshot::channel();
        tokio::spawn(read_errors(
            error_reader,
            error_writer,
            slot.clone(),
            error_done_tx,
        ));
        let (user, ours) = tokio::io::duplex(PIPE_BUFFER);
        let (alive, dropped) = oneshot::channel();
        tokio::spawn(spdy_pump(data, ours, dropped, error_done));
        Ok(ForwardedConn {
            io: user,
            error: slot,
            _alive: Alive {
                _spdy: Some(alive),
                _websocket: None,
            },
        })
    }

    /// GOAWAY, then the end of the session and of all its connections.
    pub async fn close(&self) {
        self.session.close().await;
    }

    /// Resolves when the session has ended (the server went away, or `close`).
    pub async fn closed(&self) {
        self.session.closed().await;
    }
}

impl Drop for SpdyPortForward {
    fn drop(&mut self) {
        self.drain.abort();
    }
}

/// Keeps what the server writes on a connection's error stream, until its end.
async fn read_errors(
    mut reader: StreamReader,
    // Held so that the stream stays ours until the server is done with it.
    _writer: StreamWriter,
    slot: ErrorSlot,
    done: oneshot::Sender<()>,
) {
    while let Some(text) = reader.read().await {
        slot.append(&text);
    }
    let _ = done.send(());
}

/// Copies between a data stream and our end of the user's pipe, until both ways are done.
async fn spdy_pump(
    data: Stream,
    ours: DuplexStream,
    mut dropped: oneshot::Receiver<()>,
    error_done: oneshot::Receiver<()>,
) {
    let (mut from_remote, to_remote) = data.split();
    let (mut from_user, mut to_user) = tokio::io::split(ours);
    let upstream = {
        let to_remote = to_remote.clone();
        tokio::spawn(async move {
            let mut buf = BytesMut::new();
            loop {
                buf.reserve(CHUNK);
                match from_user.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if to_remote.write(buf.split().freeze()).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = to_remote.close().await;
        })
    };
    loop {
        tokio::select! {
            chunk = from_remote.read() => match chunk {
                Some(chunk) => {
                    if to_user.write_all(&chunk).await.is_err() {
                        // The user dropped the connection.
                        let _ = to_remote.reset().await;
                        upstream.abort();
                        return;
                    }
                }
                None => break,
            },
            _ = &mut dropped => {
                let _ = to_remote.reset().await;
                upstream.abort();
                return;
            }
        }
    }
    let _ = tokio::time::timeout(ERROR_WAIT, error_done).await;
    let _ = to_user.shutdown().await;
}

/// Port forwarding over WebSocket: one connection per port per URL (`?port=P&port=Q`).
pub async fn websocket_port_forward(
    url: &str,
    ports: &[u16],
) -> Result<Vec<ForwardedConn>, ClientError> {
    websocket_port_forward_with(url, ports, &ClientTls::default()).await
}

/// [`websocket_port_forward`] with TLS settings for https URLs.
pub async fn websocket_port_forward_with(
    url: &str,
    ports: &[u16],
    tls: &ClientTls,
) -> Result<Vec<ForwardedConn>, ClientError> {
    if ports.is_empty() || ports.len() > MAX_WS_PORTS {
        return Err(ClientError::Url {
            url: url.to_string(),
            reason: format!(
                "{} ports: forward 1 to {MAX_WS_PORTS} per WebSocket",
                ports.len()
            ),
        });
    }
    let conn = websocket::connect(&with_ports(url, ports), WS_PROTOCOLS, tls).await?;
    if conn.protocol.base64 {
        return Err(ClientError::Negotiation {
            transport: Transport::WebSocket,
            reason: "the server chose a base64 protocol, which was not offered".into(),
        });
    }
    let proto = conn.protocol;
    let (tx, incoming, writer) = websocket::split(conn.stream);
    let (alive, all_dropped) = mpsc::channel::<()>(1);
    let mut conns = Vec::with_capacity(ports.len());
    let mut ends = Vec::with_capacity(ports.len());
    let mut tasks = vec![writer];
    for (i, &port) in ports.iter().enumerate() {
        let data_channel = channel_of(i);
        let (user, ours) = tokio::io::duplex(PIPE_BUFFER);
        let (from_user, to_user) = tokio::io::split(ours);
        let slot = ErrorSlot::default();
        tasks.push(tokio::spawn(ws_upstream(
            from_user,
            tx.clone(),
            proto,
            data_channel,
        )));
        ends.push(PortEnd {
            port,
            to_user: Some(to_user),
            data_prefix: PORT_PREFIX,
            error_prefix: PORT_PREFIX,
            error: slot.clone(),
        });
        conns.push(ForwardedConn {
            io: user,
            error: slot,
            _alive: Alive {
                _spdy: None,
                _websocket: Some(alive.clone()),
            },
        });
    }
    drop(tx);
    drop(alive);
    tokio::spawn(ws_demux(incoming, proto, ends, all_dropped, tasks));
    Ok(conns)
}

/// The server starts each channel with the port number, 2 bytes little-endian.
const PORT_PREFIX: usize = 2;
/// Two channels per port, numbered by one byte (255 is the close signal).
const MAX_WS_PORTS: usize = 127;

fn channel_of(index: usize) -> u8 {
    u8::try_from(index * 2).unwrap_or(u8::MAX)
}

struct PortEnd {
    port: u16,
    /// `None` once the user has gone.
    to_user: Option<tokio::io::WriteHalf<DuplexStream>>,
    data_prefix: usize,
    error_prefix: usize,
    error: ErrorSlot,
}

/// Strips what is left of the port prefix from the start of `data`.
fn strip_prefix(left: &mut usize, data: Bytes) -> Bytes {
    let n = (*left).min(data.len());
    *left -= n;
    data.slice(n..)
}

async fn ws_upstream(
    mut from_user: tokio::io::ReadHalf<DuplexStream>,
    tx: mpsc::Sender<Message>,
    proto: ChannelProtocol,
    channel: u8,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from_user.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send(proto.encode(channel, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
    // Before v5 a channel cannot be half-closed: the pod side sees EOF only at the end.
    if proto.stream_close() {
        let _ = tx.send(ChannelProtocol::close(channel)).await;
    }
}

async fn ws_demux(
    mut incoming: futures::stream::SplitStream<websocket::WsStream>,
    proto: ChannelProtocol,
    mut ends: Vec<PortEnd>,
    mut all_dropped: mpsc::Receiver<()>,
    tasks: Vec<JoinHandle<()>>,
) {
    loop {
        let msg = tokio::select! {
            msg = incoming.next() => msg,
            _ = all_dropped.recv() => break,
        };
        let msg = match msg {
            None => break,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                if !websocket::is_end(&e) {
                    tracing::debug!("port forward WebSocket: {e}");
                }
                break;
            }
        };
        let (channel, data) = match proto.decode(msg) {
            Ok(Some(cd)) => cd,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!("port forward WebSocket: {e}");
                break;
            }
        };
        let Some(end) = ends.get_mut(usize::from(channel / 2)) else {
            continue;
        };
        if channel % 2 == 0 {
            let data = strip_prefix(&mut end.data_prefix, data);
            if data.is_empty() {
                continue;
            }
            if let Some(to_user) = end.to_user.as_mut() {
                if to_user.write_all(&data).await.is_err() {
                    end.to_user = None;
                }
            }
        } else {
            let data = strip_prefix(&mut end.error_prefix, data);
            end.error.append(&data);
        }
    }
    for end in &mut ends {
        if let Some(mut to_user) = end.to_user.take() {
            let _ = to_user.shutdown().await;
        }
        tracing::trace!(port = end.port, "port forward connection ended");
    }
    for t in tasks {
        t.abort();
    }
}

/// What the server wrote on a connection's error stream, as it arrives.
#[derive(Clone, Default)]
struct ErrorSlot(Arc<Mutex<Vec<u8>>>);

impl ErrorSlot {
    fn append(&self, data: &[u8]) {
        let mut buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let room = MAX_ERROR.saturating_sub(buf.len());
        buf.extend_from_slice(&data[..data.len().min(room)]);
    }

    fn get(&self) -> Option<String> {
        let buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).into_owned())
    }
}

/// Dropped with its connection, which tells the pumps that the user has gone: a SPDY
/// connection's pump waits on its own sender, a WebSocket's demultiplexer on the last of
/// its connections' senders.
struct Alive {
    _spdy: Option<oneshot::Sender<()>>,
    _websocket: Option<mpsc::Sender<()>>,
}

/// A forwarded connection: AsyncRead + AsyncWrite; shutdown() half-closes;
/// `error()` returns what the server wrote on the error stream, if anything.
pub struct ForwardedConn {
    io: DuplexStream,
    error: ErrorSlot,
    _alive: Alive,
}

impl ForwardedConn {
    /// What the server wrote on this connection's error stream so far (complete once a
    /// read has returned EOF); `None` if nothing.
    pub fn error(&self) -> Option<String> {
        self.error.get()
    }
}

impl std::fmt::Debug for ForwardedConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardedConn")
            .field("error", &self.error())
            .finish_non_exhaustive()
    }
}

impl AsyncRead for ForwardedConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for ForwardedConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "port_forward_tests.rs"]
mod tests;
