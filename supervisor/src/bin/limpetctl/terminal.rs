//! The local terminal of an interactive exec or attach: raw mode while the session runs, the
//! terminal's size, and its changes (SIGWINCH).

use std::io::IsTerminal;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use anyhow::Context;
use limpetd::streaming::client::TermSize;
use nix::sys::termios::{self, SetArg, Termios};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// An async handle on one of our stdio streams (a dup of its descriptor; reads and writes
/// run on tokio's blocking threads, so the descriptor stays blocking for whoever shares it).
pub fn async_stdio(fd: BorrowedFd<'_>) -> anyhow::Result<tokio::fs::File> {
    let owned = fd
        .try_clone_to_owned()
        .context("duplicate a stdio descriptor")?;
    Ok(tokio::fs::File::from_std(std::fs::File::from(owned)))
}

/// Whether our stdin is a terminal (a TTY session needs one to read keys from).
pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// Stdin's terminal in raw mode (keys go to the remote side as typed, Ctrl-C and Ctrl-D
/// included); the saved settings come back when this is dropped.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    pub fn enable() -> anyhow::Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).context("read the terminal's settings")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
            .context("put the terminal in raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

nix::ioctl_read_bad!(tiocgwinsz, libc::TIOCGWINSZ, libc::winsize);

/// The terminal's size, from stdout or else stdin; `None` if neither is a terminal.
pub fn size() -> Option<TermSize> {
    let stdout = std::io::stdout();
    let stdin = std::io::stdin();
    let fds = [
        (stdout.is_terminal(), stdout.as_raw_fd()),
        (stdin.is_terminal(), stdin.as_raw_fd()),
    ];
    fds.into_iter().filter(|(tty, _)| *tty).find_map(|(_, fd)| {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize into the struct it points at, which lives
        // on our stack for the whole call; `fd` is our open stdin or stdout.
        let ok = unsafe { tiocgwinsz(fd, &mut ws) }.is_ok();
        (ok && ws.ws_col > 0 && ws.ws_row > 0).then_some(TermSize {
            width: ws.ws_col,
            height: ws.ws_row,
        })
    })
}

/// The terminal's size now, then after every change.
pub fn watch_size() -> anyhow::Result<mpsc::Receiver<TermSize>> {
    let mut winch = signal(SignalKind::window_change()).context("watch SIGWINCH")?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut last = None;
        loop {
            if let Some(now) = size().filter(|s| Some(*s) != last) {
                last = Some(now);
                if tx.send(now).await.is_err() {
                    return;
                }
            }
            if winch.recv().await.is_none() {
                return;
            }
        }
    });
    Ok(rx)
}
