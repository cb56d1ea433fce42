//! Watson-Marlow 520 peristaltic pump: [`codec`], the async [`Wm520Pump`] driver and the
//! wire-level [`Wm520Emulator`], side by side; the emulator speaks through the same codec.

pub mod codec;
mod driver;
mod emulator;

pub use driver::{Wm520Options, Wm520Pump};
pub use emulator::{Wm520Emulator, Wm520Model};
