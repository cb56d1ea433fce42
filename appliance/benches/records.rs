//! Record-store benchmarks: durable chained appends next to plain SQLite inserts in the same
//! run, TPM checkpoint latency on swtpm, and export plus verification of 1,000 batches.
//! Results go to `$GALEN_BENCH_OUT` as JSON lines (xtask/src/bench.rs).

mod report;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use galen_appliance::export::{MountedDir, write_bundle};
use galen_appliance::records::NewEntry;
use galen_appliance::records::NewUser;
use galen_appliance::records::users::Role;
use galen_record::EntryKind;
use galen_record::bundle;
use support::{ADMIN_PIN, Rig, at};

fn report(name: &str, value: f64, unit: &str, note: &str) {
    report::report("records", name, value, unit, note);
}

fn per_second(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn entry(i: u64, batch: &str) -> NewEntry {
    NewEntry {
        batch_id: Some(batch.to_owned()),
        new_value: Some(format!("{}.{}", 20 + i % 50, i % 10)),
        payload: serde_json::json!({"mean": 37.02, "min": 36.9, "max": 37.1, "n": 60}),
        ..NewEntry::new(EntryKind::ReadingSummary, "heater.temperature")
    }
}

/// Plain inserts of the same row shape, same pragmas, no hashing, MAC or triggers.
fn plain_inserts(dir: &std::path::Path, n: u64) -> Duration {
    let conn = rusqlite::Connection::open(dir.join("plain.sqlite")).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE entries (seq INTEGER PRIMARY KEY, utc_ms INTEGER, tpm_clock_ms INTEGER,
           device_id TEXT, user_id INTEGER, batch_id TEXT, kind TEXT, object TEXT, old_value TEXT,
           new_value TEXT, reason TEXT, payload TEXT, prev_hash BLOB, entry_hash BLOB, mac BLOB);",
    )
    .unwrap();
    let start = Instant::now();
    for i in 0..n {
        let e = entry(i, "B-1");
        conn.execute(
            "INSERT INTO entries (utc_ms, device_id, batch_id, kind, object, new_value, payload, prev_hash, entry_hash, mac) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            rusqlite::params![i as i64, "galen", e.batch_id, e.kind.as_str(), e.object, e.new_value, e.payload.to_string(), [0u8; 32].as_slice(), [1u8; 32].as_slice(), [2u8; 32].as_slice()],
        )
        .unwrap();
    }
    start.elapsed()
}

fn main() {
    // Appends, interleaved in rounds with plain inserts so both see the same machine load.
    let rounds = 3;
    let n = 1_000;
    let (mut chained, mut plain) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let rig = Rig::new();
        let mut store = rig.commission();
        let start = Instant::now();
        for i in 0..n {
            store.append(at(i as i64), entry(i, "B-1")).unwrap();
        }
        chained += start.elapsed();
        plain += plain_inserts(rig.dir.path(), n);
    }
    let total = n * rounds;
    let (c, p) = (per_second(total, chained), per_second(total, plain));
    report(
        "durable appends (chain + MAC + periodic TPM checkpoint)",
        c,
        "entries/s",
        "WAL, synchronous=FULL, one transaction per entry",
    );
    report(
        "plain SQLite inserts, same rows and pragmas",
        p,
        "entries/s",
        "measured interleaved with the line above",
    );
    report("appends / plain inserts", c / p, "ratio", "goal >= 0.7");

    // Checkpoint latency.
    let rig = Rig::new();
    let mut store = rig.commission();
    let k = 30;
    let mut times: Vec<f64> = (0..k)
        .map(|i| {
            let start = Instant::now();
            store.checkpoint("periodic", at(i)).unwrap();
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    report(
        "TPM checkpoint latency, median",
        times[times.len() / 2],
        "ms",
        "swtpm over loopback TCP: NV read, quote, commit, NV increment",
    );
    report("TPM checkpoint latency, worst of 30", times[times.len() - 1], "ms", "");

    // Export and verification of 1,000 batches of 6 entries each.
    let rig = Rig::new();
    let mut store = rig.commission();
    let mut admin = store.login("admin", ADMIN_PIN, at(0)).unwrap();
    store
        .add_user(
            &mut admin,
            &NewUser {
                username: "ida",
                full_name: "Ida Inspector",
                role: Role::Inspector,
                pin: "333333",
            },
            "audit",
            at(1),
        )
        .unwrap();
    for b in 0..1_000u64 {
        let batch = format!("B-{b:04}");
        for i in 0..6 {
            store.append(at(10 + b as i64), entry(i, &batch)).unwrap();
        }
    }
    let mut ida = store.login("ida", "333333", at(100_000)).unwrap();
    let start = Instant::now();
    let entries = store
        .entries_between(galen_record::UtcMillis(0), galen_record::UtcMillis(i64::MAX))
        .unwrap();
    let export = store.export(&mut ida, "all batches", entries, at(100_001)).unwrap();
    let dir = rig.dir.path().join("EXPORT");
    let files = store.seal_bundle(&export).unwrap();
    write_bundle(
        &mut MountedDir::new(dir.parent().unwrap()),
        dir.file_name().unwrap().to_str().unwrap(),
        &files,
    )
    .unwrap();
    let exported = start.elapsed();
    let start = Instant::now();
    let verified = bundle::verify(&bundle::read_dir(&dir).unwrap()).unwrap();
    let verify = start.elapsed();
    assert!(verified.exported_entries >= 6_000);
    report(
        "export 1,000 batches (6,000+ entries, PDF included)",
        exported.as_secs_f64(),
        "s",
        "select, checkpoint, render, write, fsync",
    );
    report(
        "verify that export (galen-verify library)",
        verify.as_secs_f64(),
        "s",
        "manifest, checkpoint, whole chain, every entry",
    );
}
