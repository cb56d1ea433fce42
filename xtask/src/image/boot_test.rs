//! `cargo xtask image --boot-test`: boots the image in QEMU (TCG) as the unit it is meant for
//! and checks from inside that it works.
//!
//! The machine: swtpm as the TPM (tpm-tis), the simulated unit's instruments (`hil rig` on
//! host ptys) on four PCI UARTs at the slots the image's udev rules name, a FAT stick on USB,
//! and the guest agent's virtio-serial port ([`super::agent`]). The disk is a qcow2 overlay
//! over `disk.img`, kept across the boots of one run, so `disk.img` itself is never changed.
//!
//! Four boots of the same image, one after the other:
//! 1. first boot: commissioning from SMBIOS credentials (admin, PIN, the unit file), then
//!    applianced must report READY; checks what the image promises (read-only root, /var on
//!    the data partition, named serial ports, the TPM), that udisks2 sees the stick; then a
//!    short personalised batch with `galenctl` in the guest ([`check_batch`]: people added,
//!    the stick listed, the development manufacturer's recipe installed from it, a batch
//!    created from the lab report on it (applianced mounts the stick read-only through
//!    udisks2 for each, and unmounts it), verified, run on the rig's instruments to Complete,
//!    signed, released, exported by applianced to the stick through udisks2, which powers it
//!    off); the touchscreen reports READY and a QMP screendump of it is saved as PNG;
//! 2. baseline: our units masked on the kernel command line; time to the login prompt;
//! 3. regular boot (already commissioned): time to applianced's READY and to the
//!    touchscreen's (screendump `hmi.png`); the records verified against the TPM and the first
//!    boot's clean stop is in the persistent journal;
//! 4. production boot, a second unit fresh from the factory (its own disk overlay and TPM):
//!    UEFI firmware (OVMF) boots the disk itself (systemd-boot from the ESP, slot A's entry,
//!    nothing added to the command line); it commissions from credentials, shows a login
//!    prompt with no failed unit, and the test agent stays silent although its port is there.
//!
//! The first three boot slot A's kernel directly (SeaBIOS, `-kernel`, the entry's command
//! line plus `galen.test-agent`, and the masks for the baseline) and end with `systemctl
//! poweroff` from the agent; the production boot ends with the ACPI power button (QMP). QEMU
//! must exit on its own each time.
//!
//! The production unit has no instruments wired: OVMF writes its console to every UART it
//! finds, and that text on the heater's line ends `hil rig`'s Modbus emulator for good (its
//! pty vanishes within seconds). It also needs its own TPM: the record key is sealed to PCR 7,
//! which differs between SeaBIOS and OVMF, exactly as it would after a firmware change.
//! Everything (QEMU, swtpm, the rig) is a tracked child: Ctrl-C or a failure stops them all.
//! Between the first and the baseline boot, the bundle exported to the stick is copied off
//! `stick.img` with mtools and verified with `galen-verify` and by following its VERIFY.txt
//! with openssl. Logs, the screendumps and the export stay in `<target>/galen-image/boot-test/`.
//!
//! Adding a check: a function taking `&mut Agent` that runs a shell script in the guest with
//! `agent.check(what, script, timeout)` (root; exit status 0 or the check fails with the
//! script's output) and looks at what it printed; call it as `soft(failed, …)` in [`boot`]
//! under the boot it belongs to. The stick stays `stick.img` on the host (read it with mtools
//! once the guest has unmounted it); `Machine::qmp` is the QMP socket ([`super::qmp::Qmp`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::Step;
use super::agent::Agent;
use super::build::{Built, HostTools};
use super::qmp::Qmp;
use crate::operator::{self, Galenctl, Output};
use crate::process::{self, Tracked};
use crate::workspace_root;

/// The instruments and the PCI slot of the UART each is wired to; the image's
/// `70-galen-serial.rules` names `/dev/galen/<name>` after the same slots.
const INSTRUMENTS: &[(&str, u8)] = &[
    ("balance", 0x10),
    ("syringe", 0x11),
    ("peristaltic", 0x12),
    ("heater", 0x13),
    ("estop", 0x14),
];

/// The first administrator the first boot commissions (test values, never a real unit's).
const ADMIN_USER: &str = "admin";
const ADMIN_NAME: &str = "Boot Test Administrator";
const ADMIN_PIN: &str = "246810";

const STICK_LABEL: &str = "GALEN-STICK";
/// The lab's report on the stick, as applianced lists it.
const LAB_REPORT: &str = "lab/tpmt-intermediate.tsv";

/// Our units; the baseline boot masks them.
const OUR_UNITS: &[&str] = &["applianced.service", "galen-commission.service", "galen-hmi.service"];

/// The recipe the guest runs: short, published by the development manufacturer for this test.
const SMOKE_RECIPE: &str = "smoke-suspension";
const SMOKE_RECIPE_FILE: &str = "hil/recipes/smoke-suspension.toml";

/// The display the touchscreen is drawn on (QEMU's VGA offers it as the preferred mode).
const SCREEN: (u32, u32) = (1280, 800);

/// TCG on two shared cores is slow; these are generous, the report says what it really took.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the production boot watches for a failed unit or the agent after the prompt.
const SETTLE: Duration = Duration::from_secs(10);

/// UEFI firmware (package ovmf): code read-only, variables copied per run.
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(120);

/// Everything one run shares across its boots.
struct Run {
    dir: PathBuf,
    built_cmdline: String,
    kernel: PathBuf,
    initrd: PathBuf,
    overlay: PathBuf,
    stick: PathBuf,
    /// The rig's pty per instrument, in `INSTRUMENTS` order.
    ptys: Vec<PathBuf>,
    /// The SMBIOS type 11 files carrying the first boot's credentials.
    credentials: Vec<PathBuf>,
    /// The production unit's copy of the firmware's variable store (its NVRAM).
    ovmf_vars: PathBuf,
    /// The production unit's disk.
    production_overlay: PathBuf,
}

/// Which boot, and so what the guest is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Boot {
    First,
    Baseline,
    Regular,
    Production,
}

impl Boot {
    fn name(self) -> &'static str {
        match self {
            Boot::First => "first",
            Boot::Baseline => "baseline",
            Boot::Regular => "regular",
            Boot::Production => "production",
        }
    }
}

/// What one boot measured: seconds from QEMU's start (host) and from the kernel's start
/// (guest, systemd's monotonic timestamps); and the first boot's export on the stick.
#[derive(Debug, Default)]
struct Timings {
    /// The folder the batch record went to on the stick.
    export: Option<String>,
    ready_host: Option<f64>,
    ready_guest: Option<f64>,
    hmi_host: Option<f64>,
    hmi_guest: Option<f64>,
    login_host: Option<f64>,
    login_guest: Option<f64>,
    poweroff: Option<f64>,
}

pub(crate) fn run(built: &Built) -> Result<()> {
    let started = Instant::now();
    let dir = built.out.join("boot-test");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    println!("boot test: logs in {}", dir.display());

    let host = built.host.as_ref().context("the build did not make the boot test's host tools")?;
    let (_rig, ptys, guest_unit) = start_rig(&host.hil, &dir.join("rig"))?;
    let recipes = publish_recipe(host, &dir)?;
    let stick = make_stick(&dir, &recipes)?;
    let overlay = dir.join("disk.qcow2");
    let production_overlay = dir.join("disk-production.qcow2");
    for disk in [&overlay, &production_overlay] {
        process::run(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                .arg(&built.disk)
                .arg(disk),
        )?;
    }
    let credentials = write_credentials(&dir, &guest_unit)?;
    std::fs::create_dir_all(dir.join("tpm"))?;
    std::fs::create_dir_all(dir.join("tpm-production"))?;
    let ovmf_vars = dir.join("ovmf-vars.fd");
    std::fs::copy(OVMF_VARS, &ovmf_vars)
        .with_context(|| format!("copying {OVMF_VARS} (package ovmf)"))?;
    let run = Run {
        dir,
        built_cmdline: built.cmdline.clone(),
        kernel: built.kernel.clone(),
        initrd: built.initrd.clone(),
        overlay,
        stick,
        ptys,
        credentials,
        ovmf_vars,
        production_overlay,
    };

    // A failed check is collected and the run goes on, so one defect does not hide the next
    // or the timings; a guest that does not boot, get ready or power off ends the run.
    let mut failed = Vec::new();
    let first = boot(&run, Boot::First, &mut failed)?;
    match &first.export {
        Some(folder) => soft(&mut failed, check_bundle(&run, host, folder)),
        None => failed.push("no batch record was exported on the first boot (above)".to_owned()),
    }
    let baseline = boot(&run, Boot::Baseline, &mut failed)?;
    let regular = boot(&run, Boot::Regular, &mut failed)?;
    let production = boot(&run, Boot::Production, &mut failed)?;

    let took = started.elapsed().as_secs_f64();
    println!("\nboot test: four boots in {took:.0} s (QEMU TCG, 2 vCPUs, 1 GiB)");
    print!("{}", report(&first, &baseline, &regular, &production));
    if !failed.is_empty() {
        // Each was printed in full where it happened.
        for f in &failed {
            println!("FAILED: {}", f.lines().next().unwrap_or_default());
        }
        bail!("{} boot-test check(s) failed (above); logs in {}", failed.len(), run.dir.display());
    }
    println!("boot test: every check passed");
    Ok(())
}

fn report(first: &Timings, baseline: &Timings, regular: &Timings, production: &Timings) -> String {
    let s = |t: Option<f64>| t.map_or_else(|| "-".to_owned(), |t| format!("{t:.1} s"));
    let mut out = String::new();
    let _ = writeln!(out, "{:<44} {:>14} {:>16}", "", "from QEMU start", "from kernel start");
    let rows = [
        ("touchscreen ready (galen-hmi), regular boot", regular.hmi_host, regular.hmi_guest),
        ("applianced ready, regular boot", regular.ready_host, regular.ready_guest),
        ("login prompt, our services masked", baseline.login_host, baseline.login_guest),
        ("login prompt, regular boot", regular.login_host, regular.login_guest),
        ("applianced ready, first boot (commissioning)", first.ready_host, first.ready_guest),
        ("login prompt, fresh unit via UEFI + systemd-boot", production.login_host, None),
    ];
    for (what, host, guest) in rows {
        let _ = writeln!(out, "{what:<44} {:>14} {:>16}", s(host), s(guest));
    }
    let _ = writeln!(
        out,
        "power-off (to QEMU exit): first {}, baseline {}, regular {}, production (power button) {}",
        s(first.poweroff),
        s(baseline.poweroff),
        s(regular.poweroff),
        s(production.poweroff)
    );
    out
}

/// Starts `hil rig` and returns it, the pty of each instrument, and the unit file for the
/// guest (the rig's, with each port renamed to the guest's `/dev/galen/<name>`).
fn start_rig(hil: &Path, dir: &Path) -> Result<(Tracked, Vec<PathBuf>, String)> {
    let log = std::fs::File::create(dir.with_extension("log"))?;
    let mut rig = process::spawn(
        Command::new(hil)
            .args(["rig", "--dir"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log),
    )?;
    let unit = dir.join("unit.toml");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !unit.exists() {
        process::bail_if_interrupted()?;
        if let Some(status) = rig.try_wait()? {
            bail!("`hil rig` exited ({status}); see {}", dir.with_extension("log").display());
        }
        if Instant::now() > deadline {
            bail!("`hil rig` wrote no {} within 30 s", unit.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut ptys = Vec::new();
    for (name, _) in INSTRUMENTS {
        let link = dir.join(name);
        ptys.push(
            std::fs::read_link(&link).with_context(|| format!("reading {}", link.display()))?,
        );
    }
    let text = std::fs::read_to_string(&unit)?;
    let guest = guest_unit_file(&text, dir)?;
    println!(
        "boot test: simulated unit running ({})",
        ptys.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    );
    Ok((rig, ptys, guest))
}

/// The rig's unit file with its port links replaced by the guest's udev names.
fn guest_unit_file(rig_unit: &str, rig_dir: &Path) -> Result<String> {
    let mut text = rig_unit.to_owned();
    for (name, _) in INSTRUMENTS {
        let host = format!("{:?}", rig_dir.join(name).display().to_string());
        if !text.contains(&host) {
            bail!("the rig's unit file names no port {host}; did `hil rig` change its layout?");
        }
        text = text.replace(&host, &format!("\"/dev/galen/{name}\""));
    }
    Ok(text)
}

/// A FAT stick image, made without mounting (mkfs.vfat + mtools), with a README, the
/// manufacturer's signed repository in `recipes/` and the lab's report in `lab/`.
fn make_stick(dir: &Path, recipes: &Path) -> Result<PathBuf> {
    let stick = dir.join("stick.img");
    process::run(
        Command::new("mkfs.vfat")
            .args(["-n", STICK_LABEL, "-C"])
            .arg(&stick)
            .arg("65536")
            .stdout(Stdio::null()),
    )?;
    let readme = dir.join("README.TXT");
    std::fs::write(&readme, "Export stick for the Galen boot test.\n")?;
    process::run(mtools("mcopy", &stick).arg(&readme).arg("::/README.TXT"))?;
    process::run(mtools("mcopy", &stick).arg("-s").arg(recipes).arg("::/recipes"))?;
    process::run(mtools("mmd", &stick).arg("::/lab"))?;
    let report = workspace_root().join("recipes/examples/lab/tpmt-intermediate.tsv");
    process::run(mtools("mcopy", &stick).arg(report).arg(format!("::/{LAB_REPORT}")))?;
    Ok(stick)
}

/// An mtools command on a FAT image (no mount; the image has no partition table).
fn mtools(tool: &str, image: &Path) -> Command {
    let mut cmd = Command::new(tool);
    cmd.env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(image);
    cmd
}

/// The development manufacturer publishes the smoke recipe (TUF, signed with the keys whose
/// root the image trusts); returns the repository.
fn publish_recipe(host: &HostTools, dir: &Path) -> Result<PathBuf> {
    let repo = dir.join("recipes");
    process::run(
        Command::new(&host.recipe)
            .arg("publish")
            .arg("--repo")
            .arg(&repo)
            .arg("--keys")
            .arg(&host.manufacturer)
            .arg(workspace_root().join(SMOKE_RECIPE_FILE))
            .stdout(Stdio::null()),
    )
    .context("publishing the boot test's recipe as the development manufacturer")?;
    Ok(repo)
}

/// SMBIOS type 11 strings, one file each (`-smbios type=11,path=…` keeps commas and quotes
/// out of QEMU's option parser).
fn write_credentials(dir: &Path, guest_unit: &str) -> Result<Vec<PathBuf>> {
    let strings = [
        ("admin-user", format!("io.systemd.credential:galen.admin-user={ADMIN_USER}")),
        ("admin-name", format!("io.systemd.credential:galen.admin-name={ADMIN_NAME}")),
        ("admin-pin", format!("io.systemd.credential:galen.admin-pin={ADMIN_PIN}")),
        (
            "unit-toml",
            format!(
                "io.systemd.credential.binary:galen.unit-toml={}",
                super::agent::base64_encode(guest_unit.as_bytes())
            ),
        ),
    ];
    let mut files = Vec::new();
    for (name, value) in strings {
        let path = dir.join(format!("credential-{name}"));
        std::fs::write(&path, value)?;
        files.push(path);
    }
    Ok(files)
}

/// A running guest. Field order is drop order: QEMU stops before its TPM.
struct Machine {
    agent: Agent,
    qemu: Tracked,
    _swtpm: Tracked,
    started: Instant,
    login: Arc<Mutex<Option<Instant>>>,
    /// The QMP socket, for the power button and the screendump.
    qmp: PathBuf,
    console: PathBuf,
}

fn boot(run: &Run, which: Boot, failed: &mut Vec<String>) -> Result<Timings> {
    let step = Step::new(format!("boot test: {} boot", which.name()));
    let mut machine = start(run, which)?;
    if which == Boot::Production {
        let t = production(&mut machine, failed)?;
        step.done();
        return Ok(t);
    }
    let uptime = machine.agent.wait_hello(BOOT_TIMEOUT)?;
    println!("image: guest agent up {uptime:.1} s after the kernel started");
    let mut t = Timings::default();
    match which {
        Boot::First => {
            wait_ready(&mut machine, &mut t)?;
            let agent = &mut machine.agent;
            soft(failed, check_image(agent));
            soft(failed, check_commissioned(agent));
            // Last: the export powers the stick off.
            match check_stick(agent).and_then(|()| check_batch(agent)) {
                Ok(folder) => t.export = Some(folder),
                Err(e) => soft(failed, Err(e)),
            }
            soft(failed, check_hmi(&mut machine, &mut t, &run.dir.join("hmi-first-boot.png")));
        }
        Boot::Baseline => {
            let state = machine
                .agent
                .run("systemctl is-active applianced.service", Duration::from_secs(30))?;
            if state.output.trim() == "active" {
                failed.push("applianced runs although the baseline boot masked it".to_owned());
            }
        }
        Boot::Regular => {
            wait_ready(&mut machine, &mut t)?;
            soft(failed, check_hmi(&mut machine, &mut t, &run.dir.join("hmi.png")));
            soft(failed, check_machine_id(&mut machine.agent));
            soft(failed, check_restart(&mut machine.agent));
        }
        Boot::Production => unreachable!("handled above"),
    }
    wait_login(&mut machine, &mut t)?;
    t.poweroff = Some(power_off(&mut machine)?);
    step.done();
    Ok(t)
}

/// Notes a failed check and goes on; an interrupt still stops everything.
fn soft(failed: &mut Vec<String>, result: Result<()>) {
    if let Err(e) = result
        && !process::interrupted()
    {
        println!("image: FAILED: {e:#}");
        failed.push(format!("{e:#}"));
    }
}

fn start(run: &Run, which: Boot) -> Result<Machine> {
    let name = which.name();
    let production = which == Boot::Production;
    let tpm_dir = run.dir.join(if production { "tpm-production" } else { "tpm" });
    let tpm_sock = tpm_dir.join("swtpm.sock");
    let _ = std::fs::remove_file(&tpm_sock);
    // The TPM state persists in tpm/ across the boots; swtpm itself ends with each QEMU.
    let mut swtpm = process::spawn(
        Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", tpm_dir.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", tpm_sock.display()))
            .arg("--log")
            .arg(format!("file={},level=1", run.dir.join(format!("swtpm-{name}.log")).display()))
            .stdin(Stdio::null()),
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tpm_sock.exists() {
        process::bail_if_interrupted()?;
        if let Some(status) = swtpm.try_wait()? {
            bail!(
                "swtpm exited ({status}); see {}",
                run.dir.join(format!("swtpm-{name}.log")).display()
            );
        }
        if Instant::now() > deadline {
            bail!("swtpm made no socket {} within 10 s", tpm_sock.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let console = run.dir.join(format!("console-{name}.log"));
    let agent_sock = run.dir.join("agent.sock");
    let qmp_sock = run.dir.join(format!("qmp-{name}.sock"));
    let _ = std::fs::remove_file(&agent_sock);
    let mut cmdline = format!("{} galen.test-agent", run.built_cmdline);
    if which == Boot::Baseline {
        for unit in OUR_UNITS {
            cmdline.push_str(&format!(" systemd.mask={unit}"));
        }
    }
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-machine", "q35", "-accel", "tcg", "-m", "1024", "-smp", "2"]).args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-nic",
        "none",
    ]);
    // The touchscreen's size as the display's preferred mode (EDID), which the HMI takes.
    cmd.arg("-device").arg(format!("VGA,edid=on,xres={},yres={}", SCREEN.0, SCREEN.1));
    let disk = if production {
        cmd.arg("-drive")
            .arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"))
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", run.ovmf_vars.display()));
        &run.production_overlay
    } else {
        cmd.arg("-kernel")
            .arg(&run.kernel)
            .arg("-initrd")
            .arg(&run.initrd)
            .arg("-append")
            .arg(&cmdline);
        &run.overlay
    };
    cmd.arg("-drive")
        .arg(format!("if=none,id=disk,format=qcow2,file={}", disk.display()))
        .args(["-device", "virtio-blk-pci,drive=disk"])
        // The TPM, as tpm-tis: the Debian kernel has the driver built in.
        .arg("-chardev")
        .arg(format!("socket,id=chrtpm,path={}", tpm_sock.display()))
        .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0"])
        // The export stick on USB, removable like a real one.
        .args(["-device", "qemu-xhci,id=xhci"])
        .arg("-drive")
        .arg(format!("if=none,id=stick,format=raw,file={}", run.stick.display()))
        .args(["-device", "usb-storage,bus=xhci.0,drive=stick,removable=on"])
        // The console (ttyS0) goes to a file: nothing is lost while no one reads.
        .arg("-chardev")
        .arg(format!("file,id=console,path={}", console.display()))
        .args(["-serial", "chardev:console"])
        // The guest agent's channel.
        .args(["-device", "virtio-serial-pci,id=agentbus"])
        .arg("-chardev")
        .arg(format!("socket,id=agent,path={},server=on,wait=off", agent_sock.display()))
        .args(["-device", "virtserialport,bus=agentbus.0,chardev=agent,name=org.galen.agent.0"])
        // For what needs the machine itself: the power button, the screendump of the HMI.
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp_sock.display()));
    let instruments = if production { &[][..] } else { &run.ptys[..] };
    for ((name, slot), pty) in INSTRUMENTS.iter().zip(instruments) {
        cmd.arg("-chardev")
            .arg(format!("serial,id={name},path={}", pty.display()))
            .arg("-device")
            .arg(format!("pci-serial,chardev={name},addr={slot:#x}"));
    }
    if which == Boot::First || production {
        for file in &run.credentials {
            cmd.arg("-smbios").arg(format!("type=11,path={}", file.display()));
        }
    }
    let log = std::fs::File::create(run.dir.join(format!("qemu-{name}.log")))?;
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    let started = Instant::now();
    let qemu = process::spawn(&mut cmd)?;
    let login = watch_console(console.clone(), started);
    let agent = Agent::connect(&agent_sock)
        .with_context(|| format!("see {}", run.dir.join(format!("qemu-{name}.log")).display()))?;
    Ok(Machine { agent, qemu, _swtpm: swtpm, started, login, qmp: qmp_sock, console })
}

/// The production boot: firmware, systemd-boot, slot A, nothing added. Only the console and
/// the power button are used, as on a real unit; the agent must stay silent.
fn production(machine: &mut Machine, failed: &mut Vec<String>) -> Result<Timings> {
    let mut t = Timings::default();
    let deadline = machine.started + BOOT_TIMEOUT;
    let at = loop {
        process::bail_if_interrupted()?;
        if let Some(at) = *machine.login.lock().map_err(|_| anyhow::anyhow!("console watcher"))? {
            break at;
        }
        if let Some(status) = machine.qemu.try_wait()? {
            bail!(
                "QEMU exited ({status}) before a login prompt; see {}",
                machine.console.display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the firmware boot reached no login prompt within {BOOT_TIMEOUT:?}; see {}",
                machine.console.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    t.login_host = Some(at.duration_since(machine.started).as_secs_f64());
    println!("image: login prompt {:.1} s after QEMU started", t.login_host.unwrap_or_default());
    // Anything that fails late (applianced unsealing its key, say) has had time to say so.
    match machine.agent.wait_hello(SETTLE) {
        Ok(_) => failed.push("the test agent ran on a production boot".to_owned()),
        Err(_) => {
            process::bail_if_interrupted()?;
            println!("image: ok: the test agent stayed off on the production boot");
        }
    }
    let console = std::fs::read_to_string(&machine.console).unwrap_or_default();
    if let Some(line) = console.lines().find(|l| l.contains("FAILED")) {
        failed.push(format!(
            "a unit failed on the production boot: {}; see {}",
            line.trim(),
            machine.console.display()
        ));
    } else {
        println!(
            "image: ok: no unit failed on the production boot (firmware, systemd-boot, slot A)"
        );
    }
    let pressed = Instant::now();
    Qmp::connect(&machine.qmp)?.execute("system_powerdown", serde_json::json!({}))?;
    t.poweroff = Some(wait_exit(machine, pressed)?);
    Ok(t)
}

/// Notes when the console first shows a login prompt, on a thread of its own so the time is
/// right whatever the main thread is waiting for.
fn watch_console(console: PathBuf, started: Instant) -> Arc<Mutex<Option<Instant>>> {
    let seen = Arc::new(Mutex::new(None));
    let seen_by_thread = Arc::clone(&seen);
    std::thread::spawn(move || {
        while started.elapsed() < BOOT_TIMEOUT * 2 {
            let text = std::fs::read(&console).unwrap_or_default();
            if text.windows(7).any(|w| w == b"login: ") {
                if let Ok(mut seen) = seen_by_thread.lock() {
                    *seen = Some(Instant::now());
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    seen
}

/// Waits for applianced's READY (Type=notify: "active" means READY=1 arrived).
fn wait_ready(machine: &mut Machine, t: &mut Timings) -> Result<()> {
    let (host, guest) = wait_active(machine, "applianced.service", "galen-commission.service")?;
    (t.ready_host, t.ready_guest) = (Some(host), Some(guest));
    println!("image: applianced ready {host:.1} s after QEMU started");
    Ok(())
}

/// Waits until `unit` (Type=notify) is active, that is READY, and returns when, from QEMU's
/// start and from the kernel's. A restart means the first try failed: that fails at once with
/// `unit`'s and `related`'s journal instead of waiting it out.
fn wait_active(machine: &mut Machine, unit: &str, related: &str) -> Result<(f64, f64)> {
    let script = format!(
        r#"
        while :; do
            state=$(systemctl is-active {unit})
            [ "$state" = active ] && exit 0
            [ "$state" = failed ] && break
            [ "$(systemctl show --property=NRestarts --value {unit})" = 0 ] || break
            sleep 0.2
        done
        echo "{unit} is $state after $(systemctl show --property=NRestarts --value {unit}) restart(s)"
        journalctl -b --no-pager -o short-monotonic -u {related} -u {unit} | tail -n 40
        exit 1
    "#
    );
    machine.agent.check(&format!("waiting for {unit} to report READY"), &script, BOOT_TIMEOUT)?;
    let host = machine.started.elapsed().as_secs_f64();
    Ok((host, active_since_boot(&mut machine.agent, unit)?))
}

fn wait_login(machine: &mut Machine, t: &mut Timings) -> Result<()> {
    let deadline = machine.started + BOOT_TIMEOUT;
    loop {
        process::bail_if_interrupted()?;
        if let Some(at) = *machine.login.lock().map_err(|_| anyhow::anyhow!("console watcher"))? {
            t.login_host = Some(at.duration_since(machine.started).as_secs_f64());
            break;
        }
        if Instant::now() > deadline {
            bail!("no login prompt on the console within {BOOT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    t.login_guest = Some(active_since_boot(&mut machine.agent, "serial-getty@ttyS0.service")?);
    Ok(())
}

/// When `unit` became active, in seconds since the kernel started (systemd's own record).
fn active_since_boot(agent: &mut Agent, unit: &str) -> Result<f64> {
    let out = agent.check(
        &format!("reading when {unit} became active"),
        &format!("systemctl show --property=ActiveEnterTimestampMonotonic --value {unit}"),
        Duration::from_secs(30),
    )?;
    let micros: f64 = out.trim().parse().with_context(|| format!("systemd said {out:?}"))?;
    if micros == 0.0 {
        bail!("{unit} never became active");
    }
    Ok(micros / 1e6)
}

/// What the image promises, seen from inside.
fn check_image(agent: &mut Agent) -> Result<()> {
    let checks: &[(&str, &str)] = &[
        (
            "the root file system is read-only",
            "findmnt -no OPTIONS / | tr , '\\n' | grep -qx ro && ! touch /etc/galen-rw-test 2>/dev/null",
        ),
        (
            "/var is the data partition",
            "test \"$(findmnt -no SOURCE /var)\" = \"$(readlink -f /dev/disk/by-partlabel/data)\"",
        ),
        (
            "the journal is persistent",
            "test -d /var/log/journal && journalctl --header | grep -q '/var/log/journal'",
        ),
        (
            "the serial ports have their udev names",
            "for d in balance syringe peristaltic heater estop; do test -c /dev/galen/$d || { ls -l /dev/galen/ /dev/ttyS*; exit 1; }; done",
        ),
        ("the TPM belongs to group tss", "test \"$(stat -c %G /dev/tpmrm0)\" = tss"),
        (
            "user galen is in dialout and tss",
            "id -nG galen | tr ' ' '\\n' | grep -qx dialout && id -nG galen | tr ' ' '\\n' | grep -qx tss",
        ),
        (
            "the D-Bus policy is installed",
            "test -f /usr/share/dbus-1/system.d/org.galen.Appliance1.conf",
        ),
    ];
    for (what, script) in checks {
        agent.check(what, script, Duration::from_secs(60))?;
        println!("image: ok: {what}");
    }
    Ok(())
}

fn check_commissioned(agent: &mut Agent) -> Result<()> {
    let out = agent.check(
        "commissioning from credentials",
        "journalctl -b --no-pager -o cat -u galen-commission.service | grep -A1 'checkpoint key fingerprint'",
        Duration::from_secs(60),
    )?;
    let fingerprint = out.lines().nth(1).unwrap_or_default().trim().to_owned();
    println!("image: ok: commissioned on first boot; checkpoint key fingerprint {fingerprint}");
    Ok(())
}

/// udisks2 sees the stick as a removable USB drive with a FAT filesystem (which is what
/// applianced looks for), and nobody has it mounted.
fn check_stick(agent: &mut Agent) -> Result<()> {
    let script = format!(
        r#"
        set -e
        for i in $(seq 1 150); do [ -e /dev/disk/by-label/{STICK_LABEL} ] && break; sleep 0.2; done
        dev=$(readlink -f /dev/disk/by-label/{STICK_LABEL})
        obj=/org/freedesktop/UDisks2/block_devices/$(basename "$dev")
        p() {{ busctl get-property org.freedesktop.UDisks2 "$1" "org.freedesktop.UDisks2.$2" "$3" | cut -d' ' -f2-; }}
        for i in $(seq 1 150); do [ "$(p "$obj" Block IdLabel 2>/dev/null)" = '"{STICK_LABEL}"' ] && break; sleep 0.2; done
        drive=$(p "$obj" Block Drive | tr -d '"')
        echo "type=$(p "$obj" Block IdType) label=$(p "$obj" Block IdLabel) bus=$(p "$drive" Drive ConnectionBus) removable=$(p "$drive" Drive Removable)"
        echo "mounted at: $(findmnt -no TARGET "$dev" || true)"
        "#
    );
    let out = agent.check("udisks2 sees the USB stick", &script, Duration::from_secs(120))?;
    let expected = format!("type=\"vfat\" label=\"{STICK_LABEL}\" bus=\"usb\" removable=true");
    if !out.lines().any(|l| l == expected) {
        bail!("udisks2 does not see the stick as expected ({expected}); the guest said:\n{out}");
    }
    if !out.lines().any(|l| l == "mounted at: ") {
        bail!("the stick is mounted before anybody asked for it; the guest said:\n{out}");
    }
    for line in out.lines() {
        println!("image: ok: stick: {line}");
    }
    Ok(())
}

/// One short personalised batch, the way the people at the unit would run it with galenctl:
/// the administrator adds them, QA lists the stick, installs the manufacturer's recipe from it
/// and activates it, the pharmacist creates a batch from the lab's report on the stick (a
/// TPMT intermediate metaboliser), a second person verifies, the unit runs it on the simulated
/// instruments, the pharmacist signs, QA releases, and the inspector exports the record to the
/// stick. applianced mounts the stick through udisks2 for each: read-only to take something
/// in, then writable for the export, after which it powers it off. Returns the export's
/// folder on the stick.
fn check_batch(agent: &mut Agent) -> Result<String> {
    let step = Step::new("boot test: a batch on the unit, through galenctl in the guest");
    let result = run_batch(agent);
    if result.is_err() && !process::interrupted() {
        // What the unit and its supervisor said, for whoever reads the failure.
        let diagnosis = agent.run(
            &format!(
                "GALEN_USER={} GALEN_PIN={} galenctl status 2>&1
                 journalctl -b --no-pager -o short-monotonic -u applianced.service | tail -n 60",
                operator::PHARMACIST,
                operator::pin_of(operator::PHARMACIST).unwrap_or_default()
            ),
            Duration::from_secs(60),
        );
        match diagnosis {
            Ok(reply) => println!("image: the unit after the failed batch:\n{}", reply.output),
            Err(e) => println!("image: could not ask the unit what happened: {e:#}"),
        }
    }
    let folder = result?;
    step.done();
    Ok(folder)
}

fn run_batch(agent: &mut Agent) -> Result<String> {
    let mut ctl = GuestCtl { agent };
    operator::add_people(&mut ctl, ADMIN_USER)?;
    let on_stick = ctl.json("quinn", &["stick"])?;
    println!("    on the stick: {on_stick}");
    if on_stick["recipe_updates"] != serde_json::json!(["recipes"])
        || on_stick["lab_files"][0]["name"] != LAB_REPORT
    {
        bail!("applianced does not list the stick's update and lab report: {on_stick}");
    }
    ctl.show("quinn", &["recipes", "install", "--from-stick"])?;
    ctl.show("quinn", &["recipes", "activate", SMOKE_RECIPE])?;
    let patient = operator::patient(SMOKE_RECIPE, &["--lab-on-stick", LAB_REPORT]);
    let create: Vec<&str> = ["batch", "create"].into_iter().chain(patient).collect();
    let created = ctl.json(operator::PHARMACIST, &create)?;
    let id = created["batch"].as_str().context("batch create printed no id")?.to_owned();
    println!("    created {id}");
    ctl.show("vic", &["batch", "verify", &id])?;
    ctl.show(operator::PHARMACIST, &["batch", "start", &id])?;
    operator::operate(&mut ctl, &id, &mut |material, grams| {
        bail!("the smoke recipe asked for {grams} g of {material} by hand; it should need no hands")
    })?;
    ctl.show(operator::PHARMACIST, &["batch", "sign", &id])?;
    ctl.show("quinn", &["batch", "release", &id, "--label-dir", "/run/galen-labels"])?;
    let export = ctl.json("ida", &["records", "export", "--batch", &id])?;
    println!("    exported: {export}");
    let folder = export["folder"].as_str().context("the export named no folder")?.to_owned();
    if export["safe_to_remove"] != true {
        bail!("the stick was not powered off after the export: {export}");
    }
    ctl.agent.check(
        "the stick is gone after the export powered it off",
        &format!(
            "[ ! -e /dev/disk/by-label/{STICK_LABEL} ] || {{ ls -l /dev/disk/by-label; exit 1; }}"
        ),
        Duration::from_secs(30),
    )?;
    println!(
        "image: ok: batch {id} ran to Complete, was signed, released and exported to {folder}"
    );
    Ok(folder)
}

/// The longest one galenctl call in the guest may take (`batch watch` waits for a phase).
const GALENCTL_TIMEOUT: Duration = Duration::from_secs(240);

/// `galenctl` inside the guest, through the agent (as root, on the system bus).
struct GuestCtl<'a> {
    agent: &'a mut Agent,
}

impl Galenctl for GuestCtl<'_> {
    fn run(&mut self, user: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Output> {
        const SPLIT: &str = "@@galenctl-stderr";
        let pin = if user == ADMIN_USER {
            ADMIN_PIN
        } else {
            operator::pin_of(user).with_context(|| format!("no PIN for {user}"))?
        };
        let mut script = format!("export GALEN_USER={} GALEN_PIN={}\n", sh(user), sh(pin));
        for (key, value) in env {
            script.push_str(&format!("export {key}={}\n", sh(value)));
        }
        let args: Vec<String> = args.iter().map(|a| sh(a)).collect();
        // Bounded in the guest, so a stuck call ends before the host stops waiting and the
        // agent is free again for the diagnosis.
        script.push_str(&format!(
            "timeout {} galenctl {} 2>/run/galenctl.err\nstatus=$?\nprintf '\\n{SPLIT}\\n'\ncat /run/galenctl.err\nexit $status\n",
            GALENCTL_TIMEOUT.as_secs(),
            args.join(" ")
        ));
        let reply = self.agent.run(&script, GALENCTL_TIMEOUT + Duration::from_secs(30))?;
        let (stdout, stderr) = reply
            .output
            .rsplit_once(&format!("\n{SPLIT}\n"))
            .with_context(|| format!("galenctl in the guest said: {}", reply.output))?;
        Ok(Output { status: reply.status, stdout: stdout.to_owned(), stderr: stderr.to_owned() })
    }
}

/// A word for `sh`, single-quoted.
fn sh(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// On the host, with the guest powered off: the exported bundle read from the stick image
/// with mtools, checked by galen-verify and by following its VERIFY.txt with openssl.
fn check_bundle(run: &Run, host: &HostTools, folder: &str) -> Result<()> {
    let dest = run.dir.join("export");
    std::fs::create_dir_all(&dest)?;
    process::run(mtools("mcopy", &run.stick).arg("-s").arg(format!("::/{folder}")).arg(&dest))
        .context("copying the export off the stick image")?;
    let bundle = dest.join(folder);
    let report = process::output(Command::new(&host.galen_verify).arg(&bundle))
        .context("galen-verify refused the bundle the guest exported")?;
    for line in report.lines() {
        println!("image: galen-verify: {line}");
    }
    operator::follow_verify_txt(&bundle)?;
    println!("image: ok: the exported bundle verifies off the appliance ({})", bundle.display());
    Ok(())
}

/// The touchscreen came up (galen-hmi is Type=notify: active means it is connected to
/// applianced and painting), and what it shows is saved as a PNG from QEMU's display.
fn check_hmi(machine: &mut Machine, t: &mut Timings, shot: &Path) -> Result<()> {
    let (host, guest) = wait_active(machine, "galen-hmi.service", "applianced.service")?;
    (t.hmi_host, t.hmi_guest) = (Some(host), Some(guest));
    // The first frame follows READY by a frame or so; a blank screen after 20 s is a failure.
    let mut qmp = Qmp::connect(&machine.qmp)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        qmp.execute(
            "screendump",
            serde_json::json!({ "filename": shot.display().to_string(), "format": "png" }),
        )?;
        let (size, colours) = picture(shot)?;
        if size != SCREEN {
            bail!(
                "the display is {}x{}, not {}x{} ({})",
                size.0,
                size.1,
                SCREEN.0,
                SCREEN.1,
                shot.display()
            );
        }
        if colours >= 16 {
            println!(
                "image: ok: the touchscreen is up ({colours} colours on screen); look at {}",
                shot.display()
            );
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the touchscreen reported READY but the display shows {colours} colour(s): {}",
                shot.display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A PNG's size and how many distinct colours it has (up to 256 counted).
fn picture(path: &Path) -> Result<((u32, u32), usize)> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size().context("PNG too large")?];
    let info = reader.next_frame(&mut buf)?;
    let channels = info.color_type.samples();
    let mut colours = std::collections::HashSet::new();
    for px in buf[..info.buffer_size()].chunks(channels) {
        colours.insert(px.to_vec());
        if colours.len() >= 256 {
            break;
        }
    }
    Ok(((info.width, info.height), colours.len()))
}

/// The machine id survives reboots although /etc is read-only, so the journal stays in one
/// directory that journald keeps within its size limit.
fn check_machine_id(agent: &mut Agent) -> Result<()> {
    agent.check(
        "the machine id is the one the first boot saved",
        "id=$(cat /etc/machine-id); saved=$(cat /var/lib/machine-id)
         ls /var/log/journal
         [ \"$id\" = \"$saved\" ] && [ \"$(ls /var/log/journal | wc -l)\" = 1 ]",
        Duration::from_secs(30),
    )?;
    println!("image: ok: the machine id is kept on the data partition across reboots");
    Ok(())
}

/// After a reboot: the records open against the TPM, and the previous run stopped cleanly.
fn check_restart(agent: &mut Agent) -> Result<()> {
    agent.check(
        "the records were verified at start",
        "journalctl -b --no-pager -o cat -u applianced.service | grep 'records verified'",
        Duration::from_secs(60),
    )?;
    println!("image: ok: applianced verified the records against the TPM after a reboot");
    agent.check(
        "the first boot's applianced stopped cleanly (persistent journal)",
        // The previous boots' entries are only visible if the machine id stayed the same.
        "log=$(journalctl --no-pager -o short-monotonic -u applianced.service)
         echo \"$log\" | grep -q 'final checkpoint taken' || { echo \"$log\" | tail -n 30; exit 1; }",
        Duration::from_secs(60),
    )?;
    println!(
        "image: ok: the first boot's applianced stopped with a final checkpoint (journal kept on /var)"
    );
    Ok(())
}

/// `systemctl poweroff` in the guest; QEMU must exit on its own, successfully.
fn power_off(machine: &mut Machine) -> Result<f64> {
    let asked = Instant::now();
    machine.agent.send("systemctl poweroff")?;
    wait_exit(machine, asked)
}

/// Waits for QEMU to exit on its own after the guest was told to power off.
fn wait_exit(machine: &mut Machine, asked: Instant) -> Result<f64> {
    loop {
        process::bail_if_interrupted()?;
        if let Some(status) = machine.qemu.try_wait()? {
            if !status.success() {
                bail!("QEMU exited with {status} after the guest powered off");
            }
            return Ok(asked.elapsed().as_secs_f64());
        }
        if asked.elapsed() > POWEROFF_TIMEOUT {
            bail!("the guest did not power off within {POWEROFF_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_unit_file_names_the_guest_ports() {
        let rig = Path::new("/tmp/rig");
        let unit = "[[device]]\nname = \"balance\"\nport = \"/tmp/rig/balance\"\n\
                    [[device]]\nport = \"/tmp/rig/syringe\"\n[[device]]\nport = \"/tmp/rig/peristaltic\"\n\
                    [[device]]\nport = \"/tmp/rig/heater\"\n[[device]]\nport = \"/tmp/rig/estop\"\n";
        let guest = guest_unit_file(unit, rig).unwrap();
        assert!(guest.contains("port = \"/dev/galen/balance\""));
        assert!(guest.contains("port = \"/dev/galen/heater\""));
        assert!(guest.contains("port = \"/dev/galen/estop\""));
        assert!(!guest.contains("/tmp/rig"));
        assert!(guest_unit_file("port = \"/elsewhere\"", rig).is_err());
    }
}
