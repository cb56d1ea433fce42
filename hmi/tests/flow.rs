//! The main flows through the screens, driven by accessible label as an assistive technology
//! (or a gloved finger) would, against a real `applianced` service on the private bus that
//! `cargo xtask test` starts: a private swtpm under the record store, the simulated unit on real
//! ptys, a signed recipe repository on a stick. Everyone logs in on the on-screen keyboards,
//! and the patient's ID, weight, age and a phenotype are typed on the docked keyboard key by
//! key; another phenotype is chosen from the recipe's terms. QA installs the recipe from the
//! stick and activates it, a pharmacist creates a personalised batch from the lab report picked
//! on the stick, a second person verifies it, the batch runs to completion with its scans and
//! its cleaning step answered on the run screen, the pharmacist signs it, and an inspector
//! exports it.
//!
//! The Slint testing backend runs the event loop on the test's thread (the HMI's D-Bus answers
//! come back through it); the flow itself runs on a second thread and reaches the window only
//! through `slint::invoke_from_event_loop`.

#[path = "../../appliance/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use galen_appliance::dbus::{self, PATH};
use galen_appliance::records::users::Role;
use galen_hmi::client::{Bus, Client};
use galen_hmi::{AppWindow, Options};
use i_slint_backend_testing::{AccessibleRole, ElementHandle, ElementRoot as _};
use slint::{ComponentHandle as _, Model as _};
use zbus::Connection;

const PEOPLE: [(&str, &str, Role, &str); 4] = [
    ("ada", "Ada Lovelace", Role::Pharmacist, "111111"),
    ("vic", "Victor Second", Role::Verifier, "222222"),
    ("quinn", "Quinn Release", Role::Qa, "333333"),
    ("ida", "Ida Inspector", Role::Inspector, "444444"),
];

fn pin(user: &str) -> &'static str {
    PEOPLE.iter().find(|p| p.0 == user).map(|p| p.3).unwrap()
}

const RECIPE: &str = "test-suspension";

use support::Appliance;

/// The service as `appliance/tests/api.rs` stands it up, with the people of the flow.
async fn appliance() -> Appliance {
    support::appliance(&PEOPLE).await
}

/// A plain D-Bus client, for what is not the subject of this test.
async fn zbus_login(address: &str, name: &str, user: &str) -> Connection {
    let conn = zbus::connection::Builder::address(address).unwrap().build().await.unwrap();
    let _: (String, String) = call(&conn, name, "Session1", "Login", &(user, pin(user))).await;
    conn
}

async fn call<B, R>(conn: &Connection, name: &str, iface: &str, method: &str, body: &B) -> R
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
    R: serde::de::DeserializeOwned + zbus::zvariant::Type,
{
    let iface = format!("org.galen.{iface}");
    let reply = conn
        .call_method(Some(name), PATH, Some(iface.as_str()), method, body)
        .await
        .unwrap_or_else(|e| panic!("{iface}.{method}: {e}"));
    reply.body().deserialize().unwrap()
}

/// The window, as seen from the flow's thread.
struct Screen {
    ui: slint::Weak<AppWindow>,
}

/// Quits the event loop when the flow ends, however it ends.
struct QuitOnDrop;

impl Drop for QuitOnDrop {
    fn drop(&mut self) {
        let _ = slint::quit_event_loop();
    }
}

/// What an element says: its value, else its label.
fn said(e: &ElementHandle) -> String {
    e.accessible_value().or_else(|| e.accessible_label()).unwrap_or_default().to_string()
}

impl Screen {
    /// Runs `f` on the UI thread and returns what it returns.
    fn on_ui<T: Send + 'static>(&self, f: impl FnOnce(&AppWindow) -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        let ui = self.ui.clone();
        slint::invoke_from_event_loop(move || {
            let _ = tx.send(ui.upgrade().map(|ui| f(&ui)));
        })
        .unwrap();
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the event loop answers")
            .expect("the window is there")
    }

    /// What the element with `label` says now, if it is on the screen.
    fn value(&self, label: &'static str) -> Option<String> {
        self.on_ui(move |ui| {
            ElementHandle::find_by_accessible_label(ui, label)
                .find_map(|e| e.accessible_value().map(|v| v.to_string()))
        })
    }

    /// Waits up to `secs` for the screen to satisfy `cond`; says what it showed if it never did.
    fn wait(
        &self,
        secs: u64,
        what: &str,
        cond: impl Fn(&AppWindow) -> bool + Send + Clone + 'static,
    ) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let c = cond.clone();
            if self.on_ui(move |ui| c(ui)) {
                return;
            }
            if Instant::now() >= deadline {
                panic!("waited {secs} s for {what}; the screen says: {}", self.summary());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the element with `label` to say something containing `text`.
    fn wait_for_text(&self, secs: u64, label: &'static str, text: &str) -> String {
        let t = text.to_owned();
        self.wait(secs, &format!("{label:?} to say {text:?}"), move |ui| {
            ElementHandle::find_by_accessible_label(ui, label).any(|e| said(&e).contains(&t))
        });
        self.value(label).unwrap_or_default()
    }

    /// Waits for an enabled element with `label`, then acts on it (taps a button).
    fn tap(&self, label: impl Into<String>) {
        let label = label.into();
        let l = label.clone();
        self.wait(15, &format!("an enabled {label:?}"), move |ui| button(ui, &l).is_some());
        self.on_ui(move |ui| button(ui, &label).unwrap().invoke_accessible_default_action());
    }

    /// Waits for the field with `label`, then types `text` into it.
    fn fill(&self, label: &'static str, text: &str) {
        self.wait(15, &format!("the field {label:?}"), move |ui| field(ui, label).is_some());
        let text = text.to_owned();
        let t = text.clone();
        self.on_ui(move |ui| field(ui, label).unwrap().set_accessible_value(t));
        let typed = self.value(label);
        assert_eq!(typed.as_deref(), Some(text.as_str()), "what {label:?} shows");
    }

    /// `text` key by key on the docked keyboard, into the field with `label`, as a gloved
    /// finger would: a tap on the field brings the keyboard up (letters or digits, as the field
    /// asks), a capital follows Shift, and Done puts the keyboard away.
    fn keys(&self, label: &'static str, text: &str) {
        self.wait(15, &format!("the field {label:?}"), move |ui| field(ui, label).is_some());
        self.on_ui(move |ui| field(ui, label).unwrap().invoke_accessible_default_action());
        for c in text.chars() {
            if c.is_uppercase() {
                self.tap("Shift");
            }
            self.tap(c.to_string());
        }
        assert_eq!(self.value(label).as_deref(), Some(text), "what {label:?} shows");
        self.tap("Done");
        self.wait(15, "the keyboard to go down", |ui| button(ui, "Done").is_none());
    }

    /// Scrolls the screen's form (down, or up) until the button with `label` shows: what is
    /// out of the form's view is out of reach, for a finger as for this test.
    fn scroll_to(&self, label: &'static str, down: bool) {
        for _ in 0..30 {
            if self.on_ui(move |ui| button(ui, label).is_some()) {
                return;
            }
            self.on_ui(move |ui| {
                // Just above the hint under the form: inside the form, wherever it scrolled.
                let hint = ElementHandle::find_by_accessible_label(ui, "▼ More below: swipe up")
                    .next()
                    .expect("a form that scrolls");
                let (at, size) = (hint.absolute_position(), hint.size());
                let position = slint::LogicalPosition::new(at.x + size.width / 2.0, at.y - 40.0);
                let delta_y = if down { -60.0 } else { 60.0 };
                ui.window().dispatch_event(slint::platform::WindowEvent::PointerScrolled {
                    position,
                    delta_x: 0.0,
                    delta_y,
                });
            });
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{label:?} never showed; the screen says: {}", self.summary());
    }

    /// A PIN, key by key on the keypad, as a gloved finger would.
    fn keypad(&self, pin: &str) {
        self.tap("Clear");
        for d in pin.chars() {
            self.tap(d.to_string());
        }
    }

    /// A user name, key by key on the docked keyboard, into the field with `label`; then on
    /// to the PIN.
    fn letters(&self, label: &'static str, user: &str) {
        for c in user.chars() {
            self.tap(c.to_string());
        }
        assert_eq!(self.value(label).as_deref(), Some(user), "what {label:?} shows");
        self.tap("Next");
    }

    fn login(&self, user: &str) {
        self.wait(15, "the login screen", |ui| !ui.global::<galen_hmi::Hmi<'_>>().get_logged_in());
        self.letters("User name", user);
        self.keypad(pin(user));
        self.tap("Log in");
        self.wait(15, &format!("{user} logged in"), |ui| button(ui, "Log out").is_some());
    }

    fn logout(&self) {
        self.tap("Log out");
        self.wait(15, "the login screen", |ui| field(ui, "User name").is_some());
    }

    /// Signs in the open e-signature dialog with `pin` (and `user`, when it asks for one).
    fn sign(&self, user: Option<&str>, pin: &str) {
        self.wait_for_text(15, "Meaning of the signature", "Meaning of this signature");
        if let Some(user) = user {
            self.letters("Signer's user name", user);
        }
        self.keypad(pin);
        self.tap("Sign");
        self.wait(15, "the signature dialog to close", |ui| {
            ElementHandle::find_by_accessible_label(ui, "Meaning of the signature").next().is_none()
        });
    }

    /// Every labelled element and what it says, for a failure's message.
    fn summary(&self) -> String {
        self.on_ui(|ui| {
            ui.root_element()
                .query_descendants()
                .match_predicate(|e| e.accessible_label().is_some())
                .find_all()
                .iter()
                .map(|e| format!("{:?}={:?}", e.accessible_label().unwrap_or_default(), said(e)))
                .collect::<Vec<_>>()
                .join(", ")
        })
    }
}

/// The enabled element with `label` and `role` (a text's words are its label too: a field's
/// caption is not the field).
fn enabled(ui: &AppWindow, label: &str, role: AccessibleRole) -> Option<ElementHandle> {
    ElementHandle::find_by_accessible_label(ui, label).find(|e| {
        e.is_valid() && e.accessible_role() == Some(role) && e.accessible_enabled() != Some(false)
    })
}

fn button(ui: &AppWindow, label: &str) -> Option<ElementHandle> {
    enabled(ui, label, AccessibleRole::Button)
}

fn field(ui: &AppWindow, label: &str) -> Option<ElementHandle> {
    enabled(ui, label, AccessibleRole::TextInput)
}

/// The flow, on its own thread. Returns the batch's id.
fn flow(s: &Screen, a: &Known) -> String {
    // An empty login says what is missing instead of doing nothing; a typo is deleted.
    s.wait(15, "the login screen", |ui| field(ui, "User name").is_some());
    s.tap("Log in");
    s.wait_for_text(15, "Login problem", "Type your user name first");
    s.tap("q");
    s.tap("x");
    s.tap("Delete");
    assert_eq!(s.value("User name").as_deref(), Some("q"), "Delete takes one letter");
    s.tap("Delete");
    s.letters("User name", "quinn");
    s.tap("Log in");
    s.wait_for_text(15, "Login problem", "type your PIN on the keypad");
    s.keypad(pin("quinn"));
    s.tap("Log in");
    s.wait(15, "quinn logged in", |ui| button(ui, "Log out").is_some());

    // QA installs the manufacturer's update from the stick and activates the new revision.
    s.tap("Recipes");
    s.tap("Install from stick");
    let installed = s.wait_for_text(60, "Installed recipe", &format!("Installed {RECIPE}"));
    assert!(installed.contains("revision 1"), "{installed}");
    s.tap(format!("Activate {RECIPE}"));
    s.sign(None, pin("quinn"));
    s.wait_for_text(15, "Message", &format!("{RECIPE} revision 1 activated"));
    s.logout();

    // The pharmacist: a new personalised batch, the calculation shown before it is created.
    s.login("ada");
    s.tap("New batch");
    s.wait(15, "an active recipe to choose", |ui| {
        ui.global::<galen_hmi::Hmi<'_>>().get_recipes().iter().any(|r| r.ok)
    });
    let recipe = s.on_ui(|ui| {
        let rows = ui.global::<galen_hmi::Hmi<'_>>().get_recipes();
        rows.iter().find(|r| r.ok).map(|r| r.title.to_string()).unwrap()
    });
    assert!(recipe.ends_with("— revision 1"), "{recipe}");
    s.tap(recipe);
    s.keys("Patient ID", "P-0042");
    s.keys("Weight (kg)", "7.0");
    s.keys("Age (years)", "2");
    // TPMT chosen from the terms the recipe's table names; NUDT15 typed as the lab wrote it.
    s.tap("TPMT Intermediate Metabolizer");
    s.scroll_to("NUDT15 other", true);
    s.tap("NUDT15 other");
    s.keys(NUDT15, "NM");
    s.tap("Show calculation");
    let calc = s.wait_for_text(15, "Calculation", "TPMT");
    assert!(calc.contains("TPMT: Intermediate"), "the phenotype chosen: {calc}");
    assert!(calc.contains("NUDT15: Normal"), "the phenotype typed: {calc}");
    assert!(calc.contains("entered by ada"), "typed phenotypes say so: {calc}");
    let outcome = s.value("Calculation outcome").unwrap();
    assert!(!outcome.is_empty(), "an outcome in words");
    assert_eq!(s.value("Created batch"), None, "nothing is created by showing the calculation");

    // The lab report instead, picked on the stick: a new input needs the calculation again.
    s.scroll_to("Choose lab file", false);
    s.wait_for_text(15, "Lab files", "1 lab file on the stick");
    s.tap("Choose lab file");
    s.tap(LAB_FILE);
    s.wait_for_text(15, "Chosen lab report", LAB_FILE);
    s.on_ui(|ui| {
        assert!(button(ui, "TPMT Intermediate Metabolizer").is_none(), "phenotypes from the file");
        assert!(field(ui, NUDT15).is_none(), "no typed phenotype either");
    });
    s.wait(15, "Create batch to wait for the new calculation", |ui| {
        button(ui, "Create batch").is_none()
    });
    s.tap("Show calculation");
    let calc = s.wait_for_text(15, "Calculation", &format!("lab file {LAB_FILE}"));
    assert!(calc.contains("Intermediate"), "the file's TPMT phenotype: {calc}");
    s.tap("Create batch");
    let created = s.wait_for_text(15, "Created batch", "A second person must verify it");
    let id = created
        .strip_prefix("Batch ")
        .and_then(|t| t.split_whitespace().next())
        .unwrap()
        .to_owned();
    assert!(id.starts_with("B-"), "{created}");

    // A second person verifies on the same screen, with their own name and PIN.
    s.tap("Second person verifies");
    s.sign(Some("vic"), pin("vic"));
    s.wait_for_text(15, "Created batch", "Verified by a second person");
    s.wait_for_text(15, "Message", &format!("{id} verified by vic"));

    // The run: the scans through the scan entry, the cleaning step confirmed.
    s.tap("Start batch");
    s.wait_for_text(20, "Instruction", "Scan the azathioprine container");
    s.wait_for_text(5, "Batch state", &format!("{id}: Running"));
    s.fill(SCAN, "azathioprine | AZA-2291 | 2030-01-31");
    s.tap("Check label");
    s.wait_for_text(15, "Message", "azathioprine lot AZA-2291 accepted");
    s.wait_for_text(20, "Instruction", "vehicle");
    s.fill(SCAN, "vehicle | ORA-77 | 2030-06-30");
    s.tap("Check label");
    s.wait_for_text(15, "Message", "vehicle lot ORA-77 accepted");
    s.wait(120, "the cleaning step", |ui| button(ui, "Done: confirm").is_some());
    let instruction = s.value("Instruction").unwrap();
    assert!(instruction.starts_with("➜ "), "an instruction for the operator: {instruction}");
    s.tap("Done: confirm");
    s.wait_for_text(30, "Batch state", &format!("{id}: Complete"));
    assert_eq!(s.value("Instruction").as_deref(), Some("The unit is working. Nothing to do now."));

    // The performer signs.
    s.tap("Sign batch");
    s.wait_for_text(15, "Meaning of the signature", "Authored");
    s.sign(None, pin("ada"));
    s.wait_for_text(15, "Message", &format!("{id} signed"));
    s.logout();

    // The inspector exports it to the stick.
    s.login("ida");
    s.tap("Records");
    s.tap(format!("Export {id}"));
    let result = s.wait_for_text(60, "Export result", "entries exported to");
    let folder = result.split(" exported to ").nth(1).and_then(|t| t.split(" (").next()).unwrap();
    assert!(a.exports.join(folder).is_dir(), "{result}: no {folder} in {}", a.exports.display());
    s.logout();
    id
}

const SCAN: &str = "Scan the label, or type material | lot | expiry (YYYY-MM-DD)";
const NUDT15: &str = "NUDT15 phenotype (as on the lab report)";
/// Where the lab's report sits on the stick, as the picker names it.
const LAB_FILE: &str = "GALEN/lab/P-0042-tpmt.tsv";

/// Puts the manufacturer's signed update and the lab's report, under a folder named like a
/// stick's label, into the folder the appliance takes as its stick.
fn put_on_stick(repo: &Path, stick: &Path) {
    support::copy_dir(repo, &stick.join("GALEN/recipes"));
    let lab =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/examples/lab/tpmt-intermediate.tsv");
    std::fs::create_dir_all(stick.join("GALEN/lab")).unwrap();
    std::fs::copy(lab, stick.join(LAB_FILE)).unwrap();
}

/// What the flow's thread needs to know of the appliance.
struct Known {
    exports: PathBuf,
}

#[test]
fn login_new_batch_run_sign_export_through_the_screens() {
    i_slint_backend_testing::init_integration_test_with_system_time();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let _inside = rt.enter();
    let address = std::env::var("GALEN_TEST_DBUS_ADDRESS")
        .expect("run through `cargo xtask test`, which starts a private dbus-daemon");
    let name = format!("org.galen.Test.Hmi.P{}", std::process::id());
    let a = rt.block_on(appliance());
    let _server = rt.block_on(dbus::serve_bus(&address, a.svc.clone(), &name)).unwrap();

    put_on_stick(&a.repo, &a.exports);
    let bus = Bus::Address(address.clone());
    let client = rt.block_on(Client::connect(&bus, &name)).unwrap();
    let ui = AppWindow::new().unwrap();
    ui.window().set_size(slint::PhysicalSize::new(1280, 800));
    ui.show().unwrap();
    let options = Options { bus, lock_after: Duration::from_secs(3600) };
    let running = galen_hmi::init(&ui, client, rt.handle().clone(), options);

    let screen = Screen { ui: ui.as_weak() };
    let known = Known { exports: a.exports.clone() };
    let driver = std::thread::spawn(move || {
        let _quit = QuitOnDrop;
        flow(&screen, &known)
    });
    slint::run_event_loop().unwrap();
    let id = match driver.join() {
        Ok(id) => id,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    drop(running);
    drop(ui);

    // The record holds every signature given on the screens, and the scans.
    let log: String = rt.block_on(async {
        let ida = zbus_login(&address, &name, "ida").await;
        call(&ida, &name, "Records1", "Entries", &(&id,)).await
    });
    for needle in [
        "batch_created",
        "personalisation",
        "Verified by (second person) Victor Second",
        "scanned azathioprine lot AZA-2291",
        "scanned vehicle lot ORA-77",
        LAB_FILE,
        "Complete",
        "Performed by Ada Lovelace",
    ] {
        assert!(log.contains(needle), "the record has {needle}:\n{log}");
    }
}
