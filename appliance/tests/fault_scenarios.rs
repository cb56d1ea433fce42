//! The supervisor-level fault scenarios in `hil/scenarios/supervisor/`: each is a `hil`
//! scenario file (rig, plant, scheduled faults, no steps) on whose rig the real supervisor
//! runtime runs a 30 g peristaltic dispense batch while the fault fires. How the supervisor
//! reacted is snapshotted per file: the alarm (numbers masked: they depend on timing), whether
//! the safe outputs and the alarm came before Holding, the state it rests in, and what the
//! plant says of its pumps and heater afterwards.

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use galen_appliance::engine::batch::{Batch, Event, Planned, Pump};
use galen_appliance::engine::dispense::Spec;
use galen_appliance::engine::safety::{Limits, Monitor};
use galen_appliance::engine::state::{Command, State};
use galen_appliance::supervisor::runtime::{Run, SystemClock};
use galen_appliance::supervisor::start_devices;
use galen_hil::rig::Rig;
use galen_hil::scenario::Scenario;
use galen_record::EntryKind;
use tokio::sync::mpsc;

fn files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hil/scenarios/supervisor");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn plan() -> Vec<Planned> {
    vec![
        Planned::Tare { id: "tare-vessel".into() },
        Planned::Dispense {
            id: "dispense-water".into(),
            material: "water".into(),
            pump: Pump::Peristaltic,
            spec: Spec {
                target_g: 30.0,
                tolerance_g: 0.2,
                density_g_ml: 0.997,
                max_rate_ml_min: 60.0,
            },
        },
    ]
}

/// Numbers in an alarm depend on timing; the words say what happened.
fn masked(text: &str) -> String {
    let mut out = String::new();
    let mut in_number = false;
    for c in text.chars() {
        let numeric = c.is_ascii_digit() || (in_number && c == '.');
        if numeric && !in_number {
            out.push('#');
        } else if !numeric {
            out.push(c);
        }
        in_number = numeric;
    }
    out
}

async fn react(path: PathBuf) -> (String, String) {
    let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
    let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(scenario.steps.is_empty(), "{stem}: the supervisor drives the unit, not steps");
    let appliance = support::Rig::new();
    let store = Arc::new(Mutex::new(appliance.commission()));
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(scenario.rig.clone(), dir.path()).unwrap();
    for f in &scenario.faults {
        rig.schedule(f.trigger.clone(), f.injection.clone()).unwrap();
    }
    let speed = scenario.rig.speed;
    let (observed_tx, observed) = mpsc::channel(256);
    let devices = start_devices(rig.unit(), &observed_tx).expect("devices");
    let (operator_tx, operator) = mpsc::channel(8);
    operator_tx.send(Event::Operator(Command::Start)).await.unwrap();
    let batch = Batch::new(plan(), Monitor::new(Limits::default().at_speed(speed)));
    let mut run =
        Run::new("B-SCENARIO".into(), devices, store.clone(), SystemClock).with_speed(speed);
    let running = tokio::spawn(async move { run.run(batch, operator, observed).await });

    let log = || -> Vec<(EntryKind, String, String)> {
        store
            .lock()
            .unwrap()
            .batch_entries("B-SCENARIO")
            .unwrap()
            .into_iter()
            .map(|e| (e.body.kind, e.body.object, e.body.new_value.unwrap_or_default()))
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !log().iter().any(|(_, o, v)| o == "batch.state" && v == "Held") {
        assert!(
            tokio::time::Instant::now() < deadline && !running.is_finished(),
            "{stem}: never held: {:#?}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the rotor coast and the tube drain, then see whether anything still moves.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = rig.plant().snapshot();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = rig.plant().snapshot();
    let entries = log();
    let alarm = entries.iter().position(|(k, _, _)| *k == EntryKind::Alarm);
    let holding = entries.iter().position(|(_, o, v)| o == "batch.state" && v == "Holding");
    let mut summary = format!("{}\n", scenario.name);
    summary += &format!("alarm: {}\n", alarm.map_or("none".into(), |i| masked(&entries[i].2)));
    summary += &format!("alarm recorded before Holding: {}\n", alarm < holding && alarm.is_some());
    summary += &format!(
        "liquid still arriving after the hold: {}\n",
        after.vessel_liquid_g - before.vessel_liquid_g > 0.01
    );
    summary += &format!("heater giving power: {}\n", after.heater_w > 0.0);
    operator_tx.send(Event::Operator(Command::Abort)).await.unwrap();
    let state =
        tokio::time::timeout(Duration::from_secs(20), running).await.unwrap().unwrap().unwrap();
    summary += &format!("after an abort: {state:?}\n");
    assert_eq!(state, State::Aborted, "{stem}");
    (stem, summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_supervisor_fault_scenario_holds_the_batch_safely() {
    let files = files();
    assert!(!files.is_empty());
    // Side by side: each rig keeps real time on its own.
    let results =
        futures_util::future::join_all(files.into_iter().map(|f| tokio::spawn(react(f)))).await;
    for r in results {
        let (stem, summary) = r.unwrap();
        insta::assert_snapshot!(stem, summary);
    }
}
