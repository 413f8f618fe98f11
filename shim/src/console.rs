//! runc's console socket: runc creates the pty in the container and sends its master over a
//! unix socket that the shim listens on.

use std::fs::File;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use crate::error::{Context, Error, Result};

pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    /// Listens on a fresh socket in a private temporary directory (the path must stay well
    /// under the 108 bytes a socket address holds, so it does not live in the bundle).
    pub fn new() -> Result<ConsoleSocket> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "limpet-pty-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).context(format!("create {}", dir.display()))?;
        let path = dir.join("pty.sock");
        let listener = UnixListener::bind(&path).context(format!("bind {}", path.display()))?;
        Ok(ConsoleSocket { listener, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Receives the pty master runc sent while creating the process.
    pub fn receive(&self) -> Result<File> {
        let mut fds = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
        let ready =
            poll(&mut fds, PollTimeout::from(10_000u16)).context("wait for runc console")?;
        if ready == 0 {
            return Err(Error::FailedPrecondition(
                "runc did not send the console".into(),
            ));
        }
        let (stream, _) = self.listener.accept().context("accept runc console")?;
        let mut buf = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .context("receive runc console")?;
        for cmsg in msg.cmsgs().context("read console control message")? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                if let Some(&fd) = fds.first() {
                    for extra in &fds[1..] {
                        // SAFETY: received fds are ours to own; close the unexpected ones.
                        #[allow(unsafe_code)]
                        drop(unsafe { OwnedFd::from_raw_fd(*extra) });
                    }
                    // SAFETY: SCM_RIGHTS hands us a new descriptor that nothing else owns.
                    #[allow(unsafe_code)]
                    return Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
                }
            }
        }
        Err(Error::FailedPrecondition(
            "runc sent no console descriptor".into(),
        ))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Sets the window size of a pty.
pub fn resize(master: &File, width: u32, height: u32) -> Result<()> {
    let ws = libc::winsize {
        ws_row: height.min(u16::MAX as u32) as u16,
        ws_col: width.min(u16::MAX as u32) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    nix::errno::Errno::result(rc)
        .map(|_| ())
        .context("resize pty")
}
