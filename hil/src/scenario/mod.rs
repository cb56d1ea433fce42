//! Scenarios as data: a rig, scheduled faults, steps that drive the device drivers, and
//! expectations about the end state. This module parses and checks them (pure); [`run`] runs
//! them against a live [`crate::rig::Rig`].
//!
//! # Format (TOML)
//! ```toml
//! name = "balance unplugged mid-dispense"
//! about = "The balance vanishes while the syringe pumps; the driver reports the port gone."
//!
//! [rig]                       # all optional
//! balance = "mt-sics"         # mt-sics | sbi
//! speed = 1.0                 # plant seconds per real second, 1–100
//! timeout_ms = 300            # per-request timeout written into the unit file
//!
//! [plant]                     # optional overrides, see crate::plant::config
//! seed = 7
//!
//! [[fault]]                   # scheduled: `at_s` (plant time) or `when` (a condition)
//! when = "vessel_mass_g > 1"
//! device = "balance"
//! inject = "unplug"
//!
//! [[step]]
//! do = "tare"
//! device = "balance"
//!
//! [[step]]
//! do = "pump"
//! device = "syringe"
//! rate_ml_min = 20.0
//! volume_ml = 2.0
//!
//! [[step]]
//! do = "wait-until"
//! condition = "vessel_mass_g > 1.5"
//! timeout_s = 10
//!
//! [[step]]
//! do = "read"
//! device = "balance"
//! expect = "link"             # this step must fail on the link
//!
//! [expect]
//! vessel_mass_g = { value = 1.994, tolerance = 0.01 }
//! ```
//!
//! ## Steps (`do = ...`)
//! Device steps take `device` (`balance`, `syringe`, `peristaltic`, `heater`) and check their
//! outcome against `expect` (default `"ok"`): `ok`, `refused`, `refused:<reason>` (e.g.
//! `refused:overload`), `link`, `link:<kind>` (`timeout`, `garbled`, `unexpected`,
//! `port-gone`) or `any`. `shows = "text"` also requires the outcome's text to contain
//! `text`; `within = { value, tolerance }` requires the number it returned to be close.
//!
//! | `do` | fields | driver call |
//! |---|---|---|
//! | `tare`, `zero`, `clear-tare` | device | `Balance::tare` / `zero` / `clear_tare` |
//! | `read` | device, `wait` (`stable` \| `immediate`, default stable) | `Balance::read` |
//! | `pump` | device, `rate_ml_min`, `volume_ml` (else run until stopped), `reverse` | `set_rate`, `set_direction`, `dispense` / `run` |
//! | `stop`, `pump-status`, `dispensed` | device | `Pump::stop` / `status` / `dispensed` |
//! | `heat` | device, `setpoint_c` | `Heater::set_setpoint`, `enable` |
//! | `heater-off`, `temperature`, `heater-status` | device | `disable` / `process_value` / `status` |
//! | `wait` | `seconds` (plant time) | — |
//! | `wait-until` | `condition`, `timeout_s` (plant time) | — (fails on timeout) |
//! | `add-by-hand` | `material`, `grams` | — (the pharmacist weighs a solid into the vessel) |
//! | `inject` | as a `[[fault]]` without its trigger | — |
//!
//! ## Faults (`inject = ...`)
//! Wire, per device: `unplug`, `replug`, `silent`, `garbage` (`text`), `noise` (`text` before
//! each reply), `slow` (`value` ms), `bad-checksum`, `clear`. Physics: `stall` (the pump runs
//! and counts, nothing moves), `stall-alarm` (it notices and raises its alarm), `unstall`
//! (device `syringe` or `peristaltic`); `drift` (`value` g/min), `freeze`, `thaw` (balance);
//! `estop-press`, `estop-release` (estop: the button; it cuts the actuators' power);
//! `stuck-on`, `unstick`, `sensor-break`, `sensor-mend` (heater); `ambient` (`value` °C, no
//! device). By hand: `add-by-hand` (`material`, `grams`, no device), the `add-by-hand` step
//! on a trigger.
//!
//! ## Expectations (`[expect]`, all optional)
//! `vessel_mass_g = { value, tolerance }` (liquid in the vessel, true plant value),
//! `vessel_solids_g = { value, tolerance }` (solids added by hand),
//! `vessel_temp_c = { min, max }`, `peak_temp_c = { min, max }` (highest seen while running),
//! `pump_alarms = { syringe = ["stalled"] }` (alarms the drivers reported).
//!
//! ## Extending (the supervisor issue)
//! A new step is a variant of [`Step`] (serde names it from `do`) plus its arm in
//! `run::Runner::step`; a new expectation is a field of [`Expectations`] plus its check in
//! [`Expectations::check`] over a field of [`Observed`] that the runner fills. Both matches are
//! exhaustive, so the compiler lists every place to touch. Supervisor steps ("start batch",
//! "wait for phase", "operator action") belong in the runner next to the driver steps; they
//! talk to `applianced` over its API and record what they saw in [`Observed`] ("batch state",
//! "record entries present").

pub mod run;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use galen_devices::emulator::Fault;
use serde::Deserialize;

use galen_devices::config::Simulation;

use crate::plant::{Condition, PlantConfig, PlantFault, PumpId, Snapshot};
use crate::rig::{BalanceDialect, DEVICES, Injection, RigConfig, Trigger};

/// A scenario file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Unreadable.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML or not the format.
    #[error("{file}: {message}")]
    Syntax {
        /// The file.
        file: PathBuf,
        /// The parser's message with line and column.
        message: String,
    },
    /// A value that does not make sense.
    #[error("{file}: {field}: {message}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Where, e.g. `step[3].condition`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    about: String,
    #[serde(default)]
    rig: RawRig,
    #[serde(default)]
    plant: PlantConfig,
    #[serde(default)]
    fault: Vec<RawFault>,
    #[serde(default)]
    step: Vec<RawStep>,
    #[serde(default)]
    expect: Expectations,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRig {
    #[serde(default)]
    balance: BalanceDialect,
    speed: Option<f64>,
    timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    at_s: Option<f64>,
    when: Option<String>,
    #[serde(flatten)]
    what: RawInjection,
}

#[derive(Debug, Clone, Deserialize)]
struct RawInjection {
    device: Option<String>,
    inject: String,
    value: Option<f64>,
    text: Option<String>,
    material: Option<String>,
    grams: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "do", rename_all = "kebab-case", deny_unknown_fields)]
enum RawStep {
    Tare {
        device: String,
        #[serde(flatten)]
        check: Check,
    },
    Zero {
        device: String,
        #[serde(flatten)]
        check: Check,
    },
    ClearTare {
        device: String,
        #[serde(flatten)]
        check: Check,
    },
    Read {
        device: String,
        #[serde(default)]
        wait: ReadWait,
        #[serde(flatten)]
        check: Check,
    },
    Pump {
        device: String,
        rate_ml_min: f64,
        volume_ml: Option<f64>,
        #[serde(default)]
        reverse: bool,
        #[serde(flatten)]
        check: Check,
    },
    Stop {
        device: String,
        #[serde(flatten)]
        check: Check,
    },
    PumpStatus {
        device: String,
        #[serde(flatten)]
        check: Check,
    },
    Dispensed {
        device: String,
        #[serde(flatten)]
        check: Check,
    },
    Heat {
        device: String,
        setpoint_c: f64,
        #[serde(flatten)]
        check: Check,
    },
    HeaterOff {
        device: String,
        #[serde(flatten)]
        check: Check,
    },
    Temperature {
        device: String,
        #[serde(flatten)]
        check: Check,
    },
    HeaterStatus {
        device: String,
        #[serde(flatten)]
        check: Check,
    },
    Wait {
        seconds: f64,
    },
    WaitUntil {
        condition: String,
        timeout_s: f64,
    },
    AddByHand {
        material: String,
        grams: f64,
    },
    Inject {
        #[serde(flatten)]
        what: RawInjection,
    },
}

/// Whether a read waits for stability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadWait {
    /// `Wait::Stable`.
    #[default]
    Stable,
    /// `Wait::Immediate`.
    Immediate,
}

/// What a device step must return.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// Outcome class (see the module docs); `ok` when absent.
    #[serde(default)]
    pub expect: Option<String>,
    /// Text the outcome must contain.
    #[serde(default)]
    pub shows: Option<String>,
    /// A number the outcome must be close to.
    #[serde(default)]
    pub within: Option<Tolerance>,
}

/// `value ± tolerance`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    /// Target.
    pub value: f64,
    /// Allowed deviation.
    pub tolerance: f64,
}

/// `min ≤ x ≤ max`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Band {
    /// Lowest allowed.
    pub min: f64,
    /// Highest allowed.
    pub max: f64,
}

/// A validated step.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A call on a device driver, checked.
    Device {
        /// Device name.
        device: String,
        /// The call.
        call: DeviceCall,
        /// What it must return.
        check: Check,
    },
    /// Let plant time pass.
    Wait(f64),
    /// Wait until a condition holds (fails after the timeout, plant seconds).
    WaitUntil(Condition, f64),
    /// Inject a fault now.
    Inject(Injection),
}

/// A driver call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DeviceCall {
    /// Tare.
    Tare,
    /// Zero.
    Zero,
    /// Clear the tare.
    ClearTare,
    /// Read a weight.
    Read(ReadWait),
    /// Set rate and direction, then dispense a volume or run.
    Pump {
        /// mL/min.
        rate_ml_min: f64,
        /// Target volume, if any.
        volume_ml: Option<f64>,
        /// Withdraw instead of infuse.
        reverse: bool,
    },
    /// Stop.
    Stop,
    /// Status (alarms are recorded).
    PumpStatus,
    /// Volume counters.
    Dispensed,
    /// Setpoint and enable.
    Heat(f64),
    /// Disable.
    HeaterOff,
    /// Process value.
    Temperature,
    /// Status word.
    HeaterStatus,
}

impl DeviceCall {
    /// The device kind this call needs.
    fn kind(self) -> &'static str {
        match self {
            Self::Tare | Self::Zero | Self::ClearTare | Self::Read(_) => "balance",
            Self::Pump { .. } | Self::Stop | Self::PumpStatus | Self::Dispensed => "pump",
            Self::Heat(_) | Self::HeaterOff | Self::Temperature | Self::HeaterStatus => "heater",
        }
    }
}

/// A scenario's scheduled fault.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledFault {
    /// When.
    pub trigger: Trigger,
    /// What.
    pub injection: Injection,
}

/// A validated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// What it shows.
    pub about: String,
    /// The rig it runs on.
    pub rig: RigConfig,
    /// Faults with triggers.
    pub faults: Vec<ScheduledFault>,
    /// Steps, in order.
    pub steps: Vec<Step>,
    /// End-state expectations.
    pub expect: Expectations,
}

/// What must hold at the end.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    /// Liquid in the vessel, g.
    pub vessel_mass_g: Option<Tolerance>,
    /// Solids added by hand, g.
    pub vessel_solids_g: Option<Tolerance>,
    /// Vessel temperature at the end, °C.
    pub vessel_temp_c: Option<Band>,
    /// Highest vessel temperature seen, °C.
    pub peak_temp_c: Option<Band>,
    /// Alarms the pump drivers reported, by device.
    #[serde(default)]
    pub pump_alarms: BTreeMap<String, Vec<String>>,
}

/// What a run observed, for [`Expectations::check`].
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// The plant at the end.
    pub end: Snapshot,
    /// Highest vessel temperature seen.
    pub peak_temp_c: f64,
    /// Alarms the drivers reported, by device, as names (`stalled`, …).
    pub pump_alarms: BTreeMap<String, Vec<String>>,
}

/// One verdict line.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// What was checked.
    pub what: String,
    /// Whether it held.
    pub passed: bool,
    /// The value seen.
    pub seen: String,
}

impl Expectations {
    /// Checks the end state (pure).
    pub fn check(&self, o: &Observed) -> Vec<Verdict> {
        let mut out = Vec::new();
        for (label, tolerance, seen) in [
            ("vessel mass", self.vessel_mass_g, o.end.vessel_liquid_g),
            ("solids added by hand", self.vessel_solids_g, o.end.vessel_solids_g),
        ] {
            if let Some(t) = tolerance {
                out.push(Verdict {
                    what: format!("{label} {} ± {} g", t.value, t.tolerance),
                    passed: (seen - t.value).abs() <= t.tolerance,
                    seen: format!("{seen:.3} g"),
                });
            }
        }
        for (label, band, seen) in [
            ("vessel temperature", self.vessel_temp_c, o.end.vessel_temp_c),
            ("peak temperature", self.peak_temp_c, o.peak_temp_c),
        ] {
            if let Some(b) = band {
                out.push(Verdict {
                    what: format!("{label} in {}..{} °C", b.min, b.max),
                    passed: (b.min..=b.max).contains(&seen),
                    seen: format!("{seen:.1} °C"),
                });
            }
        }
        for (device, alarms) in &self.pump_alarms {
            let got = o.pump_alarms.get(device).cloned().unwrap_or_default();
            out.push(Verdict {
                what: format!("{device} reported alarms {alarms:?}"),
                passed: alarms.iter().all(|a| got.contains(a)),
                seen: format!("{got:?}"),
            });
        }
        out
    }
}

/// The outcome class of a driver call, as `expect` names it: `ok`, `refused:<reason>`,
/// `link:<kind>`.
pub fn matches_expectation(expect: &str, kind: &str) -> bool {
    expect == "any"
        || expect == kind
        || kind.split_once(':').is_some_and(|(class, _)| class == expect)
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ScenarioError::Read { file: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Validates `text`, naming `file` in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ScenarioError> {
        let raw: RawScenario = toml::from_str(text).map_err(|e| ScenarioError::Syntax {
            file: file.to_owned(),
            message: e.to_string().trim().to_owned(),
        })?;
        let invalid = |field: String, message: String| ScenarioError::Invalid {
            file: file.to_owned(),
            field,
            message,
        };
        raw.plant.validate().map_err(|e| invalid(format!("plant.{}", e.field), e.message))?;
        let defaults = RigConfig::default();
        let speed = raw.rig.speed.unwrap_or(defaults.speed);
        if Simulation::new(speed).is_err() {
            return Err(invalid("rig.speed".into(), "must be between 1 and 100".into()));
        }
        let timeout = raw.rig.timeout_ms.map_or(defaults.timeout, Duration::from_millis);
        let rig =
            RigConfig { balance: raw.rig.balance, speed, timeout, plant: raw.plant, ..defaults };

        let mut faults = Vec::new();
        for (i, f) in raw.fault.into_iter().enumerate() {
            let trigger = match (f.at_s, &f.when) {
                (Some(t), None) if t.is_finite() && t >= 0.0 => Trigger::At(t),
                (None, Some(w)) => Trigger::When(
                    w.parse().map_err(|e| invalid(format!("fault[{i}].when"), format!("{e}")))?,
                ),
                _ => {
                    return Err(invalid(
                        format!("fault[{i}]"),
                        "give exactly one of `at_s` (≥ 0) or `when`".into(),
                    ));
                }
            };
            let injection =
                injection(&f.what, &rig.plant).map_err(|m| invalid(format!("fault[{i}]"), m))?;
            faults.push(ScheduledFault { trigger, injection });
        }

        let mut steps = Vec::new();
        for (i, s) in raw.step.into_iter().enumerate() {
            let field = |name: &str| format!("step[{i}].{name}");
            let device = |device: String, call: DeviceCall, check: Check| {
                let kind = device_kind(&device)
                    .ok_or_else(|| invalid(field("device"), format!("no device `{device}`")))?;
                if kind != call.kind() {
                    return Err(invalid(
                        field("device"),
                        format!("`{device}` is not a {}", call.kind()),
                    ));
                }
                if let Some(e) = &check.expect
                    && !valid_expectation(e)
                {
                    return Err(invalid(field("expect"), format!("unknown outcome `{e}`")));
                }
                Ok(Step::Device { device, call, check })
            };
            let step = match s {
                RawStep::Tare { device: d, check } => device(d, DeviceCall::Tare, check)?,
                RawStep::Zero { device: d, check } => device(d, DeviceCall::Zero, check)?,
                RawStep::ClearTare { device: d, check } => device(d, DeviceCall::ClearTare, check)?,
                RawStep::Read { device: d, wait, check } => {
                    device(d, DeviceCall::Read(wait), check)?
                }
                RawStep::Pump { device: d, rate_ml_min, volume_ml, reverse, check } => {
                    if !(rate_ml_min.is_finite() && rate_ml_min >= 0.0) {
                        return Err(invalid(field("rate_ml_min"), "must be ≥ 0".into()));
                    }
                    if volume_ml.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                        return Err(invalid(field("volume_ml"), "must be > 0".into()));
                    }
                    device(d, DeviceCall::Pump { rate_ml_min, volume_ml, reverse }, check)?
                }
                RawStep::Stop { device: d, check } => device(d, DeviceCall::Stop, check)?,
                RawStep::PumpStatus { device: d, check } => {
                    device(d, DeviceCall::PumpStatus, check)?
                }
                RawStep::Dispensed { device: d, check } => device(d, DeviceCall::Dispensed, check)?,
                RawStep::Heat { device: d, setpoint_c, check } => {
                    device(d, DeviceCall::Heat(setpoint_c), check)?
                }
                RawStep::HeaterOff { device: d, check } => device(d, DeviceCall::HeaterOff, check)?,
                RawStep::Temperature { device: d, check } => {
                    device(d, DeviceCall::Temperature, check)?
                }
                RawStep::HeaterStatus { device: d, check } => {
                    device(d, DeviceCall::HeaterStatus, check)?
                }
                RawStep::Wait { seconds } if seconds.is_finite() && seconds >= 0.0 => {
                    Step::Wait(seconds)
                }
                RawStep::Wait { .. } => {
                    return Err(invalid(field("seconds"), "must be ≥ 0".into()));
                }
                RawStep::WaitUntil { condition, timeout_s } => {
                    let c = condition
                        .parse()
                        .map_err(|e| invalid(field("condition"), format!("{e}")))?;
                    if !(timeout_s.is_finite() && timeout_s > 0.0) {
                        return Err(invalid(field("timeout_s"), "must be > 0".into()));
                    }
                    Step::WaitUntil(c, timeout_s)
                }
                RawStep::AddByHand { material, grams } => {
                    let what = RawInjection {
                        inject: "add-by-hand".into(),
                        material: Some(material),
                        grams: Some(grams),
                        device: None,
                        value: None,
                        text: None,
                    };
                    let injection = injection(&what, &rig.plant)
                        .map_err(|m| invalid(format!("step[{i}]"), m))?;
                    Step::Inject(injection)
                }
                RawStep::Inject { what } => {
                    let injection = injection(&what, &rig.plant)
                        .map_err(|m| invalid(format!("step[{i}]"), m))?;
                    Step::Inject(injection)
                }
            };
            steps.push(step);
        }
        for device in raw.expect.pump_alarms.keys() {
            if device_kind(device) != Some("pump") {
                return Err(invalid(
                    "expect.pump_alarms".into(),
                    format!("`{device}` is not a pump"),
                ));
            }
        }
        Ok(Self { name: raw.name, about: raw.about, rig, faults, steps, expect: raw.expect })
    }
}

fn device_kind(device: &str) -> Option<&'static str> {
    match device {
        "balance" => Some("balance"),
        "syringe" | "peristaltic" => Some("pump"),
        "heater" => Some("heater"),
        _ => None,
    }
}

const REASONS: [&str; 20] = [
    "not-executable",
    "overload",
    "underload",
    "bad-parameter",
    "unknown-command",
    "transmission-error",
    "logical-error",
    "internal",
    "not-applicable",
    "out-of-range",
    "bad-packet",
    "ignored",
    "code",
    "alarm",
    "modbus-exception",
    "not-applied",
    "unsupported",
    "tare-cleared",
    "limit-exceeded",
    "not-representable",
];
const LINK_KINDS: [&str; 5] = ["timeout", "garbled", "unexpected", "port-gone", "not-safe"];

fn valid_expectation(e: &str) -> bool {
    match e.split_once(':') {
        None => matches!(e, "ok" | "refused" | "link" | "any"),
        Some(("refused", r)) => REASONS.contains(&r),
        Some(("link", k)) => LINK_KINDS.contains(&k),
        Some(_) => false,
    }
}

/// The `expect` name of a refusal reason (exhaustive: a new reason must be named here).
pub fn reason_name(r: &galen_devices::RefusalReason) -> &'static str {
    use galen_devices::RefusalReason as R;
    match r {
        R::NotExecutable => REASONS[0],
        R::Overload => REASONS[1],
        R::Underload => REASONS[2],
        R::BadParameter => REASONS[3],
        R::UnknownCommand => REASONS[4],
        R::TransmissionError => REASONS[5],
        R::LogicalError => REASONS[6],
        R::Internal => REASONS[7],
        R::NotApplicable => REASONS[8],
        R::OutOfRange => REASONS[9],
        R::BadPacket => REASONS[10],
        R::Ignored => REASONS[11],
        R::Code(_) => REASONS[12],
        R::Alarm(_) => REASONS[13],
        R::ModbusException { .. } => REASONS[14],
        R::NotApplied { .. } => REASONS[15],
        R::Unsupported(_) => REASONS[16],
        R::TareCleared => REASONS[17],
        R::LimitExceeded { .. } => REASONS[18],
        R::NotRepresentable { .. } => REASONS[19],
    }
}

/// The `expect` name of a link error.
pub fn link_name(e: &galen_devices::LinkError) -> &'static str {
    use galen_devices::LinkError as L;
    match e {
        L::Timeout { .. } => LINK_KINDS[0],
        L::Garbled { .. } => LINK_KINDS[1],
        L::Unexpected { .. } => LINK_KINDS[2],
        L::PortGone { .. } => LINK_KINDS[3],
        L::NotSafe { .. } => LINK_KINDS[4],
    }
}

fn injection(raw: &RawInjection, plant: &PlantConfig) -> Result<Injection, String> {
    let by_hand = raw.inject == "add-by-hand";
    if !by_hand && (raw.material.is_some() || raw.grams.is_some()) {
        return Err("`material` and `grams` belong to `add-by-hand`".into());
    }
    if by_hand {
        if raw.device.is_some() || raw.value.is_some() || raw.text.is_some() {
            return Err("`add-by-hand` takes `material` and `grams` only".into());
        }
        let (Some(material), Some(grams)) = (raw.material.clone(), raw.grams) else {
            return Err("`add-by-hand` needs `material` and `grams`".into());
        };
        plant.check_hand_addition(&material, grams).map_err(|e| e.to_string())?;
        return Ok(Injection::HandAddition { material, grams });
    }
    let device = || -> Result<String, String> {
        let d = raw.device.clone().ok_or_else(|| format!("`{}` needs a `device`", raw.inject))?;
        if DEVICES.contains(&d.as_str()) { Ok(d) } else { Err(format!("no device `{d}`")) }
    };
    let value = |unit: &str| {
        raw.value
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("`{}` needs `value` ({unit})", raw.inject))
    };
    let text = || {
        raw.text
            .clone()
            .map(String::into_bytes)
            .ok_or_else(|| format!("`{}` needs `text`", raw.inject))
    };
    let pump = || -> Result<PumpId, String> {
        match device()?.as_str() {
            "syringe" => Ok(PumpId::Syringe),
            "peristaltic" => Ok(PumpId::Peristaltic),
            other => Err(format!("`{}` needs a pump, not `{other}`", raw.inject)),
        }
    };
    let only = |want: &str| -> Result<(), String> {
        let d = device()?;
        if d == want {
            Ok(())
        } else {
            Err(format!("`{}` applies to `{want}`, not `{d}`", raw.inject))
        }
    };
    Ok(match raw.inject.as_str() {
        "unplug" => Injection::Unplug(device()?),
        "replug" => Injection::Replug(device()?),
        "silent" => Injection::Wire(device()?, Fault::Silent),
        "garbage" => Injection::Wire(device()?, Fault::Garbage(text()?)),
        "noise" => Injection::Wire(device()?, Fault::NoiseBefore(text()?)),
        "slow" => {
            let ms = value("ms")?;
            if ms < 0.0 {
                return Err("`slow` needs `value` ≥ 0 ms".into());
            }
            Injection::Wire(device()?, Fault::Slow(Duration::from_secs_f64(ms / 1000.0)))
        }
        "bad-checksum" => Injection::Wire(device()?, Fault::BadChecksum),
        "clear" => Injection::Wire(device()?, Fault::None),
        "stall" => Injection::Plant(PlantFault::PumpStall { pump: pump()?, alarm: false }),
        "stall-alarm" => Injection::Plant(PlantFault::PumpStall { pump: pump()?, alarm: true }),
        "unstall" => Injection::Plant(PlantFault::PumpFree(pump()?)),
        "drift" => {
            only("balance")?;
            Injection::Plant(PlantFault::BalanceDrift(value("g/min")?))
        }
        "freeze" | "thaw" => {
            only("balance")?;
            Injection::Plant(PlantFault::BalanceFrozen(raw.inject == "freeze"))
        }
        "stuck-on" | "unstick" => {
            only("heater")?;
            Injection::Plant(PlantFault::HeaterStuckOn(raw.inject == "stuck-on"))
        }
        "sensor-break" | "sensor-mend" => {
            only("heater")?;
            Injection::Plant(PlantFault::SensorBreak(raw.inject == "sensor-break"))
        }
        "ambient" => Injection::Plant(PlantFault::AmbientStep(value("°C")?)),
        "estop-press" | "estop-release" => {
            only("estop")?;
            Injection::EmergencyStop(raw.inject == "estop-press")
        }
        other => return Err(format!("unknown fault `{other}`")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> String {
        match Scenario::parse(text, Path::new("s.toml")) {
            Ok(s) => format!("ok: {} steps, {} faults", s.steps.len(), s.faults.len()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn scenario_files_are_parsed_or_rejected_with_the_field() {
        insta::assert_snapshot!(
            [
                check("name = 'x'\n[[step]]\ndo = 'tare'\ndevice = 'balance'\n[[fault]]\nat_s = 1\ndevice = 'heater'\ninject = 'sensor-break'"),
                check("name = 'x'\n[[step]]\ndo = 'tare'\ndevice = 'syringe'"),
                check("name = 'x'\n[[step]]\ndo = 'read'\ndevice = 'balance'\nexpect = 'broken'"),
                check("name = 'x'\n[[step]]\ndo = 'fly'"),
                check("name = 'x'\n[[step]]\ndo = 'wait'\nseconds = 1\nextra = 2"),
                check("name = 'x'\n[[fault]]\nwhen = 'mass > 1'\ndevice = 'balance'\ninject = 'unplug'"),
                check("name = 'x'\n[[fault]]\nat_s = 1\ndevice = 'balance'\ninject = 'stuck-on'"),
                check("name = 'x'\n[plant.balance]\ncapacity_g = -1"),
                check("name = 'x'\n[rig]\nspeed = 0.5"),
                check("name = 'x'\n[[step]]\ndo = 'add-by-hand'\nmaterial = 'azathioprine'\ngrams = 1.4\n[[fault]]\nwhen = 'vessel_solids_g > 1'\ninject = 'add-by-hand'\nmaterial = 'lactose'\ngrams = 0.5"),
                check("name = 'x'\n[[step]]\ndo = 'add-by-hand'\nmaterial = 'water'\ngrams = 1.4"),
                check("name = 'x'\n[[step]]\ndo = 'add-by-hand'\nmaterial = 'azathioprine'\ngrams = -1.4"),
                check("name = 'x'\n[[step]]\ndo = 'add-by-hand'\nmaterial = 'azathioprine'"),
                check("name = 'x'\n[[fault]]\nat_s = 1\ninject = 'add-by-hand'\ndevice = 'balance'\nmaterial = 'lactose'\ngrams = 0.5"),
                check("name = 'x'\n[[fault]]\nat_s = 1\ninject = 'add-by-hand'\ngrams = 0.5"),
                check("name = 'x'\n[[fault]]\nat_s = 1\ninject = 'freeze'\ndevice = 'balance'\ngrams = 0.5"),
            ]
            .join("\n")
        );
    }

    #[test]
    fn outcome_classes_match_by_prefix() {
        assert!(matches_expectation("link", "link:timeout"));
        assert!(matches_expectation("refused:overload", "refused:overload"));
        assert!(!matches_expectation("refused:overload", "refused:underload"));
        assert!(!matches_expectation("ok", "link:timeout"));
        assert!(matches_expectation("any", "link:timeout"));
    }
}
