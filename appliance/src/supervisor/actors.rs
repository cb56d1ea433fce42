//! One tokio task per device: it owns the driver (and so the port), polls readings at a fixed
//! rate and sends them as observations, and carries out commands, answering each with an ack.
//!
//! A link failure is reported once per outage (`LinkDown`), not once per poll; the driver
//! reconnects with backoff on its own, and the next good reading ends the outage.
//!
//! **Lifetime:** the tasks end when their command sender is dropped. **Concurrency:** a device
//! is only ever touched by its own task, so requests to one port never interleave.

use std::time::Duration;

use galen_devices::balance::Wait;
use galen_devices::estop::EstopState;
use galen_devices::pump::Motion;
use galen_devices::units::{Celsius, FlowRate, Stability, Volume};
use galen_devices::{Balance, DeviceResult, EmergencyStop, Heater, Pump, RefusalReason};
use tokio::sync::{mpsc, oneshot};

/// What a device reports to the supervisor.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// Net grams (`None`: overload), and whether the balance is at rest.
    Balance {
        grams: Option<f64>,
        stable: bool,
    },
    /// °C (`None`: the controller reports no valid temperature, e.g. a sensor break).
    Temperature {
        celsius: Option<f64>,
    },
    LinkDown {
        device: String,
        why: String,
    },
    /// The balance could not tare (it never settled, or refused). Sent on the observation
    /// channel so the batch loop never waits for a tare.
    TareFailed {
        why: String,
    },
    /// The device answers again after a `LinkDown`.
    LinkUp {
        device: String,
    },
    /// The balance was tared. Sent on the same channel as the readings, so every reading
    /// after it was taken after the tare.
    Tared,
    /// The emergency stop's contact: `Ok(pressed)`, or `Err(why)` when its module answered
    /// without the contact's state (an exception).
    EmergencyStop(Result<bool, String>),
}

/// How long a tare may wait for the pan to settle.
const TARE_SETTLE: Duration = Duration::from_secs(20);

/// How a command went.
pub type Ack = Result<(), String>;

/// The outcome of a tare comes back on the observation channel (`Tared` or `TareFailed`),
/// in order with the readings, so the batch loop never waits for the pan to settle.
#[derive(Debug)]
pub enum BalanceCommand {
    Tare,
}

#[derive(Debug)]
pub enum PumpCommand {
    /// Run forward at this rate (mL/min), at most `cap_ml` in one go.
    Rate {
        ml_min: f64,
        cap_ml: f64,
        ack: oneshot::Sender<Ack>,
    },
    Stop(oneshot::Sender<Ack>),
}

#[derive(Debug)]
pub enum HeaterCommand {
    Setpoint { celsius: f64, ack: oneshot::Sender<Ack> },
    Off(oneshot::Sender<Ack>),
}

fn outcome<T>(device: &str, r: DeviceResult<T>) -> Result<T, String> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(refusal)) => Err(format!("{device} refused: {refusal}")),
        Err(link) => Err(format!("{device}: {link}")),
    }
}

/// Tracks one device's link so an outage is reported once.
struct LinkState {
    device: String,
    up: bool,
}

impl LinkState {
    async fn down(&mut self, why: String, to: &mpsc::Sender<Observed>) {
        if self.up {
            self.up = false;
            let _ = to.send(Observed::LinkDown { device: self.device.clone(), why }).await;
        }
    }

    async fn up(&mut self, to: &mpsc::Sender<Observed>) {
        if !self.up {
            self.up = true;
            let _ = to.send(Observed::LinkUp { device: self.device.clone() }).await;
        }
    }
}

/// Polls the balance every `period` and tares on request.
pub async fn balance<B: Balance>(
    name: String,
    mut b: B,
    mut commands: mpsc::Receiver<BalanceCommand>,
    to: mpsc::Sender<Observed>,
    period: Duration,
) {
    let mut link = LinkState { device: name.clone(), up: true };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(BalanceCommand::Tare) => {
                    // A balance refuses to tare while the pan still moves (liquid just
                    // arrived, a hand just left): ask again until it settles, within reason.
                    let deadline = tokio::time::Instant::now() + TARE_SETTLE;
                    let mut r = b.tare().await;
                    while matches!(&r, Ok(Err(refusal)) if refusal.reason == RefusalReason::NotExecutable)
                        && tokio::time::Instant::now() < deadline
                    {
                        tokio::time::sleep(period).await;
                        // Keep reporting while waiting: the batch watches for stale readings.
                        if let Ok(Ok(reading)) = b.read(Wait::Immediate).await {
                            let stable = reading.stability == Stability::Stable;
                            let grams = Some(reading.weight.in_grams());
                            if to.send(Observed::Balance { grams, stable }).await.is_err() {
                                return;
                            }
                        }
                        r = b.tare().await;
                    }
                    let told = match outcome(&name, r) {
                        Ok(_) => Observed::Tared,
                        Err(why) => Observed::TareFailed { why },
                    };
                    if to.send(told).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
            _ = tick.tick() => {
                let observed = match b.read(Wait::Immediate).await {
                    Ok(Ok(r)) => Observed::Balance {
                        grams: Some(r.weight.in_grams()),
                        stable: r.stability == Stability::Stable,
                    },
                    Ok(Err(refusal)) if refusal.reason == RefusalReason::Overload => {
                        Observed::Balance { grams: None, stable: false }
                    }
                    // Busy or moving: nothing to report this time.
                    Ok(Err(_)) => continue,
                    Err(e) => {
                        link.down(e.to_string(), &to).await;
                        continue;
                    }
                };
                link.up(&to).await;
                if to.send(observed).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Runs the pump on command; it reports nothing periodically (a stall shows on the balance).
pub async fn pump<P: Pump>(name: String, mut p: P, mut commands: mpsc::Receiver<PumpCommand>) {
    let mut running = false;
    while let Some(command) = commands.recv().await {
        match command {
            PumpCommand::Rate { ml_min, cap_ml, ack } => {
                let result = async {
                    let rate = FlowRate::new(ml_min).map_err(|e| e.to_string())?;
                    outcome(&name, p.set_rate(rate).await)?;
                    if !running {
                        let cap = Volume::new(cap_ml).map_err(|e| e.to_string())?;
                        outcome(&name, p.dispense(cap).await)?;
                        running = true;
                    }
                    Ok(())
                }
                .await;
                let _ = ack.send(result);
            }
            PumpCommand::Stop(ack) => {
                let r = stop_confirmed(&name, &mut p).await;
                if r.is_ok() {
                    running = false;
                }
                let _ = ack.send(r);
            }
        }
    }
}

/// Stops the pump and reads back that it stopped: some pumps (Watson-Marlow) do not answer
/// a stop, and "sent" is not "stopped".
async fn stop_confirmed<P: Pump>(name: &str, p: &mut P) -> Ack {
    outcome(name, p.stop().await)?;
    for _ in 0..10 {
        let status = outcome(name, p.status().await)?;
        if !matches!(status.motion, Motion::Running(_)) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("{name} still reports running after the stop"))
}

/// Polls the temperature every `period` and sets or switches off the heater on request.
pub async fn heater<H: Heater>(
    name: String,
    mut h: H,
    mut commands: mpsc::Receiver<HeaterCommand>,
    to: mpsc::Sender<Observed>,
    period: Duration,
) {
    let mut link = LinkState { device: name.clone(), up: true };
    let mut enabled = false;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(HeaterCommand::Setpoint { celsius, ack }) => {
                    let result = async {
                        let c = Celsius::new(celsius).map_err(|e| e.to_string())?;
                        outcome(&name, h.set_setpoint(c).await)?;
                        if !enabled {
                            outcome(&name, h.enable().await)?;
                            enabled = true;
                        }
                        Ok(())
                    }
                    .await;
                    let _ = ack.send(result);
                }
                Some(HeaterCommand::Off(ack)) => {
                    let r = outcome(&name, h.disable().await);
                    if r.is_ok() {
                        enabled = false;
                    }
                    let _ = ack.send(r);
                }
                None => return,
            },
            _ = tick.tick() => {
                // The controller diagnoses a broken sensor in its status word while the PV
                // register may still hold the last good value: read both.
                let observed = match (h.process_value().await, h.status().await) {
                    (Ok(Ok(_)), Ok(Ok(s))) if s.sensor_break || s.pv_over_range => {
                        Observed::Temperature { celsius: None }
                    }
                    (Ok(Ok(c)), Ok(Ok(_))) => Observed::Temperature { celsius: Some(c.get()) },
                    (Ok(Err(_)), _) | (_, Ok(Err(_))) => Observed::Temperature { celsius: None },
                    (Err(e), _) | (_, Err(e)) => {
                        link.down(e.to_string(), &to).await;
                        continue;
                    }
                };
                link.up(&to).await;
                if to.send(observed).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads the emergency stop's contact every `period`. It takes no commands: the E-stop is
/// hardwired and acts by itself; the supervisor only has to know. Every reading is sent (the
/// monitor judges staleness from them); a silent module is reported once as `LinkDown`.
pub async fn estop<E: EmergencyStop>(
    name: String,
    mut e: E,
    to: mpsc::Sender<Observed>,
    period: Duration,
) {
    let mut link = LinkState { device: name.clone(), up: true };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if to.is_closed() {
            return;
        }
        let observed = match e.state().await {
            Ok(Ok(state)) => Observed::EmergencyStop(Ok(state == EstopState::Pressed)),
            Ok(Err(refusal)) => Observed::EmergencyStop(Err(refusal.to_string())),
            Err(error) => {
                link.down(error.to_string(), &to).await;
                continue;
            }
        };
        link.up(&to).await;
        if to.send(observed).await.is_err() {
            return;
        }
    }
}
