//! The record store against a real software TPM: sealing, checkpoints, users and signatures,
//! and every kind of tampering the compliance checklist names (21 CFR 11.10(a), 11.70).

mod support;

use galen_appliance::records::users::{AuthError, Role};
use galen_appliance::records::{Integrity, NewEntry, NewUser, RecordError, RecordStore};
use galen_record::EntryKind;
use galen_record::signature::Meaning;
use support::{ADMIN_PIN, Rig, at, raw};

/// A store with two batches of a few entries each, a pharmacist and a QA user, and batch B-1
/// signed by the pharmacist. Closed cleanly.
fn populated(rig: &Rig) {
    let mut store = rig.commission();
    let mut admin = store.login("admin", ADMIN_PIN, at(1)).unwrap();
    store
        .add_user(
            &mut admin,
            &NewUser {
                username: "ada",
                full_name: "Ada Pharmacist",
                role: Role::Pharmacist,
                pin: "111111",
            },
            "new hire",
            at(2),
        )
        .unwrap();
    store
        .add_user(
            &mut admin,
            &NewUser { username: "quinn", full_name: "Quinn QA", role: Role::Qa, pin: "222222" },
            "new hire",
            at(3),
        )
        .unwrap();
    let mut ada = store.login("ada", "111111", at(4)).unwrap();
    for batch in ["B-1", "B-2"] {
        store
            .append(
                at(5),
                NewEntry {
                    user_id: Some(ada.user_id),
                    batch_id: Some(batch.into()),
                    ..NewEntry::new(EntryKind::BatchCreated, "batch")
                },
            )
            .unwrap();
        for i in 0..3 {
            store
                .append(
                    at(6 + i),
                    NewEntry {
                        batch_id: Some(batch.into()),
                        new_value: Some(format!("{}.0", 20 + i)),
                        ..NewEntry::new(EntryKind::Setpoint, "heater.setpoint")
                    },
                )
                .unwrap();
        }
    }
    store.sign(&mut ada, "111111", Meaning::Authored, "B-1", at(20)).unwrap();
    store.shutdown(at(30)).unwrap();
}

fn open_problem(rig: &Rig) -> String {
    match RecordStore::open(&rig.db(), support::DEVICE, rig.tpm(), at(1_000_000)) {
        Ok(store) => match store.integrity() {
            Integrity::Sound => "sound".into(),
            Integrity::Compromised(why) => why.clone(),
        },
        Err(e) => format!("refused to open: {e}"),
    }
}

#[test]
fn a_commissioned_store_reopens_sound_with_its_chain_intact() {
    let rig = Rig::new();
    populated(&rig);
    let store = rig.open();
    assert_eq!(store.integrity(), &Integrity::Sound);
    assert_eq!(store.verify_chain().unwrap(), store.len());
    assert!(store.len() > 10, "{} entries", store.len());
}

#[test]
fn commissioning_never_overwrites_and_opening_never_creates() {
    let rig = Rig::new();
    let missing = RecordStore::open(&rig.db(), support::DEVICE, rig.tpm(), at(0)).unwrap_err();
    assert!(matches!(missing, RecordError::Missing(_)), "{missing}");
    drop(rig.commission());
    let admin =
        galen_appliance::records::FirstAdmin { username: "xy", full_name: "X", pin: "123456" };
    let again =
        RecordStore::create(&rig.db(), support::DEVICE, rig.tpm(), &admin, at(0)).unwrap_err();
    assert!(matches!(again, RecordError::Exists(_)), "{again}");
}

#[test]
fn an_administrator_nobody_could_log_in_as_is_refused_before_anything_is_created() {
    let rig = Rig::new();
    for (username, pin) in [("Admin Person", "123456"), ("admin", "12ab56"), ("admin", "123")] {
        let admin = galen_appliance::records::FirstAdmin { username, full_name: "Admin", pin };
        let e =
            RecordStore::create(&rig.db(), support::DEVICE, rig.tpm(), &admin, at(0)).unwrap_err();
        assert!(
            matches!(e, RecordError::NewUser(_) | RecordError::Auth(_)),
            "{username} {pin}: {e}"
        );
        assert!(!rig.db().exists(), "nothing created for {username:?}");
    }
}

#[test]
fn the_database_refuses_updates_and_deletes() {
    let rig = Rig::new();
    populated(&rig);
    let conn = raw(&rig.db());
    let update =
        conn.execute("UPDATE entries SET new_value = '99.0' WHERE seq = 5", []).unwrap_err();
    assert!(update.to_string().contains("append-only"), "{update}");
    let delete = conn.execute("DELETE FROM entries WHERE seq = 5", []).unwrap_err();
    assert!(delete.to_string().contains("append-only"), "{delete}");
    let user = conn.execute("DELETE FROM users WHERE id = 1", []).unwrap_err();
    assert!(user.to_string().contains("never deleted"), "{user}");
}

#[test]
fn a_changed_value_is_found_and_the_entry_named() {
    let rig = Rig::new();
    populated(&rig);
    let conn = raw(&rig.db());
    conn.execute_batch("DROP TRIGGER entries_append_only_update").unwrap();
    conn.execute("UPDATE entries SET new_value = '99.0' WHERE seq = 7", []).unwrap();
    drop(conn);
    assert_eq!(
        open_problem(&rig),
        "records are damaged: entry 7: its content does not match its hash; the entry was altered"
    );
}

#[test]
fn a_deleted_row_is_found_and_the_gap_named() {
    let rig = Rig::new();
    populated(&rig);
    let conn = raw(&rig.db());
    conn.execute_batch("DROP TRIGGER entries_append_only_delete").unwrap();
    conn.execute("DELETE FROM entries WHERE seq = 6", []).unwrap();
    drop(conn);
    assert_eq!(
        open_problem(&rig),
        "records are damaged: entry 7: expected entry 6 here; an entry is missing, duplicated or out of order"
    );
}

#[test]
fn two_swapped_rows_are_found() {
    let rig = Rig::new();
    populated(&rig);
    let conn = raw(&rig.db());
    conn.execute_batch(
        "DROP TRIGGER entries_append_only_update;
         UPDATE entries SET seq = -1 WHERE seq = 6;
         UPDATE entries SET seq = 6 WHERE seq = 7;
         UPDATE entries SET seq = 7 WHERE seq = -1;",
    )
    .unwrap();
    drop(conn);
    assert_eq!(
        open_problem(&rig),
        "records are damaged: entry 6: does not follow the entry before it; entries were removed, inserted or swapped"
    );
}

#[test]
fn an_older_copy_restored_is_found_by_the_tpm_counter() {
    let rig = Rig::new();
    populated(&rig);
    let old = rig.dir.path().join("old.sqlite");
    std::fs::copy(rig.db(), &old).unwrap();
    let mut store = rig.open();
    store.checkpoint("periodic", at(2_000_000)).unwrap();
    store.shutdown(at(2_000_001)).unwrap();
    std::fs::copy(&old, rig.db()).unwrap();
    let problem = open_problem(&rig);
    assert!(problem.contains("rolled back, restored from an older copy or truncated"), "{problem}");
}

#[test]
fn a_truncated_store_is_found() {
    let rig = Rig::new();
    populated(&rig);
    let conn = raw(&rig.db());
    let last: i64 = conn.query_row("SELECT max(id) FROM checkpoints", [], |r| r.get(0)).unwrap();
    let entries: i64 = conn
        .query_row("SELECT entries FROM checkpoints WHERE id = ?1", [last - 1], |r| r.get(0))
        .unwrap();
    conn.execute_batch(
        "DROP TRIGGER entries_append_only_delete; DROP TRIGGER checkpoints_append_only_delete",
    )
    .unwrap();
    conn.execute("DELETE FROM checkpoints WHERE id = ?1", [last]).unwrap();
    conn.execute("DELETE FROM entries WHERE seq > ?1", [entries]).unwrap();
    drop(conn);
    let problem = open_problem(&rig);
    assert!(problem.contains("rolled back"), "{problem}");
}

#[test]
fn a_forged_entry_without_the_sealed_key_is_found() {
    // An attacker copies B-1's signature onto B-2, recomputing the hash chain (which anyone
    // can) but not the MAC (which needs the key sealed in the TPM).
    let rig = Rig::new();
    populated(&rig);
    let store = rig.open();
    let signature = store
        .batch_entries("B-1")
        .unwrap()
        .into_iter()
        .find(|e| e.body.kind == EntryKind::Signature)
        .expect("B-1 was signed");
    let last = store.len();
    store.shutdown(at(3_000_000)).unwrap();
    let conn = raw(&rig.db());
    let (head, prev_seq): (Vec<u8>, u64) = conn
        .query_row("SELECT entry_hash, seq FROM entries ORDER BY seq DESC LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(prev_seq > last);
    let mut body = signature.body.clone();
    body.batch_id = Some("B-2".into());
    let seq = prev_seq + 1;
    let head: [u8; 32] = head.try_into().unwrap();
    let hash = galen_record::chain::link(seq, &head, &body.hash());
    conn.execute(
        "INSERT INTO entries (seq, utc_ms, tpm_clock_ms, device_id, user_id, batch_id, kind, object, \
         old_value, new_value, reason, payload, prev_hash, entry_hash, mac) \
         VALUES (?1, ?2, NULL, ?3, ?4, ?5, ?6, ?7, NULL, ?8, NULL, ?9, ?10, ?11, ?12)",
        rusqlite::params![
            seq, body.utc.0, body.device_id, body.user_id, body.batch_id, body.kind.as_str(),
            body.object, body.new_value, body.payload, head.as_slice(), hash.as_slice(), [0u8; 32].as_slice()
        ],
    )
    .unwrap();
    drop(conn);
    assert_eq!(
        open_problem(&rig),
        format!(
            "records are damaged: entry {seq}: its MAC is wrong; it was not written by this appliance's sealed key"
        )
    );
}

#[test]
fn power_lost_between_checkpoint_commit_and_counter_increment_is_completed_not_alarmed() {
    let mut rig = Rig::new();
    populated(&rig);
    let tpm_before = rig.dir.path().join("tpm-before");
    let mut store = rig.open();
    // Snapshot the TPM's NV state as it was before the next checkpoint's increment.
    let state = rig.tpm.as_ref().unwrap().state.clone();
    support::copy_dir(&state, &tpm_before);
    store.checkpoint("periodic", at(4_000_000)).unwrap();
    drop(store);
    rig.restart_tpm_from(&tpm_before);
    let store = rig.open();
    assert_eq!(store.integrity(), &Integrity::Sound);
    let last = store
        .entries_between(galen_record::UtcMillis(0), galen_record::UtcMillis(i64::MAX))
        .unwrap();
    assert_eq!(last.last().unwrap().body.object, "records.checkpoint.completed");
}

#[test]
fn power_lost_between_a_signature_and_its_checkpoint_the_signature_is_sealed_at_start() {
    let rig = Rig::new();
    populated(&rig);
    let mut store = rig.open();
    // What `sign` commits before its checkpoint; the power fails right after.
    let signature = store
        .append(
            at(4_000_000),
            NewEntry {
                batch_id: Some("B-2".into()),
                new_value: Some("Performed by Ada Pharmacist".into()),
                ..NewEntry::new(EntryKind::Signature, "signature.Performed by")
            },
        )
        .unwrap();
    drop(store);
    let sealed_after = |seq: u64| -> i64 {
        raw(&rig.db())
            .query_row(
                "SELECT count(*) FROM checkpoints WHERE reason = 'signature' AND entries >= ?1",
                [seq],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(sealed_after(signature.seq), 0);
    let store = rig.open();
    assert_eq!(store.integrity(), &Integrity::Sound);
    let all = store
        .entries_between(galen_record::UtcMillis(0), galen_record::UtcMillis(i64::MAX))
        .unwrap();
    let last = all.last().unwrap();
    assert_eq!(last.body.object, "records.signature.sealed");
    assert_eq!(last.body.new_value, Some(signature.seq.to_string()));
    assert_eq!(sealed_after(signature.seq), 1);
    drop(store);
    // Sealed once: opening again adds nothing.
    let store = rig.open();
    assert_eq!(store.len(), last.seq);
}

#[test]
fn a_compromised_store_refuses_new_batches_but_keeps_recording() {
    let rig = Rig::new();
    populated(&rig);
    let conn = raw(&rig.db());
    conn.execute_batch("DROP TRIGGER entries_append_only_update").unwrap();
    conn.execute("UPDATE entries SET object = 'x' WHERE seq = 3", []).unwrap();
    drop(conn);
    let mut store = rig.open();
    assert!(matches!(store.integrity(), Integrity::Compromised(_)));
    let refused =
        store.append(at(5_000_000), NewEntry::new(EntryKind::BatchCreated, "batch")).unwrap_err();
    assert!(matches!(refused, RecordError::Compromised(_)), "{refused}");
    store.append(at(5_000_001), NewEntry::new(EntryKind::Alarm, "operator.acknowledged")).unwrap();
}

#[test]
fn wrong_pins_lock_the_account_and_raise_an_alarm() {
    let rig = Rig::new();
    populated(&rig);
    let mut store = rig.open();
    for _ in 0..4 {
        let e = store.login("ada", "000000", at(10)).unwrap_err();
        assert!(matches!(e, RecordError::Auth(AuthError::WrongCredentials)), "{e}");
    }
    let e = store.login("ada", "000000", at(11)).unwrap_err();
    assert!(matches!(e, RecordError::Auth(AuthError::LockedOut { .. })), "{e}");
    // Even the right PIN is refused while locked.
    let e = store.login("ada", "111111", at(12)).unwrap_err();
    assert!(matches!(e, RecordError::Auth(AuthError::LockedOut { .. })), "{e}");
    let unknown = store.login("nobody", "000000", at(13)).unwrap_err();
    assert_eq!(unknown.to_string(), "user name or PIN is wrong");
    let alarms: Vec<_> = store
        .entries_between(galen_record::UtcMillis(0), galen_record::UtcMillis(i64::MAX))
        .unwrap()
        .into_iter()
        .filter(|e| e.body.kind == EntryKind::Alarm)
        .collect();
    assert_eq!(alarms.len(), 1);
    assert!(alarms[0].body.object.ends_with(".lockout"));
}

#[test]
fn signing_needs_the_pin_the_right_role_and_an_existing_batch() {
    let rig = Rig::new();
    populated(&rig);
    let mut store = rig.open();
    let mut quinn = store.login("quinn", "222222", at(100)).unwrap();
    let wrong = store.sign(&mut quinn, "999999", Meaning::Released, "B-1", at(101)).unwrap_err();
    assert!(matches!(wrong, RecordError::Auth(AuthError::WrongCredentials)), "{wrong}");
    let role = store.sign(&mut quinn, "222222", Meaning::Authored, "B-1", at(102)).unwrap_err();
    assert_eq!(role.to_string(), "the qa role may not sign as \"Performed by\"");
    let none = store.sign(&mut quinn, "222222", Meaning::Released, "B-9", at(103)).unwrap_err();
    assert!(matches!(none, RecordError::NoSuchBatch(_)), "{none}");
    let mut admin = store.login("admin", ADMIN_PIN, at(104)).unwrap();
    let admin_sign =
        store.sign(&mut admin, ADMIN_PIN, Meaning::Released, "B-1", at(105)).unwrap_err();
    assert!(
        matches!(admin_sign, RecordError::Auth(AuthError::NotPermitted { .. })),
        "{admin_sign}"
    );
    let record = store.sign(&mut quinn, "222222", Meaning::Released, "B-1", at(106)).unwrap();
    assert!(record.is_bound());
    assert_eq!(record.printed_name, "Quinn QA");
    // Expired session: both components again (11.200).
    let late = store
        .sign(&mut quinn, "222222", Meaning::Reviewed, "B-1", at(106 + 11 * 60 * 1000))
        .unwrap_err();
    assert!(matches!(late, RecordError::Auth(AuthError::SessionExpired)), "{late}");
}

#[test]
fn user_changes_need_an_admin_and_a_reason_and_ids_are_never_reused() {
    let rig = Rig::new();
    populated(&rig);
    let mut store = rig.open();
    let mut ada = store.login("ada", "111111", at(200)).unwrap();
    let e = store
        .add_user(
            &mut ada,
            &NewUser { username: "eve", full_name: "Eve", role: Role::Qa, pin: "333333" },
            "why not",
            at(201),
        )
        .unwrap_err();
    assert!(matches!(e, RecordError::Auth(AuthError::NotPermitted { .. })), "{e}");
    let mut admin = store.login("admin", ADMIN_PIN, at(202)).unwrap();
    let e = store
        .add_user(
            &mut admin,
            &NewUser { username: "bob", full_name: "Bob", role: Role::Verifier, pin: "444444" },
            "",
            at(203),
        )
        .unwrap_err();
    assert!(matches!(e, RecordError::ReasonRequired(_)), "{e}");
    let bob = store
        .add_user(
            &mut admin,
            &NewUser { username: "bob2", full_name: "Bob", role: Role::Verifier, pin: "444444" },
            "second checker",
            at(204),
        )
        .unwrap();
    store.deactivate_user(&mut admin, bob, "left the hospital", at(205)).unwrap();
    let e = store.login("bob2", "444444", at(206)).unwrap_err();
    assert!(matches!(e, RecordError::Auth(AuthError::Deactivated)), "{e}");
    let carol = store
        .add_user(
            &mut admin,
            &NewUser { username: "carol", full_name: "Carol", role: Role::Verifier, pin: "555555" },
            "replacement",
            at(207),
        )
        .unwrap();
    assert!(carol > bob);
    let e = store
        .add_user(
            &mut admin,
            &NewUser { username: "carol", full_name: "Carol Again", role: Role::Qa, pin: "555555" },
            "dup",
            at(208),
        )
        .unwrap_err();
    assert!(matches!(e, RecordError::UserExists(_)), "{e}");
}

#[test]
fn the_sealed_key_does_not_unseal_after_the_boot_state_changes() {
    let rig = Rig::new();
    drop(rig.commission());
    let tcti = rig.tpm.as_ref().unwrap().tcti.clone();
    let status = std::process::Command::new("tpm2_pcrextend")
        .args([
            "-T",
            &tcti,
            "7:sha256=0000000000000000000000000000000000000000000000000000000000000001",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let e = RecordStore::open(&rig.db(), support::DEVICE, rig.tpm(), at(0)).unwrap_err();
    assert!(e.to_string().contains("boot state"), "{e}");
}

#[test]
fn a_role_changed_behind_the_audit_trail_is_found() {
    let rig = Rig::new();
    populated(&rig);
    let conn = raw(&rig.db());
    conn.execute("UPDATE users SET role = 'qa' WHERE username = 'ada'", []).unwrap();
    drop(conn);
    assert_eq!(
        open_problem(&rig),
        "user 2's account differs from what its audit trail records; it was altered"
    );
}

/// Every row of every table, as text: what a flipped byte must either leave alone or be
/// caught changing.
fn dump(db: &std::path::Path) -> Result<String, rusqlite::Error> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut out = String::new();
    for table in ["entries", "checkpoints", "users"] {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table} ORDER BY 1"))?;
        let n = stmt.column_count();
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            for i in 0..n {
                out.push_str(&format!("{:?}|", row.get_ref(i)?));
            }
            out.push('\n');
        }
    }
    Ok(out)
}

#[test]
fn any_byte_of_the_database_file_changed_is_found_or_changes_nothing() {
    let rig = Rig::new();
    populated(&rig);
    let original = std::fs::read(rig.db()).unwrap();
    let original_dump = dump(&rig.db()).unwrap();
    let mut detected = 0;
    let step = original.len() / 150;
    for pos in (100..original.len()).step_by(step) {
        let mut bytes = original.clone();
        bytes[pos] ^= 0x5a;
        std::fs::write(rig.db(), &bytes).unwrap();
        let _ = std::fs::remove_file(rig.db().with_extension("sqlite-wal"));
        let verdict = match RecordStore::open(&rig.db(), support::DEVICE, rig.tpm(), at(1_000_000))
        {
            Err(_) => true,
            Ok(store) => matches!(store.integrity(), Integrity::Compromised(_)),
        };
        if verdict {
            detected += 1;
        } else {
            // Undetected is only acceptable where the byte carried no record data at all.
            std::fs::write(rig.db(), &bytes).unwrap();
            assert_eq!(
                dump(&rig.db()).ok().as_deref(),
                Some(original_dump.as_str()),
                "byte {pos} changed a record unnoticed"
            );
        }
    }
    assert!(detected > 20, "only {detected} flips were detected; the sample missed the data");
}
