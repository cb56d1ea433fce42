//! The `[label]` table: what the examples say, every way it can be wrong (file:line:col
//! errors, as a snapshot), and revisions written before it existed, which still parse but
//! draw the lint warning that their batches cannot be released.

use std::path::{Path, PathBuf};

use galen_recipes::authoring;
use galen_recipes::model::LabelSpec;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn example_text(name: &str) -> String {
    std::fs::read_to_string(examples().join(format!("{name}.toml"))).unwrap()
}

/// The azathioprine example with its `[label]` table replaced by `label` (empty: none).
fn with_label(label: &str) -> String {
    let text = example_text("azathioprine-oral-suspension");
    let start = text.find("\n[label]\n").expect("the example has a [label] table");
    format!("{}\n{label}", &text[..start])
}

#[test]
fn every_example_has_a_label_and_no_warning() {
    let expected = [
        (
            "azathioprine-oral-suspension",
            35,
            "Store refrigerated at 2–8 °C. Shake well. Protect from light.",
            &["Cytotoxic: handle with care", "For oral use only"][..],
        ),
        (
            "clopidogrel-oral-suspension",
            14,
            "Store refrigerated at 2–8 °C. Shake well.",
            &["For oral use only"][..],
        ),
        (
            "folate-mthfr",
            35,
            "Store refrigerated at 2–8 °C. Protect from light.",
            &["For oral use only"][..],
        ),
    ];
    for (name, days, storage, auxiliary) in expected {
        let file = format!("{name}.toml");
        let recipe = authoring::parse(&file, &example_text(name)).unwrap();
        assert_eq!(
            recipe.label,
            Some(LabelSpec {
                beyond_use_days: days,
                storage: storage.to_owned(),
                auxiliary: auxiliary.iter().map(|s| (*s).to_owned()).collect(),
            }),
            "{name}"
        );
        assert_eq!(authoring::warnings(&file, &recipe), [], "{name}");
    }
}

#[test]
fn auxiliary_warnings_are_optional() {
    let text = with_label("[label]\nbeyond_use_days = 14\nstorage = \"Store below 25 °C.\"\n");
    let label = authoring::parse("aza.toml", &text).unwrap().label.unwrap();
    assert_eq!(label.beyond_use_days, 14);
    assert_eq!(label.storage, "Store below 25 °C.");
    assert!(label.auxiliary.is_empty());
}

/// The copies in the tuftool fixture were signed before `[label]` existed: they must parse
/// exactly as before (the fixture's signatures cover these bytes) and only draw the warning.
#[test]
fn revisions_without_a_label_parse_and_lint_warns() {
    let targets = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tuftool/repo/targets");
    let mut seen = 0;
    for entry in std::fs::read_dir(targets).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("[label]"), "{}", path.display());
        let recipe = authoring::parse("old.toml", &text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(recipe.label, None);
        let warnings: Vec<String> =
            authoring::warnings("old.toml", &recipe).iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            ["old.toml:1:1: warning[label-missing]: no [label] table: batches of this recipe \
              cannot be released, because the label needs beyond_use_days and storage"]
        );
        seen += 1;
    }
    assert_eq!(seen, 2);
}

/// Each case replaces the azathioprine example's `[label]`; the snapshot holds every error.
#[test]
fn label_errors_name_file_line_column_and_rule() {
    let ok_storage = "storage = \"Store refrigerated at 2–8 °C.\"";
    let cases: Vec<(&str, String)> = vec![
        ("no days", format!("[label]\n{ok_storage}\n")),
        ("no storage", "[label]\nbeyond_use_days = 14\n".to_owned()),
        ("zero days", format!("[label]\nbeyond_use_days = 0\n{ok_storage}\n")),
        ("more than a year", format!("[label]\nbeyond_use_days = 366\n{ok_storage}\n")),
        ("half a day", format!("[label]\nbeyond_use_days = 14.5\n{ok_storage}\n")),
        ("negative days", format!("[label]\nbeyond_use_days = -14\n{ok_storage}\n")),
        ("days as text", format!("[label]\nbeyond_use_days = \"two weeks\"\n{ok_storage}\n")),
        ("empty storage", "[label]\nbeyond_use_days = 14\nstorage = \"   \"\n".to_owned()),
        (
            "storage too long",
            format!("[label]\nbeyond_use_days = 14\nstorage = \"{}\"\n", "Keep cold. ".repeat(12)),
        ),
        (
            "storage a character no label prints",
            "[label]\nbeyond_use_days = 14\nstorage = \"Store at ≤ 25 °C.\"\n".to_owned(),
        ),
        (
            "storage with a line break",
            "[label]\nbeyond_use_days = 14\nstorage = \"Store cold.\\nShake well.\"\n".to_owned(),
        ),
        (
            "too many warnings",
            format!(
                "[label]\nbeyond_use_days = 14\n{ok_storage}\nauxiliary = [\"A\", \"B\", \"C\", \"D\"]\n"
            ),
        ),
        (
            "a warning too long",
            format!(
                "[label]\nbeyond_use_days = 14\n{ok_storage}\nauxiliary = [\"{}\"]\n",
                "Cytotoxic: handle with care and wear two pairs of gloves"
            ),
        ),
        (
            "an empty warning",
            format!("[label]\nbeyond_use_days = 14\n{ok_storage}\nauxiliary = [\"\"]\n"),
        ),
        (
            "a warning twice",
            format!(
                "[label]\nbeyond_use_days = 14\n{ok_storage}\nauxiliary = [\"Oral use\", \" Oral use\"]\n"
            ),
        ),
        ("a typo in a key", format!("[label]\nbeyond_use_day = 14\n{ok_storage}\n")),
        (
            "every error at once",
            "[label]\nbeyond_use_days = 400\nstorage = \"\"\nauxiliary = [\"⚠ Cytotoxic\"]\n"
                .to_owned(),
        ),
    ];
    let mut out = String::new();
    for (name, label) in &cases {
        let errors = authoring::parse("aza.toml", &with_label(label)).expect_err(name);
        out.push_str(&format!("## {name}\n{errors}\n"));
    }
    insta::assert_snapshot!(out);
}

/// Errors in `[label]` are reported together with errors elsewhere in the file.
#[test]
fn label_errors_come_with_the_others() {
    let text = with_label("[label]\nbeyond_use_days = 0\nstorage = \"Cold.\"\n").replacen(
        "speed_rpm = 600",
        "speed_rpm = 6000",
        1,
    );
    let errors = authoring::parse("aza.toml", &text).unwrap_err();
    let rules: Vec<&str> = errors.0.iter().map(|d| d.rule).collect();
    assert_eq!(rules, ["unit-range", "label-days"]);
}
