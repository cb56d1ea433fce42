//! Gravimetric dispensing: pump fast, then slow near the target, stop early by the mass still
//! in flight, let the balance settle, then judge against the tolerance; top up if short.
//!
//! "In flight" is what arrives after the stop: liquid in the tubing and nozzle, and what the
//! balance has not shown yet because its filter lags. It is modelled as the flow times a lag,
//! `lag_s`, which starts from the configured guess and is learned from each stop (the mass that
//! arrived after it divided by the flow at the time). Liquid cannot be taken back, so an
//! overshoot beyond tolerance ends the phase with a deviation; a shortfall is topped up in
//! small steps at the fine rate, at most `max_top_ups` times.
//!
//! Pure: readings and time come in, rate commands and a verdict go out.

use std::time::Duration;

use serde::Serialize;

/// What to dispense, from the recipe and the personalised parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spec {
    pub target_g: f64,
    pub tolerance_g: f64,
    pub density_g_ml: f64,
    /// The pump's highest rate.
    pub max_rate_ml_min: f64,
}

/// How the controller behaves; defaults suit a syringe or peristaltic pump into a vessel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tuning {
    /// Switch to the fine rate when this fraction of the target remains.
    pub fine_fraction: f64,
    /// But never with less than this much left (g).
    pub fine_min_g: f64,
    /// Fine rate as a fraction of the maximum rate.
    pub fine_rate_fraction: f64,
    /// First guess of the lag between the pump and the balance (s).
    pub lag_s: f64,
    /// How long the balance must report stable after a stop before judging.
    pub settle: Duration,
    pub max_top_ups: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            fine_fraction: 0.1,
            fine_min_g: 2.0,
            fine_rate_fraction: 0.1,
            lag_s: 1.0,
            settle: Duration::from_secs(2),
            max_top_ups: 3,
        }
    }
}

/// What the runtime must do.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Run the pump at this rate (mL/min).
    Rate {
        ml_min: f64,
    },
    Stop,
    Done(Outcome),
}

/// How the dispense ended.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Within {
        dispensed_g: f64,
        top_ups: u32,
    },
    /// More than target + tolerance: a deviation; liquid cannot be taken back.
    Over {
        dispensed_g: f64,
    },
    /// Still short after every top-up: a deviation.
    Under {
        dispensed_g: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    NotStarted,
    Coarse,
    Fine,
    Settling { since: Option<Duration>, stopped_net: f64, flow_g_s: f64 },
    Done,
}

/// One dispense in progress.
#[derive(Debug, Clone)]
pub struct Dispense {
    spec: Spec,
    tuning: Tuning,
    tare_g: f64,
    step: Step,
    lag_s: f64,
    top_ups: u32,
}

impl Dispense {
    pub fn new(spec: Spec, tuning: Tuning) -> Self {
        Self { spec, tuning, tare_g: 0.0, step: Step::NotStarted, lag_s: tuning.lag_s, top_ups: 0 }
    }

    /// Whether [`Dispense::start`] has been called.
    pub fn is_started(&self) -> bool {
        !matches!(self.step, Step::NotStarted)
    }

    /// The fraction of the target on the balance, 0 to 1, for display only.
    pub fn progress(&self, gross_g: f64) -> f64 {
        if !self.is_started() || self.spec.target_g <= 0.0 {
            return 0.0;
        }
        ((gross_g - self.tare_g) / self.spec.target_g).clamp(0.0, 1.0)
    }

    /// The zero of this dispense (the gross reading it started from).
    pub fn zero_g(&self) -> f64 {
        self.tare_g
    }

    /// What this dispense must deliver.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Goes on after a hold, from a stable gross reading taken against the original zero: what
    /// is in already counts, and only the remainder is dispensed (coarse or fine by how much
    /// remains). If the target is already reached (the hold came while settling, or in-flight
    /// mass completed it) the verdict comes at once. Top-ups used before the hold stay used.
    pub fn resume(&mut self, gross_g: f64) -> Action {
        let net = gross_g - self.tare_g;
        if let Some(done) = self.verdict(net) {
            return done;
        }
        if self.spec.target_g - net > self.fine_band() {
            self.step = Step::Coarse;
            Action::Rate { ml_min: self.coarse_ml_min() }
        } else {
            self.step = Step::Fine;
            Action::Rate { ml_min: self.fine_ml_min() }
        }
    }

    /// The end of the dispense once `net` is over the tolerance band or within it.
    fn verdict(&mut self, net: f64) -> Option<Action> {
        let (target, tol) = (self.spec.target_g, self.spec.tolerance_g);
        let outcome = if net > target + tol {
            Outcome::Over { dispensed_g: net }
        } else if net >= target - tol {
            Outcome::Within { dispensed_g: net, top_ups: self.top_ups }
        } else {
            return None;
        };
        self.step = Step::Done;
        Some(Action::Done(outcome))
    }

    /// The lag learned so far (s), for the record and for the next dispense.
    pub fn lag_s(&self) -> f64 {
        self.lag_s
    }

    fn coarse_ml_min(&self) -> f64 {
        self.spec.max_rate_ml_min
    }

    fn fine_ml_min(&self) -> f64 {
        self.spec.max_rate_ml_min * self.tuning.fine_rate_fraction
    }

    fn g_per_s(&self, ml_min: f64) -> f64 {
        ml_min * self.spec.density_g_ml / 60.0
    }

    fn fine_band(&self) -> f64 {
        (self.spec.target_g * self.tuning.fine_fraction).max(self.tuning.fine_min_g)
    }

    /// Starts from a stable gross reading, which becomes the zero of this dispense.
    pub fn start(&mut self, gross_g: f64) -> Action {
        self.tare_g = gross_g;
        if self.spec.target_g <= self.fine_band() {
            self.step = Step::Fine;
            Action::Rate { ml_min: self.fine_ml_min() }
        } else {
            self.step = Step::Coarse;
            Action::Rate { ml_min: self.coarse_ml_min() }
        }
    }

    /// A balance reading; returns what to do, if anything.
    pub fn reading(&mut self, now: Duration, gross_g: f64, stable: bool) -> Option<Action> {
        let net = gross_g - self.tare_g;
        let target = self.spec.target_g;
        match self.step {
            Step::NotStarted | Step::Done => None,
            Step::Coarse => {
                let in_flight = self.g_per_s(self.coarse_ml_min()) * self.lag_s;
                (net + in_flight >= target - self.fine_band()).then(|| {
                    self.step = Step::Fine;
                    Action::Rate { ml_min: self.fine_ml_min() }
                })
            }
            Step::Fine => {
                let flow = self.g_per_s(self.fine_ml_min());
                (net + flow * self.lag_s >= target).then(|| {
                    self.step = Step::Settling { since: None, stopped_net: net, flow_g_s: flow };
                    Action::Stop
                })
            }
            Step::Settling { since, stopped_net, flow_g_s } => {
                let since = if stable { Some(since.unwrap_or(now)) } else { None };
                self.step = Step::Settling { since, stopped_net, flow_g_s };
                let settled = since.is_some_and(|s| now.saturating_sub(s) >= self.tuning.settle);
                settled.then(|| self.judge(net, stopped_net, flow_g_s))
            }
        }
    }

    fn judge(&mut self, net: f64, stopped_net: f64, flow_g_s: f64) -> Action {
        // What arrived after the stop teaches the lag, within physical sense.
        if flow_g_s > 0.0 {
            self.lag_s = ((net - stopped_net) / flow_g_s).clamp(0.0, 10.0);
        }
        if let Some(done) = self.verdict(net) {
            return done;
        }
        if self.top_ups >= self.tuning.max_top_ups {
            self.step = Step::Done;
            return Action::Done(Outcome::Under { dispensed_g: net });
        }
        self.top_ups += 1;
        self.step = Step::Fine;
        Action::Rate { ml_min: self.fine_ml_min() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pump into a vessel through tubing (first-order lag `tau`), weighed by a balance that
    /// reads to 0.01 g: enough physics to exercise the controller. The full plant lives in
    /// galen-hil.
    struct Rig {
        tau: f64,
        flow_g_s: f64,
        commanded_g_s: f64,
        mass: f64,
    }

    impl Rig {
        fn step(&mut self, dt: f64) {
            self.flow_g_s += (self.commanded_g_s - self.flow_g_s) * (dt / self.tau).min(1.0);
            self.mass += self.flow_g_s * dt;
        }
        fn reading(&self) -> (f64, bool) {
            ((self.mass * 100.0).round() / 100.0, self.flow_g_s.abs() < 0.001)
        }
    }

    fn run(spec: Spec, tau: f64) -> (Outcome, f64) {
        let mut rig = Rig { tau, flow_g_s: 0.0, commanded_g_s: 0.0, mass: 50.0 };
        let mut d = Dispense::new(spec, Tuning::default());
        let apply = |a: Action, rig: &mut Rig| match a {
            Action::Rate { ml_min } => {
                rig.commanded_g_s = ml_min * spec.density_g_ml / 60.0;
                None
            }
            Action::Stop => {
                rig.commanded_g_s = 0.0;
                None
            }
            Action::Done(o) => Some(o),
        };
        apply(d.start(rig.reading().0), &mut rig);
        for tick in 1..200_000u64 {
            rig.step(0.05);
            let now = Duration::from_millis(50 * tick);
            let (g, stable) = rig.reading();
            if let Some(out) = d.reading(now, g, stable).and_then(|a| apply(a, &mut rig)) {
                return (out, d.lag_s());
            }
        }
        panic!("the dispense never finished");
    }

    fn spec(target_g: f64) -> Spec {
        Spec { target_g, tolerance_g: 0.1, density_g_ml: 1.06, max_rate_ml_min: 60.0 }
    }

    #[test]
    fn doses_from_10_to_100_g_land_within_tolerance() {
        for target in [10.0, 25.0, 50.0, 100.0] {
            let (out, _) = run(spec(target), 0.8);
            match out {
                Outcome::Within { dispensed_g, .. } => {
                    assert!((dispensed_g - target).abs() <= 0.1, "{target}: {dispensed_g}")
                }
                other => panic!("{target} g ended {other:?}"),
            }
        }
    }

    #[test]
    fn a_lag_longer_than_guessed_is_learned_and_the_stop_comes_earlier_next_time() {
        let (_, learned) = run(spec(50.0), 1.5);
        assert!(learned > 1.2, "learned lag {learned} s");
    }

    #[test]
    fn a_tiny_dose_starts_at_the_fine_rate() {
        let mut d = Dispense::new(spec(1.0), Tuning::default());
        assert_eq!(d.start(10.0), Action::Rate { ml_min: 6.0 });
    }

    #[test]
    fn an_overshoot_beyond_tolerance_is_a_deviation_not_a_silent_pass() {
        // A very long lag with a tight tolerance: the stop cannot come early enough.
        let tight = Spec { tolerance_g: 0.01, ..spec(10.0) };
        let (out, _) = run(tight, 6.0);
        assert!(matches!(out, Outcome::Over { .. }), "{out:?}");
    }

    /// A hold mid-dispense, then a resume from the settled weight: only the remainder goes in,
    /// against the zero the dispense started from.
    #[test]
    fn a_resume_dispenses_only_the_remainder_against_the_original_zero() {
        let secs = Duration::from_secs;
        let cases = [
            // (settled gross at the resume, the action)
            (130.0, Action::Rate { ml_min: 60.0 }),
            (147.5, Action::Rate { ml_min: 6.0 }),
            (149.9375, Action::Done(Outcome::Within { dispensed_g: 49.9375, top_ups: 0 })),
            (150.5, Action::Done(Outcome::Over { dispensed_g: 50.5 })),
        ];
        for (gross, expected) in cases {
            let mut d = Dispense::new(spec(50.0), Tuning::default());
            assert_eq!(d.start(100.0), Action::Rate { ml_min: 60.0 });
            assert_eq!(d.reading(secs(1), 110.0, false), None);
            // Held here: the pump stopped; the runtime resumes from a stable reading.
            assert_eq!(d.resume(gross), expected, "{gross}");
            assert_eq!(d.zero_g(), 100.0, "the zero is the one the dispense started from");
        }
        let mut d = Dispense::new(spec(50.0), Tuning::default());
        d.start(100.0);
        d.resume(130.0);
        // Coarse until the fine band (5 g) minus the in-flight mass (1.06 g/s × 1 s).
        assert_eq!(d.reading(secs(2), 143.0, false), None);
        assert_eq!(d.reading(secs(3), 144.0, false), Some(Action::Rate { ml_min: 6.0 }));
    }

    #[test]
    fn a_shortfall_is_topped_up_at_most_max_top_ups_times() {
        let secs = Duration::from_secs;
        let mut d = Dispense::new(spec(10.0), Tuning { max_top_ups: 1, ..Tuning::default() });
        assert_eq!(d.start(0.0), Action::Rate { ml_min: 60.0 });
        assert_eq!(d.reading(secs(1), 7.0, false), Some(Action::Rate { ml_min: 6.0 }));
        assert_eq!(d.reading(secs(2), 9.9, false), Some(Action::Stop));
        // It settles at 9.0 g: the balance read high while the liquid was moving.
        assert_eq!(d.reading(secs(3), 9.0, true), None);
        assert_eq!(d.reading(secs(5), 9.0, true), Some(Action::Rate { ml_min: 6.0 }));
        assert_eq!(d.reading(secs(6), 10.0, false), Some(Action::Stop));
        assert_eq!(d.reading(secs(7), 9.5, true), None);
        assert_eq!(
            d.reading(secs(9), 9.5, true),
            Some(Action::Done(Outcome::Under { dispensed_g: 9.5 }))
        );
    }
}
