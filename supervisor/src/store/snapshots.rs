//! Snapshot records (one per unpacked layer, keyed by chain id) and container rootfs records.

use std::collections::{HashMap, HashSet};

use rusqlite::{params, OptionalExtension, Row};

use super::{digest_col, now, Store, StoreError};
use crate::digest::Digest;

#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRecord {
    /// Names the snapshot's directory.
    pub id: i64,
    pub chain_id: Digest,
    pub parent: Option<Digest>,
    pub diff_id: Digest,
    pub size: u64,
    pub inodes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RootfsRecord {
    pub key: String,
    pub chain_id: Digest,
    pub readonly: bool,
}

const SNAPSHOT_COLS: &str = "id, chain_id, parent, diff_id, size, inodes";

fn snapshot_row(r: &Row<'_>) -> rusqlite::Result<(i64, String, Option<String>, String, i64, i64)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn to_snapshot(
    (id, chain, parent, diff, size, inodes): (i64, String, Option<String>, String, i64, i64),
) -> Result<SnapshotRecord, StoreError> {
    Ok(SnapshotRecord {
        id,
        chain_id: digest_col(chain)?,
        parent: parent.map(digest_col).transpose()?,
        diff_id: digest_col(diff)?,
        size: size as u64,
        inodes: inodes as u64,
    })
}

/// A new snapshot's fields.
pub struct NewSnapshot<'a> {
    pub chain_id: &'a Digest,
    pub parent: Option<&'a Digest>,
    pub diff_id: &'a Digest,
    pub size: u64,
    pub inodes: u64,
}

impl Store {
    pub fn snapshot(&self, chain_id: &Digest) -> Result<Option<SnapshotRecord>, StoreError> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {SNAPSHOT_COLS} FROM snapshots WHERE chain_id = ?1"),
                [chain_id.to_string()],
                snapshot_row,
            )
            .optional()?;
        row.map(to_snapshot).transpose()
    }

    pub fn snapshots(&self) -> Result<Vec<SnapshotRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {SNAPSHOT_COLS} FROM snapshots ORDER BY id"
        ))?;
        let rows = stmt
            .query_map([], snapshot_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(to_snapshot).collect()
    }

    /// Records a snapshot. `place` gets its id and moves the unpacked directory into place
    /// inside the transaction: the record commits only if the directory is there.
    pub fn add_snapshot(
        &self,
        new: &NewSnapshot<'_>,
        place: impl FnOnce(i64) -> std::io::Result<()>,
    ) -> Result<SnapshotRecord, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO snapshots (chain_id, parent, diff_id, size, inodes, created)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                new.chain_id.to_string(),
                new.parent.map(|p| p.to_string()),
                new.diff_id.to_string(),
                new.size as i64,
                new.inodes as i64,
                now()
            ],
        )
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                StoreError::Conflict(format!("snapshot {} exists", new.chain_id))
            }
            e => e.into(),
        })?;
        let id = tx.last_insert_rowid();
        place(id).map_err(|source| StoreError::Io {
            context: format!("move snapshot {} into place", new.chain_id),
            source,
        })?;
        tx.commit()?;
        Ok(SnapshotRecord {
            id,
            chain_id: new.chain_id.clone(),
            parent: new.parent.cloned(),
            diff_id: new.diff_id.clone(),
            size: new.size,
            inodes: new.inodes,
        })
    }

    /// Deletes every snapshot no image, rootfs or lease needs (a needed snapshot's ancestors
    /// are needed too) and returns the deleted records, whose directories the caller removes.
    pub fn delete_unreferenced_snapshots(
        &self,
        leased: &HashSet<Digest>,
    ) -> Result<Vec<SnapshotRecord>, StoreError> {
        let all = self.snapshots()?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut roots: Vec<Digest> = leased.iter().cloned().collect();
        for sql in [
            "SELECT DISTINCT chain_id FROM image_layers",
            "SELECT DISTINCT chain_id FROM rootfs",
        ] {
            let mut stmt = tx.prepare(sql)?;
            let ids = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            for id in ids {
                roots.push(digest_col(id)?);
            }
        }
        let parents: HashMap<&Digest, Option<&Digest>> = all
            .iter()
            .map(|s| (&s.chain_id, s.parent.as_ref()))
            .collect();
        let mut keep: HashSet<Digest> = HashSet::new();
        for root in roots {
            let mut cur = Some(root);
            while let Some(c) = cur {
                if !keep.insert(c.clone()) {
                    break;
                }
                cur = parents.get(&c).copied().flatten().cloned();
            }
        }
        let doomed: Vec<SnapshotRecord> = all
            .into_iter()
            .filter(|s| !keep.contains(&s.chain_id))
            .collect();
        for s in &doomed {
            tx.execute("DELETE FROM snapshots WHERE id = ?1", [s.id])?;
        }
        tx.commit()?;
        Ok(doomed)
    }

    pub fn add_rootfs(&self, rec: &RootfsRecord) -> Result<(), StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO rootfs (key, chain_id, readonly, created) VALUES (?1, ?2, ?3, ?4)",
            params![
                rec.key,
                rec.chain_id.to_string(),
                rec.readonly as i64,
                now()
            ],
        )
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                StoreError::Conflict(format!("rootfs {} exists", rec.key))
            }
            e => e.into(),
        })?;
        Ok(())
    }

    pub fn rootfs(&self, key: &str) -> Result<Option<RootfsRecord>, StoreError> {
        Ok(self.rootfs_all()?.into_iter().find(|r| r.key == key))
    }

    pub fn rootfs_all(&self) -> Result<Vec<RootfsRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT key, chain_id, readonly FROM rootfs ORDER BY key")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(key, chain, ro)| {
                Ok(RootfsRecord {
                    key,
                    chain_id: digest_col(chain)?,
                    readonly: ro != 0,
                })
            })
            .collect()
    }

    pub fn delete_rootfs(&self, key: &str) -> Result<bool, StoreError> {
        let conn = self.conn();
        Ok(conn.execute("DELETE FROM rootfs WHERE key = ?1", [key])? > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewImage;

    #[test]
    fn gc_keeps_what_images_and_rootfs_use() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("meta.db")).unwrap();
        let diffs: Vec<Digest> = ["a", "b", "c"]
            .iter()
            .map(|s| Digest::of(s.as_bytes()))
            .collect();
        let chain = crate::digest::chain_ids(&diffs);
        for i in 0..3 {
            let new = NewSnapshot {
                chain_id: &chain[i],
                parent: if i == 0 { None } else { Some(&chain[i - 1]) },
                diff_id: &diffs[i],
                size: 1,
                inodes: 1,
            };
            store.add_snapshot(&new, |_| Ok(())).unwrap();
        }
        // a failing place() leaves no record
        let other = Digest::of(b"x");
        let new = NewSnapshot {
            chain_id: &other,
            parent: None,
            diff_id: &other,
            size: 0,
            inodes: 0,
        };
        assert!(store
            .add_snapshot(&new, |_| Err(std::io::ErrorKind::Other.into()))
            .is_err());
        assert!(store.snapshot(&other).unwrap().is_none());

        let id = Digest::of(b"img");
        let names = ["n:1".to_string()];
        let img = NewImage {
            id: &id,
            manifest: &id,
            size: 0,
            names: &names,
            blobs: &[],
            chain: &chain[..2],
        };
        store.put_image(&img).unwrap();
        store
            .add_rootfs(&RootfsRecord {
                key: "c1".into(),
                chain_id: chain[2].clone(),
                readonly: false,
            })
            .unwrap();
        assert!(store
            .delete_unreferenced_snapshots(&HashSet::new())
            .unwrap()
            .is_empty());
        // without the rootfs, the third layer goes; without the image, all
        store.delete_rootfs("c1").unwrap();
        let gone = store
            .delete_unreferenced_snapshots(&HashSet::new())
            .unwrap();
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].chain_id, chain[2]);
        store.delete_image(&id).unwrap();
        let leased: HashSet<Digest> = [chain[0].clone()].into();
        assert_eq!(
            store.delete_unreferenced_snapshots(&leased).unwrap().len(),
            1
        );
        assert_eq!(store.snapshots().unwrap().len(), 1);
    }
}
