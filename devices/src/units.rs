//! Physical quantities exchanged with instruments, as newtypes with checking constructors.
//!
//! A number that reaches a driver has already been checked to be finite and in its physical
//! range, so no driver formats `NaN` or a negative flow onto the wire.

use std::fmt;

/// A quantity was not finite or outside its physical range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{what} must be {rule}, got {value}")]
pub struct QuantityError {
    /// Which quantity, e.g. "flow rate".
    pub what: &'static str,
    /// The rule it broke, e.g. "finite and not negative".
    pub rule: &'static str,
    /// The rejected value.
    pub value: f64,
}

macro_rules! non_negative {
    ($(#[$doc:meta])* $name:ident, $what:literal, $suffix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
        pub struct $name(f64);

        impl $name {
            /// Checks that `value` is finite and not negative.
            pub fn new(value: f64) -> Result<Self, QuantityError> {
                if value.is_finite() && value >= 0.0 {
                    Ok(Self(value))
                } else {
                    Err(QuantityError { what: $what, rule: "finite and not negative", value })
                }
            }

            /// The value in this type's unit.
            pub fn get(self) -> f64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{} {}", three_places(self.0), $suffix)
            }
        }
    };
}

/// At most three decimals, trailing zeros dropped: `0.0890092879` reads as `0.089`, `6` as `6`.
fn three_places(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".to_owned() } else { s.to_owned() }
}

non_negative!(
    /// A volumetric flow in millilitres per minute.
    FlowRate,
    "flow rate",
    "mL/min"
);
non_negative!(
    /// A volume in millilitres.
    Volume,
    "volume",
    "mL"
);

/// A temperature in degrees Celsius, at or above absolute zero.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Celsius(f64);

impl Celsius {
    /// Checks that `value` is finite and not below absolute zero.
    pub fn new(value: f64) -> Result<Self, QuantityError> {
        if value.is_finite() && value >= -273.15 {
            Ok(Self(value))
        } else {
            Err(QuantityError { what: "temperature", rule: "finite and above -273.15", value })
        }
    }

    /// Degrees Celsius.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl fmt::Display for Celsius {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} °C", self.0)
    }
}

/// A controller output in percent of full power: 0–100 heating, negative for a controller
/// that also cools (down to -100).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Percent(f64);

impl Percent {
    /// Checks that `value` is within -100..=100.
    pub fn new(value: f64) -> Result<Self, QuantityError> {
        if (-100.0..=100.0).contains(&value) {
            Ok(Self(value))
        } else {
            Err(QuantityError { what: "output", rule: "within -100 and 100", value })
        }
    }

    /// Percent.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} %", self.0)
    }
}

/// The unit a balance reports weights in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightUnit {
    /// g
    Gram,
    /// mg
    Milligram,
    /// kg
    Kilogram,
}

impl WeightUnit {
    /// The symbol balances print.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Gram => "g",
            Self::Milligram => "mg",
            Self::Kilogram => "kg",
        }
    }

    /// Parses a printed symbol; balances print units in lower case.
    pub fn from_symbol(symbol: &str) -> Option<Self> {
        match symbol {
            "g" => Some(Self::Gram),
            "mg" => Some(Self::Milligram),
            "kg" => Some(Self::Kilogram),
            _ => None,
        }
    }

    /// How many grams one of this unit is.
    pub fn grams(self) -> f64 {
        match self {
            Self::Gram => 1.0,
            Self::Milligram => 0.001,
            Self::Kilogram => 1000.0,
        }
    }
}

/// A weight as the balance printed it: a signed value (net weights can be negative) and a unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weight {
    /// The printed value.
    pub value: f64,
    /// The printed unit.
    pub unit: WeightUnit,
}

impl Weight {
    /// A weight in grams.
    pub fn grams(value: f64) -> Self {
        Self { value, unit: WeightUnit::Gram }
    }

    /// The weight converted to grams.
    pub fn in_grams(self) -> f64 {
        self.value * self.unit.grams()
    }
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.value, self.unit.symbol())
    }
}

/// Whether the balance considered the reading settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stability {
    /// The balance's stability criterion was met.
    Stable,
    /// The value was still moving (MT-SICS `D`, SBI blank unit).
    Dynamic,
}

/// One weight reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// The net weight.
    pub weight: Weight,
    /// Settled or still moving.
    pub stability: Stability,
}

impl fmt::Display for Reading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self.stability {
            Stability::Stable => "stable",
            Stability::Dynamic => "dynamic",
        };
        write!(f, "{} ({s})", self.weight)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantities_show_at_most_three_decimals() {
        assert_eq!(Volume::new(0.089_009_287_925_696_6).unwrap().to_string(), "0.089 mL");
        assert_eq!(FlowRate::new(6.0).unwrap().to_string(), "6 mL/min");
        assert_eq!(Volume::new(10.0).unwrap().to_string(), "10 mL");
        assert_eq!(Volume::new(0.0004).unwrap().to_string(), "0 mL");
    }

    use super::*;

    #[test]
    fn quantities_reject_what_cannot_be_sent() {
        assert_eq!(FlowRate::new(1.5).map(FlowRate::get), Ok(1.5));
        let err = FlowRate::new(-0.1).unwrap_err();
        assert_eq!(err.to_string(), "flow rate must be finite and not negative, got -0.1");
        assert!(Volume::new(f64::NAN).is_err());
        assert!(Celsius::new(-300.0).is_err());
        assert_eq!(Celsius::new(-20.0).map(Celsius::get), Ok(-20.0));
    }

    #[test]
    fn weights_convert_to_grams() {
        let w = Weight { value: 1.25, unit: WeightUnit::Kilogram };
        assert!((w.in_grams() - 1250.0).abs() < 1e-9);
        assert_eq!(WeightUnit::from_symbol("mg"), Some(WeightUnit::Milligram));
        assert_eq!(WeightUnit::from_symbol("lb"), None);
    }
}
