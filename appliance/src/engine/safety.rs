//! The safety monitor: watches readings and commands and names a fault; it never drives an
//! output itself. The runtime answers any fault the same way, before anything else: pumps stop,
//! heater off, then the batch is held, an alarm raised and an entry recorded.
//!
//! The heater check follows Klipper's `verify_heater` (read there; written anew here): while
//! below `target - hysteresis` an error accumulates by how far below it is, and a new target
//! arms an approach check that expects `heating_gain` within `check_gain_time`, each success
//! resetting the error. We add what a compounding unit also needs: heating while the target is
//! off (a heater stuck on), staying above `target + hysteresis` (the same cumulative error, the
//! other way), and an absolute maximum. A reading older than `stale_after` is a fault, as in
//! Klipper's `QUELL_STALE_TIME`; it is reported once per silence, not on every tick.
//!
//! The emergency stop's contact is watched too: pressed is a fault, and so is not knowing (a
//! module that answers with an exception, and, through the staleness check and the actor's
//! `LinkDown`, one that does not answer at all). Each is reported once, when it begins; the
//! hardwired circuit has already cut the actuators' power, the monitor makes the supervisor
//! know it.
//!
//! Pure: time comes in as the duration since the monitor started.

use std::time::Duration;

use serde::Serialize;

/// Thresholds, per unit (from the unit configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub hysteresis_c: f64,
    /// Cumulative °C·sample error that trips; Klipper's default is 120.
    pub max_error: f64,
    pub heating_gain_c: f64,
    pub check_gain_time: Duration,
    /// Absolute ceiling for the vessel temperature.
    pub max_temp_c: f64,
    /// How far the temperature may rise with the heater's target off.
    pub off_rise_c: f64,
    pub stale_after: Duration,
    /// How long a pump may run before it must have moved mass.
    pub stall_window: Duration,
    /// Fraction of the expected mass that must arrive within the window.
    pub stall_fraction: f64,
    /// How long the balance may stay unstable while nothing is dispensing.
    pub unstable_for: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            hysteresis_c: 3.0,
            max_error: 120.0,
            heating_gain_c: 2.0,
            check_gain_time: Duration::from_secs(60),
            max_temp_c: 80.0,
            off_rise_c: 5.0,
            stale_after: Duration::from_secs(3),
            stall_window: Duration::from_secs(8),
            stall_fraction: 0.25,
            unstable_for: Duration::from_secs(60),
        }
    }
}

impl Limits {
    /// The limits for a simulated unit whose plant runs `speed` times faster than the wall
    /// clock (engine time is plant time). The plant's physics speeds up, so heating and stall
    /// windows stay in plant time; a silent serial link does not, so staleness keeps its
    /// wall-clock meaning.
    pub fn at_speed(self, speed: f64) -> Self {
        Self { stale_after: self.stale_after.mul_f64(speed.max(1.0)), ..self }
    }
}

/// What went wrong. Each is answered by the safe state.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    HeaterNotHeating {
        temp_c: f64,
        target_c: f64,
    },
    HeaterOverTarget {
        temp_c: f64,
        target_c: f64,
    },
    HeaterHeatingWhileOff {
        temp_c: f64,
        off_at_c: f64,
    },
    OverTemperature {
        temp_c: f64,
        max_c: f64,
    },
    SensorBreak,
    Stale {
        device: String,
        age_ms: u64,
    },
    BalanceOverload,
    BalanceUnstable {
        for_ms: u64,
    },
    PumpStall {
        pump: String,
        expected_g: f64,
        gained_g: f64,
    },
    OverVolume {
        mass_g: f64,
        limit_g: f64,
    },
    EmergencyStop,
    /// The E-stop's input module answers, but not with the contact's state.
    EmergencyStopUnmonitored {
        why: String,
    },
    LinkDown {
        device: String,
    },
    /// A device refused a command or did not answer it.
    DeviceRefused {
        device: String,
        why: String,
    },
}

impl Fault {
    /// One line for the alarm list and the record.
    pub fn describe(&self) -> String {
        match self {
            Self::HeaterNotHeating { temp_c, target_c } => {
                format!("heater not reaching its target: {temp_c:.1} °C for {target_c:.1} °C")
            }
            Self::HeaterOverTarget { temp_c, target_c } => {
                format!("temperature stays above target: {temp_c:.1} °C for {target_c:.1} °C")
            }
            Self::HeaterHeatingWhileOff { temp_c, off_at_c } => {
                format!(
                    "heater heating while off: {temp_c:.1} °C, was {off_at_c:.1} °C when switched off"
                )
            }
            Self::OverTemperature { temp_c, max_c } => {
                format!("over temperature: {temp_c:.1} °C, limit {max_c:.1} °C")
            }
            Self::SensorBreak => "heater temperature sensor broken".into(),
            Self::Stale { device, age_ms } => format!("{device}: no reading for {age_ms} ms"),
            Self::BalanceOverload => "balance overloaded".into(),
            Self::BalanceUnstable { for_ms } => format!("balance unstable for {} s", for_ms / 1000),
            Self::PumpStall { pump, expected_g, gained_g } => format!(
                "{pump} stalled: {gained_g:.2} g arrived where {expected_g:.2} g were expected"
            ),
            Self::OverVolume { mass_g, limit_g } => {
                format!("vessel over its limit: {mass_g:.2} g, limit {limit_g:.2} g")
            }
            Self::EmergencyStop => "emergency stop pressed".into(),
            Self::EmergencyStopUnmonitored { why } => {
                format!("emergency stop not monitored: {why}")
            }
            Self::LinkDown { device } => format!("{device}: link lost"),
            Self::DeviceRefused { device, why } => {
                format!("{device} did not do as commanded: {why}")
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
struct HeaterWatch {
    error: f64,
    over_error: f64,
    last_target: Option<f64>,
    approaching: bool,
    goal_temp: f64,
    goal_time: Duration,
    off_at: Option<f64>,
}

#[derive(Debug, Clone)]
struct Flow {
    pump: String,
    since: Duration,
    grams_per_s: f64,
    mass_at_start: f64,
}

/// Watches one unit.
#[derive(Debug, Clone)]
pub struct Monitor {
    limits: Limits,
    heater: HeaterWatch,
    last_seen: Vec<(String, Duration)>,
    mass: Option<f64>,
    unstable_since: Option<Duration>,
    flow: Option<Flow>,
    mass_limit: Option<f64>,
    /// Devices whose silence has been reported; cleared when they speak again.
    stale_reported: Vec<String>,
    /// The E-stop as last read: `Some(Ok(pressed))`, `Some(Err(()))` unreadable, `None` never.
    estop: Option<Result<bool, ()>>,
}

impl Monitor {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            heater: HeaterWatch::default(),
            last_seen: Vec::new(),
            mass: None,
            unstable_since: None,
            flow: None,
            mass_limit: None,
            stale_reported: Vec::new(),
            estop: None,
        }
    }

    fn seen(&mut self, device: &str, now: Duration) {
        self.stale_reported.retain(|d| d != device);
        match self.last_seen.iter_mut().find(|(d, _)| d == device) {
            Some((_, t)) => *t = now,
            None => self.last_seen.push((device.to_owned(), now)),
        }
    }

    /// The most the vessel may weigh now (the recipe's ceiling for this batch).
    pub fn set_mass_limit(&mut self, grams: Option<f64>) {
        self.mass_limit = grams;
    }

    /// A pump was commanded; `grams_per_s` is its expected mass flow (0 when stopped).
    pub fn pump_commanded(&mut self, pump: &str, now: Duration, grams_per_s: f64) {
        self.flow = (grams_per_s > 0.0).then(|| Flow {
            pump: pump.to_owned(),
            since: now,
            grams_per_s,
            mass_at_start: self.mass.unwrap_or(0.0),
        });
    }

    /// A temperature reading (`None`: sensor break) with the target in force (`None`: off).
    pub fn heater(
        &mut self,
        now: Duration,
        temp: Option<f64>,
        target: Option<f64>,
    ) -> Option<Fault> {
        self.seen("heater", now);
        let Some(temp) = temp else { return Some(Fault::SensorBreak) };
        let l = &self.limits;
        if temp >= l.max_temp_c {
            return Some(Fault::OverTemperature { temp_c: temp, max_c: l.max_temp_c });
        }
        let w = &mut self.heater;
        let Some(target) = target.filter(|t| *t > 0.0) else {
            // Off: the temperature may drift, not climb.
            let off_at = *w.off_at.get_or_insert(temp);
            w.off_at = Some(off_at.min(temp));
            w.error = 0.0;
            w.approaching = false;
            w.last_target = None;
            let off_at = w.off_at.unwrap_or(temp);
            return (temp > off_at + l.off_rise_c)
                .then_some(Fault::HeaterHeatingWhileOff { temp_c: temp, off_at_c: off_at });
        };
        w.off_at = None;
        if temp > target + l.hysteresis_c {
            w.over_error += temp - (target + l.hysteresis_c);
            w.last_target = Some(target);
            return (w.over_error >= l.max_error)
                .then_some(Fault::HeaterOverTarget { temp_c: temp, target_c: target });
        }
        w.over_error = 0.0;
        if temp >= target - l.hysteresis_c {
            w.approaching = false;
            w.error = 0.0;
            w.last_target = Some(target);
            return None;
        }
        w.error += (target - l.hysteresis_c) - temp;
        let fault = if w.last_target != Some(target) {
            w.approaching = true;
            w.goal_temp = temp + l.heating_gain_c;
            w.goal_time = now + l.check_gain_time;
            None
        } else if !w.approaching {
            (w.error >= l.max_error)
                .then_some(Fault::HeaterNotHeating { temp_c: temp, target_c: target })
        } else if temp >= w.goal_temp {
            w.error = 0.0;
            w.goal_temp = temp + l.heating_gain_c;
            w.goal_time = now + l.check_gain_time;
            None
        } else if now >= w.goal_time {
            // The approach stalled: from here only the cumulative error stands between us and
            // a fault, and it has been growing all along.
            w.approaching = false;
            (w.error >= l.max_error)
                .then_some(Fault::HeaterNotHeating { temp_c: temp, target_c: target })
        } else {
            None
        };
        w.last_target = Some(target);
        fault
    }

    /// A balance reading (`None`: overload).
    pub fn balance(&mut self, now: Duration, grams: Option<f64>, stable: bool) -> Option<Fault> {
        self.seen("balance", now);
        let Some(grams) = grams else { return Some(Fault::BalanceOverload) };
        self.mass = Some(grams);
        if let Some(limit) = self.mass_limit.filter(|l| grams > *l) {
            return Some(Fault::OverVolume { mass_g: grams, limit_g: limit });
        }
        if stable || self.flow.is_some() {
            self.unstable_since = None;
        } else {
            let since = *self.unstable_since.get_or_insert(now);
            let for_ = now.saturating_sub(since);
            if for_ >= self.limits.unstable_for {
                return Some(Fault::BalanceUnstable { for_ms: millis(for_) });
            }
        }
        None
    }

    /// A reading of the E-stop's contact: `Ok(pressed)`, or `Err(why)` when the module answered
    /// without its state. A fault when it becomes pressed or unreadable, once each time.
    pub fn estop(&mut self, now: Duration, reading: Result<bool, String>) -> Option<Fault> {
        self.seen("estop", now);
        let was = self.estop.replace(reading.as_ref().map(|p| *p).map_err(|_| ()));
        match reading {
            Ok(true) if was != Some(Ok(true)) => Some(Fault::EmergencyStop),
            Err(why) if was != Some(Err(())) => Some(Fault::EmergencyStopUnmonitored { why }),
            _ => None,
        }
    }

    /// Checks what needs no new reading: staleness and pump stall.
    pub fn tick(&mut self, now: Duration) -> Option<Fault> {
        for (device, t) in &self.last_seen {
            let age = now.saturating_sub(*t);
            if age > self.limits.stale_after && !self.stale_reported.contains(device) {
                self.stale_reported.push(device.clone());
                return Some(Fault::Stale { device: device.clone(), age_ms: millis(age) });
            }
        }
        let flow = self.flow.as_ref()?;
        let running = now.saturating_sub(flow.since);
        if running < self.limits.stall_window {
            return None;
        }
        let expected = flow.grams_per_s * running.as_secs_f64();
        let gained = self.mass.unwrap_or(0.0) - flow.mass_at_start;
        (gained < expected * self.limits.stall_fraction).then(|| Fault::PumpStall {
            pump: flow.pump.clone(),
            expected_g: expected,
            gained_g: gained,
        })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    /// Feeds a temperature trace sampled once a second and returns the first fault and when.
    fn heater_trace(
        target: Option<f64>,
        temps: impl IntoIterator<Item = f64>,
    ) -> Option<(u64, Fault)> {
        let mut m = Monitor::new(Limits::default());
        temps.into_iter().enumerate().find_map(|(i, t)| {
            let i = i as u64;
            m.heater(Duration::from_secs(i), Some(t), target).map(|f| (i, f))
        })
    }

    #[test]
    fn a_heater_that_heats_is_left_alone() {
        // 0.1 °C/s from 20 to 37: slow but steady.
        let trace = (0..400).map(|i| (20.0 + 0.1 * f64::from(i)).min(37.0));
        assert_eq!(heater_trace(Some(37.0), trace), None);
    }

    #[test]
    fn a_heater_that_stops_heating_trips_on_accumulated_error() {
        // Climbs 5 °C, then the element fails and the temperature sits at 25 °C.
        let trace = (0..600).map(|i| (20.0 + 0.1 * f64::from(i)).min(25.0));
        let (at, fault) = heater_trace(Some(37.0), trace).expect("must trip");
        assert!(matches!(fault, Fault::HeaterNotHeating { .. }), "{fault:?}");
        // The approach check allows 60 s to gain 2 °C; after that ~9 °C of error per second.
        assert!((100..140).contains(&at), "tripped at {at} s");
    }

    #[test]
    fn a_heater_stuck_on_with_the_target_off_trips() {
        // 0.25 °C/s is exact in binary, so the crossing second is exact too.
        let trace = (0..100).map(|i| 25.0 + 0.25 * f64::from(i));
        let (at, fault) = heater_trace(None, trace).expect("must trip");
        assert!(
            matches!(fault, Fault::HeaterHeatingWhileOff { off_at_c, .. } if off_at_c == 25.0),
            "{fault:?}"
        );
        assert_eq!(at, 21);
    }

    #[test]
    fn cooling_with_the_target_off_is_fine() {
        assert_eq!(heater_trace(None, (0..300).map(|i| 60.0 - 0.1 * f64::from(i))), None);
    }

    #[test]
    fn staying_above_target_and_the_absolute_ceiling_both_trip() {
        let (_, over) =
            heater_trace(Some(37.0), std::iter::repeat_n(45.0, 100)).expect("over target");
        assert!(matches!(over, Fault::HeaterOverTarget { .. }), "{over:?}");
        let (at, hot) = heater_trace(Some(37.0), [40.0, 60.0, 80.5]).expect("ceiling");
        assert_eq!((at, hot), (2, Fault::OverTemperature { temp_c: 80.5, max_c: 80.0 }));
    }

    #[test]
    fn a_broken_sensor_trips_at_once() {
        let mut m = Monitor::new(Limits::default());
        assert_eq!(m.heater(s(0.0), None, Some(37.0)), Some(Fault::SensorBreak));
    }

    #[test]
    fn silence_from_a_device_trips_after_stale_after() {
        let mut m = Monitor::new(Limits::default());
        assert_eq!(m.balance(s(0.0), Some(10.0), true), None);
        assert_eq!(m.tick(s(3.0)), None);
        assert_eq!(m.tick(s(3.5)), Some(Fault::Stale { device: "balance".into(), age_ms: 3500 }));
    }

    #[test]
    fn silence_is_reported_once_until_the_device_speaks_again() {
        let mut m = Monitor::new(Limits::default());
        m.balance(s(0.0), Some(10.0), true);
        assert!(m.tick(s(3.5)).is_some());
        assert_eq!(m.tick(s(3.6)), None, "once per silence");
        m.balance(s(4.0), Some(10.0), true);
        assert!(m.tick(s(7.5)).is_some(), "a new silence");
    }

    #[test]
    fn the_emergency_stop_faults_when_pressed_and_when_unreadable_once_each_time() {
        let mut m = Monitor::new(Limits::default());
        let unreadable = || Err("exception 0x04".to_owned());
        let seq = [
            (Ok(false), None),
            (Ok(true), Some(Fault::EmergencyStop)),
            (Ok(true), None),
            (Ok(false), None),
            (unreadable(), Some(Fault::EmergencyStopUnmonitored { why: "exception 0x04".into() })),
            (unreadable(), None),
            (Ok(true), Some(Fault::EmergencyStop)),
        ];
        for (i, (reading, fault)) in seq.into_iter().enumerate() {
            assert_eq!(m.estop(s(i as f64 * 0.1), reading), fault, "step {i}");
        }
        // Silence from its module is staleness, as for any device.
        assert!(matches!(m.tick(s(4.0)), Some(Fault::Stale { device, .. }) if device == "estop"));
    }

    #[test]
    fn on_a_fast_simulated_plant_silence_is_still_measured_in_wall_time() {
        // At 10x, 3 s of wall-clock silence is 30 s of engine time; physics limits stay put.
        let limits = Limits::default().at_speed(10.0);
        assert_eq!(limits.stall_window, Limits::default().stall_window);
        let mut m = Monitor::new(limits);
        m.balance(s(0.0), Some(10.0), true);
        assert_eq!(m.tick(s(29.0)), None);
        assert!(matches!(m.tick(s(30.5)), Some(Fault::Stale { .. })));
        assert_eq!(Limits::default().at_speed(1.0), Limits::default());
    }

    #[test]
    fn a_pump_that_runs_but_moves_nothing_is_a_stall() {
        let mut m = Monitor::new(Limits::default());
        m.balance(s(0.0), Some(100.0), true);
        m.pump_commanded("syringe", s(0.0), 1.0);
        for t in 1..=9 {
            m.balance(s(f64::from(t)), Some(100.0 + 0.05 * f64::from(t)), false);
        }
        let fault = m.tick(s(9.0)).expect("stall");
        assert!(
            matches!(fault, Fault::PumpStall { ref pump, .. } if pump == "syringe"),
            "{fault:?}"
        );
        // A pump that delivers is not a stall.
        let mut ok = Monitor::new(Limits::default());
        ok.balance(s(0.0), Some(100.0), true);
        ok.pump_commanded("syringe", s(0.0), 1.0);
        for t in 1..=9 {
            ok.balance(s(f64::from(t)), Some(100.0 + 0.9 * f64::from(t)), false);
        }
        assert_eq!(ok.tick(s(9.0)), None);
    }

    #[test]
    fn overload_over_volume_and_lasting_instability() {
        let mut m = Monitor::new(Limits::default());
        assert_eq!(m.balance(s(0.0), None, false), Some(Fault::BalanceOverload));
        m.set_mass_limit(Some(250.0));
        assert_eq!(
            m.balance(s(1.0), Some(250.5), true),
            Some(Fault::OverVolume { mass_g: 250.5, limit_g: 250.0 })
        );
        let mut u = Monitor::new(Limits::default());
        assert_eq!(u.balance(s(0.0), Some(5.0), false), None);
        assert_eq!(u.balance(s(59.0), Some(5.0), false), None);
        assert_eq!(
            u.balance(s(60.0), Some(5.0), false),
            Some(Fault::BalanceUnstable { for_ms: 60_000 })
        );
    }

    #[test]
    fn every_fault_reads_as_a_sentence() {
        let faults = [
            Fault::HeaterNotHeating { temp_c: 25.0, target_c: 37.0 },
            Fault::HeaterOverTarget { temp_c: 45.0, target_c: 37.0 },
            Fault::HeaterHeatingWhileOff { temp_c: 31.0, off_at_c: 25.0 },
            Fault::OverTemperature { temp_c: 80.5, max_c: 80.0 },
            Fault::SensorBreak,
            Fault::Stale { device: "balance".into(), age_ms: 3500 },
            Fault::BalanceOverload,
            Fault::BalanceUnstable { for_ms: 60_000 },
            Fault::PumpStall { pump: "syringe".into(), expected_g: 9.0, gained_g: 0.45 },
            Fault::OverVolume { mass_g: 250.5, limit_g: 250.0 },
            Fault::EmergencyStop,
            Fault::LinkDown { device: "heater".into() },
            Fault::DeviceRefused {
                device: "syringe".into(),
                why: "syringe refused: value out of range".into(),
            },
        ];
        let text: Vec<String> = faults.iter().map(Fault::describe).collect();
        insta::assert_snapshot!(text.join("\n"));
    }
}
