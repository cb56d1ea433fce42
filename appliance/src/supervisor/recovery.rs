//! What the supervisor does first after any start, including one after a crash or power loss:
//! make the unit safe, then hold every batch the record says was in progress, each with an
//! automatic deviation that names the interrupted phase and the recipe's resume policy. What
//! may happen to a held batch next is `crate::engine::restart`'s decision; the service rebuilds
//! the batch from its record so that people can resume or abort it through the API.
//!
//! Nothing acknowledged is lost: every transition was committed before it was acted on, so
//! the record's last state of a batch is at least as far as the unit got.

use std::sync::{Arc, Mutex};

use galen_record::EntryKind;

use super::runtime::{Devices, RunError, WallClock, make_unit_safe};
use crate::records::{At, NewEntry, RESTART_REASON, RecordStore};

/// One batch put on hold at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub batch_id: String,
    pub was: String,
    pub phase: Option<String>,
    /// What the recipe says to do with the phase ("resume", "repeat", "discard", "qa-decision").
    pub policy: Option<String>,
}

/// Makes the unit safe, then holds and records every interrupted batch. `policy` looks up
/// the recipe's resume policy for a batch's interrupted phase. Running it twice holds nothing
/// the second time.
pub async fn recover<C: WallClock>(
    devices: &Devices,
    records: &Arc<Mutex<RecordStore>>,
    clock: &C,
    policy: impl Fn(&str, &str) -> Option<String>,
) -> Result<Vec<Recovered>, RunError> {
    // Before anything else: after a crash a pump may still be running and the heater on.
    let confirmed = make_unit_safe(devices).await;
    let store = records.clone();
    let at = At::utc(clock.now());
    let interrupted = {
        let s = store.lock().map_err(|_| RunError::RecordsGone)?;
        s.interrupted_batches()?
    };
    let mut out = Vec::new();
    for i in interrupted {
        let policy = i.phase.as_deref().and_then(|p| policy(&i.batch_id, p));
        let text = format!(
            "the supervisor restarted while this batch was {}{}; outputs were made safe{}; \
             the recipe's resume policy for the phase is {}",
            i.state,
            i.phase.as_deref().map(|p| format!(" in phase {p}")).unwrap_or_default(),
            if confirmed { "" } else { " (NOT all confirmed)" },
            policy.as_deref().unwrap_or("not known"),
        );
        let mut s = store.lock().map_err(|_| RunError::RecordsGone)?;
        let entry = |kind, object: &str| NewEntry {
            batch_id: Some(i.batch_id.clone()),
            ..NewEntry::new(kind, object)
        };
        s.append(
            at,
            NewEntry { new_value: Some(text), ..entry(EntryKind::Deviation, "batch.restart") },
        )?;
        s.append(
            at,
            NewEntry {
                old_value: Some(i.state.clone()),
                new_value: Some("Held".into()),
                reason: Some(RESTART_REASON.into()),
                ..entry(EntryKind::BatchState, "batch.state")
            },
        )?;
        out.push(Recovered { batch_id: i.batch_id, was: i.state, phase: i.phase, policy });
    }
    Ok(out)
}
