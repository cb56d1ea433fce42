//! `hil`: runs a simulated compounding unit by hand, or one scenario with a live log.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use galen_hil::rig::{DEVICES, Rig, RigConfig};
use galen_hil::scenario::Scenario;

/// A simulated compounding unit: the balance, pumps and heater answer over real serial framing
/// on ptys, and a plant model decides what they measure.
#[derive(Debug, Parser)]
#[command(name = "hil", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a simulated unit until Ctrl-C: prints each device's port and the unit file.
    ///
    /// Talk to a port with the `devices` tool (e.g. `devices --config DIR/unit.toml ...`) or
    /// a plain terminal; the plant runs in real time with default physics.
    Rig {
        /// Directory for the port links and unit.toml (created; default: a fresh temporary
        /// directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Plant seconds per real second.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
    },
    /// Runs one scenario file and prints its live log; exits non-zero if it fails.
    Scenario {
        /// The scenario (TOML; format in the `galen_hil::scenario` module docs; examples in
        /// hil/scenarios/).
        file: PathBuf,
        /// Directory for the rig (default: a fresh temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Rig { dir, speed } => rig(dir, speed).await,
            Command::Scenario { file, dir } => scenario(&file, dir).await,
        }
    })
}

/// A directory for the rig: the given one, or a temporary one removed at exit.
fn rig_dir(dir: Option<PathBuf>) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    Ok(match dir {
        Some(d) => (d, None),
        None => {
            let t = tempfile::Builder::new().prefix("galen-hil-").tempdir()?;
            (t.path().to_owned(), Some(t))
        }
    })
}

async fn rig(dir: Option<PathBuf>, speed: f64) -> Result<()> {
    if !(speed.is_finite() && (0.1..=100.0).contains(&speed)) {
        bail!("--speed must be between 0.1 and 100");
    }
    let (dir, _temp) = rig_dir(dir)?;
    let rig = Rig::start(RigConfig { speed, ..RigConfig::default() }, &dir)?;
    println!("unit file: {}", rig.unit_path().display());
    for device in DEVICES {
        let pty = rig.pty(device)?.map(|p| p.display().to_string()).unwrap_or_default();
        println!("{device:12} {} -> {pty}", rig.link(device)?.display());
    }
    println!("running; Ctrl-C stops and removes the links");
    let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = every.tick() => {
                for e in rig.take_events() {
                    println!("[plant {:8.2} s] {}", e.t_s, e.text);
                }
                let s = rig.plant().snapshot();
                println!(
                    "[plant {:8.2} s] vessel {:.3} g at {:.1} °C, heater {:.1} W",
                    s.t_s, s.vessel_liquid_g, s.vessel_temp_c, s.heater_w
                );
            }
        }
    }
    drop(rig);
    println!("stopped");
    Ok(())
}

async fn scenario(file: &std::path::Path, dir: Option<PathBuf>) -> Result<()> {
    let scenario = Scenario::load(file)?;
    let (dir, _temp) = rig_dir(dir)?;
    let report = galen_hil::scenario::run::run(&scenario, &dir, true).await?;
    if !report.passed {
        bail!("scenario `{}` failed", report.name);
    }
    Ok(())
}
