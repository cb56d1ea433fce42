//! Heaters: the [`Heater`] trait and the Eurotherm 3216 temperature controller over Modbus RTU,
//! plus the [`HeaterPlant`] port through which a thermal model drives the emulator.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::error::DeviceResult;
use crate::units::{Celsius, Percent};

pub mod eurotherm;

/// A controller's status bits, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaterStatus {
    /// Alarms 1 to 4 active.
    pub alarms: [bool; 4],
    /// The temperature sensor is open or shorted.
    pub sensor_break: bool,
    /// Output at its limit without the PV responding within the loop-break time.
    pub loop_break: bool,
    /// In manual (output fixed), not controlling.
    pub manual: bool,
    /// PV more than 5 % of span outside the range.
    pub pv_over_range: bool,
    /// The remote (comms) setpoint failed.
    pub remote_setpoint_fail: bool,
    /// The raw status word, for the record.
    pub raw: u16,
}

/// A temperature controller driving a heater.
pub trait Heater: Send {
    /// The measured temperature.
    fn process_value(&mut self) -> impl Future<Output = DeviceResult<Celsius>> + Send;
    /// The setpoint the controller is working to now (after ramping).
    fn working_setpoint(&mut self) -> impl Future<Output = DeviceResult<Celsius>> + Send;
    /// Sets the target. Drivers must use a setpoint that tolerates frequent writes.
    fn set_setpoint(&mut self, target: Celsius) -> impl Future<Output = DeviceResult<()>> + Send;
    /// The controller's output.
    fn output(&mut self) -> impl Future<Output = DeviceResult<Percent>> + Send;
    /// Lets the controller control (automatic mode).
    fn enable(&mut self) -> impl Future<Output = DeviceResult<()>> + Send;
    /// Forces the output to zero.
    fn disable(&mut self) -> impl Future<Output = DeviceResult<()>> + Send;
    /// Alarm and fault bits.
    fn status(&mut self) -> impl Future<Output = DeviceResult<HeaterStatus>> + Send;
}

#[derive(Debug)]
struct PlantShared {
    pv_c: f64,
    output_pct: f64,
    sensor_break: bool,
}

/// The plant port of a heater emulator: the plant sets the measured temperature (and sensor
/// faults); the emulator publishes the output it computes.
#[derive(Debug, Clone)]
pub struct HeaterPlant(Arc<Mutex<PlantShared>>);

impl HeaterPlant {
    /// A plant at `pv_c`, output off.
    pub fn new(pv_c: f64) -> Self {
        Self(Arc::new(Mutex::new(PlantShared { pv_c, output_pct: 0.0, sensor_break: false })))
    }

    fn lock(&self) -> MutexGuard<'_, PlantShared> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The plant reports the measured temperature.
    pub fn set_pv(&self, celsius: f64) {
        self.lock().pv_c = celsius;
    }

    /// The measured temperature as last reported.
    pub fn pv(&self) -> f64 {
        self.lock().pv_c
    }

    /// Breaks (or mends) the sensor.
    pub fn set_sensor_break(&self, broken: bool) {
        self.lock().sensor_break = broken;
    }

    /// Whether the sensor is broken.
    pub fn sensor_break(&self) -> bool {
        self.lock().sensor_break
    }

    /// The controller's output, percent: what the plant heats with.
    pub fn output(&self) -> f64 {
        self.lock().output_pct
    }

    pub(crate) fn set_output(&self, pct: f64) {
        self.lock().output_pct = pct;
    }

    /// A crude first-order vessel for use without a plant: full output heats at `heat_c_per_s`,
    /// and the vessel loses `loss_per_s` of its excess over `ambient_c` each second.
    pub fn spawn_simple_thermal(
        &self,
        period: Duration,
        ambient_c: f64,
        heat_c_per_s: f64,
        loss_per_s: f64,
    ) -> tokio::task::JoinHandle<()> {
        let plant = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            loop {
                ticker.tick().await;
                let dt = period.as_secs_f64();
                let mut s = plant.lock();
                s.pv_c +=
                    (s.output_pct / 100.0 * heat_c_per_s - (s.pv_c - ambient_c) * loss_per_s) * dt;
            }
        })
    }
}
