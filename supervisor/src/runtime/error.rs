//! Why a runtime operation failed, in the terms the CRI glue maps to gRPC codes.

use crate::network::{CniError, ConfigError as CniConfigError, NetnsError};
use crate::oci::SpecError;
use crate::shims::ShimError;
use crate::snapshots::SnapshotError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{context}: {source}")]
    Shim {
        context: String,
        #[source]
        source: ShimError,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("container spec: {0}")]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Cni(#[from] CniError),
    #[error("pod network config: {0}")]
    CniConfig(#[from] CniConfigError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

pub fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let context = context.into();
    move |source| RuntimeError::Io { context, source }
}

pub fn shim_err(context: impl Into<String>) -> impl FnOnce(ShimError) -> RuntimeError {
    let context = context.into();
    move |source| RuntimeError::Shim { context, source }
}

/// A store conflict on a record's name key is the CRI's AlreadyExists.
pub fn name_taken(e: StoreError) -> RuntimeError {
    match e {
        StoreError::Conflict(m) => RuntimeError::AlreadyExists(m),
        e => e.into(),
    }
}
