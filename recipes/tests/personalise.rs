//! Recipes end to end without I/O in the library: the examples parse, broken recipes give
//! file:line:col errors, and personalisation explanations (text and JSON) are snapshots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use galen_recipes::authoring;
use galen_recipes::model::{DispenseTarget, PhaseKind, Recipe};
use galen_recipes::patient::{GeneResult, Patient, PatientId, Source, Sourced};
use galen_recipes::personalise::{self, RefusalKind};
use galen_recipes::pgx::{Gene, Phenotype};
use galen_recipes::pharmcat;
use galen_recipes::quantity::{BodyWeight, Fixed};

/// An operation id and its phase ids.
type Ops = (String, Vec<String>);

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn example(name: &str) -> Recipe {
    let file = format!("{name}.toml");
    let text = std::fs::read_to_string(examples().join(&file)).unwrap();
    authoring::parse(&file, &text).unwrap_or_else(|e| panic!("{e}"))
}

fn entered(value: &str) -> Sourced<BodyWeight> {
    Sourced {
        value: BodyWeight::new(Fixed::parse(value).unwrap()).unwrap(),
        source: Source::Entered { by: "pharm.alice".into(), verified_by: Some("pharm.bob".into()) },
    }
}

fn gene(phenotype: Option<&str>, diplotype: Option<&str>) -> Sourced<GeneResult> {
    Sourced {
        value: GeneResult {
            diplotype: diplotype.map(str::to_owned),
            phenotype: phenotype.map(|p| Phenotype::parse(p).unwrap()),
            activity_score: None,
        },
        source: Source::Entered { by: "pharm.alice".into(), verified_by: None },
    }
}

fn patient(weight: Option<&str>, genes: &[(&str, Sourced<GeneResult>)]) -> Patient {
    Patient {
        id: PatientId::new("P-0001").unwrap(),
        weight: weight.map(entered),
        age_years: Some(Sourced {
            value: 34,
            source: Source::Entered { by: "pharm.alice".into(), verified_by: None },
        }),
        genes: genes.iter().map(|(g, r)| (Gene::new(g).unwrap(), r.clone())).collect(),
    }
}

fn from_lab(weight: &str, lab_file: &str) -> Patient {
    let bytes = std::fs::read(examples().join("lab").join(lab_file)).unwrap();
    let lab = pharmcat::import(lab_file, &bytes).unwrap();
    Patient { genes: lab.to_patient_genes("pharm.alice"), ..patient(Some(weight), &[]) }
}

/// Evaluates and renders the explanation the way the screen shows it.
fn check(recipe: &Recipe, patient: &Patient) -> String {
    match personalise::evaluate(recipe, patient) {
        Ok(e) => e.explanation.to_text(),
        Err(r) => r.explanation.to_text(),
    }
}

#[test]
fn every_example_recipe_is_valid() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let recipe = authoring::parse(&name, &text).unwrap_or_else(|e| panic!("{e}"));
            assert!(recipe.phases().count() >= 4, "{name}");
            names.push(name);
        }
    }
    names.sort();
    assert_eq!(
        names,
        [
            "azathioprine-oral-suspension.toml",
            "clopidogrel-oral-suspension.toml",
            "folate-mthfr.toml"
        ]
    );
}

#[test]
fn the_model_keeps_the_isa88_hierarchy_and_resume_policies() {
    let r = example("azathioprine-oral-suspension");
    let shape: Vec<(String, Vec<Ops>)> = r
        .procedure
        .unit_procedures
        .iter()
        .map(|u| {
            let ops = u
                .operations
                .iter()
                .map(|o| (o.id.to_string(), o.phases.iter().map(|p| p.id.to_string()).collect()))
                .collect();
            (u.id.to_string(), ops)
        })
        .collect();
    insta::assert_debug_snapshot!(shape);
    let dispense = r.phases().find(|(_, _, p)| p.id.as_str() == "dispense-api").unwrap().2;
    assert_eq!(dispense.resume, galen_recipes::model::ResumePolicy::QaDecision);
    assert!(matches!(
        &dispense.kind,
        PhaseKind::Dispense { target: DispenseTarget::Active { .. }, pump: None, .. }
    ));
}

/// Each case edits the azathioprine example; the snapshot holds every resulting error.
#[test]
fn lint_errors_name_file_line_column_and_rule() {
    let base =
        std::fs::read_to_string(examples().join("azathioprine-oral-suspension.toml")).unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("typo in a key", "tolerance_g = 0.005", "tolerence_g = 0.005"),
        ("syntax", "revision = 1", "revision = = 1"),
        ("temperature beyond the type", "speed_rpm = 600", "speed_rpm = 6000"),
        ("too many decimals", "tolerance_g = 0.005", "tolerance_g = 0.0000001"),
        ("unknown material", "material = \"vehicle\"\nresume", "material = \"vehicel\"\nresume"),
        (
            "bad identifier",
            "id = \"azathioprine-oral-suspension\"",
            "id = \"Azathioprine Suspension\"",
        ),
        ("field for another phase kind", "kind = \"tare\"\n", "kind = \"tare\"\ntarget_c = 40\n"),
        (
            "bounds upside down",
            "bounds_g = { min = 5, max = 400 }",
            "bounds_g = { min = 400, max = 5 }",
        ),
        (
            "factor outside the guideline",
            "factor = 0.5\nguideline_range = { min = 0.3",
            "factor = 0.9\nguideline_range = { min = 0.3",
        ),
        (
            "row on indeterminate",
            "when = { TPMT = \"Poor Metabolizer\" }",
            "when = { TPMT = \"Indeterminate\" }",
        ),
        (
            "undeclared gene",
            "when = { NUDT15 = \"Poor Metabolizer\" }",
            "when = { CYP2D6 = \"Poor Metabolizer\" }",
        ),
        ("mixer too slow", "max_rpm = 1500", "max_rpm = 100"),
        ("balance too small", "capacity_g = 500", "capacity_g = 50"),
        ("resume policy", "resume = \"resume\"", "resume = \"continue\""),
        (
            "liquid without pump",
            "dose = \"vehicle\"\npump = \"peristaltic-pump\"\n",
            "dose = \"vehicle\"\n",
        ),
        ("per-kg dose without weight bounds", "weight_kg = { min = 3, max = 150 }\n", ""),
        ("empty when: a catch-all row", "when = { TPMT = \"Poor Metabolizer\" }", "when = {}"),
    ];
    let mut out = String::new();
    for (name, from, to) in cases {
        assert!(base.contains(from), "case {name}: `{from}` is not in the example");
        let text = base.replacen(from, to, 1);
        let errors = authoring::parse("aza.toml", &text).expect_err(name);
        out.push_str(&format!("## {name}\n{errors}\n"));
    }
    let too_big = "#".repeat(authoring::MAX_RECIPE_BYTES + 1);
    out.push_str(&format!("## too big\n{}\n", authoring::parse("big.toml", &too_big).unwrap_err()));
    insta::assert_snapshot!(out);
}

#[test]
fn azathioprine_explanations() {
    let r = example("azathioprine-oral-suspension");
    let nm = || gene(Some("Normal Metabolizer"), Some("*1/*1"));
    let cases: Vec<(&str, Patient)> = vec![
        ("TPMT intermediate, from the lab file", from_lab("72.35", "tpmt-intermediate.tsv")),
        ("both normal", patient(Some("72.35"), &[("TPMT", nm()), ("NUDT15", nm())])),
        (
            "both intermediate",
            patient(
                Some("40"),
                &[
                    ("TPMT", gene(Some("IM"), None)),
                    ("NUDT15", gene(Some("Likely Intermediate Metabolizer"), None)),
                ],
            ),
        ),
        (
            "TPMT poor: 10 % with QA",
            patient(Some("60"), &[("TPMT", gene(Some("PM"), Some("*3A/*3A"))), ("NUDT15", nm())]),
        ),
        (
            "NUDT15 poor: refused",
            patient(Some("60"), &[("TPMT", nm()), ("NUDT15", gene(Some("PM"), None))]),
        ),
        ("NUDT15 indeterminate, from the lab file", from_lab("60", "nudt15-indeterminate.tsv")),
        ("NUDT15 missing", patient(Some("60"), &[("TPMT", nm())])),
        (
            "NUDT15 diplotype only",
            patient(Some("60"), &[("TPMT", nm()), ("NUDT15", gene(None, Some("*1/*3")))]),
        ),
        (
            "TPMT rapid: no row",
            patient(Some("60"), &[("TPMT", gene(Some("RM"), None)), ("NUDT15", nm())]),
        ),
        ("no weight", patient(None, &[("TPMT", nm()), ("NUDT15", nm())])),
        ("weight out of range", patient(Some("151"), &[("TPMT", nm()), ("NUDT15", nm())])),
        ("heavy: clamped to 200 mg", patient(Some("140"), &[("TPMT", nm()), ("NUDT15", nm())])),
    ];
    let mut out = String::new();
    for (name, p) in &cases {
        out.push_str(&format!("## {name}\n{}\n", check(&r, p)));
    }
    insta::assert_snapshot!(out);
}

#[test]
fn tpmt_intermediate_parameters_are_exact() {
    let r = example("azathioprine-oral-suspension");
    let e = personalise::evaluate(&r, &from_lab("72.35", "tpmt-intermediate.tsv")).unwrap();
    let p = e.parameters.unwrap();
    // 72.35 kg × 2 mg/kg × 0.5 = 72.35 mg/day; × 14 days = 1012.9 mg.
    assert_eq!(p.daily_dose.value(), Fixed::parse("72.35").unwrap());
    assert_eq!(p.total_dose.value(), Fixed::parse("1012.9").unwrap());
    assert_eq!(p.active_mass.value(), Fixed::parse("1.0129").unwrap());
    assert_eq!(p.volume.value(), Fixed::parse("101.29").unwrap());
    // 101.29 mL × 1.06 g/mL − 1.0129 g = 107.3674 g − 1.0129 g = 106.3545 g.
    assert_eq!(p.vehicle_mass.unwrap().value(), Fixed::parse("106.3545").unwrap());
    assert!(!p.needs_qa);
}

#[test]
fn indeterminate_or_missing_phenotypes_never_read_as_normal() {
    let r = example("azathioprine-oral-suspension");
    let nm = || gene(Some("Normal Metabolizer"), Some("*1/*1"));
    for result in
        [gene(Some("Indeterminate"), None), gene(Some("no call"), None), gene(None, Some("*1/*1"))]
    {
        let refusal =
            personalise::evaluate(&r, &patient(Some("60"), &[("TPMT", nm()), ("NUDT15", result)]))
                .unwrap_err();
        assert!(refusal.needs_qa);
        assert!(matches!(refusal.kind, RefusalKind::UnusableResult { .. }), "{:?}", refusal.kind);
        assert!(refusal.explanation.to_text().contains("REFUSED"));
    }
}

#[test]
fn folate_and_clopidogrel_explanations() {
    let folate = example("folate-mthfr");
    let clopidogrel = example("clopidogrel-oral-suspension");
    let cases: Vec<(&str, &Recipe, Patient)> = vec![
        ("folate, MTHFR 677TT from the lab file", &folate, from_lab("70", "mthfr-677tt.tsv")),
        (
            "folate, MTHFR 677CT",
            &folate,
            patient(None, &[("MTHFR", gene(None, Some("c.677C>T/c.677C")))]),
        ),
        ("clopidogrel, CYP2C19 likely rapid", &clopidogrel, from_lab("70", "mthfr-677tt.tsv")),
        (
            "clopidogrel, CYP2C19 intermediate",
            &clopidogrel,
            from_lab("70", "tpmt-intermediate.tsv").with_cyp2c19("IM"),
        ),
        ("clopidogrel, CYP2C19 poor", &clopidogrel, from_lab("70", "nudt15-indeterminate.tsv")),
    ];
    let mut out = String::new();
    for (name, r, p) in &cases {
        out.push_str(&format!("## {name}\n{}\n", check(r, p)));
    }
    insta::assert_snapshot!(out);
}

#[test]
fn the_record_form_is_json() {
    let r = example("folate-mthfr");
    let e = personalise::evaluate(&r, &from_lab("70", "mthfr-677tt.tsv")).unwrap();
    assert!(e.parameters.as_ref().unwrap().needs_qa, "MTHFR rules always need QA");
    assert_eq!(e.parameters.as_ref().unwrap().active.as_str(), "l-methylfolate");
    insta::assert_json_snapshot!(e);
    let refusal = personalise::evaluate(
        &example("clopidogrel-oral-suspension"),
        &from_lab("70", "nudt15-indeterminate.tsv"),
    )
    .unwrap_err();
    insta::assert_json_snapshot!("clopidogrel_refusal", refusal);
}

trait WithGene {
    fn with_cyp2c19(self, phenotype: &str) -> Self;
}

impl WithGene for Patient {
    fn with_cyp2c19(mut self, phenotype: &str) -> Self {
        let mut genes: BTreeMap<_, _> = self.genes;
        genes.insert(Gene::new("CYP2C19").unwrap(), gene(Some(phenotype), Some("*1/*2")));
        self.genes = genes;
        self
    }
}

#[test]
fn consumer_genome_files_are_refused_with_a_clear_message() {
    let bytes = std::fs::read(examples().join("lab/consumer-raw-genome.txt")).unwrap();
    let err = pharmcat::import("consumer-raw-genome.txt", &bytes).unwrap_err();
    insta::assert_snapshot!(err.to_string());
}

/// The azathioprine example with `from` replaced by `to`.
fn edited(from: &str, to: &str) -> Recipe {
    let base =
        std::fs::read_to_string(examples().join("azathioprine-oral-suspension.toml")).unwrap();
    assert!(base.contains(from), "`{from}` is not in the example");
    authoring::parse("aza.toml", &base.replacen(from, to, 1)).unwrap_or_else(|e| panic!("{e}"))
}

/// Clamping never undoes a pharmacogenomic reduction, every clamp needs QA, and the effective
/// factor is checked against the row's guideline range.
#[test]
fn clamp_and_guideline_explanations() {
    let r = example("azathioprine-oral-suspension");
    let nm = || gene(Some("Normal Metabolizer"), Some("*1/*1"));
    let im = || gene(Some("Intermediate Metabolizer"), Some("*1/*3A"));
    let pm = || gene(Some("Poor Metabolizer"), Some("*3A/*3A"));
    let min_10 = edited("daily_mg = { min = 5, max = 200 }", "daily_mg = { min = 10, max = 200 }");
    let max_40 = edited("daily_mg = { min = 5, max = 200 }", "daily_mg = { min = 5, max = 40 }");
    let cases: Vec<(&str, &Recipe, Patient)> = vec![
        (
            "3 kg, TPMT intermediate: 3 mg is not raised to 5 mg",
            &r,
            patient(Some("3"), &[("TPMT", im()), ("NUDT15", nm())]),
        ),
        (
            "20 kg, TPMT poor: 4 mg is not raised to 5 mg",
            &r,
            patient(Some("20"), &[("TPMT", pm()), ("NUDT15", nm())]),
        ),
        (
            "3 kg, both normal, minimum 10 mg: raised with QA",
            &min_10,
            patient(Some("3"), &[("TPMT", nm()), ("NUDT15", nm())]),
        ),
        (
            "140 kg, both normal: lowered to 200 mg with QA",
            &r,
            patient(Some("140"), &[("TPMT", nm()), ("NUDT15", nm())]),
        ),
        (
            "60 kg, TPMT intermediate, maximum 40 mg: effective 0.333 within 0.3-0.8",
            &max_40,
            patient(Some("60"), &[("TPMT", im()), ("NUDT15", nm())]),
        ),
        (
            "72.35 kg, TPMT intermediate, maximum 40 mg: effective 0.276 below 0.3",
            &max_40,
            patient(Some("72.35"), &[("TPMT", im()), ("NUDT15", nm())]),
        ),
    ];
    let mut out = String::new();
    for (name, r, p) in &cases {
        out.push_str(&format!("## {name}\n{}\n", check(r, p)));
    }
    insta::assert_snapshot!(out);

    let needs_qa = |r: &Recipe, p: &Patient| match personalise::evaluate(r, p) {
        Ok(e) => (true, e.parameters.unwrap().needs_qa),
        Err(refusal) => (false, refusal.needs_qa),
    };
    let [reduced_3kg, poor_20kg, raised, lowered, within, outside] =
        [0, 1, 2, 3, 4, 5].map(|i| needs_qa(cases[i].1, &cases[i].2));
    assert_eq!(reduced_3kg, (false, true), "a reduction is never clamped upward");
    assert_eq!(poor_20kg, (false, true));
    assert_eq!(raised, (true, true), "any clamp needs QA");
    assert_eq!(lowered, (true, true));
    assert_eq!(within, (true, true));
    assert_eq!(outside, (false, true), "outside the guideline refuses");
    let refusal = personalise::evaluate(cases[0].1, &cases[0].2).unwrap_err();
    assert!(matches!(refusal.kind, RefusalKind::ReducedBelowMinimum { .. }), "{:?}", refusal.kind);
    let refusal = personalise::evaluate(cases[5].1, &cases[5].2).unwrap_err();
    assert!(matches!(refusal.kind, RefusalKind::OutsideGuideline { .. }), "{:?}", refusal.kind);
}

/// "Likely" matches its category and is shown; "Possible" needs QA unless the row accepts it.
#[test]
fn certainty_modifier_explanations() {
    let r = example("azathioprine-oral-suspension");
    let accepting = edited(
        "when = { TPMT = \"Normal Metabolizer\", NUDT15 = \"Normal Metabolizer\" }\n",
        "when = { TPMT = \"Normal Metabolizer\", NUDT15 = \"Normal Metabolizer\" }\naccept_possible = true\n",
    );
    let nm = || gene(Some("Normal Metabolizer"), Some("*1/*1"));
    let cases: Vec<(&str, &Recipe, Patient)> = vec![
        (
            "TPMT possible normal: QA, not the full dose",
            &r,
            patient(
                Some("60"),
                &[("TPMT", gene(Some("Possible Normal Metabolizer"), None)), ("NUDT15", nm())],
            ),
        ),
        (
            "TPMT likely intermediate: matched as intermediate and shown",
            &r,
            patient(
                Some("60"),
                &[("TPMT", gene(Some("Likely Intermediate Metabolizer"), None)), ("NUDT15", nm())],
            ),
        ),
        (
            "TPMT possible normal, the row accepts it",
            &accepting,
            patient(
                Some("60"),
                &[("TPMT", gene(Some("Possible Normal Metabolizer"), None)), ("NUDT15", nm())],
            ),
        ),
    ];
    let mut out = String::new();
    for (name, r, p) in &cases {
        out.push_str(&format!("## {name}\n{}\n", check(r, p)));
    }
    insta::assert_snapshot!(out);

    let refusal = personalise::evaluate(cases[0].1, &cases[0].2).unwrap_err();
    assert!(refusal.needs_qa);
    assert!(
        matches!(refusal.kind, RefusalKind::PossiblePhenotype { row: 1, .. }),
        "{:?}",
        refusal.kind
    );
    let likely = personalise::evaluate(cases[1].1, &cases[1].2).unwrap();
    assert_eq!(likely.explanation.row.as_ref().unwrap().number, 3);
    let accepted = personalise::evaluate(cases[2].1, &cases[2].2).unwrap();
    assert_eq!(accepted.parameters.unwrap().daily_dose.value(), Fixed::from_int(120));
}

/// `accept_possible` means nothing without a phenotype-matched gene.
#[test]
fn accept_possible_needs_a_phenotype_gene() {
    let base = std::fs::read_to_string(examples().join("folate-mthfr.toml")).unwrap();
    let from = "when = { MTHFR = \"c.677C/c.677C\" }\n";
    assert!(base.contains(from));
    let text = base.replacen(from, &format!("{from}accept_possible = true\n"), 1);
    let errors = authoring::parse("folate.toml", &text).unwrap_err();
    insta::assert_snapshot!(errors.to_string());
}
