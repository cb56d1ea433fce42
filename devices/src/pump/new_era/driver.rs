//! The NE-1000 driver. Every command gets exactly one reply; an alarm reply means the command
//! was *not* executed.
//!
//! **Alarms.** The driver acknowledges an alarm with the empty status query, which executes
//! nothing, and records it for [`Pump::take_alarms`]. It never re-sends the caller's command:
//! re-sending `RUN` or `VOL` after a stall (`A?S`), a watchdog stop (`A?T`) or a reset (`A?R`)
//! would restart the pump against whatever stopped it. The caller gets
//! [`RefusalReason::Alarm`] and decides. Only commands that cannot move liquid are sent again
//! after the acknowledgement: the driver's own setup (`DIA`, `VOLML`), `STP` and bare queries;
//! a status query is answered by the acknowledgement itself. After `A?R` the pump may have
//! lost its settings, so the setup is sent again before the next command.

use bytes::BytesMut;

use super::codec::{
    CommandError, Mode, Prompt, Reply, ReplyData, ReplyDecoder, encode_command, format_number,
};
use crate::error::{DeviceResult, LinkError, Refusal, RefusalReason};
use crate::link::{Connector, Link, LinkPolicy};
use crate::pump::{Direction, Dispensed, Motion, Pump, PumpAlarm, PumpLimits, PumpStatus};
use crate::units::{FlowRate, Volume};

/// Protocol and calibration settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NewEraOptions {
    /// Basic or safe framing; it must match the pump's setting.
    pub mode: Mode,
    /// Network address (0–99); `None` sends no address prefix.
    pub address: Option<u8>,
    /// Inside diameter of the loaded syringe in mm, sent as `DIA` when the port opens. It
    /// turns rates and volumes into plunger travel, so it is calibration, not a preference.
    pub syringe_diameter_mm: f64,
    /// Configured limits, refused before sending.
    pub limits: PumpLimits,
}

/// A New Era syringe pump on a link.
#[derive(Debug)]
pub struct NewEraPump<C: Connector> {
    link: Link<C>,
    options: NewEraOptions,
    configured: bool,
    alarms: Vec<PumpAlarm>,
}

impl<C: Connector> NewEraPump<C> {
    /// A driver for the pump named `device`.
    pub fn new(
        device: impl Into<String>,
        connector: C,
        policy: LinkPolicy,
        options: NewEraOptions,
    ) -> Self {
        Self {
            link: Link::new(device, connector, policy),
            options,
            configured: false,
            alarms: Vec::new(),
        }
    }

    /// The underlying link.
    pub fn link(&self) -> &Link<C> {
        &self.link
    }

    /// `VER`: the firmware string, e.g. `NE1000V3.923`.
    pub async fn version(&mut self) -> DeviceResult<String> {
        Ok(self.command("VER").await?.map(|r| match r.data {
            ReplyData::Value(v) => v,
            _ => String::new(),
        }))
    }

    /// Sends `text` and returns the reply. An alarm in reply is acknowledged with the status
    /// query and refused ([`RefusalReason::Alarm`]); `text` is sent again only when it cannot
    /// move liquid (see the module documentation).
    pub async fn command(&mut self, text: &str) -> DeviceResult<Reply> {
        if !self.configured {
            // After (re)opening: the syringe diameter and mL volume units, so that every figure
            // afterwards means what the caller thinks. Done before the caller's command.
            let dia = format!("DIA{}", format_number(self.options.syringe_diameter_mm));
            for setup in [dia.as_str(), "VOLML"] {
                match self.exchange(setup, true).await {
                    Ok(Ok(_)) => {}
                    other => return other,
                }
            }
            self.configured = true;
        }
        let result = self.exchange(text, repeatable(text)).await;
        if matches!(result, Err(LinkError::PortGone { .. })) {
            // The pump may have been power-cycled with the port: configure again.
            self.configured = false;
        }
        result
    }

    fn record(&mut self, alarm: PumpAlarm) {
        tracing::warn!(device = self.link.device(), %alarm, "pump alarm; acknowledging with a status query");
        self.alarms.push(alarm);
        if alarm == PumpAlarm::Reset {
            // Power was interrupted: the diameter and units may be gone.
            self.configured = false;
        }
    }

    async fn exchange(&mut self, text: &str, repeatable: bool) -> DeviceResult<Reply> {
        let mut reply = self.once(text).await?;
        if let ReplyData::Alarm(alarm) = reply.data {
            self.record(alarm);
            // The acknowledgement: the status query, which executes nothing.
            let status = self.once("").await?;
            if let ReplyData::Alarm(again) = status.data {
                self.record(again);
                return Ok(Err(self.refusal(text, &status, RefusalReason::Alarm(again))));
            }
            if text.is_empty() {
                reply = status;
            } else if repeatable {
                reply = self.once(text).await?;
                if let ReplyData::Alarm(again) = reply.data {
                    self.record(again);
                    return Ok(Err(self.refusal(text, &reply, RefusalReason::Alarm(again))));
                }
            } else {
                return Ok(Err(self.refusal(text, &reply, RefusalReason::Alarm(alarm))));
            }
        }
        if let ReplyData::Error(e) = reply.data {
            let reason = match e {
                CommandError::Unknown => RefusalReason::UnknownCommand,
                CommandError::NotApplicable => RefusalReason::NotApplicable,
                CommandError::OutOfRange => RefusalReason::OutOfRange,
                CommandError::BadPacket => RefusalReason::BadPacket,
                CommandError::Ignored => RefusalReason::Ignored,
            };
            return Ok(Err(self.refusal(text, &reply, reason)));
        }
        Ok(Ok(reply))
    }

    async fn once(&mut self, text: &str) -> Result<Reply, LinkError> {
        let mut bytes = BytesMut::new();
        encode_command(self.options.mode, self.options.address, text, &mut bytes);
        let shown = if text.is_empty() { "<status>" } else { text };
        let deadline = self.link.send(&bytes, shown).await?;
        let mut decoder = ReplyDecoder { mode: self.options.mode };
        self.link.receive(&mut decoder, shown, deadline).await
    }

    fn refusal(&self, text: &str, reply: &Reply, reason: RefusalReason) -> Refusal {
        let mut shown = BytesMut::new();
        super::codec::encode_reply(self.options.mode, reply, &mut shown);
        Refusal {
            device: self.link.device().to_owned(),
            command: text.to_owned(),
            reply: crate::codec::escape(&shown),
            reason,
        }
    }
}

/// Whether `text` may be sent again after an alarm: it cannot start the motor or change what
/// a run would do. `STP` (stopping twice is harmless) and bare queries.
fn repeatable(text: &str) -> bool {
    matches!(text, "" | "STP" | "VER" | "DIS" | "DIA" | "RAT" | "VOL" | "DIR")
}

fn motion(prompt: Prompt) -> Motion {
    match prompt {
        Prompt::Infusing => Motion::Running(Direction::Forward),
        Prompt::Withdrawing => Motion::Running(Direction::Reverse),
        Prompt::Stopped | Prompt::Alarm => Motion::Stopped,
        Prompt::Paused => Motion::Paused,
        Prompt::PausePhase => Motion::Other('T'),
        Prompt::TriggerWait => Motion::Other('U'),
        Prompt::Purging => Motion::Other('X'),
    }
}

/// Parses `DIS`'s `I0.250W0.000ML`.
fn parse_dispensed(value: &str) -> Option<(f64, f64)> {
    let rest = value.strip_prefix('I')?;
    let (infused, rest) = rest.split_once('W')?;
    let withdrawn = rest.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    Some((infused.parse().ok()?, withdrawn.parse().ok()?))
}

impl<C: Connector> Pump for NewEraPump<C> {
    async fn set_rate(&mut self, rate: FlowRate) -> DeviceResult<()> {
        if let Some(refusal) = self.options.limits.check_rate(self.link.device(), rate.get()) {
            return Ok(Err(refusal));
        }
        let number = format_number(rate.get());
        let command = format!("RAT{number}MM");
        let nearest: f64 = number.parse().unwrap_or(f64::NAN);
        if let Some(refusal) = super::super::representable(
            self.link.device(),
            command.clone(),
            "mL/min",
            rate.get(),
            nearest,
        ) {
            return Ok(Err(refusal));
        }
        Ok(self.command(&command).await?.map(drop))
    }

    async fn set_direction(&mut self, direction: Direction) -> DeviceResult<()> {
        let text = match direction {
            Direction::Forward => "DIRINF",
            Direction::Reverse => "DIRWDR",
        };
        Ok(self.command(text).await?.map(drop))
    }

    async fn dispense(&mut self, volume: Volume) -> DeviceResult<()> {
        if let Some(refusal) = self.options.limits.check_volume(self.link.device(), volume.get()) {
            return Ok(Err(refusal));
        }
        if let Err(refusal) = self.command(&format!("VOL{}", format_number(volume.get()))).await? {
            return Ok(Err(refusal));
        }
        self.run().await
    }

    async fn run(&mut self) -> DeviceResult<()> {
        Ok(self.command("RUN").await?.map(drop))
    }

    async fn stop(&mut self) -> DeviceResult<()> {
        // The first STP of a running pump only pauses it; a second ends the volume.
        match self.command("STP").await? {
            Ok(reply) if reply.prompt == Prompt::Paused => Ok(self.command("STP").await?.map(drop)),
            other => Ok(other.map(drop)),
        }
    }

    async fn status(&mut self) -> DeviceResult<PumpStatus> {
        let seen = self.alarms.len();
        let reply = match self.command("").await? {
            Ok(reply) => reply,
            Err(refusal) => return Ok(Err(refusal)),
        };
        Ok(Ok(PumpStatus { motion: motion(reply.prompt), alarm: self.alarms.get(seen).copied() }))
    }

    async fn dispensed(&mut self) -> DeviceResult<Dispensed> {
        let reply = match self.command("DIS").await? {
            Ok(reply) => reply,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let parsed = match &reply.data {
            ReplyData::Value(v) => parse_dispensed(v),
            _ => None,
        };
        let Some((forward, reverse)) = parsed else {
            return Err(self.link.unexpected("DIS", &reply));
        };
        match (Volume::new(forward), Volume::new(reverse)) {
            (Ok(forward), Ok(reverse)) => Ok(Ok(Dispensed { forward, reverse })),
            _ => Err(self.link.unexpected("DIS", &reply)),
        }
    }

    async fn clear_dispensed(&mut self) -> DeviceResult<()> {
        if let Err(refusal) = self.command("CLDINF").await? {
            return Ok(Err(refusal));
        }
        Ok(self.command("CLDWDR").await?.map(drop))
    }

    fn take_alarms(&mut self) -> Vec<PumpAlarm> {
        std::mem::take(&mut self.alarms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispensed_volumes_parse() {
        assert_eq!(parse_dispensed("I0.250W1.500ML"), Some((0.25, 1.5)));
        assert_eq!(parse_dispensed("I0.250"), None);
    }
}
