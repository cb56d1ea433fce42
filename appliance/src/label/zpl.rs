//! The label as ZPL II, for the Zebra-compatible thermal printers pharmacies use (203 dpi,
//! 4 × 2 inch media).
//!
//! `^CI28` selects UTF-8, and every field is written with `^FH_` hex escapes: the command
//! prefixes `^` and `~`, the escape character `_` itself, and every byte of a non-ASCII
//! character (`–` is `_E2_80_93`) — so no text from a recipe or a patient record can end a
//! field or start a command. Text uses the resident scalable font 0. The barcode is `^BC` in
//! mode N with the code sets written out as invocation codes (`>:` start B, `>;` start C,
//! `>5` to C, `>6` to B, `><` for `>`), so the printer draws exactly the symbols our encoder
//! chose and that the PDF shows; the printer adds the check symbol. Its text line is printed
//! by us, in the label's font, rather than by `^BC`.

use std::fmt::Write as _;

use super::layout::{HEIGHT, Item, WIDTH};
use super::{CodeSet, Step};

/// ZPL for the laid-out items.
pub(super) fn render(items: &[Item]) -> String {
    let mut z = String::new();
    z.push_str("^XA\n^CI28\n");
    let _ = writeln!(z, "^PW{WIDTH}\n^LL{HEIGHT}\n^LH0,0");
    for item in items {
        // Writing to a String cannot fail.
        let _ = match item {
            Item::Text { x, y, size, text, .. } => {
                writeln!(z, "^FO{x},{y}^A0N,{size},{size}^FH_^FD{}^FS", escape(text))
            }
            Item::Frame { x, y, w, h, thickness } => {
                writeln!(z, "^FO{x},{y}^GB{w},{h},{thickness},B,0^FS")
            }
            Item::Bars { x, y, height, module, barcode } => writeln!(
                z,
                "^BY{module}\n^FO{x},{y}^BCN,{height},N,N,N,N^FH_^FD{}^FS",
                field(barcode.steps())
            ),
        };
    }
    z.push_str("^PQ1\n^XZ\n");
    z
}

/// `^FD` data for `^BC` mode N from the encoder's steps.
fn field(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Start(CodeSet::B) => out.push_str(">:"),
            Step::Start(CodeSet::C) => out.push_str(">;"),
            Step::Switch(CodeSet::C) => out.push_str(">5"),
            Step::Switch(CodeSet::B) => out.push_str(">6"),
            Step::Pair(n) => {
                let _ = write!(out, "{n:02}");
            }
            Step::Char(b'>') => out.push_str("><"),
            Step::Char(c) => out.push_str(&escape(&char::from(*c).to_string())),
        }
    }
    out
}

/// Text for a `^FH_` field: `^`, `~`, `_` and non-ASCII as `_XX` hex bytes of their UTF-8.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '^' | '~' | '_' => {
                let _ = write!(out, "_{:02X}", u32::from(c));
            }
            ' '..='~' => out.push(c),
            _ => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "_{b:02X}");
                }
            }
        }
    }
    out
}
