//! The simulated unit at run time: the `galen-devices` emulators served on ptys, all bound to
//! one [`Plant`] that a tokio task advances in real time, plus the unit configuration file
//! that points the supervisor (or a scenario's drivers) at them.
//!
//! This is the only module that does I/O. Layout of the rig directory:
//!
//! ```text
//! <dir>/unit.toml      the unit configuration (galen_devices::config format)
//! <dir>/balance        symlink → /dev/pts/N (MT-SICS or SBI)
//! <dir>/syringe        symlink → /dev/pts/N (New Era NE-1000)
//! <dir>/peristaltic    symlink → /dev/pts/N (Watson-Marlow 520)
//! <dir>/heater         symlink → /dev/pts/N (Eurotherm 3216, Modbus RTU)
//! <dir>/estop          symlink → /dev/pts/N (E-stop contact on a Modbus RTU input module)
//! ```
//!
//! The E-stop is wired as on a real unit: pressing it cuts the actuators' power by itself (the
//! plant's pumps stop and its heater gets nothing, whatever the emulators were told), and its
//! normally-closed monitoring contact, on input 0 of a digital-input module, is all the
//! supervisor sees of it. The instruments' serial interfaces stay powered, so their links
//! keep answering while it is pressed.
//!
//! The unit file names the symlinks, not the ptys, so a device that is unplugged and plugged
//! back (a new pty) keeps its path, as a udev `by-id` name does. It always carries a
//! `[simulation]` table with the rig's speed, even at 1.0: the table is what tells a
//! supervisor it is driving a simulated unit, and the speed is how fast its clock must run.
//!
//! **Lifetime:** everything lives as long as the [`Rig`]; dropping it stops the plant task,
//! closes every pty and removes the links and the unit file. **Concurrency:** the plant sits
//! behind one mutex, locked briefly by the tick task and by the emulators' weight source; no
//! lock is held across an await.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use galen_devices::balance::mt_sics::{MtSicsEmulator, MtSicsModel};
use galen_devices::balance::sbi::{SbiEmulator, SbiModel};
use galen_devices::balance::{PanSample, WeightSource};
use galen_devices::config::{InvalidSpeed, Simulation, UnitConfig};
use galen_devices::emulator::{Fault, FaultHandle};
use galen_devices::estop::EstopPlant;
use galen_devices::estop::modbus_di::{ModbusDiEmulator, ModbusDiModel};
use galen_devices::heater::HeaterPlant;
use galen_devices::heater::eurotherm::{EurothermEmulator, EurothermModel};
use galen_devices::pty::Served;
use galen_devices::pump::new_era::{NewEraEmulator, NewEraModel};
use galen_devices::pump::wm520::{Wm520Emulator, Wm520Model};
use galen_devices::pump::{Direction, PumpPort};
use tokio::time::Instant;

use crate::plant::{
    Condition, HandAdditionError, Plant, PlantConfig, PlantConfigError, PlantFault, PumpDrive,
    PumpId, Snapshot,
};

/// The balance's device name in the unit file.
pub const BALANCE: &str = "balance";
/// The syringe pump's device name.
pub const SYRINGE: &str = "syringe";
/// The peristaltic pump's device name.
pub const PERISTALTIC: &str = "peristaltic";
/// The heater controller's device name.
pub const HEATER: &str = "heater";
/// The emergency stop's input module.
pub const ESTOP: &str = "estop";
/// Every device, in the unit file's order.
pub const DEVICES: [&str; 5] = [BALANCE, SYRINGE, PERISTALTIC, HEATER, ESTOP];

/// Which balance dialect the rig's balance speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BalanceDialect {
    /// Mettler Toledo MT-SICS.
    #[default]
    MtSics,
    /// Sartorius SBI.
    Sbi,
}

/// How to build a rig.
#[derive(Debug, Clone, PartialEq)]
pub struct RigConfig {
    /// The balance's dialect.
    pub balance: BalanceDialect,
    /// Plant seconds per real second (heating takes minutes; tests want seconds), within
    /// [`Simulation::MIN_SPEED`]..=[`Simulation::MAX_SPEED`]: the unit file must be able to
    /// tell the supervisor.
    pub speed: f64,
    /// Real time between plant updates.
    pub tick: Duration,
    /// Per-request timeout written into the unit file.
    pub timeout: Duration,
    /// The physics.
    pub plant: PlantConfig,
}

impl Default for RigConfig {
    fn default() -> Self {
        Self {
            balance: BalanceDialect::MtSics,
            speed: 1.0,
            tick: Duration::from_millis(10),
            timeout: Duration::from_millis(500),
            plant: PlantConfig::default(),
        }
    }
}

/// A rig that could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RigError {
    /// The plant's parameters are not physical.
    #[error(transparent)]
    Plant(#[from] PlantConfigError),
    /// A pty, link or the unit file could not be made.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The unit file the rig wrote does not validate (a bug in the rig).
    #[error("the unit file the rig wrote is invalid: {0}")]
    UnitFile(#[from] galen_devices::config::ConfigError),
    /// No such device in the rig.
    #[error("no device `{0}` in the rig (devices: balance, syringe, peristaltic, heater, estop)")]
    NoDevice(String),
    /// A speed the unit file cannot carry.
    #[error(transparent)]
    Speed(#[from] InvalidSpeed),
    /// The plant refused a hand addition.
    #[error(transparent)]
    HandAddition(#[from] HandAdditionError),
}

/// Something done to the unit from outside: a wire fault, a cable, or physics.
#[derive(Debug, Clone, PartialEq)]
pub enum Injection {
    /// Close the device's pty: the port vanishes.
    Unplug(String),
    /// Open a fresh pty for the device and point its link at it.
    Replug(String),
    /// Switch the device's emulator to a wire fault (`Fault::None` clears it).
    Wire(String, Fault),
    /// A physical fault in the plant.
    Plant(PlantFault),
    /// Someone presses (`true`) or releases (`false`) the emergency stop.
    EmergencyStop(bool),
    /// The pharmacist weighs a solid into the vessel on the balance ([`Plant::add_by_hand`]).
    HandAddition {
        /// What (a name of letters, digits, '-', '_').
        material: String,
        /// How much, g.
        grams: f64,
    },
}

impl fmt::Display for Injection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unplug(d) => write!(f, "unplug {d}"),
            Self::Replug(d) => write!(f, "replug {d}"),
            Self::Wire(d, Fault::None) => write!(f, "{d}: wire fault cleared"),
            Self::Wire(d, fault) => write!(f, "{d}: wire fault {fault:?}"),
            Self::Plant(p) => write!(f, "plant: {p:?}"),
            Self::EmergencyStop(true) => write!(f, "emergency stop pressed"),
            Self::EmergencyStop(false) => write!(f, "emergency stop released"),
            Self::HandAddition { material, grams } => {
                write!(f, "{grams} g of {material} added by hand")
            }
        }
    }
}

/// When a scheduled injection fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// At this plant time, s.
    At(f64),
    /// The first tick the condition holds.
    When(Condition),
}

impl Trigger {
    /// Whether it fires in `s` (pure).
    pub fn fires(&self, s: &Snapshot) -> bool {
        match self {
            Self::At(t) => s.t_s >= *t,
            Self::When(c) => c.holds(s),
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::At(t) => write!(f, "at {t} s"),
            Self::When(c) => write!(f, "when {c}"),
        }
    }
}

/// Something the rig did, for the live log.
#[derive(Debug, Clone, PartialEq)]
pub struct RigEvent {
    /// Plant time, s.
    pub t_s: f64,
    /// What happened.
    pub text: String,
}

/// How well the plant task kept real time.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TickStats {
    /// Ticks run.
    pub ticks: u64,
    /// Ticks that came more than two periods after the previous one.
    pub overruns: u64,
    /// The longest gap between ticks.
    pub max_gap: Duration,
}

type Spawner = Arc<dyn Fn() -> io::Result<Served> + Send + Sync>;

struct Slot {
    served: Option<Served>,
    link: PathBuf,
    faults: FaultHandle,
    spawn: Spawner,
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot").field("served", &self.served).field("link", &self.link).finish()
    }
}

/// The plant, shared between the tick task, the weight source and the rig's owner.
#[derive(Debug, Clone)]
pub struct PlantHandle(Arc<Mutex<Plant>>);

impl PlantHandle {
    /// Locks the plant. Keep it short: the plant task and the balance wait on it.
    pub fn lock(&self) -> MutexGuard<'_, Plant> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The observable state now.
    pub fn snapshot(&self) -> Snapshot {
        self.lock().snapshot()
    }
}

impl WeightSource for PlantHandle {
    fn sample(&self) -> PanSample {
        self.lock().balance_sample()
    }
}

#[derive(Debug)]
struct Shared {
    plant: PlantHandle,
    ports: [PumpPort; 2],
    heater: HeaterPlant,
    controller: EurothermEmulator,
    estop: EstopPlant,
    slots: Mutex<BTreeMap<&'static str, Slot>>,
    events: Mutex<Vec<RigEvent>>,
    schedule: Mutex<Vec<(Trigger, Injection)>>,
    stats: Mutex<TickStats>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running simulated unit.
#[derive(Debug)]
pub struct Rig {
    shared: Arc<Shared>,
    tick: tokio::task::JoinHandle<()>,
    dir: PathBuf,
    unit_path: PathBuf,
    unit: UnitConfig,
}

impl Rig {
    /// Builds the plant, serves every emulator on a pty linked from `dir`, writes
    /// `dir/unit.toml` and starts the plant task. Must be called inside a tokio runtime.
    pub fn start(config: RigConfig, dir: &Path) -> Result<Self, RigError> {
        let io_err = |what: String| move |source| RigError::Io { what, source };
        let simulation = Simulation::new(config.speed)?;
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let plant = PlantHandle(Arc::new(Mutex::new(Plant::new(config.plant.clone())?)));
        let p = config.plant.clone();
        let ports = [PumpPort::new(), PumpPort::new()];
        let heater = HeaterPlant::new(p.ambient_c);

        // Every emulator is registered the same way; they share no trait, so a macro.
        macro_rules! spawner {
            ($name:expr, $e:expr) => {{
                let e = $e;
                let faults = e.faults();
                let spawn = serve_fn(move || {
                    let e = e.clone();
                    Served::spawn(move |io| async move { e.serve(io).await })
                });
                ($name, faults, spawn)
            }};
        }
        let mut spawners: Vec<(&'static str, FaultHandle, Spawner)> = Vec::new();
        let source = plant.clone();
        match config.balance {
            BalanceDialect::MtSics => {
                let model = MtSicsModel {
                    capacity_g: p.balance.capacity_g,
                    readability_g: p.balance.readability_g,
                    ..MtSicsModel::default()
                };
                let e = Arc::new(MtSicsEmulator::new(source, model));
                spawners.push(spawner!(BALANCE, e));
            }
            BalanceDialect::Sbi => {
                let model = SbiModel {
                    capacity_g: p.balance.capacity_g,
                    readability_g: p.balance.readability_g,
                    ..SbiModel::default()
                };
                let e = Arc::new(SbiEmulator::new(source, model));
                spawners.push(spawner!(BALANCE, e));
            }
        }
        let model = NewEraModel {
            max_rate_ml_min: p.syringe.max_rate_ml_min,
            power_on_alarm: false,
            ..NewEraModel::default()
        };
        let e = Arc::new(NewEraEmulator::new(ports[0].clone(), model));
        spawners.push(spawner!(SYRINGE, e));
        let model = Wm520Model {
            ml_per_rev: p.peristaltic.ml_per_rev,
            max_rpm: p.peristaltic.max_rpm,
            ..Wm520Model::default()
        };
        let e = Arc::new(Wm520Emulator::new(ports[1].clone(), model));
        spawners.push(spawner!(PERISTALTIC, e));
        let controller = EurothermEmulator::new(heater.clone(), EurothermModel::default());
        let e = controller.clone();
        spawners.push(spawner!(HEATER, e));
        let estop = EstopPlant::new();
        let e = ModbusDiEmulator::new(estop.clone(), ModbusDiModel::default());
        spawners.push(spawner!(ESTOP, e));

        let mut slots = BTreeMap::new();
        for (name, faults, spawn) in spawners {
            let link = dir.join(name);
            let mut served = spawn().map_err(io_err(format!("opening a pty for {name}")))?;
            served.link_at(&link).map_err(io_err(format!("linking {}", link.display())))?;
            slots.insert(name, Slot { served: Some(served), link, faults, spawn });
        }

        let unit_path = dir.join("unit.toml");
        let text = unit_file(&config, simulation, dir);
        let unit = UnitConfig::parse(&text, &unit_path)?;
        std::fs::write(&unit_path, &text)
            .map_err(io_err(format!("writing {}", unit_path.display())))?;

        let shared = Arc::new(Shared {
            plant,
            ports,
            heater,
            controller,
            estop,
            slots: Mutex::new(slots),
            events: Mutex::new(Vec::new()),
            schedule: Mutex::new(Vec::new()),
            stats: Mutex::new(TickStats::default()),
        });
        let tick = tokio::spawn(run_plant(shared.clone(), config.tick, config.speed));
        Ok(Self { shared, tick, dir: dir.to_owned(), unit_path, unit })
    }

    /// The unit configuration file the supervisor reads.
    pub fn unit_path(&self) -> &Path {
        &self.unit_path
    }

    /// The unit configuration, parsed.
    pub fn unit(&self) -> &UnitConfig {
        &self.unit
    }

    /// The rig directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The stable path of a device's port (a symlink).
    pub fn link(&self, device: &str) -> Result<PathBuf, RigError> {
        Ok(self.dir.join(self.name(device)?))
    }

    /// The pty a device is on now, if plugged in.
    pub fn pty(&self, device: &str) -> Result<Option<PathBuf>, RigError> {
        let name = self.name(device)?;
        Ok(lock(&self.shared.slots)[name].served.as_ref().map(|s| s.path().to_owned()))
    }

    /// The wire-fault switch of a device's emulator.
    pub fn faults(&self, device: &str) -> Result<FaultHandle, RigError> {
        let name = self.name(device)?;
        Ok(lock(&self.shared.slots)[name].faults.clone())
    }

    /// A device's recorded serial conversation since it was last plugged in.
    pub fn transcript(&self, device: &str) -> Result<String, RigError> {
        let name = self.name(device)?;
        Ok(lock(&self.shared.slots)[name]
            .served
            .as_ref()
            .map(|s| s.transcript().render())
            .unwrap_or_default())
    }

    /// The plant.
    pub fn plant(&self) -> &PlantHandle {
        &self.shared.plant
    }

    /// Does `injection` now.
    pub fn inject(&self, injection: Injection) -> Result<(), RigError> {
        self.shared.inject(&injection)
    }

    /// Does `injection` on the first tick `trigger` holds.
    pub fn schedule(&self, trigger: Trigger, injection: Injection) -> Result<(), RigError> {
        match &injection {
            Injection::Unplug(d) | Injection::Replug(d) | Injection::Wire(d, _) => {
                self.name(d)?;
            }
            Injection::Plant(_) | Injection::EmergencyStop(_) => {}
            // Refused now rather than when it fires, with nobody there to hear it.
            Injection::HandAddition { material, grams } => {
                self.plant().lock().config().check_hand_addition(material, *grams)?;
            }
        }
        lock(&self.shared.schedule).push((trigger, injection));
        Ok(())
    }

    /// What the rig has done since the last call (injections, replugs), oldest first.
    pub fn take_events(&self) -> Vec<RigEvent> {
        std::mem::take(&mut *lock(&self.shared.events))
    }

    /// How well the plant task has kept time.
    pub fn tick_stats(&self) -> TickStats {
        *lock(&self.shared.stats)
    }

    fn name(&self, device: &str) -> Result<&'static str, RigError> {
        DEVICES.into_iter().find(|d| *d == device).ok_or_else(|| RigError::NoDevice(device.into()))
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.tick.abort();
        lock(&self.shared.slots).clear();
        let _ = std::fs::remove_file(&self.unit_path);
    }
}

fn serve_fn(f: impl Fn() -> io::Result<Served> + Send + Sync + 'static) -> Spawner {
    Arc::new(f)
}

impl Shared {
    fn note(&self, text: String) {
        let t_s = self.plant.lock().time_s();
        lock(&self.events).push(RigEvent { t_s, text });
    }

    fn inject(&self, injection: &Injection) -> Result<(), RigError> {
        match injection {
            Injection::Unplug(d) => {
                let mut slots = lock(&self.slots);
                let slot =
                    slots.get_mut(d.as_str()).ok_or_else(|| RigError::NoDevice(d.clone()))?;
                slot.served = None;
            }
            Injection::Replug(d) => {
                let mut slots = lock(&self.slots);
                let slot =
                    slots.get_mut(d.as_str()).ok_or_else(|| RigError::NoDevice(d.clone()))?;
                slot.served = None;
                let mut served = (slot.spawn)()
                    .map_err(|source| RigError::Io { what: format!("replugging {d}"), source })?;
                served.link_at(&slot.link).map_err(|source| RigError::Io {
                    what: format!("linking {}", slot.link.display()),
                    source,
                })?;
                slot.served = Some(served);
            }
            Injection::Wire(d, fault) => {
                let slots = lock(&self.slots);
                let slot = slots.get(d.as_str()).ok_or_else(|| RigError::NoDevice(d.clone()))?;
                slot.faults.set(fault.clone());
            }
            Injection::Plant(fault) => self.plant.lock().apply(*fault),
            Injection::EmergencyStop(pressed) => self.estop.set_pressed(*pressed),
            Injection::HandAddition { material, grams } => {
                self.plant.lock().add_by_hand(material, *grams)?;
            }
        }
        self.note(format!("inject: {injection}"));
        Ok(())
    }
}

/// The plant task: every `tick`, read the emulators' commands, advance the plant to
/// `speed × elapsed`, write the results back and fire due injections.
async fn run_plant(shared: Arc<Shared>, tick: Duration, speed: f64) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let start = Instant::now();
    let mut last = start;
    loop {
        interval.tick().await;
        let now = Instant::now();
        {
            let mut stats = lock(&shared.stats);
            let gap = now - last;
            stats.ticks += 1;
            if gap > tick * 2 {
                stats.overruns += 1;
            }
            stats.max_gap = stats.max_gap.max(gap);
        }
        last = now;
        let snapshot = {
            let mut plant = shared.plant.lock();
            // The hardwired E-stop cuts the actuators' power, whatever they were told.
            let powered = !shared.estop.pressed();
            for id in PumpId::ALL {
                let c = shared.ports[index(id)].commanded();
                plant.set_pump_drive(
                    id,
                    PumpDrive {
                        running: c.running && powered,
                        forward: c.direction == Direction::Forward,
                        rate_ml_min: c.rate_ml_min,
                        remaining_ml: c.remaining_ml,
                    },
                );
            }
            // The controller's loop runs between requests too, as a real one does, and its
            // integral advances in plant time.
            let to_s = (now - start).as_secs_f64() * speed;
            shared.controller.control_for(to_s - plant.time_s());
            plant.set_heater_output(if powered { shared.heater.output() } else { 0.0 });
            let report = plant.advance_to(to_s);
            for id in PumpId::ALL {
                let out = report.pump(id);
                let port = &shared.ports[index(id)];
                port.add_dispensed(out.counted_ml);
                if let Some(alarm) = out.alarm {
                    port.raise_alarm(alarm);
                }
            }
            shared.heater.set_pv(plant.sensor_c());
            shared.heater.set_sensor_break(plant.sensor_broken());
            plant.snapshot()
        };
        let due: Vec<(Trigger, Injection)> = {
            let mut schedule = lock(&shared.schedule);
            let (due, keep) =
                std::mem::take(&mut *schedule).into_iter().partition(|(t, _)| t.fires(&snapshot));
            *schedule = keep;
            due
        };
        for (trigger, injection) in due {
            shared.note(format!("trigger {trigger}"));
            if let Err(e) = shared.inject(&injection) {
                shared.note(format!("injection failed: {e}"));
            }
        }
    }
}

fn index(id: PumpId) -> usize {
    match id {
        PumpId::Syringe => 0,
        PumpId::Peristaltic => 1,
    }
}

/// The unit configuration for a rig in `dir` (galen_devices::config format).
fn unit_file(config: &RigConfig, simulation: Simulation, dir: &Path) -> String {
    let p = &config.plant;
    let port = |name: &str| dir.join(name).display().to_string();
    let timeout = config.timeout.as_millis().clamp(10, 60_000);
    let serial = r#"serial = { baud = 9600, data_bits = 8, parity = "none", stop_bits = 1 }"#;
    let balance = match config.balance {
        BalanceDialect::MtSics => "mt-sics",
        BalanceDialect::Sbi => "sbi",
    };
    let max_volume = p.syringe.syringe_ml.max(p.peristaltic.reservoir_ml);
    format!(
        "# Written by `hil` for a simulated unit; ports are links to ptys in this directory.\n\n\
         # Plant seconds per real second: the supervisor's clock must run at this speed.\n\
         [simulation]\nspeed = {speed:?}\n\n\
         [[device]]\nname = \"{BALANCE}\"\nkind = \"balance\"\nprotocol = \"{balance}\"\n\
         port = {bp:?}\ntimeout_ms = {timeout}\n{serial}\n\
         calibration = {{ readability_g = {read:?} }}\nlimits = {{ capacity_g = {cap:?} }}\n\n\
         [[device]]\nname = \"{SYRINGE}\"\nkind = \"pump\"\nprotocol = \"new-era\"\n\
         port = {sp:?}\naddress = 0\ntimeout_ms = {timeout}\n{serial}\n\
         calibration = {{ syringe_diameter_mm = {dia:?} }}\n\
         limits = {{ max_rate_ml_min = {srate:?}, max_volume_ml = {svol:?} }}\n\n\
         [[device]]\nname = \"{PERISTALTIC}\"\nkind = \"pump\"\nprotocol = \"wm520\"\n\
         port = {pp:?}\naddress = 1\ntimeout_ms = {timeout}\n{serial}\n\
         calibration = {{ ml_per_rev = {mlrev:?} }}\n\
         limits = {{ max_rate_ml_min = {prate:?}, max_volume_ml = {max_volume:?} }}\n\n\
         [[device]]\nname = \"{HEATER}\"\nkind = \"heater\"\nprotocol = \"eurotherm\"\n\
         port = {hp:?}\naddress = 1\ntimeout_ms = {timeout}\n{serial}\n\
         calibration = {{ decimals = {hdec} }}\n\
         limits = {{ min_temperature_c = 0.0, max_temperature_c = 200.0 }}\n\n\
         [[device]]\nname = \"{ESTOP}\"\nkind = \"emergency-stop\"\nprotocol = \"modbus-di\"\n\
         port = {ep:?}\naddress = {eaddr}\ntimeout_ms = {timeout}\n{serial}\n\
         input = {einput}\ncontact = \"normally-closed\"\n",
        speed = simulation.speed(),
        bp = port(BALANCE),
        read = p.balance.readability_g,
        cap = p.balance.capacity_g,
        sp = port(SYRINGE),
        dia = p.syringe.diameter_mm,
        srate = p.syringe.max_rate_ml_min,
        svol = p.syringe.syringe_ml,
        pp = port(PERISTALTIC),
        mlrev = p.peristaltic.ml_per_rev,
        prate = p.peristaltic.ml_per_rev * p.peristaltic.max_rpm,
        hp = port(HEATER),
        hdec = EurothermModel::default().decimals,
        ep = port(ESTOP),
        eaddr = ModbusDiModel::default().address,
        einput = ModbusDiModel::default().estop_input,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_file_names_the_links_and_the_speed_and_validates() {
        let dir = Path::new("/run/galen-rig");
        let text = unit_file(&RigConfig::default(), Simulation::new(10.0).unwrap(), dir);
        insta::assert_snapshot!(text);
        let unit = UnitConfig::parse(&text, &dir.join("unit.toml")).unwrap();
        assert_eq!(unit.speed(), 10.0);
        let at_real_time = unit_file(&RigConfig::default(), Simulation::new(1.0).unwrap(), dir);
        let unit = UnitConfig::parse(&at_real_time, &dir.join("unit.toml")).unwrap();
        assert_eq!(unit.simulation.map(Simulation::speed), Some(1.0), "still marked simulated");
    }
}
