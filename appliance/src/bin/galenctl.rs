//! `galenctl`: the appliance's D-Bus API from a shell, for service engineers, scripts and the
//! image's tests. Each run is one D-Bus connection, so it logs in, acts and (by leaving) ends
//! its session; the PIN comes from `GALEN_PIN` or standard input, never from the command line.
//!
//! Exit codes: 0 done; 1 the appliance failed or could not be reached; 2 usage; 3 not
//! allowed (no session, wrong PIN, locked, role); 4 refused (bad input, wrong state, the
//! recipe's rules); 5 a watched batch ended other than Complete.

use std::collections::HashMap;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{CommandFactory as _, Parser, Subcommand};
use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;
use zbus::Connection;
use zbus::zvariant::DynamicType;

const NAME: &str = "org.galen.Appliance1";
const PATH: &str = "/org/galen/Appliance1";

/// Drive a Galen appliance over D-Bus.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "The PIN is read from GALEN_PIN, or from standard input.\n\
    Exit codes: 0 done, 1 failure, 2 usage, 3 not allowed, 4 refused, 5 batch not Complete."
)]
struct Cli {
    /// `system`, `session`, or a D-Bus address (a private bus).
    #[arg(long, global = true, default_value = "system", env = "GALEN_BUS")]
    bus: String,
    /// The appliance's bus name (another only where several share a bus, as in tests).
    #[arg(long, global = true, default_value = NAME, env = "GALEN_BUS_NAME", hide = true)]
    bus_name: String,
    /// Log in as this user first.
    #[arg(long, short, global = true, env = "GALEN_USER")]
    user: Option<String>,
    /// Print JSON instead of text, for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Who the appliance thinks you are.
    Whoami,
    /// The unit right now: batch, phase, weight, temperature, alarms.
    Status,
    /// Acknowledge the current alarms.
    Ack {
        #[arg(long)]
        reason: String,
    },
    /// Installed recipes: list, show, install from a stick, activate (QA).
    #[command(subcommand)]
    Recipes(RecipeCmd),
    /// What is on the USB stick: lab reports and recipe updates (mounted read-only, then
    /// unmounted again).
    Stick,
    /// A patient's batch: preview, create, verify, start, scan, watch, sign, release.
    #[command(subcommand)]
    Batch(BatchCmd),
    /// The batch record: entries, verification, export to the stick.
    #[command(subcommand)]
    Records(RecordCmd),
    /// People and roles (administrators).
    #[command(subcommand)]
    Users(UserCmd),
    /// Print shell completions (bash, zsh, fish, …) to standard output.
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Subcommand)]
enum RecipeCmd {
    /// Installed recipes and whether QA activated them.
    List,
    /// One recipe, whole (JSON).
    Show { id: String },
    /// Verify and install a signed recipe update (a TUF repository): from the USB stick with
    /// `--from-stick`, or from a folder on the unit.
    Install {
        /// A folder on the unit holding the repository.
        #[arg(required_unless_present = "from_stick")]
        dir: Option<PathBuf>,
        /// Take the update from the USB stick: the one it holds, or FOLDER as `galenctl stick`
        /// lists it when it holds several (`/` for the stick's top folder).
        #[arg(long, value_name = "FOLDER", num_args = 0..=1, default_missing_value = "",
              conflicts_with = "dir")]
        from_stick: Option<String>,
    },
    /// Activate the installed revision (QA, e-signature).
    Activate { id: String },
}

#[derive(Debug, clap::Args)]
struct PatientArgs {
    /// The recipe to make.
    #[arg(long)]
    recipe: String,
    /// The hospital's patient identifier.
    #[arg(long)]
    patient_id: String,
    /// Body weight in kilograms, e.g. 70.5.
    #[arg(long)]
    weight_kg: Option<String>,
    /// Age in whole years.
    #[arg(long)]
    age_years: Option<String>,
    /// A phenotype as typed, e.g. `TPMT="Intermediate Metabolizer"` (repeatable).
    #[arg(long, value_name = "GENE=PHENOTYPE")]
    phenotype: Vec<String>,
    /// A PharmCAT outside-call file from the lab, on this computer.
    #[arg(long, conflicts_with = "lab_on_stick")]
    lab_file: Option<PathBuf>,
    /// A PharmCAT outside-call file from the lab on the USB stick, by the name `galenctl stick`
    /// lists.
    #[arg(long, value_name = "NAME")]
    lab_on_stick: Option<String>,
}

#[derive(Debug, Subcommand)]
enum BatchCmd {
    /// Show the calculation for a patient without creating anything.
    Preview(PatientArgs),
    /// Create a batch for a patient; prints its id and the calculation.
    Create(PatientArgs),
    List,
    Show {
        id: String,
    },
    /// Second-person verification of the patient's data (e-signature).
    Verify {
        id: String,
    },
    /// QA review (e-signature).
    Review {
        id: String,
    },
    Start {
        id: String,
    },
    /// A material label: material id, lot, expiry YYYY-MM-DD.
    Scan {
        id: String,
        material: String,
        lot: String,
        expiry: String,
    },
    /// Confirm the current manual step.
    Confirm {
        id: String,
    },
    Hold {
        id: String,
    },
    Resume {
        id: String,
    },
    Stop {
        id: String,
    },
    Abort {
        id: String,
    },
    /// Follow a batch with a progress bar until it ends or waits for someone.
    Watch {
        id: String,
        /// Also return when the batch reaches this phase.
        #[arg(long)]
        until_phase: Option<String>,
        /// Also return when the batch waits for the operator (a scan, a hand-weighed
        /// addition, a cleaning step), printing what to do.
        #[arg(long)]
        until_operator: bool,
    },
    /// The performer signs the record (e-signature).
    Sign {
        id: String,
    },
    /// QA releases it (e-signature); writes the label as <id>-label.pdf and .zpl.
    Release {
        id: String,
        /// Where to write the label files.
        #[arg(long, default_value = ".")]
        label_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum RecordCmd {
    /// Every entry of a batch (JSON).
    Entries { subject: String },
    /// Re-verify the whole chain now.
    Verify,
    /// Export batches, or every entry in a time range, to the stick, with progress.
    Export {
        /// A batch to export (repeatable).
        #[arg(long = "batch", value_name = "ID", required_unless_present = "from")]
        batches: Vec<String>,
        /// Start of the range: a UTC date (2026-11-01) or time (2026-11-01T08:00:00Z).
        #[arg(long, value_parser = utc_millis, requires = "to", conflicts_with = "batches")]
        from: Option<i64>,
        /// End of the range (a date means the end of that day).
        #[arg(long, value_parser = utc_millis_end)]
        to: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
enum UserCmd {
    List,
    /// Add a user; their PIN is read after yours (a second line of stdin, or GALEN_NEW_PIN).
    Add {
        username: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        role: String,
        #[arg(long)]
        reason: String,
    },
    Deactivate {
        id: u64,
        #[arg(long)]
        reason: String,
    },
}

/// An error the appliance named.
#[derive(Debug)]
struct Named {
    name: String,
    text: String,
}

impl std::fmt::Display for Named {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = self.name.trim_start_matches("org.galen.Error.");
        write!(f, "{} ({short})", self.text)
    }
}

impl std::error::Error for Named {}

fn exit_code(e: &anyhow::Error) -> u8 {
    let Some(named) = e.downcast_ref::<Named>() else { return 1 };
    match named.name.trim_start_matches("org.galen.Error.") {
        "NotLoggedIn" | "WrongCredentials" | "LockedOut" | "Deactivated" | "SessionExpired"
        | "NotPermitted" => 3,
        "PinTooShort" | "NoSuchRecipe" | "RecipeNotActive" | "NoSuchBatch" | "InvalidInput"
        | "Refused" | "WrongState" | "NotReady" | "Busy" | "RecordsCompromised" => 4,
        _ => 1,
    }
}

struct Client {
    conn: Connection,
    /// The appliance's bus name.
    dest: String,
    json: bool,
    pin: Option<String>,
}

impl Client {
    async fn call<B, R>(&self, iface: &str, method: &str, body: &B) -> Result<R>
    where
        B: serde::Serialize + DynamicType,
        R: DeserializeOwned + zbus::zvariant::Type,
    {
        let reply = self
            .conn
            .call_method(Some(self.dest.as_str()), PATH, Some(iface), method, body)
            .await
            .map_err(|e| match e {
                zbus::Error::MethodError(name, text, _) => {
                    anyhow!(Named { name: name.to_string(), text: text.unwrap_or_default() })
                }
                e => anyhow!(e).context(format!("calling {iface}.{method}")),
            })?;
        reply.body().deserialize().with_context(|| format!("reading the answer of {method}"))
    }

    fn pin(&self) -> Result<String> {
        self.pin.clone().ok_or_else(|| anyhow!("this needs a PIN: pass --user and give the PIN"))
    }

    async fn property<T: TryFrom<zbus::zvariant::OwnedValue>>(&self, name: &str) -> Result<T>
    where
        T::Error: Into<zbus::zvariant::Error>,
    {
        let p = zbus::fdo::PropertiesProxy::builder(&self.conn)
            .destination(self.dest.as_str())?
            .path(PATH)?
            .build()
            .await?;
        let v = p.get("org.galen.Unit1".try_into()?, name).await?;
        T::try_from(v).map_err(|e| anyhow!(e.into()))
    }

    fn print<T: serde::Serialize>(&self, value: &T, text: impl FnOnce() -> String) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
        } else {
            println!("{}", text());
        }
    }
}

fn read_pin(var: &str, prompt: &str) -> Result<String> {
    if let Ok(pin) = std::env::var(var) {
        return Ok(pin);
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("{prompt}: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line).context("reading the PIN from standard input")?;
    let pin = line.trim_end_matches(['\r', '\n']).to_owned();
    if pin.is_empty() {
        return Err(anyhow!("no PIN given (set {var} or write it on standard input)"));
    }
    Ok(pin)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Completions { shell } = &cli.command {
        clap_complete::generate(*shell, &mut Cli::command(), "galenctl", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("galenctl: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

async fn run(cli: Cli) -> Result<u8> {
    let conn = galen_appliance::dbus::connect(&cli.bus).await.with_context(|| {
        format!("connecting to the {bus} bus (is applianced running?)", bus = cli.bus)
    })?;
    let mut c = Client { conn, dest: cli.bus_name.clone(), json: cli.json, pin: None };
    if let Some(user) = &cli.user {
        let pin = read_pin("GALEN_PIN", &format!("PIN for {user}"))?;
        let (name, role): (String, String) =
            c.call("org.galen.Session1", "Login", &(user, &pin)).await?;
        if !c.json {
            eprintln!("logged in as {name} ({role})");
        }
        c.pin = Some(pin);
    }
    match cli.command {
        Cmd::Completions { .. } => unreachable!("handled before connecting"),
        Cmd::Whoami => {
            let (u, n, r): (String, String, String) =
                c.call("org.galen.Session1", "WhoAmI", &()).await?;
            c.print(&serde_json::json!({"user": u, "name": n, "role": r}), || {
                format!("{n} ({u}), {r}")
            });
        }
        Cmd::Status => status(&c).await?,
        Cmd::Ack { reason } => {
            let n: u32 = c.call("org.galen.Unit1", "AcknowledgeAlarms", &(reason,)).await?;
            c.print(&n, || format!("{n} alarm(s) acknowledged"));
        }
        Cmd::Recipes(cmd) => recipes(&c, cmd).await?,
        Cmd::Stick => stick(&c).await?,
        Cmd::Batch(cmd) => return batch(&c, cmd).await,
        Cmd::Records(cmd) => records(&c, cmd).await?,
        Cmd::Users(cmd) => users(&c, cmd).await?,
    }
    Ok(0)
}

async fn status(c: &Client) -> Result<()> {
    let batch: String = c.property("BatchId").await?;
    let state: String = c.property("State").await?;
    let phase: String = c.property("Phase").await?;
    let title: String = c.property("PhaseTitle").await?;
    let progress: f64 = c.property("Progress").await?;
    let weight: f64 = c.property("WeightGrams").await?;
    let stable: bool = c.property("WeightStable").await?;
    let temp: f64 = c.property("TemperatureCelsius").await?;
    let alarms: Vec<String> = c.property("Alarms").await?;
    let down: Vec<String> = c.property("LinksDown").await?;
    let instruction: String = c.property("Instruction").await?;
    let notice: String = c.property("Notice").await?;
    let v = serde_json::json!({
        "batch": batch, "state": state, "phase": phase, "phase_title": title,
        "progress": progress,
        "weight_g": weight.is_finite().then_some(weight), "stable": stable,
        "temperature_c": temp.is_finite().then_some(temp),
        "instruction": instruction, "notice": notice,
        "alarms": alarms, "links_down": down,
    });
    c.print(&v, || {
        let num = |x: f64, unit: &str| if x.is_finite() { format!("{x:.3} {unit}") } else { "—".into() };
        let mut s = format!(
            "batch        {}\nstate        {}\nphase        {} ({:.0} %)\nbalance      {}\ntemperature  {}",
            if batch.is_empty() { "none" } else { &batch },
            if state.is_empty() { "—" } else { &state },
            if phase.is_empty() { "—".to_owned() } else if title.is_empty() { phase.clone() } else { format!("{phase}: {title}") },
            progress * 100.0,
            num(weight, "g") + if stable { " (stable)" } else { "" },
            num(temp, "°C"),
        );
        if !instruction.is_empty() {
            s.push_str(&format!("\nnow          {instruction}"));
        }
        if !notice.is_empty() {
            s.push_str(&format!("\nrefused      {notice}"));
        }
        for a in &alarms {
            s.push_str(&format!("\nALARM        {a}"));
        }
        for d in &down {
            s.push_str(&format!("\nLINK DOWN    {d}"));
        }
        s
    });
    Ok(())
}

async fn recipes(c: &Client, cmd: RecipeCmd) -> Result<()> {
    const I: &str = "org.galen.Recipes1";
    match cmd {
        RecipeCmd::List => {
            let list: Vec<(String, u32, String, bool)> = c.call(I, "List", &()).await?;
            c.print(&list, || {
                list.iter()
                    .map(|(id, rev, name, active)| {
                        let status = if *active { "active" } else { "WAITING FOR QA ACTIVATION" };
                        format!("{id:<36} rev {rev:<3} {status:<26} {name}")
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        RecipeCmd::Show { id } => {
            let s: String = c.call(I, "Details", &(id,)).await?;
            println!("{s}");
        }
        RecipeCmd::Install { dir, from_stick } => {
            let lines: Vec<String> = match (dir, from_stick) {
                (_, Some(folder)) => {
                    let folder = match folder.as_str() {
                        "" => only_update(c).await?,
                        "/" => String::new(),
                        f => f.trim_matches('/').to_owned(),
                    };
                    c.call(STICK, "InstallRecipes", &(folder,)).await?
                }
                (Some(dir), None) => {
                    let dir = std::fs::canonicalize(&dir)
                        .with_context(|| format!("{}", dir.display()))?;
                    c.call(I, "Install", &(dir.display().to_string(),)).await?
                }
                (None, None) => unreachable!("clap requires a folder or --from-stick"),
            };
            c.print(&lines, || lines.join("\n"));
        }
        RecipeCmd::Activate { id } => {
            let rev: u32 = c.call(I, "Activate", &(&id, c.pin()?)).await?;
            c.print(&rev, || format!("{id} revision {rev} is active"));
        }
    }
    Ok(())
}

const STICK: &str = "org.galen.Stick1";

/// What `Stick1.Contents` answers: label, lab files (name, modified ms or -1, bytes), updates.
type StickContents = (String, Vec<(String, i64, u64)>, Vec<String>);

async fn stick(c: &Client) -> Result<()> {
    let (label, labs, updates): StickContents = c.call(STICK, "Contents", &()).await?;
    let value = serde_json::json!({
        "label": label,
        "lab_files": labs.iter().map(|(name, modified_ms, size)| serde_json::json!({
            "name": name, "modified_ms": (*modified_ms >= 0).then_some(*modified_ms), "size": size,
        })).collect::<Vec<_>>(),
        "recipe_updates": updates,
    });
    c.print(&value, || {
        let mut s = format!("on the stick \"{label}\":");
        if labs.is_empty() && updates.is_empty() {
            s.push_str(" no lab reports (.tsv) and no recipe updates");
        }
        for (name, modified_ms, size) in &labs {
            let when = jiff::Timestamp::from_millisecond(*modified_ms)
                .ok()
                .filter(|_| *modified_ms >= 0)
                .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_else(|| "date unknown".into());
            s.push_str(&format!("\nlab report     {name}  ({when}, {size} bytes)"));
        }
        for u in &updates {
            let shown = if u.is_empty() { "/ (the stick's top folder)" } else { u };
            s.push_str(&format!("\nrecipe update  {shown}"));
        }
        s
    });
    Ok(())
}

/// The one recipe update on the stick; several are a choice the person must make.
async fn only_update(c: &Client) -> Result<String> {
    let (label, _, mut updates): StickContents = c.call(STICK, "Contents", &()).await?;
    match updates.len() {
        0 => {
            bail!("the stick {label} holds no recipe update (a folder with metadata/ and targets/)")
        }
        1 => Ok(updates.remove(0)),
        _ => bail!(
            "the stick {label} holds {} recipe updates; name one: --from-stick FOLDER, one of: {}",
            updates.len(),
            updates
                .iter()
                .map(|u| if u.is_empty() { "/" } else { u.as_str() })
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// (recipe, patient fields, lab file name, lab file bytes): the arguments of Preview and Create.
type PatientCall = (String, HashMap<String, String>, String, Vec<u8>);

async fn patient(c: &Client, p: &PatientArgs) -> Result<PatientCall> {
    let mut fields = HashMap::from([("patient_id".to_owned(), p.patient_id.clone())]);
    if let Some(w) = &p.weight_kg {
        fields.insert("weight_kg".into(), w.clone());
    }
    if let Some(a) = &p.age_years {
        fields.insert("age_years".into(), a.clone());
    }
    for ph in &p.phenotype {
        let (gene, text) = ph
            .split_once('=')
            .ok_or_else(|| anyhow!("--phenotype {ph:?}: write GENE=PHENOTYPE"))?;
        fields.insert(format!("phenotype.{}", gene.trim()), text.trim().to_owned());
    }
    let (name, bytes) = match (&p.lab_file, &p.lab_on_stick) {
        (Some(f), _) => (
            f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            std::fs::read(f).with_context(|| format!("reading {}", f.display()))?,
        ),
        (None, Some(name)) => (name.clone(), c.call(STICK, "ReadLabFile", &(name,)).await?),
        (None, None) => (String::new(), Vec::new()),
    };
    Ok((p.recipe.clone(), fields, name, bytes))
}

fn calculation_text(json: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let mut s = v["text"].as_str().unwrap_or(json).trim_end().to_owned();
    if let Some(list) = v["second_person"].as_array().filter(|l| !l.is_empty())
        && !s.contains("A second person verifies")
    {
        let items: Vec<_> = list.iter().filter_map(|x| x.as_str()).collect();
        s.push_str(&format!("\nA second person must verify: {}", items.join(", ")));
    }
    s
}

async fn batch(c: &Client, cmd: BatchCmd) -> Result<u8> {
    const I: &str = "org.galen.Batches1";
    let done = |what: &str, id: &str| {
        c.print(&serde_json::json!({"batch": id, "done": what}), || format!("{id}: {what}"))
    };
    match cmd {
        BatchCmd::Preview(p) => {
            let (r, f, n, b) = patient(c, &p).await?;
            let calc: String = c.call(I, "Preview", &(r, f, n, b)).await?;
            if c.json { println!("{calc}") } else { println!("{}", calculation_text(&calc)) }
        }
        BatchCmd::Create(p) => {
            let (r, f, n, b) = patient(c, &p).await?;
            let (id, calc): (String, String) = c.call(I, "Create", &(r, f, n, b)).await?;
            if c.json {
                println!("{{\"batch\": {id:?}, \"calculation\": {calc}}}");
            } else {
                println!("created {id}\n{}", calculation_text(&calc));
            }
        }
        BatchCmd::List => {
            let list: Vec<(String, String, String, String)> = c.call(I, "List", &()).await?;
            c.print(&list, || {
                list.iter()
                    .map(|(id, r, p, s)| format!("{id:<16} {s:<10} {p:<12} {r}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        BatchCmd::Show { id } => println!("{}", c.call::<_, String>(I, "Get", &(id,)).await?),
        BatchCmd::Verify { id } => {
            c.call::<_, ()>(I, "Verify", &(&id, c.pin()?)).await?;
            done("verified (second person)", &id);
        }
        BatchCmd::Review { id } => {
            c.call::<_, ()>(I, "Review", &(&id, c.pin()?)).await?;
            done("reviewed", &id);
        }
        BatchCmd::Start { id } => {
            c.call::<_, ()>(I, "Start", &(&id,)).await?;
            done("started", &id);
        }
        BatchCmd::Scan { id, material, lot, expiry } => {
            c.call::<_, ()>(I, "Scan", &(&id, &material, &lot, &expiry)).await?;
            done(&format!("scanned {material} lot {lot}"), &id);
        }
        BatchCmd::Confirm { id } => {
            c.call::<_, ()>(I, "Confirm", &(&id,)).await?;
            done("confirmed", &id);
        }
        BatchCmd::Hold { id } => {
            c.call::<_, ()>(I, "Hold", &(&id,)).await.map(|()| done("hold asked", &id))?
        }
        BatchCmd::Resume { id } => {
            c.call::<_, ()>(I, "Resume", &(&id,)).await.map(|()| done("resume asked", &id))?
        }
        BatchCmd::Stop { id } => {
            c.call::<_, ()>(I, "Stop", &(&id,)).await.map(|()| done("stop asked", &id))?
        }
        BatchCmd::Abort { id } => {
            c.call::<_, ()>(I, "Abort", &(&id,)).await.map(|()| done("abort asked", &id))?
        }
        BatchCmd::Watch { id, until_phase, until_operator } => {
            return watch(c, &id, until_phase.as_deref(), until_operator).await;
        }
        BatchCmd::Sign { id } => {
            c.call::<_, ()>(I, "Sign", &(&id, c.pin()?)).await?;
            done("signed (performed by)", &id);
        }
        BatchCmd::Release { id, label_dir } => {
            let (label, pdf, zpl): (String, Vec<u8>, String) =
                c.call(I, "Release", &(&id, c.pin()?)).await?;
            std::fs::create_dir_all(&label_dir)?;
            let (pdf_path, zpl_path) = (
                label_dir.join(format!("{id}-label.pdf")),
                label_dir.join(format!("{id}-label.zpl")),
            );
            std::fs::write(&pdf_path, pdf)
                .with_context(|| format!("writing {}", pdf_path.display()))?;
            std::fs::write(&zpl_path, zpl)
                .with_context(|| format!("writing {}", zpl_path.display()))?;
            if c.json {
                println!("{label}");
            } else {
                println!(
                    "{id}: released; label recorded and written to {} and {}",
                    pdf_path.display(),
                    zpl_path.display()
                );
            }
        }
    }
    Ok(0)
}

/// Draws one progress line on a terminal; on a pipe, prints a line when the phase changes.
struct Bar {
    tty: bool,
    last: String,
}

impl Bar {
    fn show(&mut self, phase: &str, pos: (u32, u32), progress: f64, weight: f64, temp: f64) {
        let head = format!("phase {}/{} {phase}", (pos.0 + 1).min(pos.1), pos.1);
        if self.tty {
            let filled = (progress.clamp(0.0, 1.0) * 30.0).round();
            // 0..=30 by the clamp above.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let filled = filled as usize;
            let num =
                |x: f64, u: &str| if x.is_finite() { format!("{x:.2} {u}") } else { "—".into() };
            eprint!(
                "\r\x1b[2K{head:<32} [{}{}] {:>3.0} %  {}  {}",
                "#".repeat(filled),
                "-".repeat(30 - filled),
                progress * 100.0,
                num(weight, "g"),
                num(temp, "°C")
            );
            let _ = std::io::stderr().flush();
        } else if head != self.last {
            eprintln!("{head}");
        }
        self.last = head;
    }
}

async fn watch(
    c: &Client,
    id: &str,
    until_phase: Option<&str>,
    until_operator: bool,
) -> Result<u8> {
    let props = zbus::fdo::PropertiesProxy::builder(&c.conn)
        .destination(c.dest.as_str())?
        .path(PATH)?
        .build()
        .await?;
    let mut changes = props.receive_properties_changed().await?;
    // The signals are drained on their own task, always: zbus stops reading the connection
    // while a subscriber's queue is full, so a loop that took one signal per round of Gets
    // fell behind on a slow machine (the unit's own CPU) and then waited for ever for the
    // replies to its Gets.
    let changed = std::sync::Arc::new(tokio::sync::Notify::new());
    let notify = std::sync::Arc::clone(&changed);
    let drain = tokio::spawn(async move {
        while changes.next().await.is_some() {
            notify.notify_one();
        }
    });
    let _stop_draining = AbortOnDrop(drain);
    let mut bar = Bar { tty: std::io::stderr().is_terminal(), last: String::new() };
    let mut alarms_seen: Vec<String> = Vec::new();
    let mut notice_seen = String::new();
    loop {
        let batch: String = c.property("BatchId").await?;
        let state: String = c.property("State").await?;
        let phase: String = c.property("Phase").await?;
        let pos: (u32, u32) = c.property("PhasePosition").await?;
        let progress: f64 = c.property("Progress").await?;
        let weight: f64 = c.property("WeightGrams").await?;
        let temp: f64 = c.property("TemperatureCelsius").await?;
        let alarms: Vec<String> = c.property("Alarms").await?;
        let instruction: String = c.property("Instruction").await?;
        let notice: String = c.property("Notice").await?;
        if batch == id {
            bar.show(&phase, pos, progress, weight, temp);
            for a in alarms.iter().filter(|a| !alarms_seen.contains(a)) {
                eprintln!("\nALARM: {a}");
            }
            alarms_seen = alarms;
            if !notice.is_empty() && notice != notice_seen {
                eprintln!("\nREFUSED: {notice}");
            }
            notice_seen = notice;
            let waiting = until_phase.is_some_and(|p| p == phase)
                || (until_operator && state == "Running" && !instruction.is_empty());
            if waiting || matches!(state.as_str(), "Complete" | "Held" | "Stopped" | "Aborted") {
                if bar.tty {
                    eprintln!();
                }
                let v = serde_json::json!({
                    "batch": id, "state": state, "phase": phase, "instruction": instruction,
                });
                c.print(&v, || {
                    let mut s = format!(
                        "{id}: {state}{}",
                        if phase.is_empty() { String::new() } else { format!(", phase {phase}") }
                    );
                    if !instruction.is_empty() {
                        s.push_str(&format!("\nnow: {instruction}"));
                    }
                    s
                });
                return Ok(if waiting || state == "Complete" { 0 } else { 5 });
            }
        }
        // Wake on the next change, or poll now and then in case a signal was missed.
        let _ = tokio::time::timeout(Duration::from_secs(1), changed.notified()).await;
    }
}

/// Ends a background task when its owner returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn records(c: &Client, cmd: RecordCmd) -> Result<()> {
    const I: &str = "org.galen.Records1";
    match cmd {
        RecordCmd::Entries { subject } => {
            println!("{}", c.call::<_, String>(I, "Entries", &(subject,)).await?)
        }
        RecordCmd::Verify => {
            let (n, integrity): (u64, String) = c.call(I, "Verify", &()).await?;
            c.print(&serde_json::json!({"entries": n, "integrity": integrity}), || {
                format!(
                    "{n} entries verified (hash chain and MACs); integrity at start: {integrity}"
                )
            });
        }
        RecordCmd::Export { batches, from, to } => {
            let (from_ms, to_ms) = (from.unwrap_or(0), to.unwrap_or(0));
            let rule = zbus::MatchRule::builder()
                .msg_type(zbus::message::Type::Signal)
                .interface(I)?
                .member("ExportProgress")?
                .build();
            let mut progress = zbus::MessageStream::for_match_rule(rule, &c.conn, None).await?;
            let quiet = c.json;
            let shower = tokio::spawn(async move {
                while let Some(Ok(m)) = progress.next().await {
                    if let Ok((step, f)) = m.body().deserialize::<(String, f64)>()
                        && !quiet
                    {
                        eprintln!("export {:>3.0} %  {step}", f * 100.0);
                    }
                }
            });
            let (folder, location, entries, safe): (String, String, u64, bool) =
                c.call(I, "Export", &(batches, from_ms, to_ms)).await?;
            shower.abort();
            c.print(
                &serde_json::json!({"folder": folder, "location": location, "entries": entries, "safe_to_remove": safe}),
                || {
                    let tail = if safe { "\nthe stick is safe to remove" } else { "" };
                    format!("exported {entries} entries as {folder} to {location}{tail}")
                },
            );
        }
    }
    Ok(())
}

/// A UTC date or timestamp as Unix milliseconds; a date means its first millisecond.
fn utc_millis(text: &str) -> Result<i64, String> {
    parse_utc(text, false)
}

/// As [`utc_millis`], but a date means the first millisecond of the next day.
fn utc_millis_end(text: &str) -> Result<i64, String> {
    parse_utc(text, true)
}

fn parse_utc(text: &str, end_of_day: bool) -> Result<i64, String> {
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    let date: jiff::civil::Date = text.parse().map_err(|_| {
        format!("{text:?} is neither a date (2026-11-01) nor a UTC time (2026-11-01T08:00:00Z)")
    })?;
    let date = if end_of_day { date.tomorrow().map_err(|e| e.to_string())? } else { date };
    date.to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp().as_millisecond())
        .map_err(|e| e.to_string())
}

async fn users(c: &Client, cmd: UserCmd) -> Result<()> {
    const I: &str = "org.galen.Users1";
    match cmd {
        UserCmd::List => {
            let list: Vec<(u64, String, String, String, bool)> = c.call(I, "List", &()).await?;
            c.print(&list, || {
                list.iter()
                    .map(|(id, u, n, r, a)| {
                        format!(
                            "{id:>4} {u:<16} {r:<11} {} {n}",
                            if *a { "active     " } else { "DEACTIVATED" }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        UserCmd::Add { username, name, role, reason } => {
            let pin = read_pin("GALEN_NEW_PIN", &format!("new PIN for {username}"))?;
            let id: u64 = c.call(I, "Add", &(&username, &name, &role, &pin, &reason)).await?;
            c.print(&id, || format!("added {username} as user {id}"));
        }
        UserCmd::Deactivate { id, reason } => {
            c.call::<_, ()>(I, "Deactivate", &(id, &reason)).await?;
            c.print(&id, || format!("user {id} deactivated"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_utc_and_a_closing_date_includes_its_day() {
        let day = 86_400_000;
        assert_eq!(utc_millis("1970-01-02"), Ok(day));
        assert_eq!(utc_millis_end("1970-01-02"), Ok(2 * day));
        assert_eq!(utc_millis("1970-01-01T00:00:01Z"), Ok(1000));
        assert_eq!(utc_millis_end("1970-01-01T00:00:01Z"), Ok(1000), "a time is exact");
        assert!(utc_millis("2026-02-30").unwrap_err().contains("neither a date"));
    }
}
