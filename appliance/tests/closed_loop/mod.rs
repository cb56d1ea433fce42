//! The dispense controller closing the loop on galen-hil's pure plant: the same physics the
//! rig serves over serial, stepped directly, so hundreds of doses run in a second. Shared by
//! the dosing test and the dose-accuracy benchmark.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use galen_hil::plant::{BalanceDisplay, Plant, PlantConfig, PumpDrive, PumpId};

use galen_appliance::engine::dispense::{Action, Dispense, Outcome, Spec, Tuning};

/// One dose and how it went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dose {
    pub target_g: f64,
    /// What truly arrived in the vessel (the plant's ledger, not the balance).
    pub delivered_g: f64,
    pub outcome: Outcome,
    /// Seconds from the first rate command to the verdict.
    pub seconds: f64,
}

/// Doses `target_g` of the peristaltic pump's liquid into a fresh vessel, reading the balance
/// at `poll_hz`.
pub fn dose(
    mut cfg: PlantConfig,
    liquid: &str,
    target_g: f64,
    tolerance_g: f64,
    poll_hz: u32,
) -> Dose {
    cfg.peristaltic.liquid = liquid.to_owned();
    let density = match liquid {
        "ethanol" => 0.789,
        "saline" => 1.005,
        _ => 0.997,
    };
    let max_ml_min = cfg.peristaltic.ml_per_rev * cfg.peristaltic.max_rpm;
    let step_s = cfg.step_s;
    let mut plant = Plant::new(cfg).expect("a valid plant");
    let spec = Spec { target_g, tolerance_g, density_g_ml: density, max_rate_ml_min: max_ml_min };
    let mut d = Dispense::new(spec, Tuning::default());
    let steps_per_poll = ((1.0 / f64::from(poll_hz)) / step_s).round().max(1.0);
    // A positive whole number of steps well inside u32.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let steps_per_poll = steps_per_poll as u32;
    let start_liquid = plant.vessel_liquid_g();
    let mut t = 0.0;
    // Let the balance settle, then start from a stable reading.
    let start = loop {
        plant.step(step_s);
        t += step_s;
        if let (BalanceDisplay::Grams(g), true) =
            (plant.balance_display(), plant.balance_sample().settled)
        {
            break g;
        }
    };
    let started_at = t;
    let drive = |plant: &mut Plant, a: Action| match a {
        Action::Rate { ml_min } => {
            plant.set_pump_drive(
                PumpId::Peristaltic,
                PumpDrive { running: true, forward: true, rate_ml_min: ml_min, remaining_ml: None },
            );
            None
        }
        Action::Stop => {
            plant.set_pump_drive(PumpId::Peristaltic, PumpDrive::default());
            None
        }
        Action::Done(o) => Some(o),
    };
    drive(&mut plant, d.start(start));
    loop {
        for _ in 0..steps_per_poll {
            plant.step(step_s);
            t += step_s;
        }
        let BalanceDisplay::Grams(g) = plant.balance_display() else {
            panic!("balance overloaded")
        };
        let now = Duration::from_secs_f64(t);
        if let Some(outcome) =
            d.reading(now, g, plant.balance_sample().settled).and_then(|a| drive(&mut plant, a))
        {
            return Dose {
                target_g,
                delivered_g: plant.vessel_liquid_g() - start_liquid,
                outcome,
                seconds: t - started_at,
            };
        }
        assert!(t - started_at < 3_600.0, "a dose of {target_g} g did not finish within an hour");
    }
}
