//! CRI v1 wire types, servers and clients (from `k8s-cri`), and a connector for the unix
//! socket endpoints CRI runtimes listen on.

pub use k8s_cri::v1;
pub use tonic;

use tonic::transport::{Channel, Endpoint, Uri};

/// How a CRI endpoint was written: `unix:///path`, `/path`, or `http://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Unix(std::path::PathBuf),
    Tcp(String),
}

/// Parses an endpoint as crictl accepts it (`unix://` scheme, a bare absolute path, or tcp).
pub fn parse_endpoint(endpoint: &str) -> Result<Target, String> {
    if let Some(path) = endpoint.strip_prefix("unix://") {
        return Ok(Target::Unix(path.into()));
    }
    if endpoint.starts_with('/') {
        return Ok(Target::Unix(endpoint.into()));
    }
    if let Some(addr) = endpoint.strip_prefix("tcp://") {
        return Ok(Target::Tcp(format!("http://{addr}")));
    }
    if endpoint.starts_with("http://") {
        return Ok(Target::Tcp(endpoint.to_string()));
    }
    Err(format!(
        "endpoint {endpoint:?}: expected unix:///path, /path, tcp://host:port or http://host:port"
    ))
}

/// Connects to a CRI endpoint (see [`parse_endpoint`]).
pub async fn connect(endpoint: &str) -> Result<Channel, ConnectError> {
    match parse_endpoint(endpoint).map_err(ConnectError::Endpoint)? {
        Target::Tcp(uri) => Ok(Endpoint::from_shared(uri)
            .map_err(|e| ConnectError::Endpoint(e.to_string()))?
            .connect()
            .await?),
        Target::Unix(path) => {
            // The URI is required by the transport but never used to dial.
            let channel = Endpoint::from_static("http://[::1]:1")
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                }))
                .await?;
            Ok(channel)
        }
    }
}

/// Why [`connect`] failed.
#[derive(Debug)]
pub enum ConnectError {
    Endpoint(String),
    Transport(tonic::transport::Error),
}

impl From<tonic::transport::Error> for ConnectError {
    fn from(e: tonic::transport::Error) -> Self {
        ConnectError::Transport(e)
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Endpoint(e) => f.write_str(e),
            // The transport error alone says "transport error": show its cause too.
            ConnectError::Transport(e) => match std::error::Error::source(e) {
                Some(cause) => write!(f, "{e}: {cause}"),
                None => write!(f, "{e}"),
            },
        }
    }
}

impl std::error::Error for ConnectError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_read_like_crictl() {
        assert_eq!(
            parse_endpoint("unix:///run/limpet/limpetd.sock"),
            Ok(Target::Unix("/run/limpet/limpetd.sock".into()))
        );
        assert_eq!(
            parse_endpoint("/run/x.sock"),
            Ok(Target::Unix("/run/x.sock".into()))
        );
        assert_eq!(
            parse_endpoint("tcp://127.0.0.1:9"),
            Ok(Target::Tcp("http://127.0.0.1:9".into()))
        );
        assert!(parse_endpoint("npipe://x").is_err());
    }
}
