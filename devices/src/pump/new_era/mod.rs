//! New Era NE-1000 syringe pump: [`codec`], the async [`NewEraPump`] driver and the wire-level
//! [`NewEraEmulator`], side by side; the emulator speaks through the same codec.

pub mod codec;
mod driver;
mod emulator;

pub use driver::{NewEraOptions, NewEraPump};
pub use emulator::{NewEraEmulator, NewEraModel};
