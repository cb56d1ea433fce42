//! Where everything goes on the 4 × 2 inch label, in printer dots at 203 dpi, computed once
//! and drawn twice (ZPL and PDF) so both carry the same lines in the same places.
//!
//! Top to bottom: patient ID (large) and name; product; strength and quantity; the beyond-use
//! date in a heavy frame with the preparation date; storage; auxiliary warnings, each after a
//! black square; batch and releasing pharmacist; site; the barcode with its text. Nothing
//! relies on colour. Text is wrapped and sized to fit: when the lines do not fit, every type
//! size steps down together to a legible minimum, and past that the label is refused
//! ([`LabelError::DoesNotFit`]) rather than cut — a truncated storage condition or warning
//! on a patient's bottle would be worse than no label.

use super::metrics::{Weight, width};
use super::{Barcode, LabelError, LabelFields, QUIET_ZONE_MODULES};

/// Printer resolution.
pub(super) const DPI: u32 = 203;
/// 4 inches.
pub(super) const WIDTH: u32 = 4 * DPI;
/// 2 inches.
pub(super) const HEIGHT: u32 = 2 * DPI;
/// Dots per barcode module: 0.25 mm, wide enough for handheld scanners at 203 dpi.
pub(super) const MODULE: u32 = 2;

const MARGIN: u32 = 16;
const CONTENT: u32 = WIDTH - 2 * MARGIN;
const TOP: u32 = 12;
const BOTTOM: u32 = 12;
const FRAME: u32 = 4;
const PAD: u32 = 6;

/// Something drawn on the label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Item {
    /// One line of text; `y` is the top of a `size`-dot-high line.
    Text { x: u32, y: u32, size: u32, weight: Weight, text: String },
    /// A rectangle outline; `thickness` equal to the smaller side fills it.
    Frame { x: u32, y: u32, w: u32, h: u32, thickness: u32 },
    /// Barcode bars from `x` (the quiet zone is left of it), `module` dots per module.
    Bars { x: u32, y: u32, height: u32, module: u32, barcode: Barcode },
}

/// Type sizes in dots (cap height plus descender), nominal and smallest.
#[derive(Debug, Clone, Copy)]
struct Size {
    nominal: u32,
    min: u32,
}

impl Size {
    fn at(self, step: u32) -> u32 {
        self.nominal.saturating_sub(2 * step).max(self.min)
    }
}

const PATIENT: Size = Size { nominal: 44, min: 32 };
const NAME: Size = Size { nominal: 28, min: 20 };
const PRODUCT: Size = Size { nominal: 32, min: 22 };
const BODY: Size = Size { nominal: 22, min: 18 };
const DATE: Size = Size { nominal: 40, min: 28 };
const STORAGE: Size = Size { nominal: 24, min: 18 };
const AUXILIARY: Size = Size { nominal: 22, min: 18 };
const FOOTER: Size = Size { nominal: 20, min: 16 };
const BARS: Size = Size { nominal: 50, min: 40 };
const ALL: [Size; 9] = [PATIENT, NAME, PRODUCT, BODY, DATE, STORAGE, AUXILIARY, FOOTER, BARS];

/// Line pitch for a size: an eighth of the size between lines.
fn pitch(size: u32) -> u32 {
    size + size / 8
}

/// Lays the label out at the largest sizes at which everything fits.
pub(super) fn layout(f: &LabelFields, barcode: &Barcode) -> Result<Vec<Item>, LabelError> {
    let last = ALL.iter().map(|s| (s.nominal - s.min).div_ceil(2)).max().unwrap_or(0);
    let mut step = 0;
    loop {
        match attempt(f, barcode, step) {
            Err(LabelError::DoesNotFit { .. }) if step < last => step += 1,
            other => return other,
        }
    }
}

fn attempt(f: &LabelFields, barcode: &Barcode, step: u32) -> Result<Vec<Item>, LabelError> {
    let mut items = Vec::new();
    let mut y = TOP;
    let text =
        |x, y, size, weight, text: &str| Item::Text { x, y, size, weight, text: text.to_owned() };
    // Text of a smaller size on the same baseline as a larger one that starts at `y`.
    let baseline = |y: u32, large: u32, small: u32| y + (large - small) * 4 / 5;

    // Patient: the ID large, the name after it.
    let id = PATIENT.at(step);
    let id_width = width(&f.patient_id, Weight::Bold, id);
    if id_width > CONTENT {
        return Err(LabelError::DoesNotFit { field: "patient ID" });
    }
    items.push(text(MARGIN, y, id, Weight::Bold, &f.patient_id));
    if let Some(name) = &f.patient_name {
        let size = NAME.at(step);
        let x = MARGIN + id_width + 24;
        if x + width(name, Weight::Regular, size) > MARGIN + CONTENT {
            return Err(LabelError::DoesNotFit { field: "patient name" });
        }
        items.push(text(x, baseline(y, id, size), size, Weight::Regular, name));
    }
    y += id + 6;

    let size = PRODUCT.at(step);
    for line in wrap(&f.product, Weight::Bold, size, CONTENT, 2, "product")? {
        items.push(text(MARGIN, y, size, Weight::Bold, &line));
        y += pitch(size);
    }

    let size = BODY.at(step);
    let line = format!("Strength {}      Quantity {}", f.strength, f.quantity);
    if width(&line, Weight::Regular, size) > CONTENT {
        return Err(LabelError::DoesNotFit { field: "strength and quantity" });
    }
    items.push(text(MARGIN, y, size, Weight::Regular, &line));
    y += pitch(size) + 4;

    // The beyond-use date: large, framed, with its caption and the preparation date.
    let date = DATE.at(step);
    let small = BODY.at(step);
    let caption = "Beyond-use date";
    let bud = f.beyond_use.to_string();
    let prepared = format!("Prepared {}", f.prepared);
    let inner = FRAME + PAD;
    let caption_w = width(caption, Weight::Regular, small);
    let bud_w = width(&bud, Weight::Bold, date);
    let prepared_w = width(&prepared, Weight::Regular, small);
    if caption_w + 16 + bud_w + 24 + prepared_w > CONTENT - 2 * inner {
        return Err(LabelError::DoesNotFit { field: "beyond-use date" });
    }
    let box_h = date + 2 * inner;
    items.push(Item::Frame { x: MARGIN, y, w: CONTENT, h: box_h, thickness: FRAME });
    let top = y + inner;
    items.push(text(MARGIN + inner, baseline(top, date, small), small, Weight::Regular, caption));
    items.push(text(MARGIN + inner + caption_w + 16, top, date, Weight::Bold, &bud));
    let right = MARGIN + CONTENT - inner - prepared_w;
    items.push(text(right, baseline(top, date, small), small, Weight::Regular, &prepared));
    y += box_h + 8;

    let size = STORAGE.at(step);
    for line in wrap(&f.storage, Weight::Regular, size, CONTENT, 3, "storage")? {
        items.push(text(MARGIN, y, size, Weight::Regular, &line));
        y += pitch(size);
    }
    y += 2;

    let size = AUXILIARY.at(step);
    let mark = size * 3 / 5;
    let indent = mark + 10;
    for warning in &f.auxiliary {
        let lines = wrap(warning, Weight::Bold, size, CONTENT - indent, 1, "auxiliary warning")?;
        // A filled square marks each warning, in print as on screen.
        let mark_y = baseline(y, size, mark);
        items.push(Item::Frame { x: MARGIN, y: mark_y, w: mark, h: mark, thickness: mark });
        for line in lines {
            items.push(text(MARGIN + indent, y, size, Weight::Bold, &line));
            y += pitch(size);
        }
    }
    y += 2;

    let size = FOOTER.at(step);
    let released = format!("Batch {} · Released by {}", f.batch_id, f.released_by);
    for (line, field) in [(released.as_str(), "batch and releaser"), (f.site.as_str(), "site")] {
        if width(line, Weight::Regular, size) > CONTENT {
            return Err(LabelError::DoesNotFit { field });
        }
        items.push(text(MARGIN, y, size, Weight::Regular, line));
        y += pitch(size);
    }

    // The barcode, centred at the bottom with its quiet zones, its text under it.
    let bars = barcode.width_modules() * MODULE;
    if bars + 2 * QUIET_ZONE_MODULES * MODULE > CONTENT {
        return Err(LabelError::DoesNotFit { field: "barcode" });
    }
    let bar_h = BARS.at(step);
    let hr = FOOTER.at(step);
    let hr_y = HEIGHT - BOTTOM - hr;
    let bar_y = hr_y - 2 - bar_h;
    if y + 4 > bar_y {
        return Err(LabelError::DoesNotFit { field: "label" });
    }
    items.push(Item::Bars {
        x: (WIDTH - bars) / 2,
        y: bar_y,
        height: bar_h,
        module: MODULE,
        barcode: barcode.clone(),
    });
    let hr_w = width(barcode.data(), Weight::Regular, hr);
    items.push(text(WIDTH.saturating_sub(hr_w) / 2, hr_y, hr, Weight::Regular, barcode.data()));
    Ok(items)
}

/// Breaks `text` into at most `max_lines` lines no wider than `max_width`, on spaces where
/// possible; a word longer than a line is broken between characters.
fn wrap(
    text: &str,
    weight: Weight,
    size: u32,
    max_width: u32,
    max_lines: usize,
    field: &'static str,
) -> Result<Vec<String>, LabelError> {
    let fits = |s: &str| width(s, weight, size) <= max_width;
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let joined = if line.is_empty() { word.to_owned() } else { format!("{line} {word}") };
        if fits(&joined) {
            line = joined;
            continue;
        }
        if !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        for c in word.chars() {
            line.push(c);
            if !fits(&line) {
                line.pop();
                if line.is_empty() {
                    return Err(LabelError::DoesNotFit { field });
                }
                lines.push(std::mem::replace(&mut line, c.to_string()));
            }
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    if lines.len() > max_lines {
        return Err(LabelError::DoesNotFit { field });
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_keeps_every_word_within_the_width() {
        let text = "Store refrigerated at 2–8 °C. Shake well. Protect from light.";
        let lines = wrap(text, Weight::Regular, 24, 300, 5, "t").unwrap();
        assert!(lines.len() > 1, "{lines:?}");
        assert!(lines.iter().all(|l| width(l, Weight::Regular, 24) <= 300), "{lines:?}");
        assert_eq!(lines.join(" "), text);
    }

    #[test]
    fn a_word_longer_than_a_line_is_broken_not_lost() {
        let lines = wrap("ABCDEFGHIJKLMNOPQRSTUVWXYZ", Weight::Bold, 20, 100, 9, "t").unwrap();
        assert!(lines.len() > 1);
        assert_eq!(lines.concat(), "ABCDEFGHIJKLMNOPQRSTUVWXYZ");
    }

    #[test]
    fn too_many_lines_is_refused_by_field() {
        let err = wrap("one two three four", Weight::Regular, 20, 50, 2, "storage").unwrap_err();
        assert_eq!(err, LabelError::DoesNotFit { field: "storage" });
    }

    #[test]
    fn sizes_step_down_to_their_minimum() {
        assert_eq!(PATIENT.at(0), 44);
        assert_eq!(PATIENT.at(3), 38);
        assert_eq!(PATIENT.at(100), 32);
    }
}
