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
    let mut steps = Steps { total: 6, done: 0 };

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

    steps.next("Record a personalised batch, sealed by the TPM, and export it for an inspector");
    let examples = root.join("recipes/examples");
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
            .arg(&examples),
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
    println!(
        "\nNot built yet: the simulated unit and its physics (issue 4), the supervisor that runs \
         batches on devices (7), the D-Bus API and galenctl (8), the touchscreen (9) and the \
         image (10). Each joins this demo when it lands."
    );
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
