//! `galen-hmi`, the touchscreen for pharmacists, QA and inspectors.
//!
//! It is a D-Bus client of `applianced` and nothing else: it displays and asks, and never
//! computes a dose or decides anything that a batch record depends on. `client` is the only
//! module that knows D-Bus, `view` turns the appliance's answers into what the screens show,
//! and this module wires both to the Slint window through the `Hmi` global.
//!
//! **Concurrency.** The Slint event loop owns the window on the main thread; D-Bus calls run on
//! a tokio runtime and come back with `upgrade_in_event_loop`. The controller's state sits
//! behind one mutex that no one holds across an await.

pub mod client;
pub mod view;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, UNIX_EPOCH};

use slint::{ComponentHandle as _, Model as _, ModelRc, SharedString, VecModel};

use crate::client::{
    BatchCommand, Bus, Client, ClientError, LabFile, PatientEntry, Refusal, Signing,
};
use crate::view::{Role, Screen, Trend, Unit};

slint::slint! { export { AppWindow, GeneEntry, Hmi, Keyboard, NavItem, Row } from "ui/app.slint"; }

/// Samples kept for each trend chart (5 Hz at most: a minute and a half or more).
const TREND_SAMPLES: usize = 450;

/// What the controller needs to know besides the window.
#[derive(Debug, Clone)]
pub struct Options {
    pub bus: Bus,
    /// Inactivity after which the screen locks (logs out).
    pub lock_after: Duration,
}

#[derive(Debug)]
struct State {
    role: Option<Role>,
    unit: Unit,
    weight: Trend,
    temperature: Trend,
    genes: Vec<String>,
    phenotypes: Vec<String>,
    recipe: String,
    /// The lab reports the new-batch screen last listed; a choice is looked up here, so only
    /// a file found on the stick is ever read.
    lab_files: Vec<LabFile>,
    created: String,
    /// The batch whose recipe the phase list shows.
    phases_of: String,
    phase_started: Option<(String, Instant)>,
    signing: Option<(String, String)>,
    last_touch: Instant,
}

/// The running HMI: the window's callbacks talk to the appliance through it.
#[derive(Clone)]
pub struct Controller {
    ui: slint::Weak<AppWindow>,
    client: Client,
    rt: tokio::runtime::Handle,
    options: Options,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").field("client", &self.client).finish_non_exhaustive()
    }
}

impl Controller {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `call` on the runtime, then `done` with its result on the UI thread; a refusal is
    /// shown in the message bar, and an ended session goes back to the login screen.
    fn run<T, F>(&self, call: F, done: impl FnOnce(&Controller, &AppWindow, T) + Send + 'static)
    where
        T: Send + 'static,
        F: Future<Output = Result<T, ClientError>> + Send + 'static,
    {
        let this = self.clone();
        self.rt.spawn(async move {
            let result = call.await;
            let ui = this.ui.clone();
            let _ = ui.upgrade_in_event_loop(move |ui| match result {
                Ok(v) => done(&this, &ui, v),
                Err(e) => this.failed(&ui, &e),
            });
        });
    }

    fn failed(&self, ui: &AppWindow, e: &ClientError) {
        let hmi = ui.global::<Hmi<'_>>();
        if let ClientError::Refused { kind, .. } = e
            && kind.ends_session()
        {
            self.locked(ui, &e.to_string());
            return;
        }
        hmi.set_message(e.to_string().into());
        hmi.set_message_is_error(true);
    }

    fn said(ui: &AppWindow, text: impl Into<SharedString>) {
        let hmi = ui.global::<Hmi<'_>>();
        hmi.set_message(text.into());
        hmi.set_message_is_error(false);
    }

    /// Back to the login screen, forgetting everything of the session.
    fn locked(&self, ui: &AppWindow, why: &str) {
        let hmi = ui.global::<Hmi<'_>>();
        hmi.set_logged_in(false);
        hmi.set_login_error(why.into());
        hmi.set_message("".into());
        hmi.set_sign_kind("".into());
        hmi.set_screen("home".into());
        hmi.set_created_batch("".into());
        hmi.set_has_calculation(false);
        hmi.set_chosen_recipe("".into());
        hmi.set_lab_file("".into());
        hmi.set_picking_lab_file(false);
        hmi.set_install_note("".into());
        hmi.set_install_lines(model(Vec::new()));
        hmi.set_install_choices(model(Vec::new()));
        let mut s = self.state();
        s.role = None;
        s.lab_files.clear();
        s.created.clear();
        s.recipe.clear();
        s.signing = None;
    }

    fn navigate(&self, ui: &AppWindow, screen: Screen) {
        let hmi = ui.global::<Hmi<'_>>();
        hmi.set_screen(screen.id().into());
        hmi.set_message("".into());
        match screen {
            Screen::Home => {
                self.run(
                    {
                        let c = self.client.clone();
                        async move { c.verify_records().await }
                    },
                    |_, ui, (n, integrity)| {
                        let hmi = ui.global::<Hmi<'_>>();
                        hmi.set_record_health(view::record_health(n, &integrity).into());
                        hmi.set_record_ok(!integrity.to_lowercase().contains("compromised"));
                    },
                );
            }
            Screen::Recipes | Screen::NewBatch => self.load_recipes(),
            Screen::Records | Screen::Review => self.load_batches(),
            Screen::Users => self.load_users(),
            Screen::Run | Screen::Alarms => {}
        }
    }

    fn load_recipes(&self) {
        let c = self.client.clone();
        self.run(async move { c.recipes().await }, |_, ui, rows| {
            let lines: Vec<Row> = view::recipe_lines(&rows)
                .into_iter()
                .map(|l| Row {
                    id: l.id.into(),
                    title: l.title.into(),
                    detail: SharedString::new(),
                    status: l.status.into(),
                    ok: l.active,
                })
                .collect();
            ui.global::<Hmi<'_>>().set_recipes(model(lines));
        });
    }

    fn load_batches(&self) {
        let c = self.client.clone();
        self.run(async move { c.batches().await }, |_, ui, rows| {
            let lines: Vec<Row> = rows
                .into_iter()
                .rev()
                .map(|(id, recipe, patient, state)| Row {
                    title: format!("{id} — patient {patient}").into(),
                    detail: format!("{recipe} · {state}").into(),
                    status: state.clone().into(),
                    ok: state == "Complete",
                    id: id.into(),
                })
                .collect();
            ui.global::<Hmi<'_>>().set_batches(model(lines));
        });
    }

    fn load_users(&self) {
        let c = self.client.clone();
        self.run(async move { c.users().await }, |_, ui, rows| {
            let lines: Vec<Row> = rows
                .into_iter()
                .map(|(id, user, name, role, active)| Row {
                    id: id.to_string().into(),
                    title: format!("{name} ({user})").into(),
                    detail: format!("#{id} · {role}").into(),
                    status: SharedString::new(),
                    ok: active,
                })
                .collect();
            ui.global::<Hmi<'_>>().set_users(model(lines));
        });
    }

    /// The patient as typed, and the chosen lab report's name on the stick (`lab` is its name
    /// in the last listing; "" for typed phenotypes), for the appliance to read.
    fn patient(
        &self,
        id: &str,
        weight: &str,
        age: &str,
        lab: &str,
    ) -> Result<(PatientEntry, Option<String>), String> {
        let s = self.state();
        let typed: Vec<(&str, &str)> =
            s.genes.iter().zip(&s.phenotypes).map(|(g, p)| (g.as_str(), p.as_str())).collect();
        let fields =
            view::patient_fields(id, weight, age, if lab.is_empty() { &typed } else { &[] });
        let lab_file = if lab.is_empty() {
            None
        } else {
            let file = s.lab_files.iter().find(|f| f.name == lab).ok_or_else(|| {
                format!("{lab} is no longer in the list; choose the lab file again")
            })?;
            Some(file.name.clone())
        };
        Ok((PatientEntry { fields, lab_file: None }, lab_file))
    }

    /// Asks the appliance what lab reports the stick holds, off the UI thread: a USB stick
    /// can be slow. No stick, or one the appliance cannot read, is no files, and says why.
    fn look_for_lab_files(&self) {
        let client = self.client.clone();
        let this = self.clone();
        self.rt.spawn(async move {
            let (files, why) = match client.stick().await {
                Ok(on) => (on.lab_files, None),
                Err(e) => (Vec::new(), Some(e)),
            };
            let ui = this.ui.clone();
            let _ = ui.upgrade_in_event_loop(move |ui| {
                let rows = files
                    .iter()
                    .map(|f| Row {
                        id: f.name.clone().into(),
                        title: f.name.rsplit('/').next().unwrap_or(&f.name).into(),
                        detail: lab_file_detail(f).into(),
                        status: SharedString::new(),
                        ok: true,
                    })
                    .collect();
                let hmi = ui.global::<Hmi<'_>>();
                let note = match &why {
                    None => view::lab_files_note(files.len()),
                    Some(ClientError::Refused { kind: Refusal::Usb, text }) => {
                        format!("{text} — or type the phenotype")
                    }
                    Some(e) => format!("Cannot look at the stick: {e}"),
                };
                hmi.set_lab_files_note(note.into());
                hmi.set_lab_files(model(rows));
                this.state().lab_files = files;
            });
        });
    }

    /// QA's install from the stick: finds the recipe update on it (or installs `chosen`, one
    /// of several found), and shows the appliance's answer in the install panel.
    fn install_recipes(&self, chosen: String) {
        let Some(ui) = self.ui.upgrade() else { return };
        let hmi = ui.global::<Hmi<'_>>();
        hmi.set_installing(true);
        hmi.set_install_ok(true);
        hmi.set_install_lines(model(Vec::new()));
        hmi.set_install_choices(model(Vec::new()));
        hmi.set_install_note("Looking for the manufacturer's recipe update on the stick…".into());
        let client = self.client.clone();
        let this = self.clone();
        self.rt.spawn(async move {
            // `chosen` is one of several the last look found ("" is the stick's top folder,
            // so a choice is marked by the `/` in front).
            let found = match chosen.strip_prefix('/') {
                Some(folder) => Ok(vec![folder.to_owned()]),
                None => client.stick().await.map(|on| on.recipe_updates),
            };
            let outcome = match found.as_deref() {
                Err(_) => Install::Done(found.map(|_| Vec::new())),
                Ok([]) => Install::NoneFound,
                Ok([folder]) => {
                    let ui = this.ui.clone();
                    let _ = ui.upgrade_in_event_loop(|ui| {
                        ui.global::<Hmi<'_>>().set_install_note(
                            "Checking the manufacturer's signatures and installing…".into(),
                        );
                    });
                    Install::Done(client.install_recipes(folder).await)
                }
                Ok(several) => Install::Choose(several.to_vec()),
            };
            let ui = this.ui.clone();
            let _ = ui.upgrade_in_event_loop(move |ui| this.installed(&ui, outcome));
        });
    }

    fn installed(&self, ui: &AppWindow, outcome: Install) {
        let hmi = ui.global::<Hmi<'_>>();
        hmi.set_installing(false);
        match outcome {
            Install::NoneFound => {
                hmi.set_install_ok(false);
                hmi.set_install_note(
                    "No recipe update on the stick — insert the manufacturer's stick (it holds \
                     the folders metadata and targets) and try again."
                        .into(),
                );
            }
            Install::Choose(found) => {
                hmi.set_install_note(
                    format!("The stick holds {} recipe updates: choose one.", found.len()).into(),
                );
                let rows = found
                    .into_iter()
                    .map(|name| Row {
                        id: format!("/{name}").into(),
                        title: if name.is_empty() {
                            "The stick's top folder".into()
                        } else {
                            name.into()
                        },
                        detail: SharedString::new(),
                        status: SharedString::new(),
                        ok: true,
                    })
                    .collect();
                hmi.set_install_choices(model(rows));
            }
            Install::Done(Ok(lines)) => {
                let lines = view::install_lines(&lines);
                hmi.set_install_ok(lines.iter().all(|l| l.ok));
                hmi.set_install_note(view::install_summary(&lines).into());
                let rows = lines
                    .into_iter()
                    .map(|l| Row {
                        id: SharedString::new(),
                        title: l.title.into(),
                        detail: l.detail.into(),
                        status: SharedString::new(),
                        ok: l.ok,
                    })
                    .collect();
                hmi.set_install_lines(model(rows));
                self.load_recipes();
            }
            Install::Done(Err(ClientError::Refused { kind: Refusal::Recipes, text })) => {
                hmi.set_install_ok(false);
                hmi.set_install_note(view::install_refused(&text).into());
            }
            Install::Done(Err(e)) => {
                hmi.set_install_ok(false);
                hmi.set_install_note(format!("Nothing was installed: {e}").into());
                self.failed(ui, &e);
            }
        }
    }

    fn batch_command(&self, command: BatchCommand) {
        let id = self.state().unit.batch_id.clone();
        let c = self.client.clone();
        self.run(async move { c.command(command, &id).await }, |_, _, ()| {});
    }

    fn give_signature(&self, user: String, pin: String) {
        let Some((kind, subject)) = self.state().signing.clone() else { return };
        let c = self.client.clone();
        let bus = self.options.bus.clone();
        let this = self.clone();
        self.rt.spawn(async move {
            let result: Result<String, ClientError> = async {
                match kind.as_str() {
                    // A second person signs on their own connection, so the first person's
                    // session stays as it is.
                    "verify" => {
                        let second = c.another(&bus).await?;
                        second.login(&user, &pin).await?;
                        second.sign(Signing::Verify, &subject, &pin).await?;
                        Ok(format!("{subject} verified by {user}"))
                    }
                    "sign" => {
                        c.sign(Signing::Sign, &subject, &pin).await?;
                        Ok(format!("{subject} signed"))
                    }
                    "review" => {
                        c.sign(Signing::Review, &subject, &pin).await?;
                        Ok(format!("{subject} reviewed"))
                    }
                    "release" => {
                        c.release(&subject, &pin).await?;
                        Ok(format!("{subject} released; the label is printed"))
                    }
                    _ => {
                        let rev = c.activate(&subject, &pin).await?;
                        Ok(format!("{subject} revision {rev} activated"))
                    }
                }
            }
            .await;
            let ui = this.ui.clone();
            let _ = ui.upgrade_in_event_loop(move |ui| {
                let hmi = ui.global::<Hmi<'_>>();
                match result {
                    Ok(text) => {
                        this.state().signing = None;
                        hmi.set_sign_kind("".into());
                        hmi.set_sign_error("".into());
                        if kind == "verify" {
                            hmi.set_verified(true);
                        }
                        if kind == "activate" {
                            this.load_recipes();
                        }
                        if kind == "review" || kind == "release" {
                            this.load_batches();
                        }
                        Self::said(&ui, text);
                    }
                    Err(e) => hmi.set_sign_error(e.to_string().into()),
                }
            });
        });
    }

    /// Shows the unit's state; called on the UI thread with the latest properties.
    fn show_unit(&self, ui: &AppWindow) {
        let mut s = self.state();
        let u = s.unit.clone();
        show_unit(ui, &u, &s.weight, &s.temperature);
        let hmi = ui.global::<Hmi<'_>>();
        let now = Instant::now();
        let started = match &s.phase_started {
            Some((p, at)) if *p == u.phase => *at,
            _ => {
                s.phase_started = Some((u.phase.clone(), now));
                now
            }
        };
        hmi.set_remaining_text(
            view::remaining_text(now.duration_since(started).as_secs_f64(), u.progress).into(),
        );
        if !u.batch_id.is_empty() && s.phases_of != u.batch_id && s.role.is_some() {
            s.phases_of = u.batch_id.clone();
            drop(s);
            self.load_phases(u.batch_id);
        }
    }

    fn load_phases(&self, batch: String) {
        let c = self.client.clone();
        self.run(
            async move {
                let b = view::Batch::parse(&c.batch(&batch).await?).unwrap_or_default();
                let details = c.details(&b.recipe).await?;
                Ok(serde_json::from_str(&details).map(|d| view::phases_of(&d)).unwrap_or_default())
            },
            |_, ui, phases: Vec<String>| {
                ui.global::<Hmi<'_>>()
                    .set_phases(model(phases.into_iter().map(SharedString::from).collect()));
            },
        );
    }
}

/// How QA's install from the stick ended.
#[derive(Debug)]
enum Install {
    NoneFound,
    /// Several updates on the stick, by folder.
    Choose(Vec<String>),
    Done(Result<Vec<String>, ClientError>),
}

/// "2026-11-20 14:03 UTC · in LAB/reports" for a lab report in the list.
fn lab_file_detail(f: &LabFile) -> String {
    let modified = f.modified_ms.and_then(|ms| u64::try_from(ms).ok());
    let date = view::file_date(modified.map(|ms| UNIX_EPOCH + Duration::from_millis(ms)));
    match f.name.rsplit_once('/') {
        Some((folder, _)) => format!("{date} · in {folder}"),
        None => date,
    }
}

/// Puts the unit's state, and its trends, on the screen.
pub fn show_unit(ui: &AppWindow, u: &Unit, weight: &Trend, temperature: &Trend) {
    let hmi = ui.global::<Hmi<'_>>();
    hmi.set_batch_id(u.batch_id.clone().into());
    hmi.set_state_text(u.state_text().into());
    hmi.set_batch_active(u.batch_active());
    hmi.set_held(matches!(u.state.as_str(), "Held" | "Holding"));
    hmi.set_phase_text(u.phase_text().into());
    hmi.set_phase_index(i32::try_from(u.position.0).unwrap_or(0));
    hmi.set_phase_count(i32::try_from(u.position.1).unwrap_or(0));
    #[allow(clippy::cast_possible_truncation)] // a bar's length
    hmi.set_progress(u.progress.clamp(0.0, 1.0) as f32);
    hmi.set_progress_text(u.progress_text().into());
    hmi.set_weight_text(u.weight_text().into());
    hmi.set_stability_text(u.stability_text().into());
    hmi.set_temperature_text(u.temperature_text().into());
    hmi.set_setpoint_text(u.setpoint_text().into());
    hmi.set_instruction(u.instruction.clone().into());
    hmi.set_notice(u.notice.clone().into());
    hmi.set_awaits_scan(u.awaits_scan());
    hmi.set_awaits_confirm(u.awaits_confirm());
    hmi.set_devices_text(u.devices_text().into());
    hmi.set_devices_ok(u.links_down.is_empty());
    hmi.set_alarms(model(u.alarms.iter().map(SharedString::from).collect()));
    let w = weight.chart(1.0, "g", 1);
    let t = temperature.chart(2.0, "°C", 1);
    hmi.set_weight_trend(model(w.points));
    hmi.set_weight_low(w.low.into());
    hmi.set_weight_high(w.high.into());
    hmi.set_temp_trend(model(t.points));
    hmi.set_temp_low(t.low.into());
    hmi.set_temp_high(t.high.into());
}

/// Shows who is logged in, and only what their role may do.
pub fn show_session(ui: &AppWindow, printed_name: &str, role: Role) {
    let hmi = ui.global::<Hmi<'_>>();
    hmi.set_login_error("".into());
    hmi.set_printed_name(printed_name.into());
    hmi.set_role_title(role.title().into());
    hmi.set_nav(nav(role));
    hmi.set_can_acknowledge(role.acknowledges_alarms());
    hmi.set_can_export(role.exports());
    hmi.set_can_activate(role.activates_recipes());
    hmi.set_can_install(role.installs_recipes());
    hmi.set_logged_in(true);
}

/// The genes a recipe asks phenotypes for, each with the choices its table names (from
/// `Recipes1.Details`), nothing chosen yet.
pub fn gene_entries(details: &serde_json::Value) -> Vec<GeneEntry> {
    view::genes_of(details)
        .into_iter()
        .map(|gene| GeneEntry {
            choices: model(
                view::phenotype_choices(details, &gene).into_iter().map(Into::into).collect(),
            ),
            gene: gene.into(),
            value: SharedString::new(),
            typing: false,
        })
        .collect()
}

/// Sets the phenotype shown for gene `i` (and whether it is typed) in place: a new list would
/// build the entry's fields again and take the focus from the one being typed into.
fn show_phenotype(ui: &AppWindow, i: usize, value: &str, typing: bool) {
    let entries = ui.global::<Hmi<'_>>().get_gene_entries();
    if let Some(mut e) = entries.row_data(i) {
        e.value = value.into();
        e.typing = typing;
        entries.set_row_data(i, e);
    }
}

/// A list for the window.
pub fn model<T: Clone + 'static>(v: Vec<T>) -> ModelRc<T> {
    ModelRc::new(VecModel::from(v))
}

fn nav(role: Role) -> ModelRc<NavItem> {
    model(
        role.screens()
            .iter()
            .map(|s| NavItem { id: s.id().into(), title: s.title().into() })
            .collect(),
    )
}

/// Types the on-screen keyboard's keys into the focused field as key events, the way a physical
/// keyboard or a scanner types: the `.slint` language cannot insert at the caret or delete.
/// `init` calls it; so do tests that drive the window without an appliance.
pub fn wire_keyboard(ui: &AppWindow) {
    let weak = ui.as_weak();
    ui.global::<Keyboard<'_>>().on_key(move |text| {
        let Some(ui) = weak.upgrade() else { return };
        let window = ui.window();
        // The event goes to the focused element only; with no field focused it goes nowhere.
        window.dispatch_event(slint::platform::WindowEvent::KeyPressed { text: text.clone() });
        window.dispatch_event(slint::platform::WindowEvent::KeyReleased { text });
    });
}

/// Wires `ui` to the appliance behind `client`: callbacks, the live unit, the screen lock.
/// Keep what it returns for as long as the window runs.
pub fn init(
    ui: &AppWindow,
    client: Client,
    rt: tokio::runtime::Handle,
    options: Options,
) -> Running {
    let state = State {
        role: None,
        unit: Unit::default(),
        weight: Trend::new(TREND_SAMPLES),
        temperature: Trend::new(TREND_SAMPLES),
        genes: Vec::new(),
        phenotypes: Vec::new(),
        recipe: String::new(),
        lab_files: Vec::new(),
        created: String::new(),
        phases_of: String::new(),
        phase_started: None,
        signing: None,
        last_touch: Instant::now(),
    };
    let ctl =
        Controller { ui: ui.as_weak(), client, rt, options, state: Arc::new(Mutex::new(state)) };
    let hmi = ui.global::<Hmi<'_>>();
    wire_keyboard(ui);

    let c = ctl.clone();
    hmi.on_touched(move || c.state().last_touch = Instant::now());

    let c = ctl.clone();
    hmi.on_login(move |user, pin| {
        if let Some(missing) = view::login_missing(&user, &pin) {
            if let Some(ui) = c.ui.upgrade() {
                ui.global::<Hmi<'_>>().set_login_error(missing.into());
            }
            return;
        }
        let client = c.client.clone();
        // A badge scanner may add a space or a line end; no user name has them.
        let user = user.trim().to_owned();
        c.run(async move { client.login(&user, pin.as_str()).await }, |c, ui, (name, role)| {
            let hmi = ui.global::<Hmi<'_>>();
            let Some(role) = Role::parse(&role) else {
                hmi.set_login_error(format!("This screen has nothing for the role {role}").into());
                return;
            };
            {
                let mut s = c.state();
                s.role = Some(role);
                s.last_touch = Instant::now();
                s.phases_of.clear();
            }
            show_session(ui, &name, role);
            c.navigate(ui, Screen::Home);
            c.show_unit(ui);
        });
    });

    let c = ctl.clone();
    hmi.on_logout(move || {
        let client = c.client.clone();
        c.run(async move { client.logout().await }, |c, ui, ()| c.locked(ui, ""));
    });

    let c = ctl.clone();
    hmi.on_navigate(move |id| {
        let (Some(ui), Some(screen)) = (c.ui.upgrade(), Screen::from_id(&id)) else { return };
        c.navigate(&ui, screen);
    });

    let c = ctl.clone();
    hmi.on_choose_recipe(move |id| {
        let client = c.client.clone();
        let id = id.to_string();
        c.run(
            async move { Ok((id.clone(), client.details(&id).await?)) },
            |c, ui, (id, details)| {
                let details: serde_json::Value = serde_json::from_str(&details).unwrap_or_default();
                let genes = view::genes_of(&details);
                let entries = gene_entries(&details);
                let name = details["name"].as_str().unwrap_or(&id).to_owned();
                let rev = details["revision"].as_u64().unwrap_or_default();
                {
                    let mut s = c.state();
                    s.recipe.clone_from(&id);
                    s.phenotypes = vec![String::new(); genes.len()];
                    s.genes.clone_from(&genes);
                }
                let hmi = ui.global::<Hmi<'_>>();
                hmi.set_gene_entries(model(entries));
                hmi.set_chosen_recipe(id.into());
                hmi.set_chosen_recipe_title(format!("{name} — revision {rev}").into());
                hmi.set_has_calculation(false);
                hmi.set_created_batch("".into());
                hmi.set_verified(false);
                hmi.set_lab_file("".into());
                hmi.set_lab_files_note("Looking at the stick…".into());
                hmi.set_screen(Screen::NewBatch.id().into());
                c.look_for_lab_files();
            },
        );
    });

    let c = ctl.clone();
    hmi.on_look_for_lab_files(move || c.look_for_lab_files());

    let c = ctl.clone();
    hmi.on_choose_lab_file(move |name| {
        let Some(ui) = c.ui.upgrade() else { return };
        let Some(file) = c.state().lab_files.iter().find(|f| name == f.name).cloned() else {
            return;
        };
        // The phenotypes now come from the file; typed ones would be dropped unseen, so they
        // are cleared with their fields.
        c.state().phenotypes.iter_mut().for_each(String::clear);
        (0..c.state().phenotypes.len()).for_each(|i| show_phenotype(&ui, i, "", false));
        let hmi = ui.global::<Hmi<'_>>();
        hmi.set_lab_file(file.name.clone().into());
        hmi.set_lab_file_detail(lab_file_detail(&file).into());
        hmi.set_picking_lab_file(false);
        hmi.set_has_calculation(false);
    });

    let c = ctl.clone();
    hmi.on_install_recipes(move |chosen| c.install_recipes(chosen.to_string()));

    let c = ctl.clone();
    hmi.on_phenotype_edited(move |i, text| {
        let mut s = c.state();
        if let Some(p) = usize::try_from(i).ok().and_then(|i| s.phenotypes.get_mut(i)) {
            *p = text.to_string();
        }
    });

    // What the screen shows is what is sent: the state and the entry change together.
    for typing in [false, true] {
        let c = ctl.clone();
        let choose = move |i: i32, term: SharedString| {
            let (Some(ui), Ok(i)) = (c.ui.upgrade(), usize::try_from(i)) else { return };
            if let Some(p) = c.state().phenotypes.get_mut(i) {
                *p = term.to_string();
            }
            show_phenotype(&ui, i, &term, typing);
        };
        if typing {
            hmi.on_phenotype_other(move |i| choose(i, SharedString::new()));
        } else {
            hmi.on_phenotype_chosen(choose);
        }
    }

    for create in [false, true] {
        let c = ctl.clone();
        let handler =
            move |id: SharedString, w: SharedString, a: SharedString, lab: SharedString| {
                let Some(ui) = c.ui.upgrade() else { return };
                let (mut patient, lab) = match c.patient(&id, &w, &a, &lab) {
                    Ok(p) => p,
                    Err(e) => {
                        let hmi = ui.global::<Hmi<'_>>();
                        hmi.set_message(e.into());
                        hmi.set_message_is_error(true);
                        return;
                    }
                };
                let recipe = c.state().recipe.clone();
                let client = c.client.clone();
                c.run(
                    async move {
                        if let Some(name) = lab {
                            patient.lab_file =
                                Some((name.clone(), client.read_lab_file(&name).await?));
                        }
                        if create {
                            client.create(&recipe, &patient).await
                        } else {
                            Ok((String::new(), client.preview(&recipe, &patient).await?))
                        }
                    },
                    |c, ui, (batch, calc)| {
                        let hmi = ui.global::<Hmi<'_>>();
                        match view::Calculation::parse(&calc) {
                            Ok(calc) => {
                                hmi.set_calc_outcome(calc.heading().into());
                                hmi.set_calc_text(calc.text.clone().into());
                                hmi.set_calc_before(calc.before_start().into());
                                hmi.set_has_calculation(true);
                                hmi.set_verified(calc.second_person.is_empty());
                            }
                            Err(e) => {
                                hmi.set_message(format!("unreadable calculation: {e}").into());
                                hmi.set_message_is_error(true);
                            }
                        }
                        if !batch.is_empty() {
                            c.state().created.clone_from(&batch);
                            Controller::said(ui, format!("Batch {batch} created"));
                            hmi.set_created_batch(batch.into());
                        } else {
                            hmi.set_message("".into());
                        }
                    },
                );
            };
        if create { hmi.on_create(handler) } else { hmi.on_preview(handler) }
    }

    let c = ctl.clone();
    hmi.on_start(move || {
        let id = c.state().created.clone();
        let client = c.client.clone();
        c.run(async move { client.command(BatchCommand::Start, &id).await }, |c, ui, ()| {
            let hmi = ui.global::<Hmi<'_>>();
            hmi.set_created_batch("".into());
            hmi.set_has_calculation(false);
            hmi.set_chosen_recipe("".into());
            c.navigate(ui, Screen::Run);
        });
    });

    let c = ctl.clone();
    hmi.on_scan(move |line| {
        let Some(ui) = c.ui.upgrade() else { return };
        let label = match view::parse_label(&line) {
            Ok(l) => l,
            Err(e) => {
                let hmi = ui.global::<Hmi<'_>>();
                hmi.set_message(e.to_string().into());
                hmi.set_message_is_error(true);
                return;
            }
        };
        let id = c.state().unit.batch_id.clone();
        let client = c.client.clone();
        c.run(
            async move {
                client.scan(&id, &label.material, &label.lot, &label.expiry).await?;
                Ok(label)
            },
            |_, ui, label| {
                Controller::said(ui, format!("{} lot {} accepted", label.material, label.lot))
            },
        );
    });

    let c = ctl.clone();
    hmi.on_confirm(move || c.batch_command(BatchCommand::Confirm));
    let c = ctl.clone();
    hmi.on_hold(move || c.batch_command(BatchCommand::Hold));
    let c = ctl.clone();
    hmi.on_resume(move || c.batch_command(BatchCommand::Resume));
    let c = ctl.clone();
    hmi.on_abort(move || c.batch_command(BatchCommand::Abort));

    let c = ctl.clone();
    hmi.on_acknowledge(move |reason| {
        let client = c.client.clone();
        c.run(async move { client.acknowledge_alarms(&reason).await }, |_, ui, n| {
            Controller::said(ui, format!("{n} alarm(s) acknowledged"));
        });
    });

    let c = ctl.clone();
    hmi.on_ask_signature(move |kind, subject| {
        let Some(ui) = c.ui.upgrade() else { return };
        let hmi = ui.global::<Hmi<'_>>();
        c.state().signing = Some((kind.to_string(), subject.to_string()));
        let title = match kind.as_str() {
            "verify" => "Second-person verification",
            "sign" => "Sign the batch record",
            "review" => "QA review",
            "release" => "Release the batch",
            _ => "Activate the recipe revision",
        };
        hmi.set_sign_title(title.into());
        hmi.set_sign_meaning(view::signature_meaning(&kind).into());
        hmi.set_sign_subject(format!("For: {subject}").into());
        hmi.set_sign_asks_user(kind == "verify");
        hmi.set_sign_error("".into());
        hmi.set_sign_kind(kind);
    });

    let c = ctl.clone();
    hmi.on_give_signature(move |user, pin| c.give_signature(user.to_string(), pin.to_string()));

    let c = ctl.clone();
    hmi.on_cancel_signature(move || {
        c.state().signing = None;
        if let Some(ui) = c.ui.upgrade() {
            ui.global::<Hmi<'_>>().set_sign_kind("".into());
        }
    });

    let export = {
        let c = ctl.clone();
        move |batches: Vec<String>, from: i64, to: i64| {
            let Some(ui) = c.ui.upgrade() else { return };
            let hmi = ui.global::<Hmi<'_>>();
            hmi.set_exporting(true);
            hmi.set_safe_to_remove(false);
            hmi.set_export_result("".into());
            hmi.set_export_fraction(0.0);
            let client = c.client.clone();
            let weak = c.ui.clone();
            c.run(
                async move {
                    client
                        .export(&batches, from, to, move |step, fraction| {
                            let step = step.to_owned();
                            let _ = weak.upgrade_in_event_loop(move |ui| {
                                let hmi = ui.global::<Hmi<'_>>();
                                hmi.set_export_step(step.into());
                                #[allow(clippy::cast_possible_truncation)] // a bar's length
                                hmi.set_export_fraction(fraction.clamp(0.0, 1.0) as f32);
                            });
                        })
                        .await
                },
                |_, ui, (folder, place, entries, safe)| {
                    let hmi = ui.global::<Hmi<'_>>();
                    hmi.set_exporting(false);
                    hmi.set_export_fraction(1.0);
                    hmi.set_export_result(
                        format!("{entries} entries exported to {folder} ({place})").into(),
                    );
                    hmi.set_safe_to_remove(safe);
                },
            );
        }
    };
    let e = export.clone();
    hmi.on_export_batch(move |id| e(vec![id.to_string()], 0, 0));
    let c = ctl.clone();
    hmi.on_export_range(move |from, to| {
        match (view::date_ms(&from, false), view::date_ms(&to, true)) {
            (Some(f), Some(t)) if f < t => export(Vec::new(), f, t),
            _ => {
                if let Some(ui) = c.ui.upgrade() {
                    let hmi = ui.global::<Hmi<'_>>();
                    hmi.set_message("Dates as YYYY-MM-DD, the first not after the last".into());
                    hmi.set_message_is_error(true);
                }
            }
        }
    });

    let c = ctl.clone();
    hmi.on_refresh(move || {
        if let Some(ui) = c.ui.upgrade()
            && let Some(s) = Screen::from_id(&ui.global::<Hmi<'_>>().get_screen())
        {
            c.navigate(&ui, s);
        }
    });

    let c = ctl.clone();
    hmi.on_add_user(move |user, name, role, pin, reason| {
        let client = c.client.clone();
        c.run(
            async move { client.add_user(&user, &name, &role, &pin, &reason).await },
            |c, ui, id| {
                Controller::said(ui, format!("user #{id} added"));
                c.load_users();
            },
        );
    });

    let c = ctl.clone();
    hmi.on_deactivate_user(move |id, reason| {
        let Ok(id) = id.parse::<u64>() else { return };
        let client = c.client.clone();
        c.run(async move { client.deactivate_user(id, &reason).await }, move |c, ui, ()| {
            Controller::said(ui, format!("user #{id} deactivated"));
            c.load_users();
        });
    });

    // The live unit: every change of the appliance's properties, for as long as it runs.
    let c = ctl.clone();
    ctl.rt.spawn(async move {
        let weak = c.ui.clone();
        let state = c.state.clone();
        let this = c.clone();
        let watched = c
            .client
            .watch_unit(move |changed| {
                {
                    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
                    s.unit.apply(&changed);
                    if changed.contains_key("WeightGrams") {
                        let w = s.unit.weight_g;
                        s.weight.push(w);
                    }
                    if changed.contains_key("TemperatureCelsius") {
                        let t = s.unit.temperature_c;
                        s.temperature.push(t);
                    }
                }
                let this = this.clone();
                let _ = weak.upgrade_in_event_loop(move |ui| this.show_unit(&ui));
            })
            .await;
        if let Err(e) = watched {
            let weak = c.ui.clone();
            let _ = weak.upgrade_in_event_loop(move |ui| {
                let hmi = ui.global::<Hmi<'_>>();
                hmi.set_devices_ok(false);
                hmi.set_devices_text(format!("No live data from the appliance: {e}").into());
            });
        }
    });

    // The screen lock: idle too long, the session ends and the login screen comes back.
    let c = ctl.clone();
    let timer = slint::Timer::default();
    timer.start(slint::TimerMode::Repeated, Duration::from_secs(1), move || {
        let idle = c.state().last_touch.elapsed();
        let logged_in = c.state().role.is_some();
        if logged_in
            && idle >= c.options.lock_after
            && let Some(ui) = c.ui.upgrade()
        {
            let client = c.client.clone();
            c.rt.spawn(async move { client.logout().await });
            c.locked(&ui, "The screen locked after inactivity. Log in again.");
        }
    });
    Running { controller: ctl, _lock: timer }
}

/// The wired window; dropping it stops the screen lock's timer.
#[allow(missing_debug_implementations)] // slint::Timer has no Debug
pub struct Running {
    pub controller: Controller,
    _lock: slint::Timer,
}
