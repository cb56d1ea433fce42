//! The HMI's D-Bus client of `applianced`: the only module of `galen-hmi` that knows zbus.
//!
//! Plain method calls rather than generated proxies: the interface is small, its published
//! form is the introspection snapshot in `appliance`, and a plain call works the same on the
//! system bus, a session bus and the private bus tests run on. Complex values arrive as JSON
//! strings and are handed on as text; `view` turns them into rows.

use std::collections::HashMap;

use futures_util::StreamExt as _;
use zbus::Connection;
use zbus::zvariant::{DynamicType, OwnedValue};

use crate::view::Value;

/// The appliance's well-known bus name.
pub const BUS_NAME: &str = "org.galen.Appliance1";
/// The one object.
pub const PATH: &str = "/org/galen/Appliance1";
const UNIT: &str = "org.galen.Unit1";

/// Which bus the appliance is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bus {
    System,
    Session,
    /// A D-Bus address, such as the private bus of tests.
    Address(String),
}

impl Bus {
    /// `system`, `session`, or anything else as an address.
    pub fn parse(s: &str) -> Self {
        match s {
            "system" => Self::System,
            "session" => Self::Session,
            other => Self::Address(other.to_owned()),
        }
    }
}

/// What the appliance refused, by its `org.galen.Error.*` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotLoggedIn,
    WrongCredentials,
    LockedOut,
    Deactivated,
    SessionExpired,
    NotPermitted,
    PinTooShort,
    NoSuchRecipe,
    RecipeNotActive,
    NoSuchBatch,
    InvalidInput,
    Refused,
    WrongState,
    NotReady,
    Busy,
    RecordsCompromised,
    Recipes,
    Export,
    Usb,
    Label,
    Records,
    Internal,
    /// A name this HMI does not know: a newer appliance. Shown with its text, like the others.
    Unknown,
}

impl Refusal {
    fn from_name(name: &str) -> Self {
        match name.strip_prefix("org.galen.Error.").unwrap_or(name) {
            "NotLoggedIn" => Self::NotLoggedIn,
            "WrongCredentials" => Self::WrongCredentials,
            "LockedOut" => Self::LockedOut,
            "Deactivated" => Self::Deactivated,
            "SessionExpired" => Self::SessionExpired,
            "NotPermitted" => Self::NotPermitted,
            "PinTooShort" => Self::PinTooShort,
            "NoSuchRecipe" => Self::NoSuchRecipe,
            "RecipeNotActive" => Self::RecipeNotActive,
            "NoSuchBatch" => Self::NoSuchBatch,
            "InvalidInput" => Self::InvalidInput,
            "Refused" => Self::Refused,
            "WrongState" => Self::WrongState,
            "NotReady" => Self::NotReady,
            "Busy" => Self::Busy,
            "RecordsCompromised" => Self::RecordsCompromised,
            "Recipes" => Self::Recipes,
            "Export" => Self::Export,
            "Usb" => Self::Usb,
            "Label" => Self::Label,
            "Records" => Self::Records,
            "Internal" => Self::Internal,
            _ => Self::Unknown,
        }
    }

    /// Whether the person must log in again before anything else works.
    pub fn ends_session(self) -> bool {
        match self {
            Self::NotLoggedIn | Self::SessionExpired | Self::Deactivated => true,
            Self::WrongCredentials
            | Self::LockedOut
            | Self::NotPermitted
            | Self::PinTooShort
            | Self::NoSuchRecipe
            | Self::RecipeNotActive
            | Self::NoSuchBatch
            | Self::InvalidInput
            | Self::Refused
            | Self::WrongState
            | Self::NotReady
            | Self::Busy
            | Self::RecordsCompromised
            | Self::Recipes
            | Self::Export
            | Self::Usb
            | Self::Label
            | Self::Records
            | Self::Internal
            | Self::Unknown => false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The appliance answered and said no; `text` is written for the person at the screen.
    #[error("{text}")]
    Refused { kind: Refusal, text: String },
    /// The bus, not the appliance: it is not running, or the connection broke.
    #[error("cannot reach the appliance: {0}")]
    Bus(zbus::Error),
}

impl From<zbus::Error> for ClientError {
    fn from(e: zbus::Error) -> Self {
        match e {
            zbus::Error::MethodError(name, text, _) => Self::Refused {
                kind: Refusal::from_name(name.as_str()),
                text: text.unwrap_or_else(|| name.to_string()),
            },
            other => Self::Bus(other),
        }
    }
}

impl From<zbus::zvariant::Error> for ClientError {
    fn from(e: zbus::zvariant::Error) -> Self {
        Self::Bus(e.into())
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// One lab report on the stick, as the appliance lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabFile {
    /// Where it is on the stick (`/` between folders): the name to ask for it by.
    pub name: String,
    /// Last modified, Unix milliseconds, when the stick says.
    pub modified_ms: Option<i64>,
    pub size: u64,
}

/// What the USB stick offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnStick {
    pub label: String,
    /// Newest first.
    pub lab_files: Vec<LabFile>,
    /// Folders holding a recipe update; `""` is the stick's top folder.
    pub recipe_updates: Vec<String>,
}

/// Patient data as the appliance takes it: `patient_id`, `weight_kg`, `age_years`,
/// `phenotype.<GENE>`; a lab report file may come instead of typed phenotypes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatientEntry {
    pub fields: HashMap<String, String>,
    pub lab_file: Option<(String, Vec<u8>)>,
}

/// One connection, so one session: the appliance binds a login to the connection.
#[derive(Debug, Clone)]
pub struct Client {
    conn: Connection,
    dest: String,
}

/// The recipe list's row: (id, revision, name, active).
pub type RecipeRow = (String, u32, String, bool);
/// The batch list's row: (id, recipe, patient ID, state).
pub type BatchRow = (String, String, String, String);
/// The user list's row: (id, user name, printed name, role, active).
pub type UserRow = (u64, String, String, String, bool);

impl Client {
    /// Connects to the appliance named `dest` (normally [`BUS_NAME`]) on `bus`.
    pub async fn connect(bus: &Bus, dest: &str) -> Result<Self> {
        let conn = match bus {
            Bus::System => Connection::system().await?,
            Bus::Session => Connection::session().await?,
            Bus::Address(a) => zbus::connection::Builder::address(a.as_str())?.build().await?,
        };
        Ok(Self { conn, dest: dest.to_owned() })
    }

    /// A second connection to the same appliance, for a second person's signature: their
    /// session must not replace the first person's.
    pub async fn another(&self, bus: &Bus) -> Result<Self> {
        Self::connect(bus, &self.dest).await
    }

    async fn call<B, R>(&self, iface: &str, method: &str, body: &B) -> Result<R>
    where
        B: serde::Serialize + DynamicType,
        R: serde::de::DeserializeOwned + zbus::zvariant::Type,
    {
        let iface = format!("org.galen.{iface}");
        let reply = self
            .conn
            .call_method(Some(self.dest.as_str()), PATH, Some(iface.as_str()), method, body)
            .await?;
        Ok(reply.body().deserialize()?)
    }

    /// Returns (printed name, role).
    pub async fn login(&self, user: &str, pin: &str) -> Result<(String, String)> {
        self.call("Session1", "Login", &(user, pin)).await
    }

    pub async fn logout(&self) -> Result<()> {
        self.call("Session1", "Logout", &()).await
    }

    pub async fn recipes(&self) -> Result<Vec<RecipeRow>> {
        self.call("Recipes1", "List", &()).await
    }

    /// The whole recipe, as JSON.
    pub async fn details(&self, id: &str) -> Result<String> {
        self.call("Recipes1", "Details", &(id,)).await
    }

    /// Verifies and installs the signed recipe repository in `directory` (a folder the
    /// appliance can read: the stick's). One line per recipe: `installed …`, `unchanged …`,
    /// `refused …: why` or `withdrawn …`. A repository refused as a whole is an error
    /// ([`Refusal::Recipes`]) saying why.
    /// What the USB stick offers, as the appliance lists it (it mounts the stick read-only for
    /// the listing, and unmounts it again).
    pub async fn stick(&self) -> Result<OnStick> {
        let (label, labs, recipe_updates): (String, Vec<(String, i64, u64)>, Vec<String>) =
            self.call("Stick1", "Contents", &()).await?;
        let lab_files = labs
            .into_iter()
            .map(|(name, ms, size)| LabFile { name, modified_ms: (ms >= 0).then_some(ms), size })
            .collect();
        Ok(OnStick { label, lab_files, recipe_updates })
    }

    /// The bytes of a lab report the stick listed as `name`.
    pub async fn read_lab_file(&self, name: &str) -> Result<Vec<u8>> {
        self.call("Stick1", "ReadLabFile", &(name,)).await
    }

    /// Verifies and installs the recipe update the stick listed as `folder`.
    pub async fn install_recipes(&self, folder: &str) -> Result<Vec<String>> {
        self.call("Stick1", "InstallRecipes", &(folder,)).await
    }

    pub async fn activate(&self, id: &str, pin: &str) -> Result<u32> {
        self.call("Recipes1", "Activate", &(id, pin)).await
    }

    /// The calculation for a patient, as JSON, creating nothing.
    pub async fn preview(&self, recipe: &str, p: &PatientEntry) -> Result<String> {
        let (name, bytes) = p.lab_file.clone().unwrap_or_default();
        self.call("Batches1", "Preview", &(recipe, &p.fields, name, bytes)).await
    }

    /// Returns (batch id, calculation JSON).
    pub async fn create(&self, recipe: &str, p: &PatientEntry) -> Result<(String, String)> {
        let (name, bytes) = p.lab_file.clone().unwrap_or_default();
        self.call("Batches1", "Create", &(recipe, &p.fields, name, bytes)).await
    }

    pub async fn batches(&self) -> Result<Vec<BatchRow>> {
        self.call("Batches1", "List", &()).await
    }

    /// One batch as JSON.
    pub async fn batch(&self, id: &str) -> Result<String> {
        self.call("Batches1", "Get", &(id,)).await
    }

    /// A batch command that takes only the id: Start, Confirm, Hold, Resume, Stop, Abort.
    pub async fn command(&self, command: BatchCommand, id: &str) -> Result<()> {
        self.call("Batches1", command.method(), &(id,)).await
    }

    /// An e-signature on a batch: Verify, Review, Sign.
    pub async fn sign(&self, meaning: Signing, id: &str, pin: &str) -> Result<()> {
        self.call("Batches1", meaning.method(), &(id, pin)).await
    }

    /// QA's release; returns the label's recorded content (JSON).
    pub async fn release(&self, id: &str, pin: &str) -> Result<String> {
        let (label, _pdf, _zpl): (String, Vec<u8>, String) =
            self.call("Batches1", "Release", &(id, pin)).await?;
        Ok(label)
    }

    pub async fn scan(&self, id: &str, material: &str, lot: &str, expiry: &str) -> Result<()> {
        self.call("Batches1", "Scan", &(id, material, lot, expiry)).await
    }

    pub async fn acknowledge_alarms(&self, reason: &str) -> Result<u32> {
        self.call("Unit1", "AcknowledgeAlarms", &(reason,)).await
    }

    /// Every entry of a batch, as JSON.
    pub async fn entries(&self, subject: &str) -> Result<String> {
        self.call("Records1", "Entries", &(subject,)).await
    }

    /// Returns (entries checked, integrity at start).
    pub async fn verify_records(&self) -> Result<(u64, String)> {
        self.call("Records1", "Verify", &()).await
    }

    /// Exports batches, or with none the range; `progress` hears the appliance's
    /// `ExportProgress` signals while it works. Returns (folder, where, entries, safe to remove).
    pub async fn export(
        &self,
        batches: &[String],
        from_ms: i64,
        to_ms: i64,
        mut progress: impl FnMut(&str, f64) + Send,
    ) -> Result<(String, String, u64, bool)> {
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("org.galen.Records1")?
            .member("ExportProgress")?
            .path(PATH)?
            .build();
        let mut signals = zbus::MessageStream::for_match_rule(rule, &self.conn, Some(16)).await?;
        let args = (batches, from_ms, to_ms);
        let call = self.call("Records1", "Export", &args);
        tokio::pin!(call);
        loop {
            tokio::select! {
                done = &mut call => return done,
                Some(Ok(m)) = signals.next() => {
                    if let Ok((step, fraction)) = m.body().deserialize::<(String, f64)>() {
                        progress(&step, fraction);
                    }
                }
            }
        }
    }

    pub async fn users(&self) -> Result<Vec<UserRow>> {
        self.call("Users1", "List", &()).await
    }

    pub async fn add_user(
        &self,
        user: &str,
        full_name: &str,
        role: &str,
        pin: &str,
        reason: &str,
    ) -> Result<u64> {
        self.call("Users1", "Add", &(user, full_name, role, pin, reason)).await
    }

    pub async fn deactivate_user(&self, id: u64, reason: &str) -> Result<()> {
        self.call("Users1", "Deactivate", &(id, reason)).await
    }

    /// Every live property of the unit, once.
    pub async fn unit(&self) -> Result<HashMap<String, Value>> {
        let reply = self
            .conn
            .call_method(
                Some(self.dest.as_str()),
                PATH,
                Some("org.freedesktop.DBus.Properties"),
                "GetAll",
                &(UNIT,),
            )
            .await?;
        let all: HashMap<String, OwnedValue> = reply.body().deserialize()?;
        Ok(all.iter().filter_map(|(k, v)| Some((k.clone(), plain(v)?))).collect())
    }

    /// Calls `changed` with the unit's properties: all of them first, then each change as the
    /// appliance announces it, until the connection ends.
    pub async fn watch_unit(
        &self,
        mut changed: impl FnMut(HashMap<String, Value>) + Send,
    ) -> Result<()> {
        let props = zbus::fdo::PropertiesProxy::builder(&self.conn)
            .destination(self.dest.clone())?
            .path(PATH)?
            .build()
            .await?;
        let mut changes = props.receive_properties_changed().await?;
        changed(self.unit().await?);
        while let Some(signal) = changes.next().await {
            let Ok(args) = signal.args() else { continue };
            if args.interface_name().as_str() != UNIT {
                continue;
            }
            let map = args
                .changed_properties()
                .iter()
                .filter_map(|(k, v)| Some(((*k).to_owned(), plain(v)?)))
                .collect();
            changed(map);
        }
        Ok(())
    }
}

/// A property's value in the view model's terms; `None` for a shape `Unit1` does not use.
fn plain(v: &zbus::zvariant::Value<'_>) -> Option<Value> {
    use zbus::zvariant::Value as V;
    Some(match v {
        V::Str(s) => Value::Text(s.to_string()),
        V::F64(x) => Value::Number(*x),
        V::Bool(b) => Value::Flag(*b),
        V::Array(a) => {
            Value::List(a.iter().filter_map(|e| e.downcast_ref::<String>().ok()).collect())
        }
        V::Structure(s) => match s.fields() {
            [V::U32(i), V::U32(n)] => Value::Pair(*i, *n),
            _ => return None,
        },
        V::Value(inner) => return plain(inner),
        _ => return None,
    })
}

/// Batch commands that take only the batch id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchCommand {
    Start,
    Confirm,
    Hold,
    Resume,
    Stop,
    Abort,
}

impl BatchCommand {
    fn method(self) -> &'static str {
        match self {
            Self::Start => "Start",
            Self::Confirm => "Confirm",
            Self::Hold => "Hold",
            Self::Resume => "Resume",
            Self::Stop => "Stop",
            Self::Abort => "Abort",
        }
    }
}

/// E-signatures on a batch, by what they mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// A second person verified the patient's data.
    Verify,
    /// QA reviewed the exceptions, or approved a dose that needs it.
    Review,
    /// The pharmacist who made the batch signs it.
    Sign,
}

impl Signing {
    fn method(self) -> &'static str {
        match self {
            Self::Verify => "Verify",
            Self::Review => "Review",
            Self::Sign => "Sign",
        }
    }
}
