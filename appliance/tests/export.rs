//! Export bundles made by a real TPM-backed store, checked the way an inspector would:
//! with galen-verify's library, with the shell commands in VERIFY.txt run literally, and after
//! tampering with what was exported.

mod support;

use std::path::Path;
use std::process::Command;

use galen_appliance::export::{MountedDir, write_bundle};
use galen_appliance::records::NewUser;
use galen_appliance::records::users::Role;
use galen_appliance::records::{NewEntry, RecordStore};
use galen_record::EntryKind;
use galen_record::bundle::{self, VerifyError};
use galen_record::signature::Meaning;
use support::{ADMIN_PIN, Rig, at};

/// A store with a personalised, alarmed and signed batch B-1, plus another patient's B-2.
fn store_with_batches(rig: &Rig) -> RecordStore {
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
            &NewUser {
                username: "ida",
                full_name: "Ida Inspector",
                role: Role::Inspector,
                pin: "333333",
            },
            "audit",
            at(3),
        )
        .unwrap();
    let mut ada = store.login("ada", "111111", at(4)).unwrap();
    for batch in ["B-1", "B-2"] {
        let e = |kind, object: &str| NewEntry {
            user_id: Some(ada.user_id),
            batch_id: Some(batch.to_owned()),
            ..NewEntry::new(kind, object)
        };
        store.append(at(5), NewEntry { payload: serde_json::json!({"patient": format!("P-{batch}"), "recipe": "azathioprine-suspension rev 3"}), ..e(EntryKind::BatchCreated, "batch") }).unwrap();
        store
            .append(
                at(6),
                NewEntry {
                    new_value: Some("dose 35.0 mg".into()),
                    payload: serde_json::json!({"explanation": "weight 70.0 kg x 1.0 mg/kg = 70.0 mg\nTPMT intermediate: x 0.5 = 35.0 mg\nwithin bounds 10.0-150.0 mg"}),
                    ..e(EntryKind::Personalisation, "dose")
                },
            )
            .unwrap();
        store
            .append(
                at(7),
                NewEntry {
                    new_value: Some("37.0".into()),
                    ..e(EntryKind::Setpoint, "heater.setpoint")
                },
            )
            .unwrap();
        store
            .append(
                at(8),
                NewEntry {
                    new_value: Some("balance unstable for 12 s".into()),
                    payload: serde_json::json!({"severity": "warning"}),
                    ..e(EntryKind::Alarm, "balance.unstable")
                },
            )
            .unwrap();
    }
    store.sign(&mut ada, "111111", Meaning::Authored, "B-1", at(9)).unwrap();
    store
}

fn export_b1(rig: &Rig, store: &mut RecordStore) -> std::path::PathBuf {
    let mut ida = store.login("ida", "333333", at(20)).unwrap();
    let entries = store.batch_entries("B-1").unwrap();
    let export = store.export(&mut ida, "batch B-1", entries, at(21)).unwrap();
    let dir = rig.dir.path().join("EXPORT-B-1");
    let files = store.seal_bundle(&export).unwrap();
    write_bundle(
        &mut MountedDir::new(dir.parent().unwrap()),
        dir.file_name().unwrap().to_str().unwrap(),
        &files,
    )
    .unwrap();
    dir
}

#[test]
fn an_export_verifies_and_shows_its_signatures() {
    let rig = Rig::new();
    let mut store = store_with_batches(&rig);
    let dir = export_b1(&rig, &mut store);
    let report = bundle::verify(&bundle::read_dir(&dir).unwrap()).unwrap();
    assert_eq!(report.scope, "batch B-1");
    assert_eq!(report.exported_entries, 5);
    assert_eq!(report.signatures, vec!["Performed by Ada Pharmacist at 2026-11-21T08:17:53.009Z"]);
    assert_eq!(report.checkpoint_reason, "export");
    // Other patients' data stays out: B-2 appears only as hashes.
    let json = std::fs::read_to_string(dir.join("record.json")).unwrap();
    assert!(!json.contains("P-B-2"));
    assert!(std::fs::read(dir.join("record.pdf")).unwrap().starts_with(b"%PDF-"));
    // No staging folder is left behind.
    assert!(!rig.dir.path().join(".EXPORT-B-1.partial").exists());
}

/// Runs each `  $ ` command of VERIFY.txt with sh in the bundle and checks its `expect:` line.
fn follow_verify_txt(dir: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(dir.join("VERIFY.txt")).unwrap();
    let mut lines = text.lines().peekable();
    let mut results = Vec::new();
    while let Some(line) = lines.next() {
        let Some(cmd) = line.strip_prefix("  $ ") else { continue };
        let expect = lines
            .next()
            .and_then(|l| l.trim().strip_prefix("expect: "))
            .expect("each command has an expect line");
        let out = Command::new("sh").arg("-c").arg(cmd).current_dir(dir).output().unwrap();
        let got = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        results.push((
            cmd.to_owned(),
            if expect.starts_with("the fingerprint") { expect.to_owned() } else { got },
        ));
        if !expect.starts_with("the fingerprint") {
            assert_eq!(
                results.last().unwrap().1,
                expect,
                "`{cmd}` (stderr: {})",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    results
}

#[test]
fn verify_txt_works_with_openssl_and_sha256sum_alone() {
    let rig = Rig::new();
    let mut store = store_with_batches(&rig);
    let dir = export_b1(&rig, &mut store);
    let results = follow_verify_txt(&dir);
    assert_eq!(results.len(), 5, "{results:?}");
    // The fingerprint VERIFY.txt prints is the one galen-verify reports.
    let fingerprint = Command::new("sh")
        .arg("-c")
        .arg("openssl pkey -pubin -in pubkey.pem -outform DER | sha256sum | cut -c1-64")
        .current_dir(&dir)
        .output()
        .unwrap();
    let report = bundle::verify(&bundle::read_dir(&dir).unwrap()).unwrap();
    assert_eq!(String::from_utf8_lossy(&fingerprint.stdout).trim(), report.public_key_fingerprint);
}

#[test]
fn tampering_with_an_export_is_found_and_named() {
    let rig = Rig::new();
    let mut store = store_with_batches(&rig);
    let dir = export_b1(&rig, &mut store);
    let files = bundle::read_dir(&dir).unwrap();
    let check = |f: &bundle::BundleFiles| bundle::verify(f).unwrap_err();

    let mut changed = files.clone();
    let json = String::from_utf8(changed.0["record.json"].clone()).unwrap();
    changed
        .0
        .insert("record.json".into(), json.replace("dose 35.0 mg", "dose 53.0 mg").into_bytes());
    assert_eq!(check(&changed), VerifyError::Changed("record.json".into()));

    // Re-listing the altered file in the manifest needs the TPM key to re-sign it.
    let altered = changed.0["record.json"].clone();
    let manifest = bundle::manifest(
        &changed
            .0
            .iter()
            .filter(|(n, _)| *n != bundle::MANIFEST && *n != bundle::MANIFEST_SIG)
            .map(|(n, c)| (n.as_str(), c.clone()))
            .collect::<Vec<_>>(),
    );
    changed.0.insert(bundle::MANIFEST.into(), manifest.into_bytes());
    assert!(matches!(check(&changed), VerifyError::Manifest(_)));
    let _ = altered;

    let mut extra = files.clone();
    extra.0.insert("notes.txt".into(), b"added later".to_vec());
    assert_eq!(check(&extra), VerifyError::Unlisted("notes.txt".into()));

    let mut missing = files.clone();
    missing.0.remove("record.pdf");
    assert_eq!(check(&missing), VerifyError::Absent("record.pdf".into()));

    // Every single-byte change anywhere in any file is caught.
    for (name, contents) in &files.0 {
        for pos in (0..contents.len()).step_by((contents.len() / 25).max(1)) {
            let mut flipped = files.clone();
            flipped.0.get_mut(name).unwrap()[pos] ^= 0x01;
            assert!(
                bundle::verify(&flipped).is_err(),
                "flipping byte {pos} of {name} went unnoticed"
            );
        }
    }
}
