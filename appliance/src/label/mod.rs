//! The product label a pharmacist sticks on the patient's bottle at release: patient ID,
//! product, strength, quantity, batch ID, beyond-use date, storage condition, auxiliary
//! warnings, who released it where, and a Code 128 barcode of the patient and batch IDs.
//!
//! Pure: everything is passed in (the dates too), nothing is read or written. A [`Label`] is
//! checked once when it is made — every character printable, the dates in order, every line
//! fitting the 4 × 2 inch label at a legible size — so that [`Label::content`] (recorded
//! with the batch), [`Label::zpl`] (thermal printers) and [`Label::pdf`] cannot fail, and
//! both renderings come from one layout: the same lines in the same places.
//!
//! # Barcode content
//! `<patient ID>/<batch ID>`, e.g. `P-0001/B-20261121-001`. A batch ID never contains `/`,
//! so a reader splits at the last `/` even when a patient ID contains one.

mod code128;
mod layout;
mod metrics;
mod pdf;
mod zpl;

use galen_recipes::model::{Recipe, windows_1252};
use galen_recipes::patient::PatientId;
use galen_recipes::personalise::Parameters;
use galen_recipes::quantity::Volume;
use serde_json::json;

pub use self::code128::{Barcode, BarcodeError, CodeSet, QUIET_ZONE_MODULES, Step};
pub use crate::engine::batch::Date;

/// The version of [`Label::content`]'s shape, recorded in it.
pub const CONTENT_FORMAT: &str = "galen-label-v1";

/// What a label says. [`Label::new`] checks it; [`Label::for_release`] fills it from the
/// recipe and the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelFields {
    /// Hospital patient identifier.
    pub patient_id: String,
    /// The patient's name, where the site prints names on labels.
    pub patient_name: Option<String>,
    /// The product: the recipe's name.
    pub product: String,
    /// Drug per volume, e.g. `10 mg/mL`.
    pub strength: String,
    /// Amount in the bottle, e.g. `98.0 mL`.
    pub quantity: String,
    /// The batch.
    pub batch_id: String,
    /// The day the preparation began, at the site.
    pub prepared: Date,
    /// The last day the preparation may be used.
    pub beyond_use: Date,
    /// Storage condition from the recipe.
    pub storage: String,
    /// Auxiliary warnings from the recipe, one per line.
    pub auxiliary: Vec<String>,
    /// Site and appliance, e.g. `St Elsewhere Pharmacy, galen-cu1 0042`.
    pub site: String,
    /// Printed name of the releasing pharmacist.
    pub released_by: String,
}

/// What the appliance knows at release that the recipe does not.
#[derive(Debug, Clone, Copy)]
pub struct Release<'a> {
    /// The batch's patient.
    pub patient_id: &'a PatientId,
    /// The patient's name, where the site prints names on labels.
    pub patient_name: Option<&'a str>,
    /// The batch.
    pub batch_id: &'a str,
    /// The local calendar date at the site when the preparation began (USP <795> counts the
    /// beyond-use date from then).
    pub prepared: Date,
    /// Site and appliance.
    pub site: &'a str,
    /// Printed name of the releasing pharmacist.
    pub released_by: &'a str,
}

/// Why a label cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// The recipe revision predates labels.
    #[error(
        "recipe {recipe} revision {revision} has no [label] table: its batches cannot be released until a revision with one is installed"
    )]
    NoLabel {
        /// Recipe id.
        recipe: String,
        /// Its revision.
        revision: u32,
    },
    /// Without a personalised product the recipe states no strength.
    #[error("recipe {recipe} has no [personalisation.product], so the label has no strength")]
    NoProduct {
        /// Recipe id.
        recipe: String,
    },
    /// A date that is not on the calendar.
    #[error("{date} is not a calendar date")]
    NotADate {
        /// The date given.
        date: Date,
    },
    /// The beyond-use date would fall after the year 9999.
    #[error("{prepared} plus {days} days is past the year 9999")]
    DateOutOfRange {
        /// Preparation date.
        prepared: Date,
        /// Days added.
        days: u16,
    },
    /// The beyond-use date is not after preparation.
    #[error("beyond-use date {beyond_use} is not after the preparation date {prepared}")]
    BeyondUseNotAfterPrepared {
        /// Preparation date.
        prepared: Date,
        /// Beyond-use date.
        beyond_use: Date,
    },
    /// A field is blank.
    #[error("{field} is empty")]
    Empty {
        /// Which field.
        field: &'static str,
    },
    /// A character the label's fonts cannot print.
    #[error("{field}: {shown} cannot be printed on a label", shown = show(*.character))]
    Unprintable {
        /// Which field.
        field: &'static str,
        /// The character.
        character: char,
    },
    /// A batch ID containing the barcode's separator.
    #[error("batch ID `{batch_id}` contains `/`, which separates patient and batch in the barcode")]
    BatchIdSeparator {
        /// The batch ID.
        batch_id: String,
    },
    /// The barcode content cannot be encoded.
    #[error("barcode: {0}")]
    Barcode(#[from] BarcodeError),
    /// Text or barcode too long for the label even at the smallest type size allowed.
    #[error("{field} does not fit on the label, even at the smallest legible size")]
    DoesNotFit {
        /// Which field (or `label` when the lines together are too many).
        field: &'static str,
    },
}

fn show(c: char) -> String {
    if c.is_control() {
        format!("a control character (U+{:04X})", u32::from(c))
    } else {
        format!("`{c}` (U+{:04X})", u32::from(c))
    }
}

/// A checked label, ready to record and print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    fields: LabelFields,
    barcode: Barcode,
    items: Vec<layout::Item>,
}

impl Label {
    /// Checks the fields and lays the label out.
    pub fn new(fields: LabelFields) -> Result<Self, LabelError> {
        let f = &fields;
        let mut texts: Vec<(&'static str, &str)> = vec![
            ("patient ID", &f.patient_id),
            ("product", &f.product),
            ("strength", &f.strength),
            ("quantity", &f.quantity),
            ("batch ID", &f.batch_id),
            ("storage", &f.storage),
            ("site", &f.site),
            ("released by", &f.released_by),
        ];
        if let Some(name) = &f.patient_name {
            texts.push(("patient name", name));
        }
        texts.extend(f.auxiliary.iter().map(|a| ("auxiliary warning", a.as_str())));
        for (field, text) in texts {
            if text.trim().is_empty() {
                return Err(LabelError::Empty { field });
            }
            if let Some(character) = text.chars().find(|c| windows_1252(*c).is_none()) {
                return Err(LabelError::Unprintable { field, character });
            }
        }
        for date in [f.prepared, f.beyond_use] {
            if days_from_civil(date).is_none() {
                return Err(LabelError::NotADate { date });
            }
        }
        if f.beyond_use <= f.prepared {
            return Err(LabelError::BeyondUseNotAfterPrepared {
                prepared: f.prepared,
                beyond_use: f.beyond_use,
            });
        }
        if f.batch_id.contains('/') {
            return Err(LabelError::BatchIdSeparator { batch_id: f.batch_id.clone() });
        }
        let barcode = Barcode::encode(&barcode_data(&f.patient_id, &f.batch_id))?;
        let items = layout::layout(f, &barcode)?;
        Ok(Label { fields, barcode, items })
    }

    /// The label for a released batch: what only the manufacturer decides comes from the
    /// recipe's `[label]` (beyond-use days, storage, warnings), the strength from its product,
    /// the quantity from the personalised volume, and the rest from `release`.
    pub fn for_release(
        recipe: &Recipe,
        parameters: &Parameters,
        release: &Release<'_>,
    ) -> Result<Self, LabelError> {
        let spec = recipe.label.as_ref().ok_or_else(|| LabelError::NoLabel {
            recipe: recipe.id.to_string(),
            revision: recipe.revision,
        })?;
        let product = recipe
            .personalisation
            .as_ref()
            .map(|p| &p.product)
            .ok_or_else(|| LabelError::NoProduct { recipe: recipe.id.to_string() })?;
        Label::new(LabelFields {
            patient_id: release.patient_id.as_str().to_owned(),
            patient_name: release.patient_name.map(str::to_owned),
            product: recipe.name.clone(),
            strength: product.concentration.to_string(),
            quantity: millilitres(parameters.volume),
            batch_id: release.batch_id.to_owned(),
            prepared: release.prepared,
            beyond_use: beyond_use(release.prepared, spec.beyond_use_days)?,
            storage: spec.storage.clone(),
            auxiliary: spec.auxiliary.clone(),
            site: release.site.to_owned(),
            released_by: release.released_by.to_owned(),
        })
    }

    /// What the label says.
    pub fn fields(&self) -> &LabelFields {
        &self.fields
    }

    /// The barcode printed on it.
    pub fn barcode(&self) -> &Barcode {
        &self.barcode
    }

    /// The label's content exactly as recorded with the batch: plain strings, ISO 8601 dates.
    pub fn content(&self) -> serde_json::Value {
        let f = &self.fields;
        json!({
            "format": CONTENT_FORMAT,
            "patient_id": f.patient_id,
            "patient_name": f.patient_name,
            "product": f.product,
            "strength": f.strength,
            "quantity": f.quantity,
            "batch_id": f.batch_id,
            "prepared": f.prepared.to_string(),
            "beyond_use": f.beyond_use.to_string(),
            "storage": f.storage,
            "auxiliary": f.auxiliary,
            "site": f.site,
            "released_by": f.released_by,
            "barcode": {
                "symbology": "code128",
                "data": self.barcode.data(),
                "check": self.barcode.check(),
            },
        })
    }

    /// ZPL II for a 4 × 2 inch label on a 203 dpi printer.
    pub fn zpl(&self) -> String {
        zpl::render(&self.items)
    }

    /// A one-page PDF of the same label, 4 × 2 inches.
    pub fn pdf(&self) -> Vec<u8> {
        pdf::render(&self.items, &self.fields)
    }
}

/// The barcode's text: patient and batch IDs.
pub fn barcode_data(patient_id: &str, batch_id: &str) -> String {
    format!("{patient_id}/{batch_id}")
}

/// The beyond-use date: `days` calendar days after `prepared` (the day of preparation is
/// day 0, as USP <795> counts from the day preparation begins).
pub fn beyond_use(prepared: Date, days: u16) -> Result<Date, LabelError> {
    let start = days_from_civil(prepared).ok_or(LabelError::NotADate { date: prepared })?;
    civil_from_days(start + i64::from(days))
        .filter(|d| d.0 <= 9999)
        .ok_or(LabelError::DateOutOfRange { prepared, days })
}

/// A volume to a tenth of a millilitre, rounded half up: `98.0 mL`.
fn millilitres(v: Volume) -> String {
    // Volumes are never negative (`Volume::MIN` is 0).
    let tenths = (v.value().micros() + 50_000) / 100_000;
    format!("{}.{} mL", tenths / 10, tenths % 10)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u8) -> u8 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date, or `None` if it is not a date.
/// After Howard Hinnant's `days_from_civil`: years start in March, so the leap day is last.
fn days_from_civil(date: Date) -> Option<i64> {
    let Date(y, m, d) = date;
    let y = i64::from(y);
    if y < 1 || !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    let (m, d) = (i64::from(m), i64::from(d));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// The inverse of [`days_from_civil`]; `None` outside the years `Date` holds.
fn civil_from_days(days: i64) -> Option<Date> {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    Some(Date(u16::try_from(y).ok()?, u8::try_from(m).ok()?, u8::try_from(d).ok()?))
}

#[cfg(test)]
mod tests;
