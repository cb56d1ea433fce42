//! The Eurotherm driver, a tokio-modbus RTU client with a deadline on every request.
//!
//! tokio-modbus already keeps the two failure kinds apart (`Result<Result<T, ExceptionCode>,
//! Error>`); this maps them onto [`Refusal`] and [`LinkError`] with the device's name. After a
//! timeout or transport error the client is dropped and the port reopened on the next request:
//! the RTU codec's buffer may hold half a frame, and a fresh one is the simplest resync.

use std::fmt;

use tokio::time::Instant;
use tokio_modbus::client::{Context, Reader as _, Writer as _};

use super::registers::{
    PV_IN, RNG_LO, STATUS, WKG_SP, WRK_OP, Writable, decode_status, from_register, to_register,
};
use crate::error::{DeviceResult, LinkError, Refusal, RefusalReason};
use crate::heater::{Heater, HeaterStatus};
use crate::link::{Connector, LinkPolicy, Reconnector};
use crate::units::{Celsius, Percent};

/// Settings the controller's configuration decides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EurothermOptions {
    /// Modbus slave address (1 by default on the 3216).
    pub address: u8,
    /// Decimals of PV and setpoints (the display resolution).
    pub decimals: u8,
    /// Decimals of the output percentage.
    pub output_decimals: u8,
    /// Lowest setpoint allowed, °C (`limits.min_temperature_c`); refused before sending.
    pub min_c: f64,
    /// Highest setpoint allowed, °C (`limits.max_temperature_c`); refused before sending.
    pub max_c: f64,
}

impl Default for EurothermOptions {
    fn default() -> Self {
        Self {
            address: 1,
            decimals: 1,
            output_decimals: 1,
            min_c: f64::NEG_INFINITY,
            max_c: f64::INFINITY,
        }
    }
}

/// How many request timeouts `disable` may spend retrying before it gives up.
const DISABLE_BUDGET: u32 = 3;

struct Client(Context);

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("modbus::Context")
    }
}

/// A Eurotherm 3216 on a Modbus RTU link.
#[derive(Debug)]
pub struct EurothermHeater<C: Connector> {
    device: String,
    reconnector: Reconnector<C>,
    client: Option<Client>,
    policy: LinkPolicy,
    options: EurothermOptions,
    remote_enabled: bool,
}

impl<C: Connector> EurothermHeater<C> {
    /// A driver for the controller named `device`.
    pub fn new(
        device: impl Into<String>,
        connector: C,
        policy: LinkPolicy,
        options: EurothermOptions,
    ) -> Self {
        Self {
            device: device.into(),
            reconnector: Reconnector::new(connector, policy),
            client: None,
            policy,
            options,
            remote_enabled: false,
        }
    }

    /// How many times the port has been opened or tried.
    pub fn open_attempts(&self) -> u64 {
        self.reconnector.attempts()
    }

    async fn client(&mut self, what: &str, deadline: Instant) -> Result<&mut Context, LinkError> {
        if self.client.is_none() {
            let io = self
                .reconnector
                .connect_before(deadline)
                .await
                .map_err(|source| self.port_gone(what, source))?;
            let slave = tokio_modbus::Slave(self.options.address);
            self.client = Some(Client(tokio_modbus::client::rtu::attach_slave(io, slave)));
            // A reopened port may be a power-cycled controller: enable comms SP again.
            self.remote_enabled = false;
        }
        Ok(&mut self.client.as_mut().expect("set above").0)
    }

    fn port_gone(&self, what: &str, source: std::io::Error) -> LinkError {
        LinkError::PortGone {
            device: self.device.clone(),
            port: self.reconnector.port().to_owned(),
            command: what.to_owned(),
            source,
        }
    }

    fn outcome<T>(
        &mut self,
        what: &str,
        result: Option<tokio_modbus::Result<T>>,
    ) -> DeviceResult<T> {
        let error = match result {
            Some(Ok(Ok(value))) => return Ok(Ok(value)),
            Some(Ok(Err(exception))) => {
                return Ok(Err(Refusal {
                    device: self.device.clone(),
                    command: what.to_owned(),
                    reply: format!("exception {:#04x}", u8::from(exception)),
                    reason: RefusalReason::ModbusException {
                        code: exception.into(),
                        name: exception.to_string(),
                    },
                }));
            }
            Some(Err(tokio_modbus::Error::Transport(source))) => self.port_gone(what, source),
            Some(Err(tokio_modbus::Error::Protocol(e))) => LinkError::Garbled {
                device: self.device.clone(),
                port: self.reconnector.port().to_owned(),
                command: what.to_owned(),
                detail: e.to_string(),
            },
            None => LinkError::Timeout {
                device: self.device.clone(),
                port: self.reconnector.port().to_owned(),
                command: what.to_owned(),
                timeout: self.policy.timeout,
            },
        };
        self.client = None;
        Err(error)
    }

    /// Reads one holding register.
    pub async fn read_register(&mut self, address: u16) -> DeviceResult<u16> {
        let what = format!("read {address}");
        let deadline = Instant::now() + self.policy.timeout;
        let client = self.client(&what, deadline).await?;
        let result =
            tokio::time::timeout_at(deadline, client.read_holding_registers(address, 1)).await.ok();
        match self.outcome(&what, result)? {
            Ok(words) => match words.first() {
                Some(&word) => Ok(Ok(word)),
                None => Err(LinkError::Unexpected {
                    device: self.device.clone(),
                    port: self.reconnector.port().to_owned(),
                    command: what,
                    reply: "no registers".into(),
                }),
            },
            Err(refusal) => Ok(Err(refusal)),
        }
    }

    /// Writes one of the registers the driver may write.
    pub async fn write_register(&mut self, register: Writable, word: u16) -> DeviceResult<()> {
        let address = register.address();
        let what = format!("write {address} = {word}");
        let deadline = Instant::now() + self.policy.timeout;
        let client = self.client(&what, deadline).await?;
        let result = tokio::time::timeout_at(deadline, client.write_single_register(address, word))
            .await
            .ok();
        self.outcome(&what, result)
    }

    async fn read_scaled(&mut self, address: u16, decimals: u8) -> DeviceResult<f64> {
        Ok(self.read_register(address).await?.map(|w| from_register(w, decimals)))
    }

    fn unexpected(&self, what: &str, reply: impl fmt::Debug) -> LinkError {
        LinkError::Unexpected {
            device: self.device.clone(),
            port: self.reconnector.port().to_owned(),
            command: what.to_owned(),
            reply: format!("{reply:?}"),
        }
    }

    fn celsius(&self, what: &str, value: f64) -> Result<Celsius, LinkError> {
        Celsius::new(value).map_err(|_| self.unexpected(what, value))
    }
}

impl<C: Connector> Heater for EurothermHeater<C> {
    async fn process_value(&mut self) -> DeviceResult<Celsius> {
        match self.read_scaled(PV_IN, self.options.decimals).await? {
            Ok(v) => self.celsius("read PV", v).map(Ok),
            Err(r) => Ok(Err(r)),
        }
    }

    async fn working_setpoint(&mut self) -> DeviceResult<Celsius> {
        match self.read_scaled(WKG_SP, self.options.decimals).await? {
            Ok(v) => self.celsius("read WKG.SP", v).map(Ok),
            Err(r) => Ok(Err(r)),
        }
    }

    async fn set_setpoint(&mut self, target: Celsius) -> DeviceResult<()> {
        let t = target.get();
        let over = if t > self.options.max_c {
            Some(("max_temperature_c", self.options.max_c))
        } else if t < self.options.min_c {
            Some(("min_temperature_c", self.options.min_c))
        } else {
            None
        };
        if let Some((limit, allowed)) = over {
            let command = format!("setpoint {target}");
            return Ok(Err(crate::pump::limit_refusal(&self.device, command, limit, t, allowed)));
        }
        let Some(word) = to_register(target.get(), self.options.decimals) else {
            return Ok(Err(Refusal {
                device: self.device.clone(),
                command: format!("setpoint {target}"),
                reply: String::new(),
                reason: RefusalReason::OutOfRange,
            }));
        };
        if !self.remote_enabled {
            if let Err(r) = self.write_register(Writable::RemoteSetpointEnable, 1).await? {
                return Ok(Err(r));
            }
            self.remote_enabled = true;
        }
        self.write_register(Writable::RemoteSetpoint, word).await
    }

    async fn output(&mut self) -> DeviceResult<Percent> {
        match self.read_scaled(WRK_OP, self.options.output_decimals).await? {
            Ok(v) => Percent::new(v).map(Ok).map_err(|_| self.unexpected("read WRK.OP", v)),
            Err(r) => Ok(Err(r)),
        }
    }

    async fn enable(&mut self) -> DeviceResult<()> {
        self.write_register(Writable::AutoManual, 0).await
    }

    async fn disable(&mut self) -> DeviceResult<()> {
        // Every intermediate state must be safe. Switching to manual copies the working output
        // to MAN.OP (bumpless transfer), possibly 100 %; if the MAN.OP write then failed the
        // heater would stay at full output. So the comms setpoint goes to the bottom of the
        // range first (automatic then drives the output to zero by itself), then manual (which
        // now copies a low output), then MAN.OP = 0. Each step is retried until the deadline,
        // and WRK.OP is read back: anything but a confirmed 0 % is `LinkError::NotSafe`.
        let deadline = Instant::now() + self.policy.timeout * DISABLE_BUDGET;
        let mut last_error = String::new();
        let low = match self.read_register(RNG_LO).await {
            Ok(Ok(word)) => word,
            _ => to_register(0.0, self.options.decimals).unwrap_or(0),
        };
        let steps = [
            (Writable::RemoteSetpoint, low),
            (Writable::RemoteSetpointEnable, 1),
            (Writable::AutoManual, 1),
            (Writable::ManualOutput, 0),
        ];
        for (register, word) in steps {
            loop {
                match self.write_register(register, word).await {
                    Ok(Ok(())) => {
                        if register == Writable::RemoteSetpointEnable {
                            self.remote_enabled = true;
                        }
                        break;
                    }
                    Ok(Err(refusal)) => last_error = refusal.to_string(),
                    Err(link) => last_error = link.to_string(),
                }
                if Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(self.policy.backoff_initial).await;
            }
        }
        let output = loop {
            match self.read_scaled(WRK_OP, self.options.output_decimals).await {
                Ok(Ok(v)) => break Some(v),
                Ok(Err(refusal)) => last_error = refusal.to_string(),
                Err(link) => last_error = link.to_string(),
            }
            if Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(self.policy.backoff_initial).await;
        };
        match output {
            Some(v) if v <= 0.0 => {
                if !last_error.is_empty() {
                    tracing::warn!(device = %self.device, error = %last_error, "disable: a step failed, but the output reads 0 %");
                }
                Ok(Ok(()))
            }
            other => Err(LinkError::NotSafe {
                device: self.device.clone(),
                port: self.reconnector.port().to_owned(),
                command: "disable".into(),
                detail: match other {
                    Some(v) => {
                        format!("working output reads {v} %, not 0 %; last error: {last_error}")
                    }
                    None => {
                        format!("working output could not be read back; last error: {last_error}")
                    }
                },
            }),
        }
    }

    async fn status(&mut self) -> DeviceResult<HeaterStatus> {
        Ok(self.read_register(STATUS).await?.map(decode_status))
    }
}
