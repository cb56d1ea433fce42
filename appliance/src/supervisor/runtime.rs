//! The batch loop: feeds observations, operator events and ticks to the engine, and applies
//! what it returns.
//!
//! The order of effects is the safety argument:
//! - `StopAllPumps` and `HeaterOff` are sent at once and awaited, before anything is recorded:
//!   making the unit safe never waits for the disk.
//! - Every other effect is recorded first and acted on only after the record is committed, so
//!   after a crash the record never claims less than what the unit did.
//! - A batch reaches Held only when every pump and the heater acknowledged the safe outputs; if
//!   one cannot (its link is down), the batch stays Holding and the safe outputs are sent again
//!   on every tick until they are.
//!
//! Time is the tokio clock's, measured from the start of the batch, and given to the engine.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use galen_record::{EntryKind, UtcMillis};
use tokio::sync::{mpsc, oneshot};

use super::actors::{Ack, BalanceCommand, HeaterCommand, Observed, PumpCommand};
use super::live::LiveTx;
use crate::engine::batch::{Batch, Event, Output, Planned, Pump};
use crate::engine::safety::Fault;
use crate::engine::state::State;
use crate::records::{At, NewEntry, RecordError, RecordStore};

/// How long a device may take to acknowledge a command.
const ACK_TIMEOUT: Duration = Duration::from_secs(3);
/// The engine's tick.
const TICK: Duration = Duration::from_millis(100);
/// The fastest tick, however fast a simulated unit runs.
const MIN_TICK: Duration = Duration::from_millis(10);
/// Heater setpoints are recorded when they move at least this much (ramps move in small steps).
const SETPOINT_RECORD_STEP_C: f64 = 1.0;

/// Command channels to the device actors.
#[derive(Debug, Clone)]
pub struct Devices {
    pub balance: mpsc::Sender<BalanceCommand>,
    pub pumps: Vec<(Pump, mpsc::Sender<PumpCommand>, f64)>,
    pub heater: mpsc::Sender<HeaterCommand>,
}

/// The wall clock, for record timestamps only (engine time is the tokio clock).
pub trait WallClock: Send + Sync {
    fn now(&self) -> UtcMillis;
}

impl<C: WallClock + ?Sized> WallClock for Arc<C> {
    fn now(&self) -> UtcMillis {
        (**self).now()
    }
}

/// The system's UTC clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> UtcMillis {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        UtcMillis(ms)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Records(#[from] RecordError),
    #[error("the record store's thread stopped")]
    RecordsGone,
    #[error("the devices stopped reporting")]
    DevicesGone,
}

/// One batch being run.
pub struct Run<C: WallClock> {
    pub batch_id: String,
    pub devices: Devices,
    pub records: Arc<Mutex<RecordStore>>,
    pub clock: C,
    last_recorded_setpoint: Option<f64>,
    safe_pending: bool,
    /// When the event being handled arrived.
    event_at: tokio::time::Instant,
    stop_latencies: Vec<Duration>,
    live: Option<LiveTx>,
    speed: f64,
}

impl<C: WallClock> std::fmt::Debug for Run<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run").field("batch_id", &self.batch_id).finish_non_exhaustive()
    }
}

impl<C: WallClock> Run<C> {
    pub fn new(
        batch_id: String,
        devices: Devices,
        records: Arc<Mutex<RecordStore>>,
        clock: C,
    ) -> Self {
        Self {
            batch_id,
            devices,
            records,
            clock,
            last_recorded_setpoint: None,
            safe_pending: false,
            event_at: tokio::time::Instant::now(),
            stop_latencies: Vec::new(),
            live: None,
            speed: 1.0,
        }
    }

    /// Publishes the batch's state, phase and progress to `live` as it runs.
    #[must_use]
    pub fn with_live(mut self, live: LiveTx) -> Self {
        self.live = Some(live);
        self
    }

    /// Runs engine time `speed` times faster than the tokio clock: only for a simulated unit
    /// whose plant runs at the same speed (the rig writes it into the unit file).
    #[must_use]
    pub fn with_speed(mut self, speed: f64) -> Self {
        self.speed = speed.max(1.0);
        self
    }

    /// For every pump stop: the time from the arrival of the event that caused it (usually a
    /// balance reading) to the pump confirming it stopped.
    pub fn stop_latencies(&self) -> &[Duration] {
        &self.stop_latencies
    }

    /// Runs `batch` until it ends, taking operator events from `operator` and device
    /// observations from `observed`. Returns the final state.
    pub async fn run(
        &mut self,
        mut batch: Batch,
        mut operator: mpsc::Receiver<Event>,
        mut observed: mpsc::Receiver<Observed>,
    ) -> Result<State, RunError> {
        let start = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(TICK.div_f64(self.speed).max(MIN_TICK));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut queue: VecDeque<Event> = VecDeque::new();
        let mut operator_open = true;
        loop {
            let event = match queue.pop_front() {
                Some(e) => e,
                None => tokio::select! {
                    e = operator.recv(), if operator_open => match e {
                        Some(e) => e,
                        None => { operator_open = false; continue; }
                    },
                    o = observed.recv() => match o.ok_or(RunError::DevicesGone)? {
                        Observed::Balance { grams, stable } => Event::Balance { grams, stable },
                        Observed::Temperature { celsius } => Event::Temperature { celsius },
                        Observed::LinkDown { device, .. } => Event::Fault(Fault::LinkDown { device }),
                        // Recovery needs an operator's restart; the engine has nothing to do.
                        Observed::LinkUp { .. } => continue,
                        Observed::Tared => Event::Tared,
                        Observed::EmergencyStop(reading) => Event::EmergencyStop(reading),
                        Observed::TareFailed { why } => Event::Fault(Fault::DeviceRefused { device: "balance".into(), why }),
                    },
                    _ = tick.tick() => {
                        if self.safe_pending && matches!(batch.state(), State::Holding | State::Stopping | State::Aborting) {
                            self.make_safe().await;
                            if !self.safe_pending {
                                queue.push_back(Event::OutputsSettled);
                            }
                        }
                        Event::Tick
                    }
                },
            };
            self.event_at = tokio::time::Instant::now();
            let now = start.elapsed().mul_f64(self.speed);
            let outputs = batch.handle(event, now);
            // Recorded before shown: a screen never shows what the record does not hold yet.
            self.apply(&outputs, &mut queue).await?;
            self.publish(&batch, &outputs, now);
            // A transient state ends once its outputs are settled: safe outputs confirmed for
            // Holding, Stopping and Aborting; nothing to wait for when Restarting.
            let transient =
                matches!(batch.state(), State::Holding | State::Stopping | State::Aborting);
            if !queue.contains(&Event::OutputsSettled) {
                if transient && !outputs.contains(&Output::StopAllPumps) {
                    self.make_safe().await;
                }
                if (transient && !self.safe_pending) || batch.state() == State::Restarting {
                    queue.push_back(Event::OutputsSettled);
                }
            }
            if batch.state().is_terminal() {
                return Ok(batch.state());
            }
        }
    }

    fn publish(&self, batch: &Batch, outputs: &[Output], now: Duration) {
        let Some(live) = &self.live else { return };
        live.send_modify(|l| {
            if l.batch_id.as_deref() != Some(self.batch_id.as_str()) {
                l.batch_id = Some(self.batch_id.clone());
                l.alarms.clear();
            }
            l.state = Some(format!("{:?}", batch.state()));
            l.phase = batch.current_phase().map(|p| p.id().to_owned());
            l.phase_title = batch.current_phase().map(Planned::title);
            l.phase_index = batch.phase_index();
            l.phase_count = batch.plan().len();
            l.progress = batch.progress(now);
            l.setpoint_c = batch.setpoint();
            batch.awaiting().unwrap_or_default().clone_into(&mut l.awaiting);
            let instruction = batch.instruction().unwrap_or_default();
            if instruction != l.instruction {
                // A refusal belongs to the step it answered.
                l.notice.clear();
                l.instruction = instruction;
            }
            for o in outputs {
                match o {
                    Output::Alarm { text, .. } => l.alarms.push(text.clone()),
                    Output::Refused { text } => l.notice.clone_from(text),
                    _ => {}
                }
            }
        });
    }

    /// Stops every pump and switches the heater off; remembers whether all confirmed.
    async fn make_safe(&mut self) {
        self.safe_pending = !make_unit_safe(&self.devices).await;
    }

    async fn apply(
        &mut self,
        outputs: &[Output],
        queue: &mut VecDeque<Event>,
    ) -> Result<(), RunError> {
        for o in outputs {
            match o {
                // Safety first: the stop goes out before anything is written.
                Output::StopAllPumps => {
                    self.make_safe().await;
                    if !self.safe_pending {
                        queue.push_back(Event::OutputsSettled);
                    }
                }
                // Covered by make_safe above, which always switches the heater off too; on its
                // own (a cool phase) it still goes out at once.
                Output::HeaterOff => {
                    if !outputs.contains(&Output::StopAllPumps) {
                        let r = self.heater(None).await;
                        self.on_ack("heater", r, queue);
                    }
                }
                Output::PumpRate { pump, ml_min } => {
                    self.record(NewEntry {
                        new_value: Some(format!("{ml_min:.2} mL/min")),
                        ..self.entry(EntryKind::Setpoint, &format!("pump.{}.rate", pump_id(*pump)))
                    })
                    .await?;
                    let r = self.pump(*pump, Some(*ml_min)).await;
                    self.on_ack(pump_id(*pump), r, queue);
                }
                Output::PumpStop { pump } => {
                    let r = self.pump(*pump, None).await;
                    if r.is_ok() {
                        self.stop_latencies.push(self.event_at.elapsed());
                    }
                    self.on_ack(pump_id(*pump), r, queue);
                }
                Output::HeaterSetpoint { celsius } => {
                    let moved = self
                        .last_recorded_setpoint
                        .is_none_or(|l| (l - celsius).abs() >= SETPOINT_RECORD_STEP_C);
                    if moved {
                        self.last_recorded_setpoint = Some(*celsius);
                        self.record(NewEntry {
                            new_value: Some(format!("{celsius:.1} °C")),
                            ..self.entry(EntryKind::Setpoint, "heater.setpoint")
                        })
                        .await?;
                    }
                    let r = self.heater(Some(*celsius)).await;
                    self.on_ack("heater", r, queue);
                }
                Output::TareBalance => {
                    // The outcome arrives on the observation channel (`Tared` in order with
                    // the readings, or `TareFailed`): the loop keeps watching while the
                    // balance waits for its pan to settle.
                    if self.devices.balance.send(BalanceCommand::Tare).await.is_err() {
                        queue.push_back(Event::Fault(Fault::LinkDown { device: "balance".into() }));
                    }
                }
                Output::State { from, to } => {
                    self.record(NewEntry {
                        old_value: Some(format!("{from:?}")),
                        new_value: Some(format!("{to:?}")),
                        ..self.entry(EntryKind::BatchState, "batch.state")
                    })
                    .await?;
                }
                Output::PhaseStarted { index, id } => {
                    self.record(NewEntry {
                        new_value: Some("started".into()),
                        payload: serde_json::json!({ "index": index }),
                        ..self.entry(EntryKind::BatchState, &format!("phase.{id}"))
                    })
                    .await?;
                }
                Output::PhaseDone { index, id, result } => {
                    self.record(NewEntry {
                        new_value: Some(result.clone()),
                        payload: serde_json::json!({ "index": index }),
                        ..self.entry(EntryKind::BatchState, &format!("phase.{id}"))
                    })
                    .await?;
                }
                Output::PhaseResumed { index, id, text } => {
                    self.record(NewEntry {
                        new_value: Some(text.clone()),
                        payload: serde_json::json!({ "index": index }),
                        ..self.entry(EntryKind::BatchState, &format!("phase.{id}"))
                    })
                    .await?;
                }
                Output::Alarm { fault, text } => {
                    self.record(NewEntry {
                        new_value: Some(text.clone()),
                        payload: serde_json::to_value(fault).unwrap_or_default(),
                        ..self.entry(EntryKind::Alarm, "batch.alarm")
                    })
                    .await?;
                }
                Output::Deviation { phase, text } => {
                    self.record(NewEntry {
                        new_value: Some(text.clone()),
                        ..self.entry(EntryKind::Deviation, &format!("phase.{phase}"))
                    })
                    .await?;
                }
                Output::Refused { text } => {
                    self.record(NewEntry {
                        new_value: Some(format!("refused: {text}")),
                        ..self.entry(EntryKind::OperatorAction, "batch.operator")
                    })
                    .await?;
                }
            }
        }
        Ok(())
    }

    fn on_ack(&mut self, device: &str, r: Ack, queue: &mut VecDeque<Event>) {
        if let Err(why) = r {
            queue.push_back(Event::Fault(Fault::DeviceRefused { device: device.to_owned(), why }));
        }
    }

    async fn pump(&self, pump: Pump, rate: Option<f64>) -> Ack {
        let Some((_, tx, cap)) = self.devices.pumps.iter().find(|(p, _, _)| *p == pump) else {
            return Err(format!("this unit has no {}", pump_id(pump)));
        };
        let (ack, rx) = oneshot::channel();
        let command = match rate {
            Some(ml_min) => PumpCommand::Rate { ml_min, cap_ml: *cap, ack },
            None => PumpCommand::Stop(ack),
        };
        tx.send(command).await.map_err(|_| format!("{} actor stopped", pump_id(pump)))?;
        match tokio::time::timeout(ACK_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            _ => Err(format!("{} did not answer", pump_id(pump))),
        }
    }

    async fn heater(&self, celsius: Option<f64>) -> Ack {
        let (ack, rx) = oneshot::channel();
        let command = match celsius {
            Some(celsius) => HeaterCommand::Setpoint { celsius, ack },
            None => HeaterCommand::Off(ack),
        };
        self.devices.heater.send(command).await.map_err(|_| "heater actor stopped".to_owned())?;
        match tokio::time::timeout(ACK_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            _ => Err("heater did not answer".to_owned()),
        }
    }

    fn entry(&self, kind: EntryKind, object: &str) -> NewEntry {
        NewEntry { batch_id: Some(self.batch_id.clone()), ..NewEntry::new(kind, object) }
    }

    /// Appends and waits for the commit, on a blocking thread (SQLite fsyncs).
    async fn record(&self, entry: NewEntry) -> Result<(), RunError> {
        let store = self.records.clone();
        let at = At::utc(self.clock.now());
        tokio::task::spawn_blocking(move || {
            let mut store = store.lock().map_err(|_| RunError::RecordsGone)?;
            store.append(at, entry).map(drop).map_err(RunError::from)
        })
        .await
        .map_err(|_| RunError::RecordsGone)?
    }
}

/// Stops every pump and switches the heater off, all at once; true if every device
/// confirmed within the acknowledgement timeout.
pub async fn make_unit_safe(devices: &Devices) -> bool {
    let mut acks = Vec::new();
    for (_, pump, _) in &devices.pumps {
        let (tx, rx) = oneshot::channel();
        let _ = pump.send(PumpCommand::Stop(tx)).await;
        acks.push(rx);
    }
    let (tx, rx) = oneshot::channel();
    let _ = devices.heater.send(HeaterCommand::Off(tx)).await;
    acks.push(rx);
    let mut all = true;
    for rx in acks {
        all &= matches!(tokio::time::timeout(ACK_TIMEOUT, rx).await, Ok(Ok(Ok(()))));
    }
    all
}

fn pump_id(p: Pump) -> &'static str {
    match p {
        Pump::Syringe => "syringe",
        Pump::Peristaltic => "peristaltic",
    }
}
