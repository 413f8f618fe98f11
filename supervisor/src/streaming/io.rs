//! What the transports hand a running exec, attach or forwarded port: the client's stdin
//! and resize events in, output out, and a signal that the client has gone.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

/// Which output a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Stdout,
    Stderr,
}

/// A terminal size as kubelet's clients send it on the resize stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// Set once the client has disconnected: whatever runs for it should stop.
#[derive(Clone)]
pub struct Gone(watch::Receiver<bool>);

/// The transport's side of [`Gone`].
pub struct GoneTx(watch::Sender<bool>);

pub fn gone_signal() -> (GoneTx, Gone) {
    let (tx, rx) = watch::channel(false);
    (GoneTx(tx), Gone(rx))
}

impl GoneTx {
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

impl Gone {
    /// Resolves when the client has gone (never, while it stays).
    pub async fn wait(&mut self) {
        if self.0.wait_for(|g| *g).await.is_err() {
            // The transport ended without firing: its client may still be there.
            std::future::pending::<()>().await;
        }
    }

    pub fn is_gone(&self) -> bool {
        *self.0.borrow()
    }
}

/// The streams of one exec or attach, as the transport has set them up.
pub struct CommandIo {
    /// Data the client typed; the channel closes when the client closed stdin.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    /// Output in the order it was produced; dropped by the backend when output has ended.
    pub output: mpsc::Sender<(Channel, Bytes)>,
    pub resize: Option<mpsc::Receiver<TermSize>>,
    /// The output the client asked for (a terminal's goes to stdout).
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    pub gone: Gone,
}

/// How an exec or attach ended, as written on the error stream.
#[derive(Debug)]
pub enum Outcome {
    Success,
    /// The command exited with a non-zero code.
    ExitCode {
        code: i32,
        message: String,
    },
    Failed(String),
}

/// Output chunks queued between a backend and the transport.
pub const OUTPUT_QUEUE: usize = 64;
