//! Byte pumps between a container's pipes or pty and its FIFOs or files, one small thread
//! each. Pipes are moved with splice(2), so no user-space buffer is touched. A pty goes
//! through a small buffer instead: splicing from a tty blocks in the tty read while holding
//! the destination FIFO's lock, which stalls the client reading that FIFO.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{splice, SpliceFFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

const CHUNK: usize = 1 << 16;
const STACK: usize = 64 * 1024;

/// Copies `src` into `dst` until `src` ends. Returns when `src` reaches EOF (or fails, as a
/// pty master does with EIO once its last slave is closed).
pub fn pump(src: &impl AsFd, dst: &impl AsFd) {
    if nix::unistd::isatty(src.as_fd().as_raw_fd()).unwrap_or(false) {
        return pump_buffered(src, dst);
    }
    loop {
        match splice(src, None, dst, None, CHUNK, SpliceFFlags::SPLICE_F_MOVE) {
            Ok(0) => return,
            Ok(_) => {}
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            Err(Errno::EINVAL) => return pump_buffered(src, dst),
            Err(e) => {
                log::debug!("splice: {e}");
                return;
            }
        }
    }
}

fn pump_buffered(src: &impl AsFd, dst: &impl AsFd) {
    let (Ok(src), Ok(dst)) = (
        src.as_fd().try_clone_to_owned(),
        dst.as_fd().try_clone_to_owned(),
    ) else {
        return;
    };
    let (mut src, mut dst) = (File::from(src), File::from(dst));
    let mut buf = vec![0u8; 8192];
    loop {
        match src.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if let Err(e) = dst.write_all(&buf[..n]) {
                    log::debug!("copy write: {e}");
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}

/// Starts a named pump thread with a small stack.
pub fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(STACK)
        .spawn(f)
        .map(|_| ())
}

/// Counts the output pumps of a process still running, so that Delete can wait until every
/// byte the process wrote has reached its destination.
#[derive(Clone, Default)]
pub struct Drained(Arc<(Mutex<usize>, Condvar)>);

impl Drained {
    pub fn add(&self) {
        *self.0 .0.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }

    pub fn done(&self) {
        let (count, cond) = &*self.0;
        let mut n = count.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        cond.notify_all();
    }

    /// Waits until every pump ended or `timeout` passed; true if all ended.
    pub fn wait(&self, timeout: Duration) -> bool {
        let (count, cond) = &*self.0;
        let n = count.lock().unwrap_or_else(|p| p.into_inner());
        let (n, _) = cond
            .wait_timeout_while(n, timeout, |n| *n > 0)
            .unwrap_or_else(|p| p.into_inner());
        *n == 0
    }
}

/// Copies a stdin FIFO into the process until `cancel` is closed (the process ended), the
/// destination is taken away, or the FIFO ends: then the process's stdin is closed. The
/// shim holds a writer of the FIFO until CloseIO, so a client that goes away (containerd
/// restarting) does not end stdin, and what was written before CloseIO is still delivered.
pub fn pump_stdin(fifo: File, dst: Arc<Mutex<Option<File>>>, cancel: OwnedFd) {
    let to_tty = {
        let guard = dst.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .is_some_and(|f| nix::unistd::isatty(f.as_raw_fd()).unwrap_or(false))
    };
    loop {
        let mut fds = [
            PollFd::new(fifo.as_fd(), PollFlags::POLLIN),
            PollFd::new(cancel.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            Err(_) => return,
            Ok(_) => {}
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            return;
        }
        let mut guard = dst.lock().unwrap_or_else(|p| p.into_inner());
        let Some(out) = guard.as_ref() else { return };
        let spliced = if to_tty {
            Err(Errno::EINVAL)
        } else {
            splice(
                &fifo,
                None,
                out,
                None,
                CHUNK,
                SpliceFFlags::SPLICE_F_NONBLOCK,
            )
        };
        match spliced {
            // No writer left: the FIFO has ended, and so does the process's stdin.
            Ok(0) => {
                guard.take();
                return;
            }
            Ok(_) | Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
            Err(Errno::EINVAL) => {
                let mut buf = [0u8; 4096];
                match (&fifo).read(&mut buf) {
                    Ok(n) if n > 0 => {
                        if (&*out).write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Ok(_) => {
                        guard.take();
                        return;
                    }
                    Err(_) => return,
                }
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pump_moves_every_byte_between_pipes() {
        let (r1, w1) = nix::unistd::pipe().unwrap();
        let (r2, w2) = nix::unistd::pipe().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let writer = std::thread::spawn(move || File::from(w1).write_all(&data).unwrap());
        let copier = std::thread::spawn(move || pump(&r1, &w2));
        let mut got = Vec::new();
        File::from(r2).read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        copier.join().unwrap();
        assert_eq!(got, expected);
    }

    #[test]
    fn drained_waits_for_pumps() {
        let d = Drained::default();
        d.add();
        assert!(!d.wait(Duration::from_millis(10)));
        let d2 = d.clone();
        std::thread::spawn(move || d2.done());
        assert!(d.wait(Duration::from_secs(5)));
    }
}
