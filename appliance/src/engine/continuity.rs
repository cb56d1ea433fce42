//! Whether a weighing phase interrupted by an in-run hold may go on against its original zero.
//!
//! A dispense weighs against the zero it took when it started: the mass delivered is the gross
//! reading minus that zero. A hold stops the pump; a resume must dispense only the remainder,
//! never the whole target again from a fresh zero on top of what is already in (a double dose
//! the over-volume ceiling would only catch at its margin). That is sound only while the
//! balance kept an unbroken view of the vessel during the hold. Continuity is lost, for good,
//! when:
//!
//! - the balance link was lost or its readings went stale (anything may have happened unseen),
//! - the balance was overloaded, or stayed unstable long enough for the monitor to fault,
//! - the vessel went over its limit (the batch is beyond what any resume can put right),
//! - a stable reading shows mass removed: below the phase's zero, or below the highest stable
//!   reading seen during the hold, by more than half the phase's tolerance (liquid cannot leave
//!   a vessel on a balance by itself; a lifted vessel or a front-panel tare can).
//!
//! A resume also needs a stable reading since the hold to start from, and the latest reading,
//! stable or not, no lower than it beyond the margin (a vessel being lifted right now); that
//! one is not permanent (wait, then resume). A balance's stable flag flickers with noise, so
//! the latest stable reading counts rather than only the very last one: the resumed dispense
//! steers by live readings against its zero anyway, and the reading only decides where it goes
//! on from.
//! Once continuity is lost only stop and abort remain, as after a supervisor restart
//! (`engine::restart`), where the zero is lost with the engine's memory.
//!
//! Pure: readings and faults come in, a verdict goes out.

use super::safety::Fault;

/// Why an interrupted weighing phase may not resume.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Break {
    #[error(
        "the balance link was lost while the phase was interrupted: what happened to the vessel \
         meanwhile is not known"
    )]
    LinkLost,
    #[error(
        "the balance stopped reporting while the phase was interrupted: what happened to the \
         vessel meanwhile is not known"
    )]
    Stale,
    #[error("the balance was overloaded while the phase was interrupted")]
    Overload,
    #[error("the balance stayed unstable while the phase was interrupted")]
    Unstable,
    #[error("the vessel went over its limit")]
    OverVolume,
    #[error(
        "mass was removed from the balance: {now_g:.4} g where {was_g:.4} g had been weighed \
         (the phase's zero and what went in are no longer on the pan)"
    )]
    Removed { was_g: f64, now_g: f64 },
}

/// Why a resume cannot go ahead right now.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// Continuity is lost for good: stop or abort.
    #[error("phase {phase} cannot continue against its zero: {why}; stop or abort the batch")]
    Broken { phase: String, why: Break },
    /// The pan is moving (or nothing was read since the hold): wait, then resume.
    #[error(
        "phase {phase}: the balance does not show a stable weight now; wait until it is stable, \
         then resume"
    )]
    NotSettled { phase: String },
}

/// The balance's view of one interrupted weighing phase, from the hold to the resume.
#[derive(Debug, Clone, PartialEq)]
pub struct Continuity {
    zero_g: f64,
    margin_g: f64,
    /// The highest stable gross reading since the hold (at least the zero).
    highest_g: f64,
    /// The latest reading, stable or not (gross grams).
    last: Option<f64>,
    /// The latest stable reading since the hold (gross grams).
    last_stable: Option<f64>,
    broken: Option<Break>,
}

impl Continuity {
    /// Starts watching at the hold: `zero_g` is the phase's zero (gross), `tolerance_g` the
    /// phase's tolerance (half of it is what a stable reading may fall without counting as
    /// removal: balance noise and drift, well below what could change the dose).
    pub fn new(zero_g: f64, tolerance_g: f64) -> Self {
        Self {
            zero_g,
            margin_g: (tolerance_g / 2.0).max(0.0),
            highest_g: zero_g,
            last: None,
            last_stable: None,
            broken: None,
        }
    }

    /// The phase's zero (gross grams).
    pub fn zero_g(&self) -> f64 {
        self.zero_g
    }

    /// Why continuity is lost, if it is.
    pub fn broken(&self) -> Option<&Break> {
        self.broken.as_ref()
    }

    fn lose(&mut self, why: Break) -> Option<Break> {
        if self.broken.is_some() {
            return None;
        }
        self.broken = Some(why.clone());
        Some(why)
    }

    /// A balance reading (`None`: overload). Returns the break if this reading caused it.
    pub fn reading(&mut self, grams: Option<f64>, stable: bool) -> Option<Break> {
        let Some(g) = grams else {
            self.last = None;
            return self.lose(Break::Overload);
        };
        self.last = Some(g);
        if !stable {
            return None;
        }
        self.last_stable = Some(g);
        if g < self.highest_g - self.margin_g {
            return self.lose(Break::Removed { was_g: self.highest_g, now_g: g });
        }
        self.highest_g = self.highest_g.max(g);
        None
    }

    /// A fault while the phase was interrupted (or the one that interrupted it). Returns the
    /// break if this fault caused it; faults that do not concern the balance change nothing.
    pub fn fault(&mut self, fault: &Fault) -> Option<Break> {
        let why = match fault {
            Fault::LinkDown { device } if device == "balance" => Break::LinkLost,
            Fault::Stale { device, .. } if device == "balance" => Break::Stale,
            Fault::BalanceOverload => Break::Overload,
            Fault::BalanceUnstable { .. } => Break::Unstable,
            Fault::OverVolume { .. } => Break::OverVolume,
            _ => return None,
        };
        self.lose(why)
    }

    /// Whether phase `phase` may resume now; if so, the stable gross reading to resume from.
    pub fn verdict(&self, phase: &str) -> Result<f64, Refusal> {
        if let Some(why) = &self.broken {
            return Err(Refusal::Broken { phase: phase.to_owned(), why: why.clone() });
        }
        match (self.last_stable, self.last) {
            (Some(stable), Some(last)) if last >= stable - self.margin_g => Ok(stable),
            _ => Err(Refusal::NotSettled { phase: phase.to_owned() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    enum Step {
        Read(Option<f64>, bool),
        Fault(Fault),
    }
    use Step::{Fault as F, Read as R};

    /// One line per case: what the balance and the monitor said during the hold → the verdict.
    /// The phase's zero is 100 g, its tolerance 0.2 g (a margin of 0.1 g).
    #[test]
    fn when_an_interrupted_weighing_phase_may_resume() {
        let cases: Vec<(&str, Vec<Step>)> = vec![
            ("nothing read since the hold", vec![]),
            ("settled with 12 g in", vec![R(Some(112.0), false), R(Some(112.0), true)]),
            ("in flight arrived after the stop", vec![R(Some(111.8), true), R(Some(112.1), true)]),
            ("noise within half the tolerance", vec![R(Some(112.0), true), R(Some(111.95), true)]),
            ("moving at the resume", vec![R(Some(112.0), true), R(Some(113.0), false)]),
            ("moving, never stable", vec![R(Some(112.0), false), R(Some(113.0), false)]),
            ("being lifted at the resume", vec![R(Some(112.0), true), R(Some(60.0), false)]),
            (
                "a bump, then stable again",
                vec![R(Some(112.0), true), R(Some(80.0), false), R(Some(112.0), true)],
            ),
            (
                "vessel lifted off",
                vec![R(Some(112.0), true), R(Some(0.3), true), R(Some(112.0), true)],
            ),
            ("front-panel tare", vec![R(Some(112.0), true), R(Some(0.0), true)]),
            ("below the zero at once", vec![R(Some(99.5), true)]),
            ("overloaded", vec![R(Some(112.0), true), R(None, false), R(Some(112.0), true)]),
            (
                "balance link lost",
                vec![F(Fault::LinkDown { device: "balance".into() }), R(Some(112.0), true)],
            ),
            (
                "balance stale",
                vec![
                    F(Fault::Stale { device: "balance".into(), age_ms: 3100 }),
                    R(Some(112.0), true),
                ],
            ),
            (
                "unstable for a minute",
                vec![F(Fault::BalanceUnstable { for_ms: 60_000 }), R(Some(112.0), true)],
            ),
            (
                "over volume",
                vec![F(Fault::OverVolume { mass_g: 150.0, limit_g: 140.0 }), R(Some(112.0), true)],
            ),
            (
                "pump stalled (the hold's cause)",
                vec![
                    F(Fault::PumpStall {
                        pump: "peristaltic pump".into(),
                        expected_g: 5.0,
                        gained_g: 0.1,
                    }),
                    R(Some(112.0), true),
                ],
            ),
            (
                "heater link lost",
                vec![F(Fault::LinkDown { device: "heater".into() }), R(Some(112.0), true)],
            ),
            (
                "heater stale",
                vec![
                    F(Fault::Stale { device: "heater".into(), age_ms: 3100 }),
                    R(Some(112.0), true),
                ],
            ),
            ("emergency stop", vec![F(Fault::EmergencyStop), R(Some(112.0), true)]),
        ];
        let mut table = String::new();
        for (name, steps) in cases {
            let mut c = Continuity::new(100.0, 0.2);
            let mut noted = Vec::new();
            for step in steps {
                let broke = match step {
                    R(g, stable) => c.reading(g, stable),
                    F(f) => c.fault(&f),
                };
                noted.extend(broke.map(|b| format!("broke: {b}")));
            }
            let verdict = match c.verdict("dispense-vehicle") {
                Ok(g) => format!("resume from {g:.4} g gross, {:.4} g in", g - c.zero_g()),
                Err(why) => format!("refused: {why}"),
            };
            table.push_str(&format!("{name}\n"));
            for n in noted {
                table.push_str(&format!("  {n}\n"));
            }
            table.push_str(&format!("  {verdict}\n"));
        }
        insta::assert_snapshot!(table);
    }

    #[test]
    fn a_break_is_reported_once_and_is_for_good() {
        let mut c = Continuity::new(10.0, 0.2);
        assert_eq!(c.reading(Some(5.0), true), Some(Break::Removed { was_g: 10.0, now_g: 5.0 }));
        assert_eq!(c.fault(&Fault::BalanceOverload), None, "already broken");
        assert_eq!(c.reading(Some(15.0), true), None);
        assert_eq!(c.broken(), Some(&Break::Removed { was_g: 10.0, now_g: 5.0 }));
        assert!(matches!(c.verdict("p"), Err(Refusal::Broken { .. })));
    }
}
