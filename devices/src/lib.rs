//! Instruments of a compounding unit: balances, pumps, heaters and the emergency stop's
//! monitoring contact, spoken to over serial.
//!
//! One trait per device kind ([`Balance`], [`Pump`], [`Heater`], [`EmergencyStop`]); per
//! protocol, side by side, a pure codec (bytes in, frames out: no I/O, no clock), an async
//! driver and a wire-level emulator that `galen-hil` serves on a pty. Nothing here knows what a batch or a recipe is.
//!
//! | Kind | Protocol | Codec | Driver | Emulator |
//! |---|---|---|---|---|
//! | balance | Mettler Toledo MT-SICS | [`balance::mt_sics::codec`] | [`balance::mt_sics::MtSicsBalance`] | [`balance::mt_sics::MtSicsEmulator`] |
//! | balance | Sartorius SBI | [`balance::sbi::codec`] | [`balance::sbi::SbiBalance`] | [`balance::sbi::SbiEmulator`] |
//! | pump | New Era NE-1000 | [`pump::new_era::codec`] | [`pump::new_era::NewEraPump`] | [`pump::new_era::NewEraEmulator`] |
//! | pump | Watson-Marlow 520 | [`pump::wm520::codec`] | [`pump::wm520::Wm520Pump`] | [`pump::wm520::Wm520Emulator`] |
//! | heater | Eurotherm 3216, Modbus RTU | [`heater::eurotherm::registers`] | [`heater::eurotherm::EurothermHeater`] | [`heater::eurotherm::EurothermEmulator`] |
//! | emergency stop | Modbus RTU digital inputs (0x02) | [`estop::modbus_di::inputs`] | [`estop::modbus_di::ModbusDiEstop`] | [`estop::modbus_di::ModbusDiEmulator`] |
//!
//! Every driver call returns a [`DeviceResult`]: the outer `Result` says whether the link
//! worked ([`LinkError`]: timeout, garbled reply, port gone), the inner one whether the device
//! did what was asked ([`Refusal`]: an error reply, with its meaning). Callers treat them
//! differently: a refusal is an answer, a link error means we know nothing.
//!
//! The unit configuration file (which device on which port, serial settings, calibration,
//! limits) is parsed and validated in [`config`]. The `devices` binary is the service
//! engineer's tool over all of this, including `devices emulate`, which serves an emulator on a
//! fresh pty.

pub mod balance;
pub mod codec;
pub mod config;
pub mod emulator;
pub mod error;
pub mod estop;
pub mod fuzzing;
pub mod heater;
pub mod link;
mod modbus;
pub mod pty;
pub mod pump;
pub mod transcript;
pub mod units;

pub use balance::Balance;
pub use error::{DeviceResult, LinkError, Refusal, RefusalReason};
pub use estop::EmergencyStop;
pub use heater::Heater;
pub use pump::Pump;
