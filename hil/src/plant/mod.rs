//! The physics of a compounding unit, pure: reservoirs, two pumps, a vessel on a balance and a
//! heater under it, stepped with an explicit time. No clock, no I/O, no system entropy: the
//! same configuration, inputs and seed give the same trajectory.
//!
//! The rig reads the emulators' plant ports into the inputs ([`Plant::set_pump_drive`],
//! [`Plant::set_heater_output`]), calls [`Plant::advance_to`], and writes the outputs back
//! ([`StepReport`], [`Plant::balance_sample`], [`Plant::sensor_c`]).
//!
//! Models, each deliberately first-order:
//! - *Pumps* approach the commanded rate with a time constant (start/stop dynamics). A run
//!   with a target volume stops exactly at the target, as a stepper pump does; an explicit stop
//!   coasts down. The pump's own counter counts what the motor turned, not what arrived.
//! - *Syringe*: its barrel is its reservoir; at the end of travel the motor stalls and the pump
//!   raises its stall alarm.
//! - *Peristaltic*: flow pulses with the rollers (`1 + a·sin φ`, φ advancing `rollers` cycles
//!   per revolution) and passes through the tube's compliance, a first-order store between the
//!   bottle and the vessel. Mass is conserved: bottle out = vessel in + held in the tube.
//! - *Heating*: one lumped thermal mass (vessel + contents, Σ m·c), power `output · P_max`,
//!   loss `UA·(T − T_ambient)`, integrated exactly over each step. Added liquid arrives at
//!   ambient and mixes. The PV sensor follows the vessel with its own time constant.
//! - *Hand additions* ([`Plant::add_by_hand`], module [`hand`]): a solid lands on the pan at
//!   once, at ambient, and disturbs the balance like a pour.
//! - *Balance*: gross load plus drift plus Gaussian noise (larger while liquid falls in); the
//!   load counts as settled once `settle_s` has passed without inflow. Readability, capacity,
//!   zero and tare are applied by the balance emulator; [`Plant::balance_display`] applies the
//!   same readability and capacity for tests of the plant alone.

pub mod condition;
pub mod config;
pub mod hand;

use std::collections::BTreeMap;
use std::f64::consts::TAU;

use galen_devices::balance::PanSample;
use galen_devices::pump::PumpAlarm;

pub use condition::{Comparison, Condition, ConditionError, Quantity};
pub use config::{Liquid, PlantConfig, PlantConfigError};
pub use hand::HandAdditionError;

use crate::rng::Rng;

/// Which pump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PumpId {
    /// The New Era syringe pump.
    Syringe,
    /// The Watson-Marlow peristaltic pump.
    Peristaltic,
}

impl PumpId {
    /// Both pumps, in a fixed order.
    pub const ALL: [Self; 2] = [Self::Syringe, Self::Peristaltic];

    fn index(self) -> usize {
        match self {
            Self::Syringe => 0,
            Self::Peristaltic => 1,
        }
    }
}

/// What a pump's controller tells its motor (read from the emulator's plant port).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PumpDrive {
    /// Motor commanded to turn.
    pub running: bool,
    /// Towards the vessel (else back into the reservoir).
    pub forward: bool,
    /// mL/min.
    pub rate_ml_min: f64,
    /// Volume still to go in this run, if it has a target.
    pub remaining_ml: Option<f64>,
}

/// One pump's outputs over a step.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PumpOutput {
    /// Volume the motor turned through while commanded (the pump's counter), mL.
    pub counted_ml: f64,
    /// An alarm the pump raises (it then stops).
    pub alarm: Option<PumpAlarm>,
}

/// What the rig writes back to the emulators after a step.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepReport {
    /// Per pump, indexed like [`PumpId::ALL`].
    pub pumps: [PumpOutput; 2],
}

impl StepReport {
    fn absorb(&mut self, other: Self) {
        for (a, b) in self.pumps.iter_mut().zip(other.pumps) {
            a.counted_ml += b.counted_ml;
            a.alarm = a.alarm.or(b.alarm);
        }
    }

    /// The output of `pump`.
    pub fn pump(&self, pump: PumpId) -> PumpOutput {
        self.pumps[pump.index()]
    }
}

/// A physical fault (wire faults are the emulators').
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PlantFault {
    /// The pump runs but moves nothing; with `alarm`, it detects the stall and stops.
    PumpStall {
        /// Which pump.
        pump: PumpId,
        /// Whether the pump notices (raises its stall alarm).
        alarm: bool,
    },
    /// The stall is cleared.
    PumpFree(PumpId),
    /// The balance drifts by this much more, g/min.
    BalanceDrift(f64),
    /// The balance reading freezes where it is (or thaws).
    BalanceFrozen(bool),
    /// The heater's switch welds: full power whatever the controller says (or mends).
    HeaterStuckOn(bool),
    /// The PV sensor breaks (or is mended).
    SensorBreak(bool),
    /// The room's temperature jumps to this, °C.
    AmbientStep(f64),
}

/// What a balance shows for the plant's load, with readability and capacity applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BalanceDisplay {
    /// Gross grams, rounded to the readability.
    Grams(f64),
    /// Above capacity.
    Overload,
}

/// The observable state at one instant, for conditions, logs and expectations.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Plant time, s.
    pub t_s: f64,
    /// Liquid in the vessel, g.
    pub vessel_liquid_g: f64,
    /// Liquid in the vessel, mL.
    pub vessel_liquid_ml: f64,
    /// Solids added by hand, g.
    pub vessel_solids_g: f64,
    /// Vessel and contents temperature, °C.
    pub vessel_temp_c: f64,
    /// What the heater's sensor reads, °C.
    pub sensor_c: f64,
    /// What the balance senses (gross, with drift and noise), g.
    pub balance_g: f64,
    /// Room temperature, °C.
    pub ambient_c: f64,
    /// Liquid left in the syringe, mL.
    pub syringe_ml: f64,
    /// Liquid left in the bottle, mL.
    pub bottle_ml: f64,
    /// Liquid held in the peristaltic tube, mL.
    pub tube_ml: f64,
    /// Heating power now, W.
    pub heater_w: f64,
}

#[derive(Debug, Clone)]
struct Pump {
    drive: PumpDrive,
    rate_ml_min: f64,
    ramp_tau_s: f64,
    /// The run's target was reached; the motor stops dead instead of coasting.
    at_target: bool,
    stall: Option<bool>,
    liquid: usize,
    reservoir_ml: f64,
}

#[derive(Debug, Clone)]
struct Liquids {
    names: Vec<String>,
    props: Vec<Liquid>,
}

/// The simulated unit's physics.
#[derive(Debug, Clone)]
pub struct Plant {
    cfg: PlantConfig,
    liquids: Liquids,
    rng: Rng,
    t_s: f64,
    /// Steps taken on the fixed grid; `advance_to` counts in steps so that rounding in
    /// `t_s` never drops or adds one.
    steps: u64,
    ambient_c: f64,
    pumps: [Pump; 2],
    pulse_phase: f64,
    tube_ml: f64,
    /// mL per liquid, indexed like `liquids`.
    vessel_ml: Vec<f64>,
    /// g per solid added by hand, by name.
    solids_g: BTreeMap<String, f64>,
    vessel_c: f64,
    sensor_c: f64,
    heater_output_pct: f64,
    heater_stuck_on: bool,
    sensor_break: bool,
    last_disturbed_s: f64,
    drift_g: f64,
    extra_drift_g_per_min: f64,
    frozen: bool,
    sample: PanSample,
    /// Liquid that left each reservoir, g, that entered or left the vessel, and solids added.
    ledger: Ledger,
}

/// Where the mass has gone, in grams, for the conservation check: the pumps' liquid
/// (`out_of_reservoirs_g = into_vessel_g + in_tube_g`) and what came by hand, so that the
/// vessel's contents weigh `into_vessel_g + by_hand_g`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Ledger {
    /// Net grams out of the reservoirs (syringe and bottle).
    pub out_of_reservoirs_g: f64,
    /// Net grams of liquid into the vessel through the pumps.
    pub into_vessel_g: f64,
    /// Grams in the tube now.
    pub in_tube_g: f64,
    /// Grams of solids added to the vessel by hand.
    pub by_hand_g: f64,
}

impl Plant {
    /// A plant at rest at ambient temperature.
    pub fn new(cfg: PlantConfig) -> Result<Self, PlantConfigError> {
        let table = cfg.validate()?;
        let names: Vec<String> = table.keys().cloned().collect();
        let props: Vec<Liquid> = table.values().copied().collect();
        let index = |name: &str| names.iter().position(|n| n == name).unwrap_or(0);
        let mut vessel_ml = vec![0.0; names.len()];
        vessel_ml[index(&cfg.vessel.liquid)] = cfg.vessel.initial_ml;
        let pump = |liquid: &str, reservoir_ml: f64, ramp_tau_s: f64| Pump {
            drive: PumpDrive::default(),
            rate_ml_min: 0.0,
            ramp_tau_s,
            at_target: false,
            stall: None,
            liquid: index(liquid),
            reservoir_ml,
        };
        let pumps = [
            pump(&cfg.syringe.liquid, cfg.syringe.fill_ml, cfg.syringe.ramp_tau_s),
            pump(&cfg.peristaltic.liquid, cfg.peristaltic.reservoir_ml, cfg.peristaltic.ramp_tau_s),
        ];
        let mut plant = Self {
            liquids: Liquids { names, props },
            rng: Rng::new(cfg.seed),
            t_s: 0.0,
            steps: 0,
            ambient_c: cfg.ambient_c,
            pumps,
            pulse_phase: 0.0,
            tube_ml: 0.0,
            vessel_ml,
            solids_g: BTreeMap::new(),
            vessel_c: cfg.ambient_c,
            sensor_c: cfg.ambient_c,
            heater_output_pct: 0.0,
            heater_stuck_on: false,
            sensor_break: false,
            last_disturbed_s: f64::NEG_INFINITY,
            drift_g: 0.0,
            extra_drift_g_per_min: 0.0,
            frozen: false,
            sample: PanSample { grams: 0.0, settled: true },
            ledger: Ledger::default(),
            cfg,
        };
        plant.sample = PanSample { grams: plant.gross_g(), settled: true };
        Ok(plant)
    }

    /// The configuration.
    pub fn config(&self) -> &PlantConfig {
        &self.cfg
    }

    /// Plant time, s.
    pub fn time_s(&self) -> f64 {
        self.t_s
    }

    /// Sets what a pump's controller commands.
    pub fn set_pump_drive(&mut self, pump: PumpId, drive: PumpDrive) {
        let p = &mut self.pumps[pump.index()];
        if drive.running && !p.drive.running {
            p.at_target = false;
        }
        p.drive = drive;
    }

    /// Sets the heater controller's output, percent (clamped to 0–100).
    pub fn set_heater_output(&mut self, pct: f64) {
        self.heater_output_pct = if pct.is_finite() { pct.clamp(0.0, 100.0) } else { 0.0 };
    }

    /// Applies a physical fault.
    pub fn apply(&mut self, fault: PlantFault) {
        match fault {
            PlantFault::PumpStall { pump, alarm } => self.pumps[pump.index()].stall = Some(alarm),
            PlantFault::PumpFree(pump) => self.pumps[pump.index()].stall = None,
            PlantFault::BalanceDrift(g_per_min) => self.extra_drift_g_per_min += g_per_min,
            PlantFault::BalanceFrozen(frozen) => self.frozen = frozen,
            PlantFault::HeaterStuckOn(on) => self.heater_stuck_on = on,
            PlantFault::SensorBreak(broken) => self.sensor_break = broken,
            PlantFault::AmbientStep(c) => self.ambient_c = c,
        }
    }

    /// Steps on the fixed grid up to plant time `t_s` (no-op if already there).
    pub fn advance_to(&mut self, t_s: f64) -> StepReport {
        let mut report = StepReport::default();
        let h = self.cfg.step_s;
        // Plant times are far below 2^53 steps; the cast cannot truncate meaningfully.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let target = (t_s / h + 1e-6).floor().max(0.0) as u64;
        while self.steps < target {
            report.absorb(self.step(h));
        }
        report
    }

    /// One step of `dt_s` plant seconds.
    pub fn step(&mut self, dt_s: f64) -> StepReport {
        let mut report = StepReport::default();
        let mut inflow = [0.0; 2]; // per pump: mL into the vessel (negative: out)
        for id in PumpId::ALL {
            let (out, moved) = self.step_pump(id, dt_s);
            report.pumps[id.index()] = out;
            inflow[id.index()] = moved;
        }
        // Mix what arrived (at ambient) into the lumped thermal mass.
        let c_before = self.heat_capacity_j_k();
        let mut added_c = 0.0;
        for id in PumpId::ALL {
            let ml = inflow[id.index()];
            let liquid = self.pumps[id.index()].liquid;
            let props = self.liquids.props[liquid];
            self.vessel_ml[liquid] = (self.vessel_ml[liquid] + ml).max(0.0);
            self.ledger.into_vessel_g += ml * props.density_g_ml;
            if ml > 0.0 {
                added_c += ml * props.density_g_ml * props.specific_heat_j_gk;
            }
        }
        if added_c > 0.0 {
            self.vessel_c =
                (c_before * self.vessel_c + added_c * self.ambient_c) / (c_before + added_c);
        }
        // A balance calls a load stable once it changes by less than its readability within
        // its settling time; slower trickles (the tube's exponential tail) do not disturb it.
        let threshold_ml_s = self.cfg.balance.readability_g / self.cfg.balance.settle_s;
        if inflow.iter().any(|ml| ml.abs() / dt_s > threshold_ml_s) {
            self.last_disturbed_s = self.t_s + dt_s;
        }
        self.step_heat(dt_s);
        self.steps += 1;
        self.t_s += dt_s;
        self.step_balance(dt_s);
        report
    }

    /// Returns the pump's counter output and the mL it moved into the vessel this step.
    fn step_pump(&mut self, id: PumpId, dt: f64) -> (PumpOutput, f64) {
        let tubing_tau = self.cfg.peristaltic.tubing_tau_s;
        let pulsation = self.cfg.peristaltic.pulsation;
        let pulses_per_ml =
            f64::from(self.cfg.peristaltic.rollers) / self.cfg.peristaltic.ml_per_rev;
        let density = self.liquids.props[self.pumps[id.index()].liquid].density_g_ml;
        let p = &mut self.pumps[id.index()];
        let mut out = PumpOutput::default();
        if p.drive.running && p.stall == Some(true) {
            // The pump senses the stall at once and stops; nothing moves.
            out.alarm = Some(PumpAlarm::Stalled);
            p.rate_ml_min = 0.0;
            return (out, self.drain_tube(id, dt, tubing_tau, density));
        }
        let target =
            if p.drive.running && !p.at_target { p.drive.rate_ml_min.max(0.0) } else { 0.0 };
        if p.at_target {
            p.rate_ml_min = 0.0;
        }
        p.rate_ml_min += (target - p.rate_ml_min) * (1.0 - (-dt / p.ramp_tau_s).exp());
        if target == 0.0 && p.rate_ml_min < 1e-3 {
            // A coasting motor stops; the exponential tail would otherwise trickle forever.
            p.rate_ml_min = 0.0;
        }
        let mut motor_ml = p.rate_ml_min / 60.0 * dt;
        if p.drive.running {
            if let Some(remaining) = p.drive.remaining_ml.as_mut() {
                if motor_ml >= *remaining {
                    motor_ml = remaining.max(0.0);
                    p.at_target = true;
                }
                *remaining -= motor_ml;
            }
            out.counted_ml = motor_ml;
        }
        if p.stall.is_some() {
            // Silent stall: the counter turns (open-loop steps), the liquid does not.
            return (out, self.drain_tube(id, dt, tubing_tau, density));
        }
        let mut flow_ml = motor_ml;
        if id == PumpId::Peristaltic && motor_ml > 0.0 {
            self.pulse_phase = (self.pulse_phase + TAU * pulses_per_ml * motor_ml) % TAU;
            flow_ml *= 1.0 + pulsation * self.pulse_phase.sin();
        }
        let p = &mut self.pumps[id.index()];
        let moved = if p.drive.forward {
            let take = flow_ml.min(p.reservoir_ml);
            p.reservoir_ml -= take;
            self.ledger.out_of_reservoirs_g += take * density;
            if id == PumpId::Syringe && take < flow_ml && p.drive.running {
                // End of travel: the plunger cannot go further, the motor stalls.
                out.alarm = Some(PumpAlarm::Stalled);
                p.rate_ml_min = 0.0;
            }
            match id {
                PumpId::Syringe => take,
                PumpId::Peristaltic => {
                    self.tube_ml += take;
                    self.drain_tube(id, dt, tubing_tau, density)
                }
            }
        } else {
            let room = match id {
                PumpId::Syringe => self.cfg.syringe.syringe_ml - p.reservoir_ml,
                PumpId::Peristaltic => f64::INFINITY,
            };
            let take = flow_ml.min(self.vessel_ml[p.liquid]).min(room).max(0.0);
            p.reservoir_ml += take;
            self.ledger.out_of_reservoirs_g -= take * density;
            let drained = if id == PumpId::Peristaltic {
                self.drain_tube(id, dt, tubing_tau, density)
            } else {
                0.0
            };
            drained - take
        };
        (out, moved)
    }

    /// Liquid the tube releases into the vessel this step (only the peristaltic has one).
    fn drain_tube(&mut self, id: PumpId, dt: f64, tau: f64, density: f64) -> f64 {
        if id != PumpId::Peristaltic {
            return 0.0;
        }
        let out = self.tube_ml * (1.0 - (-dt / tau).exp());
        // Below a nanolitre the tube is empty; the tail would otherwise disturb the balance
        // forever.
        let out = if self.tube_ml - out < 1e-9 { self.tube_ml } else { out };
        self.tube_ml -= out;
        self.ledger.in_tube_g = self.tube_ml * density;
        out
    }

    fn heat_capacity_j_k(&self) -> f64 {
        let vessel = self.cfg.vessel.mass_g * self.cfg.vessel.specific_heat_j_gk;
        let contents: f64 = self
            .vessel_ml
            .iter()
            .zip(&self.liquids.props)
            .map(|(ml, l)| ml * l.density_g_ml * l.specific_heat_j_gk)
            .sum();
        vessel + contents + self.solids_heat_capacity_j_k()
    }

    /// Heating power now, W.
    pub fn heater_w(&self) -> f64 {
        let pct = if self.heater_stuck_on { 100.0 } else { self.heater_output_pct };
        pct / 100.0 * self.cfg.heater.power_w
    }

    fn step_heat(&mut self, dt: f64) {
        let c = self.heat_capacity_j_k();
        let ua = self.cfg.vessel.ua_w_k;
        // Exact solution of C·dT/dt = P − UA·(T − Ta) with P constant over the step.
        let t_inf = self.ambient_c + self.heater_w() / ua;
        self.vessel_c = t_inf + (self.vessel_c - t_inf) * (-ua * dt / c).exp();
        let k = 1.0 - (-dt / self.cfg.heater.sensor_tau_s).exp();
        self.sensor_c += (self.vessel_c - self.sensor_c) * k;
    }

    fn gross_g(&self) -> f64 {
        self.cfg.vessel.mass_g + self.vessel_liquid_g() + self.vessel_solids_g()
    }

    fn step_balance(&mut self, dt: f64) {
        let b = &self.cfg.balance;
        self.drift_g += (b.drift_g_per_h / 3600.0 + self.extra_drift_g_per_min / 60.0) * dt;
        let settled = self.t_s - self.last_disturbed_s >= b.settle_s;
        let sd = if settled { b.noise_sd_g } else { b.flow_noise_sd_g };
        let noise = sd * self.rng.normal();
        if !self.frozen {
            self.sample = PanSample { grams: self.gross_g() + self.drift_g + noise, settled };
        }
    }

    /// What the balance senses now (gross; the emulator applies zero, tare and display).
    pub fn balance_sample(&self) -> PanSample {
        self.sample
    }

    /// The balance's display for the current sample, readability and capacity applied.
    pub fn balance_display(&self) -> BalanceDisplay {
        let b = &self.cfg.balance;
        if self.sample.grams > b.capacity_g {
            BalanceDisplay::Overload
        } else {
            BalanceDisplay::Grams((self.sample.grams / b.readability_g).round() * b.readability_g)
        }
    }

    /// The heater sensor's reading, °C.
    pub fn sensor_c(&self) -> f64 {
        self.sensor_c
    }

    /// Whether the sensor is broken.
    pub fn sensor_broken(&self) -> bool {
        self.sensor_break
    }

    /// The vessel's true temperature, °C.
    pub fn vessel_c(&self) -> f64 {
        self.vessel_c
    }

    /// Liquid in the vessel, g.
    pub fn vessel_liquid_g(&self) -> f64 {
        self.vessel_ml.iter().zip(&self.liquids.props).map(|(ml, l)| ml * l.density_g_ml).sum()
    }

    /// Liquid in the vessel by name, mL.
    pub fn vessel_contents(&self) -> BTreeMap<String, f64> {
        self.liquids
            .names
            .iter()
            .zip(&self.vessel_ml)
            .filter(|(_, ml)| **ml > 0.0)
            .map(|(n, ml)| (n.clone(), *ml))
            .collect()
    }

    /// The conservation ledger.
    pub fn ledger(&self) -> Ledger {
        self.ledger
    }

    /// The observable state now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            t_s: self.t_s,
            vessel_liquid_g: self.vessel_liquid_g(),
            vessel_liquid_ml: self.vessel_ml.iter().sum(),
            vessel_solids_g: self.vessel_solids_g(),
            vessel_temp_c: self.vessel_c,
            sensor_c: self.sensor_c,
            balance_g: self.sample.grams,
            ambient_c: self.ambient_c,
            syringe_ml: self.pumps[0].reservoir_ml,
            bottle_ml: self.pumps[1].reservoir_ml,
            tube_ml: self.tube_ml,
            heater_w: self.heater_w(),
        }
    }
}

#[cfg(test)]
mod tests;
