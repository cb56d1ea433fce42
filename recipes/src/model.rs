//! The validated recipe: ISA-88 procedure → unit procedures → operations → phases, with typed,
//! bounded parameters, materials, equipment requirements, per-phase resume policies and the
//! personalisation rule.
//!
//! Values of these types exist only after `authoring::parse` has checked every rule; the
//! fields are public for reading, and the supervisor can trust them without re-checking.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use crate::pgx::{Category, Gene};
use crate::quantity::{
    BodyWeight, Density, Factor, Mass, MgPerGram, MgPerKg, MgPerMl, Milligrams, Ramp, Rate,
    Seconds, Speed, Temperature, Volume,
};

/// A recipe identifier: lowercase letters, digits and `-`, at most 64 characters. It is also
/// the TUF target name (`<id>.toml`), so the shape is strict.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Ident(String);

impl Ident {
    /// Checks the shape.
    pub fn new(s: &str) -> Option<Self> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.as_bytes()[0].is_ascii_lowercase()
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.ends_with('-');
        ok.then(|| Ident(s.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An appliance software version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl Version {
    /// Parses `1.2.3`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.trim().split('.');
        let mut next = || it.next().and_then(|p| p.parse::<u32>().ok());
        let v = Version { major: next()?, minor: next()?, patch: next()? };
        it.next().is_none().then_some(v)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A validated recipe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recipe {
    /// Identifier, stable across revisions.
    pub id: Ident,
    /// Revision; a unit never installs a lower one than it has.
    pub revision: u32,
    /// Name for people.
    pub name: String,
    /// Oldest appliance software that can run it.
    pub min_appliance_version: Version,
    /// Unit models it was validated on.
    pub unit_models: Vec<String>,
    /// Entries a second person must verify.
    pub second_person: BTreeSet<Entry>,
    /// Ingredients.
    pub materials: Vec<Material>,
    /// What the unit must have.
    pub equipment: Vec<Equipment>,
    /// The ISA-88 procedure.
    pub procedure: Procedure,
    /// How patient data becomes process parameters, if the recipe is personalised.
    pub personalisation: Option<Personalisation>,
    /// What the product label says. Revisions written before labels existed have none, and a
    /// batch of such a recipe cannot be released (`authoring::warnings` says so at lint time).
    pub label: Option<LabelSpec>,
}

impl Recipe {
    /// The material with this id.
    pub fn material(&self, id: &Ident) -> Option<&Material> {
        self.materials.iter().find(|m| &m.id == id)
    }

    /// Every phase in execution order, with its unit procedure and operation.
    pub fn phases(&self) -> impl Iterator<Item = (&UnitProcedure, &Operation, &Phase)> {
        self.procedure.unit_procedures.iter().flat_map(|u| {
            u.operations.iter().flat_map(move |o| o.phases.iter().map(move |p| (u, o, p)))
        })
    }
}

/// A patient-specific entry that the recipe may require a second person to verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Entry {
    /// The patient identifier.
    PatientId,
    /// Body weight.
    Weight,
    /// Age.
    Age,
    /// Every phenotype or diplotype used.
    Phenotype,
    /// Each scanned material lot.
    MaterialLot,
}

impl Entry {
    /// The authoring-format spelling.
    pub const ALL: [(&'static str, Entry); 5] = [
        ("patient-id", Entry::PatientId),
        ("weight", Entry::Weight),
        ("age", Entry::Age),
        ("phenotype", Entry::Phenotype),
        ("material-lot", Entry::MaterialLot),
    ];
}

/// An ingredient.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Material {
    /// Identifier within the recipe.
    pub id: Ident,
    /// Name on the label and the screen.
    pub name: String,
    /// Solid or liquid.
    pub form: Form,
    /// Drug content per gram, for actives.
    pub concentration: Option<MgPerGram>,
    /// Density, required for liquids.
    pub density: Option<Density>,
}

/// Physical form of a material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Form {
    /// Powder or granules, dispensed by hand onto the balance.
    Solid,
    /// Pumped.
    Liquid,
}

/// Pumps a phase can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PumpKind {
    /// Syringe pump (NE-1000).
    Syringe,
    /// Peristaltic pump (WM 520).
    Peristaltic,
}

/// Something the unit must have, with the range it must cover.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Equipment {
    /// A balance of at least this capacity and at most this readability.
    Balance {
        /// Largest mass it must weigh.
        capacity: Mass,
        /// Coarsest readability acceptable.
        readability: Mass,
    },
    /// A pump able to deliver this rate.
    Pump {
        /// Which kind.
        pump: PumpKind,
        /// Highest rate the recipe needs.
        max_rate: Rate,
    },
    /// A heater covering this range.
    Heater {
        /// Lowest setpoint needed.
        min: Temperature,
        /// Highest setpoint needed.
        max: Temperature,
    },
    /// A mixer reaching this speed.
    Mixer {
        /// Highest speed needed.
        max_speed: Speed,
    },
}

/// The procedure: unit procedures in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Procedure {
    /// In execution order.
    pub unit_procedures: Vec<UnitProcedure>,
}

/// An ISA-88 unit procedure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnitProcedure {
    /// Identifier.
    pub id: Ident,
    /// Name.
    pub name: String,
    /// Operations in order.
    pub operations: Vec<Operation>,
}

/// An ISA-88 operation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Operation {
    /// Identifier.
    pub id: Ident,
    /// Name.
    pub name: String,
    /// Phases in order.
    pub phases: Vec<Phase>,
}

/// An ISA-88 phase: the smallest step the supervisor runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    /// Identifier, unique in the recipe.
    pub id: Ident,
    /// What to do.
    pub kind: PhaseKind,
    /// What to do with this phase after a power loss.
    pub resume: ResumePolicy,
}

/// What happens to an interrupted phase when the unit comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResumePolicy {
    /// Carry on where it stopped (e.g. mixing time already done counts).
    Resume,
    /// Start the phase again.
    Repeat,
    /// The batch is discarded.
    Discard,
    /// Held until QA decides.
    QaDecision,
}

/// A value with the manufacturer's bounds for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bounds<T> {
    /// Lowest allowed.
    pub min: T,
    /// Highest allowed.
    pub max: T,
}

impl<T: PartialOrd + Copy> Bounds<T> {
    /// Whether `v` lies within.
    pub fn contains(&self, v: T) -> bool {
        v >= self.min && v <= self.max
    }
}

/// What a dispense phase weighs out.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DispenseTarget {
    /// A fixed mass of a named material.
    Fixed {
        /// Material.
        material: Ident,
        /// Mass.
        mass: Mass,
    },
    /// The active, in the mass personalisation computes, within these bounds.
    Active {
        /// Manufacturer bounds on the computed mass.
        bounds: Bounds<Mass>,
    },
    /// The vehicle that makes up the volume, within these bounds.
    Vehicle {
        /// Manufacturer bounds on the computed mass.
        bounds: Bounds<Mass>,
    },
}

/// The phase kinds the supervisor runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum PhaseKind {
    /// Fill a pump line.
    Prime {
        /// Which pump.
        pump: PumpKind,
        /// Volume to push.
        volume: Volume,
    },
    /// Zero the balance with the vessel on it.
    Tare,
    /// Dispense by weight.
    Dispense {
        /// What and how much.
        target: DispenseTarget,
        /// Accepted deviation either side.
        tolerance: Mass,
        /// The pump, for liquids; `None` means by hand onto the balance.
        pump: Option<PumpKind>,
    },
    /// Heat to a setpoint.
    Heat {
        /// Setpoint.
        target: Temperature,
        /// Highest ramp.
        ramp: Ramp,
    },
    /// Keep the temperature in a band for a time.
    Hold {
        /// The band.
        band: Bounds<Temperature>,
        /// How long.
        duration: Seconds,
    },
    /// Mix.
    Mix {
        /// Speed.
        speed: Speed,
        /// How long.
        duration: Seconds,
    },
    /// Cool to a temperature within a time.
    Cool {
        /// Temperature to reach.
        target: Temperature,
        /// Longest allowed.
        within: Seconds,
    },
    /// Scan a material lot (identity, lot, expiry are checked at scan time).
    Scan {
        /// Which material.
        material: ScanTarget,
    },
    /// Cleaning or changeover.
    Clean {
        /// Instruction for the operator and the record.
        description: String,
        /// Flush volume through a pump, if any.
        flush: Option<(PumpKind, Volume)>,
    },
}

/// What a scan phase scans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScanTarget {
    /// A named material.
    Material(Ident),
    /// The active material personalisation chose (`personalise::Parameters::active`).
    Active,
}

/// The signed rule that turns patient data into process parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Personalisation {
    /// Rule identifier.
    pub rule: Ident,
    /// Rule revision.
    pub rule_revision: u32,
    /// Every outcome needs QA sign-off (e.g. rules without a clinical guideline).
    pub needs_qa: bool,
    /// Accepted body weights; required when the dose is per kg.
    pub weight: Option<Bounds<BodyWeight>>,
    /// Accepted ages in years.
    pub age: Option<Bounds<u16>>,
    /// Genes the rule reads, in order.
    pub genes: Vec<GeneInput>,
    /// How the daily dose is computed and bounded.
    pub dose: DoseRule,
    /// The product the dose is made into.
    pub product: Product,
    /// The table, first matching row wins.
    pub rows: Vec<Row>,
}

/// A gene the rule reads and how it is matched.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeneInput {
    /// Gene.
    pub gene: Gene,
    /// Match on the phenotype category or on the diplotype text.
    pub by: MatchBy,
}

/// How a gene's result is compared with table rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchBy {
    /// CPIC phenotype category. "Likely" matches its category and is shown; "Possible" needs
    /// QA unless the matching row sets `accept_possible`.
    Phenotype,
    /// Diplotype text, alleles in either order (for genes without CPIC phenotypes, e.g. MTHFR).
    Diplotype,
}

/// Base daily dose.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DoseBasis {
    /// Per kilogram of body weight.
    PerKg(MgPerKg),
    /// The same for every patient.
    Fixed(Milligrams),
}

/// What happens when the adjusted daily dose falls outside its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutOfBounds {
    /// Clamp to the nearest bound and say so.
    Clamp,
    /// Refuse.
    Refuse,
}

/// The dose part of the rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DoseRule {
    /// Base daily dose.
    pub basis: DoseBasis,
    /// Days of supply in one batch.
    pub days: u16,
    /// Bounds on the adjusted daily dose.
    pub daily: Bounds<Milligrams>,
    /// Clamp or refuse outside them.
    pub out_of_bounds: OutOfBounds,
}

/// The product the dose is made into.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Product {
    /// Default active material (a row may choose another).
    pub active: Ident,
    /// Vehicle that makes up the volume, if any.
    pub vehicle: Option<Ident>,
    /// Drug per millilitre of product.
    pub concentration: MgPerMl,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// What a pharmacist reads.
    pub label: String,
    /// Conditions, at least one; genes not named match any determinate result.
    pub when: Vec<(Gene, Match)>,
    /// The row may act on a "Possible …" phenotype. Without it such a result needs QA.
    pub accept_possible: bool,
    /// What follows.
    pub outcome: Outcome,
}

/// A condition on one gene.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Match {
    /// Phenotype category.
    Category(Category),
    /// Diplotype, alleles sorted.
    Diplotype(String),
}

/// The outcome of a row.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Compound with the dose multiplied by `factor`.
    Dose {
        /// Multiplier.
        factor: Factor,
        /// The guideline's range for this row, checked at lint time.
        guideline: Option<Bounds<Factor>>,
        /// Another active material for this row (formulation choice).
        active: Option<Ident>,
        /// This outcome needs QA approval before the batch starts.
        needs_qa: bool,
    },
    /// Do not compound this product for this patient.
    Refuse {
        /// Why, in words for the pharmacist.
        reason: String,
    },
}

/// What the product label says that only the manufacturer can decide; the appliance adds the
/// patient, the batch and the dates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabelSpec {
    /// Days from the day of preparation to the beyond-use date (USP <795>: the preparation
    /// must not be used after it).
    pub beyond_use_days: u16,
    /// The storage condition, printed as written.
    pub storage: String,
    /// Auxiliary warnings, one per line on the label.
    pub auxiliary: Vec<String>,
}

impl LabelSpec {
    /// Longest beyond-use period: USP <795> allows at most 180 days even with a stability
    /// study, and a year bounds any typo.
    pub const MAX_BEYOND_USE_DAYS: u16 = 365;
    /// Longest storage text, in characters: two lines of the 4 × 2 inch label.
    pub const MAX_STORAGE_CHARS: usize = 120;
    /// Most auxiliary warnings the label has room for.
    pub const MAX_AUXILIARY: usize = 3;
    /// Longest auxiliary warning, in characters: one line of the label.
    pub const MAX_AUXILIARY_CHARS: usize = 48;
}

/// The Windows-1252 code of a character that label text may hold, or `None`.
///
/// Label text is limited to the printable Windows-1252 characters because the PDF label uses
/// the standard fonts (nothing embedded, WinAnsi encoding) and label printers' resident fonts
/// cover that set; anything else would print as a box or a question mark on a patient's
/// bottle. Control characters are refused too: the label lays out its own lines.
pub fn windows_1252(c: char) -> Option<u8> {
    let code = match c {
        ' '..='~' | '\u{a0}'..='\u{ac}' | '\u{ae}'..='\u{ff}' => {
            return u8::try_from(u32::from(c)).ok();
        }
        '€' => 0x80,
        '‚' => 0x82,
        'ƒ' => 0x83,
        '„' => 0x84,
        '…' => 0x85,
        '†' => 0x86,
        '‡' => 0x87,
        'ˆ' => 0x88,
        '‰' => 0x89,
        'Š' => 0x8a,
        '‹' => 0x8b,
        'Œ' => 0x8c,
        'Ž' => 0x8e,
        '‘' => 0x91,
        '’' => 0x92,
        '“' => 0x93,
        '”' => 0x94,
        '•' => 0x95,
        '–' => 0x96,
        '—' => 0x97,
        '˜' => 0x98,
        '™' => 0x99,
        'š' => 0x9a,
        '›' => 0x9b,
        'œ' => 0x9c,
        'ž' => 0x9e,
        'Ÿ' => 0x9f,
        _ => return None,
    };
    Some(code)
}

/// A diplotype with its alleles in a canonical order, so `*3A/*1` matches `*1/*3A`.
pub fn canonical_diplotype(text: &str) -> String {
    let mut alleles: Vec<&str> = text.split('/').map(str::trim).collect();
    alleles.sort_unstable();
    alleles.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_1252_matches_the_code_page_and_refuses_the_rest() {
        // Spot checks against the published code page (0x96 en dash, 0xB0 degree sign).
        assert_eq!(windows_1252('A'), Some(b'A'));
        assert_eq!(windows_1252('–'), Some(0x96));
        assert_eq!(windows_1252('°'), Some(0xb0));
        assert_eq!(windows_1252('µ'), Some(0xb5));
        assert_eq!(windows_1252('€'), Some(0x80));
        assert_eq!(windows_1252('ÿ'), Some(0xff));
        for refused in ['\n', '\t', '\u{7f}', '\u{85}', '\u{ad}', '≥', '−', 'ễ', '⚠'] {
            assert_eq!(windows_1252(refused), None, "{refused:?}");
        }
        // Every code maps back from exactly one character.
        let mut seen = std::collections::BTreeMap::new();
        for c in (0..=0x2200).filter_map(char::from_u32) {
            if let Some(b) = windows_1252(c) {
                assert!(seen.insert(b, c).is_none(), "{b:#x} twice");
            }
        }
        assert_eq!(
            seen.len(),
            95 + 27 + 95,
            "printable ASCII, 27 of 0x80–0x9F, 0xA0–0xFF less SHY"
        );
    }
}
