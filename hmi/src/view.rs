//! The view model: what the screens show, made from what the appliance said. Plain Rust with
//! no Slint and no D-Bus, so every rule about display (roles, formats, parsing the API's JSON
//! into rows, reading a scanner's line) is unit-tested here and the `.slint` files only lay out.
//!
//! Nothing here decides anything a record depends on: doses, checks of lots and expiries and
//! every state change are the appliance's; this module only reformats its answers.

use std::collections::{HashMap, VecDeque};
use std::time::SystemTime;

use serde::Deserialize;

/// A user's role, as the appliance names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Pharmacist,
    Verifier,
    Qa,
    Inspector,
    Admin,
    Service,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pharmacist" => Self::Pharmacist,
            "verifier" => Self::Verifier,
            "qa" => Self::Qa,
            "inspector" => Self::Inspector,
            "admin" => Self::Admin,
            "service" => Self::Service,
            _ => return None,
        })
    }

    /// How the role reads on the screen's title bar.
    pub fn title(self) -> &'static str {
        match self {
            Self::Pharmacist => "Pharmacist",
            Self::Verifier => "Verifier",
            Self::Qa => "QA",
            Self::Inspector => "Inspector",
            Self::Admin => "Administrator",
            Self::Service => "Service",
        }
    }

    /// The screens this role may open, in the navigation's order. What a role cannot do is
    /// not shown at all; the appliance refuses it anyway.
    pub fn screens(self) -> &'static [Screen] {
        use Screen::*;
        match self {
            Self::Pharmacist => &[Home, NewBatch, Run, Alarms, Recipes, Records],
            Self::Verifier => &[Home, Recipes, Records],
            Self::Qa => &[Home, Review, Recipes, Records],
            Self::Inspector => &[Home, Records],
            Self::Admin => &[Home, Users, Records],
            Self::Service => &[Home, Alarms],
        }
    }

    /// Whether this role acknowledges alarms (the appliance asks for the batch-running right).
    pub fn acknowledges_alarms(self) -> bool {
        matches!(self, Self::Pharmacist)
    }

    /// Whether this role exports records to a stick.
    pub fn exports(self) -> bool {
        matches!(self, Self::Qa | Self::Inspector)
    }

    /// Whether this role activates recipe revisions.
    pub fn activates_recipes(self) -> bool {
        matches!(self, Self::Qa)
    }

    /// Whether this role installs the manufacturer's recipe updates from a stick.
    pub fn installs_recipes(self) -> bool {
        matches!(self, Self::Qa)
    }
}

/// A screen; its id is what the `.slint` side switches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Home,
    Recipes,
    NewBatch,
    Run,
    Alarms,
    Review,
    Records,
    Users,
}

impl Screen {
    pub const ALL: [Screen; 8] = [
        Self::Home,
        Self::Recipes,
        Self::NewBatch,
        Self::Run,
        Self::Alarms,
        Self::Review,
        Self::Records,
        Self::Users,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Self::Home => "home",
            Self::Recipes => "recipes",
            Self::NewBatch => "new-batch",
            Self::Run => "run",
            Self::Alarms => "alarms",
            Self::Review => "review",
            Self::Records => "records",
            Self::Users => "users",
        }
    }

    /// The label on its navigation button (also its accessible label).
    pub fn title(self) -> &'static str {
        match self {
            Self::Home => "Home",
            Self::Recipes => "Recipes",
            Self::NewBatch => "New batch",
            Self::Run => "Run",
            Self::Alarms => "Alarms",
            Self::Review => "Review and release",
            Self::Records => "Records",
            Self::Users => "Users",
        }
    }

    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.id() == id)
    }
}

/// A property's value, in the few shapes `Unit1` uses (the client converts from D-Bus).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Number(f64),
    Flag(bool),
    List(Vec<String>),
    Pair(u32, u32),
}

/// The unit's live state, as the `Unit1` properties last said it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unit {
    pub batch_id: String,
    pub state: String,
    pub phase: String,
    /// The phase in words with its target, as the appliance says it.
    pub phase_title: String,
    /// (index of the current phase, number of phases).
    pub position: (u32, u32),
    pub progress: f64,
    pub weight_g: f64,
    pub weight_stable: bool,
    pub temperature_c: f64,
    pub setpoint_c: f64,
    pub instruction: String,
    /// What input the batch waits for: "scan", "confirm" or "".
    pub awaiting: String,
    pub notice: String,
    pub alarms: Vec<String>,
    pub links_down: Vec<String>,
}

impl Unit {
    /// Takes the properties that changed; unknown names and wrong types are left alone, so an
    /// appliance with more properties still works with this screen.
    pub fn apply(&mut self, changed: &HashMap<String, Value>) {
        for (name, v) in changed {
            match (name.as_str(), v) {
                ("BatchId", Value::Text(t)) => self.batch_id.clone_from(t),
                ("State", Value::Text(t)) => self.state.clone_from(t),
                ("Phase", Value::Text(t)) => self.phase.clone_from(t),
                ("PhaseTitle", Value::Text(t)) => self.phase_title.clone_from(t),
                ("Awaiting", Value::Text(t)) => self.awaiting.clone_from(t),
                ("PhasePosition", Value::Pair(i, n)) => self.position = (*i, *n),
                ("Progress", Value::Number(x)) => self.progress = *x,
                ("WeightGrams", Value::Number(x)) => self.weight_g = *x,
                ("WeightStable", Value::Flag(b)) => self.weight_stable = *b,
                ("TemperatureCelsius", Value::Number(x)) => self.temperature_c = *x,
                ("SetpointCelsius", Value::Number(x)) => self.setpoint_c = *x,
                ("Instruction", Value::Text(t)) => self.instruction.clone_from(t),
                ("Notice", Value::Text(t)) => self.notice.clone_from(t),
                ("Alarms", Value::List(l)) => self.alarms.clone_from(l),
                ("LinksDown", Value::List(l)) => self.links_down.clone_from(l),
                _ => {}
            }
        }
    }

    /// Whether the step waits for a material label.
    pub fn awaits_scan(&self) -> bool {
        self.awaiting == "scan"
    }

    /// Whether the step waits for the operator to confirm a manual step (not, say, a held
    /// batch, whose instruction is to deal with the alarm).
    pub fn awaits_confirm(&self) -> bool {
        self.awaiting == "confirm"
    }

    /// A batch is on the unit and not finished.
    pub fn batch_active(&self) -> bool {
        !self.batch_id.is_empty()
            && !matches!(self.state.as_str(), "" | "Idle" | "Complete" | "Stopped" | "Aborted")
    }

    pub fn weight_text(&self) -> String {
        format!("{:.3} g", self.weight_g)
    }

    /// Stability in words: colour is never the only carrier of meaning.
    pub fn stability_text(&self) -> &'static str {
        if self.weight_stable { "stable" } else { "settling" }
    }

    pub fn temperature_text(&self) -> String {
        format!("{:.1} °C", self.temperature_c)
    }

    pub fn setpoint_text(&self) -> String {
        if self.setpoint_c > 0.0 {
            format!("set {:.1} °C", self.setpoint_c)
        } else {
            "heater off".to_owned()
        }
    }

    /// "Phase 5 of 8: Pump 0.490 g of azathioprine (syringe pump)" (the phase's id where the
    /// appliance gives no title).
    pub fn phase_text(&self) -> String {
        let (i, n) = self.position;
        if self.phase.is_empty() || n == 0 {
            return "No phase running".to_owned();
        }
        let what = if self.phase_title.is_empty() { &self.phase } else { &self.phase_title };
        format!("Phase {} of {}: {}", i + 1, n, what)
    }

    pub fn progress_text(&self) -> String {
        format!("{:.0} %", (self.progress.clamp(0.0, 1.0) * 100.0).round())
    }

    /// One line for the home screen's device tile.
    pub fn devices_text(&self) -> String {
        if self.links_down.is_empty() {
            "All devices connected".to_owned()
        } else {
            format!("Not connected: {}", self.links_down.join(", "))
        }
    }

    pub fn state_text(&self) -> String {
        match (self.batch_id.as_str(), self.state.as_str()) {
            ("", _) | (_, "") => "No batch on the unit".to_owned(),
            (id, state) => format!("{id}: {state}"),
        }
    }
}

/// The last readings, for a trend chart: a fixed number of samples, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Trend {
    samples: VecDeque<f64>,
    capacity: usize,
}

/// What a chart draws: points scaled to 0..=1 (0 at the bottom) and the range's ends in words.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub points: Vec<f32>,
    pub low: String,
    pub high: String,
}

impl Trend {
    pub fn new(capacity: usize) -> Self {
        Self { samples: VecDeque::with_capacity(capacity), capacity: capacity.max(2) }
    }

    pub fn push(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(value);
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Scales the samples to the chart; the range includes `floor_span` at least, so noise on
    /// a steady reading does not fill the chart like a real change.
    pub fn chart(&self, floor_span: f64, unit: &str, decimals: usize) -> Chart {
        let min = self.samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !min.is_finite() {
            return Chart { points: Vec::new(), low: String::new(), high: String::new() };
        }
        let mid = (min + max) / 2.0;
        let span = (max - min).max(floor_span);
        let (lo, hi) = (mid - span / 2.0, mid + span / 2.0);
        #[allow(clippy::cast_possible_truncation)] // a screen position: f32 is plenty
        let points = self.samples.iter().map(|v| ((v - lo) / span) as f32).collect();
        Chart {
            points,
            low: format!("{lo:.decimals$} {unit}"),
            high: format!("{hi:.decimals$} {unit}"),
        }
    }
}

/// The calculation as the appliance recorded it (`Batches1.Preview`/`Create`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Calculation {
    pub recipe: String,
    pub revision: u32,
    pub patient_id: String,
    pub outcome: String,
    /// Rule, inputs with their sources, steps and bounds, in words.
    pub text: String,
    pub needs_qa: bool,
    pub second_person: Vec<String>,
}

impl Calculation {
    pub fn parse(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The outcome as a heading: the appliance words it to go inside a sentence ("compound
    /// 49 mL of …"), the screen shows it on its own.
    pub fn heading(&self) -> String {
        let mut chars = self.outcome.chars();
        chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
    }

    /// What must happen before the batch may start, in words.
    pub fn before_start(&self) -> String {
        let mut steps = Vec::new();
        if !self.second_person.is_empty() {
            let what: Vec<String> = self.second_person.iter().map(|e| entry_words(e)).collect();
            steps.push(format!("a second person verifies {}", what.join(", ")));
        }
        if self.needs_qa {
            steps.push("QA approves the dose".to_owned());
        }
        if steps.is_empty() {
            "Nothing: it can start once created.".to_owned()
        } else {
            format!("Before start: {}.", steps.join("; "))
        }
    }
}

/// A recipe's name for a patient-specific entry (`patient-id`, `material-lot`) in words.
fn entry_words(entry: &str) -> String {
    match entry {
        "patient-id" | "patient_id" => "the patient ID".to_owned(),
        "material-lot" | "material_lot" => "the material lots".to_owned(),
        other => format!("the {}", other.replace(['-', '_'], " ")),
    }
}

/// A batch as `Batches1.Get` returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Batch {
    pub id: String,
    pub recipe: String,
    pub revision: u32,
    pub patient_id: String,
    pub state: String,
    pub calculation: Calculation,
    pub signatures: Vec<String>,
}

impl Batch {
    pub fn parse(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    pub fn signed_by_performer(&self) -> bool {
        self.signatures.iter().any(|s| s == "authored")
    }
}

/// What an e-signature means, shown above the PIN pad before anyone signs.
pub fn signature_meaning(kind: &str) -> &'static str {
    match kind {
        "verify" => {
            "Verified: I checked the patient's data and the calculation against the prescription."
        }
        "sign" => "Authored: I made this batch and the record shows what I did.",
        "review" => "Reviewed: I reviewed every exception of this batch.",
        "release" => "Released: this batch may be given to the patient.",
        "activate" => "Activated: pharmacists may use this recipe revision.",
        _ => "",
    }
}

/// A material label as a scanner types it, or as a person types it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub material: String,
    pub lot: String,
    pub expiry: String,
}

/// Why a typed or scanned label could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("the label needs material, lot and expiry; it had {0} part(s)")]
    Parts(usize),
    #[error("the {0} is empty")]
    Empty(&'static str),
}

/// Reads `material|lot|expiry` (a scanner's separator may also be a tab or `;`). Only the
/// shape is read here; the appliance checks the material, the lot and the expiry.
pub fn parse_label(line: &str) -> Result<Label, LabelError> {
    let parts: Vec<&str> = line.trim().split(['|', '\t', ';']).map(str::trim).collect();
    let [material, lot, expiry] = parts.as_slice() else {
        return Err(LabelError::Parts(parts.len()));
    };
    for (name, v) in [("material", material), ("lot", lot), ("expiry", expiry)] {
        if v.is_empty() {
            return Err(LabelError::Empty(name));
        }
    }
    Ok(Label { material: (*material).into(), lot: (*lot).into(), expiry: (*expiry).into() })
}

/// One row of the recipe library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeLine {
    pub id: String,
    pub title: String,
    pub status: String,
    pub active: bool,
}

/// Active revisions first, then those waiting for QA; by name within each.
pub fn recipe_lines(rows: &[(String, u32, String, bool)]) -> Vec<RecipeLine> {
    let mut lines: Vec<RecipeLine> = rows
        .iter()
        .map(|(id, rev, name, active)| RecipeLine {
            id: id.clone(),
            title: format!("{name} — revision {rev}"),
            status: if *active { "Active" } else { "Waiting for QA activation" }.to_owned(),
            active: *active,
        })
        .collect();
    lines.sort_by(|a, b| b.active.cmp(&a.active).then(a.title.cmp(&b.title)));
    lines
}

/// The patient fields the appliance takes, from what was typed. Empty entries are left out,
/// so the appliance says what is missing.
pub fn patient_fields(
    patient_id: &str,
    weight_kg: &str,
    age_years: &str,
    phenotypes: &[(&str, &str)],
) -> HashMap<String, String> {
    let mut f = HashMap::new();
    for (k, v) in [("patient_id", patient_id), ("weight_kg", weight_kg), ("age_years", age_years)] {
        if !v.trim().is_empty() {
            f.insert(k.to_owned(), v.trim().to_owned());
        }
    }
    for (gene, phenotype) in phenotypes {
        if !phenotype.trim().is_empty() {
            f.insert(format!("phenotype.{gene}"), phenotype.trim().to_owned());
        }
    }
    f
}

/// What is missing before a login can be tried, in words; `None` when both are there. The
/// appliance is not asked with an empty entry: it would only say "wrong", which is not why.
pub fn login_missing(user: &str, pin: &str) -> Option<&'static str> {
    match (user.trim().is_empty(), pin.is_empty()) {
        (true, true) => Some("Type your user name first, then your PIN."),
        (true, false) => Some("Type your user name first."),
        (false, true) => Some("Now type your PIN on the keypad, then Log in."),
        (false, false) => None,
    }
}

/// The record's health in one line, from `Records1.Verify`.
pub fn record_health(checked: u64, integrity: &str) -> String {
    format!("{checked} entries verified; at start: {integrity}")
}

/// How long until the screen locks, from the last touch, unless configured otherwise. A running
/// batch does not keep the screen open: the unit goes on without anyone logged in.
pub const LOCK_AFTER_S: u64 = 120;

/// The genes a recipe asks phenotypes for, from `Recipes1.Details`, in the recipe's order.
pub fn genes_of(details: &serde_json::Value) -> Vec<String> {
    let mut genes = Vec::new();
    walk(details, &mut |o| {
        if let Some(g) = o.get("gene").and_then(|g| g.as_str())
            && !genes.iter().any(|x| x == g)
        {
            genes.push(g.to_owned());
        }
    });
    genes
}

/// The phenotypes the recipe's own table names for `gene`, in the table's order, to be offered
/// as choices: read from `Recipes1.Details` (each row's `when` conditions), never a list of the
/// HMI's. Each is the CPIC term for the category the JSON names (`IntermediateMetabolizer` is
/// "Intermediate Metabolizer"), which the appliance reads back as that category. A table that
/// matches the gene by diplotype names no category: no choices, the result is typed.
///
/// These are not all the results the rule takes: a row that does not name a gene matches any
/// determinate result of it, and "Likely …" matches its category; those are typed ("Other").
pub fn phenotype_choices(details: &serde_json::Value, gene: &str) -> Vec<String> {
    let mut choices: Vec<String> = Vec::new();
    let rows = details["personalisation"]["rows"].as_array().map_or(&[][..], Vec::as_slice);
    for condition in rows.iter().filter_map(|r| r["when"].as_array()).flatten() {
        if condition[0].as_str() == Some(gene)
            && let Some(category) = condition[1]["category"].as_str()
        {
            let term = cpic_term(category);
            if !choices.contains(&term) {
                choices.push(term);
            }
        }
    }
    choices
}

/// The words of a category's name as the JSON spells it: a space before each capital.
fn cpic_term(category: &str) -> String {
    let mut term = String::with_capacity(category.len() + 2);
    for (i, c) in category.char_indices() {
        if i > 0 && c.is_ascii_uppercase() {
            term.push(' ');
        }
        term.push(c);
    }
    term
}

/// The recipe's phases in order (objects with an `id` and a `kind` that are not equipment).
pub fn phases_of(details: &serde_json::Value) -> Vec<String> {
    let mut phases = Vec::new();
    walk(details, &mut |o| {
        if let (Some(id), Some(_)) = (o.get("id").and_then(|v| v.as_str()), o.get("kind")) {
            phases.push(id.to_owned());
        }
    });
    phases
}

fn walk(v: &serde_json::Value, f: &mut impl FnMut(&serde_json::Map<String, serde_json::Value>)) {
    match v {
        serde_json::Value::Object(o) => {
            f(o);
            for child in o.values() {
                walk(child, f);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|c| walk(c, f)),
        _ => {}
    }
}

/// Time left in the phase, estimated from how fast its progress went so far. Only a hint for
/// the person waiting: nothing is decided on it.
pub fn remaining_text(elapsed_s: f64, progress: f64) -> String {
    if !(0.02..1.0).contains(&progress) || elapsed_s <= 0.0 {
        return "—".to_owned();
    }
    let left = elapsed_s * (1.0 - progress) / progress;
    if left < 60.0 {
        format!("about {:.0} s", left.ceil())
    } else {
        format!("about {:.0} min", (left / 60.0).ceil())
    }
}

/// Midnight UTC of a `YYYY-MM-DD` date, in Unix milliseconds; `end` gives the next midnight,
/// so a range "from a day to a day" includes both days. A day the calendar does not have
/// (2026-02-30) is no date.
pub fn date_ms(s: &str, end: bool) -> Option<i64> {
    let day: jiff::civil::Date = s.trim().parse().ok()?;
    let day = if end { day.tomorrow().ok()? } else { day };
    let midnight =
        jiff::tz::Offset::UTC.to_timestamp(day.to_datetime(jiff::civil::Time::midnight()));
    Some(midnight.ok()?.as_millisecond())
}

/// A file's date for a list, in UTC like every date the appliance records:
/// `2026-11-20 14:03 UTC`.
pub fn file_date(modified: Option<SystemTime>) -> String {
    let Some(t) = modified.and_then(|t| jiff::Timestamp::try_from(t).ok()) else {
        return "date unknown".to_owned();
    };
    jiff::tz::Offset::UTC.to_datetime(t).strftime("%Y-%m-%d %H:%M UTC").to_string()
}

/// The line under the lab-report choice: how many reports the stick holds, or what to do.
pub fn lab_files_note(count: usize) -> String {
    match count {
        0 => "No lab files on the stick — insert the stick with the lab report, or enter the \
              phenotypes below"
            .to_owned(),
        1 => "1 lab file on the stick".to_owned(),
        n => format!("{n} lab files on the stick"),
    }
}

/// One result of a recipe install, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallLine {
    pub title: String,
    pub detail: String,
    /// Nothing went wrong for this recipe.
    pub ok: bool,
}

/// `Recipes1.Install`'s lines (`installed …`, `unchanged …`, `refused …: why`,
/// `withdrawn …`) for QA; a line this HMI does not know is shown as it came.
pub fn install_lines(lines: &[String]) -> Vec<InstallLine> {
    let line = |title: String, detail: &str, ok| InstallLine { title, detail: detail.into(), ok };
    lines
        .iter()
        .map(|l| {
            if let Some(rest) = l.strip_prefix("installed ") {
                let what = rest.split(" (").next().unwrap_or(rest);
                line(format!("Installed {what}"), "Activate it in the list before use.", true)
            } else if let Some(id) = l.strip_prefix("unchanged ") {
                line(format!("{id}: already installed"), "Nothing newer on the stick.", true)
            } else if let Some(rest) = l.strip_prefix("refused ") {
                let (what, why) = rest.split_once(": ").unwrap_or((rest, ""));
                line(format!("Not installed: {what}"), why, false)
            } else if let Some(id) = l.strip_prefix("withdrawn ") {
                line(
                    format!("{id}: withdrawn by the manufacturer"),
                    "It can no longer be used for a new batch.",
                    false,
                )
            } else {
                line(l.clone(), "", true)
            }
        })
        .collect()
}

/// One sentence over the install's lines.
pub fn install_summary(lines: &[InstallLine]) -> String {
    let new = lines.iter().filter(|l| l.title.starts_with("Installed ")).count();
    let bad = lines.iter().filter(|l| !l.ok).count();
    match (new, bad) {
        (0, 0) => "The stick's recipes are checked; nothing new to install.".to_owned(),
        (n, 0) => format!("{n} recipe revision(s) installed. Activate each before use."),
        (n, b) => format!("{n} recipe revision(s) installed; {b} need attention (below)."),
    }
}

/// Why the appliance refused a whole recipe update, for QA: it installed nothing, and what
/// to do about it. The appliance's own words follow, for the manufacturer.
pub fn install_refused(text: &str) -> String {
    let why = text.strip_prefix("recipe intake: ").unwrap_or(text);
    let l = why.to_lowercase();
    let what = if l.contains("expired") {
        "The manufacturer's signed update on this stick has expired. Ask for a current one."
    } else if l.contains("rollback") {
        "The stick holds an older update than the one this appliance already has."
    } else if l.contains("does not trust") || l.contains("signatures required") {
        "The update is not signed by this appliance's manufacturer. Do not use this stick; \
         tell the manufacturer."
    } else if l.contains("tampered") {
        "The files were changed after the manufacturer signed them. Do not use this stick; \
         tell the manufacturer."
    } else if l.contains("clock") {
        "The appliance's clock is wrong. Have the clock corrected, then install again."
    } else {
        "The appliance could not verify the update on this stick."
    };
    format!("Nothing was installed. {what}\nThe appliance says: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, Value)]) -> HashMap<String, Value> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    fn s(v: &str) -> Value {
        Value::Text(v.to_owned())
    }

    #[test]
    fn every_role_sees_home_and_only_what_it_may_do() {
        for role in ["pharmacist", "verifier", "qa", "inspector", "admin", "service"] {
            let r = Role::parse(role).unwrap();
            assert_eq!(r.screens()[0], Screen::Home, "{role}");
            assert_eq!(r.screens().contains(&Screen::NewBatch), r == Role::Pharmacist);
            assert_eq!(r.screens().contains(&Screen::Users), r == Role::Admin);
            assert_eq!(r.screens().contains(&Screen::Review), r == Role::Qa);
        }
        assert_eq!(Role::parse("nobody"), None);
        assert!(Role::Inspector.exports() && !Role::Pharmacist.exports());
        assert!(Role::Qa.installs_recipes() && !Role::Pharmacist.installs_recipes());
    }

    #[test]
    fn screen_ids_round_trip() {
        for s in Screen::ALL {
            assert_eq!(Screen::from_id(s.id()), Some(s));
        }
        assert_eq!(Screen::from_id("nope"), None);
    }

    #[test]
    fn unit_properties_update_only_what_changed() {
        let mut u = Unit::default();
        u.apply(&props(&[
            ("State", s("Running")),
            ("Phase", s("scan-api")),
            ("WeightGrams", Value::Number(12.3456)),
            ("WeightStable", Value::Flag(true)),
            ("Instruction", s("Scan the container")),
            ("Awaiting", s("scan")),
            ("Unheard", Value::Flag(false)),
        ]));
        assert_eq!(u.state, "Running");
        assert_eq!(u.weight_text(), "12.346 g");
        assert_eq!(u.stability_text(), "stable");
        assert!(u.awaits_scan() && !u.awaits_confirm());
        u.apply(&props(&[
            ("Phase", s("flush")),
            ("Instruction", s("Clean the line")),
            ("Awaiting", s("confirm")),
        ]));
        assert_eq!(u.state, "Running", "kept");
        assert!(u.awaits_confirm() && !u.awaits_scan());
        u.apply(&props(&[("State", Value::Number(3.0))]));
        assert_eq!(u.state, "Running", "a wrong type keeps the old value");
        u.apply(&props(&[
            ("State", s("Held")),
            ("Instruction", s("Held: deal with the cause")),
            ("Awaiting", s("")),
        ]));
        assert!(!u.awaits_confirm() && !u.awaits_scan(), "a held batch confirms nothing");
    }

    #[test]
    fn unit_texts_read_in_words() {
        let u = Unit {
            batch_id: "B-1".into(),
            state: "Running".into(),
            phase: "heat".into(),
            position: (2, 9),
            progress: 0.456,
            temperature_c: 36.94,
            setpoint_c: 40.0,
            links_down: vec!["balance".into()],
            ..Unit::default()
        };
        assert_eq!(u.phase_text(), "Phase 3 of 9: heat");
        let titled = Unit { phase_title: "Heat to 40.0 °C".into(), ..u.clone() };
        assert_eq!(titled.phase_text(), "Phase 3 of 9: Heat to 40.0 °C");
        assert_eq!(u.progress_text(), "46 %");
        assert_eq!(u.temperature_text(), "36.9 °C");
        assert_eq!(u.setpoint_text(), "set 40.0 °C");
        assert_eq!(u.devices_text(), "Not connected: balance");
        assert_eq!(u.state_text(), "B-1: Running");
        assert!(u.batch_active());
        assert_eq!(Unit::default().phase_text(), "No phase running");
        assert_eq!(Unit::default().setpoint_text(), "heater off");
        assert!(!Unit::default().batch_active());
    }

    #[test]
    fn a_trend_keeps_the_last_samples_and_scales_them() {
        let mut t = Trend::new(3);
        for v in [1.0, 2.0, f64::NAN, 3.0, 5.0] {
            t.push(v);
        }
        assert_eq!(t.len(), 3);
        let c = t.chart(0.1, "g", 1);
        assert_eq!(c.points, vec![0.0, 1.0 / 3.0, 1.0]);
        assert_eq!((c.low.as_str(), c.high.as_str()), ("2.0 g", "5.0 g"));
        let mut flat = Trend::new(4);
        flat.push(20.0);
        flat.push(20.0);
        let c = flat.chart(2.0, "°C", 0);
        assert_eq!(c.points, vec![0.5, 0.5], "a steady reading sits mid-chart");
        assert!(Trend::new(4).chart(1.0, "g", 0).points.is_empty());
    }

    #[test]
    fn a_calculation_says_what_must_happen_before_start() {
        let json = r#"{"recipe":"r","revision":1,"patient_id":"P-1","outcome":"30 %",
            "text":"rule…","parameters":null,"needs_qa":true,"second_person":["patient_data"]}"#;
        let c = Calculation::parse(json).unwrap();
        assert_eq!(c.patient_id, "P-1");
        assert_eq!(c.heading(), "30 %");
        let compound = Calculation { outcome: "compound 49 mL".into(), ..Calculation::default() };
        assert_eq!(compound.heading(), "Compound 49 mL");
        assert_eq!(Calculation::default().heading(), "");
        assert_eq!(
            c.before_start(),
            "Before start: a second person verifies the patient data; QA approves the dose."
        );
        let recipe = Calculation {
            second_person: ["patient-id", "weight", "phenotype", "material-lot"]
                .map(String::from)
                .into(),
            ..Calculation::default()
        };
        assert_eq!(
            recipe.before_start(),
            "Before start: a second person verifies the patient ID, the weight, the phenotype, \
             the material lots."
        );
        let none = Calculation::default();
        assert_eq!(none.before_start(), "Nothing: it can start once created.");
    }

    #[test]
    fn a_batch_knows_whether_its_performer_signed() {
        let json = r#"{"id":"B-1","recipe":"r","revision":1,"patient_id":"P","state":"Complete",
            "calculation":{"recipe":"r","revision":1,"patient_id":"P","outcome":"o","text":"t",
            "needs_qa":false,"second_person":[]},"signatures":["verified","authored"]}"#;
        let b = Batch::parse(json).unwrap();
        assert!(b.signed_by_performer());
    }

    #[test]
    fn labels_read_from_a_scanner_or_typed() {
        let want = Label { material: "aza".into(), lot: "L1".into(), expiry: "2030-01-31".into() };
        assert_eq!(parse_label("aza|L1|2030-01-31\n").unwrap(), want);
        assert_eq!(parse_label("aza\tL1\t2030-01-31").unwrap(), want);
        assert_eq!(parse_label(" aza ; L1 ; 2030-01-31 ").unwrap(), want);
        assert_eq!(parse_label("aza|L1"), Err(LabelError::Parts(2)));
        assert_eq!(parse_label("aza||2030-01-31"), Err(LabelError::Empty("lot")));
    }

    #[test]
    fn the_recipe_library_lists_active_revisions_first() {
        let rows = vec![
            ("b".to_owned(), 2, "Beta".to_owned(), false),
            ("a".to_owned(), 1, "Alpha".to_owned(), true),
        ];
        let lines = recipe_lines(&rows);
        assert_eq!(lines[0].title, "Alpha — revision 1");
        assert_eq!(lines[1].status, "Waiting for QA activation");
    }

    #[test]
    fn patient_fields_leave_out_what_was_not_typed() {
        let f = patient_fields(" P-1 ", "7.0", "", &[("TPMT", "Normal Metabolizer"), ("X", "")]);
        assert_eq!(f.len(), 3);
        assert_eq!(f["patient_id"], "P-1");
        assert_eq!(f["phenotype.TPMT"], "Normal Metabolizer");
    }

    #[test]
    fn genes_and_phases_come_from_the_recipe_in_order() {
        let details = serde_json::json!({
            "personalisation": {"genes": [{"gene": "TPMT"}, {"gene": "NUDT15"}, {"gene": "TPMT"}]},
            "procedure": [{"id": "p", "operations": [
                {"id": "scan-api", "kind": "scan"}, {"id": "mix", "kind": "mix"}]}]
        });
        assert_eq!(genes_of(&details), ["TPMT", "NUDT15"]);
        assert_eq!(phases_of(&details), ["scan-api", "mix"]);
    }

    #[test]
    fn phenotype_choices_are_the_ones_the_recipes_table_names() {
        let details = serde_json::json!({ "personalisation": { "rows": [
            { "when": [["NUDT15", { "category": "NormalMetabolizer" }],
                       ["TPMT", { "category": "NormalMetabolizer" }]] },
            { "when": [["TPMT", { "category": "IntermediateMetabolizer" }]] },
            { "when": [["NUDT15", { "category": "PoorMetabolizer" }]] },
            { "when": [["TPMT", { "category": "IntermediateMetabolizer" }],
                       ["MTHFR", { "diplotype": "677C/677T" }]] },
        ] } });
        assert_eq!(
            phenotype_choices(&details, "TPMT"),
            ["Normal Metabolizer", "Intermediate Metabolizer"],
            "in the table's order, each once"
        );
        assert_eq!(
            phenotype_choices(&details, "NUDT15"),
            ["Normal Metabolizer", "Poor Metabolizer"]
        );
        assert!(phenotype_choices(&details, "MTHFR").is_empty(), "a diplotype is typed");
        assert!(
            phenotype_choices(&serde_json::json!({}), "TPMT").is_empty(),
            "no table, no choice"
        );
    }

    #[test]
    fn a_chosen_phenotype_is_the_term_the_appliance_reads_back() {
        use galen_recipes::pgx::{Category, Phenotype};
        for category in [
            Category::UltrarapidMetabolizer,
            Category::RapidMetabolizer,
            Category::NormalMetabolizer,
            Category::IntermediateMetabolizer,
            Category::PoorMetabolizer,
            Category::IncreasedFunction,
            Category::NormalFunction,
            Category::DecreasedFunction,
            Category::PoorFunction,
            Category::Indeterminate,
            Category::NoCall,
        ] {
            // As `Recipes1.Details` spells it.
            let json = serde_json::to_value(category).unwrap();
            let term = cpic_term(json.as_str().unwrap());
            assert_eq!(term, category.term(), "{json}");
            if category.is_determinate() {
                assert_eq!(Phenotype::parse(&term).unwrap().category, category, "{term}");
            }
        }
    }

    #[test]
    fn time_left_is_estimated_only_once_there_is_progress() {
        assert_eq!(remaining_text(10.0, 0.5), "about 10 s");
        assert_eq!(remaining_text(120.0, 0.5), "about 2 min");
        assert_eq!(remaining_text(1.0, 0.0), "—");
        assert_eq!(remaining_text(1.0, 1.0), "—");
    }

    #[test]
    fn dates_become_utc_milliseconds() {
        assert_eq!(date_ms("1970-01-01", false), Some(0));
        assert_eq!(date_ms("1970-01-01", true), Some(86_400_000));
        assert_eq!(date_ms("2026-11-21", false), Some(1_795_219_200_000));
        assert_eq!(date_ms("2026-13-01", false), None);
        assert_eq!(date_ms("2026-02-30", false), None, "a day the calendar does not have");
        assert_eq!(date_ms("2026-12-31", true), date_ms("2027-01-01", false), "across a year");
        assert_eq!(date_ms("yesterday", false), None);
    }

    #[test]
    fn an_empty_login_says_what_to_type() {
        assert_eq!(login_missing("", ""), Some("Type your user name first, then your PIN."));
        assert_eq!(login_missing("  ", "1234"), Some("Type your user name first."));
        assert_eq!(login_missing("ada", ""), Some("Now type your PIN on the keypad, then Log in."));
        assert_eq!(login_missing("ada", "1234"), None);
    }

    #[test]
    fn file_dates_read_in_utc() {
        let at = |s: u64| Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(file_date(at(0)), "1970-01-01 00:00 UTC");
        assert_eq!(file_date(at(1_795_219_200 + 14 * 3600 + 3 * 60 + 59)), "2026-11-21 14:03 UTC");
        assert_eq!(file_date(at(951_782_400)), "2000-02-29 00:00 UTC", "a leap day");
        assert_eq!(file_date(None), "date unknown");
        for day in [0_i64, 59, 60, 365, 11_016, 20_413, 47_482] {
            let date = file_date(at(u64::try_from(day * 86_400).unwrap()));
            let ymd = date.split(' ').next().unwrap();
            assert_eq!(date_ms(ymd, false), Some(day * 86_400_000), "{day}: {date}");
        }
    }

    #[test]
    fn the_lab_file_note_says_what_to_do_without_files() {
        assert_eq!(
            lab_files_note(0),
            "No lab files on the stick — insert the stick with the lab report, or enter the \
             phenotypes below"
        );
        assert_eq!(lab_files_note(1), "1 lab file on the stick");
        assert_eq!(lab_files_note(3), "3 lab files on the stick");
    }

    #[test]
    fn install_results_read_in_words() {
        let lines: Vec<String> = [
            "installed aza revision 2 (waiting for QA activation)",
            "unchanged folate",
            "refused clopi.toml: tampered target: length 10, signed 12",
            "withdrawn old",
        ]
        .map(String::from)
        .into();
        let got = install_lines(&lines);
        let titles: Vec<&str> = got.iter().map(|l| l.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "Installed aza revision 2",
                "folate: already installed",
                "Not installed: clopi.toml",
                "old: withdrawn by the manufacturer"
            ]
        );
        assert_eq!(got[2].detail, "tampered target: length 10, signed 12");
        assert_eq!(got.iter().map(|l| l.ok).collect::<Vec<_>>(), [true, true, false, false]);
        assert_eq!(
            install_summary(&got),
            "1 recipe revision(s) installed; 2 need attention (below)."
        );
        assert_eq!(
            install_summary(&got[1..2]),
            "The stick's recipes are checked; nothing new to install."
        );
    }

    #[test]
    fn a_refused_update_says_nothing_was_installed_and_why() {
        let text = install_refused(
            "recipe intake: timestamp metadata has expired (2026-01-01T00:00:00Z, system clock)",
        );
        assert_eq!(
            text,
            "Nothing was installed. The manufacturer's signed update on this stick has expired. \
             Ask for a current one.\nThe appliance says: timestamp metadata has expired \
             (2026-01-01T00:00:00Z, system clock)"
        );
        let keys = install_refused(
            "recipe intake: root metadata is signed only by keys this unit does not trust",
        );
        assert!(keys.contains("not signed by this appliance's manufacturer"), "{keys}");
        let other = install_refused("recipe intake: /media/galen/metadata: No such file");
        assert!(
            other.starts_with("Nothing was installed. The appliance could not verify"),
            "{other}"
        );
    }

    #[test]
    fn signatures_say_what_they_mean() {
        for kind in ["verify", "sign", "review", "release", "activate"] {
            assert!(!signature_meaning(kind).is_empty(), "{kind}");
        }
        assert_eq!(record_health(12, "intact"), "12 entries verified; at start: intact");
    }
}
