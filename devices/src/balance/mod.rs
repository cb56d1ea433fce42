//! Balances: the [`Balance`] trait and its two dialects, MT-SICS and Sartorius SBI.
//!
//! The emulators ask a [`WeightSource`] for the gross mass on the pan; everything the balance
//! itself adds (zero offset, tare, readability, capacity, stability) is the emulator's.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::DeviceResult;
use crate::units::{Reading, Weight};

pub mod mt_sics;
pub mod sbi;

/// Whether a read waits for the balance's stability criterion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Only a settled value (MT-SICS `S`); the balance refuses if it does not settle in time.
    Stable,
    /// Whatever the balance shows now, stable or not (MT-SICS `SI`).
    Immediate,
}

/// What a balance says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// Model or type designation.
    pub model: String,
    /// Serial number.
    pub serial: String,
    /// Firmware version, where the protocol reports it.
    pub firmware: Option<String>,
    /// Maximum capacity, where the protocol reports it.
    pub capacity: Option<Weight>,
    /// Smallest displayed step, where it can be inferred.
    pub readability: Option<Weight>,
}

/// A laboratory balance.
///
/// Overload and underload are refusals ([`crate::RefusalReason::Overload`]), not readings:
/// the balance declines to give a number, and the safety monitor must treat them as such.
pub trait Balance: Send {
    /// One reading.
    fn read(&mut self, wait: Wait) -> impl Future<Output = DeviceResult<Reading>> + Send;
    /// Sets zero (stable).
    fn zero(&mut self) -> impl Future<Output = DeviceResult<()>> + Send;
    /// Tares with what is on the pan; returns the tare weight where the protocol reports it.
    fn tare(&mut self) -> impl Future<Output = DeviceResult<Option<Weight>>> + Send;
    /// Sets a known tare weight.
    fn preset_tare(&mut self, tare: Weight) -> impl Future<Output = DeviceResult<()>> + Send;
    /// Clears the tare.
    fn clear_tare(&mut self) -> impl Future<Output = DeviceResult<()>> + Send;
    /// Starts continuous readings; take them with [`Balance::next_streamed`].
    fn start_stream(&mut self) -> impl Future<Output = DeviceResult<()>> + Send;
    /// The next continuous reading.
    fn next_streamed(&mut self) -> impl Future<Output = DeviceResult<Reading>> + Send;
    /// Ends continuous readings.
    fn stop_stream(&mut self) -> impl Future<Output = DeviceResult<()>> + Send;
    /// Model, serial number, capacity and readability.
    fn identify(&mut self) -> impl Future<Output = DeviceResult<Identity>> + Send;
}

/// What is physically on the pan, as an emulator sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PanSample {
    /// Gross mass in grams, before the balance's zero and tare.
    pub grams: f64,
    /// Whether the load is at rest (no pouring, no vibration).
    pub settled: bool,
}

/// The plant port of a balance emulator: `galen-hil` implements it over its vessel model.
pub trait WeightSource: Send + Sync + 'static {
    /// The load on the pan now.
    fn sample(&self) -> PanSample;
}

/// A weight source set by hand: for tests, the `devices emulate` command and dry runs.
#[derive(Debug, Clone)]
pub struct ManualWeight(Arc<Mutex<PanSample>>);

impl ManualWeight {
    /// A settled load of `grams`.
    pub fn new(grams: f64) -> Self {
        Self(Arc::new(Mutex::new(PanSample { grams, settled: true })))
    }

    /// Puts `grams` on the pan, settled or not.
    pub fn set(&self, grams: f64, settled: bool) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = PanSample { grams, settled };
    }
}

impl WeightSource for ManualWeight {
    fn sample(&self) -> PanSample {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The physics every balance emulator shares: zero, tare, readability, range and stability.
/// Pure; the emulators feed it samples.
#[derive(Debug, Clone)]
pub(crate) struct Scale {
    pub(crate) capacity_g: f64,
    pub(crate) readability_g: f64,
    pub(crate) zero_g: f64,
    pub(crate) tare_g: f64,
}

/// What the display shows for a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Display {
    Net { grams: f64, stable: bool },
    Over,
    Under,
}

impl Scale {
    pub(crate) fn new(capacity_g: f64, readability_g: f64) -> Self {
        Self { capacity_g, readability_g, zero_g: 0.0, tare_g: 0.0 }
    }

    /// Decimal places of the readability (0.0001 g → 4).
    pub(crate) fn decimals(&self) -> u8 {
        let mut d = 0u8;
        let mut step = self.readability_g;
        while step < 0.999_999 && d < 8 {
            step *= 10.0;
            d += 1;
        }
        d
    }

    fn round(&self, grams: f64) -> f64 {
        // `+ 0.0` turns a rounded -0.0 into 0.0, which the display shows unsigned.
        (grams / self.readability_g).round() * self.readability_g + 0.0
    }

    /// The load above the zero point: what range checks apply to.
    fn above_zero(&self, sample: PanSample) -> f64 {
        sample.grams - self.zero_g
    }

    pub(crate) fn display(&self, sample: PanSample) -> Display {
        let above = self.above_zero(sample);
        // Emulator choice: underload below -5 % of capacity from zero (the manuals leave it
        // to the model).
        if above > self.capacity_g {
            Display::Over
        } else if above < -0.05 * self.capacity_g {
            Display::Under
        } else {
            Display::Net { grams: self.round(above - self.tare_g), stable: sample.settled }
        }
    }

    /// Sets zero if within ±2 % of capacity of the power-on zero (a typical zeroing range).
    pub(crate) fn zero(&mut self, sample: PanSample) -> Result<(), Display> {
        if sample.grams > 0.02 * self.capacity_g {
            return Err(Display::Over);
        }
        if sample.grams < -0.02 * self.capacity_g {
            return Err(Display::Under);
        }
        self.zero_g = sample.grams;
        self.tare_g = 0.0;
        Ok(())
    }

    /// Tares the present load; returns the tare in grams.
    pub(crate) fn tare(&mut self, sample: PanSample) -> Result<f64, Display> {
        match self.display(sample) {
            Display::Net { .. } => {
                let above = self.above_zero(sample);
                if above < 0.0 {
                    return Err(Display::Under);
                }
                self.tare_g = self.round(above);
                Ok(self.tare_g)
            }
            other => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(grams: f64) -> PanSample {
        PanSample { grams, settled: true }
    }

    #[test]
    fn the_scale_rounds_to_readability_and_applies_zero_and_tare() {
        let mut scale = Scale::new(220.0, 0.0001);
        assert_eq!(scale.decimals(), 4);
        scale.zero(at(0.5)).unwrap();
        assert_eq!(scale.tare(at(10.50004)), Ok(10.0));
        match scale.display(at(13.0)) {
            Display::Net { grams, stable } => {
                assert!((grams - 2.5).abs() < 1e-9, "{grams}");
                assert!(stable);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(scale.display(at(221.0)), Display::Over);
        assert_eq!(scale.display(at(-20.0)), Display::Under);
        assert_eq!(scale.zero(at(50.0)), Err(Display::Over));
    }
}
