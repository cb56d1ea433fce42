//! What the Modbus RTU emulators share: serving a tokio-modbus `rtu-server` service on any byte
//! stream, with wire faults applied on the way out.
//!
//! tokio-modbus's RTU server takes a `SerialStream`, not any byte stream, so the server runs on
//! an internal pty and bytes are relayed between that pty and the caller's transport. The relay
//! is also where wire faults are injected (garbage, noise, a broken CRC), since the server
//! itself always frames correctly; silence and slowness are applied before the emulator
//! answers ([`Faulty`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_modbus::{ExceptionCode, Response, SlaveRequest};

use crate::emulator::{Fault, FaultHandle, is_hangup};

/// What a Modbus emulator answers to one request, wire faults aside.
pub(crate) trait Answer: Send + Sync + 'static {
    fn answer(&self, request: SlaveRequest<'static>) -> Result<Option<Response>, ExceptionCode>;
}

/// An emulator as tokio-modbus serves it: a silent fault answers nothing, a slow one answers
/// late, anything else is the emulator's own answer (the relay garbles it on the way out).
struct Faulty<A> {
    emulator: Arc<A>,
    faults: FaultHandle,
}

impl<A: Answer> tokio_modbus::server::Service for Faulty<A> {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Result<Option<Response>, ExceptionCode>> + Send>>;

    fn call(&self, request: Self::Request) -> Self::Future {
        let (emulator, fault) = (self.emulator.clone(), self.faults.get());
        Box::pin(async move {
            match fault {
                Fault::Silent => return Ok(None),
                Fault::Slow(delay) => tokio::time::sleep(delay).await,
                _ => {}
            }
            emulator.answer(request)
        })
    }
}

/// Serves `emulator` on `io` until the host hangs up, with the wire faults of `faults`.
pub(crate) async fn serve_rtu<T, A>(
    mut io: T,
    emulator: Arc<A>,
    faults: &FaultHandle,
) -> io::Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin,
    A: Answer,
{
    let service = Faulty { emulator, faults: faults.clone() };
    let (master, mut inner) = tokio_serial::SerialStream::pair().map_err(io::Error::from)?;
    let server = tokio_modbus::server::rtu::Server::new(master);
    let task = tokio::spawn(async move { server.serve_forever(service).await });
    let _abort = AbortOnDrop(task);
    let mut to_device = [0u8; 256];
    let mut to_host = [0u8; 256];
    loop {
        tokio::select! {
            read = io.read(&mut to_device) => match read {
                Ok(0) => return Ok(()),
                Ok(n) => inner.write_all(&to_device[..n]).await?,
                Err(e) if is_hangup(&e) => return Ok(()),
                Err(e) => return Err(e),
            },
            read = inner.read(&mut to_host) => {
                let n = read?;
                let mut chunk = to_host[..n].to_vec();
                match faults.get() {
                    Fault::Garbage(bytes) => chunk = bytes,
                    Fault::NoiseBefore(mut bytes) => {
                        bytes.extend_from_slice(&chunk);
                        chunk = bytes;
                    }
                    Fault::BadChecksum => {
                        if let Some(last) = chunk.last_mut() {
                            *last ^= 0xFF;
                        }
                    }
                    Fault::None | Fault::Silent | Fault::Slow(_) => {}
                }
                match io.write_all(&chunk).await {
                    Err(e) if is_hangup(&e) => return Ok(()),
                    other => other?,
                }
            }
        }
    }
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<io::Result<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
