//! A Modbus RTU digital-input module (function 0x02, Read Discrete Inputs) with the E-stop's
//! monitoring contact wired to one of its inputs: the pure [`inputs`] decoding, the async
//! [`ModbusDiEstop`] driver (tokio-modbus client) and the [`ModbusDiEmulator`] (tokio-modbus
//! `rtu-server`), side by side, as for the Eurotherm heater.
//!
//! Any module that serves function 0x02 will do (the 8- and 16-channel DIN-rail modules sold
//! for PLC I/O do); which input carries the contact, and whether it is normally closed, is the
//! unit file's to say, since it depends on the wiring, not the module.

mod driver;
mod emulator;
pub mod inputs;

pub use driver::{ModbusDiEstop, ModbusDiOptions};
pub use emulator::{ModbusDiEmulator, ModbusDiModel};
