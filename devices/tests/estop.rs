//! E-stop contact on a Modbus RTU digital-input module: driver ↔ emulator (tokio-modbus client
//! ↔ `rtu-server`) over a real pty.

mod common;

use common::{connector, policy, report, show};
use galen_devices::EmergencyStop;
use galen_devices::emulator::Fault;
use galen_devices::estop::EstopPlant;
use galen_devices::estop::modbus_di::inputs::Contact;
use galen_devices::estop::modbus_di::{
    ModbusDiEmulator, ModbusDiEstop, ModbusDiModel, ModbusDiOptions,
};
use galen_devices::pty::Served;

fn start(model: ModbusDiModel) -> (ModbusDiEmulator, Served) {
    let emulator = ModbusDiEmulator::new(EstopPlant::new(), model);
    let serving = emulator.clone();
    let served = Served::spawn(move |io| async move { serving.serve(io).await }).unwrap();
    (emulator, served)
}

#[tokio::test]
async fn pressed_and_released_read_through_function_2_on_a_normally_closed_contact() {
    let model = ModbusDiModel { address: 3, estop_input: 5, ..ModbusDiModel::default() };
    let (emulator, served) = start(model);
    let path = served.path().to_owned();
    let options = ModbusDiOptions { address: 3, input: 5, contact: Contact::NormallyClosed };
    let mut estop = ModbusDiEstop::new("estop", connector(&path), policy(), options);
    let mut out = String::new();
    out += &show("released", &estop.state().await, &path);
    emulator.plant().set_pressed(true);
    served.transcript().note("button pressed");
    out += &show("pressed", &estop.state().await, &path);
    emulator.plant().set_pressed(false);
    served.transcript().note("button released");
    out += &show("released again", &estop.state().await, &path);
    out += &show("all eight inputs", &estop.read_inputs(0, 8).await, &path);
    out += &show("past the last input", &estop.read_inputs(6, 4).await, &path);
    insta::assert_snapshot!(report(&served, &out));
}

#[tokio::test]
async fn silence_garbage_and_a_wrong_address_are_lost_monitoring_and_the_link_recovers() {
    let (emulator, served) = start(ModbusDiModel::default());
    let path = served.path().to_owned();
    let mut estop =
        ModbusDiEstop::new("estop", connector(&path), policy(), ModbusDiOptions::default());
    let mut out = String::new();
    out += &show("released", &estop.state().await, &path);
    for (name, fault) in [
        ("silent", Fault::Silent),
        ("garbage", Fault::Garbage(b"\x01\x02\x01\x01\x00\x00".to_vec())),
        ("bad crc", Fault::BadChecksum),
    ] {
        emulator.faults().set(fault);
        served.transcript().note(&format!("fault: {name}"));
        out += &show(name, &estop.state().await, &path);
        emulator.faults().set(Fault::None);
        served.transcript().note("fault cleared");
        out += &show("recovered", &estop.state().await, &path);
    }
    // A module at another address stays silent: from here, that is a timeout too.
    let wrong = ModbusDiOptions { address: 9, ..ModbusDiOptions::default() };
    let mut elsewhere = ModbusDiEstop::new("estop", connector(&path), policy(), wrong);
    served.transcript().note("a driver configured for address 9");
    out += &show("wrong address", &elsewhere.state().await, &path);
    insta::assert_snapshot!(report(&served, &out));
}
