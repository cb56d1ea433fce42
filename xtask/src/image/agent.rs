//! The host side of the boot test's guest agent: runs shell scripts in the guest as root and
//! returns their exit status and output.
//!
//! The channel is a virtio-serial port (`org.galen.agent.0` in the guest, a unix socket that
//! QEMU serves on the host). The guest side is `image/rootfs/usr/lib/galen/test-agent`, which
//! only runs on a boot whose kernel command line has `galen.test-agent`. Protocol, one line
//! each way, base64 so that no script or output can break the framing:
//!
//! ```text
//! host -> guest:  <id> <base64 script>
//! guest -> host:  @@galen-agent <id> <exit status> <base64 stdout+stderr>
//! guest -> host:  @@galen-agent hello <seconds since boot>      (once, when it starts)
//! ```
//!
//! Requests are answered in order, one at a time; a reply whose id is not the one awaited is
//! stale (from a request that timed out) and is skipped.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::process;

const PREFIX: &str = "@@galen-agent ";

/// A message from the guest agent.
#[derive(Debug, PartialEq)]
enum Message {
    Hello { uptime_s: f64 },
    Reply { id: u64, status: i32, output: String },
}

/// What a script did in the guest.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: i32,
    pub(crate) output: String,
}

/// A connection to the guest agent of one running QEMU.
#[derive(Debug)]
pub(crate) struct Agent {
    stream: UnixStream,
    messages: Receiver<Message>,
    next_id: u64,
}

impl Agent {
    /// Connects to QEMU's end of the channel (QEMU creates the socket soon after it starts).
    pub(crate) fn connect(socket: &Path) -> Result<Self> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let stream = loop {
            process::bail_if_interrupted()?;
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => {
                    return Err(e).with_context(|| {
                        format!("connecting to the guest agent's socket {}", socket.display())
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let reader = BufReader::new(stream.try_clone()?);
        let (tx, messages) = mpsc::channel();
        // The reader ends when QEMU closes the socket; the channel then reports it.
        std::thread::spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { return };
                if let Some(message) = parse_line(&line)
                    && tx.send(message).is_err()
                {
                    return;
                }
            }
        });
        Ok(Self { stream, messages, next_id: 1 })
    }

    /// Waits until the agent in the guest has started; returns the guest's uptime then.
    pub(crate) fn wait_hello(&mut self, timeout: Duration) -> Result<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.receive(deadline, "the guest agent to start")? {
                Message::Hello { uptime_s } => return Ok(uptime_s),
                Message::Reply { .. } => {}
            }
        }
    }

    /// Runs `script` with `sh` in the guest, as root.
    pub(crate) fn run(&mut self, script: &str, timeout: Duration) -> Result<Reply> {
        let id = self.next_id;
        self.next_id += 1;
        writeln!(self.stream, "{id} {}", base64_encode(script.as_bytes()))
            .context("sending a script to the guest agent")?;
        self.stream.flush()?;
        let deadline = Instant::now() + timeout;
        let what = format!("the guest to run `{}`", first_line(script));
        loop {
            match self.receive(deadline, &what)? {
                Message::Reply { id: got, status, output } if got == id => {
                    return Ok(Reply { status, output });
                }
                // Stale replies, or a restarted agent saying hello: neither answers us.
                Message::Reply { .. } | Message::Hello { .. } => {}
            }
        }
    }

    /// Runs `script` and fails, with its output, unless it exits 0.
    pub(crate) fn check(&mut self, what: &str, script: &str, timeout: Duration) -> Result<String> {
        let reply = self.run(script, timeout)?;
        if reply.status != 0 {
            bail!(
                "in the guest, {what} failed (exit status {}):\n{}",
                reply.status,
                reply.output.trim_end()
            );
        }
        Ok(reply.output)
    }

    /// Sends a script without waiting for an answer (one that powers the guest off).
    pub(crate) fn send(&mut self, script: &str) -> Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        writeln!(self.stream, "{id} {}", base64_encode(script.as_bytes()))
            .context("sending a script to the guest agent")?;
        Ok(())
    }

    fn receive(&mut self, deadline: Instant, what: &str) -> Result<Message> {
        loop {
            process::bail_if_interrupted()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("timed out waiting for {what}");
            }
            match self.messages.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(message) => return Ok(message),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    process::bail_if_interrupted()?;
                    bail!(
                        "the guest agent's channel closed (QEMU exited?) while waiting for {what}"
                    )
                }
            }
        }
    }
}

fn first_line(script: &str) -> &str {
    script.trim().lines().next().unwrap_or_default()
}

fn parse_line(line: &str) -> Option<Message> {
    // The port may carry a partial line from before the agent (re)started.
    let rest = &line[line.find(PREFIX)? + PREFIX.len()..];
    let mut words = rest.trim_end().splitn(3, ' ');
    let first = words.next()?;
    if first == "hello" {
        return Some(Message::Hello { uptime_s: words.next()?.parse().ok()? });
    }
    let id = first.parse().ok()?;
    let status = words.next()?.parse().ok()?;
    let output = base64_decode(words.next().unwrap_or_default())?;
    Some(Message::Reply { id, status, output: String::from_utf8_lossy(&output).into_owned() })
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (what coreutils `base64` reads and writes).
pub(crate) fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)?;
        acc = (acc << 6) | u32::try_from(v).ok()?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_coreutils() {
        // `printf 'galen agent\n' | base64` and the RFC 4648 test vectors.
        assert_eq!(base64_encode(b"galen agent\n"), "Z2FsZW4gYWdlbnQK");
        for (plain, encoded) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
            assert_eq!(base64_decode(encoded).as_deref(), Some(plain.as_bytes()));
        }
        assert_eq!(base64_decode("not base64!"), None);
    }

    #[test]
    fn agent_lines() {
        let check = |line: &str, expected: Option<Message>| assert_eq!(parse_line(line), expected);
        check("@@galen-agent hello 12.34", Some(Message::Hello { uptime_s: 12.34 }));
        check(
            "@@galen-agent 7 0 YWN0aXZlCg==",
            Some(Message::Reply { id: 7, status: 0, output: "active\n".into() }),
        );
        check("@@galen-agent 8 3 ", Some(Message::Reply { id: 8, status: 3, output: "".into() }));
        check("@@galen-agent 9 1", Some(Message::Reply { id: 9, status: 1, output: "".into() }));
        // Noise before the prefix (a partial line from a restarted agent) is dropped.
        check("garbage@@galen-agent hello 1", Some(Message::Hello { uptime_s: 1.0 }));
        check("a console line", None);
        check("@@galen-agent x 0 AA==", None);
    }
}
