//! Pod sandbox and container records. Each row keeps the CRI config as it was given (prost
//! bytes) and the record's mutable part as JSON; a unique `name_key` makes a duplicate name a
//! conflict inside the same transaction that would have added it.

use rusqlite::{params, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Store, StoreError};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sandboxes (
    id       TEXT PRIMARY KEY,
    name_key TEXT NOT NULL UNIQUE,   -- name_namespace_uid_attempt
    config   BLOB NOT NULL,          -- PodSandboxConfig, protobuf
    record   TEXT NOT NULL           -- runtime::SandboxRecord, JSON
) STRICT;
CREATE TABLE IF NOT EXISTS containers (
    id         TEXT PRIMARY KEY,
    sandbox_id TEXT NOT NULL REFERENCES sandboxes(id),
    name_key   TEXT NOT NULL UNIQUE, -- sandbox id + name + attempt
    config     BLOB NOT NULL,        -- ContainerConfig, protobuf
    record     TEXT NOT NULL         -- runtime::ContainerRecord, JSON
) STRICT;
CREATE INDEX IF NOT EXISTS containers_by_sandbox ON containers(sandbox_id);
";

/// One stored row: its config bytes and its record.
pub struct Row<R> {
    pub config: Vec<u8>,
    pub record: R,
}

fn conflict(what: &str, key: &str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    let (what, key) = (what.to_string(), key.to_string());
    move |e| match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict(format!("{what} {key:?} is already in use"))
        }
        e => e.into(),
    }
}

fn to_json<R: Serialize>(r: &R) -> Result<String, StoreError> {
    serde_json::to_string(r).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_json<R: DeserializeOwned>(s: &str) -> Result<R, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("record {s:?}: {e}")))
}

impl Store {
    pub fn add_sandbox<R: Serialize>(
        &self,
        id: &str,
        name_key: &str,
        config: &[u8],
        record: &R,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO sandboxes (id, name_key, config, record) VALUES (?1, ?2, ?3, ?4)",
                params![id, name_key, config, to_json(record)?],
            )
            .map_err(conflict("pod sandbox name", name_key))?;
        Ok(())
    }

    pub fn update_sandbox<R: Serialize>(&self, id: &str, record: &R) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE sandboxes SET record = ?2 WHERE id = ?1",
            params![id, to_json(record)?],
        )?;
        Ok(())
    }

    /// Removes a sandbox and (in the same transaction) any container rows left with it.
    pub fn delete_sandbox(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM containers WHERE sandbox_id = ?1", [id])?;
        tx.execute("DELETE FROM sandboxes WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(())
    }

    pub fn sandboxes<R: DeserializeOwned>(&self) -> Result<Vec<Row<R>>, StoreError> {
        self.rows("SELECT config, record FROM sandboxes")
    }

    pub fn add_container<R: Serialize>(
        &self,
        id: &str,
        sandbox_id: &str,
        name_key: &str,
        config: &[u8],
        record: &R,
    ) -> Result<(), StoreError> {
        let conn = self.conn();
        let exists: Option<i64> = conn
            .query_row("SELECT 1 FROM sandboxes WHERE id = ?1", [sandbox_id], |r| {
                r.get(0)
            })
            .optional()?;
        if exists.is_none() {
            return Err(StoreError::Conflict(format!(
                "pod sandbox {sandbox_id} does not exist"
            )));
        }
        conn.execute(
            "INSERT INTO containers (id, sandbox_id, name_key, config, record)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, sandbox_id, name_key, config, to_json(record)?],
        )
        .map_err(conflict("container name", name_key))?;
        Ok(())
    }

    pub fn update_container<R: Serialize>(&self, id: &str, record: &R) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE containers SET record = ?2 WHERE id = ?1",
            params![id, to_json(record)?],
        )?;
        Ok(())
    }

    pub fn delete_container(&self, id: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM containers WHERE id = ?1", [id])?;
        Ok(())
    }

    pub fn containers<R: DeserializeOwned>(&self) -> Result<Vec<Row<R>>, StoreError> {
        self.rows("SELECT config, record FROM containers")
    }

    fn rows<R: DeserializeOwned>(&self, sql: &str) -> Result<Vec<Row<R>>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(sql)?;
        let raw = stmt
            .query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        raw.into_iter()
            .map(|(config, record)| {
                Ok(Row {
                    config,
                    record: from_json(&record)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    struct R {
        n: u32,
    }

    #[test]
    fn names_are_unique_and_containers_need_their_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("m.db")).unwrap();
        s.add_sandbox("p1", "a_ns_uid_0", b"cfg", &R { n: 1 })
            .unwrap();
        assert!(matches!(
            s.add_sandbox("p2", "a_ns_uid_0", b"cfg", &R { n: 2 }),
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            s.add_container("c0", "nope", "k", b"", &R { n: 0 }),
            Err(StoreError::Conflict(_))
        ));
        s.add_container("c1", "p1", "p1_c_0", b"x", &R { n: 3 })
            .unwrap();
        s.update_container("c1", &R { n: 4 }).unwrap();
        let rows: Vec<Row<R>> = s.containers().unwrap();
        assert_eq!(rows[0].record, R { n: 4 });
        assert_eq!(rows[0].config, b"x");
        s.delete_sandbox("p1").unwrap();
        assert!(s.containers::<R>().unwrap().is_empty());
        assert!(s.sandboxes::<R>().unwrap().is_empty());
    }
}
