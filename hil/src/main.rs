//! `hil`: runs a simulated compounding unit by hand, or one scenario with a live log.

use std::io::BufRead as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use galen_devices::config::Simulation;
use galen_hil::plant::PlantConfig;
use galen_hil::plant::config::BalanceConfig;
use galen_hil::rig::{DEVICES, Rig, RigConfig};
use galen_hil::scenario::Scenario;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

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
    /// Runs a simulated unit until SIGINT (Ctrl-C) or SIGTERM: prints each device's port and
    /// the unit file, and takes commands on stdin.
    ///
    /// Talk to a port with the `devices` tool (e.g. `devices --config DIR/unit.toml ...`) or
    /// a plain terminal; the plant runs with default physics at `--speed`, which the unit file
    /// states in its `[simulation]` table so that a supervisor's clock can follow.
    #[command(after_help = galen_hil::console::HELP)]
    Rig {
        /// Directory for the port links and unit.toml (created; default: a fresh temporary
        /// directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Plant seconds per real second, 1 to 100.
        #[arg(long, default_value_t = 1.0, value_parser = speed)]
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

fn speed(text: &str) -> Result<f64, String> {
    let speed = text.parse().map_err(|_| format!("`{text}` is not a number"))?;
    Simulation::new(speed).map(Simulation::speed).map_err(|e| e.to_string())
}

/// Lines from stdin, read on a thread of their own: a blocking read cannot be cancelled, and a
/// tokio blocking task would hold up the runtime's shutdown until the next line. The channel
/// closes at end of input.
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                // Undecodable bytes become U+FFFD and get an answer like any other text; they do
                // not end the console.
                Ok(_) => {
                    if tx.blocking_send(String::from_utf8_lossy(&line).into_owned()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// The next console line; after end of input, never (the rig keeps running).
async fn next_line(lines: &mut Option<mpsc::Receiver<String>>) -> Option<String> {
    match lines {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn rig(dir: Option<PathBuf>, speed: f64) -> Result<()> {
    let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let (dir, _temp) = rig_dir(dir)?;
    // The unit an engineer or the demo drives stands in for a real one: it carries the balance
    // the example recipes are signed for, or the supervisor rightly refuses to run them.
    let plant = PlantConfig { balance: BalanceConfig::analytical(), ..PlantConfig::default() };
    let rig = Rig::start(RigConfig { speed, plant, ..RigConfig::default() }, &dir)?;
    println!("unit file: {}", rig.unit_path().display());
    for device in DEVICES {
        let pty = rig.pty(device)?.map(|p| p.display().to_string()).unwrap_or_default();
        println!("{device:12} {} -> {pty}", rig.link(device)?.display());
    }
    println!(
        "running at {speed}x; commands on stdin (see --help); Ctrl-C stops and removes the links"
    );
    let mut lines = Some(stdin_lines());
    let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            line = next_line(&mut lines) => match line {
                Some(line) => {
                    if let Some(answer) = galen_hil::console::answer(&rig, &line) {
                        println!("{answer}");
                    }
                }
                None => lines = None,
            },
            _ = every.tick() => {
                for e in rig.take_events() {
                    println!("[plant {:8.2} s] {}", e.t_s, e.text);
                }
                let s = rig.plant().snapshot();
                println!(
                    "[plant {:8.2} s] vessel {:.3} g liquid, {:.3} g solids at {:.1} °C, \
                     heater {:.1} W",
                    s.t_s, s.vessel_liquid_g, s.vessel_solids_g, s.vessel_temp_c, s.heater_w
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
