//! The batch-record format shared by `applianced`, which writes records, and `galen-verify`,
//! which checks an export anywhere.
//!
//! Everything here is pure: bytes and values in, verdicts out. It reads no clock and opens no
//! database; the one place that reads files is [`bundle::read_dir`], used by the verifier.
//!
//! - [`entry`]: what one record entry is and its canonical bytes.
//! - [`chain`]: the hash chain over entries, and finding the first bad one.
//! - [`checkpoint`]: the statement a TPM signs, and the TPM attestation around it.
//! - [`bundle`]: the export bundle an inspector receives, and its verification.

pub mod bundle;
pub mod chain;
pub mod checkpoint;
pub mod entry;
pub mod hex;
pub mod signature;
pub mod time;

pub use chain::{ChainError, GENESIS, Hash};
pub use entry::{Entry, EntryBody, EntryKind};
pub use time::UtcMillis;
