//! Pump driver ↔ emulator conversations (New Era, Watson-Marlow) over a real pty, snapshotted.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{connector, policy, report, show};
use galen_devices::Pump;
use galen_devices::RefusalReason;
use galen_devices::emulator::Fault;
use galen_devices::pty::Served;
use galen_devices::pump::new_era::codec::Mode;
use galen_devices::pump::new_era::{NewEraEmulator, NewEraModel, NewEraOptions, NewEraPump};
use galen_devices::pump::wm520::{Wm520Emulator, Wm520Model, Wm520Options, Wm520Pump};
use galen_devices::pump::{Direction, PumpAlarm, PumpPort};
use galen_devices::units::{FlowRate, Volume};

fn new_era(model: NewEraModel) -> (Arc<NewEraEmulator>, PumpPort, Served) {
    let port = PumpPort::new();
    let emulator = Arc::new(NewEraEmulator::new(port.clone(), model));
    let serving = emulator.clone();
    let served = Served::spawn(move |io| async move { serving.serve(io).await }).unwrap();
    (emulator, port, served)
}

fn options(mode: Mode) -> NewEraOptions {
    NewEraOptions {
        mode,
        address: Some(0),
        syringe_diameter_mm: 14.43,
        limits: galen_devices::pump::PumpLimits::NONE,
    }
}

#[tokio::test]
async fn new_era_power_on_alarm_rate_volume_and_run() {
    let (_, port, served) = new_era(NewEraModel::default());
    let path = served.path().to_owned();
    let mut pump = NewEraPump::new("syringe", connector(&path), policy(), options(Mode::Basic));
    let mut out = String::new();
    out += &show("version", &pump.version().await, &path);
    out += &format!("alarms: {:?}\n", pump.take_alarms());
    out += &show("rate", &pump.set_rate(FlowRate::new(1.5).unwrap()).await, &path);
    out += &show("direction", &pump.set_direction(Direction::Forward).await, &path);
    out += &show("dispense", &pump.dispense(Volume::new(0.5).unwrap()).await, &path);
    out += &show("status", &pump.status().await, &path);
    port.add_dispensed(0.25);
    out += &show("dispensed", &pump.dispensed().await, &path);
    out += &show("too fast", &pump.set_rate(FlowRate::new(9999.0).unwrap()).await, &path);
    out += &show("stop", &pump.stop().await, &path);
    out += &show("status", &pump.status().await, &path);
    insta::assert_snapshot!(report(&served, &out));
}

#[tokio::test]
async fn new_era_stall_alarm_mid_run_is_acknowledged_and_reported() {
    let model = NewEraModel { power_on_alarm: false, ..NewEraModel::default() };
    let (_, port, served) = new_era(model);
    let path = served.path().to_owned();
    let mut pump = NewEraPump::new("syringe", connector(&path), policy(), options(Mode::Basic));
    let mut out = String::new();
    out += &show("rate", &pump.set_rate(FlowRate::new(2.0).unwrap()).await, &path);
    out += &show("run", &pump.run().await, &path);
    port.add_dispensed(0.1);
    served.transcript().note("plant: motor stalls");
    port.raise_alarm(PumpAlarm::Stalled);
    out += &show("status", &pump.status().await, &path);
    out += &format!("alarms: {:?}\n", pump.take_alarms());
    out += &show("dispensed", &pump.dispensed().await, &path);
    insta::assert_snapshot!(report(&served, &out));
}

#[tokio::test]
async fn new_era_safe_mode_frames_and_a_corrupted_reply() {
    let model = NewEraModel { power_on_alarm: false, ..NewEraModel::default() };
    let (emulator, _, served) = new_era(model);
    let path = served.path().to_owned();
    let mut pump = NewEraPump::new("syringe", connector(&path), policy(), options(Mode::Safe));
    let mut out = String::new();
    out += &show("status", &pump.status().await, &path);
    emulator.faults().set(Fault::BadChecksum);
    served.transcript().note("fault: bad CRC");
    out += &show("bad crc", &pump.status().await, &path);
    emulator.faults().set(Fault::None);
    out += &show("unknown command", &pump.command("XYZ").await, &path);
    insta::assert_snapshot!(report(&served, &out));
}

#[tokio::test]
async fn new_era_silence_and_garbage() {
    let model = NewEraModel { power_on_alarm: false, ..NewEraModel::default() };
    let (emulator, _, served) = new_era(model);
    let path = served.path().to_owned();
    let mut pump = NewEraPump::new("syringe", connector(&path), policy(), options(Mode::Basic));
    let mut out = String::new();
    out += &show("status", &pump.status().await, &path);
    emulator.faults().set(Fault::Silent);
    served.transcript().note("fault: silent");
    out += &show("silent", &pump.status().await, &path);
    emulator.faults().set(Fault::Garbage(b"\x7f\x7f\x02zz".to_vec()));
    served.transcript().note("fault: garbage");
    out += &show("garbage", &pump.status().await, &path);
    emulator.faults().set(Fault::NoiseBefore(b"\x00\x13".to_vec()));
    served.transcript().note("fault: noise before replies");
    out += &show("noise", &pump.status().await, &path);
    insta::assert_snapshot!(report(&served, &out));
}

fn wm520(model: Wm520Model) -> (Arc<Wm520Emulator>, PumpPort, Served) {
    let port = PumpPort::new();
    let emulator = Arc::new(Wm520Emulator::new(port.clone(), model));
    let serving = emulator.clone();
    let served = Served::spawn(move |io| async move { serving.serve(io).await }).unwrap();
    (emulator, port, served)
}

#[tokio::test]
async fn watson_marlow_echo_is_swallowed_and_speed_is_read_back() {
    let model = Wm520Model { ml_per_rev: 2.0, ..Wm520Model::default() };
    let (_, port, served) = wm520(model);
    let path = served.path().to_owned();
    let options = Wm520Options { ml_per_rev: 2.0, ..Wm520Options::default() };
    let mut pump = Wm520Pump::new("peristaltic", connector(&path), policy(), options);
    let mut out = String::new();
    out += &show("rate", &pump.set_rate(FlowRate::new(100.0).unwrap()).await, &path);
    out += &show("direction", &pump.set_direction(Direction::Reverse).await, &path);
    out += &show("clear", &pump.clear_dispensed().await, &path);
    out += &show("dose", &pump.dispense(Volume::new(4.0).unwrap()).await, &path);
    out += &show("status", &pump.status().await, &path);
    port.add_dispensed(1.0);
    out += &show("dispensed", &pump.dispensed().await, &path);
    // 600 mL/min at 2 mL/rev is 300 rpm; the 520 stops at 220.
    out += &show("too fast", &pump.set_rate(FlowRate::new(600.0).unwrap()).await, &path);
    out += &show("stop", &pump.stop().await, &path);
    insta::assert_snapshot!(report(&served, &out));
}

#[tokio::test]
async fn a_rate_the_pump_cannot_represent_within_one_percent_is_refused_before_sending() {
    // 15.84 mL/rev and 0.1 rpm steps: 1 mL/min would run at 0.1 rpm = 1.584 mL/min.
    let model = Wm520Model { ml_per_rev: 15.84, ..Wm520Model::default() };
    let (_, _, served) = wm520(model);
    let path = served.path().to_owned();
    let options = Wm520Options { ml_per_rev: 15.84, ..Wm520Options::default() };
    let mut pump = Wm520Pump::new("peristaltic", connector(&path), policy(), options);
    let refused = pump.set_rate(FlowRate::new(1.0).unwrap()).await.unwrap().unwrap_err();
    assert!(
        matches!(&refused.reason, RefusalReason::NotRepresentable { nearest, .. } if nearest == "1.584 mL/min"),
        "{refused}"
    );
    assert!(
        !served.transcript().render().contains("SP"),
        "nothing may be sent: {}",
        served.transcript().render()
    );
    // 158.4 mL/min is exactly 10 rpm.
    assert!(pump.set_rate(FlowRate::new(158.4).unwrap()).await.unwrap().is_ok());
}

#[tokio::test]
async fn watson_marlow_without_echo_and_gone_silent() {
    let (emulator, _, served) = wm520(Wm520Model { echo: false, ..Wm520Model::default() });
    let path = served.path().to_owned();
    let options = Wm520Options { echo: false, ..Wm520Options::default() };
    let mut pump = Wm520Pump::new("peristaltic", connector(&path), policy(), options);
    let mut out = String::new();
    out += &show("run", &pump.run().await, &path);
    out += &show("status", &pump.status().await, &path);
    emulator.faults().set(Fault::Silent);
    served.transcript().note("fault: silent");
    out += &show("silent", &pump.status().await, &path);
    tokio::time::sleep(Duration::from_millis(20)).await;
    insta::assert_snapshot!(report(&served, &out));
}

#[tokio::test]
async fn new_era_alarm_is_acknowledged_with_a_status_query_and_never_restarts_the_pump() {
    let model = NewEraModel { power_on_alarm: false, ..NewEraModel::default() };
    let (_, port, served) = new_era(model);
    let path = served.path().to_owned();
    let mut pump = NewEraPump::new("syringe", connector(&path), policy(), options(Mode::Basic));
    let mut out = String::new();
    out += &show("rate", &pump.set_rate(FlowRate::new(2.0).unwrap()).await, &path);
    served.transcript().note("plant: motor stalls (occlusion)");
    port.raise_alarm(PumpAlarm::Stalled);
    let run = pump.run().await;
    assert!(
        matches!(&run, Ok(Err(r)) if r.reason == RefusalReason::Alarm(PumpAlarm::Stalled)),
        "{run:?}"
    );
    assert!(!port.commanded().running, "RUN was re-sent after the stall: the pump restarted");
    out += &show("run", &run, &path);
    out += &format!("running after run: {}\n", port.commanded().running);
    served.transcript().note("emulator: the watchdog ran out");
    port.raise_alarm(PumpAlarm::CommsTimeout);
    let dispense = pump.dispense(Volume::new(1.0).unwrap()).await;
    assert!(!port.commanded().running, "VOL/RUN was re-sent after the watchdog stop");
    out += &show("dispense", &dispense, &path);
    served.transcript().note("emulator: power interrupted");
    port.raise_alarm(PumpAlarm::Reset);
    out += &show("run", &pump.run().await, &path);
    out += &format!("running after run: {}\n", port.commanded().running);
    out += &format!("alarms: {:?}\n", pump.take_alarms());
    // After the reset the setup is sent again; then the pump may run when asked afresh.
    out += &show("status", &pump.status().await, &path);
    insta::assert_snapshot!(report(&served, &out));
}

#[tokio::test]
async fn configured_pump_limits_are_refused_before_anything_is_sent() {
    let model = NewEraModel { power_on_alarm: false, ..NewEraModel::default() };
    let (_, port, served) = new_era(model);
    let path = served.path().to_owned();
    let limits = galen_devices::pump::PumpLimits { max_rate_ml_min: 5.0, max_volume_ml: 2.0 };
    let options = NewEraOptions { limits, ..options(Mode::Basic) };
    let mut pump = NewEraPump::new("syringe", connector(&path), policy(), options);
    let mut out = String::new();
    out += &show("too fast", &pump.set_rate(FlowRate::new(6.0).unwrap()).await, &path);
    out += &show("too much", &pump.dispense(Volume::new(2.5).unwrap()).await, &path);
    out += &show("within", &pump.set_rate(FlowRate::new(5.0).unwrap()).await, &path);
    assert!(!port.commanded().running);
    assert!((port.commanded().rate_ml_min - 5.0).abs() < 1e-9);
    insta::assert_snapshot!(report(&served, &out));
}
