//! Pseudo-terminals for emulators: the emulator serves on the master side, a driver opens the
//! slave's path as if it were a USB serial adapter.
//!
//! Both ends are in raw mode (serialport's `pair()` applies `cfmakeraw`), which matters: with
//! the default line discipline the slave echoes, maps CR to LF and buffers lines, and no
//! protocol here survives that. The slave fd is held open for the pty's whole life so that the
//! master does not read EIO each time a driver closes and reopens the port.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};

use tokio_serial::{SerialPort as _, SerialStream};

/// A raw-mode pty pair.
#[derive(Debug)]
pub struct Pty {
    master: SerialStream,
    slave: SlaveHold,
}

/// Keeps a pty's slave side open and knows its path. Dropping it (with the master) makes the
/// port vanish, as unplugging an adapter does.
#[derive(Debug)]
pub struct SlaveHold {
    _slave: SerialStream,
    path: PathBuf,
    link: Option<PathBuf>,
}

impl SlaveHold {
    /// The slave's path, e.g. `/dev/pts/4`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Points a stable symlink (a udev-like name) at the slave, replacing an old link. The link
    /// is removed when this hold is dropped, so a driver opening it sees the port vanish.
    pub fn link_at(&mut self, link: &Path) -> io::Result<()> {
        match std::fs::remove_file(link) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::os::unix::fs::symlink(&self.path, link)?;
        self.link = Some(link.to_owned());
        Ok(())
    }
}

impl Drop for SlaveHold {
    fn drop(&mut self) {
        if let Some(link) = &self.link {
            let _ = std::fs::remove_file(link);
        }
    }
}

impl Pty {
    /// Opens a new pty pair in raw mode.
    pub fn open() -> io::Result<Self> {
        let (master, mut slave) = SerialStream::pair().map_err(io::Error::from)?;
        // Running as root bypasses TIOCEXCL anyway; as a normal user the held slave must not
        // lock the driver out of its own port.
        slave.set_exclusive(false).map_err(io::Error::from)?;
        let path =
            slave.name().ok_or_else(|| io::Error::other("the pty slave has no name"))?.into();
        Ok(Self { master, slave: SlaveHold { _slave: slave, path, link: None } })
    }

    /// The slave's path, for the driver.
    pub fn path(&self) -> &Path {
        self.slave.path()
    }

    /// Splits into the master (to serve on) and the slave hold (to keep the port alive).
    pub fn split(self) -> (SerialStream, SlaveHold) {
        (self.master, self.slave)
    }
}

/// An emulator served on a fresh pty by a background task, with its traffic recorded.
///
/// Dropping it (or [`Served::unplug`]) ends the task and closes both sides of the pty, so the
/// port vanishes from under a driver exactly as an unplugged adapter does.
#[derive(Debug)]
pub struct Served {
    hold: SlaveHold,
    transcript: crate::transcript::Transcript,
    task: tokio::task::JoinHandle<io::Result<()>>,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Served {
    /// Opens a pty and spawns `serve` on its master, wrapped in a recording tap.
    ///
    /// `serve` is typically `move |io| async move { emulator.serve(io).await }` with the
    /// emulator in an `Arc`, so the caller keeps a handle to its plant port and faults.
    pub fn spawn<F, Fut>(serve: F) -> io::Result<Self>
    where
        F: FnOnce(crate::transcript::Tap<SerialStream>) -> Fut,
        Fut: Future<Output = io::Result<()>> + Send + 'static,
    {
        let transcript = crate::transcript::Transcript::new();
        let (master, hold) = Pty::open()?.split();
        let tap = crate::transcript::Tap::new(master, transcript.clone());
        let cut = tap.cutter();
        let task = tokio::spawn(serve(tap));
        Ok(Self { hold, transcript, task, cut })
    }

    /// The slave's path, for the driver.
    pub fn path(&self) -> &Path {
        self.hold.path()
    }

    /// Points a stable symlink at the slave (removed when this is dropped).
    pub fn link_at(&mut self, link: &Path) -> io::Result<()> {
        self.hold.link_at(link)
    }

    /// The recorded conversation.
    pub fn transcript(&self) -> &crate::transcript::Transcript {
        &self.transcript
    }

    /// Whether the serving task has ended (the host hung up or the emulator failed).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops serving and closes the pty: the port vanishes.
    pub fn unplug(self) {
        drop(self);
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // Silent from now on, even before the aborted task is dropped and the pty closes.
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.abort();
    }
}
