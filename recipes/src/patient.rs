//! The patient inputs a personalisation rule reads, each with where it came from.
//!
//! Inputs are declared, typed and sourced: a weight typed in by a pharmacist and a phenotype
//! imported from a lab file carry different provenance, and both go into the record. A gene with
//! no entry here is *missing*, which the rules treat as a refusal, never as normal.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::pgx::{Gene, Phenotype};
use crate::quantity::{BodyWeight, Fixed};

/// Everything the rule may read about one patient.
///
/// It deserializes from the JSON it serializes to (as recorded with a batch), every value
/// checked again on the way in, so a batch can be rebuilt from its record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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

impl<'de> Deserialize<'de> for PatientId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        PatientId::new(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for PatientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A lab's result for one gene. Either part may be absent, as in PharmCAT outside calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneResult {
    /// Diplotype or single allele call, as reported.
    pub diplotype: Option<String>,
    /// Phenotype, normalised.
    pub phenotype: Option<Phenotype>,
    /// Activity score, if reported.
    pub activity_score: Option<Fixed>,
}

/// A value and its provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// Where it came from.
    pub source: Source,
}

/// Where an input came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgx::{Category, Certainty};

    fn patient() -> Patient {
        let entered = Source::Entered { by: "ada".into(), verified_by: None };
        let result = |category, certainty| GeneResult {
            diplotype: Some("*1/*3A".into()),
            phenotype: Some(Phenotype { category, certainty }),
            activity_score: Some(Fixed::parse("1.5").unwrap()),
        };
        Patient {
            id: PatientId::new("P-0042").unwrap(),
            weight: Some(Sourced {
                value: BodyWeight::new(Fixed::parse("7.25").unwrap()).unwrap(),
                source: entered.clone(),
            }),
            age_years: Some(Sourced { value: 2, source: entered.clone() }),
            genes: BTreeMap::from([
                (
                    Gene::new("TPMT").unwrap(),
                    Sourced {
                        value: result(Category::IntermediateMetabolizer, Certainty::Likely),
                        source: Source::LabFile {
                            file_name: "lab.tsv".into(),
                            sha256: "ab".repeat(32),
                            line: 3,
                            imported_by: "ada".into(),
                            verified_by: Some("vic".into()),
                        },
                    },
                ),
                (
                    Gene::new("NUDT15").unwrap(),
                    Sourced {
                        value: result(Category::NoCall, Certainty::Definite),
                        source: entered,
                    },
                ),
            ]),
        }
    }

    #[test]
    fn a_patient_reads_back_from_its_record() {
        let recorded = serde_json::to_value(patient()).unwrap();
        let read: Patient = serde_json::from_value(recorded).unwrap();
        assert_eq!(read, patient());
    }

    #[track_caller]
    fn check_refused(pointer: &str, value: serde_json::Value, why: &str) {
        let mut recorded = serde_json::to_value(patient()).unwrap();
        *recorded.pointer_mut(pointer).unwrap() = value;
        let err = serde_json::from_value::<Patient>(recorded).unwrap_err().to_string();
        assert!(err.contains(why), "{pointer}: {err}");
    }

    #[test]
    fn a_record_that_does_not_check_out_is_refused_not_repaired() {
        check_refused("/weight/value", "900".into(), "outside 0–500 kg");
        check_refused("/weight/value", "7.1234567".into(), "more than 6 decimal places");
        check_refused("/weight/value", serde_json::json!(7.25), "invalid type");
        check_refused("/id", "P 42".into(), "a patient ID is");
        check_refused(
            "/genes/NUDT15/value/phenotype/certainty",
            "Possible".into(),
            "not a CPIC phenotype term",
        );
        check_refused("/genes/TPMT/source/kind", "typed".into(), "unknown variant");
        let mut recorded = serde_json::to_value(patient()).unwrap();
        recorded["genes"]["tpmt lower"] = recorded["genes"]["TPMT"].clone();
        let err = serde_json::from_value::<Patient>(recorded).unwrap_err().to_string();
        assert!(err.contains("HGNC gene symbol"), "{err}");
    }
}
