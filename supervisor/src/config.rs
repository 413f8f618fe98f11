//! limpetd's TOML configuration, shaped like containerd's: every key has a default, an unknown
//! key or a bad value is an error that names it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The whole file. `limpetd config default` prints `Config::default()`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Format version of this file.
    pub version: u32,
    /// Persistent state: metadata database, content store, snapshots.
    pub root: PathBuf,
    /// Volatile state: sockets and per-boot files.
    pub state: PathBuf,
    pub grpc: Grpc,
    pub debug: Debug,
    pub metrics: Metrics,
    pub registry: Registry,
    pub runtime: crate::config_runtime::Runtime,
    pub cni: crate::config_runtime::Cni,
    pub streaming: crate::config_streaming::Streaming,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Grpc {
    /// Unix socket of the CRI v1 gRPC server.
    pub address: PathBuf,
    /// Owner uid and gid of the socket (mode 0660).
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Debug {
    /// trace, debug, info, warn or error.
    pub level: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Metrics {
    /// host:port of the Prometheus /metrics endpoint; empty turns it off.
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Registry {
    /// Directory of `<host>/hosts.toml` files, read exactly as containerd reads its
    /// `config_path` (an existing `/etc/containerd/certs.d` works unchanged).
    pub config_path: PathBuf,
    /// Layers downloaded at once per pull.
    pub max_concurrent_downloads: usize,
    /// Seconds a registry may stay silent (connecting, or between two chunks of a body)
    /// before the pull fails.
    pub read_timeout: u64,
    /// Largest manifest, index or image config accepted, in bytes.
    pub max_manifest_size: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: 1,
            root: "/var/lib/limpet".into(),
            state: "/run/limpet".into(),
            grpc: Grpc::default(),
            debug: Debug::default(),
            metrics: Metrics::default(),
            registry: Registry::default(),
            runtime: Default::default(),
            cni: Default::default(),
            streaming: Default::default(),
        }
    }
}

impl Default for Grpc {
    fn default() -> Self {
        Grpc {
            address: "/run/limpet/limpetd.sock".into(),
            uid: 0,
            gid: 0,
        }
    }
}

impl Default for Debug {
    fn default() -> Self {
        Debug {
            level: "info".into(),
        }
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            config_path: "/etc/limpet/certs.d".into(),
            max_concurrent_downloads: 3,
            read_timeout: 30,
            max_manifest_size: 4 << 20,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

const LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.into(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        // toml's message names the key and shows the offending line.
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The full default file, with comments.
    pub fn default_text() -> String {
        let body = toml::to_string(&Config::default()).unwrap_or_default();
        format!(
            "# limpetd configuration (all keys shown with their defaults).\n\
             # root: metadata database, content store, snapshots; state: sockets.\n\
             # grpc.address: CRI socket; metrics.address: host:port of /metrics, empty = off.\n\
             # registry.config_path: <host>/hosts.toml files as containerd reads them.\n\
             # registry.read_timeout: seconds a registry may stay silent mid-pull.\n\
             # runtime.sandbox_image: empty runs the shim's built-in pause as pod sandbox.\n\
             # runtime.runtimes.<handler>: shim and runc-compatible binary of a RuntimeClass.\n\
             # cni: conflist directory and plugin directories of the pod network.\n\
             # streaming: the exec/attach/port-forward server; port 0 = any free port,\n\
             # tls_cert + tls_key = https.\n\n{body}"
        )
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        if self.version != 1 {
            return invalid(
                "version",
                format!("unsupported version {}, expected 1", self.version),
            );
        }
        for (key, path) in [
            ("root", &self.root),
            ("state", &self.state),
            ("grpc.address", &self.grpc.address),
            ("registry.config_path", &self.registry.config_path),
        ] {
            if !path.is_absolute() {
                return invalid(key, format!("{} is not an absolute path", path.display()));
            }
        }
        if !LEVELS.contains(&self.debug.level.as_str()) {
            return invalid(
                "debug.level",
                format!("{:?} is not one of {}", self.debug.level, LEVELS.join(", ")),
            );
        }
        if !self.metrics.address.is_empty() && self.metrics_address().is_none() {
            return invalid(
                "metrics.address",
                format!(
                    "{:?} is not host:port (for example 127.0.0.1:9338)",
                    self.metrics.address
                ),
            );
        }
        if self.registry.max_concurrent_downloads == 0 {
            return invalid(
                "registry.max_concurrent_downloads",
                "must be at least 1".into(),
            );
        }
        if self.registry.read_timeout == 0 {
            return invalid("registry.read_timeout", "must be at least 1 second".into());
        }
        if self.registry.max_manifest_size < 1024 {
            return invalid(
                "registry.max_manifest_size",
                "must be at least 1024 bytes".into(),
            );
        }
        self.runtime.validate()?;
        self.cni.validate()?;
        self.streaming.validate()
    }

    /// The metrics listen address, if metrics are on.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        use std::net::ToSocketAddrs;
        self.metrics.address.to_socket_addrs().ok()?.next()
    }

    pub fn read_timeout(&self) -> Duration {
        Duration::from_secs(self.registry.read_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_text_parses_back_to_default() {
        let text = Config::default_text();
        assert_eq!(Config::parse(&text).unwrap(), Config::default());
    }

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("[registry]\nconfig_pth = \"/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("config_pth"), "{err}");
        let err = Config::parse("rooot = \"/x\"\n").unwrap_err().to_string();
        assert!(err.contains("rooot"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let err = Config::parse("[debug]\nlevel = \"loud\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("debug.level"), "{err}");
        let err = Config::parse("root = \"relative\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`root`"), "{err}");
        let err = Config::parse("[metrics]\naddress = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics.address"), "{err}");
        let err = Config::parse("[registry]\nread_timeout = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("read_timeout"), "{err}");
    }

    #[test]
    fn partial_tables_keep_other_defaults() {
        let c = Config::parse("[grpc]\naddress = \"/tmp/x.sock\"\n").unwrap();
        assert_eq!(c.grpc.address, PathBuf::from("/tmp/x.sock"));
        assert_eq!(c.root, PathBuf::from("/var/lib/limpet"));
    }
}
