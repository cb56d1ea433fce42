//! The supervisor's runtime: device actors built from the unit configuration, and the loop
//! that runs a batch's engine against them and records what happens.

pub mod actors;
pub mod live;
pub mod recovery;
pub mod runtime;

use std::time::Duration;

use galen_devices::balance::mt_sics::MtSicsBalance;
use galen_devices::balance::sbi::{SbiBalance, SbiOptions};
use galen_devices::config::{BalanceProtocol, DeviceSpec, PumpProtocol, UnitConfig};
use galen_devices::estop::modbus_di::ModbusDiEstop;
use galen_devices::heater::eurotherm::EurothermHeater;
use galen_devices::pump::new_era::NewEraPump;
use galen_devices::pump::wm520::Wm520Pump;
use galen_devices::units::Weight;
use tokio::sync::mpsc;

use crate::engine::batch::Pump;
use crate::engine::plan::Instruments;
use actors::Observed;
use runtime::Devices;

/// How often the balance is read; the dispense controller's loop rate.
pub const BALANCE_PERIOD: Duration = Duration::from_millis(100);
/// How often the emergency stop's contact is read, in wall time whatever the simulation
/// speed: the supervisor learns of a press within this (the hardwired circuit has cut the
/// power already).
pub const ESTOP_PERIOD: Duration = Duration::from_millis(100);
/// How often the temperature is read.
pub const HEATER_PERIOD: Duration = Duration::from_millis(500);

/// Why the unit's devices could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    #[error("the unit configuration has no {0}")]
    Missing(&'static str),
    #[error("the unit configuration has more than one {0}; which to use is ambiguous")]
    Several(&'static str),
}

/// What the configured instruments can do, for checking a recipe's equipment and planning.
pub fn instruments(unit: &UnitConfig) -> Instruments {
    let mut i = Instruments::default();
    for d in &unit.devices {
        match &d.spec {
            DeviceSpec::Pump { protocol: PumpProtocol::NewEra(_), max_rate_ml_min, .. } => {
                i.syringe_max_ml_min = Some(*max_rate_ml_min);
            }
            DeviceSpec::Pump { protocol: PumpProtocol::Wm520(_), max_rate_ml_min, .. } => {
                i.peristaltic_max_ml_min = Some(*max_rate_ml_min);
            }
            DeviceSpec::Balance { capacity_g, readability_g, .. } => {
                i.balance_capacity_g = Some(*capacity_g);
                i.balance_readability_g = *readability_g;
            }
            DeviceSpec::Heater { min_c, max_c, .. } => i.heater_c = Some((*min_c, *max_c)),
            // No recipe asks for an E-stop: every unit must stop, whatever it makes.
            DeviceSpec::EmergencyStop { .. } => {}
        }
    }
    i
}

/// Starts one actor per configured device (on the current tokio runtime) and returns the
/// channels to command them. Observations go to `observed`.
pub fn start_devices(
    unit: &UnitConfig,
    observed: &mpsc::Sender<Observed>,
) -> Result<Devices, StartError> {
    // A simulated unit's plant runs faster than the wall clock: poll as often in plant time.
    let (balance_period, heater_period) =
        (BALANCE_PERIOD.div_f64(unit.speed()), HEATER_PERIOD.div_f64(unit.speed()));
    let mut balance = None;
    let mut heater = None;
    let mut estops = 0;
    let mut pumps = Vec::new();
    for d in &unit.devices {
        let (name, connector, policy) = (d.name.clone(), d.connector(), d.policy());
        match &d.spec {
            DeviceSpec::Balance { protocol, capacity_g, readability_g } => {
                if balance.is_some() {
                    return Err(StartError::Several("balance"));
                }
                let (tx, rx) = mpsc::channel(8);
                let to = observed.clone();
                match protocol {
                    BalanceProtocol::MtSics => {
                        let b = MtSicsBalance::new(name.clone(), connector, policy);
                        tokio::spawn(actors::balance(name, b, rx, to, balance_period));
                    }
                    BalanceProtocol::Sbi => {
                        let options = SbiOptions {
                            capacity: Some(Weight::grams(*capacity_g)),
                            readability: readability_g.map(Weight::grams),
                            ..SbiOptions::default()
                        };
                        let b = SbiBalance::new(name.clone(), connector, policy, options);
                        tokio::spawn(actors::balance(name, b, rx, to, balance_period));
                    }
                }
                balance = Some(tx);
            }
            DeviceSpec::Pump { protocol, max_volume_ml, .. } => {
                let (tx, rx) = mpsc::channel(8);
                let role = match protocol {
                    PumpProtocol::NewEra(o) => {
                        tokio::spawn(actors::pump(
                            name.clone(),
                            NewEraPump::new(name, connector, policy, *o),
                            rx,
                        ));
                        Pump::Syringe
                    }
                    PumpProtocol::Wm520(o) => {
                        tokio::spawn(actors::pump(
                            name.clone(),
                            Wm520Pump::new(name, connector, policy, *o),
                            rx,
                        ));
                        Pump::Peristaltic
                    }
                };
                pumps.push((role, tx, *max_volume_ml));
            }
            DeviceSpec::Heater { options, .. } => {
                if heater.is_some() {
                    return Err(StartError::Several("heater"));
                }
                let (tx, rx) = mpsc::channel(8);
                let h = EurothermHeater::new(name.clone(), connector, policy, *options);
                tokio::spawn(actors::heater(name, h, rx, observed.clone(), heater_period));
                heater = Some(tx);
            }
            DeviceSpec::EmergencyStop { options } => {
                estops += 1;
                if estops > 1 {
                    return Err(StartError::Several("emergency stop"));
                }
                let e = ModbusDiEstop::new(name.clone(), connector, policy, *options);
                // Not sped up with a simulated plant: a hand presses the button in wall time,
                // and 10 Hz of wall time is what the supervisor promises to notice it in
                // (faster would only crowd the batch loop at high simulation speeds).
                tokio::spawn(actors::estop(name, e, observed.clone(), ESTOP_PERIOD));
            }
        }
    }
    Ok(Devices {
        balance: balance.ok_or(StartError::Missing("balance"))?,
        pumps,
        heater: heater.ok_or(StartError::Missing("heater"))?,
    })
}
