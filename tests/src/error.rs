//! Errors of the harness itself (not of the code under test, which tests assert on).

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A prerequisite is missing: the case is skipped, loudly, with this reason.
    #[error("{0}")]
    Skip(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The environment is there but did not come up (containerd did not start, ...).
    #[error("{0}")]
    Setup(String),
}

pub type Result<T> = std::result::Result<T, HarnessError>;

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let context = context.into();
    move |source| HarnessError::Io { context, source }
}

pub(crate) fn io_path_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> HarnessError {
    io_err(format!("{what} {}", path.display()))
}
