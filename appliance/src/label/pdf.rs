//! The label as a one-page PDF of the label's own size (4 × 2 inches), for sites that print
//! labels on an office printer and for the batch record.
//!
//! The house style of `records::pdf`: the standard Helvetica fonts in WinAnsi encoding,
//! nothing embedded, so every reader shows it. The page draws the same layout as the ZPL,
//! converted from printer dots (203 dpi) to points; the barcode is drawn as filled
//! rectangles from the encoder's module widths, so it scans like the printed one.

use galen_recipes::model::windows_1252;
use pdf_writer::{Content, Finish as _, Name, Pdf, Rect, Ref, Str, TextStr};

use super::LabelFields;
use super::layout::{DPI, HEIGHT, Item, WIDTH};
use super::metrics::Weight;

/// Dots to points.
fn pt(dots: u32) -> f32 {
    // Label coordinates are a few hundred dots: exact in f32.
    dots as f32 * 72.0 / DPI as f32
}

/// Points from the bottom edge for a distance in dots from the top edge.
fn from_bottom(dots: u32) -> f32 {
    pt(HEIGHT) - pt(dots)
}

/// Trimmed from each side of every bar, in dots. Rasterisers and printers grow bars (a
/// rectangle that ends exactly on a pixel edge also blackens the next pixel at 203 dpi, which
/// turns 2-dot bars into 3 and makes the code unreadable); printers of barcodes call the
/// correction bar width reduction. A fifth of a dot in all is 6 % of a wide bar at 600 dpi.
const BAR_TRIM: f32 = 0.1;

/// Where the baseline sits below the top of a line: Helvetica's cap height is 0.718 em, and
/// this leaves room for accents above and descenders below.
const BASELINE: f32 = 0.78;

fn font(weight: Weight) -> Name<'static> {
    match weight {
        Weight::Regular => Name(b"F1"),
        Weight::Bold => Name(b"F2"),
    }
}

/// One page, `items` drawn on it.
pub(super) fn render(items: &[Item], fields: &LabelFields) -> Vec<u8> {
    let mut pdf = Pdf::new();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let page = Ref::new(3);
    let content = Ref::new(4);
    let regular = Ref::new(5);
    let bold = Ref::new(6);
    let info = Ref::new(7);

    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids([page]).count(1);
    for (id, base) in [(regular, "Helvetica"), (bold, "Helvetica-Bold")] {
        pdf.type1_font(id)
            .base_font(Name(base.as_bytes()))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
    }
    pdf.document_info(info)
        .title(TextStr(&format!("Label: batch {}", fields.batch_id)))
        .producer(TextStr("Galen applianced"));
    let mut p = pdf.page(page);
    p.media_box(Rect::new(0.0, 0.0, pt(WIDTH), pt(HEIGHT))).parent(tree).contents(content);
    let mut resources = p.resources();
    let mut fonts = resources.fonts();
    fonts.pair(font(Weight::Regular), regular);
    fonts.pair(font(Weight::Bold), bold);
    fonts.finish();
    resources.finish();
    p.finish();

    let mut c = Content::new();
    c.set_fill_gray(0.0);
    c.set_stroke_gray(0.0);
    for item in items {
        match item {
            Item::Frame { x, y, w, h, thickness } if 2 * thickness >= (*w).min(*h) => {
                c.rect(pt(*x), from_bottom(y + h), pt(*w), pt(*h));
                c.fill_nonzero();
            }
            Item::Frame { x, y, w, h, thickness } => {
                // ZPL draws a box's border inside its outline; so does this.
                let t = pt(*thickness);
                c.set_line_width(t);
                c.rect(pt(*x) + t / 2.0, from_bottom(y + h) + t / 2.0, pt(*w) - t, pt(*h) - t);
                c.stroke();
            }
            Item::Bars { x, y, height, module, barcode } => {
                let mut at = *x;
                for (i, w) in barcode.modules().iter().enumerate() {
                    let w = u32::from(*w) * module;
                    if i % 2 == 0 {
                        let trim = pt(1) * BAR_TRIM;
                        let (left, wide) = (pt(at) + trim, pt(w) - 2.0 * trim);
                        c.rect(left, from_bottom(y + height), wide, pt(*height));
                    }
                    at += w;
                }
                c.fill_nonzero();
            }
            Item::Text { x, y, size, weight, text } => {
                c.begin_text();
                c.set_font(font(*weight), pt(*size));
                c.next_line(pt(*x), from_bottom(*y) - BASELINE * pt(*size));
                c.show(Str(&win_ansi(text)));
                c.end_text();
            }
        }
    }
    pdf.stream(content, &c.finish());
    pdf.finish()
}

/// WinAnsi bytes; the label checked every character, so nothing is replaced in practice.
fn win_ansi(text: &str) -> Vec<u8> {
    text.chars().map(|c| windows_1252(c).unwrap_or(b'?')).collect()
}
