//! A SPDY/3.1 session: the handles users hold, and the state the reader and writer tasks
//! (`tasks`) share with them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use super::frame::{self, Frame, FrameError, MAX_STREAM_ID};
use super::header_block::{self, Headers};
use super::stream::{self, Stream, StreamCore};
use super::tasks;

/// Frames waiting for the writer task; a full queue makes writers wait (backpressure).
const WRITE_QUEUE: usize = 64;
/// Frames the reader task answers with (SYN_REPLY, PING, RST), sent ahead of stream data.
const CONTROL_QUEUE: usize = 256;
/// Accepted streams not yet taken by [`Incoming::accept`].
const ACCEPT_QUEUE: usize = 32;

/// Which end of the connection we are: the client opens odd stream ids, the server even ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

impl Role {
    fn first_stream_id(self) -> u32 {
        match self {
            Role::Client => 1,
            Role::Server => 2,
        }
    }

    /// `id % 2` of the streams and pings the peer originates.
    pub(super) fn peer_parity(self) -> u32 {
        match self {
            Role::Client => 0,
            Role::Server => 1,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SpdyError {
    #[error("the SPDY session has ended")]
    SessionClosed,
    #[error("the peer sent GOAWAY: no new streams on this session")]
    GoneAway,
    #[error("stream {id} was reset by the peer ({})", rst_name(*status))]
    Reset { id: u32, status: u32 },
    #[error("stream {0} is closed for writing")]
    StreamClosed(u32),
    #[error("no stream ids left on this session")]
    StreamIdsExhausted,
    #[error("invalid stream headers")]
    InvalidHeaders(#[source] FrameError),
}

fn rst_name(status: u32) -> &'static str {
    use frame::rst::*;
    match status {
        PROTOCOL_ERROR => "PROTOCOL_ERROR",
        INVALID_STREAM => "INVALID_STREAM",
        REFUSED_STREAM => "REFUSED_STREAM",
        UNSUPPORTED_VERSION => "UNSUPPORTED_VERSION",
        CANCEL => "CANCEL",
        INTERNAL_ERROR => "INTERNAL_ERROR",
        FLOW_CONTROL_ERROR => "FLOW_CONTROL_ERROR",
        STREAM_IN_USE => "STREAM_IN_USE",
        STREAM_ALREADY_CLOSED => "STREAM_ALREADY_CLOSED",
        INVALID_CREDENTIALS => "INVALID_CREDENTIALS",
        FRAME_TOO_LARGE => "FRAME_TOO_LARGE",
        _ => "unknown status",
    }
}

/// What the writer task takes from the queue.
pub(super) enum Outgoing {
    Frame(Frame),
    /// Flush, GOAWAY, shut the socket down, then acknowledge.
    Close(oneshot::Sender<()>),
}

/// One open stream as the reader task sees it.
pub(super) struct Entry {
    /// Where DATA goes; `None` once the peer finished or our reader went away.
    pub(super) data: Option<mpsc::UnboundedSender<Bytes>>,
    /// Bytes the stream's reader may have queued and not yet taken.
    pub(super) budget: Arc<Semaphore>,
    /// Set while a stream we opened waits for its SYN_REPLY.
    pub(super) reply: Option<oneshot::Sender<Result<(), SpdyError>>>,
    pub(super) core: Arc<StreamCore>,
}

pub(super) struct State {
    pub(super) streams: HashMap<u32, Entry>,
    next_id: u32,
    /// The newest stream the peer opened; GOAWAY reports it as the last one we processed.
    pub(super) last_peer_id: u32,
    pub(super) goaway_status: u32,
    pub(super) goaway_received: bool,
    /// close() was called or the writer is closing: no new streams either way.
    pub(super) closing: bool,
    /// The reader task has finished: nothing more will be read.
    pub(super) ended: bool,
}

pub(super) struct Shared {
    pub(super) role: Role,
    state: Mutex<State>,
    pub(super) out: mpsc::Sender<Outgoing>,
    /// Keeps SYN_STREAM ids rising on the wire, as the protocol requires.
    open_lock: tokio::sync::Mutex<()>,
    /// Set by the writer when it is gone: the reader stops.
    pub(super) stop: watch::Sender<bool>,
    /// Set when the writer must close (last handle dropped, protocol error).
    pub(super) close_req: watch::Sender<bool>,
    /// Set by the reader when it has finished.
    pub(super) ended: watch::Sender<bool>,
}

impl Shared {
    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the table half-updated in a harmful way.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Our half is done (FIN or RST): forget the stream if the peer's half is done too.
    pub(super) fn local_done(&self, id: u32) {
        let mut st = self.state();
        if st.streams.get(&id).is_some_and(|e| e.data.is_none()) {
            st.streams.remove(&id);
        }
    }

    /// The peer's half is done (FIN) or nobody reads it any more.
    pub(super) fn remote_done(&self, id: u32) {
        let mut st = self.state();
        if let Some(e) = st.streams.get_mut(&id) {
            e.data = None;
            if e.core.local_done() {
                st.streams.remove(&id);
            }
        }
    }
}

/// Keeps the session alive: held by every user-facing handle. When the last one goes, the
/// session closes itself (GOAWAY, then shutdown) so a forgotten session cannot leak tasks.
pub(super) struct Handle {
    pub(super) shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.close_req.send_replace(true);
    }
}

/// A SPDY session over one connection. Cheap to clone.
#[derive(Clone)]
pub struct Session {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.handle.shared.role)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Starts the reader and writer tasks on `io` (an upgraded HTTP connection). Must run
    /// inside a tokio runtime.
    pub fn new<T>(io: T, role: Role) -> (Session, Incoming)
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(WRITE_QUEUE);
        let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let (incoming_tx, incoming_rx) = mpsc::channel(ACCEPT_QUEUE);
        let shared = Arc::new(Shared {
            role,
            state: Mutex::new(State {
                streams: HashMap::new(),
                next_id: role.first_stream_id(),
                last_peer_id: 0,
                goaway_status: frame::goaway::OK,
                goaway_received: false,
                closing: false,
                ended: false,
            }),
            out: out_tx,
            open_lock: tokio::sync::Mutex::new(()),
            stop: watch::channel(false).0,
            close_req: watch::channel(false).0,
            ended: watch::channel(false).0,
        });
        let handle = Arc::new(Handle {
            shared: shared.clone(),
        });
        tokio::spawn(tasks::write_loop(tasks::Writer::new(
            wr,
            shared.clone(),
            control_rx,
            out_rx,
        )));
        tokio::spawn(tasks::read_loop(tasks::Reader::new(
            rd,
            shared,
            control_tx,
            incoming_tx,
            Arc::downgrade(&handle),
        )));
        let incoming = Incoming {
            rx: incoming_rx,
            _handle: handle.clone(),
        };
        (Session { handle }, incoming)
    }

    /// SYN_STREAM with `headers`; resolves once the peer's SYN_REPLY arrives (RST => Err).
    /// The stream's [`Stream::headers`] are the ones sent here.
    pub async fn open(&self, headers: Headers) -> Result<Stream, SpdyError> {
        // Refused here, so the writer never meets a block it cannot encode.
        header_block::encode_block(&headers).map_err(SpdyError::InvalidHeaders)?;
        let shared = &self.handle.shared;
        let (reply_tx, reply_rx) = oneshot::channel();
        let ordered = shared.open_lock.lock().await;
        let (id, read_side, core) = {
            let mut st = shared.state();
            if st.goaway_received {
                return Err(SpdyError::GoneAway);
            }
            if st.ended || st.closing {
                return Err(SpdyError::SessionClosed);
            }
            let id = st.next_id;
            if id > MAX_STREAM_ID {
                return Err(SpdyError::StreamIdsExhausted);
            }
            st.next_id += 2;
            let (mut entry, read_side) = stream::new_entry(id, false);
            entry.reply = Some(reply_tx);
            let core = entry.core.clone();
            st.streams.insert(id, entry);
            (id, read_side, core)
        };
        let mut unsent = Unsent {
            shared,
            id,
            armed: true,
        };
        let syn = Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers: headers.clone(),
        };
        shared
            .out
            .send(Outgoing::Frame(syn))
            .await
            .map_err(|_| SpdyError::SessionClosed)?;
        unsent.armed = false;
        drop(ordered);
        match reply_rx.await {
            Ok(Ok(())) => Ok(Stream::new(headers, core, read_side, self.handle.clone())),
            Ok(Err(e)) => Err(e),
            // The reader ended without answering.
            Err(_) => Err(SpdyError::SessionClosed),
        }
    }

    /// GOAWAY, then shuts the connection down; pending writes are flushed first. Every
    /// stream's reads end.
    pub async fn close(&self) {
        let shared = &self.handle.shared;
        shared.state().closing = true;
        let (tx, rx) = oneshot::channel();
        if shared.out.send(Outgoing::Close(tx)).await.is_ok() {
            // An error only means the writer was already gone.
            let _ = rx.await;
        }
        self.closed().await;
    }

    /// Resolves when the connection has ended (peer closed, GOAWAY, IO error, close()).
    pub async fn closed(&self) {
        let mut ended = self.handle.shared.ended.subscribe();
        // The sender lives as long as `shared`, which we hold: an error cannot happen.
        let _ = ended.wait_for(|e| *e).await;
    }
}

/// Forgets a stream whose SYN_STREAM never reached the queue (open() cancelled or failed).
struct Unsent<'a> {
    shared: &'a Shared,
    id: u32,
    armed: bool,
}

impl Drop for Unsent<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.state().streams.remove(&self.id);
        }
    }
}

/// Streams the peer opens.
pub struct Incoming {
    rx: mpsc::Receiver<Stream>,
    _handle: Arc<Handle>,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming").finish_non_exhaustive()
    }
}

impl Incoming {
    /// The next stream the peer opened; the session has already answered it with SYN_REPLY.
    /// None once the session has ended.
    pub async fn accept(&mut self) -> Option<Stream> {
        self.rx.recv().await
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::time::Duration;

    use tokio::io::AsyncReadExt;

    use super::super::stream::{StreamReader, StreamWriter};
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    async fn within<F: Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(30), f)
            .await
            .expect("test timed out")
    }

    /// A client session and a server session joined by an in-memory pipe.
    fn pair() -> ((Session, Incoming), (Session, Incoming)) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        (Session::new(a, Role::Client), Session::new(b, Role::Server))
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
            .collect()
    }

    /// Writes `data` in chunks of varying sizes (some over the 32 KiB frame limit), then FIN.
    async fn send_all(w: StreamWriter, data: Vec<u8>) {
        let data = Bytes::from(data);
        let mut at = 0;
        let mut step = 1000;
        while at < data.len() {
            let end = (at + step).min(data.len());
            w.write(data.slice(at..end)).await.expect("write");
            at = end;
            step = step * 7 % 90_001 + 1;
        }
        w.close().await.expect("close");
    }

    async fn recv_all(r: &mut StreamReader) -> Vec<u8> {
        let mut got = Vec::new();
        while let Some(chunk) = r.read().await {
            got.extend_from_slice(&chunk);
        }
        got
    }

    /// Callers spawn these: the handles and their futures must be Send.
    #[allow(dead_code)]
    fn handles_and_futures_are_send(
        session: Session,
        mut incoming: Incoming,
        mut r: StreamReader,
        w: StreamWriter,
    ) {
        fn send<T: Send + 'static>(_: T) {}
        send(async move {
            let _ = session.open(vec![]).await;
            session.close().await;
            session.closed().await;
            let _ = incoming.accept().await;
            let _ = r.read().await;
            let _ = w.write(Bytes::new()).await;
            let _ = w.close().await;
            let _ = w.reset().await;
        });
    }

    #[tokio::test]
    async fn stream_ids_and_headers() {
        within(async {
            let ((client, mut client_in), (server, mut server_in)) = pair();
            let a = client
                .open(h(&[("streamType", "error")]))
                .await
                .expect("open");
            let b = client
                .open(h(&[("streamtype", "stdout")]))
                .await
                .expect("open");
            let c = server.open(h(&[("x", "1")])).await.expect("open");
            let d = server.open(vec![]).await.expect("open");
            assert_eq!((a.id(), b.id(), c.id(), d.id()), (1, 3, 2, 4));
            assert_eq!(a.header("streamtype"), Some("error"));
            let got_a = server_in.accept().await.expect("stream 1");
            let got_b = server_in.accept().await.expect("stream 3");
            assert_eq!(got_a.id(), 1);
            assert_eq!(got_a.headers(), &h(&[("streamtype", "error")]));
            assert_eq!(got_b.header("StreamType"), Some("stdout"));
            assert_eq!(
                client_in.accept().await.expect("stream 2").header("x"),
                Some("1")
            );
            assert_eq!(client_in.accept().await.expect("stream 4").id(), 4);
        })
        .await
    }

    #[tokio::test]
    async fn mebibytes_both_ways_in_order() {
        within(async {
            let ((client, _client_in), (_server, mut server_in)) = pair();
            let opened = client
                .open(h(&[("streamtype", "data")]))
                .await
                .expect("open");
            let accepted = server_in.accept().await.expect("accept");
            let (mut client_r, client_w) = opened.split();
            let (mut server_r, server_w) = accepted.split();
            let up = pattern(3 << 20, 1);
            let down = pattern(3 << 20, 2);
            let writers = tokio::spawn({
                let (up, down) = (up.clone(), down.clone());
                async move {
                    tokio::join!(send_all(client_w, up), send_all(server_w, down));
                }
            });
            let (got_up, got_down) = tokio::join!(recv_all(&mut server_r), recv_all(&mut client_r));
            writers.await.expect("writers");
            assert!(got_up == up, "client to server data differs");
            assert!(got_down == down, "server to client data differs");
        })
        .await
    }

    #[tokio::test]
    async fn half_close_both_ways() {
        within(async {
            let ((client, _ci), (_server, mut server_in)) = pair();
            let (mut client_r, client_w) = client.open(vec![]).await.expect("open").split();
            let (mut server_r, server_w) = server_in.accept().await.expect("accept").split();
            client_w
                .write(Bytes::from_static(b"ping"))
                .await
                .expect("write");
            client_w.close().await.expect("close");
            client_w.close().await.expect("close is idempotent");
            assert!(matches!(
                client_w.write(Bytes::from_static(b"late")).await,
                Err(SpdyError::StreamClosed(1))
            ));
            assert_eq!(server_r.read().await.as_deref(), Some(&b"ping"[..]));
            assert_eq!(server_r.read().await, None);
            // The other direction is still open.
            server_w
                .write(Bytes::from_static(b"pong"))
                .await
                .expect("write");
            assert_eq!(client_r.read().await.as_deref(), Some(&b"pong"[..]));
            server_w.close().await.expect("close");
            assert_eq!(client_r.read().await, None);
            // Both halves done: the FIN that ended the read also removed the stream.
            assert!(client.handle.shared.state().streams.is_empty());
        })
        .await
    }

    #[tokio::test]
    async fn reset_ends_both_sides() {
        within(async {
            let ((client, _ci), (_server, mut server_in)) = pair();
            let (mut client_r, client_w) = client.open(vec![]).await.expect("open").split();
            let (mut server_r, server_w) = server_in.accept().await.expect("accept").split();
            client_w.reset().await.expect("reset");
            client_w.reset().await.expect("reset is idempotent");
            assert_eq!(client_r.read().await, None);
            assert!(matches!(
                client_w.write(Bytes::from_static(b"x")).await,
                Err(SpdyError::StreamClosed(1))
            ));
            assert_eq!(server_r.read().await, None);
            let err = server_w
                .write(Bytes::from_static(b"x"))
                .await
                .expect_err("peer reset");
            assert!(
                matches!(err, SpdyError::Reset { id: 1, status: 5 }),
                "{err}"
            );
            assert_eq!(err.to_string(), "stream 1 was reset by the peer (CANCEL)");
            // close() after the peer's reset has nothing to do.
            server_w.close().await.expect("close");
        })
        .await
    }

    #[tokio::test]
    async fn dropped_reader_does_not_block_the_session() {
        within(async {
            let ((client, _ci), (_server, mut server_in)) = pair();
            let ignored = client.open(vec![]).await.expect("open");
            let wanted = client.open(vec![]).await.expect("open");
            let (ignored_r, _ignored_w) = server_in.accept().await.expect("accept").split();
            let (mut wanted_r, _wanted_w) = server_in.accept().await.expect("accept").split();
            drop(ignored_r);
            // Four times the receive budget: without discarding, this would stall the reader.
            send_all(ignored.split().1, pattern(4 << 20, 3)).await;
            send_all(wanted.split().1, b"still flowing".to_vec()).await;
            assert_eq!(recv_all(&mut wanted_r).await, b"still flowing");
        })
        .await
    }

    #[tokio::test]
    async fn stream_reader_is_async_read() {
        within(async {
            let ((client, _ci), (_server, mut server_in)) = pair();
            let (_r, w) = client.open(vec![]).await.expect("open").split();
            let (mut r, _w) = server_in.accept().await.expect("accept").split();
            let data = pattern(100_000, 4);
            tokio::spawn(send_all(w, data.clone()));
            let mut first = [0u8; 10];
            r.read_exact(&mut first).await.expect("read");
            let mut rest = Vec::new();
            r.read_to_end(&mut rest).await.expect("read");
            assert_eq!([&first[..], &rest].concat(), data);
        })
        .await
    }

    #[tokio::test]
    async fn close_flushes_pending_writes_first() {
        within(async {
            let ((client, _ci), (server, mut server_in)) = pair();
            let (_r, w) = client.open(vec![]).await.expect("open").split();
            let (mut r, _w) = server_in.accept().await.expect("accept").split();
            let data = pattern(1 << 20, 5);
            let reader = tokio::spawn(async move { recv_all(&mut r).await });
            w.write(Bytes::from(data.clone())).await.expect("write");
            client.close().await;
            assert_eq!(reader.await.expect("reader"), data);
            server.closed().await;
            assert!(server_in.accept().await.is_none());
            assert!(matches!(
                client.open(vec![]).await,
                Err(SpdyError::SessionClosed)
            ));
            assert!(matches!(
                server.open(vec![]).await,
                Err(SpdyError::GoneAway)
            ));
            assert!(matches!(
                w.write(Bytes::from_static(b"x")).await,
                Err(SpdyError::SessionClosed)
            ));
        })
        .await
    }

    #[tokio::test]
    async fn goaway_ends_the_peers_reads() {
        within(async {
            let ((client, _ci), (server, mut server_in)) = pair();
            let (mut client_r, _w) = client.open(vec![]).await.expect("open").split();
            let (_r, server_w) = server_in.accept().await.expect("accept").split();
            server_w
                .write(Bytes::from_static(b"last words"))
                .await
                .expect("write");
            server.close().await;
            assert_eq!(client_r.read().await.as_deref(), Some(&b"last words"[..]));
            assert_eq!(client_r.read().await, None);
            client.closed().await;
        })
        .await
    }

    #[tokio::test]
    async fn dropping_every_handle_closes_the_session() {
        within(async {
            let ((client, client_in), (server, mut server_in)) = pair();
            let stream = client.open(vec![]).await.expect("open");
            let (mut r, _w) = server_in.accept().await.expect("accept").split();
            drop((client, client_in));
            // A live stream keeps the session up.
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(!*server.handle.shared.ended.borrow());
            drop(stream);
            server.closed().await;
            assert_eq!(r.read().await, None);
            assert!(server_in.accept().await.is_none());
        })
        .await
    }

    #[tokio::test]
    async fn open_refuses_invalid_headers() {
        within(async {
            let ((client, _ci), _server) = pair();
            assert!(matches!(
                client.open(h(&[("", "x")])).await,
                Err(SpdyError::InvalidHeaders(FrameError::EmptyHeaderName))
            ));
            // Nothing was sent: the next stream still gets id 1.
            assert_eq!(client.open(vec![]).await.expect("open").id(), 1);
        })
        .await
    }
}
