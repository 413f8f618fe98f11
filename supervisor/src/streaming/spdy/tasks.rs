//! The two tasks behind a session. The reader decodes frames and routes them to streams; the
//! writer owns the write half and the header compressor, so frames reach the wire in the
//! order they were encoded.

use std::sync::{Arc, Weak};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use super::frame::{goaway, rst, Frame, FrameDecoder, FrameEncoder, FrameError};
use super::header_block::Headers;
use super::session::{Handle, Outgoing, Shared, SpdyError};
use super::stream::{self, Stream};

/// Encoded bytes gathered before one write to the socket.
const WRITE_BATCH: usize = 64 * 1024;
/// Least free room in the read buffer before reading.
const READ_CHUNK: usize = 16 * 1024;

/// Resolves once `flag` is set (or its sender is gone).
async fn raised(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}

/// Why the reader stopped.
#[derive(Debug)]
enum End {
    Eof,
    Io(std::io::Error),
    Protocol(FrameError),
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    /// The writer is gone or has closed the connection.
    Stopped,
}

pub(super) struct Reader<R> {
    rd: R,
    buf: BytesMut,
    decoder: FrameDecoder,
    shared: Arc<Shared>,
    control: mpsc::Sender<Frame>,
    incoming: mpsc::Sender<Stream>,
    handle: Weak<Handle>,
    stop: watch::Receiver<bool>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub(super) fn new(
        rd: R,
        shared: Arc<Shared>,
        control: mpsc::Sender<Frame>,
        incoming: mpsc::Sender<Stream>,
        handle: Weak<Handle>,
    ) -> Self {
        let stop = shared.stop.subscribe();
        Reader {
            rd,
            buf: BytesMut::with_capacity(READ_CHUNK),
            decoder: FrameDecoder::new(),
            shared,
            control,
            incoming,
            handle,
            stop,
        }
    }

    async fn run(&mut self) -> End {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Err(e) => return End::Protocol(e),
                Ok(Some(frame)) => {
                    if let Some(end) = self.dispatch(frame).await {
                        return end;
                    }
                }
                Ok(None) => {
                    if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                        self.buf.reserve(READ_CHUNK);
                    }
                    let read = tokio::select! {
                        read = self.rd.read_buf(&mut self.buf) => read,
                        _ = raised(&mut self.stop) => return End::Stopped,
                    };
                    match read {
                        Ok(0) => return End::Eof,
                        Ok(_) => {}
                        Err(e) => return End::Io(e),
                    }
                }
            }
        }
    }

    async fn dispatch(&mut self, frame: Frame) -> Option<End> {
        match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => return self.on_data(stream_id, fin, data).await,
            Frame::SynStream {
                stream_id,
                fin,
                unidirectional,
                headers,
                ..
            } => {
                return self
                    .on_syn_stream(stream_id, fin, unidirectional, headers)
                    .await
            }
            Frame::SynReply { stream_id, fin, .. } => return self.on_reply(stream_id, fin).await,
            Frame::RstStream { stream_id, status } => self.on_reset(stream_id, status),
            Frame::Headers { stream_id, fin, .. } => {
                if fin {
                    self.shared.remote_done(stream_id);
                }
            }
            Frame::Ping { id } => {
                // Echo the peer's pings; ours (our parity) would be answers, and we send none.
                // A peer flooding pings without reading gets no more answers.
                if id % 2 == self.shared.role.peer_parity() {
                    let _ = self.control.try_send(Frame::Ping { id });
                }
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                return Some(End::GoAway {
                    last_good_stream_id,
                    status,
                })
            }
            // Go peers neither send nor honour flow control, and settings change nothing here.
            Frame::Settings { .. } | Frame::WindowUpdate { .. } | Frame::Unknown { .. } => {}
        }
        None
    }

    async fn on_data(&mut self, id: u32, fin: bool, data: Bytes) -> Option<End> {
        let target = {
            let st = self.shared.state();
            match st.streams.get(&id) {
                // Before our SYN_REPLY arrived the stream is not open yet; Go drops such data.
                Some(e) if e.reply.is_none() => e.data.clone().map(|tx| (tx, e.budget.clone())),
                _ => None,
            }
        };
        if let Some((tx, budget)) = target.filter(|_| !data.is_empty()) {
            let permit = tokio::select! {
                permit = budget.acquire_many_owned(stream::cost(data.len())) => permit,
                _ = raised(&mut self.stop) => return Some(End::Stopped),
            };
            // No permit: the stream's reader was dropped, so its data goes nowhere.
            let delivered = match permit {
                Ok(permit) => {
                    permit.forget();
                    tx.send(data).is_ok()
                }
                Err(_) => false,
            };
            if !delivered {
                self.shared.remote_done(id);
            }
        }
        if fin {
            self.shared.remote_done(id);
        }
        None
    }

    async fn on_syn_stream(
        &mut self,
        id: u32,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    ) -> Option<End> {
        let verdict = {
            let mut st = self.shared.state();
            // Peer ids must rise and have the peer's parity (Go refuses lower ones too).
            if id % 2 != self.shared.role.peer_parity() || id <= st.last_peer_id {
                Some(rst::PROTOCOL_ERROR)
            } else {
                st.last_peer_id = id;
                st.closing.then_some(rst::REFUSED_STREAM)
            }
        };
        if let Some(status) = verdict {
            return self
                .send_control(Frame::RstStream {
                    stream_id: id,
                    status,
                })
                .await;
        }
        let Some(handle) = self.handle.upgrade() else {
            return self.refuse(id).await;
        };
        // Answer only once there is room to hand the stream out, so every acknowledged
        // stream reaches accept().
        let permit = tokio::select! {
            permit = self.incoming.clone().reserve_owned() => permit,
            _ = raised(&mut self.stop) => return Some(End::Stopped),
        };
        let Ok(permit) = permit else {
            // Nobody accepts streams on this session.
            drop(handle);
            return self.refuse(id).await;
        };
        let (entry, read_side) = stream::new_entry(id, fin);
        if unidirectional {
            entry.core.set_local_finished();
        }
        let core = entry.core.clone();
        self.shared.state().streams.insert(id, entry);
        let reply = Frame::SynReply {
            stream_id: id,
            fin: false,
            headers: Headers::new(),
        };
        if let Some(end) = self.send_control(reply).await {
            return Some(end);
        }
        permit.send(Stream::new(headers, core, read_side, handle));
        None
    }

    async fn on_reply(&mut self, id: u32, fin: bool) -> Option<End> {
        let abandoned = {
            let mut st = self.shared.state();
            let entry = st.streams.get_mut(&id)?;
            // A second SYN_REPLY changes nothing (Go ignores it too).
            let reply = entry.reply.take()?;
            if fin {
                entry.data = None;
            }
            let abandoned = reply.send(Ok(())).is_err();
            if abandoned {
                st.streams.remove(&id);
            }
            abandoned
        };
        if abandoned {
            // open() was cancelled while waiting: nobody will use the stream.
            return self
                .send_control(Frame::RstStream {
                    stream_id: id,
                    status: rst::CANCEL,
                })
                .await;
        }
        None
    }

    fn on_reset(&mut self, id: u32, status: u32) {
        let entry = self.shared.state().streams.remove(&id);
        if let Some(entry) = entry {
            entry.core.set_peer_reset(status);
            if let Some(reply) = entry.reply {
                let _ = reply.send(Err(SpdyError::Reset { id, status }));
            }
        }
    }

    async fn refuse(&mut self, id: u32) -> Option<End> {
        self.send_control(Frame::RstStream {
            stream_id: id,
            status: rst::REFUSED_STREAM,
        })
        .await
    }

    async fn send_control(&mut self, frame: Frame) -> Option<End> {
        tokio::select! {
            // An error means the writer is gone; `stop` ends the reader next.
            _ = self.control.send(frame) => None,
            _ = raised(&mut self.stop) => Some(End::Stopped),
        }
    }

    /// Ends every stream's reads and fails pending opens.
    fn finish(&mut self, end: &End) {
        let mut st = self.shared.state();
        st.ended = true;
        let error = match end {
            End::GoAway { .. } => {
                st.goaway_received = true;
                SpdyError::GoneAway
            }
            _ => SpdyError::SessionClosed,
        };
        if matches!(end, End::Protocol(_)) {
            st.goaway_status = goaway::PROTOCOL_ERROR;
        }
        for (_, entry) in st.streams.drain() {
            if let Some(reply) = entry.reply {
                let _ = reply.send(Err(error.clone()));
            }
        }
        drop(st);
        if matches!(end, End::Protocol(_)) {
            // The header context is lost: the connection is of no further use.
            self.shared.close_req.send_replace(true);
        }
        self.shared.ended.send_replace(true);
    }
}

pub(super) async fn read_loop<R: AsyncRead + Unpin>(mut reader: Reader<R>) {
    let end = reader.run().await;
    match &end {
        End::Protocol(e) => tracing::warn!(error = %e, "SPDY peer sent a malformed frame"),
        End::Io(e) => tracing::debug!(error = %e, "SPDY connection read failed"),
        End::GoAway {
            last_good_stream_id,
            status,
        } => tracing::debug!(last_good_stream_id, status, "SPDY peer sent GOAWAY"),
        other => tracing::debug!(end = ?other, "SPDY session reader finished"),
    }
    reader.finish(&end);
}

pub(super) struct Writer<W> {
    wr: W,
    buf: BytesMut,
    encoder: FrameEncoder,
    shared: Arc<Shared>,
    control: mpsc::Receiver<Frame>,
    out: mpsc::Receiver<Outgoing>,
    close_req: watch::Receiver<bool>,
    /// close() callers to answer once the connection is shut down.
    acks: Vec<oneshot::Sender<()>>,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    pub(super) fn new(
        wr: W,
        shared: Arc<Shared>,
        control: mpsc::Receiver<Frame>,
        out: mpsc::Receiver<Outgoing>,
    ) -> Self {
        let close_req = shared.close_req.subscribe();
        Writer {
            wr,
            buf: BytesMut::with_capacity(WRITE_BATCH),
            encoder: FrameEncoder::new(),
            shared,
            control,
            out,
            close_req,
            acks: Vec::new(),
        }
    }

    async fn run(&mut self) -> std::io::Result<()> {
        loop {
            // Answers to the peer go first: a SYN_REPLY must precede the stream's data.
            let first = tokio::select! {
                biased;
                Some(frame) = self.control.recv() => Outgoing::Frame(frame),
                Some(msg) = self.out.recv() => msg,
                _ = raised(&mut self.close_req) => return self.close().await,
            };
            let mut closing = self.push(first)?;
            while !closing && self.buf.len() < WRITE_BATCH {
                let next = match self.control.try_recv() {
                    Ok(frame) => Outgoing::Frame(frame),
                    Err(_) => match self.out.try_recv() {
                        Ok(msg) => msg,
                        Err(_) => break,
                    },
                };
                closing = self.push(next)?;
            }
            if closing {
                return self.close().await;
            }
            self.flush().await?;
        }
    }

    /// Encodes a frame into the batch; true for a close request.
    fn push(&mut self, msg: Outgoing) -> std::io::Result<bool> {
        match msg {
            Outgoing::Frame(frame) => {
                // Streams validate what they queue, so this is a bug; the context is lost.
                self.encoder.encode(&frame, &mut self.buf).map_err(|e| {
                    tracing::error!(error = %e, "cannot encode a SPDY frame");
                    std::io::Error::other(e)
                })?;
                Ok(false)
            }
            Outgoing::Close(ack) => {
                self.acks.push(ack);
                Ok(true)
            }
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        self.wr.write_all(&self.buf).await?;
        self.buf.clear();
        self.wr.flush().await
    }

    /// Sends what is queued, then GOAWAY, then shuts the write side down.
    async fn close(&mut self) -> std::io::Result<()> {
        let (last_good_stream_id, status) = {
            let mut st = self.shared.state();
            st.closing = true;
            (st.last_peer_id, st.goaway_status)
        };
        while let Ok(frame) = self.control.try_recv() {
            self.push(Outgoing::Frame(frame))?;
        }
        while let Ok(msg) = self.out.try_recv() {
            self.push(msg)?;
        }
        self.push(Outgoing::Frame(Frame::GoAway {
            last_good_stream_id,
            status,
        }))?;
        self.flush().await?;
        self.wr.shutdown().await
    }
}

pub(super) async fn write_loop<W: AsyncWrite + Unpin>(mut writer: Writer<W>) {
    if let Err(e) = writer.run().await {
        tracing::debug!(error = %e, "SPDY connection write failed");
    }
    // Later sends fail with SessionClosed; the reader stops, which drops the socket.
    writer.out.close();
    writer.shared.state().closing = true;
    writer.shared.stop.send_replace(true);
    for ack in writer.acks.drain(..) {
        let _ = ack.send(());
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::time::Duration;

    use tokio::io::DuplexStream;

    use super::super::session::{Incoming, Role, Session};
    use super::super::stream::StreamReader;
    use super::*;

    async fn within<F: Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(30), f)
            .await
            .expect("test timed out")
    }

    /// The far end of a session, driven frame by frame the way a Go peer would.
    struct RawPeer {
        io: DuplexStream,
        enc: FrameEncoder,
        dec: FrameDecoder,
        buf: BytesMut,
    }

    impl RawPeer {
        async fn send(&mut self, frame: Frame) {
            let mut out = BytesMut::new();
            self.enc.encode(&frame, &mut out).expect("encode");
            self.io.write_all(&out).await.expect("write");
        }

        async fn send_raw(&mut self, bytes: &[u8]) {
            self.io.write_all(bytes).await.expect("write");
        }

        /// The next frame, None at EOF.
        async fn recv(&mut self) -> Option<Frame> {
            loop {
                if let Some(frame) = self.dec.decode(&mut self.buf).expect("valid frame") {
                    return Some(frame);
                }
                if self.io.read_buf(&mut self.buf).await.expect("read") == 0 {
                    return None;
                }
            }
        }

        async fn syn_stream(&mut self, stream_id: u32, fin: bool) {
            self.send(Frame::SynStream {
                stream_id,
                associated_to: 0,
                priority: 0,
                slot: 0,
                fin,
                unidirectional: false,
                headers: vec![("streamtype".into(), "stdin".into())],
            })
            .await;
        }
    }

    fn session_with_raw_peer(role: Role) -> (Session, Incoming, RawPeer) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (session, incoming) = Session::new(ours, role);
        let peer = RawPeer {
            io: theirs,
            enc: FrameEncoder::new(),
            dec: FrameDecoder::new(),
            buf: BytesMut::new(),
        };
        (session, incoming, peer)
    }

    fn reply(stream_id: u32) -> Frame {
        Frame::SynReply {
            stream_id,
            fin: false,
            headers: vec![],
        }
    }

    fn data(stream_id: u32, fin: bool, bytes: &'static [u8]) -> Frame {
        Frame::Data {
            stream_id,
            fin,
            data: Bytes::from_static(bytes),
        }
    }

    async fn read_to_end(r: &mut StreamReader) -> Vec<u8> {
        let mut got = Vec::new();
        while let Some(chunk) = r.read().await {
            got.extend_from_slice(&chunk);
        }
        got
    }

    #[tokio::test]
    async fn accepted_streams_get_a_syn_reply_before_any_data() {
        within(async {
            let (_server, mut incoming, mut peer) = session_with_raw_peer(Role::Server);
            peer.syn_stream(1, false).await;
            peer.send(data(1, true, b"input")).await;
            assert_eq!(peer.recv().await, Some(reply(1)));
            let stream = incoming.accept().await.expect("accept");
            assert_eq!(stream.header("streamtype"), Some("stdin"));
            let (mut r, w) = stream.split();
            assert_eq!(read_to_end(&mut r).await, b"input");
            w.write(Bytes::from(vec![7u8; 100_000]))
                .await
                .expect("write");
            w.close().await.expect("close");
            // Split at 32 KiB, then an empty FIN frame.
            let mut sizes = Vec::new();
            loop {
                match peer.recv().await {
                    Some(Frame::Data {
                        stream_id: 1,
                        fin: false,
                        data,
                    }) => sizes.push(data.len()),
                    Some(Frame::Data {
                        stream_id: 1,
                        fin: true,
                        data,
                    }) if data.is_empty() => break,
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(sizes, [32768, 32768, 32768, 1696]);
        })
        .await
    }

    #[tokio::test]
    async fn pings_from_the_peer_are_echoed() {
        within(async {
            let (_server, _incoming, mut peer) = session_with_raw_peer(Role::Server);
            // Our own parity (even for a server) would be an answer: not echoed.
            peer.send(Frame::Ping { id: 2 }).await;
            peer.send(Frame::Ping { id: 1 }).await;
            assert_eq!(peer.recv().await, Some(Frame::Ping { id: 1 }));
            let (_client, _incoming, mut peer) = session_with_raw_peer(Role::Client);
            peer.send(Frame::Ping { id: 4 }).await;
            assert_eq!(peer.recv().await, Some(Frame::Ping { id: 4 }));
        })
        .await
    }

    #[tokio::test]
    async fn unknown_and_flow_control_frames_are_ignored() {
        within(async {
            let (_server, _incoming, mut peer) = session_with_raw_peer(Role::Server);
            peer.send(Frame::WindowUpdate {
                stream_id: 0,
                delta: 1000,
            })
            .await;
            peer.send(Frame::Settings {
                clear: false,
                entries: vec![],
            })
            .await;
            peer.send_raw(&[0x80, 0x03, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x02, 0xaa, 0xbb])
                .await;
            peer.send(data(99, false, b"nobody")).await;
            peer.send(Frame::Ping { id: 3 }).await;
            assert_eq!(peer.recv().await, Some(Frame::Ping { id: 3 }));
        })
        .await
    }

    #[tokio::test]
    async fn peer_refusal_fails_open() {
        within(async {
            let (client, _incoming, mut peer) = session_with_raw_peer(Role::Client);
            let opening = tokio::spawn(async move { client.open(vec![]).await });
            assert!(matches!(
                peer.recv().await,
                Some(Frame::SynStream { stream_id: 1, .. })
            ));
            peer.send(Frame::RstStream {
                stream_id: 1,
                status: rst::REFUSED_STREAM,
            })
            .await;
            let err = opening.await.expect("task").expect_err("refused");
            assert!(
                matches!(err, SpdyError::Reset { id: 1, status: 3 }),
                "{err}"
            );
        })
        .await
    }

    #[tokio::test]
    async fn abandoned_open_is_cancelled_on_reply() {
        within(async {
            let (client, _incoming, mut peer) = session_with_raw_peer(Role::Client);
            let opening = tokio::spawn(async move { client.open(vec![]).await });
            assert!(matches!(
                peer.recv().await,
                Some(Frame::SynStream { stream_id: 1, .. })
            ));
            opening.abort();
            let _ = opening.await;
            peer.send(reply(1)).await;
            // Dropping `client` with the task closes the session after the RST.
            assert_eq!(
                peer.recv().await,
                Some(Frame::RstStream {
                    stream_id: 1,
                    status: rst::CANCEL,
                })
            );
        })
        .await
    }

    #[tokio::test]
    async fn peer_goaway_ends_reads_and_new_streams() {
        within(async {
            let (client, _incoming, mut peer) = session_with_raw_peer(Role::Client);
            let opening = tokio::spawn({
                let client = client.clone();
                async move { client.open(vec![]).await }
            });
            peer.recv().await.expect("SYN_STREAM");
            peer.send(reply(1)).await;
            let (mut r, w) = opening.await.expect("task").expect("open").split();
            peer.send(data(1, false, b"bye")).await;
            peer.send(Frame::GoAway {
                last_good_stream_id: 0,
                status: goaway::OK,
            })
            .await;
            assert_eq!(read_to_end(&mut r).await, b"bye");
            client.closed().await;
            assert!(matches!(
                client.open(vec![]).await,
                Err(SpdyError::GoneAway)
            ));
            // Writing on an existing stream still works until the connection is closed.
            w.write(Bytes::from_static(b"after")).await.expect("write");
            assert_eq!(peer.recv().await, Some(data(1, false, b"after")));
            client.close().await;
            assert_eq!(
                peer.recv().await,
                Some(Frame::GoAway {
                    last_good_stream_id: 0,
                    status: goaway::OK,
                })
            );
            assert_eq!(peer.recv().await, None);
        })
        .await
    }

    #[tokio::test]
    async fn close_sends_goaway_naming_the_last_peer_stream() {
        within(async {
            let (server, mut incoming, mut peer) = session_with_raw_peer(Role::Server);
            peer.syn_stream(1, false).await;
            peer.syn_stream(3, false).await;
            assert_eq!(peer.recv().await, Some(reply(1)));
            assert_eq!(peer.recv().await, Some(reply(3)));
            let (mut r, _w) = incoming.accept().await.expect("accept").split();
            server.close().await;
            assert_eq!(
                peer.recv().await,
                Some(Frame::GoAway {
                    last_good_stream_id: 3,
                    status: goaway::OK,
                })
            );
            assert_eq!(peer.recv().await, None);
            assert_eq!(r.read().await, None);
        })
        .await
    }

    #[tokio::test]
    async fn bad_stream_ids_are_refused() {
        within(async {
            let (_server, mut incoming, mut peer) = session_with_raw_peer(Role::Server);
            // Even ids belong to the server; ids must rise.
            peer.syn_stream(2, false).await;
            peer.syn_stream(5, false).await;
            peer.syn_stream(3, false).await;
            let protocol_error = |stream_id| Frame::RstStream {
                stream_id,
                status: rst::PROTOCOL_ERROR,
            };
            assert_eq!(peer.recv().await, Some(protocol_error(2)));
            assert_eq!(peer.recv().await, Some(reply(5)));
            assert_eq!(peer.recv().await, Some(protocol_error(3)));
            assert_eq!(incoming.accept().await.expect("accept").id(), 5);
        })
        .await
    }

    #[tokio::test]
    async fn streams_are_refused_without_an_acceptor() {
        within(async {
            let (_server, incoming, mut peer) = session_with_raw_peer(Role::Server);
            drop(incoming);
            peer.syn_stream(1, false).await;
            assert_eq!(
                peer.recv().await,
                Some(Frame::RstStream {
                    stream_id: 1,
                    status: rst::REFUSED_STREAM,
                })
            );
        })
        .await
    }

    #[tokio::test]
    async fn syn_stream_with_fin_has_nothing_to_read() {
        within(async {
            let (_server, mut incoming, mut peer) = session_with_raw_peer(Role::Server);
            peer.syn_stream(1, true).await;
            let (mut r, w) = incoming.accept().await.expect("accept").split();
            assert_eq!(r.read().await, None);
            w.write(Bytes::from_static(b"reply")).await.expect("write");
            assert_eq!(peer.recv().await, Some(reply(1)));
            assert_eq!(peer.recv().await, Some(data(1, false, b"reply")));
        })
        .await
    }

    #[tokio::test]
    async fn malformed_frame_ends_the_session_with_protocol_error() {
        within(async {
            let (server, mut incoming, mut peer) = session_with_raw_peer(Role::Server);
            peer.syn_stream(1, false).await;
            let (mut r, _w) = incoming.accept().await.expect("accept").split();
            // PING with a 3-byte payload.
            peer.send_raw(&[0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x03, 0, 0, 1])
                .await;
            server.closed().await;
            assert_eq!(r.read().await, None);
            assert_eq!(peer.recv().await, Some(reply(1)));
            assert_eq!(
                peer.recv().await,
                Some(Frame::GoAway {
                    last_good_stream_id: 1,
                    status: goaway::PROTOCOL_ERROR,
                })
            );
            assert_eq!(peer.recv().await, None);
        })
        .await
    }

    #[tokio::test]
    async fn peer_eof_ends_the_session() {
        within(async {
            let (client, _incoming, mut peer) = session_with_raw_peer(Role::Client);
            let opening = tokio::spawn({
                let client = client.clone();
                async move { client.open(vec![]).await }
            });
            peer.recv().await.expect("SYN_STREAM");
            drop(peer);
            assert!(matches!(
                opening.await.expect("task"),
                Err(SpdyError::SessionClosed)
            ));
            client.closed().await;
        })
        .await
    }
}
