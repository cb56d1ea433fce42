//! A minimal QMP client: QEMU's machine protocol, for what the guest cannot do for itself
//! (press the power button; stage 2: a PNG screendump of the HMI).
//!
//! QMP is JSON, one object per line: a greeting, then `qmp_capabilities`, then commands, each
//! answered by `{"return": …}` or `{"error": …}`; asynchronous `{"event": …}` lines may come
//! in between and are skipped.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::process;

/// A QMP session with one QEMU.
#[derive(Debug)]
pub(crate) struct Qmp {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Qmp {
    /// Connects (QEMU creates the socket soon after it starts) and leaves negotiation mode.
    pub(crate) fn connect(socket: &Path) -> Result<Self> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let stream = loop {
            process::bail_if_interrupted()?;
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => {
                    return Err(e)
                        .with_context(|| format!("connecting to QMP at {}", socket.display()));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut qmp = Self { reader: BufReader::new(stream.try_clone()?), writer: stream };
        let greeting = qmp.read()?;
        if greeting.get("QMP").is_none() {
            bail!("QEMU did not greet with QMP: {greeting}");
        }
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    /// Runs a command and returns its `return` value.
    pub(crate) fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let request = json!({ "execute": command, "arguments": arguments });
        writeln!(self.writer, "{request}").with_context(|| format!("sending QMP {command}"))?;
        loop {
            let reply = self.read()?;
            if let Some(value) = reply.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = reply.get("error") {
                bail!("QMP {command} failed: {error}");
            }
        }
    }

    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).context("reading from QMP")? == 0 {
            bail!("QEMU closed the QMP socket");
        }
        serde_json::from_str(&line).with_context(|| format!("QMP sent {line:?}"))
    }
}
