//! Every screen rendered with Slint's software renderer (as on the appliance, no GPU, no
//! display server) to the PNGs under `docs/screens/`, and compared with them within a
//! tolerance. `GALEN_UPDATE_SCREENS=1` rewrites the PNGs after a deliberate change; look at
//! them before committing.
//!
//! The screens show fixed, typical data put through the same view model the live HMI uses.

use std::path::{Path, PathBuf};

use galen_hmi::view::{Role, Trend, Unit};
use galen_hmi::{AppWindow, Hmi, Row, model, show_session, show_unit};
use i_slint_backend_testing::{TestingBackend, TestingBackendOptions, mock_elapsed_time};
use slint::{ComponentHandle as _, SharedString};

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

fn strings(v: &[&str]) -> slint::ModelRc<SharedString> {
    model(v.iter().map(|s| SharedString::from(*s)).collect())
}

fn running_unit() -> (Unit, Trend, Trend) {
    let u = Unit {
        batch_id: "B-20261121-0007".into(),
        state: "Running".into(),
        phase: "dispense-vehicle".into(),
        position: (5, 9),
        progress: 0.62,
        weight_g: 31.284,
        weight_stable: false,
        temperature_c: 24.3,
        setpoint_c: 25.0,
        ..Unit::default()
    };
    let (mut w, mut t) = (Trend::new(450), Trend::new(450));
    for i in 0..200_u32 {
        let x = f64::from(i);
        w.push(if i < 40 { 0.0 } else { (x - 40.0) * 0.2 });
        t.push(22.0 + 2.3 * (1.0 - (-x / 60.0).exp()) + 0.05 * (x * 0.7).sin());
    }
    (u, w, t)
}

const PHASES: [&str; 9] = [
    "scan-api",
    "scan-vehicle",
    "prime-vehicle",
    "tare-vessel",
    "dispense-api",
    "dispense-vehicle",
    "mix",
    "flush",
    "label",
];

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
            }),
        ),
        ("login-800x480", (800, 480), Box::new(|_| {})),
        (
            "home",
            (1280, 800),
            Box::new(|ui| {
                show_session(ui, "Ada Lovelace", Role::Pharmacist);
                let (mut u, w, t) = running_unit();
                u.links_down = vec!["heater".into()];
                u.alarms = vec!["heater: no reply for 3 s (link down)".into()];
                show_unit(ui, &u, &w, &t);
                let hmi = ui.global::<Hmi<'_>>();
                hmi.set_record_health("1284 entries verified; at start: intact".into());
                hmi.set_screen("home".into());
            }),
        ),
        (
            "recipes",
            (1280, 800),
            Box::new(|ui| {
                show_session(ui, "Quinn Release", Role::Qa);
                let hmi = ui.global::<Hmi<'_>>();
                hmi.set_recipes(model(vec![
                    row(
                        "azathioprine-oral-suspension",
                        "Azathioprine 10 mg/mL oral suspension — revision 3",
                        "",
                        "Active",
                        true,
                    ),
                    row(
                        "mercaptopurine-syrup",
                        "Mercaptopurine 20 mg/mL syrup — revision 2",
                        "",
                        "Waiting for QA activation",
                        false,
                    ),
                ]));
                hmi.set_screen("recipes".into());
            }),
        ),
        (
            "new-batch",
            (1280, 800),
            Box::new(|ui| {
                show_session(ui, "Ada Lovelace", Role::Pharmacist);
                let hmi = ui.global::<Hmi<'_>>();
                hmi.set_chosen_recipe("azathioprine-oral-suspension".into());
                hmi.set_chosen_recipe_title(
                    "Azathioprine 10 mg/mL oral suspension — revision 3".into(),
                );
                hmi.set_genes(strings(&["TPMT", "NUDT15"]));
                hmi.set_has_calculation(true);
                hmi.set_calc_outcome(
                    "Reduced dose: 30 % of the standard dose (TPMT intermediate)".into(),
                );
                hmi.set_calc_text(
                    "Rule: CPIC thiopurines, TPMT × NUDT15 table (recipe revision 3)\n\
                     Inputs: weight 7.0 kg (entered), TPMT Intermediate Metabolizer (entered), \
                     NUDT15 Normal Metabolizer (entered)\n\
                     Row: TPMT intermediate, NUDT15 normal → 30–80 %, recipe factor 30 %\n\
                     Dose: 2.0 mg/kg × 7.0 kg × 30 % = 4.2 mg/day → 0.42 mL of 10 mg/mL\n\
                     Bounds: 0.1–5.0 mL per batch (signed): within"
                        .into(),
                );
                hmi.set_calc_before(
                    "Before start: a second person verifies patient-id, weight, phenotype.".into(),
                );
                hmi.set_screen("new-batch".into());
            }),
        ),
        (
            "run-scan",
            (1280, 800),
            Box::new(|ui| {
                show_session(ui, "Ada Lovelace", Role::Pharmacist);
                let (mut u, w, t) = running_unit();
                u.phase = "scan-api".into();
                u.position = (0, 9);
                u.progress = 0.0;
                u.instruction = "Scan the azathioprine container (lot and expiry)".into();
                u.notice = "lot AZA-1180 expired on 2025-10-31".into();
                show_unit(ui, &u, &w, &t);
                let hmi = ui.global::<Hmi<'_>>();
                hmi.set_phases(strings(&PHASES));
                hmi.set_screen("run".into());
            }),
        ),
        (
            "run",
            (1280, 800),
            Box::new(|ui| {
                show_session(ui, "Ada Lovelace", Role::Pharmacist);
                let (u, w, t) = running_unit();
                show_unit(ui, &u, &w, &t);
                let hmi = ui.global::<Hmi<'_>>();
                hmi.set_phases(strings(&PHASES));
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
                hmi.set_phases(strings(&PHASES));
                hmi.set_screen("run".into());
            }),
        ),
        (
            "alarms",
            (1280, 800),
            Box::new(|ui| {
                show_session(ui, "Ada Lovelace", Role::Pharmacist);
                let (mut u, w, t) = running_unit();
                u.alarms = vec![
                    "balance: unstable for 30 s during dispense-vehicle".into(),
                    "heater: no reply for 3 s (link down)".into(),
                ];
                show_unit(ui, &u, &w, &t);
                ui.global::<Hmi<'_>>().set_screen("alarms".into());
            }),
        ),
        (
            "sign",
            (1280, 800),
            Box::new(|ui| {
                show_session(ui, "Ada Lovelace", Role::Pharmacist);
                let hmi = ui.global::<Hmi<'_>>();
                hmi.set_screen("run".into());
                hmi.set_sign_kind("verify".into());
                hmi.set_sign_title("Second-person verification".into());
                hmi.set_sign_meaning(galen_hmi::view::signature_meaning("verify").into());
                hmi.set_sign_subject("For: B-20261121-0007".into());
                hmi.set_sign_asks_user(true);
            }),
        ),
        (
            "review",
            (1280, 800),
            Box::new(|ui| {
                show_session(ui, "Quinn Release", Role::Qa);
                let hmi = ui.global::<Hmi<'_>>();
                hmi.set_batches(model(vec![row(
                    "B-20261121-0007",
                    "B-20261121-0007 — patient P-0042",
                    "azathioprine-oral-suspension · Complete",
                    "Complete",
                    true,
                )]));
                hmi.set_screen("review".into());
            }),
        ),
        (
            "records-export",
            (1280, 800),
            Box::new(|ui| {
                show_session(ui, "Ida Inspector", Role::Inspector);
                let hmi = ui.global::<Hmi<'_>>();
                hmi.set_batches(model(vec![
                    row(
                        "B-20261121-0007",
                        "B-20261121-0007 — patient P-0042",
                        "azathioprine-oral-suspension · Complete",
                        "Complete",
                        true,
                    ),
                    row(
                        "B-20261120-0003",
                        "B-20261120-0003 — patient P-0017",
                        "azathioprine-oral-suspension · Aborted",
                        "Aborted",
                        false,
                    ),
                ]));
                hmi.set_export_step("checkpoints".into());
                hmi.set_export_fraction(1.0);
                hmi.set_export_result(
                    "212 entries exported to galen-export-20261121 (/media/galen)".into(),
                );
                hmi.set_safe_to_remove(true);
                hmi.set_screen("records".into());
            }),
        ),
        (
            "users",
            (1280, 800),
            Box::new(|ui| {
                show_session(ui, "Alan Admin", Role::Admin);
                let hmi = ui.global::<Hmi<'_>>();
                hmi.set_users(model(vec![
                    row("1", "Alan Admin (admin)", "#1 · admin", "", true),
                    row("2", "Ada Lovelace (ada)", "#2 · pharmacist", "", true),
                    row("3", "Victor Second (vic)", "#3 · verifier", "", true),
                    row("4", "Old Locum (locum)", "#4 · pharmacist", "", false),
                ]));
                hmi.set_screen("users".into());
            }),
        ),
    ]
}

fn render(name: &str, size: (u32, u32), setup: &dyn Fn(&AppWindow)) -> (u32, u32, Vec<u8>) {
    let ui = AppWindow::new().unwrap();
    ui.window().set_size(slint::PhysicalSize::new(size.0, size.1));
    setup(&ui);
    ui.show().unwrap();
    // Conditional elements and repeaters are built on the next tick.
    mock_elapsed_time(std::time::Duration::from_millis(100));
    let shot = ui.window().take_snapshot().unwrap_or_else(|e| panic!("{name}: {e}"));
    ui.hide().unwrap();
    (shot.width(), shot.height(), shot.as_bytes().to_vec())
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
fn every_screen_matches_its_picture_in_docs() {
    slint::platform::set_platform(Box::new(TestingBackend::new(TestingBackendOptions {
        mock_time: true,
        threading: false,
        renderer_name: Some("software".into()),
    })))
    .unwrap();
    let update = std::env::var_os("GALEN_UPDATE_SCREENS").is_some();
    let mut failures = Vec::new();
    for (name, size, setup) in screens() {
        let shot = render(name, size, &*setup);
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
