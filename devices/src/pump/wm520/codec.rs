//! Watson-Marlow 520/620/720 "historical basic protocol": a pure codec.
//!
//! # Format
//! Commands are `n<CMD>[args] CR` with `n` the pump number, 1–16 (`#` broadcasts, but never
//! with `RS`, `RT` or `ZY`): `nSPxxx.x` speed in rpm, `nGO`, `nST`, `nRR` clockwise, `nRL`
//! counter-clockwise, `nDOxxxx` set and run a dose of tacho pulses, `nRS` status, `nRT` read
//! the cumulative tacho count, `nTC` clear it, `nZY` running (`1`) or stopped (`0`). Leave at
//! least 10 ms between commands. Only `RS`, `RT` and `ZY` are answered; with echo on (the
//! serial default) the pump first echoes each command line.
//!
//! `RS` answers `[type] [ml/rev] [pumphead] [tube] [speed] [CW/CCW] P/N [number] [tacho]
//! [0/1] !`, e.g. `520Du 15.84 520R 9.6MM 220.0 CW P/N 1 123456789 1 !`. The gearbox output
//! shaft turns once per 10 982 tacho pulses (the 530 manual prints 10 892; configurable).
//!
//! Reply lines end in CR, LF or CR LF; the manuals do not say which, so all are accepted.

use std::fmt::Write as _;

use bytes::BytesMut;

use crate::codec::{Decode, DecodeError, take_line};

/// Longest line accepted.
pub const MAX_LINE: usize = 96;

/// A command.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Command {
    /// `SP`: speed in rpm, one decimal.
    Speed(f64),
    /// `GO`.
    Go,
    /// `ST`.
    Stop,
    /// `RR`: clockwise.
    Clockwise,
    /// `RL`: counter-clockwise.
    CounterClockwise,
    /// `DO`: set and run a dose of tacho pulses.
    Dose(u64),
    /// `RS`: status.
    Status,
    /// `RT`: read the cumulative tacho count.
    ReadTacho,
    /// `TC`: clear the tacho count.
    ClearTacho,
    /// `ZY`: running or stopped.
    Running,
}

impl Command {
    /// Whether the pump answers (besides the echo).
    pub fn has_reply(self) -> bool {
        matches!(self, Self::Status | Self::ReadTacho | Self::Running)
    }
}

/// Appends `n<CMD>[args] CR`.
pub fn encode_command(address: u8, command: Command, out: &mut BytesMut) {
    let _ = write!(out, "{address}");
    let _ = match command {
        Command::Speed(rpm) => write!(out, "SP{rpm:.1}"),
        Command::Go => write!(out, "GO"),
        Command::Stop => write!(out, "ST"),
        Command::Clockwise => write!(out, "RR"),
        Command::CounterClockwise => write!(out, "RL"),
        Command::Dose(pulses) => write!(out, "DO{pulses}"),
        Command::Status => write!(out, "RS"),
        Command::ReadTacho => write!(out, "RT"),
        Command::ClearTacho => write!(out, "TC"),
        Command::Running => write!(out, "ZY"),
    };
    out.extend_from_slice(b"\r");
}

/// Parses a command line (without CR) as the pump would: address and command.
pub fn parse_command(line: &[u8]) -> Option<(Option<u8>, Command)> {
    let text = std::str::from_utf8(line).ok().filter(|t| t.is_ascii())?.trim();
    let (address, rest) = if let Some(rest) = text.strip_prefix('#') {
        (None, rest)
    } else {
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        (Some(text[..digits].parse().ok()?), &text[digits..])
    };
    let (name, arg) = rest.split_at(rest.len().min(2));
    let command = match (name.to_ascii_uppercase().as_str(), arg.trim()) {
        ("SP", arg) => Command::Speed(arg.parse().ok().filter(|v: &f64| v.is_finite())?),
        ("GO", "") => Command::Go,
        ("ST", "") => Command::Stop,
        ("RR", "") => Command::Clockwise,
        ("RL", "") => Command::CounterClockwise,
        ("DO", arg) => Command::Dose(arg.split(',').next()?.trim().parse().ok()?),
        ("RS", "") => Command::Status,
        ("RT", "") => Command::ReadTacho,
        ("TC", "") => Command::ClearTacho,
        ("ZY", "") => Command::Running,
        _ => return None,
    };
    Some((address, command))
}

/// The `RS` status line, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// Pump type, e.g. `520Du`.
    pub pump_type: String,
    /// Calibrated mL per revolution.
    pub ml_per_rev: f64,
    /// Pumphead, e.g. `520R`.
    pub pumphead: String,
    /// Tube bore, e.g. `9.6MM`.
    pub tube: String,
    /// Speed in rpm.
    pub rpm: f64,
    /// Clockwise (`CW`) or not (`CCW`).
    pub clockwise: bool,
    /// Pump number.
    pub number: u8,
    /// Cumulative tacho count.
    pub tacho: u64,
    /// Running.
    pub running: bool,
}

/// Appends a status line.
pub fn encode_status(status: &Status, out: &mut BytesMut) {
    let _ = write!(
        out,
        "{} {:.2} {} {} {:.1} {} P/N {} {} {} !\r\n",
        status.pump_type,
        status.ml_per_rev,
        status.pumphead,
        status.tube,
        status.rpm,
        if status.clockwise { "CW" } else { "CCW" },
        status.number,
        status.tacho,
        u8::from(status.running)
    );
}

/// Parses an `RS` line.
pub fn parse_status(line: &str) -> Option<Status> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let [pump_type, ml_per_rev, pumphead, tube, rpm, dir, "P/N", number, tacho, running, "!"] =
        w.as_slice()
    else {
        return None;
    };
    Some(Status {
        pump_type: (*pump_type).to_owned(),
        ml_per_rev: ml_per_rev.parse().ok()?,
        pumphead: (*pumphead).to_owned(),
        tube: (*tube).to_owned(),
        rpm: rpm.parse().ok()?,
        clockwise: match *dir {
            "CW" => true,
            "CCW" => false,
            _ => return None,
        },
        number: number.parse().ok()?,
        tacho: tacho.parse().ok()?,
        running: match *running {
            "1" => true,
            "0" => false,
            _ => return None,
        },
    })
}

/// Decodes reply lines (echo included: the driver tells them apart).
#[derive(Debug, Default, Clone, Copy)]
pub struct LineDecoder;

impl Decode for LineDecoder {
    type Frame = String;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<String>, DecodeError> {
        let Some(line) = take_line(buf, MAX_LINE)? else { return Ok(None) };
        match std::str::from_utf8(&line) {
            Ok(text) if text.bytes().all(|b| (0x20..0x7f).contains(&b)) => {
                Ok(Some(text.to_owned()))
            }
            _ => Err(DecodeError::garbage(&line, "not printable ASCII")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manuals_status_line() {
        let line = "520Du 15.84 520R 9.6MM 220.0 CW P/N 1 123456789 1 !";
        let status = parse_status(line).unwrap();
        assert_eq!(status.pump_type, "520Du");
        assert!((status.ml_per_rev - 15.84).abs() < 1e-9);
        assert!((status.rpm - 220.0).abs() < 1e-9);
        assert!(status.clockwise && status.running);
        assert_eq!((status.number, status.tacho), (1, 123_456_789));
        let mut out = BytesMut::new();
        encode_status(&status, &mut out);
        assert_eq!(&out[..], format!("{line}\r\n").as_bytes());
        assert_eq!(parse_status("520Du 15.84 520R"), None);
    }

    #[test]
    fn commands_byte_by_byte() {
        let bytes = [
            b'1', // pump number
            b'S', b'P', // set speed
            b'2', b'2', b'0', b'.', b'0', // rpm, one decimal
            0x0D, // CR
        ];
        let mut out = BytesMut::new();
        encode_command(1, Command::Speed(220.0), &mut out);
        assert_eq!(&out[..], &bytes[..]);
        assert_eq!(parse_command(&bytes[..8]), Some((Some(1), Command::Speed(220.0))));
        for (command, text) in [
            (Command::Go, "12GO\r"),
            (Command::Dose(10_982), "12DO10982\r"),
            (Command::ReadTacho, "12RT\r"),
            (Command::ClearTacho, "12TC\r"),
            (Command::Running, "12ZY\r"),
        ] {
            let mut out = BytesMut::new();
            encode_command(12, command, &mut out);
            assert_eq!(&out[..], text.as_bytes());
            assert_eq!(parse_command(text.trim_end().as_bytes()), Some((Some(12), command)));
        }
        assert_eq!(parse_command(b"#ST"), Some((None, Command::Stop)));
        assert_eq!(parse_command(b"1XX"), None);
        assert_eq!(parse_command(b"1SPfast"), None);
        // Found by cargo fuzz: a multi-byte character where the command letters belong.
        assert_eq!(parse_command(b"#D\xca\x8aO["), None);
    }

    #[test]
    fn lines_partial_garbage_and_oversized() {
        let mut buf = BytesMut::from(&b"1RS\r520Du 15.84"[..]);
        assert_eq!(LineDecoder.decode(&mut buf), Ok(Some("1RS".into())));
        assert_eq!(LineDecoder.decode(&mut buf), Ok(None));
        buf.extend_from_slice(b" 520R\r\n\x01\x02\r\n");
        assert_eq!(LineDecoder.decode(&mut buf), Ok(Some("520Du 15.84 520R".into())));
        assert!(LineDecoder.decode(&mut buf).is_err());
        let mut buf = BytesMut::from(&[b'x'; MAX_LINE + 1][..]);
        assert_eq!(LineDecoder.decode(&mut buf), Err(DecodeError::Oversized { limit: MAX_LINE }));
    }
}
