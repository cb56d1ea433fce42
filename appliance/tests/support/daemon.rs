//! The real binaries as a unit runs them: `applianced` commissioned and started against a
//! `hil` rig on a private dbus-daemon, killed or stopped, and `galenctl` as the people at it.
//!
//! Kept apart from `support/mod.rs` because it names this package's binaries
//! (`CARGO_BIN_EXE_*`), which only its own tests and benchmarks can see; the HMI's flow test
//! includes `support/mod.rs` too. Include it next to it:
//! `#[path = "support/daemon.rs"] mod daemon;`.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use galen_hil::rig::Rig;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support;

/// `applianced` with the appliance's records, keys and TPM.
pub fn applianced(appliance: &support::Rig) -> Command {
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

/// `applianced commission` with the first administrator (`admin`, [`support::ADMIN_PIN`]).
pub fn commission(appliance: &support::Rig) {
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

/// A running `applianced`, killed if a failing test leaves it behind.
pub struct Daemon(pub Child);

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILL, as a power cut or the OOM killer: no handler runs.
    pub fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    /// SIGTERM; it must take its final checkpoint and exit 0.
    pub fn stop(mut self) {
        let child = &mut self.0;
        kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), Signal::SIGTERM).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "{status}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `applianced run` on `rig`, trusting `root` for recipes, under `name` on the test bus
/// (a fresh one if `None`); returns it, the line it printed when ready, and the bus name.
pub fn start(
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
        .arg("--stick-dir")
        .arg(appliance.dir.path().join("exports"))
        .arg("--bus")
        .arg(bus())
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

/// Puts the manufacturer's signed `repo` on the folder that stands in for the stick of
/// the daemons [`start`] runs for `appliance`.
pub fn put_on_stick(appliance: &support::Rig, repo: &Path) {
    support::copy_dir(repo, &appliance.dir.path().join("exports/MANUFACTURER"));
}

/// The private bus `cargo xtask test` starts.
pub fn bus() -> String {
    std::env::var("GALEN_TEST_DBUS_ADDRESS").expect("run through `cargo xtask test`")
}

/// The PIN of each person the tests add (and of the administrator).
pub fn pin(user: &str) -> &'static str {
    match user {
        "admin" => support::ADMIN_PIN,
        "ada" => "111111",
        "vic" => "222222",
        _ => "333333",
    }
}

/// `galenctl` as `user` against the applianced serving `name`, not yet run.
pub fn galenctl_command(name: &str, user: &str, args: &[&str]) -> Command {
    let new_pin = match args {
        ["users", "add", who, ..] => pin(who),
        _ => "",
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_galenctl"));
    cmd.args(args)
        .env("GALEN_BUS", bus())
        .env("GALEN_BUS_NAME", name)
        .env("GALEN_USER", user)
        .env("GALEN_PIN", pin(user))
        .env("GALEN_NEW_PIN", new_pin)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// `galenctl` as `user`, however it ends.
pub fn galenctl_output(name: &str, user: &str, args: &[&str]) -> Output {
    galenctl_command(name, user, args).output().unwrap()
}

/// `galenctl` as `user`; fails the test unless it exits 0. Returns what it printed.
pub fn galenctl(name: &str, user: &str, args: &[&str]) -> String {
    let out = galenctl_output(name, user, args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "galenctl {args:?} ({}): {text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `galenctl` as `user` where the appliance must refuse with exit code 4 (bad input, wrong
/// state, not ready); returns what it said on standard error.
pub fn galenctl_refused(name: &str, user: &str, args: &[&str]) -> String {
    let out = galenctl_output(name, user, args);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(4), "galenctl {args:?} was not refused: {said}");
    said
}

/// The people of a pharmacy (pharmacist ada, verifier vic, QA quinn), added by the
/// administrator; QA installs the recipe update on the stick (see [`put_on_stick`]) and
/// activates `recipes`.
pub fn staff(name: &str, recipes: &[&str]) {
    for (user, full, role) in [
        ("ada", "Ada Lovelace", "pharmacist"),
        ("vic", "Victor Second", "verifier"),
        ("quinn", "Quinn Release", "qa"),
    ] {
        galenctl(
            name,
            "admin",
            &["users", "add", user, "--name", full, "--role", role, "--reason", "staff"],
        );
    }
    let on_stick = galenctl(name, "quinn", &["stick"]);
    assert!(on_stick.contains("recipe update  MANUFACTURER"), "{on_stick}");
    galenctl(name, "quinn", &["recipes", "install", "--from-stick"]);
    for recipe in recipes {
        galenctl(name, "quinn", &["recipes", "activate", recipe]);
    }
}

/// Ada creates a batch of `recipe` for a TPMT intermediate metaboliser, Victor verifies it and
/// Ada starts it; returns its id.
pub fn start_batch(name: &str, recipe: &str) -> String {
    let created = galenctl(
        name,
        "ada",
        &[
            "--json",
            "batch",
            "create",
            "--recipe",
            recipe,
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
    galenctl(name, "vic", &["batch", "verify", &id]);
    galenctl(name, "ada", &["batch", "start", &id]);
    id
}

/// Ada scans both materials of the test recipes as the batch asks for them.
pub fn scan_materials(name: &str, id: &str) {
    galenctl(name, "ada", &["batch", "watch", id, "--until-phase", "scan-api"]);
    galenctl(name, "ada", &["batch", "scan", id, "azathioprine", "AZA-2291", "2030-01-31"]);
    galenctl(name, "ada", &["batch", "watch", id, "--until-phase", "scan-vehicle"]);
    galenctl(name, "ada", &["batch", "scan", id, "vehicle", "ORA-77", "2030-06-30"]);
    // The batch takes a scan in after the call has returned: until it has moved on, a watch
    // for the operator would still see the scan it asked for, and a confirm sent then would be
    // refused and the batch wait for ever.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status: serde_json::Value =
            serde_json::from_str(&galenctl(name, "ada", &["--json", "status"])).unwrap();
        assert_eq!(status["notice"], "", "the vehicle scan was refused: {status}");
        if status["phase"] != "scan-vehicle" {
            break;
        }
        assert!(Instant::now() < deadline, "the vehicle scan was not taken in: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The batch's entries as the API gives them.
pub fn entries(name: &str, id: &str) -> Vec<serde_json::Value> {
    let json = galenctl(name, "quinn", &["records", "entries", id]);
    serde_json::from_str(&json).unwrap()
}

/// `galenctl records verify` says the whole chain verifies and the records were sound at start.
pub fn assert_chain_verifies(name: &str) {
    let said = galenctl(name, "quinn", &["--json", "records", "verify"]);
    let v: serde_json::Value = serde_json::from_str(&said).unwrap();
    assert_eq!(v["integrity"], "sound", "{said}");
    assert!(v["entries"].as_u64().unwrap() > 0, "{said}");
}
