//! `applianced`, the supervisor daemon.
//!
//! `applianced commission` creates the record store once, sealing a new record key in the TPM.
//! `applianced run` (the systemd service) starts in this order: open the records and check
//! them against the TPM (a rollback keeps the records but refuses new batches); start one
//! actor per configured device; make the unit safe and hold every batch that was interrupted;
//! tell systemd it is ready; pet the watchdog; on SIGTERM or SIGINT, take a final checkpoint
//! and stop. The D-Bus API (issue 8) attaches here.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use galen_appliance::records::{At, FirstAdmin, Integrity, RecordStore};
use galen_appliance::supervisor::recovery::recover;
use galen_appliance::supervisor::runtime::{SystemClock, WallClock};
use galen_appliance::supervisor::start_devices;
use galen_appliance::tpm::{Tpm, TpmConfig};
use galen_devices::config::UnitConfig;
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
    /// Run the supervisor until SIGTERM.
    Run {
        /// The unit configuration (which device on which port).
        #[arg(long, default_value = "/etc/galen/unit.toml")]
        unit: PathBuf,
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
        Cmd::Run { unit } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the runtime")
            .and_then(|rt| rt.block_on(run(&cli, unit))),
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

async fn run(cli: &Cli, unit_path: &std::path::Path) -> Result<()> {
    let unit = UnitConfig::load(unit_path)?;
    let clock = SystemClock;
    let store = RecordStore::open(&cli.db, &cli.device_id, tpm(cli)?, At::utc(clock.now()))?;
    match store.integrity() {
        Integrity::Sound => tracing::info!(entries = store.len(), "records verified"),
        Integrity::Compromised(why) => {
            tracing::error!("records failed the start-up check; new batches are refused: {why}")
        }
    }
    let records = Arc::new(Mutex::new(store));
    let (observed_tx, mut observed) = tokio::sync::mpsc::channel(256);
    let devices = start_devices(&unit, &observed_tx)?;
    tracing::info!(devices = unit.devices.len(), "device actors started");
    // Recipes' resume policies are looked up once batches run through the D-Bus API (issue 8).
    let recovered = recover(&devices, &records, &clock, |_, _| None).await?;
    for r in &recovered {
        tracing::warn!(batch = %r.batch_id, was = %r.was, phase = ?r.phase, "held after restart");
    }
    // Until the API attaches, readings are drained so the actors never block.
    tokio::spawn(async move { while observed.recv().await.is_some() {} });
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
    let store = Arc::try_unwrap(records)
        .map_err(|_| anyhow::anyhow!("the record store is still in use"))?
        .into_inner()
        .map_err(|_| anyhow::anyhow!("the record store's lock was poisoned"))?;
    store.shutdown(At::utc(clock.now()))?;
    println!("applianced stopped: outputs safe, final checkpoint taken");
    Ok(())
}
