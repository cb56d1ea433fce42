//! A byte-level record of a conversation, taken on the emulator's side of the wire.
//!
//! [`Tap`] wraps any transport and logs each read and write. [`Transcript::render`] coalesces
//! consecutive chunks in the same direction, because how a pty splits bytes into reads is not
//! deterministic while the order of requests and replies is; the rendering is what the
//! conversation tests snapshot.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::codec::escape;

/// Which way bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the host (driver) to the device (emulator).
    ToDevice,
    /// From the device to the host.
    ToHost,
}

#[derive(Debug)]
enum Entry {
    Bytes(Direction, Vec<u8>),
    Note(String),
}

/// A shared, append-only log of chunks and notes.
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    entries: Arc<Mutex<Vec<Entry>>>,
}

impl Transcript {
    /// An empty transcript.
    pub fn new() -> Self {
        Self::default()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, direction: Direction, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut entries = self.entries();
        match entries.last_mut() {
            Some(Entry::Bytes(d, last)) if *d == direction => last.extend_from_slice(bytes),
            _ => entries.push(Entry::Bytes(direction, bytes.to_vec())),
        }
    }

    /// Marks a point in the conversation (a fault switched on, a port unplugged).
    pub fn note(&self, text: &str) {
        self.entries().push(Entry::Note(text.to_owned()));
    }

    /// The conversation so far, one line per turn: `->` to the device, `<-` to the host, `#`
    /// for notes.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for entry in self.entries().iter() {
            match entry {
                Entry::Bytes(direction, bytes) => {
                    out.push_str(match direction {
                        Direction::ToDevice => "-> \"",
                        Direction::ToHost => "<- \"",
                    });
                    out.push_str(&escape(bytes));
                    out.push_str("\"\n");
                }
                Entry::Note(text) => {
                    out.push_str("# ");
                    out.push_str(text);
                    out.push('\n');
                }
            }
        }
        out
    }

    /// Forgets everything recorded so far.
    pub fn clear(&self) {
        self.entries().clear();
    }
}

/// Wraps a transport and records what passes through it into a [`Transcript`].
#[derive(Debug)]
pub struct Tap<T> {
    inner: T,
    transcript: Transcript,
    cut: Arc<AtomicBool>,
}

impl<T> Tap<T> {
    /// Records `inner`'s traffic into `transcript`.
    pub fn new(inner: T, transcript: Transcript) -> Self {
        Self { inner, transcript, cut: Arc::default() }
    }

    /// A switch that cuts the wire at once: from the moment it is set, nothing more passes
    /// either way (reads and writes fail), whatever task is still holding the tap. An aborted
    /// task is only dropped at its next poll, and until then it could still answer.
    pub fn cutter(&self) -> Arc<AtomicBool> {
        self.cut.clone()
    }

    fn check_cut(&self) -> io::Result<()> {
        if self.cut.load(Ordering::SeqCst) {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "the wire was cut (unplugged)"))
        } else {
            Ok(())
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tap<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check_cut()?;
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            let bytes = &buf.filled()[before..];
            self.transcript.push(Direction::ToDevice, bytes);
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tap<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check_cut()?;
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.transcript.push(Direction::ToHost, &buf[..n]);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
