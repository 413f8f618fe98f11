//! One layer's way in: the download streams, in one pass on a blocking thread, through the
//! content store writer (size bound, digest) and the decompressor into the unpacker (diff id),
//! so a layer is on disk once and read once. The blob commits only when its digest matches,
//! the snapshot only when both digests do.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};

use super::error::PullError;
use super::manifest::Descriptor;
use super::registry::{RegistryError, Session};
use crate::content::{ContentStore, Writer};
use crate::digest::Digest;
use crate::snapshots::{unpack, Pending, Snapshotter};

/// Body chunks buffered between the download and the unpacker. hyper's chunks grow to a few
/// hundred KiB on a fast link: a short queue keeps a pull's memory flat.
const CHUNKS_IN_FLIGHT: usize = 1;

/// Where the layer is unpacked to, and what its content must hash to.
pub struct UnpackTo {
    pub pending: Pending,
    pub diff_id: Digest,
    pub chain_id: Digest,
    pub parent: Option<Digest>,
}

/// The first failure seen below the decompressor: it explains the tar error above it.
type Failure = Arc<Mutex<Option<PullError>>>;

fn record(slot: &Failure, e: PullError) -> io::Error {
    let msg = e.to_string();
    let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
    if s.is_none() {
        *s = Some(e);
    }
    io::Error::other(msg)
}

fn take(slot: &Failure) -> Option<PullError> {
    slot.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// Reads the chunks the download task sends.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, PullError>>,
    cur: Bytes,
    failure: Failure,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(record(&self.failure, e)),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

/// Copies everything read into the blob writer.
struct Tee<R> {
    inner: R,
    writer: Option<Writer>,
    layer: Digest,
    failure: Failure,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(w) = &mut self.writer {
            if let Err(e) = io::Write::write_all(w, &buf[..n]) {
                let err = PullError::Content {
                    layer: self.layer.clone(),
                    source: w.error(e),
                };
                return Err(record(&self.failure, err));
            }
        }
        Ok(n)
    }
}

struct HashReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Decompresses by magic number (gzip, zstd, or a plain tar), whatever the media type says.
fn decompressor<'a, B: BufRead + 'a>(mut input: B) -> io::Result<Box<dyn Read + 'a>> {
    let head = input.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(input))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(input)?)
    } else {
        Box::new(input)
    })
}

/// Runs on a blocking thread: stores (when `writer` is given) and unpacks (when `unpack` is)
/// the layer read from `source`.
pub fn process<R: Read>(
    source: R,
    layer: &Digest,
    writer: Option<Writer>,
    unpack_to: Option<UnpackTo>,
    snapshots: &Snapshotter,
    failure: Failure,
) -> Result<(), PullError> {
    let tee = Tee {
        inner: source,
        writer,
        layer: layer.clone(),
        failure: failure.clone(),
    };
    let mut buf = BufReader::with_capacity(32 * 1024, tee);
    let result = pipeline(&mut buf, layer, unpack_to, &failure);
    let tee = buf.into_inner();
    let unpacked = result?;
    if let Some(w) = tee.writer {
        w.commit().map_err(|source| PullError::Content {
            layer: layer.clone(),
            source,
        })?;
    }
    if let Some((to, stats)) = unpacked {
        match snapshots.commit(
            to.pending,
            &to.chain_id,
            to.parent.as_ref(),
            &to.diff_id,
            stats,
        ) {
            Ok(_) => {}
            // Another pull committed the same chain from another blob meanwhile: same content.
            Err(crate::snapshots::SnapshotError::Store(crate::store::StoreError::Conflict(_))) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads the whole blob from `buf`, unpacking it on the way when asked to.
fn pipeline<R: Read>(
    buf: &mut BufReader<Tee<R>>,
    layer: &Digest,
    unpack_to: Option<UnpackTo>,
    failure: &Failure,
) -> Result<Option<(UnpackTo, unpack::UnpackStats)>, PullError> {
    let Some(to) = unpack_to else {
        io::copy(buf, &mut io::sink()).map_err(|e| io_failure(failure, layer, e))?;
        return Ok(None);
    };
    let actual = {
        let dec = decompressor(&mut *buf).map_err(|e| io_failure(failure, layer, e))?;
        let mut hashed = HashReader {
            inner: dec,
            hasher: Sha256::new(),
        };
        let stats = unpack::unpack(&mut hashed, &to.pending.fs()).map_err(|e| {
            take(failure).unwrap_or(PullError::Unpack {
                layer: layer.clone(),
                source: e,
            })
        })?;
        // The diff id covers the tar's end padding; the blob digest whatever follows it.
        io::copy(&mut hashed, &mut io::sink()).map_err(|e| io_failure(failure, layer, e))?;
        (Digest::from_hasher(hashed.hasher), stats)
    };
    let (actual, stats) = actual;
    io::copy(buf, &mut io::sink()).map_err(|e| io_failure(failure, layer, e))?;
    if actual != to.diff_id {
        return Err(PullError::DiffId {
            layer: layer.clone(),
            expected: to.diff_id,
            actual,
        });
    }
    Ok(Some((to, stats)))
}

fn io_failure(failure: &Failure, layer: &Digest, e: io::Error) -> PullError {
    take(failure).unwrap_or_else(|| PullError::Unpack {
        layer: layer.clone(),
        source: unpack::UnpackError::Tar(e),
    })
}

/// Downloads a layer blob and feeds it to [`process`] on a blocking thread. Returns the
/// bytes transferred.
pub async fn fetch_and_process(
    session: &Session<'_>,
    desc: &Descriptor,
    content: &Arc<ContentStore>,
    snapshots: &Arc<Snapshotter>,
    unpack_to: Option<UnpackTo>,
    abort: &AtomicBool,
    on_bytes: impl Fn(u64),
) -> Result<u64, PullError> {
    let resp = session.open_blob(desc).await?;
    let url = resp.url().to_string();
    if let Some(len) = resp.content_length() {
        if len > desc.size {
            return Err(PullError::Content {
                layer: desc.digest.clone(),
                source: crate::content::ContentError::TooLarge {
                    digest: desc.digest.clone(),
                    expected: desc.size,
                },
            });
        }
    }
    let writer = content.writer(&desc.digest, desc.size)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, PullError>>(CHUNKS_IN_FLIGHT);
    let failure: Failure = Arc::default();
    let layer = desc.digest.clone();
    let snaps = snapshots.clone();
    let worker = tokio::task::spawn_blocking(move || {
        let reader = ChannelReader {
            rx,
            cur: Bytes::new(),
            failure: failure.clone(),
        };
        process(reader, &layer, Some(writer), unpack_to, &snaps, failure)
    });
    let timeout = session.timeout();
    let mut body = resp.bytes_stream();
    let mut total = 0u64;
    loop {
        if abort.load(Ordering::Relaxed) {
            let _ = tx
                .send(Err(PullError::Cancelled("another layer failed".into())))
                .await;
            break;
        }
        let item = match tokio::time::timeout(timeout, body.next()).await {
            Err(_) => Some(Err(RegistryError::Timeout {
                url: url.clone(),
                secs: timeout.as_secs(),
            }
            .into())),
            Ok(None) => None,
            Ok(Some(Err(e))) if e.is_timeout() => Some(Err(RegistryError::Timeout {
                url: url.clone(),
                secs: timeout.as_secs(),
            }
            .into())),
            Ok(Some(Err(e))) => Some(Err(RegistryError::Transport {
                url: url.clone(),
                message: chain(&e),
            }
            .into())),
            Ok(Some(Ok(b))) => {
                total += b.len() as u64;
                on_bytes(b.len() as u64);
                Some(Ok(b))
            }
        };
        let Some(item) = item else { break };
        let stop = item.is_err();
        if tx.send(item).await.is_err() || stop {
            break; // the worker failed (it says why) or the download did
        }
    }
    drop(tx);
    worker
        .await
        .map_err(|e| PullError::Internal(format!("layer worker: {e}")))??;
    Ok(total)
}

/// Unpacks a layer whose blob is already in the content store.
pub async fn unpack_local(
    desc: &Descriptor,
    content: &Arc<ContentStore>,
    snapshots: &Arc<Snapshotter>,
    unpack_to: UnpackTo,
) -> Result<(), PullError> {
    let path = content.path(&desc.digest);
    let layer = desc.digest.clone();
    let snaps = snapshots.clone();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(|source| {
            PullError::Blob(crate::content::ContentError::Io {
                context: format!("open blob {layer}"),
                source,
            })
        })?;
        process(file, &layer, None, Some(unpack_to), &snaps, Arc::default())
    })
    .await
    .map_err(|e| PullError::Internal(format!("layer worker: {e}")))?
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
