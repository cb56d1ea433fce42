//! A wire-level Eurotherm 3216 served by tokio-modbus's `rtu-server` over the shared register
//! map. A PI controller computes the output from the working setpoint and the PV the
//! [`HeaterPlant`] reports, as a real 3216 does (it runs PID; the derivative adds nothing a
//! simulated vessel needs). Proportional action alone settles below the setpoint by the output
//! the losses need divided by the gain (a 40 °C setpoint in a 22 °C room settled about 1 °C
//! low), so the supervisor's "at temperature" was never reached above 30 °C; the integral
//! removes that offset.
//!
//! The integral advances only with explicit time ([`EurothermEmulator::control_for`], which the
//! rig calls with the plant's time step), so the emulator reads no clock and a fast simulated
//! plant integrates in plant time. Anti-windup: the integral stops growing while the output is
//! saturated in the direction the error pushes (conditional integration) and is clamped to
//! 0–100 %; it is cleared in manual and on a sensor break, so a return to automatic starts from
//! proportional action alone.
//!
//! It is served through [`crate::modbus`]'s relay, which injects the wire faults (garbage,
//! noise, a broken CRC); silence and slowness before it answers.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

use super::registers::{
    AUTO_MAN, EEPROM_BACKED, MAN_OP, PB, PV_IN, RM_SP, RM_SP_ENABLE, RNG_HI, RNG_LO, SP1, SP2,
    STATUS, TG_SP, TI, WKG_SP, WRK_OP, from_register, status, to_register,
};
use crate::emulator::FaultHandle;
use crate::heater::HeaterPlant;

/// The controller an emulator pretends to be.
#[derive(Debug, Clone, PartialEq)]
pub struct EurothermModel {
    /// Modbus slave address.
    pub address: u8,
    /// Display decimals of PV and setpoints.
    pub decimals: u8,
    /// Range low and high, °C: setpoints outside are refused (exception 3).
    pub range_c: (f64, f64),
    /// Proportional band, °C (output 100 % at this error).
    pub proportional_band_c: f64,
    /// Integral time, s (the integral adds the proportional output again in this time).
    pub integral_time_s: f64,
}

impl Default for EurothermModel {
    fn default() -> Self {
        // Ti well above the rig vessel's closed-loop time constant (about 20 s with this band
        // and the sensor's lag), so the integral cannot drive an overshoot the supervisor's
        // heater check (3 °C above target) would trip on.
        Self {
            address: 1,
            decimals: 1,
            range_c: (0.0, 200.0),
            proportional_band_c: 10.0,
            integral_time_s: 120.0,
        }
    }
}

#[derive(Debug)]
struct Registers {
    words: BTreeMap<u16, u16>,
    eeprom_writes: u64,
    /// Registers whose writes are answered with an exception (fault injection).
    refused: Vec<u16>,
    /// The integral term, percent of output.
    integral_pct: f64,
}

#[derive(Debug)]
struct Shared {
    plant: HeaterPlant,
    model: EurothermModel,
    registers: Mutex<Registers>,
    faults: FaultHandle,
}

/// A Eurotherm 3216 on the wire.
#[derive(Debug, Clone)]
pub struct EurothermEmulator {
    shared: Arc<Shared>,
}

impl EurothermEmulator {
    /// A controller measuring what `plant` reports.
    pub fn new(plant: HeaterPlant, model: EurothermModel) -> Self {
        let d = model.decimals;
        let scaled = |v: f64| to_register(v, d).unwrap_or(0);
        let words = BTreeMap::from([
            (PV_IN, scaled(plant.pv())),
            (TG_SP, scaled(25.0)),
            (MAN_OP, 0),
            (WRK_OP, 0),
            (WKG_SP, scaled(25.0)),
            (PB, scaled(model.proportional_band_c)),
            (TI, to_register(model.integral_time_s, 0).unwrap_or(0)),
            (RNG_LO, scaled(model.range_c.0)),
            (RNG_HI, scaled(model.range_c.1)),
            (SP1, scaled(25.0)),
            (SP2, scaled(25.0)),
            (RM_SP, scaled(25.0)),
            (STATUS, 0),
            (AUTO_MAN, 0),
            (RM_SP_ENABLE, 0),
        ]);
        let registers = Mutex::new(Registers {
            words,
            eeprom_writes: 0,
            refused: Vec::new(),
            integral_pct: 0.0,
        });
        Self { shared: Arc::new(Shared { plant, model, registers, faults: FaultHandle::new() }) }
    }

    /// The plant port.
    pub fn plant(&self) -> HeaterPlant {
        self.shared.plant.clone()
    }

    /// The fault switch.
    pub fn faults(&self) -> FaultHandle {
        self.shared.faults.clone()
    }

    /// How many times an EEPROM-backed setpoint (2, 24, 25) was written: a driver that keeps
    /// this at zero cannot wear the controller out.
    pub fn eeprom_writes(&self) -> u64 {
        self.shared.lock().eeprom_writes
    }

    /// Answers writes to `registers` with the exception "server device failure" from now on
    /// (an empty slice mends them): a write that fails between two others.
    pub fn refuse_writes(&self, registers: &[u16]) {
        self.shared.lock().refused = registers.to_vec();
    }

    /// Runs one pass of the control loop without advancing time: output and status follow the
    /// plant's PV now, the integral as it stands. Each Modbus request does this too.
    pub fn control(&self) {
        let mut regs = self.shared.lock();
        self.shared.update(&mut regs);
    }

    /// Runs the control loop over `dt_s` seconds of plant time: the integral advances, then
    /// output and status follow the PV. A plant that heats between requests calls this at its
    /// own tick; without it the controller acts proportionally only.
    pub fn control_for(&self, dt_s: f64) {
        let mut regs = self.shared.lock();
        self.shared.integrate(&mut regs, dt_s);
        self.shared.update(&mut regs);
    }

    /// The integral term now, percent of output (for tests and the rig's log).
    pub fn integral_pct(&self) -> f64 {
        self.shared.lock().integral_pct
    }

    /// Serves one host until it hangs up.
    pub async fn serve<T: AsyncRead + AsyncWrite + Unpin>(&self, io: T) -> io::Result<()> {
        crate::modbus::serve_rtu(io, self.shared.clone(), &self.shared.faults).await
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Registers> {
        self.registers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The working setpoint and whether the loop is in automatic with a sound sensor.
    fn working(&self, regs: &Registers) -> (u16, bool) {
        let get = |a| regs.words.get(&a).copied().unwrap_or(0);
        let remote = get(RM_SP_ENABLE) == 1;
        let wsp_word = if remote { get(RM_SP) } else { get(SP1) };
        let automatic = get(AUTO_MAN) == 0 && !self.plant.sensor_break();
        (wsp_word, automatic)
    }

    fn integrate(&self, regs: &mut Registers, dt_s: f64) {
        let (wsp_word, automatic) = self.working(regs);
        if !automatic || !dt_s.is_finite() || dt_s <= 0.0 {
            regs.integral_pct = 0.0;
            return;
        }
        let error = from_register(wsp_word, self.model.decimals) - self.plant.pv();
        let p = error / self.model.proportional_band_c * 100.0;
        let unclamped = p + regs.integral_pct;
        // Conditional integration: not further into a saturated output.
        let winding_up = (unclamped >= 100.0 && error > 0.0) || (unclamped <= 0.0 && error < 0.0);
        if !winding_up && self.model.integral_time_s > 0.0 {
            regs.integral_pct += p * dt_s / self.model.integral_time_s;
            regs.integral_pct = regs.integral_pct.clamp(0.0, 100.0);
        }
    }

    /// Brings the computed registers up to date with the plant.
    fn update(&self, regs: &mut Registers) {
        let d = self.model.decimals;
        let get = |regs: &Registers, a| regs.words.get(&a).copied().unwrap_or(0);
        let pv = self.plant.pv();
        let remote = get(regs, RM_SP_ENABLE) == 1;
        let wsp_word = if remote { get(regs, RM_SP) } else { get(regs, SP1) };
        let wsp = from_register(wsp_word, d);
        let manual = get(regs, AUTO_MAN) == 1;
        let broken = self.plant.sensor_break();
        if manual || broken {
            // Not controlling: a return to automatic starts from proportional action.
            regs.integral_pct = 0.0;
        }
        let output = if manual {
            from_register(get(regs, MAN_OP), 1)
        } else if broken {
            0.0
        } else {
            ((wsp - pv) / self.model.proportional_band_c * 100.0 + regs.integral_pct)
                .clamp(0.0, 100.0)
        };
        self.plant.set_output(output);
        let mut stat = 0;
        if manual {
            stat |= status::MANUAL;
        }
        if broken {
            stat |= status::SENSOR_BREAK;
        }
        let words = [
            (PV_IN, to_register(pv, d).unwrap_or(0)),
            (WKG_SP, wsp_word),
            (TG_SP, wsp_word),
            (WRK_OP, to_register(output, 1).unwrap_or(0)),
            (STATUS, stat),
        ];
        regs.words.extend(words);
    }

    fn read(&self, address: u16, count: u16) -> Result<Vec<u16>, ExceptionCode> {
        let mut regs = self.lock();
        self.update(&mut regs);
        (address..address.saturating_add(count))
            .map(|a| regs.words.get(&a).copied().ok_or(ExceptionCode::IllegalDataAddress))
            .collect()
    }

    fn write(&self, address: u16, word: u16) -> Result<(), ExceptionCode> {
        let mut regs = self.lock();
        if !regs.words.contains_key(&address) || [PV_IN, WKG_SP, WRK_OP, STATUS].contains(&address)
        {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let d = self.model.decimals;
        let is_setpoint = address == RM_SP || EEPROM_BACKED.contains(&address);
        let (lo, hi) = self.model.range_c;
        if is_setpoint && !(lo..=hi).contains(&from_register(word, d)) {
            return Err(ExceptionCode::IllegalDataValue);
        }
        if [AUTO_MAN, RM_SP_ENABLE].contains(&address) && word > 1 {
            return Err(ExceptionCode::IllegalDataValue);
        }
        if regs.refused.contains(&address) {
            return Err(ExceptionCode::ServerDeviceFailure);
        }
        if EEPROM_BACKED.contains(&address) {
            regs.eeprom_writes += 1;
        }
        if address == AUTO_MAN && word == 1 && regs.words.get(&AUTO_MAN) == Some(&0) {
            // Bumpless transfer: manual starts at the output automatic was giving.
            self.update(&mut regs);
            let working = regs.words.get(&WRK_OP).copied().unwrap_or(0);
            regs.words.insert(MAN_OP, working);
        }
        regs.words.insert(address, word);
        self.update(&mut regs);
        Ok(())
    }

    fn call(&self, request: SlaveRequest<'static>) -> Result<Option<Response>, ExceptionCode> {
        if request.slave != self.model.address {
            return Ok(None);
        }
        match request.request {
            Request::ReadHoldingRegisters(address, count) => {
                self.read(address, count).map(|words| Some(Response::ReadHoldingRegisters(words)))
            }
            Request::WriteSingleRegister(address, word) => self
                .write(address, word)
                .map(|()| Some(Response::WriteSingleRegister(address, word))),
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }
}

impl crate::modbus::Answer for Shared {
    fn answer(&self, request: SlaveRequest<'static>) -> Result<Option<Response>, ExceptionCode> {
        self.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vessel like the rig's (134 J/K, 0.4 W/K to a 22 °C room, 60 W heater) behind a 4 s
    /// sensor lag, stepped at 0.1 s with the controller in automatic at 40 °C.
    fn heat(model: EurothermModel, integrate: bool) -> (f64, f64) {
        let plant = HeaterPlant::new(22.0);
        let e = EurothermEmulator::new(plant.clone(), model);
        e.shared.write(RM_SP_ENABLE, 1).unwrap();
        e.shared.write(RM_SP, 400).unwrap();
        let (mut vessel, mut peak, dt) = (22.0_f64, 22.0_f64, 0.1);
        // An hour of plant time.
        for _ in 0..36_000 {
            if integrate {
                e.control_for(dt);
            } else {
                e.control();
            }
            let watts = plant.output() / 100.0 * 60.0;
            vessel += (watts - 0.4 * (vessel - 22.0)) / 134.0 * dt;
            let sensed = plant.pv() + (vessel - plant.pv()) * dt / 4.0;
            plant.set_pv(sensed);
            peak = peak.max(sensed);
        }
        (plant.pv(), peak)
    }

    #[test]
    fn integral_action_settles_at_the_setpoint_where_proportional_alone_droops() {
        let (p_only, _) = heat(EurothermModel::default(), false);
        assert!(p_only < 39.5, "proportional only settles low: {p_only:.2} °C");
        let (pi, peak) = heat(EurothermModel::default(), true);
        assert!((pi - 40.0).abs() < 0.05, "PI settles at the setpoint: {pi:.3} °C");
        assert!(peak < 41.0, "and overshoots by less than 1 °C: peak {peak:.2} °C");
    }

    #[test]
    fn the_integral_does_not_wind_up_while_the_output_is_saturated_or_in_manual() {
        let plant = HeaterPlant::new(22.0);
        let e = EurothermEmulator::new(plant.clone(), EurothermModel::default());
        e.shared.write(RM_SP_ENABLE, 1).unwrap();
        e.shared.write(RM_SP, 1500).unwrap();
        // 128 °C of error: the output is at 100 % on proportional action alone.
        for _ in 0..1000 {
            e.control_for(1.0);
        }
        assert_eq!(plant.output(), 100.0);
        assert_eq!(e.integral_pct(), 0.0, "no integral while saturated");
        e.shared.write(RM_SP, 400).unwrap();
        plant.set_pv(39.0);
        for _ in 0..100 {
            e.control_for(1.0);
        }
        assert!(e.integral_pct() > 0.0);
        e.shared.write(AUTO_MAN, 1).unwrap();
        assert_eq!(e.integral_pct(), 0.0, "manual clears it");
    }
}
