//! Snapshots: each image layer unpacked once into `<root>/snapshots/<id>/fs`, keyed by its
//! chain id and shared by every image that has it; a container rootfs is an overlay over a
//! chain with its own `upper` and `work` under `<root>/snapshots/rootfs/<key>/`.
//!
//! A layer is unpacked into `tmp/`, flushed to disk, and renamed into place inside the
//! transaction that records it, so a snapshot directory with a record is always whole. At
//! start-up, directories without a record (a crash between rename and commit) are removed.

mod mount;
pub mod unpack;

pub use mount::{unmount, Mount};

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::digest::Digest;
use crate::store::{NewSnapshot, RootfsRecord, SnapshotRecord, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("snapshot {0} does not exist")]
    NotFound(Digest),
    #[error("rootfs key {0:?} is invalid: use 1-128 of [A-Za-z0-9_.-], not starting with . or -")]
    BadKey(String),
    #[error("rootfs {0} already exists")]
    Exists(String),
    #[error("rootfs {0} does not exist")]
    NoRootfs(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> SnapshotError {
    let context = context.into();
    move |source| SnapshotError::Io { context, source }
}

pub struct Snapshotter {
    dir: PathBuf,
    store: Arc<Store>,
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl Snapshotter {
    /// Opens the snapshot directory, dropping unpacks a crash interrupted and directories
    /// that no record names.
    pub fn open(dir: &Path, store: Arc<Store>) -> Result<Snapshotter, SnapshotError> {
        let s = Snapshotter {
            dir: dir.to_path_buf(),
            store,
        };
        let tmp = s.dir.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_err("clear snapshots/tmp"))?;
        }
        for d in [&tmp, &s.dir.join("rootfs")] {
            fs::create_dir_all(d).map_err(io_err(format!("create {}", d.display())))?;
        }
        s.sweep()?;
        Ok(s)
    }

    fn sweep(&self) -> Result<(), SnapshotError> {
        let known: HashSet<String> = self
            .store
            .snapshots()?
            .iter()
            .map(|r| r.id.to_string())
            .collect();
        for entry in fs::read_dir(&self.dir).map_err(io_err("list snapshots"))? {
            let entry = entry.map_err(io_err("list snapshots"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.bytes().all(|b| b.is_ascii_digit()) && !known.contains(&name) {
                tracing::info!(snapshot = %name, "removing snapshot directory without a record");
                fs::remove_dir_all(entry.path())
                    .map_err(io_err(format!("remove snapshot {name}")))?;
            }
        }
        let keys: HashSet<String> = self
            .store
            .rootfs_all()?
            .into_iter()
            .map(|r| r.key)
            .collect();
        for entry in fs::read_dir(self.dir.join("rootfs")).map_err(io_err("list rootfs"))? {
            let entry = entry.map_err(io_err("list rootfs"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keys.contains(&name) {
                tracing::info!(rootfs = %name, "removing rootfs directory without a record");
                fs::remove_dir_all(entry.path())
                    .map_err(io_err(format!("remove rootfs {name}")))?;
            }
        }
        Ok(())
    }

    fn layer_dir(&self, id: i64) -> PathBuf {
        self.dir.join(id.to_string())
    }

    pub fn exists(&self, chain_id: &Digest) -> Result<bool, SnapshotError> {
        Ok(self.store.snapshot(chain_id)?.is_some())
    }

    /// A fresh empty directory to unpack a layer into.
    pub fn begin(&self) -> Result<Pending, SnapshotError> {
        let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .dir
            .join("tmp")
            .join(format!("{}-{seq}", std::process::id()));
        fs::create_dir_all(dir.join("fs")).map_err(io_err(format!("create {}", dir.display())))?;
        Ok(Pending { dir, done: false })
    }

    /// Flushes an unpacked layer to disk and records it under `chain_id`.
    pub fn commit(
        &self,
        mut pending: Pending,
        chain_id: &Digest,
        parent: Option<&Digest>,
        diff_id: &Digest,
        stats: unpack::UnpackStats,
    ) -> Result<SnapshotRecord, SnapshotError> {
        let fd = fs::File::open(&pending.dir).map_err(io_err("open unpacked layer"))?;
        rustix::fs::syncfs(&fd).map_err(|e| SnapshotError::Io {
            context: "flush unpacked layer".into(),
            source: e.into(),
        })?;
        let new = NewSnapshot {
            chain_id,
            parent,
            diff_id,
            size: stats.size,
            inodes: stats.inodes,
        };
        let rec = self
            .store
            .add_snapshot(&new, |id| fs::rename(&pending.dir, self.layer_dir(id)))?;
        pending.done = true;
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(rec)
    }

    /// The `fs` directories of a chain, top layer first (overlay's lowerdir order).
    pub fn chain_dirs(&self, chain_id: &Digest) -> Result<Vec<PathBuf>, SnapshotError> {
        let mut dirs = Vec::new();
        let mut cur = Some(chain_id.clone());
        while let Some(c) = cur {
            let rec = self.store.snapshot(&c)?.ok_or(SnapshotError::NotFound(c))?;
            dirs.push(self.layer_dir(rec.id).join("fs"));
            cur = rec.parent;
        }
        Ok(dirs)
    }

    /// Creates the writable layer of container `key` over image chain `chain_id` and returns
    /// the mounts that make its rootfs (one overlay; a read-only single layer is a bind).
    pub fn prepare_rootfs(
        &self,
        key: &str,
        chain_id: &Digest,
        readonly: bool,
    ) -> Result<Vec<Mount>, SnapshotError> {
        check_key(key)?;
        let lower = self.chain_dirs(chain_id)?;
        let dir = self.dir.join("rootfs").join(key);
        match fs::create_dir(&dir) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(SnapshotError::Exists(key.into()))
            }
            r => r.map_err(io_err(format!("create rootfs {key}")))?,
        }
        let made = (|| {
            if !readonly {
                for sub in ["upper", "work"] {
                    fs::create_dir(dir.join(sub))
                        .map_err(io_err(format!("create rootfs {key}")))?;
                }
            }
            let rec = RootfsRecord {
                key: key.into(),
                chain_id: chain_id.clone(),
                readonly,
            };
            self.store.add_rootfs(&rec).map_err(|e| match e {
                StoreError::Conflict(_) => SnapshotError::Exists(key.into()),
                e => e.into(),
            })
        })();
        if let Err(e) = made {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok(mount::overlay(&lower, (!readonly).then_some(&dir)))
    }

    /// The mounts of an existing container rootfs.
    pub fn rootfs_mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError> {
        check_key(key)?;
        let rec = self
            .store
            .rootfs(key)?
            .ok_or_else(|| SnapshotError::NoRootfs(key.into()))?;
        let lower = self.chain_dirs(&rec.chain_id)?;
        let dir = self.dir.join("rootfs").join(key);
        Ok(mount::overlay(&lower, (!rec.readonly).then_some(&dir)))
    }

    /// Removes a container's writable layer (it must be unmounted). Missing is not an error.
    pub fn remove_rootfs(&self, key: &str) -> Result<(), SnapshotError> {
        check_key(key)?;
        self.store.delete_rootfs(key)?;
        let dir = self.dir.join("rootfs").join(key);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(io_err(format!("remove rootfs {key}"))(e))
            }
            _ => Ok(()),
        }
    }

    /// Removes the directories of snapshots whose records are gone.
    pub fn remove_dirs(&self, gone: &[SnapshotRecord]) {
        for rec in gone {
            if let Err(e) = fs::remove_dir_all(self.layer_dir(rec.id)) {
                tracing::warn!(chain_id = %rec.chain_id, error = %e, "cannot remove snapshot directory");
            }
        }
    }

    /// (bytes, inodes) of the image layers, from their records.
    pub fn image_usage(&self) -> Result<(u64, u64), SnapshotError> {
        let recs = self.store.snapshots()?;
        Ok(recs
            .iter()
            .fold((0, 0), |(b, i), r| (b + r.size, i + r.inodes)))
    }

    /// (bytes, inodes) of the container writable layers, measured on disk.
    pub fn rootfs_usage(&self) -> (u64, u64) {
        crate::fsusage::tree_usage(&self.dir.join("rootfs"))
    }

    /// The directory holding the container writable layers.
    pub fn rootfs_dir(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A layer being unpacked. Dropped without a commit, it leaves nothing behind.
pub struct Pending {
    dir: PathBuf,
    done: bool,
}

impl Pending {
    /// Where the layer's files go.
    pub fn fs(&self) -> PathBuf {
        self.dir.join("fs")
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Keys name directories: only a safe alphabet, as container ids are.
pub fn check_key(key: &str) -> Result<(), SnapshotError> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && !key.starts_with(['.', '-'])
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SnapshotError::BadKey(key.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_name_other_paths() {
        for bad in ["", "..", "../x", "a/b", ".hidden", "-x", &"a".repeat(129)] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
        for good in ["abc", "c1.rootfs", "0123456789abcdef_x-y"] {
            check_key(good).unwrap();
        }
    }

    #[test]
    fn commit_and_rootfs_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("meta.db")).unwrap());
        let snaps = Snapshotter::open(&dir.path().join("snapshots"), store.clone()).unwrap();
        let diffs = [Digest::of(b"l1"), Digest::of(b"l2")];
        let chain = crate::digest::chain_ids(&diffs);
        for i in 0..2 {
            let p = snaps.begin().unwrap();
            fs::write(p.fs().join(format!("f{i}")), b"x").unwrap();
            let parent = if i == 0 { None } else { Some(&chain[0]) };
            snaps
                .commit(p, &chain[i], parent, &diffs[i], Default::default())
                .unwrap();
        }
        let dirs = snaps.chain_dirs(&chain[1]).unwrap();
        assert_eq!(dirs.len(), 2);
        assert!(dirs[0].join("f1").exists() && dirs[1].join("f0").exists());

        let mounts = snaps.prepare_rootfs("c1", &chain[1], false).unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].kind, "overlay");
        let lower = format!("lowerdir={}:{}", dirs[0].display(), dirs[1].display());
        assert!(
            mounts[0].options.contains(&lower),
            "{:?}",
            mounts[0].options
        );
        assert!(matches!(
            snaps.prepare_rootfs("c1", &chain[1], false),
            Err(SnapshotError::Exists(_))
        ));
        assert_eq!(snaps.rootfs_mounts("c1").unwrap(), mounts);
        let ro = snaps.prepare_rootfs("c2", &chain[0], true).unwrap();
        assert_eq!(ro[0].kind, "bind");

        // an unpack that is dropped leaves nothing; a stray directory goes at reopen
        drop(snaps.begin().unwrap());
        fs::create_dir_all(dir.path().join("snapshots/99/fs")).unwrap();
        snaps.remove_rootfs("c1").unwrap();
        drop(snaps);
        let snaps = Snapshotter::open(&dir.path().join("snapshots"), store).unwrap();
        assert!(!dir.path().join("snapshots/99").exists());
        assert_eq!(
            fs::read_dir(dir.path().join("snapshots/tmp"))
                .unwrap()
                .count(),
            0
        );
        assert!(snaps.rootfs_mounts("c1").is_err());
        assert!(snaps.rootfs_mounts("c2").is_ok());
    }
}
