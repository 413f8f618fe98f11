//! Garbage collection: blobs no image lists and snapshots no image or rootfs needs go,
//! except what a running pull has leased.

use std::collections::HashSet;

use super::Images;
use crate::digest::Digest;
use crate::store::StoreError;

/// What one collection removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcStats {
    pub blobs: usize,
    pub snapshots: usize,
}

impl Images {
    /// Removes everything unreferenced and unleased.
    pub async fn gc(&self) -> Result<GcStats, StoreError> {
        let (store, content, snapshots, leases) = (
            self.store.clone(),
            self.content.clone(),
            self.snapshots.clone(),
            self.leases.clone(),
        );
        let stats = tokio::task::spawn_blocking(move || {
            // Held while deciding and deleting blobs: a pull cannot lease a blob, find it,
            // and then see it deleted.
            let held = leases.lock();
            let leased: HashSet<Digest> = held.keys().cloned().collect();
            let gone = store.delete_unreferenced_snapshots(&leased)?;
            let referenced = store.referenced_blobs()?;
            let mut blobs = 0;
            let all = content.list().map_err(|e| StoreError::Io {
                context: "list content store".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
            for d in all {
                if !referenced.contains(&d) && !leased.contains(&d) {
                    match content.delete(&d) {
                        Ok(()) => blobs += 1,
                        Err(e) => tracing::warn!(blob = %d, error = %e, "cannot remove blob"),
                    }
                }
            }
            drop(held);
            // Snapshot directories are named by record id, never reused for another chain:
            // removing them outside the lock races with nothing.
            snapshots.remove_dirs(&gone);
            Ok::<_, StoreError>(GcStats {
                blobs,
                snapshots: gone.len(),
            })
        })
        .await
        .map_err(|e| StoreError::Conflict(format!("garbage collection: {e}")))??;
        if stats != GcStats::default() {
            tracing::info!(
                blobs = stats.blobs,
                snapshots = stats.snapshots,
                "garbage collected"
            );
        }
        Ok(stats)
    }
}
