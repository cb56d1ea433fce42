//! Pharmacogenomic vocabulary: gene symbols and CPIC phenotype terms, normalised once.
//!
//! Spelling, case and the common abbreviations (PM, IM, NM, EM, RM, UM) are normalised the way
//! PharmCAT does; certainty modifiers ("Likely", "Possible") are kept, because a pharmacist must
//! see them. "Indeterminate" and "no call" are values of their own: nothing in this crate ever
//! turns them, or a missing result, into "Normal".

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// An HGNC gene symbol such as `TPMT` or `CYP2C19`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Gene(String);

/// Why a gene symbol was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an HGNC gene symbol (capital letters, digits and `-`, at most 16)")]
pub struct BadGene(pub String);

impl Gene {
    /// Checks the shape of a symbol; case is normalised to upper.
    pub fn new(symbol: &str) -> Result<Self, BadGene> {
        let s = symbol.trim().to_ascii_uppercase();
        let ok = !s.is_empty()
            && s.len() <= 16
            && s.as_bytes()[0].is_ascii_uppercase()
            && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-');
        if ok { Ok(Gene(s)) } else { Err(BadGene(symbol.to_owned())) }
    }

    /// The symbol.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Gene {
    /// Read back from a record: the shape is checked again.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Gene::new(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Gene {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A CPIC phenotype category, without certainty modifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Category {
    /// Ultrarapid Metabolizer.
    UltrarapidMetabolizer,
    /// Rapid Metabolizer.
    RapidMetabolizer,
    /// Normal Metabolizer (formerly "Extensive", EM).
    NormalMetabolizer,
    /// Intermediate Metabolizer.
    IntermediateMetabolizer,
    /// Poor Metabolizer.
    PoorMetabolizer,
    /// Increased Function (transporters).
    IncreasedFunction,
    /// Normal Function (transporters).
    NormalFunction,
    /// Decreased Function (transporters).
    DecreasedFunction,
    /// Poor Function (transporters).
    PoorFunction,
    /// The lab could not assign a phenotype.
    Indeterminate,
    /// The position was not called. Never read as reference.
    NoCall,
}

impl Category {
    /// Whether a rule may act on this result; indeterminate and no-call need a person.
    pub fn is_determinate(self) -> bool {
        !matches!(self, Category::Indeterminate | Category::NoCall)
    }

    /// The CPIC term.
    pub fn term(self) -> &'static str {
        match self {
            Category::UltrarapidMetabolizer => "Ultrarapid Metabolizer",
            Category::RapidMetabolizer => "Rapid Metabolizer",
            Category::NormalMetabolizer => "Normal Metabolizer",
            Category::IntermediateMetabolizer => "Intermediate Metabolizer",
            Category::PoorMetabolizer => "Poor Metabolizer",
            Category::IncreasedFunction => "Increased Function",
            Category::NormalFunction => "Normal Function",
            Category::DecreasedFunction => "Decreased Function",
            Category::PoorFunction => "Poor Function",
            Category::Indeterminate => "Indeterminate",
            Category::NoCall => "No Call",
        }
    }

    /// Parses a term or abbreviation without modifier, any case.
    pub fn parse(text: &str) -> Option<Category> {
        let norm: String = text
            .trim()
            .to_ascii_lowercase()
            .split(|c: char| c.is_whitespace() || c == '_' || c == '-')
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        // CPIC spells "Metabolizer"; British spelling and the old "Extensive" are accepted.
        let norm = norm.replace("metaboliser", "metabolizer");
        Some(match norm.as_str() {
            "um" | "ultrarapid metabolizer" | "ultra rapid metabolizer" => {
                Category::UltrarapidMetabolizer
            }
            "rm" | "rapid metabolizer" => Category::RapidMetabolizer,
            "nm" | "em" | "normal metabolizer" | "extensive metabolizer" => {
                Category::NormalMetabolizer
            }
            "im" | "intermediate metabolizer" => Category::IntermediateMetabolizer,
            "pm" | "poor metabolizer" => Category::PoorMetabolizer,
            "increased function" => Category::IncreasedFunction,
            "normal function" => Category::NormalFunction,
            "decreased function" => Category::DecreasedFunction,
            "poor function" => Category::PoorFunction,
            "indeterminate" | "n/a" | "unknown" => Category::Indeterminate,
            "no call" | "nocall" | "no result" | "not called" => Category::NoCall,
            _ => return None,
        })
    }
}

/// How sure the lab is of the phenotype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Certainty {
    /// No modifier.
    Definite,
    /// "Likely …".
    Likely,
    /// "Possible …".
    Possible,
}

/// A phenotype as reported: category plus certainty modifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Phenotype {
    /// The CPIC category.
    pub category: Category,
    /// The modifier the lab used.
    pub certainty: Certainty,
}

/// Why a phenotype term was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a CPIC phenotype term (e.g. \"Intermediate Metabolizer\", \"IM\", \"Likely Poor Metabolizer\")"
)]
pub struct BadPhenotype(pub String);

impl Phenotype {
    /// Parses "Likely Intermediate Metabolizer", "im", "POSSIBLE poor function", …
    pub fn parse(text: &str) -> Result<Self, BadPhenotype> {
        let t = text.trim();
        let lower = t.to_ascii_lowercase();
        let (certainty, rest) = if let Some(r) = lower.strip_prefix("likely ") {
            (Certainty::Likely, r)
        } else if let Some(r) = lower.strip_prefix("possible ") {
            (Certainty::Possible, r)
        } else {
            (Certainty::Definite, lower.as_str())
        };
        let category = Category::parse(rest).ok_or_else(|| BadPhenotype(text.to_owned()))?;
        if certainty != Certainty::Definite && !category.is_determinate() {
            return Err(BadPhenotype(text.to_owned()));
        }
        Ok(Phenotype { category, certainty })
    }
}

impl<'de> Deserialize<'de> for Phenotype {
    /// Read back from a record; a modifier on an indeterminate result is refused as in
    /// [`Phenotype::parse`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            category: Category,
            certainty: Certainty,
        }
        let Raw { category, certainty } = Raw::deserialize(d)?;
        if certainty != Certainty::Definite && !category.is_determinate() {
            return Err(serde::de::Error::custom(BadPhenotype(format!(
                "{certainty:?} {}",
                category.term()
            ))));
        }
        Ok(Phenotype { category, certainty })
    }
}

impl fmt::Display for Phenotype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.certainty {
            Certainty::Definite => f.write_str(self.category.term()),
            Certainty::Likely => write!(f, "Likely {}", self.category.term()),
            Certainty::Possible => write!(f, "Possible {}", self.category.term()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, shown: &str) {
        assert_eq!(Phenotype::parse(input).unwrap().to_string(), shown, "{input}");
    }

    #[test]
    fn terms_and_abbreviations_normalise() {
        check("PM", "Poor Metabolizer");
        check("im", "Intermediate Metabolizer");
        check("EM", "Normal Metabolizer");
        check("Extensive Metabolizer", "Normal Metabolizer");
        check("UM", "Ultrarapid Metabolizer");
        check("normal metaboliser", "Normal Metabolizer");
        check("Likely Intermediate Metabolizer", "Likely Intermediate Metabolizer");
        check("possible poor_metabolizer", "Possible Poor Metabolizer");
        check("Decreased Function", "Decreased Function");
        check("INDETERMINATE", "Indeterminate");
        check("no call", "No Call");
    }

    #[test]
    fn unknown_terms_and_impossible_modifiers_are_refused() {
        assert!(Phenotype::parse("Slow").is_err());
        assert!(Phenotype::parse("Likely Indeterminate").is_err());
        assert!(Phenotype::parse("").is_err());
    }

    #[test]
    fn gene_symbols_are_checked() {
        assert_eq!(Gene::new("cyp2c19").unwrap().as_str(), "CYP2C19");
        assert!(Gene::new("rs1142345").is_ok(), "shape only; the importer refuses rsIDs");
        assert!(Gene::new("TP MT").is_err());
        assert!(Gene::new("").is_err());
        assert!(Gene::new("1ABC").is_err());
    }
}
