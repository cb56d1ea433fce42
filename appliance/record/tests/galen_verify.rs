//! The `galen-verify` binary as an inspector runs it: on a good bundle, a tampered one and a
//! folder that is not there. The bundle is signed with a software P-256 key standing in for
//! the TPM's, which is all the verifier ever sees of it; bundles signed by a real TPM are
//! verified in `galen-appliance`'s export tests.

use std::process::Command;

use galen_record::bundle::{ChainRow, Export, MANIFEST, MANIFEST_SIG};
use galen_record::chain::{GENESIS, link};
use galen_record::checkpoint::{SignedCheckpoint, Statement};
use galen_record::signature::{Meaning, SignatureRecord};
use galen_record::{Entry, EntryBody, EntryKind, UtcMillis};
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey as _, LineEnding};

fn key() -> SigningKey {
    SigningKey::from_slice(&[7u8; 32]).unwrap()
}

fn sign(message: &[u8]) -> Vec<u8> {
    let sig: Signature = key().sign(message);
    sig.to_der().as_bytes().to_vec()
}

/// A TPMS_ATTEST quote laid out by hand (TPM 2.0 Part 2, 10.12.12).
fn attest(extra: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    a.extend_from_slice(&0xff54_4347u32.to_be_bytes());
    a.extend_from_slice(&0x8018u16.to_be_bytes());
    a.extend_from_slice(&[0x00, 0x00]);
    a.extend_from_slice(&u16::try_from(extra.len()).unwrap().to_be_bytes());
    a.extend_from_slice(extra);
    a.extend_from_slice(&5_000u64.to_be_bytes());
    a.extend_from_slice(&1u32.to_be_bytes());
    a.extend_from_slice(&0u32.to_be_bytes());
    a.push(1);
    a.extend_from_slice(&0u64.to_be_bytes());
    a
}

fn body(kind: EntryKind, batch: &str, payload: String) -> EntryBody {
    EntryBody {
        utc: UtcMillis(1_795_249_073_000),
        tpm_clock_ms: None,
        device_id: "galen-0001".into(),
        user_id: Some(2),
        batch_id: Some(batch.into()),
        kind,
        object: "batch".into(),
        old_value: None,
        new_value: None,
        reason: None,
        payload,
    }
}

fn bundle_dir() -> tempfile::TempDir {
    let mut entries: Vec<Entry> = Vec::new();
    let mut prev = GENESIS;
    let mut push = |b: EntryBody, entries: &mut Vec<Entry>| {
        let seq = entries.len() as u64 + 1;
        let entry_hash = link(seq, &prev, &b.hash());
        entries.push(Entry { seq, body: b, prev_hash: prev, entry_hash });
        prev = entry_hash;
    };
    push(body(EntryKind::BatchCreated, "B-1", "{}".into()), &mut entries);
    let signed = entries[0].clone();
    let sig = SignatureRecord::new(
        2,
        "Ada Pharmacist".into(),
        Meaning::Authored,
        UtcMillis(1_795_249_074_000),
        "B-1".into(),
        signed.seq,
        signed.entry_hash,
    );
    push(body(EntryKind::Signature, "B-1", serde_json::to_string(&sig).unwrap()), &mut entries);
    let chain: Vec<ChainRow> = entries
        .iter()
        .map(|e| ChainRow {
            seq: e.seq,
            prev_hash: e.prev_hash,
            body_hash: e.body.hash(),
            entry_hash: e.entry_hash,
        })
        .collect();
    let statement = Statement {
        device_id: "galen-0001".into(),
        entries: 2,
        head: entries[1].entry_hash,
        nv_counter: 9,
        utc: UtcMillis(1_795_249_075_000),
        reason: "export".into(),
    };
    let attest = attest(&statement.digest());
    let checkpoint = SignedCheckpoint { statement, signature: sign(&attest), attest };
    let export = Export {
        record: Export::record(
            "galen-0001".into(),
            UtcMillis(1_795_249_075_000),
            "batch B-1".into(),
            entries,
        ),
        chain,
        checkpoint,
        public_key_pem: key().verifying_key().to_public_key_pem(LineEnding::LF).unwrap(),
        pdf: None,
    };
    let dir = tempfile::tempdir().unwrap();
    for (name, contents) in export.files() {
        if name == MANIFEST {
            std::fs::write(dir.path().join(MANIFEST_SIG), sign(&contents)).unwrap();
        }
        std::fs::write(dir.path().join(name), contents).unwrap();
    }
    dir
}

fn run(dir: &std::path::Path, json: bool) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_galen-verify"));
    if json {
        cmd.arg("--json");
    }
    cmd.arg(dir).output().unwrap()
}

#[test]
fn a_good_bundle_verifies_with_its_signature_shown() {
    let dir = bundle_dir();
    let out = run(dir.path(), false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout =
        String::from_utf8_lossy(&out.stdout).replace(&dir.path().display().to_string(), "<bundle>");
    insta::assert_snapshot!(stdout);
    let json: serde_json::Value = serde_json::from_slice(&run(dir.path(), true).stdout).unwrap();
    assert_eq!(json["chain_entries"], 2);
}

#[test]
fn a_signature_moved_to_another_batch_is_named() {
    let dir = bundle_dir();
    let path = dir.path().join("record.json");
    let json = std::fs::read_to_string(&path).unwrap();
    // Move the signature entry to B-2 in the export: its body no longer matches the chain.
    let moved = json.replacen(
        "\"batch_id\": \"B-1\",\n      \"kind\": \"signature\"",
        "\"batch_id\": \"B-2\",\n      \"kind\": \"signature\"",
        1,
    );
    assert_ne!(moved, json, "the test must actually move the signature");
    std::fs::write(&path, moved).unwrap();
    let out = run(dir.path(), false);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "NOT VERIFIED: record.json was changed after export (its SHA-256 differs from the manifest)"
    );
}

#[test]
fn a_missing_folder_is_a_distinct_failure() {
    let out = run(std::path::Path::new("/nonexistent/galen-export"), false);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/galen-export"));
}
