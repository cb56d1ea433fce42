//! The SBI driver. SBI answers only `ESC P` and the `ESC x…` queries; control commands (tare,
//! zero) get no reply, so success there means "sent", and the next reading shows the effect.

use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;

use super::codec::{Command, Ident, Reply, ReplyDecoder, encode_command};
use crate::balance::{Balance, Identity, Wait};
use crate::error::{DeviceResult, LinkError, Refusal, RefusalReason};
use crate::link::{Connector, Link, LinkPolicy};
use crate::units::{Reading, Stability, Weight, WeightUnit};

/// Choices the manuals leave open, and facts SBI does not report.
#[derive(Debug, Clone, PartialEq)]
pub struct SbiOptions {
    /// Send CR LF after each command (optional in SBI; some firmware wants it).
    pub crlf: bool,
    /// Tare with `ESC T` (legacy CP/LE models, which lack `ESC U`) instead of `ESC U`.
    pub legacy_tare: bool,
    /// Unit to report while the balance shows a blank unit (unstable): the configured unit.
    pub unit: WeightUnit,
    /// How long [`Wait::Stable`] polls `ESC P` for a stable reading before refusing.
    pub stable_timeout: Duration,
    /// Interval between those polls, and between streamed readings.
    pub poll_interval: Duration,
    /// Capacity from the unit configuration (SBI cannot be asked).
    pub capacity: Option<Weight>,
    /// Readability from the unit configuration.
    pub readability: Option<Weight>,
}

impl Default for SbiOptions {
    fn default() -> Self {
        Self {
            crlf: true,
            legacy_tare: false,
            unit: WeightUnit::Gram,
            stable_timeout: Duration::from_secs(3),
            poll_interval: Duration::from_millis(100),
            capacity: None,
            readability: None,
        }
    }
}

/// A Sartorius SBI balance on a link.
#[derive(Debug)]
pub struct SbiBalance<C: Connector> {
    link: Link<C>,
    options: SbiOptions,
    streaming: bool,
}

impl<C: Connector> SbiBalance<C> {
    /// A driver for the balance named `device`.
    pub fn new(
        device: impl Into<String>,
        connector: C,
        policy: LinkPolicy,
        options: SbiOptions,
    ) -> Self {
        Self { link: Link::new(device, connector, policy), options, streaming: false }
    }

    /// The underlying link.
    pub fn link(&self) -> &Link<C> {
        &self.link
    }

    fn refusal(&self, command: Command, reply: &str, reason: RefusalReason) -> Refusal {
        Refusal {
            device: self.link.device().to_owned(),
            command: command.name().to_owned(),
            reply: reply.to_owned(),
            reason,
        }
    }

    async fn send(&mut self, command: Command) -> Result<Instant, LinkError> {
        let mut bytes = BytesMut::new();
        encode_command(command, self.options.crlf, &mut bytes);
        self.link.send(&bytes, command.name()).await
    }

    async fn print(&mut self) -> DeviceResult<Reading> {
        let deadline = self.send(Command::Print).await?;
        loop {
            match self.link.receive(&mut ReplyDecoder, Command::Print.name(), deadline).await? {
                Reply::Weight { ident: ident @ (Ident::Gross | Ident::Tare), value, .. } => {
                    // A gross or tare line of a print block is not the reading; the net line
                    // follows (or the deadline passes: a timeout, never a wrong weight).
                    tracing::debug!(
                        device = self.link.device(),
                        ?ident,
                        value,
                        "skipping a non-net line"
                    );
                }
                Reply::Weight { ident: Ident::Net | Ident::None, value, unit, .. } => {
                    return Ok(Ok(Reading {
                        weight: Weight { value, unit: unit.unwrap_or(self.options.unit) },
                        stability: if unit.is_some() {
                            Stability::Stable
                        } else {
                            Stability::Dynamic
                        },
                    }));
                }
                Reply::High => {
                    return Ok(Err(self.refusal(
                        Command::Print,
                        "Stat High",
                        RefusalReason::Overload,
                    )));
                }
                Reply::Low => {
                    return Ok(Err(self.refusal(
                        Command::Print,
                        "Stat Low",
                        RefusalReason::Underload,
                    )));
                }
                Reply::Error(code) => {
                    let reply = format!("Err {code:03}");
                    return Ok(Err(self.refusal(
                        Command::Print,
                        &reply,
                        RefusalReason::Code(code),
                    )));
                }
                Reply::Text(text) => {
                    tracing::debug!(device = self.link.device(), %text, "skipping a text line");
                }
            }
        }
    }

    async fn text(&mut self, command: Command) -> DeviceResult<String> {
        let deadline = self.send(command).await?;
        match self.link.receive(&mut ReplyDecoder, command.name(), deadline).await? {
            Reply::Text(text) => Ok(Ok(text)),
            Reply::Error(code) => {
                let reply = format!("Err {code:03}");
                Ok(Err(self.refusal(command, &reply, RefusalReason::Code(code))))
            }
            other => Err(self.link.unexpected(command.name(), other)),
        }
    }
}

impl<C: Connector> Balance for SbiBalance<C> {
    async fn read(&mut self, wait: Wait) -> DeviceResult<Reading> {
        let give_up = Instant::now() + self.options.stable_timeout;
        loop {
            let reading = match self.print().await? {
                Ok(reading) => reading,
                Err(refusal) => return Ok(Err(refusal)),
            };
            if wait == Wait::Immediate || reading.stability == Stability::Stable {
                return Ok(Ok(reading));
            }
            if Instant::now() + self.options.poll_interval > give_up {
                return Ok(Err(self.refusal(Command::Print, "", RefusalReason::NotExecutable)));
            }
            tokio::time::sleep(self.options.poll_interval).await;
        }
    }

    async fn zero(&mut self) -> DeviceResult<()> {
        self.send(Command::Zero).await?;
        Ok(Ok(()))
    }

    async fn tare(&mut self) -> DeviceResult<Option<Weight>> {
        let command = if self.options.legacy_tare { Command::TareOrZero } else { Command::Tare };
        self.send(command).await?;
        Ok(Ok(None))
    }

    async fn preset_tare(&mut self, _tare: Weight) -> DeviceResult<()> {
        Ok(Err(Refusal {
            device: self.link.device().to_owned(),
            command: "preset tare".into(),
            reply: String::new(),
            reason: RefusalReason::Unsupported("SBI has no preset-tare command"),
        }))
    }

    async fn clear_tare(&mut self) -> DeviceResult<()> {
        Ok(Err(Refusal {
            device: self.link.device().to_owned(),
            command: "clear tare".into(),
            reply: String::new(),
            reason: RefusalReason::Unsupported("SBI has no clear-tare command; tare an empty pan"),
        }))
    }

    async fn start_stream(&mut self) -> DeviceResult<()> {
        // SBI's auto-print is a menu setting, not a command: stream by polling.
        self.streaming = true;
        Ok(Ok(()))
    }

    async fn next_streamed(&mut self) -> DeviceResult<Reading> {
        if self.streaming {
            tokio::time::sleep(self.options.poll_interval).await;
        }
        self.print().await
    }

    async fn stop_stream(&mut self) -> DeviceResult<()> {
        self.streaming = false;
        Ok(Ok(()))
    }

    async fn identify(&mut self) -> DeviceResult<Identity> {
        let model = match self.text(Command::Info(1)).await? {
            Ok(t) => t,
            Err(r) => return Ok(Err(r)),
        };
        let serial = match self.text(Command::Info(2)).await? {
            Ok(t) => t,
            Err(r) => return Ok(Err(r)),
        };
        let firmware = self.text(Command::Info(3)).await?.ok();
        Ok(Ok(Identity {
            model,
            serial,
            firmware,
            capacity: self.options.capacity,
            readability: self.options.readability,
        }))
    }
}
