//! The digital-input module's driver, a tokio-modbus RTU client with a deadline on every
//! request. As for the Eurotherm: an exception reply is a [`Refusal`], a timeout or a garbled
//! frame a [`LinkError`], and after a link error the client is dropped and the port reopened on
//! the next request (a fresh RTU codec is the simplest resync).

use std::fmt;

use tokio::time::Instant;
use tokio_modbus::client::{Context, Reader as _};

use super::inputs::{self, Contact};
use crate::error::{DeviceResult, LinkError, Refusal, RefusalReason};
use crate::estop::{EmergencyStop, EstopState};
use crate::link::{Connector, LinkPolicy, Reconnector};

/// Settings the wiring decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModbusDiOptions {
    /// Modbus slave address.
    pub address: u8,
    /// The input (0-based discrete-input address) the contact is wired to.
    pub input: u16,
    /// How the contact is wired.
    pub contact: Contact,
}

impl Default for ModbusDiOptions {
    fn default() -> Self {
        Self { address: 1, input: 0, contact: Contact::NormallyClosed }
    }
}

struct Client(Context);

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("modbus::Context")
    }
}

/// An E-stop contact on a Modbus RTU digital-input module.
#[derive(Debug)]
pub struct ModbusDiEstop<C: Connector> {
    device: String,
    reconnector: Reconnector<C>,
    client: Option<Client>,
    policy: LinkPolicy,
    options: ModbusDiOptions,
}

impl<C: Connector> ModbusDiEstop<C> {
    /// A driver for the module named `device`.
    pub fn new(
        device: impl Into<String>,
        connector: C,
        policy: LinkPolicy,
        options: ModbusDiOptions,
    ) -> Self {
        Self {
            device: device.into(),
            reconnector: Reconnector::new(connector, policy),
            client: None,
            policy,
            options,
        }
    }

    fn port(&self) -> String {
        self.reconnector.port().to_owned()
    }

    fn link(&mut self, what: &str, error: tokio_modbus::Error) -> LinkError {
        self.client = None;
        let (device, port, command) = (self.device.clone(), self.port(), what.to_owned());
        match error {
            tokio_modbus::Error::Transport(source) => {
                LinkError::PortGone { device, port, command, source }
            }
            tokio_modbus::Error::Protocol(e) => {
                LinkError::Garbled { device, port, command, detail: e.to_string() }
            }
        }
    }

    /// Reads `count` discrete inputs from `address` (the raw module, for tests and service).
    pub async fn read_inputs(&mut self, address: u16, count: u16) -> DeviceResult<Vec<bool>> {
        let what = format!("read discrete inputs {address}+{count}");
        let deadline = Instant::now() + self.policy.timeout;
        if self.client.is_none() {
            let io = self.reconnector.connect_before(deadline).await.map_err(|source| {
                LinkError::PortGone {
                    device: self.device.clone(),
                    port: self.port(),
                    command: what.clone(),
                    source,
                }
            })?;
            let slave = tokio_modbus::Slave(self.options.address);
            self.client = Some(Client(tokio_modbus::client::rtu::attach_slave(io, slave)));
        }
        let client = &mut self.client.as_mut().expect("set above").0;
        let result =
            tokio::time::timeout_at(deadline, client.read_discrete_inputs(address, count)).await;
        match result {
            Ok(Ok(Ok(bits))) => Ok(Ok(bits)),
            Ok(Ok(Err(exception))) => Ok(Err(Refusal {
                device: self.device.clone(),
                command: what,
                reply: format!("exception {:#04x}", u8::from(exception)),
                reason: RefusalReason::ModbusException {
                    code: exception.into(),
                    name: exception.to_string(),
                },
            })),
            Ok(Err(e)) => Err(self.link(&what, e)),
            Err(_) => {
                self.client = None;
                Err(LinkError::Timeout {
                    device: self.device.clone(),
                    port: self.port(),
                    command: what,
                    timeout: self.policy.timeout,
                })
            }
        }
    }
}

impl<C: Connector> EmergencyStop for ModbusDiEstop<C> {
    async fn state(&mut self) -> DeviceResult<EstopState> {
        let bits = match self.read_inputs(self.options.input, inputs::INPUTS_READ).await? {
            Ok(bits) => bits,
            Err(refusal) => return Ok(Err(refusal)),
        };
        match inputs::decode(&bits, self.options.contact) {
            Some(state) => Ok(Ok(state)),
            None => Err(LinkError::Unexpected {
                device: self.device.clone(),
                port: self.port(),
                command: "read the E-stop input".into(),
                reply: format!("{bits:?}"),
            }),
        }
    }
}
