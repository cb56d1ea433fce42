//! The human-readable batch record (PDF) that goes into every export (21 CFR 11.10(b)).
//!
//! Layout is deliberately plain: A4, the standard Helvetica and Courier fonts (nothing is
//! embedded, so every reader shows it), one section per batch, then appliance events. Alarms
//! and deviations are marked twice: a tinted band *and* the words "ALARM" or "DEVIATION", so
//! the meaning survives a black-and-white printer. Signatures show their manifestation
//! (printed name, UTC time, meaning) in a box. Personalisation entries print the explanation
//! the recipe produced, line by line, so the calculation is on paper.
//!
//! Rendering is pure: a record in, bytes out. Text is laid out first into pages of drawing
//! operations, then written, so every footer can say "page N of M".

use std::collections::BTreeMap;

use galen_record::bundle::RecordJson;
use galen_record::checkpoint::Statement;
use galen_record::signature::SignatureRecord;
use galen_record::{Entry, EntryKind, hex};
use pdf_writer::{Content, Finish as _, Name, Pdf, Rect, Ref, Str};

const PAGE_W: f32 = 595.0;
const PAGE_H: f32 = 842.0;
const MARGIN: f32 = 48.0;
const BODY: f32 = 9.0;
const MONO: f32 = 7.5;
/// Courier advances 0.6 em per glyph, so wrapping monospaced text is exact.
const MONO_ADVANCE: f32 = 0.6;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Font {
    Regular,
    Bold,
    Mono,
    MonoBold,
}

impl Font {
    fn name(self) -> Name<'static> {
        match self {
            Self::Regular => Name(b"F1"),
            Self::Bold => Name(b"F2"),
            Self::Mono => Name(b"F3"),
            Self::MonoBold => Name(b"F4"),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Text { x: f32, y: f32, font: Font, size: f32, text: String },
    Band { y: f32, height: f32, rgb: (f32, f32, f32) },
    Frame { y: f32, height: f32 },
}

/// Lays text out top to bottom, starting new pages as needed.
struct Layout {
    pages: Vec<Vec<Op>>,
    y: f32,
}

impl Layout {
    fn new() -> Self {
        Self { pages: vec![Vec::new()], y: PAGE_H - MARGIN }
    }

    fn ensure(&mut self, height: f32) {
        if self.y - height < MARGIN + 20.0 {
            self.pages.push(Vec::new());
            self.y = PAGE_H - MARGIN;
        }
    }

    fn push(&mut self, op: Op) {
        self.pages.last_mut().expect("there is always a page").push(op);
    }

    fn line(&mut self, font: Font, size: f32, x: f32, text: &str) {
        self.ensure(size * 1.35);
        self.y -= size * 1.35;
        self.push(Op::Text { x, y: self.y, font, size, text: text.to_owned() });
    }

    fn gap(&mut self, h: f32) {
        self.y -= h;
    }

    /// Monospaced text wrapped to the page width, continuation lines indented by `hang`.
    fn wrapped(&mut self, font: Font, size: f32, x: f32, hang: usize, text: &str) {
        let width = ((PAGE_W - MARGIN - x) / (size * MONO_ADVANCE)).floor().max(20.0);
        // `width` is a small positive whole number of columns.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let width = width as usize;
        for chunk in wrap(text, width, hang) {
            self.line(font, size, x, &chunk);
        }
    }

    /// A block with a tinted band behind it (alarms, deviations) or a frame (signatures).
    fn marked(&mut self, lines: &[String], mark: Mark) {
        let h = lines.len() as f32 * MONO * 1.35 + 6.0;
        self.ensure(h + MONO * 0.4);
        // `y` is the last baseline: clear the descenders above before the box starts.
        self.gap(MONO * 0.4);
        let top = self.y;
        let op = match mark {
            Mark::Band(rgb) => Op::Band { y: top - h, height: h, rgb },
            Mark::Frame => Op::Frame { y: top - h, height: h },
        };
        self.push(op);
        self.gap(3.0);
        for l in lines {
            self.line(Font::Mono, MONO, MARGIN + 4.0, l);
        }
        self.gap(3.0);
    }
}

#[derive(Debug, Clone, Copy)]
enum Mark {
    Band((f32, f32, f32)),
    Frame,
}

/// Breaks `text` into lines of at most `width` columns, on spaces where possible; lines that
/// continue a paragraph are indented by `hang`.
fn wrap(text: &str, width: usize, hang: usize) -> Vec<String> {
    let indent = " ".repeat(hang.min(width / 2));
    let mut out = Vec::new();
    for para in text.split('\n') {
        // Columns are padded with spaces: keep a line that fits exactly as it is.
        if para.chars().count() <= width {
            out.push(para.to_owned());
            continue;
        }
        // Keep the paragraph's own leading padding (right-aligned columns).
        let lead = para.len() - para.trim_start_matches(' ').len();
        let para = &para[lead..];
        let mut line = " ".repeat(lead);
        let mut continuing = false;
        let start_line = |line: &mut String, continuing: &mut bool| {
            if *continuing {
                line.push_str(&indent);
            }
            *continuing = true;
        };
        start_line(&mut line, &mut continuing);
        for word in para.split(' ') {
            let len = line.chars().count();
            if len > indent.len() && len + 1 + word.chars().count() > width {
                out.push(std::mem::take(&mut line));
                start_line(&mut line, &mut continuing);
            } else if len > 0 && !line.ends_with(' ') {
                line.push(' ');
            }
            let mut rest = word;
            // A word longer than a line (a hash) is cut.
            while line.chars().count() + rest.chars().count() > width {
                let room = width.saturating_sub(line.chars().count()).max(1);
                let split = rest.char_indices().nth(room).map_or(rest.len(), |(i, _)| i);
                line.push_str(&rest[..split]);
                out.push(std::mem::take(&mut line));
                start_line(&mut line, &mut continuing);
                rest = &rest[split..];
            }
            line.push_str(rest);
        }
        out.push(line);
    }
    out
}

/// Renders the export's record as a PDF. `names` maps user ids to printed names.
pub(super) fn render(
    record: &RecordJson,
    names: &BTreeMap<u64, String>,
    sealed: &Statement,
) -> Vec<u8> {
    let mut l = Layout::new();
    l.line(Font::Bold, 16.0, MARGIN, "Electronic batch record");
    l.gap(4.0);
    for (k, v) in [
        ("Appliance", record.device_id.clone()),
        ("Scope", record.scope.clone()),
        ("Exported", format!("{} (UTC)", record.exported_at)),
        (
            "Sealed",
            format!(
                "entries 1-{} by TPM checkpoint (counter {}), last hash {}",
                sealed.entries,
                sealed.nv_counter,
                hex::encode(&sealed.head)
            ),
        ),
        ("Verify", "see VERIFY.txt in this folder (sha256sum and openssl only)".into()),
    ] {
        l.wrapped(Font::Mono, MONO, MARGIN, 12, &format!("{k:<10}{v}"));
    }

    let mut batches: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    let mut other = Vec::new();
    for e in &record.entries {
        match e.body.batch_id.as_deref() {
            Some(b) => batches.entry(b).or_default().push(e),
            None => other.push(e),
        }
    }
    for (batch, entries) in &batches {
        l.gap(10.0);
        l.line(Font::Bold, 12.0, MARGIN, &format!("Batch {batch}"));
        let deviations = entries
            .iter()
            .filter(|e| matches!(e.body.kind, EntryKind::Alarm | EntryKind::Deviation))
            .count();
        l.line(
            Font::Regular,
            BODY,
            MARGIN,
            &format!(
                "{} entries; {}",
                entries.len(),
                if deviations == 0 {
                    "no alarms or deviations".to_owned()
                } else {
                    format!("{deviations} alarm(s) or deviation(s), marked below")
                }
            ),
        );
        l.gap(4.0);
        section(&mut l, entries, names);
    }
    if !other.is_empty() {
        l.gap(10.0);
        l.line(Font::Bold, 12.0, MARGIN, "Appliance events (logins, users, system)");
        l.gap(4.0);
        section(&mut l, &other, names);
    }
    write(l.pages, record, sealed)
}

fn section(l: &mut Layout, entries: &[&Entry], names: &BTreeMap<u64, String>) {
    l.line(
        Font::MonoBold,
        MONO,
        MARGIN,
        "  Seq  UTC time                  Who                 What",
    );
    for e in entries {
        let b = &e.body;
        let who = b.user_id.map_or_else(
            || "appliance".to_owned(),
            |id| names.get(&id).cloned().unwrap_or_else(|| format!("user {id}")),
        );
        let mut what = format!("{}: {}", b.kind.as_str().replace('_', " "), b.object);
        if let Some(old) = &b.old_value {
            what.push_str(&format!(" from {old}"));
        }
        if let Some(new) = &b.new_value {
            what.push_str(&format!(" to {new}"));
        }
        if let Some(reason) = &b.reason {
            what.push_str(&format!(" (reason: {reason})"));
        }
        let row = format!("{:>5}  {}  {:<18}  {what}", e.seq, b.utc, truncate(&who, 18));
        match b.kind {
            EntryKind::Alarm | EntryKind::Deviation => {
                let label = if b.kind == EntryKind::Alarm { "ALARM" } else { "DEVIATION" };
                let mut lines = vec![format!("{label}  {}", row.trim_start())];
                lines.extend(wrap_payload(&b.payload));
                let lines: Vec<String> = lines.iter().flat_map(|x| wrap(x, 118, 7)).collect();
                l.marked(&lines, Mark::Band((1.0, 0.86, 0.78)));
            }
            EntryKind::Signature => {
                let manifestation = serde_json::from_str::<SignatureRecord>(&b.payload)
                    .map(|s| s.manifestation())
                    .unwrap_or_else(|_| b.new_value.clone().unwrap_or_default());
                let lines = vec![
                    format!("SIGNED  {manifestation}"),
                    format!(
                        "        entry {} of the record, binding {}",
                        e.seq,
                        signature_binding(&b.payload)
                    ),
                ];
                l.marked(&lines, Mark::Frame);
            }
            EntryKind::Personalisation => {
                l.wrapped(Font::Mono, MONO, MARGIN, 7, &row);
                for line in wrap_payload(&b.payload) {
                    l.wrapped(Font::Mono, MONO, MARGIN + 30.0, 4, &line);
                }
            }
            _ => l.wrapped(Font::Mono, MONO, MARGIN, 7, &row),
        }
    }
}

fn signature_binding(payload: &str) -> String {
    serde_json::from_str::<SignatureRecord>(payload)
        .map(|s| hex::encode(&s.binding)[..16].to_owned() + "...")
        .unwrap_or_default()
}

/// A payload as readable lines: an `explanation` text first if present, then other fields.
fn wrap_payload(payload: &str) -> Vec<String> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(payload)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(serde_json::Value::String(text)) = map.get("explanation") {
        out.extend(text.lines().map(str::to_owned));
    }
    for (k, v) in &map {
        if k != "explanation" {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push(format!("{k}: {v}"));
        }
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        s.chars().take(n - 1).collect::<String>() + "."
    }
}

/// Windows-1252 ("WinAnsi") bytes for the standard fonts; unmappable characters become '?'.
fn win_ansi(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| match c {
            ' '..='~' => c as u8,
            '\u{a0}'..='\u{ff}' => u8::try_from(u32::from(c)).unwrap_or(b'?'),
            '€' => 0x80,
            '…' => 0x85,
            '−' => b'-',
            '‘' => 0x91,
            '’' => 0x92,
            '“' => 0x93,
            '”' => 0x94,
            '•' => 0x95,
            '–' => 0x96,
            '—' => 0x97,
            _ => b'?',
        })
        .collect()
}

fn write(pages: Vec<Vec<Op>>, record: &RecordJson, sealed: &Statement) -> Vec<u8> {
    let mut pdf = Pdf::new();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let fonts = [
        (Font::Regular, Ref::new(3), "Helvetica"),
        (Font::Bold, Ref::new(4), "Helvetica-Bold"),
        (Font::Mono, Ref::new(5), "Courier"),
        (Font::MonoBold, Ref::new(7), "Courier-Bold"),
    ];
    let info = Ref::new(6);
    let first = 10;
    let total = pages.len();
    let page_ref =
        |i: usize| Ref::new(first + 2 * i32::try_from(i).expect("fewer pages than i32::MAX / 2"));
    let content_ref = |i: usize| {
        Ref::new(first + 1 + 2 * i32::try_from(i).expect("fewer pages than i32::MAX / 2"))
    };

    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids((0..total).map(page_ref)).count(i32::try_from(total).unwrap_or(i32::MAX));
    for (_, id, base) in fonts {
        pdf.type1_font(id)
            .base_font(Name(base.as_bytes()))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
    }
    pdf.document_info(info)
        .title(pdf_writer::TextStr(&format!("Batch record: {}", record.scope)))
        .producer(pdf_writer::TextStr("Galen applianced"));

    for (i, ops) in pages.into_iter().enumerate() {
        let mut page = pdf.page(page_ref(i));
        page.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H)).parent(tree).contents(content_ref(i));
        let mut res = page.resources();
        let mut f = res.fonts();
        for (font, id, _) in fonts {
            f.pair(font.name(), id);
        }
        f.finish();
        res.finish();
        page.finish();

        let mut c = Content::new();
        for op in &ops {
            match op {
                Op::Band { y, height, rgb } => {
                    c.set_fill_rgb(rgb.0, rgb.1, rgb.2);
                    c.rect(MARGIN - 2.0, *y, PAGE_W - 2.0 * MARGIN + 4.0, *height);
                    c.fill_nonzero();
                    c.set_fill_rgb(0.0, 0.0, 0.0);
                }
                Op::Frame { y, height } => {
                    c.set_line_width(0.8);
                    c.rect(MARGIN - 2.0, *y, PAGE_W - 2.0 * MARGIN + 4.0, *height);
                    c.stroke();
                }
                Op::Text { .. } => {}
            }
        }
        for op in ops.iter().chain(std::iter::once(&Op::Text {
            x: MARGIN,
            y: MARGIN - 10.0,
            font: Font::Regular,
            size: 7.0,
            text: format!(
                "{} | {} | entries sealed to {} | page {} of {}",
                record.device_id,
                record.scope,
                sealed.entries,
                i + 1,
                total
            ),
        })) {
            if let Op::Text { x, y, font, size, text } = op {
                c.begin_text();
                c.set_font(font.name(), *size);
                c.next_line(*x, *y);
                c.show(Str(&win_ansi(text)));
                c.end_text();
            }
        }
        pdf.stream(content_ref(i), &c.finish());
    }
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_keeps_every_character_and_the_width() {
        let text =
            "a long line of words that must wrap somewhere sensible 0123456789abcdef0123456789";
        let lines = wrap(text, 20, 2);
        assert!(lines.iter().all(|l| l.chars().count() <= 20), "{lines:?}");
        let joined: String = lines.concat().split_whitespace().collect();
        assert_eq!(joined, text.split_whitespace().collect::<String>());
    }

    #[test]
    fn lines_that_fit_keep_their_column_padding() {
        assert_eq!(wrap("    7  x", 20, 2), vec!["    7  x"]);
    }

    #[test]
    fn win_ansi_keeps_pharmacy_symbols() {
        assert_eq!(win_ansi("37.0 °C ± 0.5 µL"), b"37.0 \xb0C \xb1 0.5 \xb5L");
        assert_eq!(win_ansi("98 mL − 0.98 g, f0415…"), b"98 mL - 0.98 g, f0415\x85");
        assert_eq!(win_ansi("≥"), b"?");
    }
}
