//! Runs a [`Scenario`] against a live rig: starts the rig, schedules its faults, drives the
//! `galen-devices` drivers through the steps, and checks the outcomes. Keeps two logs: the
//! live one (timestamps, device replies, injections, verdict) and a summary without times or
//! measured values, stable enough to snapshot.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use galen_devices::balance::Wait;
use galen_devices::balance::mt_sics::MtSicsBalance;
use galen_devices::balance::sbi::{SbiBalance, SbiOptions};
use galen_devices::config::{BalanceProtocol, DeviceConfig, DeviceSpec, PumpProtocol};
use galen_devices::heater::eurotherm::EurothermHeater;
use galen_devices::link::{LinkPolicy, SerialConnector};
use galen_devices::pump::new_era::NewEraPump;
use galen_devices::pump::wm520::Wm520Pump;
use galen_devices::pump::{Direction, PumpAlarm};
use galen_devices::units::{Celsius, FlowRate, Volume, Weight};
use galen_devices::{Balance, DeviceResult, Heater, Pump};
use tokio::time::Instant;

use super::{
    Check, DeviceCall, Observed, ReadWait, Scenario, Step, Verdict, link_name, matches_expectation,
    reason_name,
};
use crate::rig::{Rig, RigError};

/// The result of running a scenario.
#[derive(Debug, Clone)]
pub struct Report {
    /// The scenario's name.
    pub name: String,
    /// Every step and expectation held.
    pub passed: bool,
    /// Steps, outcome classes, injections and verdicts, without times or measured values.
    pub summary: String,
    /// The full log, as printed live.
    pub log: String,
}

/// How a driver call ended.
#[derive(Debug, Clone)]
struct Outcome {
    /// `ok`, `refused:<reason>` or `link:<kind>`.
    kind: String,
    /// The value or error, for the log.
    text: String,
    /// The number returned, if any.
    number: Option<f64>,
}

fn outcome<T>(result: DeviceResult<T>, show: impl Fn(&T) -> (String, Option<f64>)) -> Outcome {
    match result {
        Ok(Ok(v)) => {
            let (text, number) = show(&v);
            Outcome { kind: "ok".into(), text, number }
        }
        Ok(Err(r)) => Outcome {
            kind: format!("refused:{}", reason_name(&r.reason)),
            text: r.to_string(),
            number: None,
        },
        Err(e) => {
            Outcome { kind: format!("link:{}", link_name(&e)), text: e.to_string(), number: None }
        }
    }
}

fn unit<T>(_: &T) -> (String, Option<f64>) {
    ("done".into(), None)
}

fn alarm_name(a: PumpAlarm) -> &'static str {
    match a {
        PumpAlarm::Reset => "reset",
        PumpAlarm::Stalled => "stalled",
        PumpAlarm::CommsTimeout => "comms-timeout",
        PumpAlarm::ProgramError => "program-error",
        PumpAlarm::OutOfRange => "out-of-range",
    }
}

#[derive(Debug)]
enum AnyBalance {
    MtSics(MtSicsBalance<SerialConnector>),
    Sbi(SbiBalance<SerialConnector>),
}

#[derive(Debug)]
struct Drivers {
    balance: AnyBalance,
    syringe: NewEraPump<SerialConnector>,
    peristaltic: Wm520Pump<SerialConnector>,
    heater: EurothermHeater<SerialConnector>,
}

/// Short backoff so a replugged port is found again within one request's timeout.
fn policy(d: &DeviceConfig) -> LinkPolicy {
    LinkPolicy {
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        ..d.policy()
    }
}

impl Drivers {
    fn from_rig(rig: &Rig) -> Self {
        let mut balance = None;
        let mut syringe = None;
        let mut peristaltic = None;
        let mut heater = None;
        for d in &rig.unit().devices {
            let (name, c, p) = (d.name.clone(), d.connector(), policy(d));
            match &d.spec {
                DeviceSpec::Balance { protocol: BalanceProtocol::MtSics, .. } => {
                    balance = Some(AnyBalance::MtSics(MtSicsBalance::new(name, c, p)));
                }
                DeviceSpec::Balance {
                    protocol: BalanceProtocol::Sbi,
                    capacity_g,
                    readability_g,
                } => {
                    let options = SbiOptions {
                        capacity: Some(Weight::grams(*capacity_g)),
                        readability: readability_g.map(Weight::grams),
                        stable_timeout: Duration::from_millis(1500),
                        ..SbiOptions::default()
                    };
                    balance = Some(AnyBalance::Sbi(SbiBalance::new(name, c, p, options)));
                }
                DeviceSpec::Pump { protocol: PumpProtocol::NewEra(o), .. } => {
                    syringe = Some(NewEraPump::new(name, c, p, *o));
                }
                DeviceSpec::Pump { protocol: PumpProtocol::Wm520(o), .. } => {
                    peristaltic = Some(Wm520Pump::new(name, c, p, *o));
                }
                DeviceSpec::Heater { options, .. } => {
                    heater = Some(EurothermHeater::new(name, c, p, *options));
                }
                // Scenarios press the button (`inject = "estop-press"`); they have no step
                // that reads its contact: watching it is the supervisor's job.
                DeviceSpec::EmergencyStop { .. } => {}
            }
        }
        // The rig writes exactly these four devices and the E-stop (Rig::start validates its unit file).
        match (balance, syringe, peristaltic, heater) {
            (Some(balance), Some(syringe), Some(peristaltic), Some(heater)) => {
                Self { balance, syringe, peristaltic, heater }
            }
            other => unreachable!("the rig's unit file lacks a device: {other:?}"),
        }
    }
}

async fn balance_call<B: Balance>(b: &mut B, call: DeviceCall) -> Outcome {
    match call {
        DeviceCall::Tare => {
            outcome(b.tare().await, |t| (format!("tare {t:?}"), t.map(|w| w.in_grams())))
        }
        DeviceCall::Zero => outcome(b.zero().await, unit),
        DeviceCall::ClearTare => outcome(b.clear_tare().await, unit),
        DeviceCall::Read(wait) => {
            let wait = match wait {
                ReadWait::Stable => Wait::Stable,
                ReadWait::Immediate => Wait::Immediate,
            };
            outcome(b.read(wait).await, |r| (r.to_string(), Some(r.weight.in_grams())))
        }
        other => unreachable!("validated as a balance call: {other:?}"),
    }
}

async fn pump_call<P: Pump>(p: &mut P, call: DeviceCall, alarms: &mut Vec<String>) -> Outcome {
    let result = match call {
        DeviceCall::Pump { rate_ml_min, volume_ml, reverse } => {
            pump_run(p, rate_ml_min, volume_ml, reverse).await
        }
        DeviceCall::Stop => outcome(p.stop().await, unit),
        DeviceCall::PumpStatus => {
            let status = p.status().await;
            if let Ok(Ok(galen_devices::pump::PumpStatus { alarm: Some(a), .. })) = &status {
                alarms.push(alarm_name(*a).to_owned());
            }
            outcome(status, |s| (format!("{s:?}"), None))
        }
        DeviceCall::Dispensed => outcome(p.dispensed().await, |d| {
            (format!("forward {}, reverse {}", d.forward, d.reverse), Some(d.forward.get()))
        }),
        other => unreachable!("validated as a pump call: {other:?}"),
    };
    alarms.extend(p.take_alarms().into_iter().map(|a| alarm_name(a).to_owned()));
    result
}

async fn pump_run<P: Pump>(p: &mut P, rate: f64, volume: Option<f64>, reverse: bool) -> Outcome {
    let Ok(flow) = FlowRate::new(rate) else {
        return Outcome {
            kind: "refused:out-of-range".into(),
            text: "bad rate".into(),
            number: None,
        };
    };
    let o = outcome(p.set_rate(flow).await, unit);
    if o.kind != "ok" {
        return o;
    }
    let direction = if reverse { Direction::Reverse } else { Direction::Forward };
    let o = outcome(p.set_direction(direction).await, unit);
    if o.kind != "ok" {
        return o;
    }
    match volume.map(Volume::new) {
        Some(Ok(v)) => outcome(p.dispense(v).await, |_| (format!("dispensing {v}"), None)),
        Some(Err(e)) => {
            Outcome { kind: "refused:out-of-range".into(), text: e.to_string(), number: None }
        }
        None => outcome(p.run().await, |_| ("running".into(), None)),
    }
}

async fn heater_call<H: Heater>(h: &mut H, call: DeviceCall) -> Outcome {
    match call {
        DeviceCall::Heat(sp) => match Celsius::new(sp) {
            Ok(target) => {
                let o = outcome(h.set_setpoint(target).await, unit);
                if o.kind != "ok" {
                    return o;
                }
                outcome(h.enable().await, |_| (format!("heating to {target}"), None))
            }
            Err(e) => {
                Outcome { kind: "refused:out-of-range".into(), text: e.to_string(), number: None }
            }
        },
        DeviceCall::HeaterOff => outcome(h.disable().await, unit),
        DeviceCall::Temperature => {
            outcome(h.process_value().await, |c| (c.to_string(), Some(c.get())))
        }
        DeviceCall::HeaterStatus => outcome(h.status().await, |s| (format!("{s:?}"), None)),
        other => unreachable!("validated as a heater call: {other:?}"),
    }
}

struct Log {
    start: Instant,
    live: bool,
    full: String,
    summary: String,
}

impl Log {
    fn line(&mut self, plant_s: f64, text: &str) {
        let real = self.start.elapsed().as_secs_f64();
        let line = format!("[{real:7.3} s | plant {plant_s:8.2} s] {text}");
        if self.live {
            println!("{line}");
        }
        self.full += &line;
        self.full.push('\n');
    }

    fn summary(&mut self, text: &str) {
        self.summary += text;
        self.summary.push('\n');
    }
}

struct Runner<'a> {
    rig: Rig,
    drivers: Drivers,
    log: Log,
    alarms: BTreeMap<String, Vec<String>>,
    peak_temp_c: f64,
    scenario: &'a Scenario,
}

impl Runner<'_> {
    fn now(&self) -> f64 {
        self.rig.plant().snapshot().t_s
    }

    /// Logs what the rig did and samples the plant for the peak temperature.
    fn observe(&mut self) {
        for e in self.rig.take_events() {
            self.log.line(e.t_s, &e.text);
            // Trigger times depend on scheduling; the summary keeps only what was done.
            if e.text.starts_with("inject") {
                self.log.summary(&format!("  {}", e.text));
            }
        }
        let s = self.rig.plant().snapshot();
        self.peak_temp_c = self.peak_temp_c.max(s.vessel_temp_c);
    }

    async fn pause(&mut self) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.observe();
    }

    /// Runs step `i`; returns whether it held.
    async fn step(&mut self, i: usize, step: &Step) -> bool {
        match step {
            Step::Device { device, call, check } => {
                let label = format!("{device} {}", call_name(*call));
                let o = match device.as_str() {
                    "balance" => match &mut self.drivers.balance {
                        AnyBalance::MtSics(b) => balance_call(b, *call).await,
                        AnyBalance::Sbi(b) => balance_call(b, *call).await,
                    },
                    "syringe" => {
                        let alarms = self.alarms.entry(device.clone()).or_default();
                        pump_call(&mut self.drivers.syringe, *call, alarms).await
                    }
                    "peristaltic" => {
                        let alarms = self.alarms.entry(device.clone()).or_default();
                        pump_call(&mut self.drivers.peristaltic, *call, alarms).await
                    }
                    _ => heater_call(&mut self.drivers.heater, *call).await,
                };
                self.observe();
                let (held, why) = judge(check, &o);
                let t = self.now();
                self.log.line(t, &format!("step {i}: {label} → {} {}", o.kind, o.text));
                let expected = check.expect.as_deref().unwrap_or("ok");
                let verdict = if held { "pass".to_owned() } else { format!("FAIL ({why})") };
                self.log.line(t, &format!("         expected {expected}: {verdict}"));
                self.log.summary(&format!(
                    "step {i}: {label} → {} [expected {expected}] {}",
                    o.kind,
                    if held { "pass" } else { "FAIL" }
                ));
                held
            }
            Step::Wait(seconds) => {
                let until = self.now() + seconds;
                self.log.line(self.now(), &format!("step {i}: wait {seconds} s"));
                self.log.summary(&format!("step {i}: wait {seconds} s"));
                while self.now() < until {
                    self.pause().await;
                }
                true
            }
            Step::WaitUntil(condition, timeout) => {
                let deadline = self.now() + timeout;
                self.log
                    .line(self.now(), &format!("step {i}: wait until {condition} (≤ {timeout} s)"));
                let held = loop {
                    let s = self.rig.plant().snapshot();
                    if condition.holds(&s) {
                        break true;
                    }
                    if s.t_s >= deadline {
                        break false;
                    }
                    self.pause().await;
                };
                let verdict = if held { "pass" } else { "FAIL (timed out)" };
                self.log.line(self.now(), &format!("         {verdict}"));
                self.log.summary(&format!(
                    "step {i}: wait until {condition} {}",
                    if held { "pass" } else { "FAIL" }
                ));
                held
            }
            Step::Inject(injection) => {
                let result = self.rig.inject(injection.clone());
                self.log.summary(&format!("step {i}: inject"));
                self.observe();
                match result {
                    Ok(()) => true,
                    Err(e) => {
                        self.log.line(self.now(), &format!("step {i}: injection failed: {e}"));
                        false
                    }
                }
            }
        }
    }
}

fn call_name(call: DeviceCall) -> &'static str {
    match call {
        DeviceCall::Tare => "tare",
        DeviceCall::Zero => "zero",
        DeviceCall::ClearTare => "clear-tare",
        DeviceCall::Read(_) => "read",
        DeviceCall::Pump { .. } => "pump",
        DeviceCall::Stop => "stop",
        DeviceCall::PumpStatus => "pump-status",
        DeviceCall::Dispensed => "dispensed",
        DeviceCall::Heat(_) => "heat",
        DeviceCall::HeaterOff => "heater-off",
        DeviceCall::Temperature => "temperature",
        DeviceCall::HeaterStatus => "heater-status",
    }
}

/// Whether an outcome satisfies a check, and if not why (pure).
fn judge(check: &Check, o: &Outcome) -> (bool, String) {
    let expected = check.expect.as_deref().unwrap_or("ok");
    if !matches_expectation(expected, &o.kind) {
        return (false, format!("got {}", o.kind));
    }
    if let Some(text) = &check.shows
        && !o.text.contains(text.as_str())
    {
        return (false, format!("does not show `{text}`"));
    }
    if let Some(t) = check.within {
        match o.number {
            Some(n) if (n - t.value).abs() <= t.tolerance => {}
            Some(n) => return (false, format!("{n} is not within {} ± {}", t.value, t.tolerance)),
            None => return (false, "no number returned".into()),
        }
    }
    (true, String::new())
}

/// Runs `scenario` on a rig in `dir`, printing the log as it goes if `live`.
pub async fn run(scenario: &Scenario, dir: &Path, live: bool) -> Result<Report, RigError> {
    let rig = Rig::start(scenario.rig.clone(), dir)?;
    for f in &scenario.faults {
        rig.schedule(f.trigger.clone(), f.injection.clone())?;
    }
    let drivers = Drivers::from_rig(&rig);
    let log = Log { start: Instant::now(), live, full: String::new(), summary: String::new() };
    let mut r =
        Runner { drivers, log, alarms: BTreeMap::new(), peak_temp_c: f64::MIN, scenario, rig };
    r.log.line(0.0, &format!("scenario: {}", scenario.name));
    if !scenario.about.is_empty() {
        r.log.line(0.0, &scenario.about);
    }
    r.log.line(0.0, &format!("unit file: {}", r.rig.unit_path().display()));
    for f in &scenario.faults {
        r.log.line(0.0, &format!("scheduled: {} {}", f.trigger, f.injection));
        r.log.summary(&format!("scheduled: {} {}", f.trigger, f.injection));
    }
    let mut passed = true;
    for (i, step) in r.scenario.steps.iter().enumerate() {
        passed &= r.step(i, step).await;
    }
    r.observe();
    let end = r.rig.plant().snapshot();
    let observed = Observed {
        peak_temp_c: r.peak_temp_c.max(end.vessel_temp_c),
        end,
        pump_alarms: r.alarms.clone(),
    };
    let verdicts: Vec<Verdict> = scenario.expect.check(&observed);
    for v in &verdicts {
        let mark = if v.passed { "pass" } else { "FAIL" };
        r.log.line(observed.end.t_s, &format!("expect {}: {mark} (saw {})", v.what, v.seen));
        r.log.summary(&format!("expect {}: {mark}", v.what));
        passed &= v.passed;
    }
    let verdict = if passed { "PASS" } else { "FAIL" };
    r.log.line(observed.end.t_s, &format!("verdict: {verdict}"));
    r.log.summary(&format!("verdict: {verdict}"));
    let stats = r.rig.tick_stats();
    let mut log = r.log.full;
    let _ = writeln!(
        log,
        "plant ticks: {} ({} overruns, longest gap {:?})",
        stats.ticks, stats.overruns, stats.max_gap
    );
    Ok(Report { name: scenario.name.clone(), passed, summary: r.log.summary, log })
}
