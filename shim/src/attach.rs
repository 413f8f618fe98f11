//! The attach socket of a process whose output the shim writes to a CRI log: a unix socket
//! `<bundle>/attach` (mode 0600) that fans the output out to whoever connects.
//!
//! Each connection gets every chunk of output from the moment it is accepted, framed as
//! `[stream: 1 stdout, 2 stderr][u32 big-endian length][bytes]` (a terminal's output is
//! stream 1). Nothing is read from connections. The log never waits for a client: every
//! client has a writer thread behind a queue of [`QUEUE`] chunks, and one whose queue is
//! full is disconnected (its last frame may be cut short). Once the output has ended
//! (every [`Feed`] dropped), each connection is closed after its queue is written out, and
//! later connections are closed at once. The listener lives until the [`Attach`] is
//! dropped (the task is deleted): a listening socket that is shut down refuses new
//! connections instead of closing them, so it keeps accepting until then.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::copy;
use crate::crilog::Stream;
use crate::error::{Context, Result};

/// The socket's file name in the bundle.
pub const SOCKET: &str = "attach";
/// Chunks a client may have waiting before it is disconnected.
pub const QUEUE: usize = 1024;

/// One framed chunk, shared by every client's queue.
type Frame = Arc<[u8]>;

/// The attach socket of one process. Dropping it closes every connection, stops the
/// listener and removes the socket file.
pub struct Attach {
    hub: Arc<Hub>,
    /// The bundle, opened `O_PATH`: the socket is reached through `/proc/self/fd`, so that
    /// a bundle path too long for `sun_path` still works.
    dir: File,
    /// Device and inode of the socket bound, so that only our own file is removed.
    bound: (u64, u64),
}

/// A pump's handle on the attach socket. The output has ended when the last one is dropped.
pub struct Feed(Arc<Hub>);

struct Hub {
    state: Mutex<State>,
    listener: UnixListener,
}

#[derive(Default)]
struct State {
    clients: Vec<Client>,
    /// Connections still writing out their queue after the output ended.
    draining: Vec<Weak<UnixStream>>,
    feeds: usize,
    /// The output has ended: connections are closed as soon as they are accepted.
    ended: bool,
    /// The `Attach` is gone: the accept thread ends.
    stopped: bool,
}

struct Client {
    queue: SyncSender<Frame>,
    conn: Arc<UnixStream>,
}

impl Attach {
    /// Binds `<bundle>/attach`, replacing a stale socket file left there, and starts
    /// accepting connections.
    pub fn bind(bundle: &Path) -> Result<Attach> {
        let shown = bundle.join(SOCKET);
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(bundle)
            .context(format!("open bundle {}", bundle.display()))?;
        let path = socket_path(&dir);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()) {
            std::fs::remove_file(&path)
                .context(format!("remove stale socket {}", shown.display()))?;
        }
        let listener = UnixListener::bind(&path).context(format!("bind {}", shown.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .context(format!("chmod {}", shown.display()))?;
        let meta = std::fs::symlink_metadata(&path).context(format!("stat {}", shown.display()))?;
        let hub = Arc::new(Hub {
            state: Mutex::default(),
            listener,
        });
        let attach = Attach {
            hub: hub.clone(),
            dir,
            bound: (meta.dev(), meta.ino()),
        };
        // On failure `attach` is dropped, which removes the socket again.
        copy::spawn("attach", move || hub.accept_loop())
            .context(format!("start accepting on {}", shown.display()))?;
        Ok(attach)
    }

    /// A handle for one output pump; see [`Feed`].
    pub fn feed(&self) -> Feed {
        self.hub.lock().feeds += 1;
        Feed(self.hub.clone())
    }

    #[cfg(test)]
    fn clients(&self) -> usize {
        self.hub.lock().clients.len()
    }
}

impl Drop for Attach {
    fn drop(&mut self) {
        let draining = {
            let mut state = self.hub.lock();
            state.stopped = true;
            state.end();
            std::mem::take(&mut state.draining)
        };
        // Clients that still have not read their queue are cut off.
        for conn in draining.iter().filter_map(Weak::upgrade) {
            let _ = conn.shutdown(Shutdown::Both);
        }
        // Wakes the accept thread: accept(2) fails once the queued connections are taken.
        let _ = nix::sys::socket::shutdown(
            self.hub.listener.as_raw_fd(),
            nix::sys::socket::Shutdown::Both,
        );
        let path = socket_path(&self.dir);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| (m.dev(), m.ino()) == self.bound) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

impl Feed {
    /// Queues a chunk of output for every client; never blocks on one.
    pub fn publish(&self, stream: Stream, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut state = self.0.lock();
        if state.clients.is_empty() {
            return;
        }
        let frame = frame(stream, data);
        state
            .clients
            .retain(|client| match client.queue.try_send(frame.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    log::debug!("attach client too slow: disconnected");
                    let _ = client.conn.shutdown(Shutdown::Both);
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            });
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.feeds = state.feeds.saturating_sub(1);
        if state.feeds == 0 {
            state.end();
        }
    }
}

impl State {
    /// The output has ended: each client's writer closes its connection once its queue is
    /// written out.
    fn end(&mut self) {
        self.ended = true;
        self.draining.retain(|w| w.strong_count() > 0);
        for client in self.clients.drain(..) {
            self.draining.push(Arc::downgrade(&client.conn));
        }
    }
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn accept_loop(&self) {
        loop {
            match self.listener.accept() {
                Ok((conn, _)) => self.add(conn),
                Err(_) if self.lock().stopped => return,
                Err(e) => match e.kind() {
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::ConnectionAborted => {}
                    // Out of fds or memory: wait rather than spin.
                    _ => {
                        log::warn!("attach socket: accept: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                },
            }
        }
    }

    fn add(&self, conn: UnixStream) {
        let mut state = self.lock();
        if state.ended {
            // Dropped here: the client reads EOF at once.
            return;
        }
        // Clients that hung up while no output came would otherwise keep their thread.
        state.clients.retain(|c| !hung_up(&c.conn));
        let conn = Arc::new(conn);
        let (queue, chunks) = sync_channel(QUEUE);
        let writer = conn.clone();
        match copy::spawn("attach-client", move || write_out(&writer, chunks)) {
            Ok(()) => state.clients.push(Client { queue, conn }),
            Err(e) => log::warn!("attach socket: start client writer: {e}"),
        }
    }
}

/// Writes a client's frames until its queue is closed or the connection fails, then closes
/// the connection (the hub may still hold a handle on it).
fn write_out(conn: &UnixStream, chunks: Receiver<Frame>) {
    let mut out = conn;
    for frame in chunks {
        if out.write_all(&frame).is_err() {
            break;
        }
    }
    let _ = conn.shutdown(Shutdown::Both);
}

fn hung_up(conn: &UnixStream) -> bool {
    let mut fds = [PollFd::new(conn.as_fd(), PollFlags::empty())];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR))
}

fn socket_path(dir: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{SOCKET}", dir.as_raw_fd()))
}

/// `[stream][u32 big-endian length][bytes]`; chunks are single reads, far below 4 GiB.
fn frame(stream: Stream, data: &[u8]) -> Frame {
    let code = match stream {
        Stream::Stdout => 1u8,
        Stream::Stderr => 2u8,
    };
    let mut out = Vec::with_capacity(5 + data.len());
    out.push(code);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::time::Instant;

    fn connect(dir: &Path) -> UnixStream {
        let conn = UnixStream::connect(dir.join(SOCKET)).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        conn
    }

    #[track_caller]
    fn wait_clients(attach: &Attach, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while attach.clients() != n {
            assert!(
                Instant::now() < deadline,
                "{} clients, not {n}",
                attach.clients()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Reads frames until EOF; the bool says whether the stream ended on a frame boundary.
    fn read_frames(mut conn: &UnixStream) -> (Vec<(u8, Vec<u8>)>, bool) {
        let mut bytes = Vec::new();
        conn.read_to_end(&mut bytes).unwrap();
        let mut frames = Vec::new();
        let mut rest = &bytes[..];
        while rest.len() >= 5 {
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            if rest.len() < 5 + len {
                return (frames, false);
            }
            frames.push((rest[0], rest[5..5 + len].to_vec()));
            rest = &rest[5 + len..];
        }
        (frames, rest.is_empty())
    }

    #[test]
    fn frames_are_stream_length_bytes() {
        assert_eq!(&*frame(Stream::Stdout, b"hi"), b"\x01\x00\x00\x00\x02hi");
        let big = vec![b'x'; 70_000];
        let f = frame(Stream::Stderr, &big);
        assert_eq!(&f[..5], &[2, 0, 1, 0x11, 0x70]);
        assert_eq!(f.len(), 5 + 70_000);
    }

    #[test]
    fn two_clients_get_the_same_frames_then_eof() {
        let dir = tempfile::tempdir().unwrap();
        let attach = Attach::bind(dir.path()).unwrap();
        let (out, err) = (attach.feed(), attach.feed());
        out.publish(Stream::Stdout, b"before anyone\n");
        let (a, b) = (connect(dir.path()), connect(dir.path()));
        wait_clients(&attach, 2);
        out.publish(Stream::Stdout, b"one\n");
        err.publish(Stream::Stderr, b"two\n");
        out.publish(Stream::Stdout, b"");
        out.publish(Stream::Stdout, b"three");
        drop(out);
        err.publish(Stream::Stderr, b"last");
        drop(err);
        let want = vec![
            (1, b"one\n".to_vec()),
            (2, b"two\n".to_vec()),
            (1, b"three".to_vec()),
            (2, b"last".to_vec()),
        ];
        for conn in [&a, &b] {
            assert_eq!(read_frames(conn), (want.clone(), true));
        }
    }

    #[test]
    fn a_slow_client_is_dropped_without_blocking_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let attach = Attach::bind(dir.path()).unwrap();
        let feed = attach.feed();
        let slow = connect(dir.path());
        let fast = connect(dir.path());
        wait_clients(&attach, 2);
        let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = read.clone();
        let reader = std::thread::spawn(move || {
            let mut conn = &fast;
            let mut header = [0u8; 5];
            while conn.read_exact(&mut header).is_ok() {
                let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
                let mut body = vec![0u8; len as usize];
                conn.read_exact(&mut body).unwrap();
                assert_eq!((header[0], body), (1, vec![b'y'; 4096]));
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        // Bursts of half a queue, each read by the fast client before the next: the slow
        // one, which reads nothing, overflows its socket buffer and then its queue.
        let chunk = vec![b'y'; 4096];
        let bursts = 6;
        for burst in 1..=bursts {
            let started = Instant::now();
            for _ in 0..QUEUE / 2 {
                feed.publish(Stream::Stdout, &chunk);
            }
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "publish blocked"
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while read.load(std::sync::atomic::Ordering::SeqCst) < burst * QUEUE / 2 {
                assert!(Instant::now() < deadline, "the fast client fell behind");
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        assert_eq!(attach.clients(), 1, "the slow client was not dropped");
        // The slow client reads what reached its socket, then EOF.
        let (frames, _) = read_frames(&slow);
        assert!(frames.len() < bursts * QUEUE / 2, "{} frames", frames.len());
        assert!(frames.iter().all(|(s, d)| *s == 1 && *d == chunk));
        drop(feed);
        reader.join().unwrap();
        assert_eq!(
            read.load(std::sync::atomic::Ordering::SeqCst),
            bursts * QUEUE / 2
        );
    }

    #[test]
    fn the_end_of_output_closes_clients_and_later_ones_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let attach = Attach::bind(dir.path()).unwrap();
        let feed = attach.feed();
        let early = connect(dir.path());
        wait_clients(&attach, 1);
        feed.publish(Stream::Stderr, b"bye");
        drop(feed);
        assert_eq!(read_frames(&early), (vec![(2, b"bye".to_vec())], true));
        let late = connect(dir.path());
        let started = Instant::now();
        assert_eq!(read_frames(&late), (Vec::new(), true));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(attach.clients(), 0);
    }

    #[test]
    fn a_stale_socket_is_replaced_and_the_file_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SOCKET);
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists(), "stale socket left behind");
        let attach = Attach::bind(dir.path()).unwrap();
        let mode = std::fs::symlink_metadata(&path).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        let conn = connect(dir.path());
        wait_clients(&attach, 1);
        drop(attach);
        assert!(!path.exists());
        assert_eq!(read_frames(&conn), (Vec::new(), true));
        // Something other than a socket is not removed: binding fails instead.
        std::fs::write(&path, "x").unwrap();
        assert!(Attach::bind(dir.path()).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x");
    }

    #[test]
    fn clients_that_hung_up_are_forgotten_on_the_next_connection() {
        let dir = tempfile::tempdir().unwrap();
        let attach = Attach::bind(dir.path()).unwrap();
        let _feed = attach.feed();
        let (gone, peer) = UnixStream::pair().unwrap();
        attach.hub.add(gone);
        drop(peer);
        assert_eq!(attach.clients(), 1);
        let (kept, _peer) = UnixStream::pair().unwrap();
        attach.hub.add(kept);
        assert_eq!(attach.clients(), 1);
        // A client that only shut its writing side down still reads: it stays.
        let (half, half_peer) = UnixStream::pair().unwrap();
        half_peer.shutdown(Shutdown::Write).unwrap();
        attach.hub.add(half);
        let (another, _another_peer) = UnixStream::pair().unwrap();
        attach.hub.add(another);
        assert_eq!(attach.clients(), 3);
    }
}
