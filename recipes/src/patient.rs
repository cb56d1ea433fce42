//! The patient inputs a personalisation rule reads, each with where it came from.
//!
//! Inputs are declared, typed and sourced: a weight typed in by a pharmacist and a phenotype
//! imported from a lab file carry different provenance, and both go into the record. A gene with
//! no entry here is *missing*, which the rules treat as a refusal, never as normal.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::pgx::{Gene, Phenotype};
use crate::quantity::{BodyWeight, Fixed};

/// Everything the rule may read about one patient.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Patient {
    /// Hospital patient identifier (as on the prescription and the label).
    pub id: PatientId,
    /// Body weight.
    pub weight: Option<Sourced<BodyWeight>>,
    /// Age in whole years.
    pub age_years: Option<Sourced<u16>>,
    /// Pharmacogenomic results by gene.
    pub genes: BTreeMap<Gene, Sourced<GeneResult>>,
}

/// A patient identifier: 1–64 printable characters without spaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PatientId(String);

/// Why a patient identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a patient ID is 1–64 printable characters without spaces")]
pub struct BadPatientId;

impl PatientId {
    /// Checks the shape.
    pub fn new(s: &str) -> Result<Self, BadPatientId> {
        let ok = !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_graphic());
        if ok { Ok(PatientId(s.to_owned())) } else { Err(BadPatientId) }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PatientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A lab's result for one gene. Either part may be absent, as in PharmCAT outside calls.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeneResult {
    /// Diplotype or single allele call, as reported.
    pub diplotype: Option<String>,
    /// Phenotype, normalised.
    pub phenotype: Option<Phenotype>,
    /// Activity score, if reported.
    pub activity_score: Option<Fixed>,
}

/// A value and its provenance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// Where it came from.
    pub source: Source,
}

/// Where an input came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Source {
    /// Typed in on the touchscreen.
    Entered {
        /// User ID of who entered it.
        by: String,
        /// User ID of the second person who verified it, if anyone did yet.
        verified_by: Option<String>,
    },
    /// Imported from a lab file.
    LabFile {
        /// File name as found on the stick or in the lab system.
        file_name: String,
        /// SHA-256 of the file's bytes, lowercase hex.
        sha256: String,
        /// Line of the file that gave this value.
        line: usize,
        /// User ID of who imported it.
        imported_by: String,
        /// User ID of the second person who verified it, if anyone did yet.
        verified_by: Option<String>,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verified = |v: &Option<String>| match v {
            Some(v) => format!(", verified by {v}"),
            None => ", not yet verified".to_owned(),
        };
        match self {
            Source::Entered { by, verified_by } => {
                write!(f, "entered by {by}{}", verified(verified_by))
            }
            Source::LabFile { file_name, sha256, line, imported_by, verified_by } => write!(
                f,
                "lab file {file_name} line {line} (SHA-256 {}…), imported by {imported_by}{}",
                sha256.get(..12).unwrap_or(sha256),
                verified(verified_by)
            ),
        }
    }
}
