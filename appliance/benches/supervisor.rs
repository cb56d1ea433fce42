//! The supervisor on the simulated unit: how fast a balance reading becomes a stopped pump,
//! and what the runtime costs in memory and CPU while a batch runs. Doses run against the hil
//! rig over real ptys, in real time. Results go to `$GALEN_BENCH_OUT` (xtask/src/bench.rs).

mod report;
#[path = "../tests/support/mod.rs"]
mod support;
#[path = "../tests/support/usage.rs"]
mod usage;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use galen_appliance::engine::batch::{Batch, Event, Planned, Pump};
use galen_appliance::engine::dispense::Spec;
use galen_appliance::engine::safety::{Limits, Monitor};
use galen_appliance::engine::state::{Command, State};
use galen_appliance::supervisor::runtime::{Run, SystemClock};
use galen_appliance::supervisor::start_devices;
use galen_hil::rig::{Rig, RigConfig};
use tokio::sync::mpsc;

fn report(name: &str, value: f64, unit: &str, note: &str) {
    report::report("supervisor", name, value, unit, note);
}

/// This process's resident memory (kB) and CPU time (user + system, s).
fn usage() -> (f64, f64) {
    let u = usage::usage(None);
    (u.rss_kib, u.cpu_s)
}

fn main() {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let appliance = support::Rig::new();
        let store = Arc::new(Mutex::new(appliance.commission()));
        let mut latencies = Vec::new();
        let (rss_before, cpu_before) = usage();
        let started = Instant::now();
        let doses = 8;
        let mut rss_peak: f64 = rss_before;
        for i in 0..doses {
            let dir = tempfile::tempdir().unwrap();
            let rig = Rig::start(RigConfig::default(), dir.path()).unwrap();
            let (observed_tx, observed) = mpsc::channel(256);
            let devices = start_devices(rig.unit(), &observed_tx).unwrap();
            let (operator_tx, operator) = mpsc::channel(8);
            operator_tx.send(Event::Operator(Command::Start)).await.unwrap();
            let plan = vec![
                Planned::Tare { id: "tare".into() },
                Planned::Dispense {
                    id: "dose".into(),
                    material: "water".into(),
                    pump: Pump::Peristaltic,
                    spec: Spec { target_g: 5.0 + f64::from(i), tolerance_g: 0.2, density_g_ml: 0.997, max_rate_ml_min: 60.0 },
                },
            ];
            let mut run = Run::new(format!("B-BENCH-{i}"), devices, store.clone(), SystemClock);
            let state = run.run(Batch::new(plan, Monitor::new(Limits::default())), operator, observed).await.unwrap();
            assert_eq!(state, State::Complete);
            latencies.extend(run.stop_latencies().iter().map(Duration::as_secs_f64));
            rss_peak = rss_peak.max(usage().0);
        }
        let (_, cpu_after) = usage();
        let wall = started.elapsed().as_secs_f64();
        latencies.sort_by(f64::total_cmp);
        let pick = |percent: usize| latencies[(latencies.len() - 1) * percent / 100] * 1000.0;
        let n = latencies.len();
        report("balance reading to pump stopped, p50", pick(50), "ms", &format!("{n} stops over {doses} doses; stop written and read back (WM520 has no reply to ST)"));
        report("balance reading to pump stopped, p99", pick(99), "ms", &format!("with {n} samples this is close to the worst"));
        report("resident memory while batches run, peak", rss_peak / 1024.0, "MiB", "the whole bench process: runtime, actors, rig and emulators");
        report("CPU while batches run", (cpu_after - cpu_before) / wall * 100.0, "% of one core", "the same process, rig and emulators included");
    });
}
