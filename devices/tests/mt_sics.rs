//! MT-SICS driver ↔ emulator conversations over a real pty in raw mode, snapshotted both ways.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{connector, policy, report, show};
use galen_devices::Balance;
use galen_devices::balance::mt_sics::{MtSicsBalance, MtSicsEmulator, MtSicsModel, StreamCancel};
use galen_devices::balance::{ManualWeight, Wait};
use galen_devices::emulator::Fault;
use galen_devices::pty::Served;
use galen_devices::units::Weight;

fn model() -> MtSicsModel {
    MtSicsModel { stable_wait: Duration::from_millis(60), ..MtSicsModel::default() }
}

fn start(
    model: MtSicsModel,
    grams: f64,
) -> (Arc<MtSicsEmulator<ManualWeight>>, ManualWeight, Served) {
    let weight = ManualWeight::new(grams);
    let emulator = Arc::new(MtSicsEmulator::new(weight.clone(), model));
    let serving = emulator.clone();
    let served = Served::spawn(move |io| async move { serving.serve(io).await }).unwrap();
    (emulator, weight, served)
}

#[tokio::test]
async fn identify_weigh_tare_and_zero() {
    let (_, weight, served) = start(model(), 0.0);
    let port = served.path().to_owned();
    let mut balance = MtSicsBalance::new("balance", connector(&port), policy());
    let mut out = String::new();
    out += &show("identify", &balance.identify().await, &port);
    out += &show("zero", &balance.zero().await, &port);
    weight.set(12.5, true);
    out += &show("tare", &balance.tare().await, &port);
    weight.set(64.68734, true);
    out += &show("read stable", &balance.read(Wait::Stable).await, &port);
    out += &show("preset tare", &balance.preset_tare(Weight::grams(10.5)).await, &port);
    out += &show("read now", &balance.read(Wait::Immediate).await, &port);
    out += &show("clear tare", &balance.clear_tare().await, &port);
    out += &show("reset", &balance.reset().await, &port);
    insta::assert_snapshot!(report(&served, &out));
}

#[tokio::test]
async fn unstable_weight_is_dynamic_now_and_refused_when_stability_is_required() {
    let (_, weight, served) = start(model(), 0.0);
    let port = served.path().to_owned();
    let mut balance = MtSicsBalance::new("balance", connector(&port), policy());
    weight.set(3.21, false);
    let mut out = String::new();
    out += &show("read now", &balance.read(Wait::Immediate).await, &port);
    out += &show("read stable", &balance.read(Wait::Stable).await, &port);
    out += &show("tare", &balance.tare().await, &port);
    insta::assert_snapshot!(report(&served, &out));
}

#[tokio::test]
async fn overload_and_underload_are_refusals() {
    let (_, weight, served) = start(model(), 250.0);
    let port = served.path().to_owned();
    let mut balance = MtSicsBalance::new("balance", connector(&port), policy());
    let mut out = String::new();
    out += &show("read over", &balance.read(Wait::Stable).await, &port);
    out += &show("zero over", &balance.zero().await, &port);
    weight.set(-20.0, true);
    out += &show("read under", &balance.read(Wait::Immediate).await, &port);
    insta::assert_snapshot!(report(&served, &out));
}

#[tokio::test]
async fn a_level_0_balance_answers_level_1_commands_with_a_syntax_error() {
    let (_, _, served) = start(MtSicsModel { level1: false, ..model() }, 1.0);
    let port = served.path().to_owned();
    let mut balance = MtSicsBalance::new("balance", connector(&port), policy());
    let mut out = String::new();
    out += &show("tare", &balance.tare().await, &port);
    out += &show("clear tare", &balance.clear_tare().await, &port);
    out += &show("read", &balance.read(Wait::Stable).await, &port);
    insta::assert_snapshot!(report(&served, &out));
}

#[tokio::test]
async fn silence_garbage_and_noise() {
    let (emulator, _, served) = start(model(), 1.0);
    let port = served.path().to_owned();
    let mut balance = MtSicsBalance::new("balance", connector(&port), policy());
    let mut out = String::new();
    emulator.faults().set(Fault::Silent);
    served.transcript().note("fault: silent");
    out += &show("silent", &balance.read(Wait::Stable).await, &port);
    emulator.faults().set(Fault::Garbage(b"\xfe\x00\x13garbage\r\n".to_vec()));
    served.transcript().note("fault: garbage instead of replies");
    out += &show("garbage", &balance.read(Wait::Stable).await, &port);
    emulator.faults().set(Fault::NoiseBefore(b"\x00\xff~~\r\n".to_vec()));
    served.transcript().note("fault: noise before replies");
    out += &show("noise", &balance.read(Wait::Stable).await, &port);
    emulator.faults().set(Fault::BadChecksum);
    served.transcript().note("fault: corrupted replies");
    out += &show("corrupt", &balance.read(Wait::Stable).await, &port);
    emulator.faults().set(Fault::None);
    served.transcript().note("fault cleared");
    out += &show("recovered", &balance.read(Wait::Stable).await, &port);
    insta::assert_snapshot!(report(&served, &out));
}

#[tokio::test]
async fn a_stream_runs_and_stops_without_touching_the_tare() {
    let (_, weight, served) = start(model(), 5.0);
    let port = served.path().to_owned();
    let mut balance = MtSicsBalance::new("balance", connector(&port), policy());
    balance.tare().await.unwrap().unwrap();
    weight.set(7.5, false);
    balance.start_stream().await.unwrap().unwrap();
    let mut values = Vec::new();
    for _ in 0..3 {
        let reading = balance.next_streamed().await.unwrap().unwrap();
        values.push(reading.to_string());
    }
    assert_eq!(values, ["2.5 g (dynamic)"; 3]);
    balance.stop_stream().await.unwrap().unwrap();
    weight.set(7.5, true);
    let after = balance.read(Wait::Stable).await.unwrap().unwrap();
    // The tare survived: the stream was cancelled with SI, not @.
    assert_eq!(after.to_string(), "2.5 g (stable)");
    let transcript = served.transcript().render();
    assert!(transcript.contains("-> \"SIR\\r\\n\""), "{transcript}");
    assert!(!transcript.contains("-> \"@"), "{transcript}");
}

#[tokio::test]
async fn a_port_that_vanishes_and_returns_is_reopened_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("balance");
    let (_, _, mut served) = start(model(), 1.0);
    served.link_at(&link).unwrap();
    let mut balance = MtSicsBalance::new("balance", connector(&link), policy());
    let mut out = String::new();
    out += &show("before", &balance.read(Wait::Stable).await, &link);
    let first = served.transcript().render();
    served.unplug();
    out += &show("unplugged", &balance.read(Wait::Stable).await, &link);
    out += &show("still gone", &balance.read(Wait::Stable).await, &link);
    let attempts_while_gone = balance.link().open_attempts();
    let (_, _, mut again) = start(model(), 2.0);
    again.link_at(&link).unwrap();
    out += &show("back", &balance.read(Wait::Stable).await, &link);
    assert!(attempts_while_gone >= 2, "{attempts_while_gone}");
    assert!(balance.link().open_attempts() > attempts_while_gone);
    let out = out.replace(&*dir.path().to_string_lossy(), "<dir>");
    insta::assert_snapshot!(format!(
        "{first}-- unplugged, replugged --\n{}--\n{out}",
        again.transcript().render()
    ));
}

#[tokio::test]
async fn a_stream_that_ignores_si_is_reset_and_the_cleared_tare_is_reported() {
    let (_, weight, served) =
        start(MtSicsModel { stream_cancel: StreamCancel::ResetOnly, ..model() }, 5.0);
    let port = served.path().to_owned();
    let mut balance = MtSicsBalance::new("balance", connector(&port), policy());
    balance.tare().await.unwrap().unwrap();
    weight.set(7.5, true);
    balance.start_stream().await.unwrap().unwrap();
    balance.next_streamed().await.unwrap().unwrap();
    let started = tokio::time::Instant::now();
    let stopped = balance.stop_stream().await;
    // Bounded: SI's window plus @'s, each at most the request timeout.
    assert!(started.elapsed() <= policy().timeout * 2 + Duration::from_millis(200));
    let refusal = stopped.unwrap().unwrap_err();
    assert_eq!(refusal.reason, galen_devices::RefusalReason::TareCleared, "{refusal}");
    // The stream is over and the weight is gross now: the tare really was cleared.
    let after = balance.read(Wait::Stable).await.unwrap().unwrap();
    assert_eq!(after.to_string(), "7.5 g (stable)");
    assert!(served.transcript().render().contains("-> \"@\\r\\n\""));
}

#[tokio::test]
async fn a_stream_that_never_stops_is_a_link_error_within_the_deadline() {
    let (_, _, served) = start(MtSicsModel { stream_cancel: StreamCancel::Never, ..model() }, 5.0);
    let port = served.path().to_owned();
    let mut balance = MtSicsBalance::new("balance", connector(&port), policy());
    balance.start_stream().await.unwrap().unwrap();
    balance.next_streamed().await.unwrap().unwrap();
    let started = tokio::time::Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(5), balance.stop_stream())
        .await
        .expect("stop_stream has no deadline");
    assert!(started.elapsed() <= policy().timeout * 2 + Duration::from_millis(200));
    let error = stopped.unwrap_err();
    assert!(matches!(error, galen_devices::LinkError::Unexpected { .. }), "{error}");
}
