//! A wire-level digital-input module served by tokio-modbus's `rtu-server`: it answers Read
//! Discrete Inputs (0x02) for its inputs, with the E-stop's contact on one of them following
//! the [`EstopPlant`]'s button, and refuses every other function code (exception 1), as a
//! read-only input module does.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

use super::inputs::{self, Contact};
use crate::emulator::FaultHandle;
use crate::estop::{EstopPlant, EstopState};

/// The module an emulator pretends to be, and how the E-stop is wired to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModbusDiModel {
    /// Modbus slave address.
    pub address: u8,
    /// How many inputs the module has.
    pub inputs: u16,
    /// The input the E-stop's contact is wired to.
    pub estop_input: u16,
    /// How that contact is wired.
    pub contact: Contact,
}

impl Default for ModbusDiModel {
    fn default() -> Self {
        Self { address: 1, inputs: 8, estop_input: 0, contact: Contact::NormallyClosed }
    }
}

#[derive(Debug)]
struct Shared {
    plant: EstopPlant,
    model: ModbusDiModel,
    faults: FaultHandle,
}

/// A digital-input module on the wire.
#[derive(Debug, Clone)]
pub struct ModbusDiEmulator {
    shared: Arc<Shared>,
}

impl ModbusDiEmulator {
    /// A module whose E-stop input follows `plant`'s button.
    pub fn new(plant: EstopPlant, model: ModbusDiModel) -> Self {
        Self { shared: Arc::new(Shared { plant, model, faults: FaultHandle::new() }) }
    }

    /// The button.
    pub fn plant(&self) -> EstopPlant {
        self.shared.plant.clone()
    }

    /// The fault switch.
    pub fn faults(&self) -> FaultHandle {
        self.shared.faults.clone()
    }

    /// Serves one host until it hangs up.
    pub async fn serve<T: AsyncRead + AsyncWrite + Unpin>(&self, io: T) -> io::Result<()> {
        crate::modbus::serve_rtu(io, self.shared.clone(), &self.shared.faults).await
    }
}

impl Shared {
    fn call(&self, request: SlaveRequest<'static>) -> Result<Option<Response>, ExceptionCode> {
        if request.slave != self.model.address {
            return Ok(None);
        }
        match request.request {
            Request::ReadDiscreteInputs(address, count) => {
                let end = u32::from(address) + u32::from(count);
                if count == 0 || end > u32::from(self.model.inputs) {
                    return Err(ExceptionCode::IllegalDataAddress);
                }
                let state =
                    if self.plant.pressed() { EstopState::Pressed } else { EstopState::Released };
                let estop = inputs::level(state, self.model.contact);
                // Inputs with nothing wired read off.
                let bits = (address..address + count)
                    .map(|i| i == self.model.estop_input && estop)
                    .collect();
                Ok(Some(Response::ReadDiscreteInputs(bits)))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }
}

impl crate::modbus::Answer for Shared {
    fn answer(&self, request: SlaveRequest<'static>) -> Result<Option<Response>, ExceptionCode> {
        self.call(request)
    }
}
