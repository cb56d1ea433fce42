//! Pumps: the [`Pump`] trait, its two protocols (New Era NE-1000 syringe pump, Watson-Marlow
//! 520 peristaltic pump), and the [`PumpPort`] through which a plant drives a pump emulator.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::error::DeviceResult;
use crate::units::{FlowRate, Volume};

pub mod new_era;
pub mod wm520;

/// Which way the pump moves liquid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Towards the vessel: New Era "infuse"; Watson-Marlow clockwise unless configured.
    Forward,
    /// Away from the vessel: New Era "withdraw".
    Reverse,
}

/// What the pump's motor is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Motion {
    /// Not moving.
    Stopped,
    /// Pumping.
    Running(Direction),
    /// Paused mid-volume (New Era `P`); `run` resumes, `stop` ends the volume.
    Paused,
    /// Another protocol-specific phase (New Era `T` pause phase, `U` trigger wait, `X` purge).
    Other(char),
}

/// A pump alarm (New Era `A?R/S/T/E/O`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PumpAlarm {
    /// `R`: the pump was reset (power interrupted).
    Reset,
    /// `S`: the motor stalled.
    Stalled,
    /// `T`: the safe-mode communications watchdog ran out; the pump stopped.
    CommsTimeout,
    /// `E`: a pumping program error.
    ProgramError,
    /// `O`: a pumping program parameter out of range.
    OutOfRange,
}

impl PumpAlarm {
    /// The New Era code letter.
    pub fn code(self) -> char {
        match self {
            Self::Reset => 'R',
            Self::Stalled => 'S',
            Self::CommsTimeout => 'T',
            Self::ProgramError => 'E',
            Self::OutOfRange => 'O',
        }
    }

    /// From the New Era code letter.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            b'R' => Self::Reset,
            b'S' => Self::Stalled,
            b'T' => Self::CommsTimeout,
            b'E' => Self::ProgramError,
            b'O' => Self::OutOfRange,
            _ => return None,
        })
    }
}

impl fmt::Display for PumpAlarm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Reset => "reset (power interrupted)",
            Self::Stalled => "motor stalled",
            Self::CommsTimeout => "communications watchdog timeout",
            Self::ProgramError => "program error",
            Self::OutOfRange => "program parameter out of range",
        })
    }
}

/// A pump's state as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PumpStatus {
    /// Motor state.
    pub motion: Motion,
    /// The alarm reported by this status request, if any (already acknowledged).
    pub alarm: Option<PumpAlarm>,
}

/// Volume moved since the counters were last cleared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dispensed {
    /// Moved forward (infused).
    pub forward: Volume,
    /// Moved in reverse (withdrawn).
    pub reverse: Volume,
}

/// A pump.
pub trait Pump: Send {
    /// Sets the flow rate.
    fn set_rate(&mut self, rate: FlowRate) -> impl Future<Output = DeviceResult<()>> + Send;
    /// Sets the direction.
    fn set_direction(
        &mut self,
        direction: Direction,
    ) -> impl Future<Output = DeviceResult<()>> + Send;
    /// Pumps `volume` at the set rate and direction, then stops by itself.
    fn dispense(&mut self, volume: Volume) -> impl Future<Output = DeviceResult<()>> + Send;
    /// Runs at the set rate until stopped.
    fn run(&mut self) -> impl Future<Output = DeviceResult<()>> + Send;
    /// Stops (never leaves the pump paused).
    fn stop(&mut self) -> impl Future<Output = DeviceResult<()>> + Send;
    /// Motor state and any alarm.
    fn status(&mut self) -> impl Future<Output = DeviceResult<PumpStatus>> + Send;
    /// Volume moved since [`Pump::clear_dispensed`].
    fn dispensed(&mut self) -> impl Future<Output = DeviceResult<Dispensed>> + Send;
    /// Resets the dispensed counters.
    fn clear_dispensed(&mut self) -> impl Future<Output = DeviceResult<()>> + Send;
    /// Alarms seen (and acknowledged) since the last call, oldest first.
    fn take_alarms(&mut self) -> Vec<PumpAlarm>;
}

/// A pump's configured limits, enforced by its driver before anything is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PumpLimits {
    /// Highest rate, mL/min (`limits.max_rate_ml_min`).
    pub max_rate_ml_min: f64,
    /// Largest volume in one dispense, mL (`limits.max_volume_ml`).
    pub max_volume_ml: f64,
}

impl PumpLimits {
    /// No limit: for tests and the CLI's `--port` mode.
    pub const NONE: Self = Self { max_rate_ml_min: f64::INFINITY, max_volume_ml: f64::INFINITY };

    /// The refusal for `rate`, if it is over the limit.
    pub fn check_rate(&self, device: &str, rate: f64) -> Option<crate::Refusal> {
        (rate > self.max_rate_ml_min).then(|| {
            limit_refusal(
                device,
                format!("rate {rate} mL/min"),
                "max_rate_ml_min",
                rate,
                self.max_rate_ml_min,
            )
        })
    }

    /// The refusal for `volume`, if it is over the limit.
    pub fn check_volume(&self, device: &str, volume: f64) -> Option<crate::Refusal> {
        (volume > self.max_volume_ml).then(|| {
            limit_refusal(
                device,
                format!("dispense {volume} mL"),
                "max_volume_ml",
                volume,
                self.max_volume_ml,
            )
        })
    }
}

impl Default for PumpLimits {
    fn default() -> Self {
        Self::NONE
    }
}

/// A refusal decided without a round trip because a configured limit forbids the request.
/// Refuses `asked` if what the device would really be set to (`nearest`) is more than 1 %
/// away from it.
pub(crate) fn representable(
    device: &str,
    command: String,
    unit: &str,
    asked: f64,
    nearest: f64,
) -> Option<crate::Refusal> {
    let off = if asked == 0.0 { nearest.abs() } else { ((nearest - asked) / asked).abs() };
    (off > 0.01).then(|| crate::Refusal {
        device: device.to_owned(),
        command,
        reply: String::new(),
        reason: crate::RefusalReason::NotRepresentable {
            asked: format!("{asked} {unit}"),
            nearest: format!("{nearest} {unit}"),
        },
    })
}

pub(crate) fn limit_refusal(
    device: &str,
    command: String,
    limit: &'static str,
    requested: f64,
    allowed: f64,
) -> crate::Refusal {
    crate::Refusal {
        device: device.to_owned(),
        command,
        reply: String::new(),
        reason: crate::RefusalReason::LimitExceeded { limit, requested, allowed },
    }
}

/// What a pump emulator has been told to do: the plant reads this.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PumpCommand {
    /// Whether the motor is commanded to turn.
    pub running: bool,
    /// Commanded direction.
    pub direction: Direction,
    /// Commanded rate in mL/min.
    pub rate_ml_min: f64,
    /// Volume still to go in this run, if the run has a target.
    pub remaining_ml: Option<f64>,
}

#[derive(Debug)]
struct PumpShared {
    running: bool,
    paused: bool,
    direction: Direction,
    rate_ml_min: f64,
    target_ml: Option<f64>,
    run_ml: f64,
    forward_ml: f64,
    reverse_ml: f64,
    alarm: Option<PumpAlarm>,
}

/// The plant port of a pump emulator, shared between the emulator (which writes commands) and
/// the plant (which reads them and reports liquid actually moved).
///
/// Without a plant, [`PumpPort::spawn_ideal_motion`] moves liquid exactly as commanded.
#[derive(Debug, Clone)]
pub struct PumpPort(Arc<Mutex<PumpShared>>);

impl Default for PumpPort {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(PumpShared {
            running: false,
            paused: false,
            direction: Direction::Forward,
            rate_ml_min: 0.0,
            target_ml: None,
            run_ml: 0.0,
            forward_ml: 0.0,
            reverse_ml: 0.0,
            alarm: None,
        })))
    }
}

impl PumpPort {
    /// A stopped pump with nothing dispensed.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, PumpShared> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the pump is commanded to do now.
    pub fn commanded(&self) -> PumpCommand {
        let s = self.lock();
        PumpCommand {
            running: s.running,
            direction: s.direction,
            rate_ml_min: s.rate_ml_min,
            remaining_ml: s.target_ml.map(|t| (t - s.run_ml).max(0.0)),
        }
    }

    /// The plant reports `ml` moved since its last report; the pump stops when a run's target
    /// volume is reached.
    pub fn add_dispensed(&self, ml: f64) {
        let mut s = self.lock();
        if !s.running || ml <= 0.0 {
            return;
        }
        let ml = match s.target_ml {
            Some(target) => ml.min(target - s.run_ml).max(0.0),
            None => ml,
        };
        s.run_ml += ml;
        match s.direction {
            Direction::Forward => s.forward_ml += ml,
            Direction::Reverse => s.reverse_ml += ml,
        }
        if s.target_ml.is_some_and(|t| s.run_ml >= t - 1e-9) {
            s.running = false;
            s.target_ml = None;
        }
    }

    /// Raises an alarm (a stall, say): the pump stops and reports it on the next request.
    pub fn raise_alarm(&self, alarm: PumpAlarm) {
        let mut s = self.lock();
        s.running = false;
        s.paused = false;
        s.alarm = Some(alarm);
    }

    /// Moves liquid exactly as commanded every `period`, for use without a plant.
    pub fn spawn_ideal_motion(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let port = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            let mut last = tokio::time::Instant::now();
            loop {
                ticker.tick().await;
                let now = tokio::time::Instant::now();
                let command = port.commanded();
                port.add_dispensed(command.rate_ml_min * (now - last).as_secs_f64() / 60.0);
                last = now;
            }
        })
    }

    // The emulator's side.

    pub(crate) fn take_alarm(&self) -> Option<PumpAlarm> {
        self.lock().alarm.take()
    }

    pub(crate) fn motion(&self) -> Motion {
        let s = self.lock();
        if s.running {
            Motion::Running(s.direction)
        } else if s.paused {
            Motion::Paused
        } else {
            Motion::Stopped
        }
    }

    pub(crate) fn set_rate(&self, ml_min: f64) {
        self.lock().rate_ml_min = ml_min;
    }

    pub(crate) fn set_direction(&self, direction: Direction) {
        self.lock().direction = direction;
    }

    pub(crate) fn direction(&self) -> Direction {
        self.lock().direction
    }

    pub(crate) fn rate(&self) -> f64 {
        self.lock().rate_ml_min
    }

    /// Starts (or resumes) a run towards `target_ml` (None: until stopped).
    pub(crate) fn start(&self, target_ml: Option<f64>) {
        let mut s = self.lock();
        if !s.paused {
            s.run_ml = 0.0;
            s.target_ml = target_ml;
        }
        s.running = true;
        s.paused = false;
    }

    /// New Era semantics: running → paused, paused → stopped.
    pub(crate) fn stop(&self, pause_first: bool) {
        let mut s = self.lock();
        if s.running && pause_first {
            s.running = false;
            s.paused = true;
        } else {
            s.running = false;
            s.paused = false;
            s.target_ml = None;
        }
    }

    pub(crate) fn dispensed(&self) -> (f64, f64) {
        let s = self.lock();
        (s.forward_ml, s.reverse_ml)
    }

    pub(crate) fn clear(&self, direction: Option<Direction>) {
        let mut s = self.lock();
        if direction != Some(Direction::Reverse) {
            s.forward_ml = 0.0;
        }
        if direction != Some(Direction::Forward) {
            s.reverse_ml = 0.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_with_a_target_stops_at_the_target() {
        let port = PumpPort::new();
        port.set_rate(6.0);
        port.start(Some(1.0));
        port.add_dispensed(0.6);
        assert_eq!(port.commanded().remaining_ml.map(|r| (r * 10.0).round()), Some(4.0));
        port.add_dispensed(0.6);
        assert_eq!(port.motion(), Motion::Stopped);
        assert_eq!(port.dispensed(), (1.0, 0.0));
    }

    #[test]
    fn an_alarm_stops_the_pump() {
        let port = PumpPort::new();
        port.start(None);
        port.raise_alarm(PumpAlarm::Stalled);
        assert!(!port.commanded().running);
        assert_eq!(port.take_alarm(), Some(PumpAlarm::Stalled));
        assert_eq!(port.take_alarm(), None);
    }
}
