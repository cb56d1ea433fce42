//! The byte link under every driver: opening ports, per-request deadlines, resynchronising
//! after garbage, and reconnecting with backoff when a port disappears and returns.
//!
//! **Concurrency:** a [`Link`] is owned by one driver, which is owned by one actor task; no
//! request is ever interleaved with another on the same port.
//!
//! **Lifetime:** the port is opened lazily on the first request and dropped on any I/O error.
//! The next request reopens it, waiting out a backoff that doubles after each failed attempt
//! (up to [`LinkPolicy::backoff_max`]) and resets on success. A request never waits longer than
//! its own timeout, reconnection included, so a caller polling a vanished balance gets a prompt
//! [`LinkError::PortGone`] each time rather than a hang.

use std::fmt;
use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::time::Instant;

use crate::codec::{Decode, escape};
use crate::error::LinkError;

/// Opens the transport to a device. Implemented for serial ports; tests and the in-process
/// simulator can implement it for anything that reads and writes bytes.
pub trait Connector: Send + Sync + fmt::Debug + 'static {
    /// The open transport.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug + 'static;

    /// Opens the transport.
    fn connect(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;

    /// The port's name for errors and logs.
    fn port(&self) -> &str;
}

/// Parity setting of a serial line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    /// No parity bit.
    None,
    /// Odd parity (Sartorius default).
    Odd,
    /// Even parity.
    Even,
}

/// Flow control of a serial line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowControl {
    /// None.
    None,
    /// RTS/CTS.
    Hardware,
    /// XON/XOFF.
    Software,
}

/// Serial line settings, validated (see [`crate::config`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerialSettings {
    /// Bits per second.
    pub baud: u32,
    /// 7 or 8.
    pub data_bits: u8,
    /// Parity.
    pub parity: Parity,
    /// 1 or 2.
    pub stop_bits: u8,
    /// Flow control.
    pub flow_control: FlowControl,
}

impl SerialSettings {
    /// 8 data bits, no parity, 1 stop bit, no flow control.
    pub fn n81(baud: u32) -> Self {
        Self {
            baud,
            data_bits: 8,
            parity: Parity::None,
            stop_bits: 1,
            flow_control: FlowControl::None,
        }
    }

    /// Bits on the wire per character: start, data, parity and stop bits.
    pub fn bits_per_char(&self) -> u32 {
        let parity = u32::from(self.parity != Parity::None);
        1 + u32::from(self.data_bits) + parity + u32::from(self.stop_bits)
    }

    /// How long `bytes` characters take on the wire at this setting.
    pub fn frame_time(&self, bytes: usize) -> Duration {
        let bits = u64::try_from(bytes).unwrap_or(u64::MAX) * u64::from(self.bits_per_char());
        Duration::from_nanos(bits.saturating_mul(1_000_000_000) / u64::from(self.baud.max(1)))
    }
}

/// A serial port by path (a udev symlink, `/dev/ttyUSB0`, or an emulator's pty).
#[derive(Debug, Clone)]
pub struct SerialConnector {
    /// Device path.
    pub path: String,
    /// Line settings.
    pub settings: SerialSettings,
    /// Take the port exclusively (TIOCEXCL and flock), as serialport does by default. Turn off
    /// only when a sniffer must share the port. Ptys are always opened shared (see `is_pty`).
    pub exclusive: bool,
}

impl SerialConnector {
    /// An exclusive connector for `path`.
    pub fn new(path: impl Into<String>, settings: SerialSettings) -> Self {
        Self { path: path.into(), settings, exclusive: true }
    }
}

impl Connector for SerialConnector {
    type Io = tokio_serial::SerialStream;

    async fn connect(&self) -> io::Result<Self::Io> {
        use tokio_serial::{DataBits, StopBits};
        let s = &self.settings;
        let builder = tokio_serial::new(&self.path, s.baud)
            .data_bits(if s.data_bits == 7 { DataBits::Seven } else { DataBits::Eight })
            .stop_bits(if s.stop_bits == 2 { StopBits::Two } else { StopBits::One })
            .parity(match s.parity {
                Parity::None => tokio_serial::Parity::None,
                Parity::Odd => tokio_serial::Parity::Odd,
                Parity::Even => tokio_serial::Parity::Even,
            })
            .flow_control(match s.flow_control {
                FlowControl::None => tokio_serial::FlowControl::None,
                FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
                FlowControl::Software => tokio_serial::FlowControl::Software,
            });
        let builder = builder.exclusive(self.exclusive && !is_pty(&self.path));
        tokio_serial::SerialStream::open(&builder).map_err(io::Error::from)
    }

    fn port(&self) -> &str {
        &self.path
    }
}

/// Whether `path` is (a link to) a pty slave. An emulator holds its pty's slave open with a
/// shared lock so that the master never reads EIO between two opens by a driver; an exclusive
/// open would fail against it, so ptys are always opened shared.
fn is_pty(path: &str) -> bool {
    std::fs::canonicalize(path).is_ok_and(|p| p.starts_with("/dev/pts"))
}

/// Timing of a link. Every figure is configurable because real instruments and ptys differ by
/// orders of magnitude, and tests want short timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkPolicy {
    /// How long one request may take, reconnection included.
    pub timeout: Duration,
    /// First wait after a failed open.
    pub backoff_initial: Duration,
    /// Longest wait between open attempts.
    pub backoff_max: Duration,
    /// Least time between the end of one request and the next (Watson-Marlow asks 10 ms).
    pub gap: Duration,
}

impl Default for LinkPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            gap: Duration::ZERO,
        }
    }
}

/// Opens a connector with exponential backoff that persists across requests.
#[derive(Debug)]
pub struct Reconnector<C> {
    connector: C,
    policy: LinkPolicy,
    backoff: Duration,
    next_attempt: Option<Instant>,
    last_error: Option<(io::ErrorKind, String)>,
    attempts: u64,
}

impl<C: Connector> Reconnector<C> {
    /// A reconnector that has not tried yet.
    pub fn new(connector: C, policy: LinkPolicy) -> Self {
        Self {
            connector,
            policy,
            backoff: policy.backoff_initial,
            next_attempt: None,
            last_error: None,
            attempts: 0,
        }
    }

    /// The port's name.
    pub fn port(&self) -> &str {
        self.connector.port()
    }

    /// How many times the port has been opened or tried, for tests and diagnostics.
    pub fn attempts(&self) -> u64 {
        self.attempts
    }

    /// Opens the port, retrying with backoff, but not past `deadline`.
    pub async fn connect_before(&mut self, deadline: Instant) -> io::Result<C::Io> {
        loop {
            if let Some(at) = self.next_attempt {
                if at > deadline {
                    return Err(self.last_error());
                }
                tokio::time::sleep_until(at).await;
            }
            self.attempts += 1;
            match self.connector.connect().await {
                Ok(io) => {
                    self.backoff = self.policy.backoff_initial;
                    self.next_attempt = None;
                    self.last_error = None;
                    return Ok(io);
                }
                Err(e) => {
                    tracing::debug!(port = self.port(), error = %e, backoff = ?self.backoff, "open failed");
                    self.next_attempt = Some(Instant::now() + self.backoff);
                    self.backoff = (self.backoff * 2).min(self.policy.backoff_max);
                    self.last_error = Some((e.kind(), e.to_string()));
                }
            }
        }
    }

    fn last_error(&self) -> io::Error {
        match &self.last_error {
            Some((kind, message)) => io::Error::new(*kind, message.clone()),
            None => io::Error::new(io::ErrorKind::TimedOut, "no time left to open the port"),
        }
    }
}

/// One device's byte link: a lazily opened port, a receive buffer and the request timing.
#[derive(Debug)]
pub struct Link<C: Connector> {
    device: String,
    reconnector: Reconnector<C>,
    io: Option<C::Io>,
    buf: BytesMut,
    policy: LinkPolicy,
    last_request: Option<Instant>,
}

impl<C: Connector> Link<C> {
    /// A link for the device named `device` (used in errors).
    pub fn new(device: impl Into<String>, connector: C, policy: LinkPolicy) -> Self {
        Self {
            device: device.into(),
            reconnector: Reconnector::new(connector, policy),
            io: None,
            buf: BytesMut::with_capacity(256),
            policy,
            last_request: None,
        }
    }

    /// The device's configured name.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The port's name.
    pub fn port(&self) -> &str {
        self.reconnector.port()
    }

    /// The link's timing.
    pub fn policy(&self) -> LinkPolicy {
        self.policy
    }

    /// How many times the port has been opened or tried.
    pub fn open_attempts(&self) -> u64 {
        self.reconnector.attempts()
    }

    /// Whether the port is open now.
    pub fn is_open(&self) -> bool {
        self.io.is_some()
    }

    /// Closes the port; the next request reopens it.
    pub fn close(&mut self) {
        self.io = None;
        self.buf.clear();
    }

    /// Sends one request and returns its deadline. Opens the port if needed and drops any
    /// stale input first, so a late reply to an earlier request is never taken for this one.
    pub async fn send(&mut self, bytes: &[u8], command: &str) -> Result<Instant, LinkError> {
        if let Some(last) = self.last_request {
            tokio::time::sleep_until(last + self.policy.gap).await;
        }
        let deadline = Instant::now() + self.policy.timeout;
        if self.io.is_none() {
            match self.reconnector.connect_before(deadline).await {
                Ok(io) => self.io = Some(io),
                Err(source) => return Err(self.port_gone(command, source)),
            }
        }
        self.discard_input(command)?;
        let io = self.io.as_mut().expect("opened above");
        let written = tokio::time::timeout_at(deadline, async {
            io.write_all(bytes).await?;
            io.flush().await
        })
        .await;
        self.last_request = Some(Instant::now());
        match written {
            Ok(Ok(())) => Ok(deadline),
            Ok(Err(source)) => {
                self.close();
                Err(self.port_gone(command, source))
            }
            Err(_) => Err(self.timeout(command)),
        }
    }

    /// Waits for the next frame before `deadline`, skipping (and remembering) garbage.
    pub async fn receive<D: Decode>(
        &mut self,
        decoder: &mut D,
        command: &str,
        deadline: Instant,
    ) -> Result<D::Frame, LinkError> {
        let mut garbled: Option<String> = None;
        loop {
            // A peer that always has bytes ready must not hold us past the deadline. tokio's
            // cooperative budget already lets the timer win in that race; this check does not
            // depend on it.
            if Instant::now() >= deadline {
                return Err(self.expired(command, garbled));
            }
            match decoder.decode(&mut self.buf) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(device = %self.device, error = %e, "skipping garbage");
                    garbled = Some(e.to_string());
                    continue;
                }
            }
            let Some(io) = self.io.as_mut() else {
                let source = io::Error::new(io::ErrorKind::NotConnected, "port closed");
                return Err(self.port_gone(command, source));
            };
            match tokio::time::timeout_at(deadline, io.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) => {
                    self.close();
                    let source = io::Error::new(io::ErrorKind::UnexpectedEof, "port hung up");
                    return Err(self.port_gone(command, source));
                }
                Ok(Ok(_)) => {}
                Ok(Err(source)) => {
                    self.close();
                    return Err(self.port_gone(command, source));
                }
                Err(_) => return Err(self.expired(command, garbled)),
            }
        }
    }

    /// The deadline passed: garbled if garbage was all that came, else a timeout.
    fn expired(&self, command: &str, garbled: Option<String>) -> LinkError {
        match garbled {
            Some(detail) => LinkError::Garbled {
                device: self.device.clone(),
                port: self.port().to_owned(),
                command: command.to_owned(),
                detail,
            },
            None => self.timeout(command),
        }
    }

    /// Reads and drops whatever has arrived, without waiting.
    fn discard_input(&mut self, command: &str) -> Result<(), LinkError> {
        if !self.buf.is_empty() {
            tracing::debug!(device = %self.device, stale = %escape(&self.buf), "dropping stale input");
            self.buf.clear();
        }
        let Some(io) = self.io.as_mut() else { return Ok(()) };
        let mut scratch = [0u8; 256];
        loop {
            match io.read(&mut scratch).now_or_never() {
                None => return Ok(()),
                Some(Ok(n)) if n > 0 => {
                    tracing::debug!(device = %self.device, stale = %escape(&scratch[..n]), "dropping stale input");
                }
                Some(Ok(_)) => {
                    self.close();
                    let source = io::Error::new(io::ErrorKind::UnexpectedEof, "port hung up");
                    return Err(self.port_gone(command, source));
                }
                Some(Err(source)) => {
                    self.close();
                    return Err(self.port_gone(command, source));
                }
            }
        }
    }

    /// An error for a reply that parsed but does not answer `command`.
    pub fn unexpected(&self, command: &str, reply: impl fmt::Debug) -> LinkError {
        LinkError::Unexpected {
            device: self.device.clone(),
            port: self.port().to_owned(),
            command: command.to_owned(),
            reply: format!("{reply:?}"),
        }
    }

    fn timeout(&self, command: &str) -> LinkError {
        LinkError::Timeout {
            device: self.device.clone(),
            port: self.port().to_owned(),
            command: command.to_owned(),
            timeout: self.policy.timeout,
        }
    }

    fn port_gone(&self, command: &str, source: io::Error) -> LinkError {
        // A tty whose other side closed (an unplugged adapter, a pty whose master is gone)
        // reads EIO; say what it means.
        let source = if source.raw_os_error() == Some(5) {
            io::Error::new(io::ErrorKind::UnexpectedEof, "port hung up")
        } else {
            source
        };
        LinkError::PortGone {
            device: self.device.clone(),
            port: self.port().to_owned(),
            command: command.to_owned(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_time_counts_start_parity_and_stop_bits() {
        let n81 = SerialSettings::n81(9600);
        assert_eq!(n81.bits_per_char(), 10);
        // 96 characters at 9600 8N1 take exactly 100 ms.
        assert_eq!(n81.frame_time(96), Duration::from_millis(100));
        let sartorius = SerialSettings { parity: Parity::Odd, ..n81 };
        assert_eq!(sartorius.bits_per_char(), 11);
    }

    /// A peer that never stops talking garbage, so a read is always ready.
    #[derive(Debug)]
    struct Chatty;

    impl Connector for Chatty {
        type Io = tokio::io::DuplexStream;

        async fn connect(&self) -> io::Result<Self::Io> {
            use tokio::io::AsyncWriteExt as _;
            let (ours, mut theirs) = tokio::io::duplex(64);
            tokio::spawn(async move {
                while theirs.write_all(b"\xff\xfe\xfd\r\n").await.is_ok() {
                    tokio::task::yield_now().await;
                }
            });
            Ok(ours)
        }

        fn port(&self) -> &str {
            "chatty"
        }
    }

    #[tokio::test]
    async fn a_peer_that_never_stops_sending_cannot_hold_a_request_past_its_deadline() {
        let policy = LinkPolicy { timeout: Duration::from_millis(100), ..LinkPolicy::default() };
        let mut link = Link::new("balance", Chatty, policy);
        let started = std::time::Instant::now();
        let deadline = link.send(b"S\r\n", "S").await.unwrap();
        let mut decoder = crate::balance::mt_sics::codec::ReplyDecoder;
        let err = link.receive(&mut decoder, "S", deadline).await.unwrap_err();
        assert!(matches!(err, LinkError::Garbled { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    }

    /// A connector that fails a set number of times, to see the backoff without a port.
    #[derive(Debug)]
    struct Flaky {
        failures: std::sync::atomic::AtomicU32,
    }

    impl Connector for Flaky {
        type Io = tokio::io::DuplexStream;

        async fn connect(&self) -> io::Result<Self::Io> {
            use std::sync::atomic::Ordering;
            if self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(io::Error::new(io::ErrorKind::NotFound, "unplugged"));
            }
            Ok(tokio::io::duplex(64).0)
        }

        fn port(&self) -> &str {
            "flaky"
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reconnection_backs_off_and_respects_the_deadline() {
        let policy = LinkPolicy {
            timeout: Duration::from_millis(100),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(40),
            gap: Duration::ZERO,
        };
        let mut r = Reconnector::new(Flaky { failures: 6.into() }, policy);
        let start = Instant::now();
        // Attempts at 0, 10, 30, 70 ms; the next would be at 110 ms, past the deadline.
        let err = r.connect_before(start + policy.timeout).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(r.attempts(), 4);
        assert_eq!(start.elapsed(), Duration::from_millis(70));
        // The backoff carries over: attempts at 110, 150 fail, 190 succeeds.
        r.connect_before(start + Duration::from_secs(1)).await.unwrap();
        assert_eq!(r.attempts(), 7);
        assert_eq!(start.elapsed(), Duration::from_millis(190));
    }
}
