//! Demo: one personalised batch recorded on a real (software) TPM and exported for an
//! inspector. `cargo xtask demo` runs it; it stands in for the operator until `applianced` and
//! `galenctl` exist, and uses the same record store they will.
//!
//! Usage: demo_batch_record <tcti> <output folder> <recipes/examples folder>

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use galen_appliance::export::{MountedDir, write_bundle};
use galen_appliance::records::users::Role;
use galen_appliance::records::{At, FirstAdmin, NewEntry, RecordStore};
use galen_appliance::tpm::{Tpm, TpmConfig};
use galen_recipes::patient::{Patient, PatientId, Source, Sourced};
use galen_recipes::quantity::{BodyWeight, Fixed};
use galen_recipes::{authoring, personalise, pharmcat};
use galen_record::signature::Meaning;
use galen_record::{EntryKind, UtcMillis};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [tcti, out, examples] = args.as_slice() else {
        bail!("usage: demo_batch_record <tcti> <output folder> <recipes/examples folder>");
    };
    let out = PathBuf::from(out);
    let examples = PathBuf::from(examples);
    std::fs::create_dir_all(&out)?;
    // A fixed demo clock: the store never reads one itself.
    let mut ms = 1_795_249_073_000i64;
    let mut at = || {
        ms += 1_000;
        At::utc(UtcMillis(ms))
    };

    let tpm = Tpm::open(&TpmConfig {
        tcti: tcti.clone(),
        key_dir: out.join("appliance/keys"),
        nv_index: 0x0150_0100,
        pcrs: vec![7],
    })?;
    let db = out.join("appliance/records.sqlite");
    let admin = FirstAdmin { username: "admin", full_name: "Alan Admin", pin: "271828" };
    let mut store = RecordStore::create(&db, "galen-demo-0001", tpm, &admin, at())?;
    println!("    commissioned appliance galen-demo-0001: records in {}", db.display());

    let mut alan = store.login("admin", "271828", at())?;
    for (user, name, role, pin) in [
        ("ada", "Ada Lovelace", Role::Pharmacist, "111111"),
        ("vic", "Victor Second", Role::Verifier, "222222"),
        ("quinn", "Quinn Release", Role::Qa, "333333"),
        ("ida", "Ida Inspector", Role::Inspector, "444444"),
    ] {
        store.add_user(&mut alan, user, name, role, pin, "demo staff", at())?;
    }
    println!(
        "    users: pharmacist ada, verifier vic, QA quinn, inspector ida (PINs hashed with Argon2id)"
    );

    let file = examples.join("azathioprine-oral-suspension.toml");
    let text = std::fs::read_to_string(&file)?;
    let recipe = authoring::parse(&file.display().to_string(), &text)
        .map_err(|d| anyhow::anyhow!("{d}"))
        .context("the example recipe does not lint")?;
    let lab_path = examples.join("lab/tpmt-intermediate.tsv");
    let lab = pharmcat::import("tpmt-intermediate.tsv", &std::fs::read(&lab_path)?)?;
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
