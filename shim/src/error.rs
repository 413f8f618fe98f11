//! Errors of the shim, and their ttrpc status codes (containerd maps them back to errdefs).

use limpet_protos::ttrpc::{self, Code};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}: already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}: not implemented")]
    Unimplemented(String),
    #[error("OCI runtime {command} failed: {message}")]
    Runc { command: String, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Sys {
        context: String,
        #[source]
        source: nix::Error,
    },
    #[error("{context}: {source}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{context}: {source}")]
    Protobuf {
        context: String,
        #[source]
        source: limpet_protos::protobuf::Error,
    },
    #[error("{context}: {source}")]
    Ttrpc {
        context: String,
        #[source]
        source: ttrpc::Error,
    },
    #[error("cgroups: {0}")]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error("oom watcher: {0}")]
    Oom(#[from] crate::oom::OomError),
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::NotFound(_) => Code::NOT_FOUND,
            Error::AlreadyExists(_) => Code::ALREADY_EXISTS,
            Error::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            Error::InvalidArgument(_) | Error::Json { .. } | Error::Protobuf { .. } => {
                Code::INVALID_ARGUMENT
            }
            Error::Unimplemented(_) => Code::UNIMPLEMENTED,
            _ => Code::UNKNOWN,
        }
    }
}

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

/// Adds context to the low-level errors the shim's syscalls and I/O return.
pub trait Context<T> {
    fn context<C: std::fmt::Display>(self, context: C) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn context<C: std::fmt::Display>(self, context: C) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context.to_string(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, nix::Error> {
    fn context<C: std::fmt::Display>(self, context: C) -> Result<T> {
        self.map_err(|source| Error::Sys {
            context: context.to_string(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, serde_json::Error> {
    fn context<C: std::fmt::Display>(self, context: C) -> Result<T> {
        self.map_err(|source| Error::Json {
            context: context.to_string(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, limpet_protos::protobuf::Error> {
    fn context<C: std::fmt::Display>(self, context: C) -> Result<T> {
        self.map_err(|source| Error::Protobuf {
            context: context.to_string(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, ttrpc::Error> {
    fn context<C: std::fmt::Display>(self, context: C) -> Result<T> {
        self.map_err(|source| Error::Ttrpc {
            context: context.to_string(),
            source,
        })
    }
}

/// Ids that become file names (container ids, exec ids) follow containerd's identifier
/// rule: alphanumerics separated by single `.`, `_` or `-`, at most 76 characters.
pub fn validate_id(kind: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 76
        && id
            .split(['.', '_', '-'])
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{kind} {id:?}: invalid identifier (alphanumerics separated by '.', '_' or '-', at most 76)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_escape_a_directory_are_refused() {
        for bad in [
            "",
            "..",
            "a/b",
            "../x",
            "a..b",
            "-a",
            "a-",
            "a b",
            &"x".repeat(77),
        ] {
            assert!(validate_id("id", bad).is_err(), "{bad:?}");
        }
        for good in ["a", "exec-1", "c1.2_3", "0123456789abcdef"] {
            assert!(validate_id("id", good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn codes_map_to_containerd_errdefs() {
        assert_eq!(Error::NotFound("x".into()).code(), Code::NOT_FOUND);
        assert_eq!(Error::Unimplemented("x".into()).code(), Code::UNIMPLEMENTED);
        assert_eq!(
            Error::AlreadyExists("x".into()).code(),
            Code::ALREADY_EXISTS
        );
    }
}
