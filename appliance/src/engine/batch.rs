//! One batch in the engine: `(state, event, now) -> (state, outputs)` over a plan of phases.
//!
//! The batch consumes a closed [`Event`] enum and returns [`Output`]s for the runtime to apply
//! in order. Two rules hold everywhere:
//! - On any fault the first outputs are `StopAllPumps` and `HeaterOff`, before the batch is
//!   held, the alarm raised and the entry recorded. Safety never waits for bookkeeping.
//! - Phases run strictly in plan order; an operator event meant for another phase (a scan
//!   while dispensing, a cleaning confirmation while heating) is refused, not queued.
//!
//! Time is the duration since the supervisor started, passed in with every event.

use std::time::Duration;

use serde::Serialize;

use super::continuity::{self, Continuity};
use super::dispense::{self, Dispense};
use super::safety::{Fault, Monitor};
use super::state::{self, Command, State};

/// A pump of the unit, by the role the recipe gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pump {
    Syringe,
    Peristaltic,
}

/// A phase with concrete targets, ready to run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Planned {
    /// Check the scanned material, lot and expiry.
    Scan { id: String, material: String },
    /// Zero the balance with the empty vessel on it.
    Tare { id: String },
    /// Dispense by weight through a pump.
    Dispense {
        id: String,
        material: String,
        pump: Pump,
        #[serde(skip)]
        spec: dispense::Spec,
    },
    /// The operator adds a material by hand onto the balance and confirms.
    ManualDispense { id: String, material: String, target_g: f64, tolerance_g: f64 },
    /// Push a volume through a pump into waste (not weighed).
    Prime { id: String, pump: Pump, volume_ml: f64, ml_min: f64 },
    /// Heat to a target at no more than a ramp.
    Heat { id: String, target_c: f64, ramp_c_per_min: f64 },
    /// Keep within a band for a time (time counts only while in the band).
    Hold { id: String, min_c: f64, max_c: f64, duration: Duration },
    /// Run for a time (mixing).
    Timed { id: String, duration: Duration },
    /// Cool below a temperature within a time.
    Cool { id: String, target_c: f64, within: Duration },
    /// An operator confirms cleaning or changeover.
    Clean { id: String, instruction: String },
}

impl Planned {
    pub fn id(&self) -> &str {
        match self {
            Self::Scan { id, .. }
            | Self::Tare { id }
            | Self::Dispense { id, .. }
            | Self::ManualDispense { id, .. }
            | Self::Prime { id, .. }
            | Self::Heat { id, .. }
            | Self::Hold { id, .. }
            | Self::Timed { id, .. }
            | Self::Cool { id, .. }
            | Self::Clean { id, .. } => id,
        }
    }
}

/// What can happen to a batch. Closed: the runtime translates everything into one of these.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An operator command (start, hold, restart, stop, abort).
    Operator(Command),
    /// The runtime applied the safe or restart outputs (pumps confirmed stopped, heater off).
    OutputsSettled,
    Balance {
        grams: Option<f64>,
        stable: bool,
    },
    Temperature {
        celsius: Option<f64>,
    },
    /// The balance was tared.
    Tared,
    /// A material was scanned, with the label's expiry and today's date.
    Scanned {
        material: String,
        lot: String,
        expiry: Date,
        today: Date,
    },
    /// The operator confirms the current manual step (cleaning, a hand-weighed addition).
    Confirmed,
    /// Time passed with nothing else to say.
    Tick,
    /// A reading of the emergency stop's contact: `Ok(pressed)`, or `Err(why)` when its
    /// module answered without the contact's state.
    EmergencyStop(Result<bool, String>),
    /// A fault detected outside the monitor (a device link lost, a command refused).
    Fault(Fault),
}

/// A calendar date (year, month, day), ordered by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Date(pub u16, pub u8, pub u8);

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.0, self.1, self.2)
    }
}

/// What the runtime must do, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "output", rename_all = "snake_case")]
pub enum Output {
    StopAllPumps,
    HeaterOff,
    PumpRate {
        pump: Pump,
        ml_min: f64,
    },
    PumpStop {
        pump: Pump,
    },
    HeaterSetpoint {
        celsius: f64,
    },
    TareBalance,
    /// The batch changed state.
    State {
        from: State,
        to: State,
    },
    PhaseStarted {
        index: usize,
        id: String,
    },
    PhaseDone {
        index: usize,
        id: String,
        result: String,
    },
    /// An interrupted weighing phase goes on after a hold against its original zero.
    PhaseResumed {
        index: usize,
        id: String,
        text: String,
    },
    Alarm {
        fault: Fault,
        text: String,
    },
    /// Something went other than planned without being unsafe: a deviation for the record.
    Deviation {
        phase: String,
        text: String,
    },
    /// An operator event was refused; nothing changed.
    Refused {
        text: String,
    },
}

#[derive(Debug, Clone)]
enum Running {
    Waiting,
    Dispensing { d: Dispense, pump: Pump },
    Heating { start_c: Option<f64>, started: Duration, last_sp: Option<f64> },
    Holding { in_band: Duration, last: Duration, out_noted: bool },
    Timed { started: Duration },
    Manual { zero: Option<f64>, net: Option<f64> },
    Priming { started: Duration, pump: Pump, duration: Duration },
    Cooling { started: Duration },
}

/// One batch.
#[derive(Debug, Clone)]
pub struct Batch {
    state: State,
    plan: Vec<Planned>,
    index: usize,
    phase: Running,
    monitor: Monitor,
    temp: Option<f64>,
    /// The last gross balance reading, for progress only.
    gross: Option<f64>,
    setpoint: Option<f64>,
    /// Completed phases must not be redone after a restart.
    done: usize,
    /// A weighing phase interrupted by a hold: the balance's view of it until the resume.
    interrupted: Option<Continuity>,
    /// The stable gross reading an accepted resume continues from.
    resume_from: Option<f64>,
    /// What the supervisor knows of the emergency stop.
    estop: Estop,
}

/// The emergency stop as the batch knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Estop {
    /// The unit has reported no E-stop (none configured, or not read yet).
    Unknown,
    Released,
    Pressed,
    /// Its monitoring was lost: the module is silent, unplugged or answers nonsense.
    Lost,
}

/// Hysteresis for "at temperature".
const AT_TEMP_C: f64 = 0.5;

impl Batch {
    pub fn new(plan: Vec<Planned>, monitor: Monitor) -> Self {
        Self {
            state: State::Idle,
            plan,
            index: 0,
            phase: Running::Waiting,
            monitor,
            temp: None,
            gross: None,
            setpoint: None,
            done: 0,
            interrupted: None,
            resume_from: None,
            estop: Estop::Unknown,
        }
    }

    /// A batch rebuilt after a supervisor restart: Held, with the phases before `next` done,
    /// as the record says. A restart runs phase `next` from its beginning. Nothing else of the
    /// interrupted run survives (a dispense's zero, a hold's time in band), which is why
    /// [`super::restart::may_resume`] decides whether that phase may run again at all.
    pub fn held_at(plan: Vec<Planned>, monitor: Monitor, next: usize) -> Self {
        let next = next.min(plan.len());
        let mut batch = Self::new(plan, monitor);
        batch.state = State::Held;
        batch.index = next;
        batch.done = next;
        if batch.plan[..next].iter().any(|p| matches!(p, Planned::Tare { .. })) {
            // The vessel was tared before the restart: the ceiling holds as it did.
            batch.monitor.set_mass_limit(Some(batch.mass_ceiling()));
        }
        batch
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The phase running or next to run.
    pub fn current_phase(&self) -> Option<&Planned> {
        self.plan.get(self.index)
    }

    /// The planned phases, in order.
    pub fn plan(&self) -> &[Planned] {
        &self.plan
    }

    /// The index of the phase running or next to run (equals the plan's length at the end).
    pub fn phase_index(&self) -> usize {
        self.index
    }

    /// The heater setpoint the batch is asking for, if any.
    pub fn setpoint(&self) -> Option<f64> {
        self.setpoint
    }

    /// What the operator must do now for the batch to go on, in words for the screen; `None`
    /// while the unit works on its own. For display only: nothing decides on it.
    pub fn instruction(&self) -> Option<String> {
        match self.state {
            State::Held if self.estop_forbids().is_some() => {
                return Some(format!(
                    "Held: {}, acknowledge the alarm, then resume or abort",
                    self.estop_forbids().unwrap_or_default()
                ));
            }
            State::Held => {
                if let Some(why) = self.interrupted.as_ref().and_then(Continuity::broken) {
                    return Some(format!(
                        "Held: this dispense cannot continue ({why}); stop or abort the batch"
                    ));
                }
                return Some(
                    "Held: deal with the cause, acknowledge the alarm, then resume or abort".into(),
                );
            }
            State::Running => {}
            _ => return None,
        }
        match self.current_phase()? {
            Planned::Scan { material, .. } => {
                Some(format!("Scan the {material} container (lot and expiry)"))
            }
            Planned::ManualDispense { material, target_g, tolerance_g, .. } => Some(format!(
                "Add {target_g:.3} g of {material} onto the balance (± {tolerance_g:.3} g), wait \
                 until it is stable, then confirm"
            )),
            Planned::Clean { instruction, .. } => Some(format!("{instruction}, then confirm")),
            _ => None,
        }
    }

    /// What kind of operator input the batch waits for: `"scan"` (a material label),
    /// `"confirm"` (a hand-weighed addition or a cleaning step), or `None`. For display only.
    pub fn awaiting(&self) -> Option<&'static str> {
        if self.state != State::Running {
            return None;
        }
        match self.current_phase()? {
            Planned::Scan { .. } => Some("scan"),
            Planned::ManualDispense { .. } | Planned::Clean { .. } => Some("confirm"),
            _ => None,
        }
    }

    /// How far the current phase has got, from 0 to 1. For display only: nothing decides on it.
    pub fn progress(&self, now: Duration) -> f64 {
        let frac = |done: f64, total: f64| {
            if total > 0.0 { (done / total).clamp(0.0, 1.0) } else { 0.0 }
        };
        let since = |t: Duration| now.saturating_sub(t).as_secs_f64();
        match (&self.phase, self.current_phase()) {
            (Running::Dispensing { d, .. }, _) => self.gross.map_or(0.0, |g| d.progress(g)),
            (Running::Manual { net, .. }, Some(Planned::ManualDispense { target_g, .. })) => {
                frac(net.unwrap_or(0.0), *target_g)
            }
            (Running::Heating { start_c: Some(s), .. }, Some(Planned::Heat { target_c, .. })) => {
                self.temp.map_or(0.0, |t| frac(t - s, target_c - s))
            }
            (Running::Holding { in_band, .. }, Some(Planned::Hold { duration, .. })) => {
                frac(in_band.as_secs_f64(), duration.as_secs_f64())
            }
            (Running::Timed { started }, Some(Planned::Timed { duration, .. })) => {
                frac(since(*started), duration.as_secs_f64())
            }
            (Running::Priming { started, duration, .. }, _) => {
                frac(since(*started), duration.as_secs_f64())
            }
            _ => 0.0,
        }
    }

    /// Handles one event at `now` and returns what to do.
    pub fn handle(&mut self, event: Event, now: Duration) -> Vec<Output> {
        let mut out = Vec::new();
        match event {
            Event::Operator(cmd) => self.operator(cmd, now, &mut out),
            Event::OutputsSettled => self.settled(now, &mut out),
            Event::Fault(f) => self.fault(f, now, &mut out),
            Event::EmergencyStop(reading) => {
                let was = self.estop;
                self.estop = match reading {
                    Ok(true) => Estop::Pressed,
                    Ok(false) => Estop::Released,
                    Err(_) => Estop::Lost,
                };
                if let Some(f) = self.monitor.estop(now, reading) {
                    self.fault(f, now, &mut out);
                } else if was == Estop::Pressed && self.estop == Estop::Released {
                    // Recorded, and nothing more: only a person resumes.
                    let phase = self.current_phase().map_or("batch", Planned::id).to_owned();
                    out.push(Output::Deviation {
                        phase,
                        text: "emergency stop released; the batch stays as it is until someone \
                               resumes it"
                            .into(),
                    });
                }
            }
            Event::Balance { grams, stable } => {
                self.gross = grams;
                if let Some(f) = self.monitor.balance(now, grams, stable) {
                    self.fault(f, now, &mut out);
                } else if let (Some(g), true) = (grams, self.state.drives_outputs()) {
                    self.on_balance(g, stable, now, &mut out);
                } else if let Some(c) = &mut self.interrupted {
                    let broke = c.reading(grams, stable);
                    self.note_break(broke, &mut out);
                }
            }
            Event::Temperature { celsius } => {
                self.temp = celsius;
                let target = self.setpoint.filter(|_| self.state.drives_outputs());
                if let Some(f) = self.monitor.heater(now, celsius, target) {
                    self.fault(f, now, &mut out);
                } else if self.state.drives_outputs() {
                    self.on_time(now, &mut out);
                }
            }
            Event::Tick => {
                if let Some(f) = self.monitor.tick(now) {
                    self.fault(f, now, &mut out);
                } else if self.state.drives_outputs() {
                    self.on_time(now, &mut out);
                }
            }
            Event::Tared => {
                if self.state.drives_outputs()
                    && matches!(self.current_phase(), Some(Planned::Tare { .. }))
                {
                    self.finish_phase("tared".into(), now, &mut out);
                } else {
                    out.push(Output::Refused { text: "a tare was not asked for now".into() });
                }
            }
            Event::Scanned { material, lot, expiry, today } => {
                self.scanned(&material, &lot, expiry, today, now, &mut out)
            }
            Event::Confirmed => self.confirmed(now, &mut out),
        }
        out
    }

    fn transition(&mut self, cmd: Command, out: &mut Vec<Output>) -> bool {
        match state::next(self.state, cmd) {
            Ok(to) => {
                if self.state == State::Running && to == State::Holding {
                    self.interrupted = self.weighing_continuity();
                }
                out.push(Output::State { from: self.state, to });
                self.state = to;
                true
            }
            Err(e) => {
                out.push(Output::Refused { text: e.to_string() });
                false
            }
        }
    }

    fn operator(&mut self, cmd: Command, now: Duration, out: &mut Vec<Output>) {
        match cmd {
            Command::Hold | Command::Stop | Command::Abort => {
                if self.state.drives_outputs() || matches!(self.state, State::Restarting) {
                    // Leaving Running always makes the outputs safe first.
                    out.extend([Output::StopAllPumps, Output::HeaterOff]);
                    self.monitor.pump_commanded("all", now, 0.0);
                }
                self.transition(cmd, out);
                if self.state == State::Aborted {
                    out.extend([Output::StopAllPumps, Output::HeaterOff]);
                }
            }
            Command::Start | Command::Restart if self.estop_forbids().is_some() => {
                let why = self.estop_forbids().unwrap_or_default();
                out.push(Output::Refused { text: why.to_owned() });
            }
            Command::Start => {
                if self.transition(cmd, out) {
                    self.begin_phase(now, out);
                }
            }
            Command::Restart => {
                if self.state == State::Held
                    && let Some(c) = &self.interrupted
                {
                    let id = self.current_phase().map(|p| p.id().to_owned()).unwrap_or_default();
                    match c.verdict(&id) {
                        Ok(gross) => self.resume_from = Some(gross),
                        Err(why) => {
                            // Held stays Held: stop and abort remain.
                            out.push(Output::Refused { text: why.to_string() });
                            return;
                        }
                    }
                }
                self.transition(cmd, out);
            }
            Command::Settled | Command::Finished => {
                out.push(Output::Refused { text: format!("{cmd:?} is not an operator command") });
            }
        }
    }

    fn settled(&mut self, now: Duration, out: &mut Vec<Output>) {
        match self.state {
            State::Holding | State::Stopping | State::Aborting => {
                self.transition(Command::Settled, out);
            }
            State::Restarting => {
                let resumed = self.transition(Command::Settled, out);
                if resumed {
                    // Finished phases stay finished. An interrupted weighing phase goes on
                    // against its zero; any other starts again from its beginning.
                    self.index = self.done;
                    let from = self.resume_from.take();
                    self.interrupted = None;
                    match from {
                        Some(gross) => self.resume_weighing(gross, now, out),
                        None => self.begin_phase(now, out),
                    }
                }
            }
            _ => {}
        }
    }

    /// Why the E-stop forbids driving the outputs now, if it does.
    fn estop_forbids(&self) -> Option<&'static str> {
        match self.estop {
            Estop::Pressed => Some("the emergency stop is pressed: release it first"),
            Estop::Lost => Some(
                "the emergency stop is not monitored (its input module does not answer): \
                 restore it first",
            ),
            Estop::Unknown | Estop::Released => None,
        }
    }

    fn fault(&mut self, fault: Fault, now: Duration, out: &mut Vec<Output>) {
        let estop_silent = matches!(&fault, Fault::LinkDown { device } | Fault::Stale { device, .. } if device == "estop");
        if estop_silent {
            self.estop = Estop::Lost;
        }
        out.extend([Output::StopAllPumps, Output::HeaterOff]);
        self.setpoint = None;
        // Nothing is commanded to flow any more: the stall check has nothing to expect.
        self.monitor.pump_commanded("all", now, 0.0);
        out.push(Output::Alarm { text: fault.describe(), fault: fault.clone() });
        if matches!(self.state, State::Running | State::Restarting) {
            self.transition(Command::Hold, out);
        }
        // The hold's own cause counts too (a balance unplugged mid-dispense).
        if let Some(c) = &mut self.interrupted {
            let broke = c.fault(&fault);
            self.note_break(broke, out);
        }
    }

    /// The balance's view of the weighing phase being interrupted now, if it had a zero.
    fn weighing_continuity(&self) -> Option<Continuity> {
        match (&self.phase, self.current_phase()) {
            (Running::Dispensing { d, .. }, _) if d.is_started() => {
                Some(Continuity::new(d.zero_g(), d.spec().tolerance_g))
            }
            (
                Running::Manual { zero: Some(z), .. },
                Some(Planned::ManualDispense { tolerance_g, .. }),
            ) => Some(Continuity::new(*z, *tolerance_g)),
            _ => None,
        }
    }

    /// Records, when it happens, that the interrupted phase lost its continuity.
    fn note_break(&self, broke: Option<continuity::Break>, out: &mut Vec<Output>) {
        if let Some(why) = broke {
            let phase = self.current_phase().map(|p| p.id().to_owned()).unwrap_or_default();
            out.push(Output::Deviation {
                phase,
                text: format!("this phase can no longer resume: {why}"),
            });
        }
    }

    /// Goes on with the interrupted weighing phase from a stable `gross` reading, against the
    /// zero it took when it started.
    fn resume_weighing(&mut self, gross: f64, now: Duration, out: &mut Vec<Output>) {
        let Some(phase) = self.plan.get(self.index).cloned() else { return };
        let (index, id) = (self.index, phase.id().to_owned());
        match &mut self.phase {
            Running::Dispensing { d, pump } => {
                let (pump, zero, target) = (*pump, d.zero_g(), d.spec().target_g);
                let action = d.resume(gross);
                let text = format!(
                    "resumed against the phase's zero: {:.2} g of {target:.2} g already in, \
                     {:.2} g to go",
                    gross - zero,
                    (target - (gross - zero)).max(0.0)
                );
                out.push(Output::PhaseResumed { index, id, text });
                self.dispense_action(Some(action), pump, now, out);
            }
            Running::Manual { zero: Some(zero), net } => {
                *net = Some(gross - *zero);
                let text = format!(
                    "resumed against the phase's zero: {:.4} g already on the balance",
                    gross - *zero
                );
                out.push(Output::PhaseResumed { index, id, text });
            }
            // Only weighing phases with a zero are resumed from a reading.
            _ => self.begin_phase(now, out),
        }
    }

    fn begin_phase(&mut self, now: Duration, out: &mut Vec<Output>) {
        let Some(phase) = self.plan.get(self.index).cloned() else {
            self.monitor.set_mass_limit(None);
            self.transition(Command::Finished, out);
            return;
        };
        out.push(Output::PhaseStarted { index: self.index, id: phase.id().to_owned() });
        self.phase = match &phase {
            Planned::Scan { .. } | Planned::Clean { .. } => Running::Waiting,
            Planned::Tare { .. } => {
                out.push(Output::TareBalance);
                Running::Waiting
            }
            Planned::Dispense { spec, pump, .. } => Running::Dispensing {
                d: Dispense::new(*spec, dispense::Tuning::default()),
                pump: *pump,
            },
            Planned::Heat { .. } => {
                Running::Heating { start_c: self.temp, started: now, last_sp: None }
            }
            Planned::Hold { min_c, max_c, .. } => {
                let mid = (min_c + max_c) / 2.0;
                self.setpoint = Some(mid);
                out.push(Output::HeaterSetpoint { celsius: mid });
                Running::Holding { in_band: Duration::ZERO, last: now, out_noted: false }
            }
            Planned::Timed { .. } => Running::Timed { started: now },
            Planned::ManualDispense { .. } => Running::Manual { zero: None, net: None },
            Planned::Prime { pump, volume_ml, ml_min, .. } => {
                out.push(Output::PumpRate { pump: *pump, ml_min: *ml_min });
                let secs = if *ml_min > 0.0 { volume_ml / ml_min * 60.0 } else { 0.0 };
                Running::Priming {
                    started: now,
                    pump: *pump,
                    duration: Duration::from_secs_f64(secs),
                }
            }
            Planned::Cool { .. } => {
                self.setpoint = None;
                out.push(Output::HeaterOff);
                Running::Cooling { started: now }
            }
        };
    }

    /// The most the vessel may hold after the tare: every planned addition at the top of its
    /// tolerance, plus a margin for balance noise and drift.
    fn mass_ceiling(&self) -> f64 {
        let planned: f64 = self
            .plan
            .iter()
            .map(|p| match p {
                Planned::Dispense { spec, .. } => spec.target_g + spec.tolerance_g,
                Planned::ManualDispense { target_g, tolerance_g, .. } => target_g + tolerance_g,
                _ => 0.0,
            })
            .sum();
        planned * 1.05 + 1.0
    }

    fn finish_phase(&mut self, result: String, now: Duration, out: &mut Vec<Output>) {
        let id = self.plan.get(self.index).map(|p| p.id().to_owned()).unwrap_or_default();
        if matches!(self.plan.get(self.index), Some(Planned::Tare { .. })) {
            // From here the balance reads net of the vessel: nothing may exceed the plan.
            self.monitor.set_mass_limit(Some(self.mass_ceiling()));
        }
        out.push(Output::PhaseDone { index: self.index, id, result });
        self.index += 1;
        self.done = self.index;
        self.phase = Running::Waiting;
        self.begin_phase(now, out);
    }

    fn on_balance(&mut self, grams: f64, stable: bool, now: Duration, out: &mut Vec<Output>) {
        if let Running::Manual { zero, net } = &mut self.phase {
            // Only stable readings count: a hand on the pan is not a weight.
            if stable {
                let z = *zero.get_or_insert(grams);
                *net = Some(grams - z);
            } else {
                *net = None;
            }
            return;
        }
        let Running::Dispensing { d, pump } = &mut self.phase else { return };
        let pump = *pump;
        let action = if d.is_started() {
            d.reading(now, grams, stable)
        } else if stable {
            // The first stable reading of the phase is the zero of this dispense.
            Some(d.start(grams))
        } else {
            return;
        };
        self.dispense_action(action, pump, now, out);
    }

    fn dispense_action(
        &mut self,
        action: Option<dispense::Action>,
        pump: Pump,
        now: Duration,
        out: &mut Vec<Output>,
    ) {
        match action {
            Some(dispense::Action::Rate { ml_min }) => {
                let g_s = match self.plan.get(self.index) {
                    Some(Planned::Dispense { spec, .. }) => ml_min * spec.density_g_ml / 60.0,
                    _ => 0.0,
                };
                self.monitor.pump_commanded(pump_name(pump), now, g_s);
                out.push(Output::PumpRate { pump, ml_min });
            }
            Some(dispense::Action::Stop) => {
                self.monitor.pump_commanded(pump_name(pump), now, 0.0);
                out.push(Output::PumpStop { pump });
            }
            Some(dispense::Action::Done(outcome)) => {
                let text = match outcome {
                    dispense::Outcome::Within { dispensed_g, top_ups } => {
                        format!(
                            "{dispensed_g:.2} g dispensed, within tolerance ({top_ups} top-up(s))"
                        )
                    }
                    dispense::Outcome::Over { dispensed_g }
                    | dispense::Outcome::Under { dispensed_g } => {
                        let text = format!("{dispensed_g:.2} g dispensed, OUTSIDE tolerance");
                        let phase = self
                            .plan
                            .get(self.index)
                            .map(|p| p.id().to_owned())
                            .unwrap_or_default();
                        out.push(Output::Deviation { phase, text: text.clone() });
                        text
                    }
                };
                self.finish_phase(text, now, out);
            }
            None => {}
        }
    }

    fn on_time(&mut self, now: Duration, out: &mut Vec<Output>) {
        let Some(phase) = self.plan.get(self.index).cloned() else { return };
        match (&mut self.phase, &phase) {
            (
                Running::Heating { start_c, started, last_sp },
                Planned::Heat { target_c, ramp_c_per_min, .. },
            ) => {
                let from = *start_c.get_or_insert(self.temp.unwrap_or(*target_c));
                let minutes = now.saturating_sub(*started).as_secs_f64() / 60.0;
                let sp = (from + ramp_c_per_min * minutes).min(*target_c);
                // The comms setpoint is RAM-backed; still, only send changes that matter.
                if last_sp.is_none_or(|l| (sp - l).abs() >= 0.1 || (sp == *target_c && l != sp)) {
                    *last_sp = Some(sp);
                    self.setpoint = Some(sp);
                    out.push(Output::HeaterSetpoint { celsius: sp });
                }
                if self.temp.is_some_and(|t| (t - target_c).abs() <= AT_TEMP_C) {
                    self.finish_phase(format!("reached {target_c:.1} °C"), now, out);
                }
            }
            (
                Running::Holding { in_band, last, out_noted },
                Planned::Hold { min_c, max_c, duration, id },
            ) => {
                let dt = now.saturating_sub(*last);
                *last = now;
                let in_range = self.temp.is_some_and(|t| t >= *min_c && t <= *max_c);
                if in_range {
                    *in_band += dt;
                    *out_noted = false;
                } else if !*out_noted {
                    *out_noted = true;
                    out.push(Output::Deviation {
                        phase: id.clone(),
                        text: format!(
                            "temperature left the band {min_c:.1}–{max_c:.1} °C; hold time paused"
                        ),
                    });
                }
                if *in_band >= *duration {
                    self.finish_phase(format!("held {} s in band", duration.as_secs()), now, out);
                }
            }
            (Running::Timed { started }, Planned::Timed { duration, .. })
                if now.saturating_sub(*started) >= *duration =>
            {
                self.finish_phase(format!("ran {} s", duration.as_secs()), now, out);
            }
            (Running::Priming { started, pump, duration }, Planned::Prime { volume_ml, .. })
                if now.saturating_sub(*started) >= *duration =>
            {
                let pump = *pump;
                out.push(Output::PumpStop { pump });
                self.finish_phase(format!("primed {volume_ml:.1} mL"), now, out);
            }
            (Running::Cooling { started }, Planned::Cool { target_c, within, id }) => {
                if self.temp.is_some_and(|t| t <= *target_c) {
                    self.finish_phase(format!("cooled below {target_c:.1} °C"), now, out);
                } else if now.saturating_sub(*started) > *within {
                    out.push(Output::Deviation {
                        phase: id.clone(),
                        text: format!("not below {target_c:.1} °C within {} s", within.as_secs()),
                    });
                    self.finish_phase("cooled late".into(), now, out);
                }
            }
            _ => {}
        }
    }

    fn confirmed(&mut self, now: Duration, out: &mut Vec<Output>) {
        let phase = self.current_phase().filter(|_| self.state.drives_outputs()).cloned();
        let net = match &self.phase {
            Running::Manual { net, .. } => *net,
            _ => None,
        };
        match phase {
            Some(Planned::Clean { .. }) => self.finish_phase("cleaning confirmed".into(), now, out),
            Some(Planned::ManualDispense { material, target_g, tolerance_g, id }) => {
                match net {
                    None => out.push(Output::Refused {
                        text: "wait until the balance is stable, then confirm".into(),
                    }),
                    Some(g) if (g - target_g).abs() <= tolerance_g => self.finish_phase(
                        format!("{g:.4} g of {material} added by hand, within tolerance"),
                        now,
                        out,
                    ),
                    Some(g) => {
                        // Too little can be topped up; too much cannot be taken back.
                        if g > target_g + tolerance_g {
                            out.push(Output::Deviation {
                            phase: id,
                            text: format!("{g:.4} g of {material}: above {target_g:.4} ± {tolerance_g:.4} g"),
                        });
                        }
                        out.push(Output::Refused {
                        text: format!("{g:.4} g on the balance; this step needs {target_g:.4} ± {tolerance_g:.4} g"),
                    });
                    }
                }
            }
            _ => out
                .push(Output::Refused { text: "there is nothing to confirm at this step".into() }),
        }
    }

    fn scanned(
        &mut self,
        material: &str,
        lot: &str,
        expiry: Date,
        today: Date,
        now: Duration,
        out: &mut Vec<Output>,
    ) {
        let Some(Planned::Scan { material: expected, .. }) =
            self.current_phase().filter(|_| self.state.drives_outputs()).cloned()
        else {
            out.push(Output::Refused { text: "no material scan is due now".into() });
            return;
        };
        let problem = if material != expected {
            Some(format!("scanned {material}, but this step needs {expected}"))
        } else if lot.trim().is_empty() {
            Some("the label has no lot number".into())
        } else if expiry < today {
            Some(format!("lot {lot} expired on {expiry}"))
        } else {
            None
        };
        match problem {
            // A wrong scan changes nothing: the operator scans again.
            Some(text) => out.push(Output::Refused { text }),
            None => self.finish_phase(format!("{material} lot {lot}, expires {expiry}"), now, out),
        }
    }
}

fn pump_name(p: Pump) -> &'static str {
    match p {
        Pump::Syringe => "syringe pump",
        Pump::Peristaltic => "peristaltic pump",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::safety::Limits;

    /// Enough of a unit to close the loops: a vessel on a balance fed by a pump through tubing
    /// with a lag, and a heater with thermal mass and losses. The full plant is galen-hil's.
    #[derive(Debug)]
    struct Unit {
        mass: f64,
        tare: f64,
        flow_g_s: f64,
        commanded_g_s: f64,
        temp: f64,
        setpoint: Option<f64>,
        stalled: bool,
        /// The E-stop's contact, if the unit has one: pressed or not.
        estop: Option<bool>,
    }

    impl Unit {
        fn new() -> Self {
            Self {
                mass: 80.0,
                tare: 0.0,
                flow_g_s: 0.0,
                commanded_g_s: 0.0,
                temp: 21.0,
                setpoint: None,
                stalled: false,
                estop: None,
            }
        }
        fn step(&mut self, dt: f64) {
            let commanded = if self.stalled { 0.0 } else { self.commanded_g_s };
            self.flow_g_s += (commanded - self.flow_g_s) * (dt / 0.8).min(1.0);
            self.mass += self.flow_g_s * dt;
            // A controller holding its setpoint with a 60 s time constant, 2 °C/s at most.
            let goal = self.setpoint.unwrap_or(21.0);
            self.temp += ((goal - self.temp) * dt / 60.0).clamp(-2.0 * dt, 2.0 * dt);
        }
        fn apply(&mut self, out: &[Output]) {
            for o in out {
                match o {
                    Output::StopAllPumps | Output::PumpStop { .. } => self.commanded_g_s = 0.0,
                    Output::PumpRate { ml_min, .. } => self.commanded_g_s = ml_min * 1.06 / 60.0,
                    Output::HeaterOff => self.setpoint = None,
                    Output::HeaterSetpoint { celsius } => self.setpoint = Some(*celsius),
                    Output::TareBalance => self.tare = self.mass,
                    _ => {}
                }
            }
        }
        fn readings(&self) -> Vec<Event> {
            let g = ((self.mass - self.tare) * 100.0).round() / 100.0;
            let mut events = vec![
                Event::Balance { grams: Some(g), stable: self.flow_g_s.abs() < 0.002 },
                Event::Temperature { celsius: Some((self.temp * 10.0).round() / 10.0) },
            ];
            events.extend(self.estop.map(|pressed| Event::EmergencyStop(Ok(pressed))));
            events
        }
    }

    fn plan() -> Vec<Planned> {
        vec![
            Planned::Scan { id: "scan-vehicle".into(), material: "vehicle".into() },
            Planned::Tare { id: "tare".into() },
            Planned::Dispense {
                id: "dispense-vehicle".into(),
                material: "vehicle".into(),
                pump: Pump::Peristaltic,
                spec: dispense::Spec {
                    target_g: 40.0,
                    tolerance_g: 0.2,
                    density_g_ml: 1.06,
                    max_rate_ml_min: 60.0,
                },
            },
            Planned::Heat { id: "heat".into(), target_c: 37.0, ramp_c_per_min: 10.0 },
            Planned::Hold {
                id: "hold".into(),
                min_c: 36.0,
                max_c: 38.0,
                duration: Duration::from_secs(30),
            },
            Planned::Timed { id: "mix".into(), duration: Duration::from_secs(20) },
            Planned::Cool { id: "cool".into(), target_c: 30.0, within: Duration::from_secs(1200) },
            Planned::Clean { id: "clean".into(), instruction: "flush the line".into() },
        ]
    }

    /// Runs the unit and batch together for `secs`, 100 ms a step, answering operator steps
    /// the way a pharmacist would, and returns every output.
    fn run(batch: &mut Batch, unit: &mut Unit, t0: &mut Duration, secs: u64) -> Vec<Output> {
        let mut all = Vec::new();
        for _ in 0..secs * 10 {
            *t0 += Duration::from_millis(100);
            unit.step(0.1);
            let mut events = unit.readings();
            events.push(Event::Tick);
            match batch.current_phase() {
                Some(Planned::Scan { .. }) if batch.state() == State::Running => {
                    events.push(Event::Scanned {
                        material: "vehicle".into(),
                        lot: "L2026-11".into(),
                        expiry: Date(2027, 6, 30),
                        today: Date(2026, 11, 21),
                    })
                }
                Some(Planned::Tare { .. }) if batch.state() == State::Running => {
                    events.push(Event::Tared)
                }
                Some(Planned::Clean { .. }) if batch.state() == State::Running => {
                    events.push(Event::Confirmed)
                }
                _ => {}
            }
            for e in events {
                let out = batch.handle(e, *t0);
                unit.apply(&out);
                all.extend(out);
            }
            if batch.state().is_terminal() {
                break;
            }
        }
        all
    }

    fn phases_done(out: &[Output]) -> Vec<String> {
        out.iter()
            .filter_map(|o| match o {
                Output::PhaseDone { id, result, .. } => Some(format!("{id}: {result}")),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_batch_runs_every_phase_in_order_to_complete() {
        let mut batch = Batch::new(plan(), Monitor::new(Limits::default()));
        let mut unit = Unit::new();
        let mut t = Duration::ZERO;
        let mut out = batch.handle(Event::Operator(Command::Start), t);
        out.extend(run(&mut batch, &mut unit, &mut t, 3_000));
        assert_eq!(batch.state(), State::Complete, "{:#?}", &out[out.len().saturating_sub(10)..]);
        let done = phases_done(&out);
        let ids: Vec<&str> = done.iter().map(|d| d.split(':').next().unwrap()).collect();
        assert_eq!(
            ids,
            ["scan-vehicle", "tare", "dispense-vehicle", "heat", "hold", "mix", "cool", "clean"]
        );
        assert!(done[2].contains("within tolerance"), "{}", done[2]);
        assert!(
            !out.iter().any(|o| matches!(o, Output::Alarm { .. } | Output::Deviation { .. })),
            "{out:#?}"
        );
    }

    #[test]
    fn a_stalled_pump_stops_everything_first_then_holds_and_a_resume_continues_the_dispense() {
        let mut batch = Batch::new(plan(), Monitor::new(Limits::default()));
        let mut unit = Unit::new();
        let mut t = Duration::ZERO;
        batch.handle(Event::Operator(Command::Start), t);
        run(&mut batch, &mut unit, &mut t, 3);
        assert!(matches!(batch.current_phase(), Some(Planned::Dispense { .. })));
        unit.stalled = true;
        let out = run(&mut batch, &mut unit, &mut t, 20);
        let alarm = out.iter().position(|o| matches!(o, Output::Alarm { .. })).expect("an alarm");
        assert_eq!(&out[alarm - 2..alarm], &[Output::StopAllPumps, Output::HeaterOff]);
        assert!(
            matches!(&out[alarm], Output::Alarm { fault: Fault::PumpStall { .. }, .. }),
            "{:?}",
            out[alarm]
        );
        assert_eq!(out[alarm + 1], Output::State { from: State::Running, to: State::Holding });
        assert_eq!(batch.state(), State::Holding);
        // Only once the runtime confirms the outputs are safe is the batch Held.
        batch.handle(Event::OutputsSettled, t);
        assert_eq!(batch.state(), State::Held);
        unit.stalled = false;
        batch.handle(Event::Operator(Command::Restart), t);
        let out = batch.handle(Event::OutputsSettled, t);
        assert!(out.iter().any(|o| matches!(o, Output::PhaseResumed { index: 2, .. })), "{out:?}");
        unit.apply(&out);
        run(&mut batch, &mut unit, &mut t, 3_000);
        assert_eq!(batch.state(), State::Complete);
    }

    /// Runs until `until` holds, a second at a time, at most `secs` seconds.
    fn run_until(
        batch: &mut Batch,
        unit: &mut Unit,
        t: &mut Duration,
        secs: u64,
        until: impl Fn(&Batch, &Unit) -> bool,
    ) -> Vec<Output> {
        let mut all = Vec::new();
        for _ in 0..secs {
            if until(batch, unit) {
                return all;
            }
            all.extend(run(batch, unit, t, 1));
        }
        panic!("not reached in {secs} s: {:?}", &all[all.len().saturating_sub(5)..]);
    }

    /// What happens between a hold mid-dispense and the operator's resume.
    #[derive(Debug, Clone, Copy)]
    enum WhileHeld {
        Nothing,
        /// The vessel is lifted off and put back.
        Lifted,
        BalanceLinkLost,
        BalanceOverloaded,
        /// The resume comes while the pan still moves, then again once it is stable.
        ResumedWhileMoving,
    }

    /// How the dispense was interrupted.
    #[derive(Debug, Clone, Copy)]
    enum Cause {
        Operator,
        PumpStall,
    }

    /// A hold in the middle of a 40 g dispense, with 15 g in: a resume goes on against the
    /// phase's zero and dispenses only the remainder, unless the balance lost sight of the
    /// vessel meanwhile; then only stop and abort remain.
    #[test]
    fn a_resume_after_a_hold_mid_dispense_continues_against_the_zero_or_is_refused() {
        use Cause::*;
        use WhileHeld::*;
        // (cause, while held, resumed?)
        let cases = [
            (Operator, Nothing, true),
            (PumpStall, Nothing, true),
            (Operator, ResumedWhileMoving, true),
            (Operator, Lifted, false),
            (Operator, BalanceLinkLost, false),
            (PumpStall, BalanceOverloaded, false),
        ];
        for (cause, while_held, resumes) in cases {
            let case = format!("{cause:?} / {while_held:?}");
            let mut batch = Batch::new(plan(), Monitor::new(Limits::default()));
            let mut unit = Unit::new();
            let mut t = Duration::ZERO;
            batch.handle(Event::Operator(Command::Start), t);
            run_until(&mut batch, &mut unit, &mut t, 600, |b, u| {
                matches!(b.current_phase(), Some(Planned::Dispense { .. }))
                    && u.mass - u.tare >= 15.0
            });
            assert!(matches!(batch.current_phase(), Some(Planned::Dispense { .. })), "{case}");
            match cause {
                Operator => {
                    let out = batch.handle(Event::Operator(Command::Hold), t);
                    unit.apply(&out);
                }
                PumpStall => {
                    unit.stalled = true;
                    run_until(&mut batch, &mut unit, &mut t, 60, |b, _| {
                        b.state() == State::Holding
                    });
                    unit.stalled = false;
                }
            }
            batch.handle(Event::OutputsSettled, t);
            assert_eq!(batch.state(), State::Held, "{case}");
            // The liquid in flight arrives and the pan settles.
            let mut held = run(&mut batch, &mut unit, &mut t, 5);
            let resume =
                |batch: &mut Batch, t: Duration| batch.handle(Event::Operator(Command::Restart), t);
            match while_held {
                Nothing => {}
                Lifted => {
                    unit.mass -= 60.0;
                    held.extend(run(&mut batch, &mut unit, &mut t, 3));
                    unit.mass += 60.0;
                    held.extend(run(&mut batch, &mut unit, &mut t, 3));
                }
                BalanceLinkLost => held.extend(
                    batch.handle(Event::Fault(Fault::LinkDown { device: "balance".into() }), t),
                ),
                BalanceOverloaded => {
                    held.extend(batch.handle(Event::Balance { grams: None, stable: false }, t));
                    held.extend(run(&mut batch, &mut unit, &mut t, 3));
                }
                ResumedWhileMoving => {
                    // A hand on the vessel: the pan reads low and moves.
                    let g = (unit.mass - unit.tare).round();
                    batch.handle(Event::Balance { grams: Some(g - 3.0), stable: false }, t);
                    let out = resume(&mut batch, t);
                    assert!(
                        matches!(out.as_slice(), [Output::Refused { text }] if text.contains("wait until it is stable")),
                        "{case}: {out:?}"
                    );
                    assert_eq!(batch.state(), State::Held, "{case}");
                    held.extend(run(&mut batch, &mut unit, &mut t, 1));
                }
            }
            let in_before = unit.mass - unit.tare;
            let out = resume(&mut batch, t);
            if !resumes {
                assert!(
                    matches!(out.as_slice(), [Output::Refused { text }] if text.contains("cannot continue against its zero") && text.ends_with("stop or abort the batch")),
                    "{case}: {out:?}"
                );
                assert_eq!(batch.state(), State::Held, "{case}: refused, still held");
                let noted = held.iter().filter(|o| matches!(o, Output::Deviation { text, .. } if text.starts_with("this phase can no longer resume"))).count();
                assert_eq!(
                    noted, 1,
                    "{case}: the loss is recorded once, when it happens: {held:?}"
                );
                assert!(
                    batch.instruction().is_some_and(|i| i.contains("stop or abort")),
                    "{case}: {:?}",
                    batch.instruction()
                );
                batch.handle(Event::Operator(Command::Abort), t);
                batch.handle(Event::OutputsSettled, t);
                assert_eq!(batch.state(), State::Aborted, "{case}");
                continue;
            }
            assert_eq!(out, vec![Output::State { from: State::Held, to: State::Restarting }]);
            let out = batch.handle(Event::OutputsSettled, t);
            let resumed = out.iter().find_map(|o| match o {
                Output::PhaseResumed { id, text, .. } => Some(format!("{id}: {text}")),
                _ => None,
            });
            let resumed = resumed.unwrap_or_else(|| panic!("{case}: {out:?}"));
            assert!(resumed.starts_with("dispense-vehicle: resumed against the phase's zero"));
            assert!(
                !out.iter().any(|o| matches!(o, Output::PhaseStarted { .. })),
                "{case}: the phase goes on, it does not start again: {out:?}"
            );
            unit.apply(&out);
            let rest = run(&mut batch, &mut unit, &mut t, 3_000);
            assert_eq!(batch.state(), State::Complete, "{case}");
            let done = phases_done(&rest);
            assert!(
                done[0].starts_with("dispense-vehicle: ") && done[0].contains("within tolerance"),
                "{case}: {done:?}"
            );
            let delivered = unit.mass - unit.tare;
            assert!(
                (delivered - 40.0).abs() <= 0.2,
                "{case}: {delivered:.2} g in the vessel for 40 g ({in_before:.2} g before the resume)"
            );
        }
    }

    /// The E-stop pressed mid-dispense: outputs safe first, the batch held, the alarm raised;
    /// release alone changes nothing but the record; a resume waits for the release, and for
    /// the monitoring to be back when it was lost.
    #[test]
    fn the_emergency_stop_holds_the_batch_and_only_a_person_resumes_after_its_release() {
        let mut batch = Batch::new(plan(), Monitor::new(Limits::default()));
        let mut unit = Unit { estop: Some(false), ..Unit::new() };
        let mut t = Duration::ZERO;
        batch.handle(Event::Operator(Command::Start), t);
        run_until(&mut batch, &mut unit, &mut t, 600, |b, u| {
            matches!(b.current_phase(), Some(Planned::Dispense { .. })) && u.mass - u.tare >= 10.0
        });
        unit.estop = Some(true);
        let out = batch.handle(Event::EmergencyStop(Ok(true)), t);
        assert_eq!(
            out,
            vec![
                Output::StopAllPumps,
                Output::HeaterOff,
                Output::Alarm {
                    fault: Fault::EmergencyStop,
                    text: "emergency stop pressed".into()
                },
                Output::State { from: State::Running, to: State::Holding },
            ]
        );
        unit.apply(&out);
        batch.handle(Event::OutputsSettled, t);
        assert_eq!(batch.state(), State::Held);
        assert!(batch.handle(Event::EmergencyStop(Ok(true)), t).is_empty(), "reported once");
        let refused = batch.handle(Event::Operator(Command::Restart), t);
        assert_eq!(
            refused,
            vec![Output::Refused {
                text: "the emergency stop is pressed: release it first".into()
            }]
        );
        assert!(batch.instruction().is_some_and(|i| i.contains("release it first")));
        run(&mut batch, &mut unit, &mut t, 3);
        unit.estop = Some(false);
        let released = batch.handle(Event::EmergencyStop(Ok(false)), t);
        assert!(
            matches!(released.as_slice(), [Output::Deviation { text, .. }] if text.starts_with("emergency stop released")),
            "{released:?}"
        );
        run(&mut batch, &mut unit, &mut t, 3);
        assert_eq!(batch.state(), State::Held, "release alone resumes nothing");

        // Its module goes quiet: a fault of its own, and no resume until it answers again.
        unit.estop = None;
        let lost = batch.handle(Event::Fault(Fault::LinkDown { device: "estop".into() }), t);
        assert!(lost.iter().any(|o| matches!(o, Output::Alarm { .. })), "{lost:?}");
        let refused = batch.handle(Event::Operator(Command::Restart), t);
        assert!(
            matches!(refused.as_slice(), [Output::Refused { text }] if text.contains("not monitored")),
            "{refused:?}"
        );
        let garbage = batch.handle(Event::EmergencyStop(Err("exception 0x04".into())), t);
        assert!(
            garbage.iter().any(|o| matches!(
                o,
                Output::Alarm { fault: Fault::EmergencyStopUnmonitored { .. }, .. }
            )),
            "{garbage:?}"
        );
        unit.estop = Some(false);
        run(&mut batch, &mut unit, &mut t, 1);
        assert_eq!(
            batch.handle(Event::Operator(Command::Restart), t),
            vec![Output::State { from: State::Held, to: State::Restarting }]
        );
        let out = batch.handle(Event::OutputsSettled, t);
        assert!(out.iter().any(|o| matches!(o, Output::PhaseResumed { .. })), "{out:?}");
        unit.apply(&out);
        run(&mut batch, &mut unit, &mut t, 3_000);
        assert_eq!(batch.state(), State::Complete);
        assert!((unit.mass - unit.tare - 40.0).abs() <= 0.2, "{}", unit.mass - unit.tare);
    }

    #[test]
    fn a_hand_weighed_addition_interrupted_by_a_hold_keeps_its_zero() {
        let plan = vec![Planned::ManualDispense {
            id: "dispense-api".into(),
            material: "azathioprine".into(),
            target_g: 1.0,
            tolerance_g: 0.01,
        }];
        let mut batch = Batch::new(plan, Monitor::new(Limits::default()));
        let s = Duration::from_secs;
        let weigh =
            |b: &mut Batch, t, g, stable| b.handle(Event::Balance { grams: Some(g), stable }, s(t));
        batch.handle(Event::Operator(Command::Start), s(0));
        weigh(&mut batch, 1, 120.0, true);
        weigh(&mut batch, 2, 120.6, true);
        batch.handle(Event::Operator(Command::Hold), s(2));
        batch.handle(Event::OutputsSettled, s(2));
        weigh(&mut batch, 3, 120.6, true);
        batch.handle(Event::Operator(Command::Restart), s(3));
        let out = batch.handle(Event::OutputsSettled, s(3));
        assert!(
            out.iter().any(|o| matches!(o, Output::PhaseResumed { text, .. } if text.contains("0.6000 g already"))),
            "{out:?}"
        );
        // The hand adds the remaining 0.4 g; the zero is still the empty vessel's.
        weigh(&mut batch, 4, 121.0, true);
        let ok = batch.handle(Event::Confirmed, s(4));
        assert!(
            ok.iter().any(
                |o| matches!(o, Output::PhaseDone { result, .. } if result.starts_with("1.0000 g"))
            ),
            "{ok:?}"
        );
    }

    #[test]
    fn a_hold_before_the_dispense_took_its_zero_starts_the_phase_again() {
        let mut batch = Batch::new(plan(), Monitor::new(Limits::default()));
        let t = Duration::ZERO;
        batch.handle(Event::Operator(Command::Start), t);
        batch.handle(
            Event::Scanned {
                material: "vehicle".into(),
                lot: "L1".into(),
                expiry: Date(2027, 1, 1),
                today: Date(2026, 11, 21),
            },
            t,
        );
        batch.handle(Event::Tared, t);
        assert_eq!(batch.current_phase().map(Planned::id), Some("dispense-vehicle"));
        // No reading has come since the phase began: it has no zero, nothing went in.
        batch.handle(Event::Operator(Command::Hold), t);
        batch.handle(Event::OutputsSettled, t);
        batch.handle(Event::Operator(Command::Restart), t);
        let out = batch.handle(Event::OutputsSettled, t);
        assert!(out.contains(&Output::PhaseStarted { index: 2, id: "dispense-vehicle".into() }));
    }

    #[test]
    fn a_batch_rebuilt_after_a_restart_is_held_and_resumes_at_the_interrupted_phase() {
        let mut batch = Batch::held_at(plan(), Monitor::new(Limits::default()), 3);
        assert_eq!(batch.state(), State::Held);
        assert_eq!(batch.current_phase().map(Planned::id), Some("heat"));
        let t = Duration::from_secs(1);
        assert_eq!(
            batch.handle(Event::Operator(Command::Restart), t),
            vec![Output::State { from: State::Held, to: State::Restarting }]
        );
        let out = batch.handle(Event::OutputsSettled, t);
        assert_eq!(
            &out[..2],
            &[
                Output::State { from: State::Restarting, to: State::Running },
                Output::PhaseStarted { index: 3, id: "heat".into() }
            ]
        );
        // The tare before the restart still bounds the vessel: (40 + 0.2) × 1.05 + 1 g.
        let over = batch.handle(Event::Balance { grams: Some(43.3), stable: true }, t);
        assert!(
            matches!(&over[2], Output::Alarm { fault: Fault::OverVolume { .. }, .. }),
            "{over:?}"
        );
    }

    #[test]
    fn a_batch_rebuilt_after_a_restart_aborts_without_running_anything() {
        let mut batch = Batch::held_at(plan(), Monitor::new(Limits::default()), 2);
        let t = Duration::ZERO;
        let out = batch.handle(Event::Operator(Command::Abort), t);
        assert_eq!(out, vec![Output::State { from: State::Held, to: State::Aborting }]);
        let out = batch.handle(Event::OutputsSettled, t);
        assert_eq!(out, vec![Output::State { from: State::Aborting, to: State::Aborted }]);
    }

    #[test]
    fn operator_events_for_another_step_are_refused_and_change_nothing() {
        let mut batch = Batch::new(plan(), Monitor::new(Limits::default()));
        let t = Duration::ZERO;
        let refused = |out: Vec<Output>| matches!(out.as_slice(), [Output::Refused { .. }]);
        assert!(refused(batch.handle(Event::Confirmed, t)), "before start");
        batch.handle(Event::Operator(Command::Start), t);
        assert!(refused(batch.handle(Event::Tared, t)), "tare before the scan");
        assert!(refused(batch.handle(Event::Confirmed, t)));
        let scan = |material: &str, lot: &str, expiry| Event::Scanned {
            material: material.into(),
            lot: lot.into(),
            expiry,
            today: Date(2026, 11, 21),
        };
        let wrong = batch.handle(scan("azathioprine", "L1", Date(2027, 1, 1)), t);
        assert_eq!(
            wrong,
            vec![Output::Refused {
                text: "scanned azathioprine, but this step needs vehicle".into()
            }]
        );
        let expired = batch.handle(scan("vehicle", "L1", Date(2026, 11, 20)), t);
        assert_eq!(expired, vec![Output::Refused { text: "lot L1 expired on 2026-11-20".into() }]);
        assert!(refused(batch.handle(scan("vehicle", " ", Date(2027, 1, 1)), t)));
        assert_eq!(batch.current_phase().map(Planned::id), Some("scan-vehicle"));
        let ok = batch.handle(scan("vehicle", "L1", Date(2026, 11, 21)), t);
        assert!(ok.contains(&Output::PhaseStarted { index: 1, id: "tare".into() }), "{ok:?}");
        assert!(
            refused(batch.handle(Event::Operator(Command::Restart), t)),
            "restart while running"
        );
    }

    #[test]
    fn hold_and_abort_by_the_operator_make_outputs_safe_first() {
        let mut batch = Batch::new(plan(), Monitor::new(Limits::default()));
        let t = Duration::ZERO;
        batch.handle(Event::Operator(Command::Start), t);
        let out = batch.handle(Event::Operator(Command::Hold), t);
        assert_eq!(&out[..2], &[Output::StopAllPumps, Output::HeaterOff]);
        batch.handle(Event::OutputsSettled, t);
        assert!(batch.instruction().is_some_and(|i| i.starts_with("Held: ")));
        batch.handle(Event::Operator(Command::Abort), t);
        let out = batch.handle(Event::OutputsSettled, t);
        assert_eq!(out[0], Output::State { from: State::Aborting, to: State::Aborted });
        assert!(batch.state().is_terminal());
    }

    #[test]
    fn a_hand_weighed_addition_needs_a_stable_weight_within_tolerance() {
        let plan = vec![Planned::ManualDispense {
            id: "dispense-api".into(),
            material: "azathioprine".into(),
            target_g: 0.98,
            tolerance_g: 0.005,
        }];
        let mut batch = Batch::new(plan, Monitor::new(Limits::default()));
        let s = Duration::from_secs;
        let weigh =
            |b: &mut Batch, t, g, stable| b.handle(Event::Balance { grams: Some(g), stable }, s(t));
        assert_eq!(batch.instruction(), None, "nothing to do before the start");
        batch.handle(Event::Operator(Command::Start), s(0));
        assert_eq!(batch.awaiting(), Some("confirm"));
        assert_eq!(
            batch.instruction().as_deref(),
            Some(
                "Add 0.980 g of azathioprine onto the balance (± 0.005 g), wait until it is \
                 stable, then confirm"
            )
        );
        weigh(&mut batch, 1, 120.0, true);
        weigh(&mut batch, 2, 120.5, false);
        let moving = batch.handle(Event::Confirmed, s(2));
        assert_eq!(
            moving,
            vec![Output::Refused { text: "wait until the balance is stable, then confirm".into() }]
        );
        weigh(&mut batch, 3, 120.9, true);
        let short = batch.handle(Event::Confirmed, s(3));
        assert!(
            matches!(short.as_slice(), [Output::Refused { text }] if text.starts_with("0.9000 g on the balance")),
            "{short:?}"
        );
        weigh(&mut batch, 4, 120.982, true);
        let ok = batch.handle(Event::Confirmed, s(4));
        assert!(ok.iter().any(|o| matches!(o, Output::PhaseDone { result, .. } if result.starts_with("0.9820 g of azathioprine"))), "{ok:?}");
        assert_eq!(batch.state(), State::Complete);
        assert_eq!(batch.instruction(), None, "nothing left to do");
        assert_eq!(batch.awaiting(), None);
    }

    #[test]
    fn more_in_the_vessel_than_the_plan_allows_is_a_fault() {
        let plan = vec![
            Planned::Tare { id: "tare".into() },
            Planned::ManualDispense {
                id: "add".into(),
                material: "api".into(),
                target_g: 10.0,
                tolerance_g: 0.1,
            },
        ];
        let mut batch = Batch::new(plan, Monitor::new(Limits::default()));
        let s = Duration::from_secs;
        batch.handle(Event::Operator(Command::Start), s(0));
        batch.handle(Event::Tared, s(0));
        // Ceiling: (10 + 0.1) × 1.05 + 1 = 11.605 g.
        assert!(batch.handle(Event::Balance { grams: Some(11.5), stable: true }, s(1)).is_empty());
        let out = batch.handle(Event::Balance { grams: Some(11.7), stable: true }, s(2));
        assert_eq!(&out[..2], &[Output::StopAllPumps, Output::HeaterOff]);
        assert!(
            matches!(&out[2], Output::Alarm { fault: Fault::OverVolume { .. }, .. }),
            "{out:?}"
        );
    }

    #[test]
    fn leaving_the_hold_band_is_a_deviation_and_pauses_the_clock() {
        let plan = vec![Planned::Hold {
            id: "hold".into(),
            min_c: 36.0,
            max_c: 38.0,
            duration: Duration::from_secs(10),
        }];
        let mut batch = Batch::new(plan, Monitor::new(Limits::default()));
        let s = Duration::from_secs;
        batch.handle(Event::Operator(Command::Start), s(0));
        batch.handle(Event::Temperature { celsius: Some(37.0) }, s(0));
        batch.handle(Event::Temperature { celsius: Some(37.0) }, s(6));
        let out = batch.handle(Event::Temperature { celsius: Some(35.0) }, s(7));
        assert!(matches!(out.as_slice(), [Output::Deviation { .. }]), "{out:?}");
        batch.handle(Event::Temperature { celsius: Some(35.2) }, s(20));
        assert_eq!(batch.state(), State::Running, "time out of band does not count");
        batch.handle(Event::Temperature { celsius: Some(37.0) }, s(21));
        let out = batch.handle(Event::Temperature { celsius: Some(37.0) }, s(25));
        assert!(out.iter().any(|o| matches!(o, Output::PhaseDone { .. })), "{out:?}");
        assert_eq!(batch.state(), State::Complete);
    }
}
