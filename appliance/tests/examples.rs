//! The example recipes as a manufacturer ships them, personalised for a patient, planned for
//! the simulated unit and run to Complete over its ptys: clopidogrel (hand-weighed active,
//! peristaltic vehicle, a long mix) and folate (hand-weighed active, syringe water, heat to
//! 40 °C, hold, stir, cool). A test person plays the pharmacist: scans what is asked, weighs
//! each active onto the balance by hand (the rig's hand addition), confirms.
//!
//! Folate needs a syringe pump that delivers 50 mL/min; the rig's default (a 10 mL syringe on
//! an NE-1000 at 30 mL/min) cannot, so its unit carries a 140 mL syringe (38.4 mm inside):
//! 50 mL/min is then a plunger speed of 4.3 cm/min. See the changelog for what is and is not
//! verified about an NE-1000 doing that.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use galen_appliance::engine::batch::{Batch, Date, Event, Planned};
use galen_appliance::engine::plan::plan;
use galen_appliance::engine::safety::{Limits, Monitor};
use galen_appliance::engine::state::{Command, State};
use galen_appliance::supervisor::live::Live;
use galen_appliance::supervisor::runtime::{Run, SystemClock};
use galen_appliance::supervisor::{instruments, start_devices};
use galen_hil::plant::PlantConfig;
use galen_hil::plant::config::BalanceConfig;
use galen_hil::rig::{Injection, Rig, RigConfig};
use galen_recipes::authoring;
use galen_recipes::model::Recipe;
use galen_recipes::patient::{GeneResult, Patient, PatientId, Source, Sourced};
use galen_recipes::personalise;
use galen_recipes::pgx::{Gene, Phenotype};
use galen_recipes::quantity::{BodyWeight, Fixed};
use galen_record::EntryKind;
use tokio::sync::{mpsc, watch};

fn example(name: &str) -> Recipe {
    let file = format!("{name}.toml");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/examples").join(&file);
    let text = std::fs::read_to_string(path).unwrap();
    authoring::parse(&file, &text).unwrap_or_else(|e| panic!("{e}"))
}

fn patient(gene: &str, phenotype: Option<&str>, diplotype: Option<&str>) -> Patient {
    let entered = || Source::Entered { by: "ada".into(), verified_by: Some("vic".into()) };
    Patient {
        id: PatientId::new("P-0001").unwrap(),
        weight: Some(Sourced {
            value: BodyWeight::new(Fixed::parse("70").unwrap()).unwrap(),
            source: entered(),
        }),
        age_years: Some(Sourced { value: 34, source: entered() }),
        genes: [(
            Gene::new(gene).unwrap(),
            Sourced {
                value: GeneResult {
                    diplotype: diplotype.map(str::to_owned),
                    phenotype: phenotype.map(|p| Phenotype::parse(p).unwrap()),
                    activity_score: None,
                },
                source: entered(),
            },
        )]
        .into_iter()
        .collect(),
    }
}

/// Runs `recipe` for `patient` on a rig built from `plant` at `speed`, answering the unit as a
/// pharmacist would; returns the final state and the batch's record, one line an entry.
async fn run_to_the_end(
    recipe: &Recipe,
    patient: &Patient,
    plant: PlantConfig,
    speed: f64,
) -> (State, Vec<String>, Rig) {
    let appliance = support::Rig::new();
    let store = Arc::new(Mutex::new(appliance.commission()));
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(RigConfig { plant, speed, ..RigConfig::default() }, dir.path()).unwrap();
    let evaluation = personalise::evaluate(recipe, patient).unwrap_or_else(|r| panic!("{r:?}"));
    let planned = plan(recipe, evaluation.parameters.as_ref(), &instruments(rig.unit()))
        .unwrap_or_else(|e| panic!("{e}"));

    let (observed_tx, observed) = mpsc::channel(256);
    let devices = start_devices(rig.unit(), &observed_tx).expect("devices");
    let (operator, operator_rx) = mpsc::channel(16);
    operator.send(Event::Operator(Command::Start)).await.unwrap();
    let (live_tx, mut live) = watch::channel(Live::default());
    let batch = Batch::new(planned.clone(), Monitor::new(Limits::default().at_speed(speed)));
    let mut run = Run::new("B-EXAMPLE".into(), devices, store.clone(), SystemClock)
        .with_live(Arc::new(live_tx))
        .with_speed(speed);
    let running = tokio::spawn(async move { run.run(batch, operator_rx, observed).await });

    // The pharmacist: does what the unit awaits, once per phase (again after a refusal).
    let mut weighed: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(400);
    while !running.is_finished() {
        assert!(tokio::time::Instant::now() < deadline, "the batch did not finish in time");
        let _ = tokio::time::timeout(Duration::from_millis(500), live.changed()).await;
        let (phase, awaiting) = {
            let l = live.borrow_and_update();
            (l.phase.clone().unwrap_or_default(), l.awaiting.clone())
        };
        let Some(step) = planned.iter().find(|p| p.id() == phase) else { continue };
        let event = match (awaiting.as_str(), step) {
            ("scan", Planned::Scan { material, .. }) => Event::Scanned {
                material: material.clone(),
                lot: "LOT-1".into(),
                expiry: Date(2030, 1, 31),
                today: Date(2026, 11, 21),
            },
            ("confirm", Planned::ManualDispense { material, target_g, .. }) => {
                if !weighed.contains(&phase) {
                    weighed.push(phase.clone());
                    let grams = *target_g;
                    let hand = Injection::HandAddition { material: material.clone(), grams };
                    rig.inject(hand).unwrap();
                    // The pan settles before the pharmacist confirms.
                    tokio::time::sleep(Duration::from_secs_f64(3.0 / speed.min(3.0))).await;
                }
                Event::Confirmed
            }
            ("confirm", _) => Event::Confirmed,
            _ => continue,
        };
        operator.send(event).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let state = running.await.unwrap().unwrap();
    let log = store
        .lock()
        .unwrap()
        .batch_entries("B-EXAMPLE")
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e.body.kind.as_str(),
                e.body.object,
                e.body.new_value.clone().unwrap_or_default()
            )
        })
        .collect();
    drop(store);
    (state, log, rig)
}

fn no_alarms(log: &[String]) {
    let alarms: Vec<&String> =
        log.iter().filter(|l| l.starts_with(EntryKind::Alarm.as_str())).collect();
    assert!(alarms.is_empty(), "alarms: {alarms:#?}\n{log:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clopidogrel_for_a_cyp2c19_normal_metabolizer_completes_on_the_rig() {
    let recipe = example("clopidogrel-oral-suspension");
    let patient = patient("CYP2C19", Some("Normal Metabolizer"), None);
    let plant = PlantConfig { balance: BalanceConfig::analytical(), ..PlantConfig::default() };
    let (state, log, rig) = run_to_the_end(&recipe, &patient, plant, 10.0).await;
    assert_eq!(state, State::Complete, "{log:#?}");
    no_alarms(&log);
    let done = |phase: &str| {
        log.iter()
            .find(|l| {
                l.starts_with(&format!("batch_state phase.{phase} ")) && !l.ends_with(" started")
            })
            .unwrap_or_else(|| panic!("{phase} did not finish: {log:#?}"))
            .clone()
    };
    assert!(done("dispense-api").contains("of clopidogrel added by hand, within tolerance"));
    assert!(done("dispense-vehicle").contains("within tolerance"), "{}", done("dispense-vehicle"));
    // 75 mg × 14 days at 5 mg/mL: 210 mL of product, the vehicle 1.05 g/mL, minus the active.
    let s = rig.plant().snapshot();
    assert!((s.vessel_solids_g - 1.3708).abs() < 0.005, "{} g solids", s.vessel_solids_g);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folate_for_mthfr_677ct_completes_on_the_rig_heated_to_40_c_and_cooled() {
    let recipe = example("folate-mthfr");
    let patient = patient("MTHFR", None, Some("c.677C/c.677C>T"));
    let mut plant = PlantConfig { balance: BalanceConfig::analytical(), ..PlantConfig::default() };
    // A 140 mL syringe (38.4 mm inside) on the NE-1000, filled for the prime and the dose.
    plant.syringe.syringe_ml = 140.0;
    plant.syringe.fill_ml = 60.0;
    plant.syringe.diameter_mm = 38.4;
    plant.syringe.max_rate_ml_min = 50.0;
    let (state, log, rig) = run_to_the_end(&recipe, &patient, plant, 20.0).await;
    assert_eq!(state, State::Complete, "{log:#?}");
    no_alarms(&log);
    for (phase, says) in [
        ("dispense-active", "of folic-acid added by hand, within tolerance"),
        ("dispense-water", "within tolerance"),
        ("warm", "reached 40.0 °C"),
        ("hold", "held 300 s in band"),
        ("stir", "ran 300 s"),
        ("cool", "cooled below 25.0 °C"),
    ] {
        assert!(
            log.iter()
                .any(|l| l.starts_with(&format!("batch_state phase.{phase} ")) && l.contains(says)),
            "{phase}: {says}: {log:#?}"
        );
    }
    let s = rig.plant().snapshot();
    assert!(s.vessel_temp_c < 25.5, "{} °C at the end", s.vessel_temp_c);
}
