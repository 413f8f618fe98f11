//! Errors of talking to shims: the ttrpc status code survives (NotFound means "already
//! gone"), and every error names the call and the container it was about.

use std::time::Duration;

use limpet_protos::ttrpc;

pub use limpet_protos::ttrpc::Code;

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// The shim binary could not be run at all.
    #[error("shim {action} of {id}: run {binary}: {source}")]
    Spawn {
        action: &'static str,
        id: String,
        binary: String,
        source: std::io::Error,
    },
    /// A shim action (`start`, `delete`) exited unsuccessfully.
    #[error("shim {action} of {id} failed ({status}): {stderr}")]
    Action {
        action: &'static str,
        id: String,
        status: String,
        stderr: String,
    },
    /// The shim answered something we cannot read.
    #[error("shim {action} of {id}: bad reply: {detail}")]
    BadReply {
        action: &'static str,
        id: String,
        detail: String,
    },
    #[error("{what} of {id}: no answer within {after:?}")]
    Timeout {
        what: String,
        id: String,
        after: Duration,
    },
    /// Nothing listens on the shim's socket: the shim process is gone (or never was).
    #[error("connect to shim at {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    /// The shim answered with an error status.
    #[error("{method} of {id}: {code:?}: {message}")]
    Rpc {
        method: &'static str,
        id: String,
        code: Code,
        message: String,
    },
    /// The connection broke during a call: the shim died or closed it.
    #[error("{method} of {id}: connection to shim lost: {detail}")]
    Disconnected {
        method: &'static str,
        id: String,
        detail: String,
    },
    /// A request could not be built from the caller's input.
    #[error("{method} of {id}: invalid request: {detail}")]
    InvalidRequest {
        method: &'static str,
        id: String,
        detail: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{context}: {detail}")]
    Ttrpc { context: String, detail: String },
}

pub type Result<T, E = ShimError> = std::result::Result<T, E>;

impl ShimError {
    /// The ttrpc status code of an error the shim returned.
    pub fn code(&self) -> Option<Code> {
        match self {
            ShimError::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The shim does not know the task or process (deleted before, or never created).
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(Code::NOT_FOUND)
    }

    /// The shim process itself is gone: nothing listens on its socket, or the connection
    /// broke mid-call.
    pub fn is_shim_dead(&self) -> bool {
        match self {
            ShimError::Connect { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::ConnectionReset
            ),
            ShimError::Disconnected { .. } => true,
            _ => false,
        }
    }

    /// Whatever was asked about no longer exists: the task is unknown, or its shim is dead.
    pub fn is_gone(&self) -> bool {
        self.is_not_found() || self.is_shim_dead()
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, ShimError::Timeout { .. })
    }

    /// Classifies an error of the ttrpc client for call `method` about `id`.
    pub(crate) fn from_call(
        method: &'static str,
        id: &str,
        timeout: Option<Duration>,
        e: ttrpc::Error,
    ) -> ShimError {
        let id = id.to_string();
        match e {
            ttrpc::Error::RpcStatus(s) => ShimError::Rpc {
                method,
                id,
                code: s.code(),
                message: s.message,
            },
            ttrpc::Error::Socket(detail) => ShimError::Disconnected { method, id, detail },
            ttrpc::Error::Nix(errno) => ShimError::Disconnected {
                method,
                id,
                detail: errno.to_string(),
            },
            ttrpc::Error::Others(detail) => {
                // The sync client reports its own deadline only as text.
                if let (Some(after), true) = (timeout, detail.contains("timed out")) {
                    ShimError::Timeout {
                        what: method.to_string(),
                        id,
                        after,
                    }
                } else if detail.contains("sending half is closed")
                    || detail.contains("Send packet to sender error")
                {
                    ShimError::Disconnected { method, id, detail }
                } else {
                    ShimError::Ttrpc {
                        context: format!("{method} of {id}"),
                        detail,
                    }
                }
            }
            other => ShimError::Ttrpc {
                context: format!("{method} of {id}"),
                detail: other.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(e: ttrpc::Error) -> ShimError {
        ShimError::from_call("Kill", "c1", Some(Duration::from_secs(1)), e)
    }

    #[test]
    fn status_codes_survive() {
        let e = call(ttrpc::Error::RpcStatus(ttrpc::get_status(
            Code::NOT_FOUND,
            "container c1",
        )));
        assert!(e.is_not_found() && e.is_gone() && !e.is_shim_dead());
        assert_eq!(e.code(), Some(Code::NOT_FOUND));
        assert!(e.to_string().contains("Kill of c1"), "{e}");
        let e = call(ttrpc::Error::RpcStatus(ttrpc::get_status(
            Code::FAILED_PRECONDITION,
            "x",
        )));
        assert!(!e.is_gone());
    }

    #[test]
    fn a_dead_shim_is_recognised() {
        assert!(call(ttrpc::Error::Socket("socket error".into())).is_shim_dead());
        let refused = ShimError::Connect {
            address: "unix:///x".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert!(refused.is_shim_dead() && refused.is_gone());
        let denied = ShimError::Connect {
            address: "unix:///x".into(),
            source: std::io::ErrorKind::PermissionDenied.into(),
        };
        assert!(!denied.is_gone());
    }

    #[test]
    fn client_deadlines_are_timeouts() {
        let e = call(ttrpc::Error::Others(
            "Receive packet from Receiver timeout: timed out waiting on channel".into(),
        ));
        assert!(e.is_timeout(), "{e}");
        assert!(!e.is_gone());
    }
}
