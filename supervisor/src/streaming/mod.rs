//! The CRI streaming server: `Exec`, `Attach` and `PortForward` answer with a URL on it, and
//! kubelet's clients (kubectl through the API server, crictl, limpetctl) upgrade that URL to
//! SPDY/3.1 or WebSocket and stream through it.

pub mod client;
pub mod dial;
pub mod handshake;
pub mod io;
pub mod server;
pub mod spdy;
mod spdy_command;
mod spdy_port_forward;
pub mod status;
mod tls;
pub mod tokens;
pub mod ws_channel;
pub mod ws_command;
mod ws_finish;
pub mod ws_port_forward;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config_streaming::Streaming as Config;
use crate::runtime::Runtime;
use tokens::{Request, TokenError, Tokens};

#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    #[error("streaming server: bind {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("streaming server TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// The listening server and where its URLs point.
pub struct StreamingServer {
    tokens: Arc<Tokens>,
    base: String,
    task: tokio::task::JoinHandle<()>,
}

impl StreamingServer {
    /// Binds the configured address (a free port if 0) and starts serving.
    pub async fn start(
        config: &Config,
        runtime: Arc<Runtime>,
    ) -> Result<StreamingServer, StreamingError> {
        let address = format!("{}:{}", config.address, config.port);
        let bind_err = |source| StreamingError::Bind {
            address: address.clone(),
            source,
        };
        let addr: SocketAddr = match config.address.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, config.port),
            Err(e) => return Err(bind_err(std::io::Error::other(e))),
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(bind_err)?;
        let local = listener.local_addr().map_err(bind_err)?;
        let tls = if config.tls() {
            Some(tls::acceptor(&config.tls_cert, &config.tls_key)?)
        } else {
            None
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://{local}/");
        let tokens = Arc::new(Tokens::default());
        let ctx = Arc::new(server::Context {
            tokens: tokens.clone(),
            runtime,
            creation_timeout: Duration::from_secs(config.stream_creation_timeout),
        });
        let task = tokio::spawn(server::serve(listener, tls, ctx));
        tracing::info!(url = %base, "streaming server listening");
        Ok(StreamingServer { tokens, base, task })
    }

    /// The single-use URL for `request`.
    pub fn url(&self, request: Request) -> Result<String, StreamingError> {
        let kind = match &request {
            Request::Exec(_) => "exec",
            Request::Attach(_) => "attach",
            Request::PortForward(_) => "portforward",
        };
        let token = self.tokens.insert(request)?;
        Ok(format!("{}{kind}/{token}", self.base))
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }
}

impl Drop for StreamingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
