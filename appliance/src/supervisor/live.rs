//! What the unit is doing right now, for anyone watching: the latest readings, which links are
//! down, and the running batch's state, phase and progress.
//!
//! The supervisor writes it; displays read it through the D-Bus adapter. Nothing decides on
//! it, and writing it never waits for a reader: a `watch` channel keeps only the newest value,
//! so a hundred slow subscribers cannot delay a pump stop.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::actors::Observed;

/// The newest view of the unit.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Live {
    /// The batch being run (or last run since start).
    pub batch_id: Option<String>,
    /// Its ISA-88 state.
    pub state: Option<String>,
    /// The id of the phase running or next to run.
    pub phase: Option<String>,
    /// That phase in words, with its target (see `Planned::title`).
    pub phase_title: Option<String>,
    pub phase_index: usize,
    pub phase_count: usize,
    /// How far the phase has got, 0 to 1.
    pub progress: f64,
    /// Net grams on the balance (`None`: no reading yet, or overloaded).
    pub weight_g: Option<f64>,
    pub stable: bool,
    pub temperature_c: Option<f64>,
    pub setpoint_c: Option<f64>,
    /// What the operator must do now for the batch to go on (empty: nothing).
    pub instruction: String,
    /// What input that is: "scan", "confirm", or empty.
    pub awaiting: String,
    /// Why the operator's last command at this step was refused (empty: it was not).
    pub notice: String,
    /// Alarms of the current batch that are not yet acknowledged, newest last.
    pub alarms: Vec<String>,
    /// Devices whose link is down.
    pub links_down: BTreeSet<String>,
    /// The emergency stop's contact: released (`Some(true)`), pressed or unreadable
    /// (`Some(false)`), or no E-stop on this unit or no reading yet (`None`).
    pub estop_clear: Option<bool>,
    /// Changes of the emergency stop while no batch ran (`true`: pressed or unreadable), in
    /// order, until the service has recorded them. A queue rather than the latest state, so
    /// that a press and release in quick succession are both recorded.
    #[serde(skip)]
    pub estop_unrecorded: Vec<bool>,
}

/// The writing end, shared by the observation distributor and the batch loop.
pub type LiveTx = Arc<watch::Sender<Live>>;

/// Where observations go when a batch runs.
pub type Feed = Arc<Mutex<Option<mpsc::Sender<Observed>>>>;

/// Reads every observation from the device actors, updates the live view, and passes the
/// observation on to the batch being run, if there is one. Ends when the actors stop.
pub async fn distribute(mut observed: mpsc::Receiver<Observed>, live: LiveTx, feed: Feed) {
    while let Some(o) = observed.recv().await {
        live.send_modify(|l| match &o {
            Observed::Balance { grams, stable } => {
                l.weight_g = *grams;
                l.stable = *stable;
            }
            Observed::Temperature { celsius } => l.temperature_c = *celsius,
            Observed::LinkDown { device, .. } => {
                l.links_down.insert(device.clone());
            }
            Observed::LinkUp { device } => {
                l.links_down.remove(device);
            }
            Observed::Tared | Observed::TareFailed { .. } => {}
            Observed::EmergencyStop(reading) => {
                let clear = matches!(reading, Ok(false));
                let was = l.estop_clear.replace(clear);
                // While a batch runs, its own alarm says it (and records it); with none, the
                // unit still shows it, and the service records it.
                let idle = feed.lock().is_ok_and(|f| f.is_none());
                if idle && was != Some(clear) && !(was.is_none() && clear) {
                    l.estop_unrecorded.push(!clear);
                }
                if matches!(reading, Ok(true)) && idle {
                    let text = crate::engine::safety::Fault::EmergencyStop.describe();
                    if !l.alarms.contains(&text) {
                        l.alarms.push(text);
                    }
                }
            }
        });
        let to = feed.lock().ok().and_then(|f| f.clone());
        if let Some(to) = to {
            // A batch that ended dropped its receiver: stop feeding it.
            if to.send(o).await.is_err()
                && let Ok(mut f) = feed.lock()
                && f.as_ref().is_some_and(|now| now.same_channel(&to))
            {
                *f = None;
            }
        }
    }
}
