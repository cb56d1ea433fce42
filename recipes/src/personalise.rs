//! Personalisation: a recipe's signed rule applied to one patient, as a pure, total function.
//!
//! `evaluate` reads no clock, does no I/O and never panics: every patient either gets process
//! parameters or a refusal, and both come with an [`Explanation`] fit for the screen
//! ([`Explanation::to_text`]) and the record (it serialises to JSON).
//!
//! # Order of checks
//! 1. Declared inputs are present and inside the rule's bounds (weight, age). Missing → refusal
//!    that needs QA.
//! 2. Every declared gene has a usable result. Missing, no phenotype, Indeterminate or No Call →
//!    refusal that needs QA. Nothing is ever assumed "normal". A "Likely …" phenotype matches
//!    its category (CPIC treats it as actionable) and the explanation says so; a "Possible …"
//!    one needs QA unless the matching row sets `accept_possible`.
//! 3. The first table row whose conditions all hold decides. No row → refusal that needs QA.
//! 4. A refusing row refuses. A dose row computes, in exact decimals (see `quantity`):
//!    base daily dose (mg/kg × kg, or fixed) × factor → bounded (clamp or refuse) → × days →
//!    active mass = total ÷ material concentration, volume = total ÷ product concentration,
//!    vehicle mass = volume × vehicle density − active mass (made up to volume by weight).
//!    Masses are rounded half away from zero to 0.0001 g, volumes to 0.01 mL.
//! 5. Each personalised dispense mass must lie in its phase's manufacturer bounds, or refuse.
//!
//! # Bounds and pharmacogenomic reductions
//! A reduced dose (factor below 1) is never raised to the daily minimum: that would undo part of
//! the reduction the table row prescribes, so it is a refusal that needs QA. Any other clamp
//! needs QA approval. When the row gives a guideline range, the effective factor (final daily
//! dose ÷ base daily dose) must lie inside it, or the evaluation refuses and needs QA.

use std::fmt::{self, Write as _};

use serde::Serialize;

use crate::model::{
    Bounds, DispenseTarget, DoseBasis, Entry, Ident, Match, MatchBy, OutOfBounds, Outcome,
    PhaseKind, Recipe, Row, canonical_diplotype,
};
use crate::patient::{Patient, Source};
use crate::pgx::{Certainty, Gene, Phenotype};
use crate::quantity::{Factor, Fixed, Mass, Milligrams, Volume};

/// Process parameters computed for one patient.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Parameters {
    /// Adjusted daily dose, after bounds.
    #[serde(rename = "daily_dose_mg")]
    pub daily_dose: Milligrams,
    /// Drug in the whole batch.
    #[serde(rename = "total_dose_mg")]
    pub total_dose: Milligrams,
    /// Which active material to scan and dispense.
    pub active: Ident,
    /// Mass of active material to dispense.
    #[serde(rename = "active_mass_g")]
    pub active_mass: Mass,
    /// Final product volume.
    #[serde(rename = "volume_ml")]
    pub volume: Volume,
    /// Mass of vehicle, if the product has one.
    #[serde(rename = "vehicle_mass_g")]
    pub vehicle_mass: Option<Mass>,
    /// QA must approve before the batch starts.
    pub needs_qa: bool,
}

impl Parameters {
    /// The mass a personalised dispense phase weighs out.
    pub fn dispense_mass(&self, target: &DispenseTarget) -> Option<Mass> {
        match target {
            DispenseTarget::Fixed { mass, .. } => Some(*mass),
            DispenseTarget::Active { .. } => Some(self.active_mass),
            DispenseTarget::Vehicle { .. } => self.vehicle_mass,
        }
    }
}

/// The result of a successful evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// Parameters for the supervisor (`None` for a recipe without personalisation).
    pub parameters: Option<Parameters>,
    /// How they were reached.
    pub explanation: Explanation,
}

/// Why a patient gets no batch, with the explanation.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[error("{kind}")]
pub struct Refusal {
    /// What kind of refusal.
    pub kind: RefusalKind,
    /// A QA decision is needed (as opposed to a final "not for this patient").
    pub needs_qa: bool,
    /// How it was reached.
    pub explanation: Box<Explanation>,
}

/// The kinds of refusal, each a one-line reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RefusalKind {
    /// A declared input is missing.
    #[error("{input} is required by the rule but was not given")]
    MissingInput {
        /// Which.
        input: String,
    },
    /// A gene result cannot be acted on.
    #[error("{gene}: {why}; a QA decision is needed")]
    UnusableResult {
        /// Gene.
        gene: String,
        /// Why (missing, no phenotype, indeterminate, no call).
        why: String,
    },
    /// An input lies outside the rule's bounds.
    #[error("{input} {value} is outside the rule's range {min}–{max}")]
    InputOutOfBounds {
        /// Which.
        input: String,
        /// Value.
        value: String,
        /// Lowest accepted.
        min: String,
        /// Highest accepted.
        max: String,
    },
    /// A phenotype the lab qualified as "Possible", and the matching row does not accept that.
    #[error(
        "{gene}: the lab reported {phenotype}, and table row {row} does not accept a \"Possible\" result; a QA decision is needed"
    )]
    PossiblePhenotype {
        /// Gene.
        gene: String,
        /// The phenotype as reported.
        phenotype: String,
        /// The 1-based row that would apply.
        row: usize,
    },
    /// No row of the table covers this combination.
    #[error("no row of the rule's table covers these results; a QA decision is needed")]
    NoMatchingRow,
    /// The table says not to compound this product for this patient.
    #[error("not for this patient: {reason}")]
    NotForThisPatient {
        /// The row's reason.
        reason: String,
    },
    /// The daily dose is outside its bounds and the rule refuses rather than clamps.
    #[error("daily dose {value} is outside {min}–{max} and the rule does not clamp")]
    DoseOutOfBounds {
        /// Value.
        value: String,
        /// Lowest.
        min: String,
        /// Highest.
        max: String,
    },
    /// A pharmacogenomic reduction gives a daily dose below the rule's minimum; raising it
    /// would undo part of the reduction, so the appliance does not clamp.
    #[error(
        "the reduced daily dose {value} (factor {factor}) is below the rule's minimum {min}; raising it would undo part of the reduction, so a QA decision is needed"
    )]
    ReducedBelowMinimum {
        /// Reduced daily dose.
        value: String,
        /// The row's factor.
        factor: String,
        /// The rule's minimum daily dose.
        min: String,
    },
    /// The effective factor after bounds is outside the row's guideline range.
    #[error(
        "the effective factor {effective} (final ÷ base daily dose) is outside the guideline's {min}–{max}; a QA decision is needed"
    )]
    OutsideGuideline {
        /// Final daily dose ÷ base daily dose.
        effective: String,
        /// Guideline's lowest factor.
        min: String,
        /// Guideline's highest factor.
        max: String,
    },
    /// A computed mass is outside what a phase may dispense.
    #[error("phase {phase}: {value} is outside its bounds {min}–{max}")]
    OutsideProcessBounds {
        /// Phase.
        phase: String,
        /// Value.
        value: String,
        /// Lowest.
        min: String,
        /// Highest.
        max: String,
    },
    /// A computation did not fit (only with absurd rule data).
    #[error("the calculation of {what} failed: {why}")]
    Arithmetic {
        /// What was being computed.
        what: String,
        /// Why.
        why: String,
    },
}

/// How parameters or a refusal were reached, for the screen and the record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// Recipe id.
    pub recipe: String,
    /// Recipe revision.
    pub recipe_revision: u32,
    /// Rule id and revision, if the recipe has one.
    pub rule: Option<RuleRef>,
    /// Patient identifier.
    pub patient: String,
    /// Inputs read, with their sources.
    pub inputs: Vec<InputLine>,
    /// The table row that matched: 1-based number and label.
    pub row: Option<RowRef>,
    /// Arithmetic, in order.
    pub steps: Vec<Step>,
    /// Bounds checked.
    pub bounds: Vec<BoundLine>,
    /// One line: what happens.
    pub outcome: String,
    /// QA must approve or decide.
    pub needs_qa: bool,
    /// Entries a second person must verify.
    pub second_person: Vec<Entry>,
    /// Remarks in words: clamps, certainty modifiers, why QA is needed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The rule that was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    /// Rule id.
    pub id: String,
    /// Rule revision.
    pub revision: u32,
}

/// The table row that matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowRef {
    /// 1-based row number in the recipe.
    pub number: usize,
    /// The row's label.
    pub label: String,
}

/// One input as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputLine {
    /// Name.
    pub name: String,
    /// Value as shown.
    pub value: String,
    /// Provenance in words (the screen shows the first 12 hex digits of a file hash).
    pub source: String,
    /// Provenance in full, for the record.
    pub provenance: Source,
}

/// One arithmetic step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// What is computed.
    pub what: String,
    /// The expression with numbers.
    pub expression: String,
    /// The result with unit.
    pub result: String,
}

/// One bounds check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoundLine {
    /// What was checked.
    pub what: String,
    /// Value.
    pub value: String,
    /// Lowest.
    pub min: String,
    /// Highest.
    pub max: String,
    /// What happened.
    pub action: BoundAction,
}

/// What a bounds check did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BoundAction {
    /// Within.
    Within,
    /// Raised to the minimum.
    ClampedToMin,
    /// Lowered to the maximum.
    ClampedToMax,
    /// Refused.
    Refused,
}

impl Explanation {
    /// Plain words for the pharmacist, one fact per line.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = write!(s, "Recipe {} revision {}", self.recipe, self.recipe_revision);
        match &self.rule {
            Some(RuleRef { id: rule, revision: rev }) => {
                let _ = writeln!(s, ", rule {rule} revision {rev}");
            }
            None => s.push_str(", no personalisation rule\n"),
        }
        let _ = writeln!(s, "Patient: {}", self.patient);
        if !self.inputs.is_empty() {
            s.push_str("Inputs:\n");
            for i in &self.inputs {
                let _ = writeln!(s, "  {}: {} ({})", i.name, i.value, i.source);
            }
        }
        if let Some(RowRef { number: n, label }) = &self.row {
            let _ = writeln!(s, "Table row {n} applies: {label}");
        }
        if !self.steps.is_empty() {
            s.push_str("Calculation:\n");
            for st in &self.steps {
                let _ = writeln!(s, "  {} = {} = {}", st.what, st.expression, st.result);
            }
        }
        if !self.bounds.is_empty() {
            s.push_str("Bounds:\n");
            for b in &self.bounds {
                let action = match b.action {
                    BoundAction::Within => "within",
                    BoundAction::ClampedToMin => "below; raised to the minimum",
                    BoundAction::ClampedToMax => "above; lowered to the maximum",
                    BoundAction::Refused => "outside; refused",
                };
                let _ = writeln!(s, "  {} {} is {action} ({}–{})", b.what, b.value, b.min, b.max);
            }
        }
        if !self.notes.is_empty() {
            s.push_str("Notes:\n");
            for n in &self.notes {
                let _ = writeln!(s, "  {n}");
            }
        }
        let _ = writeln!(s, "Outcome: {}", self.outcome);
        let _ = writeln!(s, "QA approval needed: {}", if self.needs_qa { "yes" } else { "no" });
        if !self.second_person.is_empty() {
            let names: Vec<&str> = self
                .second_person
                .iter()
                .filter_map(|e| Entry::ALL.iter().find(|(_, x)| x == e).map(|(n, _)| *n))
                .collect();
            let _ = writeln!(s, "A second person verifies: {}", names.join(", "));
        }
        s
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// Applies the recipe's rule to the patient. Pure and total.
pub fn evaluate(recipe: &Recipe, patient: &Patient) -> Result<Evaluation, Refusal> {
    let mut ex = Explanation {
        recipe: recipe.id.to_string(),
        recipe_revision: recipe.revision,
        rule: recipe
            .personalisation
            .as_ref()
            .map(|p| RuleRef { id: p.rule.to_string(), revision: p.rule_revision }),
        patient: patient.id.to_string(),
        inputs: Vec::new(),
        row: None,
        steps: Vec::new(),
        bounds: Vec::new(),
        outcome: String::new(),
        needs_qa: false,
        second_person: recipe.second_person.iter().copied().collect(),
        notes: Vec::new(),
    };
    let Some(rule) = &recipe.personalisation else {
        ex.outcome = "compound with the recipe's fixed quantities".to_owned();
        return Ok(Evaluation { parameters: None, explanation: ex });
    };
    let refuse = |mut ex: Explanation, kind: RefusalKind, needs_qa: bool| {
        ex.outcome = format!("REFUSED: {kind}");
        ex.needs_qa = needs_qa;
        Refusal { kind, needs_qa, explanation: Box::new(ex) }
    };

    // 1. Weight and age.
    let needs_weight = matches!(rule.dose.basis, DoseBasis::PerKg(_)) || rule.weight.is_some();
    let weight = if needs_weight {
        let Some(w) = &patient.weight else {
            return Err(refuse(
                ex,
                RefusalKind::MissingInput { input: "body weight".into() },
                true,
            ));
        };
        ex.inputs.push(InputLine {
            name: "body weight".into(),
            value: w.value.to_string(),
            source: w.source.to_string(),
            provenance: w.source.clone(),
        });
        if let Some(b) = &rule.weight {
            let within = b.contains(w.value);
            ex.bounds.push(BoundLine {
                what: "body weight".into(),
                value: w.value.to_string(),
                min: b.min.to_string(),
                max: b.max.to_string(),
                action: if within { BoundAction::Within } else { BoundAction::Refused },
            });
            if !within {
                let kind = RefusalKind::InputOutOfBounds {
                    input: "body weight".into(),
                    value: w.value.to_string(),
                    min: b.min.to_string(),
                    max: b.max.to_string(),
                };
                return Err(refuse(ex, kind, false));
            }
        }
        Some(w.value)
    } else {
        None
    };
    if let Some(b) = &rule.age {
        let Some(a) = &patient.age_years else {
            return Err(refuse(ex, RefusalKind::MissingInput { input: "age".into() }, true));
        };
        let within = b.contains(a.value);
        ex.inputs.push(InputLine {
            name: "age".into(),
            value: format!("{} years", a.value),
            source: a.source.to_string(),
            provenance: a.source.clone(),
        });
        ex.bounds.push(BoundLine {
            what: "age".into(),
            value: format!("{} years", a.value),
            min: format!("{} years", b.min),
            max: format!("{} years", b.max),
            action: if within { BoundAction::Within } else { BoundAction::Refused },
        });
        if !within {
            let kind = RefusalKind::InputOutOfBounds {
                input: "age".into(),
                value: format!("{} years", a.value),
                min: format!("{} years", b.min),
                max: format!("{} years", b.max),
            };
            return Err(refuse(ex, kind, false));
        }
    }

    // 2. Gene results: present, and usable the way the rule matches them.
    let mut observed: Vec<(Gene, Match)> = Vec::new();
    let mut possible: Vec<(Gene, Phenotype)> = Vec::new();
    for input in &rule.genes {
        let gene = &input.gene;
        let unusable =
            |why: &str| RefusalKind::UnusableResult { gene: gene.to_string(), why: why.to_owned() };
        let Some(result) = patient.genes.get(gene) else {
            return Err(refuse(ex, unusable("no result was given"), true));
        };
        let r = &result.value;
        let shown = match (&r.phenotype, &r.diplotype) {
            (Some(p), Some(d)) => format!("{p} (diplotype {d})"),
            (Some(p), None) => p.to_string(),
            (None, Some(d)) => format!("diplotype {d}, no phenotype"),
            (None, None) => "no call".to_owned(),
        };
        ex.inputs.push(InputLine {
            name: gene.to_string(),
            value: shown,
            source: result.source.to_string(),
            provenance: result.source.clone(),
        });
        match input.by {
            MatchBy::Phenotype => match &r.phenotype {
                None => {
                    let why = "the lab reported no phenotype (the appliance does not infer one from a diplotype)";
                    return Err(refuse(ex, unusable(why), true));
                }
                Some(p) if !p.category.is_determinate() => {
                    let why = format!("the phenotype is {}", p.category.term());
                    return Err(refuse(ex, unusable(&why), true));
                }
                Some(p) => {
                    match p.certainty {
                        Certainty::Definite => {}
                        Certainty::Likely => ex.notes.push(format!(
                            "{gene}: the lab reported {p}; CPIC treats \"Likely\" as actionable, \
                             so it is matched as {}",
                            p.category.term()
                        )),
                        Certainty::Possible => possible.push((gene.clone(), *p)),
                    }
                    observed.push((gene.clone(), Match::Category(p.category)));
                }
            },
            MatchBy::Diplotype => match &r.diplotype {
                None => return Err(refuse(ex, unusable("the lab reported no diplotype"), true)),
                Some(d) => observed.push((gene.clone(), Match::Diplotype(canonical_diplotype(d)))),
            },
        }
    }

    // 3. The first row whose every condition holds.
    let matches = |row: &Row| row.when.iter().all(|cond| observed.iter().any(|o| o == cond));
    let Some((index, row)) = rule.rows.iter().enumerate().find(|(_, r)| matches(r)) else {
        return Err(refuse(ex, RefusalKind::NoMatchingRow, true));
    };
    ex.row = Some(RowRef { number: index + 1, label: row.label.clone() });
    // Any "Possible" result matters, named in the row or not: the earlier rows did not match
    // because of it.
    for (gene, p) in &possible {
        if row.accept_possible {
            ex.notes.push(format!(
                "{gene}: the lab reported {p}; table row {} accepts \"Possible\" results, so it \
                 is matched as {}",
                index + 1,
                p.category.term()
            ));
        } else {
            let kind = RefusalKind::PossiblePhenotype {
                gene: gene.to_string(),
                phenotype: p.to_string(),
                row: index + 1,
            };
            return Err(refuse(ex, kind, true));
        }
    }

    // 4. The row's outcome.
    let (factor, guideline, active, row_qa) = match &row.outcome {
        Outcome::Refuse { reason } => {
            let kind = RefusalKind::NotForThisPatient { reason: reason.clone() };
            return Err(refuse(ex, kind, rule.needs_qa));
        }
        Outcome::Dose { factor, guideline, active, needs_qa } => (
            *factor,
            *guideline,
            active.clone().unwrap_or_else(|| rule.product.active.clone()),
            *needs_qa,
        ),
    };
    let needs_qa = rule.needs_qa || row_qa;
    match compute(recipe, rule, weight, (factor, guideline), &active, &mut ex) {
        Ok(parameters) => {
            let needs_qa = needs_qa || parameters.needs_qa;
            let parameters = Parameters { needs_qa, ..parameters };
            ex.needs_qa = needs_qa;
            ex.outcome = format!(
                "compound {} of {} with {} of {}{}",
                parameters.volume,
                recipe.name,
                parameters.active_mass,
                active,
                parameters
                    .vehicle_mass
                    .map(|m| format!(", made up with {m} of vehicle"))
                    .unwrap_or_default()
            );
            Ok(Evaluation { parameters: Some(parameters), explanation: ex })
        }
        Err((kind, qa)) => Err(refuse(ex, kind, qa || needs_qa)),
    }
}

fn arith(what: &str) -> impl Fn(crate::quantity::FixedError) -> (RefusalKind, bool) + '_ {
    move |e| (RefusalKind::Arithmetic { what: what.to_owned(), why: e.to_string() }, true)
}

fn range_err(what: &str) -> impl Fn(crate::quantity::OutOfRange) -> (RefusalKind, bool) + '_ {
    move |e| (RefusalKind::Arithmetic { what: what.to_owned(), why: e.to_string() }, true)
}

/// Step 4's arithmetic and step 5's process bounds. `needs_qa` in the result is set when the
/// daily dose was clamped.
fn compute(
    recipe: &Recipe,
    rule: &crate::model::Personalisation,
    weight: Option<crate::quantity::BodyWeight>,
    (factor, guideline): (Factor, Option<Bounds<Factor>>),
    active: &Ident,
    ex: &mut Explanation,
) -> Result<Parameters, (RefusalKind, bool)> {
    let base = match (rule.dose.basis, weight) {
        (DoseBasis::PerKg(per_kg), Some(w)) => {
            let v = w.value().checked_mul(per_kg.value()).map_err(arith("base daily dose"))?;
            ex.steps.push(Step {
                what: "base daily dose".into(),
                expression: format!("{w} × {per_kg}"),
                result: format!("{v} mg"),
            });
            v
        }
        (DoseBasis::PerKg(_), None) => {
            return Err((RefusalKind::MissingInput { input: "body weight".into() }, true));
        }
        (DoseBasis::Fixed(mg), _) => {
            ex.steps.push(Step {
                what: "base daily dose".into(),
                expression: "fixed by the rule".into(),
                result: mg.to_string(),
            });
            mg.value()
        }
    };
    let adjusted = base.checked_mul(factor.value()).map_err(arith("adjusted daily dose"))?;
    ex.steps.push(Step {
        what: "adjusted daily dose".into(),
        expression: format!("{base} mg × {}", factor.value()),
        result: format!("{adjusted} mg"),
    });
    let b = rule.dose.daily;
    let below = adjusted < b.min.value();
    let above = adjusted > b.max.value();
    let bound_line = |action| BoundLine {
        what: "daily dose".into(),
        value: format!("{adjusted} mg"),
        min: b.min.to_string(),
        max: b.max.to_string(),
        action,
    };
    if below && factor.value() < Fixed::ONE {
        // Raising a reduced dose to the minimum would silently give more than the row says.
        ex.bounds.push(bound_line(BoundAction::Refused));
        ex.notes.push(format!(
            "the table row reduces the dose to {} of the base dose; {adjusted} mg is below the \
             minimum {}, and raising it would give the patient more than the row prescribes, so \
             the appliance does not clamp",
            factor.value(),
            b.min
        ));
        return Err((
            RefusalKind::ReducedBelowMinimum {
                value: format!("{adjusted} mg"),
                factor: factor.value().to_string(),
                min: b.min.to_string(),
            },
            true,
        ));
    }
    if (below || above) && rule.dose.out_of_bounds == OutOfBounds::Refuse {
        ex.bounds.push(bound_line(BoundAction::Refused));
        return Err((
            RefusalKind::DoseOutOfBounds {
                value: format!("{adjusted} mg"),
                min: b.min.to_string(),
                max: b.max.to_string(),
            },
            false,
        ));
    }
    let (daily, action) = if below {
        (b.min.value(), BoundAction::ClampedToMin)
    } else if above {
        (b.max.value(), BoundAction::ClampedToMax)
    } else {
        (adjusted, BoundAction::Within)
    };
    ex.bounds.push(bound_line(action));
    let clamped = action != BoundAction::Within;
    if clamped {
        ex.notes.push(format!(
            "the daily dose was {} ({adjusted} mg → {daily} mg); a clamped dose needs QA approval",
            if below { "raised to the rule's minimum" } else { "lowered to the rule's maximum" }
        ));
    }
    if clamped || guideline.is_some() {
        let effective = daily.checked_div(base).map_err(arith("effective factor"))?;
        ex.steps.push(Step {
            what: "effective factor".into(),
            expression: format!("{daily} mg ÷ {base} mg"),
            result: effective.to_string(),
        });
        if let Some(g) = guideline {
            let within = g.min.value() <= effective && effective <= g.max.value();
            ex.bounds.push(BoundLine {
                what: "effective factor against the guideline".into(),
                value: effective.to_string(),
                min: g.min.value().to_string(),
                max: g.max.value().to_string(),
                action: if within { BoundAction::Within } else { BoundAction::Refused },
            });
            if !within {
                ex.notes.push(format!(
                    "after bounds the patient would get {effective} of the base dose, outside \
                     the {}–{} the guideline gives for this row",
                    g.min.value(),
                    g.max.value()
                ));
                return Err((
                    RefusalKind::OutsideGuideline {
                        effective: effective.to_string(),
                        min: g.min.value().to_string(),
                        max: g.max.value().to_string(),
                    },
                    true,
                ));
            }
        }
    }
    let daily_dose = Milligrams::new(daily).map_err(range_err("daily dose"))?;
    let total = daily
        .checked_mul(Fixed::from_int(i32::from(rule.dose.days)))
        .map_err(arith("total dose"))?;
    ex.steps.push(Step {
        what: "total dose".into(),
        expression: format!("{daily} mg × {} days", rule.dose.days),
        result: format!("{total} mg"),
    });
    let total_dose = Milligrams::new(total).map_err(range_err("total dose"))?;

    let material = recipe.material(active);
    let conc = material.and_then(|m| m.concentration).ok_or_else(|| {
        (
            RefusalKind::Arithmetic {
                what: "active mass".into(),
                why: format!("material {active} has no concentration"),
            },
            true,
        )
    })?;
    let active_g = total.checked_div(conc.value()).map_err(arith("active mass"))?.round_to(4);
    ex.steps.push(Step {
        what: format!("mass of {active}"),
        expression: format!("{total} mg ÷ {conc}"),
        result: format!("{active_g} g"),
    });
    let active_mass = Mass::new(active_g).map_err(range_err("active mass"))?;

    let volume_ml =
        total.checked_div(rule.product.concentration.value()).map_err(arith("volume"))?.round_to(2);
    ex.steps.push(Step {
        what: "product volume".into(),
        expression: format!("{total} mg ÷ {}", rule.product.concentration),
        result: format!("{volume_ml} mL"),
    });
    let volume = Volume::new(volume_ml).map_err(range_err("product volume"))?;

    let vehicle_mass = match &rule.product.vehicle {
        None => None,
        Some(v) => {
            let density = recipe.material(v).and_then(|m| m.density).ok_or_else(|| {
                (
                    RefusalKind::Arithmetic {
                        what: "vehicle mass".into(),
                        why: format!("material {v} has no density"),
                    },
                    true,
                )
            })?;
            let product_g =
                volume_ml.checked_mul(density.value()).map_err(arith("product mass"))?;
            let vehicle_g =
                product_g.checked_sub(active_g).map_err(arith("vehicle mass"))?.round_to(4);
            ex.steps.push(Step {
                what: format!("mass of {v}"),
                expression: format!("{volume_ml} mL × {density} − {active_g} g"),
                result: format!("{vehicle_g} g"),
            });
            Some(Mass::new(vehicle_g).map_err(range_err("vehicle mass"))?)
        }
    };

    let parameters = Parameters {
        daily_dose,
        total_dose,
        active: active.clone(),
        active_mass,
        volume,
        vehicle_mass,
        needs_qa: clamped,
    };
    for (_, _, phase) in recipe.phases() {
        let PhaseKind::Dispense { target, .. } = &phase.kind else { continue };
        let bounds: Bounds<Mass> = match target {
            DispenseTarget::Fixed { .. } => continue,
            DispenseTarget::Active { bounds } | DispenseTarget::Vehicle { bounds } => *bounds,
        };
        let Some(mass) = parameters.dispense_mass(target) else { continue };
        let within = bounds.contains(mass);
        ex.bounds.push(BoundLine {
            what: format!("phase {} mass", phase.id),
            value: mass.to_string(),
            min: bounds.min.to_string(),
            max: bounds.max.to_string(),
            action: if within { BoundAction::Within } else { BoundAction::Refused },
        });
        if !within {
            return Err((
                RefusalKind::OutsideProcessBounds {
                    phase: phase.id.to_string(),
                    value: mass.to_string(),
                    min: bounds.min.to_string(),
                    max: bounds.max.to_string(),
                },
                false,
            ));
        }
    }
    Ok(parameters)
}
