//! New Era NE-1000 (also NE-500, WPI Aladdin) serial protocol: a pure codec.
//!
//! # Basic mode
//! To the pump: `[address 0–99]<command>[parameters] CR`; the pump strips spaces and
//! upper-cases. From the pump: `STX <address: 2 digits> <prompt> [data] ETX`.
//!
//! # Safe mode
//! Both ways: `STX <len> <data> <CRC hi> <CRC lo> ETX`, where `len` counts the bytes after
//! the STX (itself, the data, the CRC and the ETX) and the CRC is CRC-16/XMODEM (CCITT
//! polynomial, initial value 0) over the data. The manual's example, back to basic mode:
//! `02 08 'SAF0' 55 43 03`. The manual does not show a safe-mode reply; we assume its data is
//! the basic-mode content (`<address><prompt>[data]`), which is what the emulator sends.
//!
//! # Replies
//! The prompt says what the pump is doing: `I` infusing, `W` withdrawing, `S` stopped, `P`
//! paused, `T` pause phase, `U` waiting for a trigger, `X` purging, or `A` for an alarm, whose
//! data is `?R` (reset), `?S` (stall), `?T` (safe-mode timeout), `?E` (program error) or `?O`
//! (program out of range). Data starting with `?` otherwise is a command error: `?` unknown,
//! `?NA` not applicable now, `?OOR` out of range, `?COM` invalid packet, `?IGN` ignored.

use std::fmt::Write as _;

use bytes::BytesMut;

use crate::codec::{Decode, DecodeError, crc16_ccitt, take_line};
use crate::pump::PumpAlarm;

/// Start of a reply or safe-mode frame.
pub const STX: u8 = 0x02;
/// End of a reply or safe-mode frame.
pub const ETX: u8 = 0x03;
/// End of a basic-mode command.
pub const CR: u8 = 0x0D;
/// Longest frame accepted (the longest real reply, `DIS`, is under 20 bytes).
pub const MAX_FRAME: usize = 64;

/// Framing mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// CR-terminated commands, STX/ETX replies, no checksum.
    Basic,
    /// Length and CRC-16 on every packet, both ways.
    Safe,
}

/// The pump's prompt character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    /// `I`
    Infusing,
    /// `W`
    Withdrawing,
    /// `S`
    Stopped,
    /// `P`
    Paused,
    /// `T`
    PausePhase,
    /// `U`
    TriggerWait,
    /// `X`
    Purging,
    /// `A`: an alarm; see [`ReplyData::Alarm`].
    Alarm,
}

impl Prompt {
    /// The character as sent.
    pub fn as_byte(self) -> u8 {
        match self {
            Self::Infusing => b'I',
            Self::Withdrawing => b'W',
            Self::Stopped => b'S',
            Self::Paused => b'P',
            Self::PausePhase => b'T',
            Self::TriggerWait => b'U',
            Self::Purging => b'X',
            Self::Alarm => b'A',
        }
    }

    fn parse(b: u8) -> Option<Self> {
        Some(match b {
            b'I' => Self::Infusing,
            b'W' => Self::Withdrawing,
            b'S' => Self::Stopped,
            b'P' => Self::Paused,
            b'T' => Self::PausePhase,
            b'U' => Self::TriggerWait,
            b'X' => Self::Purging,
            b'A' => Self::Alarm,
            _ => return None,
        })
    }
}

/// A command error reported in the data field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandError {
    /// `?`: not recognised.
    Unknown,
    /// `?NA`: not applicable now.
    NotApplicable,
    /// `?OOR`: out of range.
    OutOfRange,
    /// `?COM`: invalid packet.
    BadPacket,
    /// `?IGN`: ignored.
    Ignored,
}

impl CommandError {
    /// The data field as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "?",
            Self::NotApplicable => "?NA",
            Self::OutOfRange => "?OOR",
            Self::BadPacket => "?COM",
            Self::Ignored => "?IGN",
        }
    }
}

/// The data field of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyData {
    /// Nothing.
    None,
    /// A value (`1.000MM`, `I0.000W0.000ML`, `NE1000V3.923`).
    Value(String),
    /// A command error.
    Error(CommandError),
    /// With prompt `A`: the alarm.
    Alarm(PumpAlarm),
}

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The replying pump's address.
    pub address: u8,
    /// What the pump is doing.
    pub prompt: Prompt,
    /// Value, error or alarm.
    pub data: ReplyData,
}

/// A command as the pump received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Framing it arrived in (the pump answers in the same).
    pub mode: Mode,
    /// Address prefix, if any.
    pub address: Option<u8>,
    /// The command, spaces stripped and upper-cased.
    pub text: String,
}

fn frame_safe(data: &[u8], out: &mut BytesMut) {
    let crc = crc16_ccitt(data);
    // `len` is one byte; data is bounded by MAX_FRAME, far below 251.
    let len = u8::try_from(data.len() + 4).unwrap_or(u8::MAX);
    out.extend_from_slice(&[STX, len]);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&[ETX]);
}

/// Appends a command: `text` is e.g. `RAT1.5MM`.
pub fn encode_command(mode: Mode, address: Option<u8>, text: &str, out: &mut BytesMut) {
    let mut data = String::new();
    if let Some(a) = address {
        let _ = write!(data, "{a}");
    }
    data.push_str(text);
    match mode {
        Mode::Basic => {
            out.extend_from_slice(data.as_bytes());
            out.extend_from_slice(&[CR]);
        }
        Mode::Safe => frame_safe(data.as_bytes(), out),
    }
}

/// Appends a reply in `mode`.
pub fn encode_reply(mode: Mode, reply: &Reply, out: &mut BytesMut) {
    let mut data = format!("{:02}", reply.address.min(99));
    data.push(char::from(reply.prompt.as_byte()));
    match &reply.data {
        ReplyData::None => {}
        ReplyData::Value(v) => data.push_str(v),
        ReplyData::Error(e) => data.push_str(e.as_str()),
        ReplyData::Alarm(a) => {
            data.push('?');
            data.push(a.code());
        }
    }
    match mode {
        Mode::Basic => {
            out.extend_from_slice(&[STX]);
            out.extend_from_slice(data.as_bytes());
            out.extend_from_slice(&[ETX]);
        }
        Mode::Safe => frame_safe(data.as_bytes(), out),
    }
}

/// Parses the content of a reply frame: `<address:2><prompt>[data]`.
pub fn parse_reply_content(content: &[u8]) -> Result<Reply, DecodeError> {
    let bad = |reason| DecodeError::garbage(content, reason);
    if content.len() < 3 || !content[..2].iter().all(u8::is_ascii_digit) {
        return Err(bad("expected a two-digit address"));
    }
    let address = (content[0] - b'0') * 10 + (content[1] - b'0');
    let prompt = Prompt::parse(content[2]).ok_or_else(|| bad("unknown prompt"))?;
    let rest = &content[3..];
    if !rest.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(bad("not printable ASCII"));
    }
    let data = match (prompt, rest) {
        (_, []) => ReplyData::None,
        (Prompt::Alarm, [b'?', code]) => {
            ReplyData::Alarm(PumpAlarm::from_code(*code).ok_or_else(|| bad("unknown alarm"))?)
        }
        (Prompt::Alarm, _) => return Err(bad("alarm without a code")),
        (_, b"?") => ReplyData::Error(CommandError::Unknown),
        (_, b"?NA") => ReplyData::Error(CommandError::NotApplicable),
        (_, b"?OOR") => ReplyData::Error(CommandError::OutOfRange),
        (_, b"?COM") => ReplyData::Error(CommandError::BadPacket),
        (_, b"?IGN") => ReplyData::Error(CommandError::Ignored),
        (_, [b'?', ..]) => return Err(bad("unknown error code")),
        (_, value) => ReplyData::Value(String::from_utf8_lossy(value).into_owned()),
    };
    Ok(Reply { address, prompt, data })
}

/// Takes one safe-mode packet's data off `buf` (which starts with STX).
fn take_safe(buf: &mut BytesMut) -> Result<Option<BytesMut>, DecodeError> {
    let Some(&len) = buf.get(1) else { return Ok(None) };
    let len = usize::from(len);
    if !(4..=MAX_FRAME).contains(&len) {
        let junk = buf.split_to(2);
        return Err(DecodeError::garbage(&junk, "bad safe-mode length"));
    }
    if buf.len() < len + 1 {
        return Ok(None);
    }
    let mut frame = buf.split_to(len + 1);
    if frame[len] != ETX {
        return Err(DecodeError::garbage(&frame, "safe-mode packet without ETX"));
    }
    let received = u16::from_be_bytes([frame[len - 2], frame[len - 1]]);
    let _ = frame.split_to(2);
    frame.truncate(len - 4);
    let computed = crc16_ccitt(&frame);
    if computed != received {
        return Err(DecodeError::Checksum { computed, received });
    }
    Ok(Some(frame))
}

/// Drops bytes before the next STX, reporting them.
fn skip_to_stx(buf: &mut BytesMut) -> Result<(), DecodeError> {
    match buf.iter().position(|&b| b == STX) {
        Some(0) => Ok(()),
        Some(n) => Err(DecodeError::garbage(&buf.split_to(n), "bytes before STX")),
        None if buf.is_empty() => Ok(()),
        None => {
            let junk = buf.split_to(buf.len());
            Err(DecodeError::garbage(&junk, "bytes before STX"))
        }
    }
}

/// Decodes the pump's replies in one framing mode.
#[derive(Debug, Clone, Copy)]
pub struct ReplyDecoder {
    /// The framing to expect.
    pub mode: Mode,
}

impl Decode for ReplyDecoder {
    type Frame = Reply;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, DecodeError> {
        skip_to_stx(buf)?;
        if buf.is_empty() {
            return Ok(None);
        }
        match self.mode {
            Mode::Basic => {
                let end = buf.iter().position(|&b| b == ETX);
                // A second STX before the ETX means the first frame was cut short.
                let scan = end.unwrap_or(buf.len());
                if let Some(restart) = buf[1..scan].iter().position(|&b| b == STX) {
                    let junk = buf.split_to(restart + 1);
                    return Err(DecodeError::garbage(&junk, "truncated frame"));
                }
                match end {
                    Some(end) => {
                        let frame = buf.split_to(end + 1);
                        parse_reply_content(&frame[1..end]).map(Some)
                    }
                    None if buf.len() > MAX_FRAME => {
                        buf.clear();
                        Err(DecodeError::Oversized { limit: MAX_FRAME })
                    }
                    None => Ok(None),
                }
            }
            Mode::Safe => match take_safe(buf)? {
                Some(content) => parse_reply_content(&content).map(Some),
                None => Ok(None),
            },
        }
    }
}

/// Decodes the host's commands in either framing, as the emulator receives them.
#[derive(Debug, Default, Clone, Copy)]
pub struct CommandDecoder;

/// Splits a command's content into address and upper-cased text without spaces.
pub fn parse_command(mode: Mode, content: &[u8]) -> Result<Received, DecodeError> {
    if !content.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(DecodeError::garbage(content, "not printable ASCII"));
    }
    let text: String = content
        .iter()
        .filter(|b| **b != b' ')
        .map(|b| char::from(b.to_ascii_uppercase()))
        .collect();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count().min(2);
    let address = if digits == 0 { None } else { text[..digits].parse().ok() };
    Ok(Received { mode, address, text: text[digits..].to_owned() })
}

impl Decode for CommandDecoder {
    type Frame = Received;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Received>, DecodeError> {
        let skip = buf.iter().take_while(|&&b| b == b'\n').count();
        let _ = buf.split_to(skip);
        match buf.first() {
            None => Ok(None),
            // A bare CR is the status query (the empty command), not an empty line to skip.
            Some(&CR) => {
                let _ = buf.split_to(1);
                Ok(Some(Received { mode: Mode::Basic, address: None, text: String::new() }))
            }
            Some(&STX) => match take_safe(buf)? {
                Some(content) => parse_command(Mode::Safe, &content).map(Some),
                None => Ok(None),
            },
            Some(_) => match buf.iter().position(|&b| b == CR || b == STX) {
                Some(end) if buf[end] == STX => {
                    let junk = buf.split_to(end);
                    Err(DecodeError::garbage(&junk, "unterminated command"))
                }
                Some(_) => match take_line(buf, MAX_FRAME)? {
                    Some(line) => parse_command(Mode::Basic, &line).map(Some),
                    None => Ok(None),
                },
                None if buf.len() > MAX_FRAME => {
                    buf.clear();
                    Err(DecodeError::Oversized { limit: MAX_FRAME })
                }
                None => Ok(None),
            },
        }
    }
}

/// Formats a number the way the pump accepts it: at most 4 significant digits and 5 characters
/// (`1.500`, `12.50`, `150.0`, `1500`).
pub fn format_number(value: f64) -> String {
    let value = value.max(0.0);
    // Four significant digits in at most five characters; decided after rounding, so 9.9996
    // becomes "10.00" rather than the six-character "10.000".
    for decimals in [3usize, 2, 1] {
        let text = format!("{value:.decimals$}");
        if text.len() <= 5 {
            return text;
        }
    }
    format!("{value:.0}")
}

/// Splits `1.5MM` into the number and its unit suffix.
pub fn split_number(text: &str) -> Option<(f64, &str)> {
    let end = text.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
    if end == 0 {
        return None;
    }
    Some((text[..end].parse().ok()?, &text[end..]))
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

    const BASIC: ReplyDecoder = ReplyDecoder { mode: Mode::Basic };
    const SAFE: ReplyDecoder = ReplyDecoder { mode: Mode::Safe };

    fn reply(prompt: Prompt, data: ReplyData) -> Result<Reply, DecodeError> {
        Ok(Reply { address: 0, prompt, data })
    }

    #[test]
    fn the_manuals_back_to_basic_packet() {
        let bytes = [
            0x02, // STX
            0x08, // len: itself, 4 data bytes, 2 CRC bytes, ETX
            b'S', // data
            b'A', //
            b'F', //
            b'0', // SAF0: safe mode off
            0x55, // CRC-16/XMODEM("SAF0") high byte
            0x43, // low byte
            0x03, // ETX
        ];
        let mut out = BytesMut::new();
        encode_command(Mode::Safe, None, "SAF0", &mut out);
        assert_eq!(&out[..], &bytes[..]);
        assert_eq!(
            decode_all(CommandDecoder, &bytes),
            vec![Ok(Received { mode: Mode::Safe, address: None, text: "SAF0".into() })]
        );
    }

    #[test]
    fn basic_replies_from_the_manual() {
        let bytes = [
            0x02, b'0', b'0', b'A', b'?', b'R', 0x03, // power-on reset alarm
            0x02, b'0', b'0', b'S', b'N', b'E', b'1', b'0', b'0', b'0', b'V', b'3', b'.', b'9',
            b'2', b'3', 0x03, // VER
            0x02, b'0', b'0', b'S', 0x03, // stopped, no data
            0x02, b'0', b'0', b'I', b'?', b'O', b'O', b'R', 0x03, // RAT9999MM: out of range
            0x02, b'0', b'0', b'I', b'?', 0x03, // XYZ: unknown command
            0x02, b'0', b'0', b'I', b'I', b'0', b'.', b'0', b'0', b'0', b'W', b'0', b'.', b'0',
            b'0', b'0', b'M', b'L', 0x03, // DIS
        ];
        assert_eq!(
            decode_all(BASIC, &bytes),
            vec![
                reply(Prompt::Alarm, ReplyData::Alarm(PumpAlarm::Reset)),
                reply(Prompt::Stopped, ReplyData::Value("NE1000V3.923".into())),
                reply(Prompt::Stopped, ReplyData::None),
                reply(Prompt::Infusing, ReplyData::Error(CommandError::OutOfRange)),
                reply(Prompt::Infusing, ReplyData::Error(CommandError::Unknown)),
                reply(Prompt::Infusing, ReplyData::Value("I0.000W0.000ML".into())),
            ]
        );
    }

    #[test]
    fn basic_commands() {
        let cases: &[(Option<u8>, &str, &[u8])] = &[
            (None, "DIA14.43", b"DIA14.43\r"),
            (Some(0), "RAT1.5MM", b"0RAT1.5MM\r"),
            (Some(12), "", b"12\r"),
        ];
        for (address, text, bytes) in cases {
            let mut out = BytesMut::new();
            encode_command(Mode::Basic, *address, text, &mut out);
            assert_eq!(&out[..], *bytes);
        }
        // The empty command asks for status.
        assert_eq!(
            decode_all(CommandDecoder, b"\r"),
            vec![Ok(Received { mode: Mode::Basic, address: None, text: String::new() })]
        );
        // The pump strips spaces and upper-cases.
        assert_eq!(
            decode_all(CommandDecoder, b"01 rat 1.5 mm\r\n"),
            vec![Ok(Received { mode: Mode::Basic, address: Some(1), text: "RAT1.5MM".into() })]
        );
    }

    #[test]
    fn safe_replies_check_length_and_crc() {
        let good = Reply { address: 0, prompt: Prompt::Infusing, data: ReplyData::None };
        let mut bytes = BytesMut::new();
        encode_reply(Mode::Safe, &good, &mut bytes);
        assert_eq!(&bytes[..], &[0x02, 0x07, b'0', b'0', b'I', 0x19, 0xdd, 0x03][..]);
        // Checked against Python's binascii.crc_hqx(b"00I", 0).
        assert_eq!(crc16_ccitt(b"00I"), 0x19dd);
        assert_eq!(decode_all(SAFE, &bytes), vec![Ok(good.clone())]);
        let mut corrupt = bytes.to_vec();
        corrupt[6] ^= 0x01;
        assert_eq!(
            decode_all(SAFE, &corrupt),
            vec![Err(DecodeError::Checksum { computed: 0x19dd, received: 0x19dc })]
        );
        // Partial: every prefix waits.
        for n in 0..bytes.len() {
            assert_eq!(decode_all(SAFE, &bytes[..n]), vec![], "prefix of {n}");
        }
        // A bad length byte is dropped and decoding resumes at the next STX.
        let mut bad_len = vec![0x02, 0xFF];
        bad_len.extend_from_slice(&bytes);
        let got = decode_all(SAFE, &bad_len);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], Ok(good));
    }

    #[test]
    fn garbage_truncation_and_oversize() {
        let mut bytes = b"\xff\xfe".to_vec(); // noise
        bytes.extend_from_slice(&[0x02, b'0', b'0']); // a frame cut short
        bytes.extend_from_slice(&[0x02, b'0', b'0', b'S', 0x03]); // a whole one
        let got = decode_all(BASIC, &bytes);
        assert!(matches!(got[0], Err(DecodeError::Garbage { reason: "bytes before STX", .. })));
        assert!(matches!(got[1], Err(DecodeError::Garbage { reason: "truncated frame", .. })));
        assert_eq!(got[2], reply(Prompt::Stopped, ReplyData::None));
        assert_eq!(got.len(), 3);
        let mut long = vec![0x02];
        long.extend(std::iter::repeat_n(b'0', MAX_FRAME + 1));
        assert_eq!(
            decode_all(BASIC, &long),
            vec![Err(DecodeError::Oversized { limit: MAX_FRAME })]
        );
        assert!(matches!(
            decode_all(BASIC, b"\x0200Q\x03")[0],
            Err(DecodeError::Garbage { reason: "unknown prompt", .. })
        ));
    }

    #[test]
    fn numbers_have_four_significant_digits() {
        assert_eq!(format_number(1.5), "1.500");
        assert_eq!(format_number(12.5), "12.50");
        assert_eq!(format_number(150.0), "150.0");
        assert_eq!(format_number(1500.0), "1500");
        assert_eq!(format_number(9.9996), "10.00");
        assert_eq!(format_number(99.996), "100.0");
        assert_eq!(split_number("1.5MM"), Some((1.5, "MM")));
        assert_eq!(split_number("MM"), None);
    }
}
