//! The label from a real recipe and batch, every way a label is refused, the beyond-use date
//! across month, year and leap-year boundaries, and the ZPL and PDF renderings.

use galen_recipes::model::Recipe;
use galen_recipes::patient::{Patient, PatientId, Source, Sourced};
use galen_recipes::personalise::{self, Parameters};
use galen_recipes::quantity::{BodyWeight, Fixed};
use galen_recipes::{authoring, pharmcat};

use super::*;

fn examples() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/examples")
}

fn recipe(name: &str) -> Recipe {
    let text = std::fs::read_to_string(examples().join(format!("{name}.toml"))).unwrap();
    authoring::parse(name, &text).unwrap()
}

/// The demo's patient: 70 kg, TPMT intermediate (lab file), azathioprine at 50 %.
fn tpmt_intermediate(recipe: &Recipe) -> Parameters {
    let lab = pharmcat::import(
        "lab.tsv",
        &std::fs::read(examples().join("lab/tpmt-intermediate.tsv")).unwrap(),
    )
    .unwrap();
    let entered = Source::Entered { by: "ada".into(), verified_by: Some("vic".into()) };
    let patient = Patient {
        id: PatientId::new("P-0001").unwrap(),
        weight: Some(Sourced {
            value: BodyWeight::new(Fixed::parse("70").unwrap()).unwrap(),
            source: entered.clone(),
        }),
        age_years: Some(Sourced { value: 34, source: entered }),
        genes: lab.to_patient_genes("ada"),
    };
    personalise::evaluate(recipe, &patient).unwrap().parameters.unwrap()
}

fn release(patient: &PatientId) -> Release<'_> {
    Release {
        patient_id: patient,
        patient_name: Some("Alex Example"),
        batch_id: "B-20261121-001",
        prepared: Date(2026, 11, 21),
        site: "St Elsewhere Pharmacy, galen-cu1 0042",
        released_by: "Rosalind Pharmacist",
    }
}

fn example_label() -> Label {
    let aza = recipe("azathioprine-oral-suspension");
    let params = tpmt_intermediate(&aza);
    let patient = PatientId::new("P-0001").unwrap();
    Label::for_release(&aza, &params, &release(&patient)).unwrap()
}

fn fields() -> LabelFields {
    example_label().fields().clone()
}

#[test]
fn a_released_azathioprine_batch() {
    let label = example_label();
    let f = label.fields();
    assert_eq!(f.product, "Azathioprine 10 mg/mL oral suspension");
    assert_eq!(f.strength, "10 mg/mL");
    // 2 mg/kg × 70 kg × 50 % × 14 days = 980 mg at 10 mg/mL.
    assert_eq!(f.quantity, "98.0 mL");
    // 35 days from 2026-11-21 (day 0): 9 left in November, 26 into December.
    assert_eq!(f.beyond_use, Date(2026, 12, 26));
    assert_eq!(label.barcode().data(), "P-0001/B-20261121-001");
    insta::assert_snapshot!(serde_json::to_string_pretty(&label.content()).unwrap());
}

#[test]
fn quantities_print_to_a_tenth_of_a_millilitre() {
    let ml = |s: &str| millilitres(Volume::new(Fixed::parse(s).unwrap()).unwrap());
    assert_eq!(ml("98"), "98.0 mL");
    assert_eq!(ml("70.04"), "70.0 mL");
    assert_eq!(ml("70.05"), "70.1 mL");
    assert_eq!(ml("0.5"), "0.5 mL");
    assert_eq!(ml("1234.96"), "1235.0 mL");
}

#[test]
fn a_recipe_without_a_label_cannot_be_released() {
    let text =
        std::fs::read_to_string(examples().join("azathioprine-oral-suspension.toml")).unwrap();
    let old = &text[..text.find("\n[label]\n").unwrap()];
    let aza = authoring::parse("aza", old).unwrap();
    let params = tpmt_intermediate(&aza);
    let patient = PatientId::new("P-0001").unwrap();
    let err = Label::for_release(&aza, &params, &release(&patient)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "recipe azathioprine-oral-suspension revision 1 has no [label] table: its batches cannot \
         be released until a revision with one is installed"
    );
}

#[test]
fn every_example_recipe_makes_a_label_that_fits() {
    for name in ["azathioprine-oral-suspension", "clopidogrel-oral-suspension", "folate-mthfr"] {
        let r = recipe(name);
        let spec = r.label.clone().unwrap();
        let product = &r.personalisation.as_ref().unwrap().product;
        let label = Label::new(LabelFields {
            product: r.name.clone(),
            strength: product.concentration.to_string(),
            beyond_use: beyond_use(Date(2026, 11, 21), spec.beyond_use_days).unwrap(),
            storage: spec.storage,
            auxiliary: spec.auxiliary,
            ..fields()
        });
        assert!(label.is_ok(), "{name}: {label:?}");
    }
}

/// The longest text the recipe format allows, in ordinary words, still fits.
#[test]
fn the_longest_recipe_text_fits() {
    let storage = "Store refrigerated at 2–8 °C; do not freeze. Shake well before each dose. \
                   Protect from light. Keep out of reach of kids.";
    assert_eq!(storage.chars().count(), 120);
    let warning = "Cytotoxic: handle with care, wear gloves always.";
    assert_eq!(warning.chars().count(), 48);
    let label = Label::new(LabelFields {
        patient_name: Some("Maximiliane Konstantinopoulou-Schmidt".into()),
        product: "Azathioprine 10 mg/mL oral suspension in Ora-Plus and Ora-Sweet (1:1)".into(),
        storage: storage.into(),
        auxiliary: vec![warning.into(), "For oral use only".into(), "Do not crush".into()],
        released_by: "Dr Rosalind Elspeth Pharmacist-Smythe".into(),
        ..fields()
    });
    assert!(label.is_ok(), "{label:?}");
}

#[test]
fn labels_are_refused_with_the_reason() {
    let cases: Vec<(&str, LabelFields, &str)> = vec![
        (
            "unprintable name",
            LabelFields { patient_name: Some("Nguyễn Văn A".into()), ..fields() },
            "patient name: `ễ` (U+1EC5) cannot be printed on a label",
        ),
        (
            "line break in storage",
            LabelFields { storage: "Cold.\nDark.".into(), ..fields() },
            "storage: a control character (U+000A) cannot be printed on a label",
        ),
        ("blank quantity", LabelFields { quantity: " ".into(), ..fields() }, "quantity is empty"),
        (
            "blank warning",
            LabelFields { auxiliary: vec![String::new()], ..fields() },
            "auxiliary warning is empty",
        ),
        (
            "slash in the batch ID",
            LabelFields { batch_id: "B/1".into(), ..fields() },
            "batch ID `B/1` contains `/`, which separates patient and batch in the barcode",
        ),
        (
            "patient ID a scanner cannot read back",
            LabelFields { patient_id: "P-Ä1".into(), ..fields() },
            "barcode: `Ä` (U+00C4) at position 3 cannot be encoded: Code 128 set B holds printable \
             ASCII only",
        ),
        (
            "beyond-use on the day of preparation",
            LabelFields { beyond_use: Date(2026, 11, 21), ..fields() },
            "beyond-use date 2026-11-21 is not after the preparation date 2026-11-21",
        ),
        (
            "not a date",
            LabelFields { prepared: Date(2026, 2, 29), ..fields() },
            "2026-02-29 is not a calendar date",
        ),
        (
            "a product name for a poster",
            LabelFields { product: "Azathioprine suspension ".repeat(8), ..fields() },
            "product does not fit on the label, even at the smallest legible size",
        ),
        (
            // Narrow in type, yet one symbol per character in the bars.
            "a barcode too wide",
            LabelFields { patient_id: "il".repeat(20), ..fields() },
            "barcode does not fit on the label, even at the smallest legible size",
        ),
    ];
    for (name, f, message) in cases {
        let err = Label::new(f).expect_err(name);
        assert_eq!(err.to_string(), message, "{name}");
    }
}

#[test]
fn beyond_use_dates_cross_months_years_and_leap_days() {
    let cases = [
        // (prepared, days, beyond-use)
        ((2026, 11, 21), 14, (2026, 12, 5)),
        ((2026, 1, 25), 14, (2026, 2, 8)),
        ((2026, 12, 25), 14, (2027, 1, 8)),
        ((2026, 12, 31), 1, (2027, 1, 1)),
        // 2028 is a leap year: February has 29 days.
        ((2028, 2, 20), 14, (2028, 3, 5)),
        ((2028, 2, 28), 1, (2028, 2, 29)),
        ((2026, 2, 20), 14, (2026, 3, 6)),
        ((2026, 2, 28), 1, (2026, 3, 1)),
        // Centuries are leap years only when divisible by 400.
        ((2100, 2, 28), 1, (2100, 3, 1)),
        ((2000, 2, 28), 1, (2000, 2, 29)),
        // A year from 1 January of a leap year ends on 31 December.
        ((2028, 1, 1), 365, (2028, 12, 31)),
        ((2027, 1, 1), 365, (2028, 1, 1)),
        ((2028, 2, 29), 365, (2029, 2, 28)),
        ((2026, 11, 21), 35, (2026, 12, 26)),
    ];
    for ((y, m, d), days, (by, bm, bd)) in cases {
        assert_eq!(
            beyond_use(Date(y, m, d), days).unwrap(),
            Date(by, bm, bd),
            "{y}-{m}-{d} + {days}"
        );
    }
    assert_eq!(
        beyond_use(Date(2026, 2, 29), 14),
        Err(LabelError::NotADate { date: Date(2026, 2, 29) })
    );
    for bad in [Date(2026, 0, 1), Date(2026, 13, 1), Date(2026, 4, 31), Date(2026, 1, 0)] {
        assert!(beyond_use(bad, 1).is_err(), "{bad}");
    }
    assert_eq!(
        beyond_use(Date(9999, 12, 31), 1),
        Err(LabelError::DateOutOfRange { prepared: Date(9999, 12, 31), days: 1 })
    );
}

#[test]
fn the_date_arithmetic_agrees_with_counting_day_by_day() {
    // Walk every day from 1999 to 2101 and check the conversion both ways and the step.
    let mut date = Date(1999, 1, 1);
    let mut n = days_from_civil(date).unwrap();
    while date < Date(2101, 1, 1) {
        assert_eq!(civil_from_days(n), Some(date));
        let Date(y, m, d) = date;
        date = if d < days_in_month(i64::from(y), m) {
            Date(y, m, d + 1)
        } else if m < 12 {
            Date(y, m + 1, 1)
        } else {
            Date(y + 1, 1, 1)
        };
        n += 1;
        assert_eq!(days_from_civil(date), Some(n), "{date}");
    }
    assert_eq!(days_from_civil(Date(1970, 1, 1)), Some(0));
}

#[test]
fn zpl() {
    let zpl = example_label().zpl();
    // Every field is hex-escaped: no raw `^` or `~` inside field data, UTF-8 for `–` and `°`.
    assert!(zpl.contains("2_E2_80_938 _C2_B0C"), "{zpl}");
    for line in zpl.lines() {
        if let Some((_, data)) = line.split_once("^FD") {
            let data = data.strip_suffix("^FS").unwrap();
            assert!(!data.contains(['^', '~']) && data.is_ascii(), "{line}");
        }
    }
    // The barcode's code sets as the encoder chose them.
    assert!(zpl.contains("^FD>:P->50001>6/B->520261121>6-001^FS"), "{zpl}");
    insta::assert_snapshot!(zpl);
}

#[test]
fn zpl_escapes_what_would_start_a_command() {
    let label = Label::new(LabelFields {
        patient_id: "P^1~2_3>4".into(),
        storage: "Keep ^XZ~JR below 25 °C".into(),
        ..fields()
    })
    .unwrap();
    let zpl = label.zpl();
    assert!(zpl.contains("^FDKeep _5EXZ_7EJR below 25 _C2_B0C^FS"), "{zpl}");
    assert!(zpl.contains("^FDP_5E1_7E2_5F3>4^FS"), "the text line: {zpl}");
    assert!(zpl.contains("^FD>:P_5E1_7E2_5F3><4/B->520261121>6-001^FS"), "the barcode: {zpl}");
    assert_eq!(zpl.matches("^XZ").count(), 1);
}

#[test]
fn pdf_is_one_page_of_label_size_with_standard_fonts() {
    let pdf = example_label().pdf();
    assert!(pdf.starts_with(b"%PDF-"));
    let text = String::from_utf8_lossy(&pdf);
    assert_eq!(text.matches("/Type /Page\n").count(), 1, "one page");
    assert!(text.contains("/Count 1"));
    assert!(text.contains("/MediaBox [0 0 288 144]"), "4 × 2 inches");
    assert!(text.contains("/BaseFont /Helvetica-Bold"));
    assert!(!text.contains("/FontFile"), "nothing embedded");
    // The text is in the content stream (uncompressed) as WinAnsi strings.
    for shown in ["(P-0001) Tj", "(2026-12-26) Tj", "(P-0001/B-20261121-001) Tj"] {
        assert!(text.contains(shown), "{shown}");
    }

    // Strings beyond ASCII are written in hex: 0x96 is the en dash, 0xB0 the degree sign.
    let storage = b"Store refrigerated at 2\x968 \xb0C. Shake well. Protect from light.";
    let hex: String = storage.iter().map(|b| format!("{b:02X}")).collect();
    assert!(text.contains(&format!("<{hex}> Tj")), "{hex}");
    // One filled rectangle per bar: 3 per symbol, 4 for the stop.
    let bars = example_label().barcode().symbols().len() * 3 + 1;
    let rects = text.matches(" re\n").count();
    // Bars, the beyond-use frame and one square per warning.
    assert_eq!(rects, bars + 1 + 2);
}
