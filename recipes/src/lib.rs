//! Compounding recipes: the ISA-88 model, its TOML authoring format, patient personalisation
//! and the signed (TUF) packages the manufacturer publishes.
//!
//! Evaluating a recipe for a patient is a pure function. Only the binary and the `tuf` module
//! (publishing, intake and the HTTPS transport) do I/O.
//!
//! The supervisor's entry points:
//! - [`authoring::parse`] turns recipe text into a validated [`model::Recipe`];
//! - [`pharmcat::import`] reads a lab's outside-call file into a [`pharmcat::LabResult`];
//! - [`personalise::evaluate`] turns a recipe and a [`patient::Patient`] into process
//!   parameters with an explanation, or a refusal with one;
//! - [`tuf::intake::Intake`] verifies and installs recipes from a USB directory or over HTTPS.
#![forbid(unsafe_code)]

pub mod authoring;
pub mod model;
pub mod patient;
pub mod personalise;
pub mod pgx;
pub mod pharmcat;
pub mod quantity;
pub mod tuf;
