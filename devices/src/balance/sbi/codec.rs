//! Sartorius SBI, as spoken by Secura, Quintix, Practum, Cubis and Entris II: a pure codec.
//!
//! # Format
//! Commands are `ESC <letter>` or `ESC x<digit>_`, optionally followed by CR LF: `ESC P`
//! prints one reading, `ESC T` tares or zeroes (the only tare on legacy models), `ESC U`
//! tares, `ESC V` zeroes, `ESC x1_`/`x2_`/`x3_` ask for model, serial number and software.
//! Control commands are not answered.
//!
//! Replies are lines ending in CR LF, 16 characters long, or 22 with a 6-character ID in
//! front (`N`, `G#`, `T`, `Stat`):
//!
//! ```text
//! position  1    2..10      11   12..14  15 16
//!           sign value      ' '  unit    CR LF      "+  52.1874 g  \r\n"
//! ```
//!
//! The unit is blank while the balance is unstable. `Stat` lines carry `High` (overload) or
//! `Low` (underload); `Err ###` is a numbered error; anything else printable is a text reply
//! (model, serial number, software version).

use bytes::BytesMut;

use crate::codec::{Decode, DecodeError, take_line};
use crate::units::WeightUnit;

/// The escape byte every command starts with.
pub const ESC: u8 = 0x1B;
/// Longest reply line we accept.
pub const MAX_LINE: usize = 64;
/// Length of a reply without ID, terminator excluded.
pub const SHORT_LINE: usize = 14;
/// Length of a reply with ID, terminator excluded.
pub const LONG_LINE: usize = 20;

/// A command to the balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `ESC P`: print one reading.
    Print,
    /// `ESC T`: tare, or zero when unloaded (legacy CP/LE models have only this).
    TareOrZero,
    /// `ESC U`: tare.
    Tare,
    /// `ESC V`: zero.
    Zero,
    /// `ESC x1_` model, `x2_` serial number, `x3_` software version.
    Info(u8),
}

impl Command {
    /// The command as a readable name, for errors and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Print => "ESC P",
            Self::TareOrZero => "ESC T",
            Self::Tare => "ESC U",
            Self::Zero => "ESC V",
            Self::Info(1) => "ESC x1_",
            Self::Info(2) => "ESC x2_",
            Self::Info(_) => "ESC x3_",
        }
    }
}

/// What the emulator makes of a received command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// A command it implements.
    Command(Command),
    /// `ESC` and a letter it does not implement (ignored, as the balance does).
    Unknown(u8),
}

/// The data ID in front of a 22-character reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ident {
    /// 16-character format: no ID.
    None,
    /// `N`: net.
    Net,
    /// `G#`: gross.
    Gross,
    /// `T`: tare.
    Tare,
}

impl Ident {
    fn as_str(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Net => "N",
            Self::Gross => "G#",
            Self::Tare => "T",
        }
    }
}

/// A decoded reply line.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A weight; `unit` is `None` while unstable.
    Weight {
        /// Data ID, if the 22-character format is on.
        ident: Ident,
        /// Signed value.
        value: f64,
        /// Digits after the decimal point.
        decimals: u8,
        /// Unit, blank (None) while unstable.
        unit: Option<WeightUnit>,
    },
    /// `Stat … High`: overload.
    High,
    /// `Stat … Low`: underload.
    Low,
    /// `Err ###`.
    Error(u16),
    /// Any other printable line (model, serial number, software).
    Text(String),
}

/// Appends `command` to `out`; `crlf` adds the optional CR LF.
pub fn encode_command(command: Command, crlf: bool, out: &mut BytesMut) {
    out.extend_from_slice(&[ESC]);
    match command {
        Command::Print => out.extend_from_slice(b"P"),
        Command::TareOrZero => out.extend_from_slice(b"T"),
        Command::Tare => out.extend_from_slice(b"U"),
        Command::Zero => out.extend_from_slice(b"V"),
        Command::Info(n) => out.extend_from_slice(&[b'x', b'0' + n.min(9), b'_']),
    }
    if crlf {
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends `reply` and CR LF to `out` in the fixed-width format.
pub fn encode_reply(reply: &Reply, out: &mut BytesMut) {
    let line = match reply {
        Reply::Weight { ident, value, decimals, unit } => {
            let sign = if *value < 0.0 { '-' } else { '+' };
            let digits = format!("{:.*}", usize::from(*decimals), value.abs());
            let unit = unit.map_or("", WeightUnit::symbol);
            let body = format!("{sign}{digits:>9} {unit:<3}");
            match ident {
                Ident::None => body,
                other => format!("{:<6}{body}", other.as_str()),
            }
        }
        Reply::High => format!("{:<12}{:<8}", "Stat", "High"),
        Reply::Low => format!("{:<12}{:<8}", "Stat", "Low"),
        Reply::Error(code) => format!("{:<14}", format!("Err {code:03}")),
        Reply::Text(text) => text.clone(),
    };
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Parses one reply line (without terminator).
pub fn parse_reply(line: &[u8]) -> Result<Reply, DecodeError> {
    let text = std::str::from_utf8(line)
        .ok()
        .filter(|t| t.bytes().all(|b| (0x20..0x7f).contains(&b)))
        .ok_or_else(|| DecodeError::garbage(line, "not printable ASCII"))?;
    let trimmed = text.trim();
    if trimmed.starts_with("Stat") {
        return match trimmed.trim_start_matches("Stat").trim() {
            "High" => Ok(Reply::High),
            "Low" => Ok(Reply::Low),
            _ => Err(DecodeError::garbage(line, "unknown Stat line")),
        };
    }
    if let Some(code) = trimmed.strip_prefix("Err") {
        return code
            .trim()
            .parse()
            .map(Reply::Error)
            .map_err(|_| DecodeError::garbage(line, "bad error number"));
    }
    let (ident, body) = match text.len() {
        LONG_LINE => {
            let ident = match text[..6].trim() {
                "N" => Ident::Net,
                "G#" | "G" => Ident::Gross,
                "T" => Ident::Tare,
                _ => return Ok(Reply::Text(trimmed.to_owned())),
            };
            (ident, &text[6..])
        }
        SHORT_LINE => (Ident::None, text),
        _ => return Ok(Reply::Text(trimmed.to_owned())),
    };
    let sign = match body.as_bytes()[0] {
        b'+' | b' ' => 1.0,
        b'-' => -1.0,
        _ => return Ok(Reply::Text(trimmed.to_owned())),
    };
    let digits = body[1..10].trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Ok(Reply::Text(trimmed.to_owned()));
    }
    let value: f64 = digits.parse().map_err(|_| DecodeError::garbage(line, "bad number"))?;
    let decimals = digits.split_once('.').map_or(0, |(_, f)| f.len());
    let unit = match body[11..].trim() {
        "" => None,
        symbol => Some(
            WeightUnit::from_symbol(symbol)
                .ok_or_else(|| DecodeError::garbage(line, "unknown unit"))?,
        ),
    };
    Ok(Reply::Weight {
        ident,
        value: sign * value,
        decimals: u8::try_from(decimals)
            .map_err(|_| DecodeError::garbage(line, "too many decimals"))?,
        unit,
    })
}

/// Decodes the balance's replies.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReplyDecoder;

impl Decode for ReplyDecoder {
    type Frame = Reply;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, DecodeError> {
        match take_line(buf, MAX_LINE)? {
            Some(line) => parse_reply(&line).map(Some),
            None => Ok(None),
        }
    }
}

/// Decodes the host's commands (the emulator's side).
#[derive(Debug, Default, Clone, Copy)]
pub struct CommandDecoder;

impl Decode for CommandDecoder {
    type Frame = Request;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, DecodeError> {
        let skip = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
        let _ = buf.split_to(skip);
        if buf.is_empty() {
            return Ok(None);
        }
        if buf[0] != ESC {
            let end = buf.iter().position(|&b| b == ESC).unwrap_or(buf.len());
            let junk = buf.split_to(end);
            return Err(DecodeError::garbage(&junk, "expected ESC"));
        }
        let Some(&letter) = buf.get(1) else { return Ok(None) };
        let (request, len) = match letter {
            b'P' => (Request::Command(Command::Print), 2),
            b'T' => (Request::Command(Command::TareOrZero), 2),
            b'U' => (Request::Command(Command::Tare), 2),
            b'V' => (Request::Command(Command::Zero), 2),
            b'x' => match (buf.get(2), buf.get(3)) {
                (None, _) | (Some(_), None) => return Ok(None),
                (Some(&d @ b'1'..=b'3'), Some(b'_')) => {
                    (Request::Command(Command::Info(d - b'0')), 4)
                }
                _ => {
                    let junk = buf.split_to(2);
                    return Err(DecodeError::garbage(&junk, "bad ESC x command"));
                }
            },
            other => (Request::Unknown(other), 2),
        };
        let _ = buf.split_to(len);
        Ok(Some(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all<D: Decode>(mut d: D, bytes: &[u8]) -> Vec<Result<D::Frame, DecodeError>> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        loop {
            match d.decode(&mut buf) {
                Ok(Some(r)) => out.push(Ok(r)),
                Ok(None) => return out,
                Err(e) => out.push(Err(e)),
            }
        }
    }

    #[test]
    fn a_22_character_net_weight_from_the_manual() {
        let bytes = [
            b'N', b' ', b' ', b' ', b' ', b' ', // ID, 6 characters: net
            b'+', // sign
            b' ', b' ', b'5', b'2', b'.', b'1', b'8', b'7', b'4', // value, 9 characters
            b' ', // separator
            b'g', b' ', b' ', // unit, 3 characters: present, so stable
            0x0D, 0x0A, // CR LF
        ];
        assert_eq!(bytes.len(), 22);
        let reply = Reply::Weight {
            ident: Ident::Net,
            value: 52.1874,
            decimals: 4,
            unit: Some(WeightUnit::Gram),
        };
        assert_eq!(decode_all(ReplyDecoder, &bytes), vec![Ok(reply.clone())]);
        let mut out = BytesMut::new();
        encode_reply(&reply, &mut out);
        assert_eq!(&out[..], &bytes[..]);
    }

    #[test]
    fn gross_and_tare_lines_keep_their_ids() {
        let bytes = b"G#    +  60.0000 g  \r\nT     +  10.0000 g  \r\nN     +  50.0000 g  \r\n";
        let weight = |ident, value| {
            Ok(Reply::Weight { ident, value, decimals: 4, unit: Some(WeightUnit::Gram) })
        };
        assert_eq!(
            decode_all(ReplyDecoder, bytes),
            vec![weight(Ident::Gross, 60.0), weight(Ident::Tare, 10.0), weight(Ident::Net, 50.0)]
        );
    }

    #[test]
    fn a_16_character_unstable_weight_has_a_blank_unit() {
        let bytes = [
            b'-', // sign
            b' ', b' ', b' ', b' ', b'1', b'.', b'2', b'5', b'0', // value
            b' ', // separator
            b' ', b' ', b' ', // unit blank: unstable
            0x0D, 0x0A, // CR LF
        ];
        assert_eq!(bytes.len(), 16);
        let reply = Reply::Weight { ident: Ident::None, value: -1.25, decimals: 3, unit: None };
        assert_eq!(decode_all(ReplyDecoder, &bytes), vec![Ok(reply.clone())]);
        let mut out = BytesMut::new();
        encode_reply(&reply, &mut out);
        assert_eq!(&out[..], &bytes[..]);
    }

    #[test]
    fn status_errors_and_texts() {
        let got = decode_all(
            ReplyDecoder,
            b"Stat        High    \r\nStat        Low     \r\nErr 103       \r\nBCE224I-1S\r\n",
        );
        assert_eq!(
            got,
            vec![
                Ok(Reply::High),
                Ok(Reply::Low),
                Ok(Reply::Error(103)),
                Ok(Reply::Text("BCE224I-1S".into())),
            ]
        );
    }

    #[test]
    fn partial_garbage_and_oversized_replies() {
        let mut buf = BytesMut::from(&b"+  52.18"[..]);
        assert_eq!(ReplyDecoder.decode(&mut buf), Ok(None));
        buf.extend_from_slice(b"74 g  \r\n");
        assert!(matches!(ReplyDecoder.decode(&mut buf), Ok(Some(Reply::Weight { .. }))));
        let got = decode_all(ReplyDecoder, b"\x80\x81\r\n+   1.0000 lb \r\n");
        assert!(matches!(got[0], Err(DecodeError::Garbage { reason: "not printable ASCII", .. })));
        assert!(matches!(got[1], Err(DecodeError::Garbage { reason: "unknown unit", .. })));
        let long = vec![b'9'; MAX_LINE + 1];
        assert_eq!(
            decode_all(ReplyDecoder, &long),
            vec![Err(DecodeError::Oversized { limit: MAX_LINE })]
        );
    }

    #[test]
    fn commands_with_and_without_crlf() {
        let bytes = [
            ESC, b'P', // print
            ESC, b'U', 0x0D, 0x0A, // tare, with the optional CR LF
            ESC, b'x', b'2', b'_', // serial number
            b'?', // noise
            ESC, b'K', // ambient filter: not implemented, ignored
            ESC, b'x', // truncated: waits
        ];
        let mut buf = BytesMut::from(&bytes[..]);
        let mut got = Vec::new();
        while let Some(r) = CommandDecoder.decode(&mut buf).transpose() {
            got.push(r);
        }
        assert_eq!(
            got,
            vec![
                Ok(Request::Command(Command::Print)),
                Ok(Request::Command(Command::Tare)),
                Ok(Request::Command(Command::Info(2))),
                Err(DecodeError::Garbage { bytes: b"?".to_vec(), reason: "expected ESC" }),
                Ok(Request::Unknown(b'K')),
            ]
        );
        assert_eq!(&buf[..], &[ESC, b'x']);
        for (command, crlf, expected) in [
            (Command::Print, false, &b"\x1bP"[..]),
            (Command::Zero, true, b"\x1bV\r\n"),
            (Command::Info(3), false, b"\x1bx3_"),
        ] {
            let mut out = BytesMut::new();
            encode_command(command, crlf, &mut out);
            assert_eq!(&out[..], expected);
        }
    }
}
