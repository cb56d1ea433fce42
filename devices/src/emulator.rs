//! What every wire-level emulator shares: fault knobs and the way a reply goes out through them.
//!
//! Emulators are transport-agnostic: each `serve` takes any `AsyncRead + AsyncWrite` (a pty
//! master in practice, a `tokio::io::duplex` half for an in-process simulator) and returns
//! when the host side hangs up. The physical state an emulator reports comes from a small port
//! the caller drives (a weight source, a pump plant, a heater plant), so `galen-hil` binds
//! emulators to its physics without this crate knowing any.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt as _};

/// A misbehaviour to inject on the wire. One at a time, switched at run time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Fault {
    /// Behave.
    #[default]
    None,
    /// Read and act on commands, answer nothing (a cable with a broken TX line).
    Silent,
    /// Answer every command with these bytes instead of the reply (wrong baud rate, noise).
    Garbage(Vec<u8>),
    /// Send these bytes before each reply; a driver must resynchronise and take the reply.
    NoiseBefore(Vec<u8>),
    /// Wait this long before each reply.
    Slow(Duration),
    /// Corrupt each reply: its checksum where the protocol has one, else one payload byte.
    BadChecksum,
}

/// A shared switch for an emulator's [`Fault`]; clone it to flip faults from a test or rig.
#[derive(Debug, Clone, Default)]
pub struct FaultHandle(Arc<Mutex<Fault>>);

impl FaultHandle {
    /// A handle with no fault.
    pub fn new() -> Self {
        Self::default()
    }

    /// Switches to `fault`.
    pub fn set(&self, fault: Fault) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = fault;
    }

    /// The active fault.
    pub fn get(&self) -> Fault {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Writes `reply` through `fault`. `corrupt` damages a reply for [`Fault::BadChecksum`].
pub(crate) async fn send_reply<W: AsyncWrite + Unpin>(
    io: &mut W,
    fault: &Fault,
    mut reply: Vec<u8>,
    corrupt: impl FnOnce(&mut [u8]),
) -> io::Result<()> {
    match fault {
        Fault::None => {}
        Fault::Silent => return Ok(()),
        Fault::Garbage(bytes) => reply.clone_from(bytes),
        Fault::NoiseBefore(bytes) => {
            let mut noisy = bytes.clone();
            noisy.extend_from_slice(&reply);
            reply = noisy;
        }
        Fault::Slow(delay) => tokio::time::sleep(*delay).await,
        Fault::BadChecksum => corrupt(&mut reply[..]),
    }
    if reply.is_empty() {
        return Ok(());
    }
    io.write_all(&reply).await?;
    io.flush().await
}

/// Damages a line protocol's reply (which has no checksum): the first payload byte becomes
/// 0xFF, which no ASCII decoder accepts.
pub(crate) fn corrupt_line(reply: &mut [u8]) {
    if let Some(first) = reply.first_mut() {
        *first = 0xFF;
    }
}

/// Whether an I/O error means the host side went away (a pty master reads EIO once the last
/// slave fd closes); serving then ends normally.
pub(crate) fn is_hangup(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    ) || e.raw_os_error() == Some(5)
}
