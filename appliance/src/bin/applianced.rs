//! `applianced`, the supervisor daemon.
//!
//! `applianced commission` creates the record store once, sealing a new record key in the TPM.
//! `applianced run` (the systemd service) starts in this order: open the records and check
//! them against the TPM (a rollback keeps the records but refuses new batches); start one
//! actor per configured device; make the unit safe and hold every batch that was interrupted;
//! tell systemd it is ready; pet the watchdog; on SIGTERM or SIGINT, take a final checkpoint
//! and stop. Between READY and the stop it serves the D-Bus API (`org.galen.Appliance1`).

use std::io::BufRead as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use galen_appliance::records::{At, FirstAdmin, Integrity, RecordStore};
use galen_appliance::service::{Config, Service, StickAccess};
use galen_appliance::supervisor::live::{Feed, Live, distribute};
use galen_appliance::supervisor::recovery::recover;
use galen_appliance::supervisor::runtime::{SystemClock, WallClock};
use galen_appliance::supervisor::{instruments, start_devices};
use galen_appliance::tpm::{Tpm, TpmConfig};
use galen_appliance::usb::{UDISKS2, Udisks};
use galen_devices::config::UnitConfig;
use galen_recipes::model::Version;
use galen_recipes::tuf::intake::Intake;
use tokio::signal::unix::{SignalKind, signal};

/// The Galen supervisor: drives the unit's instruments, runs batches, keeps the records.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The record database.
    #[arg(long, default_value = "/var/lib/galen/records.sqlite", global = true)]
    db: PathBuf,
    /// Where the TPM-wrapped key blobs live.
    #[arg(long, default_value = "/var/lib/galen/tpm", global = true)]
    keys: PathBuf,
    /// The TPM: `device:/dev/tpmrm0` on the appliance, `swtpm:host=…,port=…` in tests.
    #[arg(long, default_value = "device:/dev/tpmrm0", global = true)]
    tcti: String,
    /// This appliance's identity, as it appears in records and exports.
    #[arg(long, default_value = "galen-0001", global = true)]
    device_id: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create the record store and its first administrator (the PIN is read from stdin).
    Commission {
        /// The administrator's user name.
        #[arg(long)]
        admin: String,
        /// The administrator's full printed name.
        #[arg(long)]
        name: String,
    },
    /// Run the supervisor until SIGTERM, serving the D-Bus API.
    Run {
        /// The unit configuration (which device on which port).
        #[arg(long, default_value = "/etc/galen/unit.toml")]
        unit: PathBuf,
        /// The manufacturer's TUF root, shipped in the read-only image: only recipes signed
        /// under it are installed.
        #[arg(long, default_value = "/usr/share/galen/root.json")]
        trusted_root: PathBuf,
        /// Where installed recipes and trusted TUF metadata live.
        #[arg(long, default_value = "/var/lib/galen/recipes")]
        recipes: PathBuf,
        /// The unit model recipes must be validated for.
        #[arg(long, default_value = "galen-cu1")]
        unit_model: String,
        /// The bus to serve on: `system`, `session`, or a D-Bus address (a private bus).
        #[arg(long, default_value = "system")]
        bus: String,
        /// The well-known name to claim (tests that share one bus give each daemon its own).
        #[arg(long, default_value = galen_appliance::dbus::NAME)]
        bus_name: String,
        /// A folder that stands in for the USB stick: exports are written into it, and lab
        /// reports and recipe updates are taken from it, instead of through udisks2 (for a
        /// developer's machine and the demo; never on the appliance).
        #[arg(long, value_name = "DIR", alias = "export-to")]
        stick_dir: Option<PathBuf>,
    },
}

fn tpm(cli: &Cli) -> Result<Tpm> {
    let config = TpmConfig {
        tcti: cli.tcti.clone(),
        key_dir: cli.keys.clone(),
        nv_index: 0x0150_0100,
        pcrs: vec![7],
    };
    Tpm::open(&config).with_context(|| format!("opening the TPM at {}", cli.tcti))
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Cmd::Commission { admin, name } => commission(&cli, admin, name),
        Cmd::Run { .. } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the runtime")
            .and_then(|rt| rt.block_on(run(&cli))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("applianced: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn commission(cli: &Cli, admin: &str, name: &str) -> Result<()> {
    let mut pin = String::new();
    std::io::stdin().lock().read_line(&mut pin).context("reading the PIN from stdin")?;
    let pin = pin.trim_end_matches(['\r', '\n']);
    if pin.is_empty() {
        bail!("no PIN on stdin");
    }
    if let Some(dir) = cli.db.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let first = FirstAdmin { username: admin, full_name: name, pin };
    let at = At::utc(SystemClock.now());
    let store = RecordStore::create(&cli.db, &cli.device_id, tpm(cli)?, &first, at)?;
    println!("commissioned {}: records in {}", cli.device_id, cli.db.display());
    println!(
        "checkpoint key fingerprint (keep it in the commissioning record; inspectors compare it):"
    );
    println!("{}", store.public_key_fingerprint());
    store.shutdown(at)?;
    Ok(())
}

async fn run(cli: &Cli) -> Result<()> {
    let Cmd::Run { unit: unit_path, trusted_root, recipes, unit_model, bus, bus_name, stick_dir } =
        &cli.command
    else {
        unreachable!("run is only called for the run command")
    };
    let unit = UnitConfig::load(unit_path)?;
    let clock = SystemClock;
    let root = std::fs::read(trusted_root)
        .with_context(|| format!("reading the trusted TUF root {}", trusted_root.display()))?;
    let version = Version::parse(env!("CARGO_PKG_VERSION")).context("this build's version")?;
    let intake = Intake::new(root, recipes.clone(), unit_model, version)
        .with_context(|| format!("preparing the recipe store in {}", recipes.display()))?;
    let store = RecordStore::open(&cli.db, &cli.device_id, tpm(cli)?, At::utc(clock.now()))?;
    match store.integrity() {
        Integrity::Sound => tracing::info!(entries = store.len(), "records verified"),
        Integrity::Compromised(why) => {
            tracing::error!("records failed the start-up check; new batches are refused: {why}")
        }
    }
    let records = Arc::new(Mutex::new(store));
    let (observed_tx, observed) = tokio::sync::mpsc::channel(256);
    let devices = start_devices(&unit, &observed_tx)?;
    tracing::info!(devices = unit.devices.len(), "device actors started");
    let recovered = recover(&devices, &records, &clock, |batch, phase| {
        resume_policy(&records, &intake, batch, phase)
    })
    .await?;
    for r in &recovered {
        tracing::warn!(batch = %r.batch_id, was = %r.was, phase = ?r.phase, "held after restart");
    }
    let live = Arc::new(tokio::sync::watch::channel(Live::default()).0);
    let feed = Feed::default();
    tokio::spawn(distribute(observed, live.clone(), feed.clone()));
    let stick = match stick_dir {
        Some(dir) => StickAccess::Directory(dir.clone()),
        None => StickAccess::Usb(Udisks::new(
            zbus::Connection::system().await.context("connecting to udisks2 on the system bus")?,
            UDISKS2,
        )),
    };
    let config = Config {
        site: cli.device_id.clone(),
        instruments: instruments(&unit),
        speed: unit.speed(),
        stick,
    };
    if unit.simulation.is_some() {
        tracing::warn!(
            speed = unit.speed(),
            "a SIMULATED unit: engine time runs at the plant's speed"
        );
    }
    let service = Arc::new(Service::new(
        records.clone(),
        intake,
        config,
        Arc::new(clock),
        devices.clone(),
        live,
        feed,
        tokio::runtime::Handle::current(),
    )?);
    let conn = galen_appliance::dbus::serve_bus(bus, service.clone(), bus_name)
        .await
        .with_context(|| format!("serving {bus_name} on the {bus} bus"))?;
    // Handlers before READY: a stop that comes right after must still end cleanly.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    println!(
        "applianced ready: {} devices, {} batch(es) held after restart",
        unit.devices.len(),
        recovered.len()
    );

    // Pet the watchdog at half its interval, from the same loop that would notice a hang.
    let pet = sd_notify::watchdog_enabled().map_or(Duration::from_secs(3600), |d| d / 2);
    let mut watchdog = tokio::time::interval(pet);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = watchdog.tick() => { let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]); }
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    galen_appliance::supervisor::runtime::make_unit_safe(&devices).await;
    // Clients see the service leave first; the API's tasks still share the store, so the
    // final checkpoint is taken under its lock, which is held until the process exits.
    let _ = conn.release_name(bus_name.as_str()).await;
    let mut store =
        records.lock().map_err(|_| anyhow::anyhow!("the record store's lock was poisoned"))?;
    store.close(At::utc(clock.now()))?;
    println!("applianced stopped: outputs safe, final checkpoint taken");
    Ok(())
}

/// The recipe's resume policy for the phase a batch was in, from the recipe named when the
/// batch was created.
fn resume_policy(
    records: &Arc<Mutex<RecordStore>>,
    intake: &Intake,
    batch: &str,
    phase: &str,
) -> Option<String> {
    let entries = records.lock().ok()?.batch_entries(batch).ok()?;
    let created = entries.iter().find(|e| e.body.kind == galen_record::EntryKind::BatchCreated)?;
    let payload: serde_json::Value = serde_json::from_str(&created.body.payload).ok()?;
    let recipe = intake.load_installed(payload.get("recipe")?.as_str()?).ok()?;
    let revision = payload.get("revision")?.as_u64()?;
    if u64::from(recipe.revision) != revision {
        return Some(format!("not known (recipe revision {revision} is no longer installed)"));
    }
    let (_, _, p) = recipe.phases().find(|(_, _, p)| p.id.as_str() == phase)?;
    serde_json::to_value(p.resume).ok()?.as_str().map(str::to_owned)
}
