//! Demo: one personalised batch recorded on a real (software) TPM and exported for an
//! inspector. `cargo xtask demo` runs it; it stands in for the operator until `applianced` and
//! `galenctl` exist, and uses the same record store they will.
//!
//! Usage: demo_batch_record <tcti> <output folder> <TUF repository> <trusted root.json> <lab file>

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use galen_appliance::export::{MountedDir, write_bundle};
use galen_appliance::records::users::Role;
use galen_appliance::records::{At, FirstAdmin, NewEntry, NewUser, RecordStore};
use galen_appliance::tpm::{Tpm, TpmConfig};
use galen_recipes::model::Version;
use galen_recipes::patient::{Patient, PatientId, Source, Sourced};
use galen_recipes::quantity::{BodyWeight, Fixed};
use galen_recipes::tuf::intake::Intake;
use galen_recipes::{personalise, pharmcat};
use galen_record::signature::Meaning;
use galen_record::{EntryKind, UtcMillis};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [tcti, out, repo, root, lab_path] = args.as_slice() else {
        bail!(
            "usage: demo_batch_record <tcti> <output folder> <TUF repository> <trusted root.json> <lab file>"
        );
    };
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out)?;
    // The runtime reads the clock and hands time to the store, which never reads one itself.
    let at = || {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        At::utc(UtcMillis(ms))
    };

    // The appliance installs only what verifies against the root key shipped in its image.
    let intake = Intake::new(
        std::fs::read(root).context("reading the trusted root")?,
        out.join("appliance/recipes"),
        "galen-cu1",
        Version::parse(env!("CARGO_PKG_VERSION")).context("appliance version")?,
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report =
        runtime.block_on(intake.from_directory(Path::new(repo), jiff::Timestamp::now()))?;
    println!(
        "    verified the repository as from a USB stick (root v{}, targets v{}, snapshot v{}, timestamp v{})",
        report.versions.root,
        report.versions.targets,
        report.versions.snapshot,
        report.versions.timestamp
    );
    for installed in &report.installed {
        let r = &installed.recipe;
        println!(
            "      installed {} revision {} (sha256 {}…)",
            r.id,
            r.revision,
            &installed.sha256[..16]
        );
    }
    for refused in &report.refused {
        println!("      refused {}: {}", refused.target, refused.reason);
    }

    let tpm = Tpm::open(&TpmConfig {
        tcti: tcti.clone(),
        key_dir: out.join("appliance/keys"),
        nv_index: 0x0150_0100,
        pcrs: vec![7],
    })?;
    let db = out.join("appliance/records.sqlite");
    // `applianced commission` made the store; a fresh folder gets one here.
    let mut store = if db.exists() {
        let store = RecordStore::open(&db, "galen-demo-0001", tpm, at())?;
        println!(
            "    opened the records applianced keeps: {} entries, {:?}",
            store.len(),
            store.integrity()
        );
        store
    } else {
        let admin = FirstAdmin { username: "admin", full_name: "Alan Admin", pin: "271828" };
        let store = RecordStore::create(&db, "galen-demo-0001", tpm, &admin, at())?;
        println!("    commissioned appliance galen-demo-0001: records in {}", db.display());
        store
    };

    let mut alan = store.login("admin", "271828", at())?;
    for (user, name, role, pin) in [
        ("ada", "Ada Lovelace", Role::Pharmacist, "111111"),
        ("vic", "Victor Second", Role::Verifier, "222222"),
        ("quinn", "Quinn Release", Role::Qa, "333333"),
        ("ida", "Ida Inspector", Role::Inspector, "444444"),
    ] {
        let person = NewUser { username: user, full_name: name, role, pin };
        store.add_user(&mut alan, &person, "demo staff", at())?;
    }
    println!(
        "    users: pharmacist ada, verifier vic, QA quinn, inspector ida (PINs hashed with Argon2id)"
    );

    let recipe = intake.load_installed("azathioprine-oral-suspension")?;
    let lab_name = Path::new(lab_path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lab = pharmcat::import(&lab_name, &std::fs::read(lab_path)?)?;
    let patient = Patient {
        id: PatientId::new("P-0001")?,
        weight: Some(Sourced {
            value: BodyWeight::new(Fixed::parse("70.0")?)?,
            source: Source::Entered { by: "ada".into(), verified_by: Some("vic".into()) },
        }),
        age_years: Some(Sourced {
            value: 34,
            source: Source::Entered { by: "ada".into(), verified_by: Some("vic".into()) },
        }),
        genes: lab.to_patient_genes("ada"),
    };
    let evaluation =
        personalise::evaluate(&recipe, &patient).map_err(|r| anyhow::anyhow!("refused: {r}"))?;
    let batch = "B-20261121-001";
    let mut ada = store.login("ada", "111111", at())?;
    let entry = |kind, object: &str| NewEntry {
        user_id: Some(ada.user_id),
        batch_id: Some(batch.to_owned()),
        ..NewEntry::new(kind, object)
    };
    store.append(at(), NewEntry {
        payload: serde_json::json!({"patient": "P-0001", "recipe": format!("{} revision {}", recipe.id, recipe.revision), "lab_file_sha256": lab.sha256}),
        ..entry(EntryKind::BatchCreated, "batch")
    })?;
    store.append(
        at(),
        NewEntry {
            new_value: Some(evaluation.explanation.outcome.clone()),
            payload: serde_json::json!({"explanation": evaluation.explanation.to_text()}),
            ..entry(EntryKind::Personalisation, "dose")
        },
    )?;
    println!("    personalised for P-0001 (TPMT intermediate metaboliser, 70 kg):");
    for line in evaluation.explanation.to_text().lines() {
        println!("      {line}");
    }
    for (object, value) in [("heater.setpoint", "25.0 °C"), ("pump.syringe.rate", "2.0 mL/min")] {
        store.append(
            at(),
            NewEntry { new_value: Some(value.into()), ..entry(EntryKind::Setpoint, object) },
        )?;
    }
    store.append(
        at(),
        NewEntry {
            new_value: Some(
                "balance unstable for 12 s during dispense; waited, then settled".into(),
            ),
            payload: serde_json::json!({"severity": "warning"}),
            ..entry(EntryKind::Alarm, "balance.unstable")
        },
    )?;
    store.sign(&mut ada, "111111", Meaning::Authored, batch, at())?;
    let mut vic = store.login("vic", "222222", at())?;
    store.sign(&mut vic, "222222", Meaning::Verified, batch, at())?;
    let mut quinn = store.login("quinn", "333333", at())?;
    store.sign(&mut quinn, "333333", Meaning::Released, batch, at())?;
    println!(
        "    signed by ada (performed), vic (verified), quinn (released); each signature re-asked for the PIN and sealed a TPM checkpoint"
    );

    let mut ida = store.login("ida", "444444", at())?;
    let entries = store.batch_entries(batch)?;
    let export = store.export(&mut ida, &format!("batch {batch}"), entries, at())?;
    let files = store.seal_bundle(&export)?;
    let stick = out.join("stick");
    std::fs::create_dir_all(&stick)?;
    let folder = format!("GALEN-EXPORT-{batch}");
    write_bundle(&mut MountedDir::new(&stick), &folder, &files)?;
    store.shutdown(at())?;
    println!("    exported for inspector ida: {}", Path::new(&stick).join(&folder).display());
    Ok(())
}
