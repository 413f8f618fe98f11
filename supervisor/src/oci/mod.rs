//! OCI runtime specs for CRI containers: an image config and a CRI `ContainerConfig` turned
//! into the `config.json` a runtime such as runc runs, following containerd's CRI plugin.

pub mod defaults;
pub mod spec;
pub mod user;

pub use spec::{build_spec, SandboxNamespaces, SpecInput};
pub use user::ResolvedUser;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("no command specified: neither the container config nor the image has one")]
    NoCommand,
    #[error("user {0:?} not found in the rootfs /etc/passwd")]
    UserNotFound(String),
    #[error("group {0:?} not found in the rootfs /etc/group")]
    GroupNotFound(String),
    #[error("invalid user {user:?}: {reason}")]
    InvalidUser { user: String, reason: String },
    #[error("refusing {path}: {reason}")]
    UnsafePath { path: PathBuf, reason: &'static str },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid mount {container_path:?}: {reason}")]
    InvalidMount {
        container_path: String,
        reason: &'static str,
    },
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    #[error("building the OCI spec: {0}")]
    Build(#[from] oci_spec::OciSpecError),
}
