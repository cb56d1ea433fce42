//! Fuzz bodies for every decoder, kept in the library so they cannot rot: the cargo-fuzz
//! targets in `devices/fuzz` call these, and a unit test runs each over the seed vectors and a
//! few thousand deterministic pseudo-random inputs on stable Rust.
//!
//! Each body feeds the input to a decoder in arbitrary chunk sizes (taken from the first byte)
//! and checks the decoder's contract: it never panics, always makes progress (a call that
//! returns a frame or an error consumed bytes), and never keeps more than its longest frame
//! buffered.

use bytes::BytesMut;

use crate::codec::Decode;

fn drive<D: Decode>(mut decoder: D, data: &[u8], limit: usize) {
    let Some((&first, data)) = data.split_first() else { return };
    let chunk = usize::from(first % 16) + 1;
    let mut buf = BytesMut::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(None) => break,
                Ok(Some(_)) | Err(_) => {
                    assert!(buf.len() < before, "a decoder must consume what it reports");
                }
            }
        }
        assert!(buf.len() <= limit + 8, "a decoder must not hoard {} bytes", buf.len());
    }
}

/// MT-SICS replies and commands.
pub fn mt_sics(data: &[u8]) {
    use crate::balance::mt_sics::codec::{CommandDecoder, MAX_LINE, ReplyDecoder};
    drive(ReplyDecoder, data, MAX_LINE);
    drive(CommandDecoder, data, MAX_LINE);
}

/// Sartorius SBI replies and commands.
pub fn sbi(data: &[u8]) {
    use crate::balance::sbi::codec::{CommandDecoder, MAX_LINE, ReplyDecoder};
    drive(ReplyDecoder, data, MAX_LINE);
    drive(CommandDecoder, data, MAX_LINE);
}

/// New Era replies in both framings, and commands.
pub fn new_era(data: &[u8]) {
    use crate::pump::new_era::codec::{CommandDecoder, MAX_FRAME, Mode, ReplyDecoder};
    drive(ReplyDecoder { mode: Mode::Basic }, data, MAX_FRAME);
    drive(ReplyDecoder { mode: Mode::Safe }, data, MAX_FRAME);
    drive(CommandDecoder, data, MAX_FRAME);
}

/// Watson-Marlow lines, status parsing and command parsing.
pub fn wm520(data: &[u8]) {
    use crate::pump::wm520::codec::{LineDecoder, MAX_LINE, parse_command, parse_status};
    drive(LineDecoder, data, MAX_LINE);
    let _ = parse_command(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_status(text);
    }
}

/// Seed inputs: the manuals' vectors, one per decoder family.
pub const SEEDS: &[&[u8]] = &[
    b"\x00S S    52.1873 g\r\nI4 A \"B123456789\"\r\nES\r\n",
    b"\x03TA 10.5 g\r\nSIR\r\n@\r\n",
    b"\x01N     +  52.1874 g  \r\nStat        High    \r\n\x1bP\x1bx1_",
    b"\x02\x0200A?R\x03\x0200SNE1000V3.923\x03\x0200II0.000W0.000ML\x03",
    b"\x05\x02\x08SAF0\x55\x43\x03\x02\x0700I\x19\xdd\x03",
    b"\x041RS\r\n520Du 15.84 520R 9.6MM 220.0 CW P/N 1 123456789 1 !\r\n",
    // Crashes cargo fuzz found, kept as regressions.
    b"#D\xca\x8aO[",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64: deterministic, so a failure reproduces.
    fn inputs() -> impl Iterator<Item = Vec<u8>> {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"SDIAL+-\" .0123456789gmkETZ@\r\n\x02\x03\x1bPxU_?!#RWCV";
        (0..4000).map(move |i| {
            let len = usize::try_from(next() % 200).unwrap_or(0);
            (0..len)
                .map(|_| {
                    let r = next();
                    // Half the inputs from the protocols' own alphabet, half raw bytes.
                    if i % 2 == 0 {
                        alphabet[usize::try_from(r % alphabet.len() as u64).unwrap_or(0)]
                    } else {
                        r.to_le_bytes()[0]
                    }
                })
                .collect()
        })
    }

    #[test]
    fn every_fuzz_body_survives_the_seeds_and_pseudo_random_input() {
        type Body = fn(&[u8]);
        let bodies: [Body; 4] = [mt_sics, sbi, new_era, wm520];
        let mut runs = 0;
        for input in SEEDS.iter().map(|s| s.to_vec()).chain(inputs()) {
            for body in bodies {
                body(&input);
                runs += 1;
            }
        }
        assert_eq!(runs, (SEEDS.len() + 4000) * bodies.len());
    }
}
