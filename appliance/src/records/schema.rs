//! The record database's schema and its versioned migrations.
//!
//! The schema version lives in `PRAGMA user_version`. Each migration takes the database from
//! version N to N+1 inside one transaction. A database saved from every released schema is
//! kept under `appliance/tests/data/` and opened by the tests, so a migration that loses or
//! changes a value fails before it reaches an appliance (Annex 11 §4.8).
//!
//! Record tables are append-only: triggers abort any UPDATE or DELETE. `users` holds state
//! that must change (failed attempts, lockout, deactivation), so only its identity columns are
//! frozen and rows can never be deleted; every change to it is also an audit entry.

use rusqlite::Connection;

/// The schema this build writes.
pub const CURRENT: u32 = 1;

const V1: &str = r"
CREATE TABLE entries (
    seq          INTEGER PRIMARY KEY,
    utc_ms       INTEGER NOT NULL,
    tpm_clock_ms INTEGER,
    device_id    TEXT NOT NULL,
    user_id      INTEGER,
    batch_id     TEXT,
    kind         TEXT NOT NULL,
    object       TEXT NOT NULL,
    old_value    TEXT,
    new_value    TEXT,
    reason       TEXT,
    payload      TEXT NOT NULL,
    prev_hash    BLOB NOT NULL CHECK (length(prev_hash) = 32),
    entry_hash   BLOB NOT NULL UNIQUE CHECK (length(entry_hash) = 32),
    mac          BLOB NOT NULL CHECK (length(mac) = 32)
) STRICT;
CREATE INDEX entries_by_batch ON entries (batch_id, seq);
CREATE INDEX entries_by_time ON entries (utc_ms);
CREATE TRIGGER entries_append_only_update BEFORE UPDATE ON entries
    BEGIN SELECT RAISE(ABORT, 'batch records are append-only'); END;
CREATE TRIGGER entries_append_only_delete BEFORE DELETE ON entries
    BEGIN SELECT RAISE(ABORT, 'batch records are append-only'); END;

CREATE TABLE checkpoints (
    id           INTEGER PRIMARY KEY,
    entries      INTEGER NOT NULL,
    head         BLOB NOT NULL CHECK (length(head) = 32),
    nv_counter   INTEGER NOT NULL UNIQUE,
    utc_ms       INTEGER NOT NULL,
    reason       TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    attest       BLOB NOT NULL,
    signature    BLOB NOT NULL,
    tpm_clock_ms INTEGER NOT NULL
) STRICT;
CREATE TRIGGER checkpoints_append_only_update BEFORE UPDATE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
CREATE TRIGGER checkpoints_append_only_delete BEFORE DELETE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;

-- AUTOINCREMENT: a user id is never handed out twice, even after the highest row is gone.
CREATE TABLE users (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    username        TEXT NOT NULL UNIQUE,
    full_name       TEXT NOT NULL,
    role            TEXT NOT NULL,
    pin_hash        TEXT NOT NULL,
    active          INTEGER NOT NULL DEFAULT 1,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    locked_until_ms INTEGER
) STRICT;
CREATE TRIGGER users_never_deleted BEFORE DELETE ON users
    BEGIN SELECT RAISE(ABORT, 'users are deactivated, never deleted'); END;
CREATE TRIGGER users_identity_fixed BEFORE UPDATE OF id, username ON users
    BEGIN SELECT RAISE(ABORT, 'a user id and name never change'); END;
";

/// Migrations in order: `MIGRATIONS[n]` takes version n to n+1.
const MIGRATIONS: &[&str] = &[V1];

/// Why a database cannot be brought to the current schema.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the database has schema {found}, newer than this software ({CURRENT}); refusing to touch it"
    )]
    TooNew { found: u32 },
    #[error("migrating the schema from {from} failed: {source}")]
    Migration { from: u32, source: rusqlite::Error },
    #[error("reading the schema version failed: {0}")]
    Version(rusqlite::Error),
}

/// Brings `conn` to [`CURRENT`]. Returns the version it found.
pub fn migrate(conn: &mut Connection) -> Result<u32, SchemaError> {
    let found: u32 =
        conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(SchemaError::Version)?;
    if found > CURRENT {
        return Err(SchemaError::TooNew { found });
    }
    for (from, sql) in (found..CURRENT).zip(&MIGRATIONS[found as usize..]) {
        let step = |conn: &mut Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", from + 1)?;
            tx.commit()
        };
        step(conn).map_err(|source| SchemaError::Migration { from, source })?;
    }
    Ok(found)
}
