//! Every screen rendered with Slint's software renderer (as on the appliance, no GPU, no
//! display server) to the PNGs under `docs/screens/`, and compared with them within a
//! tolerance. `GALEN_UPDATE_SCREENS=1` rewrites the PNGs after a deliberate change; look at
//! them before committing.
//!
//! The screens show fixed, typical data put through the same view model the live HMI uses.
//! Doses and masses are not invented: they come from the azathioprine example recipe's own
//! rule, evaluated with `galen-recipes` for one patient (35 kg, 10 years, TPMT intermediate,
//! NUDT15 normal), and the calculation shown is the text the API returns for it.

use std::path::{Path, PathBuf};

use galen_appliance::engine::batch::{Planned, Pump};
use galen_appliance::engine::dispense::Spec;
use galen_hmi::view::{self, Role, Trend, Unit};
use galen_hmi::{
    AppWindow, GeneEntry, Hmi, Keyboard, Row, gene_entries, model, show_session, show_unit,
    wire_keyboard,
};
use galen_recipes::model::Recipe;
use galen_recipes::patient::{GeneResult, Patient, PatientId, Source, Sourced};
use galen_recipes::personalise::{self, Parameters};
use galen_recipes::pgx::{Gene, Phenotype};
use galen_recipes::quantity::{BodyWeight, Fixed};
use i_slint_backend_testing::{
    AccessibleRole, ElementHandle, ElementRoot as _, TestingBackend, TestingBackendOptions,
    mock_elapsed_time,
};
use slint::{ComponentHandle as _, Model as _, SharedString};

/// A pixel differs when a channel moved by more than this…
const CHANNEL_TOLERANCE: u8 = 40;
/// …and a screen differs when more than this share of its pixels did.
const PIXEL_TOLERANCE: f64 = 0.005;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screens")
}

fn row(id: &str, title: &str, detail: &str, status: &str, ok: bool) -> Row {
    Row { id: id.into(), title: title.into(), detail: detail.into(), status: status.into(), ok }
}

/// The example recipe as the manufacturer wrote it.
fn azathioprine() -> Recipe {
    let name = "azathioprine-oral-suspension.toml";
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/examples").join(name);
    galen_recipes::authoring::parse(name, &std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The pharmacist's patient, typed in by ada as the API builds it from the screen's fields.
fn patient() -> Patient {
    let entered = || Source::Entered { by: "ada".into(), verified_by: None };
    let gene = |g: &str, p: &str| {
        let result = GeneResult {
            diplotype: None,
            phenotype: Some(Phenotype::parse(p).unwrap()),
            activity_score: None,
        };
        (Gene::new(g).unwrap(), Sourced { value: result, source: entered() })
    };
    Patient {
        id: PatientId::new("P-0042").unwrap(),
        weight: Some(Sourced {
            value: BodyWeight::new(Fixed::parse("35").unwrap()).unwrap(),
            source: entered(),
        }),
        age_years: Some(Sourced { value: 10, source: entered() }),
        genes: [gene("TPMT", "Intermediate Metabolizer"), gene("NUDT15", "Normal Metabolizer")]
            .into(),
    }
}

/// What `Batches1.Preview` answers for the patient (the API's JSON, read by the view model as
/// the live screen reads it), and the parameters the supervisor would run.
fn calculation() -> (view::Calculation, Parameters) {
    let recipe = azathioprine();
    let e = personalise::evaluate(&recipe, &patient()).expect("the rule accepts the patient");
    let json = serde_json::json!({
        "recipe": recipe.id.as_str(),
        "revision": recipe.revision,
        "patient_id": "P-0042",
        "outcome": e.explanation.outcome,
        "text": e.explanation.to_text(),
        "parameters": e.parameters,
        "needs_qa": e.explanation.needs_qa,
        "second_person": recipe.second_person,
    });
    let calc = view::Calculation::parse(&json.to_string()).unwrap();
    (calc, e.parameters.expect("a personalised recipe"))
}

fn grams(p: &Parameters) -> (f64, f64) {
    let g = |m: galen_recipes::quantity::Mass| m.value().to_string().parse::<f64>().unwrap();
    (g(p.active_mass), p.vehicle_mass.map_or(0.0, g))
}

/// The recipe's phases as the run screen lists them (from the recipe's JSON, as `Details`
/// gives it).
fn phases() -> Vec<String> {
    view::phases_of(&serde_json::to_value(azathioprine()).unwrap())
}

/// The batch 62 % through weighing the vehicle: the azathioprine is in the vessel, the vehicle
/// is coming; no phase of this recipe heats, so the heater is off at room temperature.
fn running_unit() -> (Unit, Trend, Trend) {
    let (active, vehicle) = grams(&calculation().1);
    let phases = phases();
    let at = phases.iter().position(|p| p == "dispense-vehicle").unwrap();
    let progress = 0.62;
    let u = Unit {
        batch_id: "B-20261121-007".into(),
        state: "Running".into(),
        phase: phases[at].clone(),
        // The appliance's own words for the phase.
        phase_title: Planned::Dispense {
            id: phases[at].clone(),
            material: "vehicle".into(),
            pump: Pump::Peristaltic,
            spec: Spec {
                target_g: vehicle,
                tolerance_g: 0.5,
                density_g_ml: 1.0,
                max_rate_ml_min: 60.0,
            },
        }
        .title(),
        position: (u32::try_from(at).unwrap(), u32::try_from(phases.len()).unwrap()),
        progress,
        weight_g: active + progress * vehicle,
        weight_stable: false,
        temperature_c: 21.8,
        setpoint_c: 0.0,
        ..Unit::default()
    };
    let (mut w, mut t) = (Trend::new(450), Trend::new(450));
    for i in 0..200_u32 {
        let x = f64::from(i);
        w.push(if i < 40 { active } else { active + (x - 40.0) / 159.0 * progress * vehicle });
        t.push(21.8 + 0.05 * (x * 0.7).sin());
    }
    (u, w, t)
}

fn strings_of(v: &[String]) -> slint::ModelRc<SharedString> {
    model(v.iter().map(SharedString::from).collect())
}

/// Lets conditional elements and repeaters be built, then acts on the element with `label`
/// and `role` as a tap or a keyboard would.
fn element(ui: &AppWindow, label: &str, role: AccessibleRole) -> ElementHandle {
    mock_elapsed_time(std::time::Duration::from_millis(50));
    ElementHandle::find_by_accessible_label(ui, label)
        .find(|e| e.accessible_role() == Some(role))
        .unwrap_or_else(|| panic!("no {role:?} {label:?} on the screen"))
}

fn tap(ui: &AppWindow, label: &str) {
    element(ui, label, AccessibleRole::Button).invoke_accessible_default_action();
}

fn type_into(ui: &AppWindow, label: &str, text: &str) {
    element(ui, label, AccessibleRole::TextInput).set_accessible_value(text);
}

/// What the field with `label` shows.
fn value(ui: &AppWindow, label: &str) -> String {
    element(ui, label, AccessibleRole::TextInput).accessible_value().unwrap_or_default().into()
}

/// A finger's tap in the middle of the element with `label`: pressed and released there.
fn press(ui: &AppWindow, label: &str, role: AccessibleRole) {
    let e = element(ui, label, role);
    let (at, size) = (e.absolute_position(), e.size());
    let position = slint::LogicalPosition::new(at.x + size.width / 2.0, at.y + size.height / 2.0);
    let button = slint::platform::PointerEventButton::Left;
    let window = ui.window();
    window.dispatch_event(slint::platform::WindowEvent::PointerPressed { position, button });
    // A finger rests on the glass for a moment (a scrolling list waits that long to tell a tap
    // from a swipe).
    mock_elapsed_time(std::time::Duration::from_millis(120));
    window.dispatch_event(slint::platform::WindowEvent::PointerReleased { position, button });
}

fn lab_row(name: &str, detail: &str) -> Row {
    row(name, name.rsplit('/').next().unwrap(), detail, "", true)
}

/// The first phase: the unit waits for the azathioprine's label, and refused an expired lot.
fn scanning(ui: &AppWindow) {
    show_session(ui, "Ada Lovelace", Role::Pharmacist);
    let (mut u, _, t) = running_unit();
    u.phase = "scan-api".into();
    u.phase_title = Planned::Scan { id: u.phase.clone(), material: "azathioprine".into() }.title();
    u.awaiting = "scan".into();
    u.position = (0, u.position.1);
    u.progress = 0.0;
    u.weight_g = 0.0;
    u.weight_stable = true;
    u.instruction = "Scan the azathioprine container (lot and expiry)".into();
    u.notice = "lot AZA-1180 expired on 2025-10-31".into();
    let mut w = Trend::new(450);
    (0..200).for_each(|_| w.push(0.0));
    show_unit(ui, &u, &w, &t);
    let hmi = ui.global::<Hmi<'_>>();
    hmi.set_phases(strings_of(&phases()));
    hmi.set_screen("run".into());
}

/// The operator taps the scan field to type a label: the keyboard comes up, and Hold stays in
/// reach above it.
fn scanning_typed(ui: &AppWindow) {
    scanning(ui);
    press(
        ui,
        "Scan the label, or type material | lot | expiry (YYYY-MM-DD)",
        AccessibleRole::TextInput,
    );
    for k in ["a", "z", "a"] {
        press(ui, k, AccessibleRole::Button);
    }
    assert!(ui.global::<Keyboard<'_>>().get_open(), "the keyboard is up");
}

/// The recipe library, as QA sees it.
fn library(ui: &AppWindow) {
    show_session(ui, "Quinn Release", Role::Qa);
    let hmi = ui.global::<Hmi<'_>>();
    hmi.set_recipes(model(vec![
        row(
            "azathioprine-oral-suspension",
            "Azathioprine 10 mg/mL oral suspension — revision 1",
            "",
            "Active",
            true,
        ),
        row(
            "clopidogrel-oral-suspension",
            "Clopidogrel 5 mg/mL oral suspension — revision 1",
            "",
            "Waiting for QA activation",
            false,
        ),
    ]));
    hmi.set_screen("recipes".into());
}

/// The home screen: a batch running, the heater's link down.
fn home(ui: &AppWindow) {
    show_session(ui, "Ada Lovelace", Role::Pharmacist);
    let (mut u, w, t) = running_unit();
    u.links_down = vec!["heater".into()];
    u.alarms = vec!["heater: no reply for 3 s (link down)".into()];
    show_unit(ui, &u, &w, &t);
    let hmi = ui.global::<Hmi<'_>>();
    hmi.set_record_health(view::record_health(1284, "intact").into());
    hmi.set_screen("home".into());
}

/// The example recipe's genes with their choices as `Recipes1.Details` gives them, and what
/// the pharmacist chose for each.
fn genes_chosen(chosen: &[&str]) -> slint::ModelRc<GeneEntry> {
    let mut entries = gene_entries(&serde_json::to_value(azathioprine()).unwrap());
    for (e, v) in entries.iter_mut().zip(chosen) {
        e.value = (*v).into();
    }
    model(entries)
}

/// A new batch of the example recipe, nothing entered yet.
fn new_batch_entry(ui: &AppWindow) {
    show_session(ui, "Ada Lovelace", Role::Pharmacist);
    let recipe = azathioprine();
    let hmi = ui.global::<Hmi<'_>>();
    hmi.set_chosen_recipe(recipe.id.as_str().into());
    hmi.set_chosen_recipe_title(format!("{} — revision {}", recipe.name, recipe.revision).into());
    hmi.set_gene_entries(genes_chosen(&[]));
    hmi.set_lab_files_note(view::lab_files_note(0).into());
    hmi.set_screen("new-batch".into());
}

/// A new batch with the patient's data entered and the phenotypes chosen, before the
/// calculation.
fn new_batch_entered(ui: &AppWindow) {
    new_batch_entry(ui);
    let hmi = ui.global::<Hmi<'_>>();
    hmi.set_gene_entries(genes_chosen(&["Intermediate Metabolizer", "Normal Metabolizer"]));
    type_into(ui, "Patient ID", "P-0042");
    type_into(ui, "Weight (kg)", "35");
    type_into(ui, "Age (years)", "10");
}

/// A new batch with the patient's data entered, the phenotypes chosen, and the calculation
/// shown.
fn new_batch(ui: &AppWindow) {
    new_batch_entered(ui);
    let hmi = ui.global::<Hmi<'_>>();
    // Show calculation ends the typing: the keyboard goes down by itself.
    element(ui, "Patient ID", AccessibleRole::TextInput).invoke_accessible_default_action();
    assert!(ui.global::<Keyboard<'_>>().get_open(), "a tap on a field brings the keyboard up");
    tap(ui, "Show calculation");
    mock_elapsed_time(std::time::Duration::from_millis(50));
    assert!(!ui.global::<Keyboard<'_>>().get_open(), "any other button puts it away");
    let (calc, _) = calculation();
    hmi.set_calc_outcome(calc.heading().into());
    hmi.set_calc_text(calc.text.clone().into());
    hmi.set_calc_before(calc.before_start().into());
    hmi.set_has_calculation(true);
}

/// The patient ID typed on the letters with real taps (a pointer, not an accessibility action:
/// the field keeps the focus while keys are tapped), then Done, and the weight on the digits.
fn new_batch_typing(ui: &AppWindow) {
    new_batch_entry(ui);
    press(ui, "Patient ID", AccessibleRole::TextInput);
    for k in ["Shift", "P", "-", "0", "0", "4", "2"] {
        press(ui, k, AccessibleRole::Button);
    }
    assert_eq!(value(ui, "Patient ID"), "P-0042", "typed on the keys");
    press(ui, "Delete", AccessibleRole::Button);
    press(ui, "2", AccessibleRole::Button);
    assert_eq!(value(ui, "Patient ID"), "P-0042", "Delete takes one character");
    // Done puts the keyboard away: at 800×480 it covers the weight.
    press(ui, "Done", AccessibleRole::Button);
    press(ui, "Weight (kg)", AccessibleRole::TextInput);
    for k in ["3", "5", ".", "5"] {
        press(ui, k, AccessibleRole::Button);
    }
    assert_eq!(value(ui, "Weight (kg)"), "35.5", "the digits go to the field tapped last");
    assert_eq!(value(ui, "Patient ID"), "P-0042", "and only there");
}

/// On the 800×480 panel the phenotype is typed (Other): the screen pans up so the field shows
/// above the keyboard.
fn new_batch_other_800x480(ui: &AppWindow) {
    new_batch_entry(ui);
    let hmi = ui.global::<Hmi<'_>>();
    hmi.set_gene_entries(genes_chosen(&["Intermediate Metabolizer", "Normal Metabolizer"]));
    type_into(ui, "Patient ID", "P-0042");
    let entries = hmi.get_gene_entries();
    let mut tpmt = entries.row_data(0).unwrap();
    tpmt.typing = true;
    tpmt.value = "".into();
    entries.set_row_data(0, tpmt);
    element(ui, "TPMT phenotype (as on the lab report)", AccessibleRole::TextInput)
        .invoke_accessible_default_action();
    // A capital after Shift; two taps lock the capitals.
    for k in ["Shift", "L", "i", "k", "e", "l", "y", "Space", "Shift", "Shift", "I", "M"] {
        tap(ui, k);
    }
    assert_eq!(value(ui, "TPMT phenotype (as on the lab report)"), "Likely IM");
}

/// Alarms waiting for acknowledgement: more than fit an 800×480 panel after a link fault (the
/// added ones in the words the supervisor's safety monitor uses).
fn alarms(ui: &AppWindow) {
    show_session(ui, "Ada Lovelace", Role::Pharmacist);
    let (mut u, w, t) = running_unit();
    u.alarms = vec![
        "balance: unstable for 30 s during dispense-vehicle".into(),
        "heater: no reply for 3 s (link down)".into(),
        "heater: link lost".into(),
        "balance: no reading for 2000 ms".into(),
        "vehicle pump stalled: 0.02 g arrived where 1.50 g were expected".into(),
    ];
    show_unit(ui, &u, &w, &t);
    ui.global::<Hmi<'_>>().set_screen("alarms".into());
}

/// The performer signs the batch record.
fn sign(ui: &AppWindow) {
    show_session(ui, "Ada Lovelace", Role::Pharmacist);
    let hmi = ui.global::<Hmi<'_>>();
    hmi.set_screen("run".into());
    hmi.set_sign_title("Sign the batch record".into());
    hmi.set_sign_meaning(view::signature_meaning("sign").into());
    hmi.set_sign_subject("For: B-20261121-007".into());
    hmi.set_sign_asks_user(false);
    hmi.set_sign_kind("sign".into());
}

/// The second person types their name on the keyboard.
fn sign_second_person(ui: &AppWindow) {
    show_session(ui, "Ada Lovelace", Role::Pharmacist);
    let hmi = ui.global::<Hmi<'_>>();
    hmi.set_screen("new-batch".into());
    hmi.set_sign_title("Second-person verification".into());
    hmi.set_sign_meaning(view::signature_meaning("verify").into());
    hmi.set_sign_subject("For: B-20261121-007".into());
    hmi.set_sign_asks_user(true);
    hmi.set_sign_kind("verify".into());
    for k in ["v", "i", "c"] {
        tap(ui, k);
    }
}

/// QA's list of batches to review and release.
fn review(ui: &AppWindow) {
    show_session(ui, "Quinn Release", Role::Qa);
    let hmi = ui.global::<Hmi<'_>>();
    hmi.set_batches(model(vec![row(
        "B-20261121-007",
        "B-20261121-007 — patient P-0042",
        "azathioprine-oral-suspension · Complete",
        "Complete",
        true,
    )]));
    hmi.set_screen("review".into());
}

/// An inspector's export, done.
fn records_export(ui: &AppWindow) {
    show_session(ui, "Ida Inspector", Role::Inspector);
    let hmi = ui.global::<Hmi<'_>>();
    hmi.set_batches(model(vec![
        row(
            "B-20261121-007",
            "B-20261121-007 — patient P-0042",
            "azathioprine-oral-suspension · Complete",
            "Complete",
            true,
        ),
        row(
            "B-20261120-003",
            "B-20261120-003 — patient P-0017",
            "azathioprine-oral-suspension · Aborted",
            "Aborted",
            false,
        ),
    ]));
    hmi.set_export_step("checkpoints".into());
    hmi.set_export_fraction(1.0);
    hmi.set_export_result("212 entries exported to galen-export-20261121 (/media/galen)".into());
    hmi.set_safe_to_remove(true);
    hmi.set_screen("records".into());
}

/// The administrator's users.
fn users(ui: &AppWindow) {
    show_session(ui, "Alan Admin", Role::Admin);
    let hmi = ui.global::<Hmi<'_>>();
    hmi.set_users(model(vec![
        row("1", "Alan Admin (admin)", "#1 · admin", "", true),
        row("2", "Ada Lovelace (ada)", "#2 · pharmacist", "", true),
        row("3", "Victor Second (vic)", "#3 · verifier", "", true),
        row("4", "Old Locum (locum)", "#4 · pharmacist", "", false),
    ]));
    hmi.set_screen("users".into());
}

/// The lab reports on the stick, to choose the patient's by a tap.
fn lab_files(ui: &AppWindow) {
    show_session(ui, "Ada Lovelace", Role::Pharmacist);
    let hmi = ui.global::<Hmi<'_>>();
    hmi.set_chosen_recipe("azathioprine-oral-suspension".into());
    hmi.set_chosen_recipe_title("Azathioprine 10 mg/mL oral suspension — revision 1".into());
    hmi.set_gene_entries(genes_chosen(&[]));
    hmi.set_lab_files(model(vec![
        lab_row("LAB/P-0042-tpmt.tsv", "2026-11-21 09:12 UTC · in LAB"),
        lab_row("LAB/P-0017-tpmt.tsv", "2026-11-20 16:40 UTC · in LAB"),
        lab_row("P-0009-nudt15.tsv", "2026-11-02 11:05 UTC"),
    ]));
    hmi.set_lab_files_note(view::lab_files_note(3).into());
    hmi.set_screen("new-batch".into());
    hmi.set_picking_lab_file(true);
}

/// How a screen is set up before it is rendered.
type Setup = Box<dyn Fn(&AppWindow)>;

/// Each screen's name, size and setup.
fn screens() -> Vec<(&'static str, (u32, u32), Setup)> {
    vec![
        ("login", (1280, 800), Box::new(|_| {})),
        (
            "login-lockout",
            (1280, 800),
            Box::new(|ui| {
                ui.global::<Hmi<'_>>().set_login_error(
                    "ada is locked out after 5 wrong PINs; try again in 15 minutes or ask an \
                     administrator"
                        .into(),
                );
                for k in ["a", "d", "a", "Next"] {
                    tap(ui, k);
                }
            }),
        ),
        (
            "login-800x480",
            (800, 480),
            Box::new(|ui| {
                for k in ["a", "d", "a"] {
                    tap(ui, k);
                }
            }),
        ),
        (
            "login-empty-800x480",
            (800, 480),
            Box::new(|ui| {
                tap(ui, "Log in");
                let why = view::login_missing("", "").unwrap();
                ui.global::<Hmi<'_>>().set_login_error(why.into());
            }),
        ),
        (
            "login-pin-800x480",
            (800, 480),
            Box::new(|ui| {
                for k in ["a", "d", "a", "Next", "1", "1", "1"] {
                    tap(ui, k);
                }
            }),
        ),
        ("home", (1280, 800), Box::new(home)),
        ("home-800x480", (800, 480), Box::new(home)),
        ("recipes", (1280, 800), Box::new(library)),
        ("recipes-800x480", (800, 480), Box::new(library)),
        (
            "recipes-installed",
            (1280, 800),
            Box::new(|ui| {
                library(ui);
                let lines = view::install_lines(&[
                    "installed clopidogrel-oral-suspension revision 1 (waiting for QA activation)"
                        .to_owned(),
                    "unchanged azathioprine-oral-suspension".to_owned(),
                ]);
                let hmi = ui.global::<Hmi<'_>>();
                hmi.set_install_note(view::install_summary(&lines).into());
                hmi.set_install_lines(model(
                    lines.iter().map(|l| row("", &l.title, &l.detail, "", l.ok)).collect(),
                ));
            }),
        ),
        (
            "recipes-refused",
            (1280, 800),
            Box::new(|ui| {
                library(ui);
                let hmi = ui.global::<Hmi<'_>>();
                hmi.set_install_ok(false);
                hmi.set_install_note(
                    view::install_refused(
                        "recipe intake: timestamp metadata has expired (2026-11-19T00:00:00Z)",
                    )
                    .into(),
                );
            }),
        ),
        ("new-batch", (1280, 800), Box::new(new_batch)),
        ("new-batch-800x480", (800, 480), Box::new(new_batch)),
        ("new-batch-entered-800x480", (800, 480), Box::new(new_batch_entered)),
        ("new-batch-typing", (1280, 800), Box::new(new_batch_typing)),
        ("new-batch-typing-800x480", (800, 480), Box::new(new_batch_typing)),
        ("new-batch-other-800x480", (800, 480), Box::new(new_batch_other_800x480)),
        ("new-batch-lab-files", (1280, 800), Box::new(lab_files)),
        ("new-batch-lab-files-800x480", (800, 480), Box::new(lab_files)),
        ("run-scan", (1280, 800), Box::new(scanning)),
        ("run-scan-800x480", (800, 480), Box::new(scanning)),
        ("run-scan-typing", (1280, 800), Box::new(scanning_typed)),
        ("run-scan-typing-800x480", (800, 480), Box::new(scanning_typed)),
        (
            "run",
            (1280, 800),
            Box::new(|ui| {
                show_session(ui, "Ada Lovelace", Role::Pharmacist);
                let (u, w, t) = running_unit();
                show_unit(ui, &u, &w, &t);
                let hmi = ui.global::<Hmi<'_>>();
                hmi.set_phases(strings_of(&phases()));
                hmi.set_remaining_text("about 40 s".into());
                hmi.set_screen("run".into());
            }),
        ),
        (
            "run-800x480",
            (800, 480),
            Box::new(|ui| {
                show_session(ui, "Ada Lovelace", Role::Pharmacist);
                let (u, w, t) = running_unit();
                show_unit(ui, &u, &w, &t);
                let hmi = ui.global::<Hmi<'_>>();
                hmi.set_phases(strings_of(&phases()));
                hmi.set_screen("run".into());
            }),
        ),
        ("alarms", (1280, 800), Box::new(alarms)),
        ("alarms-800x480", (800, 480), Box::new(alarms)),
        ("sign", (1280, 800), Box::new(sign)),
        ("sign-800x480", (800, 480), Box::new(sign)),
        ("sign-second-person", (1280, 800), Box::new(sign_second_person)),
        ("sign-second-person-800x480", (800, 480), Box::new(sign_second_person)),
        (
            "sign-second-person-pin-800x480",
            (800, 480),
            Box::new(|ui| {
                sign_second_person(ui);
                for k in ["Next", "2", "2", "2"] {
                    tap(ui, k);
                }
            }),
        ),
        ("review", (1280, 800), Box::new(review)),
        ("review-800x480", (800, 480), Box::new(review)),
        ("records-export", (1280, 800), Box::new(records_export)),
        ("records-export-800x480", (800, 480), Box::new(records_export)),
        ("users", (1280, 800), Box::new(users)),
        ("users-800x480", (800, 480), Box::new(users)),
    ]
}

/// The smallest touch target a gloved finger is given (most are 64 px).
const MIN_TARGET_PX: f32 = 48.0;

/// Renders the screen, and says which buttons are too small for a gloved finger or (partly)
/// off the screen, where no one can reach them: below it only in a list that scrolls, above it
/// only while the keyboard pans the screen up.
fn render(
    name: &str,
    size: (u32, u32),
    setup: &dyn Fn(&AppWindow),
) -> ((u32, u32, Vec<u8>), Vec<String>) {
    let ui = AppWindow::new().unwrap();
    wire_keyboard(&ui);
    ui.window().set_size(slint::PhysicalSize::new(size.0, size.1));
    ui.show().unwrap();
    setup(&ui);
    // Conditional elements and repeaters are built on the next tick.
    mock_elapsed_time(std::time::Duration::from_millis(100));
    let shot = ui.window().take_snapshot().unwrap_or_else(|e| panic!("{name}: {e}"));
    #[allow(clippy::cast_precision_loss)] // a window's size in pixels
    let (w, h) = (size.0 as f32, size.1 as f32);
    // A list that scrolls brings what is below the screen up by a swipe; its top must show.
    let scrolling: Vec<(f32, f32)> = ui
        .root_element()
        .query_descendants()
        .match_inherits("Flickable")
        .find_all()
        .into_iter()
        .filter(|f| (0.0..h).contains(&f.absolute_position().y))
        .map(|f| (f.absolute_position().x, f.absolute_position().x + f.size().width))
        .collect();
    // While a field is typed into, the keyboard pans the screen up; Done brings it back.
    let panned = ui.global::<Keyboard<'_>>().get_pan() > 0.0;
    let unreachable = ui
        .root_element()
        .query_descendants()
        .match_accessible_role(AccessibleRole::Button)
        .find_all()
        .into_iter()
        .filter_map(|b| {
            let (at, sz) = (b.absolute_position(), b.size());
            let small = sz.width < MIN_TARGET_PX || sz.height < MIN_TARGET_PX;
            let scrolls = scrolling
                .iter()
                .any(|&(left, right)| at.x >= left - 0.5 && at.x + sz.width <= right + 0.5);
            let off = at.x < 0.0
                || at.x + sz.width > w + 0.5
                || (at.y < 0.0 && !panned)
                || (at.y + sz.height > h + 0.5 && !scrolls);
            (small || off).then(|| {
                let label = b.accessible_label().unwrap_or_default();
                format!(
                    "{name}: button {label:?} is {}x{} at ({}, {})",
                    sz.width, sz.height, at.x, at.y
                )
            })
        })
        .collect();
    ui.hide().unwrap();
    ((shot.width(), shot.height(), shot.as_bytes().to_vec()), unreachable)
}

fn write_png(path: &Path, (w, h, rgba): &(u32, u32, Vec<u8>)) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), *w, *h);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(rgba).unwrap();
}

fn read_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgba, "{}", path.display());
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// The share of pixels that differ by more than the channel tolerance.
fn difference(a: &[u8], b: &[u8]) -> f64 {
    let differing = a
        .chunks_exact(4)
        .zip(b.chunks_exact(4))
        .filter(|(p, q)| p.iter().zip(*q).any(|(x, y)| x.abs_diff(*y) > CHANNEL_TOLERANCE))
        .count();
    #[allow(clippy::cast_precision_loss)] // a ratio of pixel counts
    let share = differing as f64 / (a.len() / 4).max(1) as f64;
    share
}

#[test]
fn every_screen_matches_its_picture_in_docs_and_every_button_is_in_reach() {
    slint::platform::set_platform(Box::new(TestingBackend::new(TestingBackendOptions {
        mock_time: true,
        threading: false,
        renderer_name: Some("software".into()),
    })))
    .unwrap();
    let update = std::env::var_os("GALEN_UPDATE_SCREENS").is_some();
    let mut failures = Vec::new();
    for (name, size, setup) in screens() {
        let (shot, unreachable) = render(name, size, &*setup);
        failures.extend(unreachable);
        assert_eq!((shot.0, shot.1), size, "{name} renders at its size");
        let path = dir().join(format!("{name}.png"));
        if update {
            write_png(&path, &shot);
            continue;
        }
        assert!(path.exists(), "{} is missing: run with GALEN_UPDATE_SCREENS=1", path.display());
        let (w, h, want) = read_png(&path);
        let diff = if (w, h) == size { difference(&shot.2, &want) } else { 1.0 };
        if diff > PIXEL_TOLERANCE {
            let got = std::env::temp_dir().join(format!("galen-screen-{name}.png"));
            write_png(&got, &shot);
            failures.push(format!(
                "{name}: {:.2} % of pixels differ; see {}",
                diff * 100.0,
                got.display()
            ));
        }
    }
    assert!(failures.is_empty(), "screens changed:\n{}", failures.join("\n"));
}
