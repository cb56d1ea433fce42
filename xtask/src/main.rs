//! `cargo xtask`: the project's only build tooling — setup, test, demo and bench.
//!
//! Everything a developer or CI runs goes through here, so that installing system packages,
//! starting test services and cleaning up after them is written once.

mod bench;
mod demo;
mod image;
mod operator;
mod process;
mod services;
mod setup;
#[cfg(test)]
mod tidy;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::services::Services;

/// Galen's build tooling. Every command installs missing Debian packages first.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install the Debian packages the project needs (only those missing; needs root).
    Setup {
        /// Only report what is missing, install nothing; exits non-zero if anything is.
        #[arg(long)]
        check: bool,
    },
    /// Run the whole test suite (unit, integration, snapshot, HIL) against a private software
    /// TPM and D-Bus daemon that are started for the run and removed afterwards.
    Test {
        /// Extra arguments for `cargo test`, after `--` (e.g. `-- -p galen-devices`).
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Run the most complete end-to-end job the project can do today and say what it did.
    Demo {
        /// After the recipes are installed, open the touchscreen app (galen-hmi) on the demo's
        /// bus instead of scripting the operator; this terminal becomes the rig's console for
        /// the hand-weighed powder (`add azathioprine 0.49`). Needs a desktop session.
        #[arg(long)]
        hmi: bool,
    },
    /// Run every benchmark and rewrite docs/BENCHMARKS.md with the results.
    ///
    /// With `--bench`, run only those benchmark targets (e.g. `--bench applianced`) and replace
    /// only their sections of docs/BENCHMARKS.md, keeping the others as they were.
    Bench {
        /// A benchmark target to run (repeatable): the file name under a crate's benches/.
        #[arg(long = "bench", value_name = "NAME")]
        only: Vec<String>,
    },
    /// Build the appliance's bootable disk image (needs root; output in
    /// <target>/galen-image/).
    ///
    /// Debian from the host's apt sources (mmdebstrap), systemd, D-Bus, udisks2 and the TPM
    /// libraries, the release binaries of galen-appliance, and the files in image/ (units,
    /// D-Bus and polkit policy, udev rules, fstab). GPT disk: ESP with systemd-boot, root
    /// slots A (read-only ext4) and B (empty, for updates), and a data partition mounted at
    /// /var for the records, the unit file and the persistent journal. Cached: an unchanged
    /// input rebuilds nothing, and the Debian base is rebuilt only when image/packages, the
    /// initramfs script or the host's apt sources change.
    Image {
        /// Then boot it in QEMU (TCG) with swtpm as the TPM, the simulated unit's instruments
        /// (hil rig) on its serial ports and a FAT stick on USB: the first boot commissions,
        /// runs a short batch with galenctl in the guest and exports its record to the stick,
        /// which is then verified on the host; the touchscreen is saved as PNG; the time to
        /// the touchscreen and to applianced's READY is reported next to the time to a login
        /// prompt with our services masked. A last boot starts a fresh unit through UEFI
        /// firmware and systemd-boot (about 6 min in all).
        #[arg(long)]
        boot_test: bool,
        /// The manufacturer's TUF root.json the image trusts for recipes. Without it, a
        /// development root is made once (keys in <target>/galen-image/dev-manufacturer/) and
        /// the image says so: never ship that one.
        #[arg(long, value_name = "ROOT_JSON")]
        trusted_root: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = process::install_interrupt_handler().and_then(|()| match cli.command {
        Cmd::Setup { check } => {
            setup::run(if check { setup::Mode::CheckOnly } else { setup::Mode::Install })
        }
        Cmd::Test { cargo_args } => test(&cargo_args),
        Cmd::Demo { hmi } => demo::run(hmi),
        Cmd::Bench { only } => bench::run(&only),
        Cmd::Image { boot_test, trusted_root } => image::run(boot_test, trusted_root.as_deref()),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            if process::interrupted() { ExitCode::from(130) } else { ExitCode::FAILURE }
        }
    }
}

/// The whole suite takes under five minutes warm and about fifteen cold on two cores; a run
/// still going after this long has a test that will never finish.
const TEST_DEADLINE: Duration = Duration::from_secs(45 * 60);

fn test(cargo_args: &[String]) -> Result<()> {
    setup::run(setup::Mode::Install)?;
    let mut services = Services::start()?;
    println!(
        "test: software TPM at {}, private D-Bus at {}",
        services.tpm_tcti, services.dbus_address
    );
    let mut cmd = cargo();
    cmd.args(["test", "--no-fail-fast"]);
    // Naming packages narrows the run; without names, everything is tested.
    let names_packages = cargo_args.iter().any(|a| a == "-p" || a.starts_with("--package"));
    if !names_packages {
        cmd.arg("--workspace");
    }
    cmd.args(cargo_args);
    cmd.envs(services.env());
    let result = process::run_with_deadline(&mut cmd, TEST_DEADLINE);
    process::bail_if_interrupted()?;
    // A service that died mid-run explains the failures better than the failures do.
    services.check_alive()?;
    let dir = services.dir().to_path_buf();
    drop(services);
    result?;
    println!("test: every test passed; services stopped and {} removed", dir.display());
    Ok(())
}

/// `cargo`, as the one that is running us, in the workspace root.
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// The workspace root (xtask lives one level below it).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask has a parent").to_path_buf()
}
