//! The plant's parameters, as a scenario's `[plant]` table gives them: every field has a
//! physically plausible default, so a scenario states only what it is about.
//!
//! # Format (TOML, all optional)
//! ```toml
//! [plant]
//! seed = 1               # noise sequence; the same seed gives the same run
//! step_s = 0.01          # integration step, plant seconds
//! ambient_c = 22.0
//! [plant.liquids.water]  # name → density and specific heat (water, ethanol, saline built in)
//! density_g_ml = 0.997
//! specific_heat_j_gk = 4.18
//! [plant.vessel]         # the vessel standing on the balance
//! mass_g = 60.0          # empty vessel (glass)
//! specific_heat_j_gk = 0.84
//! ua_w_k = 0.4           # loss to ambient
//! liquid = "water"       # what is in it at the start
//! initial_ml = 0.0
//! [plant.heater]
//! power_w = 60.0         # at 100 % output: the power limit
//! sensor_tau_s = 4.0     # first-order lag of the PV sensor
//! [plant.balance]
//! capacity_g = 220.0
//! readability_g = 0.01
//! noise_sd_g = 0.003     # σ at rest
//! flow_noise_sd_g = 0.02 # σ while liquid is falling in
//! settle_s = 1.0         # time at rest after a disturbance before the reading is stable
//! drift_g_per_h = 0.0
//! [plant.syringe]        # New Era syringe pump; the syringe is its own reservoir
//! liquid = "water"
//! syringe_ml = 10.0
//! fill_ml = 10.0
//! diameter_mm = 14.43
//! ramp_tau_s = 0.1       # start/stop: first-order approach to the commanded rate
//! [plant.peristaltic]    # Watson-Marlow pump drawing from a bottle
//! liquid = "water"
//! reservoir_ml = 500.0
//! ml_per_rev = 0.5
//! rollers = 3
//! pulsation = 0.3        # relative amplitude of the roller pulses
//! tubing_tau_s = 0.5     # compliance of the tube: first-order lag from pump to vessel
//! ramp_tau_s = 0.3
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

/// A liquid's physical properties.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Liquid {
    /// g/mL.
    pub density_g_ml: f64,
    /// J/(g·K).
    pub specific_heat_j_gk: f64,
}

/// Everything the plant needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlantConfig {
    /// Seed of the noise sequence.
    pub seed: u64,
    /// Integration step, plant seconds.
    pub step_s: f64,
    /// Ambient temperature, °C.
    pub ambient_c: f64,
    /// Liquids by name (merged over the built-in ones).
    pub liquids: BTreeMap<String, Liquid>,
    /// The vessel on the balance.
    pub vessel: VesselConfig,
    /// The heater under the vessel.
    pub heater: HeaterConfig,
    /// The balance.
    pub balance: BalanceConfig,
    /// The syringe pump.
    pub syringe: SyringeConfig,
    /// The peristaltic pump.
    pub peristaltic: PeristalticConfig,
}

/// The vessel.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VesselConfig {
    /// Empty mass, g.
    pub mass_g: f64,
    /// Of the vessel's material, J/(g·K).
    pub specific_heat_j_gk: f64,
    /// Heat loss coefficient to ambient, W/K.
    pub ua_w_k: f64,
    /// Liquid in it at the start.
    pub liquid: String,
    /// How much, mL.
    pub initial_ml: f64,
}

/// The heater.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeaterConfig {
    /// Power at 100 % output, W.
    pub power_w: f64,
    /// PV sensor time constant, s.
    pub sensor_tau_s: f64,
}

/// The balance's physics (zero, tare and display are the emulator's).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BalanceConfig {
    /// Above this gross load the balance shows overload, g.
    pub capacity_g: f64,
    /// Display step, g.
    pub readability_g: f64,
    /// Noise σ at rest, g.
    pub noise_sd_g: f64,
    /// Noise σ while disturbed by flow, g.
    pub flow_noise_sd_g: f64,
    /// Rest needed after a disturbance before the reading is stable, s.
    pub settle_s: f64,
    /// Slow drift, g/h.
    pub drift_g_per_h: f64,
}

/// The syringe pump.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyringeConfig {
    /// What the syringe holds.
    pub liquid: String,
    /// Its capacity, mL.
    pub syringe_ml: f64,
    /// Loaded at the start, mL.
    pub fill_ml: f64,
    /// Inner diameter, mm (for the pump's configuration).
    pub diameter_mm: f64,
    /// Highest rate the pump accepts, mL/min.
    pub max_rate_ml_min: f64,
    /// Start/stop time constant, s.
    pub ramp_tau_s: f64,
}

/// The peristaltic pump.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeristalticConfig {
    /// What the bottle holds.
    pub liquid: String,
    /// In the bottle at the start, mL.
    pub reservoir_ml: f64,
    /// mL per revolution of the pumphead.
    pub ml_per_rev: f64,
    /// Rollers on the pumphead (pulses per revolution).
    pub rollers: u32,
    /// Relative amplitude of the flow pulses.
    pub pulsation: f64,
    /// Tube compliance time constant, s.
    pub tubing_tau_s: f64,
    /// Highest speed, rpm.
    pub max_rpm: f64,
    /// Start/stop time constant, s.
    pub ramp_tau_s: f64,
}

impl Default for PlantConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            step_s: 0.01,
            ambient_c: 22.0,
            liquids: BTreeMap::new(),
            vessel: VesselConfig::default(),
            heater: HeaterConfig::default(),
            balance: BalanceConfig::default(),
            syringe: SyringeConfig::default(),
            peristaltic: PeristalticConfig::default(),
        }
    }
}

impl Default for VesselConfig {
    fn default() -> Self {
        Self {
            mass_g: 60.0,
            specific_heat_j_gk: 0.84,
            ua_w_k: 0.4,
            liquid: "water".into(),
            initial_ml: 0.0,
        }
    }
}

impl Default for HeaterConfig {
    fn default() -> Self {
        Self { power_w: 60.0, sensor_tau_s: 4.0 }
    }
}

impl Default for BalanceConfig {
    fn default() -> Self {
        Self {
            capacity_g: 220.0,
            readability_g: 0.01,
            noise_sd_g: 0.003,
            flow_noise_sd_g: 0.02,
            settle_s: 1.0,
            drift_g_per_h: 0.0,
        }
    }
}

impl BalanceConfig {
    /// An analytical balance (520 g × 0.1 mg, repeatability 0.2 mg), which is what the example
    /// recipes ask for: their hand-weighed actives have tolerances of a few milligrams.
    pub fn analytical() -> Self {
        Self { capacity_g: 520.0, readability_g: 0.0001, noise_sd_g: 0.0002, ..Self::default() }
    }
}

impl Default for SyringeConfig {
    fn default() -> Self {
        Self {
            liquid: "water".into(),
            syringe_ml: 10.0,
            fill_ml: 10.0,
            diameter_mm: 14.43,
            max_rate_ml_min: 30.0,
            ramp_tau_s: 0.1,
        }
    }
}

impl Default for PeristalticConfig {
    fn default() -> Self {
        Self {
            liquid: "water".into(),
            reservoir_ml: 500.0,
            ml_per_rev: 0.5,
            rollers: 3,
            pulsation: 0.3,
            tubing_tau_s: 0.5,
            max_rpm: 220.0,
            ramp_tau_s: 0.3,
        }
    }
}

/// The liquids every plant knows.
pub(crate) fn builtin_liquids() -> BTreeMap<String, Liquid> {
    BTreeMap::from([
        ("water".to_owned(), Liquid { density_g_ml: 0.997, specific_heat_j_gk: 4.18 }),
        ("ethanol".to_owned(), Liquid { density_g_ml: 0.789, specific_heat_j_gk: 2.44 }),
        ("saline".to_owned(), Liquid { density_g_ml: 1.005, specific_heat_j_gk: 4.0 }),
    ])
}

/// A plant configuration that does not make physical sense.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("plant.{field}: {message}")]
pub struct PlantConfigError {
    /// Dotted field path under `plant`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl PlantConfig {
    /// Checks the numbers; returns the liquids table with the built-ins merged in.
    pub(crate) fn validate(&self) -> Result<BTreeMap<String, Liquid>, PlantConfigError> {
        let err = |field: &str, message: &str| {
            Err(PlantConfigError { field: field.to_owned(), message: message.to_owned() })
        };
        let mut liquids = builtin_liquids();
        liquids.extend(self.liquids.clone());
        for (name, l) in &liquids {
            if !(l.density_g_ml > 0.0 && l.specific_heat_j_gk > 0.0) {
                return err(&format!("liquids.{name}"), "density and specific heat must be > 0");
            }
        }
        let positive = [
            ("step_s", self.step_s),
            ("vessel.mass_g", self.vessel.mass_g),
            ("vessel.specific_heat_j_gk", self.vessel.specific_heat_j_gk),
            ("vessel.ua_w_k", self.vessel.ua_w_k),
            ("heater.power_w", self.heater.power_w),
            ("heater.sensor_tau_s", self.heater.sensor_tau_s),
            ("balance.capacity_g", self.balance.capacity_g),
            ("balance.readability_g", self.balance.readability_g),
            ("balance.settle_s", self.balance.settle_s),
            ("syringe.syringe_ml", self.syringe.syringe_ml),
            ("syringe.diameter_mm", self.syringe.diameter_mm),
            ("syringe.max_rate_ml_min", self.syringe.max_rate_ml_min),
            ("syringe.ramp_tau_s", self.syringe.ramp_tau_s),
            ("peristaltic.ml_per_rev", self.peristaltic.ml_per_rev),
            ("peristaltic.tubing_tau_s", self.peristaltic.tubing_tau_s),
            ("peristaltic.max_rpm", self.peristaltic.max_rpm),
            ("peristaltic.ramp_tau_s", self.peristaltic.ramp_tau_s),
        ];
        for (field, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return err(field, "must be a positive number");
            }
        }
        let non_negative = [
            ("vessel.initial_ml", self.vessel.initial_ml),
            ("balance.noise_sd_g", self.balance.noise_sd_g),
            ("balance.flow_noise_sd_g", self.balance.flow_noise_sd_g),
            ("syringe.fill_ml", self.syringe.fill_ml),
            ("peristaltic.reservoir_ml", self.peristaltic.reservoir_ml),
        ];
        for (field, v) in non_negative {
            if !(v.is_finite() && v >= 0.0) {
                return err(field, "must be a number ≥ 0");
            }
        }
        if !self.ambient_c.is_finite() || !self.balance.drift_g_per_h.is_finite() {
            return err("ambient_c", "must be finite");
        }
        if self.syringe.fill_ml > self.syringe.syringe_ml {
            return err("syringe.fill_ml", "more than the syringe holds");
        }
        if !(0.0..1.0).contains(&self.peristaltic.pulsation) {
            return err("peristaltic.pulsation", "must be in [0, 1)");
        }
        if self.peristaltic.rollers == 0 {
            return err("peristaltic.rollers", "must be at least 1");
        }
        for (field, name) in [
            ("vessel.liquid", &self.vessel.liquid),
            ("syringe.liquid", &self.syringe.liquid),
            ("peristaltic.liquid", &self.peristaltic.liquid),
        ] {
            if !liquids.contains_key(name) {
                return err(field, &format!("unknown liquid `{name}`"));
            }
        }
        Ok(liquids)
    }
}
