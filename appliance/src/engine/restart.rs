//! What may become of a batch held across a supervisor restart (a crash, a power cut, a kill).
//!
//! The record says which phases finished and which one had started; the engine's memory of the
//! interrupted phase (a dispense's zero and learned lag, a hold's time in band, a mix's elapsed
//! time) is gone. So a resume runs the interrupted phase again from its beginning, and whether
//! that is allowed is decided here, from the phase, the recipe's resume policy for it, and what
//! people have recorded since the hold:
//!
//! - A weighing phase (pump dispense, hand-weighed addition) never runs again after a restart,
//!   whatever the policy: its zero was the vessel before the phase, and the mass that went in
//!   before the restart is unknown, so running it again would add its whole target on top. The
//!   batch can only be aborted (or stopped for QA).
//! - `discard`: the recipe says the batch is lost; abort it.
//! - `qa-decision`: QA must have reviewed the batch (an e-signature) since the hold.
//! - `resume` and `repeat`: the phase runs again from its beginning. For `resume` that is the
//!   conservative reading: the time it ran before the restart was not recorded.
//! - In every case someone must have acknowledged the restart alarm, with a reason, since the
//!   hold: who checked the unit and why it may go on is part of the record.
//!
//! Pure: the service gathers the facts from the record and asks.

use galen_recipes::model::ResumePolicy;

use super::batch::Planned;

/// What the record says about a batch held across a restart, as far as the decision needs it.
#[derive(Debug, Clone, Copy)]
pub struct Held<'a> {
    /// The phase that had started and not finished (`None`: it stopped between phases).
    pub interrupted: Option<&'a Planned>,
    /// The recipe's resume policy for that phase (`None`: not known, e.g. the recipe revision
    /// is no longer installed).
    pub policy: Option<ResumePolicy>,
    /// Someone acknowledged the restart alarm with a reason since the hold.
    pub acknowledged: bool,
    /// QA signed a review of the batch since the hold.
    pub qa_reviewed: bool,
}

/// Why a held batch may not resume. Each says what the operator can do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "phase {phase} was weighing when the supervisor stopped: how much went in before the \
         restart is not known, and running the phase again would add its whole target on top; \
         abort the batch"
    )]
    Weighing { phase: String },
    #[error("the recipe discards a batch interrupted in phase {phase}; abort it")]
    Discard { phase: String },
    #[error(
        "the recipe's resume policy for phase {phase} is not known (its recipe revision can no \
         longer be loaded); abort the batch"
    )]
    UnknownPolicy { phase: String },
    #[error(
        "the recipe leaves phase {phase} to a QA decision: QA must review the batch (an \
         e-signature) before it may resume"
    )]
    NeedsQa { phase: String },
    #[error("acknowledge the restart alarm with a reason first (who checked the unit, and why)")]
    NotAcknowledged,
}

/// Whether the batch may resume now; if so, what the resume does, in words for the record.
pub fn may_resume(held: &Held<'_>) -> Result<String, Refusal> {
    let Some(phase) = held.interrupted else {
        return if held.acknowledged {
            Ok("no phase was interrupted; the next phase starts".to_owned())
        } else {
            Err(Refusal::NotAcknowledged)
        };
    };
    let id = phase.id().to_owned();
    if matches!(phase, Planned::Dispense { .. } | Planned::ManualDispense { .. }) {
        return Err(Refusal::Weighing { phase: id });
    }
    let how = match held.policy {
        None => return Err(Refusal::UnknownPolicy { phase: id }),
        Some(ResumePolicy::Discard) => return Err(Refusal::Discard { phase: id }),
        Some(ResumePolicy::QaDecision) if !held.qa_reviewed => {
            return Err(Refusal::NeedsQa { phase: id });
        }
        Some(ResumePolicy::QaDecision) => "after QA's review",
        Some(ResumePolicy::Repeat) => "as the recipe's policy (repeat) says",
        Some(ResumePolicy::Resume) => {
            "in full: the recipe's policy is resume, but the time it ran before the restart \
             was not recorded"
        }
    };
    if !held.acknowledged {
        return Err(Refusal::NotAcknowledged);
    }
    Ok(format!("phase {id} runs again from its beginning, {how}"))
}

/// What the operator must do now, in words for the screen.
pub fn instruction(held: &Held<'_>) -> String {
    let at = held.interrupted.map(|p| format!(" in phase {}", p.id())).unwrap_or_default();
    match may_resume(held) {
        Ok(_) => format!("Held after a restart{at}: resume or abort"),
        Err(Refusal::NotAcknowledged) => format!(
            "Held after a restart{at}: check the unit, acknowledge the alarm with a reason, then \
             resume or abort"
        ),
        // Each refusal names the phase itself.
        Err(why) => format!("Held after a restart: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::engine::batch::Pump;
    use crate::engine::dispense::Spec;

    fn phases() -> Vec<Planned> {
        vec![
            Planned::Dispense {
                id: "dispense-vehicle".into(),
                material: "vehicle".into(),
                pump: Pump::Peristaltic,
                spec: Spec {
                    target_g: 40.0,
                    tolerance_g: 0.5,
                    density_g_ml: 1.0,
                    max_rate_ml_min: 60.0,
                },
            },
            Planned::ManualDispense {
                id: "dispense-api".into(),
                material: "azathioprine".into(),
                target_g: 0.5,
                tolerance_g: 0.005,
            },
            Planned::Heat { id: "warm".into(), target_c: 40.0, ramp_c_per_min: 2.0 },
            Planned::Timed { id: "mix".into(), duration: Duration::from_secs(600) },
        ]
    }

    /// One line per case: phase, policy, acknowledged, reviewed → the answer.
    #[test]
    fn what_a_held_batch_may_do_after_a_restart() {
        use ResumePolicy::*;
        let plan = phases();
        let phase = |id: &str| plan.iter().find(|p| p.id() == id);
        let mut table = String::new();
        let cases: [(Option<&str>, Option<ResumePolicy>, bool, bool); 13] = [
            (Some("dispense-vehicle"), Some(Resume), true, true),
            (Some("dispense-vehicle"), Some(QaDecision), true, true),
            (Some("dispense-api"), Some(Repeat), true, true),
            (Some("warm"), Some(Discard), true, true),
            (Some("warm"), None, true, true),
            (Some("warm"), Some(QaDecision), true, false),
            (Some("warm"), Some(QaDecision), false, true),
            (Some("warm"), Some(QaDecision), true, true),
            (Some("warm"), Some(Repeat), false, false),
            (Some("warm"), Some(Repeat), true, false),
            (Some("mix"), Some(Resume), true, false),
            (None, None, false, false),
            (None, None, true, false),
        ];
        for (id, policy, acknowledged, qa_reviewed) in cases {
            let held = Held { interrupted: id.and_then(phase), policy, acknowledged, qa_reviewed };
            let answer = match may_resume(&held) {
                Ok(how) => format!("resume: {how}"),
                Err(why) => format!("refused: {why}"),
            };
            table.push_str(&format!(
                "{} / {policy:?} / ack {acknowledged} / qa {qa_reviewed}\n  {answer}\n  screen: {}\n",
                id.unwrap_or("(between phases)"),
                instruction(&held)
            ));
        }
        insta::assert_snapshot!(table);
    }
}
