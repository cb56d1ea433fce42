//! Eurotherm driver ↔ emulator (tokio-modbus client ↔ `rtu-server`) over a real pty.

mod common;

use std::time::Duration;

use common::{connector, policy, report, show};
use galen_devices::Heater;
use galen_devices::emulator::Fault;
use galen_devices::heater::HeaterPlant;
use galen_devices::heater::eurotherm::{
    EurothermEmulator, EurothermHeater, EurothermModel, EurothermOptions,
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
