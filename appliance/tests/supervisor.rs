//! The supervisor runtime on the simulated unit: real ptys, the real drivers, the plant's
//! physics, and a record store on a private software TPM. Plant time runs at wall speed, so
//! these tests take tens of seconds.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use galen_appliance::engine::batch::{Batch, Event, Planned, Pump};
use galen_appliance::engine::dispense::Spec;
use galen_appliance::engine::safety::{Limits, Monitor};
use galen_appliance::engine::state::{Command, State};
use galen_appliance::records::RecordStore;
use galen_appliance::supervisor::recovery::recover;
use galen_appliance::supervisor::runtime::{Run, RunError, SystemClock};
use galen_appliance::supervisor::start_devices;
use galen_hil::plant::{PlantFault, PumpId};
use galen_hil::rig::{Injection, Rig, RigConfig, Trigger};
use galen_record::{Entry, EntryKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

fn plan(target_g: f64) -> Vec<Planned> {
    vec![
        Planned::Tare { id: "tare-vessel".into() },
        Planned::Dispense {
            id: "dispense-water".into(),
            material: "water".into(),
            pump: Pump::Peristaltic,
            spec: Spec { target_g, tolerance_g: 0.2, density_g_ml: 0.997, max_rate_ml_min: 60.0 },
        },
        Planned::Hold {
            id: "rest".into(),
            min_c: 15.0,
            max_c: 35.0,
            duration: Duration::from_secs(2),
        },
    ]
}

// Fields drop in order: the store (and its TPM context) before the swtpm it talks to.
struct Unit {
    store: Arc<Mutex<RecordStore>>,
    rig: Rig,
    _appliance: support::Rig,
    _dir: tempfile::TempDir,
}

fn unit() -> Unit {
    let appliance = support::Rig::new();
    let store = Arc::new(Mutex::new(appliance.commission()));
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(RigConfig::default(), dir.path()).expect("the rig starts");
    Unit { store, rig, _appliance: appliance, _dir: dir }
}

/// Starts batch `id` dispensing `grams` of water on the unit's rig under the real runtime:
/// the operator's channel, and the run (its final state when it ends).
async fn start_batch(
    u: &Unit,
    id: &str,
    grams: f64,
) -> (mpsc::Sender<Event>, JoinHandle<Result<State, RunError>>) {
    let (observed_tx, observed) = mpsc::channel(256);
    let devices = start_devices(u.rig.unit(), &observed_tx).expect("devices");
    let (operator_tx, operator) = mpsc::channel(8);
    operator_tx.send(Event::Operator(Command::Start)).await.unwrap();
    let batch = Batch::new(plan(grams), Monitor::new(Limits::default()));
    let mut run = Run::new(id.into(), devices, u.store.clone(), SystemClock);
    (operator_tx, tokio::spawn(async move { run.run(batch, operator, observed).await }))
}

fn entries(store: &Arc<Mutex<RecordStore>>, batch: &str) -> Vec<Entry> {
    store.lock().unwrap().batch_entries(batch).unwrap()
}

fn describe(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e.body.kind.as_str(),
                e.body.object,
                e.body.new_value.clone().unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_runs_on_the_simulated_unit_and_every_step_is_recorded() {
    let u = unit();
    let (observed_tx, observed) = mpsc::channel(256);
    let devices = start_devices(u.rig.unit(), &observed_tx).expect("devices");
    let (operator_tx, operator) = mpsc::channel(8);
    operator_tx.send(Event::Operator(Command::Start)).await.unwrap();
    let batch = Batch::new(plan(15.0), Monitor::new(Limits::default()));
    let mut run = Run::new("B-HIL-1".into(), devices, u.store.clone(), SystemClock);
    let state = tokio::time::timeout(Duration::from_secs(120), run.run(batch, operator, observed))
        .await
        .expect("the batch finishes within two minutes")
        .expect("the run does not fail");
    assert_eq!(state, State::Complete);
    let delivered = u.rig.plant().snapshot().vessel_liquid_g;
    assert!((delivered - 15.0).abs() <= 0.3, "the vessel holds {delivered} g");
    let log = describe(&entries(&u.store, "B-HIL-1"));
    assert_eq!(
        log.first().map(String::as_str),
        Some("batch_state batch.state Running"),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("batch_state phase.dispense-water")
                && l.contains("within tolerance")),
        "{log:#?}"
    );
    assert!(log.iter().any(|l| l.starts_with("setpoint pump.peristaltic.rate")), "{log:#?}");
    assert_eq!(
        log.last().map(String::as_str),
        Some("batch_state batch.state Complete"),
        "{log:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pump_that_stalls_mid_dispense_is_stopped_the_batch_held_and_the_alarm_recorded() {
    let u = unit();
    u.rig
        .schedule(
            Trigger::When("vessel_mass_g > 3".parse().unwrap()),
            Injection::Plant(PlantFault::PumpStall { pump: PumpId::Peristaltic, alarm: false }),
        )
        .unwrap();
    let (operator_tx, running) = start_batch(&u, "B-HIL-2", 30.0).await;
    let store = u.store.clone();

    // Wait for the batch to be Held.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let log = describe(&entries(&store, "B-HIL-2"));
        if log.iter().any(|l| l == "batch_state batch.state Held") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never held: {log:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all = entries(&store, "B-HIL-2");
    let alarm = all.iter().find(|e| e.body.kind == EntryKind::Alarm).expect("an alarm entry");
    assert!(alarm.body.new_value.as_deref().unwrap_or("").contains("peristaltic"), "{alarm:?}");
    // The plant confirms it: once the rotor has coasted to rest (0.3 s time constant), free
    // the pump; if it were still driven, liquid would flow again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    u.rig.inject(Injection::Plant(PlantFault::PumpFree(PumpId::Peristaltic))).unwrap();
    let before = u.rig.plant().snapshot().vessel_liquid_g;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = u.rig.plant().snapshot().vessel_liquid_g;
    assert!((after - before).abs() < 0.01, "the pump was still running: {before} g -> {after} g");

    operator_tx.send(Event::Operator(Command::Abort)).await.unwrap();
    let state =
        tokio::time::timeout(Duration::from_secs(20), running).await.unwrap().unwrap().unwrap();
    assert_eq!(state, State::Aborted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_mid_dispense_the_unit_is_made_safe_and_the_batch_held_with_a_deviation() {
    let u = unit();
    let (observed_tx, observed) = mpsc::channel(256);
    let devices = start_devices(u.rig.unit(), &observed_tx).expect("devices");
    let (operator_tx, operator) = mpsc::channel(8);
    operator_tx.send(Event::Operator(Command::Start)).await.unwrap();
    let batch = Batch::new(plan(40.0), Monitor::new(Limits::default()));
    let mut run = Run::new("B-HIL-3".into(), devices.clone(), u.store.clone(), SystemClock);
    let running = tokio::spawn(async move { run.run(batch, operator, observed).await });
    // Crash while the pump is pouring: the task dies mid-flight, nothing is cleaned up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while u.rig.plant().snapshot().vessel_liquid_g < 5.0 {
        assert!(tokio::time::Instant::now() < deadline, "the dispense never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.abort();
    let _ = running.await;
    let poured = u.rig.plant().snapshot().vessel_liquid_g;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        u.rig.plant().snapshot().vessel_liquid_g > poured,
        "the pump must still be running after the crash"
    );

    // The process is gone: its record store closes without a shutdown checkpoint.
    drop(u.store);
    let reopened = Arc::new(Mutex::new(u._appliance.open()));
    assert_eq!(reopened.lock().unwrap().integrity(), &galen_appliance::records::Integrity::Sound);
    let policy =
        |_: &str, phase: &str| (phase == "dispense-water").then(|| "qa-decision".to_owned());
    let recovered = recover(&devices, &reopened, &SystemClock, policy).await.unwrap();
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert_eq!(recovered[0].phase.as_deref(), Some("dispense-water"));
    assert_eq!(recovered[0].policy.as_deref(), Some("qa-decision"));

    // The pump was stopped before anything else. (Give the liquid already in the tube, 0.5 s
    // time constant, time to drain first.)
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stopped = u.rig.plant().snapshot().vessel_liquid_g;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = u.rig.plant().snapshot().vessel_liquid_g;
    assert!(
        (later - stopped).abs() < 0.01,
        "still pouring after recovery: {stopped} g -> {later} g"
    );
    let log = describe(&entries(&reopened, "B-HIL-3"));
    let n = log.len();
    assert!(log[n - 2].starts_with("deviation batch.restart the supervisor restarted while this batch was Running in phase dispense-water"), "{log:#?}");
    assert_eq!(log[n - 1], "batch_state batch.state Held");
    // Recovering again holds nothing twice.
    assert!(recover(&devices, &reopened, &SystemClock, policy).await.unwrap().is_empty());
}

/// Runs a dispense batch, injects `fault` once 3 g are in the vessel, and returns the alarm
/// text the batch was held with. Every fault must end in Held with outputs safe.
async fn held_by(fault: Injection) -> String {
    let u = unit();
    u.rig.schedule(Trigger::When("vessel_mass_g > 3".parse().unwrap()), fault).unwrap();
    let (operator_tx, running) = start_batch(&u, "B-FAULT", 30.0).await;
    let store = u.store.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let alarm = loop {
        let all = entries(&store, "B-FAULT");
        let held = all
            .iter()
            .any(|e| e.body.object == "batch.state" && e.body.new_value.as_deref() == Some("Held"));
        if held {
            let alarm =
                all.iter().find(|e| e.body.kind == EntryKind::Alarm).expect("an alarm before Held");
            break alarm.body.new_value.clone().unwrap_or_default();
        }
        assert!(tokio::time::Instant::now() < deadline, "never held: {:#?}", describe(&all));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    operator_tx.send(Event::Operator(Command::Abort)).await.unwrap();
    let state =
        tokio::time::timeout(Duration::from_secs(20), running).await.unwrap().unwrap().unwrap();
    assert_eq!(state, State::Aborted);
    alarm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balance_unplugged_mid_dispense_holds_the_batch() {
    let alarm = held_by(Injection::Unplug("balance".into())).await;
    assert_eq!(alarm, "balance: link lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_temperature_sensor_holds_the_batch() {
    let alarm = held_by(Injection::Plant(PlantFault::SensorBreak(true))).await;
    assert_eq!(alarm, "heater temperature sensor broken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heater_stuck_on_while_dispensing_holds_the_batch() {
    let alarm = held_by(Injection::Plant(PlantFault::HeaterStuckOn(true))).await;
    assert!(alarm.starts_with("heater heating while off"), "{alarm}");
}

/// Waits until the batch's record says `state`.
async fn until_state(store: &Arc<Mutex<RecordStore>>, batch: &str, state: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let all = entries(store, batch);
        if all
            .iter()
            .any(|e| e.body.object == "batch.state" && e.body.new_value.as_deref() == Some(state))
        {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "never {state}: {:#?}", describe(&all));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the plant's vessel holds `grams` of liquid.
async fn until_in_vessel(rig: &Rig, grams: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while rig.plant().snapshot().vessel_liquid_g < grams {
        assert!(tokio::time::Instant::now() < deadline, "the dispense never got to {grams} g");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_mid_dispense_then_a_resume_delivers_the_target_once_not_twice() {
    let u = unit();
    let (operator_tx, running) = start_batch(&u, "B-RESUME", 30.0).await;
    let store = u.store.clone();

    until_in_vessel(&u.rig, 12.0).await;
    operator_tx.send(Event::Operator(Command::Hold)).await.unwrap();
    until_state(&store, "B-RESUME", "Held").await;
    // The liquid in the tube arrives and the pan settles before anyone resumes (a resume
    // before that is refused: "wait until it is stable").
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !u.rig.plant().lock().balance_sample().settled {
        assert!(tokio::time::Instant::now() < deadline, "the pan never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let in_at_resume = u.rig.plant().snapshot().vessel_liquid_g;
    operator_tx.send(Event::Operator(Command::Restart)).await.unwrap();
    let Ok(state) = tokio::time::timeout(Duration::from_secs(120), running).await else {
        panic!("the batch never finished: {:#?}", describe(&entries(&store, "B-RESUME")));
    };
    assert_eq!(state.unwrap().unwrap(), State::Complete);

    // The plant's ledger, not the balance: what truly went into the vessel.
    let delivered = u.rig.plant().snapshot().vessel_liquid_g;
    assert!(
        (delivered - 30.0).abs() <= 0.3,
        "{delivered:.2} g in the vessel for a 30 g dose ({in_at_resume:.2} g at the resume)"
    );
    let log = describe(&entries(&store, "B-RESUME"));
    let started = log.iter().filter(|l| *l == "batch_state phase.dispense-water started").count();
    assert_eq!(started, 1, "the phase went on, it did not start again: {log:#?}");
    let resumed = log
        .iter()
        .find(|l| {
            l.starts_with("batch_state phase.dispense-water resumed against the phase's zero")
        })
        .unwrap_or_else(|| panic!("the resume is recorded: {log:#?}"));
    let already: f64 = resumed
        .split(": ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|g| g.parse().ok())
        .expect("the mass already in, in the record");
    assert!((already - in_at_resume).abs() < 0.3, "{resumed} (plant: {in_at_resume:.2} g)");
    assert!(
        log.iter()
            .any(|l| l.starts_with("batch_state phase.dispense-water")
                && l.contains("within tolerance")),
        "{log:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balance_unplugged_while_held_mid_dispense_leaves_only_stop_and_abort() {
    let u = unit();
    let (operator_tx, running) = start_batch(&u, "B-UNSEEN", 30.0).await;
    let store = u.store.clone();

    until_in_vessel(&u.rig, 10.0).await;
    operator_tx.send(Event::Operator(Command::Hold)).await.unwrap();
    until_state(&store, "B-UNSEEN", "Held").await;
    u.rig.inject(Injection::Unplug("balance".into())).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !describe(&entries(&store, "B-UNSEEN")).iter().any(|l| l.contains("can no longer resume"))
    {
        assert!(tokio::time::Instant::now() < deadline, "the lost view was never recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    u.rig.inject(Injection::Replug("balance".into())).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = u.rig.plant().snapshot().vessel_liquid_g;
    operator_tx.send(Event::Operator(Command::Restart)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = u.rig.plant().snapshot().vessel_liquid_g;
    assert!((after - before).abs() < 0.01, "the pump ran again: {before:.2} g -> {after:.2} g");
    let log = describe(&entries(&store, "B-UNSEEN"));
    assert!(
        log.iter().any(|l| l.starts_with("operator_action batch.operator refused: phase dispense-water cannot continue against its zero: the balance link was lost")),
        "{log:#?}"
    );
    assert_eq!(log.iter().filter(|l| l.ends_with("batch.state Restarting")).count(), 0);
    operator_tx.send(Event::Operator(Command::Abort)).await.unwrap();
    let state =
        tokio::time::timeout(Duration::from_secs(20), running).await.unwrap().unwrap().unwrap();
    assert_eq!(state, State::Aborted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emergency_stop_pressed_mid_dispense_holds_release_resumes_nothing_and_a_resume_finishes_the_dose()
 {
    let u = unit();
    let (operator_tx, running) = start_batch(&u, "B-ESTOP", 30.0).await;
    let store = u.store.clone();

    until_in_vessel(&u.rig, 10.0).await;
    u.rig.inject(Injection::EmergencyStop(true)).unwrap();
    until_state(&store, "B-ESTOP", "Held").await;
    let log = describe(&entries(&store, "B-ESTOP"));
    let alarm = log.iter().position(|l| l == "alarm batch.alarm emergency stop pressed");
    let holding = log.iter().position(|l| l == "batch_state batch.state Holding");
    assert!(alarm.is_some() && alarm < holding, "{log:#?}");
    assert_eq!(log.iter().filter(|l| l.contains("emergency stop pressed")).count(), 1);

    // The liquid in the tube drains (τ 0.5 s); then the button is pulled back out: recorded,
    // nothing moves, the batch stays held.
    tokio::time::sleep(Duration::from_secs(3)).await;
    u.rig.inject(Injection::EmergencyStop(false)).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !describe(&entries(&store, "B-ESTOP"))
        .iter()
        .any(|l| l.contains("emergency stop released"))
    {
        assert!(tokio::time::Instant::now() < deadline, "the release was never recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = u.rig.plant().snapshot().vessel_liquid_g;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = u.rig.plant().snapshot().vessel_liquid_g;
    assert!((after - before).abs() < 0.01, "something restarted: {before:.2} g -> {after:.2} g");
    let log = describe(&entries(&store, "B-ESTOP"));
    assert_eq!(
        log.last().map(String::as_str),
        Some(
            "deviation phase.dispense-water emergency stop released; the batch stays as it is until someone resumes it"
        ),
        "{log:#?}"
    );

    // A person resumes: the dispense goes on against its zero and the dose is not doubled.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !u.rig.plant().lock().balance_sample().settled {
        assert!(tokio::time::Instant::now() < deadline, "the pan never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    operator_tx.send(Event::Operator(Command::Restart)).await.unwrap();
    let Ok(state) = tokio::time::timeout(Duration::from_secs(120), running).await else {
        panic!("the batch never finished: {:#?}", describe(&entries(&store, "B-ESTOP")));
    };
    assert_eq!(state.unwrap().unwrap(), State::Complete);
    let delivered = u.rig.plant().snapshot().vessel_liquid_g;
    assert!((delivered - 30.0).abs() <= 0.3, "{delivered:.2} g for a 30 g dose");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_the_emergency_stop_module_is_lost_monitoring_and_holds_the_batch() {
    let alarm = held_by(Injection::Wire(
        "estop".into(),
        galen_devices::emulator::Fault::Garbage(b"\x01\x02\x01".to_vec()),
    ))
    .await;
    assert_eq!(alarm, "estop: link lost");
}
