//! A wire-level Watson-Marlow 520 on the same codec as the driver, echoing commands as the
//! pump does by default. Motion goes to a [`PumpPort`]; unknown commands are ignored, since
//! the manuals document no error reply.

use std::io;
use std::sync::{Mutex, PoisonError};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::codec::{Command, MAX_LINE, Status, encode_status, parse_command};
use crate::codec::take_line;
use crate::emulator::{FaultHandle, corrupt_line, is_hangup, send_reply};
use crate::pump::{Direction, Motion, PumpPort};

/// The pump an emulator pretends to be.
#[derive(Debug, Clone, PartialEq)]
pub struct Wm520Model {
    /// Pump number it answers to.
    pub address: u8,
    /// Echo each command line.
    pub echo: bool,
    /// mL per revolution of the fitted tube.
    pub ml_per_rev: f64,
    /// Tacho pulses per revolution.
    pub pulses_per_rev: u32,
    /// Highest speed; faster requests are clamped, as the pump does.
    pub max_rpm: f64,
}

impl Default for Wm520Model {
    fn default() -> Self {
        Self { address: 1, echo: true, ml_per_rev: 1.0, pulses_per_rev: 10_982, max_rpm: 220.0 }
    }
}

/// A Watson-Marlow 520 on the wire.
#[derive(Debug)]
pub struct Wm520Emulator {
    port: PumpPort,
    model: Wm520Model,
    cleared_ml: Mutex<f64>,
    faults: FaultHandle,
}

impl Wm520Emulator {
    /// A pump whose motion is reported through `port`.
    pub fn new(port: PumpPort, model: Wm520Model) -> Self {
        Self { port, model, cleared_ml: Mutex::new(0.0), faults: FaultHandle::new() }
    }

    /// The plant port.
    pub fn port(&self) -> PumpPort {
        self.port.clone()
    }

    /// The fault switch.
    pub fn faults(&self) -> FaultHandle {
        self.faults.clone()
    }

    /// Serves one host until it hangs up.
    pub async fn serve<T: AsyncRead + AsyncWrite + Unpin>(&self, mut io: T) -> io::Result<()> {
        let mut buf = BytesMut::with_capacity(64);
        loop {
            while let Some(line) = take_line(&mut buf, MAX_LINE).unwrap_or(None) {
                let mut out = Vec::new();
                let fault = self.faults.get();
                if self.model.echo && fault != crate::emulator::Fault::Silent {
                    out.extend_from_slice(&line);
                    out.extend_from_slice(b"\r\n");
                }
                let reply = match parse_command(&line) {
                    Some((Some(a), command)) if a == self.model.address => self.respond(command),
                    Some((None, command)) => {
                        let _ = self.respond(command);
                        None
                    }
                    _ => None,
                };
                match reply {
                    Some(reply) => {
                        io.write_all(&out).await?;
                        match send_reply(&mut io, &fault, reply, corrupt_line).await {
                            Err(e) if is_hangup(&e) => return Ok(()),
                            other => other?,
                        }
                    }
                    None if !out.is_empty() => {
                        match send_reply(&mut io, &fault, out, corrupt_line).await {
                            Err(e) if is_hangup(&e) => return Ok(()),
                            other => other?,
                        }
                    }
                    None => {}
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

    fn tacho(&self) -> u64 {
        let (forward, reverse) = self.port.dispensed();
        let cleared = *self.cleared_ml.lock().unwrap_or_else(PoisonError::into_inner);
        let ml = (forward + reverse - cleared).max(0.0);
        // Saturating conversion of a non-negative count.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let pulses =
            (ml / self.model.ml_per_rev * f64::from(self.model.pulses_per_rev)).round() as u64;
        pulses
    }

    fn respond(&self, command: Command) -> Option<Vec<u8>> {
        let ml_per_rev = self.model.ml_per_rev;
        match command {
            Command::Speed(rpm) => {
                self.port.set_rate(rpm.clamp(0.0, self.model.max_rpm) * ml_per_rev)
            }
            Command::Go => self.port.start(None),
            Command::Stop => self.port.stop(false),
            Command::Clockwise => self.port.set_direction(Direction::Forward),
            Command::CounterClockwise => self.port.set_direction(Direction::Reverse),
            Command::Dose(pulses) => {
                // Precision loss only beyond 2^53 pulses.
                #[allow(clippy::cast_precision_loss)]
                let ml = pulses as f64 / f64::from(self.model.pulses_per_rev) * ml_per_rev;
                self.port.start(Some(ml));
            }
            Command::ClearTacho => {
                let (forward, reverse) = self.port.dispensed();
                *self.cleared_ml.lock().unwrap_or_else(PoisonError::into_inner) = forward + reverse;
            }
            Command::Status => {
                let mut out = BytesMut::new();
                encode_status(
                    &Status {
                        pump_type: "520Du".into(),
                        ml_per_rev,
                        pumphead: "520R".into(),
                        tube: "9.6MM".into(),
                        rpm: self.port.rate() / ml_per_rev,
                        clockwise: self.port.direction() == Direction::Forward,
                        number: self.model.address,
                        tacho: self.tacho(),
                        running: matches!(self.port.motion(), Motion::Running(_)),
                    },
                    &mut out,
                );
                return Some(out.to_vec());
            }
            Command::ReadTacho => return Some(format!("{}\r\n", self.tacho()).into_bytes()),
            Command::Running => {
                let running = matches!(self.port.motion(), Motion::Running(_));
                return Some(format!("{}\r\n", u8::from(running)).into_bytes());
            }
        }
        None
    }
}
