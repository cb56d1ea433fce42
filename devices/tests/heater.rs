//! Eurotherm driver ↔ emulator (tokio-modbus client ↔ `rtu-server`) over a real pty.

mod common;

use std::time::Duration;

use common::{connector, policy, report, show};
use galen_devices::Heater;
use galen_devices::emulator::Fault;
use galen_devices::heater::HeaterPlant;
use galen_devices::heater::eurotherm::{
    EurothermEmulator, EurothermHeater, EurothermModel, EurothermOptions, registers,
};
use galen_devices::pty::Served;
use galen_devices::units::Celsius;

fn start() -> (EurothermEmulator, Served) {
    let emulator = EurothermEmulator::new(HeaterPlant::new(21.5), EurothermModel::default());
    let serving = emulator.clone();
    let served = Served::spawn(move |io| async move { serving.serve(io).await }).unwrap();
    (emulator, served)
}

#[tokio::test]
async fn setpoint_goes_to_the_comms_register_never_to_eeprom() {
    let (emulator, served) = start();
    let path = served.path().to_owned();
    let mut heater =
        EurothermHeater::new("heater", connector(&path), policy(), EurothermOptions::default());
    let mut out = String::new();
    out += &show("pv", &heater.process_value().await, &path);
    out += &show("enable", &heater.enable().await, &path);
    for target in [37.0, 37.5, 38.0] {
        out += &show("setpoint", &heater.set_setpoint(Celsius::new(target).unwrap()).await, &path);
    }
    out += &show("working setpoint", &heater.working_setpoint().await, &path);
    out += &show("output", &heater.output().await, &path);
    emulator.plant().set_sensor_break(true);
    out += &show("status", &heater.status().await, &path);
    out += &show("disable", &heater.disable().await, &path);
    out += &show("output", &heater.output().await, &path);
    assert_eq!(emulator.eeprom_writes(), 0);
    insta::assert_snapshot!(report(&served, &out));
}

#[tokio::test]
async fn an_out_of_range_setpoint_is_a_modbus_exception() {
    let (_, served) = start();
    let path = served.path().to_owned();
    let mut heater =
        EurothermHeater::new("heater", connector(&path), policy(), EurothermOptions::default());
    let mut out = String::new();
    out += &show("setpoint 500", &heater.set_setpoint(Celsius::new(500.0).unwrap()).await, &path);
    out += &show("unmapped register", &heater.read_register(999).await, &path);
    out += &show("pv", &heater.process_value().await, &path);
    insta::assert_snapshot!(report(&served, &out));
}

#[tokio::test]
async fn silence_garbage_and_bad_crc_are_link_errors_and_the_link_recovers() {
    let (emulator, served) = start();
    let path = served.path().to_owned();
    let mut heater =
        EurothermHeater::new("heater", connector(&path), policy(), EurothermOptions::default());
    let mut out = String::new();
    out += &show("pv", &heater.process_value().await, &path);
    for (name, fault) in [
        ("silent", Fault::Silent),
        ("garbage", Fault::Garbage(b"\xde\xad\xbe\xef".to_vec())),
        ("bad crc", Fault::BadChecksum),
        ("slow but in time", Fault::Slow(Duration::from_millis(150))),
    ] {
        emulator.faults().set(fault);
        served.transcript().note(&format!("fault: {name}"));
        out += &show(name, &heater.process_value().await, &path);
        emulator.faults().set(Fault::None);
        served.transcript().note("fault cleared");
        out += &show("recovered", &heater.process_value().await, &path);
    }
    insta::assert_snapshot!(report(&served, &out));
}

/// Heats at full output: PV 21.5 °C, setpoint 80 °C.
async fn heating(path: &std::path::Path) -> EurothermHeater<galen_devices::link::SerialConnector> {
    let mut heater =
        EurothermHeater::new("heater", connector(path), policy(), EurothermOptions::default());
    heater.enable().await.unwrap().unwrap();
    heater.set_setpoint(Celsius::new(80.0).unwrap()).await.unwrap().unwrap();
    assert!((heater.output().await.unwrap().unwrap().get() - 100.0).abs() < 1e-9);
    heater
}

#[tokio::test]
async fn disable_lowers_the_setpoint_first_so_a_failed_manual_output_write_is_still_safe() {
    let (emulator, served) = start();
    let path = served.path().to_owned();
    let mut heater = heating(&path).await;
    // MAN.OP cannot be written: switching to manual must not have copied 100 % into it.
    emulator.refuse_writes(&[registers::MAN_OP]);
    served.transcript().note("fault: writes to MAN.OP (3) fail");
    let disabled = heater.disable().await;
    assert!(matches!(disabled, Ok(Ok(()))), "{disabled:?}");
    assert!(emulator.plant().output().abs() < 1e-9, "output {} %", emulator.plant().output());
    assert_eq!(emulator.eeprom_writes(), 0);
}

#[tokio::test]
async fn disable_that_cannot_confirm_zero_output_says_the_heater_is_not_safe() {
    let (emulator, served) = start();
    let path = served.path().to_owned();
    let mut heater = heating(&path).await;
    emulator.refuse_writes(&[registers::RM_SP, registers::AUTO_MAN, registers::MAN_OP]);
    let disabled = heater.disable().await;
    let error = disabled.unwrap_err();
    assert!(matches!(error, galen_devices::LinkError::NotSafe { .. }), "{error}");
    assert!(error.to_string().contains("NOT SAFE"), "{error}");
    assert!(emulator.plant().output() > 99.0);
}

#[tokio::test]
async fn disable_in_order_setpoint_low_manual_then_zero_output() {
    let (emulator, served) = start();
    let path = served.path().to_owned();
    let mut heater = heating(&path).await;
    served.transcript().note("disable");
    let out = show("disable", &heater.disable().await, &path);
    assert!(emulator.plant().output().abs() < 1e-9);
    let transcript = served.transcript().render();
    let tail = transcript.split("# disable").nth(1).unwrap();
    insta::assert_snapshot!(format!("{tail}--\n{out}"));
}

#[tokio::test]
async fn configured_temperature_limits_are_refused_before_anything_is_sent() {
    let (_, served) = start();
    let path = served.path().to_owned();
    let options = EurothermOptions { min_c: 5.0, max_c: 80.0, ..EurothermOptions::default() };
    let mut heater = EurothermHeater::new("heater", connector(&path), policy(), options);
    let mut out = String::new();
    out += &show("too hot", &heater.set_setpoint(Celsius::new(80.5).unwrap()).await, &path);
    out += &show("too cold", &heater.set_setpoint(Celsius::new(4.0).unwrap()).await, &path);
    assert!(served.transcript().render().is_empty(), "{}", served.transcript().render());
    insta::assert_snapshot!(out);
}
