//! Why a pull failed, with enough words for an operator to act on.

use crate::content::ContentError;
use crate::digest::Digest;
use crate::snapshots::unpack::UnpackError;
use crate::snapshots::SnapshotError;
use crate::store::StoreError;

use super::auth::AuthError;
use super::manifest::ManifestError;
use super::reference::ReferenceError;
use super::registry::RegistryError;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("layer {layer}: {source}")]
    Content { layer: Digest, source: ContentError },
    #[error(transparent)]
    Blob(#[from] ContentError),
    #[error("layer {layer}: {source}")]
    Unpack { layer: Digest, source: UnpackError },
    #[error(
        "layer {layer}: uncompressed content is {actual}, but the image config says {expected}"
    )]
    DiffId {
        layer: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("pull cancelled: {0}")]
    Cancelled(String),
    #[error("internal error: {0}")]
    Internal(String),
}
