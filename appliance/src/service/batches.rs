//! Batches, from a patient's data to a released product: create (the recipe's rules compute
//! the dose, shown and recorded), second-person verification, start, operator events while it
//! runs, the performer's signature, and QA release.
//!
//! The engine runs the batch (`crate::supervisor::runtime::Run`); this module only checks who
//! may do what and when, records who did it, and passes the event on. A batch held across a
//! restart has no engine until someone resumes, stops or aborts it; then one is rebuilt Held at
//! the phase the record names (see `super::restore`).

use std::collections::{BTreeMap, HashMap};

use galen_recipes::model::Recipe;
use galen_recipes::patient::{GeneResult, Patient, PatientId, Source, Sourced};
use galen_recipes::personalise::{self, Evaluation};
use galen_recipes::pgx::{Gene, Phenotype};
use galen_recipes::pharmcat;
use galen_recipes::quantity::{BodyWeight, Fixed};
use galen_record::EntryKind;
use galen_record::signature::Meaning;
use serde::Serialize;
use tokio::sync::mpsc;

use super::{Caller, Needs, Service, ServiceError};
use crate::engine::batch::{Batch, Date, Event};
use crate::engine::plan::plan;
use crate::engine::restart::Refusal;
use crate::engine::safety::{Limits, Monitor};
use crate::engine::state::{Command, State};
use crate::label::{Label, LabelError, Release};
use crate::records::NewEntry;
use crate::records::users::{Action, Session};
use crate::supervisor::runtime::Run;

/// A batch this appliance knows: created since it started, or rebuilt from the record at start.
pub(super) struct Slot {
    pub(super) recipe_id: String,
    pub(super) revision: u32,
    pub(super) patient_id: String,
    /// As recorded at creation.
    pub(super) calculation: Calculation,
    /// What the batch is made from. A batch rebuilt from the record has it only if its recipe
    /// revision still loads and the dose computed again equals the recorded one; without it
    /// (the reason says why) the batch can be listed, signed, stopped and aborted, but not run
    /// or labelled.
    pub(super) made: Result<Made, String>,
    pub(super) created_by: u64,
    pub(super) stage: Stage,
}

/// The recipe, the patient and the dose a batch is made from.
pub(super) struct Made {
    pub(super) recipe: Recipe,
    pub(super) patient: Patient,
    pub(super) evaluation: Evaluation,
}

pub(super) enum Stage {
    Created,
    /// Held across a supervisor restart, with no engine: `next` is the phase a resume runs
    /// (the rest of what a decision needs is read from the record when it is taken).
    Restored {
        next: usize,
    },
    Running(mpsc::Sender<Event>),
    Ended(Result<State, String>),
}

/// How a batch held across a restart reads in a list and in refusals.
pub(super) const HELD_AFTER_RESTART: &str = "Held";

/// Patient data as a client sends it. Typed phenotypes and a lab file may be combined, but
/// not for the same gene.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatientInput {
    pub patient_id: String,
    pub weight_kg: Option<String>,
    pub age_years: Option<String>,
    /// Gene symbol → phenotype as typed ("Intermediate Metabolizer", "IM", …).
    pub phenotypes: BTreeMap<String, String>,
    /// A PharmCAT outside-call file: (file name, contents).
    pub lab_file: Option<(String, Vec<u8>)>,
}

impl PatientInput {
    /// From a string map: `patient_id`, `weight_kg`, `age_years`, `phenotype.<GENE>`. Unknown
    /// keys are refused, so a typo never silently drops an input.
    pub fn from_map(map: &HashMap<String, String>) -> Result<Self, ServiceError> {
        let mut input = Self::default();
        for (k, v) in map {
            match k.as_str() {
                "patient_id" => input.patient_id.clone_from(v),
                "weight_kg" => input.weight_kg = Some(v.clone()),
                "age_years" => input.age_years = Some(v.clone()),
                _ => match k.strip_prefix("phenotype.") {
                    Some(gene) => {
                        input.phenotypes.insert(gene.to_owned(), v.clone());
                    }
                    None => {
                        return Err(ServiceError::InvalidInput(format!(
                            "unknown patient field {k:?}; the fields are patient_id, weight_kg, \
                             age_years and phenotype.<GENE>"
                        )));
                    }
                },
            }
        }
        Ok(input)
    }

    fn to_patient(&self, by: &str) -> Result<Patient, ServiceError> {
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            ServiceError::InvalidInput(format!("{what}: {e}"))
        };
        let entered = || Source::Entered { by: by.to_owned(), verified_by: None };
        let id = PatientId::new(self.patient_id.trim()).map_err(|e| bad("patient ID", &e))?;
        let weight = match &self.weight_kg {
            None => None,
            Some(w) => {
                let fixed = Fixed::parse(w.trim()).map_err(|e| bad("weight (kg)", &e))?;
                let value = BodyWeight::new(fixed).map_err(|e| bad("weight (kg)", &e))?;
                Some(Sourced { value, source: entered() })
            }
        };
        let age_years = match &self.age_years {
            None => None,
            Some(a) => {
                let value = a.trim().parse::<u16>().map_err(|e| bad("age (years)", &e))?;
                Some(Sourced { value, source: entered() })
            }
        };
        let mut genes = BTreeMap::new();
        if let Some((name, bytes)) = &self.lab_file {
            let lab = pharmcat::import(name, bytes).map_err(|e| bad(name, &e))?;
            genes = lab.to_patient_genes(by);
        }
        for (gene, text) in &self.phenotypes {
            let gene = Gene::new(gene).map_err(|e| bad("gene", &e))?;
            let phenotype = Phenotype::parse(text).map_err(|e| bad(gene.as_str(), &e))?;
            if genes.contains_key(&gene) {
                return Err(ServiceError::InvalidInput(format!(
                    "{} is both typed and in the lab file; use one of them",
                    gene.as_str()
                )));
            }
            let result =
                GeneResult { diplotype: None, phenotype: Some(phenotype), activity_score: None };
            genes.insert(gene, Sourced { value: result, source: entered() });
        }
        Ok(Patient { id, weight, age_years, genes })
    }
}

/// The calculation a pharmacist reviews before creating a batch, and that is recorded with it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calculation {
    pub recipe: String,
    pub revision: u32,
    pub patient_id: String,
    /// One line: what happens.
    pub outcome: String,
    /// The whole calculation in words: rule, inputs with sources, row, steps, bounds.
    pub text: String,
    /// The process parameters as recorded (`galen_recipes::personalise::Parameters`), or null.
    pub parameters: serde_json::Value,
    /// QA must approve before the batch starts.
    pub needs_qa: bool,
    /// What a second person must verify before the batch starts.
    pub second_person: Vec<String>,
}

/// A batch as a list or a client shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchInfo {
    pub id: String,
    pub recipe: String,
    pub revision: u32,
    pub patient_id: String,
    /// `Created` before start, then the ISA-88 state; `Failed: …` if the run itself failed.
    pub state: String,
    pub calculation: Calculation,
    /// Meanings of the signatures given so far, in order.
    pub signatures: Vec<String>,
}

/// What release produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Released {
    pub batch_id: String,
    /// The label's content, exactly as recorded.
    pub label: serde_json::Value,
    /// The label to print on an office printer.
    #[serde(skip)]
    pub pdf: Vec<u8>,
    /// The same label for a thermal printer (ZPL II).
    #[serde(skip)]
    pub zpl: String,
}

fn calculation(recipe: &Recipe, patient: &Patient, e: &Evaluation) -> Calculation {
    let x = &e.explanation;
    Calculation {
        recipe: recipe.id.as_str().to_owned(),
        revision: recipe.revision,
        patient_id: patient.id.as_str().to_owned(),
        outcome: x.outcome.clone(),
        text: x.to_text(),
        parameters: serde_json::to_value(&e.parameters).unwrap_or_default(),
        needs_qa: x.needs_qa,
        second_person: recipe
            .second_person
            .iter()
            .map(|s| {
                serde_json::to_value(s)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .collect(),
    }
}

fn parse_date(s: &str) -> Option<Date> {
    let mut it = s.trim().splitn(3, '-');
    let (y, m, d) = (it.next()?.parse().ok()?, it.next()?.parse().ok()?, it.next()?.parse().ok()?);
    ((1..=12).contains(&m) && (1..=31).contains(&d)).then_some(Date(y, m, d))
}

impl Service {
    fn evaluate(
        &self,
        session: &Session,
        recipe_id: &str,
        input: &PatientInput,
    ) -> Result<(Recipe, Patient, Evaluation), ServiceError> {
        let recipe = self.active_recipe(recipe_id)?;
        let patient = input.to_patient(&session.username)?;
        match personalise::evaluate(&recipe, &patient) {
            Ok(e) => Ok((recipe, patient, e)),
            Err(r) => Err(ServiceError::Refused {
                reason: if r.needs_qa && !r.kind.to_string().contains("QA") {
                    format!("{}; a QA decision is needed", r.kind)
                } else {
                    r.kind.to_string()
                },
                explanation: r.explanation.to_text(),
            }),
        }
    }

    /// The calculation for this patient, without creating anything.
    pub fn preview(
        &self,
        caller: &Caller,
        recipe_id: &str,
        input: &PatientInput,
    ) -> Result<Calculation, ServiceError> {
        let session = self.authorize(caller, "Batches.Preview", Needs::Permit(Action::RunBatch))?;
        let (recipe, patient, e) = self.evaluate(&session, recipe_id, input)?;
        Ok(calculation(&recipe, &patient, &e))
    }

    /// Creates a batch for this patient and records its creation and calculation.
    pub fn create_batch(
        &self,
        caller: &Caller,
        recipe_id: &str,
        input: &PatientInput,
    ) -> Result<(String, Calculation), ServiceError> {
        let session = self.authorize(caller, "Batches.Create", Needs::Permit(Action::RunBatch))?;
        self.require_sound_records()?;
        let (recipe, patient, evaluation) = self.evaluate(&session, recipe_id, input)?;
        let calc = calculation(&recipe, &patient, &evaluation);
        let at = self.at();
        let day: String = at.utc.to_rfc3339()[..10].chars().filter(char::is_ascii_digit).collect();
        let mut store = self.store()?;
        let id = format!("B-{day}-{:03}", store.batches_with_prefix(&format!("B-{day}-"))? + 1);
        let entry = |kind, object: &str| NewEntry {
            user_id: Some(session.user_id),
            batch_id: Some(id.clone()),
            ..NewEntry::new(kind, object)
        };
        let lab = input.lab_file.as_ref().map(|(name, bytes)| {
            use sha2::Digest as _;
            serde_json::json!({ "file": name, "sha256": galen_record::hex::encode(&sha2::Sha256::digest(bytes)) })
        });
        store.append(
            at,
            NewEntry {
                new_value: Some(format!(
                    "{} revision {} for {}",
                    recipe.id, recipe.revision, patient.id
                )),
                payload: serde_json::json!({
                    "recipe": recipe.id.as_str(), "revision": recipe.revision,
                    "patient": patient, "lab_file": lab,
                }),
                ..entry(EntryKind::BatchCreated, "batch")
            },
        )?;
        store.append(
            at,
            NewEntry {
                new_value: Some(calc.outcome.clone()),
                payload: serde_json::json!({
                    "explanation": evaluation.explanation, "text": calc.text,
                    "parameters": evaluation.parameters,
                }),
                ..entry(EntryKind::Personalisation, "dose")
            },
        )?;
        drop(store);
        let slot = Slot {
            recipe_id: recipe.id.as_str().to_owned(),
            revision: recipe.revision,
            patient_id: patient.id.as_str().to_owned(),
            calculation: calc.clone(),
            made: Ok(Made { recipe, patient, evaluation }),
            created_by: session.user_id,
            stage: Stage::Created,
        };
        self.batches.lock().expect("batches lock").insert(id.clone(), slot);
        Ok((id, calc))
    }

    pub(super) fn with_slot<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Slot) -> Result<T, ServiceError>,
    ) -> Result<T, ServiceError> {
        let mut batches = self.batches.lock().expect("batches lock");
        let slot = batches.get_mut(id).ok_or_else(|| ServiceError::NoSuchBatch(id.to_owned()))?;
        f(slot)
    }

    pub(super) fn state_of(&self, id: &str, slot: &Slot) -> String {
        match &slot.stage {
            Stage::Created => "Created".into(),
            Stage::Restored { .. } => HELD_AFTER_RESTART.into(),
            Stage::Running(_) => {
                let live = self.live.borrow();
                match (&live.batch_id, &live.state) {
                    (Some(b), Some(s)) if b == id => s.clone(),
                    _ => "Idle".into(),
                }
            }
            Stage::Ended(Ok(s)) => format!("{s:?}"),
            Stage::Ended(Err(e)) => format!("Failed: {e}"),
        }
    }

    fn info(&self, id: &str, slot: &Slot) -> Result<BatchInfo, ServiceError> {
        let signatures = self
            .store()?
            .batch_entries(id)?
            .into_iter()
            .filter(|e| e.body.kind == EntryKind::Signature)
            .map(|e| e.body.object.trim_start_matches("signature.").to_owned())
            .collect();
        Ok(BatchInfo {
            id: id.to_owned(),
            recipe: slot.recipe_id.clone(),
            revision: slot.revision,
            patient_id: slot.patient_id.clone(),
            state: self.state_of(id, slot),
            calculation: slot.calculation.clone(),
            signatures,
        })
    }

    /// Every batch created since the appliance started or still open in the record (not yet
    /// released), oldest first.
    pub fn batches(&self, caller: &Caller) -> Result<Vec<BatchInfo>, ServiceError> {
        self.authorize(caller, "Batches.List", Needs::Permit(Action::ViewRecords))?;
        let batches = self.batches.lock().expect("batches lock");
        batches.iter().map(|(id, slot)| self.info(id, slot)).collect()
    }

    pub fn batch(&self, caller: &Caller, id: &str) -> Result<BatchInfo, ServiceError> {
        self.authorize(caller, "Batches.Get", Needs::Permit(Action::ViewRecords))?;
        let batches = self.batches.lock().expect("batches lock");
        let slot = batches.get(id).ok_or_else(|| ServiceError::NoSuchBatch(id.to_owned()))?;
        self.info(id, slot)
    }

    /// A second person checks the patient-specific entries and signs (PIN re-asked).
    pub fn verify(&self, caller: &Caller, id: &str, pin: &str) -> Result<(), ServiceError> {
        let session = self.authorize(
            caller,
            "Batches.Verify",
            Needs::Permit(Action::Sign(Meaning::Verified)),
        )?;
        self.with_slot(id, |slot| {
            if !matches!(slot.stage, Stage::Created) {
                return Err(ServiceError::WrongState {
                    batch: id.to_owned(),
                    state: self.state_of(id, slot),
                    why: "patient data is verified before the batch starts".into(),
                });
            }
            if slot.created_by == session.user_id {
                return Err(ServiceError::NotReady {
                    batch: id.to_owned(),
                    action: "be verified by its author",
                    why: "the second person must not be the one who entered the data".into(),
                });
            }
            Ok(())
        })?;
        self.sign(caller, "Batches.Verify", pin, Meaning::Verified, id).map(drop)
    }

    /// QA reviews the batch (before start when the dose needs QA approval; after the end as
    /// review by exception).
    /// After a restart this is QA's decision that a held batch may go on, where the recipe
    /// asks for one.
    pub fn review(&self, caller: &Caller, id: &str, pin: &str) -> Result<(), ServiceError> {
        self.authorize(caller, "Batches.Review", Needs::Permit(Action::Sign(Meaning::Reviewed)))?;
        let restored = self.with_slot(id, |s| Ok(matches!(s.stage, Stage::Restored { .. })))?;
        self.sign(caller, "Batches.Review", pin, Meaning::Reviewed, id)?;
        if restored {
            self.show_restored(id)?;
        }
        Ok(())
    }

    /// Starts a created, verified batch on the unit.
    pub fn start(&self, caller: &Caller, id: &str) -> Result<(), ServiceError> {
        let session = self.authorize(caller, "Batches.Start", Needs::Permit(Action::RunBatch))?;
        self.require_sound_records()?;
        let not_ready = |why: &str| ServiceError::NotReady {
            batch: id.to_owned(),
            action: "start",
            why: why.to_owned(),
        };
        // Refused here rather than held at the first reading: nothing of the batch has begun.
        if self.live.borrow().estop_clear == Some(false) {
            return Err(not_ready(
                "the emergency stop is pressed, or its contact cannot be read; release it (or \
                 have its wiring checked), then start",
            ));
        }
        let (recipe, params) = {
            let batches = self.batches.lock().expect("batches lock");
            if let Some(busy) = busy(&batches) {
                return Err(ServiceError::Busy(busy));
            }
            let slot = batches.get(id).ok_or_else(|| ServiceError::NoSuchBatch(id.to_owned()))?;
            if !matches!(slot.stage, Stage::Created) {
                return Err(ServiceError::WrongState {
                    batch: id.to_owned(),
                    state: self.state_of(id, slot),
                    why: "only a created batch can start".into(),
                });
            }
            let made = slot.made.as_ref().map_err(|why| not_ready(why))?;
            (made.recipe.clone(), made.evaluation.parameters.clone())
        };
        let active = self.active_recipe(recipe.id.as_str())?;
        if active.revision != recipe.revision {
            return Err(not_ready(
                "the recipe has a newer active revision; create the batch again",
            ));
        }
        if !recipe.second_person.is_empty() && self.signed_by(id, Meaning::Verified)?.is_empty() {
            return Err(not_ready("a second person must verify the patient's data first"));
        }
        if params.as_ref().is_some_and(|p| p.needs_qa)
            && self.signed_by(id, Meaning::Reviewed)?.is_empty()
        {
            return Err(not_ready("QA must approve this patient's dose first"));
        }
        let planned = plan(&recipe, params.as_ref(), &self.config.instruments)
            .map_err(|e| not_ready(&e.to_string()))?;
        self.operator_entry(&session, id, "start")?;
        let batch = Batch::new(planned, self.monitor());
        self.run(id, batch, Event::Operator(Command::Start))
    }

    fn monitor(&self) -> Monitor {
        Monitor::new(Limits::default().at_speed(self.config.speed))
    }

    /// Runs `batch` on the unit, `first` its first event.
    fn run(&self, id: &str, batch: Batch, first: Event) -> Result<(), ServiceError> {
        let (operator, operator_rx) = mpsc::channel(16);
        let (observed_tx, observed_rx) = mpsc::channel(256);
        operator.try_send(first).expect("a fresh channel has room");
        *self.feed.lock().expect("feed lock") = Some(observed_tx);
        self.with_slot(id, |slot| {
            slot.stage = Stage::Running(operator);
            Ok(())
        })?;
        let mut run =
            Run::new(id.to_owned(), self.devices.clone(), self.records.clone(), self.clock.clone())
                .with_live(self.live.clone())
                .with_speed(self.config.speed);
        let slots = self.batches.clone();
        let id = id.to_owned();
        self.runtime.spawn(async move {
            let ended = run.run(batch, operator_rx, observed_rx).await.map_err(|e| e.to_string());
            match &ended {
                Ok(state) => tracing::info!(batch = %id, ?state, "batch ended"),
                Err(e) => tracing::error!(batch = %id, "batch run failed: {e}"),
            }
            if let Some(slot) = slots.lock().expect("batches lock").get_mut(&id) {
                slot.stage = Stage::Ended(ended);
            }
        });
        Ok(())
    }

    fn operator_entry(&self, session: &Session, id: &str, what: &str) -> Result<(), ServiceError> {
        self.store()?.append(
            self.at(),
            NewEntry {
                user_id: Some(session.user_id),
                batch_id: Some(id.to_owned()),
                new_value: Some(what.to_owned()),
                ..NewEntry::new(EntryKind::OperatorAction, "batch.operator")
            },
        )?;
        Ok(())
    }

    /// Records the operator's event and passes it to the running batch.
    fn send(
        &self,
        caller: &Caller,
        method: &str,
        id: &str,
        what: &str,
        event: Event,
    ) -> Result<(), ServiceError> {
        let session = self.authorize(caller, method, Needs::Permit(Action::RunBatch))?;
        let to = self.with_slot(id, |slot| match &slot.stage {
            Stage::Running(to) => Ok(Some(to.clone())),
            Stage::Restored { .. } => Ok(None),
            _ => Err(ServiceError::WrongState {
                batch: id.to_owned(),
                state: self.state_of(id, slot),
                why: format!("{what} needs a batch that is running or held"),
            }),
        })?;
        let Some(to) = to else { return self.send_restored(&session, id, what, event) };
        self.operator_entry(&session, id, what)?;
        to.try_send(event).map_err(|_| ServiceError::WrongState {
            batch: id.to_owned(),
            state: "busy".into(),
            why: "the batch is not taking events right now; try again".into(),
        })
    }

    pub fn hold(&self, caller: &Caller, id: &str) -> Result<(), ServiceError> {
        self.send(caller, "Batches.Hold", id, "hold", Event::Operator(Command::Hold))
    }

    pub fn resume(&self, caller: &Caller, id: &str) -> Result<(), ServiceError> {
        self.send(caller, "Batches.Resume", id, "resume", Event::Operator(Command::Restart))
    }

    pub fn stop(&self, caller: &Caller, id: &str) -> Result<(), ServiceError> {
        self.send(caller, "Batches.Stop", id, "stop", Event::Operator(Command::Stop))
    }

    pub fn abort(&self, caller: &Caller, id: &str) -> Result<(), ServiceError> {
        self.send(caller, "Batches.Abort", id, "abort", Event::Operator(Command::Abort))
    }

    /// The operator confirms the current manual step (a hand-weighed addition, cleaning).
    pub fn confirm(&self, caller: &Caller, id: &str) -> Result<(), ServiceError> {
        self.send(caller, "Batches.Confirm", id, "confirm", Event::Confirmed)
    }

    /// A material label was scanned (or typed): material id, lot, expiry `YYYY-MM-DD`.
    pub fn scan(
        &self,
        caller: &Caller,
        id: &str,
        material: &str,
        lot: &str,
        expiry: &str,
    ) -> Result<(), ServiceError> {
        let expiry = parse_date(expiry).ok_or_else(|| {
            ServiceError::InvalidInput(format!("expiry {expiry:?} is not a date like 2027-03-31"))
        })?;
        if lot.trim().is_empty() {
            return Err(ServiceError::InvalidInput("the lot number is empty".into()));
        }
        let today =
            parse_date(&self.at().utc.to_rfc3339()[..10]).expect("RFC 3339 starts with a date");
        let what = format!("scanned {material} lot {lot} expiry {expiry}");
        let event =
            Event::Scanned { material: material.to_owned(), lot: lot.to_owned(), expiry, today };
        self.send(caller, "Batches.Scan", id, &what, event)
    }

    /// The operator acknowledges the current batch's alarms with a reason.
    pub fn acknowledge_alarms(&self, caller: &Caller, reason: &str) -> Result<usize, ServiceError> {
        let session =
            self.authorize(caller, "Unit.AcknowledgeAlarms", Needs::Permit(Action::RunBatch))?;
        if reason.trim().is_empty() {
            return Err(ServiceError::InvalidInput("say why the alarms are acknowledged".into()));
        }
        let (alarms, batch) = {
            let live = self.live.borrow();
            (live.alarms.clone(), live.batch_id.clone())
        };
        if alarms.is_empty() {
            return Ok(0);
        }
        self.store()?.append(
            self.at(),
            NewEntry {
                user_id: Some(session.user_id),
                batch_id: batch.clone(),
                new_value: Some(format!("acknowledged: {}", alarms.join("; "))),
                reason: Some(reason.to_owned()),
                ..NewEntry::new(EntryKind::OperatorAction, "alarm.acknowledged")
            },
        )?;
        self.live.send_modify(|l| l.alarms.retain(|a| !alarms.contains(a)));
        if let Some(id) = &batch
            && self.with_slot(id, |s| Ok(matches!(s.stage, Stage::Restored { .. })))?
        {
            self.show_restored(id)?;
        }
        Ok(alarms.len())
    }

    /// The state a batch ended in. A batch whose end the unit has already shown (a client saw
    /// "Complete") may still be writing its last entries: wait for them, briefly, so that a
    /// signature never lands in the record before the end it signs.
    fn ended(&self, id: &str, action: &'static str) -> Result<State, ServiceError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let ended = self.with_slot(id, |slot| match &slot.stage {
                Stage::Ended(Ok(s)) => Ok(Some(*s)),
                Stage::Running(_)
                    if matches!(
                        self.state_of(id, slot).as_str(),
                        "Complete" | "Stopped" | "Aborted"
                    ) && std::time::Instant::now() < deadline =>
                {
                    Ok(None)
                }
                _ => Err(ServiceError::WrongState {
                    batch: id.to_owned(),
                    state: self.state_of(id, slot),
                    why: format!("{action} needs a batch that has ended"),
                }),
            })?;
            match ended {
                Some(state) => return Ok(state),
                None => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
    }

    /// The person who ran the batch signs the record (PIN re-asked).
    pub fn sign_batch(&self, caller: &Caller, id: &str, pin: &str) -> Result<(), ServiceError> {
        self.authorize(caller, "Batches.Sign", Needs::Permit(Action::Sign(Meaning::Authored)))?;
        self.ended(id, "signing")?;
        self.sign(caller, "Batches.Sign", pin, Meaning::Authored, id).map(drop)
    }

    /// QA releases a completed, signed batch: the label's content is recorded, and the release
    /// signature is bound to it.
    pub fn release(&self, caller: &Caller, id: &str, pin: &str) -> Result<Released, ServiceError> {
        let session = self.authorize(
            caller,
            "Batches.Release",
            Needs::Permit(Action::Sign(Meaning::Released)),
        )?;
        let not_ready = |why: &str| ServiceError::NotReady {
            batch: id.to_owned(),
            action: "be released",
            why: why.to_owned(),
        };
        if self.ended(id, "release")? != State::Complete {
            return Err(not_ready("only a Complete batch can be released"));
        }
        if self.signed_by(id, Meaning::Authored)?.is_empty() {
            return Err(not_ready("the pharmacist who made it has not signed it"));
        }
        if !self.signed_by(id, Meaning::Released)?.is_empty() {
            return Err(not_ready("it is already released"));
        }
        let label = self.with_slot(id, |slot| self.label(id, slot, &session))?;
        let content = label.content();
        // The release signature binds to the batch's last entry: this one.
        self.store()?.append(
            self.at(),
            NewEntry {
                user_id: Some(session.user_id),
                batch_id: Some(id.to_owned()),
                new_value: Some("product label".into()),
                payload: content.clone(),
                ..NewEntry::new(EntryKind::System, "batch.label")
            },
        )?;
        self.sign(caller, "Batches.Release", pin, Meaning::Released, id)?;
        Ok(Released { batch_id: id.to_owned(), label: content, pdf: label.pdf(), zpl: label.zpl() })
    }

    fn label(&self, id: &str, slot: &Slot, by: &Session) -> Result<Label, ServiceError> {
        let made = slot.made.as_ref().map_err(|why| ServiceError::NotReady {
            batch: id.to_owned(),
            action: "be labelled",
            why: why.clone(),
        })?;
        let params = made
            .evaluation
            .parameters
            .as_ref()
            .ok_or(LabelError::NoProduct { recipe: slot.recipe_id.clone() })?;
        let prepared =
            parse_date(&self.at().utc.to_rfc3339()[..10]).expect("RFC 3339 starts with a date");
        let release = Release {
            patient_id: &made.patient.id,
            patient_name: None,
            batch_id: id,
            prepared,
            site: &self.config.site,
            released_by: &by.full_name,
        };
        Ok(Label::for_release(&made.recipe, params, &release)?)
    }

    /// An operator's event for a batch held across a restart: resume, stop and abort rebuild
    /// its engine Held at the phase the record names and run it with that event; a resume
    /// only if `crate::engine::restart` allows it (recorded with how it resumes).
    fn send_restored(
        &self,
        session: &Session,
        id: &str,
        what: &str,
        event: Event,
    ) -> Result<(), ServiceError> {
        let held = |why: String| ServiceError::WrongState {
            batch: id.to_owned(),
            state: format!("{HELD_AFTER_RESTART} after a restart"),
            why,
        };
        let (plan, next, note) = match event {
            Event::Operator(Command::Restart) => {
                self.require_sound_records()?;
                let (plan, next, how) = self.restart_decision(id).map_err(|e| match e {
                    Decision::Refused(r @ (Refusal::NeedsQa { .. } | Refusal::NotAcknowledged)) => {
                        ServiceError::NotReady {
                            batch: id.to_owned(),
                            action: "resume",
                            why: r.to_string(),
                        }
                    }
                    Decision::Refused(r) => held(r.to_string()),
                    Decision::Cannot(why) => held(why),
                    Decision::Failed(e) => e,
                })?;
                (plan, next, format!("{what} after the restart: {how}"))
            }
            Event::Operator(Command::Stop | Command::Abort) => {
                // Ending a batch needs no plan: with no recipe to rebuild it from, the engine
                // is given none.
                let (next, plan) = self.with_slot(id, |slot| {
                    let next = match &slot.stage {
                        Stage::Restored { next, .. } => *next,
                        _ => 0,
                    };
                    let plan = match &slot.made {
                        Ok(m) => plan(
                            &m.recipe,
                            m.evaluation.parameters.as_ref(),
                            &self.config.instruments,
                        )
                        .unwrap_or_default(),
                        Err(_) => Vec::new(),
                    };
                    Ok((next, plan))
                })?;
                (plan, next, format!("{what} after the restart"))
            }
            _ => {
                return Err(held(format!(
                    "{what} needs a running batch; after a restart it must be resumed first"
                )));
            }
        };
        {
            let batches = self.batches.lock().expect("batches lock");
            if let Some((running, _)) =
                batches.iter().find(|(b, s)| matches!(s.stage, Stage::Running(_)) && *b != id)
            {
                return Err(ServiceError::Busy(running.clone()));
            }
        }
        self.operator_entry(session, id, &note)?;
        let next = next.min(plan.len());
        self.run(id, Batch::held_at(plan, self.monitor(), next), event)
    }
}

/// The batch in progress (running, or held across a restart), if any: the vessel holds its
/// product, so no other batch may start.
fn busy(batches: &BTreeMap<String, Slot>) -> Option<String> {
    batches
        .iter()
        .find(|(_, s)| matches!(s.stage, Stage::Running(_) | Stage::Restored { .. }))
        .map(|(id, _)| id.clone())
}

/// Why a batch held across a restart may not resume.
pub(super) enum Decision {
    /// The rules say no (`crate::engine::restart`).
    Refused(Refusal),
    /// The batch cannot be rebuilt to run (its recipe, its plan).
    Cannot(String),
    Failed(ServiceError),
}

impl From<ServiceError> for Decision {
    fn from(e: ServiceError) -> Self {
        Self::Failed(e)
    }
}
