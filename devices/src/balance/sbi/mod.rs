//! Sartorius SBI: [`codec`], the async [`SbiBalance`] driver and the wire-level
//! [`SbiEmulator`], side by side; the emulator speaks through the same codec.

pub mod codec;
mod driver;
mod emulator;

pub use driver::{SbiBalance, SbiOptions};
pub use emulator::{SbiEmulator, SbiModel};
