//! Device benchmarks: decode throughput and allocations per frame for each codec, and the
//! weight-read round trip driver ↔ emulator over a pty next to the serial frame time at 9600
//! baud. Appends JSON lines to `$GALEN_BENCH_OUT` (format: xtask/src/bench.rs) and prints a
//! line per figure.

// The counting allocator below must implement `GlobalAlloc`, which is an unsafe trait; it only
// forwards to the system allocator and counts.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use galen_devices::Balance;
use galen_devices::balance::mt_sics::{MtSicsBalance, MtSicsEmulator, MtSicsModel};
use galen_devices::balance::{ManualWeight, Wait};
use galen_devices::codec::Decode;
use galen_devices::link::{LinkPolicy, SerialConnector, SerialSettings};
use galen_devices::pty::Served;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// caller's guarantees carry over; the counter has no effect on memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn record(name: &str, value: f64, unit: &str, note: &str) {
    println!("devices: {name}: {value:.3} {unit} ({note})");
    if let Ok(path) = std::env::var("GALEN_BENCH_OUT") {
        let line = format!(
            "{{\"suite\":\"devices\",\"name\":{name:?},\"value\":{value},\"unit\":{unit:?},\"note\":{note:?}}}\n"
        );
        let mut file =
            std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open results");
        file.write_all(line.as_bytes()).expect("write results");
    }
}

/// Decodes a stream of identical frames repeatedly; reports MB/s and allocations per frame.
fn decode<D: Decode>(name: &str, mut decoder: D, frame: &[u8]) {
    const FRAMES: usize = 2000;
    let stream: Vec<u8> = frame.iter().copied().cycle().take(frame.len() * FRAMES).collect();
    let mut rounds = 0u32;
    let mut frames = 0u64;
    let allocations_before = ALLOCATIONS.load(Ordering::Relaxed);
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(500) {
        let mut buf = BytesMut::from(&stream[..]);
        while let Ok(Some(f)) = decoder.decode(&mut buf) {
            black_box(f);
            frames += 1;
        }
        rounds += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations_before;
    // Counts far below 2^53.
    #[allow(clippy::cast_precision_loss)]
    let (bytes, frames_f, allocations_f) =
        (stream.len() as f64 * f64::from(rounds), frames as f64, allocations as f64);
    record(
        &format!("{name} decode"),
        bytes / elapsed / 1e6,
        "MB/s",
        &format!("{}-byte frames", frame.len()),
    );
    // One allocation per round copies the input into a BytesMut; it is not the decoder's.
    record(
        &format!("{name} allocations per frame"),
        (allocations_f - f64::from(rounds)) / frames_f,
        "allocs",
        "counting global allocator",
    );
}

fn round_trip() {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let emulator =
            Arc::new(MtSicsEmulator::new(ManualWeight::new(52.1873), MtSicsModel::default()));
        let serving = emulator.clone();
        let served = Served::spawn(move |io| async move { serving.serve(io).await }).unwrap();
        let settings = SerialSettings::n81(9600);
        let connector = SerialConnector::new(served.path().to_string_lossy(), settings);
        let mut balance = MtSicsBalance::new("bench", connector, LinkPolicy::default());
        balance.read(Wait::Immediate).await.unwrap().unwrap();
        let n = 500u32;
        let start = Instant::now();
        for _ in 0..n {
            black_box(balance.read(Wait::Immediate).await.unwrap().unwrap());
        }
        let per_read = start.elapsed() / n;
        // "SI\r\n" out and "S S    52.1873 g\r\n" back: what a real 9600 8N1 line must carry.
        let wire = settings.frame_time(4 + 18);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        record(
            "weight read round trip over a pty",
            ms(per_read),
            "ms",
            "MT-SICS SI, driver and emulator",
        );
        record("serial frame time at 9600 8N1", ms(wire), "ms", "22 bytes: SI and its reply");
        record(
            "pty round trip / frame time",
            per_read.as_secs_f64() / wire.as_secs_f64(),
            "x",
            "below 1: the software costs less than the wire",
        );
    });
}

fn main() {
    use galen_devices::balance::{mt_sics, sbi};
    use galen_devices::pump::{new_era, wm520};
    decode("MT-SICS", mt_sics::codec::ReplyDecoder, b"S S    52.1873 g\r\n");
    decode("SBI", sbi::codec::ReplyDecoder, b"N     +  52.1874 g  \r\n");
    decode(
        "New Era basic",
        new_era::codec::ReplyDecoder { mode: new_era::codec::Mode::Basic },
        b"\x0200II0.250W0.000ML\x03",
    );
    decode(
        "New Era safe",
        new_era::codec::ReplyDecoder { mode: new_era::codec::Mode::Safe },
        b"\x02\x0700I\x19\xdd\x03",
    );
    decode(
        "Watson-Marlow",
        wm520::codec::LineDecoder,
        b"520Du 15.84 520R 9.6MM 220.0 CW P/N 1 123456789 1 !\r\n",
    );
    round_trip();
}
