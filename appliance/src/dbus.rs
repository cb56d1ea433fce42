//! The D-Bus adapter: `org.galen.Appliance1` on the system bus (a private bus in tests and the
//! demo, or a peer-to-peer socket).
//!
//! Thin by design: each method names its caller, runs one `crate::service` call on a blocking
//! thread (SQLite, the TPM and Argon2 block) and maps its error, exhaustively, to one named
//! D-Bus error under `org.galen.Error`. Live state is a `watch` channel turned into properties
//! and signals at most five times a second, so no number of subscribers can slow the batch.
//!
//! Complex values (a recipe, a calculation, record entries) travel as JSON strings with the
//! shapes of the `service` types; simple ones as D-Bus types.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use galen_record::UtcMillis;
use tokio::sync::watch;
use zbus::connection::Builder;
use zbus::message::Header;
use zbus::object_server::{InterfaceRef, SignalEmitter};
use zbus::{Connection, interface};

use crate::records::users::AuthError;
use crate::service::{Caller, PatientInput, Service, ServiceError};
use crate::supervisor::live::Live;

/// The well-known bus name.
pub const NAME: &str = "org.galen.Appliance1";
/// The one object.
pub const PATH: &str = "/org/galen/Appliance1";
/// How often live properties may change on the bus.
const LIVE_PERIOD: Duration = Duration::from_millis(200);

/// Every error a method can return, by name. Clients match on the name, people read the text.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.galen.Error")]
pub enum ApiError {
    #[zbus(error)]
    ZBus(zbus::Error),
    NotLoggedIn(String),
    WrongCredentials(String),
    LockedOut(String),
    Deactivated(String),
    SessionExpired(String),
    NotPermitted(String),
    PinTooShort(String),
    NoSuchRecipe(String),
    RecipeNotActive(String),
    NoSuchBatch(String),
    InvalidInput(String),
    /// The recipe's rules refuse the patient; the text carries the whole explanation.
    Refused(String),
    WrongState(String),
    NotReady(String),
    Busy(String),
    RecordsCompromised(String),
    Recipes(String),
    Export(String),
    Usb(String),
    Label(String),
    Records(String),
    Internal(String),
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let text = e.to_string();
        match e {
            ServiceError::NotLoggedIn => Self::NotLoggedIn(text),
            ServiceError::Auth(a) => match a {
                AuthError::WrongCredentials => Self::WrongCredentials(text),
                AuthError::LockedOut { .. } => Self::LockedOut(text),
                AuthError::Deactivated => Self::Deactivated(text),
                AuthError::SessionExpired => Self::SessionExpired(text),
                AuthError::NotPermitted { .. } => Self::NotPermitted(text),
                AuthError::PinTooShort(_) => Self::PinTooShort(text),
            },
            ServiceError::NoSuchRecipe(_) => Self::NoSuchRecipe(text),
            ServiceError::RecipeNotActive { .. } => Self::RecipeNotActive(text),
            ServiceError::NoSuchBatch(_) => Self::NoSuchBatch(text),
            ServiceError::InvalidInput(_) => Self::InvalidInput(text),
            ServiceError::Refused { explanation, .. } => {
                Self::Refused(format!("{text}\n\n{explanation}"))
            }
            ServiceError::WrongState { .. } => Self::WrongState(text),
            ServiceError::NotReady { .. } => Self::NotReady(text),
            ServiceError::Busy(_) => Self::Busy(text),
            ServiceError::RecordsCompromised(_) => Self::RecordsCompromised(text),
            ServiceError::Recipes(_) => Self::Recipes(text),
            ServiceError::Export(_) => Self::Export(text),
            ServiceError::Usb(_) | ServiceError::Stick(_) => Self::Usb(text),
            ServiceError::Label(_) => Self::Label(text),
            ServiceError::Records(_) => Self::Records(text),
        }
    }
}

/// What every interface needs: the service, and who is on the other end of a peer-to-peer
/// connection (a bus tells us the sender; a socket pair has no sender).
#[derive(Debug, Clone)]
struct Ctx {
    svc: Arc<Service>,
    peer: Option<String>,
}

impl Ctx {
    fn caller(&self, h: &Header<'_>) -> Caller {
        match (h.sender(), &self.peer) {
            (Some(s), _) => Caller(s.to_string()),
            (None, Some(p)) => Caller(p.clone()),
            (None, None) => Caller(String::new()),
        }
    }

    /// Runs one service call on a blocking thread.
    async fn call<T: Send + 'static>(
        &self,
        h: &Header<'_>,
        f: impl FnOnce(&Service, &Caller) -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let (svc, caller) = (self.svc.clone(), self.caller(h));
        tokio::task::spawn_blocking(move || f(&svc, &caller))
            .await
            .map_err(|e| ApiError::Internal(format!("the call stopped: {e}")))?
            .map_err(ApiError::from)
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, ServiceError> {
    serde_json::to_string_pretty(v)
        .map_err(|e| ServiceError::InvalidInput(format!("cannot encode the answer: {e}")))
}

/// Log in and out. A session belongs to the connection that opened it.
#[derive(Debug)]
pub struct SessionApi(Ctx);

#[interface(name = "org.galen.Session1")]
impl SessionApi {
    /// Logs in; returns the printed name and the role.
    async fn login(
        &self,
        #[zbus(header)] h: Header<'_>,
        user: String,
        pin: String,
    ) -> Result<(String, String), ApiError> {
        self.0.call(&h, move |s, c| s.login(c, &user, &pin).map(|w| (w.full_name, w.role))).await
    }

    async fn logout(&self, #[zbus(header)] h: Header<'_>) -> Result<(), ApiError> {
        self.0.call(&h, |s, c| s.logout(c)).await
    }

    /// (user name, printed name, role).
    async fn who_am_i(
        &self,
        #[zbus(header)] h: Header<'_>,
    ) -> Result<(String, String, String), ApiError> {
        self.0.call(&h, |s, c| s.who_am_i(c).map(|w| (w.username, w.full_name, w.role))).await
    }
}

/// Recipes: installed through TUF, activated by QA.
#[derive(Debug)]
pub struct RecipesApi(Ctx);

#[interface(name = "org.galen.Recipes1")]
impl RecipesApi {
    /// (id, revision, name, active) for every installed recipe.
    async fn list(
        &self,
        #[zbus(header)] h: Header<'_>,
    ) -> Result<Vec<(String, u32, String, bool)>, ApiError> {
        self.0
            .call(&h, |s, c| {
                Ok(s.recipes(c)?
                    .into_iter()
                    .map(|r| (r.id, r.revision, r.name, r.active))
                    .collect())
            })
            .await
    }

    /// The whole recipe, as JSON.
    async fn details(&self, #[zbus(header)] h: Header<'_>, id: String) -> Result<String, ApiError> {
        self.0.call(&h, move |s, c| json(&s.recipe(c, &id)?)).await
    }

    /// Verifies and installs a TUF repository from a folder; one line per recipe.
    async fn install(
        &self,
        #[zbus(header)] h: Header<'_>,
        directory: String,
    ) -> Result<Vec<String>, ApiError> {
        self.0.call(&h, move |s, c| s.install_recipes(c, std::path::Path::new(&directory))).await
    }

    /// QA activates the installed revision (e-signature); returns the revision.
    async fn activate(
        &self,
        #[zbus(header)] h: Header<'_>,
        id: String,
        pin: String,
    ) -> Result<u32, ApiError> {
        self.0.call(&h, move |s, c| s.activate_recipe(c, &id, &pin)).await
    }
}

fn patient(
    fields: &HashMap<String, String>,
    lab_name: &str,
    lab: Vec<u8>,
) -> Result<PatientInput, ServiceError> {
    let mut input = PatientInput::from_map(fields)?;
    if !lab.is_empty() || !lab_name.is_empty() {
        input.lab_file = Some((lab_name.to_owned(), lab));
    }
    Ok(input)
}

/// Batches, from a patient's data to a released product.
#[derive(Debug)]
pub struct BatchesApi(Ctx);

#[interface(name = "org.galen.Batches1")]
impl BatchesApi {
    /// The calculation for a patient (JSON), creating nothing. `patient_fields` holds `patient_id`,
    /// `weight_kg`, `age_years` and `phenotype.<GENE>`; a lab file may come as name + bytes.
    async fn preview(
        &self,
        #[zbus(header)] h: Header<'_>,
        recipe: String,
        patient_fields: HashMap<String, String>,
        lab_file_name: String,
        lab_file: Vec<u8>,
    ) -> Result<String, ApiError> {
        self.0
            .call(&h, move |s, c| {
                json(&s.preview(
                    c,
                    &recipe,
                    &patient(&patient_fields, &lab_file_name, lab_file)?,
                )?)
            })
            .await
    }

    /// Creates a batch; returns its id and the calculation (JSON), both recorded.
    async fn create(
        &self,
        #[zbus(header)] h: Header<'_>,
        recipe: String,
        patient_fields: HashMap<String, String>,
        lab_file_name: String,
        lab_file: Vec<u8>,
    ) -> Result<(String, String), ApiError> {
        self.0
            .call(&h, move |s, c| {
                let input = patient(&patient_fields, &lab_file_name, lab_file)?;
                let (id, calc) = s.create_batch(c, &recipe, &input)?;
                Ok((id, json(&calc)?))
            })
            .await
    }

    /// (id, recipe, patient ID, state) of every batch since start.
    async fn list(
        &self,
        #[zbus(header)] h: Header<'_>,
    ) -> Result<Vec<(String, String, String, String)>, ApiError> {
        self.0
            .call(&h, |s, c| {
                Ok(s.batches(c)?
                    .into_iter()
                    .map(|b| (b.id, b.recipe, b.patient_id, b.state))
                    .collect())
            })
            .await
    }

    /// One batch (JSON): state, calculation, signatures.
    async fn get(&self, #[zbus(header)] h: Header<'_>, id: String) -> Result<String, ApiError> {
        self.0.call(&h, move |s, c| json(&s.batch(c, &id)?)).await
    }

    /// A second person verifies the patient's data (e-signature).
    async fn verify(
        &self,
        #[zbus(header)] h: Header<'_>,
        id: String,
        pin: String,
    ) -> Result<(), ApiError> {
        self.0.call(&h, move |s, c| s.verify(c, &id, &pin)).await
    }

    /// QA review (e-signature): approval of a dose that needs it, or review by exception.
    async fn review(
        &self,
        #[zbus(header)] h: Header<'_>,
        id: String,
        pin: String,
    ) -> Result<(), ApiError> {
        self.0.call(&h, move |s, c| s.review(c, &id, &pin)).await
    }

    async fn start(&self, #[zbus(header)] h: Header<'_>, id: String) -> Result<(), ApiError> {
        self.0.call(&h, move |s, c| s.start(c, &id)).await
    }

    /// A material label, scanned or typed: material id, lot, expiry (YYYY-MM-DD).
    async fn scan(
        &self,
        #[zbus(header)] h: Header<'_>,
        id: String,
        material: String,
        lot: String,
        expiry: String,
    ) -> Result<(), ApiError> {
        self.0.call(&h, move |s, c| s.scan(c, &id, &material, &lot, &expiry)).await
    }

    /// Confirms the current manual step (a hand-weighed addition, cleaning).
    async fn confirm(&self, #[zbus(header)] h: Header<'_>, id: String) -> Result<(), ApiError> {
        self.0.call(&h, move |s, c| s.confirm(c, &id)).await
    }

    async fn hold(&self, #[zbus(header)] h: Header<'_>, id: String) -> Result<(), ApiError> {
        self.0.call(&h, move |s, c| s.hold(c, &id)).await
    }

    async fn resume(&self, #[zbus(header)] h: Header<'_>, id: String) -> Result<(), ApiError> {
        self.0.call(&h, move |s, c| s.resume(c, &id)).await
    }

    async fn stop(&self, #[zbus(header)] h: Header<'_>, id: String) -> Result<(), ApiError> {
        self.0.call(&h, move |s, c| s.stop(c, &id)).await
    }

    async fn abort(&self, #[zbus(header)] h: Header<'_>, id: String) -> Result<(), ApiError> {
        self.0.call(&h, move |s, c| s.abort(c, &id)).await
    }

    /// The pharmacist who made the batch signs it (e-signature).
    async fn sign(
        &self,
        #[zbus(header)] h: Header<'_>,
        id: String,
        pin: String,
    ) -> Result<(), ApiError> {
        self.0.call(&h, move |s, c| s.sign_batch(c, &id, &pin)).await
    }

    /// QA releases a complete, signed batch (e-signature); returns the label's recorded
    /// content (JSON), the label as PDF, and as ZPL II for a thermal printer.
    async fn release(
        &self,
        #[zbus(header)] h: Header<'_>,
        id: String,
        pin: String,
    ) -> Result<(String, Vec<u8>, String), ApiError> {
        self.0
            .call(&h, move |s, c| {
                let r = s.release(c, &id, &pin)?;
                Ok((json(&r.label)?, r.pdf, r.zpl))
            })
            .await
    }
}

/// The record: read, re-verify, export.
#[derive(Debug)]
pub struct RecordsApi(Ctx);

#[interface(name = "org.galen.Records1")]
impl RecordsApi {
    /// Every entry of a batch (or `recipe:<id>@<revision>`), as JSON.
    async fn entries(
        &self,
        #[zbus(header)] h: Header<'_>,
        subject: String,
    ) -> Result<String, ApiError> {
        self.0.call(&h, move |s, c| json(&s.entries(c, &subject)?)).await
    }

    /// Re-verifies the chain; returns (entries checked, integrity at start).
    async fn verify(&self, #[zbus(header)] h: Header<'_>) -> Result<(u64, String), ApiError> {
        self.0.call(&h, |s, c| s.verify_records(c)).await
    }

    /// Exports the batches named, or with none the entries from `from_ms` to `to_ms` (Unix
    /// milliseconds, UTC). Progress comes as `ExportProgress` signals. Returns
    /// (folder, where, entries, safe to remove).
    async fn export(
        &self,
        #[zbus(header)] h: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        batches: Vec<String>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<(String, String, u64, bool), ApiError> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, f64)>();
        let emitter = emitter.to_owned();
        let forward = tokio::spawn(async move {
            while let Some((step, fraction)) = rx.recv().await {
                let _ = Self::export_progress(&emitter, &step, fraction).await;
            }
        });
        let result = self
            .0
            .call(&h, move |s, c| {
                let range = (from_ms < to_ms).then_some((UtcMillis(from_ms), UtcMillis(to_ms)));
                let progress = |step: &str, f: f64| {
                    let _ = tx.send((step.to_owned(), f));
                };
                let e = s.export(c, &batches, range, &progress)?;
                Ok((e.folder, e.location, e.entries as u64, e.safe_to_remove))
            })
            .await;
        let _ = forward.await;
        result
    }

    #[zbus(signal)]
    async fn export_progress(
        emitter: &SignalEmitter<'_>,
        step: &str,
        fraction: f64,
    ) -> zbus::Result<()>;
}

/// The USB stick, to take things in from it (exports go through `Records1.Export`). The stick
/// is mounted read-only for each call and unmounted before the call returns.
#[derive(Debug)]
pub struct StickApi(Ctx);

#[interface(name = "org.galen.Stick1")]
impl StickApi {
    /// (label, lab reports as (name, modified Unix ms or -1, bytes) newest first, recipe
    /// updates as folder names where `""` is the stick's top folder).
    async fn contents(
        &self,
        #[zbus(header)] h: Header<'_>,
    ) -> Result<(String, Vec<(String, i64, u64)>, Vec<String>), ApiError> {
        self.0
            .call(&h, |s, c| {
                let on = s.stick_contents(c)?;
                let labs = on
                    .contents
                    .lab_files
                    .into_iter()
                    .map(|f| (f.name, f.modified_ms.unwrap_or(-1), f.size))
                    .collect();
                Ok((on.label, labs, on.contents.recipe_updates))
            })
            .await
    }

    /// The bytes of the lab report listed as `name`, to pass to `Batches1.Preview`/`Create`.
    async fn read_lab_file(
        &self,
        #[zbus(header)] h: Header<'_>,
        name: String,
    ) -> Result<Vec<u8>, ApiError> {
        self.0.call(&h, move |s, c| s.read_lab_file(c, &name)).await
    }

    /// Verifies and installs the recipe update listed as `folder`; one line per recipe.
    async fn install_recipes(
        &self,
        #[zbus(header)] h: Header<'_>,
        folder: String,
    ) -> Result<Vec<String>, ApiError> {
        self.0.call(&h, move |s, c| s.install_recipes_from_stick(c, &folder)).await
    }
}

/// People (administrators only).
#[derive(Debug)]
pub struct UsersApi(Ctx);

#[interface(name = "org.galen.Users1")]
impl UsersApi {
    /// (id, user name, printed name, role, active).
    async fn list(
        &self,
        #[zbus(header)] h: Header<'_>,
    ) -> Result<Vec<(u64, String, String, String, bool)>, ApiError> {
        self.0
            .call(&h, |s, c| {
                Ok(s.users(c)?
                    .into_iter()
                    .map(|u| (u.id, u.username, u.full_name, u.role, u.active))
                    .collect())
            })
            .await
    }

    /// Adds a user; returns the new id (ids are never reused).
    #[allow(clippy::too_many_arguments)]
    async fn add(
        &self,
        #[zbus(header)] h: Header<'_>,
        user: String,
        full_name: String,
        role: String,
        pin: String,
        reason: String,
    ) -> Result<u64, ApiError> {
        self.0.call(&h, move |s, c| s.add_user(c, (&user, &full_name, &role, &pin), &reason)).await
    }

    async fn deactivate(
        &self,
        #[zbus(header)] h: Header<'_>,
        id: u64,
        reason: String,
    ) -> Result<(), ApiError> {
        self.0.call(&h, move |s, c| s.deactivate_user(c, id, &reason)).await
    }
}

/// The unit right now. Unknown numbers are NaN.
#[derive(Debug)]
pub struct UnitApi {
    ctx: Ctx,
    live: watch::Receiver<Live>,
}

fn or_nan(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

#[interface(name = "org.galen.Unit1")]
impl UnitApi {
    /// The running (or last) batch, or "".
    #[zbus(property)]
    fn batch_id(&self) -> String {
        self.live.borrow().batch_id.clone().unwrap_or_default()
    }

    /// Its ISA-88 state (Idle, Running, Holding, Held, …), or "".
    #[zbus(property)]
    fn state(&self) -> String {
        self.live.borrow().state.clone().unwrap_or_default()
    }

    #[zbus(property)]
    fn phase(&self) -> String {
        self.live.borrow().phase.clone().unwrap_or_default()
    }

    /// The phase in words with its target, e.g. "Pump 51.45 g of vehicle (peristaltic pump)".
    #[zbus(property)]
    fn phase_title(&self) -> String {
        self.live.borrow().phase_title.clone().unwrap_or_default()
    }

    /// (index of the current phase, number of phases).
    #[zbus(property)]
    fn phase_position(&self) -> (u32, u32) {
        let l = self.live.borrow();
        (
            u32::try_from(l.phase_index).unwrap_or(u32::MAX),
            u32::try_from(l.phase_count).unwrap_or(u32::MAX),
        )
    }

    /// How far the phase has got, 0 to 1.
    #[zbus(property)]
    fn progress(&self) -> f64 {
        self.live.borrow().progress
    }

    #[zbus(property)]
    fn weight_grams(&self) -> f64 {
        or_nan(self.live.borrow().weight_g)
    }

    #[zbus(property)]
    fn weight_stable(&self) -> bool {
        self.live.borrow().stable
    }

    #[zbus(property)]
    fn temperature_celsius(&self) -> f64 {
        or_nan(self.live.borrow().temperature_c)
    }

    #[zbus(property)]
    fn setpoint_celsius(&self) -> f64 {
        or_nan(self.live.borrow().setpoint_c)
    }

    /// What the operator must do now for the batch to go on, in words for the screen (empty:
    /// the unit is working on its own).
    #[zbus(property)]
    fn instruction(&self) -> String {
        self.live.borrow().instruction.clone()
    }

    /// What input the batch waits for: `scan` (a material label: Batches1.Scan), `confirm`
    /// (Batches1.Confirm), or empty.
    #[zbus(property)]
    fn awaiting(&self) -> String {
        self.live.borrow().awaiting.clone()
    }

    /// Why the operator's last command at this step was refused (empty: it was not).
    #[zbus(property)]
    fn notice(&self) -> String {
        self.live.borrow().notice.clone()
    }

    /// Alarms not yet acknowledged, oldest first.
    #[zbus(property)]
    fn alarms(&self) -> Vec<String> {
        self.live.borrow().alarms.clone()
    }

    /// Devices whose link is down.
    #[zbus(property)]
    fn links_down(&self) -> Vec<String> {
        self.live.borrow().links_down.iter().cloned().collect()
    }

    /// Acknowledges the current alarms, with a reason; returns how many.
    async fn acknowledge_alarms(
        &self,
        #[zbus(header)] h: Header<'_>,
        reason: String,
    ) -> Result<u32, ApiError> {
        self.ctx
            .call(&h, move |s, c| {
                s.acknowledge_alarms(c, &reason).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            })
            .await
    }

    /// A new alarm, as it is raised.
    #[zbus(signal)]
    async fn alarm(emitter: &SignalEmitter<'_>, text: &str) -> zbus::Result<()>;
}

/// A connection builder for `bus`: `system`, `session`, or a D-Bus address (a private bus).
pub fn builder(bus: &str) -> zbus::Result<Builder<'static>> {
    match bus {
        "system" => Builder::system(),
        "session" => Builder::session(),
        address => Builder::address(address),
    }
}

/// Connects to `bus` as a client (see [`builder`]).
pub async fn connect(bus: &str) -> zbus::Result<Connection> {
    builder(bus)?.build().await
}

/// Adds the API's interfaces at [`PATH`] to a connection that is not yet built. zbus then has
/// its object server listening before the first message is read, so a call that arrives the
/// instant the connection exists is answered; interfaces added after `build` race with it and
/// such a call is silently dropped (it hung the socket-pair test in CI).
fn serving(
    b: Builder<'static>,
    svc: &Arc<Service>,
    peer: Option<String>,
) -> zbus::Result<Builder<'static>> {
    let ctx = Ctx { svc: svc.clone(), peer };
    b.serve_at(PATH, SessionApi(ctx.clone()))?
        .serve_at(PATH, RecipesApi(ctx.clone()))?
        .serve_at(PATH, BatchesApi(ctx.clone()))?
        .serve_at(PATH, RecordsApi(ctx.clone()))?
        .serve_at(PATH, UsersApi(ctx.clone()))?
        .serve_at(PATH, StickApi(ctx.clone()))?
        .serve_at(PATH, UnitApi { ctx, live: svc.live() })
}

/// Serves the API on `bus` (see [`builder`]), claims `name` ([`NAME`] on the appliance; tests
/// sharing a bus use their own), sends live signals, and ends each session whose connection
/// leaves the bus. The name is claimed last, when everything is ready to answer.
pub async fn serve_bus(bus: &str, svc: Arc<Service>, name: &str) -> zbus::Result<Connection> {
    let conn = serving(builder(bus)?, &svc, None)?.build().await?;
    let dbus = zbus::fdo::DBusProxy::new(&conn).await?;
    let mut gone = dbus.receive_name_owner_changed().await?;
    let watcher = svc.clone();
    tokio::spawn(async move {
        while let Some(signal) = gone.next().await {
            let Ok(args) = signal.args() else { continue };
            if args.name().starts_with(':') && args.new_owner().is_none() {
                let caller = Caller(args.name().to_string());
                let svc = watcher.clone();
                let _ = tokio::task::spawn_blocking(move || svc.disconnected(&caller)).await;
            }
        }
    });
    let unit = conn.object_server().interface::<_, UnitApi>(PATH).await?;
    tokio::spawn(publish_live(unit, svc.live()));
    conn.request_name(name.to_owned()).await?;
    Ok(conn)
}

/// Serves the API to one peer over `stream` (no bus daemon); `peer` names the caller, since a
/// peer-to-peer message has no sender.
///
/// No live signals here: on a bus the daemon routes them to the clients that asked (match
/// rules), but a peer has no way to ask, and a zbus client that does not drain unsolicited
/// signals stops reading replies once its queue is full. A peer reads the `Unit1` properties
/// when it wants them.
pub async fn serve_peer(
    stream: tokio::net::UnixStream,
    svc: Arc<Service>,
    peer: String,
) -> zbus::Result<Connection> {
    let b = Builder::unix_stream(stream).server(zbus::Guid::generate())?.p2p();
    serving(b, &svc, Some(peer))?.build().await
}

/// Turns live changes into `PropertiesChanged` and `Alarm` signals, at most every
/// [`LIVE_PERIOD`].
async fn publish_live(unit: InterfaceRef<UnitApi>, mut live: watch::Receiver<Live>) {
    let mut last = Live::default();
    while live.changed().await.is_ok() {
        let now = live.borrow_and_update().clone();
        let e = unit.signal_emitter();
        let u = unit.get().await;
        let mut r = Ok(());
        if now.batch_id != last.batch_id {
            r = r.and(u.batch_id_changed(e).await);
        }
        if now.state != last.state {
            r = r.and(u.state_changed(e).await);
        }
        if now.phase != last.phase {
            r = r.and(u.phase_changed(e).await);
        }
        if now.phase_title != last.phase_title {
            r = r.and(u.phase_title_changed(e).await);
        }
        if (now.phase_index, now.phase_count) != (last.phase_index, last.phase_count) {
            r = r.and(u.phase_position_changed(e).await);
        }
        if now.progress.to_bits() != last.progress.to_bits() {
            r = r.and(u.progress_changed(e).await);
        }
        if now.weight_g.map(f64::to_bits) != last.weight_g.map(f64::to_bits) {
            r = r.and(u.weight_grams_changed(e).await);
        }
        if now.stable != last.stable {
            r = r.and(u.weight_stable_changed(e).await);
        }
        if now.temperature_c.map(f64::to_bits) != last.temperature_c.map(f64::to_bits) {
            r = r.and(u.temperature_celsius_changed(e).await);
        }
        if now.setpoint_c.map(f64::to_bits) != last.setpoint_c.map(f64::to_bits) {
            r = r.and(u.setpoint_celsius_changed(e).await);
        }
        if now.instruction != last.instruction {
            r = r.and(u.instruction_changed(e).await);
        }
        if now.awaiting != last.awaiting {
            r = r.and(u.awaiting_changed(e).await);
        }
        if now.notice != last.notice {
            r = r.and(u.notice_changed(e).await);
        }
        if now.alarms != last.alarms {
            for new in now.alarms.iter().filter(|a| !last.alarms.contains(a)) {
                r = r.and(UnitApi::alarm(e, new).await);
            }
            r = r.and(u.alarms_changed(e).await);
        }
        if now.links_down != last.links_down {
            r = r.and(u.links_down_changed(e).await);
        }
        drop(u);
        if let Err(err) = r {
            // The connection is gone (a peer hung up): nobody is left to tell.
            tracing::debug!("live signals stop: {err}");
            return;
        }
        last = now;
        tokio::time::sleep(LIVE_PERIOD).await;
    }
}
