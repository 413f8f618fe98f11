//! Metadata store: one SQLite database (WAL, synchronous=FULL, foreign keys on) holding image
//! records, their names, the blobs and snapshots each image uses, and container rootfs
//! snapshots. Every change is one transaction, so a crash leaves each record whole or absent.

mod images;
mod runtime;
mod snapshots;

pub use images::{ImageRecord, NewImage};
pub use runtime::Row;
pub use snapshots::{NewSnapshot, RootfsRecord, SnapshotRecord};

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("metadata database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("metadata database holds an invalid value: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS images (
    id       TEXT PRIMARY KEY,      -- config digest: the CRI image id
    manifest TEXT NOT NULL,         -- platform manifest digest
    size     INTEGER NOT NULL,      -- config + compressed layers, as registries count it
    created  INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS image_names (
    name     TEXT PRIMARY KEY,      -- host/repo:tag or host/repo@digest
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    created  INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS image_names_by_image ON image_names(image_id);
CREATE TABLE IF NOT EXISTS image_blobs (
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    digest   TEXT NOT NULL,
    PRIMARY KEY (image_id, digest)
) STRICT;
CREATE TABLE IF NOT EXISTS image_layers (
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    idx      INTEGER NOT NULL,
    chain_id TEXT NOT NULL,
    PRIMARY KEY (image_id, idx)
) STRICT;
CREATE TABLE IF NOT EXISTS snapshots (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,  -- names the directory: short overlay options
    chain_id TEXT NOT NULL UNIQUE,
    parent   TEXT,                  -- chain id of the layer below
    diff_id  TEXT NOT NULL,
    size     INTEGER NOT NULL,
    inodes   INTEGER NOT NULL,
    created  INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS rootfs (
    key      TEXT PRIMARY KEY,      -- the container's key (its id)
    chain_id TEXT NOT NULL,         -- image top layer it is mounted over
    readonly INTEGER NOT NULL,
    created  INTEGER NOT NULL
) STRICT;
";

/// The database handle. SQLite calls are short; one connection behind a mutex is plenty.
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // The database is small: a 512 KiB page cache holds it.
        conn.pragma_update(None, "cache_size", -512)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(runtime::SCHEMA)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half transaction: SQLite rolls back.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub(crate) fn digest_col(s: String) -> Result<crate::digest::Digest, StoreError> {
    s.parse().map_err(|_| StoreError::Corrupt(s))
}
