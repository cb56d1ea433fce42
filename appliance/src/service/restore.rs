//! Batches rebuilt from the record when the service starts, so that a restart loses none of
//! them: a created batch can still be verified and started, a batch held across the restart
//! can be resumed (where `crate::engine::restart` allows), stopped or aborted, and an ended
//! one signed and released. Released batches are done and are not rebuilt.
//!
//! The record holds the recipe (id and revision), the patient as entered and the dose as
//! computed. The recipe revision is loaded again through the intake and the dose computed
//! again by the same pure rules; the batch may run only if the result equals the record, so a
//! resumed batch makes exactly the dose that was verified. Everything else a decision needs
//! (which phase was interrupted, who acknowledged the restart, whether QA reviewed since) is
//! read from the record when the decision is taken, never kept in memory.

use galen_recipes::model::Recipe;
use galen_recipes::patient::Patient;
use galen_recipes::personalise;
use galen_record::signature::Meaning;
use galen_record::{Entry, EntryKind};

use super::batches::{Calculation, Decision, HELD_AFTER_RESTART, Made, Slot, Stage};
use super::{Service, ServiceError};
use crate::engine::batch::Planned;
use crate::engine::plan::plan;
use crate::engine::restart::{self, Held};
use crate::engine::state::State;

/// What one batch's entries say, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct History {
    pub recipe: String,
    pub revision: u32,
    /// As recorded at creation (`galen_recipes::patient::Patient`).
    pub patient: serde_json::Value,
    pub patient_id: String,
    pub created_by: Option<u64>,
    pub outcome: String,
    pub text: String,
    pub explanation: serde_json::Value,
    pub parameters: serde_json::Value,
    /// The last recorded state (`None`: never started).
    pub state: Option<State>,
    /// The phase a resume runs: the one that had started and not finished, or the one after
    /// the last that finished.
    pub next: usize,
    /// The phase that had started and not finished.
    pub interrupted: Option<String>,
    /// The restart deviation that put it on hold last, and what it says.
    pub hold: Option<(u64, String)>,
    /// Someone acknowledged the alarm since that hold.
    pub acknowledged: bool,
    /// QA signed a review since that hold.
    pub qa_reviewed: bool,
    pub released: bool,
}

impl History {
    /// `None` if the entries hold no creation of a batch.
    pub(super) fn read(entries: &[Entry]) -> Option<Self> {
        let json = |e: &Entry| serde_json::from_str::<serde_json::Value>(&e.body.payload).ok();
        let created = entries.iter().find(|e| e.body.kind == EntryKind::BatchCreated)?;
        let c = json(created)?;
        let dose = entries.iter().find(|e| e.body.kind == EntryKind::Personalisation);
        let d = dose.and_then(json).unwrap_or_default();
        let mut h = History {
            recipe: c["recipe"].as_str()?.to_owned(),
            revision: u32::try_from(c["revision"].as_u64()?).ok()?,
            patient_id: c["patient"]["id"].as_str().unwrap_or_default().to_owned(),
            patient: c["patient"].clone(),
            created_by: created.body.user_id,
            outcome: dose.and_then(|e| e.body.new_value.clone()).unwrap_or_default(),
            text: d["text"].as_str().unwrap_or_default().to_owned(),
            explanation: d["explanation"].clone(),
            parameters: d["parameters"].clone(),
            state: None,
            next: 0,
            interrupted: None,
            hold: None,
            acknowledged: false,
            qa_reviewed: false,
            released: false,
        };
        let reviewed = format!("signature.{}", Meaning::Reviewed.as_words());
        let released = format!("signature.{}", Meaning::Released.as_words());
        for e in entries {
            let b = &e.body;
            match b.kind {
                EntryKind::BatchState if b.object == "batch.state" => {
                    h.state = b.new_value.as_deref().and_then(state_named);
                }
                EntryKind::BatchState if b.object.starts_with("phase.") => {
                    let index = json(e)
                        .and_then(|p| p["index"].as_u64())
                        .and_then(|i| usize::try_from(i).ok())
                        .unwrap_or(h.next);
                    if b.new_value.as_deref() == Some("started") {
                        h.next = index;
                        h.interrupted = Some(b.object["phase.".len()..].to_owned());
                    } else {
                        h.next = index + 1;
                        h.interrupted = None;
                    }
                }
                EntryKind::Deviation if b.object == "batch.restart" => {
                    h.hold = Some((e.seq, b.new_value.clone().unwrap_or_default()));
                    h.acknowledged = false;
                    h.qa_reviewed = false;
                }
                EntryKind::OperatorAction if b.object == "alarm.acknowledged" => {
                    h.acknowledged = true;
                }
                EntryKind::Signature if b.object == reviewed => h.qa_reviewed = true,
                EntryKind::Signature if b.object == released => h.released = true,
                _ => {}
            }
        }
        Some(h)
    }

    fn calculation(&self) -> Calculation {
        let strings = |v: &serde_json::Value| {
            v.as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                .unwrap_or_default()
        };
        Calculation {
            recipe: self.recipe.clone(),
            revision: self.revision,
            patient_id: self.patient_id.clone(),
            outcome: self.outcome.clone(),
            text: self.text.clone(),
            parameters: self.parameters.clone(),
            needs_qa: self.explanation["needs_qa"].as_bool().unwrap_or(false),
            second_person: strings(&self.explanation["second_person"]),
        }
    }
}

/// A state by the name the record gives it.
fn state_named(name: &str) -> Option<State> {
    State::ALL.into_iter().find(|s| format!("{s:?}") == name)
}

impl Service {
    /// Rebuilds every batch of the record that is not released; shows the last one held
    /// across a restart on the unit, with its alarm. Returns how many were rebuilt.
    pub(super) fn restore(&self) -> Result<usize, ServiceError> {
        let ids = self.store()?.batch_ids()?;
        let mut held = None;
        let mut n = 0;
        for id in ids {
            let entries = self.store()?.batch_entries(&id)?;
            let Some(h) = History::read(&entries) else {
                tracing::error!(batch = %id, "its creation entry does not read back; not rebuilt");
                continue;
            };
            if h.released {
                continue;
            }
            let made = self.remade(&h);
            if let Err(why) = &made {
                tracing::warn!(batch = %id, "rebuilt without its recipe and dose: {why}");
            }
            let stage = match h.state {
                None => Stage::Created,
                Some(s) if s.is_terminal() => Stage::Ended(Ok(s)),
                // Recovery held it; were it not (a service started without recovery), it is
                // still a batch whose engine is gone.
                Some(_) => {
                    held = Some(id.clone());
                    Stage::Restored { next: h.next }
                }
            };
            let slot = Slot {
                recipe_id: h.recipe.clone(),
                revision: h.revision,
                patient_id: h.patient_id.clone(),
                calculation: h.calculation(),
                made,
                created_by: h.created_by.unwrap_or_default(),
                stage,
            };
            self.batches.lock().expect("batches lock").insert(id, slot);
            n += 1;
        }
        if let Some(id) = held {
            self.show_restored(&id)?;
        }
        Ok(n)
    }

    /// The recipe, patient and dose again, if they reproduce the record exactly.
    fn remade(&self, h: &History) -> Result<Made, String> {
        let recipe: Recipe = self.load_recipe(&h.recipe).map_err(|e| e.to_string())?;
        if recipe.revision != h.revision {
            return Err(format!(
                "recipe {} revision {} is no longer installed (revision {} is)",
                h.recipe, h.revision, recipe.revision
            ));
        }
        let patient: Patient = serde_json::from_value(h.patient.clone())
            .map_err(|e| format!("the recorded patient data does not read back: {e}"))?;
        let evaluation = personalise::evaluate(&recipe, &patient)
            .map_err(|r| format!("the recipe now refuses this patient: {}", r.kind))?;
        if serde_json::to_value(&evaluation.parameters).unwrap_or_default() != h.parameters {
            return Err("the dose computed again differs from the recorded one".into());
        }
        Ok(Made { recipe, patient, evaluation })
    }

    /// The facts `crate::engine::restart` decides on, from the record as it is now.
    fn held(&self, id: &str) -> Result<(History, Option<Vec<Planned>>), ServiceError> {
        let entries = self.store()?.batch_entries(id)?;
        let h = History::read(&entries).ok_or_else(|| ServiceError::NoSuchBatch(id.to_owned()))?;
        let plan = self.with_slot(id, |slot| {
            Ok(slot.made.as_ref().ok().and_then(|m| {
                plan(&m.recipe, m.evaluation.parameters.as_ref(), &self.config.instruments).ok()
            }))
        })?;
        Ok((h, plan))
    }

    /// Whether the batch held across a restart may resume now: its plan, the phase to run
    /// and, in words, how.
    pub(super) fn restart_decision(
        &self,
        id: &str,
    ) -> Result<(Vec<Planned>, usize, String), Decision> {
        let why = self.with_slot(id, |slot| Ok(slot.made.as_ref().err().cloned()))?;
        if let Some(why) = why {
            return Err(Decision::Cannot(format!("it cannot be run again: {why}; abort it")));
        }
        let (h, plan) = self.held(id)?;
        let plan = plan.ok_or_else(|| {
            Decision::Cannot("its plan cannot be made again on this unit; abort it".into())
        })?;
        let interrupted = match &h.interrupted {
            None => None,
            Some(phase) => Some(plan.get(h.next).filter(|p| p.id() == phase).ok_or_else(|| {
                Decision::Cannot(format!(
                    "the plan made again does not match the record at phase {phase}; abort it"
                ))
            })?),
        };
        let how = restart::may_resume(&self.held_facts(id, &h, interrupted)?)
            .map_err(Decision::Refused)?;
        Ok((plan, h.next, how))
    }

    fn held_facts<'a>(
        &self,
        id: &str,
        h: &History,
        interrupted: Option<&'a Planned>,
    ) -> Result<Held<'a>, ServiceError> {
        let policy = self.with_slot(id, |slot| {
            Ok(slot.made.as_ref().ok().and_then(|m| {
                let phase = interrupted?.id();
                m.recipe.phases().find(|(_, _, p)| p.id.as_str() == phase).map(|(_, _, p)| p.resume)
            }))
        })?;
        Ok(Held { interrupted, policy, acknowledged: h.acknowledged, qa_reviewed: h.qa_reviewed })
    }

    /// Puts a batch held across a restart on the unit's display: its state and phase, what
    /// the operator must do, and the restart alarm until it is acknowledged.
    pub(super) fn show_restored(&self, id: &str) -> Result<(), ServiceError> {
        let (h, plan) = self.held(id)?;
        let interrupted = plan
            .as_ref()
            .and_then(|p| p.get(h.next).filter(|p| Some(p.id()) == h.interrupted.as_deref()));
        let instruction = match plan {
            Some(_) => restart::instruction(&self.held_facts(id, &h, interrupted)?),
            None => format!(
                "Held after a restart{}: it cannot be run again; abort it",
                h.interrupted.as_deref().map(|p| format!(" in phase {p}")).unwrap_or_default()
            ),
        };
        let count = plan.as_ref().map_or(0, Vec::len);
        let alarm = h.hold.filter(|_| !h.acknowledged).map(|(_, text)| text);
        self.live.send_modify(|l| {
            l.batch_id = Some(id.to_owned());
            l.state = Some(HELD_AFTER_RESTART.to_owned());
            l.phase = h.interrupted.clone();
            l.phase_index = h.next;
            l.phase_count = count;
            l.progress = 0.0;
            l.setpoint_c = None;
            l.awaiting.clear();
            l.notice.clear();
            l.instruction = instruction;
            l.alarms = alarm.into_iter().collect();
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use galen_record::chain::GENESIS;
    use galen_record::{EntryBody, UtcMillis};

    use super::*;

    fn entry(seq: u64, kind: EntryKind, object: &str, value: &str, payload: &str) -> Entry {
        Entry {
            seq,
            body: EntryBody {
                utc: UtcMillis(0),
                tpm_clock_ms: None,
                device_id: "galen-test".into(),
                user_id: Some(2),
                batch_id: Some("B-1".into()),
                kind,
                object: object.into(),
                old_value: None,
                new_value: Some(value.into()),
                reason: None,
                payload: payload.into(),
            },
            prev_hash: GENESIS,
            entry_hash: GENESIS,
        }
    }

    /// A batch created, started, killed mid-mix and held by recovery.
    fn killed_mid_mix() -> Vec<Entry> {
        use EntryKind::*;
        let created = r#"{"recipe":"r","revision":3,"patient":{"id":"P-1"}}"#;
        let dose = r#"{"text":"the rule…","explanation":{"needs_qa":false,"second_person":["patient-data"]},"parameters":{"volume_ml":"50"}}"#;
        vec![
            entry(1, BatchCreated, "batch", "r revision 3 for P-1", created),
            entry(2, Personalisation, "dose", "compound 50 mL", dose),
            entry(3, BatchState, "batch.state", "Running", "{}"),
            entry(4, BatchState, "phase.scan", "started", r#"{"index":0}"#),
            entry(5, BatchState, "phase.scan", "ok", r#"{"index":0}"#),
            entry(6, BatchState, "phase.mix", "started", r#"{"index":1}"#),
            entry(7, Deviation, "batch.restart", "restarted in phase mix", "{}"),
            entry(8, BatchState, "batch.state", "Held", "{}"),
        ]
    }

    #[test]
    fn the_record_says_where_a_held_batch_stands() {
        let mut entries = killed_mid_mix();
        let h = History::read(&entries).unwrap();
        assert_eq!((h.recipe.as_str(), h.revision, h.patient_id.as_str()), ("r", 3, "P-1"));
        assert_eq!(h.state, Some(State::Held));
        assert_eq!((h.next, h.interrupted.as_deref()), (1, Some("mix")));
        assert_eq!(h.hold, Some((7, "restarted in phase mix".into())));
        assert!(!h.acknowledged && !h.qa_reviewed && !h.released);
        let calc = h.calculation();
        assert_eq!(calc.second_person, ["patient-data"]);
        assert_eq!(calc.parameters["volume_ml"], "50");

        use EntryKind::*;
        entries.push(entry(9, OperatorAction, "alarm.acknowledged", "acknowledged", "{}"));
        entries.push(entry(10, Signature, "signature.Reviewed by", "Quinn", "{}"));
        let h = History::read(&entries).unwrap();
        assert!(h.acknowledged && h.qa_reviewed);
        // A second restart needs everything again.
        entries.push(entry(11, Deviation, "batch.restart", "again", "{}"));
        let h = History::read(&entries).unwrap();
        assert!(!h.acknowledged && !h.qa_reviewed);
        // Between phases: the next one runs, nothing was interrupted.
        entries.push(entry(12, BatchState, "phase.mix", "ran 2 s", r#"{"index":1}"#));
        let h = History::read(&entries).unwrap();
        assert_eq!((h.next, h.interrupted.as_deref()), (2, None));
    }

    #[test]
    fn entries_without_a_creation_are_not_a_batch() {
        assert_eq!(History::read(&killed_mid_mix()[1..]), None);
    }
}
