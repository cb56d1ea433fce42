//! The Watson-Marlow 520 driver. The pump acknowledges nothing but its echo, so the driver
//! checks what matters by reading back: after setting the speed it asks `RS` and refuses with
//! [`RefusalReason::NotApplied`] if the pump reports another speed (it clamps to its maximum).

use bytes::BytesMut;

use super::codec::{Command, LineDecoder, Status, encode_command, parse_status};
use crate::codec::escape;
use crate::error::{DeviceResult, LinkError, Refusal, RefusalReason};
use crate::link::{Connector, Link, LinkPolicy};
use crate::pump::{Direction, Dispensed, Motion, Pump, PumpAlarm, PumpStatus};
use crate::units::{FlowRate, Volume};

/// Protocol and calibration settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wm520Options {
    /// Pump number, 1–16.
    pub address: u8,
    /// The pump echoes each command (the factory setting); the driver swallows the echo. Off
    /// when the pump's echo is disabled; the 520's own default is not documented.
    pub echo: bool,
    /// mL per revolution for the fitted pumphead and tube (calibration).
    pub ml_per_rev: f64,
    /// Tacho pulses per gearbox revolution (10 982 per the 520/620/720 manuals).
    pub pulses_per_rev: u32,
    /// Whether forward (towards the vessel) is clockwise.
    pub forward_is_clockwise: bool,
    /// Configured limits, refused before sending.
    pub limits: crate::pump::PumpLimits,
}

impl Default for Wm520Options {
    fn default() -> Self {
        Self {
            address: 1,
            echo: true,
            ml_per_rev: 1.0,
            pulses_per_rev: 10_982,
            forward_is_clockwise: true,
            limits: crate::pump::PumpLimits::NONE,
        }
    }
}

/// A Watson-Marlow 520 on a link.
#[derive(Debug)]
pub struct Wm520Pump<C: Connector> {
    link: Link<C>,
    options: Wm520Options,
    direction: Direction,
}

impl<C: Connector> Wm520Pump<C> {
    /// A driver for the pump named `device`.
    pub fn new(
        device: impl Into<String>,
        connector: C,
        policy: LinkPolicy,
        options: Wm520Options,
    ) -> Self {
        let policy =
            LinkPolicy { gap: policy.gap.max(std::time::Duration::from_millis(10)), ..policy };
        Self { link: Link::new(device, connector, policy), options, direction: Direction::Forward }
    }

    /// The underlying link.
    pub fn link(&self) -> &Link<C> {
        &self.link
    }

    /// Sends a command; returns its answer line if it has one.
    async fn send(&mut self, command: Command) -> Result<Option<String>, LinkError> {
        let mut bytes = BytesMut::new();
        encode_command(self.options.address, command, &mut bytes);
        let text = escape(bytes.strip_suffix(b"\r").unwrap_or(&bytes));
        let deadline = self.link.send(&bytes, &text).await?;
        let mut echo_pending = self.options.echo;
        if !echo_pending && !command.has_reply() {
            return Ok(None);
        }
        loop {
            let line = self.link.receive(&mut LineDecoder, &text, deadline).await?;
            if echo_pending && line.trim() == text {
                echo_pending = false;
                if !command.has_reply() {
                    return Ok(None);
                }
                continue;
            }
            if command.has_reply() {
                return Ok(Some(line));
            }
            return Err(self.link.unexpected(&text, line));
        }
    }

    /// `RS`, parsed.
    pub async fn read_status(&mut self) -> Result<Status, LinkError> {
        let line = self.send(Command::Status).await?.unwrap_or_default();
        parse_status(&line).ok_or_else(|| self.link.unexpected("RS", line))
    }

    async fn tacho(&mut self) -> Result<u64, LinkError> {
        let line = self.send(Command::ReadTacho).await?.unwrap_or_default();
        line.trim().parse().map_err(|_| self.link.unexpected("RT", line))
    }

    fn clockwise(&self, direction: Direction) -> bool {
        (direction == Direction::Forward) == self.options.forward_is_clockwise
    }
}

impl<C: Connector> Pump for Wm520Pump<C> {
    async fn set_rate(&mut self, rate: FlowRate) -> DeviceResult<()> {
        if let Some(refusal) = self.options.limits.check_rate(self.link.device(), rate.get()) {
            return Ok(Err(refusal));
        }
        let rpm = (rate.get() / self.options.ml_per_rev * 10.0).round() / 10.0;
        let command = format!("{}SP{rpm:.1}", self.options.address);
        let nearest = rpm * self.options.ml_per_rev;
        if let Some(refusal) =
            super::super::representable(self.link.device(), command, "mL/min", rate.get(), nearest)
        {
            return Ok(Err(refusal));
        }
        self.send(Command::Speed(rpm)).await?;
        let status = self.read_status().await?;
        if (status.rpm - rpm).abs() > 0.05 {
            return Ok(Err(Refusal {
                device: self.link.device().to_owned(),
                command: format!("{}SP{rpm:.1}", self.options.address),
                reply: format!("RS speed {:.1}", status.rpm),
                reason: RefusalReason::NotApplied {
                    wrote: format!("{rpm:.1} rpm"),
                    read: format!("{:.1} rpm", status.rpm),
                },
            }));
        }
        Ok(Ok(()))
    }

    async fn set_direction(&mut self, direction: Direction) -> DeviceResult<()> {
        let command =
            if self.clockwise(direction) { Command::Clockwise } else { Command::CounterClockwise };
        self.send(command).await?;
        self.direction = direction;
        Ok(Ok(()))
    }

    async fn dispense(&mut self, volume: Volume) -> DeviceResult<()> {
        if let Some(refusal) = self.options.limits.check_volume(self.link.device(), volume.get()) {
            return Ok(Err(refusal));
        }
        let revs = volume.get() / self.options.ml_per_rev;
        // Saturating float-to-int conversion; a dose beyond u64 pulses is not physical.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let pulses = (revs * f64::from(self.options.pulses_per_rev)).round() as u64;
        self.send(Command::Dose(pulses)).await?;
        Ok(Ok(()))
    }

    async fn run(&mut self) -> DeviceResult<()> {
        self.send(Command::Go).await?;
        Ok(Ok(()))
    }

    async fn stop(&mut self) -> DeviceResult<()> {
        self.send(Command::Stop).await?;
        Ok(Ok(()))
    }

    async fn status(&mut self) -> DeviceResult<PumpStatus> {
        let status = self.read_status().await?;
        let direction = if status.clockwise == self.options.forward_is_clockwise {
            Direction::Forward
        } else {
            Direction::Reverse
        };
        let motion = if status.running { Motion::Running(direction) } else { Motion::Stopped };
        Ok(Ok(PumpStatus { motion, alarm: None }))
    }

    async fn dispensed(&mut self) -> DeviceResult<Dispensed> {
        // The tacho count does not know direction; it is credited to the direction the driver
        // last set. Good enough for a pump that runs one way per phase; documented.
        let pulses = self.tacho().await?;
        // Precision loss only beyond 2^53 pulses.
        #[allow(clippy::cast_precision_loss)]
        let ml = pulses as f64 / f64::from(self.options.pulses_per_rev) * self.options.ml_per_rev;
        let moved = Volume::new(ml).map_err(|_| self.link.unexpected("RT", pulses))?;
        let none = Volume::new(0.0).expect("zero is a volume");
        Ok(Ok(match self.direction {
            Direction::Forward => Dispensed { forward: moved, reverse: none },
            Direction::Reverse => Dispensed { forward: none, reverse: moved },
        }))
    }

    async fn clear_dispensed(&mut self) -> DeviceResult<()> {
        self.send(Command::ClearTacho).await?;
        Ok(Ok(()))
    }

    fn take_alarms(&mut self) -> Vec<PumpAlarm> {
        // The 520's serial protocol reports no alarms; stalls show as no mass change.
        Vec::new()
    }
}
