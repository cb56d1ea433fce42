//! Physics sanity: conservation, the analytic heating curve, noise statistics, overload, and
//! the pump behaviours the scenarios rely on.

use super::*;

fn drive(rate: f64, remaining: Option<f64>) -> PumpDrive {
    PumpDrive { running: true, forward: true, rate_ml_min: rate, remaining_ml: remaining }
}

fn quiet() -> PlantConfig {
    let mut cfg = PlantConfig::default();
    cfg.balance.noise_sd_g = 0.0;
    cfg.balance.flow_noise_sd_g = 0.0;
    cfg
}

#[test]
fn mass_is_conserved_through_pumps_tube_and_reverse_flow() {
    let mut plant = Plant::new(PlantConfig::default()).unwrap();
    let check = |plant: &Plant| {
        let l = plant.ledger();
        assert!(
            (l.out_of_reservoirs_g - l.into_vessel_g - l.in_tube_g).abs() < 1e-9,
            "t={}: {l:?}",
            plant.time_s()
        );
        assert!((plant.vessel_liquid_g() - l.into_vessel_g).abs() < 1e-9);
    };
    let schedule: [(f64, PumpId, PumpDrive); 5] = [
        (0.0, PumpId::Peristaltic, drive(120.0, None)),
        (2.0, PumpId::Syringe, drive(30.0, Some(1.0))),
        (6.0, PumpId::Peristaltic, PumpDrive::default()),
        (8.0, PumpId::Syringe, PumpDrive { forward: false, ..drive(20.0, Some(0.5)) }),
        (10.0, PumpId::Syringe, PumpDrive::default()),
    ];
    let mut next = 0;
    while plant.time_s() < 30.0 {
        while next < schedule.len() && plant.time_s() >= schedule[next].0 {
            plant.set_pump_drive(schedule[next].1, schedule[next].2);
            next += 1;
        }
        plant.step(0.01);
        check(&plant);
    }
    let l = plant.ledger();
    assert!(l.in_tube_g < 1e-6, "the tube drains once the pump stops: {l:?}");
    assert!(l.into_vessel_g > 5.0, "something was pumped: {l:?}");
}

#[test]
fn heating_follows_the_analytic_first_order_curve_and_the_sensor_lags_it() {
    let cfg = quiet();
    let (ta, p) = (cfg.ambient_c, cfg.heater.power_w);
    let c = cfg.vessel.mass_g * cfg.vessel.specific_heat_j_gk;
    let ua = cfg.vessel.ua_w_k;
    let (tau1, tau2) = (c / ua, cfg.heater.sensor_tau_s);
    let mut plant = Plant::new(cfg).unwrap();
    plant.set_heater_output(100.0);
    let gain = p / ua;
    while plant.time_s() < 600.0 {
        plant.step(0.05);
        let t = plant.time_s();
        let vessel = ta + gain * (1.0 - (-t / tau1).exp());
        // Two first-order lags in series, from rest.
        let sensor = ta
            + gain * (1.0 - (tau1 * (-t / tau1).exp() - tau2 * (-t / tau2).exp()) / (tau1 - tau2));
        assert!(
            (plant.vessel_c() - vessel).abs() < 1e-6,
            "t={t}: {} vs {vessel}",
            plant.vessel_c()
        );
        assert!(
            (plant.sensor_c() - sensor).abs() < 0.05,
            "t={t}: {} vs {sensor}",
            plant.sensor_c()
        );
        assert!(plant.sensor_c() <= plant.vessel_c() + 1e-12);
    }
    assert!(plant.vessel_c() > ta + 0.8 * gain * (1.0 - (-600.0 / tau1).exp()));
}

#[test]
fn liquid_raises_the_thermal_mass_and_the_power_is_limited() {
    let mut empty = Plant::new(quiet()).unwrap();
    let mut full = Plant::new(PlantConfig {
        vessel: config::VesselConfig { initial_ml: 50.0, ..Default::default() },
        ..quiet()
    })
    .unwrap();
    for plant in [&mut empty, &mut full] {
        plant.set_heater_output(250.0);
        plant.advance_to(60.0);
        assert!((plant.heater_w() - 60.0).abs() < 1e-12, "output is clamped to 100 %");
    }
    assert!(
        empty.vessel_c() > full.vessel_c() + 5.0,
        "{} vs {}",
        empty.vessel_c(),
        full.vessel_c()
    );
}

#[test]
fn balance_noise_matches_its_configured_mean_and_sigma() {
    for sd in [0.001, 0.01] {
        let mut cfg = PlantConfig::default();
        cfg.balance.noise_sd_g = sd;
        cfg.seed = 99;
        let mut plant = Plant::new(cfg).unwrap();
        let truth = plant.config().vessel.mass_g;
        let n = 50_000;
        let xs: Vec<f64> = (0..n)
            .map(|_| {
                plant.step(0.01);
                let s = plant.balance_sample();
                assert!(s.settled);
                s.grams - truth
            })
            .collect();
        let mean = xs.iter().sum::<f64>() / f64::from(n);
        let sigma = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / f64::from(n - 1)).sqrt();
        assert!(mean.abs() < 4.0 * sd / f64::from(n).sqrt(), "σ={sd}: mean {mean}");
        assert!((sigma / sd - 1.0).abs() < 0.02, "σ={sd}: measured {sigma}");
    }
}

#[test]
fn the_balance_is_unsettled_during_flow_and_settles_after_settle_time() {
    let mut plant = Plant::new(quiet()).unwrap();
    plant.set_pump_drive(PumpId::Syringe, drive(30.0, Some(0.5)));
    plant.advance_to(0.5);
    assert!(!plant.balance_sample().settled);
    while plant.ledger().into_vessel_g < 0.49 {
        plant.step(0.01);
    }
    let stopped = plant.time_s();
    plant.set_pump_drive(PumpId::Syringe, PumpDrive::default());
    plant.advance_to(stopped + 0.5);
    assert!(!plant.balance_sample().settled);
    // The motor coasts down (τ 0.1 s) before the last drop falls; then settle_s of rest.
    plant.advance_to(stopped + 2.5);
    assert!(plant.balance_sample().settled);
}

#[test]
fn drift_accumulates_at_its_rate() {
    let mut cfg = quiet();
    cfg.balance.drift_g_per_h = 0.36;
    let mut plant = Plant::new(cfg).unwrap();
    plant.apply(PlantFault::BalanceDrift(0.06));
    plant.advance_to(100.0);
    let drift = plant.balance_sample().grams - plant.config().vessel.mass_g;
    assert!((drift - (0.01 + 0.1)).abs() < 1e-6, "{drift}");
}

#[test]
fn overload_appears_at_capacity() {
    let mut cfg = quiet();
    cfg.balance.capacity_g = 100.0;
    cfg.peristaltic.pulsation = 0.0;
    let mut plant = Plant::new(cfg).unwrap();
    plant.set_pump_drive(PumpId::Peristaltic, drive(100.0, None));
    let mut last = 0.0;
    loop {
        plant.step(0.01);
        match plant.balance_display() {
            BalanceDisplay::Grams(g) => last = g,
            BalanceDisplay::Overload => break,
        }
        assert!(plant.time_s() < 120.0, "never overloaded");
    }
    let gross = plant.balance_sample().grams;
    assert!(gross > 100.0 && gross < 100.05, "overload at {gross} g");
    assert!(last <= 100.0 && last > 99.9, "last reading {last}");
}

#[test]
fn a_run_with_a_target_stops_at_the_target_with_a_ramp_up() {
    let mut plant = Plant::new(quiet()).unwrap();
    plant.set_pump_drive(PumpId::Syringe, drive(30.0, Some(2.0)));
    let r = plant.step(0.01);
    let ideal = 30.0 / 60.0 * 0.01;
    assert!(r.pump(PumpId::Syringe).counted_ml < 0.2 * ideal, "the motor ramps up");
    let mut counted = r.pump(PumpId::Syringe).counted_ml;
    for _ in 0..1000 {
        counted += plant.step(0.01).pump(PumpId::Syringe).counted_ml;
    }
    assert!((counted - 2.0).abs() < 1e-9, "{counted}");
    let water = plant.vessel_contents()["water"];
    assert!((water - 2.0).abs() < 1e-9, "{water}");
}

#[test]
fn the_syringe_stalls_at_the_end_of_travel() {
    let mut cfg = quiet();
    cfg.syringe.fill_ml = 0.3;
    let mut plant = Plant::new(cfg).unwrap();
    plant.set_pump_drive(PumpId::Syringe, drive(30.0, None));
    let mut alarm = None;
    for _ in 0..500 {
        alarm = alarm.or(plant.step(0.01).pump(PumpId::Syringe).alarm);
    }
    assert_eq!(alarm, Some(PumpAlarm::Stalled));
    assert!((plant.vessel_liquid_g() - 0.3 * 0.997).abs() < 1e-9);
}

#[test]
fn the_peristaltic_pulses_and_its_tube_delays_delivery() {
    let mut plant = Plant::new(quiet()).unwrap();
    plant.set_pump_drive(PumpId::Peristaltic, drive(60.0, None));
    plant.advance_to(10.0);
    let mut per_step = Vec::new();
    for _ in 0..100 {
        let before = plant.snapshot().bottle_ml;
        plant.step(0.01);
        per_step.push(before - plant.snapshot().bottle_ml);
    }
    let (lo, hi) = per_step.iter().fold((f64::MAX, 0.0_f64), |(l, h), x| (l.min(*x), h.max(*x)));
    let a = plant.config().peristaltic.pulsation;
    assert!(hi / lo > (1.0 + a) / (1.0 - a) * 0.8, "pulses: {lo}..{hi}");
    // Steady state: the tube holds rate × τ; after stopping, it drains with τ.
    let tau = plant.config().peristaltic.tubing_tau_s;
    let tube = plant.snapshot().tube_ml;
    assert!((tube - 1.0 * tau).abs() < 0.1 * tau, "{tube}");
    plant.set_pump_drive(PumpId::Peristaltic, PumpDrive::default());
    let t0 = plant.time_s();
    plant.advance_to(t0 + 1.0 + tau);
    let left = plant.snapshot().tube_ml;
    assert!(left > 0.0 && left < tube * 0.5, "{left} of {tube}");
}

#[test]
fn a_silent_stall_counts_but_moves_nothing() {
    let mut plant = Plant::new(quiet()).unwrap();
    plant.apply(PlantFault::PumpStall { pump: PumpId::Syringe, alarm: false });
    plant.set_pump_drive(PumpId::Syringe, drive(30.0, Some(1.0)));
    let mut counted = 0.0;
    for _ in 0..500 {
        let out = plant.step(0.01).pump(PumpId::Syringe);
        assert_eq!(out.alarm, None);
        counted += out.counted_ml;
    }
    assert!((counted - 1.0).abs() < 1e-9);
    assert_eq!(plant.vessel_liquid_g(), 0.0);
}

#[test]
fn the_same_seed_gives_the_same_trajectory() {
    let run = |seed| {
        let mut plant = Plant::new(PlantConfig { seed, ..PlantConfig::default() }).unwrap();
        plant.set_pump_drive(PumpId::Peristaltic, drive(50.0, None));
        plant.set_heater_output(40.0);
        (0..300)
            .map(|i| {
                plant.advance_to(f64::from(i) * 0.037);
                plant.balance_sample().grams
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

#[test]
fn a_hand_addition_lands_on_the_pan_and_the_balance_settles_after_settle_s() {
    let mut plant = Plant::new(quiet()).unwrap();
    let settle_s = plant.config().balance.settle_s;
    plant.set_pump_drive(PumpId::Syringe, drive(30.0, Some(1.0)));
    plant.advance_to(10.0);
    let before = plant.balance_sample();
    assert!(before.settled, "at rest after the pour");
    let t0 = plant.time_s();

    plant.add_by_hand("azathioprine", 1.4).unwrap();
    let landed = plant.balance_sample();
    assert!(!landed.settled, "the pan moves the moment the powder lands");
    assert_eq!(landed.grams, before.grams, "the new load is sensed from the next step");
    plant.step(0.01);
    assert!((plant.balance_sample().grams - (before.grams + 1.4)).abs() < 1e-9);
    plant.advance_to(t0 + settle_s - 0.02);
    assert!(!plant.balance_sample().settled);
    plant.advance_to(t0 + settle_s + 0.02);
    assert!(plant.balance_sample().settled);
    let vessel = plant.config().vessel.mass_g;
    // 60 g vessel + 0.997 g water + 1.4 g powder, shown to the 0.01 g readability.
    let BalanceDisplay::Grams(shown) = plant.balance_display() else { panic!("overload") };
    assert!((shown - 62.40).abs() < 1e-9, "{shown}");

    plant.add_by_hand("azathioprine", 0.1).unwrap();
    plant.add_by_hand("lactose", 0.25).unwrap();
    let solids = plant.vessel_solids();
    assert_eq!(solids.len(), 2);
    assert!((solids["azathioprine"] - 1.5).abs() < 1e-12 && solids["lactose"] == 0.25);
    assert!((plant.snapshot().vessel_solids_g - 1.75).abs() < 1e-12);
    // Solids are not liquid: the liquid quantities and the pumps' ledger are untouched.
    assert_eq!(plant.vessel_contents().keys().collect::<Vec<_>>(), ["water"]);
    let l = plant.ledger();
    assert!((l.by_hand_g - 1.75).abs() < 1e-12);
    assert!((plant.vessel_liquid_g() - l.into_vessel_g).abs() < 1e-12);
    plant.step(0.01);
    let contents = plant.vessel_liquid_g() + plant.vessel_solids_g();
    assert!((contents - (l.into_vessel_g + l.by_hand_g)).abs() < 1e-12);
    assert!((plant.balance_sample().grams - vessel - contents).abs() < 1e-9);
}

#[test]
fn a_powder_arrives_at_ambient_and_mixes_into_the_thermal_mass() {
    let cfg = quiet();
    let c_vessel = cfg.vessel.mass_g * cfg.vessel.specific_heat_j_gk;
    let ambient = cfg.ambient_c;
    let mut plant = Plant::new(cfg).unwrap();
    plant.set_heater_output(100.0);
    plant.advance_to(120.0);
    plant.set_heater_output(0.0);
    let hot = plant.vessel_c();
    assert!(hot > ambient + 10.0, "{hot}");
    plant.add_by_hand("azathioprine", 10.0).unwrap();
    let c_powder = 10.0 * hand::SOLID_SPECIFIC_HEAT_J_GK;
    let mixed = (c_vessel * hot + c_powder * ambient) / (c_vessel + c_powder);
    assert!((plant.vessel_c() - mixed).abs() < 1e-9, "{} vs {mixed}", plant.vessel_c());
}

#[test]
fn hand_additions_that_make_no_sense_are_refused_and_change_nothing() {
    let mut cfg = quiet();
    cfg.liquids.insert("syrup".into(), Liquid { density_g_ml: 1.3, specific_heat_j_gk: 3.0 });
    let mut plant = Plant::new(cfg).unwrap();
    plant.advance_to(1.0);
    let before = (plant.snapshot(), plant.ledger(), plant.balance_sample());
    let long = "x".repeat(65);
    let cases: [(&str, f64); 10] = [
        ("", 1.0),
        ("aza thioprine", 1.0),
        (&long, 1.0),
        ("water", 1.0),
        ("syrup", 1.0),
        ("azathioprine", f64::NAN),
        ("azathioprine", f64::INFINITY),
        ("azathioprine", 0.0),
        ("azathioprine", -1.4),
        ("azathioprine", 220.5),
    ];
    let got: Vec<String> = cases
        .iter()
        .map(|(material, grams)| match plant.add_by_hand(material, *grams) {
            Ok(()) => format!("{material} {grams}: added"),
            Err(e) => e.to_string(),
        })
        .collect();
    assert_eq!(
        got,
        [
            "material ``: use 1 to 64 letters, digits, '-' or '_'",
            "material `aza thioprine`: use 1 to 64 letters, digits, '-' or '_'",
            &format!("material `{long}`: use 1 to 64 letters, digits, '-' or '_'"),
            "`water` is a liquid: liquids arrive through the pumps, not by hand",
            "`syrup` is a liquid: liquids arrive through the pumps, not by hand",
            "NaN g of azathioprine: not a number of grams",
            "inf g of azathioprine: not a number of grams",
            "0 g of azathioprine: must be more than 0 g",
            "-1.4 g of azathioprine: must be more than 0 g",
            "220.5 g of azathioprine: more than the balance's capacity of 220 g",
        ]
    );
    assert_eq!((plant.snapshot(), plant.ledger(), plant.balance_sample()), before);
    assert!(plant.vessel_solids().is_empty());
    assert!(plant.vessel_solids_g() == 0.0 && plant.vessel_solids_g().is_sign_positive());
    // The same rule, before there is a plant: what scenarios and the rig check in advance.
    assert_eq!(
        plant.config().check_hand_addition("azathioprine", -1.0),
        Err(HandAdditionError::NotPositive { material: "azathioprine".into(), grams: -1.0 })
    );
    assert_eq!(plant.config().check_hand_addition("azathioprine", 220.0), Ok(()));
}
