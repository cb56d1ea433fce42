//! A wire-level NE-1000 on the same codec as the driver. What it is told to do goes to a
//! [`PumpPort`]; how much liquid actually moved comes back from it.

use std::io;
use std::sync::{Mutex, PoisonError};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};

use super::codec::{
    CommandDecoder, CommandError, Mode, Prompt, Received, Reply, ReplyData, encode_reply,
    format_number, split_number,
};
use crate::codec::{Decode as _, DecodeError};
use crate::emulator::{FaultHandle, is_hangup, send_reply};
use crate::pump::{Direction, Motion, PumpPort};

/// The pump an emulator pretends to be.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEraModel {
    /// `VER` reply.
    pub version: String,
    /// Network address it answers to.
    pub address: u8,
    /// Highest rate accepted, mL/min (above: `?OOR`).
    pub max_rate_ml_min: f64,
    /// Answer the first command with the power-on alarm `A?R`, as a pump fresh from power-up
    /// does.
    pub power_on_alarm: bool,
}

impl Default for NewEraModel {
    fn default() -> Self {
        Self {
            version: "NE1000V3.923".into(),
            address: 0,
            max_rate_ml_min: 30.0,
            power_on_alarm: true,
        }
    }
}

#[derive(Debug)]
struct Settings {
    diameter_mm: f64,
    target_ml: Option<f64>,
    safe_timeout_s: u32,
}

/// A New Era NE-1000 on the wire.
#[derive(Debug)]
pub struct NewEraEmulator {
    port: PumpPort,
    model: NewEraModel,
    settings: Mutex<Settings>,
    faults: FaultHandle,
}

impl NewEraEmulator {
    /// A pump whose motion is reported through `port`.
    pub fn new(port: PumpPort, model: NewEraModel) -> Self {
        if model.power_on_alarm {
            port.raise_alarm(crate::pump::PumpAlarm::Reset);
        }
        let settings = Settings { diameter_mm: 14.43, target_ml: None, safe_timeout_s: 0 };
        Self { port, model, settings: Mutex::new(settings), faults: FaultHandle::new() }
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
            loop {
                let (mode, reply) = match CommandDecoder.decode(&mut buf) {
                    Ok(Some(received)) => {
                        if received.address.is_some_and(|a| a != self.model.address) {
                            continue;
                        }
                        (received.mode, self.respond(&received))
                    }
                    Ok(None) => break,
                    Err(DecodeError::Checksum { .. }) => {
                        (Mode::Safe, self.error(CommandError::BadPacket))
                    }
                    Err(_) => continue,
                };
                let mut out = BytesMut::new();
                encode_reply(mode, &reply, &mut out);
                let corrupt = |bytes: &mut [u8]| corrupt_frame(mode, bytes);
                match send_reply(&mut io, &self.faults.get(), out.to_vec(), corrupt).await {
                    Err(e) if is_hangup(&e) => return Ok(()),
                    other => other?,
                }
            }
            let watchdog = self.settings().safe_timeout_s;
            let read = io.read_buf(&mut buf);
            let read = if watchdog > 0 {
                // `SAF n`: no packet for n seconds stops the pump with alarm T.
                match tokio::time::timeout(std::time::Duration::from_secs(watchdog.into()), read)
                    .await
                {
                    Ok(read) => read,
                    Err(_) => {
                        self.port.raise_alarm(crate::pump::PumpAlarm::CommsTimeout);
                        continue;
                    }
                }
            } else {
                read.await
            };
            match read {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if is_hangup(&e) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    fn prompt(&self) -> Prompt {
        match self.port.motion() {
            Motion::Running(Direction::Forward) => Prompt::Infusing,
            Motion::Running(Direction::Reverse) => Prompt::Withdrawing,
            Motion::Paused => Prompt::Paused,
            Motion::Stopped | Motion::Other(_) => Prompt::Stopped,
        }
    }

    fn reply(&self, data: ReplyData) -> Reply {
        Reply { address: self.model.address, prompt: self.prompt(), data }
    }

    fn error(&self, e: CommandError) -> Reply {
        self.reply(ReplyData::Error(e))
    }

    fn settings(&self) -> std::sync::MutexGuard<'_, Settings> {
        self.settings.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn respond(&self, received: &Received) -> Reply {
        if let Some(alarm) = self.port.take_alarm() {
            // The command is not executed; the host acknowledges by sending it again.
            return Reply {
                address: self.model.address,
                prompt: Prompt::Alarm,
                data: ReplyData::Alarm(alarm),
            };
        }
        let text = received.text.as_str();
        let running = matches!(self.port.motion(), Motion::Running(_));
        let value = |v: String| self.reply(ReplyData::Value(v));
        let ok = || self.reply(ReplyData::None);
        let (name, arg) = text.split_at(text.len().min(3));
        match (name, arg) {
            ("", "") => ok(),
            ("VER", "") => value(self.model.version.clone()),
            ("DIA", "") => value(format_number(self.settings().diameter_mm)),
            ("DIA", _) if running => self.error(CommandError::NotApplicable),
            ("DIA", arg) => match split_number(arg) {
                Some((d, "")) if (0.1..=50.0).contains(&d) => {
                    self.settings().diameter_mm = d;
                    ok()
                }
                Some(_) => self.error(CommandError::OutOfRange),
                None => self.error(CommandError::Unknown),
            },
            ("RAT", "") => value(format!("{}MM", format_number(self.port.rate()))),
            ("RAT", arg) => {
                let Some((number, unit)) = split_number(arg) else {
                    return self.error(CommandError::Unknown);
                };
                let ml_min = match unit {
                    "" | "MM" => number,
                    "MH" => number / 60.0,
                    "UM" => number / 1000.0,
                    "UH" => number / 60_000.0,
                    _ => return self.error(CommandError::Unknown),
                };
                if ml_min > self.model.max_rate_ml_min {
                    return self.error(CommandError::OutOfRange);
                }
                self.port.set_rate(ml_min);
                ok()
            }
            ("VOL", "") => {
                value(format!("{}ML", format_number(self.settings().target_ml.unwrap_or(0.0))))
            }
            ("VOL", "ML" | "UL") => ok(),
            ("VOL", arg) => match split_number(arg) {
                Some((v, "")) => {
                    self.settings().target_ml = (v > 0.0).then_some(v);
                    ok()
                }
                _ => self.error(CommandError::OutOfRange),
            },
            ("DIR", "") => value(
                match self.port.direction() {
                    Direction::Forward => "INF",
                    Direction::Reverse => "WDR",
                }
                .into(),
            ),
            ("DIR", "INF") => {
                self.port.set_direction(Direction::Forward);
                ok()
            }
            ("DIR", "WDR") => {
                self.port.set_direction(Direction::Reverse);
                ok()
            }
            ("RUN", "") => {
                if self.port.rate() <= 0.0 {
                    return self.error(CommandError::NotApplicable);
                }
                let target = self.settings().target_ml;
                self.port.start(target);
                ok()
            }
            ("STP", "") => {
                self.port.stop(true);
                ok()
            }
            ("DIS", "") => {
                let (infused, withdrawn) = self.port.dispensed();
                value(format!("I{}W{}ML", format_number(infused), format_number(withdrawn)))
            }
            ("CLD", "INF") => {
                self.port.clear(Some(Direction::Forward));
                ok()
            }
            ("CLD", "WDR") => {
                self.port.clear(Some(Direction::Reverse));
                ok()
            }
            ("SAF", arg) => match arg.parse::<u32>() {
                Ok(seconds) => {
                    self.settings().safe_timeout_s = seconds;
                    ok()
                }
                Err(_) => self.error(CommandError::OutOfRange),
            },
            _ => self.error(CommandError::Unknown),
        }
    }
}

/// Damages a reply: flips the CRC in safe mode, the address digit in basic mode.
fn corrupt_frame(mode: Mode, bytes: &mut [u8]) {
    let at = match mode {
        Mode::Safe => bytes.len().saturating_sub(2),
        Mode::Basic => 1,
    };
    if let Some(b) = bytes.get_mut(at) {
        *b ^= 0x40;
    }
}
