//! One stream of a session: its reading half, its writing half, and the little state both
//! share with the session's tasks.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{mpsc, Semaphore};

use super::frame::{rst, Frame, MAX_DATA_CHUNK};
use super::header_block::{header, Headers};
use super::session::{Entry, Handle, Outgoing, SpdyError};

/// Bytes a stream may have received and not yet read before the session stops reading the
/// connection (TCP backpressure then reaches the peer).
const RECV_BUDGET: usize = 1024 * 1024;

const LOCAL_OPEN: u8 = 0;
const LOCAL_FINISHED: u8 = 1;
const LOCAL_RESET: u8 = 2;

/// What the session's tasks and both halves know about one stream's sending side.
pub(super) struct StreamCore {
    id: u32,
    /// Held across queueing a frame, so nothing follows our FIN or RST.
    write_lock: tokio::sync::Mutex<()>,
    /// LOCAL_OPEN, LOCAL_FINISHED or LOCAL_RESET; changed only under `write_lock`.
    local: AtomicU8,
    /// The peer's RST_STREAM status, 0 while it has not reset the stream.
    peer_reset: AtomicU32,
}

impl StreamCore {
    /// Our side has sent FIN or RST.
    pub(super) fn local_done(&self) -> bool {
        self.local.load(Ordering::Acquire) != LOCAL_OPEN
    }

    /// The peer opened the stream unidirectional: we may not send on it.
    pub(super) fn set_local_finished(&self) {
        self.local.store(LOCAL_FINISHED, Ordering::Release);
    }

    pub(super) fn set_peer_reset(&self, status: u32) {
        self.peer_reset.store(status, Ordering::Release);
    }
}

/// The receiving end of a stream's DATA queue.
pub(super) struct ReadSide {
    rx: mpsc::UnboundedReceiver<Bytes>,
    budget: Arc<Semaphore>,
}

/// A table entry for stream `id` and the reading side it feeds. `fin_received`: the peer
/// opened it with FIN and will send nothing.
pub(super) fn new_entry(id: u32, fin_received: bool) -> (Entry, ReadSide) {
    let (tx, rx) = mpsc::unbounded_channel();
    let budget = Arc::new(Semaphore::new(RECV_BUDGET));
    let core = Arc::new(StreamCore {
        id,
        write_lock: tokio::sync::Mutex::new(()),
        local: AtomicU8::new(LOCAL_OPEN),
        peer_reset: AtomicU32::new(0),
    });
    let entry = Entry {
        data: (!fin_received).then_some(tx),
        budget: budget.clone(),
        reply: None,
        core,
    };
    (entry, ReadSide { rx, budget })
}

/// Budget a DATA payload takes; one frame larger than the whole budget takes all of it.
pub(super) fn cost(len: usize) -> u32 {
    len.min(RECV_BUDGET) as u32
}

/// A stream, opened by us or accepted from the peer.
pub struct Stream {
    headers: Headers,
    reader: StreamReader,
    writer: StreamWriter,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id())
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl Stream {
    pub(super) fn new(
        headers: Headers,
        core: Arc<StreamCore>,
        read_side: ReadSide,
        handle: Arc<Handle>,
    ) -> Self {
        let reader = StreamReader {
            id: core.id,
            rx: read_side.rx,
            budget: read_side.budget,
            pending: Bytes::new(),
            _handle: handle.clone(),
        };
        Stream {
            headers,
            reader,
            writer: StreamWriter { core, handle },
        }
    }

    pub fn id(&self) -> u32 {
        self.writer.core.id
    }

    /// The SYN_STREAM headers: the peer's for an accepted stream, ours for an opened one.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The first value of `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn split(self) -> (StreamReader, StreamWriter) {
        (self.reader, self.writer)
    }
}

/// The receiving half. Dropping it makes the session discard the stream's further DATA.
pub struct StreamReader {
    id: u32,
    rx: mpsc::UnboundedReceiver<Bytes>,
    budget: Arc<Semaphore>,
    /// What an [`AsyncRead`] caller has not taken yet.
    pending: Bytes,
    _handle: Arc<Handle>,
}

impl std::fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamReader")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl StreamReader {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Next DATA payload; None after the peer's FIN, a RST, or the end of the session.
    pub async fn read(&mut self) -> Option<Bytes> {
        if !self.pending.is_empty() {
            return Some(std::mem::take(&mut self.pending));
        }
        let data = self.rx.recv().await?;
        self.budget.add_permits(cost(data.len()) as usize);
        Some(data)
    }
}

impl AsyncRead for StreamReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pending.is_empty() {
            match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                // End of stream: nothing appended.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(data)) => {
                    self.budget.add_permits(cost(data.len()) as usize);
                    self.pending = data;
                }
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        // Wakes the session if it waits for room in this stream, and makes it drop the data.
        self.budget.close();
    }
}

/// The sending half. Clones write to the same stream.
#[derive(Clone)]
pub struct StreamWriter {
    core: Arc<StreamCore>,
    handle: Arc<Handle>,
}

impl std::fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamWriter")
            .field("id", &self.core.id)
            .finish_non_exhaustive()
    }
}

impl StreamWriter {
    pub fn id(&self) -> u32 {
        self.core.id
    }

    /// DATA frames (split at 32 KiB); waits while the writer queue is full (backpressure).
    pub async fn write(&self, mut data: Bytes) -> Result<(), SpdyError> {
        let _order = self.core.write_lock.lock().await;
        self.writable()?;
        while !data.is_empty() {
            let chunk = data.split_to(data.len().min(MAX_DATA_CHUNK));
            self.send(Frame::Data {
                stream_id: self.core.id,
                fin: false,
                data: chunk,
            })
            .await?;
            // The peer may reset the stream while a large write is queued.
            self.writable()?;
        }
        Ok(())
    }

    /// Our half-close: an empty DATA frame with FLAG_FIN. Idempotent.
    pub async fn close(&self) -> Result<(), SpdyError> {
        let _order = self.core.write_lock.lock().await;
        if self.core.local_done() || self.core.peer_reset.load(Ordering::Acquire) != 0 {
            return Ok(());
        }
        self.core.local.store(LOCAL_FINISHED, Ordering::Release);
        let sent = self
            .send(Frame::Data {
                stream_id: self.core.id,
                fin: true,
                data: Bytes::new(),
            })
            .await;
        self.handle.shared.local_done(self.core.id);
        sent
    }

    /// RST_STREAM (CANCEL). The stream's reads end too.
    pub async fn reset(&self) -> Result<(), SpdyError> {
        let _order = self.core.write_lock.lock().await;
        let before = self.core.local.swap(LOCAL_RESET, Ordering::AcqRel);
        if before == LOCAL_RESET {
            return Ok(());
        }
        let entry = self.handle.shared.state().streams.remove(&self.core.id);
        // The stream is over already: the peer reset it, or both halves have finished.
        let over = self.core.peer_reset.load(Ordering::Acquire) != 0
            || (before == LOCAL_FINISHED && entry.as_ref().is_none_or(|e| e.data.is_none()));
        if over {
            return Ok(());
        }
        self.send(Frame::RstStream {
            stream_id: self.core.id,
            status: rst::CANCEL,
        })
        .await
    }

    fn writable(&self) -> Result<(), SpdyError> {
        let status = self.core.peer_reset.load(Ordering::Acquire);
        if status != 0 {
            return Err(SpdyError::Reset {
                id: self.core.id,
                status,
            });
        }
        if self.core.local_done() {
            return Err(SpdyError::StreamClosed(self.core.id));
        }
        Ok(())
    }

    async fn send(&self, frame: Frame) -> Result<(), SpdyError> {
        self.handle
            .shared
            .out
            .send(Outgoing::Frame(frame))
            .await
            .map_err(|_| SpdyError::SessionClosed)
    }
}
