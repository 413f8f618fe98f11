//! gRPC status codes for the errors of the image side.

use tonic::{Code, Status};

use crate::content::ContentError;
use crate::images::registry::RegistryError;
use crate::images::{ImageQueryError, PullError};
use crate::snapshots::unpack::UnpackError;

pub fn pull_status(image: &str, e: &PullError) -> Status {
    let code = match e {
        PullError::Reference(_) | PullError::Auth(_) => Code::InvalidArgument,
        PullError::Registry(r) => match r {
            RegistryError::NotFound { .. } => Code::NotFound,
            RegistryError::Unauthorized { .. } => Code::Unauthenticated,
            RegistryError::Timeout { .. } => Code::DeadlineExceeded,
            RegistryError::Transport { .. } | RegistryError::Status { .. } => Code::Unavailable,
            RegistryError::Digest { .. } | RegistryError::TooLarge { .. } => Code::DataLoss,
            RegistryError::Hosts(_) | RegistryError::Tls { .. } | RegistryError::NoHost { .. } => {
                Code::FailedPrecondition
            }
        },
        PullError::Manifest(crate::images::manifest::ManifestError::NoPlatform { .. }) => {
            Code::NotFound
        }
        PullError::Manifest(_) => Code::InvalidArgument,
        PullError::Content { source, .. } | PullError::Blob(source) => content_code(source),
        PullError::Unpack {
            source: UnpackError::Unsafe { .. },
            ..
        } => Code::InvalidArgument,
        PullError::Unpack {
            source: UnpackError::Io { source, .. },
            ..
        } => io_code(source),
        PullError::Unpack { .. } | PullError::DiffId { .. } => Code::DataLoss,
        PullError::Cancelled(_) => Code::Aborted,
        PullError::Snapshot(_) | PullError::Store(_) | PullError::Internal(_) => Code::Internal,
    };
    Status::new(code, format!("pull {image}: {e}"))
}

fn content_code(e: &ContentError) -> Code {
    match e {
        ContentError::Io { source, .. } => io_code(source),
        ContentError::NotFound(_) => Code::Internal,
        _ => Code::DataLoss,
    }
}

fn io_code(e: &std::io::Error) -> Code {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => Code::ResourceExhausted,
        _ => Code::Internal,
    }
}

pub fn query_status(e: &ImageQueryError) -> Status {
    let code = match e {
        ImageQueryError::Ambiguous(_) => Code::InvalidArgument,
        _ => Code::Internal,
    };
    Status::new(code, e.to_string())
}

/// The gRPC status of a runtime error.
pub fn runtime_status(e: &crate::runtime::RuntimeError) -> Status {
    use crate::runtime::RuntimeError as E;
    let code = match e {
        E::NotFound(_) => Code::NotFound,
        E::InvalidArgument(_) | E::Spec(_) => Code::InvalidArgument,
        E::AlreadyExists(_) => Code::AlreadyExists,
        E::FailedPrecondition(_) | E::CniConfig(_) => Code::FailedPrecondition,
        E::DeadlineExceeded(_) => Code::DeadlineExceeded,
        E::Shim { source, .. } if source.is_not_found() => Code::NotFound,
        _ => Code::Unknown,
    };
    Status::new(code, e.to_string())
}
