//! Advance widths of the standard PDF fonts Helvetica and Helvetica-Bold (Adobe's AFM
//! metrics), so the layout can wrap and fit text before anything is drawn.
//!
//! The ZPL rendering uses the printer's resident font 0, a condensed face that is narrower
//! than Helvetica at the same height, so a line measured here fits on the printer too.

use galen_recipes::model::windows_1252;

/// Which face a line is set in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Weight {
    /// Helvetica.
    Regular,
    /// Helvetica-Bold.
    Bold,
}

/// Width of `text` set `size` dots high, in dots, rounded up.
pub(super) fn width(text: &str, weight: Weight, size: u32) -> u32 {
    let table = match weight {
        Weight::Regular => &HELVETICA,
        Weight::Bold => &HELVETICA_BOLD,
    };
    let milli_em: u32 = text
        .chars()
        .map(|c| {
            // Text was checked printable; a full em keeps anything else from under-measuring.
            windows_1252(c)
                .and_then(|b| table.get(usize::from(b).checked_sub(32)?))
                .map_or(1000, |w| u32::from(*w))
        })
        .sum();
    (milli_em * size).div_ceil(1000)
}

/// Helvetica advance widths in 1/1000 em for Windows-1252 codes 32–255 (0: no glyph).
const HELVETICA: [u16; 224] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667,
    611, 778, 722, 278, 500, 667, 556, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
    667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500,
    222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,
    0, 556, 0, 222, 556, 333, 1000, 556, 556, 333, 1000, 667, 333, 1000, 0, 611, 0, 0, 222, 222,
    333, 333, 350, 556, 1000, 333, 1000, 500, 333, 944, 0, 500, 667, 278, 333, 556, 556, 556, 556,
    260, 556, 333, 737, 370, 556, 584, 333, 737, 333, 400, 584, 333, 333, 333, 578, 537, 278, 333,
    333, 365, 556, 834, 834, 834, 611, 667, 667, 667, 667, 667, 667, 1000, 722, 667, 667, 667, 667,
    278, 278, 278, 278, 722, 722, 778, 778, 778, 778, 778, 584, 778, 722, 722, 722, 722, 667, 667,
    611, 556, 556, 556, 556, 556, 556, 889, 500, 556, 556, 556, 556, 278, 278, 278, 278, 556, 556,
    556, 556, 556, 556, 556, 584, 611, 556, 556, 556, 556, 500, 556, 500,
];

/// Helvetica-Bold advance widths in 1/1000 em for Windows-1252 codes 32–255 (0: no glyph).
const HELVETICA_BOLD: [u16; 224] = [
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 556, 556, 556, 333, 333, 584, 584, 584, 611, 975, 722, 722, 722, 722, 667,
    611, 778, 722, 278, 556, 722, 611, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
    667, 611, 333, 278, 333, 584, 556, 333, 556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556,
    278, 889, 611, 611, 611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389, 280, 389, 584,
    0, 556, 0, 278, 556, 500, 1000, 556, 556, 333, 1000, 667, 333, 1000, 0, 611, 0, 0, 278, 278,
    500, 500, 350, 556, 1000, 333, 1000, 556, 333, 944, 0, 500, 667, 278, 333, 556, 556, 556, 556,
    280, 556, 333, 737, 370, 556, 584, 333, 737, 333, 400, 584, 333, 333, 333, 611, 556, 278, 333,
    333, 365, 556, 834, 834, 834, 611, 722, 722, 722, 722, 722, 722, 1000, 722, 667, 667, 667, 667,
    278, 278, 278, 278, 722, 722, 778, 778, 778, 778, 778, 584, 778, 722, 722, 722, 722, 667, 667,
    611, 556, 556, 556, 556, 556, 556, 889, 556, 556, 556, 556, 556, 278, 278, 278, 278, 611, 611,
    611, 611, 611, 611, 611, 584, 611, 611, 611, 611, 611, 556, 611, 556,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_follow_the_afm_metrics() {
        // Helvetica: H 722, e 556, l 222, o 556 → 2278/1000 em; at 1000 dots, 2278 dots.
        assert_eq!(width("Hello", Weight::Regular, 1000), 722 + 556 + 222 + 222 + 556);
        // Helvetica-Bold is wider: l 278.
        assert_eq!(width("Hello", Weight::Bold, 1000), 722 + 556 + 278 + 278 + 611);
        // Degree sign 400, en dash 556; rounded up at small sizes.
        assert_eq!(width("°", Weight::Regular, 1000), 400);
        assert_eq!(width("–", Weight::Regular, 1000), 556);
        assert_eq!(width("i", Weight::Regular, 10), 3);
        assert_eq!(width("", Weight::Bold, 40), 0);
    }
}
