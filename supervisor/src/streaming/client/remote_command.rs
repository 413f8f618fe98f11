//! Exec and attach: a remote command's stdin, stdout, stderr, error and resize streams over
//! WebSocket channels or SPDY streams.

use bytes::BytesMut;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::spdy_upgrade::{self, SpdyConn};
use super::websocket::{self, WsConn};
use super::{status, ClientError, ClientTls, CommandIo, Exit, TermSize, Transport};
use crate::streaming::spdy::{Headers, Session, Stream};
use crate::streaming::ws_channel::ChannelProtocol;

/// What we offer, most preferred first.
const WS_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "base64.channel.k8s.io",
];
const SPDY_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;

/// Bytes read from stdin per message.
const CHUNK: usize = 32 * 1024;
/// The error stream carries one status; more than this is not a status.
const MAX_ERROR: usize = 64 * 1024;

/// Runs exec or attach on `url` (as returned by the CRI Exec/Attach call).
/// WebSocket asks for v5.channel.k8s.io, v4.channel.k8s.io, base64.channel.k8s.io (in that
/// order); SPDY for v4.channel.k8s.io, v3.channel.k8s.io, v2.channel.k8s.io, channel.k8s.io.
/// `protocols` overrides the offered list (tests use it to force one version).
pub async fn remote_command(
    url: &str,
    transport: Transport,
    protocols: Option<&[&str]>,
    io: CommandIo,
) -> Result<Exit, ClientError> {
    remote_command_with(url, transport, protocols, io, &ClientTls::default()).await
}

/// [`remote_command`] with TLS settings for https URLs.
pub async fn remote_command_with(
    url: &str,
    transport: Transport,
    protocols: Option<&[&str]>,
    io: CommandIo,
    tls: &ClientTls,
) -> Result<Exit, ClientError> {
    RemoteCommand::connect(url, transport, protocols, tls)
        .await?
        .run(io)
        .await
}

/// WebSocket first, SPDY when the server refuses the WebSocket upgrade (kubectl's fallback).
/// `url` is called once per attempt: a refused upgrade spends the URL's token (kubelet's and
/// limpetd's servers both consume it first), so the SPDY attempt needs a fresh URL, from a
/// new CRI `Exec` or `Attach` call.
pub async fn remote_command_fallback<F, Fut>(
    mut url: F,
    io: CommandIo,
    tls: &ClientTls,
) -> Result<Exit, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<String, ClientError>>,
{
    let first = url().await?;
    let conn = match RemoteCommand::connect(&first, Transport::WebSocket, None, tls).await {
        Ok(conn) => conn,
        Err(e) if e.is_upgrade_refused() => {
            tracing::debug!("{e}; falling back to SPDY");
            let fresh = url().await?;
            RemoteCommand::connect(&fresh, Transport::Spdy, None, tls).await?
        }
        Err(e) => return Err(e),
    };
    conn.run(io).await
}

/// An upgraded connection to an exec or attach URL, ready to run the command: connecting
/// first lets a caller pick the transport (and a fresh URL) before it hands over its stdio.
#[derive(Debug)]
pub struct RemoteCommand {
    conn: Conn,
}

enum Conn {
    WebSocket(Box<WsConn>),
    Spdy(SpdyConn),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Conn::WebSocket(c) => write!(f, "WebSocket({:?})", c.name),
            Conn::Spdy(c) => write!(f, "Spdy({:?})", c.protocol),
        }
    }
}

impl RemoteCommand {
    /// Upgrades `url`, offering `protocols` or the defaults of [`remote_command`].
    pub async fn connect(
        url: &str,
        transport: Transport,
        protocols: Option<&[&str]>,
        tls: &ClientTls,
    ) -> Result<RemoteCommand, ClientError> {
        let conn = match transport {
            Transport::WebSocket => Conn::WebSocket(Box::new(
                websocket::connect(url, protocols.unwrap_or(WS_PROTOCOLS), tls).await?,
            )),
            Transport::Spdy => Conn::Spdy(
                spdy_upgrade::upgrade(url, protocols.unwrap_or(SPDY_PROTOCOLS), tls).await?,
            ),
        };
        Ok(RemoteCommand { conn })
    }

    pub fn transport(&self) -> Transport {
        match self.conn {
            Conn::WebSocket(_) => Transport::WebSocket,
            Conn::Spdy(_) => Transport::Spdy,
        }
    }

    /// The protocol version the server chose ("" if it named none).
    pub fn protocol(&self) -> &str {
        match &self.conn {
            Conn::WebSocket(c) => &c.name,
            Conn::Spdy(c) => &c.protocol,
        }
    }

    /// Streams `io` until the command is done; its exit code, or the server's failure.
    pub async fn run(self, io: CommandIo) -> Result<Exit, ClientError> {
        match self.conn {
            Conn::WebSocket(conn) => run_websocket(*conn, io).await,
            Conn::Spdy(conn) => run_spdy(conn, io).await,
        }
    }
}

/// Aborts the tasks feeding a session when the session is done with.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

async fn run_websocket(conn: WsConn, io: CommandIo) -> Result<Exit, ClientError> {
    let proto = conn.protocol;
    let (tx, mut incoming, writer) = websocket::split(conn.stream);
    let CommandIo {
        stdin,
        mut stdout,
        mut stderr,
        tty,
        resize,
    } = io;
    let mut tasks = Tasks(vec![writer]);
    if let Some(stdin) = stdin {
        tasks
            .0
            .push(tokio::spawn(ws_stdin(stdin, tx.clone(), proto)));
    }
    if let (true, Some(resize)) = (tty, resize) {
        tasks
            .0
            .push(tokio::spawn(ws_resize(resize, tx.clone(), proto)));
    }
    drop(tx);

    // The server ends the connection once the command is done and its status is sent;
    // channels have no end of their own before that.
    let mut error = Vec::new();
    let mut closing = false;
    while let Some(msg) = incoming.next().await {
        let msg = match msg {
            Ok(m) => m,
            // After the server's Close, how the connection ends does not matter (a TLS
            // server may hang up without close_notify).
            Err(e) if closing || websocket::is_end(&e) => break,
            Err(e) => return Err(e.into()),
        };
        closing |= matches!(msg, Message::Close(_));
        let Some((channel, data)) = proto.decode(msg)? else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        match channel {
            STDOUT => write_out(stdout.as_mut(), &data, "write stdout").await?,
            STDERR => write_out(stderr.as_mut(), &data, "write stderr").await?,
            ERROR => append_error(&mut error, &data),
            _ => {}
        }
    }
    drop(tasks);
    flush(stdout.as_mut(), "write stdout").await?;
    flush(stderr.as_mut(), "write stderr").await?;
    status::decode(&error, proto.status_json())
}

async fn ws_stdin(
    mut from: Box<dyn AsyncRead + Send + Unpin>,
    tx: mpsc::Sender<Message>,
    proto: ChannelProtocol,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if tx.send(proto.encode(STDIN, &buf[..n])).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!("reading stdin: {e}; closing the command's stdin");
                break;
            }
        }
    }
    // Before v5 a channel cannot be closed: the command's stdin stays open.
    if proto.stream_close() {
        let _ = tx.send(ChannelProtocol::close(STDIN)).await;
    }
}

async fn ws_resize(
    mut sizes: mpsc::Receiver<TermSize>,
    tx: mpsc::Sender<Message>,
    proto: ChannelProtocol,
) {
    while let Some(size) = sizes.recv().await {
        if tx
            .send(proto.encode(RESIZE, &resize_json(size)))
            .await
            .is_err()
        {
            return;
        }
    }
}

fn resize_json(size: TermSize) -> Vec<u8> {
    // TermSize has two integer fields: serializing it cannot fail.
    serde_json::to_vec(&size).unwrap_or_default()
}

async fn write_out(
    to: Option<&mut Box<dyn AsyncWrite + Send + Unpin>>,
    data: &[u8],
    what: &'static str,
) -> Result<(), ClientError> {
    match to {
        Some(w) => w.write_all(data).await.map_err(ClientError::io(what)),
        None => Ok(()),
    }
}

async fn flush(
    to: Option<&mut Box<dyn AsyncWrite + Send + Unpin>>,
    what: &'static str,
) -> Result<(), ClientError> {
    match to {
        Some(w) => w.flush().await.map_err(ClientError::io(what)),
        None => Ok(()),
    }
}

fn append_error(error: &mut Vec<u8>, data: &[u8]) {
    let room = MAX_ERROR.saturating_sub(error.len());
    error.extend_from_slice(&data[..data.len().min(room)]);
}

async fn run_spdy(conn: SpdyConn, io: CommandIo) -> Result<Exit, ClientError> {
    let SpdyConn {
        session,
        mut incoming,
        protocol,
    } = conn;
    // The server opens no streams of its own; take any it does so that none backs up.
    // Aborted on drop too: a caller that gives up must not leave the session alive.
    let _drain = Tasks(vec![tokio::spawn(async move {
        while incoming.accept().await.is_some() {}
    })]);
    let result = match ChannelProtocol::parse(&protocol).filter(|p| !p.base64) {
        Some(proto) => spdy_streams(&session, proto, io).await,
        None => Err(ClientError::Negotiation {
            transport: Transport::Spdy,
            reason: format!("the server chose {protocol:?}, not a channel protocol"),
        }),
    };
    session.close().await;
    result
}

fn stream_type(t: &str) -> Headers {
    vec![("streamType".to_string(), t.to_string())]
}

async fn spdy_streams(
    session: &Session,
    proto: ChannelProtocol,
    io: CommandIo,
) -> Result<Exit, ClientError> {
    let CommandIo {
        stdin,
        stdout,
        stderr,
        tty,
        resize,
    } = io;
    // In the order client-go creates them; each waits for the server's reply.
    let error = session.open(stream_type("error")).await?;
    let stdin_stream = match stdin {
        Some(from) => Some((from, session.open(stream_type("stdin")).await?)),
        None => None,
    };
    let stdout_stream = match stdout {
        Some(to) => Some((to, session.open(stream_type("stdout")).await?)),
        None => None,
    };
    let stderr_stream = match stderr {
        Some(to) if !tty => Some((to, session.open(stream_type("stderr")).await?)),
        _ => None,
    };
    let resize_stream = if tty && proto.version >= 3 {
        Some(session.open(stream_type("resize")).await?)
    } else {
        None
    };

    let mut tasks = Tasks(Vec::new());
    if let Some((from, stream)) = stdin_stream {
        tasks.0.push(tokio::spawn(spdy_stdin(from, stream)));
    }
    if let Some(stream) = resize_stream {
        tasks.0.push(tokio::spawn(spdy_resize(resize, stream)));
    }
    let out = async {
        match stdout_stream {
            Some((to, stream)) => copy_out(stream, to, "write stdout").await,
            None => Ok(()),
        }
    };
    let err = async {
        match stderr_stream {
            Some((to, stream)) => copy_out(stream, to, "write stderr").await,
            None => Ok(()),
        }
    };
    let (out, err, error) = tokio::join!(out, err, read_error(error));
    drop(tasks);
    out?;
    err?;
    status::decode(&error, proto.status_json())
}

async fn copy_out(
    stream: Stream,
    mut to: Box<dyn AsyncWrite + Send + Unpin>,
    what: &'static str,
) -> Result<(), ClientError> {
    // The unused writer half lives as long as the copy: we never close an output stream.
    let (mut from, _writer) = stream.split();
    while let Some(data) = from.read().await {
        to.write_all(&data).await.map_err(ClientError::io(what))?;
    }
    to.flush().await.map_err(ClientError::io(what))
}

async fn read_error(stream: Stream) -> Vec<u8> {
    let (mut from, _writer) = stream.split();
    let mut error = Vec::new();
    while let Some(data) = from.read().await {
        append_error(&mut error, &data);
    }
    error
}

async fn spdy_stdin(mut from: Box<dyn AsyncRead + Send + Unpin>, stream: Stream) {
    let (mut reader, writer) = stream.split();
    // The server closes its side when the command's stdin is gone: then we close ours.
    let closer = {
        let writer = writer.clone();
        tokio::spawn(async move {
            while reader.read().await.is_some() {}
            let _ = writer.close().await;
        })
    };
    let mut buf = BytesMut::new();
    loop {
        buf.reserve(CHUNK);
        match from.read_buf(&mut buf).await {
            Ok(0) => break,
            Ok(_) => {
                if writer.write(buf.split().freeze()).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!("reading stdin: {e}; closing the command's stdin");
                break;
            }
        }
    }
    let _ = writer.close().await;
    closer.abort();
}

/// Sends terminal sizes; without any to send it just keeps the stream open.
async fn spdy_resize(sizes: Option<mpsc::Receiver<TermSize>>, stream: Stream) {
    let (_reader, writer) = stream.split();
    let Some(mut sizes) = sizes else {
        return std::future::pending().await;
    };
    while let Some(size) = sizes.recv().await {
        // One JSON object per event, newline-terminated as Go's json.Encoder writes it.
        let mut json = resize_json(size);
        json.push(b'\n');
        if writer.write(json.into()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
#[path = "remote_command_tests.rs"]
mod tests;
