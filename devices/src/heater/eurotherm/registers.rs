//! The Eurotherm 3216 register map (HA028651 §15.5) and its scaling: pure.
//!
//! Registers hold 16-bit integers scaled by the displayed resolution: 23.5 °C with one decimal
//! reads 235; negative values are two's complement. (IEEE floats at `0x8000 + 2 × address` are
//! not used: the integer map is what every firmware has.)
//!
//! Target setpoint (2) and setpoints 1/2 (24/25) are kept in EEPROM, good for about 100 000
//! writes: written once a second they wear out in a day. The driver therefore writes the
//! comms ("remote") setpoint 26, enabled through 276, and can only express writes through
//! [`Writable`], which has no EEPROM-backed member.

/// PV.IN: process value (read; written only through 203 for test).
pub const PV_IN: u16 = 1;
/// TG.SP: target setpoint (EEPROM).
pub const TG_SP: u16 = 2;
/// MAN.OP: manual output.
pub const MAN_OP: u16 = 3;
/// WRK.OP: working output, percent.
pub const WRK_OP: u16 = 4;
/// WKG.SP: working setpoint (read-only).
pub const WKG_SP: u16 = 5;
/// PB: proportional band.
pub const PB: u16 = 6;
/// Ti: integral time, seconds.
pub const TI: u16 = 8;
/// RNG.LO: range low.
pub const RNG_LO: u16 = 11;
/// RNG.HI: range high.
pub const RNG_HI: u16 = 12;
/// SP1 (EEPROM).
pub const SP1: u16 = 24;
/// SP2 (EEPROM).
pub const SP2: u16 = 25;
/// Rm.SP: the comms setpoint, safe to write often.
pub const RM_SP: u16 = 26;
/// StAt: the status word.
pub const STATUS: u16 = 75;
/// A-M: 0 automatic, 1 manual.
pub const AUTO_MAN: u16 = 273;
/// Enables the comms setpoint (1).
pub const RM_SP_ENABLE: u16 = 276;

/// Registers that live in EEPROM and must never be written continuously.
pub const EEPROM_BACKED: [u16; 3] = [TG_SP, SP1, SP2];

/// The only registers the driver writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writable {
    /// 26: the comms setpoint.
    RemoteSetpoint,
    /// 276: enables the comms setpoint.
    RemoteSetpointEnable,
    /// 273: automatic (0) or manual (1).
    AutoManual,
    /// 3: manual output, written once when disabling.
    ManualOutput,
}

impl Writable {
    /// The register address.
    pub fn address(self) -> u16 {
        match self {
            Self::RemoteSetpoint => RM_SP,
            Self::RemoteSetpointEnable => RM_SP_ENABLE,
            Self::AutoManual => AUTO_MAN,
            Self::ManualOutput => MAN_OP,
        }
    }
}

/// Status word bits (register 75).
pub mod status {
    /// B0–B3: alarms 1–4.
    pub const ALARMS: [u16; 4] = [1 << 0, 1 << 1, 1 << 2, 1 << 3];
    /// B4: manual mode.
    pub const MANUAL: u16 = 1 << 4;
    /// B5: sensor break.
    pub const SENSOR_BREAK: u16 = 1 << 5;
    /// B6: loop break.
    pub const LOOP_BREAK: u16 = 1 << 6;
    /// B10: PV over-range.
    pub const PV_OVER_RANGE: u16 = 1 << 10;
    /// B12: new alarm.
    pub const NEW_ALARM: u16 = 1 << 12;
    /// B14: remote setpoint fail.
    pub const REMOTE_SP_FAIL: u16 = 1 << 14;
}

/// Scales a value for a register with `decimals` decimals; `None` if it does not fit.
pub fn to_register(value: f64, decimals: u8) -> Option<u16> {
    let scaled = (value * 10f64.powi(i32::from(decimals))).round();
    if !(f64::from(i16::MIN)..=f64::from(i16::MAX)).contains(&scaled) {
        return None;
    }
    // In i16 range, checked above.
    #[allow(clippy::cast_possible_truncation)]
    let word = scaled as i16;
    Some(u16::from_ne_bytes(word.to_ne_bytes()))
}

/// Unscales a register with `decimals` decimals.
pub fn from_register(word: u16, decimals: u8) -> f64 {
    f64::from(i16::from_ne_bytes(word.to_ne_bytes())) / 10f64.powi(i32::from(decimals))
}

/// Decodes the status word.
pub fn decode_status(word: u16) -> crate::heater::HeaterStatus {
    crate::heater::HeaterStatus {
        alarms: status::ALARMS.map(|bit| word & bit != 0),
        sensor_break: word & status::SENSOR_BREAK != 0,
        loop_break: word & status::LOOP_BREAK != 0,
        manual: word & status::MANUAL != 0,
        pv_over_range: word & status::PV_OVER_RANGE != 0,
        remote_setpoint_fail: word & status::REMOTE_SP_FAIL != 0,
        raw: word,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_matches_the_manual() {
        // "23.5 °C with one decimal reads 235".
        assert_eq!(to_register(23.5, 1), Some(235));
        assert!((from_register(235, 1) - 23.5).abs() < 1e-9);
        assert_eq!(to_register(-5.0, 1), Some(0xFFCE));
        assert!((from_register(0xFFCE, 1) + 5.0).abs() < 1e-9);
        assert_eq!(to_register(4000.0, 1), None);
    }

    #[test]
    fn status_bits() {
        let s = decode_status(0b0000_0000_0110_0001);
        assert_eq!(s.alarms, [true, false, false, false]);
        assert!(s.sensor_break && s.loop_break && !s.manual);
        assert!(!EEPROM_BACKED.contains(&Writable::RemoteSetpoint.address()));
        for w in [
            Writable::RemoteSetpoint,
            Writable::RemoteSetpointEnable,
            Writable::AutoManual,
            Writable::ManualOutput,
        ] {
            assert!(!EEPROM_BACKED.contains(&w.address()), "{w:?}");
        }
    }
}
