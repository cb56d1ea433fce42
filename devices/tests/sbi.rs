//! Sartorius SBI driver ↔ emulator over a real pty: 16-character replies, a blank unit while
//! unstable, unanswered control commands, overload and commands SBI does not have.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{connector, policy, report, show};
use galen_devices::Balance;
use galen_devices::balance::sbi::codec::Ident;
use galen_devices::balance::sbi::{SbiBalance, SbiEmulator, SbiModel, SbiOptions};
use galen_devices::balance::{ManualWeight, Wait};
use galen_devices::pty::Served;
use galen_devices::units::Weight;

#[tokio::test]
async fn identify_unstable_tare_overload_and_unsupported() {
    let weight = ManualWeight::new(52.1874);
    let emulator = Arc::new(SbiEmulator::new(weight.clone(), SbiModel::default()));
    let serving = emulator.clone();
    let served = Served::spawn(move |io| async move { serving.serve(io).await }).unwrap();
    let path = served.path().to_owned();
    let options = SbiOptions {
        stable_timeout: Duration::from_millis(150),
        poll_interval: Duration::from_millis(50),
        capacity: Some(Weight::grams(220.0)),
        ..SbiOptions::default()
    };
    let mut balance = SbiBalance::new("sbi", connector(&path), policy(), options);
    let mut out = String::new();
    out += &show("identify", &balance.identify().await, &path);
    out += &show("read", &balance.read(Wait::Stable).await, &path);
    out += &show("tare", &balance.tare().await, &path);
    // Tare is not answered: a reading is what orders it before the load changes.
    out += &show("read after tare", &balance.read(Wait::Stable).await, &path);
    weight.set(60.0, false);
    out += &show("read now", &balance.read(Wait::Immediate).await, &path);
    let first = served.transcript().render();
    // How many polls fit in the stability timeout depends on the machine: not snapshotted.
    let stable = balance.read(Wait::Stable).await;
    out += &show("read stable", &stable, &path);
    weight.set(300.0, true);
    served.transcript().clear();
    out += &show("overload", &balance.read(Wait::Immediate).await, &path);
    out += &show("preset tare", &balance.preset_tare(Weight::grams(1.0)).await, &path);
    insta::assert_snapshot!(format!(
        "{first}-- polling for stability --\n{}",
        report(&served, &out)
    ));
}

fn sbi_with_ids(print_ids: Vec<Ident>) -> (ManualWeight, Served) {
    let weight = ManualWeight::new(60.0);
    let model = SbiModel { with_id: true, print_ids, ..SbiModel::default() };
    let emulator = Arc::new(SbiEmulator::new(weight.clone(), model));
    let served = Served::spawn(move |io| async move { emulator.serve(io).await }).unwrap();
    (weight, served)
}

#[tokio::test]
async fn a_print_block_yields_its_net_line_not_gross_or_tare() {
    let (weight, served) = sbi_with_ids(vec![Ident::Gross, Ident::Tare, Ident::Net]);
    let path = served.path().to_owned();
    let mut balance = SbiBalance::new("sbi", connector(&path), policy(), SbiOptions::default());
    weight.set(10.0, true);
    balance.tare().await.unwrap().unwrap();
    let mut out = String::new();
    // Tare is not answered: this reading orders it before the load changes.
    out += &show("read after tare", &balance.read(Wait::Stable).await, &path);
    weight.set(60.0, true);
    out += &show("read", &balance.read(Wait::Stable).await, &path);
    insta::assert_snapshot!(report(&served, &out));
}

#[tokio::test]
async fn a_print_without_a_net_line_is_a_timeout_not_a_reading() {
    let (_, served) = sbi_with_ids(vec![Ident::Gross]);
    let path = served.path().to_owned();
    let mut balance = SbiBalance::new("sbi", connector(&path), policy(), SbiOptions::default());
    let read = balance.read(Wait::Immediate).await;
    assert!(matches!(read, Err(galen_devices::LinkError::Timeout { .. })), "{read:?}");
}
