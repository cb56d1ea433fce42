//! Eurotherm 3216 (3200 series) over Modbus RTU: the [`registers`] map (pure), the async
//! [`EurothermHeater`] driver (tokio-modbus client) and the [`EurothermEmulator`] (tokio-modbus
//! `rtu-server`), side by side; both import the register map.

mod driver;
mod emulator;
pub mod registers;

pub use driver::{EurothermHeater, EurothermOptions};
pub use emulator::{EurothermEmulator, EurothermModel};
