//! Mettler Toledo MT-SICS: [`codec`], the async [`MtSicsBalance`] driver and the wire-level
//! [`MtSicsEmulator`], side by side; the emulator speaks through the same codec.

pub mod codec;
mod driver;
mod emulator;

pub use driver::{MtSicsBalance, MtSicsOptions};
pub use emulator::{MtSicsEmulator, MtSicsModel, StreamCancel};
