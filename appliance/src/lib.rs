//! The supervisor of a Galen unit: `applianced` turns a verified, personalised recipe into a
//! dosed, heated and recorded batch, and `galenctl` drives it from a shell.
//!
//! The batch engine, the safety monitor, the record store and the D-Bus adapter live here.
//! Only this crate opens the record database, talks to the TPM and serves D-Bus; see
//! ARCHITECTURE.md for the invariants that keep it that way.

pub mod dbus;
pub mod engine;
pub mod export;
pub mod label;
pub mod records;
pub mod service;
pub mod stick;
pub mod supervisor;
pub mod tpm;
pub mod usb;
