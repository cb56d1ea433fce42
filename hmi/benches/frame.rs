//! Frame time of the run screen with live charts, rendered by Slint's software renderer (the
//! renderer the appliance uses: no GPU), at 1280×800 and, side by side in the same run, at
//! 800×480. Each frame takes one new weight and temperature sample, as a live update does,
//! and is rendered whole (the worst case: on the device only the changed region is redrawn).
//! Results go to `$GALEN_BENCH_OUT` (xtask/src/bench.rs).

#[path = "../../appliance/benches/report/mod.rs"]
mod report;

use std::time::{Duration, Instant};

use galen_hmi::view::{Role, Trend, Unit};
use galen_hmi::{AppWindow, Hmi, model, show_session, show_unit};
use i_slint_backend_testing::{TestingBackend, TestingBackendOptions, mock_elapsed_time};
use slint::{ComponentHandle as _, SharedString};

const FRAMES: u32 = 120;
/// The live properties arrive at most five times a second.
const LIVE_PERIOD: Duration = Duration::from_millis(200);

/// Renders `FRAMES` frames of the run screen at `size`; returns each frame's time, sorted.
fn frames(size: (u32, u32)) -> Vec<f64> {
    let ui = AppWindow::new().expect("the window");
    ui.window().set_size(slint::PhysicalSize::new(size.0, size.1));
    show_session(&ui, "Ada Lovelace", Role::Pharmacist);
    let hmi = ui.global::<Hmi<'_>>();
    let phases = [
        "scan-api",
        "scan-vehicle",
        "prime-vehicle",
        "tare-vessel",
        "dispense-api",
        "dispense-vehicle",
        "mix",
        "flush",
    ];
    hmi.set_phases(model(phases.iter().map(|p| SharedString::from(*p)).collect()));
    hmi.set_screen("run".into());
    ui.show().expect("show");
    let (mut weight, mut temperature) = (Trend::new(450), Trend::new(450));
    // A chart already full, as after a few minutes of a batch.
    for i in 0..450_u32 {
        weight.push(f64::from(i) * 0.1);
        temperature.push(22.0 + f64::from(i % 50) * 0.05);
    }
    let mut times = Vec::new();
    for i in 0..FRAMES {
        let x = f64::from(i);
        weight.push(45.0 + x * 0.1);
        temperature.push(24.0 + 0.1 * (x * 0.3).sin());
        let unit = Unit {
            batch_id: "B-20261121-001".into(),
            state: "Running".into(),
            phase: "dispense-vehicle".into(),
            position: (5, 8),
            progress: (x / f64::from(FRAMES)).min(1.0),
            weight_g: 45.0 + x * 0.1,
            temperature_c: 24.0,
            setpoint_c: 25.0,
            ..Unit::default()
        };
        let t = Instant::now();
        show_unit(&ui, &unit, &weight, &temperature);
        mock_elapsed_time(LIVE_PERIOD);
        let shot = ui.window().take_snapshot().expect("a frame");
        std::hint::black_box(shot);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ui.hide().expect("hide");
    times.sort_by(f64::total_cmp);
    times
}

fn main() {
    slint::platform::set_platform(Box::new(TestingBackend::new(TestingBackendOptions {
        mock_time: true,
        threading: false,
        renderer_name: Some("software".into()),
    })))
    .expect("the testing platform");
    // Interleaved, so that the machine's noise falls on both sizes alike.
    let (mut large, mut small) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        large.extend(frames((1280, 800)));
        small.extend(frames((800, 480)));
    }
    large.sort_by(f64::total_cmp);
    small.sort_by(f64::total_cmp);
    let pick = |v: &[f64], percent: usize| v[(v.len() - 1) * percent / 100];
    let n = large.len();
    let note =
        format!("{n} frames, each a new sample and a whole-window repaint; budget at 5 Hz: 200 ms");
    report::report("hmi", "run screen frame at 1280x800, p50", pick(&large, 50), "ms", &note);
    report::report(
        "hmi",
        "run screen frame at 1280x800, p99",
        pick(&large, 99),
        "ms",
        "near the worst with this many frames",
    );
    report::report(
        "hmi",
        "run screen frame at 800x480, p50",
        pick(&small, 50),
        "ms",
        "same run, interleaved",
    );
    report::report(
        "hmi",
        "frame time ratio 1280x800 / 800x480, p50",
        pick(&large, 50) / pick(&small, 50),
        "x",
        "2.67x the pixels",
    );
}
