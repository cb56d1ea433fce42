//! A wire-level MT-SICS balance, built on the same codec as the driver.
//!
//! Zero, tare and range live in the emulator and survive the host reconnecting; the load comes
//! from a [`WeightSource`]. Commands that need stability (`S`, `Z`, `T`) poll the source for up
//! to [`MtSicsModel::stable_wait`] and answer `I` if the load did not settle, as a balance does
//! when its stability timeout runs out.

use std::io;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::time::Instant;

use super::codec::{
    Command, CommandDecoder, Data, GeneralError, Reply, ReplyId, Request, Status, WeightField,
    encode_reply,
};
use crate::balance::{Display, PanSample, Scale, WeightSource};
use crate::codec::Decode as _;
use crate::emulator::{FaultHandle, corrupt_line, is_hangup, send_reply};
use crate::units::{Weight, WeightUnit};

/// The balance an emulator pretends to be.
#[derive(Debug, Clone, PartialEq)]
pub struct MtSicsModel {
    /// Type designation, as `I2` prints it before the capacity.
    pub model: String,
    /// Serial number (`I4`, `@`).
    pub serial: String,
    /// Software version (`I3`).
    pub firmware: String,
    /// Maximum capacity in grams.
    pub capacity_g: f64,
    /// Display step in grams.
    pub readability_g: f64,
    /// How long `S`, `Z` and `T` wait for the load to settle before answering `I`.
    pub stable_wait: Duration,
    /// Interval between `SIR` lines.
    pub stream_period: Duration,
    /// Whether level 1 (`T`, `TA`, `TAC`) is implemented; level-0-only balances answer `ES`.
    pub level1: bool,
    /// What ends a running `SIR` stream.
    pub stream_cancel: StreamCancel,
}

/// What ends an `SIR` stream. The manual says any weight command or `@`; firmware differs
/// (see the reference's "verify per model"), and a faulty balance may not stop at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCancel {
    /// Any other command (the manual).
    AnyCommand,
    /// Only `@`; other commands are answered while the stream keeps running.
    ResetOnly,
    /// Nothing: the stream runs on whatever the host sends.
    Never,
}

impl Default for MtSicsModel {
    fn default() -> Self {
        Self {
            model: "XS205DU Excellence".into(),
            serial: "B123456789".into(),
            firmware: "2.10 10.28.0.493.142".into(),
            capacity_g: 220.0,
            readability_g: 0.0001,
            stable_wait: Duration::from_millis(300),
            stream_period: Duration::from_millis(50),
            level1: true,
            stream_cancel: StreamCancel::AnyCommand,
        }
    }
}

/// An MT-SICS balance on the wire.
#[derive(Debug)]
pub struct MtSicsEmulator<W> {
    source: W,
    model: MtSicsModel,
    scale: Mutex<Scale>,
    faults: FaultHandle,
}

impl<W: WeightSource> MtSicsEmulator<W> {
    /// A balance weighing what `source` reports.
    pub fn new(source: W, model: MtSicsModel) -> Self {
        let scale = Scale::new(model.capacity_g, model.readability_g);
        Self { source, model, scale: Mutex::new(scale), faults: FaultHandle::new() }
    }

    /// The fault switch.
    pub fn faults(&self) -> FaultHandle {
        self.faults.clone()
    }

    fn scale(&self) -> std::sync::MutexGuard<'_, Scale> {
        self.scale.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves one host until it hangs up.
    pub async fn serve<T: AsyncRead + AsyncWrite + Unpin>(&self, mut io: T) -> io::Result<()> {
        let mut buf = BytesMut::with_capacity(256);
        let mut streaming = false;
        let mut ticker = tokio::time::interval(self.model.stream_period);
        loop {
            loop {
                let request = match CommandDecoder.decode(&mut buf) {
                    Ok(Some(request)) => request,
                    Ok(None) => break,
                    Err(_) => Request::Unknown,
                };
                if streaming {
                    streaming = match self.model.stream_cancel {
                        StreamCancel::AnyCommand => false,
                        StreamCancel::ResetOnly => {
                            !matches!(request, Request::Command(Command::Reset))
                        }
                        StreamCancel::Never => true,
                    };
                }
                if matches!(request, Request::Command(Command::WeighRepeat)) {
                    streaming = true;
                    ticker.reset_immediately();
                    continue;
                }
                let reply = self.respond(request).await;
                self.send(&mut io, &reply).await?;
            }
            tokio::select! {
                read = io.read_buf(&mut buf) => match read {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) if is_hangup(&e) => return Ok(()),
                    Err(e) => return Err(e),
                },
                _ = ticker.tick(), if streaming => {
                    let reply = self.weight_reply(self.source.sample());
                    self.send(&mut io, &reply).await?;
                }
            }
        }
    }

    async fn send<T: AsyncWrite + Unpin>(&self, io: &mut T, reply: &Reply) -> io::Result<()> {
        let mut out = BytesMut::new();
        encode_reply(reply, &mut out);
        match send_reply(io, &self.faults.get(), out.to_vec(), corrupt_line).await {
            Err(e) if is_hangup(&e) => Ok(()),
            other => other,
        }
    }

    /// Polls the source until the load settles or the stability timeout runs out.
    async fn settled(&self) -> Option<PanSample> {
        let give_up = Instant::now() + self.model.stable_wait;
        loop {
            let sample = self.source.sample();
            if sample.settled {
                return Some(sample);
            }
            if Instant::now() >= give_up {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn field(&self, grams: f64) -> Data {
        Data::Weight(WeightField {
            weight: Weight { value: grams, unit: WeightUnit::Gram },
            decimals: self.scale().decimals(),
        })
    }

    /// The `S` line for a sample (answering `S`, `SI` and `SIR`).
    fn weight_reply(&self, sample: PanSample) -> Reply {
        let display = self.scale().display(sample);
        let (status, data) = match display {
            Display::Net { grams, stable } => {
                (if stable { Status::Stable } else { Status::Dynamic }, self.field(grams))
            }
            Display::Over => (Status::Overload, Data::None),
            Display::Under => (Status::Underload, Data::None),
        };
        Reply::Response { id: ReplyId::S, status, data }
    }

    fn texts(id: ReplyId, texts: &[&str]) -> Reply {
        Reply::Response {
            id,
            status: Status::Done,
            data: Data::Texts(texts.iter().map(|t| (*t).to_owned()).collect()),
        }
    }

    fn status(id: ReplyId, status: Status) -> Reply {
        Reply::Response { id, status, data: Data::None }
    }

    async fn respond(&self, request: Request) -> Reply {
        let command = match request {
            Request::Unknown => return Reply::Error(GeneralError::Syntax),
            Request::BadParameter(id) => return Self::status(id, Status::BadParameter),
            Request::Command(c) => c,
        };
        let level1 = matches!(command, Command::Tare | Command::PresetTare(_) | Command::ClearTare);
        if level1 && !self.model.level1 {
            return Reply::Error(GeneralError::Syntax);
        }
        match command {
            Command::Reset => {
                self.scale().tare_g = 0.0;
                Self::texts(ReplyId::I4, &[&self.model.serial])
            }
            Command::Info(1) => {
                let level = if self.model.level1 { "01" } else { "0" };
                Self::texts(ReplyId::I1, &[level, "2.30", "2.20", "", ""])
            }
            Command::Info(2) => {
                let scale = self.scale().clone();
                let capacity = format!(
                    "{} {:.*} g",
                    self.model.model,
                    usize::from(scale.decimals()),
                    scale.capacity_g
                );
                Self::texts(ReplyId::I2, &[&capacity])
            }
            Command::Info(3) => Self::texts(ReplyId::I3, &[&self.model.firmware]),
            Command::Info(_) => Self::texts(ReplyId::I4, &[&self.model.serial]),
            Command::Weigh => match self.settled().await {
                Some(sample) => self.weight_reply(sample),
                None => Self::status(ReplyId::S, Status::NotExecutable),
            },
            Command::WeighNow | Command::WeighRepeat => self.weight_reply(self.source.sample()),
            Command::Zero => match self.settled().await {
                Some(sample) => match self.scale().zero(sample) {
                    Ok(()) => Self::status(ReplyId::Z, Status::Done),
                    Err(Display::Under) => Self::status(ReplyId::Z, Status::Underload),
                    Err(_) => Self::status(ReplyId::Z, Status::Overload),
                },
                None => Self::status(ReplyId::Z, Status::NotExecutable),
            },
            Command::ZeroNow => {
                let sample = self.source.sample();
                match self.scale().zero(sample) {
                    Ok(()) if sample.settled => Self::status(ReplyId::Zi, Status::Stable),
                    Ok(()) => Self::status(ReplyId::Zi, Status::Dynamic),
                    Err(Display::Under) => Self::status(ReplyId::Zi, Status::Underload),
                    Err(_) => Self::status(ReplyId::Zi, Status::Overload),
                }
            }
            Command::Tare => match self.settled().await {
                Some(sample) => {
                    let tared = self.scale().tare(sample);
                    match tared {
                        Ok(grams) => Reply::Response {
                            id: ReplyId::T,
                            status: Status::Stable,
                            data: self.field(grams),
                        },
                        Err(Display::Under) => Self::status(ReplyId::T, Status::Underload),
                        Err(_) => Self::status(ReplyId::T, Status::Overload),
                    }
                }
                None => Self::status(ReplyId::T, Status::NotExecutable),
            },
            Command::PresetTare(Some(field)) => {
                let grams = field.weight.in_grams();
                if grams > self.model.capacity_g {
                    return Self::status(ReplyId::Ta, Status::BadParameter);
                }
                self.scale().tare_g = grams;
                Reply::Response { id: ReplyId::Ta, status: Status::Done, data: self.field(grams) }
            }
            Command::PresetTare(None) => {
                let tare = self.scale().tare_g;
                Reply::Response { id: ReplyId::Ta, status: Status::Done, data: self.field(tare) }
            }
            Command::ClearTare => {
                self.scale().tare_g = 0.0;
                Self::status(ReplyId::Tac, Status::Done)
            }
        }
    }
}
