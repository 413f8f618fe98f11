//! Image records: an image (keyed by its config digest), its names, blobs and layer chain.

use std::collections::HashSet;

use rusqlite::{params, OptionalExtension};

use super::{digest_col, now, Store, StoreError};
use crate::digest::Digest;

/// An image as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRecord {
    pub id: Digest,
    pub manifest: Digest,
    pub size: u64,
    /// Unix nanoseconds of the first pull.
    pub created: i64,
    /// Tags and digest references, oldest first.
    pub names: Vec<String>,
}

/// What a finished pull records, all in one transaction.
pub struct NewImage<'a> {
    pub id: &'a Digest,
    pub manifest: &'a Digest,
    pub size: u64,
    pub names: &'a [String],
    pub blobs: &'a [Digest],
    pub chain: &'a [Digest],
}

impl Store {
    /// Records a pulled image. A name that pointed at another image moves to this one; an
    /// image left with no name is deleted. Returns how many images were deleted that way.
    pub fn put_image(&self, img: &NewImage<'_>) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let t = now();
        tx.execute(
            "INSERT INTO images (id, manifest, size, created) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET manifest = excluded.manifest, size = excluded.size",
            params![
                img.id.to_string(),
                img.manifest.to_string(),
                img.size as i64,
                t
            ],
        )?;
        for name in img.names {
            tx.execute(
                "INSERT INTO image_names (name, image_id, created) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET image_id = excluded.image_id,
                   created = CASE WHEN image_id = excluded.image_id THEN created ELSE excluded.created END",
                params![name, img.id.to_string(), t],
            )?;
        }
        for blob in img.blobs {
            tx.execute(
                "INSERT OR IGNORE INTO image_blobs (image_id, digest) VALUES (?1, ?2)",
                params![img.id.to_string(), blob.to_string()],
            )?;
        }
        for (idx, chain) in img.chain.iter().enumerate() {
            tx.execute(
                "INSERT OR REPLACE INTO image_layers (image_id, idx, chain_id) VALUES (?1, ?2, ?3)",
                params![img.id.to_string(), idx as i64, chain.to_string()],
            )?;
        }
        let orphaned = tx.execute(
            "DELETE FROM images WHERE id NOT IN (SELECT image_id FROM image_names)",
            [],
        )?;
        tx.commit()?;
        Ok(orphaned)
    }

    /// All images, oldest first.
    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT i.id, i.manifest, i.size, i.created, n.name FROM images i
             LEFT JOIN image_names n ON n.image_id = i.id ORDER BY i.created, i.id, n.created, n.name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?;
        let mut out: Vec<ImageRecord> = Vec::new();
        for row in rows {
            let (id, manifest, size, created, name) = row?;
            let id = digest_col(id)?;
            if out.last().map(|l| l.id != id).unwrap_or(true) {
                out.push(ImageRecord {
                    id,
                    manifest: digest_col(manifest)?,
                    size: size as u64,
                    created,
                    names: Vec::new(),
                });
            }
            if let (Some(name), Some(last)) = (name, out.last_mut()) {
                last.names.push(name);
            }
        }
        Ok(out)
    }

    pub fn image(&self, id: &Digest) -> Result<Option<ImageRecord>, StoreError> {
        Ok(self.images()?.into_iter().find(|i| &i.id == id))
    }

    /// The image a name (tag or digest reference) points at.
    pub fn image_by_name(&self, name: &str) -> Result<Option<Digest>, StoreError> {
        let conn = self.conn();
        let id: Option<String> = conn
            .query_row(
                "SELECT image_id FROM image_names WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        id.map(digest_col).transpose()
    }

    /// Image ids whose hex starts with `prefix` (crictl accepts truncated ids).
    pub fn image_ids_with_prefix(&self, prefix: &str) -> Result<Vec<Digest>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id FROM images WHERE substr(id, 8, ?2) = ?1")?;
        let ids = stmt
            .query_map(params![prefix, prefix.len() as i64], |r| {
                r.get::<_, String>(0)
            })?
            .collect::<Result<Vec<_>, _>>()?;
        ids.into_iter().map(digest_col).collect()
    }

    /// The chain ids of an image's layers, bottom first.
    pub fn image_chain(&self, id: &Digest) -> Result<Vec<Digest>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT chain_id FROM image_layers WHERE image_id = ?1 ORDER BY idx")?;
        let ids = stmt
            .query_map([id.to_string()], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        ids.into_iter().map(digest_col).collect()
    }

    /// Deletes an image with all its names. False if there was none.
    pub fn delete_image(&self, id: &Digest) -> Result<bool, StoreError> {
        let conn = self.conn();
        Ok(conn.execute("DELETE FROM images WHERE id = ?1", [id.to_string()])? > 0)
    }

    /// Every blob some image uses.
    pub fn referenced_blobs(&self) -> Result<HashSet<Digest>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT DISTINCT digest FROM image_blobs")?;
        let ids = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        ids.into_iter().map(digest_col).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    #[test]
    fn names_move_and_nameless_images_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("meta.db")).unwrap();
        let (a, b) = (d("a"), d("b"));
        let names = vec!["h/r:1".to_string(), "h/r:latest".to_string()];
        let new = |id, names| NewImage {
            id,
            manifest: id,
            size: 3,
            names,
            blobs: &[],
            chain: &[],
        };
        assert_eq!(store.put_image(&new(&a, &names)).unwrap(), 0);
        assert_eq!(store.images().unwrap()[0].names, names);
        // b takes one tag: a keeps the other
        assert_eq!(store.put_image(&new(&b, &names[1..])).unwrap(), 0);
        assert_eq!(
            store.image(&a).unwrap().unwrap().names,
            vec!["h/r:1".to_string()]
        );
        // b takes the last one: a is gone
        assert_eq!(store.put_image(&new(&b, &names[..1])).unwrap(), 1);
        assert!(store.image(&a).unwrap().is_none());
        assert_eq!(store.image_by_name("h/r:1").unwrap(), Some(b.clone()));
        assert_eq!(
            store.image_ids_with_prefix(&b.hex()[..6]).unwrap(),
            vec![b.clone()]
        );
        assert!(store.delete_image(&b).unwrap());
        assert!(store.images().unwrap().is_empty());
        assert_eq!(store.image_by_name("h/r:1").unwrap(), None);
    }
}
