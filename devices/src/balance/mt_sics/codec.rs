//! MT-SICS (Mettler Toledo Standard Interface Command Set), levels 0 and 1: a pure codec.
//!
//! # Format
//! ASCII lines ending in CR LF, both ways. A command is upper case with space-separated
//! parameters (`TA 10.5 g`). A response is `<ID> <status> [data]`:
//!
//! - `ID` names the command answered; `SI` and `SIR` are answered with `S`, and `@` with `I4`.
//! - `status` is one character: `S` stable, `D` dynamic, `A` done, `B` more lines follow, `I`
//!   not executable now, `L` bad parameter, `+` overload, `-` underload.
//! - `data` is either a weight (value right-aligned in 10 characters, a space, the unit), as in
//!   `S S    52.1873 g`, or quoted strings, as in `I4 A "B123456789"`.
//!
//! A bare `ES`, `ET`, `EL` (or `EI`) line is a general error: syntax, transmission, logical,
//! internal. Newer firmware's `S S Error <code>` form is not decoded (it arrives as garbage).
//!
//! The decoders accept CR, LF or CR LF as line ends, so a balance configured for a different
//! terminator still works; the encoders always write CR LF.

use std::fmt::Write as _;

use bytes::BytesMut;

use crate::codec::{Decode, DecodeError, take_line};
use crate::units::{Weight, WeightUnit};

/// The longest line either side sends; real replies stay under 80 characters.
pub const MAX_LINE: usize = 128;
/// The line terminator.
pub const CRLF: &[u8] = b"\r\n";

/// Which command a response answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyId {
    /// `S`: answers `S`, `SI` and `SIR`.
    S,
    /// `Z`.
    Z,
    /// `ZI`.
    Zi,
    /// `T`.
    T,
    /// `TA`.
    Ta,
    /// `TAC`.
    Tac,
    /// `I1` (level and versions).
    I1,
    /// `I2` (type, capacity).
    I2,
    /// `I3` (software version).
    I3,
    /// `I4` (serial number); also the answer to `@`.
    I4,
}

impl ReplyId {
    /// The ID as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::S => "S",
            Self::Z => "Z",
            Self::Zi => "ZI",
            Self::T => "T",
            Self::Ta => "TA",
            Self::Tac => "TAC",
            Self::I1 => "I1",
            Self::I2 => "I2",
            Self::I3 => "I3",
            Self::I4 => "I4",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "S" => Self::S,
            "Z" => Self::Z,
            "ZI" => Self::Zi,
            "T" => Self::T,
            "TA" => Self::Ta,
            "TAC" => Self::Tac,
            "I1" => Self::I1,
            "I2" => Self::I2,
            "I3" => Self::I3,
            "I4" => Self::I4,
            _ => return None,
        })
    }
}

/// The status character of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `S`: stable weight.
    Stable,
    /// `D`: dynamic (unstable) weight.
    Dynamic,
    /// `A`: command executed.
    Done,
    /// `B`: more lines follow.
    More,
    /// `I`: not executable now.
    NotExecutable,
    /// `L`: bad parameter.
    BadParameter,
    /// `+`: overload.
    Overload,
    /// `-`: underload.
    Underload,
}

impl Status {
    /// The character as printed.
    pub fn as_char(self) -> char {
        match self {
            Self::Stable => 'S',
            Self::Dynamic => 'D',
            Self::Done => 'A',
            Self::More => 'B',
            Self::NotExecutable => 'I',
            Self::BadParameter => 'L',
            Self::Overload => '+',
            Self::Underload => '-',
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "S" => Self::Stable,
            "D" => Self::Dynamic,
            "A" => Self::Done,
            "B" => Self::More,
            "I" => Self::NotExecutable,
            "L" => Self::BadParameter,
            "+" => Self::Overload,
            "-" => Self::Underload,
            _ => return None,
        })
    }
}

/// A weight as printed, with its number of decimals (which is the readability).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightField {
    /// Value and unit.
    pub weight: Weight,
    /// Digits after the decimal point.
    pub decimals: u8,
}

/// The data part of a response.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// Nothing after the status.
    None,
    /// A weight and unit.
    Weight(WeightField),
    /// One or more quoted strings.
    Texts(Vec<String>),
}

/// A general error line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeneralError {
    /// `ES`: syntax error, command not recognised.
    Syntax,
    /// `ET`: transmission error (parity, break).
    Transmission,
    /// `EL`: logical error, cannot execute.
    Logical,
    /// `EI`: internal error or busy (seen in third-party drivers, not the level 0/1 manual).
    Internal,
}

impl GeneralError {
    /// The line as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Syntax => "ES",
            Self::Transmission => "ET",
            Self::Logical => "EL",
            Self::Internal => "EI",
        }
    }
}

/// One decoded line from the balance.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `<ID> <status> [data]`.
    Response {
        /// Which command it answers.
        id: ReplyId,
        /// The status character.
        status: Status,
        /// Weight, texts or nothing.
        data: Data,
    },
    /// `ES`, `ET`, `EL` or `EI`.
    Error(GeneralError),
}

/// A command to the balance.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `@`: reset; cancels pending commands (and `SIR`), clears the tare, answers like `I4`.
    Reset,
    /// `I1`…`I4`: identification (level, type and capacity, software, serial number).
    Info(u8),
    /// `S`: stable weight.
    Weigh,
    /// `SI`: weight now, stable or not.
    WeighNow,
    /// `SIR`: weight now, repeated until cancelled.
    WeighRepeat,
    /// `Z`: zero when stable.
    Zero,
    /// `ZI`: zero now.
    ZeroNow,
    /// `T`: tare when stable.
    Tare,
    /// `TA`: query the tare, or with a weight, preset it.
    PresetTare(Option<WeightField>),
    /// `TAC`: clear the tare.
    ClearTare,
}

impl Command {
    /// The command's name as sent, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Reset => "@",
            Self::Info(1) => "I1",
            Self::Info(2) => "I2",
            Self::Info(3) => "I3",
            Self::Info(_) => "I4",
            Self::Weigh => "S",
            Self::WeighNow => "SI",
            Self::WeighRepeat => "SIR",
            Self::Zero => "Z",
            Self::ZeroNow => "ZI",
            Self::Tare => "T",
            Self::PresetTare(_) => "TA",
            Self::ClearTare => "TAC",
        }
    }
}

/// What the balance makes of a received line.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// A command it implements.
    Command(Command),
    /// A command it implements with a bad parameter (answered `<ID> L`).
    BadParameter(ReplyId),
    /// Anything else (answered `ES`).
    Unknown,
}

/// Appends `command` and CR LF to `out`.
pub fn encode_command(command: &Command, out: &mut BytesMut) {
    out.extend_from_slice(command.name().as_bytes());
    if let Command::PresetTare(Some(field)) = command {
        let _ = write!(
            out,
            " {:.*} {}",
            usize::from(field.decimals),
            field.weight.value,
            field.weight.unit.symbol()
        );
    }
    out.extend_from_slice(CRLF);
}

/// Appends `reply` and CR LF to `out`, weights right-aligned in 10 characters.
pub fn encode_reply(reply: &Reply, out: &mut BytesMut) {
    match reply {
        Reply::Error(e) => out.extend_from_slice(e.as_str().as_bytes()),
        Reply::Response { id, status, data } => {
            let _ = write!(out, "{} {}", id.as_str(), status.as_char());
            match data {
                Data::None => {}
                Data::Weight(f) => {
                    let _ = write!(
                        out,
                        " {:>10.*} {}",
                        usize::from(f.decimals),
                        f.weight.value,
                        f.weight.unit.symbol()
                    );
                }
                Data::Texts(texts) => {
                    for t in texts {
                        let _ = write!(out, " \"{t}\"");
                    }
                }
            }
        }
    }
    out.extend_from_slice(CRLF);
}

/// Parses a printed number into a weight field, counting its decimals.
pub fn parse_weight(value: &str, unit: &str) -> Option<WeightField> {
    let unit = WeightUnit::from_symbol(unit)?;
    let digits = value.strip_prefix(['-', '+']).unwrap_or(value);
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        || digits.bytes().filter(|&b| b == b'.').count() > 1
    {
        return None;
    }
    let decimals = digits.split_once('.').map_or(0, |(_, frac)| frac.len());
    Some(WeightField {
        weight: Weight { value: value.parse().ok()?, unit },
        decimals: u8::try_from(decimals).ok()?,
    })
}

/// Splits `"a" "b c" ""` into its strings.
fn parse_texts(mut rest: &str) -> Option<Vec<String>> {
    let mut texts = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Some(texts);
        }
        let inner = rest.strip_prefix('"')?;
        let end = inner.find('"')?;
        texts.push(inner[..end].to_owned());
        rest = &inner[end + 1..];
    }
}

/// Parses one reply line (without its terminator).
pub fn parse_reply(line: &[u8]) -> Result<Reply, DecodeError> {
    let text = std::str::from_utf8(line)
        .ok()
        .filter(|t| t.is_ascii())
        .ok_or_else(|| DecodeError::garbage(line, "not ASCII"))?;
    match text.trim_end() {
        "ES" => return Ok(Reply::Error(GeneralError::Syntax)),
        "ET" => return Ok(Reply::Error(GeneralError::Transmission)),
        "EL" => return Ok(Reply::Error(GeneralError::Logical)),
        "EI" => return Ok(Reply::Error(GeneralError::Internal)),
        _ => {}
    }
    let mut parts = text.splitn(3, ' ');
    let id = parts
        .next()
        .and_then(ReplyId::parse)
        .ok_or_else(|| DecodeError::garbage(line, "unknown response ID"))?;
    let status = parts
        .next()
        .and_then(Status::parse)
        .ok_or_else(|| DecodeError::garbage(line, "unknown status"))?;
    let rest = parts.next().unwrap_or("").trim();
    let data = if rest.is_empty() {
        Data::None
    } else if rest.starts_with('"') {
        Data::Texts(parse_texts(rest).ok_or_else(|| DecodeError::garbage(line, "bad quoting"))?)
    } else {
        let mut fields = rest.split_whitespace();
        let (Some(value), Some(unit), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(DecodeError::garbage(line, "expected a weight and a unit"));
        };
        Data::Weight(
            parse_weight(value, unit)
                .ok_or_else(|| DecodeError::garbage(line, "bad weight or unit"))?,
        )
    };
    Ok(Reply::Response { id, status, data })
}

/// Parses one command line (without its terminator), as a balance would.
pub fn parse_command(line: &[u8]) -> Request {
    let Some(text) = std::str::from_utf8(line).ok().filter(|t| t.is_ascii()) else {
        return Request::Unknown;
    };
    let mut words = text.split_whitespace();
    let name = words.next().unwrap_or("");
    let args: Vec<&str> = words.collect();
    let command = match (name, args.as_slice()) {
        ("@", []) => Command::Reset,
        ("I1", []) => Command::Info(1),
        ("I2", []) => Command::Info(2),
        ("I3", []) => Command::Info(3),
        ("I4", []) => Command::Info(4),
        ("S", []) => Command::Weigh,
        ("SI", []) => Command::WeighNow,
        ("SIR", []) => Command::WeighRepeat,
        ("Z", []) => Command::Zero,
        ("ZI", []) => Command::ZeroNow,
        ("T", []) => Command::Tare,
        ("TAC", []) => Command::ClearTare,
        ("TA", []) => Command::PresetTare(None),
        ("TA", [value, unit]) => match parse_weight(value, unit) {
            Some(field) if field.weight.value >= 0.0 => Command::PresetTare(Some(field)),
            _ => return Request::BadParameter(ReplyId::Ta),
        },
        ("TA", _) => return Request::BadParameter(ReplyId::Ta),
        _ => return Request::Unknown,
    };
    Request::Command(command)
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
        Ok(take_line(buf, MAX_LINE)?.map(|line| parse_command(&line)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Vec<Result<Reply, DecodeError>> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        loop {
            match ReplyDecoder.decode(&mut buf) {
                Ok(Some(r)) => out.push(Ok(r)),
                Ok(None) => return out,
                Err(e) => out.push(Err(e)),
            }
        }
    }

    fn grams(value: f64, decimals: u8) -> Data {
        Data::Weight(WeightField { weight: Weight::grams(value), decimals })
    }

    #[test]
    fn stable_weight_from_the_manual() {
        let bytes = [
            b'S', // ID: answers S, SI and SIR
            b' ', //
            b'S', // status: stable
            b' ', //
            b' ', // value right-aligned in 10 characters
            b' ', //
            b' ', //
            b'5', //
            b'2', //
            b'.', //
            b'1', //
            b'8', //
            b'7', //
            b'3', // 4 decimals: readability 0.1 mg
            b' ', //
            b'g', // unit
            0x0D, // CR
            0x0A, // LF
        ];
        let reply =
            Reply::Response { id: ReplyId::S, status: Status::Stable, data: grams(52.1873, 4) };
        assert_eq!(decode_all(&bytes), vec![Ok(reply.clone())]);
        let mut out = BytesMut::new();
        encode_reply(&reply, &mut out);
        assert_eq!(&out[..], &bytes[..]);
    }

    #[test]
    fn a_partial_frame_waits_for_its_terminator() {
        let mut buf = BytesMut::new();
        for (i, chunk) in [&b"S D   "[..], b"  -1.50 g", b"\r"].iter().enumerate() {
            buf.extend_from_slice(chunk);
            let got = ReplyDecoder.decode(&mut buf).unwrap();
            assert_eq!(got.is_some(), i == 2, "after chunk {i}");
            if let Some(reply) = got {
                assert_eq!(
                    reply,
                    Reply::Response {
                        id: ReplyId::S,
                        status: Status::Dynamic,
                        data: grams(-1.5, 2)
                    }
                );
            }
        }
        // The LF of a split CR LF is not a phantom empty frame.
        buf.extend_from_slice(b"\n");
        assert_eq!(ReplyDecoder.decode(&mut buf), Ok(None));
        assert!(buf.is_empty());
    }

    #[test]
    fn refusals_and_general_errors() {
        let bytes = [
            b'S', b' ', b'I', 0x0D, 0x0A, // S I: not executable (not stable in time)
            b'S', b' ', b'+', 0x0D, 0x0A, // S +: overload
            b'S', b' ', b'-', 0x0D, 0x0A, // S -: underload
            b'T', b'A', b' ', b'L', 0x0D, 0x0A, // TA L: bad parameter
            b'E', b'S', 0x0D, 0x0A, // syntax error
            b'E', b'T', 0x0D, 0x0A, // transmission error
            b'E', b'L', 0x0D, 0x0A, // logical error
        ];
        let response = |id, status| Ok(Reply::Response { id, status, data: Data::None });
        assert_eq!(
            decode_all(&bytes),
            vec![
                response(ReplyId::S, Status::NotExecutable),
                response(ReplyId::S, Status::Overload),
                response(ReplyId::S, Status::Underload),
                response(ReplyId::Ta, Status::BadParameter),
                Ok(Reply::Error(GeneralError::Syntax)),
                Ok(Reply::Error(GeneralError::Transmission)),
                Ok(Reply::Error(GeneralError::Logical)),
            ]
        );
    }

    #[test]
    fn identification_texts() {
        let got = decode_all(
            b"I1 A \"0123\" \"2.30\" \"2.20\" \"1.00\" \"\"\r\n\
              I2 A \"XS205DU Excellence 220.0000 g\"\r\n\
              I4 A \"B123456789\"\r\n",
        );
        let texts = |id, t: &[&str]| {
            Ok(Reply::Response {
                id,
                status: Status::Done,
                data: Data::Texts(t.iter().map(|s| (*s).to_owned()).collect()),
            })
        };
        assert_eq!(
            got,
            vec![
                texts(ReplyId::I1, &["0123", "2.30", "2.20", "1.00", ""]),
                texts(ReplyId::I2, &["XS205DU Excellence 220.0000 g"]),
                texts(ReplyId::I4, &["B123456789"]),
            ]
        );
    }

    #[test]
    fn tare_replies_carry_weights() {
        assert_eq!(
            decode_all(b"T S    12.50 g\r\nTA A    10.5000 g\r\nTAC A\r\nZ A\r\nZI D\r\n"),
            vec![
                Ok(Reply::Response {
                    id: ReplyId::T,
                    status: Status::Stable,
                    data: grams(12.5, 2)
                }),
                Ok(Reply::Response { id: ReplyId::Ta, status: Status::Done, data: grams(10.5, 4) }),
                Ok(Reply::Response { id: ReplyId::Tac, status: Status::Done, data: Data::None }),
                Ok(Reply::Response { id: ReplyId::Z, status: Status::Done, data: Data::None }),
                Ok(Reply::Response { id: ReplyId::Zi, status: Status::Dynamic, data: Data::None }),
            ]
        );
    }

    #[test]
    fn garbage_is_reported_and_the_next_line_decodes() {
        let bytes = [
            0xFF, 0x00, b'x', // line noise
            0x0D, 0x0A, //
            b'Q', b' ', b'S', 0x0D, 0x0A, // unknown ID
            b'S', b' ', b'S', b' ', b'1', b'.', b'0', b' ', b'l', b'b', 0x0D,
            0x0A, // unit not supported
            b'S', b' ', b'S', b' ', b'1', b'.', b'0', b' ', b'g', 0x0D, 0x0A, // good
        ];
        let got = decode_all(&bytes);
        assert_eq!(got.len(), 4);
        assert_eq!(
            got[0],
            Err(DecodeError::Garbage { bytes: vec![0xFF, 0x00, b'x'], reason: "not ASCII" })
        );
        assert!(matches!(got[1], Err(DecodeError::Garbage { reason: "unknown response ID", .. })));
        assert!(matches!(got[2], Err(DecodeError::Garbage { reason: "bad weight or unit", .. })));
        assert_eq!(
            got[3],
            Ok(Reply::Response { id: ReplyId::S, status: Status::Stable, data: grams(1.0, 1) })
        );
    }

    #[test]
    fn oversized_and_truncated_input() {
        let mut long = vec![b'S'; MAX_LINE + 10];
        long.extend_from_slice(b"\r\nZ A\r\n");
        let got = decode_all(&long);
        assert_eq!(got[0], Err(DecodeError::Oversized { limit: MAX_LINE }));
        assert_eq!(
            got[1],
            Ok(Reply::Response { id: ReplyId::Z, status: Status::Done, data: Data::None })
        );
        // Truncated: a reply cut before its terminator is never decoded as a shorter one.
        assert_eq!(decode_all(b"S S     100.0"), vec![]);
        // Truncated mid-field then terminated: rejected, not misread.
        assert!(decode_all(b"S S\r\n").iter().all(Result::is_ok));
        assert!(decode_all(b"S S 100.00\r\n")[0].is_err());
        assert!(decode_all(b"I4 A \"B12\r\n")[0].is_err());
    }

    #[test]
    fn commands_round_trip() {
        let cases: &[(&[u8], Command)] = &[
            (b"@\r\n", Command::Reset),
            (b"I2\r\n", Command::Info(2)),
            (b"S\r\n", Command::Weigh),
            (b"SI\r\n", Command::WeighNow),
            (b"SIR\r\n", Command::WeighRepeat),
            (b"Z\r\n", Command::Zero),
            (b"ZI\r\n", Command::ZeroNow),
            (b"T\r\n", Command::Tare),
            (b"TA\r\n", Command::PresetTare(None)),
            (
                b"TA 10.5000 g\r\n",
                Command::PresetTare(Some(WeightField { weight: Weight::grams(10.5), decimals: 4 })),
            ),
            (b"TAC\r\n", Command::ClearTare),
        ];
        for (bytes, command) in cases {
            let mut out = BytesMut::new();
            encode_command(command, &mut out);
            assert_eq!(&out[..], *bytes, "{command:?}");
            let mut buf = BytesMut::from(*bytes);
            assert_eq!(
                CommandDecoder.decode(&mut buf),
                Ok(Some(Request::Command(command.clone())))
            );
        }
        // The manual's example of a bad preset tare value.
        assert_eq!(parse_command(b"TA 1e3 g"), Request::BadParameter(ReplyId::Ta));
        assert_eq!(parse_command(b"s"), Request::Unknown);
        assert_eq!(parse_command(b"XYZ"), Request::Unknown);
    }
}
