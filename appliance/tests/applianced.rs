//! The `applianced` binary as systemd runs it: commissioned once, started against the
//! simulated unit, stopped with SIGTERM, and restarted over a record that says a batch was
//! running.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use galen_appliance::records::{Integrity, NewEntry};
use galen_hil::plant::PlantConfig;
use galen_hil::plant::config::BalanceConfig;
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
fn start(appliance: &support::Rig, rig: &Rig) -> (Daemon, String) {
    let root =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/tests/fixtures/tuftool/root.json");
    let (child, ready, _) = start_trusting(appliance, rig, &root, None);
    (child, ready)
}

/// Starts `applianced run` trusting `root` for recipes, under `name` on the test bus (a fresh
/// one if `None`); returns it, its ready line and the bus name.
fn start_trusting(
    appliance: &support::Rig,
    rig: &Rig,
    root: &Path,
    name: Option<&str>,
) -> (Daemon, String, String) {
    static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = name.map_or_else(
        || format!("org.galen.Test.Applianced{n}.P{}", std::process::id()),
        str::to_owned,
    );
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
        .arg(&name)
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
    (Daemon(child), ready, name)
}

/// A running `applianced`, killed if a failing test leaves it behind.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn stop(mut daemon: Daemon) {
    let child = &mut daemon.0;
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

/// `galenctl` as `user` against the applianced serving `name`; fails the test unless it exits 0.
fn galenctl(name: &str, user: &str, args: &[&str]) -> String {
    let pin = match user {
        "admin" => support::ADMIN_PIN,
        "ada" => "111111",
        "vic" => "222222",
        _ => "333333",
    };
    let out = Command::new(env!("CARGO_BIN_EXE_galenctl"))
        .args(args)
        .env("GALEN_BUS", std::env::var("GALEN_TEST_DBUS_ADDRESS").unwrap())
        .env("GALEN_BUS_NAME", name)
        .env("GALEN_USER", user)
        .env("GALEN_PIN", pin)
        .env("GALEN_NEW_PIN", pin_of(args))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "galenctl {args:?} ({}): {text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The PIN a `users add <name>` gives the new user.
fn pin_of(args: &[&str]) -> &'static str {
    match args {
        ["users", "add", "ada", ..] => "111111",
        ["users", "add", "vic", ..] => "222222",
        _ => "333333",
    }
}

/// Whether liquid is leaving the bottle at more than 3 mL/min: the peristaltic pump turns (a
/// stopped rotor's flow decays exponentially, so "any change" would never read as stopped).
fn peristaltic_turning(rig: &Rig) -> bool {
    let before = rig.plant().snapshot().bottle_ml;
    std::thread::sleep(Duration::from_millis(400));
    rig.plant().snapshot().bottle_ml < before - 0.02
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_dispense_the_pump_is_stopped_at_restart_and_nothing_acknowledged_is_lost() {
    let appliance = support::Rig::new();
    commission(&appliance);
    let dir = tempfile::tempdir().unwrap();
    let (repo, root) = support::repository(dir.path()).await;
    let root_path = dir.path().join("root.json");
    std::fs::write(&root_path, root).unwrap();
    let plant = PlantConfig { balance: BalanceConfig::analytical(), ..PlantConfig::default() };
    let rig =
        Rig::start(RigConfig { plant, ..RigConfig::default() }, &dir.path().join("rig")).unwrap();
    let (child, _, name) = start_trusting(&appliance, &rig, &root_path, None);
    let ctl = |user: &str, args: &[&str]| galenctl(&name, user, args);

    for (user, full, role) in [
        ("ada", "Ada Lovelace", "pharmacist"),
        ("vic", "Victor Second", "verifier"),
        ("quinn", "Quinn Release", "qa"),
    ] {
        ctl("admin", &["users", "add", user, "--name", full, "--role", role, "--reason", "staff"]);
    }
    ctl("quinn", &["recipes", "install", &repo.display().to_string()]);
    ctl("quinn", &["recipes", "activate", "test-suspension"]);
    let created = ctl(
        "ada",
        &[
            "--json",
            "batch",
            "create",
            "--recipe",
            "test-suspension",
            "--patient-id",
            "P-0042",
            "--weight-kg",
            "7",
            "--age-years",
            "2",
            "--phenotype",
            "TPMT=Intermediate Metabolizer",
            "--phenotype",
            "NUDT15=Normal Metabolizer",
        ],
    );
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let id = created["batch"].as_str().unwrap().to_owned();
    ctl("vic", &["batch", "verify", &id]);
    ctl("ada", &["batch", "start", &id]);
    ctl("ada", &["batch", "watch", &id, "--until-phase", "scan-api"]);
    ctl("ada", &["batch", "scan", &id, "azathioprine", "AZA-2291", "2030-01-31"]);
    ctl("ada", &["batch", "watch", &id, "--until-phase", "scan-vehicle"]);
    ctl("ada", &["batch", "scan", &id, "vehicle", "ORA-77", "2030-06-30"]);
    ctl("ada", &["batch", "watch", &id, "--until-phase", "dispense-vehicle"]);
    assert!(peristaltic_turning(&rig), "the vehicle is being pumped");

    // Power cut, or the OOM killer: no handler runs.
    let mut child = child;
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    assert!(peristaltic_turning(&rig), "nobody stopped the pump: the hazard a restart must end");

    let (child, ready, _) = start_trusting(&appliance, &rig, &root_path, Some(&name));
    assert_eq!(ready, "applianced ready: 4 devices, 1 batch(es) held after restart");
    // The stop went out before READY; a rotor runs down over its ramp (τ 0.3 s).
    std::thread::sleep(Duration::from_millis(1500));
    let turning = peristaltic_turning(&rig);
    stop(child);

    let store = appliance.open();
    let said = store.batch_entries(&id).unwrap().iter().rev().find_map(|e| {
        (e.body.kind == EntryKind::Deviation).then(|| e.body.new_value.clone().unwrap_or_default())
    });
    assert!(!turning, "the restart stopped the pump before anything else; it said {said:?}");
    assert_eq!(store.integrity(), &Integrity::Sound);
    let batch = store.batch_entries(&id).unwrap();
    let has = |what: &str| {
        batch.iter().any(|e| e.body.new_value.as_deref().is_some_and(|v| v.contains(what)))
    };
    // What the API acknowledged before the kill is in the record.
    assert!(has("Verified by"), "the second person's signature");
    assert!(has("scanned azathioprine lot AZA-2291"), "the first scan");
    assert!(has("scanned vehicle lot ORA-77"), "the second scan");
    let last = batch.last().unwrap();
    assert_eq!(
        (last.body.object.as_str(), last.body.new_value.as_deref()),
        ("batch.state", Some("Held"))
    );
    let deviation = &batch[batch.len() - 2];
    assert_eq!(deviation.body.kind, EntryKind::Deviation);
    assert!(
        deviation.body.new_value.as_deref().unwrap().contains("in phase dispense-vehicle"),
        "{:?}",
        deviation.body.new_value
    );
}
