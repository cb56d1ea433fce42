//! Schema migrations against the saved database of every released schema.

mod support;

use std::path::{Path, PathBuf};

use galen_appliance::records::schema::{self, CURRENT, SchemaError};
use galen_appliance::records::{RecordError, RecordStore};
use rusqlite::Connection;

fn fixtures() -> Vec<(u32, PathBuf)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut out: Vec<(u32, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name()?.to_str()?.to_owned();
            let version = name.strip_prefix("schema-v")?.strip_suffix(".sqlite")?.parse().ok()?;
            Some((version, path))
        })
        .collect();
    out.sort();
    out
}

/// The schema as SQLite stores it, minus the internal sequence table.
fn schema_sql(conn: &Connection) -> Vec<String> {
    let mut stmt = conn
        .prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name != 'sqlite_sequence' ORDER BY name")
        .unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
}

fn rows(conn: &Connection, table: &str) -> Vec<String> {
    let mut stmt = conn.prepare(&format!("SELECT * FROM {table} ORDER BY 1")).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        Ok((0..n).map(|i| format!("{:?}", r.get_ref(i).unwrap())).collect::<Vec<_>>().join("|"))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

#[test]
fn there_is_a_saved_database_for_every_schema() {
    let versions: Vec<u32> = fixtures().into_iter().map(|(v, _)| v).collect();
    assert_eq!(versions, (1..=CURRENT).collect::<Vec<_>>());
}

#[test]
fn every_saved_database_migrates_with_its_values_intact_to_the_schema_of_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut fresh = Connection::open(dir.path().join("fresh.sqlite")).unwrap();
    assert_eq!(schema::migrate(&mut fresh).unwrap(), 0);
    for (version, fixture) in fixtures() {
        let copy = dir.path().join(format!("v{version}.sqlite"));
        std::fs::copy(&fixture, &copy).unwrap();
        let mut conn = Connection::open(&copy).unwrap();
        let before: Vec<Vec<String>> =
            ["entries", "checkpoints", "users"].iter().map(|t| rows(&conn, t)).collect();
        assert_eq!(schema::migrate(&mut conn).unwrap(), version);
        let after: Vec<Vec<String>> =
            ["entries", "checkpoints", "users"].iter().map(|t| rows(&conn, t)).collect();
        assert_eq!(before, after, "migrating v{version} changed stored values");
        assert_eq!(
            schema_sql(&conn),
            schema_sql(&fresh),
            "v{version} migrated differs from a new database"
        );
        let again: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(again, CURRENT);
    }
}

#[test]
fn a_database_from_newer_software_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("newer.sqlite");
    let mut conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", CURRENT + 1).unwrap();
    let err = schema::migrate(&mut conn).unwrap_err();
    assert!(matches!(err, SchemaError::TooNew { found } if found == CURRENT + 1), "{err}");
}

#[test]
fn a_file_that_is_not_a_database_is_refused_clearly() {
    let rig = support::Rig::new();
    std::fs::write(rig.db(), b"these are not the records you are looking for, not at all.....")
        .unwrap();
    let err = RecordStore::open(&rig.db(), support::DEVICE, rig.tpm(), support::at(0)).unwrap_err();
    assert!(matches!(err, RecordError::Open { .. }), "{err}");
    assert!(err.to_string().contains("file is not a database"), "{err}");
}
