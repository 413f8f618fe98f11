//! The `[streaming]` table: where the server that `Exec`, `Attach` and `PortForward` URLs
//! point at listens, and its optional TLS.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Streaming {
    /// IP address to listen on (containerd's `stream_server_address`).
    pub address: String,
    /// TCP port; 0 picks a free one at start.
    pub port: u16,
    /// PEM certificate chain and key: both set serves https; both empty, plain http.
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// Seconds a SPDY client has to open its streams after the upgrade.
    pub stream_creation_timeout: u64,
}

impl Default for Streaming {
    fn default() -> Self {
        Streaming {
            address: "127.0.0.1".into(),
            port: 0,
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            stream_creation_timeout: 30,
        }
    }
}

impl Streaming {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        if self.address.parse::<std::net::IpAddr>().is_err() {
            return invalid(
                "streaming.address",
                format!("{:?} is not an IP address", self.address),
            );
        }
        if self.tls_cert.as_os_str().is_empty() != self.tls_key.as_os_str().is_empty() {
            return invalid(
                "streaming.tls_cert",
                "tls_cert and tls_key are given together or not at all".into(),
            );
        }
        if self.stream_creation_timeout == 0 {
            return invalid(
                "streaming.stream_creation_timeout",
                "must be at least 1 second".into(),
            );
        }
        Ok(())
    }

    pub fn tls(&self) -> bool {
        !self.tls_cert.as_os_str().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_a_tls_pair_is_refused() {
        let s = Streaming {
            tls_cert: "/etc/cert.pem".into(),
            ..Streaming::default()
        };
        assert!(s.validate().is_err());
        assert!(Streaming::default().validate().is_ok());
    }

    #[test]
    fn a_host_name_is_not_an_address() {
        let s = Streaming {
            address: "localhost".into(),
            ..Streaming::default()
        };
        assert!(s.validate().is_err());
    }
}
