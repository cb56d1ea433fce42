//! hil benchmarks: plant steps per second (pure), and how many complete rigs (four emulators
//! on ptys, a plant task at a 10 ms tick, a driver polling the balance at 10 Hz) run side by
//! side in real time on this machine. Appends JSON lines to `$GALEN_BENCH_OUT` (format:
//! xtask/src/bench.rs) and prints a line per figure.

use std::hint::black_box;
use std::io::Write as _;
use std::time::{Duration, Instant};

use galen_devices::Balance;
use galen_devices::balance::Wait;
use galen_devices::balance::mt_sics::MtSicsBalance;
use galen_hil::plant::{Plant, PlantConfig, PumpDrive, PumpId};
use galen_hil::rig::{BALANCE, Rig, RigConfig};

fn record(name: &str, value: f64, unit: &str, note: &str) {
    println!("hil: {name}: {value:.3} {unit} ({note})");
    if let Ok(path) = std::env::var("GALEN_BENCH_OUT") {
        let line = format!(
            "{{\"suite\":\"hil\",\"name\":{name:?},\"value\":{value},\"unit\":{unit:?},\"note\":{note:?}}}\n"
        );
        let mut file =
            std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open results");
        file.write_all(line.as_bytes()).expect("write results");
    }
}

fn plant_steps() {
    let mut plant = Plant::new(PlantConfig::default()).expect("default plant");
    let drive = PumpDrive { running: true, forward: true, rate_ml_min: 10.0, remaining_ml: None };
    plant.set_pump_drive(PumpId::Syringe, PumpDrive { rate_ml_min: 1.0, ..drive });
    plant.set_pump_drive(PumpId::Peristaltic, drive);
    plant.set_heater_output(50.0);
    let n = 2_000_000u32;
    let start = Instant::now();
    for _ in 0..n {
        black_box(plant.step(0.01));
    }
    let secs = start.elapsed().as_secs_f64();
    record(
        "plant steps",
        f64::from(n) / secs / 1e6,
        "M steps/s",
        "both pumps running, heater at 50 %, balance noise on; 10 ms steps",
    );
}

/// Runs `n` rigs for `window`, each with a driver reading its balance at 10 Hz. Returns the
/// worst rig's fraction of overrun ticks and the reads that failed.
async fn rigs(n: usize, window: Duration) -> (f64, u64, u64) {
    let mut dirs = Vec::new();
    let mut running = Vec::new();
    for _ in 0..n {
        let dir = tempfile::tempdir().expect("tempdir");
        let rig = Rig::start(RigConfig::default(), dir.path()).expect("rig");
        let unit = rig.unit().device(BALANCE).expect("balance").clone();
        let poller = tokio::spawn(async move {
            let mut balance = MtSicsBalance::new(BALANCE, unit.connector(), unit.policy());
            let mut every = tokio::time::interval(Duration::from_millis(100));
            let (mut ok, mut failed) = (0u64, 0u64);
            let end = tokio::time::Instant::now() + window;
            while tokio::time::Instant::now() < end {
                every.tick().await;
                match balance.read(Wait::Immediate).await {
                    Ok(Ok(_)) => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        });
        dirs.push(dir);
        running.push((rig, poller));
    }
    let mut worst = 0.0_f64;
    let (mut reads, mut failures) = (0, 0);
    for (rig, poller) in running {
        let (ok, failed) = poller.await.expect("poller");
        reads += ok;
        failures += failed;
        let s = rig.tick_stats();
        #[allow(clippy::cast_precision_loss)]
        let overrun = s.overruns as f64 / s.ticks.max(1) as f64;
        worst = worst.max(overrun);
    }
    (worst, reads, failures)
}

fn parallel_rigs() {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let window = Duration::from_secs(3);
    // Keeping up: under 1 % of ticks late by more than a tick, and every balance read answered.
    let keeps_up = |(overrun, _, failures): (f64, u64, u64)| overrun < 0.01 && failures == 0;
    let one = runtime.block_on(rigs(1, window));
    let mut best = if keeps_up(one) { 1 } else { 0 };
    let mut best_overrun = one.0;
    let mut n = 2;
    while n <= 64 {
        let r = runtime.block_on(rigs(n, window));
        println!(
            "hil: {n} rigs: worst overrun {:.2} %, {} reads, {} failed",
            r.0 * 100.0,
            r.1,
            r.2
        );
        if !keeps_up(r) {
            break;
        }
        best = n;
        best_overrun = r.0;
        n *= 2;
    }
    #[allow(clippy::cast_precision_loss)]
    let best_f = best as f64;
    record(
        "rigs in real time",
        best_f,
        "rigs",
        "largest power of two up to 64 (the search stops there) with < 1 % late ticks (10 ms tick) and every 10 Hz balance read answered",
    );
    record("1 rig: late ticks", one.0 * 100.0, "%", "ticks more than 2 periods after the previous");
    record(
        &format!("{best} rigs: late ticks"),
        best_overrun * 100.0,
        "%",
        "side by side with the single-rig figure above",
    );
}

fn main() {
    plant_steps();
    parallel_rigs();
}
