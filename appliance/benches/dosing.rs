//! Dose accuracy on the simulated plant: 50 doses of 10–100 g of two liquids, with the
//! engine's gravimetric controller against galen-hil's physics. Reports the mean and worst
//! absolute error and the dose time against the ideal (volume ÷ maximum pump rate).
//! Results go to `$GALEN_BENCH_OUT` as JSON lines (xtask/src/bench.rs).

#[path = "../tests/closed_loop/mod.rs"]
mod closed_loop;
mod report;

use galen_appliance::engine::dispense::Outcome;
use galen_hil::plant::PlantConfig;

fn report(name: &str, value: f64, unit: &str, note: &str) {
    report::report("dosing", name, value, unit, note);
}

fn main() {
    let mut errors = Vec::new();
    let mut ratios = Vec::new();
    let mut within = 0;
    let n = 50u32;
    for i in 0..n {
        let liquid = if i % 2 == 0 { "water" } else { "ethanol" };
        let target = 10.0 + 90.0 * f64::from(i) / f64::from(n - 1);
        // A different noise sequence per dose.
        let cfg = PlantConfig { seed: u64::from(i) + 1, ..PlantConfig::default() };
        let max_ml_min = cfg.peristaltic.ml_per_rev * cfg.peristaltic.max_rpm;
        let density = if liquid == "ethanol" { 0.789 } else { 0.997 };
        let d = closed_loop::dose(cfg, liquid, target, 0.1, 10);
        if matches!(d.outcome, Outcome::Within { .. }) {
            within += 1;
        }
        errors.push(((d.delivered_g - target) / target * 100.0).abs());
        let ideal_s = target / density / max_ml_min * 60.0;
        ratios.push(d.seconds / ideal_s);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let worst = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    report(
        "mean absolute dose error",
        mean(&errors),
        "%",
        "50 doses, 10-100 g, water and ethanol, tolerance 0.1 g",
    );
    report(
        "worst absolute dose error",
        worst(&errors),
        "%",
        "against the plant's ledger, not the balance",
    );
    report("doses within tolerance", f64::from(within), "of 50", "");
    report(
        "dose time / ideal (volume / max rate), mean",
        mean(&ratios),
        "ratio",
        "fine phase, stop, settle and judge included",
    );
    report("dose time / ideal, worst", worst(&ratios), "ratio", "");
}
