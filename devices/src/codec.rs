//! What every serial codec shares: the [`Decode`] trait, decode errors, line framing and the
//! CRC used by New Era safe mode.
//!
//! A decoder is handed the bytes received so far in a `BytesMut` and either takes one frame off
//! the front, says it needs more (`Ok(None)`, consuming nothing), or takes the bad bytes off the
//! front and reports them. Consuming the bad bytes is what lets a driver resynchronise after
//! noise: the next call starts at the next plausible frame boundary.

use std::fmt::Write as _;

use bytes::BytesMut;

/// A pure, incremental frame decoder.
pub trait Decode {
    /// What one frame decodes to.
    type Frame;

    /// Takes one frame off the front of `buf`, or `Ok(None)` if more bytes are needed.
    ///
    /// On error the offending bytes have been removed from `buf`.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Frame>, DecodeError>;
}

/// Bytes that are not a frame of this protocol; they have been discarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A delimited frame whose content does not parse.
    #[error("{reason}: \"{}\"", escape(bytes))]
    Garbage {
        /// The discarded bytes.
        bytes: Vec<u8>,
        /// Why they were rejected.
        reason: &'static str,
    },
    /// No frame boundary within the protocol's longest frame; the bytes were dropped.
    #[error("no frame end within {limit} bytes")]
    Oversized {
        /// The longest frame the protocol allows.
        limit: usize,
    },
    /// A frame whose checksum does not match its content.
    #[error("checksum mismatch: computed {computed:#06x}, received {received:#06x}")]
    Checksum {
        /// Over the received content.
        computed: u16,
        /// As received.
        received: u16,
    },
}

impl DecodeError {
    pub(crate) fn garbage(bytes: &[u8], reason: &'static str) -> Self {
        Self::Garbage { bytes: bytes.to_vec(), reason }
    }
}

/// Renders bytes for logs, errors and transcripts: printable ASCII as is, `\r`, `\n`, and
/// `\xNN` for everything else.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(char::from(b)),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s
}

/// Takes one line off the front of `buf`, without its terminator.
///
/// A line ends at CR, LF or CR LF; empty lines are skipped, so a CR LF split across two reads
/// does not produce a phantom empty frame. If no terminator appears within `limit` bytes the
/// buffer is dropped and [`DecodeError::Oversized`] returned.
pub(crate) fn take_line(buf: &mut BytesMut, limit: usize) -> Result<Option<BytesMut>, DecodeError> {
    let skip = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    let _ = buf.split_to(skip);
    match buf.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(end) if end <= limit => {
            let line = buf.split_to(end);
            // Consume a CR and the LF after it, if already here.
            let mut terminator = 1;
            if buf[0] == b'\r' && buf.get(1) == Some(&b'\n') {
                terminator = 2;
            }
            let _ = buf.split_to(terminator);
            Ok(Some(line))
        }
        Some(end) => {
            let _ = buf.split_to(end + 1);
            Err(DecodeError::Oversized { limit })
        }
        None if buf.len() > limit => {
            buf.clear();
            Err(DecodeError::Oversized { limit })
        }
        None => Ok(None),
    }
}

/// CRC-16/XMODEM: polynomial 0x1021, initial value 0, no reflection (Python's
/// `binascii.crc_hqx(data, 0)`), as New Era safe mode uses it.
pub fn crc16_ccitt(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_end_at_cr_lf_or_crlf_and_empty_lines_are_skipped() {
        let mut buf = BytesMut::from(&b"\r\nA\r\nB\rC\nD"[..]);
        assert_eq!(take_line(&mut buf, 8).unwrap().as_deref(), Some(&b"A"[..]));
        assert_eq!(take_line(&mut buf, 8).unwrap().as_deref(), Some(&b"B"[..]));
        assert_eq!(take_line(&mut buf, 8).unwrap().as_deref(), Some(&b"C"[..]));
        assert_eq!(take_line(&mut buf, 8).unwrap(), None);
        assert_eq!(&buf[..], b"D");
    }

    #[test]
    fn a_line_without_end_beyond_the_limit_is_dropped() {
        let mut buf = BytesMut::from(&b"0123456789"[..]);
        assert_eq!(take_line(&mut buf, 4), Err(DecodeError::Oversized { limit: 4 }));
        assert!(buf.is_empty());
        let mut buf = BytesMut::from(&b"0123456789\r\nOK\r\n"[..]);
        assert_eq!(take_line(&mut buf, 4), Err(DecodeError::Oversized { limit: 4 }));
        assert_eq!(take_line(&mut buf, 4).unwrap().as_deref(), Some(&b"OK"[..]));
    }

    #[test]
    fn crc_matches_the_new_era_manual() {
        // NE-1000 manual: the packet back to basic mode is 02 08 'SAF0' 55 43 03.
        assert_eq!(crc16_ccitt(b"SAF0"), 0x5543);
        assert_eq!(crc16_ccitt(b""), 0);
        // The CRC-16/XMODEM check value.
        assert_eq!(crc16_ccitt(b"123456789"), 0x31c3);
    }

    #[test]
    fn escape_shows_control_bytes() {
        assert_eq!(escape(b"\x02 00S\x03\r\n\"\\"), "\\x02 00S\\x03\\r\\n\\\"\\\\");
    }
}
