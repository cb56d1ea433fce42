//! `cargo xtask demo`: the most complete end-to-end job the project can do today.
//!
//! It grows with every capability. Each step prints what it is doing and what came of it, so a
//! newcomer can read the output as a tour; the closing summary says plainly what ran, where its
//! output is, and what does not exist yet. Output goes to `target/galen-demo/`, replaced on
//! every run.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::services::Services;
use crate::{cargo, process, setup, workspace_root};

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

pub(crate) fn run() -> Result<()> {
    println!("Galen demo: what the appliance software can do end to end today.");
    let root = workspace_root();
    let out = root.join("target/galen-demo");
    if out.exists() {
        std::fs::remove_dir_all(&out).context("clearing target/galen-demo")?;
    }
    std::fs::create_dir_all(&out)?;
    let mut steps = Steps { total: 9, done: 0 };

    steps.next("Install what the appliance needs (Debian packages)");
    setup::run(setup::Mode::Install)?;

    steps.next("Build the workspace");
    process::run(cargo().args(["build", "--workspace", "--bins", "--examples", "--quiet"]))?;
    println!("    built every crate, binary and example");

    steps.next("Start a software TPM and a private D-Bus daemon in a temporary directory");
    let services = Services::start()?;
    println!("    software TPM (swtpm)   {}", services.tpm_tcti);
    println!("      answered TPM2_GetRandom with {}", services.tpm_random()?);
    println!("    private D-Bus daemon   {}", services.dbus_address);
    println!("      answered org.freedesktop.DBus.GetId with {}", services.bus_id()?);

    steps
        .next("Drive a simulated unit's instruments over real serial framing (ptys), with physics");
    let rig = instruments(&out.join("rig"))?;

    steps.next("The manufacturer lints, signs and publishes the example recipes (TUF)");
    let maker = out.join("manufacturer");
    let examples = root.join("recipes/examples");
    let (keys, repo) = (maker.join("keys"), maker.join("repo"));
    manufacturer(&root, &examples, &keys, &repo)?;

    steps.next("Commission the appliance and run its supervisor against the simulated unit");
    supervisor(&out, &services.tpm_tcti, &services.dbus_address, &keys.join("root.json"))?;
    drop(rig);

    steps.next(
        "The appliance installs the verified recipes, records a personalised batch sealed by its \
         TPM, and exports it for an inspector",
    );
    process::run(
        cargo()
            .args([
                "run",
                "--quiet",
                "-p",
                "galen-appliance",
                "--example",
                "demo_batch_record",
                "--",
            ])
            .arg(&services.tpm_tcti)
            .arg(&out)
            .arg(&repo)
            .arg(keys.join("root.json"))
            .arg(examples.join("lab/tpmt-intermediate.tsv")),
    )?;
    let bundle = out.join("stick/GALEN-EXPORT-B-20261121-001");

    steps.next("Verify the export off the appliance, as an inspector would");
    println!("    galen-verify (recomputes the whole chain, checks the TPM signatures):");
    let report = process::output(
        cargo()
            .args(["run", "--quiet", "-p", "galen-record", "--bin", "galen-verify", "--"])
            .arg(&bundle),
    )?;
    for line in report.lines() {
        println!("      {line}");
    }
    println!("    VERIFY.txt, followed literally with openssl and sha256sum only:");
    follow_verify_txt(&bundle)?;

    steps.next("Stop everything that was started");
    let dir = services.dir().to_path_buf();
    drop(services);
    println!("    stopped swtpm and dbus-daemon; removed {}", dir.display());

    println!("\nWhat ran: a TPMT intermediate metaboliser's azathioprine dose was computed by the");
    println!(
        "recipe's personalisation rule, recorded in a hash chain MACed with a TPM-sealed key, signed by"
    );
    println!(
        "three people (each re-entering a PIN), sealed by TPM checkpoints, exported and verified."
    );
    println!("\nWhere to look:");
    println!("    batch record (PDF)   {}", bundle.join("record.pdf").display());
    println!("    the whole export     {}", bundle.display());
    println!("    record database      {}", out.join("appliance/records.sqlite").display());
    println!("    signed recipe repo   {}", repo.display());
    println!(
        "\nNot in this demo yet: applianced now serves its D-Bus API and galenctl drives it \
         (appliance/tests/api.rs runs a whole batch that way on the simulated unit), but the \
         batch above is still recorded by a stand-in for the operator; the touchscreen (9) is \
         not built, and the image (10) is built and boot-tested by `cargo xtask image`, apart \
         from this demo."
    );
    Ok(())
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

/// Starts the simulated unit (`hil rig`: the emulators on ptys, bound to one physics model)
/// and drives it with the service tool the way an engineer at the unit would.
fn instruments(rig_dir: &Path) -> Result<process::Tracked> {
    let bin = |name: &str| workspace_root().join("target/debug").join(name);
    let rig = process::spawn(
        Command::new(bin("hil"))
            .args(["rig", "--dir"])
            .arg(rig_dir)
            // The rig reads console commands on stdin; the demo's terminal is not for it.
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null()),
    )?;
    let unit = rig_dir.join("unit.toml");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !unit.exists() {
        if std::time::Instant::now() > deadline {
            bail!("`hil rig` did not write {}", unit.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    println!("    simulated unit running; its unit file is {}", unit.display());
    for dev in ["balance", "syringe", "peristaltic", "heater"] {
        let link = rig_dir.join(dev);
        let pty = std::fs::read_link(&link).map(|p| p.display().to_string()).unwrap_or_default();
        println!("      {dev:<12} {} -> {pty}", link.display());
    }
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
                    std::thread::sleep(std::time::Duration::from_secs(1));
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
    Ok(rig)
}

/// `applianced commission`, then `applianced run` against the rig until SIGTERM.
fn supervisor(out: &Path, tcti: &str, bus: &str, trusted_root: &Path) -> Result<()> {
    use std::io::{BufRead as _, Write as _};
    let appliance = out.join("appliance");
    let base = |cmd: &mut Command| {
        cmd.arg("--db")
            .arg(appliance.join("records.sqlite"))
            .arg("--keys")
            .arg(appliance.join("keys"))
            .args(["--tcti", tcti, "--device-id", "galen-demo-0001"])
            .env("RUST_LOG", "warn");
    };
    let applianced = workspace_root().join("target/debug/applianced");
    println!("    $ applianced commission --admin admin --name 'Alan Admin'   (PIN on stdin)");
    let mut cmd = Command::new(&applianced);
    base(&mut cmd);
    cmd.args(["commission", "--admin", "admin", "--name", "Alan Admin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = process::spawn(&mut cmd)?;
    writeln!(child.child_mut().stdin.take().context("stdin")?, "271828")?;
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
        "    $ applianced run --unit rig/unit.toml --trusted-root manufacturer/keys/root.json \\\n          --bus <private D-Bus> --export-to exports"
    );
    let mut cmd = Command::new(&applianced);
    base(&mut cmd);
    cmd.args(["run", "--unit"])
        .arg(out.join("rig/unit.toml"))
        .arg("--trusted-root")
        .arg(trusted_root)
        .arg("--recipes")
        .arg(appliance.join("recipes"))
        .args(["--bus", bus, "--export-to"])
        .arg(out.join("exports"))
        .stdout(std::process::Stdio::piped());
    let mut child = process::spawn(&mut cmd)?;
    let mut lines =
        std::io::BufReader::new(child.child_mut().stdout.take().context("stdout")?).lines();
    let ready = lines.next().context("applianced exited before it was ready")??;
    println!("      {ready}");
    println!("    (systemd would now see READY=1; sending SIGTERM as systemd does on stop)");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.child_mut().id())?),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    for line in lines.map_while(Result::ok) {
        println!("      {line}");
    }
    if !child.wait()?.success() {
        bail!("applianced did not stop cleanly");
    }
    Ok(())
}

/// Runs the `  $ ` commands of VERIFY.txt in the bundle and checks each against its `expect:`.
fn follow_verify_txt(bundle: &Path) -> Result<()> {
    let text = std::fs::read_to_string(bundle.join("VERIFY.txt")).context("reading VERIFY.txt")?;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(command) = line.strip_prefix("  $ ") else { continue };
        let expect = lines.next().and_then(|l| l.trim().strip_prefix("expect: ")).unwrap_or("");
        let got = process::output(Command::new("sh").arg("-c").arg(command).current_dir(bundle))?;
        let got = got.trim();
        // The fingerprint is compared by a person against the commissioning record.
        let ok = got == expect || expect.starts_with("the fingerprint");
        println!("      $ {command}");
        println!("        {got}{}", if ok { "" } else { "   <-- UNEXPECTED" });
        if !ok {
            bail!("VERIFY.txt step `{command}` printed {got:?}, expected {expect:?}");
        }
    }
    Ok(())
}
