//! The `applianced` binary as systemd runs it: commissioned once, started against the
//! simulated unit, stopped with SIGTERM, and restarted over a record that says a batch was
//! running.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use galen_appliance::records::{Integrity, NewEntry};
use galen_hil::rig::{Rig, RigConfig};
use galen_record::EntryKind;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn applianced(appliance: &support::Rig) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_applianced"));
    cmd.arg("--db")
        .arg(appliance.db())
        .arg("--keys")
        .arg(appliance.dir.path().join("keys"))
        .arg("--tcti")
        .arg(&appliance.tpm.as_ref().unwrap().tcti)
        .args(["--device-id", support::DEVICE])
        .env("RUST_LOG", "warn");
    cmd
}

fn commission(appliance: &support::Rig) {
    let mut child = applianced(appliance)
        .args(["commission", "--admin", "admin", "--name", "Alan Admin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{}", support::ADMIN_PIN).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("commissioned galen-test-0001"));
}

/// Starts `applianced run` and returns it with the line it printed when ready.
fn start(appliance: &support::Rig, rig: &Rig) -> (Child, String) {
    static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let root =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/tests/fixtures/tuftool/root.json");
    let mut child = applianced(appliance)
        .args(["run", "--unit"])
        .arg(rig.unit_path())
        .arg("--trusted-root")
        .arg(root)
        .arg("--recipes")
        .arg(appliance.dir.path().join("recipes"))
        .arg("--export-to")
        .arg(appliance.dir.path().join("exports"))
        .arg("--bus")
        .arg(std::env::var("GALEN_TEST_DBUS_ADDRESS").expect("run through `cargo xtask test`"))
        .arg("--bus-name")
        .arg(format!("org.galen.Test.Applianced{n}.P{}", std::process::id()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        let line = lines.next().expect("applianced exited before it was ready").unwrap();
        if line.starts_with("applianced ready") {
            break line;
        }
        assert!(Instant::now() < deadline, "not ready in time");
    };
    // Keep reading so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, ready)
}

fn stop(mut child: Child) {
    kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_starts_against_the_unit_and_stops_with_a_final_checkpoint() {
    let appliance = support::Rig::new();
    commission(&appliance);
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(RigConfig::default(), dir.path()).unwrap();
    let (child, ready) = start(&appliance, &rig);
    assert_eq!(ready, "applianced ready: 4 devices, 0 batch(es) held after restart");
    stop(child);
    let store = appliance.open();
    assert_eq!(store.integrity(), &Integrity::Sound);
    let all = store
        .entries_between(galen_record::UtcMillis(0), galen_record::UtcMillis(i64::MAX))
        .unwrap();
    assert_eq!(all.last().unwrap().body.object, "appliance.shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_record_says_was_running_is_held_at_start() {
    let appliance = support::Rig::new();
    commission(&appliance);
    {
        // As the runtime writes it just before a power cut mid-dispense.
        let mut store = appliance.open();
        let entry = |kind, object: &str, value: &str| NewEntry {
            batch_id: Some("B-CUT".into()),
            new_value: Some(value.into()),
            ..NewEntry::new(kind, object)
        };
        store
            .append(support::at(1), entry(EntryKind::BatchState, "batch.state", "Running"))
            .unwrap();
        store
            .append(support::at(2), entry(EntryKind::BatchState, "phase.dispense-water", "started"))
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(RigConfig::default(), dir.path()).unwrap();
    let (child, ready) = start(&appliance, &rig);
    assert_eq!(ready, "applianced ready: 4 devices, 1 batch(es) held after restart");
    stop(child);
    let store = appliance.open();
    let batch = store.batch_entries("B-CUT").unwrap();
    let last = batch.last().unwrap();
    assert_eq!(
        (last.body.object.as_str(), last.body.new_value.as_deref()),
        ("batch.state", Some("Held"))
    );
    let deviation = &batch[batch.len() - 2];
    assert_eq!(deviation.body.kind, EntryKind::Deviation);
    assert!(deviation.body.new_value.as_deref().unwrap().contains("in phase dispense-water"));
}
