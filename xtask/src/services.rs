//! The services tests and the demo need, started in a private temporary directory: a software
//! TPM (swtpm) and a private D-Bus daemon.
//!
//! Each is started in the foreground as a tracked child, probed until it really answers
//! (`tpm2_getrandom`, `dbus-send … GetId`), and stopped with its directory removed when
//! [`Services`] is dropped, on success, failure or Ctrl-C alike.
//!
//! Tests find them through these environment variables:
//! - `GALEN_TEST_TCTI` (and `TPM2TOOLS_TCTI`): the TCTI string of the software TPM, e.g.
//!   `swtpm:host=127.0.0.1,port=40123`.
//! - `GALEN_TEST_DBUS_ADDRESS`: the address of the private bus.
//! - `GALEN_TEST_RUNTIME_DIR`: the temporary directory, for scratch files that must outlive
//!   one test but not the run.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tempfile::TempDir;

use crate::process::{self, Tracked};

const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Running swtpm and dbus-daemon; dropping this stops both and deletes their directory.
#[derive(Debug)]
pub(crate) struct Services {
    // Field order is drop order: the processes stop before their directory goes.
    swtpm: Tracked,
    dbus: Tracked,
    pub(crate) tpm_tcti: String,
    pub(crate) dbus_address: String,
    dir: TempDir,
}

impl Services {
    pub(crate) fn start() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("galen-")
            .tempdir()
            .context("creating a temporary directory for test services")?;
        let (swtpm, tpm_tcti) = start_swtpm(dir.path())?;
        let (dbus, dbus_address) = start_dbus(dir.path())?;
        Ok(Self { swtpm, dbus, tpm_tcti, dbus_address, dir })
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The environment a test process needs to find the services.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("GALEN_TEST_TCTI", self.tpm_tcti.clone()),
            ("TPM2TOOLS_TCTI", self.tpm_tcti.clone()),
            ("GALEN_TEST_DBUS_ADDRESS", self.dbus_address.clone()),
            ("GALEN_TEST_RUNTIME_DIR", self.dir.path().display().to_string()),
        ]
    }

    /// Eight random bytes from the TPM, as hex: proof that it answers commands.
    pub(crate) fn tpm_random(&self) -> Result<String> {
        tpm_getrandom(&self.tpm_tcti)
    }

    /// The bus's unique id: proof that the daemon answers method calls.
    pub(crate) fn bus_id(&self) -> Result<String> {
        dbus_get_id(&self.dbus_address)
    }

    /// Fails if either service died while we were using it.
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        for (name, child) in [("swtpm", &mut self.swtpm), ("dbus-daemon", &mut self.dbus)] {
            if let Some(status) = child.try_wait()? {
                bail!("{name} exited during the run ({status})");
            }
        }
        Ok(())
    }
}

/// swtpm on loopback TCP: tss-esapi's `swtpm:` TCTI speaks TCP only (data port P, control
/// port P + 1). Ports are picked free and retried if another process wins the race.
fn start_swtpm(dir: &Path) -> Result<(Tracked, String)> {
    let state = dir.join("tpm");
    std::fs::create_dir(&state).context("creating the swtpm state directory")?;
    let mut last_error = None;
    for _ in 0..10 {
        let port = free_port_pair()?;
        let mut child = process::spawn(
            Command::new("swtpm")
                .arg("socket")
                .arg("--tpm2")
                .arg("--tpmstate")
                .arg(format!("dir={}", state.display()))
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                // Context::new in tss-esapi sends no TPM2_Startup, so swtpm must do it.
                .args(["--flags", "not-need-init,startup-clear"])
                .arg("--log")
                .arg(format!("file={},level=1", state.join("swtpm.log").display()))
                .stdin(Stdio::null()),
        )?;
        let tcti = format!("swtpm:host=127.0.0.1,port={port}");
        let ready = wait_until("swtpm to answer", || {
            if let Some(status) = child.try_wait()? {
                bail!("swtpm exited ({status})");
            }
            // Whoever answers must be our swtpm, not one that won the race for the port.
            let pid = child.child_mut().id();
            if !(listens(pid, port) && listens(pid, port + 1)) {
                return Ok(Err(anyhow!("swtpm does not hold ports {port} and {} yet", port + 1)));
            }
            Ok(tpm_getrandom(&tcti).map(drop))
        });
        match ready {
            Ok(()) => return Ok((child, tcti)),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.expect("at least one attempt").context("starting swtpm"))
}

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port` (from /proc).
fn listens(pid: u32, port: u16) -> bool {
    let owned: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_str()?;
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // local_address, st (0A = LISTEN), inode
        f.len() > 9 && f[1] == local && f[3] == "0A" && owned.contains(f[9])
    })
}

/// A port P such that P and P + 1 were both free a moment ago.
fn free_port_pair() -> Result<u16> {
    for _ in 0..100 {
        let first = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
        let port = first.local_addr()?.port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    bail!("found no two adjacent free ports on 127.0.0.1")
}

fn start_dbus(dir: &Path) -> Result<(Tracked, String)> {
    let socket = dir.join("bus");
    let config = dir.join("bus.conf");
    std::fs::write(&config, bus_config(&socket)).context("writing the D-Bus daemon config")?;
    let mut child = process::spawn(
        Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile", "--print-address=1"])
            .stdin(Stdio::null())
            // It complains about fd limits it may not raise; keep that out of test output.
            .stderr(log_file(&dir.join("dbus.log"))?)
            .stdout(Stdio::piped()),
    )?;
    // The daemon prints its address once it listens; read it on a thread so we can time out.
    let stdout = child.child_mut().stdout.take().context("dbus-daemon stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let address = rx
        .recv_timeout(READY_TIMEOUT)
        .context("dbus-daemon did not print its address in time")?
        .trim()
        .to_owned();
    if address.is_empty() {
        bail!("dbus-daemon exited before it printed its address");
    }
    wait_until("dbus-daemon to answer", || Ok(dbus_get_id(&address).map(drop)))?;
    Ok((child, address))
}

fn log_file(path: &Path) -> Result<std::fs::File> {
    std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))
}

/// A session-type bus that anyone on this machine may use: it only lives for one test run.
fn bus_config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
        socket.display()
    )
}

fn tpm_getrandom(tcti: &str) -> Result<String> {
    let hex = process::output(Command::new("tpm2_getrandom").args(["--hex", "8", "-T", tcti]))?;
    Ok(hex.trim().to_owned())
}

fn dbus_get_id(address: &str) -> Result<String> {
    let reply = process::output(Command::new("dbus-send").args([
        &format!("--bus={address}"),
        "--print-reply=literal",
        "--dest=org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus.GetId",
    ]))?;
    Ok(reply.trim().to_owned())
}

/// Retries `probe` until it succeeds. The outer error stops at once (the service died); the
/// inner one means "not yet", and on timeout the last one is reported.
fn wait_until(what: &str, mut probe: impl FnMut() -> Result<Result<()>>) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        process::bail_if_interrupted()?;
        let err = match probe()? {
            Ok(()) => return Ok(()),
            Err(err) => err,
        };
        if Instant::now() > deadline {
            return Err(
                err.context(format!("timed out after {READY_TIMEOUT:?} waiting for {what}"))
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
