//! Emergency stops: the [`EmergencyStop`] trait, and a Modbus RTU digital-input module that
//! reads the E-stop's monitoring contact, plus the [`EstopPlant`] port through which a rig
//! presses and releases the button of the emulator.
//!
//! On a real unit the E-stop is hardwired: pressing it cuts the actuators' power by itself,
//! whatever software does. The supervisor only monitors an auxiliary contact of the button so
//! that it knows (stops commanding, holds the batch, records it) and never resumes on its own.
//! So this device is read-only: there is nothing to command.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::DeviceResult;

pub mod modbus_di;

/// What the monitoring contact says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EstopState {
    /// The button is out: the actuator circuit may be powered.
    Released,
    /// The button is in, or the monitoring circuit is open (a broken wire reads as pressed:
    /// the contact is normally closed so that a fault is never taken for "released").
    Pressed,
}

/// An emergency-stop input.
pub trait EmergencyStop: Send {
    /// Reads the button's monitoring contact.
    fn state(&mut self) -> impl Future<Output = DeviceResult<EstopState>> + Send;
}

/// The physical button of an emulated E-stop: a rig or test presses and releases it.
#[derive(Debug, Clone, Default)]
pub struct EstopPlant(Arc<AtomicBool>);

impl EstopPlant {
    /// A released button.
    pub fn new() -> Self {
        Self::default()
    }

    /// Presses (`true`) or releases (`false`) the button.
    pub fn set_pressed(&self, pressed: bool) {
        self.0.store(pressed, Ordering::SeqCst);
    }

    /// Whether the button is pressed.
    pub fn pressed(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
