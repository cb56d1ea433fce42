//! `hil rig` as `cargo xtask demo` runs it: a child process serving the emulators on real
//! ptys, commands on its stdin answered one line each, the balance read through the real
//! MT-SICS driver from the unit file the rig wrote, end of input ignored, SIGTERM to stop.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use galen_devices::balance::Wait;
use galen_devices::balance::mt_sics::MtSicsBalance;
use galen_devices::config::UnitConfig;
use galen_devices::link::{LinkPolicy, SerialConnector};
use galen_devices::{Balance, LinkError};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// The child and its stdout; killed if a test fails before it is stopped properly.
struct RigProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::UnboundedReceiver<String>,
}

impl RigProcess {
    fn spawn(dir: &Path, speed: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hil"))
            .args(["rig", "--speed", speed, "--dir"])
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("hil runs");
        let stdin = child.stdin.take();
        let out = child.stdout.take().expect("stdout is piped");
        let (tx, stdout) = mpsc::unbounded_channel();
        // A thread, not a task: the pipe is read with blocking calls.
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, stdin, stdout }
    }

    async fn line(&mut self) -> Option<String> {
        timeout(Duration::from_secs(15), self.stdout.recv()).await.expect("hil rig answers")
    }

    /// Waits for the line that starts with `prefix`, skipping the log.
    async fn until(&mut self, prefix: &str) -> String {
        loop {
            let line = self.line().await.expect("hil rig is still running");
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    /// Sends one line and returns its answer.
    async fn ask(&mut self, line: &str) -> String {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        loop {
            let out = self.line().await.expect("hil rig is still running");
            if out.starts_with("ok") || out.starts_with("error:") {
                return out;
            }
        }
    }
}

impl Drop for RigProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn balance(unit: &UnitConfig) -> MtSicsBalance<SerialConnector> {
    let d = unit.device("balance").expect("the rig's unit file has a balance");
    // Short backoff so the replugged port is found again within one request's timeout.
    let policy = LinkPolicy {
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        ..d.policy()
    };
    MtSicsBalance::new(d.name.clone(), d.connector(), policy)
}

/// Two readability steps: tare and reading each carry the balance's noise (σ 3 mg) before
/// rounding to 10 mg.
const WITHIN_G: f64 = 0.02;

/// A stable net reading, g, once the balance has settled.
async fn settled_net_g(balance: &mut MtSicsBalance<SerialConnector>) -> f64 {
    for _ in 0..30 {
        if let Ok(Ok(r)) = balance.read(Wait::Stable).await {
            return r.weight.in_grams();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the balance never settled")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pharmacists_hand_on_stdin_shows_on_the_balance() {
    let dir = tempfile::tempdir().unwrap();
    let mut rig = RigProcess::spawn(dir.path(), "5");
    rig.until("running").await;
    let unit = UnitConfig::load(&dir.path().join("unit.toml")).unwrap();
    assert_eq!(unit.speed(), 5.0, "the unit file tells the supervisor the rig's speed");
    let mut balance = balance(&unit);
    let tare = balance.tare().await.unwrap().unwrap();
    assert_eq!(tare.map(|w| w.in_grams()), Some(60.0), "the empty vessel");

    assert_eq!(rig.ask("add azathioprine 1.4").await, "ok 1.4 g of azathioprine added by hand");
    let net = settled_net_g(&mut balance).await;
    assert!((net - 1.4).abs() <= WITHIN_G, "the balance shows the powder: {net} g");
    let status = rig.ask("status").await;
    assert!(status.starts_with("ok plant ") && status.contains("1.400 g solids"), "{status}");

    // A blank line gets no answer: each answer below belongs to the line before it.
    let refused = [
        ("", None),
        (
            "add water 3",
            Some("error: `water` is a liquid: liquids arrive through the pumps, not by hand"),
        ),
        ("add azathioprine -1", Some("error: -1 g of azathioprine: must be more than 0 g")),
        ("add azathioprine NaN", Some("error: NaN g of azathioprine: not a number of grams")),
        (
            "add azathioprine 1e6",
            Some("error: 1000000 g of azathioprine: more than the balance's capacity of 520 g"),
        ),
        ("add azathioprine", Some("error: usage: add <material> <grams>")),
        (
            "unplug scale",
            Some(
                "error: no device `scale` in the rig (devices: balance, syringe, peristaltic, heater, estop)",
            ),
        ),
        (
            "weigh 1.4",
            Some(
                "error: unknown command `weigh` (commands: add <material> <grams>, unplug <device>, replug <device>, estop press|release, status, help)",
            ),
        ),
    ];
    for (line, expected) in refused {
        match expected {
            None => writeln!(rig.stdin.as_mut().unwrap(), "{line}").unwrap(),
            Some(expected) => assert_eq!(rig.ask(line).await, expected, "{line:?}"),
        }
    }
    let status = rig.ask("status").await;
    assert!(status.contains("0.000 g liquid and 1.400 g solids"), "refusals add nothing: {status}");

    assert_eq!(rig.ask("estop press").await, "ok emergency stop pressed");
    assert_eq!(rig.ask("estop release").await, "ok emergency stop released");
    assert_eq!(rig.ask("estop").await, "error: usage: estop press|release");
    assert_eq!(rig.ask("unplug balance").await, "ok balance unplugged");
    let gone = balance.read(Wait::Immediate).await;
    assert!(matches!(gone, Err(LinkError::PortGone { .. })), "{gone:?}");
    assert_eq!(rig.ask("replug balance").await, "ok balance plugged back in");
    assert!(
        (settled_net_g(&mut balance).await - 1.4).abs() <= WITHIN_G,
        "the same load, tare kept"
    );

    // End of input: the demo may close the pipe; the unit stays up for the supervisor.
    drop(rig.stdin.take());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rig.child.try_wait().unwrap().is_none(), "hil rig keeps running after EOF");
    assert!((settled_net_g(&mut balance).await - 1.4).abs() <= WITHIN_G);

    // SIGTERM, as xtask stops its children: links and unit file are removed, exit 0.
    let pid = rig.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    assert_eq!(rig.until("stopped").await, "stopped");
    assert!(rig.child.wait().unwrap().success());
    assert!(!dir.path().join("unit.toml").exists());
    assert!(dir.path().join("balance").symlink_metadata().is_err(), "the link is removed");
}

#[test]
fn speeds_the_unit_file_cannot_carry_are_refused_and_help_lists_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hil"))
        .args(["rig", "--speed", "0.5", "--dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("simulation speed 0.5 is not between 1 and 100"), "{stderr}");
    assert!(!dir.path().join("unit.toml").exists());

    let out = Command::new(env!("CARGO_BIN_EXE_hil")).args(["rig", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains(galen_hil::console::HELP), "{help}");
}
