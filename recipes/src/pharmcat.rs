//! Import of a lab result in PharmCAT's "outside call" format, with its SHA-256 as provenance.
//!
//! # Format
//! UTF-8 text, one gene per line, tab-separated, at most four fields: HGNC gene symbol
//! (required), diplotype or single allele call, phenotype, activity score. Any of the last three
//! may be empty (two tabs in a row). Lines starting with `#` and blank lines are ignored.
//! Phenotypes are normalised as PharmCAT does (`pgx::Phenotype::parse`); modifiers such as
//! "Likely" are kept. A gene may appear once.
//!
//! Direct-to-consumer raw genotype files (23andMe and similar: `# rsid chromosome position
//! genotype` headers, rsID rows) are refused: they are not a clinical source, and PharmCAT does
//! not accept them either.
//!
//! Parsing is pure: the caller reads the file (bounded by [`MAX_LAB_FILE_BYTES`]) and passes its
//! bytes here.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::patient::{GeneResult, Source, Sourced};
use crate::pgx::{Gene, Phenotype};
use crate::quantity::Fixed;

/// Largest lab file accepted. An outside-call file has one short line per gene.
pub const MAX_LAB_FILE_BYTES: usize = 64 * 1024;

/// One gene's call as imported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeneCall {
    /// Line number in the file.
    pub line: usize,
    /// Gene.
    pub gene: Gene,
    /// What the lab reported.
    pub result: GeneResult,
}

/// A parsed lab file with its provenance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabResult {
    /// File name as given.
    pub file_name: String,
    /// SHA-256 of the exact bytes, lowercase hex.
    pub sha256: String,
    /// Calls in file order.
    pub calls: Vec<GeneCall>,
}

impl LabResult {
    /// The calls as patient inputs, each sourced to its line of this file.
    pub fn to_patient_genes(&self, imported_by: &str) -> BTreeMap<Gene, Sourced<GeneResult>> {
        self.calls
            .iter()
            .map(|c| {
                let source = Source::LabFile {
                    file_name: self.file_name.clone(),
                    sha256: self.sha256.clone(),
                    line: c.line,
                    imported_by: imported_by.to_owned(),
                    verified_by: None,
                };
                (c.gene.clone(), Sourced { value: c.result.clone(), source })
            })
            .collect()
    }
}

/// Why a lab file was refused. Each names the file and, where there is one, the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// Larger than [`MAX_LAB_FILE_BYTES`].
    #[error(
        "{file}: {size} bytes is larger than the {MAX_LAB_FILE_BYTES} bytes a lab file may have"
    )]
    TooLarge {
        /// File.
        file: String,
        /// Its size.
        size: usize,
    },
    /// Not UTF-8.
    #[error("{file}: not UTF-8 text")]
    NotUtf8 {
        /// File.
        file: String,
    },
    /// A consumer raw genotype file.
    #[error(
        "{file}:{line}: this is a direct-to-consumer raw genotype file (rsIDs and genotypes), \
         not a clinical result; import the lab's PharmCAT outside-call report instead"
    )]
    DirectToConsumer {
        /// File.
        file: String,
        /// Line that gave it away.
        line: usize,
    },
    /// A line that breaks the format.
    #[error("{file}:{line}: {message}")]
    Line {
        /// File.
        file: String,
        /// Line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// No gene in the file.
    #[error("{file}: the file holds no gene call")]
    Empty {
        /// File.
        file: String,
    },
}

/// Parses an outside-call file.
pub fn import(file_name: &str, bytes: &[u8]) -> Result<LabResult, ImportError> {
    let file = || file_name.to_owned();
    if bytes.len() > MAX_LAB_FILE_BYTES {
        return Err(ImportError::TooLarge { file: file(), size: bytes.len() });
    }
    let sha256 = hex(&Sha256::digest(bytes));
    let text = std::str::from_utf8(bytes).map_err(|_| ImportError::NotUtf8 { file: file() })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut calls: Vec<GeneCall> = Vec::new();
    for (i, raw_line) in text.lines().enumerate() {
        let line = i + 1;
        let bad = |message: String| ImportError::Line { file: file(), line, message };
        let l = raw_line.trim_end_matches('\r');
        if l.trim().is_empty() {
            continue;
        }
        if let Some(comment) = l.strip_prefix('#') {
            let c = comment.to_ascii_lowercase();
            if c.contains("rsid") && (c.contains("chromosome") || c.contains("genotype")) {
                return Err(ImportError::DirectToConsumer { file: file(), line });
            }
            continue;
        }
        let fields: Vec<&str> = l.split('\t').collect();
        if looks_like_consumer_row(&fields) {
            return Err(ImportError::DirectToConsumer { file: file(), line });
        }
        if fields.len() > 4 {
            return Err(bad(format!(
                "{} tab-separated fields; an outside call has at most 4 (gene, diplotype, phenotype, activity score)",
                fields.len()
            )));
        }
        let field = |n: usize| fields.get(n).map(|f| f.trim()).filter(|f| !f.is_empty());
        let gene = Gene::new(field(0).unwrap_or("")).map_err(|e| bad(format!("gene: {e}")))?;
        if let Some(first) = calls.iter().find(|c| c.gene == gene) {
            return Err(bad(format!("{gene} appears again (first on line {})", first.line)));
        }
        let diplotype = field(1).map(str::to_owned);
        let phenotype = field(2)
            .map(Phenotype::parse)
            .transpose()
            .map_err(|e| bad(format!("phenotype: {e}")))?;
        let activity_score = match field(3) {
            None => None,
            Some(s) if s.eq_ignore_ascii_case("n/a") => None,
            Some(s) => Some(
                Fixed::parse(s)
                    .ok()
                    .filter(|v| *v >= Fixed::ZERO && *v <= Fixed::from_int(10))
                    .ok_or_else(|| {
                        bad(format!("activity score `{s}` is not a number from 0 to 10"))
                    })?,
            ),
        };
        if diplotype.is_none() && phenotype.is_none() && activity_score.is_none() {
            return Err(bad(format!(
                "{gene} has no diplotype, phenotype or activity score; leave the gene out instead"
            )));
        }
        calls.push(GeneCall {
            line,
            gene,
            result: GeneResult { diplotype, phenotype, activity_score },
        });
    }
    if calls.is_empty() {
        return Err(ImportError::Empty { file: file() });
    }
    Ok(LabResult { file_name: file(), sha256, calls })
}

/// `rs1142345 <TAB> 6 <TAB> 18130918 <TAB> AG` or `i3000001 …`: rsID, chromosome, position, genotype.
fn looks_like_consumer_row(fields: &[&str]) -> bool {
    let id = fields.first().map_or("", |f| f.trim());
    let is_rsid = |p: &str| {
        id.strip_prefix(p)
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
    };
    (is_rsid("rs") || is_rsid("i"))
        && fields.len() >= 3
        && fields.get(2).is_some_and(|p| p.trim().bytes().all(|b| b.is_ascii_digit()))
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgx::{Category, Certainty};

    #[test]
    fn outside_calls_parse_with_empty_fields_and_modifiers() {
        let text = "# PharmCAT outside call\n\
                    TPMT\t*1/*3A\tIM\t\n\
                    NUDT15\t\tnormal metabolizer\n\
                    CYP2C19\t*1/*2\tLikely Intermediate Metabolizer\t1.0\n\
                    \n\
                    MTHFR\tc.677C>T/c.677C>T\n";
        let r = import("lab.tsv", text.as_bytes()).unwrap();
        assert_eq!(r.calls.len(), 4);
        assert_eq!(r.calls[0].line, 2);
        assert_eq!(
            r.calls[0].result.phenotype,
            Some(Phenotype {
                category: Category::IntermediateMetabolizer,
                certainty: Certainty::Definite
            })
        );
        assert_eq!(r.calls[1].result.diplotype, None);
        assert_eq!(r.calls[2].result.phenotype.unwrap().certainty, Certainty::Likely);
        assert_eq!(r.calls[2].result.activity_score, Some(Fixed::ONE));
        assert_eq!(r.calls[3].result.phenotype, None);
        assert_eq!(r.sha256, hex(&Sha256::digest(text.as_bytes())));
        assert_eq!(r.sha256.len(), 64);
    }

    #[test]
    fn consumer_files_are_refused() {
        let header = "# rsid\tchromosome\tposition\tgenotype\nrs1142345\t6\t18130918\tAG\n";
        assert_eq!(
            import("genome.txt", header.as_bytes()),
            Err(ImportError::DirectToConsumer { file: "genome.txt".into(), line: 1 })
        );
        let bare = "rs1800460\t6\t18139228\tCC\n";
        let err = import("g.txt", bare.as_bytes()).unwrap_err();
        assert_eq!(err, ImportError::DirectToConsumer { file: "g.txt".into(), line: 1 });
        assert!(err.to_string().contains("not a clinical result"), "{err}");
    }

    #[test]
    fn broken_lines_are_named() {
        let check = |text: &str, expected: &str| {
            let err = import("x.tsv", text.as_bytes()).unwrap_err().to_string();
            assert_eq!(err, expected);
        };
        check(
            "TPMT\t*1/*1\tslow\n",
            "x.tsv:1: phenotype: `slow` is not a CPIC phenotype term (e.g. \"Intermediate Metabolizer\", \"IM\", \"Likely Poor Metabolizer\")",
        );
        check(
            "TPMT\t*1/*1\tNM\n# c\nTPMT\t*1/*3A\tIM\n",
            "x.tsv:3: TPMT appears again (first on line 1)",
        );
        check(
            "TPMT\ta\tNM\t1\textra\n",
            "x.tsv:1: 5 tab-separated fields; an outside call has at most 4 (gene, diplotype, phenotype, activity score)",
        );
        check(
            "TPMT\t\t\t\n",
            "x.tsv:1: TPMT has no diplotype, phenotype or activity score; leave the gene out instead",
        );
        check("# only comments\n", "x.tsv: the file holds no gene call");
        check(
            "TPMT\t*1/*1\tNM\tlots\n",
            "x.tsv:1: activity score `lots` is not a number from 0 to 10",
        );
        let big = vec![b'#'; MAX_LAB_FILE_BYTES + 1];
        assert!(matches!(import("big", &big), Err(ImportError::TooLarge { .. })));
        assert_eq!(import("bin", &[0xff, 0xfe]), Err(ImportError::NotUtf8 { file: "bin".into() }));
    }
}
