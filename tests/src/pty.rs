//! Running a command on a pseudo-terminal, as a user at a terminal would run `ctr run -t`:
//! the command gets the slave as its controlling terminal, the test holds the master, types
//! into it, reads the screen and resizes the window (the kernel sends SIGWINCH).
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use nix::pty::{openpty, Winsize};

use crate::ctr::{kill_and_reap, wait_deadline};

pub struct PtyChild {
    child: Child,
    master: File,
    chunks: Receiver<Vec<u8>>,
    screen: Vec<u8>,
}

fn winsize(rows: u16, cols: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl PtyChild {
    /// Spawns `cmd` in a new session whose controlling terminal is a fresh pty of the given size.
    pub fn spawn(mut cmd: Command, rows: u16, cols: u16) -> std::io::Result<PtyChild> {
        let pty = openpty(Some(&winsize(rows, cols)), None).map_err(std::io::Error::from)?;
        let slave: OwnedFd = pty.slave;
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        // SAFETY: between fork and exec only async-signal-safe calls: setsid and ioctl.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        // `cmd` (and with it our copies of the slave) must go, or reads never see EOF.
        drop(cmd);
        let master = File::from(pty.master);
        let mut reader = master.try_clone()?;
        let (tx, chunks) = channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the last slave holder is gone.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Ok(PtyChild {
            child,
            master,
            chunks,
            screen: Vec::new(),
        })
    }

    /// Changes the window size; the kernel signals SIGWINCH to the foreground process group.
    pub fn resize(&self, rows: u16, cols: u16) -> std::io::Result<()> {
        let size = winsize(rows, cols);
        // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which outlives the call.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ as _, &size) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Types `bytes` at the terminal.
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.master.write_all(bytes)
    }

    /// Everything printed so far, lossily decoded.
    pub fn screen(&mut self) -> String {
        while let Ok(chunk) = self.chunks.try_recv() {
            self.screen.extend_from_slice(&chunk);
        }
        String::from_utf8_lossy(&self.screen).into_owned()
    }

    /// Waits until the screen contains `needle`; true if it did within `timeout`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.screen().contains(needle) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if let Ok(chunk) = self
                .chunks
                .recv_timeout(left.min(Duration::from_millis(50)))
            {
                self.screen.extend_from_slice(&chunk);
            }
        }
    }

    /// Waits for the process to exit, killing it at the deadline (then None).
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        match wait_deadline(&mut self.child, timeout) {
            (status, false) => status,
            (_, true) => None,
        }
    }
}

impl Drop for PtyChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            kill_and_reap(&mut self.child, Duration::from_secs(5));
        }
    }
}
