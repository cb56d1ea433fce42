//! A wire-level SBI balance on the same codec as the driver. Zero and tare live here; the load
//! comes from a [`WeightSource`]. Control commands are not answered, as on the real balance.

use std::io;
use std::sync::{Mutex, PoisonError};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};

use super::codec::{Command, CommandDecoder, Ident, Reply, Request, encode_reply};
use crate::balance::{Display, Scale, WeightSource};
use crate::codec::Decode as _;
use crate::emulator::{FaultHandle, corrupt_line, is_hangup, send_reply};
use crate::units::WeightUnit;

/// The balance an SBI emulator pretends to be.
#[derive(Debug, Clone, PartialEq)]
pub struct SbiModel {
    /// `ESC x1_` reply.
    pub model: String,
    /// `ESC x2_` reply.
    pub serial: String,
    /// `ESC x3_` reply.
    pub software: String,
    /// Capacity in grams.
    pub capacity_g: f64,
    /// Display step in grams.
    pub readability_g: f64,
    /// Print the 22-character format with an ID instead of 16 characters.
    pub with_id: bool,
    /// With `with_id`: the lines one print sends, in order (a GLP-style block sends gross,
    /// tare, then net). Only `Net`, `Gross` and `Tare` are meaningful.
    pub print_ids: Vec<Ident>,
}

impl Default for SbiModel {
    fn default() -> Self {
        Self {
            model: "BCE224I-1S".into(),
            serial: "0037512345".into(),
            software: "00-37-01".into(),
            capacity_g: 220.0,
            readability_g: 0.0001,
            with_id: false,
            print_ids: vec![Ident::Net],
        }
    }
}

/// An SBI balance on the wire.
#[derive(Debug)]
pub struct SbiEmulator<W> {
    source: W,
    model: SbiModel,
    scale: Mutex<Scale>,
    faults: FaultHandle,
}

impl<W: WeightSource> SbiEmulator<W> {
    /// A balance weighing what `source` reports.
    pub fn new(source: W, model: SbiModel) -> Self {
        let scale = Scale::new(model.capacity_g, model.readability_g);
        Self { source, model, scale: Mutex::new(scale), faults: FaultHandle::new() }
    }

    /// The fault switch.
    pub fn faults(&self) -> FaultHandle {
        self.faults.clone()
    }

    /// Serves one host until it hangs up.
    pub async fn serve<T: AsyncRead + AsyncWrite + Unpin>(&self, mut io: T) -> io::Result<()> {
        let mut buf = BytesMut::with_capacity(64);
        loop {
            loop {
                let request = match CommandDecoder.decode(&mut buf) {
                    Ok(Some(request)) => request,
                    Ok(None) => break,
                    Err(_) => continue,
                };
                let mut out = BytesMut::new();
                for reply in self.respond(request) {
                    encode_reply(&reply, &mut out);
                }
                if !out.is_empty() {
                    match send_reply(&mut io, &self.faults.get(), out.to_vec(), corrupt_line).await
                    {
                        Err(e) if is_hangup(&e) => return Ok(()),
                        other => other?,
                    }
                }
            }
            match io.read_buf(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if is_hangup(&e) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    fn respond(&self, request: Request) -> Vec<Reply> {
        let Request::Command(command) = request else { return Vec::new() };
        let sample = self.source.sample();
        let scale = self.scale.lock().unwrap_or_else(PoisonError::into_inner);
        if command == Command::Print
            && self.model.with_id
            && let Display::Net { grams, stable } = scale.display(sample)
        {
            let tare = scale.tare_g;
            return self
                .model
                .print_ids
                .iter()
                .map(|&ident| Reply::Weight {
                    ident,
                    value: match ident {
                        Ident::Gross => grams + tare,
                        Ident::Tare => tare,
                        Ident::Net | Ident::None => grams,
                    },
                    decimals: scale.decimals(),
                    unit: stable.then_some(WeightUnit::Gram),
                })
                .collect();
        }
        drop(scale);
        self.respond_one(command).into_iter().collect()
    }

    fn respond_one(&self, command: Command) -> Option<Reply> {
        let sample = self.source.sample();
        let mut scale = self.scale.lock().unwrap_or_else(PoisonError::into_inner);
        match command {
            Command::Print => Some(match scale.display(sample) {
                Display::Net { grams, stable } => Reply::Weight {
                    ident: if self.model.with_id { Ident::Net } else { Ident::None },
                    value: grams,
                    decimals: scale.decimals(),
                    unit: stable.then_some(WeightUnit::Gram),
                },
                Display::Over => Reply::High,
                Display::Under => Reply::Low,
            }),
            Command::Tare => {
                let _ = scale.tare(sample);
                None
            }
            Command::Zero => {
                let _ = scale.zero(sample);
                None
            }
            Command::TareOrZero => {
                // Legacy behaviour: zero when the pan is near zero, otherwise tare.
                if scale.zero(sample).is_err() {
                    let _ = scale.tare(sample);
                }
                None
            }
            Command::Info(1) => Some(Reply::Text(self.model.model.clone())),
            Command::Info(2) => Some(Reply::Text(self.model.serial.clone())),
            Command::Info(_) => Some(Reply::Text(self.model.software.clone())),
        }
    }
}
