//! Helpers shared by the conversation tests: short link timings, a result printer that hides
//! the pty's changing path, and a place for stable port symlinks.

#![allow(dead_code, unreachable_pub)]

use std::fmt::Debug;
use std::path::Path;
use std::time::Duration;

use galen_devices::DeviceResult;
use galen_devices::link::{LinkPolicy, SerialConnector, SerialSettings};
use galen_devices::pty::Served;

/// Short enough to keep the suite fast, long enough for a loaded 2-core machine.
pub fn policy() -> LinkPolicy {
    LinkPolicy {
        timeout: Duration::from_millis(400),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(160),
        gap: Duration::ZERO,
    }
}

pub fn connector(path: &Path) -> SerialConnector {
    SerialConnector::new(path.to_string_lossy(), SerialSettings::n81(9600))
}

/// One line per outcome, the pty path replaced so snapshots are stable.
pub fn show<T: Debug>(what: &str, result: &DeviceResult<T>, port: &Path) -> String {
    let text = match result {
        Ok(Ok(value)) => format!("ok {value:?}"),
        Ok(Err(refusal)) => format!("refused: {refusal}"),
        Err(link) => format!("link failed: {link}"),
    };
    format!("{what}: {}\n", text.replace(&*port.to_string_lossy(), "<port>"))
}

/// The transcript followed by the outcomes, as snapshotted.
pub fn report(served: &Served, outcomes: &str) -> String {
    format!("{}--\n{}", served.transcript().render(), outcomes)
}
