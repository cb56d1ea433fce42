//! `devices`: the service engineer's tool. Identify an instrument, read or stream weight, tare,
//! run a pump for a volume, read and set temperature, on a real port or an emulator's pty; and
//! `devices emulate`, which serves an emulator on a fresh pty so all of it can be tried without
//! hardware.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use galen_devices::balance::mt_sics::{MtSicsBalance, MtSicsEmulator, MtSicsModel};
use galen_devices::balance::sbi::{SbiBalance, SbiEmulator, SbiModel, SbiOptions};
use galen_devices::balance::{Balance, ManualWeight, Wait};
use galen_devices::config::{BalanceProtocol, DeviceSpec, PumpProtocol, UnitConfig};
use galen_devices::estop::modbus_di::{
    ModbusDiEmulator, ModbusDiEstop, ModbusDiModel, ModbusDiOptions,
};
use galen_devices::estop::{EmergencyStop, EstopPlant};
use galen_devices::heater::eurotherm::{
    EurothermEmulator, EurothermHeater, EurothermModel, EurothermOptions,
};
use galen_devices::heater::{Heater, HeaterPlant};
use galen_devices::link::{LinkPolicy, SerialConnector, SerialSettings};
use galen_devices::pty::Served;
use galen_devices::pump::new_era::codec::Mode;
use galen_devices::pump::new_era::{NewEraEmulator, NewEraModel, NewEraOptions, NewEraPump};
use galen_devices::pump::wm520::{Wm520Emulator, Wm520Model, Wm520Options, Wm520Pump};
use galen_devices::pump::{Direction, Motion, Pump, PumpPort};
use galen_devices::units::{Celsius, FlowRate, Volume, Weight};
use galen_devices::{DeviceResult, balance::Identity};

/// Talk to a Galen unit's instruments (or their emulators) over serial.
///
/// Name a device from the unit configuration (`--config unit.toml --device balance`) or give a
/// port and protocol directly (`--port /dev/ttyUSB0 --protocol mt-sics`). To try it without
/// hardware, run `devices emulate mt-sics` in one terminal and use the path it prints.
#[derive(Debug, Parser)]
#[command(name = "devices", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProtocolArg {
    /// Mettler Toledo MT-SICS balance.
    MtSics,
    /// Sartorius SBI balance.
    Sbi,
    /// New Era NE-1000 syringe pump.
    NewEra,
    /// Watson-Marlow 520 peristaltic pump.
    Wm520,
    /// Eurotherm 3216 over Modbus RTU.
    Eurotherm,
    /// Emergency-stop contact on a Modbus RTU digital-input module (input 0, normally closed).
    ModbusDi,
}

#[derive(Debug, Args)]
struct Target {
    /// Unit configuration file; use with --device.
    #[arg(long, requires = "device", conflicts_with_all = ["port", "protocol"])]
    config: Option<PathBuf>,
    /// Device name in the configuration file.
    #[arg(long)]
    device: Option<String>,
    /// Serial port (or an emulator's pty); use with --protocol.
    #[arg(long, requires = "protocol")]
    port: Option<String>,
    /// Protocol spoken on --port.
    #[arg(long, value_enum)]
    protocol: Option<ProtocolArg>,
    /// Bits per second (with --port).
    #[arg(long, default_value_t = 9600)]
    baud: u32,
    /// Device address: New Era 0–99, Watson-Marlow 1–16, Eurotherm 1–247 (with --port).
    #[arg(long)]
    address: Option<u8>,
    /// Syringe inside diameter in mm (New Era, with --port).
    #[arg(long, default_value_t = 14.43)]
    syringe_diameter_mm: f64,
    /// mL per revolution of the tube (Watson-Marlow, with --port).
    #[arg(long, default_value_t = 1.0)]
    ml_per_rev: f64,
    /// Decimals the controller displays, which scale every register (Eurotherm, with --port;
    /// required there: a wrong guess reads 80.0 °C as 800 °C).
    #[arg(long)]
    decimals: Option<u8>,
    /// Per-request timeout in milliseconds (with --port).
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Say what the instrument is (balance: model, serial, capacity; pump: version or status;
    /// heater: temperature and status bits).
    Identify(Target),
    /// Read the weight once, or stream it.
    Weight {
        #[command(flatten)]
        target: Target,
        /// Wait for a stable reading.
        #[arg(long)]
        stable: bool,
        /// Print this many continuous readings instead of one.
        #[arg(long, value_name = "N")]
        stream: Option<u32>,
    },
    /// Zero the balance.
    Zero(Target),
    /// Tare the balance with what is on the pan, or preset or clear the tare.
    Tare {
        #[command(flatten)]
        target: Target,
        /// Preset this tare in grams instead.
        #[arg(long, value_name = "GRAMS", conflicts_with = "clear")]
        preset: Option<f64>,
        /// Clear the tare.
        #[arg(long)]
        clear: bool,
    },
    /// Run a pump at a rate for a volume and follow it until it stops.
    Pump {
        #[command(flatten)]
        target: Target,
        /// Rate in mL/min.
        #[arg(long)]
        rate: f64,
        /// Volume in mL.
        #[arg(long)]
        volume: f64,
        /// Pump in reverse (New Era: withdraw).
        #[arg(long)]
        reverse: bool,
    },
    /// Stop a pump.
    Stop(Target),
    /// Read a heater's temperature, and optionally set its setpoint.
    Temperature {
        #[command(flatten)]
        target: Target,
        /// New setpoint in °C (written to the comms setpoint, never to EEPROM).
        #[arg(long, value_name = "CELSIUS")]
        set: Option<f64>,
        /// Switch the controller to automatic after setting.
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Force the output to zero (manual, 0 %).
        #[arg(long)]
        disable: bool,
    },
    /// Read an emergency stop's monitoring contact.
    Estop(Target),
    /// Serve an emulator on a fresh pty and print its path, until Ctrl-C.
    Emulate {
        /// Which instrument to emulate.
        #[arg(value_enum)]
        protocol: ProtocolArg,
        /// Also make this symlink to the pty (a stable name for scripts).
        #[arg(long)]
        link: Option<PathBuf>,
        /// Balances: grams on the pan.
        #[arg(long, default_value_t = 12.3456)]
        grams: f64,
    },
}

/// A resolved device: its name, protocol, connector and settings.
struct Resolved {
    name: String,
    connector: SerialConnector,
    policy: LinkPolicy,
    driver: Driver,
}

enum Driver {
    MtSics,
    Sbi(SbiOptions),
    NewEra(NewEraOptions),
    Wm520(Wm520Options),
    Eurotherm(EurothermOptions),
    ModbusDi(ModbusDiOptions),
}

fn resolve(t: &Target) -> Result<Resolved> {
    if let Some(path) = &t.config {
        let config = UnitConfig::load(path)?;
        let name = t.device.as_deref().expect("clap requires --device with --config");
        let d = config
            .device(name)
            .with_context(|| format!("{}: no device named {name:?}", path.display()))?;
        let driver = match &d.spec {
            DeviceSpec::Balance { protocol: BalanceProtocol::MtSics, .. } => Driver::MtSics,
            DeviceSpec::Balance { protocol: BalanceProtocol::Sbi, capacity_g, readability_g } => {
                Driver::Sbi(SbiOptions {
                    capacity: Some(Weight::grams(*capacity_g)),
                    readability: readability_g.map(Weight::grams),
                    ..SbiOptions::default()
                })
            }
            DeviceSpec::Pump { protocol: PumpProtocol::NewEra(o), .. } => Driver::NewEra(*o),
            DeviceSpec::Pump { protocol: PumpProtocol::Wm520(o), .. } => Driver::Wm520(*o),
            DeviceSpec::Heater { options, .. } => Driver::Eurotherm(*options),
            DeviceSpec::EmergencyStop { options } => Driver::ModbusDi(*options),
        };
        return Ok(Resolved {
            name: d.name.clone(),
            connector: d.connector(),
            policy: d.policy(),
            driver,
        });
    }
    let (Some(port), Some(protocol)) = (&t.port, t.protocol) else {
        bail!("say which device: --config FILE --device NAME, or --port PATH --protocol NAME");
    };
    let driver = match protocol {
        ProtocolArg::MtSics => Driver::MtSics,
        ProtocolArg::Sbi => Driver::Sbi(SbiOptions::default()),
        ProtocolArg::NewEra => Driver::NewEra(NewEraOptions {
            mode: Mode::Basic,
            address: t.address,
            syringe_diameter_mm: t.syringe_diameter_mm,
            limits: galen_devices::pump::PumpLimits::NONE,
        }),
        ProtocolArg::Wm520 => Driver::Wm520(Wm520Options {
            address: t.address.unwrap_or(1),
            ml_per_rev: t.ml_per_rev,
            ..Wm520Options::default()
        }),
        ProtocolArg::Eurotherm => {
            let Some(decimals) = t.decimals.filter(|d| *d <= 3) else {
                bail!("eurotherm needs --decimals (0 to 3): the controller's display resolution");
            };
            Driver::Eurotherm(EurothermOptions {
                address: t.address.unwrap_or(1),
                decimals,
                ..EurothermOptions::default()
            })
        }
        ProtocolArg::ModbusDi => Driver::ModbusDi(ModbusDiOptions {
            address: t.address.unwrap_or(1),
            ..ModbusDiOptions::default()
        }),
    };
    let policy =
        LinkPolicy { timeout: Duration::from_millis(t.timeout_ms), ..LinkPolicy::default() };
    Ok(Resolved {
        name: port.clone(),
        connector: SerialConnector::new(port.clone(), SerialSettings::n81(t.baud)),
        policy,
        driver,
    })
}

/// Flattens the two failure kinds for a human, keeping what each means.
fn done<T>(result: DeviceResult<T>) -> Result<T> {
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(refusal)) => bail!("the device refused: {refusal}"),
        Err(link) => bail!("the link failed: {link}"),
    }
}

fn print_identity(id: &Identity) {
    println!("model:       {}", id.model);
    println!("serial:      {}", id.serial);
    println!("firmware:    {}", id.firmware.as_deref().unwrap_or("-"));
    println!("capacity:    {}", id.capacity.map_or("-".into(), |w| w.to_string()));
    println!("readability: {}", id.readability.map_or("-".into(), |w| w.to_string()));
}

async fn balance_command<B: Balance>(mut b: B, command: &Command) -> Result<()> {
    match command {
        Command::Identify(_) => print_identity(&done(b.identify().await)?),
        Command::Weight { stable, stream: None, .. } => {
            let wait = if *stable { Wait::Stable } else { Wait::Immediate };
            println!("{}", done(b.read(wait).await)?);
        }
        Command::Weight { stream: Some(n), .. } => {
            done(b.start_stream().await)?;
            for _ in 0..*n {
                println!("{}", done(b.next_streamed().await)?);
            }
            done(b.stop_stream().await)?;
        }
        Command::Zero(_) => {
            done(b.zero().await)?;
            println!("zeroed");
        }
        Command::Tare { clear: true, .. } => {
            done(b.clear_tare().await)?;
            println!("tare cleared");
        }
        Command::Tare { preset: Some(grams), .. } => {
            done(b.preset_tare(Weight::grams(*grams)).await)?;
            println!("tare preset to {grams} g");
        }
        Command::Tare { .. } => match done(b.tare().await)? {
            Some(w) => println!("tared: {w}"),
            None => println!("tared"),
        },
        _ => bail!("a balance cannot do that; see `devices --help`"),
    }
    Ok(())
}

async fn pump_command<P: Pump>(mut p: P, command: &Command) -> Result<()> {
    match command {
        Command::Pump { rate, volume, reverse, .. } => {
            let rate = FlowRate::new(*rate)?;
            let volume = Volume::new(*volume)?;
            done(p.stop().await)?;
            done(p.clear_dispensed().await)?;
            done(
                p.set_direction(if *reverse { Direction::Reverse } else { Direction::Forward })
                    .await,
            )?;
            // From here on the pump may be running: every way out stops it (best effort),
            // errors and Ctrl-C included.
            let followed = tokio::select! {
                result = run_and_follow(&mut p, rate, volume) => result,
                signal = tokio::signal::ctrl_c() => {
                    signal.context("waiting for Ctrl-C")?;
                    Err(anyhow::anyhow!("interrupted"))
                }
            };
            if let Err(e) = followed {
                match p.stop().await {
                    Ok(Ok(())) => eprintln!("pump stopped"),
                    Ok(Err(r)) => eprintln!("stopping the pump: refused: {r}"),
                    Err(l) => eprintln!("stopping the pump: link failed: {l}"),
                }
                return Err(e);
            }
            println!("done");
        }
        Command::Stop(_) => {
            done(p.stop().await)?;
            println!("stopped");
        }
        Command::Identify(_) => {
            let status = done(p.status().await)?;
            println!("{status:?}");
            for alarm in p.take_alarms() {
                println!("alarm acknowledged: {alarm}");
            }
        }
        _ => bail!("a pump cannot do that; see `devices --help`"),
    }
    Ok(())
}

/// Sets the rate, starts the volume and follows it until the pump stops.
async fn run_and_follow<P: Pump>(p: &mut P, rate: FlowRate, volume: Volume) -> Result<()> {
    done(p.set_rate(rate).await)?;
    done(p.dispense(volume).await)?;
    println!("running: {rate} for {volume}");
    let mut polls = 0u64;
    loop {
        polls += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
        let status = done(p.status().await)?;
        let moved = done(p.dispensed().await)?;
        // Once a second is plenty for a person; the last line always shows.
        let running = matches!(status.motion, Motion::Running(_));
        if polls.is_multiple_of(4) || !running {
            println!("{:?}: forward {} reverse {}", status.motion, moved.forward, moved.reverse);
        }
        if let Some(alarm) = status.alarm {
            bail!("pump alarm: {alarm}");
        }
        if !running {
            return Ok(());
        }
    }
}

async fn heater_command<H: Heater>(mut h: H, command: &Command) -> Result<()> {
    match command {
        Command::Temperature { set, enable, disable, .. } => {
            if let Some(c) = set {
                done(h.set_setpoint(Celsius::new(*c)?).await)?;
                println!("setpoint set to {c} °C");
            }
            if *enable {
                done(h.enable().await)?;
                println!("enabled (automatic)");
            }
            if *disable {
                done(h.disable().await)?;
                println!("disabled (manual, 0 %)");
            }
            println!("temperature:      {}", done(h.process_value().await)?);
            println!("working setpoint: {}", done(h.working_setpoint().await)?);
            println!("output:           {}", done(h.output().await)?);
        }
        Command::Identify(_) => {
            println!("temperature: {}", done(h.process_value().await)?);
            println!("status:      {:?}", done(h.status().await)?);
        }
        _ => bail!("a heater cannot do that; see `devices --help`"),
    }
    Ok(())
}

async fn estop_command<E: EmergencyStop>(mut e: E, command: &Command) -> Result<()> {
    match command {
        Command::Estop(_) | Command::Identify(_) => {
            println!("{:?}", done(e.state().await)?);
        }
        _ => bail!("an emergency stop can only be read; see `devices --help`"),
    }
    Ok(())
}

async fn emulate(protocol: ProtocolArg, link: Option<PathBuf>, grams: f64) -> Result<()> {
    let mut background = Vec::new();
    let mut served = match protocol {
        ProtocolArg::MtSics => {
            let e = Arc::new(MtSicsEmulator::new(ManualWeight::new(grams), MtSicsModel::default()));
            Served::spawn(move |io| async move { e.serve(io).await })?
        }
        ProtocolArg::Sbi => {
            let e = Arc::new(SbiEmulator::new(ManualWeight::new(grams), SbiModel::default()));
            Served::spawn(move |io| async move { e.serve(io).await })?
        }
        ProtocolArg::NewEra => {
            let port = PumpPort::new();
            background.push(port.spawn_ideal_motion(Duration::from_millis(20)));
            let e = Arc::new(NewEraEmulator::new(port, NewEraModel::default()));
            Served::spawn(move |io| async move { e.serve(io).await })?
        }
        ProtocolArg::Wm520 => {
            let port = PumpPort::new();
            background.push(port.spawn_ideal_motion(Duration::from_millis(20)));
            let e = Arc::new(Wm520Emulator::new(port, Wm520Model::default()));
            Served::spawn(move |io| async move { e.serve(io).await })?
        }
        ProtocolArg::Eurotherm => {
            let plant = HeaterPlant::new(21.0);
            background.push(plant.spawn_simple_thermal(
                Duration::from_millis(100),
                21.0,
                0.5,
                0.01,
            ));
            let e = EurothermEmulator::new(plant, EurothermModel::default());
            Served::spawn(move |io| async move { e.serve(io).await })?
        }
        // Released; nothing presses it here (the hil rig's console does).
        ProtocolArg::ModbusDi => {
            let e = ModbusDiEmulator::new(EstopPlant::new(), ModbusDiModel::default());
            Served::spawn(move |io| async move { e.serve(io).await })?
        }
    };
    if let Some(link) = &link {
        served.link_at(link).with_context(|| format!("linking {}", link.display()))?;
    }
    let name = protocol.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default();
    println!("{}", served.path().display());
    eprintln!(
        "emulating {name} on {}{}; Ctrl-C to stop",
        served.path().display(),
        link.map(|l| format!(" (also {})", l.display())).unwrap_or_default()
    );
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    for task in background {
        task.abort();
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    // One plain line for a person at the unit; never a backtrace, whatever RUST_BACKTRACE says.
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let target = match &cli.command {
        Command::Emulate { protocol, link, grams } => {
            return emulate(*protocol, link.clone(), *grams).await;
        }
        Command::Identify(t) | Command::Zero(t) | Command::Stop(t) | Command::Estop(t) => t,
        Command::Weight { target, .. }
        | Command::Tare { target, .. }
        | Command::Pump { target, .. }
        | Command::Temperature { target, .. } => target,
    };
    let r = resolve(target)?;
    let (name, c, policy) = (r.name, r.connector, r.policy);
    match r.driver {
        Driver::MtSics => balance_command(MtSicsBalance::new(name, c, policy), &cli.command).await,
        Driver::Sbi(o) => balance_command(SbiBalance::new(name, c, policy, o), &cli.command).await,
        Driver::NewEra(o) => pump_command(NewEraPump::new(name, c, policy, o), &cli.command).await,
        Driver::Wm520(o) => pump_command(Wm520Pump::new(name, c, policy, o), &cli.command).await,
        Driver::Eurotherm(o) => {
            heater_command(EurothermHeater::new(name, c, policy, o), &cli.command).await
        }
        Driver::ModbusDi(o) => {
            estop_command(ModbusDiEstop::new(name, c, policy, o), &cli.command).await
        }
    }
}
