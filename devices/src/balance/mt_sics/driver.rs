//! The MT-SICS driver: one request, one line back, matched on its response ID.
//!
//! Lines whose ID does not answer the request (a late `SIR` line after a stream stopped, a
//! reply to a request that timed out) are skipped; the link drops stale input before every
//! request as well.

use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;

use super::codec::{
    Command, Data, GeneralError, Reply, ReplyDecoder, ReplyId, Status, WeightField, encode_command,
};
use crate::balance::{Balance, Identity, Wait};
use crate::codec::escape;
use crate::error::{DeviceResult, LinkError, Refusal, RefusalReason};
use crate::link::{Connector, Link, LinkPolicy};
use crate::units::{Reading, Stability, Weight};

/// Choices the manual leaves open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MtSicsOptions {
    /// After cancelling `SIR` with `SI`, input is drained until no line arrived for this long.
    /// `@` would cancel too, but it also clears the tare, so the driver never uses it for that.
    pub stream_quiet: Duration,
    /// Decimals used when presetting a tare (`TA 10.5000 g`); match the balance's readability.
    pub tare_decimals: u8,
}

impl Default for MtSicsOptions {
    fn default() -> Self {
        Self { stream_quiet: Duration::from_millis(200), tare_decimals: 4 }
    }
}

/// An MT-SICS balance on a link.
#[derive(Debug)]
pub struct MtSicsBalance<C: Connector> {
    link: Link<C>,
    options: MtSicsOptions,
}

type Answer = (Status, Data);

impl<C: Connector> MtSicsBalance<C> {
    /// A driver for the balance named `device` (used in errors).
    pub fn new(device: impl Into<String>, connector: C, policy: LinkPolicy) -> Self {
        Self::with_options(device, connector, policy, MtSicsOptions::default())
    }

    /// A driver with explicit protocol options.
    pub fn with_options(
        device: impl Into<String>,
        connector: C,
        policy: LinkPolicy,
        options: MtSicsOptions,
    ) -> Self {
        Self { link: Link::new(device, connector, policy), options }
    }

    /// The underlying link (for diagnostics: open attempts, port name).
    pub fn link(&self) -> &Link<C> {
        &self.link
    }

    /// `@`: resets the balance (cancels pending commands, clears the tare); returns the serial.
    pub async fn reset(&mut self) -> DeviceResult<String> {
        Ok(self
            .request(&Command::Reset, ReplyId::I4)
            .await?
            .map(|(_, data)| first_text(data).unwrap_or_default()))
    }

    /// `ZI`: zeroes immediately; says whether the balance was stable when it did.
    pub async fn zero_now(&mut self) -> DeviceResult<Stability> {
        Ok(self.request(&Command::ZeroNow, ReplyId::Zi).await?.map(|(status, _)| {
            if status == Status::Stable { Stability::Stable } else { Stability::Dynamic }
        }))
    }

    async fn request(&mut self, command: &Command, expect: ReplyId) -> DeviceResult<Answer> {
        let mut bytes = BytesMut::new();
        encode_command(command, &mut bytes);
        let text = command_text(&bytes);
        let deadline = self.link.send(&bytes, &text).await?;
        self.answer(&text, expect, deadline).await
    }

    async fn answer(
        &mut self,
        text: &str,
        expect: ReplyId,
        deadline: Instant,
    ) -> DeviceResult<Answer> {
        loop {
            let reply = self.link.receive(&mut ReplyDecoder, text, deadline).await?;
            let (id, status, data) = match reply {
                Reply::Error(e) => {
                    let reason = match e {
                        GeneralError::Syntax => RefusalReason::UnknownCommand,
                        GeneralError::Transmission => RefusalReason::TransmissionError,
                        GeneralError::Logical => RefusalReason::LogicalError,
                        GeneralError::Internal => RefusalReason::Internal,
                    };
                    return Ok(Err(self.refusal(text, e.as_str(), reason)));
                }
                Reply::Response { id, status, data } => (id, status, data),
            };
            if id != expect {
                tracing::debug!(
                    device = self.link.device(),
                    ?id,
                    "skipping a reply to another command"
                );
                continue;
            }
            let reason = match status {
                Status::NotExecutable => RefusalReason::NotExecutable,
                Status::BadParameter => RefusalReason::BadParameter,
                Status::Overload => RefusalReason::Overload,
                Status::Underload => RefusalReason::Underload,
                Status::Stable | Status::Dynamic | Status::Done | Status::More => {
                    return Ok(Ok((status, data)));
                }
            };
            let reply = format!("{} {}", id.as_str(), status.as_char());
            return Ok(Err(self.refusal(text, &reply, reason)));
        }
    }

    /// Drops input until nothing arrived for [`MtSicsOptions::stream_quiet`]; `false` if the
    /// line was still busy at `deadline`.
    async fn drain_until_quiet(
        &mut self,
        text: &str,
        deadline: Instant,
    ) -> Result<bool, LinkError> {
        loop {
            let now = Instant::now();
            let quiet = now + self.options.stream_quiet;
            if quiet > deadline {
                return Ok(false);
            }
            match self.link.receive(&mut ReplyDecoder, text, quiet).await {
                Ok(_) => {}
                Err(LinkError::Timeout { .. } | LinkError::Garbled { .. }) => return Ok(true),
                Err(e) => return Err(e),
            }
        }
    }

    fn refusal(&self, command: &str, reply: &str, reason: RefusalReason) -> Refusal {
        Refusal {
            device: self.link.device().to_owned(),
            command: command.to_owned(),
            reply: reply.to_owned(),
            reason,
        }
    }

    fn reading(&self, command: &str, (status, data): Answer) -> Result<Reading, LinkError> {
        match (status, data) {
            (Status::Stable | Status::Dynamic, Data::Weight(field)) => Ok(Reading {
                weight: field.weight,
                stability: if status == Status::Stable {
                    Stability::Stable
                } else {
                    Stability::Dynamic
                },
            }),
            other => Err(self.link.unexpected(command, other)),
        }
    }
}

fn command_text(bytes: &[u8]) -> String {
    escape(bytes.strip_suffix(b"\r\n").unwrap_or(bytes))
}

fn first_text(data: Data) -> Option<String> {
    match data {
        Data::Texts(mut texts) if !texts.is_empty() => Some(texts.swap_remove(0)),
        _ => None,
    }
}

/// Splits `I2`'s `"XS205DU Excellence 220.0000 g"` from the right: unit, capacity, model.
fn parse_type_and_capacity(text: &str) -> (String, Option<WeightField>) {
    let mut words = text.rsplitn(3, ' ');
    let (unit, capacity, model) = (words.next(), words.next(), words.next());
    match (model, capacity.zip(unit).and_then(|(c, u)| super::codec::parse_weight(c, u))) {
        (Some(model), Some(field)) => (model.trim().to_owned(), Some(field)),
        _ => (text.trim().to_owned(), None),
    }
}

impl<C: Connector> Balance for MtSicsBalance<C> {
    async fn read(&mut self, wait: Wait) -> DeviceResult<Reading> {
        let command = match wait {
            Wait::Stable => Command::Weigh,
            Wait::Immediate => Command::WeighNow,
        };
        match self.request(&command, ReplyId::S).await? {
            Ok(answer) => self.reading(command.name(), answer).map(Ok),
            Err(refusal) => Ok(Err(refusal)),
        }
    }

    async fn zero(&mut self) -> DeviceResult<()> {
        Ok(self.request(&Command::Zero, ReplyId::Z).await?.map(drop))
    }

    async fn tare(&mut self) -> DeviceResult<Option<Weight>> {
        Ok(self.request(&Command::Tare, ReplyId::T).await?.map(|(_, data)| match data {
            Data::Weight(field) => Some(field.weight),
            _ => None,
        }))
    }

    async fn preset_tare(&mut self, tare: Weight) -> DeviceResult<()> {
        let field = WeightField { weight: tare, decimals: self.options.tare_decimals };
        Ok(self.request(&Command::PresetTare(Some(field)), ReplyId::Ta).await?.map(drop))
    }

    async fn clear_tare(&mut self) -> DeviceResult<()> {
        Ok(self.request(&Command::ClearTare, ReplyId::Tac).await?.map(drop))
    }

    async fn start_stream(&mut self) -> DeviceResult<()> {
        let mut bytes = BytesMut::new();
        encode_command(&Command::WeighRepeat, &mut bytes);
        self.link.send(&bytes, "SIR").await?;
        Ok(Ok(()))
    }

    async fn next_streamed(&mut self) -> DeviceResult<Reading> {
        let deadline = Instant::now() + self.link.policy().timeout;
        match self.answer("SIR", ReplyId::S, deadline).await? {
            Ok(answer) => self.reading("SIR", answer).map(Ok),
            Err(refusal) => Ok(Err(refusal)),
        }
    }

    async fn stop_stream(&mut self) -> DeviceResult<()> {
        // Any weight command cancels SIR; SI is the harmless one. Its own reply and any stream
        // lines still in flight are drained until the line goes quiet, within the request's
        // timeout. A balance still streaming then gets `@`, which cancels everything but also
        // clears the tare: the caller is told so ([`RefusalReason::TareCleared`]). If even
        // that does not silence it, the link is not usable.
        let mut bytes = BytesMut::new();
        encode_command(&Command::WeighNow, &mut bytes);
        let deadline = self.link.send(&bytes, "SI").await?;
        if self.drain_until_quiet("SI", deadline).await? {
            return Ok(Ok(()));
        }
        tracing::warn!(device = self.link.device(), "stream ignored SI; resetting with @");
        bytes.clear();
        encode_command(&Command::Reset, &mut bytes);
        let deadline = self.link.send(&bytes, "@").await?;
        if self.drain_until_quiet("@", deadline).await? {
            return Ok(Err(self.refusal("SI", "", RefusalReason::TareCleared)));
        }
        Err(self.link.unexpected("SI, then @", "stream lines kept coming"))
    }

    async fn identify(&mut self) -> DeviceResult<Identity> {
        let (model, capacity) = match self.request(&Command::Info(2), ReplyId::I2).await? {
            Ok((_, data)) => parse_type_and_capacity(&first_text(data).unwrap_or_default()),
            Err(refusal) => return Ok(Err(refusal)),
        };
        let serial = match self.request(&Command::Info(4), ReplyId::I4).await? {
            Ok((_, data)) => first_text(data).unwrap_or_default(),
            Err(refusal) => return Ok(Err(refusal)),
        };
        // I3 is optional on some models; a refusal only means "unknown".
        let firmware = self
            .request(&Command::Info(3), ReplyId::I3)
            .await?
            .ok()
            .and_then(|(_, d)| first_text(d));
        Ok(Ok(Identity {
            model,
            serial,
            firmware,
            capacity: capacity.map(|f| f.weight),
            // The capacity is printed at the display's resolution: its decimals are the
            // readability. An inference, documented as such in `Identity`.
            readability: capacity
                .map(|f| Weight { value: 10f64.powi(-i32::from(f.decimals)), unit: f.weight.unit }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_and_capacity_parse_from_the_right() {
        let (model, cap) = parse_type_and_capacity("XS205DU Excellence 220.0000 g");
        assert_eq!(model, "XS205DU Excellence");
        let cap = cap.unwrap();
        assert!((cap.weight.value - 220.0).abs() < 1e-9);
        assert_eq!(cap.decimals, 4);
        assert_eq!(parse_type_and_capacity("odd").0, "odd");
    }
}
