//! The unit configuration file: which instrument is on which port, how to talk to it, its
//! calibration and its limits. Parsed into raw types, then validated into domain types; a typo
//! or a missing value is an error naming the file, line, column and field, never a default.
//!
//! # Format (TOML)
//! ```toml
//! [[device]]
//! name = "balance"                 # unique; used in every error and record
//! kind = "balance"                 # balance | pump | heater | emergency-stop
//! protocol = "mt-sics"             # mt-sics | sbi | new-era | wm520 | eurotherm | modbus-di
//! port = "/dev/serial/by-id/usb-Mettler_Toledo-if00"
//! address = 1                      # new-era 0–99 (optional), wm520 1–16, eurotherm and
//!                                  # modbus-di 1–247
//! timeout_ms = 1000                # per request, reconnection included (default 1000)
//! serial = { baud = 9600, data_bits = 8, parity = "none", stop_bits = 1, flow_control = "none" }
//! calibration = { readability_g = 0.0001 }
//! limits = { capacity_g = 220.0 }
//! ```
//!
//! A simulated unit (the `hil` rig) also says how fast its simulated time runs; the table is
//! absent on a real unit, which runs at 1.0:
//! ```toml
//! [simulation]
//! speed = 10.0                     # simulated seconds per real second, 1.0–100.0
//! ```
//!
//! An emergency stop's monitoring contact on a Modbus RTU digital-input module has no
//! calibration and no limits, only its wiring:
//! ```toml
//! [[device]]
//! name = "estop"
//! kind = "emergency-stop"
//! protocol = "modbus-di"
//! port = "/dev/galen/estop"
//! address = 1
//! input = 0                        # the discrete input the contact is wired to, 0–65535
//! contact = "normally-closed"      # or "normally-open" (then a broken wire reads released)
//! serial = { baud = 9600, data_bits = 8, parity = "none", stop_bits = 1 }
//! ```
//!
//! Protocol options: `safe_mode` (new-era), `echo` (wm520), `input` and `contact` (modbus-di,
//! both required: the wiring is not something to guess). Calibration: `readability_g`
//! (balances), `syringe_diameter_mm` (new-era, required), `ml_per_rev` (wm520, required),
//! `pulses_per_rev` (wm520), `decimals` (eurotherm, required: the display resolution that
//! scales every register). Limits: `capacity_g` (balances, required),
//! `max_rate_ml_min` and `max_volume_ml` (pumps, required), `min_temperature_c` and
//! `max_temperature_c` (heaters, required). Nothing that does not apply to the protocol is
//! accepted.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::estop::modbus_di::ModbusDiOptions;
use crate::estop::modbus_di::inputs::Contact;
use crate::heater::eurotherm::EurothermOptions;
use crate::link::{FlowControl, LinkPolicy, Parity, SerialSettings};
use crate::pump::PumpLimits;
use crate::pump::new_era::NewEraOptions;
use crate::pump::new_era::codec::Mode;
use crate::pump::wm520::Wm520Options;

/// A configuration file that cannot be used, and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {message}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The file is not valid TOML, or a field is unknown, missing or of the wrong type.
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said; prefixed with the key when the error is in a value.
        message: String,
    },
    /// A field has a value that is not allowed.
    #[error("{file}:{line}:{column}: `{field}`: {message}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Dotted path of the field, e.g. `device[1].limits.capacity_g`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// The kind of device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A balance.
    Balance,
    /// A pump.
    Pump,
    /// A heater's temperature controller.
    Heater,
    /// An emergency stop's monitoring contact.
    EmergencyStop,
}

/// The wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// Mettler Toledo MT-SICS.
    MtSics,
    /// Sartorius SBI.
    Sbi,
    /// New Era NE-1000.
    NewEra,
    /// Watson-Marlow 520.
    Wm520,
    /// Eurotherm 3216 over Modbus RTU.
    Eurotherm,
    /// A Modbus RTU digital-input module (function 0x02).
    ModbusDi,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MtSics => "mt-sics",
            Self::Sbi => "sbi",
            Self::NewEra => "new-era",
            Self::Wm520 => "wm520",
            Self::Eurotherm => "eurotherm",
            Self::ModbusDi => "modbus-di",
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnit {
    simulation: Option<Spanned<RawSimulation>>,
    device: Vec<Spanned<RawDevice>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSimulation {
    speed: Spanned<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    name: Spanned<String>,
    kind: Spanned<Kind>,
    protocol: Spanned<Protocol>,
    port: Spanned<String>,
    address: Option<Spanned<i64>>,
    timeout_ms: Option<Spanned<u64>>,
    safe_mode: Option<Spanned<bool>>,
    echo: Option<Spanned<bool>>,
    input: Option<Spanned<u16>>,
    contact: Option<Spanned<String>>,
    serial: Spanned<RawSerial>,
    #[serde(default)]
    calibration: RawCalibration,
    /// Required for every kind but the emergency stop, which has no limits.
    limits: Option<Spanned<RawLimits>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSerial {
    baud: Spanned<u32>,
    data_bits: Spanned<u8>,
    parity: Spanned<String>,
    stop_bits: Spanned<u8>,
    flow_control: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalibration {
    readability_g: Option<Spanned<f64>>,
    syringe_diameter_mm: Option<Spanned<f64>>,
    ml_per_rev: Option<Spanned<f64>>,
    pulses_per_rev: Option<Spanned<u32>>,
    decimals: Option<Spanned<u8>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    capacity_g: Option<Spanned<f64>>,
    max_rate_ml_min: Option<Spanned<f64>>,
    max_volume_ml: Option<Spanned<f64>>,
    min_temperature_c: Option<Spanned<f64>>,
    max_temperature_c: Option<Spanned<f64>>,
}

/// A validated unit configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitConfig {
    /// Present only on a simulated unit; its presence is what marks the unit as simulated.
    pub simulation: Option<Simulation>,
    /// Devices in file order, names unique.
    pub devices: Vec<DeviceConfig>,
}

/// How a simulated unit's time runs relative to real time.
///
/// Everything that times the instruments (a supervisor's clock, its timeouts for settling and
/// heating) must run at [`Simulation::speed`], or the simulated instruments look too fast.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Simulation {
    speed: f64,
}

/// A simulation speed outside [`Simulation::MIN_SPEED`]..=[`Simulation::MAX_SPEED`].
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("simulation speed {0} is not between 1 and 100 (simulated seconds per real second)")]
pub struct InvalidSpeed(pub f64);

impl Simulation {
    /// Real time: slower would only make tests and demos wait longer.
    pub const MIN_SPEED: f64 = 1.0;
    /// Beyond this a 10 ms tick is a second of plant time, and serial round trips (tens of
    /// milliseconds) become seconds: control loops would no longer see the physics they close.
    pub const MAX_SPEED: f64 = 100.0;

    /// A simulation at `speed` simulated seconds per real second.
    pub fn new(speed: f64) -> Result<Self, InvalidSpeed> {
        if speed.is_finite() && (Self::MIN_SPEED..=Self::MAX_SPEED).contains(&speed) {
            Ok(Self { speed })
        } else {
            Err(InvalidSpeed(speed))
        }
    }

    /// Simulated seconds per real second.
    pub fn speed(self) -> f64 {
        self.speed
    }
}

/// One validated device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConfig {
    /// Unique name.
    pub name: String,
    /// Port path.
    pub port: String,
    /// Line settings.
    pub serial: SerialSettings,
    /// Request timeout.
    pub timeout: Duration,
    /// Kind, protocol, calibration and limits.
    pub spec: DeviceSpec,
}

impl DeviceConfig {
    /// The link timing for this device.
    pub fn policy(&self) -> LinkPolicy {
        LinkPolicy { timeout: self.timeout, ..LinkPolicy::default() }
    }

    /// A connector for this device's port.
    pub fn connector(&self) -> crate::link::SerialConnector {
        crate::link::SerialConnector::new(self.port.clone(), self.serial)
    }
}

/// What a device is, with the settings its protocol needs.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceSpec {
    /// A balance.
    Balance {
        /// MT-SICS or SBI.
        protocol: BalanceProtocol,
        /// Capacity in grams: readings above are overloads.
        capacity_g: f64,
        /// Display step in grams, if configured.
        readability_g: Option<f64>,
    },
    /// A pump.
    Pump {
        /// New Era or Watson-Marlow, with options.
        protocol: PumpProtocol,
        /// Highest rate the supervisor may command, mL/min.
        max_rate_ml_min: f64,
        /// Largest volume in one dispense, mL.
        max_volume_ml: f64,
    },
    /// A heater controller.
    Heater {
        /// Eurotherm options.
        options: EurothermOptions,
        /// Lowest setpoint allowed, °C.
        min_c: f64,
        /// Highest setpoint allowed, °C.
        max_c: f64,
    },
    /// An emergency stop's monitoring contact.
    EmergencyStop {
        /// Module address and wiring.
        options: ModbusDiOptions,
    },
}

/// Balance protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalanceProtocol {
    /// MT-SICS.
    MtSics,
    /// SBI.
    Sbi,
}

/// Pump protocols with their options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PumpProtocol {
    /// New Era.
    NewEra(NewEraOptions),
    /// Watson-Marlow 520.
    Wm520(Wm520Options),
}

impl UnitConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { file: path.to_owned(), message: e.to_string() })?;
        Self::parse(&text, path)
    }

    /// Validates `text`, naming `file` in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let raw: RawUnit = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| position(text, s.start));
            let mut message = e.message().trim().to_owned();
            // The parser names unknown and missing fields, but not the key whose value has the
            // wrong type or variant: take it from the line.
            let key = text.lines().nth(line - 1).and_then(|l| {
                let (key, _) = l.split_once('=')?;
                (column > key.len()).then(|| key.trim().to_owned())
            });
            if let Some(key) = key.filter(|k| !message.contains(&format!("`{k}`"))) {
                message = format!("`{key}`: {message}");
            }
            ConfigError::Syntax { file: file.to_owned(), line, column, message }
        })?;
        let mut v = Validator { text, file, devices: Vec::new() };
        let simulation = raw
            .simulation
            .map(|table| {
                let speed = &table.get_ref().speed;
                Simulation::new(*speed.get_ref()).map_err(|_| {
                    v.invalid(
                        speed.span(),
                        "simulation.speed",
                        "must be a number from 1 to 100 (simulated seconds per real second)",
                    )
                })
            })
            .transpose()?;
        for (i, device) in raw.device.into_iter().enumerate() {
            let span = device.span();
            let device = v.device(i, device.into_inner())?;
            if v.devices.iter().any(|d: &DeviceConfig| d.name == device.name) {
                return Err(v.invalid(
                    span,
                    &format!("device[{i}].name"),
                    "a device of this name is already configured",
                ));
            }
            v.devices.push(device);
        }
        Ok(Self { simulation, devices: v.devices })
    }

    /// The device named `name`.
    pub fn device(&self, name: &str) -> Option<&DeviceConfig> {
        self.devices.iter().find(|d| d.name == name)
    }

    /// Simulated seconds per real second: 1.0 on a real unit.
    pub fn speed(&self) -> f64 {
        self.simulation.map_or(1.0, Simulation::speed)
    }
}

fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

struct Validator<'a> {
    text: &'a str,
    file: &'a Path,
    devices: Vec<DeviceConfig>,
}

impl Validator<'_> {
    fn invalid(&self, span: std::ops::Range<usize>, field: &str, message: &str) -> ConfigError {
        let (line, column) = position(self.text, span.start);
        ConfigError::Invalid {
            file: self.file.to_owned(),
            line,
            column,
            field: field.to_owned(),
            message: message.to_owned(),
        }
    }

    fn required<T: Copy>(
        &self,
        value: Option<&Spanned<T>>,
        at: std::ops::Range<usize>,
        field: &str,
        protocol: Protocol,
    ) -> Result<T, ConfigError> {
        value
            .map(|v| *v.get_ref())
            .ok_or_else(|| self.invalid(at, field, &format!("required for protocol {protocol}")))
    }

    fn not_for<T>(
        &self,
        value: Option<&Spanned<T>>,
        field: &str,
        protocol: Protocol,
    ) -> Result<(), ConfigError> {
        match value {
            Some(v) => Err(self.invalid(
                v.span(),
                field,
                &format!("does not apply to protocol {protocol}"),
            )),
            None => Ok(()),
        }
    }

    fn positive(&self, value: &Spanned<f64>, field: &str) -> Result<f64, ConfigError> {
        let v = *value.get_ref();
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(self.invalid(value.span(), field, "must be a positive number"))
        }
    }

    fn device(&self, i: usize, d: RawDevice) -> Result<DeviceConfig, ConfigError> {
        let f = |name: &str| format!("device[{i}].{name}");
        let protocol = *d.protocol.get_ref();
        let name = d.name.get_ref().trim().to_owned();
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(self.invalid(
                d.name.span(),
                &f("name"),
                "use letters, digits, '-' and '_'",
            ));
        }
        if d.port.get_ref().trim().is_empty() {
            return Err(self.invalid(d.port.span(), &f("port"), "must not be empty"));
        }
        let expected_kind = match protocol {
            Protocol::MtSics | Protocol::Sbi => Kind::Balance,
            Protocol::NewEra | Protocol::Wm520 => Kind::Pump,
            Protocol::Eurotherm => Kind::Heater,
            Protocol::ModbusDi => Kind::EmergencyStop,
        };
        if *d.kind.get_ref() != expected_kind {
            return Err(self.invalid(
                d.protocol.span(),
                &f("protocol"),
                &format!("{protocol} is not a protocol for a {:?}", d.kind.get_ref())
                    .to_lowercase(),
            ));
        }
        let serial = self.serial(i, d.serial.get_ref())?;
        let timeout_ms = d.timeout_ms.as_ref().map_or(1000, |t| *t.get_ref());
        if let Some(t) = &d.timeout_ms
            && !(10..=60_000).contains(t.get_ref())
        {
            return Err(self.invalid(t.span(), &f("timeout_ms"), "must be between 10 and 60000"));
        }
        let c = &d.calibration;
        let no_limits = RawLimits::default();
        let l = d.limits.as_ref().map_or(&no_limits, Spanned::get_ref);
        // Where a missing limit is reported: the limits table, or the device if it has none.
        let limits_at = d.limits.as_ref().map_or_else(|| d.name.span(), Spanned::span);
        if expected_kind != Kind::EmergencyStop && d.limits.is_none() {
            return Err(self.invalid(
                d.name.span(),
                &f("limits"),
                &format!("required for protocol {protocol}"),
            ));
        }
        if protocol != Protocol::ModbusDi {
            self.not_for(d.input.as_ref(), &f("input"), protocol)?;
            self.not_for(d.contact.as_ref(), &f("contact"), protocol)?;
        } else if let Some(limits) = &d.limits {
            return Err(self.invalid(
                limits.span(),
                &f("limits"),
                "does not apply to protocol modbus-di",
            ));
        }
        // Options and settings that belong to one protocol only.
        if protocol != Protocol::NewEra {
            self.not_for(d.safe_mode.as_ref(), &f("safe_mode"), protocol)?;
            self.not_for(
                c.syringe_diameter_mm.as_ref(),
                &f("calibration.syringe_diameter_mm"),
                protocol,
            )?;
        }
        if protocol != Protocol::Wm520 {
            self.not_for(d.echo.as_ref(), &f("echo"), protocol)?;
            self.not_for(c.ml_per_rev.as_ref(), &f("calibration.ml_per_rev"), protocol)?;
            self.not_for(c.pulses_per_rev.as_ref(), &f("calibration.pulses_per_rev"), protocol)?;
        }
        if protocol != Protocol::Eurotherm {
            self.not_for(c.decimals.as_ref(), &f("calibration.decimals"), protocol)?;
        }
        if expected_kind == Kind::EmergencyStop {
            let calibration = [
                c.readability_g.as_ref().map(Spanned::span),
                c.syringe_diameter_mm.as_ref().map(Spanned::span),
                c.ml_per_rev.as_ref().map(Spanned::span),
                c.pulses_per_rev.as_ref().map(Spanned::span),
                c.decimals.as_ref().map(Spanned::span),
            ];
            if let Some(at) = calibration.into_iter().flatten().next() {
                return Err(self.invalid(
                    at,
                    &f("calibration"),
                    "does not apply to protocol modbus-di",
                ));
            }
        }
        if expected_kind != Kind::Balance {
            self.not_for(c.readability_g.as_ref(), &f("calibration.readability_g"), protocol)?;
            self.not_for(l.capacity_g.as_ref(), &f("limits.capacity_g"), protocol)?;
        }
        if expected_kind != Kind::Pump {
            self.not_for(l.max_rate_ml_min.as_ref(), &f("limits.max_rate_ml_min"), protocol)?;
            self.not_for(l.max_volume_ml.as_ref(), &f("limits.max_volume_ml"), protocol)?;
        }
        if expected_kind != Kind::Heater {
            self.not_for(l.min_temperature_c.as_ref(), &f("limits.min_temperature_c"), protocol)?;
            self.not_for(l.max_temperature_c.as_ref(), &f("limits.max_temperature_c"), protocol)?;
        }
        let address = |lo: i64, hi: i64| -> Result<Option<u8>, ConfigError> {
            match &d.address {
                None => Ok(None),
                Some(a) if (lo..=hi).contains(a.get_ref()) => Ok(u8::try_from(*a.get_ref()).ok()),
                Some(a) => Err(self.invalid(
                    a.span(),
                    &f("address"),
                    &format!("must be between {lo} and {hi} for protocol {protocol}"),
                )),
            }
        };
        let name_at = d.name.span();
        let spec = match protocol {
            Protocol::MtSics | Protocol::Sbi => {
                self.not_for(d.address.as_ref(), &f("address"), protocol)?;
                let capacity = l.capacity_g.as_ref().ok_or_else(|| {
                    self.invalid(
                        limits_at.clone(),
                        &f("limits.capacity_g"),
                        &format!("required for protocol {protocol}"),
                    )
                })?;
                DeviceSpec::Balance {
                    protocol: if protocol == Protocol::MtSics {
                        BalanceProtocol::MtSics
                    } else {
                        BalanceProtocol::Sbi
                    },
                    capacity_g: self.positive(capacity, &f("limits.capacity_g"))?,
                    readability_g: c
                        .readability_g
                        .as_ref()
                        .map(|r| self.positive(r, &f("calibration.readability_g")))
                        .transpose()?,
                }
            }
            Protocol::NewEra | Protocol::Wm520 => {
                let rate = l.max_rate_ml_min.as_ref().ok_or_else(|| {
                    self.invalid(
                        limits_at.clone(),
                        &f("limits.max_rate_ml_min"),
                        &format!("required for protocol {protocol}"),
                    )
                })?;
                let volume = l.max_volume_ml.as_ref().ok_or_else(|| {
                    self.invalid(
                        limits_at.clone(),
                        &f("limits.max_volume_ml"),
                        &format!("required for protocol {protocol}"),
                    )
                })?;
                let pump = if protocol == Protocol::NewEra {
                    let dia = c.syringe_diameter_mm.as_ref().ok_or_else(|| {
                        self.invalid(
                            name_at.clone(),
                            &f("calibration.syringe_diameter_mm"),
                            "required for protocol new-era",
                        )
                    })?;
                    PumpProtocol::NewEra(NewEraOptions {
                        mode: if d.safe_mode.as_ref().is_some_and(|s| *s.get_ref()) {
                            Mode::Safe
                        } else {
                            Mode::Basic
                        },
                        address: address(0, 99)?,
                        syringe_diameter_mm: self
                            .positive(dia, &f("calibration.syringe_diameter_mm"))?,
                        limits: PumpLimits {
                            max_rate_ml_min: self.positive(rate, &f("limits.max_rate_ml_min"))?,
                            max_volume_ml: self.positive(volume, &f("limits.max_volume_ml"))?,
                        },
                    })
                } else {
                    let ml = c.ml_per_rev.as_ref().ok_or_else(|| {
                        self.invalid(
                            name_at.clone(),
                            &f("calibration.ml_per_rev"),
                            "required for protocol wm520",
                        )
                    })?;
                    let defaults = Wm520Options::default();
                    PumpProtocol::Wm520(Wm520Options {
                        address: address(1, 16)?.ok_or_else(|| {
                            self.invalid(
                                name_at.clone(),
                                &f("address"),
                                "required for protocol wm520",
                            )
                        })?,
                        echo: d.echo.as_ref().map_or(defaults.echo, |e| *e.get_ref()),
                        ml_per_rev: self.positive(ml, &f("calibration.ml_per_rev"))?,
                        pulses_per_rev: c
                            .pulses_per_rev
                            .as_ref()
                            .map_or(defaults.pulses_per_rev, |p| *p.get_ref()),
                        forward_is_clockwise: defaults.forward_is_clockwise,
                        limits: PumpLimits {
                            max_rate_ml_min: self.positive(rate, &f("limits.max_rate_ml_min"))?,
                            max_volume_ml: self.positive(volume, &f("limits.max_volume_ml"))?,
                        },
                    })
                };
                DeviceSpec::Pump {
                    protocol: pump,
                    max_rate_ml_min: self.positive(rate, &f("limits.max_rate_ml_min"))?,
                    max_volume_ml: self.positive(volume, &f("limits.max_volume_ml"))?,
                }
            }
            Protocol::Eurotherm => {
                let min = self.required(
                    l.min_temperature_c.as_ref(),
                    limits_at.clone(),
                    &f("limits.min_temperature_c"),
                    protocol,
                )?;
                let max = self.required(
                    l.max_temperature_c.as_ref(),
                    limits_at.clone(),
                    &f("limits.max_temperature_c"),
                    protocol,
                )?;
                if min.partial_cmp(&max) != Some(std::cmp::Ordering::Less) {
                    return Err(self.invalid(
                        limits_at,
                        &f("limits.max_temperature_c"),
                        "must be above min_temperature_c",
                    ));
                }
                // Required: registers hold values scaled by the display's decimals, and a wrong
                // guess misreads 80.0 °C as 800 °C or 8.0 °C. The 3216 integer map gives no
                // address for the decimal-point setting in the reference, so it is not read back.
                let decimals = self.required(
                    c.decimals.as_ref(),
                    name_at.clone(),
                    &f("calibration.decimals"),
                    protocol,
                )?;
                if let Some(dec) = &c.decimals
                    && *dec.get_ref() > 3
                {
                    return Err(self.invalid(
                        dec.span(),
                        &f("calibration.decimals"),
                        "must be 0 to 3",
                    ));
                }
                DeviceSpec::Heater {
                    options: EurothermOptions {
                        address: address(1, 247)?.ok_or_else(|| {
                            self.invalid(
                                name_at.clone(),
                                &f("address"),
                                "required for protocol eurotherm",
                            )
                        })?,
                        decimals,
                        output_decimals: 1,
                        min_c: min,
                        max_c: max,
                    },
                    min_c: min,
                    max_c: max,
                }
            }
            Protocol::ModbusDi => {
                let input =
                    self.required(d.input.as_ref(), name_at.clone(), &f("input"), protocol)?;
                let contact = d.contact.as_ref().ok_or_else(|| {
                    self.invalid(name_at.clone(), &f("contact"), "required for protocol modbus-di")
                })?;
                let contact = match contact.get_ref().as_str() {
                    "normally-closed" => Contact::NormallyClosed,
                    "normally-open" => Contact::NormallyOpen,
                    _ => {
                        return Err(self.invalid(
                            contact.span(),
                            &f("contact"),
                            "must be \"normally-closed\" or \"normally-open\"",
                        ));
                    }
                };
                DeviceSpec::EmergencyStop {
                    options: ModbusDiOptions {
                        address: address(1, 247)?.ok_or_else(|| {
                            self.invalid(
                                name_at.clone(),
                                &f("address"),
                                "required for protocol modbus-di",
                            )
                        })?,
                        input,
                        contact,
                    },
                }
            }
        };
        Ok(DeviceConfig {
            name,
            port: d.port.get_ref().clone(),
            serial,
            timeout: Duration::from_millis(timeout_ms),
            spec,
        })
    }

    fn serial(&self, i: usize, s: &RawSerial) -> Result<SerialSettings, ConfigError> {
        let f = |name: &str| format!("device[{i}].serial.{name}");
        const BAUDS: [u32; 8] = [1200, 2400, 4800, 9600, 19200, 38400, 57600, 115_200];
        if !BAUDS.contains(s.baud.get_ref()) {
            return Err(self.invalid(
                s.baud.span(),
                &f("baud"),
                "must be one of 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200",
            ));
        }
        if !matches!(s.data_bits.get_ref(), 7 | 8) {
            return Err(self.invalid(s.data_bits.span(), &f("data_bits"), "must be 7 or 8"));
        }
        if !matches!(s.stop_bits.get_ref(), 1 | 2) {
            return Err(self.invalid(s.stop_bits.span(), &f("stop_bits"), "must be 1 or 2"));
        }
        let parity = match s.parity.get_ref().as_str() {
            "none" => Parity::None,
            "odd" => Parity::Odd,
            "even" => Parity::Even,
            _ => {
                return Err(self.invalid(
                    s.parity.span(),
                    &f("parity"),
                    "must be \"none\", \"odd\" or \"even\"",
                ));
            }
        };
        let flow_control = match s.flow_control.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
            None | Some(("none", _)) => FlowControl::None,
            Some(("hardware", _)) => FlowControl::Hardware,
            Some(("software", _)) => FlowControl::Software,
            Some((_, span)) => {
                return Err(self.invalid(
                    span,
                    &f("flow_control"),
                    "must be \"none\", \"hardware\" or \"software\"",
                ));
            }
        };
        Ok(SerialSettings {
            baud: *s.baud.get_ref(),
            data_bits: *s.data_bits.get_ref(),
            parity,
            stop_bits: *s.stop_bits.get_ref(),
            flow_control,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[device]]
name = "balance"
kind = "balance"
protocol = "mt-sics"
port = "/dev/ttyUSB0"
serial = { baud = 9600, data_bits = 8, parity = "none", stop_bits = 1 }
calibration = { readability_g = 0.0001 }
limits = { capacity_g = 220.0 }

[[device]]
name = "syringe"
kind = "pump"
protocol = "new-era"
port = "/dev/ttyUSB1"
address = 0
safe_mode = true
serial = { baud = 19200, data_bits = 8, parity = "none", stop_bits = 1 }
calibration = { syringe_diameter_mm = 14.43 }
limits = { max_rate_ml_min = 10.0, max_volume_ml = 50.0 }

[[device]]
name = "peristaltic"
kind = "pump"
protocol = "wm520"
port = "/dev/ttyUSB2"
address = 1
echo = true
serial = { baud = 9600, data_bits = 8, parity = "none", stop_bits = 2 }
calibration = { ml_per_rev = 1.6 }
limits = { max_rate_ml_min = 300.0, max_volume_ml = 1000.0 }

[[device]]
name = "heater"
kind = "heater"
protocol = "eurotherm"
port = "/dev/ttyUSB3"
address = 1
timeout_ms = 500
serial = { baud = 9600, data_bits = 8, parity = "none", stop_bits = 1 }
calibration = { decimals = 1 }
limits = { min_temperature_c = 5.0, max_temperature_c = 80.0 }

[[device]]
name = "estop"
kind = "emergency-stop"
protocol = "modbus-di"
port = "/dev/galen/estop"
address = 2
input = 3
contact = "normally-closed"
serial = { baud = 9600, data_bits = 8, parity = "none", stop_bits = 1 }
"#;

    fn check(text: &str) -> String {
        match UnitConfig::parse(text, Path::new("unit.toml")) {
            Ok(config) => format!("ok: {} devices", config.devices.len()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_complete_file_validates() {
        let config = UnitConfig::parse(GOOD, Path::new("unit.toml")).unwrap();
        insta::assert_debug_snapshot!(config);
    }

    #[test]
    fn mistakes_are_named_with_file_line_and_field() {
        let cases = [
            ("typo in a field name", GOOD.replacen("protocol = \"mt-sics\"", "protocl = \"mt-sics\"", 1)),
            ("unknown protocol", GOOD.replacen("\"mt-sics\"", "\"mt-sisc\"", 1)),
            ("protocol of another kind", GOOD.replacen("protocol = \"mt-sics\"", "protocol = \"new-era\"", 1)),
            ("missing capacity", GOOD.replacen("limits = { capacity_g = 220.0 }", "limits = {}", 1)),
            ("bad baud rate", GOOD.replacen("baud = 19200", "baud = 19201", 1)),
            ("bad parity", GOOD.replacen("parity = \"none\", stop_bits = 2", "parity = \"nnoe\", stop_bits = 2", 1)),
            ("option of another protocol", GOOD.replacen("echo = true", "safe_mode = true", 1)),
            ("calibration of another protocol", GOOD.replacen("{ ml_per_rev = 1.6 }", "{ syringe_diameter_mm = 1.6 }", 1)),
            ("address out of range", GOOD.replacen("address = 1\necho", "address = 17\necho", 1)),
            ("duplicate name", GOOD.replacen("name = \"heater\"", "name = \"balance\"", 1)),
            ("wrong type", GOOD.replacen("timeout_ms = 500", "timeout_ms = \"500\"", 1)),
            ("inverted temperature limits", GOOD.replacen("min_temperature_c = 5.0", "min_temperature_c = 90.0", 1)),
            ("negative capacity", GOOD.replacen("capacity_g = 220.0", "capacity_g = -1.0", 1)),
            ("missing eurotherm decimals", GOOD.replacen("calibration = { decimals = 1 }\n", "", 1)),
            ("eurotherm decimals out of range", GOOD.replacen("decimals = 1", "decimals = 4", 1)),
            ("limits on an emergency stop", GOOD.replacen("input = 3\n", "input = 3\nlimits = {}\n", 1)),
            ("emergency stop without its contact", GOOD.replacen("contact = \"normally-closed\"\n", "", 1)),
            ("emergency stop contact misspelt", GOOD.replacen("\"normally-closed\"", "\"nc\"", 1)),
            ("emergency stop without its input", GOOD.replacen("input = 3\n", "", 1)),
            ("emergency stop with a calibration", GOOD.replacen("input = 3\n", "input = 3\ncalibration = { decimals = 1 }\n", 1)),
            ("contact on a heater", GOOD.replacen("calibration = { decimals = 1 }", "contact = \"normally-open\"\ncalibration = { decimals = 1 }", 1)),
            ("heater without limits", GOOD.replacen("limits = { min_temperature_c = 5.0, max_temperature_c = 80.0 }\n", "", 1)),
            ("missing serial settings", GOOD.replacen("serial = { baud = 9600, data_bits = 8, parity = \"none\", stop_bits = 1 }\ncalibration", "calibration", 1)),
        ];
        let report: String = cases
            .iter()
            .map(|(what, text)| {
                assert_ne!(text, GOOD, "{what}: the edit did not apply");
                format!("{what}:\n  {}\n", check(text).replace('\n', "\n  "))
            })
            .collect();
        insta::assert_snapshot!(report);
    }

    #[test]
    fn a_real_unit_runs_at_real_time_and_a_simulated_one_says_its_speed() {
        let real = UnitConfig::parse(GOOD, Path::new("unit.toml")).unwrap();
        assert_eq!((real.simulation, real.speed()), (None, 1.0));
        let text = format!("[simulation]\nspeed = 12.5\n{GOOD}");
        let simulated = UnitConfig::parse(&text, Path::new("unit.toml")).unwrap();
        assert_eq!(simulated.simulation.map(Simulation::speed), Some(12.5));
        assert_eq!(simulated.speed(), 12.5);
        assert_eq!(simulated.devices, real.devices);
        // After the devices, as a TOML writer may put it.
        let text = format!("{GOOD}\n[simulation]\nspeed = 1.0\n");
        assert_eq!(UnitConfig::parse(&text, Path::new("unit.toml")).unwrap().speed(), 1.0);
    }

    #[test]
    fn simulation_speeds_are_checked_where_they_are_written() {
        let cases = [
            ("slower than real time", "speed = 0.5"),
            ("too fast", "speed = 100.5"),
            ("not a number", "speed = nan"),
            ("infinite", "speed = inf"),
            ("wrong type", "speed = \"fast\""),
            ("typo", "sped = 10.0"),
            ("missing", ""),
        ];
        let report: String = cases
            .iter()
            .map(|(what, line)| {
                let text = format!("[simulation]\n{line}\n{GOOD}");
                format!("{what}:\n  {}\n", check(&text).replace('\n', "\n  "))
            })
            .collect();
        insta::assert_snapshot!(report);
        for speed in [Simulation::MIN_SPEED, 10.0, Simulation::MAX_SPEED] {
            assert_eq!(Simulation::new(speed).map(Simulation::speed), Ok(speed));
        }
        assert_eq!(
            Simulation::new(0.0).unwrap_err().to_string(),
            "simulation speed 0 is not between 1 and 100 (simulated seconds per real second)"
        );
    }
}
