//! Conditions on the plant's state, as scenarios write them: `vessel_mass_g > 50`.
//!
//! # Format
//! `QUANTITY OP NUMBER`, where OP is `>` or `<` and QUANTITY is one of `time_s`,
//! `vessel_mass_g` (liquid in the vessel), `vessel_volume_ml`, `vessel_solids_g` (added by
//! hand), `vessel_temp_c`, `sensor_temp_c`, `balance_g` (what the balance senses, gross),
//! `ambient_c`, `syringe_ml`, `bottle_ml`. Evaluated against a [`Snapshot`], so it is pure.

use std::fmt;
use std::str::FromStr;

use super::Snapshot;

/// A quantity a condition can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    /// Plant time, s.
    TimeS,
    /// Liquid in the vessel, g.
    VesselMassG,
    /// Liquid in the vessel, mL.
    VesselVolumeMl,
    /// Solids added by hand, g.
    VesselSolidsG,
    /// Vessel temperature, °C.
    VesselTempC,
    /// Heater sensor reading, °C.
    SensorTempC,
    /// Balance load sensed (gross), g.
    BalanceG,
    /// Room temperature, °C.
    AmbientC,
    /// Left in the syringe, mL.
    SyringeMl,
    /// Left in the bottle, mL.
    BottleMl,
}

const NAMES: [(&str, Quantity); 10] = [
    ("time_s", Quantity::TimeS),
    ("vessel_mass_g", Quantity::VesselMassG),
    ("vessel_volume_ml", Quantity::VesselVolumeMl),
    ("vessel_solids_g", Quantity::VesselSolidsG),
    ("vessel_temp_c", Quantity::VesselTempC),
    ("sensor_temp_c", Quantity::SensorTempC),
    ("balance_g", Quantity::BalanceG),
    ("ambient_c", Quantity::AmbientC),
    ("syringe_ml", Quantity::SyringeMl),
    ("bottle_ml", Quantity::BottleMl),
];

impl Quantity {
    /// Its value in `s`.
    pub fn of(self, s: &Snapshot) -> f64 {
        match self {
            Self::TimeS => s.t_s,
            Self::VesselMassG => s.vessel_liquid_g,
            Self::VesselVolumeMl => s.vessel_liquid_ml,
            Self::VesselSolidsG => s.vessel_solids_g,
            Self::VesselTempC => s.vessel_temp_c,
            Self::SensorTempC => s.sensor_c,
            Self::BalanceG => s.balance_g,
            Self::AmbientC => s.ambient_c,
            Self::SyringeMl => s.syringe_ml,
            Self::BottleMl => s.bottle_ml,
        }
    }

    /// Its name in scenario files.
    pub fn name(self) -> &'static str {
        NAMES.iter().find(|(_, q)| *q == self).map_or("?", |(n, _)| n)
    }
}

/// Above or below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `>`.
    Above,
    /// `<`.
    Below,
}

/// `quantity > value` or `quantity < value`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Condition {
    /// What is tested.
    pub quantity: Quantity,
    /// How.
    pub comparison: Comparison,
    /// Against what.
    pub value: f64,
}

/// A condition that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("condition `{text}`: {message}")]
pub struct ConditionError {
    /// The text.
    pub text: String,
    /// What is wrong.
    pub message: String,
}

impl Condition {
    /// Whether it holds in `s`.
    pub fn holds(&self, s: &Snapshot) -> bool {
        let v = self.quantity.of(s);
        match self.comparison {
            Comparison::Above => v > self.value,
            Comparison::Below => v < self.value,
        }
    }
}

impl FromStr for Condition {
    type Err = ConditionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |message: String| ConditionError { text: text.to_owned(), message };
        let (at, comparison) = match (text.find('>'), text.find('<')) {
            (Some(i), None) => (i, Comparison::Above),
            (None, Some(i)) => (i, Comparison::Below),
            _ => return Err(err("write `QUANTITY > NUMBER` or `QUANTITY < NUMBER`".into())),
        };
        let name = text[..at].trim();
        let quantity =
            NAMES.iter().find(|(n, _)| *n == name).map(|(_, q)| *q).ok_or_else(|| {
                let known: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
                err(format!("unknown quantity `{name}` (known: {})", known.join(", ")))
            })?;
        let number = text[at + 1..].trim();
        let value = number
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| err(format!("`{number}` is not a number")))?;
        Ok(Self { quantity, comparison, value })
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.comparison {
            Comparison::Above => '>',
            Comparison::Below => '<',
        };
        write!(f, "{} {op} {}", self.quantity.name(), self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expect: &str) {
        let got = match text.parse::<Condition>() {
            Ok(c) => format!("ok {c}"),
            Err(e) => format!("error {e}"),
        };
        assert_eq!(got, expect);
    }

    #[test]
    fn conditions_parse_or_say_why_not() {
        check("vessel_mass_g > 50", "ok vessel_mass_g > 50");
        check(" vessel_temp_c<37.5 ", "ok vessel_temp_c < 37.5");
        check(
            "mass > 50",
            "error condition `mass > 50`: unknown quantity `mass` (known: time_s, vessel_mass_g, vessel_volume_ml, vessel_solids_g, vessel_temp_c, sensor_temp_c, balance_g, ambient_c, syringe_ml, bottle_ml)",
        );
        check("time_s > soon", "error condition `time_s > soon`: `soon` is not a number");
        check(
            "time_s = 3",
            "error condition `time_s = 3`: write `QUANTITY > NUMBER` or `QUANTITY < NUMBER`",
        );
    }
}
