//! Compounding recipes: the ISA-88 model, its TOML authoring format, patient personalisation
//! and the signed (TUF) packages the manufacturer publishes.
//!
//! Evaluating a recipe for a patient is a pure function. Only the binary and the TUF transport
//! module do I/O.
#![forbid(unsafe_code)]
