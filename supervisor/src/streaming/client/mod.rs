//! Clients of the streaming server: exec, attach and port-forward over WebSocket or SPDY,
//! speaking the protocols kubelet's streaming server speaks (so they work against limpetd,
//! containerd and CRI-O alike).

mod connect;
mod port_forward;
mod remote_command;
mod spdy_upgrade;
mod status;
mod target;
#[cfg(test)]
mod test_util;
mod websocket;

use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncWrite};

pub use port_forward::{
    websocket_port_forward, websocket_port_forward_with, ForwardedConn, SpdyPortForward,
};
pub use remote_command::{
    remote_command, remote_command_fallback, remote_command_with, RemoteCommand,
};

/// The transport a streaming URL is upgraded to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    Spdy,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::WebSocket => "WebSocket",
            Transport::Spdy => "SPDY",
        })
    }
}

/// The local ends of a remote command's streams. A stream left `None` is not asked for.
#[derive(Default)]
pub struct CommandIo {
    /// Copied to the command's stdin; its EOF closes the command's stdin.
    pub stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub stdout: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    /// Unused with `tty`: a terminal has one output stream.
    pub stderr: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    pub tty: bool,
    /// Terminal sizes to send (with `tty` only), the first one as soon as the streams are up.
    pub resize: Option<tokio::sync::mpsc::Receiver<TermSize>>,
}

/// A terminal size, serialized as the resize stream carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TermSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// How a remote command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The command's exit code (0 on success).
    Code(i32),
    /// A failure that is not an exit code: the server's message.
    Error(String),
}

/// TLS settings for `https://` streaming URLs.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// A PEM file of CA certificates: the only ones trusted. `None`: the system's CA bundle.
    pub ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("streaming URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    TlsConfig(String),
    #[error("TLS handshake with {host}: {source}")]
    Tls {
        host: String,
        source: std::io::Error,
    },
    /// The server answered the upgrade request with something other than 101.
    #[error("the server refused the {transport} upgrade: HTTP {status}: {message}")]
    UpgradeRefused {
        transport: Transport,
        status: u16,
        message: String,
    },
    /// The upgrade went through but no protocol both sides speak was agreed on.
    #[error("{transport} protocol negotiation: {reason}")]
    Negotiation {
        transport: Transport,
        reason: String,
    },
    #[error("WebSocket: {0}")]
    WebSocket(#[from] Box<tokio_tungstenite::tungstenite::Error>),
    #[error("SPDY: {0}")]
    Spdy(#[from] crate::streaming::spdy::SpdyError),
    #[error("HTTP upgrade request: {0}")]
    Http(#[from] hyper::Error),
    #[error("streaming protocol error: {0}")]
    Protocol(String),
    #[error("streaming protocol error: {0}")]
    Channel(#[from] crate::streaming::ws_channel::ChannelError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

impl ClientError {
    /// The server does not speak this transport (or these protocol versions) here: another
    /// transport may still work, as kubectl's WebSocket-to-SPDY fallback assumes.
    pub fn is_upgrade_refused(&self) -> bool {
        matches!(
            self,
            ClientError::UpgradeRefused { .. } | ClientError::Negotiation { .. }
        )
    }

    fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> ClientError {
        move |source| ClientError::Io { what, source }
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for ClientError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        ClientError::WebSocket(Box::new(e))
    }
}
