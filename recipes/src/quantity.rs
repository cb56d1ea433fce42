//! Exact quantities: a fixed-point decimal and the unit newtypes built on it.
//!
//! # Arithmetic rules
//! Every quantity is an integer count of micro-units (10⁻⁶ of its unit: µg for grams, nL for
//! millilitres, µ°C, and so on) in an `i64`. Authors write plain decimals; more than six decimal
//! places is an error, never a silent rounding. Products and quotients are computed in `i128`
//! and rounded once, **half away from zero**, back to micro-units; a result that does not fit is
//! an error. Nothing here uses floating point for a value a record depends on: a TOML float is
//! turned back into its shortest decimal text (the text the author typed) before parsing.
//!
//! Each unit newtype has a checking constructor with physical plausibility limits; recipes add
//! their own, tighter manufacturer bounds on top (see `model::Bounded`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Micro-units per unit.
const SCALE: i64 = 1_000_000;

/// A decimal with exactly six fractional digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Fixed(i64);

/// Why a decimal could not be read or computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FixedError {
    /// The text is not a plain decimal number.
    #[error("`{0}` is not a decimal number")]
    NotANumber(String),
    /// More than six digits after the point.
    #[error("`{0}` has more than 6 decimal places")]
    TooPrecise(String),
    /// The value or a result does not fit.
    #[error("number out of range")]
    Overflow,
    /// Division by zero.
    #[error("division by zero")]
    DivisionByZero,
}

impl Fixed {
    /// Zero.
    pub const ZERO: Fixed = Fixed(0);
    /// One.
    pub const ONE: Fixed = Fixed(SCALE);

    /// From a count of micro-units.
    pub const fn from_micros(micros: i64) -> Self {
        Fixed(micros)
    }

    /// From a whole number.
    pub const fn from_int(n: i32) -> Self {
        // i32 * 10^6 always fits in i64.
        Fixed(n as i64 * SCALE)
    }

    /// The count of micro-units.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// Parses `-12.5`, `3`, `0.000001`. Exponents are refused: authors write plain decimals.
    pub fn parse(text: &str) -> Result<Self, FixedError> {
        let t = text.trim();
        let bad = || FixedError::NotANumber(text.to_owned());
        let (negative, digits) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        if !int_part.bytes().all(|b| b.is_ascii_digit())
            || !frac_part.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let frac_trimmed = frac_part.trim_end_matches('0');
        if frac_trimmed.len() > 6 {
            return Err(FixedError::TooPrecise(text.to_owned()));
        }
        let int: i64 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| FixedError::Overflow)?
        };
        let mut frac: i64 = 0;
        for (i, b) in frac_trimmed.bytes().enumerate() {
            frac += i64::from(b - b'0') * 10_i64.pow(5 - u32::try_from(i).unwrap_or(5));
        }
        let magnitude =
            int.checked_mul(SCALE).and_then(|v| v.checked_add(frac)).ok_or(FixedError::Overflow)?;
        Ok(Fixed(if negative { -magnitude } else { magnitude }))
    }

    /// A float as written by an author: its shortest round-trip text is what they typed.
    pub fn from_f64_text(value: f64) -> Result<Self, FixedError> {
        if !value.is_finite() {
            return Err(FixedError::NotANumber(value.to_string()));
        }
        // `{}` on f64 never uses an exponent and prints the shortest text that round-trips.
        Fixed::parse(&format!("{value}"))
    }

    /// `self × other`, rounded half away from zero.
    pub fn checked_mul(self, other: Fixed) -> Result<Fixed, FixedError> {
        let wide = i128::from(self.0) * i128::from(other.0);
        Self::narrow(div_round(wide, i128::from(SCALE)))
    }

    /// `self ÷ other`, rounded half away from zero.
    pub fn checked_div(self, other: Fixed) -> Result<Fixed, FixedError> {
        if other.0 == 0 {
            return Err(FixedError::DivisionByZero);
        }
        let wide = i128::from(self.0) * i128::from(SCALE);
        Self::narrow(div_round(wide, i128::from(other.0)))
    }

    /// `self + other`.
    pub fn checked_add(self, other: Fixed) -> Result<Fixed, FixedError> {
        self.0.checked_add(other.0).map(Fixed).ok_or(FixedError::Overflow)
    }

    /// `self − other`.
    pub fn checked_sub(self, other: Fixed) -> Result<Fixed, FixedError> {
        self.0.checked_sub(other.0).map(Fixed).ok_or(FixedError::Overflow)
    }

    /// Rounds half away from zero to `places` decimals (0–6).
    pub fn round_to(self, places: u32) -> Fixed {
        let places = places.min(6);
        let step = 10_i64.pow(6 - places);
        let rounded = div_round(i128::from(self.0), i128::from(step)) * i128::from(step);
        // |rounded| ≤ |self| + step/2 < i64::MAX for any value we accept.
        Fixed(i64::try_from(rounded).unwrap_or(self.0))
    }

    fn narrow(v: i128) -> Result<Fixed, FixedError> {
        i64::try_from(v).map(Fixed).map_err(|_| FixedError::Overflow)
    }
}

/// Integer division rounding half away from zero.
fn div_round(n: i128, d: i128) -> i128 {
    let q = n / d;
    let r = n % d;
    if 2 * r.abs() >= d.abs() { if (n < 0) == (d < 0) { q + 1 } else { q - 1 } } else { q }
}

impl fmt::Display for Fixed {
    /// Shortest exact text: `2`, `0.5`, `-12.125`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let int = abs / 1_000_000;
        let frac = abs % 1_000_000;
        if frac == 0 {
            write!(f, "{sign}{int}")
        } else {
            let digits = format!("{frac:06}");
            write!(f, "{sign}{int}.{}", digits.trim_end_matches('0'))
        }
    }
}

impl fmt::Debug for Fixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Fixed {
    /// As a decimal string: JSON numbers would invite float parsing by readers of the record.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fixed {
    /// From the decimal string it is recorded as, through the parser authors' text goes through.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Fixed::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A value outside what the unit can physically mean on this appliance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value} {unit} is outside {min}–{max} {unit}")]
pub struct OutOfRange {
    /// The value offered.
    pub value: Fixed,
    /// Its unit.
    pub unit: &'static str,
    /// Lowest allowed.
    pub min: Fixed,
    /// Highest allowed.
    pub max: Fixed,
}

macro_rules! unit {
    ($(#[$doc:meta])* $name:ident, $unit:literal, $min:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize)]
        #[serde(transparent)]
        pub struct $name(Fixed);

        impl $name {
            /// The unit symbol.
            pub const UNIT: &'static str = $unit;
            /// Lowest value the type admits.
            pub const MIN: Fixed = $min;
            /// Highest value the type admits.
            pub const MAX: Fixed = $max;

            /// Checks the value against the type's physical limits.
            pub fn new(value: Fixed) -> Result<Self, OutOfRange> {
                if value < Self::MIN || value > Self::MAX {
                    return Err(OutOfRange { value, unit: $unit, min: Self::MIN, max: Self::MAX });
                }
                Ok(Self(value))
            }

            /// The number in this unit.
            pub const fn value(self) -> Fixed {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{} {}", self.0, $unit)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            /// Read back from a record: checked like any new value, never clamped.
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Self::new(Fixed::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }
    };
}

unit!(
    /// A mass in grams (0 to 10 kg: the largest balance a unit carries).
    Mass, "g", Fixed::ZERO, Fixed::from_int(10_000)
);
unit!(
    /// A volume in millilitres (0 to 5 L).
    Volume, "mL", Fixed::ZERO, Fixed::from_int(5_000)
);
unit!(
    /// A temperature in degrees Celsius (−40 to 150 °C).
    Temperature, "°C", Fixed::from_int(-40), Fixed::from_int(150)
);
unit!(
    /// A duration in seconds (0 to 7 days).
    Seconds, "s", Fixed::ZERO, Fixed::from_int(604_800)
);
unit!(
    /// A flow rate in millilitres per minute (0 to 2 L/min).
    Rate, "mL/min", Fixed::ZERO, Fixed::from_int(2_000)
);
unit!(
    /// A temperature ramp in degrees Celsius per minute (0 to 20 °C/min).
    Ramp, "°C/min", Fixed::ZERO, Fixed::from_int(20)
);
unit!(
    /// A mixer speed in revolutions per minute.
    Speed, "rpm", Fixed::ZERO, Fixed::from_int(3_000)
);
unit!(
    /// An amount of drug in milligrams (up to 1 kg).
    Milligrams, "mg", Fixed::ZERO, Fixed::from_int(1_000_000)
);
unit!(
    /// A concentration of drug per gram of material, in mg/g (pure substance is 1000).
    MgPerGram, "mg/g", Fixed::ZERO, Fixed::from_int(1_000)
);
unit!(
    /// A concentration of drug per millilitre of product, in mg/mL.
    MgPerMl, "mg/mL", Fixed::ZERO, Fixed::from_int(1_000)
);
unit!(
    /// A density in g/mL.
    Density, "g/mL", Fixed::ZERO, Fixed::from_int(25)
);
unit!(
    /// A body weight in kilograms.
    BodyWeight, "kg", Fixed::ZERO, Fixed::from_int(500)
);
unit!(
    /// A dose per kilogram of body weight, in mg/kg.
    MgPerKg, "mg/kg", Fixed::ZERO, Fixed::from_int(1_000)
);
unit!(
    /// A multiplier applied to a dose (0 to 2; 1 is the unadjusted dose).
    Factor, "×", Fixed::ZERO, Fixed::from_int(2)
);

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_parse(text: &str, micros: i64, shown: &str) {
        let v = Fixed::parse(text).unwrap();
        assert_eq!(v.micros(), micros, "{text}");
        assert_eq!(v.to_string(), shown, "{text}");
    }

    #[test]
    fn decimals_parse_exactly() {
        check_parse("2", 2_000_000, "2");
        check_parse("0.1", 100_000, "0.1");
        check_parse("-12.125", -12_125_000, "-12.125");
        check_parse(".5", 500_000, "0.5");
        check_parse("0.000001", 1, "0.000001");
        check_parse("3.1400000", 3_140_000, "3.14");
    }

    #[test]
    fn bad_decimals_are_refused() {
        assert_eq!(Fixed::parse("1e3"), Err(FixedError::NotANumber("1e3".into())));
        assert_eq!(Fixed::parse("0.0000001"), Err(FixedError::TooPrecise("0.0000001".into())));
        assert_eq!(Fixed::parse("-"), Err(FixedError::NotANumber("-".into())));
        assert_eq!(Fixed::parse("99999999999999999"), Err(FixedError::Overflow));
    }

    #[test]
    fn floats_come_back_as_the_text_the_author_typed() {
        assert_eq!(Fixed::from_f64_text(0.1).unwrap().micros(), 100_000);
        assert_eq!(Fixed::from_f64_text(72.35).unwrap().to_string(), "72.35");
    }

    #[test]
    fn products_round_half_away_from_zero() {
        let third = Fixed::ONE.checked_div(Fixed::from_int(3)).unwrap();
        assert_eq!(third.micros(), 333_333);
        let two_thirds = Fixed::from_int(2).checked_div(Fixed::from_int(3)).unwrap();
        assert_eq!(two_thirds.micros(), 666_667);
        let half_micro = Fixed::from_micros(1).checked_mul(Fixed::parse("0.5").unwrap()).unwrap();
        assert_eq!(half_micro.micros(), 1);
        let neg = Fixed::from_micros(-1).checked_mul(Fixed::parse("0.5").unwrap()).unwrap();
        assert_eq!(neg.micros(), -1);
        assert_eq!(
            Fixed::parse("72.35").unwrap().checked_mul(Fixed::from_int(2)).unwrap().to_string(),
            "144.7"
        );
        assert_eq!(Fixed::parse("1.2345").unwrap().round_to(3).to_string(), "1.235");
        assert_eq!(Fixed::ONE.checked_div(Fixed::ZERO), Err(FixedError::DivisionByZero));
    }

    #[test]
    fn units_check_their_limits() {
        assert!(Temperature::new(Fixed::from_int(151)).is_err());
        assert!(Temperature::new(Fixed::from_int(-40)).is_ok());
        let err = Mass::new(Fixed::from_int(-1)).unwrap_err();
        assert_eq!(err.to_string(), "-1 g is outside 0–10000 g");
        assert_eq!(Mass::new(Fixed::parse("1.5").unwrap()).unwrap().to_string(), "1.5 g");
    }
}
