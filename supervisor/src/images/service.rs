//! The read and remove side of the ImageService, in plain Rust: find an image by id, prefix
//! or name; describe it; remove it and collect what it alone used; measure the image store.

use super::manifest::{parse_config, ImageConfig};
use super::reference::Reference;
use super::Images;
use crate::content::ContentError;
use crate::digest::Digest;
use crate::store::{ImageRecord, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ImageQueryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("image {id}: {source}")]
    Content { id: Digest, source: ContentError },
    #[error("image {id}: stored config is invalid: {message}")]
    Config { id: Digest, message: String },
    #[error("{0:?} matches more than one image id: give more of it")]
    Ambiguous(String),
}

/// An image as the CRI shows it.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub id: Digest,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub size: u64,
    pub manifest: Digest,
    /// Chain id of the top layer: what a container rootfs is made over.
    pub chain_id: Option<Digest>,
    pub config: ImageConfig,
    /// The config document as pulled.
    pub config_json: serde_json::Value,
    /// From the config's `User`: a numeric user, or a name.
    pub uid: Option<i64>,
    pub username: String,
}

/// Usage of the image store and of container writable layers: (bytes, inodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    pub images: (u64, u64),
    pub containers: (u64, u64),
}

impl Images {
    /// Finds an image by name (tag or digest reference, normalized), by id, or by a unique
    /// id prefix, in that order.
    pub fn find(&self, spec: &str) -> Result<Option<Digest>, ImageQueryError> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Ok(None);
        }
        if let Ok(id) = spec.parse::<Digest>() {
            if self.store.image(&id)?.is_some() {
                return Ok(Some(id));
            }
        }
        if let Ok(r) = Reference::parse(spec) {
            let name = match &r.digest {
                Some(d) => r.with_digest(d),
                None => r.to_string(),
            };
            if let Some(id) = self.store.image_by_name(&name)? {
                return Ok(Some(id));
            }
        }
        let hex = spec.strip_prefix("sha256:").unwrap_or(spec);
        if !hex.is_empty() && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let ids = self
                .store
                .image_ids_with_prefix(&hex.to_ascii_lowercase())?;
            return match ids.len() {
                0 => Ok(None),
                1 => Ok(ids.into_iter().next()),
                _ => Err(ImageQueryError::Ambiguous(spec.into())),
            };
        }
        Ok(None)
    }

    /// All images, or those `filter` (a name or id) finds.
    pub fn list(&self, filter: Option<&str>) -> Result<Vec<ImageInfo>, ImageQueryError> {
        let records = self.store.images()?;
        let wanted = match filter.filter(|f| !f.trim().is_empty()) {
            Some(f) => match self.find(f)? {
                Some(id) => Some(id),
                None => return Ok(Vec::new()),
            },
            None => None,
        };
        records
            .into_iter()
            .filter(|r| wanted.as_ref().map(|w| w == &r.id).unwrap_or(true))
            .map(|r| self.info(r))
            .collect()
    }

    /// One image, if present.
    pub fn status(&self, spec: &str) -> Result<Option<ImageInfo>, ImageQueryError> {
        let Some(id) = self.find(spec)? else {
            return Ok(None);
        };
        match self.store.image(&id)? {
            Some(rec) => Ok(Some(self.info(rec)?)),
            None => Ok(None),
        }
    }

    /// Removes an image with all its names, then collects what nothing else uses. Removing
    /// an image that is not there succeeds (CRI semantics); returns whether one was removed.
    pub async fn remove(&self, spec: &str) -> Result<bool, ImageQueryError> {
        let Some(id) = self.find(spec)? else {
            return Ok(false);
        };
        let removed = self.store.delete_image(&id)?;
        self.gc().await?;
        if removed {
            tracing::info!(image = %id, spec, "removed image");
        }
        Ok(removed)
    }

    pub fn fs_usage(&self) -> Result<FsUsage, ImageQueryError> {
        let (cb, ci) = self.content.usage();
        let (sb, si) = self.snapshots.image_usage().map_err(|e| match e {
            crate::snapshots::SnapshotError::Store(s) => ImageQueryError::Store(s),
            other => ImageQueryError::Store(StoreError::Conflict(other.to_string())),
        })?;
        Ok(FsUsage {
            images: (cb + sb, ci + si),
            containers: self.snapshots.rootfs_usage(),
        })
    }

    fn info(&self, rec: ImageRecord) -> Result<ImageInfo, ImageQueryError> {
        let bytes = self
            .content
            .read(&rec.id)
            .map_err(|source| ImageQueryError::Content {
                id: rec.id.clone(),
                source,
            })?;
        let chain = self.store.image_chain(&rec.id)?;
        let config = parse_config(&bytes, chain.len()).map_err(|e| ImageQueryError::Config {
            id: rec.id.clone(),
            message: e.to_string(),
        })?;
        let config_json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        let (repo_digests, repo_tags) = rec.names.into_iter().partition(|n| n.contains('@'));
        let user = config
            .config
            .as_ref()
            .and_then(|c| c.user.clone())
            .unwrap_or_default();
        let (uid, username) = parse_user(&user);
        Ok(ImageInfo {
            id: rec.id,
            repo_tags,
            repo_digests,
            size: rec.size,
            manifest: rec.manifest,
            chain_id: chain.last().cloned(),
            config,
            config_json,
            uid,
            username,
        })
    }
}

/// `User` of an image config: `uid[:gid]` gives a uid, `name[:group]` a username.
pub fn parse_user(user: &str) -> (Option<i64>, String) {
    let u = user.split(':').next().unwrap_or("");
    if u.is_empty() {
        return (None, String::new());
    }
    match u.parse::<i64>() {
        Ok(n) => (Some(n), String::new()),
        Err(_) => (None, u.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_forms() {
        assert_eq!(parse_user(""), (None, String::new()));
        assert_eq!(parse_user("1002"), (Some(1002), String::new()));
        assert_eq!(parse_user("1003:1004"), (Some(1003), String::new()));
        assert_eq!(parse_user("www-data:1004"), (None, "www-data".into()));
    }
}
