//! What any client may ask of `applianced` — log in, install and activate recipes, create,
//! verify, run, sign and release batches, read and export records — and who may ask it.
//!
//! Transport-free: the D-Bus adapter (`crate::dbus`) maps one method to one call here and one
//! [`ServiceError`] to one named D-Bus error. Every call names its [`Caller`] (the connection
//! it came over), and every call but `login` first finds that caller's session and checks the
//! role × action matrix; a refusal is recorded before it is returned. Calls are synchronous
//! (SQLite, the TPM and Argon2 block): the adapter runs them on blocking threads.

mod batches;
mod recipes;
mod restore;
mod stick;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use galen_recipes::tuf::intake::{Intake, IntakeError};
use galen_record::signature::Meaning;
use galen_record::{Entry, EntryKind, UtcMillis};
use serde::Serialize;
use tokio::sync::watch;

use crate::engine::plan::Instruments;
use crate::export::{ExportError, MountedDir, write_bundle};
use crate::records::users::{Action, AuthError, Role, Session};
use crate::records::{At, Integrity, NewEntry, NewUser, RecordError, RecordStore};
use crate::supervisor::live::{Feed, Live, LiveTx};
use crate::supervisor::runtime::{Devices, WallClock};
use crate::usb::{Udisks, UsbError};

pub use batches::{BatchInfo, Calculation, PatientInput, Released};
pub use recipes::RecipeSummary;
pub use stick::OnStick;

/// Who is calling: one client connection (a D-Bus unique name, or a peer-to-peer socket).
/// A session belongs to the connection it was opened on and ends with it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Caller(pub String);

/// Why a call was refused or failed. Messages are written for the person at the screen.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("log in first")]
    NotLoggedIn,
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("no recipe {0} is installed")]
    NoSuchRecipe(String),
    #[error("recipe {id} revision {revision} is waiting for QA activation; it cannot be used yet")]
    RecipeNotActive { id: String, revision: u32 },
    #[error("no batch {0} is open on this appliance (released batches are in the record)")]
    NoSuchBatch(String),
    #[error("{0}")]
    InvalidInput(String),
    /// The recipe's rules refuse this patient; the explanation says why.
    #[error("the recipe refuses this patient: {reason}")]
    Refused { reason: String, explanation: String },
    #[error("batch {batch} is {state}: {why}")]
    WrongState { batch: String, state: String, why: String },
    #[error("batch {batch} cannot {action} yet: {why}")]
    NotReady { batch: String, action: &'static str, why: String },
    #[error("batch {0} is in progress (running or held); this unit makes one batch at a time")]
    Busy(String),
    #[error("records failed the start-up check; new batches are refused: {0}")]
    RecordsCompromised(String),
    #[error("recipe intake: {0}")]
    Recipes(#[from] IntakeError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Usb(#[from] UsbError),
    #[error(transparent)]
    Stick(#[from] crate::stick::StickError),
    #[error("the label cannot be made: {0}")]
    Label(#[from] crate::label::LabelError),
    #[error(transparent)]
    Records(RecordError),
}

impl From<RecordError> for ServiceError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Auth(a) => Self::Auth(a),
            RecordError::Compromised(why) => Self::RecordsCompromised(why),
            RecordError::NoSuchBatch(b) => Self::NoSuchBatch(b),
            e @ (RecordError::UserExists(_)
            | RecordError::NewUser(_)
            | RecordError::NoSuchUser(_)
            | RecordError::ReasonRequired(_)
            | RecordError::TooLarge { .. }) => Self::InvalidInput(e.to_string()),
            e => Self::Records(e),
        }
    }
}

/// Where the USB stick is: exports go onto it, lab reports and recipe updates come from it.
#[derive(Debug)]
pub enum StickAccess {
    /// The one USB stick, through udisks2 (the appliance).
    Usb(Udisks),
    /// A folder standing in for it (the demo and tests on a developer's machine).
    Directory(PathBuf),
}

/// How this appliance is set up.
#[derive(Debug)]
pub struct Config {
    /// The site and appliance as the label names them.
    pub site: String,
    /// What this unit's instruments can do, from the unit configuration.
    pub instruments: Instruments,
    /// Engine time per wall time: 1 on a real unit; a simulated unit's plant speed.
    pub speed: f64,
    pub stick: StickAccess,
}

/// A logged-in person, as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WhoAmI {
    pub username: String,
    pub full_name: String,
    pub role: String,
}

/// A user as an administrator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    pub id: u64,
    pub username: String,
    pub full_name: String,
    pub role: String,
    pub active: bool,
}

/// An export written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exported {
    /// The folder name on the stick (or under the export directory).
    pub folder: String,
    pub entries: usize,
    pub files: usize,
    /// Where it is: the stick's label, or the directory.
    pub location: String,
    /// The stick was powered off and may be pulled.
    pub safe_to_remove: bool,
}

/// The appliance's services.
pub struct Service {
    records: Arc<Mutex<RecordStore>>,
    intake: Intake,
    config: Config,
    clock: Arc<dyn WallClock>,
    sessions: Mutex<HashMap<Caller, Session>>,
    batches: Arc<Mutex<BTreeMap<String, batches::Slot>>>,
    devices: Devices,
    live: LiveTx,
    feed: Feed,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").finish_non_exhaustive()
    }
}

/// What a method needs: no session (log in), any session, or a role that may do an action.
#[derive(Debug, Clone, Copy)]
enum Needs {
    Session,
    Permit(Action),
}

impl Service {
    /// `live` and `feed` are the supervisor's (see [`crate::supervisor::live::distribute`]);
    /// `runtime` runs batches. Every batch of the record that is not released is rebuilt
    /// (see `restore`): start it after recovery, so that batches interrupted by a restart are
    /// already held.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        records: Arc<Mutex<RecordStore>>,
        intake: Intake,
        config: Config,
        clock: Arc<dyn WallClock>,
        devices: Devices,
        live: LiveTx,
        feed: Feed,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, ServiceError> {
        let service = Self {
            records,
            intake,
            config,
            clock,
            sessions: Mutex::new(HashMap::new()),
            batches: Arc::new(Mutex::new(BTreeMap::new())),
            devices,
            live,
            feed,
            runtime,
        };
        let n = service.restore()?;
        if n > 0 {
            tracing::info!(batches = n, "open batches rebuilt from the record");
        }
        service.runtime.spawn(record_estop_between_batches(
            service.live.clone(),
            service.records.clone(),
            service.clock.clone(),
        ));
        Ok(service)
    }

    /// The live view, for subscribers.
    pub fn live(&self) -> watch::Receiver<Live> {
        self.live.subscribe()
    }

    fn at(&self) -> At {
        At::utc(self.clock.now())
    }

    fn store(&self) -> Result<MutexGuard<'_, RecordStore>, ServiceError> {
        self.records.lock().map_err(|_| {
            ServiceError::Records(RecordError::Compromised(
                "the record store's lock was poisoned by a crash".into(),
            ))
        })
    }

    /// The caller's session, touched and checked against `needs`. A refusal is recorded.
    fn authorize(
        &self,
        caller: &Caller,
        method: &str,
        needs: Needs,
    ) -> Result<Session, ServiceError> {
        let at = self.at();
        let policy = self.store()?.policy();
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let result = match sessions.get_mut(caller) {
            None => Err(ServiceError::NotLoggedIn),
            Some(s) => match s.touch(at.utc, &policy) {
                Err(e) => {
                    sessions.remove(caller);
                    Err(e.into())
                }
                Ok(()) => match needs {
                    Needs::Session => Ok(s.clone()),
                    Needs::Permit(action) => {
                        s.require(action).map(|()| s.clone()).map_err(Into::into)
                    }
                },
            },
        };
        let user_id = sessions.get(caller).map(|s| s.user_id);
        drop(sessions);
        if let Err(e) = &result {
            // 11.10(d)/(g): every refused attempt leaves a trace, whoever made it.
            self.store()?.append(
                at,
                NewEntry {
                    user_id,
                    new_value: Some(format!("{method}: {e}")),
                    ..NewEntry::new(EntryKind::Access, "refused")
                },
            )?;
        }
        result
    }

    /// Writes a session back after the record store touched it (a signature re-authenticates).
    fn put_session(&self, caller: &Caller, session: Session) {
        if let Ok(mut s) = self.sessions.lock() {
            s.insert(caller.clone(), session);
        }
    }

    // ----- sessions -----

    /// Logs a person in on this connection (replacing any session it had).
    pub fn login(
        &self,
        caller: &Caller,
        username: &str,
        pin: &str,
    ) -> Result<WhoAmI, ServiceError> {
        let at = self.at();
        let session = self.store()?.login(username, pin, at)?;
        let who = who(&session);
        let old = self.sessions.lock().expect("sessions lock").insert(caller.clone(), session);
        if let Some(old) = old {
            self.store()?.logout(old, at)?;
        }
        Ok(who)
    }

    /// Ends the caller's session.
    pub fn logout(&self, caller: &Caller) -> Result<(), ServiceError> {
        let session = self.authorize(caller, "Logout", Needs::Session)?;
        self.sessions.lock().expect("sessions lock").remove(caller);
        self.store()?.logout(session, self.at())?;
        Ok(())
    }

    /// The connection went away: its session ends, and that is recorded.
    pub fn disconnected(&self, caller: &Caller) -> Result<(), ServiceError> {
        let session = self.sessions.lock().expect("sessions lock").remove(caller);
        if let Some(session) = session {
            self.store()?.logout(session, self.at())?;
        }
        Ok(())
    }

    pub fn who_am_i(&self, caller: &Caller) -> Result<WhoAmI, ServiceError> {
        Ok(who(&self.authorize(caller, "WhoAmI", Needs::Session)?))
    }

    // ----- users -----

    pub fn users(&self, caller: &Caller) -> Result<Vec<UserInfo>, ServiceError> {
        self.authorize(caller, "Users.List", Needs::Permit(Action::ManageUsers))?;
        Ok(self
            .store()?
            .users()?
            .into_iter()
            .map(|u| UserInfo {
                id: u.id,
                username: u.username,
                full_name: u.full_name,
                role: u.role.as_str().to_owned(),
                active: u.active,
            })
            .collect())
    }

    pub fn add_user(
        &self,
        caller: &Caller,
        user: (&str, &str, &str, &str),
        reason: &str,
    ) -> Result<u64, ServiceError> {
        let mut admin = self.authorize(caller, "Users.Add", Needs::Permit(Action::ManageUsers))?;
        let (username, full_name, role, pin) = user;
        let role = Role::parse(role).ok_or_else(|| {
            let roles: Vec<_> = Role::ALL.iter().map(|r| r.as_str()).collect();
            ServiceError::InvalidInput(format!("no role {role:?}; roles are {}", roles.join(", ")))
        })?;
        if username.trim().is_empty() || full_name.trim().is_empty() {
            return Err(ServiceError::InvalidInput(
                "a user needs a user name and a full name".into(),
            ));
        }
        let new = NewUser { username, full_name, role, pin };
        let id = self.store()?.add_user(&mut admin, &new, reason, self.at())?;
        self.put_session(caller, admin);
        Ok(id)
    }

    pub fn deactivate_user(
        &self,
        caller: &Caller,
        id: u64,
        reason: &str,
    ) -> Result<(), ServiceError> {
        let mut admin =
            self.authorize(caller, "Users.Deactivate", Needs::Permit(Action::ManageUsers))?;
        self.store()?.deactivate_user(&mut admin, id, reason, self.at())?;
        self.put_session(caller, admin);
        Ok(())
    }

    // ----- records -----

    /// Every entry of one batch (or recipe subject), in order.
    pub fn entries(&self, caller: &Caller, subject: &str) -> Result<Vec<Entry>, ServiceError> {
        self.authorize(caller, "Records.Entries", Needs::Permit(Action::ViewRecords))?;
        let entries = self.store()?.batch_entries(subject)?;
        if entries.is_empty() {
            return Err(ServiceError::NoSuchBatch(subject.to_owned()));
        }
        Ok(entries)
    }

    /// Re-verifies the whole chain now: (entries checked, integrity at start).
    pub fn verify_records(&self, caller: &Caller) -> Result<(u64, String), ServiceError> {
        self.authorize(caller, "Records.Verify", Needs::Permit(Action::ViewRecords))?;
        let store = self.store()?;
        let n = store.verify_chain()?;
        let integrity = match store.integrity() {
            Integrity::Sound => "sound".to_owned(),
            Integrity::Compromised(why) => format!("compromised: {why}"),
        };
        Ok((n, integrity))
    }

    /// Exports the given batches (all their entries) or, with none given, the entries between
    /// `from` and `to`, to the configured target. `progress` hears each step.
    pub fn export(
        &self,
        caller: &Caller,
        batches: &[String],
        range: Option<(UtcMillis, UtcMillis)>,
        progress: &dyn Fn(&str, f64),
    ) -> Result<Exported, ServiceError> {
        let mut session =
            self.authorize(caller, "Records.Export", Needs::Permit(Action::ExportRecords))?;
        progress("selecting entries", 0.0);
        let at = self.at();
        let (scope, files, entries) = {
            let mut store = self.store()?;
            let (scope, entries) = match (batches, range) {
                ([], Some((from, to))) => {
                    (format!("entries from {from} to {to}"), store.entries_between(from, to)?)
                }
                ([], None) => {
                    return Err(ServiceError::InvalidInput(
                        "name the batches or the time range to export".into(),
                    ));
                }
                (ids, _) => {
                    let mut all = Vec::new();
                    for id in ids {
                        let e = store.batch_entries(id)?;
                        if e.is_empty() {
                            return Err(ServiceError::NoSuchBatch(id.clone()));
                        }
                        all.extend(e);
                    }
                    all.sort_by_key(|e| e.seq);
                    (format!("batches {}", ids.join(", ")), all)
                }
            };
            let n = entries.len();
            progress("sealing (TPM checkpoint)", 0.2);
            let export = store.export(&mut session, &scope, entries, at)?;
            progress("signing the manifest (TPM)", 0.4);
            (scope, store.seal_bundle(&export)?, n)
        };
        self.put_session(caller, session);
        let stamp = at.utc.to_rfc3339().replace([':', '-'], "");
        let folder = format!("GALEN-EXPORT-{}", &stamp[..15]);
        let count = files.len();
        progress("writing", 0.6);
        let (location, safe) = match &self.config.stick {
            StickAccess::Directory(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| ExportError::Io {
                    step: format!("creating {}", dir.display()),
                    source,
                })?;
                write_bundle(&mut MountedDir::new(dir), &folder, &files)?;
                (dir.join(&folder).display().to_string(), false)
            }
            StickAccess::Usb(udisks) => {
                let written = self.runtime.block_on(async {
                    let stick = udisks.the_stick().await?;
                    udisks.write_export(&stick, &folder, files).await
                })?;
                (written.label, written.safe_to_remove)
            }
        };
        progress("done", 1.0);
        tracing::info!(%scope, %folder, "exported");
        Ok(Exported { folder, entries, files: count, location, safe_to_remove: safe })
    }

    fn require_sound_records(&self) -> Result<(), ServiceError> {
        match self.store()?.integrity() {
            Integrity::Sound => Ok(()),
            Integrity::Compromised(why) => Err(ServiceError::RecordsCompromised(why.clone())),
        }
    }

    /// Signs `subject` with `meaning` for the caller, re-asking the PIN.
    fn sign(
        &self,
        caller: &Caller,
        method: &str,
        pin: &str,
        meaning: Meaning,
        subject: &str,
    ) -> Result<Session, ServiceError> {
        let mut session = self.authorize(caller, method, Needs::Permit(Action::Sign(meaning)))?;
        self.store()?.sign(&mut session, pin, meaning, subject, self.at())?;
        self.put_session(caller, session.clone());
        Ok(session)
    }

    /// Whether `subject` carries a signature with `meaning`, and by whom.
    fn signed_by(&self, subject: &str, meaning: Meaning) -> Result<Vec<u64>, ServiceError> {
        let object = format!("signature.{}", meaning.as_words());
        Ok(self
            .store()?
            .batch_entries(subject)?
            .into_iter()
            .filter(|e| e.body.kind == EntryKind::Signature && e.body.object == object)
            .filter_map(|e| e.body.user_id)
            .collect())
    }
}

/// Records the emergency stop pressed and released while no batch runs (a running batch
/// records it itself, with its alarm): when the unit was stopped, and that it was cleared,
/// belong in its history even when no product was at risk. `distribute` queues the changes in
/// the live view; this takes them out and records each.
async fn record_estop_between_batches(
    live: LiveTx,
    records: Arc<Mutex<RecordStore>>,
    clock: Arc<dyn WallClock>,
) {
    let mut changes = live.subscribe();
    while changes.changed().await.is_ok() {
        if changes.borrow_and_update().estop_unrecorded.is_empty() {
            continue;
        }
        let mut queued = Vec::new();
        live.send_modify(|l| queued = std::mem::take(&mut l.estop_unrecorded));
        for pressed in queued {
            let words = if pressed {
                "emergency stop pressed (or its contact unreadable); no batch was running"
            } else {
                "emergency stop released; no batch was running"
            };
            let entry = NewEntry {
                new_value: Some(words.to_owned()),
                ..NewEntry::new(EntryKind::System, "unit.emergency_stop")
            };
            let at = At::utc(clock.now());
            let written = records
                .lock()
                .map_err(|_| "poisoned".to_owned())
                .and_then(|mut s| s.append(at, entry).map(drop).map_err(|e| e.to_string()));
            if let Err(e) = written {
                tracing::error!("recording the emergency stop: {e}");
            }
        }
    }
}

fn who(s: &Session) -> WhoAmI {
    WhoAmI {
        username: s.username.clone(),
        full_name: s.full_name.clone(),
        role: s.role.as_str().to_owned(),
    }
}
