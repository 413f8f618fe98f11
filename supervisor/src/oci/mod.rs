//! OCI runtime specs for CRI pods and containers: an image config and a CRI config turned
//! into the `config.json` a runtime such as runc runs, following containerd's CRI plugin.

pub mod annotations;
pub mod cgroups;
pub mod defaults;
pub mod devices;
pub mod host;
pub mod lsm;
pub mod mounts;
pub mod namespaces;
pub mod resources;
pub mod sandbox;
pub mod seccomp;
pub mod spec;
pub mod sysctls;
pub mod user;

pub use cgroups::{cgroups_path, CgroupDriver};
pub use host::HostFeatures;
pub use mounts::SandboxFiles;
pub use namespaces::SandboxNamespaces;
pub use sandbox::{build_sandbox_spec, SandboxSpecInput};
pub use spec::{build_spec, SpecInput};
pub use user::ResolvedUser;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("no command specified: neither the config nor the image has one")]
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
    #[error("device {path}: {reason}")]
    Device { path: PathBuf, reason: String },
    #[error("{0}")]
    SecurityProfile(String),
    #[error("seccomp profile {path}: {reason}")]
    SeccompProfile { path: PathBuf, reason: String },
    #[error("sysctl {name:?}: {reason}")]
    Sysctl { name: String, reason: &'static str },
    #[error("a privileged container needs a privileged pod sandbox")]
    PrivilegedNotAllowed,
    #[error("{0} is not supported")]
    Unsupported(&'static str),
    #[error("building the OCI spec: {0}")]
    Build(#[from] oci_spec::OciSpecError),
}
