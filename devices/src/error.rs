//! The two ways a request can fail, kept apart in the types.
//!
//! A [`Refusal`] is an answer: the device understood us and said no (MT-SICS `S I`, New Era
//! `?OOR`, a Modbus exception). The link is fine and the caller may retry differently. A
//! [`LinkError`] means we know nothing about the device: no reply in time, bytes that were not
//! a reply, or a port that is gone. Following tokio-modbus, drivers return
//! `Result<Result<T, Refusal>, LinkError>` ([`DeviceResult`]) so the two cannot be confused.

use std::time::Duration;

/// Outer error: the link failed. Inner error: the device refused.
pub type DeviceResult<T> = Result<Result<T, Refusal>, LinkError>;

/// The link to a device failed; nothing is known about the device's state.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No complete reply arrived before the request's deadline.
    #[error("{device} on {port}: no reply to `{command}` within {timeout:?}")]
    Timeout {
        /// Configured device name.
        device: String,
        /// Port path.
        port: String,
        /// The request, as text.
        command: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// Only unintelligible bytes arrived before the deadline (noise, wrong baud, bad checksum).
    #[error("{device} on {port}: garbled reply to `{command}`: {detail}")]
    Garbled {
        /// Configured device name.
        device: String,
        /// Port path.
        port: String,
        /// The request, as text.
        command: String,
        /// What was wrong with the bytes.
        detail: String,
    },
    /// A well-formed reply that does not answer the request (another dialect, a stray frame).
    #[error("{device} on {port}: unexpected reply to `{command}`: {reply}")]
    Unexpected {
        /// Configured device name.
        device: String,
        /// Port path.
        port: String,
        /// The request, as text.
        command: String,
        /// The reply, escaped.
        reply: String,
    },
    /// A heater could not be confirmed off: its output may still be on. Not a refusal to be
    /// retried at leisure: a supervisor must escalate (cut the heater's power).
    #[error("{device} on {port}: heater NOT SAFE after `{command}`: {detail}")]
    NotSafe {
        /// Configured device name.
        device: String,
        /// Port path.
        port: String,
        /// The operation, as text.
        command: String,
        /// What could not be confirmed, and the last error seen.
        detail: String,
    },
    /// The port could not be opened, or failed while in use (unplugged, hung up).
    #[error("{device} on {port}: port unavailable during `{command}`: {source}")]
    PortGone {
        /// Configured device name.
        device: String,
        /// Port path.
        port: String,
        /// The request, as text.
        command: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// The device answered, and the answer was no.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{device} refused `{command}`: {reason} (reply {reply})")]
pub struct Refusal {
    /// Configured device name.
    pub device: String,
    /// The request, as text.
    pub command: String,
    /// The reply, escaped (empty when the refusal was decided without a round trip).
    pub reply: String,
    /// What the reply means.
    pub reason: RefusalReason,
}

/// The meaning of a refusal, across protocols.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RefusalReason {
    /// MT-SICS `I`: busy, or stability not reached within the balance's timeout.
    #[error("not executable now (busy or not stable)")]
    NotExecutable,
    /// MT-SICS `+`, SBI `Stat High`: above the weighing or zeroing range.
    #[error("overload (above range)")]
    Overload,
    /// MT-SICS `-`, SBI `Stat Low`: below the weighing or zeroing range.
    #[error("underload (below range)")]
    Underload,
    /// MT-SICS `L`: a parameter was wrong.
    #[error("bad parameter")]
    BadParameter,
    /// MT-SICS `ES`, New Era `?`: the command was not recognised.
    #[error("command not recognised")]
    UnknownCommand,
    /// MT-SICS `ET`: the device saw a transmission error (parity, break).
    #[error("transmission error seen by the device")]
    TransmissionError,
    /// MT-SICS `EL`: the command could not be executed (logical error).
    #[error("logical error: cannot execute")]
    LogicalError,
    /// MT-SICS `EI`: the device is busy with an internal operation.
    #[error("internal error or busy")]
    Internal,
    /// New Era `?NA`: not applicable in the current state.
    #[error("not applicable now")]
    NotApplicable,
    /// New Era `?OOR`: a value out of range.
    #[error("value out of range")]
    OutOfRange,
    /// New Era `?COM`: the packet was invalid.
    #[error("invalid packet")]
    BadPacket,
    /// New Era `?IGN`: the command was ignored (a new phase started).
    #[error("command ignored")]
    Ignored,
    /// SBI `Err ###`: a numbered error.
    #[error("error code {0}")]
    Code(u16),
    /// A pump alarm answered the request instead; it persisted after acknowledging.
    #[error("pump alarm: {0}")]
    Alarm(crate::pump::PumpAlarm),
    /// A Modbus exception response.
    #[error("Modbus exception {code:#04x} ({name})")]
    ModbusException {
        /// The exception code.
        code: u8,
        /// Its name in the Modbus specification.
        name: String,
    },
    /// A value read back after a write does not match what was written.
    #[error("not applied: wrote {wrote}, read back {read}")]
    NotApplied {
        /// What was written.
        wrote: String,
        /// What the device reports.
        read: String,
    },
    /// A continuous stream ignored `SI` and was stopped only by the reset `@`, which clears the
    /// tare: the stream is over, but every weight from now on is gross until the caller tares
    /// again.
    #[error("the stream ignored `SI` and was stopped with `@`: the tare was cleared")]
    TareCleared,
    /// The device cannot be set to the value asked within 1 %: its resolution is coarser.
    /// Nothing was sent; a silently rounded rate would be a wrong dose.
    #[error("the device cannot be set to {asked} within 1 %; the nearest it accepts is {nearest}")]
    NotRepresentable {
        /// What was asked, with its unit.
        asked: String,
        /// The nearest value the device accepts, with its unit.
        nearest: String,
    },
    /// A configured limit forbids the request; nothing was sent.
    #[error("beyond the configured limit {limit}: asked {requested}, limit {allowed}")]
    LimitExceeded {
        /// The limit's name in the unit configuration, e.g. `max_rate_ml_min`.
        limit: &'static str,
        /// What was asked.
        requested: f64,
        /// The limit.
        allowed: f64,
    },
    /// The protocol has no command for this operation; nothing was sent.
    #[error("not supported by this protocol: {0}")]
    Unsupported(&'static str),
}
