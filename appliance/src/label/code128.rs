//! Code 128 (ISO/IEC 15417), encoded here rather than by a crate: the symbology is one table
//! and a checksum, and the label must draw exactly the bars the printer would.
//!
//! # What is encoded
//! Printable ASCII (space to `~`) in code set B, switching to code set C (two digits per
//! symbol) for runs of four or more digits, after the rules of ISO/IEC 15417 Annex E: start
//! in C if the data begins with four or more digits (or is exactly two), and in a run of odd
//! length switch after its first digit. Anything else, including control characters and
//! non-ASCII, is refused with [`BarcodeError::Unsupported`]: a scanner must read back exactly
//! the text printed under the bars.
//!
//! # Symbols and modules
//! A symbol is 3 bars and 3 spaces, 11 modules wide; the stop symbol adds a 2-module bar
//! (13 modules). The check symbol is `(start + Σ position × value) mod 103`, positions
//! counted from 1 after the start symbol. A quiet zone of at least 10 modules must be left
//! blank on either side; [`Barcode::modules`] does not include it.

use std::fmt;

/// The symbols' bar and space widths in modules (bar first), by symbol value 0–105.
const PATTERNS: [[u8; 6]; 106] = [
    [2, 1, 2, 2, 2, 2],
    [2, 2, 2, 1, 2, 2],
    [2, 2, 2, 2, 2, 1],
    [1, 2, 1, 2, 2, 3],
    [1, 2, 1, 3, 2, 2],
    [1, 3, 1, 2, 2, 2],
    [1, 2, 2, 2, 1, 3],
    [1, 2, 2, 3, 1, 2],
    [1, 3, 2, 2, 1, 2],
    [2, 2, 1, 2, 1, 3],
    [2, 2, 1, 3, 1, 2],
    [2, 3, 1, 2, 1, 2],
    [1, 1, 2, 2, 3, 2],
    [1, 2, 2, 1, 3, 2],
    [1, 2, 2, 2, 3, 1],
    [1, 1, 3, 2, 2, 2],
    [1, 2, 3, 1, 2, 2],
    [1, 2, 3, 2, 2, 1],
    [2, 2, 3, 2, 1, 1],
    [2, 2, 1, 1, 3, 2],
    [2, 2, 1, 2, 3, 1],
    [2, 1, 3, 2, 1, 2],
    [2, 2, 3, 1, 1, 2],
    [3, 1, 2, 1, 3, 1],
    [3, 1, 1, 2, 2, 2],
    [3, 2, 1, 1, 2, 2],
    [3, 2, 1, 2, 2, 1],
    [3, 1, 2, 2, 1, 2],
    [3, 2, 2, 1, 1, 2],
    [3, 2, 2, 2, 1, 1],
    [2, 1, 2, 1, 2, 3],
    [2, 1, 2, 3, 2, 1],
    [2, 3, 2, 1, 2, 1],
    [1, 1, 1, 3, 2, 3],
    [1, 3, 1, 1, 2, 3],
    [1, 3, 1, 3, 2, 1],
    [1, 1, 2, 3, 1, 3],
    [1, 3, 2, 1, 1, 3],
    [1, 3, 2, 3, 1, 1],
    [2, 1, 1, 3, 1, 3],
    [2, 3, 1, 1, 1, 3],
    [2, 3, 1, 3, 1, 1],
    [1, 1, 2, 1, 3, 3],
    [1, 1, 2, 3, 3, 1],
    [1, 3, 2, 1, 3, 1],
    [1, 1, 3, 1, 2, 3],
    [1, 1, 3, 3, 2, 1],
    [1, 3, 3, 1, 2, 1],
    [3, 1, 3, 1, 2, 1],
    [2, 1, 1, 3, 3, 1],
    [2, 3, 1, 1, 3, 1],
    [2, 1, 3, 1, 1, 3],
    [2, 1, 3, 3, 1, 1],
    [2, 1, 3, 1, 3, 1],
    [3, 1, 1, 1, 2, 3],
    [3, 1, 1, 3, 2, 1],
    [3, 3, 1, 1, 2, 1],
    [3, 1, 2, 1, 1, 3],
    [3, 1, 2, 3, 1, 1],
    [3, 3, 2, 1, 1, 1],
    [3, 1, 4, 1, 1, 1],
    [2, 2, 1, 4, 1, 1],
    [4, 3, 1, 1, 1, 1],
    [1, 1, 1, 2, 2, 4],
    [1, 1, 1, 4, 2, 2],
    [1, 2, 1, 1, 2, 4],
    [1, 2, 1, 4, 2, 1],
    [1, 4, 1, 1, 2, 2],
    [1, 4, 1, 2, 2, 1],
    [1, 1, 2, 2, 1, 4],
    [1, 1, 2, 4, 1, 2],
    [1, 2, 2, 1, 1, 4],
    [1, 2, 2, 4, 1, 1],
    [1, 4, 2, 1, 1, 2],
    [1, 4, 2, 2, 1, 1],
    [2, 4, 1, 2, 1, 1],
    [2, 2, 1, 1, 1, 4],
    [4, 1, 3, 1, 1, 1],
    [2, 4, 1, 1, 1, 2],
    [1, 3, 4, 1, 1, 1],
    [1, 1, 1, 2, 4, 2],
    [1, 2, 1, 1, 4, 2],
    [1, 2, 1, 2, 4, 1],
    [1, 1, 4, 2, 1, 2],
    [1, 2, 4, 1, 1, 2],
    [1, 2, 4, 2, 1, 1],
    [4, 1, 1, 2, 1, 2],
    [4, 2, 1, 1, 1, 2],
    [4, 2, 1, 2, 1, 1],
    [2, 1, 2, 1, 4, 1],
    [2, 1, 4, 1, 2, 1],
    [4, 1, 2, 1, 2, 1],
    [1, 1, 1, 1, 4, 3],
    [1, 1, 1, 3, 4, 1],
    [1, 3, 1, 1, 4, 1],
    [1, 1, 4, 1, 1, 3],
    [1, 1, 4, 3, 1, 1],
    [4, 1, 1, 1, 1, 3],
    [4, 1, 1, 3, 1, 1],
    [1, 1, 3, 1, 4, 1],
    [1, 1, 4, 1, 3, 1],
    [3, 1, 1, 1, 4, 1],
    [4, 1, 1, 1, 3, 1],
    [2, 1, 1, 4, 1, 2],
    [2, 1, 1, 2, 1, 4],
    [2, 1, 1, 2, 3, 2],
];

/// The stop symbol with its final bar: 13 modules.
const STOP: [u8; 7] = [2, 3, 3, 1, 1, 1, 2];

const CODE_C: u8 = 99;
const CODE_B: u8 = 100;
const START_B: u8 = 104;
const START_C: u8 = 105;
const STOP_VALUE: u8 = 106;

/// Blank modules required on either side of the bars.
pub const QUIET_ZONE_MODULES: u32 = 10;

/// A code set of the symbol sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeSet {
    /// Printable ASCII, one character per symbol.
    B,
    /// Digit pairs 00–99, one pair per symbol.
    C,
}

/// One step of the encoded sequence, before the check and stop symbols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The start symbol of a code set.
    Start(CodeSet),
    /// A switch to another code set.
    Switch(CodeSet),
    /// A printable ASCII character in code set B.
    Char(u8),
    /// Two digits in code set C.
    Pair(u8),
}

impl Step {
    fn value(self) -> u8 {
        match self {
            Step::Start(CodeSet::B) => START_B,
            Step::Start(CodeSet::C) => START_C,
            Step::Switch(CodeSet::B) => CODE_B,
            Step::Switch(CodeSet::C) => CODE_C,
            Step::Char(c) => c - b' ',
            Step::Pair(n) => n,
        }
    }
}

/// Why data cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BarcodeError {
    /// Nothing to encode.
    #[error("a barcode needs at least one character")]
    Empty,
    /// A character outside printable ASCII.
    #[error(
        "{shown} at position {position} cannot be encoded: Code 128 set B holds printable ASCII only",
        shown = show(*.character)
    )]
    Unsupported {
        /// The character.
        character: char,
        /// Its position in the data, counted in characters from 1.
        position: usize,
    },
}

fn show(c: char) -> String {
    if c.is_control() {
        format!("U+{:04X}", u32::from(c))
    } else {
        format!("`{c}` (U+{:04X})", u32::from(c))
    }
}

/// Encoded Code 128 data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Barcode {
    data: String,
    steps: Vec<Step>,
    check: u8,
}

impl Barcode {
    /// Encodes `data`, choosing code sets for the shortest symbol sequence (see the module
    /// documentation).
    pub fn encode(data: &str) -> Result<Self, BarcodeError> {
        if data.is_empty() {
            return Err(BarcodeError::Empty);
        }
        if let Some((i, c)) = data.chars().enumerate().find(|(_, c)| !(' '..='~').contains(c)) {
            return Err(BarcodeError::Unsupported { character: c, position: i + 1 });
        }
        let bytes = data.as_bytes();
        let digits_from = |i: usize| bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        let mut set = if digits_from(0) >= 4 || (bytes.len() == 2 && digits_from(0) == 2) {
            CodeSet::C
        } else {
            CodeSet::B
        };
        let mut steps = vec![Step::Start(set)];
        let mut i = 0;
        while i < bytes.len() {
            let run = digits_from(i);
            match set {
                CodeSet::C if run >= 2 => {
                    steps.push(Step::Pair((bytes[i] - b'0') * 10 + (bytes[i + 1] - b'0')));
                    i += 2;
                }
                CodeSet::C => {
                    set = CodeSet::B;
                    steps.push(Step::Switch(set));
                }
                CodeSet::B if run >= 4 => {
                    // An odd run leaves its first digit in B so that C gets whole pairs.
                    if run % 2 == 1 {
                        steps.push(Step::Char(bytes[i]));
                        i += 1;
                    }
                    set = CodeSet::C;
                    steps.push(Step::Switch(set));
                }
                CodeSet::B => {
                    steps.push(Step::Char(bytes[i]));
                    i += 1;
                }
            }
        }
        let weighted = steps.iter().skip(1).zip(1u32..).map(|(s, k)| u32::from(s.value()) * k);
        let sum = u32::from(steps[0].value()) + weighted.sum::<u32>();
        let check = u8::try_from(sum % 103).expect("a remainder of 103 fits in a byte");
        Ok(Barcode { data: data.to_owned(), steps, check })
    }

    /// The encoded text, as a scanner reads it back.
    pub fn data(&self) -> &str {
        &self.data
    }

    /// The check symbol's value (0–102).
    pub fn check(&self) -> u8 {
        self.check
    }

    /// The start symbol, data and code-set switches, in order (no check or stop symbol).
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Every symbol value from start to stop, the check symbol included.
    pub fn symbols(&self) -> Vec<u8> {
        let mut out: Vec<u8> = self.steps.iter().map(|s| s.value()).collect();
        out.push(self.check);
        out.push(STOP_VALUE);
        out
    }

    /// Bar and space widths in modules, starting and ending with a bar; quiet zones excluded.
    pub fn modules(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.steps.len() * 6 + 13);
        for v in self.symbols() {
            match PATTERNS.get(usize::from(v)) {
                Some(p) => out.extend_from_slice(p),
                None => out.extend_from_slice(&STOP),
            }
        }
        out
    }

    /// Width of the bars in modules, quiet zones excluded.
    pub fn width_modules(&self) -> u32 {
        self.modules().iter().map(|m| u32::from(*m)).sum()
    }
}

impl fmt::Display for Barcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.data)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Reads modules back into text, as a scanner would: the test's independent check that
    /// every encoding decodes to its data and carries a valid check symbol.
    fn decode(modules: &[u8]) -> String {
        let (body, stop) = modules.split_at(modules.len() - 7);
        assert_eq!(stop, STOP);
        let values: Vec<u8> = body
            .chunks(6)
            .map(|c| {
                let v = PATTERNS.iter().position(|p| p == c).expect("a known symbol");
                u8::try_from(v).unwrap()
            })
            .collect();
        let (check, values) = values.split_last().unwrap();
        let sum: u32 = u32::from(values[0])
            + values[1..].iter().zip(1u32..).map(|(v, k)| u32::from(*v) * k).sum::<u32>();
        assert_eq!(u32::from(*check), sum % 103, "check symbol");
        let mut set = match values[0] {
            START_B => CodeSet::B,
            START_C => CodeSet::C,
            other => panic!("start {other}"),
        };
        let mut out = String::new();
        for v in &values[1..] {
            match (set, *v) {
                (CodeSet::C, CODE_B) => set = CodeSet::B,
                (CodeSet::B, CODE_C) => set = CodeSet::C,
                (CodeSet::B, v) => out.push(char::from(v + b' ')),
                (CodeSet::C, v) => out.push_str(&format!("{v:02}")),
            }
        }
        out
    }

    #[test]
    fn every_pattern_is_eleven_modules_with_even_bars_and_all_differ() {
        let mut seen = BTreeSet::new();
        for (v, p) in PATTERNS.iter().enumerate() {
            assert_eq!(p.iter().map(|m| u32::from(*m)).sum::<u32>(), 11, "symbol {v}");
            // ISO/IEC 15417: the bars of a symbol add up to an even number of modules.
            assert_eq!((p[0] + p[2] + p[4]) % 2, 0, "symbol {v}");
            assert!(seen.insert(*p), "symbol {v} repeats a pattern");
        }
        assert_eq!(STOP.iter().map(|m| u32::from(*m)).sum::<u32>(), 13);
        // Spot checks against the published table: value 0 (space in B) is 212222, Start B
        // 211214, Start C 211232, Code C 113141, Code B 114131.
        assert_eq!(PATTERNS[0], [2, 1, 2, 2, 2, 2]);
        assert_eq!(PATTERNS[usize::from(START_B)], [2, 1, 1, 2, 1, 4]);
        assert_eq!(PATTERNS[usize::from(START_C)], [2, 1, 1, 2, 3, 2]);
        assert_eq!(PATTERNS[usize::from(CODE_C)], [1, 1, 3, 1, 4, 1]);
        assert_eq!(PATTERNS[usize::from(CODE_B)], [1, 1, 4, 1, 3, 1]);
    }

    #[test]
    fn wikipedias_worked_examples() {
        // "Wikipedia" in set B: 104 + 55·1 + 73·2 + 75·3 + 73·4 + 80·5 + 69·6 + 68·7 + 73·8
        // + 65·9 = 3281 = 31·103 + 88.
        let w = Barcode::encode("Wikipedia").unwrap();
        assert_eq!(w.check(), 88);
        assert_eq!(w.symbols(), [104, 55, 73, 75, 73, 80, 69, 68, 73, 65, 88, 106]);
        // "PJJ123C": a three-digit run stays in B. 104 + 48·1 + 42·2 + 42·3 + 17·4 + 18·5
        // + 19·6 + 35·7 = 879 = 8·103 + 55.
        let p = Barcode::encode("PJJ123C").unwrap();
        assert_eq!(p.check(), 55);
        assert_eq!(p.symbols().len(), 1 + 7 + 2);
        // Modules: Start B (2-1-1-2-1-4) first, the stop with its final bar (2-3-3-1-1-1-2) last.
        let m = w.modules();
        assert_eq!(&m[..6], &[2, 1, 1, 2, 1, 4]);
        assert_eq!(&m[m.len() - 7..], &STOP);
        assert_eq!(w.width_modules(), 11 * 11 + 13);
    }

    #[test]
    fn digit_runs_of_four_or_more_use_set_c() {
        // All digits, even: Start C, 12, 34. 105 + 12·1 + 34·2 = 185 = 103 + 82.
        let c = Barcode::encode("1234").unwrap();
        assert_eq!(c.symbols(), [105, 12, 34, 82, 106]);
        // Two digits alone start in C too.
        assert_eq!(
            Barcode::encode("42").unwrap().steps(),
            [Step::Start(CodeSet::C), Step::Pair(42)]
        );
        // Three digits stay in B: a switch would cost more than it saves.
        assert_eq!(Barcode::encode("123").unwrap().steps()[0], Step::Start(CodeSet::B));
        // An odd run starting the data: pairs in C, then the last digit in B.
        assert_eq!(
            Barcode::encode("12345").unwrap().steps(),
            [
                Step::Start(CodeSet::C),
                Step::Pair(12),
                Step::Pair(34),
                Step::Switch(CodeSet::B),
                Step::Char(b'5')
            ]
        );
        // An odd run inside: its first digit in B, the rest in C.
        assert_eq!(
            Barcode::encode("A12345").unwrap().steps(),
            [
                Step::Start(CodeSet::B),
                Step::Char(b'A'),
                Step::Char(b'1'),
                Step::Switch(CodeSet::C),
                Step::Pair(23),
                Step::Pair(45)
            ]
        );
    }

    #[test]
    fn the_label_content_by_hand() {
        // P - | C 00 01 | B / B - | C 20 26 11 21 | B - 0 0 1
        let b = Barcode::encode("P-0001/B-20261121-001").unwrap();
        assert_eq!(
            b.symbols(),
            [
                104, 48, 13, 99, 0, 1, 100, 15, 34, 13, 99, 20, 26, 11, 21, 100, 13, 16, 16, 17,
                47, 106
            ]
        );
        // 104 + 48·1 + 13·2 + 99·3 + 0·4 + 1·5 + 100·6 + 15·7 + 34·8 + 13·9 + 99·10 + 20·11
        // + 26·12 + 11·13 + 21·14 + 100·15 + 13·16 + 16·17 + 16·18 + 17·19 = 6124
        // = 59·103 + 47.
        assert_eq!(b.check(), 47);
        // 19 data symbols instead of 21 in set B alone.
        assert_eq!(b.width_modules(), (1 + 19 + 1) * 11 + 13);
    }

    #[test]
    fn every_encoding_decodes_to_its_data() {
        let cases = [
            " ",
            "~",
            "0",
            "00",
            "000",
            "0000",
            "a0000",
            "a00000b",
            "0000a",
            "00000a",
            "P-0001/B-20261121-001",
            "MRN 123456789/B-1",
            "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
        ];
        for data in cases {
            assert_eq!(decode(&Barcode::encode(data).unwrap().modules()), data, "{data:?}");
        }
        // Every mix of digits and a letter up to six characters.
        let alphabet = ['0', '1', '9', 'x'];
        let mut stack = vec![String::new()];
        while let Some(s) = stack.pop() {
            if !s.is_empty() {
                assert_eq!(decode(&Barcode::encode(&s).unwrap().modules()), s);
            }
            if s.len() < 6 {
                stack.extend(alphabet.iter().map(|c| format!("{s}{c}")));
            }
        }
    }

    #[test]
    fn characters_outside_set_b_are_refused_by_position() {
        assert_eq!(Barcode::encode(""), Err(BarcodeError::Empty));
        let e = Barcode::encode("P-0001/B-é").unwrap_err();
        assert_eq!(e, BarcodeError::Unsupported { character: 'é', position: 10 });
        assert_eq!(
            e.to_string(),
            "`é` (U+00E9) at position 10 cannot be encoded: Code 128 set B holds printable ASCII only"
        );
        assert_eq!(
            Barcode::encode("P\t1").unwrap_err().to_string(),
            "U+0009 at position 2 cannot be encoded: Code 128 set B holds printable ASCII only"
        );
        assert!(Barcode::encode("\u{7f}").is_err());
    }
}
