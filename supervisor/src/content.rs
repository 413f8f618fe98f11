//! Content store: blobs addressed by digest under `<root>/content/blobs/sha256/<hex>`.
//! A blob is written to a temp file under `ingest/`, checked against its expected size while
//! it streams in, fsynced, verified against its digest, and only then renamed into place:
//! a blob file that exists is whole and correct.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("blob {digest} is larger than the {expected} bytes its descriptor says")]
    TooLarge { digest: Digest, expected: u64 },
    #[error("blob {digest} is truncated: got {got} of {expected} bytes")]
    Truncated {
        digest: Digest,
        expected: u64,
        got: u64,
    },
    #[error("digest mismatch: expected {expected}, content is {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {0} is not in the content store")]
    NotFound(Digest),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ContentError {
    let context = context.into();
    move |source| ContentError::Io { context, source }
}

#[derive(Debug)]
pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

static INGEST_SEQ: AtomicU64 = AtomicU64::new(0);

impl ContentStore {
    /// Opens (creating) the store under `root` and drops partial writes left by a crash.
    pub fn open(root: &Path) -> Result<ContentStore, ContentError> {
        let blobs = root.join("blobs").join("sha256");
        let ingest = root.join("ingest");
        fs::create_dir_all(&blobs).map_err(io_err(format!("create {}", blobs.display())))?;
        if ingest.exists() {
            fs::remove_dir_all(&ingest).map_err(io_err(format!("clear {}", ingest.display())))?;
        }
        fs::create_dir_all(&ingest).map_err(io_err(format!("create {}", ingest.display())))?;
        Ok(ContentStore { blobs, ingest })
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    pub fn exists(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Size of a stored blob.
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.path(digest)).ok().map(|m| m.len())
    }

    /// Reads a whole blob (manifests and configs, whose size was bounded when stored).
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, ContentError> {
        fs::read(self.path(digest)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ContentError::NotFound(digest.clone()),
            _ => ContentError::Io {
                context: format!("read blob {digest}"),
                source: e,
            },
        })
    }

    /// Stores `data` as blob `digest` (verified).
    pub fn put(&self, digest: &Digest, data: &[u8]) -> Result<(), ContentError> {
        if self.exists(digest) {
            return Ok(());
        }
        let mut w = self.writer(digest, data.len() as u64)?;
        w.write_all(data).map_err(|e| w.error(e))?;
        w.commit()
    }

    /// Starts writing blob `digest` of `size` bytes.
    pub fn writer(&self, digest: &Digest, size: u64) -> Result<Writer, ContentError> {
        let seq = INGEST_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .ingest
            .join(format!("{}-{}-{seq}", digest.hex(), std::process::id()));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err(format!("create {}", tmp.display())))?;
        Ok(Writer {
            file,
            tmp,
            target: self.path(digest),
            blobs: self.blobs.clone(),
            hasher: Sha256::new(),
            written: 0,
            digest: digest.clone(),
            size,
            done: false,
        })
    }

    /// Removes a blob; a missing one is not an error.
    pub fn delete(&self, digest: &Digest) -> Result<(), ContentError> {
        match fs::remove_file(self.path(digest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ContentError::Io {
                context: format!("remove blob {digest}"),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Every stored blob. Files that are not named by a digest are skipped.
    pub fn list(&self) -> Result<Vec<Digest>, ContentError> {
        let dir = fs::read_dir(&self.blobs).map_err(io_err("list blobs"))?;
        Ok(dir
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                format!("sha256:{}", e.file_name().to_string_lossy())
                    .parse()
                    .ok()
            })
            .collect())
    }

    /// Bytes (allocated) and inodes used by the store, blobs being written included (so a
    /// client can watch a pull's progress).
    pub fn usage(&self) -> (u64, u64) {
        crate::fsusage::tree_usage(self.ingest.parent().unwrap_or(&self.ingest))
    }
}

/// A blob being written. Dropped without [`Writer::commit`], it leaves nothing behind.
pub struct Writer {
    file: File,
    tmp: PathBuf,
    target: PathBuf,
    blobs: PathBuf,
    hasher: Sha256,
    written: u64,
    digest: Digest,
    size: u64,
    done: bool,
}

impl Writer {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Turns an I/O error from `write` back into the content error it stands for.
    pub fn error(&self, e: io::Error) -> ContentError {
        if e.kind() == io::ErrorKind::FileTooLarge {
            return ContentError::TooLarge {
                digest: self.digest.clone(),
                expected: self.size,
            };
        }
        ContentError::Io {
            context: format!("write blob {}", self.digest),
            source: e,
        }
    }

    /// Verifies size and digest, makes the blob durable and moves it into place.
    pub fn commit(mut self) -> Result<(), ContentError> {
        if self.written != self.size {
            return Err(ContentError::Truncated {
                digest: self.digest.clone(),
                expected: self.size,
                got: self.written,
            });
        }
        let actual = Digest::from_hasher(std::mem::take(&mut self.hasher));
        if actual != self.digest {
            return Err(ContentError::DigestMismatch {
                expected: self.digest.clone(),
                actual,
            });
        }
        self.file
            .sync_all()
            .map_err(io_err(format!("fsync blob {}", self.digest)))?;
        fs::rename(&self.tmp, &self.target)
            .map_err(io_err(format!("commit blob {}", self.digest)))?;
        self.done = true;
        if let Ok(dir) = File::open(&self.blobs) {
            dir.sync_all().map_err(io_err("fsync blob directory"))?;
        }
        Ok(())
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() as u64 > self.size {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "blob larger than descriptor",
            ));
        }
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_verifies_size_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let data = b"hello";
        let d = Digest::of(data);
        store.put(&d, data).unwrap();
        assert_eq!(store.read(&d).unwrap(), data);
        assert_eq!(store.list().unwrap(), vec![d.clone()]);

        let wrong = Digest::of(b"other");
        let err = store.put(&wrong, data).unwrap_err();
        assert!(matches!(err, ContentError::DigestMismatch { .. }), "{err}");
        assert!(!store.exists(&wrong));

        let mut w = store.writer(&Digest::of(b"hello!"), 3).unwrap();
        let err = w.write_all(b"hello!").unwrap_err();
        assert!(matches!(w.error(err), ContentError::TooLarge { .. }));
        drop(w);

        let mut w = store.writer(&d, 5).unwrap();
        w.write_all(b"hel").unwrap();
        assert!(matches!(w.commit(), Err(ContentError::Truncated { .. })));
        // nothing half-written is left in ingest
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
    }
}
