//! The TOML authoring format: `Raw*` types that mirror the file, then validation into
//! `model::Recipe` ("parse, don't validate").
//!
//! # Format
//! A recipe file has a `[recipe]` header (`id`, `revision`, `name`, `min_appliance_version`,
//! `unit_models`, `second_person`), `[[material]]` and `[[equipment]]` arrays, an optional
//! `[personalisation]` table with `dose`, `product` and `[[personalisation.row]]` entries, and
//! the procedure as nested `[[unit_procedure]]` → `[[unit_procedure.operation]]` →
//! `[[unit_procedure.operation.phase]]`. Units are in the key names (`mass_g`, `target_c`,
//! `duration_s`, `rate_ml_per_min`), numbers are exact decimals (at most six places). Unknown
//! keys are errors: a typo never becomes a default. `recipes/examples/` holds complete files.
//! A table row needs at least one condition in `when` (no catch-all), and may set
//! `accept_possible = true` to act on a "Possible …" phenotype without QA.
//!
//! An optional `[label]` table holds what the product label says that only the manufacturer
//! decides: `beyond_use_days` (whole days from preparation, 1–365), `storage` (the storage
//! condition, 1–120 characters) and `auxiliary` (up to 3 warnings of 1–48 characters each).
//! Label text is limited to printable Windows-1252 characters (`model::windows_1252`), so
//! `2–8 °C` is fine and `≥` is not. A recipe without `[label]` still parses (revisions written
//! before labels existed), but its batches cannot be released; [`warnings`] says so.
//!
//! Every error names the file, line and column and the rule broken, e.g.
//! `aza.toml:12:13: error[unit-range]: target_c: 151 °C is outside -40–150 °C`. The whole file
//! is checked and all errors are reported together, in file order.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use crate::model::{
    Bounds, DispenseTarget, DoseBasis, DoseRule, Entry, Equipment, Form, GeneInput, Ident,
    LabelSpec, Match, MatchBy, Material, Operation, OutOfBounds, Outcome, Personalisation, Phase,
    PhaseKind, Procedure, Product, PumpKind, Recipe, ResumePolicy, Row, ScanTarget, UnitProcedure,
    Version, canonical_diplotype, windows_1252,
};
use crate::pgx::{Gene, Phenotype};
use crate::quantity::{
    BodyWeight, Density, Factor, Fixed, Mass, MgPerGram, MgPerKg, MgPerMl, Milligrams, OutOfRange,
    Ramp, Rate, Seconds, Speed, Temperature, Volume,
};

/// Largest recipe file accepted, checked before parsing (recipes arrive from USB and network).
pub const MAX_RECIPE_BYTES: usize = 256 * 1024;

/// One broken rule at one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// File name as given by the caller.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Short name of the rule broken.
    pub rule: &'static str,
    /// What is wrong, for the author.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error[{}]: {}",
            self.file, self.line, self.column, self.rule, self.message
        )
    }
}

/// All the errors in one recipe file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Something that does not make a recipe invalid but that its author must know, e.g.
/// `aza.toml:1:1: warning[label-missing]: …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// File name as given by the caller.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Short name of the rule.
    pub rule: &'static str,
    /// What the author should know.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: warning[{}]: {}",
            self.file, self.line, self.column, self.rule, self.message
        )
    }
}

/// What `recipe lint` warns about in a valid recipe. A warning never stops publishing: older
/// revisions must stay publishable and installable as they were signed.
pub fn warnings(file: &str, recipe: &Recipe) -> Vec<Warning> {
    let mut out = Vec::new();
    if recipe.label.is_none() {
        out.push(Warning {
            file: file.to_owned(),
            line: 1,
            column: 1,
            rule: "label-missing",
            message: "no [label] table: batches of this recipe cannot be released, because the \
                      label needs beyond_use_days and storage"
                .to_owned(),
        });
    }
    out
}

/// Parses and validates a recipe file. `file` is only used in messages.
pub fn parse(file: &str, text: &str) -> Result<Recipe, Diagnostics> {
    let mut cx = Cx { file, text, diags: Vec::new() };
    if text.len() > MAX_RECIPE_BYTES {
        cx.err(
            0..0,
            "size-limit",
            format!("the file is {} bytes; recipes are at most {MAX_RECIPE_BYTES}", text.len()),
        );
        return Err(Diagnostics(cx.diags));
    }
    let raw: RawFile = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let rule = if e.message().contains("unknown field") {
                "unknown-field"
            } else if e.message().contains("decimal") || e.message().contains("out of range") {
                "number"
            } else if e.message().contains("missing field") {
                "missing-field"
            } else {
                "syntax"
            };
            cx.err(e.span().unwrap_or(0..0), rule, e.message().trim().to_owned());
            return Err(Diagnostics(cx.diags));
        }
    };
    let recipe = cx.recipe(raw);
    if cx.diags.is_empty() {
        // `recipe` is Some whenever no error was reported; the check keeps that explicit.
        if let Some(r) = recipe {
            return Ok(r);
        }
        cx.err(0..0, "internal", "validation produced no recipe and no error".to_owned());
    }
    cx.diags.sort_by_key(|d| (d.line, d.column));
    Err(Diagnostics(cx.diags))
}

// ---- Raw types: the file as written ---------------------------------------------------------

/// An exact decimal as written: integer, float or string.
#[derive(Debug, Clone, Copy)]
struct Num(Fixed);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Num, E> {
                let n = i32::try_from(v).map_err(|_| E::custom("number out of range"))?;
                Ok(Num(Fixed::from_int(n)))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Num, E> {
                let n = i32::try_from(v).map_err(|_| E::custom("number out of range"))?;
                Ok(Num(Fixed::from_int(n)))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Num, E> {
                Fixed::from_f64_text(v).map(Num).map_err(E::custom)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Num, E> {
                Fixed::parse(v).map(Num).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    recipe: RawHeader,
    #[serde(default)]
    material: Vec<RawMaterial>,
    #[serde(default)]
    equipment: Vec<RawEquipment>,
    personalisation: Option<S<RawPersonalisation>>,
    #[serde(default)]
    unit_procedure: Vec<RawUnitProcedure>,
    label: Option<S<RawLabel>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLabel {
    beyond_use_days: S<Num>,
    storage: S<String>,
    auxiliary: Option<S<Vec<S<String>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    id: S<String>,
    revision: S<i64>,
    name: S<String>,
    min_appliance_version: S<String>,
    unit_models: S<Vec<S<String>>>,
    #[serde(default)]
    second_person: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMaterial {
    id: S<String>,
    name: S<String>,
    form: S<String>,
    concentration_mg_per_g: Option<S<Num>>,
    density_g_per_ml: Option<S<Num>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEquipment {
    kind: S<String>,
    capacity_g: Option<S<Num>>,
    readability_g: Option<S<Num>>,
    max_rate_ml_per_min: Option<S<Num>>,
    min_c: Option<S<Num>>,
    max_c: Option<S<Num>>,
    max_rpm: Option<S<Num>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRange {
    min: S<Num>,
    max: S<Num>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPersonalisation {
    rule: S<String>,
    rule_revision: S<i64>,
    #[serde(default)]
    needs_qa: bool,
    weight_kg: Option<S<RawRange>>,
    age_years: Option<S<RawRange>>,
    #[serde(default)]
    genes: Vec<S<RawGene>>,
    dose: S<RawDose>,
    product: S<RawProduct>,
    #[serde(default)]
    row: Vec<S<RawRow>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGene {
    gene: S<String>,
    #[serde(rename = "match")]
    by: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDose {
    mg_per_kg: Option<S<Num>>,
    fixed_mg: Option<S<Num>>,
    days: S<i64>,
    daily_mg: S<RawRange>,
    out_of_bounds: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProduct {
    active: S<String>,
    vehicle: Option<S<String>>,
    concentration_mg_per_ml: S<Num>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRow {
    label: S<String>,
    when: S<BTreeMap<String, S<String>>>,
    factor: Option<S<Num>>,
    guideline_range: Option<S<RawRange>>,
    active: Option<S<String>>,
    #[serde(default)]
    needs_qa: bool,
    accept_possible: Option<S<bool>>,
    refuse: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnitProcedure {
    id: S<String>,
    name: S<String>,
    #[serde(default)]
    operation: Vec<RawOperation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperation {
    id: S<String>,
    name: S<String>,
    #[serde(default)]
    phase: Vec<RawPhase>,
}

/// One flat table for every phase kind, so that each key keeps its span; which keys a kind
/// takes is checked in `Cx::phase`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhase {
    id: S<String>,
    kind: S<String>,
    resume: S<String>,
    pump: Option<S<String>>,
    volume_ml: Option<S<Num>>,
    material: Option<S<String>>,
    dose: Option<S<String>>,
    mass_g: Option<S<Num>>,
    bounds_g: Option<S<RawRange>>,
    tolerance_g: Option<S<Num>>,
    target_c: Option<S<Num>>,
    ramp_c_per_min: Option<S<Num>>,
    min_c: Option<S<Num>>,
    max_c: Option<S<Num>>,
    duration_s: Option<S<Num>>,
    within_s: Option<S<Num>>,
    speed_rpm: Option<S<Num>>,
    description: Option<S<String>>,
}

// ---- Validation -----------------------------------------------------------------------------

struct Cx<'a> {
    file: &'a str,
    text: &'a str,
    diags: Vec<Diagnostic>,
}

/// What the phase checks need to know about the rest of the recipe.
struct Known<'r> {
    materials: &'r [Material],
    personalisation: Option<&'r Personalisation>,
}

impl Cx<'_> {
    fn err(&mut self, span: Range<usize>, rule: &'static str, message: String) {
        let (line, column) = line_col(self.text, span.start);
        self.diags.push(Diagnostic { file: self.file.to_owned(), line, column, rule, message });
    }

    fn ident(&mut self, s: &S<String>, what: &str) -> Option<Ident> {
        let id = Ident::new(s.get_ref());
        if id.is_none() {
            self.err(
                s.span(),
                "ident-shape",
                format!(
                    "{what} `{}` must be lowercase letters, digits and `-`, start with a letter, at most 64",
                    s.get_ref()
                ),
            );
        }
        id
    }

    fn text(&mut self, s: &S<String>, what: &str) -> Option<String> {
        let t = s.get_ref().trim();
        if t.is_empty() || t.len() > 200 {
            self.err(s.span(), "text-length", format!("{what} must be 1–200 characters"));
            return None;
        }
        Some(t.to_owned())
    }

    fn revision(&mut self, s: &S<i64>, what: &str) -> Option<u32> {
        match u32::try_from(*s.get_ref()) {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                self.err(s.span(), "revision", format!("{what} must be a whole number ≥ 1"));
                None
            }
        }
    }

    fn unit<T>(
        &mut self,
        s: &S<Num>,
        key: &str,
        make: fn(Fixed) -> Result<T, OutOfRange>,
    ) -> Option<T> {
        match make(s.get_ref().0) {
            Ok(v) => Some(v),
            Err(e) => {
                self.err(s.span(), "unit-range", format!("{key}: {e}"));
                None
            }
        }
    }

    fn opt_unit<T>(
        &mut self,
        s: Option<&S<Num>>,
        key: &str,
        make: fn(Fixed) -> Result<T, OutOfRange>,
    ) -> Option<T> {
        s.and_then(|s| self.unit(s, key, make))
    }

    fn positive<T>(
        &mut self,
        s: &S<Num>,
        key: &str,
        make: fn(Fixed) -> Result<T, OutOfRange>,
    ) -> Option<T> {
        if s.get_ref().0 <= Fixed::ZERO {
            self.err(s.span(), "unit-range", format!("{key} must be greater than 0"));
            return None;
        }
        self.unit(s, key, make)
    }

    fn range<T: PartialOrd + Copy>(
        &mut self,
        r: &S<RawRange>,
        key: &str,
        make: fn(Fixed) -> Result<T, OutOfRange>,
    ) -> Option<Bounds<T>> {
        let r_ref = r.get_ref();
        let min = self.unit(&r_ref.min, &format!("{key}.min"), make);
        let max = self.unit(&r_ref.max, &format!("{key}.max"), make);
        let (min, max) = (min?, max?);
        if min > max {
            self.err(r.span(), "bounds-order", format!("{key}: min is greater than max"));
            return None;
        }
        Some(Bounds { min, max })
    }

    fn required<'s, T>(
        &mut self,
        v: Option<&'s S<T>>,
        at: Range<usize>,
        what: &str,
    ) -> Option<&'s S<T>> {
        if v.is_none() {
            self.err(at, "missing-field", format!("{what} is required here"));
        }
        v
    }

    fn recipe(&mut self, raw: RawFile) -> Option<Recipe> {
        let h = &raw.recipe;
        let id = self.ident(&h.id, "recipe id");
        let revision = self.revision(&h.revision, "revision");
        let name = self.text(&h.name, "name");
        let version = Version::parse(h.min_appliance_version.get_ref());
        if version.is_none() {
            self.err(
                h.min_appliance_version.span(),
                "version-shape",
                "min_appliance_version must look like 1.2.3".to_owned(),
            );
        }
        let mut unit_models = Vec::new();
        if h.unit_models.get_ref().is_empty() {
            self.err(
                h.unit_models.span(),
                "unit-models",
                "name at least one unit model".to_owned(),
            );
        }
        for m in h.unit_models.get_ref() {
            if let Some(m) = self.ident(m, "unit model") {
                unit_models.push(m.as_str().to_owned());
            }
        }
        let mut second_person = BTreeSet::new();
        for e in &h.second_person {
            match Entry::ALL.iter().find(|(n, _)| n == e.get_ref()) {
                Some((_, entry)) => {
                    second_person.insert(*entry);
                }
                None => self.err(
                    e.span(),
                    "unknown-entry",
                    format!(
                        "`{}` is not an entry; use one of {}",
                        e.get_ref(),
                        Entry::ALL.map(|(n, _)| n).join(", ")
                    ),
                ),
            }
        }

        let materials = self.materials(&raw.material);
        let equipment: Vec<Equipment> =
            raw.equipment.iter().filter_map(|e| self.equipment(e)).collect();
        let personalisation =
            raw.personalisation.as_ref().and_then(|p| self.personalisation(p, &materials));

        // Checked before `procedure?` below can return early, so its errors are always reported.
        let label = raw.label.as_ref().map(|l| self.label(l.get_ref()));

        let known = Known { materials: &materials, personalisation: personalisation.as_ref() };
        let procedure = self.procedure(&raw.unit_procedure, &known);
        let procedure_ok = procedure.is_some();
        let procedure = procedure?;
        if procedure_ok {
            self.cross_checks(&raw, &procedure, &equipment, &materials, personalisation.as_ref());
        }
        Some(Recipe {
            id: id?,
            revision: revision?,
            name: name?,
            min_appliance_version: version?,
            unit_models,
            second_person,
            materials,
            equipment,
            procedure,
            personalisation,
            label: match label {
                Some(l) => Some(l?),
                None => None,
            },
        })
    }

    /// `None` when any part is wrong; every wrong part has been reported.
    fn label(&mut self, l: &RawLabel) -> Option<LabelSpec> {
        let days = &l.beyond_use_days;
        let max = LabelSpec::MAX_BEYOND_USE_DAYS;
        let micros = days.get_ref().0.micros();
        let beyond_use_days = match u16::try_from(micros / 1_000_000) {
            Ok(n) if micros % 1_000_000 == 0 && (1..=max).contains(&n) => Some(n),
            _ => {
                self.err(
                    days.span(),
                    "label-days",
                    format!(
                        "beyond_use_days must be a whole number of days, 1–{max}, not {}",
                        days.get_ref().0
                    ),
                );
                None
            }
        };
        let storage = self.label_text(&l.storage, "storage", LabelSpec::MAX_STORAGE_CHARS);
        let mut auxiliary: Vec<String> = Vec::new();
        let mut ok = true;
        if let Some(list) = &l.auxiliary {
            if list.get_ref().len() > LabelSpec::MAX_AUXILIARY {
                self.err(
                    list.span(),
                    "label-auxiliary",
                    format!(
                        "{} auxiliary warnings; the label has room for {}",
                        list.get_ref().len(),
                        LabelSpec::MAX_AUXILIARY
                    ),
                );
                ok = false;
            }
            for w in list.get_ref() {
                match self.label_text(w, "auxiliary warning", LabelSpec::MAX_AUXILIARY_CHARS) {
                    Some(t) if auxiliary.contains(&t) => {
                        self.err(
                            w.span(),
                            "label-auxiliary",
                            format!("auxiliary warning `{t}` is listed twice"),
                        );
                        ok = false;
                    }
                    Some(t) => auxiliary.push(t),
                    None => ok = false,
                }
            }
        }
        let spec = LabelSpec { beyond_use_days: beyond_use_days?, storage: storage?, auxiliary };
        ok.then_some(spec)
    }

    /// Text printed on the label: trimmed, 1–`max` characters, each one printable there.
    fn label_text(&mut self, s: &S<String>, what: &str, max: usize) -> Option<String> {
        let t = s.get_ref().trim();
        let n = t.chars().count();
        if n == 0 || n > max {
            self.err(
                s.span(),
                "label-text",
                format!("{what} is {n} characters; it must be 1–{max} to fit the label"),
            );
            return None;
        }
        if let Some(c) = t.chars().find(|c| windows_1252(*c).is_none()) {
            let shown = if c.is_control() {
                format!("a control character (U+{:04X})", u32::from(c))
            } else {
                format!("`{c}` (U+{:04X})", u32::from(c))
            };
            self.err(
                s.span(),
                "label-charset",
                format!(
                    "{what}: {shown} cannot be printed on a label; use Windows-1252 characters \
                     (what the standard PDF fonts and label printers share), on one line"
                ),
            );
            return None;
        }
        Some(t.to_owned())
    }

    fn materials(&mut self, raw: &[RawMaterial]) -> Vec<Material> {
        let mut out: Vec<Material> = Vec::new();
        for m in raw {
            let Some(id) = self.ident(&m.id, "material id") else { continue };
            if out.iter().any(|o| o.id == id) {
                self.err(m.id.span(), "duplicate-id", format!("material `{id}` is declared twice"));
                continue;
            }
            let name = self.text(&m.name, "material name").unwrap_or_default();
            let form = match m.form.get_ref().as_str() {
                "solid" => Form::Solid,
                "liquid" => Form::Liquid,
                other => {
                    self.err(
                        m.form.span(),
                        "unknown-kind",
                        format!("form `{other}` is not `solid` or `liquid`"),
                    );
                    continue;
                }
            };
            let concentration = self.opt_unit(
                m.concentration_mg_per_g.as_ref(),
                "concentration_mg_per_g",
                MgPerGram::new,
            );
            let density = match &m.density_g_per_ml {
                Some(d) => self.positive(d, "density_g_per_ml", Density::new),
                None => None,
            };
            if form == Form::Liquid && m.density_g_per_ml.is_none() {
                self.err(
                    m.id.span(),
                    "liquid-needs-density",
                    format!("liquid `{id}` needs density_g_per_ml: pumps dose by weight"),
                );
            }
            out.push(Material { id, name, form, concentration, density });
        }
        out
    }

    fn equipment(&mut self, e: &RawEquipment) -> Option<Equipment> {
        let at = e.kind.span();
        let kind = e.kind.get_ref().as_str();
        let fields: [(&str, bool); 6] = [
            ("capacity_g", e.capacity_g.is_some()),
            ("readability_g", e.readability_g.is_some()),
            ("max_rate_ml_per_min", e.max_rate_ml_per_min.is_some()),
            ("min_c", e.min_c.is_some()),
            ("max_c", e.max_c.is_some()),
            ("max_rpm", e.max_rpm.is_some()),
        ];
        let allowed: &[&str] = match kind {
            "balance" => &["capacity_g", "readability_g"],
            "syringe-pump" | "peristaltic-pump" => &["max_rate_ml_per_min"],
            "heater" => &["min_c", "max_c"],
            "mixer" => &["max_rpm"],
            other => {
                self.err(
                    at,
                    "unknown-kind",
                    format!(
                        "equipment kind `{other}` is not one of balance, syringe-pump, peristaltic-pump, heater, mixer"
                    ),
                );
                return None;
            }
        };
        for (name, present) in fields {
            if present && !allowed.contains(&name) {
                self.err(
                    at.clone(),
                    "equipment-field",
                    format!("`{name}` does not apply to a {kind}"),
                );
            }
        }
        match kind {
            "balance" => {
                let c = self.required(e.capacity_g.as_ref(), at.clone(), "capacity_g")?;
                let r = self.required(e.readability_g.as_ref(), at, "readability_g")?;
                Some(Equipment::Balance {
                    capacity: self.positive(c, "capacity_g", Mass::new)?,
                    readability: self.positive(r, "readability_g", Mass::new)?,
                })
            }
            "syringe-pump" | "peristaltic-pump" => {
                let r = self.required(e.max_rate_ml_per_min.as_ref(), at, "max_rate_ml_per_min")?;
                Some(Equipment::Pump {
                    pump: if kind == "syringe-pump" {
                        PumpKind::Syringe
                    } else {
                        PumpKind::Peristaltic
                    },
                    max_rate: self.positive(r, "max_rate_ml_per_min", Rate::new)?,
                })
            }
            "heater" => {
                let lo = self.required(e.min_c.as_ref(), at.clone(), "min_c")?;
                let hi = self.required(e.max_c.as_ref(), at.clone(), "max_c")?;
                let (min, max) = (
                    self.unit(lo, "min_c", Temperature::new)?,
                    self.unit(hi, "max_c", Temperature::new)?,
                );
                if min > max {
                    self.err(at, "bounds-order", "heater min_c is greater than max_c".to_owned());
                    return None;
                }
                Some(Equipment::Heater { min, max })
            }
            _ => {
                let r = self.required(e.max_rpm.as_ref(), at, "max_rpm")?;
                Some(Equipment::Mixer { max_speed: self.positive(r, "max_rpm", Speed::new)? })
            }
        }
    }

    fn personalisation(
        &mut self,
        p: &S<RawPersonalisation>,
        materials: &[Material],
    ) -> Option<Personalisation> {
        let span = p.span();
        let p = p.get_ref();
        let rule = self.ident(&p.rule, "rule");
        let rule_revision = self.revision(&p.rule_revision, "rule_revision");
        let weight = p.weight_kg.as_ref().and_then(|r| self.range(r, "weight_kg", BodyWeight::new));
        let age = p.age_years.as_ref().and_then(|r| {
            let b = self.range(r, "age_years", |v| {
                if v >= Fixed::ZERO && v <= Fixed::from_int(130) && v.micros() % 1_000_000 == 0 {
                    Ok(v)
                } else {
                    Err(OutOfRange {
                        value: v,
                        unit: "years",
                        min: Fixed::ZERO,
                        max: Fixed::from_int(130),
                    })
                }
            })?;
            let years = |v: Fixed| u16::try_from(v.micros() / 1_000_000).unwrap_or(0);
            Some(Bounds { min: years(b.min), max: years(b.max) })
        });

        let mut genes: Vec<GeneInput> = Vec::new();
        for g in &p.genes {
            let g_ref = g.get_ref();
            let gene = match Gene::new(g_ref.gene.get_ref()) {
                Ok(gene) => gene,
                Err(e) => {
                    self.err(g_ref.gene.span(), "gene-symbol", e.to_string());
                    continue;
                }
            };
            let by = match g_ref.by.get_ref().as_str() {
                "phenotype" => MatchBy::Phenotype,
                "diplotype" => MatchBy::Diplotype,
                other => {
                    self.err(
                        g_ref.by.span(),
                        "unknown-kind",
                        format!("match `{other}` is not `phenotype` or `diplotype`"),
                    );
                    continue;
                }
            };
            if genes.iter().any(|x| x.gene == gene) {
                self.err(
                    g_ref.gene.span(),
                    "duplicate-id",
                    format!("gene {gene} is declared twice"),
                );
                continue;
            }
            genes.push(GeneInput { gene, by });
        }

        let dose = self.dose(&p.dose, weight.is_some());
        let product = self.product(&p.product, materials);

        let mut rows = Vec::new();
        if p.row.is_empty() {
            self.err(
                span,
                "empty-table",
                "personalisation needs at least one [[personalisation.row]]".to_owned(),
            );
        }
        for r in &p.row {
            if let Some(row) = self.row(r, &genes, materials) {
                rows.push(row);
            }
        }
        Some(Personalisation {
            rule: rule?,
            rule_revision: rule_revision?,
            needs_qa: p.needs_qa,
            weight,
            age,
            genes,
            dose: dose?,
            product: product?,
            rows,
        })
    }

    fn dose(&mut self, d: &S<RawDose>, has_weight_bounds: bool) -> Option<DoseRule> {
        let at = d.span();
        let d = d.get_ref();
        let basis = match (&d.mg_per_kg, &d.fixed_mg) {
            (Some(k), None) => {
                if !has_weight_bounds {
                    self.err(
                        k.span(),
                        "weight-bounds-required",
                        "a per-kg dose needs personalisation.weight_kg = { min, max }".to_owned(),
                    );
                }
                DoseBasis::PerKg(self.positive(k, "mg_per_kg", MgPerKg::new)?)
            }
            (None, Some(f)) => DoseBasis::Fixed(self.positive(f, "fixed_mg", Milligrams::new)?),
            _ => {
                self.err(at, "dose-basis", "give exactly one of mg_per_kg or fixed_mg".to_owned());
                return None;
            }
        };
        let days = match u16::try_from(*d.days.get_ref()) {
            Ok(n) if (1..=366).contains(&n) => n,
            _ => {
                self.err(d.days.span(), "unit-range", "days must be 1–366".to_owned());
                return None;
            }
        };
        let daily = self.range(&d.daily_mg, "daily_mg", Milligrams::new)?;
        let out_of_bounds = match d.out_of_bounds.get_ref().as_str() {
            "clamp" => OutOfBounds::Clamp,
            "refuse" => OutOfBounds::Refuse,
            other => {
                self.err(
                    d.out_of_bounds.span(),
                    "unknown-kind",
                    format!("out_of_bounds `{other}` is not `clamp` or `refuse`"),
                );
                return None;
            }
        };
        Some(DoseRule { basis, days, daily, out_of_bounds })
    }

    fn active_material(&mut self, s: &S<String>, materials: &[Material]) -> Option<Ident> {
        let id = self.ident(s, "material")?;
        match materials.iter().find(|m| m.id == id) {
            None => {
                self.err(s.span(), "unknown-material", format!("no [[material]] has id `{id}`"));
                None
            }
            Some(m) if m.concentration.is_none() => {
                self.err(
                    s.span(),
                    "active-needs-concentration",
                    format!("active `{id}` needs concentration_mg_per_g"),
                );
                None
            }
            Some(_) => Some(id),
        }
    }

    fn product(&mut self, p: &S<RawProduct>, materials: &[Material]) -> Option<Product> {
        let p = p.get_ref();
        let active = self.active_material(&p.active, materials);
        let vehicle = match &p.vehicle {
            Some(v) => {
                let id = self.ident(v, "vehicle")?;
                match materials.iter().find(|m| m.id == id) {
                    Some(m) if m.density.is_some() => Some(id),
                    Some(_) => {
                        self.err(
                            v.span(),
                            "vehicle-needs-density",
                            format!("vehicle `{id}` needs density_g_per_ml"),
                        );
                        return None;
                    }
                    None => {
                        self.err(
                            v.span(),
                            "unknown-material",
                            format!("no [[material]] has id `{id}`"),
                        );
                        return None;
                    }
                }
            }
            None => None,
        };
        let concentration =
            self.positive(&p.concentration_mg_per_ml, "concentration_mg_per_ml", MgPerMl::new);
        Some(Product { active: active?, vehicle, concentration: concentration? })
    }

    fn row(&mut self, r: &S<RawRow>, genes: &[GeneInput], materials: &[Material]) -> Option<Row> {
        let at = r.span();
        let r = r.get_ref();
        let label = self.text(&r.label, "label");
        let mut when = Vec::new();
        let mut ok = true;
        if r.when.get_ref().is_empty() {
            self.err(
                r.when.span(),
                "empty-when",
                "a row needs at least one condition: an empty `when` would match every patient"
                    .to_owned(),
            );
            ok = false;
        }
        let accept_possible = r.accept_possible.as_ref().is_some_and(|a| *a.get_ref());
        if let Some(a) = &r.accept_possible
            && *a.get_ref()
            && !genes.iter().any(|g| g.by == MatchBy::Phenotype)
        {
            self.err(
                a.span(),
                "accept-possible",
                "`accept_possible` applies only to genes matched by phenotype; this rule has none"
                    .to_owned(),
            );
            ok = false;
        }
        for (gene, value) in r.when.get_ref() {
            let Some(input) = Gene::new(gene).ok().and_then(|g| genes.iter().find(|i| i.gene == g))
            else {
                self.err(
                    r.when.span(),
                    "gene-undeclared",
                    format!("`{gene}` is not declared in personalisation.genes"),
                );
                ok = false;
                continue;
            };
            let m = match input.by {
                MatchBy::Diplotype => Match::Diplotype(canonical_diplotype(value.get_ref())),
                MatchBy::Phenotype => match Phenotype::parse(value.get_ref()) {
                    Ok(p) if !p.category.is_determinate() => {
                        self.err(
                            value.span(),
                            "no-indeterminate-row",
                            "rows cannot act on Indeterminate or No Call: those always refuse and need QA".to_owned(),
                        );
                        ok = false;
                        continue;
                    }
                    Ok(p) => Match::Category(p.category),
                    Err(e) => {
                        self.err(value.span(), "phenotype-term", e.to_string());
                        ok = false;
                        continue;
                    }
                },
            };
            when.push((input.gene.clone(), m));
        }
        let outcome = match (&r.factor, &r.refuse) {
            (Some(f), None) => {
                let factor = self.unit(f, "factor", Factor::new);
                let guideline = r
                    .guideline_range
                    .as_ref()
                    .and_then(|g| self.range(g, "guideline_range", Factor::new));
                if let (Some(fac), Some(g), Some(span)) =
                    (factor, guideline, r.guideline_range.as_ref())
                    && !g.contains(fac)
                {
                    self.err(
                        span.span(),
                        "guideline-range",
                        format!(
                            "factor {} is outside the guideline's {}–{}",
                            fac.value(),
                            g.min.value(),
                            g.max.value()
                        ),
                    );
                }
                let active = r.active.as_ref().and_then(|a| self.active_material(a, materials));
                Outcome::Dose { factor: factor?, guideline, active, needs_qa: r.needs_qa }
            }
            (None, Some(reason)) => {
                for (k, present) in [
                    ("guideline_range", r.guideline_range.is_some()),
                    ("active", r.active.is_some()),
                ] {
                    if present {
                        self.err(
                            at.clone(),
                            "row-field",
                            format!("`{k}` does not apply to a refusing row"),
                        );
                    }
                }
                Outcome::Refuse { reason: self.text(reason, "refuse")? }
            }
            _ => {
                self.err(at, "row-outcome", "give exactly one of factor or refuse".to_owned());
                return None;
            }
        };
        ok.then_some(Row { label: label?, when, accept_possible, outcome })
    }

    fn procedure(&mut self, raw: &[RawUnitProcedure], known: &Known<'_>) -> Option<Procedure> {
        if raw.is_empty() {
            self.err(
                0..0,
                "empty-procedure",
                "a recipe needs at least one [[unit_procedure]]".to_owned(),
            );
            return None;
        }
        let mut seen_units: Vec<Ident> = Vec::new();
        let mut seen_phases: Vec<Ident> = Vec::new();
        let mut units = Vec::new();
        for u in raw {
            let id = self.ident(&u.id, "unit procedure id");
            if let Some(id) = &id {
                if seen_units.contains(id) {
                    self.err(
                        u.id.span(),
                        "duplicate-id",
                        format!("unit procedure `{id}` appears twice"),
                    );
                }
                seen_units.push(id.clone());
            }
            let name = self.text(&u.name, "name");
            if u.operation.is_empty() {
                self.err(
                    u.id.span(),
                    "empty-procedure",
                    format!("unit procedure `{}` has no operation", u.id.get_ref()),
                );
            }
            let mut seen_ops: Vec<Ident> = Vec::new();
            let mut operations = Vec::new();
            for o in &u.operation {
                let oid = self.ident(&o.id, "operation id");
                if let Some(oid) = &oid {
                    if seen_ops.contains(oid) {
                        self.err(
                            o.id.span(),
                            "duplicate-id",
                            format!("operation `{oid}` appears twice in this unit procedure"),
                        );
                    }
                    seen_ops.push(oid.clone());
                }
                let oname = self.text(&o.name, "name");
                if o.phase.is_empty() {
                    self.err(
                        o.id.span(),
                        "empty-procedure",
                        format!("operation `{}` has no phase", o.id.get_ref()),
                    );
                }
                let mut phases = Vec::new();
                for p in &o.phase {
                    if let Some(phase) = self.phase(p, known) {
                        if seen_phases.contains(&phase.id) {
                            self.err(
                                p.id.span(),
                                "duplicate-id",
                                format!("phase `{}` appears twice in the recipe", phase.id),
                            );
                        }
                        seen_phases.push(phase.id.clone());
                        phases.push(phase);
                    }
                }
                if let (Some(id), Some(name)) = (oid, oname) {
                    operations.push(Operation { id, name, phases });
                }
            }
            if let (Some(id), Some(name)) = (id, name) {
                units.push(UnitProcedure { id, name, operations });
            }
        }
        Some(Procedure { unit_procedures: units })
    }

    fn pump(&mut self, s: &S<String>) -> Option<PumpKind> {
        match s.get_ref().as_str() {
            "syringe-pump" => Some(PumpKind::Syringe),
            "peristaltic-pump" => Some(PumpKind::Peristaltic),
            other => {
                self.err(
                    s.span(),
                    "unknown-kind",
                    format!("pump `{other}` is not `syringe-pump` or `peristaltic-pump`"),
                );
                None
            }
        }
    }

    fn material_ref(&mut self, s: &S<String>, known: &Known<'_>) -> Option<Ident> {
        let id = self.ident(s, "material")?;
        if known.materials.iter().any(|m| m.id == id) {
            Some(id)
        } else {
            self.err(s.span(), "unknown-material", format!("no [[material]] has id `{id}`"));
            None
        }
    }

    fn phase(&mut self, p: &RawPhase, known: &Known<'_>) -> Option<Phase> {
        let id = self.ident(&p.id, "phase id");
        let resume = match p.resume.get_ref().as_str() {
            "resume" => Some(ResumePolicy::Resume),
            "repeat" => Some(ResumePolicy::Repeat),
            "discard" => Some(ResumePolicy::Discard),
            "qa-decision" => Some(ResumePolicy::QaDecision),
            other => {
                self.err(
                    p.resume.span(),
                    "resume-policy",
                    format!("resume `{other}` is not one of resume, repeat, discard, qa-decision"),
                );
                None
            }
        };
        let kind_name = p.kind.get_ref().as_str();
        let fields: [(&str, Option<Range<usize>>); 15] = [
            ("pump", p.pump.as_ref().map(Spanned::span)),
            ("volume_ml", p.volume_ml.as_ref().map(Spanned::span)),
            ("material", p.material.as_ref().map(Spanned::span)),
            ("dose", p.dose.as_ref().map(Spanned::span)),
            ("mass_g", p.mass_g.as_ref().map(Spanned::span)),
            ("bounds_g", p.bounds_g.as_ref().map(Spanned::span)),
            ("tolerance_g", p.tolerance_g.as_ref().map(Spanned::span)),
            ("target_c", p.target_c.as_ref().map(Spanned::span)),
            ("ramp_c_per_min", p.ramp_c_per_min.as_ref().map(Spanned::span)),
            ("min_c", p.min_c.as_ref().map(Spanned::span)),
            ("max_c", p.max_c.as_ref().map(Spanned::span)),
            ("duration_s", p.duration_s.as_ref().map(Spanned::span)),
            ("within_s", p.within_s.as_ref().map(Spanned::span)),
            ("speed_rpm", p.speed_rpm.as_ref().map(Spanned::span)),
            ("description", p.description.as_ref().map(Spanned::span)),
        ];
        let allowed: &[&str] = match kind_name {
            "prime" => &["pump", "volume_ml"],
            "tare" => &[],
            "dispense" => &["pump", "material", "dose", "mass_g", "bounds_g", "tolerance_g"],
            "heat" => &["target_c", "ramp_c_per_min"],
            "hold" => &["min_c", "max_c", "duration_s"],
            "mix" => &["speed_rpm", "duration_s"],
            "cool" => &["target_c", "within_s"],
            "scan" => &["material", "dose"],
            "clean" => &["description", "pump", "volume_ml"],
            other => {
                self.err(
                    p.kind.span(),
                    "unknown-kind",
                    format!("phase kind `{other}` is not one of prime, tare, dispense, heat, hold, mix, cool, scan, clean"),
                );
                return None;
            }
        };
        for (name, span) in &fields {
            if let Some(span) = span
                && !allowed.contains(name)
            {
                self.err(
                    span.clone(),
                    "phase-field",
                    format!("`{name}` does not apply to a {kind_name} phase"),
                );
            }
        }
        let at = p.kind.span();
        let kind = match kind_name {
            "prime" => {
                let pump =
                    self.required(p.pump.as_ref(), at.clone(), "pump").and_then(|s| self.pump(s));
                let v = self
                    .required(p.volume_ml.as_ref(), at, "volume_ml")
                    .and_then(|s| self.positive(s, "volume_ml", Volume::new));
                PhaseKind::Prime { pump: pump?, volume: v? }
            }
            "tare" => PhaseKind::Tare,
            "dispense" => self.dispense(p, known)?,
            "heat" => {
                let t = self
                    .required(p.target_c.as_ref(), at.clone(), "target_c")
                    .and_then(|s| self.unit(s, "target_c", Temperature::new));
                let r = self
                    .required(p.ramp_c_per_min.as_ref(), at, "ramp_c_per_min")
                    .and_then(|s| self.positive(s, "ramp_c_per_min", Ramp::new));
                PhaseKind::Heat { target: t?, ramp: r? }
            }
            "hold" => {
                let lo = self
                    .required(p.min_c.as_ref(), at.clone(), "min_c")
                    .and_then(|s| self.unit(s, "min_c", Temperature::new));
                let hi = self
                    .required(p.max_c.as_ref(), at.clone(), "max_c")
                    .and_then(|s| self.unit(s, "max_c", Temperature::new));
                let d = self
                    .required(p.duration_s.as_ref(), at.clone(), "duration_s")
                    .and_then(|s| self.positive(s, "duration_s", Seconds::new));
                let (lo, hi, d) = (lo?, hi?, d?);
                if lo >= hi {
                    self.err(at, "bounds-order", "hold band: min_c must be below max_c".to_owned());
                    return None;
                }
                PhaseKind::Hold { band: Bounds { min: lo, max: hi }, duration: d }
            }
            "mix" => {
                let s = self
                    .required(p.speed_rpm.as_ref(), at.clone(), "speed_rpm")
                    .and_then(|s| self.positive(s, "speed_rpm", Speed::new));
                let d = self
                    .required(p.duration_s.as_ref(), at, "duration_s")
                    .and_then(|s| self.positive(s, "duration_s", Seconds::new));
                PhaseKind::Mix { speed: s?, duration: d? }
            }
            "cool" => {
                let t = self
                    .required(p.target_c.as_ref(), at.clone(), "target_c")
                    .and_then(|s| self.unit(s, "target_c", Temperature::new));
                let w = self
                    .required(p.within_s.as_ref(), at, "within_s")
                    .and_then(|s| self.positive(s, "within_s", Seconds::new));
                PhaseKind::Cool { target: t?, within: w? }
            }
            "scan" => match (&p.material, &p.dose) {
                (Some(m), None) => {
                    PhaseKind::Scan { material: ScanTarget::Material(self.material_ref(m, known)?) }
                }
                (None, Some(d)) if d.get_ref() == "active" => {
                    if known.personalisation.is_none() {
                        self.err(
                            d.span(),
                            "personalisation-required",
                            "`dose = \"active\"` needs a [personalisation] table".to_owned(),
                        );
                        return None;
                    }
                    PhaseKind::Scan { material: ScanTarget::Active }
                }
                _ => {
                    self.err(
                        at,
                        "scan-target",
                        "a scan names `material`, or `dose = \"active\"`".to_owned(),
                    );
                    return None;
                }
            },
            _ => {
                let description = self
                    .required(p.description.as_ref(), at, "description")
                    .and_then(|s| self.text(s, "description"));
                let flush = match (&p.pump, &p.volume_ml) {
                    (Some(pu), Some(v)) => {
                        Some((self.pump(pu)?, self.positive(v, "volume_ml", Volume::new)?))
                    }
                    (None, None) => None,
                    _ => {
                        self.err(
                            p.kind.span(),
                            "clean-flush",
                            "a flush names both pump and volume_ml".to_owned(),
                        );
                        return None;
                    }
                };
                PhaseKind::Clean { description: description?, flush }
            }
        };
        Some(Phase { id: id?, kind, resume: resume? })
    }

    fn dispense(&mut self, p: &RawPhase, known: &Known<'_>) -> Option<PhaseKind> {
        let at = p.kind.span();
        let tolerance = self
            .required(p.tolerance_g.as_ref(), at.clone(), "tolerance_g")
            .and_then(|s| self.positive(s, "tolerance_g", Mass::new));
        let pump = match &p.pump {
            Some(s) => Some(self.pump(s)?),
            None => None,
        };
        let target = match (&p.material, &p.dose) {
            (Some(m), None) => {
                if p.bounds_g.is_some() {
                    self.err(at.clone(), "phase-field", "`bounds_g` is for personalised (`dose`) dispenses; a fixed one takes mass_g".to_owned());
                }
                let material = self.material_ref(m, known)?;
                let mass = self
                    .required(p.mass_g.as_ref(), at, "mass_g")
                    .and_then(|s| self.positive(s, "mass_g", Mass::new))?;
                DispenseTarget::Fixed { material, mass }
            }
            (None, Some(d)) => {
                if p.mass_g.is_some() {
                    self.err(
                        at.clone(),
                        "phase-field",
                        "`mass_g` is for fixed dispenses; a personalised one takes bounds_g"
                            .to_owned(),
                    );
                }
                let Some(pers) = known.personalisation else {
                    self.err(
                        d.span(),
                        "personalisation-required",
                        format!("`dose = \"{}\"` needs a [personalisation] table", d.get_ref()),
                    );
                    return None;
                };
                let bounds = self
                    .required(p.bounds_g.as_ref(), at, "bounds_g")
                    .and_then(|b| self.range(b, "bounds_g", Mass::new))?;
                match d.get_ref().as_str() {
                    "active" => DispenseTarget::Active { bounds },
                    "vehicle" if pers.product.vehicle.is_some() => {
                        DispenseTarget::Vehicle { bounds }
                    }
                    "vehicle" => {
                        self.err(
                            d.span(),
                            "personalisation-required",
                            "`dose = \"vehicle\"` needs personalisation.product.vehicle".to_owned(),
                        );
                        return None;
                    }
                    other => {
                        self.err(
                            d.span(),
                            "unknown-kind",
                            format!("dose `{other}` is not `active` or `vehicle`"),
                        );
                        return None;
                    }
                }
            }
            _ => {
                self.err(
                    at,
                    "dispense-target",
                    "a dispense names either `material` (with mass_g) or `dose` (with bounds_g)"
                        .to_owned(),
                );
                return None;
            }
        };
        Some(PhaseKind::Dispense { target, tolerance: tolerance?, pump })
    }

    /// Rules that relate parts of the recipe: equipment covers every phase, forms fit pumps.
    fn cross_checks(
        &mut self,
        raw: &RawFile,
        procedure: &Procedure,
        equipment: &[Equipment],
        materials: &[Material],
        pers: Option<&Personalisation>,
    ) {
        let raw_phases: Vec<&RawPhase> = raw
            .unit_procedure
            .iter()
            .flat_map(|u| u.operation.iter().flat_map(|o| o.phase.iter()))
            .collect();
        let phases: Vec<&Phase> = procedure
            .unit_procedures
            .iter()
            .flat_map(|u| u.operations.iter().flat_map(|o| o.phases.iter()))
            .collect();
        let balance = equipment.iter().find_map(|e| match e {
            Equipment::Balance { capacity, readability } => Some((*capacity, *readability)),
            _ => None,
        });
        let heater = equipment.iter().find_map(|e| match e {
            Equipment::Heater { min, max } => Some(Bounds { min: *min, max: *max }),
            _ => None,
        });
        let mixer = equipment.iter().find_map(|e| match e {
            Equipment::Mixer { max_speed } => Some(*max_speed),
            _ => None,
        });
        let has_pump = |k: PumpKind| {
            equipment.iter().any(|e| matches!(e, Equipment::Pump { pump, .. } if *pump == k))
        };
        let mut uses_active = false;
        for phase in phases {
            let Some(rp) = raw_phases.iter().find(|r| r.id.get_ref() == phase.id.as_str()) else {
                continue;
            };
            let at = rp.kind.span();
            let need_pump = |cx: &mut Self, k: PumpKind| {
                if !has_pump(k) {
                    let name =
                        if k == PumpKind::Syringe { "syringe-pump" } else { "peristaltic-pump" };
                    cx.err(
                        at.clone(),
                        "equipment-missing",
                        format!(
                            "phase `{}` uses a {name}, but no [[equipment]] declares one",
                            phase.id
                        ),
                    );
                }
            };
            match &phase.kind {
                PhaseKind::Prime { pump, .. } => need_pump(self, *pump),
                PhaseKind::Clean { flush: Some((pump, _)), .. } => need_pump(self, *pump),
                PhaseKind::Dispense { target, tolerance, pump } => {
                    if let Some(k) = pump {
                        need_pump(self, *k);
                    }
                    let (most, form) = match target {
                        DispenseTarget::Fixed { material, mass } => {
                            (*mass, materials.iter().find(|m| &m.id == material).map(|m| m.form))
                        }
                        DispenseTarget::Active { bounds } => {
                            uses_active = true;
                            let form = pers
                                .and_then(|p| materials.iter().find(|m| m.id == p.product.active))
                                .map(|m| m.form);
                            (bounds.max, form)
                        }
                        DispenseTarget::Vehicle { bounds } => {
                            let form = pers
                                .and_then(|p| p.product.vehicle.as_ref())
                                .and_then(|v| materials.iter().find(|m| &m.id == v))
                                .map(|m| m.form);
                            (bounds.max, form)
                        }
                    };
                    match (form, pump) {
                        (Some(Form::Liquid), None) => self.err(
                            at.clone(),
                            "dispense-form",
                            format!("phase `{}` dispenses a liquid: name its pump", phase.id),
                        ),
                        (Some(Form::Solid), Some(_)) => self.err(
                            at.clone(),
                            "dispense-form",
                            format!("phase `{}` dispenses a solid: it cannot be pumped", phase.id),
                        ),
                        _ => {}
                    }
                    match balance {
                        None => self.err(
                            at.clone(),
                            "equipment-missing",
                            format!(
                                "phase `{}` dispenses by weight, but no balance is declared",
                                phase.id
                            ),
                        ),
                        Some((capacity, readability)) => {
                            let top =
                                most.value().checked_add(tolerance.value()).unwrap_or(most.value());
                            if top > capacity.value() {
                                self.err(at.clone(), "equipment-range", format!("phase `{}` may weigh up to {top} g, above the balance capacity {capacity}", phase.id));
                            }
                            if *tolerance < readability {
                                self.err(at.clone(), "equipment-range", format!("phase `{}`: tolerance {tolerance} is finer than the balance readability {readability}", phase.id));
                            }
                        }
                    }
                }
                PhaseKind::Heat { target, .. } | PhaseKind::Cool { target, .. } => match heater {
                    None => self.err(
                        at.clone(),
                        "equipment-missing",
                        format!("phase `{}` needs a heater", phase.id),
                    ),
                    Some(h) if !h.contains(*target) => self.err(
                        at.clone(),
                        "equipment-range",
                        format!(
                            "phase `{}`: {target} is outside the heater range {}–{}",
                            phase.id, h.min, h.max
                        ),
                    ),
                    Some(_) => {}
                },
                PhaseKind::Hold { band, .. } => match heater {
                    None => self.err(
                        at.clone(),
                        "equipment-missing",
                        format!("phase `{}` needs a heater", phase.id),
                    ),
                    Some(h) if !(h.contains(band.min) && h.contains(band.max)) => self.err(
                        at.clone(),
                        "equipment-range",
                        format!(
                            "phase `{}`: the band is outside the heater range {}–{}",
                            phase.id, h.min, h.max
                        ),
                    ),
                    Some(_) => {}
                },
                PhaseKind::Mix { speed, .. } => match mixer {
                    None => self.err(
                        at.clone(),
                        "equipment-missing",
                        format!("phase `{}` needs a mixer", phase.id),
                    ),
                    Some(m) if *speed > m => self.err(
                        at.clone(),
                        "equipment-range",
                        format!("phase `{}`: {speed} is above the mixer's {m}", phase.id),
                    ),
                    Some(_) => {}
                },
                PhaseKind::Tare | PhaseKind::Scan { .. } | PhaseKind::Clean { flush: None, .. } => {
                }
            }
        }
        if let (Some(_), false, Some(p)) = (pers, uses_active, raw.personalisation.as_ref()) {
            self.err(
                p.span(),
                "unused-dose",
                "the personalised dose is never dispensed: add a phase with `dose = \"active\"`"
                    .to_owned(),
            );
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("°C\nx", 4), (2, 1));
        assert_eq!(line_col("°x", 2), (1, 2));
    }
}
