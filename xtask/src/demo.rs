//! `cargo xtask demo`: the most complete end-to-end job the project can do today.
//!
//! It grows with every capability. Each step prints what it is doing and what came of it, so a
//! newcomer can read the output as a tour; the closing summary says plainly what ran, where its
//! output is, and what does not exist yet. Output goes to `target/galen-demo/`, replaced on
//! every run.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use crate::operator::{self, Galenctl, Output, PEOPLE};
use crate::services::Services;
use crate::{cargo, process, setup, workspace_root};

/// Plant seconds per real second: the recipe's ten-minute mix takes one.
const SPEED: u32 = 10;

const ADMIN_PIN: &str = "271828";
const RECIPE: &str = "azathioprine-oral-suspension";

/// Prints one numbered step of the tour.
struct Steps {
    total: usize,
    done: usize,
}

impl Steps {
    fn next(&mut self, what: &str) {
        self.done += 1;
        println!("\n[{}/{}] {what}", self.done, self.total);
    }
}

/// The lab's report on the demo's stick.
const LAB_REPORT: &str = "lab/tpmt-intermediate.tsv";

/// Copies a folder with everything in it.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

pub(crate) fn run(hmi: bool) -> Result<()> {
    println!("Galen demo: what the appliance software can do end to end today.");
    let root = workspace_root();
    let out = root.join("target/galen-demo");
    if out.exists() {
        std::fs::remove_dir_all(&out).context("clearing target/galen-demo")?;
    }
    std::fs::create_dir_all(&out)?;
    if hmi && std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none()
    {
        bail!(
            "--hmi opens a window and needs a desktop session (DISPLAY or WAYLAND_DISPLAY is \
             not set); without one, run `cargo xtask demo`, which scripts the operator"
        );
    }
    let mut steps = Steps { total: if hmi { 10 } else { 13 }, done: 0 };

    steps.next("Install what the appliance needs (Debian packages)");
    setup::run(setup::Mode::Install)?;

    steps.next("Build the workspace");
    process::run(cargo().args(["build", "--workspace", "--bins", "--quiet"]))?;
    println!("    built every crate and binary");

    steps.next("Start a software TPM and a private D-Bus daemon in a temporary directory");
    let services = Services::start()?;
    println!("    software TPM (swtpm)   {}", services.tpm_tcti);
    println!("      answered TPM2_GetRandom with {}", services.tpm_random()?);
    println!("    private D-Bus daemon   {}", services.dbus_address);
    println!("      answered org.freedesktop.DBus.GetId with {}", services.bus_id()?);

    steps.next(&format!(
        "Start a simulated unit (instruments on ptys, real serial framing, physics at {SPEED}x) \
         and drive it by hand"
    ));
    let mut rig = Rig::start(&out.join("rig"))?;
    instruments(&out.join("rig"))?;

    steps.next("The manufacturer lints, signs and publishes the example recipes (TUF)");
    let maker = out.join("manufacturer");
    let examples = root.join("recipes/examples");
    let (keys, repo) = (maker.join("keys"), maker.join("repo"));
    manufacturer(&root, &examples, &keys, &repo)?;
    // The folder applianced takes as its USB stick: the update and the lab's report on it.
    let stick = out.join("stick");
    copy_dir(&repo, &stick.join("recipes"))?;
    std::fs::create_dir_all(stick.join("lab"))?;
    std::fs::copy(examples.join("lab/tpmt-intermediate.tsv"), stick.join(LAB_REPORT))?;
    println!("    put the repository and the lab's report on the stick ({})", stick.display());

    steps.next("Commission the appliance and start its supervisor, applianced, on the unit");
    let mut daemon = Daemon::start(&out, &services, &keys.join("root.json"))?;
    let mut ctl =
        Ctl { bin: root.join("target/debug/galenctl"), bus: services.dbus_address.clone() };

    steps.next("The administrator adds the people who will work at the appliance");
    operator::add_people(&mut ctl, "admin")?;

    steps.next("QA installs the signed recipes from the manufacturer's stick and activates one");
    ctl.show("quinn", &["stick"])?;
    ctl.show("quinn", &["recipes", "install", "--from-stick"])?;
    ctl.show("quinn", &["recipes", "activate", RECIPE])?;
    ctl.show("ada", &["recipes", "list"])?;

    if hmi {
        steps.next("Over to you: the touchscreen on the demo's appliance");
        touchscreen(&root, &services.dbus_address, &mut rig)?;
        steps.next("Stop everything that was started");
        daemon.stop()?;
        drop(rig);
        drop(services);
        println!("    stopped applianced, the unit, swtpm and dbus-daemon");
        return Ok(());
    }

    steps.next(
        "A pharmacist enters the patient and the lab's TPMT result; a second person verifies",
    );
    let patient = operator::patient(RECIPE, &["--lab-on-stick", LAB_REPORT]);
    let preview: Vec<&str> =
        ["batch", "preview"].into_iter().chain(patient.iter().copied()).collect();
    ctl.show("ada", &preview)?;
    let create: Vec<&str> =
        ["batch", "create"].into_iter().chain(patient.iter().copied()).collect();
    let created = ctl.json("ada", &create)?;
    let id = created["batch"].as_str().context("batch create printed no id")?.to_owned();
    println!(
        "    $ galenctl -u ada batch create {}",
        patient.join(" ").replace(&*root.display().to_string(), ".")
    );
    println!("      created {id}");
    ctl.show("vic", &["batch", "verify", &id])?;

    steps.next("The batch runs on the unit; the pharmacist does what the screen asks");
    ctl.show("ada", &["batch", "start", &id])?;
    operator::operate(&mut ctl, &id, &mut |material, grams| {
        println!("      rig> add {material} {grams}");
        println!("      {}", rig.console(&format!("add {material} {grams}"))?);
        Ok(())
    })?;

    steps.next("The pharmacist signs the record; QA releases the batch and prints its label");
    let labels = out.join("labels");
    ctl.show("ada", &["batch", "sign", &id])?;
    ctl.show("quinn", &["batch", "release", &id, "--label-dir", &labels.display().to_string()])?;

    steps.next("An inspector exports the record and verifies it off the appliance");
    let export = ctl.json("ida", &["records", "export", "--batch", &id])?;
    let bundle =
        PathBuf::from(export["location"].as_str().context("the export named no location")?);
    println!("    $ galenctl -u ida records export --batch {id}");
    println!(
        "      exported {} entries to {}",
        export["entries"],
        bundle.strip_prefix(&root).unwrap_or(&bundle).display()
    );
    println!("    galen-verify (recomputes the whole chain, checks the TPM signatures):");
    let report =
        process::output(Command::new(root.join("target/debug/galen-verify")).arg(&bundle))?;
    for line in report.lines() {
        println!("      {line}");
    }
    println!("    VERIFY.txt, followed literally with openssl and sha256sum only:");
    operator::follow_verify_txt(&bundle)?;

    steps.next("Stop everything that was started");
    daemon.stop()?;
    drop(rig);
    let dir = services.dir().to_path_buf();
    drop(services);
    println!("    stopped the unit, swtpm and dbus-daemon; removed {}", dir.display());

    println!(
        "\nWhat ran: applianced drove a simulated unit over serial while four people worked \
         through its D-Bus API with galenctl. A TPMT intermediate metaboliser's azathioprine \
         dose was computed by the manufacturer's signed rule, verified by a second person, \
         weighed and pumped under closed-loop control, signed, released with a label, and \
         exported; the record (a hash chain MACed with a TPM-sealed key, sealed by TPM \
         checkpoints) was verified off the appliance."
    );
    println!("\nWhere to look:");
    println!("    batch record (PDF)   {}", bundle.join("record.pdf").display());
    println!("    label (PDF, ZPL)     {}", labels.join(format!("{id}-label.pdf")).display());
    println!("    the whole export     {}", bundle.display());
    println!("    record database      {}", out.join("appliance/records.sqlite").display());
    println!("    applianced's log     {}", out.join("applianced.log").display());
    println!("    signed recipe repo   {}", repo.display());
    println!(
        "\nNot in this demo: the touchscreen runs with `cargo xtask demo --hmi`; the disk image \
         is built and boot-tested by `cargo xtask image --boot-test`."
    );
    Ok(())
}

/// Opens galen-hmi on the demo's bus and lends it this terminal as the rig's console, until
/// the window is closed.
fn touchscreen(root: &Path, bus: &str, rig: &mut Rig) -> Result<()> {
    println!("    people (user / PIN): admin / {ADMIN_PIN}");
    for (user, name, role, pin) in PEOPLE {
        println!("      {user:<6} / {pin}   {name}, {role}");
    }
    println!(
        "    a patient: P-0001, 35 kg, 10 years, TPMT Intermediate Metabolizer, NUDT15 Normal \
         Metabolizer ({RECIPE})"
    );
    println!(
        "    when the screen asks for the powder, weigh it here, e.g. `add azathioprine 0.490`; \
         close the window to finish"
    );
    let mut hmi =
        process::spawn(Command::new(root.join("target/debug/galen-hmi")).args(["--bus", bus]))?;
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        if let Some(status) = hmi.try_wait()? {
            println!("    the touchscreen closed ({status})");
            return Ok(());
        }
        process::bail_if_interrupted()?;
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
            match rig.console(line.trim()) {
                Ok(answer) => println!("rig: {answer}"),
                Err(e) => println!("rig: {e:#}"),
            }
        }
    }
}

/// `galenctl` on the demo's private bus, as one person (each call logs in and out).
struct Ctl {
    bin: PathBuf,
    bus: String,
}

impl Ctl {
    fn command(&self, user: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
        let pin = if user == "admin" { ADMIN_PIN } else { operator::pin_of(user).unwrap_or("") };
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("GALEN_BUS", &self.bus)
            .env("GALEN_USER", user)
            .env("GALEN_PIN", pin)
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        cmd
    }
}

impl Galenctl for Ctl {
    fn run(&mut self, user: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Output> {
        let out = self
            .command(user, args, env)
            .output()
            .with_context(|| format!("running {}", self.bin.display()))?;
        Ok(Output {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    fn tidy(&self, text: &str) -> String {
        text.replace(&*workspace_root().display().to_string(), ".")
    }

    /// As the trait's, with galenctl's progress bar on the terminal.
    fn watch(&mut self, user: &str, id: &str) -> Result<Value> {
        let mut cmd =
            self.command(user, &["batch", "watch", id, "--until-operator", "--json"], &[]);
        cmd.stderr(Stdio::inherit());
        let out = cmd.output().context("running galenctl batch watch")?;
        // Exit 5: the batch ended other than Complete; its state says how.
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "galenctl batch watch ({}) printed {:?}",
                out.status,
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

/// The simulated unit (`hil rig`), with its console on our end of a pipe.
struct Rig {
    _child: process::Tracked,
    stdin: ChildStdin,
    answers: mpsc::Receiver<String>,
}

impl Rig {
    fn start(dir: &Path) -> Result<Rig> {
        let mut child = process::spawn(
            Command::new(workspace_root().join("target/debug/hil"))
                .args(["rig", "--speed", &SPEED.to_string(), "--dir"])
                .arg(dir)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        )?;
        let stdin = child.child_mut().stdin.take().context("the rig's stdin")?;
        let stdout = child.child_mut().stdout.take().context("the rig's stdout")?;
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            // The plant's own chatter is for a person at the rig; the console answers are ours.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if (line.starts_with("ok") || line.starts_with("error:")) && tx.send(line).is_err()
                {
                    break;
                }
            }
        });
        let unit = dir.join("unit.toml");
        let deadline = Instant::now() + Duration::from_secs(15);
        while !unit.exists() {
            if Instant::now() > deadline {
                bail!("`hil rig` did not write {}", unit.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!("    simulated unit running at {SPEED}x; its unit file is {}", unit.display());
        for dev in ["balance", "syringe", "peristaltic", "heater", "estop"] {
            let link = dir.join(dev);
            let pty =
                std::fs::read_link(&link).map(|p| p.display().to_string()).unwrap_or_default();
            println!("      {dev:<12} {} -> {pty}", link.display());
        }
        Ok(Rig { _child: child, stdin, answers })
    }

    /// One console command and its answer.
    fn console(&mut self, command: &str) -> Result<String> {
        writeln!(self.stdin, "{command}").context("writing to the rig's console")?;
        let answer = self
            .answers
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| anyhow!("the rig did not answer `{command}`"))?;
        if answer.starts_with("error:") {
            bail!("the rig refused `{command}`: {answer}");
        }
        Ok(answer)
    }
}

/// What the manufacturer does with the `recipe` tool: lint, make keys, publish, verify.
fn manufacturer(root: &Path, examples: &Path, keys: &Path, repo: &Path) -> Result<()> {
    let mut recipes: Vec<String> = std::fs::read_dir(examples)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| p.display().to_string())
        .collect();
    recipes.sort();
    let (keys, repo) = (keys.display().to_string(), repo.display().to_string());
    let root_json = format!("{keys}/root.json");
    let lint: Vec<&str> =
        std::iter::once("lint").chain(recipes.iter().map(String::as_str)).collect();
    let publish: Vec<&str> = ["publish", "--repo", &repo, "--keys", &keys]
        .into_iter()
        .chain(recipes.iter().map(String::as_str))
        .collect();
    let tool = root.join("target/debug/recipe");
    let here = root.display().to_string();
    for args in [
        lint,
        vec!["keys", "--out", &keys],
        publish,
        vec!["verify", "--repo", &repo, "--root", &root_json],
    ] {
        println!("    $ recipe {}", args.join(" ").replace(&here, "."));
        for line in process::output(Command::new(&tool).args(&args))?.lines() {
            println!("      {}", line.replace(&here, "."));
        }
    }
    Ok(())
}

/// Drives the simulated unit with the service tool the way an engineer at the unit would.
fn instruments(rig_dir: &Path) -> Result<()> {
    let bin = |name: &str| workspace_root().join("target/debug").join(name);
    let unit = rig_dir.join("unit.toml");
    let config = unit.display().to_string();
    let devices = |args: &[&str]| -> Result<String> {
        let mut cmd = Command::new(bin("devices"));
        cmd.args(args).args(["--config", &config]).env("RUST_BACKTRACE", "0");
        process::output(&mut cmd)
    };
    let show = |args: &[&str], out: &str| {
        println!("    $ devices {} --config unit.toml", args.join(" "));
        for line in out.lines() {
            println!("      {line}");
        }
    };
    // A stable reading needs the balance at rest: after pouring, it settles first.
    let stable_weight = || -> Result<String> {
        let args = ["weight", "--stable", "--device", "balance"];
        for _ in 0..15 {
            match devices(&args) {
                Ok(out) => {
                    show(&args, &out);
                    return Ok(out);
                }
                Err(e) if format!("{e:#}").contains("not stable") => {
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
        bail!("the balance never settled")
    };
    let identify = ["identify", "--device", "balance"];
    show(&identify, &devices(&identify)?);
    stable_weight()?;
    let pump = ["pump", "--device", "peristaltic", "--rate", "60", "--volume", "10"];
    show(&pump, &devices(&pump)?);
    println!("    (waiting for the balance to settle after pouring)");
    stable_weight()?;
    let heat = ["temperature", "--device", "heater", "--set", "37", "--enable"];
    show(&heat, &devices(&heat)?);
    println!(
        "    10 mL of water went from the reservoir into the vessel; the balance saw it arrive"
    );
    Ok(())
}

/// `applianced run`, in the background for the rest of the demo.
struct Daemon {
    child: process::Tracked,
    lines: mpsc::Receiver<String>,
}

impl Daemon {
    /// `applianced commission`, then `applianced run` against the rig until [`Daemon::stop`].
    fn start(out: &Path, services: &Services, trusted_root: &Path) -> Result<Daemon> {
        let appliance = out.join("appliance");
        let base = |cmd: &mut Command| {
            cmd.arg("--db")
                .arg(appliance.join("records.sqlite"))
                .arg("--keys")
                .arg(appliance.join("keys"))
                .args(["--tcti", &services.tpm_tcti, "--device-id", "galen-demo-0001"])
                .env("RUST_LOG", "info");
        };
        let applianced = workspace_root().join("target/debug/applianced");
        println!("    $ applianced commission --admin admin --name 'Alan Admin'   (PIN on stdin)");
        let mut cmd = Command::new(&applianced);
        base(&mut cmd);
        cmd.args(["commission", "--admin", "admin", "--name", "Alan Admin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = process::spawn(&mut cmd)?;
        writeln!(child.child_mut().stdin.take().context("stdin")?, "{ADMIN_PIN}")?;
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut child.child_mut().stdout.take().context("stdout")?,
            &mut text,
        )?;
        if !child.wait()?.success() {
            bail!("applianced commission failed");
        }
        for line in text.lines() {
            println!("      {line}");
        }
        println!(
            "    $ applianced run --unit rig/unit.toml --trusted-root manufacturer/keys/root.json \\\n          --bus <private D-Bus> --stick-dir stick   (log: applianced.log)"
        );
        let log = std::fs::File::create(out.join("applianced.log"))?;
        let mut cmd = Command::new(&applianced);
        base(&mut cmd);
        cmd.args(["run", "--unit"])
            .arg(out.join("rig/unit.toml"))
            .arg("--trusted-root")
            .arg(trusted_root)
            .arg("--recipes")
            .arg(appliance.join("recipes"))
            .args(["--bus", &services.dbus_address, "--stick-dir"])
            .arg(out.join("stick"))
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = process::spawn(&mut cmd)?;
        let stdout = child.child_mut().stdout.take().context("stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = lines.recv_timeout(Duration::from_secs(60)).map_err(|_| {
            anyhow!("applianced did not get ready; see {}/applianced.log", out.display())
        })?;
        println!("      {ready}");
        Ok(Daemon { child, lines })
    }

    /// SIGTERM, as systemd stops it: the final checkpoint, then a clean exit.
    fn stop(&mut self) -> Result<()> {
        println!("    sending applianced SIGTERM, as systemd does on stop");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.child.child_mut().id())?),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let status = self.child.wait()?;
        for line in self.lines.try_iter() {
            println!("      {line}");
        }
        if !status.success() {
            bail!("applianced did not stop cleanly ({status})");
        }
        Ok(())
    }
}
